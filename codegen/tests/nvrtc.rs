//! The CUDA dialect through the real NVRTC, with no driver and no GPU: every kernel the tests
//! make compiles and assembles for an H100/H200 (`sm_90`, a CUBIN, so NVRTC's ptxas ran) with
//! the CUDA runtime's own options (`Nvrtc` is what `Cuda::compile` calls), and its PTX defines
//! every entry point a launch looks up. The hand-built kernels also compile for the oldest and
//! the newest architecture this NVRTC supports.
//!
//! This checks that NVRTC accepts the rendered source and that it assembles; it runs nothing
//! (no driver is needed or used). It needs libnvrtc on the library path: CI installs NVIDIA's
//! `nvidia-cuda-nvrtc` wheel for it and sets `METAJIT_REQUIRE_DEVICES=...,nvrtc`; elsewhere,
//! without libnvrtc, the tests print `skipped: ...` and pass.
//!
//! `METAJIT_FUZZ_SEEDS` / `METAJIT_FUZZ_FROM` choose the random graphs, as in `devices.rs`.

#[macro_use]
#[allow(unused_macros)]
mod suite;
mod gpu_common;

use std::collections::HashSet;
use std::time::Instant;

use metajit_codegen::BackendError;
use metajit_codegen::gpu::Dialect;
use metajit_codegen::gpu::cuda::{NAIVE_GEMM_SOURCE, Nvrtc};
use metajit_codegen::gpu::render::{program_source, render_named};
use metajit_metaops::kernel::Kernel;

/// The architecture of an H100/H200.
const HOPPER: (i32, i32) = (9, 0);

/// NVRTC for `cc`, or `None` after `skip_or_fail` where libnvrtc does not load.
fn nvrtc(cc: (i32, i32)) -> Option<Nvrtc> {
    match Nvrtc::open(cc) {
        Ok(n) => Some(n),
        Err(e) => {
            gpu_common::skip_or_fail("nvrtc", &e.to_string());
            None
        }
    }
}

/// Every distinct kernel the backend tests run: the hand-built ones, every element-wise op,
/// cast and reduction of every dtype, and the schedules of the per-op graphs and of the
/// fuzzer's simplified random graphs.
fn all_kernels() -> Vec<Kernel> {
    let mut ks = gpu_common::sample_kernels(0);
    ks.extend(gpu_common::elementwise_kernels());
    ks.extend(suite::scheduled_kernels());
    let mut seen = HashSet::new();
    ks.retain(|k| seen.insert(k.text()));
    ks
}

/// Whether the PTX line opens the definition of entry point `name`.
fn is_entry(line: &str, name: &str) -> bool {
    line.split_whitespace()
        .skip_while(|w| *w != ".entry")
        .nth(1)
        .is_some_and(|w| w.split('(').next() == Some(name))
}

/// Whether the PTX text defines the entry point `name`.
fn defines(ptx: &str, name: &str) -> bool {
    ptx.lines().any(|l| is_entry(l, name))
}

/// The types of entry point `name`'s parameters in the PTX (`.u64`, `.s64`, ...), or `None`
/// where it is not defined.
fn entry_params(ptx: &str, name: &str) -> Option<Vec<String>> {
    let mut lines = ptx.lines().skip_while(|l| !is_entry(l, name));
    lines.next()?;
    Some(
        lines
            .take_while(|l| !l.trim_start().starts_with(')'))
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(".param")).then(|| w.next().unwrap_or("").to_string())
            })
            .collect(),
    )
}

/// Every kernel compiles to a CUBIN for sm_90, as the runtime compiles it, and its PTX defines
/// each entry point (and split entry point) a launch looks up, with the parameters a launch
/// passes: one 64-bit word per buffer address, then the scratch address (split entry points
/// only), then one per size (`Cuda::run` pushes `u64` addresses and `i64` sizes). Prints NVRTC's time per kernel
/// on this machine (two threads compile at once, so each time includes some contention).
#[test]
fn every_kernel_compiles_and_assembles_for_sm_90() {
    let Some(nv) = nvrtc(HOPPER) else { return };
    let ks = all_kernels();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let chunk = ks.len().div_ceil(threads);
    let mut times: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = ks
            .chunks(chunk)
            .map(|part| {
                let nv = &nv;
                s.spawn(move || {
                    let mut times = Vec::new();
                    for k in part {
                        let t = Instant::now();
                        let out = nv
                            .compile(k, true)
                            .unwrap_or_else(|e| panic!("NVRTC rejected a kernel: {e}"));
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                        assert!(out.code.starts_with(b"\x7fELF"), "not a CUBIN");
                        let ptx = out.ptx.expect("NVRTC gives the PTX with a CUBIN");
                        let r = &out.rendered;
                        let entries = r.entries.iter().map(|e| (e.name.as_str(), 0));
                        let splits = r.split_entries.iter().map(|e| (e.as_str(), 1));
                        for (name, scratch) in entries.chain(splits) {
                            let params = entry_params(&ptx, name).unwrap_or_else(|| {
                                panic!("the PTX lacks entry {name}:\n{}\n{ptx}", k.text())
                            });
                            let n = k.bufs.len() + scratch + k.n_sizes;
                            assert!(
                                params.len() == n
                                    && params.iter().all(|t| t == ".u64" || t == ".s64"),
                                "entry {name} takes {params:?}, a launch passes {n} words:\n{}",
                                k.text()
                            );
                        }
                    }
                    times
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a compile thread panicked"))
            .collect()
    });
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "NVRTC {:?}: {} kernels compiled to sm_90 CUBINs on {threads} threads; ms per kernel: \
         median {:.1}, p90 {:.1}, max {:.1}",
        nv.version(),
        times.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
    assert!(times.len() > 500, "only {} kernels", times.len());
}

/// The hand-built kernels (every reduce op and dtype, every element-wise op and cast, random
/// numbers, multi-phase kernels), as one program, compile to a CUBIN for the oldest architecture
/// this NVRTC supports from sm_75 (Turing) on and for the newest (for every supported one with
/// `METAJIT_NVRTC_ARCHS=all`); sm_90 is the test above.
#[test]
fn hand_built_kernels_compile_for_every_supported_architecture() {
    let Some(nv) = nvrtc(HOPPER) else { return };
    let mut ks = gpu_common::sample_kernels(0);
    ks.extend(gpu_common::elementwise_kernels());
    let rendered: Vec<_> = ks
        .iter()
        .enumerate()
        .map(|(i, k)| render_named(k, Dialect::Cuda, &format!("k{i}")).expect("render"))
        .collect();
    let refs: Vec<_> = rendered.iter().collect();
    let source = program_source(Dialect::Cuda, &refs);
    let archs = nv.supported_archs().expect("NVRTC lists its architectures");
    let mut archs: Vec<_> = archs.into_iter().filter(|&a| a >= (7, 5)).collect();
    assert!(archs.contains(&HOPPER), "{archs:?}");
    if std::env::var("METAJIT_NVRTC_ARCHS").as_deref() != Ok("all") {
        let (first, last) = (archs[0], archs[archs.len() - 1]);
        archs.retain(|&a| a == first || a == last);
    }
    for &cc in &archs {
        let nv = Nvrtc::open(cc).expect("NVRTC opened above");
        let (code, _) = nv
            .compile_source(&source, true)
            .unwrap_or_else(|e| panic!("sm_{}{}: {e}", cc.0, cc.1));
        assert!(code.starts_with(b"\x7fELF"));
    }
    println!(
        "{} kernels compile for {:?}",
        ks.len(),
        archs
            .iter()
            .map(|(a, b)| format!("sm_{a}{b}"))
            .collect::<Vec<_>>()
    );
}

/// The naive GEMM kernels (for layouts cuBLAS cannot take) compile and define both entries.
#[test]
fn naive_gemm_compiles() {
    let Some(nv) = nvrtc(HOPPER) else { return };
    let (code, ptx) = nv
        .compile_source(NAIVE_GEMM_SOURCE, true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(code.starts_with(b"\x7fELF"));
    let ptx = ptx.expect("PTX with the CUBIN");
    for name in ["metajit_naive_gemm_f32", "metajit_naive_gemm_f64"] {
        assert!(defines(&ptx, name), "no entry {name}");
    }
}

/// A compile error carries NVRTC's log, the options, the source and the kernel: bad source
/// names the undefined identifier, and an architecture NVRTC does not know fails at compile
/// (not at open) with a `Compile` error.
#[test]
fn compile_errors_carry_the_log_and_the_source() {
    let Some(nv) = nvrtc(HOPPER) else { return };
    let err = nv
        .compile_source(
            "extern \"C\" __global__ void k(float* a) { a[0] = no_such_thing; }",
            true,
        )
        .expect_err("undefined identifier");
    assert!(err.contains("no_such_thing"), "{err}");
    assert!(err.contains("--gpu-architecture=sm_90"), "{err}");
    let bogus = Nvrtc::open((1, 0)).expect("opening does not check the architecture");
    let k = gpu_common::softmax();
    match bogus.compile(&k, true) {
        Err(BackendError::Compile {
            backend,
            message,
            kernel,
        }) => {
            assert_eq!(backend, "cuda");
            assert!(message.contains("CUDA C source"), "{message}");
            assert!(message.contains("sm_10"), "{message}");
            assert_eq!(kernel, k.text());
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

/// The options: no FMA contraction, the architecture, and `--minimal` from NVRTC 12.4 on.
#[test]
fn options_name_the_architecture() {
    let Some(nv) = nvrtc(HOPPER) else { return };
    let cubin = nv.options(true);
    assert!(cubin.contains(&"--fmad=false".to_string()), "{cubin:?}");
    assert_eq!(
        cubin.last().map(String::as_str),
        Some("--gpu-architecture=sm_90")
    );
    assert_eq!(
        nv.options(false).last().map(String::as_str),
        Some("--gpu-architecture=compute_90")
    );
    assert_eq!(
        cubin.contains(&"--minimal".to_string()),
        nv.version() >= (12, 4)
    );
}
