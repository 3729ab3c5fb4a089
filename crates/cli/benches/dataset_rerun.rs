//! Dataset hashing and no-op rerun over many small files.
//!
//! `cargo bench -p spherepipe-cli --bench dataset_rerun` (env `FILES`, default 100000; `SIZE`,
//! bytes per file, default 2048). Builds a flat dataset of FILES text files, then measures:
//! 1. cold hashing: `hash_tree` with an empty stat cache (page cache dropped when permitted);
//! 2. the first `spherepipe run` of a one-stage pipeline over it (hash + wordcount);
//! 3. no-op reruns: the same run with everything cached (stat cache hits, no content read).

use spherepipe_engine::{execute, open_store, Observer, Outcome, RunOptions, StageState};
use spherepipe_stage::{ProgressSink, Registry};
use spherepipe_store::{hash_tree, StatCache, TreeKind};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

struct Quiet;
struct Nothing;
impl ProgressSink for Nothing {
    fn set_length(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn message(&self, _: &str) {}
}
impl Observer for Quiet {
    fn started(&self, _: &str) -> Arc<dyn ProgressSink> {
        Arc::new(Nothing)
    }
    fn finished(&self, _: &Outcome) {}
    fn note(&self, _: &str) {}
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn drop_page_cache() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .and_then(|mut f| f.write_all(b"3\n"))
        .is_ok()
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` asks benches to list their tests
    }
    let files = env("FILES", 100_000);
    let size = env("SIZE", 2048);
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir(&data)?;
    let t = Instant::now();
    let words = ["face", "angular", "margin", "softmax", "hypersphere", "feature", "identity", "loss"];
    for i in 0..files {
        let mut text = String::with_capacity(size + 16);
        let mut k = i;
        while text.len() < size {
            text.push_str(words[k % words.len()]);
            text.push(' ');
            k = k.wrapping_mul(2654435761).wrapping_add(1) >> 3;
        }
        std::fs::write(data.join(format!("{i:06}.txt")), &text[..size])?;
    }
    // Age the files past the stat cache's racy window.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for e in std::fs::read_dir(&data)? {
        std::fs::File::options().write(true).open(e?.path())?.set_modified(old)?;
    }
    eprintln!("wrote {files} files of {size} bytes in {:.1}s", t.elapsed().as_secs_f64());

    let dropped = drop_page_cache();
    let t = Instant::now();
    let cold = hash_tree(&data, TreeKind::Dataset, Some(&StatCache::load(tmp.path().join("sc.tsv"))))?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "cold hash: {files} files, {:.1} MB in {secs:.2}s = {:.1} MB/s, {:.0} files/s (page cache {})",
        cold.bytes as f64 / 1e6,
        cold.bytes as f64 / 1e6 / secs,
        files as f64 / secs,
        if dropped { "dropped first" } else { "warm: could not drop it" }
    );

    let yaml = "name: bench\nstages:\n  words: {kind: wordcount, inputs: {text: data}}\ndatasets:\n  data: {path: data}\n";
    let pipeline = tmp.path().join("p.yaml");
    std::fs::write(&pipeline, yaml)?;
    let mut registry = Registry::new();
    spherepipe_toy::register(&mut registry);
    let p = spherepipe_pipeline::load(&pipeline, &registry, &[]).map_err(|d| anyhow::anyhow!("{d}"))?;
    let store = open_store(&p)?;
    let opts = RunOptions::default();
    let t = Instant::now();
    let r = execute(&p, &store, &opts, &Quiet)?;
    anyhow::ensure!(r.outcomes[0].state == StageState::Ran, "first run did not run");
    println!("first run (hash {files} files + wordcount): {:.2}s", t.elapsed().as_secs_f64());

    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let p = spherepipe_pipeline::load(&pipeline, &registry, &[]).map_err(|d| anyhow::anyhow!("{d}"))?;
        let r = execute(&p, &store, &opts, &Quiet)?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(r.outcomes[0].state == StageState::Cached, "no-op rerun was not cached");
    }
    times.sort_by(f64::total_cmp);
    // Where a no-op rerun's time goes.
    let t = Instant::now();
    let sc = StatCache::load(store.layout().stat_cache());
    let load = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let warm = hash_tree(&data, TreeKind::Dataset, Some(&sc))?;
    let walk = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        warm.files_read == 0 && warm.hash == cold.hash,
        "a no-op rehash read {} files",
        warm.files_read
    );
    println!(
        "  of which: stat cache load {load:.3}s ({} entries), walk + stat + listing hash {walk:.3}s, files read: {}",
        sc.len(),
        warm.files_read
    );
    println!(
        "no-op rerun (load + stat {files} files + cache lookup): median {:.3}s, min {:.3}s, max {:.3}s over 5",
        times[2], times[0], times[4]
    );
    Ok(())
}
