//! 10-fold pair verification (LFW View 2, YouTube Faces), in the three protocols published
//! SphereFace numbers use. Every feature is the FC1 of the face followed by the FC1 of its
//! mirror (`2F` values).
//!
//! - `official` — the SphereFace repository's `evaluation.m`: for each test fold, subtract the
//!   mean of the other folds' features (both sides of every pair), L2-normalise, score by
//!   cosine; pick the threshold on the other folds over −1…1 in steps of 1e-4, as the mean of
//!   every grid threshold reaching the best accuracy; a positive pair is right when
//!   score > threshold, a negative one when score < threshold.
//! - `unflipped` — the PyTorch port's `lfw_eval.py`: the face's own FC1 only, plain cosine,
//!   grid −1…0.995 in steps of 0.005, the first grid threshold reaching the best accuracy;
//!   positives right when score ≥ threshold (as this project's issue specifies; the port's code
//!   uses >, which differs only for a score exactly on a grid point).
//! - `sum-l2` — face and mirror FC1 summed, L2-normalised, squared Euclidean distance d ∈ [0, 4];
//!   grid 0…4 in steps of 4e-4, mean of the best thresholds, positives right when d < threshold.

use crate::EvalError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
/// How pairs are scored and thresholds chosen (see the module doc).
pub enum Protocol {
    /// The SphereFace repository's `evaluation.m`.
    Official,
    /// The PyTorch port's `lfw_eval.py`: the face's own FC1 only.
    Unflipped,
    /// Face + mirror summed, squared L2 distance.
    SumL2,
}

impl Protocol {
    /// The names a pipeline file uses.
    pub const NAMES: [&'static str; 3] = ["official", "unflipped", "sum-l2"];
    /// The protocol called `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "official" => Some(Protocol::Official),
            "unflipped" => Some(Protocol::Unflipped),
            "sum-l2" => Some(Protocol::SumL2),
            _ => None,
        }
    }
    /// Its name in a pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Official => "official",
            Protocol::Unflipped => "unflipped",
            Protocol::SumL2 => "sum-l2",
        }
    }
}

/// One pair to verify: both features (`2F` values: face, then mirror), the truth and the
/// 0-based fold it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    /// The first side's features.
    pub a: &'a [f32],
    /// The second side's features.
    pub b: &'a [f32],
    /// Both sides show one person.
    pub same: bool,
    /// 0-based fold.
    pub fold: usize,
}

/// One test fold's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fold {
    /// 1-based fold.
    pub fold: usize,
    /// Pairs tested.
    pub pairs: usize,
    /// Fraction of them classified right at the threshold chosen on the other folds.
    pub accuracy: f64,
    /// In the protocol's own units (cosine, or squared distance for `sum-l2`).
    pub threshold: f64,
}

/// A 10-fold verification result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenFold {
    /// The protocol used.
    pub protocol: Protocol,
    /// Each fold's result.
    pub folds: Vec<Fold>,
    /// Mean fold accuracy.
    pub mean: f64,
    /// Sample standard deviation over folds (n − 1, as MATLAB's `std`).
    pub std: f64,
    /// Each pair's similarity as scored in its own test fold (higher = more alike; `sum-l2`
    /// gives −d), in input order, for the ROC.
    #[serde(skip)]
    pub scores: Vec<f64>,
}

/// How grid thresholds are turned into one.
#[derive(Clone, Copy)]
enum Pick {
    MeanOfBest,
    FirstBest,
}

/// Where grid points are, computed the way each reference computes them, so a score that
/// sits on a grid point is judged as the reference judges it.
#[derive(Clone, Copy)]
enum Points {
    /// (lo + i) / denom: MATLAB's `(-thrNum:thrNum) / thrNum`.
    Ratio { lo: i64, denom: f64 },
    /// start + i·step: numpy's `arange(start, stop, step)`.
    Arange { start: f64, step: f64 },
}

/// A threshold grid of n points and the counting rule.
#[derive(Clone, Copy)]
struct Grid {
    points: Points,
    n: usize,
    positive_inclusive: bool,
    pick: Pick,
}

impl Grid {
    fn at(&self, i: usize) -> f64 {
        match self.points {
            Points::Ratio { lo, denom } => (lo + i as i64) as f64 / denom,
            Points::Arange { start, step } => start + i as f64 * step,
        }
    }
}

/// Pairs judged right at threshold `t`: positives above it (or at it, if inclusive),
/// negatives below it. `pos` and `neg` are sorted ascending.
fn correct(pos: &[f64], neg: &[f64], t: f64, positive_inclusive: bool) -> usize {
    let pos_right = if positive_inclusive {
        pos.len() - pos.partition_point(|&s| s < t)
    } else {
        pos.len() - pos.partition_point(|&s| s <= t)
    };
    pos_right + neg.partition_point(|&s| s < t)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The threshold the grid picks on these (training) scores.
fn pick_threshold(scores: &[f64], same: &[bool], g: Grid) -> f64 {
    let pos = sorted(scores.iter().zip(same).filter(|p| *p.1).map(|p| *p.0).collect());
    let neg = sorted(scores.iter().zip(same).filter(|p| !*p.1).map(|p| *p.0).collect());
    let counts: Vec<usize> = (0..g.n).map(|i| correct(&pos, &neg, g.at(i), g.positive_inclusive)).collect();
    let best = counts.iter().copied().max().unwrap_or(0);
    let winners = (0..g.n).filter(|&i| counts[i] == best);
    match g.pick {
        Pick::FirstBest => winners.map(|i| g.at(i)).next().unwrap_or(0.0),
        Pick::MeanOfBest => {
            let (sum, n) = winners.fold((0.0, 0usize), |(s, n), i| (s + g.at(i), n + 1));
            sum / n.max(1) as f64
        }
    }
}

fn accuracy(scores: &[f64], same: &[bool], t: f64, positive_inclusive: bool) -> f64 {
    let right = scores
        .iter()
        .zip(same)
        .filter(|(&s, &y)| if y { s > t || (positive_inclusive && s == t) } else { s < t })
        .count();
    right as f64 / scores.len().max(1) as f64
}

fn normalized(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let v: Vec<f64> = v.collect();
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / n).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Runs the protocol. Errors when the features are not `2F` long and equal, or a fold is empty.
pub fn ten_fold(pairs: &[Pair<'_>], protocol: Protocol) -> Result<TenFold, EvalError> {
    let (dim, n_folds) = check_pairs(pairs)?;
    let fixed = fixed_scores(pairs, protocol, dim / 2);
    let mut folds = Vec::new();
    let mut pair_scores = vec![0.0; pairs.len()];
    for k in 0..n_folds {
        let test: Vec<usize> = (0..pairs.len()).filter(|&i| pairs[i].fold == k).collect();
        let train: Vec<usize> = (0..pairs.len()).filter(|&i| pairs[i].fold != k).collect();
        if test.is_empty() {
            return Err(EvalError::EmptyFold(k + 1));
        }
        let (scores, grid) = match &fixed {
            Some((s, g)) => (s.clone(), *g),
            None => (official_scores(pairs, &train, dim), OFFICIAL_GRID),
        };
        for &i in &test {
            pair_scores[i] = scores[i];
        }
        folds.push(test_fold(k, pairs, &scores, &train, &test, grid, protocol));
    }
    let accs: Vec<f64> = folds.iter().map(|f| f.accuracy).collect();
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (accs.len() - 1) as f64).sqrt();
    Ok(TenFold {
        protocol,
        folds,
        mean,
        std,
        scores: pair_scores,
    })
}

/// `evaluation.m`'s thresholds: (i − 10000) / 10000 for i = 0…20000, the mean of the best.
const OFFICIAL_GRID: Grid = Grid {
    points: Points::Ratio {
        lo: -10_000,
        denom: 10_000.0,
    },
    n: 20_001,
    positive_inclusive: false,
    pick: Pick::MeanOfBest,
};

/// The features' length (face + mirror) and the number of folds; errors when unusable.
fn check_pairs(pairs: &[Pair<'_>]) -> Result<(usize, usize), EvalError> {
    let dim = pairs.first().ok_or(EvalError::NoPairs)?.a.len();
    if dim == 0 || dim % 2 != 0 {
        return Err(EvalError::OddFeatures(dim));
    }
    if let Some(p) = pairs.iter().find(|p| p.a.len() != dim || p.b.len() != dim) {
        return Err(EvalError::MixedLengths {
            a: p.a.len(),
            b: p.b.len(),
            expected: dim,
        });
    }
    let n_folds = pairs.iter().map(|p| p.fold).max().unwrap_or(0) + 1;
    if n_folds < 2 {
        return Err(EvalError::TooFewFolds);
    }
    Ok((dim, n_folds))
}

/// Fold-independent scores and their threshold grid, for the protocols that have them
/// (`official` subtracts a per-fold mean, so it has none).
fn fixed_scores(pairs: &[Pair<'_>], protocol: Protocol, half: usize) -> Option<(Vec<f64>, Grid)> {
    match protocol {
        Protocol::Official => None,
        Protocol::Unflipped => {
            let s = pairs
                .iter()
                .map(|p| {
                    let a = normalized(p.a[..half].iter().map(|&x| x as f64));
                    let b = normalized(p.b[..half].iter().map(|&x| x as f64));
                    dot(&a, &b)
                })
                .collect();
            let grid = Grid {
                points: Points::Arange { start: -1.0, step: 0.005 },
                n: 400,
                positive_inclusive: true,
                pick: Pick::FirstBest,
            };
            Some((s, grid))
        }
        Protocol::SumL2 => {
            // Scored as −d so that higher means more alike; the grid runs over −4…0.
            let s = pairs
                .iter()
                .map(|p| {
                    let a = normalized((0..half).map(|i| p.a[i] as f64 + p.a[half + i] as f64));
                    let b = normalized((0..half).map(|i| p.b[i] as f64 + p.b[half + i] as f64));
                    -a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>()
                })
                .collect();
            let grid = Grid {
                points: Points::Ratio {
                    lo: -10_000,
                    denom: 2_500.0,
                },
                n: 10_001,
                positive_inclusive: false,
                pick: Pick::MeanOfBest,
            };
            Some((s, grid))
        }
    }
}

/// Fold `k`: the threshold picked on the `train` pairs, the accuracy on the `test` pairs.
fn test_fold(k: usize, pairs: &[Pair<'_>], scores: &[f64], train: &[usize], test: &[usize], grid: Grid, protocol: Protocol) -> Fold {
    let pick = |idx: &[usize]| -> (Vec<f64>, Vec<bool>) {
        (
            idx.iter().map(|&i| scores[i]).collect(),
            idx.iter().map(|&i| pairs[i].same).collect(),
        )
    };
    let (tr_s, tr_y) = pick(train);
    let (te_s, te_y) = pick(test);
    let t = pick_threshold(&tr_s, &tr_y, grid);
    Fold {
        fold: k + 1,
        pairs: test.len(),
        accuracy: accuracy(&te_s, &te_y, t, grid.positive_inclusive),
        threshold: if protocol == Protocol::SumL2 { -t } else { t },
    }
}

/// Cosine of every pair after subtracting the mean feature of the `train` pairs (both sides)
/// and L2-normalising: `evaluation.m`'s scores for one test fold.
fn official_scores(pairs: &[Pair<'_>], train: &[usize], dim: usize) -> Vec<f64> {
    let mut mu = vec![0.0f64; dim];
    for &i in train {
        for (m, (&a, &b)) in mu.iter_mut().zip(pairs[i].a.iter().zip(pairs[i].b)) {
            *m += a as f64 + b as f64;
        }
    }
    let n = (2 * train.len()).max(1) as f64;
    mu.iter_mut().for_each(|m| *m /= n);
    pairs
        .iter()
        .map(|p| {
            let a = normalized(p.a.iter().zip(&mu).map(|(&x, m)| x as f64 - m));
            let b = normalized(p.b.iter().zip(&mu).map(|(&x, m)| x as f64 - m));
            dot(&a, &b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_best_thresholds_by_hand() {
        // Positives 0.5, 0.2; negatives −0.3, 0.1: all four right exactly for 0.1 < t < 0.2,
        // i.e. grid points 0.1001 … 0.1999, whose mean is 0.15.
        let g = Grid {
            points: Points::Ratio {
                lo: -10_000,
                denom: 10_000.0,
            },
            n: 20_001,
            positive_inclusive: false,
            pick: Pick::MeanOfBest,
        };
        let t = pick_threshold(&[0.5, 0.2, -0.3, 0.1], &[true, true, false, false], g);
        assert!((t - 0.15).abs() < 1e-9, "{t}");
        // First best on the 0.005 grid: with negatives up to 0.102, 0.105 is the first point
        // that separates.
        let g = Grid {
            points: Points::Arange { start: -1.0, step: 0.005 },
            n: 400,
            positive_inclusive: true,
            pick: Pick::FirstBest,
        };
        let t = pick_threshold(&[0.5, 0.2, -0.3, 0.102], &[true, true, false, false], g);
        assert!((t - 0.105).abs() < 1e-9, "{t}");
        // Inclusive positives: a positive exactly at the threshold counts.
        assert_eq!(accuracy(&[0.2, 0.1], &[true, false], 0.2, true), 1.0);
        assert_eq!(accuracy(&[0.2, 0.1], &[true, false], 0.2, false), 0.5);
    }

    /// A direct transcription of `evaluation.m`'s loops (every threshold, every pair), to check
    /// the sorted-count implementation against.
    fn brute_force_official(pairs: &[Pair<'_>]) -> Vec<f64> {
        let dim = pairs[0].a.len();
        (0..10)
            .map(|k| {
                let train: Vec<usize> = (0..pairs.len()).filter(|&i| pairs[i].fold != k).collect();
                let s = official_scores(pairs, &train, dim);
                let acc_at = |t: f64, idx: &mut dyn Iterator<Item = usize>| {
                    let (mut right, mut n) = (0, 0);
                    for i in idx {
                        n += 1;
                        if (pairs[i].same && s[i] > t) || (!pairs[i].same && s[i] < t) {
                            right += 1;
                        }
                    }
                    right as f64 / n as f64
                };
                let accs: Vec<f64> = (-10_000..=10_000)
                    .map(|i| acc_at(i as f64 / 10_000.0, &mut (0..pairs.len()).filter(|&i| pairs[i].fold != k)))
                    .collect();
                let best = accs.iter().cloned().fold(f64::MIN, f64::max);
                let th: Vec<f64> = (-10_000..=10_000)
                    .filter(|i| accs[(i + 10_000) as usize] == best)
                    .map(|i| i as f64 / 10_000.0)
                    .collect();
                let t = th.iter().sum::<f64>() / th.len() as f64;
                acc_at(t, &mut (0..pairs.len()).filter(|&i| pairs[i].fold == k))
            })
            .collect()
    }

    #[test]
    fn official_protocol_matches_a_direct_transcription() {
        let mut rng = spherepipe_rng::Rng::new(3);
        // 10 folds x 12 pairs of 8-d features (4 + mirror 4): same pairs are noisy copies.
        let mut feats: Vec<(Vec<f32>, Vec<f32>, bool, usize)> = Vec::new();
        for fold in 0..10 {
            for j in 0..12 {
                let a: Vec<f32> = (0..8).map(|_| rng.normal() as f32 + 0.5).collect();
                let same = j % 2 == 0;
                let b: Vec<f32> = if same {
                    a.iter().map(|x| x + 0.9 * rng.normal() as f32).collect()
                } else {
                    (0..8).map(|_| rng.normal() as f32 + 0.5).collect()
                };
                feats.push((a, b, same, fold));
            }
        }
        let pairs: Vec<Pair> = feats.iter().map(|(a, b, s, f)| Pair { a, b, same: *s, fold: *f }).collect();
        let r = ten_fold(&pairs, Protocol::Official).unwrap();
        let want = brute_force_official(&pairs);
        for (f, w) in r.folds.iter().zip(&want) {
            assert!((f.accuracy - w).abs() < 1e-12, "fold {}: {} vs {w}", f.fold, f.accuracy);
        }
        assert!(r.mean > 0.6 && r.mean < 1.0, "{}", r.mean);
        let mean = want.iter().sum::<f64>() / 10.0;
        assert!((r.mean - mean).abs() < 1e-12);
    }

    #[test]
    fn sum_l2_is_the_distance_of_summed_normalised_features() {
        // Face (1, 0), mirror (1, 0) vs face (0, 1), mirror (0, 1): sums (2, 0) and (0, 2),
        // normalised (1, 0) and (0, 1), squared distance 2, so the score is −2.
        let a = [1.0, 0.0, 1.0, 0.0];
        let b = [0.0, 1.0, 0.0, 1.0];
        let c = [2.0, 0.1, 2.0, -0.1]; // sums to (4, 0): distance 0 from a
        let pairs: Vec<Pair> = (0..4)
            .flat_map(|f| {
                [
                    Pair {
                        a: &a,
                        b: &b,
                        same: false,
                        fold: f,
                    },
                    Pair {
                        a: &a,
                        b: &c,
                        same: true,
                        fold: f,
                    },
                ]
            })
            .collect();
        let r = ten_fold(&pairs, Protocol::SumL2).unwrap();
        assert!((r.scores[0] + 2.0).abs() < 1e-12 && r.scores[1].abs() < 1e-12);
        assert_eq!(r.mean, 1.0);
        // Every threshold strictly between 0 and 2 separates them; the mean of those grid
        // points (0.0004 … 1.9996) is 1.
        assert!((r.folds[0].threshold - 1.0).abs() < 1e-9, "{}", r.folds[0].threshold);
        assert_eq!(r.std, 0.0);
    }

    #[test]
    fn unflipped_ignores_the_mirror_half() {
        // Faces identical, mirrors opposite: unflipped calls the pair a perfect match.
        let a = [1.0, 2.0, 5.0, 5.0];
        let b = [1.0, 2.0, -5.0, -5.0];
        let n = [-2.0, 1.0, 5.0, 5.0];
        let pairs: Vec<Pair> = (0..3)
            .flat_map(|f| {
                [
                    Pair {
                        a: &a,
                        b: &b,
                        same: true,
                        fold: f,
                    },
                    Pair {
                        a: &a,
                        b: &n,
                        same: false,
                        fold: f,
                    },
                ]
            })
            .collect();
        let r = ten_fold(&pairs, Protocol::Unflipped).unwrap();
        assert!((r.scores[0] - 1.0).abs() < 1e-12 && r.scores[1].abs() < 1e-12);
        assert_eq!(r.mean, 1.0);
        assert_eq!(ten_fold(&pairs[..1], Protocol::Unflipped).unwrap_err(), EvalError::TooFewFolds);
        assert_eq!(ten_fold(&[], Protocol::Official).unwrap_err(), EvalError::NoPairs);
        let odd = [1.0, 2.0, 3.0];
        let one = Pair {
            a: &odd,
            b: &odd,
            same: true,
            fold: 0,
        };
        assert_eq!(ten_fold(&[one], Protocol::Official).unwrap_err(), EvalError::OddFeatures(3));
        // Folds 1 and 3 but no fold 2 (0-based 1).
        let gap: Vec<Pair> = pairs.iter().filter(|p| p.fold != 1).copied().collect();
        let e = ten_fold(&gap, Protocol::Unflipped).unwrap_err();
        assert_eq!((e.clone(), e.to_string()), (EvalError::EmptyFold(2), "fold 2 has no pairs".into()));
    }
}
