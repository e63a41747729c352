//! Reductions over a non-contiguous axis whose trailing kept axis is contiguous (column sums,
//! bias gradients): the CPU backend reduces them in column blocks (the reduced axis outside,
//! the columns inside, see `codegen/src/cpu/lower.rs`). Each case is compared with a fold
//! written out here in the interpreter's contract: per output, the inputs in row-major order,
//! float sums and products in f64 rounded once, max/min keeping NaN. Column blocks keep that
//! order per output, so sums, max and min must match bit for bit (NaN: any NaN).
//!
//! The shapes straddle the block's group of 8 columns and its 512-column block (1, 7, 8, 9,
//! 17, 520, 1030 columns), have 0, 1, fewer and more than the 8 rows folded per visit of the
//! accumulators, reduce one or two leading axes, and are large enough in places to be split
//! across threads.

mod common;

use common::config;
use metajit::Tensor;
use proptest::prelude::*;

/// Deterministic values in [-2, 2) with a few NaN when `nan` (every 37th element).
fn values(n: usize, seed: u64, nan: bool) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if nan && i % 37 == 11 {
                f32::NAN
            } else {
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Sum,
    Max,
    Min,
    Prod,
}

/// The fold over axis 1 of `x` viewed as `[a, r, c]` (row-major), giving `[a, c]`.
fn fold(x: &[f32], a: usize, r: usize, c: usize, op: Op) -> Vec<f32> {
    let mut out = Vec::with_capacity(a * c);
    for i in 0..a {
        for k in 0..c {
            let mut acc: f64 = match op {
                Op::Sum => 0.0,
                Op::Prod => 1.0,
                Op::Max => f64::NEG_INFINITY,
                Op::Min => f64::INFINITY,
            };
            for j in 0..r {
                let v = x[(i * r + j) * c + k] as f64;
                acc = match op {
                    Op::Sum => acc + v,
                    Op::Prod => acc * v,
                    Op::Max if acc > v || acc.is_nan() => acc,
                    Op::Min if acc < v || acc.is_nan() => acc,
                    Op::Max | Op::Min => v,
                };
            }
            out.push(acc as f32);
        }
    }
    out
}

fn apply(t: &Tensor, axis: isize, op: Op, keepdim: bool) -> Tensor {
    match op {
        Op::Sum => t.sum(axis, keepdim),
        Op::Max => t.max(axis, keepdim),
        Op::Min => t.min(axis, keepdim),
        Op::Prod => t.prod(axis, keepdim),
    }
}

fn same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: element {i} is {g}, want {w}"
        );
    }
}

/// Reduces axis 0 of `[r, c]` and axis 1 of `[a, r, c]` and checks against [`fold`].
fn check(a: usize, r: usize, c: usize, op: Op, keepdim: bool, nan: bool, seed: u64) {
    if r == 0 && matches!(op, Op::Max | Op::Min) {
        return; // max/min over an empty axis is rejected
    }
    let x = values(a * r * c, seed, nan);
    let want = fold(&x, a, r, c, op);
    let what = format!("{op:?} over rows of [{a}, {r}, {c}] keepdim={keepdim} nan={nan}");
    let t = Tensor::from_vec(x.clone(), [a, r, c]);
    let got = apply(&t, 1, op, keepdim);
    let shape: Vec<usize> = if keepdim { vec![a, 1, c] } else { vec![a, c] };
    assert_eq!(got.shape().dims(), shape.as_slice(), "{what}: shape");
    same(&got.to_vec::<f32>().unwrap(), &want, &what);
    if a > 1 && !(r == 0 && matches!(op, Op::Max | Op::Min)) {
        // Both leading axes at once: two reduced loops, the rows of the fold.
        let want = fold(&x, 1, a * r, c, op);
        let got = match op {
            Op::Sum => t.sum([0isize, 1], keepdim),
            Op::Max => t.max([0isize, 1], keepdim),
            Op::Min => t.min([0isize, 1], keepdim),
            Op::Prod => t.prod([0isize, 1], keepdim),
        };
        same(
            &got.to_vec::<f32>().unwrap(),
            &want,
            &format!("{what} over axes 0, 1"),
        );
    }
    if a == 1 {
        let t = Tensor::from_vec(x, [r, c]);
        let got = apply(&t, 0, op, keepdim);
        same(
            &got.to_vec::<f32>().unwrap(),
            &want,
            &format!("{what} (2-d)"),
        );
    }
}

#[test]
fn column_sums_max_min_match_the_fold_bit_for_bit() {
    for &c in &[1, 7, 8, 9, 17, 520, 1030] {
        for &r in &[0, 1, 3, 50] {
            for op in [Op::Sum, Op::Max, Op::Min, Op::Prod] {
                for keepdim in [false, true] {
                    check(1, r, c, op, keepdim, false, (r * 131 + c) as u64);
                }
                check(1, r, c, op, false, true, (r * 7 + c) as u64);
            }
        }
    }
}

#[test]
fn column_sums_of_three_axes_and_split_across_threads() {
    // [a, r, c] over r (outer loops a and c); then sizes that split across threads.
    for (a, r, c) in [(3, 5, 33), (2, 70, 17), (4, 1, 9)] {
        for op in [Op::Sum, Op::Max, Op::Min] {
            check(a, r, c, op, false, false, 3);
            check(a, r, c, op, true, true, 4);
        }
    }
    for (r, c) in [(300, 1030), (129, 4100), (2000, 40)] {
        for op in [Op::Sum, Op::Max, Op::Min] {
            check(1, r, c, op, false, false, 5);
            check(1, r, c, op, false, true, 6);
        }
    }
}

#[test]
fn column_sums_of_non_contiguous_and_fused_inputs() {
    let (r, c) = (23usize, 40usize);
    let x = values(r * c, 9, false);
    let t = Tensor::from_vec(x.clone(), [r, c]);
    // A column slice (offset loads), a row slice with a step, an element-wise producer.
    let narrow: Vec<f32> = (0..r)
        .flat_map(|i| x[i * c + 3..i * c + 3 + 29].to_vec())
        .collect();
    same(
        &t.narrow(1, 3, 29).sum(0, false).to_vec::<f32>().unwrap(),
        &fold(&narrow, 1, r, 29, Op::Sum),
        "sum of a column slice",
    );
    let stepped: Vec<f32> = (0..r)
        .step_by(2)
        .flat_map(|i| x[i * c..(i + 1) * c].to_vec())
        .collect();
    let rows = r.div_ceil(2);
    same(
        &t.slice(0, 0, r as isize, 2)
            .max(0, true)
            .to_vec::<f32>()
            .unwrap(),
        &fold(&stepped, 1, rows, c, Op::Max),
        "max of every other row",
    );
    let fused: Vec<f32> = x.iter().map(|v| v * 2.0 + 1.0).collect();
    same(
        &((&t * 2.0) + 1.0).sum(0, false).to_vec::<f32>().unwrap(),
        &fold(&fused, 1, r, c, Op::Sum),
        "sum of an element-wise expression",
    );
    // A transposed input reduces along rows of memory: the ordinary path, same answer.
    let tt = Tensor::from_vec(x.clone(), [c, r]).transpose(0, 1);
    let tr: Vec<f32> = (0..r)
        .flat_map(|i| (0..c).map(move |k| (i, k)))
        .map(|(i, k)| x[k * r + i])
        .collect();
    same(
        &tt.sum(0, false).to_vec::<f32>().unwrap(),
        &fold(&tr, 1, r, c, Op::Sum),
        "sum of a transpose",
    );
}

#[test]
fn column_sums_keep_f64_accuracy() {
    // 10_000 rows of 0.1f32: an f32 running sum per column drifts to ~999.9.
    let t = Tensor::from_vec(vec![0.1f32; 10_000 * 24], [10_000, 24]);
    let want = (10_000.0 * 0.1f32 as f64) as f32;
    for v in t.sum(0, false).to_vec::<f32>().unwrap() {
        assert_eq!(v, want);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_column_reductions_match_the_fold(
        a in 1usize..3, r in 0usize..12, c in 1usize..40, op in 0usize..3,
        keepdim in any::<bool>(), nan in any::<bool>(), seed in any::<u64>(),
    ) {
        let op = [Op::Sum, Op::Max, Op::Min][op];
        check(a, r, c, op, keepdim, nan, seed);
    }
}
