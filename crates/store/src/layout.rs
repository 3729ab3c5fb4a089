//! Every path under a cache directory, from one type, with how each kind of file is written
//! (so that a reader never takes a half-written one for whole):
//!
//! ```text
//! cache/
//!   LOCK                          advisory lock (flock): shared by runs and cluster jobs
//!                                 (run-stage); exclusive for verify and gc, which wait for them
//!   locks/<fingerprint>.lock      flock held by the one process building that stage; says
//!                                 who (pid, pipeline, stage) for a process that waits
//!   artifacts/<hash>/             one finished artifact, its files plus `.manifest.json`:
//!                                 written in tmp/, fsynced, renamed into place whole
//!   index/<fingerprint>.json      fingerprint -> artifact (+ provenance): sibling temp, fsync,
//!                                 rename (write_atomic)
//!   state/<pipeline>/<stage>.json the last run of each stage, to explain staleness: write_atomic
//!   runs.jsonl                    one JSON line per run: appended in a single write (O_APPEND)
//!   reports/<pipeline>.html       the pipeline's page: write_atomic
//!   stat-cache.tsv                (path, size, mtime, inode) -> blake3 of dataset files:
//!                                 write_atomic
//!   tmp/<owner>/ + <owner>.lock   artifacts being written, in one area per process, whose
//!                                 lock it holds for life; a run removes the areas whose lock
//!                                 is free (their process died)
//!   scratch/<fingerprint>/        a running stage's checkpoints: the stage's own files, which
//!                                 it checks when it resumes; removed once its artifact is
//!                                 committed (and in the shared store, if there is one)
//!   logs/<fingerprint>/           how a stage run went (throughput): the stage's own, never read
//!                                 back by spherepipe
//!   logs/slurm/                   cluster jobs' logs, written by Slurm
//!   quarantine/                   artifacts `verify` found corrupted, moved there by rename
//! ```

use std::path::{Path, PathBuf};

/// The paths of one cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLayout {
    root: PathBuf,
}

impl CacheLayout {
    /// The layout of the cache at `root`.
    pub fn new(root: impl Into<PathBuf>) -> CacheLayout {
        CacheLayout { root: root.into() }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directories `Store::open` creates.
    pub fn directories(&self) -> [PathBuf; 5] {
        [self.artifacts(), self.index(), self.tmp(), self.quarantine(), self.locks()]
    }

    /// `LOCK`.
    pub fn lock(&self) -> PathBuf {
        self.root.join("LOCK")
    }

    /// `artifacts/`.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// `artifacts/<hash>/`.
    pub fn artifact(&self, hash: &str) -> PathBuf {
        self.artifacts().join(hash)
    }

    /// `index/`.
    pub fn index(&self) -> PathBuf {
        self.root.join("index")
    }

    /// `index/<fingerprint>.json`.
    pub fn index_entry(&self, fingerprint: &str) -> PathBuf {
        self.index().join(format!("{fingerprint}.json"))
    }

    /// `tmp/`.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `locks/`.
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// `locks/<fingerprint>.lock`.
    pub fn build_lock(&self, fingerprint: &str) -> PathBuf {
        self.locks().join(format!("{fingerprint}.lock"))
    }

    /// `quarantine/`.
    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// `state/<pipeline>/<stage>.json`.
    pub fn state(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.root.join("state").join(pipeline).join(format!("{stage}.json"))
    }

    /// `runs.jsonl`.
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs.jsonl")
    }

    /// `reports/<pipeline>.html`.
    pub fn report(&self, pipeline: &str) -> PathBuf {
        self.root.join("reports").join(format!("{pipeline}.html"))
    }

    /// `stat-cache.tsv`.
    pub fn stat_cache(&self) -> PathBuf {
        self.root.join("stat-cache.tsv")
    }

    /// `scratch/<fingerprint>/`.
    pub fn scratch(&self, fingerprint: &str) -> PathBuf {
        self.root.join("scratch").join(fingerprint)
    }

    /// `logs/<fingerprint>/`.
    pub fn logs(&self, fingerprint: &str) -> PathBuf {
        self.root.join("logs").join(fingerprint)
    }

    /// `logs/slurm/`.
    pub fn slurm_logs(&self) -> PathBuf {
        self.root.join("logs").join("slurm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_the_root_where_the_module_doc_says() {
        let l = CacheLayout::new("/c");
        let all = [
            (l.lock(), "/c/LOCK"),
            (l.artifact("h"), "/c/artifacts/h"),
            (l.index_entry("f"), "/c/index/f.json"),
            (l.tmp(), "/c/tmp"),
            (l.quarantine(), "/c/quarantine"),
            (l.build_lock("f"), "/c/locks/f.lock"),
            (l.state("p", "s"), "/c/state/p/s.json"),
            (l.runs(), "/c/runs.jsonl"),
            (l.report("p"), "/c/reports/p.html"),
            (l.stat_cache(), "/c/stat-cache.tsv"),
            (l.scratch("f"), "/c/scratch/f"),
            (l.logs("f"), "/c/logs/f"),
            (l.slurm_logs(), "/c/logs/slurm"),
        ];
        let doc = include_str!("layout.rs");
        for (path, want) in all {
            assert_eq!(path, Path::new(want));
            // The module doc lists it (its first component, as the tree shows it).
            let shown = want.trim_start_matches("/c/").split('/').next().unwrap_or_default();
            assert!(doc.contains(&format!("//!   {shown}")), "{shown} is missing from the layout doc");
        }
    }
}
