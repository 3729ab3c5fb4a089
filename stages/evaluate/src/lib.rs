//! `evaluate`: every number the paper reports for a model, from feature tables.
//!
//! - LFW View 2 (`lfw` features + `pairs.txt`): 10-fold accuracy in all three protocols (the
//!   `protocol` param picks the headline one), ROC, AUC, EER, TAR at the `fars`.
//! - YouTube Faces (`ytf` features + `splits.txt`): a video's feature is the mean of its frames'
//!   features; the same 10-fold procedure over the 10 splits.
//! - MegaFace (`facescrub` probes + `distractors`): identification CMC (ranks 1–10) and
//!   verification TAR at FAR `megaface_far` (or the lowest FAR the impostor count measures) at
//!   each distractor set size the data reaches; distractors are streamed.
//! - The angular Fisher score (Appendix E) of the LFW and FaceScrub features.
//!
//! Writes `metrics.json` (every number), `report.md` (tables, with the figures embedded as SVG),
//! `roc`, `cmc`, `curve` (with a `model`) and `features` (when FC1 has 2 or 3 dimensions), each
//! as `.svg` and `.png`, and `summary.txt`, which `spherepipe run` prints at the end.

mod report;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use spherepipe_face_datasets::{read_lfw_pairs, read_ytf_splits};
use spherepipe_face_eval::fisher::angular_fisher_score;
use spherepipe_face_eval::roc::{lowest_measurable_far, roc};
use spherepipe_face_eval::search::Search;
use spherepipe_face_eval::verify::{ten_fold, Pair, Protocol};
use spherepipe_face_table::features::{read_features, FeatureReader, Features};
use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Stage, StageContext};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub struct Evaluate;

fn features_of(dir: &Path, what: &str) -> anyhow::Result<Features> {
    read_features(&dir.join("features.parquet")).with_context(|| format!("`{what}` must be an extract or ensemble stage"))
}

/// Labels as dense indices, in order of first appearance.
fn dense_labels(names: impl Iterator<Item = String>) -> Vec<u32> {
    let mut ids: HashMap<String, u32> = HashMap::new();
    names
        .map(|n| {
            let k = ids.len() as u32;
            *ids.entry(n).or_insert(k)
        })
        .collect()
}

/// Verification in all three protocols, the headline one first, plus its ROC.
fn verification(pairs: &[Pair<'_>], headline: Protocol, fars: &[f64]) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    let mut head = None;
    for name in Protocol::NAMES {
        let p = Protocol::parse(name).context("protocol name")?;
        let r = ten_fold(pairs, p)?;
        if p == headline {
            head = Some(r.clone());
        }
        out.insert(name.to_owned(), serde_json::to_value(&r)?);
    }
    let head = head.context("headline protocol")?;
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    // Also the lowest FAR these impostor pairs can measure, when the asked ones are too low.
    let impostors = same.iter().filter(|s| !**s).count() as u64;
    let floor = fars.iter().copied().fold(1.0, f64::min);
    let lowest = lowest_measurable_far(impostors, floor);
    let mut fars = fars.to_vec();
    if !fars.iter().any(|&f| f <= lowest) {
        fars.push(lowest);
    }
    let roc = roc(&head.scores, &same, &fars);
    Ok(json!({
        "protocol": headline.name(),
        "accuracy": head.mean,
        "std": head.std,
        "pairs": pairs.len(),
        "protocols": out,
        "roc": roc,
    }))
}

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> &'static str {
        // 2: figures drawn with plotters as SVG and PNG, the ROC on a log FAR axis.
        "2"
    }
    fn doc(&self) -> &'static str {
        "LFW/YTF 10-fold verification, ROC, MegaFace identification and verification, angular Fisher score; report.md and plots"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "protocol",
                ParamType::Choice(&Protocol::NAMES),
                "official",
                "headline LFW/YTF protocol (all three are computed)",
            ),
            ParamSpec::new("lfw_pairs", ParamType::Str, "lfw/pairs.txt", "LFW View 2 pairs file, under `data`"),
            ParamSpec::new(
                "ytf_splits",
                ParamType::Str,
                "ytf/splits.txt",
                "YouTube Faces splits file, under `data`",
            ),
            ParamSpec::new(
                "fars",
                ParamType::list(ParamType::float_range(0.0, 1.0)),
                vec![1e-3, 1e-4],
                "FARs for TAR on LFW/YTF pairs",
            ),
            ParamSpec::new(
                "distractor_sizes",
                ParamType::list(ParamType::Int { min: Some(1), max: None }),
                vec![10, 100, 1_000, 10_000, 100_000, 1_000_000],
                "MegaFace distractor set sizes (the first N distractors; those the data reaches)",
            ),
            ParamSpec::new(
                "megaface_far",
                ParamType::float_range(0.0, 1.0),
                1e-6,
                "MegaFace verification FAR (raised to what the impostor count can measure)",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::one("data", "the dataset root holding the protocol files (a synth stage or a dataset)"),
            InputSpec::one("lfw", "LFW features (extract/ensemble)").optional(),
            InputSpec::one("ytf", "YouTube Faces features (extract/ensemble)").optional(),
            InputSpec::one("facescrub", "MegaFace probe (FaceScrub) features").optional(),
            InputSpec::one("distractors", "MegaFace distractor features, in list order").optional(),
            InputSpec::one("model", "the train stage, for its curve and settings").optional(),
        ]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let input = |n: &str| ctx.inputs.many(n).first().cloned();
        let (lfw, ytf, fs, dis, model) = (input("lfw"), input("ytf"), input("facescrub"), input("distractors"), input("model"));
        if lfw.is_none() && ytf.is_none() && fs.is_none() {
            bail!("nothing to evaluate: bind at least one of `lfw`, `ytf`, `facescrub`");
        }
        if dis.is_some() && fs.is_none() {
            bail!("`distractors` needs `facescrub` probes");
        }
        let mut e = Evaluation::new(ctx)?;
        if let Some(dir) = &lfw {
            e.lfw(dir)?;
        }
        if let Some(dir) = &ytf {
            e.ytf(dir)?;
        }
        if let Some(dir) = &fs {
            e.megaface(dir, dis.as_deref())?;
        }
        e.write(model.as_deref())
    }
}

/// One evaluation in progress: the metrics and plots gathered so far, protocol by protocol.
struct Evaluation<'a> {
    ctx: &'a StageContext<'a>,
    p: &'a spherepipe_stage::Params,
    data: &'a Path,
    headline: Protocol,
    fars: Vec<f64>,
    metrics: serde_json::Map<String, Value>,
    fisher: serde_json::Map<String, Value>,
    plots: report::Plots,
}

impl<'a> Evaluation<'a> {
    fn new(ctx: &'a StageContext<'a>) -> anyhow::Result<Self> {
        Ok(Evaluation {
            ctx,
            p: ctx.params,
            data: ctx.inputs.one("data")?,
            headline: Protocol::parse(ctx.params.str("protocol")?).context("protocol")?,
            fars: ctx.params.get("fars")?,
            metrics: serde_json::Map::new(),
            fisher: serde_json::Map::new(),
            plots: report::Plots::default(),
        })
    }

    /// LFW 10-fold verification over `pairs.txt`, and the angular Fisher score of its features.
    fn lfw(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.ctx.progress.message("LFW");
        let f = features_of(dir, "lfw")?;
        let index: HashMap<&str, usize> = f.meta.iter().enumerate().map(|(i, m)| (m.source.as_str(), i)).collect();
        let pairs_file = self.data.join(self.p.str("lfw_pairs")?);
        let listed = read_lfw_pairs(&pairs_file)?;
        let mut pairs = Vec::new();
        let mut missing = Vec::new();
        for q in &listed {
            match (index.get(q.a.rel_path().as_str()), index.get(q.b.rel_path().as_str())) {
                (Some(&a), Some(&b)) => pairs.push(Pair {
                    a: f.row(a),
                    b: f.row(b),
                    same: q.same,
                    fold: q.fold,
                }),
                _ => missing.push(format!("{} / {}", q.a.rel_path(), q.b.rel_path())),
            }
        }
        if pairs.is_empty() {
            bail!(
                "none of the {} pairs in {} has both images among the LFW features: bind `lfw` to the features of that LFW",
                listed.len(),
                pairs_file.display()
            );
        }
        let mut v = verification(&pairs, self.headline, &self.fars)?;
        v["pairs_listed"] = json!(listed.len());
        v["pairs_skipped"] = json!(missing);
        self.plots.roc.push(("LFW".into(), v["roc"]["curve"].clone()));
        self.metrics.insert("lfw".into(), v);
        let labels = dense_labels(f.meta.iter().map(|m| m.identity.clone()));
        self.fisher
            .insert("lfw".into(), json!(angular_fisher_score(&f.values, f.dim, &labels)));
        self.plots.features = Some((f.clone(), labels));
        Ok(())
    }

    /// YouTube Faces: each video's mean feature, then 10-fold verification over `splits.txt`.
    fn ytf(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.ctx.progress.message("YouTube Faces");
        let f = features_of(dir, "ytf")?;
        // Mean feature per video.
        let mut videos: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
        for (i, m) in f.meta.iter().enumerate() {
            let Some(v) = &m.video else {
                bail!("{} has no video id: bind `ytf` to features of YouTube Faces frames", m.source);
            };
            let e = videos.entry(v.clone()).or_insert_with(|| (vec![0.0; f.dim], 0));
            e.0.iter_mut().zip(f.row(i)).for_each(|(s, &x)| *s += x as f64);
            e.1 += 1;
        }
        let means: BTreeMap<String, Vec<f32>> = videos
            .into_iter()
            .map(|(k, (s, n))| (k, s.into_iter().map(|x| (x / n as f64) as f32).collect()))
            .collect();
        let splits_file = self.data.join(self.p.str("ytf_splits")?);
        let listed = read_ytf_splits(&splits_file)?;
        let mut pairs = Vec::new();
        let mut missing = Vec::new();
        for q in &listed {
            match (means.get(&q.a), means.get(&q.b)) {
                (Some(a), Some(b)) => pairs.push(Pair {
                    a,
                    b,
                    same: q.same,
                    fold: q.split - 1,
                }),
                _ => missing.push(format!("{} / {}", q.a, q.b)),
            }
        }
        if pairs.is_empty() {
            bail!(
                "none of the {} pairs in {} has both videos among the YTF features",
                listed.len(),
                splits_file.display()
            );
        }
        let mut v = verification(&pairs, self.headline, &self.fars)?;
        v["videos"] = json!(means.len());
        v["pairs_listed"] = json!(listed.len());
        v["pairs_skipped"] = json!(missing);
        self.plots.roc.push(("YTF".into(), v["roc"]["curve"].clone()));
        self.metrics.insert("ytf".into(), v);
        Ok(())
    }

    /// MegaFace: FaceScrub probes against the distractors streamed from Parquet.
    fn megaface(&mut self, dir: &Path, distractors: Option<&Path>) -> anyhow::Result<()> {
        self.ctx.progress.message("MegaFace");
        let probes = features_of(dir, "facescrub")?;
        let labels = dense_labels(probes.meta.iter().map(|m| m.identity.clone()));
        self.fisher
            .insert("facescrub".into(), json!(angular_fisher_score(&probes.values, probes.dim, &labels)));
        if self.plots.features.is_none() {
            self.plots.features = Some((probes.clone(), labels.clone()));
        }
        let sizes: Vec<usize> = self.p.get("distractor_sizes")?;
        let mut search = Search::new(
            probes.values.clone(),
            labels.clone(),
            probes.dim,
            &sizes,
            self.p.f64("megaface_far")?,
        )?;
        if let Some(d) = distractors {
            let file = d.join("features.parquet");
            let mut reader = FeatureReader::open(&file).context("`distractors` must be an extract or ensemble stage")?;
            while let Some(b) = reader.next_rows(8192)? {
                self.ctx.cancel.check()?;
                if b.dim != probes.dim {
                    bail!(
                        "distractor features have {} values, probes {}: extract both with the same model",
                        b.dim,
                        probes.dim
                    );
                }
                search.push(&b.values)?;
            }
        }
        let seen = search.seen();
        let results = search.finish();
        let identities = labels.iter().collect::<std::collections::BTreeSet<_>>().len();
        self.plots.cmc = results
            .iter()
            .map(|r| (format!("{} distractors", r.distractors), r.cmc.clone()))
            .collect();
        self.metrics.insert(
            "megaface".into(),
            json!({
                "probes": probes.len(),
                "identities": identities,
                "distractors": seen,
                "sizes": results,
                "note": if results.is_empty() { "fewer distractors than the smallest set size: no identification figures" } else { "" },
            }),
        );
        Ok(())
    }

    /// `metrics.json` (with the model's card and the headline), `report.md` and its figures,
    /// `summary.txt`.
    fn write(mut self, model: Option<&Path>) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let mut metrics = std::mem::take(&mut self.metrics);
        metrics.insert("angular_fisher_score".into(), Value::Object(std::mem::take(&mut self.fisher)));
        let mut plots = self.plots;
        if let Some(m) = model {
            let info: Value = std::fs::read_to_string(m.join("model.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            metrics.insert("model".into(), info);
            plots.curve = report::read_curve(&m.join("metrics.csv"));
        }
        let headline = report::headline(&Value::Object(metrics.clone()));
        metrics.insert("headline".into(), serde_json::to_value(&headline)?);
        let metrics = Value::Object(metrics);
        std::fs::write(ctx.out_dir.join("metrics.json"), serde_json::to_string_pretty(&metrics)?)?;
        let images = plots.draw(ctx.out_dir)?;
        std::fs::write(ctx.out_dir.join("report.md"), report::markdown(&metrics, &images))?;
        let summary = report::summary(&metrics);
        std::fs::write(ctx.out_dir.join("summary.txt"), format!("{summary}\n"))?;
        ctx.progress.message(&summary);
        Ok(())
    }
}
