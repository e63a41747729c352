//! The gradient rules: one `match` over the closed meta-op enum, plus the few high-level ops
//! that carry their own rule.
//!
//! Every rule receives the node's value `out`, its inputs `x` and the gradient `g` flowing into
//! `out` (same shape and dtype as `out`), and returns a gradient for each input that wants one.
//! Rules are built from Tensor ops, so a gradient is itself a lazy meta-op graph that fuses and
//! compiles like the forward pass. They run with gradient recording off.
//!
//! | meta-op | gradient of its inputs |
//! |---|---|
//! | `neg`, `abs`, `recip`, `sqrt`, `exp`, `log` | `-g`, `g·sign(x)` (0 at 0), `-g·out²`, `g/(2·out)` (inf at 0), `g·out`, `g/x` |
//! | `sin`, `cos`, `tanh`, `sigmoid`, `erf` | `g·cos x`, `-g·sin x`, `g·(1-out²)`, `g·out·(1-out)`, `g·2/√π·e^(-x²)` |
//! | `floor`, `ceil`, `round` | 0 |
//! | `add`, `sub`, `mul`, `div` | `g, g`; `g, -g`; `g·b, g·a`; `g/b, -g·a/b²` |
//! | `pow` | `g·b·a^(b-1)` (0 where `b == 0`); `g·out·ln a` (0 where `a == 0`, `b >= 0`) |
//! | `max`, `min` (maximum/minimum) | the larger (smaller) side gets `g`, each side `g/2` at an exact tie, both `g` where either is NaN |
//! | `mod` (remainder) | `g`; `-g·floor(a/b)` |
//! | `where(c, a, b)` | `where(c, g, 0)`, `where(c, 0, g)` |
//! | `cast` (float → float) | `g` cast back |
//! | `broadcast` | `reduce(sum)` over the new axes |
//! | `reindex` | `reindex_reduce(sum)` with the same index map and extras; for an injective affine map (transpose, permute, slice, narrow, pad, flip, squeeze) the equivalent gather by the inverse map, which fuses |
//! | `reduce sum` | `g` broadcast back |
//! | `reduce prod` | `g·out/x` without zeros; with one zero, the product of the others at the zero and 0 elsewhere; 0 with two or more |
//! | `reduce max`/`min` | `g` split evenly among the elements equal to the result; NaN counts as equal to a NaN result (PyTorch's `max()`; its `amax(dim)` gives NaN to the whole group there) |
//! | `reindex_reduce sum` | `reindex` of `g` with the same map (0 where skipped) |
//! | `reindex_reduce max`/`min`/`prod` | as `reduce`, with `reindex` gathering the result, `g` and the counts |
//! | `reshape`, `contiguous` | `g` reshaped, `g` |
//!
//! Comparisons, logic, integer and bool results are not differentiable (never recorded).
//!
//! High-level ops whose PyTorch gradient at a corner point does not come out of these rules are
//! lowered so that it does (relu as `where(x <= 0, 0, x)`, clamp as a `where` on the in-range
//! mask, `max(dim)` as a gather at the returned index, softplus with the double-`where`
//! pattern, logsumexp with its shift detached — see their docs), except `log1p` and `expm1`,
//! which declare their own rule (`Custom`): the chain rule through their accurate lowerings is
//! NaN at points where PyTorch gives a finite value or inf.

use metajit_metaops::{
    BinaryOp, DType, IdxBin, IndexExpr, IndexMap, Op, ReduceOp, Scalar, Shape, UnaryOp,
};

use crate::tensor::Tensor;

/// A high-level op that declares its own gradient, because the chain rule through its lowering
/// cannot give PyTorch's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Custom {
    /// `log1p(x)`: lowered with Kahan's correction `log(w)·x/(w-1)`, whose chain rule is
    /// NaN at `x = -1` and where `w` rounds to 1 or overflows; the rule is `g / (1 + x)`.
    Log1p,
    /// `expm1(x)`: lowered with the correction `(w-1)·x/log(w)`, same trouble; the rule is
    /// `g · (out + 1)`, as PyTorch.
    Expm1,
    /// A result that is piecewise constant in its input (`sign`) or reads none of it (a
    /// reduction over an empty axis): built without a differentiable path, its gradient is
    /// zero, and PyTorch still gives one (rather than "does not require grad").
    Zero,
    /// `x.to(device)`: the value copied to another device; the gradient goes back to the
    /// input's device, `Device` here.
    ToDevice(crate::config::Device),
}

/// How a node's gradient is computed.
#[derive(Clone, Debug)]
pub(crate) enum Rule {
    /// By the rule of its meta-op.
    Meta(Op),
    /// By a high-level op's declared rule.
    Custom(Custom),
}

/// `g` where `mask`, else 0.
fn masked(mask: &Tensor, g: &Tensor) -> Tensor {
    Tensor::where_(mask, g, 0.0)
}

/// The gradients of a node's inputs (`None` where `want` is false or the input is not
/// differentiable).
pub(crate) fn input_grads(
    rule: &Rule,
    out: &Tensor,
    x: &[Tensor],
    g: &Tensor,
    want: &[bool],
) -> Vec<Option<Tensor>> {
    let mut r: Vec<Option<Tensor>> = vec![None; x.len()];
    let wants = |k: usize| want.get(k).copied().unwrap_or(false) && x[k].dtype().is_float();
    match rule {
        Rule::Custom(Custom::Log1p) => {
            if wants(0) {
                r[0] = Some(g.div(&x[0].add(1.0)));
            }
        }
        Rule::Custom(Custom::Expm1) => {
            if wants(0) {
                r[0] = Some(g.mul(&out.add(1.0)));
            }
        }
        Rule::Custom(Custom::ToDevice(device)) => {
            if wants(0) {
                r[0] = Some(g.to(*device).unwrap_or_else(|e| {
                    panic!("backward of to: copying the gradient back to {device} failed: {e}")
                }));
            }
        }
        Rule::Custom(Custom::Zero) => {
            if wants(0) {
                r[0] = Some(x[0].zeros_like());
            }
        }
        Rule::Meta(op) => match op {
            Op::Input { .. } | Op::Const(_) | Op::Index { .. } | Op::Random { .. } => {}
            Op::Unary(u) => {
                if wants(0) {
                    r[0] = Some(unary(*u, &x[0], out, g));
                }
            }
            Op::Binary(b) => {
                let (ga, gb) = binary(*b, &x[0], &x[1], out, g, [wants(0), wants(1)]);
                r[0] = ga;
                r[1] = gb;
            }
            Op::Where => {
                if wants(1) {
                    r[1] = Some(masked(&x[0], g));
                }
                if wants(2) {
                    r[2] = Some(Tensor::where_(&x[0], 0.0, g));
                }
            }
            Op::Cast(_) => {
                if wants(0) {
                    r[0] = Some(g.cast(x[0].dtype()));
                }
            }
            Op::BroadcastTo { axes } => {
                if wants(0) {
                    let s =
                        g.reduce_raw("backward of broadcast", ReduceOp::Sum, axes.clone(), false);
                    r[0] = Some(s.view_as(x[0].shape().clone()));
                }
            }
            Op::Reindex(map) => {
                if wants(0) {
                    r[0] = Some(match invert(map, x.len() - 1, g.shape()) {
                        // An injective map (transpose, slice, pad, flip, ...): each input
                        // element gets the gradient of at most one output element, so the
                        // gradient is a gather that fuses into its consumer.
                        Some((exprs, conds)) => g.reindex_raw(
                            x[0].shape().clone(),
                            exprs,
                            Scalar::zero(g.dtype()),
                            conds,
                            &[],
                        ),
                        None => {
                            let extras: Vec<&Tensor> = x[1..].iter().collect();
                            g.reindex_reduce_raw(
                                ReduceOp::Sum,
                                x[0].shape().clone(),
                                map.exprs.clone(),
                                map.conds.clone(),
                                &extras,
                            )
                        }
                    });
                }
            }
            Op::Reduce { op, axes, keepdims } => {
                if wants(0) {
                    r[0] = reduce(*op, axes, *keepdims, &x[0], out, g);
                }
            }
            Op::ReindexReduce { op, map } => {
                if wants(0) {
                    r[0] = reindex_reduce(*op, map, x, out, g);
                }
            }
            Op::Reshape => {
                if wants(0) {
                    r[0] = Some(g.view_as(x[0].shape().clone()));
                }
            }
            Op::Contiguous => {
                if wants(0) {
                    r[0] = Some(g.clone());
                }
            }
        },
    }
    r
}

fn unary(u: UnaryOp, x: &Tensor, out: &Tensor, g: &Tensor) -> Tensor {
    match u {
        UnaryOp::Neg => g.neg(),
        // sign(0) = 0: abs'(0) = 0, as PyTorch.
        UnaryOp::Abs => g.mul(&x.sign()),
        UnaryOp::Recip => g.neg().mul(&out.mul(out)),
        // 1/(2·0) = inf: sqrt'(0) = inf, as PyTorch.
        UnaryOp::Sqrt => g.div(&out.mul(2.0)),
        UnaryOp::Exp => g.mul(out),
        UnaryOp::Log => g.div(x),
        UnaryOp::Sin => g.mul(&x.cos()),
        UnaryOp::Cos => g.mul(&x.sin().neg()),
        UnaryOp::Tanh => g.mul(&out.mul(out).neg().add(1.0)),
        UnaryOp::Sigmoid => g.mul(&out.neg().add(1.0)).mul(out),
        UnaryOp::Erf => g
            .mul(2.0 / std::f64::consts::PI.sqrt())
            .mul(&x.mul(x).neg().exp()),
        UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => g.zeros_like(),
        UnaryOp::Not => unreachable!("not is not differentiable (integer or bool)"),
    }
}

fn binary(
    op: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    g: &Tensor,
    want: [bool; 2],
) -> (Option<Tensor>, Option<Tensor>) {
    let ga = |f: &dyn Fn() -> Tensor| want[0].then(f);
    let gb = |f: &dyn Fn() -> Tensor| want[1].then(f);
    match op {
        BinaryOp::Add => (ga(&|| g.clone()), gb(&|| g.clone())),
        BinaryOp::Sub => (ga(&|| g.clone()), gb(&|| g.neg())),
        BinaryOp::Mul => (ga(&|| g.mul(b)), gb(&|| g.mul(a))),
        // PyTorch's -g·(a/b)/b, which overflows later than -g·a/b².
        BinaryOp::Div => (ga(&|| g.div(b)), gb(&|| g.neg().mul(&a.div(b)).div(b))),
        BinaryOp::Pow => (
            // PyTorch: (b · a^(b-1)) masked to 0 where b == 0 (so 0^0 has gradient 0).
            ga(&|| {
                let d = g.mul(b).mul(&a.pow(&b.sub(1.0)));
                Tensor::where_(&b.eq(0.0), 0.0, &d)
            }),
            // PyTorch: out · ln(a), masked to 0 where a == 0 and b >= 0.
            gb(&|| {
                let d = g.mul(out).mul(&a.log());
                Tensor::where_(&a.eq(0.0).logical_and(&b.ge(0.0)), 0.0, &d)
            }),
        ),
        BinaryOp::Max | BinaryOp::Min => {
            // PyTorch's maximum/minimum: g/2 to each side at an exact tie; the losing side
            // gets 0; where either is NaN no comparison holds, so both get g.
            let half = || Tensor::where_(&a.eq(b), &g.mul(0.5), g);
            let (lose_a, lose_b) = if op == BinaryOp::Max {
                (a.lt(b), a.gt(b))
            } else {
                (a.gt(b), a.lt(b))
            };
            (
                ga(&|| Tensor::where_(&lose_a, 0.0, &half())),
                gb(&|| Tensor::where_(&lose_b, 0.0, &half())),
            )
        }
        // remainder(a, b) = a - floor(a/b)·b.
        BinaryOp::Mod => (ga(&|| g.clone()), gb(&|| g.neg().mul(&a.div(b).floor()))),
        BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Eq
        | BinaryOp::Ne
        | BinaryOp::And
        | BinaryOp::Or
        | BinaryOp::Xor => (None, None),
    }
}

/// `t` (of the reduced shape) back at the input's shape: reduced axes re-inserted as 1s, then
/// broadcast.
fn unreduce(t: &Tensor, axes: &[usize], keepdims: bool, shape: &Shape) -> Tensor {
    let kept: Vec<usize> = (0..shape.rank())
        .map(|a| {
            if axes.contains(&a) {
                1
            } else {
                shape.dims()[a]
            }
        })
        .collect();
    let t = if keepdims {
        t.clone()
    } else {
        t.view_as(Shape::new(kept))
    };
    t.broadcast_as("backward of reduce", shape)
}

fn reduce(
    op: ReduceOp,
    axes: &[usize],
    keepdims: bool,
    x: &Tensor,
    out: &Tensor,
    g: &Tensor,
) -> Option<Tensor> {
    let shape = x.shape();
    let back = |t: &Tensor| unreduce(t, axes, keepdims, shape);
    let sum_kept =
        |t: &Tensor| t.reduce_raw("backward of reduce", ReduceOp::Sum, axes.to_vec(), true);
    match op {
        ReduceOp::Sum => Some(back(g)),
        ReduceOp::Prod => {
            let zero = x.eq(0.0);
            let count = sum_kept(&zero.cast(x.dtype())).broadcast_as("backward of prod", shape);
            let others = Tensor::where_(&zero, 1.0, x)
                .reduce_raw("backward of prod", ReduceOp::Prod, axes.to_vec(), true)
                .broadcast_as("backward of prod", shape);
            Some(back(g).mul(&prod_factor(x, &back(out), &count, &others)))
        }
        ReduceOp::Max | ReduceOp::Min => {
            let outb = back(out);
            let hit = x
                .eq(&outb)
                .logical_or(&x.isnan().logical_and(&outb.isnan()));
            let count = sum_kept(&hit.cast(x.dtype())).broadcast_as("backward of reduce", shape);
            Some(masked(&hit, &back(g).div(&count)))
        }
        ReduceOp::And | ReduceOp::Or => None,
    }
}

/// The factor of a product's gradient: `out/x` when the group has no zero; at a lone zero the
/// product of the others; 0 elsewhere (PyTorch's `prod_backward`).
fn prod_factor(x: &Tensor, out: &Tensor, zeros: &Tensor, others: &Tensor) -> Tensor {
    let no_zero = out.div(x);
    let at_lone_zero = Tensor::where_(&x.eq(0.0).logical_and(&zeros.eq(1.0)), others, 0.0);
    Tensor::where_(&zeros.eq(0.0), &no_zero, &at_lone_zero)
}

fn reindex_reduce(
    op: ReduceOp,
    map: &IndexMap,
    x: &[Tensor],
    out: &Tensor,
    g: &Tensor,
) -> Option<Tensor> {
    let src = &x[0];
    let extras: Vec<&Tensor> = x[1..].iter().collect();
    let shape = src.shape().clone();
    // Reads a tensor of the output's shape at each source element's target (`fill` where the
    // element was skipped).
    let gather = |t: &Tensor, fill: Scalar| {
        t.reindex_raw(
            shape.clone(),
            map.exprs.clone(),
            fill,
            map.conds.clone(),
            &extras,
        )
    };
    let scatter_sum = |t: &Tensor| {
        t.reindex_reduce_raw(
            ReduceOp::Sum,
            out.shape().clone(),
            map.exprs.clone(),
            map.conds.clone(),
            &extras,
        )
    };
    let dt = src.dtype();
    let zero = Scalar::zero(dt);
    let g_at = gather(g, zero);
    match op {
        ReduceOp::Sum => Some(g_at),
        ReduceOp::And | ReduceOp::Or => None,
        _ => {
            // Which source elements reached the output at all.
            let reached = gather(
                &Tensor::constant(Scalar::Bool(true), Shape::scalar())
                    .broadcast_as("backward of reindex_reduce", out.shape()),
                Scalar::Bool(false),
            );
            let out_at = gather(out, zero);
            let grad = if op == ReduceOp::Prod {
                let is_zero = src.eq(0.0);
                let zeros = gather(&scatter_sum(&is_zero.cast(dt)), zero);
                let others = gather(
                    &Tensor::where_(&is_zero, 1.0, src).reindex_reduce_raw(
                        ReduceOp::Prod,
                        out.shape().clone(),
                        map.exprs.clone(),
                        map.conds.clone(),
                        &extras,
                    ),
                    Scalar::one(dt),
                );
                g_at.mul(&prod_factor(src, &out_at, &zeros, &others))
            } else {
                let hit = src
                    .eq(&out_at)
                    .logical_or(&src.isnan().logical_and(&out_at.isnan()));
                let count = gather(&scatter_sum(&hit.cast(dt)), Scalar::one(dt));
                masked(&hit, &g_at.div(&count))
            };
            Some(masked(&reached, &grad))
        }
    }
}

/// `e = c·i<j> + u` with `u` uniform: `(j, c, u)`.
fn affine(e: &IndexExpr) -> Option<(usize, i64, IndexExpr)> {
    use IdxBin::{Add, Mul, Sub};
    match e {
        IndexExpr::Idx(j) => Some((*j, 1, IndexExpr::Const(0))),
        IndexExpr::Bin(op @ (Add | Sub), a, b) => {
            if b.is_uniform() {
                let (j, c, u) = affine(a)?;
                Some((j, c, IndexExpr::bin(*op, u, (**b).clone())))
            } else if a.is_uniform() {
                let (j, c, u) = affine(b)?;
                match op {
                    Add => Some((j, c, IndexExpr::bin(Add, (**a).clone(), u))),
                    _ => Some((j, -c, IndexExpr::bin(Sub, (**a).clone(), u))),
                }
            } else {
                None
            }
        }
        IndexExpr::Bin(Mul, a, b) => {
            let (k, inner) = match (&**a, &**b) {
                (IndexExpr::Const(k), e) | (e, IndexExpr::Const(k)) => (*k, e),
                _ => return None,
            };
            let (j, c, u) = affine(inner)?;
            let c = c.checked_mul(k)?;
            (c != 0).then(|| (j, c, IndexExpr::bin(Mul, u, IndexExpr::Const(k))))
        }
        _ => None,
    }
}

/// `e` with the iteration and target extents swapped (the inverse map's point of view).
fn swap_dims(e: &IndexExpr) -> IndexExpr {
    match e {
        IndexExpr::IterDim(k) => IndexExpr::TargetDim(*k),
        IndexExpr::TargetDim(k) => IndexExpr::IterDim(*k),
        IndexExpr::Bin(op, a, b) => IndexExpr::bin(*op, swap_dims(a), swap_dims(b)),
        IndexExpr::Select(c, a, b) => IndexExpr::select(swap_dims(c), swap_dims(a), swap_dims(b)),
        IndexExpr::Extra(k, ix) => IndexExpr::Extra(*k, ix.iter().map(swap_dims).collect()),
        other => other.clone(),
    }
}

/// The inverse of a `Reindex` map that sends distinct output elements to distinct input
/// elements: each input axis reads `c·i<j> + u` (`c != 0`, `u` uniform) for a distinct output
/// axis `j`, or a uniform coordinate; output axes read by no input axis have extent 1; no
/// conditions and no extras. The result maps an input element `t` back to the output element
/// that read it (`(t - u) / c` per axis), with conditions where none did (`c` does not divide
/// `t - u`, or `t` differs from a uniform coordinate): the inverse's expressions and
/// conditions. Out-of-range results read 0.
fn invert(map: &IndexMap, extras: usize, out: &Shape) -> Option<(Vec<IndexExpr>, Vec<IndexExpr>)> {
    use IdxBin::{Div, Mod, Ne, Sub};
    if extras > 0 || !map.conds.is_empty() {
        return None;
    }
    let mut exprs: Vec<Option<IndexExpr>> = vec![None; out.rank()];
    let mut conds = Vec::new();
    for (a, e) in map.exprs.iter().enumerate() {
        let t = IndexExpr::Idx(a);
        if e.is_uniform() {
            conds.push(IndexExpr::bin(Ne, t, swap_dims(e)));
            continue;
        }
        let (j, c, u) = affine(e)?;
        if exprs[j].is_some() {
            return None;
        }
        let u = swap_dims(&u);
        exprs[j] = Some(match c {
            1 => IndexExpr::bin(Sub, t, u),
            -1 => IndexExpr::bin(Sub, u, t),
            c => {
                let d = IndexExpr::bin(Sub, t, u);
                conds.push(IndexExpr::bin(
                    Ne,
                    IndexExpr::bin(Mod, d.clone(), IndexExpr::Const(c)),
                    IndexExpr::Const(0),
                ));
                IndexExpr::bin(Div, d, IndexExpr::Const(c))
            }
        });
    }
    let exprs = exprs
        .into_iter()
        .enumerate()
        .map(|(j, e)| match e {
            Some(e) => Some(e),
            // An output axis no input axis reads is a broadcast: invertible only at extent 1.
            None => (out.dims()[j] == 1).then_some(IndexExpr::Const(0)),
        })
        .collect::<Option<Vec<_>>>()?;
    Some((exprs, conds))
}

/// Whether nodes of `dtype` can carry a gradient.
pub(crate) fn differentiable(dtype: DType) -> bool {
    dtype.is_float()
}
