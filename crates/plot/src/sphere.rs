//! Features on the unit circle (2-D) or sphere (3-D): the paper's Fig. 2 / Fig. 5 view of how
//! A-Softmax separates classes by angle.

use crate::{drawing, font, png_of, save_both, svg_of, PALETTE};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Features drawn on the unit circle or sphere, one colour per class. 3-D features are seen
/// orthographically along their mean direction, so most face the viewer; the far side is
/// faded and drawn first.
#[derive(Debug, Clone)]
pub struct Sphere {
    /// Heading above the plot.
    pub title: String,
    /// One feature per point (2 or 3 values; each is normalised to unit length).
    pub features: Vec<Vec<f64>>,
    /// The class of each feature, an index into the palette (cycled).
    pub labels: Vec<usize>,
}

/// Side of the square figure in pixels.
const SIDE: u32 = 520;

type Vec3 = [f64; 3];

fn normalised(a: Vec3) -> Vec3 {
    let n = dot(a, a).sqrt();
    if n > 1e-12 {
        a.map(|x| x / n)
    } else {
        [0.0, 0.0, 1.0]
    }
}

fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// `f` scaled to unit length, as a 3-vector (2-D features get z = 0); None for a zero or
/// non-finite feature.
fn unit(f: &[f64]) -> Option<Vec3> {
    let n = f.iter().map(|v| v * v).sum::<f64>().sqrt();
    (n > 0.0 && n.is_finite()).then(|| [0, 1, 2].map(|k| f.get(k).copied().unwrap_or(0.0) / n))
}

impl Sphere {
    /// (x, y, depth, class) per feature on the view plane, far side first.
    pub(crate) fn projected(&self) -> Vec<(f64, f64, f64, usize)> {
        let flat = self.features.iter().all(|f| f.len() < 3);
        // Look along the mean direction (the plane of the circle for 2-D).
        let w = if flat {
            [0.0, 0.0, 1.0]
        } else {
            normalised(
                self.features
                    .iter()
                    .filter_map(|f| unit(f))
                    .fold([0.0; 3], |s, v| [0, 1, 2].map(|k| s[k] + v[k])),
            )
        };
        let e = if w[0].abs() < 0.9 { [1.0, 0.0, 0.0] } else { [0.0, 1.0, 0.0] };
        let u = if flat { [1.0, 0.0, 0.0] } else { normalised(cross(e, w)) };
        let v = cross(w, u);
        let mut pts: Vec<_> = self
            .features
            .iter()
            .zip(&self.labels)
            .filter_map(|(f, &l)| unit(f).map(|p| (dot(u, p), dot(v, p), if flat { 1.0 } else { dot(w, p) }, l)))
            .collect();
        pts.sort_by(|a, b| a.2.total_cmp(&b.2));
        pts
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(drawing)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (font::FAMILY, 20))
            .margin(16)
            .build_cartesian_2d(-1.1f64..1.1f64, -1.1f64..1.1f64)
            .map_err(drawing)?;
        let circle = (0..=360).map(|d| (d as f64).to_radians()).map(|a| (a.cos(), a.sin()));
        chart
            .draw_series(LineSeries::new(circle, RGBColor(170, 170, 170)))
            .map_err(drawing)?;
        let dots = self.projected().into_iter().map(|(x, y, z, l)| {
            let base = PALETTE[l % PALETTE.len()];
            let c = if z < 0.0 {
                base.map(|v| ((v as u16 + 2 * 255) / 3) as u8)
            } else {
                base
            };
            Circle::new((x, y), 3, RGBColor(c[0], c[1], c[2]).filled())
        });
        chart.draw_series(dots).map_err(drawing)?;
        Ok(())
    }

    /// The figure as an SVG document.
    pub fn svg(&self) -> anyhow::Result<String> {
        svg_of((SIDE, SIDE), |root| self.draw(root))
    }

    /// The figure as a 520×520 image.
    pub fn png(&self) -> anyhow::Result<RgbImage> {
        png_of((SIDE, SIDE), |root| self.draw(root))
    }

    /// Writes `<stem>.svg` and `<stem>.png` into `dir`.
    pub fn save(&self, dir: &Path, stem: &str) -> anyhow::Result<()> {
        save_both(dir, stem, self.svg(), self.png())
    }
}
