//! Element-wise ops of the Tensor API against references written out in this file.
//!
//! - Broadcasting is a property test: random broadcast-compatible shape pairs (an output shape
//!   with some extents set to 1 and some leading axes dropped) are compared element by element
//!   with a naive implementation of the NumPy rule; incompatible pairs must panic.
//! - Every public element-wise method is checked on a few values including the corners PyTorch
//!   users trip on (NaN propagation, half-to-even rounding, the sign rules of `//` and `%`,
//!   casts, type promotion), against f64 references computed here.
//!
//! Tolerances: exact for exact ops (arithmetic on exactly representable values, comparisons,
//! rounding, casts); 1e-6 relative (about 8 f32 ulp) for f32 transcendentals, 1e-14 for f64.

mod common;

use common::{broadcast_shape, close, config, panic_message, unravel};
use half::{bf16, f16};
use metajit::{DType, Tensor};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Relative tolerance for one f32 transcendental (≈ 8 ulp).
const F32_REL: f64 = 1e-6;

/// Checks an f32 tensor against f64 references.
#[track_caller]
fn check_f32(what: &str, got: &Tensor, want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.dtype(), DType::F32, "{what}: dtype");
    let g = got.to_vec::<f32>().unwrap();
    assert_eq!(g.len(), want.len(), "{what}: number of elements");
    for (i, (&g, &w)) in g.iter().zip(want).enumerate() {
        assert!(
            close(g as f64, w, rel, abs),
            "{what}[{i}]: got {g:e}, want {w:e} (rel {rel:e}, abs {abs:e})"
        );
    }
}

/// Checks an f32 tensor for exact equality with `want` (NaN matches NaN).
#[track_caller]
fn exact_f32(what: &str, got: &Tensor, want: &[f32]) {
    let w: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    check_f32(what, got, &w, 0.0, 0.0);
}

/// Applies `op` to `xs` (f32) and compares with `reference` evaluated in f64.
#[track_caller]
fn unary_vs_ref(
    what: &str,
    xs: &[f32],
    op: impl Fn(&Tensor) -> Tensor,
    reference: impl Fn(f64) -> f64,
    rel: f64,
    abs: f64,
) {
    let got = op(&Tensor::from_slice(xs));
    let want: Vec<f64> = xs.iter().map(|&x| reference(x as f64)).collect();
    check_f32(what, &got, &want, rel, abs);
}

fn bools(t: &Tensor) -> Vec<bool> {
    assert_eq!(t.dtype(), DType::Bool);
    t.to_vec::<bool>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Broadcasting, as a property.

/// The row-major offset into an operand of shape `src` that output multi-index `idx` reads:
/// `src` is aligned at the right of `idx`, and an axis of extent 1 always reads coordinate 0.
fn source_offset(src: &[usize], idx: &[usize]) -> usize {
    let lead = idx.len() - src.len();
    src.iter().enumerate().fold(0, |lin, (k, &e)| {
        let i = if e == 1 { 0 } else { idx[lead + k] };
        lin * e + i
    })
}

/// Deterministic test data: `n` values from a small set of exactly representable numbers,
/// with NaN now and then when `nan` is set.
fn values(seed: u64, n: usize, nan: bool) -> Vec<f32> {
    const SET: [f32; 9] = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0];
    let mut s = seed;
    (0..n)
        .map(|_| {
            // splitmix64
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if nan && z.is_multiple_of(11) {
                f32::NAN
            } else {
                SET[(z >> 8) as usize % SET.len()]
            }
        })
        .collect()
}

/// A broadcast-compatible pair: an output shape of rank 0–5 with extents 0–4; each operand
/// drops some leading axes and sets some extents to 1.
fn compatible_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(0usize..=4, 0..=5)
        .prop_flat_map(|out| {
            let r = out.len();
            (
                Just(out),
                0..=r,
                0..=r,
                prop::collection::vec(any::<bool>(), r),
                prop::collection::vec(any::<bool>(), r),
            )
        })
        .prop_map(|(out, drop_a, drop_b, ones_a, ones_b)| {
            let derive = |drop: usize, ones: &[bool]| -> Vec<usize> {
                (drop..out.len())
                    .map(|k| if ones[k] { 1 } else { out[k] })
                    .collect()
            };
            (derive(drop_a, &ones_a), derive(drop_b, &ones_b))
        })
}

/// An incompatible pair: like [`compatible_pair`] but both operands keep at least one axis, and
/// at one axis present in both (counted from the right) the extents are distinct and neither is
/// 1 (drawn from {0, 2, 3, 4}).
fn incompatible_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(0usize..=4, 1..=5)
        .prop_flat_map(|out| {
            let r = out.len();
            (
                Just(out),
                0..r,
                0..r,
                prop::collection::vec(any::<bool>(), r),
                prop::collection::vec(any::<bool>(), r),
                any::<prop::sample::Index>(),
                prop::sample::subsequence(vec![0usize, 2, 3, 4], 2).prop_shuffle(),
            )
        })
        .prop_map(|(out, drop_a, drop_b, ones_a, ones_b, axis, clash)| {
            let derive = |drop: usize, ones: &[bool]| -> Vec<usize> {
                (drop..out.len())
                    .map(|k| if ones[k] { 1 } else { out[k] })
                    .collect()
            };
            let (mut a, mut b) = (derive(drop_a, &ones_a), derive(drop_b, &ones_b));
            let from_right = axis.index(a.len().min(b.len()));
            let (ra, rb) = (a.len(), b.len());
            a[ra - 1 - from_right] = clash[0];
            b[rb - 1 - from_right] = clash[1];
            (a, b)
        })
}

/// Compares `op(a, b)` with the naive broadcast of `f` over the two value lists.
fn check_broadcast_op<T: PartialEq + std::fmt::Debug + metajit::Element>(
    name: &str,
    got: &Tensor,
    out: &[usize],
    (sa, va): (&[usize], &[f32]),
    (sb, vb): (&[usize], &[f32]),
    f: impl Fn(f32, f32) -> T,
    same: impl Fn(&T, &T) -> bool,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.dims(), out, "{}: shape", name);
    let g = got.to_vec::<T>().unwrap();
    let n: usize = out.iter().product();
    prop_assert_eq!(g.len(), n, "{}: number of elements", name);
    for (lin, gv) in g.iter().enumerate() {
        let idx = unravel(lin, out);
        let want = f(va[source_offset(sa, &idx)], vb[source_offset(sb, &idx)]);
        prop_assert!(
            same(gv, &want),
            "{} at {:?} of {:?}: got {:?}, want {:?} (lhs {:?}, rhs {:?})",
            name,
            idx,
            out,
            gv,
            want,
            sa,
            sb
        );
    }
    Ok(())
}

fn same_f32(a: &f32, b: &f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn broadcasting_matches_the_naive_rule((sa, sb) in compatible_pair(), seed in any::<u64>()) {
        let out = broadcast_shape(&sa, &sb).expect("compatible by construction");
        let va = values(seed, sa.iter().product(), true);
        let vb = values(seed ^ 0x5555, sb.iter().product(), true);
        let a = Tensor::from_vec(va.clone(), sa.clone());
        let b = Tensor::from_vec(vb.clone(), sb.clone());
        let (ea, eb) = ((&sa[..], &va[..]), (&sb[..], &vb[..]));

        check_broadcast_op("add", &a.add(&b), &out, ea, eb, |x, y| x + y, same_f32)?;
        check_broadcast_op("mul", &a.mul(&b), &out, ea, eb, |x, y| x * y, same_f32)?;
        // PyTorch's maximum: NaN if either side is NaN.
        let max = |x: f32, y: f32| if x.is_nan() || y.is_nan() { f32::NAN } else { x.max(y) };
        check_broadcast_op("maximum", &a.maximum(&b), &out, ea, eb, max, same_f32)?;
        check_broadcast_op("lt", &b.lt(&a), &out, eb, ea, |x, y| x < y, bool::eq)?;
        // Broadcasting with promotion: i32 lhs, f32 rhs → f32.
        let ai = a.cast(DType::I32);
        let sum = ai.add(&b);
        prop_assert_eq!(sum.dtype(), DType::F32);
        let trunc = |x: f32| if x.is_nan() { 0.0 } else { x.trunc() };
        check_broadcast_op("i32 + f32", &sum, &out, ea, eb, |x, y| trunc(x) + y, same_f32)?;
    }

    #[test]
    fn incompatible_shapes_panic((sa, sb) in incompatible_pair()) {
        prop_assert!(broadcast_shape(&sa, &sb).is_none(), "{:?} {:?} should clash", sa, sb);
        let a = Tensor::zeros(sa.clone());
        let b = Tensor::ones(sb.clone());
        type BinOp = fn(&Tensor, &Tensor) -> Tensor;
        let ops: [(&str, BinOp); 4] = [
            ("add", |a, b| a.add(b)),
            ("mul", |a, b| a.mul(b)),
            ("maximum", |a, b| a.maximum(b)),
            ("lt", |a, b| a.lt(b)),
        ];
        for (name, op) in ops {
            let msg = panic_message(|| {
                op(&a, &b);
            });
            let msg = msg.ok_or_else(|| {
                TestCaseError::fail(format!("{name} of {sa:?} and {sb:?} did not panic"))
            })?;
            prop_assert!(
                msg.contains(&format!("shape mismatch in {name}")),
                "{}: message does not name the op: {}", name, msg
            );
        }
    }
}

#[test]
fn broadcasting_examples() {
    // [3, 1] with [4] → [3, 4]; a rank-0 tensor broadcasts to anything.
    let col = Tensor::from_vec(vec![0.0f32, 10.0, 20.0], [3, 1]);
    let row = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [4]);
    let s = col.add(&row);
    assert_eq!(s.dims(), &[3, 4]);
    exact_f32(
        "[3,1] + [4]",
        &s,
        &[1., 2., 3., 4., 11., 12., 13., 14., 21., 22., 23., 24.],
    );
    let s = Tensor::scalar(2.0f32).mul(&col);
    assert_eq!(s.dims(), &[3, 1]);
    exact_f32("[] * [3,1]", &s, &[0., 20., 40.]);
    // An extent 0 against 1 gives 0.
    let e = Tensor::zeros([0, 1]).add(&Tensor::zeros([1, 5]));
    assert_eq!(e.dims(), &[0, 5]);
    assert!(e.to_vec::<f32>().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. Arithmetic.

#[test]
fn add_sub_mul_on_floats_and_ints() {
    let a = Tensor::from_slice(&[1.5f32, -2.0, 0.25, f32::INFINITY]);
    let b = Tensor::from_slice(&[0.5f32, 3.0, -0.25, f32::INFINITY]);
    exact_f32("add", &a.add(&b), &[2.0, 1.0, 0.0, f32::INFINITY]);
    exact_f32("sub", &a.sub(&b), &[1.0, -5.0, 0.5, f32::NAN]);
    exact_f32("mul", &a.mul(&b), &[0.75, -6.0, -0.0625, f32::INFINITY]);

    let a = Tensor::from_slice(&[7i32, -7, i32::MAX]);
    let b = Tensor::from_slice(&[2i32, 3, 1]);
    assert_eq!(a.add(&b).to_vec::<i32>().unwrap(), [9, -4, i32::MIN]); // wraps
    assert_eq!(a.sub(&b).to_vec::<i32>().unwrap(), [5, -10, i32::MAX - 1]);
    assert_eq!(a.mul(&b).to_vec::<i32>().unwrap(), [14, -21, i32::MAX]);
}

#[test]
fn div_is_true_division_and_ints_give_f32() {
    let a = Tensor::from_slice(&[7i64, -7, 1, 0]);
    let b = Tensor::from_slice(&[2i64, 2, 0, 0]);
    let q = a.div(&b);
    assert_eq!(q.dtype(), DType::F32);
    exact_f32("int / int", &q, &[3.5, -3.5, f32::INFINITY, f32::NAN]);
    let q = Tensor::from_slice(&[1i32, 2, 3]).div(2);
    assert_eq!(q.dtype(), DType::F32);
    exact_f32("int / 2", &q, &[0.5, 1.0, 1.5]);
    let q = Tensor::from_slice(&[1.0f64, -1.0]).div(&Tensor::from_slice(&[3.0f64, 0.0]));
    assert_eq!(q.dtype(), DType::F64);
    assert_eq!(q.to_vec::<f64>().unwrap(), [1.0 / 3.0, f64::NEG_INFINITY]);
}

#[test]
fn floor_divide_rounds_toward_negative_infinity() {
    let a = Tensor::from_slice(&[-7i32, 7, 7, -7, 5, 0]);
    let b = Tensor::from_slice(&[2i32, -2, 2, -2, 0, 3]);
    let q = a.floor_divide(&b);
    assert_eq!(q.dtype(), DType::I32);
    // Integer division by zero gives 0 (documented; PyTorch raises).
    assert_eq!(q.to_vec::<i32>().unwrap(), [-4, -4, 3, 3, 0, 0]);

    let a = Tensor::from_slice(&[-7.5f32, 7.5, -7.0, 1.0, -1.0]);
    let b = Tensor::from_slice(&[2.0f32, -2.0, 2.0, 0.0, 0.0]);
    exact_f32(
        "float //",
        &a.floor_divide(&b),
        &[-4.0, -4.0, -4.0, f32::INFINITY, f32::NEG_INFINITY],
    );
    // i64 with a scalar.
    let q = Tensor::from_slice(&[-9i64, 9]).floor_divide(4);
    assert_eq!(q.to_vec::<i64>().unwrap(), [-3, 2]);
}

#[test]
fn float_floor_divide_agrees_with_remainder() {
    // PyTorch (c10::div_floor_floating) and Python derive the quotient from fmod so that
    // `a == b * (a // b) + a % b` holds: 1.0 // 0.1 is 9 (0.1f32 is slightly above 0.1, so
    // the true quotient is just below 10), although 1.0 / 0.1 rounds to exactly 10.0 in f32.
    let a = Tensor::from_slice(&[1.0f32]);
    let b = Tensor::from_slice(&[0.1f32]);
    let q = a.floor_divide(&b).to_vec::<f32>().unwrap()[0];
    let r = a.remainder(&b).to_vec::<f32>().unwrap()[0];
    assert!(r > 0.09 && r < 0.1, "remainder(1, 0.1) = {r}");
    assert_eq!(
        q,
        9.0,
        "floor_divide(1, 0.1) (remainder is {r}, so q*b + r = {})",
        q * 0.1 + r
    );
}

#[test]
fn remainder_takes_the_divisors_sign() {
    let a = Tensor::from_slice(&[-7i32, 7, 7, -7, 5, 6]);
    let b = Tensor::from_slice(&[2i32, -2, 2, -2, 0, 3]);
    // Integer remainder by zero gives 0 (documented).
    assert_eq!(
        a.remainder(&b).to_vec::<i32>().unwrap(),
        [1, -1, 1, -1, 0, 0]
    );
    let a = Tensor::from_slice(&[-7.5f32, 7.5, 5.5, 1.0, -4.0, -0.5]);
    let b = Tensor::from_slice(&[2.0f32, -2.0, 2.0, 0.0, 2.0, f32::INFINITY]);
    let r = a.remainder(&b);
    // -0.5 % inf: fmod gives -0.5, whose sign differs from the divisor's, so inf (Python too).
    exact_f32(
        "float %",
        &r,
        &[0.5, -0.5, 1.5, f32::NAN, 0.0, f32::INFINITY],
    );
    // u8 is unsigned.
    let r = Tensor::from_slice(&[200u8, 7]).remainder(&Tensor::from_slice(&[7u8, 200]));
    assert_eq!(r.to_vec::<u8>().unwrap(), [4, 7]);
}

#[test]
fn pow_on_floats_and_ints() {
    let a = Tensor::from_slice(&[2.0f32, 2.0, -8.0, 0.0, 0.0, -2.0, -2.0, 4.0]);
    let b = Tensor::from_slice(&[3.0f32, 0.5, 1.0 / 3.0, 0.0, -1.0, 2.0, 3.0, -0.5]);
    let want: Vec<f64> = [
        8.0,
        2f64.sqrt(),
        f64::NAN,
        1.0,
        f64::INFINITY,
        4.0,
        -8.0,
        0.5,
    ]
    .into();
    check_f32("float pow", &a.pow(&b), &want, F32_REL, 0.0);

    let a = Tensor::from_slice(&[2i64, 3, -2, 2, 1, -1, -1, 0]);
    let b = Tensor::from_slice(&[10i64, 0, 3, -1, -5, -3, -4, 0]);
    // Negative exponents: 1 → 1, -1 → ±1, anything else → 0 (documented; PyTorch raises).
    assert_eq!(
        a.pow(&b).to_vec::<i64>().unwrap(),
        [1024, 1, -8, 0, 1, -1, 1, 1]
    );
    // An integer tensor to a float power is f32.
    let p = Tensor::from_slice(&[4i32, 9]).pow(0.5);
    assert_eq!(p.dtype(), DType::F32);
    exact_f32("int ** 0.5", &p, &[2.0, 3.0]);
    exact_f32(
        "x ** 2",
        &Tensor::from_slice(&[-3.0f32, 1.5]).pow(2),
        &[9.0, 2.25],
    );
}

#[test]
fn maximum_and_minimum_propagate_nan() {
    let a = Tensor::from_slice(&[1.0f32, f32::NAN, 3.0, f32::NAN, -1.0, f32::NEG_INFINITY]);
    let b = Tensor::from_slice(&[2.0f32, 0.0, f32::NAN, f32::NAN, -5.0, 7.0]);
    exact_f32(
        "maximum",
        &a.maximum(&b),
        &[2.0, f32::NAN, f32::NAN, f32::NAN, -1.0, 7.0],
    );
    exact_f32(
        "minimum",
        &a.minimum(&b),
        &[1.0, f32::NAN, f32::NAN, f32::NAN, -5.0, f32::NEG_INFINITY],
    );
    let a = Tensor::from_slice(&[i64::MIN, 5, -3]);
    assert_eq!(a.maximum(0).to_vec::<i64>().unwrap(), [0, 5, 0]);
    assert_eq!(a.minimum(0).to_vec::<i64>().unwrap(), [i64::MIN, 0, -3]);
    // On bools: or / and.
    let p = Tensor::from_slice(&[true, true, false, false]);
    let q = Tensor::from_slice(&[true, false, true, false]);
    assert_eq!(bools(&p.maximum(&q)), [true, true, true, false]);
    assert_eq!(bools(&p.minimum(&q)), [true, false, false, false]);
}

// ---------------------------------------------------------------------------------------------
// Comparisons and logic.

#[test]
fn comparisons_with_nan_are_false_except_ne() {
    let nan = f32::NAN;
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, nan, 1.0, nan, -0.0]);
    let b = Tensor::from_slice(&[2.0f32, 2.0, 2.0, 1.0, nan, nan, 0.0]);
    assert_eq!(
        bools(&a.lt(&b)),
        [true, false, false, false, false, false, false]
    );
    assert_eq!(
        bools(&a.le(&b)),
        [true, true, false, false, false, false, true]
    );
    assert_eq!(
        bools(&a.gt(&b)),
        [false, false, true, false, false, false, false]
    );
    assert_eq!(
        bools(&a.ge(&b)),
        [false, true, true, false, false, false, true]
    );
    assert_eq!(
        bools(&a.eq(&b)),
        [false, true, false, false, false, false, true]
    );
    assert_eq!(
        bools(&a.ne(&b)),
        [true, false, true, true, true, true, false]
    );
}

#[test]
fn comparisons_with_scalars_and_ints() {
    let a = Tensor::from_slice(&[-1i32, 0, 1]);
    assert_eq!(bools(&a.gt(0)), [false, false, true]);
    assert_eq!(bools(&a.ge(0)), [false, true, true]);
    assert_eq!(bools(&a.lt(0.5)), [true, true, false]); // compared in f32
    assert_eq!(bools(&a.le(-1)), [true, false, false]);
    assert_eq!(bools(&a.eq(1)), [false, false, true]);
    assert_eq!(bools(&a.ne(1)), [true, true, false]);
    // Bools order false < true.
    let p = Tensor::from_slice(&[false, false, true, true]);
    let q = Tensor::from_slice(&[false, true, false, true]);
    assert_eq!(bools(&p.lt(&q)), [false, true, false, false]);
    assert_eq!(bools(&p.ge(&q)), [true, false, true, true]);
    let u = Tensor::from_slice(&[0u8, 200]);
    assert_eq!(bools(&u.gt(&Tensor::scalar(100i32))), [false, true]);
}

#[test]
fn logical_ops_use_nonzero_ness() {
    let a = Tensor::from_slice(&[0.0f32, 2.0, f32::NAN, -0.0]);
    let b = Tensor::from_slice(&[1.0f32, 0.0, 3.0, 0.0]);
    assert_eq!(bools(&a.logical_and(&b)), [false, false, true, false]);
    assert_eq!(bools(&a.logical_or(&b)), [true, true, true, false]);
    assert_eq!(bools(&a.logical_xor(&b)), [true, true, false, false]);
    assert_eq!(bools(&a.logical_not()), [true, false, false, true]);
    let i = Tensor::from_slice(&[0i64, -3]);
    assert_eq!(bools(&i.logical_not()), [true, false]);
    // Mixed dtypes and broadcasting.
    let m = Tensor::from_vec(vec![true, false], [2, 1]);
    let r = m.logical_and(&Tensor::from_slice(&[1i32, 0, 5]));
    assert_eq!(r.dims(), &[2, 3]);
    assert_eq!(bools(&r), [true, false, true, false, false, false]);
}

#[test]
fn bitwise_ops_on_ints_and_bools() {
    let a = Tensor::from_slice(&[0b1100i32, -1, 5]);
    let b = Tensor::from_slice(&[0b1010i32, 7, 0]);
    assert_eq!(a.bitwise_and(&b).to_vec::<i32>().unwrap(), [0b1000, 7, 0]);
    assert_eq!(a.bitwise_or(&b).to_vec::<i32>().unwrap(), [0b1110, -1, 5]);
    assert_eq!(a.bitwise_xor(&b).to_vec::<i32>().unwrap(), [0b0110, -8, 5]);
    assert_eq!(a.bitwise_not().to_vec::<i32>().unwrap(), [!0b1100, 0, -6]);
    assert_eq!(a.bitwise_and(6).to_vec::<i32>().unwrap(), [4, 6, 4]);
    let u = Tensor::from_slice(&[0u8, 0xF0]);
    assert_eq!(u.bitwise_not().to_vec::<u8>().unwrap(), [255, 0x0F]);
    let p = Tensor::from_slice(&[true, true, false]);
    let q = Tensor::from_slice(&[true, false, false]);
    assert_eq!(bools(&p.bitwise_and(&q)), [true, false, false]);
    assert_eq!(bools(&p.bitwise_or(&q)), [true, true, false]);
    assert_eq!(bools(&p.bitwise_xor(&q)), [false, true, false]);
    assert_eq!(bools(&p.bitwise_not()), [false, false, true]);
}

// ---------------------------------------------------------------------------------------------
// where and masked_fill.

#[test]
fn where_with_tensors_scalars_and_broadcasting() {
    let c = Tensor::from_slice(&[true, false, true]);
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let b = Tensor::from_slice(&[-1.0f32, -2.0, -3.0]);
    exact_f32(
        "where(t, t)",
        &Tensor::where_(&c, &a, &b),
        &[1.0, -2.0, 3.0],
    );
    exact_f32(
        "where(t, 0.0)",
        &Tensor::where_(&c, &a, 0.0),
        &[1.0, 0.0, 3.0],
    );
    exact_f32(
        "where(1.5, t)",
        &Tensor::where_(&c, 1.5, &b),
        &[1.5, -2.0, 1.5],
    );

    let w = Tensor::where_(&c, 1.0, 0.0);
    assert_eq!(w.dtype(), DType::F32);
    exact_f32("where(1.0, 0.0)", &w, &[1.0, 0.0, 1.0]);
    let w = Tensor::where_(&c, 7, -7);
    assert_eq!(w.dtype(), DType::I64);
    assert_eq!(w.to_vec::<i64>().unwrap(), [7, -7, 7]);
    let w = Tensor::where_(&c, false, true);
    assert_eq!(bools(&w), [false, true, false]);

    // An i32 tensor with a float scalar promotes to f32.
    let w = Tensor::where_(&c, &Tensor::from_slice(&[1i32, 2, 3]), 0.5);
    assert_eq!(w.dtype(), DType::F32);
    exact_f32("where(i32, 0.5)", &w, &[1.0, 0.5, 3.0]);

    // cond [2, 1], a [3], b [] → [2, 3].
    let c = Tensor::from_vec(vec![true, false], [2, 1]);
    let w = Tensor::where_(&c, &a, 9.0);
    assert_eq!(w.dims(), &[2, 3]);
    exact_f32("where broadcast", &w, &[1.0, 2.0, 3.0, 9.0, 9.0, 9.0]);
    // The condition itself broadcasts against larger operands.
    let c = Tensor::scalar(true);
    let w = Tensor::where_(&c, &Tensor::zeros([2, 2]), 1.0);
    assert_eq!(w.dims(), &[2, 2]);
    exact_f32("where scalar cond", &w, &[0.0; 4]);
}

#[test]
fn masked_fill_replaces_where_the_mask_is_true() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]);
    let m = Tensor::from_vec(vec![true, false], [2, 1]);
    let y = x.masked_fill(&m, f64::NEG_INFINITY);
    assert_eq!(y.dims(), &[2, 2]);
    exact_f32(
        "masked_fill",
        &y,
        &[f32::NEG_INFINITY, f32::NEG_INFINITY, 3.0, 4.0],
    );
    let y = x.masked_fill(&x.gt(2.5f64), 0.0);
    exact_f32("masked_fill(x > 2.5)", &y, &[1.0, 2.0, 0.0, 0.0]);
}

#[test]
fn masked_fill_keeps_the_tensors_dtype() {
    // PyTorch's masked_fill is `self.clone().masked_fill_(mask, value)`: the value is converted
    // to self's dtype (in-place ops cannot change it), so an i32 tensor stays i32.
    let x = Tensor::from_slice(&[1i32, 2, 3]);
    let m = Tensor::from_slice(&[true, false, true]);
    let y = x.masked_fill(&m, 0.5);
    assert_eq!(y.dtype(), DType::I32, "masked_fill changed the dtype");
    assert_eq!(y.to_vec::<i32>().unwrap(), [0, 2, 0]);
    let b = Tensor::from_slice(&[false, false]);
    let y = b.masked_fill(&Tensor::from_slice(&[true, false]), 1);
    assert_eq!(y.dtype(), DType::Bool, "masked_fill changed the dtype");
}

// ---------------------------------------------------------------------------------------------
// Unary math.

const XS: [f32; 10] = [-3.0, -1.0, -0.5, -0.0, 0.0, 0.25, 1.0, 2.5, 10.0, 0.001];

#[test]
fn neg_abs_on_floats_and_ints() {
    let x = Tensor::from_slice(&[-1.5f32, 0.0, 2.0, f32::NEG_INFINITY, f32::NAN]);
    exact_f32("neg", &x.neg(), &[1.5, -0.0, -2.0, f32::INFINITY, f32::NAN]);
    exact_f32("abs", &x.abs(), &[1.5, 0.0, 2.0, f32::INFINITY, f32::NAN]);
    let z = Tensor::from_slice(&[-0.0f32])
        .abs()
        .to_vec::<f32>()
        .unwrap()[0];
    assert!(z.is_sign_positive(), "abs(-0.0) = {z}");
    let i = Tensor::from_slice(&[-5i32, 0, 7, i32::MIN]);
    assert_eq!(i.neg().to_vec::<i32>().unwrap(), [5, 0, -7, i32::MIN]);
    assert_eq!(i.abs().to_vec::<i32>().unwrap(), [5, 0, 7, i32::MIN]);
    assert_eq!(
        Tensor::from_slice(&[3u8]).neg().to_vec::<u8>().unwrap(),
        [253]
    );
    assert_eq!(
        bools(&Tensor::from_slice(&[true, false]).abs()),
        [true, false]
    );
}

#[test]
fn recip_sqrt_rsqrt() {
    let xs = [4.0f32, 0.25, 2.0, 0.0, -0.0, -1.0, f32::INFINITY, 3.0];
    unary_vs_ref("recip", &xs, Tensor::recip, |x| 1.0 / x, F32_REL, 0.0);
    unary_vs_ref("sqrt", &xs, Tensor::sqrt, f64::sqrt, F32_REL, 0.0);
    // rsqrt(-0.0) = 1/sqrt(-0.0) = 1/-0.0 = -inf (IEEE, as torch.rsqrt).
    unary_vs_ref(
        "rsqrt",
        &xs,
        Tensor::rsqrt,
        |x| 1.0 / x.sqrt(),
        F32_REL,
        0.0,
    );
    // Integers compute in f32.
    let r = Tensor::from_slice(&[4i32, 9]).sqrt();
    assert_eq!(r.dtype(), DType::F32);
    exact_f32("sqrt(i32)", &r, &[2.0, 3.0]);
    exact_f32(
        "recip(i64)",
        &Tensor::from_slice(&[2i64, 0]).recip(),
        &[0.5, f32::INFINITY],
    );
}

#[test]
fn exp_log_and_trigonometry() {
    let mut xs = XS.to_vec();
    xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 80.0, -80.0]);
    unary_vs_ref("exp", &xs, Tensor::exp, f64::exp, F32_REL, 0.0);
    unary_vs_ref("sin", &xs, Tensor::sin, f64::sin, F32_REL, 1e-7);
    unary_vs_ref("cos", &xs, Tensor::cos, f64::cos, F32_REL, 1e-7);
    unary_vs_ref("tanh", &xs, Tensor::tanh, f64::tanh, F32_REL, 0.0);
    // log: -inf at ±0, NaN for negatives.
    unary_vs_ref("log", &xs, Tensor::log, f64::ln, F32_REL, 0.0);
    let r = Tensor::from_slice(&[1i32, 2]).exp();
    assert_eq!(r.dtype(), DType::F32);
    check_f32("exp(i32)", &r, &[1f64.exp(), 2f64.exp()], F32_REL, 0.0);
    // f64 stays f64 and is accurate to f64 precision.
    let x = Tensor::from_slice(&[0.5f64, -2.0, 3.0]);
    let e = x.exp().to_vec::<f64>().unwrap();
    let l = x.abs().log().to_vec::<f64>().unwrap();
    let t = x.tanh().to_vec::<f64>().unwrap();
    for (k, v) in [0.5f64, -2.0, 3.0].into_iter().enumerate() {
        assert!(close(e[k], v.exp(), 1e-14, 0.0), "f64 exp({v}) = {}", e[k]);
        assert!(
            close(l[k], v.abs().ln(), 1e-14, 0.0),
            "f64 log({v}) = {}",
            l[k]
        );
        assert!(
            close(t[k], v.tanh(), 1e-14, 0.0),
            "f64 tanh({v}) = {}",
            t[k]
        );
    }
}

#[test]
fn sigmoid_is_accurate_and_saturates() {
    let mut xs = XS.to_vec();
    xs.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        30.0,
        -30.0,
        -100.0,
        100.0,
    ]);
    // sigmoid(-100) ≈ 3.7e-44 underflows f32's normal range; accept it within 1e-30.
    unary_vs_ref(
        "sigmoid",
        &xs,
        Tensor::sigmoid,
        |x| 1.0 / (1.0 + (-x).exp()),
        F32_REL,
        1e-30,
    );
}

/// erf by its Maclaurin series, accurate to ~1e-13 for |x| ≤ 3 (the test's reference).
fn erf_ref(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x.abs() > 6.0 {
        return x.signum();
    }
    assert!(x.abs() <= 3.0, "erf_ref is only accurate on [-3, 3]");
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    let (mut term, mut sum) = (x, x);
    for n in 1..80 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn erf_known_values() {
    // The reference first, against published values.
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (-1.0, -0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.0, 0.999_977_909_503_001_4),
    ] {
        assert!(
            close(erf_ref(x), want, 1e-12, 0.0),
            "erf_ref({x}) = {}",
            erf_ref(x)
        );
    }
    let known = [0.5f32, -1.0, 2.0, 0.0, -0.0, 3.0];
    unary_vs_ref("erf", &known, Tensor::erf, erf_ref, F32_REL, 0.0);
    let r = Tensor::from_slice(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN]).erf();
    exact_f32("erf(±inf, nan)", &r, &[1.0, -1.0, f32::NAN]);
    let r = Tensor::from_slice(&[0.5f64, -1.0])
        .erf()
        .to_vec::<f64>()
        .unwrap();
    assert!(
        close(r[0], 0.520_499_877_813_046_5, 1e-14, 0.0),
        "f64 erf(0.5) = {}",
        r[0]
    );
    assert!(
        close(r[1], -0.842_700_792_949_714_9, 1e-14, 0.0),
        "f64 erf(-1) = {}",
        r[1]
    );
}

#[test]
fn floor_ceil_round_half_to_even() {
    let x = Tensor::from_slice(&[
        0.5f32,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -2.5,
        0.49999997,
        2.7,
        -2.7,
        -0.2,
        f32::NAN,
        f32::INFINITY,
    ]);
    exact_f32(
        "round",
        &x.round(),
        &[
            0.0,
            2.0,
            2.0,
            -0.0,
            -2.0,
            -2.0,
            0.0,
            3.0,
            -3.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
        ],
    );
    exact_f32(
        "floor",
        &x.floor(),
        &[
            0.0,
            1.0,
            2.0,
            -1.0,
            -2.0,
            -3.0,
            0.0,
            2.0,
            -3.0,
            -1.0,
            f32::NAN,
            f32::INFINITY,
        ],
    );
    exact_f32(
        "ceil",
        &x.ceil(),
        &[
            1.0,
            2.0,
            3.0,
            -0.0,
            -1.0,
            -2.0,
            1.0,
            3.0,
            -2.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
        ],
    );
    // The sign of zero: round(-0.5) = -0.0, ceil(-0.2) = -0.0.
    let r = x.round().to_vec::<f32>().unwrap();
    assert!(
        r[3] == 0.0 && r[3].is_sign_negative(),
        "round(-0.5) = {}",
        r[3]
    );
    let c = x.ceil().to_vec::<f32>().unwrap();
    assert!(
        c[9] == 0.0 && c[9].is_sign_negative(),
        "ceil(-0.2) = {}",
        c[9]
    );
    // Identity on integers.
    let i = Tensor::from_slice(&[-3i64, 4]);
    assert_eq!(i.round().to_vec::<i64>().unwrap(), [-3, 4]);
    assert_eq!(i.floor().to_vec::<i64>().unwrap(), [-3, 4]);
    assert_eq!(i.ceil().to_vec::<i64>().unwrap(), [-3, 4]);
    // f64 ties.
    let d = Tensor::from_slice(&[2.5f64, 3.5, -4.5]).round();
    assert_eq!(d.to_vec::<f64>().unwrap(), [2.0, 4.0, -4.0]);
}

#[test]
fn square_and_sign() {
    exact_f32(
        "square",
        &Tensor::from_slice(&[-3.0f32, 0.5]).square(),
        &[9.0, 0.25],
    );
    let x = Tensor::from_slice(&[-3.0f32, 0.0, 2.0, f32::NAN, -0.0, f32::NEG_INFINITY]);
    let s = x.sign();
    assert_eq!(s.dtype(), DType::F32);
    exact_f32("sign", &s, &[-1.0, 0.0, 1.0, f32::NAN, 0.0, -1.0]);
    let i = Tensor::from_slice(&[-5i32, 0, 7]).sign();
    assert_eq!(i.dtype(), DType::I32);
    assert_eq!(i.to_vec::<i32>().unwrap(), [-1, 0, 1]);
}

#[test]
fn isnan_isinf_isfinite() {
    let x = Tensor::from_slice(&[1.0f32, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0]);
    assert_eq!(bools(&x.isnan()), [false, true, false, false, false]);
    assert_eq!(bools(&x.isinf()), [false, false, true, true, false]);
    assert_eq!(bools(&x.isfinite()), [true, false, false, false, true]);
    let h = Tensor::from_slice(&[f16::INFINITY, f16::NAN, f16::from_f32(1.0)]);
    assert_eq!(bools(&h.isinf()), [true, false, false]);
    assert_eq!(bools(&h.isnan()), [false, true, false]);
    let i = Tensor::from_slice(&[i64::MAX, 0]);
    assert_eq!(bools(&i.isnan()), [false, false]);
    assert_eq!(bools(&i.isinf()), [false, false]);
    assert_eq!(bools(&i.isfinite()), [true, true]);
}

// ---------------------------------------------------------------------------------------------
// Activations.

#[test]
fn relu_keeps_nan() {
    let x = Tensor::from_slice(&[
        -1.0f32,
        0.0,
        2.0,
        f32::NAN,
        f32::NEG_INFINITY,
        f32::INFINITY,
    ]);
    exact_f32(
        "relu",
        &x.relu(),
        &[0.0, 0.0, 2.0, f32::NAN, 0.0, f32::INFINITY],
    );
    let i = Tensor::from_slice(&[-3i32, 4]).relu();
    assert_eq!(i.dtype(), DType::I32);
    assert_eq!(i.to_vec::<i32>().unwrap(), [0, 4]);
}

#[test]
fn leaky_relu_scales_negatives() {
    let x = Tensor::from_slice(&[-2.0f32, 0.0, 3.0, f32::NAN, f32::NEG_INFINITY]);
    let y = x.leaky_relu(0.01);
    check_f32(
        "leaky_relu",
        &y,
        &[-0.02, 0.0, 3.0, f64::NAN, f64::NEG_INFINITY],
        F32_REL,
        0.0,
    );
}

#[test]
fn gelu_silu_match_their_definitions() {
    let xs = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 2.5];
    // GELU(x) = x/2 (1 + erf(x/√2)); 1 + erf cancels for negative x, so allow 1e-6 absolute.
    unary_vs_ref(
        "gelu",
        &xs,
        Tensor::gelu,
        |x| 0.5 * x * (1.0 + erf_ref(x / 2f64.sqrt())),
        1e-5,
        1e-6,
    );
    // Published: GELU(1) = Φ(1) = 0.8413447460685429.
    unary_vs_ref(
        "gelu(1)",
        &[1.0],
        Tensor::gelu,
        |_| 0.841_344_746_068_542_9,
        1e-6,
        0.0,
    );
    // The tanh approximation (PyTorch's `approximate='tanh'`), against the formula in f64:
    // x/2 (1 + tanh(sqrt(2/π) (x + 0.044715 x³))). Far out, tanh saturates: gelu_tanh(x) = x
    // above and (to f32) 0 below, and NaN propagates.
    let gelu_tanh_ref = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
    };
    let mut wide = xs.to_vec();
    wide.extend([-12.0, -5.0, -2.7, 3.0, 5.0, 12.0, 100.0, f32::NAN]);
    unary_vs_ref(
        "gelu_tanh",
        &wide,
        Tensor::gelu_tanh,
        gelu_tanh_ref,
        1e-5,
        1e-6,
    );
    // Differs from the exact GELU: gelu_tanh(-2.7) - gelu(-2.7) ≈ 4.7e-4, which is why both exist.
    let x = Tensor::from_slice(&[-2.7f32]);
    let d = (x.gelu_tanh() - x.gelu()).item::<f32>().unwrap();
    assert!(
        (d - 4.73e-4).abs() < 2e-5,
        "gelu_tanh(-2.7) - gelu(-2.7) = {d}"
    );
    // Integers compute in the default float dtype, as gelu does.
    let i = Tensor::from_slice(&[1i32, -1]).gelu_tanh();
    assert!(i.dtype().is_float());
    check_f32(
        "gelu_tanh(int)",
        &i,
        &[gelu_tanh_ref(1.0), gelu_tanh_ref(-1.0)],
        1e-5,
        1e-6,
    );
    let mut xs = xs.to_vec();
    xs.extend([-100.0, 100.0, f32::NAN]);
    unary_vs_ref(
        "silu",
        &xs,
        Tensor::silu,
        |x| x / (1.0 + (-x).exp()),
        F32_REL,
        1e-30,
    );
}

#[test]
fn softplus_is_stable_at_the_extremes() {
    let x = Tensor::from_slice(&[80.0f32, -80.0, 0.0, 1.0, 20.0, 25.0, -1.0, f32::NAN]);
    let want: Vec<f64> = [80.0f64, -80.0, 0.0, 1.0, 20.0, 25.0, -1.0, f64::NAN]
        .iter()
        .map(|&v: &f64| if v > 20.0 { v } else { v.exp().ln_1p() })
        .collect();
    // softplus(-80) ≈ 1.8e-35: accept 0 within 1e-30.
    check_f32("softplus", &x.softplus(), &want, 1e-6, 1e-30);
}

#[test]
fn softplus_is_accurate_for_negative_inputs() {
    // softplus(x) = log1p(exp(x)) ≈ exp(x) for x ≪ 0. PyTorch evaluates log1p; computing
    // log(1 + exp(-|x|)) instead loses every digit once exp(-|x|) < 2^-24.
    let xs = [-5.0f32, -10.0, -15.0, -20.0];
    unary_vs_ref(
        "softplus",
        &xs,
        Tensor::softplus,
        |x| x.exp().ln_1p(),
        1e-5,
        0.0,
    );
}

#[test]
fn clamp_keeps_nan_and_bounds_infinities() {
    let x = Tensor::from_slice(&[
        -2.0f32,
        0.5,
        3.0,
        f32::NAN,
        f32::NEG_INFINITY,
        f32::INFINITY,
    ]);
    exact_f32(
        "clamp",
        &x.clamp(-1.0, 1.0),
        &[-1.0, 0.5, 1.0, f32::NAN, -1.0, 1.0],
    );
    exact_f32(
        "clamp_min",
        &x.clamp_min(0.0),
        &[0.0, 0.5, 3.0, f32::NAN, 0.0, f32::INFINITY],
    );
    exact_f32(
        "clamp_max",
        &x.clamp_max(0.0),
        &[-2.0, 0.0, 0.0, f32::NAN, f32::NEG_INFINITY, 0.0],
    );
    exact_f32(
        "clamp(a, a)",
        &x.clamp(0.25, 0.25),
        &[0.25, 0.25, 0.25, f32::NAN, 0.25, 0.25],
    );
    let i = Tensor::from_slice(&[-5i64, 0, 5]).clamp(-1.0, 2.0);
    check_f32(
        "clamp(i64)",
        &i.cast(DType::F32),
        &[-1.0, 0.0, 2.0],
        0.0,
        0.0,
    );
}

// ---------------------------------------------------------------------------------------------
// Casts and type promotion.

#[test]
fn cast_float_to_int_truncates_saturates_and_maps_nan_to_zero() {
    let x = Tensor::from_slice(&[
        -2.7f32,
        2.7,
        f32::NAN,
        1e10,
        -1e10,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.5,
    ]);
    assert_eq!(
        x.cast(DType::I32).to_vec::<i32>().unwrap(),
        [-2, 2, 0, i32::MAX, i32::MIN, i32::MAX, i32::MIN, 0]
    );
    assert_eq!(
        x.cast(DType::I64).to_vec::<i64>().unwrap(),
        [
            -2,
            2,
            0,
            10_000_000_000,
            -10_000_000_000,
            i64::MAX,
            i64::MIN,
            0
        ]
    );
    assert_eq!(
        x.cast(DType::U8).to_vec::<u8>().unwrap(),
        [0, 2, 0, 255, 0, 255, 0, 0]
    );
    assert_eq!(
        bools(&x.cast(DType::Bool)),
        [true, true, true, true, true, true, true, true]
    );
    let z = Tensor::from_slice(&[0.0f32, -0.0]).cast(DType::Bool);
    assert_eq!(bools(&z), [false, false]);
}

#[test]
fn cast_between_ints_wraps_and_bools_are_zero_one() {
    let i = Tensor::from_slice(&[300i32, -1, 256, 255]);
    assert_eq!(i.cast(DType::U8).to_vec::<u8>().unwrap(), [44, 255, 0, 255]);
    let l = Tensor::from_slice(&[(1i64 << 32) + 5, -1, i64::MIN]);
    assert_eq!(l.cast(DType::I32).to_vec::<i32>().unwrap(), [5, -1, 0]);
    assert_eq!(bools(&l.cast(DType::Bool)), [true, true, true]);
    let b = Tensor::from_slice(&[true, false]);
    exact_f32("bool → f32", &b.cast(DType::F32), &[1.0, 0.0]);
    assert_eq!(b.cast(DType::I64).to_vec::<i64>().unwrap(), [1, 0]);
    // to_dtype is the same op.
    assert_eq!(b.to_dtype(DType::U8).to_vec::<u8>().unwrap(), [1, 0]);
    // Casting to the same dtype is the identity.
    let f = Tensor::from_slice(&[1.5f32]);
    assert_eq!(f.cast(DType::F32).id(), f.id());
}

#[test]
fn cast_to_narrower_floats_rounds_to_nearest_even() {
    // bf16 has 7 fraction bits: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 → 1 (even);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6 → 1 + 2^-6 (even).
    let x = Tensor::from_slice(&[1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), 65504.0, 1e5]);
    let b = x.cast(DType::BF16).to_vec::<bf16>().unwrap();
    assert_eq!(b[0].to_f32(), 1.0);
    assert_eq!(b[1].to_f32(), 1.015_625);
    let h = x.cast(DType::F16).to_vec::<f16>().unwrap();
    assert_eq!(h[2].to_f32(), 65504.0);
    assert_eq!(h[3], f16::INFINITY, "1e5 overflows f16");
    let back = x.cast(DType::F16).cast(DType::F32).to_vec::<f32>().unwrap();
    assert_eq!(back[0], 1.0 + 2f32.powi(-8), "1 + 2^-8 is exact in f16");
}

#[test]
fn type_promotion_follows_pytorch() {
    let i32t = Tensor::from_slice(&[1i32, 2]);
    let f32t = Tensor::from_slice(&[0.5f32, 0.25]);
    let r = i32t.add(&f32t);
    assert_eq!(r.dtype(), DType::F32, "i32 + f32");
    exact_f32("i32 + f32", &r, &[1.5, 2.25]);

    let r = i32t.add(1.5);
    assert_eq!(r.dtype(), DType::F32, "i32 + 1.5");
    exact_f32("i32 + 1.5", &r, &[2.5, 3.5]);
    assert_eq!(i32t.add(2).dtype(), DType::I32, "i32 + 2 (weak int)");
    assert_eq!(i32t.mul(2i64).dtype(), DType::I32, "i32 * 2i64 (weak int)");

    let p = Tensor::from_slice(&[true, false, false]);
    let q = Tensor::from_slice(&[true, true, false]);
    let r = p.add(&q);
    assert_eq!(r.dtype(), DType::Bool, "bool + bool");
    assert_eq!(bools(&r), [true, true, false]);
    let r = p.add(1);
    assert_eq!(r.dtype(), DType::I64, "bool + 1");
    assert_eq!(r.to_vec::<i64>().unwrap(), [2, 1, 1]);
    assert_eq!(p.mul(2.5).dtype(), DType::F32, "bool * 2.5");
    assert_eq!(p.add(true).dtype(), DType::Bool, "bool + true");

    let h = Tensor::from_slice(&[f16::from_f32(1.5)]);
    let b = Tensor::from_slice(&[bf16::from_f32(2.0)]);
    let r = h.add(&b);
    assert_eq!(r.dtype(), DType::F32, "f16 + bf16");
    exact_f32("f16 + bf16", &r, &[3.5]);
    assert_eq!(h.add(1.5).dtype(), DType::F16, "f16 + 1.5 (weak float)");

    let u = Tensor::from_slice(&[200u8, 1]);
    let r = u.add(&i32t);
    assert_eq!(r.dtype(), DType::I32, "u8 + i32");
    assert_eq!(
        r.to_vec::<i32>().unwrap(),
        [201, 3],
        "u8 + i32 must not wrap at 256"
    );
    let r = u.add(100);
    assert_eq!(r.dtype(), DType::U8, "u8 + 100 (weak int)");
    assert_eq!(r.to_vec::<u8>().unwrap(), [44, 101], "u8 arithmetic wraps");

    let d = Tensor::from_slice(&[1.0f64]);
    assert_eq!(f32t.add(&d).dtype(), DType::F64, "f32 + f64");
    assert_eq!(
        Tensor::from_slice(&[1i64])
            .add(&Tensor::from_slice(&[1i32]))
            .dtype(),
        DType::I64,
        "i64 + i32"
    );
    assert_eq!(i32t.maximum(0.5).dtype(), DType::F32, "maximum(i32, 0.5)");
    assert_eq!(i32t.lt(&f32t).dtype(), DType::Bool);
}

// ---------------------------------------------------------------------------------------------
// Operators.

#[test]
fn operators_on_owned_borrowed_and_scalar_left() {
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let b = Tensor::from_slice(&[4.0f32, 5.0, 6.0]);
    exact_f32("2.0 - &a", &(2.0 - &a), &[1.0, 0.0, -1.0]);
    exact_f32("&a * &b", &(&a * &b), &[4.0, 10.0, 18.0]);
    exact_f32("-a", &(-a.clone()), &[-1.0, -2.0, -3.0]);
    exact_f32("-&a", &(-&a), &[-1.0, -2.0, -3.0]);
    exact_f32("a + b", &(a.clone() + b.clone()), &[5.0, 7.0, 9.0]);
    exact_f32("a - &b", &(a.clone() - &b), &[-3.0, -3.0, -3.0]);
    exact_f32("&a / b", &(&a / b.clone()), &[0.25, 0.4, 0.5]);
    exact_f32("&a + 1.0", &(&a + 1.0f64), &[2.0, 3.0, 4.0]);
    exact_f32("a * 0.5", &(a.clone() * 0.5f64), &[0.5, 1.0, 1.5]);
    exact_f32("12.0 / &b", &(12.0f64 / &b), &[3.0, 2.4, 2.0]);
    exact_f32("1 + &a", &(1i64 + &a), &[2.0, 3.0, 4.0]);
    exact_f32("3.0 * a", &(3.0f64 * a.clone()), &[3.0, 6.0, 9.0]);
    exact_f32(
        "&a % &b",
        &(&(-&a) % &Tensor::from_slice(&[2.0f32; 3])),
        &[1.0, 0.0, 1.0],
    );

    let i = Tensor::from_slice(&[7i64, -7]);
    let r = 10i64 - &i;
    assert_eq!(r.dtype(), DType::I64);
    assert_eq!(r.to_vec::<i64>().unwrap(), [3, 17]);
    let r = 2i64 * i.clone();
    assert_eq!(r.to_vec::<i64>().unwrap(), [14, -14]);
    let r = &i / 2i64;
    assert_eq!(r.dtype(), DType::F32, "int / int is true division");
    exact_f32("&i / 2", &r, &[3.5, -3.5]);
    let r = 1i64 / &i;
    assert_eq!(r.dtype(), DType::F32, "int / int is true division");
    check_f32("1 / &i", &r, &[1.0 / 7.0, -1.0 / 7.0], F32_REL, 0.0);
    let r = &i % &Tensor::from_slice(&[2i64, 2]);
    assert_eq!(r.to_vec::<i64>().unwrap(), [1, 1]);
    let r = 2.5f64 - i.clone();
    assert_eq!(r.dtype(), DType::F32);
    exact_f32("2.5 - i64", &r, &[-4.5, 9.5]);
}
