//! Winograd's F(2×2, 3×3) for SphereFace's stride-1 3×3 convolutions (padding 1), after Lavin
//! and Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). The network runs
//! F(4×4) ([`crate::winograd4`], 4× fewer products than direct, at ten times F(2×2)'s f32
//! error) except on images under 8 pixels a side (SphereFace's 7 × 6), which run here, forward
//! and weight gradient (`conv::F4_FROM` says why). Each 2×2 block of the
//! output comes from one 4×4 block of the input through 16 products instead of 36, so the inner
//! products — 16 gemms of [cout × cin] · [cin × tiles] — are 2.25× fewer than the direct
//! convolution's. The transforms' constants (0, ±1, ±½) are exact in floating point, and every
//! sum runs in an order fixed by the shapes alone, never by the thread count.
//!
//! With d a 4×4 input block, g a 3×3 filter and Y the 2×2 output block:
//! Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, where
//! Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1], G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1] and
//! Aᵀ = [1 1 1 0; 0 1 −1 −1].

use crate::matrix::{
    add_product_with_transpose, runs_for, split_even_odd, sum_in_runs, vector_paths, with_scratch, written_by_chunks, Real,
};
use crate::products::{product_with_packed, Isa, PackedRows};
use std::mem::MaybeUninit;
use std::ops::Range;

vector_paths! {
    /// [`input_blocks`].
    fn transform_input(xs: &[T], plan: &Plan, band: Range<usize>, v: &mut [T]) = input_blocks;
}
vector_paths! {
    /// [`output_blocks`].
    fn transform_output(m: &[T], ep: Epilogue<'_, T>, plan: &Plan, band: Range<usize>, ys: &mut [MaybeUninit<T>]) = output_blocks;
}
vector_paths! {
    /// [`grad_blocks`].
    fn transform_grad(gs: &[T], plan: &Plan, band: Range<usize>, dm: &mut [T]) = grad_blocks;
}

/// Blocks the batch is cut into at least (when it has that many images), so that two or four
/// threads share it evenly; fixed, so that the result does not depend on the thread count.
const MIN_BLOCKS: usize = 4;

/// What a forward pass applies to output channel k before it writes it: the bias, then, for
/// inference, PReLU with the channel's slope. Fused there, the activation costs no pass of
/// its own over the output (a separate one was 5 % of an extraction).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a, T> {
    pub(crate) bias: Option<&'a [T]>,
    pub(crate) slopes: Option<&'a [T]>,
}

impl<T: Real> Epilogue<'_, T> {
    /// Whether the bias and the slopes (where given) are one per output channel.
    pub(crate) fn fits(&self, cout: usize) -> bool {
        self.bias.is_none_or(|b| b.len() == cout) && self.slopes.is_none_or(|a| a.len() == cout)
    }

    /// Channel k's bias (0 without one).
    #[inline(always)]
    pub(crate) fn bias(&self, k: usize) -> T {
        self.bias.map_or(T::default(), |b| b[k])
    }

    /// `values` of channel k through its PReLU (as `prelu.rs` computes it: v where v ≥ 0,
    /// slope · v elsewhere), or left as they are without slopes.
    #[inline(always)]
    pub(crate) fn activate(&self, k: usize, values: &mut [T]) {
        if let Some(slopes) = self.slopes {
            let (a, zero) = (slopes[k], T::default());
            values.iter_mut().for_each(|v| *v = if *v >= zero { *v } else { a * *v });
        }
    }
}

/// How the work is cut: `images` whole images per block, their tile rows in bands of `rows`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    /// Tile rows and columns of one image (`size` × `size` output pixels each, the last ones
    /// clipped).
    pub(crate) th: usize,
    pub(crate) tw: usize,
    pub(crate) images: usize,
    pub(crate) rows: usize,
}

impl Plan {
    /// How many bands of tile rows an image is cut into.
    pub(crate) fn bands(&self) -> usize {
        self.th.div_ceil(self.rows)
    }

    /// The tile rows of band `i`.
    pub(crate) fn band(&self, i: usize) -> Range<usize> {
        i * self.rows..((i + 1) * self.rows).min(self.th)
    }

    /// This cut of whole images with the block count rounded up to a multiple of `threads`, so
    /// that no thread waits through a last round alone (128 images of 14 × 12 in blocks of 26
    /// made 5 blocks: three rounds on two threads for two and a half rounds of work). For the
    /// forward pass only, whose bits no cut of the tiles changes; the weight gradient's sums
    /// follow its blocks, so its cut must not depend on the thread count.
    pub(crate) fn balanced(self, batch: usize, threads: usize) -> Plan {
        if self.rows < self.th || self.images >= batch || threads < 2 {
            return self;
        }
        let blocks = batch.div_ceil(self.images).div_ceil(threads) * threads;
        Plan {
            images: batch.div_ceil(blocks.min(batch)),
            ..self
        }
    }

    /// The cut for output tiles of `size` × `size` pixels, about `per_block` tiles a block.
    pub(crate) fn new(batch: usize, (cin, cout): (usize, usize), (h, w): (usize, usize), size: usize, per_block: usize) -> Plan {
        let (th, tw) = (h.div_ceil(size), w.div_ceil(size));
        let per_image = th * tw;
        let (images, rows) = if per_image >= per_block {
            (1, (per_block / tw).max(1))
        } else {
            let wanted = per_block / per_image;
            let blocks = batch.div_ceil(wanted).max(batch.min(MIN_BLOCKS));
            (batch.div_ceil(blocks.max(1)).max(1), th)
        };
        Plan {
            cin,
            cout,
            h,
            w,
            th,
            tw,
            images,
            rows,
        }
    }
}

/// One Winograd algorithm F(m×m, 3×3), as the drivers ([`forward_with`], [`weight_grad_with`])
/// use it: its sizes and its transforms.
///
/// # Safety
/// `transform_output` must write every value of the band's output lines, for every image and
/// channel of `ys`: [`forward_with`] hands it memory that nothing initialised.
pub(crate) unsafe trait Algorithm {
    /// m: each tile is m × m output pixels.
    const SIZE: usize;
    /// (m + 2)²: the points of a transformed block, one gemm each.
    const POINTS: usize;
    /// Output tiles one block multiplies at once (the gemms' columns): with fewer they are too
    /// short to run at full speed, with more the transformed block falls out of the cache.
    const TILES_PER_BLOCK: usize;
    /// u[ξ][f] = (G g Gᵀ)_ξ for every filter g of `weights` [filters, 3, 3], each value
    /// computed on its own (so no cut of the filters changes a bit).
    fn transform_filters<T: Real>(weights: &[T], u: &mut [&mut [T]]);
    /// dW [filters, 3, 3] = Gᵀ dU G from `du` [POINTS, filters].
    fn untransform_weights<T: Real>(du: &[T], filters: usize) -> Vec<T>;
    /// V [POINTS, cin, tiles] = Bᵀ d B for the band's input blocks.
    fn transform_input<T: Real>(xs: &[T], plan: &Plan, band: Range<usize>, v: &mut [T]);
    /// ys = bias + Aᵀ M A for the band's tiles, clipped to the image: every value of the
    /// band's output lines written ([`forward_with`] relies on it: `ys` starts uninitialised).
    fn transform_output<T: Real>(m: &[T], ep: Epilogue<'_, T>, plan: &Plan, band: Range<usize>, ys: &mut [MaybeUninit<T>]);
    /// dM [POINTS, cout, tiles] = A dY Aᵀ for the band's output-gradient blocks.
    fn transform_grad<T: Real>(gs: &[T], plan: &Plan, band: Range<usize>, dm: &mut [T]);
}

/// F(2×2, 3×3): this module's transforms.
pub(crate) struct F2;

/// The [`Algorithm`] methods that hand over to the calling module's functions of the same
/// names (its `transform_input`, `transform_output` and `transform_grad` are the
/// `vector_paths!` dispatchers), for the two impls.
macro_rules! transforms_of_this_module {
    () => {
        fn untransform_weights<T: Real>(du: &[T], filters: usize) -> Vec<T> {
            untransform_weights(du, filters)
        }
        fn transform_input<T: Real>(xs: &[T], plan: &Plan, band: Range<usize>, v: &mut [T]) {
            transform_input(xs, plan, band, v)
        }
        fn transform_output<T: Real>(m: &[T], ep: Epilogue<'_, T>, plan: &Plan, band: Range<usize>, ys: &mut [MaybeUninit<T>]) {
            transform_output(m, ep, plan, band, ys)
        }
        fn transform_grad<T: Real>(gs: &[T], plan: &Plan, band: Range<usize>, dm: &mut [T]) {
            transform_grad(gs, plan, band, dm)
        }
    };
}
pub(crate) use transforms_of_this_module;

// SAFETY: `output_blocks` writes every line of the band whole (`interleave` asserts it).
unsafe impl Algorithm for F2 {
    const SIZE: usize = 2;
    const POINTS: usize = 16;
    const TILES_PER_BLOCK: usize = 336;
    fn transform_filters<T: Real>(weights: &[T], u: &mut [&mut [T]]) {
        transform_filters(weights, u)
    }
    transforms_of_this_module!();
}

/// y = bias + the stride-1 3×3 convolution (padding 1) of `x` [batch, cin, h, w] with `weight`
/// [cout, cin, 3, 3] by F(2×2); the result is [batch, cout, h, w].
pub fn forward<T: Real>(x: &[T], weight: &[T], bias: Option<&[T]>, dims: (usize, usize, usize), hw: (usize, usize)) -> Vec<T> {
    forward_with::<F2, T>(x, weight, Epilogue { bias, slopes: None }, dims, hw)
}

/// dW [cout, cin, 3, 3] of the stride-1 convolution (padding 1) of `x` [batch, cin, h, w],
/// given the output gradient `grad` [batch, cout, h, w], by F(2×2).
pub fn weight_grad<T: Real>(x: &[T], grad: &[T], dims: (usize, usize, usize), hw: (usize, usize)) -> Vec<T> {
    weight_grad_with::<F2, T>(x, grad, dims, hw)
}

/// y = bias + the stride-1 3×3 convolution (padding 1) of `x` [batch, cin, h, w] with `weight`
/// [cout, cin, 3, 3] by the algorithm `A`, then PReLU where `ep` has slopes; the result is
/// [batch, cout, h, w]. Blocks of images
/// run in parallel, each band of tiles as transform, POINTS gemms, transform.
pub(crate) fn forward_with<A: Algorithm, T: Real>(
    x: &[T],
    weight: &[T],
    ep: Epilogue<'_, T>,
    (batch, cin, cout): (usize, usize, usize),
    (h, w): (usize, usize),
) -> Vec<T> {
    let plan = Plan::new(batch, (cin, cout), (h, w), A::SIZE, A::TILES_PER_BLOCK).balanced(batch, rayon::current_num_threads());
    let (x_image, y_image) = (cin * h * w, cout * h * w);
    assert!(x.len() == batch * x_image && weight.len() == cout * cin * 9 && ep.fits(cout));
    if batch * y_image == 0 || x_image == 0 {
        return vec![T::default(); batch * y_image];
    }
    let u = packed_filters::<A, T>(weight, cout, cin);
    let write = |slab: usize, ys: &mut [MaybeUninit<T>]| {
        let images = ys.len() / y_image;
        let xs = &x[slab * plan.images * x_image..][..images * x_image];
        for band in (0..plan.bands()).map(|i| plan.band(i)) {
            let tiles = images * band.len() * plan.tw;
            with_scratch(A::POINTS * cin * tiles, |v: &mut [T]| {
                with_scratch(A::POINTS * cout * tiles, |m: &mut [T]| {
                    A::transform_input(xs, &plan, band.clone(), v);
                    for (xi, u) in u.iter().enumerate() {
                        let (vx, mx) = (&v[xi * cin * tiles..][..cin * tiles], &mut m[xi * cout * tiles..][..cout * tiles]);
                        product_with_packed(mx, u, vx, tiles, false);
                    }
                    A::transform_output(m, ep, &plan, band, ys);
                })
            });
        }
    };
    // SAFETY: the bands cover every tile row, and `transform_output` writes every value of a
    // band's output lines, for every image and channel of the chunk (`Algorithm`'s contract).
    unsafe { written_by_chunks(batch * y_image, plan.images * y_image, write) }
}

/// U [POINTS, cout, cin] = G g Gᵀ for every filter g of `weight` [cout, cin, 3, 3], each
/// point's [cout × cin] packed once for the products (every block of tiles multiplies it):
/// made and packed a register block of filter rows at a time, in parallel.
fn packed_filters<A: Algorithm, T: Real>(weight: &[T], cout: usize, cin: usize) -> Vec<PackedRows<T>> {
    PackedRows::many(Isa::best(), A::POINTS, (cout, cin), |rows, u| {
        A::transform_filters(&weight[rows.start * cin * 9..rows.end * cin * 9], u)
    })
}

/// dW [cout, cin, 3, 3] of the stride-1 convolution (padding 1) of `x` [batch, cin, h, w],
/// given the output gradient `grad` [batch, cout, h, w], by the algorithm `A`: the adjoint of
/// [`forward_with`]'s computation. dU_ξ = Σ over the blocks of tiles of (A dY Aᵀ)_ξ · (Bᵀ d B)_ξᵀ
/// (POINTS gemms per block), summed [`in_runs`] or [`by_points`], whichever holds less in
/// memory; then dW = Gᵀ dU G.
pub(crate) fn weight_grad_with<A: Algorithm, T: Real>(
    x: &[T],
    grad: &[T],
    (batch, cin, cout): (usize, usize, usize),
    (h, w): (usize, usize),
) -> Vec<T> {
    let plan = Plan::new(batch, (cin, cout), (h, w), A::SIZE, A::TILES_PER_BLOCK);
    assert!(x.len() == batch * cin * h * w && grad.len() == batch * cout * h * w);
    let blocks = Block::all(&plan, batch);
    let runs = runs_for(blocks.len());
    let tiles: usize = blocks.iter().map(|b| b.tiles).sum();
    let du = if runs * cout * cin > (cin + cout) * tiles {
        by_points::<A, T>((x, grad), &plan, &blocks)
    } else {
        in_runs::<A, T>((x, grad), &plan, &blocks)
    };
    A::untransform_weights(&du, cout * cin)
}

/// One block of tiles: `images` whole images from image `slab` on, the tile rows `band`.
struct Block {
    slab: usize,
    images: usize,
    band: Range<usize>,
    tiles: usize,
}

impl Block {
    /// The plan's blocks for a batch, in order: slabs of images, each cut into bands.
    fn all(plan: &Plan, batch: usize) -> Vec<Block> {
        let slabs = (0..batch).step_by(plan.images.max(1));
        slabs
            .flat_map(|slab| {
                let images = plan.images.min(batch - slab);
                (0..plan.bands()).map(move |i| {
                    let band = plan.band(i);
                    let tiles = images * band.len() * plan.tw;
                    Block { slab, images, band, tiles }
                })
            })
            .collect()
    }

    /// V [POINTS, cin, tiles] and dM [POINTS, cout, tiles] of this block's tiles.
    fn transform<A: Algorithm, T: Real>(&self, (x, grad): (&[T], &[T]), plan: &Plan, v: &mut [T], dm: &mut [T]) {
        let (x_image, y_image) = (plan.cin * plan.h * plan.w, plan.cout * plan.h * plan.w);
        A::transform_input(&x[self.slab * x_image..][..self.images * x_image], plan, self.band.clone(), v);
        A::transform_grad(&grad[self.slab * y_image..][..self.images * y_image], plan, self.band.clone(), dm);
    }
}

/// dU [POINTS, cout, cin], the blocks split into runs summed in parallel ([`sum_in_runs`]):
/// each block is transformed and multiplied while it is in the cache, but every run holds a
/// partial dU of its own, to be added up after.
fn in_runs<A: Algorithm, T: Real>(data: (&[T], &[T]), plan: &Plan, blocks: &[Block]) -> Vec<T> {
    let (cin, cout) = (plan.cin, plan.cout);
    sum_in_runs(blocks.len(), A::POINTS * cout * cin, |du, run| {
        for block in &blocks[run] {
            let tiles = block.tiles;
            with_scratch(A::POINTS * cin * tiles, |v: &mut [T]| {
                with_scratch(A::POINTS * cout * tiles, |dm: &mut [T]| {
                    block.transform::<A, T>(data, plan, v, dm);
                    for xi in 0..A::POINTS {
                        let (vx, dmx) = (&v[xi * cin * tiles..][..cin * tiles], &dm[xi * cout * tiles..][..cout * tiles]);
                        add_product_with_transpose(&mut du[xi * cout * cin..][..cout * cin], dmx, vx, (cout, tiles, cin));
                    }
                })
            });
        }
    })
}

/// dU [POINTS, cout, cin], every block transformed first (in parallel, all held at once), then
/// each point's dU_ξ summed over the blocks in block order, the points in parallel: no partial
/// dU to hold and add. For small images with many channels (SphereFace's 14 × 12 and 7 × 6),
/// where a partial dU [POINTS, cout, cin] outweighs the transformed tiles of the whole batch.
/// Where [`in_runs`] makes each block a run of its own (up to 8 blocks), it gives the same
/// bits: adding 0 + (0 + c) to a sum changes nothing that adding c does not.
fn by_points<A: Algorithm, T: Real>(data: (&[T], &[T]), plan: &Plan, blocks: &[Block]) -> Vec<T> {
    use rayon::prelude::*;
    let (cin, cout) = (plan.cin, plan.cout);
    let tiles: usize = blocks.iter().map(|b| b.tiles).sum();
    with_scratch(A::POINTS * cin * tiles, |v: &mut [T]| {
        with_scratch(A::POINTS * cout * tiles, |dm: &mut [T]| {
            let mut vs = split_into(v, blocks.iter().map(|b| A::POINTS * cin * b.tiles));
            let mut dms = split_into(dm, blocks.iter().map(|b| A::POINTS * cout * b.tiles));
            blocks
                .par_iter()
                .zip(vs.par_iter_mut())
                .zip(dms.par_iter_mut())
                .for_each(|((block, v), dm)| block.transform::<A, T>(data, plan, v, dm));
            let mut du = vec![T::default(); A::POINTS * cout * cin];
            du.par_chunks_mut((cout * cin).max(1)).enumerate().for_each(|(xi, du)| {
                for ((block, v), dm) in blocks.iter().zip(&vs).zip(&dms) {
                    let t = block.tiles;
                    add_product_with_transpose(du, &dm[xi * cout * t..][..cout * t], &v[xi * cin * t..][..cin * t], (cout, t, cin));
                }
            });
            du
        })
    })
}

/// `buffer` cut into consecutive parts of the given sizes.
fn split_into<T>(mut buffer: &mut [T], sizes: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    sizes
        .map(|size| {
            let (part, rest) = std::mem::take(&mut buffer).split_at_mut(size);
            buffer = rest;
            part
        })
        .collect()
}

/// dW [filters, 3, 3] = Gᵀ dU G for every filter of `du` [16, filters]: the adjoint of
/// [`transform_filters`].
fn untransform_weights<T: Real>(du: &[T], filters: usize) -> Vec<T> {
    let mut dw = vec![T::default(); filters * 9];
    for (f, out) in dw.chunks_exact_mut(9).enumerate() {
        let at = |i: usize, j: usize| du[(i * 4 + j) * filters + f];
        // Gᵀ dU: three rows of four; then each row times G.
        let rows: [[T; 3]; 4] = std::array::from_fn(|j| shrink4([at(0, j), at(1, j), at(2, j), at(3, j)]));
        for i in 0..3 {
            let r = shrink4([rows[0][i], rows[1][i], rows[2][i], rows[3][i]]);
            out[i * 3..][..3].copy_from_slice(&r);
        }
    }
    dw
}

/// Gᵀ · (a, b, c, d) = (a + ½(b + c), ½(b − c), ½(b + c) + d).
fn shrink4<T: Real>([a, b, c, d]: [T; 4]) -> [T; 3] {
    let (sum, diff) = (T::HALF * (b + c), T::HALF * (b - c));
    [a + sum, diff, sum + d]
}

/// dM [16, cout, tiles] = A dY Aᵀ for every 2×2 block dY of the output gradient in the band's
/// tiles (zero where the block passes the image's edge): the adjoint of [`transform_output`].
/// A = [1 0; 1 1; 1 −1; 0 −1] takes each block's row (p, q) to (p, p + q, p − q, −q) and then
/// its two rows the same way.
#[inline(always)]
fn grad_blocks<T: Real>(gs: &[T], plan: &Plan, band: Range<usize>, dm: &mut [T]) {
    let Plan { cout, h, w, tw, .. } = *plan;
    let images = gs.len() / (cout * h * w);
    let tiles = images * band.len() * tw;
    let zero = T::default();
    // The block rows' columns 2t and 2t + 1, expanded by A: across[a][j][t].
    let mut across = [(); 2].map(|_| [(); 4].map(|_| vec![zero; tw]));
    for image in 0..images {
        for k in 0..cout {
            let plane = &gs[(image * cout + k) * h * w..][..h * w];
            for (r, ty) in band.clone().enumerate() {
                for (a, out) in across.iter_mut().enumerate() {
                    let oy = 2 * ty + a;
                    let [e, s, d, o] = out;
                    split_even_odd(if oy < h { &plane[oy * w..][..w] } else { &[] }, e, o);
                    zip_into(s, e, o, |p, q| p + q);
                    zip_into(d, e, o, |p, q| p - q);
                    o.iter_mut().for_each(|v| *v = zero - *v);
                }
                let first = (image * band.len() + r) * tw;
                let [top, bottom] = &across;
                for (j, (p, q)) in top.iter().zip(bottom).enumerate() {
                    let row = |i: usize| (((i * 4 + j) * cout + k) * tiles + first)..;
                    dm[row(0)][..tw].copy_from_slice(p);
                    zip_into(&mut dm[row(1)][..tw], p, q, |p, q| p + q);
                    zip_into(&mut dm[row(2)][..tw], p, q, |p, q| p - q);
                    zip_into(&mut dm[row(3)][..tw], q, q, |q, _| zero - q);
                }
            }
        }
    }
}

/// u[ξ][f] = (G g Gᵀ)_ξ for every filter g of `weights` [filters, 3, 3], ξ = 4i + j.
fn transform_filters<T: Real>(weights: &[T], u: &mut [&mut [T]]) {
    filters_along(weights, u, 4, expand3_along);
}

/// u[side·i + j][f] = (G g Gᵀ)[i][j] for every filter g of `weights` [filters, 3, 3], along all
/// the filters at once: G down each column, then across each row, both by `expand`
/// (out[i][f] = (G · (ins[0][f], ins[1][f], ins[2][f]))[i], `side` outputs). Every value is
/// computed on its own, so no cut of the filters changes a bit.
pub(crate) fn filters_along<T: Real>(weights: &[T], u: &mut [&mut [T]], side: usize, expand: impl Fn([&[T]; 3], &mut [&mut [T]])) {
    assert_eq!(u.len(), side * side);
    let filters = weights.len() / 9;
    if filters == 0 {
        return;
    }
    with_scratch((9 + 3 * side) * filters, |scratch: &mut [T]| {
        let (taps, down) = scratch.split_at_mut(9 * filters);
        // taps[t][f]: tap t (row-major in the 3×3 filter) of filter f.
        for (t, tap) in taps.chunks_exact_mut(filters).enumerate() {
            tap.iter_mut().zip(weights.iter().skip(t).step_by(9)).for_each(|(o, &v)| *o = v);
        }
        // down[side·col + i][f]: entry (i, col) of G g.
        let tap = |t: usize| &taps[t * filters..][..filters];
        let mut down: Vec<&mut [T]> = down.chunks_exact_mut(filters).collect();
        for (col, column) in down.chunks_exact_mut(side).enumerate() {
            expand([tap(col), tap(3 + col), tap(6 + col)], column);
        }
        for (i, across) in u.chunks_exact_mut(side).enumerate() {
            expand([&*down[i], &*down[side + i], &*down[2 * side + i]], across);
        }
    });
}

/// out[i][f] = (G · (ins[0][f], ins[1][f], ins[2][f]))[i] for every f of `out`.
fn expand3_along<T: Real>(ins: [&[T]; 3], out: &mut [&mut [T]]) {
    let n = out[0].len();
    let [a, b, c] = ins.map(|v| &v[..n]);
    let [o0, o1, o2, o3] = out else {
        panic!("expand3_along: four outputs");
    };
    let (o0, o1, o2, o3) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for f in 0..n {
        (o0[f], o1[f], o2[f], o3[f]) = expand3(a[f], b[f], c[f]).into();
    }
}

/// G · (a, b, c) = (a, ½(a + b + c), ½(a − b + c), c).
#[inline(always)]
fn expand3<T: Real>(a: T, b: T, c: T) -> [T; 4] {
    [a, T::HALF * (a + b + c), T::HALF * (a - b + c), c]
}

/// V [16, cin, tiles] = Bᵀ d B for every 4×4 input block d of the band's tiles, the tiles in
/// (image, tile row, tile column) order. Every loop runs along contiguous memory: the input
/// lines the band covers are split once into their even and odd columns (block t spans columns
/// 2t − 1 … 2t + 2, so it takes even[t], odd[t], even[t + 1], odd[t + 1]); for each tile row Bᵀ
/// combines its four lines, then B combines those columns.
#[inline(always)]
fn input_blocks<T: Real>(xs: &[T], plan: &Plan, band: Range<usize>, v: &mut [T]) {
    let Plan { cin, h, w, tw, .. } = *plan;
    let images = xs.len() / (cin * h * w);
    let tiles = images * band.len() * tw;
    let (zero, span) = (T::default(), tw + 1);
    // Input lines 2·band.start − 1 … 2·band.end, split: line l's columns 2t − 1 and 2t.
    let lines = 2 * band.len() + 2;
    let (mut even, mut odd) = (vec![zero; lines * span], vec![zero; lines * span]);
    // One tile row's four lines combined by Bᵀ.
    let (mut down_even, mut down_odd) = ([(); 4].map(|_| vec![zero; span]), [(); 4].map(|_| vec![zero; span]));
    for image in 0..images {
        for c in 0..cin {
            let plane = &xs[(image * cin + c) * h * w..][..h * w];
            for (l, (e, o)) in even.chunks_exact_mut(span).zip(odd.chunks_exact_mut(span)).enumerate() {
                let iy = (2 * band.start + l).wrapping_sub(1);
                // Column 2t − 1 is line[2t − 1]: the line's odd columns, one place on.
                e[0] = zero;
                split_even_odd(if iy < h { &plane[iy * w..][..w] } else { &[] }, o, &mut e[1..]);
            }
            for r in 0..band.len() {
                down_input(four_lines(&even, 2 * r, span), &mut down_even);
                down_input(four_lines(&odd, 2 * r, span), &mut down_odd);
                let first = (image * band.len() + r) * tw;
                for (i, (e, o)) in down_even.iter().zip(&down_odd).enumerate() {
                    let row = |j: usize| (((i * 4 + j) * cin + c) * tiles + first)..;
                    let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
                    zip_into(&mut v[row(0)][..tw], e0, e1, |a, b| a - b);
                    zip_into(&mut v[row(1)][..tw], o0, e1, |a, b| a + b);
                    zip_into(&mut v[row(2)][..tw], e1, o0, |a, b| a - b);
                    zip_into(&mut v[row(3)][..tw], o0, o1, |a, b| a - b);
                }
            }
        }
    }
}

/// Lines `first` … `first + 3` of `split`, lines of `span` values each.
#[inline(always)]
fn four_lines<T>(split: &[T], first: usize, span: usize) -> [&[T]; 4] {
    let line = |i: usize| &split[(first + i) * span..][..span];
    [line(0), line(1), line(2), line(3)]
}

/// Bᵀ down four lines, element by element: (a, b, c, d) → (a − c, b + c, c − b, b − d).
#[inline(always)]
fn down_input<T: Real>([l0, l1, l2, l3]: [&[T]; 4], out: &mut [Vec<T>; 4]) {
    let [o0, o1, o2, o3] = out;
    let n = l0.len();
    let (l1, l2, l3) = (&l1[..n], &l2[..n], &l3[..n]);
    let (o0, o1, o2, o3) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for t in 0..n {
        let (a, b, c, d) = (l0[t], l1[t], l2[t], l3[t]);
        (o0[t], o1[t], o2[t], o3[t]) = (a - c, b + c, c - b, b - d);
    }
}

/// out[t] = f(a[t], b[t]).
#[inline(always)]
fn zip_into<T: Real>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (x, y))| *o = f(*x, *y));
}

/// y = bias + Aᵀ M A for every tile of the band, clipped to the image, a tile row at a time:
/// Aᵀ = [1 1 1 0; 0 1 −1 −1] combines the 16 rows of M four by four into the tile row's two
/// output lines, whose even and odd columns A's two rows then give.
#[inline(always)]
fn output_blocks<T: Real>(m: &[T], ep: Epilogue<'_, T>, plan: &Plan, band: Range<usize>, ys: &mut [MaybeUninit<T>]) {
    let Plan { cout, h, w, tw, .. } = *plan;
    let images = ys.len() / (cout * h * w);
    let tiles = images * band.len() * tw;
    let zero = T::default();
    let (mut even, mut odd) = (vec![zero; tw], vec![zero; tw]);
    for image in 0..images {
        for k in 0..cout {
            let b = ep.bias(k);
            let plane = &mut ys[(image * cout + k) * h * w..][..h * w];
            for (r, ty) in band.clone().enumerate() {
                let first = (image * band.len() + r) * tw;
                let rows = sixteen_rows(m, (k, cout), (first, tiles), tw);
                for a in 0..2 {
                    let oy = 2 * ty + a;
                    if oy < h {
                        output_line(&rows, a, b, (&mut even, &mut odd));
                        ep.activate(k, &mut even);
                        ep.activate(k, &mut odd);
                        interleave(&mut plane[oy * w..][..w], &even, &odd);
                    }
                }
            }
        }
    }
}

/// Rows ξ·cout + k of `m` [16, cout, tiles], columns `first` … `first + tw`.
#[inline(always)]
fn sixteen_rows<T>(m: &[T], (k, cout): (usize, usize), (first, tiles): (usize, usize), tw: usize) -> [&[T]; 16] {
    let row = |xi: usize| &m[(xi * cout + k) * tiles + first..][..tw];
    [
        row(0),
        row(1),
        row(2),
        row(3),
        row(4),
        row(5),
        row(6),
        row(7),
        row(8),
        row(9),
        row(10),
        row(11),
        row(12),
        row(13),
        row(14),
        row(15),
    ]
}

/// Output line `a` (0 or 1) of a tile row, bias `b` added, as its even and odd columns: row a of
/// Aᵀ M (M[0] + M[1] + M[2] or M[1] − M[2] − M[3], M[i] being rows 4i … 4i + 3), then times A.
#[inline(always)]
fn output_line<T: Real>(rows: &[&[T]; 16], a: usize, b: T, (even, odd): (&mut [T], &mut [T])) {
    let [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15] = *rows;
    let n = even.len().min(odd.len());
    let mut put = |t: usize, [s0, s1, s2, s3]: [T; 4]| {
        even[t] = b + (s0 + s1 + s2);
        odd[t] = b + (s1 - s2 - s3);
    };
    if a == 0 {
        for t in 0..n {
            put(
                t,
                [
                    r0[t] + r4[t] + r8[t],
                    r1[t] + r5[t] + r9[t],
                    r2[t] + r6[t] + r10[t],
                    r3[t] + r7[t] + r11[t],
                ],
            );
        }
    } else {
        for t in 0..n {
            put(
                t,
                [
                    r4[t] - r8[t] - r12[t],
                    r5[t] - r9[t] - r13[t],
                    r6[t] - r10[t] - r14[t],
                    r7[t] - r11[t] - r15[t],
                ],
            );
        }
    }
}

/// line[2t] = even[t], line[2t + 1] = odd[t], as far as the line goes.
#[inline(always)]
fn interleave<T: Real>(line: &mut [MaybeUninit<T>], even: &[T], odd: &[T]) {
    let half = line.len() / 2;
    assert!(
        even.len() >= line.len().div_ceil(2) && odd.len() >= half,
        "interleave: every value is written"
    );
    let mut pairs = line.chunks_exact_mut(2);
    for ((pair, e), o) in (&mut pairs).zip(even).zip(odd) {
        pair[0].write(*e);
        pair[1].write(*o);
    }
    if let [last] = pairs.into_remainder() {
        last.write(even[half]);
    }
}

/// What both Winograd kernels must do (this module's and [`crate::winograd4`]'s), each
/// checked by its own tests.
#[cfg(test)]
pub(crate) mod checks {
    use crate::conv::tests::values;
    use crate::conv::{direct_forward, direct_weight_grad, Geometry};

    /// A kernel's forward pass: (x, weight, bias, (batch, cin, cout), (h, w)).
    pub(crate) type Forward<T> = fn(&[T], &[T], Option<&[T]>, (usize, usize, usize), (usize, usize)) -> Vec<T>;
    /// A kernel's weight gradient: (x, grad, (batch, cin, cout), (h, w)).
    pub(crate) type WeightGrad<T> = fn(&[T], &[T], (usize, usize, usize), (usize, usize)) -> Vec<T>;

    pub(crate) fn largest_difference(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()))
    }

    /// (batch, cin, cout, h, w): one image, one and three channels, sizes of every remainder
    /// mod 2 and mod 4, single rows and columns, a batch cut into several blocks, and images
    /// cut into bands of tile rows.
    const SHAPES: [(usize, usize, usize, usize, usize); 10] = [
        (1, 1, 1, 1, 1),
        (1, 1, 2, 2, 2),
        (2, 3, 4, 5, 7),
        (3, 2, 3, 1, 9),
        (1, 4, 2, 8, 1),
        (9, 5, 6, 6, 5),
        (2, 3, 2, 40, 30),
        (1, 2, 3, 33, 47),
        (1, 2, 2, 70, 64),
        (5, 2, 3, 11, 10),
    ];

    /// Forward pass and weight gradient against the direct convolution in f64: the forward to
    /// `forward_bound`, the weight gradient to `grad_bound(pixels summed)`.
    pub(crate) fn equal_the_direct_convolution(
        (forward, weight_grad): (Forward<f64>, WeightGrad<f64>),
        forward_bound: f64,
        grad_bound: impl Fn(usize) -> f64,
    ) {
        for (batch, cin, cout, h, w) in SHAPES {
            let geo = Geometry::of(cin, h, w, 1);
            let (x, k, b) = (values(batch * cin * h * w, 1), values(cout * cin * 9, 2), values(cout, 3));
            let want = direct_forward(&x, &k, Some(&b), batch, cout, geo);
            let err = largest_difference(&want, &forward(&x, &k, Some(&b), (batch, cin, cout), (h, w)));
            assert!(err < forward_bound, "forward {batch}x{cin}->{cout} {h}x{w}: {err:e}");
            let g = values(batch * cout * h * w, 5);
            let want = direct_weight_grad(&x, &g, batch, cout, geo);
            let err = largest_difference(&want, &weight_grad(&x, &g, (batch, cin, cout), (h, w)));
            assert!(err < grad_bound(batch * h * w), "dW {batch}x{cin}->{cout} {h}x{w}: {err:e}");
        }
    }

    /// Outputs and a weight gradient worked out by hand, to `bound`.
    pub(crate) fn give_the_hand_computed_outputs((forward, weight_grad): (Forward<f64>, WeightGrad<f64>), bound: f64) {
        let close = |got: Vec<f64>, want: &[f64]| {
            let err = largest_difference(&got, want);
            assert!(err <= bound, "{got:?} against {want:?}");
        };
        // A 2x3 image, a filter of ones: each output is the sum of its 3x3 neighbourhood inside
        // the image; plus a bias of 0.5.
        let x = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        close(
            forward(&x, &[1.0; 9], Some(&[0.5]), (1, 1, 1), (2, 3)),
            &[12.5, 21.5, 16.5, 12.5, 21.5, 16.5],
        );
        // Only the centre tap: the identity. Only the top-left tap: the image moved down-right.
        let centre = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        close(forward(&x, &centre, None, (1, 1, 1), (2, 3)), &x);
        let corner = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        close(forward(&x, &corner, None, (1, 1, 1), (2, 3)), &[0.0, 0.0, 0.0, 0.0, 1.0, 2.0]);
        // dW of that image for an output gradient of ones: tap (ky, kx) sums the pixels at
        // (y + ky − 1, x + kx − 1) over the outputs (y, x): the top-left tap meets pixels 1 and 2,
        // the centre one all six, the bottom-right one 5 and 6.
        close(
            weight_grad(&x, &[1.0; 6], (1, 1, 1), (2, 3)),
            &[3.0, 6.0, 5.0, 12.0, 21.0, 16.0, 9.0, 15.0, 11.0],
        );
    }

    /// The same bits on one, three and four threads: 20 images of 10x12 (several blocks, which
    /// the forward pass cuts in 4 on one and four threads, in 6 on three), and 2 of `large`
    /// (bands of tile rows).
    pub(crate) fn are_the_same_bits_on_one_three_and_four_threads(
        (forward, weight_grad): (Forward<f32>, WeightGrad<f32>),
        large: (usize, usize),
    ) {
        for (batch, (h, w)) in [(20, (10, 12)), (2, large)] {
            let (cin, cout) = (3, 4);
            let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
            let x = to_f32(values(batch * cin * h * w, 6));
            let k = to_f32(values(cout * cin * 9, 7));
            let g = to_f32(values(batch * cout * h * w, 8));
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
                pool.install(|| {
                    let y = forward(&x, &k, None, (batch, cin, cout), (h, w));
                    let dw = weight_grad(&x, &g, (batch, cin, cout), (h, w));
                    [y, dw].map(|v| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                })
            };
            let one = on(1);
            assert_eq!(one, on(3));
            assert_eq!(one, on(4));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::checks::*;
    use super::*;
    use crate::conv::tests::values;
    use crate::conv::{direct_weight_grad, Geometry};

    #[test]
    fn the_forward_pass_and_the_weight_gradient_equal_the_direct_convolution() {
        equal_the_direct_convolution((forward, weight_grad), 1e-12, |_| 1e-11);
    }

    #[test]
    fn hand_computed_outputs() {
        // Its constants (0, ±1, ±½) are exact: so are these sums.
        give_the_hand_computed_outputs((forward, weight_grad), 0.0);
    }

    #[test]
    fn results_are_the_same_bits_on_one_three_and_four_threads() {
        are_the_same_bits_on_one_three_and_four_threads((forward, weight_grad), (50, 44));
    }

    /// dU in runs and by points: the same bits where every run is one block, both equal to
    /// the direct convolution's dW otherwise, for both kernels.
    #[test]
    fn a_balanced_cut_gives_every_thread_as_many_blocks() {
        // 128 images of 4 × 3 tiles (14 × 12 by F(4×4)), about 336 tiles a block: 26 images,
        // so 5 blocks; on two threads 6 blocks of 22 (the last 18), on one as it was.
        let plan = Plan::new(128, (256, 256), (14, 12), 4, 336);
        assert_eq!((plan.images, plan.rows, plan.th), (26, 4, 4));
        assert_eq!(plan.balanced(128, 2).images, 22);
        assert_eq!(plan.balanced(128, 1).images, 26);
        // A cut into bands of one image's tile rows stays as it is.
        let banded = Plan::new(4, (3, 3), (200, 200), 4, 336);
        assert!(banded.rows < banded.th);
        assert_eq!(banded.balanced(4, 2).images, banded.images);
    }

    #[test]
    fn the_weight_gradient_summed_by_points_equals_it_summed_in_runs() {
        fn check<A: Algorithm>() {
            // 4 blocks (F(2×2) and F(4×4)); 20 blocks (F(2×2)) and 10 (F(4×4)), in fewer runs.
            for (batch, cin, cout, h, w) in [(20, 3, 4, 10, 12), (9, 5, 6, 6, 5), (40, 2, 3, 40, 30)] {
                let plan = Plan::new(batch, (cin, cout), (h, w), A::SIZE, A::TILES_PER_BLOCK);
                let blocks = Block::all(&plan, batch);
                let (x, g) = (values(batch * cin * h * w, 11), values(batch * cout * h * w, 12));
                let runs = in_runs::<A, f64>((&x, &g), &plan, &blocks);
                let points = by_points::<A, f64>((&x, &g), &plan, &blocks);
                let shape = format!("{}: {batch}x{cin}->{cout} {h}x{w}, {} blocks", A::SIZE, blocks.len());
                if runs_for(blocks.len()) == blocks.len() {
                    assert!(runs.iter().zip(&points).all(|(r, p)| r.to_bits() == p.to_bits()), "{shape}");
                } else {
                    let want = direct_weight_grad(&x, &g, batch, cout, Geometry::of(cin, h, w, 1));
                    for du in [runs, points] {
                        let err = largest_difference(&want, &A::untransform_weights(&du, cout * cin));
                        assert!(err < 1e-10, "{shape}: {err:e}");
                    }
                }
            }
        }
        check::<F2>();
        check::<crate::winograd4::F4>();
    }
}
