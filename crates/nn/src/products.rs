//! The matrix products under the convolutions, our own so that an output's arithmetic never
//! depends on the CPU: every element of a product is Σₚ a[i, p] · b[p, j] summed for p = 0, 1,
//! …, K − 1 by one fused multiply-add each, from 0, then added to what the output held. The
//! AVX-512, AVX2 and portable paths differ only in how many outputs they compute at once
//! (their register blocks), so they give the same bytes. The `gemm` crate, used before, picks
//! its k-blocking from the cache sizes it detects, so its sums (and a model's bits) moved from
//! one machine to another.
//!
//! The portable path (x86-64 without AVX2, other architectures) computes the same fused
//! multiply-adds in software where the CPU has none: slow, but the same bits.

use crate::matrix::{with_scratch, zeroed, Real};
use std::mem::MaybeUninit;
use std::ops::Range;

/// Which code computes the products: chosen once from the CPU, or forced (tests, benches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 512-bit vectors, 8 × 32 output blocks.
    Avx512,
    /// 256-bit vectors with FMA, 6 × 16 output blocks.
    Avx2,
    /// Whatever the compiler makes of plain Rust for the build's baseline, 4 × 8 blocks.
    Portable,
}

impl Isa {
    /// The path the convolutions take: the fastest this CPU runs, or a slower one named by
    /// `SPHEREPIPE_ISA` (avx2, portable), which benches use to time an older CPU's path.
    /// Since every path gives the same bytes, the variable changes speed, never an artifact.
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let cpu = Isa::cpu();
            let asked = std::env::var("SPHEREPIPE_ISA").ok().and_then(|v| Isa::named(&v));
            asked.filter(|a| *a <= cpu).unwrap_or(cpu)
        })
    }

    /// The fastest path this CPU runs.
    pub fn cpu() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every path this CPU can run, fastest first (what the bit-identity tests compare).
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|i| *i <= Isa::cpu())
            .collect()
    }

    /// The path called `name` (as [`Isa::name`] writes it).
    pub fn named(name: &str) -> Option<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable].into_iter().find(|i| i.name() == name)
    }

    /// How it is called in benches and notes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Rows of `a` in one register block of this path's micro-kernel (what `a` is packed by).
    fn rows(self) -> usize {
        match self {
            Isa::Avx512 => AVX512_ROWS,
            Isa::Avx2 => AVX2_ROWS,
            Isa::Portable => PORTABLE_ROWS,
        }
    }

    fn rank(self) -> u8 {
        match self {
            Isa::Avx512 => 2,
            Isa::Avx2 => 1,
            Isa::Portable => 0,
        }
    }
}

impl PartialOrd for Isa {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.rank().cmp(&other.rank()))
    }
}

/// Rows × columns of each path's register block (its micro-kernel's output tile).
const AVX512_ROWS: usize = 8;
const AVX2_ROWS: usize = 6;
const PORTABLE_ROWS: usize = 4;

/// How `b` is laid out: row-major [k × n], or the transpose of a row-major [n × k].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Layout {
    /// b[p, j] at `p · n + j`.
    RowMajor,
    /// b[p, j] at `j · k + p`.
    Transposed,
}

/// dst [m × n] (=, or += if `accumulate`) a [m × k] · b [k × n], all row-major (`b` as
/// `layout` says), on the path `isa`.
pub(crate) fn product<T: Real>(
    isa: Isa,
    dst: &mut [T],
    a: &[T],
    (b, layout): (&[T], Layout),
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n, "product: operand sizes");
    assert!(isa <= Isa::cpu(), "product: {isa:?} on a CPU without it");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: 0, or what dst held.
        if !accumulate {
            dst.fill(T::default());
        }
        return;
    }
    let job = Job {
        dst,
        a: Rows::Plain(a),
        b,
        layout,
        m,
        k,
        n,
        accumulate,
    };
    run(isa, job);
}

/// dst [rows × n] = A · b [k × n] (row-major), where A [rows × k] is columns
/// `first..first + rows` of `at` [k × lda] read as a transpose (A[i, p] = at[p · lda + first +
/// i]): a transposed left operand, packed from where it lies instead of transposed into a
/// copy first. The same bytes as [`product`] of that copy.
pub(crate) fn product_with_transposed_rows<T: Real>(
    isa: Isa,
    dst: &mut [T],
    (at, lda, first): (&[T], usize, usize),
    b: &[T],
    (rows, k, n): (usize, usize, usize),
) {
    assert!(dst.len() == rows * n && b.len() == k * n, "product: operand sizes");
    assert!(
        first + rows <= lda && at.len() >= k * lda,
        "product: transposed rows outside their matrix"
    );
    assert!(isa <= Isa::cpu(), "product: {isa:?} on a CPU without it");
    if rows == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(T::default());
        return;
    }
    let job = Job {
        dst,
        a: Rows::Transposed { at, lda, first },
        b,
        layout: Layout::RowMajor,
        m: rows,
        k,
        n,
        accumulate: false,
    };
    run(isa, job);
}

/// An 8 × 8 transpose: (from, its row stride, to, its row stride), as [`transpose8`].
trait Transpose8<T>: Fn(&[T], usize, &mut [T], usize) {}
impl<T, F: Fn(&[T], usize, &mut [T], usize)> Transpose8<T> for F {}

/// `a` [m × k] packed once for the path `isa`, for many products with it: the Winograd filters,
/// which every block of tiles multiplies.
pub(crate) struct PackedRows<T> {
    isa: Isa,
    blocks: Vec<T>,
    m: usize,
    k: usize,
}

impl<T: Real> PackedRows<T> {
    /// `count` matrices [m × k], each packed as [`blocks`] packs a left operand on the path
    /// `isa`, made and packed one register block of rows at a time, blocks in parallel:
    /// `make(rows, out)` writes rows `rows` of matrix i into `out[i]` ([rows.len() × k],
    /// row-major). For the Winograd filters: made as one large matrix per point and packed
    /// after, they went through memory twice, on one thread; a block's rows of all points
    /// (36 × 8 × 512 values at most) are still in the L2 cache when they are packed.
    pub(crate) fn many(
        isa: Isa,
        count: usize,
        (m, k): (usize, usize),
        make: impl Fn(Range<usize>, &mut [&mut [T]]) + Sync,
    ) -> Vec<PackedRows<T>> {
        use rayon::prelude::*;
        let mr = isa.rows();
        let group = mr;
        let len = m.div_ceil(mr) * k * mr;
        let mut blocks: Vec<Vec<T>> = (0..count).map(|_| Vec::with_capacity(len)).collect();
        if len > 0 {
            // tasks[g][i]: group g's part of matrix i's blocks.
            let mut tasks: Vec<Vec<&mut [MaybeUninit<T>]>> = (0..m.div_ceil(group)).map(|_| Vec::with_capacity(count)).collect();
            for matrix in &mut blocks {
                for (task, part) in tasks.iter_mut().zip(matrix.spare_capacity_mut()[..len].chunks_mut(group * k)) {
                    task.push(part);
                }
            }
            tasks.into_par_iter().enumerate().for_each(|(g, parts)| {
                let rows = g * group..((g + 1) * group).min(m);
                let n = rows.len() * k;
                with_scratch(count * n, |scratch: &mut [T]| {
                    let mut made: Vec<&mut [T]> = scratch.chunks_exact_mut(n).collect();
                    make(rows.clone(), &mut made);
                    for (matrix, part) in made.iter().zip(parts) {
                        pack_all_rows(isa, matrix, (rows.len(), k), zeroed(part));
                    }
                });
            });
        }
        blocks
            .into_iter()
            .map(|mut matrix| {
                // SAFETY: the tasks above initialised all `len` values (the parts cover
                // 0..len: m.div_ceil(group) parts of group · k, the last one shorter); a
                // panic in one would have left this function before here.
                unsafe { matrix.set_len(len) };
                PackedRows { isa, blocks: matrix, m, k }
            })
            .collect()
    }
}

/// `a` [m × k] packed into `blocks` as [`blocks`] packs a left operand on the path `isa`.
fn pack_all_rows<T: Real>(isa: Isa, a: &[T], (m, k): (usize, usize), blocks: &mut [T]) {
    let mr = isa.rows();
    let mut pack = |t8: &dyn Transpose8<T>| {
        for (i, block) in blocks.chunks_exact_mut(k * mr).enumerate() {
            pack_a(a, (m, k), i * mr, block, mr, &t8);
        }
    };
    let is_f32 = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>();
    match is_f32 {
        #[cfg(target_arch = "x86_64")]
        true if Isa::cpu() >= Isa::Avx2 => pack(&|f, fs, t, ts| {
            let (f, t) = (bytemuck::cast_slice(f), bytemuck::cast_slice_mut(t));
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { transpose8_avx(f, fs, t, ts) }
        }),
        _ => pack(&transpose8::<T>),
    }
}

/// dst [m × n] (=, or += if `accumulate`) a · b [k × n] (row-major), with a packed beforehand:
/// the same bytes as [`product`] on a's path.
pub(crate) fn product_with_packed<T: Real>(dst: &mut [T], a: &PackedRows<T>, b: &[T], n: usize, accumulate: bool) {
    let PackedRows { isa, m, k, .. } = *a;
    assert!(dst.len() == m * n && b.len() == k * n, "product: operand sizes");
    if m == 0 || n == 0 || k == 0 {
        if !accumulate {
            dst.fill(T::default());
        }
        return;
    }
    let job = Job {
        dst,
        a: Rows::Packed(&a.blocks),
        b,
        layout: Layout::RowMajor,
        m,
        k,
        n,
        accumulate,
    };
    run(isa, job);
}

/// The job on the path `isa` (at most what the CPU has).
fn run<T: Real>(isa: Isa, job: Job<'_, T>) {
    assert!(isa <= Isa::cpu(), "product: {isa:?} on a CPU without it");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::cpu()` found AVX-512F and FMA on this CPU (asserted above).
        Isa::Avx512 => unsafe { avx512(job) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::cpu()` found AVX2 and FMA on this CPU (asserted above).
        Isa::Avx2 => unsafe { avx2(job) },
        _ => blocks::<T, PORTABLE_ROWS, 8>(job, tile::<T, PORTABLE_ROWS, 8>, transpose8::<T>),
    }
}

/// [`product`] for the `products` bench: b transposed or not, nothing accumulated.
pub fn product_for_bench(isa: Isa, dst: &mut [f32], a: &[f32], b: &[f32], mkn: (usize, usize, usize), transposed: bool) {
    let layout = if transposed { Layout::Transposed } else { Layout::RowMajor };
    product(isa, dst, a, (b, layout), mkn, false);
}

/// f32 on AVX-512: 8 × 32 blocks (16 of the 32 vector registers accumulate).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn avx512<T: Real>(job: Job<'_, T>) {
    match as_f32(job) {
        Ok(job) => blocks::<f32, AVX512_ROWS, 32>(
            job,
            |ap, bp, k, out| tile_avx512(ap, bp, k, out),
            |f, fs, t, ts| transpose8_avx(f, fs, t, ts),
        ),
        Err(job) => blocks::<T, AVX512_ROWS, 32>(job, tile::<T, AVX512_ROWS, 32>, transpose8::<T>),
    }
}

/// f32 on AVX2: 6 × 16 blocks (12 of the 16 vector registers accumulate).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2<T: Real>(job: Job<'_, T>) {
    match as_f32(job) {
        Ok(job) => blocks::<f32, AVX2_ROWS, 16>(
            job,
            |ap, bp, k, out| tile_avx2(ap, bp, k, out),
            |f, fs, t, ts| transpose8_avx(f, fs, t, ts),
        ),
        Err(job) => blocks::<T, AVX2_ROWS, 16>(job, tile::<T, AVX2_ROWS, 16>, transpose8::<T>),
    }
}

/// The job as f32 when `T` is f32 (the vector kernels are written for f32; f64, which only
/// the tests use, takes the plain-Rust tile compiled for the same features).
fn as_f32<T: Real>(job: Job<'_, T>) -> Result<Job<'_, f32>, Job<'_, T>> {
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>() {
        return Err(job);
    }
    let Job {
        dst,
        a,
        b,
        layout,
        m,
        k,
        n,
        accumulate,
    } = job;
    let a = match a {
        Rows::Plain(a) => Rows::Plain(bytemuck::cast_slice(a)),
        Rows::Packed(a) => Rows::Packed(bytemuck::cast_slice(a)),
        Rows::Transposed { at, lda, first } => Rows::Transposed {
            at: bytemuck::cast_slice(at),
            lda,
            first,
        },
    };
    Ok(Job {
        dst: bytemuck::cast_slice_mut(dst),
        a,
        b: bytemuck::cast_slice(b),
        layout,
        m,
        k,
        n,
        accumulate,
    })
}

/// The left operand: as given, or already packed for the path ([`PackedRows`]).
#[derive(Clone, Copy)]
enum Rows<'a, T> {
    Plain(&'a [T]),
    Packed(&'a [T]),
    /// Columns `first..` of `at` [k × lda], read as rows.
    Transposed {
        at: &'a [T],
        lda: usize,
        first: usize,
    },
}

/// One product's operands.
struct Job<'a, T> {
    dst: &'a mut [T],
    a: Rows<'a, T>,
    b: &'a [T],
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
}

/// How many terms of each sum one pass takes: a [KC × 32] panel of `b` (32 KiB) stays in the
/// level-1 cache while every block of rows of `a` runs against it. A pass ends by storing its
/// partial sums and the next begins by loading them, which continues the chain of fused
/// multiply-adds exactly, so KC changes speed, never a bit.
const KC: usize = 256;

/// What a tile does with the `MR × NR` values at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Sums from 0, stored.
    Write,
    /// Sums from 0, added to what is there (dst + sum).
    Add,
    /// Sums continued from the partial sums there, stored.
    Continue,
}

/// The product in `MR × NR` output blocks: all of `a` packed into blocks of `MR` rows ([k × MR]
/// each), `b` into panels of `NR` columns ([k × NR] each); then, `KC` terms at a time, each
/// panel meets every block of rows (the panel's slice stays in the level-1 cache, the rows
/// stream from level 2), `tile` computing one block into an [`Out`] and `t8` transposing the
/// 8 × 8 blocks that packing reads across rows.
#[inline(always)]
fn blocks<T: Real, const MR: usize, const NR: usize>(
    job: Job<'_, T>,
    tile: impl Fn(&[T], &[T], usize, Out<'_, T>),
    t8: impl Transpose8<T>,
) {
    let Job {
        dst,
        a,
        b,
        layout,
        m,
        k,
        n,
        accumulate,
    } = job;
    let (row_blocks, panels) = (m.div_ceil(MR), n.div_ceil(NR));
    let with_packed_a = |f: &mut dyn FnMut(&[T])| match a {
        Rows::Packed(packed) => {
            assert_eq!(packed.len(), row_blocks * k * MR, "product: rows packed for another path");
            f(packed)
        }
        Rows::Transposed { at, lda, first } => with_scratch(row_blocks * k * MR, |packed: &mut [T]| {
            for (i, block) in packed.chunks_exact_mut(k * MR).enumerate() {
                pack_a_transposed((at, lda), (first + i * MR, MR.min(m - i * MR)), block, MR);
            }
            f(packed)
        }),
        Rows::Plain(a) => with_scratch(row_blocks * k * MR, |packed: &mut [T]| {
            for (i, block) in packed.chunks_exact_mut(k * MR).enumerate() {
                pack_a(a, (m, k), i * MR, block, MR, &t8);
            }
            f(packed)
        }),
    };
    with_packed_a(&mut |packed_a: &[T]| {
        with_scratch(panels * k * NR, |packed_b: &mut [T]| {
            for (j, panel) in packed_b.chunks_exact_mut(k * NR).enumerate() {
                pack_b::<T, NR>(b, layout, (k, n), j * NR, panel, &t8);
            }
            let packed = (packed_a, &*packed_b);
            if accumulate && k > KC {
                // With more than one pass, dst + sum needs the whole sum first.
                with_scratch(m * n, |sums: &mut [T]| {
                    passes::<T, MR, NR>(sums, packed, (m, k, n), false, &tile);
                    dst.iter_mut().zip(&*sums).for_each(|(d, s)| *d += *s);
                });
            } else {
                passes::<T, MR, NR>(dst, packed, (m, k, n), accumulate, &tile);
            }
        })
    });
}

/// `target` (=, or += if `accumulate` and one pass holds all of k) the product of the packed
/// operands, `KC` terms at a time: each panel of `b` meets every block of rows of `a`.
#[inline(always)]
fn passes<T: Real, const MR: usize, const NR: usize>(
    target: &mut [T],
    (packed_a, packed_b): (&[T], &[T]),
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    tile: &impl Fn(&[T], &[T], usize, Out<'_, T>),
) {
    let (row_blocks, panels) = (m.div_ceil(MR), n.div_ceil(NR));
    let mut edge = [[T::default(); NR]; MR];
    for k0 in (0..k).step_by(KC) {
        let kl = KC.min(k - k0);
        let mode = match (k0, accumulate) {
            (0, true) => Mode::Add,
            (0, false) => Mode::Write,
            _ => Mode::Continue,
        };
        for j in 0..panels {
            let bp = &packed_b[(j * k + k0) * NR..][..kl * NR];
            let (j0, cols) = (j * NR, NR.min(n - j * NR));
            for i in 0..row_blocks {
                let ap = &packed_a[(i * k + k0) * MR..][..kl * MR];
                let (i0, rows) = (i * MR, MR.min(m - i * MR));
                let at = &mut target[i0 * n + j0..];
                if rows == MR && cols == NR {
                    tile(ap, bp, kl, Out { rows: at, stride: n, mode });
                } else {
                    edge_tile(&mut edge, (at, n), (rows, cols), mode, |out| tile(ap, bp, kl, out));
                }
            }
        }
    }
}

/// A block cut by the matrix's edge, computed in a whole `MR × NR` scratch block: the partial
/// sums copied in first when the pass continues them, its `rows × cols` copied (or added) back.
#[inline(always)]
fn edge_tile<T: Real, const MR: usize, const NR: usize>(
    scratch: &mut [[T; NR]; MR],
    (target, stride): (&mut [T], usize),
    (rows, cols): (usize, usize),
    mode: Mode,
    tile: impl FnOnce(Out<'_, T>),
) {
    if mode == Mode::Continue {
        for (r, line) in scratch.iter_mut().enumerate().take(rows) {
            line[..cols].copy_from_slice(&target[r * stride..][..cols]);
        }
    }
    let inner = if mode == Mode::Continue { Mode::Continue } else { Mode::Write };
    tile(Out {
        rows: scratch.as_flattened_mut(),
        stride: NR,
        mode: inner,
    });
    for (r, sums) in scratch.iter().enumerate().take(rows) {
        let line = &mut target[r * stride..][..cols];
        for (o, &v) in line.iter_mut().zip(sums) {
            *o = if mode == Mode::Add { *o + v } else { v };
        }
    }
}

/// Where a tile's `MR × NR` sums go: row r at `rows[r · stride..][..NR]`, and what it does with
/// the values there (`mode`).
struct Out<'a, T> {
    rows: &'a mut [T],
    stride: usize,
    mode: Mode,
}

/// block[p · mr + r] = a[i0 + r, p] for the rows a has, 0 beyond: whole groups of 8 rows
/// by 8 × 8 transposes (`t8`), the rest one value at a time.
#[inline(always)]
fn pack_a<T: Real>(a: &[T], (m, k): (usize, usize), i0: usize, block: &mut [T], mr: usize, t8: &impl Transpose8<T>) {
    let rows = mr.min(m - i0);
    if rows < mr {
        block.fill(T::default());
    }
    let grouped = if rows == mr { rows / 8 * 8 } else { 0 };
    for r0 in (0..grouped).step_by(8) {
        transpose_rows(&a[(i0 + r0) * k..], k, &mut block[r0..], mr, t8);
    }
    for r in grouped..rows {
        for (p, &v) in a[(i0 + r) * k..][..k].iter().enumerate() {
            block[p * mr + r] = v;
        }
    }
}

/// block[p · mr + r] = at[p · lda + i0 + r] for the `rows` rows there are, 0 beyond: what
/// [`pack_a`] makes of the transpose of `at`, each term's rows one contiguous run of `at`.
#[inline(always)]
fn pack_a_transposed<T: Real>((at, lda): (&[T], usize), (i0, rows): (usize, usize), block: &mut [T], mr: usize) {
    for (p, line) in block.chunks_exact_mut(mr).enumerate() {
        line[..rows].copy_from_slice(&at[p * lda + i0..][..rows]);
        line[rows..].fill(T::default());
    }
}

/// panel[p · NR + c] = b[p, j0 + c] for the columns b has, 0 beyond: whole rows copied as one
/// block of NR values, or (b transposed) whole groups of 8 columns by 8 × 8 transposes.
#[inline(always)]
fn pack_b<T: Real, const NR: usize>(b: &[T], layout: Layout, (k, n): (usize, usize), j0: usize, panel: &mut [T], t8: &impl Transpose8<T>) {
    let cols = NR.min(n - j0);
    match layout {
        Layout::RowMajor if cols == NR => {
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                if let (Ok(row), Ok(from)) = (<&mut [T; NR]>::try_from(row), <&[T; NR]>::try_from(&b[p * n + j0..][..NR])) {
                    *row = *from;
                }
            }
        }
        Layout::RowMajor => {
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                row[..cols].copy_from_slice(&b[p * n + j0..][..cols]);
                row[cols..].fill(T::default());
            }
        }
        Layout::Transposed => {
            let grouped = if cols == NR { NR / 8 * 8 } else { 0 };
            if grouped < NR {
                panel.fill(T::default());
            }
            for c0 in (0..grouped).step_by(8) {
                transpose_rows(&b[(j0 + c0) * k..], k, &mut panel[c0..], NR, t8);
            }
            for c in grouped..cols {
                for (p, &v) in b[(j0 + c) * k..][..k].iter().enumerate() {
                    panel[p * NR + c] = v;
                }
            }
        }
    }
}

/// to[p · stride + r] = from[r · k + p] for r < 8 and p < k: eight rows of length k laid out
/// column by column, 8 × 8 at a time by `t8`, the last k mod 8 columns one value at a time.
#[inline(always)]
fn transpose_rows<T: Real>(from: &[T], k: usize, to: &mut [T], stride: usize, t8: &impl Transpose8<T>) {
    let whole = k / 8 * 8;
    for p0 in (0..whole).step_by(8) {
        t8(&from[p0..], k, &mut to[p0 * stride..], stride);
    }
    for r in 0..8 {
        for p in whole..k {
            to[p * stride + r] = from[r * k + p];
        }
    }
}

/// to[c · to_stride + r] = from[r · from_stride + c] for r, c < 8, in plain Rust.
#[inline(always)]
fn transpose8<T: Real>(from: &[T], from_stride: usize, to: &mut [T], to_stride: usize) {
    for r in 0..8 {
        for (c, &v) in from[r * from_stride..][..8].iter().enumerate() {
            to[c * to_stride + r] = v;
        }
    }
}

/// [`transpose8`] for f32 in AVX registers: the eight rows loaded, interleaved in pairs, then
/// in fours, then their 128-bit halves exchanged, and stored as eight columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose8_avx(from: &[f32], from_stride: usize, to: &mut [f32], to_stride: usize) {
    use std::arch::x86_64::*;
    assert!(from.len() >= 7 * from_stride + 8 && to.len() >= 7 * to_stride + 8);
    // SAFETY: rows r < 8 of 8 floats at r · from_stride and at r · to_stride lie inside the
    // slices (asserted above).
    unsafe {
        let row = |r: usize| _mm256_loadu_ps(from.as_ptr().add(r * from_stride));
        let [r0, r1, r2, r3, r4, r5, r6, r7] = [row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7)];
        // Pairs: (r0₀ r1₀ r0₁ r1₁ | r0₄ r1₄ r0₅ r1₅) and so on.
        let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
        // Fours: column c of rows 0–3 in one 128-bit half, c and c + 4 in the two halves.
        let (s0, s1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
        let (s2, s3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
        let (s4, s5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
        let (s6, s7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
        let columns = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        for (c, v) in columns.into_iter().enumerate() {
            _mm256_storeu_ps(to.as_mut_ptr().add(c * to_stride), v);
        }
    }
}

/// out [MR × NR] = Σₚ ap[p] ⊗ bp[p], from 0 in p order, one fused multiply-add per term: the
/// arithmetic every path computes (this one in plain Rust).
#[inline(always)]
fn tile<T: Real, const MR: usize, const NR: usize>(ap: &[T], bp: &[T], k: usize, out: Out<'_, T>) {
    let mut acc = [[T::default(); NR]; MR];
    if out.mode == Mode::Continue {
        for (r, sums) in acc.iter_mut().enumerate() {
            sums.copy_from_slice(&out.rows[r * out.stride..][..NR]);
        }
    }
    for (x, y) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)).take(k) {
        for r in 0..MR {
            for c in 0..NR {
                acc[r][c] = x[r].mul_add(y[c], acc[r][c]);
            }
        }
    }
    for (r, sums) in acc.iter().enumerate() {
        let row = &mut out.rows[r * out.stride..][..NR];
        for (o, &v) in row.iter_mut().zip(sums) {
            *o = if out.mode == Mode::Add { *o + v } else { v };
        }
    }
}

/// A [`tile`] for f32 in one vector width: `$mr` rows by two vectors of `$lanes` floats, the
/// same fused multiply-add per lane as `f32::mul_add`, in the same order.
macro_rules! vector_tile {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $mr:expr, $lanes:literal,
     $zero:ident, $load:ident, $store:ident, $splat:ident, $fma:ident, $add:ident) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        fn $name(ap: &[f32], bp: &[f32], k: usize, out: Out<'_, f32>) {
            use std::arch::x86_64::*;
            const NR: usize = 2 * $lanes;
            assert!(ap.len() >= k * $mr && bp.len() >= k * NR && out.stride >= NR && out.rows.len() >= ($mr - 1) * out.stride + NR);
            let mut acc = [[$zero(); 2]; $mr];
            if out.mode == Mode::Continue {
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    // SAFETY: out holds the block's rows of NR floats, `stride` apart (asserted above).
                    unsafe {
                        let row = out.rows.as_ptr().add(out.stride * r);
                        *acc_r = [$load(row), $load(row.add($lanes))];
                    }
                }
            }
            for (x, y) in ap.chunks_exact($mr).zip(bp.chunks_exact(NR)).take(k) {
                // SAFETY: `y` holds NR floats (chunks_exact).
                let (b0, b1) = unsafe { ($load(y.as_ptr()), $load(y.as_ptr().add($lanes))) };
                for (acc_r, &v) in acc.iter_mut().zip(x) {
                    let v = $splat(v);
                    acc_r[0] = $fma(v, b0, acc_r[0]);
                    acc_r[1] = $fma(v, b1, acc_r[1]);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                // SAFETY: out holds the block's rows of NR floats, `stride` apart (asserted above).
                unsafe {
                    let row = out.rows.as_mut_ptr().add(out.stride * r);
                    for (h, v) in acc_r.iter().enumerate() {
                        let at = row.add($lanes * h);
                        let v = if out.mode == Mode::Add { $add($load(at), *v) } else { *v };
                        $store(at, v);
                    }
                }
            }
        }
    };
}

vector_tile!(
    /// [`tile`] for f32, 8 × 32, in AVX-512.
    tile_avx512, "avx512f", AVX512_ROWS, 16,
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps
);
vector_tile!(
    /// [`tile`] for f32, 6 × 16, in AVX2 with FMA.
    tile_avx2, "avx2,fma", AVX2_ROWS, 8,
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps
);

#[cfg(test)]
mod tests {
    use super::*;
    use spherepipe_rng::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.range(-1.0, 1.0) as f32).collect()
    }

    /// Every element in f64, the sum in p order with a separate multiply and add.
    fn reference(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j])).sum();
            }
        }
        out
    }

    #[test]
    fn products_match_a_double_precision_reference() {
        for &(m, k, n) in &[(1, 1, 1), (7, 5, 33), (13, 64, 50), (64, 300, 17), (3, 0, 4)] {
            let (a, b) = (random(m * k, 1), random(k * n, 2));
            let want = reference(&a, &b, (m, k, n));
            let mut got = vec![0.0f32; m * n];
            product(Isa::best(), &mut got, &a, (&b, Layout::RowMajor), (m, k, n), false);
            for (g, w) in got.iter().zip(&want) {
                // k roundings of terms below 1 in size: a few ulps of k.
                assert!((f64::from(*g) - w).abs() <= 1e-6 * k as f64, "{m}x{k}x{n}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn rows_read_from_a_transpose_give_the_bytes_of_a_product_of_its_copy() {
        // at [k × lda]; A = columns first..first + rows of it, as rows: 13 rows (no path's
        // block divides them) from column 5 of 30, k 300 (two passes of KC).
        let (k, lda, first, rows, n) = (300, 30, 5, 13, 37);
        let (at, b) = (random(k * lda, 7), random(k * n, 8));
        let copy: Vec<f32> = (0..rows * k).map(|x| at[(x % k) * lda + first + x / k]).collect();
        for isa in Isa::available() {
            let mut want = vec![0.0f32; rows * n];
            product(isa, &mut want, &copy, (&b, Layout::RowMajor), (rows, k, n), false);
            let mut got = vec![f32::NAN; rows * n];
            product_with_transposed_rows(isa, &mut got, (&at, lda, first), &b, (rows, k, n));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{isa:?}");
        }
    }

    #[test]
    fn a_transposed_operand_and_accumulation_give_what_they_say() {
        let (m, k, n) = (9, 21, 40);
        let (a, b) = (random(m * k, 3), random(k * n, 4));
        let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
        let mut plain = vec![0.0f32; m * n];
        product(Isa::best(), &mut plain, &a, (&b, Layout::RowMajor), (m, k, n), false);
        let mut from_t = vec![0.5f32; m * n];
        product(Isa::best(), &mut from_t, &a, (&bt, Layout::Transposed), (m, k, n), true);
        for (p, t) in plain.iter().zip(&from_t) {
            assert_eq!((p + 0.5).to_bits(), t.to_bits());
        }
    }

    /// The contract to the bit, past the pass length too (k = 3·KC + 5, cut into four passes):
    /// each element is dst + (the chain of fused multiply-adds from 0 in p order), written
    /// here as a plain loop, on every path.
    #[test]
    fn every_element_is_one_chain_of_fused_multiply_adds_however_k_is_cut() {
        let (m, k, n) = (11, 3 * KC + 5, 37);
        let (a, b, start) = (random(m * k, 8), random(k * n, 9), random(m * n, 10));
        let mut want = start.clone();
        for i in 0..m {
            for j in 0..n {
                let sum = (0..k).fold(0f32, |acc, p| a[i * k + p].mul_add(b[p * n + j], acc));
                want[i * n + j] += sum;
            }
        }
        for isa in Isa::available() {
            let mut got = start.clone();
            product(isa, &mut got, &a, (&b, Layout::RowMajor), (m, k, n), true);
            assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "{isa:?}");
        }
    }

    /// The point of the module: the bytes do not depend on the path (on an AVX-512 machine
    /// this compares all three), nor on whether b came transposed (packed by 8 × 8 transposes).
    #[test]
    fn every_path_gives_the_same_bytes() {
        let isas = Isa::available();
        println!("paths on this CPU: {isas:?}");
        for &(m, k, n) in &[(3, 7, 5), (16, 64, 336), (33, 129, 70), (128, 576, 48), (5, 2688, 9), (40, 35, 67)] {
            let (a, b) = (random(m * k, 5), random(k * n, 6));
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
            let run = |isa: Isa, b: (&[f32], Layout)| {
                let mut out = random(m * n, 7);
                product(isa, &mut out, &a, b, (m, k, n), true);
                out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
            };
            let first = run(isas[0], (&b, Layout::RowMajor));
            for &isa in &isas {
                assert!(
                    run(isa, (&b, Layout::RowMajor)) == first,
                    "{isa:?} differs from {:?} at {m}x{k}x{n}",
                    isas[0]
                );
                assert!(
                    run(isa, (&bt, Layout::Transposed)) == first,
                    "{isa:?} with b transposed at {m}x{k}x{n}"
                );
            }
        }
    }

    #[test]
    fn filters_packed_a_group_of_rows_at_a_time_multiply_to_the_bytes_of_a_plain_product() {
        // 37 rows: no path's register block (8, 6, 4) nor group divides them.
        let (m, k, n) = (37, 19, 23);
        let mats: Vec<Vec<f32>> = (0..3).map(|i| random(m * k, 20 + i)).collect();
        let b = random(k * n, 23);
        for isa in Isa::available() {
            let packed = PackedRows::many(isa, mats.len(), (m, k), |rows, out| {
                for (o, a) in out.iter_mut().zip(&mats) {
                    o.copy_from_slice(&a[rows.start * k..rows.end * k]);
                }
            });
            for (a, p) in mats.iter().zip(&packed) {
                let (mut want, mut got) = (vec![0f32; m * n], vec![0f32; m * n]);
                product(isa, &mut want, a, (&b, Layout::RowMajor), (m, k, n), false);
                product_with_packed(&mut got, p, &b, n, false);
                assert!(want.iter().zip(&got).all(|(w, g)| w.to_bits() == g.to_bits()), "{isa:?}");
            }
        }
    }

    /// The vector 8 × 8 transpose against the plain one, inside larger strided matrices.
    #[test]
    fn the_vector_transpose_moves_each_value_where_the_plain_one_does() {
        let from = random(8 * 13, 11);
        let (mut plain, mut vector) = (vec![0f32; 8 * 10], vec![0f32; 8 * 10]);
        transpose8(&from[3..], 13, &mut plain[1..], 10);
        for c in 0..8 {
            for r in 0..8 {
                assert_eq!(plain[1 + c * 10 + r], from[3 + r * 13 + c]);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if Isa::cpu() >= Isa::Avx2 {
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { transpose8_avx(&from[3..], 13, &mut vector[1..], 10) };
            assert_eq!(plain, vector);
        }
    }
}
