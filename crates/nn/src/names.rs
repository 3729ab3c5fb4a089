//! Parameter names in files. Weights are written and read under the names of the public
//! PyTorch `sphere20a` model and the official Caffe prototxts (`conv1_1`, `relu1_1`, …, `fc5`,
//! `fc6`), generalised to every depth, so the published converted checkpoint loads and our
//! files open in PyTorch with a plain `load_state_dict`. Inside burn the same tensors live at
//! module paths such as `net.stages.0.down.conv.weight`; this module is the one table between
//! the two.
//!
//! Stage `s` (1-based) names its stride-2 convolution `conv{s}_1`, and residual unit `u`
//! (0-based) its two convolutions `conv{s}_{2u+2}` and `conv{s}_{2u+3}`; each convolution's
//! PReLU is `relu{s}_{k}` with the same `k` and its slope tensor is called `weight`, as in
//! PyTorch. FC1 is `fc5` (`weight` stored PyTorch-style as [out, in]) and the classifier `fc6`
//! (`weight` [features, classes] as in `AngleLinear`, plus `bias` for plain softmax).

use crate::sphere::{units_for, SphereConfig};
use burn::store::KeyRemapper;

/// (burn module path, file name) for every parameter of a network and its head.
pub fn parameter_names(cfg: &SphereConfig, head_bias: bool) -> Vec<(String, String)> {
    let units = units_for(cfg.depth).unwrap_or([0; 4]);
    let mut out = Vec::new();
    let mut conv = |burn: String, s: usize, k: usize| {
        out.push((format!("{burn}.conv.weight"), format!("conv{s}_{k}.weight")));
        out.push((format!("{burn}.conv.bias"), format!("conv{s}_{k}.bias")));
        out.push((format!("{burn}.act.alpha"), format!("relu{s}_{k}.weight")));
    };
    for (i, &n) in units.iter().enumerate() {
        let s = i + 1;
        conv(format!("net.stages.{i}.down"), s, 1);
        for u in 0..n {
            conv(format!("net.stages.{i}.units.{u}.a"), s, 2 * u + 2);
            conv(format!("net.stages.{i}.units.{u}.b"), s, 2 * u + 3);
        }
    }
    out.push(("net.fc5.weight".into(), "fc5.weight".into()));
    out.push(("net.fc5.bias".into(), "fc5.bias".into()));
    out.push(("fc6.weight".into(), "fc6.weight".into()));
    if head_bias {
        out.push(("fc6.bias".into(), "fc6.bias".into()));
    }
    out
}

/// The file name of a burn path, or the path itself when it has none.
pub fn file_name_of(pairs: &[(String, String)], burn_path: &str) -> String {
    pairs
        .iter()
        .find(|(b, _)| b == burn_path)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| burn_path.to_owned())
}

fn exact(name: &str) -> String {
    // Names hold only [a-z0-9_.]; the dot is the one regex metacharacter among them.
    format!("^{}$", name.replace('.', r"\."))
}

/// burn paths -> file names (for writing).
pub fn to_file(pairs: &[(String, String)]) -> KeyRemapper {
    let patterns = pairs.iter().map(|(b, f)| (exact(b), f.clone())).collect();
    KeyRemapper::from_patterns(patterns).expect("generated patterns are valid regexes")
}

/// file names -> burn paths (for reading).
pub fn from_file(pairs: &[(String, String)]) -> KeyRemapper {
    let patterns = pairs.iter().map(|(b, f)| (exact(f), b.clone())).collect();
    KeyRemapper::from_patterns(patterns).expect("generated patterns are valid regexes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state-dict keys of the public PyTorch `sphere20a` (net_sphere.py), typed out from
    /// its layer list rather than generated: 20 convolutions with a PReLU each, fc5, fc6.
    const SPHERE20A: &str = "conv1_1 conv1_2 conv1_3 \
        conv2_1 conv2_2 conv2_3 conv2_4 conv2_5 \
        conv3_1 conv3_2 conv3_3 conv3_4 conv3_5 conv3_6 conv3_7 conv3_8 conv3_9 \
        conv4_1 conv4_2 conv4_3";

    #[test]
    fn sphere20_names_are_those_of_sphere20a() {
        let mut expected: Vec<String> = Vec::new();
        for c in SPHERE20A.split_whitespace() {
            expected.push(format!("{c}.weight"));
            expected.push(format!("{c}.bias"));
            expected.push(format!("{}.weight", c.replace("conv", "relu")));
        }
        expected.extend(["fc5.weight", "fc5.bias", "fc6.weight"].map(String::from));
        let mut got: Vec<String> = parameter_names(&SphereConfig::new(20), false).into_iter().map(|p| p.1).collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn names_are_unique_for_every_depth() {
        for depth in [4, 10, 20, 36, 64] {
            let pairs = parameter_names(&SphereConfig::new(depth), true);
            // 3 tensors per convolution, depth convolutions, fc5 (2) and fc6 (2).
            assert_eq!(pairs.len(), 3 * depth + 4, "depth {depth}");
            let mut files: Vec<&String> = pairs.iter().map(|p| &p.1).collect();
            files.sort();
            files.dedup();
            assert_eq!(files.len(), pairs.len());
        }
    }
}
