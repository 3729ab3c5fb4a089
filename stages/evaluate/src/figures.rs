//! The evaluation's figures: ROC, CMC, training curve and feature sphere, each as SVG and PNG.

use spherepipe_face_table::features::Features;
use spherepipe_plot::{training_curve, Axis, Chart, Corner, Scale, Series, Sphere, PALETTE};
use std::path::Path;

/// The figures an evaluation may draw: (SVG file, caption). `draw` makes those it has data
/// for; the pipeline's page shows them with these captions.
pub const FIGURES: [(&str, &str); 4] = [
    ("roc.svg", "ROC of the verification pairs (headline protocol)"),
    ("cmc.svg", "MegaFace identification rate by rank"),
    ("curve.svg", "Training loss and accuracy"),
    ("features.svg", "Test features on the unit circle or sphere"),
];

/// What the figures are drawn from, gathered as the evaluation goes.
#[derive(Default)]
pub struct Plots {
    /// (set, [[FAR, TAR], ...]).
    pub roc: Vec<(String, Vec<[f64; 2]>)>,
    /// (distractor set, identification rate at ranks 1..).
    pub cmc: Vec<(String, Vec<f64>)>,
    /// (step, loss, accuracy) from the training metrics.
    pub curve: Option<Vec<(f64, f64, f64)>>,
    /// Test features and their class labels, plotted when FC1 is 2- or 3-D.
    pub features: Option<(Features, Vec<u32>)>,
}

/// The train stage's `metrics.csv` as (step, loss, accuracy).
pub fn read_curve(path: &Path) -> Option<Vec<(f64, f64, f64)>> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|v| v.parse().ok()).collect::<Option<_>>()?;
            Some((*f.first()?, *f.get(1)?, *f.get(2)?))
        })
        .collect()
}

/// The FAR axis of a ROC: from the lowest power of ten the impostor pairs reach (10⁻⁶ at the
/// least) to 1.
fn far_floor(curves: &[Vec<(f64, f64)>]) -> f64 {
    let lowest = curves.iter().flatten().map(|p| p.0).filter(|&f| f > 0.0).fold(1.0, f64::min);
    10f64.powf(lowest.log10().floor()).clamp(1e-6, 0.1)
}

impl Plots {
    /// The ROC of each verification set on a log FAR axis.
    fn roc_chart(&self) -> Option<Chart> {
        let curves: Vec<Vec<(f64, f64)>> = self.roc.iter().map(|(_, c)| c.iter().map(|p| (p[0], p[1])).collect()).collect();
        (!curves.is_empty()).then(|| Chart {
            title: "ROC".into(),
            x: Axis::new("false accept rate", far_floor(&curves), 1.0),
            x_scale: Scale::Log10,
            y: Axis::new("TAR", 0.0, 1.0),
            y2: None,
            legend: Corner::LowerRight,
            series: self
                .roc
                .iter()
                .zip(curves)
                .enumerate()
                .map(|(k, ((name, _), pts))| Series::line(name, PALETTE[k % PALETTE.len()], pts))
                .collect(),
        })
    }

    /// MegaFace's identification rate by rank, one line per distractor set size.
    fn cmc_chart(&self) -> Option<Chart> {
        let ranks = self.cmc.iter().map(|c| c.1.len()).max().filter(|&n| n > 0)?;
        Some(Chart {
            title: "MegaFace CMC".into(),
            x: Axis::new("rank", 1.0, ranks.max(2) as f64),
            x_scale: Scale::Linear,
            y: Axis::new("identification rate", 0.0, 1.0),
            y2: None,
            legend: Corner::LowerRight,
            series: self
                .cmc
                .iter()
                .enumerate()
                .map(|(k, (name, c))| {
                    let pts = c.iter().enumerate().map(|(r, &v)| ((r + 1) as f64, v)).collect();
                    Series::line(name, PALETTE[k % PALETTE.len()], pts)
                })
                .collect(),
        })
    }

    /// The test features on the unit circle or sphere, when FC1 has 2 or 3 dimensions: the
    /// eight identities with the most faces, one colour each (as the paper's figures show a
    /// few classes).
    fn sphere(&self) -> Option<Sphere> {
        let (f, labels) = self.features.as_ref()?;
        // FC1 size is half the feature (face + mirror).
        let fc1 = f.dim / 2;
        if fc1 != 2 && fc1 != 3 {
            return None;
        }
        let mut count: std::collections::BTreeMap<u32, usize> = Default::default();
        labels.iter().for_each(|&l| *count.entry(l).or_default() += 1);
        let mut by_size: Vec<(usize, u32)> = count.into_iter().map(|(l, n)| (n, l)).collect();
        by_size.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let shown: Vec<u32> = by_size.iter().take(PALETTE.len()).map(|p| p.1).collect();
        let (mut features, mut classes) = (Vec::new(), Vec::new());
        for (i, label) in labels.iter().enumerate() {
            if let Some(c) = shown.iter().position(|s| s == label) {
                features.push(f.row(i)[..fc1].iter().map(|&x| x as f64).collect());
                classes.push(c);
            }
        }
        Some(Sphere {
            title: format!("FC1 ({fc1}-D), {} identities", shown.len()),
            features,
            labels: classes,
        })
    }

    /// Draws what there is data for ([`FIGURES`]), each as SVG and PNG; returns (caption, SVG file name) per
    /// figure.
    pub fn draw(&self, out: &Path) -> anyhow::Result<Vec<(String, String)>> {
        let mut made = Vec::new();
        let [roc, cmc, curve, _] = FIGURES.map(|f| f.1);
        let charts = [
            (self.roc_chart(), "roc", roc),
            (self.cmc_chart(), "cmc", cmc),
            (self.curve.as_deref().map(training_curve), "curve", curve),
        ];
        for (chart, stem, caption) in charts {
            if let Some(c) = chart {
                c.save(out, stem)?;
                made.push((caption.to_owned(), format!("{stem}.svg")));
            }
        }
        if let Some(s) = self.sphere() {
            s.save(out, "features")?;
            let shape = if s.features.first().map_or(0, Vec::len) == 2 {
                "circle"
            } else {
                "sphere"
            };
            made.push((format!("Test features on the unit {shape}"), "features.svg".into()));
        }
        Ok(made)
    }
}
