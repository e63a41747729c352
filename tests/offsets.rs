//! Slice offsets are runtime parameters, and the plan cache is checked and bounded, through the
//! executor's counters. One test function in its own binary: the counters are process-wide, and
//! parallel tests would disturb them.

use metajit::{Stats, Tensor};

/// The executor's counters accumulated while `f` runs, and its result.
fn count<T>(f: impl FnOnce() -> T) -> (Stats, T) {
    let b = metajit::stats();
    let r = f();
    let a = metajit::stats();
    let d = a.since(&b);
    (d, r)
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts that `f` at every offset after the first compiles nothing and reuses one plan.
fn reuses_plans(what: &str, offsets: &[usize], f: impl Fn(usize) -> Vec<f32>) {
    let _ = f(offsets[0]);
    for &o in &offsets[1..] {
        let (d, _) = count(|| f(o));
        assert_eq!(d.kernels_compiled, 0, "{what} at {o} compiled kernels");
        assert_eq!(d.plan_misses, 0, "{what} at {o} scheduled a new plan");
        assert!(d.plan_hits >= 1, "{what} at {o} reused no plan");
    }
}

#[test]
fn new_offsets_compile_nothing_and_the_plan_cache_is_bounded() {
    metajit::set_cache_mode(metajit::CacheMode::Memory);
    for mode in [metajit::Mode::Compiled, metajit::Mode::Eager] {
        metajit::set_mode(mode);
        let (rows, cols, b) = (64usize, 10usize, 8usize);
        let data: Vec<f32> = (0..rows * cols).map(|v| v as f32 * 0.5 - 7.0).collect();
        let x = Tensor::from_vec(data.clone(), [rows, cols]);
        let offsets: Vec<usize> = (0..rows / b).map(|i| i * b).collect();

        // Minibatches: x.narrow(0, i * b, b), fused with element-wise math and a reduction.
        reuses_plans("narrow rows", &offsets, |o| {
            let y = (x.narrow(0, o as isize, b) * 2.0 + 1.0).sum(1, false);
            let got = vals(&y);
            let want: Vec<f32> = (o..o + b)
                .map(|r| (0..cols).map(|c| data[r * cols + c] * 2.0 + 1.0).sum())
                .collect();
            assert_eq!(got, want, "narrow rows at {o}");
            got
        });
        // Columns, and strided slices.
        reuses_plans("narrow columns", &[0, 3, 6, 1], |o| {
            vals(&(x.narrow(1, o as isize, 4).relu()))
        });
        reuses_plans("strided slice", &[0, 1, 2, 5], |o| {
            vals(&x.slice(0, o as isize, o as isize + 40, 3))
        });
        // split and chunk: equal pieces at different offsets share plans and kernels.
        let pieces = x.split(16, 0);
        let (_, first) = count(|| vals(&(&pieces[0] * 3.0)));
        assert_eq!(first.len(), 16 * cols);
        for p in &pieces[1..] {
            let (d, _) = count(|| vals(&(p * 3.0)));
            assert_eq!((d.kernels_compiled, d.plan_misses), (0, 0), "split piece");
        }
        let chunks = x.chunk(4, 1); // 10 columns: 3, 3, 3, 1
        let _ = vals(&chunks[0].exp());
        for c in &chunks[1..3] {
            let (d, _) = count(|| vals(&c.exp()));
            assert_eq!((d.kernels_compiled, d.plan_misses), (0, 0), "chunk piece");
        }
        // cat places its pieces at runtime offsets: a new batch size compiles nothing.
        let cat = |n: usize| {
            let a = Tensor::ones([n, 3]);
            let c = Tensor::zeros([n + 2, 3]);
            vals(&(Tensor::cat(&[&a, &c], 0) * 2.0))
        };
        let _ = cat(4);
        let (d, v) = count(|| cat(7));
        assert_eq!(d.kernels_compiled, 0, "cat at a new size compiled kernels");
        assert_eq!(v.len(), 16 * 3);
        assert!(v[..21].iter().all(|&e| e == 2.0) && v[21..].iter().all(|&e| e == 0.0));
    }

    // A minibatch times a weight stays a GEMM (after a copy of the minibatch) at every offset.
    metajit::set_mode(metajit::Mode::Compiled);
    let (n, k, m, b) = (32usize, 6usize, 5usize, 8usize);
    let xd: Vec<f32> = (0..n * k).map(|v| (v % 7) as f32 - 3.0).collect();
    let wd: Vec<f32> = (0..k * m).map(|v| (v % 5) as f32 * 0.5).collect();
    let x = Tensor::from_vec(xd.clone(), [n, k]);
    let w = Tensor::from_vec(wd.clone(), [k, m]);
    reuses_plans("narrowed matmul", &[0, 8, 24, 16], |o| {
        let (d, got) = count(|| vals(&x.narrow(0, o as isize, b).matmul(&w)));
        assert_eq!(d.kernel_runs, 2, "a copy of the minibatch and a GEMM");
        let want: Vec<f32> = (0..b * m)
            .map(|e| {
                let (r, c) = (o + e / m, e % m);
                (0..k).map(|j| xd[r * k + j] * wd[j * m + c]).sum()
            })
            .collect();
        assert_eq!(got, want, "narrowed matmul at {o}");
        got
    });

    // The plan cache keeps at most its capacity (256 by default) of plans.
    assert_eq!(metajit::DEFAULT_PLAN_CACHE_CAPACITY, 256);
    assert_eq!(
        metajit::set_plan_cache_capacity(8),
        metajit::DEFAULT_PLAN_CACHE_CAPACITY
    );
    assert!(metajit::plan_cache_len() <= 8);
    let x = Tensor::randn([5]);
    x.realize().unwrap_or_else(|e| panic!("{e}"));
    // Chains of 1..=24 `exp`s: 24 distinct structures.
    let chain = |k: usize| {
        let mut y = x.clone();
        for _ in 0..k {
            y = y.exp();
        }
        vals(&y)
    };
    for k in 1..=24 {
        let (d, _) = count(|| chain(k));
        assert_eq!(d.plan_misses, 1, "chain {k} is a new structure");
        assert!(
            metajit::plan_cache_len() <= 8,
            "{} plans",
            metajit::plan_cache_len()
        );
    }
    // The 8 most recent are kept; an evicted one is scheduled again (its kernels are cached).
    let (d, _) = count(|| chain(24));
    assert_eq!((d.plan_hits, d.plan_misses), (1, 0));
    let (d, _) = count(|| chain(1));
    assert_eq!((d.plan_misses, d.kernels_compiled), (1, 0));
    metajit::set_plan_cache_capacity(metajit::DEFAULT_PLAN_CACHE_CAPACITY);
}
