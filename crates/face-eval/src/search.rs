//! MegaFace challenge-1 scoring, streamed over the distractors.
//!
//! Identification: for each probe identity with M images, each image g in turn joins the
//! gallery with the distractors and every other image j of that identity is a probe; j's rank
//! is 1 + the number of distractors scoring above g. Only the ten best distractor scores of
//! each probe matter for a CMC up to rank 10, so the search keeps those, not the score matrix.
//!
//! Verification: genuine pairs are the pairs of probe images of one identity; impostor pairs
//! are every probe against every distractor. TAR is read at FAR 1e-6, or at the lowest power
//! of ten the number of impostor pairs can measure; only the highest impostor scores needed
//! for that are kept.
//!
//! Distractors arrive in chunks (any size) in list order; the set of size N is the first N of
//! them, as the devkit's nested lists are. Scores are cosines, from one matrix product per chunk
//! (`gemm`, parallel), so memory is the probes plus one chunk whatever the number of distractors.

use crate::roc::{lowest_measurable_far, tar_at_far, TarAtFar};
use crate::EvalError;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Totally ordered f32 for the impostor heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f32);
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Score {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// MegaFace figures at one distractor set size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeResult {
    /// Distractors in the set (its first N).
    pub distractors: usize,
    /// Identification rate at rank 1 (NaN, null in JSON, without probe pairs).
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub rank1: f64,
    /// Identification rate at ranks 1..=10.
    #[serde(deserialize_with = "crate::nullable::f64s")]
    pub cmc: Vec<f64>,
    /// (gallery image, probe image) pairs scored.
    pub probe_pairs: usize,
    /// Pairs of probe images of one identity.
    pub genuine_pairs: usize,
    /// Probe × distractor pairs.
    pub impostor_pairs: u64,
    /// TAR at the challenge FAR, or the lowest the impostor count measures.
    pub verification: TarAtFar,
}

struct Snapshot {
    size: usize,
    top: Vec<f32>,
    impostors: Vec<f64>,
}

/// MegaFace scoring in progress: probes fixed, distractors pushed in chunks, figures taken at
/// each set size as the stream passes it.
pub struct Search {
    dim: usize,
    probes: Vec<f32>,
    identity: Vec<u32>,
    ranks: usize,
    sizes: Vec<usize>,
    far_floor: f64,
    /// Per probe, its `ranks` best distractor scores, descending.
    top: Vec<f32>,
    impostors: BinaryHeap<Reverse<Score>>,
    keep_impostors: usize,
    seen: usize,
    snapshots: Vec<Snapshot>,
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl Search {
    /// `probes`: P rows of `dim` features; `identity`: the probe's identity; `sizes`: distractor
    /// set sizes to report; `far_floor`: the verification FAR (1e-6 in the challenge).
    pub fn new(mut probes: Vec<f32>, identity: Vec<u32>, dim: usize, sizes: &[usize], far_floor: f64) -> Result<Self, EvalError> {
        if dim == 0 || probes.len() != identity.len() * dim {
            return Err(EvalError::ProbeShape {
                values: probes.len(),
                probes: identity.len(),
                dim,
            });
        }
        probes.chunks_mut(dim).for_each(l2_normalize);
        let mut sizes: Vec<usize> = sizes.iter().copied().filter(|&s| s > 0).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let p = identity.len() as u64;
        let keep = sizes
            .iter()
            .map(|&s| {
                let n = p * s as u64;
                (lowest_measurable_far(n, far_floor) * n as f64 + 1e-9).floor() as usize + 1
            })
            .max()
            .unwrap_or(1);
        let ranks = 10;
        Ok(Search {
            dim,
            top: vec![f32::NEG_INFINITY; identity.len() * ranks],
            probes,
            identity,
            ranks,
            sizes,
            far_floor,
            impostors: BinaryHeap::with_capacity(keep + 1),
            keep_impostors: keep,
            seen: 0,
            snapshots: Vec::new(),
        })
    }

    /// Distractors seen so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Scores the next distractors (rows of `dim`, any norm).
    pub fn push(&mut self, rows: &[f32]) -> Result<(), EvalError> {
        if !rows.len().is_multiple_of(self.dim) {
            return Err(EvalError::DistractorShape {
                values: rows.len(),
                dim: self.dim,
            });
        }
        let mut rows = rows.to_vec();
        rows.chunks_mut(self.dim).for_each(l2_normalize);
        let mut start = 0;
        let n = rows.len() / self.dim;
        while start < n {
            // Stop at the next reported size, so the snapshot sees exactly that prefix.
            let next = self.sizes.iter().copied().find(|&s| s > self.seen).unwrap_or(usize::MAX);
            let end = n.min(start + (next - self.seen));
            self.score(&rows[start * self.dim..end * self.dim]);
            self.seen += end - start;
            start = end;
            if self.seen == next {
                let mut imp: Vec<f64> = self.impostors.iter().map(|r| r.0 .0 as f64).collect();
                imp.sort_by(|a, b| b.total_cmp(a));
                self.snapshots.push(Snapshot {
                    size: next,
                    top: self.top.clone(),
                    impostors: imp,
                });
            }
        }
        Ok(())
    }

    fn score(&mut self, rows: &[f32]) {
        let (p, c, d) = (self.identity.len(), rows.len() / self.dim, self.dim);
        if c == 0 || p == 0 {
            return;
        }
        let mut s = vec![0f32; p * c];
        // S (p × c, row-major) = probes (p × d, row-major) · rowsᵀ (d × c).
        // SAFETY: the pointers cover p·c, p·d and c·d elements with the given strides.
        unsafe {
            gemm::gemm(
                p,
                c,
                d,
                s.as_mut_ptr(),
                1,
                c as isize,
                false,
                self.probes.as_ptr(),
                1,
                d as isize,
                rows.as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        let ranks = self.ranks;
        let keep = self.keep_impostors;
        let floor = if self.impostors.len() >= keep {
            self.impostors.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0)
        } else {
            f32::NEG_INFINITY
        };
        let candidates: Vec<Vec<f32>> = self
            .top
            .par_chunks_mut(ranks)
            .zip(s.par_chunks(c))
            .map(|(top, row)| {
                let mut cand = Vec::new();
                for &v in row {
                    if v > top[ranks - 1] {
                        let mut i = ranks - 1;
                        while i > 0 && top[i - 1] < v {
                            top[i] = top[i - 1];
                            i -= 1;
                        }
                        top[i] = v;
                    }
                    if v > floor {
                        cand.push(v);
                    }
                }
                if cand.len() > keep {
                    cand.select_nth_unstable_by(keep - 1, |a, b| b.total_cmp(a));
                    cand.truncate(keep);
                }
                cand
            })
            .collect();
        for v in candidates.into_iter().flatten() {
            if self.impostors.len() < keep {
                self.impostors.push(Reverse(Score(v)));
            } else if self.impostors.peek().is_some_and(|m| v > m.0 .0) {
                self.impostors.pop();
                self.impostors.push(Reverse(Score(v)));
            }
        }
    }

    /// Results for every reported size the distractors reached.
    pub fn finish(self) -> Vec<SizeResult> {
        let d = self.dim;
        let dot = |a: usize, b: usize| -> f32 {
            self.probes[a * d..(a + 1) * d]
                .iter()
                .zip(&self.probes[b * d..(b + 1) * d])
                .map(|(x, y)| x * y)
                .sum()
        };
        let mut groups: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
        for (i, &id) in self.identity.iter().enumerate() {
            groups.entry(id).or_default().push(i);
        }
        // (probe j, gallery g) genuine scores, and the unordered genuine pairs.
        let mut ordered: Vec<(usize, f32)> = Vec::new();
        let mut genuine: Vec<f64> = Vec::new();
        for members in groups.values() {
            for &g in members {
                for &j in members {
                    if g != j {
                        let s = dot(j, g);
                        ordered.push((j, s));
                        if g < j {
                            genuine.push(s as f64);
                        }
                    }
                }
            }
        }
        let p = self.identity.len() as u64;
        self.snapshots
            .iter()
            .map(|snap| {
                let mut at_rank = vec![0usize; self.ranks];
                for &(j, s) in &ordered {
                    let above = snap.top[j * self.ranks..(j + 1) * self.ranks].iter().filter(|&&t| t > s).count();
                    if above < self.ranks {
                        at_rank[above] += 1;
                    }
                }
                let total = ordered.len().max(1) as f64;
                let cmc: Vec<f64> = at_rank
                    .iter()
                    .scan(0usize, |acc, &n| {
                        *acc += n;
                        Some(*acc as f64 / total)
                    })
                    .collect();
                let impostor_pairs = p * snap.size as u64;
                let far = lowest_measurable_far(impostor_pairs, self.far_floor);
                SizeResult {
                    distractors: snap.size,
                    rank1: cmc[0],
                    cmc,
                    probe_pairs: ordered.len(),
                    genuine_pairs: genuine.len(),
                    impostor_pairs,
                    verification: tar_at_far(&genuine, &snap.impostors, impostor_pairs, far),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(rng: &mut spherepipe_rng::Rng, d: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
        l2_normalize(&mut v);
        v
    }

    #[test]
    fn streamed_search_matches_a_direct_count() {
        let (d, n_dis) = (16, 500);
        let mut rng = spherepipe_rng::Rng::new(11);
        // 6 identities x 5 images: a centre plus noise, so some probes beat the distractors.
        let mut probes = Vec::new();
        let mut ids = Vec::new();
        for id in 0..6u32 {
            let c = unit(&mut rng, d);
            for _ in 0..5 {
                let mut v: Vec<f32> = c.iter().map(|x| x + 0.25 * rng.normal() as f32).collect();
                l2_normalize(&mut v);
                probes.extend(v);
                ids.push(id);
            }
        }
        let dis: Vec<f32> = (0..n_dis).flat_map(|_| unit(&mut rng, d)).collect();
        let mut s = Search::new(probes.clone(), ids.clone(), d, &[10, 100, 500, 1000], 1e-6).unwrap();
        for chunk in dis.chunks(37 * d) {
            s.push(chunk).unwrap();
        }
        let got = s.finish();
        assert_eq!(got.iter().map(|r| r.distractors).collect::<Vec<_>>(), [10, 100, 500]);

        let dotp = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let probe = |i: usize| &probes[i * d..(i + 1) * d];
        for r in &got {
            let n = r.distractors;
            let (mut rank_le, mut pairs) = ([0usize; 10], 0);
            let mut genuine = Vec::new();
            for g in 0..30 {
                for j in 0..30 {
                    if g == j || ids[g] != ids[j] {
                        continue;
                    }
                    pairs += 1;
                    let sg = dotp(probe(j), probe(g));
                    if g < j {
                        genuine.push(sg as f64);
                    }
                    let rank = 1 + (0..n).filter(|&k| dotp(probe(j), &dis[k * d..(k + 1) * d]) > sg).count();
                    for (r, c) in rank_le.iter_mut().enumerate() {
                        if rank <= r + 1 {
                            *c += 1;
                        }
                    }
                }
            }
            assert_eq!(r.probe_pairs, pairs);
            for (k, c) in rank_le.iter().enumerate() {
                assert!((r.cmc[k] - *c as f64 / pairs as f64).abs() < 1e-12, "size {n} rank {}", k + 1);
            }
            // Verification against all impostor scores sorted.
            let mut imp: Vec<f64> = (0..30)
                .flat_map(|j| (0..n).map(move |k| (j, k)))
                .map(|(j, k)| dotp(probe(j), &dis[k * d..(k + 1) * d]) as f64)
                .collect();
            imp.sort_by(|a, b| b.total_cmp(a));
            let far = r.verification.far;
            let allowed = (far * imp.len() as f64 + 1e-9).floor() as usize;
            assert!(allowed >= 1 && (far / 10.0 * imp.len() as f64) < 1.0 || far == 1e-6);
            let t = imp[allowed];
            let tar = genuine.iter().filter(|&&s| s > t).count() as f64 / genuine.len() as f64;
            assert_eq!(r.verification.tar, Some(tar), "size {n}");
            assert_eq!(r.impostor_pairs, 30 * n as u64);
        }
        // With 10 distractors rank-1 is high, and it can only fall as distractors are added.
        assert!(got[0].rank1 >= got[1].rank1 && got[1].rank1 >= got[2].rank1);
        assert!(got[0].rank1 > 0.5);
    }
}
