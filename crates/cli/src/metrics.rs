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

pub struct Row {
    pub label: String,
    pub values: Vec<(String, Value)>,
}

fn headline(store: &Store, artifact: &str) -> Option<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(store.artifact_dir(artifact).join("metrics.json")).ok()?;
    let m: Value = serde_json::from_str(&text).ok()?;
    m.get("headline")?
        .as_array()?
        .iter()
        .map(|p| Some((p.get(0)?.as_str()?.to_owned(), p.get(1)?.clone())))
        .collect()
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
            _ if sinks.contains(&s.stage) => missing.push((s.stage.clone(), s.reason.clone())),
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

fn cell(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if (0.0..=1.0).contains(&x) && n.is_f64() {
                format!("{:.2}%", 100.0 * x)
            } else if n.is_f64() {
                format!("{x:.4}")
            } else {
                n.to_string()
            }
        }
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// The table as aligned text.
pub fn table(rows: &[Row]) -> String {
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        for (k, _) in &r.values {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let mut grid: Vec<Vec<String>> = vec![std::iter::once("STAGE".to_owned()).chain(cols.iter().cloned()).collect()];
    for r in rows {
        let mut line = vec![r.label.clone()];
        for c in &cols {
            line.push(
                r.values
                    .iter()
                    .find(|(k, _)| k == c)
                    .map(|(_, v)| cell(v))
                    .unwrap_or_else(|| "–".into()),
            );
        }
        grid.push(line);
    }
    let widths: Vec<usize> = (0..=cols.len())
        .map(|i| grid.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for line in grid {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        s.push_str(cells.join("  ").trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_the_union_in_first_seen_order() {
        let rows = vec![
            Row {
                label: "evaluate@m=1".into(),
                values: vec![("model".into(), Value::from("m=1")), ("LFW".into(), Value::from(0.5))],
            },
            Row {
                label: "evaluate@m=4".into(),
                values: vec![
                    ("LFW".into(), Value::from(0.975)),
                    ("YTF".into(), Value::from(0.9)),
                    ("steps".into(), Value::from(200)),
                ],
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["STAGE", "model", "LFW", "YTF", "steps"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["evaluate@m=1", "m=1", "50.00%", "–", "–"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["evaluate@m=4", "–", "97.50%", "90.00%", "200"]
        );
    }
}
