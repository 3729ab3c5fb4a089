//! Pipeline files: parsing (serde_yaml), checking against the registered stage kinds, matrix
//! expansion, and the resulting DAG in topological order.
//!
//! Every problem becomes a [`Diagnostic`] with the file, line, column, stage and a fix; all
//! problems found are reported together.

#![warn(missing_docs)]

mod diag;
mod locate;
mod nesting;
mod resolve;

pub use diag::{Diagnostic, Diagnostics};
pub use locate::{locate, Locations, Pos};
pub use resolve::{load, parse_override, Dataset, Node, Override, Pipeline, Source};

use serde::Deserialize;
use std::collections::BTreeMap;

/// The pipeline file as written. Unknown keys are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// The pipeline's name (a directory name in the cache).
    pub name: String,
    /// Directory that relative paths (datasets, cache) are resolved against, itself relative
    /// to the pipeline file's directory. Default: the pipeline file's directory.
    #[serde(default)]
    pub root: Option<String>,
    /// The cache directory (default `cache`, under `root`).
    #[serde(default)]
    pub cache: Option<String>,
    /// A store shared by machines (`file:///…`, `s3://…`), used when `--store` and
    /// `SPHEREPIPE_STORE` are not given.
    #[serde(default)]
    pub store: Option<String>,
    /// The seed of the stage kinds that use randomness (default 0).
    #[serde(default)]
    pub seed: u64,
    /// External inputs by name.
    #[serde(default)]
    pub datasets: BTreeMap<String, DatasetSpec>,
    /// The stages by name.
    pub stages: BTreeMap<String, StageSpec>,
}

/// An external input, hashed by content.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// A file or directory, relative to `root`.
    pub path: String,
    /// Free text shown in `dag` and error messages (for example where to get the data).
    #[serde(default)]
    pub about: Option<String>,
}

/// A stage as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage kind (`spherepipe kinds` lists them).
    pub kind: String,
    /// The kind's named inputs, each bound to datasets or stages.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputRef>,
    /// Params as written (checked and coerced against the kind's declarations).
    #[serde(default)]
    pub params: BTreeMap<String, serde_yaml::Value>,
    /// Param name -> values: the stage is expanded once per combination.
    #[serde(default)]
    pub matrix: BTreeMap<String, Vec<serde_yaml::Value>>,
    /// What a cluster executor asks for (`cpus`, `mem`, `gpus`, `time`, `partition`); an
    /// execution setting, never part of the fingerprint.
    #[serde(default)]
    pub resources: Option<spherepipe_stage::Resources>,
    /// Split the work into this many parts (splittable kinds: align, extract), each a job of
    /// its own, gathered into an artifact byte-identical to the unsplit one; an execution
    /// setting, never part of the fingerprint.
    #[serde(default)]
    pub parts: Option<usize>,
}

/// `inputs: {x: a}` or `inputs: {x: [a, b]}`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum InputRef {
    /// One dataset or stage.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl InputRef {
    /// The names referred to.
    pub fn names(&self) -> Vec<&str> {
        match self {
            InputRef::One(s) => vec![s.as_str()],
            InputRef::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}
