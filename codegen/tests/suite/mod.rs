//! One test body for any [`Backend`] (as candle's `test_device!`): buffers, per-op graphs,
//! random graphs and contractions, each checked against the reference interpreter. A test
//! file instantiates it per device with [`backend_tests!`]; a device that cannot be opened
//! prints `skipped: ...` and passes.
//!
//! Graphs run kernel by kernel through `schedule::run_steps`: each kernel's arguments are
//! uploaded, the kernel launched on the backend, its outputs downloaded (contractions inside
//! graphs use the host reference; [`contractions`] runs the backend's GEMM).
//!
//! Tolerances: integer and bool results, and float results of graphs without transcendental
//! ops, are compared to within the reassociation of sums (exact for the CPU backend, within an
//! ulp or so for a GPU's tree reductions); graphs with transcendentals allow the device math
//! library's few ulp, amplified by what follows them, and skip their integer outputs (a cast of
//! a value one ulp apart may differ by one).

#![allow(dead_code)]

use std::collections::HashMap;

use metajit_codegen::{Backend, DeviceBuffer};
use metajit_metaops::contraction::{BatchAxis, GemmLayout, MatStrides, gemm_reference};
use metajit_metaops::r#gen::{GenConfig, random_graph};
use metajit_metaops::kernel::Kernel;
use metajit_metaops::schedule::{run_steps, schedule};
use metajit_metaops::{
    BinaryOp, DType, Graph, HostData, Op, Scalar, UnaryOp, interp, parse, passes,
};

/// Instantiates every test of this suite for one device: `$open` is an expression giving
/// `Result<backend, impl Display>`.
#[macro_export]
macro_rules! backend_tests {
    ($device:ident, $open:expr) => {
        mod $device {
            #[allow(unused_imports)]
            use super::*;

            fn open() -> Option<impl metajit_codegen::Backend> {
                match $open {
                    Ok(b) => Some(b),
                    Err(e) => {
                        println!("skipped: {e}");
                        None
                    }
                }
            }

            #[test]
            fn buffers_round_trip_and_fill() {
                if let Some(b) = open() {
                    $crate::suite::buffers(&b);
                }
            }

            #[test]
            fn every_op() {
                if let Some(b) = open() {
                    $crate::suite::every_op(&b);
                }
            }

            #[test]
            fn random_graphs() {
                if let Some(b) = open() {
                    $crate::suite::random_graphs(&b, $crate::suite::fuzz_seeds());
                }
            }

            #[test]
            fn contractions() {
                if let Some(b) = open() {
                    $crate::suite::contractions(&b);
                }
            }

            #[test]
            fn artifacts_load_back() {
                if let Some(b) = open() {
                    $crate::suite::artifacts(&b);
                }
            }

            #[test]
            fn bad_launches_are_errors() {
                if let Some(b) = open() {
                    $crate::suite::bad_launches(&b);
                }
            }
        }
    };
}

/// The fuzzer's seeds: `METAJIT_FUZZ_SEEDS` (default 150) from `METAJIT_FUZZ_FROM` (0).
pub fn fuzz_seeds() -> std::ops::Range<u64> {
    let var = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let from = var("METAJIT_FUZZ_FROM", 0);
    from..from + var("METAJIT_FUZZ_SEEDS", 150)
}

/// Deterministic values of `dtype` (floats in [-2, 2) with some exact small integers).
pub fn data(dtype: DType, n: usize, seed: u64) -> HostData {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    HostData::from_scalars(
        dtype,
        (0..n).map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = if i % 7 == 3 {
                ((s >> 20) % 5) as f64 - 2.0
            } else {
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
            };
            Scalar::from_f64(if dtype.is_float() { v } else { v * 50.0 }, dtype)
        }),
    )
}

/// Element `i` of `got` is close enough to `want`'s.
fn close(want: Scalar, got: Scalar, loose: bool) -> bool {
    if want == got || (want.is_nan() && got.is_nan()) {
        return true;
    }
    let (w, g) = (want.to_f64(), got.to_f64());
    let rel = match want.dtype() {
        DType::F64 if loose => 1e-9,
        DType::F64 => 1e-12,
        DType::F32 if loose => 1e-4,
        DType::F32 => 1e-6,
        DType::F16 if loose => 1e-2,
        DType::F16 => 2e-3,
        DType::BF16 if loose => 4e-2,
        DType::BF16 => 1.6e-2,
        _ => return loose, // integers and bools: exact, unless fed by transcendentals
    };
    (w - g).abs() <= rel * (1.0 + w.abs())
}

/// Panics with `what` where `got` and `want` differ beyond the tolerance.
pub fn assert_close(got: &[HostData], want: &[HostData], loose: bool, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: buffer count");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.dtype(), w.dtype(), "{what}: output {k} dtype");
        assert_eq!(g.len(), w.len(), "{what}: output {k} length");
        for i in 0..w.len() {
            assert!(
                close(w.get(i), g.get(i), loose),
                "{what}: output {k}[{i}]: got {:?}, want {:?}",
                g.get(i),
                w.get(i)
            );
        }
    }
}

/// Runs a graph's schedule kernel by kernel on `b` (see the module doc).
pub fn run_graph<B: Backend>(
    b: &B,
    g: &Graph,
    inputs: &[HostData],
    compiled: &mut HashMap<String, B::Compiled>,
) -> Vec<HostData> {
    let s = schedule(g);
    let refs: Vec<&HostData> = inputs.iter().collect();
    run_steps(g, &s, &refs, &mut |kernel, args, sizes, _extent| {
        let code = compiled
            .entry(kernel.text())
            .or_insert_with(|| b.compile(kernel).unwrap_or_else(|e| panic!("{e}")));
        let bufs: Vec<B::Buffer> = kernel
            .bufs
            .iter()
            .zip(args.iter())
            .map(|(p, a)| {
                let n = p.numel(sizes).expect("extents fit");
                let r = if n == a.len() {
                    b.upload(a)
                } else {
                    // An empty buffer (the schedule passes one spare element).
                    b.alloc(p.dtype, n)
                };
                r.unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let ptrs: Vec<&B::Buffer> = bufs.iter().collect();
        // SAFETY: the kernel comes from the scheduler, so it keeps within its declared
        // extents; the buffers are this closure's own.
        unsafe { b.launch(code, kernel, &ptrs, sizes) }.unwrap_or_else(|e| panic!("{e}"));
        for (i, p) in kernel.bufs.iter().enumerate() {
            if p.output {
                let got = b.download(&bufs[i]).unwrap_or_else(|e| panic!("{e}"));
                args[i] = if got.is_empty() {
                    HostData::zeros(p.dtype, 1)
                } else {
                    got
                };
            }
        }
    })
}

/// Whether the graph has ops whose device results are not bit-exact.
fn has_transcendentals(g: &Graph) -> bool {
    g.nodes.iter().any(|n| match n.op {
        Op::Unary(u) => u.is_transcendental(),
        Op::Binary(BinaryOp::Pow) => true,
        Op::Random { .. } => true,
        _ => false,
    })
}

/// Checks one graph (text) on `b` against the interpreter, with inputs from [`data`].
pub fn check_text<B: Backend>(b: &B, text: &str, compiled: &mut HashMap<String, B::Compiled>) {
    let g = parse::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let inputs: Vec<HostData> = (0..)
        .map_while(|slot| {
            g.nodes
                .iter()
                .find(|n| n.op == Op::Input { slot })
                .map(|n| data(n.dtype, n.shape.numel(), slot as u64 + 11))
        })
        .collect();
    check_graph(b, &g, &inputs, compiled, text);
}

fn check_graph<B: Backend>(
    b: &B,
    g: &Graph,
    inputs: &[HostData],
    compiled: &mut HashMap<String, B::Compiled>,
    what: &str,
) {
    let refs: Vec<&HostData> = inputs.iter().collect();
    let want = interp::run(g, &refs).unwrap_or_else(|e| panic!("{e}\n{what}"));
    let got = run_graph(b, g, inputs, compiled);
    assert_close(&got, &want, has_transcendentals(g), what);
}

/// Buffers: upload/download round trips of every dtype and length, fills with every dtype's
/// awkward values, reuse after drop.
pub fn buffers<B: Backend>(b: &B) {
    let dtypes = [
        DType::Bool,
        DType::U8,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ];
    for &d in &dtypes {
        for n in [0, 1, 3, 7, 8, 1000, 65537] {
            let h = data(d, n, n as u64);
            let buf = b.upload(&h).unwrap();
            assert_eq!((buf.dtype(), buf.numel()), (d, n));
            assert_eq!(b.download(&buf).unwrap(), h, "{d} x {n}");
        }
        let values = [
            Scalar::F64(0.0),
            Scalar::F64(1.5),
            Scalar::F64(-1.0),
            Scalar::F64(f64::NEG_INFINITY),
            Scalar::F64(f64::NAN),
            Scalar::I64(-1),
            Scalar::I64(0x1234_5678_9abc),
        ];
        for v in values {
            for n in [1, 2, 5, 4096, 100_003] {
                let mut buf = b.alloc(d, n).unwrap();
                b.fill(&mut buf, v.cast(d)).unwrap();
                let got = b.download(&buf).unwrap();
                let want = HostData::filled(v.cast(d), n);
                assert!(
                    (0..n).all(|i| got.get(i) == want.get(i)
                        || (got.get(i).is_nan() && want.get(i).is_nan())),
                    "fill {d} x {n} with {v:?}: {:?}",
                    got.get(n - 1)
                );
            }
        }
    }
    // Dropped buffers are reused; their old contents never leak into a download of new data.
    for round in 0..3u64 {
        let h = data(DType::F32, 4096, round);
        let bufs: Vec<B::Buffer> = (0..4).map(|_| b.upload(&h).unwrap()).collect();
        for x in &bufs {
            assert_eq!(b.download(x).unwrap(), h);
        }
    }
    b.synchronize().unwrap();
}

fn unary_graph(op: &str, d: DType, shape: &str) -> String {
    format!("%0 = input #0 : {d}{shape}\n%1 = {op} %0 : {d}{shape}\nreturn %1\n")
}

/// Per-op graphs: every unary and binary op on the dtypes that have them, casts between every
/// pair of dtypes, every reduction over rows, columns and everything (shapes that take each
/// thread mapping), softmax, where, index, random.
pub fn every_op<B: Backend>(b: &B) {
    let mut compiled = HashMap::new();
    for t in op_graphs() {
        check_text(b, &t, &mut compiled);
    }
    println!(
        "{}: {} per-op kernels agree with the interpreter",
        b.name(),
        compiled.len()
    );
}

/// The graphs of [`every_op`], as text.
pub fn op_graphs() -> Vec<String> {
    let mut graphs = Vec::new();
    let shape = "[37, 5]";
    let unary = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Recip,
        UnaryOp::Sqrt,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Erf,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
    ];
    for d in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        for u in unary {
            graphs.push(unary_graph(u.name(), d, shape));
        }
    }
    for d in [DType::I32, DType::I64] {
        for u in [UnaryOp::Neg, UnaryOp::Abs] {
            graphs.push(unary_graph(u.name(), d, shape));
        }
    }
    graphs.push(unary_graph("not", DType::Bool, shape));
    let arith = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Mod,
    ];
    let compare = [BinaryOp::Lt, BinaryOp::Le, BinaryOp::Eq, BinaryOp::Ne];
    for d in [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::U8,
    ] {
        let ops: Vec<BinaryOp> = arith
            .iter()
            .copied()
            .chain(d.is_float().then_some(BinaryOp::Pow))
            .collect();
        for op in ops {
            let t = format!(
                "%0 = input #0 : {d}{shape}\n%1 = input #1 : {d}{shape}\n%2 = {} %0, %1 : {d}{shape}\nreturn %2\n",
                op.name()
            );
            graphs.push(t);
        }
        for op in compare {
            let t = format!(
                "%0 = input #0 : {d}{shape}\n%1 = input #1 : {d}{shape}\n%2 = {} %0, %1 : bool{shape}\nreturn %2\n",
                op.name()
            );
            graphs.push(t);
        }
    }
    for op in [BinaryOp::And, BinaryOp::Or, BinaryOp::Xor] {
        let t = format!(
            "%0 = input #0 : bool{shape}\n%1 = input #1 : bool{shape}\n%2 = {} %0, %1 : bool{shape}\nreturn %2\n",
            op.name()
        );
        graphs.push(t);
    }
    let all = [
        DType::Bool,
        DType::U8,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ];
    for from in all {
        for to in all {
            if from != to {
                let t = format!(
                    "%0 = input #0 : {from}{shape}\n%1 = cast %0 : {to}{shape}\nreturn %1\n"
                );
                graphs.push(t);
            }
        }
    }
    // Reductions: rows (a group per row), columns and full (thread and one-group mappings),
    // long rows, and many short rows.
    for (dims, axes, out) in [
        ("[33, 300]", "[1]", "[33]"),
        ("[33, 300]", "[0]", "[300]"),
        ("[33, 300]", "[0, 1]", "[]"),
        ("[3, 5000]", "[1]", "[3]"),
        ("[20000, 3]", "[1]", "[20000]"),
        ("[4, 6, 7]", "[0, 2]", "[6]"),
    ] {
        for (op, dtypes) in [
            (
                "sum",
                &[DType::F32, DType::F64, DType::I32, DType::I64, DType::F16][..],
            ),
            ("prod", &[DType::F64, DType::I64][..]),
            ("max", &[DType::F32, DType::I32, DType::BF16][..]),
            ("min", &[DType::F64, DType::U8][..]),
            ("all", &[DType::Bool][..]),
            ("any", &[DType::Bool][..]),
        ] {
            for d in dtypes {
                let t = format!(
                    "%0 = input #0 : {d}{dims}\n%1 = reduce {op} %0 axes={axes} : {d}{out}\nreturn %1\n"
                );
                graphs.push(t);
            }
        }
    }
    let others = [
        // softmax: two Reduce phases and a Store phase in one kernel.
        "%0 = input #0 : f32[3, 500]
%1 = reduce max %0 axes=[1] keepdims : f32[3, 1]
%2 = reshape %1 : f32[3]
%3 = broadcast %2 axes=[1] : f32[3, 500]
%4 = sub %0, %3 : f32[3, 500]
%5 = exp %4 : f32[3, 500]
%6 = reduce sum %5 axes=[1] keepdims : f32[3, 1]
%7 = reshape %6 : f32[3]
%8 = broadcast %7 axes=[1] : f32[3, 500]
%9 = div %5, %8 : f32[3, 500]
return %9
",
        "%0 = input #0 : bool[6, 7]
%1 = input #1 : f32[6, 7]
%2 = input #2 : f32[6, 7]
%3 = where %0, %1, %2 : f32[6, 7]
return %3
",
        "%0 = index axis=1 : i64[6, 7]
%1 = index axis=0 : i32[6, 7]
%2 = cast %1 : i64[6, 7]
%3 = add %0, %2 : i64[6, 7]
return %3
",
        "%0 = random uniform seed=7 : f32[1000]
%1 = random normal seed=9 : f64[1000]
return %0, %1
",
        // a transpose (strided loads), then a column sum of it.
        "%0 = input #0 : f32[40, 50]
%1 = reindex %0 [i1, i0] overflow=0.0 : f32[50, 40]
%2 = reduce sum %1 axes=[0] : f32[40]
return %1, %2
",
    ];
    graphs.extend(others.iter().map(|t| t.to_string()));
    graphs
}

/// The random-graph fuzzer (`metaops::gen`) on `b` against the interpreter.
pub fn random_graphs<B: Backend>(b: &B, seeds: std::ops::Range<u64>) {
    let cfg = GenConfig::default();
    let mut compiled = HashMap::new();
    let (mut graphs, mut kernels) = (0, 0);
    for seed in seeds {
        let (g, inputs) = random_graph(seed, &cfg);
        let g = passes::simplify(&g, &passes::PassCx::default());
        let what = format!("seed {seed}\n{g}");
        check_graph(b, &g, &inputs, &mut compiled, &what);
        graphs += 1;
        kernels += schedule(&g).kernel_count();
    }
    println!(
        "{}: {graphs} random graphs, {kernels} kernels ({} distinct) agree with the interpreter",
        b.name(),
        compiled.len()
    );
}

fn row_major(m: usize, n: usize, k: usize) -> GemmLayout {
    GemmLayout {
        m,
        n,
        k,
        dst: MatStrides {
            rs: n as isize,
            cs: 1,
        },
        lhs: MatStrides {
            rs: k as isize,
            cs: 1,
        },
        rhs: MatStrides {
            rs: n as isize,
            cs: 1,
        },
        batch: vec![],
    }
}

/// One past the largest offset a matrix of `l` reaches (at least 1).
fn span(
    l: &GemmLayout,
    mat: MatStrides,
    rows: usize,
    cols: usize,
    pick: fn(&BatchAxis) -> isize,
) -> usize {
    if rows == 0 || cols == 0 {
        return 1;
    }
    let mut hi = (rows as isize - 1) * mat.rs + (cols as isize - 1) * mat.cs;
    for b in &l.batch {
        hi += (b.extent.max(1) as isize - 1) * pick(b);
    }
    hi as usize + 1
}

/// The backend's GEMM against `gemm_reference` on layouts of every form: row-major, transposed
/// operands, column-major dst, padded leading dimensions, strided views (no unit stride),
/// vectors, k = 0, batches broadcast either way, summed batch axes, an empty summed axis.
pub fn contractions<B: Backend>(b: &B) {
    let mut layouts = vec![
        row_major(1, 1, 1),
        row_major(2, 3, 4),
        row_major(33, 31, 65),
        row_major(1, 17, 9),
        row_major(17, 1, 9),
        row_major(256, 192, 128),
    ];
    let mut t = row_major(13, 11, 7);
    t.lhs = MatStrides { rs: 1, cs: 13 };
    t.rhs = MatStrides { rs: 1, cs: 7 };
    layouts.push(t.clone());
    t.dst = MatStrides { rs: 1, cs: 13 };
    layouts.push(t);
    let mut p = row_major(13, 11, 7);
    p.dst = MatStrides { rs: 14, cs: 1 };
    p.lhs = MatStrides { rs: 12, cs: 1 };
    p.rhs = MatStrides { rs: 13, cs: 1 };
    layouts.push(p);
    // A strided view: every other row and column of lhs (no unit stride).
    let mut s = row_major(6, 5, 4);
    s.lhs = MatStrides { rs: 16, cs: 2 };
    layouts.push(s);
    // dst with no unit stride.
    let mut s = row_major(6, 5, 4);
    s.dst = MatStrides { rs: 10, cs: 2 };
    layouts.push(s);
    // k = 0: zeros.
    let mut z = row_major(3, 4, 0);
    z.lhs.rs = 0;
    z.rhs.rs = 0;
    layouts.push(z);
    // Unit M with zero strides.
    let mut u = row_major(1, 6, 5);
    u.lhs.rs = 0;
    u.dst.rs = 0;
    layouts.push(u);
    // [3, 2] batch, lhs broadcast over the outer axis, rhs over the inner one.
    let (m, n, k) = (5, 6, 7);
    let mut bl = row_major(m, n, k);
    bl.batch = vec![
        BatchAxis {
            extent: 3,
            dst: (2 * m * n) as isize,
            lhs: 0,
            rhs: (n * k) as isize,
        },
        BatchAxis {
            extent: 2,
            dst: (m * n) as isize,
            lhs: (m * k) as isize,
            rhs: 0,
        },
    ];
    layouts.push(bl);
    // Summed batch axes (a weight gradient over images; convolution taps per image).
    let mut sm = row_major(6, 40, 8);
    sm.rhs = MatStrides { rs: 50, cs: 1 };
    sm.batch = vec![
        BatchAxis {
            extent: 5,
            dst: 240,
            lhs: 0,
            rhs: 400,
        },
        BatchAxis {
            extent: 3,
            dst: 0,
            lhs: 48,
            rhs: 1,
        },
    ];
    layouts.push(sm);
    let mut one = row_major(4, 4, 4);
    one.batch = vec![BatchAxis {
        extent: 9,
        dst: 0,
        lhs: 16,
        rhs: 16,
    }];
    layouts.push(one.clone());
    // An empty summed axis: zeros.
    one.batch[0].extent = 0;
    layouts.push(one);
    for l in &layouts {
        for dtype in [DType::F32, DType::F64] {
            let ld = span(l, l.dst, l.m, l.n, |x| x.dst);
            let la = span(l, l.lhs, l.m, l.k, |x| x.lhs);
            let lb = span(l, l.rhs, l.k, l.n, |x| x.rhs);
            let (a, c) = (data(dtype, la, 1), data(dtype, lb, 2));
            let sentinel = HostData::filled(Scalar::from_f64(12345.0, dtype), ld);
            let mut want = sentinel.clone();
            gemm_reference(l, &mut want, &a, &c);
            let mut dst = b.upload(&sentinel).unwrap();
            let (da, dc) = (b.upload(&a).unwrap(), b.upload(&c).unwrap());
            b.contraction(l, dtype, &mut dst, &da, &dc)
                .unwrap_or_else(|e| panic!("{e}\n{l:?}"));
            let got = b.download(&dst).unwrap();
            // Sums accumulate in the element type: scale the tolerance with k.
            let tol =
                if dtype == DType::F32 { 1e-5 } else { 1e-12 } * (l.k.max(1) as f64).sqrt() * 8.0;
            for i in 0..ld {
                let (g, w) = (got.get(i).to_f64(), want.get(i).to_f64());
                assert!(
                    (g - w).abs() <= tol * (1.0 + w.abs()),
                    "{dtype} {l:?}\nat {i}: got {g}, want {w}"
                );
            }
        }
    }
}

/// Compiled code survives `artifact` → `load`: the loaded kernel computes the same values.
pub fn artifacts<B: Backend>(b: &B) {
    let text = "%0 = input #0 : f32[3, 500]
%1 = reduce max %0 axes=[1] keepdims : f32[3, 1]
%2 = reshape %1 : f32[3]
%3 = broadcast %2 axes=[1] : f32[3, 500]
%4 = sub %0, %3 : f32[3, 500]
return %4
";
    let g = parse::parse(text).unwrap();
    let inputs = vec![data(DType::F32, 1500, 5)];
    let mut fresh = HashMap::new();
    let want = run_graph(b, &g, &inputs, &mut fresh);
    let mut loaded: HashMap<String, B::Compiled> = HashMap::new();
    for step in &schedule(&g).steps {
        if let metajit_metaops::schedule::Step::Kernel { kernel, .. } = step {
            let bytes = b.artifact(&fresh[&kernel.text()]);
            assert!(!bytes.is_empty());
            // SAFETY: the bytes are this backend's artifact of this very kernel.
            let c = unsafe { b.load(kernel, &bytes) }.unwrap_or_else(|e| panic!("{e}"));
            loaded.insert(kernel.text(), c);
        }
    }
    assert_eq!(run_graph(b, &g, &inputs, &mut loaded), want);
}

/// Launches with the wrong buffers are errors, and nothing runs.
pub fn bad_launches<B: Backend>(b: &B) {
    let g = parse::parse(&unary_graph("neg", DType::F32, "[4, 5]")).unwrap();
    let s = schedule(&g);
    let kernel: &Kernel = s
        .steps
        .iter()
        .find_map(|st| match st {
            metajit_metaops::schedule::Step::Kernel { kernel, .. } => Some(kernel),
            _ => None,
        })
        .expect("a kernel");
    let c = b.compile(kernel).unwrap();
    let sizes = vec![4i64, 5, 20, 20, 20, 20, 20, 20];
    let x = b.upload(&data(DType::F32, 20, 1)).unwrap();
    let outs: Vec<B::Buffer> = kernel
        .bufs
        .iter()
        .map(|p| b.alloc(p.dtype, p.numel(&sizes).unwrap()).unwrap())
        .collect();
    let valid: Vec<&B::Buffer> = kernel
        .bufs
        .iter()
        .zip(&outs)
        .map(|(p, o)| if p.output { o } else { &x })
        .collect();
    let out = kernel
        .bufs
        .iter()
        .position(|p| p.output)
        .expect("an output");
    let short = b.alloc(DType::F32, 3).unwrap();
    let wrong = b.alloc(DType::I32, 20).unwrap();
    // SAFETY: the valid launch is the scheduler's kernel on buffers of its extents; every
    // other one is rejected by the argument checks before anything runs.
    unsafe {
        b.launch(&c, kernel, &valid, &sizes).unwrap();
        assert!(
            b.launch(&c, kernel, &valid[..1], &sizes).is_err(),
            "too few buffers"
        );
        assert!(b.launch(&c, kernel, &valid, &[]).is_err(), "no sizes");
        let mut args = valid.clone();
        args[out] = &short;
        assert!(b.launch(&c, kernel, &args, &sizes).is_err(), "short output");
        args[out] = &wrong;
        assert!(b.launch(&c, kernel, &args, &sizes).is_err(), "wrong dtype");
        args[out] = &x;
        assert!(
            b.launch(&c, kernel, &args, &sizes).is_err(),
            "aliased output"
        );
    }
    // A GEMM whose operands are too short.
    let l = row_major(4, 4, 4);
    let mut d = b.alloc(DType::F32, 16).unwrap();
    let a = b.alloc(DType::F32, 15).unwrap();
    assert!(b.contraction(&l, DType::F32, &mut d, &a, &a).is_err());
}
