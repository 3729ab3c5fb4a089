//! `align`: reads a dataset's images and landmarks, fits the similarity transform onto the
//! reference points (by default MATLAB's `cp2tform(..., 'similarity')`, as every published
//! SphereFace model's crops were made; Umeyama on request), warps with bilinear sampling to
//! the crop size, and writes `faces.parquet` plus `report.json`.
//!
//! Images that cannot be used are skipped and listed with the reason: missing files, corrupt
//! or truncated JPEGs, and missing, NaN, degenerate or out-of-image landmarks.

#![warn(missing_docs)]

mod params;

pub use params::{AlignParams, Format};

use anyhow::{bail, Context};
use rayon::prelude::*;
use serde_json::json;
use spherepipe_face_datasets::{read_samples, Listing, Sample};
use spherepipe_face_geometry::{apply, warp_affine, FitMethod, SPHEREFACE_REFERENCE};
use spherepipe_face_table::{encode_png, for_each_row_batch, FaceRow, FaceWriter};
use spherepipe_stage::{Contract, InputSpec, ParamSpec, ParamType, Params, Part, Stage, StageContext};
use std::path::{Path, PathBuf};

/// The `align` stage kind.
pub struct Align;

/// Why an image was left out.
#[derive(Debug)]
pub enum Skip {
    /// The image could not be read or decoded (the message says why).
    Corrupt(String),
    /// Its landmarks are missing, non-finite or cannot be fitted (the message says why).
    Landmarks(String),
}

impl Stage for Align {
    fn kind(&self) -> &'static str {
        "align"
    }
    fn version(&self) -> &'static str {
        // 2: MATLAB cp2tform with its reflective 'similarity' by default (was Umeyama,
        // non-reflective): the crops change for the same input. 3: faces.parquet's image column
        // is written plain and uncompressed, without statistics (face_table::write_rows).
        // 4: the warp's arithmetic is fixed point (positions to 2⁻³² pixel, weights to 2⁻¹⁶,
        // one integer rounding), and PNGs use the Paeth filter on every row: a few pixels
        // move by one grey level, and the PNG bytes change.
        // 5: an image over 8,192 pixels on a side is refused from its header (listed as bad)
        // instead of decoded and aligned.
        "5"
    }
    fn doc(&self) -> &'static str {
        "5-point similarity alignment to face crops (faces.parquet)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "format",
                ParamType::Choice(&Format::NAMES),
                "casia",
                "layout of `images`: which list format to read (ignored when `samples` is bound)",
            ),
            ParamSpec::new(
                "list",
                ParamType::Str,
                "",
                "landmark list relative to `images` (empty: the format's default)",
            ),
            ParamSpec::new(
                "root",
                ParamType::Str,
                "",
                "image root relative to `images` (empty: the format's default)",
            ),
            ParamSpec::new(
                "size",
                ParamType::list(ParamType::int_range(8, 1024)),
                vec![112, 96],
                "crop [height, width]",
            ),
            ParamSpec::new(
                "reference",
                ParamType::list(ParamType::list(ParamType::float())),
                SPHEREFACE_REFERENCE.iter().map(|p| vec![p[0], p[1]]).collect::<Vec<_>>(),
                "the 5 target points [x, y] in the crop",
            ),
            ParamSpec::new(
                "fit",
                ParamType::Choice(&FitMethod::NAMES),
                "cp2tform",
                "cp2tform: MATLAB's least squares of the detected points on the template, inverted (the published SphereFace crops); umeyama: least squares in the template's coordinates (insightface, scikit-image)",
            ),
            ParamSpec::new(
                "reflective",
                ParamType::Bool,
                true,
                "also try a mirrored fit and keep the better: true is MATLAB's 'similarity', false its 'nonreflective similarity'",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::one("images", "a dataset root (or a synth artifact)"),
            InputSpec::one("samples", "a dedupe artifact whose samples.tsv replaces the format's list").optional(),
        ]
    }
    fn validate(&self, p: &Params) -> Result<(), spherepipe_stage::InvalidParams> {
        AlignParams::from_params(p)?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let job = Listed::read(ctx)?;
        let mut faces = FaceWriter::create(&ctx.out_dir.join("faces.parquet"), ROW_GROUP)?;
        let skipped = align_all(ctx, &job.listing.samples, job.p.format.name(), &job.p.crop, &mut faces)?;
        job.finish(ctx, faces, skipped)
    }
    /// Parts are contiguous runs of the listed images, in list order.
    fn splittable(&self) -> bool {
        true
    }
    fn run_part(&self, ctx: &StageContext<'_>, part: Part) -> anyhow::Result<()> {
        let job = Listed::read(ctx)?;
        let mine = &job.listing.samples[part.range(job.listing.samples.len())];
        let mut faces = FaceWriter::create(&ctx.out_dir.join(PART_ROWS), ROW_GROUP)?;
        let skipped = align_all(ctx, mine, job.p.format.name(), &job.p.crop, &mut faces)?;
        faces.finish()?;
        let skips = PartSkips {
            corrupt: skipped.corrupt,
            bad_landmarks: skipped.bad,
        };
        skips.write(ctx.out_dir)
    }
    /// Concatenates the parts' rows and skips in part order: the same sequence `run` makes, so
    /// the same bytes.
    fn gather(&self, ctx: &StageContext<'_>, parts: &[PathBuf]) -> anyhow::Result<()> {
        let job = Listed::read(ctx)?;
        let mut faces = FaceWriter::create(&ctx.out_dir.join("faces.parquet"), ROW_GROUP)?;
        let mut all = Skipped {
            corrupt: Vec::new(),
            bad: Vec::new(),
        };
        for dir in parts {
            for_each_row_batch(&dir.join(PART_ROWS), ROW_GROUP, |rows| {
                rows.into_iter().try_for_each(|r| faces.push(r))
            })?;
            let skips = PartSkips::read(dir)?;
            all.corrupt.extend(skips.corrupt);
            all.bad.extend(skips.bad_landmarks);
        }
        job.finish(ctx, faces, all)
    }
}

/// A part's aligned faces (only inside part artifacts).
const PART_ROWS: &str = "part.parquet";

/// Rows per row group of the face tables align writes, and the images aligned at once: the
/// stage holds about this many faces in memory, however many it lists.
const ROW_GROUP: usize = 4096;

/// The images a part skipped, by why, as `report.json` lists them (`skips.json`, only inside
/// part artifacts; the gather reads it through this struct).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PartSkips {
    corrupt: Vec<serde_json::Value>,
    bad_landmarks: Vec<serde_json::Value>,
}

impl Contract for PartSkips {
    const FILE: &'static str = "skips.json";
    const WRITER: &'static str = "align";
    const BIND: &'static str = "gather an align stage from its own parts";
}

/// The stage's params and the images they list: what every part, and the gather, reads alike.
struct Listed {
    p: AlignParams,
    listing: Listing,
    image_root: PathBuf,
}

impl Listed {
    fn read(ctx: &StageContext<'_>) -> anyhow::Result<Listed> {
        let p = AlignParams::from_params(ctx.params)?;
        let root = ctx.inputs.one("images")?;
        let image_root = root.join(&p.root);
        let listing = match ctx.inputs.many("samples").first() {
            Some(dir) => read_samples(&dir.join("samples.tsv"), &image_root)?,
            None => p.format.read(&root.join(&p.list), &image_root)?,
        };
        if listing.samples.is_empty() {
            bail!("no images listed under {}: check `format`, `list` and `root`", image_root.display());
        }
        Ok(Listed { p, listing, image_root })
    }

    /// Closes `faces.parquet` (written as the faces were aligned) and writes `report.json`
    /// from the images skipped, in list order; an error when none could be aligned.
    fn finish(&self, ctx: &StageContext<'_>, faces: FaceWriter, outcome: Skipped) -> anyhow::Result<()> {
        let (p, listing, image_root) = (&self.p, &self.listing, &self.image_root);
        let aligned = faces.rows();
        faces.finish()?;
        if aligned == 0 {
            bail!(
                "none of the {} listed images could be aligned (first problem: {})",
                listing.samples.len(),
                outcome
                    .corrupt
                    .first()
                    .or(outcome.bad.first())
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            );
        }
        let listed = listing.samples.len() + listing.missing.len();
        let report = json!({
            "listed": listed,
            "aligned": aligned,
            "missing": listing.missing.iter().map(|p| p.strip_prefix(image_root).unwrap_or(p).display().to_string()).collect::<Vec<_>>(),
            "corrupt": outcome.corrupt,
            "bad_landmarks": outcome.bad,
            "size": [p.crop.height, p.crop.width],
            "fit": p.crop.method.name(),
            "reflective": p.crop.reflective,
        });
        std::fs::write(ctx.out_dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
        ctx.progress.message(&format!(
            "aligned {} of {listed}; skipped {} missing, {} corrupt, {} bad landmarks",
            aligned,
            listing.missing.len(),
            outcome.corrupt.len(),
            outcome.bad.len()
        ));
        Ok(())
    }
}

/// The images skipped (image, reason), by why.
struct Skipped {
    corrupt: Vec<serde_json::Value>,
    bad: Vec<serde_json::Value>,
}

/// Aligns the given images in parallel, `ROW_GROUP` at a time, into `faces` in their order;
/// returns those it skipped.
fn align_all(ctx: &StageContext<'_>, samples: &[Sample], dataset: &str, crop: &Crop, faces: &mut FaceWriter) -> anyhow::Result<Skipped> {
    ctx.progress.set_length(samples.len() as u64);
    let mut out = Skipped {
        corrupt: Vec::new(),
        bad: Vec::new(),
    };
    for batch in samples.chunks(ROW_GROUP) {
        let results: Vec<Result<FaceRow, (String, Skip)>> = batch
            .par_iter()
            .map(|s| {
                let r = if ctx.cancel.is_cancelled() {
                    Err((s.rel_path.clone(), Skip::Corrupt("cancelled".into())))
                } else {
                    align_one(s, dataset, crop)
                };
                ctx.progress.inc(1);
                r
            })
            .collect();
        ctx.cancel.check()?;
        for r in results {
            match r {
                Ok(row) => faces.push(row)?,
                Err((p, Skip::Corrupt(why))) => out.corrupt.push(json!({"image": p, "reason": why})),
                Err((p, Skip::Landmarks(why))) => out.bad.push(json!({"image": p, "reason": why})),
            }
        }
    }
    Ok(out)
}

/// How every face of a dataset is cropped: the template, the fit and the output size.
#[derive(Debug, Clone)]
pub struct Crop {
    /// Where the 5 landmarks go in the crop, [x, y] each.
    pub reference: Vec<[f64; 2]>,
    /// The least-squares convention of the similarity fit.
    pub method: FitMethod,
    /// Also try a mirrored fit and keep the better.
    pub reflective: bool,
    /// Crop height in pixels.
    pub height: usize,
    /// Crop width in pixels.
    pub width: usize,
}

impl Crop {
    /// The SphereFace defaults: the 5-point template, MATLAB's reflective cp2tform, 112×96.
    pub fn sphereface() -> Crop {
        Crop {
            reference: SPHEREFACE_REFERENCE.to_vec(),
            method: FitMethod::Cp2tform,
            reflective: true,
            height: 112,
            width: 96,
        }
    }
}

/// Landmarks that cannot give a sensible crop, and why.
pub fn landmark_problem(m: &[[f64; 2]; 5], width: f64, height: f64) -> Option<String> {
    if m.iter().flatten().any(|v| !v.is_finite()) {
        return Some("a landmark is not a finite number".into());
    }
    if let Some(k) = m.iter().position(|p| p[0] < 0.0 || p[1] < 0.0 || p[0] >= width || p[1] >= height) {
        return Some(format!(
            "landmark {} ({:.1}, {:.1}) lies outside the {width}x{height} image",
            k + 1,
            m[k][0],
            m[k][1]
        ));
    }
    let eye = ((m[1][0] - m[0][0]).powi(2) + (m[1][1] - m[0][1]).powi(2)).sqrt();
    if eye < 2.0 {
        return Some(format!("the eyes are {eye:.2} px apart: degenerate landmarks"));
    }
    None
}

/// Decodes, checks, fits and warps one listed image into a face-table row.
pub fn align_one(s: &Sample, dataset: &str, crop: &Crop) -> Result<FaceRow, (String, Skip)> {
    let (h, w) = (crop.height, crop.width);
    let fail = |k: Skip| (s.rel_path.clone(), k);
    let img = decode(&s.path).map_err(|e| fail(Skip::Corrupt(format!("{e:#}"))))?;
    let (iw, ih) = img.dimensions();
    if let Some(p) = landmark_problem(&s.landmarks, iw as f64, ih as f64) {
        return Err(fail(Skip::Landmarks(p)));
    }
    let fit = crop
        .method
        .fit(&s.landmarks, &crop.reference, crop.reflective)
        .map_err(|e| fail(Skip::Landmarks(e.to_string())))?;
    let pixels = warp_affine(img.as_raw(), iw as usize, ih as usize, 3, &fit.matrix, w, h)
        .ok_or_else(|| fail(Skip::Landmarks("the fitted transform is singular".into())))?;
    let mut marks = [0f32; 10];
    for (k, p) in s.landmarks.iter().enumerate() {
        let q = apply(&fit.matrix, *p);
        marks[2 * k] = q[0] as f32;
        marks[2 * k + 1] = q[1] as f32;
    }
    let png = encode_png(&pixels, w as u32, h as u32).map_err(|e| fail(Skip::Corrupt(format!("PNG encoding failed: {e}"))))?;
    Ok(FaceRow {
        png,
        height: h as i32,
        width: w as i32,
        label: s.label as i32,
        identity: s.name.clone(),
        dataset: dataset.to_owned(),
        source: s.rel_path.clone(),
        video: s.video.clone(),
        landmarks: marks,
        flipped: false,
    })
}

/// A JPEG must end with its end-of-image marker (FF D9); decoders fill a truncated file
/// with grey instead of failing, so check for it. A little trailing padding is tolerated.
pub fn jpeg_truncated(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8]) && !bytes[bytes.len().saturating_sub(64)..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Decodes an image strictly: a truncated or corrupt file is an error, not a grey picture.
fn decode(path: &Path) -> anyhow::Result<image::RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode_rgb(&bytes).with_context(|| format!("{} is not a decodable image", path.display()))
}

/// The largest side of a photo `align` decodes: far above any face dataset's, far below what a
/// header can claim (a 630-byte JPEG can claim 16,000 × 16,000, 768 MB of pixels). A larger
/// one is refused from its header, before its pixels are allocated, and listed as bad.
pub const MAX_PHOTO_SIDE: u32 = 8192;

/// An image file's bytes as RGB, strictly: a JPEG without its end-of-image marker is an error,
/// and so is an image over [`MAX_PHOTO_SIDE`] on a side (from its header).
pub fn decode_rgb(bytes: &[u8]) -> anyhow::Result<image::RgbImage> {
    decode_rgb_within(bytes, MAX_PHOTO_SIDE)
}

/// [`decode_rgb`] with another side limit (`unpack`'s pre-aligned faces are 112 pixels), still
/// checked from the header before any pixel is allocated.
pub fn decode_rgb_within(bytes: &[u8], max_side: u32) -> anyhow::Result<image::RgbImage> {
    if jpeg_truncated(bytes) {
        bail!("a truncated JPEG (no end-of-image marker)");
    }
    if let Some(img) = decode_colour_jpeg(bytes, max_side) {
        return img;
    }
    let (rgb, w, h) = spherepipe_face_table::decode_rgb_within(bytes, max_side)?;
    image::RgbImage::from_raw(w, h, rgb).context("the decoder returned fewer pixels than its header says")
}

/// A colour JPEG decoded straight through zune-jpeg, the decoder `image` wraps, with the same
/// options, so the same pixels; its headers read once instead of three times. `None` for
/// anything else (a PNG, a grayscale or CMYK JPEG), which `image` decodes.
fn decode_colour_jpeg(bytes: &[u8], max_side: u32) -> Option<anyhow::Result<image::RgbImage>> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    if let Err(e) = decoder.decode_headers() {
        return Some(Err(anyhow::anyhow!("{e:?}")));
    }
    if !matches!(decoder.input_colorspace(), Some(ColorSpace::YCbCr | ColorSpace::RGB)) {
        return None;
    }
    let (w, h) = decoder.dimensions()?;
    if w > max_side as usize || h > max_side as usize {
        return Some(Err(anyhow::anyhow!(
            "its header claims {w} × {h} pixels, over the limit of {max_side} on a side: refused before decoding"
        )));
    }
    Some(decoder.decode().map_err(|e| anyhow::anyhow!("{e:?}")).and_then(|pixels| {
        image::RgbImage::from_raw(w as u32, h as u32, pixels).context("the decoder returned fewer pixels than its headers say")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct zune-jpeg path gives `image`'s pixels for a colour JPEG, and leaves
    /// grayscale JPEGs and PNGs to `image`.
    #[test]
    fn colour_jpegs_decode_directly_to_the_same_pixels() {
        let rgb: Vec<u8> = (0..40 * 30 * 3).map(|i| ((i * 37) % 251) as u8).collect();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode(&rgb, 40, 30, image::ExtendedColorType::Rgb8)
            .unwrap();
        let direct = decode_colour_jpeg(&jpeg, MAX_PHOTO_SIDE).unwrap().unwrap();
        assert_eq!(direct, image::load_from_memory(&jpeg).unwrap().into_rgb8());
        assert_eq!(direct.dimensions(), (40, 30));
        let mut grey = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut grey)
            .encode(&rgb[..40 * 30], 40, 30, image::ExtendedColorType::L8)
            .unwrap();
        assert!(decode_colour_jpeg(&grey, MAX_PHOTO_SIDE).is_none());
        let png = spherepipe_face_table::encode_png(&rgb, 40, 30).unwrap();
        assert!(decode_colour_jpeg(&png, MAX_PHOTO_SIDE).is_none());
        assert!(
            decode_colour_jpeg(&jpeg[..200], MAX_PHOTO_SIDE).is_some_and(|r| r.is_err()),
            "a cut JPEG is an error"
        );
    }

    /// A small JPEG whose frame header is rewritten to claim `side` × `side` pixels.
    fn jpeg_claiming(side: u16, colour: image::ExtendedColorType) -> Vec<u8> {
        let channels = if colour == image::ExtendedColorType::L8 { 1 } else { 3 };
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode(&vec![90u8; 16 * 16 * channels], 16, 16, colour)
            .unwrap();
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 7].copy_from_slice(&side.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&side.to_be_bytes());
        jpeg
    }

    #[test]
    fn a_photo_whose_header_claims_too_many_pixels_is_refused_before_decoding() {
        for colour in [image::ExtendedColorType::Rgb8, image::ExtendedColorType::L8] {
            let bomb = jpeg_claiming(16_000, colour);
            assert!(bomb.len() < 1000, "{} bytes", bomb.len());
            let e = decode_rgb(&bomb).unwrap_err().to_string();
            assert!(e.contains("16000 × 16000") && e.contains("8192"), "{colour:?}: {e}");
        }
        // At the limit's side it is not refused for its size (it is then cut short).
        let e = decode_rgb(&jpeg_claiming(8_192, image::ExtendedColorType::Rgb8))
            .err()
            .map(|e| e.to_string());
        assert!(!e.unwrap_or_default().contains("over the limit"));
    }

    #[test]
    fn truncated_jpegs_are_recognised() {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode(&[128u8; 8 * 8 * 3], 8, 8, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert!(!jpeg_truncated(&jpeg));
        assert!(jpeg_truncated(&jpeg[..jpeg.len() - 10]));
        assert!(!jpeg_truncated(b"\x89PNG not a jpeg"));
    }

    #[test]
    fn landmark_checks_name_the_problem() {
        let ok = SPHEREFACE_REFERENCE;
        assert_eq!(landmark_problem(&ok, 96.0, 112.0), None);
        let mut nan = ok;
        nan[2][0] = f64::NAN;
        assert!(landmark_problem(&nan, 96.0, 112.0).unwrap().contains("finite"));
        let mut out = ok;
        out[4][1] = 300.0;
        assert_eq!(
            landmark_problem(&out, 96.0, 112.0).unwrap(),
            "landmark 5 (62.7, 300.0) lies outside the 96x112 image"
        );
        let same = [[50.0, 50.0]; 5];
        assert!(landmark_problem(&same, 96.0, 112.0).unwrap().contains("degenerate"));
    }
}
