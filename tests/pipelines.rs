//! The shipped pipeline files resolve: demo and ablation expand as documented, and megaface
//! stops without its data, naming the layout, then resolves once a corpus in that layout is
//! in place.

use crate::common::Sandbox;
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

/// `pipelines/demo.yaml` up to `shard` (the stages before training), as a pipeline of its own
/// in the sandbox. Fingerprints do not depend on the pipeline's name or on the other stages.
fn demo_data_stages(s: &Sandbox) -> String {
    let text = std::fs::read_to_string(repo().join("pipelines/demo.yaml")).unwrap();
    let mut demo: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let stages = demo["stages"].as_mapping_mut().unwrap();
    stages.retain(|k, _| ["synth", "dedupe", "align", "flip", "shard"].contains(&k.as_str().unwrap()));
    assert_eq!(stages.len(), 5, "demo.yaml lost one of its data stages");
    std::fs::create_dir_all(s.path().join("pipelines")).unwrap();
    std::fs::write(s.path().join("pipelines/demo-data.yaml"), serde_yaml::to_string(&demo).unwrap()).unwrap();
    "pipelines/demo-data.yaml".into()
}

/// Pins what the demo's data stages compute and are cached under, so that a refactor cannot
/// move a fingerprint (and with it every cached artifact) or an output without this failing.
/// Taken on 2026-11-30, with `synth` 2 (the tiled renderer), `align` 4 (fixed-point warp,
/// Paeth PNGs; its fingerprint retaken on 2026-12-03 for `align` 5, which refuses decode
/// bombs: the same artifact, so everything after it keeps its fingerprint), `flip` 3 and `shard` 2 (the image column written plain and uncompressed;
/// `synth`'s fingerprint retaken on 2026-12-03 for its new `insightface` param, off by default:
/// the same artifact, so nothing after it moves;
/// `align` 2 brought cp2tform). Retaken on 2026-12-03 when the demo moved to the `hard-demo`
/// preset (with `synth` 3). When a kind's output changes on
/// purpose — its `version()` goes up — update the values here in the same commit.
#[test]
fn the_demo_data_stages_keep_their_fingerprints_and_outputs() {
    let s = Sandbox::new();
    let p = demo_data_stages(&s);
    let r = s.sp(&["run", &p, "--quiet"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = s.sp(&["status", &p, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let status: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    let got: Vec<(&str, &str, &str)> = status
        .iter()
        .map(|v| {
            (
                v["stage"].as_str().unwrap(),
                v["fingerprint"].as_str().unwrap(),
                v["artifact"].as_str().unwrap(),
            )
        })
        .collect();
    let want = [
        (
            "synth",
            "3f84518614b163da93f649ab63e0d04e4953004b664b34b074fad0b99255b8e6",
            "d5bd6cdfa7d7e79096505fe1e6b58e709a51c8758dd5a9193429df16b654b1d5",
        ),
        (
            "dedupe",
            "0f4a1f929d646165694a81aceb77bf5870a7e2f33ee2fe9f47dd2f926392bd90",
            "a75234ee21779ebe5722e6190c27ffdb4af963e8dee3e2bb8cc33c1d97e4fc10",
        ),
        (
            "align",
            "557c7de2117e0fb2b0604a38ce2f22357aaf09867bca15bcda08bf0ea50c1071",
            "c0bd380bd5220ab5f8abb25ef6a4a02ee50406479139b913222f4b3c13b186dd",
        ),
        (
            "flip",
            "fcb108f8a4d2c1b4694b415fbe75e4dcd71028b71dcad93ee304dee1c3b746ce",
            "1d729e1374aff097d6ef84cbcd1fff241efbebda7722fa97270f289bc43cb20d",
        ),
        (
            "shard",
            "9e2eedaae9012e385a2e05ee4b0224aafcde953cbbb4adcf4d2fe41f81d8c8b2",
            "5968c7a9bb9408595947a8c7f760ec9e3334426a3fa6da039536f76ae42908f7",
        ),
    ];
    assert_eq!(
        got, want,
        "(stage, fingerprint, artifact) moved: if a kind's output changed on purpose, bump its version() and update this table"
    );
}

/// The `--set`s that shrink the demo and the ablation to seconds: the tiny corpus, six steps.
const SMALL: [&str; 4] = [
    "synth.preset=tiny",
    "train.steps=6",
    "train.milestones=[3, 5]",
    "align_distractors.list=megaface/templatelists/megaface_features_list.json_10_1",
];

/// Two colleagues' runs on one cache: the demo and the ablation started together. They share
/// the data stages (built once, by whichever run claims each first) and nothing else, so their
/// trainings overlap instead of the second run waiting for the whole first one.
#[test]
fn the_demo_and_the_ablation_run_at_once_on_one_cache() {
    let s = Sandbox::new();
    let (demo, ablation) = (shipped(&s, "demo.yaml"), shipped(&s, "ablation-m.yaml"));
    let with_sets = |file: &str, sets: &[&str]| {
        let mut args = vec!["run".to_owned(), file.to_owned(), "--quiet".to_owned()];
        for set in sets {
            args.extend(["--set".to_owned(), (*set).to_owned()]);
        }
        args
    };
    let demo_args = with_sets(&demo, &[&SMALL[..], &["warmup.steps=6", "warmup.milestones=[3, 5]"]].concat());
    let ablation_sets = [SMALL[0], SMALL[1], SMALL[2], "baseline.steps=6", "baseline.milestones=[3, 5]"];
    let ablation_args = with_sets(&ablation, &ablation_sets);
    let spawn = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.cmd(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&demo_args), spawn(&ablation_args));
    for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let runs = s.runs();
    assert_eq!(runs.len(), 2);
    // Each shared data stage ran once in all, and was cached (or waited for, then cached) in
    // the other run.
    for stage in ["synth", "dedupe", "align", "flip", "shard", "align_lfw", "align_ytf"] {
        let states: Vec<&str> = runs
            .iter()
            .map(|r| {
                let st = r["stages"].as_array().unwrap().iter().find(|x| x["stage"] == stage).unwrap();
                st["state"].as_str().unwrap()
            })
            .collect();
        assert_eq!(states.iter().filter(|x| **x == "ran").count(), 1, "{stage}: {states:?}");
    }
    // The overlap is real: the run that finished second started a training before the other
    // run ended.
    let (first, second) = (&runs[0], &runs[1]);
    let ended = first["started_unix"].as_f64().unwrap() + first["wall_s"].as_f64().unwrap();
    let first_training = second["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "train" && x["state"] == "ran")
        .filter_map(|x| x["started_unix"].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert!(
        first_training < ended,
        "the second run's first training started {first_training}, the first run ended {ended}"
    );
    // Fingerprints and artifacts are a clean run's: a sequential rerun of each finds it all cached.
    for args in [&demo_args, &ablation_args] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = s.sp(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(s.last_states().values().all(|v| v == "cached"), "{:?}", s.last_states());
    }
    assert_eq!(s.sp(&["verify", "--cache", "cache"]).code, 0);
}

/// `pipelines/table3.yaml` expands the paper's six methods on the hard corpus, each continuing
/// from one softmax warm start, every one evaluated with MegaFace's 10,000-distractor list,
/// all into one `compare`.
#[test]
fn table3_expands_six_methods_into_one_comparison() {
    let s = Sandbox::new();
    let p = shipped(&s, "table3.yaml");
    let r = s.sp(&["dag", &p]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let trainings: Vec<&str> = r.stdout.lines().filter(|l| l.ends_with("[train]")).collect();
    assert_eq!(trainings.len(), 7, "six methods and their warm start: {}", r.stdout);
    assert!(
        r.stdout.contains("train@m=4 [train]\n  init <- warmup\n  shards <- shard\n"),
        "{}",
        r.stdout
    );
    for m in ["train@m=1", "train@m=4", "baseline@loss=softmax", "baseline@loss=modified-softmax"] {
        assert!(r.stdout.contains(&format!("{m} [train]")), "{m}: {}", r.stdout);
    }
    assert!(
        r.stdout.contains("json_10000_1") || r.stdout.contains("align_distractors [align]"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("compare [compare]\n  results <- evaluate_baseline@loss=softmax, evaluate_baseline@loss=modified-softmax, evaluate@m=1, evaluate@m=2, evaluate@m=3, evaluate@m=4"), "{}", r.stdout);
}

/// `pipelines/own-photos.yaml` without its folders says what to put where (the photos, and
/// where the MTCNN weights come from); with them it plans detect before align.
#[test]
fn own_photos_names_the_folders_it_expects() {
    let s = Sandbox::new();
    let p = shipped(&s, "own-photos.yaml");
    let r = s.sp(&["run", &p]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("data/photos/<person>/<any name>.jpg") && r.stderr.contains("facenet-pytorch"),
        "{}",
        r.stderr
    );
    assert!(!s.cache().exists(), "nothing written");
    for d in ["data/photos", "data/mtcnn"] {
        std::fs::create_dir_all(s.path().join(d)).unwrap();
    }
    let r = s.sp(&["dag", &p]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (detect, align) = (r.stdout.find("detect [detect]"), r.stdout.find("align [align]"));
    assert!(detect.is_some() && align.is_some() && detect < align, "{}", r.stdout);
}

/// `pipelines/insightface.yaml` without its pack says which layout it expects; given a
/// directory it expands one unpack and one extract per bin, all seven fanning into `evaluate`.
#[test]
fn insightface_names_the_pack_layout_then_expands_one_stage_per_bin() {
    let s = Sandbox::new();
    let p = shipped(&s, "insightface.yaml");
    let r = s.sp(&["run", &p]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("train.rec, train.idx and property") && r.stderr.contains("agedb_30.bin"),
        "{}",
        r.stderr
    );
    assert!(!s.cache().exists(), "nothing written");
    std::fs::create_dir_all(s.path().join("data/faces_webface_112x112")).unwrap();
    let r = s.sp(&["dag", &p]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for set in ["lfw", "cfp_fp", "cfp_ff", "agedb_30", "calfw", "cplfw", "vgg2_fp"] {
        assert!(
            r.stdout.contains(&format!("extract_bins@file={set}.bin [extract]")),
            "{set}: {}",
            r.stdout
        );
    }
}
