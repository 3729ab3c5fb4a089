//! Hashing files and directory trees with blake3, in parallel.

use crate::statcache::StatCache;
use crate::{io_at, Result, StoreError, MANIFEST};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One file of a tree: its path relative to the root (with `/`), size and blake3 (hex).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Path relative to the tree's root, with `/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the contents, hex.
    pub blake3: String,
}

/// The result of hashing a tree.
#[derive(Debug, Clone)]
pub struct TreeHash {
    /// blake3 over the sorted (path, size, file hash) list: the tree's content hash.
    pub hash: String,
    /// Every file, sorted by path.
    pub files: Vec<FileEntry>,
    /// Total size of the files.
    pub bytes: u64,
    /// How many files had to be read (the rest came from the stat cache).
    pub files_read: usize,
}

/// What is being hashed decides how links are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    /// A stage's output: symlinks and special files are refused (they could point outside
    /// the cache), and the manifest at the root is not part of the content.
    Artifact,
    /// A user's dataset (a directory or one file): symlinks are followed.
    Dataset,
}

const BIG_FILE: u64 = 16 << 20;

/// blake3 of one file's contents, hex. Large files are read in `BIG_FILE` pieces, each hashed
/// in parallel: a mapped file would count in the process's resident set as it is read, so
/// committing a 10 GB artifact would look like (and be reported as) a 10 GB process.
pub fn hash_file(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(io_at(path))?;
    let mut hasher = blake3::Hasher::new();
    if meta.len() >= BIG_FILE {
        let mut f = fs::File::open(path).map_err(io_at(path))?;
        let mut buf = Vec::with_capacity(BIG_FILE as usize);
        loop {
            buf.clear();
            (&mut f).take(BIG_FILE).read_to_end(&mut buf).map_err(io_at(path))?;
            if buf.is_empty() {
                break;
            }
            hasher.update_rayon(&buf);
        }
    } else {
        let mut f = fs::File::open(path).map_err(io_at(path))?;
        let mut buf = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut buf).map_err(io_at(path))?;
        hasher.update(&buf);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

struct Found {
    rel: String,
    abs: PathBuf,
    meta: fs::Metadata,
}

/// A file seen while listing, not yet stat'ed: the stats run in parallel afterwards.
struct Listed {
    rel: String,
    abs: PathBuf,
    symlink: bool,
}

/// Lists files under `root/rel` recursively. Directory entries carry their type, so only
/// symlinks need a stat here; files are stat'ed later, in parallel. `open` holds the canonical
/// paths of the directories being walked (the root's first), so that a dataset link back into
/// one of them is reported as the cycle it is.
fn walk(root: &Path, rel: &str, kind: TreeKind, open: &mut Vec<PathBuf>, out: &mut Vec<Listed>) -> Result<()> {
    let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
    let entries = fs::read_dir(&dir).map_err(io_at(&dir))?;
    for e in entries {
        let e = e.map_err(io_at(&dir))?;
        let name = e.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| StoreError::Invalid(format!("{}: file name is not valid UTF-8", e.path().display())))?;
        if rel.is_empty() && kind == TreeKind::Artifact && name == MANIFEST {
            continue;
        }
        let child_rel = if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
        let abs = e.path();
        let ft = e.file_type().map_err(io_at(&abs))?;
        if ft.is_symlink() {
            if kind == TreeKind::Artifact {
                return Err(StoreError::Invalid(format!(
                    "{child_rel} is a symbolic link; an artifact must hold plain files only, since a link could point outside the cache (copy the file instead)"
                )));
            }
            match followed_dir(&abs, open)? {
                Some(target) => {
                    open.push(target);
                    walk(root, &child_rel, kind, open, out)?;
                    open.pop();
                }
                None => out.push(Listed {
                    rel: child_rel,
                    abs,
                    symlink: true,
                }),
            }
        } else if ft.is_dir() {
            let canonical = open.last().map(|p| p.join(name)).unwrap_or_else(|| abs.clone());
            open.push(canonical);
            walk(root, &child_rel, kind, open, out)?;
            open.pop();
        } else if ft.is_file() {
            out.push(Listed {
                rel: child_rel,
                abs,
                symlink: false,
            });
        } else {
            return Err(StoreError::Invalid(format!("{}: not a regular file or directory", abs.display())));
        }
    }
    Ok(())
}

/// Every file under the directory `root`, unsorted.
fn list(root: &Path, kind: TreeKind) -> Result<Vec<Listed>> {
    let mut open = vec![fs::canonicalize(root).map_err(io_at(root))?];
    let mut listed = Vec::new();
    walk(root, "", kind, &mut open, &mut listed)?;
    Ok(listed)
}

/// Where a dataset's symbolic link leads: `Some(canonical directory)` to walk into, `None` for
/// a file. A dangling link, and a link back into a directory being walked, are errors that
/// name the link and its target.
fn followed_dir(link: &Path, open: &[PathBuf]) -> Result<Option<PathBuf>> {
    let target = fs::read_link(link).map_err(io_at(link))?;
    let meta = match fs::metadata(link) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::DanglingLink {
                link: link.to_path_buf(),
                target,
            })
        }
        // ELOOP: the link resolves through itself.
        Err(e) if e.raw_os_error() == Some(40) => {
            return Err(StoreError::SymlinkCycle {
                link: link.to_path_buf(),
                target,
            })
        }
        Err(e) => return Err(io_at(link)(e)),
    };
    if !meta.is_dir() {
        return Ok(None);
    }
    let canonical = fs::canonicalize(link).map_err(io_at(link))?;
    if open.contains(&canonical) {
        return Err(StoreError::SymlinkCycle {
            link: link.to_path_buf(),
            target,
        });
    }
    Ok(Some(canonical))
}

/// Stats listed files in parallel (following symlinks for datasets).
fn stat_all(listed: Vec<Listed>) -> Result<Vec<Found>> {
    listed
        .into_par_iter()
        .map(|l| {
            let meta = if l.symlink {
                fs::metadata(&l.abs)
            } else {
                fs::symlink_metadata(&l.abs)
            }
            .map_err(io_at(&l.abs))?;
            if !meta.is_file() {
                return Err(StoreError::Invalid(format!("{}: not a regular file", l.abs.display())));
            }
            Ok(Found {
                rel: l.rel,
                abs: l.abs,
                meta,
            })
        })
        .collect()
}

/// Hashes every file under `root` (or `root` itself, if it is a file) in parallel. With a
/// stat cache, files whose (size, mtime, inode) are unchanged are not read again.
pub fn hash_tree(root: &Path, kind: TreeKind, cache: Option<&StatCache>) -> Result<TreeHash> {
    let meta = fs::metadata(root).map_err(io_at(root))?;
    let mut found = Vec::new();
    if meta.is_file() {
        let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        found.push(Found {
            rel: name,
            abs: root.to_path_buf(),
            meta,
        });
    } else {
        let mut listed = list(root, kind)?;
        listed.sort_by(|a, b| a.rel.cmp(&b.rel));
        found = stat_all(listed)?;
    }
    let read = std::sync::atomic::AtomicUsize::new(0);
    let files = found
        .par_iter()
        .map(|f| {
            let cached = cache.and_then(|c| c.get(&f.abs, &f.meta));
            let blake3 = match cached {
                Some(h) => h,
                None => {
                    read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let h = hash_file(&f.abs)?;
                    if let Some(c) = cache {
                        c.put(&f.abs, &f.meta, &h);
                    }
                    h
                }
            };
            Ok(FileEntry {
                path: f.rel.clone(),
                size: f.meta.len(),
                blake3,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = files.iter().map(|f| f.size).sum();
    let hash = listing_hash(&files);
    Ok(TreeHash {
        hash,
        files,
        bytes,
        files_read: read.into_inner(),
    })
}

/// The content hash of a file list. Paths are unique and contain no NUL, so the encoding is
/// unambiguous.
pub(crate) fn listing_hash(files: &[FileEntry]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"spherepipe-tree-v1\n");
    for f in files {
        h.update(f.path.as_bytes());
        h.update(b"\0");
        h.update(f.size.to_string().as_bytes());
        h.update(b"\0");
        h.update(f.blake3.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// Total size of the files under `dir` (best effort; for reports).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(listed) = list(dir, TreeKind::Dataset) else {
        return 0;
    };
    stat_all(listed).map(|f| f.iter().map(|f| f.meta.len()).sum()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_depends_on_names_and_contents_not_on_creation_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::write(a.path().join("1"), b"x").unwrap();
        fs::write(a.path().join("2"), b"y").unwrap();
        fs::write(b.path().join("2"), b"y").unwrap();
        fs::write(b.path().join("1"), b"x").unwrap();
        let ha = hash_tree(a.path(), TreeKind::Dataset, None).unwrap();
        let hb = hash_tree(b.path(), TreeKind::Dataset, None).unwrap();
        assert_eq!(ha.hash, hb.hash);
        fs::rename(b.path().join("2"), b.path().join("3")).unwrap();
        assert_ne!(ha.hash, hash_tree(b.path(), TreeKind::Dataset, None).unwrap().hash);
    }

    #[test]
    fn listing_hash_matches_a_hand_built_encoding() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.txt"), b"abc").unwrap();
        let t = hash_tree(d.path(), TreeKind::Dataset, None).unwrap();
        let fh = blake3::hash(b"abc").to_hex().to_string();
        let expect = blake3::hash(format!("spherepipe-tree-v1\na.txt\x003\x00{fh}\n").as_bytes());
        assert_eq!(t.hash, expect.to_hex().to_string());
    }

    #[test]
    fn dataset_links_are_followed_and_bad_ones_named() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let (data, outside) = (d.path().join("data"), d.path().join("outside"));
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(data.join("a.txt"), b"a").unwrap();
        fs::write(outside.join("b.txt"), b"b").unwrap();
        // A link to a directory elsewhere is walked, its files listed under the link's name.
        symlink(&outside, data.join("sub/more")).unwrap();
        let t = hash_tree(&data, TreeKind::Dataset, None).unwrap();
        assert_eq!(
            t.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["a.txt", "sub/more/b.txt"]
        );
        // A link back to a directory that contains it: the cycle, not a 40-level path.
        symlink("..", data.join("sub/up")).unwrap();
        let e = hash_tree(&data, TreeKind::Dataset, None).unwrap_err();
        assert!(
            matches!(&e, StoreError::SymlinkCycle { link, target } if *link == data.join("sub/up") && *target == Path::new("..")),
            "{e:?}"
        );
        assert!(e.to_string().contains("a directory that contains the link"), "{e}");
        fs::remove_file(data.join("sub/up")).unwrap();
        // A link that resolves through itself.
        symlink("self", data.join("self")).unwrap();
        assert!(matches!(
            hash_tree(&data, TreeKind::Dataset, None),
            Err(StoreError::SymlinkCycle { .. })
        ));
        fs::remove_file(data.join("self")).unwrap();
        // A dangling link names itself and where it points.
        symlink("../gone.txt", data.join("sub/gone.txt")).unwrap();
        let e = hash_tree(&data, TreeKind::Dataset, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is a dangling symbolic link: it points to ../gone.txt, which does not exist; fix the link or remove it",
                data.join("sub/gone.txt").display()
            )
        );
    }

    #[test]
    fn artifacts_refuse_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("leak")).unwrap();
        let e = hash_tree(d.path(), TreeKind::Artifact, None).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn big_files_hash_like_small_ones() {
        let d = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(BIG_FILE as usize + 12345)).map(|i| (i * 31 % 251) as u8).collect();
        fs::write(d.path().join("big"), &data).unwrap();
        assert_eq!(hash_file(&d.path().join("big")).unwrap(), blake3::hash(&data).to_hex().to_string());
    }
}
