//! The `hard` presets' pair lists: every fold drawn the same way, so folds differ only by
//! chance in the faces, not in how often one hard pair was repeated.
//!
//! Drawing pairs with replacement from a fold's few people (as the small presets do) repeats
//! a pair up to a dozen times: the 6,000 LFW pairs held only 1,257 distinct matched ones, and
//! one badly aged person could sink a fold. Here a fold's same-person pairs are distinct and
//! spread over its people (one pair per person per round), and a fixed share of its
//! different-person pairs are two members of one look-alike family, the rest distinct pairs
//! of strangers.

use std::collections::HashSet;

use spherepipe_rng::Rng;

/// One person of a fold: their family founder and how many images (or videos) they have.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    /// The family founder's id (the person's own id outside families).
    pub founder: u64,
    /// Images (LFW) or videos (YTF) of this person, numbered `0..items`.
    pub items: usize,
}

/// One fold's pairs: indices into the fold's members and into each member's items.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    /// (member, item, other item), item < other item.
    pub same: Vec<(usize, usize, usize)>,
    /// (member, item, other member, its item).
    pub different: Vec<(usize, usize, usize, usize)>,
}

/// Draws `n` same-person and `n` different-person pairs among `members`, `family_share` of
/// the latter within a family. Repeats a pair only when the fold has too few distinct ones.
pub(crate) fn draw_fold(r: &mut Rng, members: &[Member], n: usize, family_share: f64) -> Fold {
    let same = same_pairs(r, members, n);
    let in_family = ((n as f64 * family_share).round() as usize).min(n);
    let mut different = family_pairs(r, members, in_family);
    different.extend(stranger_pairs(r, members, n - different.len()));
    Fold { same, different }
}

/// Same-person pairs, round robin over the people in a shuffled order, each person's pairs
/// shuffled: one new pair per person per round until `n` are drawn.
fn same_pairs(r: &mut Rng, members: &[Member], n: usize) -> Vec<(usize, usize, usize)> {
    let mut queues: Vec<Vec<(usize, usize, usize)>> = Vec::new();
    for (m, p) in members.iter().enumerate() {
        let mut q: Vec<_> = (0..p.items).flat_map(|i| (i + 1..p.items).map(move |j| (m, i, j))).collect();
        r.shuffle(&mut q);
        if !q.is_empty() {
            queues.push(q);
        }
    }
    r.shuffle(&mut queues);
    let all: Vec<_> = round_robin(&queues);
    if all.is_empty() {
        return Vec::new();
    }
    // Too few distinct pairs: the list comes round again (never the case in the presets).
    all.iter().cycle().take(n).copied().collect()
}

/// The queues' items interleaved: each queue's first, then each one's second, and so on.
fn round_robin<T: Copy>(queues: &[Vec<T>]) -> Vec<T> {
    let longest = queues.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|k| queues.iter().filter_map(move |q| q.get(k).copied()))
        .collect()
}

/// Up to `n` pairs of two members of one family, distinct pairs of people first.
fn family_pairs(r: &mut Rng, members: &[Member], n: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut couples: Vec<(usize, usize)> = Vec::new();
    for a in 0..members.len() {
        for b in a + 1..members.len() {
            if members[a].founder == members[b].founder {
                couples.push((a, b));
            }
        }
    }
    if couples.is_empty() {
        return Vec::new();
    }
    r.shuffle(&mut couples);
    let picked: Vec<(usize, usize)> = couples.iter().cycle().take(n).copied().collect();
    picked.into_iter().map(|(a, b)| with_items(r, members, a, b)).collect()
}

/// `n` pairs of people from different families, no couple twice while the fold has others.
fn stranger_pairs(r: &mut Rng, members: &[Member], n: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut out = Vec::with_capacity(n);
    let mut seen = HashSet::new();
    if members.len() < 2 {
        return out;
    }
    let mut tries = 0;
    while out.len() < n {
        let a = r.int(0, members.len() - 1);
        let b = (a + r.int(1, members.len() - 1)) % members.len();
        tries += 1;
        let strangers = members[a].founder != members[b].founder;
        // After many misses (a fold of one family, or every couple used) take what comes.
        if tries > 50 * n || (strangers && seen.insert((a.min(b), a.max(b)))) {
            out.push(with_items(r, members, a, b));
        }
    }
    out
}

fn with_items(r: &mut Rng, members: &[Member], a: usize, b: usize) -> (usize, usize, usize, usize) {
    let ia = r.int(0, members[a].items.max(1) - 1);
    let ib = r.int(0, members[b].items.max(1) - 1);
    (a, ia, b, ib)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold_of(n_people: usize, items: usize) -> Vec<Member> {
        // Families of four: people 0-3 share founder 0, 4-7 founder 4, ...
        (0..n_people)
            .map(|i| Member {
                founder: (i / 4 * 4) as u64,
                items,
            })
            .collect()
    }

    #[test]
    fn same_pairs_are_distinct_and_spread_over_people() {
        let members = fold_of(40, 3); // 3 pairs each, 120 in all
        let f = draw_fold(&mut Rng::new(1), &members, 80, 0.05);
        let distinct: HashSet<_> = f.same.iter().collect();
        assert_eq!(distinct.len(), 80);
        // Round robin: after two full rounds every person has exactly two pairs.
        let mut per_person = vec![0; 40];
        for &(m, i, j) in &f.same {
            assert!(i < j && j < 3);
            per_person[m] += 1;
        }
        assert!(per_person.iter().all(|&c| c == 2), "{per_person:?}");
    }

    #[test]
    fn a_fixed_share_of_different_pairs_is_within_a_family() {
        let members = fold_of(40, 2);
        let f = draw_fold(&mut Rng::new(2), &members, 100, 0.1);
        let family = f.different.iter().filter(|d| members[d.0].founder == members[d.2].founder).count();
        assert_eq!(family, 10);
        assert_eq!(f.different.len(), 100);
        let couples: HashSet<_> = f.different.iter().map(|d| (d.0.min(d.2), d.0.max(d.2))).collect();
        assert_eq!(couples.len(), 100, "no couple twice");
        assert!(f.different.iter().all(|d| d.0 != d.2 && d.1 < 2 && d.3 < 2));
    }

    #[test]
    fn too_few_distinct_pairs_repeat_rather_than_fail() {
        let members = fold_of(2, 2); // one same pair each, one couple (a family)
        let f = draw_fold(&mut Rng::new(3), &members, 5, 0.0);
        assert_eq!((f.same.len(), f.different.len()), (5, 5));
        let alone = draw_fold(&mut Rng::new(3), &fold_of(1, 1), 3, 0.5);
        assert!(alone.same.is_empty() && alone.different.is_empty());
    }
}
