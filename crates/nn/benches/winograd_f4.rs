//! The f32 error of the Winograd kernels. F(4×4, 3×3) multiplies 36 times per 16 outputs where
//! F(2×2) multiplies 16 times per 4 (4× fewer than the direct 144 per 16, against 2.25×), but
//! its transforms carry 1/6 and 1/24, which f32 cannot hold, and larger sums, so its f32 error
//! is larger. This measures that error on SphereFace-20's stride-1 layers, forward and weight
//! gradient, against an f64 direct convolution, beside F(2×2)'s and the f32 direct product's,
//! as the largest difference over the largest output (the measure the kernel tests bound by
//! 1e-4 against burn's convolution). The network runs F(4×4) forward (and for the input
//! gradient) and F(2×2) for the weight gradient; the F(4×4) weight gradient here is a plain
//! reference implementation (Lavin and Gray's points 0, ±1, ±2), timed by nothing.
//!
//! `cargo bench -p spherepipe-nn --bench winograd_f4` (env `BATCH`, default 2).

use spherepipe_nn::conv::{direct_forward, direct_weight_grad, Geometry};
use spherepipe_nn::{winograd, winograd4};
use spherepipe_rng::Rng;

/// SphereFace-20's stride-1 layers: (channels, height, width).
const LAYERS: [(usize, usize, usize); 4] = [(64, 56, 48), (128, 28, 24), (256, 14, 12), (512, 7, 6)];

const BT: [[f64; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
const G: [[f64; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];
const AT: [[f64; 6]; 4] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// l · x · rᵀ for small matrices given as rows: l [P × Q] and r [R × S] constants (rounded to
/// f32), x [Q × S] in f32; sums in order with fused multiply-adds.
fn sandwich<const P: usize, const Q: usize, const R: usize, const S: usize>(
    l: &[[f64; Q]; P],
    x: &[[f32; S]; Q],
    r: &[[f64; S]; R],
) -> [[f32; R]; P] {
    let mut lx = [[0f32; S]; P];
    for i in 0..P {
        for j in 0..S {
            lx[i][j] = (0..Q).fold(0f32, |acc, k| (l[i][k] as f32).mul_add(x[k][j], acc));
        }
    }
    let mut out = [[0f32; R]; P];
    for i in 0..P {
        for j in 0..R {
            out[i][j] = (0..S).fold(0f32, |acc, k| lx[i][k].mul_add(r[j][k] as f32, acc));
        }
    }
    out
}

fn transpose<const P: usize, const Q: usize>(m: &[[f64; Q]; P]) -> [[f64; P]; Q] {
    std::array::from_fn(|i| std::array::from_fn(|j| m[j][i]))
}

/// The 6 × 6 input block at (y0, x0), zero outside the image.
fn block(x: &[f32], (h, w): (usize, usize), y0: isize, x0: isize) -> [[f32; 6]; 6] {
    std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let (y, xx) = (y0 + i as isize, x0 + j as isize);
            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                0.0
            } else {
                x[y as usize * w + xx as usize]
            }
        })
    })
}

/// F(4×4, 3×3) weight gradient in f32: dW = Gᵀ [Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B)] G.
fn f4_weight_grad(x: &[f32], g: &[f32], (batch, c, h, w): (usize, usize, usize, usize)) -> Vec<f32> {
    let a = transpose(&AT); // 6 × 4
    let gt = transpose(&G); // 3 × 6
    let mut du = vec![[[0f32; 6]; 6]; c * c];
    for n in 0..batch {
        for ty in 0..h.div_ceil(4) {
            for tx in 0..w.div_ceil(4) {
                let v: Vec<[[f32; 6]; 6]> = (0..c)
                    .map(|ci| {
                        sandwich(
                            &BT,
                            &block(
                                &x[(n * c + ci) * h * w..][..h * w],
                                (h, w),
                                4 * ty as isize - 1,
                                4 * tx as isize - 1,
                            ),
                            &BT,
                        )
                    })
                    .collect();
                for co in 0..c {
                    let dy: [[f32; 4]; 4] = std::array::from_fn(|i| {
                        std::array::from_fn(|j| {
                            let (yy, xx) = (4 * ty + i, 4 * tx + j);
                            if yy < h && xx < w {
                                g[((n * c + co) * h + yy) * w + xx]
                            } else {
                                0.0
                            }
                        })
                    });
                    let e = sandwich(&a, &dy, &a);
                    for (ci, vi) in v.iter().enumerate() {
                        let acc = &mut du[co * c + ci];
                        for i in 0..6 {
                            for j in 0..6 {
                                acc[i][j] = e[i][j].mul_add(vi[i][j], acc[i][j]);
                            }
                        }
                    }
                }
            }
        }
    }
    du.iter().flat_map(|m| sandwich(&gt, m, &gt).into_iter().flatten()).collect()
}

/// max |got − want| / max |want|.
fn relative(want: &[f64], got: impl Iterator<Item = f64>) -> f64 {
    let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    want.iter().zip(got).fold(0f64, |m, (w, g)| m.max((w - g).abs())) / scale
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let batch: usize = std::env::var("BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    println!("relative error in f32 against f64 direct (largest difference / largest value), batch {batch}");
    println!(
        "{:<22} {:>12} {:>12} {:>12} | {:>12} {:>12} {:>12}",
        "layer", "fwd direct", "fwd F(2x2)", "fwd F(4x4)", "dW direct", "dW F(2x2)", "dW F(4x4)"
    );
    let mut r = Rng::new(20);
    for (c, h, w) in LAYERS {
        // He-initialised weights, inputs and output gradients of unit scale.
        let std = (2.0 / (9.0 * c as f64)).sqrt();
        let x: Vec<f32> = (0..batch * c * h * w).map(|_| r.normal().max(0.0) as f32).collect();
        let k: Vec<f32> = (0..c * c * 9).map(|_| (r.normal() * std) as f32).collect();
        let g: Vec<f32> = (0..batch * c * h * w).map(|_| r.normal() as f32).collect();
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let geo = Geometry::of(c, h, w, 1);
        let y64 = direct_forward(&wide(&x), &wide(&k), None, batch, c, geo);
        let dw64 = direct_weight_grad(&wide(&x), &wide(&g), batch, c, geo);
        let as64 = |v: Vec<f32>| v.into_iter().map(f64::from);
        let fwd = [
            relative(&y64, as64(direct_forward(&x, &k, None, batch, c, geo))),
            relative(&y64, as64(winograd::forward(&x, &k, None, (batch, c, c), (h, w)))),
            relative(&y64, as64(winograd4::forward(&x, &k, None, (batch, c, c), (h, w)))),
        ];
        let dw = [
            relative(&dw64, as64(direct_weight_grad(&x, &g, batch, c, geo))),
            relative(&dw64, as64(winograd::weight_grad(&x, &g, (batch, c, c), (h, w)))),
            relative(&dw64, as64(f4_weight_grad(&x, &g, (batch, c, h, w)))),
        ];
        println!(
            "{:<22} {:>12.2e} {:>12.2e} {:>12.2e} | {:>12.2e} {:>12.2e} {:>12.2e}",
            format!("{c}→{c}, {h}×{w}"),
            fwd[0],
            fwd[1],
            fwd[2],
            dw[0],
            dw[1],
            dw[2]
        );
    }
}
