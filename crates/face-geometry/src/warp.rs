//! Affine warping with bilinear interpolation, matching OpenCV's
//! `warpAffine(src, M, (w, h), flags=INTER_LINEAR, borderMode=BORDER_CONSTANT, borderValue=0)`:
//! each output pixel (x, y) samples the source at M⁻¹·(x, y), pixel centres at integer
//! coordinates, neighbours outside the image count as 0.

use crate::{invert, Affine};

/// Warps an interleaved 8-bit image (`channels` values per pixel, rows top to bottom) with
/// `m`, which maps source coordinates to output coordinates. Returns `None` if `m` is singular
/// or the buffer is shorter than `width * height * channels`.
pub fn warp_affine(src: &[u8], width: usize, height: usize, channels: usize, m: &Affine, out_w: usize, out_h: usize) -> Option<Vec<u8>> {
    if src.len() < width * height * channels {
        return None;
    }
    let inv = invert(m)?;
    let mut out = vec![0u8; out_w * out_h * channels];
    let px = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= width as i64 || y >= height as i64 {
            0.0
        } else {
            src[(y as usize * width + x as usize) * channels + c] as f64
        }
    };
    for y in 0..out_h {
        for x in 0..out_w {
            let (xf, yf) = (x as f64, y as f64);
            let sx = inv[0][0] * xf + inv[0][1] * yf + inv[0][2];
            let sy = inv[1][0] * xf + inv[1][1] * yf + inv[1][2];
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for c in 0..channels {
                let v = (1.0 - fy) * ((1.0 - fx) * px(x0, y0, c) + fx * px(x0 + 1, y0, c))
                    + fy * ((1.0 - fx) * px(x0, y0 + 1, c) + fx * px(x0 + 1, y0 + 1, c));
                out[(y * out_w + x) * channels + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth, integer-defined test image that a Python script can rebuild exactly.
    pub(crate) fn pattern(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let t = (x * x + 3 * y * y + x * y + 40 * c) % 512;
                    v.push(if t < 256 { t } else { 511 - t } as u8);
                }
            }
        }
        v
    }

    #[test]
    fn identity_and_integer_shifts_copy_pixels() {
        let img = pattern(20, 10);
        assert_eq!(
            warp_affine(&img, 20, 10, 3, &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], 20, 10).unwrap(),
            img
        );
        // Shift right by 2: output x takes source x - 2; the first two columns are border (0).
        let out = warp_affine(&img, 20, 10, 3, &[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]], 20, 10).unwrap();
        assert_eq!(&out[0..6], &[0; 6]);
        assert_eq!(
            &out[(3 * 20 + 5) * 3..(3 * 20 + 5) * 3 + 3],
            &img[(3 * 20 + 3) * 3..(3 * 20 + 3) * 3 + 3]
        );
    }

    #[test]
    fn half_pixel_shift_averages_neighbours() {
        // One row, one channel: [10, 30, 50, 70]; shifting by -0.5 samples at x + 0.5.
        let img = [10u8, 30, 50, 70];
        let out = warp_affine(&img, 4, 1, 1, &[[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]], 4, 1).unwrap();
        // Hand-computed: (10+30)/2, (30+50)/2, (50+70)/2, (70+0)/2 (right neighbour is border).
        assert_eq!(out, [20, 40, 60, 35]);
    }

    #[test]
    fn agrees_with_opencv_warp_affine() {
        // tests/fixtures/opencv_warp_*.bin were written by OpenCV 5.0.0 (see make_opencv_fixture.py)
        // from `pattern(250, 250)` with the same matrices.
        let img = pattern(250, 250);
        let cases: [(&str, Affine); 2] = [
            ("opencv_warp_inside.bin", [[0.62, -0.11, -27.3], [0.11, 0.62, -29.8]]),
            ("opencv_warp_border.bin", [[0.9, 0.25, -60.5], [-0.25, 0.9, 20.25]]),
        ];
        for (file, m) in cases {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(file);
            let expect = std::fs::read(&path).unwrap();
            let ours = warp_affine(&img, 250, 250, 3, &m, 96, 112).unwrap();
            assert_eq!(ours.len(), expect.len());
            let diffs: Vec<i32> = ours.iter().zip(&expect).map(|(a, b)| (*a as i32 - *b as i32).abs()).collect();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            let max = diffs.iter().max().copied().unwrap_or(0);
            // Measured: mean 0.0002-0.0004, max 1 (OpenCV 5.0.0). The issue asks for about one
            // grey level on average; hold the tighter line so a regression shows.
            assert!(mean < 0.05 && max <= 1, "{file}: mean |diff| {mean:.4}, max {max}");
        }
    }
}
