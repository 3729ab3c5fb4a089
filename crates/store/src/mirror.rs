//! The local cache mirrored to a shared [`RemoteStore`], by content hash, the way DVC remotes
//! and Bazel's remote cache do it. Layout under the store's URL:
//!
//! ```text
//! blobs/<blake3>            a file's bytes, named by their hash
//! artifacts/<hash>.json     an artifact's manifest, written after all of its blobs: the commit marker
//! index/<fingerprint>.json  fingerprint -> artifact, created only if absent (one writer wins)
//! scratch/<fingerprint>/    a running stage's checkpoints (crate::scratch)
//! ```
//!
//! **Architecture Invariant:** whatever the store returns is untrusted input. An index entry
//! is used only if it is the entry of the fingerprint asked for and names an artifact by a
//! hash; a manifest only if it names that artifact, lists only paths that stay inside it
//! (`crate::trust`) and its listing hashes to the artifact's name; a file only once its
//! bytes, streamed to disk with at most the manifest's size, hash to what the manifest says.
//! An object that fails is refused with a warning naming its key and treated as absent (the
//! stage is rebuilt, and its push replaces what can be replaced); nothing from it is written
//! outside the staging directory.
//!
//! **Architecture Invariant:** nothing in the store is deleted on one bad read. A blob that
//! hashes wrong after download is read again from the store; only a copy that is bad twice is
//! deleted (with the manifest that relied on it). A good copy that arrived changed points at
//! this machine, and nothing is deleted.
//!
//! **Architecture Invariant:** objects heal. Every push reads the artifact's manifest in the
//! store (one unusable on two reads is overwritten by the good one), checks that each of its
//! blobs is there (a `HEAD` each) and uploads what is missing, after re-hashing the
//! local file as it streams (bit rot on one machine is never published under a good hash).
//! A manifest found naming a blob the store lacks is removed, so the next run rebuilds the
//! artifact and pushes it whole.
//!
//! **Garbage collection and reuse.** Blobs are shared between artifacts, so a blob's age does
//! not say whether a manifest being written needs it. Two rules keep `gc` from deleting a blob
//! a concurrent push has just reused: a push that writes a new manifest uploads again every
//! blob it reuses that is older than [`REFRESH_AFTER`] (its age then says "in use"), and after
//! writing the manifest checks its blobs once more and uploads any that vanished; `gc` spares
//! blobs younger than its grace period (at least [`MIN_GC_GRACE`]), re-lists the manifests just
//! before deleting, and looks at each blob's age again just before deleting it.

use crate::remote::{Created, RemoteError, RemoteStore};
use crate::trust::{check_hash, check_rel_path};
use crate::{IndexEntry, Manifest, Store, StoreError};
use std::cell::RefCell;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The largest index entry read from a store.
const MAX_INDEX_ENTRY: u64 = 16 << 20;
/// The largest manifest read from a store (about a million files).
const MAX_MANIFEST: u64 = 256 << 20;
/// A blob that a new manifest reuses is uploaded again when it is older than this.
pub const REFRESH_AFTER: Duration = Duration::from_secs(3600);
/// `gc --store` spares everything younger than this, whatever grace it is given: twice
/// [`REFRESH_AFTER`], so a blob a push has reused always looks young to it.
pub const MIN_GC_GRACE: Duration = Duration::from_secs(2 * 3600);

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
    #[error("store {url}: {key} is not readable ({why}); it was not used, and the stage will be rebuilt")]
    Malformed {
        /// The store's URL.
        url: String,
        /// The object.
        key: String,
        /// What the JSON reader said.
        why: String,
    },
    /// An index entry or manifest in the store names something it may not (a path that
    /// climbs out, another fingerprint, a listing that does not hash to its name …).
    #[error("store {url}: {key} was refused: {why}; nothing from it was used or written, and the stage will be rebuilt")]
    Untrusted {
        /// The store's URL.
        url: String,
        /// The object.
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// A file arrived changed twice although the store's copy is good: this machine is at
    /// fault, and nothing in the store was deleted.
    #[error("store {url}: {key} arrived changed twice although the store's copy hashes right: this machine's disk, memory or network is changing data; nothing was used or deleted; check this machine")]
    Unsteady {
        /// The store's URL.
        url: String,
        /// The object.
        key: String,
    },
    /// A local file does not hash to what its artifact's manifest says: it is not uploaded.
    #[error("{path} in the local cache hashes to {got}, not {expected} as its manifest says, so it was not uploaded; run `spherepipe verify` to set the artifact aside")]
    LocalCorrupt {
        /// The file.
        path: String,
        /// What the manifest says.
        expected: String,
        /// What it hashes to now.
        got: String,
    },
}

impl MirrorError {
    /// True when the error is about one object of the store that cannot be used (corrupt,
    /// unreadable or refused): the artifact counts as absent and is rebuilt, with a warning.
    /// Anything else (the store or this machine failing) stops the run.
    pub fn is_bad_object(&self) -> bool {
        matches!(
            self,
            MirrorError::Corrupt { .. } | MirrorError::Malformed { .. } | MirrorError::Untrusted { .. } | MirrorError::Unsteady { .. }
        )
    }
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
    /// The store's index entry for the fingerprint was unusable (read twice): it was replaced
    /// by this push's.
    Replaced {
        /// Why it was unusable.
        why: String,
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

pub(crate) fn blob_key(hash: &str) -> String {
    format!("blobs/{hash}")
}

pub(crate) fn manifest_key(artifact: &str) -> String {
    format!("artifacts/{artifact}.json")
}

fn index_key(fingerprint: &str) -> String {
    format!("index/{fingerprint}.json")
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX)
}

/// What a push learns from the store's usable entry for its fingerprint.
fn compare(ours: &IndexEntry, theirs: IndexEntry) -> Pushed {
    if theirs.artifact == ours.artifact {
        Pushed::Agreed
    } else {
        Pushed::Differs { theirs: theirs.artifact }
    }
}

/// What reading a blob into a file found.
enum Arrived {
    /// The store has no such object.
    Missing,
    /// It arrived; this is what it hashes to (or why it was cut off).
    Hashed(String),
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

    fn untrusted(&self, key: &str, why: impl std::fmt::Display) -> MirrorError {
        MirrorError::Untrusted {
            url: self.url().to_owned(),
            key: key.to_owned(),
            why: why.to_string(),
        }
    }

    /// A JSON object of the store, at most `limit` bytes, parsed; `None` when absent.
    fn read_json<T: serde::de::DeserializeOwned>(&self, key: &str, limit: u64) -> Result<Option<T>, MirrorError> {
        let bytes = match self.remote.get(key, limit) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) if e.refused => return Err(self.untrusted(key, e.why)),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| MirrorError::Malformed {
            url: self.url().to_owned(),
            key: key.to_owned(),
            why: e.to_string(),
        })
    }

    /// Uploads the committed local artifact of `entry` (see [`Mirror::push_artifact`]) and
    /// records the fingerprint if the store has none for it.
    pub fn push(&self, local: &Store, entry: &IndexEntry) -> Result<Pushed, MirrorError> {
        entry
            .check(&entry.fingerprint)
            .map_err(|e| StoreError::Invalid(format!("index entry: {e}")))?;
        self.push_artifact(local, &entry.artifact)?;
        self.record(entry)
    }

    /// Makes the store hold the committed local artifact `artifact` whole: each blob it lacks
    /// is uploaded (streamed, and re-hashed on the way), then the manifest if it lacks it.
    pub fn push_artifact(&self, local: &Store, artifact: &str) -> Result<(), MirrorError> {
        let manifest = local.read_manifest(artifact)?;
        let dir = local.artifact_dir(artifact);
        let mkey = manifest_key(artifact);
        let new_manifest = !self.has_usable_manifest(artifact)?;
        for f in &manifest.files {
            self.ensure_blob(&dir, f, new_manifest)?;
        }
        if new_manifest {
            let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Invalid(e.to_string()))?;
            self.remote.put(&mkey, bytes)?;
            // A `gc` may have taken a reused blob between our look and the manifest.
            for f in &manifest.files {
                if self.remote.head(&blob_key(&f.blake3))?.is_none() {
                    self.upload_file(&dir, f)?;
                }
            }
        }
        Ok(())
    }

    /// Whether the store holds a usable manifest of `artifact`. One that is unusable on two
    /// reads counts as absent, so the push writes the good one over it.
    fn has_usable_manifest(&self, artifact: &str) -> Result<bool, MirrorError> {
        match self.manifest(artifact) {
            Ok(m) => Ok(m.is_some()),
            Err(e) if e.is_bad_object() => match self.manifest(artifact) {
                Ok(m) => Ok(m.is_some()),
                Err(again) if again.is_bad_object() => Ok(false),
                Err(again) => Err(again),
            },
            Err(e) => Err(e),
        }
    }

    /// Uploads `f` unless the store holds it (and, for a new manifest, holds it freshly).
    fn ensure_blob(&self, dir: &Path, f: &crate::FileEntry, new_manifest: bool) -> Result<(), MirrorError> {
        let key = blob_key(&f.blake3);
        if let Some(o) = self.remote.head(&key)? {
            let stale = new_manifest && now_unix().saturating_sub(o.modified_unix) > REFRESH_AFTER.as_secs() as i64;
            if o.size == f.size && !stale {
                return Ok(());
            }
        }
        self.upload_file(dir, f)
    }

    /// Streams `dir/f.path` to its blob, hashing it on the way; the upload is aborted (nothing
    /// written) unless it hashes to `f.blake3`.
    fn upload_file(&self, dir: &Path, f: &crate::FileEntry) -> Result<(), MirrorError> {
        check_rel_path(&f.path).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let path = dir.join(&f.path);
        let file = fs::File::open(&path).map_err(crate::io_at(&path))?;
        let state = RefCell::new((blake3::Hasher::new(), None::<String>));
        let mut reader = HashingReader {
            inner: file,
            state: &state,
        };
        let mut finish = || {
            let mut s = state.borrow_mut();
            let got = s.0.finalize().to_hex().to_string();
            if got == f.blake3 {
                Ok(())
            } else {
                s.1 = Some(got.clone());
                Err(format!("{} hashes to {got}, not {}", path.display(), f.blake3))
            }
        };
        let sent = self.remote.put_stream(&blob_key(&f.blake3), f.size, &mut reader, &mut finish);
        if let Some(got) = state.borrow_mut().1.take() {
            return Err(MirrorError::LocalCorrupt {
                path: path.display().to_string(),
                expected: f.blake3.clone(),
                got,
            });
        }
        Ok(sent?)
    }

    /// Creates the index entry, or says what the store's says. An entry that is unusable on
    /// two looks (refused, or naming an artifact whose manifest is gone or refused) is
    /// replaced by ours: the stage was rebuilt because of it.
    fn record(&self, entry: &IndexEntry) -> Result<Pushed, MirrorError> {
        let ikey = index_key(&entry.fingerprint);
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if self.remote.create(&ikey, bytes.clone())? == Created::New {
            return Ok(Pushed::Recorded);
        }
        let mut why = String::new();
        for _ in 0..2 {
            match self.usable_entry(&entry.fingerprint)? {
                Ok(theirs) => return Ok(compare(entry, theirs)),
                Err(w) => why = w,
            }
        }
        self.remote.delete(&ikey)?;
        if self.remote.create(&ikey, bytes)? == Created::New {
            return Ok(Pushed::Replaced { why });
        }
        // Another machine replaced it at the same moment.
        Ok(match self.index_entry(&entry.fingerprint)? {
            Some(theirs) => compare(entry, theirs),
            None => Pushed::Replaced { why },
        })
    }

    /// The store's entry for `fingerprint` if it can be used (it passes its checks, and so
    /// does its artifact's manifest), else why not.
    fn usable_entry(&self, fingerprint: &str) -> Result<Result<IndexEntry, String>, MirrorError> {
        let e = match self.index_entry(fingerprint) {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(Err("it vanished".into())),
            Err(e) if e.is_bad_object() => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        };
        match self.manifest(&e.artifact) {
            Ok(Some(_)) => Ok(Ok(e)),
            Ok(None) => Ok(Err(format!("its artifact {} has no manifest in the store", e.artifact))),
            Err(m) if m.is_bad_object() => Ok(Err(m.to_string())),
            Err(m) => Err(m),
        }
    }

    /// The store's index entry for `fingerprint`, if it has one; an entry that is not the
    /// fingerprint's, or names no artifact hash, is refused.
    pub fn index_entry(&self, fingerprint: &str) -> Result<Option<IndexEntry>, MirrorError> {
        let key = index_key(fingerprint);
        check_hash("fingerprint", fingerprint).map_err(|e| self.untrusted(&key, e))?;
        let entry: Option<IndexEntry> = self.read_json(&key, MAX_INDEX_ENTRY)?;
        if let Some(e) = &entry {
            e.check(fingerprint).map_err(|why| self.untrusted(&key, why))?;
        }
        Ok(entry)
    }

    /// An artifact's manifest in the store, if it is committed there, checked (see
    /// [`Manifest::check`]).
    pub fn manifest(&self, artifact: &str) -> Result<Option<Manifest>, MirrorError> {
        let key = manifest_key(artifact);
        check_hash("artifact", artifact).map_err(|e| self.untrusted(&key, e))?;
        let m: Option<Manifest> = self.read_json(&key, MAX_MANIFEST)?;
        if let Some(m) = &m {
            m.check(artifact).map_err(|why| self.untrusted(&key, why))?;
        }
        Ok(m)
    }

    /// The store's index entry for `fingerprint` if its artifact is committed there (its
    /// manifest present and usable), downloading no file. An unusable entry or manifest
    /// counts as absent, so a cluster run rebuilds the stage instead of handing its consumers
    /// something they will refuse.
    pub fn locate(&self, fingerprint: &str) -> Result<Option<IndexEntry>, MirrorError> {
        Ok(self.usable_entry(fingerprint)?.ok())
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
            let Some(manifest) = self.manifest(&entry.artifact)? else {
                return Ok(None);
            };
            self.download(local, &entry.artifact, &manifest)?;
        }
        local.record(&entry)?;
        Ok(Some(entry))
    }

    /// Streams a stored object through blake3 without keeping it; `None` when absent.
    pub(crate) fn hash_object(&self, key: &str) -> Result<Option<String>, MirrorError> {
        let mut h = blake3::Hasher::new();
        let got = self.remote.get_into(key, u64::MAX, &mut |piece| {
            h.update(piece);
            Ok(())
        })?;
        Ok(got.map(|_| h.finalize().to_hex().to_string()))
    }

    /// Downloads an artifact's files into a staging directory, checks each file's hash, and
    /// commits it; the committed tree must hash to `artifact`.
    fn download(&self, local: &Store, artifact: &str, manifest: &Manifest) -> Result<(), MirrorError> {
        let staging = local.new_staging_dir("fetch")?;
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
            // Checked with the manifest; checked again here, where it is joined to a path.
            check_rel_path(&f.path).map_err(|e| self.untrusted(&manifest_key(artifact), e))?;
            let path = staging.join(&f.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(crate::io_at(parent))?;
            }
            self.fetch_blob(&path, f, artifact)?;
        }
        Ok(())
    }

    /// Downloads `f`'s blob to `path`. On a wrong hash the store's copy is hashed again
    /// before anything is deleted: bad there too, the blob and the manifest that relied on it
    /// go (so the rebuilt artifact's push uploads both); good there, the download is tried
    /// once more. A blob the store lacks (twice) takes its manifest with it.
    fn fetch_blob(&self, path: &Path, f: &crate::FileEntry, artifact: &str) -> Result<(), MirrorError> {
        let key = blob_key(&f.blake3);
        let corrupt = |got: String| MirrorError::Corrupt {
            url: self.url().to_owned(),
            key: key.clone(),
            expected: f.blake3.clone(),
            got,
        };
        for attempt in 0..2 {
            let got = match self.blob_to_file(&key, f.size, path)? {
                Arrived::Hashed(got) if got == f.blake3 => return Ok(()),
                Arrived::Hashed(got) => got,
                Arrived::Missing => {
                    if self.remote.head(&key)?.is_none() {
                        self.remote.delete(&manifest_key(artifact))?;
                        return Err(corrupt("nothing (the object is missing; its manifest was removed)".into()));
                    }
                    continue;
                }
            };
            match self.hash_object(&key)? {
                Some(again) if again == f.blake3 && attempt == 0 => continue,
                Some(again) if again == f.blake3 => {
                    return Err(MirrorError::Unsteady {
                        url: self.url().to_owned(),
                        key,
                    })
                }
                _ => {
                    self.remote.delete(&key)?;
                    self.remote.delete(&manifest_key(artifact))?;
                    return Err(corrupt(got));
                }
            }
        }
        Err(corrupt("nothing (the object vanished while it was read)".into()))
    }

    /// Streams a blob into `path`, hashing it; at most `size` bytes are kept.
    fn blob_to_file(&self, key: &str, size: u64, path: &Path) -> Result<Arrived, MirrorError> {
        let file = fs::File::create(path).map_err(crate::io_at(path))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut h = blake3::Hasher::new();
        let mut n = 0u64;
        let mut too_long = false;
        let got = self.remote.get_sized(key, size, &mut |piece| {
            n += piece.len() as u64;
            if n > size {
                too_long = true;
                return Err(std::io::Error::other("more bytes than the manifest says"));
            }
            h.update(piece);
            out.write_all(piece)
        });
        match got {
            Err(_) if too_long => return Ok(Arrived::Hashed(format!("something longer than its {size} bytes"))),
            Err(e) if e.refused => return Ok(Arrived::Hashed(format!("something other than its {size} bytes ({})", e.why))),
            Err(e) => return Err(e.into()),
            Ok(None) => return Ok(Arrived::Missing),
            Ok(Some(_)) => {}
        }
        out.flush().map_err(crate::io_at(path))?;
        Ok(Arrived::Hashed(h.finalize().to_hex().to_string()))
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<'a> {
    inner: fs::File,
    state: &'a RefCell<(blake3::Hasher, Option<String>)>,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.state.borrow_mut().0.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{ObjectRemote, RemoteObject};
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A fingerprint (or any hash) made from a name.
    fn fp(name: &str) -> String {
        blake3::hash(name.as_bytes()).to_hex().to_string()
    }

    /// A remote that counts reads, can change the bytes of the coming reads of blobs whose
    /// bits are set in `flaky` (lowest first: a bad network or memory on this machine), and runs `on_list` once after a listing of
    /// `blobs` (to race a push against `gc`).
    struct Wrapped {
        inner: ObjectRemote,
        gets: AtomicUsize,
        flaky: AtomicUsize,
        on_list: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl Wrapped {
        fn new(url: &str) -> Arc<Wrapped> {
            Arc::new(Wrapped {
                inner: ObjectRemote::open(url).unwrap(),
                gets: AtomicUsize::new(0),
                flaky: AtomicUsize::new(0),
                on_list: Mutex::new(None),
            })
        }
    }

    impl RemoteStore for Wrapped {
        fn url(&self) -> &str {
            self.inner.url()
        }
        fn get_into(&self, key: &str, limit: u64, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> Result<Option<u64>, RemoteError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let flip = key.starts_with("blobs/")
                && self
                    .flaky
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| Some(m >> 1))
                    .unwrap_or(0)
                    & 1
                    == 1;
            self.inner.get_into(key, limit, &mut |piece| {
                let mut piece = piece.to_vec();
                if flip {
                    piece[0] ^= 1;
                }
                sink(&piece)
            })
        }
        fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
            self.inner.head(key)
        }
        fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
            self.inner.put(key, bytes)
        }
        fn put_stream(
            &self,
            key: &str,
            len: u64,
            source: &mut dyn Read,
            finish: &mut dyn FnMut() -> Result<(), String>,
        ) -> Result<(), RemoteError> {
            self.inner.put_stream(key, len, source, finish)
        }
        fn create(&self, key: &str, bytes: Vec<u8>) -> Result<Created, RemoteError> {
            self.inner.create(key, bytes)
        }
        fn list(&self, prefix: &str) -> Result<Vec<RemoteObject>, RemoteError> {
            let listed = self.inner.list(prefix);
            if prefix == "blobs" {
                if let Some(hook) = self.on_list.lock().unwrap().take() {
                    hook();
                }
            }
            listed
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
        let (a, entry) = local_with(&d.path().join("a"), &fp("1"), &files);
        assert_eq!(mirror.push(&a, &entry).unwrap(), Pushed::Recorded);
        // The layout: one blob per file by its hash, the manifest, the index entry.
        let keys: Vec<String> = remote.list("blobs").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&format!("blobs/{}", blake3::hash(b"alpha").to_hex())));
        assert!(remote.head(&format!("artifacts/{}.json", entry.artifact)).unwrap().is_some());

        let b = Store::open(d.path().join("b")).unwrap();
        assert_eq!(mirror.fetch(&b, &fp("1")).unwrap(), Some(entry.clone()));
        assert_eq!(b.lookup(&fp("1")), Some(entry.clone()));
        let dir = b.artifact_dir(&entry.artifact);
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"alpha");
        assert_eq!(fs::read(dir.join("sub/b.bin")).unwrap(), [0, 1, 2, 255]);
        assert!(mirror.fetch(&b, &fp("unknown")).unwrap().is_none());
        // Pushing the same artifact again agrees with what is there.
        assert_eq!(mirror.push(&a, &entry).unwrap(), Pushed::Agreed);
    }

    #[test]
    fn large_files_travel_in_parts_and_arrive_byte_for_byte() {
        let d = tempfile::tempdir().unwrap();
        // 1 KiB parts: a 100 KB file is a hundred-part upload.
        let remote = Arc::new(ObjectRemote::open("memory://multipart").unwrap().with_part_size(1024));
        let mirror = Mirror::new(remote.clone());
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let exact = vec![9u8; 4096]; // a whole number of parts
        let (a, entry) = local_with(&d.path().join("a"), &fp("big"), &[("big.bin", &big), ("exact.bin", &exact)]);
        mirror.push(&a, &entry).unwrap();
        let key = format!("blobs/{}", blake3::hash(&big).to_hex());
        assert_eq!(remote.head(&key).unwrap().unwrap().size, 100_000);
        let b = Store::open(d.path().join("b")).unwrap();
        mirror.fetch(&b, &fp("big")).unwrap().unwrap();
        assert_eq!(fs::read(b.artifact_dir(&entry.artifact).join("big.bin")).unwrap(), big);
        assert_eq!(fs::read(b.artifact_dir(&entry.artifact).join("exact.bin")).unwrap(), exact);
    }

    #[test]
    fn what_the_local_cache_holds_is_not_downloaded_again() {
        let d = tempfile::tempdir().unwrap();
        let counting = Wrapped::new("memory://read-through");
        let mirror = Mirror::new(counting.clone());
        let (a, entry) = local_with(&d.path().join("a"), &fp("x"), &[("x", b"1"), ("y", b"2")]);
        mirror.push(&a, &entry).unwrap();
        counting.gets.store(0, Ordering::SeqCst);
        // The artifact is already in `a`: only the index entry is read.
        mirror.fetch(&a, &fp("x")).unwrap();
        assert_eq!(counting.gets.load(Ordering::SeqCst), 1);
        // A fresh cache reads the index entry, the manifest and both blobs.
        let b = Store::open(d.path().join("b")).unwrap();
        counting.gets.store(0, Ordering::SeqCst);
        mirror.fetch(&b, &fp("x")).unwrap();
        assert_eq!(counting.gets.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_corrupted_object_is_refused_removed_and_restored_by_the_next_push() {
        let d = tempfile::tempdir().unwrap();
        let remote = memory("corrupt");
        let mirror = Mirror::new(remote.clone());
        let (a, entry) = local_with(&d.path().join("a"), &fp("c"), &[("data", b"the real bytes")]);
        mirror.push(&a, &entry).unwrap();
        let key = format!("blobs/{}", blake3::hash(b"the real bytes").to_hex());
        remote.put(&key, b"the real bytez".to_vec()).unwrap();

        let b = Store::open(d.path().join("b")).unwrap();
        let e = mirror.fetch(&b, &fp("c")).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, MirrorError::Corrupt { .. }) && e.is_bad_object(), "{msg}");
        assert!(msg.contains(&key) && msg.contains("was not used"), "{msg}");
        assert!(
            b.lookup(&fp("c")).is_none() && b.artifacts().unwrap().is_empty(),
            "nothing corrupt enters the cache"
        );
        assert!(remote.head(&key).unwrap().is_none(), "the bad copy is gone from the store");
        assert!(
            remote.head(&format!("artifacts/{}.json", entry.artifact)).unwrap().is_none(),
            "and its manifest"
        );
        // The rebuilt artifact's push uploads the blob again; then the fetch succeeds.
        assert_eq!(mirror.push(&a, &entry).unwrap(), Pushed::Agreed);
        assert_eq!(mirror.fetch(&b, &fp("c")).unwrap(), Some(entry.clone()));
        assert_eq!(fs::read(b.artifact_dir(&entry.artifact).join("data")).unwrap(), b"the real bytes");
    }

    #[test]
    fn a_bad_read_on_this_machine_deletes_nothing_in_the_store() {
        let d = tempfile::tempdir().unwrap();
        let flaky = Wrapped::new("memory://flaky");
        let mirror = Mirror::new(flaky.clone());
        let (a, entry) = local_with(&d.path().join("a"), &fp("f"), &[("data", b"good bytes")]);
        mirror.push(&a, &entry).unwrap();
        // One read arrives changed: the store's copy is hashed again, found good, and the
        // download is tried again.
        flaky.flaky.store(0b1, Ordering::SeqCst);
        let b = Store::open(d.path().join("b")).unwrap();
        assert_eq!(mirror.fetch(&b, &fp("f")).unwrap(), Some(entry.clone()));
        // Both downloads changed, not the re-checks between them: this machine is at fault,
        // and nothing is deleted.
        flaky.flaky.store(0b0101, Ordering::SeqCst);
        let c = Store::open(d.path().join("c")).unwrap();
        let e = mirror.fetch(&c, &fp("f")).unwrap_err();
        assert!(
            matches!(e, MirrorError::Unsteady { .. }) && e.to_string().contains("check this machine"),
            "{e}"
        );
        assert_eq!(remote_keys(&flaky.inner, "blobs").len(), 1, "the good blob stays");
        assert!(flaky.inner.head(&format!("artifacts/{}.json", entry.artifact)).unwrap().is_some());
        assert!(c.artifacts().unwrap().is_empty());
    }

    fn remote_keys(r: &dyn RemoteStore, prefix: &str) -> Vec<String> {
        r.list(prefix).unwrap().into_iter().map(|o| o.key).collect()
    }

    #[test]
    fn a_manifest_that_climbs_out_or_was_edited_is_refused_and_nothing_is_written() {
        let d = tempfile::tempdir().unwrap();
        let remote = memory("hostile");
        let mirror = Mirror::new(remote.clone());
        let (a, entry) = local_with(&d.path().join("a"), &fp("h"), &[("ok.txt", b"fine")]);
        mirror.push(&a, &entry).unwrap();
        let planted = blake3::hash(b"planted").to_hex().to_string();
        remote.put(&format!("blobs/{planted}"), b"planted".to_vec()).unwrap();
        let outside = d.path().join("outside.txt");
        let absolute = d.path().join("absolute.txt");
        let extra = |path: &str| crate::FileEntry {
            path: path.into(),
            size: 7,
            blake3: planted.clone(),
        };
        // 1. The genuine manifest, edited to list two more files: its listing no longer
        // hashes to its name.
        let mut edited = a.read_manifest(&entry.artifact).unwrap();
        edited.files.insert(0, extra("../../outside.txt"));
        edited.files.push(extra(absolute.to_str().unwrap()));
        let mkey = format!("artifacts/{}.json", entry.artifact);
        remote.put(&mkey, serde_json::to_vec(&edited).unwrap()).unwrap();
        let b = Store::open(d.path().join("b/cache")).unwrap();
        let e = mirror.fetch(&b, &fp("h")).unwrap_err();
        assert!(matches!(e, MirrorError::Untrusted { .. }) && e.to_string().contains(&mkey), "{e}");
        assert!(e.to_string().contains("`..` component"), "{e}");
        // The same edit with harmless names: the listing no longer hashes to the name.
        let mut renamed = edited.clone();
        renamed.files.retain(|f| !f.path.contains(".."));
        renamed.files.retain(|f| !f.path.starts_with('/'));
        renamed.files.push(extra("zz-more.txt"));
        remote.put(&mkey, serde_json::to_vec(&renamed).unwrap()).unwrap();
        let e = mirror.fetch(&b, &fp("h")).unwrap_err();
        assert!(e.to_string().contains("hashes to"), "{e}");
        remote.put(&mkey, serde_json::to_vec(&edited).unwrap()).unwrap();
        // 2. A forged manifest that hashes to its own name, and a forged index entry to it.
        let mut forged = Manifest {
            hash: String::new(),
            files: vec![extra("../../outside.txt")],
        };
        forged.hash = crate::hash::listing_hash(&forged.files);
        remote
            .put(&format!("artifacts/{}.json", forged.hash), serde_json::to_vec(&forged).unwrap())
            .unwrap();
        let forged_entry = IndexEntry {
            fingerprint: fp("victim"),
            artifact: forged.hash.clone(),
            provenance: serde_json::Value::Null,
        };
        remote
            .put(&format!("index/{}.json", fp("victim")), serde_json::to_vec(&forged_entry).unwrap())
            .unwrap();
        let e = mirror.fetch(&b, &fp("victim")).unwrap_err();
        assert!(e.is_bad_object() && e.to_string().contains("`..` component"), "{e}");
        assert_eq!(mirror.locate(&fp("victim")).unwrap(), None, "an unusable entry is no artifact");
        // 3. An index entry copied from another fingerprint.
        remote
            .put(&format!("index/{}.json", fp("other")), serde_json::to_vec(&entry).unwrap())
            .unwrap();
        let e = mirror.fetch(&b, &fp("other")).unwrap_err();
        assert!(e.to_string().contains("not") && e.to_string().contains(&fp("other")), "{e}");
        // 4. An index entry that is not JSON, or far too long.
        remote.put(&format!("index/{}.json", fp("junk")), b"{not json".to_vec()).unwrap();
        assert!(matches!(mirror.fetch(&b, &fp("junk")), Err(MirrorError::Malformed { .. })));
        remote
            .put(&format!("index/{}.json", fp("huge")), vec![b' '; (MAX_INDEX_ENTRY + 1) as usize])
            .unwrap();
        assert!(matches!(mirror.fetch(&b, &fp("huge")), Err(MirrorError::Untrusted { .. })));

        assert!(!outside.exists() && !absolute.exists() && !d.path().join("b/outside.txt").exists());
        assert!(b.artifacts().unwrap().is_empty() && b.index_entries().unwrap().is_empty());
        let tmp = fs::read_dir(b.root().join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "no staging directory is left behind");

        // The rebuilt stages' pushes replace the unusable index entry and the edited manifest;
        // `verify` removes what no push replaced.
        let (v, victim_entry) = local_with(&d.path().join("v"), &fp("victim"), &[("real", b"real")]);
        assert!(matches!(mirror.push(&v, &victim_entry).unwrap(), Pushed::Replaced { .. }));
        assert_eq!(mirror.index_entry(&fp("victim")).unwrap(), Some(victim_entry));
        mirror.push(&a, &entry).unwrap();
        assert_eq!(mirror.fetch(&b, &fp("h")).unwrap(), Some(entry));
        let (_, problems) = mirror.verify().unwrap();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(!keys.contains(&mkey.as_str()), "the push replaced it: {problems:?}");
        assert!(keys.contains(&format!("artifacts/{}.json", forged.hash).as_str()), "{problems:?}");
        assert!(keys.contains(&format!("index/{}.json", fp("other")).as_str()), "{problems:?}");
        assert!(keys.contains(&format!("index/{}.json", fp("junk")).as_str()), "{problems:?}");
    }

    #[test]
    fn a_missing_blob_takes_its_manifest_and_the_next_push_heals_the_store() {
        let d = tempfile::tempdir().unwrap();
        let remote = memory("heal");
        let mirror = Mirror::new(remote.clone());
        let (a, entry) = local_with(&d.path().join("a"), &fp("m"), &[("one", b"1"), ("two", b"2")]);
        mirror.push(&a, &entry).unwrap();
        let two = format!("blobs/{}", blake3::hash(b"2").to_hex());
        // A push finds the blob missing even with the manifest present, and uploads it.
        remote.delete(&two).unwrap();
        mirror.push(&a, &entry).unwrap();
        assert!(remote.head(&two).unwrap().is_some(), "push re-uploads what is missing");
        // A fetch that meets a missing blob removes the manifest, so `locate` (the
        // coordinator, a Slurm consumer) stops counting on it and the stage is rebuilt.
        remote.delete(&two).unwrap();
        let b = Store::open(d.path().join("b")).unwrap();
        let e = mirror.fetch(&b, &fp("m")).unwrap_err();
        assert!(e.is_bad_object() && e.to_string().contains("missing"), "{e}");
        assert_eq!(mirror.locate(&fp("m")).unwrap(), None);
        mirror.push(&a, &entry).unwrap();
        let c = Store::open(d.path().join("c")).unwrap();
        assert_eq!(mirror.fetch(&c, &fp("m")).unwrap(), Some(entry), "the machine after downloads");
    }

    #[test]
    fn a_local_file_that_rotted_is_not_published_under_its_good_hash() {
        let d = tempfile::tempdir().unwrap();
        // Small parts: the check runs on the multipart path too.
        let remote = Arc::new(ObjectRemote::open("memory://rot").unwrap().with_part_size(8));
        let mirror = Mirror::new(remote.clone());
        for (name, bytes) in [("small", b"tiny".to_vec()), ("large", vec![3u8; 100])] {
            let (a, entry) = local_with(&d.path().join(name), &fp(name), &[("f", &bytes)]);
            let good = blake3::hash(&bytes).to_hex().to_string();
            let path = a.artifact_dir(&entry.artifact).join("f");
            let mut rotten = bytes.clone();
            rotten[1] ^= 4;
            fs::write(&path, &rotten).unwrap();
            let e = mirror.push(&a, &entry).unwrap_err();
            assert!(
                matches!(e, MirrorError::LocalCorrupt { .. }) && e.to_string().contains("spherepipe verify"),
                "{e}"
            );
            assert!(remote.head(&format!("blobs/{good}")).unwrap().is_none(), "{name}: nothing uploaded");
            assert!(remote.head(&format!("artifacts/{}.json", entry.artifact)).unwrap().is_none());
        }
    }

    /// Sets an object's modification time in a `file://` store `secs` into the past.
    fn age(root: &Path, key: &str, secs: u64) {
        let f = fs::File::options().write(true).open(root.join(key)).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(secs)).unwrap();
    }

    #[test]
    fn gc_spares_a_blob_that_a_concurrent_push_reuses() {
        let d = tempfile::tempdir().unwrap();
        let shared = d.path().join("shared");
        fs::create_dir(&shared).unwrap();
        let url = format!("file://{}", shared.display());
        let wrapped = Wrapped::new(&url);
        let mirror = Mirror::new(wrapped.clone());
        // An old artifact nobody keeps, whose one blob a new artifact is about to reuse.
        let (old, old_entry) = local_with(&d.path().join("old"), &fp("old"), &[("weights", b"shared bytes")]);
        mirror.push(&old, &old_entry).unwrap();
        for o in wrapped.inner.list("").unwrap() {
            age(&shared, &o.key, 3 * 24 * 3600);
        }
        let (new, new_entry) = local_with(&d.path().join("new"), &fp("new"), &[("weights", b"shared bytes"), ("card", b"v2")]);
        // The push happens after gc listed the manifests and the blobs, before it deletes.
        let (m2, e2, n2) = (mirror.clone(), new_entry.clone(), new.clone());
        *wrapped.on_list.lock().unwrap() = Some(Box::new(move || {
            m2.push(&n2, &e2).unwrap();
        }));
        let gone = mirror.gc(&BTreeSet::new(), Duration::ZERO, true).unwrap();
        let gone: Vec<&str> = gone.iter().map(|o| o.key.as_str()).collect();
        assert!(
            gone.contains(&format!("artifacts/{}.json", old_entry.artifact).as_str()),
            "{gone:?}"
        );
        let blob = format!("blobs/{}", blake3::hash(b"shared bytes").to_hex());
        assert!(!gone.contains(&blob.as_str()), "{gone:?}");
        let fresh = Store::open(d.path().join("fresh")).unwrap();
        assert_eq!(mirror.fetch(&fresh, &fp("new")).unwrap(), Some(new_entry));
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
                .map(|k| {
                    local_with(
                        &d.path().join(k.to_string()),
                        &fp("race"),
                        &[("out", format!("run {k}").as_bytes())],
                    )
                })
                .collect();
            let results: Vec<Pushed> = std::thread::scope(|s| {
                let handles: Vec<_> = locals.iter().map(|(st, e)| s.spawn(|| mirror.push(st, e).unwrap())).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(results.iter().filter(|r| **r == Pushed::Recorded).count(), 1, "{url}: {results:?}");
            let winner = mirror.index_entry(&fp("race")).unwrap().unwrap().artifact;
            for ((_, e), r) in locals.iter().zip(&results) {
                match r {
                    Pushed::Recorded => assert_eq!(e.artifact, winner),
                    Pushed::Differs { theirs } => assert_eq!(theirs, &winner),
                    other => panic!("{url}: every artifact differs, got {other:?}"),
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
        // A URL's user-info never reaches a message.
        let e = ObjectRemote::open("ftp://alice:hunter2@host/x").err().unwrap().to_string();
        assert!(!e.contains("hunter2") && !e.contains("alice"), "{e}");
    }

    #[test]
    fn signatures_and_credentials_are_redacted() {
        let said = "Client error 403: <Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIAEXAMPLEKEY123</AWSAccessKeyId>\
<StringToSign>AWS4-HMAC-SHA256\n20261203T000000Z\nabc</StringToSign><SignatureProvided>deadbeef</SignatureProvided>\
<CanonicalRequest>GET /x</CanonicalRequest></Error> url http://bob:pw@127.0.0.1:9/b?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=f00d \
Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEY123/20261203, Signature=cafe";
        let r = crate::redact(said);
        for secret in [
            "AKIAEXAMPLEKEY123",
            "AWS4-HMAC-SHA256\n",
            "deadbeef",
            "GET /x",
            "bob",
            ":pw@",
            "f00d",
            "cafe",
            "AKIA%2F1",
        ] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(r.contains("SignatureDoesNotMatch") && r.contains("127.0.0.1:9/b"), "{r}");
    }
}
