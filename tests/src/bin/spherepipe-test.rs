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

/// Holds `mib` MiB (every page touched) for `hold_ms`, then writes `ok`: a stage whose memory
/// a cluster's limit can catch.
struct Hog;
impl Stage for Hog {
    fn kind(&self) -> &'static str {
        "hog"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("mib", ParamType::int_range(1, 4096), 64, "MiB to hold"),
            ParamSpec::new("hold_ms", ParamType::int_range(0, 60_000), 4000, "how long to hold it"),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let mib = ctx.params.i64("mib")? as usize;
        let held: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
        ctx.progress.message(&format!("holding {mib} MiB"));
        std::thread::sleep(std::time::Duration::from_millis(ctx.params.i64("hold_ms")? as u64));
        std::fs::write(
            ctx.out_dir.join("ok"),
            format!("{}\n", held.iter().step_by(4096).map(|&b| b as u64).sum::<u64>()),
        )?;
        Ok(())
    }
}

/// `count` steps of `delay_ms` each, its progress checkpointed in scratch after every step,
/// so that a stopped attempt's successor resumes (and says from where): a training in
/// miniature, for the retry tests.
struct Steps;
impl Stage for Steps {
    fn kind(&self) -> &'static str {
        "steps"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("count", ParamType::int_range(1, 100_000), 10, "steps"),
            ParamSpec::new("delay_ms", ParamType::int_range(0, 60_000), 100, "each step's time"),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let count = ctx.params.i64("count")? as u64;
        let delay = std::time::Duration::from_millis(ctx.params.i64("delay_ms")? as u64);
        let at = ctx.scratch.join("step");
        let start: u64 = std::fs::read_to_string(&at).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        ctx.progress.message(&format!("resumed at step {start}"));
        for step in start..count {
            ctx.cancel.check()?;
            std::thread::sleep(delay);
            std::fs::write(ctx.scratch.join("step.tmp"), format!("{}", step + 1))?;
            std::fs::rename(ctx.scratch.join("step.tmp"), &at)?;
        }
        std::fs::write(ctx.out_dir.join("steps.txt"), format!("{count}\n"))?;
        Ok(())
    }
}

fn lines(r: std::ops::Range<usize>) -> String {
    r.map(|i| format!("{i}\n")).collect()
}

fn main() -> std::process::ExitCode {
    let mut r = spherepipe_cli::default_registry();
    r.register(Fail)
        .register(Panic)
        .register(Chunks)
        .register(FigureKind)
        .register(Hog)
        .register(Steps);
    spherepipe_cli::main_with(r)
}
