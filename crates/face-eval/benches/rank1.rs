//! MegaFace-scale rank-1 search: 1,000 probes against 1,000,000 distractors of 1024 dimensions
//! (override with SPHEREPIPE_BENCH_DISTRACTORS / _PROBES / _DIM). Distractors are generated
//! chunk by chunk, as they would be read from Parquet, so memory stays at the probes plus one
//! chunk; the report gives search time, generation time and peak resident memory.
//!
//! Run: cargo bench -p spherepipe-face-eval --bench rank1

use spherepipe_face_eval::search::Search;
use spherepipe_rng::Rng;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let n = env("SPHEREPIPE_BENCH_DISTRACTORS", 1_000_000);
    let p = env("SPHEREPIPE_BENCH_PROBES", 1_000);
    let d = env("SPHEREPIPE_BENCH_DIM", 1024);
    let chunk = 8192;
    let mut rng = Rng::new(1);
    // Probes: 100 identities of 10 images, noisy enough (same-identity cosine about 0.17) that
    // rank-1 falls visibly as distractors are added.
    let ids: Vec<u32> = (0..p as u32).map(|i| i / 10).collect();
    let centres: Vec<f32> = (0..p.div_ceil(10) * d).map(|_| rng.normal() as f32).collect();
    let probes: Vec<f32> = (0..p * d)
        .map(|k| centres[(k / d / 10) * d + k % d] + 2.2 * rng.normal() as f32)
        .collect();
    let sizes: Vec<usize> = [10, 100, 1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&s| s <= n)
        .collect();
    let mut search = Search::new(probes, ids, d, &sizes, 1e-6).expect("valid probes");
    let (mut gen, mut scoring) = (Duration::ZERO, Duration::ZERO);
    let mut buf = vec![0f32; chunk * d];
    let mut done = 0;
    while done < n {
        let rows = chunk.min(n - done);
        let t = Instant::now();
        // Cheap deterministic pseudo-normal values (sum of uniforms) so generation stays small.
        let mut r = Rng::derive(7, &[done as u64]);
        for v in &mut buf[..rows * d] {
            *v = (r.unit() + r.unit() + r.unit() - 1.5) as f32;
        }
        gen += t.elapsed();
        let t = Instant::now();
        search.push(&buf[..rows * d]).expect("whole rows");
        scoring += t.elapsed();
        done += rows;
    }
    let t = Instant::now();
    let results = search.finish();
    scoring += t.elapsed();
    println!("rank-1 search: {p} probes x {n} distractors x {d} dims, chunks of {chunk}");
    println!(
        "  scoring {:.2} s ({:.1} GFLOP/s), generating distractors {:.2} s, peak RSS {:.0} MiB",
        scoring.as_secs_f64(),
        2.0 * p as f64 * n as f64 * d as f64 / scoring.as_secs_f64() / 1e9,
        gen.as_secs_f64(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    for r in results {
        println!(
            "  {:>9} distractors: rank-1 {:.4}, TAR {:?} at FAR {:e}",
            r.distractors, r.rank1, r.verification.tar, r.verification.far
        );
    }
}
