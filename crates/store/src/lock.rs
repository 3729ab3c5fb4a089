//! Who may touch a cache at once. Three advisory locks (flock), each released by the OS when
//! its holder exits, even by SIGKILL, so a crash never leaves a lock that blocks:
//!
//! - `LOCK`, taken **shared** by every run and cluster job, **exclusive** by `gc` and `verify`
//!   (which delete and move artifacts, so they wait for the runs to finish);
//! - `locks/<fingerprint>.lock`, exclusive while one process builds that stage: two runs that
//!   need the same stage build it once, the second waiting for that stage only;
//! - `tmp/<owner>.lock`, exclusive for a process's life, beside its `tmp/<owner>/` staging
//!   directories: a run cleans only the staging of owners whose lock is free (dead).

use crate::{io_at, Result, StoreError};
use std::fs;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

/// What to do when another process holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Block until it is released (after telling the user).
    Wait,
    /// Fail at once with a message naming the holder.
    Fail,
}

/// Holds `cache/LOCK` (shared or exclusive) until dropped.
pub struct CacheLock {
    _file: fs::File,
}

impl CacheLock {
    /// Takes the lock for a run: shared with other runs and cluster jobs, so they proceed at
    /// once; waits for (or, with `LockMode::Fail`, refuses to run beside) a `gc` or `verify`.
    /// `on_wait` is called once if we have to wait, with a description of the holder.
    pub fn for_run(root: &Path, mode: LockMode, on_wait: impl FnOnce(&str)) -> Result<CacheLock> {
        let (path, file) = open_lock_file(root)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(CacheLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => {
                let who = holder(&path, "a spherepipe gc or verify");
                if mode == LockMode::Fail {
                    return Err(StoreError::Invalid(format!(
                        "the cache {} is in use by {who}; wait for it to finish, or run without --no-wait",
                        root.display()
                    )));
                }
                on_wait(&who);
                file.lock_shared().map_err(io_at(&path))?;
                Ok(CacheLock { _file: file })
            }
            Err(fs::TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Takes the lock alone, for `gc` and `verify`, which delete or move artifacts: waits for
    /// every run and job on the cache to finish (or refuses, with `LockMode::Fail`). `what`
    /// names the operation for other processes' messages.
    pub fn exclusive(root: &Path, what: &str, mode: LockMode, on_wait: impl FnOnce(&str)) -> Result<CacheLock> {
        let (path, mut file) = open_lock_file(root)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let who = "the spherepipe runs using it";
                if mode == LockMode::Fail {
                    return Err(StoreError::Invalid(format!(
                        "the cache {} is in use by {who}; wait for them to finish, or leave out --no-wait",
                        root.display()
                    )));
                }
                on_wait(who);
                file.lock().map_err(io_at(&path))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::Io { path, source: e }),
        }
        // Best effort: say who holds it, for a waiting run's message.
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| write!(file, "spherepipe {what}, pid {}", std::process::id()));
        Ok(CacheLock { _file: file })
    }

    /// Takes the lock shared, as a cluster job does on its node cache: jobs share it with
    /// each other and with runs, but not with a `gc` or `verify` of that cache (whose
    /// deletions would pull files from under them). Fails at once, naming the holder, rather
    /// than wait on a process that may be waiting for this job.
    pub fn shared(root: &Path) -> Result<CacheLock> {
        let (path, file) = open_lock_file(root)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(CacheLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Invalid(format!(
                "the cache {} is in use by {}; let it finish, or give this job a cache of its own (SPHEREPIPE_NODE_CACHE)",
                root.display(),
                holder(&path, "a spherepipe gc or verify")
            ))),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
        }
    }
}

/// Who an exclusive holder said it is (written in the lock file), else `fallback`.
fn holder(path: &Path, fallback: &str) -> String {
    use std::io::Read;
    // Another process writes it: read no more than a holder line needs.
    let mut said = String::new();
    let _ = fs::File::open(path).and_then(|f| f.take(1024).read_to_string(&mut said));
    match said.trim() {
        "" => fallback.to_owned(),
        s => s.chars().take(200).collect(),
    }
}

/// One process's right to build one fingerprint's artifact, until dropped.
#[derive(Debug)]
pub struct BuildLock {
    _file: fs::File,
}

/// Whether this process may build a fingerprint now.
#[derive(Debug)]
pub enum Claim {
    /// It may: no other process is building it.
    Held(BuildLock),
    /// Another process is building it; `holder` says which (pid, pipeline, stage).
    Busy {
        /// What the holder wrote in the lock file.
        holder: String,
    },
}

/// Tries to take `locks/<fingerprint>.lock`; `who` is written into it for the next process's
/// message. Never blocks: a waiting run polls, so that it can start other stages meanwhile.
pub(crate) fn claim(path: &Path, who: &str) -> Result<Claim> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_at(path))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0).and_then(|_| file.rewind()).and_then(|_| write!(file, "{who}"));
            Ok(Claim::Held(BuildLock { _file: file }))
        }
        Err(fs::TryLockError::WouldBlock) => Ok(Claim::Busy {
            holder: holder(path, "another spherepipe process"),
        }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Who is building the stage whose build lock is at `path`, if anyone: read without creating
/// the file or taking the lock (a shared probe, released at once), so `status` changes nothing.
pub(crate) fn builder(path: &Path) -> Result<Option<String>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(fs::TryLockError::WouldBlock) => Ok(Some(holder(path, "another spherepipe process"))),
        Err(fs::TryLockError::Error(e)) => Err(io_at(path)(e)),
    }
}

/// This process's staging area, `tmp/<owner>/`, with `tmp/<owner>.lock` held for as long as
/// the process (or the last clone of its `Store`) lives; both go when it is dropped.
#[derive(Debug)]
pub(crate) struct TmpOwner {
    pub(crate) dir: PathBuf,
    lock_path: PathBuf,
    _lock: fs::File,
}

impl TmpOwner {
    /// Creates the lock (first, so that a cleaner never sees the directory unlocked), then
    /// the directory.
    pub(crate) fn create(tmp: &Path) -> Result<TmpOwner> {
        for attempt in 0..1000u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let name = format!("{}.{nanos}.{attempt}", std::process::id());
            let lock_path = tmp.join(format!("{name}.lock"));
            let file = match fs::OpenOptions::new().write(true).create_new(true).open(&lock_path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_at(&lock_path)(e)),
            };
            file.lock().map_err(io_at(&lock_path))?;
            let dir = tmp.join(&name);
            fs::create_dir(&dir).map_err(io_at(&dir))?;
            return Ok(TmpOwner {
                dir,
                lock_path,
                _lock: file,
            });
        }
        Err(StoreError::Invalid(format!(
            "could not create a staging area under {}",
            tmp.display()
        )))
    }
}

impl Drop for TmpOwner {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Removes from `tmp` what no living process owns: each `<owner>/` whose `<owner>.lock` can be
/// taken (its process is gone), and anything else but lock files (left by an older
/// spherepipe). An owner locks its lock file before it makes its directory, so a directory
/// seen here is never one whose lock is not yet held. Returns how many entries went.
pub(crate) fn clean_dead_owners(tmp: &Path) -> Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(tmp).map_err(io_at(tmp))? {
        let p = e.map_err(io_at(tmp))?.path();
        if p.extension().is_some_and(|x| x == "lock") {
            continue;
        }
        let lock_path = PathBuf::from(format!("{}.lock", p.display()));
        let lock = match fs::OpenOptions::new().write(true).open(&lock_path) {
            Ok(f) => match f.try_lock() {
                Ok(()) => Some(f),
                Err(fs::TryLockError::WouldBlock) => continue,
                Err(fs::TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(&lock_path)(e)),
        };
        let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        match r {
            Ok(()) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&p)(e)),
        }
        if lock.is_some() {
            let _ = fs::remove_file(&lock_path);
        }
    }
    Ok(n)
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
    fn runs_share_the_cache_and_gc_waits_for_them() {
        let d = tempfile::tempdir().unwrap();
        let run_a = CacheLock::for_run(d.path(), LockMode::Fail, |_| {}).unwrap();
        let _run_b = CacheLock::for_run(d.path(), LockMode::Fail, |_| {}).unwrap();
        let _job = CacheLock::shared(d.path()).unwrap();
        let e = CacheLock::exclusive(d.path(), "gc", LockMode::Fail, |_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("in use by the spherepipe runs using it"), "{e}");
        drop((run_a, _run_b, _job));
        let path = d.path().to_path_buf();
        let gc = CacheLock::exclusive(d.path(), "gc", LockMode::Fail, |_| {}).unwrap();
        // A run refuses, or waits for the gc, naming it.
        let e = CacheLock::for_run(d.path(), LockMode::Fail, |_| {}).err().unwrap().to_string();
        assert!(e.contains("spherepipe gc, pid "), "{e}");
        let e = CacheLock::shared(d.path()).err().unwrap().to_string();
        assert!(e.contains("SPHEREPIPE_NODE_CACHE") && e.contains("spherepipe gc, pid"), "{e}");
        let waited = std::thread::spawn(move || {
            let mut told = String::new();
            let _l = CacheLock::for_run(&path, LockMode::Wait, |who| told = who.to_owned()).unwrap();
            told
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(gc);
        assert!(waited.join().unwrap().starts_with("spherepipe gc, pid"));
    }

    #[test]
    fn a_fingerprint_is_built_by_one_holder_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f.lock");
        let Claim::Held(first) = claim(&path, "pid 1, stage a").unwrap() else {
            panic!("a free lock was busy")
        };
        // A second open of the same file, even in this process, finds it busy and who holds it.
        match claim(&path, "pid 2, stage b").unwrap() {
            Claim::Busy { holder } => assert_eq!(holder, "pid 1, stage a"),
            Claim::Held(_) => panic!("two holders"),
        }
        assert_eq!(builder(&path).unwrap().as_deref(), Some("pid 1, stage a"));
        drop(first);
        assert_eq!(builder(&path).unwrap(), None);
        assert_eq!(builder(&d.path().join("never.lock")).unwrap(), None);
        assert!(!d.path().join("never.lock").exists(), "a probe creates nothing");
        assert!(matches!(claim(&path, "pid 2").unwrap(), Claim::Held(_)));
    }

    #[test]
    fn only_dead_owners_staging_is_cleaned() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path();
        let live = TmpOwner::create(tmp).unwrap();
        fs::write(live.dir.join("half"), b"x").unwrap();
        // A dead owner: its lock file exists but nobody holds it.
        fs::create_dir(tmp.join("9.1.0")).unwrap();
        fs::write(tmp.join("9.1.0/half"), b"x").unwrap();
        fs::write(tmp.join("9.1.0.lock"), b"").unwrap();
        // An older spherepipe's staging directory, without a lock file.
        fs::create_dir(tmp.join("train.77.5.0")).unwrap();
        assert_eq!(clean_dead_owners(tmp).unwrap(), 2);
        let mut left: Vec<_> = fs::read_dir(tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        let name = live.dir.file_name().unwrap().to_owned();
        let mut lock = name.clone();
        lock.push(".lock");
        assert_eq!(left, [name, lock]);
        assert!(live.dir.join("half").exists());
        drop(live);
        assert_eq!(fs::read_dir(tmp).unwrap().count(), 0, "an owner removes its own area");
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
