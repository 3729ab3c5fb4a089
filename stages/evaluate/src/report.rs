//! `report.md`, the plots and the one-line summary, all from `metrics.json`'s numbers.

use serde_json::Value;
use spherepipe_face_table::features::Features;
use spherepipe_headline::Headline;
use spherepipe_plot::{feature_plot, Chart, Series, Style, PALETTE};
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

fn series(name: &str, k: usize, style: Style, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        color: PALETTE[k % PALETTE.len()],
        style,
        points,
    }
}

impl Plots {
    /// Draws what there is data for; returns (caption, file name) per image.
    pub fn draw(&self, out: &Path) -> anyhow::Result<Vec<(String, String)>> {
        let mut made = Vec::new();
        if !self.roc.is_empty() {
            let s = self
                .roc
                .iter()
                .enumerate()
                .map(|(k, (name, c))| {
                    let pts = c
                        .as_array()
                        .map(|a| a.iter().filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?))).collect())
                        .unwrap_or_default();
                    series(name, k, Style::Line, pts)
                })
                .collect();
            Chart {
                title: "ROC".into(),
                x_label: "false accept rate".into(),
                y_label: "TAR".into(),
                x: (0.0, 1.0),
                y: (0.0, 1.0),
                log_x: false,
                legend_low: true,
                series: s,
            }
            .save(&out.join("roc.png"))?;
            made.push(("ROC of the verification pairs (headline protocol)".into(), "roc.png".into()));
        }
        if !self.cmc.is_empty() {
            let s = self
                .cmc
                .iter()
                .enumerate()
                .map(|(k, (name, c))| {
                    series(
                        name,
                        k,
                        Style::Line,
                        c.iter().enumerate().map(|(r, &v)| ((r + 1) as f64, v)).collect(),
                    )
                })
                .collect();
            Chart {
                title: "MegaFace CMC".into(),
                x_label: "rank".into(),
                y_label: "IDENT".into(),
                x: (1.0, 10.0),
                y: (0.0, 1.0),
                log_x: false,
                legend_low: true,
                series: s,
            }
            .save(&out.join("cmc.png"))?;
            made.push(("MegaFace identification rate by rank".into(), "cmc.png".into()));
        }
        if let Some(c) = &self.curve {
            let max_loss = c.iter().map(|p| p.1).filter(|v| v.is_finite()).fold(1e-9, f64::max);
            let steps = c.last().map_or(1.0, |p| p.0.max(1.0));
            Chart {
                title: "Training".into(),
                x_label: "step".into(),
                y_label: "LOSS/ACC".into(),
                x: (0.0, steps),
                y: (0.0, max_loss.max(1.0)),
                log_x: false,
                legend_low: false,
                series: vec![
                    series("loss", 0, Style::Line, c.iter().map(|p| (p.0, p.1)).collect()),
                    series("accuracy", 2, Style::Line, c.iter().map(|p| (p.0, p.2)).collect()),
                ],
            }
            .save(&out.join("curve.png"))?;
            made.push(("Training loss and accuracy".into(), "curve.png".into()));
        }
        if let Some((f, labels)) = &self.features {
            // FC1 size is half the feature (face + mirror).
            let fc1 = f.dim / 2;
            if fc1 == 2 || fc1 == 3 {
                // The eight identities with the most faces, one colour each (as the paper's
                // figures show a few classes).
                let mut count: std::collections::BTreeMap<u32, usize> = Default::default();
                labels.iter().for_each(|&l| *count.entry(l).or_default() += 1);
                let mut by_size: Vec<(usize, u32)> = count.into_iter().map(|(l, n)| (n, l)).collect();
                by_size.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                let shown: Vec<u32> = by_size.iter().take(PALETTE.len()).map(|p| p.1).collect();
                let (mut pts, mut l) = (Vec::new(), Vec::new());
                for (i, label) in labels.iter().enumerate() {
                    if let Some(c) = shown.iter().position(|s| s == label) {
                        pts.push(f.row(i)[..fc1].iter().map(|&x| x as f64).collect());
                        l.push(c);
                    }
                }
                let title = format!("FC1 ({fc1}-D), {} identities", shown.len());
                feature_plot(&out.join("features.png"), &title, &pts, &l)?;
                made.push((
                    format!("Test features on the unit {}", if fc1 == 2 { "circle" } else { "sphere" }),
                    "features.png".into(),
                ));
            }
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
