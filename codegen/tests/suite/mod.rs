//! One test body for every backend (as candle's `test_device!`): a test file instantiates it
//! per device with [`backend_tests!`]; a device that cannot be opened prints `skipped: ...`
//! and passes. `devices.rs` runs it on the CPU backend, on OpenCL (pocl in CI) and on CUDA.
//!
//! What it checks, each against an interpreter:
//! - hand-built kernels (`gpu_common`) against `kernel::interpret`, on every entry point a
//!   backend has (a GPU kernel's group and thread mappings; the CPU backend has one): every
//!   unary/binary op on every dtype that has it, casts between every pair of dtypes, runtime
//!   parameters, reductions of every op over rows, columns and everything, scatters with
//!   collisions, multi-phase kernels, the single-thread fallback, Philox, and every f16/bf16
//!   bit pattern through f32 and back;
//! - scheduled graphs (`schedule::run_steps`, each kernel step against `kernel::interpret`
//!   and the outputs against `interp::run`): reductions through the scheduler, softmax,
//!   where, index, random, a transpose, and random graphs of `metaops::gen`, raw and
//!   simplified;
//! - buffers (round trips, fills, reuse), GEMM layouts against `gemm_reference`, artifacts
//!   that load back, and launches with wrong buffers (errors, nothing run).
//!
//! Tolerances: exact ops bit for bit (any NaN matches any NaN); transcendentals, `pow`, float
//! sums and products (reassociated) and normal samples within a relative tolerance per dtype
//! (f32 1e-5, f64 1e-12, f16 2e-3, bf16 1e-2; 16 times that for float scatter-adds and
//! products, which round at every combine); max/min reductions exactly, except that -0.0 and
//! +0.0 match. Graph outputs use the CPU fuzzer's rule (relative 1e-3 for graphs with inexact
//! ops, else exact). GEMM: relative 1e-5 (f32) or 1e-12 (f64) times 8 sqrt(k).
//!
//! `METAJIT_FUZZ_SEEDS` (default 150) / `METAJIT_FUZZ_FROM` (0) choose the simplified random
//! graphs; `METAJIT_FUZZ_SEEDS=2000 METAJIT_FUZZ_FROM=1000` is a longer soak.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Instant;

use crate::gpu_common::Axis;
use half::{bf16, f16};
use metajit_codegen::cpu::backend::Cpu;
use metajit_codegen::gpu::cuda::Cuda;
use metajit_codegen::gpu::opencl::OpenCl;
use metajit_codegen::{Backend, BackendError, DeviceBuffer};
use metajit_metaops::contraction::{BatchAxis, GemmLayout, MatStrides, gemm_reference};
use metajit_metaops::r#gen::{GenConfig, Rng, agree, inexact, random_graph};
use metajit_metaops::kernel::{self, Kernel};
use metajit_metaops::schedule::{self, Step, schedule};
use metajit_metaops::{
    BinaryOp, DType, Distribution, Graph, HostData, Op, ReduceOp, Scalar, UnaryOp, interp, parse,
    passes,
};

/// A [`Backend`] as the test body drives it: compiling many kernels at once (one OpenCL
/// program, one compiler start-up) and launching a chosen entry point (a GPU kernel has one
/// per thread mapping; `launch` picks one from the sizes). The defaults suit a backend with
/// one entry point per kernel.
pub trait Device: Backend {
    /// Compiles `kernels`, one result per kernel, in order.
    fn compile_all(&self, kernels: &[&Kernel]) -> Result<Vec<Self::Compiled>, BackendError> {
        kernels.iter().map(|k| self.compile(k)).collect()
    }

    /// How many entry points `c` has.
    fn entries(&self, _c: &Self::Compiled) -> usize {
        1
    }

    /// The name of entry point `entry`, for messages.
    fn entry_name(&self, _c: &Self::Compiled, _entry: usize) -> String {
        "launch".into()
    }

    /// Launches entry point `entry` of `c`.
    ///
    /// # Safety
    ///
    /// As [`Backend::launch`].
    unsafe fn launch_at(
        &self,
        c: &Self::Compiled,
        k: &Kernel,
        _entry: usize,
        bufs: &[&Self::Buffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        // SAFETY: passed on from the caller.
        unsafe { self.launch(c, k, bufs, sizes) }
    }
}

impl Device for Cpu {}

/// CUDA has no public per-entry launch: its tests run the entry `launch` picks.
impl Device for Cuda {}

impl Device for OpenCl {
    fn compile_all(&self, kernels: &[&Kernel]) -> Result<Vec<Self::Compiled>, BackendError> {
        self.compile_many(kernels)
    }

    fn entries(&self, c: &Self::Compiled) -> usize {
        c.rendered().entries.len()
    }

    fn entry_name(&self, c: &Self::Compiled, entry: usize) -> String {
        c.rendered().entries[entry].name.clone()
    }

    unsafe fn launch_at(
        &self,
        c: &Self::Compiled,
        k: &Kernel,
        entry: usize,
        bufs: &[&Self::Buffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        // SAFETY: passed on from the caller.
        unsafe { self.launch_entry(c, k, entry, bufs, sizes) }
    }
}

/// Instantiates every test of the body for one device: `$open` is an expression giving
/// `Result<backend, impl Display>`, evaluated once per test binary.
#[macro_export]
macro_rules! backend_tests {
    ($device:ident, $ty:ty, $open:expr) => {
        mod $device {
            #[allow(unused_imports)]
            use super::*;

            fn open() -> Option<&'static $ty> {
                static DEV: std::sync::OnceLock<Result<$ty, String>> = std::sync::OnceLock::new();
                match DEV.get_or_init(|| $open.map_err(|e| e.to_string())) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        $crate::gpu_common::skip_or_fail(stringify!($device), e);
                        None
                    }
                }
            }

            $crate::backend_tests!(@each open;
                buffers_round_trip_and_fill => buffers,
                elementwise_ops_of_every_dtype => elementwise_ops_of_every_dtype,
                casts_between_every_dtype_and_params => casts_between_every_dtype_and_params,
                reductions_over_rows_columns_and_all => reductions_over_rows_columns_and_all,
                scatters_multi_phase_and_fallbacks => scatters_multi_phase_and_fallbacks,
                half_precision_conversions_are_exact => half_precision_conversions_are_exact,
                scheduled_graphs => scheduled_graphs,
                random_graphs => random_graphs,
                contractions => contractions,
                artifacts_load_back => artifacts,
                bad_launches_are_errors => bad_launches,
            );
        }
    };
    (@each $open:ident; $($test:ident => $body:ident,)*) => {
        $(
            #[test]
            fn $test() {
                if let Some(d) = $open() {
                    $crate::suite::$body(d);
                }
            }
        )*
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

/// The distinct kernels (by text, in first-seen order) of the schedules of the per-op graphs
/// and of the fuzzer's simplified random graphs ([`fuzz_seeds`]).
pub fn scheduled_kernels() -> Vec<Kernel> {
    let mut graphs: Vec<Graph> = op_graphs()
        .iter()
        .map(|t| metajit_metaops::parse::parse(t).expect("the suite's graphs parse"))
        .collect();
    for seed in fuzz_seeds() {
        let (g, _) = random_graph(seed, &GenConfig::default());
        graphs.push(passes::simplify(&g, &passes::PassCx::default()));
    }
    let mut seen = std::collections::HashSet::new();
    graphs
        .iter()
        .flat_map(|g| schedule(g).steps)
        .filter_map(|step| match step {
            Step::Kernel { kernel, .. } => Some(kernel),
            _ => None,
        })
        .filter(|k| seen.insert(k.text()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Comparing and data.

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
    let r = crate::gpu_common::rel(a.dtype()) * if tol == Tol::Combines { 16.0 } else { 1.0 };
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
            let special = r.next_u64().is_multiple_of(5);
            if d.is_float() {
                let v = if special {
                    specials_f[(r.next_u64() % specials_f.len() as u64) as usize]
                } else {
                    (r.f64() - 0.5) * 20.0
                };
                Scalar::F64(v).cast(d)
            } else if d == DType::Bool {
                Scalar::Bool(r.next_u64() & 1 == 1)
            } else {
                let v = if special {
                    specials_i[(r.next_u64() % specials_i.len() as u64) as usize]
                } else {
                    (r.next_u64() % 41) as i64 - 20
                };
                Scalar::I64(v).cast(d)
            }
        }),
    )
}

struct Case {
    kernel: Kernel,
    /// One buffer per parameter (outputs hold their initial contents).
    bufs: Vec<HostData>,
    sizes: Vec<i64>,
    tol: Tol,
    what: String,
}

impl Case {
    /// A case of `kernel` over `sizes` with buffers from [`bufs_for`].
    fn new(
        kernel: &Kernel,
        sizes: Vec<i64>,
        seed: u64,
        init: Option<Scalar>,
        tol: Tol,
        what: impl Into<String>,
    ) -> Case {
        Case {
            bufs: bufs_for(kernel, &sizes, seed, init),
            kernel: kernel.clone(),
            sizes,
            tol,
            what: what.into(),
        }
    }
}

/// Uploads, launches entry `entry`, downloads every output.
fn run_on_device<D: Device>(
    dev: &D,
    c: &D::Compiled,
    k: &Kernel,
    entry: usize,
    bufs: &[HostData],
    sizes: &[i64],
) -> Vec<HostData> {
    // Host buffers hold at least one element; a parameter whose extents give none gets an
    // empty device buffer (which still has an element's bytes, as the trait promises).
    let empty = |p: &metajit_metaops::kernel::BufParam| p.numel(sizes) == Some(0);
    let dbufs: Vec<D::Buffer> = bufs
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
    let refs: Vec<&D::Buffer> = dbufs.iter().collect();
    // SAFETY: hand-built and scheduled kernels index within their declared extents, and the
    // buffers are fresh, used by nobody else.
    unsafe { dev.launch_at(c, k, entry, &refs, sizes) }.expect("launch");
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
fn check_cases<D: Device>(dev: &D, cases: &[Case]) {
    let t = Instant::now();
    let mut index: HashMap<&Kernel, usize> = HashMap::new();
    let mut kernels: Vec<&Kernel> = Vec::new();
    for c in cases {
        index.entry(&c.kernel).or_insert_with(|| {
            kernels.push(&c.kernel);
            kernels.len() - 1
        });
    }
    let compiled = dev.compile_all(&kernels).unwrap_or_else(|e| panic!("{e}"));
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
        for entry in 0..dev.entries(c) {
            launches += 1;
            let got = run_on_device(dev, c, &case.kernel, entry, &case.bufs, &case.sizes);
            for (p, (g, w)) in got.iter().zip(&want).enumerate() {
                if let Some(m) = mismatch(g, w, case.tol) {
                    failures.push(format!(
                        "{} sizes {:?} entry {}: b{p}: {m}",
                        case.what,
                        case.sizes,
                        dev.entry_name(c, entry)
                    ));
                }
            }
        }
    }
    println!(
        "{}: {} cases, {} kernels, {launches} launches: build {:.2?}, total {:.2?}",
        dev.name(),
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
// Hand-built kernels.

/// Every unary and binary op on every dtype that has it, over lengths 1, 3, 50 and 783.
pub fn elementwise_ops_of_every_dtype<D: Device>(dev: &D) {
    let mut cases = Vec::new();
    for d in DType::ALL {
        for op in UnaryOp::ALL {
            if !op.accepts(d) {
                continue;
            }
            let k = crate::gpu_common::unary(op, d);
            let tol = if op.is_transcendental() {
                Tol::Rel
            } else {
                Tol::Exact
            };
            for (j, &n) in LENGTHS.iter().enumerate() {
                let sizes = vec![n];
                let bufs = bufs_for(&k, &sizes, j as u64, None);
                cases.push(Case {
                    bufs,
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
            let k = crate::gpu_common::binary(op, d);
            let tol = if op == BinaryOp::Pow && d.is_float() {
                Tol::Rel
            } else {
                Tol::Exact
            };
            for (j, &n) in LENGTHS.iter().enumerate() {
                let sizes = vec![n];
                cases.push(Case::new(
                    &k,
                    sizes.clone(),
                    100 + j as u64,
                    None,
                    tol,
                    format!("{} {d}", op.name()),
                ));
            }
        }
    }
    check_cases(dev, &cases);
}

/// Casts between every pair of dtypes, a runtime parameter of every dtype, and a 2-D
/// element-wise kernel with an outer loop.
pub fn casts_between_every_dtype_and_params<D: Device>(dev: &D) {
    let mut cases = Vec::new();
    for from in DType::ALL {
        for to in DType::ALL {
            if from == to {
                continue;
            }
            let k = crate::gpu_common::cast(from, to);
            let sizes = vec![783];
            cases.push(Case::new(
                &k,
                sizes.clone(),
                7,
                None,
                Tol::Exact,
                format!("cast {from} -> {to}"),
            ));
        }
        // A runtime parameter of every dtype (its bits in the i64 slot).
        let k = crate::gpu_common::add_param(from);
        for (j, v) in [1.25f64, -3.0, 1e30, f64::NAN].into_iter().enumerate() {
            let p = Scalar::F64(v).cast(from);
            let sizes = vec![50, kernel::param_bits(p)];
            cases.push(Case::new(
                &k,
                sizes.clone(),
                9 + j as u64,
                None,
                Tol::Exact,
                format!("param {from} {p}"),
            ));
        }
    }
    // 2-D element-wise with an outer loop, an f32 parameter.
    let k = crate::gpu_common::elementwise_2d();
    for (a, b) in [(1, 1), (3, 50), (50, 3), (783, 7)] {
        let sizes = vec![a, b, kernel::param_bits(Scalar::F32(0.75))];
        cases.push(Case::new(
            &k,
            sizes.clone(),
            3,
            None,
            Tol::Exact,
            "elementwise 2-D",
        ));
    }
    check_cases(dev, &cases);
}

const SHAPES: [(i64, i64); 6] = [(1, 1), (3, 50), (50, 3), (1, 783), (783, 1), (20, 300)];

/// Every reduce op on every dtype that has it, over rows, columns and everything, on shapes
/// that take each mapping.
pub fn reductions_over_rows_columns_and_all<D: Device>(dev: &D) {
    let mut cases = Vec::new();
    for op in ReduceOp::ALL {
        for d in DType::ALL {
            if !op.accepts(d) {
                continue;
            }
            let tol = match op {
                ReduceOp::Sum | ReduceOp::Prod if d.is_float() => Tol::Rel,
                ReduceOp::Max | ReduceOp::Min => Tol::Zeros,
                _ => Tol::Exact,
            };
            for axis in [Axis::Rows, Axis::Columns, Axis::All] {
                let k = crate::gpu_common::reduce(op, d, axis);
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

/// Scatters with collisions (every combine op and dtype), multi-phase kernels (softmax, a
/// phase reading an earlier one's stores, a Reduce phase that also scatters), the
/// single-thread fallback and Philox samples.
pub fn scatters_multi_phase_and_fallbacks<D: Device>(dev: &D) {
    let mut cases = Vec::new();
    for op in ReduceOp::ALL {
        for d in DType::ALL {
            if !op.accepts(d) {
                continue;
            }
            let k = crate::gpu_common::scatter(op, d);
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
                bufs[1] = HostData::I64((0..n).map(|_| (r.next_u64() % m as u64) as i64).collect());
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
        let k = crate::gpu_common::softmax();
        let sizes = vec![a, b];
        cases.push(Case::new(&k, sizes.clone(), 5, None, Tol::Rel, "softmax"));
        let k = crate::gpu_common::store_then_reduce();
        cases.push(Case::new(
            &k,
            sizes.clone(),
            6,
            None,
            Tol::Rel,
            "store then reduce",
        ));
        let k = crate::gpu_common::row_scatter_and_max();
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
        let k = crate::gpu_common::last_write_wins();
        let sizes = vec![n];
        cases.push(Case::new(
            &k,
            sizes.clone(),
            11,
            None,
            Tol::Exact,
            "last write wins",
        ));
        for d in [DType::F32, DType::F64, DType::F16] {
            for dist in [Distribution::Uniform, Distribution::Normal] {
                let k = crate::gpu_common::random(d, dist);
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

/// Every f16 and bf16 bit pattern to f32, and f32 values around every f16/bf16 rounding
/// boundary back, bit for bit.
pub fn half_precision_conversions_are_exact<D: Device>(dev: &D) {
    // Every f16 and bf16 bit pattern through the device's f32 conversion and back, and f32
    // values around every rounding boundary to f16/bf16.
    let k16 = crate::gpu_common::cast(DType::F16, DType::F32);
    let kb = crate::gpu_common::cast(DType::BF16, DType::F32);
    let k32h = crate::gpu_common::cast(DType::F32, DType::F16);
    let k32b = crate::gpu_common::cast(DType::F32, DType::BF16);
    let all16 = HostData::F16((0..=u16::MAX).map(f16::from_bits).collect());
    let allb = HostData::BF16((0..=u16::MAX).map(bf16::from_bits).collect());
    let mut r = Rng(5);
    let f32s = HostData::F32(
        (0..65536)
            .map(|i| {
                if i % 2 == 0 {
                    // Near an f16 boundary: an f16 value's bits shifted, plus noise.
                    f32::from_bits(((i as u32) << 13).wrapping_add((r.next_u64() % 0x4000) as u32))
                } else {
                    f32::from_bits(r.next_u64() as u32)
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

// ---------------------------------------------------------------------------------------------
// Graphs.

/// Runs `graphs` (label, graph, inputs) on the device (every kernel step on the device, every
/// entry point of each kernel checked against the kernel interpreter, the first entry's
/// results passed on) and compares the outputs with `interp::run`.
pub fn check_graphs<D: Device>(dev: &D, graphs: &[(String, Graph, Vec<HostData>)]) {
    let t = Instant::now();
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
    let compiled = dev.compile_all(&kernels).unwrap_or_else(|e| panic!("{e}"));
    let built = t.elapsed();
    let mut failures = Vec::new();
    let (mut steps, mut launches) = (0, 0);
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
            for entry in 0..dev.entries(c) {
                launches += 1;
                let out = run_on_device(dev, c, k, entry, args, sizes);
                for (p, (o, e)) in out.iter().zip(&expect).enumerate() {
                    if let Some(m) = mismatch(o, e, tol).filter(|_| !agree(o, e, tolerant)) {
                        step_failures.push(format!(
                            "entry {}: b{p}: {m}\n{k}",
                            dev.entry_name(c, entry)
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
                "{seed}: kernel differs from interpret: {f}\ngraph:\n{g}"
            ));
            continue;
        }
        // On a GPU, an output reached through a step after an inexact value (`gen::step_sensitive`)
        // may differ by the step: not compared there (the CPU backend is).
        let stepped = metajit_metaops::r#gen::step_sensitive(g);
        for (k, (w, o)) in want.iter().zip(&got).enumerate() {
            if dev.name() != "cpu" && stepped[g.outputs[k].index()] {
                continue;
            }
            if !agree(w, o, tolerant) {
                failures.push(format!(
                    "{seed}: output {k} differs from the reference\nwant {w:?}\ngot  {o:?}\ngraph:\n{g}"
                ));
            }
        }
    }
    println!(
        "{}: {} graphs, {} kernels, {steps} kernel steps, {launches} launches: build {:.2?}, total {:.2?}",
        dev.name(),
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

// ---------------------------------------------------------------------------------------------
// Buffers.

/// Buffers: upload/download round trips of every dtype and length (awkward values included:
/// NaN payloads, infinities, subnormals, extremes), fills with every dtype's awkward values,
/// reuse after drop.
pub fn buffers<B: Backend>(b: &B) {
    for d in DType::ALL {
        for n in [0, 1, 3, 7, 8, 9, 1000, 65537] {
            let h = data(d, n, n as u64);
            let buf = b.upload(&h).unwrap();
            assert_eq!((buf.dtype(), buf.numel()), (d, n));
            let back = b.download(&buf).unwrap();
            assert_eq!(mismatch(&back, &h, Tol::Exact), None, "{d} x {n}");
        }
        let values = [
            Scalar::F64(0.0),
            Scalar::F64(1.5),
            Scalar::F64(-1.0),
            Scalar::F64(-2.5),
            Scalar::F64(f64::NEG_INFINITY),
            Scalar::F64(f64::NAN),
            Scalar::I64(-1),
            Scalar::I64(0x1234_5678_9abc),
        ];
        for v in values {
            for n in [1, 2, 3, 5, 9, 4096, 100_003] {
                let mut buf = b.alloc(d, n).unwrap();
                b.fill(&mut buf, v.cast(d)).unwrap();
                let got = b.download(&buf).unwrap();
                let want = HostData::filled(v.cast(d), n);
                assert_eq!(
                    mismatch(&got, &want, Tol::Exact),
                    None,
                    "fill {d} x {n} with {v:?}"
                );
            }
        }
    }
    // A fill value of another dtype is cast to the buffer's, on every backend alike (the
    // OpenCL backend refused one while the CPU and CUDA backends cast it).
    for (d, v) in [
        (DType::F32, Scalar::F64(1.5)),
        (DType::I32, Scalar::F64(-2.75)),
        (DType::F16, Scalar::I64(3)),
        (DType::Bool, Scalar::F32(0.5)),
    ] {
        let mut buf = b.alloc(d, 5).unwrap();
        b.fill(&mut buf, v)
            .unwrap_or_else(|e| panic!("fill {d} with {v:?}: {e}"));
        assert_eq!(b.download(&buf).unwrap(), HostData::filled(v.cast(d), 5));
    }
    // Dropped buffers are reused; their old contents never leak into a download of new data.
    for round in 0..3u64 {
        let h = smooth_data(DType::F32, 4096, round);
        let bufs: Vec<B::Buffer> = (0..4).map(|_| b.upload(&h).unwrap()).collect();
        for x in &bufs {
            assert_eq!(b.download(x).unwrap(), h);
        }
    }
    b.synchronize().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Scheduled graphs.

/// Deterministic values of `dtype` (floats in [-2, 2) with some exact small integers): inputs
/// for graphs whose reductions should not cancel catastrophically.
pub fn smooth_data(dtype: DType, n: usize, seed: u64) -> HostData {
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

/// A graph (text) with inputs from [`smooth_data`].
fn graph_case(text: &str) -> (String, Graph, Vec<HostData>) {
    let g = parse::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let inputs: Vec<HostData> = (0..)
        .map_while(|slot| {
            g.nodes
                .iter()
                .find(|n| n.op == Op::Input { slot })
                .map(|n| smooth_data(n.dtype, n.shape.numel(), slot as u64 + 11))
        })
        .collect();
    (text.to_string(), g, inputs)
}

/// Graphs through the scheduler (the element-wise ops and casts are the hand-built kernels'):
/// reductions over rows, columns, everything and two of three axes (shapes that take each
/// thread mapping), softmax, where, index, random, a transpose then a column sum.
pub fn scheduled_graphs<D: Device>(dev: &D) {
    let graphs: Vec<_> = op_graphs().iter().map(|t| graph_case(t)).collect();
    check_graphs(dev, &graphs);
}

/// The graphs of [`scheduled_graphs`], as text.
pub fn op_graphs() -> Vec<String> {
    let mut graphs = Vec::new();
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

/// The random-graph fuzzer (`metaops::gen`): seeds 0..60 as generated, and
/// [`fuzz_seeds`] after `passes::simplify`.
pub fn random_graphs<D: Device>(dev: &D) {
    let cfg = GenConfig::default();
    let mut graphs: Vec<_> = (0..60)
        .map(|seed| {
            let (g, inputs) = random_graph(seed, &cfg);
            (format!("seed {seed}"), g, inputs)
        })
        .collect();
    graphs.extend(fuzz_seeds().map(|seed| {
        let (g, inputs) = random_graph(seed, &cfg);
        let g = passes::simplify(&g, &passes::PassCx::default());
        (format!("seed {seed}, simplified"), g, inputs)
    }));
    check_graphs(dev, &graphs);
}

// ---------------------------------------------------------------------------------------------
// GEMM, artifacts, launch checks.

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
        GemmLayout::row_major(1, 1, 1),
        GemmLayout::row_major(2, 3, 4),
        GemmLayout::row_major(33, 31, 65),
        GemmLayout::row_major(1, 17, 9),
        GemmLayout::row_major(17, 1, 9),
        GemmLayout::row_major(256, 192, 128),
    ];
    let mut t = GemmLayout::row_major(13, 11, 7);
    t.lhs = MatStrides { rs: 1, cs: 13 };
    t.rhs = MatStrides { rs: 1, cs: 7 };
    layouts.push(t.clone());
    t.dst = MatStrides { rs: 1, cs: 13 };
    layouts.push(t);
    let mut p = GemmLayout::row_major(13, 11, 7);
    p.dst = MatStrides { rs: 14, cs: 1 };
    p.lhs = MatStrides { rs: 12, cs: 1 };
    p.rhs = MatStrides { rs: 13, cs: 1 };
    layouts.push(p);
    // A strided view: every other row and column of lhs (no unit stride).
    let mut s = GemmLayout::row_major(6, 5, 4);
    s.lhs = MatStrides { rs: 16, cs: 2 };
    layouts.push(s);
    // dst with no unit stride.
    let mut s = GemmLayout::row_major(6, 5, 4);
    s.dst = MatStrides { rs: 10, cs: 2 };
    layouts.push(s);
    // k = 0: zeros.
    let mut z = GemmLayout::row_major(3, 4, 0);
    z.lhs.rs = 0;
    z.rhs.rs = 0;
    layouts.push(z);
    // Unit M with zero strides.
    let mut u = GemmLayout::row_major(1, 6, 5);
    u.lhs.rs = 0;
    u.dst.rs = 0;
    layouts.push(u);
    // [3, 2] batch, lhs broadcast over the outer axis, rhs over the inner one.
    let (m, n, k) = (5, 6, 7);
    let mut bl = GemmLayout::row_major(m, n, k);
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
    let mut sm = GemmLayout::row_major(6, 40, 8);
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
    let mut one = GemmLayout::row_major(4, 4, 4);
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
    // Both operands transposed with a long k; a batch with a column-major rhs.
    let mut tk = GemmLayout::row_major(4, 6, 33);
    tk.lhs = MatStrides { rs: 1, cs: 4 };
    tk.rhs = MatStrides { rs: 1, cs: 33 };
    layouts.push(tk);
    let mut bt = GemmLayout::row_major(37, 45, 50);
    bt.rhs = MatStrides { rs: 1, cs: 50 };
    bt.batch = vec![BatchAxis {
        extent: 2,
        dst: 37 * 45,
        lhs: 37 * 50,
        rhs: 45 * 50,
    }];
    layouts.push(bt);
    // A batch with lhs advancing and rhs broadcast, then a summed axis.
    let mut bs = GemmLayout::row_major(2, 3, 4);
    bs.batch = vec![
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
    ];
    layouts.push(bs);
    for l in &layouts {
        for dtype in [DType::F32, DType::F64] {
            let ld = span(l, l.dst, l.m, l.n, |x| x.dst);
            let la = span(l, l.lhs, l.m, l.k, |x| x.lhs);
            let lb = span(l, l.rhs, l.k, l.n, |x| x.rhs);
            let (a, c) = (smooth_data(dtype, la, 1), smooth_data(dtype, lb, 2));
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

/// Compiled code survives `artifact` → `load`: the loaded kernels (those of a scheduled
/// two-phase graph and the hand-built softmax) compute the same values on every entry point.
pub fn artifacts<D: Device>(dev: &D) {
    let text = "%0 = input #0 : f32[3, 500]
%1 = reduce max %0 axes=[1] keepdims : f32[3, 1]
%2 = reshape %1 : f32[3]
%3 = broadcast %2 axes=[1] : f32[3, 500]
%4 = sub %0, %3 : f32[3, 500]
return %4
";
    let (_, g, inputs) = graph_case(text);
    let refs: Vec<&HostData> = inputs.iter().collect();
    // Each kernel step with its sizes and arguments (outputs computed by the interpreter).
    let mut cases: Vec<(Kernel, Vec<i64>, Vec<HostData>)> = Vec::new();
    schedule::run_steps(&g, &schedule(&g), &refs, &mut |k, args, sizes, extent| {
        cases.push((k.clone(), sizes.to_vec(), args.to_vec()));
        kernel::interpret(k, args, sizes, 0..extent);
    });
    assert!(!cases.is_empty());
    let soft = crate::gpu_common::softmax();
    let sizes = vec![5, 40];
    cases.push((
        soft.clone(),
        sizes.clone(),
        bufs_for(&soft, &sizes, 1, None),
    ));
    for (k, sizes, bufs) in &cases {
        let c = dev.compile(k).unwrap_or_else(|e| panic!("{e}"));
        let bytes = dev.artifact(&c);
        assert!(!bytes.is_empty());
        // SAFETY: the bytes are this backend's artifact of this very kernel.
        let c2 = unsafe { dev.load(k, &bytes) }.unwrap_or_else(|e| panic!("{e}"));
        for entry in 0..dev.entries(&c) {
            let a = run_on_device(dev, &c, k, entry, bufs, sizes);
            let b = run_on_device(dev, &c2, k, entry, bufs, sizes);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(mismatch(y, x, Tol::Exact), None, "{k}");
            }
        }
    }
}

fn unary_graph(op: &str, d: DType, shape: &str) -> String {
    format!("%0 = input #0 : {d}{shape}\n%1 = {op} %0 : {d}{shape}\nreturn %1\n")
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
    let l = GemmLayout::row_major(4, 4, 4);
    let mut d = b.alloc(DType::F32, 16).unwrap();
    let a = b.alloc(DType::F32, 15).unwrap();
    assert!(b.contraction(&l, DType::F32, &mut d, &a, &a).is_err());
}
