//! The reference interpreter against hand-computed values: every element-wise op on every dtype
//! it accepts, the semantic corners the module doc of `interp.rs` fixes, every reindex and
//! reduce form, the sources, and the errors `run` reports.
//!
//! Expected values are written out by hand; where one is not obvious a comment derives it.

use std::collections::HashSet;

use metajit_metaops::interp::{self, InterpError, eval_binary, eval_reduce_combine, eval_unary};
use metajit_metaops::philox;
use metajit_metaops::{
    BinaryOp, DType, Distribution, Graph, HostData, IndexExpr, IndexMap, Node, NodeId, Op,
    ReduceOp, Scalar, Shape, UnaryOp, verify,
};

use DType::{BF16, Bool, F16, F32, F64, I32, I64, U8};
use IndexExpr::{Extra, Idx, IterDim, TargetDim};

const FLOATS: [DType; 4] = [F16, BF16, F32, F64];

/// A binary-op table row: op, left inputs, right inputs, expected outputs.
type BinCase<'a, T> = (BinaryOp, &'a [T], &'a [T], &'a [T]);
/// An f32 function, the f32 form of a unary op.
type F32Fn = fn(f32) -> f32;
/// A broadcast row: input shape, output shape, new axes, expected elements.
type BroadcastCase<'a> = (&'a [usize], &'a [usize], &'a [usize], &'a [i64]);
const NAN: f64 = f64::NAN;
const INF: f64 = f64::INFINITY;

// ---------------------------------------------------------------------------------------------
// Helpers.

fn node(op: Op, inputs: &[NodeId], dtype: DType, shape: impl Into<Shape>) -> Node {
    Node {
        op,
        inputs: inputs.to_vec(),
        dtype,
        shape: shape.into(),
    }
}

fn push(g: &mut Graph, op: Op, inputs: &[NodeId], dtype: DType, shape: impl Into<Shape>) -> NodeId {
    g.push(node(op, inputs, dtype, shape))
        .unwrap_or_else(|e| panic!("push failed: {e}"))
}

fn input(g: &mut Graph, slot: usize, dtype: DType, shape: impl Into<Shape>) -> NodeId {
    push(g, Op::Input { slot }, &[], dtype, shape)
}

fn run(g: &Graph, ins: &[&HostData]) -> Vec<HostData> {
    interp::run(g, ins).unwrap_or_else(|e| panic!("run failed: {e}"))
}

/// Runs a graph with a single output.
fn run1(g: &Graph, ins: &[&HostData]) -> HostData {
    let mut out = run(g, ins);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

/// A 1-D buffer of `dtype` from f64 values (cast with `Scalar::cast`).
fn fd(dtype: DType, v: &[f64]) -> HostData {
    HostData::from_scalars(dtype, v.iter().map(|&x| Scalar::F64(x)))
}

/// A 1-D buffer of `dtype` from i64 values (cast with `Scalar::cast`, so they wrap).
fn id(dtype: DType, v: &[i64]) -> HostData {
    HostData::from_scalars(dtype, v.iter().map(|&x| Scalar::I64(x)))
}

fn bools(v: &[bool]) -> HostData {
    HostData::Bool(v.to_vec())
}

fn scalars(h: &HostData) -> Vec<Scalar> {
    (0..h.len()).map(|i| h.get(i)).collect()
}

/// Equal bit patterns, except that any NaN equals any NaN (payloads differ between
/// platforms' `0/0` and `f64::NAN`).
fn same(a: Scalar, b: Scalar) -> bool {
    a.dtype() == b.dtype() && ((a.is_nan() && b.is_nan()) || a == b)
}

#[track_caller]
fn assert_same(got: &HostData, want: &HostData, what: &str) {
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in scalars(got).into_iter().zip(scalars(want)).enumerate() {
        assert!(same(g, w), "{what}: element {i}: got {g}, want {w}");
    }
}

/// Tolerance relative to the expected value: about one unit in the last place of the dtype
/// (f16/bf16 results are the f32 result rounded once, so within one of their ulps).
fn tol(d: DType) -> f64 {
    match d {
        F16 => 1e-3,
        BF16 => 8e-3,
        F32 => 2.5e-7,
        _ => 1e-15,
    }
}

/// Builds `x -> op -> out` on a 1-D input and runs it.
fn unary(op: UnaryOp, x: &HostData) -> HostData {
    let mut g = Graph::new();
    let n = x.len();
    let a = input(&mut g, 0, x.dtype(), [n]);
    let y = push(&mut g, Op::Unary(op), &[a], x.dtype(), [n]);
    g.outputs.push(y);
    run1(&g, &[x])
}

/// Builds `(a, b) -> op -> out` on 1-D inputs and runs it.
fn binary(op: BinaryOp, a: &HostData, b: &HostData) -> HostData {
    let mut g = Graph::new();
    let (n, d) = (a.len(), a.dtype());
    let x = input(&mut g, 0, d, [n]);
    let y = input(&mut g, 1, d, [n]);
    let z = push(&mut g, Op::Binary(op), &[x, y], op.output_dtype(d), [n]);
    g.outputs.push(z);
    run1(&g, &[a, b])
}

/// Every (op, dtype) pair that `accepts` allows was tested, by the record in `covered`.
#[track_caller]
fn assert_all_covered<O: Copy + Eq + std::hash::Hash>(
    all: impl IntoIterator<Item = O>,
    accepts: impl Fn(O, DType) -> bool,
    name: impl Fn(O) -> &'static str,
    covered: &HashSet<(O, DType)>,
) {
    for op in all {
        for d in DType::ALL {
            if accepts(op, d) {
                assert!(covered.contains(&(op, d)), "{} on {d} not tested", name(op));
            }
        }
    }
}

/// Runs a unary op and checks it bit-exactly, recording the (op, dtype) pair as tested.
#[track_caller]
fn check_unary(
    op: UnaryOp,
    x: &HostData,
    want: &HostData,
    covered: &mut HashSet<(UnaryOp, DType)>,
) {
    covered.insert((op, x.dtype()));
    assert_same(
        &unary(op, x),
        want,
        &format!("{} on {}", op.name(), x.dtype()),
    );
}

// ---------------------------------------------------------------------------------------------
// Unary ops.

#[test]
fn unary_ops_on_every_accepted_dtype() {
    let mut covered = HashSet::new();
    use UnaryOp::*;
    // Exact cases for every float dtype: (op, inputs, outputs). Every value is representable in
    // f16 and bf16 (or its rounding does not change the answer: floor(2.7) is 2 in each).
    let exact: &[(UnaryOp, &[f64], &[f64])] = &[
        (Neg, &[1.5, 0.0, -INF, NAN], &[-1.5, -0.0, INF, NAN]),
        (Abs, &[-2.5, -0.0, -INF, 3.0], &[2.5, 0.0, INF, 3.0]),
        (
            Recip,
            &[4.0, -0.5, 0.0, -0.0, INF],
            &[0.25, -2.0, INF, -INF, 0.0],
        ),
        // sqrt(-0) = -0 (IEEE); sqrt of a negative is NaN.
        (
            Sqrt,
            &[4.0, 0.25, -1.0, -0.0, INF],
            &[2.0, 0.5, NAN, -0.0, INF],
        ),
        (Exp, &[0.0, -INF, INF, NAN], &[1.0, 0.0, INF, NAN]),
        (Log, &[1.0, 0.0, -1.0, INF], &[0.0, -INF, NAN, INF]),
        (Sin, &[0.0, -0.0], &[0.0, -0.0]),
        (Cos, &[0.0], &[1.0]),
        (Tanh, &[0.0, INF, -INF], &[0.0, 1.0, -1.0]),
        // sigmoid(-inf) = 1/(1+e^inf) = 1/inf = 0; sigmoid(inf) = 1/(1+0) = 1.
        (Sigmoid, &[0.0, INF, -INF], &[0.5, 1.0, 0.0]),
        (Erf, &[0.0, -0.0, INF, -INF], &[0.0, -0.0, 1.0, -1.0]),
        (
            Floor,
            &[2.7, -1.5, -0.0, INF, 3.0],
            &[2.0, -2.0, -0.0, INF, 3.0],
        ),
        // ceil(-0.5) is -0.0 (IEEE keeps the sign).
        (Ceil, &[2.1, -1.5, -0.5, 3.0], &[3.0, -1.0, -0.0, 3.0]),
        // Half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0, -1.5 -> -2, -2.5 -> -2.
        (
            Round,
            &[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.75, 3.0],
            &[0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 4.0, 3.0],
        ),
    ];
    for d in FLOATS {
        for (op, x, want) in exact {
            check_unary(*op, &fd(d, x), &fd(d, want), &mut covered);
        }
    }
    // Transcendental values (from the exact math, to ~1 ulp of each dtype).
    let approx: &[(UnaryOp, f64, f64)] = &[
        (Exp, 1.0, std::f64::consts::E),
        (Log, 2.0, std::f64::consts::LN_2),
        (Sqrt, 2.0, std::f64::consts::SQRT_2),
        (Sin, 1.0, 0.8414709848078965),
        (Cos, 1.0, 0.5403023058681398),
        (Tanh, 1.0, 0.7615941559557649),
        // 1 / (1 + e^-2) = 1 / 1.1353352832366128
        (Sigmoid, 2.0, 0.8807970779778823),
        // 1 / (1 + e^2) = 1 / 8.38905609893065
        (Sigmoid, -2.0, 0.11920292202211755),
        (Erf, 1.0, 0.8427007929497149),
        (Erf, -0.5, -0.5204998778130465),
        (Recip, 3.0, 1.0 / 3.0),
    ];
    for d in FLOATS {
        for &(op, x, want) in approx {
            let got = unary(op, &fd(d, &[x])).get(0);
            assert_eq!(got.dtype(), d);
            let err = (got.to_f64() - want).abs() / want.abs();
            assert!(
                err <= tol(d),
                "{}({x}) on {d}: got {got}, want {want}",
                op.name()
            );
        }
    }
    // sigmoid(-100) in f64 is e^-100 / (1 + e^-100) = 3.7200759760208356e-44; in f32, e^100
    // overflows to inf and the result is exactly 0.
    let s = unary(Sigmoid, &fd(F64, &[-100.0])).get(0).to_f64();
    assert!((s - 3.7200759760208356e-44).abs() < 1e-58, "{s}");
    assert_same(
        &unary(Sigmoid, &fd(F32, &[-100.0])),
        &fd(F32, &[0.0]),
        "sigmoid f32",
    );

    // Signed integers (i32 and i64 alike).
    let ints: &[(UnaryOp, &[i64], &[i64])] = &[
        (Neg, &[5, -7, 0], &[-5, 7, 0]),
        (Abs, &[-7, 7, 0], &[7, 7, 0]),
        (Floor, &[-3, 4], &[-3, 4]),
        (Ceil, &[-3, 4], &[-3, 4]),
        (Round, &[-3, 4], &[-3, 4]),
        // Bitwise not: !x == -x - 1.
        (Not, &[5, 0, -1], &[-6, -1, 0]),
    ];
    for d in [I32, I64] {
        for (op, x, want) in ints {
            check_unary(*op, &id(d, x), &id(d, want), &mut covered);
        }
    }
    // Wrapping at MIN: -MIN == MIN, |MIN| == MIN.
    let m32 = i32::MIN as i64;
    check_unary(Neg, &id(I32, &[m32]), &id(I32, &[m32]), &mut covered);
    check_unary(Abs, &id(I32, &[m32]), &id(I32, &[m32]), &mut covered);
    check_unary(
        Neg,
        &id(I64, &[i64::MIN]),
        &id(I64, &[i64::MIN]),
        &mut covered,
    );
    check_unary(
        Abs,
        &id(I64, &[i64::MIN]),
        &id(I64, &[i64::MIN]),
        &mut covered,
    );
    // u8: neg wraps (256 - x), abs and the roundings are the identity, not is bitwise.
    let u8s: &[(UnaryOp, &[i64], &[i64])] = &[
        (Neg, &[1, 0, 200], &[255, 0, 56]),
        (Abs, &[200, 0], &[200, 0]),
        (Floor, &[7], &[7]),
        (Ceil, &[7], &[7]),
        (Round, &[7], &[7]),
        // !0b1010_0101 = 0b0101_1010 = 90
        (Not, &[0, 165, 255], &[255, 90, 0]),
    ];
    for (op, x, want) in u8s {
        check_unary(*op, &id(U8, x), &id(U8, want), &mut covered);
    }
    check_unary(
        Not,
        &bools(&[true, false]),
        &bools(&[false, true]),
        &mut covered,
    );

    assert_all_covered(UnaryOp::ALL, UnaryOp::accepts, UnaryOp::name, &covered);
}

// ---------------------------------------------------------------------------------------------
// Binary ops.

#[test]
fn binary_ops_on_every_accepted_dtype() {
    let mut covered: HashSet<(BinaryOp, DType)> = HashSet::new();
    let mut check = |op: BinaryOp, a: HostData, b: HostData, want: HostData| {
        covered.insert((op, a.dtype()));
        let what = format!("{} on {}", op.name(), a.dtype());
        assert_same(&binary(op, &a, &b), &want, &what);
    };
    use BinaryOp::*;
    // Float cases, exact in every float dtype: (op, a, b, want); comparisons want 1/0.
    let floats: &[BinCase<f64>] = &[
        (
            Add,
            &[1.5, INF, -0.0, -0.0],
            &[2.25, -INF, 0.0, -0.0],
            &[3.75, NAN, 0.0, -0.0],
        ),
        (Sub, &[1.5, INF], &[2.25, INF], &[-0.75, NAN]),
        (
            Mul,
            &[1.5, 0.0, -0.0],
            &[-2.0, INF, 3.0],
            &[-3.0, NAN, -0.0],
        ),
        // True division.
        (
            Div,
            &[3.0, 1.0, -1.0, 0.0, 7.0],
            &[4.0, 0.0, 0.0, 0.0, -2.0],
            &[0.75, INF, -INF, NAN, -3.5],
        ),
        // pow(x, 0) = 1 even for NaN and 0; a negative base to a fractional power is NaN.
        (
            Pow,
            &[2.0, 4.0, 2.0, -2.0, -2.0, 0.0, NAN],
            &[3.0, 0.5, -1.0, 3.0, 0.5, 0.0, 0.0],
            &[8.0, 2.0, 0.5, -8.0, NAN, 1.0, 1.0],
        ),
        // NaN wins from either side; at an exact tie (-0 vs +0) the result is b.
        (
            Max,
            &[1.0, 2.0, NAN, 1.0, -INF, -0.0, 0.0],
            &[2.0, 1.0, 1.0, NAN, -1.0, 0.0, -0.0],
            &[2.0, 2.0, NAN, NAN, -1.0, 0.0, -0.0],
        ),
        (
            Min,
            &[1.0, 2.0, NAN, 1.0, INF, -0.0, 0.0],
            &[2.0, 1.0, 1.0, NAN, 1.0, 0.0, -0.0],
            &[1.0, 1.0, NAN, NAN, 1.0, 0.0, -0.0],
        ),
        // torch.remainder: fmod, then add b when the signs differ.
        //   5.5 mod  2 = fmod 1.5                    =  1.5
        //  -5.5 mod  2 = fmod -1.5, signs differ: +2 =  0.5
        //   5.5 mod -2 = fmod 1.5, signs differ: -2  = -0.5
        //  -5.5 mod -2 = fmod -1.5                   = -1.5
        //  -4 mod 2 = fmod -0.0 (zero: no correction) = -0.0
        //  -3 mod inf = fmod -3, signs differ: +inf  =  inf (Python's -3.0 % inf too)
        (
            Mod,
            &[5.5, -5.5, 5.5, -5.5, 4.0, -4.0, 1.0, 3.0, -3.0],
            &[2.0, 2.0, -2.0, -2.0, 2.0, 2.0, 0.0, INF, INF],
            &[1.5, 0.5, -0.5, -1.5, 0.0, -0.0, NAN, 3.0, INF],
        ),
        (
            Lt,
            &[1.0, 2.0, 1.0, NAN, -0.0, -INF],
            &[2.0, 1.0, 1.0, 1.0, 0.0, INF],
            &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        ),
        (
            Le,
            &[1.0, 2.0, NAN, -0.0],
            &[1.0, 1.0, NAN, 0.0],
            &[1.0, 0.0, 0.0, 1.0],
        ),
        (
            Eq,
            &[1.0, 1.0, NAN, -0.0],
            &[1.0, 2.0, NAN, 0.0],
            &[1.0, 0.0, 0.0, 1.0],
        ),
        (
            Ne,
            &[1.0, 1.0, NAN, -0.0],
            &[1.0, 2.0, NAN, 0.0],
            &[0.0, 1.0, 1.0, 0.0],
        ),
    ];
    for d in FLOATS {
        for (op, a, b, want) in floats {
            check(*op, fd(d, a), fd(d, b), fd(op.output_dtype(d), want));
        }
    }

    // Signed integers, i32 and i64 alike.
    let ints: &[BinCase<i64>] = &[
        (Add, &[2, -7], &[3, 3], &[5, -4]),
        (Sub, &[2, -7], &[3, -3], &[-1, -4]),
        (Mul, &[-4, 0], &[3, -5], &[-12, 0]),
        // Floor division: 7/2 = 3, -7/2 = floor(-3.5) = -4, 7/-2 = -4, -7/-2 = 3; x/0 = 0.
        (
            Div,
            &[7, -7, 7, -7, 6, -6, 5, -5, 0],
            &[2, 2, -2, -2, 3, 3, 0, 0, 4],
            &[3, -4, -4, 3, 2, -2, 0, 0, 0],
        ),
        // Floor modulo (sign of the divisor): a - floor(a/b)*b; x mod 0 = 0.
        //   -7 mod 2 = -7 - (-4)(2) = 1;  7 mod -2 = 7 - (-4)(-2) = -1
        (
            Mod,
            &[7, -7, 7, -7, 6, 5, -5],
            &[2, 2, -2, -2, 3, 0, 0],
            &[1, 1, -1, -1, 0, 0, 0],
        ),
        // x^0 = 1 (0^0 too); negative exponents: 1 -> 1, -1 -> ±1 by parity, else 0.
        (
            Pow,
            &[3, -2, 0, 5, 2, 1, -1, -1, 0, -3],
            &[4, 3, 0, 0, -1, -5, -3, -4, -1, 2],
            &[81, -8, 1, 1, 0, 1, -1, 1, 0, 9],
        ),
        (Max, &[-3, 2, 4], &[2, -3, 4], &[2, 2, 4]),
        (Min, &[-3, 2, 4], &[2, -3, 4], &[-3, -3, 4]),
        (Lt, &[-3, 2, 2], &[2, 2, -3], &[1, 0, 0]),
        (Le, &[-3, 2, 2], &[2, 2, -3], &[1, 1, 0]),
        (Eq, &[-3, 2], &[2, 2], &[0, 1]),
        (Ne, &[-3, 2], &[2, 2], &[1, 0]),
        // 12 = 0b1100, 10 = 0b1010: and 0b1000, or 0b1110, xor 0b0110; -1 is all ones.
        (And, &[12, -1], &[10, 5], &[8, 5]),
        (Or, &[12, -1], &[10, 5], &[14, -1]),
        (Xor, &[12, -1], &[10, 0], &[6, -1]),
    ];
    for d in [I32, I64] {
        for (op, a, b, want) in ints {
            let wd = op.output_dtype(d);
            check(*op, id(d, a), id(d, b), id(wd, want));
        }
    }
    // Wrapping per width.
    let (max32, min32) = (i32::MAX as i64, i32::MIN as i64);
    check(Add, id(I32, &[max32]), id(I32, &[1]), id(I32, &[min32]));
    check(Sub, id(I32, &[min32]), id(I32, &[1]), id(I32, &[max32]));
    check(Mul, id(I32, &[65536]), id(I32, &[65536]), id(I32, &[0]));
    check(Div, id(I32, &[min32]), id(I32, &[-1]), id(I32, &[min32]));
    check(Mod, id(I32, &[min32]), id(I32, &[-1]), id(I32, &[0]));
    // 2^31 wraps to MIN, 2^32 to 0; 3^21 = 10460353203 = 2 * 2^32 + 1870418611.
    check(
        Pow,
        id(I32, &[2, 2, 3]),
        id(I32, &[31, 32, 21]),
        id(I32, &[min32, 0, 1870418611]),
    );
    check(
        Add,
        id(I64, &[i64::MAX]),
        id(I64, &[1]),
        id(I64, &[i64::MIN]),
    );
    check(Mul, id(I64, &[i64::MAX]), id(I64, &[2]), id(I64, &[-2]));
    check(
        Div,
        id(I64, &[i64::MIN]),
        id(I64, &[-1]),
        id(I64, &[i64::MIN]),
    );
    check(Mod, id(I64, &[i64::MIN]), id(I64, &[-1]), id(I64, &[0]));
    check(
        Pow,
        id(I64, &[2, 2]),
        id(I64, &[63, 64]),
        id(I64, &[i64::MIN, 0]),
    );

    // u8: unsigned, wrapping.
    let u8s: &[BinCase<i64>] = &[
        (Add, &[200, 1], &[100, 2], &[44, 3]),
        (Sub, &[3, 5], &[5, 3], &[254, 2]),
        // 16*16 = 256 -> 0; 20*13 = 260 -> 4
        (Mul, &[16, 20], &[16, 13], &[0, 4]),
        (Div, &[7, 255, 200], &[2, 16, 0], &[3, 15, 0]),
        // 200 = 28*7 + 4
        (Mod, &[200, 7], &[7, 0], &[4, 0]),
        // 2^8 = 256 -> 0; 3^5 = 243; 3^6 = 729 = 2*256 + 217
        (Pow, &[2, 3, 3, 0], &[8, 5, 6, 0], &[0, 243, 217, 1]),
        (Max, &[200, 5], &[100, 6], &[200, 6]),
        (Min, &[200, 5], &[100, 6], &[100, 5]),
        (Lt, &[200, 5], &[100, 6], &[0, 1]),
        (Le, &[200, 6], &[100, 6], &[0, 1]),
        (Eq, &[200, 6], &[100, 6], &[0, 1]),
        (Ne, &[200, 6], &[100, 6], &[1, 0]),
        (And, &[12, 255], &[10, 15], &[8, 15]),
        (Or, &[12], &[10], &[14]),
        (Xor, &[12, 255], &[10, 15], &[6, 240]),
    ];
    for (op, a, b, want) in u8s {
        check(*op, id(U8, a), id(U8, b), id(op.output_dtype(U8), want));
    }

    // Bool: add = or, mul = and, max = or, min = and, false < true, logic is logical.
    let (t, f) = (true, false);
    let a = bools(&[f, f, t, t]);
    let b = bools(&[f, t, f, t]);
    let table: &[(BinaryOp, [bool; 4])] = &[
        (Add, [f, t, t, t]),
        (Mul, [f, f, f, t]),
        (Max, [f, t, t, t]),
        (Min, [f, f, f, t]),
        (Lt, [f, t, f, f]),
        (Le, [t, t, f, t]),
        (Eq, [t, f, f, t]),
        (Ne, [f, t, t, f]),
        (And, [f, f, f, t]),
        (Or, [f, t, t, t]),
        (Xor, [f, t, t, f]),
    ];
    for (op, want) in table {
        check(*op, a.clone(), b.clone(), bools(want));
    }

    assert_all_covered(BinaryOp::ALL, BinaryOp::accepts, BinaryOp::name, &covered);
}

#[test]
fn where_on_every_dtype() {
    for d in DType::ALL {
        let mut g = Graph::new();
        let c = input(&mut g, 0, Bool, [3]);
        let a = input(&mut g, 1, d, [3]);
        let b = input(&mut g, 2, d, [3]);
        let w = push(&mut g, Op::Where, &[c, a, b], d, [3]);
        g.outputs.push(w);
        // cond [t, f, t] picks a0, b1, a2 = 1, 0, 0.
        let out = run1(
            &g,
            &[
                &bools(&[true, false, true]),
                &id(d, &[1, 1, 0]),
                &id(d, &[0, 0, 1]),
            ],
        );
        assert_same(&out, &id(d, &[1, 0, 0]), &format!("where on {d}"));
    }
    // The unselected side does not leak: NaN and -0.0 pass through bit-exactly.
    let mut g = Graph::new();
    let c = input(&mut g, 0, Bool, [2]);
    let a = input(&mut g, 1, F32, [2]);
    let b = input(&mut g, 2, F32, [2]);
    let w = push(&mut g, Op::Where, &[c, a, b], F32, [2]);
    g.outputs.push(w);
    let out = run1(
        &g,
        &[
            &bools(&[true, false]),
            &fd(F32, &[-0.0, NAN]),
            &fd(F32, &[NAN, -0.0]),
        ],
    );
    assert_same(&out, &fd(F32, &[-0.0, -0.0]), "where picks");
}

fn cast(x: &HostData, to: DType) -> HostData {
    let mut g = Graph::new();
    let n = x.len();
    let a = input(&mut g, 0, x.dtype(), [n]);
    let y = push(&mut g, Op::Cast(to), &[a], to, [n]);
    g.outputs.push(y);
    run1(&g, &[x])
}

#[test]
fn cast_between_every_pair_of_dtypes() {
    for from in DType::ALL {
        for to in DType::ALL {
            let x = HostData::from_scalars(from, [Scalar::zero(from), Scalar::one(from)]);
            let want = HostData::from_scalars(to, [Scalar::zero(to), Scalar::one(to)]);
            assert_same(&cast(&x, to), &want, &format!("cast {from} -> {to}"));
        }
    }
}

#[test]
fn cast_corners() {
    // float -> int truncates toward zero, NaN -> 0, out of range saturates.
    let x = fd(F32, &[2.7, -2.7, NAN, 1e10, -1e10, INF, -0.5]);
    let m32 = (i32::MIN as i64, i32::MAX as i64);
    assert_same(
        &cast(&x, I32),
        &id(I32, &[2, -2, 0, m32.1, m32.0, m32.1, 0]),
        "f32 -> i32",
    );
    assert_same(
        &cast(&x, I64),
        &id(
            I64,
            &[2, -2, 0, 10_000_000_000, -10_000_000_000, i64::MAX, 0],
        ),
        "f32 -> i64",
    );
    // float -> u8 saturates to 0..=255.
    let x = fd(F64, &[300.0, -5.0, 255.9, NAN]);
    assert_same(&cast(&x, U8), &id(U8, &[255, 0, 255, 0]), "f64 -> u8");
    // int -> u8 wraps: 300 = 256 + 44, -1 = 255, 256 = 0.
    assert_same(
        &cast(&id(I32, &[300, -1, 256]), U8),
        &id(U8, &[44, 255, 0]),
        "i32 -> u8",
    );
    assert_same(
        &cast(&id(I64, &[300, -1, 256]), U8),
        &id(U8, &[44, 255, 0]),
        "i64 -> u8",
    );
    // i64 -> i32 wraps: 2^32 + 5 = 5.
    assert_same(
        &cast(&id(I64, &[(1 << 32) + 5]), I32),
        &id(I32, &[5]),
        "i64 -> i32",
    );
    // anything -> bool is != 0; NaN is true, -0.0 false.
    assert_same(
        &cast(&fd(F32, &[2.5, 0.0, -0.0, NAN]), Bool),
        &bools(&[true, false, false, true]),
        "f32 -> bool",
    );
    assert_same(
        &cast(&id(U8, &[0, 7]), Bool),
        &bools(&[false, true]),
        "u8 -> bool",
    );
    // Narrowing floats round to nearest even: 1 + 2^-24 (a tie between 1 and 1 + 2^-23) -> 1;
    // 70000 overflows f16 (max 65504) -> inf; 65520 is the f16 rounding midpoint -> inf.
    let tiny = 1.0 + 2f64.powi(-24);
    assert_same(
        &cast(&fd(F64, &[tiny]), F32),
        &fd(F32, &[1.0]),
        "f64 -> f32",
    );
    assert_same(
        &cast(&fd(F32, &[70000.0, 65520.0, 65504.0]), F16),
        &fd(F16, &[INF, INF, 65504.0]),
        "f32 -> f16",
    );
    // bf16 keeps f32's exponent range: 1e30 stays finite (rounded), and 257 rounds to 256.
    let got = cast(&fd(F32, &[1e30, 257.0]), BF16);
    assert!((got.get(0).to_f64() / 1e30 - 1.0).abs() < 8e-3);
    assert_same(
        &HostData::from_scalars(BF16, [got.get(1)]),
        &fd(BF16, &[256.0]),
        "bf16",
    );
}

#[test]
fn narrowing_float_casts_round_once() {
    // 2049 is the midpoint of the f16 neighbours 2048 and 2050 (spacing 2): the exact tie goes
    // to the even 2048, anything above it to 2050. Rounding through f32 first (where 2^-20 is
    // lost at 2049) would give 2048 for both.
    let above = 2049.0 + 2f64.powi(-20);
    assert_same(
        &cast(&fd(F64, &[2049.0, above, 2051.0, -above]), F16),
        &fd(F16, &[2048.0, 2050.0, 2052.0, -2050.0]),
        "f64 -> f16",
    );
    // bf16 spacing at 1 is 2^-7; 1 + 2^-8 is a tie (-> 1), 1 + 2^-8 + 2^-40 is above it.
    let w = 1.0 + 2f64.powi(-8);
    assert_same(
        &cast(&fd(F64, &[w, w + 2f64.powi(-40)]), BF16),
        &fd(BF16, &[1.0, 1.0 + 2f64.powi(-7)]),
        "f64 -> bf16",
    );
    // i32 -> bf16: spacing at 2^24 is 2^17, 2^24 + 2^16 is a tie, one more rounds up.
    let tie = (1i64 << 24) + (1 << 16);
    assert_same(
        &cast(&id(I32, &[tie, tie + 1]), BF16),
        &fd(BF16, &[16777216.0, 16908288.0]),
        "i32 -> bf16",
    );
    // Under- and overflow from f64.
    let x = fd(F64, &[1e-300, -1e-300, 1e300, -1e300]);
    let want = [0.0, -0.0, INF, -INF];
    assert_same(&cast(&x, F16), &fd(F16, &want), "f64 -> f16 range");
    assert_same(&cast(&x, BF16), &fd(BF16, &want), "f64 -> bf16 range");
    // Every pair of neighbouring positive finite f16 / bf16 values: the f64 midpoint goes to
    // the even one, a hair above it to the upper one, a hair below it to the lower one.
    for (d, max_finite) in [(F16, 0x7bffu64), (BF16, 0x7f7f)] {
        for bits in 0..max_finite {
            let (a, b) = (Scalar::from_bits(bits, d), Scalar::from_bits(bits + 1, d));
            let mid = (a.to_f64() + b.to_f64()) / 2.0;
            let even = if bits % 2 == 0 { a } else { b };
            let hair = mid * 2f64.powi(-40);
            assert_eq!(Scalar::F64(mid).cast(d), even, "{d} tie {mid}");
            assert_eq!(Scalar::F64(mid + hair).cast(d), b, "{d} above {mid}");
            assert_eq!(Scalar::F64(mid - hair).cast(d), a, "{d} below {mid}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Half precision: computed in f32, rounded once.

#[test]
fn half_precision_rounds_each_op_to_nearest_even() {
    // f16 has 10 fraction bits: around 1 the spacing is 2^-10.
    //   1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even -> 1.
    //   1 + 3*2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even) -> 1 + 2^-9.
    let h = 2f64.powi(-11);
    let got = binary(
        BinaryOp::Add,
        &fd(F16, &[1.0, 1.0]),
        &fd(F16, &[h, 3.0 * h]),
    );
    assert_same(&got, &fd(F16, &[1.0, 1.0 + 2f64.powi(-9)]), "f16 add");
    // bf16 has 7 fraction bits: around 256 the spacing is 2; 256 + 1 ties to 256,
    // 256 + 3 = 259 ties between 258 (odd) and 260 (even) -> 260.
    let got = binary(
        BinaryOp::Add,
        &fd(BF16, &[256.0, 256.0]),
        &fd(BF16, &[1.0, 3.0]),
    );
    assert_same(&got, &fd(BF16, &[256.0, 260.0]), "bf16 add");
    // f16 division: 1/3 = 0.0101010101...b; 11 significant bits give 0.333251953125.
    let got = binary(BinaryOp::Div, &fd(F16, &[1.0]), &fd(F16, &[3.0]));
    assert_same(&got, &fd(F16, &[0.333251953125]), "f16 div");
    // f16 overflow: 256 * 256 = 65536 > 65504 -> inf.
    let got = binary(BinaryOp::Mul, &fd(F16, &[256.0]), &fd(F16, &[256.0]));
    assert_same(&got, &fd(F16, &[INF]), "f16 overflow");
    // exp(1) = 2.71828...: f16 spacing in [2, 4) is 2^-9, 2.71828 / 2^-9 = 1391.76 -> 1392 *
    // 2^-9 = 2.71875; bf16 spacing 2^-6, 2.71828 / 2^-6 = 173.97 -> 174 * 2^-6 = 2.71875.
    assert_same(
        &unary(UnaryOp::Exp, &fd(F16, &[1.0])),
        &fd(F16, &[2.71875]),
        "f16 exp",
    );
    assert_same(
        &unary(UnaryOp::Exp, &fd(BF16, &[1.0])),
        &fd(BF16, &[2.71875]),
        "bf16 exp",
    );
}

#[test]
fn half_unary_ops_are_the_f32_op_rounded_once() {
    // The rule itself, on every f16 and bf16 bit pattern: widen to f32 (exact), apply the f32
    // op, round back once. Computing in f64 instead differs, e.g. f16 exp(0.0072975) lies
    // within f32 error of an f16 tie.
    let ops: [(UnaryOp, F32Fn); 14] = [
        (UnaryOp::Neg, |x| -x),
        (UnaryOp::Abs, f32::abs),
        (UnaryOp::Recip, |x| 1.0 / x),
        (UnaryOp::Sqrt, f32::sqrt),
        (UnaryOp::Exp, f32::exp),
        (UnaryOp::Log, f32::ln),
        (UnaryOp::Sin, f32::sin),
        (UnaryOp::Cos, f32::cos),
        (UnaryOp::Tanh, f32::tanh),
        (UnaryOp::Sigmoid, |x| 1.0 / (1.0 + (-x).exp())),
        (UnaryOp::Erf, libm::erff),
        (UnaryOp::Floor, f32::floor),
        (UnaryOp::Ceil, f32::ceil),
        (UnaryOp::Round, f32::round_ties_even),
    ];
    let all = |d| HostData::from_scalars(d, (0..=u16::MAX as u64).map(|b| Scalar::from_bits(b, d)));
    for d in [F16, BF16] {
        let x = all(d);
        for (op, f) in ops {
            let want = HostData::from_scalars(
                d,
                scalars(&x)
                    .into_iter()
                    .map(|v| Scalar::F32(f(v.to_f64() as f32))),
            );
            assert_same(
                &unary(op, &x),
                &want,
                &format!("{} on every {d}", op.name()),
            );
        }
    }
    // A case that needs no libm: e^89 overflows f32, so bf16 sigmoid(-89) is 1/(1+inf) = 0,
    // although the exact value 2.2e-39 is a bf16 subnormal.
    assert_same(
        &unary(UnaryOp::Sigmoid, &fd(BF16, &[-89.0])),
        &fd(BF16, &[0.0]),
        "bf16 sigmoid(-89)",
    );
}

// ---------------------------------------------------------------------------------------------
// The public scalar functions (constant folding calls them).

#[test]
fn scalar_functions_match_the_op_semantics() {
    assert_eq!(
        eval_unary(UnaryOp::Round, Scalar::F32(2.5)),
        Scalar::F32(2.0)
    );
    assert_eq!(
        eval_unary(UnaryOp::Round, Scalar::F64(-0.5)),
        Scalar::F64(-0.0)
    );
    assert_eq!(
        eval_unary(UnaryOp::Abs, Scalar::I32(i32::MIN)),
        Scalar::I32(i32::MIN)
    );
    assert_eq!(eval_unary(UnaryOp::Not, Scalar::U8(0)), Scalar::U8(255));
    assert_eq!(
        eval_unary(UnaryOp::Recip, Scalar::F16(half::f16::from_f32(4.0))),
        Scalar::F16(half::f16::from_f32(0.25))
    );
    assert!(eval_binary(BinaryOp::Max, Scalar::F32(1.0), Scalar::F32(f32::NAN)).is_nan());
    assert!(eval_binary(BinaryOp::Min, Scalar::F64(f64::NAN), Scalar::F64(1.0)).is_nan());
    assert_eq!(
        eval_binary(BinaryOp::Mod, Scalar::F32(-5.5), Scalar::F32(2.0)),
        Scalar::F32(0.5)
    );
    assert_eq!(
        eval_binary(BinaryOp::Div, Scalar::I64(-7), Scalar::I64(2)),
        Scalar::I64(-4)
    );
    assert_eq!(
        eval_binary(BinaryOp::Div, Scalar::U8(7), Scalar::U8(0)),
        Scalar::U8(0)
    );
    assert_eq!(
        eval_binary(BinaryOp::Lt, Scalar::F32(f32::NAN), Scalar::F32(1.0)),
        Scalar::Bool(false)
    );
    assert_eq!(
        eval_binary(BinaryOp::Add, Scalar::Bool(true), Scalar::Bool(true)),
        Scalar::Bool(true)
    );
    // Reduce combiners: sum wraps for integers, max keeps NaN once seen, all/any are logical.
    assert_eq!(
        eval_reduce_combine(ReduceOp::Sum, Scalar::I32(i32::MAX), Scalar::I32(1)),
        Scalar::I32(i32::MIN)
    );
    let nan = Scalar::F32(f32::NAN);
    assert!(eval_reduce_combine(ReduceOp::Max, nan, Scalar::F32(5.0)).is_nan());
    assert!(eval_reduce_combine(ReduceOp::Min, Scalar::F32(5.0), nan).is_nan());
    assert_eq!(
        eval_reduce_combine(ReduceOp::Prod, Scalar::U8(16), Scalar::U8(16)),
        Scalar::U8(0)
    );
    assert_eq!(
        eval_reduce_combine(ReduceOp::And, Scalar::Bool(true), Scalar::Bool(false)),
        Scalar::Bool(false)
    );
    assert_eq!(
        eval_reduce_combine(ReduceOp::Or, Scalar::Bool(false), Scalar::Bool(true)),
        Scalar::Bool(true)
    );
}

#[test]
#[should_panic(expected = "sub does not accept bool")]
fn scalar_functions_refuse_what_the_verifier_refuses() {
    eval_binary(BinaryOp::Sub, Scalar::Bool(true), Scalar::Bool(false));
}

// ---------------------------------------------------------------------------------------------
// The verifier's dtype rules, as the interpreter relies on them.

#[test]
fn verifier_refuses_dtypes_an_op_does_not_accept() {
    for op in UnaryOp::ALL {
        for d in DType::ALL {
            let mut g = Graph::new();
            let x = input(&mut g, 0, d, [2]);
            let r = g.push(node(Op::Unary(op), &[x], d, [2]));
            assert_eq!(r.is_ok(), op.accepts(d), "{} on {d}: {r:?}", op.name());
        }
    }
    for op in BinaryOp::ALL {
        for d in DType::ALL {
            let mut g = Graph::new();
            let x = input(&mut g, 0, d, [2]);
            let r = g.push(node(Op::Binary(op), &[x, x], op.output_dtype(d), [2]));
            assert_eq!(r.is_ok(), op.accepts(d), "{} on {d}: {r:?}", op.name());
        }
    }
    // The refusals spelled out (by hand, not through `accepts`).
    let refused_unary = [
        (UnaryOp::Exp, I32),
        (UnaryOp::Sigmoid, U8),
        (UnaryOp::Not, F32),
        (UnaryOp::Neg, Bool),
        (UnaryOp::Round, Bool),
    ];
    for (op, d) in refused_unary {
        let mut g = Graph::new();
        let x = input(&mut g, 0, d, [2]);
        let err = g.push(node(Op::Unary(op), &[x], d, [2])).unwrap_err();
        assert!(
            err.contains(op.name()) && err.contains("not supported"),
            "{err}"
        );
    }
    let refused_binary = [
        (BinaryOp::Sub, Bool),
        (BinaryOp::Div, Bool),
        (BinaryOp::Pow, Bool),
        (BinaryOp::Mod, Bool),
        (BinaryOp::And, F32),
        (BinaryOp::Xor, F64),
        (BinaryOp::Or, F16),
    ];
    for (op, d) in refused_binary {
        let mut g = Graph::new();
        let x = input(&mut g, 0, d, [2]);
        let err = g.push(node(Op::Binary(op), &[x, x], d, [2])).unwrap_err();
        assert!(
            err.contains(op.name()) && err.contains("not supported"),
            "{err}"
        );
    }
    let mut g = Graph::new();
    let b = input(&mut g, 0, Bool, [2]);
    let reduce = |op| Op::Reduce {
        op,
        axes: vec![0],
        keepdims: false,
    };
    let err = g
        .push(node(reduce(ReduceOp::Sum), &[b], Bool, Shape::scalar()))
        .unwrap_err();
    assert!(err.contains("sum over dtype bool not supported"), "{err}");
    let x = input(&mut g, 1, F32, [2]);
    let err = g
        .push(node(reduce(ReduceOp::And), &[x], F32, Shape::scalar()))
        .unwrap_err();
    assert!(err.contains("all over dtype f32 not supported"), "{err}");
    let rnd = Op::Random {
        seed: 1,
        dist: Distribution::Uniform,
    };
    assert!(g.push(node(rnd, &[], I32, [2])).is_err());
    assert!(g.push(node(Op::Index { axis: 0 }, &[], Bool, [2])).is_err());
}

// ---------------------------------------------------------------------------------------------
// Sources.

#[test]
fn const_and_index_sources() {
    let mut g = Graph::new();
    let c = push(&mut g, Op::Const(Scalar::F32(1.5)), &[], F32, [2, 2]);
    let s = push(
        &mut g,
        Op::Const(Scalar::I64(-3)),
        &[],
        I64,
        Shape::scalar(),
    );
    let e = push(&mut g, Op::Const(Scalar::Bool(true)), &[], Bool, [0]);
    let i0 = push(&mut g, Op::Index { axis: 0 }, &[], F32, [2, 3]);
    let i1 = push(&mut g, Op::Index { axis: 1 }, &[], I64, [2, 3]);
    // Index casts the coordinate to the dtype: in u8, 256 wraps to 0 and 299 to 43.
    let iu = push(&mut g, Op::Index { axis: 0 }, &[], U8, [300]);
    g.outputs = vec![c, s, e, i0, i1, iu];
    let out = run(&g, &[]);
    assert_same(&out[0], &fd(F32, &[1.5; 4]), "const");
    assert_same(&out[1], &id(I64, &[-3]), "rank-0 const");
    assert_same(&out[2], &bools(&[]), "empty const");
    assert_same(
        &out[3],
        &fd(F32, &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
        "index axis 0",
    );
    assert_same(&out[4], &id(I64, &[0, 1, 2, 0, 1, 2]), "index axis 1");
    let u = out[5].to_vec::<u8>();
    assert_eq!((u[0], u[255], u[256], u[299]), (0, 255, 0, 43));
}

fn random(seed: u64, dist: Distribution, dtype: DType, shape: &[usize]) -> HostData {
    let mut g = Graph::new();
    let r = push(&mut g, Op::Random { seed, dist }, &[], dtype, shape);
    g.outputs.push(r);
    run1(&g, &[])
}

#[test]
fn random_follows_philox() {
    // Element 0 of seed 0 uses counter 0 and key 0, whose Philox4x32-10 words are Random123's
    // first known answer: w = 6627e8d5 e169c58d bc57ac4c 9b00dbd8.
    //   uniform f32: (w0 >> 8) * 2^-24 = 0x6627e8 / 2^24 = 6694888 / 16777216
    //   uniform f64: ((w0 << 21) | (w1 >> 11)) * 2^-53
    let u = random(0, Distribution::Uniform, F32, &[3]);
    assert_eq!(u.get(0), Scalar::F32(6694888.0 / 16777216.0));
    assert_eq!(u.get(0), Scalar::F32(0.399_046_42));
    let u = random(0, Distribution::Uniform, F64, &[3]);
    let bits = (0x6627e8d5u64 << 21) | (0xe169c58du64 >> 11);
    assert_eq!(u.get(0), Scalar::F64(bits as f64 / 2f64.powi(53)));
    // Normal f32 of element 0: u1 = (0x6627e8 + 1) / 2^24, u2 = (0xe169c58d >> 8) / 2^24.
    let n = random(0, Distribution::Normal, F32, &[1]).get(0).to_f64();
    let u1 = (0x6627e8 as f64 + 1.0) / 16777216.0;
    let u2 = (0xe169c5 as f64) / 16777216.0;
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    assert!((n - z).abs() < 1e-5, "{n} vs {z}");
    // Every element is random_scalar(seed, k): the counter is the row-major position.
    for (dist, d) in [(Distribution::Uniform, F32), (Distribution::Normal, F64)] {
        let r = random(77, dist, d, &[2, 3, 5]);
        for k in 0..r.len() {
            assert_eq!(r.get(k), philox::random_scalar(77, k as u64, dist, d));
        }
    }
    // The high counter word and the high key word both matter.
    let f = |s, k| philox::random_scalar(s, k, Distribution::Uniform, F64);
    assert_ne!(f(5, 3), f(5, 3 + (1 << 32)));
    assert_ne!(f(5, 3), f(5 + (1 << 32), 3));
}

#[test]
fn random_is_deterministic_and_seeded() {
    let a = random(42, Distribution::Uniform, F32, &[1000]);
    let b = random(42, Distribution::Uniform, F32, &[1000]);
    assert_same(&a, &b, "same seed, same values");
    // The values depend on the position only, not the shape.
    let c = random(42, Distribution::Uniform, F32, &[10, 100]);
    assert_same(&a, &c, "shape-independent");
    let d = random(43, Distribution::Uniform, F32, &[1000]);
    let equal = (0..1000).filter(|&i| a.get(i) == d.get(i)).count();
    assert!(equal < 5, "{equal} equal values across seeds");
    // Two Random nodes with one seed in one graph agree.
    let mut g = Graph::new();
    let op = Op::Random {
        seed: 9,
        dist: Distribution::Normal,
    };
    let x = push(&mut g, op.clone(), &[], F64, [64]);
    let y = push(&mut g, op, &[], F64, [64]);
    g.outputs = vec![x, y];
    let out = run(&g, &[]);
    assert_same(&out[0], &out[1], "same node twice");
}

fn moments(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var)
}

#[test]
fn random_distributions_have_the_right_moments() {
    const N: usize = 100_000;
    for d in [F32, F64] {
        let u = random(1234, Distribution::Uniform, d, &[N]).to_vec::<f64>();
        assert!(
            u.iter().all(|&x| (0.0..1.0).contains(&x)),
            "uniform {d} out of [0, 1)"
        );
        let (mean, var) = moments(&u);
        // mean 1/2 (std of the mean 0.29 / 316 = 0.0009), variance 1/12 = 0.0833.
        assert!((mean - 0.5).abs() < 0.01, "uniform {d} mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.005, "uniform {d} var {var}");

        let z = random(1234, Distribution::Normal, d, &[N]).to_vec::<f64>();
        assert!(z.iter().all(|x| x.is_finite()), "normal {d} not finite");
        let (mean, var) = moments(&z);
        // std of the mean 0.003; std of the variance sqrt(2/N) = 0.0045.
        assert!(mean.abs() < 0.02, "normal {d} mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "normal {d} var {var}");
        // P(|z| < 1) = 0.6827 for a standard normal.
        let inside = z.iter().filter(|x| x.abs() < 1.0).count() as f64 / N as f64;
        assert!(
            (inside - 0.6827).abs() < 0.01,
            "normal {d}: P(|z|<1) = {inside}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Reindexing.

fn arange(dtype: DType, n: usize) -> HostData {
    HostData::from_scalars(dtype, (0..n).map(|i| Scalar::I64(i as i64)))
}

#[test]
fn broadcast_to() {
    let cases: &[BroadcastCase] = &[
        // [3] -> [2, 3] along a new axis 0: rows repeat.
        (&[3], &[2, 3], &[0], &[0, 1, 2, 0, 1, 2]),
        // [2] -> [2, 3] along a new axis 1: each element repeats along the row.
        (&[2], &[2, 3], &[1], &[0, 0, 0, 1, 1, 1]),
        // scalar -> [2, 2].
        (&[], &[2, 2], &[0, 1], &[0, 0, 0, 0]),
        // [2, 3] -> [2, 2, 3] with a new middle axis: out[i][j][k] = in[i][k].
        (
            &[2, 3],
            &[2, 2, 3],
            &[1],
            &[0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5],
        ),
        // Into an empty shape.
        (&[3], &[0, 3], &[0], &[]),
    ];
    for (from, to, axes, want) in cases {
        let mut g = Graph::new();
        let x = input(&mut g, 0, I32, *from);
        let op = Op::BroadcastTo {
            axes: axes.to_vec(),
        };
        let y = push(&mut g, op, &[x], I32, *to);
        g.outputs.push(y);
        let n = Shape::from(*from).numel();
        let out = run1(&g, &[&arange(I32, n)]);
        assert_same(
            &out,
            &id(I32, want),
            &format!("broadcast {from:?} -> {to:?}"),
        );
    }
}

/// Builds and runs `reindex(x, extras..)` into `out_shape`.
fn reindex(
    x: &HostData,
    x_shape: &[usize],
    extras: &[(&HostData, &[usize])],
    out_shape: &[usize],
    map: IndexMap,
) -> HostData {
    let mut g = Graph::new();
    let src = input(&mut g, 0, x.dtype(), x_shape);
    let mut ins = vec![src];
    let mut bufs = vec![x];
    for (k, (e, s)) in extras.iter().enumerate() {
        ins.push(input(&mut g, 1 + k, e.dtype(), *s));
        bufs.push(*e);
    }
    let y = push(&mut g, Op::Reindex(map), &ins, x.dtype(), out_shape);
    g.outputs.push(y);
    run1(&g, &bufs)
}

fn map(exprs: Vec<IndexExpr>, overflow: Scalar, conds: Vec<IndexExpr>) -> IndexMap {
    IndexMap {
        exprs,
        overflow,
        conds,
    }
}

#[test]
fn reindex_transpose_flip_slice() {
    let x = arange(F32, 6); // [[0, 1, 2], [3, 4, 5]]
    let zero = Scalar::F32(0.0);
    // Transpose: out[i][j] = x[j][i].
    let t = reindex(
        &x,
        &[2, 3],
        &[],
        &[3, 2],
        map(vec![Idx(1), Idx(0)], zero, vec![]),
    );
    assert_same(&t, &fd(F32, &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]), "transpose");
    // Flip axis 1 with symbolic sizes: out[i][j] = x[i][m1 - 1 - j].
    let flip = TargetDim(1) - 1 - Idx(1);
    let f = reindex(
        &x,
        &[2, 3],
        &[],
        &[2, 3],
        map(vec![Idx(0), flip], zero, vec![]),
    );
    assert_same(&f, &fd(F32, &[2.0, 1.0, 0.0, 5.0, 4.0, 3.0]), "flip");
    // Flip axis 0 through the iteration extent instead: out[i][j] = x[n0 - 1 - i][j].
    let flip0 = IterDim(0) - 1 - Idx(0);
    let f = reindex(
        &x,
        &[2, 3],
        &[],
        &[2, 3],
        map(vec![flip0, Idx(1)], zero, vec![]),
    );
    assert_same(&f, &fd(F32, &[3.0, 4.0, 5.0, 0.0, 1.0, 2.0]), "flip axis 0");
    // Step slice x[:, ::2]: out[i][j] = x[i][2j] over out [2, 2], columns 0 and 2.
    let s = reindex(
        &x,
        &[2, 3],
        &[],
        &[2, 2],
        map(vec![Idx(0), Idx(1) * 2], zero, vec![]),
    );
    assert_same(&s, &fd(F32, &[0.0, 2.0, 3.0, 5.0]), "step slice");
    // A runtime index parameter reads like a constant: x[:, 1:3] = x[i][j + param(1)], and
    // param(2) reads past the end into the overflow value.
    let p = |v: i64| map(vec![Idx(0), Idx(1) + IndexExpr::Param(v)], zero, vec![]);
    let n = reindex(&x, &[2, 3], &[], &[2, 2], p(1));
    assert_same(&n, &fd(F32, &[1.0, 2.0, 4.0, 5.0]), "param slice");
    let n = reindex(&x, &[2, 3], &[], &[2, 2], p(2));
    assert_same(
        &n,
        &fd(F32, &[2.0, 0.0, 5.0, 0.0]),
        "param slice past the end",
    );
}

#[test]
fn reindex_padding_conditions_and_overflow() {
    // Pad [1, 2, 3] by one on each side: out[i] = x[i - 1], out of range -> overflow.
    let x = fd(F64, &[1.0, 2.0, 3.0]);
    let p = reindex(
        &x,
        &[3],
        &[],
        &[5],
        map(vec![Idx(0) - 1], Scalar::F64(-9.0), vec![]),
    );
    assert_same(&p, &fd(F64, &[-9.0, 1.0, 2.0, 3.0, -9.0]), "pad");
    // A condition: odd positions overflow (i % 2 == 1 is nonzero there).
    let x = id(I64, &[10, 11, 12, 13]);
    let cond = (Idx(0) % 2).eq_(IndexExpr::c(1));
    let c = reindex(
        &x,
        &[4],
        &[],
        &[4],
        map(vec![Idx(0)], Scalar::I64(-1), vec![cond]),
    );
    assert_same(&c, &id(I64, &[10, -1, 12, -1]), "condition");
    // A coordinate past the end on the last axis overflows, it does not wrap to the next row.
    let x = arange(I32, 6);
    let shift = Idx(1) + 1;
    let r = reindex(
        &x,
        &[2, 3],
        &[],
        &[2, 3],
        map(vec![Idx(0), shift], Scalar::I32(-1), vec![]),
    );
    assert_same(&r, &id(I32, &[1, 2, -1, 4, 5, -1]), "no wrap across rows");
    // Triangle (tril): overflow where j > i.
    let x = fd(F32, &[1.0; 9]);
    let upper = Idx(1).lt(Idx(0) + 1).eq_(IndexExpr::c(0));
    let t = reindex(
        &x,
        &[3, 3],
        &[],
        &[3, 3],
        map(vec![Idx(0), Idx(1)], Scalar::F32(0.0), vec![upper]),
    );
    assert_same(
        &t,
        &fd(F32, &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]),
        "tril",
    );
}

#[test]
fn reindex_gather_through_an_extra() {
    // Embedding: table [3, 2], indices [5] = [2, 0, 2, 7, -1]; out[i][j] = table[idx[i]][j].
    // Rows 3 (index 7) and 4 (index -1) are out of range of the table -> overflow.
    let table = fd(F32, &[10.0, 11.0, 20.0, 21.0, 30.0, 31.0]);
    let idx = id(I64, &[2, 0, 2, 7, -1]);
    let m = map(
        vec![Extra(0, vec![Idx(0)]), Idx(1)],
        Scalar::F32(-1.0),
        vec![],
    );
    let out = reindex(&table, &[3, 2], &[(&idx, &[5])], &[5, 2], m);
    let want = [30.0, 31.0, 10.0, 11.0, 30.0, 31.0, -1.0, -1.0, -1.0, -1.0];
    assert_same(&out, &fd(F32, &want), "gather");
    // Reading the extra out of its own range gives 0: out has 4 rows, the u8 extra 2 elements
    // [2, 1], so rows 2 and 3 read e0[2] = e0[3] = 0 -> table row 0.
    let idx = id(U8, &[2, 1]);
    let m = map(
        vec![Extra(0, vec![Idx(0)]), Idx(1)],
        Scalar::F32(-1.0),
        vec![],
    );
    let out = reindex(&table, &[3, 2], &[(&idx, &[2])], &[4, 2], m);
    let want = [30.0, 31.0, 20.0, 21.0, 10.0, 11.0, 10.0, 11.0];
    assert_same(&out, &fd(F32, &want), "extra out of range reads 0");
    // An extra in a condition: mask where the i32 mask tensor is nonzero.
    let x = fd(F32, &[1.0, 2.0, 3.0]);
    let mask = id(I32, &[0, 5, 0]);
    let m = map(vec![Idx(0)], Scalar::F32(0.0), vec![Extra(0, vec![Idx(0)])]);
    let out = reindex(&x, &[3], &[(&mask, &[3])], &[3], m);
    assert_same(&out, &fd(F32, &[1.0, 0.0, 3.0]), "extra in a condition");
}

// ---------------------------------------------------------------------------------------------
// Reductions.

fn reduce(
    op: ReduceOp,
    x: &HostData,
    shape: &[usize],
    axes: &[usize],
    keepdims: bool,
) -> (HostData, Shape) {
    let mut g = Graph::new();
    let a = input(&mut g, 0, x.dtype(), shape);
    let out_shape: Vec<usize> = (0..shape.len())
        .filter_map(|k| match (axes.contains(&k), keepdims) {
            (true, true) => Some(1),
            (true, false) => None,
            (false, _) => Some(shape[k]),
        })
        .collect();
    let r = Op::Reduce {
        op,
        axes: axes.to_vec(),
        keepdims,
    };
    let y = push(&mut g, r, &[a], x.dtype(), out_shape.clone());
    g.outputs.push(y);
    (run1(&g, &[x]), Shape(out_shape))
}

#[test]
fn reduce_over_several_axes_with_keepdims() {
    // x[i][j][k] = 12i + 4j + k over [2, 3, 4]. Summing over i and k:
    //   sum_i sum_k (12i + 4j + k) = 4 * (0 + 12) + 8 * 4j + 2 * (0 + 1 + 2 + 3) = 32j + 60.
    let x = arange(F32, 24);
    let (out, shape) = reduce(ReduceOp::Sum, &x, &[2, 3, 4], &[0, 2], true);
    assert_eq!(shape, Shape::from([1, 3, 1]));
    assert_same(&out, &fd(F32, &[60.0, 92.0, 124.0]), "sum keepdims");
    let (out, shape) = reduce(ReduceOp::Sum, &x, &[2, 3, 4], &[0, 2], false);
    assert_eq!(shape, Shape::from([3]));
    assert_same(&out, &fd(F32, &[60.0, 92.0, 124.0]), "sum");
    // Over every axis: 0 + 1 + ... + 23 = 276, to a rank-0 result.
    let (out, shape) = reduce(
        ReduceOp::Sum,
        &arange(I64, 24),
        &[2, 3, 4],
        &[0, 1, 2],
        false,
    );
    assert_eq!(shape, Shape::scalar());
    assert_same(&out, &id(I64, &[276]), "sum all");
    // Max over axes [1, 2] (keepdims): the last element of each i-block, 11 and 23.
    let (out, shape) = reduce(ReduceOp::Max, &x, &[2, 3, 4], &[1, 2], true);
    assert_eq!(shape, Shape::from([2, 1, 1]));
    assert_same(&out, &fd(F32, &[11.0, 23.0]), "max keepdims");
}

#[test]
fn reduce_ops_along_one_axis() {
    // [[1, 5, 3], [-1, -7, -2]]
    let v = [1, 5, 3, -1, -7, -2];
    for d in [I32, I64, F32, F64, F16, BF16] {
        let x = id(d, &v);
        let r = |op, axis| reduce(op, &x, &[2, 3], &[axis], false).0;
        assert_same(&r(ReduceOp::Max, 1), &id(d, &[5, -1]), "max");
        assert_same(&r(ReduceOp::Min, 1), &id(d, &[1, -7]), "min");
        assert_same(&r(ReduceOp::Sum, 1), &id(d, &[9, -10]), "sum");
        // Column products: 1 * -1, 5 * -7, 3 * -2.
        assert_same(&r(ReduceOp::Prod, 0), &id(d, &[-1, -35, -6]), "prod");
    }
    let x = id(U8, &[200, 100, 16, 16]);
    // u8 wraps: 200 + 100 = 300 - 256 = 44, 16 + 16 = 32; 200 * 100 = 20000 = 78 * 256 + 32,
    // 16 * 16 = 256 = 0.
    assert_same(
        &reduce(ReduceOp::Sum, &x, &[2, 2], &[1], false).0,
        &id(U8, &[44, 32]),
        "u8 sum",
    );
    assert_same(
        &reduce(ReduceOp::Prod, &x, &[2, 2], &[1], false).0,
        &id(U8, &[32, 0]),
        "u8 prod",
    );
    assert_same(
        &reduce(ReduceOp::Max, &x, &[2, 2], &[1], false).0,
        &id(U8, &[200, 16]),
        "u8 max",
    );
    let x = id(I32, &[i32::MAX as i64, 1]);
    assert_same(
        &reduce(ReduceOp::Sum, &x, &[2], &[0], false).0,
        &id(I32, &[i32::MIN as i64]),
        "i32 sum wraps",
    );
    // Bool: all / any per row of [[t, t], [t, f], [f, f]]; max = or, min = and.
    let x = bools(&[true, true, true, false, false, false]);
    let r = |op| reduce(op, &x, &[3, 2], &[1], false).0;
    assert_same(&r(ReduceOp::And), &bools(&[true, false, false]), "all");
    assert_same(&r(ReduceOp::Or), &bools(&[true, true, false]), "any");
    assert_same(&r(ReduceOp::Max), &bools(&[true, true, false]), "bool max");
    assert_same(&r(ReduceOp::Min), &bools(&[true, false, false]), "bool min");
}

#[test]
fn reduce_max_min_propagate_nan() {
    // Rows: NaN in the middle, NaN first, no NaN (all -inf).
    let x = fd(F32, &[1.0, NAN, 3.0, NAN, 1.0, 2.0, -INF, -INF, -INF]);
    for op in [ReduceOp::Max, ReduceOp::Min] {
        let (out, _) = reduce(op, &x, &[3, 3], &[1], false);
        assert_same(&out, &fd(F32, &[NAN, NAN, -INF]), op.name());
    }
    // Along axis 0 each column has exactly one NaN or none: [1, NaN, -inf] etc.
    let (out, _) = reduce(ReduceOp::Max, &x, &[3, 3], &[0], false);
    assert_same(&out, &fd(F32, &[NAN, NAN, 3.0]), "max axis 0");
    let (out, _) = reduce(ReduceOp::Min, &fd(F64, &[2.0, NAN]), &[2], &[0], false);
    assert_same(&out, &fd(F64, &[NAN]), "NaN last");
}

#[test]
fn float_sums_accumulate_in_f64() {
    // f32: 1e8 + 1 rounds back to 1e8 in f32 (spacing 8), so an f32 accumulator gives 0;
    // in f64 the sum is exactly 1.
    let (out, _) = reduce(
        ReduceOp::Sum,
        &fd(F32, &[1e8, 1.0, -1e8]),
        &[3],
        &[0],
        false,
    );
    assert_same(&out, &fd(F32, &[1.0]), "f32 sum");
    // f16: 2048 + 1 ties back to 2048 (spacing 2) twice; in f64 the sum is 2050, exact in f16.
    let (out, _) = reduce(
        ReduceOp::Sum,
        &fd(F16, &[2048.0, 1.0, 1.0]),
        &[3],
        &[0],
        false,
    );
    assert_same(&out, &fd(F16, &[2050.0]), "f16 sum");
    // ... and the f64 total is rounded once: 2049 + 2^-20 is above the 2048/2050 tie -> 2050.
    let x = fd(F16, &[2048.0, 1.0, 2f64.powi(-20)]);
    let (out, _) = reduce(ReduceOp::Sum, &x, &[3], &[0], false);
    assert_same(&out, &fd(F16, &[2050.0]), "f16 sum rounds once");
    // bf16: 256 + 1 ties back to 256 (spacing 2); in f64 the sum is 258, exact in bf16.
    let (out, _) = reduce(
        ReduceOp::Sum,
        &fd(BF16, &[256.0, 1.0, 1.0]),
        &[3],
        &[0],
        false,
    );
    assert_same(&out, &fd(BF16, &[258.0]), "bf16 sum");
    // prod: 2^100 * 2^100 * 2^-120 overflows f32 midway (2^200) but not f64: 2^80.
    let x = fd(F32, &[2f64.powi(100), 2f64.powi(100), 2f64.powi(-120)]);
    let (out, _) = reduce(ReduceOp::Prod, &x, &[3], &[0], false);
    assert_same(&out, &fd(F32, &[2f64.powi(80)]), "f32 prod");
}

#[test]
fn reductions_over_empty_axes_give_the_identity() {
    let cases = [
        (ReduceOp::Sum, fd(F32, &[]), fd(F32, &[0.0, 0.0])),
        (ReduceOp::Prod, fd(F32, &[]), fd(F32, &[1.0, 1.0])),
        (ReduceOp::Sum, id(I32, &[]), id(I32, &[0, 0])),
        (ReduceOp::Prod, id(I64, &[]), id(I64, &[1, 1])),
        (ReduceOp::And, bools(&[]), bools(&[true, true])),
        (ReduceOp::Or, bools(&[]), bools(&[false, false])),
    ];
    for (op, x, want) in cases {
        let (out, shape) = reduce(op, &x, &[2, 0], &[1], false);
        assert_eq!(shape, Shape::from([2]));
        assert_same(&out, &want, &format!("{} over an empty axis", op.name()));
    }
    // Max over a non-empty axis of an empty tensor is fine: the result is empty.
    let (out, shape) = reduce(ReduceOp::Max, &fd(F32, &[]), &[0, 3], &[1], false);
    assert_eq!((shape, out.len()), (Shape::from([0]), 0));
}

#[test]
fn max_over_an_empty_axis_is_rejected() {
    let op = Op::Reduce {
        op: ReduceOp::Max,
        axes: vec![1],
        keepdims: false,
    };
    let mut g = Graph::new();
    let x = input(&mut g, 0, F32, [2, 0]);
    let err = g.push(node(op.clone(), &[x], F32, [2])).unwrap_err();
    assert!(err.contains("max over an empty axis"), "{err}");
    // The same graph built unchecked: verify and run refuse it, naming the op.
    let y = g.push_unchecked(node(op, &[x], F32, [2]));
    g.outputs.push(y);
    let err = verify(&g).unwrap_err();
    assert!(err.to_string().contains("max over an empty axis"), "{err}");
    match interp::run(&g, &[&fd(F32, &[])]) {
        Err(InterpError::Verify(e)) => assert!(e.to_string().contains("reduce: max"), "{e}"),
        other => panic!("expected a verify error, got {other:?}"),
    }
}

#[test]
fn reduce_over_no_axes_copies() {
    // Bit-exact, -0.0 included (a sum starting from +0.0 would turn it into +0.0).
    let x = fd(F32, &[-0.0, NAN, 1.5, -INF]);
    let (out, shape) = reduce(ReduceOp::Sum, &x, &[2, 2], &[], true);
    assert_eq!(shape, Shape::from([2, 2]));
    assert_same(&out, &x, "sum over no axes");
    // Over an axis of extent 1 the accumulator starts at the identity +0.0: -0.0 -> +0.0.
    let (out, _) = reduce(ReduceOp::Sum, &fd(F32, &[-0.0]), &[1], &[0], false);
    assert_same(&out, &fd(F32, &[0.0]), "sum of -0.0");
}

// ---------------------------------------------------------------------------------------------
// Scatter-reduce.

fn reindex_reduce(
    op: ReduceOp,
    x: &HostData,
    x_shape: &[usize],
    extras: &[(&HostData, &[usize])],
    out_shape: &[usize],
    exprs: Vec<IndexExpr>,
    conds: Vec<IndexExpr>,
) -> HostData {
    let mut g = Graph::new();
    let src = input(&mut g, 0, x.dtype(), x_shape);
    let mut ins = vec![src];
    let mut bufs = vec![x];
    for (k, (e, s)) in extras.iter().enumerate() {
        ins.push(input(&mut g, 1 + k, e.dtype(), *s));
        bufs.push(*e);
    }
    let m = map(exprs, Scalar::zero(x.dtype()), conds);
    let y = push(
        &mut g,
        Op::ReindexReduce { op, map: m },
        &ins,
        x.dtype(),
        out_shape,
    );
    g.outputs.push(y);
    run1(&g, &bufs)
}

#[test]
fn scatter_add_with_collisions() {
    // out[idx[i]] += x[i] with idx = [0, 2, 0, 2, 1, -1, 4] into 4 outputs; -1 and 4 are out
    // of range and skipped. out[0] = 1 + 3, out[1] = 5, out[2] = 2 + 4, out[3] untouched = 0.
    let x = fd(F32, &[1.0, 2.0, 3.0, 4.0, 5.0, 100.0, 200.0]);
    let idx = id(I64, &[0, 2, 0, 2, 1, -1, 4]);
    let e = vec![Extra(0, vec![Idx(0)])];
    let out = reindex_reduce(
        ReduceOp::Sum,
        &x,
        &[7],
        &[(&idx, &[7])],
        &[4],
        e.clone(),
        vec![],
    );
    assert_same(&out, &fd(F32, &[4.0, 5.0, 6.0, 0.0]), "scatter add");
    // The same on i32, and any (or) on bool.
    let x = id(I32, &[1, 2, 3, 4, 5, 100, 200]);
    let out = reindex_reduce(
        ReduceOp::Sum,
        &x,
        &[7],
        &[(&idx, &[7])],
        &[4],
        e.clone(),
        vec![],
    );
    assert_same(&out, &id(I32, &[4, 5, 6, 0]), "scatter add i32");
    let x = bools(&[false, false, true, false, false, true, true]);
    let out = reindex_reduce(ReduceOp::Or, &x, &[7], &[(&idx, &[7])], &[4], e, vec![]);
    assert_same(&out, &bools(&[true, false, false, false]), "scatter any");
    // Float sums accumulate in f64 per output: 1e8 + 1 - 1e8 = 1 (0 in an f32 accumulator).
    let x = fd(F32, &[1e8, 1.0, -1e8]);
    let out = reindex_reduce(
        ReduceOp::Sum,
        &x,
        &[3],
        &[],
        &[1],
        vec![IndexExpr::c(0)],
        vec![],
    );
    assert_same(&out, &fd(F32, &[1.0]), "f64 accumulation");
}

#[test]
fn scatter_max_leaves_untouched_outputs_at_the_identity() {
    // out[i] = max over x[i] for i < 3 of 5 outputs; outputs 3 and 4 get max's identity.
    let e = || vec![Idx(0)];
    let x = fd(F32, &[1.0, 5.0, -2.0]);
    let out = reindex_reduce(ReduceOp::Max, &x, &[3], &[], &[5], e(), vec![]);
    assert_same(&out, &fd(F32, &[1.0, 5.0, -2.0, -INF, -INF]), "max f32");
    let out = reindex_reduce(ReduceOp::Min, &x, &[3], &[], &[5], e(), vec![]);
    assert_same(&out, &fd(F32, &[1.0, 5.0, -2.0, INF, INF]), "min f32");
    let out = reindex_reduce(ReduceOp::Prod, &x, &[3], &[], &[5], e(), vec![]);
    assert_same(&out, &fd(F32, &[1.0, 5.0, -2.0, 1.0, 1.0]), "prod f32");
    let x = id(I32, &[1, 5, -2]);
    let out = reindex_reduce(ReduceOp::Max, &x, &[3], &[], &[5], e(), vec![]);
    let m = i32::MIN as i64;
    assert_same(&out, &id(I32, &[1, 5, -2, m, m]), "max i32");
    let x = id(U8, &[1, 5, 2]);
    let out = reindex_reduce(ReduceOp::Min, &x, &[3], &[], &[5], e(), vec![]);
    assert_same(&out, &id(U8, &[1, 5, 2, 255, 255]), "min u8");
    // Max with collisions and NaN: pairs (x0, x1) -> out 0, (x2, x3) -> out 1.
    let x = fd(F64, &[1.0, 7.0, NAN, 2.0]);
    let out = reindex_reduce(ReduceOp::Max, &x, &[4], &[], &[2], vec![Idx(0) / 2], vec![]);
    assert_same(&out, &fd(F64, &[7.0, NAN]), "max pairs");
}

#[test]
fn scatter_in_two_dimensions() {
    // Sum-pool gradient shape: x [2, 4] -> out [2, 2] with out[i][j / 2] += x[i][j].
    let x = arange(F64, 8); // [[0, 1, 2, 3], [4, 5, 6, 7]]
    let out = reindex_reduce(
        ReduceOp::Sum,
        &x,
        &[2, 4],
        &[],
        &[2, 2],
        vec![Idx(0), Idx(1) / 2],
        vec![],
    );
    assert_same(&out, &fd(F64, &[1.0, 5.0, 9.0, 13.0]), "pool grad");
    // Transpose-accumulate with a condition that skips row 1: out[j][i] = x[i][j] for i == 0.
    let skip = Idx(0).eq_(IndexExpr::c(1));
    let out = reindex_reduce(
        ReduceOp::Sum,
        &x,
        &[2, 4],
        &[],
        &[4, 2],
        vec![Idx(1), Idx(0)],
        vec![skip],
    );
    assert_same(
        &out,
        &fd(F64, &[0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0]),
        "cond skip",
    );
}

// ---------------------------------------------------------------------------------------------
// Layout, graphs, errors.

#[test]
fn reshape_and_contiguous_keep_the_elements() {
    let mut g = Graph::new();
    let x = input(&mut g, 0, I64, [2, 3]);
    let r = push(&mut g, Op::Reshape, &[x], I64, [3, 2]);
    let c = push(&mut g, Op::Contiguous, &[r], I64, [3, 2]);
    let f = push(&mut g, Op::Reshape, &[c], I64, [6]);
    // x itself is also an output, so the reshape of it must copy, not move.
    g.outputs = vec![f, x, r];
    let data = arange(I64, 6);
    let out = run(&g, &[&data]);
    for o in &out {
        assert_same(o, &data, "layout");
    }
}

#[test]
fn graphs_with_shared_values_and_several_outputs() {
    // y = x * x (one node used twice), z = y + x, outputs [z, y, z]; a dead node is skipped.
    let mut g = Graph::new();
    let x = input(&mut g, 0, F32, [3]);
    let y = push(&mut g, Op::Binary(BinaryOp::Mul), &[x, x], F32, [3]);
    let z = push(&mut g, Op::Binary(BinaryOp::Add), &[y, x], F32, [3]);
    let _dead = push(&mut g, Op::Unary(UnaryOp::Exp), &[z], F32, [3]);
    let w = input(&mut g, 1, F32, [1]);
    g.outputs = vec![z, y, z, w];
    let out = run(&g, &[&fd(F32, &[1.0, 2.0, -3.0]), &fd(F32, &[7.0])]);
    assert_eq!(out.len(), 4);
    assert_same(&out[0], &fd(F32, &[2.0, 6.0, 6.0]), "z");
    assert_same(&out[1], &fd(F32, &[1.0, 4.0, 9.0]), "y");
    assert_same(&out[2], &out[0], "z again");
    assert_same(&out[3], &fd(F32, &[7.0]), "input as output");
    // No outputs: nothing to return.
    g.outputs.clear();
    assert!(run(&g, &[&fd(F32, &[1.0, 2.0, 3.0]), &fd(F32, &[7.0])]).is_empty());
}

#[test]
fn input_mismatches_are_errors() {
    let mut g = Graph::new();
    let x = input(&mut g, 0, F32, [2, 3]);
    let y = input(&mut g, 1, I64, [2]);
    g.outputs = vec![x, y];
    let good_x = fd(F32, &[0.0; 6]);
    let good_y = id(I64, &[1, 2]);
    assert_eq!(interp::run(&g, &[&good_x, &good_y]).unwrap().len(), 2);
    // A third buffer beyond the graph's slots is ignored.
    assert!(interp::run(&g, &[&good_x, &good_y, &good_y]).is_ok());

    let wrong_dtype = fd(F64, &[0.0; 6]);
    match interp::run(&g, &[&wrong_dtype, &good_y]) {
        Err(e @ InterpError::Input { slot: 0, .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("input #0") && msg.contains("f32[2, 3]"),
                "{msg}"
            );
            assert!(msg.contains("f64"), "{msg}");
        }
        other => panic!("expected an input error, got {other:?}"),
    }
    let wrong_len = id(I64, &[1, 2, 3]);
    match interp::run(&g, &[&good_x, &wrong_len]) {
        Err(InterpError::Input { slot: 1, got, .. }) => assert!(got.contains('3'), "{got}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    match interp::run(&g, &[&good_x]) {
        Err(InterpError::MissingInputs { needed: 2, got: 1 }) => {}
        other => panic!("expected missing inputs, got {other:?}"),
    }
    // A graph that does not verify is refused before any input is looked at.
    let mut bad = Graph::new();
    let a = bad.push_unchecked(node(Op::Input { slot: 0 }, &[], F32, [2]));
    let b = bad.push_unchecked(node(Op::Unary(UnaryOp::Exp), &[a], F32, [3]));
    bad.outputs.push(b);
    assert!(matches!(
        interp::run(&bad, &[&fd(F32, &[1.0, 2.0])]),
        Err(InterpError::Verify(_))
    ));
}

#[test]
fn a_million_elements_run_in_linear_time() {
    // A 1000 x 1000 transpose, a broadcast add and a row sum: each node is one pass.
    let n = 1000;
    let mut g = Graph::new();
    let x = push(&mut g, Op::Index { axis: 1 }, &[], F32, [n, n]);
    let t = push(
        &mut g,
        Op::Reindex(map(vec![Idx(1), Idx(0)], Scalar::F32(0.0), vec![])),
        &[x],
        F32,
        [n, n],
    );
    let c = push(&mut g, Op::Const(Scalar::F32(1.0)), &[], F32, [n]);
    let b = push(&mut g, Op::BroadcastTo { axes: vec![0] }, &[c], F32, [n, n]);
    let s = push(&mut g, Op::Binary(BinaryOp::Add), &[t, b], F32, [n, n]);
    let r = Op::Reduce {
        op: ReduceOp::Sum,
        axes: vec![1],
        keepdims: false,
    };
    let y = push(&mut g, r, &[s], F32, [n]);
    g.outputs.push(y);
    // t[i][j] = x[j][i] = i, so row i sums to 1000 * (i + 1).
    let out = run1(&g, &[]).to_vec::<f32>();
    assert_eq!(out[0], 1000.0);
    assert_eq!(out[999], 1_000_000.0);
}
