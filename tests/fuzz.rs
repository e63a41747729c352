//! The random-graph fuzzer of the whole pipeline: random DAGs of 2–30 meta-ops over random
//! broadcast-compatible shapes and dtypes; compiled == eager == reference.
//!
//! Exact ops must agree bitwise; transcendental functions within a few ulp; float reductions
//! within a relative tolerance (backends may reassociate sums). A failing graph is printed as IR
//! text: paste it into a regression test with `metajit::metaops::parse::parse`.
//!
//! `METAJIT_FUZZ_SEEDS=100000 cargo test --release --test fuzz -- --ignored` runs a long soak.

use metajit::metaops::r#gen::{GenConfig, random_graph};
use metajit::metaops::{Graph, HostData, Op, UnaryOp};
use metajit::{GraphMode, run_graph_with};

/// Whether the graph uses an op whose backends may differ from the reference by rounding.
fn inexact(g: &Graph) -> bool {
    g.nodes.iter().any(|n| match &n.op {
        Op::Unary(u) => matches!(
            u,
            UnaryOp::Exp
                | UnaryOp::Log
                | UnaryOp::Sin
                | UnaryOp::Cos
                | UnaryOp::Tanh
                | UnaryOp::Sigmoid
                | UnaryOp::Erf
        ),
        Op::Random { .. } => true,
        Op::Reduce { .. } | Op::ReindexReduce { .. } => n.dtype.is_float(),
        _ => false,
    })
}

fn agree(a: &HostData, b: &HostData, tolerant: bool) -> bool {
    if a.dtype() != b.dtype() || a.len() != b.len() {
        return false;
    }
    (0..a.len()).all(|i| {
        let (x, y) = (a.get(i), b.get(i));
        if x == y || (x.is_nan() && y.is_nan()) {
            return true;
        }
        if !tolerant || !x.dtype().is_float() {
            return false;
        }
        let (x, y) = (x.to_f64(), y.to_f64());
        // Values computed through inexact ops may differ by a few ulp, and the difference can be
        // amplified by later ops; allow a relative 1e-3 (with an absolute floor).
        x == y || (x - y).abs() <= 1e-3 * (1.0 + x.abs().max(y.abs()))
    })
}

fn check(seed: u64) -> Result<(), String> {
    let cfg = GenConfig::default();
    let (g, inputs) = random_graph(seed, &cfg);
    let run = |m| run_graph_with(&g, &inputs, m).map_err(|e| format!("{m:?}: {e}"));
    let want = run(GraphMode::Reference)?;
    let tolerant = inexact(&g);
    for mode in [GraphMode::Compiled, GraphMode::Eager] {
        let got = run(mode)?;
        for (k, (w, o)) in want.iter().zip(&got).enumerate() {
            if !agree(w, o, tolerant) {
                return Err(format!(
                    "seed {seed}: {mode:?} output {k} differs from the reference\nwant {w:?}\ngot  {o:?}\ngraph:\n{g}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn random_graphs_compiled_eager_and_reference_agree() {
    // 500 graphs per CI run.
    for seed in 0..500 {
        if let Err(e) = check(seed) {
            panic!("{e}");
        }
    }
}

#[test]
#[ignore]
fn soak() {
    let n: u64 = std::env::var("METAJIT_FUZZ_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    for seed in 500..500 + n {
        if let Err(e) = check(seed) {
            panic!("{e}");
        }
    }
}
