//! The shared store against a real S3-compatible server (`.ci/run` starts moto on 127.0.0.1
//! and sets `SPHEREPIPE_TEST_S3`, `AWS_ENDPOINT_URL` and credentials). Skipped, with the
//! reason printed, where no server is configured; required where `SPHEREPIPE_REQUIRE_S3` is set.

use spherepipe_store::{IndexEntry, Mirror, MirrorError, ObjectRemote, Pushed, RemoteStore, Store};
use std::sync::Arc;

/// The bucket URL to test against, with a prefix of its own so runs do not meet.
fn s3_url(test: &str) -> Option<String> {
    match std::env::var("SPHEREPIPE_TEST_S3") {
        Ok(base) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            Some(format!("{}/{test}-{}-{nanos}", base.trim_end_matches('/'), std::process::id()))
        }
        Err(_) if std::env::var_os("SPHEREPIPE_REQUIRE_S3").is_some() => {
            panic!("SPHEREPIPE_REQUIRE_S3 is set but SPHEREPIPE_TEST_S3 is not: start an S3-compatible server as .ci/run does")
        }
        Err(_) => {
            eprintln!("skipped: no S3 server (set SPHEREPIPE_TEST_S3=s3://bucket/prefix and AWS_ENDPOINT_URL, as .ci/run does)");
            None
        }
    }
}

fn local_with(root: &std::path::Path, fp: &str, bytes: &[u8]) -> (Store, IndexEntry) {
    let store = Store::open(root).unwrap();
    let staging = store.new_staging_dir("t").unwrap();
    std::fs::write(staging.join("out.bin"), bytes).unwrap();
    let m = store.commit(&staging).unwrap();
    let entry = IndexEntry {
        fingerprint: fp.into(),
        artifact: m.hash,
        provenance: serde_json::Value::Null,
    };
    store.record(&entry).unwrap();
    (store, entry)
}

#[test]
fn s3_mirrors_artifacts_with_one_winner_per_fingerprint_and_refuses_corrupt_objects() {
    let Some(url) = s3_url("mirror") else { return };
    let remote = Arc::new(ObjectRemote::open(&url).unwrap());
    let mirror = Mirror::new(remote.clone());
    let d = tempfile::tempdir().unwrap();

    // Round trip into a second cache.
    let (a, entry) = local_with(&d.path().join("a"), "fp-round-trip", b"features");
    assert_eq!(mirror.push(&a, &entry).unwrap(), Pushed::Recorded);
    let b = Store::open(d.path().join("b")).unwrap();
    assert_eq!(mirror.fetch(&b, "fp-round-trip").unwrap(), Some(entry.clone()));
    assert_eq!(std::fs::read(b.artifact_dir(&entry.artifact).join("out.bin")).unwrap(), b"features");

    // Eight machines race on one fingerprint with different artifacts: S3's create-if-absent
    // lets exactly one index entry in.
    let locals: Vec<(Store, IndexEntry)> = (0..8)
        .map(|k| local_with(&d.path().join(format!("r{k}")), "fp-race", format!("run {k}").as_bytes()))
        .collect();
    let results: Vec<Pushed> = std::thread::scope(|s| {
        let hs: Vec<_> = locals.iter().map(|(st, e)| s.spawn(|| mirror.push(st, e).unwrap())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| **r == Pushed::Recorded).count(), 1, "{results:?}");
    let winner = mirror.index_entry("fp-race").unwrap().unwrap().artifact;
    assert!(results
        .iter()
        .all(|r| matches!(r, Pushed::Recorded) || *r == Pushed::Differs { theirs: winner.clone() }));

    // A flipped byte in a blob is found by hash on download and refused.
    let key = format!("blobs/{}", blake3::hash(b"features").to_hex());
    remote.put(&key, b"featureS".to_vec()).unwrap();
    let c = Store::open(d.path().join("c")).unwrap();
    assert!(matches!(mirror.fetch(&c, "fp-round-trip"), Err(MirrorError::Corrupt { .. })));
    assert!(c.lookup("fp-round-trip").is_none());
}

#[test]
fn a_missing_bucket_is_named_with_the_fix() {
    let Some(url) = s3_url("missing") else { return };
    let rest = url.trim_start_matches("s3://");
    let prefix = rest.split_once('/').map_or("", |p| p.1);
    let missing = format!("s3://spherepipe-no-such-bucket/{prefix}");
    // A read alone cannot tell a missing bucket from an empty store; connecting checks.
    let e = ObjectRemote::connect(&missing).err().unwrap().to_string();
    assert!(e.contains(&missing) && e.contains("the bucket does not exist: create it"), "{e}");
    assert!(ObjectRemote::connect(&url).is_ok());
}
