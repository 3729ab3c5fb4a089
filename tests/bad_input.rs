//! Every kind of bad pipeline file gets a located message with a fix, exit status 2, no
//! panic, and leaves the cache exactly as it was.

use crate::common::{Ran, Sandbox, DIAMOND};

/// Runs `yaml` (after a good run filled the cache) and checks the common promises.
fn rejected(yaml: &str, extra: &[&str]) -> Ran {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let before = s.snapshot();
    s.write(yaml);
    let r = s.run(extra);
    assert_eq!(r.code, 2, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(r.stderr.contains("error:"), "{}", r.stderr);
    assert!(r.stderr.contains("fix:"), "{}", r.stderr);
    assert_eq!(s.snapshot(), before, "the cache was touched");
    // `status` rejects it the same way.
    let mut a = vec!["status", "p.yaml"];
    a.extend_from_slice(extra);
    assert_eq!(s.sp(&a).code, 2);
    r
}

fn has(r: &Ran, needles: &[&str]) {
    for n in needles {
        assert!(r.stderr.contains(n), "missing {n:?} in:\n{}", r.stderr);
    }
}

#[test]
fn parts_on_a_kind_that_cannot_split_and_unknown_resources_are_located() {
    let r = rejected(&DIAMOND.replace("params: {count: 50}}", "params: {count: 50}, parts: 4}"), &[]);
    has(
        &r,
        &[
            "stage kind `numbers` cannot be split into parts",
            "stage: draw",
            "kinds that can be split: align, chunks, detect, extract, unpack",
        ],
    );
    let r = rejected(&DIAMOND.replace("params: {count: 50}}", "params: {count: 50}, parts: 0}"), &[]);
    has(&r, &["`parts: 0` leaves no part to run", "p.yaml:7:"]);
    let r = rejected(
        &DIAMOND.replace("params: {count: 50}}", "params: {count: 50}, resources: {gpu: 1}}"),
        &[],
    );
    has(&r, &["unknown field `gpu`", "gpus"]);
}

#[test]
fn malformed_yaml_points_at_the_line() {
    let r = rejected("name: x\nstages:\n  a: {kind: numbers\n  b: [\n", &[]);
    has(&r, &["invalid pipeline file", "p.yaml:4:"]);
}

#[test]
fn unknown_kind_lists_kinds_and_suggests_the_nearest() {
    let r = rejected(&DIAMOND.replace("kind: sum", "kind: summ"), &[]);
    has(
        &r,
        &[
            "unknown stage kind `summ`",
            "p.yaml:10:17",
            "stage: total",
            "did you mean `sum`?",
            "valid kinds: align, chunks, compare, dedupe, detect, ensemble, evaluate, export, extract, fail, figure, flip, hog, numbers, panic, scale, shard, steps, sum, synth, train, unpack, wordcount",
        ],
    );
}

#[test]
fn unknown_param_suggests_the_nearest() {
    let r = rejected(&DIAMOND.replace("params: {factor: 0.5}", "params: {facter: 0.5}"), &[]);
    has(
        &r,
        &[
            "stage kind `scale` has no param `facter`",
            "p.yaml:8:",
            "stage: half",
            "did you mean `factor`?",
        ],
    );
}

#[test]
fn mistyped_param_says_what_was_expected() {
    let r = rejected(&DIAMOND.replace("params: {count: 50}", "params: {count: fifty}"), &[]);
    has(
        &r,
        &[
            "param `count`: expected an integer, found the string \"fifty\"",
            "p.yaml:7:41",
            "stage: draw",
        ],
    );
}

#[test]
fn a_mistyped_override_is_rejected_too() {
    let r = rejected(DIAMOND, &["--set", "half.factor=lots"]);
    has(&r, &["param `factor`: expected a number", "stage: half"]);
    let r = rejected(DIAMOND, &["--set", "hlaf.factor=2"]);
    has(&r, &["there is no stage `hlaf`", "did you mean `half`?"]);
}

#[test]
fn missing_reference_names_what_exists() {
    let r = rejected(&DIAMOND.replace("parts: [half, double]", "parts: [half, duble]"), &[]);
    has(
        &r,
        &[
            "input `parts` refers to `duble`, which is neither a dataset nor a stage",
            "p.yaml:10:",
            "did you mean `double`?",
        ],
    );
}

#[test]
fn a_cycle_is_printed() {
    let yaml = "name: c\nstages:\n  a: {kind: scale, inputs: {numbers: c}}\n  b: {kind: scale, inputs: {numbers: a}}\n  c: {kind: scale, inputs: {numbers: b}}\n  d: {kind: numbers}\n";
    let r = rejected(yaml, &[]);
    has(&r, &["the stages form a cycle: a -> b -> c -> a"]);
}

#[test]
fn duplicate_names_are_reported() {
    let r = rejected(&format!("{DIAMOND}  half: {{kind: numbers}}\n"), &[]);
    has(&r, &["duplicate key `half` (first defined at line 8)", "p.yaml:12:3"]);
    let r = rejected(&DIAMOND.replace("  words:", "  notes:"), &[]);
    has(&r, &["`notes` names both a dataset and a stage"]);
}

#[test]
fn a_missing_dataset_path_is_reported() {
    let r = rejected(&DIAMOND.replace("path: notes", "path: nowhere"), &[]);
    has(&r, &["dataset `notes`: path", "nowhere does not exist", "p.yaml:5:"]);
}

#[test]
fn names_that_would_escape_the_cache_are_refused() {
    let r = rejected(&DIAMOND.replace("  words:", "  ../../words:"), &[]);
    has(&r, &["stage name `../../words` is not allowed", "may not contain `/`"]);
    let r = rejected(&DIAMOND.replace("name: diamond", "name: ../up"), &[]);
    has(&r, &["pipeline name `../up` is not allowed"]);
}

#[test]
fn unknown_keys_are_errors() {
    let r = rejected(&DIAMOND.replace("seed: 11", "seed: 11\nsede: 3"), &[]);
    has(&r, &["unknown field `sede`", "p.yaml:4:"]);
    let r = rejected(&DIAMOND.replace("params: {count: 50}", "parms: {count: 50}"), &[]);
    has(&r, &["unknown field `parms`"]);
}

#[test]
fn missing_required_input_and_wrong_arity() {
    let r = rejected(
        &DIAMOND.replace("inputs: {numbers: draw}, params: {factor: 0.5}", "params: {factor: 0.5}"),
        &[],
    );
    has(&r, &["required input `numbers` is not bound", "stage: half"]);
    let r = rejected(
        &DIAMOND.replace(
            "inputs: {numbers: draw}, params: {factor: 0.5}",
            "inputs: {numbers: [draw, double]}, params: {factor: 0.5}",
        ),
        &[],
    );
    has(&r, &["input `numbers` takes one artifact but gets 2"]);
}

#[test]
fn a_missing_pipeline_file_is_reported() {
    let s = Sandbox::new();
    let r = s.sp(&["run", "nope.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("cannot read the pipeline file") && r.stderr.contains("nope.yaml"),
        "{}",
        r.stderr
    );
}

#[test]
fn absurdly_deep_brackets_are_refused_before_parsing() {
    // 100,000 nested `[` (200 KB): the YAML parsers take quadratic time on it; the depth
    // guard answers at once, naming where the brackets pass 64 levels.
    let r = rejected(
        &format!("{DIAMOND}  deep: {{kind: numbers, params: {{count: {}}}}}\n", "[".repeat(100_000)),
        &[],
    );
    has(&r, &["brackets nest deeper than 64 levels here", "p.yaml:12:"]);
}

/// Runs the diamond pipeline with its `notes` dataset changed by `spoil`, after a good run,
/// and returns what the refused run printed; the cache must be left as it was.
fn refused_dataset(spoil: impl Fn(&std::path::Path)) -> Ran {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let before = s.snapshot();
    spoil(&s.path().join("notes"));
    let r = s.run(&[]);
    assert_eq!(r.code, 2, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("dataset `notes`"), "{}", r.stderr);
    assert_eq!(s.snapshot(), before, "the cache was touched");
    r
}

#[test]
fn a_dangling_link_in_a_dataset_is_named_as_one() {
    let r = refused_dataset(|notes| {
        std::fs::create_dir(notes.join("sub")).unwrap();
        std::os::unix::fs::symlink("../../gone.txt", notes.join("sub/old.txt")).unwrap();
    });
    has(
        &r,
        &["notes/sub/old.txt is a dangling symbolic link: it points to ../../gone.txt, which does not exist; fix the link or remove it"],
    );
}

#[test]
fn a_symlink_cycle_in_a_dataset_is_reported_as_the_cycle() {
    let r = refused_dataset(|notes| {
        std::fs::create_dir(notes.join("sub")).unwrap();
        std::os::unix::fs::symlink("..", notes.join("sub/up")).unwrap();
    });
    has(&r, &["notes/sub/up is a symbolic link to .., a directory that contains the link"]);
    assert!(!r.stderr.contains("up/sub/up"), "{}", r.stderr);
}
