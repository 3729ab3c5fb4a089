//! The train stage's params, read once into a typed struct that both `validate` (when the
//! pipeline file loads) and `run` use, so a value is interpreted in one place only.

use anyhow::{bail, Context};
use spherepipe_face_loader::{Channels, Patch};
use spherepipe_nn::devices::DeviceSpec;
use spherepipe_nn::margin::{Lambda, Loss};
use spherepipe_nn::sphere::SphereConfig;
use spherepipe_nn::train::TrainConfig;
use spherepipe_stage::Params;

/// The loss names the `loss` param accepts.
pub const LOSSES: [&str; 5] = ["softmax", "modified-softmax", "a-softmax", "cosface", "arcface"];

/// Every param of a train stage, typed.
#[derive(Debug, Clone)]
pub struct TrainParams {
    /// SphereFace depth (4, 10, 20, 36, 64).
    pub depth: usize,
    /// Channel multiplier.
    pub width: f64,
    /// FC1 size.
    pub features: usize,
    /// The classification loss with its settings.
    pub loss: Loss,
    /// The loss's name as written (for model.json).
    pub loss_name: String,
    /// λ annealing of A-Softmax.
    pub lambda: Lambda,
    /// Base learning rate.
    pub lr: f64,
    /// Steps where the learning rate is divided by 10.
    pub milestones: Vec<u64>,
    /// Training steps (0: keep the `init` weights).
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Equal slices each batch is cut into (see `TrainConfig::slices`).
    pub slices: usize,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Probability of mirroring each training image.
    pub random_flip: f64,
    /// Rows held for shuffling.
    pub shuffle_buffer: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// The `patch` param as written (null or `{name, box}`), its box's shape checked.
    pub patch: serde_json::Value,
    /// Colour order fed to the network.
    pub channels: Channels,
    /// Device name (`cpu`, `cuda`, `wgpu`, `auto`).
    pub device: String,
    /// The devices of that backend that share the slices.
    pub devices: DeviceSpec,
}

impl TrainParams {
    /// Reads and checks every param; the errors name the param and the fix.
    pub fn from_params(p: &Params) -> anyhow::Result<TrainParams> {
        let loss_name = p.str("loss")?.to_owned();
        let loss = loss_named(&loss_name, p)?;
        if matches!(loss, Loss::ArcFace { m, .. } if m > 1.5) {
            bail!("arcface margin above 1.5 rad makes θ + m wrap past π; use about 0.5");
        }
        let patch = p.raw("patch")?.clone();
        // The box is checked against the face size when the shards are read; its shape now.
        Patch::parse_box(&patch).map_err(anyhow::Error::msg)?;
        let net = p.str("net")?;
        let (batch, slices) = (p.i64("batch")? as usize, p.i64("slices")? as usize);
        if !batch.is_multiple_of(slices) {
            bail!(
                "param `batch`: {batch} images do not cut into {slices} equal slices; use a batch that is a multiple of {slices} ({} or {}), or other `slices`",
                batch / slices * slices,
                batch.div_ceil(slices) * slices
            );
        }
        let device = p.str("device")?.to_owned();
        let devices = DeviceSpec::parse(p.raw("devices")?, &device)?;
        if let Some(n) = devices.known_count().filter(|n| !slices.is_multiple_of(*n)) {
            bail!("{}", uneven(n, slices));
        }
        Ok(TrainParams {
            depth: net
                .trim_start_matches("sphere")
                .parse()
                .with_context(|| format!("param `net`: `{net}` is not sphere<depth>"))?,
            width: p.f64("width")?,
            features: p.i64("features")? as usize,
            loss,
            loss_name,
            lambda: Lambda {
                base: p.f64("lambda_base")?,
                gamma: p.f64("lambda_gamma")?,
                power: p.f64("lambda_power")?,
                min: p.f64("lambda_min")?,
            },
            lr: p.f64("lr")?,
            milestones: p.get("milestones")?,
            steps: p.i64("steps")? as u64,
            batch,
            slices,
            momentum: p.f64("momentum")?,
            weight_decay: p.f64("weight_decay")?,
            random_flip: p.f64("random_flip")?,
            shuffle_buffer: p.i64("shuffle_buffer")? as usize,
            checkpoint_every: p.i64("checkpoint_every")? as u64,
            patch,
            channels: Channels::named(p.str("channels")?).context("param `channels`: use bgr or rgb")?,
            device,
            devices,
        })
    }

    /// The trainer's settings for faces of size `input` and `classes` identities.
    pub fn config(&self, input: [usize; 2], classes: usize) -> TrainConfig {
        TrainConfig {
            net: SphereConfig {
                depth: self.depth,
                width: self.width,
                features: self.features,
                input,
            },
            classes,
            loss: self.loss,
            lambda: self.lambda,
            lr: self.lr,
            milestones: self.milestones.clone(),
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            slices: self.slices,
        }
    }
}

/// Why `n` devices cannot train with `slices` slices, and the fix.
pub(crate) fn uneven(n: usize, slices: usize) -> String {
    format!(
        "param `devices`: {n} devices cannot share {slices} slice(s) evenly; set `slices: {n}` (or a multiple of {n}) — `slices` decides the result and enters the fingerprint, the device count only decides the speed"
    )
}

/// The loss called `name`, with its settings from the params; an unknown name is an error,
/// never a fallback to another loss.
pub fn loss_named(name: &str, p: &Params) -> anyhow::Result<Loss> {
    Ok(match name {
        "softmax" => Loss::Softmax,
        "modified-softmax" => Loss::ModifiedSoftmax,
        "a-softmax" => Loss::ASoftmax { m: p.i64("m")? as u32 },
        "cosface" => Loss::CosFace {
            s: p.f64("scale")?,
            m: p.f64("margin")?,
        },
        "arcface" => Loss::ArcFace {
            s: p.f64("scale")?,
            m: p.f64("margin")?,
        },
        other => bail!("param `loss`: unknown loss `{other}` (use one of {})", LOSSES.join(", ")),
    })
}
