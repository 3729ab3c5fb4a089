//! Training-step time and loader throughput.
//!
//! `cargo bench -p spherepipe-cli --bench training` (env `STEPS`, default 10 timed steps after 2
//! warm-up ones; `DEPTHS=4,20`; `BATCHES=32,256`; `LOADER=0` skips the loader). Reports, on the
//! flex CPU backend, the median SphereFace-4 and SphereFace-20 training step at each batch
//! (3x112x96, softmax head over 1,000 classes, SGD with momentum and weight decay: the PyTorch
//! peer's setup) with the peak RSS, extraction (FC1 of 64 faces and their mirrors per pass,
//! images/s), and the loader alone: images/s decoded from PNG shards into normalised batches
//! (`LOADER_SHARDS=DIR` reads a directory of real shards; peer: `loader_torch.py DIR`).
//! Peer: `../shared/bench/sphereface_torch.py --depth 4|20 [--batch 256]`, run right after.
//! Like the binary, it keeps freed memory mapped; `MIMALLOC_PURGE=1` times mimalloc's default.

use spherepipe_cli::speed::{self, peak_rss_mb};
use spherepipe_face_loader::{Channels, Loader, LoaderConfig};
use spherepipe_face_table::{encode_png, write_rows, FaceRow};
use spherepipe_nn::Device;
use std::time::Instant;

// As in the `spherepipe` binary (src/main.rs): mimalloc, never purging freed memory.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The median training step of SphereFace-`depth` at batch `b`, with its peak RSS so far.
fn train_steps(depth: usize, b: usize, steps: usize) -> anyhow::Result<()> {
    let t = speed::training(depth, b, 1, &[Device::flex()], steps)?;
    println!(
        "SphereFace-{depth} step, batch {b}: median {:.3}s (min {:.3}s) over {steps} = {:.1} images/s; peak RSS so far {:.0} MB",
        t.median_s,
        t.min_s,
        t.images_per_s,
        peak_rss_mb()
    );
    Ok(())
}

/// FC1 of 64 faces and their 64 mirrors per pass (what `extract` computes), images/s counting
/// both, as the PyTorch peer counts them.
fn extraction(depth: usize, passes: usize) -> anyhow::Result<()> {
    let t = speed::extraction(depth, 128, &[Device::flex()], passes)?;
    println!(
        "SphereFace-{depth} extraction, 64 faces + 64 mirrors: median {:.3}s = {:.1} images/s",
        t.median_s, t.images_per_s
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    if std::env::var("MIMALLOC_PURGE").is_err() {
        spherepipe_cli::keep_freed_memory();
    }
    let steps: usize = std::env::var("STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    // DEPTHS=4 (say) times one network only, e.g. under `perf record`; BATCHES likewise.
    let list = |name: &str, default: &[usize]| -> Vec<usize> {
        std::env::var(name)
            .ok()
            .map(|d| d.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| default.to_vec())
    };
    for depth in list("DEPTHS", &[4, 20]) {
        for b in list("BATCHES", &[32, 256]) {
            train_steps(depth, b, steps)?;
        }
        extraction(depth, steps)?;
    }
    if std::env::var("LOADER").is_ok_and(|v| v == "0") {
        return Ok(());
    }
    // Loader alone: batches of 256 from LOADER_SHARDS (a directory of shards, such as a
    // `shard` artifact: what `loader_torch.py` reads too), or from 4 made-up shards of 1,024.
    let tmp = tempfile::tempdir()?;
    let files = match std::env::var("LOADER_SHARDS") {
        Ok(dir) => parquet_files(std::path::Path::new(&dir))?,
        Err(_) => made_up_shards(tmp.path())?,
    };
    loader_speed(files)
}

/// The `.parquet` files under `dir`, sorted.
fn parquet_files(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no .parquet files in {}", dir.display());
    Ok(files)
}

/// Four shards of 1,024 made-up PNG faces (112 x 96).
fn made_up_shards(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
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
        let p = dir.join(format!("s{s}.parquet"));
        write_rows(&p, &rows, 256)?;
        files.push(p);
    }
    Ok(files)
}

/// Images/s of the training loader (read, PNG decode, flip, normalise), 32 batches of 256
/// after one, on rayon's threads (`RAYON_NUM_THREADS=1` for one core's figure).
fn loader_speed(files: Vec<std::path::PathBuf>) -> anyhow::Result<()> {
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
    loader.next_batch()?;
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
