//! `spherepipe speed`: images/s of a SphereFace training step and of feature extraction on
//! this machine's devices, on made-up data. What a user sizes a cluster job with, what the GPU
//! check (`scripts/gpu-check`) reports, and what the training bench times on the CPU. The setup
//! is the PyTorch peer's (`../shared/bench/sphereface_torch.py`): 3x112x96 faces, a softmax
//! head over 1,000 classes, SGD with momentum 0.9 and weight decay 5e-4.

use anyhow::Result;
use spherepipe_nn::margin::{Lambda, Loss};
use spherepipe_nn::sphere::SphereConfig;
use spherepipe_nn::train::{TrainConfig, Trainer};
use spherepipe_nn::Device;
use std::time::Instant;

/// Classes of the peer's softmax head.
const CLASSES: usize = 1000;

/// The median (upper median for an even count) of `v`; 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Images in [-1, 1), deterministic, and labels over the peer's 1,000 classes.
pub fn batch_of(b: usize) -> (Vec<f32>, Vec<i64>) {
    let images = (0..b * 3 * 112 * 96).map(|i| ((i * 7919 % 255) as f32 - 127.5) / 128.0).collect();
    (images, (0..b as i64).map(|i| i * 31 % CLASSES as i64).collect())
}

/// The peer's training setup for SphereFace-`depth`, the batch cut into `slices`.
pub fn peer_config(depth: usize, slices: usize) -> TrainConfig {
    TrainConfig {
        net: SphereConfig::new(depth),
        classes: CLASSES,
        loss: Loss::Softmax,
        lambda: Lambda::default(),
        lr: 0.01,
        milestones: vec![],
        momentum: 0.9,
        weight_decay: 5e-4,
        slices,
    }
}

/// Timed repetitions of one piece of work.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Timing {
    /// Median seconds per repetition.
    pub median_s: f64,
    /// Fastest repetition.
    pub min_s: f64,
    /// Images per second at the median.
    pub images_per_s: f64,
}

impl Timing {
    fn of(times: Vec<f64>, images: usize) -> Timing {
        let min_s = times.iter().copied().fold(f64::MAX, f64::min);
        let median_s = median(times);
        Timing {
            median_s,
            min_s,
            images_per_s: images as f64 / median_s,
        }
    }
}

/// SGD steps of SphereFace-`depth` at global batch `batch` cut into `slices`, shared by
/// `devices`, after 2 untimed warm-up steps.
pub fn training(depth: usize, batch: usize, slices: usize, devices: &[Device], steps: usize) -> Result<Timing> {
    let (images, labels) = batch_of(batch);
    let mut t = Trainer::new(peer_config(depth, slices), &devices[0], 1)?;
    t.spread_over(devices)?;
    for _ in 0..2 {
        t.train_step(&images, &labels, 112, 96)?;
    }
    let times = (0..steps)
        .map(|_| {
            let s = Instant::now();
            t.train_step(&images, &labels, 112, 96).map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    Ok(Timing::of(times, batch))
}

/// FC1 of `images` per pass on every device at once (as `extract` gives each device a batch
/// of faces and their mirrors), after one untimed pass; images/s over all devices.
pub fn extraction(depth: usize, images: usize, devices: &[Device], passes: usize) -> Result<Timing> {
    let tmp = tempfile::tempdir()?;
    let weights = tmp.path().join("w.safetensors");
    Trainer::new(peer_config(depth, 1), &devices[0], 1)?.save_weights(&weights)?;
    let models = devices
        .iter()
        .map(|d| Trainer::for_features(SphereConfig::new(depth), CLASSES, true, &weights, d))
        .collect::<Result<Vec<_>>>()?;
    let (batch, _) = batch_of(images);
    let pass = || -> Result<f64> {
        let s = Instant::now();
        std::thread::scope(|scope| {
            let running: Vec<_> = models.iter().map(|m| scope.spawn(|| m.features(&batch, images, 112, 96))).collect();
            running.into_iter().try_for_each(|r| {
                r.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("an extraction thread panicked")))
                    .map(|_| ())
            })
        })?;
        Ok(s.elapsed().as_secs_f64())
    };
    pass()?;
    let times = (0..passes).map(|_| pass()).collect::<Result<_>>()?;
    Ok(Timing::of(times, images * devices.len()))
}

/// The process's peak resident set so far (VmHWM), in MB; 0 where /proc does not say.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What `spherepipe speed` measured, as `--json` prints it.
#[derive(Debug, serde::Serialize)]
pub struct SpeedReport {
    /// The `device` backend.
    pub device: String,
    /// Devices used.
    pub devices: usize,
    /// SphereFace depth.
    pub depth: usize,
    /// Global training batch.
    pub batch: usize,
    /// Slices the batch is cut into.
    pub slices: usize,
    /// The training step.
    pub training: Timing,
    /// Images per extraction pass on each device.
    pub extraction_images: usize,
    /// Extraction over all devices.
    pub extraction: Timing,
}

/// What to measure: SphereFace-`depth`, training batches of `batch` cut into `slices`
/// (and extraction passes of `batch` images per device), `steps` times each.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// SphereFace depth.
    pub depth: usize,
    /// Global training batch, and images per extraction pass on each device.
    pub batch: usize,
    /// Slices each training batch is cut into.
    pub slices: usize,
    /// Timed steps and passes.
    pub steps: usize,
}

/// Measures training and extraction on `devices` of `device`.
pub fn report(device: &str, devices: &[Device], w: Workload) -> Result<SpeedReport> {
    let (depth, batch, extraction_images) = (w.depth, w.batch, w.batch);
    Ok(SpeedReport {
        device: device.to_owned(),
        devices: devices.len(),
        depth,
        batch,
        slices: w.slices,
        training: training(depth, batch, w.slices, devices, w.steps)?,
        extraction_images,
        extraction: extraction(depth, extraction_images, devices, w.steps)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle_and_timings_count_every_device() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 3.0);
        assert_eq!(median(Vec::new()), 0.0);
        let t = Timing::of(vec![0.5, 0.25, 1.0], 64);
        assert_eq!((t.median_s, t.min_s, t.images_per_s), (0.5, 0.25, 128.0));
    }

    #[test]
    fn a_speed_report_measures_both_on_two_cpu_replicas() {
        let w = Workload {
            depth: 4,
            batch: 4,
            slices: 2,
            steps: 1,
        };
        let r = report("cpu", &[Device::flex(), Device::flex()], w).unwrap();
        assert_eq!((r.devices, r.batch, r.slices, r.extraction_images), (2, 4, 2, 4));
        assert!(r.training.images_per_s > 0.0 && r.training.median_s >= r.training.min_s);
        assert!((r.extraction.images_per_s - 8.0 / r.extraction.median_s).abs() < 1e-9);
    }
}
