//! The GPU renderer without a device: deterministic output, both dialects render every kernel
//! of a few hundred random graphs' schedules, malformed kernels are errors (not panics), and
//! golden checks on hand-written kernels (element-wise, row and column reductions, a
//! softmax-like multi-phase kernel, scatters with combines, the single-thread fallback).

use metajit_codegen::BackendError;
use metajit_codegen::gpu::Dialect;
use metajit_codegen::gpu::render::{EntryKind, Launch, compile_options, render, render_named};
use metajit_metaops::r#gen::{GenConfig, random_graph};
use metajit_metaops::kernel::{Inst, V};
use metajit_metaops::schedule::{self, Step};
use metajit_metaops::{DType, ReduceOp};

mod gpu_common;
use gpu_common::Axis;

const DIALECTS: [Dialect; 2] = [Dialect::Cuda, Dialect::OpenCl];

/// Every `{`/`(` closes, in order (outside comments and strings there are none of those in
/// the kernels' code).
fn balanced(src: &str) -> bool {
    let mut stack = Vec::new();
    for c in src.chars() {
        let open = match c {
            '{' | '(' | '[' => {
                stack.push(c);
                continue;
            }
            '}' => '{',
            ')' => '(',
            ']' => '[',
            _ => continue,
        };
        if stack.pop() != Some(open) {
            return false;
        }
    }
    stack.is_empty()
}

#[test]
fn every_kernel_of_random_graphs_renders_deterministically() {
    let cfg = GenConfig::default();
    let mut kernels = 0;
    let mut kinds = std::collections::BTreeMap::new();
    for seed in 0..300 {
        let (g, _) = random_graph(seed, &cfg);
        let s = schedule::schedule(&g);
        for step in &s.steps {
            let Step::Kernel { kernel, .. } = step else {
                continue;
            };
            kernels += 1;
            for d in DIALECTS {
                let r = render(kernel, d)
                    .unwrap_or_else(|e| panic!("seed {seed}: {d:?}: {e}\n{kernel}"));
                assert_eq!(render(kernel, d).ok().as_ref(), Some(&r), "seed {seed}");
                assert!(balanced(&r.kernel_code), "seed {seed}: {}", r.kernel_code);
                assert!(r.source.ends_with(&r.kernel_code));
                assert!(!r.entries.is_empty());
                for e in &r.entries {
                    assert!(r.kernel_code.contains(&format!(" {}(", e.name)));
                    *kinds.entry(format!("{:?}", e.kind)).or_insert(0) += 1;
                }
            }
        }
    }
    println!("{kernels} kernels, entries by kind (both dialects): {kinds:?}");
    assert!(kernels > 300);
    assert_eq!(kinds.len(), 3, "every mapping occurs: {kinds:?}");
}

#[test]
fn elementwise_golden() {
    let k = gpu_common::binary(metajit_metaops::BinaryOp::Add, DType::F16);
    let r = render(&k, Dialect::OpenCl).expect("render");
    let want = "__kernel void metajit_kernel_flat(__global const u16* restrict b0, __global const u16* restrict b1, __global u16* restrict b2, i64 s0) {
    const i64 n_outer = ((i64)1L);
    const i64 n_inner = (s0);
    const i64 total = n_outer * n_inner;
    for (i64 g = (i64)get_global_id(0); g < total; g += (i64)get_global_size(0)) {
        const i64 il = g;
        const i64 i0 = il;
        const i64 v0 = i0;
        const float v1 = f16_to_f32(b0[v0]);
        const float v2 = f16_to_f32(b1[v0]);
        const float v3 = rh((v1 + v2));
        b2[v0] = f32_to_f16(v3);
    }
}
";
    assert_eq!(r.kernel_code, want);
    assert_eq!(r.entries.len(), 1);
    assert_eq!(
        r.launch(&[1000]),
        Launch {
            entry: 0,
            groups: 4,
            local: 256
        }
    );
    assert_eq!(r.launch(&[0]).groups, 0);
    assert_eq!(r.launch(&[1 << 40]).groups, 65535);
    let cuda = render(&k, Dialect::Cuda).expect("render");
    assert!(cuda.kernel_code.starts_with(
        "extern \"C\" __global__ void __launch_bounds__(256) metajit_kernel_flat(const u16* __restrict__ b0, const u16* __restrict__ b1, u16* __restrict__ b2, i64 s0) {"
    ));
    assert!(
        cuda.kernel_code
            .contains("((i64)blockIdx.x * (i64)blockDim.x + (i64)threadIdx.x)")
    );
    assert!(cuda.source.starts_with("typedef unsigned char u8;"));
    assert!(
        r.source
            .starts_with("#pragma OPENCL EXTENSION cl_khr_fp64 : enable")
    );
    assert!(compile_options(Dialect::OpenCl).contains("-cl-fp32-correctly-rounded-divide-sqrt"));
    assert_eq!(compile_options(Dialect::Cuda), "--fmad=false");
}

#[test]
fn reduction_golden() {
    for axis in [Axis::Rows, Axis::Columns, Axis::All] {
        let k = gpu_common::reduce(ReduceOp::Sum, DType::F32, axis);
        let cl = render(&k, Dialect::OpenCl).expect("render");
        let kinds: Vec<EntryKind> = cl.entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EntryKind::Group, EntryKind::Thread]);
        let code = &cl.kernel_code;
        // f64 accumulation, rounded once.
        assert!(code.contains("double acc0 = F64_OF(0x0000000000000000UL);"));
        assert!(code.contains("acc0 = (acc0 + ((double)v5));"), "{code}");
        assert!(code.contains("__local double red0[256];"));
        assert!(code.contains("if (lid < s) red0[lid] = (red0[lid] + red0[lid + s]);"));
        assert!(code.contains("const float r0 = ((float)red0[0]);"));
        assert!(code.contains("const float r0 = ((float)acc0);"));
        assert!(code.contains("for (i64 il = lid; il < n; il += 256) {"));
        // A barrier after the tree's steps and after each phase.
        assert!(
            code.matches("barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);")
                .count()
                >= 4
        );
        let cuda = render(&k, Dialect::Cuda).expect("render");
        assert!(cuda.kernel_code.contains("__shared__ double red0[256];"));
        assert!(
            cuda.kernel_code
                .contains("const double sh = __shfl_down_sync(0xffffffffu, w, o);")
        );
        assert!(
            cuda.kernel_code
                .contains("for (int s = 128; s >= 64; s >>= 1) {")
        );
        // The geometry: a group per outer iteration, or a thread per outer iteration.
        let outer = |sizes: &[i64]| match axis {
            Axis::Rows => sizes[0],
            Axis::Columns => sizes[1],
            Axis::All => 1,
        };
        for sizes in [[10i64, 1000], [1000, 10], [100_000, 100]] {
            let l = cl.launch(&sizes);
            match cl.entries[l.entry].kind {
                EntryKind::Group => {
                    assert_eq!(l.groups, outer(&sizes).min(65535) as u64);
                    assert_eq!(l.local, 256);
                }
                EntryKind::Thread => {
                    assert_eq!(l.groups, (outer(&sizes) as u64).div_ceil(64));
                    assert_eq!(l.local, 64);
                }
                EntryKind::Flat => panic!("a reduction never runs flat"),
            }
        }
    }
    // Integer and bool reductions accumulate in their own type.
    let k = gpu_common::reduce(ReduceOp::Max, DType::I32, Axis::Rows);
    let code = render(&k, Dialect::OpenCl).expect("render").kernel_code;
    assert!(
        code.contains("i32 acc0 = ((i32)(-2147483647 - 1));"),
        "{code}"
    );
    let k = gpu_common::reduce(ReduceOp::And, DType::Bool, Axis::Columns);
    let code = render(&k, Dialect::Cuda).expect("render").kernel_code;
    assert!(code.contains("(u8)__shfl_down_sync(0xffffffffu, (int)w, o)"));
}

#[test]
fn softmax_golden() {
    let k = gpu_common::softmax();
    let r = render(&k, Dialect::OpenCl).expect("render");
    let code = &r.kernel_code;
    assert!(code.contains("__local float red0[256];"));
    assert!(code.contains("__local double red1[256];"));
    // NaN-propagating max in the tree and the fold.
    assert!(code.contains(
        "red0[lid] = ((red0[lid] > red0[lid + s] || red0[lid] != red0[lid]) ? red0[lid] : red0[lid + s]);"
    ));
    assert!(code.contains("const float v6 = r0;"));
    assert!(code.contains("const float v7 = r1;"));
    assert!(code.contains("const float v9 = exp(v8);"));
    let cuda = render(&k, Dialect::Cuda).expect("render");
    assert!(cuda.kernel_code.contains("const float v9 = expf(v8);"));
    // Three phases, each followed by a barrier in the group entry, and two in each tree.
    let group = code.split("metajit_kernel_thread").next().unwrap_or("");
    assert_eq!(group.matches("barrier(").count(), 3 + 2 * 2);
}

#[test]
fn scatter_golden() {
    // Not parallel, every store combines: flat, with atomic combines.
    let k = gpu_common::scatter(ReduceOp::Sum, DType::F32);
    let cl = render(&k, Dialect::OpenCl).expect("render");
    assert_eq!(cl.entries[0].kind, EntryKind::Flat);
    let code = &cl.kernel_code;
    assert!(code.contains("FN void metajit_kernel_atomic_sum_f32(__global float* p, float v) {"));
    assert!(code.contains("old = atomic_cmpxchg(w, prev, next);"));
    assert!(code.contains("metajit_kernel_atomic_sum_f32(b2 + v1, v2);"));
    let cuda = render(&k, Dialect::Cuda).expect("render");
    assert!(cuda.kernel_code.contains("atomicAdd(p, v);"));
    // Narrow dtypes: a compare-and-swap on the containing 32-bit word.
    let k = gpu_common::scatter(ReduceOp::Max, DType::F16);
    let code = render(&k, Dialect::OpenCl).expect("render").kernel_code;
    assert!(code.contains("((uptr)p & ~(uptr)3)"));
    assert!(code.contains("(u32)(((uptr)p & 2) * 8)"));
    let k = gpu_common::scatter(ReduceOp::Prod, DType::I64);
    let code = render(&k, Dialect::OpenCl).expect("render").kernel_code;
    assert!(code.contains("atom_cmpxchg(w, prev, next)"));
    let code = render(&k, Dialect::Cuda).expect("render").kernel_code;
    assert!(code.contains("atomicCAS((unsigned long long*)(w)"));
    // A parallel kernel's combine inside a Reduce phase: atomic in the group entry, plain in
    // the thread entry (a thread owns its outer iteration).
    let k = gpu_common::row_scatter_and_max();
    let code = render(&k, Dialect::OpenCl).expect("render").kernel_code;
    let (group, thread) = code
        .split_once("__kernel void metajit_kernel_thread")
        .expect("two entries");
    assert!(group.contains("metajit_kernel_atomic_sum_f32(b2 + v9, v5);"));
    assert!(thread.contains("{ const float cur = b2[v9]; b2[v9] = (cur + v5); }"));
    // The single-thread fallback: one thread in all.
    let k = gpu_common::last_write_wins();
    let r = render(&k, Dialect::OpenCl).expect("render");
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[0].kind, EntryKind::Thread);
    assert_eq!(
        r.launch(&[1000]),
        Launch {
            entry: 0,
            groups: 1,
            local: 1
        }
    );
}

#[test]
fn names_and_malformed_kernels_are_errors() {
    let k = gpu_common::softmax();
    let a = render_named(&k, Dialect::OpenCl, "first").expect("render");
    assert!(a.entries.iter().all(|e| e.name.starts_with("first_")));
    for bad in ["", "1x", "a-b", "a b"] {
        assert!(matches!(
            render_named(&k, Dialect::Cuda, bad),
            Err(BackendError::Compile { .. })
        ));
    }
    // An operand used before it is defined.
    let mut m = k.clone();
    m.phases[0].body[0] = (
        Inst::Binary(metajit_metaops::BinaryOp::Add, V(3), V(3)),
        DType::I64,
    );
    assert!(matches!(
        render(&m, Dialect::OpenCl),
        Err(BackendError::Compile { .. })
    ));
    // A bitwise op on floats.
    let mut m = k.clone();
    m.phases[1].body[7] = (
        Inst::Binary(metajit_metaops::BinaryOp::Xor, V(5), V(6)),
        DType::F32,
    );
    let e = render(&m, Dialect::Cuda).expect_err("xor of floats");
    assert!(e.to_string().contains("Binary(Xor, V(5), V(6))"), "{e}");
    // A phase result of a Store phase, a size parameter that does not exist.
    let mut m = k.clone();
    m.phases[2].body[6] = (Inst::PhaseResult(2), DType::F32);
    assert!(render(&m, Dialect::OpenCl).is_err());
    let mut m = k;
    m.phases[2].body[2] = (Inst::Size(9), DType::I64);
    assert!(render(&m, Dialect::OpenCl).is_err());
}

/// Both dialects' sources of many kernels (as one program each) through clang's front end:
/// the CUDA dialect in CUDA mode against `gpu_cuda_stub.h` (no CUDA toolkit needed), the
/// OpenCL dialect as OpenCL C 1.2. Skipped without clang. This checks that the CUDA source
/// is well-formed and type-correct; it does not run it (NVRTC and a GPU are not needed here,
/// and nothing CUDA-specific is executed).
#[test]
fn rendered_source_compiles_with_clang() {
    let Some(clang) = gpu_common::clang() else {
        println!("skipped: no clang");
        return;
    };
    let ks = gpu_common::sample_kernels(40);
    gpu_common::clang_check(&clang, &ks, "all");
    println!(
        "{} kernels in both dialects pass {clang} -fsyntax-only",
        ks.len()
    );
}

#[test]
fn reductions_pick_both_mappings() {
    // The launch picks the group mapping for long rows and the thread mapping for short ones.
    let k = gpu_common::reduce(ReduceOp::Sum, DType::F32, Axis::Rows);
    let r = render(&k, Dialect::OpenCl).expect("render");
    let kind = |sizes: &[i64]| r.entries[r.launch(sizes).entry].kind;
    assert_eq!(kind(&[10, 1000]), EntryKind::Group);
    assert_eq!(kind(&[1000, 8]), EntryKind::Thread);
    assert_eq!(kind(&[100_000, 500]), EntryKind::Thread);
}
