//! SphereFace CNNs (paper Table 2): four stages of 64/128/256/512 channels, each a 3×3
//! stride-2 convolution followed by residual units of two 3×3 convolutions, PReLU after every
//! convolution, no batch norm, and FC1 (512, no nonlinearity). Input 3×112×96.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PRelu, PReluConfig, PaddingConfig2d};
use burn::prelude::*;

/// Residual units per stage for each depth in the paper.
pub fn units_for(depth: usize) -> Option<[usize; 4]> {
    match depth {
        4 => Some([0, 0, 0, 0]),
        10 => Some([0, 1, 2, 0]),
        20 => Some([1, 2, 4, 1]),
        36 => Some([2, 4, 8, 2]),
        64 => Some([3, 8, 16, 3]),
        _ => None,
    }
}

pub use spherepipe_model_card::SphereConfig;

impl SphereNet {
    /// The network of shape `cfg` with zero weights: a [`Trainer`](crate::train::Trainer) draws
    /// the initial values itself, from its seed, so they do not depend on the backend's RNG.
    pub fn zeroed(cfg: &SphereConfig, device: &Device) -> anyhow::Result<SphereNet> {
        let units = units_for(cfg.depth).ok_or_else(|| anyhow::anyhow!("depth {} is not one of 4, 10, 20, 36, 64", cfg.depth))?;
        let ch = cfg.channels();
        let mut stages = Vec::new();
        let mut cin = 3;
        for (s, &cout) in ch.iter().enumerate() {
            let down = ConvAct::new(cin, cout, 2, device);
            let us = (0..units[s])
                .map(|_| Unit {
                    a: ConvAct::new(cout, cout, 1, device),
                    b: ConvAct::new(cout, cout, 1, device),
                })
                .collect();
            stages.push(Stage { down, units: us });
            cin = cout;
        }
        let [h, w] = cfg.final_size();
        let fc5 = LinearConfig::new(ch[3] * h * w, cfg.features)
            .with_initializer(Initializer::Zeros)
            .init(device);
        Ok(SphereNet { stages, fc5 })
    }
}

/// A 3×3 convolution (padding 1) followed by a per-channel PReLU.
#[derive(Module, Debug)]
pub struct ConvAct {
    /// The convolution.
    pub conv: Conv2d,
    /// Its PReLU, one slope per channel.
    pub act: PRelu,
}

impl ConvAct {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        ConvAct {
            conv: Conv2dConfig::new([cin, cout], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_initializer(Initializer::Zeros)
                .init(device),
            act: PReluConfig::new().with_num_parameters(cout).init(device),
        }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let conv = &self.conv;
        // Inference (weights that want no gradient, as extraction's `valid()` model has): the
        // activation applied as the convolution writes its output, one pass fewer.
        if let (Some(bias), false) = (&conv.bias, conv.weight.val().is_require_grad()) {
            return crate::conv::conv3x3_prelu(x, conv.weight.val(), bias.val(), self.act.alpha.val(), conv.stride[0]);
        }
        let y = match &conv.bias {
            Some(bias) => crate::conv::conv3x3(x, conv.weight.val(), bias.val(), conv.stride[0]),
            None => conv.forward(x),
        };
        // PReLU in one pass each way on the CPU (`prelu.rs`), burn's elsewhere.
        crate::prelu::prelu_channels(y, self.act.alpha.val())
    }
}

/// x + b(a(x)).
#[derive(Module, Debug)]
pub struct Unit {
    /// The first convolution.
    pub a: ConvAct,
    /// The second.
    pub b: ConvAct,
}

/// One of the four stages: a stride-2 convolution, then residual units.
#[derive(Module, Debug)]
pub struct Stage {
    /// The stride-2 convolution that halves the size.
    pub down: ConvAct,
    /// The residual units after it.
    pub units: Vec<Unit>,
}

/// The trunk up to FC1.
#[derive(Module, Debug)]
pub struct SphereNet {
    /// The four stages.
    pub stages: Vec<Stage>,
    /// FC1 (named fc5 in the published weights).
    pub fc5: Linear,
}

impl SphereNet {
    /// [B, 3, H, W] images -> [B, features] FC1 features.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for s in &self.stages {
            x = s.down.forward(x);
            for u in &s.units {
                x = x.clone() + u.b.forward(u.a.forward(x));
            }
        }
        let x: Tensor<2> = x.flatten(1, 3);
        // fc5's x · W + b, the product ours on the CPU (`dense`: the same sums on every machine).
        let y = crate::dense::dense(x, self.fc5.weight.val());
        match &self.fc5.bias {
            Some(b) => y + b.val().unsqueeze_dim(0),
            None => y,
        }
    }
}

/// Class weights (and bias, for plain softmax) on top of FC1.
#[derive(Module, Debug)]
pub struct Head {
    /// [features, classes] class weights (fc6).
    pub weight: Param<Tensor<2>>,
    /// Per-class bias, for plain softmax only.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Head {
    /// A zero head; `bias` for plain softmax.
    pub fn new(features: usize, classes: usize, bias: bool, device: &Device) -> Self {
        Head {
            weight: Initializer::Zeros.init([features, classes], device),
            bias: bias.then(|| Initializer::Zeros.init([classes], device)),
        }
    }
}

/// Parameter count of a configuration, computed from the architecture by hand (for tests and
/// for reporting), independent of burn's module tree.
pub fn expected_params(cfg: &SphereConfig, classes: usize, bias: bool) -> usize {
    let units = units_for(cfg.depth).unwrap_or([0; 4]);
    let ch = cfg.channels();
    let conv = |cin: usize, cout: usize| 9 * cin * cout + cout + cout; // weights, bias, PReLU
    let mut n = 0;
    let mut cin = 3;
    for s in 0..4 {
        n += conv(cin, ch[s]) + units[s] * 2 * conv(ch[s], ch[s]);
        cin = ch[s];
    }
    let [h, w] = cfg.final_size();
    n + ch[3] * h * w * cfg.features + cfg.features + cfg.features * classes + if bias { classes } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameter_counts_follow_table_2() {
        let d = Device::flex();
        assert_eq!(SphereConfig::new(20).final_size(), [7, 6]);
        for depth in [4, 10, 20] {
            let cfg = SphereConfig {
                width: 0.125,
                ..SphereConfig::new(depth)
            };
            let net = SphereNet::zeroed(&cfg, &d).unwrap();
            let head = Head::new(cfg.features, 10, false, &d);
            assert_eq!(
                net.num_params() + head.num_params(),
                expected_params(&cfg, 10, false),
                "depth {depth}"
            );
            // The depth is the number of convolution layers: 4 strided + 2 per residual unit.
            let convs: usize = net.stages.iter().map(|s| 1 + 2 * s.units.len()).sum();
            assert_eq!(convs, depth);
            let y = net.forward(Tensor::zeros([2, 3, 112, 96], &d));
            assert_eq!(y.dims(), [2, 512]);
        }
        // Full-width SphereFace-20: 4 stride-2 convs + 16 unit convs, 21,504 inputs to FC1.
        let cfg = SphereConfig::new(20);
        assert_eq!(cfg.channels()[3] * 7 * 6, 21_504);
        assert!(SphereNet::zeroed(&SphereConfig::new(21), &d).is_err());
    }
}
