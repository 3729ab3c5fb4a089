//! SphereFace's 3×3 convolution (padding 1, stride 1 or 2) as an operation of the project's own,
//! through burn's backend-extension mechanism (issue 12), so that its CPU kernels can be
//! replaced one by one where burn-flex is slower than PyTorch. The forward pass and the input
//! gradient are still burn's; the weight gradient on the flex backend is ours
//! ([`weight_grad`]): one `gemm` per image over its patch matrix, images in parallel, which
//! the `conv_layers` bench measured at about half of flex's time. Other backends (wgpu, cuda)
//! keep burn's `Conv2d` unchanged.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::tensor::{DType, Device, Tensor};

/// burn's options for a 3×3 convolution with padding 1.
fn options(stride: usize) -> ConvOptions<2> {
    ConvOptions::new([stride, stride], [1, 1], [1, 1], 1)
}

/// The operation, per backend: a default body of burn's own ops, a flex implementation with
/// our weight gradient, and an autodiff implementation that routes the backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait SphereConv: Backend {
    /// `x` [B, Cin, H, W] convolved with `weight` [Cout, Cin, 3, 3] (padding 1), plus `bias`.
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), options(stride))
    }
    /// The gradient of [`SphereConv::conv3x3`] with respect to its weight, given the output's.
    fn conv3x3_weight_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, grad: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options(stride))
    }
}

impl SphereConv for Flex {
    fn conv3x3_weight_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, grad: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        match flex_weight_grad(&x, &grad, &weight, stride) {
            Some(g) => g,
            // Another dtype: burn's own gradient.
            None => Self::conv2d_weight_backward(x, weight, grad, options(stride)),
        }
    }
}

/// The backward pass of [`SphereConv::conv3x3`]: burn's input and bias gradients, the backend's
/// [`SphereConv::conv3x3_weight_grad`].
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
            let g = B::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options(stride));
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_weight {
            let g = B::conv3x3_weight_grad(x.clone(), weight, grad.clone(), stride);
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, B::conv2d_bias_backward(x, bias, grad));
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

/// [`SphereConv::conv3x3`] on tensors: the operation of our own when training on the CPU
/// backend, burn's convolution otherwise (the extension covers flex only).
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, stride: usize) -> Tensor<4> {
    // What is ours is the backward pass: without gradients (extraction) burn's path is the same
    // kernel with less in between.
    let device = x.device();
    if device != Device::flex() || !device.is_autodiff() || burns_only() {
        return burn::tensor::module::conv2d(x, weight, Some(bias), options(stride));
    }
    Tensor::from_dispatch(<Dispatch as SphereConv>::conv3x3(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        stride,
    ))
}

/// `SPHEREPIPE_CONV=burn`: burn's own convolution everywhere, to compare (the benches) or to
/// rule this operation out when something looks wrong. Read once.
fn burns_only() -> bool {
    static BURN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BURN.get_or_init(|| std::env::var("SPHEREPIPE_CONV").is_ok_and(|v| v == "burn"))
}

/// The weight gradient on flex tensors of f32 or f64, or `None` for another dtype.
fn flex_weight_grad(
    x: &FloatTensor<Flex>,
    grad: &FloatTensor<Flex>,
    weight: &FloatTensor<Flex>,
    stride: usize,
) -> Option<FloatTensor<Flex>> {
    match (x.dtype(), grad.dtype()) {
        (DType::F32, DType::F32) => flex_weight_grad_of::<f32>(x, grad, weight, stride),
        (DType::F64, DType::F64) => flex_weight_grad_of::<f64>(x, grad, weight, stride),
        _ => None,
    }
}

fn flex_weight_grad_of<T: Real + burn::tensor::Element + bytemuck::Pod>(
    x: &FloatTensor<Flex>,
    grad: &FloatTensor<Flex>,
    weight: &FloatTensor<Flex>,
    stride: usize,
) -> Option<FloatTensor<Flex>> {
    let values = |t: &FloatTensor<Flex>| -> Option<Vec<T>> { t.to_contiguous().as_slice::<T>().map(<[T]>::to_vec) };
    let ([batch, cin, h, w], [_, cout, ho, wo]) = (dims4(x), dims4(grad));
    let geo = Geometry { cin, h, w, stride, ho, wo };
    let out = weight_grad(&values(x)?, &values(grad)?, batch, cout, geo);
    let shape = weight.layout().shape().clone();
    Some(burn_flex::FlexTensor::from_data(burn::tensor::TensorData::new(out, shape)))
}

/// The element types the kernels take (f32 for training, f64 for the tests' tight checks).
pub trait Real: Copy + Default + std::ops::AddAssign + Send + Sync + 'static {
    /// 1.
    const ONE: Self;
}
impl Real for f32 {
    const ONE: Self = 1.0;
}
impl Real for f64 {
    const ONE: Self = 1.0;
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

/// One image's 3×3 patches (padding 1) as a (cin·9) × (ho·wo) row-major matrix.
fn im2col<T: Real>(x: &[T], geo: Geometry, col: &mut [T]) {
    let Geometry { cin, h, w, stride, ho, wo } = geo;
    let n = ho * wo;
    for c in 0..cin {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &mut col[((c * 3 + ky) * 3 + kx) * n..][..n];
                for oy in 0..ho {
                    let iy = (oy * stride + ky) as isize - 1;
                    let out = &mut row[oy * wo..][..wo];
                    if iy < 0 || iy >= h as isize {
                        out.fill(T::default());
                        continue;
                    }
                    let line = &x[(c * h + iy as usize) * w..][..w];
                    for (ox, v) in out.iter_mut().enumerate() {
                        let ix = (ox * stride + kx) as isize - 1;
                        *v = if ix < 0 || ix >= w as isize {
                            T::default()
                        } else {
                            line[ix as usize]
                        };
                    }
                }
            }
        }
    }
}

/// How many partial sums the weight gradient is split into: fixed, so that the order of the
/// floating-point additions (and with it every bit of the result) does not depend on the
/// number of threads.
const PARTIAL_SUMS: usize = 8;

/// dW [cout, cin, 3, 3] = Σ over images of dY_i [cout × n] · patches_i [(cin·9) × n]ᵀ: one gemm
/// per image. The batch is cut into [`PARTIAL_SUMS`] runs of images, summed in parallel, each in
/// image order; the partial sums are then added in run order. `x` is [batch, cin, h, w],
/// `grad` [batch, cout, ho, wo].
pub fn weight_grad<T: Real>(x: &[T], grad: &[T], batch: usize, cout: usize, geo: Geometry) -> Vec<T> {
    use rayon::prelude::*;
    let (k, n) = (geo.cin * 9, geo.ho * geo.wo);
    let per_run = batch.div_ceil(PARTIAL_SUMS).max(1);
    let runs: Vec<Vec<T>> = (0..batch)
        .step_by(per_run)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|first| {
            let mut acc = vec![T::default(); cout * k];
            let mut col = vec![T::default(); k * n];
            for i in first..(first + per_run).min(batch) {
                add_image(&mut acc, &mut col, x, grad, i, cout, geo);
            }
            acc
        })
        .collect();
    let mut total = vec![T::default(); cout * k];
    for run in runs {
        total.iter_mut().zip(run).for_each(|(t, r)| *t += r);
    }
    total
}

/// acc += dY_i · patches_iᵀ for image `i` (`col` is scratch of (cin·9) × n).
fn add_image<T: Real>(acc: &mut [T], col: &mut [T], x: &[T], grad: &[T], i: usize, cout: usize, geo: Geometry) {
    let Geometry { cin, h, w, ho, wo, .. } = geo;
    let (k, n) = (cin * 9, ho * wo);
    im2col(&x[i * cin * h * w..][..cin * h * w], geo, col);
    let gi = &grad[i * cout * n..][..cout * n];
    assert!(acc.len() == cout * k && col.len() == k * n && gi.len() == cout * n);
    // SAFETY: acc is cout × k (row stride k), gi cout × n (row stride n), col k × n read as its
    // transpose (n × k: row stride 1, column stride n); the lengths checked above keep every
    // index in bounds, and the three buffers do not overlap.
    unsafe {
        gemm::gemm(
            cout,
            k,
            n,
            acc.as_mut_ptr(),
            1,
            k as isize,
            true,
            gi.as_ptr(),
            1,
            n as isize,
            col.as_ptr(),
            n as isize,
            1,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: usize) -> Vec<f64> {
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
