//! Small PNG charts for reports: line and scatter series on linear or log axes, with labelled
//! ticks, axis titles, a title and a legend. Drawn with the `image` crate and the public-domain
//! 8×8 bitmap font of `font8x8`, so they need no system fonts or C libraries and render the
//! same on every machine (byte-identical PNGs for the same data: artifacts stay reproducible).

#![warn(missing_docs)]

use anyhow::Context;
use font8x8::UnicodeFonts as _;
use image::{Rgb, RgbImage};
use std::path::Path;

/// Chart width in pixels.
pub const W: u32 = 800;
/// Chart height in pixels.
pub const H: u32 = 520;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 58.0;

/// A colour per series, distinguishable in print.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// Points joined by a line.
    Line,
    /// Separate dots.
    Dots,
}

/// One named set of points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its legend entry.
    pub name: String,
    /// RGB colour.
    pub color: [u8; 3],
    /// Line or dots.
    pub style: Style,
    /// (x, y) in data units.
    pub points: Vec<(f64, f64)>,
}

/// A chart: axes with their ranges and labels, and the series on them.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Heading above the plot.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label beside the y axis.
    pub y_label: String,
    /// The x range shown.
    pub x: (f64, f64),
    /// The y range shown.
    pub y: (f64, f64),
    /// Base-10 logarithmic x axis (x must be > 0).
    pub log_x: bool,
    /// Legend in the lower right corner (for curves that hug the top) rather than the upper.
    pub legend_low: bool,
    /// What is drawn, in legend order.
    pub series: Vec<Series>,
}

/// Draws `text` with its top-left corner at (x, y), `scale` pixels per font pixel.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, scale: i64, c: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(img, x + (k as i64 * 8 + col) * scale + dx, y + row as i64 * scale + dy, c);
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Draws a straight line from one pixel position to another (two pixels wide if `thick`).
pub fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>, thick: bool) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = ((x0 + (x1 - x0) * t).round() as i64, (y0 + (y1 - y0) * t).round() as i64);
        put(img, x, y, c);
        if thick {
            put(img, x + 1, y, c);
            put(img, x, y + 1, c);
        }
    }
}

/// Draws a filled square dot of half-width `r` centred on (x, y).
pub fn dot(img: &mut RgbImage, x: f64, y: f64, r: i64, c: Rgb<u8>) {
    for dy in -r..=r {
        for dx in -r..=r {
            if dx * dx + dy * dy <= r * r {
                put(img, x.round() as i64 + dx, y.round() as i64 + dy, c);
            }
        }
    }
}

/// Tick values: about five "nice" steps (1, 2 or 5 × 10^k) across [lo, hi].
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick label: short, without float noise.
pub fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let e = a.log10().floor() as i32;
        let m = v / 10f64.powi(e);
        return if (m - m.round()).abs() < 1e-9 {
            format!("{}e{e}", m.round())
        } else {
            format!("{m:.1}e{e}")
        };
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Chart {
    fn map_x(&self, x: f64) -> f64 {
        let (lo, hi, v) = if self.log_x {
            (self.x.0.log10(), self.x.1.log10(), x.max(1e-300).log10())
        } else {
            (self.x.0, self.x.1, x)
        };
        LEFT + (W as f64 - LEFT - RIGHT) * (v - lo) / (hi - lo).max(1e-300)
    }
    fn map_y(&self, y: f64) -> f64 {
        H as f64 - BOTTOM - (H as f64 - TOP - BOTTOM) * (y - self.y.0) / (self.y.1 - self.y.0).max(1e-300)
    }

    /// The chart as an 800×520 image.
    pub fn render(&self) -> RgbImage {
        let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
        let black = Rgb([0, 0, 0]);
        let grid = Rgb([225, 225, 225]);
        let (px0, px1) = (LEFT, W as f64 - RIGHT);
        let (py0, py1) = (H as f64 - BOTTOM, TOP);
        let xt: Vec<f64> = if self.log_x {
            let (a, b) = (self.x.0.log10().ceil() as i32, self.x.1.log10().floor() as i32);
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            ticks(self.x.0, self.x.1)
        };
        for &t in &xt {
            let x = self.map_x(t);
            line(&mut img, (x, py0), (x, py1), grid, false);
            line(&mut img, (x, py0), (x, py0 + 5.0), black, false);
            let l = label(t);
            text(&mut img, x as i64 - 4 * l.len() as i64, py0 as i64 + 9, &l, 1, black);
        }
        for t in ticks(self.y.0, self.y.1) {
            let y = self.map_y(t);
            line(&mut img, (px0, y), (px1, y), grid, false);
            line(&mut img, (px0 - 5.0, y), (px0, y), black, false);
            let l = label(t);
            text(&mut img, px0 as i64 - 9 - 8 * l.len() as i64, y as i64 - 4, &l, 1, black);
        }
        line(&mut img, (px0, py0), (px1, py0), black, false);
        line(&mut img, (px0, py0), (px0, py1), black, false);
        text(
            &mut img,
            (W as i64 - 16 * self.title.chars().count() as i64) / 2,
            10,
            &self.title,
            2,
            black,
        );
        let xl = self.x_label.chars().count() as i64;
        text(
            &mut img,
            (px0 + px1) as i64 / 2 - 8 * xl / 2,
            H as i64 - 24,
            &self.x_label,
            1,
            black,
        );
        // The y title, one character per line down the left edge.
        for (k, ch) in self.y_label.chars().enumerate() {
            text(&mut img, 6, TOP as i64 + 10 * k as i64, &ch.to_string(), 1, black);
        }
        for s in &self.series {
            let c = Rgb(s.color);
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite() && (!self.log_x || p.0 > 0.0))
                .map(|&(x, y)| (self.map_x(x), self.map_y(y)))
                .collect();
            match s.style {
                Style::Line => pts.windows(2).for_each(|w| line(&mut img, w[0], w[1], c, true)),
                Style::Dots => pts.iter().for_each(|&(x, y)| dot(&mut img, x, y, 2, c)),
            }
        }
        // Legend, top right inside the plot.
        let named: Vec<&Series> = self.series.iter().filter(|s| !s.name.is_empty()).collect();
        let width = named.iter().map(|s| s.name.chars().count()).max().unwrap_or(0) as i64 * 8 + 30;
        for (k, s) in named.iter().enumerate() {
            let top = if self.legend_low {
                py0 as i64 - 12 - 14 * named.len() as i64
            } else {
                py1 as i64 + 8
            };
            let (x, y) = (px1 as i64 - width - 6, top + 14 * k as i64);
            for dx in 0..16 {
                for dy in 2..6 {
                    put(&mut img, x + dx, y + dy, Rgb(s.color));
                }
            }
            text(&mut img, x + 22, y, &s.name, 1, black);
        }
        img
    }

    /// Renders the chart and writes it as a PNG.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        self.render().save(path).with_context(|| format!("writing {}", path.display()))
    }
}

/// Features on the unit circle (2-D) or sphere (3-D, orthographic view along the features' mean
/// direction, far side faded), one
/// colour per class: the paper's Fig. 2 / Fig. 5 view of how A-Softmax separates classes by
/// angle. `labels` index the palette (cycled).
pub fn feature_plot(path: &Path, title: &str, features: &[Vec<f64>], labels: &[usize]) -> anyhow::Result<()> {
    let side = H;
    let mut img = RgbImage::from_pixel(side, side, Rgb([255, 255, 255]));
    let c = side as f64 / 2.0;
    let r = side as f64 * 0.4;
    let grey = Rgb([170, 170, 170]);
    for k in 0..720 {
        let (a0, a1) = (
            k as f64 * std::f64::consts::PI / 360.0,
            (k + 1) as f64 * std::f64::consts::PI / 360.0,
        );
        line(
            &mut img,
            (c + r * a0.cos(), c - r * a0.sin()),
            (c + r * a1.cos(), c - r * a1.sin()),
            grey,
            false,
        );
    }
    let unit = |f: &Vec<f64>| -> Option<Vec<f64>> {
        let n = f.iter().map(|v| v * v).sum::<f64>().sqrt();
        (n > 0.0 && n.is_finite()).then(|| f.iter().map(|x| x / n).collect())
    };
    // 3-D: look along the features' mean direction, so most of them face the viewer.
    let mut w = [0.0f64; 3];
    for v in features.iter().filter_map(unit).filter(|v| v.len() >= 3) {
        (0..3).for_each(|k| w[k] += v[k]);
    }
    let norm = |a: [f64; 3]| {
        let n = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
        if n > 1e-12 {
            a.map(|x| x / n)
        } else {
            [0.0, 0.0, 1.0]
        }
    };
    let cross = |a: [f64; 3], b: [f64; 3]| [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
    let w = norm(w);
    let e = if w[0].abs() < 0.9 { [1.0, 0.0, 0.0] } else { [0.0, 1.0, 0.0] };
    let u = norm(cross(e, w));
    let v = cross(w, u);
    let proj = |a: [f64; 3], b: &[f64]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let mut pts: Vec<(f64, f64, f64, usize)> = features
        .iter()
        .zip(labels)
        .filter_map(|(f, &l)| {
            let p = unit(f)?;
            Some(match p.len() {
                2 => (p[0], p[1], 1.0, l),
                _ => {
                    let q = [p[0], p[1], p.get(2).copied().unwrap_or(0.0)];
                    (proj(u, &q), proj(v, &q), proj(w, &q), l)
                }
            })
        })
        .collect();
    // Far side first, so the near side is drawn over it.
    pts.sort_by(|a, b| a.2.total_cmp(&b.2));
    for (x, y, z, l) in pts {
        let base = PALETTE[l % PALETTE.len()];
        let col = if z < 0.0 {
            base.map(|v| ((v as u16 + 2 * 255) / 3) as u8)
        } else {
            base
        };
        dot(&mut img, c + r * x, c - r * y, 3, Rgb(col));
    }
    text(&mut img, 10, 10, title, 2, Rgb([0, 0, 0]));
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_inside() {
        assert_eq!(ticks(0.0, 1.0), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(ticks(0.0, 240.0), [0.0, 50.0, 100.0, 150.0, 200.0]);
        assert_eq!(label(0.6000000000000001), "0.6");
        assert_eq!(label(1e-6), "1e-6");
        assert_eq!(label(250000.0), "2.5e5");
    }

    #[test]
    fn text_and_series_land_where_they_should() {
        let mut img = RgbImage::from_pixel(40, 20, Rgb([255, 255, 255]));
        text(&mut img, 0, 0, "I", 1, Rgb([0, 0, 0]));
        // font8x8's "I" has its vertical bar in columns 2..4 of row 3.
        let black: Vec<u32> = (0..8).filter(|&x| img.get_pixel(x, 3).0 == [0, 0, 0]).collect();
        assert!(!black.is_empty() && black.iter().all(|&x| (1..6).contains(&x)), "{black:?}");
        let chart = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x: (0.0, 1.0),
            y: (0.0, 1.0),
            log_x: false,
            legend_low: false,
            series: vec![Series {
                name: String::new(),
                color: [255, 0, 0],
                style: Style::Dots,
                points: vec![(0.5, 0.5)],
            }],
        };
        let img = chart.render();
        let (cx, cy) = (
            (LEFT + (W as f64 - LEFT - RIGHT) / 2.0) as u32,
            (TOP + (H as f64 - TOP - BOTTOM) / 2.0) as u32,
        );
        assert_eq!(img.get_pixel(cx, cy).0, [255, 0, 0]);
        let d = tempfile::tempdir().unwrap();
        chart.save(&d.path().join("c.png")).unwrap();
        assert_eq!(image::open(d.path().join("c.png")).unwrap().width(), W);
    }
}
