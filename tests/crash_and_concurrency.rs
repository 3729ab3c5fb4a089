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

/// Waits until a staging directory under tmp/ holds a non-empty file: the stage is mid-write.
fn wait_mid_write(cache: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(rd) = std::fs::read_dir(cache.join("tmp")) {
            for d in rd.flatten() {
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

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

#[test]
fn a_run_killed_mid_write_is_followed_by_a_run_identical_to_a_clean_one() {
    let clean = Sandbox::new();
    clean.write(SLOW);
    assert_eq!(clean.run(&[]).code, 0);
    let expect = clean.last_artifacts();

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

#[test]
fn two_runs_on_one_cache_take_turns() {
    let s = Sandbox::new();
    s.write(SLOW);
    let a = spawn(&s, &[]);
    wait_mid_write(&s.cache());
    let b = spawn(&s, &[]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let b_err = String::from_utf8_lossy(&b.stderr);
    assert!(b_err.contains("waiting for another spherepipe process (pid"), "{b_err}");
    // The first ran everything; the second found it all cached.
    let runs = s.runs();
    assert_eq!(runs.len(), 2);
    let states = |r: &serde_json::Value| {
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["state"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(states(&runs[0]), ["ran", "ran"]);
    assert_eq!(states(&runs[1]), ["cached", "cached"]);
    assert_eq!(s.sp(&["verify", "--cache", "cache"]).code, 0);
}

#[test]
fn no_wait_stops_with_a_clear_message() {
    let s = Sandbox::new();
    s.write(SLOW);
    let a = spawn(&s, &["--quiet"]);
    wait_mid_write(&s.cache());
    let r = s.run(&["--no-wait"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is in use by another spherepipe process (pid"), "{}", r.stderr);
    assert!(a.wait_with_output().unwrap().status.success());
}
