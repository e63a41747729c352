//! Reductions of many elements to one value: the CPU backend splits the reduced loop across
//! threads in two levels (each thread folds its part into an unrounded partial: f64 for sums
//! and products, f32 for max/min; the partials are combined in order and rounded once; see
//! `lower::split_reduce` and `jit::CompiledKernel::run`). Compared with folds written out here:
//! max/min bit for bit (any NaN for NaN), sums and means within an ulp of the f64 fold (the
//! partials reassociate the f64 sum, which in practice rounds to the same f32).
//!
//! The sizes are past the split threshold (2^16 elements on two threads) and odd, so the parts
//! and the vector loops' tails are uneven.

mod common;

use common::close;
use metajit::{All, Tensor};

/// Deterministic values in [-2, 2), with NaN at `nan_at`.
fn values(n: usize, seed: u64, nan_at: Option<usize>) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if Some(i) == nan_at {
                f32::NAN
            } else {
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            }
        })
        .collect()
}

fn f64_sum(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum()
}

fn fold_max(x: &[f32], max: bool) -> f32 {
    let mut acc = if max {
        f32::NEG_INFINITY
    } else {
        f32::INFINITY
    };
    for &v in x {
        let keep = if max { acc > v } else { acc < v };
        if !(keep || acc.is_nan()) {
            acc = v;
        }
    }
    acc
}

/// Within one ulp of f32 (relative 2^-23) of `want`.
fn within_ulp(got: f32, want: f64) -> bool {
    close(got as f64, want, 1.2e-7, 0.0)
}

#[test]
fn sums_means_max_min_of_many_elements_match_the_folds() {
    for n in [65_537usize, 100_003, 1 << 20] {
        let x = values(n, n as u64, None);
        let t = Tensor::from_vec(x.clone(), [n]);
        let s = t.sum(0, false).item::<f32>().unwrap();
        assert!(within_ulp(s, f64_sum(&x)), "sum of {n}: {s}");
        let m = t.mean_all().item::<f32>().unwrap();
        let want = (f64_sum(&x) as f32 as f64) / n as f64;
        assert!(
            close(m as f64, want, 3e-7, 0.0),
            "mean of {n}: {m}, want {want}"
        );
        let mx = t.max(0, false).item::<f32>().unwrap();
        assert_eq!(mx.to_bits(), fold_max(&x, true).to_bits(), "max of {n}");
        let mn = t.min(0, false).item::<f32>().unwrap();
        assert_eq!(mn.to_bits(), fold_max(&x, false).to_bits(), "min of {n}");
        // Every axis of a 2-d tensor: the reduced loops are [rows, columns].
        let (r, c) = (n / 257, 257);
        let t2 = Tensor::from_vec(x[..r * c].to_vec(), [r, c]);
        let s2 = t2.sum(All, false).item::<f32>().unwrap();
        assert!(
            within_ulp(s2, f64_sum(&x[..r * c])),
            "sum of [{r}, {c}]: {s2}"
        );
        let m2 = t2.max(All, true);
        assert_eq!(m2.shape().dims(), &[1, 1]);
        let m2 = m2.to_vec::<f32>().unwrap()[0];
        assert_eq!(m2.to_bits(), fold_max(&x[..r * c], true).to_bits());
    }
}

#[test]
fn nan_in_any_part_propagates() {
    let n = 100_003;
    for at in [0, 17, n / 2, n - 1] {
        let x = values(n, 1, Some(at));
        let t = Tensor::from_vec(x, [n]);
        assert!(
            t.sum(0, false).item::<f32>().unwrap().is_nan(),
            "sum, NaN at {at}"
        );
        assert!(
            t.max(0, false).item::<f32>().unwrap().is_nan(),
            "max, NaN at {at}"
        );
        assert!(
            t.min(0, false).item::<f32>().unwrap().is_nan(),
            "min, NaN at {at}"
        );
    }
}

#[test]
fn split_sums_keep_f64_partials() {
    // 2^20 × 0.1f32: f32 partials would drift; f64 partials round to the exact answer.
    let n = 1 << 20;
    let t = Tensor::from_vec(vec![0.1f32; n], [n]);
    let want = (n as f64 * 0.1f32 as f64) as f32;
    assert_eq!(t.sum(0, false).item::<f32>().unwrap(), want);
    // Products near one: f64 partials, multiplied in order.
    let x: Vec<f32> = values(n, 7, None).iter().map(|v| 1.0 + v * 1e-4).collect();
    let want: f64 = x.iter().map(|&v| v as f64).product();
    let t = Tensor::from_vec(x, [n]);
    let got = t.prod(0, false).item::<f32>().unwrap();
    assert!(within_ulp(got, want), "prod: {got}, want {want}");
}
