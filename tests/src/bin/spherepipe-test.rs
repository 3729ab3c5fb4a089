//! `spherepipe` with every shipped kind plus kinds that fail on purpose, for the end-to-end tests.

use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Part, Stage, StageContext};

struct Fail;
impl Stage for Fail {
    fn kind(&self) -> &'static str {
        "fail"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec::new(
            "message",
            ParamType::Str,
            "deliberate failure",
            "the error to return",
        )]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::many("after", "anything").optional()]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        std::fs::write(ctx.out_dir.join("partial.txt"), "half-written")?;
        anyhow::bail!("{}", ctx.params.str("message")?)
    }
}

/// Writes the SVG its param gives as a figure the page shows: for the test that a figure
/// holding script (from a shared store) runs nothing in the page.
struct FigureKind;
impl Stage for FigureKind {
    fn kind(&self) -> &'static str {
        "figure"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec::new("svg", ParamType::Str, "<svg/>", "the figure's SVG text")]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![]
    }
    fn figures(&self) -> Vec<(&'static str, &'static str)> {
        vec![("figure.svg", "a figure from the store")]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        std::fs::write(ctx.out_dir.join("figure.svg"), ctx.params.str("svg")?)?;
        Ok(())
    }
}

struct Panic;
impl Stage for Panic {
    fn kind(&self) -> &'static str {
        "panic"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![]
    }
    fn run(&self, _: &StageContext<'_>) -> anyhow::Result<()> {
        let v: Vec<u8> = Vec::new();
        let i = v.len() + 3;
        let _ = v[i];
        Ok(())
    }
}

/// A splittable kind: the numbers 0..count, one per line, made in parts and gathered. Part
/// `SPHEREPIPE_TEST_FAIL_PART` fails (an environment variable, so that a rerun without it has
/// the same fingerprint): a part that fails on one attempt and not on the next.
struct Chunks;
impl Stage for Chunks {
    fn kind(&self) -> &'static str {
        "chunks"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec::new("count", ParamType::int_range(0, 100_000), 10, "how many numbers")]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let n = ctx.params.i64("count")? as usize;
        std::fs::write(ctx.out_dir.join("numbers.txt"), lines(0..n))?;
        Ok(())
    }
    fn splittable(&self) -> bool {
        true
    }
    fn run_part(&self, ctx: &StageContext<'_>, part: Part) -> anyhow::Result<()> {
        if std::env::var("SPHEREPIPE_TEST_FAIL_PART").ok() == Some(part.index.to_string()) {
            anyhow::bail!("part {part} fails on purpose");
        }
        let n = ctx.params.i64("count")? as usize;
        std::fs::write(ctx.out_dir.join("part.txt"), lines(part.range(n)))?;
        Ok(())
    }
    fn gather(&self, ctx: &StageContext<'_>, parts: &[std::path::PathBuf]) -> anyhow::Result<()> {
        let mut all = String::new();
        for p in parts {
            all.push_str(&std::fs::read_to_string(p.join("part.txt"))?);
        }
        std::fs::write(ctx.out_dir.join("numbers.txt"), all)?;
        Ok(())
    }
}

fn lines(r: std::ops::Range<usize>) -> String {
    r.map(|i| format!("{i}\n")).collect()
}

fn main() -> std::process::ExitCode {
    let mut r = spherepipe_cli::default_registry();
    r.register(Fail).register(Panic).register(Chunks).register(FigureKind);
    spherepipe_cli::main_with(r)
}
