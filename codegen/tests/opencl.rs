//! The OpenCL dialect of the GPU renderer, run on an OpenCL device (in CI: pocl, on the CPU)
//! against the kernel interpreter (`kernel::interpret`) and the graph interpreter
//! (`interp::run`): every unary/binary op and cast on every dtype, reductions of every op over
//! rows, columns and everything, scatters with collisions, multi-phase kernels, Philox, runtime
//! parameters, every entry point of every kernel (the group and the thread mapping), random
//! graphs through `schedule::run_steps`, and the generated GEMM.
//!
//! Tolerances: exact ops bit for bit (any NaN matches any NaN); transcendentals, `pow`, float
//! sums and products (reassociated, still accumulated in f64) and normal samples within a
//! relative tolerance per dtype (f32 1e-5, f64 1e-12, f16 2e-3, bf16 1e-2; 16 times that for
//! float scatter-adds and products, which round at every combine); max/min reductions
//! exactly, except that -0.0 and +0.0 match. Random graphs use the CPU fuzzer's rule (relative
//! 1e-3 for graphs with inexact ops).
//!
//! Without an OpenCL device every test prints `skipped: no OpenCL device (<why>)` and passes.
//! `METAJIT_OPENCL_GRAPHS=2000 cargo test --release -p metajit-codegen --test opencl --
//! --ignored` runs a longer soak of random graphs.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use half::{bf16, f16};
use metajit_codegen::Backend;
use metajit_codegen::gpu::opencl::{ClBuffer, ClCompiled, OpenCl};
use metajit_metaops::contraction::{BatchAxis, GemmLayout, MatStrides, gemm_reference};
use metajit_metaops::r#gen::{GenConfig, random_graph};
use metajit_metaops::kernel::{self, Kernel, PhaseKind};
use metajit_metaops::schedule::{self, Step};
use metajit_metaops::{
    BinaryOp, DType, Distribution, Graph, HostData, Op, ReduceOp, Scalar, UnaryOp, interp,
};

mod gpu_common;
use gpu_common::{Axis, DTYPES};

fn device() -> Option<&'static OpenCl> {
    static DEV: OnceLock<Result<OpenCl, String>> = OnceLock::new();
    match DEV.get_or_init(|| OpenCl::open(0).map_err(|e| e.to_string())) {
        Ok(d) => Some(d),
        Err(e) => {
            println!("skipped: no OpenCL device ({e})");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tol {
    /// Bit for bit (NaN matches NaN).
    Exact,
    /// Bit for bit, but -0.0 matches +0.0.
    Zeros,
    /// Within the dtype's relative tolerance.
    Rel,
    /// Within 16 times the dtype's relative tolerance: float scatter-adds and products, which
    /// round to the dtype at every combine (as the interpreter does), so ~100 combines into
    /// one element in another order differ by many roundings.
    Combines,
}

fn rel(d: DType) -> f64 {
    match d {
        DType::F16 => 2e-3,
        DType::BF16 => 1e-2,
        DType::F64 => 1e-12,
        _ => 1e-5,
    }
}

fn close(a: Scalar, b: Scalar, tol: Tol) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    if !a.dtype().is_float() || tol == Tol::Exact {
        return false;
    }
    let (x, y) = (a.to_f64(), b.to_f64());
    if x == y {
        return true; // -0.0 and +0.0
    }
    if tol == Tol::Zeros || x.is_nan() || y.is_nan() || x.is_infinite() || y.is_infinite() {
        return false;
    }
    let r = rel(a.dtype()) * if tol == Tol::Combines { 16.0 } else { 1.0 };
    (x - y).abs() <= r * (x.abs().max(y.abs()) + r)
}

fn mismatch(got: &HostData, want: &HostData, tol: Tol) -> Option<String> {
    if got.dtype() != want.dtype() || got.len() != want.len() {
        return Some(format!(
            "got {} x {}, want {} x {}",
            got.dtype(),
            got.len(),
            want.dtype(),
            want.len()
        ));
    }
    (0..got.len())
        .find(|&i| !close(got.get(i), want.get(i), tol))
        .map(|i| format!("element {i}: got {}, want {}", got.get(i), want.get(i)))
}

// ---------------------------------------------------------------------------------------------
// Data.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` values of `d`: mostly ordinary, with the awkward ones (NaN, ±inf, ±0, ties, extremes,
/// subnormals) mixed in.
fn data(d: DType, n: usize, seed: u64) -> HostData {
    let mut r = Rng(seed.wrapping_mul(7919).wrapping_add(d as u64));
    let specials_f = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        0.5,
        1.5,
        2.5,
        -2.5,
        1e-40,
        1e30,
        -1e30,
        1e300,
        3.0e9,
        -3.0e9,
        65519.0,
        65520.0,
        255.5,
        -1.0,
        1.0,
    ];
    let specials_i = [
        i64::MIN,
        i64::MAX,
        i32::MIN as i64,
        i32::MAX as i64,
        -1,
        0,
        1,
        2,
        255,
        256,
        -7,
        7,
        63,
        64,
    ];
    HostData::from_scalars(
        d,
        (0..n).map(|_| {
            let special = r.next().is_multiple_of(5);
            if d.is_float() {
                let v = if special {
                    specials_f[(r.next() % specials_f.len() as u64) as usize]
                } else {
                    (r.f64() - 0.5) * 20.0
                };
                Scalar::F64(v).cast(d)
            } else if d == DType::Bool {
                Scalar::Bool(r.next() & 1 == 1)
            } else {
                let v = if special {
                    specials_i[(r.next() % specials_i.len() as u64) as usize]
                } else {
                    (r.next() % 41) as i64 - 20
                };
                Scalar::I64(v).cast(d)
            }
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Running kernels on the device against the interpreter.

struct Case {
    kernel: Kernel,
    /// One buffer per parameter (outputs hold their initial contents).
    bufs: Vec<HostData>,
    sizes: Vec<i64>,
    tol: Tol,
    what: String,
}

/// Uploads, launches entry `entry`, downloads every output.
fn run_on_device(
    dev: &OpenCl,
    c: &ClCompiled,
    k: &Kernel,
    entry: usize,
    bufs: &[HostData],
    sizes: &[i64],
) -> Vec<HostData> {
    // Host buffers hold at least one element; a parameter whose extents give none gets an
    // empty device buffer (which still has an element's bytes, as the trait promises).
    let empty = |p: &metajit_metaops::kernel::BufParam| p.numel(sizes) == Some(0);
    let dbufs: Vec<ClBuffer> = bufs
        .iter()
        .zip(&k.bufs)
        .map(|(b, p)| {
            if empty(p) {
                dev.alloc(p.dtype, 0).expect("alloc")
            } else {
                dev.upload(b).expect("upload")
            }
        })
        .collect();
    let refs: Vec<&ClBuffer> = dbufs.iter().collect();
    // SAFETY: hand-built and scheduled kernels index within their declared extents, and the
    // buffers are fresh, used by nobody else.
    unsafe { dev.launch_entry(c, k, entry, &refs, sizes) }.expect("launch");
    dbufs
        .iter()
        .zip(bufs)
        .zip(&k.bufs)
        .map(|((d, h), p)| {
            if p.output && !empty(p) {
                dev.download(d).expect("download")
            } else {
                h.clone()
            }
        })
        .collect()
}

/// Compiles every case's kernel into one program, runs every entry point of every case and
/// compares with the interpreter; panics with every failure.
fn check_cases(dev: &OpenCl, cases: &[Case]) {
    let t = Instant::now();
    let mut index: HashMap<&Kernel, usize> = HashMap::new();
    let mut kernels: Vec<&Kernel> = Vec::new();
    for c in cases {
        index.entry(&c.kernel).or_insert_with(|| {
            kernels.push(&c.kernel);
            kernels.len() - 1
        });
    }
    let compiled = dev.compile_many(&kernels).unwrap_or_else(|e| panic!("{e}"));
    let built = t.elapsed();
    let mut failures = Vec::new();
    let mut launches = 0;
    for case in cases {
        let c = &compiled[index[&case.kernel]];
        let mut want = case.bufs.clone();
        kernel::interpret(
            &case.kernel,
            &mut want,
            &case.sizes,
            full_range(&case.kernel, &case.sizes),
        );
        for entry in 0..c.rendered().entries.len() {
            launches += 1;
            let got = run_on_device(dev, c, &case.kernel, entry, &case.bufs, &case.sizes);
            for (p, (g, w)) in got.iter().zip(&want).enumerate() {
                if let Some(m) = mismatch(g, w, case.tol) {
                    failures.push(format!(
                        "{} sizes {:?} entry {}: b{p}: {m}",
                        case.what,
                        case.sizes,
                        c.rendered().entries[entry].name
                    ));
                }
            }
        }
    }
    println!(
        "{} cases, {} kernels, {launches} launches: build {:.2?}, total {:.2?}",
        cases.len(),
        kernels.len(),
        built,
        t.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn full_range(k: &Kernel, sizes: &[i64]) -> std::ops::Range<i64> {
    match k.split_extent() {
        Some(kernel::Extent::Size(s)) => 0..sizes[s],
        Some(kernel::Extent::Const(c)) => 0..c as i64,
        None => 0..1,
    }
}

/// Buffers for a kernel: inputs from `data`, outputs zeroed (or filled with `init`).
fn bufs_for(k: &Kernel, sizes: &[i64], seed: u64, init: Option<Scalar>) -> Vec<HostData> {
    k.bufs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n = p.numel(sizes).expect("sizes").max(1);
            if p.output {
                match init {
                    Some(v) => HostData::filled(v, n),
                    None => HostData::zeros(p.dtype, n),
                }
            } else {
                data(p.dtype, n, seed * 31 + i as u64)
            }
        })
        .collect()
}

const LENGTHS: [i64; 4] = [1, 3, 50, 783];

/// Data for float sums and products, whose order the device changes: values in [0, 1) (sums)
/// or near 1 (products), so that reassociation changes the result by rounding only (values
/// of mixed magnitude and sign can cancel catastrophically in one order and not another);
/// case 2 has an infinity, case 3 a NaN.
fn sum_data(op: ReduceOp, d: DType, n: usize, case: usize) -> HostData {
    let mut r = Rng(case as u64 + 77);
    HostData::from_scalars(
        d,
        (0..n).map(|i| {
            let x = r.f64();
            let v = match (case, i) {
                (2, 1) => f64::INFINITY,
                (3, 2) => f64::NAN,
                _ if op == ReduceOp::Prod => 1.0 + (x - 0.5) / 32.0,
                _ => x,
            };
            Scalar::F64(v).cast(d)
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Per-op tests.

#[test]
fn elementwise_ops_of_every_dtype() {
    let Some(dev) = device() else { return };
    let mut cases = Vec::new();
    for d in DTYPES {
        for op in UnaryOp::ALL {
            if !op.accepts(d) {
                continue;
            }
            let k = gpu_common::unary(op, d);
            let tol = if op.is_transcendental() {
                Tol::Rel
            } else {
                Tol::Exact
            };
            for (j, &n) in LENGTHS.iter().enumerate() {
                let sizes = vec![n];
                cases.push(Case {
                    bufs: bufs_for(&k, &sizes, j as u64, None),
                    kernel: k.clone(),
                    sizes,
                    tol,
                    what: format!("{} {d}", op.name()),
                });
            }
        }
        for op in BinaryOp::ALL {
            if !op.accepts(d) {
                continue;
            }
            let k = gpu_common::binary(op, d);
            let tol = if op == BinaryOp::Pow && d.is_float() {
                Tol::Rel
            } else {
                Tol::Exact
            };
            for (j, &n) in LENGTHS.iter().enumerate() {
                let sizes = vec![n];
                cases.push(Case {
                    bufs: bufs_for(&k, &sizes, 100 + j as u64, None),
                    kernel: k.clone(),
                    sizes,
                    tol,
                    what: format!("{} {d}", op.name()),
                });
            }
        }
    }
    check_cases(dev, &cases);
}

#[test]
fn casts_between_every_dtype_and_params() {
    let Some(dev) = device() else { return };
    let mut cases = Vec::new();
    for from in DTYPES {
        for to in DTYPES {
            if from == to {
                continue;
            }
            let k = gpu_common::cast(from, to);
            let sizes = vec![783];
            cases.push(Case {
                bufs: bufs_for(&k, &sizes, 7, None),
                kernel: k,
                sizes,
                tol: Tol::Exact,
                what: format!("cast {from} -> {to}"),
            });
        }
        // A runtime parameter of every dtype (its bits in the i64 slot).
        let k = gpu_common::add_param(from);
        for (j, v) in [1.25f64, -3.0, 1e30, f64::NAN].into_iter().enumerate() {
            let p = Scalar::F64(v).cast(from);
            let sizes = vec![50, kernel::param_bits(p)];
            cases.push(Case {
                bufs: bufs_for(&k, &sizes, 9 + j as u64, None),
                kernel: k.clone(),
                sizes,
                tol: Tol::Exact,
                what: format!("param {from} {p}"),
            });
        }
    }
    // 2-D element-wise with an outer loop, an f32 parameter.
    let k = gpu_common::elementwise_2d();
    for (a, b) in [(1, 1), (3, 50), (50, 3), (783, 7)] {
        let sizes = vec![a, b, kernel::param_bits(Scalar::F32(0.75))];
        cases.push(Case {
            bufs: bufs_for(&k, &sizes, 3, None),
            kernel: k.clone(),
            sizes,
            tol: Tol::Exact,
            what: "elementwise 2-D".into(),
        });
    }
    check_cases(dev, &cases);
}

const SHAPES: [(i64, i64); 6] = [(1, 1), (3, 50), (50, 3), (1, 783), (783, 1), (20, 300)];

#[test]
fn reductions_over_rows_columns_and_all() {
    let Some(dev) = device() else { return };
    let mut cases = Vec::new();
    for op in ReduceOp::ALL {
        for d in DTYPES {
            if !op.accepts(d) {
                continue;
            }
            let tol = match op {
                ReduceOp::Sum | ReduceOp::Prod if d.is_float() => Tol::Rel,
                ReduceOp::Max | ReduceOp::Min => Tol::Zeros,
                _ => Tol::Exact,
            };
            for axis in [Axis::Rows, Axis::Columns, Axis::All] {
                let k = gpu_common::reduce(op, d, axis);
                for (j, &(a, b)) in SHAPES.iter().enumerate() {
                    let sizes = vec![a, b];
                    let mut bufs = bufs_for(&k, &sizes, j as u64, None);
                    if matches!(op, ReduceOp::Sum | ReduceOp::Prod) && d.is_float() {
                        bufs[0] = sum_data(op, d, bufs[0].len(), j);
                    }
                    cases.push(Case {
                        bufs,
                        kernel: k.clone(),
                        sizes,
                        tol,
                        what: format!("{} {d} {axis:?}", op.name()),
                    });
                }
            }
        }
    }
    check_cases(dev, &cases);
}

#[test]
fn scatters_multi_phase_and_fallbacks() {
    let Some(dev) = device() else { return };
    let mut cases = Vec::new();
    for op in ReduceOp::ALL {
        for d in DTYPES {
            if !op.accepts(d) {
                continue;
            }
            let k = gpu_common::scatter(op, d);
            let tol = match op {
                ReduceOp::Sum | ReduceOp::Prod if d.is_float() => Tol::Combines,
                ReduceOp::Max | ReduceOp::Min => Tol::Zeros,
                _ => Tol::Exact,
            };
            for (j, (n, m)) in [(1i64, 1i64), (50, 3), (783, 7), (783, 1000)]
                .into_iter()
                .enumerate()
            {
                let sizes = vec![n, m];
                let mut bufs = bufs_for(&k, &sizes, 40 + j as u64, Some(op.identity(d)));
                let mut r = Rng(j as u64);
                bufs[1] = HostData::I64((0..n).map(|_| (r.next() % m as u64) as i64).collect());
                if matches!(op, ReduceOp::Sum | ReduceOp::Prod) && d.is_float() {
                    bufs[0] = sum_data(op, d, n as usize, j);
                }
                cases.push(Case {
                    bufs,
                    kernel: k.clone(),
                    sizes,
                    tol,
                    what: format!("scatter {} {d}", op.name()),
                });
            }
        }
    }
    for (a, b) in SHAPES {
        let k = gpu_common::softmax();
        let sizes = vec![a, b];
        cases.push(Case {
            bufs: bufs_for(&k, &sizes, 5, None),
            kernel: k,
            sizes: sizes.clone(),
            tol: Tol::Rel,
            what: "softmax".into(),
        });
        let k = gpu_common::store_then_reduce();
        cases.push(Case {
            bufs: bufs_for(&k, &sizes, 6, None),
            kernel: k,
            sizes: sizes.clone(),
            tol: Tol::Rel,
            what: "store then reduce".into(),
        });
        let k = gpu_common::row_scatter_and_max();
        let sizes = vec![a, b, 5];
        let mut bufs = bufs_for(&k, &sizes, 8, Some(Scalar::F32(0.0)));
        bufs[0] = sum_data(ReduceOp::Sum, DType::F32, (a * b) as usize, 0);
        bufs[1] = HostData::I64((0..b).map(|i| (i * 7 + 3) % 5).collect());
        cases.push(Case {
            bufs,
            kernel: k,
            sizes,
            tol: Tol::Rel,
            what: "row scatter and max".into(),
        });
    }
    for n in LENGTHS {
        let k = gpu_common::last_write_wins();
        let sizes = vec![n];
        cases.push(Case {
            bufs: bufs_for(&k, &sizes, 11, None),
            kernel: k,
            sizes,
            tol: Tol::Exact,
            what: "last write wins".into(),
        });
        for d in [DType::F32, DType::F64, DType::F16] {
            for dist in [Distribution::Uniform, Distribution::Normal] {
                let k = gpu_common::random(d, dist);
                let sizes = vec![n, 0x0123_4567_89ab_cdef];
                cases.push(Case {
                    bufs: bufs_for(&k, &sizes, 12, Some(Scalar::F64(-7.0).cast(d))),
                    kernel: k,
                    sizes,
                    tol: if dist == Distribution::Uniform {
                        Tol::Exact
                    } else {
                        Tol::Rel
                    },
                    what: format!("random {d} {}", dist.name()),
                });
            }
        }
    }
    check_cases(dev, &cases);
}

// ---------------------------------------------------------------------------------------------
// Random graphs.

/// Whether the graph uses an op whose backends may differ from the reference by rounding (as
/// the CPU fuzzer decides).
fn inexact(g: &Graph) -> bool {
    g.nodes.iter().any(|n| match &n.op {
        Op::Unary(u) => u.is_transcendental(),
        Op::Binary(BinaryOp::Pow) => n.dtype.is_float(),
        Op::Random { .. } => true,
        Op::Reduce { .. } | Op::ReindexReduce { .. } => n.dtype.is_float(),
        _ => false,
    })
}

/// The CPU fuzzer's agreement rule.
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
        x == y || (x - y).abs() <= 1e-3 * (1.0 + x.abs().max(y.abs()))
    })
}

/// Runs graphs `seeds` on the device (every kernel step on OpenCL, every entry point of each
/// kernel checked against the kernel interpreter, the first entry's results passed on) and
/// compares the outputs with `interp::run`.
fn check_graphs(dev: &OpenCl, seeds: std::ops::Range<u64>) {
    let t = Instant::now();
    let cfg = GenConfig::default();
    let graphs: Vec<(u64, Graph, Vec<HostData>)> = seeds
        .map(|seed| {
            let (g, inputs) = random_graph(seed, &cfg);
            (seed, g, inputs)
        })
        .collect();
    let schedules: Vec<_> = graphs
        .iter()
        .map(|(_, g, _)| schedule::schedule(g))
        .collect();
    let mut index: HashMap<&Kernel, usize> = HashMap::new();
    let mut kernels: Vec<&Kernel> = Vec::new();
    for s in &schedules {
        for step in &s.steps {
            if let Step::Kernel { kernel, .. } = step {
                index.entry(kernel).or_insert_with(|| {
                    kernels.push(kernel);
                    kernels.len() - 1
                });
            }
        }
    }
    let compiled = dev.compile_many(&kernels).unwrap_or_else(|e| panic!("{e}"));
    let built = t.elapsed();
    let mut failures = Vec::new();
    let mut steps = 0;
    for ((seed, g, inputs), s) in graphs.iter().zip(&schedules) {
        let tolerant = inexact(g);
        let refs: Vec<&HostData> = inputs.iter().collect();
        let want = interp::run(g, &refs).expect("the interpreter runs generated graphs");
        let mut step_failures = Vec::new();
        let got = schedule::run_steps(g, s, &refs, &mut |k, args, sizes, extent| {
            steps += 1;
            let c = &compiled[index[k]];
            let mut expect = args.to_vec();
            kernel::interpret(k, &mut expect, sizes, 0..extent);
            let tol = if tolerant { Tol::Rel } else { Tol::Exact };
            let mut first = None;
            for entry in 0..c.rendered().entries.len() {
                let out = run_on_device(dev, c, k, entry, args, sizes);
                for (p, (o, e)) in out.iter().zip(&expect).enumerate() {
                    if let Some(m) = mismatch(o, e, tol).filter(|_| !agree(o, e, tolerant)) {
                        step_failures.push(format!(
                            "entry {}: b{p}: {m}\n{k}",
                            c.rendered().entries[entry].name
                        ));
                    }
                }
                first.get_or_insert(out);
            }
            if let Some(out) = first {
                for (a, o) in args.iter_mut().zip(out) {
                    *a = o;
                }
            }
        });
        if let Some(f) = step_failures.first() {
            failures.push(format!(
                "seed {seed}: kernel differs from interpret: {f}\ngraph:\n{g}"
            ));
            continue;
        }
        for (k, (w, o)) in want.iter().zip(&got).enumerate() {
            if !agree(w, o, tolerant) {
                failures.push(format!(
                    "seed {seed}: output {k} differs from the reference\nwant {w:?}\ngot  {o:?}\ngraph:\n{g}"
                ));
            }
        }
    }
    println!(
        "{} graphs, {} kernels, {steps} kernel steps: build {:.2?}, total {:.2?}",
        graphs.len(),
        kernels.len(),
        built,
        t.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn random_graphs_agree_with_the_interpreter() {
    let Some(dev) = device() else { return };
    check_graphs(dev, 0..60);
}

#[test]
#[ignore]
fn soak() {
    let Some(dev) = device() else { return };
    let n: u64 = std::env::var("METAJIT_OPENCL_GRAPHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // In batches, so that one program does not grow without bound.
    let mut start = 1000;
    while start < 1000 + n {
        let end = (start + 200).min(1000 + n);
        check_graphs(dev, start..end);
        start = end;
    }
}

// ---------------------------------------------------------------------------------------------
// The backend trait: compile, artifact and load, fill, contraction.

#[test]
fn backend_compile_reload_fill_and_gemm() {
    let Some(dev) = device() else { return };
    // Compile, artifact, load: the reloaded kernel computes the same.
    let k = gpu_common::softmax();
    let c = dev.compile(&k).expect("compile");
    let bytes = dev.artifact(&c);
    assert!(!bytes.is_empty(), "pocl gives program binaries");
    // SAFETY: the artifact of this very kernel from this backend.
    let c2 = unsafe { dev.load(&k, &bytes) }.expect("load");
    let sizes = vec![5, 40];
    let bufs = bufs_for(&k, &sizes, 1, None);
    let a = run_on_device(dev, &c, &k, 0, &bufs, &sizes);
    let b = run_on_device(dev, &c2, &k, 0, &bufs, &sizes);
    assert_eq!(mismatch(&a[1], &b[1], Tol::Exact), None);
    // SAFETY: garbage is refused before anything runs.
    assert!(unsafe { dev.load(&k, &[3, b'a']) }.is_err());

    // Fill of every dtype, download of odd lengths.
    for d in DTYPES {
        for n in [1usize, 3, 9] {
            let mut b = dev.alloc(d, n).expect("alloc");
            let v = Scalar::F64(-2.5).cast(d);
            dev.fill(&mut b, v).expect("fill");
            assert_eq!(dev.download(&b).expect("download"), HostData::filled(v, n));
            let h = data(d, n, 3);
            let back = dev
                .download(&dev.upload(&h).expect("upload"))
                .expect("download");
            assert_eq!(mismatch(&back, &h, Tol::Exact), None, "{d} x {n}");
        }
    }

    // Launch checks run before anything: wrong buffer count.
    let one = dev.upload(&HostData::F32(vec![1.0])).expect("upload");
    // SAFETY: refused by the checks.
    assert!(unsafe { dev.launch(&c, &k, &[&one], &[1, 1]) }.is_err());

    // GEMM: plain, transposed operands, batched with a broadcast and a summed batch axis.
    let layouts = [
        GemmLayout {
            m: 3,
            n: 5,
            k: 7,
            dst: MatStrides { rs: 5, cs: 1 },
            lhs: MatStrides { rs: 7, cs: 1 },
            rhs: MatStrides { rs: 5, cs: 1 },
            batch: vec![],
        },
        GemmLayout {
            m: 4,
            n: 6,
            k: 33,
            dst: MatStrides { rs: 6, cs: 1 },
            lhs: MatStrides { rs: 1, cs: 4 },
            rhs: MatStrides { rs: 1, cs: 33 },
            batch: vec![],
        },
        GemmLayout {
            m: 2,
            n: 3,
            k: 4,
            dst: MatStrides { rs: 3, cs: 1 },
            lhs: MatStrides { rs: 4, cs: 1 },
            rhs: MatStrides { rs: 3, cs: 1 },
            batch: vec![
                BatchAxis {
                    extent: 5,
                    dst: 6,
                    lhs: 8,
                    rhs: 0,
                },
                BatchAxis {
                    extent: 3,
                    dst: 0,
                    lhs: 40,
                    rhs: 12,
                },
            ],
        },
        GemmLayout {
            m: 37,
            n: 45,
            k: 50,
            dst: MatStrides { rs: 45, cs: 1 },
            lhs: MatStrides { rs: 50, cs: 1 },
            rhs: MatStrides { rs: 1, cs: 50 },
            batch: vec![BatchAxis {
                extent: 2,
                dst: 37 * 45,
                lhs: 37 * 50,
                rhs: 45 * 50,
            }],
        },
        GemmLayout {
            m: 1,
            n: 1,
            k: 1,
            dst: MatStrides { rs: 1, cs: 1 },
            lhs: MatStrides { rs: 1, cs: 1 },
            rhs: MatStrides { rs: 1, cs: 1 },
            batch: vec![],
        },
    ];
    for (i, l) in layouts.iter().enumerate() {
        for d in [DType::F32, DType::F64] {
            let reach = |rs: isize, cs: isize, rows: usize, cols: usize, batch: &[isize]| {
                let mut top = (rows as isize - 1) * rs + (cols as isize - 1) * cs;
                for (a, s) in l.batch.iter().zip(batch) {
                    top += (a.extent as isize - 1) * s;
                }
                top as usize + 1
            };
            let bl: Vec<isize> = l.batch.iter().map(|a| a.lhs).collect();
            let br: Vec<isize> = l.batch.iter().map(|a| a.rhs).collect();
            let bd: Vec<isize> = l.batch.iter().map(|a| a.dst).collect();
            let lhs = finite(d, reach(l.lhs.rs, l.lhs.cs, l.m, l.k, &bl), i as u64);
            let rhs = finite(d, reach(l.rhs.rs, l.rhs.cs, l.k, l.n, &br), 10 + i as u64);
            let nd = reach(l.dst.rs, l.dst.cs, l.m, l.n, &bd);
            let mut want = HostData::zeros(d, nd);
            gemm_reference(l, &mut want, &lhs, &rhs);
            let mut dst = dev.upload(&HostData::zeros(d, nd)).expect("upload");
            let (lb, rb) = (dev.upload(&lhs).expect("up"), dev.upload(&rhs).expect("up"));
            dev.contraction(l, d, &mut dst, &lb, &rb).expect("gemm");
            let got = dev.download(&dst).expect("download");
            if let Some(m) = mismatch(&got, &want, Tol::Rel) {
                panic!("GEMM layout {i} {d}: {m}");
            }
        }
    }
}

fn finite(d: DType, n: usize, seed: u64) -> HostData {
    let mut r = Rng(seed);
    HostData::from_scalars(d, (0..n).map(|_| Scalar::F64(r.f64() * 2.0 - 1.0).cast(d)))
}

#[test]
fn half_precision_conversions_are_exact() {
    // Every f16 and bf16 bit pattern through the device's f32 conversion and back, and f32
    // values around every rounding boundary to f16/bf16.
    let Some(dev) = device() else { return };
    let k16 = gpu_common::cast(DType::F16, DType::F32);
    let kb = gpu_common::cast(DType::BF16, DType::F32);
    let k32h = gpu_common::cast(DType::F32, DType::F16);
    let k32b = gpu_common::cast(DType::F32, DType::BF16);
    let all16 = HostData::F16((0..=u16::MAX).map(f16::from_bits).collect());
    let allb = HostData::BF16((0..=u16::MAX).map(bf16::from_bits).collect());
    let mut r = Rng(5);
    let f32s = HostData::F32(
        (0..65536)
            .map(|i| {
                if i % 2 == 0 {
                    // Near an f16 boundary: an f16 value's bits shifted, plus noise.
                    f32::from_bits(((i as u32) << 13).wrapping_add((r.next() % 0x4000) as u32))
                } else {
                    f32::from_bits(r.next() as u32)
                }
            })
            .collect(),
    );
    let n = 65536;
    let out = |d| HostData::zeros(d, n);
    let cases = vec![
        Case {
            kernel: k16,
            bufs: vec![all16, out(DType::F32)],
            sizes: vec![n as i64],
            tol: Tol::Exact,
            what: "f16 -> f32".into(),
        },
        Case {
            kernel: kb,
            bufs: vec![allb, out(DType::F32)],
            sizes: vec![n as i64],
            tol: Tol::Exact,
            what: "bf16 -> f32".into(),
        },
        Case {
            kernel: k32h,
            bufs: vec![f32s.clone(), out(DType::F16)],
            sizes: vec![n as i64],
            tol: Tol::Exact,
            what: "f32 -> f16".into(),
        },
        Case {
            kernel: k32b,
            bufs: vec![f32s, out(DType::BF16)],
            sizes: vec![n as i64],
            tol: Tol::Exact,
            what: "f32 -> bf16".into(),
        },
    ];
    check_cases(dev, &cases);
}

#[test]
fn reductions_pick_both_mappings() {
    // The launch picks the group mapping for long rows and the thread mapping for short ones.
    let k = gpu_common::reduce(ReduceOp::Sum, DType::F32, Axis::Rows);
    let r = metajit_codegen::gpu::render::render(&k, metajit_codegen::gpu::Dialect::OpenCl)
        .expect("render");
    use metajit_codegen::gpu::render::EntryKind;
    let kind = |sizes: &[i64]| r.entries[r.launch(sizes).entry].kind;
    assert_eq!(kind(&[10, 1000]), EntryKind::Group);
    assert_eq!(kind(&[1000, 8]), EntryKind::Thread);
    assert_eq!(kind(&[100_000, 500]), EntryKind::Thread);
    let _ = PhaseKind::Store(vec![]);
}

/// Opening a device where the OpenCL loader finds no platform (a child process of this test
/// binary with `OCL_ICD_VENDORS` pointing at an empty directory) is an error, not a panic;
/// so is a device index past the last device.
#[test]
fn no_platform_or_device_is_an_error() {
    if std::env::var_os("METAJIT_OPENCL_CHILD").is_some() {
        let e = OpenCl::open(0).expect_err("no platform");
        println!("child: {e}");
        assert_eq!(OpenCl::device_count().ok().filter(|&n| n > 0), None);
        return;
    }
    if let Some(dev) = device() {
        let _ = dev;
        let e = OpenCl::open(1000).expect_err("no device 1000");
        assert!(e.to_string().contains("no device 1000"), "{e}");
    }
    let empty = std::env::temp_dir().join(format!("metajit_no_icd_{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "no_platform_or_device_is_an_error",
            "--nocapture",
        ])
        .env("METAJIT_OPENCL_CHILD", "1")
        .env("OCL_ICD_VENDORS", &empty)
        .output()
        .expect("the child runs");
    let _ = std::fs::remove_dir_all(&empty);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{}",
        text.lines().find(|l| l.starts_with("child:")).unwrap_or("")
    );
}
