//! Durable, atomic file writes: write a sibling temporary file, fsync, rename, fsync the dir.

use crate::{io_at, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Flushes a directory's entries to disk, so a rename inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io_at(dir))
}

/// Replaces `path` with `bytes` so that readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // A bare file name's parent is "": the current directory.
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_at(parent))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per process and per call, so two writers of one file (threads or processes)
    // never share a temporary file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    {
        let mut f = fs::File::create(&tmp).map_err(io_at(&tmp))?;
        f.write_all(bytes).map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_at(path))?;
    fsync_dir(parent)
}

/// fsyncs every file and directory under `root` (before it is renamed into place).
pub(crate) fn fsync_tree(root: &Path) -> Result<()> {
    use rayon::prelude::*;
    let mut dirs = vec![root.to_path_buf()];
    let mut files = Vec::new();
    let mut i = 0;
    while i < dirs.len() {
        let d = dirs[i].clone();
        for e in fs::read_dir(&d).map_err(io_at(&d))? {
            let p = e.map_err(io_at(&d))?.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
        i += 1;
    }
    files
        .par_iter()
        .chain(dirs.par_iter())
        .try_for_each(|p| fs::File::open(p).and_then(|f| f.sync_all()).map_err(io_at(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_also_by_a_bare_name_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("new/dir/page.html");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "no temporary left");
        // A bare name is in the current directory (its parent is "").
        let here = std::env::current_dir().unwrap();
        std::env::set_current_dir(d.path()).unwrap();
        let r = write_atomic(Path::new("bare.txt"), b"x");
        std::env::set_current_dir(here).unwrap();
        r.unwrap();
        assert_eq!(fs::read(d.path().join("bare.txt")).unwrap(), b"x");
    }
}
