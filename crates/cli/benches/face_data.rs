//! Alignment throughput and shard-write throughput on the synthetic corpus.
//!
//! `cargo bench -p spherepipe-cli --bench face_data` (env `PRESET`, default `demo`; `THREADS`,
//! default all cores). Generates the corpus, then times:
//! 1. alignment of every CASIA image (JPEG decode, landmark checks, similarity fit, bilinear
//!    warp to 112x96, PNG encode) on 1 thread and on all threads;
//! 2. writing the aligned + mirrored faces as one zstd Parquet file (MB/s of file written).
//!    Peers: `../shared/bench/peers.py` (OpenCV align, 1 thread; pyarrow zstd write),
//!    `benches/align_opencv.py`, OpenCV aligning these very images (`KEEP_CORPUS=DIR` leaves
//!    the corpus there), and `benches/shard_write_pyarrow.py`, pyarrow writing these very rows
//!    (`KEEP_SHARD=FILE` leaves them there).

mod support;

use rayon::prelude::*;
use spherepipe_face_datasets::read_landmark_list;
use spherepipe_face_table::{write_rows, FaceRow};
use std::time::Instant;

// As in the `spherepipe` binary (src/main.rs): mimalloc, never purging freed memory, so a
// shard's buffers are not faulted in and zeroed again for each file.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    if support::listing_only() {
        return Ok(());
    }
    spherepipe_cli::keep_freed_memory();
    let (preset_name, preset) = support::preset_from_env()?;
    let tmp = tempfile::tempdir()?;
    // KEEP_CORPUS=DIR writes the corpus there (a new directory) and leaves it, for the OpenCV
    // peer (benches/align_opencv.py) to align the very same files.
    let corpus = std::env::var_os("KEEP_CORPUS")
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().join("corpus"));
    let t = Instant::now();
    let s = spherepipe_synthface::generate(&corpus, &preset, 7, &|| {})?;
    let n_img = s.casia_images + s.lfw_images + s.ytf_frames + s.facescrub_images + s.distractor_images;
    println!(
        "synth ({preset_name}): {n_img} images in {:.2}s = {:.0} images/s",
        t.elapsed().as_secs_f64(),
        n_img as f64 / t.elapsed().as_secs_f64()
    );

    let listing =
        read_landmark_list(&corpus.join("casia_landmark.txt"), &corpus.join("casia"), true).map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = listing.samples.len();
    let crop = spherepipe_stage_align::Crop::sphereface();
    let align = |s| spherepipe_stage_align::align_one(s, "casia", &crop).map_err(|(p, e)| anyhow::anyhow!("{p}: {e:?}"));
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let t = Instant::now();
    let rows: Vec<FaceRow> = one.install(|| listing.samples.par_iter().map(align).collect::<anyhow::Result<_>>())?;
    let single = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _again: Vec<FaceRow> = listing.samples.par_iter().map(align).collect::<anyhow::Result<_>>()?;
    let multi = t.elapsed().as_secs_f64();
    println!(
        "align: {n} faces, 1 thread {:.0} faces/s; {} threads {:.0} faces/s",
        n as f64 / single,
        rayon::current_num_threads(),
        n as f64 / multi
    );

    align_steps(&listing.samples, &crop)?;

    let mut all = rows.clone();
    all.extend(
        rows.iter()
            .map(spherepipe_stage_flip::mirror_row)
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let png_bytes: usize = all.iter().map(|r| r.png.len()).sum();
    let path = tmp.path().join("shard.parquet");
    let mut times = Vec::new();
    // SHARD_REPS=50 (say) makes the write the bulk of a `perf record` of this bench.
    let reps: usize = std::env::var("SHARD_REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        write_rows(&path, &all, 1024)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let bytes = std::fs::metadata(&path)?.len() as f64;
    // For the pyarrow peer (benches/shard_write_pyarrow.py), which writes these same rows.
    if let Some(keep) = std::env::var_os("KEEP_SHARD") {
        std::fs::copy(&path, &keep)?;
    }
    println!(
        "shard write: {} rows, {:.1} MB of PNG in, {:.1} MB file, median {:.3}s = {:.0} MB/s written ({:.0} MB/s of input)",
        all.len(),
        png_bytes as f64 / 1e6,
        bytes / 1e6,
        times[times.len() / 2],
        bytes / 1e6 / times[times.len() / 2],
        png_bytes as f64 / 1e6 / times[times.len() / 2]
    );
    Ok(())
}

/// Where one thread's alignment time goes, step by step over the same faces: read the file,
/// decode the JPEG, fit the similarity, warp to the crop, encode the PNG (ms per face).
fn align_steps(samples: &[spherepipe_face_datasets::Sample], crop: &spherepipe_stage_align::Crop) -> anyhow::Result<()> {
    let mut spent = [0f64; 5];
    let mut lap = |k: usize, t: &mut Instant| {
        spent[k] += t.elapsed().as_secs_f64();
        *t = Instant::now();
    };
    for s in samples {
        let mut t = Instant::now();
        let bytes = std::fs::read(&s.path)?;
        lap(0, &mut t);
        let img = spherepipe_stage_align::decode_rgb(&bytes)?;
        lap(1, &mut t);
        let fit = crop.method.fit(&s.landmarks, &crop.reference, crop.reflective)?;
        lap(2, &mut t);
        let (w, h) = (img.width() as usize, img.height() as usize);
        let pixels = spherepipe_face_geometry::warp_affine(img.as_raw(), w, h, 3, &fit.matrix, crop.width, crop.height)
            .ok_or_else(|| anyhow::anyhow!("singular fit"))?;
        lap(3, &mut t);
        spherepipe_face_table::encode_png(&pixels, crop.width as u32, crop.height as u32)?;
        lap(4, &mut t);
    }
    let per = |k: usize| spent[k] * 1e3 / samples.len() as f64;
    println!(
        "align steps, 1 thread, ms per face: read {:.3}, decode {:.3}, fit {:.3}, warp {:.3}, png {:.3}",
        per(0),
        per(1),
        per(2),
        per(3),
        per(4)
    );
    Ok(())
}
