//! The meta-op builders: each records one meta-op node (or none, when the op would be the
//! identity), after the calling op has checked the user-facing rules. High-level ops and the
//! gradient rules ([`crate::autograd`]) build their graphs from these.

use metajit_metaops::{IndexExpr, IndexMap, Op, ReduceOp, Scalar, Shape};

use crate::tensor::{State, Tensor};

impl Tensor {
    /// A tensor of `shape` filled with `value` (its dtype is the value's).
    pub(crate) fn constant(value: Scalar, shape: Shape) -> Tensor {
        Tensor::from_op(Op::Const(value), &[], value.dtype(), shape)
    }

    /// Broadcasts to `target` by the NumPy rule (align at the right; extents equal or 1).
    #[track_caller]
    pub(crate) fn broadcast_as(&self, op: &str, target: &Shape) -> Tensor {
        let (src, r) = (self.shape(), target.rank());
        if src.rank() > r {
            panic!(
                "shape mismatch in {op}: cannot broadcast {src} to {target} (more axes than the target)"
            );
        }
        if src == target {
            return self.clone();
        }
        let off = r - src.rank();
        let mut kept = Vec::new();
        let mut new_axes = Vec::new();
        for (k, &t) in target.dims().iter().enumerate() {
            let s = if k >= off {
                Some(src.dims()[k - off])
            } else {
                None
            };
            match s {
                Some(s) if s == t => kept.push(t),
                Some(1) | None => new_axes.push(k),
                Some(s) => panic!(
                    "shape mismatch in {op}: cannot broadcast {src} to {target} (axis {k}: extent {s} is neither {t} nor 1)"
                ),
            }
        }
        let squeezed = self.view_as(Shape::new(kept));
        Tensor::from_op(
            Op::BroadcastTo { axes: new_axes },
            &[&squeezed],
            self.dtype(),
            target.clone(),
        )
    }

    /// The same elements under a shape with the same element count (a `Reshape` node, or
    /// nothing when the shape is unchanged). A pending reshape of a reshape reads the first
    /// one's input (so `[m, k] -> [m, k, 1] -> [m, k]` is nothing) where no gradient flows
    /// (gradient graphs, `no_grad`): with autograd, the first reshape may be a node someone
    /// differentiates with respect to, or a `detach`.
    pub(crate) fn view_as(&self, shape: Shape) -> Tensor {
        if &shape == self.shape() {
            return self.clone();
        }
        let node = self.node();
        let src = match &*node.lock() {
            State::Lazy {
                op: Op::Reshape,
                inputs,
            } if !node.requires_grad() && !inputs[0].requires_grad() => Some(inputs[0].clone()),
            _ => None,
        };
        if let Some(src) = src {
            return Tensor::from_node(src).view_as(shape);
        }
        Tensor::from_op(Op::Reshape, &[self], self.dtype(), shape)
    }

    /// One `Reduce` node (after the caller's dtype handling).
    #[track_caller]
    pub(crate) fn reduce_raw(
        &self,
        name: &str,
        op: ReduceOp,
        axes: Vec<usize>,
        keepdim: bool,
    ) -> Tensor {
        if matches!(op, ReduceOp::Max | ReduceOp::Min) {
            let empty = axes.iter().find(|&&a| self.dims()[a] == 0);
            if let Some(&a) = empty {
                panic!(
                    "empty reduction in {name}: axis {a} of shape {} has no elements ({name} has no identity; use a reduction with an initial value)",
                    self.shape()
                );
            }
        }
        let shape: Vec<usize> = (0..self.rank())
            .filter_map(|a| match (axes.contains(&a), keepdim) {
                (true, true) => Some(1),
                (true, false) => None,
                (false, _) => Some(self.dims()[a]),
            })
            .collect();
        if axes.is_empty() {
            return self.clone();
        }
        Tensor::from_op(
            Op::Reduce {
                op,
                axes,
                keepdims: keepdim,
            },
            &[self],
            self.dtype(),
            Shape::new(shape),
        )
    }

    /// [`Tensor::reindex_raw`] with no conditions and no extra inputs, for ops that only move
    /// elements (out-of-range coordinates read 0).
    pub(crate) fn reindex_plain(&self, shape: Shape, exprs: Vec<IndexExpr>) -> Tensor {
        self.reindex_raw(shape, exprs, Scalar::zero(self.dtype()), vec![], &[])
    }

    /// One `Reindex` node: output element `i` (of `shape`) reads `self` at `exprs(i)`, one
    /// expression per axis of `self`; out-of-range coordinates or a nonzero condition read
    /// `overflow`. `extras` are the integer tensors that `IndexExpr::Extra(j, ..)` reads.
    #[track_caller]
    pub(crate) fn reindex_raw(
        &self,
        shape: Shape,
        exprs: Vec<IndexExpr>,
        overflow: Scalar,
        conds: Vec<IndexExpr>,
        extras: &[&Tensor],
    ) -> Tensor {
        let mut inputs = vec![self];
        inputs.extend_from_slice(extras);
        Tensor::from_op(
            Op::Reindex(IndexMap {
                exprs,
                overflow,
                conds,
            }),
            &inputs,
            self.dtype(),
            shape,
        )
    }

    /// One `ReindexReduce` node: element `i` of `self` is combined by `op` into the output (of
    /// `shape`) at `exprs(i)`; elements that land outside or where a condition holds are
    /// skipped. `extras` are the integer tensors that `IndexExpr::Extra(j, ..)` reads.
    pub(crate) fn reindex_reduce_raw(
        &self,
        op: ReduceOp,
        shape: Shape,
        exprs: Vec<IndexExpr>,
        conds: Vec<IndexExpr>,
        extras: &[&Tensor],
    ) -> Tensor {
        let mut inputs = vec![self];
        inputs.extend_from_slice(extras);
        Tensor::from_op(
            Op::ReindexReduce {
                op,
                map: IndexMap {
                    exprs,
                    overflow: Scalar::zero(self.dtype()),
                    conds,
                },
            },
            &inputs,
            self.dtype(),
            shape,
        )
    }
}
