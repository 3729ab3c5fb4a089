//! Where a SphereFace-20 step spends its time: every distinct convolution shape of the network
//! (batch `BATCH`, default 32), timed on the flex CPU backend for the forward pass, the input
//! gradient and the weight gradient, each the median of `REPS` (default 5) after one warm-up.
//!
//! `cargo bench -p spherepipe-nn --bench conv_layers`; the PyTorch side of the same table:
//! `python3 crates/nn/benches/conv_layers_torch.py` (same shapes, same batch), run right after.
//! It also times the project's own weight gradient (`spherepipe_nn::conv::weight_grad`: one
//! `gemm` per image over its patch matrix), checked against flex's to 1e-4 relative first.

use burn_backend::ops::{ConvOptions, FloatTensorOps, ModuleOps};
use burn_backend::TensorData;
use burn_flex::{Flex, FlexDevice};
use spherepipe_nn::conv::{weight_grad, Geometry};
use std::time::Instant;

/// (input channels, output channels, stride, input height, input width, how many such layers
/// a SphereFace-20 forward pass has).
const LAYERS: [(usize, usize, usize, usize, usize, usize); 8] = [
    (3, 64, 2, 112, 96, 1),
    (64, 64, 1, 56, 48, 2),
    (64, 128, 2, 56, 48, 1),
    (128, 128, 1, 28, 24, 4),
    (128, 256, 2, 28, 24, 1),
    (256, 256, 1, 14, 12, 8),
    (256, 512, 2, 14, 12, 1),
    (512, 512, 1, 7, 6, 2),
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn tensor(shape: [usize; 4], seed: usize) -> burn_backend::tensor::FloatTensor<Flex> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 - 1000.0) / 1000.0)
        .collect();
    Flex::float_from_data(TensorData::new(v, shape), &FlexDevice)
}

/// Median seconds of `reps` calls of `f`, after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn values(t: burn_backend::tensor::FloatTensor<Flex>) -> Vec<f32> {
    t.into_data().as_slice::<f32>().map(<[f32]>::to_vec).unwrap_or_default()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (batch, reps) = (env("BATCH", 32), env("REPS", 5));
    println!("flex conv layers of SphereFace-20, batch {batch}, median of {reps} (ms)");
    println!(
        "{:<22} {:>5} {:>9} {:>9} {:>9} {:>11}",
        "layer", "count", "forward", "x-grad", "w-grad", "per step"
    );
    let mut total = 0.0;
    let (mut candidate, mut flex_dw) = (0.0, 0.0);
    for (cin, cout, stride, h, w, count) in LAYERS {
        let (ho, wo) = ((h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1);
        let x = tensor([batch, cin, h, w], 1);
        let k = tensor([cout, cin, 3, 3], 2);
        let g = tensor([batch, cout, ho, wo], 3);
        let opts = ConvOptions::new([stride, stride], [1, 1], [1, 1], 1);
        let fwd = time(reps, || {
            let _ = Flex::conv2d(x.clone(), k.clone(), None, opts.clone());
        });
        let dx = time(reps, || {
            let _ = Flex::conv2d_x_backward(x.clone(), k.clone(), g.clone(), opts.clone());
        });
        let dw = time(reps, || {
            let _ = Flex::conv2d_weight_backward(x.clone(), k.clone(), g.clone(), opts.clone());
        });
        // The candidate weight gradient, checked against flex's before it is timed.
        let geo = Geometry { cin, h, w, stride, ho, wo };
        let (xv, gv) = (values(x.clone()), values(g.clone()));
        let want = values(Flex::conv2d_weight_backward(x.clone(), k.clone(), g.clone(), opts.clone()));
        let got = weight_grad(&xv, &gv, batch, cout, geo);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(
            err < 1e-4,
            "the candidate weight gradient differs by {err} (relative to the largest)"
        );
        let dw2 = time(reps, || {
            let _ = weight_grad(&xv, &gv, batch, cout, geo);
        });
        candidate += count as f64 * dw2;
        flex_dw += count as f64 * dw;
        let step = count as f64 * (fwd + dx + dw);
        total += step;
        println!(
            "{:<22} {count:>5} {:>9.1} {:>9.1} {:>9.1} {:>11.1}",
            format!("{cin}->{cout} s{stride} {h}x{w}"),
            fwd * 1e3,
            dx * 1e3,
            dw * 1e3,
            step * 1e3
        );
    }
    println!(
        "{:<22} {:>5} {:>9} {:>9} {:>9} {:>11.1}",
        "all convolutions",
        "",
        "",
        "",
        "",
        total * 1e3
    );
    println!(
        "weight gradients per step: flex {:.1} ms, spherepipe-nn {:.1} ms",
        flex_dw * 1e3,
        candidate * 1e3
    );
}
