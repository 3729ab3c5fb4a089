//! Files one stage writes for another to read (`model.json`, `manifest.json`, `metrics.json`):
//! a serde struct, defined once, that implements [`Contract`] and so is written and read
//! through the same two functions, so that every such file fails the same way — naming the
//! file and the fix.

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// Reads `dir/file` as `T`. `bind` says which input to bind to which stage when the file is
/// missing (`"bind `model` to a train stage"`); `writer` names the stage kind that writes it,
/// for the fix when the file does not parse (written by another version).
pub fn read_contract<T: DeserializeOwned>(dir: &Path, file: &str, bind: &str, writer: &str) -> anyhow::Result<T> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{} has no {file}: {bind}", dir.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not the {file} of this spherepipe's `{writer}` (written by another version?): rerun the {writer} stage",
            path.display()
        )
    })
}

/// Writes `value` as pretty JSON to `dir/file`.
pub fn write_contract<T: Serialize>(dir: &Path, file: &str, value: &T) -> anyhow::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_string_pretty(value)?).with_context(|| format!("writing {}", path.display()))
}

/// A file one stage kind writes into its artifact for others to read, as a serde struct.
/// Implementors name the file and who writes it; reading and writing come with the trait.
pub trait Contract: Serialize + DeserializeOwned {
    /// The file name inside an artifact (`model.json`).
    const FILE: &'static str;
    /// The stage kind that writes it, for the fix when the file does not parse.
    const WRITER: &'static str;
    /// What to bind when the file is missing (`"bind `model` to a train stage"`).
    const BIND: &'static str;

    /// Reads the file from an artifact directory, naming the file and the fix on failure.
    fn read(dir: &Path) -> anyhow::Result<Self> {
        read_contract(dir, Self::FILE, Self::BIND, Self::WRITER)
    }

    /// Writes the file into `dir`.
    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_contract(dir, Self::FILE, self)
    }
}
