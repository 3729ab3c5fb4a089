//! A stage's scratch directory (training checkpoints) kept in the shared store while the
//! stage runs, so that a job pre-empted or requeued on another machine resumes where it
//! stopped instead of starting over.
//!
//! Layout: `scratch/<fingerprint>/<relative path>`. Unlike artifacts, these objects are
//! overwritten in place: a checkpoint is the stage's own business, and it checks what it
//! resumes from. They are removed when the stage's artifact is committed.

use crate::mirror::{Mirror, MirrorError};
use crate::remote::RemoteStore;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Mirrors one stage's scratch directory to the shared store.
pub struct ScratchSync {
    remote: Arc<dyn RemoteStore>,
    prefix: String,
    dir: PathBuf,
    /// What was last uploaded, by relative path: (size, modified), to skip unchanged files.
    sent: Mutex<HashMap<String, (u64, SystemTime)>>,
}

impl ScratchSync {
    /// The scratch of the stage with `fingerprint`, kept locally in `dir`.
    pub fn new(mirror: &Mirror, fingerprint: &str, dir: &Path) -> ScratchSync {
        ScratchSync {
            remote: mirror.remote.clone(),
            prefix: format!("scratch/{fingerprint}"),
            dir: dir.to_owned(),
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Downloads what an earlier attempt left in the store into the (empty) local directory.
    /// Returns how many files came back.
    pub fn restore(&self) -> Result<usize, MirrorError> {
        let mut n = 0;
        for o in self.remote.list(&self.prefix)? {
            let Some(rel) = o.key.strip_prefix(&self.prefix).map(|r| r.trim_start_matches('/')) else {
                continue;
            };
            let Some(bytes) = self.remote.get(&o.key)? else { continue };
            let path = self.dir.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(crate::io_at(parent))?;
            }
            fs::write(&path, &bytes).map_err(crate::io_at(&path))?;
            let meta = fs::metadata(&path).map_err(crate::io_at(&path))?;
            self.remember(rel, &meta);
            n += 1;
        }
        Ok(n)
    }

    /// Uploads every file that changed since the last call. Returns how many were sent.
    pub fn save(&self) -> Result<usize, MirrorError> {
        let mut n = 0;
        for (rel, path) in files_under(&self.dir)? {
            let meta = fs::metadata(&path).map_err(crate::io_at(&path))?;
            let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            if self.sent.lock().map(|m| m.get(&rel) == Some(&stamp)).unwrap_or(false) {
                continue;
            }
            // A file the stage is replacing right now may vanish; the next save sends the new one.
            let Ok(bytes) = fs::read(&path) else { continue };
            self.remote.put(&format!("{}/{rel}", self.prefix), bytes)?;
            self.remember(&rel, &meta);
            n += 1;
        }
        Ok(n)
    }

    /// Removes the stage's scratch from the store (its artifact is committed).
    pub fn drop_remote(&self) -> Result<(), MirrorError> {
        for o in self.remote.list(&self.prefix)? {
            self.remote.delete(&o.key)?;
        }
        Ok(())
    }

    fn remember(&self, rel: &str, meta: &fs::Metadata) {
        let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        if let Ok(mut m) = self.sent.lock() {
            m.insert(rel.to_owned(), stamp);
        }
    }
}

/// Every file under `dir`, with its path relative to `dir` ('/'-separated).
fn files_under(dir: &Path) -> Result<Vec<(String, PathBuf)>, MirrorError> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, path));
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

    #[test]
    fn a_checkpoint_saved_on_one_machine_is_restored_on_another_and_dropped_at_the_end() {
        let remote: Arc<dyn RemoteStore> = Arc::new(ObjectRemote::open("memory://scratch-sync").expect("memory store"));
        let mirror = Mirror::new(remote.clone());
        let first = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(first.path().join("checkpoint")).expect("mkdir");
        fs::write(first.path().join("checkpoint/state.bin"), b"step 40").expect("write");
        fs::write(first.path().join("log.txt"), b"loss").expect("write");
        let a = ScratchSync::new(&mirror, "fp1", first.path());
        assert_eq!(a.save().expect("save"), 2);
        assert_eq!(a.save().expect("save again"), 0, "unchanged files are not sent again");
        fs::write(first.path().join("checkpoint/state.bin"), b"step 80!").expect("rewrite");
        assert_eq!(a.save().expect("save changed"), 1);

        let second = tempfile::tempdir().expect("tempdir");
        let b = ScratchSync::new(&mirror, "fp1", second.path());
        assert_eq!(b.restore().expect("restore"), 2);
        assert_eq!(fs::read(second.path().join("checkpoint/state.bin")).expect("read"), b"step 80!");
        assert_eq!(b.save().expect("nothing new"), 0, "restored files count as sent");
        let other = ScratchSync::new(&mirror, "fp2", tempfile::tempdir().expect("tempdir").path());
        assert_eq!(
            other.restore().expect("restore other"),
            0,
            "another fingerprint's scratch is its own"
        );

        b.drop_remote().expect("drop");
        assert!(remote.list("scratch/fp1").expect("list").is_empty());
    }
}
