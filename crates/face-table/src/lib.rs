//! The face table: one Parquet schema for aligned faces, shared by align, flip, shard and
//! inspect, and readable as-is by DuckDB, pyarrow and polars.
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `image` | binary | the aligned face, PNG-encoded RGB |
//! | `height`, `width` | int32 | its size in pixels (112 × 96 by default) |
//! | `label` | int32 | dense class index 0..N-1 within the set |
//! | `identity` | string | person name (or the dataset's identity key) |
//! | `dataset` | string | `casia`, `lfw`, `ytf`, `megaface`, … |
//! | `source` | string | image path relative to the dataset root |
//! | `video` | string, nullable | `Name/number` for YouTube Faces frames |
//! | `landmarks` | fixed_size_list<float32>[10] | x1 y1 … x5 y5 after alignment |
//! | `flipped` | bool | horizontally mirrored copy |
//!
//! Images are PNG rather than raw HWC bytes: lossless, about a third of the raw size for
//! aligned faces, and directly viewable from any Parquet client (`PIL.Image.open(BytesIO(b))`);
//! decoding a 112×96 PNG costs far less than a training step uses per image.

#![warn(missing_docs)]

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, FixedSizeListArray, FixedSizeListBuilder, Float32Array,
    Float32Builder, Int32Array, Int32Builder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use image::ImageEncoder as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::path::Path;

/// `detections.parquet`: every face `detect` found.
pub mod detections;
pub mod pairs;
pub mod shards;
use std::sync::Arc;

pub mod features;
pub mod spill;

/// One face.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceRow {
    /// The aligned face as PNG bytes (column `image`).
    pub png: Vec<u8>,
    /// Face height in pixels.
    pub height: i32,
    /// Face width in pixels.
    pub width: i32,
    /// Dense class label (training sets) or the list's label.
    pub label: i32,
    /// The identity's name.
    pub identity: String,
    /// Which dataset it came from (`casia`, `lfw`, `ytf`, `megaface`).
    pub dataset: String,
    /// The image's path relative to the dataset's image root.
    pub source: String,
    /// `Name/video` for YouTube Faces frames.
    pub video: Option<String>,
    /// The 5 landmarks after alignment, x1 y1 … x5 y5, in face pixels.
    pub landmarks: [f32; 10],
    /// This row is the mirror image of its source.
    pub flipped: bool,
}

/// The Arrow schema of a face table.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image", DataType::Binary, false),
        Field::new("height", DataType::Int32, false),
        Field::new("width", DataType::Int32, false),
        Field::new("label", DataType::Int32, false),
        Field::new("identity", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("video", DataType::Utf8, true),
        Field::new(
            "landmarks",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 10),
            false,
        ),
        Field::new("flipped", DataType::Boolean, false),
    ]))
}

/// Builds a record batch from rows.
pub fn to_batch(rows: &[FaceRow]) -> Result<RecordBatch> {
    let mut image = BinaryBuilder::with_capacity(rows.len(), rows.iter().map(|r| r.png.len()).sum());
    let (mut height, mut width, mut label) = (Int32Builder::new(), Int32Builder::new(), Int32Builder::new());
    let (mut identity, mut dataset, mut source, mut video) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut marks = FixedSizeListBuilder::new(Float32Builder::new(), 10).with_field(Arc::new(Field::new("item", DataType::Float32, false)));
    let mut flipped = BooleanBuilder::new();
    for r in rows {
        image.append_value(&r.png);
        height.append_value(r.height);
        width.append_value(r.width);
        label.append_value(r.label);
        identity.append_value(&r.identity);
        dataset.append_value(&r.dataset);
        source.append_value(&r.source);
        video.append_option(r.video.as_deref());
        marks.values().append_slice(&r.landmarks);
        marks.append(true);
        flipped.append_value(r.flipped);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(image.finish()),
        Arc::new(height.finish()),
        Arc::new(width.finish()),
        Arc::new(label.finish()),
        Arc::new(identity.finish()),
        Arc::new(dataset.finish()),
        Arc::new(source.finish()),
        Arc::new(video.finish()),
        Arc::new(marks.finish()),
        Arc::new(flipped.finish()),
    ];
    Ok(RecordBatch::try_new(schema(), cols)?)
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| anyhow!("column `{name}` is missing or has another type than the face-table schema"))
}

/// Rows of a record batch in the face-table schema.
pub fn from_batch(b: &RecordBatch) -> Result<Vec<FaceRow>> {
    let image: &BinaryArray = col(b, "image")?;
    let height: &Int32Array = col(b, "height")?;
    let width: &Int32Array = col(b, "width")?;
    let label: &Int32Array = col(b, "label")?;
    let identity: &StringArray = col(b, "identity")?;
    let dataset: &StringArray = col(b, "dataset")?;
    let source: &StringArray = col(b, "source")?;
    let video: &StringArray = col(b, "video")?;
    let marks: &FixedSizeListArray = col(b, "landmarks")?;
    let flipped: &BooleanArray = col(b, "flipped")?;
    let values = marks
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| anyhow!("`landmarks` items are not float32"))?;
    if marks.value_length() != 10 {
        bail!("`landmarks` has {} values per row, expected 10", marks.value_length());
    }
    (0..b.num_rows())
        .map(|i| {
            let off = marks.value_offset(i) as usize;
            let mut lm = [0f32; 10];
            lm.copy_from_slice(&values.values()[off..off + 10]);
            Ok(FaceRow {
                png: image.value(i).to_vec(),
                height: height.value(i),
                width: width.value(i),
                label: label.value(i),
                identity: identity.value(i).to_owned(),
                dataset: dataset.value(i).to_owned(),
                source: source.value(i).to_owned(),
                video: (!video.is_null(i)).then(|| video.value(i).to_owned()),
                landmarks: lm,
                flipped: flipped.value(i),
            })
        })
        .collect()
}

/// Writes `rows` to a zstd-compressed Parquet file with `row_group` rows per row group.
///
/// The image column is written plain, uncompressed and without statistics: PNG bytes are all
/// different, so a dictionary attempt hashes every image only to be abandoned; they are
/// already deflated, so zstd spends its time for less than 1% of the file; and min/max of
/// images help no reader skip anything. Together with the buffered file, 2.5x the write speed
/// (`cargo bench -p spherepipe-cli --bench face_data`).
pub fn write_rows(path: &Path, rows: &[FaceRow], row_group: usize) -> Result<()> {
    let mut w = FaceWriter::create(path, row_group)?;
    for group in rows.chunks(w.group) {
        w.writer.write(&to_batch(group)?)?;
    }
    w.finish()
}

/// A face table written a row group at a time, so that a stage streams its rows instead of
/// holding them all: the same bytes as `write_rows` given the same rows, because both write
/// batches of exactly one row group.
pub struct FaceWriter {
    writer: ArrowWriter<std::io::BufWriter<std::fs::File>>,
    pending: Vec<FaceRow>,
    group: usize,
    rows: usize,
}

impl FaceWriter {
    /// A new file at `path` with `row_group` rows per row group (see `write_rows`).
    pub fn create(path: &Path, row_group: usize) -> Result<FaceWriter> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let image = ColumnPath::from("image");
        let group = row_group.max(1);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
            .set_max_row_group_size(group)
            .set_column_dictionary_enabled(image.clone(), false)
            .set_column_compression(image.clone(), Compression::UNCOMPRESSED)
            .set_column_statistics_enabled(image, EnabledStatistics::None)
            .build();
        let writer = ArrowWriter::try_new(std::io::BufWriter::with_capacity(1 << 20, file), schema(), Some(props))?;
        Ok(FaceWriter {
            writer,
            pending: Vec::with_capacity(group),
            group,
            rows: 0,
        })
    }

    /// Appends one row; a full row group goes to the file.
    pub fn push(&mut self, row: FaceRow) -> Result<()> {
        self.pending.push(row);
        self.rows += 1;
        if self.pending.len() == self.group {
            self.flush()?;
        }
        Ok(())
    }

    /// Rows appended so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.writer.write(&to_batch(&self.pending)?)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes the last row group and the footer.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.writer.close()?;
        Ok(())
    }
}

/// Reads every row of a face-table Parquet file.
pub fn read_rows(path: &Path) -> Result<Vec<FaceRow>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?
        .build()?;
    let mut out = Vec::new();
    for b in reader {
        out.extend(from_batch(&b?).with_context(|| format!("reading {}", path.display()))?);
    }
    Ok(out)
}

/// Reads a face table in record batches of up to `rows` rows, so a large test set (a million
/// MegaFace distractors) streams instead of loading whole.
pub fn for_each_row_batch(path: &Path, rows: usize, mut each: impl FnMut(Vec<FaceRow>) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?
        .with_batch_size(rows.max(1))
        .build()?;
    for b in reader {
        each(from_batch(&b?).with_context(|| format!("reading {}", path.display()))?)?;
    }
    Ok(())
}

/// Rows in a face or feature table, from its footer (no data pages read). A footer may lie
/// (a table from a shared store is untrusted input), and callers size work by this count, so
/// it is bounded by what the file can hold: every row of these tables stores at least four
/// bytes (a PNG's length word, or a feature's float), plain.
pub fn row_count(path: &Path) -> Result<usize> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let rows = builder.metadata().file_metadata().num_rows();
    if rows < 0 || rows as u64 > len / 4 {
        bail!(
            "{}: its footer claims {rows} rows, more than a file of {len} bytes can hold; the file is damaged or forged (rebuild the stage that made it)",
            path.display()
        );
    }
    Ok(rows as usize)
}

/// Every row's `label`, read without touching the other columns.
pub fn read_labels(path: &Path) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for_each_column_batch::<Int32Array>(path, "label", "an int32", |c| out.extend_from_slice(c.values()))?;
    Ok(out)
}

/// One string column of a Parquet file, read without touching the others (image bytes stay
/// on disk), plus the file's Arrow schema.
pub fn read_string_column(path: &Path, column: &str) -> Result<(SchemaRef, Vec<String>)> {
    let mut out = Vec::new();
    let schema = for_each_column_batch::<StringArray>(path, column, "a string", |c| {
        out.extend((0..c.len()).map(|i| c.value(i).to_owned()))
    })?;
    Ok((schema, out))
}

/// Hands `each` every batch of one column of a Parquet file, as arrow array type `A` (`kind`
/// names it for the error), reading no other column; returns the file's Arrow schema.
fn for_each_column_batch<A: arrow::array::Array + 'static>(
    path: &Path,
    column: &str,
    kind: &str,
    mut each: impl FnMut(&A),
) -> Result<SchemaRef> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let schema = builder.schema().clone();
    let idx = schema
        .index_of(column)
        .map_err(|_| anyhow!("{} has no `{column}` column", path.display()))?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [idx]);
    for b in builder.with_projection(mask).build()? {
        let b = b?;
        let c = b
            .column(0)
            .as_any()
            .downcast_ref::<A>()
            .ok_or_else(|| anyhow!("`{column}` is not {kind} column"))?;
        each(c);
    }
    Ok(schema)
}

/// PNG-encodes an interleaved RGB image: fast deflate, and the Paeth filter on every row.
/// (The adaptive filter tries all five per row and, on aligned faces, picks Paeth almost
/// everywhere: the same size within 0.2%, for 30% more time. Measured in the `face_data`
/// bench's history, issue 15.)
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut out = Vec::with_capacity(rgb.len() / 2);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Paeth).write_image(
        rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

/// The largest side of a face row's image. Crops are a few hundred pixels at most; a row whose
/// PNG header claims more (a shard from a shared store is untrusted input) is refused before
/// its pixels are allocated.
pub const MAX_FACE_SIDE: u32 = 2048;

/// Decodes a face row's PNG (or any supported format) to interleaved RGB, refusing from its
/// header an image over [`MAX_FACE_SIDE`] on a side.
pub fn decode_rgb(bytes: &[u8]) -> Result<(Vec<u8>, u32, u32)> {
    decode_rgb_within(bytes, MAX_FACE_SIDE)
}

/// The image's size as its header states it, read without decoding any pixel.
pub fn image_size(bytes: &[u8]) -> Result<(u32, u32)> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    Ok(reader.into_dimensions()?)
}

/// Refuses an image whose header states a side over `max_side`, saying what it claims.
pub fn check_size(bytes: &[u8], max_side: u32) -> Result<(u32, u32)> {
    let (w, h) = image_size(bytes)?;
    if w > max_side || h > max_side {
        bail!("its header claims {w} × {h} pixels, over the limit of {max_side} on a side: refused before decoding");
    }
    Ok((w, h))
}

/// Decodes any image `image` reads to interleaved RGB, refusing one over `max_side` on a side
/// from its header, before any pixel buffer is allocated (the decoder's own limits stand behind
/// that check).
pub fn decode_rgb_within(bytes: &[u8], max_side: u32) -> Result<(Vec<u8>, u32, u32)> {
    check_size(bytes, max_side)?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    limits.max_alloc = Some(u64::from(max_side) * u64::from(max_side) * 8);
    reader.limits(limits);
    let img = reader.decode()?.into_rgb8();
    let (w, h) = img.dimensions();
    Ok((img.into_raw(), w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_over_the_side_limit_is_refused_from_its_header() {
        // A real PNG, 3000 × 1, a few dozen bytes: over a face row's limit.
        let wide = encode_png(&vec![7u8; 3000 * 3], 3000, 1).unwrap();
        assert!(wide.len() < 200);
        assert_eq!(image_size(&wide).unwrap(), (3000, 1));
        let e = decode_rgb(&wide).unwrap_err().to_string();
        assert!(e.contains("3000 × 1") && e.contains("2048"), "{e}");
        // Under a larger limit it decodes.
        assert_eq!(decode_rgb_within(&wide, 4096).unwrap().1, 3000);
        // A header that claims 60000 × 60000 (IHDR rewritten, CRC fixed up): refused without
        // allocating the 10.8 GB it asks for.
        let mut bomb = encode_png(&[1, 2, 3], 1, 1).unwrap();
        bomb[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(image_size(&bomb).unwrap(), (60_000, 60_000));
        let e = decode_rgb_within(&bomb, 8192).unwrap_err().to_string();
        assert!(e.contains("60000 × 60000"), "{e}");
    }

    /// PNG's CRC-32 (ISO 3309), bit by bit.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    /// Rows pushed one at a time make the very bytes `write_rows` makes of them all at once.
    #[test]
    fn a_streamed_table_is_the_table_written_at_once() {
        let d = tempfile::tempdir().unwrap();
        let rows: Vec<FaceRow> = (0..23).map(row).collect();
        write_rows(&d.path().join("a.parquet"), &rows, 5).unwrap();
        let mut w = FaceWriter::create(&d.path().join("b.parquet"), 5).unwrap();
        for r in rows.clone() {
            w.push(r).unwrap();
        }
        assert_eq!(w.rows(), 23);
        w.finish().unwrap();
        let (a, b) = (
            std::fs::read(d.path().join("a.parquet")).unwrap(),
            std::fs::read(d.path().join("b.parquet")).unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(read_rows(&d.path().join("b.parquet")).unwrap(), rows);
    }

    /// A row survives the spill record format field for field, and the stream ends cleanly.
    #[test]
    fn rows_round_trip_through_spill_records() {
        let mut rows: Vec<FaceRow> = (0..3).map(row).collect();
        rows[1].video = Some("Name/1".into());
        rows[2].flipped = true;
        rows[2].landmarks[9] = -1.5;
        let mut buf = Vec::new();
        for (k, r) in rows.iter().enumerate() {
            spill::write_record(&mut buf, 10 + k as u32, r).unwrap();
        }
        let mut read = std::io::Cursor::new(buf);
        let mut back = Vec::new();
        while let Some(rec) = spill::read_record(&mut read).unwrap() {
            back.push(rec);
        }
        assert_eq!(
            back,
            rows.into_iter().enumerate().map(|(k, r)| (10 + k as u32, r)).collect::<Vec<_>>()
        );
        assert!(
            spill::read_record(&mut std::io::Cursor::new(vec![1u8, 0, 0])).is_err(),
            "a cut key is an error"
        );
        let mut one = Vec::new();
        spill::write_record(&mut one, 1, &row(1)).unwrap();
        one.truncate(one.len() - 3);
        assert!(
            spill::read_record(&mut std::io::Cursor::new(one)).is_err(),
            "a cut record is an error"
        );
    }

    #[test]
    fn a_footer_claiming_more_rows_than_the_file_can_hold_is_refused_and_labels_read_alone() {
        let d = tempfile::tempdir().unwrap();
        let rows: Vec<FaceRow> = (0..25).map(row).collect();
        let p = d.path().join("f.parquet");
        write_rows(&p, &rows, 10).unwrap();
        assert_eq!(row_count(&p).unwrap(), 25);
        assert_eq!(read_labels(&p).unwrap(), (0..25).collect::<Vec<i32>>());
        // A real Parquet file (one constant int column, run-length encoded) whose footer says
        // a million rows in a few hundred bytes: no face or feature table is like that.
        let q = d.path().join("dense.parquet");
        let schema = std::sync::Arc::new(Schema::new(vec![Field::new("label", DataType::Int32, false)]));
        let batch =
            arrow::record_batch::RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(Int32Array::from(vec![7; 1_000_000]))])
                .unwrap();
        let mut w = ArrowWriter::try_new(std::fs::File::create(&q).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let len = std::fs::metadata(&q).unwrap().len();
        assert!(len < 4_000_000 / 4, "{len} bytes");
        let e = row_count(&q).unwrap_err().to_string();
        assert!(e.contains("claims 1000000 rows") && e.contains("damaged or forged"), "{e}");
    }

    fn row(i: i32) -> FaceRow {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|k: i32| (k * 7 + i) as u8).collect();
        FaceRow {
            png: encode_png(&rgb, 3, 4).unwrap(),
            height: 4,
            width: 3,
            label: i,
            identity: format!("Person_{i}"),
            dataset: "lfw".into(),
            source: format!("Person_{i}/Person_{i}_0001.jpg"),
            video: (i % 2 == 0).then(|| format!("Person_{i}/0")),
            landmarks: [i as f32; 10],
            flipped: i % 3 == 0,
        }
    }

    #[test]
    fn rows_round_trip_through_parquet() {
        let d = tempfile::tempdir().unwrap();
        let rows: Vec<FaceRow> = (0..25).map(row).collect();
        let p = d.path().join("f.parquet");
        write_rows(&p, &rows, 10).unwrap();
        assert_eq!(read_rows(&p).unwrap(), rows);
        let meta = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&p).unwrap()).unwrap();
        use parquet::file::reader::FileReader;
        assert_eq!(meta.metadata().num_row_groups(), 3);
        // The PNG column is stored as is, without a dictionary or statistics; the others are zstd
        // (the level is not stored in the file; the codec is).
        let group = meta.metadata().row_group(0);
        let image = group.column(0);
        assert_eq!(image.compression(), Compression::UNCOMPRESSED);
        assert!(image.statistics().is_none() && image.dictionary_page_offset().is_none());
        assert!((1..group.num_columns()).all(|i| matches!(group.column(i).compression(), Compression::ZSTD(_))));
        let (rgb, w, h) = decode_rgb(&rows[5].png).unwrap();
        assert_eq!((w, h, rgb[1]), (3, 4, 12));
    }
}
