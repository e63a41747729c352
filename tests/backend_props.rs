//! Every meta-op on the native CPU backend against the reference interpreter, on random shapes
//! and values, through views (transpose, slice with step, flip, broadcast) and size-0/1 axes.
//!
//! Bounds, stated and asserted:
//! - exact ops (arithmetic, comparisons, logic, casts, where, reindexing, min/max reductions):
//!   bitwise equal (NaN equals NaN);
//! - f32 exp, log, sin, cos, tanh, sigmoid, erf: within 3 ulp of the reference (the inline
//!   polynomials are within 1.56 ulp of the correctly rounded result, the reference's libm
//!   within about 1);
//! - float sum/prod reductions: within 1 ulp (both accumulate in f64 and round once; only the
//!   order of the f64 additions differs);
//! - scatters (`reindex_reduce`): max and integer sums bitwise; f32 sums of `n` positive terms
//!   within `2n` ulp, the bound for summing them in another order (a large scatter whose writes
//!   collide is split across threads with private partial sums, which reassociates them).

use metajit::metaops::{
    BinaryOp, DType, Graph, HostData, Node, NodeId, Op, ReduceOp, Scalar, Shape, UnaryOp,
};
use metajit::{GraphMode, run_graph_with};
use proptest::prelude::*;

fn ulp_distance(a: f32, b: f32) -> u64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
        return u64::MAX;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i64::from(i32::MIN) - i64::from(i)
        } else {
            i64::from(i)
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Compares the compiled result with the reference within `ulps` (0: bitwise).
fn check(g: &Graph, inputs: &[HostData], ulps: u64) -> Result<(), TestCaseError> {
    let want = run_graph_with(g, inputs, GraphMode::Reference)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = run_graph_with(g, inputs, GraphMode::Compiled)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (w, o) in want.iter().zip(&got) {
        prop_assert_eq!(w.dtype(), o.dtype());
        prop_assert_eq!(w.len(), o.len());
        for i in 0..w.len() {
            let (x, y) = (w.get(i), o.get(i));
            let ok = match (x, y) {
                (Scalar::F32(a), Scalar::F32(b)) => ulp_distance(a, b) <= ulps,
                _ => x == y || (x.is_nan() && y.is_nan()),
            };
            prop_assert!(
                ok,
                "element {} differs: reference {:?}, compiled {:?}\n{}",
                i,
                x,
                y,
                g
            );
        }
    }
    Ok(())
}

/// Random values with the usual suspects mixed in.
fn values(n: usize, seed: u64, dtype: DType) -> HostData {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let special = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        2.5,
        -2.5,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        80.0,
        -80.0,
        1e-40,
    ];
    HostData::from_scalars(
        dtype,
        (0..n).map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = if s.is_multiple_of(7) {
                special[(s >> 8) as usize % special.len()]
            } else {
                ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 20.0
            };
            Scalar::F64(if dtype.is_float() { v } else { v.round() })
        }),
    )
}

/// A source tensor of `shape` seen through a random view: the input itself, or a transposed,
/// flipped or strided-sliced reindex of a larger input, or a broadcast.
fn viewed(
    g: &mut Graph,
    inputs: &mut Vec<HostData>,
    shape: &[usize],
    dtype: DType,
    view: u8,
    seed: u64,
) -> NodeId {
    let push = |g: &mut Graph, op: Op, ins: Vec<NodeId>, shape: Vec<usize>| {
        g.push(Node {
            op,
            inputs: ins,
            dtype,
            shape: Shape::new(shape),
        })
        .unwrap()
    };
    let input = |g: &mut Graph, inputs: &mut Vec<HostData>, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        inputs.push(values(n, seed + inputs.len() as u64, dtype));
        push(
            g,
            Op::Input {
                slot: inputs.len() - 1,
            },
            vec![],
            shape,
        )
    };
    use metajit::metaops::{IndexExpr as E, IndexMap};
    let r = shape.len();
    match view % 4 {
        // Transposed: the input has the reversed shape; read it with reversed indices.
        1 if r >= 2 => {
            let rev: Vec<usize> = shape.iter().rev().copied().collect();
            let x = input(g, inputs, rev);
            let exprs = (0..r).map(|k| E::Idx(r - 1 - k)).collect();
            let map = IndexMap {
                exprs,
                overflow: Scalar::zero(dtype),
                conds: vec![],
            };
            push(g, Op::Reindex(map), vec![x], shape.to_vec())
        }
        // Strided slice of a larger input along the last axis (step 2, start 1), flipped.
        2 if r >= 1 => {
            let mut big = shape.to_vec();
            big[r - 1] = shape[r - 1] * 2 + 1;
            let x = input(g, inputs, big);
            let exprs = (0..r)
                .map(|k| {
                    if k == r - 1 {
                        (E::IterDim(k) - 1 - E::Idx(k)) * 2 + 1
                    } else {
                        E::Idx(k)
                    }
                })
                .collect();
            let map = IndexMap {
                exprs,
                overflow: Scalar::zero(dtype),
                conds: vec![],
            };
            push(g, Op::Reindex(map), vec![x], shape.to_vec())
        }
        // Broadcast along the first axis.
        3 if r >= 1 => {
            let x = input(g, inputs, shape[1..].to_vec());
            push(
                g,
                Op::BroadcastTo { axes: vec![0] },
                vec![x],
                shape.to_vec(),
            )
        }
        _ => input(g, inputs, shape.to_vec()),
    }
}

fn shapes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![Just(0usize), Just(1), 2usize..7, Just(17)],
        0..4,
    )
}

const EXACT_UNARY: [UnaryOp; 7] = [
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Recip,
    UnaryOp::Sqrt,
    UnaryOp::Floor,
    UnaryOp::Ceil,
    UnaryOp::Round,
];
const MATH_UNARY: [UnaryOp; 7] = [
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::Erf,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn unary_ops(shape in shapes(), view in 0u8..4, op in 0usize..14, seed in any::<u64>()) {
        let (op, ulps) = if op < 7 { (EXACT_UNARY[op], 0) } else { (MATH_UNARY[op - 7], 3) };
        for dtype in [DType::F32, DType::F64, DType::I32] {
            if !op.accepts(dtype) {
                continue;
            }
            let mut g = Graph::new();
            let mut inputs = Vec::new();
            let x = viewed(&mut g, &mut inputs, &shape, dtype, view, seed);
            let y = g.push(Node { op: Op::Unary(op), inputs: vec![x], dtype, shape: Shape::new(shape.clone()) }).unwrap();
            g.outputs = vec![y];
            // f64 transcendentals go through libm on both sides: exact.
            check(&g, &inputs, if dtype == DType::F32 { ulps } else { 0 })?;
        }
    }

    #[test]
    fn binary_ops(shape in shapes(), va in 0u8..4, vb in 0u8..4, op in 0usize..15, seed in any::<u64>()) {
        let op = BinaryOp::ALL[op];
        for dtype in [DType::F32, DType::I32, DType::I64, DType::Bool, DType::U8] {
            if !op.accepts(dtype) {
                continue;
            }
            let mut g = Graph::new();
            let mut inputs = Vec::new();
            let a = viewed(&mut g, &mut inputs, &shape, dtype, va, seed);
            let b = viewed(&mut g, &mut inputs, &shape, dtype, vb, seed ^ 0xabc);
            let out = op.output_dtype(dtype);
            let y = g.push(Node { op: Op::Binary(op), inputs: vec![a, b], dtype: out, shape: Shape::new(shape.clone()) }).unwrap();
            g.outputs = vec![y];
            check(&g, &inputs, 0)?;
        }
    }

    #[test]
    fn where_and_cast(shape in shapes(), view in 0u8..4, to in 0usize..8, seed in any::<u64>()) {
        let mut g = Graph::new();
        let mut inputs = Vec::new();
        let x = viewed(&mut g, &mut inputs, &shape, DType::F32, view, seed);
        let s = Shape::new(shape.clone());
        let to = DType::ALL[to];
        let c = g.push(Node { op: Op::Cast(to), inputs: vec![x], dtype: to, shape: s.clone() }).unwrap();
        let zero = g.push(Node { op: Op::Const(Scalar::zero(DType::F32)), inputs: vec![], dtype: DType::F32, shape: s.clone() }).unwrap();
        let m = g.push(Node { op: Op::Binary(BinaryOp::Lt), inputs: vec![x, zero], dtype: DType::Bool, shape: s.clone() }).unwrap();
        let neg = g.push(Node { op: Op::Unary(UnaryOp::Neg), inputs: vec![x], dtype: DType::F32, shape: s.clone() }).unwrap();
        let w = g.push(Node { op: Op::Where, inputs: vec![m, neg, x], dtype: DType::F32, shape: s }).unwrap();
        g.outputs = vec![c, w];
        check(&g, &inputs, 0)?;
    }

    #[test]
    fn reductions(shape in shapes(), view in 0u8..4, op in 0usize..6, axes_mask in 0u8..16, keepdims in any::<bool>(), seed in any::<u64>()) {
        let op = ReduceOp::ALL[op];
        let axes: Vec<usize> = (0..shape.len()).filter(|a| axes_mask & (1 << a) != 0).collect();
        for dtype in [DType::F32, DType::I64, DType::Bool] {
            if !op.accepts(dtype) {
                continue;
            }
            if matches!(op, ReduceOp::Max | ReduceOp::Min) && axes.iter().any(|&a| shape[a] == 0) {
                continue; // no identity: refused by the verifier
            }
            let mut g = Graph::new();
            let mut inputs = Vec::new();
            let x = viewed(&mut g, &mut inputs, &shape, dtype, view, seed);
            let out: Vec<usize> = (0..shape.len())
                .filter_map(|a| match (axes.contains(&a), keepdims) {
                    (true, true) => Some(1),
                    (true, false) => None,
                    (false, _) => Some(shape[a]),
                })
                .collect();
            let y = g.push(Node { op: Op::Reduce { op, axes: axes.clone(), keepdims }, inputs: vec![x], dtype, shape: Shape::new(out) }).unwrap();
            g.outputs = vec![y];
            let ulps = if matches!(op, ReduceOp::Sum | ReduceOp::Prod) { 1 } else { 0 };
            check(&g, &inputs, ulps)?;
        }
    }
}

/// Extents for scatters: empty, singleton, small, and large enough that the executor splits
/// the scatter across threads (with 2 or more).
fn scatter_extent() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        2usize..7,
        Just(17),
        Just(300),
        Just(700)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// `ReindexReduce` through the executor (scheduled, launched with its checks, split across
    /// threads where the schedule and size allow) against the reference: the gradients of a
    /// transpose, a strided slice, a pad, a flip (disjoint writes, split in place), of an
    /// embedding with colliding and out-of-range indices and of a diagonal (colliding writes,
    /// privatised when large). f32 sums within the reassociation bound (see the module
    /// documentation); max and i32 sums bitwise.
    #[test]
    fn scatters(a in scatter_extent(), b in scatter_extent(), kind in 0u8..6, op in 0usize..3, seed in any::<u64>()) {
        use metajit::metaops::{IndexExpr as E, IndexMap};
        let (op, dtype) = [(ReduceOp::Sum, DType::F32), (ReduceOp::Max, DType::F32), (ReduceOp::Sum, DType::I32)][op];
        let mut g = Graph::new();
        let mut x = values(a * b, seed, dtype);
        if let (ReduceOp::Sum, HostData::F32(v)) = (op, &mut x) {
            v.iter_mut().for_each(|e| *e = e.abs());
        }
        let mut inputs = vec![x];
        let src = g.push(Node { op: Op::Input { slot: 0 }, inputs: vec![], dtype, shape: Shape::new(vec![a, b]) }).unwrap();
        let mut ins = vec![src];
        let (i0, i1) = (E::idx(0), E::idx(1));
        let (target, exprs) = match kind {
            0 => (vec![b, a], vec![i1, i0]),
            1 => (vec![2 * a + 1, b], vec![i0 * 2 + 1, i1]),
            2 => (vec![a.saturating_sub(2), b], vec![i0 - 1, i1]),
            3 => (vec![a, b], vec![E::TargetDim(0) - 1 - i0, i1]),
            4 => {
                let v = (a / 3).max(1);
                let mut s = seed | 1;
                let idx: Vec<i64> = (0..a).map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % (v as u64 + 2)) as i64 - 1
                }).collect();
                inputs.push(HostData::I64(idx));
                ins.push(g.push(Node { op: Op::Input { slot: 1 }, inputs: vec![], dtype: DType::I64, shape: Shape::new(vec![a]) }).unwrap());
                (vec![v, b], vec![E::Extra(0, vec![i0]), i1])
            }
            _ => (vec![(a + b).saturating_sub(1)], vec![i0 + i1]),
        };
        let map = IndexMap { exprs, overflow: Scalar::zero(dtype), conds: vec![] };
        let y = g.push(Node { op: Op::ReindexReduce { op, map }, inputs: ins, dtype, shape: Shape::new(target) }).unwrap();
        g.outputs = vec![y];
        // Summing n positive f32 terms in another order moves the result by at most about
        // (n - 1)·2^-24 of it, i.e. 2n ulp; no element here receives more than max(a, b) terms.
        let ulps = if (op, dtype) == (ReduceOp::Sum, DType::F32) { 2 * a.max(b) as u64 } else { 0 };
        check(&g, &inputs, ulps)?;
    }
}
