//! Tests of the CUDA backend alone; the test body every backend runs is `suite/mod.rs`, run
//! on CUDA by `devices.rs`. Where `Cuda::open(0)` fails (no driver, NVRTC, cuBLAS or device)
//! these print `skipped: <why>` and pass.

#[macro_use]
mod suite;
mod gpu_common;

use metajit_codegen::gpu::cuda::{self, Cuda};

/// PTX artifacts (the driver JIT-compiles them; the default is a CUBIN) compile, load back and
/// compute what the CUBIN path computes; the per-op graphs run on them too.
#[test]
fn ptx_artifacts() {
    let c = match Cuda::open(0) {
        Ok(c) => c,
        Err(e) => {
            gpu_common::skip_or_fail("cuda", &e.to_string());
            return;
        }
    };
    c.set_cubin(false);
    suite::artifacts(&c);
    suite::elementwise_ops_of_every_dtype(&c);
    suite::reductions_over_rows_columns_and_all(&c);
    suite::scheduled_graphs(&c);
}

/// Needs no GPU: on a machine without CUDA, opening is an error that says what is missing
/// (not a panic); with CUDA, device 0 opens and reports an architecture.
#[test]
fn detection_is_an_error_not_a_panic() {
    match (cuda::libraries_present(), Cuda::open(0)) {
        (Err(why), Err(e)) => {
            let msg = e.to_string();
            assert!(msg.contains(&why), "{msg}");
            println!("no CUDA here, as expected: {msg}");
        }
        (Ok(()), Ok(c)) => {
            let info = c.info();
            assert!(info.compute_capability.0 >= 3, "{info:?}");
            println!("opened {info:?}");
        }
        (Ok(()), Err(e)) => println!("CUDA libraries found, but no usable device 0: {e}"),
        (Err(why), Ok(c)) => panic!("opened {:?} although {why}", c.info()),
    }
    assert!(Cuda::open(usize::MAX).is_err());
}

/// Writes the CUDA C of every kernel the suite runs (the per-op graphs and the random graphs of
/// `METAJIT_FUZZ_SEEDS`) into the folder `METAJIT_CUDA_DUMP`, one `.cu` file per distinct
/// kernel: for checking that the renderer's CUDA dialect compiles (with NVRTC, or with clang's
/// CUDA front end) on a machine without a GPU.
#[test]
#[ignore]
fn dump_cuda_sources() {
    use metajit_codegen::gpu::{Dialect, render};
    let Ok(dir) = std::env::var("METAJIT_CUDA_DUMP") else {
        println!("set METAJIT_CUDA_DUMP to a folder");
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/k0000.cu"), cuda::NAIVE_GEMM_SOURCE).unwrap();
    let kernels = suite::scheduled_kernels();
    for (i, kernel) in kernels.iter().enumerate() {
        let r = render::render(kernel, Dialect::Cuda).unwrap();
        let path = format!("{dir}/k{:04}.cu", i + 1);
        std::fs::write(&path, format!("/*\n{}*/\n{}", kernel.text(), r.source)).unwrap();
    }
    println!("{} kernels written to {dir}", kernels.len());
}
