//! `train`: SphereFace training on face shards. Checkpoints go to the stage's scratch
//! directory every `checkpoint_every` steps, so an interrupted or failed run resumes where it
//! stopped and produces the same result as an uninterrupted one. The artifact holds the final
//! weights (`model.safetensors`), `model.json` (a [`ModelCard`]: what `extract` needs to rebuild
//! the network and feed it, colour order included),
//! `metrics.csv` (loss, accuracy, λ, learning rate per step), `curve.svg`/`curve.png` and
//! `schedule.svg`/`schedule.png` (λ and learning rate); images/s per step
//! goes to `cache/logs/<fingerprint>/timing.csv`, outside the artifact, to keep it deterministic.
//! With `slices` and `devices`, each step's batch is shared by several devices of one node; the
//! artifact is the same bytes on any device count (README: Several devices of one node).

#![warn(missing_docs)]

mod params;

pub use params::{loss_named, TrainParams, LOSSES};
pub use spherepipe_model_card::ModelCard;

use anyhow::{bail, Context};
use params::uneven;
use spherepipe_face_loader::{Channels, Loader, LoaderConfig, Patch};
use spherepipe_face_table::shards::ShardManifest;
use spherepipe_nn::margin::Loss;
use spherepipe_nn::train::{StepMetrics, TrainConfig, Trainer};
use spherepipe_stage::{Contract, InputSpec, ParamSpec, ParamType, Params, Resources, Stage, StageContext};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The `train` stage kind.
pub struct Train;

impl Stage for Train {
    fn kind(&self) -> &'static str {
        "train"
    }
    fn version(&self) -> &'static str {
        // 2: seeded init from our own generator, sphere20a parameter names, patch crops,
        // labelled curve. 3: BGR input by default, `channels` in model.json. 4: the curve drawn
        // with plotters, as curve.svg and curve.png. 5: on the CPU, the convolutions' weight
        // gradients come from spherepipe-nn's own kernel (another order of additions). 6: on the
        // CPU, every convolution is spherepipe-nn's (Winograd for stride 1). 7: schedule.svg/png
        // (λ and the learning rate by step).
        // 8: on the CPU, the convolutions' matrix products are spherepipe-nn's own
        // (`products.rs`: one order of fused multiply-adds on every vector path), FC1 and the
        // head's too (`dense.rs`).
        // 9: on the CPU, PReLU is spherepipe-nn's own (`prelu.rs`): its slopes' gradient sums
        // in another order.
        // 10: on the CPU, stride-1 convolutions run as Winograd F(4×4) (`winograd4.rs`), other
        // constants and sums than F(2×2).
        // 11: on the CPU, images under 8 pixels a side run F(2×2) forward too, and PReLU's
        // slope gradient sums each plane in 16 interleaved partial sums.
        // 12: on the CPU, the convolutions' bias gradient is spherepipe-nn's own (`conv.rs`:
        // each plane in 16 interleaved partial sums, then the images in order), not burn's
        // transpose and row sums.
        // The CPU's vector level too: burn-flex's sums run in another order at another width.
        spherepipe_nn::cpu_version!("12")
    }
    fn doc(&self) -> &'static str {
        "SphereFace CNN + A-Softmax (or softmax/modified-softmax/cosface/arcface) training"
    }
    fn params(&self) -> Vec<ParamSpec> {
        [network_params(), loss_params(), optimiser_params(), input_params()].concat()
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::one("shards", "a shard artifact (manifest.json + shard-*.parquet)"),
            InputSpec::one(
                "init",
                "weights to start from (sphere20a names, BGR input as the published models): a .safetensors file, or a directory holding model.safetensors",
            )
            .optional(),
        ]
    }
    fn uses_seed(&self) -> bool {
        true
    }
    fn validate(&self, p: &Params) -> Result<(), spherepipe_stage::InvalidParams> {
        TrainParams::from_params(p)?;
        Ok(())
    }
    fn resources(&self, p: &Params) -> Resources {
        spherepipe_nn::devices::gpu_resources(p)
    }
    fn figures(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("curve.svg", "Training loss and accuracy"),
            ("schedule.svg", "A-Softmax's λ and the learning rate"),
        ]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p = TrainParams::from_params(ctx.params)?;
        let shards = ShardSet::read(ctx.inputs.one("shards")?)?;
        let init = ctx.inputs.many("init").first().cloned();
        let steps = p.steps;
        if steps == 0 && init.is_none() {
            bail!("`steps: 0` keeps the initial weights, so it needs weights to keep: bind `init` (or train for some steps)");
        }
        let input = probe_input_size(&shards.files)?;
        let patch = Patch::from_param(&p.patch, input).map_err(|e| anyhow::anyhow!("param `patch`: {e}"))?;
        let channels = p.channels;
        let cfg = p.config(input, shards.classes);
        let mut trainer = open_trainer(&p, &cfg, ctx)?;
        if let Some(init) = init {
            trainer.load_weights(&if init.is_dir() { init.join("model.safetensors") } else { init })?;
        }
        let ckpt = ctx.scratch.join("checkpoint");
        let mut metrics = resume(&mut trainer, &ckpt, ctx)?;
        let loader = Loader::new(
            shards.files,
            LoaderConfig {
                batch: p.batch,
                shuffle_buffer: p.shuffle_buffer,
                flip: p.random_flip,
                seed: ctx.seed,
                prefetch: 4,
                skip_batches: trainer.step,
                patch,
                channels,
            },
        )?;
        train_steps(&mut trainer, &loader, &mut metrics, steps, p.checkpoint_every, &ckpt, ctx)?;

        trainer.save_weights(&ctx.out_dir.join("model.safetensors"))?;
        let last: Vec<&StepMetrics> = metrics.iter().rev().take(20).map(|m| &m.0).collect();
        let mean = |f: fn(&StepMetrics) -> f64| (!last.is_empty()).then(|| last.iter().map(|m| f(m)).sum::<f64>() / last.len() as f64);
        ModelCard {
            net: cfg.net,
            patch: p.patch.clone(),
            channels,
            softmax_head: matches!(cfg.loss, Loss::Softmax),
            classes: shards.classes,
            loss: p.loss_name.clone(),
            params: ctx.params.outcome(&self.params()),
            steps,
            final_loss: mean(|m| m.loss),
            final_accuracy: mean(|m| m.accuracy),
        }
        .write(ctx.out_dir)?;
        write_metrics(&ctx.out_dir.join("metrics.csv"), &metrics)?;
        write_timing(&ctx.logs.join("timing.csv"), &metrics)?;
        let curve: Vec<_> = metrics.iter().map(|m| (m.0.step as f64, m.0.loss, m.0.accuracy)).collect();
        spherepipe_plot::training_curve(&curve).save(ctx.out_dir, "curve")?;
        let schedule: Vec<_> = metrics.iter().map(|m| (m.0.step as f64, m.0.lambda, m.0.lr)).collect();
        spherepipe_plot::schedule_curve(&schedule).save(ctx.out_dir, "schedule")?;
        Ok(())
    }
}

/// The trainer on the devices `devices` names, the model on the first.
fn open_trainer(p: &TrainParams, cfg: &TrainConfig, ctx: &StageContext<'_>) -> anyhow::Result<Trainer> {
    let devices = p.devices.resolve(&p.device)?;
    if !p.slices.is_multiple_of(devices.len()) {
        bail!("{} (found {} with `devices: auto`)", uneven(devices.len(), p.slices), devices.len());
    }
    let mut trainer = Trainer::new(cfg.clone(), &devices[0], ctx.seed)?;
    trainer.spread_over(&devices)?;
    let names: Vec<String> = devices.iter().map(|d| format!("{d:?}")).collect();
    ctx.facts.record("devices", format!("{}: {}", p.device, names.join(", ")));
    if devices.len() > 1 {
        ctx.progress.message(&format!(
            "training on {} {} devices, {} slices of {} images",
            devices.len(),
            p.device,
            p.slices,
            p.batch / p.slices
        ));
    }
    Ok(trainer)
}

/// The network: depth, width, FC1 size.
fn network_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new(
            "net",
            ParamType::Choice(&["sphere4", "sphere10", "sphere20", "sphere36", "sphere64"]),
            "sphere20",
            "network depth (paper Table 2)",
        ),
        ParamSpec::new(
            "width",
            ParamType::float_range(0.01, 4.0),
            1.0,
            "channel multiplier (64/128/256/512 at 1.0)",
        ),
        ParamSpec::new(
            "features",
            ParamType::int_range(2, 4096),
            512,
            "FC1 size (2 or 3 to plot features like the paper's Fig. 2)",
        ),
    ]
}

/// The loss and its settings (A-Softmax's m and λ annealing; CosFace/ArcFace scale and margin).
fn loss_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new("loss", ParamType::Choice(&LOSSES), "a-softmax", "classification loss"),
        ParamSpec::new("m", ParamType::int_range(1, 4), 4, "A-Softmax angular margin"),
        ParamSpec::new(
            "lambda_base",
            ParamType::float_range(0.0, 1e9),
            1000.0,
            "λ = max(λ_min, base (1 + γ iter)^-power)",
        ),
        ParamSpec::new("lambda_gamma", ParamType::float_range(0.0, 1e3), 0.12, "λ annealing γ"),
        ParamSpec::new("lambda_power", ParamType::float_range(0.0, 100.0), 1.0, "λ annealing power"),
        ParamSpec::new("lambda_min", ParamType::float_range(0.0, 1e9), 5.0, "λ floor"),
        ParamSpec::new("scale", ParamType::float_range(0.0, 1e4), 30.0, "s for cosface/arcface"),
        ParamSpec::new(
            "margin",
            ParamType::float_range(0.0, 3.0),
            0.35,
            "m for cosface (0.35) / arcface (0.5)",
        ),
    ]
}

/// SGD and its schedule.
fn optimiser_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new("lr", ParamType::float_range(0.0, 10.0), 0.1, "base learning rate"),
        ParamSpec::new(
            "milestones",
            ParamType::list(ParamType::Int { min: Some(0), max: None }),
            vec![16_000, 24_000],
            "steps where the learning rate is divided by 10",
        ),
        ParamSpec::new(
            "steps",
            ParamType::Int { min: Some(0), max: None },
            28_000,
            "training iterations (0 with `init`: the given weights as they are, e.g. a published model to extract features with)",
        ),
        ParamSpec::new("batch", ParamType::int_range(1, 4096), 256, "images per step"),
        ParamSpec::new(
            "slices",
            ParamType::int_range(1, 4096),
            1,
            "equal slices each batch is cut into, each run forward and backward on its own and their gradients averaged in slice order; devices share the slices, so the result is the same on any device count that divides it",
        ),
        ParamSpec::new("momentum", ParamType::float_range(0.0, 1.0), 0.9, "SGD momentum"),
        ParamSpec::new("weight_decay", ParamType::float_range(0.0, 1.0), 5e-4, "L2 weight decay"),
    ]
}

/// What the network is fed and where it runs: flips, shuffling, crops, colour order, checkpoints, device.
fn input_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new(
            "random_flip",
            ParamType::float_range(0.0, 1.0),
            0.0,
            "probability of mirroring each training image on the fly",
        ),
        ParamSpec::new(
            "shuffle_buffer",
            ParamType::Int { min: Some(1), max: None },
            8192,
            "rows held for shuffling",
        ),
        ParamSpec::new(
            "checkpoint_every",
            ParamType::Int { min: Some(1), max: None },
            1000,
            "steps between checkpoints",
        ),
        ParamSpec::new(
            "patch",
            ParamType::Any,
            serde_json::Value::Null,
            "crop box {name, box: [x, y, w, h]} on the aligned face, resized to the face size (3-patch ensemble); null = whole face",
        ),
        ParamSpec::new(
            "channels",
            ParamType::Choice(&Channels::NAMES),
            "bgr",
            "colour order fed to the network: bgr, as the published SphereFace models were trained (weights given through `init` are taken to be BGR), or rgb",
        ),
        ParamSpec::new(
            "device",
            ParamType::Choice(&spherepipe_nn::DEVICE_NAMES),
            "cpu",
            "cpu (default), cuda, wgpu (need cargo features), auto",
        ),
        ParamSpec::new(
            "devices",
            ParamType::Any,
            1,
            "devices of that backend sharing the slices: a count, auto (every GPU CUDA_VISIBLE_DEVICES lists, as Slurm sets it) or a list such as [cuda:0, cuda:1]; must divide `slices`",
        )
        .execution_setting(),
    ]
}

/// The shard files and class count of a `shard` artifact, from its `manifest.json`.
struct ShardSet {
    files: Vec<PathBuf>,
    classes: usize,
}

impl ShardSet {
    fn read(dir: &Path) -> anyhow::Result<ShardSet> {
        let manifest = ShardManifest::read(dir)?;
        if manifest.labels < 2 {
            bail!("the shards hold {} class(es); training needs at least 2", manifest.labels);
        }
        let files = manifest.paths(dir)?;
        dense_labels(&files, manifest.labels)?;
        Ok(ShardSet {
            files,
            classes: manifest.labels,
        })
    }
}

/// Checks, before anything trains, that the shards' labels are exactly 0..classes (the
/// classifier has one row per class): a label outside would be an index out of range deep in
/// the backend, and a gap a class that never trains.
fn dense_labels(files: &[PathBuf], classes: usize) -> anyhow::Result<()> {
    let mut seen = vec![false; classes];
    for f in files {
        for label in spherepipe_face_table::read_labels(f)? {
            match usize::try_from(label).ok().and_then(|l| seen.get_mut(l)) {
                Some(s) => *s = true,
                None => bail!(
                    "{} holds label {label}, but the shards hold {classes} classes, so labels must run from 0 to {}: the shards were not made by `shard` from `align`, or were changed; rebuild them",
                    f.display(),
                    classes - 1
                ),
            }
        }
    }
    if let Some(gap) = seen.iter().position(|s| !s) {
        bail!(
            "no shard row has label {gap}: labels must run from 0 to {} without gaps; rebuild the shards",
            classes - 1
        );
    }
    Ok(())
}

/// The face size [height, width] of the shards, from their first image, so FC1 fits the crops.
fn probe_input_size(files: &[PathBuf]) -> anyhow::Result<[usize; 2]> {
    let probe = Loader::new(
        files.to_vec(),
        LoaderConfig {
            batch: 1,
            shuffle_buffer: 1,
            flip: 0.0,
            seed: 0,
            prefetch: 1,
            skip_batches: 0,
            patch: None,
            channels: Channels::Bgr,
        },
    )?
    .next_batch()?;
    Ok([probe.height, probe.width])
}

/// Resumes from the scratch checkpoint of an earlier attempt, if any: the trainer's state and
/// the per-step metrics up to its step.
fn resume(trainer: &mut Trainer, ckpt: &Path, ctx: &StageContext<'_>) -> anyhow::Result<Vec<(StepMetrics, f64)>> {
    if !ckpt.join("step").is_file() {
        return Ok(Vec::new());
    }
    trainer.load_checkpoint(ckpt)?;
    ctx.progress.message(&format!("resuming at step {}", trainer.step));
    Ok(read_metrics(&ckpt.join("metrics.csv"))?
        .into_iter()
        .take(trainer.step as usize)
        .collect())
}

/// Runs SGD steps until `steps`, checkpointing every `every`; a failed step (a NaN loss)
/// stops with the step, the kept checkpoint and the fix.
fn train_steps(
    trainer: &mut Trainer,
    loader: &Loader,
    metrics: &mut Vec<(StepMetrics, f64)>,
    steps: u64,
    every: u64,
    ckpt: &Path,
    ctx: &StageContext<'_>,
) -> anyhow::Result<()> {
    ctx.progress.set_length(steps);
    ctx.progress.inc(trainer.step);
    while trainer.step < steps {
        ctx.cancel.check()?;
        let t = Instant::now();
        let b = loader.next_batch()?;
        let m = match trainer.train_step(&b.images, &b.labels, b.height, b.width) {
            Ok(m) => m,
            Err(e) => {
                let kept = if ckpt.join("step").is_file() {
                    format!(
                        "the last good checkpoint (step {}) is kept in {}",
                        std::fs::read_to_string(ckpt.join("step")).unwrap_or_default().trim(),
                        ckpt.display()
                    )
                } else {
                    "no checkpoint had been written yet".into()
                };
                bail!("{e:#}; {kept}. Lower `lr` (or check the data) and rerun: training resumes from that checkpoint");
            }
        };
        let ips = b.labels.len() as f64 / t.elapsed().as_secs_f64();
        metrics.push((m, ips));
        ctx.progress.inc(1);
        ctx.progress.message(&format!(
            "loss {:.3} acc {:.2} λ {:.1} {:.0} img/s",
            m.loss, m.accuracy, m.lambda, ips
        ));
        if trainer.step.is_multiple_of(every) && trainer.step < steps {
            write_checkpoint(trainer, metrics, ckpt)?;
        }
    }
    Ok(())
}

const HEADER: &str = "step,loss,accuracy,lambda,lr";

/// The per-step table in the artifact: deterministic columns only, so two runs of the same
/// stage produce byte-identical artifacts (throughput goes to the logs, see `write_timing`).
fn write_metrics(path: &Path, metrics: &[(StepMetrics, f64)]) -> anyhow::Result<()> {
    let mut s = String::from(HEADER);
    s.push('\n');
    for (m, _) in metrics {
        s.push_str(&format!("{},{},{},{},{}\n", m.step, m.loss, m.accuracy, m.lambda, m.lr));
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// Images per second at each step, in the stage's log directory (outside the artifact).
fn write_timing(path: &Path, metrics: &[(StepMetrics, f64)]) -> anyhow::Result<()> {
    let mut s = String::from("step,images_per_s\n");
    for (m, ips) in metrics {
        s.push_str(&format!("{},{:.1}\n", m.step, ips));
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn read_metrics(path: &Path) -> anyhow::Result<Vec<(StepMetrics, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n = |i: usize| -> anyhow::Result<f64> {
                f.get(i)
                    .context("short metrics line")?
                    .parse::<f64>()
                    .context("bad number in metrics")
            };
            Ok((
                StepMetrics {
                    step: n(0)? as u64,
                    loss: n(1)?,
                    accuracy: n(2)?,
                    lambda: n(3)?,
                    lr: n(4)?,
                },
                0.0,
            ))
        })
        .collect()
}

/// Writes the checkpoint next to the old one, then swaps it in, so a kill mid-write keeps
/// the previous checkpoint intact.
fn write_checkpoint(trainer: &Trainer, metrics: &[(StepMetrics, f64)], ckpt: &Path) -> anyhow::Result<()> {
    let tmp = ckpt.with_extension("new");
    let _ = std::fs::remove_dir_all(&tmp);
    trainer.save_checkpoint(&tmp)?;
    write_metrics(&tmp.join("metrics.csv"), metrics)?;
    let old = ckpt.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if ckpt.exists() {
        std::fs::rename(ckpt, &old)?;
    }
    std::fs::rename(&tmp, ckpt)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_that_are_not_zero_to_n_stop_training_before_it_starts() {
        let d = tempfile::tempdir().unwrap();
        let shard = |name: &str, labels: &[i32]| {
            let png = spherepipe_face_table::encode_png(&[9u8; 12], 2, 2).unwrap();
            let rows: Vec<spherepipe_face_table::FaceRow> = labels
                .iter()
                .map(|&label| spherepipe_face_table::FaceRow {
                    png: png.clone(),
                    height: 2,
                    width: 2,
                    label,
                    identity: format!("P{label}"),
                    dataset: "casia".into(),
                    source: "x.jpg".into(),
                    video: None,
                    landmarks: [0.0; 10],
                    flipped: false,
                })
                .collect();
            let p = d.path().join(name);
            spherepipe_face_table::write_rows(&p, &rows, 8).unwrap();
            p
        };
        let dense = [shard("a", &[0, 1]), shard("b", &[2, 1])];
        dense_labels(&dense, 3).unwrap();
        let e = dense_labels(&[shard("c", &[0, 5])], 2).unwrap_err().to_string();
        assert!(e.contains("holds label 5") && e.contains("from 0 to 1"), "{e}");
        let e = dense_labels(&[shard("d", &[0, -1])], 2).unwrap_err().to_string();
        assert!(e.contains("holds label -1"), "{e}");
        let e = dense_labels(&[shard("e", &[0, 2])], 3).unwrap_err().to_string();
        assert!(e.contains("no shard row has label 1"), "{e}");
    }

    fn params(loss: &str) -> Params {
        let mut p = Params(Default::default());
        for (k, v) in [
            ("loss", serde_json::json!(loss)),
            ("m", 3.into()),
            ("scale", 30.0.into()),
            ("margin", 0.5.into()),
        ] {
            p.0.insert(k.to_owned(), v);
        }
        p
    }

    /// The kind's declared defaults, as a pipeline file that sets nothing resolves them.
    fn defaults() -> Params {
        Params(
            Train
                .params()
                .into_iter()
                .filter_map(|s| Some((s.name.to_owned(), s.default?)))
                .collect(),
        )
    }

    #[test]
    fn params_are_read_once_with_their_checks() {
        let t = TrainParams::from_params(&defaults()).unwrap();
        assert_eq!((t.depth, t.batch, t.steps, t.channels), (20, 256, 28_000, Channels::Bgr));
        assert!(matches!(t.loss, Loss::ASoftmax { m: 4 }));
        assert_eq!(t.config([112, 96], 10).net.input, [112, 96]);
        let mut p = defaults();
        p.0.insert("loss".into(), "arcface".into());
        p.0.insert("margin".into(), 2.0.into());
        assert_eq!(
            Train.validate(&p).unwrap_err().to_string(),
            "arcface margin above 1.5 rad makes θ + m wrap past π; use about 0.5"
        );
        let mut p = defaults();
        p.0.insert("patch".into(), serde_json::json!({"name": "eyes"}));
        assert!(Train
            .validate(&p)
            .unwrap_err()
            .to_string()
            .contains("needs `box: [x, y, width, height]`"));
    }

    #[test]
    fn every_loss_name_maps_to_its_own_loss_and_no_other() {
        assert!(matches!(loss_named("softmax", &params("softmax")).unwrap(), Loss::Softmax));
        assert!(matches!(
            loss_named("modified-softmax", &params("modified-softmax")).unwrap(),
            Loss::ModifiedSoftmax
        ));
        assert!(matches!(
            loss_named("a-softmax", &params("a-softmax")).unwrap(),
            Loss::ASoftmax { m: 3 }
        ));
        assert!(matches!(loss_named("cosface", &params("cosface")).unwrap(), Loss::CosFace { .. }));
        assert!(matches!(loss_named("arcface", &params("arcface")).unwrap(), Loss::ArcFace { .. }));
        let e = loss_named("sphereface", &params("sphereface")).unwrap_err().to_string();
        assert_eq!(
            e,
            "param `loss`: unknown loss `sphereface` (use one of softmax, modified-softmax, a-softmax, cosface, arcface)"
        );
    }
}
