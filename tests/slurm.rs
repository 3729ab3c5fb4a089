//! Stages as cluster jobs and in parts (issue 11): `run-stage`, `parts: N` on the local pool,
//! and `--executor slurm` against a real Slurm cluster with the artifacts travelling through a
//! shared store. `.ci/run` starts a two-node cluster (`.ci/slurm up`) and an S3 server; on a
//! machine without them the cluster parts are skipped, saying so, and CI requires them
//! (`SPHEREPIPE_REQUIRE_SLURM`).

use crate::common::{corrupt_draw_blob, shared_dir, Ran, Sandbox, DIAMOND, TINY_DATA};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether a Slurm cluster answers; panics when CI requires one and none does.
fn cluster() -> bool {
    let ok = Command::new("sinfo")
        .arg("-h")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("SPHEREPIPE_REQUIRE_SLURM").is_none(),
            "SPHEREPIPE_REQUIRE_SLURM is set but no Slurm cluster answers `sinfo` (is SLURM_CONF set?)"
        );
        eprintln!("Slurm part skipped: no cluster answers `sinfo` (.ci/run starts one with `.ci/slurm up DIR`)");
    }
    ok
}

/// The store a cluster test shares artifacts through: S3 where a server is configured, else a
/// shared directory (the nodes of the test cluster share this host's file system).
fn cluster_store(test: &str, dir: &tempfile::TempDir) -> String {
    match std::env::var("SPHEREPIPE_TEST_S3") {
        Ok(base) => format!("{}/{test}-{}", base.trim_end_matches('/'), std::process::id()),
        Err(_) => format!("file://{}", dir.path().display()),
    }
}

/// `run p.yaml --executor slurm --store URL EXTRA…`, with a node cache of this sandbox's own
/// (so tests do not share one) and progress lines on stderr (they name the Slurm jobs).
fn slurm_run(s: &Sandbox, url: &str, extra: &[&str]) -> Ran {
    let mut args = vec!["run", "p.yaml", "--executor", "slurm", "--store", url];
    args.extend_from_slice(extra);
    s.cmd(&args)
        .env("SPHEREPIPE_NODE_CACHE", s.path().join("node-cache"))
        .output()
        .expect("spawn")
        .into()
}

fn all(stages: &[&str], state: &str) -> BTreeMap<String, String> {
    stages.iter().map(|s| (s.to_string(), state.to_owned())).collect()
}

const DIAMOND_STAGES: [&str; 5] = ["draw", "half", "double", "total", "words"];

/// The tiny face pipeline: data, a small training, LFW aligned and extracted (each split as
/// the arguments say), evaluated.
fn faces(align_parts: usize, extract_parts: usize) -> String {
    format!(
        r#"
name: f
seed: 3
stages:
{TINY_DATA}  train:
    kind: train
    inputs: {{shards: shard}}
    params: {{net: sphere4, width: 0.125, features: 3, batch: 8, steps: 4, lr: 0.01, milestones: [1000], lambda_gamma: 1.0}}
  align_lfw: {{kind: align, inputs: {{images: synth}}, params: {{format: lfw}}, parts: {align_parts}}}
  extract_lfw:
    kind: extract
    inputs: {{model: train, faces: align_lfw}}
    params: {{batch: 7, devkit: true}}
    parts: {extract_parts}
  evaluate: {{kind: evaluate, inputs: {{data: synth, lfw: extract_lfw}}, params: {{protocol: unflipped}}}}
"#
    )
}

const FACE_STAGES: [&str; 9] = [
    "synth",
    "dedupe",
    "align",
    "flip",
    "shard",
    "train",
    "align_lfw",
    "extract_lfw",
    "evaluate",
];

fn index_entries(s: &Sandbox) -> usize {
    std::fs::read_dir(s.cache().join("index")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn split_stages_equal_the_unsplit_run_locally_and_through_slurm() {
    let whole = Sandbox::new();
    whole.write(&faces(1, 1));
    let r = whole.run(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let want = whole.last_artifacts();
    assert_eq!(index_entries(&whole), 9);

    // Locally, on the worker pool: align in 4 parts, extract in 3 (of 7-face batches).
    let split = Sandbox::new();
    split.write(&faces(4, 3));
    let r = split.run(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        split.last_artifacts(),
        want,
        "byte-identical artifacts (an artifact's id hashes all its files)"
    );
    assert_eq!(index_entries(&split), 9 + 4 + 3, "each part is an artifact of its own");
    // `parts` is not in the fingerprint: another split reruns nothing.
    split.write(&faces(2, 5));
    let r = split.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(split.last_states(), all(&FACE_STAGES, "cached"));

    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = cluster_store("faces", &dir);
    let remote = Sandbox::new();
    remote.write(&faces(4, 3));
    let r = slurm_run(&remote, &url, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(remote.last_states(), all(&FACE_STAGES, "ran"));
    assert_eq!(remote.last_artifacts(), want, "Slurm jobs make the same bytes as a local run");
    assert!(r.stderr.contains("Slurm array job"), "the split stages ran as arrays: {}", r.stderr);
    // The result was brought back; what it was made from stayed in the store.
    let metrics = remote.artifact_dir("evaluate").join("metrics.json");
    assert_eq!(
        std::fs::read(&metrics).unwrap(),
        std::fs::read(whole.artifact_dir("evaluate").join("metrics.json")).unwrap()
    );
    assert!(!remote.artifact_dir("train").exists());

    let r = slurm_run(&remote, &url, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(remote.last_states(), all(&FACE_STAGES, "cached"));
    assert!(!r.stderr.contains("submitted"), "a second run submits no job: {}", r.stderr);
}

#[test]
fn run_stage_refuses_a_fingerprint_this_machine_does_not_compute() {
    let ((dir, url), s) = (shared_dir(), Sandbox::diamond());
    let status = s.sp(&["status", "p.yaml", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&status.stdout).unwrap();
    let draw_fp = rows[0]["fingerprint"].as_str().unwrap().to_owned();
    let r = s.sp(&["run-stage", "p.yaml", "draw", "--fingerprint", "0123abcd", "--store", &url]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "`draw` was submitted with fingerprint 0123abcd, but this machine computes {draw_fp}"
        )) && r
            .stderr
            .contains("use one spherepipe build and one copy of the files on every node"),
        "{}",
        r.stderr
    );
    // A stage whose input is not made yet says which, rather than making it.
    let r = s.sp(&["run-stage", "p.yaml", "half", "--fingerprint", "0123abcd", "--store", &url]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("needs the artifact of `draw`") && r.stderr.contains("run `draw` first"),
        "{}",
        r.stderr
    );

    let r = s.sp(&["run-stage", "p.yaml", "draw", "--fingerprint", &draw_fp, "--store", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("committed to the store"), "{}", r.stdout);
    assert!(dir.path().join(format!("index/{draw_fp}.json")).is_file());
    let r = s.sp(&["run-stage", "p.yaml", "draw", "--fingerprint", &draw_fp, "--store", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("already in the store"),
        "a duplicated job does nothing: {}",
        r.stdout
    );
    // Another version of the pipeline file on this machine: refused, by fingerprint.
    let r = s.sp(&["run-stage", "p.yaml", "half", "--fingerprint", "0123abcd", "--store", &url]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("`half` was submitted with fingerprint 0123abcd"), "{}", r.stderr);
}

#[test]
fn the_slurm_executor_needs_a_store_every_node_can_reach() {
    let s = Sandbox::diamond();
    let r = s.run(&["--executor", "slurm"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--executor slurm needs a shared store"), "{}", r.stderr);
    let r = s.run(&["--executor", "slurm", "--store", "memory://x"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("lives in this process only"), "{}", r.stderr);
    assert!(s.snapshot().is_empty(), "nothing ran");
}

#[test]
fn slurm_runs_match_local_runs_and_ask_for_the_stage_resources() {
    if !cluster() {
        return;
    }
    let (_dir, url) = shared_dir();
    let local = Sandbox::diamond();
    assert_eq!(local.run(&[]).code, 0);
    let s = Sandbox::diamond();
    s.write(&DIAMOND.replace(
        "params: {factor: 0.5}}",
        "params: {factor: 0.5}, resources: {gpus: 2, mem: 64M, cpus: 1}}",
    ));
    let r = slurm_run(&s, &url, &["--slurm-args", "--comment=spherepipe-test"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(s.last_artifacts(), local.last_artifacts());
    // The job of `half` asked for what its resources say (the test cluster's fake GPUs).
    let job = job_ids(&s, "half")[0].clone();
    let shown = String::from_utf8_lossy(&Command::new("scontrol").args(["show", "job", &job]).output().unwrap().stdout).into_owned();
    assert!(
        shown.contains("gpu:2") && shown.contains("MinMemoryNode=64M") && shown.contains("Comment=spherepipe-test"),
        "{shown}"
    );
    // Slurm handed the job those two GPUs, as `devices: auto` reads them.
    let log = std::fs::read_dir(s.cache().join("logs/slurm"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&format!("half.{job}")))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .expect("the job log of `half`");
    let granted = log
        .lines()
        .find_map(|l| l.strip_prefix("half: GPUs granted: CUDA_VISIBLE_DEVICES="))
        .unwrap_or_else(|| panic!("no GPU line in the job log:\n{log}"));
    assert_eq!(spherepipe_nn::devices::count_visible(granted), 2, "{granted}");
    // Its lineage, written by the job on its node and read back through the store, names the
    // executor and the job.
    let r = s.sp(&["lineage", "p.yaml", "half", "--store", &url, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let links: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let made = &links[0]["lineage"]["made"];
    assert_eq!(
        (made["executor"].as_str(), made["slurm_job"].as_str()),
        (Some("slurm"), Some(job.as_str())),
        "{made}"
    );
}

/// `slurm_run` in the background, its output captured.
fn spawn_slurm_run(s: &Sandbox, url: &str, extra: &[&str]) -> std::process::Child {
    let mut args = vec!["run", "p.yaml", "--executor", "slurm", "--store", url];
    args.extend_from_slice(extra);
    s.cmd(&args)
        .env("SPHEREPIPE_NODE_CACHE", s.path().join("node-cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// The id of `stage`'s first job once it is submitted (and, with `running`, once it runs).
fn wait_for_job(s: &Sandbox, stage: &str, running: bool) -> String {
    let start = Instant::now();
    loop {
        if let Some(id) = job_ids(s, stage).first() {
            let state = Command::new("squeue").args(["-h", "-o", "%T", "-j", id]).output().expect("squeue");
            if !running || String::from_utf8_lossy(&state.stdout).trim() == "RUNNING" {
                return id.clone();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no job of `{stage}` ran");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Slurm job ids of a stage's jobs, from the log names in `cache/logs/slurm`.
fn job_ids(s: &Sandbox, stage: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(s.cache().join("logs/slurm")) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&format!("{stage}."))?.strip_suffix(".log")?;
            rest.parse::<u64>().ok().map(|_| rest.to_owned())
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_failed_part_is_reported_by_job_and_only_it_is_rerun() {
    if !cluster() {
        return;
    }
    let (dir, url) = shared_dir();
    let s = Sandbox::new();
    s.write("name: c\nstages:\n  nums: {kind: chunks, params: {count: 23}, parts: 4}\n  twice: {kind: scale, inputs: {numbers: nums}, params: {factor: 2}}\n");
    let r: Ran = s
        .cmd(&["run", "p.yaml", "--executor", "slurm", "--store", &url])
        .env("SPHEREPIPE_TEST_FAIL_PART", "2")
        .env("SPHEREPIPE_NODE_CACHE", s.path().join("node-cache"))
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let line = r.stdout.lines().find(|l| l.starts_with("nums ")).unwrap_or_default();
    assert!(
        line.contains("DependencyNeverSatisfied")
            && line.contains("part 2: job ")
            && line.contains("ended FAILED (reason: NonZeroExitCode)")
            && line.contains("part 2/4 fails on purpose"),
        "{line}"
    );
    assert_eq!(s.last_states()["twice"], "skipped");

    let r = slurm_run(&s, &url, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Only part 2 was submitted again: the array has one task.
    let array = r
        .stderr
        .split("Slurm array job ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("an array job was submitted")
        .to_owned();
    let tasks = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i", "-j", &array])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tasks.stdout).trim(), format!("{array}_2"));
    let whole: String = (0..23).map(|i| format!("{i}\n")).collect();
    let numbers = dir.path().join("blobs").join(blake3::hash(whole.as_bytes()).to_hex().as_str());
    assert!(numbers.is_file(), "the gathered numbers are in the store");
}

#[test]
fn a_job_cancelled_with_scancel_is_reported_and_only_what_is_missing_reruns() {
    if !cluster() {
        return;
    }
    let (_dir, url) = shared_dir();
    let s = Sandbox::diamond();
    s.write(&format!(
        "{DIAMOND}  slow: {{kind: numbers, params: {{count: 600, delay_ms: 100}}}}\n"
    ));
    let child = spawn_slurm_run(&s, &url, &["--keep-going"]);
    // Wait for the slow job to run, then cancel it from outside, as a user or an admin would.
    let job = wait_for_job(&s, "slow", true);
    assert!(Command::new("scancel").arg(&job).status().unwrap().success());
    let r: Ran = child.wait_with_output().unwrap().into();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let line = r.stdout.lines().find(|l| l.starts_with("slow ")).unwrap_or_default();
    assert!(
        line.contains("failed") && line.contains(&format!("Slurm job {job} of `slow` ended CANCELLED")),
        "{line}"
    );
    let mut want = all(&DIAMOND_STAGES, "ran");
    want.insert("slow".into(), "failed".into());
    assert_eq!(s.last_states(), want);

    // The rerun submits the cancelled stage only (made short this time).
    let r = slurm_run(&s, &url, &["--set", "slow.delay_ms=0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut want = all(&DIAMOND_STAGES, "cached");
    want.insert("slow".into(), "ran".into());
    assert_eq!(s.last_states(), want);
    assert_eq!(r.stderr.matches("submitted").count(), 1, "{}", r.stderr);
}

#[test]
fn two_slurm_runs_at_once_share_one_store_cleanly() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = cluster_store("two-runs", &dir);
    let (a, b) = (Sandbox::diamond(), Sandbox::diamond());
    let (ra, rb) = std::thread::scope(|t| {
        let ta = t.spawn(|| slurm_run(&a, &url, &[]));
        let tb = t.spawn(|| slurm_run(&b, &url, &[]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!((ra.code, rb.code), (0, 0), "{}\n{}", ra.stderr, rb.stderr);
    assert_eq!(a.last_artifacts(), b.last_artifacts());
    let r = a.sp(&["verify", "--store", &url]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(": 0 corrupted"), "{}", r.stdout);
    if url.starts_with("file://") {
        assert_eq!(
            std::fs::read_dir(dir.path().join("index")).unwrap().count(),
            5,
            "one index entry per fingerprint"
        );
    }
}

#[test]
fn a_corrupt_input_in_the_store_fails_its_consumer_job_and_the_next_run_rebuilds_it() {
    if !cluster() {
        return;
    }
    let (dir, url) = shared_dir();
    let a = Sandbox::diamond();
    assert_eq!(a.run(&["--store", &url]).code, 0);
    let (blob, numbers) = corrupt_draw_blob(&a, dir.path());
    // Force the consumers to run on the cluster: their jobs download `draw` and check it.
    let b = Sandbox::diamond();
    let r = slurm_run(&b, &url, &["--force", "half", "--keep-going"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let line = r.stdout.lines().find(|l| l.starts_with("half ")).unwrap_or_default();
    assert!(line.contains("is corrupt"), "the job refused the corrupt blob: {line}");
    // The bad blob and the manifest that relied on it are gone, so the next run rebuilds `draw`.
    let r = slurm_run(&b, &url, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(b.last_states()["draw"], "ran");
    assert_eq!(b.last_artifacts(), a.last_artifacts());
    assert_eq!(std::fs::read(&blob).unwrap(), numbers, "the store holds the right bytes again");
}

/// A small training with a checkpoint every 5 steps.
fn training() -> String {
    format!(
        r#"
name: t
seed: 3
stages:
{TINY_DATA}  train:
    kind: train
    inputs: {{shards: shard}}
    params: {{net: sphere4, width: 0.125, features: 32, batch: 8, steps: 40, lr: 0.01, milestones: [1000], checkpoint_every: 5, lambda_gamma: 1.0}}
"#
    )
}

#[test]
fn a_training_stopped_on_one_machine_resumes_from_the_store_on_another() {
    let clean = Sandbox::new();
    clean.write(&training());
    assert_eq!(clean.run(&[]).code, 0);
    let want = clean.last_artifacts()["train"].clone();

    // Machine one trains until a checkpoint exists, then is told to stop (SIGTERM, as Slurm
    // does on pre-emption, time limit or scancel): its checkpoints go to the store.
    let (dir, url) = shared_dir();
    let one = Sandbox::new();
    one.write(&training());
    let mut child = one
        .cmd(&["run", "p.yaml", "--quiet", "--store", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !std::fs::read_dir(one.cache().join("scratch"))
        .map(|d| d.flatten().any(|e| e.path().join("checkpoint/step").is_file()))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        files_under(&dir.path().join("scratch")) > 0,
        "the stopped training's scratch is in the store"
    );

    // Machine two, with an empty cache, resumes from there and ends where an uninterrupted
    // training ends; the scratch leaves the store once the artifact is in.
    let two = Sandbox::new();
    two.write(&training());
    let r: Ran = two.cmd(&["run", "p.yaml", "--store", &url]).output().unwrap().into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("checkpoint file(s) restored from the shared store"),
        "{}",
        r.stderr
    );
    assert_eq!(
        two.last_artifacts()["train"],
        want,
        "the resumed training differs from the uninterrupted one"
    );
    assert_eq!(files_under(&dir.path().join("scratch")), 0);
}

/// How many files are under `dir` (a file store keeps emptied directories).
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn more_parts_than_units_still_gather_the_unsplit_artifact() {
    let (whole, split) = (Sandbox::new(), Sandbox::new());
    whole.write("name: c\nstages:\n  nums: {kind: chunks, params: {count: 3}}\n");
    split.write("name: c\nstages:\n  nums: {kind: chunks, params: {count: 3}, parts: 5}\n");
    assert_eq!(whole.run(&[]).code, 0);
    let r = split.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(split.last_artifacts(), whole.last_artifacts());
    assert_eq!(whole.artifact_file(&whole.last_artifacts()["nums"], "numbers.txt"), "0\n1\n2\n");
}

#[test]
fn ctrl_c_cancels_the_jobs_the_run_submitted() {
    if !cluster() {
        return;
    }
    let (_dir, url) = shared_dir();
    let s = Sandbox::new();
    s.write("name: c\nstages:\n  slow: {kind: numbers, params: {count: 600, delay_ms: 100}}\n");
    let child = spawn_slurm_run(&s, &url, &["--quiet"]);
    let job = wait_for_job(&s, "slow", false);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let r: Ran = child.wait_with_output().unwrap().into();
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(s.last_states()["slow"], "cancelled");
    let state = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%T", "-j", &job])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "CANCELLED",
        "the run cancelled its job"
    );
}

/// A stage's Slurm attempts as the run record lists them: (state, mem, time) each.
fn attempts(s: &Sandbox, stage: &str) -> Vec<(String, String, String)> {
    let runs = s.runs();
    let rec = runs.last().expect("a run")["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["stage"] == stage)
        .cloned()
        .expect("the stage");
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    rec["attempts"]
        .as_array()
        .map(|a| a.iter().map(|a| (text(&a["state"]), text(&a["mem"]), text(&a["time"]))).collect())
        .unwrap_or_default()
}

/// The test cluster enforces memory (cgroups): a job over its `--mem` is killed and Slurm says
/// OUT_OF_MEMORY; with `retries`, the stage is submitted again with twice the memory, and each
/// attempt is in the run record, the log and `show`.
#[test]
fn a_job_out_of_memory_is_retried_with_twice_the_memory() {
    if !cluster() {
        return;
    }
    let (_dir, url) = shared_dir();
    let s = Sandbox::new();
    s.write("name: oom\nstages:\n  hog: {kind: hog, params: {mib: 120, hold_ms: 2000}, resources: {mem: 100M, retries: 2}}\n");
    let r = slurm_run(&s, &url, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let want = [("OUT_OF_MEMORY", "100M", ""), ("COMPLETED", "200M", "")].map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(attempts(&s, "hog"), want);
    assert!(
        r.stderr.contains("ended OUT_OF_MEMORY (mem 100M); attempt 2 of 3 asks mem 200M"),
        "{}",
        r.stderr
    );
    let shown = s.sp(&["show", "p.yaml", "hog"]).stdout;
    assert!(
        shown.contains("attempt 1  Slurm job") && shown.contains("asked mem 100M time default: OUT_OF_MEMORY"),
        "{shown}"
    );
    // The page's details of the stage list them too.
    let r = s.sp(&["report", "p.yaml", "--out", "page.html"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let page = std::fs::read_to_string(s.path().join("page.html")).unwrap();
    assert!(
        page.contains("\"state\":\"OUT_OF_MEMORY\"") && page.contains("\"mem\":\"200M\""),
        "the page lacks the attempts"
    );
    // Without retries it fails as before, saying so.
    s.write("name: oom\nstages:\n  hog: {kind: hog, params: {mib: 121, hold_ms: 2000}, resources: {mem: 100M}}\n");
    let r = slurm_run(&s, &url, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.contains("ended OUT_OF_MEMORY (reason: OutOfMemory)"), "{}", r.stdout);
    assert_eq!(attempts(&s, "hog").len(), 1);
}

/// A one-minute limit: the first attempt is stopped by Slurm's TIMEOUT (SIGTERM, so the stage
/// saves its checkpoint to the store); the retry asks for two minutes and resumes from the
/// checkpoint instead of starting over.
#[test]
fn a_timed_out_job_is_retried_with_twice_the_time_and_resumes() {
    if !cluster() {
        return;
    }
    let (_dir, url) = shared_dir();
    let s = Sandbox::new();
    s.write("name: late\nstages:\n  steps: {kind: steps, params: {count: 120, delay_ms: 1000}, resources: {time: 1, retries: 1}}\n");
    let r = slurm_run(&s, &url, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let want = [("TIMEOUT", "", "1"), ("COMPLETED", "", "00:02:00")].map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(attempts(&s, "steps"), want);
    let runs = s.runs();
    let second = runs.last().unwrap()["stages"][0]["attempts"][1]["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = std::fs::read_to_string(s.cache().join(format!("logs/slurm/steps.{second}.log"))).unwrap();
    let resumed: u64 = log
        .lines()
        .find_map(|l| l.split("resumed at step ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the retry did not say where it resumed:\n{log}"));
    assert!(resumed >= 30, "the retry started over (step {resumed}):\n{log}");
    assert_eq!(s.artifact_file(&s.last_artifacts()["steps"], "steps.txt"), "120\n");
}
