//! The feature table written by `extract` and `ensemble`, read by `evaluate`:
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `source` | string | image path relative to the dataset root |
//! | `identity` | string | person name |
//! | `dataset` | string | `lfw`, `ytf`, `megaface`, … |
//! | `video` | string, nullable | `Name/number` for YouTube Faces frames |
//! | `feature` | fixed_size_list<float32>[D] | FC1 of the face, then FC1 of its mirror |
//!
//! `SELECT source, list_extract(feature, 1) FROM 'features.parquet'` works in DuckDB as is.

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

/// Who a feature belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureMeta {
    /// The image's path relative to its dataset's image root.
    pub source: String,
    /// The identity's name.
    pub identity: String,
    /// Which dataset it came from.
    pub dataset: String,
    /// `Name/video` for YouTube Faces frames.
    pub video: Option<String>,
}

/// Rows of metadata plus their features, `dim` values per row, contiguous.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    /// Values per row.
    pub dim: usize,
    /// Whose each row is.
    pub meta: Vec<FeatureMeta>,
    /// `meta.len() × dim` values, row after row.
    pub values: Vec<f32>,
}

impl Features {
    /// The features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
    /// Rows.
    pub fn len(&self) -> usize {
        self.meta.len()
    }
    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
}

/// The Arrow schema of a feature table with `dim` values per row.
pub fn feature_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("identity", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("video", DataType::Utf8, true),
        Field::new(
            "feature",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32),
            false,
        ),
    ]))
}

fn to_batch(f: &Features, range: std::ops::Range<usize>) -> Result<RecordBatch> {
    let mut cols: [StringBuilder; 4] = Default::default();
    for m in &f.meta[range.clone()] {
        cols[0].append_value(&m.source);
        cols[1].append_value(&m.identity);
        cols[2].append_value(&m.dataset);
        cols[3].append_option(m.video.as_deref());
    }
    let values = Float32Array::from(f.values[range.start * f.dim..range.end * f.dim].to_vec());
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(item, f.dim as i32, Arc::new(values), None)?;
    let mut arrays: Vec<ArrayRef> = cols.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    arrays.push(Arc::new(list));
    Ok(RecordBatch::try_new(feature_schema(f.dim), arrays)?)
}

/// Writes a feature table as rows arrive (zstd, 4096-row groups), so extracting a million
/// distractors never holds their features in memory.
pub struct FeatureWriter {
    writer: ArrowWriter<std::fs::File>,
    dim: usize,
    rows: usize,
}

impl FeatureWriter {
    /// Starts a zstd Parquet feature table at `path`.
    pub fn create(path: &Path, dim: usize) -> Result<Self> {
        if dim == 0 {
            bail!("features of 0 values");
        }
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
            .set_max_row_group_size(4096)
            .build();
        Ok(FeatureWriter {
            writer: ArrowWriter::try_new(file, feature_schema(dim), Some(props))?,
            dim,
            rows: 0,
        })
    }

    /// Appends rows (of the table's `dim`).
    pub fn write(&mut self, f: &Features) -> Result<()> {
        if f.dim != self.dim || f.values.len() != f.meta.len() * f.dim {
            bail!(
                "{} values for {} rows of {} (the table holds {})",
                f.values.len(),
                f.meta.len(),
                f.dim,
                self.dim
            );
        }
        let mut start = 0;
        while start < f.len() {
            let end = (start + 4096).min(f.len());
            self.writer.write(&to_batch(f, start..end)?)?;
            start = end;
        }
        self.rows += f.len();
        Ok(())
    }

    /// Closes the file; returns the number of rows written.
    pub fn finish(self) -> Result<usize> {
        self.writer.close()?;
        Ok(self.rows)
    }
}

/// Writes a whole feature table.
pub fn write_features(path: &Path, f: &Features) -> Result<()> {
    let mut w = FeatureWriter::create(path, f.dim)?;
    w.write(f)?;
    w.finish().map(|_| ())
}

fn strings<'a>(b: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| {
            anyhow!(
                "{} has no string column `{name}`: is it a feature table (from `extract`)?",
                path.display()
            )
        })
}

/// One record batch of a feature table.
fn decode(b: &RecordBatch, path: &Path) -> Result<Features> {
    let (src, id, ds, video) = (
        strings(b, "source", path)?,
        strings(b, "identity", path)?,
        strings(b, "dataset", path)?,
        strings(b, "video", path)?,
    );
    let list = b
        .column_by_name("feature")
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
        .ok_or_else(|| anyhow!("{} has no fixed-size-list column `feature`", path.display()))?;
    let dim = list.value_length() as usize;
    let vals = list
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| anyhow!("{}: `feature` is not float32", path.display()))?;
    let start = list.offset() * dim;
    let meta = (0..b.num_rows())
        .map(|i| FeatureMeta {
            source: src.value(i).to_owned(),
            identity: id.value(i).to_owned(),
            dataset: ds.value(i).to_owned(),
            video: (!video.is_null(i)).then(|| video.value(i).to_owned()),
        })
        .collect();
    let values = vals.values()[start..start + b.num_rows() * dim].to_vec();
    Ok(Features { dim, meta, values })
}

/// Reads a feature table in chunks of exactly the rows asked for (fewer only at the end),
/// whatever the file's record batches, so several tables of the same faces can be read in
/// lockstep (the ensemble of a million distractors' features, patch by patch).
pub struct FeatureReader {
    path: std::path::PathBuf,
    batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    pending: Features,
}

impl FeatureReader {
    /// Opens a feature table for reading in chunks.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let batches = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{} is not a readable Parquet file", path.display()))?
            .with_batch_size(4096)
            .build()?;
        Ok(FeatureReader {
            path: path.to_owned(),
            batches,
            pending: Features::default(),
        })
    }

    /// The next `rows` rows; `None` at the end.
    pub fn next_rows(&mut self, rows: usize) -> Result<Option<Features>> {
        while self.pending.len() < rows {
            let Some(b) = self.batches.next() else { break };
            let f = decode(&b?, &self.path)?;
            if self.pending.dim != 0 && f.dim != self.pending.dim {
                bail!(
                    "{}: feature length changes from {} to {}",
                    self.path.display(),
                    self.pending.dim,
                    f.dim
                );
            }
            self.pending.dim = f.dim;
            self.pending.meta.extend(f.meta);
            self.pending.values.extend(f.values);
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let n = rows.min(self.pending.len());
        let dim = self.pending.dim;
        let rest_meta = self.pending.meta.split_off(n);
        let rest_values = self.pending.values.split_off(n * dim);
        let out = Features {
            dim,
            meta: std::mem::replace(&mut self.pending.meta, rest_meta),
            values: std::mem::replace(&mut self.pending.values, rest_values),
        };
        Ok(Some(out))
    }
}

/// Reads a whole feature table.
pub fn read_features(path: &Path) -> Result<Features> {
    Ok(FeatureReader::open(path)?.next_rows(usize::MAX)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip_through_parquet_in_batches() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.parquet");
        let n = 5000; // more than one row group
        let f = Features {
            dim: 3,
            meta: (0..n)
                .map(|i| FeatureMeta {
                    source: format!("a/{i}.jpg"),
                    identity: format!("p{}", i % 7),
                    dataset: "lfw".into(),
                    video: (i % 2 == 0).then(|| format!("p/{i}")),
                })
                .collect(),
            values: (0..3 * n).map(|v| v as f32 * 0.5).collect(),
        };
        write_features(&p, &f).unwrap();
        assert_eq!(read_features(&p).unwrap(), f);
        assert_eq!(crate::row_count(&p).unwrap(), n);
        // Exact chunks across record batches and row groups, then the remainder.
        let mut r = FeatureReader::open(&p).unwrap();
        let mut back = Features::default();
        let mut lens = Vec::new();
        while let Some(c) = r.next_rows(1234).unwrap() {
            lens.push(c.len());
            back.dim = c.dim;
            back.meta.extend(c.meta);
            back.values.extend(c.values);
        }
        assert_eq!(lens, [1234, 1234, 1234, 1234, 64]);
        assert_eq!(back, f);
        let e = read_features(&d.path().join("nope.parquet")).unwrap_err();
        assert!(format!("{e:#}").contains("nope.parquet"));
    }
}
