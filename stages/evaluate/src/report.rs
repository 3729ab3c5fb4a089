//! `report.md`, the headline row and the one-line summary, all from the typed [`Metrics`].

use crate::metrics::{MegaFace, Metrics, Verification};
use serde_json::Value;
use spherepipe_headline::Headline;
use spherepipe_model_card::ModelCard;
use std::fmt::Write as _;

/// A fraction as a percentage with two decimals; – when missing or NaN.
fn pct(v: Option<f64>) -> String {
    v.filter(|x| !x.is_nan()).map_or("–".into(), |x| format!("{:.2}%", 100.0 * x))
}

/// A number as JSON writes it (`1e-6`, `0.25`, `4`), as the earlier untyped report did.
fn json_number(v: f64) -> String {
    Value::from(v).to_string()
}

/// "a-softmax m=4", "cosface m=0.35", "softmax": the loss and its margin param.
pub fn loss_with_margin(model: &ModelCard) -> String {
    let param = |k: &str| model.params.get(k).map_or("null".into(), Value::to_string);
    match model.loss.as_str() {
        "a-softmax" => format!("a-softmax m={}", param("m")),
        l @ ("cosface" | "arcface") => format!("{l} m={}", param("margin")),
        l => l.to_owned(),
    }
}

/// `[name, value]` pairs `spherepipe metrics` tabulates across stages and runs: what the
/// model was, then the headline numbers.
pub fn headline(m: &Metrics) -> Headline {
    let mut h = Headline::default();
    if let Some(model) = &m.model {
        let net = format!("sphere{} w{}", model.net.depth, json_number(model.net.width));
        h.push("net", Value::from(net));
        h.push("loss", Value::from(loss_with_margin(model)));
    }
    for (name, v) in m.verifications() {
        h.push(name, Value::from(v.accuracy));
        h.push(&format!("{name} std"), Value::from(v.std));
    }
    if let Some(last) = m.megaface_last() {
        h.push("MF distractors", Value::from(last.distractors));
        h.push("MF rank-1", Value::from(last.rank1));
        h.push("MF TAR", last.verification.tar.map_or(Value::Null, Value::from));
        h.push("at FAR", Value::from(json_number(last.verification.far)));
    }
    if let Some(Some(f)) = m.angular_fisher_score.get("lfw") {
        h.push("A-Fisher (LFW)", Value::from(format!("{f:.4}")));
    }
    h
}

/// The line `spherepipe run` prints at the end.
pub fn summary(m: &Metrics) -> String {
    let mut parts: Vec<String> = m
        .verifications()
        .map(|(name, v)| {
            format!(
                "{name} accuracy {} ± {:.2} ({}, {} pairs)",
                pct(Some(v.accuracy)),
                100.0 * v.std,
                v.protocol.name(),
                v.pairs
            )
        })
        .collect();
    if let Some(last) = m.megaface_last() {
        parts.push(format!(
            "MegaFace rank-1 {} with {} distractors, TAR {} at FAR {}",
            pct(Some(last.rank1)),
            last.distractors,
            pct(last.verification.tar),
            json_number(last.verification.far)
        ));
    }
    parts.join("; ")
}

/// `report.md`: the model, each section's tables, the Fisher scores and the figures.
pub fn markdown(m: &Metrics, images: &[(String, String)]) -> String {
    let mut s = String::from("# Evaluation report\n\n");
    if let Some(model) = &m.model {
        let _ = writeln!(
            s,
            "Model: SphereFace-{} (width {}), FC1 {}, loss `{}`, {} classes, {} steps.\n",
            model.net.depth,
            json_number(model.net.width),
            model.net.features,
            model.loss,
            model.classes,
            model.steps
        );
    }
    for (title, v) in [("LFW (View 2)", &m.lfw), ("YouTube Faces", &m.ytf)] {
        if let Some(v) = v {
            verification_section(&mut s, title, v);
        }
    }
    for b in &m.bins {
        verification_section(&mut s, &format!("{} (verification bin)", b.set), &b.verification);
    }
    if let Some(mf) = &m.megaface {
        megaface_section(&mut s, mf);
    }
    fisher_section(&mut s, m);
    if !images.is_empty() {
        let _ = writeln!(s, "## Plots\n");
        for (caption, file) in images {
            let _ = writeln!(s, "![{caption}]({file})\n");
        }
    }
    s
}

/// One verification set: pairs, the accuracy of every protocol by fold, the ROC's figures.
fn verification_section(s: &mut String, title: &str, v: &Verification) {
    let _ = writeln!(s, "## {title}\n");
    let _ = writeln!(s, "{} pairs scored of {} listed.\n", v.pairs, v.pairs_listed);
    if !v.pairs_skipped.is_empty() {
        let _ = writeln!(
            s,
            "**{} pairs skipped** (an image was not aligned or not extracted).\n",
            v.pairs_skipped.len()
        );
    }
    let _ = writeln!(
        s,
        "| protocol | mean accuracy | std | per-fold accuracy |\n| --- | --- | --- | --- |"
    );
    for (name, r) in &v.protocols {
        let folds: Vec<String> = r.folds.iter().map(|f| format!("{:.1}", 100.0 * f.accuracy)).collect();
        let mark = if v.protocol.name() == name { " (headline)" } else { "" };
        let _ = writeln!(
            s,
            "| {name}{mark} | {} | {:.2} | {} |",
            pct(Some(r.mean)),
            100.0 * r.std,
            folds.join(" ")
        );
    }
    let _ = writeln!(s, "\nAUC {:.4}, EER {}.\n", v.roc.auc, pct(Some(v.roc.eer)));
    let _ = writeln!(s, "| FAR | TAR | note |\n| --- | --- | --- |");
    for x in &v.roc.tar_at_far {
        let note = x.note.as_deref().unwrap_or("");
        let _ = writeln!(s, "| {} | {} | {note} |", json_number(x.far), pct(x.tar));
    }
    s.push('\n');
}

/// MegaFace: probes and distractors, then identification and verification per set size.
fn megaface_section(s: &mut String, mf: &MegaFace) {
    let _ = writeln!(s, "## MegaFace\n");
    let _ = writeln!(
        s,
        "{} FaceScrub probes of {} identities; {} distractors.\n",
        mf.probes, mf.identities, mf.distractors
    );
    if let Some(note) = &mf.note {
        let _ = writeln!(s, "{note}.\n");
    }
    let _ = writeln!(
        s,
        "| distractors | rank-1 | rank-10 | TAR | at FAR | impostor pairs |\n| --- | --- | --- | --- | --- | --- |"
    );
    for r in &mf.sizes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.distractors,
            pct(Some(r.rank1)),
            pct(r.cmc.get(9).copied()),
            pct(r.verification.tar),
            json_number(r.verification.far),
            r.impostor_pairs
        );
    }
    let _ = writeln!(
        s,
        "\nVerification FAR is 1e-6 when the impostor pairs (probes × distractors) can measure it, else the lowest power of ten they can (at least one impostor allowed above the threshold).\n"
    );
}

/// The angular Fisher score of each feature set.
fn fisher_section(s: &mut String, m: &Metrics) {
    if m.angular_fisher_score.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Angular Fisher score (lower is more discriminative)\n");
    for (k, v) in &m.angular_fisher_score {
        let _ = writeln!(s, "- {k}: {}", v.map_or("–".into(), |x| format!("{x:.4}")));
    }
    s.push('\n');
}
