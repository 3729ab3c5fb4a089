//! `flip`: horizontal-flip augmentation. The output face table holds every input face and its
//! mirror (`flipped = true`), with landmarks mirrored and re-ordered so that landmark 1 is
//! still the eye on the image's left.

#![warn(missing_docs)]

use rayon::prelude::*;
use spherepipe_face_table::{decode_rgb, encode_png, for_each_row_batch, row_count, FaceRow, FaceWriter};
use spherepipe_stage::{InputSpec, ParamSpec, Stage, StageContext};

/// The `flip` stage kind.
pub struct Flip;

/// Mirrors interleaved RGB rows left-right.
pub fn mirror_rgb(rgb: &[u8], width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len());
    for row in rgb.chunks(width * 3) {
        for px in row.chunks(3).rev() {
            out.extend_from_slice(px);
        }
    }
    out
}

/// Mirrors landmarks (x -> width - 1 - x, pixel centres at integers) and swaps the left/right
/// eye and mouth corners.
pub fn mirror_landmarks(m: &[f32; 10], width: i32) -> [f32; 10] {
    let w = (width - 1) as f32;
    let p = |k: usize| [w - m[2 * k], m[2 * k + 1]];
    let order = [1, 0, 2, 4, 3];
    let mut out = [0f32; 10];
    for (i, &k) in order.iter().enumerate() {
        let q = p(k);
        out[2 * i] = q[0];
        out[2 * i + 1] = q[1];
    }
    out
}

/// The row with its face mirrored left to right and its landmarks mirrored (eyes and mouth corners swapping sides).
pub fn mirror_row(r: &FaceRow) -> anyhow::Result<FaceRow> {
    let (rgb, w, h) = decode_rgb(&r.png)?;
    Ok(FaceRow {
        png: encode_png(&mirror_rgb(&rgb, w as usize), w, h)?,
        landmarks: mirror_landmarks(&r.landmarks, r.width),
        flipped: !r.flipped,
        ..r.clone()
    })
}

impl Stage for Flip {
    fn kind(&self) -> &'static str {
        "flip"
    }
    fn version(&self) -> &'static str {
        // 2: faces.parquet's image column is written plain and uncompressed, without
        // statistics (face_table::write_rows). 3: PNGs use the Paeth filter on every row
        // (face_table::encode_png): the PNG bytes change, not the pixels.
        "3"
    }
    fn doc(&self) -> &'static str {
        "adds the horizontal mirror of every face (flipped = true)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::one("faces", "an align (or flip) artifact with faces.parquet")]
    }
    /// Streams the faces a batch at a time, so memory does not grow with the table.
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let input = ctx.inputs.one("faces")?.join("faces.parquet");
        ctx.progress.set_length(row_count(&input)? as u64);
        let mut out = FaceWriter::create(&ctx.out_dir.join("faces.parquet"), 4096)?;
        for_each_row_batch(&input, 2048, |rows| {
            let mirrored: Vec<FaceRow> = rows
                .par_iter()
                .map(|r| {
                    ctx.cancel.check()?;
                    let m = mirror_row(r);
                    ctx.progress.inc(1);
                    m
                })
                .collect::<anyhow::Result<_>>()?;
            // Each face followed by its mirror keeps pairs together for inspection.
            rows.into_iter().zip(mirrored).try_for_each(|(a, b)| {
                out.push(a)?;
                out.push(b)
            })
        })?;
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirroring_twice_is_the_identity_and_swaps_sides() {
        let rgb: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8).collect();
        let m = mirror_rgb(&rgb, 3);
        assert_eq!(&m[0..9], &[6, 7, 8, 3, 4, 5, 0, 1, 2]);
        assert_eq!(mirror_rgb(&m, 3), rgb);
        let marks = [30.0, 50.0, 65.0, 51.0, 48.0, 71.0, 33.0, 92.0, 62.0, 93.0];
        let f = mirror_landmarks(&marks, 96);
        // Right eye (65, 51) becomes the new left eye at 95 - 65 = 30.
        assert_eq!(&f[0..4], &[30.0, 51.0, 65.0, 50.0]);
        assert_eq!(&f[4..6], &[47.0, 71.0]);
        assert_eq!(mirror_landmarks(&f, 96), marks);
    }
}
