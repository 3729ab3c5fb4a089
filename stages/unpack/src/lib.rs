//! `unpack`: the data people hold today, as insightface distributes it, into the face table
//! the rest of the pipeline reads. Two formats:
//!
//! - `pack`: a RecordIO training pack (`train.rec`, `train.idx`, `property`: CASIA-WebFace as
//!   `faces_webface_112x112`, MS1MV2 as `faces_emore`, Glint360K, ...). Its images are aligned
//!   already, 112 × 112 on the ArcFace template; nothing is re-aligned. `crop: full` keeps
//!   them, `crop: sphereface` takes the central 112 × 96 (the SphereFace framing). Labels are
//!   the pack's classes. It splits into parts (contiguous runs of image keys), gathered into
//!   the same bytes whatever the count.
//! - `bin`: a verification bin (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`, ...): its images in
//!   file order, and `pairs.json` with the pairs for `evaluate`.
//!
//! A record or image that cannot be used (a damaged record, an undecodable image, a label
//! outside the pack's classes) is skipped and listed in `report.json` with its key and why.

#![warn(missing_docs)]

use anyhow::{bail, Context};
use rayon::prelude::*;
use serde_json::json;
use spherepipe_face_geometry::ARCFACE_REFERENCE;
use spherepipe_face_table::pairs::{bin_source, VerificationPairs};
use spherepipe_face_table::{encode_png, for_each_row_batch, FaceRow, FaceWriter};
use spherepipe_recordio::{IrHeader, Pack};
use spherepipe_stage::{Contract, InputSpec, ParamSpec, ParamType, Params, Part, Stage, StageContext};
use std::path::{Path, PathBuf};

#[cfg(feature = "libjpeg-turbo")]
mod turbo;

/// The `unpack` stage kind.
pub struct Unpack;

/// The stage's version: which JPEG decoder made the pixels is part of it, so a build with the
/// `libjpeg-turbo` feature never reuses artifacts of one without (their pixels differ).
const VERSION: &str = if cfg!(feature = "libjpeg-turbo") { "1+libjpeg-turbo" } else { "1" };

/// The largest side of an image in a pack or a bin (they are 112 × 112).
const MAX_SIDE: u32 = 1024;

/// Rows per row group, and images decoded at once.
const ROW_GROUP: usize = 4096;

/// A part's faces (inside part artifacts only).
const PART_ROWS: &str = "part.parquet";

impl Stage for Unpack {
    fn kind(&self) -> &'static str {
        "unpack"
    }
    fn version(&self) -> &'static str {
        VERSION
    }
    fn doc(&self) -> &'static str {
        "an insightface RecordIO pack or verification bin into a face table (already aligned)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "format",
                ParamType::Choice(&["pack", "bin"]),
                "pack",
                "pack: train.rec/.idx/property; bin: a verification bin",
            ),
            ParamSpec::new(
                "dir",
                ParamType::Str,
                "",
                "under `data`: the directory holding the pack and its bins (empty: `data` itself)",
            ),
            ParamSpec::new(
                "file",
                ParamType::Str,
                "",
                "under `dir`: the pack's directory (empty: `dir` itself), or the bin (lfw.bin)",
            ),
            ParamSpec::new(
                "crop",
                ParamType::Choice(&["full", "sphereface"]),
                "full",
                "full: the 112x112 images as they are (ArcFace framing); sphereface: their central 112x96",
            ),
            ParamSpec::new(
                "set",
                ParamType::Str,
                "",
                "a bin's name in results tables (LFW, CFP-FP, AgeDB-30; empty: from the file name)",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::one(
            "data",
            "a directory holding the pack or the bin (a dataset, or a synth artifact)",
        )]
    }
    fn validate(&self, p: &Params) -> Result<(), spherepipe_stage::InvalidParams> {
        UnpackParams::from_params(p)?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p = UnpackParams::from_params(ctx.params)?;
        if p.bin {
            return unpack_bin(ctx, &p, &p.source(ctx)?);
        }
        let l = Listed::open(ctx, &p)?;
        let mut faces = FaceWriter::create(&ctx.out_dir.join("faces.parquet"), ROW_GROUP)?;
        let skipped = unpack_records(ctx, &l.pack, &l.keys, p.crop, &mut faces)?;
        l.finish(ctx, faces, skipped)
    }
    fn splittable(&self) -> bool {
        true
    }
    fn run_part(&self, ctx: &StageContext<'_>, part: Part) -> anyhow::Result<()> {
        let p = UnpackParams::from_params(ctx.params)?;
        let l = Listed::open(ctx, &p)?;
        let mut faces = FaceWriter::create(&ctx.out_dir.join(PART_ROWS), ROW_GROUP)?;
        let skipped = unpack_records(ctx, &l.pack, &l.keys[part.range(l.keys.len())], p.crop, &mut faces)?;
        faces.finish()?;
        PartSkips { skipped }.write(ctx.out_dir)
    }
    fn gather(&self, ctx: &StageContext<'_>, parts: &[PathBuf]) -> anyhow::Result<()> {
        let l = Listed::open(ctx, &UnpackParams::from_params(ctx.params)?)?;
        let mut faces = FaceWriter::create(&ctx.out_dir.join("faces.parquet"), ROW_GROUP)?;
        let mut skipped = Vec::new();
        for dir in parts {
            for_each_row_batch(&dir.join(PART_ROWS), ROW_GROUP, |rows| {
                rows.into_iter().try_for_each(|r| faces.push(r))
            })?;
            skipped.extend(PartSkips::read(dir)?.skipped);
        }
        l.finish(ctx, faces, skipped)
    }
}

/// The records a part skipped (`skips.json`, inside part artifacts only).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PartSkips {
    skipped: Vec<serde_json::Value>,
}

impl Contract for PartSkips {
    const FILE: &'static str = "skips.json";
    const WRITER: &'static str = "unpack";
    const BIND: &'static str = "gather an unpack stage from its own parts";
}

/// What to keep of each 112 × 112 image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crop {
    /// All of it (the ArcFace framing).
    Full,
    /// The central 112 × 96 (the SphereFace framing).
    SphereFace,
}

impl Crop {
    /// The columns it drops on the left, and its width, of an image `width` wide.
    fn columns(self, width: u32) -> (u32, u32) {
        match self {
            Crop::Full => (0, width),
            Crop::SphereFace => ((width.saturating_sub(96)) / 2, width.min(96)),
        }
    }
}

/// `unpack`'s params, read once.
struct UnpackParams {
    bin: bool,
    dir: String,
    file: String,
    crop: Crop,
    set: String,
}

impl UnpackParams {
    fn from_params(p: &Params) -> Result<UnpackParams, spherepipe_stage::InvalidParams> {
        let bin = p.str("format")? == "bin";
        let (dir, file) = (p.str("dir")?.to_owned(), p.str("file")?.to_owned());
        if bin && file.is_empty() {
            return Err("format `bin` needs `file`: the bin under `data` (lfw.bin)".into());
        }
        for (name, path) in [("dir", &dir), ("file", &file)] {
            if path.split('/').any(|c| c == "..") || path.starts_with('/') {
                return Err(format!("`{name}: {path}` must stay under `data` (no `..`, not absolute)").into());
            }
        }
        let crop = if p.str("crop")? == "sphereface" {
            Crop::SphereFace
        } else {
            Crop::Full
        };
        let set = match p.str("set")? {
            "" => set_name(&file),
            s => s.to_owned(),
        };
        Ok(UnpackParams { bin, dir, file, crop, set })
    }

    /// The pack directory or the bin file.
    fn source(&self, ctx: &StageContext<'_>) -> anyhow::Result<PathBuf> {
        Ok(ctx.inputs.one("data")?.join(&self.dir).join(&self.file))
    }
}

/// The name papers give a bin's set, from its file name (`cfp_fp.bin` → `CFP-FP`).
pub fn set_name(file: &str) -> String {
    let stem = Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.as_str() {
        "lfw" => "LFW".into(),
        "cfp_fp" => "CFP-FP".into(),
        "cfp_ff" => "CFP-FF".into(),
        "agedb_30" => "AgeDB-30".into(),
        "calfw" => "CALFW".into(),
        "cplfw" => "CPLFW".into(),
        "vgg2_fp" => "VGG2-FP".into(),
        other => other.to_owned(),
    }
}

/// A pack and the image keys it lists: what `run`, each part and the gather read alike.
struct Listed {
    pack: Pack,
    keys: Vec<u64>,
}

impl Listed {
    fn open(ctx: &StageContext<'_>, p: &UnpackParams) -> anyhow::Result<Listed> {
        if p.bin {
            bail!("a verification bin is unpacked whole: drop `parts` from this stage");
        }
        let pack = Pack::open(&p.source(ctx)?).map_err(anyhow::Error::msg)?;
        let keys = pack.image_keys().map_err(anyhow::Error::msg)?;
        Ok(Listed { pack, keys })
    }

    /// Closes the face table and writes `report.json`; an error when nothing could be
    /// unpacked.
    fn finish(&self, ctx: &StageContext<'_>, faces: FaceWriter, skipped: Vec<serde_json::Value>) -> anyhow::Result<()> {
        let (pack, listed) = (&self.pack, self.keys.len());
        let rows = faces.rows();
        faces.finish()?;
        if rows == 0 {
            bail!(
                "none of the {listed} images of {} could be unpacked (first problem: {})",
                pack.rec.display(),
                skipped
                    .first()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "the pack lists no images".into())
            );
        }
        let report = json!({
            "listed": listed,
            "unpacked": rows,
            "classes": pack.property.classes,
            "skipped": skipped,
        });
        std::fs::write(ctx.out_dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
        ctx.progress
            .message(&format!("unpacked {rows} of {listed} images; skipped {}", listed - rows));
        Ok(())
    }
}

/// One image's bytes as a face-table row, or why it cannot be one.
fn face_row(encoded: &[u8], crop: Crop, label: i32, identity: String, dataset: &str, source: String) -> Result<FaceRow, String> {
    let (rgb, w, h) = decode_face(encoded).map_err(|e| format!("not a decodable image (a pack's faces are 112 x 112): {e:#}"))?;
    let (left, width) = crop.columns(w);
    let mut cropped = Vec::with_capacity((width * h * 3) as usize);
    for row in rgb.chunks_exact(3 * w as usize) {
        cropped.extend_from_slice(&row[3 * left as usize..3 * (left + width) as usize]);
    }
    let png = encode_png(&cropped, width, h).map_err(|e| format!("{e:#}"))?;
    // The template's points, where the crop puts them (scaled when the image is not 112 high).
    let scale = f64::from(h) / 112.0;
    let mut landmarks = [0f32; 10];
    for (k, p) in ARCFACE_REFERENCE.iter().enumerate() {
        landmarks[2 * k] = (p[0] * scale - f64::from(left)) as f32;
        landmarks[2 * k + 1] = (p[1] * scale) as f32;
    }
    Ok(FaceRow {
        png,
        height: h as i32,
        width: width as i32,
        label,
        identity,
        dataset: dataset.to_owned(),
        source,
        video: None,
        landmarks,
        flipped: false,
    })
}

/// An image's RGB pixels, width and height: colour JPEGs through libjpeg-turbo when built with
/// it, everything else (and every image otherwise) through align's decoder.
pub fn decode_face(encoded: &[u8]) -> anyhow::Result<(Vec<u8>, u32, u32)> {
    #[cfg(feature = "libjpeg-turbo")]
    if !spherepipe_stage_align::jpeg_truncated(encoded) {
        if let Some(decoded) = turbo::decode_colour_jpeg(encoded, MAX_SIDE) {
            return decoded.map_err(anyhow::Error::msg);
        }
    }
    let img = spherepipe_stage_align::decode_rgb_within(encoded, MAX_SIDE)?;
    let (w, h) = img.dimensions();
    Ok((img.into_raw(), w, h))
}

/// Reads the records `keys` of `pack`, `ROW_GROUP` at a time (read in order, decoded in
/// parallel), into `faces`; returns those skipped, with why.
fn unpack_records(
    ctx: &StageContext<'_>,
    pack: &Pack,
    keys: &[u64],
    crop: Crop,
    faces: &mut FaceWriter,
) -> anyhow::Result<Vec<serde_json::Value>> {
    ctx.progress.set_length(keys.len() as u64);
    let mut reader = pack.reader().map_err(anyhow::Error::msg)?;
    let classes = pack.property.classes;
    let mut skipped = Vec::new();
    for batch in keys.chunks(ROW_GROUP) {
        ctx.cancel.check()?;
        let records: Vec<(u64, Result<Vec<u8>, String>)> = batch
            .iter()
            .map(|&k| (k, pack.read(&mut reader, k).map_err(|e| e.to_string())))
            .collect();
        let rows: Vec<(u64, Result<FaceRow, String>)> = records
            .into_par_iter()
            .map(|(key, rec)| {
                let row = rec.and_then(|payload| {
                    let (h, image) = IrHeader::unpack(&payload)?;
                    let class = h.class();
                    if !(class >= 0.0 && class.fract() == 0.0 && (class as u64) < u64::from(classes)) {
                        return Err(format!("label {class} is not a class of the pack (0..{classes})"));
                    }
                    face_row(
                        image,
                        crop,
                        class as i32,
                        format!("{}", class as u32),
                        "insightface",
                        format!("train.rec#{key}"),
                    )
                });
                ctx.progress.inc(1);
                (key, row)
            })
            .collect();
        for (key, row) in rows {
            match row {
                Ok(r) => faces.push(r)?,
                Err(why) => skipped.push(json!({"key": key, "reason": why})),
            }
        }
        // A damaged record leaves the reader mid-file: the next read seeks by the index.
    }
    Ok(skipped)
}

/// A verification bin: its images as faces in file order (label: the pair), `pairs.json`.
fn unpack_bin(ctx: &StageContext<'_>, p: &UnpackParams, path: &Path) -> anyhow::Result<()> {
    let bin = spherepipe_face_bins::read_bin(path)?;
    let file = Path::new(&p.file)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    ctx.progress.set_length(bin.images.len() as u64);
    let mut faces = FaceWriter::create(&ctx.out_dir.join("faces.parquet"), ROW_GROUP)?;
    let mut undecodable = Vec::new();
    let mut skipped = Vec::new();
    for (c, chunk) in bin.images.chunks(ROW_GROUP).enumerate() {
        ctx.cancel.check()?;
        let rows: Vec<Result<FaceRow, String>> = chunk
            .par_iter()
            .enumerate()
            .map(|(k, img)| {
                let i = c * ROW_GROUP + k;
                let pair = (i / 2) as i32;
                face_row(img, p.crop, pair, format!("{}/{pair}", p.set), &p.set, bin_source(&file, i))
            })
            .collect();
        for (k, row) in rows.into_iter().enumerate() {
            match row {
                Ok(r) => faces.push(r)?,
                Err(why) => {
                    let i = c * ROW_GROUP + k;
                    undecodable.push(i);
                    skipped.push(json!({"image": i, "reason": why}));
                }
            }
            ctx.progress.inc(1);
        }
    }
    let rows = faces.rows();
    faces.finish()?;
    if rows == 0 {
        bail!("none of the {} images of {} could be decoded", bin.images.len(), path.display());
    }
    VerificationPairs {
        set: p.set.clone(),
        same: bin.same,
        undecodable,
    }
    .write(ctx.out_dir)?;
    let report = json!({"set": p.set, "images": bin.images.len(), "unpacked": rows, "skipped": skipped});
    std::fs::write(ctx.out_dir.join("report.json"), serde_json::to_string_pretty(&report)?)
        .with_context(|| "writing report.json".to_owned())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sphereface_crop_of_an_arcface_image_puts_the_points_on_the_sphereface_template() {
        let (left, width) = Crop::SphereFace.columns(112);
        assert_eq!((left, width), (8, 96));
        for (a, s) in ARCFACE_REFERENCE.iter().zip(spherepipe_face_geometry::SPHEREFACE_REFERENCE) {
            assert!((a[0] - f64::from(left) - s[0]).abs() < 1e-9 && a[1] == s[1]);
        }
        assert_eq!(Crop::Full.columns(112), (0, 112));
    }

    #[test]
    fn bins_are_named_as_papers_name_them() {
        assert_eq!(set_name("cfp_fp.bin"), "CFP-FP");
        assert_eq!(set_name("bins/agedb_30.bin"), "AgeDB-30");
        assert_eq!(set_name("mine.bin"), "mine");
    }

    #[test]
    fn a_row_is_cropped_and_labelled_with_the_template_points() {
        // A 112 × 112 image whose column x has grey level x: the crop keeps columns 8..104.
        let img = image::RgbImage::from_fn(112, 112, |x, _| image::Rgb([x as u8; 3]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let row = face_row(&png, Crop::SphereFace, 3, "3".into(), "insightface", "train.rec#1".into()).unwrap();
        assert_eq!((row.width, row.height, row.label), (96, 112, 3));
        let (rgb, w, _) = spherepipe_face_table::decode_rgb_within(&row.png, 1024).unwrap();
        assert_eq!((w, rgb[0], rgb[3 * 95]), (96, 8, 103));
        assert!((row.landmarks[0] - 30.2946).abs() < 1e-4);
        assert!(face_row(b"not an image", Crop::Full, 0, "0".into(), "x", "y".into()).is_err());
        // A header claiming more than a face is refused before its pixels are allocated.
        let big = image::RgbImage::new(1100, 8);
        let mut png = Vec::new();
        big.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let e = face_row(&png, Crop::Full, 0, "0".into(), "x", "y".into()).unwrap_err();
        assert!(e.contains("over the limit of 1024"), "{e}");
    }
}
