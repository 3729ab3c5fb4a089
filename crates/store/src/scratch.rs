//! A stage's scratch directory (training checkpoints) kept in the shared store while the
//! stage runs, so that a job pre-empted or requeued on another machine resumes where it
//! stopped instead of starting over.
//!
//! Layout: `scratch/<fingerprint>/files/<blake3>` (each file's bytes, by hash) and
//! `scratch/<fingerprint>/snapshot.json` (the files of one snapshot: path, size, hash),
//! written after every file it names. A snapshot is taken only while the directory holds
//! still (every file is stat'ed before and after it is hashed; a stage swapping checkpoint
//! directories meanwhile makes the save wait for the next round), and a restore takes a
//! whole snapshot or nothing, so step-N weights never meet a later step's optimizer state.
//! Everything is removed once the stage's artifact is in the store.

use crate::mirror::{Mirror, MirrorError};
use crate::remote::RemoteStore;
use crate::trust::{check_hash, check_rel_path};
use crate::{hash_file, FileEntry};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The largest snapshot record read from a store.
const MAX_SNAPSHOT: u64 = 16 << 20;

/// The record of one snapshot: every file of the scratch directory, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    files: Vec<FileEntry>,
}

/// A file's (size, modified, inode): what says it did not change between two looks.
type Stamp = (u64, SystemTime, u64);

/// A directory at rest: each file's stamp, and its entry (with its hash).
type AtRest = (Vec<(String, Stamp)>, Vec<FileEntry>);

/// Mirrors one stage's scratch directory to the shared store.
pub struct ScratchSync {
    remote: Arc<dyn RemoteStore>,
    prefix: String,
    dir: PathBuf,
    /// The stamps of the last snapshot sent (or restored), to skip a save when nothing changed.
    sent: Mutex<Vec<(String, Stamp)>>,
}

impl ScratchSync {
    /// The scratch of the stage with `fingerprint`, kept locally in `dir`.
    pub fn new(mirror: &Mirror, fingerprint: &str, dir: &Path) -> ScratchSync {
        ScratchSync {
            remote: mirror.remote.clone(),
            prefix: format!("scratch/{fingerprint}"),
            dir: dir.to_owned(),
            sent: Mutex::new(Vec::new()),
        }
    }

    fn record_key(&self) -> String {
        format!("{}/snapshot.json", self.prefix)
    }

    fn file_key(&self, hash: &str) -> String {
        format!("{}/files/{hash}", self.prefix)
    }

    /// Downloads the last whole snapshot an earlier attempt left in the store into the
    /// (empty) local directory; on any failure the directory is emptied again, so a stage
    /// never resumes from part of one. Returns how many files came back.
    pub fn restore(&self) -> Result<usize, MirrorError> {
        let key = self.record_key();
        let Some(bytes) = self.remote.get(&key, MAX_SNAPSHOT)? else {
            return Ok(0);
        };
        let untrusted = |why: String| MirrorError::Untrusted {
            url: self.remote.url().to_owned(),
            key: key.clone(),
            why,
        };
        let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| untrusted(e.to_string()))?;
        for f in &snap.files {
            check_rel_path(&f.path).map_err(|e| untrusted(e.to_string()))?;
            check_hash("file hash", &f.blake3).map_err(|e| untrusted(e.to_string()))?;
        }
        match self.restore_files(&snap) {
            Ok(()) => {
                *self.sent.lock().map_err(|_| untrusted("a save panicked".into()))? = stamps(&self.dir)?;
                Ok(snap.files.len())
            }
            Err(e) => {
                self.clear_local();
                Err(e)
            }
        }
    }

    fn restore_files(&self, snap: &Snapshot) -> Result<(), MirrorError> {
        for f in &snap.files {
            let path = self.dir.join(&f.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(crate::io_at(parent))?;
            }
            let key = self.file_key(&f.blake3);
            let mut out = fs::File::create(&path).map_err(crate::io_at(&path))?;
            let mut h = blake3::Hasher::new();
            let got = self.remote.get_into(&key, f.size, &mut |piece| {
                h.update(piece);
                std::io::Write::write_all(&mut out, piece)
            })?;
            let hash = h.finalize().to_hex().to_string();
            if got.is_none() || hash != f.blake3 {
                return Err(MirrorError::Corrupt {
                    url: self.remote.url().to_owned(),
                    key,
                    expected: f.blake3.clone(),
                    got: if got.is_none() { "nothing (missing)".into() } else { hash },
                });
            }
        }
        Ok(())
    }

    /// Empties the local directory (a restore that did not finish).
    fn clear_local(&self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
            }
        }
    }

    /// Sends a snapshot of the directory if it changed since the last one and held still while
    /// it was read: the files the store lacks, then the record, then the files no longer
    /// named are removed. Returns how many files were uploaded.
    pub fn save(&self) -> Result<usize, MirrorError> {
        let Some((before, files)) = self.at_rest(|| {})? else {
            return Ok(0);
        };
        let old = self.remote_files()?;
        let mut n = 0;
        for f in files.iter().filter(|f| !old.contains(&f.blake3)) {
            if !self.upload(f)? {
                return Ok(0); // changed while it was sent: the next round takes it
            }
            n += 1;
        }
        let snap = Snapshot { files };
        let record = serde_json::to_vec_pretty(&snap).map_err(|e| crate::StoreError::Invalid(e.to_string()))?;
        self.remote.put(&self.record_key(), record)?;
        let kept: BTreeSet<&str> = snap.files.iter().map(|f| f.blake3.as_str()).collect();
        for h in old.iter().filter(|h| !kept.contains(h.as_str())) {
            self.remote.delete(&self.file_key(h))?;
        }
        if let Ok(mut s) = self.sent.lock() {
            *s = before;
        }
        Ok(n)
    }

    /// The directory's stamps and files, if it changed since the last snapshot and held still
    /// while it was hashed (`meanwhile` runs between the hashing and the second look).
    fn at_rest(&self, meanwhile: impl FnOnce()) -> Result<Option<AtRest>, MirrorError> {
        let before = stamps(&self.dir)?;
        if before.is_empty() || self.sent.lock().map(|s| *s == before).unwrap_or(false) {
            return Ok(None);
        }
        let mut files = Vec::with_capacity(before.len());
        for (rel, (size, _, _)) in &before {
            let Ok(blake3) = hash_file(&self.dir.join(rel)) else {
                return Ok(None); // replaced meanwhile: the next round takes it
            };
            files.push(FileEntry {
                path: rel.clone(),
                size: *size,
                blake3,
            });
        }
        meanwhile();
        Ok((stamps(&self.dir)? == before).then_some((before, files)))
    }

    /// Streams one file up; false (nothing written) when it no longer hashes as it did.
    fn upload(&self, f: &FileEntry) -> Result<bool, MirrorError> {
        let path = self.dir.join(&f.path);
        let Ok(mut file) = fs::File::open(&path) else { return Ok(false) };
        let h = std::cell::RefCell::new(blake3::Hasher::new());
        let mut reader = Tee { inner: &mut file, h: &h };
        let mut finish = || {
            if h.borrow().finalize().to_hex().as_str() == f.blake3 {
                Ok(())
            } else {
                Err("the file changed while it was sent".to_owned())
            }
        };
        match self.remote.put_stream(&self.file_key(&f.blake3), f.size, &mut reader, &mut finish) {
            Ok(()) => Ok(true),
            Err(e) if e.refused => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The file hashes under `scratch/<fp>/files/`.
    fn remote_files(&self) -> Result<BTreeSet<String>, MirrorError> {
        let dir = format!("{}/files", self.prefix);
        Ok(self
            .remote
            .list(&dir)?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(&format!("{dir}/")).map(str::to_owned))
            .collect())
    }

    /// Removes the stage's scratch from the store (call once its artifact is in the store).
    pub fn drop_remote(&self) -> Result<(), MirrorError> {
        self.remote.delete(&self.record_key())?;
        for o in self.remote.list(&self.prefix)? {
            self.remote.delete(&o.key)?;
        }
        Ok(())
    }
}

/// A reader that hashes what passes through it.
struct Tee<'a> {
    inner: &'a mut fs::File,
    h: &'a std::cell::RefCell<blake3::Hasher>,
}

impl std::io::Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.h.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// Every file under `dir` with its path relative to `dir` ('/'-separated) and its stamp,
/// sorted by path.
fn stamps(dir: &Path) -> Result<Vec<(String, Stamp)>, MirrorError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                todo.push(path);
            } else if let (true, Ok(rel)) = (meta.is_file(), path.strip_prefix(dir)) {
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.ino());
                out.push((rel, stamp));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectRemote;

    fn shared(name: &str) -> (Arc<dyn RemoteStore>, Mirror) {
        let remote: Arc<dyn RemoteStore> = Arc::new(ObjectRemote::open(&format!("memory://{name}")).expect("memory store"));
        (remote.clone(), Mirror::new(remote))
    }

    #[test]
    fn a_checkpoint_saved_on_one_machine_is_restored_on_another_and_dropped_at_the_end() {
        let (remote, mirror) = shared("scratch-sync");
        let first = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(first.path().join("checkpoint")).expect("mkdir");
        fs::write(first.path().join("checkpoint/state.bin"), b"step 40").expect("write");
        fs::write(first.path().join("log.txt"), b"loss").expect("write");
        let a = ScratchSync::new(&mirror, "fp1", first.path());
        assert_eq!(a.save().expect("save"), 2);
        assert_eq!(a.save().expect("save again"), 0, "unchanged files are not sent again");
        fs::write(first.path().join("checkpoint/state.bin"), b"step 80!").expect("rewrite");
        assert_eq!(a.save().expect("save changed"), 1);
        // The old state's bytes went with the snapshot that named them.
        assert_eq!(remote.list("scratch/fp1/files").expect("list").len(), 2);

        let second = tempfile::tempdir().expect("tempdir");
        let b = ScratchSync::new(&mirror, "fp1", second.path());
        assert_eq!(b.restore().expect("restore"), 2);
        assert_eq!(fs::read(second.path().join("checkpoint/state.bin")).expect("read"), b"step 80!");
        assert_eq!(b.save().expect("nothing new"), 0, "restored files count as sent");
        let (_, other_mirror) = shared("scratch-sync");
        let other = ScratchSync::new(&other_mirror, "fp2", tempfile::tempdir().expect("tempdir").path());
        assert_eq!(
            other.restore().expect("restore other"),
            0,
            "another fingerprint's scratch is its own"
        );

        b.drop_remote().expect("drop");
        assert!(remote.list("scratch/fp1").expect("list").is_empty());
    }

    #[test]
    fn a_restore_takes_a_whole_snapshot_or_nothing() {
        let (remote, mirror) = shared("scratch-whole");
        let first = tempfile::tempdir().expect("tempdir");
        fs::write(first.path().join("weights"), b"step 40 weights").expect("write");
        fs::write(first.path().join("optimizer"), b"step 40 optimizer").expect("write");
        ScratchSync::new(&mirror, "fp", first.path()).save().expect("save");
        // Files uploaded for a later snapshot whose record never came (a job killed mid-save)
        // are not restored: the record names step 40's.
        remote
            .put(
                "scratch/fp/files/0000000000000000000000000000000000000000000000000000000000000000",
                b"step 80".to_vec(),
            )
            .expect("put");
        let second = tempfile::tempdir().expect("tempdir");
        assert_eq!(ScratchSync::new(&mirror, "fp", second.path()).restore().expect("restore"), 2);
        assert_eq!(fs::read(second.path().join("optimizer")).expect("read"), b"step 40 optimizer");
        // One file of the snapshot lost: nothing is restored, and the error says which.
        let weights = blake3::hash(b"step 40 weights").to_hex().to_string();
        remote.delete(&format!("scratch/fp/files/{weights}")).expect("delete");
        let third = tempfile::tempdir().expect("tempdir");
        let e = ScratchSync::new(&mirror, "fp", third.path()).restore().unwrap_err().to_string();
        assert!(e.contains(&weights), "{e}");
        assert_eq!(fs::read_dir(third.path()).expect("dir").count(), 0, "no part of a snapshot is kept");
    }

    #[test]
    fn a_snapshot_record_that_climbs_out_is_refused() {
        let (remote, mirror) = shared("scratch-hostile");
        let outside = tempfile::tempdir().expect("tempdir");
        let dir = outside.path().join("scratch");
        fs::create_dir(&dir).expect("mkdir");
        let h = blake3::hash(b"planted").to_hex().to_string();
        remote.put(&format!("scratch/fp/files/{h}"), b"planted".to_vec()).expect("put");
        let record = format!(r#"{{"files":[{{"path":"../planted","size":7,"blake3":"{h}"}}]}}"#);
        remote.put("scratch/fp/snapshot.json", record.into_bytes()).expect("put");
        let e = ScratchSync::new(&mirror, "fp", &dir).restore().unwrap_err();
        assert!(e.is_bad_object() && e.to_string().contains("`..` component"), "{e}");
        assert!(!outside.path().join("planted").exists());
    }

    #[test]
    fn a_directory_that_changes_while_it_is_read_is_not_sent() {
        let (remote, mirror) = shared("scratch-moving");
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join("weights"), b"step 40").expect("write");
        fs::write(d.path().join("optimizer"), b"step 40").expect("write");
        let s = ScratchSync::new(&mirror, "fp", d.path());
        // The stage swaps in the next checkpoint between the hashing and the second look.
        let swap = || {
            fs::remove_file(d.path().join("optimizer")).expect("rm");
            fs::write(d.path().join("optimizer"), b"step 80").expect("write");
        };
        assert_eq!(s.at_rest(swap).expect("look"), None, "a directory that moved is no snapshot");
        // At rest, it is one.
        let (_, files) = s.at_rest(|| {}).expect("look").expect("at rest");
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].blake3, blake3::hash(b"step 80").to_hex().to_string());
        assert_eq!(s.save().expect("save"), 2);
        assert!(remote.get("scratch/fp/snapshot.json", MAX_SNAPSHOT).expect("get").is_some());
    }
}
