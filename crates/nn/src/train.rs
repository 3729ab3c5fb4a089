//! One SphereFace model (trunk + classification head) and the SGD training step.

use crate::margin::{cross_entropy, logits, Lambda, Loss};
use crate::sgd::Sgd;
use crate::sphere::{Head, SphereConfig, SphereNet};
use anyhow::{bail, Context, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Gives every parameter its id and its initial values, both derived from its path in the
/// module tree.
///
/// Ids: burn's are random per process, and optimizer state is keyed by id; with path ids, a
/// checkpoint's momentum buffers find their parameters in a freshly built model.
///
/// Values: drawn from the project's own generator, one stream per parameter (seed, path),
/// rather than from the backend's RNG, which is process-wide and, with flex's parallel
/// kernels, not reproducible. So a seed gives the same initial weights on any backend, any
/// thread count, and when several trainings start at once. The distributions are the official
/// prototxt's: Xavier (uniform) for the stride-2 convolutions, FC1 and the class weights,
/// Gaussian(0, 0.01) for the convolutions inside residual units, zero biases, PReLU slopes 0.25.
struct SeededInit {
    seed: u64,
    path: Vec<String>,
}

/// FNV-1a over a parameter's dotted path: its draw's tag and its `ParamId`, the same on every
/// build.
fn path_hash(path: &str) -> u64 {
    path.bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl SeededInit {
    fn values(&self, path: &str, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let mut rng = spherepipe_rng::Rng::derive(self.seed, &[path_hash(path)]);
        let xavier = |fan_in: usize, fan_out: usize, rng: &mut spherepipe_rng::Rng| {
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
            (0..n).map(|_| rng.range(-bound, bound) as f32).collect()
        };
        if path.ends_with(".alpha") {
            vec![0.25; n]
        } else if path.ends_with(".bias") {
            vec![0.0; n]
        } else if path.ends_with("conv.weight") {
            // [out, in, kh, kw]
            let k = shape[2] * shape[3];
            if path.contains(".units.") {
                (0..n).map(|_| (0.01 * rng.normal()) as f32).collect()
            } else {
                xavier(shape[1] * k, shape[0] * k, &mut rng)
            }
        } else {
            // fc5 [in, out] and fc6 [features, classes].
            xavier(shape[0], shape[1], &mut rng)
        }
    }
}

impl burn::module::ModuleMapper for SeededInit {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
        let path = self.path.join(".");
        let id = path_hash(&path);
        let shape = param.lazy_shape().to_vec();
        let values = self.values(&path, &shape);
        let mut param = param.map(|t| {
            let device = t.device();
            let grad = t.is_require_grad();
            Tensor::<D>::from_data(TensorData::new(values, shape), &device).set_require_grad(grad)
        });
        param.id = burn::module::ParamId::from(id);
        param
    }
}

/// The network and its classifier, as one module (so one optimizer and one checkpoint).
#[derive(Module, Debug)]
pub struct SphereFace {
    /// The trunk up to FC1.
    pub net: SphereNet,
    /// The class weights.
    pub fc6: Head,
}

impl SphereFace {
    /// A zero network of shape `cfg` with a head for `classes` (a bias for plain softmax).
    pub fn new(cfg: &SphereConfig, classes: usize, loss: Loss, device: &Device) -> Result<Self> {
        Ok(SphereFace {
            net: SphereNet::zeroed(cfg, device)?,
            fc6: Head::new(cfg.features, classes, matches!(loss, Loss::Softmax), device),
        })
    }
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The network's shape.
    pub net: SphereConfig,
    /// Training identities.
    pub classes: usize,
    /// The loss and its margin.
    pub loss: Loss,
    /// A-Softmax's λ schedule.
    pub lambda: Lambda,
    /// The base learning rate.
    pub lr: f64,
    /// Steps at which the learning rate is divided by 10.
    pub milestones: Vec<u64>,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Equal slices each batch is cut into. Each slice runs forward and backward on its own;
    /// the batch's gradient is the mean of the slices' gradients, added up in slice order on
    /// the host. Devices share the slices, so the result is the same bits on any number of
    /// devices that divides `slices` (1: the whole batch at once, on one device).
    pub slices: usize,
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
    /// The step (0-based).
    pub step: u64,
    /// Mean loss over the batch.
    pub loss: f64,
    /// Fraction of the batch classified right.
    pub accuracy: f64,
    /// λ at this step.
    pub lambda: f64,
    /// The learning rate at this step.
    pub lr: f64,
}

/// Model + optimizer on an autodiff device.
pub struct Trainer {
    /// What defines the run.
    pub cfg: TrainConfig,
    /// Always `Some`: taken only for the optimizer step, which consumes it and returns the
    /// updated model, with nothing fallible in between.
    model: Option<SphereFace>,
    optim: ModuleOptimizer,
    /// Steps taken so far.
    pub step: u64,
    /// The model's device (autodiff): the optimizer steps here.
    device: Device,
    /// The devices that run the slices (autodiff), the model's first.
    workers: Vec<Device>,
}

impl Trainer {
    /// A fresh model, its weights drawn from `seed` (see [`SeededInit`]).
    pub fn new(cfg: TrainConfig, device: &Device, seed: u64) -> Result<Self> {
        let device = device.clone().autodiff();
        let model = SphereFace::new(&cfg.net, cfg.classes, cfg.loss, &device)?.map(&mut SeededInit { seed, path: Vec::new() });
        let optim = optimizer(&cfg);
        Ok(Trainer {
            cfg,
            model: Some(model),
            optim,
            step: 0,
            workers: vec![device.clone()],
            device,
        })
    }

    /// A model to extract features with: the network of `net` with the head a weights file of
    /// `classes` classes has (a bias only for plain softmax), loaded from `weights`.
    pub fn for_features(net: SphereConfig, classes: usize, softmax_head: bool, weights: &Path, device: &Device) -> Result<Self> {
        let cfg = TrainConfig {
            net,
            classes,
            loss: if softmax_head { Loss::Softmax } else { Loss::ModifiedSoftmax },
            lambda: Lambda::default(),
            lr: 0.0,
            milestones: Vec::new(),
            momentum: 0.0,
            weight_decay: 0.0,
            slices: 1,
        };
        let mut t = Trainer::new(cfg, device, 0)?;
        t.read_weights(weights, "model weights")?;
        Ok(t)
    }

    /// The model as it stands.
    pub fn model(&self) -> &SphereFace {
        self.model.as_ref().expect("model present between steps")
    }

    /// The device it trains on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Spreads each step's slices over `devices`, one thread per device, each with its own
    /// replica of the model; the model and the optimizer stay on the trainer's device. The
    /// count must divide `slices`; any such count gives the same result.
    pub fn spread_over(&mut self, devices: &[Device]) -> Result<()> {
        let (n, slices) = (devices.len(), self.cfg.slices);
        if n == 0 || !slices.is_multiple_of(n) {
            bail!(
                "{n} device(s) cannot share {slices} slice(s) evenly: set `slices` to a multiple of {n} (the result depends on `slices`, not on the device count)"
            );
        }
        self.workers = devices.iter().map(|d| d.clone().autodiff()).collect();
        Ok(())
    }

    /// How many devices run the slices.
    pub fn device_count(&self) -> usize {
        self.workers.len()
    }

    /// One SGD step on a batch of normalised CHW images. Errors (and changes nothing) when the
    /// loss is not finite.
    pub fn train_step(&mut self, images: &[f32], labels: &[i64], height: usize, width: usize) -> Result<StepMetrics> {
        let batch = Batch {
            images,
            labels,
            height,
            width,
        };
        self.check(&batch)?;
        let lambda = self.cfg.lambda.at(self.step);
        // The model stays in place while anything can fail; it leaves its slot only for the
        // optimizer step, which consumes it and hands the updated one back, infallibly.
        let model = self.model.as_ref().context("the trainer has no model")?;
        let step = StepInput {
            cfg: &self.cfg,
            lambda,
            step: self.step,
        };
        let (outcome, grads) = if self.cfg.slices == 1 && self.workers.len() == 1 {
            let (outcome, grads) = forward_backward(model, &self.device, &step, batch)?;
            (outcome, GradientsParams::from_grads(grads, model))
        } else {
            let reduced = sliced_gradients(model, &self.workers, &step, batch)?;
            let grads = reduced.totals.on_device(model, &self.device.clone().inner());
            (reduced.outcome, grads)
        };
        let lr = self.cfg.lr_at(self.step);
        if let Some(model) = self.model.take() {
            self.model = Some(self.optim.step(lr, model, grads));
        }
        let m = StepMetrics {
            step: self.step,
            loss: outcome.loss,
            accuracy: outcome.correct as f64 / labels.len() as f64,
            lambda,
            lr,
        };
        self.step += 1;
        Ok(m)
    }

    /// The batch's shape, labels and slicing, checked before any work.
    fn check(&self, batch: &Batch<'_>) -> Result<()> {
        let b = batch.labels.len();
        if batch.images.len() != b * 3 * batch.height * batch.width {
            bail!(
                "batch has {} values, expected {} x 3 x {} x {}",
                batch.images.len(),
                b,
                batch.height,
                batch.width
            );
        }
        if let Some(bad) = batch.labels.iter().find(|&&l| l < 0 || l as usize >= self.cfg.classes) {
            bail!("label {bad} is outside 0..{}", self.cfg.classes);
        }
        if !b.is_multiple_of(self.cfg.slices) {
            bail!("a batch of {b} does not cut into {} equal slices", self.cfg.slices);
        }
        Ok(())
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

    /// (burn path, file name) pairs of this model's parameters; see [`crate::names`].
    fn names(&self) -> Vec<(String, String)> {
        crate::names::parameter_names(&self.cfg.net, matches!(self.cfg.loss, Loss::Softmax))
    }

    /// A store that reads a weights file written under the `sphere20a` names.
    fn reading_store(&self, path: &Path) -> burn::store::SafetensorsStore {
        burn::store::SafetensorsStore::from_file(path)
            .remap(crate::names::from_file(&self.names()))
            .with_from_adapter(burn::store::PyTorchToBurnAdapter)
            .allow_partial(true)
            // Collect mismatches in the result (and name them all) rather than stop at the first.
            .validate(false)
    }

    /// Reads weights into the model; every tensor must be present with its shape, and the
    /// error names each one (by its file name) that is not.
    fn read_weights(&mut self, path: &Path, what: &str) -> Result<()> {
        use burn::store::{ApplyError, ModuleSnapshot};
        if !path.is_file() {
            bail!("{what} {} does not exist", path.display());
        }
        let names = self.names();
        let mut store = self.reading_store(path);
        let model = self.model.as_mut().context("no model")?;
        let r = model
            .load_from(&mut store)
            .map_err(|e| anyhow::anyhow!("reading {what} {}: {e}", path.display()))?;
        if r.missing.is_empty() && r.errors.is_empty() {
            // Safetensors carry no parameter ids, so the model keeps its path-derived ones.
            return Ok(());
        }
        let name = |p: &str| crate::names::file_name_of(&names, p);
        // fc5's weight is [in, out] inside burn and [out, in] in the file: say it the file's way.
        let shape = |p: &str, s: &burn::tensor::Shape| {
            let mut d = s.to_vec();
            if p == "net.fc5.weight" {
                d.reverse();
            }
            format!("{d:?}")
        };
        let mut lines: Vec<String> = r.missing.iter().map(|(p, _)| format!("  missing: {}", name(p))).collect();
        lines.extend(r.errors.iter().map(|e| match e {
            ApplyError::ShapeMismatch { path, expected, found } => format!(
                "  wrong shape: {} is {} in the file, the network needs {}",
                name(path),
                shape(path, found),
                shape(path, expected)
            ),
            other => format!("  {other}"),
        }));
        bail!(
            "{what} {} do not fit this network (SphereFace-{}, width {}, {} features, {} classes):\n{}",
            path.display(),
            self.cfg.net.depth,
            self.cfg.net.width,
            self.cfg.net.features,
            self.cfg.classes,
            lines.join("\n")
        )
    }

    /// Loads weights from a safetensors file (the `init` input), named as `sphere20a` names
    /// them (see [`crate::names`]), so the published converted SphereFace-20 loads.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        self.read_weights(path, "init weights")
    }

    /// Writes the weights as safetensors under the `sphere20a` names, fc5 as [out, in]: the
    /// file loads into PyTorch's `sphere20a` with `load_state_dict`.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        use burn::store::{ModuleSnapshot, SafetensorsStore};
        // One metadata entry only: burn keeps metadata in a hash map, so several entries would
        // be written in a different order each time and the artifact would not be reproducible.
        let mut store = SafetensorsStore::from_file(path)
            .clear_metadata()
            .metadata("producer", "spherepipe (burn 0.22.1)")
            .remap(crate::names::to_file(&self.names()))
            .with_to_adapter(burn::store::BurnToPyTorchAdapter);
        self.model()
            .save_into(&mut store)
            .map_err(|e| anyhow::anyhow!("saving weights to {}: {e}", path.display()))
    }

    /// Writes a checkpoint: weights (safetensors), optimizer state (burnpack, keyed by the
    /// path-derived parameter ids, so it matches a freshly built model) and the step.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        self.save_weights(&dir.join("model.safetensors"))?;
        self.optim
            .save(dir.join("optimizer.bpk"))
            .map_err(|e| anyhow::anyhow!("saving optimizer state: {e:?}"))?;
        std::fs::write(dir.join("step"), self.step.to_string())?;
        Ok(())
    }

    /// Restores a checkpoint written by [`save_checkpoint`](Self::save_checkpoint).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.read_weights(&dir.join("model.safetensors"), "checkpoint weights")?;
        let path = dir.join("optimizer.bpk");
        check_velocities(&path, self.model())?;
        self.optim = optimizer(&self.cfg)
            .load(&path)
            .map_err(|e| anyhow::anyhow!("loading optimizer state from {}: {e:?}", path.display()))?;
        self.step = std::fs::read_to_string(dir.join("step"))
            .context("reading the checkpoint step")?
            .trim()
            .parse()
            .context("checkpoint step is not a number")?;
        Ok(())
    }
}

/// SGD with the run's momentum and weight decay: one fused pass per parameter on the CPU, the
/// bits and the checkpoint format of burn's `Sgd` (see [`crate::sgd`]).
fn optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    ModuleOptimizer::from(Sgd {
        momentum: cfg.momentum as f32,
        decay: cfg.weight_decay as f32,
    })
}

/// Every velocity in the optimizer state at `path` has the shape and type of the model's
/// parameter it belongs to: a checkpoint is read from disk, and a mismatched buffer would
/// otherwise fail inside the next step, after the load had reported success.
fn check_velocities(path: &Path, model: &SphereFace) -> Result<()> {
    let damaged = |what: String| {
        anyhow::anyhow!(
            "{}: {what}; the checkpoint is damaged: delete its directory to start the stage over",
            path.display()
        )
    };
    let tensors = burn_pack::Reader::from_file_exact(path)
        .and_then(burn_pack::Reader::into_tensors)
        .map_err(|e| damaged(format!("not a readable optimizer state ({e})")))?;
    let shapes = param_shapes(model);
    for t in tensors {
        let Some(expected) = t.param_id.and_then(|id| shapes.get(&id)) else {
            continue;
        };
        if t.shape.as_slice() != expected.as_slice() || t.dtype != burn::tensor::DType::F32 {
            return Err(damaged(format!(
                "the optimizer state `{}` is {:?} of shape {:?}, its parameter f32 of shape {expected:?}",
                t.name,
                t.dtype,
                t.shape.as_slice()
            )));
        }
    }
    Ok(())
}

/// Each parameter's shape, by its id.
fn param_shapes(model: &SphereFace) -> BTreeMap<u64, Vec<usize>> {
    struct Shapes(BTreeMap<u64, Vec<usize>>);
    impl ModuleVisitor for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.insert(param.id.val(), param.shape().as_slice().to_vec());
        }
    }
    let mut shapes = Shapes(BTreeMap::new());
    model.visit(&mut shapes);
    shapes.0
}

/// A batch of normalised CHW images with their labels.
#[derive(Clone, Copy)]
struct Batch<'a> {
    images: &'a [f32],
    labels: &'a [i64],
    height: usize,
    width: usize,
}

impl<'a> Batch<'a> {
    /// Slice `k` of `of` equal slices, in batch order.
    fn slice(&self, k: usize, of: usize) -> Batch<'a> {
        let n = self.labels.len() / of;
        let values = 3 * self.height * self.width;
        Batch {
            images: &self.images[k * n * values..(k + 1) * n * values],
            labels: &self.labels[k * n..(k + 1) * n],
            ..*self
        }
    }
}

/// What every slice of a step shares.
struct StepInput<'a> {
    cfg: &'a TrainConfig,
    lambda: f64,
    step: u64,
}

/// The mean loss of a batch (or slice) and how many of its images were classified right.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    loss: f64,
    correct: i64,
}

/// Forward and backward of `model` on `batch`, on `device`. Errors before the backward pass
/// when the loss is not finite.
fn forward_backward(
    model: &SphereFace,
    device: &Device,
    step: &StepInput<'_>,
    batch: Batch<'_>,
) -> Result<(Outcome, burn::tensor::Gradients)> {
    let b = batch.labels.len();
    let x = Tensor::<4>::from_data(TensorData::new(batch.images.to_vec(), [b, 3, batch.height, batch.width]), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(batch.labels.to_vec(), [b]), device);
    let feats = model.net.forward(x);
    let out = logits(
        step.cfg.loss,
        feats,
        model.fc6.weight.val(),
        model.fc6.bias.as_ref().map(|p| p.val()),
        y.clone(),
        step.lambda,
    );
    let loss = cross_entropy(out.clone(), y.clone());
    let loss_value: f64 = loss
        .clone()
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?[0];
    if !loss_value.is_finite() {
        bail!("the loss is {loss_value} at step {}", step.step);
    }
    let pred = out.argmax(1).squeeze_dim::<1>(1);
    let correct: i64 = pred.equal(y).int().sum().into_scalar();
    Ok((Outcome { loss: loss_value, correct }, loss.backward()))
}

/// The gradient of a batch cut into `slices`, as the mean of the slices' gradients.
struct Reduced {
    outcome: Outcome,
    totals: HostGradients,
}

/// Runs the slices of `batch` on `workers` (slice k on worker k mod n, each worker a thread
/// with its own replica) and adds their results up in slice order as they come in.
///
/// burn's collective (`burn::tensor::distributed::all_reduce`) would keep the gradients on
/// the devices, but burn 0.22.1 has it only on its GPU backends (the CPU backend's is
/// `unimplemented!`), and its order of additions follows the device count; a host sum in
/// slice order works on every backend and gives the same bits on any number of devices.
fn sliced_gradients(model: &SphereFace, workers: &[Device], step: &StepInput<'_>, batch: Batch<'_>) -> Result<Reduced> {
    let slices = step.cfg.slices;
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for (w, device) in workers.iter().enumerate() {
            let (tx, stop) = (tx.clone(), &stop);
            let replica = model.clone().fork(device);
            scope.spawn(move || {
                for k in (w..slices).step_by(workers.len()) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = slice_gradients(&replica, device, step, batch.slice(k, slices));
                    if tx.send((k, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut sum = InSliceOrder::new(slices);
        for (k, result) in rx {
            match result {
                Ok(r) => sum.add(k, r),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        sum.finish()
    })
}

/// One slice's outcome and gradients, the gradients copied to the host.
fn slice_gradients(replica: &SphereFace, device: &Device, step: &StepInput<'_>, batch: Batch<'_>) -> Result<(Outcome, HostGradients)> {
    let (outcome, grads) = forward_backward(replica, device, step, batch)?;
    let grads = GradientsParams::from_grads(grads, replica);
    Ok((outcome, HostGradients::of(replica, &grads)?))
}

/// Adds slice results up in slice order, whatever order they arrive in.
struct InSliceOrder {
    slices: usize,
    next: usize,
    early: BTreeMap<usize, (Outcome, HostGradients)>,
    outcome: Outcome,
    total: Option<HostGradients>,
}

impl InSliceOrder {
    fn new(slices: usize) -> Self {
        InSliceOrder {
            slices,
            next: 0,
            early: BTreeMap::new(),
            outcome: Outcome::default(),
            total: None,
        }
    }

    fn add(&mut self, k: usize, result: (Outcome, HostGradients)) {
        self.early.insert(k, result);
        while let Some((outcome, grads)) = self.early.remove(&self.next) {
            self.outcome.loss += outcome.loss;
            self.outcome.correct += outcome.correct;
            match &mut self.total {
                None => self.total = Some(grads),
                Some(total) => total.add(&grads),
            }
            self.next += 1;
        }
    }

    /// The means over the slices.
    fn finish(self) -> Result<Reduced> {
        let mut totals = match self.total {
            Some(t) if self.next == self.slices => t,
            _ => bail!("only {} of {} slices came back from the devices", self.next, self.slices),
        };
        totals.divide(self.slices as f32);
        Ok(Reduced {
            outcome: Outcome {
                loss: self.outcome.loss / self.slices as f64,
                correct: self.outcome.correct,
            },
            totals,
        })
    }
}

/// Each parameter's gradient on the host, in the module's visiting order.
struct HostGradients(Vec<Vec<f32>>);

impl HostGradients {
    /// The gradients of `model`'s parameters (zeros for one that got none).
    fn of(model: &SphereFace, grads: &GradientsParams) -> Result<Self> {
        let mut visitor = ToHost {
            grads,
            values: Vec::new(),
            error: None,
        };
        model.visit(&mut visitor);
        match visitor.error {
            Some(e) => bail!("reading a gradient back from the device: {e}"),
            None => Ok(HostGradients(visitor.values)),
        }
    }

    fn add(&mut self, other: &HostGradients) {
        for (t, o) in self.0.iter_mut().zip(&other.0) {
            for (a, b) in t.iter_mut().zip(o) {
                *a += b;
            }
        }
    }

    fn divide(&mut self, by: f32) {
        self.0.iter_mut().flatten().for_each(|v| *v /= by);
    }

    /// The gradients as the optimizer takes them, on `device` (the model's, without autodiff).
    fn on_device(self, model: &SphereFace, device: &Device) -> GradientsParams {
        let mut visitor = ToDevice {
            values: self.0.into_iter(),
            device,
            grads: GradientsParams::new(),
        };
        model.visit(&mut visitor);
        visitor.grads
    }
}

struct ToHost<'a> {
    grads: &'a GradientsParams,
    values: Vec<Vec<f32>>,
    error: Option<String>,
}

impl ModuleVisitor for ToHost<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = match self.grads.get::<D>(param.id) {
            Some(g) => g.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_else(|e| {
                self.error = Some(format!("{e:?}"));
                Vec::new()
            }),
            None => vec![0.0; param.lazy_shape().num_elements()],
        };
        self.values.push(values);
    }
}

struct ToDevice<'a> {
    values: std::vec::IntoIter<Vec<f32>>,
    device: &'a Device,
    grads: GradientsParams,
}

impl ModuleVisitor for ToDevice<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(values) = self.values.next() {
            let shape = param.lazy_shape().to_vec();
            let grad = Tensor::<D>::from_data(TensorData::new(values, shape), self.device);
            self.grads.register::<D>(param.id, grad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::products::Isa;

    /// Four classes of 24x20 images: class c is bright in quadrant c, plus noise.
    fn toy_batch(step: u64, b: usize) -> (Vec<f32>, Vec<i64>) {
        let (h, w) = (24, 20);
        let mut imgs = vec![0f32; b * 3 * h * w];
        let mut labels = Vec::new();
        let mut r = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in 0..b {
            let c = (i + step as usize) % 4;
            labels.push(c as i64);
            for ch in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        r ^= r << 13;
                        r ^= r >> 7;
                        r ^= r << 17;
                        let noise = (r % 1000) as f32 / 1000.0 - 0.5;
                        let q = (y >= h / 2) as usize * 2 + (x >= w / 2) as usize;
                        imgs[((i * 3 + ch) * h + y) * w + x] = if q == c { 0.8 } else { -0.8 } + 0.3 * noise;
                    }
                }
            }
        }
        (imgs, labels)
    }

    fn cfg(loss: Loss) -> TrainConfig {
        TrainConfig {
            net: SphereConfig {
                depth: 4,
                width: 0.125,
                features: 16,
                input: [24, 20],
            },
            classes: 4,
            loss,
            lambda: Lambda::default(),
            lr: 0.05,
            milestones: vec![1000],
            momentum: 0.9,
            weight_decay: 5e-4,
            slices: 1,
        }
    }

    #[test]
    fn training_lowers_the_loss_and_learns_the_toy_classes() {
        let mut t = Trainer::new(cfg(Loss::ASoftmax { m: 4 }), &Device::flex(), 1).unwrap();
        let mut losses = Vec::new();
        let mut acc = Vec::new();
        for s in 0..60 {
            let (x, y) = toy_batch(s, 16);
            let m = t.train_step(&x, &y, 24, 20).unwrap();
            losses.push(m.loss);
            acc.push(m.accuracy);
        }
        let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
        let last: f64 = losses[55..].iter().sum::<f64>() / 5.0;
        assert!(last < 0.5 * first, "loss {first:.3} -> {last:.3}");
        assert!(acc[50..].iter().sum::<f64>() / 10.0 > 0.9, "accuracy {:?}", &acc[50..]);
    }

    #[test]
    fn training_weights_want_gradients_and_the_extraction_model_does_not() {
        // The condition under which `ConvAct` fuses PReLU into the convolution (inference only).
        let t = Trainer::new(cfg(Loss::ASoftmax { m: 4 }), &Device::flex(), 1).unwrap();
        let unit = &t.model().net.stages[0].down.conv;
        assert!(unit.weight.val().is_require_grad());
        assert!(!t.model().net.clone().valid().stages[0].down.conv.weight.val().is_require_grad());
    }

    #[test]
    fn resuming_from_a_checkpoint_continues_exactly() {
        let d = Device::flex();
        let run = |t: &mut Trainer, from: u64, to: u64| -> Vec<f64> {
            (from..to)
                .map(|s| t.train_step(&toy_batch(s, 8).0, &toy_batch(s, 8).1, 24, 20).unwrap().loss)
                .collect()
        };
        let mut a = Trainer::new(cfg(Loss::ASoftmax { m: 3 }), &d, 5).unwrap();
        let straight = run(&mut a, 0, 6);
        let mut b = Trainer::new(cfg(Loss::ASoftmax { m: 3 }), &d, 5).unwrap();
        let mut first = run(&mut b, 0, 3);
        let dir = tempfile::tempdir().unwrap();
        b.save_checkpoint(dir.path()).unwrap();
        let mut c = Trainer::new(cfg(Loss::ASoftmax { m: 3 }), &d, 99).unwrap();
        c.load_checkpoint(dir.path()).unwrap();
        assert_eq!(c.step, 3);
        first.extend(run(&mut c, 3, 6));
        assert_eq!(first, straight, "resumed losses differ");
    }

    #[test]
    fn an_optimizer_state_of_other_shapes_is_refused_when_the_checkpoint_loads() {
        let d = Device::flex();
        let (x, y) = toy_batch(0, 8);
        let mut a = Trainer::new(cfg(Loss::ASoftmax { m: 3 }), &d, 5).unwrap();
        a.train_step(&x, &y, 24, 20).unwrap();
        let dir = tempfile::tempdir().unwrap();
        a.save_checkpoint(dir.path()).unwrap();
        // The same parameter paths (so the same ids) at twice the width.
        let mut wide_cfg = cfg(Loss::ASoftmax { m: 3 });
        wide_cfg.net.width = 0.25;
        let mut wide = Trainer::new(wide_cfg, &d, 5).unwrap();
        wide.train_step(&x, &y, 24, 20).unwrap();
        let other = tempfile::tempdir().unwrap();
        wide.save_checkpoint(other.path()).unwrap();
        std::fs::copy(other.path().join("optimizer.bpk"), dir.path().join("optimizer.bpk")).unwrap();
        let mut b = Trainer::new(cfg(Loss::ASoftmax { m: 3 }), &d, 5).unwrap();
        let err = format!("{:#}", b.load_checkpoint(dir.path()).unwrap_err());
        assert!(
            err.contains("optimizer.bpk") && err.contains("damaged") && err.contains("shape"),
            "{err}"
        );
        std::fs::write(dir.path().join("optimizer.bpk"), b"not a burnpack").unwrap();
        let err = format!("{:#}", b.load_checkpoint(dir.path()).unwrap_err());
        assert!(err.contains("not a readable optimizer state"), "{err}");
    }

    #[test]
    fn a_cpu_training_run_is_the_same_bits_on_one_two_and_four_threads() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
            pool.install(short_run_bits)
        };
        let one = run(1);
        assert!(one.0.windows(2).all(|w| w[0] != w[1]) && one.1.len() == 8 * 16 && one.1.iter().any(|b| *b != 0));
        assert_eq!(one, run(2), "2 threads differ from 1");
        assert_eq!(one, run(4), "4 threads differ from 1");
    }

    /// The bits of a short SphereFace-10 run (it has stride-1 residual units, so every kind of
    /// convolution kernel runs): four steps' losses, then the features after them.
    fn short_run_bits() -> (Vec<u64>, Vec<u32>) {
        let mut config = cfg(Loss::ASoftmax { m: 4 });
        config.net.depth = 10;
        let mut t = Trainer::new(config, &Device::flex(), 3).unwrap();
        let losses = (0..4)
            .map(|s| {
                let (x, y) = toy_batch(s, 8);
                t.train_step(&x, &y, 24, 20).unwrap().loss.to_bits()
            })
            .collect();
        let features = t.features(&toy_batch(9, 8).0, 8, 24, 20).unwrap();
        (losses, features.iter().map(|v| v.to_bits()).collect())
    }

    /// [`short_run_bits`] as text, for a child process to hand back.
    fn run_bits() -> String {
        let (losses, features) = short_run_bits();
        let hex = losses
            .iter()
            .map(|b| format!("{b:x}"))
            .chain(features.iter().map(|b| format!("{b:x}")));
        hex.collect::<Vec<_>>().join(",")
    }

    /// The same run on each vector path this CPU has (AVX-512, AVX2, portable), each in a
    /// process of its own since the path is chosen once per process (`SPHEREPIPE_ISA`).
    #[test]
    fn a_cpu_training_run_is_the_same_bits_on_every_vector_path() {
        const NAME: &str = "train::tests::a_cpu_training_run_is_the_same_bits_on_every_vector_path";
        if let Ok(out) = std::env::var("SPHEREPIPE_BITS_OUT") {
            // The path this process took, so that an ignored SPHEREPIPE_ISA cannot pass.
            std::fs::write(out, format!("{} {}", Isa::best().name(), run_bits())).unwrap();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let runs: Vec<(Isa, String)> = Isa::available()
            .into_iter()
            .map(|isa| {
                let out = dir.path().join(isa.name());
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", NAME, "--test-threads=1"])
                    .env("SPHEREPIPE_ISA", isa.name())
                    .env("SPHEREPIPE_BITS_OUT", &out)
                    .status()
                    .unwrap();
                assert!(status.success(), "the {isa:?} run failed");
                let text = std::fs::read_to_string(&out).unwrap();
                let (path, bits) = text.split_once(' ').unwrap();
                assert_eq!(path, isa.name(), "SPHEREPIPE_ISA={} was not taken", isa.name());
                (isa, bits.to_owned())
            })
            .collect();
        println!("compared: {:?}", runs.iter().map(|r| r.0).collect::<Vec<_>>());
        assert!(runs[0].1.split(',').count() == 4 + 8 * 16);
        for (isa, bits) in &runs[1..] {
            assert!(*bits == runs[0].1, "{isa:?} differs from {:?}", runs[0].0);
        }
    }

    /// Every parameter's values, in visiting order.
    fn weights(t: &Trainer) -> Vec<f32> {
        struct All(Vec<f32>);
        impl ModuleVisitor for All {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0
                    .extend(param.val().into_data().convert::<f32>().try_into_vec::<f32>().unwrap());
            }
        }
        let mut all = All(Vec::new());
        t.model().visit(&mut all);
        all.0
    }

    /// `steps` steps of batch 8 from `from`, on `devices` CPU replicas, with `slices` slices.
    fn sliced_run(t: &mut Trainer, from: u64, steps: u64) -> Vec<f64> {
        (from..from + steps)
            .map(|s| {
                let (x, y) = toy_batch(s, 8);
                t.train_step(&x, &y, 24, 20).unwrap().loss
            })
            .collect()
    }

    fn sliced_trainer(slices: usize, devices: usize) -> Trainer {
        let config = TrainConfig {
            slices,
            ..cfg(Loss::ASoftmax { m: 4 })
        };
        let mut t = Trainer::new(config, &Device::flex(), 7).unwrap();
        t.spread_over(&vec![Device::flex(); devices]).unwrap();
        t
    }

    #[test]
    fn two_cpu_devices_train_as_one_does() {
        let mut one = sliced_trainer(2, 1);
        let mut two = sliced_trainer(2, 2);
        assert_eq!(two.device_count(), 2);
        let losses = sliced_run(&mut one, 0, 20);
        assert_eq!(sliced_run(&mut two, 0, 20), losses, "two devices' losses differ from one's");
        assert_eq!(weights(&two), weights(&one), "two devices' weights differ from one's");
        let first = losses[..3].iter().sum::<f64>();
        let last = losses[17..].iter().sum::<f64>();
        assert!(last < 0.7 * first, "the loss did not fall: {losses:?}");
        // Against the whole batch at once: the slices' mean gradient is the batch's, up to
        // the order of additions.
        let mut whole = sliced_trainer(1, 1);
        let whole_losses = sliced_run(&mut whole, 0, 20);
        for (s, (a, b)) in losses.iter().zip(&whole_losses).enumerate() {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "step {s}: loss {a} sliced vs {b} whole");
        }
        for (a, b) in weights(&two).iter().zip(weights(&whole)) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1e-2), "weight {a} sliced vs {b} whole");
        }
    }

    #[test]
    fn four_slices_give_the_same_bits_on_one_two_and_four_devices() {
        let runs: Vec<(Vec<f64>, Vec<f32>)> = [1, 2, 4]
            .into_iter()
            .map(|devices| {
                let mut t = sliced_trainer(4, devices);
                (sliced_run(&mut t, 0, 5), weights(&t))
            })
            .collect();
        assert_eq!(runs[1], runs[0], "2 devices differ from 1");
        assert_eq!(runs[2], runs[0], "4 devices differ from 1");
        let e = sliced_trainer(4, 1).spread_over(&[Device::flex(), Device::flex(), Device::flex()]);
        assert_eq!(
            e.unwrap_err().to_string(),
            "3 device(s) cannot share 4 slice(s) evenly: set `slices` to a multiple of 3 (the result depends on `slices`, not on the device count)"
        );
    }

    #[test]
    fn a_run_checkpointed_on_four_devices_resumes_on_two() {
        let mut straight = sliced_trainer(4, 4);
        let uninterrupted = sliced_run(&mut straight, 0, 8);
        let mut first = sliced_trainer(4, 4);
        let mut curve = sliced_run(&mut first, 0, 4);
        let dir = tempfile::tempdir().unwrap();
        first.save_checkpoint(dir.path()).unwrap();
        let mut resumed = sliced_trainer(4, 2);
        resumed.load_checkpoint(dir.path()).unwrap();
        curve.extend(sliced_run(&mut resumed, 4, 4));
        assert_eq!(curve, uninterrupted, "the resumed curve differs");
        assert_eq!(weights(&resumed), weights(&straight));
    }

    #[test]
    fn a_nan_in_one_slice_fails_the_step_and_changes_nothing() {
        let mut t = sliced_trainer(4, 2);
        let before = weights(&t);
        let (mut x, y) = toy_batch(0, 8);
        // Image 5 lies in slice 2, which the first device runs.
        x[5 * 3 * 24 * 20 + 11] = f32::NAN;
        assert_eq!(t.train_step(&x, &y, 24, 20).unwrap_err().to_string(), "the loss is NaN at step 0");
        assert_eq!((t.step, weights(&t)), (0, before));
        let e = t.train_step(&toy_batch(0, 6).0, &toy_batch(0, 6).1, 24, 20).unwrap_err();
        assert_eq!(e.to_string(), "a batch of 6 does not cut into 4 equal slices");
        let mut fresh = sliced_trainer(4, 1);
        assert_eq!(sliced_run(&mut t, 0, 2), sliced_run(&mut fresh, 0, 2));
    }

    #[test]
    fn a_failed_step_changes_nothing_and_training_goes_on() {
        let mut t = Trainer::new(cfg(Loss::Softmax), &Device::flex(), 1).unwrap();
        let (mut x, y) = toy_batch(0, 4);
        x[7] = f32::NAN;
        let e = t.train_step(&x, &y, 24, 20).unwrap_err().to_string();
        assert_eq!(e, "the loss is NaN at step 0");
        let e = t.train_step(&x[1..], &y, 24, 20).unwrap_err().to_string();
        assert!(e.starts_with("batch has 5759 values"), "{e}");
        let e = t.train_step(&toy_batch(0, 4).0, &[0, 1, 2, 9], 24, 20).unwrap_err().to_string();
        assert_eq!(e, "label 9 is outside 0..4");
        // Each failure left weights, momentum and step as they were: the next good step is
        // exactly a fresh trainer's first step.
        let mut fresh = Trainer::new(cfg(Loss::Softmax), &Device::flex(), 1).unwrap();
        let (x, y) = toy_batch(1, 4);
        let after = t.train_step(&x, &y, 24, 20).unwrap();
        let first = fresh.train_step(&x, &y, 24, 20).unwrap();
        assert_eq!((after.step, after.loss), (first.step, first.loss));
        let (x, y) = toy_batch(2, 4);
        assert_eq!(
            t.train_step(&x, &y, 24, 20).unwrap().loss,
            fresh.train_step(&x, &y, 24, 20).unwrap().loss
        );
    }
}
