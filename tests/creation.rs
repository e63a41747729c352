//! Creation ops, host conversion and printing.
//!
//! Constants, ranges, identity matrices and random tensors against values written out here;
//! `from_vec`/`item`/`to_vec` round trips; and `Display`, which mimics PyTorch's printing
//! (expected strings are what `print(torch.tensor(...))` shows, with metajit's own dtype names
//! and lower-case bools as `src/display.rs` specifies).

use std::sync::{Mutex, MutexGuard};

use half::f16;
use metajit::{DType, Tensor, manual_seed};

/// The global random generator is shared by every test of this binary: tests that seed it or
/// draw from it hold this lock, so that a seeded sequence is not interleaved with another
/// test's draws.
fn rng_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn f32s(t: &Tensor) -> Vec<f32> {
    assert_eq!(t.dtype(), DType::F32);
    t.to_vec::<f32>().unwrap()
}

fn i64s(t: &Tensor) -> Vec<i64> {
    assert_eq!(t.dtype(), DType::I64);
    t.to_vec::<i64>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Constants.

#[test]
fn zeros_ones_full() {
    let z = Tensor::zeros([2, 3]);
    assert_eq!((z.dims(), z.dtype()), (&[2usize, 3][..], DType::F32));
    assert_eq!(f32s(&z), [0.0; 6]);
    assert_eq!(f32s(&Tensor::ones([4])), [1.0; 4]);
    assert_eq!(f32s(&Tensor::full([2], -2.5)), [-2.5, -2.5]);
    let s = Tensor::ones([] as [usize; 0]);
    assert_eq!(s.rank(), 0);
    assert_eq!(s.item::<f32>().unwrap(), 1.0);
    let e = Tensor::zeros([3, 0]);
    assert_eq!(e.numel(), 0);
    assert!(f32s(&e).is_empty());
}

#[test]
fn full_dtype_converts_the_value() {
    let t = Tensor::full_dtype([3], 2.7, DType::I32);
    assert_eq!(t.dtype(), DType::I32);
    assert_eq!(t.to_vec::<i32>().unwrap(), [2; 3]);
    assert_eq!(
        Tensor::full_dtype([1], -2.7, DType::I64)
            .to_vec::<i64>()
            .unwrap(),
        [-2]
    );
    assert_eq!(
        Tensor::full_dtype([1], 300.0, DType::U8)
            .to_vec::<u8>()
            .unwrap(),
        [255]
    );
    assert_eq!(
        Tensor::full_dtype([2], 0.5, DType::Bool)
            .to_vec::<bool>()
            .unwrap(),
        [true; 2]
    );
    assert_eq!(
        Tensor::full_dtype([1], 0.1, DType::F64)
            .to_vec::<f64>()
            .unwrap(),
        [0.1]
    );
    let h = Tensor::full_dtype([1], 1.0 / 3.0, DType::F16)
        .to_vec::<f16>()
        .unwrap();
    assert_eq!(h, [f16::from_f64(1.0 / 3.0)]);
    assert_eq!(
        Tensor::zeros_dtype([2], DType::I64)
            .to_vec::<i64>()
            .unwrap(),
        [0, 0]
    );
    assert_eq!(
        Tensor::ones_dtype([2], DType::Bool)
            .to_vec::<bool>()
            .unwrap(),
        [true, true]
    );
}

#[test]
fn like_constructors_copy_shape_and_dtype() {
    let x = Tensor::from_vec(vec![1i32, 2, 3, 4, 5, 6], [3, 2]);
    for (name, t, want) in [
        ("zeros_like", x.zeros_like(), 0),
        ("ones_like", x.ones_like(), 1),
        ("full_like", x.full_like(7.9), 7),
    ] {
        assert_eq!(t.dims(), &[3, 2], "{name}");
        assert_eq!(t.dtype(), DType::I32, "{name}");
        assert_eq!(t.to_vec::<i32>().unwrap(), [want; 6], "{name}");
    }
    let b = Tensor::from_slice(&[false, true]);
    assert_eq!(b.ones_like().to_vec::<bool>().unwrap(), [true, true]);
    let d = Tensor::from_slice(&[1.0f64]).full_like(0.1);
    assert_eq!(d.to_vec::<f64>().unwrap(), [0.1]);
}

// ---------------------------------------------------------------------------------------------
// Ranges.

#[test]
fn arange_counts_with_positive_and_negative_steps() {
    assert_eq!(i64s(&Tensor::arange(1, 10, 3)), [1, 4, 7]);
    assert_eq!(i64s(&Tensor::arange(0, 5, 1)), [0, 1, 2, 3, 4]);
    assert_eq!(i64s(&Tensor::arange(10, 0, -3)), [10, 7, 4, 1]);
    assert_eq!(i64s(&Tensor::arange(0, -5, -1)), [0, -1, -2, -3, -4]);
    assert_eq!(i64s(&Tensor::arange(-3, 3, 2)), [-3, -1, 1]);
    assert_eq!(i64s(&Tensor::arange(0, 1, 100)), [0]);
    let e = Tensor::arange(5, 5, 1);
    assert_eq!(e.dims(), &[0]);
    assert!(i64s(&e).is_empty());
    assert!(i64s(&Tensor::arange(5, 5, -2)).is_empty());
    let big = Tensor::arange(i64::MAX - 2, i64::MAX, 1);
    assert_eq!(i64s(&big), [i64::MAX - 2, i64::MAX - 1]);
}

#[test]
fn arange_f32_is_start_plus_i_times_step() {
    assert_eq!(
        f32s(&Tensor::arange_f32(0.0, 1.0, 0.25)),
        [0.0, 0.25, 0.5, 0.75]
    );
    assert_eq!(
        f32s(&Tensor::arange_f32(1.0, 0.0, -0.25)),
        [1.0, 0.75, 0.5, 0.25]
    );
    // ceil((0.3 - 0) / 0.1) = 3 elements, as torch.arange(0, 0.3, 0.1).
    let t = f32s(&Tensor::arange_f32(0.0, 0.3, 0.1));
    assert_eq!(t, [0.0, 0.1, 0.2]);
    // ceil(1 / 0.3) = 4; each element is start + i*step in f64, rounded once.
    let t = f32s(&Tensor::arange_f32(-0.5, 0.5, 0.3));
    let want: Vec<f32> = (0..4).map(|i| (-0.5 + i as f64 * 0.3) as f32).collect();
    assert_eq!(t, want);
    assert!(f32s(&Tensor::arange_f32(2.0, 2.0, 1.0)).is_empty());
}

#[test]
fn linspace_hits_both_endpoints_exactly() {
    assert_eq!(
        f32s(&Tensor::linspace(0.0, 1.0, 5)),
        [0.0, 0.25, 0.5, 0.75, 1.0]
    );
    let (a, b) = (-1.3, 2.7);
    for steps in [3usize, 7, 10, 101] {
        let t = f32s(&Tensor::linspace(a, b, steps));
        assert_eq!(t.len(), steps);
        assert_eq!(t[0], a as f32, "first of {steps}");
        assert_eq!(t[steps - 1], b as f32, "last of {steps}");
        let step = (b - a) / (steps - 1) as f64;
        for (i, &v) in t.iter().enumerate() {
            let want = a + i as f64 * step;
            assert!(
                (v as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "[{i}] {v} vs {want}"
            );
        }
        assert!(t.windows(2).all(|w| w[0] < w[1]), "increasing: {t:?}");
    }
    assert_eq!(f32s(&Tensor::linspace(3.0, 9.0, 1)), [3.0]);
    assert_eq!(f32s(&Tensor::linspace(3.0, 9.0, 2)), [3.0, 9.0]);
    assert_eq!(f32s(&Tensor::linspace(5.0, -5.0, 3)), [5.0, 0.0, -5.0]);
}

#[test]
fn linspace_with_zero_steps_is_empty() {
    // torch.linspace(0, 1, 0) == tensor([]). (In a debug build `steps - 1` underflows.)
    let t = Tensor::linspace(0.0, 1.0, 0);
    assert_eq!(t.dims(), &[0]);
    assert!(f32s(&t).is_empty());
}

#[test]
fn eye_square_and_rectangular() {
    let e = Tensor::eye(3, 3);
    assert_eq!(e.dims(), &[3, 3]);
    assert_eq!(f32s(&e), [1., 0., 0., 0., 1., 0., 0., 0., 1.]);
    assert_eq!(f32s(&Tensor::eye(2, 4)), [1., 0., 0., 0., 0., 1., 0., 0.]);
    assert_eq!(f32s(&Tensor::eye(3, 2)), [1., 0., 0., 1., 0., 0.]);
    let z = Tensor::eye(0, 3);
    assert_eq!(z.dims(), &[0, 3]);
    assert!(f32s(&z).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Random tensors.

#[test]
fn rand_is_uniform_in_unit_interval_and_replays_after_manual_seed() {
    let _g = rng_lock();
    manual_seed(42);
    let a = f32s(&Tensor::rand([1000]));
    let a2 = f32s(&Tensor::rand([1000]));
    manual_seed(42);
    let b = f32s(&Tensor::rand([1000]));
    let b2 = f32s(&Tensor::rand([1000]));
    assert_eq!(a, b, "same seed, same first tensor");
    assert_eq!(a2, b2, "same seed, same second tensor");
    assert_ne!(a, a2, "consecutive calls differ");
    manual_seed(43);
    assert_ne!(a, f32s(&Tensor::rand([1000])), "another seed differs");
    assert!(a.iter().all(|&v| (0.0..1.0).contains(&v)), "range [0, 1)");
    // Not constant within a tensor either.
    let distinct: std::collections::BTreeSet<u32> = a.iter().map(|v| v.to_bits()).collect();
    assert!(
        distinct.len() > 990,
        "only {} distinct values of 1000",
        distinct.len()
    );
    // Realizing twice gives the same values (the node is realized once).
    let t = Tensor::rand([8]);
    assert_eq!(f32s(&t), f32s(&t));
}

#[test]
fn rand_moments() {
    let _g = rng_lock();
    manual_seed(7);
    let x = f32s(&Tensor::rand([100_000]));
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    // Standard errors: 0.0009 for the mean, 0.0003 for the variance.
    assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    assert!((var - 1.0 / 12.0).abs() < 0.002, "variance {var}");
}

#[test]
fn randn_moments() {
    let _g = rng_lock();
    manual_seed(1234);
    let t = Tensor::randn([100_000]);
    assert_eq!(t.dtype(), DType::F32);
    let x = f32s(&t);
    assert!(x.iter().all(|v| v.is_finite()));
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    // Standard errors: 0.003 for the mean, 0.0045 for the variance.
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((var - 1.0).abs() < 0.03, "variance {var}");
    // Tails: P(|z| > 3) ≈ 0.27 %.
    let tail = x.iter().filter(|v| v.abs() > 3.0).count() as f64 / n;
    assert!((0.0015..0.004).contains(&tail), "tail fraction {tail}");
    manual_seed(1234);
    assert_eq!(
        f32s(&Tensor::randn([16])),
        x[..16],
        "randn replays after manual_seed"
    );
}

#[test]
fn rand_like_and_randn_like_follow_the_float_dtype() {
    let _g = rng_lock();
    let d = Tensor::zeros_dtype([3, 2], DType::F64);
    let r = d.rand_like();
    assert_eq!((r.dims(), r.dtype()), (&[3usize, 2][..], DType::F64));
    assert!(
        r.to_vec::<f64>()
            .unwrap()
            .iter()
            .all(|v| (0.0..1.0).contains(v))
    );
    let i = Tensor::zeros_dtype([4], DType::I32);
    let n = i.randn_like();
    assert_eq!((n.dims(), n.dtype()), (&[4usize][..], DType::F32));
    let h = Tensor::zeros_dtype([4], DType::F16).randn_like();
    assert_eq!(h.dtype(), DType::F16);
}

// ---------------------------------------------------------------------------------------------
// Host conversion.

#[test]
fn from_vec_from_slice_scalar_item_to_vec() {
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
    assert_eq!((t.dims(), t.rank(), t.numel()), (&[2usize, 3][..], 2, 6));
    assert_eq!((t.size(0), t.size(-1)), (2, 3));
    assert_eq!(f32s(&t), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(t.to_f64_vec().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert!(t.is_realized(), "host tensors are realized from the start");

    let s = Tensor::from_slice(&[7u8, 8]);
    assert_eq!((s.dims(), s.dtype()), (&[2usize][..], DType::U8));
    assert_eq!(s.to_vec::<u8>().unwrap(), [7, 8]);

    let c = Tensor::scalar(-3i64);
    assert_eq!((c.rank(), c.dtype()), (0, DType::I64));
    assert_eq!(c.item::<i64>().unwrap(), -3);
    assert_eq!(
        Tensor::from_vec(vec![2.5f64], [1, 1])
            .item::<f64>()
            .unwrap(),
        2.5
    );
    assert!(Tensor::scalar(true).item::<bool>().unwrap());
    assert_eq!(
        Tensor::scalar(f16::from_f32(0.5))
            .item::<f16>()
            .unwrap()
            .to_f32(),
        0.5
    );

    // A lazy result realizes on demand.
    let y = t.mul(2.0f64).sum_all();
    assert!(!y.is_realized());
    assert_eq!(y.item::<f32>().unwrap(), 42.0);
    assert!(y.is_realized());
    let e = Tensor::from_vec(Vec::<i32>::new(), [0, 4]);
    assert_eq!(e.to_vec::<i32>().unwrap(), Vec::<i32>::new());
}

#[test]
fn debug_format_computes_nothing() {
    let t = Tensor::ones([2, 3]).add(1.0f64);
    assert_eq!(format!("{t:?}"), "Tensor[f32; 2, 3] (lazy)");
    assert!(!t.is_realized());
}

// ---------------------------------------------------------------------------------------------
// Display.

#[test]
fn display_floats_like_pytorch() {
    let t = Tensor::from_vec((0..8).map(|v| v as f32).collect(), [2, 2, 2]);
    assert_eq!(
        t.to_string(),
        "tensor([[[0., 1.],\n         [2., 3.]],\n\n        [[4., 5.],\n         [6., 7.]]])"
    );
    let t = Tensor::from_slice(&[0.1f32, -2.25]);
    assert_eq!(t.to_string(), "tensor([ 0.1000, -2.2500])");
    let t = Tensor::from_slice(&[f32::INFINITY, -1.5, f32::NAN]);
    assert_eq!(t.to_string(), "tensor([    inf, -1.5000,     nan])");
    // Scientific when the magnitudes leave [1e-4, 1e8).
    let t = Tensor::from_slice(&[123_456_789.0f32, 1.5]);
    assert_eq!(t.to_string(), "tensor([1.2346e+08, 1.5000e+00])");
    let t = Tensor::from_slice(&[-1e-5f32, 0.5]);
    assert_eq!(t.to_string(), "tensor([-1.0000e-05,  5.0000e-01])");
    assert_eq!(Tensor::scalar(2.0f64).to_string(), "tensor(2., dtype=f64)");
    assert_eq!(Tensor::scalar(0.25f32).to_string(), "tensor(0.2500)");
    assert_eq!(
        Tensor::from_slice(&[0.0f32, 0.0]).to_string(),
        "tensor([0., 0.])"
    );
    let h = Tensor::from_slice(&[f16::from_f32(1.5), f16::from_f32(-2.0)]);
    assert_eq!(h.to_string(), "tensor([ 1.5000, -2.0000], dtype=f16)");
    let m = Tensor::from_vec(vec![1.5f32, -20.25, 3.0, 4.0], [2, 2]);
    assert_eq!(
        m.to_string(),
        "tensor([[  1.5000, -20.2500],\n        [  3.0000,   4.0000]])"
    );
}

#[test]
fn display_integers_and_bools() {
    assert_eq!(
        Tensor::arange(-2, 3, 1).to_string(),
        "tensor([-2, -1,  0,  1,  2])"
    );
    let t = Tensor::from_vec(vec![1i32, 22, -3, 4], [2, 2]);
    assert_eq!(
        t.to_string(),
        "tensor([[ 1, 22],\n        [-3,  4]], dtype=i32)"
    );
    assert_eq!(
        Tensor::from_slice(&[7u8]).to_string(),
        "tensor([7], dtype=u8)"
    );
    assert_eq!(
        Tensor::arange(0, 3, 1).gt(0).to_string(),
        "tensor([false,  true,  true])"
    );
    assert_eq!(Tensor::scalar(5i64).to_string(), "tensor(5)");
    assert_eq!(Tensor::scalar(false).to_string(), "tensor(false)");
    let e = Tensor::from_vec(Vec::<f32>::new(), [2, 0, 3]);
    assert_eq!(e.to_string(), "tensor([], size=(2, 0, 3))");
}

#[test]
fn display_integer_valued_floats_switch_to_scientific_over_a_wide_range() {
    // PyTorch's _Formatter applies the 1000× rule in int mode too:
    // print(torch.tensor([1., 2000.])) → tensor([1.0000e+00, 2.0000e+03])
    let t = Tensor::from_slice(&[1.0f32, 2000.0]);
    assert_eq!(t.to_string(), "tensor([1.0000e+00, 2.0000e+03])");
    // ... but not within 1000×.
    let t = Tensor::from_slice(&[1.0f32, 1000.0]);
    assert_eq!(t.to_string(), "tensor([   1., 1000.])");
}

#[test]
fn display_width_ignores_non_finite_values() {
    // PyTorch measures the width over the nonzero finite values only:
    // print(torch.tensor([1., float('inf')])) → tensor([1., inf])
    assert_eq!(
        Tensor::from_slice(&[1.0f32, f32::INFINITY]).to_string(),
        "tensor([1., inf])"
    );
    assert_eq!(
        Tensor::from_slice(&[f32::NAN, 2.0]).to_string(),
        "tensor([nan, 2.])"
    );
}

#[test]
fn display_of_empty_vectors() {
    // print(torch.tensor([])) → tensor([]); the size is printed only when it is not (0,),
    // and the dtype of an empty tensor whenever it is not the default float.
    assert_eq!(
        Tensor::from_vec(Vec::<f32>::new(), [0]).to_string(),
        "tensor([])"
    );
    assert_eq!(Tensor::arange(0, 0, 1).to_string(), "tensor([], dtype=i64)");
}

#[test]
fn display_summarises_large_tensors() {
    // print(torch.arange(2000)): the ellipsis of a vector is " ..." joined with ", ", so two
    // spaces precede it.
    assert_eq!(
        Tensor::arange(0, 2000, 1).to_string(),
        "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])"
    );
    let t = Tensor::from_vec((0..1200i64).collect(), [40, 30]);
    let s = t.to_string();
    assert!(
        s.starts_with("tensor([[   0,    1,    2,  ...,   27,   28,   29],\n        [  30,"),
        "{s}"
    );
    assert!(
        s.contains(",\n        ...,\n        [1110, 1111, 1112,  ..., 1137, 1138, 1139],"),
        "{s}"
    );
}

#[test]
fn display_wraps_long_rows_at_80_columns() {
    // print(torch.arange(30)): elements per line = floor((80 - len("tensor(")) / (width + 2)).
    assert_eq!(
        Tensor::arange(0, 30, 1).to_string(),
        "tensor([ 0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15, 16, 17,\n        18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29])"
    );
}

#[test]
fn randint_covers_its_range_evenly_and_replays() {
    let _g = rng_lock();
    manual_seed(5);
    let t = Tensor::randint(-3, 7, [20_000]);
    assert_eq!(t.dtype(), DType::I64);
    let v = i64s(&t);
    let mut counts = [0usize; 10];
    for &x in &v {
        assert!((-3..7).contains(&x), "{x} outside [-3, 7)");
        counts[(x + 3) as usize] += 1;
    }
    // 2000 expected per value; 5 standard deviations is about ±212.
    assert!(
        counts.iter().all(|&c| (1780..2220).contains(&c)),
        "{counts:?}"
    );
    manual_seed(5);
    assert_eq!(i64s(&Tensor::randint(-3, 7, [20_000])), v);
    // A span of one is a constant; huge bounds stay in range.
    assert!(i64s(&Tensor::randint(4, 5, [10])).iter().all(|&x| x == 4));
    let big = i64s(&Tensor::randint(i64::MIN / 2, i64::MAX / 2, [100]));
    assert!(
        big.iter()
            .all(|&x| (i64::MIN / 2..i64::MAX / 2).contains(&x))
    );
}

#[test]
#[should_panic(expected = "bad arguments to randint: high 3 must exceed low 3")]
fn randint_with_an_empty_range() {
    let _ = Tensor::randint(3, 3, [2]);
}
