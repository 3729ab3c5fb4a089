//! The contract between the engine and a stage kind.
//!
//! A stage kind (align, train, …) implements [`Stage`]: it declares its name, a version string
//! (bump it whenever its output for the same inputs changes, so caches are invalidated), its
//! typed params with defaults, and its named inputs; then [`Stage::run`] turns input artifact
//! directories into files in an empty output directory. Everything about ordering, caching,
//! hashing and concurrency belongs to the engine; a stage only sees a [`StageContext`].

#![warn(missing_docs)]

mod contract;
mod params;
mod progress;
mod resources;

pub use contract::{read_contract, write_contract, Contract};
pub use params::{did_you_mean, edit_distance, nearest, ParamError, ParamSpec, ParamType, Params};
pub use progress::{CancelToken, Cancelled, Progress, ProgressSink};
pub use resources::{mem_megabytes, slurm_time, time_seconds, Raise, Resources};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How many artifacts an input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly one artifact or dataset.
    One,
    /// One or more (for example every matrix expansion of an upstream stage).
    Many,
}

/// A named input a stage kind expects.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// The input's name in `inputs:`.
    pub name: &'static str,
    /// One artifact or a list.
    pub arity: Arity,
    /// Optional inputs may be left out of the pipeline file.
    pub optional: bool,
    /// What to bind it to, for `spherepipe kinds` and error messages.
    pub doc: &'static str,
}

impl InputSpec {
    /// An input taking exactly one artifact or dataset.
    pub const fn one(name: &'static str, doc: &'static str) -> Self {
        InputSpec {
            name,
            arity: Arity::One,
            optional: false,
            doc,
        }
    }
    /// An input taking a list (every expansion of a matrix stage, say).
    pub const fn many(name: &'static str, doc: &'static str) -> Self {
        InputSpec {
            name,
            arity: Arity::Many,
            optional: false,
            doc,
        }
    }
    /// The same input, allowed to be left out.
    pub const fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// Directories of the resolved inputs, by input name. A dataset input is the dataset's own
/// directory (read-only by convention); a stage input is the upstream artifact's directory.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    map: BTreeMap<String, Vec<PathBuf>>,
}

impl Inputs {
    /// Inputs from input name to directories.
    pub fn new(map: BTreeMap<String, Vec<PathBuf>>) -> Self {
        Inputs { map }
    }
    /// The single directory bound to `name`.
    pub fn one(&self, name: &str) -> anyhow::Result<&Path> {
        match self.map.get(name).map(Vec::as_slice) {
            Some([p]) => Ok(p),
            Some(ps) => anyhow::bail!("input `{name}` has {} artifacts, expected exactly one", ps.len()),
            None => anyhow::bail!("input `{name}` is not bound in the pipeline file"),
        }
    }
    /// Every directory bound to `name` (empty when an optional input is absent).
    pub fn many(&self, name: &str) -> &[PathBuf] {
        self.map.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
    /// The bound input names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}

/// What a stage reports about how it ran (the devices it trained on): kept in the artifact's
/// lineage, never in the artifact, since it may differ between runs that make the same bytes.
#[derive(Debug, Default)]
pub struct RunFacts(std::sync::Mutex<std::collections::BTreeMap<String, String>>);

impl RunFacts {
    /// Records `key` (a later value replaces an earlier one).
    pub fn record(&self, key: &str, value: impl Into<String>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_owned(), value.into());
        }
    }

    /// Everything recorded.
    pub fn all(&self) -> std::collections::BTreeMap<String, String> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Everything a running stage may touch.
pub struct StageContext<'a> {
    /// The stage's name in the pipeline (for messages), e.g. `train@patch=eyes`.
    pub stage_name: &'a str,
    /// Resolved params: every declared param, defaults filled in, types checked.
    pub params: &'a Params,
    /// The directories bound to each input.
    pub inputs: &'a Inputs,
    /// An empty directory; everything written here becomes the artifact.
    pub out_dir: &'a Path,
    /// A directory that survives failed or interrupted attempts of this exact stage (same
    /// fingerprint) and is deleted once its artifact is committed: the place for checkpoints
    /// a rerun resumes from. Never part of the artifact.
    pub scratch: &'a Path,
    /// Where to write how the run went (timings, throughput): kept beside the cache, outside
    /// the artifact, so the artifact stays a pure function of its inputs and params.
    pub logs: &'a Path,
    /// Where to report items done.
    pub progress: &'a Progress,
    /// Set on Ctrl-C: poll it between units of work.
    pub cancel: &'a CancelToken,
    /// The pipeline's seed (only part of the fingerprint when [`Stage::uses_seed`]).
    pub seed: u64,
    /// How it ran, for the lineage (not the artifact).
    pub facts: &'a RunFacts,
}

/// One of `count` parts of a splittable stage's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Which part, from 0.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl Part {
    /// Parses `I/N` (as `run-stage --part` takes it), with `I < N`.
    pub fn parse(s: &str) -> Result<Part, String> {
        let bad = || format!("--part {s}: expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if index >= count {
            return Err(bad());
        }
        Ok(Part { index, count })
    }

    /// This part's share of `n` units (rows, images, batches): contiguous, in order, sizes
    /// differing by at most one, together covering `0..n` exactly once.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        n * self.index / self.count..n * (self.index + 1) / self.count
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A stage kind. Implementations must be deterministic given params, inputs and seed, or the
/// cache and early cutoff lose their meaning.
pub trait Stage: Send + Sync {
    /// The name used as `kind:` in pipeline files.
    fn kind(&self) -> &'static str;
    /// Part of every fingerprint: change it whenever outputs change for the same inputs.
    fn version(&self) -> &'static str;
    /// One line for `spherepipe kinds` and error messages.
    fn doc(&self) -> &'static str {
        ""
    }
    /// The params it takes, with types, defaults and docs.
    fn params(&self) -> Vec<ParamSpec>;
    /// The inputs it takes.
    fn inputs(&self) -> Vec<InputSpec>;
    /// Whether the pipeline seed affects the output (and so enters the fingerprint).
    fn uses_seed(&self) -> bool {
        false
    }
    /// Checks across params that single-param types cannot express. The message should say
    /// how to fix it.
    fn validate(&self, _params: &Params) -> Result<(), InvalidParams> {
        Ok(())
    }
    /// Whether `parts: N` may split its work into parts that run apart (on several
    /// workers or cluster jobs) and are then gathered. A splittable kind implements
    /// [`Stage::run_part`] and [`Stage::gather`].
    fn splittable(&self) -> bool {
        false
    }
    /// Makes part `part` of the artifact in `ctx.out_dir` (a part artifact, cached and shared
    /// like any other).
    fn run_part(&self, _ctx: &StageContext<'_>, _part: Part) -> anyhow::Result<()> {
        anyhow::bail!("stage kind `{}` cannot be split into parts", self.kind())
    }
    /// Writes the artifact into `ctx.out_dir` from the part artifacts, in part order. It must
    /// be byte-identical to what [`Stage::run`] writes, whatever the number of parts: that is
    /// what keeps `parts` out of the fingerprint.
    fn gather(&self, _ctx: &StageContext<'_>, _parts: &[std::path::PathBuf]) -> anyhow::Result<()> {
        anyhow::bail!("stage kind `{}` cannot be split into parts", self.kind())
    }
    /// What it asks of a cluster node by default (the pipeline's `resources:` wins field by
    /// field). Never part of the fingerprint.
    fn resources(&self, _params: &Params) -> Resources {
        Resources::default()
    }
    /// The SVG figures its artifact may hold, as (file, caption), for the pipeline's page
    /// (`spherepipe report`); files a given artifact lacks are left out.
    fn figures(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    /// Whether its artifact holds face tables worth a contact sheet on the pipeline's page
    /// (the faces of its first Parquet file, with their landmarks); the page shows one, for
    /// the first such stage.
    fn shows_faces(&self) -> bool {
        false
    }
    /// Produces the artifact in `ctx.out_dir`. Return an error (never panic) on bad input, and
    /// poll `ctx.cancel` between units of work. A `summary.txt` in the artifact is printed at
    /// the end of `spherepipe run` (the headline result of a pipeline).
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()>;
}

/// Why a stage's params, taken together, are refused by [`Stage::validate`]: a message that
/// says how to fix it. A param's own error, a `…Params` parser's `anyhow` error and a plain
/// message all convert with `?`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidParams(pub String);

impl From<ParamError> for InvalidParams {
    fn from(e: ParamError) -> Self {
        InvalidParams(e.to_string())
    }
}

impl From<anyhow::Error> for InvalidParams {
    fn from(e: anyhow::Error) -> Self {
        InvalidParams(format!("{e:#}"))
    }
}

impl From<String> for InvalidParams {
    fn from(e: String) -> Self {
        InvalidParams(e)
    }
}

impl From<&str> for InvalidParams {
    fn from(e: &str) -> Self {
        InvalidParams(e.to_owned())
    }
}

/// The stage kinds a program knows, by `kind` name. The binary fills it; the engine and the
/// pipeline loader only look kinds up.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, std::sync::Arc<dyn Stage>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a kind; a later registration of the same name replaces the earlier one.
    pub fn register(&mut self, stage: impl Stage + 'static) -> &mut Self {
        self.kinds.insert(stage.kind(), std::sync::Arc::new(stage));
        self
    }
    /// The kind called `kind`, if registered.
    pub fn get(&self, kind: &str) -> Option<std::sync::Arc<dyn Stage>> {
        self.kinds.get(kind).cloned()
    }
    /// Kind names, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
    /// Every kind, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &std::sync::Arc<dyn Stage>> {
        self.kinds.values()
    }
}

#[cfg(test)]
mod part_tests {
    use super::Part;

    #[test]
    fn parts_cover_every_unit_once_in_order() {
        for n in [0usize, 1, 5, 7, 64, 101] {
            for count in 1..=8 {
                let ranges: Vec<_> = (0..count).map(|index| Part { index, count }.range(n)).collect();
                let flat: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(flat, (0..n).collect::<Vec<_>>(), "n={n} count={count}");
                let sizes: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                assert!(
                    sizes.iter().max().unwrap_or(&0) - sizes.iter().min().unwrap_or(&0) <= 1,
                    "{sizes:?}"
                );
            }
        }
    }

    #[test]
    fn part_text_round_trips_and_nonsense_is_refused() {
        assert_eq!(Part::parse("3/4"), Ok(Part { index: 3, count: 4 }));
        assert_eq!(Part::parse("3/4").map(|p| p.to_string()).as_deref(), Ok("3/4"));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(Part::parse(bad).is_err(), "{bad}");
        }
    }
}
