//! Recognising contractions: `reduce(sum, mul(view(P), view(Q)))` that is a (batched) matrix
//! product `C[b.., m, n] = Σ_k A[b.., m, k] · B[b.., k, n]`, where `A` and `B` are strided
//! views of two materialised buffers `P` and `Q`. A backend computes such a reduction with one
//! GEMM call (the `gemm` crate on CPU, cuBLAS on CUDA) instead of a generic reduce kernel.
//!
//! This is what `Tensor::matmul` lowers to:
//!
//! ```text
//! %0 = input #0 : f32[4, 3]                       ; P: a of [M, K]
//! %1 = input #1 : f32[3, 5]                       ; Q: b of [K, N]
//! %2 = broadcast %0 axes=[2] : f32[4, 3, 5]       ; A' = a[m, k] over [M, K, N]
//! %3 = broadcast %1 axes=[0] : f32[4, 3, 5]       ; B' = b[k, n] over [M, K, N]
//! %4 = mul %2, %3 : f32[4, 3, 5]
//! %5 = reduce sum %4 axes=[1] : f32[4, 5]         ; C = A @ B
//! ```
//!
//! [`match_contraction`] walks each operand of the `mul` down a chain of *views* —
//! `BroadcastTo`, `Reshape` that only inserts or removes extent-1 axes, and `Reindex` that is a
//! pure axis permutation — to the first node the caller says is materialised. Each axis of the
//! `mul` then reads either one axis of that buffer (with the buffer's row-major stride) or none
//! (broadcast: stride 0). Classifying the axes of the `mul` by which operands read them gives
//! the GEMM structure:
//!
//! | lhs reads | rhs reads | axis is |
//! |---|---|---|
//! | yes | yes | K when it is the reduced axis, else a shared batch axis |
//! | yes | no | M (the last such axis; earlier ones are batch axes broadcast in rhs) |
//! | no | yes | N (the last such axis; earlier ones are batch axes broadcast in lhs) |
//! | no | no | a batch axis broadcast in both (or, at extent 1, nothing) |
//!
//! The result, [`Contraction`], is *symbolic*: extents and strides name graph axes
//! (`(node, axis)` pairs) instead of values, so a plan built for one batch size stays valid for
//! every graph of the same plan key ([`crate::schedule::plan_key`] fixes which extents are 1,
//! and this matcher looks at nothing else about sizes). [`Contraction::layout`] evaluates it
//! against a graph's concrete shapes into a [`GemmLayout`]: `m, n, k`, row/column strides of
//! the destination and both operands, and batch axes with their strides, all in elements.
//!
//! Only f32 and f64 are matched (integer matmuls and f16/bf16 go to the generic reduce kernel,
//! which keeps the interpreter's exact semantics). Whether batch axes can be merged with each
//! other or folded into M or N depends on sizes, so it is decided by [`GemmLayout::simplified`]
//! at run time, not by the matcher.

use crate::dtype::DType;
use crate::expr::{IdxBin, IndexExpr};
use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, Op, ReduceOp};

/// A graph axis, `(node, axis)`: its extent is `g.node(node).shape.dims()[axis]` in whatever
/// graph (of the same plan key) the contraction is evaluated against.
pub type Axis = (NodeId, usize);

/// A symbolic stride in elements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stride {
    /// Stride 0: the operand is broadcast along this axis (or the axis has extent 1).
    Zero,
    /// The product of these axes' extents (the empty product is 1: contiguous). Axes of extent
    /// 1 are left out.
    Product(Vec<Axis>),
    /// A sum of scaled products, `Σ c · Π extents`: an axis that a strided view (a `Reindex`
    /// whose coordinates are sums of scaled iteration indices, see [`linear_terms`]) reads with
    /// a scale, or along several buffer axes at once.
    Sum(Vec<(i64, Vec<Axis>)>),
}

impl Stride {
    /// The stride's value for the shapes of `g`.
    pub fn eval(&self, g: &Graph) -> usize {
        let product = |axes: &[Axis]| -> usize {
            axes.iter()
                .map(|&(n, a)| g.node(n).shape.dims()[a])
                .product()
        };
        match self {
            Stride::Zero => 0,
            Stride::Product(axes) => product(axes),
            Stride::Sum(terms) => terms
                .iter()
                .map(|(c, axes)| *c as usize * product(axes))
                .sum(),
        }
    }
}

/// The row and column strides of one matrix, symbolic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymStrides {
    /// Stride between rows (along M for lhs and dst, along K for rhs).
    pub rs: Stride,
    /// Stride between columns (along K for lhs, along N for rhs and dst).
    pub cs: Stride,
}

/// One batch axis of a contraction: its extent and the stride of each matrix along it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymBatch {
    /// The axis giving the extent (an axis of the `mul` node).
    pub extent: Axis,
    /// Stride of the destination (the reduce node's buffer).
    pub dst: Stride,
    /// Stride of the lhs buffer (`Zero` where lhs is broadcast).
    pub lhs: Stride,
    /// Stride of the rhs buffer (`Zero` where rhs is broadcast).
    pub rhs: Stride,
}

/// A reduction recognised as a (batched) matrix product, described symbolically.
///
/// For every batch index `b` (row-major over [`Contraction::batch`]), `m < M`, `n < N`:
/// `dst[off_dst(b) + m·dst.rs + n·dst.cs] = Σ_{k<K} lhs[off_lhs(b) + m·lhs.rs + k·lhs.cs] ·
/// rhs[off_rhs(b) + k·rhs.rs + n·rhs.cs]`, where `off_x(b) = Σ_j b_j · batch[j].x`, `dst` is the
/// row-major buffer of [`Contraction::output`], and `lhs`/`rhs` are the row-major buffers of
/// [`Contraction::lhs`]/[`Contraction::rhs`]. Every element of `dst` is written exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Contraction {
    /// The `Reduce` node computed (the destination buffer).
    pub output: NodeId,
    /// The element type (f32 or f64) of both sources and the output.
    pub dtype: DType,
    /// The materialised node read as the lhs matrix.
    pub lhs: NodeId,
    /// The materialised node read as the rhs matrix.
    pub rhs: NodeId,
    /// The axis giving M, or `None` when there is no M axis (M = 1).
    pub m: Option<Axis>,
    /// The axis giving N, or `None` when there is no N axis (N = 1).
    pub n: Option<Axis>,
    /// The axis giving K (the reduced axis of the `mul` node).
    pub k: Axis,
    /// Batch axes, outermost first.
    pub batch: Vec<SymBatch>,
    /// Destination strides (rows along M, columns along N).
    pub dst_strides: SymStrides,
    /// Lhs strides (rows along M, columns along K).
    pub lhs_strides: SymStrides,
    /// Rhs strides (rows along K, columns along N).
    pub rhs_strides: SymStrides,
}

/// Row and column strides of one matrix, in elements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MatStrides {
    /// Stride between rows.
    pub rs: isize,
    /// Stride between columns.
    pub cs: isize,
}

/// One batch axis of a [`GemmLayout`]: an extent and each matrix's stride along it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BatchAxis {
    /// Number of batch entries along this axis.
    pub extent: usize,
    /// Destination stride.
    pub dst: isize,
    /// Lhs stride (0 where broadcast).
    pub lhs: isize,
    /// Rhs stride (0 where broadcast).
    pub rhs: isize,
}

/// A concrete (batched) GEMM: `dst[b][m, n] = Σ_k lhs[b][m, k] · rhs[b][k, n]`, all strides in
/// elements. The batch entries are the row-major product of [`GemmLayout::batch`] (none: one
/// matrix product).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GemmLayout {
    /// Rows of dst and lhs.
    pub m: usize,
    /// Columns of dst and rhs.
    pub n: usize,
    /// The contracted extent (columns of lhs, rows of rhs).
    pub k: usize,
    /// Destination strides.
    pub dst: MatStrides,
    /// Lhs strides.
    pub lhs: MatStrides,
    /// Rhs strides.
    pub rhs: MatStrides,
    /// Batch axes, outermost first.
    pub batch: Vec<BatchAxis>,
}

impl GemmLayout {
    /// One product of contiguous row-major matrices: `dst[m×n] = lhs[m×k] · rhs[k×n]`.
    pub fn row_major(m: usize, n: usize, k: usize) -> GemmLayout {
        let rows = |cols: usize| MatStrides {
            rs: cols as isize,
            cs: 1,
        };
        GemmLayout {
            m,
            n,
            k,
            dst: rows(n),
            lhs: rows(k),
            rhs: rows(n),
            batch: vec![],
        }
    }

    /// Number of matrix products (the product of the batch extents; 1 without batch axes).
    pub fn batch_count(&self) -> usize {
        self.batch.iter().map(|b| b.extent).product()
    }

    /// Multiply-adds in the whole call: `batch · m · n · k`.
    pub fn ops(&self) -> usize {
        self.batch_count() * self.m * self.n * self.k
    }

    /// The same GEMM with fewer batch axes: extent-1 axes dropped; adjacent axes merged where
    /// every matrix's outer stride is its inner stride times the inner extent; and axes folded
    /// into M (N) where rhs (lhs) is broadcast along them and the lhs (rhs) and dst strides
    /// continue the rows (columns), so `[B, M, K] @ [K, N]` becomes one `(B·M)×K @ K×N`; and
    /// summed axes (dst stride 0) folded into K where both operands' strides continue it.
    pub fn simplified(&self) -> GemmLayout {
        let mut out = GemmLayout {
            batch: Vec::new(),
            ..self.clone()
        };
        for b in self.batch.iter().filter(|b| b.extent != 1) {
            if let Some(last) = out.batch.last_mut() {
                let e = b.extent as isize;
                if last.dst == b.dst * e && last.lhs == b.lhs * e && last.rhs == b.rhs * e {
                    *last = BatchAxis {
                        extent: last.extent * b.extent,
                        ..*b
                    };
                    continue;
                }
            }
            out.batch.push(*b);
        }
        if out.m == 0 || out.n == 0 {
            return out;
        }
        loop {
            let (m, n) = (out.m as isize, out.n as isize);
            let into_m = |b: &BatchAxis| {
                b.rhs == 0 && b.lhs == out.lhs.rs * m && b.dst == out.dst.rs * m && b.dst != 0
            };
            let into_n = |b: &BatchAxis| {
                b.lhs == 0 && b.rhs == out.rhs.cs * n && b.dst == out.dst.cs * n && b.dst != 0
            };
            // A summed axis (dst stride 0) along which both operands continue K: the sum
            // over it and K is one longer K (a weight gradient summed over the rows of an
            // image as well as along them).
            let k = out.k as isize;
            let into_k = |b: &BatchAxis| {
                b.dst == 0 && k > 0 && b.lhs == out.lhs.cs * k && b.rhs == out.rhs.rs * k
            };
            if let Some(j) = out.batch.iter().position(into_m) {
                out.m *= out.batch.remove(j).extent;
            } else if let Some(j) = out.batch.iter().position(into_n) {
                out.n *= out.batch.remove(j).extent;
            } else if let Some(j) = out.batch.iter().position(into_k) {
                out.k *= out.batch.remove(j).extent;
            } else {
                return out;
            }
        }
    }
}

impl Contraction {
    /// The concrete GEMM for the shapes of `g` (the graph the contraction was matched in, or any
    /// graph with the same [`crate::schedule::plan_key`]). Batch axes are
    /// [simplified](GemmLayout::simplified).
    pub fn layout(&self, g: &Graph) -> GemmLayout {
        let ext = |a: Option<Axis>| a.map_or(1, |(n, k)| g.node(n).shape.dims()[k]);
        let mat = |s: &SymStrides| MatStrides {
            rs: s.rs.eval(g) as isize,
            cs: s.cs.eval(g) as isize,
        };
        GemmLayout {
            m: ext(self.m),
            n: ext(self.n),
            k: ext(Some(self.k)),
            dst: mat(&self.dst_strides),
            lhs: mat(&self.lhs_strides),
            rhs: mat(&self.rhs_strides),
            batch: self
                .batch
                .iter()
                .map(|b| BatchAxis {
                    extent: ext(Some(b.extent)),
                    dst: b.dst.eval(g) as isize,
                    lhs: b.lhs.eval(g) as isize,
                    rhs: b.rhs.eval(g) as isize,
                })
                .collect(),
        }
        .simplified()
    }
}

/// Recognises node `node` of the verified graph `g` as a contraction: a `Reduce{Sum}` (over K,
/// and possibly further axes, which become batch axes summed into one output: dst stride 0)
/// of an f32/f64 `mul` whose operands are view chains (see the module docs) over nodes for
/// which `is_materialised` holds (inputs and kernel roots: buffers the GEMM can read). Returns
/// `None` for anything else; the generic reduce kernel computes those.
pub fn match_contraction(
    g: &Graph,
    node: NodeId,
    is_materialised: &dyn Fn(NodeId) -> bool,
) -> Option<Contraction> {
    let red = g.node(node);
    let Op::Reduce {
        op: ReduceOp::Sum,
        axes,
        keepdims,
    } = &red.op
    else {
        return None;
    };
    if axes.is_empty() || !matches!(red.dtype, DType::F32 | DType::F64) {
        return None;
    }
    let mul_id = red.inputs[0];
    let mul = g.node(mul_id);
    if mul.op != Op::Binary(BinaryOp::Mul) {
        return None;
    }
    let dims = mul.shape.dims();
    let (lhs, lmap) = trace_view(g, mul.inputs[0], is_materialised)?;
    let (rhs, rmap) = trace_view(g, mul.inputs[1], is_materialised)?;
    // K is the last reduced axis both operands read; any other reduced axis is a batch axis
    // that the products are summed over (dst stride 0: each product adds into the same
    // matrix), as in a weight gradient summed over the images and the positions of each.
    let r = *axes
        .iter()
        .rev()
        .find(|&&a| !lmap[a].is_empty() && !rmap[a].is_empty())
        .unwrap_or(axes.last()?);

    // The output axis of each mul axis that is not reduced, and its row-major stride; a
    // reduced axis has stride 0 in the output.
    let out_dims = red.shape.dims();
    let dst_stride = |a: usize| {
        if axes.contains(&a) {
            return Stride::Zero;
        }
        let oa = if *keepdims {
            a
        } else {
            a - axes.iter().filter(|&&q| q < a).count()
        };
        buffer_stride(node, out_dims, oa)
    };
    let src_stride = |p: NodeId, reads: &[Read]| view_stride(p, g.node(p).shape.dims(), reads);

    // M is the last axis only lhs reads, N the last only rhs reads; earlier such axes are batch
    // axes along which the other operand is broadcast (`[B, M, K] @ [K, N]`), which
    // `GemmLayout::simplified` folds into M or N where the strides allow.
    let only = |want_l: bool| {
        (0..dims.len()).rfind(|&a| {
            let (reads_l, reads_r) = (!lmap[a].is_empty(), !rmap[a].is_empty());
            !axes.contains(&a) && reads_l == want_l && reads_r != want_l
        })
    };
    let m = only(true);
    let n = only(false);
    // Summing products over further axes pays only for real matrices: a sum of squares over
    // several axes (a variance) would become thousands of 1×1 products.
    if axes.len() > 1 && (m.is_none() || n.is_none()) {
        return None;
    }
    let (mut dst_rs, mut dst_cs) = (Stride::Zero, Stride::Zero);
    let (mut lhs_rs, mut lhs_cs) = (Stride::Zero, Stride::Zero);
    let (mut rhs_rs, mut rhs_cs) = (Stride::Zero, Stride::Zero);
    let mut batch = Vec::new();
    for (a, &d) in dims.iter().enumerate() {
        let (la, ra) = (&lmap[a][..], &rmap[a][..]);
        if a == r {
            match (la.is_empty(), ra.is_empty()) {
                (false, false) => {}
                // Both read nothing along K only when it has extent 1 (a broadcast in both
                // would sum equal terms: not a GEMM).
                (true, true) if d == 1 => {}
                _ => return None,
            }
            lhs_cs = src_stride(lhs, la);
            rhs_rs = src_stride(rhs, ra);
        } else if Some(a) == m {
            lhs_rs = src_stride(lhs, la);
            dst_rs = dst_stride(a);
        } else if Some(a) == n {
            rhs_cs = src_stride(rhs, ra);
            dst_cs = dst_stride(a);
        } else if !la.is_empty() || !ra.is_empty() || d != 1 {
            batch.push(SymBatch {
                extent: (mul_id, a),
                dst: dst_stride(a),
                lhs: src_stride(lhs, la),
                rhs: src_stride(rhs, ra),
            });
        }
    }
    Some(Contraction {
        output: node,
        dtype: red.dtype,
        lhs,
        rhs,
        m: m.map(|a| (mul_id, a)),
        n: n.map(|a| (mul_id, a)),
        k: (mul_id, r),
        batch,
        dst_strides: SymStrides {
            rs: dst_rs,
            cs: dst_cs,
        },
        lhs_strides: SymStrides {
            rs: lhs_rs,
            cs: lhs_cs,
        },
        rhs_strides: SymStrides {
            rs: rhs_rs,
            cs: rhs_cs,
        },
    })
}

/// The row-major stride of axis `axis` of a buffer of node `node` with extents `dims`: the
/// product of the later extents (those of extent 1 left out).
fn buffer_stride(node: NodeId, dims: &[usize], axis: usize) -> Stride {
    Stride::Product(row_major_axes(node, dims, axis))
}

/// The axes whose extents multiply to the row-major stride of `axis` (extent-1 axes left out).
fn row_major_axes(node: NodeId, dims: &[usize], axis: usize) -> Vec<Axis> {
    (axis + 1..dims.len())
        .filter(|&q| dims[q] != 1)
        .map(|q| (node, q))
        .collect()
}

/// How a view's axis moves along one axis of its buffer: `scale · Π extents(factors)` buffer
/// coordinates per step.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Read {
    /// The buffer axis.
    axis: usize,
    /// The constant part of the scale (positive).
    scale: i64,
    /// Graph axes whose extents multiply the scale (the view's `IterDim`s).
    factors: Vec<Axis>,
}

/// The stride, in elements of buffer `p` (extents `dims`), of a view axis that reads `reads`:
/// `Zero` for none, the buffer's row-major stride for one plain read, else a [`Stride::Sum`].
fn view_stride(p: NodeId, dims: &[usize], reads: &[Read]) -> Stride {
    match reads {
        [] => Stride::Zero,
        [r] if r.scale == 1 && r.factors.is_empty() => buffer_stride(p, dims, r.axis),
        _ => Stride::Sum(
            reads
                .iter()
                .map(|r| {
                    let mut axes = r.factors.clone();
                    axes.extend(row_major_axes(p, dims, r.axis));
                    (r.scale, axes)
                })
                .collect(),
        ),
    }
}

/// One term of [`linear_terms`]: `scale · Π extents(factors) · i<index>` (no index: a
/// constant).
type Term = (Option<usize>, i64, Vec<Axis>);

/// An index expression of `Reindex` node `node` (whose input is `input`) as a sum of terms
/// `scale · Π extents · i<k>` with at most one iteration index per term, or `None` when it is
/// not of that form (divisions, conditions, index parameters, extras, a product of two
/// indices). Extents are the node's own (`IterDim`) and its input's (`TargetDim`), so the terms
/// stay valid for every size.
pub fn linear_terms(e: &IndexExpr, node: NodeId, input: NodeId) -> Option<Vec<Term>> {
    Some(match e {
        IndexExpr::Const(c) => vec![(None, *c, vec![])],
        IndexExpr::Idx(k) => vec![(Some(*k), 1, vec![])],
        IndexExpr::IterDim(k) => vec![(None, 1, vec![(node, *k)])],
        IndexExpr::TargetDim(k) => vec![(None, 1, vec![(input, *k)])],
        IndexExpr::Bin(IdxBin::Add, a, b) => {
            let mut t = linear_terms(a, node, input)?;
            t.extend(linear_terms(b, node, input)?);
            t
        }
        IndexExpr::Bin(IdxBin::Mul, a, b) => {
            let (a, b) = (linear_terms(a, node, input)?, linear_terms(b, node, input)?);
            let mut out = Vec::with_capacity(a.len() * b.len());
            for (ia, ca, fa) in &a {
                for (ib, cb, fb) in &b {
                    let index = match (ia, ib) {
                        (Some(_), Some(_)) => return None,
                        (i, None) | (None, i) => *i,
                    };
                    let mut f = fa.clone();
                    f.extend_from_slice(fb);
                    out.push((index, ca.checked_mul(*cb)?, f));
                }
            }
            out
        }
        _ => return None,
    })
}

/// For a `Reindex` node `node` that is a *strided view* of its input, the reads of each of its
/// axes (see [`Read`]); `None` otherwise. A strided view has one input, no conditions, and
/// every coordinate a sum of positive multiples of iteration indices (no constant offset:
/// [`linear_terms`]) that is proven in range over the whole iteration space by
/// [`crate::schedule::in_range`] — a fact of the plan key, so the answer holds for every graph
/// with the same plan. Then each output element reads exactly the input element at a fixed
/// linear offset, `Σ_k i_k · stride_k`, which a GEMM reads with those strides: the shifted
/// windows of a convolution over a padded input are such a view. Permutations are the
/// special case of one plain index per coordinate.
fn strided_reads(g: &Graph, node: NodeId) -> Option<Vec<Vec<Read>>> {
    let n = g.node(node);
    let Op::Reindex(im) = &n.op else {
        return None;
    };
    let (out, inp) = (n.shape.dims(), g.node(*n.inputs.first()?).shape.dims());
    if n.inputs.len() != 1 || !im.conds.is_empty() || im.exprs.len() != inp.len() {
        return None;
    }
    // An empty view reads nothing, so its coordinates need no proof (and `in_range` gives
    // none for an empty input).
    let empty = out.contains(&0);
    let mut reads: Vec<Vec<Read>> = vec![Vec::new(); out.len()];
    for (p, e) in im.exprs.iter().enumerate() {
        if !empty && !crate::schedule::in_range(e, inp[p], out, inp) {
            return None;
        }
        for (index, scale, factors) in linear_terms(e, node, n.inputs[0])? {
            match index {
                // A constant offset (even 0 + ..) would need a base offset in the layout.
                None if scale == 0 => {}
                None => return None,
                Some(_) if scale == 0 => {}
                Some(_) if scale < 0 => return None,
                Some(k) => reads[k].push(Read {
                    axis: p,
                    scale,
                    factors,
                }),
            }
        }
    }
    Some(reads)
}

/// Whether node `p` is a `Reindex` that the matcher reads through as a view: a permutation or
/// another *strided view* — one input, no conditions, every coordinate a sum of positive
/// multiples of iteration indices ([`linear_terms`], no constant offset) proven in range by
/// [`crate::schedule::in_range`] (a plan-key fact), so each element reads its input at a
/// fixed linear offset that a GEMM reaches with strides.
pub fn is_strided_view(g: &Graph, p: NodeId) -> bool {
    strided_reads(g, p).is_some()
}

/// Whether two shapes differ only by extent-1 axes.
fn only_unit_axes_change(a: &[usize], b: &[usize]) -> bool {
    let non1 = |d: &[usize]| d.iter().copied().filter(|&e| e != 1).collect::<Vec<_>>();
    non1(a) == non1(b)
}

/// Follows a chain of views from `x` down to the first materialised node `P`. Returns `P` and,
/// for each axis of `x`, how it moves in `P` ([`Read`]s; none: broadcast, or extent 1, so the
/// coordinate does not move in `P`). `None` when the chain holds anything but views.
fn trace_view(
    g: &Graph,
    x: NodeId,
    is_materialised: &dyn Fn(NodeId) -> bool,
) -> Option<(NodeId, Vec<Vec<Read>>)> {
    let mut chain = Vec::new();
    let mut cur = x;
    while !is_materialised(cur) {
        let n = g.node(cur);
        match &n.op {
            // A reshape that regroups axes (an im2col window [N, OH, OW, C, KH, KW] read as
            // [N·OH·OW, C·KH·KW], a feature map flattened for a linear layer) is the operand
            // itself: row-major elements the schedule gives the reshape node — by aliasing
            // when its input is a buffer, else by one copy kernel.
            Op::Reshape
                if !only_unit_axes_change(n.shape.dims(), g.node(n.inputs[0]).shape.dims()) =>
            {
                break;
            }
            Op::BroadcastTo { .. } | Op::Reshape => {}
            Op::Reindex(map) if n.inputs.len() == 1 && map.conds.is_empty() => {}
            _ => return None,
        }
        chain.push(cur);
        cur = n.inputs[0];
    }
    let p = cur;
    let mut map: Vec<Vec<Read>> = g
        .node(p)
        .shape
        .dims()
        .iter()
        .enumerate()
        .map(|(a, &d)| {
            if d != 1 {
                vec![Read {
                    axis: a,
                    scale: 1,
                    factors: vec![],
                }]
            } else {
                vec![]
            }
        })
        .collect();
    for &c in chain.iter().rev() {
        let n = g.node(c);
        let out = n.shape.dims();
        let inp = g.node(n.inputs[0]).shape.dims();
        map = match &n.op {
            Op::BroadcastTo { axes } => {
                let mut kept = map.into_iter();
                (0..out.len())
                    .map(|a| {
                        if axes.contains(&a) {
                            vec![]
                        } else {
                            kept.next().unwrap_or_default()
                        }
                    })
                    .collect()
            }
            Op::Reshape => {
                // Only the insertion or removal of extent-1 axes: the other extents, in order,
                // must be the same.
                let non1 = |d: &[usize]| d.iter().copied().filter(|&e| e != 1).collect::<Vec<_>>();
                if non1(out) != non1(inp) {
                    return None;
                }
                let mut kept = map
                    .into_iter()
                    .zip(inp)
                    .filter(|(_, e)| **e != 1)
                    .map(|(m, _)| m);
                out.iter()
                    .map(|&e| {
                        if e == 1 {
                            vec![]
                        } else {
                            kept.next().unwrap_or_default()
                        }
                    })
                    .collect()
            }
            Op::Reindex(_) => {
                // Output axis k moves input axis q by `scale · Π factors` per step, and input
                // axis q moves the buffer by its own reads: compose the two.
                let reads = strided_reads(g, c)?;
                reads
                    .iter()
                    .enumerate()
                    .map(|(k, rs)| {
                        let mut composed = Vec::new();
                        if out[k] == 1 {
                            return composed;
                        }
                        for r in rs {
                            for below in &map[r.axis] {
                                let mut factors = r.factors.clone();
                                factors.extend_from_slice(&below.factors);
                                composed.push(Read {
                                    axis: below.axis,
                                    scale: r.scale * below.scale,
                                    factors,
                                });
                            }
                        }
                        composed
                    })
                    .collect()
            }
            _ => unreachable!("the chain holds views only"),
        };
    }
    Some((p, map))
}

/// The reference product: `layout` applied with plain loops to host buffers; each product is
/// rounded to the element type and the sum accumulated in f64 and rounded once, exactly as the
/// interpreter evaluates the `reduce(sum, mul(..))` it replaces. Products along a batch axis of
/// dst stride 0 add into the same matrix (a sum over that axis too).
pub fn gemm_reference(
    layout: &GemmLayout,
    dst: &mut crate::buffer::HostData,
    lhs: &crate::buffer::HostData,
    rhs: &crate::buffer::HostData,
) {
    // Every dst element the layout covers starts at 0 (an empty summed axis leaves it so), and
    // products along batch axes of dst stride 0 add into it.
    let mut sums: std::collections::BTreeMap<isize, f64> = std::collections::BTreeMap::new();
    let free: Vec<BatchAxis> = layout
        .batch
        .iter()
        .filter(|a| a.dst != 0)
        .copied()
        .collect();
    let matrices: usize = free.iter().map(|a| a.extent).product();
    for f in 0..matrices {
        let (od, _, _) = batch_offsets(&free, f);
        for i in 0..layout.m as isize {
            for j in 0..layout.n as isize {
                sums.insert(od + i * layout.dst.rs + j * layout.dst.cs, 0.0);
            }
        }
    }
    for b in 0..layout.batch_count() {
        let (od, ol, or) = batch_offsets(&layout.batch, b);
        for i in 0..layout.m as isize {
            for j in 0..layout.n as isize {
                let mut acc = 0.0f64;
                for l in 0..layout.k as isize {
                    let a = lhs.get((ol + i * layout.lhs.rs + l * layout.lhs.cs) as usize);
                    let c = rhs.get((or + l * layout.rhs.rs + j * layout.rhs.cs) as usize);
                    // The product in the element type, like the `mul` node it replaces.
                    let p = crate::interp::eval_binary(crate::op::BinaryOp::Mul, a, c);
                    acc += p.to_f64();
                }
                *sums
                    .entry(od + i * layout.dst.rs + j * layout.dst.cs)
                    .or_insert(0.0) += acc;
            }
        }
    }
    for (at, v) in sums {
        dst.set(at as usize, crate::dtype::Scalar::F64(v));
    }
}

/// The element offsets `(dst, lhs, rhs)` of batch entry `b`, row-major over `batch`.
pub fn batch_offsets(batch: &[BatchAxis], mut b: usize) -> (isize, isize, isize) {
    let (mut d, mut l, mut r) = (0isize, 0isize, 0isize);
    for ax in batch.iter().rev() {
        let e = ax.extent.max(1);
        let i = (b % e) as isize;
        b /= e;
        d += i * ax.dst;
        l += i * ax.lhs;
        r += i * ax.rhs;
    }
    (d, l, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::HostData;
    use crate::parse::parse;

    fn inputs_only(g: &Graph) -> impl Fn(NodeId) -> bool + '_ {
        |n| matches!(g.node(n).op, Op::Input { .. })
    }

    fn matched(text: &str) -> Option<Contraction> {
        let g = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let out = *g.outputs.last().expect("a return");
        match_contraction(&g, out, &inputs_only(&g))
    }

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// Computes the layout naively from the inputs' buffers (NaN where nothing is written;
    /// products into an element written before, along a summed axis, add to it).
    fn run_layout(l: &GemmLayout, dst_len: usize, lhs: &[f64], rhs: &[f64]) -> Vec<f64> {
        let mut dst = vec![f64::NAN; dst_len];
        let mut written = vec![false; dst_len];
        let nb = l.batch_count();
        for b in 0..nb {
            let (mut od, mut ol, mut or) = (0isize, 0isize, 0isize);
            let mut rem = b;
            for ax in l.batch.iter().rev() {
                let i = (rem % ax.extent) as isize;
                rem /= ax.extent;
                od += i * ax.dst;
                ol += i * ax.lhs;
                or += i * ax.rhs;
            }
            for i in 0..l.m as isize {
                for j in 0..l.n as isize {
                    let mut acc = 0.0;
                    for k in 0..l.k as isize {
                        acc += lhs[(ol + i * l.lhs.rs + k * l.lhs.cs) as usize]
                            * rhs[(or + k * l.rhs.rs + j * l.rhs.cs) as usize];
                    }
                    let at = (od + i * l.dst.rs + j * l.dst.cs) as usize;
                    dst[at] = if written[at] { dst[at] + acc } else { acc };
                    written[at] = true;
                }
            }
        }
        dst
    }

    /// Matches the graph's last output, then checks the layout against the interpreter on
    /// random inputs 0 (lhs) and 1 (rhs), in f64.
    fn check_values(text: &str) -> Contraction {
        let g = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let out = *g.outputs.last().expect("a return");
        let c = match_contraction(&g, out, &inputs_only(&g))
            .unwrap_or_else(|| panic!("no contraction in\n{text}"));
        let numel = |n: NodeId| g.node(n).shape.numel();
        let mut bufs = Vec::new();
        for slot in 0..g.num_inputs() {
            let id = g
                .nodes
                .iter()
                .position(|n| n.op == Op::Input { slot })
                .unwrap();
            bufs.push(values(numel(NodeId(id as u32)), slot as u64 + 1));
        }
        let slot_of = |n: NodeId| match g.node(n).op {
            Op::Input { slot } => slot,
            _ => panic!("sources are inputs here"),
        };
        let data: Vec<HostData> = bufs.iter().map(|b| HostData::F64(b.clone())).collect();
        let refs: Vec<&HostData> = data.iter().collect();
        let want = crate::interp::run(&g, &refs).unwrap();
        let want = want.last().unwrap();
        let l = c.layout(&g);
        let got = run_layout(&l, numel(out), &bufs[slot_of(c.lhs)], &bufs[slot_of(c.rhs)]);
        let HostData::F64(want) = want else {
            panic!("f64 output")
        };
        assert_eq!(want.len(), got.len());
        for (w, v) in want.iter().zip(&got) {
            assert!((w - v).abs() < 1e-12, "{w} vs {v}\n{l:?}\n{text}");
        }
        // The reference executor's product agrees too.
        let mut reference = HostData::F64(vec![f64::NAN; numel(out)]);
        gemm_reference(
            &l,
            &mut reference,
            &data[slot_of(c.lhs)],
            &data[slot_of(c.rhs)],
        );
        let HostData::F64(reference) = reference else {
            unreachable!()
        };
        for (w, v) in want.iter().zip(&reference) {
            assert!(
                (w - v).abs() < 1e-12,
                "gemm_reference: {w} vs {v}\n{l:?}\n{text}"
            );
        }
        c
    }

    /// The text `Tensor::matmul` records for `[ba.., m, k] @ [bb.., k, n]` (the batch shapes
    /// must broadcast), with optionally transposed stored operands (read through a
    /// permutation), the mul's operands swapped, and keepdims on the reduce.
    fn matmul_text(
        ba: &[usize],
        bb: &[usize],
        (m, k, n): (usize, usize, usize),
        (ta, tb): (bool, bool),
        swap: bool,
        keepdims: bool,
    ) -> String {
        let shape = |d: &[usize]| {
            let v: Vec<String> = d.iter().map(|x| x.to_string()).collect();
            format!("f64[{}]", v.join(", "))
        };
        let mut lines = Vec::new();
        let mut next = 0usize;
        let mut push = |lines: &mut Vec<String>, text: String| {
            lines.push(format!("%{next} = {text}"));
            next += 1;
            next - 1
        };
        // A stored operand of logical shape `b ++ [r, c]`, maybe stored transposed.
        let mut operand =
            |lines: &mut Vec<String>, slot: usize, b: &[usize], r: usize, c: usize, t: bool| {
                let logical = [b, &[r, c]].concat();
                if !t {
                    return (
                        push(lines, format!("input #{slot} : {}", shape(&logical))),
                        logical,
                    );
                }
                let stored = [b, &[c, r]].concat();
                let p = push(lines, format!("input #{slot} : {}", shape(&stored)));
                let nb = b.len();
                let mut ex: Vec<String> = (0..nb).map(|i| format!("i{i}")).collect();
                ex.push(format!("i{}", nb + 1));
                ex.push(format!("i{nb}"));
                let id = push(
                    lines,
                    format!(
                        "reindex %{p} [{}] overflow=0.0 : {}",
                        ex.join(", "),
                        shape(&logical)
                    ),
                );
                (id, logical)
            };
        let (a, da) = operand(&mut lines, 0, ba, m, k, ta);
        let (b, db) = operand(&mut lines, 1, bb, k, n, tb);
        let r = ba.len().max(bb.len());
        let batch: Vec<usize> = (0..r)
            .map(|i| {
                let x = if i + ba.len() >= r {
                    ba[i + ba.len() - r]
                } else {
                    1
                };
                let y = if i + bb.len() >= r {
                    bb[i + bb.len() - r]
                } else {
                    1
                };
                if x == 1 { y } else { x }
            })
            .collect();
        let full = [&batch[..], &[m, k, n]].concat();
        // view_as(unsqueezed) then broadcast_as(full), as the Tensor API records them.
        let mut expand = |lines: &mut Vec<String>, x: usize, view: Vec<usize>, from: &[usize]| {
            let mut cur = x;
            if view != from {
                cur = push(lines, format!("reshape %{cur} : {}", shape(&view)));
            }
            if view == full {
                return cur;
            }
            let off = full.len() - view.len();
            let (mut kept, mut axes) = (Vec::new(), Vec::new());
            for (j, &t) in full.iter().enumerate() {
                match (j >= off).then(|| view[j - off]) {
                    Some(s) if s == t => kept.push(t),
                    _ => axes.push(j.to_string()),
                }
            }
            if kept != view {
                cur = push(lines, format!("reshape %{cur} : {}", shape(&kept)));
            }
            push(
                lines,
                format!(
                    "broadcast %{cur} axes=[{}] : {}",
                    axes.join(", "),
                    shape(&full)
                ),
            )
        };
        let av = [&da[..], &[1]].concat();
        let mut bv = db.clone();
        bv.insert(db.len() - 2, 1);
        let x = expand(&mut lines, a, av, &da);
        let y = expand(&mut lines, b, bv, &db);
        let (x, y) = if swap { (y, x) } else { (x, y) };
        let p = push(&mut lines, format!("mul %{x}, %{y} : {}", shape(&full)));
        let mut out = batch.clone();
        out.push(m);
        if keepdims {
            out.push(1);
        }
        out.push(n);
        let c = push(
            &mut lines,
            format!(
                "reduce sum %{p} axes=[{}]{} : {}",
                full.len() - 2,
                if keepdims { " keepdims" } else { "" },
                shape(&out)
            ),
        );
        lines.push(format!("return %{c}"));
        lines.join("\n")
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]

        /// Every product `Tensor::matmul` can record matches, and its layout computes the
        /// interpreter's values.
        #[test]
        fn matmul_lowerings_match_and_compute_the_product(
            ba in proptest::collection::vec(0usize..=3, 0..=2),
            bb in proptest::collection::vec(0usize..=3, 0..=2),
            mkn in (0usize..=4, 0usize..=4, 0usize..=4),
            flags in proptest::array::uniform4(proptest::bool::ANY),
        ) {
            // Make the batch shapes broadcast: where they disagree, the rhs extent becomes 1.
            let mut bb = bb;
            for j in 0..ba.len().min(bb.len()) {
                let (ia, ib) = (ba.len() - 1 - j, bb.len() - 1 - j);
                if ba[ia] != bb[ib] && ba[ia] != 1 {
                    bb[ib] = 1;
                }
            }
            let text = matmul_text(&ba, &bb, mkn, (flags[0], flags[1]), flags[2], flags[3]);
            check_values(&text);
        }
    }

    /// A product of empty transposed operands (found by the property test above): a bare
    /// index over an empty iteration space is still a permutation, so the product matches.
    #[test]
    fn empty_transposed_operands_still_match() {
        check_values(
            "%0 = input #0 : f64[0, 4, 0]
%1 = reindex %0 [i0, i2, i1] overflow=0.0 : f64[0, 0, 4]
%2 = input #1 : f64[3, 0, 0, 4]
%3 = reindex %2 [i0, i1, i3, i2] overflow=0.0 : f64[3, 0, 4, 0]
%4 = reshape %1 : f64[0, 0, 4, 1]
%5 = reshape %4 : f64[0, 0, 4]
%6 = broadcast %5 axes=[0, 4] : f64[3, 0, 0, 4, 0]
%7 = reshape %3 : f64[3, 0, 1, 4, 0]
%8 = reshape %7 : f64[3, 0, 4, 0]
%9 = broadcast %8 axes=[2] : f64[3, 0, 0, 4, 0]
%10 = mul %6, %9 : f64[3, 0, 0, 4, 0]
%11 = reduce sum %10 axes=[3] : f64[3, 0, 0, 0]
return %11
",
        );
    }

    /// The exact graph `x.linear(&w, Some(&b))` records (printed by `METAJIT_DEBUG=3`).
    #[test]
    fn tensor_linear_lowering() {
        let text = "
            %0 = input #0 : f64[7, 3]
            %1 = reshape %0 : f64[7, 3, 1]
            %2 = reshape %1 : f64[7, 3]
            %3 = broadcast %2 axes=[2] : f64[7, 3, 5]
            %4 = input #1 : f64[5, 3]
            %5 = reindex %4 [i1, i0] overflow=0.0 : f64[3, 5]
            %6 = reshape %5 : f64[1, 3, 5]
            %7 = reshape %6 : f64[3, 5]
            %8 = broadcast %7 axes=[0] : f64[7, 3, 5]
            %9 = mul %3, %8 : f64[7, 3, 5]
            %10 = reduce sum %9 axes=[1] : f64[7, 5]
            return %10
        ";
        let c = check_values(text);
        assert_eq!((c.lhs, c.rhs), (NodeId(0), NodeId(4)));
        let l = c.layout(&parse(text).unwrap());
        assert_eq!(l.lhs, MatStrides { rs: 3, cs: 1 });
        assert_eq!(l.rhs, MatStrides { rs: 1, cs: 3 });
    }

    #[test]
    fn plain_matmul_matches_with_symbolic_strides() {
        let text = "
            %0 = input #0 : f64[4, 3]
            %1 = input #1 : f64[3, 5]
            %2 = broadcast %0 axes=[2] : f64[4, 3, 5]
            %3 = broadcast %1 axes=[0] : f64[4, 3, 5]
            %4 = mul %2, %3 : f64[4, 3, 5]
            %5 = reduce sum %4 axes=[1] : f64[4, 5]
            return %5
        ";
        let c = check_values(text);
        let (p, q, mul, out) = (NodeId(0), NodeId(1), NodeId(4), NodeId(5));
        assert_eq!((c.lhs, c.rhs, c.output, c.dtype), (p, q, out, DType::F64));
        assert_eq!((c.m, c.n, c.k), (Some((mul, 0)), Some((mul, 2)), (mul, 1)));
        assert!(c.batch.is_empty());
        let prod = |v: Vec<Axis>| Stride::Product(v);
        assert_eq!(c.lhs_strides.rs, prod(vec![(p, 1)]));
        assert_eq!(c.lhs_strides.cs, prod(vec![]));
        assert_eq!(c.rhs_strides.rs, prod(vec![(q, 1)]));
        assert_eq!(c.rhs_strides.cs, prod(vec![]));
        assert_eq!(c.dst_strides.rs, prod(vec![(out, 1)]));
        assert_eq!(c.dst_strides.cs, prod(vec![]));
        let g = parse(text).unwrap();
        assert_eq!(
            c.layout(&g),
            GemmLayout {
                m: 4,
                n: 5,
                k: 3,
                dst: MatStrides { rs: 5, cs: 1 },
                lhs: MatStrides { rs: 3, cs: 1 },
                rhs: MatStrides { rs: 5, cs: 1 },
                batch: vec![],
            }
        );
    }

    /// The exact lowering of `Tensor::matmul` (`unsqueeze` + broadcast through `Reshape`s that
    /// drop the unit axis) for `[2, 1, 4, 3] @ [5, 3, 6]`: a batch axis broadcast in lhs, one
    /// broadcast in rhs.
    #[test]
    fn tensor_matmul_lowering_with_broadcast_batches() {
        let c = check_values(
            "
            %0 = input #0 : f64[2, 1, 4, 3]
            %1 = input #1 : f64[5, 3, 6]
            %2 = reshape %0 : f64[2, 1, 4, 3, 1]
            %3 = reshape %2 : f64[2, 4, 3]
            %4 = broadcast %3 axes=[1, 4] : f64[2, 5, 4, 3, 6]
            %5 = reshape %1 : f64[5, 1, 3, 6]
            %6 = reshape %5 : f64[5, 3, 6]
            %7 = broadcast %6 axes=[0, 2] : f64[2, 5, 4, 3, 6]
            %8 = mul %4, %7 : f64[2, 5, 4, 3, 6]
            %9 = reduce sum %8 axes=[3] : f64[2, 5, 4, 6]
            return %9
        ",
        );
        assert_eq!(c.batch.len(), 2);
        assert_eq!(c.batch[0].rhs, Stride::Zero);
        assert_eq!(c.batch[1].lhs, Stride::Zero);
    }

    #[test]
    fn transposed_operands_and_swapped_mul() {
        // a.t() @ b.t() with the mul's operands swapped, keepdims on.
        check_values(
            "
            %0 = input #0 : f64[3, 4]
            %1 = input #1 : f64[5, 3]
            %2 = reindex %0 [i1, i0] overflow=0.0 : f64[4, 3]
            %3 = reindex %1 [i1, i0] overflow=0.0 : f64[3, 5]
            %4 = broadcast %2 axes=[2] : f64[4, 3, 5]
            %5 = broadcast %3 axes=[0] : f64[4, 3, 5]
            %6 = mul %5, %4 : f64[4, 3, 5]
            %7 = reduce sum %6 axes=[1] keepdims : f64[4, 1, 5]
            return %7
        ",
        );
        // A permutation of a batched operand: [B, K, M] -> [B, M, K].
        let c = check_values(
            "
            %0 = input #0 : f64[2, 3, 4]
            %1 = input #1 : f64[2, 3, 5]
            %2 = reindex %0 [i0, i2, i1] overflow=0.0 : f64[2, 4, 3]
            %3 = broadcast %2 axes=[3] : f64[2, 4, 3, 5]
            %4 = broadcast %1 axes=[1] : f64[2, 4, 3, 5]
            %5 = mul %3, %4 : f64[2, 4, 3, 5]
            %6 = reduce sum %5 axes=[2] : f64[2, 4, 5]
            return %6
        ",
        );
        assert_eq!(c.lhs_strides.cs, Stride::Product(vec![(NodeId(0), 2)]));
        assert_eq!(c.lhs_strides.rs, Stride::Product(vec![]));
    }

    #[test]
    fn vector_cases_and_unit_extents() {
        // dot: [K] · [K] promoted to [1, K] @ [K, 1].
        let c = check_values(
            "
            %0 = input #0 : f64[7]
            %1 = input #1 : f64[7]
            %2 = reshape %0 : f64[1, 7]
            %3 = reshape %2 : f64[1, 7, 1]
            %4 = reshape %3 : f64[7]
            %5 = broadcast %4 axes=[0, 2] : f64[1, 7, 1]
            %6 = reshape %1 : f64[7, 1]
            %7 = reshape %6 : f64[1, 7, 1]
            %8 = mul %5, %7 : f64[1, 7, 1]
            %9 = reduce sum %8 axes=[1] : f64[1, 1]
            %10 = reshape %9 : f64[1]
            %11 = reshape %10 : f64[]
            return %9
        ",
        );
        assert_eq!((c.m, c.n), (None, None));
        // K = 1 (an outer product).
        check_values(
            "
            %0 = input #0 : f64[4, 1]
            %1 = input #1 : f64[1, 6]
            %2 = reshape %0 : f64[4]
            %3 = broadcast %2 axes=[1, 2] : f64[4, 1, 6]
            %4 = reshape %1 : f64[6]
            %5 = broadcast %4 axes=[0, 1] : f64[4, 1, 6]
            %6 = mul %3, %5 : f64[4, 1, 6]
            %7 = reduce sum %6 axes=[1] : f64[4, 6]
            return %7
        ",
        );
        // A batch axis broadcast in both operands, and empty extents.
        check_values(
            "
            %0 = input #0 : f64[2, 3]
            %1 = input #1 : f64[3, 4]
            %2 = broadcast %0 axes=[0, 3] : f64[5, 2, 3, 4]
            %3 = broadcast %1 axes=[0, 1] : f64[5, 2, 3, 4]
            %4 = mul %2, %3 : f64[5, 2, 3, 4]
            %5 = reduce sum %4 axes=[2] : f64[5, 2, 4]
            return %5
        ",
        );
        check_values(
            "
            %0 = input #0 : f64[2, 0]
            %1 = input #1 : f64[0, 4]
            %2 = broadcast %0 axes=[2] : f64[2, 0, 4]
            %3 = broadcast %1 axes=[0] : f64[2, 0, 4]
            %4 = mul %2, %3 : f64[2, 0, 4]
            %5 = reduce sum %4 axes=[1] : f64[2, 4]
            return %5
        ",
        );
    }

    #[test]
    fn batch_axes_merge_in_the_layout() {
        let text = "
            %0 = input #0 : f32[2, 3, 4, 5]
            %1 = input #1 : f32[2, 3, 5, 6]
            %2 = broadcast %0 axes=[4] : f32[2, 3, 4, 5, 6]
            %3 = broadcast %1 axes=[2] : f32[2, 3, 4, 5, 6]
            %4 = mul %2, %3 : f32[2, 3, 4, 5, 6]
            %5 = reduce sum %4 axes=[3] : f32[2, 3, 4, 6]
            return %5
        ";
        let c = matched(text).unwrap();
        assert_eq!(c.batch.len(), 2);
        let l = c.layout(&parse(text).unwrap());
        assert_eq!(
            l.batch,
            vec![BatchAxis {
                extent: 6,
                dst: 24,
                lhs: 20,
                rhs: 30
            }]
        );
    }

    /// A convolution's shifted windows: a `reindex` whose coordinate is a sum of scaled
    /// indices reads its input in place with overlapping strides (the taps become summed
    /// batch axes); the weight gradient's sum over rows folds into K.
    #[test]
    fn strided_views_read_in_place() {
        // 1-D: y[o, p] = Σ_{t, c} w[o, t, c] · x[c, p + t], p < 8 over x [3, 10].
        let one = "
            %0 = input #0 : f64[2, 3, 3]
            %1 = input #1 : f64[3, 10]
            %2 = reindex %1 [i1, i2 + i0] overflow=0.0 : f64[3, 3, 8]
            %3 = broadcast %0 axes=[3] : f64[2, 3, 3, 8]
            %4 = broadcast %2 axes=[0] : f64[2, 3, 3, 8]
            %5 = mul %3, %4 : f64[2, 3, 3, 8]
            %6 = reduce sum %5 axes=[1, 2] : f64[2, 8]
            return %6
        ";
        let c = check_values(one);
        let l = c.layout(&parse(one).unwrap());
        assert_eq!((l.m, l.n, l.k), (2, 8, 3));
        assert_eq!(l.rhs, MatStrides { rs: 10, cs: 1 });
        assert_eq!(l.batch.len(), 1, "{l:?}");
        assert_eq!((l.batch[0].dst, l.batch[0].rhs), (0, 1));
        // 2-D rows of width n3 (5), read flat: (oh + kh·2)·n3 + q, with a dilation of 2 and
        // rows folded into N.
        let two = "
            %0 = input #0 : f64[4, 2, 2]
            %1 = input #1 : f64[2, 35]
            %2 = reindex %1 [i1, (((i2 + (i0 * 2)) * n3) + i3)] overflow=0.0 : f64[2, 2, 5, 5]
            %4 = broadcast %0 axes=[3, 4] : f64[4, 2, 2, 5, 5]
            %6 = broadcast %2 axes=[0] : f64[4, 2, 2, 5, 5]
            %7 = mul %4, %6 : f64[4, 2, 2, 5, 5]
            %8 = reduce sum %7 axes=[1, 2] : f64[4, 5, 5]
            return %8
        ";
        let c = check_values(two);
        let l = c.layout(&parse(two).unwrap());
        assert_eq!((l.m, l.n, l.k), (4, 25, 2), "{l:?}");
        // The weight gradient's form: Σ over rows and columns of dy[o, r, q] · view[.., r, q]
        // is one K of 25 per tap.
        let grad = "
            %0 = input #0 : f64[4, 5, 5]
            %1 = input #1 : f64[2, 35]
            %2 = reindex %1 [i1, (((i2 + (i0 * 2)) * n3) + i3)] overflow=0.0 : f64[2, 2, 5, 5]
            %4 = broadcast %0 axes=[1, 2] : f64[4, 2, 2, 5, 5]
            %6 = broadcast %2 axes=[0] : f64[4, 2, 2, 5, 5]
            %7 = mul %4, %6 : f64[4, 2, 2, 5, 5]
            %8 = reduce sum %7 axes=[3, 4] : f64[4, 2, 2]
            return %8
        ";
        let c = check_values(grad);
        let l = c.layout(&parse(grad).unwrap());
        assert_eq!((l.m, l.n, l.k), (4, 2, 25), "{l:?}");
        // Reads that could leave the buffer (one row too few), a constant offset, or a
        // division are not strided views: no contraction through them.
        for bad in [
            two.replace("f64[2, 35]", "f64[2, 30]"),
            one.replace("i2 + i0]", "(i2 + i0) + 1]")
                .replace("f64[3, 10]", "f64[3, 11]"),
            one.replace("i2 + i0]", "(i2 + i0) / 1]"),
        ] {
            assert_eq!(matched(&bad), None, "{bad}");
        }
    }

    #[test]
    fn layout_follows_new_sizes() {
        // `[B, M, K] @ [K, N]`: the batch axis folds into M at run time.
        let small = "
            %0 = input #0 : f32[2, 4, 3]
            %1 = input #1 : f32[3, 5]
            %2 = broadcast %0 axes=[3] : f32[2, 4, 3, 5]
            %3 = broadcast %1 axes=[0, 1] : f32[2, 4, 3, 5]
            %4 = mul %2, %3 : f32[2, 4, 3, 5]
            %5 = reduce sum %4 axes=[2] : f32[2, 4, 5]
            return %5
        ";
        let big = small.replace("[2, 4", "[9, 4").replace("5]", "7]");
        let c = matched(small).unwrap();
        assert_eq!(c.m, Some((NodeId(4), 1)));
        assert_eq!(c.batch.len(), 1);
        assert_eq!(c.batch[0].rhs, Stride::Zero);
        assert_eq!(matched(&big), Some(c.clone()));
        let l = c.layout(&parse(&big).unwrap());
        assert_eq!((l.m, l.n, l.k), (36, 7, 3));
        assert!(l.batch.is_empty());
        // `[K, M] ^T @ [B, K, N]`: lhs is broadcast along the batch, which cannot fold.
        let small = "
            %0 = input #0 : f32[3, 4]
            %1 = input #1 : f32[2, 3, 5]
            %2 = reindex %0 [i1, i0] overflow=0.0 : f32[4, 3]
            %3 = broadcast %2 axes=[0, 3] : f32[2, 4, 3, 5]
            %4 = broadcast %1 axes=[1] : f32[2, 4, 3, 5]
            %5 = mul %3, %4 : f32[2, 4, 3, 5]
            %6 = reduce sum %5 axes=[2] : f32[2, 4, 5]
            return %6
        ";
        let big = small.replace("[2, ", "[9, ").replace("5]", "7]");
        let c = matched(small).unwrap();
        assert_eq!(matched(&big), Some(c.clone()));
        let l = c.layout(&parse(&big).unwrap());
        assert_eq!(
            l,
            GemmLayout {
                m: 4,
                n: 7,
                k: 3,
                dst: MatStrides { rs: 7, cs: 1 },
                lhs: MatStrides { rs: 1, cs: 4 },
                rhs: MatStrides { rs: 7, cs: 1 },
                batch: vec![BatchAxis {
                    extent: 9,
                    dst: 28,
                    lhs: 0,
                    rhs: 21
                }],
            }
        );
        check_values(&big.replace("f32", "f64"));
    }

    #[test]
    fn stops_at_the_first_materialised_node() {
        let text = "
            %0 = input #0 : f32[3, 4]
            %1 = input #1 : f32[3, 5]
            %2 = reindex %0 [i1, i0] overflow=0.0 : f32[4, 3]
            %3 = broadcast %2 axes=[2] : f32[4, 3, 5]
            %4 = broadcast %1 axes=[0] : f32[4, 3, 5]
            %5 = mul %3, %4 : f32[4, 3, 5]
            %6 = reduce sum %5 axes=[1] : f32[4, 5]
            return %6
        ";
        let g = parse(text).unwrap();
        let c = match_contraction(&g, NodeId(6), &|n| {
            n == NodeId(2) || matches!(g.node(n).op, Op::Input { .. })
        })
        .unwrap();
        assert_eq!(c.lhs, NodeId(2));
        assert_eq!(c.lhs_strides.rs, Stride::Product(vec![(NodeId(2), 1)]));
        // A non-view between the source and the mul, when that node is not materialised.
        let g2 = parse(&text.replace(
            "reindex %0 [i1, i0] overflow=0.0",
            "reindex %0 [i1, i0] if [i0<1] overflow=0.0",
        ))
        .unwrap();
        assert_eq!(match_contraction(&g2, NodeId(6), &inputs_only(&g2)), None);
    }

    #[test]
    fn near_misses_do_not_match() {
        let base = "
            %0 = input #0 : f32[4, 3]
            %1 = input #1 : f32[3, 5]
            %2 = broadcast %0 axes=[2] : f32[4, 3, 5]
            %3 = broadcast %1 axes=[0] : f32[4, 3, 5]
            %4 = mul %2, %3 : f32[4, 3, 5]
            %5 = reduce sum %4 axes=[1] : f32[4, 5]
            return %5
        ";
        assert!(matched(base).is_some());
        // A product reduction.
        assert_eq!(matched(&base.replace("reduce sum", "reduce prod")), None);
        // A reduction over a non-contracted axis (M, N).
        assert_eq!(
            matched(&base.replace("axes=[1] : f32[4, 5]", "axes=[0] : f32[3, 5]")),
            None
        );
        assert_eq!(
            matched(&base.replace("axes=[1] : f32[4, 5]", "axes=[2] : f32[4, 3]")),
            None
        );
        // Over K and N: no N axis is left (a sum over further axes is matched only as a batch
        // of real matrix products, see tests/matmul.rs).
        assert_eq!(
            matched(&base.replace("axes=[1] : f32[4, 5]", "axes=[1, 2] : f32[4]")),
            None
        );
        // A batch axis summed with K: `Σ_b A[b] @ B[b]` (dst stride 0 along b).
        let batched = "
            %0 = input #0 : f64[2, 4, 3]
            %1 = input #1 : f64[2, 3, 5]
            %2 = broadcast %0 axes=[3] : f64[2, 4, 3, 5]
            %3 = broadcast %1 axes=[1] : f64[2, 4, 3, 5]
            %4 = mul %2, %3 : f64[2, 4, 3, 5]
            %5 = reduce sum %4 axes=[0, 2] : f64[4, 5]
            return %5
        ";
        let summed = check_values(batched);
        assert_eq!(summed.batch.len(), 1);
        assert_eq!(summed.batch[0].dst, Stride::Zero);
        // An add instead of a mul.
        assert_eq!(matched(&base.replace("mul %2", "add %2")), None);
        // An element-wise op between the broadcast and the mul.
        assert_eq!(
            matched(&base.replace(
                "%4 = mul %2, %3",
                "%6 = exp %2 : f32[4, 3, 5]\n%4 = mul %6, %3"
            )),
            None
        );
        // An element-wise op below the broadcast.
        assert_eq!(
            matched(&base.replace(
                "%2 = broadcast %0",
                "%6 = neg %0 : f32[4, 3]\n%2 = broadcast %6"
            )),
            None
        );
        // Non-float dtypes.
        assert_eq!(matched(&base.replace("f32", "i32")), None);
        assert_eq!(matched(&base.replace("f32", "f16")), None);
        // K broadcast in both operands.
        assert_eq!(
            matched(
                "
                %0 = input #0 : f32[4]
                %1 = input #1 : f32[5]
                %2 = broadcast %0 axes=[1, 2] : f32[4, 3, 5]
                %3 = broadcast %1 axes=[0, 1] : f32[4, 3, 5]
                %4 = mul %2, %3 : f32[4, 3, 5]
                %5 = reduce sum %4 axes=[1] : f32[4, 5]
                return %5
            "
            ),
            None
        );
        // K read by one operand only.
        assert_eq!(
            matched(
                "
                %0 = input #0 : f32[4, 3]
                %1 = input #1 : f32[5]
                %2 = broadcast %0 axes=[2] : f32[4, 3, 5]
                %3 = broadcast %1 axes=[0, 1] : f32[4, 3, 5]
                %4 = mul %2, %3 : f32[4, 3, 5]
                %5 = reduce sum %4 axes=[1] : f32[4, 5]
                return %5
            "
            ),
            None
        );
        // Two axes read by lhs only: the earlier one is a batch axis (and the values agree).
        check_values(
            "
            %0 = input #0 : f64[2, 4, 3]
            %1 = input #1 : f64[3, 5]
            %2 = broadcast %0 axes=[3] : f64[2, 4, 3, 5]
            %3 = broadcast %1 axes=[0, 1] : f64[2, 4, 3, 5]
            %4 = mul %2, %3 : f64[2, 4, 3, 5]
            %5 = reduce sum %4 axes=[2] : f64[2, 4, 5]
            return %5
        ",
        );
        // A reshape that regroups a buffer's axes is a buffer itself (the schedule aliases
        // it): the operand is the reshape, read through the transpose above it.
        let regrouped = base.replace(
            "%2 = broadcast %0 axes=[2] : f32[4, 3, 5]",
            "%6 = reshape %0 : f32[3, 4]\n%7 = reindex %6 [i1, i0] overflow=0.0 : f32[4, 3]\n%2 = broadcast %7 axes=[2] : f32[4, 3, 5]",
        );
        let c = matched(&regrouped).expect("a reshape of an input is a buffer");
        let g = parse(&regrouped).unwrap();
        assert_eq!(g.node(c.lhs).op, Op::Reshape);
        // A reindex that is not a permutation (a flip), and a constant source.
        assert_eq!(
            matched(&base.replace(
                "%2 = broadcast %0 axes=[2] : f32[4, 3, 5]",
                "%6 = reindex %0 [i0, (m1-1)-i1] overflow=0.0 : f32[4, 3]\n%2 = broadcast %6 axes=[2] : f32[4, 3, 5]"
            )),
            None
        );
        assert_eq!(
            matched(&base.replace("%0 = input #0 : f32[4, 3]", "%0 = const 1.0 : f32[4, 3]")),
            None
        );
    }
}
