//! Where stages run. The coordinator (`run.rs`) hands [`Job`]s to an [`Executor`] and takes
//! [`JobResult`]s back; it never knows whether a job ran on a thread of this process or
//! elsewhere. [`LocalPool`] is the first executor: `jobs` worker threads over crossbeam
//! channels, each running one stage at a time. The other is
//! [`SlurmExecutor`](crate::slurm::SlurmExecutor): one `sbatch` job per stage.

use crate::job::{gather, make_part, run_job, Job, JobResult, WorkError};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use spherepipe_stage::{CancelToken, Part};
use spherepipe_store::Store;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

/// Runs jobs somewhere and reports how they ended.
pub(crate) trait Executor {
    /// How many jobs it runs at once; the coordinator never has more in flight, so that a
    /// failure can still stop what has not started.
    fn capacity(&self) -> usize;
    /// Starts a job.
    fn submit(&mut self, job: Job) -> anyhow::Result<()>;
    /// The next job to end, waiting at most `timeout`: `None` if none ended by then.
    fn next_result(&mut self, timeout: Duration) -> anyhow::Result<Option<JobResult>>;
}

/// A unit of work for a worker: a whole job, or one part of a split one.
enum Work {
    Whole(Job),
    Part(Arc<Split>, Part),
}

/// A job split into parts, shared by the workers that make them: the worker that finishes
/// the last part gathers (or reports the first part's failure).
struct Split {
    job: Job,
    left: AtomicUsize,
    failure: Mutex<Option<WorkError>>,
    start: Instant,
}

impl Split {
    /// Makes one part (unless a part already failed), and returns the job's result when this
    /// was the last part.
    fn work(&self, store: &Store, cancel: &CancelToken, part: Part) -> Option<JobResult> {
        let already_failed = self.failure.lock().map(|f| f.is_some()).unwrap_or(true);
        if !already_failed {
            if let Err(e) = make_part(store, cancel, &self.job, part) {
                if let Ok(mut f) = self.failure.lock() {
                    f.get_or_insert(e);
                }
            }
        }
        if self.left.fetch_sub(1, Ordering::SeqCst) != 1 {
            return None;
        }
        let failure = self.failure.lock().ok().and_then(|mut f| f.take());
        Some(match failure {
            Some(e) => JobResult::Failed {
                index: self.job.index,
                cancelled: e.cancelled(),
                error: e.message().to_owned(),
                wall: self.start.elapsed(),
                attempts: Vec::new(),
            },
            None => gather(store, cancel, &self.job, self.start),
        })
    }
}

/// `workers` threads in a scope, each taking work from one channel and running it here. The
/// parts of a split job are spread over the workers like jobs.
pub(crate) struct LocalPool {
    work: Sender<Work>,
    results: Receiver<JobResult>,
    workers: usize,
}

impl LocalPool {
    /// Starts the workers; they stop when the pool is dropped and the scope joins them.
    pub fn start<'scope>(scope: &'scope Scope<'scope, '_>, store: &'scope Store, cancel: &CancelToken, workers: usize) -> LocalPool {
        let (work_tx, work_rx) = unbounded::<Work>();
        let (res_tx, res_rx) = unbounded::<JobResult>();
        for _ in 0..workers.max(1) {
            let (work_rx, res_tx, cancel) = (work_rx.clone(), res_tx.clone(), cancel.clone());
            scope.spawn(move || {
                for work in work_rx {
                    let result = match work {
                        Work::Whole(job) => Some(run_job(store, &cancel, job)),
                        Work::Part(split, part) => split.work(store, &cancel, part),
                    };
                    if let Some(r) = result {
                        if res_tx.send(r).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        LocalPool {
            work: work_tx,
            results: res_rx,
            workers: workers.max(1),
        }
    }
}

impl Executor for LocalPool {
    fn capacity(&self) -> usize {
        self.workers
    }

    fn submit(&mut self, job: Job) -> anyhow::Result<()> {
        let stopped = |_| anyhow::anyhow!("the worker pool stopped");
        if job.parts <= 1 {
            return self.work.send(Work::Whole(job)).map_err(stopped);
        }
        let count = job.parts;
        let split = Arc::new(Split {
            job,
            left: AtomicUsize::new(count),
            failure: Mutex::new(None),
            start: Instant::now(),
        });
        for index in 0..count {
            self.work.send(Work::Part(split.clone(), Part { index, count })).map_err(stopped)?;
        }
        Ok(())
    }

    fn next_result(&mut self, timeout: Duration) -> anyhow::Result<Option<JobResult>> {
        match self.results.recv_timeout(timeout) {
            Ok(r) => Ok(Some(r)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("all workers stopped unexpectedly"),
        }
    }
}
