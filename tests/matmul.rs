//! Matrix products of the Tensor API (`matmul`, `mm`, `bmm`, `linear`) against a naive
//! implementation of PyTorch's rules written out in this file.
//!
//! Property tests draw every kind of operand pair — vector·vector, vector·matrix,
//! matrix·vector, matrix·matrix, batched with broadcast batch axes, with transposed operands —
//! with extents 0–5 (so empty and unit axes), in f32 and f64, and compare values with a
//! triple loop in f64. Whatever backend runs the graph (the interpreter, or a GEMM call for a
//! recognised contraction), f32 results must be within a tolerance proportional to
//! `Σ_k |a·b|` of the exact value. Examples pin down integer products, dtype promotion, the
//! shapes of the vector cases, and every misuse message.

mod common;

use common::{broadcast_shape, catch_quietly};
use metajit::{DType, Tensor};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

// ---------------------------------------------------------------------------------------------
// The oracle.

/// Deterministic values in [-1, 1) (xorshift).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Multiples of 2^-10: exact in f32, and small products sum exactly.
            ((s >> 40) % 2048) as f64 / 1024.0 - 1.0
        })
        .collect()
}

/// The row-major offset in `dims` of the batch index `idx` (of the broadcast batch shape
/// `full`), where `dims` may have fewer axes or extents of 1.
fn batch_offset(idx: &[usize], full: &[usize], dims: &[usize]) -> usize {
    let off = full.len() - dims.len();
    dims.iter().enumerate().fold(0, |acc, (k, &d)| {
        acc * d + if d == 1 { 0 } else { idx[k + off] }
    })
}

/// `a @ b` by PyTorch's rules, computed in f64: the result's shape, its values, and for each
/// value `Σ_k |a·b|` (the scale of its rounding error).
fn naive_matmul(
    a: &[f64],
    sa: &[usize],
    b: &[f64],
    sb: &[usize],
) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let da: Vec<usize> = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.to_vec()
    };
    let db: Vec<usize> = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.to_vec()
    };
    let (ra, rb) = (da.len(), db.len());
    let (m, k, n) = (da[ra - 2], da[ra - 1], db[rb - 1]);
    assert_eq!(k, db[rb - 2]);
    let (ba, bb) = (&da[..ra - 2], &db[..rb - 2]);
    let batch = broadcast_shape(ba, bb).expect("batch shapes broadcast");
    let nb: usize = batch.iter().product();
    let mut out = Vec::with_capacity(nb * m * n);
    let mut scale = Vec::with_capacity(nb * m * n);
    let mut idx = vec![0; batch.len()];
    for lin in 0..nb {
        let mut rem = lin;
        for ax in (0..batch.len()).rev() {
            idx[ax] = rem % batch[ax];
            rem /= batch[ax];
        }
        let oa = batch_offset(&idx, &batch, ba) * m * k;
        let ob = batch_offset(&idx, &batch, bb) * k * n;
        for i in 0..m {
            for j in 0..n {
                let (mut acc, mut s) = (0.0, 0.0);
                for l in 0..k {
                    let p = a[oa + i * k + l] * b[ob + l * n + j];
                    acc += p;
                    s += p.abs();
                }
                out.push(acc);
                scale.push(s);
            }
        }
    }
    let mut shape = batch;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    (shape, out, scale)
}

/// The transpose of a row-major `[r, c]` matrix (as data).
fn transpose_data(x: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = x[i * c + j];
        }
    }
    out
}

fn tensor(data: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    match dtype {
        DType::F32 => Tensor::from_vec(data.iter().map(|&v| v as f32).collect(), shape),
        DType::F64 => Tensor::from_vec(data.to_vec(), shape),
        DType::I32 => Tensor::from_vec(data.iter().map(|&v| v as i32).collect(), shape),
        DType::I64 => Tensor::from_vec(data.iter().map(|&v| v as i64).collect(), shape),
        d => panic!("no test tensors of {d}"),
    }
}

fn read_f64(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
        DType::F64 => t.to_vec::<f64>().unwrap(),
        DType::I32 => t
            .to_vec::<i32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
        DType::I64 => t
            .to_vec::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as f64)
            .collect(),
        d => panic!("no reads of {d}"),
    }
}

/// Checks `got` against the oracle: within `rel · Σ|a·b|` (plus a hair) of the exact value.
fn assert_close(got: &Tensor, shape: &[usize], want: &[f64], scale: &[f64], dtype: DType) {
    assert_eq!(got.dims(), shape, "result shape");
    assert_eq!(got.dtype(), dtype, "result dtype");
    let rel = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
    let got = read_f64(got);
    assert_eq!(got.len(), want.len());
    for (e, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!(
            (g - w).abs() <= rel * s + 1e-30,
            "element {e}: got {g}, want {w} (scale {s}, shape {shape:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// A pair of operand shapes of every kind PyTorch's matmul takes.
fn operand_shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    let ext = || 0usize..=5;
    let batch = || prop::collection::vec(prop_oneof![Just(1usize), 0usize..=3], 0..=2);
    (0usize..6, ext(), ext(), ext(), batch(), batch()).prop_map(|(kind, m, k, n, ba, bb)| {
        // Make the batch shapes broadcastable: where both have an axis, keep one or use 1.
        let mut bb = bb;
        let r = ba.len().min(bb.len());
        for j in 0..r {
            let (ia, ib) = (ba.len() - 1 - j, bb.len() - 1 - j);
            if ba[ia] != bb[ib] && ba[ia] != 1 {
                bb[ib] = if (ia + ib) % 2 == 0 { 1 } else { ba[ia] };
            }
        }
        let with = |b: &[usize], tail: &[usize]| [b, tail].concat();
        match kind {
            0 => (vec![k], vec![k]),
            1 => (vec![k], with(&bb, &[k, n])),
            2 => (with(&ba, &[m, k]), vec![k]),
            3 => (vec![m, k], vec![k, n]),
            _ => (with(&ba, &[m, k]), with(&bb, &[k, n])),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn matmul_matches_the_naive_product(
        (sa, sb) in operand_shapes(),
        f64_dtype in any::<bool>(),
        transpose_a in any::<bool>(),
        transpose_b in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dtype = if f64_dtype { DType::F64 } else { DType::F32 };
        let a = values(sa.iter().product(), seed);
        let b = values(sb.iter().product(), seed ^ 0x5555);
        // Optionally build a 2-D operand as the transpose of a stored matrix, so the product
        // reads it through a permutation.
        let ta = if transpose_a && sa.len() == 2 {
            tensor(&transpose_data(&a, sa[0], sa[1]), &[sa[1], sa[0]], dtype).t()
        } else {
            tensor(&a, &sa, dtype)
        };
        let tb = if transpose_b && sb.len() == 2 {
            tensor(&transpose_data(&b, sb[0], sb[1]), &[sb[1], sb[0]], dtype).t()
        } else {
            tensor(&b, &sb, dtype)
        };
        let (shape, want, scale) = naive_matmul(&a, &sa, &b, &sb);
        assert_close(&ta.matmul(&tb), &shape, &want, &scale, dtype);
    }

    #[test]
    fn linear_matches_matmul_plus_bias(
        batch in prop::collection::vec(0usize..=3, 0..=2),
        fin in 0usize..=5,
        fout in 0usize..=5,
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let sx = [batch.as_slice(), &[fin]].concat();
        let x = values(sx.iter().product(), seed);
        let w = values(fout * fin, seed ^ 1);
        let bias = values(fout, seed ^ 2);
        let (shape, mut want, scale) =
            naive_matmul(&x, &sx, &transpose_data(&w, fout, fin), &[fin, fout]);
        if with_bias {
            for (e, v) in want.iter_mut().enumerate() {
                *v += bias[e % fout];
            }
        }
        let bt = tensor(&bias, &[fout], DType::F64);
        let y = tensor(&x, &sx, DType::F64)
            .linear(&tensor(&w, &[fout, fin], DType::F64), with_bias.then_some(&bt));
        assert_close(&y, &shape, &want, &scale, DType::F64);
    }
}

// ---------------------------------------------------------------------------------------------
// Examples.

#[test]
fn vector_cases_have_pytorch_shapes() {
    let v = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]);
    let dot = v.matmul(&v);
    assert_eq!(dot.dims(), &[] as &[usize]);
    assert_eq!(dot.item::<f32>().unwrap(), 14.0);
    let m = Tensor::from_vec((0..6).map(|x| x as f32).collect(), [3, 2]);
    assert_eq!(v.matmul(&m).dims(), &[2]);
    assert_eq!(v.matmul(&m).to_vec::<f32>().unwrap(), vec![16.0, 22.0]);
    assert_eq!(m.t().matmul(&v).to_vec::<f32>().unwrap(), vec![16.0, 22.0]);
    let batched = Tensor::zeros([4, 3, 5]);
    assert_eq!(v.matmul(&batched).dims(), &[4, 5]);
    assert_eq!(Tensor::zeros([4, 5, 3]).matmul(&v).dims(), &[4, 5]);
    assert_eq!(
        Tensor::zeros([2, 1, 4, 3])
            .matmul(&Tensor::zeros([5, 3, 6]))
            .dims(),
        &[2, 5, 4, 6]
    );
}

#[test]
fn empty_contraction_gives_zeros() {
    let a = Tensor::zeros([2, 0]);
    let b = Tensor::zeros([0, 3]);
    let c = a.matmul(&b);
    assert_eq!(c.dims(), &[2, 3]);
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![0.0; 6]);
    let e = Tensor::zeros([0, 4]).matmul(&Tensor::zeros([4, 3]));
    assert_eq!(e.dims(), &[0, 3]);
    assert!(e.to_vec::<f32>().unwrap().is_empty());
    let d = Tensor::zeros([0]).matmul(&Tensor::zeros([0]));
    assert_eq!(d.item::<f32>().unwrap(), 0.0);
}

#[test]
fn integer_products_stay_integers() {
    let a = Tensor::from_vec(vec![1i32, 2, 3, 4, 5, 6], [2, 3]);
    let b = Tensor::from_vec(vec![7i32, 8, 9, 10, 11, 12], [3, 2]);
    let c = a.matmul(&b);
    assert_eq!(c.dtype(), DType::I32);
    assert_eq!(c.to_vec::<i32>().unwrap(), vec![58, 64, 139, 154]);
    let c64 = a.cast(DType::I64).matmul(&b);
    assert_eq!(c64.dtype(), DType::I64);
    assert_eq!(c64.to_vec::<i64>().unwrap(), vec![58, 64, 139, 154]);
}

#[test]
fn dtypes_promote() {
    let a = Tensor::from_vec(vec![1i32, 2], [1, 2]);
    let b = Tensor::from_vec(vec![0.5f32, 0.25], [2, 1]);
    let c = a.matmul(&b);
    assert_eq!(c.dtype(), DType::F32);
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![1.0]);
    let d = b.matmul(&Tensor::from_vec(vec![2.0f64, 4.0], [1, 2]));
    assert_eq!(d.dtype(), DType::F64);
    assert_eq!(d.to_vec::<f64>().unwrap(), vec![1.0, 2.0, 0.5, 1.0]);
}

#[test]
fn mm_and_bmm() {
    let a = values(2 * 3 * 4, 7);
    let b = values(2 * 4 * 5, 8);
    let (shape, want, scale) = naive_matmul(&a, &[2, 3, 4], &b, &[2, 4, 5]);
    let ta = tensor(&a, &[2, 3, 4], DType::F64);
    let tb = tensor(&b, &[2, 4, 5], DType::F64);
    assert_close(&ta.bmm(&tb), &shape, &want, &scale, DType::F64);
    let (shape, want, scale) = naive_matmul(&a[..12], &[3, 4], &b[..20], &[4, 5]);
    let c = tensor(&a[..12], &[3, 4], DType::F64).mm(&tensor(&b[..20], &[4, 5], DType::F64));
    assert_close(&c, &shape, &want, &scale, DType::F64);
}

#[test]
fn larger_products_within_f32_tolerance() {
    // Large enough that a GEMM backend takes its blocked (and threaded) path.
    for (m, k, n) in [(67, 129, 61), (128, 256, 96), (1, 300, 70), (70, 300, 1)] {
        let a = values(m * k, (m * k) as u64);
        let b = values(k * n, (k * n + 1) as u64);
        let (shape, want, scale) = naive_matmul(&a, &[m, k], &b, &[k, n]);
        let c = tensor(&a, &[m, k], DType::F32).matmul(&tensor(&b, &[k, n], DType::F32));
        assert_close(&c, &shape, &want, &scale, DType::F32);
        // The same with a transposed weight, as `linear` reads it.
        let c = tensor(&a, &[m, k], DType::F32).linear(
            &tensor(&transpose_data(&b, k, n), &[n, k], DType::F32),
            None,
        );
        assert_close(&c, &shape, &want, &scale, DType::F32);
    }
}

#[test]
fn matmul_result_feeds_further_ops() {
    // A bias + relu epilogue, and a product of products.
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0, -4.0], [2, 2]);
    let w = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]);
    let y = (x.matmul(&w) + 1.0).relu();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.0, 0.0, 4.0, 0.0]);
    let z = x.matmul(&x).matmul(&x);
    assert_eq!(z.to_vec::<f32>().unwrap(), vec![13.0, -14.0, 21.0, -22.0]);
}

// ---------------------------------------------------------------------------------------------
// Misuse.

#[test]
#[should_panic(
    expected = "shape mismatch in matmul: lhs [2, 3], rhs [4, 5] (inner extents 3 and 4 differ)"
)]
fn matmul_with_mismatched_inner_extents() {
    Tensor::zeros([2, 3]).matmul(&Tensor::zeros([4, 5]));
}

#[test]
#[should_panic(
    expected = "shape mismatch in matmul: lhs [3], rhs [4] (inner extents 3 and 4 differ)"
)]
fn dot_with_mismatched_lengths() {
    Tensor::zeros([3]).matmul(&Tensor::zeros([4]));
}

#[test]
#[should_panic(
    expected = "shape mismatch in matmul: lhs [2, 2, 3], rhs [3, 3, 4] (batch shapes [2] and [3] do not broadcast"
)]
fn matmul_with_incompatible_batches() {
    Tensor::zeros([2, 2, 3]).matmul(&Tensor::zeros([3, 3, 4]));
}

#[test]
#[should_panic(
    expected = "shape mismatch in matmul: lhs [], rhs [3] (both operands need at least one axis"
)]
fn matmul_of_a_scalar() {
    Tensor::scalar(2.0f32).matmul(&Tensor::zeros([3]));
}

#[test]
#[should_panic(expected = "dtype mismatch in matmul: bool operands are not supported")]
fn matmul_of_bools() {
    let t = Tensor::from_vec(vec![true, false], [1, 2]);
    t.matmul(&t.t());
}

#[test]
#[should_panic(expected = "shape mismatch in mm: lhs [2, 3], rhs [3] (mm needs two 2-D tensors")]
fn mm_of_a_vector() {
    Tensor::zeros([2, 3]).mm(&Tensor::zeros([3]));
}

#[test]
#[should_panic(
    expected = "shape mismatch in mm: lhs [2, 3], rhs [2, 3] (inner extents 3 and 2 differ)"
)]
fn mm_with_mismatched_inner_extents() {
    Tensor::zeros([2, 3]).mm(&Tensor::zeros([2, 3]));
}

#[test]
#[should_panic(
    expected = "shape mismatch in bmm: lhs [2, 3], rhs [2, 3, 4] (bmm needs two 3-D tensors"
)]
fn bmm_of_a_matrix() {
    Tensor::zeros([2, 3]).bmm(&Tensor::zeros([2, 3, 4]));
}

#[test]
#[should_panic(
    expected = "shape mismatch in bmm: lhs [2, 2, 3], rhs [1, 3, 4] (batch extents 2 and 1 differ; bmm does not broadcast"
)]
fn bmm_does_not_broadcast() {
    Tensor::zeros([2, 2, 3]).bmm(&Tensor::zeros([1, 3, 4]));
}

#[test]
#[should_panic(
    expected = "shape mismatch in linear: input [4, 3], weight [5, 2] (input features 3 and weight in-features 2 differ)"
)]
fn linear_with_mismatched_features() {
    Tensor::zeros([4, 3]).linear(&Tensor::zeros([5, 2]), None);
}

#[test]
#[should_panic(
    expected = "shape mismatch in linear: input [4, 3], weight [5, 3], bias [4] (the bias must broadcast to the output [4, 5])"
)]
fn linear_with_a_bad_bias() {
    Tensor::zeros([4, 3]).linear(&Tensor::zeros([5, 3]), Some(&Tensor::zeros([4])));
}

#[test]
#[should_panic(
    expected = "shape mismatch in linear: input [3], weight [2, 2, 3] (the weight must be [out_features, in_features] or [in_features])"
)]
fn linear_with_a_3d_weight() {
    Tensor::zeros([3]).linear(&Tensor::zeros([2, 2, 3]), None);
}

/// The file and line where `f` (which must panic) panics. Other threads' panics go to the hook
/// installed before.
fn panic_location(f: impl FnOnce()) -> Option<(String, u32)> {
    let caught = catch_quietly(f);
    assert!(caught.is_some(), "the call was expected to panic");
    caught.and_then(|c| c.location)
}

/// Misuse panics at the caller's line (`#[track_caller]` through the lowering).
#[test]
fn panics_point_at_the_callers_line() {
    let (a, b) = (Tensor::zeros([2, 3]), Tensor::zeros([2, 3]));
    type Case<'a> = (u32, Box<dyn FnOnce() + 'a>);
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        (line!(), Box::new(|| drop(a.matmul(&b)))),
        (line!(), Box::new(|| drop(a.mm(&b)))),
        (line!(), Box::new(|| drop(a.bmm(&b)))),
        (line!(), Box::new(|| drop(a.linear(&b.t(), None)))),
        (line!(), Box::new(|| drop(metajit::ops::linalg::linear(&a, &b.t(), None)))),
    ];
    for (line, f) in cases {
        let (file, got) = panic_location(f).expect("a location");
        assert!(file.ends_with("matmul.rs"), "{file}");
        assert_eq!(got, line);
    }
}

/// A product summed over K and a batch axis at once (`Σ_b Σ_k A[b,m,k]·B[b,k,n]`, the shape of
/// every weight gradient summed over a batch) runs as accumulating GEMMs: against the naive
/// sum, over f32 and f64, with the summed axis before or after the free ones, and empty.
#[test]
fn products_summed_over_a_batch_axis_too() {
    for dtype in [DType::F32, DType::F64] {
        // The last case is big enough to be split across threads (per-thread partial sums).
        for (b, m, k, n) in [
            (3usize, 4usize, 5usize, 2usize),
            (7, 1, 3, 6),
            (0, 2, 3, 4),
            (2, 3, 0, 2),
            (64, 6, 100, 30),
        ] {
            let a = values(b * m * k, 1);
            let c = values(b * k * n, 2);
            let (ta, tc) = (tensor(&a, &[b, m, k], dtype), tensor(&c, &[b, k, n], dtype));
            // [B, M, K, 1] * [B, 1, K, N] summed over B and K.
            let got = ta.unsqueeze(3).mul(&tc.unsqueeze(1)).sum([0, 2], false);
            let mut want = vec![0.0; m * n];
            let mut scale = vec![0.0; m * n];
            for bi in 0..b {
                for i in 0..m {
                    for j in 0..n {
                        for l in 0..k {
                            let p = a[(bi * m + i) * k + l] * c[(bi * k + l) * n + j];
                            want[i * n + j] += p;
                            scale[i * n + j] += p.abs();
                        }
                    }
                }
            }
            assert_close(&got, &[m, n], &want, &scale, dtype);
            // The batch axis last: [M, K, B] and [K, N, B] summed over K and B.
            let la = ta.permute(&[1, 2, 0]).contiguous();
            let lc = tc.permute(&[1, 2, 0]).contiguous();
            let got = la.unsqueeze(2).mul(&lc.unsqueeze(0)).sum([1, 3], false);
            assert_close(&got, &[m, n], &want, &scale, dtype);
        }
    }
}
