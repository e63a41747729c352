//! Hand-built kernels shared by the GPU renderer tests and the backend test body.
#![allow(dead_code)]

use metajit_metaops::kernel::{BufParam, Extent, Inst, Kernel, Phase, PhaseKind, Store, V};
use metajit_metaops::{BinaryOp, DType, Distribution, ReduceOp, Scalar, UnaryOp};

/// A phase body under construction.
#[derive(Default)]
pub struct B {
    pub body: Vec<(Inst, DType)>,
}

impl B {
    pub fn push(&mut self, i: Inst, d: DType) -> V {
        self.body.push((i, d));
        V(self.body.len() as u32 - 1)
    }
    pub fn dt(&self, v: V) -> DType {
        self.body[v.0 as usize].1
    }
    pub fn k(&mut self, s: Scalar) -> V {
        self.push(Inst::Const(s), s.dtype())
    }
    pub fn i64(&mut self, v: i64) -> V {
        self.k(Scalar::I64(v))
    }
    pub fn idx(&mut self, l: usize) -> V {
        self.push(Inst::LoopIdx(l), DType::I64)
    }
    pub fn size(&mut self, s: usize) -> V {
        self.push(Inst::Size(s), DType::I64)
    }
    pub fn load(&mut self, buf: usize, offset: V, d: DType) -> V {
        self.push(Inst::Load { buf, offset }, d)
    }
    pub fn un(&mut self, op: UnaryOp, a: V) -> V {
        let d = self.dt(a);
        self.push(Inst::Unary(op, a), d)
    }
    pub fn bin(&mut self, op: BinaryOp, a: V, b: V) -> V {
        let d = op.output_dtype(self.dt(a));
        self.push(Inst::Binary(op, a, b), d)
    }
    pub fn cast(&mut self, to: DType, a: V) -> V {
        self.push(Inst::Cast(to, a), to)
    }
    /// `a * s + b` on i64 values.
    pub fn lin(&mut self, a: V, s: V, b: V) -> V {
        let m = self.bin(BinaryOp::Mul, a, s);
        self.bin(BinaryOp::Add, m, b)
    }
    pub fn phase(self, inner: Vec<Extent>, kind: PhaseKind) -> Phase {
        Phase {
            inner,
            body: self.body,
            kind,
        }
    }
}

pub fn st(buf: usize, offset: V, value: V) -> Store {
    Store {
        buf,
        offset,
        value,
        mask: None,
        combine: None,
    }
}

pub fn s(i: usize) -> Extent {
    Extent::Size(i)
}

pub fn buf(dtype: DType, output: bool, dims: &[Extent]) -> BufParam {
    BufParam {
        dtype,
        output,
        dims: dims.to_vec(),
    }
}

/// `out[i] = op(x[i])` over `s0` elements.
pub fn unary(op: UnaryOp, d: DType) -> Kernel {
    let mut b = B::default();
    let i = b.idx(0);
    let x = b.load(0, i, d);
    let y = b.un(op, x);
    Kernel {
        bufs: vec![buf(d, false, &[s(0)]), buf(d, true, &[s(0)])],
        n_sizes: 1,
        outer: vec![],
        phases: vec![b.phase(vec![s(0)], PhaseKind::Store(vec![st(1, i, y)]))],
        parallel: true,
    }
}

/// `out[i] = op(x[i], y[i])` over `s0` elements.
pub fn binary(op: BinaryOp, d: DType) -> Kernel {
    let mut b = B::default();
    let i = b.idx(0);
    let x = b.load(0, i, d);
    let y = b.load(1, i, d);
    let z = b.bin(op, x, y);
    Kernel {
        bufs: vec![
            buf(d, false, &[s(0)]),
            buf(d, false, &[s(0)]),
            buf(op.output_dtype(d), true, &[s(0)]),
        ],
        n_sizes: 1,
        outer: vec![],
        phases: vec![b.phase(vec![s(0)], PhaseKind::Store(vec![st(2, i, z)]))],
        parallel: true,
    }
}

/// `out[i] = x[i] as to` over `s0` elements.
pub fn cast(from: DType, to: DType) -> Kernel {
    let mut b = B::default();
    let i = b.idx(0);
    let x = b.load(0, i, from);
    let y = b.cast(to, x);
    Kernel {
        bufs: vec![buf(from, false, &[s(0)]), buf(to, true, &[s(0)])],
        n_sizes: 1,
        outer: vec![],
        phases: vec![b.phase(vec![s(0)], PhaseKind::Store(vec![st(1, i, y)]))],
        parallel: true,
    }
}

/// A 2-D element-wise kernel with an outer loop: `out[o, i] = x[o, i] * p + y[i]` where `p`
/// is runtime parameter 2 (f32), over `[s0, s1]`.
pub fn elementwise_2d() -> Kernel {
    let d = DType::F32;
    let mut b = B::default();
    let o = b.idx(0);
    let i = b.idx(1);
    let n = b.size(1);
    let off = b.lin(o, n, i);
    let x = b.load(0, off, d);
    let y = b.load(1, i, d);
    let p = b.push(Inst::Param(2), d);
    let xp = b.bin(BinaryOp::Mul, x, p);
    let z = b.bin(BinaryOp::Add, xp, y);
    Kernel {
        bufs: vec![
            buf(d, false, &[s(0), s(1)]),
            buf(d, false, &[s(1)]),
            buf(d, true, &[s(0), s(1)]),
        ],
        n_sizes: 3,
        outer: vec![s(0)],
        phases: vec![b.phase(vec![s(1)], PhaseKind::Store(vec![st(2, off, z)]))],
        parallel: true,
    }
}

/// Which axis of an `[s0, s1]` input a reduction folds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Over `s1`, one result per row (`[s0]`).
    Rows,
    /// Over `s0`, one result per column (`[s1]`).
    Columns,
    /// Over everything (`[1]`).
    All,
}

/// A reduction of `x: d[s0, s1]` with `op` along `axis`, the result stored by a second phase.
pub fn reduce(op: ReduceOp, d: DType, axis: Axis) -> Kernel {
    let mut b = B::default();
    let (outer, inner, out_dims) = match axis {
        Axis::Rows => (vec![s(0)], vec![s(1)], vec![s(0)]),
        Axis::Columns => (vec![s(1)], vec![s(0)], vec![s(1)]),
        Axis::All => (vec![], vec![s(0), s(1)], vec![Extent::Const(1)]),
    };
    let n_outer = outer.len();
    let off = match axis {
        Axis::Rows => {
            let o = b.idx(0);
            let i = b.idx(1);
            let n = b.size(1);
            b.lin(o, n, i)
        }
        Axis::Columns => {
            let o = b.idx(0);
            let i = b.idx(1);
            let n = b.size(1);
            b.lin(i, n, o)
        }
        Axis::All => {
            let r = b.idx(0);
            let c = b.idx(1);
            let n = b.size(1);
            b.lin(r, n, c)
        }
    };
    let x = b.load(0, off, d);
    let p0 = b.phase(
        inner,
        PhaseKind::Reduce {
            op,
            value: x,
            stores: vec![],
        },
    );
    let mut b = B::default();
    let o = if n_outer > 0 { b.idx(0) } else { b.i64(0) };
    let r = b.push(Inst::PhaseResult(0), d);
    let p1 = b.phase(vec![], PhaseKind::Store(vec![st(1, o, r)]));
    Kernel {
        bufs: vec![buf(d, false, &[s(0), s(1)]), buf(d, true, &out_dims)],
        n_sizes: 2,
        outer,
        phases: vec![p0, p1],
        parallel: true,
    }
}

/// Softmax over the rows of `x: f32[s0, s1]`: max, sum of exp, then the quotient.
pub fn softmax() -> Kernel {
    let d = DType::F32;
    let row = |b: &mut B| {
        let o = b.idx(0);
        let i = b.idx(1);
        let n = b.size(1);
        let off = b.lin(o, n, i);
        (off, b.load(0, off, d))
    };
    let mut b = B::default();
    let (_, x) = row(&mut b);
    let p0 = b.phase(
        vec![s(1)],
        PhaseKind::Reduce {
            op: ReduceOp::Max,
            value: x,
            stores: vec![],
        },
    );
    let mut b = B::default();
    let (_, x) = row(&mut b);
    let m = b.push(Inst::PhaseResult(0), d);
    let t = b.bin(BinaryOp::Sub, x, m);
    let e = b.un(UnaryOp::Exp, t);
    let p1 = b.phase(
        vec![s(1)],
        PhaseKind::Reduce {
            op: ReduceOp::Sum,
            value: e,
            stores: vec![],
        },
    );
    let mut b = B::default();
    let (off, x) = row(&mut b);
    let m = b.push(Inst::PhaseResult(0), d);
    let z = b.push(Inst::PhaseResult(1), d);
    let t = b.bin(BinaryOp::Sub, x, m);
    let e = b.un(UnaryOp::Exp, t);
    let q = b.bin(BinaryOp::Div, e, z);
    let p2 = b.phase(vec![s(1)], PhaseKind::Store(vec![st(1, off, q)]));
    Kernel {
        bufs: vec![buf(d, false, &[s(0), s(1)]), buf(d, true, &[s(0), s(1)])],
        n_sizes: 2,
        outer: vec![s(0)],
        phases: vec![p0, p1, p2],
        parallel: true,
    }
}

/// Phase 0 stores `y = 2x` (f32 rows), phase 1 sums what phase 0 stored (loading the
/// output), phase 2 stores the sum: a later phase reads an earlier phase's stores.
pub fn store_then_reduce() -> Kernel {
    let d = DType::F32;
    let mut b = B::default();
    let o = b.idx(0);
    let i = b.idx(1);
    let n = b.size(1);
    let off = b.lin(o, n, i);
    let x = b.load(0, off, d);
    let two = b.k(Scalar::F32(2.0));
    let y = b.bin(BinaryOp::Mul, x, two);
    let p0 = b.phase(vec![s(1)], PhaseKind::Store(vec![st(1, off, y)]));
    let mut b = B::default();
    let o = b.idx(0);
    let i = b.idx(1);
    let n = b.size(1);
    let off = b.lin(o, n, i);
    // Read a neighbour's element (another thread's store in the group mapping).
    let one = b.i64(1);
    let n1 = b.bin(BinaryOp::Sub, n, one);
    let j = b.bin(BinaryOp::Sub, n1, i);
    let off2 = b.lin(o, n, j);
    let _ = off;
    let y = b.load(1, off2, d);
    let p1 = b.phase(
        vec![s(1)],
        PhaseKind::Reduce {
            op: ReduceOp::Sum,
            value: y,
            stores: vec![],
        },
    );
    let mut b = B::default();
    let o = b.idx(0);
    let r = b.push(Inst::PhaseResult(1), d);
    let p2 = b.phase(vec![], PhaseKind::Store(vec![st(2, o, r)]));
    Kernel {
        bufs: vec![
            buf(d, false, &[s(0), s(1)]),
            buf(d, true, &[s(0), s(1)]),
            buf(d, true, &[s(0)]),
        ],
        n_sizes: 2,
        outer: vec![s(0)],
        phases: vec![p0, p1, p2],
        parallel: true,
    }
}

/// `out[idx[i]] op= x[i]` for `i < s0`, `out: d[s1]`, `idx: i64[s0]` (in range): a scatter
/// with collisions (not parallel, every store combines).
pub fn scatter(op: ReduceOp, d: DType) -> Kernel {
    let mut b = B::default();
    let i = b.idx(0);
    let t = b.load(1, i, DType::I64);
    let x = b.load(0, i, d);
    let mut store = st(2, t, x);
    store.combine = Some(op);
    Kernel {
        bufs: vec![
            buf(d, false, &[s(0)]),
            buf(DType::I64, false, &[s(0)]),
            buf(d, true, &[s(1)]),
        ],
        n_sizes: 2,
        outer: vec![],
        phases: vec![b.phase(vec![s(0)], PhaseKind::Store(vec![store]))],
        parallel: false,
    }
}

/// A scatter inside a parallel kernel with an outer loop and a Reduce phase: per row `o` of
/// `x: f32[s0, s1]`, `hist[o, idx[i]] += x[o, i]` (phase 0, a Reduce phase that also stores)
/// and the row's max (stored by phase 1).
pub fn row_scatter_and_max() -> Kernel {
    let d = DType::F32;
    let mut b = B::default();
    let o = b.idx(0);
    let i = b.idx(1);
    let n = b.size(1);
    let off = b.lin(o, n, i);
    let x = b.load(0, off, d);
    let t = b.load(1, i, DType::I64);
    let k = b.size(2);
    let hoff = b.lin(o, k, t);
    let mut store = st(2, hoff, x);
    store.combine = Some(ReduceOp::Sum);
    let p0 = b.phase(
        vec![s(1)],
        PhaseKind::Reduce {
            op: ReduceOp::Max,
            value: x,
            stores: vec![store],
        },
    );
    let mut b = B::default();
    let o = b.idx(0);
    let r = b.push(Inst::PhaseResult(0), d);
    let p1 = b.phase(vec![], PhaseKind::Store(vec![st(3, o, r)]));
    Kernel {
        bufs: vec![
            buf(d, false, &[s(0), s(1)]),
            buf(DType::I64, false, &[s(1)]),
            buf(d, true, &[s(0), s(2)]),
            buf(d, true, &[s(0)]),
        ],
        n_sizes: 3,
        outer: vec![s(0)],
        phases: vec![p0, p1],
        parallel: true,
    }
}

/// Not parallel, plain stores into one element: `out[0] = x[i]` for every `i` in order (the
/// last one wins: the single-thread fallback).
pub fn last_write_wins() -> Kernel {
    let d = DType::I32;
    let mut b = B::default();
    let i = b.idx(0);
    let x = b.load(0, i, d);
    let z = b.i64(0);
    Kernel {
        bufs: vec![buf(d, false, &[s(0)]), buf(d, true, &[Extent::Const(1)])],
        n_sizes: 1,
        outer: vec![],
        phases: vec![b.phase(vec![s(0)], PhaseKind::Store(vec![st(1, z, x)]))],
        parallel: false,
    }
}

/// `out[i] = random(seed = s1, counter = i)` of `d` with `dist`, masked to even `i` (odd
/// elements keep the buffer's contents).
pub fn random(d: DType, dist: Distribution) -> Kernel {
    let mut b = B::default();
    let i = b.idx(0);
    let r = b.push(
        Inst::Random {
            seed_param: 1,
            dist,
            counter: i,
        },
        d,
    );
    let two = b.i64(2);
    let m = b.bin(BinaryOp::Mod, i, two);
    let zero = b.i64(0);
    let even = b.bin(BinaryOp::Eq, m, zero);
    let mut store = st(0, i, r);
    store.mask = Some(even);
    Kernel {
        bufs: vec![buf(d, true, &[s(0)])],
        n_sizes: 2,
        outer: vec![],
        phases: vec![b.phase(vec![s(0)], PhaseKind::Store(vec![store]))],
        parallel: true,
    }
}

/// `out[i] = x[i] + param` where the parameter (size slot 1) is of dtype `d`.
pub fn add_param(d: DType) -> Kernel {
    let mut b = B::default();
    let i = b.idx(0);
    let x = b.load(0, i, d);
    let p = b.push(Inst::Param(1), d);
    let op = if d == DType::Bool {
        BinaryOp::Or
    } else {
        BinaryOp::Add
    };
    let y = b.bin(op, x, p);
    Kernel {
        bufs: vec![buf(d, false, &[s(0)]), buf(d, true, &[s(0)])],
        n_sizes: 2,
        outer: vec![],
        phases: vec![b.phase(vec![s(0)], PhaseKind::Store(vec![st(1, i, y)]))],
        parallel: true,
    }
}

/// The clang on this machine, for the front-end checks of rendered source (`None`: skip them).
pub fn clang() -> Option<String> {
    let names = [
        "clang", "clang-20", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15",
    ];
    names.into_iter().map(String::from).find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Renders `kernels` in both dialects (one program each) and runs them through `clang`'s front
/// end: the CUDA dialect in CUDA mode against `gpu_cuda_stub.h` (no CUDA toolkit needed), the
/// OpenCL dialect as OpenCL C 1.2. A syntax and type check only: nothing runs. Panics with
/// clang's messages on a failure.
pub fn clang_check(clang: &str, kernels: &[Kernel], tag: &str) {
    use metajit_codegen::gpu::Dialect;
    use metajit_codegen::gpu::render::{program_source, render_named};
    let dir = std::env::temp_dir().join(format!("metajit_gpu_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let stub = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gpu_cuda_stub.h");
    for (d, ext) in [(Dialect::Cuda, "cu"), (Dialect::OpenCl, "cl")] {
        let rendered: Vec<_> = kernels
            .iter()
            .enumerate()
            .map(|(i, k)| render_named(k, d, &format!("k{i}")).expect("render"))
            .collect();
        let refs: Vec<_> = rendered.iter().collect();
        let path = dir.join(format!("{tag}.{ext}"));
        std::fs::write(&path, program_source(d, &refs)).expect("write");
        let mut cmd = std::process::Command::new(clang);
        match d {
            Dialect::Cuda => cmd.args([
                "-x",
                "cuda",
                "--cuda-gpu-arch=sm_80",
                "-nocudainc",
                "-nocudalib",
                "--cuda-device-only",
                "-include",
                stub,
            ]),
            Dialect::OpenCl => cmd.args([
                "-x",
                "cl",
                "-cl-std=CL1.2",
                "-Xclang",
                "-finclude-default-header",
                "-target",
                "spir64",
            ]),
        };
        let out = cmd
            .arg("-fsyntax-only")
            .arg(&path)
            .output()
            .expect("clang runs");
        assert!(
            out.status.success(),
            "{d:?}: {} kernels in {}:\n{}",
            kernels.len(),
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The relative tolerance of the GPU precision contract for results of dtype `d` (see
/// `codegen/src/gpu/mod.rs`): a few roundings of the dtype.
pub fn rel(d: DType) -> f64 {
    match d {
        DType::F16 => 2e-3,
        DType::BF16 => 1e-2,
        DType::F64 => 1e-12,
        _ => 1e-5,
    }
}

/// Reports that `device` (`opencl`, `cuda`) did not open: `skipped: <why>` on stdout, so its
/// tests pass without running -- unless `METAJIT_REQUIRE_DEVICES` (a comma-separated list, set
/// by CI where pocl is installed) names it, and then it panics, so a CI run can never pass
/// without running the device's tests.
pub fn skip_or_fail(device: &str, why: &str) {
    let required = std::env::var("METAJIT_REQUIRE_DEVICES").unwrap_or_default();
    if required.split(',').any(|d| d.trim() == device) {
        panic!("{device} is required (METAJIT_REQUIRE_DEVICES={required}) but did not open: {why}");
    }
    println!("skipped: {why}");
}

/// OpenCL device 0, opened once per test binary; `None` (after [`skip_or_fail`]) where it does
/// not open.
pub fn opencl() -> Option<&'static metajit_codegen::gpu::opencl::OpenCl> {
    use metajit_codegen::gpu::opencl::OpenCl;
    static DEV: std::sync::OnceLock<Result<OpenCl, String>> = std::sync::OnceLock::new();
    match DEV.get_or_init(|| OpenCl::open(0).map_err(|e| e.to_string())) {
        Ok(d) => Some(d),
        Err(e) => {
            skip_or_fail("opencl", &format!("no OpenCL device ({e})"));
            None
        }
    }
}

/// Kernels for the compile checks: the hand-built ones (every reduce op and dtype as a scatter
/// and a column reduction, random numbers, softmax-like and multi-phase kernels) and those of
/// the schedules of `graphs` random graphs.
pub fn sample_kernels(graphs: u64) -> Vec<Kernel> {
    use metajit_metaops::r#gen::{GenConfig, random_graph};
    use metajit_metaops::schedule::{self, Step};
    let mut ks = vec![
        softmax(),
        row_scatter_and_max(),
        last_write_wins(),
        store_then_reduce(),
        elementwise_2d(),
    ];
    for op in ReduceOp::ALL {
        for d in DType::ALL {
            if op.accepts(d) {
                ks.push(scatter(op, d));
                ks.push(reduce(op, d, Axis::Columns));
            }
        }
    }
    for d in [DType::F32, DType::F64, DType::F16] {
        for dist in [Distribution::Uniform, Distribution::Normal] {
            ks.push(random(d, dist));
        }
    }
    let cfg = GenConfig::default();
    for seed in 0..graphs {
        let (g, _) = random_graph(seed, &cfg);
        for step in schedule::schedule(&g).steps {
            if let Step::Kernel { kernel, .. } = step {
                ks.push(kernel);
            }
        }
    }
    ks
}

/// Every element-wise kernel the backend suite runs: each unary and binary op on each dtype
/// that has it, casts between every pair of dtypes, and a runtime parameter of every dtype.
pub fn elementwise_kernels() -> Vec<Kernel> {
    let mut ks = Vec::new();
    for d in DType::ALL {
        ks.extend(
            UnaryOp::ALL
                .into_iter()
                .filter(|op| op.accepts(d))
                .map(|op| unary(op, d)),
        );
        ks.extend(
            BinaryOp::ALL
                .into_iter()
                .filter(|op| op.accepts(d))
                .map(|op| binary(op, d)),
        );
        ks.extend(
            DType::ALL
                .into_iter()
                .filter(|&to| to != d)
                .map(|to| cast(d, to)),
        );
        ks.push(add_param(d));
        for axis in [Axis::Rows, Axis::All] {
            ks.extend(
                ReduceOp::ALL
                    .into_iter()
                    .filter(|op| op.accepts(d))
                    .map(|op| reduce(op, d, axis)),
            );
        }
    }
    ks
}
