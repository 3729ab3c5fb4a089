//! `pairs.json`, the contract between an `unpack` artifact of a verification bin and `evaluate`:
//! which images make each pair, and whether the pair is one person. The face table beside it
//! holds the images in the bin's order (`source` is `<set>.bin#<index>`), less any that could
//! not be decoded.

use serde::{Deserialize, Serialize};
use spherepipe_stage::Contract;

/// A verification set's pairs, as its bin lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationPairs {
    /// The set's name as papers write it (`LFW`, `CFP-FP`, `AgeDB-30`, ...).
    pub set: String,
    /// Pair `k` is images `2k` and `2k + 1`; true when they show one person.
    pub same: Vec<bool>,
    /// Indices of the images that could not be decoded (their pairs cannot be scored).
    pub undecodable: Vec<usize>,
}

impl Contract for VerificationPairs {
    const FILE: &'static str = "pairs.json";
    const WRITER: &'static str = "unpack";
    const BIND: &'static str = "bind `bins` to unpack stages of verification bins (format: bin)";
}

/// The `source` of a bin's image `index` in the face table (and the features after it).
pub fn bin_source(set_file: &str, index: usize) -> String {
    format!("{set_file}#{index}")
}
