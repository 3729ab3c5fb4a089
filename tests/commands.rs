//! status, dag, show, verify, gc and --dry-run, checked against what is on disk.

use crate::common::Sandbox;
use serde_json::Value;

fn json(r: &crate::common::Ran) -> Value {
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).expect("JSON output")
}

fn state_of(rows: &Value, stage: &str) -> (String, String) {
    let row = rows.as_array().unwrap().iter().find(|r| r["stage"] == stage).expect("stage listed");
    (
        row["state"].as_str().unwrap().to_owned(),
        row["reason"].as_str().unwrap().to_owned(),
    )
}

/// The machine-readable kind of a stage's first stale reason (empty when cached).
fn reason_kind(rows: &Value, stage: &str) -> String {
    let row = rows.as_array().unwrap().iter().find(|r| r["stage"] == stage).expect("stage listed");
    row["reason_kind"].as_str().unwrap().to_owned()
}

#[test]
fn status_says_never_run_cached_and_stale_with_the_reason() {
    let s = Sandbox::diamond();
    let rows = json(&s.sp(&["status", "p.yaml", "--json"]));
    assert_eq!(state_of(&rows, "draw").0, "never-run");
    assert_eq!(
        state_of(&rows, "total"),
        ("never-run".into(), "upstream `half` is never-run".into())
    );
    assert_eq!(
        (reason_kind(&rows, "draw"), reason_kind(&rows, "total")),
        ("never-run".into(), "upstream".into())
    );

    assert_eq!(s.run(&[]).code, 0);
    let rows = json(&s.sp(&["status", "p.yaml", "--json"]));
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["state"] == "cached" && r["reason_kind"] == ""));

    let rows = json(&s.sp(&["status", "p.yaml", "--json", "--set", "draw.count=7"]));
    assert_eq!(state_of(&rows, "draw"), ("stale".into(), "param count: 50 -> 7".into()));
    assert_eq!(state_of(&rows, "half"), ("stale".into(), "upstream `draw` is stale".into()));
    assert_eq!(
        (reason_kind(&rows, "draw"), reason_kind(&rows, "half")),
        ("param".into(), "upstream".into())
    );
    assert_eq!(state_of(&rows, "words").0, "cached");
    // Every reason, typed, each with its fields: two params changed are two reasons.
    let rows = json(&s.sp(&["status", "p.yaml", "--json", "--set", "draw.count=7", "--set", "draw.delay_ms=1"]));
    let row = |stage: &str| rows.as_array().unwrap().iter().find(|r| r["stage"] == stage).unwrap().clone();
    assert_eq!(
        row("draw")["reasons"],
        serde_json::json!([
            {"kind": "param", "name": "count", "from": 50, "to": 7},
            {"kind": "param", "name": "delay_ms", "from": 0, "to": 1}
        ])
    );
    assert_eq!(row("draw")["reason"], "param count: 50 -> 7; param delay_ms: 0 -> 1");
    assert_eq!(
        row("half")["reasons"],
        serde_json::json!([{"kind": "upstream", "stage": "draw", "state": "stale"}])
    );

    std::fs::write(s.path().join("notes/a.txt"), "changed words").unwrap();
    let rows = json(&s.sp(&["status", "p.yaml", "--json"]));
    assert_eq!(
        state_of(&rows, "words"),
        ("stale".into(), "input `text` changed (dataset `notes`)".into())
    );
    assert_eq!(reason_kind(&rows, "words"), "input");
}

#[test]
fn dry_run_runs_nothing() {
    let s = Sandbox::diamond();
    let r = s.sp(&["run", "p.yaml", "--dry-run"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("dry run: 5 of 5 stages would run"), "{}", r.stdout);
    assert!(s.runs().is_empty());
    assert_eq!(std::fs::read_dir(s.cache().join("artifacts")).unwrap().count(), 0);
}

#[test]
fn dag_prints_text_and_graphviz() {
    let s = Sandbox::diamond();
    let r = s.sp(&["dag", "p.yaml"]);
    assert!(r.stdout.contains("total [sum]\n  parts <- half, double\n"), "{}", r.stdout);
    assert!(r.stdout.contains("words [wordcount]\n  text <- dataset notes\n"), "{}", r.stdout);
    let r = s.sp(&["dag", "p.yaml", "--dot"]);
    assert!(r.stdout.starts_with("digraph \"diamond\" {"));
    assert!(r.stdout.contains("\"half\" -> \"total\" [label=\"parts\"];"), "{}", r.stdout);
    assert!(r.stdout.contains("\"dataset notes\" -> \"words\" [label=\"text\"];"));
}

#[test]
fn show_gives_fingerprint_artifact_and_files() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let v = json(&s.sp(&["show", "p.yaml", "total", "--json"]));
    let dir = std::path::PathBuf::from(v["artifact"].as_str().unwrap());
    assert!(dir.is_absolute());
    assert_eq!(dir.file_name().unwrap().to_str().unwrap(), s.last_artifacts()["total"]);
    assert_eq!(v["fingerprint"].as_str().unwrap().len(), 64);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["path"], "total.txt");
    let content = std::fs::read(dir.join("total.txt")).unwrap();
    assert_eq!(files[0]["blake3"].as_str().unwrap(), blake3_hex(&content));
    assert_eq!(files[0]["size"].as_u64().unwrap(), content.len() as u64);
    assert_eq!(v["last_run"]["state"], "ran");
    assert_eq!(v["params"], serde_json::json!({}));
    let r = s.sp(&["show", "p.yaml", "totl"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("did you mean `total`?"));
}

/// blake3 of the bytes as re-read from disk, computed here rather than by the store.
fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[test]
fn verify_finds_a_flipped_byte_and_the_next_run_rebuilds_it() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let a = s.last_artifacts();
    let path = s.cache().join("artifacts").join(&a["double"]).join("numbers.txt");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let r = s.sp(&["verify", "--cache", "cache"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains(&format!("corrupted: {} (numbers.txt changed)", a["double"])),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("verified 5 artifacts: 1 corrupted"), "{}", r.stdout);

    let rows = json(&s.sp(&["status", "p.yaml", "--json"]));
    assert_eq!(state_of(&rows, "double").0, "stale");
    assert!(state_of(&rows, "double").1.contains("no longer in the cache"));
    assert_eq!(s.run(&[]).code, 0);
    assert_eq!(s.last_states()["double"], "ran");
    assert_eq!(s.last_states()["total"], "cached");
    assert_eq!(s.last_artifacts(), a);
    assert_eq!(s.sp(&["verify", "--cache", "cache"]).code, 0);
}

/// A cache's own index and manifests are read as untrusted too (another user, a bad disk, a
/// hand edit): an entry with a short, climbing or foreign artifact, junk under `index/` and
/// `artifacts/`, and a manifest edited to climb out make no command panic, and the next run
/// rebuilds what they named.
#[test]
fn odd_entries_in_a_cache_make_no_command_panic_and_are_rebuilt() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let fps: std::collections::BTreeMap<String, String> = json(&s.sp(&["status", "p.yaml", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["stage"].as_str().unwrap().to_owned(),
                v["fingerprint"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let index = |stage: &str| s.cache().join("index").join(format!("{}.json", fps[stage]));
    let entry = |artifact: &str| format!(r#"{{"fingerprint":"{}","artifact":"{artifact}"}}"#, fps["draw"]);
    std::fs::write(index("draw"), entry("abc")).unwrap();
    std::fs::write(index("half"), entry("../../../../tmp")).unwrap();
    std::fs::write(s.cache().join("index/junk.json"), b"{\"fingerprint\": 3").unwrap();
    std::fs::write(s.cache().join("index/x.json"), entry("abc")).unwrap();
    std::fs::create_dir_all(s.cache().join("artifacts/not-a-hash")).unwrap();
    // `words`' manifest, edited to list a file that climbs out.
    let words = s.last_artifacts()["words"].clone();
    let mpath = s.cache().join("artifacts").join(&words).join(".manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    m["files"][0]["path"] = "../../../escape.txt".into();
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();

    for args in [
        vec!["status", "p.yaml"],
        vec!["status", "p.yaml", "--json"],
        vec!["show", "p.yaml", "draw"],
        vec!["show", "p.yaml", "words", "--json"],
        vec!["gc", "p.yaml"],
    ] {
        let r = s.sp(&args);
        assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
    }
    let r = s.sp(&["verify", "--cache", "cache"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(&words) && r.stdout.contains("`..` component"), "{}", r.stdout);
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let states = s.last_states();
    for stage in ["draw", "half", "words"] {
        assert_eq!(states[stage], "ran", "{stage} is rebuilt: {states:?}");
    }
    assert!(!s.path().parent().unwrap().join("escape.txt").exists());
    assert_eq!(s.sp(&["verify", "--cache", "cache"]).code, 0);
}

#[test]
fn gc_lists_then_deletes_what_no_pipeline_uses() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let old = s.last_artifacts();
    assert_eq!(s.run(&["--set", "half.factor=0.25"]).code, 0);
    let new = s.last_artifacts();
    // The file still says 0.5, so the 0.25 results are the unused ones.
    let r = s.sp(&["gc", "p.yaml"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains(&new["half"]) && r.stdout.contains(&new["total"]), "{}", r.stdout);
    assert!(!r.stdout.contains(&old["half"]));
    assert!(r.stdout.contains("5 artifacts kept, 2 unused"), "{}", r.stdout);
    assert!(s.cache().join("artifacts").join(&new["half"]).exists());
    let r = s.sp(&["gc", "p.yaml", "--yes"]);
    assert!(r.stdout.contains("5 artifacts kept, 2 deleted"), "{}", r.stdout);
    assert!(!s.cache().join("artifacts").join(&new["half"]).exists());
    assert!(s.cache().join("artifacts").join(&old["half"]).exists());
    assert_eq!(s.run(&[]).code, 0);
    assert!(s.last_states().values().all(|v| v == "cached"));
}

/// With two caches, each cache's closing line counts its own bytes (the total used to run on
/// across caches, so the second line also counted the first's).
#[test]
fn gc_over_two_caches_counts_each_caches_bytes() {
    let s = Sandbox::diamond();
    let other = crate::common::DIAMOND.replace("name: diamond", "name: other\ncache: cache2");
    std::fs::write(s.path().join("q.yaml"), &other).unwrap();
    for file in ["p.yaml", "q.yaml"] {
        assert_eq!(s.sp(&["run", file, "--quiet"]).code, 0);
        assert_eq!(s.sp(&["run", file, "--quiet", "--set", "half.factor=0.25"]).code, 0);
    }
    let r = s.sp(&["gc", "p.yaml", "q.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bytes_in = |line: &str| -> u64 {
        let open = line.rfind('(').unwrap();
        line[open + 1..].split(' ').next().unwrap().parse().unwrap()
    };
    let mut listed = 0u64;
    let mut totals = Vec::new();
    for line in r.stdout.lines() {
        if line.starts_with("unused ") {
            listed += bytes_in(line);
        } else if line.contains("artifacts kept") {
            totals.push((bytes_in(line), listed));
            listed = 0;
        }
    }
    assert_eq!(totals.len(), 2, "{}", r.stdout);
    for (said, items) in totals {
        assert!(
            said > 0 && said == items,
            "a cache's line says {said} bytes, its items {items}: {}",
            r.stdout
        );
    }
}

#[test]
fn kinds_lists_params_with_defaults() {
    let s = Sandbox::new();
    let r = s.sp(&["kinds"]);
    assert!(r.stdout.contains("scale (version 1)"));
    assert!(
        r.stdout.contains("param  factor           number = 2.0: multiplier"),
        "{}",
        r.stdout
    );
    // Which kinds split into parts: exactly the splittable ones say so.
    let mut kind = "";
    let mut split = Vec::new();
    for line in r.stdout.lines() {
        if !line.starts_with(' ') {
            kind = line.split(' ').next().unwrap_or_default();
        } else if line.contains("splits into `parts: N`") {
            split.push(kind);
        }
    }
    assert_eq!(split, ["align", "chunks", "detect", "extract", "unpack"]);
}

#[test]
fn show_with_a_matrix_stage_base_name_lists_its_expansions() {
    let s = Sandbox::new();
    s.write("name: m\nstages:\n  draw: {kind: numbers, matrix: {count: [3, 5]}}\n");
    let r = s.sp(&["show", "p.yaml", "draw"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("`draw` is a matrix stage of p.yaml: name one of its 2 expansions")
            && r.stderr.contains("fix: use one of draw@count=3, draw@count=5"),
        "{}",
        r.stderr
    );
    let r = s.sp(&["show", "p.yaml", "drow@count=3"]);
    assert!(
        r.stderr.contains("no stage `drow@count=3`") && r.stderr.contains("did you mean `draw@count=3`?"),
        "{}",
        r.stderr
    );
}
