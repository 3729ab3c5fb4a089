//! The engine: decides what is cached and what must run, runs stages concurrently, commits
//! their artifacts and keeps a record. It sees stages only through the `Stage` trait.
//!
//! - [`fingerprint`]: what identifies a stage's output.
//! - [`plan()`]: cached / stale (and why) / never run, for `status`, `show`, `gc`, `--dry-run`.
//! - [`execute()`]: the coordinator that runs what is not cached through an executor (today
//!   a local pool of worker threads).
//! - [`run_stage()`]: one stage on whatever machine a cluster job lands on, inputs and
//!   output through the shared store.
//! - [`records`]: `runs.jsonl` and the last state of every stage.

#![warn(missing_docs)]

mod executor;
/// What identifies a stage's output: its material and the hash of it.
pub mod fingerprint;
mod job;
pub mod lineage;
mod plan;
/// The last state of every stage and the log of runs.
pub mod records;
mod run;
mod single;
mod slurm;
#[cfg(test)]
mod testing;

pub use plan::{hash_datasets, plan, NodeStatus, StaleReason, Status};
pub use run::{execute, ExecutorKind, Observer, Outcome, RunOptions, RunReport, StageState};
pub use single::{run_stage, StageRequest, StageRun, StageRunError};
pub use slurm::SlurmOptions;

/// The store of a pipeline, opened where the pipeline file says.
pub fn open_store(p: &spherepipe_pipeline::Pipeline) -> anyhow::Result<spherepipe_store::Store> {
    spherepipe_store::Store::open(&p.cache).map_err(|e| anyhow::anyhow!("cannot open the cache {}: {e}", p.cache.display()))
}
