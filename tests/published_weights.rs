//! A published-style model through spherepipe gives PyTorch's features: the sphere20a state
//! dict and the FC1 of a few aligned faces as PyTorch computes them from images read with
//! OpenCV (`cv2.imdecode`, BGR) are the fixture (`fixtures/bgr_extract/make_fixture.py`);
//! `train` with `init` and `steps: 0` keeps those weights, `extract` must reproduce the
//! features, mirror half included, to 1e-4 — and only when it feeds BGR.

use crate::common::Sandbox;
use spherepipe_face_table::features::{read_features, Features};
use spherepipe_face_table::{write_rows, FaceRow};
use std::path::{Path, PathBuf};

pub(crate) fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bgr_extract")
}

/// The fixture faces, sorted by file name, as rows of an aligned test set (two identities).
pub(crate) fn face_rows() -> Vec<FaceRow> {
    let mut names: Vec<String> = std::fs::read_dir(fixture().join("faces"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| FaceRow {
            png: std::fs::read(fixture().join("faces").join(name)).unwrap(),
            height: 112,
            width: 96,
            label: (i % 2) as i32,
            identity: format!("person{}", i % 2),
            dataset: "lfw".into(),
            source: name.clone(),
            video: None,
            landmarks: [0.0; 10],
            flipped: false,
        })
        .collect()
}

/// PyTorch's FC1 per face: the face's, then its mirror's (16 values each).
fn torch_fc1() -> Vec<Vec<f64>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("fc1.json")).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<f64>> { serde_json::from_value(v[k].clone()).unwrap() };
    rows("face").into_iter().zip(rows("mirror")).map(|(f, m)| [f, m].concat()).collect()
}

fn sandbox() -> Sandbox {
    let s = Sandbox::new();
    std::fs::create_dir(s.path().join("faces")).unwrap();
    write_rows(&s.path().join("faces/faces.parquet"), &face_rows(), 16).unwrap();
    std::fs::copy(
        fixture().join("sphere10_w8_112x96.safetensors"),
        s.path().join("weights.safetensors"),
    )
    .unwrap();
    s.write(
        "name: published
datasets:
  faces: {path: faces}
  weights: {path: weights.safetensors}
stages:
  shard: {kind: shard, inputs: {faces: faces}, params: {rows_per_shard: 16}}
  train:
    kind: train
    inputs: {shards: shard, init: weights}
    params: {net: sphere10, width: 0.125, features: 16, steps: 0, batch: 2}
  extract: {kind: extract, inputs: {model: train, faces: faces}}
",
    );
    s
}

fn features(s: &Sandbox) -> Features {
    read_features(
        &s.cache()
            .join("artifacts")
            .join(&s.last_artifacts()["extract"])
            .join("features.parquet"),
    )
    .unwrap()
}

/// Largest |ours − PyTorch's| over every value, relative to PyTorch's largest magnitude.
fn relative_gap(ours: &Features, torch: &[Vec<f64>]) -> f64 {
    assert_eq!(ours.meta.len(), torch.len());
    let scale = torch.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = (0..torch.len())
        .flat_map(|i| ours.row(i).iter().zip(&torch[i]).map(|(a, b)| (*a as f64 - b).abs()))
        .fold(0.0f64, f64::max);
    worst / scale
}

#[test]
fn extract_with_published_weights_matches_pytorch_on_opencv_bgr_input() {
    let s = sandbox();
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let torch = torch_fc1();
    assert!(torch.len() >= 4);
    let ours = features(&s);
    assert_eq!(ours.dim, 32);
    let gap = relative_gap(&ours, &torch);
    assert!(gap < 1e-4, "FC1 differs from PyTorch's by {gap:.2e} (relative)");
    let model = s.cache().join("artifacts").join(&s.last_artifacts()["train"]);
    let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap();
    assert_eq!((card["channels"].as_str(), card["steps"].as_u64()), (Some("bgr"), Some(0)));
    assert!(card["final_loss"].is_null());

    // Fed RGB, the same weights give other features: the order is what the match depends on.
    let r = s.run(&["--set", "extract.channels=rgb"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let swapped = features(&s);
    let gap = relative_gap(&swapped, &torch);
    assert!(gap > 1e-2, "RGB input should not reproduce BGR features (gap {gap:.2e})");

    // A model trained on RGB is extracted in RGB without being told: the order follows model.json.
    let r = s.run(&["--set", "train.channels=rgb"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(features(&s).values, swapped.values);
}

#[test]
fn steps_zero_without_init_is_refused_with_the_fix() {
    let s = sandbox();
    let yaml = std::fs::read_to_string(s.pipeline()).unwrap().replace(", init: weights", "");
    s.write(&yaml);
    let r = s.run(&[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("`steps: 0` keeps the initial weights") && r.stdout.contains("bind `init`"),
        "{}",
        r.stdout
    );
    assert!(!s.last_artifacts().contains_key("train"));
}
