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
use crate::records::Attempt;
use spherepipe_pipeline::Pipeline;
use spherepipe_stage::{CancelToken, Part, Resources};
use spherepipe_store::Store;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
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

/// A Slurm job's state, as `squeue -o %T` names it (the ones spherepipe tells apart), or
/// `Gone`: no longer listed, so ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Queued, or being set up, run, wound down, suspended or requeued: not ended.
    Alive(String),
    /// Ended with exit code 0.
    Completed,
    /// Cancelled (`scancel`, or Ctrl-C through it).
    Cancelled,
    /// Ended some other way (`FAILED`, `TIMEOUT`, `OUT_OF_MEMORY`, `NODE_FAIL` …).
    Ended(String),
    /// `squeue` no longer lists it.
    Gone,
}

impl JobState {
    /// The state `squeue` printed.
    pub(crate) fn parse(word: &str) -> JobState {
        match word {
            "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | "SUSPENDED" | "REQUEUED" | "RESIZING" => {
                JobState::Alive(word.to_owned())
            }
            "COMPLETED" => JobState::Completed,
            "CANCELLED" => JobState::Cancelled,
            other => JobState::Ended(other.to_owned()),
        }
    }

    /// Slurm's word for it (`ENDED` when it is no longer listed).
    pub(crate) fn word(&self) -> &str {
        match self {
            JobState::Alive(w) | JobState::Ended(w) => w,
            JobState::Completed => "COMPLETED",
            JobState::Cancelled => "CANCELLED",
            JobState::Gone => "ENDED",
        }
    }
}

/// What `sbatch` did with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sbatch {
    /// Submitted, with this id.
    Submitted(String),
    /// Refused, saying why.
    Refused(String),
    /// `sbatch` could not be run at all.
    CannotRun(String),
}

/// Slurm's client commands, behind a seam, so that the executor's polling and its outcome
/// rules are unit-tested with a scripted fake beside the real-cluster tests.
pub(crate) trait SlurmClient {
    /// `sbatch ARGS`.
    fn sbatch(&self, args: &[String]) -> Sbatch;
    /// Job id -> (state, reason) of the given jobs, as `squeue` lists them (ended ones too,
    /// while the controller remembers them); a job it does not list has ended.
    fn squeue(&self, ids: &[String]) -> BTreeMap<String, (JobState, String)>;
    /// `scancel IDS`.
    fn scancel(&self, ids: &[String]);
}

/// The real commands, on PATH.
struct Commands;

impl SlurmClient for Commands {
    fn sbatch(&self, args: &[String]) -> Sbatch {
        let out = match Command::new("sbatch").args(args).output() {
            Ok(o) => o,
            Err(e) => return Sbatch::CannotRun(e.to_string()),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let job_id = stdout.trim().split(';').next().unwrap_or_default().to_owned();
        if !out.status.success() || job_id.is_empty() {
            return Sbatch::Refused(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Sbatch::Submitted(job_id)
    }

    fn squeue(&self, ids: &[String]) -> BTreeMap<String, (JobState, String)> {
        squeue(ids)
    }

    fn scancel(&self, ids: &[String]) {
        if !ids.is_empty() {
            let _ = Command::new("scancel").args(ids).output();
        }
    }
}

/// A submitted job the coordinator waits for.
struct InFlight {
    job_id: String,
    job: Job,
    log: PathBuf,
    /// When its first attempt was submitted.
    submitted: Instant,
    last_state: String,
    /// For a split stage: the array job making its missing parts (the job above gathers
    /// them), and its log pattern.
    parts: Option<Submitted>,
    /// What this attempt asked for.
    resources: Resources,
    /// The attempts that ended before this one.
    earlier: Vec<Attempt>,
}

impl InFlight {
    /// This attempt, as it ended in `state` with `reason`.
    fn attempt(&self, state: &str, reason: &str) -> Attempt {
        Attempt {
            attempt: self.earlier.len() as u32 + 1,
            job_id: self.job_id.clone(),
            mem: self.resources.mem.clone(),
            time: self.resources.time.clone(),
            state: state.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// Every attempt, this one (ended in `state`) last.
    fn attempts(&self, state: &str, reason: &str) -> Vec<Attempt> {
        let mut all = self.earlier.clone();
        all.push(self.attempt(state, reason));
        all
    }
}

/// Submits jobs with `sbatch` and follows them with `squeue`.
pub(crate) struct SlurmExecutor<'a> {
    opts: &'a SlurmOptions,
    p: &'a Pipeline,
    store: &'a Store,
    cancel: CancelToken,
    client: Box<dyn SlurmClient>,
    in_flight: Vec<InFlight>,
    ended: VecDeque<JobResult>,
    last_poll: Option<Instant>,
    cancel_sent: bool,
}

impl<'a> SlurmExecutor<'a> {
    /// An executor submitting `p`'s stages with `opts`.
    pub fn new(opts: &'a SlurmOptions, p: &'a Pipeline, store: &'a Store, cancel: &CancelToken) -> SlurmExecutor<'a> {
        Self::with_client(opts, p, store, cancel, Box::new(Commands))
    }

    /// The same, through `client` instead of the commands on PATH (the tests' scripted fake).
    pub(crate) fn with_client(
        opts: &'a SlurmOptions,
        p: &'a Pipeline,
        store: &'a Store,
        cancel: &CancelToken,
        client: Box<dyn SlurmClient>,
    ) -> SlurmExecutor<'a> {
        SlurmExecutor {
            opts,
            p,
            store,
            cancel: cancel.clone(),
            client,
            in_flight: Vec::new(),
            ended: VecDeque::new(),
            last_poll: None,
            cancel_sent: false,
        }
    }

    /// Submits one `sbatch` job for `job` (`extra`: array or dependency flags; `part`: the
    /// `--part` value for array tasks). Returns the job id and the log path (with `%j`, or
    /// `%A`/`%a` for arrays, still in it).
    fn sbatch(&self, job: &Job, r: &Resources, log_name: &str, extra: &[String], part: Option<&str>) -> Result<Submitted, String> {
        let log = self.opts.log_dir.join(log_name);
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--job-name=spherepipe:{}", job.name),
            format!("--output={}", log.display()),
        ];
        args.extend(resource_args(r));
        args.extend(self.opts.extra_args.iter().cloned());
        args.extend(extra.iter().cloned());
        let mut wrap = self.wrap_command(job);
        if let Some(part) = part {
            wrap.push_str(&format!(" --part {part}"));
        }
        args.push(format!("--wrap={wrap}"));
        match self.client.sbatch(&args) {
            Sbatch::Submitted(job_id) => Ok((job_id, log)),
            Sbatch::Refused(why) => Err(format!(
                "sbatch refused the job of `{}`: {why} (check the stage's resources: and --slurm-args)",
                job.name
            )),
            Sbatch::CannotRun(e) => Err(format!(
                "cannot run `sbatch` ({e}): the Slurm executor needs Slurm's client commands on PATH; install slurm-client or run with --executor local"
            )),
        }
    }

    /// For a split stage: an array job for the parts the store lacks, and the gather job that
    /// runs once they all succeed. Returns the gather job (id, log) and the array (id, log).
    fn submit_split(&self, job: &Job, r: &Resources) -> Result<(Submitted, Option<Submitted>), String> {
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
            let (id, log) = self.sbatch(job, r, &format!("{name}.part%a.%A.log"), &flags, Some(&part))?;
            after = vec![format!("--dependency=afterok:{id}"), "--kill-on-invalid-dep=yes".to_owned()];
            array = Some((id, log));
        }
        let gather = self.sbatch(job, r, &format!("{name}.%j.log"), &after, None)?;
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

    /// Asks `squeue` for every job in flight and turns those that ended into results, or into
    /// their next attempt.
    fn poll(&mut self) {
        let ids: Vec<String> = self.in_flight.iter().map(|j| j.job_id.clone()).collect();
        let states = self.client.squeue(&ids);
        let mut still = Vec::new();
        for mut job in std::mem::take(&mut self.in_flight) {
            let (state, reason) = states
                .get(&job.job_id)
                .cloned()
                .unwrap_or_else(|| (JobState::Gone, "no longer listed by squeue".to_owned()));
            if let JobState::Alive(word) = &state {
                if *word != job.last_state {
                    job.job.sink.message(&format!("Slurm job {} {}", job.job_id, word.to_lowercase()));
                    job.last_state = word.clone();
                }
                still.push(job);
                continue;
            }
            match self.outcome(&job, &state, &reason) {
                Ended::Result(result) => self.ended.push_back(result),
                Ended::Retry { next, ended_as } => match self.retry(job, next, ended_as, &reason) {
                    Ok(again) => still.push(again),
                    Err(result) => self.ended.push_back(*result),
                },
            }
        }
        self.in_flight = still;
    }

    /// What became of an ended job: done if the store has its stage's artifact, whatever Slurm
    /// says; to be tried again when Slurm ended it for its resources (or its node) and the
    /// stage allows another attempt; otherwise failed, with the job id, Slurm's state and
    /// reason, its log and every attempt.
    fn outcome(&self, job: &InFlight, state: &JobState, reason: &str) -> Ended {
        let wall = job.submitted.elapsed();
        let fail = |error: String| {
            Ended::Result(JobResult::Failed {
                index: job.job.index,
                error,
                cancelled: self.cancel.is_cancelled() && *state == JobState::Cancelled,
                wall,
                attempts: job.attempts(state.word(), reason),
            })
        };
        // A forced stage's entry may predate the job: then only a job that completed made it.
        let found = self
            .store
            .locate(&job.job.fingerprint)
            .map(|e| e.filter(|_| !job.job.forced || *state == JobState::Completed));
        match found {
            Ok(Some(entry)) => Ended::Result(JobResult::Done {
                index: job.job.index,
                manifest_hash: entry.artifact,
                wall,
                in_store_only: true,
                started_unix: crate::run::unix_now() - wall.as_secs_f64(),
                facts: Default::default(),
                attempts: job.attempts(JobState::Completed.word(), reason),
            }),
            Ok(None) => {
                let ended_as = self.ended_as(job, state);
                let attempts_left = (job.earlier.len() as u32 + 1) < job.resources.attempts();
                if let (Some(next), false) = (job.resources.after(&ended_as), self.cancel.is_cancelled()) {
                    if attempts_left {
                        return Ended::Retry { next, ended_as };
                    }
                }
                let log = job.log.display().to_string().replace("%j", &job.job_id);
                let last = last_line(Path::new(&log)).map(|l| format!(": {l}")).unwrap_or_default();
                let parts = job
                    .parts
                    .as_ref()
                    .map(|(array, log)| self.failed_parts(array, log))
                    .unwrap_or_default();
                let tries = match job.earlier.len() {
                    0 => String::new(),
                    n => format!(
                        " (attempt {} of {}; earlier: {})",
                        n + 1,
                        job.resources.attempts().max(n as u32 + 1),
                        words(&job.earlier)
                    ),
                };
                fail(format!(
                    "Slurm job {} of `{}` ended {} (reason: {reason}) without committing to the store{tries}; its log: {log}{last}{parts}",
                    job.job_id,
                    job.job.name,
                    state.word()
                ))
            }
            Err(e) => fail(format!(
                "Slurm job {} ended {}, and the store could not be asked for its result: {e}",
                job.job_id,
                state.word()
            )),
        }
    }

    /// How the attempt ended, for deciding a retry: the job's own state, or for a split stage
    /// whose gather never ran, the first part that ended for its resources or its node.
    fn ended_as(&self, job: &InFlight, state: &JobState) -> String {
        if let JobState::Ended(word) = state {
            if RETRIED.contains(&word.as_str()) {
                return word.clone();
            }
        }
        if let Some((array, _)) = &job.parts {
            for (part_state, _) in self.client.squeue(std::slice::from_ref(array)).into_values() {
                if RETRIED.contains(&part_state.word()) {
                    return part_state.word().to_owned();
                }
            }
        }
        state.word().to_owned()
    }

    /// Submits the next attempt of `job` with `next` resources, telling the user; a refused
    /// submission fails the stage.
    fn retry(&self, mut job: InFlight, next: Resources, ended_as: String, reason: &str) -> Result<InFlight, Box<JobResult>> {
        let ended = job.attempt(&ended_as, reason);
        let n = ended.attempt + 1;
        let asks = asked(next.mem.as_deref(), next.time.as_deref());
        job.job.sink.message(&format!(
            "Slurm job {} ended {ended_as} ({}); attempt {n} of {} asks {asks}",
            job.job_id,
            asked(job.resources.mem.as_deref(), job.resources.time.as_deref()),
            job.resources.attempts()
        ));
        job.earlier.push(ended);
        match self.submit_attempt(&job.job, &next) {
            Ok(((job_id, log), parts)) => {
                job.job.sink.message(&format!("Slurm job {job_id} submitted (attempt {n})"));
                Ok(InFlight {
                    job_id,
                    log,
                    parts,
                    resources: next,
                    last_state: "SUBMITTED".to_owned(),
                    ..job
                })
            }
            Err(error) => Err(Box::new(JobResult::Failed {
                index: job.job.index,
                error,
                cancelled: false,
                wall: job.submitted.elapsed(),
                attempts: job.earlier,
            })),
        }
    }

    /// Submits one attempt of `job` asking for `r`: its one job, or for a split stage the array
    /// of its missing parts and the gather after them.
    fn submit_attempt(&self, job: &Job, r: &Resources) -> Result<(Submitted, Option<Submitted>), String> {
        if job.parts > 1 {
            self.submit_split(job, r)
        } else {
            self.sbatch(job, r, &format!("{}.%j.log", file_safe(&job.name)), &[], None)
                .map(|j| (j, None))
        }
    }

    /// Cancels every job this run submitted that has not ended (a split stage's array too).
    fn cancel_all(&self) {
        let ids: Vec<String> = self
            .in_flight
            .iter()
            .flat_map(|j| std::iter::once(j.job_id.clone()).chain(j.parts.as_ref().map(|(a, _)| a.clone())))
            .collect();
        self.client.scancel(&ids);
    }

    /// The array tasks (parts) that did not complete, each with its state, reason and log, for
    /// the failure of the gather job that waited on them.
    fn failed_parts(&self, array: &str, log: &Path) -> String {
        let mut bad = Vec::new();
        for (id, (state, reason)) in self.client.squeue(&[array.to_owned()]) {
            if state == JobState::Completed {
                continue;
            }
            let task = id.rsplit('_').next().unwrap_or_default().to_owned();
            let path = log.display().to_string().replace("%A", array).replace("%a", &task);
            let last = last_line(Path::new(&path)).map(|l| format!(": {l}")).unwrap_or_default();
            bad.push(format!(
                "part {task}: job {id} ended {} (reason: {reason}), log {path}{last}",
                state.word()
            ));
        }
        match bad.is_empty() {
            true => String::new(),
            false => format!("; its parts (array job {array}): {}", bad.join("; ")),
        }
    }
}

impl Executor for SlurmExecutor<'_> {
    fn capacity(&self) -> usize {
        // Slurm queues what it cannot start; the coordinator need not hold jobs back.
        usize::MAX
    }

    fn submit(&mut self, job: Job) -> anyhow::Result<()> {
        let resources = self.p.nodes[job.index].resources.clone();
        let ((job_id, log), parts) = match self.submit_attempt(&job, &resources) {
            Ok(s) => s,
            Err(error) => {
                self.ended.push_back(JobResult::Failed {
                    index: job.index,
                    error,
                    cancelled: false,
                    wall: Duration::ZERO,
                    attempts: Vec::new(),
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
        self.in_flight.push(InFlight {
            job_id,
            job,
            log,
            submitted: Instant::now(),
            last_state: "SUBMITTED".to_owned(),
            parts,
            resources,
            earlier: Vec::new(),
        });
        Ok(())
    }

    fn next_result(&mut self, timeout: Duration) -> anyhow::Result<Option<JobResult>> {
        if let Some(r) = self.ended.pop_front() {
            return Ok(Some(r));
        }
        if self.cancel.is_cancelled() && !self.cancel_sent {
            self.cancel_sent = true;
            self.cancel_all();
        }
        let due = self
            .last_poll
            .map_or(Duration::ZERO, |t| self.opts.poll.saturating_sub(t.elapsed()));
        if due > timeout || self.in_flight.is_empty() {
            std::thread::sleep(timeout);
            return Ok(None);
        }
        std::thread::sleep(due);
        self.last_poll = Some(Instant::now());
        self.poll();
        Ok(self.ended.pop_front())
    }
}

impl Drop for SlurmExecutor<'_> {
    /// A run that stops early (an error in the coordinator) leaves no job of its own behind.
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// How an ended job goes on.
enum Ended {
    /// Its stage's result.
    Result(JobResult),
    /// Another attempt, asking for `next`, since Slurm ended it `ended_as`.
    Retry { next: Resources, ended_as: String },
}

/// The ends a stage's `retries` cover: its resources ran out, or its node did.
const RETRIED: [&str; 4] = ["OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "PREEMPTED"];

/// What an attempt asks for, in words (`mem 64M, time 00:01:00`).
fn asked(mem: Option<&str>, time: Option<&str>) -> String {
    let mut w = Vec::new();
    if let Some(m) = mem {
        w.push(format!("mem {m}"));
    }
    if let Some(t) = time {
        w.push(format!("time {t}"));
    }
    if w.is_empty() {
        "the site's defaults".to_owned()
    } else {
        w.join(", ")
    }
}

/// Earlier attempts, in words, for a failure's message.
fn words(attempts: &[Attempt]) -> String {
    let each: Vec<String> = attempts
        .iter()
        .map(|a| {
            format!(
                "job {} ended {} asking {}",
                a.job_id,
                a.state,
                asked(a.mem.as_deref(), a.time.as_deref())
            )
        })
        .collect();
    each.join("; ")
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
fn squeue(ids: &[String]) -> BTreeMap<String, (JobState, String)> {
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
            out.insert(id.trim().to_owned(), (JobState::parse(state.trim()), reason.trim().to_owned()));
        }
    }
    out
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
    use crate::testing::{writes_job, Writes};
    use spherepipe_stage::Registry;
    use spherepipe_store::IndexEntry;
    use std::sync::{Arc, Mutex};

    /// A scripted Slurm: `sbatch` answers from `submit` in turn; `squeue` answers each poll
    /// from `polls` in turn (the last one repeating); what was asked is kept.
    #[derive(Default)]
    struct Script {
        submit: Mutex<VecDeque<Sbatch>>,
        polls: Mutex<VecDeque<BTreeMap<String, (JobState, String)>>>,
        submitted: Mutex<Vec<Vec<String>>>,
        cancelled: Mutex<Vec<String>>,
    }

    impl SlurmClient for Arc<Script> {
        fn sbatch(&self, args: &[String]) -> Sbatch {
            self.submitted.lock().unwrap().push(args.to_vec());
            self.submit
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Sbatch::Refused("no more jobs scripted".into()))
        }
        fn squeue(&self, _ids: &[String]) -> BTreeMap<String, (JobState, String)> {
            let mut polls = self.polls.lock().unwrap();
            if polls.len() > 1 {
                polls.pop_front().unwrap()
            } else {
                polls.front().cloned().unwrap_or_default()
            }
        }
        fn scancel(&self, ids: &[String]) {
            self.cancelled.lock().unwrap().extend(ids.iter().cloned());
        }
    }

    fn state(word: &str, reason: &str) -> (JobState, String) {
        (JobState::parse(word), reason.to_owned())
    }

    /// A one-stage pipeline, a store (a memory mirror), options polling at once, and a job.
    fn setup(d: &Path) -> (Pipeline, Store, SlurmOptions) {
        setup_with(d, "{mem: 2G}")
    }

    /// The same, the stage asking for `resources`.
    fn setup_with(d: &Path, resources: &str) -> (Pipeline, Store, SlurmOptions) {
        std::fs::write(
            d.join("p.yaml"),
            format!("name: p\nstages:\n  a: {{kind: writes, resources: {resources}}}\n"),
        )
        .unwrap();
        let mut r = Registry::new();
        r.register(Writes);
        let p = spherepipe_pipeline::load(&d.join("p.yaml"), &r, &[]).unwrap();
        let remote = Arc::new(spherepipe_store::ObjectRemote::open(&format!("memory://slurm-{}", d.display())).unwrap());
        let store = Store::open(d.join("cache"))
            .unwrap()
            .with_mirror(spherepipe_store::Mirror::new(remote));
        let opts = SlurmOptions {
            binary: "/bin/spherepipe".into(),
            pipeline_file: d.join("p.yaml"),
            overrides: Vec::new(),
            store_url: "memory://x".into(),
            extra_args: vec!["--account=vision".into()],
            log_dir: d.join("logs"),
            poll: Duration::ZERO,
        };
        (p, store, opts)
    }

    fn job(fp: &str) -> Job {
        writes_job("a", fp)
    }

    /// What a job that made `fp` leaves: an artifact in the cache, and the entry to share.
    fn committed(store: &Store, fp: &str) -> (spherepipe_store::Manifest, IndexEntry) {
        let staging = store.new_staging_dir("a").unwrap();
        std::fs::write(staging.join("out"), b"1").unwrap();
        let m = store.commit(&staging).unwrap();
        let entry = IndexEntry {
            fingerprint: fp.to_owned(),
            artifact: m.hash.clone(),
            provenance: serde_json::Value::Null,
        };
        (m, entry)
    }

    /// Polls until a result comes (the script ends every job within a few polls).
    fn result(exec: &mut SlurmExecutor<'_>) -> JobResult {
        for _ in 0..20 {
            if let Some(r) = exec.next_result(Duration::from_millis(1)).unwrap() {
                return r;
            }
        }
        panic!("no result")
    }

    #[test]
    fn a_job_is_done_when_the_store_has_its_artifact_whatever_slurm_says() {
        let d = tempfile::tempdir().unwrap();
        let (p, store, opts) = setup(d.path());
        let fp = blake3::hash(b"a").to_hex().to_string();
        // The job "commits": an artifact here, its entry pushed to the store below.
        let (m, entry) = committed(&store, &fp);
        let script = Arc::new(Script::default());
        script.submit.lock().unwrap().push_back(Sbatch::Submitted("41".into()));
        script.polls.lock().unwrap().extend([
            BTreeMap::from([("41".to_owned(), state("PENDING", "Priority"))]),
            BTreeMap::from([("41".to_owned(), state("RUNNING", "None"))]),
            // Killed after committing (a time limit during its last log line): still done.
            BTreeMap::from([("41".to_owned(), state("TIMEOUT", "TimeLimit"))]),
        ]);
        let mut exec = SlurmExecutor::with_client(&opts, &p, &store, &CancelToken::new(), Box::new(script.clone()));
        exec.submit(job(&fp)).unwrap();
        // The stage's resources and the site flags became sbatch flags.
        let args = script.submitted.lock().unwrap()[0].clone();
        assert!(
            args.contains(&"--mem=2G".to_owned()) && args.contains(&"--account=vision".to_owned()),
            "{args:?}"
        );
        assert!(
            args.iter().any(|a| a.starts_with("--wrap=exec '/bin/spherepipe' run-stage")),
            "{args:?}"
        );
        // Not yet in the store while it runs; recorded there by the time Slurm says TIMEOUT.
        store.mirror().unwrap().push(&store, &entry).unwrap();
        match result(&mut exec) {
            JobResult::Done {
                manifest_hash,
                in_store_only,
                ..
            } => assert!(manifest_hash == m.hash && in_store_only),
            JobResult::Failed { error, .. } => panic!("{error}"),
        }
    }

    #[test]
    fn a_job_that_ends_without_committing_fails_with_its_id_state_reason_and_log() {
        let d = tempfile::tempdir().unwrap();
        let (p, store, opts) = setup(d.path());
        std::fs::create_dir_all(&opts.log_dir).unwrap();
        std::fs::write(opts.log_dir.join("a.7.log"), "loading\nerror: out of memory in batch 3\n").unwrap();
        let script = Arc::new(Script::default());
        script.submit.lock().unwrap().push_back(Sbatch::Submitted("7".into()));
        script
            .polls
            .lock()
            .unwrap()
            .push_back(BTreeMap::from([("7".to_owned(), state("OUT_OF_MEMORY", "OutOfMemory"))]));
        let mut exec = SlurmExecutor::with_client(&opts, &p, &store, &CancelToken::new(), Box::new(script.clone()));
        exec.submit(job(&blake3::hash(b"b").to_hex())).unwrap();
        match result(&mut exec) {
            JobResult::Failed { error, cancelled, .. } => {
                assert!(!cancelled);
                assert!(
                    error.contains("Slurm job 7 of `a` ended OUT_OF_MEMORY (reason: OutOfMemory)"),
                    "{error}"
                );
                assert!(error.ends_with("a.7.log: error: out of memory in batch 3"), "{error}");
            }
            JobResult::Done { .. } => panic!("nothing was committed"),
        }
        // A job squeue no longer lists has ended too.
        script.submit.lock().unwrap().push_back(Sbatch::Submitted("8".into()));
        *script.polls.lock().unwrap() = VecDeque::from([BTreeMap::new()]);
        exec.submit(job(&blake3::hash(b"c").to_hex())).unwrap();
        match result(&mut exec) {
            JobResult::Failed { error, .. } => assert!(error.contains("ended ENDED (reason: no longer listed by squeue)"), "{error}"),
            JobResult::Done { .. } => panic!("nothing was committed"),
        }
    }

    /// The `--mem` and `--time` flags of each submission so far.
    fn asked_for(script: &Script) -> Vec<(String, String)> {
        let flag = |args: &[String], name: &str| args.iter().find_map(|a| a.strip_prefix(name)).unwrap_or_default().to_owned();
        script
            .submitted
            .lock()
            .unwrap()
            .iter()
            .map(|a| (flag(a, "--mem="), flag(a, "--time=")))
            .collect()
    }

    #[test]
    fn a_job_ended_for_its_resources_is_retried_with_more_and_each_attempt_recorded() {
        let d = tempfile::tempdir().unwrap();
        let (p, store, opts) = setup_with(d.path(), "{mem: 2G, time: 1, retries: 3}");
        let fp = blake3::hash(b"retried").to_hex().to_string();
        let script = Arc::new(Script::default());
        script
            .submit
            .lock()
            .unwrap()
            .extend(["11", "12", "13"].map(|j| Sbatch::Submitted(j.into())));
        let ended = |job: &str, word: &str, reason: &str| BTreeMap::from([(job.to_owned(), state(word, reason))]);
        script.polls.lock().unwrap().extend([
            ended("11", "OUT_OF_MEMORY", "OutOfMemory"),
            ended("12", "TIMEOUT", "TimeLimit"),
            ended("13", "RUNNING", "None"),
        ]);
        let mut exec = SlurmExecutor::with_client(&opts, &p, &store, &CancelToken::new(), Box::new(script.clone()));
        exec.submit(job(&fp)).unwrap();
        for _ in 0..5 {
            assert!(exec.next_result(Duration::from_millis(1)).unwrap().is_none());
        }
        // Memory doubled after OUT_OF_MEMORY, then the time after TIMEOUT.
        let want = [("2G", "1"), ("4096M", "1"), ("4096M", "00:02:00")].map(|(m, t)| (m.to_owned(), t.to_owned()));
        assert_eq!(asked_for(&script), want);
        // The third attempt commits.
        let (_, entry) = committed(&store, &fp);
        store.mirror().unwrap().push(&store, &entry).unwrap();
        *script.polls.lock().unwrap() = VecDeque::from([ended("13", "COMPLETED", "None")]);
        let JobResult::Done { attempts, .. } = result(&mut exec) else {
            panic!("not done")
        };
        let seen: Vec<(&str, &str, Option<&str>, Option<&str>)> = attempts
            .iter()
            .map(|a| (a.job_id.as_str(), a.state.as_str(), a.mem.as_deref(), a.time.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("11", "OUT_OF_MEMORY", Some("2G"), Some("1")),
                ("12", "TIMEOUT", Some("4096M"), Some("1")),
                ("13", "COMPLETED", Some("4096M"), Some("00:02:00")),
            ]
        );
        assert_eq!(attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn retries_run_out_and_a_plain_failure_is_not_retried() {
        let d = tempfile::tempdir().unwrap();
        let (p, store, opts) = setup_with(d.path(), "{mem: 100M, retries: 1, raise: [mem], factor: 1.5}");
        let script = Arc::new(Script::default());
        script
            .submit
            .lock()
            .unwrap()
            .extend(["21", "22", "23"].map(|j| Sbatch::Submitted(j.into())));
        script.polls.lock().unwrap().extend([
            BTreeMap::from([("21".to_owned(), state("NODE_FAIL", "NodeDown"))]),
            BTreeMap::from([("22".to_owned(), state("NODE_FAIL", "NodeDown"))]),
        ]);
        let mut exec = SlurmExecutor::with_client(&opts, &p, &store, &CancelToken::new(), Box::new(script.clone()));
        exec.submit(job(&blake3::hash(b"node").to_hex())).unwrap();
        let JobResult::Failed { error, attempts, .. } = result(&mut exec) else {
            panic!("done")
        };
        // A node failure is retried as it was, once; the second ends the stage.
        assert_eq!(
            asked_for(&script),
            [("100M".to_owned(), String::new()), ("100M".to_owned(), String::new())]
        );
        assert_eq!(attempts.len(), 2);
        assert!(error.contains("Slurm job 22 of `a` ended NODE_FAIL (reason: NodeDown)"), "{error}");
        assert!(
            error.contains("(attempt 2 of 2; earlier: job 21 ended NODE_FAIL asking mem 100M)"),
            "{error}"
        );
        // FAILED is the stage's own doing: no retry.
        *script.polls.lock().unwrap() = VecDeque::from([BTreeMap::from([("23".to_owned(), state("FAILED", "NonZeroExitCode"))])]);
        exec.submit(job(&blake3::hash(b"plain").to_hex())).unwrap();
        let JobResult::Failed { attempts, .. } = result(&mut exec) else {
            panic!("done")
        };
        assert_eq!(attempts.len(), 1);
        assert_eq!(script.submitted.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_refused_submission_fails_the_stage_and_ctrl_c_cancels_what_is_in_flight() {
        let d = tempfile::tempdir().unwrap();
        let (p, store, opts) = setup(d.path());
        let script = Arc::new(Script::default());
        script.submit.lock().unwrap().extend([
            Sbatch::Refused("Invalid account".into()),
            Sbatch::CannotRun("No such file or directory".into()),
            Sbatch::Submitted("9".into()),
        ]);
        script
            .polls
            .lock()
            .unwrap()
            .push_back(BTreeMap::from([("9".to_owned(), state("RUNNING", "None"))]));
        let cancel = CancelToken::new();
        let mut exec = SlurmExecutor::with_client(&opts, &p, &store, &cancel, Box::new(script.clone()));
        exec.submit(job(&blake3::hash(b"d").to_hex())).unwrap();
        match result(&mut exec) {
            JobResult::Failed { error, .. } => assert!(error.contains("sbatch refused the job of `a`: Invalid account"), "{error}"),
            JobResult::Done { .. } => panic!(),
        }
        exec.submit(job(&blake3::hash(b"e").to_hex())).unwrap();
        match result(&mut exec) {
            JobResult::Failed { error, .. } => assert!(error.contains("install slurm-client"), "{error}"),
            JobResult::Done { .. } => panic!(),
        }
        exec.submit(job(&blake3::hash(b"f").to_hex())).unwrap();
        assert!(exec.next_result(Duration::from_millis(1)).unwrap().is_none(), "still running");
        cancel.cancel();
        let _ = exec.next_result(Duration::from_millis(1)).unwrap();
        assert_eq!(*script.cancelled.lock().unwrap(), ["9"]);
    }

    #[test]
    fn squeue_words_become_states() {
        assert_eq!(JobState::parse("PENDING"), JobState::Alive("PENDING".into()));
        assert_eq!(JobState::parse("COMPLETED"), JobState::Completed);
        assert_eq!(JobState::parse("CANCELLED"), JobState::Cancelled);
        assert_eq!(JobState::parse("NODE_FAIL"), JobState::Ended("NODE_FAIL".into()));
        assert_eq!(JobState::Gone.word(), "ENDED");
    }

    #[test]
    fn resources_become_sbatch_flags_and_zero_gpus_asks_for_none() {
        let r = Resources {
            cpus: Some(8),
            mem: Some("16G".into()),
            gpus: Some(2),
            time: Some("4:00:00".into()),
            partition: Some("gpu".into()),
            ..Resources::default()
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
