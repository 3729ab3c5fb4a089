//! A small deterministic generator (splitmix64), shared by every stage that shuffles or draws.
//! Owned here rather than taken from `rand` so what a seed produces never changes with a
//! dependency upgrade.

#![warn(missing_docs)]

/// A splitmix64 generator: its whole state is one `u64`.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// A generator for a sub-stream: independent of the order in which streams are used, so
    /// images can be rendered in parallel and still be identical for a seed.
    pub fn derive(seed: u64, tags: &[u64]) -> Self {
        let mut r = Rng(seed ^ 0x5EED_F00D_0000_0000);
        for &t in tags {
            r.0 ^= t.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            r.next_u64();
        }
        r
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform integer in [lo, hi] (inclusive).
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// A uniformly chosen element of `xs` (which must not be empty).
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.int(0, xs.len() - 1)]
    }
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.int(0, i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_close_to_theory() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let (mut s, mut s2, mut u) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            let x = r.normal();
            s += x;
            s2 += x * x;
            u += r.unit();
        }
        let n = n as f64;
        assert!((s / n).abs() < 0.01, "mean {}", s / n);
        assert!((s2 / n - 1.0).abs() < 0.02, "var {}", s2 / n);
        assert!((u / n - 0.5).abs() < 0.005);
    }

    #[test]
    fn derived_streams_are_stable_and_distinct() {
        let a = Rng::derive(7, &[1, 2]).next_u64();
        assert_eq!(a, Rng::derive(7, &[1, 2]).next_u64());
        assert_ne!(a, Rng::derive(7, &[2, 1]).next_u64());
        assert_ne!(a, Rng::derive(8, &[1, 2]).next_u64());
    }
}
