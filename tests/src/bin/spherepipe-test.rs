//! `spherepipe` with every shipped kind plus kinds that fail on purpose, for the end-to-end tests.

use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Stage, StageContext};

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

fn main() -> std::process::ExitCode {
    let mut r = spherepipe_cli::default_registry();
    r.register(Fail).register(Panic);
    spherepipe_cli::main_with(r)
}
