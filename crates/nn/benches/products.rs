//! The convolutions' matrix products on one core: `spherepipe_nn::products` on each path this
//! CPU has (AVX-512, AVX2, portable) against the `gemm` crate (what the project used before,
//! and what burn-flex uses), in GFLOP/s, beside the core's peak as a register-only loop of
//! fused multiply-adds measures it.
//!
//! `cargo bench -p spherepipe-nn --bench products` (env `REPS`, default 20).

use spherepipe_nn::products::{product_for_bench, Isa};
use std::hint::black_box;
use std::time::Instant;

/// (m, k, n, what): SphereFace-20's products at batch 32. Winograd's 16 per block are
/// [cout × cin] · [cin × 336 tiles]; a stride-2 layer's is [cout × 9·cin] · [9·cin × pixels]
/// per image; the weight gradient's is [cout × pixels] · [pixels × 9·cin] (transposed b).
const SHAPES: [(usize, usize, usize, bool, &str); 8] = [
    (64, 64, 336, false, "winograd 64→64"),
    (128, 128, 336, false, "winograd 128→128"),
    (256, 256, 336, false, "winograd 256→256"),
    (512, 512, 336, false, "winograd 512→512"),
    (128, 576, 672, false, "stride 2, 64→128"),
    (512, 2304, 42, false, "stride 2, 256→512"),
    (128, 672, 576, true, "weight grad 64→128"),
    (64, 336, 64, true, "winograd weight grad 64"),
];

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn gemm_crate(dst: &mut [f32], a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), transposed: bool) {
    let (b_col, b_row) = if transposed { (k as isize, 1) } else { (1, n as isize) };
    // SAFETY: the lengths are m·n, m·k and k·n and the strides read b as [k × n] row-major
    // or as the transpose of [n × k]; dst overlaps neither.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_col,
            b_row,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// GFLOP/s of 16 independent chains of 16-lane fused multiply-adds (what one core can reach).
#[cfg(target_arch = "x86_64")]
fn peak_gflops() -> Option<f64> {
    if !std::is_x86_feature_detected!("avx512f") {
        return None;
    }
    #[target_feature(enable = "avx512f")]
    fn chains(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let x = _mm512_set1_ps(0.999_999);
        let y = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(1.0); 16];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
    }
    let iters = 20_000_000;
    // SAFETY: the CPU has AVX-512F (checked above).
    let s = time(5, || {
        black_box(unsafe { chains(black_box(iters)) });
    });
    Some(iters as f64 * 16.0 * 16.0 * 2.0 / s / 1e9)
}

#[cfg(not(target_arch = "x86_64"))]
fn peak_gflops() -> Option<f64> {
    None
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let reps: usize = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    if let Some(p) = peak_gflops() {
        println!("one core's AVX-512 FMA peak (measured): {p:.1} GFLOP/s");
    }
    let isas = Isa::available();
    print!("{:<26} {:>10}", "product (m×k×n)", "gemm crate");
    for isa in &isas {
        print!(" {:>10}", isa.name());
    }
    println!("   GFLOP/s, one core");
    for (m, k, n, transposed, what) in SHAPES {
        let fill = |len: usize, s: usize| -> Vec<f32> { (0..len).map(|i| ((i * 7 + s) % 13) as f32 / 13.0 - 0.5).collect() };
        let (a, b) = (fill(m * k, 1), fill(k * n, 2));
        let mut dst = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let g = time(reps, || gemm_crate(&mut dst, &a, &b, (m, k, n), transposed));
        print!("{:<26} {:>10.1}", format!("{what} ({m}×{k}×{n})"), flops / g / 1e9);
        for &isa in &isas {
            let s = time(reps, || product_for_bench(isa, &mut dst, &a, &b, (m, k, n), transposed));
            print!(" {:>10.1}", flops / s / 1e9);
        }
        println!();
    }
}
