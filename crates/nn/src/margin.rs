//! Classification heads and margin losses on top of FC1 features: softmax, modified softmax,
//! A-Softmax (SphereFace), CosFace and ArcFace.
//!
//! A-Softmax replaces the target logit ‖x‖cos θ by ‖x‖(λ cos θ + ψ(θ))/(1 + λ) with
//! ψ(θ) = (−1)^k cos(mθ) − 2k on θ ∈ [kπ/m, (k+1)π/m]. cos(mθ) comes from cos θ through the
//! Chebyshev polynomials and k from thresholds on cos θ, so no acos is needed and the
//! gradients are the true (piecewise) derivatives.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Which head and loss to train with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Plain softmax over W x + b.
    Softmax,
    /// ‖x‖ cos θ logits: normalised class weights, no bias (paper Sec. 3.1).
    ModifiedSoftmax,
    /// SphereFace's angular margin m (1..=4), blended with weight λ.
    ASoftmax {
        /// The margin: cos(mθ) for the target class.
        m: u32,
    },
    /// s (cos θ − m) for the target class, s cos θ otherwise.
    CosFace {
        /// Feature scale.
        s: f64,
        /// Additive cosine margin.
        m: f64,
    },
    /// s cos(θ + m) for the target class, s cos θ otherwise.
    ArcFace {
        /// Feature scale.
        s: f64,
        /// Additive angular margin, radians.
        m: f64,
    },
}

/// λ annealing of the official implementation: max(λ_min, base (1 + γ iter)^(−power)).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lambda {
    /// λ at iteration 0 (1000 in the paper's prototxt).
    pub base: f64,
    /// How fast λ decays (0.12).
    pub gamma: f64,
    /// The decay's exponent (1).
    pub power: f64,
    /// The floor λ never goes under (5).
    pub min: f64,
}

impl Default for Lambda {
    fn default() -> Self {
        Lambda {
            base: 1000.0,
            gamma: 0.12,
            power: 1.0,
            min: 5.0,
        }
    }
}

impl Lambda {
    /// λ at iteration `iter`.
    pub fn at(&self, iter: u64) -> f64 {
        (self.base * (1.0 + self.gamma * iter as f64).powf(-self.power)).max(self.min)
    }
}

/// cos(mθ) as a polynomial in c = cos θ (Chebyshev polynomials of the first kind).
pub fn cos_m_theta<const D: usize>(c: Tensor<D>, m: u32) -> Tensor<D> {
    match m {
        1 => c,
        2 => c.powi_scalar(2) * 2.0 - 1.0,
        3 => c.clone().powi_scalar(3) * 4.0 - c * 3.0,
        _ => {
            let c2 = c.powi_scalar(2);
            c2.clone().powi_scalar(2) * 8.0 - c2 * 8.0 + 1.0
        }
    }
}

/// ψ(θ) from c = cos θ: k counts the thresholds cos(jπ/m), j = 1..m−1, that c is at or below.
pub fn psi<const D: usize>(c: Tensor<D>, m: u32) -> Tensor<D> {
    let detached = c.clone().detach();
    let mut k = detached.zeros_like();
    for j in 1..m {
        let t = (j as f64 * std::f64::consts::PI / m as f64).cos();
        let below = detached.clone().lower_equal_elem(t);
        k = k.clone().mask_where(below, k + 1.0);
    }
    // (−1)^k = 1 − 2 (k mod 2)
    let parity = k.clone() - (k.clone() / 2.0).floor() * 2.0;
    let sign = parity * (-2.0) + 1.0;
    sign * cos_m_theta(c, m) - k * 2.0
}

/// The logits each loss trains on. `features`: [B, D]; `weight`: [D, C]; `bias`: [C]
/// (softmax only); `labels`: [B]; `lambda` is A-Softmax's current λ.
pub fn logits(
    loss: Loss,
    features: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    labels: Tensor<1, Int>,
    lambda: f64,
) -> Tensor<2> {
    if let Loss::Softmax = loss {
        let out = crate::dense::dense(features, weight);
        return match bias {
            Some(b) => out + b.unsqueeze_dim(0),
            None => out,
        };
    }
    let classes = weight.dims()[1];
    let w = weight.clone() / (weight.powi_scalar(2).sum_dim(0).sqrt() + 1e-12);
    let norm = features.clone().powi_scalar(2).sum_dim(1).sqrt() + 1e-12; // [B, 1]
    let cos = (crate::dense::dense(features, w) / norm.clone()).clamp(-1.0, 1.0);
    let target = one_hot_like(&cos, labels, classes);
    match loss {
        Loss::Softmax => unreachable!("handled above"),
        Loss::ModifiedSoftmax => cos * norm,
        Loss::ASoftmax { m } => {
            let target_cos = (cos.clone() * lambda + psi(cos.clone(), m)) / (1.0 + lambda);
            (cos.clone() + target * (target_cos - cos)) * norm
        }
        Loss::CosFace { s, m } => (cos - target * m) * s,
        Loss::ArcFace { s, m } => {
            let sin = (cos.clone().powi_scalar(2).neg() + 1.0).clamp(0.0, 1.0).sqrt();
            let phi = cos.clone() * m.cos() - sin * m.sin();
            // Past θ = π − m, cos(θ + m) stops decreasing: use the linear extension instead.
            let past = cos.clone().lower_equal_elem((std::f64::consts::PI - m).cos());
            let phi = phi.mask_where(past, cos.clone() - m * (std::f64::consts::PI - m).sin());
            (cos.clone() + target * (phi - cos)) * s
        }
    }
}

/// Mean cross-entropy of `logits` [B, C] against `labels` [B].
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let classes = logits.dims()[1];
    let target = one_hot_like(&logits, labels, classes);
    (log_softmax(logits, 1) * target).sum_dim(1).mean().neg()
}

/// One-hot rows for `labels`, in the float dtype of `like` (f32 in training, f64 in tests).
fn one_hot_like(like: &Tensor<2>, labels: Tensor<1, Int>, classes: usize) -> Tensor<2> {
    let hot = labels.one_hot::<2>(classes).equal_elem(1);
    like.zeros_like().mask_fill(hot, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{DType, TensorData};
    use std::f64::consts::PI;

    fn dev() -> Device {
        Device::flex()
    }

    fn t1(v: &[f64], d: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), (d, DType::F64))
    }

    fn vec1(t: Tensor<1>) -> Vec<f64> {
        t.into_data().convert::<f64>().try_into_vec::<f64>().unwrap()
    }

    /// ψ from its definition, with θ itself (f64, acos allowed here).
    fn psi_closed(theta: f64, m: u32) -> f64 {
        let k = ((m as f64 * theta / PI).floor() as i64).min(m as i64 - 1);
        (-1f64).powi(k as i32) * (m as f64 * theta).cos() - 2.0 * k as f64
    }

    #[test]
    fn psi_matches_the_closed_form_at_chosen_angles() {
        let d = dev();
        let thetas: Vec<f64> = [0.0, 10.0, 30.0, 44.0, 46.0, 60.0, 89.0, 91.0, 120.0, 135.5, 150.0, 179.0, 180.0]
            .iter()
            .map(|a| a * PI / 180.0)
            .collect();
        for m in 1..=4 {
            let got = vec1(psi(t1(&thetas.iter().map(|t| t.cos()).collect::<Vec<_>>(), &d), m));
            for (t, g) in thetas.iter().zip(got) {
                assert!(
                    (g - psi_closed(*t, m)).abs() < 1e-9,
                    "m={m} θ={:.1}°: {g} vs {}",
                    t * 180.0 / PI,
                    psi_closed(*t, m)
                );
            }
        }
        // Hand values: m=4 at 60° (k=1): −cos 240° − 2 = 0.5 − 2 = −1.5; m=2 at 120° (k=1): −cos 240° − 2 = −1.5.
        let v = vec1(psi(t1(&[(60f64).to_radians().cos()], &d), 4));
        assert!((v[0] + 1.5).abs() < 1e-12);
        let v = vec1(psi(t1(&[(120f64).to_radians().cos()], &d), 2));
        assert!((v[0] + 1.5).abs() < 1e-12);
    }

    #[test]
    fn psi_is_continuous_and_decreasing_on_0_to_pi() {
        let d = dev();
        let n = 20_000;
        let thetas: Vec<f64> = (0..=n).map(|i| PI * i as f64 / n as f64).collect();
        for m in 1..=4 {
            let v = vec1(psi(t1(&thetas.iter().map(|t| t.cos()).collect::<Vec<_>>(), &d), m));
            for i in 1..v.len() {
                assert!(v[i] <= v[i - 1] + 1e-12, "m={m}: increases at θ={}", thetas[i]);
                // |dψ/dθ| <= m (1 + ...) bounded, so no jumps: steps stay tiny.
                assert!(v[i - 1] - v[i] < 4.0 * m as f64 * PI / n as f64, "m={m}: jump at θ={}", thetas[i]);
            }
            assert!(
                (v[0] - 1.0).abs() < 1e-12 && (v[n] - (1.0 - 2.0 * m as f64)).abs() < 1e-9,
                "m={m}: ends {} {}",
                v[0],
                v[n]
            );
        }
    }

    fn sample(d: &Device) -> (Tensor<2>, Tensor<2>, Tensor<1, Int>) {
        let x: Vec<f64> = (0..4 * 5).map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0).collect();
        let w: Vec<f64> = (0..5 * 3).map(|i| ((i * 53 % 13) as f64 - 6.0) / 4.0).collect();
        (
            Tensor::from_data(TensorData::new(x, [4, 5]), (d, DType::F64)),
            Tensor::from_data(TensorData::new(w, [5, 3]), (d, DType::F64)),
            Tensor::from_data(TensorData::new(vec![0i64, 2, 1, 2], [4]), d),
        )
    }

    fn loss_value(loss: Loss, x: &Tensor<2>, w: &Tensor<2>, y: &Tensor<1, Int>, lambda: f64) -> f64 {
        vec1(cross_entropy(
            logits(loss, x.clone(), w.clone(), None, y.clone(), lambda),
            y.clone(),
        ))[0]
    }

    #[test]
    fn m_equal_one_is_modified_softmax_for_any_lambda() {
        let d = dev();
        let (x, w, y) = sample(&d);
        let base = loss_value(Loss::ModifiedSoftmax, &x, &w, &y, 0.0);
        for lambda in [0.0, 0.5, 5.0, 1000.0] {
            assert!((loss_value(Loss::ASoftmax { m: 1 }, &x, &w, &y, lambda) - base).abs() < 1e-12);
        }
        // And a margin makes the loss larger.
        assert!(loss_value(Loss::ASoftmax { m: 4 }, &x, &w, &y, 0.0) > base + 0.1);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let d = dev();
        let ad = d.clone().autodiff();
        let (x, w, y) = sample(&d);
        for loss in [
            Loss::ASoftmax { m: 4 },
            Loss::ASoftmax { m: 2 },
            Loss::ModifiedSoftmax,
            Loss::CosFace { s: 8.0, m: 0.35 },
            Loss::ArcFace { s: 8.0, m: 0.5 },
        ] {
            let lambda = 2.0;
            let xa = Tensor::<2>::from_data(x.to_data(), (&ad, DType::F64)).require_grad();
            let wa = Tensor::<2>::from_data(w.to_data(), (&ad, DType::F64)).require_grad();
            let ya = Tensor::<1, Int>::from_data(y.to_data(), &ad);
            let l = cross_entropy(logits(loss, xa.clone(), wa.clone(), None, ya.clone(), lambda), ya);
            let grads = l.backward();
            let gx: Vec<f64> = xa.grad(&grads).unwrap().into_data().convert::<f64>().try_into_vec().unwrap();
            let gw: Vec<f64> = wa.grad(&grads).unwrap().into_data().convert::<f64>().try_into_vec().unwrap();
            let h = 1e-6;
            let xv: Vec<f64> = x.to_data().convert::<f64>().try_into_vec().unwrap();
            let wv: Vec<f64> = w.to_data().convert::<f64>().try_into_vec().unwrap();
            for i in 0..xv.len() {
                let f = |dv: f64| {
                    let mut v = xv.clone();
                    v[i] += dv;
                    loss_value(
                        loss,
                        &Tensor::from_data(TensorData::new(v, [4, 5]), (&d, DType::F64)),
                        &w,
                        &y,
                        lambda,
                    )
                };
                let fd = (f(h) - f(-h)) / (2.0 * h);
                assert!(
                    (fd - gx[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                    "{loss:?} dL/dx[{i}]: autodiff {} vs fd {fd}",
                    gx[i]
                );
            }
            for i in 0..wv.len() {
                let f = |dv: f64| {
                    let mut v = wv.clone();
                    v[i] += dv;
                    loss_value(
                        loss,
                        &x,
                        &Tensor::from_data(TensorData::new(v, [5, 3]), (&d, DType::F64)),
                        &y,
                        lambda,
                    )
                };
                let fd = (f(h) - f(-h)) / (2.0 * h);
                assert!(
                    (fd - gw[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                    "{loss:?} dL/dW[{i}]: autodiff {} vs fd {fd}",
                    gw[i]
                );
            }
        }
    }

    #[test]
    fn lambda_anneals_to_its_floor() {
        let l = Lambda::default();
        assert_eq!(l.at(0), 1000.0);
        assert!((l.at(10) - 1000.0 / 2.2).abs() < 1e-9);
        assert_eq!(l.at(1_000_000), 5.0);
    }
}
