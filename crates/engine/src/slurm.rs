//! The Slurm executor: each job becomes `sbatch --wrap "spherepipe run-stage …"` on the
//! cluster, and the coordinator follows it with `squeue`. Whether a stage finished is decided
//! by the shared store's index, never by Slurm's job state: a job that exited 0 without
//! committing has not finished, and one killed after committing has.
//!
//! A stage's job is submitted when its inputs are done, because its fingerprint (which the job
//! is given, and checks) depends on its inputs' content.

use crate::executor::Executor;
use crate::fingerprint::part_fingerprint;
use crate::job::{Job, JobResult};
use spherepipe_pipeline::Pipeline;
use spherepipe_stage::{CancelToken, Part, ProgressSink, Resources};
use spherepipe_store::Store;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cache a job uses on its node, as the job's shell expands it: `SPHEREPIPE_NODE_CACHE`,
/// else one directory per user under the node's temporary directory.
const NODE_CACHE: &str = "\"${SPHEREPIPE_NODE_CACHE:-${TMPDIR:-/tmp}/spherepipe-node-cache-$(id -u)}\"";

/// How `run --executor slurm` submits.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The spherepipe binary the nodes run (this one, by default: it must be at the same path
    /// on every node).
    pub binary: PathBuf,
    /// The pipeline file, as an absolute path that every node can read.
    pub pipeline_file: PathBuf,
    /// The run's `--set` texts, passed on so that every node resolves the same pipeline.
    pub overrides: Vec<String>,
    /// The shared store the nodes exchange artifacts through.
    pub store_url: String,
    /// Site-specific `sbatch` flags (account, QOS), added to every submission.
    pub extra_args: Vec<String>,
    /// Where job logs go (a directory every node can write: the cache's `logs/slurm`).
    pub log_dir: PathBuf,
    /// How often `squeue` is asked.
    pub poll: Duration,
}

/// A Slurm job id, and the path of its log (with Slurm's `%j`, `%A`, `%a` still in it).
type Submitted = (String, PathBuf);

/// A submitted job the coordinator waits for.
struct InFlight {
    job_id: String,
    index: usize,
    name: String,
    fingerprint: String,
    log: PathBuf,
    submitted: Instant,
    sink: Arc<dyn ProgressSink>,
    last_state: String,
    forced: bool,
    /// For a split stage: the array job making its missing parts (the job above gathers
    /// them), and its log pattern.
    parts: Option<Submitted>,
}

/// Submits jobs with `sbatch` and follows them with `squeue`.
pub(crate) struct SlurmExecutor<'a> {
    opts: &'a SlurmOptions,
    p: &'a Pipeline,
    store: &'a Store,
    cancel: CancelToken,
    in_flight: RefCell<Vec<InFlight>>,
    ended: RefCell<VecDeque<JobResult>>,
    last_poll: Cell<Option<Instant>>,
    cancel_sent: Cell<bool>,
}

impl<'a> SlurmExecutor<'a> {
    /// An executor submitting `p`'s stages with `opts`.
    pub fn new(opts: &'a SlurmOptions, p: &'a Pipeline, store: &'a Store, cancel: &CancelToken) -> SlurmExecutor<'a> {
        SlurmExecutor {
            opts,
            p,
            store,
            cancel: cancel.clone(),
            in_flight: RefCell::new(Vec::new()),
            ended: RefCell::new(VecDeque::new()),
            last_poll: Cell::new(None),
            cancel_sent: Cell::new(false),
        }
    }

    /// Submits one `sbatch` job for `job` (`extra`: array or dependency flags; `part`: the
    /// `--part` value for array tasks). Returns the job id and the log path (with `%j`, or
    /// `%A`/`%a` for arrays, still in it).
    fn sbatch(&self, job: &Job, log_name: &str, extra: &[String], part: Option<&str>) -> Result<Submitted, String> {
        let log = self.opts.log_dir.join(log_name);
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--job-name=spherepipe:{}", job.name),
            format!("--output={}", log.display()),
        ];
        args.extend(resource_args(&self.p.nodes[job.index].resources));
        args.extend(self.opts.extra_args.iter().cloned());
        args.extend(extra.iter().cloned());
        let mut wrap = self.wrap_command(job);
        if let Some(part) = part {
            wrap.push_str(&format!(" --part {part}"));
        }
        args.push(format!("--wrap={wrap}"));
        let out = Command::new("sbatch").args(&args).output().map_err(|e| {
            format!("cannot run `sbatch` ({e}): the Slurm executor needs Slurm's client commands on PATH; install slurm-client or run with --executor local")
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let job_id = stdout.trim().split(';').next().unwrap_or_default().to_owned();
        if !out.status.success() || job_id.is_empty() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(format!(
                "sbatch refused the job of `{}`: {why} (check the stage's resources: and --slurm-args)",
                job.name
            ));
        }
        Ok((job_id, log))
    }

    /// For a split stage: an array job for the parts the store lacks, and the gather job that
    /// runs once they all succeed. Returns the gather job (id, log) and the array (id, log).
    fn submit_split(&self, job: &Job) -> Result<(Submitted, Option<Submitted>), String> {
        let missing: Vec<String> = (0..job.parts)
            .filter(|&index| {
                let fp = part_fingerprint(&job.fingerprint, Part { index, count: job.parts });
                job.forced || !matches!(self.store.locate(&fp), Ok(Some(_)))
            })
            .map(|i| i.to_string())
            .collect();
        let name = file_safe(&job.name);
        let mut after = Vec::new();
        let mut array = None;
        if !missing.is_empty() {
            let flags = [format!("--array={}", missing.join(","))];
            let part = format!("\"$SLURM_ARRAY_TASK_ID/{}\"", job.parts);
            let (id, log) = self.sbatch(job, &format!("{name}.part%a.%A.log"), &flags, Some(&part))?;
            after = vec![format!("--dependency=afterok:{id}"), "--kill-on-invalid-dep=yes".to_owned()];
            array = Some((id, log));
        }
        let gather = self.sbatch(job, &format!("{name}.%j.log"), &after, None)?;
        Ok((gather, array))
    }

    /// The shell line a job runs: `spherepipe run-stage` with everything needed to resolve the
    /// stage, into the node's own cache.
    fn wrap_command(&self, job: &Job) -> String {
        let o = self.opts;
        let mut words = vec![
            "exec".to_owned(),
            quote(&o.binary.display().to_string()),
            "run-stage".to_owned(),
            quote(&o.pipeline_file.display().to_string()),
            quote(&job.name),
            "--fingerprint".to_owned(),
            job.fingerprint.clone(),
            "--store".to_owned(),
            quote(&o.store_url),
        ];
        for s in &o.overrides {
            words.push("--set".to_owned());
            words.push(quote(s));
        }
        if job.forced {
            words.push("--force".to_owned());
        }
        words.push("--cache".to_owned());
        // One cache per user on each node (jobs of a user share downloaded inputs), which
        // `run-stage` makes private (0700) or refuses.
        words.push(NODE_CACHE.to_owned());
        words.join(" ")
    }

    /// Asks `squeue` for every job in flight and turns those that ended into results.
    fn poll(&self) {
        let ids: Vec<String> = self.in_flight.borrow().iter().map(|j| j.job_id.clone()).collect();
        let states = squeue(&ids);
        let mut in_flight = self.in_flight.borrow_mut();
        let mut still = Vec::new();
        for mut job in in_flight.drain(..) {
            let (state, reason) = states
                .get(&job.job_id)
                .cloned()
                .unwrap_or_else(|| ("ENDED".to_owned(), "no longer listed by squeue".to_owned()));
            if matches!(
                state.as_str(),
                "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | "SUSPENDED" | "REQUEUED" | "RESIZING"
            ) {
                if state != job.last_state {
                    job.sink.message(&format!("Slurm job {} {}", job.job_id, state.to_lowercase()));
                    job.last_state = state;
                }
                still.push(job);
            } else {
                self.ended.borrow_mut().push_back(self.outcome(&job, &state, &reason));
            }
        }
        *in_flight = still;
    }

    /// What became of an ended job: done if the store has its stage's artifact, whatever Slurm
    /// says; otherwise failed, with the job id, Slurm's state and reason, and its log.
    fn outcome(&self, job: &InFlight, state: &str, reason: &str) -> JobResult {
        let wall = job.submitted.elapsed();
        let fail = |error: String| JobResult::Failed {
            index: job.index,
            error,
            cancelled: self.cancel.is_cancelled() && state == "CANCELLED",
            wall,
        };
        // A forced stage's entry may predate the job: then only a job that completed made it.
        let found = self
            .store
            .locate(&job.fingerprint)
            .map(|e| e.filter(|_| !job.forced || state == "COMPLETED"));
        match found {
            Ok(Some(entry)) => JobResult::Done {
                index: job.index,
                manifest_hash: entry.artifact,
                wall,
                in_store_only: true,
            },
            Ok(None) => {
                let log = job.log.display().to_string().replace("%j", &job.job_id);
                let last = last_line(Path::new(&log)).map(|l| format!(": {l}")).unwrap_or_default();
                let parts = job.parts.as_ref().map(|(array, log)| failed_parts(array, log)).unwrap_or_default();
                fail(format!(
                    "Slurm job {} of `{}` ended {state} (reason: {reason}) without committing to the store; its log: {log}{last}{parts}",
                    job.job_id, job.name
                ))
            }
            Err(e) => fail(format!(
                "Slurm job {} ended {state}, and the store could not be asked for its result: {e}",
                job.job_id
            )),
        }
    }

    /// Cancels every job this run submitted that has not ended (a split stage's array too).
    fn cancel_all(&self) {
        let ids: Vec<String> = self
            .in_flight
            .borrow()
            .iter()
            .flat_map(|j| std::iter::once(j.job_id.clone()).chain(j.parts.as_ref().map(|(a, _)| a.clone())))
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("scancel").args(&ids).output();
        }
    }
}

impl Executor for SlurmExecutor<'_> {
    fn capacity(&self) -> usize {
        // Slurm queues what it cannot start; the coordinator need not hold jobs back.
        usize::MAX
    }

    fn submit(&self, job: Job) -> anyhow::Result<()> {
        let submitted = if job.parts > 1 {
            self.submit_split(&job)
        } else {
            self.sbatch(&job, &format!("{}.%j.log", file_safe(&job.name)), &[], None)
                .map(|j| (j, None))
        };
        let ((job_id, log), parts) = match submitted {
            Ok(s) => s,
            Err(error) => {
                self.ended.borrow_mut().push_back(JobResult::Failed {
                    index: job.index,
                    error,
                    cancelled: false,
                    wall: Duration::ZERO,
                });
                return Ok(());
            }
        };
        match &parts {
            Some((array, _)) => job
                .sink
                .message(&format!("Slurm array job {array} (parts) then job {job_id} (gather) submitted")),
            None => job.sink.message(&format!("Slurm job {job_id} submitted")),
        }
        self.in_flight.borrow_mut().push(InFlight {
            job_id,
            index: job.index,
            name: job.name,
            fingerprint: job.fingerprint,
            log,
            submitted: Instant::now(),
            sink: job.sink,
            last_state: "SUBMITTED".to_owned(),
            forced: job.forced,
            parts,
        });
        Ok(())
    }

    fn next_result(&self, timeout: Duration) -> anyhow::Result<Option<JobResult>> {
        if let Some(r) = self.ended.borrow_mut().pop_front() {
            return Ok(Some(r));
        }
        if self.cancel.is_cancelled() && !self.cancel_sent.get() {
            self.cancel_sent.set(true);
            self.cancel_all();
        }
        let due = self
            .last_poll
            .get()
            .map_or(Duration::ZERO, |t| self.opts.poll.saturating_sub(t.elapsed()));
        if due > timeout || self.in_flight.borrow().is_empty() {
            std::thread::sleep(timeout);
            return Ok(None);
        }
        std::thread::sleep(due);
        self.last_poll.set(Some(Instant::now()));
        self.poll();
        Ok(self.ended.borrow_mut().pop_front())
    }
}

impl Drop for SlurmExecutor<'_> {
    /// A run that stops early (an error in the coordinator) leaves no job of its own behind.
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// `sbatch` flags for a stage's resources.
fn resource_args(r: &Resources) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(c) = r.cpus {
        args.push(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = &r.mem {
        args.push(format!("--mem={m}"));
    }
    if let Some(g) = r.gpus.filter(|&g| g > 0) {
        args.push(format!("--gres=gpu:{g}"));
    }
    if let Some(t) = &r.time {
        args.push(format!("--time={t}"));
    }
    if let Some(p) = &r.partition {
        args.push(format!("--partition={p}"));
    }
    args
}

/// Job id -> (state, reason) for the given jobs, as `squeue` lists them (finished ones too,
/// while the controller remembers them). A job it does not list has ended.
fn squeue(ids: &[String]) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    if ids.is_empty() {
        return out;
    }
    let ask = |ids: &[String]| {
        Command::new("squeue")
            .args(["-h", "-t", "all", "-o", "%i|%T|%r", "-j", &ids.join(",")])
            .output()
            .ok()
    };
    let mut texts = Vec::new();
    match ask(ids) {
        Some(o) if o.status.success() => texts.push(String::from_utf8_lossy(&o.stdout).into_owned()),
        // One id the controller has forgotten makes squeue refuse the whole list: ask one by one.
        _ => {
            for id in ids {
                if let Some(o) = ask(std::slice::from_ref(id)).filter(|o| o.status.success()) {
                    texts.push(String::from_utf8_lossy(&o.stdout).into_owned());
                }
            }
        }
    }
    for line in texts.iter().flat_map(|t| t.lines()) {
        let mut f = line.splitn(3, '|');
        if let (Some(id), Some(state), Some(reason)) = (f.next(), f.next(), f.next()) {
            out.insert(id.trim().to_owned(), (state.trim().to_owned(), reason.trim().to_owned()));
        }
    }
    out
}

/// The array tasks (parts) that did not complete, each with its state, reason and log, for the
/// failure of the gather job that waited on them.
fn failed_parts(array: &str, log: &Path) -> String {
    let mut bad = Vec::new();
    for (id, (state, reason)) in squeue(&[array.to_owned()]) {
        if state == "COMPLETED" {
            continue;
        }
        let task = id.rsplit('_').next().unwrap_or_default().to_owned();
        let path = log.display().to_string().replace("%A", array).replace("%a", &task);
        let last = last_line(Path::new(&path)).map(|l| format!(": {l}")).unwrap_or_default();
        bad.push(format!("part {task}: job {id} ended {state} (reason: {reason}), log {path}{last}"));
    }
    match bad.is_empty() {
        true => String::new(),
        false => format!("; its parts (array job {array}): {}", bad.join("; ")),
    }
}

/// `s` quoted for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A stage name as a file name (`train@m=4` stays readable).
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@=,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The last non-empty line of a log, if it can be read (it tells why most jobs failed).
fn last_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_become_sbatch_flags_and_zero_gpus_asks_for_none() {
        let r = Resources {
            cpus: Some(8),
            mem: Some("16G".into()),
            gpus: Some(2),
            time: Some("4:00:00".into()),
            partition: Some("gpu".into()),
        };
        assert_eq!(
            resource_args(&r),
            [
                "--cpus-per-task=8",
                "--mem=16G",
                "--gres=gpu:2",
                "--time=4:00:00",
                "--partition=gpu"
            ]
        );
        let none = Resources {
            gpus: Some(0),
            ..Resources::default()
        };
        assert!(resource_args(&none).is_empty());
    }

    #[test]
    fn a_jobs_node_cache_is_its_users_own() {
        let expand = |env: &[(&str, &str)]| {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("printf %s {NODE_CACHE}"))
                .env_remove("SPHEREPIPE_NODE_CACHE");
            c.envs(env.iter().copied());
            String::from_utf8_lossy(&c.output().expect("sh").stdout).into_owned()
        };
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(expand(&[("TMPDIR", "/scratch")]), format!("/scratch/spherepipe-node-cache-{uid}"));
        assert_eq!(expand(&[("SPHEREPIPE_NODE_CACHE", "/fast/mine")]), "/fast/mine");
    }

    #[test]
    fn quoted_words_survive_a_shell_unchanged() {
        let word = "it's a \"path\" with $HOME and spaces";
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(word)))
            .output()
            .expect("sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), word);
    }
}
