//! `spherepipe run`: the run itself, its executor, Ctrl-C, `--dry-run`, the closing report and
//! the page it writes.

use crate::args::*;
use crate::commands::*;
use crate::failure::Failure;
use crate::{load_pipeline, progress, report};
use anyhow::Context;
use spherepipe_engine::{execute, open_store, plan, ExecutorKind, RunOptions, RunReport, SlurmOptions, StageState, Status};
use spherepipe_pipeline::Pipeline;
use spherepipe_stage::{CancelToken, Registry};
use spherepipe_store::Store;
use std::collections::BTreeSet;
use std::path::Path;

/// `spherepipe run`: runs what is not cached, prints one line per stage, each stage's
/// `summary.txt`, and the totals.
pub(crate) fn run(args: RunArgs, registry: &Registry, quiet: bool) -> Result<u8, Failure> {
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
        lock: crate::lock_mode(no_wait),
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
pub(crate) fn executor_kind(
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

/// A token that the first Ctrl-C cancels (stages stop, nothing unfinished is kept); a second
/// Ctrl-C exits at once.
pub(crate) fn cancel_on_ctrl_c() -> CancelToken {
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
pub(crate) fn print_report(p: &Pipeline, store: &Store, report: &RunReport) {
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
pub(crate) fn artifact_place(store: &Store, artifact: &str) -> String {
    match store.mirror() {
        Some(m) if store.read_manifest(artifact).is_err() => format!("{}/artifacts/{artifact}.json (in the store)", m.url()),
        _ => store.artifact_dir(artifact).display().to_string(),
    }
}

/// After a run: the pipeline's page, in the cache; a failure to write it is said, not fatal.
pub(crate) fn write_page(p: &Pipeline, file: &Path, store: &Store) {
    let out = report::default_path(p, store);
    match report::page(p, file, store, false).and_then(|page| report::write(&page, &out)) {
        Ok(()) => println!("report: {}", out.display()),
        Err(e) => eprintln!("warning: the pipeline's page was not written: {e:#}"),
    }
}

pub(crate) fn dry(p: &Pipeline, store: &Store, force: &[String]) -> Result<u8, Failure> {
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
