//! Times an eager loop of small dependent element-wise ops on the default device
//! (`METAJIT_DEVICE`): what a GPU pays per op when every eager op is its own realize (W8 of
//! `benches/workloads.rs` is the CPU version of this loop).
//!
//! ```text
//! METAJIT_DEVICE=opencl cargo run --release --example device_loop -- [OPS] [NUMEL] [REPEATS]
//! ```
//!
//! Prints, for each repeat, the wall time of `OPS` ops (default 2000) over tensors of `NUMEL`
//! elements (default 1024), up to and including reading the result back, and the minimum.

use std::time::Instant;

use metajit::{Mode, Tensor, set_mode};

fn arg(k: usize, default: usize) -> usize {
    match std::env::args().nth(k) {
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("argument {k} must be a non-negative integer, got {v:?}");
            std::process::exit(2)
        }),
        None => default,
    }
}

fn main() -> metajit::Result<()> {
    metajit::config::validate()?;
    set_mode(Mode::Eager);
    let (ops, numel, repeats) = (arg(1, 2000), arg(2, 1024), arg(3, 5).max(1));
    let one = Tensor::ones([numel]);
    let x0 = Tensor::rand([numel]);
    // Warm up: every kernel compiled (or loaded from the cache) and every plan made.
    let mut x = x0.clone();
    for _ in 0..8 {
        x = &(&x * 0.5) + &one;
    }
    x.to_vec::<f32>()?;
    let device = x.device();
    let mut best = f64::INFINITY;
    let mut check = 0.0f32;
    for r in 0..repeats {
        let t0 = Instant::now();
        let mut x = x0.clone();
        // Two ops per iteration: a multiply by a scalar and an add of a tensor.
        for _ in 0..ops / 2 {
            x = &(&x * 0.5) + &one;
        }
        let v = x.to_vec::<f32>()?;
        let s = t0.elapsed().as_secs_f64();
        check = v.iter().sum();
        best = best.min(s);
        println!(
            "repeat {r}: {ops} ops of {numel} f32 on {device}: {:.1} ms, {:.1} us/op",
            s * 1e3,
            s * 1e6 / ops as f64
        );
    }
    println!(
        "min: {:.1} ms, {:.1} us/op (checksum {check})",
        best * 1e3,
        best * 1e6 / ops as f64
    );
    Ok(())
}
