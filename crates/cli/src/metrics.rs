//! `spherepipe metrics`: one table comparing the headline numbers of a pipeline's results.
//!
//! Any stage whose artifact holds a `metrics.json` with a `headline` list of `[name, value]`
//! pairs (the `evaluate` kind writes one) gives a row; columns are the union of the names, in
//! order of first appearance. Rows are the pipeline's stages as resolved with `--set` (a
//! matrix gives one row per expansion: the paper's Table 3 from `ablation-m.yaml`); with
//! `--history`, also every other such artifact earlier runs of the pipeline recorded, labelled
//! with the run's `--set` overrides.

use serde_json::Value;
use spherepipe_engine::{records, NodeStatus, Status};
use spherepipe_store::Store;

pub use spherepipe_headline::{table, Row};

fn headline(store: &Store, artifact: &str) -> Option<Vec<(String, Value)>> {
    // Artifacts of other kinds have no headline; they make no row.
    spherepipe_headline::read(&store.artifact_dir(artifact).join("metrics.json"))
        .ok()
        .map(|h| h.0)
}

/// Rows for the current resolution, then (with `history`) earlier runs' other artifacts.
/// Also returns the stages with results that are not cached, with why.
pub fn rows(store: &Store, pipeline: &str, status: &[NodeStatus], sinks: &[String], history: bool) -> (Vec<Row>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut missing = Vec::new();
    for s in status {
        match (&s.state, &s.artifact) {
            (Status::Cached, Some(a)) => {
                if let Some(values) = headline(store, a) {
                    seen.insert(a.clone());
                    out.push(Row {
                        label: s.stage.clone(),
                        values,
                    });
                }
            }
            _ if sinks.contains(&s.stage) => missing.push((s.stage.clone(), s.reason())),
            _ => {}
        }
    }
    if history {
        for run in records::read_runs(store).iter().rev().filter(|r| r.pipeline == pipeline) {
            for st in &run.stages {
                let Some(a) = &st.artifact else { continue };
                if seen.contains(a) {
                    continue;
                }
                if let Some(values) = headline(store, a) {
                    seen.insert(a.clone());
                    let sets = if run.overrides.is_empty() {
                        String::new()
                    } else {
                        format!(" --set {}", run.overrides.join(" --set "))
                    };
                    out.push(Row {
                        label: format!("{} (run {}{sets})", st.stage, run.run_id),
                        values,
                    });
                }
            }
        }
    }
    (out, missing)
}
