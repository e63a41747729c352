//! The backend test body (`suite/mod.rs`) on every backend: the CPU backend (always), OpenCL
//! device 0 (pocl in CI; `skipped: no OpenCL device (...)` where the loader finds none) and
//! CUDA device 0 (`skipped: no CUDA driver (...)` or another reason where it cannot open), and
//! the CUDA dialect on the CPU (`cuda_emu`: g++ and `cuda_emu.h`, see `emu/mod.rs`).
//! Tests of one backend alone are in `opencl.rs` and `cuda.rs`.
//!
//! `METAJIT_FUZZ_SEEDS` / `METAJIT_FUZZ_FROM` choose the simplified random graphs.

#[macro_use]
mod suite;
mod emu;
mod gpu_common;

use emu::CudaEmu;
use metajit_codegen::cpu::backend::Cpu;
use metajit_codegen::gpu::cuda::Cuda;
use metajit_codegen::gpu::opencl::OpenCl;

backend_tests!(cpu, Cpu, Ok::<_, String>(Cpu::new(2)));
backend_tests!(
    opencl,
    OpenCl,
    OpenCl::open(0).map_err(|e| format!("no OpenCL device ({e})"))
);
backend_tests!(cuda, Cuda, Cuda::open(0));
backend_tests!(cuda_emu, CudaEmu, CudaEmu::new());

/// The CPU backend's f32 `sin`/`cos` of arguments past the inline code's range (lanes beyond
/// `math::sin_cos_inline_limit` take the exact reduction): sin(3e9) is 0.98700 (the interpreter,
/// PyTorch); before that fix the CPU kernel gave -0.54030. Lengths 4 and 7 run the vector
/// loop with huge and small lanes mixed, and the scalar tail.
#[test]
fn cpu_sin_cos_f32_of_huge_arguments() {
    use metajit_codegen::Backend;
    use metajit_metaops::kernel;
    use metajit_metaops::{DType, HostData, UnaryOp};
    let dev = Cpu::new(1);
    let all = [
        3e9,
        -3e9,
        1e30,
        1e7,
        0.5,
        -2.0,
        f32::MAX,
        -1.0e5,
        100_001.0,
        -f32::MAX,
        3.0,
    ];
    for op in [UnaryOp::Sin, UnaryOp::Cos] {
        let k = gpu_common::unary(op, DType::F32);
        let c = dev.compile(&k).expect("compile");
        for n in [4, 7, all.len()] {
            let x = HostData::F32(all[..n].to_vec());
            let mut want = vec![x.clone(), HostData::zeros(DType::F32, n)];
            kernel::interpret(&k, &mut want, &[n as i64], 0..n as i64);
            let a = dev.upload(&x).expect("upload");
            let out = dev.alloc(DType::F32, n).expect("alloc");
            // SAFETY: a hand-built element-wise kernel over its declared extents.
            unsafe { dev.launch(&c, &k, &[&a, &out], &[n as i64]) }.expect("launch");
            let got = dev.download(&out).expect("download");
            for i in 0..n {
                let (g, w) = (got.get(i).to_f64(), want[1].get(i).to_f64());
                assert!(
                    (g - w).abs() <= 1e-5,
                    "{} x = {}: got {g}, want {w}",
                    op.name(),
                    x.get(i)
                );
            }
        }
    }
}
