//! One SphereFace model (trunk + classification head) and the SGD training step.

use crate::margin::{cross_entropy, logits, Lambda, Loss};
use crate::sphere::{Head, SphereConfig, SphereNet};
use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::TensorData;
use std::path::Path;

/// The network and its classifier, as one module (so one optimizer and one checkpoint).
#[derive(Module, Debug)]
pub struct SphereFace {
    pub net: SphereNet,
    pub fc6: Head,
}

impl SphereFace {
    pub fn new(cfg: &SphereConfig, classes: usize, loss: Loss, device: &Device) -> Result<Self> {
        Ok(SphereFace {
            net: cfg.init(device)?,
            fc6: Head::new(cfg.features, classes, matches!(loss, Loss::Softmax), device),
        })
    }
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub net: SphereConfig,
    pub classes: usize,
    pub loss: Loss,
    pub lambda: Lambda,
    pub lr: f64,
    /// Steps at which the learning rate is divided by 10.
    pub milestones: Vec<u64>,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl TrainConfig {
    /// Multistep learning rate at `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        self.lr * 0.1f64.powi(self.milestones.iter().filter(|&&m| step >= m).count() as i32)
    }
}

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub accuracy: f64,
    pub lambda: f64,
    pub lr: f64,
}

/// Model + optimizer on an autodiff device.
pub struct Trainer {
    pub cfg: TrainConfig,
    /// Always `Some` between calls; taken during the optimizer step, which consumes it.
    model: Option<SphereFace>,
    optim: ModuleOptimizer,
    pub step: u64,
    device: Device,
}

impl Trainer {
    /// A fresh model. Burn's initialisers draw from the device RNG, seeded here, so the same
    /// seed gives the same initial weights.
    pub fn new(cfg: TrainConfig, device: &Device, seed: u64) -> Result<Self> {
        let device = device.clone().autodiff();
        device.seed(seed);
        let model = SphereFace::new(&cfg.net, cfg.classes, cfg.loss, &device)?;
        let optim = SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum: cfg.momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .with_weight_decay(Some(WeightDecayConfig {
                penalty: cfg.weight_decay as f32,
            }))
            .init();
        Ok(Trainer {
            cfg,
            model: Some(model),
            optim,
            step: 0,
            device,
        })
    }

    pub fn model(&self) -> &SphereFace {
        self.model.as_ref().expect("model present between steps")
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One SGD step on a batch of normalised CHW images. Errors (and changes nothing) when the
    /// loss is not finite.
    pub fn train_step(&mut self, images: &[f32], labels: &[i64], height: usize, width: usize) -> Result<StepMetrics> {
        let b = labels.len();
        if images.len() != b * 3 * height * width {
            bail!("batch has {} values, expected {} x 3 x {height} x {width}", images.len(), b);
        }
        if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= self.cfg.classes) {
            bail!("label {bad} is outside 0..{}", self.cfg.classes);
        }
        let x = Tensor::<4>::from_data(TensorData::new(images.to_vec(), [b, 3, height, width]), &self.device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [b]), &self.device);
        let lambda = self.cfg.lambda.at(self.step);
        let model = self.model.take().context("a previous step failed midway")?;
        let feats = model.net.forward(x);
        let out = logits(
            self.cfg.loss,
            feats,
            model.fc6.weight.val(),
            model.fc6.bias.as_ref().map(|p| p.val()),
            y.clone(),
            lambda,
        );
        let loss = cross_entropy(out.clone(), y.clone());
        let loss_value: f64 = loss
            .clone()
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?[0];
        if !loss_value.is_finite() {
            self.model = Some(model);
            bail!("the loss is {loss_value} at step {}", self.step);
        }
        let pred = out.argmax(1).squeeze_dim::<1>(1);
        let correct: i64 = pred.equal(y.clone()).int().sum().into_scalar();
        let lr = self.cfg.lr_at(self.step);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optim.step(lr, model, grads));
        let m = StepMetrics {
            step: self.step,
            loss: loss_value,
            accuracy: correct as f64 / b as f64,
            lambda,
            lr,
        };
        self.step += 1;
        Ok(m)
    }

    /// FC1 features of a batch (no gradient tracking).
    pub fn features(&self, images: &[f32], batch: usize, height: usize, width: usize) -> Result<Vec<f32>> {
        let x = Tensor::<4>::from_data(
            TensorData::new(images.to_vec(), [batch, 3, height, width]),
            &self.device.clone().inner(),
        );
        let net = self.model().net.clone().valid();
        net.forward(x)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    }

    /// Writes weights (safetensors), optimizer state (burnpack) and the step.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        use burn::store::{ModuleSnapshot, SafetensorsStore};
        std::fs::create_dir_all(dir)?;
        let mut store = SafetensorsStore::from_file(dir.join("model.safetensors"));
        self.model()
            .save_into(&mut store)
            .map_err(|e| anyhow::anyhow!("saving weights: {e:?}"))?;
        self.optim
            .save(dir.join("optimizer.bpk"))
            .map_err(|e| anyhow::anyhow!("saving optimizer state: {e:?}"))?;
        std::fs::write(dir.join("step"), self.step.to_string())?;
        Ok(())
    }

    /// Restores a checkpoint written by [`save_checkpoint`](Self::save_checkpoint).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        use burn::store::{ModuleSnapshot, SafetensorsStore};
        let mut store = SafetensorsStore::from_file(dir.join("model.safetensors"));
        let model = self.model.as_mut().context("no model")?;
        let r = model
            .load_from(&mut store)
            .map_err(|e| anyhow::anyhow!("loading {}: {e:?}", dir.join("model.safetensors").display()))?;
        if !r.missing.is_empty() || !r.errors.is_empty() {
            bail!(
                "checkpoint {} does not fit the model: missing {:?}, errors {:?}",
                dir.display(),
                r.missing,
                r.errors
            );
        }
        let optim = std::mem::replace(&mut self.optim, SgdConfig::new().init());
        self.optim = optim
            .load(dir.join("optimizer.bpk"))
            .map_err(|e| anyhow::anyhow!("loading optimizer state: {e:?}"))?;
        self.step = std::fs::read_to_string(dir.join("step"))
            .context("reading the checkpoint step")?
            .trim()
            .parse()
            .context("checkpoint step is not a number")?;
        Ok(())
    }
}
