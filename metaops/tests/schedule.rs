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
    assert_eq!(want.len(), got.len(), "one buffer per output");
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

/// The kernels' texts of a graph's schedule.
fn kernel_texts(g: &Graph) -> Vec<String> {
    schedule(g)
        .steps
        .iter()
        .filter_map(|s| match s {
            metajit_metaops::schedule::Step::Kernel { kernel, .. } => Some(kernel.text()),
            _ => None,
        })
        .collect()
}

#[test]
fn slice_offsets_are_runtime_parameters_without_range_checks() {
    use metajit_metaops::schedule::{plan_key, same_plan};
    // A row slice, a column slice and a strided column slice of an [8, 9] input, each at a
    // runtime offset, then element-wise math (what `x.narrow(..) * 2` lowers to).
    let text = |r: i64, c: i64, s: i64| {
        format!(
            "%0 = input #0 : f32[8, 9]
%1 = reindex %0 [i0+param({r}), i1] overflow=0.0 : f32[3, 9]
%2 = reindex %0 [i0, i1+param({c})] overflow=0.0 : f32[8, 4]
%3 = reindex %0 [i0, (i1*2)+param({s})] overflow=0.0 : f32[8, 4]
%4 = exp %1 : f32[3, 9]
%5 = add %2, %3 : f32[8, 4]
return %4, %5
"
        )
    };
    let x = HostData::from_vec((0..72).map(|v| v as f32 * 0.25 - 4.0).collect::<Vec<f32>>());
    let g0 = graph(&text(0, 0, 0));
    let k0 = kernel_texts(&g0);
    for k in &k0 {
        // In range whatever the offset (the plan facts say so): no checks, no guards.
        assert!(!k.contains("where") && !k.contains(" lt "), "{k}");
    }
    for (r, c, s) in [(0, 0, 0), (5, 5, 1), (2, 3, 0), (4, 1, 1)] {
        let g = graph(&text(r, c, s));
        assert_eq!(plan_key(&g), plan_key(&g0), "offsets {r} {c} {s}");
        assert!(same_plan(&g0, &g));
        assert_eq!(kernel_texts(&g), k0);
        check(&g, std::slice::from_ref(&x)).unwrap_or_else(|e| panic!("{r} {c} {s}: {e}"));
        // The plan of g0 runs g (what a plan-cache hit does).
        let refs = [&x];
        let want = interp::run(&g, &refs).unwrap();
        let got = run_interpreted(&g, &schedule(&g0), &refs);
        assert_eq!(want.len(), got.len());
        for (w, o) in want.iter().zip(&got) {
            assert!(same(w, o), "offsets {r} {c} {s}: want {w:?} got {o:?}");
        }
    }
    // An offset that reads past the end is a different plan (with checks), and still exact.
    let past = graph(&text(6, 0, 0));
    assert_ne!(plan_key(&past), plan_key(&g0));
    assert!(!same_plan(&g0, &past));
    check(&past, &[x]).unwrap();
}

#[test]
fn a_scatter_at_a_runtime_offset_shares_its_kernel() {
    use metajit_metaops::schedule::plan_key;
    // The gradient of a slice: scatter-add [3, 4] into [8, 4] at row offset r.
    let text = |r: i64| {
        format!(
            "%0 = input #0 : f32[3, 4]
%1 = reindex_reduce sum %0 [i0+param({r}), i1] : f32[8, 4]
return %1
"
        )
    };
    let x = HostData::from_vec((0..12).map(|v| v as f32 - 5.5).collect::<Vec<f32>>());
    // Offsets whose rows land inside the target share one kernel without a skip test...
    let k0 = kernel_texts(&graph(&text(0)));
    for r in [0, 1, 4, 5] {
        let g = graph(&text(r));
        assert_eq!(kernel_texts(&g), k0);
        check(&g, std::slice::from_ref(&x)).unwrap_or_else(|e| panic!("offset {r}: {e}"));
    }
    // ...and offsets that reach past either end share another, which skips those rows.
    let k7 = kernel_texts(&graph(&text(7)));
    assert_ne!(k7, k0);
    assert_ne!(plan_key(&graph(&text(7))), plan_key(&graph(&text(0))));
    for r in [7, -2, 6] {
        let g = graph(&text(r));
        assert_eq!(kernel_texts(&g), k7);
        check(&g, std::slice::from_ref(&x)).unwrap_or_else(|e| panic!("offset {r}: {e}"));
    }
}

#[test]
fn structurally_different_graphs_are_never_the_same_plan() {
    use metajit_metaops::schedule::same_plan;
    let base = "%0 = input #0 : f32[4, 6]
%1 = reindex %0 [i0+param(1), i1] overflow=0.0 : f32[2, 6]
%2 = exp %1 : f32[2, 6]
return %2
";
    let g = graph(base);
    // Same shapes and node count, one difference each: an op, an index expression, a constant
    // where a parameter was, an overflow value, the outputs.
    for other in [
        base.replace("exp", "log"),
        base.replace("i0+param(1)", "i0+1"),
        base.replace("i0+param(1), i1", "i0+param(1), i1+param(0)"),
        base.replace("overflow=0.0", "overflow=1.0"),
        base.replace("return %2", "return %1"),
    ] {
        let o = graph(&other);
        assert!(!same_plan(&g, &o), "{other}");
        assert!(!same_plan(&o, &g), "{other}");
    }
    // Differences of value only: the same plan.
    for other in [
        base.replace("param(1)", "param(2)"),
        base.replace("f32[4, 6]", "f32[5, 6]"),
    ] {
        assert!(same_plan(&g, &graph(&other)), "{other}");
    }
    // Extents that become equal change the plan (4 and 6 were two size symbols).
    let other = base.replace("input #0 : f32[4, 6]", "input #0 : f32[6, 6]");
    assert!(!same_plan(&g, &graph(&other)), "{other}");
}
