//! Where stages run. The coordinator (`run.rs`) hands [`Job`]s to an [`Executor`] and takes
//! [`JobResult`]s back; it never knows whether a job ran on a thread of this process or
//! elsewhere. [`LocalPool`] is the first executor: `jobs` worker threads over crossbeam
//! channels, each running one stage at a time.

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use spherepipe_stage::{CancelToken, Cancelled, Inputs, Progress, ProgressSink, Stage, StageContext};
use spherepipe_store::Store;
use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

/// Runs jobs somewhere and reports how they ended.
pub(crate) trait Executor {
    /// How many jobs it runs at once; the coordinator never has more in flight, so that a
    /// failure can still stop what has not started.
    fn capacity(&self) -> usize;
    /// Starts a job.
    fn submit(&self, job: Job) -> anyhow::Result<()>;
    /// The next job to end, waiting at most `timeout`: `None` if none ended by then.
    fn next_result(&self, timeout: Duration) -> anyhow::Result<Option<JobResult>>;
}

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
    /// The seed derived from the fingerprint, for stages that draw random numbers.
    pub seed: u64,
    /// Where its progress goes.
    pub sink: Arc<dyn ProgressSink>,
}

/// How a job ended: its artifact in the store, or why not.
pub(crate) enum JobResult {
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

/// Runs one job in this process: a staging directory, the stage, the commit to the store;
/// a panic is caught and reported as the stage kind's bug; nothing partial survives.
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

/// `workers` threads in a scope, each taking jobs from one channel and running them here.
pub(crate) struct LocalPool {
    jobs: Sender<Job>,
    results: Receiver<JobResult>,
    workers: usize,
}

impl LocalPool {
    /// Starts the workers; they stop when the pool is dropped and the scope joins them.
    pub fn start<'scope>(scope: &'scope Scope<'scope, '_>, store: &'scope Store, cancel: &CancelToken, workers: usize) -> LocalPool {
        let (job_tx, job_rx) = unbounded::<Job>();
        let (res_tx, res_rx) = unbounded::<JobResult>();
        for _ in 0..workers.max(1) {
            let (job_rx, res_tx, cancel) = (job_rx.clone(), res_tx.clone(), cancel.clone());
            scope.spawn(move || {
                for job in job_rx {
                    if res_tx.send(run_job(store, &cancel, job)).is_err() {
                        break;
                    }
                }
            });
        }
        LocalPool {
            jobs: job_tx,
            results: res_rx,
            workers: workers.max(1),
        }
    }
}

impl Executor for LocalPool {
    fn capacity(&self) -> usize {
        self.workers
    }

    fn submit(&self, job: Job) -> anyhow::Result<()> {
        self.jobs.send(job).map_err(|_| anyhow::anyhow!("the worker pool stopped"))
    }

    fn next_result(&self, timeout: Duration) -> anyhow::Result<Option<JobResult>> {
        match self.results.recv_timeout(timeout) {
            Ok(r) => Ok(Some(r)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("all workers stopped unexpectedly"),
        }
    }
}
