//! The training curve as a PNG: loss (blue, scaled to its maximum) and accuracy (green, 0..1)
//! against the step, on a light grid. Drawn with the image crate: no font or system library.

use anyhow::Context;
use image::{Rgb, RgbImage};

const W: u32 = 800;
const H: u32 = 400;
const PAD: u32 = 30;

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < W && (py as u32) < H {
                img.put_pixel(px as u32, py as u32, c);
            }
        }
    }
}

/// `points`: (loss, accuracy) per step.
pub fn draw(path: &std::path::Path, points: &[(f64, f64)]) -> anyhow::Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let (x0, x1, y0, y1) = (PAD as f64, (W - PAD) as f64, (H - PAD) as f64, PAD as f64);
    for k in 0..=10 {
        let y = y0 + (y1 - y0) * k as f64 / 10.0;
        line(&mut img, (x0, y), (x1, y), Rgb([230, 230, 230]));
    }
    line(&mut img, (x0, y0), (x1, y0), Rgb([0, 0, 0]));
    line(&mut img, (x0, y0), (x0, y1), Rgb([0, 0, 0]));
    let max_loss = points.iter().map(|p| p.0).filter(|v| v.is_finite()).fold(1e-9, f64::max);
    let n = points.len().max(2) - 1;
    let at = |i: usize, v: f64| (x0 + (x1 - x0) * i as f64 / n as f64, y0 + (y1 - y0) * v.clamp(0.0, 1.0));
    for i in 1..points.len() {
        line(
            &mut img,
            at(i - 1, points[i - 1].0 / max_loss),
            at(i, points[i].0 / max_loss),
            Rgb([30, 90, 220]),
        );
        line(&mut img, at(i - 1, points[i - 1].1), at(i, points[i].1), Rgb([20, 160, 60]));
    }
    img.save(path).with_context(|| format!("writing {}", path.display()))
}
