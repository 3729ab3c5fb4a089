//! The command line: clap's definitions, parsed once into these types (ripgrep's way), and
//! the two argument groups most commands share (`PipelineArgs`, `StoreArg`).

use crate::failure::Failure;
use crate::load_pipeline;
use clap::{Parser, Subcommand};
use spherepipe_pipeline::Pipeline;
use spherepipe_stage::{Part, Registry};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "spherepipe",
    version,
    about = "Reproducible face-recognition experiments as cached, incremental pipelines"
)]
pub(crate) struct Cli {
    /// No progress output (errors and results are still printed).
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
    /// How an artifact was made, back to the datasets: `lineage P STAGE`, or `lineage --artifact
    /// HASH` (a content hash or an artifact directory) for "what made this directory".
    Lineage {
        /// The pipeline file (with STAGE).
        #[arg(required_unless_present = "artifact", requires = "stage")]
        pipeline: Option<PathBuf>,
        /// The stage (a matrix expansion's full name).
        stage: Option<String>,
        /// Override a param: STAGE.PARAM=VALUE (VALUE is YAML).
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        set: Vec<String>,
        /// The artifact: its content hash, or its directory under cache/artifacts/.
        #[arg(long, value_name = "HASH", conflicts_with = "pipeline")]
        artifact: Option<String>,
        /// With --artifact: the cache whose index records it.
        #[arg(long, default_value = "cache")]
        cache: PathBuf,
        /// Print the chain as JSON (a list of links, the artifact first).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Re-hash every artifact; set corrupted ones aside so the next run rebuilds them.
    Verify {
        #[arg(long, default_value = "cache")]
        cache: PathBuf,
        /// Stop instead of waiting when runs are using the cache (verify waits for them,
        /// since it moves corrupted artifacts aside).
        #[arg(long)]
        no_wait: bool,
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
        /// With --yes: stop instead of waiting when runs are using the cache (gc waits for
        /// them, since it deletes).
        #[arg(long)]
        no_wait: bool,
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
    /// A trained model out of spherepipe: runs what STAGE needs (and only that), then writes
    /// its model to --out. STAGE is an `export` stage (its cached artifact is copied), or a
    /// `train` stage (exported here, with the flags below).
    Export(ExportArgs),
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
pub(crate) struct PipelineArgs {
    /// The pipeline file.
    pub(crate) pipeline: PathBuf,
    /// Override a param: STAGE.PARAM=VALUE (VALUE is YAML).
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    pub(crate) set: Vec<String>,
}

impl PipelineArgs {
    /// The pipeline, loaded and checked with its overrides.
    pub(crate) fn load(&self, registry: &Registry) -> Result<Pipeline, Failure> {
        load_pipeline(&self.pipeline, registry, &self.set)
    }
}

/// `spherepipe export`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// An export stage, or a train stage (a matrix expansion by its full name).
    pub(crate) stage: String,
    /// The file to write (model.onnx; with ONNX external data, its .data file goes beside it).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// With a train stage: onnx or safetensors.
    #[arg(long, default_value = "onnx", value_parser = ["onnx", "safetensors"])]
    pub(crate) format: String,
    /// With a train stage: the ONNX operator set (13 to 21).
    #[arg(long, default_value_t = 17)]
    pub(crate) opset: i64,
    /// With a train stage: `dynamic` or a fixed number of images.
    #[arg(long, default_value = "dynamic")]
    pub(crate) batch: String,
    /// With a train stage: take uint8 NHWC RGB pixels and normalise inside the graph.
    #[arg(long)]
    pub(crate) preprocess: bool,
}

/// The shared store `run`, `run-stage`, `status` and `show` take.
#[derive(clap::Args)]
pub(crate) struct StoreArg {
    /// The shared store: file:///shared/dir, s3://bucket/prefix (AWS_* variables:
    /// AWS_ENDPOINT_URL, credentials, region) or memory://name. `run` downloads what it holds
    /// instead of running it and uploads what it makes; `status` and `show` also count what
    /// it holds, downloading nothing.
    #[arg(long = "store", value_name = "URL", env = "SPHEREPIPE_STORE")]
    pub(crate) url: Option<String>,
}

/// What `spherepipe run` takes.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// Rerun this stage (or every expansion of a matrix stage) even if cached.
    #[arg(long, value_name = "STAGE")]
    pub(crate) force: Vec<String>,
    /// Stages run at once (default: number of cores).
    #[arg(long, short)]
    pub(crate) jobs: Option<usize>,
    /// Say what would run, run nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// After a failure, finish stages that do not depend on it.
    #[arg(long)]
    pub(crate) keep_going: bool,
    /// Stop instead of waiting when a gc or verify holds the cache, or when another run is
    /// building a stage this run needs (that stage fails; the others go on).
    #[arg(long)]
    pub(crate) no_wait: bool,
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Where stages run: `local` (threads of this process) or `slurm` (one sbatch job per
    /// stage, artifacts through --store; see README: Scaling out).
    #[arg(long, value_enum, default_value = "local")]
    pub(crate) executor: ExecutorName,
    /// Extra sbatch flags for every job (account, QOS), e.g. "--account=lab --qos=normal".
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    pub(crate) slurm_args: Option<String>,
}

/// Where `run` runs stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExecutorName {
    /// Worker threads of this process (`--jobs`).
    Local,
    /// One `sbatch` job per stage; artifacts travel through `--store`.
    Slurm,
}

/// What `spherepipe run-stage` takes.
#[derive(clap::Args)]
pub(crate) struct RunStageArgs {
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// The stage (a matrix expansion by its full name, e.g. `train@m=4`).
    pub(crate) stage: String,
    /// The fingerprint the submitting machine computed; the job refuses to run if this
    /// machine computes another.
    #[arg(long, required = true)]
    pub(crate) fingerprint: String,
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// This machine's working cache (default: the pipeline's). Jobs on one node may share it.
    #[arg(long, value_name = "DIR", env = "SPHEREPIPE_NODE_CACHE")]
    pub(crate) cache: Option<PathBuf>,
    /// Make only part I of N of a stage with `parts: N` (a Slurm array task).
    #[arg(long, value_name = "I/N", value_parser = Part::parse)]
    pub(crate) part: Option<Part>,
    /// Make it even if the store has it (what `run --force` submits).
    #[arg(long)]
    pub(crate) force: bool,
}
