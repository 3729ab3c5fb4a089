//! The report's charts, drawn with `plotters`: line and scatter series on a linear or a base-10
//! logarithmic x axis (a secondary y axis where two quantities share a chart), and the feature
//! sphere of the paper's Fig. 2 / Fig. 5.
//!
//! Every figure comes out two ways: **SVG**, where text stays text (the viewer's sans-serif
//! draws it, so no font file is needed) and which `report.md` embeds, and **PNG**, for image
//! viewers and slides, whose text is drawn from a DejaVu Sans subset compiled into this crate
//! (`fonts/`, with its licence). No system fonts or C libraries are needed, and the same data
//! gives the same bytes on every machine, so artifacts stay reproducible. All axis labels read
//! horizontally: the y axis's name stands above it rather than turned on its side.

#![warn(missing_docs)]

mod font;
mod sphere;

pub use sphere::Sphere;

use anyhow::Context;
use image::RgbImage;
use plotters::chart::DualCoordChartContext;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Chart width in pixels (SVG user units and PNG pixels alike).
pub const W: u32 = 800;
/// Chart height in pixels.
pub const H: u32 = 520;

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

/// How data values map onto the x axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Evenly.
    Linear,
    /// By their base-10 logarithm, ticks at the powers of ten (values must be > 0; others are
    /// left out): how face-verification ROCs show FARs from 10⁻⁶ to 1.
    Log10,
}

/// Where the legend box sits inside the plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Corner {
    /// Top right, for curves that fall.
    UpperRight,
    /// Bottom right, for curves that hug the top.
    LowerRight,
    /// Halfway up on the right, for one curve that falls and one that rises.
    MiddleRight,
}

/// One named set of points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its legend entry (empty: none).
    pub name: String,
    /// RGB colour.
    pub color: [u8; 3],
    /// Line or dots.
    pub style: Style,
    /// (x, y) in data units; non-finite points are left out.
    pub points: Vec<(f64, f64)>,
    /// Measured against the secondary (right-hand) y axis.
    pub right: bool,
}

impl Series {
    /// A line series on the primary y axis.
    pub fn line(name: &str, color: [u8; 3], points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            color,
            style: Style::Line,
            points,
            right: false,
        }
    }
}

/// An axis: its name and the range shown.
#[derive(Debug, Clone)]
pub struct Axis {
    /// What it measures, written horizontally beside the axis.
    pub label: String,
    /// (low, high) in data units.
    pub range: (f64, f64),
}

impl Axis {
    /// An axis named `label` showing `lo..hi`.
    pub fn new(label: &str, lo: f64, hi: f64) -> Self {
        Axis {
            label: label.into(),
            range: (lo, hi),
        }
    }
}

/// A chart: axes with their ranges and labels, and the series on them.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Heading above the plot.
    pub title: String,
    /// The horizontal axis.
    pub x: Axis,
    /// How x values are spaced.
    pub x_scale: Scale,
    /// The left-hand vertical axis.
    pub y: Axis,
    /// A right-hand vertical axis, for series with `right` set.
    pub y2: Option<Axis>,
    /// Where the legend goes.
    pub legend: Corner,
    /// What is drawn, in legend order.
    pub series: Vec<Series>,
}

/// Height of the band above a chart that holds its title and its y axes' names.
const TOP_BAND: u32 = 52;

/// `title`, centred at the top of a figure `width` wide.
pub(crate) fn draw_title<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, width: u32) -> anyhow::Result<()> {
    let style = TextStyle::from((font::FAMILY, 22).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(title, (width as i32 / 2, 10), style)).map_err(drawing)
}

/// The error a plotters drawing call gives, as text (its type differs by backend).
fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e}")
}

/// Draws `figure` onto an SVG document.
pub(crate) fn svg_of(size: (u32, u32), figure: impl Fn(&DrawingArea<SVGBackend, Shift>) -> anyhow::Result<()>) -> anyhow::Result<String> {
    font::register()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        figure(&root)?;
        root.present().map_err(drawing)?;
    }
    Ok(out)
}

/// Draws `figure` into an RGB image, text from the embedded font.
pub(crate) fn png_of(
    size: (u32, u32),
    figure: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<RgbImage> {
    font::register()?;
    let mut buf = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        figure(&root)?;
        root.present().map_err(drawing)?;
    }
    RgbImage::from_raw(size.0, size.1, buf).context("chart buffer has the wrong size")
}

/// Writes `<stem>.svg` and `<stem>.png` into `dir`.
pub(crate) fn save_both(dir: &Path, stem: &str, svg: anyhow::Result<String>, png: anyhow::Result<RgbImage>) -> anyhow::Result<()> {
    let path = dir.join(format!("{stem}.svg"));
    std::fs::write(&path, svg?).with_context(|| format!("writing {}", path.display()))?;
    let path = dir.join(format!("{stem}.png"));
    png?.save(&path).with_context(|| format!("writing {}", path.display()))
}

/// A tick label: short, without float noise; powers of ten on a log axis as 10⁻⁶ … 1.
pub fn label(v: f64, scale: Scale) -> String {
    if scale == Scale::Log10 {
        let e = v.log10().round() as i32;
        if (v.log10() - e as f64).abs() < 1e-9 {
            return power_of_ten(e);
        }
    }
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

/// 10 to the `e`, written with superscript digits (1 and 10 as themselves).
fn power_of_ten(e: i32) -> String {
    match e {
        0 => "1".into(),
        1 => "10".into(),
        _ => {
            const SUP: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
            let digits: String = e
                .unsigned_abs()
                .to_string()
                .chars()
                .filter_map(|d| d.to_digit(10))
                .map(|d| SUP[d as usize])
                .collect();
            format!("10{}{digits}", if e < 0 { "⁻" } else { "" })
        }
    }
}

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> anyhow::Result<String> {
        svg_of((W, H), |root| self.draw(root))
    }

    /// The chart as an 800×520 image.
    pub fn png(&self) -> anyhow::Result<RgbImage> {
        png_of((W, H), |root| self.draw(root))
    }

    /// Writes `<stem>.svg` and `<stem>.png` into `dir`.
    pub fn save(&self, dir: &Path, stem: &str) -> anyhow::Result<()> {
        save_both(dir, stem, self.svg(), self.png())
    }

    /// The number of labelled x ticks: one per decade on a log axis.
    fn x_ticks(&self) -> usize {
        match self.x_scale {
            Scale::Linear => 6,
            Scale::Log10 => ((self.x.range.1 / self.x.range.0).log10().round().max(1.0) as usize) + 1,
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let (lo, hi) = self.x.range;
        match self.x_scale {
            Scale::Linear => self.draw_on(root, lo..hi),
            // A hair wider, so that rounding in the tick search cannot drop the lowest decade.
            Scale::Log10 => self.draw_on(root, (lo * (1.0 - 1e-9)..hi * (1.0 + 1e-9)).log_scale()),
        }
    }

    /// The whole chart on a given x coordinate: frame and mesh, series, legend, axis names.
    fn draw_on<DB, X>(&self, root: &DrawingArea<DB, Shift>, x: X) -> anyhow::Result<()>
    where
        DB: DrawingBackend,
        X: AsRangedCoord<Value = f64> + Clone,
        X::CoordDescType: ValueFormatter<f64>,
    {
        root.fill(&WHITE).map_err(drawing)?;
        // The title and the y axes' names share a band above the plot.
        let body = root.margin(TOP_BAND, 0, 0, 0);
        let y2 = self.y2.as_ref().unwrap_or(&self.y);
        let mut chart = ChartBuilder::on(&body)
            .margin(12)
            .set_label_area_size(LabelAreaPosition::Left, 58)
            .set_label_area_size(LabelAreaPosition::Bottom, 52)
            .set_label_area_size(LabelAreaPosition::Right, if self.y2.is_some() { 58 } else { 0 })
            .build_cartesian_2d(x.clone(), self.y.range.0..self.y.range.1)
            .map_err(drawing)?
            .set_secondary_coord(x, y2.range.0..y2.range.1);
        let scale = self.x_scale;
        chart
            .configure_mesh()
            .x_labels(self.x_ticks())
            .y_labels(6)
            .x_label_formatter(&|v| label(*v, scale))
            .y_label_formatter(&|v| label(*v, Scale::Linear))
            .x_desc(&self.x.label)
            .label_style((font::FAMILY, 14))
            .axis_desc_style((font::FAMILY, 15))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(drawing)?;
        if self.y2.is_some() {
            chart
                .configure_secondary_axes()
                .y_labels(6)
                .y_label_formatter(&|v| label(*v, Scale::Linear))
                .label_style((font::FAMILY, 14))
                .draw()
                .map_err(drawing)?;
        }
        for s in &self.series {
            self.draw_series(&mut chart, s)?;
        }
        self.draw_legend(&mut chart)?;
        draw_title(root, &self.title, W)?;
        self.draw_axis_names(root, chart.plotting_area().get_pixel_range())
    }

    fn draw_series<DB, X, Y, X2, Y2>(
        &self,
        chart: &mut DualCoordChartContext<DB, Cartesian2d<X, Y>, Cartesian2d<X2, Y2>>,
        s: &Series,
    ) -> anyhow::Result<()>
    where
        DB: DrawingBackend,
        X: Ranged<ValueType = f64>,
        Y: Ranged<ValueType = f64>,
        X2: Ranged<ValueType = f64>,
        Y2: Ranged<ValueType = f64>,
    {
        let color = RGBColor(s.color[0], s.color[1], s.color[2]);
        let log = self.x_scale == Scale::Log10;
        let points = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite() && (!log || p.0 > 0.0));
        let anno = match (s.style, s.right) {
            (Style::Line, false) => chart.draw_series(LineSeries::new(points, color.stroke_width(2))),
            (Style::Line, true) => chart.draw_secondary_series(LineSeries::new(points, color.stroke_width(2))),
            (Style::Dots, false) => chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled()))),
            (Style::Dots, true) => chart.draw_secondary_series(points.map(|p| Circle::new(p, 3, color.filled()))),
        }
        .map_err(drawing)?;
        if !s.name.is_empty() {
            anno.label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
        }
        Ok(())
    }

    fn draw_legend<'a, DB, CT1, CT2>(&self, chart: &mut DualCoordChartContext<'a, DB, CT1, CT2>) -> anyhow::Result<()>
    where
        DB: DrawingBackend + 'a,
        CT1: CoordTranslate,
        CT2: CoordTranslate,
    {
        if self.series.iter().all(|s| s.name.is_empty()) {
            return Ok(());
        }
        let position = match self.legend {
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
            Corner::MiddleRight => SeriesLabelPosition::MiddleRight,
        };
        chart
            .configure_series_labels()
            .position(position)
            .label_font((font::FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(drawing)
    }

    /// The y axes' names, written horizontally just above each axis.
    fn draw_axis_names<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        (xs, ys): (std::ops::Range<i32>, std::ops::Range<i32>),
    ) -> anyhow::Result<()> {
        let style = TextStyle::from((font::FAMILY, 15).into_font()).color(&BLACK);
        root.draw(&Text::new(self.y.label.as_str(), (xs.start - 40, ys.start - 22), style.clone()))
            .map_err(drawing)?;
        if let Some(y2) = &self.y2 {
            let right = style.pos(Pos::new(HPos::Right, VPos::Top));
            root.draw(&Text::new(y2.label.as_str(), (xs.end + 40, ys.start - 22), right))
                .map_err(drawing)?;
        }
        Ok(())
    }
}

/// A training run's curve: loss on the left axis and accuracy (0–1) on the right, against the
/// step; `points` are (step, loss, accuracy).
pub fn training_curve(points: &[(f64, f64, f64)]) -> Chart {
    let max_loss = points.iter().map(|p| p.1).filter(|v| v.is_finite()).fold(1e-9, f64::max);
    let last = points.last().map_or(1.0, |p| p.0.max(1.0));
    Chart {
        title: "Training".into(),
        x: Axis::new("step", 0.0, last),
        x_scale: Scale::Linear,
        y: Axis::new("loss", 0.0, max_loss * 1.05),
        y2: Some(Axis::new("accuracy", 0.0, 1.0)),
        legend: Corner::MiddleRight,
        series: vec![
            Series::line("loss", PALETTE[0], points.iter().map(|p| (p.0, p.1)).collect()),
            Series {
                right: true,
                ..Series::line("accuracy", PALETTE[2], points.iter().map(|p| (p.0, p.2)).collect())
            },
        ],
    }
}

/// A-Softmax's λ (left axis) and the learning rate (right axis) by step, from (step, λ, lr)
/// points: the schedule a training followed.
pub fn schedule_curve(points: &[(f64, f64, f64)]) -> Chart {
    let top = |f: fn(&(f64, f64, f64)) -> f64| points.iter().map(f).filter(|v| v.is_finite()).fold(1e-12, f64::max) * 1.05;
    let last = points.last().map_or(1.0, |p| p.0.max(1.0));
    Chart {
        title: "Schedule".into(),
        x: Axis::new("step", 0.0, last),
        x_scale: Scale::Linear,
        y: Axis::new("λ", 0.0, top(|p| p.1)),
        y2: Some(Axis::new("learning rate", 0.0, top(|p| p.2))),
        legend: Corner::UpperRight,
        series: vec![
            Series::line("λ", PALETTE[1], points.iter().map(|p| (p.0, p.1)).collect()),
            Series {
                right: true,
                ..Series::line("learning rate", PALETTE[3], points.iter().map(|p| (p.0, p.2)).collect())
            },
        ],
    }
}

#[cfg(test)]
mod tests;
