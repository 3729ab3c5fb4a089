//! Runs a pipeline: a coordinator thread walks the DAG, resolves cache hits itself and sends
//! the rest to a pool of `jobs` worker threads over crossbeam channels. Data parallelism inside
//! a stage uses rayon's one global pool, so concurrent stages share the cores rather than
//! multiplying threads.

use crate::fingerprint::{fingerprint, material};
use crate::plan::{hash_datasets, input_hashes};
use crate::records::{append_run, save_state, LastState, RunRecord, StageRecord};
use anyhow::Context as _;
use crossbeam_channel::{unbounded, RecvTimeoutError};
use serde_json::{json, Value};
use spherepipe_pipeline::{Pipeline, Source};
use spherepipe_stage::{CancelToken, Cancelled, Inputs, Progress, ProgressSink, Stage, StageContext};
use spherepipe_store::{CacheLock, IndexEntry, LockMode, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages run at once.
    pub jobs: usize,
    /// Stage names (or base names of matrix stages) to rerun even if cached.
    pub force: BTreeSet<String>,
    /// After a failure, keep running stages that do not depend on it.
    pub keep_going: bool,
    pub lock: LockMode,
    pub cancel: CancelToken,
    /// The `--set` texts, for the run record.
    pub overrides: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            force: BTreeSet::new(),
            keep_going: false,
            lock: LockMode::Wait,
            cancel: CancelToken::new(),
            overrides: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageState {
    Ran,
    Cached,
    Skipped,
    Failed,
    Cancelled,
}

impl StageState {
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Ran => "ran",
            StageState::Cached => "cached",
            StageState::Skipped => "skipped",
            StageState::Failed => "failed",
            StageState::Cancelled => "cancelled",
        }
    }
}

/// What happened to one stage.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub stage: String,
    pub state: StageState,
    pub fingerprint: Option<String>,
    pub artifact: Option<String>,
    pub wall: Duration,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
}

impl Outcome {
    fn skipped(stage: &str, reason: String) -> Self {
        Outcome {
            stage: stage.to_owned(),
            state: StageState::Skipped,
            fingerprint: None,
            artifact: None,
            wall: Duration::ZERO,
            reason: Some(reason),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcomes: Vec<Outcome>,
    pub wall: Duration,
    pub cancelled: bool,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        !self.cancelled
            && self
                .outcomes
                .iter()
                .all(|o| matches!(o.state, StageState::Ran | StageState::Cached))
    }
    pub fn count(&self, s: StageState) -> usize {
        self.outcomes.iter().filter(|o| o.state == s).count()
    }
}

/// Front-end hooks: progress bars or log lines.
pub trait Observer: Send + Sync {
    /// A stage is about to run; returns where its progress goes.
    fn started(&self, stage: &str) -> Arc<dyn ProgressSink>;
    fn finished(&self, outcome: &Outcome);
    /// Anything else worth telling the user (waiting for the lock, cleaning up).
    fn note(&self, msg: &str);
}

struct Job {
    index: usize,
    fingerprint: String,
    name: String,
    kind: Arc<dyn Stage>,
    params: spherepipe_stage::Params,
    inputs: Inputs,
    seed: u64,
    sink: Arc<dyn ProgressSink>,
}

enum JobResult {
    Done {
        index: usize,
        manifest_hash: String,
        wall: Duration,
    },
    Failed {
        index: usize,
        error: String,
        cancelled: bool,
        wall: Duration,
    },
}

fn run_job(store: &Store, cancel: &CancelToken, job: Job) -> JobResult {
    let start = Instant::now();
    let fail = |error: String, cancelled: bool| JobResult::Failed {
        index: job.index,
        error,
        cancelled,
        wall: start.elapsed(),
    };
    let staging = match store.new_staging_dir(&job.name) {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot create a staging directory: {e}"), false),
    };
    let scratch = store.root().join("scratch").join(&job.fingerprint);
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        let _ = std::fs::remove_dir_all(&staging);
        return fail(format!("cannot create {}: {e}", scratch.display()), false);
    }
    let logs = store.root().join("logs").join(&job.fingerprint);
    let _ = std::fs::create_dir_all(&logs);
    let progress = Progress::new(job.sink.clone());
    let ctx = StageContext {
        stage_name: &job.name,
        params: &job.params,
        inputs: &job.inputs,
        out_dir: &staging,
        scratch: &scratch,
        logs: &logs,
        progress: &progress,
        cancel,
        seed: job.seed,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.kind.run(&ctx)));
    let outcome = match result {
        Ok(Ok(())) => store.commit(&staging).map_err(|e| (format!("committing the artifact: {e}"), false)),
        Ok(Err(e)) => Err((format!("{e:#}"), e.downcast_ref::<Cancelled>().is_some())),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err((
                format!("the stage panicked (a bug in stage kind `{}`): {msg}", job.kind.kind()),
                false,
            ))
        }
    };
    match outcome {
        Ok(m) => {
            // Checkpoints are no longer needed once the result is safely in the store.
            let _ = std::fs::remove_dir_all(&scratch);
            JobResult::Done {
                index: job.index,
                manifest_hash: m.hash,
                wall: start.elapsed(),
            }
        }
        Err((error, cancelled)) => {
            // Nothing partial survives: the staging directory goes.
            let _ = std::fs::remove_dir_all(&staging);
            fail(error, cancelled || cancel.is_cancelled())
        }
    }
}

#[derive(Clone)]
enum Slot {
    Pending,
    Running { fingerprint: String, material: Value },
    Done(Outcome),
}

/// Runs every stage of `p` that is not cached (plus forced ones), `jobs` at a time.
pub fn execute(p: &Pipeline, store: &Store, opts: &RunOptions, obs: &dyn Observer) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let _lock = CacheLock::acquire(store.root(), opts.lock, |who| {
        obs.note(&format!("waiting for {who} to release the cache {}", store.root().display()))
    })?;
    let cleaned = store.clean_tmp()?;
    if cleaned > 0 {
        obs.note(&format!("removed {cleaned} unfinished artifact(s) left by an interrupted run"));
    }
    let datasets = hash_datasets(p, store)?;

    let n = p.nodes.len();
    let mut slots = vec![Slot::Pending; n];
    let mut artifacts: Vec<Option<String>> = vec![None; n];
    let forced: BTreeSet<usize> = opts.force.iter().flat_map(|f| p.select(f)).collect();
    let (job_tx, job_rx) = unbounded::<Job>();
    let (res_tx, res_rx) = unbounded::<JobResult>();
    let mut stop = false;

    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..opts.jobs.max(1) {
            let (job_rx, res_tx, cancel) = (job_rx.clone(), res_tx.clone(), opts.cancel.clone());
            scope.spawn(move || {
                for job in job_rx {
                    if res_tx.send(run_job(store, &cancel, job)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);
        let mut running = 0usize;
        loop {
            if opts.cancel.is_cancelled() {
                stop = true;
            }
            // Start (or resolve from cache) everything that is ready.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for i in 0..n {
                    if !matches!(slots[i], Slot::Pending) {
                        continue;
                    }
                    let ups = p.upstream(i);
                    let blocked: Vec<&Outcome> = ups
                        .iter()
                        .filter_map(|&u| match &slots[u] {
                            Slot::Done(o) if !matches!(o.state, StageState::Ran | StageState::Cached) => Some(o),
                            _ => None,
                        })
                        .collect();
                    if let Some(b) = blocked.first() {
                        let o = Outcome::skipped(&p.nodes[i].name, format!("upstream `{}` {}", b.stage, b.state.as_str()));
                        obs.finished(&o);
                        slots[i] = Slot::Done(o);
                        progressed = true;
                        continue;
                    }
                    if !ups.iter().all(|&u| matches!(slots[u], Slot::Done(_))) {
                        continue;
                    }
                    let hashes = input_hashes(p, i, &datasets, &artifacts)
                        .map_err(|u| anyhow::anyhow!("internal: input `{u}` has no content hash"))?;
                    let m = material(&p.nodes[i], &hashes, p.seed);
                    let fp = fingerprint(&m);
                    if !forced.contains(&i) {
                        if let Some(e) = store.lookup(&fp) {
                            artifacts[i] = Some(e.artifact.clone());
                            save_state(
                                store,
                                &p.name,
                                &p.nodes[i].name,
                                &LastState {
                                    material: m,
                                    fingerprint: fp.clone(),
                                    artifact: e.artifact.clone(),
                                },
                            )?;
                            let o = Outcome {
                                stage: p.nodes[i].name.clone(),
                                state: StageState::Cached,
                                fingerprint: Some(fp),
                                artifact: Some(e.artifact),
                                wall: Duration::ZERO,
                                reason: None,
                            };
                            obs.finished(&o);
                            slots[i] = Slot::Done(o);
                            progressed = true;
                            continue;
                        }
                    }
                    // Only as many stages in flight as workers, so a failure can still stop the rest.
                    if stop || running >= opts.jobs.max(1) {
                        continue;
                    }
                    let node = &p.nodes[i];
                    let inputs: BTreeMap<String, Vec<PathBuf>> = node
                        .inputs
                        .iter()
                        .map(|(k, srcs)| {
                            let dirs = srcs
                                .iter()
                                .map(|s| match s {
                                    Source::Dataset(d) => p.datasets[d].path.clone(),
                                    Source::Stage(j) => store.artifact_dir(artifacts[*j].as_deref().unwrap_or_default()),
                                })
                                .collect();
                            (k.clone(), dirs)
                        })
                        .collect();
                    let sink = obs.started(&node.name);
                    job_tx
                        .send(Job {
                            index: i,
                            fingerprint: fp.clone(),
                            name: node.name.clone(),
                            kind: node.kind.clone(),
                            params: node.params.clone(),
                            inputs: Inputs::new(inputs),
                            seed: p.seed,
                            sink,
                        })
                        .context("worker pool stopped")?;
                    slots[i] = Slot::Running {
                        fingerprint: fp,
                        material: m,
                    };
                    running += 1;
                }
            }
            if running == 0 {
                break;
            }
            let res = match res_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => anyhow::bail!("all workers stopped unexpectedly"),
            };
            running -= 1;
            let (index, outcome) = match res {
                JobResult::Done {
                    index,
                    manifest_hash,
                    wall,
                } => {
                    let Slot::Running { fingerprint, material } = slots[index].clone() else {
                        anyhow::bail!("internal: result for a stage that was not running")
                    };
                    let node = &p.nodes[index];
                    let provenance = json!({"stage": node.name, "pipeline": p.name, "material": material});
                    store.record(&IndexEntry {
                        fingerprint: fingerprint.clone(),
                        artifact: manifest_hash.clone(),
                        provenance,
                    })?;
                    save_state(
                        store,
                        &p.name,
                        &node.name,
                        &LastState {
                            material,
                            fingerprint: fingerprint.clone(),
                            artifact: manifest_hash.clone(),
                        },
                    )?;
                    artifacts[index] = Some(manifest_hash.clone());
                    (
                        index,
                        Outcome {
                            stage: node.name.clone(),
                            state: StageState::Ran,
                            fingerprint: Some(fingerprint),
                            artifact: Some(manifest_hash),
                            wall,
                            reason: None,
                        },
                    )
                }
                JobResult::Failed {
                    index,
                    error,
                    cancelled,
                    wall,
                } => {
                    let fp = match &slots[index] {
                        Slot::Running { fingerprint, .. } => Some(fingerprint.clone()),
                        _ => None,
                    };
                    let state = if cancelled { StageState::Cancelled } else { StageState::Failed };
                    if !opts.keep_going || cancelled {
                        stop = true;
                    }
                    (
                        index,
                        Outcome {
                            stage: p.nodes[index].name.clone(),
                            state,
                            fingerprint: fp,
                            artifact: None,
                            wall,
                            reason: Some(error),
                        },
                    )
                }
            };
            obs.finished(&outcome);
            slots[index] = Slot::Done(outcome);
        }
        drop(job_tx);
        Ok(())
    })?;

    let cancelled = opts.cancel.is_cancelled();
    let outcomes: Vec<Outcome> = slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| match s {
            Slot::Done(o) => o,
            _ => {
                let why = if cancelled {
                    "not started: the run was interrupted"
                } else {
                    "not started: an earlier stage failed (use --keep-going to run independent stages anyway)"
                };
                let o = Outcome::skipped(&p.nodes[i].name, why.into());
                obs.finished(&o);
                o
            }
        })
        .collect();
    let report = RunReport {
        outcomes,
        wall: started.elapsed(),
        cancelled,
    };
    let record = RunRecord {
        run_id: format!("{:.0}-{}", started_unix * 1000.0, std::process::id()),
        pipeline: p.name.clone(),
        file: p.file.display().to_string(),
        started_unix,
        wall_s: report.wall.as_secs_f64(),
        overrides: opts.overrides.clone(),
        stages: report
            .outcomes
            .iter()
            .zip(&p.nodes)
            .map(|(o, n)| StageRecord {
                stage: o.stage.clone(),
                kind: n.kind.kind().to_owned(),
                state: o.state.as_str().to_owned(),
                fingerprint: o.fingerprint.clone(),
                artifact: o.artifact.clone(),
                wall_s: o.wall.as_secs_f64(),
                error: o.reason.clone(),
            })
            .collect(),
    };
    append_run(store, &record)?;
    Ok(report)
}
