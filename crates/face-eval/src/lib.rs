//! Face-recognition evaluation maths, with no files and no tensor backend: numbers in,
//! numbers out, so each protocol can be checked against hand-computed cases.
//!
//! - [`verify`]: LFW View 2 / YouTube Faces 10-fold verification (official, unflipped, sum-l2).
//! - [`roc`]: ROC curve, AUC, EER, TAR at a FAR.
//! - [`search`]: MegaFace identification (CMC) and verification, streamed over distractors.
//! - [`fisher`]: the angular Fisher score (paper, Appendix E).

pub mod fisher;
pub mod roc;
pub mod search;
pub mod verify;

pub use search::l2_normalize;
