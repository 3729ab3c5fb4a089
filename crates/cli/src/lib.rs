//! The `spherepipe` command line. [`main_with`] takes the registry of stage kinds, so the
//! shipped binary and test binaries share every command.
//!
//! Exit status: 0 success, 1 a stage failed (or `verify` found corruption), 2 a problem with
//! the command or the pipeline file, 130 interrupted.

#![warn(missing_docs)]

mod inspect;
mod metrics;
mod progress;
mod report;
pub mod speed;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spherepipe_engine::{
    execute, open_store, plan, records, ExecutorKind, RunOptions, RunReport, SlurmOptions, StageRequest, StageRun, StageRunError,
    StageState, Status,
};
use spherepipe_pipeline::{load, parse_override, Pipeline, Source};
use spherepipe_stage::{CancelToken, Part, Registry};
use spherepipe_store::{CacheLock, LockMode, Mirror, ObjectRemote, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "spherepipe",
    version,
    about = "Reproducible face-recognition experiments as cached, incremental pipelines"
)]
struct Cli {
    /// No progress output (errors and results are still printed).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every stage that is not cached.
    Run(RunArgs),
    /// Run one stage (what a cluster job runs): check its fingerprint, fetch its inputs from
    /// the shared store, run it, commit it there. Does nothing if the store has it.
    RunStage(RunStageArgs),
    /// Each stage: cached, stale (and why) or never run.
    Status {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Compare the headline results (metrics.json) of a pipeline's stages: one row per
    /// evaluate stage or matrix expansion, as resolved with --set.
    Metrics {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Also list results of earlier runs of this pipeline (other params), from runs.jsonl.
        #[arg(long)]
        history: bool,
    },
    /// One self-contained HTML page of the pipeline: the DAG with every stage's state, the
    /// results table and the figures (`run` writes it too).
    Report {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Also list results of earlier runs of this pipeline (other params).
        #[arg(long)]
        history: bool,
        /// Where to write it (default: reports/<pipeline name>.html in the cache).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The DAG as text, or as Graphviz with --dot.
    Dag {
        pipeline: PathBuf,
        #[arg(long)]
        dot: bool,
    },
    /// A stage's fingerprint, params, artifact directory, files and last run.
    Show {
        #[command(flatten)]
        pipeline: PipelineArgs,
        stage: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Re-hash every artifact; set corrupted ones aside so the next run rebuilds them.
    Verify {
        #[arg(long, default_value = "cache")]
        cache: PathBuf,
        /// Verify this shared store instead: re-hash every blob, check every manifest's blobs,
        /// remove what is corrupt so the next run rebuilds it.
        #[arg(long, value_name = "URL", env = "SPHEREPIPE_STORE")]
        store: Option<String>,
    },
    /// List (with --yes, delete) artifacts that none of the given pipelines uses.
    Gc {
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        #[arg(long)]
        yes: bool,
        /// Collect in this shared store instead of the local caches: what none of the given
        /// pipelines uses (they must be every pipeline that shares the store).
        #[arg(long, value_name = "URL", env = "SPHEREPIPE_STORE")]
        store: Option<String>,
        /// With --store: never remove objects younger than this (at least 2 h), since a run
        /// in flight uploads its files before it records them, and a push that reuses a
        /// blob refreshes it only when it is over an hour old.
        #[arg(long, value_name = "HOURS", default_value_t = 24.0)]
        grace_hours: f64,
    },
    /// The stage kinds this binary knows, with their params and inputs.
    Kinds,
    /// Schema, row and identity counts, images-per-identity histogram of face-table shards.
    Inspect {
        /// A .parquet file or a directory of them (e.g. a shard artifact).
        path: PathBuf,
        /// Also write a contact sheet of sample faces with their landmarks.
        #[arg(long)]
        sheet: Option<PathBuf>,
        /// Faces on the contact sheet.
        #[arg(long, default_value_t = 32)]
        samples: usize,
    },
    /// Images/s of a SphereFace training step and of feature extraction on this machine's
    /// devices, on made-up data (the PyTorch peer's setup), to size a job.
    Speed {
        /// sphere4, sphere10, sphere20, sphere36 or sphere64.
        #[arg(long, default_value = "sphere20")]
        net: String,
        /// Global training batch (cut into one slice per device), and images per extraction
        /// pass on each device.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// cpu, cuda or wgpu (GPU backends need a build with that feature).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// As the `devices` param (YAML): 2, auto, [cuda:0, cuda:1].
        #[arg(long, default_value = "1")]
        devices: String,
        /// As train's `slices` param; default: one per device.
        #[arg(long)]
        slices: Option<usize>,
        /// Timed steps (and extraction passes), after warm-up.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the synthetic face corpus (CASIA, LFW, YTF, MegaFace layouts) to a directory.
    Synth {
        #[arg(long)]
        out: PathBuf,
        /// tiny, demo or bench.
        #[arg(long, default_value = "demo")]
        preset: String,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

/// The pipeline file and the `--set` overrides every pipeline command takes.
#[derive(clap::Args)]
struct PipelineArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Override a param: STAGE.PARAM=VALUE (VALUE is YAML).
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    set: Vec<String>,
}

impl PipelineArgs {
    /// The pipeline, loaded and checked with its overrides.
    fn load(&self, registry: &Registry) -> Result<Pipeline, Failure> {
        load_pipeline(&self.pipeline, registry, &self.set)
    }
}

/// The shared store `run`, `run-stage`, `status` and `show` take.
#[derive(clap::Args)]
struct StoreArg {
    /// The shared store: file:///shared/dir, s3://bucket/prefix (AWS_* variables:
    /// AWS_ENDPOINT_URL, credentials, region) or memory://name. `run` downloads what it holds
    /// instead of running it and uploads what it makes; `status` and `show` also count what
    /// it holds, downloading nothing.
    #[arg(long = "store", value_name = "URL", env = "SPHEREPIPE_STORE")]
    url: Option<String>,
}

/// What `spherepipe run` takes.
#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Rerun this stage (or every expansion of a matrix stage) even if cached.
    #[arg(long, value_name = "STAGE")]
    force: Vec<String>,
    /// Stages run at once (default: number of cores).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Say what would run, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// After a failure, finish stages that do not depend on it.
    #[arg(long)]
    keep_going: bool,
    /// Stop instead of waiting when another run holds the cache.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    store: StoreArg,
    /// Where stages run: `local` (threads of this process) or `slurm` (one sbatch job per
    /// stage, artifacts through --store; see README: Scaling out).
    #[arg(long, value_enum, default_value = "local")]
    executor: ExecutorName,
    /// Extra sbatch flags for every job (account, QOS), e.g. "--account=lab --qos=normal".
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    slurm_args: Option<String>,
}

/// Where `run` runs stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ExecutorName {
    /// Worker threads of this process (`--jobs`).
    Local,
    /// One `sbatch` job per stage; artifacts travel through `--store`.
    Slurm,
}

/// What `spherepipe run-stage` takes.
#[derive(clap::Args)]
struct RunStageArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The stage (a matrix expansion by its full name, e.g. `train@m=4`).
    stage: String,
    /// The fingerprint the submitting machine computed; the job refuses to run if this
    /// machine computes another.
    #[arg(long, required = true)]
    fingerprint: String,
    #[command(flatten)]
    store: StoreArg,
    /// This machine's working cache (default: the pipeline's). Jobs on one node may share it.
    #[arg(long, value_name = "DIR", env = "SPHEREPIPE_NODE_CACHE")]
    cache: Option<PathBuf>,
    /// Make only part I of N of a stage with `parts: N` (a Slurm array task).
    #[arg(long, value_name = "I/N", value_parser = Part::parse)]
    part: Option<Part>,
    /// Make it even if the store has it (what `run --force` submits).
    #[arg(long)]
    force: bool,
}

/// A command that could not do its job: the message, the exit status, and whether the
/// message is printed as it is (already worded: a pipeline file's diagnostics, an
/// interruption) or as an error (`error: …`, added in one place, `main_with`).
struct Failure {
    code: u8,
    message: String,
    as_is: bool,
}

impl Failure {
    /// A problem with the command line, the pipeline file or the cache (exit 2).
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
            as_is: false,
        }
    }

    /// A stage or a measurement that failed (exit 1).
    fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
            as_is: false,
        }
    }

    /// A pipeline file's diagnostics, each already worded `error: …` with its place and fix
    /// (exit 2).
    fn diagnostics(text: String) -> Failure {
        Failure {
            code: 2,
            message: text,
            as_is: true,
        }
    }

    /// Stopped by Ctrl-C (exit 130).
    fn interrupted(message: impl Into<String>) -> Failure {
        Failure {
            code: 130,
            message: message.into(),
            as_is: true,
        }
    }

    /// What is printed.
    fn text(&self) -> String {
        if self.as_is {
            self.message.clone()
        } else {
            format!("error: {}", self.message)
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::usage(format!("{e:#}"))
    }
}

/// Every stage kind the shipped binary knows.
pub fn default_registry() -> Registry {
    let mut r = Registry::new();
    spherepipe_toy::register(&mut r);
    r.register(spherepipe_stage_synth::Synth)
        .register(spherepipe_stage_dedupe::Dedupe)
        .register(spherepipe_stage_align::Align)
        .register(spherepipe_stage_flip::Flip)
        .register(spherepipe_stage_shard::Shard)
        .register(spherepipe_stage_train::Train)
        .register(spherepipe_stage_extract::Extract)
        .register(spherepipe_stage_ensemble::Ensemble)
        .register(spherepipe_stage_evaluate::Evaluate)
        .register(spherepipe_stage_compare::Compare);
    r
}

/// mimalloc's `mi_option_purge_delay`, which the bindings do not name: in `mi_option_t`
/// (`include/mimalloc.h` of mimalloc v2 and v3 alike) it comes right before
/// `mi_option_use_numa_nodes`, which they do.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// For a program whose global allocator is mimalloc (the binary, the training bench): freed
/// memory stays mapped instead of going back to the OS after 10 ms: otherwise every
/// training step faults its convolution buffers in again and the kernel zeroes them, which
/// perf showed as 11% of a SphereFace-20 step (clear_page_erms). Costs about 80 MB of peak RSS.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is allowed at any time; the value -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// The whole command line over the stage kinds in `registry`: parses, dispatches, maps failures to exit codes.
pub fn main_with(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    // One rayon pool for the whole process: concurrent stages share it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
        .build_global();
    match dispatch(cli, &registry) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            let text = f.text();
            eprint!("{text}");
            if !text.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(f.code)
        }
    }
}

fn load_pipeline(file: &Path, registry: &Registry, set: &[String]) -> Result<Pipeline, Failure> {
    let overrides = set
        .iter()
        .map(|s| parse_override(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::usage(e.to_string()))?;
    load(file, registry, &overrides).map_err(|d| Failure::diagnostics(d.to_string()))
}

fn dispatch(cli: Cli, registry: &Registry) -> Result<u8, Failure> {
    match cli.cmd {
        Cmd::Run(args) => run(args, registry, cli.quiet),
        Cmd::RunStage(args) => run_stage(args, registry, cli.quiet),
        Cmd::Status { pipeline, json, store } => status(&pipeline.load(registry)?, json, store.url.as_deref()),
        Cmd::Metrics { pipeline, history } => metrics_table(&pipeline.pipeline, &pipeline.load(registry)?, history),
        Cmd::Dag { pipeline, dot } => dag(&load_pipeline(&pipeline, registry, &[])?, dot),
        Cmd::Report { pipeline, history, out } => report_command(&pipeline.pipeline, &pipeline.load(registry)?, history, out),
        Cmd::Show {
            pipeline,
            stage,
            json,
            store,
        } => show(&pipeline.load(registry)?, &stage, json, store.url.as_deref()),
        Cmd::Verify { store: Some(url), .. } => verify_shared(&url),
        Cmd::Verify { cache, store: None } => verify(&cache),
        Cmd::Gc {
            pipelines,
            yes,
            store: Some(url),
            grace_hours,
        } => gc_shared(&pipelines, registry, &url, grace_hours, yes),
        Cmd::Gc { pipelines, yes, .. } => gc(&pipelines, registry, yes),
        Cmd::Inspect { path, sheet, samples } => {
            print!("{}", inspect::inspect(&path, sheet.as_deref(), samples.max(1))?);
            Ok(0)
        }
        Cmd::Synth { out, preset, seed } => synth(&out, &preset, seed),
        Cmd::Kinds => kinds(registry),
        Cmd::Speed {
            net,
            batch,
            device,
            devices,
            slices,
            steps,
            json,
        } => speed_command(&net, batch, &device, &devices, slices, steps.max(1), json),
    }
}

/// `spherepipe speed`: reads the options as the train stage reads its params, then measures.
fn speed_command(
    net: &str,
    batch: usize,
    device: &str,
    devices: &str,
    slices: Option<usize>,
    steps: usize,
    json: bool,
) -> Result<u8, Failure> {
    let depth = match net.strip_prefix("sphere").and_then(|d| d.parse::<usize>().ok()) {
        Some(d @ (4 | 10 | 20 | 36 | 64)) => d,
        _ => {
            return Err(Failure::usage(format!(
                "--net {net}: use sphere4, sphere10, sphere20, sphere36 or sphere64"
            )))
        }
    };
    let spec: serde_json::Value = serde_yaml::from_str(devices).map_err(|e| Failure::usage(format!("--devices {devices}: {e}")))?;
    let devices = spherepipe_nn::devices::DeviceSpec::parse(&spec, device)
        .and_then(|s| s.resolve(device))
        .map_err(|e| Failure::usage(format!("--devices: {e:#}")))?;
    let slices = slices.unwrap_or(devices.len());
    if slices == 0 || !slices.is_multiple_of(devices.len()) || batch == 0 || !batch.is_multiple_of(slices) {
        return Err(Failure::usage(format!(
            "--batch {batch} in --slices {slices} over {} devices: the device count must divide the slices, and the slices the batch",
            devices.len()
        )));
    }
    let w = speed::Workload {
        depth,
        batch,
        slices,
        steps,
    };
    let r = speed::report(device, &devices, w).map_err(|e| Failure::failed(format!("{e:#}")))?;
    if json {
        println!("{}", serde_json::to_string(&r).map_err(|e| Failure::usage(e.to_string()))?);
    } else {
        println!(
            "SphereFace-{depth} on {} {device} device(s): training step, batch {batch} in {slices} slice(s): median {:.3}s = {:.1} images/s; extraction, {} images per device: median {:.3}s = {:.1} images/s; peak RSS {:.0} MB",
            r.devices,
            r.training.median_s,
            r.training.images_per_s,
            r.extraction_images,
            r.extraction.median_s,
            r.extraction.images_per_s,
            speed::peak_rss_mb()
        );
    }
    Ok(0)
}

/// The local cache as a working copy of the shared store at `url`, which must answer now:
/// an unreachable store, refused credentials or a missing bucket stop here (exit 2), before
/// anything runs or is cached.
fn with_shared_store(store: Store, url: Option<&str>) -> Result<Store, Failure> {
    match url {
        Some(url) => Ok(store.with_mirror(connect_shared(url)?)),
        None => Ok(store),
    }
}

/// The shared store at `url`, checked to answer (exit 2 with the URL and the fix otherwise).
fn connect_shared(url: &str) -> Result<Mirror, Failure> {
    let remote = ObjectRemote::connect(url).map_err(|e| Failure::usage(e.to_string()))?;
    Ok(Mirror::new(std::sync::Arc::new(remote)))
}

/// `spherepipe run`: runs what is not cached, prints one line per stage, each stage's
/// `summary.txt`, and the totals.
fn run(args: RunArgs, registry: &Registry, quiet: bool) -> Result<u8, Failure> {
    let RunArgs {
        pipeline: PipelineArgs { pipeline, set },
        force,
        jobs,
        dry_run,
        keep_going,
        no_wait,
        store: StoreArg { url: store_url },
        executor,
        slurm_args,
    } = args;
    let p = load_pipeline(&pipeline, registry, &set)?;
    for f in &force {
        if p.select(f).is_empty() {
            return Err(Failure::usage(format!("--force {f}: no such stage in {}", pipeline.display())));
        }
    }
    let store_url = store_url.or_else(|| p.store.clone());
    let store = with_shared_store(open_store(&p)?, store_url.as_deref())?;
    if dry_run {
        return dry(&p, &store, &force);
    }
    let executor = executor_kind(executor, &pipeline, &set, store_url.as_deref(), slurm_args.as_deref(), &store)?;
    let cancel = cancel_on_ctrl_c();
    let opts = RunOptions {
        jobs: jobs.unwrap_or_else(|| RunOptions::default().jobs),
        force: force.into_iter().collect(),
        keep_going,
        lock: if no_wait { LockMode::Fail } else { LockMode::Wait },
        cancel,
        overrides: set,
        executor,
    };
    let reporter = progress::Reporter::new(p.nodes.len(), quiet);
    let report = execute(&p, &store, &opts, &reporter)?;
    reporter.finish();
    print_report(&p, &store, &report);
    write_page(&p, &pipeline, &store);
    if report.cancelled {
        return Err(Failure::interrupted(
            "interrupted: finished stages are cached, unfinished ones were discarded",
        ));
    }
    Ok(if report.ok() { 0 } else { 1 })
}

/// The executor `run` was asked for, with what a Slurm job needs to find the same pipeline:
/// this binary, the file's absolute path, the overrides and the store.
fn executor_kind(
    name: ExecutorName,
    pipeline: &Path,
    set: &[String],
    store_url: Option<&str>,
    slurm_args: Option<&str>,
    store: &Store,
) -> Result<ExecutorKind, Failure> {
    if name == ExecutorName::Local {
        return Ok(ExecutorKind::Local);
    }
    let store_url = match store_url {
        Some(u) if u.starts_with("memory://") => {
            return Err(Failure::usage(format!("--executor slurm: the store {u} lives in this process only, so jobs on other machines cannot reach it; use s3://bucket/prefix or file:///shared/dir")))
        }
        Some(u) => u.to_owned(),
        None => {
            return Err(Failure::usage("--executor slurm needs a shared store that every node can reach: add --store s3://bucket/prefix or --store file:///shared/dir (or `store:` in the pipeline file)"))
        }
    };
    let binary = std::env::current_exe().context("finding this spherepipe binary for the jobs to run")?;
    let pipeline_file = std::fs::canonicalize(pipeline).with_context(|| format!("resolving {}", pipeline.display()))?;
    let log_dir = store.layout().slurm_logs();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    Ok(ExecutorKind::Slurm(SlurmOptions {
        binary,
        pipeline_file,
        overrides: set.to_vec(),
        store_url,
        extra_args: slurm_args.unwrap_or_default().split_whitespace().map(str::to_owned).collect(),
        log_dir,
        poll: std::time::Duration::from_millis(500),
    }))
}

/// `spherepipe run-stage`: one stage, as a cluster job runs it. Exit 0 when the store holds
/// the stage's artifact afterwards (made here or before), 1 when the stage failed, 2 when the
/// job cannot run here (another fingerprint, an input missing, the store failing), 130 when
/// cancelled (Ctrl-C, or Slurm's SIGTERM).
fn run_stage(args: RunStageArgs, registry: &Registry, quiet: bool) -> Result<u8, Failure> {
    let p = args.pipeline.load(registry)?;
    let cache = args.cache.unwrap_or_else(|| p.cache.clone());
    spherepipe_store::private_dir(&cache).map_err(|e| Failure::usage(e.to_string()))?;
    let store = Store::open(&cache).map_err(|e| Failure::usage(format!("cannot open the cache {}: {e}", cache.display())))?;
    // Shared with the other jobs on this cache, never with a run, gc or verify of it.
    let _lock = CacheLock::shared(store.root()).map_err(|e| Failure::usage(e.to_string()))?;
    let store = with_shared_store(store, args.store.url.as_deref().or(p.store.as_deref()))?;
    let cancel = cancel_on_ctrl_c();
    if let Ok(gpus) = std::env::var("CUDA_VISIBLE_DEVICES") {
        // What the scheduler granted (`--gres=gpu:N`), and what `devices: auto` will use.
        println!("{}: GPUs granted: CUDA_VISIBLE_DEVICES={gpus}", args.stage);
    }
    let reporter = progress::Reporter::new(1, quiet);
    let req = StageRequest {
        stage: &args.stage,
        fingerprint: &args.fingerprint,
        part: args.part,
        force: args.force,
    };
    let outcome = spherepipe_engine::run_stage(&p, &store, req, &cancel, &reporter);
    reporter.finish();
    match outcome {
        Ok(StageRun::AlreadyDone { artifact }) => {
            println!("{}: already in the store as artifact {artifact}; nothing to do", args.stage);
            Ok(0)
        }
        Ok(StageRun::Ran { artifact, wall }) => {
            println!(
                "{}: ran in {:.2}s, artifact {artifact} committed to the store",
                args.stage,
                wall.as_secs_f64()
            );
            Ok(0)
        }
        Err(StageRunError::Failed {
            cancelled: true, stage, ..
        }) => Err(Failure::interrupted(format!(
            "stage `{stage}` was cancelled; its checkpoints, if it keeps any, stay in the store for the next attempt"
        ))),
        Err(e @ StageRunError::Failed { .. }) => Err(Failure::failed(e.to_string())),
        Err(e) => Err(Failure::usage(e.to_string())),
    }
}

/// A token that the first Ctrl-C cancels (stages stop, nothing unfinished is kept); a second
/// Ctrl-C exits at once.
fn cancel_on_ctrl_c() -> CancelToken {
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if c.is_cancelled() {
            eprintln!("\ninterrupted again: exiting now (unfinished artifacts are discarded by the next run)");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping running stages; nothing unfinished will be kept (Ctrl-C again to exit at once)");
        c.cancel();
    });
    cancel
}

/// A run's closing output: one line per stage, the stages' `summary.txt`, the totals.
fn print_report(p: &Pipeline, store: &Store, report: &RunReport) {
    println!("{:<32} {:<9} {:>9}  ARTIFACT / REASON", "STAGE", "STATE", "TIME");
    for o in &report.outcomes {
        let detail = match o.state {
            StageState::Ran | StageState::Cached => o.artifact.as_deref().map(|a| artifact_place(store, a)).unwrap_or_default(),
            _ => o.reason.clone().unwrap_or_default(),
        };
        println!("{:<32} {:<9} {:>8.2}s  {detail}", o.stage, o.state.as_str(), o.wall.as_secs_f64());
    }
    // A stage may leave a `summary.txt` in its artifact (evaluate does: the accuracy);
    // it is the last thing a run prints, cached or not.
    for o in &report.outcomes {
        if let Some(a) = o
            .artifact
            .as_deref()
            .filter(|_| matches!(o.state, StageState::Ran | StageState::Cached))
        {
            if let Ok(text) = std::fs::read_to_string(store.artifact_dir(a).join("summary.txt")) {
                println!("{}: {}", o.stage, text.trim_end());
            }
        }
    }
    println!(
        "{}: {} ran, {} cached, {} failed, {} skipped in {:.2}s",
        p.name,
        report.count(StageState::Ran),
        report.count(StageState::Cached),
        report.count(StageState::Failed),
        report.count(StageState::Skipped),
        report.wall.as_secs_f64()
    );
}

/// Where an artifact can be read: its directory in the local cache, or (when stages ran on a
/// cluster and only the results were downloaded) its manifest in the shared store.
fn artifact_place(store: &Store, artifact: &str) -> String {
    match store.mirror() {
        Some(m) if store.read_manifest(artifact).is_err() => format!("{}/artifacts/{artifact}.json (in the store)", m.url()),
        _ => store.artifact_dir(artifact).display().to_string(),
    }
}

/// One row of `status --json`: the plan's typed status (every reason, each with its `kind`
/// and fields), plus the reasons in words and the first one's kind.
#[derive(serde::Serialize)]
struct StatusRow<'a> {
    #[serde(flatten)]
    status: &'a spherepipe_engine::NodeStatus,
    reason: String,
    reason_kind: &'static str,
}

/// `spherepipe status`: each stage cached, stale (and why) or never-run.
fn status(p: &Pipeline, json: bool, store_url: Option<&str>) -> Result<u8, Failure> {
    let store = with_shared_store(open_store(p)?, store_url.or(p.store.as_deref()))?;
    let st = plan(p, &store)?;
    if json {
        let rows: Vec<StatusRow> = st
            .iter()
            .map(|s| StatusRow {
                reason: s.reason(),
                reason_kind: s.reasons.first().map(|r| r.kind()).unwrap_or(""),
                status: s,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).context("encoding JSON")?);
    } else {
        println!("{:<32} {:<10} REASON", "STAGE", "STATE");
        for s in &st {
            println!("{:<32} {:<10} {}", s.stage, s.state.as_str(), s.reason());
        }
    }
    Ok(0)
}

/// After a run: the pipeline's page, in the cache; a failure to write it is said, not fatal.
fn write_page(p: &Pipeline, file: &Path, store: &Store) {
    let out = report::default_path(p, store);
    match report::page(p, file, store, false).and_then(|page| report::write(&page, &out)) {
        Ok(()) => println!("report: {}", out.display()),
        Err(e) => eprintln!("warning: the pipeline's page was not written: {e:#}"),
    }
}

/// `spherepipe report`: the pipeline's page, written to `out` or into the cache.
fn report_command(file: &Path, p: &Pipeline, history: bool, out: Option<PathBuf>) -> Result<u8, Failure> {
    let store = open_store(p)?;
    let out = out.unwrap_or_else(|| report::default_path(p, &store));
    let page = report::page(p, file, &store, history)?;
    report::write(&page, &out)?;
    println!("{}", out.display());
    Ok(0)
}

/// `spherepipe metrics`: the headline table of the pipeline's final stages.
fn metrics_table(file: &Path, p: &Pipeline, history: bool) -> Result<u8, Failure> {
    let store = open_store(p)?;
    let st = plan(p, &store)?;
    let (rows, missing) = metrics::rows(&store, &p.name, &st, &report::sinks(p), history);
    if rows.is_empty() {
        println!("no results yet: run `spherepipe run {}` first", file.display());
    } else {
        print!("{}", metrics::table(&rows, "STAGE"));
    }
    for (stage, why) in missing {
        println!("{stage}: no result for these params ({why})");
    }
    Ok(0)
}

/// `spherepipe dag`: the expanded DAG as text or Graphviz.
fn dag(p: &Pipeline, dot: bool) -> Result<u8, Failure> {
    print!("{}", if dot { dag_dot(p) } else { dag_text(p) });
    Ok(0)
}

/// `spherepipe verify`: re-hashes every artifact; corrupted ones go to quarantine.
fn verify(cache: &Path) -> Result<u8, Failure> {
    if !spherepipe_store::CacheLayout::new(cache).artifacts().is_dir() {
        return Err(Failure::usage(format!(
            "{} is not a spherepipe cache (no artifacts/ directory); pass --cache DIR",
            cache.display()
        )));
    }
    let store = Store::open(cache).context("opening the cache")?;
    let _lock = CacheLock::acquire(store.root(), LockMode::Wait, |who| {
        eprintln!("waiting for {who} to release the cache")
    })
    .context("locking the cache")?;
    let (n, problems) = store.verify().context("verifying")?;
    for pr in &problems {
        println!("corrupted: {} ({}); moved to {}", pr.artifact, pr.problem, pr.moved_to.display());
    }
    println!(
        "verified {n} artifacts: {} corrupted{}",
        problems.len(),
        if problems.is_empty() { "" } else { "; the next run rebuilds them" }
    );
    Ok(if problems.is_empty() { 0 } else { 1 })
}

/// `spherepipe verify --store URL`: the shared store's objects re-hashed, corrupt ones removed.
fn verify_shared(url: &str) -> Result<u8, Failure> {
    let mirror = connect_shared(url)?;
    let (n, problems) = mirror.verify().context("verifying the store")?;
    for pr in &problems {
        println!("corrupted: {} in {url}: {}", pr.key, pr.problem);
    }
    println!(
        "verified {n} objects in {url}: {} corrupted{}",
        problems.len(),
        if problems.is_empty() {
            ""
        } else {
            "; the next run rebuilds what they belonged to"
        }
    );
    Ok(if problems.is_empty() { 0 } else { 1 })
}

/// `spherepipe synth`: writes a synthetic corpus in the public datasets' layouts.
fn synth(out: &Path, preset: &str, seed: u64) -> Result<u8, Failure> {
    let p = spherepipe_synthface::Preset::named(preset).ok_or_else(|| {
        Failure::usage(format!(
            "unknown preset `{preset}`\n  fix: use one of {}",
            spherepipe_synthface::Preset::NAMES.join(", ")
        ))
    })?;
    let n = std::sync::atomic::AtomicUsize::new(0);
    let t = std::time::Instant::now();
    let s = spherepipe_synthface::generate(out, &p, seed, &|| {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .map_err(|e| Failure::usage(format!("{e:#}")))?;
    println!(
        "wrote {} images to {} in {:.1}s: {} CASIA, {} LFW ({} pairs), {} YTF frames in {} videos ({} pairs), {} FaceScrub, {} distractors",
        n.into_inner(),
        out.display(),
        t.elapsed().as_secs_f64(),
        s.casia_images,
        s.lfw_images,
        s.lfw_pairs,
        s.ytf_frames,
        s.ytf_videos,
        s.ytf_pairs,
        s.facescrub_images,
        s.distractor_images
    );
    Ok(0)
}

/// `spherepipe kinds`: every stage kind with its inputs and params.
fn kinds(registry: &Registry) -> Result<u8, Failure> {
    for k in registry.iter() {
        println!("{} (version {}): {}", k.kind(), k.version(), k.doc());
        for i in k.inputs() {
            println!("  input  {:<16} {}{}", i.name, i.doc, if i.optional { " (optional)" } else { "" });
        }
        for p in k.params() {
            let default = p.default.map(|d| format!(" = {d}")).unwrap_or_else(|| " (required)".into());
            let setting = if p.execution {
                " (execution setting: not in the fingerprint)"
            } else {
                ""
            };
            println!("  param  {:<16} {}{default}: {}{setting}", p.name, p.ty, p.doc);
        }
        if k.splittable() {
            println!("  splits into `parts: N` (README: Scaling out)");
        }
    }
    Ok(0)
}

fn dry(p: &Pipeline, store: &Store, force: &[String]) -> Result<u8, Failure> {
    let st = plan(p, store)?;
    let forced: BTreeSet<usize> = force.iter().flat_map(|f| p.select(f)).collect();
    let mut would = 0;
    for (i, s) in st.iter().enumerate() {
        let (what, why) = if forced.contains(&i) {
            ("run", spherepipe_engine::StaleReason::Forced.to_string())
        } else if s.state == Status::Cached {
            ("cached", String::new())
        } else {
            ("run", s.reason())
        };
        if what == "run" {
            would += 1;
        }
        println!("{:<32} would {what:<7} {why}", s.stage);
    }
    println!(
        "dry run: {would} of {} stages would run (a stage after one that runs may turn out cached)",
        st.len()
    );
    Ok(0)
}

fn source_name(p: &Pipeline, s: &Source) -> String {
    match s {
        Source::Dataset(d) => format!("dataset {d}"),
        Source::Stage(j) => p.nodes[*j].name.clone(),
    }
}

fn dag_text(p: &Pipeline) -> String {
    let mut out = format!("pipeline {} ({} stages)\n", p.name, p.nodes.len());
    for (name, d) in &p.datasets {
        out += &format!("dataset {name}: {}\n", d.path.display());
    }
    for n in &p.nodes {
        out += &format!("{} [{}]\n", n.name, n.kind.kind());
        for (input, srcs) in &n.inputs {
            let from: Vec<String> = srcs.iter().map(|s| source_name(p, s)).collect();
            out += &format!("  {input} <- {}\n", from.join(", "));
        }
    }
    out
}

fn dag_dot(p: &Pipeline) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n  rankdir=LR;\n", q(&p.name));
    for name in p.datasets.keys() {
        out += &format!("  {} [shape=cylinder];\n", q(&format!("dataset {name}")));
    }
    for n in &p.nodes {
        out += &format!(
            "  {} [shape=box, label={}];\n",
            q(&n.name),
            q(&format!("{}\\n({})", n.name, n.kind.kind()))
        );
        for (input, srcs) in &n.inputs {
            for s in srcs {
                out += &format!("  {} -> {} [label={}];\n", q(&source_name(p, s)), q(&n.name), q(input));
            }
        }
    }
    out + "}\n"
}

/// The error for a stage name that names no expanded stage: for the base name of a matrix
/// stage, its expansions; otherwise the nearest name and the list.
fn no_such_stage(p: &Pipeline, stage: &str) -> Failure {
    let expansions: Vec<&str> = p.select(stage).into_iter().map(|i| p.nodes[i].name.as_str()).collect();
    if !expansions.is_empty() {
        return Failure::usage(format!(
            "`{stage}` is a matrix stage of {}: name one of its {} expansions\n  fix: use one of {}",
            p.file.display(),
            expansions.len(),
            expansions.join(", ")
        ));
    }
    let names: Vec<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
    Failure::usage(format!(
        "no stage `{stage}` in {}\n  fix: {}stages: {}",
        p.file.display(),
        spherepipe_stage::did_you_mean(stage, names.iter().copied()),
        names.join(", ")
    ))
}

fn show(p: &Pipeline, stage: &str, as_json: bool, store_url: Option<&str>) -> Result<u8, Failure> {
    let Some(i) = p.index_of(stage) else {
        return Err(no_such_stage(p, stage));
    };
    let store = with_shared_store(open_store(p)?, store_url.or(p.store.as_deref()))?;
    let st = plan(p, &store)?;
    let s = &st[i];
    let d = report::details(p, &store, s, i, &records::read_runs(&store))?;
    let node = &p.nodes[i];
    if as_json {
        println!("{}", serde_json::to_string_pretty(&d).context("encoding JSON")?);
        return Ok(0);
    }
    println!("stage        {} [{} v{}]", node.name, node.kind.kind(), node.kind.version());
    println!(
        "state        {}{}",
        s.state.as_str(),
        if s.reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.reason())
        }
    );
    println!(
        "fingerprint  {}",
        s.fingerprint.as_deref().unwrap_or("(unknown until its inputs are built)")
    );
    let where_ = match (&d.artifact, &d.in_store) {
        (Some(d), _) => d.display().to_string(),
        (None, Some(key)) => format!("{key} (in the shared store only; `run` fetches it)"),
        (None, None) => "(none)".into(),
    };
    println!("artifact     {where_}");
    println!("params");
    for (k, v) in &node.params.0 {
        println!("  {k}: {v}");
    }
    println!("files");
    for f in &d.files {
        println!("  {:>12}  {}  {}", f.size, f.blake3.get(..16).unwrap_or(&f.blake3), f.path);
    }
    match &d.last_run {
        Some(r) => println!("last run     {} ({}, {:.2}s)", r.run_id, r.state.as_str(), r.wall_s),
        None => println!("last run     (none recorded)"),
    }
    Ok(0)
}

/// `spherepipe gc --store URL`: what the given pipelines do not use, in the shared store,
/// sparing objects younger than the grace period.
fn gc_shared(files: &[PathBuf], registry: &Registry, url: &str, grace_hours: f64, yes: bool) -> Result<u8, Failure> {
    if !(grace_hours.is_finite() && grace_hours >= 0.0) {
        return Err(Failure::usage(format!(
            "--grace-hours {grace_hours}: give a number of hours, 0 or more"
        )));
    }
    let mirror = connect_shared(url)?;
    let mut keep = BTreeSet::new();
    for f in files {
        let p = load_pipeline(f, registry, &[])?;
        let store = open_store(&p)?.with_mirror(mirror.clone());
        keep.extend(plan(&p, &store)?.into_iter().filter_map(|s| s.artifact));
    }
    let grace = std::time::Duration::from_secs_f64(grace_hours * 3600.0).max(spherepipe_store::MIN_GC_GRACE);
    let grace_hours = grace.as_secs_f64() / 3600.0;
    let gone = mirror.gc(&keep, grace, yes).context("collecting garbage in the store")?;
    let bytes: u64 = gone.iter().map(|o| o.size).sum();
    let (each, all) = gc_words(yes);
    for o in &gone {
        println!("{each} {} ({} bytes)", o.key, o.size);
    }
    println!(
        "{url}: {} artifacts kept, {} objects {all} ({bytes} bytes); objects younger than {grace_hours} h are never removed",
        keep.len(),
        gone.len(),
    );
    Ok(0)
}

/// How `gc` words what it found: per item, and in the closing line.
fn gc_words(yes: bool) -> (&'static str, &'static str) {
    if yes {
        ("deleted", "deleted")
    } else {
        ("unused ", "unused; rerun with --yes to delete them")
    }
}

fn gc(files: &[PathBuf], registry: &Registry, yes: bool) -> Result<u8, Failure> {
    // Pipelines may use different caches: collect live artifacts per cache.
    let mut live: BTreeMap<PathBuf, (Store, BTreeSet<String>)> = BTreeMap::new();
    for f in files {
        let p = load_pipeline(f, registry, &[])?;
        let store = open_store(&p)?;
        let st = plan(&p, &store)?;
        let entry = live
            .entry(store.root().to_path_buf())
            .or_insert_with(|| (store.clone(), BTreeSet::new()));
        entry.1.extend(st.into_iter().filter_map(|s| s.artifact));
    }
    for (root, (store, keep)) in &live {
        let _lock = if yes {
            Some(CacheLock::acquire(root, LockMode::Wait, |who| eprintln!("waiting for {who}")).context("locking the cache")?)
        } else {
            None
        };
        let gone = store.gc(keep, yes).context("collecting garbage")?;
        let (each, all) = gc_words(yes);
        for g in &gone {
            println!("{each} {} ({} bytes)", store.artifact_dir(&g.artifact).display(), g.bytes);
        }
        // This cache's bytes alone: the line is per cache.
        let total: u64 = gone.iter().map(|g| g.bytes).sum();
        println!(
            "{}: {} artifacts kept, {} {all} ({total} bytes)",
            root.display(),
            keep.len(),
            gone.len()
        );
    }
    Ok(0)
}
