//! The `spherepipe` command line. [`main_with`] takes the registry of stage kinds, so the
//! shipped binary and test binaries share every command.
//!
//! Exit status: 0 success, 1 a stage failed (or `verify` found corruption), 2 a problem with
//! the command or the pipeline file, 130 interrupted.

#![warn(missing_docs)]

mod args;
mod commands;
mod failure;
mod inspect;
mod metrics;
mod progress;
mod report;
pub mod speed;

use args::*;
use clap::Parser;
use commands::*;
use failure::Failure;
use spherepipe_pipeline::{load, parse_override, Pipeline};
use spherepipe_stage::Registry;
use std::path::Path;
use std::process::ExitCode;

/// Every stage kind the shipped binary knows.
pub fn default_registry() -> Registry {
    let mut r = Registry::new();
    spherepipe_toy::register(&mut r);
    r.register(spherepipe_stage_synth::Synth)
        .register(spherepipe_stage_dedupe::Dedupe)
        .register(spherepipe_stage_align::Align)
        .register(spherepipe_stage_unpack::Unpack)
        .register(spherepipe_stage_detect::Detect)
        .register(spherepipe_stage_export::Export)
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

pub(crate) fn load_pipeline(file: &Path, registry: &Registry, set: &[String]) -> Result<Pipeline, Failure> {
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
        Cmd::Lineage {
            pipeline,
            stage,
            set,
            artifact,
            cache,
            json,
            store,
        } => {
            let start = match (pipeline, stage, artifact) {
                (_, _, Some(artifact)) => LineageStart::Artifact { cache, artifact },
                (Some(file), Some(stage), None) => LineageStart::Stage {
                    pipeline: load_pipeline(&file, registry, &set)?,
                    stage,
                },
                _ => return Err(Failure::usage("name a pipeline and a stage, or --artifact HASH")),
            };
            lineage(start, store.url.as_deref(), json)
        }
        Cmd::Verify { store: Some(url), .. } => verify_shared(&url),
        Cmd::Verify {
            cache,
            store: None,
            no_wait,
        } => verify(&cache, lock_mode(no_wait)),
        Cmd::Gc {
            pipelines,
            yes,
            store: Some(url),
            no_wait: _,
            grace_hours,
        } => gc_shared(&pipelines, registry, &url, grace_hours, yes),
        Cmd::Gc {
            pipelines, yes, no_wait, ..
        } => gc(&pipelines, registry, yes, lock_mode(no_wait)),
        Cmd::Inspect { path, sheet, samples } => {
            print!("{}", inspect::inspect(&path, sheet.as_deref(), samples.max(1))?);
            Ok(0)
        }
        Cmd::Synth { out, preset, seed } => synth(&out, &preset, seed),
        Cmd::Kinds => kinds(registry),
        Cmd::Export(args) => export_command(args, registry, cli.quiet),
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

/// `--no-wait` as the store's lock mode.
pub(crate) fn lock_mode(no_wait: bool) -> spherepipe_store::LockMode {
    if no_wait {
        spherepipe_store::LockMode::Fail
    } else {
        spherepipe_store::LockMode::Wait
    }
}
