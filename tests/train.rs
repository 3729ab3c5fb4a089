//! The `train` stage end to end on the tiny corpus: outputs, a loss that falls, exact resume
//! after a SIGKILL, and a param change that reruns training but nothing before it.

use crate::common::Sandbox;
use std::time::{Duration, Instant};

fn pipeline(steps: u32, m: u32) -> String {
    format!(
        r#"
name: t
seed: 3
stages:
{data}  train:
    kind: train
    inputs: {{shards: shard}}
    params: {{net: sphere4, width: 0.125, features: 32, m: {m}, batch: 8, steps: {steps}, lr: 0.01, milestones: [1000], checkpoint_every: 5, lambda_gamma: 1.0}}
"#,
        data = crate::common::TINY_DATA
    )
}

/// Tensor names in a safetensors file, read from its JSON header by hand.
fn tensor_names(p: &std::path::Path) -> Vec<String> {
    let b = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let mut names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    names.sort();
    names
}

#[test]
fn training_writes_weights_metrics_and_curve_and_resumes_exactly_after_a_kill() {
    let s = Sandbox::new();
    s.write(&pipeline(20, 4));
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let dir = s.artifact_dir("train");
    let names = tensor_names(&dir.join("model.safetensors"));
    // SphereFace-4 under the sphere20a names: a stride-2 conv + PReLU per stage, fc5, fc6.
    let mut want: Vec<String> = (1..=4)
        .flat_map(|s| [format!("conv{s}_1.weight"), format!("conv{s}_1.bias"), format!("relu{s}_1.weight")])
        .chain(["fc5.weight", "fc5.bias", "fc6.weight"].map(String::from))
        .collect();
    want.sort();
    let mut names = names;
    names.sort();
    assert_eq!(names, want);
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 20);
    assert!(rows
        .iter()
        .enumerate()
        .all(|(i, r)| r[0] as usize == i && r[1].is_finite() && (0.0..=1.0).contains(&r[2])));
    // λ follows the schedule max(5, 1000 / (1 + step)) with γ = 1.
    assert!(rows.iter().all(|r| (r[3] - (1000.0 / (1.0 + r[0])).max(5.0)).abs() < 1e-9));
    let png = std::fs::read(dir.join("curve.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let svg = std::fs::read_to_string(dir.join("curve.svg")).unwrap();
    assert!(svg.contains("\naccuracy\n") && svg.contains("\nloss\n"), "{svg}");
    let svg = std::fs::read_to_string(dir.join("schedule.svg")).unwrap();
    assert!(svg.contains("\nλ\n") && svg.contains("\nlearning rate\n"), "{svg}");
    let model: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    assert_eq!(model["net"]["depth"], 4);
    assert!(
        std::fs::read_dir(s.cache().join("scratch")).map(|d| d.count()).unwrap_or(0) == 0,
        "scratch is cleaned after success"
    );
    let clean = s.last_artifacts()["train"].clone();

    // Same pipeline in a fresh cache, killed after the first checkpoint, then rerun.
    let k = Sandbox::new();
    k.write(&pipeline(20, 4));
    assert!(kill_after_a_checkpoint(&k) >= 5);
    let r = k.run(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        k.last_artifacts()["train"],
        clean,
        "the resumed training differs from the uninterrupted one"
    );

    // m = 3: training reruns; everything before it stays cached.
    let r = s.run(&["--set", "train.m=3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let st = s.last_states();
    assert_eq!(st["train"], "ran");
    for stage in ["synth", "dedupe", "align", "flip", "shard"] {
        assert_eq!(st[stage], "cached", "{stage}");
    }
}

/// Starts `run` on the sandbox's pipeline, SIGKILLs it once a training checkpoint exists, and
/// returns the checkpoint's step.
fn kill_after_a_checkpoint(k: &Sandbox) -> u32 {
    let mut child = k.cmd(&["run", "p.yaml", "--quiet"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let ckpt_step = loop {
        let found = std::fs::read_dir(k.cache().join("scratch"))
            .ok()
            .and_then(|d| d.flatten().map(|e| e.path().join("checkpoint/step")).find(|p| p.is_file()));
        if let Some(p) = found {
            break std::fs::read_to_string(p).unwrap();
        }
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    ckpt_step.trim().parse().unwrap()
}

#[test]
fn init_weights_that_do_not_fit_are_named() {
    let s = Sandbox::new();
    // A safetensors file holding one unrelated tensor.
    let header = br#"{"other.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(s.path().join("init.safetensors"), bytes).unwrap();
    let yaml = pipeline(3, 4)
        .replace("name: t\n", "name: t\ndatasets:\n  w: {path: init.safetensors}\n")
        .replace("inputs: {shards: shard}", "inputs: {shards: shard, init: w}");
    s.write(&yaml);
    let r = s.run(&[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("do not fit this network") && r.stdout.contains("fc6.weight"),
        "{}",
        r.stdout
    );
}

/// The tiny training cut into 4 slices, on `devices`, followed by an extraction of LFW on
/// `extract_devices` (in batches of 5, so the last one is short).
fn sliced(devices: &str, extract_devices: &str) -> String {
    pipeline(6, 4).replace(
        "checkpoint_every: 5",
        &format!("checkpoint_every: 5, slices: 4, devices: {devices}"),
    ) + &format!(
        "  align_lfw: {{kind: align, inputs: {{images: synth}}, params: {{format: lfw}}}}
  extract_lfw: {{kind: extract, inputs: {{model: train, faces: align_lfw}}, params: {{batch: 5, devices: {extract_devices}}}}}
"
    )
}

#[test]
fn the_device_count_changes_no_byte_and_reruns_nothing() {
    let one = Sandbox::new();
    one.write(&sliced("1", "1"));
    let r = one.run(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let model = one.artifact_dir("train").join("model.json");
    let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model).unwrap()).unwrap();
    assert_eq!(card["params"]["slices"], 4);
    assert!(
        card["params"].get("devices").is_none(),
        "an execution setting in the artifact: {card}"
    );
    // Four devices in a fresh cache: the same artifacts, byte for byte.
    let four = Sandbox::new();
    four.write(&sliced("4", "3"));
    let r = four.sp(&["run", "p.yaml"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("training on 4 cpu devices, 4 slices of 2 images"), "{}", r.stderr);
    assert_eq!(four.last_artifacts(), one.last_artifacts());
    // The devices are in the training's lineage, not in its artifact.
    let r = four.sp(&["lineage", "p.yaml", "train", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let links: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let devices = links[0]["lineage"]["made"]["facts"]["devices"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let listed = devices.strip_prefix("cpu: ").map(|l| l.split(", ").count());
    assert_eq!(listed, Some(4), "{devices}");
    // Changing the count on the first cache reruns nothing.
    one.write(&sliced("2", "[cpu]"));
    assert_eq!(one.run(&[]).code, 0);
    assert!(one.last_states().values().all(|s| s == "cached"), "{:?}", one.last_states());
}

#[test]
fn a_training_killed_on_four_devices_resumes_on_two_and_ends_as_one_device_would() {
    let slices = |devices: u32| {
        pipeline(12, 4).replace(
            "checkpoint_every: 5",
            &format!("checkpoint_every: 5, slices: 4, devices: {devices}"),
        )
    };
    let straight = Sandbox::new();
    straight.write(&slices(1));
    assert_eq!(straight.run(&[]).code, 0);
    let k = Sandbox::new();
    k.write(&slices(4));
    assert!(kill_after_a_checkpoint(&k) >= 5);
    k.write(&slices(2));
    let r = k.sp(&["run", "p.yaml"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("resuming at step"), "it started over: {}", r.stderr);
    assert_eq!(k.last_artifacts()["train"], straight.last_artifacts()["train"]);
}

#[test]
fn device_settings_that_cannot_work_are_refused_before_anything_runs() {
    let s = Sandbox::new();
    s.write(&pipeline(2, 4));
    assert_eq!(s.run(&[]).code, 0);
    let before = s.snapshot();
    let refused = |old: &str, new: &str, says: &str| {
        s.write(&pipeline(2, 4).replace(old, new));
        let r = s.run(&[]);
        assert_eq!(r.code, 2, "{new}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(says), "{new}: {}", r.stderr);
        assert_eq!(s.snapshot(), before, "{new}: the cache was touched");
    };
    refused(
        "batch: 8",
        "batch: 10, slices: 4",
        "param `batch`: 10 images do not cut into 4 equal slices; use a batch that is a multiple of 4 (8 or 12)",
    );
    refused(
        "batch: 8",
        "batch: 8, devices: 2",
        "param `devices`: 2 devices cannot share 1 slice(s) evenly; set `slices: 2`",
    );
    refused(
        "batch: 8",
        "batch: 8, devices: auto",
        "param `devices`: auto means every visible GPU, but this stage runs on the CPU",
    );
    refused(
        "batch: 8",
        "batch: 8, slices: 2, devices: [cuda:0, cuda:1]",
        "this spherepipe was built without the `cuda` backend; rebuild with `cargo build --release --features cuda`",
    );
    refused("batch: 8", "batch: 8, devices: 0", "param `devices`: 0 is not a device count");
}
