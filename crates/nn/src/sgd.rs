//! SGD with momentum and weight decay as one pass per parameter, in place, on the CPU backend.
//!
//! burn's `Sgd` builds the update from seven tensor ops (decay, its sum with the gradient, the
//! dampening factor, momentum, their sum, the rate, the step), each a single-threaded pass over
//! the parameter into a fresh buffer: about 60 ms of SphereFace-20's step (22 M parameters).
//! Here each parameter is one parallel pass that reads the parameter, its gradient and its
//! velocity and overwrites the parameter and the velocity. Every value goes through the same
//! f32 operations in the same order as burn's, so the bits are burn's (a test checks), and the
//! velocity is recorded under burn's names, so a checkpoint written by either resumes in the
//! other.

use crate::matrix::{vector_paths, Real};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::optim::{join_path, LearningRate, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{DType, Device, Tensor};

/// The update's constants: `momentum` and `decay` (the L2 penalty), as burn's `Momentum` and
/// `WeightDecay` hold them, with no dampening and no Nesterov step.
#[derive(Debug, Clone, Copy)]
pub struct Sgd {
    /// The velocity's factor.
    pub momentum: f32,
    /// The weight decay's penalty.
    pub decay: f32,
}

/// One parameter's velocity (its momentum buffer), recorded as burn's `SgdState` records it:
/// `{id}.momentum.velocity`.
#[derive(Clone)]
pub struct Velocity<const D: usize>(Tensor<D>);

impl<const D: usize> RecordState for Velocity<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(&join_path(prefix, "momentum"), "velocity", self.0.clone().into_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let data = src.take_tensor(&join_path(prefix, "momentum"), "velocity")?;
        (data.shape().len() == D).then(|| Velocity(Tensor::from_data(data, device)))
    }
}

impl Optimizer for Sgd {
    type State<const D: usize> = Velocity<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Velocity<D>>,
    ) -> (Tensor<D>, Option<Velocity<D>>) {
        let rates = Rates {
            lr: lr as f32,
            momentum: self.momentum,
            decay: self.decay,
        };
        let on_flex = tensor.device() == Device::flex();
        let (p, g, v) = (tensor.into_dispatch(), grad.into_dispatch(), state.map(|v| v.0.into_dispatch()));
        let (p, v) = match (on_flex, v) {
            (true, None) => <Dispatch as SphereSgd>::sgd_first(p, g, rates.lr, rates.decay),
            (true, Some(v)) => <Dispatch as SphereSgd>::sgd_next(p, g, v, rates.lr, rates.momentum, rates.decay),
            // The extension covers flex only; elsewhere burn's ops, in the same order.
            (false, v) => by_ops::<Dispatch>(p, g, v, rates),
        };
        (Tensor::from_dispatch(p), Some(Velocity(Tensor::from_dispatch(v))))
    }

    fn to_device<const D: usize>(state: Velocity<D>, device: &Device) -> Velocity<D> {
        Velocity(state.0.to_device(device))
    }
}

/// The step's three constants, as f32 (burn converts each scalar to the tensor's type).
#[derive(Debug, Clone, Copy)]
struct Rates {
    lr: f32,
    momentum: f32,
    decay: f32,
}

/// The update, per backend: burn's tensor ops by default, one pass in place on flex. Returns
/// (parameter, velocity).
#[backend_extension(Flex)]
pub trait SphereSgd: Backend {
    /// The first step, with no velocity yet: v = p · decay + g, p − v · lr.
    fn sgd_first(p: FloatTensor<Self>, g: FloatTensor<Self>, lr: f32, decay: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        by_ops::<Self>(p, g, None, Rates { lr, momentum: 0.0, decay })
    }
    /// A later step: v' = (p · decay + g) · 1 + v · momentum, p − v' · lr.
    fn sgd_next(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lr: f32,
        momentum: f32,
        decay: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        by_ops::<Self>(p, g, Some(v), Rates { lr, momentum, decay })
    }
}

/// The update from burn's tensor ops, in burn's `Sgd` order (any backend, any dtype).
fn by_ops<B: Backend>(p: FloatTensor<B>, g: FloatTensor<B>, v: Option<FloatTensor<B>>, r: Rates) -> (FloatTensor<B>, FloatTensor<B>) {
    let g = B::float_add(B::float_mul_scalar(p.clone(), r.decay.into()), g);
    let v = match v {
        None => g,
        Some(v) => B::float_add(B::float_mul_scalar(g, 1f32.into()), B::float_mul_scalar(v, r.momentum.into())),
    };
    let delta = B::float_mul_scalar(v.clone(), r.lr.into());
    (B::float_sub(p, delta), v)
}

/// f32 tensors of one shape go through [`in_place`]; anything else through burn's ops.
impl SphereSgd for Flex {
    fn sgd_first(p: FloatTensor<Self>, g: FloatTensor<Self>, lr: f32, decay: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let r = Rates { lr, momentum: 0.0, decay };
        match plain_f32([&p, &g]) {
            true => in_place(p, g, None, r),
            false => by_ops::<Self>(p, g, None, r),
        }
    }

    fn sgd_next(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lr: f32,
        momentum: f32,
        decay: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let r = Rates { lr, momentum, decay };
        match plain_f32([&p, &g, &v]) {
            true => in_place(p, g, Some(v), r),
            false => by_ops::<Self>(p, g, Some(v), r),
        }
    }
}

/// Whether all are f32 of the first one's shape.
fn plain_f32<const N: usize>(tensors: [&FloatTensor<Flex>; N]) -> bool {
    let shape = tensors[0].shape();
    tensors.iter().all(|t| t.dtype() == DType::F32 && t.shape() == shape)
}

/// The update on flex's storage: the parameter and the velocity overwritten (copied first only
/// where another tensor shares their buffer); on the first step the gradient's buffer becomes
/// the velocity.
fn in_place(p: FloatTensor<Flex>, g: FloatTensor<Flex>, v: Option<FloatTensor<Flex>>, r: Rates) -> (FloatTensor<Flex>, FloatTensor<Flex>) {
    let (mut p, g) = (compact(p), compact(g));
    match v {
        None => {
            let mut v = g;
            step_values(p.storage_mut::<f32>(), v.storage_mut::<f32>(), None, r);
            (p, v)
        }
        Some(v) => {
            let mut v = compact(v);
            step_values(p.storage_mut::<f32>(), v.storage_mut::<f32>(), Some(g.storage::<f32>()), r);
            (p, v)
        }
    }
}

/// The tensor with its values as its whole buffer, in order (copied only if they are not).
fn compact(t: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let n = t.shape().num_elements();
    let whole = t.layout().contiguous_offsets() == Some((0, n)) && t.bytes().len() == n * std::mem::size_of::<f32>();
    match whole {
        true => t,
        false => t.to_contiguous(),
    }
}

/// Values a task updates: large enough that a task outweighs its scheduling, small enough that
/// the 44 MB FC1 splits over every core.
const CHUNK: usize = 1 << 15;

/// p and v updated from g in parallel chunks. With `g` given, `v` is the velocity and `g` the
/// gradient; without, `v` holds the gradient and becomes the velocity (the first step).
fn step_values(p: &mut [f32], v: &mut [f32], g: Option<&[f32]>, r: Rates) {
    use rayon::prelude::*;
    assert!(
        p.len() == v.len() && g.is_none_or(|g| g.len() == p.len()),
        "sgd: parameter, gradient and velocity differ in length"
    );
    let chunks = p.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)).enumerate();
    chunks.for_each(|(i, (p, v))| match g {
        None => first_into(p, v, r.lr, r.decay),
        Some(g) => next_into(p, v, &g[i * CHUNK..][..p.len()], [r.lr, r.momentum, r.decay]),
    });
}

vector_paths! {
    /// [`first`] on the CPU's widest vectors.
    fn first_into(p: &mut [T], v: &mut [T], lr: T, decay: T) = first;
}

vector_paths! {
    /// [`next`] on the CPU's widest vectors.
    fn next_into(p: &mut [T], v: &mut [T], g: &[T], rates: [T; 3]) = next;
}

/// v = p · decay + v (v holding the gradient); p = p − v · lr.
#[inline(always)]
fn first<T: Real>(p: &mut [T], v: &mut [T], lr: T, decay: T) {
    for (p, v) in p.iter_mut().zip(v.iter_mut()) {
        *v = *p * decay + *v;
        *p = *p - *v * lr;
    }
}

/// v = (p · decay + g) · 1 + v · momentum; p = p − v · lr. The product by 1 is burn's
/// (1 − dampening) and changes no value; it is kept so the operations are burn's, one for one.
#[inline(always)]
fn next<T: Real>(p: &mut [T], v: &mut [T], g: &[T], [lr, momentum, decay]: [T; 3]) {
    assert!(p.len() == v.len() && g.len() == p.len());
    for ((p, v), &g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
        *v = (*p * decay + g) * T::ONE + *v * momentum;
        *p = *p - *v * lr;
    }
}

#[cfg(test)]
mod tests;
