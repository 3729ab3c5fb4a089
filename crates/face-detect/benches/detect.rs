//! Detection speed (issue 26): every .jpg/.png under a directory, decoded once, then detected
//! one image at a time (default thresholds, min_face 20), as `../shared/bench/mtcnn_torch.py`
//! times facenet-pytorch's MTCNN. Thread count: `RAYON_NUM_THREADS` (the peer's `--threads`).
//!
//!   SPHEREPIPE_MTCNN_WEIGHTS=DIR cargo bench -p spherepipe-face-detect --bench detect -- PHOTOS [ROUNDS]
//!
//! `crates/cli/benches/detect.sh` runs this and the peer one right after the other.

use spherepipe_face_detect::{detect, DetectParams};
use spherepipe_nn::mtcnn::MtcnnNets;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn images_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            images_under(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(),
            Some("jpg" | "jpeg" | "png")
        ) {
            out.push(p);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let (Some(dir), Some(weights)) = (args.first(), std::env::var_os("SPHEREPIPE_MTCNN_WEIGHTS")) else {
        eprintln!("usage: SPHEREPIPE_MTCNN_WEIGHTS=DIR cargo bench -p spherepipe-face-detect --bench detect -- PHOTOS [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(1);
    let nets = MtcnnNets::load(Path::new(&weights), &spherepipe_nn::Device::flex()).unwrap_or_else(|e| panic!("{e:#}"));
    let mut files = Vec::new();
    images_under(Path::new(dir), &mut files);
    let images: Vec<_> = files
        .iter()
        .map(|p| image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).to_rgb8())
        .collect();
    let p = DetectParams::default();
    let run = |img: &image::RgbImage| {
        detect(&nets, img.as_raw(), img.width() as usize, img.height() as usize, &p)
            .expect("detect")
            .len()
    };
    run(&images[0]); // warm-up, as the peer does
    let t = Instant::now();
    let mut faces = 0;
    for _ in 0..rounds {
        faces += images.iter().map(run).sum::<usize>();
    }
    let dt = t.elapsed().as_secs_f64();
    let n = images.len() * rounds;
    let threads = rayon::current_num_threads();
    println!(
        "spherepipe MTCNN, {threads} threads, one image at a time: {n} images in {dt:.2}s = {:.1} images/s, {faces} faces",
        n as f64 / dt
    );
    // As the `detect` stage runs: images in parallel, each on one thread's worth of work.
    use rayon::prelude::*;
    let t = Instant::now();
    let mut faces = 0;
    for _ in 0..rounds {
        faces += images.par_iter().map(run).sum::<usize>();
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "spherepipe MTCNN, {threads} threads, images in parallel (the stage): {n} images in {dt:.2}s = {:.1} images/s, {faces} faces",
        n as f64 / dt
    );
}
