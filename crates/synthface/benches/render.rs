//! Where one synthetic image's time goes, on one thread: drawing it (`render`) and encoding
//! it as the corpus' JPEG. (A whole corpus on every core, with the binary's allocator, is
//! the first line of `cargo bench -p spherepipe-cli --bench face_data`.)
//!
//! `cargo bench -p spherepipe-synthface --bench render` (env `IMAGES`, default 400).

use spherepipe_synthface::{encode_jpeg, render, Identity, Rng, Variation};
use std::time::Instant;

fn main() {
    one_thread(std::env::var("IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(400));
}

/// `n` CASIA-sized (250×250) images drawn, then encoded, on this thread.
fn one_thread(n: usize) {
    let jobs: Vec<(Identity, Variation)> = (0..n as u64)
        .map(|k| (Identity::new(k % 50), Variation::draw(&mut Rng::new(k), 0.8)))
        .collect();
    let t = Instant::now();
    let images: Vec<_> = jobs.iter().map(|(id, v)| render(id, v, 250, 250, 1.0, 7)).collect();
    let draw = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let bytes: usize = images.iter().map(|img| encode_jpeg(img).map(|b| b.len()).unwrap_or(0)).sum();
    let encode = t.elapsed().as_secs_f64();
    println!("{n} images of 250x250 on one thread");
    println!("render      {:8.3} ms/image", draw * 1e3 / n as f64);
    println!("jpeg encode {:8.3} ms/image ({} bytes/image)", encode * 1e3 / n as f64, bytes / n);
    println!("together    {:8.0} images/s", n as f64 / (draw + encode));
}
