//! Kernel counts and compile counts, through the executor's counters. One test function in its
//! own binary: the counters are process-wide, and parallel tests would disturb them.

use metajit::Tensor;

/// Kernels launched and compiled while `f` runs.
fn count(f: impl FnOnce()) -> (u64, u64) {
    let before = metajit::stats();
    f();
    let after = metajit::stats();
    (
        after.kernel_runs - before.kernel_runs,
        after.kernels_compiled - before.kernels_compiled,
    )
}

fn w1(x: &Tensor) -> Tensor {
    (x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh()
}

fn softmax(x: &Tensor) -> Tensor {
    let m = x.max(-1, true);
    let e = (x - &m).exp();
    &e / e.sum(-1, true)
}

#[test]
fn fusion_kernel_counts_and_zero_recompiles_on_a_new_batch_size() {
    metajit::set_mode(metajit::Mode::Compiled);
    // Count real compiles: a warm disk cache from an earlier run would load the kernels instead.
    metajit::set_cache_mode(metajit::CacheMode::Memory);
    // W1 is one kernel.
    let x = Tensor::randn([4096]);
    x.realize().unwrap();
    let (runs, _) = count(|| {
        w1(&x).realize().unwrap();
    });
    assert_eq!(runs, 1, "W1 should be one kernel");

    // W2 (row softmax) is at most two kernels.
    let m = Tensor::randn([64, 128]);
    m.realize().unwrap();
    let (runs, _) = count(|| {
        softmax(&m).realize().unwrap();
    });
    assert!(runs <= 2, "softmax took {runs} kernels");

    // W3: full sum and column sum, one kernel each.
    let (runs, _) = count(|| {
        m.sum_all().realize().unwrap();
    });
    assert_eq!(runs, 1);
    let (runs, _) = count(|| {
        m.sum(0, false).realize().unwrap();
    });
    assert_eq!(runs, 1);

    // matmul + bias + relu: one GEMM and one fused epilogue kernel.
    let a = Tensor::randn([32, 48]);
    let wt = Tensor::randn([48, 24]);
    let bias = Tensor::randn([24]);
    metajit::realize_all(&[&a, &wt, &bias]).unwrap();
    let (runs, _) = count(|| {
        (a.matmul(&wt) + &bias).relu().realize().unwrap();
    });
    assert!(
        runs <= 2,
        "matmul+bias+relu took {runs} kernels (GEMM + epilogue expected)"
    );
    // The same through nn-style linear (x @ w.T + b).
    let w2 = Tensor::randn([24, 48]);
    w2.realize().unwrap();
    let (runs, _) = count(|| {
        a.linear(&w2, Some(&bias)).relu().realize().unwrap();
    });
    assert!(runs <= 2, "linear+relu took {runs} kernels");

    // A model-like step at batch 8, then at batch 5: the second compiles nothing.
    let w = Tensor::randn([16, 10]);
    let b = Tensor::randn([10]);
    w.realize().unwrap();
    b.realize().unwrap();
    let step = |batch: usize| {
        let x = Tensor::randn([batch, 16]);
        let h = (x.unsqueeze(2) * w.unsqueeze(0)).sum(1, false) + &b;
        let y = softmax(&h.relu());
        y.mean_all().item::<f32>().unwrap()
    };
    let (_, compiled_first) = count(|| {
        step(8);
    });
    assert!(compiled_first > 0);
    let (_, compiled_again) = count(|| {
        step(5);
    });
    assert_eq!(compiled_again, 0, "a new batch size must compile no kernel");
    let (_, compiled_big) = count(|| {
        step(33);
    });
    assert_eq!(compiled_big, 0, "a new batch size must compile no kernel");
}
