//! The shipped pipeline files resolve: demo and ablation expand as documented, and megaface
//! stops without its data, naming the layout, then resolves once a corpus in that layout is
//! in place.

mod common;
use common::Sandbox;
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root")
}

/// Copies a shipped pipeline into the sandbox's `pipelines/`, so its `root: ..` is the sandbox.
fn shipped(s: &Sandbox, name: &str) -> String {
    std::fs::create_dir_all(s.path().join("pipelines")).unwrap();
    std::fs::copy(repo().join("pipelines").join(name), s.path().join("pipelines").join(name)).unwrap();
    format!("pipelines/{name}")
}

#[test]
fn demo_and_ablation_expand_as_documented() {
    let s = Sandbox::new();
    let demo = shipped(&s, "demo.yaml");
    let r = s.sp(&["dag", &demo]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for node in [
        "train@patch=upper [train]",
        "extract_distractors@patch=center [extract]\n  faces <- align_distractors\n  model <- train@patch=center\n",
        "ensemble_lfw [ensemble]\n  features <- extract_lfw@patch=face, extract_lfw@patch=upper, extract_lfw@patch=center\n",
        "evaluate [evaluate]",
    ] {
        assert!(r.stdout.contains(node), "{node} not in\n{}", r.stdout);
    }
    // All eight stage kinds of the paper pipeline are in it.
    for kind in [
        "[dedupe]",
        "[align]",
        "[flip]",
        "[shard]",
        "[train]",
        "[extract]",
        "[ensemble]",
        "[evaluate]",
    ] {
        assert!(r.stdout.contains(kind), "{kind}");
    }
    let ablation = shipped(&s, "ablation-m.yaml");
    let r = s.sp(&["dag", &ablation]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let evaluations: Vec<&str> = r.stdout.lines().filter(|l| l.ends_with("[evaluate]")).collect();
    assert_eq!(
        evaluations,
        [
            "evaluate@m=1 [evaluate]",
            "evaluate@m=2 [evaluate]",
            "evaluate@m=3 [evaluate]",
            "evaluate@m=4 [evaluate]",
            "evaluate_baseline@loss=softmax [evaluate]",
            "evaluate_baseline@loss=modified-softmax [evaluate]"
        ]
    );
}

#[test]
fn fig2_evaluates_each_loss_with_a_3d_fc1() {
    let s = Sandbox::new();
    let fig2 = shipped(&s, "fig2.yaml");
    let r = s.sp(&["dag", &fig2]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let evaluations: Vec<&str> = r.stdout.lines().filter(|l| l.ends_with("[evaluate]")).collect();
    assert_eq!(
        evaluations,
        [
            "evaluate@loss=softmax [evaluate]",
            "evaluate@loss=modified-softmax [evaluate]",
            "evaluate@loss=a-softmax [evaluate]"
        ]
    );
    let r = s.sp(&["show", &fig2, "train@loss=a-softmax", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!(v["params"]["features"], 3, "{v}");
}

#[test]
fn megaface_names_the_missing_layout_then_resolves_on_one() {
    let s = Sandbox::new();
    let mf = shipped(&s, "megaface.yaml");
    let r = s.sp(&["run", &mf]);
    assert_eq!(r.code, 2);
    for part in [
        "dataset `faces`",
        "data/faces does not exist",
        "lfw/pairs.txt",
        "casia_landmark.txt",
        "pipelines/demo.yaml",
    ] {
        assert!(r.stderr.contains(part), "{part} not in {}", r.stderr);
    }
    assert!(!s.cache().exists(), "nothing written");
    let r = s.sp(&["synth", "--out", "data/faces", "--preset", "tiny"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = s.sp(&["dag", &mf]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("evaluate@net=sphere64 [evaluate]"), "{}", r.stdout);
}
