//! `spherepipe run-stage`: one stage, as a cluster job runs it.

use crate::args::*;
use crate::commands::*;
use crate::failure::Failure;
use crate::progress;
use spherepipe_engine::{StageRequest, StageRun, StageRunError};
use spherepipe_stage::Registry;
use spherepipe_store::{CacheLock, Store};

/// `spherepipe run-stage`: one stage, as a cluster job runs it. Exit 0 when the store holds
/// the stage's artifact afterwards (made here or before), 1 when the stage failed, 2 when the
/// job cannot run here (another fingerprint, an input missing, the store failing), 130 when
/// cancelled (Ctrl-C, or Slurm's SIGTERM).
pub(crate) fn run_stage(args: RunStageArgs, registry: &Registry, quiet: bool) -> Result<u8, Failure> {
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
