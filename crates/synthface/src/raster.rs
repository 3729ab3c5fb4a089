//! Painting a scene into pixels: the canonical frame placed in the image by a similarity, the
//! layers drawn tile by tile (each tile with only the layers whose boxes reach it), then blur,
//! noise and rounding to bytes.

use crate::scene::{Bounds, Scene, Shading, C};
use spherepipe_rng::Rng;
use std::sync::OnceLock;

/// Where the canonical frame lies in the image: p = R·s·(q − C) + origin.
pub(crate) struct Placement {
    /// cos and sin of the angle, times the scale.
    cos: f64,
    sin: f64,
    /// One over the scale squared (undoes the scale twice folded into cos and sin).
    inv_s2: f64,
    origin: [f64; 2],
}

impl Placement {
    /// Rotated by `angle` (radians), scaled by `scale`, the frame's centre at `origin`.
    pub(crate) fn new(angle: f64, scale: f64, origin: [f64; 2]) -> Placement {
        Placement {
            cos: angle.cos() * scale,
            sin: angle.sin() * scale,
            inv_s2: 1.0 / (scale * scale),
            origin,
        }
    }

    /// The image point of canonical `q`.
    pub(crate) fn to_image(&self, q: [f64; 2]) -> [f64; 2] {
        let (dx, dy) = (q[0] - C, q[1] - C);
        [
            self.cos * dx - self.sin * dy + self.origin[0],
            self.sin * dx + self.cos * dy + self.origin[1],
        ]
    }

    /// The canonical point of image pixel (px, py).
    pub(crate) fn to_canonical(&self, px: f64, py: f64) -> [f64; 2] {
        let (dx, dy) = (px - self.origin[0], py - self.origin[1]);
        [
            (self.cos * dx + self.sin * dy) * self.inv_s2 + C,
            (-self.sin * dx + self.cos * dy) * self.inv_s2 + C,
        ]
    }

    /// The canonical points of a tile's pixels, row by row: the tile's corner mapped once,
    /// the rest by steps along x and y.
    #[inline(always)]
    fn tile_points(&self, corner: [usize; 2], size: [usize; 2], xs: &mut Vec<f32>, ys: &mut Vec<f32>) {
        let [x0, y0] = self.to_canonical(corner[0] as f64, corner[1] as f64);
        // One pixel right and one down, in the canonical frame.
        let (right, down) = (
            [self.cos * self.inv_s2, -self.sin * self.inv_s2],
            [self.sin * self.inv_s2, self.cos * self.inv_s2],
        );
        xs.resize(size[0] * size[1], 0.0);
        ys.resize(size[0] * size[1], 0.0);
        for (row, (xr, yr)) in xs.chunks_exact_mut(size[0]).zip(ys.chunks_exact_mut(size[0])).enumerate() {
            let (rx, ry) = (x0 + down[0] * row as f64, y0 + down[1] * row as f64);
            for (col, (x, y)) in xr.iter_mut().zip(yr.iter_mut()).enumerate() {
                *x = (rx + right[0] * col as f64) as f32;
                *y = (ry + right[1] * col as f64) as f32;
            }
        }
    }

    /// The pixels [x0, y0, x1, y1] (inclusive, inside the image) that a canonical box can
    /// reach, or `None` when it reaches none.
    fn pixels(&self, b: Bounds, width: usize, height: usize) -> Option<[usize; 4]> {
        let [x0, y0, x1, y1] = b.0;
        if x0 > x1 || y0 > y1 {
            return None;
        }
        let corners = [[x0, y0], [x1, y0], [x0, y1], [x1, y1]].map(|q| self.to_image(q));
        let lo = |k: usize| corners.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min).floor();
        let hi = |k: usize| corners.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max).ceil();
        let (w, h) = (width as f64 - 1.0, height as f64 - 1.0);
        let (px0, py0, px1, py1) = (lo(0).max(0.0), lo(1).max(0.0), hi(0).min(w), hi(1).min(h));
        (px0 <= px1 && py0 <= py1).then_some([px0 as usize, py0 as usize, px1 as usize, py1 as usize])
    }
}

/// Side of the square tiles the painter culls layers by.
const TILE: usize = 16;

/// An image as three planes of f32 (R, G, B), row-major: the painter writes a tile's rows
/// as whole slices, and the blur runs along contiguous rows.
#[derive(Default)]
pub(crate) struct Planes {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) rgb: [Vec<f32>; 3],
}

/// One image to make: the scene, where it lies in the image, the image's size, and the blur
/// (σ in pixels, 0 for none) and pixel noise (standard deviation in grey levels, drawn from
/// `seed`) over it.
pub(crate) struct Frame<'a> {
    pub(crate) scene: &'a Scene,
    pub(crate) place: &'a Placement,
    pub(crate) size: [usize; 2],
    pub(crate) blur: f64,
    pub(crate) noise: f64,
    pub(crate) seed: u64,
}

/// The frame's bytes (interleaved RGB): painted, blurred, rounded with noise.
///
/// These are the render's hot loops, compiled twice: for any x86-64, and with AVX2 where the
/// CPU has it. Both give the same bits, because the loops use only correctly rounded IEEE
/// operations, compares and conversions (no fused multiply-add, no reordered sums): the
/// corpus for a seed does not depend on the machine.
pub(crate) fn pixels(frame: &Frame) -> Vec<u8> {
    SCRATCH.with_borrow_mut(|scratch| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, as just checked.
            return unsafe { pixels_avx2(scratch, frame) };
        }
        pixels_portable(scratch, frame)
    })
}

thread_local! {
    /// Each thread's working buffers, kept from image to image: a corpus is thousands of
    /// images of the same few sizes, and fresh buffers would be faulted in and zeroed each time.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The buffers one image is painted, blurred and rounded in.
#[derive(Default)]
pub(crate) struct Scratch {
    image: Planes,
    /// The blur's first pass; a plane's noise before it is added.
    tmp: Vec<f32>,
    /// The three planes' bytes before interleaving.
    bytes: Vec<u8>,
    /// A tile's canonical points and shading.
    xs: Vec<f32>,
    ys: Vec<f32>,
    shading: Shading,
    visible: Vec<u16>,
}

impl Scratch {
    /// The image last painted.
    #[cfg(test)]
    pub(crate) fn image(&self) -> &Planes {
        &self.image
    }
}

/// `pixels_portable` compiled with AVX2: the caller must have checked that the CPU has it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) fn pixels_avx2(scratch: &mut Scratch, frame: &Frame) -> Vec<u8> {
    pixels_portable(scratch, frame)
}

/// Paint, blur, noise and rounding, inlined into each caller so that the AVX2 wrapper
/// compiles all of it for AVX2.
#[inline(always)]
pub(crate) fn pixels_portable(scratch: &mut Scratch, frame: &Frame) -> Vec<u8> {
    paint_tiles(scratch, frame.scene, frame.place, frame.size, true);
    if frame.blur > 0.0 {
        blur(&mut scratch.image, &mut scratch.tmp, frame.blur);
    }
    to_bytes(scratch, frame.noise, frame.seed)
}

/// The scene's colour at every pixel into `scratch.image`, each tile painted with only the
/// layers whose pixel boxes reach it, or with every layer unless `cull` (to test that culling
/// changes nothing).
#[inline(always)]
pub(crate) fn paint_tiles(scratch: &mut Scratch, scene: &Scene, place: &Placement, size: [usize; 2], cull: bool) {
    let [width, height] = size;
    let boxes: Vec<Option<[usize; 4]>> = scene.bounds.iter().map(|b| place.pixels(*b, width, height)).collect();
    let Scratch {
        image,
        xs,
        ys,
        shading,
        visible,
        ..
    } = scratch;
    // Every pixel is written below, so the planes need no clearing.
    (image.width, image.height) = (width, height);
    image.rgb.iter_mut().for_each(|p| p.resize(width * height, 0.0));
    for ty in (0..height).step_by(TILE) {
        for tx in (0..width).step_by(TILE) {
            let (tw, th) = (TILE.min(width - tx), TILE.min(height - ty));
            visible.clear();
            for (i, b) in boxes.iter().enumerate() {
                let reaches = matches!(b, Some(b) if b[0] < tx + tw && b[2] >= tx && b[1] < ty + th && b[3] >= ty);
                if reaches || !cull {
                    visible.push(i as u16);
                }
            }
            place.tile_points([tx, ty], [tw, th], xs, ys);
            scene.shade(visible, xs, ys, shading);
            for (plane, shaded) in image.rgb.iter_mut().zip(&shading.rgb) {
                for (row, line) in shaded.chunks_exact(tw).enumerate() {
                    let o = (ty + row) * width + tx;
                    plane[o..o + tw].copy_from_slice(line);
                }
            }
        }
    }
}

/// Separable Gaussian blur of every plane (edges clamped), in place.
#[inline(always)]
pub(crate) fn blur(image: &mut Planes, tmp: &mut Vec<f32>, sigma: f64) {
    let radius = (sigma * 3.0).ceil() as usize;
    let weights: Vec<f64> = (0..=2 * radius)
        .map(|k| {
            let d = k as f64 - radius as f64;
            (-(d * d) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let norm: f64 = weights.iter().sum();
    let kernel: Vec<f32> = weights.iter().map(|w| (w / norm) as f32).collect();
    let (width, height) = (image.width, image.height);
    tmp.resize(width * height, 0.0);
    for plane in image.rgb.iter_mut() {
        for (src, dst) in plane.chunks_exact(width).zip(tmp.chunks_exact_mut(width)) {
            blur_row(src, dst, &kernel);
        }
        // Down the columns: each output row is a weighted sum of whole input rows.
        for (y, out) in plane.chunks_exact_mut(width).enumerate() {
            out.fill(0.0);
            for (k, &wk) in kernel.iter().enumerate() {
                let sy = (y + k).saturating_sub(radius).min(height - 1);
                for (o, s) in out.iter_mut().zip(&tmp[sy * width..(sy + 1) * width]) {
                    *o += wk * s;
                }
            }
        }
    }
}

/// One row along x: the interior as whole-slice sums (vectorised), the edges clamped.
#[inline(always)]
fn blur_row(src: &[f32], dst: &mut [f32], kernel: &[f32]) {
    let (width, radius) = (src.len(), kernel.len() / 2);
    let clamped = |x: usize| -> f32 {
        kernel
            .iter()
            .enumerate()
            .map(|(k, &wk)| wk * src[(x + k).saturating_sub(radius).min(width - 1)])
            .sum()
    };
    if width <= 2 * radius {
        for (x, d) in dst.iter_mut().enumerate() {
            *d = clamped(x);
        }
        return;
    }
    let inner = &mut dst[radius..width - radius];
    inner.fill(0.0);
    for (k, &wk) in kernel.iter().enumerate() {
        for (o, s) in inner.iter_mut().zip(&src[k..]) {
            *o += wk * s;
        }
    }
    for x in (0..radius).chain(width - radius..width) {
        dst[x] = clamped(x);
    }
}

/// Entries of the noise table: 12 bits of a random word choose one.
const NORMAL_STEPS: usize = 4096;

/// The standard normal's quantiles at (k + ½)/4096, rescaled to a standard deviation of
/// exactly 1: a table lookup per pixel instead of a logarithm, a root and a cosine.
fn normal_table() -> &'static [f32; NORMAL_STEPS] {
    static TABLE: OnceLock<Box<[f32; NORMAL_STEPS]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // The CDF by the trapezoid rule on a fine grid, inverted by linear interpolation.
        let pdf = |z: f64| (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let (step, mut z, mut cdf) = (1e-4, -9.0f64, 0.0f64);
        let mut quantiles = vec![0.0f64; NORMAL_STEPS];
        for (k, q) in quantiles.iter_mut().enumerate() {
            let target = (k as f64 + 0.5) / NORMAL_STEPS as f64;
            loop {
                let next = cdf + step * (pdf(z) + pdf(z + step)) / 2.0;
                if next >= target {
                    *q = z + step * (target - cdf) / (next - cdf);
                    break;
                }
                (z, cdf) = (z + step, next);
            }
        }
        let sd = (quantiles.iter().map(|q| q * q).sum::<f64>() / NORMAL_STEPS as f64).sqrt();
        let mut table = Box::new([0f32; NORMAL_STEPS]);
        for (t, q) in table.iter_mut().zip(&quantiles) {
            *t = (q / sd) as f32;
        }
        table
    })
}

/// Interleaved RGB bytes, rounded after adding Gaussian noise of standard deviation `sd`
/// (grey levels) drawn from `seed`: five table draws per random word, plane after plane.
#[inline(always)]
pub(crate) fn to_bytes(scratch: &mut Scratch, sd: f64, seed: u64) -> Vec<u8> {
    let Scratch { image, tmp, bytes, .. } = scratch;
    let n = image.width * image.height;
    // Rounding adds 2²³ to the clamped value, which leaves the nearest integer (halves to
    // even) in the low mantissa bits: no call to `roundf` and no NaN checks, so the loop
    // vectorises.
    let byte = |v: f32| ((v.clamp(0.0, 255.0) + 8_388_608.0).to_bits() & 0xFF) as u8;
    let (table, sd, mut r) = (normal_table(), sd as f32, Rng::new(seed));
    tmp.resize(n, 0.0);
    bytes.resize(3 * n, 0);
    for (plane, out) in image.rgb.iter().zip(bytes.chunks_exact_mut(n)) {
        if sd > 0.0 {
            // The draws into a buffer of their own (write-only, the lookups are scalar), then
            // added and rounded in one loop that vectorises.
            let draw = |bits: u64, j: usize| table[((bits >> (12 * j)) as usize) & (NORMAL_STEPS - 1)] * sd;
            let mut fives = tmp.chunks_exact_mut(5);
            for chunk in &mut fives {
                let bits = r.next_u64();
                for (j, v) in chunk.iter_mut().enumerate() {
                    *v = draw(bits, j);
                }
            }
            let bits = r.next_u64();
            for (j, v) in fives.into_remainder().iter_mut().enumerate() {
                *v = draw(bits, j);
            }
            for ((b, &v), &e) in out.iter_mut().zip(plane).zip(tmp.iter()) {
                *b = byte(v + e);
            }
        } else {
            for (b, &v) in out.iter_mut().zip(plane) {
                *b = byte(v);
            }
        }
    }
    let (r, rest) = bytes.split_at(n);
    let (g, b) = rest.split_at(n);
    let mut out = vec![0u8; 3 * n];
    for (((o, &r), &g), &b) in out.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
        o.copy_from_slice(&[r, g, b]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of one plane repeated (R = G = B), for the blur tests.
    fn grey(width: usize, height: usize, at: impl Fn(usize, usize) -> f32) -> Planes {
        let plane: Vec<f32> = (0..width * height).map(|i| at(i % width, i / width)).collect();
        Planes {
            width,
            height,
            rgb: [plane.clone(), plane.clone(), plane],
        }
    }

    #[test]
    fn blur_preserves_a_constant_image_and_smooths_an_edge() {
        for w in [3, 9, 40] {
            let mut flat = grey(w, 4, |_, _| 100.0);
            blur(&mut flat, &mut Vec::new(), 1.0);
            assert!(flat.rgb.iter().flatten().all(|x| (x - 100.0).abs() < 1e-3), "{w}");
        }
        let mut step = grey(20, 3, |x, _| if x < 10 { 0.0 } else { 255.0 });
        blur(&mut step, &mut Vec::new(), 1.0);
        let row = &step.rgb[1][20..40];
        assert!(
            row.windows(2).all(|p| p[0] <= p[1] + 1e-3) && row[9] > 0.0 && row[10] < 255.0,
            "{row:?}"
        );
        // Symmetric about the edge: 255 − left mirror equals right.
        assert!((row[9] + row[10] - 255.0).abs() < 1e-3, "{row:?}");
        // Down the columns as along the rows.
        let mut step = grey(3, 20, |_, y| if y < 10 { 0.0 } else { 255.0 });
        blur(&mut step, &mut Vec::new(), 1.0);
        let column: Vec<f32> = (0..20).map(|y| step.rgb[2][y * 3 + 1]).collect();
        assert!(
            (column[9] - row[9]).abs() < 1e-3 && (column[12] - row[12]).abs() < 1e-3,
            "{column:?}"
        );
    }

    /// The interior fast path equals the clamped sum written out by hand.
    #[test]
    fn a_blurred_row_is_the_weighted_sum_of_its_neighbours() {
        let (w, sigma) = (12, 0.8);
        let src: Vec<f32> = (0..w).map(|i| ((i * 37) % 101) as f32).collect();
        let mut dst = vec![0f32; w];
        let r = (sigma * 3.0f64).ceil() as usize;
        let weights: Vec<f64> = (0..=2 * r)
            .map(|k| (-((k as f64 - r as f64).powi(2)) / (2.0 * sigma * sigma)).exp())
            .collect();
        let norm: f64 = weights.iter().sum();
        let kernel: Vec<f32> = weights.iter().map(|x| (x / norm) as f32).collect();
        blur_row(&src, &mut dst, &kernel);
        for (x, &got) in dst.iter().enumerate() {
            let want: f64 = (0..=2 * r)
                .map(|k| {
                    let sx = (x as isize + k as isize - r as isize).clamp(0, w as isize - 1) as usize;
                    weights[k] / norm * src[sx] as f64
                })
                .sum();
            assert!((got as f64 - want).abs() < 1e-3, "x {x}");
        }
    }

    #[test]
    fn the_noise_table_is_a_standard_normal() {
        let t = normal_table();
        let n = NORMAL_STEPS as f64;
        let mean = t.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = t.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{mean} {var}");
        assert!(t.windows(2).all(|p| p[0] < p[1]), "increasing");
        // Quantiles: the median pair straddles 0, and Φ(−1) = 0.158655 puts entry 649.36 at −1
        // (before the ~0.1% rescale).
        assert!(t[2047] < 0.0 && t[2048] > 0.0 && (t[2047] + t[2048]).abs() < 1e-6);
        assert!((t[649] as f64 + 1.0).abs() < 0.01, "{}", t[649]);
        // Noise of sd 4 around 128 has sd 4 in the bytes.
        let mut scratch = Scratch {
            image: Planes {
                width: 200,
                height: 100,
                rgb: std::array::from_fn(|_| vec![128.0; 20_000]),
            },
            ..Scratch::default()
        };
        let bytes = to_bytes(&mut scratch, 4.0, 9);
        let m = bytes.iter().map(|&b| b as f64).sum::<f64>() / 60_000.0;
        let sd = (bytes.iter().map(|&b| (b as f64 - m).powi(2)).sum::<f64>() / 60_000.0).sqrt();
        assert!((m - 128.0).abs() < 0.1 && (sd - 4.0).abs() < 0.1, "{m} {sd}");
    }

    #[test]
    fn placement_maps_there_and_back() {
        let p = Placement::new(0.3, 1.2, [130.0, 118.0]);
        let q = [97.0, 140.5];
        let i = p.to_image(q);
        let back = p.to_canonical(i[0], i[1]);
        assert!((back[0] - q[0]).abs() < 1e-9 && (back[1] - q[1]).abs() < 1e-9);
        assert_eq!(p.to_image([C, C]), [130.0, 118.0]);
    }
}
