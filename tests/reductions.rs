//! Reductions of the Tensor API against naive folds written out in this file.
//!
//! Property tests draw shapes of rank 0–4 (extents 0–4), random axis subsets (written with
//! negative axes at random, in random order, or as `All`) and `keepdim` both ways, and compare
//! sum, prod, max, min, mean, var, std, logsumexp, all, any, argmax and argmin with a fold over
//! the row-major elements. Examples pin down the corners: empty reductions, NaN, ±inf, integer
//! accumulation in i64, first-occurrence indices.

mod common;

use common::{close, config, panic_message};
use metajit::{All, DType, Dims, Tensor};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A set of axes as the property tests write it: a list (possibly negative, in any order) or
/// every axis.
#[derive(Clone, Debug)]
enum Axes {
    List(Vec<isize>),
    All,
}

impl Dims for Axes {
    fn to_dims(&self) -> Option<Vec<isize>> {
        match self {
            Axes::List(v) => Some(v.clone()),
            Axes::All => None,
        }
    }
}

/// One reduction case: a shape, the reduced axes (normalised, ascending), how they are written,
/// and keepdim.
#[derive(Clone, Debug)]
struct Case {
    shape: Vec<usize>,
    axes: Vec<usize>,
    written: Axes,
    keepdim: bool,
    seed: u64,
}

impl Case {
    /// The output shape: reduced axes dropped, or kept with extent 1.
    fn out_shape(&self) -> Vec<usize> {
        (0..self.shape.len())
            .filter_map(|a| match (self.axes.contains(&a), self.keepdim) {
                (true, true) => Some(1),
                (true, false) => None,
                (false, _) => Some(self.shape[a]),
            })
            .collect()
    }

    /// The number of elements folded into each output.
    fn group_len(&self) -> usize {
        self.axes.iter().map(|&a| self.shape[a]).product()
    }

    /// True when a reduced axis has extent 0 (max/min have no identity there).
    fn reduces_an_empty_axis(&self) -> bool {
        self.axes.iter().any(|&a| self.shape[a] == 0)
    }
}

/// Folds the row-major `data` of `shape` over `axes`: output `o` is `f` applied, in row-major
/// order, to every input element whose coordinates outside `axes` are those of `o`.
fn naive_fold<T: Copy, A: Clone>(
    shape: &[usize],
    axes: &[usize],
    data: &[T],
    init: A,
    f: impl Fn(A, T) -> A,
) -> Vec<A> {
    // The output stride of each input axis; reduced axes have stride 0.
    let mut strides = vec![0usize; shape.len()];
    let mut s = 1;
    for a in (0..shape.len()).rev() {
        if !axes.contains(&a) {
            strides[a] = s;
            s *= shape[a];
        }
    }
    let out_len = s;
    let mut out = vec![init; out_len];
    let mut idx = vec![0usize; shape.len()];
    for &x in data {
        let o: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out[o] = f(out[o].clone(), x);
        for a in (0..shape.len()).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// Deterministic test data from a small set of exactly representable values; `special` mixes
/// in NaN, +inf and -inf now and then.
fn values(seed: u64, n: usize, set: &[f32], special: bool) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            match (special, z % 13) {
                (true, 0) => f32::NAN,
                (true, 1) => f32::INFINITY,
                (true, 2) => f32::NEG_INFINITY,
                _ => set[(z >> 8) as usize % set.len()],
            }
        })
        .collect()
}

const HALVES: [f32; 9] = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0];

/// A random reduction case of rank 0–4 with extents 0–4.
fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(0usize..=4, 0..=4)
        .prop_flat_map(|shape| {
            let r = shape.len();
            (
                Just(shape),
                prop::collection::vec(any::<bool>(), r),
                prop::collection::vec(any::<bool>(), r),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<u64>(),
            )
        })
        .prop_map(
            |(shape, chosen, negative, reversed, use_all, keepdim, seed)| {
                let r = shape.len();
                let axes: Vec<usize> = (0..r).filter(|&a| chosen[a]).collect();
                let written = if use_all && axes.len() == r {
                    Axes::All
                } else {
                    let mut w: Vec<isize> = axes
                        .iter()
                        .map(|&a| {
                            if negative[a] {
                                a as isize - r as isize
                            } else {
                                a as isize
                            }
                        })
                        .collect();
                    if reversed {
                        w.reverse();
                    }
                    Axes::List(w)
                };
                Case {
                    shape,
                    axes,
                    written,
                    keepdim,
                    seed,
                }
            },
        )
}

/// A case reducing one axis (rank ≥ 1), for argmax/argmin/max_dim.
fn axis_case() -> impl Strategy<Value = (Vec<usize>, isize, bool, u64)> {
    prop::collection::vec(0usize..=4, 1..=4).prop_flat_map(|shape| {
        let r = shape.len() as isize;
        (Just(shape), -r..r, any::<bool>(), any::<u64>())
    })
}

/// Compares a float tensor with f64 references.
fn check_floats(
    what: &str,
    c: &Case,
    got: &Tensor,
    want: &[f64],
    rel: f64,
    abs: f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        got.dims(),
        &c.out_shape()[..],
        "{}: shape for {:?}",
        what,
        c
    );
    let g = got.to_f64_vec().unwrap();
    prop_assert_eq!(g.len(), want.len(), "{}: element count", what);
    for (k, (&g, &w)) in g.iter().zip(want).enumerate() {
        prop_assert!(
            close(g, w, rel, abs),
            "{}[{}]: got {:e}, want {:e} for {:?}",
            what,
            k,
            g,
            w,
            c
        );
    }
    Ok(())
}

/// NaN-propagating max/min in f64, as PyTorch's.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}
fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Two-pass variance dividing by `n - correction` (NaN when that is ≤ 0, as PyTorch).
fn naive_var(xs: &[f64], correction: usize) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    let denom = n - correction as f64;
    if denom <= 0.0 { f64::NAN } else { ss / denom }
}

/// Stable log-sum-exp with PyTorch's conventions: NaN wins, a +inf gives +inf, all -inf gives
/// -inf, empty gives -inf.
fn naive_logsumexp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, nan_max);
    if m.is_nan() || m.is_infinite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

// ---------------------------------------------------------------------------------------------
// 3. Properties.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sum_prod_mean_match_a_naive_fold(c in case(), special in any::<bool>()) {
        let n: usize = c.shape.iter().product();
        let data = values(c.seed, n, &HALVES, special);
        let x = Tensor::from_vec(data.clone(), c.shape.clone());
        let xs: Vec<f64> = data.iter().map(|&v| v as f64).collect();

        let want = naive_fold(&c.shape, &c.axes, &xs, 0.0, |a, x| a + x);
        let got = x.sum(c.written.clone(), c.keepdim);
        prop_assert_eq!(got.dtype(), DType::F32);
        check_floats("sum", &c, &got, &want, 1e-6, 1e-6)?;

        let m = c.group_len() as f64;
        let want_mean: Vec<f64> = want.iter().map(|s| s / m).collect();
        check_floats("mean", &c, &x.mean(c.written.clone(), c.keepdim), &want_mean, 1e-6, 1e-6)?;

        // Products of values of magnitude 0.5–1.25 stay inside f32's range.
        let pdata = values(c.seed ^ 1, n, &[-1.25, -1.0, -0.75, -0.5, 0.5, 0.75, 1.0, 1.25], special);
        let p = Tensor::from_vec(pdata.clone(), c.shape.clone());
        let ps: Vec<f64> = pdata.iter().map(|&v| v as f64).collect();
        let want = naive_fold(&c.shape, &c.axes, &ps, 1.0, |a, x| a * x);
        check_floats("prod", &c, &p.prod(c.written.clone(), c.keepdim), &want, 1e-5, 1e-30)?;
    }

    #[test]
    fn max_min_match_a_naive_fold_and_refuse_empty_axes(c in case(), special in any::<bool>()) {
        let n: usize = c.shape.iter().product();
        let data = values(c.seed, n, &HALVES, special);
        let x = Tensor::from_vec(data.clone(), c.shape.clone());
        if c.reduces_an_empty_axis() {
            type Reduction = fn(&Tensor, Axes, bool) -> Tensor;
            let ops: [(&str, Reduction); 2] = [("max", |x, d, k| x.max(d, k)), ("min", |x, d, k| x.min(d, k))];
            for (name, op) in ops {
                let msg = panic_message(|| { op(&x, c.written.clone(), c.keepdim); });
                let msg = msg.ok_or_else(|| TestCaseError::fail(format!("{name} over an empty axis did not panic: {c:?}")))?;
                prop_assert!(msg.contains(&format!("empty reduction in {name}")), "{}", msg);
            }
            return Ok(());
        }
        let xs: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        let want = naive_fold(&c.shape, &c.axes, &xs, f64::NEG_INFINITY, nan_max);
        check_floats("max", &c, &x.max(c.written.clone(), c.keepdim), &want, 0.0, 0.0)?;
        let want = naive_fold(&c.shape, &c.axes, &xs, f64::INFINITY, nan_min);
        check_floats("min", &c, &x.min(c.written.clone(), c.keepdim), &want, 0.0, 0.0)?;
        // Integers too.
        let xi = x.cast(DType::I32);
        let is: Vec<i32> = data.iter().map(|&v| if v.is_nan() { 0 } else { v as i32 }).collect();
        let want = naive_fold(&c.shape, &c.axes, &is, i32::MIN, i32::max);
        let got = xi.max(c.written.clone(), c.keepdim);
        prop_assert_eq!(got.dtype(), DType::I32);
        prop_assert_eq!(got.to_vec::<i32>().unwrap(), want, "i32 max for {:?}", c);
    }

    #[test]
    fn var_std_logsumexp_match_two_pass_references(c in case(), special in any::<bool>()) {
        let n: usize = c.shape.iter().product();
        let data = values(c.seed, n, &HALVES, special);
        let x = Tensor::from_vec(data.clone(), c.shape.clone());
        let xs: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        let groups = naive_fold(&c.shape, &c.axes, &xs, Vec::new(), |mut g, x| { g.push(x); g });

        let want: Vec<f64> = groups.iter().map(|g| naive_var(g, 1)).collect();
        check_floats("var", &c, &x.var(c.written.clone(), c.keepdim), &want, 1e-5, 1e-6)?;
        let want_std: Vec<f64> = want.iter().map(|v| v.sqrt()).collect();
        check_floats("std", &c, &x.std(c.written.clone(), c.keepdim), &want_std, 1e-5, 1e-6)?;
        let want: Vec<f64> = groups.iter().map(|g| naive_var(g, 0)).collect();
        let got = x.var_correction(c.written.clone(), 0, c.keepdim);
        check_floats("var_correction(0)", &c, &got, &want, 1e-5, 1e-6)?;
        for correction in [0, 2] {
            // PyTorch divides by max(n - correction, 0): a positive sum over 0 is inf, not NaN.
            let want: Vec<f64> = groups
                .iter()
                .map(|g| {
                    let n = g.len() as f64;
                    let mean = g.iter().sum::<f64>() / n;
                    let ss: f64 = g.iter().map(|x| (x - mean) * (x - mean)).sum();
                    (ss / (n - correction as f64).max(0.0)).sqrt()
                })
                .collect();
            let got = x.std_correction(c.written.clone(), correction, c.keepdim);
            check_floats("std_correction", &c, &got, &want, 1e-5, 1e-6)?;
        }

        // logsumexp over an empty axis is a separate example (it is -inf in PyTorch).
        if !c.reduces_an_empty_axis() {
            let want: Vec<f64> = groups.iter().map(|g| naive_logsumexp(g)).collect();
            let got = x.logsumexp(c.written.clone(), c.keepdim);
            check_floats("logsumexp", &c, &got, &want, 1e-6, 1e-6)?;
        }
    }

    #[test]
    fn integer_and_bool_reductions(c in case()) {
        let n: usize = c.shape.iter().product();
        let data = values(c.seed, n, &HALVES, false);
        let ints: Vec<i32> = data.iter().map(|&v| (v * 2.0) as i32).collect();
        let x = Tensor::from_vec(ints.clone(), c.shape.clone());
        let got = x.sum(c.written.clone(), c.keepdim);
        prop_assert_eq!(got.dtype(), DType::I64, "sum of i32 is i64");
        prop_assert_eq!(got.dims(), &c.out_shape()[..]);
        let want = naive_fold(&c.shape, &c.axes, &ints, 0i64, |a, x| a + x as i64);
        prop_assert_eq!(got.to_vec::<i64>().unwrap(), want, "i32 sum for {:?}", c);
        let got = x.prod(c.written.clone(), c.keepdim);
        prop_assert_eq!(got.dtype(), DType::I64, "prod of i32 is i64");
        let want = naive_fold(&c.shape, &c.axes, &ints, 1i64, |a, x| a.wrapping_mul(x as i64));
        prop_assert_eq!(got.to_vec::<i64>().unwrap(), want, "i32 prod for {:?}", c);

        let bits: Vec<bool> = ints.iter().map(|&v| v > 0).collect();
        let b = Tensor::from_vec(bits.clone(), c.shape.clone());
        let got = b.all(c.written.clone(), c.keepdim);
        prop_assert_eq!(got.dtype(), DType::Bool);
        prop_assert_eq!(got.dims(), &c.out_shape()[..]);
        let want = naive_fold(&c.shape, &c.axes, &bits, true, |a, x| a && x);
        prop_assert_eq!(got.to_vec::<bool>().unwrap(), want, "all for {:?}", c);
        let want = naive_fold(&c.shape, &c.axes, &bits, false, |a, x| a || x);
        prop_assert_eq!(b.any(c.written.clone(), c.keepdim).to_vec::<bool>().unwrap(), want, "any for {:?}", c);
        let got = b.sum(c.written.clone(), c.keepdim);
        prop_assert_eq!(got.dtype(), DType::I64, "sum of bool is i64");
        let want = naive_fold(&c.shape, &c.axes, &bits, 0i64, |a, x| a + x as i64);
        prop_assert_eq!(got.to_vec::<i64>().unwrap(), want, "bool sum for {:?}", c);
    }

    #[test]
    fn argmax_argmin_take_the_first_extreme_and_nan_wins(
        (shape, axis, keepdim, seed) in axis_case(),
        with_nan in any::<bool>(),
    ) {
        let r = shape.len();
        let a = if axis < 0 { (axis + r as isize) as usize } else { axis as usize };
        let n: usize = shape.iter().product();
        // Few distinct values, so ties are common.
        let mut data = values(seed, n, &[-1.0, 0.0, 1.0, 2.0], false);
        if with_nan {
            for (k, v) in data.iter_mut().enumerate() {
                if (k as u64 ^ seed).is_multiple_of(7) {
                    *v = f32::NAN;
                }
            }
        }
        let x = Tensor::from_vec(data.clone(), shape.clone());
        if shape[a] == 0 {
            let msg = panic_message(|| { x.argmax(axis, keepdim); })
                .ok_or_else(|| TestCaseError::fail(format!("argmax over an empty axis did not panic: {shape:?}")))?;
            prop_assert!(msg.contains("empty reduction in argmax"), "{}", msg);
            return Ok(());
        }
        let c = Case { shape: shape.clone(), axes: vec![a], written: Axes::List(vec![axis]), keepdim, seed };
        // Fold (best value, its index, position along the axis) in row-major order; the
        // position is counted per output element.
        type Acc = (f32, i64, i64);
        let pick = |better: fn(f32, f32) -> bool| {
            naive_fold(&shape, &[a], &data, (f32::NAN, -1i64, 0i64), move |(bv, bi, pos): Acc, v: f32| {
                let take = bi < 0 || (!bv.is_nan() && (v.is_nan() || better(v, bv)));
                if take { (v, pos, pos + 1) } else { (bv, bi, pos + 1) }
            })
        };
        let want_max = pick(|v, b| v > b);
        let want_min = pick(|v, b| v < b);

        let got = x.argmax(axis, keepdim);
        prop_assert_eq!(got.dtype(), DType::I64);
        prop_assert_eq!(got.dims(), &c.out_shape()[..]);
        let idx: Vec<i64> = want_max.iter().map(|w| w.1).collect();
        prop_assert_eq!(got.to_vec::<i64>().unwrap(), idx.clone(), "argmax for {:?} of {:?}", c, data);
        let idx_min: Vec<i64> = want_min.iter().map(|w| w.1).collect();
        prop_assert_eq!(x.argmin(axis, keepdim).to_vec::<i64>().unwrap(), idx_min, "argmin for {:?} of {:?}", c, data);

        let (vals, inds) = x.max_dim(axis, keepdim);
        prop_assert_eq!(vals.dims(), &c.out_shape()[..]);
        let want: Vec<f64> = want_max.iter().map(|w| w.0 as f64).collect();
        check_floats("max_dim values", &c, &vals, &want, 0.0, 0.0)?;
        prop_assert_eq!(inds.to_vec::<i64>().unwrap(), idx, "max_dim indices");
    }
}

// ---------------------------------------------------------------------------------------------
// Examples.

#[test]
fn empty_reductions_have_pytorchs_identities() {
    let e = Tensor::zeros([2, 0]);
    assert_eq!(e.sum(1, false).to_vec::<f32>().unwrap(), [0.0, 0.0]);
    assert_eq!(e.prod(1, false).to_vec::<f32>().unwrap(), [1.0, 1.0]);
    let m = e.mean(1, false).to_vec::<f32>().unwrap();
    assert!(m.iter().all(|v| v.is_nan()), "mean of empty: {m:?}");
    assert_eq!(e.sum_all().to_vec::<f32>().unwrap(), [0.0]);
    assert!(e.mean_all().item::<f32>().unwrap().is_nan());
    assert_eq!(e.sum(0, false).dims(), &[0]);
    assert_eq!(bools(&e.cast(DType::Bool).all(1, false)), [true, true]);
    assert_eq!(bools(&e.cast(DType::Bool).any(1, false)), [false, false]);
    let v = e.var(1, false).to_vec::<f32>().unwrap();
    assert!(v.iter().all(|v| v.is_nan()), "var of empty: {v:?}");
    // Reducing the non-empty axis of an empty tensor is fine for max (an empty result).
    assert_eq!(e.max(0, false).dims(), &[0]);
    let i = Tensor::from_vec(Vec::<i32>::new(), [0]);
    assert_eq!(i.sum(0, false).to_vec::<i64>().unwrap(), [0]);
    assert_eq!(i.prod(0, false).to_vec::<i64>().unwrap(), [1]);
}

#[test]
fn logsumexp_of_an_empty_axis_is_negative_infinity() {
    // PyTorch: torch.logsumexp(torch.empty(2, 0), 1) == tensor([-inf, -inf]) (log of an empty
    // sum; aten skips the max-subtraction when numel() == 0).
    let e = Tensor::zeros([2, 0]);
    let r = panic_message(|| {
        let v = e.logsumexp(1, false).to_vec::<f32>().unwrap();
        assert_eq!(v, [f32::NEG_INFINITY; 2]);
    });
    assert!(
        r.is_none(),
        "logsumexp over an empty axis panicked: {}",
        r.unwrap()
    );
}

#[test]
fn integer_sums_give_i64_and_do_not_wrap_at_32_bits() {
    let x = Tensor::from_slice(&[i32::MAX, i32::MAX, 2]);
    let s = x.sum(0, false);
    assert_eq!(s.dtype(), DType::I64);
    assert_eq!(s.item::<i64>().unwrap(), 2 * i32::MAX as i64 + 2);
    let u = Tensor::from_slice(&[200u8, 100]);
    assert_eq!(u.sum(0, false).item::<i64>().unwrap(), 300);
    assert_eq!(u.prod(0, false).item::<i64>().unwrap(), 20_000);
    let b = Tensor::from_slice(&[true, true, false]);
    assert_eq!(b.sum_all().item::<i64>().unwrap(), 2);
    // f64 stays f64, f16 stays f16.
    assert_eq!(Tensor::from_slice(&[1.0f64]).sum_all().dtype(), DType::F64);
    let h = Tensor::from_slice(&[half::f16::from_f32(1.5); 4]).sum_all();
    assert_eq!(h.dtype(), DType::F16);
    assert_eq!(h.item::<half::f16>().unwrap().to_f32(), 6.0);
}

#[test]
fn sums_are_accurate_over_many_elements() {
    // 10_000 × 0.1f32: a naive f32 running sum drifts (to ~999.90); PyTorch's pairwise sum and
    // an f64 accumulator both give 1000.0 to within an ulp or two.
    let x = Tensor::full([10_000], 0.1);
    let s = x.sum_all().item::<f32>().unwrap();
    let want = 10_000.0 * 0.1f32 as f64;
    assert!(close(s as f64, want, 1e-6, 0.0), "sum = {s}, want {want}");
    let m = x.mean_all().item::<f32>().unwrap();
    assert!(close(m as f64, 0.1f32 as f64, 1e-6, 0.0), "mean = {m}");
}

#[test]
fn max_min_and_nan() {
    let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, -1.0, 5.0, 2.0], [2, 3]);
    let mx = x.max(1, false).to_vec::<f32>().unwrap();
    assert!(mx[0].is_nan() && mx[1] == 5.0, "max: {mx:?}");
    let mn = x.min(1, true);
    assert_eq!(mn.dims(), &[2, 1]);
    let mn = mn.to_vec::<f32>().unwrap();
    assert!(mn[0].is_nan() && mn[1] == -1.0, "min: {mn:?}");
    assert!(x.max_all().item::<f32>().unwrap().is_nan());
    assert_eq!(x.max(0, false).to_vec::<f32>().unwrap()[0], 1.0);
    let y = Tensor::from_slice(&[f32::NEG_INFINITY, f32::NEG_INFINITY]);
    assert_eq!(y.max_all().item::<f32>().unwrap(), f32::NEG_INFINITY);
}

#[test]
fn argmax_argmin_examples() {
    let x = Tensor::from_vec(
        vec![3.0f32, 7.0, 7.0, 1.0, 1.0, 0.0, f32::NAN, 2.0, f32::NAN],
        [3, 3],
    );
    assert_eq!(x.argmax(1, false).to_vec::<i64>().unwrap(), [1, 0, 0]);
    assert_eq!(x.argmin(1, false).to_vec::<i64>().unwrap(), [0, 2, 0]);
    assert_eq!(x.argmax(0, true).dims(), &[1, 3]);
    assert_eq!(x.argmax(0, true).to_vec::<i64>().unwrap(), [2, 0, 2]);
    assert_eq!(x.argmax(-2, false).to_vec::<i64>().unwrap(), [2, 0, 2]);
    assert_eq!(
        x.argmax_all().item::<i64>().unwrap(),
        6,
        "first NaN of the flattened tensor"
    );
    assert_eq!(
        x.argmin_all().item::<i64>().unwrap(),
        6,
        "NaN is also the minimum"
    );
    let y = Tensor::from_slice(&[2i32, 9, 9, -4, -4]);
    assert_eq!(y.argmax_all().item::<i64>().unwrap(), 1);
    assert_eq!(y.argmin_all().item::<i64>().unwrap(), 3);
    let (v, i) = y.min_dim(0, false);
    assert_eq!(v.item::<i32>().unwrap(), -4);
    assert_eq!(i.item::<i64>().unwrap(), 3);
    let (v, i) = x.max_dim(1, true);
    assert_eq!(v.dims(), &[3, 1]);
    assert_eq!(i.dims(), &[3, 1]);
    let v = v.to_vec::<f32>().unwrap();
    assert!(v[0] == 7.0 && v[1] == 1.0 && v[2].is_nan(), "{v:?}");
    assert_eq!(i.to_vec::<i64>().unwrap(), [1, 0, 0]);
}

#[test]
fn var_and_std_are_unbiased_by_default() {
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
    // mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5.
    assert!(close(
        x.var(0, false).item::<f32>().unwrap() as f64,
        5.0 / 3.0,
        1e-6,
        0.0
    ));
    assert!(close(
        x.var_correction(0, 0, false).item::<f32>().unwrap() as f64,
        1.25,
        1e-6,
        0.0
    ));
    assert!(close(
        x.std(0, false).item::<f32>().unwrap() as f64,
        (5.0f64 / 3.0).sqrt(),
        1e-6,
        0.0
    ));
    // std_correction(c) = sqrt(5 / (4 - c)), as torch.std(x, correction=c).
    for (c, want) in [
        (0, 1.25f64.sqrt()),
        (1, (5.0f64 / 3.0).sqrt()),
        (2, 2.5f64.sqrt()),
    ] {
        let got = x.std_correction(0, c, false).item::<f32>().unwrap() as f64;
        assert!(
            close(got, want, 1e-6, 0.0),
            "std_correction({c}): {got} vs {want}"
        );
    }
    // n - correction <= 0 → inf (5 / 0), as PyTorch.
    let inf = x.std_correction(0, 4, false).item::<f32>().unwrap();
    assert!(inf.is_infinite() && inf > 0.0, "{inf}");
    // One element: n - 1 = 0 → NaN (PyTorch warns and returns NaN).
    assert!(
        Tensor::from_slice(&[3.0f32])
            .var(0, false)
            .item::<f32>()
            .unwrap()
            .is_nan()
    );
    // Two-pass: a large offset does not destroy the variance.
    let y = Tensor::from_slice(&[1e4f32 + 1.0, 1e4 + 2.0, 1e4 + 3.0]);
    assert!(close(
        y.var(0, false).item::<f32>().unwrap() as f64,
        1.0,
        1e-4,
        0.0
    ));
    // f64 precision.
    let d = Tensor::from_slice(&[0.1f64, 0.2, 0.4]);
    let want = naive_var(&[0.1, 0.2, 0.4], 1);
    assert!(close(
        d.var(0, false).item::<f64>().unwrap(),
        want,
        1e-14,
        0.0
    ));
}

#[test]
fn logsumexp_is_stable() {
    let x = Tensor::from_vec(
        vec![
            80.0f32,
            80.0,
            -80.0,
            -80.0,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::INFINITY,
            1.0,
            f32::NEG_INFINITY,
            0.0,
        ],
        [5, 2],
    );
    let r = x.logsumexp(1, false).to_vec::<f32>().unwrap();
    let ln2 = std::f64::consts::LN_2;
    assert!(
        close(r[0] as f64, 80.0 + ln2, 1e-6, 0.0),
        "logsumexp(80, 80) = {}",
        r[0]
    );
    assert!(
        close(r[1] as f64, -80.0 + ln2, 1e-6, 0.0),
        "logsumexp(-80, -80) = {}",
        r[1]
    );
    assert_eq!(r[2], f32::NEG_INFINITY, "a row of -inf");
    assert_eq!(r[3], f32::INFINITY, "a row with +inf");
    assert_eq!(r[4], 0.0, "logsumexp(-inf, 0)");
    let k = x.logsumexp(-1, true);
    assert_eq!(k.dims(), &[5, 1]);
    // Integers are computed in f32.
    let i = Tensor::from_slice(&[0i64, 0]).logsumexp(0, false);
    assert_eq!(i.dtype(), DType::F32);
    assert!(close(i.item::<f32>().unwrap() as f64, ln2, 1e-6, 0.0));
    let nan = Tensor::from_slice(&[f32::NAN, f32::INFINITY]).logsumexp(0, false);
    assert!(nan.item::<f32>().unwrap().is_nan(), "NaN wins over +inf");
}

#[test]
fn reductions_over_several_axes_with_keepdim() {
    let x = Tensor::from_vec((0..24).map(|v| v as f32).collect(), [2, 3, 4]);
    let s = x.sum([0, 2], true);
    assert_eq!(s.dims(), &[1, 3, 1]);
    // Row j sums 4j..4j+3 in both blocks: 2 * (16j + 6) + 12 * 4 = 32j + 60.
    assert_eq!(s.to_vec::<f32>().unwrap(), [60.0, 92.0, 124.0]);
    assert_eq!(
        x.sum([-1, 0], false).to_vec::<f32>().unwrap(),
        [60.0, 92.0, 124.0]
    );
    assert_eq!(x.sum(vec![2usize, 0], false).dims(), &[3]);
    assert_eq!(x.sum(&[1i64][..], false).dims(), &[2, 4]);
    assert_eq!(x.max(All, true).dims(), &[1, 1, 1]);
    assert_eq!(x.max(All, false).item::<f32>().unwrap(), 23.0);
    assert_eq!(x.mean(All, false).item::<f32>().unwrap(), 11.5);
    // A rank-0 tensor reduces to itself.
    let s = Tensor::scalar(4.0f32);
    assert_eq!(s.sum(All, false).item::<f32>().unwrap(), 4.0);
    assert_eq!(s.max(All, true).dims(), &[] as &[usize]);
}

fn bools(t: &Tensor) -> Vec<bool> {
    assert_eq!(t.dtype(), DType::Bool);
    t.to_vec::<bool>().unwrap()
}
