//! The training curve as a PNG: loss and accuracy against the step, with labelled axes
//! (`spherepipe-plot`: no fonts or system libraries needed, same bytes for the same data).

use spherepipe_plot::{Chart, Series, Style, PALETTE};

/// `points`: (loss, accuracy) per step.
pub fn draw(path: &std::path::Path, points: &[(f64, f64)]) -> anyhow::Result<()> {
    let max_loss = points.iter().map(|p| p.0).filter(|v| v.is_finite()).fold(1.0, f64::max);
    let series = |name: &str, color: [u8; 3], f: &dyn Fn(&(f64, f64)) -> f64| Series {
        name: name.into(),
        color,
        style: Style::Line,
        points: points.iter().enumerate().map(|(i, p)| (i as f64, f(p))).collect(),
    };
    Chart {
        title: "Training".into(),
        x_label: "step".into(),
        y_label: "LOSS/ACC".into(),
        x: (0.0, (points.len().max(2) - 1) as f64),
        y: (0.0, max_loss),
        log_x: false,
        legend_low: false,
        series: vec![series("loss", PALETTE[0], &|p| p.0), series("accuracy", PALETTE[2], &|p| p.1)],
    }
    .save(path)
}
