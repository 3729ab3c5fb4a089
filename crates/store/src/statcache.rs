//! Persistent (path, size, mtime, inode) -> blake3 map, so that re-hashing an unchanged
//! dataset reads no file contents.

use crate::{write_atomic, Result};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Clone, PartialEq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    dev: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        Stamp {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            inode: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// Files modified this recently are not remembered: a write within the same timestamp tick
/// could otherwise go unnoticed (git's "racy clean" problem).
const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// A thread-safe stat cache, loaded from and saved to one tab-separated file.
pub struct StatCache {
    path: PathBuf,
    map: Mutex<HashMap<PathBuf, (Stamp, String)>>,
    dirty: std::sync::atomic::AtomicBool,
}

impl StatCache {
    /// Loads `path`; a missing or damaged file just means an empty cache.
    pub fn load(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut map = HashMap::new();
        if let Ok(text) = fs::read_to_string(&path) {
            for line in text.lines() {
                let mut it = line.splitn(6, '\t');
                let parsed = (|| {
                    let size = it.next()?.parse().ok()?;
                    let mtime_ns = it.next()?.parse().ok()?;
                    let inode = it.next()?.parse().ok()?;
                    let dev = it.next()?.parse().ok()?;
                    let hash = it.next()?.to_owned();
                    let p = PathBuf::from(it.next()?);
                    Some((
                        p,
                        (
                            Stamp {
                                size,
                                mtime_ns,
                                inode,
                                dev,
                            },
                            hash,
                        ),
                    ))
                })();
                if let Some((p, v)) = parsed {
                    map.insert(p, v);
                }
            }
        }
        StatCache {
            path,
            map: Mutex::new(map),
            dirty: false.into(),
        }
    }

    /// The recorded hash of `path`, if its stat still matches.
    pub fn get(&self, path: &Path, meta: &fs::Metadata) -> Option<String> {
        let map = self.map.lock().ok()?;
        let (stamp, hash) = map.get(path)?;
        (*stamp == Stamp::of(meta)).then(|| hash.clone())
    }

    /// Records `path`'s hash under its stat, unless the file changed too recently to trust
    /// (git's racy-clean rule) or its name cannot be written in the file.
    pub fn put(&self, path: &Path, meta: &fs::Metadata, hash: &str) {
        let stamp = Stamp::of(meta);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        if now - stamp.mtime_ns < RACY_WINDOW_NS || path.to_str().is_none_or(|s| s.contains(['\n', '\t'])) {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            map.insert(path.to_path_buf(), (stamp, hash.to_owned()));
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// How many files are recorded.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache back (atomically) if anything was added.
    pub fn save(&self) -> Result<()> {
        if !self.dirty.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let map = match self.map.lock() {
            Ok(m) => m,
            Err(_) => return Ok(()),
        };
        let mut out = String::with_capacity(map.len() * 160);
        for (p, (s, h)) in map.iter() {
            if let Some(ps) = p.to_str() {
                out.push_str(&format!("{}\t{}\t{}\t{}\t{}\t{}\n", s.size, s.mtime_ns, s.inode, s.dev, h, ps));
            }
        }
        write_atomic(&self.path, out.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{hash_tree, TreeKind};

    fn age(path: &Path) {
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        fs::File::options().write(true).open(path).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn unchanged_files_are_not_reread_and_changed_ones_are() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir(&data).unwrap();
        for i in 0..5 {
            let p = data.join(format!("{i}.txt"));
            fs::write(&p, format!("file {i}")).unwrap();
            age(&p);
        }
        let cpath = d.path().join("stat-cache.tsv");
        let c = StatCache::load(&cpath);
        let first = hash_tree(&data, TreeKind::Dataset, Some(&c)).unwrap();
        assert_eq!(first.files_read, 5);
        c.save().unwrap();

        let c = StatCache::load(&cpath);
        assert_eq!(c.len(), 5);
        let second = hash_tree(&data, TreeKind::Dataset, Some(&c)).unwrap();
        assert_eq!((second.files_read, &second.hash), (0, &first.hash));

        fs::write(data.join("3.txt"), "changed").unwrap();
        age(&data.join("3.txt"));
        let third = hash_tree(&data, TreeKind::Dataset, Some(&c)).unwrap();
        assert_eq!(third.files_read, 1);
        assert_ne!(third.hash, first.hash);
    }

    #[test]
    fn freshly_written_files_are_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        fs::write(&p, "x").unwrap();
        let c = StatCache::load(d.path().join("c"));
        hash_tree(d.path(), TreeKind::Dataset, Some(&c)).unwrap();
        assert!(c.is_empty());
    }
}
