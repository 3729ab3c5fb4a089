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

#![warn(missing_docs)]

mod figures;
/// `metrics.json` as typed structs.
pub mod metrics;
/// `report.md`, the headline row and the run summary, from `metrics.json`.
pub mod report;

use anyhow::{bail, Context};
use metrics::{MegaFace, Metrics, SetVerification, Verification};
use spherepipe_face_datasets::{read_lfw_pairs, read_ytf_splits};
use spherepipe_face_eval::fisher::angular_fisher_score;
use spherepipe_face_eval::roc::{lowest_measurable_far, roc};
use spherepipe_face_eval::search::Search;
use spherepipe_face_eval::verify::{ten_fold, Pair, Protocol};
use spherepipe_face_table::features::{read_features, FeatureReader, Features};
use spherepipe_face_table::pairs::VerificationPairs;
use spherepipe_model_card::ModelCard;
use spherepipe_stage::{Contract, InputSpec, ParamSpec, ParamType, Stage, StageContext};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The `evaluate` stage kind.
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

/// The fold of pair `k` of `n` when ten folds take the pairs in order, the first `n % 10` one
/// pair larger (scikit-learn's `KFold(10)` without shuffling, as insightface's
/// `verification.py` splits a bin).
pub fn fold_in_order(k: usize, n: usize) -> usize {
    let (base, extra) = (n / 10, n % 10);
    let big = extra * (base + 1);
    if k < big {
        k / (base + 1)
    } else {
        extra + (k - big) / base.max(1)
    }
}

/// A bin's pairs over its features: image `i` is the row whose `source` ends in `#i`; a pair
/// with an image missing (undecodable, or not extracted) is skipped and listed.
fn bin_verification(f: &Features, listed: &VerificationPairs, fars: &[f64]) -> anyhow::Result<Verification> {
    let index: HashMap<usize, usize> = f
        .meta
        .iter()
        .enumerate()
        .filter_map(|(row, m)| Some((m.source.rsplit_once('#')?.1.parse().ok()?, row)))
        .collect();
    let n = listed.same.len();
    let mut pairs = Vec::new();
    let mut skipped = Vec::new();
    for (k, &same) in listed.same.iter().enumerate() {
        match (index.get(&(2 * k)), index.get(&(2 * k + 1))) {
            (Some(&a), Some(&b)) => pairs.push(Pair {
                a: f.row(a),
                b: f.row(b),
                same,
                fold: fold_in_order(k, n),
            }),
            _ => skipped.push(format!("{} / {}", 2 * k, 2 * k + 1)),
        }
    }
    if pairs.is_empty() {
        bail!("none of the {n} pairs of {} has both images among its features", listed.set);
    }
    verification(&pairs, Protocol::SumL2, fars, n, skipped)
}

/// Verification in all three protocols, the headline one first, plus its ROC; `listed` pairs
/// were in the list, `skipped` of them had no features.
fn verification(pairs: &[Pair<'_>], headline: Protocol, fars: &[f64], listed: usize, skipped: Vec<String>) -> anyhow::Result<Verification> {
    let mut protocols = BTreeMap::new();
    for name in Protocol::NAMES {
        let p = Protocol::parse(name).context("protocol name")?;
        protocols.insert(name.to_owned(), ten_fold(pairs, p)?);
    }
    let head = protocols.get(headline.name()).context("headline protocol")?;
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    // Also the lowest FAR these impostor pairs can measure, when every asked one is too low.
    let impostors = same.iter().filter(|s| !**s).count() as u64;
    let floor = fars.iter().copied().fold(1.0, f64::min);
    let lowest = lowest_measurable_far(impostors, floor);
    let mut fars = fars.to_vec();
    if !fars.iter().any(|&f| f >= lowest) {
        fars.push(lowest);
    }
    Ok(Verification {
        protocol: headline,
        accuracy: head.mean,
        std: head.std,
        pairs: pairs.len(),
        pairs_listed: listed,
        pairs_skipped: skipped,
        videos: None,
        roc: roc(&head.scores, &same, &fars),
        protocols,
    })
}

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> &'static str {
        // 2: figures drawn with plotters as SVG and PNG, the ROC on a log FAR axis; metrics.json
        // written from a typed struct (its key order, no empty `note`).
        "2"
    }
    fn figures(&self) -> Vec<(&'static str, &'static str)> {
        figures::FIGURES.to_vec()
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
            InputSpec::many("bins", "verification bins: their unpack stages (format: bin), for the pairs").optional(),
            InputSpec::many("bin_features", "the features of those bins' faces (extract/ensemble), one per bin").optional(),
        ]
    }
    fn validate(&self, p: &spherepipe_stage::Params) -> Result<(), spherepipe_stage::InvalidParams> {
        EvaluateParams::from_params(p)?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let input = |n: &str| ctx.inputs.many(n).first().cloned();
        let (lfw, ytf, fs, dis, model) = (input("lfw"), input("ytf"), input("facescrub"), input("distractors"), input("model"));
        let (bins, bin_features) = (ctx.inputs.many("bins"), ctx.inputs.many("bin_features"));
        if lfw.is_none() && ytf.is_none() && fs.is_none() && bin_features.is_empty() {
            bail!("nothing to evaluate: bind at least one of `lfw`, `ytf`, `facescrub`, `bin_features`");
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
        e.bins(bins, bin_features)?;
        e.write(model.as_deref())
    }
}

/// Every `evaluate` param, read once; `validate` and `run` both go through it.
#[derive(Debug, Clone)]
pub struct EvaluateParams {
    /// The headline LFW/YTF protocol.
    pub protocol: Protocol,
    /// LFW's pairs file, relative to `data`.
    pub lfw_pairs: String,
    /// YouTube Faces' splits file, relative to `data`.
    pub ytf_splits: String,
    /// FARs to read TAR at on LFW/YTF pairs.
    pub fars: Vec<f64>,
    /// MegaFace distractor set sizes.
    pub distractor_sizes: Vec<usize>,
    /// MegaFace's verification FAR.
    pub megaface_far: f64,
}

impl EvaluateParams {
    /// Reads and checks every param.
    pub fn from_params(p: &spherepipe_stage::Params) -> anyhow::Result<EvaluateParams> {
        let name = p.str("protocol")?;
        Ok(EvaluateParams {
            protocol: Protocol::parse(name)
                .with_context(|| format!("param `protocol`: unknown protocol `{name}` (use one of {:?})", Protocol::NAMES))?,
            lfw_pairs: p.str("lfw_pairs")?.to_owned(),
            ytf_splits: p.str("ytf_splits")?.to_owned(),
            fars: p.get("fars")?,
            distractor_sizes: p.get("distractor_sizes")?,
            megaface_far: p.f64("megaface_far")?,
        })
    }
}

/// One evaluation in progress: the metrics and plots gathered so far, protocol by protocol.
struct Evaluation<'a> {
    ctx: &'a StageContext<'a>,
    p: EvaluateParams,
    data: &'a Path,
    metrics: Metrics,
    plots: figures::Plots,
}

impl<'a> Evaluation<'a> {
    fn new(ctx: &'a StageContext<'a>) -> anyhow::Result<Self> {
        Ok(Evaluation {
            ctx,
            p: EvaluateParams::from_params(ctx.params)?,
            data: ctx.inputs.one("data")?,
            metrics: Metrics::default(),
            plots: figures::Plots::default(),
        })
    }

    /// LFW 10-fold verification over `pairs.txt`, and the angular Fisher score of its features.
    fn lfw(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.ctx.progress.message("LFW");
        let f = features_of(dir, "lfw")?;
        let index: HashMap<&str, usize> = f.meta.iter().enumerate().map(|(i, m)| (m.source.as_str(), i)).collect();
        let pairs_file = self.data.join(&self.p.lfw_pairs);
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
        let v = verification(&pairs, self.p.protocol, &self.p.fars, listed.len(), missing)?;
        self.plots.roc.push(("LFW".into(), v.roc.curve.clone()));
        self.metrics.lfw = Some(v);
        let labels = dense_labels(f.meta.iter().map(|m| m.identity.clone()));
        let fisher = angular_fisher_score(&f.values, f.dim, &labels);
        self.metrics.angular_fisher_score.insert("lfw".into(), fisher);
        self.plots.features = Some((f.clone(), labels));
        Ok(())
    }

    /// Each verification bin's features, scored over its pairs (matched to them by set name):
    /// face and mirror summed and L2-normalised, ten folds in file order (as insightface's
    /// `verification.py`), the headline protocol `sum-l2`.
    fn bins(&mut self, bins: &[PathBuf], features: &[PathBuf]) -> anyhow::Result<()> {
        let mut by_set = HashMap::new();
        for dir in bins {
            let pairs = VerificationPairs::read(dir)?;
            by_set.insert(pairs.set.clone(), pairs);
        }
        for dir in features {
            let f = features_of(dir, "bin_features")?;
            let set = f.meta.first().map(|m| m.dataset.clone()).unwrap_or_default();
            self.ctx.progress.message(&set);
            let Some(listed) = by_set.get(&set) else {
                let known: Vec<&String> = by_set.keys().collect();
                bail!("`bin_features` holds features of set `{set}`, but no stage bound to `bins` unpacked it (bins bound: {known:?}): bind the unpack stage of that bin to `bins`");
            };
            let v = bin_verification(&f, listed, &self.p.fars)?;
            self.plots.roc.push((set.clone(), v.roc.curve.clone()));
            self.metrics.bins.push(SetVerification { set, verification: v });
        }
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
        let splits_file = self.data.join(&self.p.ytf_splits);
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
        let v = verification(&pairs, self.p.protocol, &self.p.fars, listed.len(), missing)?;
        self.plots.roc.push(("YTF".into(), v.roc.curve.clone()));
        self.metrics.ytf = Some(Verification {
            videos: Some(means.len()),
            ..v
        });
        Ok(())
    }

    /// MegaFace: FaceScrub probes against the distractors streamed from Parquet.
    fn megaface(&mut self, dir: &Path, distractors: Option<&Path>) -> anyhow::Result<()> {
        self.ctx.progress.message("MegaFace");
        let probes = features_of(dir, "facescrub")?;
        let labels = dense_labels(probes.meta.iter().map(|m| m.identity.clone()));
        let fisher = angular_fisher_score(&probes.values, probes.dim, &labels);
        self.metrics.angular_fisher_score.insert("facescrub".into(), fisher);
        if self.plots.features.is_none() {
            self.plots.features = Some((probes.clone(), labels.clone()));
        }
        let mut search = Search::new(
            probes.values.clone(),
            labels.clone(),
            probes.dim,
            &self.p.distractor_sizes,
            self.p.megaface_far,
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
        self.metrics.megaface = Some(MegaFace {
            probes: probes.len(),
            identities,
            distractors: seen,
            note: results
                .is_empty()
                .then(|| "fewer distractors than the smallest set size: no identification figures".into()),
            sizes: results,
        });
        Ok(())
    }

    /// `metrics.json` (with the model's card and the headline), `report.md` and its figures,
    /// `summary.txt`.
    fn write(self, model: Option<&Path>) -> anyhow::Result<()> {
        let (ctx, mut metrics, mut plots) = (self.ctx, self.metrics, self.plots);
        if let Some(m) = model {
            metrics.model = Some(ModelCard::read(m)?);
            plots.curve = figures::read_curve(&m.join("metrics.csv"));
        }
        metrics.headline = report::headline(&metrics);
        metrics.write(ctx.out_dir)?;
        let images = plots.draw(ctx.out_dir)?;
        std::fs::write(ctx.out_dir.join("report.md"), report::markdown(&metrics, &images))?;
        let summary = report::summary(&metrics);
        std::fs::write(ctx.out_dir.join("summary.txt"), format!("{summary}\n"))?;
        ctx.progress.message(&summary);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 pairs in 10 folds, one genuine and one impostor per fold: genuine pairs are the same
    /// feature, impostors opposite ones, so every protocol separates them perfectly.
    fn perfect() -> Verification {
        let (x, y) = (vec![1.0f32, 0.5, 1.0, 0.5], vec![-1.0f32, -0.5, -1.0, -0.5]);
        let pairs: Vec<Pair<'_>> = (0..20)
            .map(|i| Pair {
                a: &x,
                b: if i % 2 == 0 { &x } else { &y },
                same: i % 2 == 0,
                fold: i / 2,
            })
            .collect();
        verification(&pairs, Protocol::Official, &[1e-3], 21, vec!["a.jpg / b.jpg".into()]).unwrap()
    }

    #[test]
    fn a_perfect_separation_reads_as_one_in_every_figure() {
        let v = perfect();
        assert_eq!((v.accuracy, v.std, v.pairs), (1.0, 0.0, 20));
        assert_eq!(v.protocols.len(), 3);
        assert!(v.protocols.values().all(|r| r.mean == 1.0 && r.folds.len() == 10));
        assert_eq!((v.roc.auc, v.roc.eer, v.roc.impostor), (1.0, 0.0, 10));
        // 10 impostors cannot measure FAR 10⁻³; the lowest they can (10⁻¹) is added.
        let fars: Vec<f64> = v.roc.tar_at_far.iter().map(|t| t.far).collect();
        assert_eq!(fars, [1e-3, 0.1]);
        let m = Metrics {
            lfw: Some(v),
            ..Metrics::default()
        };
        assert_eq!(report::summary(&m), "LFW accuracy 100.00% ± 0.00 (official, 20 pairs)");
        let md = report::markdown(&m, &[("ROC".into(), "roc.svg".into())]);
        for part in [
            "21 listed",
            "**1 pairs skipped**",
            "| official (headline) | 100.00% | 0.00 | 100.0 100.0",
            "AUC 1.0000, EER 0.00%.",
            "| 0.1 | 100.00% |",
            "![ROC](roc.svg)",
        ] {
            assert!(md.contains(part), "{part} missing from\n{md}");
        }
        let h = report::headline(&m);
        assert_eq!(h.0[0], ("LFW".to_owned(), serde_json::json!(1.0)));
    }

    #[test]
    fn metrics_read_back_as_written_nan_and_null_included() {
        let mut v = perfect();
        v.roc.auc = f64::NAN;
        let mut m = Metrics {
            ytf: Some(Verification { videos: Some(7), ..v }),
            ..Metrics::default()
        };
        m.angular_fisher_score.insert("lfw".into(), None);
        m.headline = report::headline(&m);
        let d = tempfile::tempdir().unwrap();
        m.write(d.path()).unwrap();
        let back = Metrics::read(d.path()).unwrap();
        let y = back.ytf.as_ref().unwrap();
        assert!(y.roc.auc.is_nan() && y.videos == Some(7) && back.lfw.is_none());
        assert_eq!(back.angular_fisher_score["lfw"], None);
        assert_eq!(back.headline, m.headline);
        // An unknown key is refused, naming the file and the fix.
        let mut raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("metrics.json")).unwrap()).unwrap();
        raw["lwf"] = serde_json::json!({});
        std::fs::write(d.path().join("metrics.json"), raw.to_string()).unwrap();
        let e = format!("{:#}", Metrics::read(d.path()).unwrap_err());
        assert!(
            e.contains("metrics.json is not the metrics.json") && e.contains("unknown field `lwf`"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod bin_tests {
    use super::*;
    use spherepipe_face_table::features::FeatureMeta;

    #[test]
    fn ten_folds_in_order_as_kfold_makes_them() {
        // sklearn: KFold(10).split(range(23)) gives folds of 3, 3, 3, 2, 2, 2, 2, 2, 2, 2.
        let folds: Vec<usize> = (0..23).map(|k| fold_in_order(k, 23)).collect();
        let sizes: Vec<usize> = (0..10).map(|f| folds.iter().filter(|&&x| x == f).count()).collect();
        assert_eq!(sizes, [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert!(folds.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!((0..6000).map(|k| fold_in_order(k, 6000)).filter(|&f| f == 9).count(), 600);
    }

    #[test]
    fn a_bins_pairs_are_matched_by_image_index_and_scored() {
        // 20 pairs; genuine pairs share a feature, impostors point opposite ways; image 5 (pair
        // 2's second) is missing, so pair 2 is skipped.
        let same: Vec<bool> = (0..20).map(|k| k % 2 == 0).collect();
        let mut meta = Vec::new();
        let mut values = Vec::new();
        for i in 0..40usize {
            if i == 5 {
                continue;
            }
            let k = i / 2;
            let v: [f32; 4] = if same[k] || i % 2 == 0 {
                [1.0, 0.2, 1.0, 0.2]
            } else {
                [-1.0, 0.1, -1.0, 0.1]
            };
            meta.push(FeatureMeta {
                source: format!("cfp_fp.bin#{i}"),
                identity: format!("CFP-FP/{k}"),
                dataset: "CFP-FP".into(),
                video: None,
            });
            values.extend_from_slice(&v);
        }
        let f = Features { dim: 4, meta, values };
        let listed = VerificationPairs {
            set: "CFP-FP".into(),
            same,
            undecodable: vec![5],
        };
        let v = bin_verification(&f, &listed, &[1e-3]).unwrap();
        assert_eq!(
            (v.pairs, v.pairs_listed, v.pairs_skipped.clone()),
            (19, 20, vec!["4 / 5".to_owned()])
        );
        assert_eq!(v.protocol, Protocol::SumL2);
        assert!((v.accuracy - 1.0).abs() < 1e-12, "{}", v.accuracy);
    }
}
