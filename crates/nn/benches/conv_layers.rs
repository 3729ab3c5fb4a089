//! Where a SphereFace-20 step spends its time: every distinct convolution shape of the network
//! (batch `BATCH`, default 32), timed on the flex CPU backend for the forward pass, the input
//! gradient and the weight gradient, each the median of `REPS` (default 5) after one warm-up.
//!
//! `cargo bench -p spherepipe-nn --bench conv_layers`; the PyTorch side of the same table:
//! `python3 crates/nn/benches/conv_layers_torch.py` (same shapes, same batch), run right after.
//! Each row also times the project's own kernels (`spherepipe_nn::conv`: `forward`,
//! `input_grad` for stride 1, `direct_input_grad` for stride 2, `weight_grad`), each checked
//! against flex's to 1e-4 relative first.

use burn_backend::ops::{ConvOptions, FloatTensorOps, ModuleOps};
use burn_backend::TensorData;
use burn_flex::{Flex, FlexDevice};
use spherepipe_nn::conv::{direct_input_grad, forward, input_grad, weight_grad, Geometry};
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

/// Checks `got` against flex's `want` to 1e-4 of the largest magnitude.
fn check(what: &str, want: &[f32], got: &[f32]) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = want.iter().zip(got).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    assert!(
        want.len() == got.len() && err < 1e-4,
        "{what}: the project's kernel differs from flex's by {err} (relative to the largest)"
    );
}

/// Milliseconds per step of one layer shape: flex's and ours, forward, x-grad, w-grad.
struct Row {
    flex: [f64; 3],
    ours: [f64; 3],
}

fn time_layer(batch: usize, reps: usize, (cin, cout, stride, h, w): (usize, usize, usize, usize, usize)) -> Row {
    let geo = Geometry::of(cin, h, w, stride);
    let x = tensor([batch, cin, h, w], 1);
    let k = tensor([cout, cin, 3, 3], 2);
    let g = tensor([batch, cout, geo.ho, geo.wo], 3);
    let opts = ConvOptions::new([stride, stride], [1, 1], [1, 1], 1);
    let flex_fwd = || Flex::conv2d(x.clone(), k.clone(), None, opts.clone());
    let flex_dx = || Flex::conv2d_x_backward(x.clone(), k.clone(), g.clone(), opts.clone());
    let flex_dw = || Flex::conv2d_weight_backward(x.clone(), k.clone(), g.clone(), opts.clone());
    let (xv, kv, gv) = (values(x.clone()), values(k.clone()), values(g.clone()));
    let ours_fwd = || forward(&xv, &kv, None, batch, cout, geo);
    let ours_dx = || match stride {
        1 => input_grad(&gv, &kv, batch, cin, cout, (h, w)),
        _ => direct_input_grad(&gv, &kv, batch, cout, geo),
    };
    let ours_dw = || weight_grad(&xv, &gv, batch, cout, geo);
    check("forward", &values(flex_fwd()), &ours_fwd());
    check("x-grad", &values(flex_dx()), &ours_dx());
    check("w-grad", &values(flex_dw()), &ours_dw());
    let flex = [
        time(reps, || drop(flex_fwd())),
        time(reps, || drop(flex_dx())),
        time(reps, || drop(flex_dw())),
    ];
    let ours_dx = time(reps, || drop(ours_dx()));
    Row {
        flex,
        ours: [time(reps, || drop(ours_fwd())), ours_dx, time(reps, || drop(ours_dw()))],
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (batch, reps) = (env("BATCH", 32), env("REPS", 5));
    println!("conv layers of SphereFace-20, batch {batch}, median of {reps}, ms per step (flex / spherepipe-nn)");
    println!(
        "{:<22} {:>5} {:>15} {:>15} {:>15} {:>17}",
        "layer", "count", "forward", "x-grad", "w-grad", "all three"
    );
    let (mut flex_total, mut ours_total) = ([0.0; 3], [0.0; 3]);
    for (cin, cout, stride, h, w, count) in LAYERS {
        let row = time_layer(batch, reps, (cin, cout, stride, h, w));
        let pair = |i: usize| format!("{:.1} / {:.1}", count as f64 * row.flex[i] * 1e3, count as f64 * row.ours[i] * 1e3);
        let sum = |t: [f64; 3]| count as f64 * t.iter().sum::<f64>() * 1e3;
        println!(
            "{:<22} {count:>5} {:>15} {:>15} {:>15} {:>17}",
            format!("{cin}->{cout} s{stride} {h}x{w}"),
            pair(0),
            pair(1),
            pair(2),
            format!("{:.1} / {:.1}", sum(row.flex), sum(row.ours))
        );
        for i in 0..3 {
            flex_total[i] += count as f64 * row.flex[i];
            ours_total[i] += count as f64 * row.ours[i];
        }
    }
    let pair = |i: usize| format!("{:.1} / {:.1}", flex_total[i] * 1e3, ours_total[i] * 1e3);
    let all = |t: [f64; 3]| t.iter().sum::<f64>() * 1e3;
    println!(
        "{:<22} {:>5} {:>15} {:>15} {:>15} {:>17}",
        "all convolutions",
        "",
        pair(0),
        pair(1),
        pair(2),
        format!("{:.1} / {:.1}", all(flex_total), all(ours_total))
    );
}
