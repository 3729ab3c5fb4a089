//! What would a run do? For each stage: its fingerprint (when its inputs are known), whether
//! that fingerprint is in the cache, and if not, why not, by comparing with the stage's
//! last recorded state.

use crate::fingerprint::{fingerprint, material};
use crate::records::{last_state, LastState};
use serde::Serialize;
use serde_json::Value;
use spherepipe_pipeline::{Pipeline, Source};
use spherepipe_store::{hash_tree, StatCache, Store, TreeKind};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Cached,
    Stale,
    NeverRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Cached => "cached",
            Status::Stale => "stale",
            Status::NeverRun => "never-run",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub stage: String,
    pub state: Status,
    pub reason: String,
    /// Known when every input's content is known (inputs cached or datasets).
    pub fingerprint: Option<String>,
    pub artifact: Option<String>,
    #[serde(skip)]
    pub material: Option<Value>,
}

/// Content hashes of the datasets that some node uses, read through the stat cache.
pub fn hash_datasets(p: &Pipeline, store: &Store) -> anyhow::Result<BTreeMap<String, String>> {
    let stat = StatCache::load(store.root().join("stat-cache.tsv"));
    let mut out = BTreeMap::new();
    for n in &p.nodes {
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

/// Status of every node, in topological order.
pub fn plan(p: &Pipeline, store: &Store, datasets: &BTreeMap<String, String>) -> Vec<NodeStatus> {
    let mut artifacts: Vec<Option<String>> = vec![None; p.nodes.len()];
    let mut out: Vec<NodeStatus> = Vec::new();
    for (i, node) in p.nodes.iter().enumerate() {
        let last = last_state(store, &p.name, &node.name);
        let st = match input_hashes(p, i, datasets, &artifacts) {
            Err(upstream) => {
                let state = if last.is_some() { Status::Stale } else { Status::NeverRun };
                let up_state = out
                    .iter()
                    .find(|s| s.stage == upstream)
                    .map(|s| s.state.as_str())
                    .unwrap_or("unknown");
                NodeStatus {
                    stage: node.name.clone(),
                    state,
                    reason: format!("upstream `{upstream}` is {up_state}"),
                    fingerprint: None,
                    artifact: None,
                    material: None,
                }
            }
            Ok(hashes) => {
                let m = material(node, &hashes, p.seed);
                let fp = fingerprint(&m);
                match store.lookup(&fp) {
                    Some(e) => {
                        artifacts[i] = Some(e.artifact.clone());
                        NodeStatus {
                            stage: node.name.clone(),
                            state: Status::Cached,
                            reason: String::new(),
                            fingerprint: Some(fp),
                            artifact: Some(e.artifact),
                            material: Some(m),
                        }
                    }
                    None => {
                        let (state, reason) = match &last {
                            None => (Status::NeverRun, "no run of this stage is recorded".to_owned()),
                            Some(l) => (Status::Stale, explain(p, i, l, &m)),
                        };
                        NodeStatus {
                            stage: node.name.clone(),
                            state,
                            reason,
                            fingerprint: Some(fp),
                            artifact: None,
                            material: Some(m),
                        }
                    }
                }
            }
        };
        out.push(st);
    }
    out
}

/// Says what differs between the last recorded run of a stage and now.
fn explain(p: &Pipeline, i: usize, last: &LastState, now: &Value) -> String {
    let before = &last.material;
    let mut why = Vec::new();
    if before["kind"] != now["kind"] {
        why.push(format!("kind changed from {} to {}", before["kind"], now["kind"]));
    } else if before["version"] != now["version"] {
        why.push(format!("kind version changed from {} to {}", before["version"], now["version"]));
    }
    let empty = serde_json::Map::new();
    let (bp, np) = (
        before["params"].as_object().unwrap_or(&empty),
        now["params"].as_object().unwrap_or(&empty),
    );
    for (k, v) in np {
        match bp.get(k) {
            Some(old) if old == v => {}
            Some(old) => why.push(format!("param {k}: {old} -> {v}")),
            None => why.push(format!("param {k} is new ({v})")),
        }
    }
    for k in bp.keys().filter(|k| !np.contains_key(*k)) {
        why.push(format!("param {k} was removed"));
    }
    if before["seed"] != now["seed"] {
        why.push(format!("seed: {} -> {}", before["seed"], now["seed"]));
    }
    let (bi, ni) = (
        before["inputs"].as_object().unwrap_or(&empty),
        now["inputs"].as_object().unwrap_or(&empty),
    );
    for (k, v) in ni {
        if bi.get(k) != Some(v) {
            let from: Vec<String> = p.nodes[i]
                .inputs
                .get(k)
                .into_iter()
                .flatten()
                .map(|s| match s {
                    Source::Dataset(d) => format!("dataset `{d}`"),
                    Source::Stage(j) => format!("stage `{}`", p.nodes[*j].name),
                })
                .collect();
            why.push(format!("input `{k}` changed ({})", from.join(", ")));
        }
    }
    if why.is_empty() {
        why.push("its artifact is no longer in the cache (removed by gc or set aside by verify)".into());
    }
    why.join("; ")
}
