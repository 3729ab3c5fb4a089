//! One writer per cache: an advisory lock on `cache/LOCK`, released by the OS when the
//! holder exits (even by SIGKILL), so a crash never leaves a stale lock.

use crate::{io_at, Result, StoreError};
use std::fs;
use std::io::{Seek, Write};
use std::path::Path;

/// What to do when another process holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Block until it is released (after telling the user).
    Wait,
    /// Fail at once with a message naming the holder.
    Fail,
}

/// Holds the cache lock until dropped.
pub struct CacheLock {
    _file: fs::File,
}

impl CacheLock {
    /// Takes the lock on `root/LOCK`. `on_wait` is called once if we have to wait, with a
    /// description of the holder.
    pub fn acquire(root: &Path, mode: LockMode, on_wait: impl FnOnce(&str)) -> Result<CacheLock> {
        let (path, mut file) = open_lock_file(root)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another spherepipe process".to_owned()
                } else {
                    format!("another spherepipe process ({holder})")
                };
                match mode {
                    LockMode::Fail => {
                        return Err(StoreError::Invalid(format!(
                            "the cache {} is in use by {who}; wait for it to finish, or use another cache directory",
                            root.display()
                        )))
                    }
                    LockMode::Wait => {
                        on_wait(&who);
                        file.lock().map_err(io_at(&path))?;
                    }
                }
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::Io { path, source: e }),
        }
        // Best effort: say who holds it, for the next process's message.
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| write!(file, "pid {}", std::process::id()));
        Ok(CacheLock { _file: file })
    }
}

impl CacheLock {
    /// Takes the lock shared, as a cluster job does on its node cache: jobs share it with
    /// each other, but not with a `run`, `gc` or `verify` of that cache (whose temp cleanup
    /// and deletions would pull files from under them). Fails at once, naming the holder,
    /// rather than wait on a process that may be waiting for this job.
    pub fn shared(root: &Path) -> Result<CacheLock> {
        let (path, file) = open_lock_file(root)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(CacheLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                Err(StoreError::Invalid(format!(
                    "the cache {} is in use by a spherepipe run, gc or verify ({}); let it finish, or give this job a cache of its own (SPHEREPIPE_NODE_CACHE)",
                    root.display(),
                    holder.trim()
                )))
            }
            Err(fs::TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
        }
    }
}

/// `root/LOCK`, opened (created if absent) for locking and for saying who holds it.
fn open_lock_file(root: &Path) -> Result<(std::path::PathBuf, fs::File)> {
    let path = crate::CacheLayout::new(root).lock();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_at(&path))?;
    Ok((path, file))
}

/// Checks (creating it, mode 0700, if absent) that `dir` is a directory of this user's that
/// no one else can write: a cluster job's cache, which it trusts as its own. A cache owned by
/// another user, or writable by others, could hand the job planted artifacts.
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_at(dir)(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io_at(dir))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let refuse = |why: String| {
        Err(StoreError::Invalid(format!(
            "the node cache {} {why}; a job's cache must be a directory of its own user that no one else can write: remove it, or set SPHEREPIPE_NODE_CACHE to a directory of yours (mode 0700)",
            dir.display()
        )))
    };
    if !meta.is_dir() {
        return refuse("is not a directory (perhaps a symbolic link)".into());
    }
    if meta.uid() != me {
        return refuse(format!("is owned by user id {}, not by this job's ({me})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!("can be written by others (mode {:o})", meta.mode() & 0o777));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_fails_fast_or_waits() {
        let d = tempfile::tempdir().unwrap();
        let first = CacheLock::acquire(d.path(), LockMode::Fail, |_| {}).unwrap();
        let e = CacheLock::acquire(d.path(), LockMode::Fail, |_| {}).err().unwrap().to_string();
        assert!(e.contains("in use by another spherepipe process (pid "), "{e}");
        let path = d.path().to_path_buf();
        let waited = std::thread::spawn(move || {
            let mut told = false;
            let _l = CacheLock::acquire(&path, LockMode::Wait, |_| told = true).unwrap();
            told
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(first);
        assert!(waited.join().unwrap());
    }

    #[test]
    fn jobs_share_a_node_cache_but_not_with_a_run() {
        let d = tempfile::tempdir().unwrap();
        let a = CacheLock::shared(d.path()).unwrap();
        let _b = CacheLock::shared(d.path()).unwrap();
        let e = CacheLock::acquire(d.path(), LockMode::Fail, |_| {}).err().unwrap().to_string();
        assert!(e.contains("in use"), "{e}");
        drop((a, _b));
        let run = CacheLock::acquire(d.path(), LockMode::Fail, |_| {}).unwrap();
        let e = CacheLock::shared(d.path()).err().unwrap().to_string();
        assert!(e.contains("SPHEREPIPE_NODE_CACHE") && e.contains("pid"), "{e}");
        drop(run);
    }

    #[test]
    fn a_node_cache_is_made_private_and_a_foreign_or_open_one_refused() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("node/cache");
        private_dir(&cache).unwrap();
        assert_eq!(fs::metadata(&cache).unwrap().mode() & 0o777, 0o700);
        private_dir(&cache).unwrap();
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&cache).unwrap_err().to_string();
        assert!(e.contains("written by others (mode 777)"), "{e}");
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&cache, &link).unwrap();
        assert!(private_dir(&link).unwrap_err().to_string().contains("not a directory"));
        // Another user's: only root can make one to test with.
        if std::os::unix::fs::chown(&cache, Some(54321), None).is_ok() {
            let e = private_dir(&cache).unwrap_err().to_string();
            assert!(e.contains("owned by user id 54321"), "{e}");
        } else {
            eprintln!("skipped the foreign-owner case: only root can give a directory away");
        }
    }
}
