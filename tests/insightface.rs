//! insightface's data as it comes (issue 25): `synth` writes a RecordIO pack and `lfw.bin` as
//! insightface distributes them, `unpack` turns them into face tables that train, and what
//! `synth` writes reads in an independent Python reader. Bad records and bins are listed or
//! refused, naming the file.

use crate::common::Sandbox;
use std::path::Path;
use std::process::Command;

const PACK: &str = "insightface/faces_synth_112x112";

fn pipeline(extra: &str) -> String {
    format!(
        "name: ins
seed: 3
stages:
  synth: {{kind: synth, params: {{preset: tiny, insightface: true}}}}
  pack: {{kind: unpack, inputs: {{data: synth}}, params: {{file: {PACK}}}}}
  lfw: {{kind: unpack, inputs: {{data: synth}}, params: {{format: bin, file: {PACK}/lfw.bin}}}}
{extra}"
    )
}

fn report(s: &Sandbox, stage: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(s.artifact_dir(stage).join("report.json")).unwrap()).unwrap()
}

#[test]
fn a_pack_and_a_bin_from_synth_unpack_and_train() {
    let s = Sandbox::new();
    s.write(&pipeline(&format!(
        "  parts3: {{kind: unpack, inputs: {{data: synth}}, params: {{file: {PACK}}}, parts: 3}}
  framed: {{kind: unpack, inputs: {{data: synth}}, params: {{file: {PACK}, crop: sphereface}}}}
  flip: {{kind: flip, inputs: {{faces: framed}}}}
  shard: {{kind: shard, inputs: {{faces: flip}}, params: {{rows_per_shard: 500, row_group_size: 128}}}}
  train: {{kind: train, inputs: {{shards: shard}}, params: {{net: sphere10, width: 0.25, steps: 4, batch: 8, milestones: [2, 3]}}}}
  shard_full: {{kind: shard, inputs: {{faces: pack}}, params: {{rows_per_shard: 500, row_group_size: 128}}}}
  train_full: {{kind: train, inputs: {{shards: shard_full}}, params: {{net: sphere10, width: 0.25, steps: 2, batch: 8, milestones: [1]}}}}
  framed_lfw: {{kind: unpack, inputs: {{data: synth}}, params: {{format: bin, file: {PACK}/lfw.bin, crop: sphereface}}}}
  extract_lfw: {{kind: extract, inputs: {{model: train, faces: framed_lfw}}}}
  evaluate: {{kind: evaluate, inputs: {{data: synth, bins: [framed_lfw], bin_features: [extract_lfw], model: train}}}}
"
    )));
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // Every CASIA image of the corpus, in its identity's class.
    let casia = std::fs::read_to_string(s.artifact_dir("synth").join("casia_landmark.txt")).unwrap();
    let listed = casia.lines().filter(|l| !l.trim().is_empty()).count();
    let classes: std::collections::BTreeSet<&str> = casia.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    let pack = report(&s, "pack");
    assert_eq!(
        (pack["listed"].as_u64(), pack["unpacked"].as_u64()),
        (Some(listed as u64), Some(listed as u64))
    );
    assert_eq!(pack["classes"].as_u64(), Some(classes.len() as u64));
    let property = std::fs::read_to_string(s.artifact_dir("synth").join(PACK).join("property")).unwrap();
    assert_eq!(property.trim(), format!("{},112,112", classes.len()));
    // In parts: the same bytes.
    assert_eq!(
        std::fs::read(s.artifact_dir("parts3").join("faces.parquet")).unwrap(),
        std::fs::read(s.artifact_dir("pack").join("faces.parquet")).unwrap()
    );
    // Each training took its input size from the data: 112 × 96 (the SphereFace framing) or
    // the pack's own 112 × 112, and its card says so.
    for (train, input) in [("train", [112, 96]), ("train_full", [112, 112])] {
        let card = std::fs::read_to_string(s.artifact_dir(train).join("model.json")).unwrap();
        let card: serde_json::Value = serde_json::from_str(&card).unwrap();
        assert_eq!(card["net"]["input"], serde_json::json!(input), "{card}");
    }
    // lfw.bin: LFW's pairs in order.
    let pairs_txt = std::fs::read_to_string(s.artifact_dir("synth").join("lfw/pairs.txt")).unwrap();
    let pairs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.artifact_dir("lfw").join("pairs.json")).unwrap()).unwrap();
    let same: Vec<bool> = pairs["same"].as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect();
    let want: Vec<bool> = pairs_txt
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().count() == 3)
        .collect();
    assert_eq!(same, want);
    assert_eq!(pairs["set"], "LFW");
    assert_eq!(report(&s, "lfw")["unpacked"].as_u64(), Some(2 * want.len() as u64));
    // evaluate scores the bin with insightface's protocol, under the set's name, every pair.
    let metrics = std::fs::read_to_string(s.artifact_dir("evaluate").join("metrics.json")).unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    let bin = &metrics["bins"][0];
    assert_eq!(bin["set"], "LFW");
    let v = &bin["verification"];
    assert_eq!(
        (v["protocol"].as_str(), v["pairs"].as_u64(), v["pairs_listed"].as_u64()),
        (Some("sum-l2"), Some(want.len() as u64), Some(want.len() as u64))
    );
    let folds = v["protocols"]["sum-l2"]["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 10);
    // One column per set in `metrics`.
    let table = s.sp(&["metrics", "p.yaml"]).stdout;
    assert!(table.lines().next().unwrap_or_default().contains("LFW"), "{table}");
}

#[test]
fn synths_pack_reads_in_the_independent_python_reader() {
    let s = Sandbox::new();
    s.write(&pipeline(""));
    assert_eq!(s.run(&[]).code, 0);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/recordio/tests/recordio_reference.py");
    let out = match Command::new("python3")
        .arg(script)
        .arg("read")
        .arg(s.artifact_dir("synth").join(PACK))
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "CI needs python3: {e}");
            eprintln!("skipped: no python3 ({e})");
            return;
        }
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = v["records"].as_array().unwrap();
    let images = report(&s, "pack")["listed"].as_u64().unwrap() as usize;
    // Record 0's header names the images' key range; each image record is a JPEG of its class.
    assert_eq!(records[0]["labels"][0].as_f64(), Some(images as f64 + 1.0));
    for r in &records[1..=images] {
        assert!(r["image"].as_str().unwrap().starts_with("ffd8ff"), "not a JPEG: key {}", r["key"]);
        assert_eq!(r["labels"].as_array().unwrap().len(), 1);
    }
    // Its lfw.bin loads as insightface's load_bin loads one.
    let load = "import pickle, sys\nimages, same = pickle.load(open(sys.argv[1], 'rb'), encoding='bytes')\nprint(len(images), len(same), sum(same), all(i[:3] == b'\\xff\\xd8\\xff' for i in images))";
    let bin = s.artifact_dir("synth").join(PACK).join("lfw.bin");
    let out = Command::new("python3").args(["-c", load]).arg(&bin).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pairs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.artifact_dir("lfw").join("pairs.json")).unwrap()).unwrap();
    let same = pairs["same"].as_array().unwrap();
    let genuine = same.iter().filter(|b| b.as_bool() == Some(true)).count();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} {} {genuine} True", 2 * same.len(), same.len())
    );
    // The stand-ins load too, each about LFW's size and half genuine.
    for set in ["cfp_ff", "cfp_fp", "vgg2_fp", "cplfw", "agedb_30", "calfw"] {
        let bin = s.artifact_dir("synth").join(PACK).join(format!("{set}.bin"));
        let out = Command::new("python3").args(["-c", load]).arg(&bin).output().unwrap();
        assert!(out.status.success(), "{set}: {}", String::from_utf8_lossy(&out.stderr));
        let counts: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
        let pairs: usize = counts[1].parse().unwrap();
        let genuine: usize = counts[2].parse().unwrap();
        assert!(
            pairs + 2 >= same.len().max(20) && genuine * 2 + 2 >= pairs && counts[3] == "True",
            "{set}: {counts:?}"
        );
    }
}

#[test]
fn damaged_records_are_listed_and_a_non_pack_is_refused() {
    let s = Sandbox::new();
    s.write(&pipeline(""));
    assert_eq!(s.run(&[]).code, 0);
    // A copy of the pack as a dataset, with record 2's magic broken and record 3's image mangled.
    let data = s.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["train.rec", "train.idx", "property", "lfw.bin"] {
        std::fs::copy(s.artifact_dir("synth").join(PACK).join(f), data.join(f)).unwrap();
    }
    let idx = std::fs::read_to_string(data.join("train.idx")).unwrap();
    let offset = |key: usize| idx.lines().nth(key).unwrap().split('\t').nth(1).unwrap().parse::<usize>().unwrap();
    let mut rec = std::fs::read(data.join("train.rec")).unwrap();
    rec[offset(2)] ^= 0xff;
    let image_at = offset(3) + 8 + 24;
    rec[image_at..image_at + 16].copy_from_slice(&[0u8; 16]);
    std::fs::write(data.join("train.rec"), rec).unwrap();
    s.write("name: bad\ndatasets: {data: {path: data}}\nstages:\n  pack: {kind: unpack, inputs: {data: data}}\n  notbin: {kind: unpack, inputs: {data: data}, params: {format: bin, file: property}}\n");
    let r = s.run(&["--keep-going"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let skipped = report(&s, "pack")["skipped"].as_array().unwrap().clone();
    let keys: Vec<u64> = skipped.iter().map(|x| x["key"].as_u64().unwrap()).collect();
    assert_eq!(keys, [2, 3], "{skipped:?}");
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("not RecordIO's magic"),
        "{skipped:?}"
    );
    assert!(
        skipped[1]["reason"].as_str().unwrap().contains("not a decodable image"),
        "{skipped:?}"
    );
    let said = s.sp(&["run", "p.yaml", "--keep-going"]).stdout;
    assert!(
        said.contains("data/property: byte 0: not a pickle of protocol 2 or later"),
        "{said}"
    );
    // A directory that is not a pack says what one is.
    s.write(
        "name: bad\ndatasets: {data: {path: data}}\nstages:\n  nopack: {kind: unpack, inputs: {data: data}, params: {file: elsewhere}}\n",
    );
    let said = s.sp(&["run", "p.yaml"]).stdout;
    assert!(
        said.contains("elsewhere/train.rec is missing: an insightface pack is a directory with train.rec, train.idx and property"),
        "{said}"
    );
}
