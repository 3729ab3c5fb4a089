//! Is one method better than another, fold for fold? Two tests on the paired per-fold
//! accuracies of a 10-fold protocol (both methods scored on the same folds):
//!
//! - Student's paired t: t = mean(d) / (sd(d) / √n) on n − 1 degrees of freedom, two-sided
//!   p = I_{ν/(ν+t²)}(ν/2, 1/2) (the regularised incomplete beta);
//! - Wilcoxon's signed rank, which assumes no normality: zero differences dropped, |d| ranked
//!   (ties averaged), W = min(W+, W−); the two-sided p exact from the distribution of W+ over
//!   all sign patterns when no difference was zero and n ≤ 50, else the normal approximation
//!   with the tie correction (scipy's `method="auto"`).

use serde::{Deserialize, Serialize};

/// The two tests on one pair of methods' folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    /// Folds compared.
    pub n: usize,
    /// Mean of a − b.
    pub mean_diff: f64,
    /// Sample standard deviation of a − b.
    pub std_diff: f64,
    /// The t statistic.
    pub t: f64,
    /// Its two-sided p.
    pub p_t: f64,
    /// Wilcoxon's W = min(W+, W−).
    pub w: f64,
    /// Its two-sided p.
    pub p_wilcoxon: f64,
}

/// Both tests on folds `a` and `b` (the same folds, in order); `None` under two folds.
pub fn paired(a: &[f64], b: &[f64]) -> Option<PairedTest> {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    if n < 2 || a.len() != b.len() {
        return None;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let (t, p_t) = if sd == 0.0 {
        // Every fold moved by the same amount: certain if it moved, else no difference.
        (
            if mean == 0.0 { 0.0 } else { f64::INFINITY.copysign(mean) },
            if mean == 0.0 { 1.0 } else { 0.0 },
        )
    } else {
        let t = mean / (sd / (n as f64).sqrt());
        let df = (n - 1) as f64;
        (t, incomplete_beta(df / 2.0, 0.5, df / (df + t * t)))
    };
    let (w, p_wilcoxon) = wilcoxon(&d);
    Some(PairedTest {
        n,
        mean_diff: mean,
        std_diff: sd,
        t,
        p_t,
        w,
        p_wilcoxon,
    })
}

/// Wilcoxon's signed-rank W and two-sided p on differences `d`.
fn wilcoxon(d: &[f64]) -> (f64, f64) {
    let mut nz: Vec<f64> = d.iter().copied().filter(|x| *x != 0.0).collect();
    let n = nz.len();
    let zeros = n < d.len();
    if n == 0 {
        return (0.0, 1.0);
    }
    nz.sort_by(|x, y| x.abs().total_cmp(&y.abs()));
    // Average ranks over runs of equal |d|.
    let mut ranks = vec![0.0; n];
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && nz[j + 1].abs() == nz[i].abs() {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        ranks[i..=j].iter_mut().for_each(|x| *x = r);
        let t = (j - i + 1) as f64;
        if t > 1.0 {
            tie_term += t * t * t - t;
        }
        i = j + 1;
    }
    let plus: f64 = nz.iter().zip(&ranks).filter(|(x, _)| **x > 0.0).map(|(_, r)| r).sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    let w = plus.min(total - plus);
    if !zeros && n <= 50 {
        return (w, exact_signed_rank_p(n, w.floor() as usize));
    }
    let mean = total / 2.0;
    let var = (n * (n + 1) * (2 * n + 1)) as f64 / 24.0 - tie_term / 48.0;
    let z = (w - mean) / var.sqrt();
    (w, (2.0 * normal_cdf(z)).min(1.0))
}

/// P(W+ ≤ w) · 2 for n untied ranks: W+ counted over all 2ⁿ sign patterns.
fn exact_signed_rank_p(n: usize, w: usize) -> f64 {
    let max = n * (n + 1) / 2;
    let mut count = vec![0f64; max + 1];
    count[0] = 1.0;
    for rank in 1..=n {
        for s in (rank..=max).rev() {
            count[s] += count[s - rank];
        }
    }
    let below: f64 = count[..=w.min(max)].iter().sum();
    (2.0 * below / 2f64.powi(n as i32)).min(1.0)
}

/// The standard normal CDF, through erfc.
fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// erfc by its continued fraction for large |x| and the series of erf otherwise (|error| under
/// 1e-12 in the range a p-value needs).
fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf(x) = 2/√π Σ (−1)^k x^(2k+1) / (k! (2k+1))
        let mut sum = 0.0;
        let mut term = x;
        for k in 0..60 {
            sum += term / (2 * k + 1) as f64;
            term *= -x * x / (k + 1) as f64;
        }
        return 1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum;
    }
    // erfc(x) = exp(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))), evaluated from the tail.
    let mut f = x;
    for k in (1..80).rev() {
        f = x + (k as f64 / 2.0) / f;
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine terms; relative error ~1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised incomplete beta I_x(a, b), by its continued fraction (modified Lentz),
/// using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly.
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(b, a, 1.0 - x);
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp() / a;
    let tiny = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    d = 1.0 / if d.abs() < tiny { tiny } else { d };
    let mut f = d;
    for m in 1..300 {
        let m = m as f64;
        // Even step, then odd step of the fraction's coefficients.
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            d = 1.0 / if d.abs() < tiny { tiny } else { d };
            c = 1.0 + num / c;
            c = if c.abs() < tiny { tiny } else { c };
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    front * f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from scipy 1.17.1 (`stats.ttest_rel`, `stats.wilcoxon`, `stats.t.sf`), computed
    /// once outside this code.
    #[test]
    fn the_tests_give_scipys_numbers() {
        let a = [0.962, 0.955, 0.97, 0.948, 0.96, 0.953, 0.967, 0.958, 0.951, 0.964];
        let b = [0.955, 0.951, 0.962, 0.949, 0.952, 0.95, 0.96, 0.951, 0.949, 0.958];
        let r = paired(&a, &b).unwrap();
        assert!((r.t - 5.37919353759992).abs() < 1e-9, "{r:?}");
        assert!((r.p_t - 0.0004449651136252226).abs() < 1e-10, "{r:?}");
        assert_eq!(r.w, 1.0);
        assert!((r.p_wilcoxon - 0.00390625).abs() < 1e-12, "{r:?}");
        let c = [0.5, 0.6, 0.55, 0.58, 0.52, 0.61, 0.57, 0.54, 0.59, 0.56];
        let d = [0.51, 0.58, 0.56, 0.57, 0.53, 0.6, 0.55, 0.55, 0.6, 0.54];
        let r = paired(&c, &d).unwrap();
        assert!(
            (r.t - 0.6689647316224479).abs() < 1e-9 && (r.p_t - 0.5203065629049567).abs() < 1e-10,
            "{r:?}"
        );
        // W− = 20 (five of seven tied 0.01s, rank 4 each). Enumerating the 2^10 sign patterns
        // in Python gives 252 with W+ <= 20: p = 504/1024. (scipy prints 490/1024 here: with
        // W+ the larger side it takes P(W+ > 35), a strict tail, where 2 P(W <= 20) is meant.)
        assert!(r.w == 20.0 && (r.p_wilcoxon - 504.0 / 1024.0).abs() < 1e-12, "{r:?}");
        // The t distribution's 97.5% point at 9 degrees of freedom gives p = 0.05.
        assert!((incomplete_beta(4.5, 0.5, 9.0 / (9.0 + 2.262157f64.powi(2))) - 0.05000001330443163).abs() < 1e-9);
    }

    #[test]
    fn closed_forms_and_degenerate_folds() {
        // Γ(5) = 24, Γ(1/2) = √π; I_x(1, 1) = x; erfc(0) = 1, Φ(1.959964) = 0.975.
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((incomplete_beta(1.0, 1.0, 0.3) - 0.3).abs() < 1e-12);
        assert!((erfc(0.0) - 1.0).abs() < 1e-15 && (normal_cdf(1.959964) - 0.975).abs() < 1e-6);
        assert!((erfc(3.0) - 2.209049699858544e-5).abs() < 1e-15);
        // All ten signs one way, no ties: W = 0, p = 2 / 2^10.
        let up: Vec<f64> = (1..=10).map(|i| i as f64 / 100.0).collect();
        let r = paired(&up, &[0.0; 10]).unwrap();
        assert_eq!((r.w, r.p_wilcoxon), (0.0, 2.0 / 1024.0));
        // Identical folds: no difference at all; a constant shift: certain.
        let same = paired(&[0.9; 10], &[0.9; 10]).unwrap();
        assert_eq!((same.p_t, same.p_wilcoxon), (1.0, 1.0));
        assert_eq!(paired(&[0.91; 10], &[0.9; 10]).unwrap().p_t, 0.0);
        assert!(paired(&[0.9], &[0.8]).is_none());
    }
}
