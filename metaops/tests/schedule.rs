//! Fusion against the reference interpreter: for random graphs, running the schedule (every
//! kernel through the kernel-IR interpreter) gives exactly the graph's results.

use metajit_metaops::r#gen::{GenConfig, random_graph};
use metajit_metaops::schedule::{run_interpreted, schedule};
use metajit_metaops::{Graph, HostData, Op, interp, parse, passes};

/// Bitwise equality, NaN == NaN (payloads may differ).
fn same(a: &HostData, b: &HostData) -> bool {
    a.dtype() == b.dtype()
        && a.len() == b.len()
        && (0..a.len()).all(|i| {
            let (x, y) = (a.get(i), b.get(i));
            x == y || (x.is_nan() && y.is_nan())
        })
}

fn check(g: &Graph, inputs: &[HostData]) -> Result<(), String> {
    let refs: Vec<&HostData> = inputs.iter().collect();
    let want = interp::run(g, &refs).map_err(|e| e.to_string())?;
    let s = schedule(g);
    let got = run_interpreted(g, &s, &refs);
    // Scatter-adds of floats round at every step in the kernel interpreter, but once in the
    // reference interpreter: allow a tolerance there.
    let scatter_float = g
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::ReindexReduce { .. }) && n.dtype.is_float());
    for (k, (w, o)) in want.iter().zip(&got).enumerate() {
        let ok = same(w, o)
            || scatter_float
                && w.len() == o.len()
                && (0..w.len()).all(|i| {
                    let (x, y) = (w.get(i).to_f64(), o.get(i).to_f64());
                    x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-3 * (1.0 + x.abs())
                });
        if !ok {
            return Err(format!(
                "output {k} differs\nwant {w:?}\ngot  {o:?}\nschedule:\n{}",
                s.summary(g)
            ));
        }
    }
    Ok(())
}

fn fuzz(seeds: std::ops::Range<u64>) -> usize {
    let cfg = GenConfig::default();
    let mut kernels = 0;
    for seed in seeds {
        let (g, inputs) = random_graph(seed, &cfg);
        let g = passes::simplify(&g, &passes::PassCx::default());
        if let Err(e) = check(&g, &inputs) {
            panic!("seed {seed}: {e}\ngraph:\n{g}");
        }
        kernels += schedule(&g).kernel_count();
    }
    kernels
}

#[test]
fn random_graphs_fuse_to_the_same_results() {
    let kernels = fuzz(0..600);
    assert!(kernels > 600, "graphs should need kernels: {kernels}");
}

/// A long soak: `METAJIT_FUZZ_SEEDS=100000 cargo test --release -- --ignored soak`.
#[test]
#[ignore]
fn soak_random_graphs() {
    let n: u64 = std::env::var("METAJIT_FUZZ_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    fuzz(600..600 + n);
}

fn graph(text: &str) -> Graph {
    parse::parse(text).unwrap()
}

#[test]
fn softmax_is_one_kernel() {
    let g = graph(
        "%0 = input #0 : f32[3, 5]
%1 = reduce max %0 axes=[1] keepdims : f32[3, 1]
%2 = reshape %1 : f32[3]
%3 = broadcast %2 axes=[1] : f32[3, 5]
%4 = sub %0, %3 : f32[3, 5]
%5 = exp %4 : f32[3, 5]
%6 = reduce sum %5 axes=[1] keepdims : f32[3, 1]
%7 = reshape %6 : f32[3]
%8 = broadcast %7 axes=[1] : f32[3, 5]
%9 = div %5, %8 : f32[3, 5]
return %9
",
    );
    let s = schedule(&g);
    assert_eq!(s.kernel_count(), 1, "{}", s.summary(&g));
    let x = HostData::from_vec((0..15).map(|v| v as f32 * 0.7 - 3.0).collect::<Vec<f32>>());
    check(&g, &[x]).unwrap();
}

#[test]
fn elementwise_chain_is_one_kernel() {
    // W1: relu(x*1.5+0.5) * sigmoid(x) + tanh(x)
    let g = graph(
        "%0 = input #0 : f32[1000]
%1 = const 1.5 : f32[1000]
%2 = mul %0, %1 : f32[1000]
%3 = const 0.5 : f32[1000]
%4 = add %2, %3 : f32[1000]
%5 = const 0.0 : f32[1000]
%6 = max %4, %5 : f32[1000]
%7 = sigmoid %0 : f32[1000]
%8 = mul %6, %7 : f32[1000]
%9 = tanh %0 : f32[1000]
%10 = add %8, %9 : f32[1000]
return %10
",
    );
    let s = schedule(&g);
    assert_eq!(s.kernel_count(), 1, "{}", s.summary(&g));
}

#[test]
fn reduce_absorbs_its_epilogue() {
    // mean = sum / n: one kernel storing the divided value.
    let g = graph(
        "%0 = input #0 : f32[4, 6]
%1 = reduce sum %0 axes=[1] : f32[4]
%2 = const 6.0 : f32[4]
%3 = div %1, %2 : f32[4]
return %3
",
    );
    let s = schedule(&g);
    assert_eq!(s.kernel_count(), 1, "{}", s.summary(&g));
    let x = HostData::from_vec((0..24).map(|v| v as f32).collect::<Vec<f32>>());
    check(&g, &[x]).unwrap();
}

#[test]
fn batch_size_does_not_change_the_plan_or_kernels() {
    let text = |b: usize| {
        format!(
            "%0 = input #0 : f32[{b}, 7]
%1 = reduce max %0 axes=[1] keepdims : f32[{b}, 1]
%2 = reshape %1 : f32[{b}]
%3 = broadcast %2 axes=[1] : f32[{b}, 7]
%4 = sub %0, %3 : f32[{b}, 7]
return %4
"
        )
    };
    let (g1, g2) = (graph(&text(5)), graph(&text(9)));
    assert_eq!(
        metajit_metaops::schedule::plan_key(&g1),
        metajit_metaops::schedule::plan_key(&g2)
    );
    let texts = |g: &Graph| -> Vec<String> {
        schedule(g)
            .steps
            .iter()
            .filter_map(|s| match s {
                metajit_metaops::schedule::Step::Kernel { kernel, .. } => Some(kernel.text()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(texts(&g1), texts(&g2));
}
