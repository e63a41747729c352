//! Times per-op dispatch (DESIGN §9 W8: 1000 dependent adds of 4-element tensors, eager and
//! lazy) and a LeNet-5 training step (W6, batch 64), for profiling the host work:
//! `cargo run --release --example dispatch_bench -- [w8e|w8l|lenet|all] [seconds]`.
//! Prints the median and minimum per run; run it under `perf record -g` to see where the time
//! goes.

use std::time::Instant;

use metajit::nn::{Module, functional as F, lenet5};
use metajit::optim::{Optimizer, Sgd, SgdConfig};
use metajit::{Mode, Tensor};

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// Runs `f` for about `secs` seconds after one warm-up call; median and minimum in seconds.
fn time(secs: f64, f: &mut dyn FnMut()) -> (f64, f64) {
    f();
    let start = Instant::now();
    let mut t = Vec::new();
    while start.elapsed().as_secs_f64() < secs || t.len() < 5 {
        let t0 = Instant::now();
        f();
        t.push(t0.elapsed().as_secs_f64());
    }
    stats(t)
}

fn w8(mode: Mode, secs: f64) {
    metajit::set_mode(mode);
    let (zero, one) = (Tensor::zeros([4]), Tensor::ones([4]));
    metajit::realize_all(&[&zero, &one]).unwrap_or_else(|e| panic!("{e}"));
    let ops = 1000;
    let (med, min) = time(secs, &mut || {
        let mut x = zero.clone();
        for _ in 0..ops {
            x = &x + &one;
        }
        x.realize().unwrap_or_else(|e| panic!("{e}"));
    });
    println!(
        "W8 {mode:?}: median {:.3} us/op, min {:.3} us/op",
        med * 1e6 / ops as f64,
        min * 1e6 / ops as f64
    );
    metajit::set_mode(Mode::Compiled);
}

fn lenet(secs: f64) {
    let net = lenet5();
    let params = net.parameters();
    metajit::realize_all(&params.iter().collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{e}"));
    let mut opt = Sgd::new(
        params,
        SgdConfig {
            lr: 1e-7,
            momentum: 0.9,
            ..Default::default()
        },
    );
    let x = Tensor::randn([64, 1, 28, 28]);
    let y = (Tensor::rand([64]) * 10.0)
        .floor()
        .cast(metajit::DType::I64);
    metajit::realize_all(&[&x, &y]).unwrap_or_else(|e| panic!("{e}"));
    let before = metajit::stats();
    let mut steps = 0u64;
    let mut record = Vec::new();
    let (med, min) = time(secs, &mut || {
        steps += 1;
        let t0 = Instant::now();
        opt.zero_grad();
        let loss = F::cross_entropy(&net.forward(&x), &y, &Default::default());
        loss.backward();
        opt.step();
        record.push(t0.elapsed().as_secs_f64());
        opt.realize_with(&[&loss]).unwrap_or_else(|e| panic!("{e}"));
    });
    let (rec_med, rec_min) = stats(record);
    println!(
        "LeNet recording (zero_grad, forward, backward, step; no realize): median {:.3} ms, min {:.3} ms",
        rec_med * 1e3,
        rec_min * 1e3
    );
    let after = metajit::stats();
    println!(
        "LeNet step: median {:.3} ms, min {:.3} ms; per step: {:.1} kernel runs, {:.2} plan hits, {:.2} plan misses, {:.2} compiles",
        med * 1e3,
        min * 1e3,
        (after.kernel_runs - before.kernel_runs) as f64 / steps as f64,
        (after.plan_hits - before.plan_hits) as f64 / steps as f64,
        (after.plan_misses - before.plan_misses) as f64 / steps as f64,
        (after.kernels_compiled - before.kernels_compiled) as f64 / steps as f64,
    );
}

fn main() {
    metajit::set_cache_mode(metajit::CacheMode::Memory);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("all", |s| s.as_str());
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    match which {
        "w8e" => w8(Mode::Eager, secs),
        "w8l" => w8(Mode::Compiled, secs),
        "lenet" => lenet(secs),
        _ => {
            w8(Mode::Eager, secs);
            w8(Mode::Compiled, secs);
            lenet(secs);
        }
    }
}
