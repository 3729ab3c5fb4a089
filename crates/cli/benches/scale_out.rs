//! What scaling out costs on one machine: the tiny face pipeline run locally and through Slurm
//! with a shared store (seconds per stage: submission, scheduling and transfer), and `align`
//! over the `bench` corpus in 1, 2 and 4 parts, locally and through Slurm.
//!
//! `cargo bench -p spherepipe-cli --bench scale_out` (env `PRESET`, default `bench`; `STORE`, a
//! store URL for the Slurm runs, default a fresh directory per run). The Slurm half needs a
//! cluster answering `sinfo` (`.ci/slurm up DIR`, then `SLURM_CONF`); without one it is skipped.
//! Every run starts from an empty cache (and an empty store): these are first-run costs.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_spherepipe");

/// The tiny face pipeline: data, a small training, LFW aligned, extracted and evaluated.
const TINY: &str = r#"
name: tiny
seed: 3
stages:
  synth: {kind: synth, params: {preset: tiny}}
  dedupe: {kind: dedupe, inputs: {train: synth, tests: [synth]}}
  align: {kind: align, inputs: {images: synth, samples: dedupe}}
  flip: {kind: flip, inputs: {faces: align}}
  shard: {kind: shard, inputs: {faces: flip}, params: {rows_per_shard: 30}}
  train:
    kind: train
    inputs: {shards: shard}
    params: {net: sphere4, width: 0.125, features: 3, batch: 8, steps: 4, lr: 0.01, milestones: [1000], lambda_gamma: 1.0}
  align_lfw: {kind: align, inputs: {images: synth}, params: {format: lfw}}
  extract_lfw: {kind: extract, inputs: {model: train, faces: align_lfw}, params: {batch: 7}}
  evaluate: {kind: evaluate, inputs: {data: synth, lfw: extract_lfw}, params: {protocol: unflipped}}
"#;

/// A run's wall time and each stage's, from the command and its `runs.jsonl` record.
struct Timed {
    wall: f64,
    stages: BTreeMap<String, f64>,
}

/// Runs `spherepipe run` on `yaml` in a fresh directory under `dir` (extra args appended).
fn run(dir: &Path, yaml: &str, extra: &[&str]) -> anyhow::Result<Timed> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("p.yaml"), yaml)?;
    let t = Instant::now();
    let out = Command::new(BIN)
        .args(["run", "p.yaml", "--quiet"])
        .args(extra)
        .current_dir(dir)
        .env("SPHEREPIPE_NODE_CACHE", dir.join("node-cache"))
        .output()?;
    let wall = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = std::fs::read_to_string(dir.join("cache/runs.jsonl"))?;
    let last: Value = serde_json::from_str(runs.lines().last().unwrap_or("{}"))?;
    let stages = last["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["stage"].as_str()?.to_owned(), s["wall_s"].as_f64()?)))
        .collect();
    Ok(Timed { wall, stages })
}

fn cluster() -> bool {
    Command::new("sinfo")
        .arg("-h")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The store for one Slurm run: `STORE` with a fresh prefix, or a fresh directory.
fn store(base: &Path, label: &str) -> anyhow::Result<String> {
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    Ok(match std::env::var("STORE") {
        Ok(url) => format!("{}/{label}-{nonce}", url.trim_end_matches('/')),
        Err(_) => {
            let d = base.join(format!("store-{label}"));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d)?;
            format!("file://{}", d.display())
        }
    })
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let slurm = cluster();
    if !slurm {
        println!("no Slurm cluster answers sinfo: the Slurm half is skipped (.ci/slurm up DIR; export SLURM_CONF)");
    }
    tiny_pipeline(tmp.path(), slurm)?;
    align_in_parts(tmp.path(), slurm)
}

/// The tiny pipeline stage by stage, locally and through Slurm.
fn tiny_pipeline(tmp: &Path, slurm: bool) -> anyhow::Result<()> {
    let local = run(&tmp.join("tiny-local"), TINY, &[])?;
    let remote = match slurm {
        true => {
            let url = store(tmp, "tiny")?;
            Some(run(&tmp.join("tiny-slurm"), TINY, &["--executor", "slurm", "--store", &url])?)
        }
        false => None,
    };
    println!("\ntiny face pipeline, first run (seconds; a Slurm stage's time runs from submission to the store holding its artifact)");
    println!("{:<14} {:>8} {:>8} {:>9}", "stage", "local", "slurm", "overhead");
    for (stage, l) in &local.stages {
        let r = remote.as_ref().and_then(|r| r.stages.get(stage)).copied();
        let show = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        println!("{stage:<14} {l:>8.2} {:>8} {:>9}", show(r), show(r.map(|r| r - l)));
    }
    let rw = remote.as_ref().map(|r| format!("{:.2}", r.wall)).unwrap_or_else(|| "-".into());
    println!("{:<14} {:>8.2} {rw:>8}", "whole run", local.wall);
    Ok(())
}

/// `align` over the corpus in 1, 2 and 4 parts, locally and through Slurm.
fn align_in_parts(tmp: &Path, slurm: bool) -> anyhow::Result<()> {
    let preset = std::env::var("PRESET").unwrap_or_else(|_| "bench".into());
    let corpus: PathBuf = tmp.join("corpus");
    let t = Instant::now();
    let out = Command::new(BIN)
        .args(["synth", "--out"])
        .arg(&corpus)
        .args(["--preset", &preset])
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let images = count_files(&corpus.join("casia"), "jpg");
    println!(
        "\nalign over the `{preset}` corpus's CASIA layout ({images} images; corpus written in {:.0}s)",
        t.elapsed().as_secs_f64()
    );
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>14}",
        "parts", "local s", "faces/s", "slurm s", "faces/s"
    );
    let mut artifacts = Vec::new();
    for parts in [1, 2, 4] {
        let yaml = format!(
            "name: a\ndatasets:\n  corpus: {{path: {}}}\nstages:\n  align: {{kind: align, inputs: {{images: corpus}}, params: {{format: casia}}, parts: {parts}}}\n",
            corpus.display()
        );
        let dir = tmp.join(format!("align-{parts}"));
        let local = run(&dir, &yaml, &[])?;
        artifacts.push(last_artifact(&dir)?);
        let remote = match slurm {
            true => {
                let url = store(tmp, &format!("align-{parts}"))?;
                let dir = tmp.join(format!("align-slurm-{parts}"));
                let r = run(&dir, &yaml, &["--executor", "slurm", "--store", &url])?;
                artifacts.push(last_artifact(&dir)?);
                Some(r.wall)
            }
            false => None,
        };
        let rate = |s: f64| images as f64 / s;
        match remote {
            Some(r) => println!(
                "{parts:<6} {:>12.2} {:>12.0} {r:>14.2} {:>14.0}",
                local.wall,
                rate(local.wall),
                rate(r)
            ),
            None => println!("{parts:<6} {:>12.2} {:>12.0} {:>14} {:>14}", local.wall, rate(local.wall), "-", "-"),
        }
    }
    artifacts.dedup();
    anyhow::ensure!(artifacts.len() == 1, "the split runs made different artifacts: {artifacts:?}");
    println!("every run made artifact {}", artifacts[0]);
    Ok(())
}

fn last_artifact(dir: &Path) -> anyhow::Result<String> {
    let runs = std::fs::read_to_string(dir.join("cache/runs.jsonl"))?;
    let last: Value = serde_json::from_str(runs.lines().last().unwrap_or("{}"))?;
    Ok(last["stages"][0]["artifact"].as_str().unwrap_or_default().to_owned())
}

fn count_files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        count_files(&p, ext)
                    } else {
                        usize::from(p.extension().is_some_and(|x| x == ext))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
