//! The per-op fast paths (`src/dispatch.rs`, `exec::realize_eager`, the remembered graphs of
//! the executor) and their fall-backs: an op signature or a graph seen before runs the plan
//! found the first time, and anything that differs — a shape, a dtype, a constant, which
//! inputs are the same tensor, an input not yet computed, a plan the plan cache dropped —
//! gets its own kernel, with the values of the slow path. (Its own test binary: the mode and
//! the counters are process-wide.)

mod common;

use std::sync::{Mutex, MutexGuard};

use metajit::{DType, Mode, Stats, Tensor};
use proptest::prelude::*;

/// The tests of this binary take turns (mode and counters are process-wide).
static TURN: Mutex<()> = Mutex::new(());

/// Holds the turn in `mode`; compiled mode again when dropped (also after a panic).
struct InMode(#[allow(dead_code)] MutexGuard<'static, ()>);

impl InMode {
    fn new(mode: Mode) -> InMode {
        let g = TURN.lock().unwrap_or_else(|p| p.into_inner());
        metajit::set_mode(mode);
        InMode(g)
    }
}

impl Drop for InMode {
    fn drop(&mut self) {
        metajit::set_mode(Mode::Compiled);
    }
}

fn delta(a: Stats, b: Stats) -> Stats {
    b.since(&a)
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap_or_else(|e| panic!("{e}"))
}

fn realized(v: Vec<f32>, shape: &[usize]) -> Tensor {
    let t = Tensor::from_vec(v, shape.to_vec());
    t.realize().unwrap_or_else(|e| panic!("{e}"));
    t
}

/// One op per case, all on the same op kind (`add`) or close to it, each with the values a
/// plain loop gives.
fn cases() -> Vec<(&'static str, Tensor, Vec<f64>)> {
    let x4 = realized(vec![1.0, 2.0, 3.0, 4.0], &[4]);
    let y4 = realized(vec![10.0, 20.0, 30.0, 40.0], &[4]);
    let x3 = realized(vec![1.0, 2.0, 3.0], &[3]);
    let y3 = realized(vec![0.5, 0.25, 0.125], &[3]);
    let m23 = realized(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let m22 = realized(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let x4d = x4.cast(DType::F64);
    let y4d = y4.cast(DType::F64);
    let x4i = x4.cast(DType::I32);
    let y4i = y4.cast(DType::I32);
    vec![
        ("x + y", &x4 + &y4, vec![11.0, 22.0, 33.0, 44.0]),
        ("x + x", &x4 + &x4, vec![2.0, 4.0, 6.0, 8.0]),
        ("y + x", &y4 + &x4, vec![11.0, 22.0, 33.0, 44.0]),
        ("x + y over [3]", &x3 + &y3, vec![1.5, 2.25, 3.125]),
        (
            "[2, 3] + [3]",
            &m23 + &x3,
            vec![2.0, 4.0, 6.0, 5.0, 7.0, 9.0],
        ),
        ("f64 x + y", &x4d + &y4d, vec![11.0, 22.0, 33.0, 44.0]),
        ("i32 x + y", &x4i + &y4i, vec![11.0, 22.0, 33.0, 44.0]),
        ("x - y", &x4 - &y4, vec![-9.0, -18.0, -27.0, -36.0]),
        ("x * 2", &x4 * 2.0, vec![2.0, 4.0, 6.0, 8.0]),
        ("x * 3", &x4 * 3.0, vec![3.0, 6.0, 9.0, 12.0]),
        ("x + 2", &x4 + 2.0, vec![3.0, 4.0, 5.0, 6.0]),
        // One op kind and shape, other parameters: index maps and constants.
        ("transpose", m22.transpose(0, 1), vec![1.0, 3.0, 2.0, 4.0]),
        ("flip rows", m22.flip([0]), vec![3.0, 4.0, 1.0, 2.0]),
        ("flip columns", m22.flip([1]), vec![2.0, 1.0, 4.0, 3.0]),
        ("full 2", Tensor::full([3], 2.0), vec![2.0; 3]),
        ("full -1", Tensor::full([3], -1.0), vec![-1.0; 3]),
        (
            "x.maximum(y)",
            x4.maximum(&(&y4 * -1.0)),
            vec![1.0, 2.0, 3.0, 4.0],
        ),
    ]
}

#[test]
fn each_eager_signature_gets_its_own_kernel_and_a_repeat_plans_nothing() {
    let _m = InMode::new(Mode::Eager);
    let first = cases();
    for (name, t, want) in &first {
        assert!(t.is_realized(), "{name}: eager runs at once");
        assert_eq!(&f64s(t), want, "{name}");
    }
    // Every signature again: the fast path runs each op's remembered plan.
    let before = metajit::stats();
    let again = cases();
    let d = delta(before, metajit::stats());
    for (name, t, want) in &again {
        assert_eq!(&f64s(t), want, "{name} (again)");
    }
    assert_eq!(
        (d.kernels_compiled, d.plan_misses),
        (0, 0),
        "a repeated op compiles and schedules nothing: {d:?}"
    );
    assert!(d.plan_hits >= again.len() as u64, "{d:?}");
}

#[test]
fn an_op_over_an_input_not_computed_takes_the_slow_path() {
    let _m = InMode::new(Mode::Compiled);
    let x = realized(vec![0.0, 1.0, 2.0], &[3]);
    let y = realized(vec![1.0, 1.0, 1.0], &[3]);
    let lazy = x.exp();
    assert!(!lazy.is_realized());
    metajit::set_mode(Mode::Eager);
    // The signature `f32[3] + f32[3]` runs once on computed inputs (it is remembered) ...
    let warm = &x + &y;
    assert_eq!(f64s(&warm), vec![1.0, 2.0, 3.0]);
    // ... and then over a pending input: its graph is the exp and the add, not the one-op graph.
    let z = &lazy + &y;
    assert!(z.is_realized());
    let want: Vec<f64> = [0.0f32, 1.0, 2.0]
        .iter()
        .map(|v| (v.exp() + 1.0) as f64)
        .collect();
    assert_eq!(f64s(&z), want);
}

#[test]
fn a_plan_the_plan_cache_dropped_is_scheduled_again() {
    let _m = InMode::new(Mode::Eager);
    let x = realized(vec![1.0, 2.0], &[2]);
    let y = realized(vec![3.0, 5.0], &[2]);
    // Warm both signatures and their kernels.
    let _ = (&x + &y, &x * &y);
    let old = metajit::set_plan_cache_capacity(1);
    for round in 0..3 {
        let before = metajit::stats();
        let s = &x + &y;
        let p = &x * &y;
        let d = delta(before, metajit::stats());
        assert_eq!(f64s(&s), vec![4.0, 7.0], "round {round}");
        assert_eq!(f64s(&p), vec![3.0, 10.0], "round {round}");
        // Each evicts the other's plan: the remembered plan is not used once it is gone.
        assert_eq!(d.plan_misses, 2, "round {round}: {d:?}");
        assert_eq!(d.kernels_compiled, 0, "round {round}: kernels stay cached");
        assert!(metajit::plan_cache_len() <= 1);
    }
    metajit::set_plan_cache_capacity(old);
}

#[test]
fn a_graph_realized_again_is_remembered_exactly() {
    let _m = InMode::new(Mode::Compiled);
    // The same structure with other constants and extents: constant folding of `c * c` and
    // the extents must come from this graph, never from a remembered one.
    let run = |n: usize, c: f64| {
        let x = Tensor::from_vec((0..n).map(|i| i as f32).collect::<Vec<_>>(), [n]);
        let y = ((&x + c) * c * c).exp().sum_all();
        let want: f64 = (0..n)
            .map(|i| ((i as f32 + c as f32) * c as f32 * c as f32).exp() as f64)
            .sum();
        let got = y.item::<f32>().unwrap_or_else(|e| panic!("{e}")) as f64;
        assert!(
            common::close(got, want, 1e-5, 1e-6),
            "n = {n}, c = {c}: {got} vs {want}"
        );
    };
    for &(n, c) in &[(4, 0.5), (4, 0.25), (7, 0.5), (4, 0.5), (7, 0.25)] {
        run(n, c);
    }
    let before = metajit::stats();
    for &(n, c) in &[(4, 0.5), (4, 0.25), (7, 0.5), (7, 0.25)] {
        run(n, c);
    }
    let d = delta(before, metajit::stats());
    assert_eq!((d.plan_misses, d.kernels_compiled), (0, 0), "{d:?}");
}

/// A chain of element-wise ops over `x` and `y` (operation codes from the strategy), the same
/// in every mode.
fn chain(x: &Tensor, y: &Tensor, ops: &[(u8, f64)]) -> Tensor {
    let mut t = x.clone();
    for &(op, c) in ops {
        t = match op % 6 {
            0 => &t + y,
            1 => &t * &t,
            2 => &t - c,
            3 => t.maximum(y),
            4 => (&t * c).tanh(),
            _ => &t + &t,
        };
    }
    t
}

fn chain_values(dtype: DType, shape: &[usize], ops: &[(u8, f64)], mode: Mode) -> Vec<f64> {
    metajit::set_mode(mode);
    let n: usize = shape.iter().product();
    let x = Tensor::from_vec(
        (0..n).map(|i| (i as f32) * 0.25 - 1.0).collect(),
        shape.to_vec(),
    )
    .cast(dtype);
    let y = Tensor::from_vec(
        (0..n).map(|i| 0.5 - (i as f32) * 0.125).collect(),
        shape.to_vec(),
    )
    .cast(dtype);
    metajit::realize_all(&[&x, &y]).unwrap_or_else(|e| panic!("{e}"));
    let out = f64s(&chain(&x, &y, ops));
    metajit::set_mode(Mode::Compiled);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..common::config() })]

    /// Eager (twice: the second time every op takes the fast path) and compiled mode agree
    /// bitwise on random element-wise chains over random shapes and dtypes.
    #[test]
    fn fast_paths_agree_with_the_slow_ones(
        dtype in prop_oneof![Just(DType::F32), Just(DType::F64)],
        shape in prop::collection::vec(1usize..4, 0..3),
        ops in prop::collection::vec((0u8..6, prop_oneof![Just(0.5f64), Just(1.5), Just(-2.0)]), 1..8),
    ) {
        let _m = InMode::new(Mode::Compiled);
        let compiled = chain_values(dtype, &shape, &ops, Mode::Compiled);
        let eager = chain_values(dtype, &shape, &ops, Mode::Eager);
        let again = chain_values(dtype, &shape, &ops, Mode::Eager);
        prop_assert_eq!(compiled.len(), eager.len());
        for (k, ((c, e), a)) in compiled.iter().zip(&eager).zip(&again).enumerate() {
            prop_assert!(
                c.to_bits() == e.to_bits() && e.to_bits() == a.to_bits(),
                "element {}: compiled {} eager {} again {}", k, c, e, a
            );
        }
    }
}
