//! What would a run do? For each stage: its fingerprint (when its inputs are known), whether
//! that fingerprint is in the cache, and if not, why not, by comparing with the stage's
//! last recorded state.

use crate::fingerprint::Material;
use crate::records::last_state;
use serde::Serialize;
use serde_json::Value;
use spherepipe_pipeline::{Pipeline, Source};
use spherepipe_store::{hash_tree, StatCache, Store, TreeKind};
use std::collections::BTreeMap;

/// Whether a stage's output is in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Its fingerprint is in the index.
    Cached,
    /// It ran before, with other material.
    Stale,
    /// It never ran in this pipeline.
    NeverRun,
}

impl Status {
    /// The name `status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Cached => "cached",
            Status::Stale => "stale",
            Status::NeverRun => "never-run",
        }
    }
}

/// One stage's status, as `status` shows it (and `--json` writes it).
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// The stage's name.
    pub stage: String,
    /// Cached, stale or never run.
    pub state: Status,
    /// Why the stage is not cached: every difference found (empty when cached).
    pub reasons: Vec<StaleReason>,
    /// Known when every input's content is known (inputs cached or datasets).
    pub fingerprint: Option<String>,
    /// The cached artifact's id, when cached.
    pub artifact: Option<String>,
    /// What the fingerprint is made of, when known.
    #[serde(skip)]
    pub material: Option<Material>,
}

impl NodeStatus {
    /// Why the stage is not cached, in words (empty when cached).
    pub fn reason(&self) -> String {
        self.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; ")
    }
}

/// Why a stage is not cached (or will run anyway): what differs from its last recorded run.
/// Rendered in one place (`Display`), named for machines by [`StaleReason::kind`], and
/// serialised with that name as `kind` beside its fields (`status --json`'s `reasons`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StaleReason {
    /// No run of the stage is recorded.
    NeverRun,
    /// An input stage is not cached, so this stage's inputs are not known yet.
    Upstream {
        /// The input stage.
        stage: String,
        /// Its state.
        state: Status,
    },
    /// The stage's kind changed.
    Kind {
        /// The recorded kind.
        from: String,
        /// The kind now.
        to: String,
    },
    /// The kind's `version()` changed: its output changes for the same input.
    Version {
        /// The recorded version.
        from: String,
        /// The version now.
        to: String,
    },
    /// A param has another value.
    Param {
        /// The param.
        name: String,
        /// Its recorded value.
        from: Value,
        /// Its value now.
        to: Value,
    },
    /// A param was not there before.
    ParamAdded {
        /// The param.
        name: String,
        /// Its value now.
        value: Value,
    },
    /// A param is no longer there.
    ParamRemoved {
        /// The param.
        name: String,
    },
    /// The pipeline's seed changed (for a kind that uses it).
    Seed {
        /// The recorded seed (none: the kind did not use it).
        from: Option<u64>,
        /// The seed now.
        to: Option<u64>,
    },
    /// An input's content changed; `sources` names where it comes from.
    Input {
        /// The input's name.
        name: String,
        /// The stages or datasets it is bound to.
        sources: Vec<String>,
    },
    /// Nothing differs, but the artifact is gone (gc, or set aside by verify).
    ArtifactGone,
    /// `--force` names it: it runs whatever the cache holds.
    Forced,
    /// Another run is building it now (its build lock says who).
    Building {
        /// The holder: pid, pipeline and stage.
        by: String,
    },
}

impl StaleReason {
    /// A stable machine-readable name (`status --json`'s `reason_kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            StaleReason::NeverRun => "never-run",
            StaleReason::Upstream { .. } => "upstream",
            StaleReason::Kind { .. } => "kind",
            StaleReason::Version { .. } => "version",
            StaleReason::Param { .. } | StaleReason::ParamAdded { .. } | StaleReason::ParamRemoved { .. } => "param",
            StaleReason::Seed { .. } => "seed",
            StaleReason::Input { .. } => "input",
            StaleReason::ArtifactGone => "artifact-gone",
            StaleReason::Forced => "forced",
            StaleReason::Building { .. } => "building",
        }
    }
}

impl std::fmt::Display for StaleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: &Option<u64>| v.map(|s| s.to_string()).unwrap_or_else(|| "null".into());
        match self {
            StaleReason::NeverRun => write!(f, "no run of this stage is recorded"),
            StaleReason::Upstream { stage, state } => write!(f, "upstream `{stage}` is {}", state.as_str()),
            StaleReason::Kind { from, to } => write!(f, "kind changed from {from:?} to {to:?}"),
            StaleReason::Version { from, to } => write!(f, "kind version changed from {from:?} to {to:?}"),
            StaleReason::Param { name, from, to } => write!(f, "param {name}: {from} -> {to}"),
            StaleReason::ParamAdded { name, value } => write!(f, "param {name} is new ({value})"),
            StaleReason::ParamRemoved { name } => write!(f, "param {name} was removed"),
            StaleReason::Seed { from, to } => write!(f, "seed: {} -> {}", opt(from), opt(to)),
            StaleReason::Input { name, sources } => write!(f, "input `{name}` changed ({})", sources.join(", ")),
            StaleReason::ArtifactGone => write!(f, "its artifact is no longer in the cache (removed by gc or set aside by verify)"),
            StaleReason::Forced => write!(f, "forced"),
            StaleReason::Building { by } => write!(f, "being built now by {by}"),
        }
    }
}

/// A stage whose inputs are known: what it would be fingerprinted with, and its artifact if
/// that fingerprint is in the index. `plan` (status) and the coordinator (run) both decide
/// through this, so they cannot disagree about what is cached.
pub(crate) struct Resolved {
    /// What the fingerprint is made of.
    pub material: Material,
    /// Its hash.
    pub fingerprint: String,
    /// The artifact the index holds for it, if any.
    pub cached: Option<String>,
}

/// Resolves stage `i`, or names the first input stage whose artifact is not known.
pub(crate) fn resolve_node(
    p: &Pipeline,
    i: usize,
    store: &Store,
    datasets: &BTreeMap<String, String>,
    artifacts: &[Option<String>],
) -> Result<Resolved, String> {
    let hashes = input_hashes(p, i, datasets, artifacts)?;
    let material = Material::of(&p.nodes[i], &hashes, p.seed);
    let fingerprint = material.fingerprint();
    let cached = store.lookup(&fingerprint).map(|e| e.artifact);
    Ok(Resolved {
        material,
        fingerprint,
        cached,
    })
}

/// Content hashes of the datasets that some node uses, read through the stat cache.
pub fn hash_datasets(p: &Pipeline, store: &Store) -> anyhow::Result<BTreeMap<String, String>> {
    hash_datasets_of(p, store, 0..p.nodes.len())
}

/// Content hashes of the datasets that the given nodes use (a cluster job hashes only its
/// own stage's ancestry).
pub(crate) fn hash_datasets_of(
    p: &Pipeline,
    store: &Store,
    nodes: impl IntoIterator<Item = usize>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let stat = StatCache::load(store.layout().stat_cache());
    let mut out = BTreeMap::new();
    for n in nodes.into_iter().map(|i| &p.nodes[i]) {
        for s in n.inputs.values().flatten() {
            if let Source::Dataset(d) = s {
                if out.contains_key(d) {
                    continue;
                }
                let ds = &p.datasets[d];
                let t = hash_tree(&ds.path, TreeKind::Dataset, Some(&stat))
                    .map_err(|e| anyhow::anyhow!("dataset `{d}` ({}): {e}", ds.path.display()))?;
                out.insert(d.clone(), t.hash);
            }
        }
    }
    stat.save().map_err(|e| anyhow::anyhow!("saving the stat cache: {e}"))?;
    Ok(out)
}

/// The input hashes of node `i`, or the name of the first input whose content is unknown.
pub(crate) fn input_hashes(
    p: &Pipeline,
    i: usize,
    datasets: &BTreeMap<String, String>,
    artifacts: &[Option<String>],
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out = BTreeMap::new();
    for (name, sources) in &p.nodes[i].inputs {
        let mut hashes = Vec::new();
        for s in sources {
            match s {
                Source::Dataset(d) => hashes.push(datasets.get(d).cloned().ok_or_else(|| d.clone())?),
                Source::Stage(j) => hashes.push(artifacts[*j].clone().ok_or_else(|| p.nodes[*j].name.clone())?),
            }
        }
        out.insert(name.clone(), hashes);
    }
    Ok(out)
}

/// Each stage's status in `store`, its datasets hashed first (through the stat cache).
pub fn plan(p: &Pipeline, store: &Store) -> anyhow::Result<Vec<NodeStatus>> {
    plan_with(p, store, &hash_datasets(p, store)?)
}

/// Status of every node, in topological order.
fn plan_with(p: &Pipeline, store: &Store, datasets: &BTreeMap<String, String>) -> anyhow::Result<Vec<NodeStatus>> {
    let mut artifacts: Vec<Option<String>> = vec![None; p.nodes.len()];
    let mut out: Vec<NodeStatus> = Vec::new();
    for (i, node) in p.nodes.iter().enumerate() {
        let last = last_state(store, &p.name, &node.name);
        let (reasons, fingerprint, artifact, material) = match resolve_node(p, i, store, datasets, &artifacts) {
            Err(upstream) => {
                let state = out
                    .iter()
                    .find(|s| s.stage == upstream)
                    .map(|s| s.state)
                    .unwrap_or(Status::NeverRun);
                (vec![StaleReason::Upstream { stage: upstream, state }], None, None, None)
            }
            Ok(mut r) => {
                if r.cached.is_none() {
                    // A stage the shared store holds counts as cached: a run would fetch it.
                    r.cached = store.locate(&r.fingerprint)?.map(|e| e.artifact);
                }
                artifacts[i] = r.cached.clone();
                let mut reasons = match (&r.cached, &last) {
                    (Some(_), _) => Vec::new(),
                    (None, None) => vec![StaleReason::NeverRun],
                    (None, Some(l)) => explain(p, i, &l.material, &r.material),
                };
                if r.cached.is_none() {
                    if let Some(by) = store.builder(&r.fingerprint)? {
                        reasons.push(StaleReason::Building { by });
                    }
                }
                (reasons, Some(r.fingerprint), r.cached, Some(r.material))
            }
        };
        let state = match (&artifact, &last) {
            (Some(_), _) => Status::Cached,
            (None, Some(_)) => Status::Stale,
            (None, None) => Status::NeverRun,
        };
        out.push(NodeStatus {
            stage: node.name.clone(),
            state,
            reasons,
            fingerprint,
            artifact,
            material,
        });
    }
    Ok(out)
}

/// What differs between the material of the last recorded run of stage `i` and now.
fn explain(p: &Pipeline, i: usize, before: &Material, now: &Material) -> Vec<StaleReason> {
    let mut why = Vec::new();
    if before.kind != now.kind {
        why.push(StaleReason::Kind {
            from: before.kind.clone(),
            to: now.kind.clone(),
        });
    } else if before.version != now.version {
        why.push(StaleReason::Version {
            from: before.version.clone(),
            to: now.version.clone(),
        });
    }
    why.extend(param_changes(&before.params, &now.params));
    if before.seed != now.seed {
        why.push(StaleReason::Seed {
            from: before.seed,
            to: now.seed,
        });
    }
    for (k, v) in &now.inputs {
        if before.inputs.get(k) != Some(v) {
            let sources = p.nodes[i]
                .inputs
                .get(k)
                .into_iter()
                .flatten()
                .map(|s| match s {
                    Source::Dataset(d) => format!("dataset `{d}`"),
                    Source::Stage(j) => format!("stage `{}`", p.nodes[*j].name),
                })
                .collect();
            why.push(StaleReason::Input { name: k.clone(), sources });
        }
    }
    if why.is_empty() {
        why.push(StaleReason::ArtifactGone);
    }
    why
}

/// Params changed, added or removed between two resolved param sets.
fn param_changes(before: &BTreeMap<String, Value>, now: &BTreeMap<String, Value>) -> Vec<StaleReason> {
    let mut why = Vec::new();
    for (k, v) in now {
        match before.get(k) {
            Some(old) if old == v => {}
            Some(old) => why.push(StaleReason::Param {
                name: k.clone(),
                from: old.clone(),
                to: v.clone(),
            }),
            None => why.push(StaleReason::ParamAdded {
                name: k.clone(),
                value: v.clone(),
            }),
        }
    }
    for k in before.keys().filter(|k| !now.contains_key(*k)) {
        why.push(StaleReason::ParamRemoved { name: k.clone() });
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn param_changes_are_typed_and_rendered_in_one_place() {
        let before = BTreeMap::from([("m".to_owned(), json!(4)), ("old".to_owned(), json!(true))]);
        let now = BTreeMap::from([("m".to_owned(), json!(3)), ("new".to_owned(), json!("x"))]);
        let why = param_changes(&before, &now);
        let text: Vec<String> = why.iter().map(|r| r.to_string()).collect();
        assert_eq!(text, ["param m: 4 -> 3", "param new is new (\"x\")", "param old was removed"]);
        assert!(why.iter().all(|r| r.kind() == "param"));
        let other = [
            (
                StaleReason::Version {
                    from: "1".into(),
                    to: "2".into(),
                },
                "version",
                "kind version changed from \"1\" to \"2\"",
            ),
            (StaleReason::Seed { from: Some(7), to: None }, "seed", "seed: 7 -> null"),
            (
                StaleReason::ArtifactGone,
                "artifact-gone",
                "its artifact is no longer in the cache (removed by gc or set aside by verify)",
            ),
        ];
        for (r, kind, text) in other {
            assert_eq!((r.kind(), r.to_string().as_str()), (kind, text));
        }
    }
}
