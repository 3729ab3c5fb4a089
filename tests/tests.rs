//! End-to-end tests of the `spherepipe` command: one test binary (fewer links than one per
//! file), a module per area, sharing `common`. ARCHITECTURE.md's Testing section says what
//! each module covers.

mod bad_input;
mod commands;
mod common;
mod crash_and_concurrency;
mod detect;
mod engine_runs;
mod evaluate;
mod export;
mod face_data;
mod insightface;
mod lineage;
mod pipelines;
mod published_weights;
mod report;
mod shared_store;
mod slurm;
mod train;
