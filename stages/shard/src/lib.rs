//! `shard`: shuffles all input faces deterministically from the seed and writes them as
//! Parquet shards of `rows_per_shard` rows (zstd, `row_group_size` rows per row group), plus
//! `manifest.json` with per-shard row counts, label counts and blake3 hashes. The shuffle
//! spills rows to per-shard buckets on disk, so memory holds one shard, not the input.

#![warn(missing_docs)]

pub use spherepipe_face_table::shards::{ShardFile, ShardManifest};

use spherepipe_face_table::{for_each_row_batch, row_count, spill, write_rows, FaceRow};
use spherepipe_stage::{Contract, InputSpec, ParamSpec, ParamType, Stage, StageContext};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    fn shows_faces(&self) -> bool {
        true
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
    /// Shuffles by spilling: one streaming pass sends each input row to a temporary bucket
    /// for the shard it lands in, then each bucket is put in order and written as its shard.
    /// At most one shard's rows are in memory at a time, however many rows there are.
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let inputs: Vec<PathBuf> = ctx.inputs.many("faces").iter().map(|d| d.join("faces.parquet")).collect();
        let per = ctx.params.i64("rows_per_shard")? as usize;
        let group = ctx.params.i64("row_group_size")? as usize;
        let shuffled = ctx.params.bool("shuffle")?;
        let total = inputs.iter().map(|p| row_count(p)).sum::<anyhow::Result<usize>>()?;
        let place = places(total, shuffled.then_some(ctx.seed))?;
        let n_shards = total.div_ceil(per);
        ctx.progress.set_length(n_shards as u64);
        let buckets = Buckets {
            dir: ctx.out_dir.join(".spill"),
            per,
        };
        std::fs::create_dir_all(&buckets.dir)?;
        let (mut shards, mut labels, mut identities) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
        for first in (0..n_shards).step_by(OPEN_BUCKETS) {
            let these = first..(first + OPEN_BUCKETS).min(n_shards);
            buckets.fill(&inputs, &place, these.clone())?;
            for i in these {
                ctx.cancel.check()?;
                let rows = buckets.take(i)?;
                labels.extend(rows.iter().map(|r| r.label));
                identities.extend(rows.iter().map(|r| r.identity.clone()));
                shards.push(write_shard(ctx.out_dir, i, &rows, group)?);
                ctx.progress.inc(1);
            }
        }
        std::fs::remove_dir_all(&buckets.dir)?;
        ShardManifest {
            identities: identities.len(),
            labels: labels.len(),
            row_group_size: group,
            rows: total,
            rows_per_shard: per,
            seed: ctx.seed,
            shards,
            shuffled,
        }
        .write(ctx.out_dir)?;
        Ok(())
    }
}

/// Buckets spilled at once (each an open file); more shards take more passes over the input.
const OPEN_BUCKETS: usize = 256;

/// Where each input row goes (its index in the output), rows numbered across the inputs in
/// order: the seeded shuffle applied to the row numbers, inverted.
fn places(total: usize, seed: Option<u64>) -> anyhow::Result<Vec<u32>> {
    let n = u32::try_from(total).map_err(|_| anyhow::anyhow!("{total} rows: shard handles at most {} in one stage", u32::MAX))?;
    let mut order: Vec<u32> = (0..n).collect();
    if let Some(seed) = seed {
        shuffle(&mut order, seed);
    }
    let mut place = vec![0u32; total];
    for (to, &from) in order.iter().enumerate() {
        place[from as usize] = to as u32;
    }
    Ok(place)
}

/// The temporary buckets of a shuffle, one file per shard, in `dir` (inside the staging
/// directory, removed before the artifact is committed).
struct Buckets {
    dir: PathBuf,
    per: usize,
}

impl Buckets {
    fn path(&self, shard: usize) -> PathBuf {
        self.dir.join(format!("{shard:05}.rows"))
    }

    /// Streams every input row whose place falls in `shards` into its shard's bucket.
    fn fill(&self, inputs: &[PathBuf], place: &[u32], shards: std::ops::Range<usize>) -> anyhow::Result<()> {
        let mut files = shards
            .clone()
            .map(|i| Ok(std::io::BufWriter::new(std::fs::File::create(self.path(i))?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut next = 0usize;
        for input in inputs {
            for_each_row_batch(input, 1024, |rows| {
                for row in rows {
                    let to = *place
                        .get(next)
                        .ok_or_else(|| anyhow::anyhow!("{} holds more rows than its footer says", input.display()))?;
                    next += 1;
                    let shard = to as usize / self.per;
                    if shards.contains(&shard) {
                        spill::write_record(&mut files[shard - shards.start], to, &row)?;
                    }
                }
                Ok(())
            })?;
        }
        files.iter_mut().try_for_each(|f| f.flush())?;
        Ok(())
    }

    /// A shard's rows in their shuffled order; its bucket is removed.
    fn take(&self, shard: usize) -> anyhow::Result<Vec<FaceRow>> {
        let path = self.path(shard);
        let mut file = std::io::BufReader::new(std::fs::File::open(&path)?);
        let mut rows = Vec::with_capacity(self.per);
        while let Some(record) = spill::read_record(&mut file)? {
            rows.push(record);
        }
        std::fs::remove_file(&path)?;
        rows.sort_unstable_by_key(|(to, _)| *to);
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }
}

/// Writes shard `i` and describes it for the manifest.
fn write_shard(out_dir: &Path, i: usize, rows: &[FaceRow], group: usize) -> anyhow::Result<ShardFile> {
    let name = format!("shard-{i:05}.parquet");
    let path = out_dir.join(&name);
    write_rows(&path, rows, group)?;
    let labels: BTreeSet<i32> = rows.iter().map(|r| r.label).collect();
    Ok(ShardFile {
        blake3: blake3::hash(&std::fs::read(&path)?).to_hex().to_string(),
        bytes: std::fs::metadata(&path)?.len(),
        file: name,
        flipped: rows.iter().filter(|r| r.flipped).count(),
        labels: labels.len(),
        rows: rows.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(i: usize) -> FaceRow {
        FaceRow {
            png: vec![i as u8; 5 + i % 7],
            height: 2,
            width: 1,
            label: i as i32,
            identity: format!("P{}", i % 4),
            dataset: "casia".into(),
            source: format!("{i}.jpg"),
            video: None,
            landmarks: [i as f32; 10],
            flipped: i % 2 == 1,
        }
    }

    /// Spilling into buckets, in several passes of a few buckets each, gives every shard the
    /// rows an in-memory shuffle cut into shards gives it, in the same order.
    #[test]
    fn buckets_make_the_shards_an_in_memory_shuffle_makes() {
        let d = tempfile::tempdir().unwrap();
        let rows: Vec<FaceRow> = (0..47).map(face).collect();
        let inputs = [d.path().join("a.parquet"), d.path().join("b.parquet")];
        write_rows(&inputs[0], &rows[..20], 8).unwrap();
        write_rows(&inputs[1], &rows[20..], 8).unwrap();
        let mut want = rows.clone();
        shuffle(&mut want, 11);
        let place = places(rows.len(), Some(11)).unwrap();
        for (i, &to) in place.iter().enumerate() {
            assert_eq!(want[to as usize], rows[i], "row {i} goes where the shuffle puts it");
        }
        let buckets = Buckets {
            dir: d.path().join("spill"),
            per: 5,
        };
        std::fs::create_dir_all(&buckets.dir).unwrap();
        let mut got = Vec::new();
        for these in [0..3, 3..6, 6..9, 9..10] {
            buckets.fill(&inputs, &place, these.clone()).unwrap();
            for i in these {
                got.push(buckets.take(i).unwrap());
            }
        }
        let want: Vec<Vec<FaceRow>> = want.chunks(5).map(|c| c.to_vec()).collect();
        assert_eq!(got, want);
        assert_eq!(std::fs::read_dir(&buckets.dir).unwrap().count(), 0, "buckets are removed");
        assert_eq!(places(4, None).unwrap(), [0, 1, 2, 3], "unshuffled rows keep their order");
    }

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
