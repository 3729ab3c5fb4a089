//! `manifest.json`, the contract between a `shard` artifact and `train`: one serde struct,
//! written (by `shard`) and read (by `train`) through this module, which both depend on. Fields are declared in alphabetical order, the order the file has
//! always had, so the artifact's bytes (and every fingerprint after it) stay as they were.

use serde::{Deserialize, Serialize};
use spherepipe_stage::Contract;
use std::path::{Path, PathBuf};

/// What a shard artifact holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardManifest {
    /// Distinct identities over all shards.
    pub identities: usize,
    /// Distinct labels over all shards: the number of training classes.
    pub labels: usize,
    /// Rows per Parquet row group.
    pub row_group_size: usize,
    /// Rows over all shards.
    pub rows: usize,
    /// Rows per shard (the last one may hold fewer).
    pub rows_per_shard: usize,
    /// The seed of the shuffle.
    pub seed: u64,
    /// The shard files, in order.
    pub shards: Vec<ShardFile>,
    /// Whether rows were shuffled before sharding.
    pub shuffled: bool,
}

/// One shard file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardFile {
    /// blake3 of the file, hex.
    pub blake3: String,
    /// File size.
    pub bytes: u64,
    /// File name inside the artifact.
    pub file: String,
    /// Mirrored faces in it.
    pub flipped: usize,
    /// Distinct labels in it.
    pub labels: usize,
    /// Rows in it.
    pub rows: usize,
}

impl Contract for ShardManifest {
    const FILE: &'static str = "manifest.json";
    const WRITER: &'static str = "shard";
    const BIND: &'static str = "bind `shards` to a shard stage";
}

impl ShardManifest {
    /// The shard files' paths under the artifact directory `dir`. A file name is read from an
    /// artifact (which may come from a shared store), so it must be a plain name in `dir`.
    pub fn paths(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        self.shards
            .iter()
            .map(|s| {
                let plain = !s.file.is_empty() && !s.file.contains(['/', '\\', '\0']) && s.file != "." && s.file != "..";
                if !plain {
                    anyhow::bail!(
                        "{}: shard file `{}` is not a plain file name in the artifact; rebuild the shard stage",
                        Self::FILE,
                        s.file.escape_default()
                    );
                }
                Ok(dir.join(&s.file))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_and_a_wrong_one_names_its_file() {
        let d = tempfile::tempdir().unwrap();
        let m = ShardManifest {
            identities: 3,
            labels: 3,
            row_group_size: 2,
            rows: 5,
            rows_per_shard: 4,
            seed: 9,
            shards: vec![ShardFile {
                blake3: "ab".into(),
                bytes: 10,
                file: "shard-00000.parquet".into(),
                flipped: 1,
                labels: 3,
                rows: 4,
            }],
            shuffled: true,
        };
        m.write(d.path()).unwrap();
        assert_eq!(ShardManifest::read(d.path()).unwrap(), m);
        assert_eq!(m.paths(d.path()).unwrap(), [d.path().join("shard-00000.parquet")]);
        // A file name that climbs out of the artifact (a forged artifact from a store) is refused.
        for bad in ["../../etc/passwd", "/etc/passwd", "..", "", "a\\b"] {
            let mut forged = m.clone();
            forged.shards[0].file = bad.into();
            let e = forged.paths(d.path()).unwrap_err().to_string();
            assert!(e.contains("not a plain file name"), "{bad}: {e}");
        }
        // Keys in alphabetical order, as the untyped manifest always wrote them.
        let text = std::fs::read_to_string(d.path().join("manifest.json")).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  \""))
            .map(|l| l.split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "identities",
                "labels",
                "row_group_size",
                "rows",
                "rows_per_shard",
                "seed",
                "shards",
                "shuffled"
            ]
        );
        std::fs::write(d.path().join("manifest.json"), text.replace("\"labels\": 3,\n  \"row", "\"row")).unwrap();
        let e = format!("{:#}", ShardManifest::read(d.path()).unwrap_err());
        assert!(
            e.contains("manifest.json is not the manifest") && e.contains("missing field `labels`"),
            "{e}"
        );
    }
}
