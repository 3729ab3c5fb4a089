//! Helpers for the end-to-end tests: a scratch directory with a pipeline file and its cache,
//! and a way to run the test binary there and read back what it did.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_spherepipe-test");

/// The data stages of the face pipeline tests on the tiny synthetic corpus (a `stages:` block
/// fragment, ending in `shard`).
pub const TINY_DATA: &str = "  synth: {kind: synth, params: {preset: tiny}}
  dedupe: {kind: dedupe, inputs: {train: synth, tests: [synth]}}
  align: {kind: align, inputs: {images: synth, samples: dedupe}}
  flip: {kind: flip, inputs: {faces: align}}
  shard: {kind: shard, inputs: {faces: flip}, params: {rows_per_shard: 30}}
";

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

/// The result of one command.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn pipeline(&self) -> PathBuf {
        self.path().join("p.yaml")
    }
    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }
    /// Writes the pipeline file `p.yaml`.
    pub fn write(&self, yaml: &str) -> &Self {
        std::fs::write(self.pipeline(), yaml).expect("write pipeline");
        self
    }
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).current_dir(self.path()).env_remove("RUST_BACKTRACE");
        c
    }
    /// Runs `spherepipe-test ARGS` in the sandbox.
    pub fn sp(&self, args: &[&str]) -> Ran {
        self.cmd(args).output().expect("spawn").into()
    }
    /// `run p.yaml EXTRA...`, quietly.
    pub fn run(&self, extra: &[&str]) -> Ran {
        let mut a = vec!["run", "p.yaml", "--quiet"];
        a.extend_from_slice(extra);
        self.sp(&a)
    }
    /// Every run record in `runs.jsonl`.
    pub fn runs(&self) -> Vec<Value> {
        std::fs::read_to_string(self.cache().join("runs.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("runs.jsonl line is JSON"))
            .collect()
    }
    /// stage -> `field` (a string) in the last run's record; stages without it are left out.
    pub fn last_field(&self, field: &str) -> BTreeMap<String, String> {
        let runs = self.runs();
        let last = runs.last().expect("a run was recorded");
        last["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .filter_map(|s| Some((s["stage"].as_str()?.to_owned(), s[field].as_str()?.to_owned())))
            .collect()
    }
    /// stage -> state of the last run.
    pub fn last_states(&self) -> BTreeMap<String, String> {
        self.last_field("state")
    }
    /// stage -> artifact hash of the last run.
    pub fn last_artifacts(&self) -> BTreeMap<String, String> {
        self.last_field("artifact")
    }
    /// The artifact directory of `stage` in the last run.
    pub fn artifact_dir(&self, stage: &str) -> PathBuf {
        self.cache().join("artifacts").join(&self.last_artifacts()[stage])
    }
    pub fn artifact_file(&self, hash: &str, file: &str) -> String {
        std::fs::read_to_string(self.cache().join("artifacts").join(hash).join(file)).expect("artifact file")
    }
    /// Names of everything under `cache/artifacts` with their file contents, for "untouched" checks.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.insert(
                        p.strip_prefix(base).map(|r| r.display().to_string()).unwrap_or_default(),
                        std::fs::read(&p).unwrap_or_default(),
                    );
                }
            }
        }
        for sub in ["artifacts", "index"] {
            walk(&self.cache(), &self.cache().join(sub), &mut out);
        }
        out
    }
}

/// A diamond: draw -> (half, double) -> total, plus an independent word count.
pub const DIAMOND: &str = r#"
name: diamond
seed: 11
datasets:
  notes: {path: notes}
stages:
  draw: {kind: numbers, params: {count: 50}}
  half: {kind: scale, inputs: {numbers: draw}, params: {factor: 0.5}}
  double: {kind: scale, inputs: {numbers: draw}, params: {factor: 2}}
  total: {kind: sum, inputs: {parts: [half, double]}}
  words: {kind: wordcount, inputs: {text: notes}}
"#;

impl Sandbox {
    /// A sandbox holding the diamond pipeline and its `notes` dataset.
    pub fn diamond() -> Self {
        let s = Sandbox::new();
        std::fs::create_dir(s.path().join("notes")).expect("mkdir");
        std::fs::write(s.path().join("notes/a.txt"), "the cat and the hat").expect("write");
        std::fs::write(s.path().join("notes/b.txt"), "The end").expect("write");
        s.write(DIAMOND);
        s
    }
}

/// Parses numbers.txt content.
pub fn numbers(text: &str) -> Vec<f64> {
    text.lines().map(|l| l.parse().expect("number")).collect()
}

/// A shared directory to use as a `file://` store, with its URL.
pub fn shared_dir() -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", d.path().display());
    (d, url)
}

/// Flips the first byte of the blob that holds `draw`'s numbers (as sandbox `s` made them) in
/// the `file://` store at `store`. Returns the blob's path and its good bytes.
pub fn corrupt_draw_blob(s: &Sandbox, store: &Path) -> (PathBuf, Vec<u8>) {
    let numbers = std::fs::read(s.artifact_dir("draw").join("numbers.txt")).expect("draw's numbers");
    let blob = store.join("blobs").join(blake3::hash(&numbers).to_hex().as_str());
    let mut bad = numbers.clone();
    bad[0] ^= 1;
    std::fs::write(&blob, &bad).expect("write the blob");
    (blob, numbers)
}
