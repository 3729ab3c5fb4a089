//! The f32 error of the Winograd kernels. F(4×4, 3×3) multiplies 36 times per 16 outputs where
//! F(2×2) multiplies 16 times per 4 (4× fewer than the direct 144 per 16, against 2.25×), but
//! its transforms carry 1/6 and 1/24, which f32 cannot hold, and larger sums, so its f32 error
//! is larger. This measures that error on SphereFace-20's stride-1 layers, forward and weight
//! gradient, against an f64 direct convolution, beside F(2×2)'s and the f32 direct product's,
//! as the largest difference over the largest output (the measure the kernel tests bound by
//! 1e-4 against burn's convolution). The network runs F(4×4) (`winograd4`), except on images
//! under 8 pixels a side, which run F(2×2) (`winograd`).
//!
//! `cargo bench -p spherepipe-nn --bench winograd_f4` (env `BATCH`, default 2).

use spherepipe_nn::conv::{direct_forward, direct_weight_grad, Geometry};
use spherepipe_nn::{winograd, winograd4};
use spherepipe_rng::Rng;

/// SphereFace-20's stride-1 layers: (channels, height, width).
const LAYERS: [(usize, usize, usize); 4] = [(64, 56, 48), (128, 28, 24), (256, 14, 12), (512, 7, 6)];

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
            relative(&dw64, as64(winograd4::weight_grad(&x, &g, (batch, c, c), (h, w)))),
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
