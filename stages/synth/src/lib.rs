//! `synth`: the synthetic corpus as a pipeline stage, so the demo needs no downloaded data.

#![warn(missing_docs)]

mod insightface;

pub use insightface::PACK_DIR;
use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Params, Stage, StageContext};
use spherepipe_synthface::{generate, Preset, Sizes};

/// The `synth` stage kind.
pub struct Synth;

impl Stage for Synth {
    fn kind(&self) -> &'static str {
        "synth"
    }
    fn version(&self) -> &'static str {
        // 3: the hard presets draw distinct LFW/YTF pairs from larger test sets.
        "3"
    }
    fn doc(&self) -> &'static str {
        "synthetic faces in the CASIA-WebFace, LFW, YouTube Faces and MegaFace layouts"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "preset",
                ParamType::Choice(&Preset::NAMES),
                "demo",
                "corpus size: tiny (tests), demo (a few minutes end to end), bench",
            ),
            ParamSpec::new(
                "difficulty",
                ParamType::float_range(0.0, 1.0),
                0.8,
                "how much pose, light, blur, noise and occlusion vary",
            ),
            ParamSpec::new(
                "sizes",
                ParamType::Any,
                serde_json::json!({}),
                "overrides of the preset: casia_identities, casia_images [min, max], lfw_identities, lfw_images, pairs_per_fold, ytf_identities, ytf_videos, ytf_frames, ytf_pairs_per_split, facescrub_identities, facescrub_images, distractors, shared_identities",
            ),
            ParamSpec::new(
                "insightface",
                ParamType::Bool,
                false,
                "also write the corpus as insightface distributes data: CASIA as a RecordIO pack of 112x112 ArcFace-aligned JPEGs, LFW's pairs as lfw.bin, and stand-ins for CFP-FF, CFP-FP, VGG2-FP, CPLFW (pose) and AgeDB-30, CALFW (age), under insightface/faces_synth_112x112",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![]
    }
    fn uses_seed(&self) -> bool {
        true
    }
    fn validate(&self, p: &Params) -> Result<(), spherepipe_stage::InvalidParams> {
        let mut preset = Preset::named(p.str("preset")?).ok_or("unknown preset")?;
        let sizes: Sizes = p.get("sizes")?;
        sizes.apply(&mut preset)?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let name = ctx.params.str("preset")?;
        let mut preset = Preset::named(name).ok_or_else(|| anyhow::anyhow!("unknown preset `{name}`"))?;
        preset.difficulty = ctx.params.f64("difficulty")?;
        ctx.params.get::<Sizes>("sizes")?.apply(&mut preset)?;
        let tick = || ctx.progress.inc(1);
        ctx.progress.message(&format!("preset {name}"));
        let s = generate(ctx.out_dir, &preset, ctx.seed, &tick)?;
        ctx.cancel.check()?;
        if ctx.params.bool("insightface")? {
            ctx.progress.message("writing the insightface pack and lfw.bin");
            insightface::write_insightface(ctx.out_dir, ctx.seed)?;
        }
        ctx.progress.message(&format!(
            "{} training, {} LFW, {} YTF frames, {} MegaFace images",
            s.casia_images,
            s.lfw_images,
            s.ytf_frames,
            s.facescrub_images + s.distractor_images
        ));
        Ok(())
    }
}
