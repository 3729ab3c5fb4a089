//! `compare`: the end of an ablation. Its `results` input takes every evaluation (a list input
//! receives all expansions of a matrix), and it writes one table of their headline numbers —
//! `table.md`, and `summary.txt`, which `spherepipe run` prints — plus `table.json`.

#![warn(missing_docs)]

use anyhow::bail;
use spherepipe_headline::{markdown, read, table, Row};
use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Stage, StageContext};

/// The `compare` stage kind.
pub struct Compare;

impl Stage for Compare {
    fn kind(&self) -> &'static str {
        "compare"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn doc(&self) -> &'static str {
        "one comparison table of several evaluations (table.md; printed at the end of a run)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec::new("title", ParamType::Str, "Comparison", "heading of table.md")]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::many("results", "evaluate stages (every expansion of a matrix)")]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        for (i, dir) in ctx.inputs.many("results").iter().enumerate() {
            let headline = read(&dir.join("metrics.json")).map_err(|e| anyhow::anyhow!("{e}: bind `results` to evaluate stages"))?;
            rows.push(Row {
                label: format!("{}", i + 1),
                values: headline.0,
            });
        }
        if rows.is_empty() {
            bail!("nothing to compare: bind `results` to evaluate stages");
        }
        let title = ctx.params.str("title")?;
        std::fs::write(ctx.out_dir.join("table.md"), format!("# {title}\n\n{}", markdown(&rows, "#")))?;
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::Value::Object(r.values.iter().cloned().collect()))
            .collect();
        std::fs::write(ctx.out_dir.join("table.json"), serde_json::to_string_pretty(&json)?)?;
        std::fs::write(ctx.out_dir.join("summary.txt"), format!("{title}\n{}", table(&rows, "#")))?;
        Ok(())
    }
}
