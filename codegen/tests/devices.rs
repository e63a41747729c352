//! The backend test body (`suite/mod.rs`) on every backend: the CPU backend (always), OpenCL
//! device 0 (pocl in CI; `skipped: no OpenCL device (...)` where the loader finds none) and
//! CUDA device 0 (`skipped: no CUDA driver (...)` or another reason where it cannot open).
//! Tests of one backend alone are in `opencl.rs` and `cuda.rs`.
//!
//! `METAJIT_FUZZ_SEEDS` / `METAJIT_FUZZ_FROM` choose the simplified random graphs.

#[macro_use]
mod suite;
mod gpu_common;

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

/// The CPU backend's f32 `sin`/`cos` of arguments past its accurate range (documented in
/// `codegen/src/cpu/math.rs`: from |x| ≈ 6.6e6 the result no longer approximates the function):
/// sin(3e9) is 0.98700 (the interpreter, PyTorch) but the CPU kernel gives -0.54030; the test
/// body leaves such inputs out on the CPU backend (`Device::sin_cos_f32_limit`).
#[test]
#[ignore = "known: CPU f32 sin/cos past |x| = 6.6e6 (cpu/math.rs range reduction)"]
fn cpu_sin_cos_f32_of_huge_arguments() {
    use metajit_codegen::Backend;
    use metajit_metaops::kernel;
    use metajit_metaops::{DType, HostData, UnaryOp};
    let dev = Cpu::new(1);
    for op in [UnaryOp::Sin, UnaryOp::Cos] {
        let k = gpu_common::unary(op, DType::F32);
        let x = HostData::F32(vec![3e9, -3e9, 1e30, 1e7]);
        let mut want = vec![x.clone(), HostData::zeros(DType::F32, 4)];
        kernel::interpret(&k, &mut want, &[4], 0..1);
        let c = dev.compile(&k).expect("compile");
        let a = dev.upload(&x).expect("upload");
        let out = dev.alloc(DType::F32, 4).expect("alloc");
        // SAFETY: a hand-built element-wise kernel over its declared extents.
        unsafe { dev.launch(&c, &k, &[&a, &out], &[4]) }.expect("launch");
        let got = dev.download(&out).expect("download");
        for i in 0..4 {
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
