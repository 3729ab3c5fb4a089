//! SphereFace's 3×3 convolution (padding 1, stride 1 or 2) as an operation of the project's own,
//! through burn's backend-extension mechanism (issue 12), with CPU kernels of its own where
//! burn-flex is slower than PyTorch. On the flex backend, in f32 and f64:
//! - stride 1 runs as Winograd's F(4×4, 3×3) ([`crate::winograd4`]; images under 8 pixels a
//!   side as F(2×2, 3×3), [`crate::winograd`]: see `F4_FROM`); stride 2 as one `gemm` per
//!   group of images over their patch matrices side by side, groups in parallel
//!   ([`direct_forward`]), and for the weight gradient one per image ([`direct_weight_grad`]);
//! - the input gradient of a stride-1 convolution ([`input_grad`]) is the forward pass over the
//!   output gradient, with the weight's channels swapped and its taps turned by 180°; of a
//!   stride-2 one ([`direct_input_grad`]), the patch matrix's gradient added back onto the
//!   pixels (burn-flex's went through the `gemm` crate, whose sums follow the cache sizes);
//! - weight gradients are summed in a fixed order ([`sum_in_runs`]), whatever the thread count;
//!   the bias gradient ([`bias_grad`]) sums each plane where it lies, in 16 interleaved partial
//!   sums, where burn's first transposed the whole output gradient into a fresh buffer.
//! - for inference, [`conv3x3_prelu`] applies each output channel's PReLU as the forward pass
//!   writes it (the same bits as the two apart, one pass over the output fewer).
//!
//! The `conv_layers` bench times each against flex's. Other backends (wgpu, cuda) keep burn's
//! `Conv2d` unchanged.

pub use crate::matrix::Real;
use crate::matrix::{
    add_product_with_transpose, channel_sums, filled_by_chunks, lane_sum, multiply, split_even_odd, sum_in_runs, vector_paths,
    with_scratch, written_by_chunks,
};
use crate::products::{product_with_transposed_rows, Isa};
use crate::winograd::{forward_with, Epilogue, F2};
use crate::winograd4::F4;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::{DType, Device, Shape, Tensor, TensorData};
use burn_flex::FlexTensor;
use std::mem::MaybeUninit;

/// burn's options for a 3×3 convolution with padding 1.
fn options(stride: usize) -> ConvOptions<2> {
    ConvOptions::new([stride, stride], [1, 1], [1, 1], 1)
}

/// The operation, per backend: a default body of burn's own ops, a flex implementation with
/// our kernels, and an autodiff implementation that routes the backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait SphereConv: Backend {
    /// `x` [B, Cin, H, W] convolved with `weight` [Cout, Cin, 3, 3] (padding 1), plus `bias`.
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), options(stride))
    }
    /// The gradient of [`SphereConv::conv3x3`] with respect to its input `x`, given the output's.
    fn conv3x3_input_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, grad: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options(stride))
    }
    /// The gradient of [`SphereConv::conv3x3`] with respect to its weight, given the output's.
    fn conv3x3_weight_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, grad: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options(stride))
    }
    /// [`SphereConv::conv3x3`], then PReLU with one slope per output channel (`alpha`
    /// [Cout]): for inference, where nothing needs the convolution's own output.
    fn conv3x3_prelu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        stride: usize,
    ) -> FloatTensor<Self> {
        conv_then_prelu::<Self>(x, weight, bias, alpha, stride)
    }
    /// The gradient of [`SphereConv::conv3x3`] with respect to its bias: the output gradient
    /// summed over images and pixels, per channel.
    fn conv3x3_bias_grad(x: FloatTensor<Self>, bias: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::conv2d_bias_backward(x, bias, grad)
    }
}

/// [`SphereConv::conv3x3_prelu`] as two ops: the backend's convolution, then burn's PReLU.
fn conv_then_prelu<B: SphereConv>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    alpha: FloatTensor<B>,
    stride: usize,
) -> FloatTensor<B> {
    let y = B::conv3x3(x, weight, bias, stride);
    let c = alpha.shape().num_elements();
    B::prelu(y, B::float_reshape(alpha, Shape::new([1, c, 1, 1])))
}

/// Each method falls back to burn's own op for a dtype other than f32 and f64.
impl SphereConv for Flex {
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        let [batch, cin, h, w] = dims4(&x);
        let (cout, geo) = (dims4(&weight)[0], Geometry::of(cin, h, w, stride));
        let kernel = Forward { batch, cout, geo };
        on_values([&x, &weight, &bias], [batch, cout, geo.ho, geo.wo], kernel)
            .unwrap_or_else(|| Self::conv2d(x, weight, Some(bias), options(stride)))
    }

    fn conv3x3_input_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, grad: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        let [batch, cin, h, w] = dims4(&x);
        let cout = dims4(&weight)[0];
        let ours = match stride {
            1 => on_values([&grad, &weight], [batch, cin, h, w], InputGrad { batch, cin, cout, h, w }),
            _ => {
                let geo = Geometry::of(cin, h, w, stride);
                on_values([&grad, &weight], [batch, cin, h, w], DirectInputGrad { batch, cout, geo })
            }
        };
        ours.unwrap_or_else(|| Self::conv2d_x_backward(x, weight, grad, options(stride)))
    }

    fn conv3x3_weight_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, grad: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        let [batch, cin, h, w] = dims4(&x);
        let kernel = WeightGrad {
            batch,
            cout: dims4(&weight)[0],
            geo: Geometry::of(cin, h, w, stride),
        };
        on_values([&x, &grad], dims4(&weight), kernel).unwrap_or_else(|| Self::conv2d_weight_backward(x, weight, grad, options(stride)))
    }

    /// The activation applied to each output channel as it is written ([`Epilogue`]), not in
    /// a pass of its own.
    fn conv3x3_prelu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        stride: usize,
    ) -> FloatTensor<Self> {
        let [batch, cin, h, w] = dims4(&x);
        let (cout, geo) = (dims4(&weight)[0], Geometry::of(cin, h, w, stride));
        let kernel = ForwardPrelu(Forward { batch, cout, geo });
        on_values([&x, &weight, &bias, &alpha], [batch, cout, geo.ho, geo.wo], kernel)
            .unwrap_or_else(|| conv_then_prelu::<Self>(x, weight, bias, alpha, stride))
    }

    /// burn's transposes the whole output gradient ([B, C] → [C, B]) into a fresh buffer to sum
    /// its rows; here each plane is summed where it lies.
    fn conv3x3_bias_grad(x: FloatTensor<Self>, bias: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = dims4(&grad);
        on_values([&grad], [shape[1]], BiasGrad(shape)).unwrap_or_else(|| Self::conv2d_bias_backward(x, bias, grad))
    }
}

/// The backward pass of [`SphereConv::conv3x3`]: the backend's input, weight and bias gradients.
#[derive(Debug)]
struct Conv3x3Backward;

impl<B: Backend + SphereConv> Backward<B, 3> for Conv3x3Backward {
    type State = (NodeId, NodeId, NodeId, usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, bias, stride) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight);
        let bias = checkpointer.retrieve_node_output::<FloatTensor<B>>(bias);
        if let Some(node) = node_x {
            let g = B::conv3x3_input_grad(x.clone(), weight.clone(), grad.clone(), stride);
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_weight {
            let g = B::conv3x3_weight_grad(x.clone(), weight, grad.clone(), stride);
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, B::conv3x3_bias_grad(x, bias, grad));
        }
    }
}

impl<B: Backend + SphereConv, C: CheckpointStrategy> SphereConv for Autodiff<B, C> {
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node()];
        match Conv3x3Backward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight), prep.checkpoint(&bias), stride);
                let out = B::conv3x3(x.into_primitive(), weight.into_primitive(), bias.into_primitive(), stride);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                stride,
            )),
        }
    }
}

/// [`SphereConv::conv3x3`] on tensors: the operation of our own on the CPU backend (training and
/// extraction), burn's convolution otherwise (the extension covers flex only).
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, stride: usize) -> Tensor<4> {
    if x.device() != Device::flex() {
        return burn::tensor::module::conv2d(x, weight, Some(bias), options(stride));
    }
    Tensor::from_dispatch(<Dispatch as SphereConv>::conv3x3(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        stride,
    ))
}

/// [`conv3x3`] then PReLU per output channel, the two fused on the CPU (for inference: the
/// operation has no backward pass of its own under autodiff, where it is the two ops).
pub fn conv3x3_prelu(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, alpha: Tensor<1>, stride: usize) -> Tensor<4> {
    if x.device() != Device::flex() {
        return crate::prelu::prelu_channels(conv3x3(x, weight, bias, stride), alpha);
    }
    let (x, weight, bias, alpha) = (
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        alpha.into_dispatch(),
    );
    Tensor::from_dispatch(<Dispatch as SphereConv>::conv3x3_prelu(x, weight, bias, alpha, stride))
}

/// A kernel over the values of f32 or f64 tensors, so that the dtype is matched once.
pub(crate) trait Kernel {
    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T>;
}

/// [`forward`] of (x, weight, bias).
struct Forward {
    batch: usize,
    cout: usize,
    geo: Geometry,
}

impl Kernel for Forward {
    fn run<T: Real>(&self, v: &[&[T]]) -> Vec<T> {
        forward(v[0], v[1], Some(v[2]), self.batch, self.cout, self.geo)
    }
}

/// [`forward_then`] of (x, weight, bias, PReLU slopes).
struct ForwardPrelu(Forward);

impl Kernel for ForwardPrelu {
    fn run<T: Real>(&self, v: &[&[T]]) -> Vec<T> {
        let Forward { batch, cout, geo } = self.0;
        forward_then(
            v[0],
            v[1],
            Epilogue {
                bias: Some(v[2]),
                slopes: Some(v[3]),
            },
            batch,
            cout,
            geo,
        )
    }
}

/// [`input_grad`] of (output gradient, weight).
struct InputGrad {
    batch: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
}

impl Kernel for InputGrad {
    fn run<T: Real>(&self, v: &[&[T]]) -> Vec<T> {
        input_grad(v[0], v[1], self.batch, self.cin, self.cout, (self.h, self.w))
    }
}

/// [`direct_input_grad`] of (output gradient, weight).
struct DirectInputGrad {
    batch: usize,
    cout: usize,
    geo: Geometry,
}

impl Kernel for DirectInputGrad {
    fn run<T: Real>(&self, v: &[&[T]]) -> Vec<T> {
        direct_input_grad(v[0], v[1], self.batch, self.cout, self.geo)
    }
}

/// [`weight_grad`] of (x, output gradient).
struct WeightGrad {
    batch: usize,
    cout: usize,
    geo: Geometry,
}

impl Kernel for WeightGrad {
    fn run<T: Real>(&self, v: &[&[T]]) -> Vec<T> {
        weight_grad(v[0], v[1], self.batch, self.cout, self.geo)
    }
}

/// [`bias_grad`] of the output gradient [B, C, H, W].
struct BiasGrad([usize; 4]);

impl Kernel for BiasGrad {
    fn run<T: Real>(&self, v: &[&[T]]) -> Vec<T> {
        let [b, c, h, w] = self.0;
        bias_grad(v[0], (b, c, h * w))
    }
}

/// db[c] = Σ over images and pixels of g[image, c, pixel]: each plane in [`lane_sum`]'s fixed
/// order on the CPU's widest vectors, the planes in image order ([`channel_sums`]).
pub(crate) fn bias_grad<T: Real>(g: &[T], (images, c, pixels): (usize, usize, usize)) -> Vec<T> {
    assert_eq!(g.len(), images * c * pixels, "bias gradient: values and shape");
    channel_sums((images, c, pixels), |plane| {
        let mut sum = T::default();
        plane_sum_into(&g[plane * pixels..][..pixels], &mut sum);
        sum
    })
}

vector_paths! {
    /// sum = Σ of `plane`, as [`lane_sum`] adds.
    fn plane_sum_into(plane: &[T], sum: &mut T) = plane_sum;
}

#[inline(always)]
fn plane_sum<T: Real>(plane: &[T], sum: &mut T) {
    *sum = lane_sum(plane, plane, |v, _| v);
}

/// `kernel` on the values of flex tensors, read in place, as a tensor of `shape`; `None` when
/// they are not all f32 or all f64.
pub(crate) fn on_values<K: Kernel, const N: usize, const D: usize>(
    inputs: [&FloatTensor<Flex>; N],
    shape: [usize; D],
    kernel: K,
) -> Option<FloatTensor<Flex>> {
    let dtype = inputs[0].dtype();
    if inputs.iter().any(|t| t.dtype() != dtype) {
        return None;
    }
    let contiguous = inputs.map(FlexTensor::to_contiguous);
    let data = match dtype {
        DType::F32 => TensorData::new(kernel.run::<f32>(&slices(&contiguous)?), shape),
        DType::F64 => TensorData::new(kernel.run::<f64>(&slices(&contiguous)?), shape),
        _ => return None,
    };
    Some(FlexTensor::from_data(data))
}

fn slices<T: Real>(tensors: &[FlexTensor]) -> Option<Vec<&[T]>> {
    tensors.iter().map(FlexTensor::as_slice::<T>).collect()
}

fn dims4(t: &FloatTensor<Flex>) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// One 3×3 convolution's geometry (padding 1): input channels and size, stride, output size.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
}

impl Geometry {
    /// The geometry of a 3×3 convolution with padding 1 of a `cin` × `h` × `w` input.
    pub fn of(cin: usize, h: usize, w: usize, stride: usize) -> Geometry {
        let out = |size: usize| (size + 2 - 3) / stride + 1;
        Geometry {
            cin,
            h,
            w,
            stride,
            ho: out(h),
            wo: out(w),
        }
    }
}

/// One image's 3×3 patches (padding 1) as a (cin·9) × (ho·wo) row-major matrix: row
/// (c, ky, kx) holds input channel c shifted by (ky − 1, kx − 1), zero outside the image.
fn im2col<T: Real>(x: &[T], geo: Geometry, col: &mut [T]) {
    im2col_rows(x, geo, col, geo.ho * geo.wo);
}

/// [`im2col`] with its rows `ld` apart in `col` (the columns of several images side by side).
fn im2col_rows<T: Real>(x: &[T], geo: Geometry, col: &mut [T], ld: usize) {
    let Geometry { cin, h, w, stride, ho, wo } = geo;
    if stride == 2 {
        return im2col_stride2(x, geo, col, ld);
    }
    let n = ho * wo;
    for c in 0..cin {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &mut col[((c * 3 + ky) * 3 + kx) * ld..][..n];
                // The output columns whose input column ox·stride + kx − 1 is inside the image.
                let first = 1usize.saturating_sub(kx).div_ceil(stride);
                let end = (w + 1 - kx).div_ceil(stride).min(wo);
                for oy in 0..ho {
                    let out = &mut row[oy * wo..][..wo];
                    let iy = (oy * stride + ky).wrapping_sub(1);
                    if iy >= h || first >= end {
                        out.fill(T::default());
                        continue;
                    }
                    let line = &x[(c * h + iy) * w..][..w];
                    out[..first].fill(T::default());
                    out[end..].fill(T::default());
                    let start = first * stride + kx - 1;
                    let inside = &mut out[first..end];
                    if stride == 1 {
                        inside.copy_from_slice(&line[start..][..inside.len()]);
                    } else {
                        inside
                            .iter_mut()
                            .zip(line[start..].iter().step_by(stride))
                            .for_each(|(o, v)| *o = *v);
                    }
                }
            }
        }
    }
}

vector_paths! {
    /// [`stride2_patches`], on the CPU's widest vectors.
    fn im2col_stride2(x: &[T], geo: Geometry, col: &mut [T], ld: usize) = stride2_patches;
}

/// [`im2col`] for stride 2: each input line the patches meet is split once into its even and
/// odd columns (a loop the compiler vectorises, where a strided gather would not be), and the
/// three taps across are copies of those: kx = 0 takes column 2·ox − 1 (odd[ox − 1]), kx = 1
/// column 2·ox (even[ox]) and kx = 2 column 2·ox + 1 (odd[ox]).
#[inline(always)]
fn stride2_patches<T: Real>(x: &[T], geo: Geometry, col: &mut [T], ld: usize) {
    let Geometry { cin, h, w, ho, wo, .. } = geo;
    let zero = T::default();
    let (mut even, mut odd) = (vec![zero; wo], vec![zero; wo]);
    for c in 0..cin {
        for ky in 0..3 {
            for oy in 0..ho {
                let at = |kx: usize| ((c * 3 + ky) * 3 + kx) * ld + oy * wo;
                let iy = (2 * oy + ky).wrapping_sub(1);
                if iy >= h {
                    (0..3).for_each(|kx| col[at(kx)..][..wo].fill(zero));
                    continue;
                }
                split_even_odd(&x[(c * h + iy) * w..][..w], &mut even, &mut odd);
                col[at(0)] = zero;
                col[at(0) + 1..][..wo - 1].copy_from_slice(&odd[..wo - 1]);
                col[at(1)..][..wo].copy_from_slice(&even);
                col[at(2)..][..wo].copy_from_slice(&odd);
            }
        }
    }
}

/// bias + the convolution of `x` [batch, cin, h, w] with `weight` [cout, cin, 3, 3] (padding 1),
/// as [batch, cout, ho, wo]: Winograd's F(4×4, 3×3) ([`crate::winograd4`]) for stride 1 (F(2×2),
/// [`crate::winograd`], on images under `F4_FROM` pixels a side), the direct product
/// ([`direct_forward`]) for stride 2.
pub fn forward<T: Real>(x: &[T], weight: &[T], bias: Option<&[T]>, batch: usize, cout: usize, geo: Geometry) -> Vec<T> {
    forward_then(x, weight, Epilogue { bias, slopes: None }, batch, cout, geo)
}

/// [`forward`], each output channel finished by `ep` (its bias, then PReLU where `ep` has
/// slopes) before it is written.
pub(crate) fn forward_then<T: Real>(x: &[T], weight: &[T], ep: Epilogue<'_, T>, batch: usize, cout: usize, geo: Geometry) -> Vec<T> {
    let (dims, hw) = ((batch, geo.cin, cout), (geo.h, geo.w));
    match geo.stride {
        1 if geo.h.min(geo.w) >= F4_FROM => forward_with::<F4, T>(x, weight, ep, dims, hw),
        1 => forward_with::<F2, T>(x, weight, ep, dims, hw),
        _ => direct_forward_then(x, weight, ep, batch, cout, geo),
    }
}

/// Y_i = bias + W · patches_i for every image i: the patches of a group of images side by side
/// (so that small outputs, 7 × 6 at stride 2, still make a wide product), one gemm a group,
/// groups in parallel; `x` is [batch, cin, h, w], `weight` [cout, cin, 3, 3], `bias` [cout];
/// the result is [batch, cout, ho, wo]. Each output's sum runs over the patch in one fixed
/// order, whatever the grouping and the thread count.
pub fn direct_forward<T: Real>(x: &[T], weight: &[T], bias: Option<&[T]>, batch: usize, cout: usize, geo: Geometry) -> Vec<T> {
    direct_forward_then(x, weight, Epilogue { bias, slopes: None }, batch, cout, geo)
}

/// [`direct_forward`], each output channel finished by `ep` ([`forward_then`]).
fn direct_forward_then<T: Real>(x: &[T], weight: &[T], ep: Epilogue<'_, T>, batch: usize, cout: usize, geo: Geometry) -> Vec<T> {
    let Geometry { cin, h, w, ho, wo, .. } = geo;
    let (k, n, plane) = (cin * 9, ho * wo, cin * h * w);
    assert!(x.len() == batch * plane && weight.len() == cout * k && ep.fits(cout));
    if batch * cout * n == 0 || plane == 0 {
        return vec![T::default(); batch * cout * n];
    }
    let group = images_per_group(batch, n);
    let write = |g: usize, ys: &mut [MaybeUninit<T>]| {
        let images = ys.len() / (cout * n);
        let (xs, wide) = (&x[g * group * plane..][..images * plane], images * n);
        with_scratch(k * wide, |col: &mut [T]| {
            with_scratch(cout * wide, |out: &mut [T]| {
                for (i, xi) in xs.chunks_exact(plane).enumerate() {
                    im2col_rows(xi, geo, &mut col[i * n..], wide);
                }
                out.chunks_mut(wide).enumerate().for_each(|(o, row)| row.fill(ep.bias(o)));
                multiply(out, weight, col, (cout, k, wide), true);
                out.chunks_mut(wide).enumerate().for_each(|(o, row)| ep.activate(o, row));
                for (i, yi) in ys.chunks_exact_mut(cout * n).enumerate() {
                    for (o, row) in yi.chunks_exact_mut(n).enumerate() {
                        let from = &out[o * wide + i * n..][..n];
                        row.iter_mut().zip(from).for_each(|(y, &v)| _ = y.write(v));
                    }
                }
            })
        })
    };
    // SAFETY: the chunks hold whole images (group · cout · n values, the last fewer), and the
    // copy at the end of `write` writes every row of n values of every channel of each.
    unsafe { written_by_chunks(batch * cout * n, group * cout * n, write) }
}

/// Output columns a stride-2 product should have at least: with fewer, the gemm runs below
/// speed (as Winograd's [`crate::winograd::Algorithm::TILES_PER_BLOCK`]).
const COLUMNS_PER_GROUP: usize = 336;

/// Images whose patches one stride-2 gemm takes side by side: enough for
/// [`COLUMNS_PER_GROUP`] columns, but at least 4 groups where the batch allows, for the threads.
fn images_per_group(batch: usize, n: usize) -> usize {
    let wanted = COLUMNS_PER_GROUP.div_ceil(n.max(1));
    wanted.min(batch.div_ceil(4)).max(1)
}

/// dX of a stride-1 convolution: the forward convolution of the output gradient `grad`
/// [batch, cout, h, w] with the weight [cout, cin, 3, 3] read as [cin, cout, 3, 3] with its
/// taps turned by 180°, since dX[c, y, x] = Σ_o Σ_ky,kx dY[o, y + 1 − ky, x + 1 − kx]·W[o, c, ky, kx].
pub fn input_grad<T: Real>(grad: &[T], weight: &[T], batch: usize, cin: usize, cout: usize, (h, w): (usize, usize)) -> Vec<T> {
    assert_eq!(weight.len(), cout * cin * 9);
    let mut turned = vec![T::default(); weight.len()];
    for o in 0..cout {
        for c in 0..cin {
            for tap in 0..9 {
                turned[(c * cout + o) * 9 + 8 - tap] = weight[(o * cin + c) * 9 + tap];
            }
        }
    }
    forward(grad, &turned, None, batch, cin, Geometry::of(cout, h, w, 1))
}

/// dX of a convolution of any stride (the kernel for stride 2): per group of images (as in
/// [`direct_forward`]), the patch matrices' gradient Wᵀ · [dY_i …] [(cin·9) × (images·n)],
/// then each of its entries added back onto the input pixel it was copied from
/// ([`add_patches`]), in one fixed order; groups in parallel.
pub fn direct_input_grad<T: Real>(grad: &[T], weight: &[T], batch: usize, cout: usize, geo: Geometry) -> Vec<T> {
    let Geometry { cin, h, w, ho, wo, .. } = geo;
    let (k, n, plane) = (cin * 9, ho * wo, cin * h * w);
    assert!(grad.len() == batch * cout * n && weight.len() == cout * k);
    if batch * plane == 0 || n == 0 {
        return vec![T::default(); batch * plane];
    }
    let group = images_per_group(batch, n);
    filled_by_chunks(batch * plane, group * plane, |i0, dxs| {
        let images = dxs.len() / plane;
        let (gs, wide) = (&grad[i0 * group * cout * n..][..images * cout * n], images * n);
        with_scratch(cout * wide, |g: &mut [T]| {
            with_scratch(k * wide, |col: &mut [T]| {
                for (i, gi) in gs.chunks_exact(cout * n).enumerate() {
                    for (o, row) in gi.chunks_exact(n).enumerate() {
                        g[o * wide + i * n..][..n].copy_from_slice(row);
                    }
                }
                // Wᵀ [k × cout], read from W [cout × k] where it lies.
                product_with_transposed_rows(Isa::best(), col, (weight, k, 0), g, (k, cout, wide));
                for (i, dxi) in dxs.chunks_exact_mut(plane).enumerate() {
                    add_patches(&col[i * n..], geo, dxi, wide);
                }
            })
        })
    })
}

/// The adjoint of [`im2col_rows`]: adds row (c, ky, kx), column (oy, ox) of `col` (rows `ld`
/// apart) onto input pixel (c, oy·stride + ky − 1, ox·stride + kx − 1) where that is inside
/// the image.
fn add_patches<T: Real>(col: &[T], geo: Geometry, dx: &mut [T], ld: usize) {
    let Geometry { cin, h, w, stride, ho, wo } = geo;
    let n = ho * wo;
    for c in 0..cin {
        let plane = &mut dx[c * h * w..][..h * w];
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &col[((c * 3 + ky) * 3 + kx) * ld..][..n];
                for oy in 0..ho {
                    let iy = (oy * stride + ky).wrapping_sub(1);
                    if iy >= h {
                        continue;
                    }
                    let line = &mut plane[iy * w..][..w];
                    for (ox, &v) in row[oy * wo..][..wo].iter().enumerate() {
                        let ix = (ox * stride + kx).wrapping_sub(1);
                        if ix < w {
                            line[ix] += v;
                        }
                    }
                }
            }
        }
    }
}

/// The smallest side of an image whose stride-1 convolutions run as F(4×4); smaller ones
/// (SphereFace's 7 × 6) run as F(2×2). There F(4×4)'s 4 × 4 tiles cover 8 × 8 (52 % more than
/// the image, against 14 % for F(2×2)'s 8 × 6), a block holds too few tiles for full-speed
/// products, and in the weight gradient the 36 accumulated [cout × cin] products per partial
/// sum cost more in memory than F(4×4) saves in multiplications. Measured on SphereFace-20's
/// 512-channel 7 × 6 layers (`conv_layers` bench, batch 32, two layers): forward 57 → 43 ms,
/// input gradient 59 → 54 ms, weight gradient 937 → 90 ms as F(2×2).
const F4_FROM: usize = 8;

/// dW [cout, cin, 3, 3] of the convolution of `x` [batch, cin, h, w], given the output gradient
/// `grad` [batch, cout, ho, wo]: Winograd's for stride 1 (F(4×4), [`crate::winograd4::weight_grad`],
/// or on small images F(2×2), [`crate::winograd::weight_grad`]), [`direct_weight_grad`] for
/// stride 2.
pub fn weight_grad<T: Real>(x: &[T], grad: &[T], batch: usize, cout: usize, geo: Geometry) -> Vec<T> {
    match geo.stride {
        1 if geo.h.min(geo.w) >= F4_FROM => crate::winograd4::weight_grad(x, grad, (batch, geo.cin, cout), (geo.h, geo.w)),
        1 => crate::winograd::weight_grad(x, grad, (batch, geo.cin, cout), (geo.h, geo.w)),
        _ => direct_weight_grad(x, grad, batch, cout, geo),
    }
}

/// dW = Σ over images of dY_i [cout × n] · patches_i [(cin·9) × n]ᵀ: one gemm per image, summed
/// by [`sum_in_runs`].
pub fn direct_weight_grad<T: Real>(x: &[T], grad: &[T], batch: usize, cout: usize, geo: Geometry) -> Vec<T> {
    let Geometry { cin, h, w, ho, wo, .. } = geo;
    let (k, n) = (cin * 9, ho * wo);
    sum_in_runs(batch, cout * k, |acc, images| {
        with_scratch(k * n, |col: &mut [T]| {
            for i in images {
                im2col(&x[i * cin * h * w..][..cin * h * w], geo, col);
                add_product_with_transpose(acc, &grad[i * cout * n..][..cout * n], col, (cout, n, k));
            }
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Deterministic values in [-1, 1) (the Winograd tests use them too).
    pub(crate) fn values(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 2001) as f64 - 1000.0) / 1000.0)
            .collect()
    }

    fn tensor<const D: usize>(shape: [usize; D], seed: usize, dtype: DType, device: &Device) -> Tensor<D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(values(n, seed), shape), (device, dtype))
    }

    fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data().convert::<f64>().try_into_vec::<f64>().unwrap_or_default()
    }

    /// Largest difference relative to the largest magnitude of `want`.
    fn relative(want: &[f64], got: &[f64]) -> f64 {
        assert_eq!(want.len(), got.len());
        let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        want.iter().zip(got).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale
    }

    /// Stride 2 takes several images' patches into one gemm (10 images of 5 × 4 outputs: groups
    /// of 3, 3, 3 and 1): the same bits as one image at a time, forward and for dX.
    #[test]
    fn stride_two_products_over_groups_of_images_give_each_image_its_own_bits() {
        let (batch, cin, cout, geo) = (10, 3, 4, Geometry::of(3, 9, 7, 2));
        assert_eq!(images_per_group(batch, geo.ho * geo.wo), 3);
        let plane = cin * 9 * 7;
        let (x, k, b) = (values(batch * plane, 1), values(cout * cin * 9, 2), values(cout, 3));
        let g = values(batch * cout * geo.ho * geo.wo, 4);
        let bits = |v: Vec<f64>| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let (y, dx) = (
            direct_forward(&x, &k, Some(&b), batch, cout, geo),
            direct_input_grad(&g, &k, batch, cout, geo),
        );
        let one_at_a_time = |f: &dyn Fn(usize) -> Vec<f64>| bits((0..batch).flat_map(f).collect());
        let out = cout * geo.ho * geo.wo;
        assert_eq!(
            bits(y),
            one_at_a_time(&|i| direct_forward(&x[i * plane..][..plane], &k, Some(&b), 1, cout, geo))
        );
        assert_eq!(
            bits(dx),
            one_at_a_time(&|i| direct_input_grad(&g[i * out..][..out], &k, 1, cout, geo))
        );
    }

    /// (batch, cin, cout, stride, h, w): every SphereFace-20 convolution shape (batch 2), then
    /// odd ones: one image, 1 and 3 input channels, widths that fit no tile, stride 2 on odd sizes.
    const SHAPES: [(usize, usize, usize, usize, usize, usize); 13] = [
        (2, 3, 64, 2, 112, 96),
        (2, 64, 64, 1, 56, 48),
        (2, 64, 128, 2, 56, 48),
        (2, 128, 128, 1, 28, 24),
        (2, 128, 256, 2, 28, 24),
        (2, 256, 256, 1, 14, 12),
        (2, 256, 512, 2, 14, 12),
        (2, 512, 512, 1, 7, 6),
        (1, 1, 4, 1, 5, 7),
        (3, 3, 5, 2, 9, 11),
        (1, 2, 3, 2, 1, 1),
        (5, 4, 2, 1, 3, 13),
        (2, 1, 1, 2, 8, 3),
    ];

    /// Forward and all three gradients of `conv3x3` against burn's own `conv2d`, through
    /// autodiff, on a loss Σ y·r with fixed r.
    fn compare(dtype: DType, tolerance: f64) {
        let device = Device::flex().autodiff();
        for (b, cin, cout, stride, h, w) in SHAPES {
            let run = |ours: bool| {
                let x = tensor([b, cin, h, w], 1, dtype, &device).require_grad();
                let k = tensor([cout, cin, 3, 3], 2, dtype, &device).require_grad();
                let bias = tensor([cout], 3, dtype, &device).require_grad();
                let y = match ours {
                    true => conv3x3(x.clone(), k.clone(), bias.clone(), stride),
                    false => burn::tensor::module::conv2d(x.clone(), k.clone(), Some(bias.clone()), options(stride)),
                };
                let r = tensor(y.dims(), 4, dtype, &device);
                let grads = (y.clone() * r).sum().backward();
                let g = |t: &Tensor<4>| to_f64(t.grad(&grads).expect("a gradient"));
                let gb = to_f64(bias.grad(&grads).expect("a bias gradient"));
                (to_f64(y), g(&x), g(&k), gb)
            };
            let (want, got) = (run(false), run(true));
            let shape = format!("batch {b}, {cin}->{cout}, stride {stride}, {h}x{w}, {dtype:?}");
            for (what, a, b) in [
                ("output", &want.0, &got.0),
                ("x grad", &want.1, &got.1),
                ("w grad", &want.2, &got.2),
                ("bias grad", &want.3, &got.3),
            ] {
                let err = relative(a, b);
                assert!(err <= tolerance, "{what} of {shape}: {err:e} > {tolerance:e}");
            }
        }
    }

    #[test]
    fn the_fused_activation_gives_the_bits_of_the_convolution_then_prelu() {
        // Slopes of both signs and zero; shapes that run F(4×4), F(2×2) and stride 2.
        let device = Device::flex();
        for (b, cin, cout, stride, h, w) in [(2, 3, 5, 1, 9, 11), (3, 4, 6, 1, 7, 6), (2, 3, 4, 2, 9, 7)] {
            let x = tensor([b, cin, h, w], 1, DType::F32, &device);
            let k = tensor([cout, cin, 3, 3], 2, DType::F32, &device);
            let bias = tensor([cout], 3, DType::F32, &device);
            let alpha = Tensor::<1>::from_data(
                TensorData::new(vec![0.25f32, -0.5, 0.0, 1.5, 0.1, 2.0][..cout].to_vec(), [cout]),
                &device,
            );
            let fused = conv3x3_prelu(x.clone(), k.clone(), bias.clone(), alpha.clone(), stride);
            let apart = crate::prelu::prelu_channels(conv3x3(x, k, bias, stride), alpha);
            let bits = |t: Tensor<4>| {
                t.into_data()
                    .try_to_vec::<f32>()
                    .expect("f32")
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            let (fused, apart) = (bits(fused), bits(apart));
            assert!(apart.iter().any(|&v| f32::from_bits(v) < 0.0), "no negative output to activate");
            assert_eq!(fused, apart, "{b}x{cin}->{cout} stride {stride} {h}x{w}");
        }
    }

    #[test]
    fn the_convolution_and_its_gradients_match_burns_in_f32() {
        compare(DType::F32, 1e-4);
    }

    #[test]
    fn the_convolution_and_its_gradients_match_burns_in_f64() {
        compare(DType::F64, 1e-10);
    }

    #[test]
    fn the_weight_gradient_is_the_same_bits_on_one_thread_and_on_four() {
        let geo = Geometry {
            cin: 16,
            h: 14,
            w: 12,
            stride: 1,
            ho: 14,
            wo: 12,
        };
        let (batch, cout) = (13, 8);
        let x: Vec<f32> = values(batch * 16 * 14 * 12, 5).into_iter().map(|v| v as f32).collect();
        let g: Vec<f32> = values(batch * cout * 14 * 12, 6).into_iter().map(|v| v as f32).collect();
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
            pool.install(|| weight_grad(&x, &g, batch, cout, geo))
        };
        let one = on(1);
        assert!(one.iter().any(|v| *v != 0.0));
        assert_eq!(
            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            on(4).iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_bias_gradient_sums_each_channel_over_images_and_pixels() {
        // 2 images, 2 channels, 3 pixels: g = 0, 1, 2, … in [image, channel, pixel] order.
        let g: Vec<f64> = (0..12).map(f64::from).collect();
        // Channel 0: (0 + 1 + 2) + (6 + 7 + 8); channel 1: (3 + 4 + 5) + (9 + 10 + 11).
        assert_eq!(bias_grad(&g, (2, 2, 3)), [24.0, 42.0]);
    }

    #[test]
    fn a_plane_is_summed_in_sixteen_lanes_then_in_lane_order() {
        // Value i goes to lane i mod 16: lane 0 gets 1e8 then 1 (lost: f32's spacing at 1e8 is
        // 8), lane 1 gets −1e8; the lanes then add to 0. A sum in pixel order would give 1.
        let mut plane = vec![0f32; 17];
        (plane[0], plane[1], plane[16]) = (1e8, -1e8, 1.0);
        assert_eq!(bias_grad(&plane, (1, 1, 17)), [0.0]);
        assert_eq!(
            plane.iter().fold(0f32, |s, &v| s + v),
            1.0,
            "the example does not tell the orders apart"
        );
    }

    #[test]
    fn a_hand_computed_weight_gradient() {
        // One 2x2 image, one channel in and out, stride 1: dW[ky][kx] = Σ_p dY[p] · x[p + (ky-1, kx-1)].
        let x = [1.0f64, 2.0, 3.0, 4.0];
        let g = [1.0f64, 0.0, 0.0, 0.0];
        let geo = Geometry {
            cin: 1,
            h: 2,
            w: 2,
            stride: 1,
            ho: 2,
            wo: 2,
        };
        // Only output (0,0) has a gradient: dW[ky][kx] = x[ky-1][kx-1] where inside the image.
        assert_eq!(weight_grad(&x, &g, 1, 1, geo), [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
    }
}
