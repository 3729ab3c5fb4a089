//! Small, real stage kinds for the engine's tests and the starter pipeline. Each does genuine
//! (if tiny) work on text files, so caching, early cutoff and matrix fan-in can be observed.

#![warn(missing_docs)]

use anyhow::{bail, Context};
use rayon::prelude::*;
use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Params, Registry, Stage, StageContext};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Registers every toy kind.
pub fn register(r: &mut Registry) {
    r.register(Numbers).register(Scale).register(Sum).register(WordCount);
}

fn read_numbers(dir: &Path) -> anyhow::Result<Vec<f64>> {
    let path = dir.join("numbers.txt");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            l.trim()
                .parse::<f64>()
                .with_context(|| format!("{}:{}: `{l}` is not a number", path.display(), i + 1))
        })
        .collect()
}

/// `numbers`: `count` pseudo-random integers in [0, 1000) drawn from the pipeline seed,
/// one per line in `numbers.txt`.
pub struct Numbers;
impl Stage for Numbers {
    fn kind(&self) -> &'static str {
        "numbers"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn doc(&self) -> &'static str {
        "writes `count` seeded pseudo-random integers to numbers.txt"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "count",
                ParamType::Int {
                    min: Some(0),
                    max: Some(100_000_000),
                },
                10,
                "how many numbers",
            ),
            ParamSpec::new(
                "delay_ms",
                ParamType::int_range(0, 60_000),
                0,
                "pause after each line (to watch progress or interrupt a run)",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![]
    }
    fn uses_seed(&self) -> bool {
        true
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let count = ctx.params.i64("count")? as u64;
        let delay = std::time::Duration::from_millis(ctx.params.i64("delay_ms")? as u64);
        ctx.progress.set_length(count);
        let mut rng = spherepipe_rng::Rng::new(ctx.seed);
        let mut f = fs::File::create(ctx.out_dir.join("numbers.txt"))?;
        for _ in 0..count {
            ctx.cancel.check()?;
            writeln!(f, "{}", rng.next_u64() % 1000)?;
            if !delay.is_zero() {
                f.flush()?;
                std::thread::sleep(delay);
            }
            ctx.progress.inc(1);
        }
        Ok(())
    }
}

/// `scale`: multiplies every number by `factor` and caps it at `clamp_max`.
pub struct Scale;
impl Stage for Scale {
    fn kind(&self) -> &'static str {
        "scale"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn doc(&self) -> &'static str {
        "numbers.txt -> numbers.txt, each min(x * factor, clamp_max)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("factor", ParamType::float(), 2.0, "multiplier"),
            ParamSpec::new("clamp_max", ParamType::float(), 1.0e9, "upper bound on the results"),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::one("numbers", "a stage that wrote numbers.txt")]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let (factor, cap) = (ctx.params.f64("factor")?, ctx.params.f64("clamp_max")?);
        let xs = read_numbers(ctx.inputs.one("numbers")?)?;
        let out: String = xs.iter().map(|x| format!("{}\n", (x * factor).min(cap))).collect();
        fs::write(ctx.out_dir.join("numbers.txt"), out)?;
        Ok(())
    }
}

/// `sum`: adds up the numbers of every input artifact (fan-in over matrix expansions).
pub struct Sum;
impl Stage for Sum {
    fn kind(&self) -> &'static str {
        "sum"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn doc(&self) -> &'static str {
        "total.txt = sum of numbers.txt over all `parts`"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::many("parts", "stages that wrote numbers.txt")]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let mut total = 0.0;
        for dir in ctx.inputs.many("parts") {
            total += read_numbers(dir)?.iter().sum::<f64>();
        }
        fs::write(ctx.out_dir.join("total.txt"), format!("{total}\n"))?;
        Ok(())
    }
}

/// `wordcount`: counts words in every `.txt` file of a directory, in parallel.
pub struct WordCount;
impl Stage for WordCount {
    fn kind(&self) -> &'static str {
        "wordcount"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn doc(&self) -> &'static str {
        "counts.tsv: word -> occurrences over the *.txt files of `text`"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("lowercase", ParamType::Bool, true, "fold case before counting"),
            ParamSpec::new("min_count", ParamType::Int { min: Some(1), max: None }, 1, "omit rarer words"),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::one("text", "a directory of .txt files")]
    }
    fn validate(&self, p: &Params) -> Result<(), spherepipe_stage::InvalidParams> {
        p.i64("min_count")?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let dir = ctx.inputs.one("text")?;
        let lower = ctx.params.bool("lowercase")?;
        let min = ctx.params.i64("min_count")? as u64;
        let mut files: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{} holds no .txt files; point `text` at a directory of text files", dir.display());
        }
        ctx.progress.set_length(files.len() as u64);
        let counts = files
            .par_iter()
            .map(|p| {
                ctx.cancel.check()?;
                let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                let mut m = std::collections::BTreeMap::<String, u64>::new();
                for w in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                    *m.entry(if lower { w.to_lowercase() } else { w.to_owned() }).or_default() += 1;
                }
                ctx.progress.inc(1);
                Ok(m)
            })
            .try_reduce(Default::default, |mut a, b| {
                for (k, v) in b {
                    *a.entry(k).or_default() += v;
                }
                Ok::<_, anyhow::Error>(a)
            })?;
        let out: String = counts
            .iter()
            .filter(|(_, &c)| c >= min)
            .map(|(w, c)| format!("{w}\t{c}\n"))
            .collect();
        fs::write(ctx.out_dir.join("counts.tsv"), out)?;
        Ok(())
    }
}
