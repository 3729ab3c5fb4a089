//! Face-recognition evaluation maths, with no files and no tensor backend: numbers in,
//! numbers out, so each protocol can be checked against hand-computed cases.
//!
//! - [`verify`]: LFW View 2 / YouTube Faces 10-fold verification (official, unflipped, sum-l2).
//! - [`roc`]: ROC curve, AUC, EER, TAR at a FAR.
//! - [`search`]: MegaFace identification (CMC) and verification, streamed over distractors.
//! - [`fisher`]: the angular Fisher score (paper, Appendix E).

#![warn(missing_docs)]

pub mod fisher;
mod nullable;
/// Paired tests of two methods over the same folds (t and Wilcoxon signed rank).
pub mod paired;
pub mod roc;
pub mod search;
pub mod verify;

/// Inputs the evaluation maths cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// Verification got no pairs.
    #[error("no pairs to evaluate")]
    NoPairs,
    /// Features must hold FC1 of the face and of its mirror.
    #[error("features have {0} values; expected face + mirror (an even number)")]
    OddFeatures(usize),
    /// The two features of a pair (or two pairs) differ in length.
    #[error("pair features differ in length ({a} and {b}, expected {expected})")]
    MixedLengths {
        /// Length of the first feature.
        a: usize,
        /// Length of the second.
        b: usize,
        /// The length of the first pair's features.
        expected: usize,
    },
    /// Ten-fold verification needs folds to train thresholds on.
    #[error("verification needs at least 2 folds")]
    TooFewFolds,
    /// A fold (1-based) with no pairs to test.
    #[error("fold {0} has no pairs")]
    EmptyFold(usize),
    /// The probe matrix does not have `probes × dim` values.
    #[error("{values} probe values for {probes} probes of {dim}")]
    ProbeShape {
        /// Values given.
        values: usize,
        /// Probes (identities given).
        probes: usize,
        /// Values per feature.
        dim: usize,
    },
    /// A distractor block is not whole rows.
    #[error("{values} distractor values is not a multiple of {dim}")]
    DistractorShape {
        /// Values given.
        values: usize,
        /// Values per feature.
        dim: usize,
    },
}

pub use search::l2_normalize;
