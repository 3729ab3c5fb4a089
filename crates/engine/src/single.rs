//! One stage as one command (`spherepipe run-stage`): what a cluster job runs on whatever
//! machine it lands on. Everything it needs comes from the pipeline file and the shared store;
//! everything it makes goes back to the store. A job that finds its result already there does
//! nothing, so a requeued or duplicated job is harmless.

use crate::fingerprint::part_fingerprint;
use crate::job::{make_part, run_job};
use crate::job::{Job, JobResult};
use crate::lineage::{Lineage, Made};
use crate::plan::{hash_datasets_of, resolve_node, Resolved};
use crate::run::{index_entry, Observer};
use spherepipe_pipeline::{Pipeline, Source};
use spherepipe_stage::{CancelToken, Inputs, Part};
use spherepipe_store::{IndexEntry, MirrorError, Pushed, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What `run_stage` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageRun {
    /// The store already held the stage's artifact: nothing ran.
    AlreadyDone {
        /// The artifact.
        artifact: String,
    },
    /// The stage ran here and its artifact is in the store.
    Ran {
        /// The artifact.
        artifact: String,
        /// How long it ran.
        wall: Duration,
    },
}

/// Why `run_stage` did not produce the stage's artifact.
#[derive(Debug, thiserror::Error)]
pub enum StageRunError {
    /// The pipeline has no stage of that name.
    #[error("no stage `{stage}` in {file}; `spherepipe dag {file}` lists the stages")]
    NoSuchStage {
        /// The name asked for.
        stage: String,
        /// The pipeline file.
        file: String,
    },
    /// This machine computes another fingerprint than the one the job was submitted with.
    #[error(
        "stage `{stage}` was submitted with fingerprint {expected}, but this machine computes {computed} for it from {file}: the pipeline file, its --set values, a dataset or the spherepipe build differ between the machine that submitted the job and this one; use one spherepipe build and one copy of the files on every node, then resubmit"
    )]
    FingerprintMismatch {
        /// The stage.
        stage: String,
        /// The pipeline file.
        file: String,
        /// What the job was submitted with.
        expected: String,
        /// What this machine computes.
        computed: String,
    },
    /// An input stage's artifact is in neither the local cache nor the store.
    #[error("stage `{stage}` needs the artifact of `{input}` (fingerprint {fingerprint}), which the store {store} does not hold; run `{input}` first (spherepipe run submits stages in order)")]
    InputMissing {
        /// The stage.
        stage: String,
        /// The input stage.
        input: String,
        /// The input's fingerprint.
        fingerprint: String,
        /// The store's URL.
        store: String,
    },
    /// The stage ran and failed, or was cancelled.
    #[error("stage `{stage}` failed: {error}")]
    Failed {
        /// The stage.
        stage: String,
        /// Why.
        error: String,
        /// Cancelled (Ctrl-C, SIGTERM from the scheduler) rather than failed.
        cancelled: bool,
    },
    /// The shared store failed, or held something corrupt.
    #[error(transparent)]
    Store(#[from] MirrorError),
    /// Anything else (the local cache, a dataset).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Which stage a job makes, as `run-stage` is told.
#[derive(Debug, Clone, Copy)]
pub struct StageRequest<'a> {
    /// The stage's name (a matrix expansion's full name).
    pub stage: &'a str,
    /// The fingerprint the submitting machine computed.
    pub fingerprint: &'a str,
    /// Only this part of a split stage.
    pub part: Option<Part>,
    /// Make it even if the store has it (`run --force`).
    pub force: bool,
}

/// Makes the requested stage (or part) of `p` unless the store has it, after checking that
/// this machine agrees on its fingerprint: inputs come from the store (verified), the artifact
/// goes to the local cache and the store. Takes no cache lock: jobs on one node share its cache
/// safely, since every write there is an atomic rename of content-addressed data.
pub fn run_stage(
    p: &Pipeline,
    store: &Store,
    req: StageRequest<'_>,
    cancel: &CancelToken,
    obs: &dyn Observer,
) -> Result<StageRun, StageRunError> {
    let i = p.index_of(req.stage).ok_or_else(|| StageRunError::NoSuchStage {
        stage: req.stage.to_owned(),
        file: p.file.display().to_string(),
    })?;
    let (r, entries) = resolve_from_store(p, i, store)?;
    if r.fingerprint != req.fingerprint {
        return Err(StageRunError::FingerprintMismatch {
            stage: req.stage.to_owned(),
            file: p.file.display().to_string(),
            expected: req.fingerprint.to_owned(),
            computed: r.fingerprint,
        });
    }
    if let Some(artifact) = already_made(p, i, store, req)? {
        return Ok(StageRun::AlreadyDone { artifact });
    }
    let node = &p.nodes[i];
    let job = Job {
        index: i,
        fingerprint: r.fingerprint.clone(),
        name: node.name.clone(),
        kind: node.kind.clone(),
        params: node.params.clone(),
        inputs: fetch_inputs(p, i, store, &entries)?,
        seed: p.seed,
        sink: obs.started(&node.name),
        parts: node.parts,
        forced: req.force,
        facts: Default::default(),
    };
    match req.part {
        Some(part) => make_one_part(store, cancel, &job, part),
        None => {
            let fingerprints: Vec<Option<String>> = entries.iter().map(|e| e.as_ref().map(|e| e.fingerprint.clone())).collect();
            make_whole(p, store, cancel, job, (&r, &fingerprints), obs)
        }
    }
}

/// The artifact the store already holds for the request (the stage's, or its part's), unless
/// the request forces it to be made again.
fn already_made(p: &Pipeline, i: usize, store: &Store, req: StageRequest<'_>) -> Result<Option<String>, StageRunError> {
    if let Some(artifact) = already_shared(store, req.fingerprint, req.force)? {
        return Ok(Some(artifact));
    }
    let Some(part) = req.part else { return Ok(None) };
    let kind = &p.nodes[i].kind;
    if !kind.splittable() {
        let why = format!(
            "stage `{}` is of kind `{}`, which cannot be split into parts",
            req.stage,
            kind.kind()
        );
        return Err(anyhow::anyhow!(why).into());
    }
    already_shared(store, &part_fingerprint(req.fingerprint, part), req.force)
}

/// One part of the stage, made and shared.
fn make_one_part(store: &Store, cancel: &CancelToken, job: &Job, part: Part) -> Result<StageRun, StageRunError> {
    let start = std::time::Instant::now();
    match make_part(store, cancel, job, part) {
        Ok(artifact) => Ok(StageRun::Ran {
            artifact,
            wall: start.elapsed(),
        }),
        Err(e) => Err(StageRunError::Failed {
            stage: format!("{} (part {part})", job.name),
            cancelled: e.cancelled(),
            error: e.message().to_owned(),
        }),
    }
}

/// The whole stage (gathered from its parts when split), recorded here and shared; a store that
/// already holds other bytes for it keeps them, with a warning that the kind is not deterministic.
fn make_whole(
    p: &Pipeline,
    store: &Store,
    cancel: &CancelToken,
    job: Job,
    (r, fingerprints): (&Resolved, &[Option<String>]),
    obs: &dyn Observer,
) -> Result<StageRun, StageRunError> {
    let (i, name, kind) = (job.index, job.name.clone(), job.kind.kind());
    match run_job(store, cancel, job) {
        JobResult::Done {
            manifest_hash,
            wall,
            started_unix,
            facts,
            ..
        } => {
            let made = Made::here(started_unix, started_unix + wall.as_secs_f64(), facts);
            let lineage = Lineage::of(p, i, &r.material, fingerprints, made);
            let entry = index_entry(&r.fingerprint, &manifest_hash, &lineage);
            store.record(&entry).map_err(|e| anyhow::anyhow!("recording the artifact: {e}"))?;
            match store.publish(&entry)? {
                Some(Pushed::Differs { theirs }) => {
                    obs.warning(&format!(
                        "warning: stage `{name}` of kind `{kind}` is not deterministic: for fingerprint {} the store already holds artifact {theirs}, this job made {manifest_hash}; the store keeps the first",
                        r.fingerprint
                    ));
                    Ok(StageRun::AlreadyDone { artifact: theirs })
                }
                _ => Ok(StageRun::Ran {
                    artifact: manifest_hash,
                    wall,
                }),
            }
        }
        JobResult::Failed { error, cancelled, .. } => Err(StageRunError::Failed {
            stage: name,
            error,
            cancelled,
        }),
    }
}

/// The artifact of `fp` (unless forced to remake it) if the shared store has it, or gets it now from this machine's cache
/// (a node cache that outlived an earlier run against another store): the job's result must be
/// in the store, where the coordinator looks for it.
fn already_shared(store: &Store, fp: &str, force: bool) -> Result<Option<String>, StageRunError> {
    if force {
        return Ok(None);
    }
    if let Some(local) = store.lookup(fp) {
        store.publish(&local)?;
        return Ok(Some(local.artifact));
    }
    Ok(store.locate(fp)?.map(|e| e.artifact))
}

/// Stage `i` resolved through its ancestors' artifacts as the local cache or the store knows
/// them (nothing downloaded), with the index entries of those ancestors by node.
fn resolve_from_store(p: &Pipeline, i: usize, store: &Store) -> Result<(Resolved, Vec<Option<IndexEntry>>), StageRunError> {
    let ancestry = p.ancestors(i);
    let datasets = hash_datasets_of(p, store, ancestry.iter().copied().chain([i]))?;
    let mut artifacts = vec![None; p.nodes.len()];
    let mut entries = vec![None; p.nodes.len()];
    for &j in &ancestry {
        let r = resolve(p, j, store, &datasets, &artifacts)?;
        let entry = store.locate(&r.fingerprint)?.ok_or_else(|| StageRunError::InputMissing {
            stage: p.nodes[i].name.clone(),
            input: p.nodes[j].name.clone(),
            fingerprint: r.fingerprint.clone(),
            store: store.mirror().map_or("(none: pass --store)", |m| m.url()).to_owned(),
        })?;
        artifacts[j] = Some(entry.artifact.clone());
        entries[j] = Some(entry);
    }
    Ok((resolve(p, i, store, &datasets, &artifacts)?, entries))
}

fn resolve(
    p: &Pipeline,
    i: usize,
    store: &Store,
    datasets: &BTreeMap<String, String>,
    artifacts: &[Option<String>],
) -> Result<Resolved, StageRunError> {
    resolve_node(p, i, store, datasets, artifacts).map_err(|u| {
        StageRunError::Other(anyhow::anyhow!(
            "internal: input `{u}` of `{}` has no content hash",
            p.nodes[i].name
        ))
    })
}

/// Stage `i`'s inputs as directories: datasets where they are, input artifacts downloaded
/// from the store (each file checked) unless the local cache has them.
fn fetch_inputs(p: &Pipeline, i: usize, store: &Store, entries: &[Option<IndexEntry>]) -> Result<Inputs, StageRunError> {
    let mut dirs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (name, sources) in &p.nodes[i].inputs {
        let mut paths = Vec::new();
        for s in sources {
            match s {
                Source::Dataset(d) => paths.push(p.datasets[d].path.clone()),
                Source::Stage(j) => {
                    let Some(entry) = &entries[*j] else {
                        return Err(anyhow::anyhow!("internal: input `{}` was not resolved", p.nodes[*j].name).into());
                    };
                    if store.lookup(&entry.fingerprint).is_none() && store.fetch_remote(&entry.fingerprint)?.is_none() {
                        return Err(StageRunError::InputMissing {
                            stage: p.nodes[i].name.clone(),
                            input: p.nodes[*j].name.clone(),
                            fingerprint: entry.fingerprint.clone(),
                            store: store.mirror().map_or("(none)", |m| m.url()).to_owned(),
                        });
                    }
                    paths.push(store.artifact_dir(&entry.artifact));
                }
            }
        }
        dirs.insert(name.clone(), paths);
    }
    Ok(Inputs::new(dirs))
}
