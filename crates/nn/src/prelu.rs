//! PReLU with one slope per channel, as an operation of our own on the CPU backend. burn
//! builds it from three tensor ops (a mask, a product, a select) and its backward from as many
//! more, each a pass over the activation into a fresh buffer, one core at a time; SphereFace-20
//! has 20 of them per step. Here the forward is one pass, the backward one pass for the
//! input's gradient and one for the slopes', images in parallel, on the CPU's widest vectors,
//! with the slopes' sums in a fixed order: each (image, channel) plane in 16 interleaved partial
//! sums added in lane order, then the planes in image order, whatever the thread count and the
//! vector width.

use crate::conv::{on_values, Kernel};
use crate::matrix::{channel_sums, lane_sum, vector_paths, written_by_chunks, Real};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, get_or_init_device_settings, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::{Device, Shape, Tensor};
use std::mem::MaybeUninit;

/// The operation, per backend: burn's own ops by default, one pass each on flex, and the
/// backward pass routed through them under autodiff. `x` is [B, C, H, W], `alpha` [C].
#[backend_extension(Flex, Autodiff)]
pub trait SpherePrelu: Backend {
    /// x where x ≥ 0, alpha[c] · x elsewhere (burn's definition).
    fn prelu_channels(x: FloatTensor<Self>, alpha: FloatTensor<Self>) -> FloatTensor<Self> {
        let slopes = as_broadcast::<Self>(alpha);
        Self::prelu(x, slopes)
    }
    /// dX = g where x ≥ 0, alpha[c] · g elsewhere.
    fn prelu_channels_grad_x(x: FloatTensor<Self>, alpha: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        grad_x_by_ops::<Self>(x, alpha, g)
    }
    /// dalpha[c] = Σ over images and pixels of g · x where x < 0.
    fn prelu_channels_grad_alpha(x: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        grad_alpha_by_ops::<Self>(x, g)
    }
}

/// [`SpherePrelu::prelu_channels_grad_x`] from burn's tensor ops (other backends, other dtypes).
fn grad_x_by_ops<B: Backend>(x: FloatTensor<B>, alpha: FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
    let bool_dtype = get_or_init_device_settings::<B>(&x.device()).bool_dtype;
    let negative = B::float_lower_elem(x, 0f32.into(), bool_dtype);
    let scaled = B::float_mul(g.clone(), as_broadcast::<B>(alpha));
    B::float_mask_where(g, negative, scaled)
}

/// [`SpherePrelu::prelu_channels_grad_alpha`] from burn's tensor ops.
fn grad_alpha_by_ops<B: Backend>(x: FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
    let bool_dtype = get_or_init_device_settings::<B>(&x.device()).bool_dtype;
    let channels = x.shape()[1];
    let positive = B::float_greater_equal_elem(x.clone(), 0f32.into(), bool_dtype);
    let terms = B::float_mul(g, x);
    let zeros = B::float_mul_scalar(terms.clone(), 0f32.into());
    let kept = B::float_mask_where(terms, positive, zeros);
    B::float_reshape(B::float_sum_dims(kept, &[0, 2, 3]), Shape::new([channels]))
}

/// alpha [C] as [1, C, 1, 1], to broadcast over [B, C, H, W].
fn as_broadcast<B: Backend>(alpha: FloatTensor<B>) -> FloatTensor<B> {
    let c = alpha.shape().num_elements();
    B::float_reshape(alpha, Shape::new([1, c, 1, 1]))
}

fn dims4(t: &FloatTensor<Flex>) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// Each method falls back to burn's own ops for a dtype other than f32 and f64.
impl SpherePrelu for Flex {
    fn prelu_channels(x: FloatTensor<Self>, alpha: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = dims4(&x);
        on_values([&x, &alpha], shape, Pass::Forward(shape)).unwrap_or_else(|| Self::prelu(x, as_broadcast::<Self>(alpha)))
    }

    fn prelu_channels_grad_x(x: FloatTensor<Self>, alpha: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = dims4(&x);
        on_values([&x, &alpha, &g], shape, Pass::GradX(shape)).unwrap_or_else(|| grad_x_by_ops::<Self>(x, alpha, g))
    }

    fn prelu_channels_grad_alpha(x: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = dims4(&x);
        on_values([&x, &g], [shape[1]], Pass::GradAlpha(shape)).unwrap_or_else(|| grad_alpha_by_ops::<Self>(x, g))
    }
}

/// The three passes, each with x's shape [B, C, H, W].
enum Pass {
    /// (x, alpha) → y.
    Forward([usize; 4]),
    /// (x, alpha, g) → dX.
    GradX([usize; 4]),
    /// (x, g) → dalpha.
    GradAlpha([usize; 4]),
}

impl Kernel for Pass {
    fn run<T: Real>(&self, v: &[&[T]]) -> Vec<T> {
        match *self {
            // SAFETY: `leaky` writes every value of `out` (its lengths are asserted equal).
            Pass::Forward([_, c, h, w]) => unsafe { per_plane(v[0], c, h * w, |plane, x, out| leaky_into(x, v[1][plane % c], out)) },
            Pass::GradX([_, c, h, w]) => {
                let (g, pixels) = (v[2], h * w);
                // SAFETY: `leaky_grad` writes every value of `out` (lengths asserted equal).
                unsafe {
                    per_plane(v[0], c, pixels, |plane, x, out| {
                        leaky_grad_into(x, &g[plane * pixels..][..pixels], v[1][plane % c], out)
                    })
                }
            }
            Pass::GradAlpha([b, c, h, w]) => slope_grad(v[0], v[1], (b, c, h * w)),
        }
    }
}

/// A tensor of x's shape, planes in parallel, plane p's values written by `write(p, x, out)`
/// into memory not zeroed first (a zeroing pass cost as much as this).
///
/// # Safety
/// `write` must write every value of `out` (as long as its `x`).
unsafe fn per_plane<T: Real>(x: &[T], c: usize, pixels: usize, write: impl Fn(usize, &[T], &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    if pixels == 0 || c == 0 {
        return Vec::new();
    }
    let plane_of = |plane: usize, o: &mut [MaybeUninit<T>]| {
        let x = &x[plane * pixels..][..o.len()];
        write(plane, x, o)
    };
    // SAFETY: `write` writes every value of `out` (the caller's promise).
    unsafe { written_by_chunks(x.len(), pixels, plane_of) }
}

vector_paths! {
    /// out = x where x ≥ 0, a · x elsewhere, on the CPU's widest vectors.
    fn leaky_into(x: &[T], a: T, out: &mut [MaybeUninit<T>]) = leaky;
}

vector_paths! {
    /// out = g where x ≥ 0, a · g elsewhere, on the CPU's widest vectors.
    fn leaky_grad_into(x: &[T], g: &[T], a: T, out: &mut [MaybeUninit<T>]) = leaky_grad;
}

vector_paths! {
    /// sum = [`negative_part_sum`] of (x, g), on the CPU's widest vectors.
    fn negative_part_sum_into(x: &[T], g: &[T], sum: &mut T) = negative_part_sum;
}

#[inline(always)]
fn leaky<T: Real>(x: &[T], a: T, out: &mut [MaybeUninit<T>]) {
    assert_eq!(x.len(), out.len());
    let zero = T::default();
    for (o, &x) in out.iter_mut().zip(x) {
        o.write(if x >= zero { x } else { a * x });
    }
}

#[inline(always)]
fn leaky_grad<T: Real>(x: &[T], g: &[T], a: T, out: &mut [MaybeUninit<T>]) {
    assert!(x.len() == out.len() && g.len() == out.len());
    let zero = T::default();
    for ((o, &x), &g) in out.iter_mut().zip(x).zip(g) {
        o.write(if x >= zero { g } else { a * g });
    }
}

/// Σ g · x over the values where x < 0, as [`lane_sum`] adds (so the same on every path).
#[inline(always)]
fn negative_part_sum<T: Real>(x: &[T], g: &[T], sum: &mut T) {
    let zero = T::default();
    *sum = lane_sum(x, g, |x, g| if x < zero { g * x } else { zero });
}

/// dalpha[c] = Σ_images Σ_pixels g · x where x < 0: each plane's sum by [`negative_part_sum`],
/// added per channel as [`channel_sums`] adds.
fn slope_grad<T: Real>(x: &[T], g: &[T], (images, c, pixels): (usize, usize, usize)) -> Vec<T> {
    channel_sums((images, c, pixels), |plane| {
        let mut sum = T::default();
        negative_part_sum_into(&x[plane * pixels..][..pixels], &g[plane * pixels..][..pixels], &mut sum);
        sum
    })
}

/// The backward pass of [`SpherePrelu::prelu_channels`].
#[derive(Debug)]
struct PreluBackward;

impl<B: Backend + SpherePrelu> Backward<B, 2> for PreluBackward {
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_alpha] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let (x, alpha) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x);
        let alpha = checkpointer.retrieve_node_output::<FloatTensor<B>>(alpha);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::prelu_channels_grad_x(x.clone(), alpha, g.clone()));
        }
        if let Some(node) = node_alpha {
            grads.register::<B>(node.id, B::prelu_channels_grad_alpha(x, g));
        }
    }
}

impl<B: Backend + SpherePrelu, C: CheckpointStrategy> SpherePrelu for Autodiff<B, C> {
    fn prelu_channels(x: FloatTensor<Self>, alpha: FloatTensor<Self>) -> FloatTensor<Self> {
        match PreluBackward.prepare::<C>([x.node(), alpha.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&alpha));
                prep.finish(state, B::prelu_channels(x.into_primitive(), alpha.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::prelu_channels(x.into_primitive(), alpha.into_primitive())),
        }
    }
}

/// PReLU of `x` [B, C, H, W] with slopes `alpha` [C]: our passes on the CPU backend, burn's
/// activation elsewhere.
pub fn prelu_channels(x: Tensor<4>, alpha: Tensor<1>) -> Tensor<4> {
    if x.device() != Device::flex() {
        return burn::tensor::activation::prelu(x, alpha);
    }
    Tensor::from_dispatch(<Dispatch as SpherePrelu>::prelu_channels(x.into_dispatch(), alpha.into_dispatch()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) / 1000.0)
            .collect()
    }

    /// Forward and both gradients against burn's own PReLU through autodiff, and dalpha against
    /// a sum written out here: loss = Σ y ⊙ w, so dL/dy = w.
    #[test]
    fn the_activation_and_its_gradients_match_burns_prelu() {
        let (b, c, h, w) = (3, 4, 5, 7);
        let d = Device::flex().autodiff();
        let x_values = values(b * c * h * w, 1);
        let alpha_values = [0.25f32, -0.5, 1.5, 0.0];
        let w_values = values(b * c * h * w, 2);
        let run = |ours: bool| {
            let x = Tensor::<4>::from_data(TensorData::new(x_values.clone(), [b, c, h, w]), &d).require_grad();
            let alpha = Tensor::<1>::from_data(TensorData::new(alpha_values.to_vec(), [c]), &d).require_grad();
            let weights = Tensor::<4>::from_data(TensorData::new(w_values.clone(), [b, c, h, w]), &d);
            let y = if ours {
                prelu_channels(x.clone(), alpha.clone())
            } else {
                burn::tensor::activation::prelu(x.clone(), alpha.clone())
            };
            let grads = (y.clone() * weights).sum().backward();
            let flat = |t: TensorData| t.convert::<f32>().try_to_vec::<f32>().expect("f32 values");
            (
                flat(y.into_data()),
                flat(x.grad(&grads).expect("dx").into_data()),
                flat(alpha.grad(&grads).expect("dalpha").into_data()),
            )
        };
        let (ours, burns) = (run(true), run(false));
        assert_eq!(ours.0, burns.0, "the forward pass is burn's to the bit");
        assert_eq!(ours.1, burns.1, "dX is burn's to the bit");
        let pixels = h * w;
        for (ch, (&got, &theirs)) in ours.2.iter().zip(&burns.2).enumerate() {
            let mut want = 0f64;
            for image in 0..b {
                for p in 0..pixels {
                    let at = (image * c + ch) * pixels + p;
                    if x_values[at] < 0.0 {
                        want += f64::from(w_values[at]) * f64::from(x_values[at]);
                    }
                }
            }
            assert!((f64::from(got) - want).abs() < 1e-4, "channel {ch}: {got} vs {want}");
            assert!((got - theirs).abs() < 1e-4, "channel {ch}: {got} vs burn's {theirs}");
        }
    }

    #[test]
    fn the_slope_gradient_is_the_same_bits_on_one_thread_and_on_four() {
        let (b, c, pixels) = (9, 5, 301);
        let (x, g) = (values(b * c * pixels, 3), values(b * c * pixels, 4));
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
            pool.install(|| slope_grad(&x, &g, (b, c, pixels)).iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(on(1), on(4));
    }
}
