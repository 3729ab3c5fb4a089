//! The detection table written by `detect`: every face MTCNN found, one row each, for
//! inspection in DuckDB, pyarrow or polars (the landmark list for `align` is `samples.tsv`).
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `source` | string | image path relative to the scanned folder |
//! | `face` | int32 | the face's rank in its image, by O-Net's score (0 first) |
//! | `chosen` | bool | the face `detect` listed for `align` |
//! | `x1`, `y1`, `x2`, `y2` | float32 | the box, in image pixels |
//! | `score` | float32 | O-Net's face probability |
//! | `points` | fixed_size_list<float32>[10] | left eye, right eye, nose, left and right mouth corner: x, y each |
//!
//! `SELECT source, score FROM 'detections.parquet' WHERE chosen` works in DuckDB as is.

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

/// One detected face.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetectionRow {
    /// The image, relative to the scanned folder, with `/`.
    pub source: String,
    /// Rank within the image by score.
    pub face: i32,
    /// Whether this face is the one listed for `align`.
    pub chosen: bool,
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    /// O-Net's probability.
    pub score: f32,
    /// Five points, x then y for each.
    pub points: [f32; 10],
}

/// The table's Arrow schema.
pub fn detection_schema() -> SchemaRef {
    let f = |name: &str| Field::new(name, DataType::Float32, false);
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("face", DataType::Int32, false),
        Field::new("chosen", DataType::Boolean, false),
        f("x1"),
        f("y1"),
        f("x2"),
        f("y2"),
        f("score"),
        Field::new(
            "points",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 10),
            false,
        ),
    ]))
}

/// Writes the whole table (zstd); an empty table is valid Parquet with the schema.
pub fn write_detections(path: &Path, rows: &[DetectionRow]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_size(65536)
        .build();
    let mut writer = ArrowWriter::try_new(file, detection_schema(), Some(props))?;
    for chunk in rows.chunks(65536) {
        writer.write(&to_batch(chunk)?)?;
    }
    writer.close()?;
    Ok(())
}

fn to_batch(rows: &[DetectionRow]) -> Result<RecordBatch> {
    let col = |k: usize| Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.bbox[k]))) as ArrayRef;
    let points = Float32Array::from_iter_values(rows.iter().flat_map(|r| r.points));
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.source.as_str()))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.face))),
        Arc::new(BooleanArray::from(rows.iter().map(|r| r.chosen).collect::<Vec<_>>())),
        col(0),
        col(1),
        col(2),
        col(3),
        Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.score))),
        Arc::new(FixedSizeListArray::try_new(item, 10, Arc::new(points), None)?),
    ];
    Ok(RecordBatch::try_new(detection_schema(), arrays)?)
}

/// Reads a detection table back (tests, and anyone checking a run).
pub fn read_detections(path: &Path) -> Result<Vec<DetectionRow>> {
    use arrow::array::AsArray;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let b = batch?;
        anyhow::ensure!(
            b.schema().fields() == detection_schema().fields(),
            "{}: not a detection table",
            path.display()
        );
        let f32s = |k: usize| b.column(k).as_primitive::<arrow::datatypes::Float32Type>().clone();
        let (source, face, chosen) = (
            b.column(0).as_string::<i32>().clone(),
            b.column(1).as_primitive::<arrow::datatypes::Int32Type>().clone(),
            b.column(2).as_boolean().clone(),
        );
        let (x1, y1, x2, y2, score) = (f32s(3), f32s(4), f32s(5), f32s(6), f32s(7));
        let points = b
            .column(8)
            .as_fixed_size_list()
            .values()
            .as_primitive::<arrow::datatypes::Float32Type>()
            .clone();
        for i in 0..b.num_rows() {
            out.push(DetectionRow {
                source: source.value(i).to_owned(),
                face: face.value(i),
                chosen: chosen.value(i),
                bbox: [x1.value(i), y1.value(i), x2.value(i), y2.value(i)],
                score: score.value(i),
                points: std::array::from_fn(|k| points.value(10 * i + k)),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detections.parquet");
        let rows = vec![
            DetectionRow {
                source: "a/1.jpg".into(),
                face: 0,
                chosen: true,
                bbox: [1.0, 2.0, 30.5, 40.25],
                score: 0.99,
                points: std::array::from_fn(|k| k as f32 * 1.5),
            },
            DetectionRow {
                source: "a/1.jpg".into(),
                face: 1,
                chosen: false,
                bbox: [50.0, 60.0, 70.0, 80.0],
                score: 0.8,
                points: [7.0; 10],
            },
        ];
        write_detections(&path, &rows).unwrap();
        assert_eq!(read_detections(&path).unwrap(), rows);
        write_detections(&path, &[]).unwrap();
        assert!(read_detections(&path).unwrap().is_empty());
    }
}
