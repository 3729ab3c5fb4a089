//! The local cache mirrored to a shared [`RemoteStore`], by content hash, the way DVC remotes
//! and Bazel's remote cache do it. Layout under the store's URL:
//!
//! ```text
//! blobs/<blake3>            a file's bytes, named by their hash
//! artifacts/<hash>.json     an artifact's manifest, written after all of its blobs: the commit marker
//! index/<fingerprint>.json  fingerprint -> artifact, created only if absent (one writer wins)
//! ```
//!
//! **Architecture Invariant:** an artifact is trusted only through its manifest, and every
//! downloaded file is re-hashed before it enters the local cache; a file whose hash differs is
//! refused and reported, never used. The local cache stays the working copy: what is already
//! there with the right hash is not downloaded again.
//!
//! **Architecture Invariant:** a manifest is in the store only while every blob it names is:
//! it is written after them, and removed (by `fetch` or `verify`) with any of them found bad.
//! So `push` uploads nothing for an artifact whose manifest is there.

use crate::remote::{Created, RemoteError, RemoteObject, RemoteStore};
use crate::{hash_file, IndexEntry, Manifest, Store, StoreError};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;

/// Why a mirror operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The remote store failed (unreachable, credentials, missing bucket …).
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The local cache failed.
    #[error(transparent)]
    Local(#[from] StoreError),
    /// A downloaded file is not what its manifest says: it was refused.
    #[error("store {url}: {key} should hash to {expected} but hashes to {got}: the object is corrupt and was not used; the stage will be rebuilt")]
    Corrupt {
        /// The store's URL.
        url: String,
        /// The object.
        key: String,
        /// The hash the manifest gives.
        expected: String,
        /// The hash of what was downloaded.
        got: String,
    },
    /// An index entry or manifest in the store is not JSON of the expected shape.
    #[error("store {url}: {key} is not readable ({why}); delete it there so that the stage is rebuilt")]
    Malformed {
        /// The store's URL.
        url: String,
        /// The object.
        key: String,
        /// What the JSON reader said.
        why: String,
    },
}

/// What pushing an artifact found in the store's index.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// This push recorded the fingerprint.
    Recorded,
    /// Another machine had recorded the same fingerprint with the same artifact.
    Agreed,
    /// Another machine had recorded the same fingerprint with a *different* artifact: the
    /// stage kind is not deterministic. The store keeps the first; `theirs` is its artifact.
    Differs {
        /// The artifact the store's index already holds.
        theirs: String,
    },
}

/// One problem `verify` found in the shared store, and what was done about it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteProblem {
    /// The object.
    pub key: String,
    /// What is wrong, and what was done.
    pub problem: String,
}

/// The local cache and the remote store it mirrors.
#[derive(Clone)]
pub struct Mirror {
    pub(crate) remote: Arc<dyn RemoteStore>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("url", &self.url()).finish()
    }
}

fn blob_key(hash: &str) -> String {
    format!("blobs/{hash}")
}

fn manifest_key(artifact: &str) -> String {
    format!("artifacts/{artifact}.json")
}

fn index_key(fingerprint: &str) -> String {
    format!("index/{fingerprint}.json")
}

impl Mirror {
    /// A mirror onto `remote`.
    pub fn new(remote: Arc<dyn RemoteStore>) -> Mirror {
        Mirror { remote }
    }

    /// The remote store's URL.
    pub fn url(&self) -> &str {
        self.remote.url()
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, MirrorError> {
        serde_json::from_slice(bytes).map_err(|e| MirrorError::Malformed {
            url: self.url().to_owned(),
            key: key.to_owned(),
            why: e.to_string(),
        })
    }

    /// Uploads the committed local artifact of `entry` (blobs not yet there, then its
    /// manifest) and records the fingerprint if the store has none for it.
    pub fn push(&self, local: &Store, entry: &IndexEntry) -> Result<Pushed, MirrorError> {
        // A manifest is in the store only while all its blobs are (it is written after them,
        // and removed with a blob found bad), so a present manifest means nothing to upload.
        let mkey = manifest_key(&entry.artifact);
        if !self.remote.exists(&mkey)? {
            let manifest = local.read_manifest(&entry.artifact)?;
            let dir = local.artifact_dir(&entry.artifact);
            for f in &manifest.files {
                let key = blob_key(&f.blake3);
                if !self.remote.exists(&key)? {
                    let path = dir.join(&f.path);
                    let bytes = fs::read(&path).map_err(crate::io_at(&path))?;
                    self.remote.put(&key, bytes)?;
                }
            }
            let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Invalid(e.to_string()))?;
            self.remote.put(&mkey, bytes)?;
        }
        let ikey = index_key(&entry.fingerprint);
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| StoreError::Invalid(e.to_string()))?;
        match self.remote.create(&ikey, bytes)? {
            Created::New => Ok(Pushed::Recorded),
            Created::Exists => {
                let theirs = self.index_entry(&entry.fingerprint)?.map(|e| e.artifact).unwrap_or_default();
                Ok(if theirs == entry.artifact {
                    Pushed::Agreed
                } else {
                    Pushed::Differs { theirs }
                })
            }
        }
    }

    /// The store's index entry for `fingerprint`, if it has one.
    pub fn index_entry(&self, fingerprint: &str) -> Result<Option<IndexEntry>, MirrorError> {
        let key = index_key(fingerprint);
        match self.remote.get(&key)? {
            Some(bytes) => self.parse(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// An artifact's manifest in the store, if it is committed there.
    pub fn manifest(&self, artifact: &str) -> Result<Option<Manifest>, MirrorError> {
        let key = manifest_key(artifact);
        match self.remote.get(&key)? {
            Some(bytes) => self.parse(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The store's index entry for `fingerprint` if its artifact is committed there (its
    /// manifest present), without downloading anything.
    pub fn locate(&self, fingerprint: &str) -> Result<Option<IndexEntry>, MirrorError> {
        match self.index_entry(fingerprint)? {
            Some(e) if self.remote.exists(&manifest_key(&e.artifact))? => Ok(Some(e)),
            _ => Ok(None),
        }
    }

    /// Makes the store's artifact for `fingerprint` present in the local cache and records it
    /// there: nothing is downloaded when the local cache already holds it; otherwise every
    /// file is downloaded, re-hashed and committed. `None` when the store has no finished
    /// artifact for it.
    pub fn fetch(&self, local: &Store, fingerprint: &str) -> Result<Option<IndexEntry>, MirrorError> {
        let Some(entry) = self.index_entry(fingerprint)? else {
            return Ok(None);
        };
        if local.read_manifest(&entry.artifact).is_err() {
            let mkey = manifest_key(&entry.artifact);
            let Some(bytes) = self.remote.get(&mkey)? else {
                return Ok(None);
            };
            let manifest: Manifest = self.parse(&mkey, &bytes)?;
            self.download(local, &entry.artifact, &manifest)?;
        }
        local.record(&entry)?;
        Ok(Some(entry))
    }

    /// Re-hashes every blob in the store and checks that every manifest's blobs are there.
    /// A blob whose content does not hash to its name is deleted, and so is a manifest that
    /// lacks a blob, so that nothing corrupt is trusted and the next run that makes the
    /// artifact uploads it again. Returns how many objects were checked and what was wrong.
    pub fn verify(&self) -> Result<(usize, Vec<RemoteProblem>), MirrorError> {
        let mut problems = Vec::new();
        let blobs = self.remote.list("blobs")?;
        let mut good = std::collections::BTreeSet::new();
        for b in &blobs {
            let name = b.key.trim_start_matches("blobs/");
            let Some(bytes) = self.remote.get(&b.key)? else { continue };
            let got = blake3::hash(&bytes).to_hex().to_string();
            if got == name {
                good.insert(got);
            } else {
                self.remote.delete(&b.key)?;
                problems.push(RemoteProblem {
                    key: b.key.clone(),
                    problem: format!("its content hashes to {got}; removed"),
                });
            }
        }
        let manifests = self.remote.list("artifacts")?;
        for m in &manifests {
            let Some(bytes) = self.remote.get(&m.key)? else { continue };
            let missing = match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(manifest) => manifest
                    .files
                    .iter()
                    .find(|f| !good.contains(&f.blake3))
                    .map(|f| format!("lacks the blob of {}", f.path)),
                Err(e) => Some(format!("is not a manifest ({e})")),
            };
            if let Some(why) = missing {
                self.remote.delete(&m.key)?;
                problems.push(RemoteProblem {
                    key: m.key.clone(),
                    problem: format!("{why}; removed, so the artifact is rebuilt and uploaded again"),
                });
            }
        }
        Ok((blobs.len() + manifests.len(), problems))
    }

    /// Removes (with `delete`; else only lists) what no artifact in `keep` needs: index
    /// entries and manifests of other artifacts, and blobs no remaining manifest names. An
    /// object younger than `grace` is never removed: a run in flight uploads its blobs
    /// before its manifest and index entry, so they look unused until it finishes.
    pub fn gc(&self, keep: &BTreeSet<String>, grace: std::time::Duration, delete: bool) -> Result<Vec<RemoteObject>, MirrorError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(i64::MAX);
        let old = |o: &RemoteObject| now.saturating_sub(o.modified_unix) >= grace.as_secs() as i64;
        let mut gone = Vec::new();
        for o in self.remote.list("index")? {
            let Some(bytes) = self.remote.get(&o.key)? else { continue };
            let unused = serde_json::from_slice::<IndexEntry>(&bytes).map_or(true, |e| !keep.contains(&e.artifact));
            if unused && old(&o) {
                gone.push(o);
            }
        }
        let mut needed = BTreeSet::new();
        for o in self.remote.list("artifacts")? {
            let artifact = o.key.trim_start_matches("artifacts/").trim_end_matches(".json");
            if keep.contains(artifact) || !old(&o) {
                if let Some(bytes) = self.remote.get(&o.key)? {
                    let m: Manifest = self.parse(&o.key, &bytes)?;
                    needed.extend(m.files.into_iter().map(|f| f.blake3));
                }
            } else {
                gone.push(o);
            }
        }
        for o in self.remote.list("blobs")? {
            if !needed.contains(o.key.trim_start_matches("blobs/")) && old(&o) {
                gone.push(o);
            }
        }
        if delete {
            for o in &gone {
                self.remote.delete(&o.key)?;
            }
        }
        Ok(gone)
    }

    /// Downloads an artifact's files into a staging directory, checks each file's hash, and
    /// commits it; the committed tree must hash to `artifact`.
    fn download(&self, local: &Store, artifact: &str, manifest: &Manifest) -> Result<(), MirrorError> {
        let staging = local.new_staging_dir(&format!("fetch-{artifact}"))?;
        let result = self
            .download_into(&staging, artifact, manifest)
            .and_then(|()| Ok(local.commit(&staging)?));
        match result {
            Ok(m) if m.hash == artifact => Ok(()),
            Ok(m) => Err(MirrorError::Corrupt {
                url: self.url().to_owned(),
                key: manifest_key(artifact),
                expected: artifact.to_owned(),
                got: m.hash,
            }),
            Err(e) => {
                // Whatever was downloaded is garbage now; the error says why.
                let _ = fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    fn download_into(&self, staging: &Path, artifact: &str, manifest: &Manifest) -> Result<(), MirrorError> {
        for f in &manifest.files {
            let key = blob_key(&f.blake3);
            let bytes = self.remote.get(&key)?.ok_or_else(|| MirrorError::Corrupt {
                url: self.url().to_owned(),
                key: key.clone(),
                expected: f.blake3.clone(),
                got: "nothing (the object is missing)".into(),
            })?;
            let path = staging.join(&f.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(crate::io_at(parent))?;
            }
            fs::write(&path, &bytes).map_err(crate::io_at(&path))?;
            let got = hash_file(&path)?;
            if got != f.blake3 {
                // Remove the bad copy, and the manifest that relied on it, so that the rebuilt
                // artifact's push uploads both again.
                self.remote.delete(&key)?;
                self.remote.delete(&manifest_key(artifact))?;
                return Err(MirrorError::Corrupt {
                    url: self.url().to_owned(),
                    key,
                    expected: f.blake3.clone(),
                    got,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::ObjectRemote;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A remote that counts the objects read through it.
    struct Counting {
        inner: ObjectRemote,
        gets: AtomicUsize,
    }

    impl RemoteStore for Counting {
        fn url(&self) -> &str {
            self.inner.url()
        }
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key)
        }
        fn exists(&self, key: &str) -> Result<bool, RemoteError> {
            self.inner.exists(key)
        }
        fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
            self.inner.put(key, bytes)
        }
        fn create(&self, key: &str, bytes: Vec<u8>) -> Result<Created, RemoteError> {
            self.inner.create(key, bytes)
        }
        fn list(&self, prefix: &str) -> Result<Vec<RemoteObject>, RemoteError> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<(), RemoteError> {
            self.inner.delete(key)
        }
        fn check(&self) -> Result<(), RemoteError> {
            self.inner.check()
        }
    }

    /// A local store holding one committed artifact with `files`, recorded under `fp`.
    fn local_with(root: &Path, fp: &str, files: &[(&str, &[u8])]) -> (Store, IndexEntry) {
        let store = Store::open(root).unwrap();
        let staging = store.new_staging_dir("t").unwrap();
        for (name, bytes) in files {
            let p = staging.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        }
        let m = store.commit(&staging).unwrap();
        let entry = IndexEntry {
            fingerprint: fp.into(),
            artifact: m.hash,
            provenance: serde_json::Value::Null,
        };
        store.record(&entry).unwrap();
        (store, entry)
    }

    fn memory(name: &str) -> Arc<ObjectRemote> {
        Arc::new(ObjectRemote::open(&format!("memory://{name}")).unwrap())
    }

    #[test]
    fn an_artifact_pushed_from_one_cache_arrives_whole_in_another() {
        let d = tempfile::tempdir().unwrap();
        let remote = memory("push-fetch");
        let mirror = Mirror::new(remote.clone());
        let files: [(&str, &[u8]); 2] = [("a.txt", b"alpha"), ("sub/b.bin", &[0, 1, 2, 255])];
        let (a, entry) = local_with(&d.path().join("a"), "fp1", &files);
        assert_eq!(mirror.push(&a, &entry).unwrap(), Pushed::Recorded);
        // The layout: one blob per file by its hash, the manifest, the index entry.
        let keys: Vec<String> = remote.list("blobs").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&format!("blobs/{}", blake3::hash(b"alpha").to_hex())));
        assert!(remote.exists(&format!("artifacts/{}.json", entry.artifact)).unwrap());

        let b = Store::open(d.path().join("b")).unwrap();
        assert_eq!(mirror.fetch(&b, "fp1").unwrap(), Some(entry.clone()));
        assert_eq!(b.lookup("fp1"), Some(entry.clone()));
        let dir = b.artifact_dir(&entry.artifact);
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"alpha");
        assert_eq!(fs::read(dir.join("sub/b.bin")).unwrap(), [0, 1, 2, 255]);
        assert!(mirror.fetch(&b, "unknown").unwrap().is_none());
        // Pushing the same artifact again agrees with what is there.
        assert_eq!(mirror.push(&a, &entry).unwrap(), Pushed::Agreed);
    }

    #[test]
    fn what_the_local_cache_holds_is_not_downloaded_again() {
        let d = tempfile::tempdir().unwrap();
        let counting = Arc::new(Counting {
            inner: ObjectRemote::open("memory://read-through").unwrap(),
            gets: AtomicUsize::new(0),
        });
        let mirror = Mirror::new(counting.clone());
        let (a, entry) = local_with(&d.path().join("a"), "fp", &[("x", b"1"), ("y", b"2")]);
        mirror.push(&a, &entry).unwrap();
        counting.gets.store(0, Ordering::SeqCst);
        // The artifact is already in `a`: only the index entry is read.
        mirror.fetch(&a, "fp").unwrap();
        assert_eq!(counting.gets.load(Ordering::SeqCst), 1);
        // A fresh cache reads the index entry, the manifest and both blobs.
        let b = Store::open(d.path().join("b")).unwrap();
        counting.gets.store(0, Ordering::SeqCst);
        mirror.fetch(&b, "fp").unwrap();
        assert_eq!(counting.gets.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_corrupted_object_is_refused_removed_and_restored_by_the_next_push() {
        let d = tempfile::tempdir().unwrap();
        let remote = memory("corrupt");
        let mirror = Mirror::new(remote.clone());
        let (a, entry) = local_with(&d.path().join("a"), "fp", &[("data", b"the real bytes")]);
        mirror.push(&a, &entry).unwrap();
        let key = format!("blobs/{}", blake3::hash(b"the real bytes").to_hex());
        remote.put(&key, b"the real bytez".to_vec()).unwrap();

        let b = Store::open(d.path().join("b")).unwrap();
        let e = mirror.fetch(&b, "fp").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, MirrorError::Corrupt { .. }), "{msg}");
        assert!(msg.contains(&key) && msg.contains("was not used"), "{msg}");
        assert!(
            b.lookup("fp").is_none() && b.artifacts().unwrap().is_empty(),
            "nothing corrupt enters the cache"
        );
        assert!(!remote.exists(&key).unwrap(), "the bad copy is gone from the store");
        assert!(
            !remote.exists(&format!("artifacts/{}.json", entry.artifact)).unwrap(),
            "and its manifest"
        );
        // The rebuilt artifact's push uploads the blob again; then the fetch succeeds.
        assert_eq!(mirror.push(&a, &entry).unwrap(), Pushed::Agreed);
        assert_eq!(mirror.fetch(&b, "fp").unwrap(), Some(entry.clone()));
        assert_eq!(fs::read(b.artifact_dir(&entry.artifact).join("data")).unwrap(), b"the real bytes");
    }

    #[test]
    fn of_racing_machines_one_index_entry_wins_and_the_others_learn_which() {
        for url in [
            "memory://race".to_owned(),
            format!("file://{}", tempfile::tempdir().unwrap().keep().display()),
        ] {
            let d = tempfile::tempdir().unwrap();
            let mirror = Mirror::new(Arc::new(ObjectRemote::open(&url).unwrap()));
            // Eight machines, one fingerprint, each with a different artifact (a stage kind
            // that is not deterministic).
            let locals: Vec<(Store, IndexEntry)> = (0..8)
                .map(|k| local_with(&d.path().join(k.to_string()), "fp", &[("out", format!("run {k}").as_bytes())]))
                .collect();
            let results: Vec<Pushed> = std::thread::scope(|s| {
                let handles: Vec<_> = locals.iter().map(|(st, e)| s.spawn(|| mirror.push(st, e).unwrap())).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(results.iter().filter(|r| **r == Pushed::Recorded).count(), 1, "{url}: {results:?}");
            let winner = mirror.index_entry("fp").unwrap().unwrap().artifact;
            for ((_, e), r) in locals.iter().zip(&results) {
                match r {
                    Pushed::Recorded => assert_eq!(e.artifact, winner),
                    Pushed::Differs { theirs } => assert_eq!(theirs, &winner),
                    Pushed::Agreed => panic!("{url}: every artifact differs"),
                }
            }
        }
    }

    #[test]
    fn a_store_that_cannot_be_opened_says_which_and_what_to_do() {
        let e = ObjectRemote::open("file:///no/such/shared/dir").err().unwrap().to_string();
        assert!(
            e.contains("file:///no/such/shared/dir") && e.contains("not a directory") && e.contains("mounted"),
            "{e}"
        );
        let e = ObjectRemote::open("ftp://host/x").err().unwrap().to_string();
        assert!(e.contains("unknown scheme `ftp`") && e.contains("s3://"), "{e}");
        let e = ObjectRemote::open("/just/a/path").err().unwrap().to_string();
        assert!(e.contains("not a URL"), "{e}");
    }
}
