//! What the engine remembers between runs, beside the store: the last state of every stage
//! (to explain staleness) and an append-only log of runs (`runs.jsonl`).

use crate::fingerprint::Material;
use serde::{Deserialize, Serialize};
use spherepipe_store::{write_atomic, Store};
use std::io::Write;
use std::path::PathBuf;

/// The fingerprint material, fingerprint and artifact of a stage's last successful run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastState {
    pub material: Material,
    pub fingerprint: String,
    pub artifact: String,
}

fn state_path(store: &Store, pipeline: &str, stage: &str) -> PathBuf {
    store.root().join("state").join(pipeline).join(format!("{stage}.json"))
}

pub fn last_state(store: &Store, pipeline: &str, stage: &str) -> Option<LastState> {
    let bytes = std::fs::read(state_path(store, pipeline, stage)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn save_state(store: &Store, pipeline: &str, stage: &str, s: &LastState) -> anyhow::Result<()> {
    write_atomic(&state_path(store, pipeline, stage), &serde_json::to_vec_pretty(s)?)?;
    Ok(())
}

/// One stage's line in a run record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: String,
    pub kind: String,
    pub state: String,
    pub fingerprint: Option<String>,
    pub artifact: Option<String>,
    pub wall_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of `runs.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub file: String,
    pub started_unix: f64,
    pub wall_s: f64,
    pub overrides: Vec<String>,
    pub stages: Vec<StageRecord>,
}

pub fn runs_path(store: &Store) -> PathBuf {
    store.root().join("runs.jsonl")
}

/// Appends one record as a single write, so concurrent appenders never interleave lines.
pub fn append_run(store: &Store, r: &RunRecord) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(r)?;
    line.push(b'\n');
    let path = runs_path(store);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    f.write_all(&line)?;
    f.sync_data()?;
    Ok(())
}

/// Every readable run record, oldest first.
pub fn read_runs(store: &Store) -> Vec<RunRecord> {
    std::fs::read_to_string(runs_path(store))
        .map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}
