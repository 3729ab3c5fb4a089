//! The content-addressed store under a cache directory. Where each file lives, and how each
//! kind is written, is [`CacheLayout`]'s (`layout.rs`); this crate root holds the store itself.
//!
//! A directory under `artifacts/` only ever appears by an atomic rename of a fully written
//! and fsynced directory, so a killed writer leaves at most junk in `tmp/`, never something a
//! later run would accept.

#![warn(missing_docs)]

mod atomic;
mod hash;
mod layout;
mod lock;
pub mod mirror;
pub mod remote;
mod scratch;
mod statcache;
pub mod trust;
mod upkeep;

pub use atomic::{fsync_dir, write_atomic};
pub use hash::{hash_file, hash_tree, FileEntry, TreeHash, TreeKind};
pub use layout::CacheLayout;
pub use lock::{private_dir, BuildLock, CacheLock, Claim, LockMode};
pub use mirror::{Mirror, MirrorError, Pushed, RemoteProblem, MIN_GC_GRACE};
pub use remote::{redact, ObjectRemote, RemoteError, RemoteStore};
pub use scratch::ScratchSync;
pub use statcache::StatCache;
pub use trust::{check_hash, check_rel_path, Refused};

use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Name of the manifest inside each artifact directory; stages may not write it.
pub const MANIFEST: &str = ".manifest.json";

/// What can go wrong in the store, each naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Something the store refuses (a symlink in an artifact, a reserved name, …).
    #[error("{0}")]
    Invalid(String),
    /// A dataset holds a symbolic link whose target does not exist.
    #[error("{link} is a dangling symbolic link: it points to {target}, which does not exist; fix the link or remove it")]
    DanglingLink {
        /// The link.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A dataset holds a symbolic link to a directory that contains the link.
    #[error(
        "{link} is a symbolic link to {target}, a directory that contains the link, so the dataset would never end; remove the link or point it outside"
    )]
    SymlinkCycle {
        /// The link.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Attaches the path to an io error.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The manifest of an artifact: every file with its size and hash, and the artifact's hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The artifact's content hash (its directory name).
    pub hash: String,
    /// Every file, sorted by path.
    pub files: Vec<FileEntry>,
}

/// What the index says about one stage fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    /// The stage fingerprint.
    pub fingerprint: String,
    /// The content hash of the artifact it produced.
    pub artifact: String,
    /// Free-form provenance written by the engine (stage, kind, params, inputs, time).
    #[serde(default)]
    pub provenance: serde_json::Value,
}

/// One verified-or-quarantined artifact, as `verify` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyProblem {
    /// The artifact's hash.
    pub artifact: String,
    /// What did not match.
    pub problem: String,
    /// Where it was moved (under `quarantine/`).
    pub moved_to: PathBuf,
}

/// An artifact `gc` removes (or would remove).
#[derive(Debug, Clone, Serialize)]
pub struct GcEntry {
    /// The artifact's hash.
    pub artifact: String,
    /// Its size on disk.
    pub bytes: u64,
}

/// A handle on a cache directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    layout: CacheLayout,
    /// The shared store this cache mirrors, if any.
    mirror: Option<Mirror>,
    /// This process's staging area under `tmp/`, made on first use and shared by clones.
    owner: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<lock::TmpOwner>>>>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        for p in CacheLayout::new(&root).directories() {
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        let root = fs::canonicalize(&root).map_err(io_at(&root))?;
        Ok(Store {
            layout: CacheLayout::new(&root),
            root,
            mirror: None,
            owner: Default::default(),
        })
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every path under the cache.
    pub fn layout(&self) -> &CacheLayout {
        &self.layout
    }

    /// This cache as a working copy of the shared store `mirror`: see [`Store::fetch_remote`]
    /// and [`Store::publish`].
    pub fn with_mirror(mut self, mirror: Mirror) -> Store {
        self.mirror = Some(mirror);
        self
    }

    /// The shared store, if this cache mirrors one.
    pub fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_ref()
    }

    /// On a local miss: the shared store's artifact for `fingerprint`, downloaded, checked and
    /// recorded here; `None` without a shared store or when it has none.
    pub fn fetch_remote(&self, fingerprint: &str) -> std::result::Result<Option<IndexEntry>, MirrorError> {
        match &self.mirror {
            Some(m) => m.fetch(self, fingerprint),
            None => Ok(None),
        }
    }

    /// Where `fingerprint`'s artifact is known: the local index, else the shared store's
    /// (nothing is downloaded).
    pub fn locate(&self, fingerprint: &str) -> std::result::Result<Option<IndexEntry>, MirrorError> {
        match (self.lookup(fingerprint), &self.mirror) {
            (Some(e), _) => Ok(Some(e)),
            (None, Some(m)) => m.locate(fingerprint),
            (None, None) => Ok(None),
        }
    }

    /// Hands a recorded artifact to the shared store, if there is one; says what its index
    /// held.
    pub fn publish(&self, entry: &IndexEntry) -> std::result::Result<Option<Pushed>, MirrorError> {
        self.mirror.as_ref().map(|m| m.push(self, entry)).transpose()
    }

    /// The directory of the artifact with content hash `hash`.
    pub fn artifact_dir(&self, hash: &str) -> PathBuf {
        self.layout.artifact(hash)
    }

    fn index_path(&self, fingerprint: &str) -> PathBuf {
        self.layout.index_entry(fingerprint)
    }

    /// Removes the staging that interrupted writers left: what no living process owns (see
    /// `lock.rs`), so runs sharing the cache never remove each other's work in progress.
    pub fn clean_tmp(&self) -> Result<usize> {
        lock::clean_dead_owners(&self.layout.tmp())
    }

    /// Whether this process may build `fingerprint`'s artifact now (`Claim::Held`, until the
    /// lock is dropped), or another process is building it. `who` tells a waiting process who
    /// holds it.
    pub fn claim(&self, fingerprint: &str, who: &str) -> Result<Claim> {
        check_hash("fingerprint", fingerprint).map_err(|e| StoreError::Invalid(e.to_string()))?;
        lock::claim(&self.layout.build_lock(fingerprint), who)
    }

    /// Who is building `fingerprint`'s artifact right now (another run holds its build lock),
    /// if anyone. Creates and locks nothing.
    pub fn builder(&self, fingerprint: &str) -> Result<Option<String>> {
        check_hash("fingerprint", fingerprint).map_err(|e| StoreError::Invalid(e.to_string()))?;
        lock::builder(&self.layout.build_lock(fingerprint))
    }

    /// A fresh empty directory for a stage to write into, on the store's filesystem, inside
    /// this process's own area of `tmp/`.
    pub fn new_staging_dir(&self, label: &str) -> Result<PathBuf> {
        let safe: String = label
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let area = self.staging_area()?;
        for attempt in 0..1000u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let p = area.join(format!("{safe}.{nanos}.{attempt}"));
            match fs::create_dir(&p) {
                Ok(()) => return Ok(p),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::Io { path: p, source: e }),
            }
        }
        Err(StoreError::Invalid("could not create a staging directory".into()))
    }

    /// `tmp/<owner>/`, this process's, created (with its lock) on first use.
    fn staging_area(&self) -> Result<PathBuf> {
        let mut owner = self
            .owner
            .lock()
            .map_err(|_| StoreError::Invalid("the staging area's lock was poisoned".into()))?;
        if let Some(o) = owner.as_ref() {
            return Ok(o.dir.clone());
        }
        let o = std::sync::Arc::new(lock::TmpOwner::create(&self.layout.tmp())?);
        let dir = o.dir.clone();
        *owner = Some(o);
        Ok(dir)
    }

    /// Hashes a finished staging directory, fsyncs it and moves it into `artifacts/`.
    /// Returns the artifact hash. If an identical artifact exists, the staging copy is dropped.
    pub fn commit(&self, staging: &Path) -> Result<Manifest> {
        if staging.join(MANIFEST).exists() {
            return Err(StoreError::Invalid(format!(
                "the stage wrote `{MANIFEST}`, a name reserved for the store; rename that file"
            )));
        }
        let tree = hash_tree(staging, TreeKind::Artifact, None)?;
        let manifest = Manifest {
            hash: tree.hash.clone(),
            files: tree.files,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mpath = staging.join(MANIFEST);
        fs::write(&mpath, &bytes).map_err(io_at(&mpath))?;
        atomic::fsync_tree(staging)?;
        let dest = self.artifact_dir(&manifest.hash);
        if self.read_manifest(&manifest.hash).is_ok() {
            fs::remove_dir_all(staging).map_err(io_at(staging))?;
        } else {
            if dest.exists() {
                // A directory without a readable manifest is not an artifact: set it aside.
                self.quarantine(&manifest.hash)?;
            }
            if let Err(e) = fs::rename(staging, &dest) {
                // Another process (a job on the same node) committed the same content first.
                if self.read_manifest(&manifest.hash).is_err() {
                    return Err(StoreError::Io { path: dest, source: e });
                }
                fs::remove_dir_all(staging).map_err(io_at(staging))?;
            }
            fsync_dir(&self.layout.artifacts())?;
        }
        Ok(manifest)
    }

    /// The manifest of artifact `hash`, checked as anything read from disk is (a cache's
    /// files may have been changed by another user, a bad disk or a hand edit): see
    /// [`Manifest::check`].
    pub fn read_manifest(&self, hash: &str) -> Result<Manifest> {
        check_hash("artifact", hash).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let p = self.artifact_dir(hash).join(MANIFEST);
        let bytes = fs::read(&p).map_err(io_at(&p))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid(format!("{}: {e}", p.display())))?;
        m.check(hash).map_err(|e| StoreError::Invalid(format!("{}: {e}", p.display())))?;
        Ok(m)
    }

    /// Records that `fingerprint` produced `artifact` (atomically).
    pub fn record(&self, entry: &IndexEntry) -> Result<()> {
        entry
            .check(&entry.fingerprint)
            .map_err(|e| StoreError::Invalid(format!("index entry: {e}")))?;
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| StoreError::Invalid(e.to_string()))?;
        write_atomic(&self.index_path(&entry.fingerprint), &bytes)
    }

    /// The index entry for `fingerprint`, if there is one, it is that fingerprint's, *and* its
    /// artifact is present.
    pub fn lookup(&self, fingerprint: &str) -> Option<IndexEntry> {
        check_hash("fingerprint", fingerprint).ok()?;
        let bytes = fs::read(self.index_path(fingerprint)).ok()?;
        let entry: IndexEntry = serde_json::from_slice(&bytes).ok()?;
        entry.check(fingerprint).ok()?;
        self.artifact_dir(&entry.artifact).join(MANIFEST).is_file().then_some(entry)
    }

    /// Every artifact hash present (directories under `artifacts/` with other names are not
    /// artifacts, and are left alone).
    pub fn artifacts(&self) -> Result<Vec<String>> {
        let dir = self.layout.artifacts();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let e = e.map_err(io_at(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if check_hash("artifact", &name).is_ok() && e.path().is_dir() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every usable index entry: unreadable ones, and ones whose fingerprint is not their
    /// file's name, are skipped.
    pub fn index_entries(&self) -> Result<Vec<IndexEntry>> {
        let dir = self.layout.index();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let p = e.map_err(io_at(&dir))?.path();
            let Some(fp) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let entry = fs::read(&p).ok().and_then(|b| serde_json::from_slice::<IndexEntry>(&b).ok());
            if let Some(entry) = entry.filter(|e| e.check(fp).is_ok()) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn quarantine(&self, hash: &str) -> Result<PathBuf> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let to = self.layout.quarantine().join(format!("{hash}.{stamp}.{}", std::process::id()));
        let from = self.artifact_dir(hash);
        fs::rename(&from, &to).map_err(io_at(&from))?;
        Ok(to)
    }

    /// Re-hashes every artifact; corrupted ones (changed, missing or extra files, unreadable
    /// manifest) are moved to `quarantine/`, so the next run rebuilds them. Hold the lock.
    pub fn verify(&self) -> Result<(usize, Vec<VerifyProblem>)> {
        let all = self.artifacts()?;
        let mut problems = Vec::new();
        for hash in &all {
            let problem = match self.read_manifest(hash) {
                Err(e) => Some(format!("manifest unreadable: {e}")),
                Ok(m) => match hash_tree(&self.artifact_dir(hash), TreeKind::Artifact, None) {
                    Err(e) => Some(format!("cannot re-hash: {e}")),
                    Ok(t) => describe_mismatch(hash, &m, &t),
                },
            };
            if let Some(problem) = problem {
                let moved_to = self.quarantine(hash)?;
                problems.push(VerifyProblem {
                    artifact: hash.clone(),
                    problem,
                    moved_to,
                });
            }
        }
        Ok((all.len(), problems))
    }

    /// Removes the build locks' files (one per fingerprint ever built). Only under the
    /// exclusive cache lock, when no run can hold one.
    fn remove_build_locks(&self) -> Result<()> {
        let locks = self.layout.locks();
        for e in fs::read_dir(&locks).map_err(io_at(&locks))? {
            let p = e.map_err(io_at(&locks))?.path();
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&p)(e)),
            }
        }
        Ok(())
    }

    /// Artifacts not in `live`; with `delete`, removes them and the index entries naming them
    /// (and, since no run holds the cache then, the build locks' files).
    pub fn gc(&self, live: &std::collections::BTreeSet<String>, delete: bool) -> Result<Vec<GcEntry>> {
        let mut out = Vec::new();
        for hash in self.artifacts()? {
            if live.contains(&hash) {
                continue;
            }
            let dir = self.artifact_dir(&hash);
            let bytes = hash::dir_size(&dir);
            if delete {
                fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
            }
            out.push(GcEntry { artifact: hash, bytes });
        }
        if delete {
            for e in self.index_entries()? {
                if !live.contains(&e.artifact) {
                    let p = self.index_path(&e.fingerprint);
                    fs::remove_file(&p).map_err(io_at(&p))?;
                }
            }
            self.remove_build_locks()?;
        }
        Ok(out)
    }
}

fn describe_mismatch(hash: &str, m: &Manifest, t: &TreeHash) -> Option<String> {
    if t.hash == *hash && m.hash == *hash {
        return None;
    }
    let listed: std::collections::BTreeMap<_, _> = m.files.iter().map(|f| (&f.path, f)).collect();
    let found: std::collections::BTreeMap<_, _> = t.files.iter().map(|f| (&f.path, f)).collect();
    let mut what = Vec::new();
    for (p, f) in &listed {
        match found.get(p) {
            None => what.push(format!("{p} is missing")),
            Some(g) if g.blake3 != f.blake3 => what.push(format!("{p} changed")),
            _ => {}
        }
    }
    for p in found.keys().filter(|p| !listed.contains_key(*p)) {
        what.push(format!("{p} is not in the manifest"));
    }
    if what.is_empty() {
        what.push(format!("manifest hash {} does not match its directory name", m.hash));
    }
    Some(what.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_is_content_addressed_and_verify_catches_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("cache")).unwrap();
        let stage = store.new_staging_dir("a").unwrap();
        fs::write(stage.join("x.txt"), b"hello").unwrap();
        fs::create_dir(stage.join("sub")).unwrap();
        fs::write(stage.join("sub/y.bin"), [1u8, 2, 3]).unwrap();
        let m = store.commit(&stage).unwrap();
        assert!(!stage.exists());
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[1].path, "x.txt");
        assert_eq!(m.files[1].blake3, blake3::hash(b"hello").to_hex().to_string());

        // Same content again: same hash, staging dropped.
        let stage2 = store.new_staging_dir("b").unwrap();
        fs::write(stage2.join("x.txt"), b"hello").unwrap();
        fs::create_dir(stage2.join("sub")).unwrap();
        fs::write(stage2.join("sub/y.bin"), [1u8, 2, 3]).unwrap();
        assert_eq!(store.commit(&stage2).unwrap().hash, m.hash);
        assert_eq!(store.artifacts().unwrap(), vec![m.hash.clone()]);

        let (n, problems) = store.verify().unwrap();
        assert_eq!((n, problems.len()), (1, 0));

        let y = store.artifact_dir(&m.hash).join("sub/y.bin");
        fs::write(&y, [1u8, 2, 4]).unwrap();
        let (_, problems) = store.verify().unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].problem, "sub/y.bin changed");
        assert!(!store.artifact_dir(&m.hash).exists());
        assert!(problems[0].moved_to.join("sub/y.bin").exists());
    }

    #[test]
    fn lookup_needs_the_artifact_to_exist() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stage = store.new_staging_dir("a").unwrap();
        fs::write(stage.join("x"), b"1").unwrap();
        let m = store.commit(&stage).unwrap();
        let e = IndexEntry {
            fingerprint: "f".repeat(64),
            artifact: m.hash.clone(),
            provenance: serde_json::Value::Null,
        };
        store.record(&e).unwrap();
        assert_eq!(store.lookup(&e.fingerprint), Some(e.clone()));
        fs::remove_dir_all(store.artifact_dir(&m.hash)).unwrap();
        assert_eq!(store.lookup(&e.fingerprint), None);
    }

    #[test]
    fn the_manifest_name_is_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stage = store.new_staging_dir("a").unwrap();
        fs::write(stage.join(MANIFEST), b"{}").unwrap();
        assert!(store.commit(&stage).unwrap_err().to_string().contains("reserved"));
    }
}
