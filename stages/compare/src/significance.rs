//! Which differences between the compared methods the folds can carry: for every
//! verification set all methods report (LFW, YTF, bins), each pair of methods' per-fold
//! accuracies of the headline protocol under a paired t test and Wilcoxon's signed rank.
//! A pair is called different only when both tests put p under `alpha`.

use serde::{Deserialize, Serialize};
use spherepipe_face_eval::paired::{paired, PairedTest};
use spherepipe_stage_evaluate::metrics::{Metrics, Verification};

/// One pair of methods on one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRow {
    /// LFW, YTF, CFP-FP, ...
    pub set: String,
    /// The first method's label.
    pub a: String,
    /// The second's.
    pub b: String,
    /// Both tests on a − b, fold by fold.
    pub test: PairedTest,
    /// `a > b`, `a < b`, or `no significant difference`.
    pub verdict: String,
}

/// The folds' accuracies of `v`'s headline protocol, in fold order.
fn folds(v: &Verification) -> Option<Vec<f64>> {
    let t = v.protocols.values().find(|t| t.protocol == v.protocol)?;
    Some(t.folds.iter().map(|f| f.accuracy).collect())
}

/// Every pair of `methods` (label, metrics) on every set they all have.
pub fn pairwise(methods: &[(String, Metrics)], alpha: f64) -> Vec<PairRow> {
    let Some((_, first)) = methods.first() else { return Vec::new() };
    let mut out = Vec::new();
    for (set, _) in first.verifications() {
        let per_method: Option<Vec<Vec<f64>>> = methods
            .iter()
            .map(|(_, m)| m.verifications().find(|(s, _)| *s == set).and_then(|(_, v)| folds(v)))
            .collect();
        let Some(per_method) = per_method else { continue };
        for i in 0..methods.len() {
            for j in i + 1..methods.len() {
                let Some(test) = paired(&per_method[i], &per_method[j]) else {
                    continue;
                };
                let verdict = if test.p_t < alpha && test.p_wilcoxon < alpha {
                    if test.mean_diff > 0.0 {
                        format!("{} > {}", methods[i].0, methods[j].0)
                    } else {
                        format!("{} < {}", methods[i].0, methods[j].0)
                    }
                } else {
                    "no significant difference".to_owned()
                };
                out.push(PairRow {
                    set: set.to_owned(),
                    a: methods[i].0.clone(),
                    b: methods[j].0.clone(),
                    test,
                    verdict,
                });
            }
        }
    }
    out
}

/// The pairs as a markdown table.
pub fn markdown(rows: &[PairRow], alpha: f64) -> String {
    let mut s = format!(
        "## Which differences the folds carry\n\nPer set, each pair's per-fold accuracies (headline protocol): mean difference a − b in points with its sd over folds, the paired t test and Wilcoxon's signed rank (two-sided); called different when both p < {alpha}.\n\n| set | a | b | a − b (points) | t | p (t) | W | p (Wilcoxon) | verdict |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    for r in rows {
        let t = &r.test;
        s.push_str(&format!(
            "| {} | {} | {} | {:+.2} ± {:.2} | {:.2} | {:.4} | {} | {:.4} | {} |\n",
            r.set,
            r.a,
            r.b,
            100.0 * t.mean_diff,
            100.0 * t.std_diff,
            t.t,
            t.p_t,
            t.w,
            t.p_wilcoxon,
            r.verdict
        ));
    }
    s
}

/// The lines `spherepipe run` prints: the differences the folds carry, then how many do not.
pub fn summary(rows: &[PairRow]) -> String {
    let carried: Vec<String> = rows
        .iter()
        .filter(|r| r.verdict != "no significant difference")
        .map(|r| {
            format!(
                "{}: {} (p {:.4} t, {:.4} Wilcoxon)",
                r.set, r.verdict, r.test.p_t, r.test.p_wilcoxon
            )
        })
        .collect();
    let rest = rows.len() - carried.len();
    let mut s = carried.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s.push_str(&format!(
        "{rest} of {} pairs: no significant difference over the folds\n",
        rows.len()
    ));
    s
}
