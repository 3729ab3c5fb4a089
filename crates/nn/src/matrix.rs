//! The dense helpers both convolution paths use (`conv.rs`'s stride-2 patch gemm and
//! `winograd.rs`'s stride-1 transforms): the element types, row-major products through the
//! `gemm` crate, the even/odd split of a line, and sums in a fixed order. Neither kernel file
//! imports the other for these.

use std::ops::Range;

/// The element types the kernels take (f32 for training, f64 for the tests' tight checks).
pub trait Real:
    Copy
    + Default
    + std::ops::AddAssign
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + Send
    + Sync
    + 'static
    + bytemuck::Pod
    + burn::tensor::Element
{
    /// 1.
    const ONE: Self;
    /// ½.
    const HALF: Self;
}

impl Real for f32 {
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;
}

impl Real for f64 {
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;
}

/// even[t] = line[2t], odd[t] = line[2t + 1], zero past the line's end (all zero for an empty
/// line). Pair by pair, a loop the compiler turns into vector shuffles; inlined, so that the
/// Winograd transforms compiled for AVX2 get it in AVX2 too.
#[inline(always)]
pub(crate) fn split_even_odd<T: Real>(line: &[T], even: &mut [T], odd: &mut [T]) {
    let pairs = line.chunks_exact(2);
    let (count, last) = (pairs.len(), pairs.remainder().first().copied());
    for ((pair, e), o) in pairs.zip(even.iter_mut()).zip(odd.iter_mut()) {
        *e = pair[0];
        *o = pair[1];
    }
    if let Some(v) = last {
        even[count] = v;
    }
    even[count + usize::from(last.is_some())..].fill(T::default());
    odd[count..].fill(T::default());
}

/// dst [m × n] = a [m × k] · b [k × n], all row-major, added to what dst holds if `accumulate`.
pub(crate) fn multiply<T: Real>(dst: &mut [T], a: &[T], b: &[T], (m, k, n): (usize, usize, usize), accumulate: bool) {
    gemm_row_major(dst, a, (b, n as isize, 1), (m, k, n), accumulate);
}

/// dst [m × n] += a [m × k] · btᵀ, where `bt` is [n × k], all row-major.
pub(crate) fn add_product_with_transpose<T: Real>(dst: &mut [T], a: &[T], bt: &[T], (m, k, n): (usize, usize, usize)) {
    gemm_row_major(dst, a, (bt, 1, k as isize), (m, k, n), true);
}

/// dst [m × n] (=, or += if `accumulate`) a [m × k] · b, with b's element (r, c) at
/// `b.0[r · b.1 + c · b.2]`.
fn gemm_row_major<T: Real>(
    dst: &mut [T],
    a: &[T],
    (b, b_row, b_col): (&[T], isize, isize),
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n);
    assert!((b_row, b_col) == (n as isize, 1) || (b_row, b_col) == (1, k as isize));
    // SAFETY: b is k × n read row-major or as the transpose of an n × k row-major matrix (the
    // two stride pairs allowed above); the lengths checked above keep every index of the three
    // matrices in bounds; dst is borrowed mutably, so it overlaps neither a nor b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_col,
            b_row,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// How many partial sums a weight gradient is split into: fixed, so that the order of the
/// floating-point additions (and with it every bit of the result) does not depend on the
/// number of threads.
const PARTIAL_SUMS: usize = 8;

/// Σ of `items` terms of `len` values each: the items are cut into [`PARTIAL_SUMS`] runs, summed
/// in parallel, each in item order by `add(acc, run)`; the partial sums are then added in run
/// order.
pub(crate) fn sum_in_runs<T: Real>(items: usize, len: usize, add: impl Fn(&mut [T], Range<usize>) + Sync) -> Vec<T> {
    use rayon::prelude::*;
    let per_run = items.div_ceil(PARTIAL_SUMS).max(1);
    let runs: Vec<Vec<T>> = (0..items)
        .step_by(per_run)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|first| {
            let mut acc = vec![T::default(); len];
            add(&mut acc, first..(first + per_run).min(items));
            acc
        })
        .collect();
    let mut total = vec![T::default(); len];
    for run in runs {
        total.iter_mut().zip(run).for_each(|(t, r)| *t += r);
    }
    total
}
