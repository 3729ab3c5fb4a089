//! The dense helpers both convolution paths use (`conv.rs`'s stride-2 patch gemm and
//! `winograd.rs`'s and `winograd4.rs`'s stride-1 transforms): the element types, row-major products (through
//! `products.rs`), the even/odd split of a line, and sums in a fixed order. Neither kernel
//! file imports the other for these.

use crate::products::{product, Isa, Layout};
use std::mem::MaybeUninit;
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
    + PartialOrd
    + bytemuck::Pod
    + burn::tensor::Element
{
    /// 1.
    const ONE: Self;
    /// ½.
    const HALF: Self;
    /// self · a + b with one rounding (a fused multiply-add, in software where the CPU has none).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `v` rounded to this type (the Winograd transforms' constants).
    fn constant(v: f64) -> Self;
}

impl Real for f32 {
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
    #[inline(always)]
    fn constant(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
    #[inline(always)]
    fn constant(v: f64) -> Self {
        v
    }
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

/// `$name`, a function over plain arrays, with `$body` compiled also for AVX-512 and for AVX2,
/// run on the path [`Isa::best`] names (more lanes than the x86-64 baseline the crate is built
/// for). The bodies are element-by-element sums and copies (Rust never fuses a multiply and an
/// add on its own), so their bits are the same on every path.
macro_rules! vector_paths {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $body:ident;) => {
        $(#[$doc])*
        fn $name<T: Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512<T: Real>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2<T: Real>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match $crate::products::Isa::best() {
                    // SAFETY: `Isa::best()` names a path the CPU has (never above `Isa::cpu()`).
                    $crate::products::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::products::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::products::Isa::Portable => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use vector_paths;

/// Partial sums [`lane_sum`] keeps, value i going to sum i mod LANES: one AVX-512 vector of
/// f32, two of AVX2, and the same on every path, so the same bits.
const LANES: usize = 16;

/// Σᵢ term(x[i], g[i]) in LANES interleaved partial sums, then those added in lane order: the
/// sum runs on vectors (one chain of additions would wait four cycles per value), and its
/// order is fixed, whatever the vector width.
#[inline(always)]
pub(crate) fn lane_sum<T: Real>(x: &[T], g: &[T], term: impl Fn(T, T) -> T) -> T {
    assert_eq!(x.len(), g.len());
    let zero = T::default();
    let mut lanes = [zero; LANES];
    let whole = x.len() / LANES * LANES;
    for (xs, gs) in x[..whole].chunks_exact(LANES).zip(g[..whole].chunks_exact(LANES)) {
        for l in 0..LANES {
            lanes[l] += term(xs[l], gs[l]);
        }
    }
    for (l, (&x, &g)) in x[whole..].iter().zip(&g[whole..]).enumerate() {
        lanes[l] += term(x, g);
    }
    lanes.iter().fold(zero, |s, &v| s + v)
}

/// sums[c] = Σ over images of plane_sum(image · channels + c), for [images, channels, pixels]
/// data: the planes' sums in parallel, then each channel's added in image order, so the bits
/// do not depend on the thread count.
pub(crate) fn channel_sums<T: Real>((images, channels, pixels): (usize, usize, usize), plane_sum: impl Fn(usize) -> T + Sync) -> Vec<T> {
    use rayon::prelude::*;
    let zero = T::default();
    let planes: Vec<T> = match pixels {
        0 => vec![zero; images * channels],
        _ => (0..images * channels).into_par_iter().map(&plane_sum).collect(),
    };
    let mut sums = vec![zero; channels];
    for image in planes.chunks_exact(channels.max(1)) {
        sums.iter_mut().zip(image).for_each(|(s, &p)| *s += p);
    }
    sums
}

/// dst [m × n] = a [m × k] · b [k × n], all row-major, added to what dst holds if `accumulate`.
pub(crate) fn multiply<T: Real>(dst: &mut [T], a: &[T], b: &[T], (m, k, n): (usize, usize, usize), accumulate: bool) {
    product(Isa::best(), dst, a, (b, Layout::RowMajor), (m, k, n), accumulate);
}

/// dst [m × n] += a [m × k] · btᵀ, where `bt` is [n × k], all row-major.
pub(crate) fn add_product_with_transpose<T: Real>(dst: &mut [T], a: &[T], bt: &[T], (m, k, n): (usize, usize, usize)) {
    product(Isa::best(), dst, a, (bt, Layout::Transposed), (m, k, n), true);
}

/// How many partial sums a weight gradient is split into: fixed, so that the order of the
/// floating-point additions (and with it every bit of the result) does not depend on the
/// number of threads.
const PARTIAL_SUMS: usize = 8;

/// How many runs (partial sums) [`sum_in_runs`] cuts `items` into.
pub(crate) fn runs_for(items: usize) -> usize {
    items.div_ceil(items_per_run(items))
}

fn items_per_run(items: usize) -> usize {
    items.div_ceil(PARTIAL_SUMS).max(1)
}

/// Σ of `items` terms of `len` values each: the items are cut into [`PARTIAL_SUMS`] runs, summed
/// in parallel, each in item order by `add(acc, run)`; the partial sums are then added in run
/// order.
pub(crate) fn sum_in_runs<T: Real>(items: usize, len: usize, add: impl Fn(&mut [T], Range<usize>) + Sync) -> Vec<T> {
    use rayon::prelude::*;
    let per_run = items_per_run(items);
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

/// `len` values, zero, then each chunk of `chunk` values given to `fill(i, chunk i)`, chunks in
/// parallel: every chunk is zeroed by the task that fills it, while it is in that core's
/// cache; `vec![0; len]` had the allocating thread write all of it first, a pass over memory
/// (the convolutions' outputs are up to 22 MB).
pub(crate) fn filled_by_chunks<T: Real>(len: usize, chunk: usize, fill: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let zeroed_then_filled = |i: usize, part: &mut [MaybeUninit<T>]| fill(i, zeroed(part));
    // SAFETY: `zeroed_then_filled` writes every value of its chunk.
    unsafe { written_by_chunks(len, chunk, zeroed_then_filled) }
}

/// `part` filled with zeros, as initialised values.
pub(crate) fn zeroed<T: Real>(part: &mut [MaybeUninit<T>]) -> &mut [T] {
    part.fill(MaybeUninit::new(T::default()));
    // SAFETY: every value of `part` was initialised by the line above, and MaybeUninit<T> has
    // T's layout.
    unsafe { &mut *(part as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// `len` values, each chunk of `chunk` values written by `write(i, chunk i)`, chunks in
/// parallel, into memory that nothing zeroes first: for outputs whose every value a kernel
/// writes (the Winograd forward's), where even zeroing in the cache cost a pass.
///
/// # Safety
/// `write` must write every value of the chunk it is given: the result is read as initialised.
pub(crate) unsafe fn written_by_chunks<T: Real>(len: usize, chunk: usize, write: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, part)| write(i, part));
    // SAFETY: the chunks cover all `len` values, and the caller's `write` wrote every value of
    // each (a panic in one would have left this function before here).
    unsafe { out.set_len(len) };
    out
}

thread_local! {
    /// Each thread's spare working buffers (as u64s, aligned for f32 and f64 alike).
    static SPARE: std::cell::RefCell<Vec<Vec<u64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` given a buffer of `len` values that it must overwrite before it reads them (they hold
/// whatever an earlier call left): a thread's buffers are kept and reused, so a training step
/// neither asks the allocator for fresh pages nor zeroes what it is about to write. Calls may
/// nest; each takes a buffer of its own.
pub(crate) fn with_scratch<T: Real, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let words = (len * std::mem::size_of::<T>()).div_ceil(8);
    let mut buffer = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    if buffer.len() < words {
        buffer.resize(words, 0);
    }
    let values: &mut [T] = bytemuck::cast_slice_mut(&mut buffer[..words]);
    let out = f(&mut values[..len]);
    SPARE.with(|s| s.borrow_mut().push(buffer));
    out
}
