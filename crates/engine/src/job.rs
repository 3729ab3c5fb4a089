//! What a job is ([`Job`], and how it ended: [`JobResult`]), and running one in this process:
//! a staging directory, the stage's code, the commit to the store. A panic is caught and reported as the stage kind's bug; nothing partial survives.
//!
//! A stage split into parts is made in two steps: each part is an artifact of its own
//! (fingerprinted by the stage's fingerprint and `I/N`, cached and shared like any other, so a
//! part already made is never made again), then the gather writes the stage's artifact from the
//! parts, in order.

use crate::fingerprint::part_fingerprint;
use crate::records::Attempt;
use serde_json::json;
use spherepipe_stage::{CancelToken, Cancelled, Inputs, Part, Progress, ProgressSink, RunFacts, Stage, StageContext};
use spherepipe_store::{IndexEntry, Manifest, MirrorError, ScratchSync, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One stage to run: everything a worker needs, with no reference to the pipeline.
pub(crate) struct Job {
    /// The stage's position in the pipeline's order.
    pub index: usize,
    /// Its fingerprint: where the artifact is committed.
    pub fingerprint: String,
    /// The stage's name in the pipeline.
    pub name: String,
    /// What runs it.
    pub kind: Arc<dyn Stage>,
    /// Its resolved params.
    pub params: spherepipe_stage::Params,
    /// Its inputs, as artifact or dataset paths.
    pub inputs: Inputs,
    /// The pipeline's seed, for stages that draw random numbers (part of the fingerprint of
    /// the kinds that use it).
    pub seed: u64,
    /// Where its progress goes.
    pub sink: Arc<dyn ProgressSink>,
    /// How many parts its work is split into (1: not split).
    pub parts: usize,
    /// Forced (`run --force`): made again even where the store has it, parts included.
    pub forced: bool,
    /// What the stage reports about how it ran (all its parts together), for its lineage.
    pub facts: Arc<RunFacts>,
}

/// How a job ended: its artifact in the store, or why not.
pub(crate) enum JobResult {
    Done {
        index: usize,
        manifest_hash: String,
        wall: Duration,
        /// Committed to the shared store by another machine (recorded there, not here).
        in_store_only: bool,
        /// When it started, in seconds since the Unix epoch.
        started_unix: f64,
        /// What the stage reported about how it ran.
        facts: std::collections::BTreeMap<String, String>,
        /// Its Slurm jobs, one per attempt (none in this process).
        attempts: Vec<Attempt>,
    },
    Failed {
        index: usize,
        error: String,
        cancelled: bool,
        wall: Duration,
        /// Its Slurm jobs, one per attempt (none in this process).
        attempts: Vec<Attempt>,
    },
}

/// What the stage's code is asked to do.
#[derive(Clone, Copy)]
enum Work<'a> {
    /// The whole artifact (`Stage::run`).
    Whole,
    /// One part (`Stage::run_part`).
    Part(Part),
    /// The artifact from the parts' artifacts (`Stage::gather`).
    Gather(&'a [PathBuf]),
}

/// Why a job did not make its artifact.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WorkError {
    /// It was cancelled (Ctrl-C, or the scheduler's SIGTERM) before it finished.
    Cancelled(String),
    /// The stage's code returned an error or panicked (the message says which).
    Stage(String),
    /// What the stage made could not be staged, committed, recorded or shared.
    Store(String),
}

impl WorkError {
    /// What happened, in words.
    pub(crate) fn message(&self) -> &str {
        match self {
            WorkError::Cancelled(m) | WorkError::Stage(m) | WorkError::Store(m) => m,
        }
    }

    /// Whether the job was cancelled rather than failed.
    pub(crate) fn cancelled(&self) -> bool {
        matches!(self, WorkError::Cancelled(_))
    }
}

/// Makes the whole of `job`'s artifact (its parts and their gather when it is split).
pub(crate) fn run_job(store: &Store, cancel: &CancelToken, job: Job) -> JobResult {
    let start = Instant::now();
    if job.parts > 1 {
        for index in 0..job.parts {
            if let Err(e) = make_part(store, cancel, &job, Part { index, count: job.parts }) {
                return failed(&job, e, start);
            }
        }
        return gather(store, cancel, &job, start);
    }
    match commit_work(store, cancel, &job, &job.fingerprint, Work::Whole) {
        Ok(m) => done(&job, m, start),
        Err(e) => failed(&job, e, start),
    }
}

/// Makes part `part` of `job` unless the local cache or the shared store already has it (and
/// the job is not forced);
/// records it (and shares it). Returns the part's artifact.
pub(crate) fn make_part(store: &Store, cancel: &CancelToken, job: &Job, part: Part) -> Result<String, WorkError> {
    let fp = part_fingerprint(&job.fingerprint, part);
    if !job.forced {
        if let Some(artifact) = find_part(store, &fp).map_err(|e| WorkError::Store(e.to_string()))? {
            return Ok(artifact);
        }
    }
    let m = commit_work(store, cancel, job, &fp, Work::Part(part))?;
    let entry = IndexEntry {
        fingerprint: fp,
        artifact: m.hash.clone(),
        provenance: json!({"stage": job.name, "part": part.to_string(), "of": job.fingerprint}),
    };
    store
        .record(&entry)
        .map_err(|e| WorkError::Store(format!("recording part {part}: {e}")))?;
    store
        .publish(&entry)
        .map_err(|e| WorkError::Store(format!("sharing part {part}: {e}")))?;
    Ok(m.hash)
}

/// Writes `job`'s artifact from its parts, which must all be made (here or in the store).
pub(crate) fn gather(store: &Store, cancel: &CancelToken, job: &Job, start: Instant) -> JobResult {
    let mut dirs = Vec::new();
    for index in 0..job.parts {
        let part = Part { index, count: job.parts };
        match find_part(store, &part_fingerprint(&job.fingerprint, part)) {
            Ok(Some(artifact)) => dirs.push(store.artifact_dir(&artifact)),
            Ok(None) => {
                let error = format!("part {part} has not been made: run it first (run-stage --part {part})");
                return failed(job, WorkError::Store(error), start);
            }
            Err(e) => return failed(job, WorkError::Store(e.to_string()), start),
        }
    }
    match commit_work(store, cancel, job, &job.fingerprint, Work::Gather(&dirs)) {
        Ok(m) => done(job, m, start),
        Err(e) => failed(job, e, start),
    }
}

/// A part's artifact, from the local cache (and then shared, so that the gather can find it
/// from any machine) or downloaded from the shared store. A corrupt copy in the store counts
/// as absent: the part is made again.
fn find_part(store: &Store, fp: &str) -> Result<Option<String>, MirrorError> {
    if let Some(e) = store.lookup(fp) {
        store.publish(&e)?;
        return Ok(Some(e.artifact));
    }
    match store.fetch_remote(fp) {
        Ok(e) => Ok(e.map(|e| e.artifact)),
        Err(e) if e.is_bad_object() => Ok(None),
        Err(e) => Err(e),
    }
}

fn done(job: &Job, m: Manifest, start: Instant) -> JobResult {
    let wall = start.elapsed();
    JobResult::Done {
        index: job.index,
        manifest_hash: m.hash,
        wall,
        in_store_only: false,
        started_unix: crate::run::unix_now() - wall.as_secs_f64(),
        facts: job.facts.all(),
        attempts: Vec::new(),
    }
}

fn failed(job: &Job, error: WorkError, start: Instant) -> JobResult {
    JobResult::Failed {
        index: job.index,
        cancelled: error.cancelled(),
        error: error.message().to_owned(),
        wall: start.elapsed(),
        attempts: Vec::new(),
    }
}

/// Runs `work` in a fresh staging directory and commits what it wrote as the artifact of
/// `fingerprint`. Its scratch directory survives a failure (here and, with a shared store,
/// there) and goes once the artifact is committed.
fn commit_work(store: &Store, cancel: &CancelToken, job: &Job, fingerprint: &str, work: Work<'_>) -> Result<Manifest, WorkError> {
    let staging = store
        .new_staging_dir(&job.name)
        .map_err(|e| WorkError::Store(format!("cannot create a staging directory: {e}")))?;
    let scratch = store.layout().scratch(fingerprint);
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(WorkError::Store(format!("cannot create {}: {e}", scratch.display())));
    }
    let logs = store.layout().logs(fingerprint);
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
        facts: &job.facts,
    };
    let sync = store.mirror().map(|m| ScratchSync::new(m, fingerprint, &scratch));
    if let Some(sync) = &sync {
        restore_scratch(sync, &scratch, &progress);
    }
    let result = while_saving(sync.as_ref(), || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match work {
            Work::Whole => job.kind.run(&ctx),
            Work::Part(part) => job.kind.run_part(&ctx, part),
            Work::Gather(dirs) => job.kind.gather(&ctx, dirs),
        }))
    });
    let outcome = match result {
        Ok(Ok(())) => store
            .commit(&staging)
            .map_err(|e| WorkError::Store(format!("committing the artifact: {e}"))),
        Ok(Err(e)) if e.downcast_ref::<Cancelled>().is_some() => Err(WorkError::Cancelled(format!("{e:#}"))),
        Ok(Err(e)) => Err(WorkError::Stage(format!("{e:#}"))),
        Err(panic) => Err(WorkError::Stage(panic_message(job, panic))),
    };
    let kept = Kept {
        store,
        staging: &staging,
        scratch: &scratch,
        sync: sync.as_ref(),
        progress: &progress,
    };
    match outcome {
        Ok(m) => {
            kept.committed(&m);
            Ok(m)
        }
        Err(error) => {
            kept.failed();
            // A stage that returned an error because it was stopped was cancelled, whatever
            // its error says.
            Err(match error {
                WorkError::Stage(m) | WorkError::Store(m) if cancel.is_cancelled() => WorkError::Cancelled(m),
                other => other,
            })
        }
    }
}

/// What a job keeps beside its staging directory (its checkpoints, here and in the shared
/// store), and what becomes of it when the job ends.
struct Kept<'a> {
    store: &'a Store,
    staging: &'a Path,
    scratch: &'a Path,
    sync: Option<&'a ScratchSync>,
    progress: &'a Progress,
}

impl Kept<'_> {
    /// The artifact is committed: checkpoints are no longer needed once the result is safely
    /// in the store, and with a shared store only once the artifact is there (a job killed by
    /// its time limit during the upload keeps them).
    fn committed(&self, m: &Manifest) {
        let _ = std::fs::remove_dir_all(self.scratch);
        if let (Some(sync), Some(mirror)) = (self.sync, self.store.mirror()) {
            match mirror.push_artifact(self.store, &m.hash) {
                Ok(()) => {
                    let _ = sync.drop_remote();
                }
                Err(e) => self.progress.message(&format!(
                    "the artifact is not in the shared store yet ({e}); its checkpoints stay there"
                )),
            }
        }
    }

    /// The job failed: nothing partial survives (the staging directory goes); the checkpoints
    /// stay, here and in the shared store, for the next attempt.
    fn failed(&self) {
        let _ = std::fs::remove_dir_all(self.staging);
        if let Some(Err(e)) = self.sync.map(|s| s.save()) {
            self.progress
                .message(&format!("could not save the checkpoints to the shared store: {e}"));
        }
    }
}

/// A caught panic, worded as the bug it is.
fn panic_message(job: &Job, panic: Box<dyn std::any::Any + Send>) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("the stage panicked (a bug in stage kind `{}`): {msg}", job.kind.kind())
}

/// How often a running stage's scratch (its checkpoints) is copied to the shared store.
const SCRATCH_SYNC_EVERY: Duration = Duration::from_secs(30);

/// Brings back the checkpoints an earlier attempt (perhaps on another machine) left in the
/// shared store, unless this machine has its own.
fn restore_scratch(sync: &ScratchSync, scratch: &Path, progress: &Progress) {
    let empty = std::fs::read_dir(scratch).map(|mut d| d.next().is_none()).unwrap_or(true);
    if !empty {
        return;
    }
    match sync.restore() {
        Ok(0) => {}
        Ok(n) => progress.message(&format!("resuming: {n} checkpoint file(s) restored from the shared store")),
        Err(e) => progress.message(&format!("could not restore checkpoints from the shared store: {e}")),
    }
}

/// Runs `f` while a thread copies the scratch directory to the shared store every
/// [`SCRATCH_SYNC_EVERY`], so a job killed without warning loses at most that much work.
fn while_saving<T>(sync: Option<&ScratchSync>, f: impl FnOnce() -> T) -> T {
    let Some(sync) = sync else { return f() };
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    std::thread::scope(|s| {
        s.spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(SCRATCH_SYNC_EVERY) {
                let _ = sync.save();
            }
        });
        let out = f();
        drop(stop);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{writes_job, Watched};
    use spherepipe_store::remote::RemoteStore;
    use spherepipe_store::Mirror;
    use std::sync::atomic::Ordering;

    #[test]
    fn the_stores_checkpoints_stay_until_the_artifact_is_in_the_store() {
        let d = tempfile::tempdir().unwrap();
        let remote = Watched::memory("job-scratch");
        remote.refuse_blobs.store(true, Ordering::SeqCst);
        let fp = blake3::hash(b"a training").to_hex().to_string();
        // An earlier attempt's checkpoint, in the store.
        let earlier = d.path().join("earlier");
        std::fs::create_dir_all(&earlier).unwrap();
        std::fs::write(earlier.join("state.bin"), b"step 40").unwrap();
        let mirror = Mirror::new(remote.clone());
        ScratchSync::new(&mirror, &fp, &earlier).save().unwrap();
        let store = Store::open(d.path().join("cache")).unwrap().with_mirror(mirror);
        let job = || writes_job("train", &fp);
        let scratch = |r: &Watched| r.inner.list(&format!("scratch/{fp}")).unwrap().len();
        // Committed here, but the upload fails: the store keeps the checkpoint.
        assert!(matches!(run_job(&store, &CancelToken::new(), job()), JobResult::Done { .. }));
        assert_eq!(scratch(&remote), 2, "the snapshot and its file stay");
        // With the artifact in the store, the checkpoint goes.
        remote.refuse_blobs.store(false, Ordering::SeqCst);
        assert!(matches!(run_job(&store, &CancelToken::new(), job()), JobResult::Done { .. }));
        assert_eq!(scratch(&remote), 0);
        assert!(remote.inner.list("blobs").unwrap().len() == 1);
    }
}
