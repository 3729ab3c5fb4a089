//! `run --store URL`: the local cache as a working copy of a store that machines share
//! (issue 11). A shared directory always; an S3 server too where one is configured (`.ci/run`
//! starts moto and sets `SPHEREPIPE_TEST_S3`).

use crate::common::{corrupt_draw_blob, shared_dir, Ran, Sandbox};
use std::collections::BTreeMap;

/// The S3 store to test against, with a prefix of its own; `None` (said) without a server.
fn s3_url(test: &str) -> Option<String> {
    match std::env::var("SPHEREPIPE_TEST_S3") {
        Ok(base) => Some(format!("{}/{test}-{}", base.trim_end_matches('/'), std::process::id())),
        Err(_) if std::env::var_os("SPHEREPIPE_REQUIRE_S3").is_some() => {
            panic!("SPHEREPIPE_REQUIRE_S3 is set but SPHEREPIPE_TEST_S3 is not")
        }
        Err(_) => {
            eprintln!("S3 part skipped: no S3 server (set SPHEREPIPE_TEST_S3 and AWS_ENDPOINT_URL, as .ci/run does)");
            None
        }
    }
}

/// The artifact files of a cache, by path under `artifacts/`.
fn artifacts(s: &Sandbox) -> BTreeMap<String, Vec<u8>> {
    s.snapshot().into_iter().filter(|(k, _)| k.starts_with("artifacts")).collect()
}

fn all(state: &str) -> BTreeMap<String, String> {
    ["draw", "half", "double", "total", "words"]
        .iter()
        .map(|s| (s.to_string(), state.to_owned()))
        .collect()
}

/// The first machine runs everything; the second, with an empty cache, fetches it all.
fn two_machines(url: &str) {
    let a = Sandbox::diamond();
    let r = a.run(&["--store", url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(a.last_states(), all("ran"));

    // `status --store` on a fresh machine: everything counts as cached, nothing is downloaded.
    let c = Sandbox::diamond();
    let r = c.sp(&["status", "p.yaml", "--json", "--store", url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    let seen: BTreeMap<String, (String, String)> = rows
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("stage"), (s("state"), s("artifact")))
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = a.last_artifacts().into_iter().map(|(k, v)| (k, ("cached".to_owned(), v))).collect();
    assert_eq!(seen, want, "{url}");
    // `show --store`: the artifact is in the store only, its files read from its manifest there.
    let r = c.sp(&["show", "p.yaml", "draw", "--json", "--store", url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["state"], "cached");
    assert!(v["artifact"].is_null(), "{v}");
    assert_eq!(v["in_store"], format!("{url}/artifacts/{}.json", a.last_artifacts()["draw"]));
    assert_eq!(v["files"][0]["path"], "numbers.txt");
    assert!(artifacts(&c).is_empty(), "status and show download nothing");
    let r = c.sp(&["status", "p.yaml", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        rows.len() == 5 && rows.iter().all(|v| v["state"] == "never-run"),
        "without the store: {}",
        r.stdout
    );

    let b = Sandbox::diamond();
    let r: Ran = b
        .cmd(&["run", "p.yaml", "--quiet"])
        .env("SPHEREPIPE_STORE", url)
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(b.last_states(), all("cached"), "{url}");
    assert_eq!(artifacts(&a), artifacts(&b), "{url}: the fetched artifacts are byte-identical");
    assert_eq!(a.last_artifacts(), b.last_artifacts());
}

#[test]
fn a_second_machine_fetches_what_the_first_ran_byte_for_byte() {
    let (dir, url) = shared_dir();
    two_machines(&url);
    // One index entry per stage in the shared directory.
    assert_eq!(std::fs::read_dir(dir.path().join("index")).unwrap().count(), 5);
    if let Some(url) = s3_url("two-machines") {
        two_machines(&url);
    }
}

#[test]
fn a_corrupt_object_in_the_store_is_refused_and_its_stage_rebuilt() {
    let (dir, url) = shared_dir();
    let a = Sandbox::diamond();
    assert_eq!(a.run(&["--store", &url]).code, 0);
    let (blob, numbers) = corrupt_draw_blob(&a, dir.path());

    let b = Sandbox::diamond();
    let r = b.run(&["--store", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("warning:") && r.stderr.contains("is corrupt and was not used"),
        "{}",
        r.stderr
    );
    // `draw` is rebuilt (the same bytes: the kind is deterministic); what follows it is then
    // found in the store under the same fingerprints.
    let mut want = all("cached");
    want.insert("draw".into(), "ran".into());
    assert_eq!(b.last_states(), want);
    assert_eq!(artifacts(&a), artifacts(&b));
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        numbers,
        "the rebuilt artifact's push repaired the store"
    );
}

/// The attack: a manifest in a shared directory edited to list two more files, one
/// climbing out with `../`, one absolute, their blobs present. A fresh machine writes neither,
/// says which object it refused, rebuilds the stage, and its push leaves a store the next
/// machine downloads from.
#[test]
fn a_manifest_edited_to_plant_files_outside_the_cache_is_refused_and_the_store_heals() {
    let (dir, url) = shared_dir();
    let a = Sandbox::diamond();
    assert_eq!(a.run(&["--store", &url]).code, 0);
    let draw = a.last_artifacts()["draw"].clone();
    let key = format!("artifacts/{draw}.json");
    let path = dir.path().join(&key);
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let planted = b"#!/bin/sh\necho owned\n";
    let hash = blake3::hash(planted).to_hex().to_string();
    std::fs::write(dir.path().join("blobs").join(&hash), planted).unwrap();
    let b = Sandbox::diamond();
    let climbing = "../../../../../../../../../../tmp/spherepipe-planted-by-a-store";
    let absolute = b.path().join("planted-absolute");
    let files = manifest["files"].as_array_mut().unwrap();
    for p in [climbing, absolute.to_str().unwrap()] {
        files.push(serde_json::json!({"path": p, "size": planted.len(), "blake3": hash}));
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();

    let r = b.run(&["--store", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("{key} was refused")) && r.stderr.contains("nothing from it was used or written"),
        "{}",
        r.stderr
    );
    assert!(!std::path::Path::new("/tmp/spherepipe-planted-by-a-store").exists());
    assert!(!absolute.exists());
    let mut want = all("cached");
    want.insert("draw".into(), "ran".into());
    assert_eq!(b.last_states(), want, "draw is rebuilt, the rest found");
    assert_eq!(artifacts(&a), artifacts(&b));
    // The rebuilt stage's push wrote the real manifest over the edited one: the machine after
    // it downloads everything, and `verify --store` finds nothing wrong but the planted blob's
    // being unused (which is no corruption).
    let c = Sandbox::diamond();
    assert_eq!(c.run(&["--store", &url]).code, 0);
    assert_eq!(c.last_states(), all("cached"), "the store healed");
    assert_eq!(c.sp(&["verify", "--store", &url]).code, 0);
}

/// A blob deleted from the store: the first fresh machine rebuilds the stage, and its push
/// uploads what was missing, so the second downloads instead of rebuilding.
#[test]
fn a_deleted_blob_is_rebuilt_once_and_then_downloaded() {
    let (dir, url) = shared_dir();
    let a = Sandbox::diamond();
    assert_eq!(a.run(&["--store", &url]).code, 0);
    let (blob, _) = corrupt_draw_blob(&a, dir.path());
    std::fs::remove_file(&blob).unwrap();
    let b = Sandbox::diamond();
    let r = b.run(&["--store", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
    assert_eq!(b.last_states()["draw"], "ran");
    let c = Sandbox::diamond();
    assert_eq!(c.run(&["--store", &url]).code, 0);
    assert_eq!(c.last_states(), all("cached"), "the store healed after one rebuild");
}

#[test]
fn a_store_that_cannot_be_reached_stops_the_run_before_anything_changes() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    let before = s.snapshot();
    let runs = s.runs().len();
    let r = s.run(&["--force", "draw", "--store", "file:///no/such/shared/dir"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("store file:///no/such/shared/dir") && r.stderr.contains("check that the shared file system is mounted"),
        "{}",
        r.stderr
    );
    assert_eq!(s.snapshot(), before, "the local cache is untouched");
    assert_eq!(s.runs().len(), runs, "no run was recorded");
}

/// `run --force draw --store URL` with the given S3 endpoint and access key, on a cache that
/// already holds the pipeline: exit 2, the URL and `fix` in the message, the cache untouched.
fn s3_refused(s: &Sandbox, url: &str, endpoint: &str, key: &str, fix: &str) {
    let before = s.snapshot();
    let runs = s.runs().len();
    let r: Ran = s
        .cmd(&["run", "p.yaml", "--force", "draw", "--store", url])
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("spawn")
        .into();
    assert_eq!(r.code, 2, "{url} at {endpoint}: {}", r.stderr);
    assert!(r.stderr.contains(&format!("store {url}")) && r.stderr.contains(fix), "{}", r.stderr);
    // Nothing that signs a request reaches the message: not the key, nor what the server
    // echoes of the signature.
    for secret in [key, "<StringToSign>", "<CanonicalRequest>", "Signature="]
        .into_iter()
        .filter(|s| s.len() >= 8)
    {
        assert!(
            !r.stderr.contains(secret) && !r.stdout.contains(secret),
            "{secret} shown: {}",
            r.stderr
        );
    }
    assert_eq!(s.snapshot(), before, "the local cache is untouched");
    assert_eq!(s.runs().len(), runs, "no run was recorded");
}

/// An S3 server nobody listens on, a bucket that does not exist, and an access key the server
/// does not know (`.ci/run` starts a second moto that checks keys, `SPHEREPIPE_TEST_S3_STRICT`).
#[test]
fn an_s3_store_that_refuses_stops_the_run_with_the_fix_and_leaves_the_cache() {
    let s = Sandbox::diamond();
    assert_eq!(s.run(&[]).code, 0);
    // Port 9 (discard) on loopback: nothing listens there.
    s3_refused(&s, "s3://spherepipe-ci/x", "http://127.0.0.1:9", "ci", "AWS_ENDPOINT_URL");
    let (Some(_), Ok(endpoint)) = (s3_url("refused"), std::env::var("AWS_ENDPOINT_URL")) else {
        return;
    };
    s3_refused(&s, "s3://no-such-bucket-here/x", &endpoint, "ci", "check the bucket name");
    match std::env::var("SPHEREPIPE_TEST_S3_STRICT") {
        Ok(strict) => s3_refused(
            &s,
            "s3://spherepipe-ci/x",
            &strict,
            "AKIASPHEREPIPENOBODY",
            "check AWS_ACCESS_KEY_ID",
        ),
        Err(_) if std::env::var_os("SPHEREPIPE_REQUIRE_S3").is_some() => {
            panic!("SPHEREPIPE_REQUIRE_S3 is set but SPHEREPIPE_TEST_S3_STRICT (a server that checks keys) is not")
        }
        Err(_) => eprintln!("wrong-key part skipped: no key-checking S3 server (SPHEREPIPE_TEST_S3_STRICT)"),
    }
}

#[test]
fn the_pipeline_file_can_name_the_store_and_the_command_line_wins() {
    let (dir, url) = shared_dir();
    let s = Sandbox::diamond();
    s.write(&format!("{}store: {url}\n", crate::common::DIAMOND));
    let r = s.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read_dir(dir.path().join("index")).unwrap().count(), 5);
    // --store overrides the file's key: a store that does not exist is refused.
    let r = s.run(&["--store", "file:///no/such/shared/dir"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn two_runs_at_once_leave_one_entry_per_fingerprint_and_verify_finds_a_flipped_byte() {
    let (dir, url) = shared_dir();
    let (a, b) = (Sandbox::diamond(), Sandbox::diamond());
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.run(&["--store", &url]));
        let tb = s.spawn(|| b.run(&["--store", &url]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!((ra.code, rb.code), (0, 0), "{}\n{}", ra.stderr, rb.stderr);
    assert_eq!(a.last_artifacts(), b.last_artifacts());
    assert_eq!(std::fs::read_dir(dir.path().join("index")).unwrap().count(), 5);
    let r = a.sp(&["verify", "--store", &url]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(": 0 corrupted"), "{}", r.stdout);

    // A flipped byte: reported by key, removed, and the store is clean again after a run.
    let numbers = std::fs::read(a.artifact_dir("draw").join("numbers.txt")).unwrap();
    let key = format!("blobs/{}", blake3::hash(&numbers).to_hex());
    let mut bad = numbers.clone();
    bad[0] ^= 1;
    std::fs::write(dir.path().join(&key), &bad).unwrap();
    let r = a.sp(&["verify", "--store", &url]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(&format!("corrupted: {key} in {url}")), "{}", r.stdout);
    assert!(!dir.path().join(&key).exists());
    let c = Sandbox::diamond();
    assert_eq!(c.run(&["--store", &url]).code, 0);
    assert_eq!(c.last_states()["draw"], "ran", "the artifact lost its blob, so it is rebuilt");
    let r = a.sp(&["verify", "--store", &url]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

/// Makes every file under `dir` `secs` older.
fn age_tree(dir: &std::path::Path, secs: u64) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            age_tree(&p, secs);
        } else {
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            let then = std::fs::metadata(&p).unwrap().modified().unwrap() - std::time::Duration::from_secs(secs);
            f.set_modified(then).unwrap();
        }
    }
}

#[test]
fn gc_in_the_store_spares_what_is_used_and_what_is_young() {
    let (dir, url) = shared_dir();
    let s = Sandbox::diamond();
    assert_eq!(s.run(&["--store", &url]).code, 0);
    let old = s.last_artifacts();
    // The pipeline changes: draw (and all that follows it) gets new artifacts.
    s.write(&crate::common::DIAMOND.replace("count: 50", "count: 40"));
    assert_eq!(s.run(&["--store", &url]).code, 0);
    let new = s.last_artifacts();
    assert_ne!(old["draw"], new["draw"]);
    assert_eq!(old["words"], new["words"]);
    let count = |sub: &str| std::fs::read_dir(dir.path().join(sub)).unwrap().count();
    let before = (count("index"), count("artifacts"), count("blobs"));

    // Everything is younger than the default grace of 24 h: nothing goes.
    let r = s.sp(&["gc", "p.yaml", "--store", &url, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("0 objects deleted"), "{}", r.stdout);
    assert_eq!((count("index"), count("artifacts"), count("blobs")), before);

    // Three days later (every object made older), with the shortest grace, the old draw,
    // half, double and total go: their index entries, manifests and the blobs only they
    // used; words and the new ones stay.
    age_tree(dir.path(), 3 * 24 * 3600);
    let r = s.sp(&["gc", "p.yaml", "--store", &url, "--grace-hours", "0"]);
    assert!(r.stdout.contains("younger than 2 h"), "the grace has a floor: {}", r.stdout);
    assert!(r.stdout.contains("unused "), "{}", r.stdout);
    assert_eq!(
        (count("index"), count("artifacts"), count("blobs")),
        before,
        "listing deletes nothing"
    );
    let r = s.sp(&["gc", "p.yaml", "--store", &url, "--grace-hours", "0", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for stage in ["draw", "half", "double", "total"] {
        assert!(
            r.stdout.contains(&format!("deleted artifacts/{}.json", old[stage])),
            "{stage}: {}",
            r.stdout
        );
    }
    assert_eq!((count("index"), count("artifacts")), (5, 5));
    // What is left is whole: verify finds nothing, and a fresh machine fetches the new run.
    assert_eq!(s.sp(&["verify", "--store", &url]).code, 0);
    let b = Sandbox::diamond();
    b.write(&crate::common::DIAMOND.replace("count: 50", "count: 40"));
    assert_eq!(b.run(&["--store", &url]).code, 0);
    assert_eq!(b.last_states(), all("cached"));
}
