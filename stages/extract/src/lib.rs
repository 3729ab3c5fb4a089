//! `extract`: for every face of an aligned test set, the FC1 features of the face and of its
//! horizontal mirror, concatenated (paper Sec. 4.1: 1024 values for FC1 = 512), written as
//! `features.parquet` (see `spherepipe_face_table::features`), streamed: memory stays at one
//! batch of faces whatever the set's size. With a `patch`, faces are cropped
//! to it first, as the model being used was trained (3-patch ensemble), and fed in the colour
//! order it was trained on (its `model.json` says which). With `devkit: true`,
//! also one MegaFace devkit feature file per image under `devkit/`.

#![warn(missing_docs)]

use anyhow::{bail, Context};
use rayon::prelude::*;
use spherepipe_face_loader::{decode_patch, Channels, Patch};
use spherepipe_face_table::features::{FeatureMeta, FeatureReader, FeatureWriter, Features};
use spherepipe_face_table::for_each_row_batch;
use spherepipe_face_table::FaceRow;
use spherepipe_model_card::ModelCard;
use spherepipe_nn::devices::DeviceSpec;
use spherepipe_nn::sphere::SphereConfig;
use spherepipe_nn::train::Trainer;
use spherepipe_stage::{Contract, InputSpec, ParamSpec, ParamType, Part, Resources, Stage, StageContext};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `extract` stage kind.
pub struct Extract;

/// A MegaFace devkit feature file (the devkit's `matio` layout, as OpenCV writes a `Mat`): four
/// little-endian int32 — rows (the feature length), cols (1), the element size (4) and the
/// OpenCV type (5 = CV_32F) — then the float32 values.
pub fn write_devkit_feature(path: &Path, feature: &[f32]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut out = Vec::with_capacity(16 + 4 * feature.len());
    for v in [feature.len() as i32, 1, 4, 5] {
        out.extend(v.to_le_bytes());
    }
    for v in feature {
        out.extend(v.to_le_bytes());
    }
    std::fs::File::create(path)?.write_all(&out)
}

/// The colour order to feed: the model's own unless the `channels` param names one.
/// The params, read and checked once (for `validate` and for `run`, `run_part`, `gather`).
struct ExtractParams {
    /// The crop box param (`null`: the model's own patch).
    patch: serde_json::Value,
    /// Faces per forward pass.
    batch: usize,
    /// Where devkit files go and their suffix, when asked for.
    devkit_suffix: Option<String>,
    /// `model`, `bgr` or `rgb`.
    channels: String,
    /// The backend.
    device: String,
    /// Its devices.
    devices: DeviceSpec,
}

impl ExtractParams {
    fn from_params(p: &spherepipe_stage::Params) -> anyhow::Result<ExtractParams> {
        let patch = p.raw("patch")?.clone();
        Patch::parse_box(&patch).map_err(anyhow::Error::msg)?;
        let suffix = p.str("devkit_suffix")?;
        if suffix.is_empty() || suffix.contains('/') {
            bail!("devkit_suffix must be a non-empty name without `/`");
        }
        let device = p.str("device")?.to_owned();
        Ok(ExtractParams {
            devices: DeviceSpec::parse(p.raw("devices")?, &device)?,
            patch,
            batch: p.i64("batch")? as usize,
            devkit_suffix: p.bool("devkit")?.then(|| suffix.to_owned()),
            channels: p.str("channels")?.to_owned(),
            device,
        })
    }
}

fn channels_for(param: &str, card: &ModelCard) -> anyhow::Result<Channels> {
    if param == "model" {
        return Ok(card.channels);
    }
    Channels::named(param).with_context(|| format!("param `channels`: unknown order `{param}` (use model, bgr or rgb)"))
}

impl Stage for Extract {
    fn kind(&self) -> &'static str {
        "extract"
    }
    fn version(&self) -> &'static str {
        // 2: faces fed in the model's colour order (BGR by default) instead of always RGB. 3: on
        // the CPU, the convolutions are spherepipe-nn's (other orders of additions, other bits).
        // 4: their matrix products, and FC1's, are spherepipe-nn's own (`products.rs`). 5: the
        // stride-1 convolutions run as Winograd F(4×4) (`winograd4.rs`). 6: images under 8
        // pixels a side (the 7 × 6 stage) go back to F(2×2).
        // The CPU's vector level too: burn-flex's sums run in another order at another width.
        spherepipe_nn::cpu_version!("6")
    }
    fn doc(&self) -> &'static str {
        "FC1 features of each face and its mirror, concatenated (features.parquet; MegaFace devkit files on request)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "patch",
                ParamType::Any,
                serde_json::Value::Null,
                "crop box {name, box: [x, y, w, h]}; null = the patch the model was trained on",
            ),
            ParamSpec::new(
                "batch",
                ParamType::int_range(1, 4096),
                64,
                "faces per forward pass (each with its mirror)",
            ),
            ParamSpec::new(
                "devkit",
                ParamType::Bool,
                false,
                "also write MegaFace devkit feature files under devkit/",
            ),
            ParamSpec::new(
                "devkit_suffix",
                ParamType::Str,
                "spherepipe",
                "devkit file name: <image path>_<suffix>.bin",
            ),
            ParamSpec::new(
                "channels",
                ParamType::Choice(&["model", "bgr", "rgb"]),
                "model",
                "colour order fed to the network: model = the order in the model's model.json (what it was trained on); bgr or rgb overrides it",
            ),
            ParamSpec::new(
                "device",
                ParamType::Choice(&spherepipe_nn::DEVICE_NAMES),
                "cpu",
                "cpu (default), cuda, wgpu, auto",
            ),
            ParamSpec::new(
                "devices",
                ParamType::Any,
                1,
                "devices of that backend, each computing whole batches in turn (the bytes are the same on any count): a count, auto (every GPU CUDA_VISIBLE_DEVICES lists) or a list such as [cuda:0, cuda:1]",
            )
            .execution_setting(),
        ]
    }
    fn resources(&self, p: &spherepipe_stage::Params) -> Resources {
        spherepipe_nn::devices::gpu_resources(p)
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::one("model", "a train artifact (model.safetensors + model.json)"),
            InputSpec::one("faces", "an align artifact (faces.parquet) of a test set"),
        ]
    }
    fn validate(&self, p: &spherepipe_stage::Params) -> Result<(), spherepipe_stage::InvalidParams> {
        ExtractParams::from_params(p)?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        extract(ctx, None)
    }
    /// Parts are contiguous runs of whole batches, so every face is fed in the same batch as
    /// in an unsplit run and gets the same bytes.
    fn splittable(&self) -> bool {
        true
    }
    fn run_part(&self, ctx: &StageContext<'_>, part: Part) -> anyhow::Result<()> {
        extract(ctx, Some(part))
    }
    /// Concatenates the parts' features in part order, written in the same batches as an
    /// unsplit run writes them (and the devkit files from them), so the bytes are the same.
    fn gather(&self, ctx: &StageContext<'_>, parts: &[PathBuf]) -> anyhow::Result<()> {
        let p = ExtractParams::from_params(ctx.params)?;
        let batch = p.batch;
        let Some(first) = parts.first() else { bail!("no parts to gather") };
        let mut summary = FeatureSummary::read(first)?;
        let dim = summary.dim;
        let devkit = devkit_dir(ctx, &p);
        let mut writer = FeatureWriter::create(&ctx.out_dir.join("features.parquet"), dim)?;
        for dir in parts {
            let mut reader = FeatureReader::open(&dir.join("features.parquet"))?;
            while let Some(f) = reader.next_rows(batch)? {
                ctx.cancel.check()?;
                if let Some((dir, suffix)) = &devkit {
                    write_devkit(dir, suffix, &f)?;
                }
                writer.write(&f)?;
            }
        }
        summary.faces = writer.finish()?;
        summary.devkit = devkit.is_some();
        summary.write(ctx.out_dir)?;
        Ok(())
    }
}

/// How the features are laid out in each row.
const LAYOUT: &str = "FC1(face) then FC1(mirror)";

/// `features.json`: what an extraction holds and how it was made.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSummary {
    /// The colour order the faces were fed in.
    pub channels: Channels,
    /// Whether devkit files were written.
    pub devkit: bool,
    /// Values per row (FC1 of the face, then of its mirror).
    pub dim: usize,
    /// Rows written.
    pub faces: usize,
    /// FC1's size.
    pub fc1: usize,
    /// [`LAYOUT`].
    pub layout: String,
    /// The model the features come from.
    pub model: ModelSummary,
    /// The crop box the faces were cut to, if any.
    pub patch: Option<[f64; 4]>,
}

/// The model part of [`FeatureSummary`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSummary {
    /// The colour order it was trained on.
    pub channels: Channels,
    /// Its classes.
    pub classes: usize,
    /// Its network.
    pub net: SphereConfig,
}

impl Contract for FeatureSummary {
    const FILE: &'static str = "features.json";
    const WRITER: &'static str = "extract";
    const BIND: &'static str = "bind `features` to an extract stage";

    /// With every object's keys sorted, nested ones included, as the file was written before it
    /// became a struct: the same bytes, so extract's artifacts (and version) stay as they were.
    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        spherepipe_stage::write_contract(dir, Self::FILE, &serde_json::to_value(self)?)
    }
}

/// Where devkit files go (and their suffix), when the stage writes them.
fn devkit_dir(ctx: &StageContext<'_>, p: &ExtractParams) -> Option<(PathBuf, String)> {
    p.devkit_suffix.clone().map(|suffix| (ctx.out_dir.join("devkit"), suffix))
}

/// The features of every face (or of part `part`'s batches), streamed batch by batch into
/// `features.parquet`, with `features.json`. A part writes no devkit files: the gather does.
fn extract(ctx: &StageContext<'_>, part: Option<Part>) -> anyhow::Result<()> {
    let p = ExtractParams::from_params(ctx.params)?;
    let faces = ctx.inputs.one("faces")?.join("faces.parquet");
    if !faces.is_file() {
        bail!("{} does not exist: bind `faces` to an align stage", faces.display());
    }
    let card = ModelCard::read(ctx.inputs.one("model")?)?;
    let extractor = Extractor::open(ctx, &p, &card)?;
    let devkit = if part.is_none() { devkit_dir(ctx, &p) } else { None };
    let batch = p.batch;
    let rows = spherepipe_face_table::row_count(&faces)?;
    let batches = part.map_or(0..rows.div_ceil(batch), |part| part.range(rows.div_ceil(batch)));
    ctx.progress
        .set_length((batches.end * batch).min(rows).saturating_sub(batches.start * batch) as u64);
    let dim = 2 * card.net.features;
    let mut writer = FeatureWriter::create(&ctx.out_dir.join("features.parquet"), dim)?;
    let mut k = 0;
    // One batch per device at a time, written in batch order.
    let mut round = Vec::new();
    let mut write_round = |round: &mut Vec<Vec<FaceRow>>| -> anyhow::Result<()> {
        for out in extractor.features_of(round)? {
            if let Some((dir, suffix)) = &devkit {
                write_devkit(dir, suffix, &out)?;
            }
            writer.write(&out)?;
            ctx.progress.inc(out.meta.len() as u64);
        }
        round.clear();
        Ok(())
    };
    for_each_row_batch(&faces, batch, |rows| {
        let mine = batches.contains(&k);
        k += 1;
        if !mine {
            return Ok(());
        }
        ctx.cancel.check()?;
        round.push(rows);
        if round.len() == extractor.models.len() {
            write_round(&mut round)?;
        }
        Ok(())
    })?;
    write_round(&mut round)?;
    let faces_done = writer.finish()?;
    let summary = FeatureSummary {
        channels: extractor.channels,
        devkit: devkit.is_some(),
        dim,
        faces: faces_done,
        fc1: card.net.features,
        layout: LAYOUT.to_owned(),
        model: ModelSummary {
            channels: card.channels,
            classes: card.classes,
            net: card.net,
        },
        patch: extractor.patch.map(|p| p.rect),
    };
    summary.write(ctx.out_dir)?;
    ctx.progress.message(&format!("{faces_done} faces, {dim} values each"));
    Ok(())
}

/// A model ready to turn faces into features, on each device: the network, the crop and the
/// colour order it was trained with (or that the params override).
struct Extractor {
    models: Vec<Trainer>,
    net: SphereConfig,
    patch: Option<Patch>,
    channels: Channels,
}

impl Extractor {
    fn open(ctx: &StageContext<'_>, p: &ExtractParams, card: &ModelCard) -> anyhow::Result<Extractor> {
        let channels = channels_for(&p.channels, card)?;
        if channels != card.channels {
            ctx.progress.message(&format!(
                "warning: the model was trained on {} input; feeding {} as the `channels` param asks",
                card.channels.name(),
                channels.name()
            ));
        }
        let devices = p.devices.resolve(&p.device)?;
        let weights = ctx.inputs.one("model")?.join("model.safetensors");
        let models = devices
            .iter()
            .map(|device| Trainer::for_features(card.net, card.classes, card.softmax_head, &weights, device))
            .collect::<anyhow::Result<_>>()?;
        let patch_param = if p.patch.is_null() { &card.patch } else { &p.patch };
        let patch = Patch::from_param(patch_param, card.net.input).map_err(|e| anyhow::anyhow!("param `patch`: {e}"))?;
        Ok(Extractor {
            models,
            net: card.net,
            patch,
            channels,
        })
    }

    /// The features of each batch, batch `i` on device `i`, all at once.
    fn features_of(&self, batches: &[Vec<FaceRow>]) -> anyhow::Result<Vec<Features>> {
        if let [rows] = batches {
            return Ok(vec![self.features(&self.models[0], rows)?]);
        }
        std::thread::scope(|scope| {
            let running: Vec<_> = batches
                .iter()
                .zip(&self.models)
                .map(|(rows, model)| scope.spawn(move || self.features(model, rows)))
                .collect();
            running
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a device's extraction thread panicked")))
                })
                .collect()
        })
    }

    /// FC1 of each face and of its mirror, computed in one forward pass (faces first).
    fn features(&self, model: &Trainer, rows: &[FaceRow]) -> anyhow::Result<Features> {
        let [h, w] = self.net.input;
        if let Some(r) = rows.iter().find(|r| r.height as usize != h || r.width as usize != w) {
            bail!(
                "{} is {}x{} but the model was trained on {h}x{w} faces: align the test set with the same `size` as training",
                r.source,
                r.height,
                r.width
            );
        }
        let decoded: anyhow::Result<Vec<Vec<f32>>> = [false, true]
            .iter()
            .flat_map(|&flip| rows.iter().map(move |r| (r, flip)))
            .collect::<Vec<_>>()
            .par_iter()
            .map(|(r, flip)| {
                decode_patch(&r.png, *flip, self.patch.as_ref(), self.channels)
                    .map(|d| d.0)
                    .with_context(|| format!("decoding {}", r.source))
            })
            .collect();
        let n = rows.len();
        let f = model.features(&decoded?.concat(), 2 * n, h, w)?;
        let k = self.net.features;
        let mut out = Features {
            dim: 2 * k,
            ..Default::default()
        };
        for (i, r) in rows.iter().enumerate() {
            let (face, mirror) = (&f[i * k..(i + 1) * k], &f[(n + i) * k..(n + i + 1) * k]);
            if face.iter().chain(mirror).any(|v| !v.is_finite()) {
                bail!("the features of {} are not finite: the model weights are broken", r.source);
            }
            out.values.extend_from_slice(face);
            out.values.extend_from_slice(mirror);
            out.meta.push(FeatureMeta {
                source: r.source.clone(),
                identity: r.identity.clone(),
                dataset: r.dataset.clone(),
                video: r.video.clone(),
            });
        }
        Ok(out)
    }
}

/// One devkit file per face, `dir/<image path>_<suffix>.bin`.
fn write_devkit(dir: &Path, suffix: &str, out: &Features) -> anyhow::Result<()> {
    for (i, m) in out.meta.iter().enumerate() {
        if m.source.split('/').any(|c| c == ".." || c.is_empty()) {
            bail!("image path {} cannot name a devkit file", m.source);
        }
        write_devkit_feature(&dir.join(format!("{}_{suffix}.bin", m.source)), out.row(i))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_json_has_the_bytes_it_had_as_untyped_json_and_reads_back() {
        let net = SphereConfig::new(20);
        let summary = FeatureSummary {
            channels: Channels::Bgr,
            devkit: true,
            dim: 1024,
            faces: 7,
            fc1: 512,
            layout: LAYOUT.to_owned(),
            model: ModelSummary {
                channels: Channels::Rgb,
                classes: 10,
                net,
            },
            patch: Some([0.0, 20.0, 96.0, 48.5]),
        };
        // What the stage wrote before features.json was a struct.
        let before = serde_json::json!({
            "faces": 7,
            "dim": 1024,
            "fc1": 512,
            "layout": "FC1(face) then FC1(mirror)",
            "patch": [0.0, 20.0, 96.0, 48.5],
            "channels": Channels::Bgr,
            "model": {"net": net, "classes": 10, "channels": Channels::Rgb},
            "devkit": true,
        });
        let d = tempfile::tempdir().unwrap();
        summary.write(d.path()).unwrap();
        let written = std::fs::read_to_string(d.path().join("features.json")).unwrap();
        assert_eq!(written, serde_json::to_string_pretty(&before).unwrap());
        let back = FeatureSummary::read(d.path()).unwrap();
        assert_eq!((back.dim, back.faces, back.model.net, back.patch), (1024, 7, net, summary.patch));
    }

    #[test]
    fn devkit_files_have_the_opencv_mat_header() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b.jpg_x.bin");
        write_devkit_feature(&p, &[1.5, -2.0, 0.25]).unwrap();
        let b = std::fs::read(&p).unwrap();
        let ints: Vec<i32> = b[..16].chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(ints, [3, 1, 4, 5]);
        let vals: Vec<f32> = b[16..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(vals, [1.5, -2.0, 0.25]);
    }
}
