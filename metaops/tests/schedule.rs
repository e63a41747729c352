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
        // A panic inside the interpreters names its seed too.
        match std::panic::catch_unwind(|| check(&g, &inputs)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("seed {seed}: {e}\ngraph:\n{g}"),
            Err(_) => panic!("seed {seed} panicked (message above)\ngraph:\n{g}"),
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

/// A long soak: `METAJIT_FUZZ_SEEDS=100000 cargo test --release -- --ignored soak`;
/// `METAJIT_FUZZ_FROM=N` starts at seed N (to rerun a failing seed alone).
#[test]
#[ignore]
fn soak_random_graphs() {
    let var = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (from, n) = (
        var("METAJIT_FUZZ_FROM", 600),
        var("METAJIT_FUZZ_SEEDS", 20_000),
    );
    fuzz(from..from + n);
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

/// An extent of 2 is a kernel constant (a shift for index division by it), so a plan or
/// kernel for a 2 is not reused for another extent, nor the other way round, and the
/// schedule still computes the right values at both.
#[test]
fn an_extent_of_two_is_a_constant_of_its_own_plan() {
    use metajit_metaops::schedule::{plan_key, same_plan};
    let text = |b: usize| {
        format!(
            "%0 = input #0 : f32[{b}, 6]
%1 = reshape %0 : f32[{b}, 3, 2]
%2 = reindex %1 [i0, i1, 1] overflow=0.0 : f32[{b}, 3]
%3 = reindex %1 [i0, i1, 0] overflow=0.0 : f32[{b}, 3]
%4 = sub %2, %3 : f32[{b}, 3]
return %4
"
        )
    };
    let (g2, g3) = (graph(&text(2)), graph(&text(3)));
    assert_ne!(plan_key(&g2), plan_key(&g3));
    assert!(!same_plan(&g2, &g3));
    assert_ne!(kernel_texts(&g2), kernel_texts(&g3));
    assert!(kernel_texts(&g2).iter().all(|t| !t.contains("s0, s1, s2")));
    for (g, b) in [(&g2, 2), (&g3, 3)] {
        let x = HostData::from_vec((0..6 * b).map(|v| (v * v) as f32).collect::<Vec<f32>>());
        check(g, &[x]).unwrap();
    }
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

// ---- values kept across phases (`keep_across_phases`) ----

use metajit_metaops::kernel::{Inst, Kernel, PhaseKind};
use metajit_metaops::schedule::Step;
use metajit_metaops::{DType, Scalar, UnaryOp};

/// The kernels of a graph's schedule.
fn kernels(g: &Graph) -> Vec<Kernel> {
    schedule(g)
        .steps
        .into_iter()
        .filter_map(|s| match s {
            Step::Kernel { kernel, .. } => Some(kernel),
            _ => None,
        })
        .collect()
}

/// How many instructions of `k` (all phases) are `exp`.
fn exps(k: &Kernel) -> usize {
    k.phases
        .iter()
        .flat_map(|p| &p.body)
        .filter(|(i, _)| matches!(i, Inst::Unary(UnaryOp::Exp, _)))
        .count()
}

/// How many Reduce phases of `k` also store.
fn storing_reduces(k: &Kernel) -> usize {
    k.phases
        .iter()
        .filter(|p| matches!(&p.kind, PhaseKind::Reduce { stores, .. } if !stores.is_empty()))
        .count()
}

/// The bench's row softmax (`e = exp(x - max); e / sum(e)`) over the last axis of `[r, c]`.
fn softmax_text(dt: &str, r: usize, c: usize) -> String {
    format!(
        "%0 = input #0 : {dt}[{r}, {c}]
%1 = reduce max %0 axes=[1] keepdims : {dt}[{r}, 1]
%2 = reshape %1 : {dt}[{r}]
%3 = broadcast %2 axes=[1] : {dt}[{r}, {c}]
%4 = sub %0, %3 : {dt}[{r}, {c}]
%5 = exp %4 : {dt}[{r}, {c}]
%6 = reduce sum %5 axes=[1] keepdims : {dt}[{r}, 1]
%7 = reshape %6 : {dt}[{r}]
%8 = broadcast %7 axes=[1] : {dt}[{r}, {c}]
%9 = div %5, %8 : {dt}[{r}, {c}]
return %9
"
    )
}

/// Row data with the awkward cases: -inf elements, a row of only -inf, +inf, NaN, ±80, 1000.
fn softmax_rows(dt: DType, r: usize, c: usize) -> HostData {
    let mut x = Rng(r as u64 * 31 + c as u64);
    let specials = [
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NAN,
        80.0,
        -80.0,
        1000.0,
    ];
    let v: Vec<f64> = (0..r * c)
        .map(|i| {
            let (row, col) = (i / c, i % c);
            match row % 5 {
                // A row of only -inf.
                1 => f64::NEG_INFINITY,
                // One special value in the row.
                2 if col == 0 => specials[(row / 5) % specials.len()],
                _ => x.normal() * 10.0,
            }
        })
        .collect();
    HostData::from_scalars(dt, v.into_iter().map(|v| Scalar::F64(v).cast(dt)))
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Roughly normal (a sum of uniforms).
    fn normal(&mut self) -> f64 {
        (0..4)
            .map(|_| self.next() as f64 / (1u64 << 53) as f64)
            .sum::<f64>()
            - 2.0
    }
}

#[test]
fn softmax_computes_exp_once() {
    for dt in ["f32", "f64", "f16", "bf16"] {
        for (r, c) in [(1, 1), (7, 1), (6, 5), (11, 33), (3, 64)] {
            let g = graph(&softmax_text(dt, r, c));
            let ks = kernels(&g);
            assert_eq!(ks.len(), 1, "{dt} {r}x{c}");
            // The sum phase stores exp; the division loads it.
            assert_eq!(exps(&ks[0]), 1, "{dt} {r}x{c}\n{}", ks[0]);
            assert_eq!(storing_reduces(&ks[0]), 1, "{}", ks[0]);
            let x = softmax_rows(g.nodes[0].dtype, r, c);
            check(&g, &[x]).unwrap_or_else(|e| panic!("{dt} {r}x{c}: {e}"));
        }
    }
}

/// Softmax's gradient (as autograd builds it from `e / sum(e)`) needs `exp` in three phases:
/// computed once, in the first.
#[test]
fn softmax_gradient_computes_exp_once() {
    let g = graph(
        "%0 = input #0 : f32[6, 9]
%1 = input #1 : f32[6, 9]
%2 = reduce max %1 axes=[1] keepdims : f32[6, 1]
%3 = reshape %2 : f32[6]
%4 = broadcast %3 axes=[1] : f32[6, 9]
%5 = sub %1, %4 : f32[6, 9]
%6 = exp %5 : f32[6, 9]
%7 = reduce sum %6 axes=[1] keepdims : f32[6, 1]
%8 = reshape %7 : f32[6]
%9 = broadcast %8 axes=[1] : f32[6, 9]
%10 = div %0, %9 : f32[6, 9]
%11 = neg %0 : f32[6, 9]
%12 = div %6, %9 : f32[6, 9]
%13 = mul %11, %12 : f32[6, 9]
%14 = div %13, %9 : f32[6, 9]
%15 = reduce sum %14 axes=[1] : f32[6]
%16 = broadcast %15 axes=[1] : f32[6, 9]
%17 = add %10, %16 : f32[6, 9]
%18 = mul %6, %17 : f32[6, 9]
return %18
",
    );
    let ks = kernels(&g);
    assert_eq!(ks.len(), 1);
    let k = &ks[0];
    assert_eq!(k.phases.len(), 4, "{k}");
    assert_eq!(exps(k), 1, "{k}");
    assert!(
        matches!(&k.phases[1].kind, PhaseKind::Reduce { stores, .. } if stores.len() == 1),
        "{k}"
    );
    let gy = HostData::from_vec((0..54).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<f32>>());
    check(&g, &[gy, softmax_rows(DType::F32, 6, 9)]).unwrap();
}

/// What is not kept: a cheap shared value (`x - mean`), and a value of another dtype than the
/// output.
#[test]
fn cheap_or_other_dtype_values_are_recomputed() {
    let cheap = graph(
        "%0 = input #0 : f32[4, 10]
%1 = reduce sum %0 axes=[1] keepdims : f32[4, 1]
%2 = reshape %1 : f32[4]
%3 = broadcast %2 axes=[1] : f32[4, 10]
%4 = sub %0, %3 : f32[4, 10]
%5 = mul %4, %4 : f32[4, 10]
%6 = reduce sum %5 axes=[1] keepdims : f32[4, 1]
%7 = reshape %6 : f32[4]
%8 = broadcast %7 axes=[1] : f32[4, 10]
%9 = div %4, %8 : f32[4, 10]
return %9
",
    );
    let other = graph(
        "%0 = input #0 : f32[4, 10]
%1 = exp %0 : f32[4, 10]
%2 = reduce sum %1 axes=[1] keepdims : f32[4, 1]
%3 = reshape %2 : f32[4]
%4 = broadcast %3 axes=[1] : f32[4, 10]
%5 = div %1, %4 : f32[4, 10]
%6 = cast %5 : f16[4, 10]
return %6
",
    );
    for g in [cheap, other] {
        for k in kernels(&g) {
            assert_eq!(storing_reduces(&k), 0, "{k}");
        }
        let x = HostData::from_vec(
            (0..40)
                .map(|i| (i % 9) as f32 * 0.5 - 2.0)
                .collect::<Vec<f32>>(),
        );
        check(&g, &[x]).unwrap();
    }
}

/// Random multi-phase graphs over the trailing axes of a rank-1 to rank-3 input: a costly
/// element-wise value `f(x)` (optionally shifted by a first reduction of `x`), folded by a
/// reduction, and an epilogue combining `f(x)` with that fold; sometimes `f` is read through a
/// second fold too. Bitwise equal to the graph interpreter whether or not a value is kept, and
/// kept in most of them.
#[test]
fn random_kept_values_match_the_interpreter() {
    let mut rng = Rng(7);
    let mut kept = 0;
    let cases = 300;
    for case in 0..cases {
        let dt = ["f32", "f64", "f16"][rng.below(3)];
        let rank = 1 + rng.below(3);
        let dims: Vec<usize> = (0..rank).map(|_| 1 + rng.below(6)).collect();
        let nred = 1 + rng.below(rank);
        let axes: Vec<usize> = (rank - nred..rank).collect();
        let kept_dims: Vec<usize> = dims[..rank - nred].to_vec();
        let kd: Vec<usize> = (0..rank)
            .map(|a| if axes.contains(&a) { 1 } else { dims[a] })
            .collect();
        let sh = |d: &[usize]| {
            format!(
                "{dt}[{}]",
                d.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let list = |d: &[usize]| {
            d.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (full, keep, flat) = (sh(&dims), sh(&kd), sh(&kept_dims));
        let ax = list(&axes);
        let bcast = list(&axes);
        let f = ["exp", "tanh", "sigmoid", "sin", "erf"][rng.below(5)];
        let red = ["sum", "max", "min", "prod"][rng.below(4)];
        let epi = ["div", "mul", "sub", "add"][rng.below(4)];
        let mut t = format!("%0 = input #0 : {full}\n");
        let mut n = 1;
        let mut node = |t: &mut String, s: String| {
            t.push_str(&format!("%{n} = {s}\n"));
            n += 1;
            n - 1
        };
        // An optional shift by a first fold (softmax's max).
        let src = if rng.below(2) == 0 {
            let m = node(
                &mut t,
                format!("reduce max %0 axes=[{ax}] keepdims : {keep}"),
            );
            let r = node(&mut t, format!("reshape %{m} : {flat}"));
            let b = node(&mut t, format!("broadcast %{r} axes=[{bcast}] : {full}"));
            node(&mut t, format!("sub %0, %{b} : {full}"))
        } else {
            0
        };
        let fx = node(&mut t, format!("{f} %{src} : {full}"));
        let s = node(
            &mut t,
            format!("reduce {red} %{fx} axes=[{ax}] keepdims : {keep}"),
        );
        let r = node(&mut t, format!("reshape %{s} : {flat}"));
        let b = node(&mut t, format!("broadcast %{r} axes=[{bcast}] : {full}"));
        let mut y = node(&mut t, format!("{epi} %{fx}, %{b} : {full}"));
        if rng.below(3) == 0 {
            // A second fold reading f(x) (a gradient's), and its epilogue.
            let s2 = node(
                &mut t,
                format!("reduce sum %{y} axes=[{ax}] keepdims : {keep}"),
            );
            let r2 = node(&mut t, format!("reshape %{s2} : {flat}"));
            let b2 = node(&mut t, format!("broadcast %{r2} axes=[{bcast}] : {full}"));
            let m2 = node(&mut t, format!("mul %{fx}, %{b2} : {full}"));
            y = node(&mut t, format!("add %{m2}, %{y} : {full}"));
        }
        t.push_str(&format!("return %{y}\n"));
        let g = parse::parse(&t).unwrap_or_else(|e| panic!("case {case}: {e}\n{t}"));
        let numel: usize = dims.iter().product();
        let d = g.nodes[0].dtype;
        let x = HostData::from_scalars(
            d,
            (0..numel).map(|_| {
                let v = match rng.below(20) {
                    0 => f64::NEG_INFINITY,
                    1 => f64::NAN,
                    2 => 90.0,
                    _ => rng.normal() * 3.0,
                };
                Scalar::F64(v).cast(d)
            }),
        );
        check(&g, &[x]).unwrap_or_else(|e| panic!("case {case}: {e}\n{t}"));
        kept += kernels(&g)
            .iter()
            .map(storing_reduces)
            .sum::<usize>()
            .min(1);
    }
    assert!(
        kept > cases / 2,
        "only {kept} of {cases} graphs kept a value"
    );
}

/// Fuzz seed 18310: a gather from an empty input whose second coordinate is proven in range.
/// Every point is out of range (axis 0 has no elements), and the read must stay inside the
/// buffer: it read element `min(i0, 2)` of an empty buffer before empty targets kept every
/// coordinate checked.
#[test]
fn gathers_from_an_empty_input_read_nothing_out_of_bounds() {
    let g = graph(
        "%0 = input #0 : i64[0, 3]
%1 = reindex %0 [i1-1, min(i0, m1-1)] overflow=0 : i64[4, 3]
%2 = reduce sum %0 axes=[1] : i64[0]
%3 = broadcast %1 axes=[0, 1] : i64[1, 2, 4, 3]
%4 = reindex %3 [i0, i0, i1, i2] if [i0==(n0-1)] overflow=5 : i64[1, 4, 3]
return %4, %2
",
    );
    check(&g, &[HostData::I64(vec![])]).unwrap();
}

/// A pad of an empty tensor: the bare index `i1` over an axis of its own extent is in range
/// for that axis, but the target has no element at all, so it must stay checked too.
#[test]
fn pads_of_an_empty_input_read_nothing_out_of_bounds() {
    let g = graph(
        "%0 = input #0 : f32[0, 5]
%1 = reindex %0 [i0-1, i1] overflow=7.0 : f32[3, 5]
return %1
",
    );
    check(&g, &[HostData::F32(vec![])]).unwrap();
}

/// Fuzz seed 71589: a gather from an empty tensor fused into a gather over a non-empty space.
/// The inner map's own iteration space is empty, yet it is evaluated at its consumer's
/// (zeroed) coordinates, so its bare index into an empty axis must stay checked: it read
/// element 11 of an empty buffer.
#[test]
fn an_empty_gather_fused_into_a_consumer_stays_checked() {
    let g = graph(
        "%0 = input #0 : i64[0, 4, 3]
%1 = cast %0 : f64[0, 4, 3]
%2 = reindex %1 [i3, (m1-1)-i1, (m2-1)-i2] overflow=0.0 : f64[3, 4, 3, 0]
%3 = reindex %2 [i2-0, i3, i1, min(i0, m3-1)] overflow=-1.0 : f64[1, 3, 4, 4]
return %3
",
    );
    check(&g, &[HostData::I64(vec![])]).unwrap();
}
