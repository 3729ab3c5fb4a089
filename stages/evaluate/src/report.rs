//! `report.md`, the plots and the one-line summary, all from `metrics.json`'s numbers.

use serde_json::Value;
use spherepipe_face_table::features::Features;
use spherepipe_headline::Headline;
use spherepipe_plot::{training_curve, Axis, Chart, Corner, Scale, Series, Sphere, PALETTE};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Default)]
pub struct Plots {
    /// (set, [[FAR, TAR], ...]).
    pub roc: Vec<(String, Value)>,
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
        let curves: Vec<Vec<(f64, f64)>> = self
            .roc
            .iter()
            .map(|(_, c)| {
                c.as_array()
                    .map(|a| a.iter().filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?))).collect())
                    .unwrap_or_default()
            })
            .collect();
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

    /// Draws what there is data for, each as SVG and PNG; returns (caption, SVG file name) per
    /// figure.
    pub fn draw(&self, out: &Path) -> anyhow::Result<Vec<(String, String)>> {
        let mut made = Vec::new();
        let charts = [
            (self.roc_chart(), "roc", "ROC of the verification pairs (headline protocol)"),
            (self.cmc_chart(), "cmc", "MegaFace identification rate by rank"),
            (self.curve.as_deref().map(training_curve), "curve", "Training loss and accuracy"),
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

fn pct(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{:.2}%", 100.0 * x))
}

/// `[name, value]` pairs `spherepipe metrics` tabulates across stages and runs: what the
/// model was, then the headline numbers.
pub fn headline(m: &Value) -> Headline {
    let mut h = Headline::default();
    let mut add = |k: &str, v: Value| h.push(k, v);
    if let Some(model) = m.get("model").filter(|v| !v.is_null()) {
        let loss = model["loss"].as_str().unwrap_or("?");
        let margin = match loss {
            "a-softmax" => format!(" m={}", model["params"]["m"]),
            "cosface" | "arcface" => format!(" m={}", model["params"]["margin"]),
            _ => String::new(),
        };
        add(
            "net",
            Value::from(format!("sphere{} w{}", model["net"]["depth"], model["net"]["width"])),
        );
        add("loss", Value::from(format!("{loss}{margin}")));
    }
    for (key, name) in [("lfw", "LFW"), ("ytf", "YTF")] {
        if let Some(v) = m.get(key) {
            add(name, v["accuracy"].clone());
            add(&format!("{name} std"), v["std"].clone());
        }
    }
    if let Some(last) = m.pointer("/megaface/sizes").and_then(Value::as_array).and_then(|s| s.last()) {
        add("MF distractors", last["distractors"].clone());
        add("MF rank-1", last["rank1"].clone());
        add("MF TAR", last["verification"]["tar"].clone());
        add("at FAR", Value::from(format!("{}", last["verification"]["far"])));
    }
    if let Some(f) = m.pointer("/angular_fisher_score/lfw").filter(|v| !v.is_null()) {
        add("A-Fisher (LFW)", Value::from(format!("{:.4}", f.as_f64().unwrap_or(f64::NAN))));
    }
    h
}

/// The line `spherepipe run` prints at the end.
pub fn summary(m: &Value) -> String {
    let mut parts = Vec::new();
    for (key, name) in [("lfw", "LFW"), ("ytf", "YTF")] {
        if let Some(v) = m.get(key) {
            parts.push(format!(
                "{name} accuracy {} ± {:.2} ({}, {} pairs)",
                pct(&v["accuracy"]),
                100.0 * v["std"].as_f64().unwrap_or(f64::NAN),
                v["protocol"].as_str().unwrap_or(""),
                v["pairs"]
            ));
        }
    }
    if let Some(last) = m.pointer("/megaface/sizes").and_then(Value::as_array).and_then(|s| s.last()) {
        parts.push(format!(
            "MegaFace rank-1 {} with {} distractors, TAR {} at FAR {}",
            pct(&last["rank1"]),
            last["distractors"],
            pct(&last["verification"]["tar"]),
            last["verification"]["far"]
        ));
    }
    parts.join("; ")
}

pub fn markdown(m: &Value, images: &[(String, String)]) -> String {
    let mut s = String::from("# Evaluation report\n\n");
    if let Some(model) = m.get("model").filter(|v| !v.is_null()) {
        let _ = writeln!(
            s,
            "Model: SphereFace-{} (width {}), FC1 {}, loss `{}`, {} classes, {} steps.\n",
            model["net"]["depth"],
            model["net"]["width"],
            model["net"]["features"],
            model["loss"].as_str().unwrap_or("?"),
            model["classes"],
            model["steps"]
        );
    }
    for (key, name) in [("lfw", "LFW (View 2)"), ("ytf", "YouTube Faces")] {
        let Some(v) = m.get(key) else { continue };
        let _ = writeln!(s, "## {name}\n");
        let _ = writeln!(s, "{} pairs scored of {} listed.\n", v["pairs"], v["pairs_listed"]);
        if let Some(skipped) = v["pairs_skipped"].as_array().filter(|a| !a.is_empty()) {
            let _ = writeln!(
                s,
                "**{} pairs skipped** (an image was not aligned or not extracted).\n",
                skipped.len()
            );
        }
        let _ = writeln!(
            s,
            "| protocol | mean accuracy | std | per-fold accuracy |\n| --- | --- | --- | --- |"
        );
        if let Some(ps) = v["protocols"].as_object() {
            for (p, r) in ps {
                let folds: Vec<String> = r["folds"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|f| format!("{:.1}", 100.0 * f["accuracy"].as_f64().unwrap_or(f64::NAN)))
                            .collect()
                    })
                    .unwrap_or_default();
                let mark = if v["protocol"] == p.as_str() { " (headline)" } else { "" };
                let _ = writeln!(
                    s,
                    "| {p}{mark} | {} | {:.2} | {} |",
                    pct(&r["mean"]),
                    100.0 * r["std"].as_f64().unwrap_or(f64::NAN),
                    folds.join(" ")
                );
            }
        }
        let roc = &v["roc"];
        let _ = writeln!(
            s,
            "\nAUC {:.4}, EER {}.\n",
            roc["auc"].as_f64().unwrap_or(f64::NAN),
            pct(&roc["eer"])
        );
        if let Some(t) = roc["tar_at_far"].as_array() {
            let _ = writeln!(s, "| FAR | TAR | note |\n| --- | --- | --- |");
            for x in t {
                let _ = writeln!(s, "| {} | {} | {} |", x["far"], pct(&x["tar"]), x["note"].as_str().unwrap_or(""));
            }
            s.push('\n');
        }
    }
    if let Some(mf) = m.get("megaface") {
        let _ = writeln!(s, "## MegaFace\n");
        let _ = writeln!(
            s,
            "{} FaceScrub probes of {} identities; {} distractors.\n",
            mf["probes"], mf["identities"], mf["distractors"]
        );
        let _ = writeln!(
            s,
            "| distractors | rank-1 | rank-10 | TAR | at FAR | impostor pairs |\n| --- | --- | --- | --- | --- | --- |"
        );
        for r in mf["sizes"].as_array().into_iter().flatten() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                r["distractors"],
                pct(&r["rank1"]),
                pct(&r["cmc"][9]),
                pct(&r["verification"]["tar"]),
                r["verification"]["far"],
                r["impostor_pairs"]
            );
        }
        let _ = writeln!(
            s,
            "\nVerification FAR is 1e-6 when the impostor pairs (probes × distractors) can measure it, else the lowest power of ten they can (at least one impostor allowed above the threshold).\n"
        );
    }
    if let Some(f) = m.get("angular_fisher_score").and_then(Value::as_object).filter(|o| !o.is_empty()) {
        let _ = writeln!(s, "## Angular Fisher score (lower is more discriminative)\n");
        for (k, v) in f {
            let _ = writeln!(s, "- {k}: {}", v.as_f64().map_or("–".into(), |x| format!("{x:.4}")));
        }
        s.push('\n');
    }
    if !images.is_empty() {
        let _ = writeln!(s, "## Plots\n");
        for (caption, file) in images {
            let _ = writeln!(s, "![{caption}]({file})\n");
        }
    }
    s
}
