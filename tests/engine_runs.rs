//! Incremental behaviour of `spherepipe run`: what runs, what is cached, and what the
//! artifacts contain.

use crate::common::{numbers, Sandbox};
use std::collections::BTreeMap;

fn states(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn a_diamond_runs_each_stage_once_then_nothing() {
    let s = Sandbox::diamond();
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        s.last_states(),
        states(&[
            ("draw", "ran"),
            ("half", "ran"),
            ("double", "ran"),
            ("total", "ran"),
            ("words", "ran")
        ])
    );

    // The artifacts hold what the stages should compute: total = sum(x/2) + sum(2x).
    let a = s.last_artifacts();
    let xs = numbers(&s.artifact_file(&a["draw"], "numbers.txt"));
    assert_eq!(xs.len(), 50);
    assert!(xs.iter().all(|x| (0.0..1000.0).contains(x) && x.fract() == 0.0));
    let expect: f64 = xs.iter().map(|x| x * 0.5 + x * 2.0).sum();
    let total: f64 = s.artifact_file(&a["total"], "total.txt").trim().parse().unwrap();
    assert!((total - expect).abs() < 1e-9, "{total} vs {expect}");
    assert_eq!(
        s.artifact_file(&a["words"], "counts.tsv"),
        "and\t1\ncat\t1\nend\t1\nhat\t1\nthe\t3\n"
    );

    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(s.last_states().values().all(|v| v == "cached"), "{:?}", s.last_states());
    assert_eq!(s.runs().len(), 2);
}

#[test]
fn a_param_change_reruns_exactly_that_stage_and_its_descendants() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let before = s.last_artifacts();
    let r = s.run(&["--set", "double.factor=3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        s.last_states(),
        states(&[
            ("draw", "cached"),
            ("half", "cached"),
            ("double", "ran"),
            ("total", "ran"),
            ("words", "cached")
        ])
    );
    let after = s.last_artifacts();
    assert_ne!(before["double"], after["double"]);
    let xs = numbers(&s.artifact_file(&after["draw"], "numbers.txt"));
    let total: f64 = s.artifact_file(&after["total"], "total.txt").trim().parse().unwrap();
    assert!((total - xs.iter().map(|x| x * 3.5).sum::<f64>()).abs() < 1e-9);

    // Back to the file's value: everything is cached again, from the first run.
    assert_eq!(s.run(&[]).code, 0);
    assert!(s.last_states().values().all(|v| v == "cached"));
    assert_eq!(s.last_artifacts(), before);
}

#[test]
fn a_changed_dataset_reruns_its_readers_only() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    std::fs::write(s.path().join("notes/c.txt"), "cat").unwrap();
    assert_eq!(s.run(&[]).code, 0);
    assert_eq!(s.last_states()["words"], "ran");
    assert_eq!(s.last_states().values().filter(|v| *v == "ran").count(), 1);
    assert!(s.artifact_file(&s.last_artifacts()["words"], "counts.tsv").contains("cat\t2\n"));
}

#[test]
fn early_cutoff_keeps_dependents_cached_when_output_is_unchanged() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let before = s.last_artifacts();
    // Every drawn number is < 1000, so doubling never reaches 5000: same output.
    let r = s.run(&["--set", "double.clamp_max=5000"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.last_states()["double"], "ran");
    assert_eq!(s.last_states()["total"], "cached");
    assert_eq!(s.last_artifacts()["double"], before["double"]);
    // A cap that bites changes the output and so the total.
    assert_eq!(s.run(&["--set", "double.clamp_max=10"]).code, 0);
    assert_eq!(s.last_states()["total"], "ran");
}

#[test]
fn force_reruns_a_cached_stage() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    assert_eq!(s.run(&["--force", "half"]).code, 0);
    let st = s.last_states();
    assert_eq!(st["half"], "ran");
    // Same content, so early cutoff keeps `total` cached.
    assert_eq!(st["total"], "cached");
}

#[test]
fn matrix_stages_expand_and_pair_up_with_same_matrix_dependents() {
    let s = Sandbox::new();
    s.write(
        r#"
name: m
stages:
  draw: {kind: numbers, params: {count: 5}}
  scale: {kind: scale, inputs: {numbers: draw}, matrix: {factor: [1, 10]}}
  again: {kind: scale, inputs: {numbers: scale}, matrix: {factor: [1, 10]}, params: {clamp_max: 1.0e12}}
  total: {kind: sum, inputs: {parts: again}}
"#,
    );
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let names: Vec<String> = s.last_states().into_keys().collect();
    assert_eq!(
        names,
        [
            "again@factor=1.0",
            "again@factor=10.0",
            "draw",
            "scale@factor=1.0",
            "scale@factor=10.0",
            "total"
        ]
    );
    let a = s.last_artifacts();
    let xs = numbers(&s.artifact_file(&a["draw"], "numbers.txt"));
    // Paired: factor 1 with 1 and 10 with 10, so the total is sum(x) + sum(100 x).
    let total: f64 = s.artifact_file(&a["total"], "total.txt").trim().parse().unwrap();
    assert!((total - xs.iter().map(|x| x * 101.0).sum::<f64>()).abs() < 1e-6, "{total}");
    // `--set` on a matrix param narrows the axis.
    let r = s.sp(&["dag", "p.yaml"]);
    assert!(
        r.stdout.contains("again@factor=10.0 [scale]\n  numbers <- scale@factor=10.0\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_single_input_from_a_matrix_stage_carries_the_matrix_downstream() {
    let s = Sandbox::new();
    // `again` and `third` declare no matrix: they inherit `scale`'s axis through their
    // single-artifact input (set by no param of theirs: each keeps its own `factor`), while
    // `total` takes a list and fans in.
    s.write(
        r#"
name: m
stages:
  total: {kind: sum, inputs: {parts: [third]}}
  third: {kind: scale, inputs: {numbers: again}, params: {factor: 3}}
  again: {kind: scale, inputs: {numbers: scale}, params: {factor: 2}}
  scale: {kind: scale, inputs: {numbers: draw}, matrix: {factor: [1, 10]}}
  draw: {kind: numbers, params: {count: 5}}
"#,
    );
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let names: Vec<String> = s.last_states().into_keys().collect();
    assert_eq!(
        names,
        [
            "again@factor=1.0",
            "again@factor=10.0",
            "draw",
            "scale@factor=1.0",
            "scale@factor=10.0",
            "third@factor=1.0",
            "third@factor=10.0",
            "total"
        ]
    );
    let a = s.last_artifacts();
    let xs = numbers(&s.artifact_file(&a["draw"], "numbers.txt"));
    // Each chain multiplies by its own factor, then 2, then 3: sum(6 x) + sum(60 x).
    assert_eq!(
        numbers(&s.artifact_file(&a["third@factor=10.0"], "numbers.txt")),
        xs.iter().map(|x| x * 60.0).collect::<Vec<_>>()
    );
    let total: f64 = s.artifact_file(&a["total"], "total.txt").trim().parse().unwrap();
    assert!((total - xs.iter().map(|x| x * 66.0).sum::<f64>()).abs() < 1e-6, "{total}");
    let r = s.sp(&["dag", "p.yaml"]);
    assert!(
        r.stdout.contains("third@factor=10.0 [scale]\n  numbers <- again@factor=10.0\n"),
        "{}",
        r.stdout
    );
    // Narrowed to one value, the chain keeps its names (and its cached artifacts); `total`
    // now sums one chain, so it reruns.
    let r = s.run(&["--set", "scale.factor=10"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let states = s.last_states();
    assert_eq!(
        states.keys().cloned().collect::<Vec<_>>(),
        ["again@factor=10.0", "draw", "scale@factor=10.0", "third@factor=10.0", "total"]
    );
    assert!(
        states.iter().filter(|(k, _)| *k != "total").all(|(_, v)| v == "cached"),
        "{states:?}"
    );
    assert_eq!(states["total"], "ran");
}

#[test]
fn a_failure_skips_dependents_and_keep_going_finishes_other_branches() {
    let s = Sandbox::new();
    s.write(
        r#"
name: f
stages:
  broken: {kind: fail, params: {message: "the disk is made of cheese"}}
  after: {kind: sum, inputs: {parts: [broken]}}
  other: {kind: numbers, params: {count: 3}}
"#,
    );
    let r = s.run(&["--jobs", "1"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("the disk is made of cheese"), "{}", r.stdout);
    let st = s.last_states();
    assert_eq!(
        (st["broken"].as_str(), st["after"].as_str(), st["other"].as_str()),
        ("failed", "skipped", "skipped")
    );
    // The failed stage left nothing behind.
    assert_eq!(std::fs::read_dir(s.cache().join("tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(s.cache().join("artifacts")).unwrap().count(), 0);

    let r = s.run(&["--jobs", "1", "--keep-going"]);
    assert_eq!(r.code, 1);
    let st = s.last_states();
    assert_eq!(
        (st["broken"].as_str(), st["after"].as_str(), st["other"].as_str()),
        ("failed", "skipped", "ran")
    );
    assert!(r.stdout.contains("upstream `broken` failed"), "{}", r.stdout);
}

#[test]
fn a_panicking_stage_is_a_failure_not_a_crash() {
    let s = Sandbox::new();
    s.write("name: p\nstages:\n  boom: {kind: panic}\n  fine: {kind: numbers}\n");
    let r = s.run(&["--keep-going"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout.contains("the stage panicked (a bug in stage kind `panic`)"),
        "{}",
        r.stdout
    );
    assert_eq!(s.last_states()["fine"], "ran");
}

#[test]
fn the_seed_enters_the_fingerprint_of_seeded_kinds_only() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let first = s.last_artifacts();
    s.write(&crate::common::DIAMOND.replace("seed: 11", "seed: 12"));
    assert_eq!(s.run(&[]).code, 0);
    let st = s.last_states();
    assert_eq!(st["draw"], "ran");
    assert_eq!(st["words"], "cached");
    assert_ne!(s.last_artifacts()["draw"], first["draw"]);
}
