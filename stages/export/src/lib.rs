//! `export`: a trained model out of spherepipe, cached and rebuilt like any stage.
//!
//! - `format: onnx` writes `model.onnx`: the feature network from the input image to FC1
//!   (`spherepipe-onnx`), with `metadata_props` saying what its input must be (channel order,
//!   normalisation, size, the alignment it was trained on), what it is (net, loss, margin) and
//!   which model it came from (the train artifact's hash).
//! - `format: safetensors` writes `model.safetensors` under the public PyTorch `sphere20a`
//!   names, as `train` stores it, so the same weights load in PyTorch.
//!
//! Both write `export.json`: the files, the input and output, and the metadata.

#![warn(missing_docs)]

use anyhow::Context;
use serde::{Deserialize, Serialize};
use spherepipe_model_card::{Contract, ModelCard};
use spherepipe_onnx::{Batch, ExportOptions};
use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Params, Stage, StageContext};
use std::path::Path;

/// The `export` stage kind.
pub struct Export;

impl Stage for Export {
    fn kind(&self) -> &'static str {
        "export"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn doc(&self) -> &'static str {
        "a trained model as ONNX (input to FC1, with deployment metadata) or safetensors (PyTorch sphere20a names)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "format",
                ParamType::Choice(&["onnx", "safetensors"]),
                "onnx",
                "onnx: model.onnx; safetensors: model.safetensors",
            ),
            ParamSpec::new("opset", ParamType::int_range(13, 21), 17, "the ONNX operator set"),
            ParamSpec::new(
                "batch",
                ParamType::Str,
                "dynamic",
                "the ONNX input's batch size: dynamic, or a number",
            ),
            ParamSpec::new(
                "preprocess",
                ParamType::Bool,
                false,
                "ONNX input as uint8 NHWC RGB pixels, normalised and reordered inside the graph (else float32 NCHW, as extract feeds it)",
            ),
            ParamSpec::new(
                "external_over",
                ParamType::int_range(1, 1 << 31),
                1i64 << 31,
                "bytes of weights above which they go to model.onnx.data (ONNX external data; protobuf stops at 2 GB)",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::one("model", "a train artifact (model.safetensors + model.json)"),
            InputSpec::one(
                "faces",
                "the align stage the model's faces came from, for the alignment in the metadata",
            )
            .optional(),
        ]
    }
    fn validate(&self, p: &Params) -> Result<(), spherepipe_stage::InvalidParams> {
        Settings::from_params(p)?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let s = Settings::from_params(ctx.params)?;
        let faces = ctx.inputs.many("faces").first().map(|p| p.as_path());
        let file = ctx.out_dir.join(if s.onnx { "model.onnx" } else { "model.safetensors" });
        let summary = export(ctx.inputs.one("model")?, faces, &s, &file, &[])?;
        summary.write(ctx.out_dir)?;
        ctx.progress.message(&format!("wrote {}", summary.files.join(", ")));
        Ok(())
    }
}

/// Exports the model of a train artifact `model_dir` to `file` (and, for ONNX with external
/// data, `<file name>.data` beside it); `extra` metadata goes after the standard keys.
pub fn export(model_dir: &Path, faces: Option<&Path>, s: &Settings, file: &Path, extra: &[(String, String)]) -> anyhow::Result<Exported> {
    let card = ModelCard::read(model_dir)?;
    let weights_file = model_dir.join("model.safetensors");
    let mut meta = metadata(&card, model_dir, faces, s)?;
    meta.extend_from_slice(extra);
    let files = if s.onnx {
        let weights = spherepipe_onnx::read_weights(&weights_file)?;
        let model =
            spherepipe_onnx::build(&card, &weights, &meta, &s.options).with_context(|| format!("exporting {}", weights_file.display()))?;
        let written = spherepipe_onnx::write(model, file, s.options.external_over)?;
        written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    } else {
        std::fs::copy(&weights_file, file).with_context(|| format!("copying {} to {}", weights_file.display(), file.display()))?;
        vec![file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()]
    };
    let [h, w] = card.net.input;
    let b = batch_dim(s.options.batch);
    Ok(Exported {
        files,
        input: if s.onnx && s.options.preprocess {
            Tensor::new("image", "uint8", &[b.clone(), h.to_string(), w.to_string(), "3".into()])
        } else {
            Tensor::new("input", "float32", &[b.clone(), "3".into(), h.to_string(), w.to_string()])
        },
        output: Tensor::new("embedding", "float32", &[b, card.net.features.to_string()]),
        metadata: meta.into_iter().collect(),
    })
}

fn batch_dim(b: Batch) -> String {
    match b {
        Batch::Dynamic => "batch".into(),
        Batch::Fixed(n) => n.to_string(),
    }
}

/// `export.json`: what an export wrote and how to feed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exported {
    /// The files, in the artifact.
    pub files: Vec<String>,
    /// The graph's input.
    pub input: Tensor,
    /// The graph's output.
    pub output: Tensor,
    /// The metadata written into the model (`metadata_props`).
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl Contract for Exported {
    const FILE: &'static str = "export.json";
    const WRITER: &'static str = "export";
    const BIND: &'static str = "bind to an export stage";
}

/// A named tensor's element type and shape (`batch` for a dynamic dimension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Its name in the graph.
    pub name: String,
    /// uint8 or float32.
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<String>,
}

impl Tensor {
    fn new(name: &str, dtype: &str, shape: &[String]) -> Tensor {
        Tensor {
            name: name.into(),
            dtype: dtype.into(),
            shape: shape.to_vec(),
        }
    }
}

/// `export`'s params, read once (also what `spherepipe export` builds from its flags).
pub struct Settings {
    /// ONNX (else safetensors).
    pub onnx: bool,
    /// How to write the ONNX graph.
    pub options: ExportOptions,
}

impl Settings {
    /// From the stage's resolved params.
    pub fn from_params(p: &Params) -> Result<Settings, spherepipe_stage::InvalidParams> {
        let text = p.str("batch")?;
        let batch = Batch::parse(text).ok_or_else(|| format!("`batch: {text}` must be `dynamic` or a number of images (1 or more)"))?;
        Ok(Settings {
            onnx: p.str("format")? == "onnx",
            options: ExportOptions {
                opset: p.i64("opset")?,
                batch,
                preprocess: p.bool("preprocess")?,
                external_over: p.i64("external_over")? as u64,
            },
        })
    }
}

/// What a consumer needs to feed the model and to know what it is, as `metadata_props`.
fn metadata(card: &ModelCard, model_dir: &Path, faces: Option<&Path>, s: &Settings) -> anyhow::Result<Vec<(String, String)>> {
    let [h, w] = card.net.input;
    let channels = serde_json::to_value(card.channels)?.as_str().unwrap_or("bgr").to_owned();
    let input = if s.options.preprocess {
        "uint8 NHWC, RGB pixels of the aligned face (the graph casts, reorders and normalises)".to_owned()
    } else {
        format!("float32 NCHW, colour planes in {channels} order, (x - 127.5) / 128")
    };
    let m = card.params.get("m").map(|v| v.to_string()).unwrap_or_default();
    let mut meta = vec![
        ("spherepipe.input".to_owned(), input),
        ("spherepipe.channel_order".to_owned(), channels),
        ("spherepipe.normalisation".to_owned(), "(x - 127.5) / 128".to_owned()),
        ("spherepipe.input_size".to_owned(), format!("{h}x{w} (height x width)")),
        ("spherepipe.patch".to_owned(), card.patch.to_string()),
        ("spherepipe.alignment".to_owned(), alignment(faces)?),
        (
            "spherepipe.net".to_owned(),
            format!("sphere{} width {} features {}", card.net.depth, card.net.width, card.net.features),
        ),
        ("spherepipe.loss".to_owned(), card.loss.clone()),
        ("spherepipe.margin_m".to_owned(), m),
        ("spherepipe.steps".to_owned(), card.steps.to_string()),
        (
            "spherepipe.model_artifact".to_owned(),
            model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        ),
        ("spherepipe.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ];
    meta.retain(|(_, v)| !v.is_empty());
    Ok(meta)
}

/// align's settings as its report gives them (the fit, the crop size), and the template.
fn alignment(faces: Option<&Path>) -> anyhow::Result<String> {
    let template = serde_json::to_string(&spherepipe_face_geometry::SPHEREFACE_REFERENCE)?;
    let Some(dir) = faces else {
        return Ok(format!(
            "5-point similarity onto the SphereFace template {template} in a 112x96 crop (align's default; bind `faces` to record the align stage's own settings)"
        ));
    };
    #[derive(Deserialize)]
    struct AlignReport {
        fit: String,
        reflective: bool,
        size: [usize; 2],
    }
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let r: AlignReport = serde_json::from_str(&text).with_context(|| format!("{}: bind `faces` to an align stage", path.display()))?;
    Ok(format!(
        "5-point similarity (fit {}, reflective {}) onto align's `reference` points (default: the SphereFace template {template}) in a {}x{} crop",
        r.fit, r.reflective, r.size[0], r.size[1]
    ))
}
