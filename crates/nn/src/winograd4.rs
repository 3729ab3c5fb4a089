//! Winograd's F(4×4, 3×3) for SphereFace's stride-1 3×3 convolutions (padding 1): forward (and
//! so the input gradient, a forward convolution, `conv::input_grad`) and the weight gradient
//! (its adjoint); on images under 8 pixels a side `conv` takes F(2×2)'s instead. After Lavin and Gray
//! (2016) with their points 0, ±1, ±2: each 4×4 block of the output comes from one 6×6 block of
//! the input through 36 products instead of 144 (F(2×2) needs 16 per 4 outputs: 2.25× fewer
//! than direct, against 4× here), as 36 gemms of [cout × cin] · [cin × tiles].
//!
//! Its constants (¼, ⅙, 1/12, 1/24, and 2, 4, 5, 8) are not all exact in floating point and its
//! sums are longer, so its f32 results lie further from the exact convolution than F(2×2)'s:
//! 5.6–10.6e-6 of the largest output forward and 2.2–5.0e-6 for the weight gradient on
//! SphereFace-20's layers (`cargo bench -p spherepipe-nn --bench winograd_f4`), within the
//! 1e-4 the kernel tests allow against burn's convolution.
//! Every sum runs in an order fixed by the shapes alone, so the bits do not depend on the thread
//! count or the vector path.
//!
//! With d a 6×6 input block, g a 3×3 filter and Y the 4×4 output block:
//! Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, where
//! Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1],
//! G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1] and
//! Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1].

use crate::matrix::{vector_paths, Real};
use crate::winograd::{filters_along, forward_with, transforms_of_this_module, weight_grad_with, Algorithm, Epilogue, Plan};
use std::mem::MaybeUninit;
use std::ops::Range;

vector_paths! {
    /// [`input_blocks`].
    fn transform_input(xs: &[T], plan: &Plan, band: Range<usize>, v: &mut [T]) = input_blocks;
}
vector_paths! {
    /// [`grad_blocks`].
    fn transform_grad(gs: &[T], plan: &Plan, band: Range<usize>, dm: &mut [T]) = grad_blocks;
}
vector_paths! {
    /// [`output_blocks`].
    fn transform_output(m: &[T], ep: Epilogue<'_, T>, plan: &Plan, band: Range<usize>, ys: &mut [MaybeUninit<T>]) = output_blocks;
}

/// F(4×4, 3×3): this module's transforms.
pub(crate) struct F4;

// SAFETY: `output_blocks` writes every line of the band whole (`interleave4` asserts it).
unsafe impl Algorithm for F4 {
    const SIZE: usize = 4;
    const POINTS: usize = POINTS;
    const TILES_PER_BLOCK: usize = 336;
    fn transform_filters<T: Real>(weights: &[T], u: &mut [&mut [T]]) {
        transform_filters(weights, u)
    }
    transforms_of_this_module!();
}

/// Points of one transformed block (6 × 6).
const POINTS: usize = 36;

/// y = bias + the stride-1 3×3 convolution (padding 1) of `x` [batch, cin, h, w] with `weight`
/// [cout, cin, 3, 3] by F(4×4); the result is [batch, cout, h, w].
pub fn forward<T: Real>(x: &[T], weight: &[T], bias: Option<&[T]>, dims: (usize, usize, usize), hw: (usize, usize)) -> Vec<T> {
    forward_with::<F4, T>(x, weight, Epilogue { bias, slopes: None }, dims, hw)
}

/// dW [cout, cin, 3, 3] of the stride-1 convolution (padding 1) of `x` [batch, cin, h, w],
/// given the output gradient `grad` [batch, cout, h, w], by F(4×4): the adjoint of [`forward`].
pub fn weight_grad<T: Real>(x: &[T], grad: &[T], dims: (usize, usize, usize), hw: (usize, usize)) -> Vec<T> {
    weight_grad_with::<F4, T>(x, grad, dims, hw)
}

/// dW [filters, 3, 3] = Gᵀ dU G for every filter of `du` [36, filters]: the adjoint of
/// [`transform_filters`], along all the filters at once.
fn untransform_weights<T: Real>(du: &[T], filters: usize) -> Vec<T> {
    let point = |i: usize, j: usize| &du[(i * 6 + j) * filters..][..filters];
    // rows[i][c][f]: entry (i, c) of dU G (row i of dU shrunk by Gᵀ).
    let rows: Vec<[Vec<T>; 3]> = (0..6)
        .map(|i| {
            shrink_along(
                [point(i, 0), point(i, 1), point(i, 2), point(i, 3), point(i, 4), point(i, 5)],
                filters,
            )
        })
        .collect();
    let mut dw = vec![T::default(); filters * 9];
    for c in 0..3 {
        let column = |i: usize| &rows[i][c][..];
        let taps = shrink_along([column(0), column(1), column(2), column(3), column(4), column(5)], filters);
        for (r, tap) in taps.iter().enumerate() {
            for (f, &v) in tap.iter().enumerate() {
                dw[f * 9 + r * 3 + c] = v;
            }
        }
    }
    dw
}

/// out[r][f] = (Gᵀ · (ins[0][f], …, ins[5][f]))[r] for the first `n` values.
fn shrink_along<T: Real>(ins: [&[T]; 6], n: usize) -> [Vec<T>; 3] {
    let [u0, u1, u2, u3, u4, u5] = ins;
    let (u0, u1, u2, u3, u4, u5) = (&u0[..n], &u1[..n], &u2[..n], &u3[..n], &u4[..n], &u5[..n]);
    let mut out = [(); 3].map(|_| vec![T::default(); n]);
    let [o0, o1, o2] = &mut out;
    for f in 0..n {
        (o0[f], o1[f], o2[f]) = shrink6([u0[f], u1[f], u2[f], u3[f], u4[f], u5[f]]);
    }
    out
}

/// Gᵀ · (u0, …, u5) = (u0/4 − (u1 + u2)/6 + (u3 + u4)/24, (u2 − u1)/6 + (u3 − u4)/12,
/// (u3 + u4 − u1 − u2)/6 + u5).
#[inline(always)]
fn shrink6<T: Real>([u0, u1, u2, u3, u4, u5]: [T; 6]) -> (T, T, T) {
    let k = T::constant;
    let (s12, d21, s34, d34) = (u1 + u2, u2 - u1, u3 + u4, u3 - u4);
    (
        (u0 * k(0.25) - s12 * k(1.0 / 6.0)) + s34 * k(1.0 / 24.0),
        d21 * k(1.0 / 6.0) + d34 * k(1.0 / 12.0),
        (s34 - s12) * k(1.0 / 6.0) + u5,
    )
}

/// dM [36, cout, tiles] = A dY Aᵀ for every 4×4 block dY of the output gradient in the band's
/// tiles (zero where the block passes the image's edge): the adjoint of [`output_blocks`]. Per
/// output channel, the blocks are gathered into 16 rows over all the band's tiles, then A
/// (6 × 4, Aᵀ's transpose) expands them down and across, each one loop over all the tiles.
#[inline(always)]
fn grad_blocks<T: Real>(gs: &[T], plan: &Plan, band: Range<usize>, dm: &mut [T]) {
    let Plan { cout, h, w, tw, .. } = *plan;
    let images = gs.len() / (cout * h * w);
    let tiles = images * band.len() * tw;
    let zero = T::default();
    // One output line padded with zeros to 4·tw values.
    let mut padded = vec![zero; 4 * tw];
    // gathered[(a · 4 + q) · tiles + tile]: dY at line a, column q of every block; down: A of that.
    let (mut gathered, mut down) = (vec![zero; 16 * tiles], vec![zero; 24 * tiles]);
    for k in 0..cout {
        for image in 0..images {
            let plane = &gs[(image * cout + k) * h * w..][..h * w];
            for (r, ty) in band.clone().enumerate() {
                let first = (image * band.len() + r) * tw;
                for a in 0..4 {
                    let oy = 4 * ty + a;
                    match oy < h {
                        true => padded[..w].copy_from_slice(&plane[oy * w..][..w]),
                        false => padded.fill(zero),
                    }
                    gather_four(&padded, four_rows(&mut gathered, a * 4 * tiles + first, tiles, tw));
                }
            }
        }
        for q in 0..4 {
            let ins = four_refs(&gathered, q * tiles, 4 * tiles, tiles);
            expand_lines(ins, six_rows(&mut down, q * tiles, 4 * tiles, tiles));
        }
        for i in 0..6 {
            let out = six_rows(dm, (i * 6 * cout + k) * tiles, cout * tiles, tiles);
            expand_lines(four_refs(&down, i * 4 * tiles, tiles, tiles), out);
        }
    }
}

/// out[q][t] = line[4t + q]: the four columns of each block along a padded line.
#[inline(always)]
fn gather_four<T: Real>(line: &[T], out: [&mut [T]; 4]) {
    let n = out[0].len();
    assert!(line.len() >= 4 * n);
    let [o0, o1, o2, o3] = out;
    let (o0, o1, o2, o3) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for t in 0..n {
        let q = &line[4 * t..][..4];
        (o0[t], o1[t], o2[t], o3[t]) = (q[0], q[1], q[2], q[3]);
    }
}

/// Four rows of `v`, `stride` apart from `first`, `len` values each.
#[inline(always)]
fn four_refs<T>(v: &[T], first: usize, stride: usize, len: usize) -> [&[T]; 4] {
    let row = |i: usize| &v[first + i * stride..][..len];
    [row(0), row(1), row(2), row(3)]
}

/// out[r][t] = (A · (ins[0][t], …, ins[3][t]))[r], A = Aᵀ's transpose: (p0, p0 + p1 + p2 + p3,
/// p0 − p1 + p2 − p3, p0 + 2p1 + 4p2 + 8p3, p0 − 2p1 + 4p2 − 8p3, p3).
#[inline(always)]
fn expand_lines<T: Real>(ins: [&[T]; 4], out: [&mut [T]; 6]) {
    let n = out[0].len();
    let k = T::constant;
    let (two, four, eight) = (k(2.0), k(4.0), k(8.0));
    let [p0, p1, p2, p3] = ins;
    let (p0, p1, p2, p3) = (&p0[..n], &p1[..n], &p2[..n], &p3[..n]);
    let [o0, o1, o2, o3, o4, o5] = out;
    let (o0, o1, o2, o3, o4, o5) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n], &mut o4[..n], &mut o5[..n]);
    for t in 0..n {
        let (a, b, c, d) = (p0[t], p1[t], p2[t], p3[t]);
        let (even, odd) = (a + c, b + d);
        let (even2, odd2) = (a + c * four, b * two + d * eight);
        (o0[t], o1[t], o2[t], o3[t], o4[t], o5[t]) = (a, even + odd, even - odd, even2 + odd2, even2 - odd2, d);
    }
}

/// u[ξ][f] = (G g Gᵀ)_ξ for every filter g of `weights` [filters, 3, 3], ξ = 6i + j.
fn transform_filters<T: Real>(weights: &[T], u: &mut [&mut [T]]) {
    filters_along(weights, u, 6, expand_along);
}

/// out[i][f] = (G · (ins[0][f], ins[1][f], ins[2][f]))[i] for every f of `out`.
fn expand_along<T: Real>(ins: [&[T]; 3], out: &mut [&mut [T]]) {
    let n = out[0].len();
    let [a, b, c] = ins.map(|v| &v[..n]);
    let [o0, o1, o2, o3, o4, o5] = out else {
        panic!("expand_along: six outputs");
    };
    let (o0, o1, o2, o3, o4, o5) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n], &mut o4[..n], &mut o5[..n]);
    for f in 0..n {
        let e = expand6([a[f], b[f], c[f]]);
        (o0[f], o1[f], o2[f], o3[f], o4[f], o5[f]) = (e[0], e[1], e[2], e[3], e[4], e[5]);
    }
}

/// G · (a, b, c) = (a/4, −(a + b + c)/6, −(a − b + c)/6, a/24 + b/12 + c/6, a/24 − b/12 + c/6, c).
#[inline(always)]
fn expand6<T: Real>([a, b, c]: [T; 3]) -> [T; 6] {
    let k = T::constant;
    let (outer, middle) = (a * k(1.0 / 24.0) + c * k(1.0 / 6.0), b * k(1.0 / 12.0));
    let zero = T::default();
    [
        a * k(0.25),
        zero - (a + b + c) * k(1.0 / 6.0),
        zero - (a - b + c) * k(1.0 / 6.0),
        outer + middle,
        outer - middle,
        c,
    ]
}

/// Bᵀ · (d0, …, d5): the input transform along one direction.
#[inline(always)]
fn b6<T: Real>([d0, d1, d2, d3, d4, d5]: [T; 6]) -> [T; 6] {
    let k = T::constant;
    let (four, five, two) = (k(4.0), k(5.0), k(2.0));
    let (d4_d2, d3_d1) = (d4 - d2, d3 - d1);
    [
        (d0 * four - d2 * five) + d4,
        (d3 + d4) - (d1 + d2) * four,
        (d4 - d3) + (d1 - d2) * four,
        d4_d2 + d3_d1 * two,
        d4_d2 - d3_d1 * two,
        (d1 * four - d3 * five) + d5,
    ]
}

/// Aᵀ · (m0, …, m5): the output transform along one direction.
#[inline(always)]
fn a6<T: Real>([m0, m1, m2, m3, m4, m5]: [T; 6]) -> [T; 4] {
    let k = T::constant;
    let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [(m0 + s12) + s34, d12 + d34 * k(2.0), s12 + s34 * k(4.0), (d12 + d34 * k(8.0)) + m5]
}

/// V [36, cin, tiles] = Bᵀ d B for every 6×6 input block d of the band's tiles, the tiles in
/// (image, tile row, tile column) order. Per input channel, the blocks are first gathered into
/// 36 rows over all the band's tiles (block (ty, t) spans lines 4ty − 1 … 4ty + 4 and columns
/// 4t − 1 … 4t + 4, zero outside the image); Bᵀ then combines those rows six by six down, and B
/// across, each one loop over all the tiles (long enough for the vectors to fill even where an
/// image is only two tiles wide).
#[inline(always)]
fn input_blocks<T: Real>(xs: &[T], plan: &Plan, band: Range<usize>, v: &mut [T]) {
    let Plan { cin, h, w, tw, .. } = *plan;
    let images = xs.len() / (cin * h * w);
    let tiles = images * band.len() * tw;
    let zero = T::default();
    // The band's input lines 4·band.start − 1 … 4·band.end, each padded with a zero before
    // and zeros after, to 4·tw + 2 values: block t of a tile row starts at value 4t.
    let (lines, width) = (4 * band.len() + 2, 4 * tw + 2);
    let mut padded = vec![zero; lines * width];
    // gathered[(l · 6 + j) · tiles + tile]: point (l, j) of every block; down: Bᵀ of that.
    let (mut gathered, mut down) = (vec![zero; POINTS * tiles], vec![zero; POINTS * tiles]);
    for c in 0..cin {
        for image in 0..images {
            let plane = &xs[(image * cin + c) * h * w..][..h * w];
            for (l, line) in padded.chunks_exact_mut(width).enumerate() {
                let iy = (4 * band.start + l).wrapping_sub(1);
                match iy < h {
                    true => line[1..=w].copy_from_slice(&plane[iy * w..][..w]),
                    false => line.fill(zero),
                }
            }
            for r in 0..band.len() {
                let first = (image * band.len() + r) * tw;
                for l in 0..6 {
                    let line = &padded[(4 * r + l) * width..][..width];
                    gather_six(line, six_rows(&mut gathered, l * 6 * tiles + first, tiles, tw));
                }
            }
        }
        for j in 0..6 {
            transform_lines(
                six_refs(&gathered, j * tiles, 6 * tiles, tiles),
                six_rows(&mut down, j * tiles, 6 * tiles, tiles),
            );
        }
        for i in 0..6 {
            let out = six_rows(v, (i * 6 * cin + c) * tiles, cin * tiles, tiles);
            transform_lines(six_refs(&down, i * 6 * tiles, tiles, tiles), out);
        }
    }
}

/// out[j][t] = line[4t + j]: the six columns of each block along a padded line.
#[inline(always)]
fn gather_six<T: Real>(line: &[T], out: [&mut [T]; 6]) {
    let n = out[0].len();
    assert!(line.len() >= 4 * n + 2);
    let [o0, o1, o2, o3, o4, o5] = out;
    let (o0, o1, o2, o3, o4, o5) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n], &mut o4[..n], &mut o5[..n]);
    for t in 0..n {
        let q = &line[4 * t..][..6];
        (o0[t], o1[t], o2[t], o3[t], o4[t], o5[t]) = (q[0], q[1], q[2], q[3], q[4], q[5]);
    }
}

/// Six rows of `v`, `stride` apart from `first`, `len` values each.
#[inline(always)]
fn six_refs<T>(v: &[T], first: usize, stride: usize, len: usize) -> [&[T]; 6] {
    let row = |i: usize| &v[first + i * stride..][..len];
    [row(0), row(1), row(2), row(3), row(4), row(5)]
}

/// out[i][t] = (Bᵀ · (ins[0][t], …, ins[5][t]))[i], for t along `out`'s length.
#[inline(always)]
fn transform_lines<T: Real>(ins: [&[T]; 6], out: [&mut [T]; 6]) {
    let n = out[0].len();
    let [d0, d1, d2, d3, d4, d5] = ins;
    let (d0, d1, d2, d3, d4, d5) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n], &d4[..n], &d5[..n]);
    let [o0, o1, o2, o3, o4, o5] = out;
    let (o0, o1, o2, o3, o4, o5) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n], &mut o4[..n], &mut o5[..n]);
    for t in 0..n {
        let r = b6([d0[t], d1[t], d2[t], d3[t], d4[t], d5[t]]);
        (o0[t], o1[t], o2[t], o3[t], o4[t], o5[t]) = (r[0], r[1], r[2], r[3], r[4], r[5]);
    }
}

/// Six rows of `v`, `stride` apart from `first`, `len` values each.
#[inline(always)]
fn six_rows<T>(v: &mut [T], first: usize, stride: usize, len: usize) -> [&mut [T]; 6] {
    let (r0, rest) = v[first..].split_at_mut(stride);
    let (r1, rest) = rest.split_at_mut(stride);
    let (r2, rest) = rest.split_at_mut(stride);
    let (r3, rest) = rest.split_at_mut(stride);
    let (r4, r5) = rest.split_at_mut(stride);
    [
        &mut r0[..len],
        &mut r1[..len],
        &mut r2[..len],
        &mut r3[..len],
        &mut r4[..len],
        &mut r5[..len],
    ]
}

/// y = bias + Aᵀ M A for every tile of the band, clipped to the image. Per output channel, Aᵀ
/// combines the 36 rows of M six by six down and A across, each one loop over all the band's
/// tiles, into 16 rows: output line a of each tile row, columns 4t + q; those are then
/// interleaved into the image, line by line.
#[inline(always)]
fn output_blocks<T: Real>(m: &[T], ep: Epilogue<'_, T>, plan: &Plan, band: Range<usize>, ys: &mut [MaybeUninit<T>]) {
    let Plan { cout, h, w, tw, .. } = *plan;
    let images = ys.len() / (cout * h * w);
    let tiles = images * band.len() * tw;
    let zero = T::default();
    // up[(a · 6 + j) · tiles + tile]: line a, point column j; out[(a · 4 + q) · tiles + tile].
    let (mut up, mut out) = (vec![zero; 24 * tiles], vec![zero; 16 * tiles]);
    for k in 0..cout {
        for j in 0..6 {
            let ins = six_refs(m, (j * cout + k) * tiles, 6 * cout * tiles, tiles);
            combine_up(ins, four_rows(&mut up, j * tiles, 6 * tiles, tiles), zero);
        }
        let b = ep.bias(k);
        for a in 0..4 {
            let ins = six_refs(&up, a * 6 * tiles, tiles, tiles);
            combine_up(ins, four_rows(&mut out, a * 4 * tiles, tiles, tiles), b);
        }
        ep.activate(k, &mut out);
        for image in 0..images {
            let plane = &mut ys[(image * cout + k) * h * w..][..h * w];
            for (r, ty) in band.clone().enumerate() {
                let first = (image * band.len() + r) * tw;
                for a in (0..4).take_while(|a| 4 * ty + a < h) {
                    let phase = |q: usize| &out[(a * 4 + q) * tiles + first..][..tw];
                    let phases = [phase(0), phase(1), phase(2), phase(3)];
                    interleave4(&mut plane[(4 * ty + a) * w..][..w], phases);
                }
            }
        }
    }
}

/// Four rows of `v`, `stride` apart from `first`, `len` values each.
#[inline(always)]
fn four_rows<T>(v: &mut [T], first: usize, stride: usize, len: usize) -> [&mut [T]; 4] {
    let (r0, rest) = v[first..].split_at_mut(stride);
    let (r1, rest) = rest.split_at_mut(stride);
    let (r2, r3) = rest.split_at_mut(stride);
    [&mut r0[..len], &mut r1[..len], &mut r2[..len], &mut r3[..len]]
}

/// out[a][t] = b + (Aᵀ · (ins[0][t], …, ins[5][t]))[a], for t along `out`'s length.
#[inline(always)]
fn combine_up<T: Real>(ins: [&[T]; 6], out: [&mut [T]; 4], b: T) {
    let n = out[0].len();
    let [m0, m1, m2, m3, m4, m5] = ins;
    let (m0, m1, m2, m3, m4, m5) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &m4[..n], &m5[..n]);
    let [o0, o1, o2, o3] = out;
    let (o0, o1, o2, o3) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for t in 0..n {
        let r = a6([m0[t], m1[t], m2[t], m3[t], m4[t], m5[t]]);
        (o0[t], o1[t], o2[t], o3[t]) = (b + r[0], b + r[1], b + r[2], b + r[3]);
    }
}

/// line[4t + q] = phases[q][t], as far as the line goes.
#[inline(always)]
fn interleave4<T: Real>(line: &mut [MaybeUninit<T>], phases: [&[T]; 4]) {
    let [p0, p1, p2, p3] = phases;
    let t = line.len() / 4;
    assert!(
        phases.iter().all(|p| p.len() > t || (p.len() == t && line.len().is_multiple_of(4))),
        "interleave4: every value is written"
    );
    let mut quads = line.chunks_exact_mut(4);
    for (t, quad) in (&mut quads).enumerate() {
        (quad[0], quad[1], quad[2], quad[3]) = (
            MaybeUninit::new(p0[t]),
            MaybeUninit::new(p1[t]),
            MaybeUninit::new(p2[t]),
            MaybeUninit::new(p3[t]),
        );
    }
    for (q, v) in quads.into_remainder().iter_mut().enumerate() {
        v.write(phases[q][t]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::winograd::checks::*;

    #[test]
    fn the_forward_pass_and_the_weight_gradient_equal_the_direct_convolution() {
        // The weight gradient sums batch·h·w pixels (4,480 at most here) of products whose
        // transforms carry rounded sixths: a few ulps per term of values near 1.
        equal_the_direct_convolution((forward, weight_grad), 1e-12, |pixels| 1e-14 * pixels as f64 + 1e-12);
    }

    #[test]
    fn hand_computed_outputs() {
        // The transforms' sixths round: to 1e-12.
        give_the_hand_computed_outputs((forward, weight_grad), 1e-12);
    }

    #[test]
    fn results_are_the_same_bits_on_one_three_and_four_threads() {
        are_the_same_bits_on_one_three_and_four_threads((forward, weight_grad), (70, 64));
    }
}
