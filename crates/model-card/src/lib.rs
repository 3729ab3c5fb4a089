//! `model.json`, the contract between a `train` artifact and the stages that use the model
//! (`extract` rebuilds the network from it; `evaluate` reports it): one serde struct, written and
//! read here, so a field cannot be misspelt on one side only. It has no deep-learning
//! dependency, so a stage that only reads the card does not build burn.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use spherepipe_face_loader::Channels;
pub use spherepipe_stage::Contract;
use std::collections::BTreeMap;

/// Network shape: depth, width multiplier, feature size and input size.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SphereConfig {
    /// 4, 10, 20, 36 or 64 layers.
    pub depth: usize,
    /// Channel multiplier on the paper's 64/128/256/512.
    pub width: f64,
    /// FC1 (embedding) size.
    pub features: usize,
    /// Input [height, width] in pixels.
    pub input: [usize; 2],
}

impl SphereConfig {
    /// The paper's network of `depth` layers: full width, 512 features, 112×96 input.
    pub fn new(depth: usize) -> Self {
        SphereConfig {
            depth,
            width: 1.0,
            features: 512,
            input: [112, 96],
        }
    }
    /// Channels of each stage after the width multiplier (at least 1).
    pub fn channels(&self) -> [usize; 4] {
        [64, 128, 256, 512].map(|c| ((c as f64 * self.width).round() as usize).max(1))
    }
    /// Spatial size after the four stride-2 convolutions (padding 1, kernel 3).
    pub fn final_size(&self) -> [usize; 2] {
        self.input.map(|s| (0..4).fold(s, |s, _| (s + 2 - 3) / 2 + 1))
    }
}

/// What a trained model is: the network, its input, its head, and how it was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Depth, width multiplier, FC1 size and input [height, width].
    pub net: SphereConfig,
    /// The `patch` param the model was trained with: null (the whole face) or `{name, box}`.
    pub patch: serde_json::Value,
    /// The order of the colour planes the network was fed; features must be extracted in it.
    pub channels: Channels,
    /// The classifier is a plain softmax with bias (`fc6.bias` exists).
    pub softmax_head: bool,
    /// Training identities (columns of `fc6.weight`).
    pub classes: usize,
    /// The loss's name, as in the `loss` param.
    pub loss: String,
    /// Every resolved param of the train stage.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Training steps (0: the `init` weights as given).
    pub steps: u64,
    /// Mean loss of the last 20 steps; null when nothing was trained.
    pub final_loss: Option<f64>,
    /// Mean training accuracy of the last 20 steps; null when nothing was trained.
    pub final_accuracy: Option<f64>,
}

impl Contract for ModelCard {
    const FILE: &'static str = "model.json";
    const WRITER: &'static str = "train";
    const BIND: &'static str = "bind `model` to a train stage";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_follows_the_paper() {
        let c = SphereConfig::new(20);
        assert_eq!(c.channels(), [64, 128, 256, 512]);
        // 112×96 halved four times (kernel 3, stride 2, padding 1): 56×48, 28×24, 14×12, 7×6.
        assert_eq!(c.final_size(), [7, 6]);
        assert_eq!(SphereConfig { width: 0.25, ..c }.channels(), [16, 32, 64, 128]);
        assert_eq!(SphereConfig { width: 0.001, ..c }.channels(), [1, 1, 1, 1]);
    }

    fn card() -> ModelCard {
        ModelCard {
            net: SphereConfig {
                depth: 4,
                width: 0.25,
                features: 32,
                input: [112, 96],
            },
            patch: serde_json::Value::Null,
            channels: Channels::Bgr,
            softmax_head: false,
            classes: 10,
            loss: "a-softmax".into(),
            params: BTreeMap::from([("m".to_owned(), serde_json::json!(4))]),
            steps: 0,
            final_loss: None,
            final_accuracy: None,
        }
    }

    #[test]
    fn a_card_reads_back_as_written() {
        let d = tempfile::tempdir().unwrap();
        card().write(d.path()).unwrap();
        assert_eq!(ModelCard::read(d.path()).unwrap(), card());
        let text = std::fs::read_to_string(d.path().join("model.json")).unwrap();
        assert!(text.contains("\"channels\": \"bgr\""), "{text}");
    }

    #[test]
    fn missing_or_unknown_fields_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(card()).unwrap();
        v.as_object_mut().unwrap().remove("channels");
        std::fs::write(d.path().join("model.json"), v.to_string()).unwrap();
        let e = format!("{:#}", ModelCard::read(d.path()).unwrap_err());
        assert!(
            e.contains("model.json is not the model.json") && e.contains("missing field `channels`"),
            "{e}"
        );
        v["channels"] = "bgr".into();
        v["colour"] = "bgr".into();
        std::fs::write(d.path().join("model.json"), v.to_string()).unwrap();
        let e = format!("{:#}", ModelCard::read(d.path()).unwrap_err());
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = format!("{:#}", ModelCard::read(&d.path().join("nowhere")).unwrap_err());
        assert!(e.contains("has no model.json: bind `model` to a train stage"), "{e}");
    }
}
