//! Training-step time and loader throughput.
//!
//! `cargo bench -p spherepipe-cli --bench training` (env `STEPS`, default 10 timed steps after 3
//! warm-up ones; `DEPTHS=4,20`; `LOADER=0` skips the loader). Reports the median SphereFace-4 and SphereFace-20 step (batch 32, 3x112x96,
//! softmax head over 1,000 classes and SGD, the same setup as the PyTorch peer) on the flex CPU backend, and the loader alone: images/s decoded from
//! PNG shards into normalised batches. Peer: `../shared/bench/sphereface4_torch.py`.

use spherepipe_face_loader::{Channels, Loader, LoaderConfig};
use spherepipe_face_table::{encode_png, write_rows, FaceRow};
use spherepipe_nn::margin::{Lambda, Loss};
use spherepipe_nn::sphere::SphereConfig;
use spherepipe_nn::train::{TrainConfig, Trainer};
use spherepipe_nn::Device;
use std::time::Instant;

// As in the `spherepipe` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let steps: usize = std::env::var("STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let b = 32;
    let images: Vec<f32> = (0..b * 3 * 112 * 96).map(|i| ((i * 7919 % 255) as f32 - 127.5) / 128.0).collect();
    let labels: Vec<i64> = (0..b as i64).map(|i| i * 31 % 1000).collect();
    // DEPTHS=4 (say) times one network only, e.g. under `perf record`.
    let depths: Vec<usize> = std::env::var("DEPTHS")
        .ok()
        .map(|d| d.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![4, 20]);
    for depth in depths {
        let cfg = TrainConfig {
            net: SphereConfig::new(depth),
            classes: 1000,
            loss: Loss::Softmax,
            lambda: Lambda::default(),
            lr: 0.01,
            milestones: vec![],
            momentum: 0.9,
            weight_decay: 5e-4,
        };
        let mut t = Trainer::new(cfg, &Device::flex(), 1)?;
        for _ in 0..3 {
            t.train_step(&images, &labels, 112, 96)?;
        }
        let times: Vec<f64> = (0..steps)
            .map(|_| {
                let s = Instant::now();
                t.train_step(&images, &labels, 112, 96).map(|_| s.elapsed().as_secs_f64())
            })
            .collect::<anyhow::Result<_>>()?;
        println!(
            "SphereFace-{depth} step, batch {b}: median {:.3}s (min {:.3}s) over {steps}",
            median(times.clone()),
            times.iter().cloned().fold(f64::MAX, f64::min)
        );
    }

    if std::env::var("LOADER").is_ok_and(|v| v == "0") {
        return Ok(());
    }
    // Loader alone: 4 shards of 1,024 PNG faces, batches of 256.
    let tmp = tempfile::tempdir()?;
    let mut files = Vec::new();
    for s in 0..4 {
        let rows: Vec<FaceRow> = (0..1024usize)
            .map(|i| {
                let rgb: Vec<u8> = (0..112 * 96 * 3)
                    .map(|k| ((k * 31 + i * 17 + s * 5) % 251) as u8 / 2 + ((k / 288) % 64) as u8)
                    .collect();
                FaceRow {
                    png: encode_png(&rgb, 96, 112).expect("png"),
                    height: 112,
                    width: 96,
                    label: (i % 100) as i32,
                    identity: String::new(),
                    dataset: "bench".into(),
                    source: String::new(),
                    video: None,
                    landmarks: [0.0; 10],
                    flipped: false,
                }
            })
            .collect();
        let p = tmp.path().join(format!("s{s}.parquet"));
        write_rows(&p, &rows, 256)?;
        files.push(p);
    }
    let loader = Loader::new(
        files,
        LoaderConfig {
            batch: 256,
            shuffle_buffer: 2048,
            flip: 0.5,
            seed: 1,
            prefetch: 4,
            skip_batches: 0,
            patch: None,
            channels: Channels::Bgr,
        },
    )?;
    let start = Instant::now();
    let n = 32;
    for _ in 0..n {
        loader.next_batch()?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "loader: {} images in {secs:.2}s = {:.0} images/s ({} threads)",
        n * 256,
        (n * 256) as f64 / secs,
        rayon::current_num_threads()
    );
    Ok(())
}
