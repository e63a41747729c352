//! Constant folding and exact algebraic identities.
//!
//! Requires: a verified graph. Guarantees: no `Unary`, `Binary`, `Cast`, `BroadcastTo`,
//! `Reshape`, `Contiguous` or `Reduce` max/min/all/any node reads only `Const` nodes (each became
//! one `Const` of its shape, holding exactly what the interpreter computes, with NaN canonicalised
//! to the quiet NaN the printer writes as `nan`); no node matches an identity below. Every rewrite
//! is exact in IEEE semantics, for every input including NaN, ±0 and ±inf, so `x*0`, `x+0.0`,
//! `x-(-0.0)`, reduce sum/prod of a constant and `cast(cast(x))` are left alone.
//!
//! Nodes only become `Const`s or aliases of earlier nodes; the constants they read are left for
//! dead-code removal.

use half::{bf16, f16};

use super::{Pass, Rewrite, changed, rebuild};
use crate::dtype::{DType, Scalar};
use crate::graph::{Graph, Node, NodeId};
use crate::interp::{eval_binary, eval_unary};
use crate::op::{BinaryOp, Op, ReduceOp, UnaryOp};

/// The constant-folding pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold constants"
    }

    fn run(&self, g: &Graph) -> Option<Graph> {
        let new = rebuild(g, |ng, _, n| {
            if let Some(v) = fold_const(ng, &n) {
                // The interpreter fixes each op's result dtype; a mismatch would be its bug, and
                // leaving the node alone is always correct.
                debug_assert_eq!(v.dtype(), n.dtype, "folding {n:?}");
                if v.dtype() == n.dtype {
                    return Rewrite::Keep(Node {
                        op: Op::Const(canonical_nan(v)),
                        inputs: Vec::new(),
                        dtype: n.dtype,
                        shape: n.shape,
                    });
                }
            }
            match identity(ng, &n) {
                Some(x) => Rewrite::Alias(x),
                None => Rewrite::Keep(n),
            }
        });
        changed(g, new)
    }
}

/// The value of node `id` of `g` when it is a `Const`.
fn konst(g: &Graph, id: Option<&NodeId>) -> Option<Scalar> {
    match g.node(*id?).op {
        Op::Const(v) => Some(v),
        _ => None,
    }
}

/// The single value of `n` when all its inputs are constants and the op can be evaluated once.
fn fold_const(g: &Graph, n: &Node) -> Option<Scalar> {
    let x = || konst(g, n.inputs.first());
    match &n.op {
        Op::Unary(op) => Some(eval_unary(*op, x()?)),
        Op::Binary(op) => Some(eval_binary(*op, x()?, konst(g, n.inputs.get(1))?)),
        Op::Cast(d) => Some(x()?.cast(*d)),
        // Layout and broadcasting do not change a uniform value.
        Op::BroadcastTo { .. } | Op::Reshape | Op::Contiguous => x(),
        // A reindex of a uniform value yields it, or the overflow value: the same when equal.
        Op::Reindex(map) => x().filter(|&v| v == map.overflow),
        // max/min of copies of v is v (the verifier rules out empty max/min reductions).
        Op::Reduce {
            op: ReduceOp::Max | ReduceOp::Min,
            ..
        } => x(),
        // all/any of copies of v is v, or the identity when nothing is reduced.
        Op::Reduce {
            op: op @ (ReduceOp::And | ReduceOp::Or),
            axes,
            ..
        } => {
            let input = g.node(*n.inputs.first()?);
            let empty = axes.iter().any(|&a| input.shape.0.get(a) == Some(&0));
            if empty {
                Some(op.identity(n.dtype))
            } else {
                x()
            }
        }
        // Sums and products round differently depending on the count and order: not folded.
        _ => None,
    }
}

/// An earlier node that `n` equals for every input, by an exact identity.
fn identity(g: &Graph, n: &Node) -> Option<NodeId> {
    let input = |k: usize| n.inputs.get(k).copied();
    let is = |k: usize, v: Scalar| konst(g, n.inputs.get(k)) == Some(v);
    let (dt, float) = (n.dtype, n.dtype.is_float());
    let (one, zero) = (Scalar::one(dt), Scalar::zero(dt));
    let neg_zero = Scalar::from_f64(-0.0, dt);
    let op_of = |k: usize| input(k).map(|i| &g.node(i).op);
    match &n.op {
        Op::Binary(BinaryOp::Mul) if is(1, one) => input(0), // x*1 -> x (bool: x&true)
        Op::Binary(BinaryOp::Mul) if is(0, one) => input(1), // 1*x -> x
        Op::Binary(BinaryOp::Div) if is(1, one) => input(0), // x/1 -> x (true or floor division)
        Op::Binary(BinaryOp::Add) if float && is(1, neg_zero) => input(0), // x+(-0.0) -> x
        Op::Binary(BinaryOp::Add) if float && is(0, neg_zero) => input(1), // (-0.0)+x -> x
        Op::Binary(BinaryOp::Add) if !float && is(1, zero) => input(0), // x+0 -> x (ints; bool: x|false)
        Op::Binary(BinaryOp::Add) if !float && is(0, zero) => input(1), // 0+x -> x
        Op::Binary(BinaryOp::Sub) if is(1, zero) => input(0), // x-0 -> x (floats: +0.0 only)
        Op::Where if is(0, Scalar::Bool(true)) => input(1),   // where(true, a, b) -> a
        Op::Where if is(0, Scalar::Bool(false)) => input(2),  // where(false, a, b) -> b
        Op::Where if input(1) == input(2) => input(1),        // where(c, a, a) -> a
        Op::Unary(UnaryOp::Neg) if op_of(0) == Some(&Op::Unary(UnaryOp::Neg)) => {
            g.node(input(0)?).inputs.first().copied() // neg(neg(x)) -> x (wrapping for ints)
        }
        Op::Unary(UnaryOp::Not) if op_of(0) == Some(&Op::Unary(UnaryOp::Not)) => {
            g.node(input(0)?).inputs.first().copied() // not(not(x)) -> x
        }
        Op::Cast(d) if input(0).map(|i| g.node(i).dtype) == Some(*d) => input(0), // cast(x: d, d) -> x
        Op::Reduce { axes, .. } if axes.is_empty() => input(0), // reduce over no axes -> x (a copy)
        _ => None,
    }
}

/// Replaces any NaN by the canonical quiet NaN of its dtype (the value `nan` parses to).
fn canonical_nan(v: Scalar) -> Scalar {
    if !v.is_nan() {
        return v;
    }
    match v.dtype() {
        DType::F16 => Scalar::F16(f16::NAN),
        DType::BF16 => Scalar::BF16(bf16::NAN),
        DType::F32 => Scalar::F32(f32::NAN),
        _ => Scalar::F64(f64::NAN),
    }
}
