//! `compare`: the end of an ablation. Its `results` input takes every evaluation (a list input
//! receives all expansions of a matrix), and it writes one table of their headline numbers —
//! `table.md`, and `summary.txt`, which `spherepipe run` prints — plus `table.json`; and which
//! differences between them the folds carry (paired tests per set: `significance.json`, a
//! section of `table.md`, the significant ones in the summary).

#![warn(missing_docs)]

mod significance;

use anyhow::{bail, Context};
use spherepipe_headline::{markdown, read, table, Row};
use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Stage, StageContext};
use spherepipe_stage_evaluate::metrics::Metrics;

/// The `compare` stage kind.
pub struct Compare;

impl Stage for Compare {
    fn kind(&self) -> &'static str {
        "compare"
    }
    fn version(&self) -> &'static str {
        // 2: the paired tests (significance.json, a section of table.md and the summary).
        "2"
    }
    fn doc(&self) -> &'static str {
        "one comparison table of several evaluations (table.md; printed at the end of a run)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("title", ParamType::Str, "Comparison", "heading of table.md"),
            ParamSpec::new(
                "alpha",
                ParamType::float_range(0.0001, 0.5),
                0.05,
                "significance level: two methods are called different on a set when both paired tests give p under it",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::many("results", "evaluate stages (every expansion of a matrix)")]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        let mut methods = Vec::new();
        for (i, dir) in ctx.inputs.many("results").iter().enumerate() {
            let path = dir.join("metrics.json");
            let headline = read(&path).map_err(|e| anyhow::anyhow!("{e}: bind `results` to evaluate stages"))?;
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let metrics: Metrics =
                serde_json::from_str(&text).with_context(|| format!("{}: bind `results` to evaluate stages", path.display()))?;
            let label = match &metrics.model {
                Some(card) => format!("#{} {}", i + 1, spherepipe_stage_evaluate::report::loss_with_margin(card)),
                None => format!("#{}", i + 1),
            };
            rows.push(Row {
                label: format!("{}", i + 1),
                values: headline.0,
            });
            methods.push((label, metrics));
        }
        if rows.is_empty() {
            bail!("nothing to compare: bind `results` to evaluate stages");
        }
        let title = ctx.params.str("title")?;
        let alpha = ctx.params.f64("alpha")?;
        let pairs = significance::pairwise(&methods, alpha);
        std::fs::write(
            ctx.out_dir.join("table.md"),
            format!("# {title}\n\n{}\n{}", markdown(&rows, "#"), significance::markdown(&pairs, alpha)),
        )?;
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::Value::Object(r.values.iter().cloned().collect()))
            .collect();
        std::fs::write(ctx.out_dir.join("table.json"), serde_json::to_string_pretty(&json)?)?;
        std::fs::write(ctx.out_dir.join("significance.json"), serde_json::to_string_pretty(&pairs)?)?;
        std::fs::write(
            ctx.out_dir.join("summary.txt"),
            format!("{title}\n{}{}", table(&rows, "#"), significance::summary(&pairs)),
        )?;
        Ok(())
    }
}
