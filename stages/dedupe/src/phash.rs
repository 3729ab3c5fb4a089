//! A DCT perceptual hash: 32×32 grey thumbnail, 2-D DCT-II, the 8×8 lowest frequencies (DC
//! excluded from the median), one bit per coefficient above the median.

use image::GrayImage;

/// The 64-bit perceptual hash of `img`.
pub fn phash(img: &GrayImage) -> u64 {
    let small = image::imageops::resize(img, 32, 32, image::imageops::FilterType::Triangle);
    let px: Vec<f64> = small.pixels().map(|p| p.0[0] as f64).collect();
    let n = 32;
    let cos: Vec<f64> = (0..8)
        .flat_map(|u| (0..n).map(move |x| ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2.0 * n as f64)).cos()))
        .collect();
    // Rows first (8 frequencies per row), then columns.
    let mut rows = vec![0.0; n * 8];
    for y in 0..n {
        for u in 0..8 {
            rows[y * 8 + u] = (0..n).map(|x| px[y * n + x] * cos[u * n + x]).sum();
        }
    }
    let mut coef = [0.0; 64];
    for v in 0..8 {
        for u in 0..8 {
            coef[v * 8 + u] = (0..n).map(|y| rows[y * 8 + u] * cos[v * n + y]).sum();
        }
    }
    let mut ac: Vec<f64> = coef[1..].to_vec();
    ac.sort_by(f64::total_cmp);
    let median = ac[ac.len() / 2];
    coef.iter()
        .enumerate()
        .fold(0u64, |h, (i, c)| if *c > median { h | (1 << i) } else { h })
}

/// Bits that differ between two hashes: near-duplicates differ in few.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture with structure at several scales: a few soft blobs and a gradient.
    fn scene(shift: f64, bright: f64) -> GrayImage {
        let blobs = [
            (30.0, 25.0, 12.0, 90.0),
            (80.0, 40.0, 20.0, -70.0),
            (55.0, 75.0, 15.0, 60.0),
            (100.0, 80.0, 9.0, -50.0),
            (20.0, 85.0, 18.0, 40.0),
        ];
        GrayImage::from_fn(120, 100, |x, y| {
            let (x, y) = (x as f64 + shift, y as f64);
            let mut v = 90.0 + 0.6 * x + bright;
            for (bx, by, r, a) in blobs {
                v += a * (-((x - bx).powi(2) + (y - by).powi(2)) / (2.0 * r * r)).exp();
            }
            image::Luma([v.clamp(0.0, 255.0) as u8])
        })
    }

    #[test]
    fn near_copies_are_close_and_other_images_far() {
        let a = phash(&scene(0.0, 0.0));
        assert_eq!(hamming(a, phash(&scene(0.0, 0.0))), 0);
        assert!(hamming(a, phash(&scene(0.0, 20.0))) <= 2, "brightness");
        let resized = image::imageops::resize(&scene(0.0, 0.0), 240, 200, image::imageops::FilterType::Triangle);
        let d = hamming(a, phash(&resized));
        assert!(d <= 6, "resize: {d}");
        let other = GrayImage::from_fn(120, 100, |x, y| image::Luma([((x * 7 + y * y) % 256) as u8]));
        assert!(hamming(a, phash(&other)) > 16);
    }

    #[test]
    fn hamming_counts_bits() {
        assert_eq!(hamming(0b1011, 0b0001), 2);
        assert_eq!(hamming(u64::MAX, 0), 64);
    }
}
