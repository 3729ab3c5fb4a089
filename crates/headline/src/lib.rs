//! The headline convention. A stage that produces results writes, in its `metrics.json`, a
//! `headline` list of `[name, value]` pairs (what the model was, then its key numbers); any
//! set of such files lines up as one comparison table, columns in order of first appearance.
//! `spherepipe metrics` prints one across a pipeline's stages and runs; the `compare` stage
//! writes one into an artifact.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A result's key numbers, as `[name, value]` pairs: what the model was, then its figures.
/// Written into `metrics.json` by the stage that evaluates and read back through this type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Headline(pub Vec<(String, Value)>);

impl Headline {
    /// Appends one figure.
    pub fn push(&mut self, name: &str, value: Value) {
        self.0.push((name.to_owned(), value));
    }
}

/// The part of a `metrics.json` that other stages read (the rest is the evaluation's own).
#[derive(Deserialize)]
struct WithHeadline {
    headline: Headline,
}

/// Why a `metrics.json` gave no headline.
#[derive(Debug, thiserror::Error)]
pub enum HeadlineError {
    /// There is no such file.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// The file is not JSON with a `headline` list of `[name, value]` pairs.
    #[error("{path} has no `headline` list of [name, value] pairs ({why})")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the JSON reader said.
        why: String,
    },
}

/// A row of a comparison table: its label and its headline figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's label (a stage name, a run's `--set`, a number).
    pub label: String,
    /// The figures, in headline order.
    pub values: Vec<(String, Value)>,
}

/// The `headline` of a `metrics.json`.
pub fn read(metrics_json: &Path) -> Result<Headline, HeadlineError> {
    let text = std::fs::read_to_string(metrics_json).map_err(|_| HeadlineError::Missing(metrics_json.to_path_buf()))?;
    serde_json::from_str::<WithHeadline>(&text)
        .map(|m| m.headline)
        .map_err(|e| HeadlineError::Malformed {
            path: metrics_json.to_path_buf(),
            why: e.to_string(),
        })
}

/// One table cell: fractions in [0, 1] as percentages, other floats to 4 decimals, null as –.
pub fn cell(v: &Value) -> String {
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

/// The header and cells: `first` (over the row labels), then every headline name.
fn grid(rows: &[Row], first: &str) -> Vec<Vec<String>> {
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        for (k, _) in &r.values {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let mut grid: Vec<Vec<String>> = vec![std::iter::once(first.to_owned()).chain(cols.iter().cloned()).collect()];
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
    grid
}

/// The table as aligned text, `first` heading the labels' column.
pub fn table(rows: &[Row], first: &str) -> String {
    let grid = grid(rows, first);
    let n = grid.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
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

/// The table as markdown, `first` heading the labels' column.
pub fn markdown(rows: &[Row], first: &str) -> String {
    let grid = grid(rows, first);
    let mut s = String::new();
    for (i, line) in grid.iter().enumerate() {
        s.push_str(&format!("| {} |\n", line.join(" | ")));
        if i == 0 {
            s.push_str(&format!("|{}\n", " --- |".repeat(line.len())));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_headline_is_written_as_pairs_and_read_back_from_metrics_json() {
        let d = tempfile::tempdir().unwrap();
        let mut h = Headline::default();
        h.push("net", Value::from("sphere20 w1"));
        h.push("LFW", Value::from(0.9925));
        let file = d.path().join("metrics.json");
        let metrics = serde_json::json!({"lfw": {"accuracy": 0.9925}, "headline": h});
        assert_eq!(metrics["headline"], serde_json::json!([["net", "sphere20 w1"], ["LFW", 0.9925]]));
        std::fs::write(&file, metrics.to_string()).unwrap();
        assert_eq!(read(&file).unwrap(), h);
        std::fs::write(&file, r#"{"headline": [["LFW"]]}"#).unwrap();
        let e = read(&file).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{} has no `headline` list of [name, value] pairs (", file.display())),
            "{e}"
        );
        std::fs::write(&file, r#"{"lfw": {}}"#).unwrap();
        assert!(read(&file).unwrap_err().to_string().contains("missing field `headline`"));
        let gone = d.path().join("nothing.json");
        assert_eq!(read(&gone).unwrap_err().to_string(), format!("{} does not exist", gone.display()));
    }

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
        let t = table(&rows, "STAGE");
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
