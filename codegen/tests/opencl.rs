//! Tests of the OpenCL backend alone; the test body every backend runs (per-op kernels,
//! graphs, GEMM, buffers, artifacts) is `suite/mod.rs`, run on OpenCL by `devices.rs`.
//!
//! Without an OpenCL device these print `skipped: no OpenCL device (<why>)` and pass.

use metajit_codegen::Backend;
use metajit_codegen::gpu::opencl::OpenCl;
use metajit_metaops::contraction::{GemmLayout, gemm_reference};
use metajit_metaops::{DType, HostData, Scalar};

mod gpu_common;

fn device() -> Option<&'static OpenCl> {
    gpu_common::opencl()
}

/// Bytes that are no program binary are refused by `load` (the OpenCL runtime checks
/// them), not run.
#[test]
fn garbage_artifacts_are_refused() {
    let Some(dev) = device() else { return };
    let k = gpu_common::softmax();
    // SAFETY: garbage is refused by the runtime before anything runs.
    assert!(unsafe { dev.load(&k, &[3, b'a']) }.is_err());
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
    if device().is_some() {
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

/// Small-integer f32 data (exact products and sums).
fn ints(n: usize, seed: usize) -> HostData {
    HostData::F32((0..n).map(|i| ((i * 7 + seed) % 9) as f32 - 4.0).collect())
}

/// A buffer dropped while a GEMM that reads it is still queued goes back to the pool and is
/// handed to the next allocation of its size class, whose fill is queued after the GEMM: the
/// GEMM still reads the old contents (the in-order queue's guarantee the pool relies on).
#[test]
fn pooled_buffers_are_reused_in_queue_order() {
    let Some(dev) = device() else { return };
    let (m, n, k) = (64, 48, 256);
    let l = GemmLayout::row_major(m, n, k);
    let (a, c) = (ints(m * k, 1), ints(k * n, 2));
    let mut want = HostData::F32(vec![0.0; m * n]);
    gemm_reference(&l, &mut want, &a, &c);
    for _ in 0..10 {
        let mut dst = dev.alloc(DType::F32, m * n).unwrap();
        {
            let (da, dc) = (dev.upload(&a).unwrap(), dev.upload(&c).unwrap());
            dev.contraction(&l, DType::F32, &mut dst, &da, &dc).unwrap();
        }
        let hits = dev.pool_stats().hits;
        // Slightly different sizes, the same classes as `da` and `dc`.
        let mut x = dev.alloc(DType::F32, m * k - 3).unwrap();
        let mut y = dev.alloc(DType::F32, k * n - 5).unwrap();
        assert!(dev.pool_stats().hits >= hits + 2, "{}", dev.pool_stats());
        dev.fill(&mut x, Scalar::F32(1e9)).unwrap();
        dev.fill(&mut y, Scalar::F32(-1e9)).unwrap();
        assert_eq!(dev.download(&dst).unwrap(), want);
    }
    assert!(dev.pooled_bytes() > 0);
    dev.trim_pool();
    let s = dev.pool_stats();
    assert!(s.hits > 0 && s.misses > 0 && s.released > 0, "{s}");
}

/// More GEMM layouts than the descriptor cache keeps, all launched before anything waits:
/// clearing the cache while launches that read its buffers are queued changes no result.
#[test]
fn many_gemm_layouts_in_flight() {
    let Some(dev) = device() else { return };
    let mut runs = Vec::new();
    for m in 1..=300 {
        let (n, k) = (3, 1 + m % 5);
        let l = GemmLayout::row_major(m, n, k);
        let (a, c) = (ints(m * k, m), ints(k * n, m + 1));
        let mut want = HostData::F32(vec![0.0; m * n]);
        gemm_reference(&l, &mut want, &a, &c);
        let dst = dev.alloc(DType::F32, m * n).unwrap();
        runs.push((
            l,
            dev.upload(&a).unwrap(),
            dev.upload(&c).unwrap(),
            dst,
            want,
        ));
    }
    for (l, a, c, dst, _) in &mut runs {
        dev.contraction(l, DType::F32, dst, a, c).unwrap();
    }
    for (l, _, _, dst, want) in &runs {
        assert_eq!(&dev.download(dst).unwrap(), want, "{l:?}");
    }
}

/// With a cap of 0 bytes the pool holds nothing: every buffer is released when dropped.
#[test]
fn pool_cap_zero_holds_nothing() {
    // (A device of its own, so that the shared one's pool is not capped.)
    if device().is_none() {
        return;
    }
    let own = OpenCl::open(0).unwrap();
    own.set_pool_cap(0);
    for n in [1, 100, 1 << 20] {
        let h = ints(n, n);
        let b = own.upload(&h).unwrap();
        assert_eq!(own.download(&b).unwrap(), h);
        assert!(b.bytes() >= 4 * n);
        drop(b);
        assert_eq!(own.pooled_bytes(), 0);
    }
    let s = own.pool_stats();
    assert_eq!((s.hits, s.misses, s.released), (0, 3, 3), "{s}");
}

/// Not a test: timings for the buffer pool and the GEMM's queue waits on this device,
/// each variant alternated with the other in one process (minimum of the repetitions).
/// `cargo test --release -p metajit-codegen --test opencl -- --ignored --nocapture pool_timings`
#[test]
#[ignore = "prints timings"]
fn pool_timings() {
    use std::time::{Duration, Instant};
    let Some(_) = device() else { return };
    let dev = OpenCl::open(0).unwrap();
    let reps = 30;
    // A training step's worth of buffers: 60 sizes from 2 KiB to 4 MiB, each allocated,
    // filled and dropped, then one wait.
    let sizes: Vec<usize> = (0..60).map(|i| 512 << (i % 12) | (i * 37)).collect();
    let step = |dev: &OpenCl| {
        let t = Instant::now();
        for &n in &sizes {
            let mut b = dev.alloc(DType::F32, n).unwrap();
            dev.fill(&mut b, Scalar::F32(1.0)).unwrap();
        }
        dev.synchronize().unwrap();
        t.elapsed()
    };
    let (mut fresh, mut pooled) = (Duration::MAX, Duration::MAX);
    for _ in 0..reps {
        dev.set_pool_cap(0);
        fresh = fresh.min(step(&dev));
        dev.set_pool_cap(1 << 30);
        step(&dev);
        pooled = pooled.min(step(&dev));
    }
    println!(
        "alloc+fill+drop of 60 buffers: fresh {fresh:?}, pooled {pooled:?} (x{:.2}); {}",
        fresh.as_secs_f64() / pooled.as_secs_f64(),
        dev.pool_stats()
    );
    // 100 small GEMMs (LeNet's second convolution as one batch-free product) enqueued back to
    // back, then one wait; the old way is emulated by a blocking 8-byte upload and a wait after
    // each one (the old code uploaded the descriptor, then called finish).
    let l = GemmLayout::row_major(16, 64, 150);
    let (a, c) = (ints(16 * 150, 1), ints(150 * 64, 2));
    let (da, dc) = (dev.upload(&a).unwrap(), dev.upload(&c).unwrap());
    let mut dst = dev.alloc(DType::F32, 16 * 64).unwrap();
    let one = HostData::I64(vec![0]);
    let gemms = |dev: &OpenCl, dst: &mut _, wait: bool| {
        let t = Instant::now();
        for _ in 0..100 {
            if wait {
                drop(dev.upload(&one).unwrap());
            }
            dev.contraction(&l, DType::F32, dst, &da, &dc).unwrap();
            if wait {
                dev.synchronize().unwrap();
            }
        }
        dev.synchronize().unwrap();
        t.elapsed()
    };
    let (mut waiting, mut queued) = (Duration::MAX, Duration::MAX);
    for _ in 0..reps {
        waiting = waiting.min(gemms(&dev, &mut dst, true));
        queued = queued.min(gemms(&dev, &mut dst, false));
    }
    println!(
        "100 GEMMs 16x64x150: waiting after each {waiting:?}, queued {queued:?} (x{:.2})",
        waiting.as_secs_f64() / queued.as_secs_f64()
    );
}
