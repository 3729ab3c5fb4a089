//! `extract`, `ensemble` and `evaluate` end to end on the tiny corpus: two patch models trained
//! as a matrix, features re-read and checked against the network run here directly and against
//! the mirror symmetry, devkit files, the LFW accuracy recomputed independently from the
//! feature table and pairs.txt, MegaFace and report outputs, and bad inputs.

use crate::common::Sandbox;
use spherepipe_face_table::features::read_features;
use std::path::Path;

fn pipeline(extra: &str) -> String {
    format!(
        r#"
name: e
seed: 3
stages:
{data}  train:
    kind: train
    inputs: {{shards: shard}}
    matrix:
      patch: &p
        - {{name: face, box: [0, 0, 96, 112]}}
        - {{name: top, box: [0, 0, 96, 64]}}
    params: {{net: sphere4, width: 0.125, features: 3, batch: 8, steps: 6, lr: 0.01, milestones: [1000], lambda_gamma: 1.0}}
  align_lfw: {{kind: align, inputs: {{images: synth}}, params: {{format: lfw}}}}
  flip_lfw: {{kind: flip, inputs: {{faces: align_lfw}}}}
  align_ytf: {{kind: align, inputs: {{images: synth}}, params: {{format: ytf}}}}
  align_facescrub: {{kind: align, inputs: {{images: synth}}, params: {{format: megaface}}}}
  align_distractors:
    kind: align
    inputs: {{images: synth}}
    params: {{format: megaface, list: megaface/templatelists/megaface_features_list.json_10_1}}
  extract_lfw: {{kind: extract, inputs: {{model: train, faces: align_lfw}}, matrix: {{patch: *p}}, params: {{devkit: true, batch: 7}}}}
  extract_flipped: {{kind: extract, inputs: {{model: train@patch=face, faces: flip_lfw}}}}
  extract_ytf: {{kind: extract, inputs: {{model: train, faces: align_ytf}}, matrix: {{patch: *p}}}}
  extract_facescrub: {{kind: extract, inputs: {{model: train, faces: align_facescrub}}, matrix: {{patch: *p}}}}
  extract_distractors: {{kind: extract, inputs: {{model: train, faces: align_distractors}}, matrix: {{patch: *p}}}}
  ensemble_lfw: {{kind: ensemble, inputs: {{features: [extract_lfw]}}}}
  ensemble_ytf: {{kind: ensemble, inputs: {{features: [extract_ytf]}}}}
  ensemble_facescrub: {{kind: ensemble, inputs: {{features: [extract_facescrub]}}}}
  ensemble_distractors: {{kind: ensemble, inputs: {{features: [extract_distractors]}}}}
  evaluate:
    kind: evaluate
    inputs: {{data: synth, lfw: ensemble_lfw, ytf: ensemble_ytf, facescrub: ensemble_facescrub, distractors: ensemble_distractors, model: train@patch=face}}
  evaluate_single:
    kind: evaluate
    inputs: {{data: synth, lfw: extract_lfw@patch=face}}
    params: {{protocol: unflipped}}
  compare: {{kind: compare, inputs: {{results: [evaluate, evaluate_single]}}, params: {{title: Both}}}}
{extra}"#,
        data = crate::common::TINY_DATA
    )
}

/// LFW `unflipped` accuracy computed from scratch: cosine of the face halves, thresholds
/// −1 + 0.005 i, the first with the best training accuracy, positives right at ≥.
fn unflipped_by_hand(features: &Path, pairs_txt: &Path) -> Vec<f64> {
    let f = read_features(features).unwrap();
    let row = |src: &str| {
        let i = f
            .meta
            .iter()
            .position(|m| m.source == src)
            .unwrap_or_else(|| panic!("{src} not extracted"));
        f.row(i)[..f.dim / 2].iter().map(|&x| x as f64).collect::<Vec<f64>>()
    };
    let text = std::fs::read_to_string(pairs_txt).unwrap();
    let mut lines = text.lines();
    let n: usize = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut pairs = Vec::new(); // (fold, same, score)
    for (k, l) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (a, b, same) = if w.len() == 3 {
            (
                format!("{0}/{0}_{1:0>4}.jpg", w[0], w[1]),
                format!("{0}/{0}_{1:0>4}.jpg", w[0], w[2]),
                true,
            )
        } else {
            (
                format!("{0}/{0}_{1:0>4}.jpg", w[0], w[1]),
                format!("{0}/{0}_{1:0>4}.jpg", w[2], w[3]),
                false,
            )
        };
        let (x, y) = (row(&a), row(&b));
        let dot: f64 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
        let norm = |v: &[f64]| v.iter().map(|p| p * p).sum::<f64>().sqrt();
        pairs.push((k / (2 * n), same, dot / (norm(&x) * norm(&y))));
    }
    let right = |t: f64, p: &(usize, bool, f64)| if p.1 { p.2 >= t } else { p.2 < t };
    (0..10)
        .map(|fold| {
            let train: Vec<_> = pairs.iter().filter(|p| p.0 != fold).collect();
            let mut best = (0, 0.0);
            for i in 0..400 {
                let t = -1.0 + i as f64 * 0.005;
                let c = train.iter().filter(|p| right(t, p)).count();
                if c > best.0 {
                    best = (c, t);
                }
            }
            let test: Vec<_> = pairs.iter().filter(|p| p.0 == fold).collect();
            test.iter().filter(|p| right(best.1, p)).count() as f64 / test.len() as f64
        })
        .collect()
}

#[test]
fn features_ensemble_and_evaluation_end_to_end() {
    let s = Sandbox::new();
    s.write(&pipeline(""));
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // Features: one row per aligned LFW face, FC1 (3) of the face then of its mirror.
    let lfw = read_features(&s.artifact_dir("extract_lfw@patch=face").join("features.parquet")).unwrap();
    let aligned = spherepipe_face_table::read_rows(&s.artifact_dir("align_lfw").join("faces.parquet")).unwrap();
    assert_eq!(lfw.len(), aligned.len());
    assert_eq!(lfw.dim, 6);
    assert!(lfw
        .meta
        .iter()
        .zip(&aligned)
        .all(|(m, a)| m.source == a.source && m.identity == a.identity));

    // The mirror half of a face is the face half of its mirror image (flip stage), and back.
    let flipped = read_features(&s.artifact_dir("extract_flipped").join("features.parquet")).unwrap();
    let mut checked = 0;
    for (i, m) in flipped.meta.iter().enumerate() {
        let rows: Vec<usize> = (0..lfw.len()).filter(|&j| lfw.meta[j].source == m.source).collect();
        let j = rows[0];
        let (f, o) = (flipped.row(i), lfw.row(j));
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()));
        if close(&f[..3], &o[..3]) && close(&f[3..], &o[3..]) {
            continue; // the unflipped copy of the face
        }
        assert!(close(&f[..3], &o[3..]) && close(&f[3..], &o[..3]), "{}: {f:?} vs {o:?}", m.source);
        checked += 1;
    }
    assert_eq!(checked, lfw.len(), "every mirrored row was checked");

    // Devkit files: header (3*2 rows, 1 col, 4 bytes, CV_32F) and the same values.
    let devkit = s
        .artifact_dir("extract_lfw@patch=face")
        .join("devkit")
        .join(format!("{}_spherepipe.bin", lfw.meta[0].source));
    let b = std::fs::read(&devkit).unwrap();
    let ints: Vec<i32> = b[..16].chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(ints, [6, 1, 4, 5]);
    let vals: Vec<f32> = b[16..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(vals, lfw.row(0));

    // Ensemble: two patches, each normalised, face halves then mirror halves.
    let top = read_features(&s.artifact_dir("extract_lfw@patch=top").join("features.parquet")).unwrap();
    let ens = read_features(&s.artifact_dir("ensemble_lfw").join("features.parquet")).unwrap();
    assert_eq!(ens.dim, 12);
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let (a, t, e) = (lfw.row(1), top.row(1), ens.row(1));
    for k in 0..3 {
        assert!((e[k] - a[k] / n(a)).abs() < 1e-6 && (e[3 + k] - t[k] / n(t)).abs() < 1e-6);
        assert!((e[6 + k] - a[3 + k] / n(a)).abs() < 1e-6 && (e[9 + k] - t[3 + k] / n(t)).abs() < 1e-6);
    }

    // LFW accuracy recomputed from the feature table and pairs.txt by hand.
    let synth = s.artifact_dir("synth");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.artifact_dir("evaluate_single").join("metrics.json")).unwrap()).unwrap();
    let want = unflipped_by_hand(
        &s.artifact_dir("extract_lfw@patch=face").join("features.parquet"),
        &synth.join("lfw/pairs.txt"),
    );
    let got: Vec<f64> = m["lfw"]["protocols"]["unflipped"]["folds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["accuracy"].as_f64().unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(m["lfw"]["accuracy"].as_f64().unwrap(), want.iter().sum::<f64>() / 10.0);
    assert_eq!(m["lfw"]["pairs"], 20);
    // FC1 of 3: the features are drawn on the sphere.
    let single = s.artifact_dir("evaluate_single");
    let png = std::fs::read(single.join("features.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let svg = std::fs::read_to_string(single.join("features.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("FC1 (3-D)"), "{svg}");

    // The full evaluation: every section, plots, report, and the line `run` prints.
    let dir = s.artifact_dir("evaluate");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    for key in ["official", "unflipped", "sum-l2"] {
        let folds = m["lfw"]["protocols"][key]["folds"].as_array().unwrap();
        assert_eq!(folds.len(), 10, "{key}");
        let mean = folds.iter().map(|f| f["accuracy"].as_f64().unwrap()).sum::<f64>() / 10.0;
        assert!((m["lfw"]["protocols"][key]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    }
    assert_eq!(m["ytf"]["pairs"], 20);
    let mf = &m["megaface"];
    let probes = read_features(&s.artifact_dir("ensemble_facescrub").join("features.parquet"))
        .unwrap()
        .len();
    assert_eq!(mf["probes"].as_u64().unwrap() as usize, probes);
    assert_eq!(mf["distractors"], 10);
    let sizes = mf["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 1);
    let cmc: Vec<f64> = sizes[0]["cmc"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(cmc.windows(2).all(|w| w[0] <= w[1]) && cmc[0] == sizes[0]["rank1"].as_f64().unwrap());
    // 10 distractors x P probes cannot measure FAR 1e-6: the report says which FAR it used.
    let far = sizes[0]["verification"]["far"].as_f64().unwrap();
    assert!(far * 10.0 * probes as f64 >= 1.0 && far > 1e-6);
    assert!(m["angular_fisher_score"]["lfw"].as_f64().unwrap() > 0.0);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for part in [
        "## LFW (View 2)",
        "## YouTube Faces",
        "## MegaFace",
        "![",
        "(roc.svg)",
        "(cmc.svg)",
        "(curve.svg)",
    ] {
        assert!(report.contains(part), "report lacks {part}");
    }
    for stem in ["roc", "cmc", "curve"] {
        let b = std::fs::read(dir.join(format!("{stem}.png"))).unwrap();
        assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), 800, "{stem}.png width");
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg width=\"800\""), "{stem}.svg");
    }
    // The ROC's FAR axis is logarithmic and reaches as low as the impostor pairs do: 10 per
    // set here, so down to 10⁻¹.
    let roc = std::fs::read_to_string(dir.join("roc.svg")).unwrap();
    assert!(roc.contains("\n10⁻¹\n") && roc.contains("\nfalse accept rate\n"), "{roc}");
    assert!(!roc.contains("\n10⁻²\n"), "{roc}");
    assert!(r.stdout.contains("evaluate: LFW accuracy"), "{}", r.stdout);
    // `compare`: one markdown row per evaluation, in input order, printed at the end of the run.
    let md = std::fs::read_to_string(s.artifact_dir("compare").join("table.md")).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| 1 ") || l.starts_with("| 2 ")).collect();
    assert_eq!(rows.len(), 2, "{md}");
    let pct = |v: &serde_json::Value| format!("{:.2}%", 100.0 * v.as_f64().unwrap());
    assert!(
        rows[0].contains(&pct(&m["lfw"]["accuracy"])) && rows[0].contains(&pct(&m["ytf"]["accuracy"])),
        "{md}"
    );
    assert!(r.stdout.contains("compare: Both\n#  "), "{}", r.stdout);
    // Which differences the folds carry: LFW's per-fold accuracies of the two evaluations (each
    // its own headline protocol), paired; t recomputed here from metrics.json by hand.
    let single: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.artifact_dir("evaluate_single").join("metrics.json")).unwrap()).unwrap();
    let folds = |m: &serde_json::Value| -> Vec<f64> {
        let proto = m["lfw"]["protocol"].as_str().unwrap();
        m["lfw"]["protocols"][proto]["folds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["accuracy"].as_f64().unwrap())
            .collect()
    };
    let d: Vec<f64> = folds(&m).iter().zip(folds(&single)).map(|(a, b)| a - b).collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (d.len() - 1) as f64).sqrt();
    let sig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.artifact_dir("compare").join("significance.json")).unwrap()).unwrap();
    let pair = sig.as_array().unwrap().iter().find(|r| r["set"] == "LFW").expect("an LFW pair");
    assert!((pair["test"]["mean_diff"].as_f64().unwrap() - mean).abs() < 1e-12, "{pair}");
    if sd > 0.0 {
        let t = mean / (sd / (d.len() as f64).sqrt());
        assert!((pair["test"]["t"].as_f64().unwrap() - t).abs() < 1e-9, "{pair}");
    }
    let (pt, pw) = (pair["test"]["p_t"].as_f64().unwrap(), pair["test"]["p_wilcoxon"].as_f64().unwrap());
    assert_eq!(pair["verdict"] == "no significant difference", pt >= 0.05 || pw >= 0.05, "{pair}");
    assert!(md.contains("## Which differences the folds carry"), "{md}");
    assert!(r.stdout.contains("pairs: no significant difference over the folds"), "{}", r.stdout);

    // A param change of training reruns training and everything after it, nothing before.
    let r = s.run(&["--set", "train.m=2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let states = s.last_states();
    for st in ["synth", "align", "shard", "align_lfw", "flip_lfw"] {
        assert_eq!(states[st], "cached", "{st}");
    }
    for st in [
        "train@patch=top",
        "extract_lfw@patch=face",
        "ensemble_lfw",
        "evaluate",
        "evaluate_single",
    ] {
        assert_eq!(states[st], "ran", "{st}");
    }

    // `metrics`: a row per evaluation, the numbers of its metrics.json; `--history` adds the
    // first run's (m = 4, default) next to the current m = 2 ones.
    let evaluated: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.artifact_dir("evaluate").join("metrics.json")).unwrap()).unwrap();
    let lfw_pct = format!("{:.2}%", 100.0 * evaluated["lfw"]["accuracy"].as_f64().unwrap());
    let r = s.sp(&["metrics", "p.yaml", "--set", "train.m=2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("STAGE") && lines[0].contains("LFW") && lines[0].contains("MF rank-1"),
        "{}",
        r.stdout
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with("evaluate "))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(row.contains(&lfw_pct) && row.contains("a-softmax m=2"), "{row} vs {lfw_pct}");
    assert!(lines.iter().any(|l| l.starts_with("evaluate_single ")));
    let r = s.sp(&["metrics", "p.yaml", "--history"]);
    assert!(
        r.stdout.contains("a-softmax m=4") && r.stdout.contains("--set train.m=2"),
        "{}",
        r.stdout
    );

    python_reads(&s.artifact_dir("ensemble_lfw").join("features.parquet"), lfw.len(), 12);
}

/// pyarrow and DuckDB read the feature table as is (required in CI).
fn python_reads(file: &Path, rows: usize, dim: usize) {
    let python = std::env::var("SPHEREPIPE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys, pyarrow.parquet as pq
f, rows, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = pq.read_table(f)
assert [x.name for x in t.schema] == ["source", "identity", "dataset", "video", "feature"], t.schema
assert str(t.schema.field("feature").type) == f"fixed_size_list<item: float not null>[{dim}]", t.schema.field("feature").type
assert t.num_rows == rows
try:
    import duckdb
    n, d = duckdb.connect().execute(f"select count(*), max(len(feature)) from read_parquet('{f}')").fetchone()
    assert (n, d) == (rows, dim), (n, d)
except ImportError:
    print("duckdb: not installed")
print("independent readers ok")
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(file)
        .arg(rows.to_string())
        .arg(dim.to_string())
        .output();
    let required = std::env::var("SPHEREPIPE_REQUIRE_PYARROW").is_ok();
    match out {
        Ok(o) if o.status.success() => assert!(String::from_utf8_lossy(&o.stdout).contains("independent readers ok")),
        Ok(o) if !required && String::from_utf8_lossy(&o.stderr).contains("No module named 'pyarrow'") => {
            eprintln!("pyarrow not installed: skipping the independent-reader check")
        }
        Ok(o) => panic!("python check failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) if !required => eprintln!("no python ({e}): skipping the independent-reader check"),
        Err(e) => panic!("python required: {e}"),
    }
}

#[test]
fn mismatched_inputs_fail_with_a_named_fix() {
    let s = Sandbox::new();
    // LFW pairs scored against distractor features; test faces aligned at another size.
    s.write(&pipeline(
        r#"  evaluate_wrong:
    kind: evaluate
    inputs: {data: synth, lfw: extract_distractors@patch=face}
  align_small: {kind: align, inputs: {images: synth}, params: {format: lfw, size: [56, 48], reference: [[15.1, 25.8], [32.8, 25.8], [24.0, 35.9], [16.8, 46.2], [31.4, 46.1]]}}
  extract_small: {kind: extract, inputs: {model: train@patch=face, faces: align_small}}
"#,
    ));
    let r = s.run(&["--keep-going"]);
    assert_eq!(r.code, 1);
    let all = format!("{}\n{}", r.stdout, r.stderr);
    assert!(all.contains("none of the 20 pairs"), "{all}");
    assert!(all.contains("bind `lfw` to the features of that LFW"), "{all}");
    assert!(all.contains("is 56x48 but the model was trained on 112x96"), "{all}");
    assert!(all.contains("align the test set with the same `size` as training"), "{all}");
    let states = s.last_states();
    assert_eq!(states["evaluate"], "ran");
    assert_eq!(states["evaluate_wrong"], "failed");
}
