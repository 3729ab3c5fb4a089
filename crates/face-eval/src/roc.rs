//! ROC summaries of pair scores (higher = more alike): the curve, AUC, EER, and TAR at fixed
//! FARs, which are only reported when there are enough impostor pairs to measure them.

use serde::{Deserialize, Serialize};

/// The true accept rate at one false accept rate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TarAtFar {
    /// The FAR asked for.
    pub far: f64,
    /// Fraction of genuine pairs accepted, `None` when the FAR cannot be measured.
    pub tar: Option<f64>,
    /// Pairs scoring above this are accepted.
    pub threshold: Option<f64>,
    /// Why `tar` is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// TAR at `far`, from the genuine scores and the highest impostor scores (descending; at least
/// ⌊far·n⌋ + 1 of them) out of `impostors` in all. Accepting only scores strictly above the
/// (k+1)-th highest impostor, k = ⌊far·n⌋, lets at most k impostors through. A FAR below
/// 1/n cannot be measured with n impostor pairs, and says so.
pub fn tar_at_far(genuine: &[f64], top_impostors: &[f64], impostors: u64, far: f64) -> TarAtFar {
    let k = (far * impostors as f64 + 1e-9).floor() as u64;
    if k == 0 {
        return TarAtFar {
            far,
            tar: None,
            threshold: None,
            note: Some(format!(
                "needs at least {:.0} impostor pairs, there are {impostors}",
                (1.0 / far).ceil()
            )),
        };
    }
    let Some(&t) = top_impostors.get(k as usize) else {
        // Fewer impostors than k + 1: all of them may be accepted.
        return TarAtFar {
            far,
            tar: Some(1.0),
            threshold: Some(f64::NEG_INFINITY),
            note: None,
        };
    };
    let accepted = genuine.iter().filter(|&&s| s > t).count();
    TarAtFar {
        far,
        tar: Some(accepted as f64 / genuine.len().max(1) as f64),
        threshold: Some(t),
        note: None,
    }
}

/// The smallest power of ten that `impostors` pairs can measure (at least one false accept
/// allowed), but not below `floor`.
pub fn lowest_measurable_far(impostors: u64, floor: f64) -> f64 {
    // Powers of ten parsed from text, so 1e-6 is the double nearest 10⁻⁶ and prints as such.
    let p = |k: i32| format!("1e-{k}").parse::<f64>().unwrap_or(1.0);
    let mut k = 0;
    while p(k + 1) >= floor * 0.999 && p(k + 1) * impostors as f64 >= 1.0 - 1e-9 {
        k += 1;
    }
    p(k)
}

/// A ROC summary of pair scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Roc {
    /// Genuine (same-person) pairs.
    pub genuine: usize,
    /// Impostor pairs.
    pub impostor: usize,
    /// Area under the curve: the probability a genuine pair outscores an impostor pair
    /// (ties count half). NaN (null in JSON) without both kinds of pair.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub auc: f64,
    /// Where FAR equals FRR on the piecewise-linear curve; NaN (null) as `auc`.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub eer: f64,
    /// TAR at each FAR asked for.
    pub tar_at_far: Vec<TarAtFar>,
    /// (FAR, TAR) points, thresholds descending, at most ~2000 of them.
    pub curve: Vec<[f64; 2]>,
}

/// The ROC of `scores` (higher = more alike) with their truth, TAR read at `fars`.
pub fn roc(scores: &[f64], same: &[bool], fars: &[f64]) -> Roc {
    let mut genuine: Vec<f64> = scores.iter().zip(same).filter(|p| *p.1).map(|p| *p.0).collect();
    let mut impostor: Vec<f64> = scores.iter().zip(same).filter(|p| !*p.1).map(|p| *p.0).collect();
    genuine.sort_by(|a, b| b.total_cmp(a));
    impostor.sort_by(|a, b| b.total_cmp(a));
    let (np, nn) = (genuine.len(), impostor.len());

    // Curve: accept s >= t for each distinct score t, descending.
    let mut curve = vec![[0.0, 0.0]];
    let (mut i, mut j) = (0, 0);
    while i < np || j < nn {
        let t = match (genuine.get(i), impostor.get(j)) {
            (Some(&g), Some(&m)) => g.max(m),
            (Some(&g), None) => g,
            (None, Some(&m)) => m,
            (None, None) => break,
        };
        while i < np && genuine[i] >= t {
            i += 1;
        }
        while j < nn && impostor[j] >= t {
            j += 1;
        }
        curve.push([j as f64 / nn.max(1) as f64, i as f64 / np.max(1) as f64]);
    }

    // AUC by ranks (Mann-Whitney U), ties averaged.
    let mut all: Vec<(f64, bool)> = scores.iter().copied().zip(same.iter().copied()).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut k = 0;
    while k < all.len() {
        let mut e = k;
        while e < all.len() && all[e].0 == all[k].0 {
            e += 1;
        }
        let avg = (k + 1 + e) as f64 / 2.0; // mean of ranks k+1..=e
        rank_sum += avg * all[k..e].iter().filter(|p| p.1).count() as f64;
        k = e;
    }
    let auc = if np == 0 || nn == 0 {
        f64::NAN
    } else {
        (rank_sum - (np * (np + 1)) as f64 / 2.0) / (np as f64 * nn as f64)
    };

    // EER: first crossing of FAR and FRR = 1 − TAR along the curve.
    let mut eer = f64::NAN;
    for w in curve.windows(2) {
        let g = |p: [f64; 2]| 1.0 - p[1] - p[0]; // FRR − FAR, decreasing along the curve
        let (g0, g1) = (g(w[0]), g(w[1]));
        if g0 >= 0.0 && g1 <= 0.0 {
            let f = if g0 == g1 { 0.0 } else { g0 / (g0 - g1) };
            eer = w[0][0] + f * (w[1][0] - w[0][0]);
            break;
        }
    }

    let tar_at_far = fars.iter().map(|&f| tar_at_far(&genuine, &impostor, nn as u64, f)).collect();
    if curve.len() > 2000 {
        let step = curve.len() as f64 / 2000.0;
        let last = *curve.last().unwrap_or(&[1.0, 1.0]);
        curve = (0..2000).map(|i| curve[(i as f64 * step) as usize]).chain([last]).collect();
    }
    Roc {
        genuine: np,
        impostor: nn,
        auc,
        eer,
        tar_at_far,
        curve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_counted_example() {
        // Genuine 0.9, 0.8, 0.4; impostors 0.7, 0.3, 0.2, 0.1.
        let s = [0.9, 0.7, 0.8, 0.3, 0.4, 0.2, 0.1];
        let y = [true, false, true, false, true, false, false];
        let r = roc(&s, &y, &[0.25, 0.1]);
        // 0.9 and 0.8 beat all 4 impostors, 0.4 beats 3: 11 of 12.
        assert!((r.auc - 11.0 / 12.0).abs() < 1e-12);
        // Curve: (0,1/3) (0,2/3) (1/4,2/3) (1/4,1) ...: FRR = FAR = 1/4 on the vertical step.
        assert!((r.eer - 0.25).abs() < 1e-12, "{}", r.eer);
        assert_eq!(
            r.curve[..5],
            [[0.0, 0.0], [0.0, 1.0 / 3.0], [0.0, 2.0 / 3.0], [0.25, 2.0 / 3.0], [0.25, 1.0]]
        );
        // FAR 1/4 with 4 impostors: one may pass, threshold the second highest (0.3): TAR 1.
        assert_eq!(r.tar_at_far[0].threshold, Some(0.3));
        assert_eq!(r.tar_at_far[0].tar, Some(1.0));
        // FAR 0.1 needs 10 impostor pairs.
        assert_eq!(r.tar_at_far[1].tar, None);
        assert!(r.tar_at_far[1].note.as_deref().unwrap().contains("at least 10"));
    }

    #[test]
    fn ties_count_half_in_the_auc() {
        let r = roc(&[0.5, 0.5], &[true, false], &[]);
        assert_eq!(r.auc, 0.5);
    }

    #[test]
    fn lowest_measurable_far_steps_by_powers_of_ten() {
        assert_eq!(lowest_measurable_far(1_000_000_000, 1e-6), 1e-6);
        assert_eq!(lowest_measurable_far(10_000, 1e-6), 1e-4);
        assert_eq!(lowest_measurable_far(99_999, 1e-6), 1e-4);
        assert_eq!(lowest_measurable_far(5, 1e-6), 1.0);
    }
}
