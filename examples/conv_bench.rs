//! Times W5's conv2d forward (16x64x56x56, 64 out, 3x3, pad 1, with bias), the graph building
//! alone, and a small conv training step (16x32x28x28, 32 out, 3x3, pad 1: forward, a squared
//! loss, the input and weight gradients), printing medians and minima of the timed runs:
//! `cargo run --release --example conv_bench [-- reps]`. With `METAJIT_DEBUG=1` every kernel
//! run and GEMM prints its time.

use std::time::Instant;

use metajit::{Tensor, nn::functional as F};

/// Computes `t` and waits for its device (a device realize returns once enqueued).
fn run(t: Tensor) {
    t.realize().unwrap_or_else(|e| panic!("{e}"));
    metajit::synchronize().unwrap_or_else(|e| panic!("{e}"));
}

fn main() {
    metajit::set_cache_mode(metajit::CacheMode::Memory);
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let (n, c, side, o) = (16usize, 64usize, 56usize, 64usize);
    let x = Tensor::randn([n, c, side, side]);
    let w = Tensor::randn([o, c, 3, 3]) * 0.04;
    let b = Tensor::randn([o]);
    metajit::realize_all(&[&x, &w, &b]).unwrap_or_else(|e| panic!("{e}"));
    let f = || F::conv2d(&x, &w, Some(&b), (1, 1), (1, 1), (1, 1), 1);
    run(f());
    run(f());
    let mut t = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        run(f());
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mut build = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        let y = f();
        build.push(t0.elapsed().as_secs_f64() * 1e3);
        run(y);
    }
    build.sort_by(f64::total_cmp);
    println!(
        "graph building alone: median {:.3} ms",
        build[build.len() / 2]
    );
    t.sort_by(f64::total_cmp);
    println!(
        "W5 conv2d forward: median {:.3} ms, min {:.3} ms ({reps} runs)",
        t[t.len() / 2],
        t[0]
    );
    let xs = Tensor::randn([16, 32, 28, 28]).requires_grad_(true);
    let ws = (Tensor::randn([32, 32, 3, 3]) * 0.05).requires_grad_(true);
    metajit::realize_all(&[&xs, &ws]).unwrap_or_else(|e| panic!("{e}"));
    let step = || {
        let y = F::conv2d(&xs, &ws, None, (1, 1), (1, 1), (1, 1), 1);
        let g = metajit::autograd::grad(&[&y.square().sum_all()], &[&xs, &ws], None);
        metajit::realize_all(&[&g[0], &g[1]]).unwrap_or_else(|e| panic!("{e}"));
        metajit::synchronize().unwrap_or_else(|e| panic!("{e}"));
    };
    step();
    step();
    let mut t = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        step();
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    println!(
        "conv training step: median {:.3} ms, min {:.3} ms ({reps} runs)",
        t[t.len() / 2],
        t[0]
    );
}
