//! The networks' two dense products — FC1 (x · W) and the classifier head (features · W) — as
//! an operation of our own on the CPU backend, so that their sums run as `products.rs` runs
//! them: one order on every vector path and every cache size. burn-flex's matmul goes through
//! the `gemm` crate, which blocks k by the L1 cache it detects, so FC1's 21,504-long sums
//! (SphereFace-20) came out differently from one machine to another.

use crate::conv::{on_values, Kernel};
use crate::matrix::{filled_by_chunks, Real};
use crate::products::{product, product_with_transposed_rows, Isa, Layout};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::tensor::{Device, Tensor};

/// The operation, per backend: burn's own ops by default, our products on flex, and the
/// backward pass routed through the same products under autodiff.
#[backend_extension(Flex, Autodiff)]
pub trait SphereDense: Backend {
    /// a [m, k] · b [k, n].
    fn dense(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(a, b)
    }
    /// g [m, n] · bᵀ: the gradient of [`SphereDense::dense`] with respect to `a`.
    fn dense_grad_a(g: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(g, Self::float_transpose(b))
    }
    /// aᵀ · g [m, n]: the gradient of [`SphereDense::dense`] with respect to `b`.
    fn dense_grad_b(a: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(Self::float_transpose(a), g)
    }
}

fn dims2(t: &FloatTensor<Flex>) -> [usize; 2] {
    let s = t.layout().shape();
    [s[0], s[1]]
}

/// Each method falls back to burn's own ops for a dtype other than f32 and f64.
impl SphereDense for Flex {
    fn dense(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let ([m, k], [_, n]) = (dims2(&a), dims2(&b));
        on_values([&a, &b], [m, n], Product::Plain { m, k, n }).unwrap_or_else(|| Self::float_matmul(a, b))
    }

    fn dense_grad_a(g: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let ([m, n], [k, _]) = (dims2(&g), dims2(&b));
        on_values([&g, &b], [m, k], Product::GradA { m, k, n }).unwrap_or_else(|| Self::float_matmul(g, Self::float_transpose(b)))
    }

    fn dense_grad_b(a: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let ([m, k], [_, n]) = (dims2(&a), dims2(&g));
        on_values([&a, &g], [k, n], Product::GradB { m, k, n }).unwrap_or_else(|| Self::float_matmul(Self::float_transpose(a), g))
    }
}

/// The three products, for (m, k, n) the forward product's sizes.
enum Product {
    /// a [m × k] · b [k × n].
    Plain { m: usize, k: usize, n: usize },
    /// g [m × n] · bᵀ, b being [k × n].
    GradA { m: usize, k: usize, n: usize },
    /// aᵀ · g, a being [m × k] and g [m × n].
    GradB { m: usize, k: usize, n: usize },
}

/// Rows of the weight gradient one task computes: FC1's 21,504 make 21 tasks.
const GRAD_B_ROWS: usize = 1024;

impl Kernel for Product {
    fn run<T: Real>(&self, v: &[&[T]]) -> Vec<T> {
        let isa = Isa::best();
        match *self {
            Product::Plain { m, k, n } => {
                let mut out = vec![T::default(); m * n];
                product(isa, &mut out, v[0], (v[1], Layout::RowMajor), (m, k, n), false);
                out
            }
            Product::GradA { m, k, n } => {
                // bᵀ [n × k] is b [k × n] read as a transpose.
                let mut out = vec![T::default(); m * k];
                product(isa, &mut out, v[0], (v[1], Layout::Transposed), (m, n, k), false);
                out
            }
            Product::GradB { m, k, n } => {
                // aᵀ [k × m] · g [m × n], aᵀ read from a where it lies; FC1's [21,504 × 512]
                // in blocks of rows on every core (each sum is one chain, however cut).
                filled_by_chunks(k * n, GRAD_B_ROWS * n, |i, out| {
                    let rows = out.len() / n.max(1);
                    product_with_transposed_rows(isa, out, (v[0], k, i * GRAD_B_ROWS), v[1], (rows, m, n));
                })
            }
        }
    }
}

/// The backward pass of [`SphereDense::dense`].
#[derive(Debug)]
struct DenseBackward;

impl<B: Backend + SphereDense> Backward<B, 2> for DenseBackward {
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let (a, b) = ops.state;
        let a = checkpointer.retrieve_node_output::<FloatTensor<B>>(a);
        let b = checkpointer.retrieve_node_output::<FloatTensor<B>>(b);
        if let Some(node) = node_a {
            grads.register::<B>(node.id, B::dense_grad_a(g.clone(), b));
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, B::dense_grad_b(a, g));
        }
    }
}

impl<B: Backend + SphereDense, C: CheckpointStrategy> SphereDense for Autodiff<B, C> {
    fn dense(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        match DenseBackward.prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&a), prep.checkpoint(&b));
                prep.finish(state, B::dense(a.into_primitive(), b.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::dense(a.into_primitive(), b.into_primitive())),
        }
    }
}

/// a [m, k] · b [k, n]: our products on the CPU backend, burn's matmul elsewhere.
pub fn dense(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    if a.device() != Device::flex() {
        return a.matmul(b);
    }
    Tensor::from_dispatch(<Dispatch as SphereDense>::dense(a.into_dispatch(), b.into_dispatch()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn tensor(rows: usize, cols: usize, seed: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) / 1000.0)
            .collect()
    }

    #[test]
    fn the_product_and_its_gradients_match_burns_matmul() {
        // The second shape's weight gradient has more rows than one task computes.
        for (m, k, n) in [(5, 37, 11), (3, 2 * GRAD_B_ROWS + 5, 4)] {
            check_against_burn(m, k, n);
        }
    }

    fn check_against_burn(m: usize, k: usize, n: usize) {
        let d = Device::flex().autodiff();
        let a_data = TensorData::new(tensor(m, k, 1), [m, k]);
        let b_data = TensorData::new(tensor(k, n, 2), [k, n]);
        let w = Tensor::<2>::from_data(TensorData::new(tensor(m, n, 3), [m, n]), &d);
        // Ours, through autodiff: loss = Σ (a·b) ⊙ w, so dL/d(a·b) = w.
        let run = |ours: bool| {
            let a = Tensor::<2>::from_data(a_data.clone(), &d).require_grad();
            let b = Tensor::<2>::from_data(b_data.clone(), &d).require_grad();
            let y = if ours {
                dense(a.clone(), b.clone())
            } else {
                a.clone().matmul(b.clone())
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            let v = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            (v(y), v(a.grad(&grads).unwrap()), v(b.grad(&grads).unwrap()))
        };
        let (ours, burns) = (run(true), run(false));
        for (x, y) in [(&ours.0, &burns.0), (&ours.1, &burns.1), (&ours.2, &burns.2)] {
            assert_eq!(x.len(), y.len());
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
            }
        }
    }
}
