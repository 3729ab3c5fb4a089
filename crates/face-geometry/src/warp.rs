//! Affine warping with bilinear interpolation, matching OpenCV's
//! `warpAffine(src, M, (w, h), flags=INTER_LINEAR, borderMode=BORDER_CONSTANT, borderValue=0)`:
//! each output pixel (x, y) samples the source at M⁻¹·(x, y), pixel centres at integer
//! coordinates, neighbours outside the image count as 0.

use crate::{invert, Affine};

/// Warps an interleaved 8-bit image (`channels` values per pixel, rows top to bottom) with
/// `m`, which maps source coordinates to output coordinates. Returns `None` if `m` is singular
/// (or so nearly that the crop would sample more than 2³⁰ pixels away) or the buffer is
/// shorter than `width * height * channels`.
pub fn warp_affine(src: &[u8], width: usize, height: usize, channels: usize, m: &Affine, out_w: usize, out_h: usize) -> Option<Vec<u8>> {
    if src.len() < width * height * channels {
        return None;
    }
    let inv = invert(m)?;
    if !positions_fit(&inv, out_w, out_h) {
        return None;
    }
    let mut out = vec![0u8; out_w * out_h * channels];
    // The channel count as a constant, so the per-channel loops unroll.
    match channels {
        1 => warp_into::<1>(src, width, height, &inv, out_w, &mut out),
        3 => warp_into::<3>(src, width, height, &inv, out_w, &mut out),
        4 => warp_into::<4>(src, width, height, &inv, out_w, &mut out),
        _ => warp_any(src, width, height, channels, &inv, out_w, &mut out),
    }
    Some(out)
}

/// The warp for `C` channels, `inv` mapping output pixels to source positions.
///
/// Along an output row the source position moves by a constant step, so positions are kept
/// in fixed point with 32 fractional bits and advanced by adding the step: no float work
/// per pixel. (The step's rounding, under 2⁻³² pixel, adds up to far less than a thousandth
/// of a pixel across a row.) Bilinear weights use the top 16 fractional bits, and the blend
/// is integer, rounded once.
fn warp_into<const C: usize>(src: &[u8], width: usize, height: usize, inv: &Affine, out_w: usize, out: &mut [u8]) {
    let image = Source {
        pixels: src,
        width,
        height,
        channels: C,
    };
    let (step, starts) = fixed_point_rows(inv);
    let (w, h) = (width as i64, height as i64);
    let row_len = width * C;
    for (y, row) in out.chunks_exact_mut(out_w * C).enumerate() {
        let mut at = starts(y);
        for px in row.as_chunks_mut::<C>().0 {
            let (x0, y0) = (at[0] >> 32, at[1] >> 32);
            let f = fractions(at);
            if x0 < 0 || y0 < 0 || x0 + 1 >= w || y0 + 1 >= h {
                image.sample_at_border([x0, y0], f, px);
            } else {
                let top = (y0 as usize * width + x0 as usize) * C;
                let (t, b) = (&src[top..top + 2 * C], &src[top + row_len..top + row_len + 2 * C]);
                for k in 0..C {
                    px[k] = blend(f, [t[k], t[C + k], b[k], b[C + k]]);
                }
            }
            at = [at[0] + step[0], at[1] + step[1]];
        }
    }
}

/// The bilinear blend of the four neighbours (x, y), (x+1, y), (x, y+1), (x+1, y+1) at
/// fractions `f` (in 1/65536 pixel), rounded half up.
#[inline(always)]
fn blend(f: [u32; 2], v: [u8; 4]) -> u8 {
    let [fx, fy] = f;
    let upper = v[0] as u32 * (65536 - fx) + v[1] as u32 * fx;
    let lower = v[2] as u32 * (65536 - fx) + v[3] as u32 * fx;
    let sum = upper as u64 * (65536 - fy) as u64 + lower as u64 * fy as u64;
    ((sum + (1 << 31)) >> 32) as u8
}

/// The image a warp samples from.
struct Source<'a> {
    pixels: &'a [u8],
    width: usize,
    height: usize,
    channels: usize,
}

impl Source<'_> {
    /// The sample at top-left neighbour `corner` and fractions `f` with each neighbour
    /// checked: those outside the image count as 0.
    fn sample_at_border(&self, corner: [i64; 2], f: [u32; 2], out: &mut [u8]) {
        let [x, y] = corner;
        for (k, o) in out.iter_mut().enumerate() {
            *o = blend(f, [(x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1)].map(|(x, y)| self.at(x, y, k)));
        }
    }

    /// Channel `k` of pixel (x, y), or 0 outside the image.
    fn at(&self, x: i64, y: i64, k: usize) -> u8 {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            0
        } else {
            self.pixels[(y as usize * self.width + x as usize) * self.channels + k]
        }
    }
}

/// The warp for any channel count: the same positions as `warp_into`, every pixel through
/// the checked path.
fn warp_any(src: &[u8], width: usize, height: usize, channels: usize, inv: &Affine, out_w: usize, out: &mut [u8]) {
    let image = Source {
        pixels: src,
        width,
        height,
        channels,
    };
    let (step, starts) = fixed_point_rows(inv);
    for (y, row) in out.chunks_exact_mut(out_w * channels).enumerate() {
        let mut at = starts(y);
        for px in row.chunks_exact_mut(channels) {
            image.sample_at_border([at[0] >> 32, at[1] >> 32], fractions(at), px);
            at = [at[0] + step[0], at[1] + step[1]];
        }
    }
}

/// Whether every output pixel's source position stays within ±2³⁰ pixels, so the fixed-point
/// positions (32 fractional bits in an i64) cannot overflow. Only a nearly singular map
/// sends a crop that far.
fn positions_fit(inv: &Affine, out_w: usize, out_h: usize) -> bool {
    let limit = (1u64 << 30) as f64;
    [(0.0, 0.0), (out_w as f64, 0.0), (0.0, out_h as f64), (out_w as f64, out_h as f64)]
        .iter()
        .all(|&(x, y)| (0..2).all(|r| (inv[r][0] * x + inv[r][1] * y + inv[r][2]).abs() < limit))
}

/// The per-pixel step along a row, and each row's first position, in fixed point with 32
/// fractional bits.
fn fixed_point_rows(inv: &Affine) -> ([i64; 2], impl Fn(usize) -> [i64; 2] + '_) {
    let fixed = |v: f64| (v * (1u64 << 32) as f64).round() as i64;
    let step = [fixed(inv[0][0]), fixed(inv[1][0])];
    (step, move |y: usize| {
        [fixed(inv[0][1] * y as f64 + inv[0][2]), fixed(inv[1][1] * y as f64 + inv[1][2])]
    })
}

/// The top 16 fractional bits of a fixed-point position, x and y.
#[inline(always)]
fn fractions(at: [i64; 2]) -> [u32; 2] {
    at.map(|v| ((v >> 16) & 0xFFFF) as u32)
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

    /// A map that sends the crop absurdly far (a nearly singular fit) is refused, not
    /// computed with overflowing positions.
    #[test]
    fn a_nearly_singular_map_is_refused() {
        let img = pattern(20, 10);
        assert!(warp_affine(&img, 20, 10, 3, &[[1e-9, 0.0, 0.0], [0.0, 1e-9, 0.0]], 20, 10).is_none());
        assert!(warp_affine(&img, 20, 10, 3, &[[1e-3, 0.0, 0.0], [0.0, 1e-3, 0.0]], 20, 10).is_some());
    }

    /// The checked path for other channel counts computes what the 3-channel path does.
    #[test]
    fn any_channel_count_warps_as_three_channels_do() {
        let img = pattern(60, 50);
        let two: Vec<u8> = img.chunks(3).flat_map(|p| [p[0], p[2]]).collect();
        let m = [[0.9, 0.25, -10.5], [-0.25, 0.9, 12.25]];
        let three = warp_affine(&img, 60, 50, 3, &m, 40, 30).unwrap();
        let got = warp_affine(&two, 60, 50, 2, &m, 40, 30).unwrap();
        let want: Vec<u8> = three.chunks(3).flat_map(|p| [p[0], p[2]]).collect();
        assert_eq!(got, want);
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
            eprintln!("{file}: mean |diff| {mean:.5}, max {max}");
            assert!(mean < 0.05 && max <= 1, "{file}: mean |diff| {mean:.4}, max {max}");
        }
    }
}
