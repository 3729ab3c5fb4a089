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
    /// What its fingerprint was made of.
    pub material: Material,
    /// The fingerprint.
    pub fingerprint: String,
    /// The artifact it committed.
    pub artifact: String,
}

fn state_path(store: &Store, pipeline: &str, stage: &str) -> PathBuf {
    store.layout().state(pipeline, stage)
}

/// The last successful state of `stage` in `pipeline`, if it ever ran.
pub fn last_state(store: &Store, pipeline: &str, stage: &str) -> Option<LastState> {
    let bytes = std::fs::read(state_path(store, pipeline, stage)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Records `s` as the last successful state of `stage` in `pipeline` (tmp + rename).
pub fn save_state(store: &Store, pipeline: &str, stage: &str, s: &LastState) -> anyhow::Result<()> {
    write_atomic(&state_path(store, pipeline, stage), &serde_json::to_vec_pretty(s)?)?;
    Ok(())
}

/// One stage's line in a run record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    /// The stage's name.
    pub stage: String,
    /// Its kind.
    pub kind: String,
    /// Ran, cached, skipped, failed or cancelled.
    pub state: crate::StageState,
    /// Its fingerprint, when its inputs were known.
    pub fingerprint: Option<String>,
    /// The artifact it produced or found.
    pub artifact: Option<String>,
    /// Seconds it ran.
    pub wall_s: f64,
    /// When the run started it, in seconds since the Unix epoch (absent when it did not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix: Option<f64>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its Slurm jobs, one per attempt (none when it ran in this process).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

/// One Slurm job that tried to make a stage: the run record, the log and the page list each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first job, 2 for the first retry, ...
    pub attempt: u32,
    /// Slurm's job id.
    pub job_id: String,
    /// The memory it asked for, as `sbatch --mem` was given it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// The time limit it asked for, as `sbatch --time` was given it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// How it ended, in Slurm's word (`COMPLETED`, `OUT_OF_MEMORY`, `TIMEOUT`, ...).
    pub state: String,
    /// Slurm's reason, as squeue gave it.
    pub reason: String,
}

/// One line of `runs.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique per run: start time and process id.
    pub run_id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file as given.
    pub file: String,
    /// When it started, in seconds since the Unix epoch.
    pub started_unix: f64,
    /// Seconds it took.
    pub wall_s: f64,
    /// Its `--set` texts.
    pub overrides: Vec<String>,
    /// Every stage's outcome, in pipeline order.
    pub stages: Vec<StageRecord>,
}

/// `runs.jsonl` in the store: one line per run.
pub fn runs_path(store: &Store) -> PathBuf {
    store.layout().runs()
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
