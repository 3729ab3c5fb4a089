//! `shard`: shuffles all input faces deterministically from the seed and writes them as
//! Parquet shards of `rows_per_shard` rows (zstd, `row_group_size` rows per row group), plus
//! `manifest.json` with per-shard row counts, label counts and blake3 hashes.

#![warn(missing_docs)]

mod manifest;

pub use manifest::{ShardFile, ShardManifest};

use spherepipe_face_table::{read_rows, write_rows, FaceRow};
use spherepipe_stage::{Contract, InputSpec, ParamSpec, ParamType, Stage, StageContext};
use std::collections::BTreeSet;

/// The `shard` stage kind.
pub struct Shard;

/// Fisher-Yates with the shared splitmix64 generator.
pub fn shuffle<T>(xs: &mut [T], seed: u64) {
    let mut r = spherepipe_rng::Rng::new(seed);
    for i in (1..xs.len()).rev() {
        xs.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
    }
}

impl Stage for Shard {
    fn kind(&self) -> &'static str {
        "shard"
    }
    fn version(&self) -> &'static str {
        // 2: the image column is written plain and uncompressed, without statistics
        // (face_table::write_rows): the same rows, other bytes.
        "2"
    }
    fn doc(&self) -> &'static str {
        "shuffled Parquet shards (zstd; the PNG column stored as is) with manifest.json"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "rows_per_shard",
                ParamType::Int { min: Some(1), max: None },
                5000,
                "rows in each shard file",
            ),
            ParamSpec::new(
                "row_group_size",
                ParamType::Int { min: Some(1), max: None },
                1024,
                "rows per Parquet row group",
            ),
            ParamSpec::new(
                "shuffle",
                ParamType::Bool,
                true,
                "shuffle rows across shards (from the pipeline seed)",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::many("faces", "align or flip artifacts with faces.parquet")]
    }
    fn uses_seed(&self) -> bool {
        true
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let mut rows: Vec<FaceRow> = Vec::new();
        for dir in ctx.inputs.many("faces") {
            rows.extend(read_rows(&dir.join("faces.parquet"))?);
        }
        if ctx.params.bool("shuffle")? {
            shuffle(&mut rows, ctx.seed);
        }
        let per = ctx.params.i64("rows_per_shard")? as usize;
        let group = ctx.params.i64("row_group_size")? as usize;
        let n_shards = rows.len().div_ceil(per);
        ctx.progress.set_length(n_shards as u64);
        let mut shards = Vec::new();
        for (i, chunk) in rows.chunks(per).enumerate() {
            ctx.cancel.check()?;
            let name = format!("shard-{i:05}.parquet");
            let path = ctx.out_dir.join(&name);
            write_rows(&path, chunk, group)?;
            let labels: BTreeSet<i32> = chunk.iter().map(|r| r.label).collect();
            shards.push(ShardFile {
                blake3: blake3::hash(&std::fs::read(&path)?).to_hex().to_string(),
                bytes: std::fs::metadata(&path)?.len(),
                file: name,
                flipped: chunk.iter().filter(|r| r.flipped).count(),
                labels: labels.len(),
                rows: chunk.len(),
            });
            ctx.progress.inc(1);
        }
        let labels: BTreeSet<i32> = rows.iter().map(|r| r.label).collect();
        let identities: BTreeSet<&str> = rows.iter().map(|r| r.identity.as_str()).collect();
        ShardManifest {
            identities: identities.len(),
            labels: labels.len(),
            row_group_size: group,
            rows: rows.len(),
            rows_per_shard: per,
            seed: ctx.seed,
            shards,
            shuffled: ctx.params.bool("shuffle")?,
        }
        .write(ctx.out_dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        let mut c: Vec<u32> = (0..100).collect();
        shuffle(&mut c, 8);
        assert_ne!(a, c);
    }
}
