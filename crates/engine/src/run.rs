//! Runs a pipeline: a coordinator walks the DAG, resolves cache hits itself and hands the rest
//! to an [`Executor`](crate::executor::Executor) (a pool of `jobs` worker threads, or Slurm
//! jobs). Data parallelism inside
//! a stage uses rayon's one global pool, so concurrent stages share the cores rather than
//! multiplying threads.

use crate::executor::{Executor, LocalPool};
use crate::fingerprint::Material;
use crate::job::{Job, JobResult};
use crate::lineage::{Lineage, Made};
use crate::plan::{hash_datasets, resolve_node};
use crate::records::{append_run, save_state, Attempt, LastState, RunRecord, StageRecord};
use crate::slurm::{SlurmExecutor, SlurmOptions};
use spherepipe_pipeline::{Pipeline, Source};
use spherepipe_stage::{CancelToken, Inputs, ProgressSink};
use spherepipe_store::{BuildLock, CacheLock, Claim, IndexEntry, LockMode, Pushed, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How `execute` runs a pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages run at once.
    pub jobs: usize,
    /// Stage names (or base names of matrix stages) to rerun even if cached.
    pub force: BTreeSet<String>,
    /// After a failure, keep running stages that do not depend on it.
    pub keep_going: bool,
    /// Wait for, or fail on, another process that holds the cache (a gc or verify) or builds
    /// a stage this run needs.
    pub lock: LockMode,
    /// Set by Ctrl-C: running stages stop at their next check.
    pub cancel: CancelToken,
    /// The `--set` texts, for the run record.
    pub overrides: Vec<String>,
    /// Where stages run.
    pub executor: ExecutorKind,
}

/// Where `execute` runs stages.
#[derive(Debug, Clone, Default)]
pub enum ExecutorKind {
    /// On `jobs` worker threads of this process.
    #[default]
    Local,
    /// As Slurm jobs, exchanging artifacts through the shared store (which must be set).
    Slurm(SlurmOptions),
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
            executor: ExecutorKind::Local,
        }
    }
}

/// What became of a stage in a run (written to `runs.jsonl` by its lowercase name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    /// It ran and committed an artifact.
    Ran,
    /// Its artifact was already in the cache.
    Cached,
    /// An input failed, so it could not run.
    Skipped,
    /// It ran and returned an error.
    Failed,
    /// The run was interrupted before it finished.
    Cancelled,
}

impl StageState {
    /// The name the report and the run record use.
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
    /// The stage's name.
    pub stage: String,
    /// What became of it.
    pub state: StageState,
    /// Its fingerprint, when its inputs were known.
    pub fingerprint: Option<String>,
    /// The artifact it produced or found.
    pub artifact: Option<String>,
    /// How long it ran.
    pub wall: Duration,
    /// When this run started it (handed it to a worker or to Slurm), in seconds since the
    /// Unix epoch; none when it did not run.
    pub started_unix: Option<f64>,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    /// Its Slurm jobs, one per attempt (none when it ran in this process).
    pub attempts: Vec<Attempt>,
}

impl Outcome {
    fn skipped(stage: &str, reason: String) -> Self {
        Outcome {
            stage: stage.to_owned(),
            state: StageState::Skipped,
            fingerprint: None,
            artifact: None,
            wall: Duration::ZERO,
            started_unix: None,
            reason: Some(reason),
            attempts: Vec::new(),
        }
    }
}

/// What a run did, stage by stage.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Every stage's outcome, in pipeline order.
    pub outcomes: Vec<Outcome>,
    /// How long the run took.
    pub wall: Duration,
    /// Ctrl-C stopped it.
    pub cancelled: bool,
}

impl RunReport {
    /// Every stage ran or was cached, and nothing was cancelled.
    pub fn ok(&self) -> bool {
        !self.cancelled
            && self
                .outcomes
                .iter()
                .all(|o| matches!(o.state, StageState::Ran | StageState::Cached))
    }
    /// How many stages ended in state `s`.
    pub fn count(&self, s: StageState) -> usize {
        self.outcomes.iter().filter(|o| o.state == s).count()
    }
}

/// Front-end hooks: progress bars or log lines.
pub trait Observer: Send + Sync {
    /// A stage is about to run; returns where its progress goes.
    fn started(&self, stage: &str) -> Arc<dyn ProgressSink>;
    /// A stage ran, was cached, failed, was skipped or was cancelled.
    fn finished(&self, outcome: &Outcome);
    /// Anything else worth telling the user (waiting for the lock, cleaning up).
    fn note(&self, msg: &str);
    /// Another process (`holder`) is building `stage`'s artifact: this run waits for that
    /// stage only, and then uses it.
    fn waiting(&self, stage: &str, holder: &str) {
        self.note(&format!("{stage}: waiting for {holder}, which is building it"))
    }
    /// Something the user must see even in a quiet run (a corrupt object refused, a stage
    /// kind found not deterministic).
    fn warning(&self, msg: &str) {
        self.note(msg)
    }
}

/// Where a stage is in this run.
#[derive(Clone)]
enum Slot {
    /// Its inputs are not all done.
    Pending,
    /// Resolved and looked up (once): it must be built, and another process is building it;
    /// it is claimed again each round until that process is done.
    Waiting {
        fingerprint: String,
        material: Material,
        /// The user was told whom it waits for.
        told: bool,
    },
    /// Claimed (this process builds it): it waits for a free slot.
    Ready {
        fingerprint: String,
        material: Material,
    },
    Running {
        fingerprint: String,
        material: Material,
    },
    Done(Outcome),
}

/// Runs every stage of `p` that is not cached (plus forced ones), `jobs` at a time.
pub fn execute(p: &Pipeline, store: &Store, opts: &RunOptions, obs: &dyn Observer) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let started_unix = unix_now();
    let _lock = CacheLock::for_run(store.root(), opts.lock, |who| {
        obs.note(&format!("waiting for {who} to release the cache {}", store.root().display()))
    })?;
    let cleaned = store.clean_tmp()?;
    if cleaned > 0 {
        obs.note(&format!("removed {cleaned} unfinished artifact(s) left by an interrupted run"));
    }
    let mut run = Coordinator::new(p, store, opts, obs, hash_datasets(p, store)?);
    match &opts.executor {
        ExecutorKind::Local => std::thread::scope(|scope| run.drive(&mut LocalPool::start(scope, store, &opts.cancel, opts.jobs)))?,
        ExecutorKind::Slurm(slurm) => {
            if store.mirror().is_none() {
                anyhow::bail!("the Slurm executor needs a shared store that every node can reach: pass --store s3://bucket/prefix or file:///shared/dir (or set `store:` in the pipeline file)");
            }
            run.download = false;
            run.drive(&mut SlurmExecutor::new(slurm, p, store, &opts.cancel))?;
            run.fetch_results();
        }
    }
    let report = RunReport {
        outcomes: run.close(),
        wall: started.elapsed(),
        cancelled: opts.cancel.is_cancelled(),
    };
    append_run(store, &run_record(p, opts, &report, started_unix))?;
    Ok(report)
}

/// Walks the DAG: each stage whose inputs are done is skipped (an input failed), resolved
/// from the cache, or handed to the executor; results come back and free what depends on them.
struct Coordinator<'a> {
    p: &'a Pipeline,
    store: &'a Store,
    opts: &'a RunOptions,
    obs: &'a dyn Observer,
    datasets: BTreeMap<String, String>,
    forced: BTreeSet<usize>,
    slots: Vec<Slot>,
    artifacts: Vec<Option<String>>,
    running: usize,
    /// When each stage was handed to the executor.
    started: Vec<Option<f64>>,
    /// The build locks of the stages this process claimed, released once each is recorded.
    held: BTreeMap<usize, BuildLock>,
    /// Start nothing new: a stage failed (without --keep-going) or the run was interrupted.
    stop: bool,
    /// Download what the shared store holds when it is needed here (false when stages run
    /// elsewhere and fetch their own inputs).
    download: bool,
}

impl<'a> Coordinator<'a> {
    fn new(p: &'a Pipeline, store: &'a Store, opts: &'a RunOptions, obs: &'a dyn Observer, datasets: BTreeMap<String, String>) -> Self {
        Coordinator {
            p,
            store,
            opts,
            obs,
            datasets,
            forced: opts.force.iter().flat_map(|f| p.select(f)).collect(),
            slots: vec![Slot::Pending; p.nodes.len()],
            artifacts: vec![None; p.nodes.len()],
            running: 0,
            started: vec![None; p.nodes.len()],
            held: BTreeMap::new(),
            stop: false,
            download: true,
        }
    }

    /// Until nothing is running and nothing more can start: start what is ready, then wait
    /// for one result.
    fn drive(&mut self, exec: &mut dyn Executor) -> anyhow::Result<()> {
        loop {
            if self.opts.cancel.is_cancelled() {
                self.stop = true;
            }
            self.start_ready(exec)?;
            if self.running == 0 {
                if self.stop || !self.slots.iter().any(|s| matches!(s, Slot::Waiting { .. })) {
                    return Ok(());
                }
                // Only stages another process builds are left: claim them again shortly.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if let Some(result) = exec.next_result(Duration::from_millis(100))? {
                self.running -= 1;
                self.take_result(result)?;
            }
        }
    }

    /// Advances every pending stage that can move, until none can.
    fn start_ready(&mut self, exec: &mut dyn Executor) -> anyhow::Result<()> {
        loop {
            let mut progressed = false;
            for i in 0..self.p.nodes.len() {
                progressed |= self.advance(i, exec)?;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Moves stage `i` on if it can. True when it finished here (skipped or cached), which may
    /// free stages after it. A stage is resolved and looked up once, when its inputs are done;
    /// if it must run, it waits as `Ready` for a free slot.
    fn advance(&mut self, i: usize, exec: &mut dyn Executor) -> anyhow::Result<bool> {
        if matches!(self.slots[i], Slot::Pending) && self.resolve(i)? {
            return Ok(true);
        }
        if matches!(self.slots[i], Slot::Waiting { .. }) && !self.stop && self.claim(i)? {
            return Ok(true);
        }
        // Only as many stages in flight as the executor runs, so a failure can still stop the rest.
        if matches!(self.slots[i], Slot::Ready { .. }) && !self.stop && self.running < exec.capacity() {
            if let Slot::Ready { fingerprint, material } = std::mem::replace(&mut self.slots[i], Slot::Pending) {
                self.start(i, fingerprint, material, exec)?;
            }
        }
        Ok(false)
    }

    /// A pending stage whose inputs are done: skipped (an input failed), finished from the
    /// cache or the store (true), or made `Ready` to run.
    fn resolve(&mut self, i: usize) -> anyhow::Result<bool> {
        let ups = self.p.upstream(i);
        if let Some(why) = self.blocked_by(&ups) {
            self.finish(i, Outcome::skipped(&self.p.nodes[i].name, why));
            return Ok(true);
        }
        if !ups.iter().all(|&u| matches!(self.slots[u], Slot::Done(_))) {
            return Ok(false);
        }
        let mut r = resolve_node(self.p, i, self.store, &self.datasets, &self.artifacts)
            .map_err(|u| anyhow::anyhow!("internal: input `{u}` has no content hash"))?;
        let forced = self.forced.contains(&i);
        if r.cached.is_none() && !forced {
            r.cached = self.find_shared(&r.fingerprint)?;
        }
        if let (Some(artifact), false) = (&r.cached, forced) {
            self.finish_cached(i, &r.fingerprint, r.material.clone(), artifact)?;
            return Ok(true);
        }
        self.slots[i] = Slot::Waiting {
            fingerprint: r.fingerprint,
            material: r.material,
            told: false,
        };
        self.claim(i)
    }

    /// A stage that must be built: claims its build lock, so that no other process builds it
    /// at the same time. Held: it is `Ready` to run, unless the process that held the lock
    /// before built it meanwhile (then it is cached: true). Busy: it keeps waiting (telling
    /// the user once), or fails at once under `--no-wait` (true).
    fn claim(&mut self, i: usize) -> anyhow::Result<bool> {
        let Slot::Waiting {
            fingerprint,
            material,
            told,
        } = self.slots[i].clone()
        else {
            return Ok(false);
        };
        let node = &self.p.nodes[i];
        let who = format!("pid {}, pipeline `{}`, stage `{}`", std::process::id(), self.p.name, node.name);
        match self.store.claim(&fingerprint, &who)? {
            Claim::Held(lock) => {
                // Built meanwhile by the previous holder: here, or (when it was a waited-for
                // process, which may have only shared it) in the store.
                let built = match (self.forced.contains(&i), self.store.lookup(&fingerprint)) {
                    (true, _) => None,
                    (false, Some(e)) => Some(e.artifact),
                    (false, None) if told => self.find_shared(&fingerprint)?,
                    (false, None) => None,
                };
                if let Some(artifact) = built {
                    drop(lock);
                    self.finish_cached(i, &fingerprint, material, &artifact)?;
                    return Ok(true);
                }
                self.held.insert(i, lock);
                self.slots[i] = Slot::Ready { fingerprint, material };
                Ok(false)
            }
            Claim::Busy { holder } if self.opts.lock == LockMode::Fail => {
                let reason =
                    format!("another run is building it ({holder}); rerun when it has finished, or leave out --no-wait to wait for it");
                self.fail(i, Some(fingerprint), reason, Duration::ZERO, false, Vec::new());
                Ok(true)
            }
            Claim::Busy { holder } => {
                if !told {
                    self.obs.waiting(&node.name, &holder);
                    self.slots[i] = Slot::Waiting {
                        fingerprint,
                        material,
                        told: true,
                    };
                }
                Ok(false)
            }
        }
    }

    /// On a local miss, the shared store's artifact: downloaded here when this process needs
    /// it, only located when stages run elsewhere and fetch their own inputs.
    fn find_shared(&self, fp: &str) -> anyhow::Result<Option<String>> {
        if self.download {
            self.fetch_shared(fp)
        } else {
            Ok(self.store.locate(fp)?.map(|e| e.artifact))
        }
    }

    /// Why stage `i` cannot run: an input stage that finished without an artifact.
    fn blocked_by(&self, ups: &BTreeSet<usize>) -> Option<String> {
        ups.iter().find_map(|&u| match &self.slots[u] {
            Slot::Done(o) if !matches!(o.state, StageState::Ran | StageState::Cached) => {
                Some(format!("upstream `{}` {}", o.stage, o.state.as_str()))
            }
            _ => None,
        })
    }

    /// On a local miss, the shared store's artifact (downloaded and checked), if it has one.
    /// A corrupt one is refused with a warning, and the stage rebuilt; a store that fails
    /// stops the run.
    fn fetch_shared(&self, fp: &str) -> anyhow::Result<Option<String>> {
        match self.store.fetch_remote(fp) {
            Ok(entry) => Ok(entry.map(|e| e.artifact)),
            Err(e) if e.is_bad_object() => {
                self.obs.warning(&format!("warning: {e}"));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Hands stage `i`'s recorded artifact to the shared store, if there is one, and warns when
    /// another machine recorded a different artifact for the same fingerprint.
    fn share(&self, i: usize, entry: &IndexEntry) -> anyhow::Result<()> {
        let pushed = self.store.publish(entry)?;
        if let Some(Pushed::Replaced { why }) = &pushed {
            let url = self.store.mirror().map_or("", |m| m.url());
            self.obs.warning(&format!(
                "warning: the store {url} held an unusable index entry for stage `{}` ({why}); it was replaced by this run's",
                self.p.nodes[i].name
            ));
        }
        if let Some(Pushed::Differs { theirs }) = pushed {
            let node = &self.p.nodes[i];
            let url = self.store.mirror().map_or("", |m| m.url());
            self.obs.warning(&format!(
                "warning: stage `{}` of kind `{}` is not deterministic: for fingerprint {} the store {url} already holds artifact {theirs}, this run made {}; the store keeps the first",
                node.name,
                node.kind.kind(),
                entry.fingerprint,
                entry.artifact
            ));
        }
        Ok(())
    }

    /// Finishes stage `i` from the cache.
    fn finish_cached(&mut self, i: usize, fp: &str, m: Material, artifact: &str) -> anyhow::Result<()> {
        if let Some(entry) = self.store.lookup(fp) {
            self.share(i, &entry)?;
        }
        self.record_state(i, m, fp, artifact)?;
        self.artifacts[i] = Some(artifact.to_owned());
        let o = Outcome {
            stage: self.p.nodes[i].name.clone(),
            state: StageState::Cached,
            fingerprint: Some(fp.to_owned()),
            artifact: Some(artifact.to_owned()),
            wall: Duration::ZERO,
            started_unix: None,
            reason: None,
            attempts: Vec::new(),
        };
        self.finish(i, o);
        Ok(())
    }

    /// Hands stage `i` to the executor, its inputs as directories.
    fn start(&mut self, i: usize, fp: String, m: Material, exec: &mut dyn Executor) -> anyhow::Result<()> {
        let node = &self.p.nodes[i];
        let inputs: BTreeMap<String, Vec<PathBuf>> = node
            .inputs
            .iter()
            .map(|(k, srcs)| (k.clone(), srcs.iter().map(|s| self.input_dir(s)).collect()))
            .collect();
        exec.submit(Job {
            facts: Default::default(),
            index: i,
            fingerprint: fp.clone(),
            name: node.name.clone(),
            kind: node.kind.clone(),
            params: node.params.clone(),
            inputs: Inputs::new(inputs),
            seed: self.p.seed,
            sink: self.obs.started(&node.name),
            parts: node.parts,
            forced: self.forced.contains(&i),
        })?;
        self.slots[i] = Slot::Running {
            fingerprint: fp,
            material: m,
        };
        self.started[i] = Some(unix_now());
        self.running += 1;
        Ok(())
    }

    /// The directory an input reads: a dataset's path, or a finished stage's artifact.
    fn input_dir(&self, s: &Source) -> PathBuf {
        match s {
            Source::Dataset(d) => self.p.datasets[d].path.clone(),
            Source::Stage(j) => self.store.artifact_dir(self.artifacts[*j].as_deref().unwrap_or_default()),
        }
    }

    /// Records a job's end: a new artifact goes into the index; a failure stops the run
    /// unless --keep-going.
    fn take_result(&mut self, result: JobResult) -> anyhow::Result<()> {
        match result {
            JobResult::Done {
                index,
                manifest_hash,
                wall,
                in_store_only,
                started_unix,
                facts,
                attempts,
            } => {
                let Slot::Running { fingerprint, material } = self.slots[index].clone() else {
                    anyhow::bail!("internal: result for a stage that was not running")
                };
                let node = &self.p.nodes[index];
                let made = Made::here(started_unix, started_unix + wall.as_secs_f64(), facts);
                let lineage = Lineage::of(self.p, index, &material, &self.fingerprints(), made);
                let entry = index_entry(&fingerprint, &manifest_hash, &lineage);
                if !in_store_only {
                    self.store.record(&entry)?;
                    self.share(index, &entry)?;
                }
                self.record_state(index, material, &fingerprint, &manifest_hash)?;
                // Recorded: a process waiting for this stage now finds it.
                self.held.remove(&index);
                self.artifacts[index] = Some(manifest_hash.clone());
                let o = Outcome {
                    stage: node.name.clone(),
                    state: StageState::Ran,
                    fingerprint: Some(fingerprint),
                    artifact: Some(manifest_hash),
                    wall,
                    started_unix: self.started[index],
                    reason: None,
                    attempts,
                };
                self.finish(index, o);
            }
            JobResult::Failed {
                index,
                error,
                cancelled,
                wall,
                attempts,
            } => {
                let fingerprint = match &self.slots[index] {
                    Slot::Running { fingerprint, .. } => Some(fingerprint.clone()),
                    _ => None,
                };
                self.fail(index, fingerprint, error, wall, cancelled, attempts);
            }
        }
        Ok(())
    }

    /// Stage `i` failed (or was cancelled): it releases its build lock, and the run stops
    /// starting stages unless --keep-going.
    fn fail(&mut self, i: usize, fingerprint: Option<String>, reason: String, wall: Duration, cancelled: bool, attempts: Vec<Attempt>) {
        self.held.remove(&i);
        if !self.opts.keep_going || cancelled {
            self.stop = true;
        }
        let o = Outcome {
            stage: self.p.nodes[i].name.clone(),
            state: if cancelled { StageState::Cancelled } else { StageState::Failed },
            fingerprint,
            artifact: None,
            wall,
            started_unix: self.started[i],
            reason: Some(reason),
            attempts,
        };
        self.finish(i, o);
    }

    /// After a run whose stages ran elsewhere: downloads the artifacts of the stages nothing
    /// depends on (the results: evaluations, comparisons), so that `metrics`, `show` and the
    /// summaries work here. Intermediate artifacts stay in the store.
    fn fetch_results(&self) {
        let used: BTreeSet<usize> = (0..self.p.nodes.len()).flat_map(|i| self.p.upstream(i)).collect();
        for (i, slot) in self.slots.iter().enumerate() {
            let Slot::Done(o) = slot else { continue };
            let (Some(fp), false) = (&o.fingerprint, used.contains(&i)) else {
                continue;
            };
            if !matches!(o.state, StageState::Ran | StageState::Cached) || self.store.lookup(fp).is_some() {
                continue;
            }
            if let Err(e) = self.store.fetch_remote(fp) {
                self.obs
                    .warning(&format!("warning: could not download the result of `{}`: {e}", o.stage));
            }
        }
    }

    /// Saves what stage `i` last resolved to (for `status`' reasons).
    fn record_state(&self, i: usize, material: Material, fingerprint: &str, artifact: &str) -> anyhow::Result<()> {
        let state = LastState {
            material,
            fingerprint: fingerprint.to_owned(),
            artifact: artifact.to_owned(),
        };
        save_state(self.store, &self.p.name, &self.p.nodes[i].name, &state)
    }

    /// Each stage's fingerprint, where this run has resolved it.
    fn fingerprints(&self) -> Vec<Option<String>> {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Done(o) => o.fingerprint.clone(),
                Slot::Waiting { fingerprint, .. } | Slot::Ready { fingerprint, .. } | Slot::Running { fingerprint, .. } => {
                    Some(fingerprint.clone())
                }
                Slot::Pending => None,
            })
            .collect()
    }

    fn finish(&mut self, i: usize, o: Outcome) {
        self.obs.finished(&o);
        self.slots[i] = Slot::Done(o);
    }

    /// Every stage's outcome; stages never started are skipped, saying why.
    fn close(self) -> Vec<Outcome> {
        let why = if self.opts.cancel.is_cancelled() {
            "not started: the run was interrupted"
        } else {
            "not started: an earlier stage failed (use --keep-going to run independent stages anyway)"
        };
        let (p, obs) = (self.p, self.obs);
        self.slots
            .into_iter()
            .enumerate()
            .map(|(i, s)| match s {
                Slot::Done(o) => o,
                _ => {
                    let o = Outcome::skipped(&p.nodes[i].name, why.into());
                    obs.finished(&o);
                    o
                }
            })
            .collect()
    }
}

/// What the index records for a stage's new artifact: the fingerprint, the artifact and its
/// lineage.
pub(crate) fn index_entry(fingerprint: &str, artifact: &str, lineage: &Lineage) -> IndexEntry {
    IndexEntry {
        fingerprint: fingerprint.to_owned(),
        artifact: artifact.to_owned(),
        provenance: serde_json::to_value(lineage).unwrap_or_default(),
    }
}

/// Now, in seconds since the Unix epoch.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The line `runs.jsonl` gets for this run.
fn run_record(p: &Pipeline, opts: &RunOptions, report: &RunReport, started_unix: f64) -> RunRecord {
    RunRecord {
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
                state: o.state,
                fingerprint: o.fingerprint.clone(),
                artifact: o.artifact.clone(),
                wall_s: o.wall.as_secs_f64(),
                started_unix: o.started_unix,
                error: o.reason.clone(),
                attempts: o.attempts.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Quiet, Watched};
    use spherepipe_stage::{InputSpec, ParamSpec, Registry, Stage, StageContext};
    use spherepipe_store::Mirror;
    use std::sync::atomic::Ordering;

    /// Takes a while, so that the stages behind it wait for the one worker.
    struct Slow;
    impl Stage for Slow {
        fn kind(&self) -> &'static str {
            "slow"
        }
        fn version(&self) -> &'static str {
            "1"
        }
        fn params(&self) -> Vec<ParamSpec> {
            vec![ParamSpec::new("id", spherepipe_stage::ParamType::Str, "", "which stage")]
        }
        fn inputs(&self) -> Vec<InputSpec> {
            Vec::new()
        }
        fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
            std::thread::sleep(Duration::from_millis(400));
            std::fs::write(ctx.out_dir.join("out"), ctx.params.str("id")?)?;
            Ok(())
        }
    }

    #[test]
    fn a_stage_waiting_for_a_worker_is_looked_up_in_the_store_once() {
        let d = tempfile::tempdir().unwrap();
        let stages: String = (0..4).map(|k| format!("  s{k}: {{kind: slow, params: {{id: s{k}}}}}\n")).collect();
        std::fs::write(d.path().join("p.yaml"), format!("name: p\nstages:\n{stages}")).unwrap();
        let mut r = Registry::new();
        r.register(Slow);
        let p = spherepipe_pipeline::load(&d.path().join("p.yaml"), &r, &[]).unwrap();
        let remote = Watched::memory("ready-once");
        let store = Store::open(d.path().join("cache"))
            .unwrap()
            .with_mirror(Mirror::new(remote.clone()));
        // One worker: three stages wait about 0.4, 0.8 and 1.2 s, through a dozen ~100 ms rounds.
        let opts = RunOptions {
            jobs: 1,
            ..RunOptions::default()
        };
        let report = execute(&p, &store, &opts, &Quiet).unwrap();
        assert!(report.ok());
        // Each stage's index entry is read once, when it is resolved (its push then creates
        // the entry, reading nothing), however many ~100 ms rounds it waited: re-resolving a
        // waiting stage every round read it 34 times here.
        let reads = remote.index_reads.load(Ordering::SeqCst);
        assert_eq!(reads, 4, "index reads for 4 stages");
    }
}
