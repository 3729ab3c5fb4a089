//! Killing, interrupting and racing runs never leaves an artifact a later run would accept.

use crate::common::Sandbox;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `slow` writes one line every 25 ms for about a second; `after` depends on it.
const SLOW: &str = "name: slow\nseed: 3\nstages:\n  slow: {kind: numbers, params: {count: 40, delay_ms: 25}}\n  after: {kind: scale, inputs: {numbers: slow}}\n";

fn spawn(s: &Sandbox, extra: &[&str]) -> Child {
    let mut a = vec!["run", "p.yaml"];
    a.extend_from_slice(extra);
    s.cmd(&a).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn")
}

/// Waits until a staging directory under tmp/ (in some process's area, `tmp/<owner>/`) holds
/// a non-empty file: the stage is mid-write.
fn wait_mid_write(cache: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for area in std::fs::read_dir(cache.join("tmp")).into_iter().flatten().flatten() {
            for d in std::fs::read_dir(area.path()).into_iter().flatten().flatten() {
                if std::fs::metadata(d.path().join("numbers.txt"))
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
                {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the stage never started writing");
}

/// What an uninterrupted run of SLOW on a cache of its own makes.
fn clean_artifacts() -> std::collections::BTreeMap<String, String> {
    let clean = Sandbox::new();
    clean.write(SLOW);
    assert_eq!(clean.run(&[]).code, 0);
    clean.last_artifacts()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

#[test]
fn a_run_killed_mid_write_is_followed_by_a_run_identical_to_a_clean_one() {
    let expect = clean_artifacts();
    let s = Sandbox::new();
    s.write(SLOW);
    let mut child = spawn(&s, &["--quiet"]);
    wait_mid_write(&s.cache());
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    // Half-written output sits in tmp/, and nothing under artifacts/ or index/.
    assert!(std::fs::read_dir(s.cache().join("tmp")).unwrap().count() > 0);
    assert_eq!(std::fs::read_dir(s.cache().join("artifacts")).unwrap().count(), 0);
    let st = s.sp(&["status", "p.yaml", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(rows[0]["state"], "never-run");

    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.last_artifacts(), expect);
    assert_eq!(std::fs::read_dir(s.cache().join("tmp")).unwrap().count(), 0);
    assert_eq!(s.sp(&["verify", "--cache", "cache"]).code, 0);
}

#[test]
fn ctrl_c_stops_cleanly_and_keeps_nothing_partial() {
    let s = Sandbox::new();
    s.write(SLOW);
    let child = spawn(&s, &["--quiet"]);
    wait_mid_write(&s.cache());
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_dir(s.cache().join("tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(s.cache().join("artifacts")).unwrap().count(), 0);
    let st = s.last_states();
    assert_eq!((st["slow"].as_str(), st["after"].as_str()), ("cancelled", "skipped"));
    assert_eq!(s.run(&[]).code, 0);
}

/// Each stage's states across every run in `runs.jsonl`.
fn states_by_stage(s: &Sandbox) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
    for r in s.runs() {
        for st in r["stages"].as_array().unwrap() {
            let state = st["state"].as_str().unwrap().to_owned();
            out.entry(st["stage"].as_str().unwrap().to_owned()).or_default().push(state);
        }
    }
    out
}

#[test]
fn two_runs_of_one_pipeline_build_each_stage_once() {
    let s = Sandbox::new();
    s.write(SLOW);
    let a = spawn(&s, &[]);
    wait_mid_write(&s.cache());
    let b = spawn(&s, &[]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    // The second waited for the stage the first was building, saying for whom.
    let b_err = String::from_utf8_lossy(&b.stderr);
    assert!(
        b_err.contains("slow: waiting for pid ") && b_err.contains("pipeline `slow`, stage `slow`, which is building it"),
        "{b_err}"
    );
    // Each stage ran once, in one run or the other; the other found it cached.
    for (stage, states) in states_by_stage(&s) {
        let mut states = states;
        states.sort();
        assert_eq!(states, ["cached", "ran"], "{stage}");
    }
    assert_eq!(s.sp(&["verify", "--cache", "cache"]).code, 0);
    assert_eq!(std::fs::read_dir(s.cache().join("tmp")).unwrap().count(), 0);
}

#[test]
fn no_wait_fails_the_stage_another_run_builds_and_gc_refuses_beside_a_run() {
    let s = Sandbox::new();
    s.write(SLOW);
    let a = spawn(&s, &["--quiet"]);
    wait_mid_write(&s.cache());
    let r = s.sp(&["run", "p.yaml", "--no-wait"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let states = s.last_states();
    assert_eq!((states["slow"].as_str(), states["after"].as_str()), ("failed", "skipped"));
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains("another run is building it (pid "), "{said}");
    assert!(said.contains("leave out --no-wait"), "{said}");
    // status names the run building it, and creates nothing in doing so.
    let st = s.sp(&["status", "p.yaml", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let building = rows[0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "building")
        .cloned();
    let by = building
        .map(|b| b["by"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    assert!(by.starts_with("pid ") && by.ends_with("pipeline `slow`, stage `slow`"), "{rows}");
    // gc deletes, so it waits for runs to finish; with --no-wait it stops, saying why.
    let gc = s.sp(&["gc", "p.yaml", "--yes", "--no-wait"]);
    assert_eq!(gc.code, 2, "{}", gc.stderr);
    assert!(gc.stderr.contains("in use by the spherepipe runs using it"), "{}", gc.stderr);
    assert!(a.wait_with_output().unwrap().status.success());
    assert_eq!(s.sp(&["gc", "p.yaml", "--yes", "--no-wait"]).code, 0);
}

/// `slow` as in SLOW, and three different consumers of it chosen by `--set`.
#[test]
fn three_runs_with_different_settings_share_what_they_have_in_common() {
    let clean = Sandbox::new();
    clean.write(SLOW);
    let mut want = Vec::new();
    for f in ["2", "3", "5"] {
        assert_eq!(clean.run(&["--set", &format!("after.factor={f}")]).code, 0);
        want.push(clean.last_artifacts());
    }
    let s = Sandbox::new();
    s.write(SLOW);
    let runs: Vec<Child> = ["2", "3", "5"]
        .iter()
        .map(|f| spawn(&s, &["--quiet", "--set", &format!("after.factor={f}")]))
        .collect();
    for c in runs {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let states = states_by_stage(&s);
    let ran = |stage: &str| states[stage].iter().filter(|x| *x == "ran").count();
    assert_eq!((ran("slow"), ran("after")), (1, 3), "{states:?}");
    // Each run's artifacts are a clean sequential run's.
    let mut got: Vec<_> = s.runs().iter().map(artifacts_of).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(s.sp(&["verify", "--cache", "cache"]).code, 0);
}

fn artifacts_of(run: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["stage"].as_str().unwrap().to_owned(),
                x["artifact"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn killing_one_of_two_concurrent_runs_loses_nothing() {
    let expect = clean_artifacts();
    let s = Sandbox::new();
    s.write(SLOW);
    let mut a = spawn(&s, &["--quiet"]);
    wait_mid_write(&s.cache());
    let b = spawn(&s, &[]);
    // b waits for the stage a builds; a dies holding its lock, mid-write.
    std::thread::sleep(Duration::from_millis(300));
    signal(&a, libc::SIGKILL);
    a.wait().unwrap();
    let out = b.wait_with_output().unwrap();
    let b_err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{b_err}");
    assert!(b_err.contains("waiting for pid"), "{b_err}");
    // The survivor built it itself (the dead run's lock was released by the OS) ...
    assert_eq!(s.last_states()["slow"], "ran");
    assert_eq!(s.last_artifacts(), expect);
    // ... and a plain rerun finds a clean run's cache: everything cached, nothing left over.
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.last_states().values().collect::<Vec<_>>(), ["cached", "cached"]);
    assert_eq!(s.last_artifacts(), expect);
    assert_eq!(std::fs::read_dir(s.cache().join("tmp")).unwrap().count(), 0);
    assert_eq!(s.sp(&["verify", "--cache", "cache"]).code, 0);
}
