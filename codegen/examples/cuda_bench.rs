//! CUDA timings for `scripts/gpu_check.sh` (a machine with an NVIDIA GPU; prints `skipped: ...`
//! and exits 0 without one):
//!
//! 1. per kernel of W1-W3-like graphs (elementwise chain, row softmax, full sum, column sum):
//!    NVRTC cold compile (render + NVRTC + module load), warm load (the cached code through
//!    `Backend::load`, no NVRTC), and the launch's time and bandwidth (minimum of 10 runs);
//!    once with CUBIN artifacts (the default) and once with PTX (the driver JIT-compiles it
//!    when loading; `Cuda::set_cubin(false)`);
//! 2. the device's copy bandwidth (device-to-device memcpy of W1's bytes), for W1's share;
//! 3. a 4096x4096x4096 f32 matmul through `Backend::contraction` vs a direct cuBLAS SGEMM on
//!    the same buffers, GFLOP/s (minimum time of 10 runs each).
//!
//! `cargo run --release -p metajit-codegen --example cuda_bench -- --cpu` runs part 1 (and
//! the matmul through the backend) on the CPU backend at small sizes: a dry run of this
//! program where there is no GPU.

use std::time::{Duration, Instant};

use metajit_codegen::Backend;
use metajit_codegen::cpu::backend::Cpu;
use metajit_codegen::gpu::cuda::Cuda;
use metajit_metaops::contraction::GemmLayout;
use metajit_metaops::schedule::{Step, schedule, size_values};
use metajit_metaops::{DType, HostData, Op, Scalar, parse};

fn graphs(n: usize, side: usize) -> Vec<(&'static str, String, f64)> {
    let w1 = format!(
        "%0 = input #0 : f32[{n}]
%1 = const 1.5 : f32[{n}]
%2 = mul %0, %1 : f32[{n}]
%3 = const 0.5 : f32[{n}]
%4 = add %2, %3 : f32[{n}]
%5 = const 0.0 : f32[{n}]
%6 = max %4, %5 : f32[{n}]
%7 = sigmoid %0 : f32[{n}]
%8 = mul %6, %7 : f32[{n}]
%9 = tanh %0 : f32[{n}]
%10 = add %8, %9 : f32[{n}]
return %10
"
    );
    let s = side;
    let w2 = format!(
        "%0 = input #0 : f32[{s}, {s}]
%1 = reduce max %0 axes=[1] keepdims : f32[{s}, 1]
%2 = reshape %1 : f32[{s}]
%3 = broadcast %2 axes=[1] : f32[{s}, {s}]
%4 = sub %0, %3 : f32[{s}, {s}]
%5 = exp %4 : f32[{s}, {s}]
%6 = reduce sum %5 axes=[1] keepdims : f32[{s}, 1]
%7 = reshape %6 : f32[{s}]
%8 = broadcast %7 axes=[1] : f32[{s}, {s}]
%9 = div %5, %8 : f32[{s}, {s}]
return %9
"
    );
    let w3 = format!("%0 = input #0 : f32[{n}]\n%1 = reduce sum %0 axes=[0] : f32[]\nreturn %1\n");
    let w3c = format!(
        "%0 = input #0 : f32[{s}, {s}]\n%1 = reduce sum %0 axes=[0] : f32[{s}]\nreturn %1\n"
    );
    let (n, ss) = (n as f64, (s * s) as f64);
    vec![
        ("W1 elementwise", w1, 8.0 * n),
        ("W2 softmax", w2, 8.0 * ss),
        ("W3 sum", w3, 4.0 * n),
        ("W3 colsum", w3c, 4.0 * ss + 4.0 * s as f64),
    ]
}

fn min_time(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Part 1 on any backend: compile / load / launch times per kernel.
fn kernels<B: Backend>(b: &B, n: usize, side: usize) {
    println!("kernel                     cold compile ms   warm load ms   launch ms   GB/s");
    for (name, text, bytes) in graphs(n, side) {
        let g = parse::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let s = schedule(&g);
        let input = g
            .nodes
            .iter()
            .find(|n| n.op == Op::Input { slot: 0 })
            .expect("an input");
        let x = HostData::filled(Scalar::F32(0.25), input.shape.numel());
        let xb = b.upload(&x).expect("upload");
        for (i, step) in s.steps.iter().enumerate() {
            let Step::Kernel { kernel, sizes, .. } = step else {
                continue;
            };
            let t = Instant::now();
            let cold = b.compile(kernel).unwrap_or_else(|e| panic!("{e}"));
            let cold_t = t.elapsed();
            let bytes_art = b.artifact(&cold);
            let t = Instant::now();
            // SAFETY: the artifact of this kernel from this backend.
            let warm = unsafe { b.load(kernel, &bytes_art) }.unwrap_or_else(|e| panic!("{e}"));
            let warm_t = t.elapsed();
            let sv = size_values(&g, sizes);
            let outs: Vec<B::Buffer> = kernel
                .bufs
                .iter()
                .map(|p| {
                    b.alloc(p.dtype, p.numel(&sv).expect("extents"))
                        .expect("alloc")
                })
                .collect();
            let args: Vec<&B::Buffer> = kernel
                .bufs
                .iter()
                .zip(&outs)
                .map(|(p, o)| if p.output { o } else { &xb })
                .collect();
            // Every input of these graphs is input 0 (one-kernel schedules).
            let run = min_time(10, || {
                // SAFETY: the scheduler's kernel on buffers of its declared extents.
                unsafe { b.launch(&warm, kernel, &args, &sv) }.expect("launch");
                b.synchronize().expect("synchronize");
            });
            println!(
                "{:<22} k{i}  {:>14.2}   {:>12.3}   {:>9.3}   {:>6.1}",
                name,
                ms(cold_t),
                ms(warm_t),
                ms(run),
                bytes / run.as_secs_f64() / 1e9
            );
        }
    }
}

/// The matmul through the backend; returns its buffers for a direct comparison.
fn matmul<B: Backend>(b: &B, n: usize) -> (Duration, [B::Buffer; 3]) {
    let a = HostData::from_vec(
        (0..n * n)
            .map(|i| (i % 7) as f32 * 0.25)
            .collect::<Vec<_>>(),
    );
    let (x, y) = (b.upload(&a).expect("upload"), b.upload(&a).expect("upload"));
    let mut d = b.alloc(DType::F32, n * n).expect("alloc");
    let l = GemmLayout::row_major(n, n, n);
    let t = min_time(10, || {
        b.contraction(&l, DType::F32, &mut d, &x, &y)
            .expect("contraction");
        b.synchronize().expect("synchronize");
    });
    let flops = 2.0 * (n as f64).powi(3);
    println!(
        "matmul {n}: backend {:.3} ms, {:.0} GFLOP/s",
        ms(t),
        flops / t.as_secs_f64() / 1e9
    );
    (t, [d, x, y])
}

fn cuda_only(c: &Cuda, n: usize) {
    use cudarc::cublas::CudaBlas;
    use cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N;
    use cudarc::driver::CudaContext;
    // Copy bandwidth: a device-to-device memcpy of W1's bytes (read n, write n floats).
    let src = c.alloc(DType::F32, n).expect("alloc");
    let dst = c.alloc(DType::F32, n).expect("alloc");
    // The backend allocates on its own stream: wait for it before another stream uses them.
    c.synchronize().expect("synchronize");
    let ctx = CudaContext::new(c.info().ordinal).expect("the primary context");
    let stream = ctx.default_stream();
    let sync = || stream.synchronize().expect("synchronize");
    let t = min_time(10, || {
        // SAFETY: both buffers hold n f32; the default stream is synchronised after.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                dst.device_ptr(),
                src.device_ptr(),
                4 * n,
                stream.cu_stream(),
            )
        }
        .expect("memcpy");
        sync();
    });
    println!(
        "copy bandwidth (memcpy d2d, {} MiB read + written): {:.1} GB/s",
        (4 * n) >> 20,
        8.0 * n as f64 / t.as_secs_f64() / 1e9
    );
    let side = 4096;
    c.synchronize().expect("synchronize");
    let (backend_t, [d, x, y]) = matmul(c, side);
    let blas = CudaBlas::new(stream.clone()).expect("cuBLAS");
    let (alpha, beta) = (1.0f32, 0.0f32);
    let ld = side as i32;
    let t = min_time(10, || {
        // SAFETY: three 4096x4096 f32 buffers; the default stream is synchronised after.
        unsafe {
            cudarc::cublas::result::sgemm(
                *blas.handle(),
                CUBLAS_OP_N,
                CUBLAS_OP_N,
                ld,
                ld,
                ld,
                &alpha,
                y.device_ptr() as *const f32,
                ld,
                x.device_ptr() as *const f32,
                ld,
                &beta,
                d.device_ptr() as *mut f32,
                ld,
            )
        }
        .expect("sgemm");
        sync();
    });
    let flops = 2.0 * (side as f64).powi(3);
    println!(
        "matmul {side}: direct cuBLAS {:.3} ms, {:.0} GFLOP/s; backend / direct time = {:.3}",
        ms(t),
        flops / t.as_secs_f64() / 1e9,
        backend_t.as_secs_f64() / t.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--cpu") {
        let cpu = Cpu::new(2);
        kernels(&cpu, 1 << 16, 256);
        matmul(&cpu, 256);
        return;
    }
    let c = match Cuda::open(0) {
        Ok(c) => c,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    println!("{:?}", c.info());
    println!("cache identity: {}", c.cache_identity());
    println!("-- CUBIN artifacts (the default)");
    kernels(&c, 1 << 24, 4096);
    println!("-- PTX artifacts");
    c.set_cubin(false);
    kernels(&c, 1 << 24, 4096);
    c.set_cubin(true);
    cuda_only(&c, 1 << 24);
}
