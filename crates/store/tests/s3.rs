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

/// A fingerprint made from a name.
fn fp(name: &str) -> String {
    blake3::hash(name.as_bytes()).to_hex().to_string()
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
    let (a, entry) = local_with(&d.path().join("a"), &fp("fp-round-trip"), b"features");
    assert_eq!(mirror.push(&a, &entry).unwrap(), Pushed::Recorded);
    let b = Store::open(d.path().join("b")).unwrap();
    assert_eq!(mirror.fetch(&b, &fp("fp-round-trip")).unwrap(), Some(entry.clone()));
    assert_eq!(std::fs::read(b.artifact_dir(&entry.artifact).join("out.bin")).unwrap(), b"features");

    // Eight machines race on one fingerprint with different artifacts: S3's create-if-absent
    // lets exactly one index entry in.
    let locals: Vec<(Store, IndexEntry)> = (0..8)
        .map(|k| local_with(&d.path().join(format!("r{k}")), &fp("fp-race"), format!("run {k}").as_bytes()))
        .collect();
    let results: Vec<Pushed> = std::thread::scope(|s| {
        let hs: Vec<_> = locals.iter().map(|(st, e)| s.spawn(|| mirror.push(st, e).unwrap())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| **r == Pushed::Recorded).count(), 1, "{results:?}");
    let winner = mirror.index_entry(&fp("fp-race")).unwrap().unwrap().artifact;
    assert!(results
        .iter()
        .all(|r| matches!(r, Pushed::Recorded) || *r == Pushed::Differs { theirs: winner.clone() }));

    // A flipped byte in a blob is found by hash on download and refused.
    let key = format!("blobs/{}", blake3::hash(b"features").to_hex());
    remote.put(&key, b"featureS".to_vec()).unwrap();
    let c = Store::open(d.path().join("c")).unwrap();
    assert!(matches!(mirror.fetch(&c, &fp("fp-round-trip")), Err(MirrorError::Corrupt { .. })));
    assert!(c.lookup(&fp("fp-round-trip")).is_none());
}

#[test]
fn s3_moves_files_over_one_part_as_multipart_uploads_and_refuses_what_climbs_out() {
    let Some(url) = s3_url("multipart") else { return };
    // S3's smallest part, 5 MiB: a 12 MB file is three parts.
    let remote = Arc::new(ObjectRemote::open(&url).unwrap().with_part_size(5 << 20));
    let mirror = Mirror::new(remote.clone());
    let d = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..12_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let (a, entry) = local_with(&d.path().join("a"), &fp("big"), &big);
    assert_eq!(mirror.push(&a, &entry).unwrap(), Pushed::Recorded);
    let key = format!("blobs/{}", blake3::hash(&big).to_hex());
    assert_eq!(remote.head(&key).unwrap().unwrap().size, 12_000_000);
    let b = Store::open(d.path().join("b")).unwrap();
    mirror.fetch(&b, &fp("big")).unwrap().unwrap();
    assert_eq!(std::fs::read(b.artifact_dir(&entry.artifact).join("out.bin")).unwrap(), big);
    // A local copy that rotted is not published, on the multipart path either.
    let (r, rotten_entry) = local_with(&d.path().join("r"), &fp("rot"), &big[..11_000_000]);
    let path = r.artifact_dir(&rotten_entry.artifact).join("out.bin");
    let mut rotten = big[..11_000_000].to_vec();
    rotten[10_999_999] ^= 1;
    std::fs::write(&path, &rotten).unwrap();
    assert!(matches!(mirror.push(&r, &rotten_entry), Err(MirrorError::LocalCorrupt { .. })));
    assert!(remote
        .head(&format!("blobs/{}", blake3::hash(&big[..11_000_000]).to_hex()))
        .unwrap()
        .is_none());
    // A forged index entry naming a manifest whose path climbs out.
    let planted = blake3::hash(b"planted").to_hex().to_string();
    remote.put(&format!("blobs/{planted}"), b"planted".to_vec()).unwrap();
    let files = format!(r#"[{{"path":"../../planted","size":7,"blake3":"{planted}"}}]"#);
    let forged = format!(r#"{{"hash":"{}","files":{files}}}"#, fp("forged"));
    remote
        .put(&format!("artifacts/{}.json", fp("forged")), forged.into_bytes())
        .unwrap();
    let index = format!(r#"{{"fingerprint":"{}","artifact":"{}"}}"#, fp("victim"), fp("forged"));
    remote.put(&format!("index/{}.json", fp("victim")), index.into_bytes()).unwrap();
    let c = Store::open(d.path().join("c/cache")).unwrap();
    let e = mirror.fetch(&c, &fp("victim")).unwrap_err();
    assert!(e.is_bad_object() && e.to_string().contains("`..` component"), "{e}");
    assert!(!d.path().join("planted").exists() && !d.path().join("c/planted").exists());
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
