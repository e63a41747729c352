//! Tests of the OpenCL backend alone; the test body every backend runs (per-op kernels,
//! graphs, GEMM, buffers, artifacts) is `suite/mod.rs`, run on OpenCL by `devices.rs`.
//!
//! Without an OpenCL device these print `skipped: no OpenCL device (<why>)` and pass.

use metajit_codegen::Backend;
use metajit_codegen::gpu::opencl::OpenCl;

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
    if let Some(dev) = device() {
        let _ = dev;
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
