//! The random-graph fuzzer in gradient mode: random meta-op graphs (the fuzzer's generator)
//! are replayed as lazy tensors with their float inputs marked as requiring grad; the gradient
//! of a weighted sum of their float outputs is built by autograd, and that gradient graph runs
//! on the reference interpreter, compiled (fused) and eager — which must agree.
//!
//! Tolerance: gradient graphs hold reductions (every broadcast's gradient is a sum) and the
//! inexact math of the forward pass, so floats agree within a relative 1e-3 (with an absolute
//! floor of 1e-3), as the forward fuzzer's tolerant mode; integers and bools exactly; NaN
//! matches NaN. Inputs hold no NaN or inf (a reassociated sum of infinities may be NaN in one
//! path and inf in another).
//!
//! `METAJIT_FUZZ_SEEDS=5000 cargo test --release --test fuzz_grad -- --ignored` runs a soak.

mod common;

use metajit::metaops::r#gen::agree;
use metajit::metaops::r#gen::{GenConfig, random_graph};
use metajit::metaops::{DType, Graph, HostData};
use metajit::{GraphMode, Tensor, autograd, pending_graph, replay_graph, run_graph_with};

/// The gradient graph of `g` (None when no float output depends on a float input).
fn gradient_graph(g: &Graph, data: &[HostData]) -> Option<(Graph, Vec<HostData>)> {
    let inputs: Vec<Tensor> = data
        .iter()
        .enumerate()
        .map(|(slot, d)| {
            let shape = g
                .nodes
                .iter()
                .find(|n| matches!(n.op, metajit::metaops::Op::Input { slot: s } if s == slot))
                .map(|n| n.shape.clone())
                .expect("every slot has an input node");
            let t = Tensor::from_host_data(d, shape);
            if t.dtype().is_float() {
                t.requires_grad_(true)
            } else {
                t
            }
        })
        .collect();
    let outputs = replay_graph(g, &inputs);
    let mut loss: Option<Tensor> = None;
    for (k, o) in outputs.iter().enumerate() {
        if !o.requires_grad() {
            continue;
        }
        // Fixed weights per output, so that every element matters differently.
        let w: Vec<f64> = (0..o.numel())
            .map(|i| 0.5 + ((i * 7 + k * 3) % 11) as f64 / 10.0)
            .collect();
        let w = Tensor::from_vec(w, o.dims().to_vec());
        let term = (o.cast(DType::F64) * &w).sum_all();
        loss = Some(match loss {
            Some(l) => l + term,
            None => term,
        });
    }
    let loss = loss?;
    let wrt: Vec<&Tensor> = inputs.iter().filter(|t| t.requires_grad()).collect();
    let grads = autograd::grad(&[&loss], &wrt, None);
    let refs: Vec<&Tensor> = grads.iter().collect();
    Some(pending_graph(&refs))
}

fn check(seed: u64) -> Result<bool, String> {
    check_in(seed, &[GraphMode::Compiled, GraphMode::Eager])
}

/// Whether seed `seed` had a gradient; an error when one of `modes` disagrees with the
/// reference on it.
fn check_in(seed: u64, modes: &[GraphMode]) -> Result<bool, String> {
    let cfg = GenConfig {
        special_inputs: false,
        max_nodes: 20,
        max_numel: 256,
        ..GenConfig::default()
    };
    let (g, data) = random_graph(seed, &cfg);
    let Some((gg, gdata)) = gradient_graph(&g, &data) else {
        return Ok(false);
    };
    let run = |m| run_graph_with(&gg, &gdata, m).map_err(|e| format!("{m:?}: {e}"));
    let want = run(GraphMode::Reference)?;
    for &mode in modes {
        let got = run(mode)?;
        if got.len() != want.len() {
            return Err(format!("seed {seed}: {mode:?} gave {} outputs", got.len()));
        }
        for (k, (w, o)) in want.iter().zip(&got).enumerate() {
            if !agree(w, o, true) {
                return Err(format!(
                    "seed {seed}: {mode:?} gradient {k} differs from the reference\nwant {w:?}\ngot  {o:?}\nforward graph:\n{g}\ngradient graph:\n{gg}"
                ));
            }
        }
    }
    Ok(true)
}

#[test]
fn random_graph_gradients_compiled_eager_and_reference_agree() {
    let mut differentiated = 0;
    for seed in 0..600 {
        match check(seed) {
            Ok(d) => differentiated += d as usize,
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("{differentiated} of 600 random graphs had a gradient; all agreed");
    // The generator must keep producing differentiable graphs, or this test tests nothing.
    assert!(
        differentiated >= 150,
        "only {differentiated} of 600 graphs had a gradient"
    );
}

/// The gradient graphs of the first random graphs compiled on each device besides the CPU
/// (OpenCL, CUDA) against the reference; `METAJIT_FUZZ_GPU_SEEDS` sets how many seeds.
#[test]
fn random_graph_gradients_on_each_gpu_device_agree_with_the_reference() {
    let n: u64 = std::env::var("METAJIT_FUZZ_GPU_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80);
    for device in common::gpu_devices() {
        let mut differentiated = 0;
        for seed in 0..n {
            match check_in(seed, &[GraphMode::Device(device)]) {
                Ok(d) => differentiated += d as usize,
                Err(e) => panic!("{device}: {e}"),
            }
        }
        eprintln!("{device}: {differentiated} of {n} random graphs had a gradient; all agreed");
        // As on the CPU (150 of 600): the generator must keep making differentiable graphs.
        assert!(
            differentiated * 8 >= n as usize,
            "only {differentiated} of {n} graphs had a gradient"
        );
    }
}

#[test]
#[ignore]
fn soak() {
    let n: u64 = std::env::var("METAJIT_FUZZ_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let mut differentiated = 0;
    for seed in 600..600 + n {
        match check(seed) {
            Ok(d) => differentiated += d as usize,
            Err(e) => panic!("{e}"),
        }
    }
    let s = metajit::stats();
    eprintln!(
        "{differentiated} of {n} random graphs had a gradient; all agreed ({} kernels compiled, {} run)",
        s.kernels_compiled, s.kernel_runs
    );
}
