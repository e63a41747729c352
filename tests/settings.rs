//! One policy for every `METAJIT_*` setting (DESIGN §8): a bad value is an `Error::Config`
//! naming the variable, the value and the allowed values — returned by `realize`, `to_vec`,
//! `item` and `config::validate`, never a panic, never ignored — while the infallible readers
//! give the default and recording goes on lazily.
//!
//! Settings are process-wide and read once, so each case runs in a child process of this test
//! binary with the variable set: the parent re-runs its own test with `METAJIT_SETTINGS_CHILD`
//! set, and the child does the checking.

use std::ffi::OsStr;
use std::process::Command;

use metajit::{CacheMode, Device, Error, Mode, Tensor, config};

const CHILD: &str = "METAJIT_SETTINGS_CHILD";

/// In the parent: runs test `name` in a child with `vars` set and asserts that it passed.
/// In the child: returns `true`, and the caller does the checks.
fn in_child(name: &str, vars: &[(&str, &OsStr)]) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1");
    for var in [
        "METAJIT_MODE",
        "METAJIT_DEVICE",
        "METAJIT_DEBUG",
        "METAJIT_THREADS",
        "METAJIT_CACHE",
        "METAJIT_CACHE_MAX_MB",
    ] {
        cmd.env_remove(var);
    }
    // No disk writes from these tests.
    cmd.env("METAJIT_CACHE", "memory");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "child {name} with {vars:?} failed:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "child {name} ran no test:\n{text}"
    );
    false
}

/// The error is `Error::Config` for `var` with `value`, and its message names both and
/// contains `allowed`.
#[track_caller]
fn is_config_error(e: &Error, var: &str, value: &str, allowed: &str) {
    match e {
        Error::Config {
            var: v, value: val, ..
        } => {
            assert_eq!((*v, val.as_str()), (var, value), "{e}");
        }
        other => panic!("expected a configuration error for {var}, got {other}"),
    }
    let m = e.to_string();
    assert!(
        m.contains(var) && m.contains(value) && m.contains(allowed),
        "{m}"
    );
}

/// Records ops (no panic), then checks that every way of computing a value returns the error,
/// each time; `validate` too; then `fix` (an API setter) makes the same tensors compute.
fn bad_setting_is_an_error(var: &str, value: &str, allowed: &str, fix: impl FnOnce()) {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]);
    let w = Tensor::from_vec(vec![0.5f32, -1.0, 2.0], [3]).requires_grad_(true);
    let y = (&x * &w).exp();
    let loss = y.sum_all();
    loss.backward();
    let g = w.grad().expect("backward records the gradient");

    is_config_error(&y.to_vec::<f32>().unwrap_err(), var, value, allowed);
    is_config_error(&loss.item::<f32>().unwrap_err(), var, value, allowed);
    is_config_error(&y.realize().unwrap_err(), var, value, allowed);
    is_config_error(
        &metajit::realize_all(&[&y, &g]).unwrap_err(),
        var,
        value,
        allowed,
    );
    // Not remembered: the next realize says it again.
    is_config_error(&g.to_vec::<f32>().unwrap_err(), var, value, allowed);
    is_config_error(&config::validate().unwrap_err(), var, value, allowed);
    // Even a value computed already is not read past a bad setting.
    is_config_error(&x.to_vec::<f32>().unwrap_err(), var, value, allowed);

    fix();
    config::validate().expect("fixed through the API");
    let xs = [1.0f32, 2.0, 3.0];
    let ws = [0.5f32, -1.0, 2.0];
    let want: Vec<f32> = xs.iter().zip(ws).map(|(a, b)| (a * b).exp()).collect();
    let got = y.to_vec::<f32>().unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{got:?} vs {want:?}");
    }
    // d/dw sum(exp(x w)) = x exp(x w).
    let got = g.to_vec::<f32>().unwrap();
    assert_eq!(got.len(), 3);
    for ((a, b), x) in got.iter().zip(&want).zip(xs) {
        assert!((a - b * x).abs() <= 1e-5 * (b * x).abs(), "{got:?}");
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[test]
fn bad_mode() {
    if in_child("bad_mode", &[("METAJIT_MODE", os("fast"))]) {
        assert!(config::try_mode().is_err());
        assert_eq!(config::mode(), Mode::Compiled, "the default on a bad value");
        bad_setting_is_an_error("METAJIT_MODE", "fast", "compiled, eager", || {
            metajit::set_mode(Mode::Compiled)
        });
    }
}

#[test]
fn bad_debug() {
    if in_child("bad_debug", &[("METAJIT_DEBUG", os("9"))]) {
        assert!(config::try_debug().is_err());
        assert_eq!(config::debug(), 0, "the default on a bad value");
        bad_setting_is_an_error("METAJIT_DEBUG", "9", "0 to 5", || metajit::set_debug(0));
    }
}

#[test]
fn bad_threads() {
    if in_child("bad_threads", &[("METAJIT_THREADS", os("many"))]) {
        assert!(config::try_threads().is_err());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config::threads(), cores, "the default on a bad value");
        bad_setting_is_an_error("METAJIT_THREADS", "many", "positive integer", || {
            metajit::set_threads(1)
        });
    }
}

#[test]
fn zero_threads() {
    if in_child("zero_threads", &[("METAJIT_THREADS", os("0"))]) {
        bad_setting_is_an_error("METAJIT_THREADS", "0", "positive integer", || {
            metajit::set_threads(2)
        });
    }
}

#[test]
fn bad_device() {
    if in_child("bad_device", &[("METAJIT_DEVICE", os("tpu"))]) {
        bad_setting_is_an_error("METAJIT_DEVICE", "tpu", "cuda:N", || {
            metajit::set_device(Device::Cpu)
        });
    }
}

#[test]
fn bad_cache_mode() {
    if in_child("bad_cache_mode", &[("METAJIT_CACHE", os("sometimes"))]) {
        bad_setting_is_an_error("METAJIT_CACHE", "sometimes", "disk, memory, off", || {
            metajit::set_cache_mode(CacheMode::Memory)
        });
    }
}

#[test]
fn bad_cache_bound() {
    if in_child("bad_cache_bound", &[("METAJIT_CACHE_MAX_MB", os("lots"))]) {
        bad_setting_is_an_error(
            "METAJIT_CACHE_MAX_MB",
            "lots",
            "non-negative integer",
            || metajit::set_cache_max_mb(16),
        );
    }
}

/// A value that is not UTF-8 is reported too, not dropped as if unset.
#[test]
fn cache_mode_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"disk\xff");
    if in_child("cache_mode_not_utf8", &[("METAJIT_CACHE", bad)]) {
        let e = config::try_cache_config().unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Config {
                    var: "METAJIT_CACHE",
                    ..
                }
            ),
            "{e}"
        );
        let e = Tensor::ones([2]).exp().to_vec::<f32>().unwrap_err();
        assert!(e.to_string().contains("METAJIT_CACHE"), "{e}");
    }
}

/// Eager mode with a bad value elsewhere: an eager op could only panic with the error, so ops
/// record lazily while the value is bad (`mode()` says compiled) and the realize returns it;
/// once fixed, eager mode is back.
#[test]
fn eager_with_a_bad_debug_level() {
    let vars = [("METAJIT_MODE", os("eager")), ("METAJIT_DEBUG", os("high"))];
    if in_child("eager_with_a_bad_debug_level", &vars) {
        assert_eq!(config::try_mode().unwrap(), Mode::Eager);
        assert_eq!(config::mode(), Mode::Compiled);
        let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]);
        let y = x.exp().relu();
        assert!(!y.is_realized(), "nothing ran eagerly");
        bad_setting_is_an_error("METAJIT_DEBUG", "high", "0 to 5", || metajit::set_debug(0));
        assert_eq!(config::mode(), Mode::Eager);
        let z = x.exp();
        assert!(z.is_realized(), "eager again once the setting is fixed");
    }
}

#[test]
fn eager_with_a_bad_cache_mode() {
    let vars = [
        ("METAJIT_MODE", os("eager")),
        ("METAJIT_CACHE", os("tiered")),
    ];
    if in_child("eager_with_a_bad_cache_mode", &vars) {
        assert_eq!(config::mode(), Mode::Compiled);
        bad_setting_is_an_error("METAJIT_CACHE", "tiered", "disk, memory, off", || {
            metajit::set_cache_mode(CacheMode::Off)
        });
        assert_eq!(config::mode(), Mode::Eager);
    }
}
