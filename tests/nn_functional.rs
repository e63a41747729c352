//! `nn::functional` forward values against independent plain-Rust implementations (f64 loops
//! written here, not metajit ops), and the checked errors for bad labels and indices.
//! Gradients are checked by central differences in tests/gradcheck.rs.

mod common;

use common::panic_message;
use metajit::Tensor;
use metajit::nn::functional::{self as F, ClassLossOptions, Reduction};

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

#[track_caller]
fn close_all(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            common::close(*g, *w, tol, tol),
            "got {got:?}\nwant {want:?}"
        );
    }
}

/// log-softmax of each row of a row-major [rows, n] matrix, in f64.
fn naive_log_softmax(x: &[f64], n: usize) -> Vec<f64> {
    x.chunks(n)
        .flat_map(|row| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            row.iter().map(move |v| v - m - s.ln()).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn softmax_and_log_softmax_are_stable() {
    let x = vec![80.0, -80.0, 0.0, f64::NEG_INFINITY, 1.0, 2.0];
    let t = Tensor::from_vec(x.clone(), [2, 3]);
    let want = naive_log_softmax(&x, 3);
    close_all(&vals(&F::log_softmax(&t, 1)), &want, 1e-12);
    let sm: Vec<f64> = want.iter().map(|v| v.exp()).collect();
    close_all(&vals(&F::softmax(&t, -1)), &sm, 1e-12);
    // Along axis 0 of the transpose: the same numbers.
    close_all(
        &vals(&F::log_softmax(&t.t(), 0).t().contiguous()),
        &want,
        1e-12,
    );
    // A row of only -inf is NaN, as PyTorch.
    let r = vals(&F::softmax(&Tensor::full([1, 2], f64::NEG_INFINITY), 1));
    assert!(r.iter().all(|v| v.is_nan()), "{r:?}");
}

/// softmax and log-softmax along axis `dim` of a row-major array of shape `dims`, in f64 with
/// PyTorch's steps (`x - max`, `exp`, sum, divide / subtract the log): NaN where the maximum is
/// NaN or infinite (a row of only -inf, or one holding +inf), as PyTorch.
fn naive_softmax_along(x: &[f64], dims: &[usize], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = dims[dim];
    let inner: usize = dims[dim + 1..].iter().product();
    let outer: usize = dims[..dim].iter().product();
    let (mut p, mut lp) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| o * n * inner + k * inner + i;
            let m = (0..n).map(|k| x[at(k)]).fold(f64::NEG_INFINITY, |a, v| {
                if a.is_nan() || v.is_nan() {
                    f64::NAN
                } else {
                    a.max(v)
                }
            });
            let s: f64 = (0..n).map(|k| (x[at(k)] - m).exp()).sum();
            for k in 0..n {
                let d = x[at(k)] - m;
                p[at(k)] = d.exp() / s;
                lp[at(k)] = d - s.ln();
            }
        }
    }
    (p, lp)
}

/// Softmax and log-softmax on random shapes (rank 1 to 4, any axis, negative ones too) in f32
/// and f64, with rows of only -inf, single -inf, +inf and NaN elements, ±80 and 1000, against
/// the f64 loops above. Tolerance: f64 within 1e-12; f32 within 2e-6 absolute + 1e-5 relative
/// for softmax (the inline exp is within a few ulp, the row sum is exact in f64, the division
/// rounds once) and 1e-5 relative + 1e-5 absolute for log-softmax; NaN exactly where the f64
/// loops give NaN, infinities exactly.
#[test]
fn softmax_on_random_shapes_matches_f64_loops() {
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    for case in 0..40 {
        let rank = 1 + (next() % 4) as usize;
        let dims: Vec<usize> = (0..rank).map(|_| 1 + (next() % 7) as usize).collect();
        let dim = (next() % rank as u64) as usize;
        let numel: usize = dims.iter().product();
        let x: Vec<f64> = (0..numel)
            .map(|_| match next() % 40 {
                0 => f64::NEG_INFINITY,
                1 => f64::INFINITY,
                2 => f64::NAN,
                3 => 80.0,
                4 => -80.0,
                5 => 1000.0,
                _ => (next() % 2000) as f64 / 100.0 - 10.0,
            })
            .collect();
        // Some cases get whole rows of -inf (every element along `dim` at outer index 0).
        let mut x = x;
        if case % 4 == 0 {
            let inner: usize = dims[dim + 1..].iter().product();
            for k in 0..dims[dim] {
                x[k * inner] = f64::NEG_INFINITY;
            }
        }
        let (want_p, want_lp) = naive_softmax_along(&x, &dims, dim);
        let axis = if case % 2 == 0 {
            dim as isize
        } else {
            dim as isize - rank as isize
        };
        let what = format!("case {case}: shape {dims:?} dim {axis}");
        // f64.
        let t = Tensor::from_vec(x.clone(), dims.clone());
        for (got, want) in [
            (vals(&F::softmax(&t, axis)), &want_p),
            (vals(&F::log_softmax(&t, axis)), &want_lp),
        ] {
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(
                    common::close(*g, *w, 1e-12, 1e-12),
                    "{what} f64: {got:?}\nwant {want:?}"
                );
            }
        }
        // f32: the f64 loops on the f32-rounded inputs.
        let x32: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let xr: Vec<f64> = x32.iter().map(|v| *v as f64).collect();
        let (want_p, want_lp) = naive_softmax_along(&xr, &dims, dim);
        let t = Tensor::from_vec(x32, dims.clone());
        let got = vals(&F::softmax(&t, axis));
        for (g, w) in got.iter().zip(&want_p) {
            assert!(
                common::close(*g, *w, 1e-5, 2e-6),
                "{what} f32 softmax: {got:?}\nwant {want_p:?}"
            );
        }
        let got = vals(&F::log_softmax(&t, axis));
        for (g, w) in got.iter().zip(&want_lp) {
            assert!(
                common::close(*g, *w, 1e-5, 1e-5),
                "{what} f32 log_softmax: {got:?}\nwant {want_lp:?}"
            );
        }
    }
}

/// PyTorch's results for rows holding +inf, NaN, or only -inf: NaN everywhere in the row.
#[test]
fn softmax_of_infinite_and_nan_rows_is_nan_as_pytorch() {
    let inf = f32::INFINITY;
    let rows = [
        vec![inf, 1.0],
        vec![inf, inf],
        vec![f32::NEG_INFINITY, f32::NEG_INFINITY],
        vec![f32::NAN, 1.0],
    ];
    for r in rows {
        let t = Tensor::from_vec(r.clone(), [1, 2]);
        for y in [F::softmax(&t, 1), F::log_softmax(&t, 1)] {
            let v = vals(&y);
            assert!(v.iter().all(|x| x.is_nan()), "{r:?} -> {v:?}");
        }
    }
    // -inf beside a finite value: probability 0, log-probability -inf.
    let t = Tensor::from_vec(vec![f32::NEG_INFINITY, 1.0], [1, 2]);
    assert_eq!(vals(&F::softmax(&t, 1)), vec![0.0, 1.0]);
    assert_eq!(vals(&F::log_softmax(&t, 1)), vec![f64::NEG_INFINITY, 0.0]);
}

/// PyTorch's nll over [N, C, S] (S = product of the extra axes) in f64.
fn naive_nll(
    logp: &[f64],
    (n, c, s): (usize, usize, usize),
    target: &[i64],
    weight: Option<&[f64]>,
    ignore: i64,
) -> (Vec<f64>, f64, f64) {
    let mut per = Vec::new();
    let (mut sum, mut wsum) = (0.0, 0.0);
    for b in 0..n {
        for k in 0..s {
            let t = target[b * s + k];
            if t == ignore {
                per.push(0.0);
                continue;
            }
            let w = weight.map_or(1.0, |w| w[t as usize]);
            let v = -w * logp[(b * c + t as usize) * s + k];
            per.push(v);
            sum += v;
            wsum += w;
        }
    }
    (per, sum, sum / wsum)
}

#[test]
fn cross_entropy_matches_a_naive_implementation() {
    // [N, C] with class weights and an ignored target.
    let x: Vec<f64> = (0..12).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.7).collect();
    let logits = Tensor::from_vec(x.clone(), [4, 3]);
    let target = Tensor::from_slice(&[2i64, -100, 0, 1]);
    let weight = Tensor::from_vec(vec![0.5f64, 2.0, 1.5], [3]);
    let logp = naive_log_softmax(&x, 3);
    let tv = [2i64, -100, 0, 1];
    let (per, sum, mean) = naive_nll(&logp, (4, 3, 1), &tv, Some(&[0.5, 2.0, 1.5]), -100);
    let opts = |reduction| ClassLossOptions {
        weight: Some(&weight),
        reduction,
        ..Default::default()
    };
    close_all(
        &vals(&F::cross_entropy(&logits, &target, &opts(Reduction::None))),
        &per,
        1e-12,
    );
    close_all(
        &vals(&F::cross_entropy(&logits, &target, &opts(Reduction::Sum))),
        &[sum],
        1e-12,
    );
    close_all(
        &vals(&F::cross_entropy(&logits, &target, &opts(Reduction::Mean))),
        &[mean],
        1e-12,
    );
    // nll_loss on log-probabilities is the same thing.
    let lp = Tensor::from_vec(logp.clone(), [4, 3]);
    close_all(
        &vals(&F::nll_loss(&lp, &target, &opts(Reduction::Mean))),
        &[mean],
        1e-12,
    );

    // [N, C, H, W] without weights, a custom ignore_index.
    let (n, c, h, w) = (2, 3, 2, 2);
    let x: Vec<f64> = (0..n * c * h * w)
        .map(|i| ((i * 5 % 11) as f64) * 0.3 - 1.2)
        .collect();
    let logits = Tensor::from_vec(x.clone(), [n, c, h, w]);
    let tv: Vec<i64> = vec![0, 1, 2, 7, 2, 2, 0, 1];
    let target = Tensor::from_vec(tv.clone(), [n, h, w]);
    // log-softmax over C of [N, C, S]: transpose to rows of C.
    let s = h * w;
    let mut rows = vec![0.0; n * c * s];
    for b in 0..n {
        for k in 0..s {
            for j in 0..c {
                rows[(b * s + k) * c + j] = x[(b * c + j) * s + k];
            }
        }
    }
    let lrows = naive_log_softmax(&rows, c);
    let mut logp = vec![0.0; n * c * s];
    for b in 0..n {
        for k in 0..s {
            for j in 0..c {
                logp[(b * c + j) * s + k] = lrows[(b * s + k) * c + j];
            }
        }
    }
    let (_, _, mean) = naive_nll(&logp, (n, c, s), &tv, None, 7);
    let opts = ClassLossOptions {
        ignore_index: 7,
        ..Default::default()
    };
    close_all(
        &vals(&F::cross_entropy(&logits, &target, &opts)),
        &[mean],
        1e-12,
    );
}

#[test]
fn out_of_range_labels_and_indices_are_errors() {
    let logits = Tensor::zeros([2, 3]);
    let m = panic_message(|| {
        F::cross_entropy(
            &logits,
            &Tensor::from_slice(&[1i64, 3]),
            &Default::default(),
        );
    })
    .unwrap();
    assert!(
        m.contains("nll_loss") && m.contains("value 3") && m.contains("0..3"),
        "{m}"
    );
    let m = panic_message(|| {
        F::nll_loss(
            &logits,
            &Tensor::from_slice(&[-1i64, 0]),
            &Default::default(),
        );
    })
    .unwrap();
    assert!(m.contains("value -1"), "{m}");
    let w = Tensor::zeros([4, 2]);
    let m = panic_message(|| {
        F::embedding(&Tensor::from_slice(&[0i64, 4]), &w, None);
    })
    .unwrap();
    assert!(
        m.contains("embedding") && m.contains("value 4") && m.contains("0..4"),
        "{m}"
    );
}

#[test]
fn mse_and_bce_with_logits() {
    let a = vec![0.5, -1.0, 2.0, 3.0];
    let b = vec![1.0, 1.0, -2.0, 3.0];
    let (ta, tb) = (
        Tensor::from_vec(a.clone(), [4]),
        Tensor::from_vec(b.clone(), [4]),
    );
    let sq: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).collect();
    close_all(&vals(&F::mse_loss(&ta, &tb, Reduction::None)), &sq, 1e-12);
    close_all(
        &vals(&F::mse_loss(&ta, &tb, Reduction::Mean)),
        &[sq.iter().sum::<f64>() / 4.0],
        1e-12,
    );
    // BCE with logits, stable at ±100, with pos_weight along the last axis.
    let x = vec![-100.0, 100.0, 0.3, -2.0];
    let t = vec![1.0, 0.0, 0.25, 1.0];
    let pw = [2.0, 0.5, 1.0, 3.0];
    let naive = |x: f64, t: f64, p: f64| {
        // -(p·t·log σ(x) + (1 - t)·log(1 - σ(x))), with log σ(x) = -softplus(-x).
        let sp = |z: f64| z.max(0.0) + (-z.abs()).exp().ln_1p();
        p * t * sp(-x) + (1.0 - t) * sp(x)
    };
    let want: Vec<f64> = (0..4).map(|i| naive(x[i], t[i], pw[i])).collect();
    let got = F::binary_cross_entropy_with_logits(
        &Tensor::from_vec(x.clone(), [1, 4]),
        &Tensor::from_vec(t.clone(), [1, 4]),
        Some(&Tensor::from_vec(pw.to_vec(), [4])),
        Reduction::None,
    );
    close_all(&vals(&got), &want, 1e-12);
    let plain: Vec<f64> = (0..4).map(|i| naive(x[i], t[i], 1.0)).collect();
    let got = F::binary_cross_entropy_with_logits(
        &Tensor::from_vec(x, [4]),
        &Tensor::from_vec(t, [4]),
        None,
        Reduction::Sum,
    );
    close_all(&vals(&got), &[plain.iter().sum()], 1e-12);
}

#[test]
fn layer_norm_and_batch_norm() {
    let x: Vec<f64> = (0..24)
        .map(|i| ((i * 13 % 7) as f64) - 3.0 + i as f64 * 0.1)
        .collect();
    // layer_norm over the last axis of [4, 6], with weight and bias.
    let w: Vec<f64> = (0..6).map(|i| 0.5 + i as f64 * 0.1).collect();
    let b: Vec<f64> = (0..6).map(|i| i as f64 * -0.2).collect();
    let mut want = Vec::new();
    for row in x.chunks(6) {
        let m = row.iter().sum::<f64>() / 6.0;
        let v = row.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 6.0;
        for (k, a) in row.iter().enumerate() {
            want.push((a - m) / (v + 1e-5).sqrt() * w[k] + b[k]);
        }
    }
    let y = F::layer_norm(
        &Tensor::from_vec(x.clone(), [4, 6]),
        &[6],
        Some(&Tensor::from_vec(w, [6])),
        Some(&Tensor::from_vec(b, [6])),
        1e-5,
    );
    close_all(&vals(&y), &want, 1e-10);

    // batch_norm of [N=2, C=3, L=4] in training: batch statistics per channel, running stats
    // updated with the unbiased variance.
    let (n, c, l) = (2, 3, 4);
    let t = Tensor::from_vec(x.clone(), [n, c, l]);
    let rm = Tensor::from_vec(vec![0.1f64, 0.2, 0.3], [3]);
    let rv = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [3]);
    let y = F::batch_norm(&t, Some(&rm), Some(&rv), None, None, true, 0.1, 1e-5);
    let mut want = vec![0.0; n * c * l];
    let (mut new_m, mut new_v) = (vec![], vec![]);
    for ch in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|b| (0..l).map(move |k| (b * c + ch) * l + k))
            .collect();
        let m = idx.iter().map(|&i| x[i]).sum::<f64>() / 8.0;
        let v = idx.iter().map(|&i| (x[i] - m).powi(2)).sum::<f64>() / 8.0;
        for &i in &idx {
            want[i] = (x[i] - m) / (v + 1e-5).sqrt();
        }
        new_m.push(0.9 * [0.1, 0.2, 0.3][ch] + 0.1 * m);
        new_v.push(0.9 * [1.0, 2.0, 3.0][ch] + 0.1 * v * 8.0 / 7.0);
    }
    close_all(&vals(&y), &want, 1e-10);
    close_all(&vals(&rm), &new_m, 1e-12);
    close_all(&vals(&rv), &new_v, 1e-12);
    // Evaluation uses the running statistics.
    let y = F::batch_norm(&t, Some(&rm), Some(&rv), None, None, false, 0.1, 1e-5);
    let want: Vec<f64> = (0..n * c * l)
        .map(|i| {
            let ch = (i / l) % c;
            (x[i] - new_m[ch]) / (new_v[ch] + 1e-5).sqrt()
        })
        .collect();
    close_all(&vals(&y), &want, 1e-10);
}

#[test]
fn embedding_and_dropout() {
    let w: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let weight = Tensor::from_vec(w, [4, 3]).requires_grad_(true);
    let idx = Tensor::from_vec(vec![3i64, 0, 0, 2], [2, 2]);
    let e = F::embedding(&idx, &weight, Some(0));
    assert_eq!(e.dims(), &[2, 2, 3]);
    assert_eq!(
        e.to_vec::<f32>().unwrap(),
        vec![9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 6.0, 7.0, 8.0]
    );
    // The padding row gets no gradient; the others one per use.
    e.sum_all().backward();
    assert_eq!(
        weight.grad().unwrap().to_vec::<f32>().unwrap(),
        vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    );

    // Dropout: about p zeroed, the rest scaled by 1/(1-p); the same seed, the same mask.
    let x = Tensor::ones([100_000]);
    metajit::manual_seed(42);
    let a = F::dropout(&x, 0.3, true).to_vec::<f32>().unwrap();
    metajit::manual_seed(42);
    let b = F::dropout(&x, 0.3, true).to_vec::<f32>().unwrap();
    assert_eq!(a, b, "reproducible by seed");
    let zeros = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
    assert!((zeros - 0.3).abs() < 0.01, "zeroed fraction {zeros}");
    assert!(a.iter().all(|v| *v == 0.0 || (*v - 1.0 / 0.7).abs() < 1e-6));
    assert_eq!(
        F::dropout(&x, 0.3, false).to_vec::<f32>().unwrap(),
        vec![1.0; 100_000]
    );
    let m = panic_message(|| {
        F::dropout(&x, 1.5, true);
    })
    .unwrap();
    assert!(m.contains("dropout") && m.contains("1.5"), "{m}");
}

/// A deterministic pseudo-random vector.
fn data(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// PyTorch's conv2d in plain loops.
#[allow(clippy::too_many_arguments)]
fn naive_conv2d(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    wt: &[f64],
    [o, kh, kw]: [usize; 3],
    bias: Option<&[f64]>,
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
    (dh, dw): (usize, usize),
    g: usize,
) -> (Vec<f64>, [usize; 4]) {
    let oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    let ow = (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
    let (cg, og) = (c / g, o / g);
    let mut y = vec![0.0; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[oc]);
                    for ic in 0..cg {
                        let ch = grp * cg + ic;
                        for a in 0..kh {
                            for e in 0..kw {
                                let hi = (i * sh + a * dh) as i64 - ph as i64;
                                let wi = (j * sw + e * dw) as i64 - pw as i64;
                                if hi < 0 || wi < 0 || hi >= h as i64 || wi >= w as i64 {
                                    continue;
                                }
                                acc += x[((b * c + ch) * h + hi as usize) * w + wi as usize]
                                    * wt[((oc * cg + ic) * kh + a) * kw + e];
                            }
                        }
                    }
                    y[((b * o + oc) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    (y, [n, o, oh, ow])
}

#[test]
fn conv2d_matches_a_naive_implementation() {
    for (k, (shape, o, kk, stride, pad, dil, g, bias)) in [
        ([2, 3, 7, 6], 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, true),
        ([1, 4, 9, 8], 6, (3, 2), (2, 3), (2, 0), (2, 1), 2, false),
        ([2, 6, 5, 5], 6, (1, 3), (1, 2), (0, 1), (1, 2), 3, true),
        ([1, 1, 28, 28], 6, (5, 5), (1, 1), (0, 0), (1, 1), 1, true),
        // Stride 1, one group, 2+ channels, an output at least 4/5 as wide as the padded
        // input: the shifted-GEMM form (padding 0, 1 and 2, dilation, odd and non-square
        // sizes, a 1-wide kernel, batch 1 and 3).
        ([2, 16, 7, 9], 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, true),
        ([1, 16, 9, 8], 3, (3, 2), (1, 1), (0, 0), (1, 1), 1, false),
        ([3, 17, 5, 7], 4, (5, 3), (1, 1), (2, 2), (1, 1), 1, true),
        ([1, 20, 9, 30], 2, (3, 3), (1, 1), (2, 1), (2, 3), 1, true),
        ([2, 16, 6, 5], 3, (2, 1), (1, 1), (0, 2), (1, 1), 1, false),
        ([1, 16, 4, 4], 1, (1, 1), (1, 1), (0, 0), (1, 1), 1, false),
        ([1, 3, 5, 12], 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, true),
        ([2, 2, 3, 9], 3, (2, 2), (1, 1), (0, 0), (1, 1), 1, true),
        // Just outside it: stride 2, groups, one channel, and many extra columns keep the
        // im2col form.
        ([1, 16, 7, 7], 4, (3, 3), (2, 1), (1, 1), (1, 1), 1, true),
        ([1, 32, 6, 6], 4, (3, 3), (1, 1), (1, 1), (1, 1), 2, true),
        ([2, 1, 6, 12], 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, false),
        ([1, 16, 6, 6], 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, false),
    ]
    .into_iter()
    .enumerate()
    {
        let [n, c, h, w] = shape;
        let x = data(n * c * h * w, 10 + k as u64);
        let wt = data(o * (c / g) * kk.0 * kk.1, 20 + k as u64);
        let b = data(o, 30 + k as u64);
        let (want, oshape) = naive_conv2d(
            &x,
            shape,
            &wt,
            [o, kk.0, kk.1],
            bias.then_some(&b[..]),
            stride,
            pad,
            dil,
            g,
        );
        let bt = Tensor::from_vec(b.clone(), [o]);
        let y = F::conv2d(
            &Tensor::from_vec(x, shape),
            &Tensor::from_vec(wt, [o, c / g, kk.0, kk.1]),
            bias.then_some(&bt),
            stride,
            pad,
            dil,
            g,
        );
        assert_eq!(y.dims(), &oshape, "case {k}");
        close_all(&vals(&y), &want, 1e-12);
    }
    // conv1d is conv2d over a height of 1.
    let x = data(2 * 3 * 10, 1);
    let wt = data(4 * 3 * 3, 2);
    let (want, _) = naive_conv2d(
        &x,
        [2, 3, 1, 10],
        &wt,
        [4, 1, 3],
        None,
        (1, 2),
        (0, 1),
        (1, 1),
        1,
    );
    let y = F::conv1d(
        &Tensor::from_vec(x, [2, 3, 10]),
        &Tensor::from_vec(wt, [4, 3, 3]),
        None,
        2,
        1,
        1,
        1,
    );
    assert_eq!(y.dims(), &[2, 4, 5]);
    close_all(&vals(&y), &want, 1e-12);
    // Stride 1 over 16 channels: the shifted-GEMM form over a height of 1.
    let x = data(2 * 16 * 30, 3);
    let wt = data(3 * 16 * 4, 4);
    let (want, _) = naive_conv2d(
        &x,
        [2, 16, 1, 30],
        &wt,
        [3, 1, 4],
        None,
        (1, 1),
        (0, 2),
        (1, 1),
        1,
    );
    let y = F::conv1d(
        &Tensor::from_vec(x, [2, 16, 30]),
        &Tensor::from_vec(wt, [3, 16, 4]),
        None,
        1,
        2,
        1,
        1,
    );
    assert_eq!(y.dims(), &[2, 3, 31]);
    close_all(&vals(&y), &want, 1e-12);
}

/// PyTorch's conv_transpose2d in plain loops, by its scatter definition: each input element
/// times each kernel tap is added into the output at `h·s - p + kh·d` (and the same for the
/// width) when that lands inside. `wt` is `[C, O / g, KH, KW]`.
#[allow(clippy::too_many_arguments)]
fn naive_conv_transpose2d(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    wt: &[f64],
    [og, kh, kw]: [usize; 3],
    bias: Option<&[f64]>,
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
    (oph, opw): (usize, usize),
    g: usize,
    (dh, dw): (usize, usize),
) -> (Vec<f64>, [usize; 4]) {
    let oh = (h - 1) * sh + dh * (kh - 1) + oph + 1 - 2 * ph;
    let ow = (w - 1) * sw + dw * (kw - 1) + opw + 1 - 2 * pw;
    let (cg, o) = (c / g, og * g);
    let mut y = vec![0.0; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            for v in &mut y[(b * o + oc) * oh * ow..][..oh * ow] {
                *v = bias.map_or(0.0, |bs| bs[oc]);
            }
        }
        for ic in 0..c {
            let grp = ic / cg;
            for i in 0..h {
                for j in 0..w {
                    let xv = x[((b * c + ic) * h + i) * w + j];
                    for co in 0..og {
                        let oc = grp * og + co;
                        for a in 0..kh {
                            for e in 0..kw {
                                let hi = (i * sh + a * dh) as i64 - ph as i64;
                                let wi = (j * sw + e * dw) as i64 - pw as i64;
                                if hi < 0 || wi < 0 || hi >= oh as i64 || wi >= ow as i64 {
                                    continue;
                                }
                                y[((b * o + oc) * oh + hi as usize) * ow + wi as usize] +=
                                    xv * wt[((ic * og + co) * kh + a) * kw + e];
                            }
                        }
                    }
                }
            }
        }
    }
    (y, [n, o, oh, ow])
}

#[test]
fn conv_transpose2d_matches_a_naive_implementation() {
    // (x shape, O / groups, kernel, stride, padding, output padding, groups, dilation, bias)
    type P = (usize, usize);
    type Case = ([usize; 4], usize, P, P, P, P, usize, P, bool);
    #[rustfmt::skip]
    let cases: [Case; 6] = [
        ([2, 3, 4, 5], 2, (3, 3), (1, 1), (0, 0), (0, 0), 1, (1, 1), true),
        ([1, 2, 3, 4], 3, (3, 2), (2, 2), (1, 0), (1, 1), 1, (1, 1), false),
        ([2, 4, 3, 3], 2, (2, 3), (2, 1), (0, 1), (1, 0), 2, (1, 1), true),
        ([1, 2, 4, 3], 2, (3, 2), (1, 2), (2, 1), (1, 0), 1, (2, 3), false),
        ([1, 6, 2, 3], 1, (2, 2), (3, 2), (1, 0), (2, 1), 3, (2, 1), true),
        // A padding that crops all but the centre: a 1×1 output, most taps skipped.
        ([1, 1, 3, 3], 1, (3, 3), (1, 1), (2, 2), (0, 0), 1, (1, 1), false),
    ];
    for (k, (shape, og, kk, stride, pad, opad, g, dil, bias)) in cases.into_iter().enumerate() {
        let [n, c, h, w] = shape;
        let x = data(n * c * h * w, 40 + k as u64);
        let wt = data(c * og * kk.0 * kk.1, 50 + k as u64);
        let b = data(og * g, 60 + k as u64);
        let (want, oshape) = naive_conv_transpose2d(
            &x,
            shape,
            &wt,
            [og, kk.0, kk.1],
            bias.then_some(&b[..]),
            stride,
            pad,
            opad,
            g,
            dil,
        );
        let bt = Tensor::from_vec(b.clone(), [og * g]);
        let y = F::conv_transpose2d(
            &Tensor::from_vec(x, shape),
            &Tensor::from_vec(wt, [c, og, kk.0, kk.1]),
            bias.then_some(&bt),
            stride,
            pad,
            opad,
            g,
            dil,
        );
        assert_eq!(y.dims(), &oshape, "case {k}");
        close_all(&vals(&y), &want, 1e-12);
    }
    // It is the gradient of conv2d with respect to its input (same weight, same geometry).
    let (x, w) = (
        Tensor::from_vec(data(2 * 3 * 7 * 7, 70), [2, 3, 7, 7]).requires_grad_(true),
        Tensor::from_vec(data(4 * 3 * 3 * 2, 71), [4, 3, 3, 2]),
    );
    let y = F::conv2d(&x, &w, None, (2, 2), (1, 0), (1, 1), 1);
    let dy = Tensor::from_vec(data(y.numel(), 72), y.dims().to_vec());
    let dx = metajit::autograd::grad(&[&y], &[&x], Some(&[&dy]));
    // Output padding restores the extents: 7 = (4 - 1)·2 - 2 + 2 + 1 + 0 and
    // 7 = (3 - 1)·2 + 1 + 1 + 1.
    let t = F::conv_transpose2d(&dy, &w, None, (2, 2), (1, 0), (0, 1), 1, (1, 1));
    assert_eq!(t.dims(), x.dims());
    close_all(&vals(&t), &vals(&dx[0]), 1e-12);
}

/// Pooling windows of one axis as PyTorch computes them: (start, end) clipped to the padded
/// input, and the output count with ceil_mode's rule.
fn pool_out(n: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> usize {
    let q = n + 2 * p - d * (k - 1) - 1;
    let mut o = if ceil { q.div_ceil(s) } else { q / s } + 1;
    if ceil && (o - 1) * s >= n + p {
        o -= 1;
    }
    o
}

#[test]
fn pooling_matches_naive_implementations() {
    let (n, c, h, w) = (2, 3, 7, 8);
    let x = data(n * c * h * w, 5);
    let t = Tensor::from_vec(x.clone(), [n, c, h, w]);
    for (k, s, p, d, ceil) in [
        ((2, 2), (2, 2), (0, 0), (1, 1), false),
        ((2, 3), (2, 3), (0, 0), (1, 1), false),
        ((3, 3), (2, 2), (1, 1), (1, 1), true),
        ((3, 2), (2, 3), (1, 0), (2, 1), true),
        ((2, 3), (1, 2), (0, 1), (1, 1), false),
    ] {
        let oh = pool_out(h, k.0, s.0, p.0, d.0, ceil);
        let ow = pool_out(w, k.1, s.1, p.1, d.1, ceil);
        let mut mx = Vec::new();
        let mut avg = Vec::new();
        let mut avg_excl = Vec::new();
        for bc in 0..n * c {
            for i in 0..oh {
                for j in 0..ow {
                    let mut m = f64::NEG_INFINITY;
                    for a in 0..k.0 {
                        for e in 0..k.1 {
                            let hi = (i * s.0 + a * d.0) as i64 - p.0 as i64;
                            let wi = (j * s.1 + e * d.1) as i64 - p.1 as i64;
                            if hi >= 0 && wi >= 0 && hi < h as i64 && wi < w as i64 {
                                m = m.max(x[(bc * h + hi as usize) * w + wi as usize]);
                            }
                        }
                    }
                    mx.push(m);
                    if d == (1, 1) {
                        // avg_pool2d, count_include_pad: the window clipped to the padded input.
                        let (hs, ws) =
                            ((i * s.0) as i64 - p.0 as i64, (j * s.1) as i64 - p.1 as i64);
                        let he = (hs + k.0 as i64).min((h + p.0) as i64);
                        let we = (ws + k.1 as i64).min((w + p.1) as i64);
                        let div = ((he - hs) * (we - ws)) as f64;
                        let (hc, wc) =
                            ((hs.max(0), he.min(h as i64)), (ws.max(0), we.min(w as i64)));
                        let clipped = ((hc.1 - hc.0) * (wc.1 - wc.0)) as f64;
                        let mut sum = 0.0;
                        for hi in hc.0..hc.1 {
                            for wi in wc.0..wc.1 {
                                sum += x[(bc * h + hi as usize) * w + wi as usize];
                            }
                        }
                        avg.push(sum / div);
                        avg_excl.push(sum / clipped);
                    }
                }
            }
        }
        let y = F::max_pool2d(&t, k, Some(s), p, d, ceil);
        assert_eq!(y.dims(), &[n, c, oh, ow]);
        close_all(&vals(&y), &mx, 0.0);
        if d == (1, 1) {
            let y = F::avg_pool2d(&t, k, Some(s), p, ceil, true);
            close_all(&vals(&y), &avg, 1e-12);
            let y = F::avg_pool2d(&t, k, Some(s), p, ceil, false);
            close_all(&vals(&y), &avg_excl, 1e-12);
        }
    }
    // adaptive_avg_pool2d: bins [floor(i·H/o), ceil((i+1)·H/o)).
    let (oh, ow) = (3, 5);
    let mut want = Vec::new();
    for bc in 0..n * c {
        for i in 0..oh {
            for j in 0..ow {
                let (hs, he) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
                let (ws, we) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                let mut sum = 0.0;
                for hi in hs..he {
                    for wi in ws..we {
                        sum += x[(bc * h + hi) * w + wi];
                    }
                }
                want.push(sum / ((he - hs) * (we - ws)) as f64);
            }
        }
    }
    close_all(&vals(&F::adaptive_avg_pool2d(&t, (oh, ow))), &want, 1e-12);
    // max_pool2d sends the gradient to the first maximum of a window with ties.
    let z = Tensor::from_vec(vec![1.0f32, 1.0, 0.0, 1.0], [1, 1, 2, 2]).requires_grad_(true);
    F::max_pool2d(&z, (2, 2), None, (0, 0), (1, 1), false)
        .sum_all()
        .backward();
    assert_eq!(
        z.grad().unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn convolution_forward_and_gradients_run_as_gemm() {
    use metajit::metaops::schedule::{Step, schedule};
    let gemms = |outs: &[&Tensor]| {
        let (g, _) = metajit::pending_graph(outs);
        schedule(&g)
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Contraction { .. }))
            .count()
    };
    if metajit::config::mode() == metajit::Mode::Eager {
        return; // the schedule is a compiled-mode property
    }
    let x = Tensor::from_vec(data(2 * 3 * 9 * 9, 1), [2, 3, 9, 9]).requires_grad_(true);
    let w = Tensor::from_vec(data(4 * 3 * 3 * 3, 2), [4, 3, 3, 3]).requires_grad_(true);
    let y = F::conv2d(&x, &w, None, (1, 1), (1, 1), (1, 1), 1);
    assert_eq!(gemms(&[&y]), 1, "the forward is one GEMM");
    let g = metajit::autograd::grad(&[&y.square().sum_all()], &[&x, &w], None);
    // The weight gradient and the window gradient (before its scatter back to the input).
    assert!(gemms(&[&g[0], &g[1]]) >= 3, "forward + two gradient GEMMs");
    // The shifted-GEMM form (16 channels, stride 1): the forward reads the padded input in
    // place, one GEMM (a product per image and tap, summed); so do both gradients.
    let xs = Tensor::from_vec(data(2 * 16 * 7 * 10, 5), [2, 16, 7, 10]).requires_grad_(true);
    let ws = Tensor::from_vec(data(4 * 16 * 3 * 3, 6), [4, 16, 3, 3]).requires_grad_(true);
    let ys = F::conv2d(&xs, &ws, None, (1, 1), (1, 1), (1, 1), 1);
    assert_eq!(gemms(&[&ys]), 1, "the shifted forward is one GEMM");
    let (g, _) = metajit::pending_graph(&[&ys]);
    let summed_taps = schedule(&g).steps.iter().any(|s| match s {
        Step::Contraction { contraction, .. } => {
            let l = contraction.layout(&g);
            l.k == 16 && l.batch.iter().any(|b| b.dst == 0 && b.extent == 3)
        }
        _ => false,
    });
    assert!(
        summed_taps,
        "a product of K = C per tap, summed over the taps"
    );
    let gs = metajit::autograd::grad(&[&ys.square().sum_all()], &[&xs, &ws], None);
    let c = gemms(&[&gs[0], &gs[1]]);
    assert!(c >= 3, "shifted: forward + two gradient GEMMs, not {c}");
    // A linear layer on a flattened pooled map: its weight gradient is a GEMM too.
    let p = F::max_pool2d(&y, (2, 2), None, (0, 0), (1, 1), false).flatten(1, -1);
    let lw = Tensor::from_vec(data(5 * 64, 3), [5, 64]).requires_grad_(true);
    let out = p.linear(&lw, None).square().sum_all();
    let gw = metajit::autograd::grad(&[&out], &[&lw], None);
    assert!(
        gemms(&[&gw[0]]) >= 3,
        "conv, linear and its weight gradient"
    );
    // A transposed convolution: one GEMM, then the scatter; its gradients are GEMMs too.
    let wt = Tensor::from_vec(data(3 * 2 * 3 * 3, 4), [3, 2, 3, 3]).requires_grad_(true);
    let t = F::conv_transpose2d(&x, &wt, None, (2, 2), (1, 1), (1, 1), 1, (1, 1));
    assert_eq!(gemms(&[&t]), 1, "conv_transpose2d's forward is one GEMM");
    let g = metajit::autograd::grad(&[&t.square().sum_all()], &[&x, &wt], None);
    let c = gemms(&[&g[0], &g[1]]);
    assert!(c >= 3, "forward + two gradient GEMMs, not {c}");
}
