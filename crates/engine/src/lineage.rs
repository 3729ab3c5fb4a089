//! How each artifact was made: its [`Lineage`], kept in its index entry's `provenance` (so
//! outside its content hash: two runs that make the same bytes on different hosts make the same
//! artifact) and copied to the shared store with the entry. Each input names the fingerprint of
//! the stage that made it, so the chain back to the datasets can be walked from the records
//! alone ([`chain`]), on any machine that reaches the cache or the store.

use crate::fingerprint::Material;
use serde::{Deserialize, Serialize};
use spherepipe_pipeline::{Pipeline, Source};
use spherepipe_store::{IndexEntry, Store};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How one artifact was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// The stage's name in its pipeline.
    pub stage: String,
    /// The pipeline that made it.
    pub pipeline: String,
    /// What its fingerprint covers: kind, kind version, resolved params, each input's content
    /// hashes, the seed where used.
    pub material: Material,
    /// Where each input's content came from, in the order of `material.inputs`.
    pub sources: BTreeMap<String, Vec<Origin>>,
    /// Who made it, where, when and on what.
    pub made: Made,
}

/// Where one input's content came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "lowercase", deny_unknown_fields)]
pub enum Origin {
    /// A dataset of the pipeline file, hashed by content.
    Dataset {
        /// Its name in the pipeline file.
        name: String,
        /// Its path on the machine that made the artifact.
        path: String,
    },
    /// Another stage's artifact.
    Stage {
        /// The stage's name.
        name: String,
        /// Its fingerprint: the key of its own lineage.
        fingerprint: String,
    },
}

/// The circumstances of a build: none of it changes the artifact's bits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Made {
    /// spherepipe's version.
    pub spherepipe: String,
    /// The commit the binary was built from, when it was built from a git checkout
    /// (`+changes`: tracked files differed from it; see `build.rs` for when that is checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The machine it ran on.
    pub host: String,
    /// When the stage started and ended, in seconds since the Unix epoch.
    pub started_unix: f64,
    /// See `started_unix`.
    pub ended_unix: f64,
    /// `local` (a worker thread of `spherepipe run`) or `slurm` (a `run-stage` job).
    pub executor: String,
    /// The Slurm job id, for a cluster job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    /// What the stage reported about how it ran (`devices` for a training).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
}

impl Made {
    /// This process, now: the executor is `slurm` inside a Slurm job, else `local`.
    pub fn here(started_unix: f64, ended_unix: f64, facts: BTreeMap<String, String>) -> Made {
        let slurm_job = std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty());
        Made {
            spherepipe: env!("CARGO_PKG_VERSION").to_owned(),
            revision: option_env!("SPHEREPIPE_REVISION").map(str::to_owned),
            host: host_name(),
            started_unix,
            ended_unix,
            executor: if slurm_job.is_some() { "slurm" } else { "local" }.to_owned(),
            slurm_job,
            facts,
        }
    }
}

/// The machine's name, as the kernel knows it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

impl Lineage {
    /// Stage `i`'s lineage: `fingerprints` holds the fingerprint of every finished stage of `p`
    /// (the inputs' makers).
    pub fn of(p: &Pipeline, i: usize, material: &Material, fingerprints: &[Option<String>], made: Made) -> Lineage {
        let node = &p.nodes[i];
        let sources = node
            .inputs
            .iter()
            .map(|(name, srcs)| {
                let origins = srcs
                    .iter()
                    .map(|s| match s {
                        Source::Dataset(d) => Origin::Dataset {
                            name: d.clone(),
                            path: p.datasets[d].path.display().to_string(),
                        },
                        Source::Stage(j) => Origin::Stage {
                            name: p.nodes[*j].name.clone(),
                            fingerprint: fingerprints[*j].clone().unwrap_or_default(),
                        },
                    })
                    .collect();
                (name.clone(), origins)
            })
            .collect();
        Lineage {
            stage: node.name.clone(),
            pipeline: p.name.clone(),
            material: material.clone(),
            sources,
            made,
        }
    }

    /// The lineage an index entry carries; `None` for one written before lineages were (or
    /// for a part's entry).
    pub fn from_entry(entry: &IndexEntry) -> Option<Lineage> {
        serde_json::from_value(entry.provenance.clone()).ok()
    }
}

/// One artifact in a chain: its record, and what is wrong with the link, if anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    /// The fingerprint the artifact was recorded under.
    pub fingerprint: String,
    /// Its content hash.
    pub artifact: String,
    /// Found only in the shared store's index, not in this cache.
    pub in_store_only: bool,
    /// How it was made; none for an entry that predates lineages.
    pub lineage: Option<Lineage>,
    /// Links that do not hold: an input whose maker is not recorded anywhere, or whose
    /// recorded artifact is not the content hash this artifact's fingerprint was made from.
    pub problems: Vec<String>,
}

/// The chain from `fingerprint`'s artifact back to the datasets, breadth first (the artifact
/// first, each ancestor once), read from this cache's index and else the shared store's.
pub fn chain(store: &Store, fingerprint: &str) -> anyhow::Result<Vec<Link>> {
    let mut out: Vec<Link> = Vec::new();
    let mut seen = BTreeSet::from([fingerprint.to_owned()]);
    let mut queue = VecDeque::from([fingerprint.to_owned()]);
    while let Some(fp) = queue.pop_front() {
        let local = store.lookup(&fp);
        let in_store_only = local.is_none();
        let entry = match local {
            Some(e) => e,
            None => store
                .locate(&fp)?
                .ok_or_else(|| anyhow::anyhow!("no artifact is recorded for fingerprint {fp}, here or in the store"))?,
        };
        let lineage = Lineage::from_entry(&entry);
        let mut problems = Vec::new();
        if let Some(l) = &lineage {
            for (name, origins) in &l.sources {
                for (k, origin) in origins.iter().enumerate() {
                    let Origin::Stage { name: maker, fingerprint } = origin else {
                        continue;
                    };
                    let want = l.material.inputs.get(name).and_then(|h| h.get(k));
                    // The record came from a cache or a store: a name that is no fingerprint is
                    // a broken link, not a path to look under.
                    if let Err(e) = spherepipe_store::check_hash("fingerprint", fingerprint) {
                        problems.push(format!("input `{name}` from `{maker}`: {e}"));
                        continue;
                    }
                    match input_link(store, fingerprint)? {
                        None => problems.push(format!(
                            "input `{name}` from `{maker}`: fingerprint {fingerprint} is recorded neither here nor in the store"
                        )),
                        Some(made) if Some(&made) != want => problems.push(format!(
                            "input `{name}` from `{maker}`: its fingerprint records artifact {made}, but this artifact was made from {}",
                            want.map_or("nothing", String::as_str)
                        )),
                        Some(_) => {
                            if seen.insert(fingerprint.clone()) {
                                queue.push_back(fingerprint.clone());
                            }
                        }
                    }
                }
            }
        }
        out.push(Link {
            fingerprint: fp,
            artifact: entry.artifact,
            in_store_only,
            lineage,
            problems,
        });
    }
    Ok(out)
}

/// The artifact recorded for an input's fingerprint, here or in the store.
fn input_link(store: &Store, fingerprint: &str) -> anyhow::Result<Option<String>> {
    Ok(match store.lookup(fingerprint) {
        Some(e) => Some(e.artifact),
        None => store.locate(fingerprint)?.map(|e| e.artifact),
    })
}

/// The fingerprints under which this cache's index records `artifact` (a content hash, or an
/// artifact directory's path).
pub fn fingerprints_of(store: &Store, artifact: &str) -> anyhow::Result<Vec<String>> {
    let hash = std::path::Path::new(artifact.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(store
        .index_entries()?
        .into_iter()
        .filter(|e| e.artifact == hash)
        .map(|e| e.fingerprint)
        .collect())
}
