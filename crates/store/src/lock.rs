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
        let path = root.join("LOCK");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_at(&path))?;
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
}
