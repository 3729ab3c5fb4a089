//! `metrics.json`, every number an evaluation produced, as one serde struct: the evaluate stage
//! writes it and reads it back through the same type (as will any tool that reports it), so a
//! field cannot be renamed on one side only. `compare` and `spherepipe metrics` read just its
//! `headline` (`spherepipe-headline`).

use serde::{Deserialize, Serialize};
use spherepipe_face_eval::roc::Roc;
use spherepipe_face_eval::search::SizeResult;
use spherepipe_face_eval::verify::{Protocol, TenFold};
use spherepipe_headline::Headline;
use spherepipe_model_card::ModelCard;
use spherepipe_stage::Contract;
use std::collections::BTreeMap;

/// Everything an evaluation measured, section by section (a section is absent when its
/// features were not bound).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// The evaluated model's card, when `model` was bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelCard>,
    /// LFW View 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfw: Option<Verification>,
    /// YouTube Faces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ytf: Option<Verification>,
    /// Verification bins (CFP-FP, AgeDB-30, ...), in the order bound, each under its set's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bins: Vec<SetVerification>,
    /// MegaFace challenge 1 (FaceScrub probes against the distractors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub megaface: Option<MegaFace>,
    /// The angular Fisher score (Appendix E) per feature set; null when undefined (one class).
    pub angular_fisher_score: BTreeMap<String, Option<f64>>,
    /// The key figures other stages tabulate.
    pub headline: Headline,
}

/// 10-fold verification over a pair list (LFW pairs or YTF video pairs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// The headline protocol.
    pub protocol: Protocol,
    /// Its mean accuracy over the ten folds.
    pub accuracy: f64,
    /// Its standard deviation over the folds.
    pub std: f64,
    /// Pairs scored.
    pub pairs: usize,
    /// Pairs in the list.
    pub pairs_listed: usize,
    /// Pairs not scored (an image or video had no features), as `a / b`.
    pub pairs_skipped: Vec<String>,
    /// Videos with features (YTF only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub videos: Option<usize>,
    /// Every protocol's ten folds, by protocol name.
    pub protocols: BTreeMap<String, TenFold>,
    /// The headline protocol's ROC.
    pub roc: Roc,
}

/// One verification bin's results, under the name papers give its set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVerification {
    /// `LFW`, `CFP-FP`, `AgeDB-30`, ...
    pub set: String,
    /// Its 10-fold verification (the headline protocol: `sum-l2`, as insightface reports bins).
    pub verification: Verification,
}

/// MegaFace identification and verification at each distractor set size reached.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MegaFace {
    /// FaceScrub probe images.
    pub probes: usize,
    /// Their identities.
    pub identities: usize,
    /// Distractors read.
    pub distractors: usize,
    /// The figures per set size, smallest first.
    pub sizes: Vec<SizeResult>,
    /// Why `sizes` is empty, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Contract for Metrics {
    const FILE: &'static str = "metrics.json";
    const WRITER: &'static str = "evaluate";
    const BIND: &'static str = "bind it to an evaluate stage";
}

impl Metrics {
    /// The largest distractor set's figures.
    pub fn megaface_last(&self) -> Option<&SizeResult> {
        self.megaface.as_ref().and_then(|m| m.sizes.last())
    }

    /// The verification sections present, with their display names: LFW and YTF from their
    /// protocol files, then each bin.
    pub fn verifications(&self) -> impl Iterator<Item = (&str, &Verification)> {
        [("LFW", &self.lfw), ("YTF", &self.ytf)]
            .into_iter()
            .filter_map(|(name, v)| v.as_ref().map(|v| (name, v)))
            .chain(self.bins.iter().map(|b| (b.set.as_str(), &b.verification)))
    }
}
