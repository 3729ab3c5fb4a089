//! The angular Fisher score of the paper's Appendix E: within-class angular scatter over
//! between-class angular scatter, S_w / S_b, where
//! S_w = Σ_i Σ_{x ∈ class i} (1 − cos(x, m_i)) and S_b = Σ_i n_i (1 − cos(m_i, m)),
//! m_i the mean feature of class i and m the mean of all. Lower is more discriminative.

/// `features`: rows of `dim`; `labels`: one per row. `None` with fewer than two classes.
pub fn angular_fisher_score(features: &[f32], dim: usize, labels: &[u32]) -> Option<f64> {
    if dim == 0 || features.len() != labels.len() * dim {
        return None;
    }
    let mut sums: std::collections::BTreeMap<u32, (Vec<f64>, usize)> = Default::default();
    let mut total = vec![0.0f64; dim];
    for (row, &l) in features.chunks(dim).zip(labels) {
        let e = sums.entry(l).or_insert_with(|| (vec![0.0; dim], 0));
        for k in 0..dim {
            e.0[k] += row[k] as f64;
            total[k] += row[k] as f64;
        }
        e.1 += 1;
    }
    if sums.len() < 2 {
        return None;
    }
    let cos = |a: &[f64], b: &[f64]| {
        let d: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            d / (na * nb)
        }
    };
    // Means are sums divided by counts; the division does not change a cosine.
    let mut within = 0.0;
    for (row, l) in features.chunks(dim).zip(labels) {
        let x: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        within += 1.0 - cos(&x, &sums[l].0);
    }
    let between: f64 = sums.values().map(|(s, n)| *n as f64 * (1.0 - cos(s, &total))).sum();
    Some(within / between)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_computed_example() {
        // Class 0: (1, 0) and (0, 1): mean direction (1, 1)/√2, each at cos 1/√2.
        // Class 1: (−1, 0) twice: mean (−1, 0), cos 1.
        // All: sum (−1, 1): cos with class 0's mean (1, 1) is 0, with class 1's (−1, 0) 1/√2.
        // S_w = 2(1 − 1/√2); S_b = 2(1 − 0) + 2(1 − 1/√2).
        let f = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0, -1.0, 0.0];
        let r = angular_fisher_score(&f, 2, &[0, 0, 1, 1]).unwrap();
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let want = 2.0 * (1.0 - h) / (2.0 + 2.0 * (1.0 - h));
        assert!((r - want).abs() < 1e-12, "{r} vs {want}");
        assert_eq!(angular_fisher_score(&f, 2, &[0, 0, 0, 0]), None);
    }
}
