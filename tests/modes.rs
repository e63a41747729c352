//! Eager and compiled modes give the same results. (Its own test binary: the mode is a
//! process-wide setting.)

use metajit::{Mode, Tensor};

fn workload() -> Vec<f32> {
    metajit::manual_seed(7);
    let x = Tensor::randn([5, 6]);
    let y = (&x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh();
    let z = (&y - y.logsumexp(-1, true)).exp().sum(0, false);
    let w = x.transpose(0, 1).flip([1]).slice(0, 1, 5, 2).mean(1, true);
    let mut out = z.to_vec::<f32>().unwrap();
    out.extend(w.to_vec::<f32>().unwrap());
    out
}

#[test]
fn eager_equals_compiled() {
    metajit::set_mode(Mode::Compiled);
    let lazy = workload();
    metajit::set_mode(Mode::Eager);
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).exp();
    assert!(x.is_realized(), "eager mode runs each op at once");
    let eager = workload();
    // A matmul is one op in eager mode too (one GEMM), not a materialised broadcast product.
    let a = Tensor::randn([64, 32]);
    let b = Tensor::randn([32, 48]);
    let before = metajit::stats().kernel_runs;
    let c = a.matmul(&b);
    assert!(c.is_realized());
    let runs = metajit::stats().kernel_runs - before;
    assert_eq!(
        runs, 1,
        "eager matmul should be a single GEMM, ran {runs} kernels"
    );
    metajit::set_mode(Mode::Compiled);
    assert_eq!(lazy.len(), eager.len());
    for (a, b) in lazy.iter().zip(&eager) {
        assert_eq!(a.to_bits(), b.to_bits(), "{lazy:?} vs {eager:?}");
    }
}
