//! Which devices of this node a stage runs on: the `devices` param (`N`, `auto`, or a list such
//! as `[cuda:0, cuda:1]`), read once and checked against the `device` param's backend.
//!
//! The count is an execution setting: `train` makes its result independent of it (see
//! [`crate::train::TrainConfig::slices`]) and `extract` computes each batch on one device, so
//! neither stage's artifact depends on how many devices made it.

use anyhow::{bail, Result};
use burn::tensor::Device;
use serde_json::Value;

/// The `devices` param, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first `N` devices of the backend (for `cpu`, `N` replicas on the one CPU).
    Count(usize),
    /// Every GPU this process may use: those `CUDA_VISIBLE_DEVICES` lists (as Slurm's
    /// `--gres=gpu:N` sets it), else those `nvidia-smi -L` lists.
    Auto,
    /// These device indices of the backend, in this order.
    List(Vec<usize>),
}

/// What the `devices` param accepts, for error messages.
const FORMS: &str = "a count (2), auto, or a list such as [cuda:0, cuda:1]";

impl DeviceSpec {
    /// Reads the param's value for a stage whose `device` param is `backend` (`cpu`, `cuda`,
    /// `wgpu`, `auto`). Errors name the param and the fix.
    pub fn parse(value: &Value, backend: &str) -> Result<DeviceSpec> {
        let spec = match value {
            Value::Number(n) => match n.as_u64() {
                Some(n @ 1..) => DeviceSpec::Count(n as usize),
                _ => bail!("param `devices`: {n} is not a device count; use {FORMS}"),
            },
            Value::String(s) if s == "auto" => DeviceSpec::Auto,
            Value::Array(names) if !names.is_empty() => {
                DeviceSpec::List(names.iter().map(|n| list_entry(n, backend)).collect::<Result<_>>()?)
            }
            other => bail!("param `devices`: `{other}` is not {FORMS}"),
        };
        spec.check_backend(backend)?;
        Ok(spec)
    }

    /// The count, when the param alone says it (`auto` waits for the machine).
    pub fn known_count(&self) -> Option<usize> {
        match self {
            DeviceSpec::Count(n) => Some(*n),
            DeviceSpec::Auto => None,
            DeviceSpec::List(l) => Some(l.len()),
        }
    }

    /// What the spec can be told before any device is opened.
    fn check_backend(&self, backend: &str) -> Result<()> {
        crate::device_named(backend)?;
        if let DeviceSpec::List(l) = self {
            if let Some(dup) = l.iter().enumerate().find(|(i, d)| l[..*i].contains(d)) {
                bail!("param `devices`: {backend}:{} is listed twice; name each device once", dup.1);
            }
        }
        match (self, backend) {
            (DeviceSpec::Auto, "cpu") => bail!(
                "param `devices`: auto means every visible GPU, but this stage runs on the CPU (device: cpu); set `device: cuda` or `wgpu` (a GPU build), or give a count such as `devices: 2`"
            ),
            (DeviceSpec::Auto, "auto") => bail!(
                "param `devices`: auto means every visible GPU of one backend, and `device: auto` names none; set `device: cuda` or `wgpu`"
            ),
            (DeviceSpec::List(l), "cpu") if l.iter().any(|&i| i > 0) => bail!(
                "param `devices`: the CPU is one device (cpu:0); to run several replicas on it, give a count such as `devices: 2`"
            ),
            _ => Ok(()),
        }
    }

    /// Opens the devices on `backend`; `auto` and counts are checked against the GPUs this
    /// process can see.
    pub fn resolve(&self, backend: &str) -> Result<Vec<Device>> {
        self.check_backend(backend)?;
        match (self, backend) {
            (DeviceSpec::Count(n), "cpu" | "auto") => return Ok(vec![crate::device_named(backend)?; *n]),
            (DeviceSpec::List(_), "cpu") => return Ok(vec![crate::device_named(backend)?]),
            (DeviceSpec::Count(1), _) => return Ok(vec![crate::device_named(backend)?]),
            _ => {}
        }
        let visible = visible_gpus();
        let indices: Vec<usize> = match self {
            DeviceSpec::Auto => every_visible(&visible)?,
            DeviceSpec::Count(n) => (0..*n).collect(),
            DeviceSpec::List(l) => l.clone(),
        };
        check_visible(&indices, &visible, backend)?;
        indices.into_iter().map(|i| gpu_device(backend, i)).collect()
    }
}

/// One entry of a device list: `cuda:1`, `wgpu:0` or `cpu`, on the stage's backend.
fn list_entry(name: &Value, backend: &str) -> Result<usize> {
    let text = name.as_str().unwrap_or_default();
    let (kind, index) = text.split_once(':').unwrap_or((text, "0"));
    if !crate::DEVICE_NAMES.contains(&kind) || kind == "auto" {
        bail!("param `devices`: `{name}` is not a device; name them as cuda:0, wgpu:1 or cpu");
    }
    crate::device_named(kind)?;
    if kind != backend {
        bail!(
            "param `devices`: {text} is not on this stage's backend (device: {backend}); list {backend} devices, or set `device: {kind}`"
        );
    }
    index
        .parse()
        .map_err(|_| anyhow::anyhow!("param `devices`: `{text}` has no device index; write {kind}:0, {kind}:1, ..."))
}

/// How many GPUs this process may use (`None`: nothing says), and how that was found.
struct Visible {
    count: Option<usize>,
    how: String,
}

/// The GPUs of this process: `CUDA_VISIBLE_DEVICES` when set (Slurm sets it to the GPUs it
/// granted), else the lines of `nvidia-smi -L`.
fn visible_gpus() -> Visible {
    if let Ok(list) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return Visible {
            count: Some(count_visible(&list)),
            how: format!("CUDA_VISIBLE_DEVICES={list}"),
        };
    }
    let listed = std::process::Command::new("nvidia-smi").arg("-L").output();
    match listed {
        Ok(out) if out.status.success() => Visible {
            count: Some(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.starts_with("GPU "))
                    .count(),
            ),
            how: "as nvidia-smi -L lists them".into(),
        },
        _ => Visible {
            count: None,
            how: "CUDA_VISIBLE_DEVICES is unset and nvidia-smi is not available".into(),
        },
    }
}

/// The indices of every GPU `visible` counts, or why there are none.
fn every_visible(visible: &Visible) -> Result<Vec<usize>> {
    match visible {
        Visible { count: Some(n @ 1..), .. } => Ok((0..*n).collect()),
        Visible { how, .. } => bail!(
            "param `devices`: auto found no GPU ({how}); ask the scheduler for GPUs (resources: {{gpus: N}}), give a count, or use device: cpu"
        ),
    }
}

/// Refuses an index past the GPUs `visible` counts. Where nothing says how many there are (no
/// CUDA_VISIBLE_DEVICES, no nvidia-smi: a wgpu build on another vendor's GPUs), the backend
/// finds out when it opens them.
fn check_visible(indices: &[usize], visible: &Visible, backend: &str) -> Result<()> {
    if let Visible { count: Some(count), how } = visible {
        if let Some(&i) = indices.iter().find(|&&i| i >= *count) {
            bail!(
                "param `devices`: {backend}:{i} does not exist: this process sees {count} GPU(s) ({how}); ask for fewer devices or for more GPUs (resources: {{gpus: N}})"
            );
        }
    }
    Ok(())
}

/// What a stage with `device` and `devices` params (train, extract) asks a scheduler for: on a
/// GPU backend, as many GPUs as `devices` names (one for `auto`, which takes what the
/// pipeline's `resources: {gpus: N}` grants); none on the CPU.
pub fn gpu_resources(p: &spherepipe_stage::Params) -> spherepipe_stage::Resources {
    let device = p.str("device").unwrap_or("cpu");
    let devices = p.raw("devices").unwrap_or(&Value::Null);
    spherepipe_stage::Resources {
        gpus: gpus_to_ask(device, devices),
        ..spherepipe_stage::Resources::default()
    }
}

/// The GPUs a stage with these `device` and `devices` params asks a scheduler for: as many as
/// `devices` names on a GPU backend (one for `auto`, which takes what is granted), none on the
/// CPU.
pub fn gpus_to_ask(device: &str, devices: &Value) -> Option<u32> {
    let on_gpu = matches!(device, "cuda" | "wgpu");
    let named = devices.as_u64().or_else(|| devices.as_array().map(|l| l.len() as u64));
    on_gpu.then(|| named.unwrap_or(1) as u32)
}

/// The number of entries of a `CUDA_VISIBLE_DEVICES` value; CUDA stops at the first invalid
/// one (`-1`, `NoDevFiles`), so counting does too.
pub fn count_visible(list: &str) -> usize {
    list.split(',')
        .map(str::trim)
        .take_while(|d| !d.is_empty() && !d.starts_with('-') && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .take_while(|d| *d != "NoDevFiles")
        .count()
}

/// GPU `index` of `backend` (a build with that feature; `device_named` checked it).
fn gpu_device(backend: &str, index: usize) -> Result<Device> {
    match backend {
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(index)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index))),
        // `auto` is burn's default device: one.
        _ if index == 0 => crate::device_named(backend),
        _ => bail!("device {backend}:{index}: this spherepipe opens one {backend} device only"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_param_reads_counts_auto_and_lists() {
        assert_eq!(DeviceSpec::parse(&json!(2), "cpu").unwrap(), DeviceSpec::Count(2));
        assert_eq!(DeviceSpec::parse(&json!(["cpu"]), "cpu").unwrap(), DeviceSpec::List(vec![0]));
        assert_eq!(DeviceSpec::parse(&json!(["cpu:0"]), "cpu").unwrap().known_count(), Some(1));
        let err = |v: Value, backend: &str| DeviceSpec::parse(&v, backend).unwrap_err().to_string();
        assert_eq!(
            err(json!(0), "cpu"),
            "param `devices`: 0 is not a device count; use a count (2), auto, or a list such as [cuda:0, cuda:1]"
        );
        assert!(err(json!("two"), "cpu").contains("`\"two\"` is not a count (2), auto"));
        assert!(err(json!([]), "cpu").contains("is not a count"));
        assert!(err(json!(["tpu:0"]), "cpu").contains("name them as cuda:0, wgpu:1 or cpu"));
        assert!(err(json!(["cpu:1"]), "cpu").contains("the CPU is one device"));
        assert!(err(json!(["cpu", "cpu:0"]), "cpu").contains("cpu:0 is listed twice"));
        assert!(err(json!(["cpu:x"]), "cpu").contains("`cpu:x` has no device index"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_list_naming_a_backend_this_build_lacks_says_how_to_get_it() {
        let e = DeviceSpec::parse(&json!(["cuda:0", "cuda:1"]), "cpu").unwrap_err().to_string();
        assert_eq!(
            e,
            "this spherepipe was built without the `cuda` backend; rebuild with `cargo build --release --features cuda` (see README: Devices) or use device: cpu"
        );
    }

    #[test]
    fn auto_on_the_cpu_is_refused_with_the_fix() {
        let e = DeviceSpec::parse(&json!("auto"), "cpu").unwrap_err().to_string();
        assert!(
            e.starts_with("param `devices`: auto means every visible GPU, but this stage runs on the CPU"),
            "{e}"
        );
        assert!(e.contains("devices: 2"), "{e}");
    }

    #[test]
    fn a_count_on_the_cpu_gives_that_many_replicas() {
        let d = DeviceSpec::Count(3).resolve("cpu").unwrap();
        assert_eq!(d, vec![Device::flex(); 3]);
    }

    #[test]
    fn auto_takes_every_visible_gpu_and_a_missing_one_is_named() {
        let seen = |count: Option<usize>| Visible {
            count,
            how: "CUDA_VISIBLE_DEVICES=…".into(),
        };
        assert_eq!(every_visible(&seen(Some(3))).unwrap(), vec![0, 1, 2]);
        let none = every_visible(&seen(Some(0))).unwrap_err().to_string();
        assert_eq!(
            none,
            "param `devices`: auto found no GPU (CUDA_VISIBLE_DEVICES=…); ask the scheduler for GPUs (resources: {gpus: N}), give a count, or use device: cpu"
        );
        assert!(every_visible(&seen(None)).is_err());
        assert!(check_visible(&[0, 1], &seen(Some(2)), "cuda").is_ok());
        assert!(check_visible(&[0, 5], &seen(None), "wgpu").is_ok());
        let e = check_visible(&[0, 2], &seen(Some(2)), "cuda").unwrap_err().to_string();
        assert!(
            e.starts_with("param `devices`: cuda:2 does not exist: this process sees 2 GPU(s)"),
            "{e}"
        );
    }

    #[test]
    fn gpu_stages_ask_for_the_devices_they_name() {
        assert_eq!(gpus_to_ask("cuda", &json!(4)), Some(4));
        assert_eq!(gpus_to_ask("wgpu", &json!(["wgpu:0", "wgpu:2"])), Some(2));
        assert_eq!(gpus_to_ask("cuda", &json!("auto")), Some(1));
        assert_eq!(gpus_to_ask("cpu", &json!(4)), None);
    }

    #[test]
    fn cuda_visible_devices_is_counted_as_cuda_reads_it() {
        assert_eq!(count_visible("0,1,2,3"), 4);
        assert_eq!(count_visible("2"), 1);
        assert_eq!(count_visible("GPU-5f1c3a2e-aaaa-bbbb-cccc-0123456789ab,1"), 2);
        assert_eq!(count_visible(""), 0);
        assert_eq!(count_visible("-1"), 0);
        assert_eq!(count_visible("0,-1,2"), 1);
        assert_eq!(count_visible("NoDevFiles"), 0);
    }
}
