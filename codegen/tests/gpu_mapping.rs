//! The GPU thread mappings of issue 11's follow-up: full reductions split across groups (a
//! first launch per Reduce phase writes one partial per group to a scratch buffer, later
//! launches combine them in a fixed order) and the contiguity-aware choice of the thread entry
//! (a column sum reads coalesced with one thread per column).
//!
//! Run on the OpenCL dialect (in CI pocl, on the CPU) against `kernel::interpret`, with the
//! precision contract's tolerances: float sums and products relative 1e-5 (f32), 1e-12 (f64),
//! 2e-3 (f16), 1e-2 (bf16); max/min exactly (-0.0 and +0.0 match); integers and bools exactly.
//! The rendered source of a split full reduction is also checked in both dialects (no device
//! needed). Without an OpenCL device the device tests print `skipped: ...` and pass.

mod gpu_common;

use metajit_codegen::Backend;
use metajit_codegen::gpu::Dialect;
use metajit_codegen::gpu::opencl::{ClBuffer, ClCompiled, OpenCl};
use metajit_codegen::gpu::render::{EntryKind, MAX_SPLIT_PARTS, SPLIT_CHUNK, render, split_parts};
use metajit_metaops::r#gen::Rng;
use metajit_metaops::kernel::{self, Extent, Inst, Kernel, Phase, PhaseKind, V};
use metajit_metaops::{BinaryOp, DType, HostData, ReduceOp, Scalar, UnaryOp};

fn device() -> Option<&'static OpenCl> {
    gpu_common::opencl()
}

// ---------------------------------------------------------------------------------------------
// Kernels.

use gpu_common::{B, buf, s, st};

fn reduce_phase(op: ReduceOp, value: V, b: B, inner: Vec<Extent>) -> Phase {
    b.phase(
        inner,
        PhaseKind::Reduce {
            op,
            value,
            stores: vec![],
        },
    )
}

/// `out[0] = op(x[0..s0])`: a full reduction (no outer loop), then a one-element Store phase.
fn full(op: ReduceOp, d: DType) -> Kernel {
    let mut b = B::default();
    let i = b.idx(0);
    let x = b.load(0, i, d);
    let p0 = reduce_phase(op, x, b, vec![s(0)]);
    let mut b = B::default();
    let z = b.i64(0);
    let r = b.push(Inst::PhaseResult(0), d);
    let p1 = b.phase(vec![], PhaseKind::Store(vec![st(1, z, r)]));
    Kernel {
        bufs: vec![buf(d, false, &[s(0)]), buf(d, true, &[Extent::Const(1)])],
        n_sizes: 1,
        outer: vec![],
        phases: vec![p0, p1],
        parallel: true,
    }
}

/// `out[0] = sum(x[s0, s1]) / s0` over two inner loops (a mean over a matrix).
fn mean_2d() -> Kernel {
    let d = DType::F32;
    let mut b = B::default();
    let r = b.idx(0);
    let c = b.idx(1);
    let n = b.size(1);
    let m = b.bin(BinaryOp::Mul, r, n);
    let off = b.bin(BinaryOp::Add, m, c);
    let x = b.load(0, off, d);
    let p0 = reduce_phase(ReduceOp::Sum, x, b, vec![s(0), s(1)]);
    let mut b = B::default();
    let z = b.i64(0);
    let r = b.push(Inst::PhaseResult(0), d);
    let n0 = b.size(0);
    let n1 = b.size(1);
    let nn = b.bin(BinaryOp::Mul, n0, n1);
    let nf = b.push(Inst::Cast(d, nn), d);
    let q = b.bin(BinaryOp::Div, r, nf);
    let p1 = b.phase(vec![], PhaseKind::Store(vec![st(1, z, q)]));
    Kernel {
        bufs: vec![
            buf(d, false, &[s(0), s(1)]),
            buf(d, true, &[Extent::Const(1)]),
        ],
        n_sizes: 2,
        outer: vec![],
        phases: vec![p0, p1],
        parallel: true,
    }
}

/// Softmax over all of `x[s0]` (f32): a max, a sum of `exp(x - max)`, then a Store phase over
/// every element: two split Reduce phases and a split Store phase that reads both results.
fn softmax_all() -> Kernel {
    let d = DType::F32;
    let mut b = B::default();
    let i = b.idx(0);
    let x = b.load(0, i, d);
    let p0 = reduce_phase(ReduceOp::Max, x, b, vec![s(0)]);
    let shifted = |b: &mut B| {
        let i = b.idx(0);
        let x = b.load(0, i, d);
        let m = b.push(Inst::PhaseResult(0), d);
        let y = b.bin(BinaryOp::Sub, x, m);
        (i, b.push(Inst::Unary(UnaryOp::Exp, y), d))
    };
    let mut b = B::default();
    let (_, e) = shifted(&mut b);
    let p1 = reduce_phase(ReduceOp::Sum, e, b, vec![s(0)]);
    let mut b = B::default();
    let (i, e) = shifted(&mut b);
    let t = b.push(Inst::PhaseResult(1), d);
    let q = b.bin(BinaryOp::Div, e, t);
    let p2 = b.phase(vec![s(0)], PhaseKind::Store(vec![st(1, i, q)]));
    Kernel {
        bufs: vec![buf(d, false, &[s(0)]), buf(d, true, &[s(0)])],
        n_sizes: 1,
        outer: vec![],
        phases: vec![p0, p1, p2],
        parallel: true,
    }
}

/// `y[i] = 2 x[i]` stored by the Reduce phase that sums `x` (a value kept across phases),
/// then `out[0] = sum - y[0]`: stores inside a split Reduce phase, read by the last launch.
fn reduce_with_stores() -> Kernel {
    let d = DType::F32;
    let mut b = B::default();
    let i = b.idx(0);
    let x = b.load(0, i, d);
    let y = b.bin(BinaryOp::Add, x, x);
    let p0 = b.phase(
        vec![s(0)],
        PhaseKind::Reduce {
            op: ReduceOp::Sum,
            value: x,
            stores: vec![st(1, i, y)],
        },
    );
    let mut b = B::default();
    let z = b.i64(0);
    let r = b.push(Inst::PhaseResult(0), d);
    let y0 = b.load(1, z, d);
    let q = b.bin(BinaryOp::Sub, r, y0);
    let p1 = b.phase(vec![], PhaseKind::Store(vec![st(2, z, q)]));
    Kernel {
        bufs: vec![
            buf(d, false, &[s(0)]),
            buf(d, true, &[s(0)]),
            buf(d, true, &[Extent::Const(1)]),
        ],
        n_sizes: 1,
        outer: vec![],
        phases: vec![p0, p1],
        parallel: true,
    }
}

/// Sum of `x: f32[s0, s1]` over rows (`columns == false`: `out[s0]`, contiguous inner loop)
/// or over columns (`columns == true`: `out[s1]`, contiguous outer loop).
fn axis_sum(columns: bool) -> Kernel {
    let d = DType::F32;
    let mut b = B::default();
    let o = b.idx(0);
    let i = b.idx(1);
    let n = b.size(1);
    let off = if columns {
        let m = b.bin(BinaryOp::Mul, i, n);
        b.bin(BinaryOp::Add, m, o)
    } else {
        let m = b.bin(BinaryOp::Mul, o, n);
        b.bin(BinaryOp::Add, m, i)
    };
    let x = b.load(0, off, d);
    let p0 = reduce_phase(ReduceOp::Sum, x, b, vec![if columns { s(0) } else { s(1) }]);
    let mut b = B::default();
    let o = b.idx(0);
    let r = b.push(Inst::PhaseResult(0), d);
    let p1 = b.phase(vec![], PhaseKind::Store(vec![st(1, o, r)]));
    let (outer, out) = if columns { (s(1), s(1)) } else { (s(0), s(0)) };
    Kernel {
        bufs: vec![buf(d, false, &[s(0), s(1)]), buf(d, true, &[out])],
        n_sizes: 2,
        outer: vec![outer],
        phases: vec![p0, p1],
        parallel: true,
    }
}

// ---------------------------------------------------------------------------------------------
// Data and comparison.

/// Input data for a reduction with `op` over `n` elements of `d`: values in [-1, 1) for sums
/// and max/min, values near 1 for products (so that 2^20 of them neither overflow nor vanish),
/// small integers for integer sums, mostly-true bools for and, mostly-false for or.
fn data(op: ReduceOp, d: DType, n: usize, seed: u64) -> HostData {
    let mut r = Rng(seed);
    let v: Vec<Scalar> = (0..n)
        .map(|_| {
            let u = 2.0 * r.f64() - 1.0;
            match (op, d) {
                (_, DType::Bool) => Scalar::Bool(match op {
                    ReduceOp::And => u > -0.9999,
                    _ => u > 0.9999,
                }),
                (ReduceOp::Prod, _) if d.is_float() => {
                    Scalar::F64(1.0 + (u * 4.0).round() / 2048.0).cast(d)
                }
                (ReduceOp::Prod, _) => Scalar::I64(if u > 0.999 { 3 } else { 1 }).cast(d),
                _ if d.is_float() => Scalar::F64(u).cast(d),
                _ => Scalar::I64((u * 100.0) as i64).cast(d),
            }
        })
        .collect();
    let mut h = HostData::zeros(d, n);
    for (i, x) in v.into_iter().enumerate() {
        h.set(i, x);
    }
    h
}

/// Whether `got` matches `want` within the contract's tolerance for dtype `want.dtype()`
/// (`exact`: bit for bit, except that -0.0 matches +0.0 and NaN matches NaN).
fn close(got: Scalar, want: Scalar, exact: bool) -> bool {
    if got == want || (got.is_nan() && want.is_nan()) {
        return true;
    }
    if !want.dtype().is_float() {
        return false;
    }
    let (x, y) = (got.to_f64(), want.to_f64());
    if x == y {
        return true;
    }
    if exact || !x.is_finite() || !y.is_finite() {
        return false;
    }
    let r = gpu_common::rel(want.dtype());
    (x - y).abs() <= r * (x.abs().max(y.abs()) + r)
}

fn mismatch(got: &HostData, want: &HostData, exact: bool) -> Option<String> {
    if got.dtype() != want.dtype() || got.len() != want.len() {
        return Some(format!("got {} x {}", got.dtype(), got.len()));
    }
    (0..got.len())
        .find(|&i| !close(got.get(i), want.get(i), exact))
        .map(|i| format!("element {i}: got {}, want {}", got.get(i), want.get(i)))
}

/// The interpreter's result.
fn reference(k: &Kernel, inputs: &[HostData], sizes: &[i64]) -> Vec<HostData> {
    let mut bufs = inputs.to_vec();
    let range = match k.split_extent() {
        Some(Extent::Size(i)) => 0..sizes[i],
        Some(Extent::Const(c)) => 0..c as i64,
        None => 0..1,
    };
    kernel::interpret(k, &mut bufs, sizes, range);
    bufs
}

/// How a kernel is run on the device.
#[derive(Clone, Copy, Debug)]
enum How {
    /// `Backend::launch` (the mapping's own choice).
    Auto,
    /// The split form with this many partials.
    Split(u64),
    /// One entry point (an index into `Rendered::entries`).
    Entry(usize),
}

/// Runs `c` on `inputs` (outputs' initial contents as given) and downloads every buffer.
fn run(
    dev: &OpenCl,
    c: &ClCompiled,
    k: &Kernel,
    inputs: &[HostData],
    sizes: &[i64],
    how: How,
) -> Vec<HostData> {
    let bufs: Vec<ClBuffer> = inputs
        .iter()
        .map(|h| dev.upload(h).expect("upload"))
        .collect();
    let refs: Vec<&ClBuffer> = bufs.iter().collect();
    // SAFETY: the kernels index within their declared extents, which the buffers match.
    unsafe {
        match how {
            How::Auto => dev.launch(c, k, &refs, sizes).expect("launch"),
            How::Split(p) => assert!(
                dev.launch_split(c, k, &refs, sizes, Some(p))
                    .expect("launch")
            ),
            How::Entry(e) => dev.launch_entry(c, k, e, &refs, sizes).expect("launch"),
        }
    }
    bufs.iter()
        .map(|b| dev.download(b).expect("download"))
        .collect()
}

/// The float dtypes and every other dtype a reduce op accepts.
fn dtypes(op: ReduceOp) -> Vec<DType> {
    match op {
        ReduceOp::And | ReduceOp::Or => vec![DType::Bool],
        ReduceOp::Sum | ReduceOp::Prod => vec![
            DType::F32,
            DType::F64,
            DType::F16,
            DType::BF16,
            DType::I32,
            DType::I64,
        ],
        _ => vec![
            DType::F32,
            DType::F64,
            DType::F16,
            DType::BF16,
            DType::I32,
            DType::U8,
        ],
    }
}

const SIZES: [usize; 6] = [1, 255, 256, 257, 65536 + 3, 1 << 20];

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn split_parts_follow_the_sizes() {
    assert_eq!(split_parts(0), 1);
    assert_eq!(split_parts(1), 1);
    assert_eq!(split_parts(SPLIT_CHUNK as i64), 1);
    assert_eq!(split_parts(SPLIT_CHUNK as i64 + 1), 2);
    assert_eq!(split_parts(1 << 24), MAX_SPLIT_PARTS);
    let k = full(ReduceOp::Sum, DType::F32);
    let r = render(&k, Dialect::OpenCl).expect("render");
    assert_eq!(r.split_entries.len(), 2);
    assert_eq!(r.split_plan(&[4096], None), None, "one group is enough");
    let p = r.split_plan(&[1 << 20], None).expect("a split");
    assert_eq!(p.parts, 256);
    assert_eq!(p.scratch_bytes, 2 * 256 * 8);
    assert_eq!(p.launches.len(), 2);
    assert!(p.launches.iter().all(|l| l.groups == 256 && l.local == 256));
    assert_eq!(r.split_plan(&[5], Some(0)).expect("forced").parts, 1);
    assert_eq!(
        r.split_plan(&[5], Some(1 << 40)).expect("forced").parts,
        MAX_SPLIT_PARTS
    );
    // Kernels with an outer loop have no split form.
    let rows = render(&axis_sum(false), Dialect::OpenCl).expect("render");
    assert!(rows.split_entries.is_empty());
    assert_eq!(rows.split_plan(&[1 << 20, 1 << 20], Some(4)), None);
}

#[test]
fn split_full_reduction_golden() {
    let k = full(ReduceOp::Sum, DType::F32);
    let cl = render(&k, Dialect::OpenCl).expect("render");
    assert_eq!(
        cl.split_entries,
        ["metajit_kernel_split0", "metajit_kernel_split1"]
    );
    // The group and thread entries are still there (and unchanged in their ABI).
    let kinds: Vec<EntryKind> = cl.entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EntryKind::Group, EntryKind::Thread]);
    let code = &cl.kernel_code;
    let head = "__kernel void metajit_kernel_split0(__global const float* restrict b0, \
                __global float* restrict b1, __global u64* restrict scratch, i64 s0) {";
    assert!(code.contains(head), "{code}");
    assert!(code.contains("const i64 parts = (i64)get_num_groups(0);"));
    assert!(code.contains("for (i64 il = gid * 256 + lid; il < n; il += parts * 256) {"));
    // The partial of the group, in f64, in slot phase * parts + group.
    assert!(
        code.contains("if (lid == 0) ((__global double*)(scratch + 0 * parts))[gid] = red0[0];")
    );
    // The second launch combines the partials in a fixed order, rounded once.
    assert!(code.contains(
        "for (i64 q = lid; q < parts; q += 256) acc0 = (acc0 + ((__global double*)(scratch + 0 * parts))[q]);"
    ), "{code}");
    assert!(code.contains("const float r0 = ((float)red0[0]);"));
    let cuda = render(&k, Dialect::Cuda).expect("render");
    let code = &cuda.kernel_code;
    assert!(code.contains(
        "extern \"C\" __global__ void __launch_bounds__(256) metajit_kernel_split1(\
         const float* __restrict__ b0, float* __restrict__ b1, u64* __restrict__ scratch, i64 s0) {"
    ));
    assert!(code.contains("const i64 parts = (i64)gridDim.x;"));
    assert!(code.contains("__shared__ double red0[256];"));
    assert!(code.contains("if (lid == 0) ((double*)(scratch + 0 * parts))[gid] = red0[0];"));
    assert!(code.contains("const double sh = __shfl_down_sync(0xffffffffu, w, o);"));
    // Integer reductions keep their own type in the scratch slots.
    let code = render(&full(ReduceOp::Max, DType::I32), Dialect::OpenCl)
        .expect("render")
        .kernel_code;
    assert!(code.contains("if (lid == 0) ((__global i32*)(scratch + 0 * parts))[gid] = red0[0];"));
}

#[test]
fn contiguity_picks_the_thread_entry_for_column_sums() {
    let cols = render(&axis_sum(true), Dialect::OpenCl).expect("render");
    let rows = render(&axis_sum(false), Dialect::OpenCl).expect("render");
    assert!(cols.outer_contiguous());
    assert!(!rows.outer_contiguous());
    let kind = |r: &metajit_codegen::gpu::render::Rendered, sizes: &[i64]| {
        r.entries[r.launch(sizes).entry].kind
    };
    // W3's colsum: 4096 columns contiguous, 4096 rows strided -> a thread per column.
    assert_eq!(kind(&cols, &[4096, 4096]), EntryKind::Thread);
    assert_eq!(kind(&rows, &[4096, 4096]), EntryKind::Group);
    // Too few columns to fill the device: the size rule (group per column).
    assert_eq!(kind(&cols, &[100_000, 100]), EntryKind::Group);
    // The size rule still applies to both.
    assert_eq!(kind(&cols, &[8, 100]), EntryKind::Thread);
    assert_eq!(kind(&rows, &[100_000, 8]), EntryKind::Thread);
    // Neither a full reduction nor a softmax over rows prefers threads.
    assert!(
        !render(&full(ReduceOp::Sum, DType::F32), Dialect::OpenCl)
            .expect("render")
            .outer_contiguous()
    );
}

#[test]
fn full_reductions_match_the_interpreter() {
    let Some(dev) = device() else { return };
    let mut failures = Vec::new();
    let mut runs = 0;
    for op in ReduceOp::ALL {
        for d in dtypes(op) {
            let k = full(op, d);
            let c = dev.compile(&k).expect("compile");
            for (si, &n) in SIZES.iter().enumerate() {
                let inputs = vec![data(op, d, n, 17 + si as u64), HostData::zeros(d, 1)];
                let sizes = [n as i64];
                let want = reference(&k, &inputs, &sizes);
                let exact = !(d.is_float() && matches!(op, ReduceOp::Sum | ReduceOp::Prod));
                let mut hows = vec![How::Auto, How::Split(3)];
                if n >= 65536 {
                    hows.push(How::Split(MAX_SPLIT_PARTS));
                } else {
                    hows.push(How::Split(1));
                }
                for how in hows {
                    runs += 1;
                    let got = run(dev, &c, &k, &inputs, &sizes, how);
                    if let Some(m) = mismatch(&got[1], &want[1], exact) {
                        failures.push(format!("{op:?} {d} n={n} {how:?}: {m}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{runs} runs:\n{}", failures.join("\n"));
}

#[test]
fn split_results_are_deterministic() {
    let Some(dev) = device() else { return };
    for d in [DType::F32, DType::F16] {
        let k = full(ReduceOp::Sum, d);
        let c = dev.compile(&k).expect("compile");
        let n = (1 << 20) + 7;
        let inputs = vec![data(ReduceOp::Sum, d, n, 5), HostData::zeros(d, 1)];
        let sizes = [n as i64];
        let a = run(dev, &c, &k, &inputs, &sizes, How::Auto);
        let b = run(dev, &c, &k, &inputs, &sizes, How::Auto);
        assert_eq!(a[1].get(0), b[1].get(0), "{d}: two runs differ");
        let p = run(
            dev,
            &c,
            &k,
            &inputs,
            &sizes,
            How::Split(split_parts(n as i64)),
        );
        assert_eq!(
            a[1].get(0),
            p[1].get(0),
            "{d}: the same partials, the same sum"
        );
    }
}

#[test]
fn split_store_phases_after_the_reductions() {
    let Some(dev) = device() else { return };
    // A mean over a matrix (two inner loops, a Store phase computing r / n).
    let k = mean_2d();
    let c = dev.compile(&k).expect("compile");
    for sizes in [[1i64, 1], [3, 300], [1000, 1025], [17, 1 << 16]] {
        let n = (sizes[0] * sizes[1]) as usize;
        let inputs = vec![
            data(ReduceOp::Sum, DType::F32, n, 9),
            HostData::zeros(DType::F32, 1),
        ];
        let want = reference(&k, &inputs, &sizes);
        for how in [How::Auto, How::Split(5), How::Entry(0), How::Entry(1)] {
            let got = run(dev, &c, &k, &inputs, &sizes, how);
            if let Some(m) = mismatch(&got[1], &want[1], false) {
                panic!("mean {sizes:?} {how:?}: {m}");
            }
        }
    }
    // Stores inside the split Reduce phase, loaded by the Store phase after it.
    let k = reduce_with_stores();
    let c = dev.compile(&k).expect("compile");
    for n in [1usize, 300, 50_000] {
        let inputs = vec![
            data(ReduceOp::Sum, DType::F32, n, 4),
            HostData::zeros(DType::F32, n),
            HostData::zeros(DType::F32, 1),
        ];
        let sizes = [n as i64];
        let want = reference(&k, &inputs, &sizes);
        for how in [How::Auto, How::Split(7), How::Entry(0), How::Entry(1)] {
            let got = run(dev, &c, &k, &inputs, &sizes, how);
            for b in [1, 2] {
                if let Some(m) = mismatch(&got[b], &want[b], false) {
                    panic!("reduce with stores n={n} {how:?} buffer {b}: {m}");
                }
            }
        }
    }
    // A softmax over everything: two split reductions, then a split Store phase over every
    // element that reads both results.
    let k = softmax_all();
    let c = dev.compile(&k).expect("compile");
    for n in [1usize, 257, 70_000] {
        let inputs = vec![
            data(ReduceOp::Sum, DType::F32, n, 3),
            HostData::zeros(DType::F32, n),
        ];
        let sizes = [n as i64];
        let want = reference(&k, &inputs, &sizes);
        for how in [How::Auto, How::Split(2), How::Split(64), How::Entry(0)] {
            let got = run(dev, &c, &k, &inputs, &sizes, how);
            if let Some(m) = mismatch(&got[1], &want[1], false) {
                panic!("softmax n={n} {how:?}: {m}");
            }
        }
    }
}

#[test]
fn row_and_column_sums_match_the_interpreter() {
    let Some(dev) = device() else { return };
    for columns in [false, true] {
        let k = axis_sum(columns);
        let c = dev.compile(&k).expect("compile");
        for sizes in [[1i64, 1], [1000, 300], [3, 5000], [300, 1000], [257, 4096]] {
            let n = (sizes[0] * sizes[1]) as usize;
            let out = if columns { sizes[1] } else { sizes[0] } as usize;
            let inputs = vec![
                data(ReduceOp::Sum, DType::F32, n, 11),
                HostData::zeros(DType::F32, out),
            ];
            let want = reference(&k, &inputs, &sizes);
            for how in [How::Auto, How::Entry(0), How::Entry(1)] {
                let got = run(dev, &c, &k, &inputs, &sizes, how);
                if let Some(m) = mismatch(&got[1], &want[1], false) {
                    panic!("columns={columns} {sizes:?} {how:?}: {m}");
                }
            }
        }
    }
}

/// A pocl sanity check of the two changes' kernel times (not a GPU result): W3's sum of 2^24
/// f32 and its 4096 x 4096 column sum, the old mapping (one group; the group entry) against
/// the new (the split; the thread entry), alternating, minimum of 3 runs each.
/// `cargo test --release -p metajit-codegen --test gpu_mapping -- --ignored --nocapture`
#[test]
#[ignore = "timing only"]
fn pocl_timings() {
    let Some(dev) = device() else { return };
    let time = |f: &mut dyn FnMut()| {
        f();
        dev.synchronize().expect("sync");
        let t = std::time::Instant::now();
        f();
        dev.synchronize().expect("sync");
        t.elapsed().as_secs_f64()
    };
    let n = 1usize << 24;
    let k = full(ReduceOp::Sum, DType::F32);
    let c = dev.compile(&k).expect("compile");
    let x = dev
        .upload(&data(ReduceOp::Sum, DType::F32, n, 1))
        .expect("upload");
    let out = dev.alloc(DType::F32, 1).expect("alloc");
    let sizes = [n as i64];
    let group = c.rendered().launch(&sizes).entry;
    let (mut old, mut new) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        // SAFETY: the buffers match the kernel's extents.
        old = old.min(time(&mut || unsafe {
            dev.launch_entry(&c, &k, group, &[&x, &out], &sizes)
                .expect("launch")
        }));
        new = new.min(time(&mut || unsafe {
            dev.launch(&c, &k, &[&x, &out], &sizes).expect("launch")
        }));
    }
    println!(
        "W3 sum 2^24 f32 on pocl: one group {:.1} ms, split ({} groups) {:.1} ms",
        old * 1e3,
        split_parts(n as i64),
        new * 1e3
    );
    let k = axis_sum(true);
    let c = dev.compile(&k).expect("compile");
    let out = dev.alloc(DType::F32, 4096).expect("alloc");
    let sizes = [4096i64, 4096];
    let entry = |kind| {
        c.rendered()
            .entries
            .iter()
            .position(|e| e.kind == kind)
            .expect("entry")
    };
    let (g, t) = (entry(EntryKind::Group), entry(EntryKind::Thread));
    assert_eq!(c.rendered().launch(&sizes).entry, t);
    let (mut old, mut new) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        // SAFETY: the buffers match the kernel's extents.
        old = old.min(time(&mut || unsafe {
            dev.launch_entry(&c, &k, g, &[&x, &out], &sizes)
                .expect("launch")
        }));
        new = new.min(time(&mut || unsafe {
            dev.launch_entry(&c, &k, t, &[&x, &out], &sizes)
                .expect("launch")
        }));
    }
    println!(
        "W3 colsum 4096x4096 f32 on pocl: group entry {:.1} ms, thread entry {:.1} ms",
        old * 1e3,
        new * 1e3
    );
}

/// The CUDA dialect of this file's kernels (the split entry points included) through clang's
/// CUDA front end against `gpu_cuda_stub.h`, and the OpenCL dialect as OpenCL C 1.2: a syntax
/// and type check only (nothing CUDA runs here). Skipped without clang.
#[test]
fn split_sources_compile_with_clang() {
    let Some(clang) = gpu_common::clang() else {
        println!("skipped: no clang");
        return;
    };
    let mut ks = vec![
        mean_2d(),
        softmax_all(),
        reduce_with_stores(),
        axis_sum(true),
        axis_sum(false),
    ];
    for op in ReduceOp::ALL {
        ks.extend(dtypes(op).into_iter().map(|d| full(op, d)));
    }
    let rendered_split = ks.iter().any(|k| {
        metajit_codegen::gpu::render::render(k, Dialect::Cuda)
            .is_ok_and(|r| !r.split_entries.is_empty())
    });
    assert!(rendered_split, "the kernels include split reductions");
    gpu_common::clang_check(&clang, &ks, "split");
}

/// The scheduler's own reduction kernels (not hand-built ones): a column sum is
/// outer-contiguous and takes the thread entry at W3's 4096 x 4096, with or without keepdims;
/// a row sum is not; a full sum has a split form.
#[test]
fn scheduler_reductions_get_the_intended_mapping() {
    use metajit_metaops::schedule::{Step, schedule};
    use metajit_metaops::{Graph, Node, Op, Shape};
    let mut checked = 0;
    for (axes, keepdims, want) in [
        (vec![0], false, Some(true)),
        (vec![0], true, Some(true)),
        (vec![1], false, Some(false)),
        (vec![1], true, Some(false)),
        (vec![0, 1], false, None),
    ] {
        let mut g = Graph::new();
        let x = g
            .push(Node {
                op: Op::Input { slot: 0 },
                inputs: vec![],
                dtype: DType::F32,
                shape: Shape::new(vec![4096, 4096]),
            })
            .expect("input");
        let shape = match (axes.as_slice(), keepdims) {
            ([0], false) | ([1], false) => vec![4096],
            ([0], true) => vec![1, 4096],
            ([1], true) => vec![4096, 1],
            _ => vec![],
        };
        let out = g
            .push(Node {
                op: Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: axes.clone(),
                    keepdims,
                },
                inputs: vec![x],
                dtype: DType::F32,
                shape: Shape::new(shape),
            })
            .expect("reduce");
        g.outputs = vec![out];
        for step in schedule(&g).steps {
            let Step::Kernel { kernel, sizes, .. } = step else {
                continue;
            };
            let sizes = metajit_metaops::schedule::size_values(&g, &sizes);
            let r = render(&kernel, Dialect::OpenCl).expect("render");
            let what = format!("axes {axes:?} keepdims {keepdims}:\n{}", kernel.text());
            match want {
                Some(cols) => {
                    assert_eq!(r.outer_contiguous(), cols, "{what}");
                    let kind = r.entries[r.launch(&sizes).entry].kind;
                    let want_kind = if cols {
                        EntryKind::Thread
                    } else {
                        EntryKind::Group
                    };
                    assert_eq!(kind, want_kind, "{what}");
                }
                None => {
                    assert!(!r.split_entries.is_empty(), "{what}");
                    assert_eq!(
                        r.split_plan(&sizes, None).map(|p| p.parts),
                        Some(MAX_SPLIT_PARTS),
                        "{what}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 5);
}
