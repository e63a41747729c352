//! Run-time settings: the `METAJIT_*` environment variables and the same settings from the API.
//!
//! Each variable is read once, at first use; an API setter overrides it for the rest of the
//! process. A bad value is an [`Error::Config`] naming the variable, the value and the allowed
//! values — never silently ignored, and never a panic (DESIGN §8: the environment gives
//! `Result`s):
//!
//! - the `try_` readers ([`try_mode`], [`try_device`], [`try_debug`], [`try_threads`],
//!   [`try_cache_config`]) return the error, and [`validate`] checks every variable at once (call
//!   it at start-up to fail early);
//! - the executor reads the settings through the `try_` forms, so a bad value comes back as the
//!   `Err` of [`Tensor::realize`](crate::Tensor::realize), [`to_vec`](crate::Tensor::to_vec),
//!   [`item`](crate::Tensor::item) and [`realize_all`](crate::realize_all) — every time, since a
//!   bad value is not remembered;
//! - the infallible readers ([`mode`], [`debug`], [`threads`]), which op recording and autograd
//!   use where no `Result` can be returned, give the variable's default on a bad value (compiled,
//!   0, the number of cores), so recording goes on lazily and the next realize reports the error.
//!   Eager mode needs every setting valid: while one is bad, [`mode`] says compiled, so no op
//!   runs where its error could only be a panic.
//!
//! | variable | values | default |
//! |---|---|---|
//! | `METAJIT_MODE` | `compiled`, `eager` | `compiled` |
//! | `METAJIT_DEVICE` | `auto`, `cpu`, `cuda`, `cuda:N`, `opencl`, `opencl:N`, `reference` | `auto`: CUDA device 0 when present and its self-check passes, else `cpu` ([`Device::Auto`]) |
//! | `METAJIT_DEBUG` | `0`–`5` | `0` |
//! | `METAJIT_THREADS` | a positive integer | the number of cores |
//! | `METAJIT_CACHE` | `disk`, `memory`, `off` | `disk` |
//! | `METAJIT_CACHE_DIR` | a directory | `$XDG_CACHE_HOME/metajit`, else `$HOME/.cache/metajit` |
//! | `METAJIT_CACHE_MAX_MB` | a non-negative integer | `1024` |
//!
//! The cache variables are parsed by `metajit_cache::CacheConfig` (the CLI reads them too);
//! [`set_cache_mode`], [`set_cache_dir`] and [`set_cache_max_mb`] override them.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

pub use metajit_cache::{CacheConfig, CacheMode};

use crate::error::{Error, Result};

/// How operations execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Lazy: record ops, and on realize simplify, fuse and run the pending graph (default).
    Compiled,
    /// Every op runs at once, on its own, with materialised results (PyTorch-eager-like).
    Eager,
}

/// Where tensors live and are computed: the `METAJIT_DEVICE` setting, and a tensor's
/// [`Tensor::device`](crate::Tensor::device) (always a concrete one there: `Cpu`, `Cuda(n)` or
/// `OpenCl(n)`; [`Device::placement`] maps a setting to one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The best available backend, chosen once per process, the first time a tensor is placed
    /// under it ([`Device::placement`]): CUDA device 0 when the CUDA driver, NVRTC and cuBLAS
    /// are found and a small self-check on it (one kernel of each way a GPU runs one:
    /// element-wise, row sums, a matmul, a split full sum and a thread-per-column maximum, over
    /// fixed random values) agrees with the reference interpreter within
    /// the GPU precision contract; else the CPU. Without the CUDA libraries no CUDA context is
    /// created (the choice costs a few library look-ups). `METAJIT_DEBUG=1` prints the choice
    /// and why; a self-check that computes a wrong value is always printed (a metajit bug).
    Auto,
    /// The native CPU backend.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
    /// OpenCL device `N` (counted over every platform, in the order the OpenCL loader lists them).
    OpenCl(usize),
    /// The reference interpreter (slow; the oracle, for debugging). Its tensors are CPU tensors.
    Reference,
}

// `Device::placement` (which resolves `Auto`, so needs the executor) is in `crate::device`:
// this module stays the settings alone.

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Auto => write!(f, "auto"),
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::OpenCl(n) => write!(f, "opencl:{n}"),
            Device::Reference => write!(f, "reference"),
        }
    }
}

const UNSET: u8 = u8::MAX;
static MODE: AtomicU8 = AtomicU8::new(UNSET);
static DEBUG: AtomicU8 = AtomicU8::new(UNSET);
/// [`encode_device`]'s code of the device, or [`DEVICE_UNSET`].
static DEVICE: AtomicU64 = AtomicU64::new(DEVICE_UNSET);
const DEVICE_UNSET: u64 = u64::MAX;
static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Parses `METAJIT_THREADS`'s value.
pub fn parse_threads(v: &str) -> Result<usize> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::config("METAJIT_THREADS", v, "a positive integer")),
    }
}

/// The number of threads kernels may use: `set_threads`'s value, else `METAJIT_THREADS`, else
/// the number of cores.
pub fn try_threads() -> Result<usize> {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = env_or("METAJIT_THREADS", parse_threads, cores())?;
            THREADS.store(n, Ordering::Relaxed);
            Ok(n)
        }
        n => Ok(n),
    }
}

/// The number of threads. On a bad `METAJIT_THREADS` this is the number of cores (nothing is
/// remembered), and the next realize returns the [`Error::Config`] ([`try_threads`] gives it
/// here).
pub fn threads() -> usize {
    try_threads().unwrap_or_else(|_| cores())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets the number of threads kernels may use (overrides `METAJIT_THREADS`).
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// Parses `METAJIT_MODE`'s value.
pub fn parse_mode(v: &str) -> Result<Mode> {
    match v.trim() {
        "compiled" => Ok(Mode::Compiled),
        "eager" => Ok(Mode::Eager),
        _ => Err(Error::config("METAJIT_MODE", v, "compiled, eager")),
    }
}

/// Parses `METAJIT_DEBUG`'s value.
pub fn parse_debug(v: &str) -> Result<u8> {
    match v.trim().parse::<u8>() {
        Ok(n) if n <= 5 => Ok(n),
        _ => Err(Error::config("METAJIT_DEBUG", v, "an integer 0 to 5")),
    }
}

/// Parses `METAJIT_DEVICE`'s value.
pub fn parse_device(v: &str) -> Result<Device> {
    let v2 = v.trim();
    match v2 {
        "auto" => Ok(Device::Auto),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        "opencl" => Ok(Device::OpenCl(0)),
        "reference" => Ok(Device::Reference),
        _ => None
            .or_else(|| v2.strip_prefix("cuda:")?.parse().ok().map(Device::Cuda))
            .or_else(|| v2.strip_prefix("opencl:")?.parse().ok().map(Device::OpenCl))
            .ok_or_else(|| {
                Error::config(
                    "METAJIT_DEVICE",
                    v,
                    "auto, cpu, cuda, cuda:N, opencl, opencl:N, reference",
                )
            }),
    }
}

fn env_or<T>(var: &str, parse: fn(&str) -> Result<T>, default: T) -> Result<T> {
    match std::env::var(var) {
        Ok(v) => parse(&v),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(Error::config(var, &v.to_string_lossy(), "valid UTF-8 text"))
        }
    }
}

/// The execution mode: `set_mode`'s value, else `METAJIT_MODE`, else compiled.
pub fn try_mode() -> Result<Mode> {
    match MODE.load(Ordering::Relaxed) {
        0 => Ok(Mode::Compiled),
        1 => Ok(Mode::Eager),
        _ => {
            let m = env_or("METAJIT_MODE", parse_mode, Mode::Compiled)?;
            set_mode(m);
            Ok(m)
        }
    }
}

/// The execution mode. On a bad `METAJIT_MODE` this is [`Mode::Compiled`], the default
/// (nothing is remembered): ops record lazily and the next realize returns the
/// [`Error::Config`] ([`try_mode`] gives it here). Eager mode with a bad value of another
/// setting is [`Mode::Compiled`] too, for as long as the value is bad: an eager op could only
/// panic with the error, while a lazy one leaves it to the realize the caller checks
/// ([`validate`] gives it here).
pub fn mode() -> Mode {
    match try_mode() {
        Ok(Mode::Eager) if try_executor_settings().is_ok() => Mode::Eager,
        _ => Mode::Compiled,
    }
}

/// Sets the execution mode for the whole process (overrides `METAJIT_MODE`).
pub fn set_mode(m: Mode) {
    MODE.store(
        match m {
            Mode::Compiled => 0,
            Mode::Eager => 1,
        },
        Ordering::Relaxed,
    );
}

/// The debug level: `set_debug`'s value, else `METAJIT_DEBUG`, else 0.
pub fn try_debug() -> Result<u8> {
    match DEBUG.load(Ordering::Relaxed) {
        UNSET => {
            let d = env_or("METAJIT_DEBUG", parse_debug, 0)?;
            DEBUG.store(d, Ordering::Relaxed);
            Ok(d)
        }
        d => Ok(d),
    }
}

/// The debug level. On a bad `METAJIT_DEBUG` this is 0, the default (nothing is remembered),
/// and the next realize returns the [`Error::Config`] ([`try_debug`] gives it here).
pub fn debug() -> u8 {
    try_debug().unwrap_or(0)
}

/// Sets the debug level (0–5) for the whole process (overrides `METAJIT_DEBUG`).
pub fn set_debug(level: u8) {
    DEBUG.store(level.min(5), Ordering::Relaxed);
}

/// The device once known, encoded for [`DEVICE`]: every realize and every eager op reads it, so
/// it is one atomic load, not a lock.
fn encode_device(d: Device) -> u64 {
    match d {
        Device::Auto => 0,
        Device::Cpu => 1,
        Device::Reference => 2,
        // Even codes from 4 are CUDA devices, odd ones from 5 OpenCL devices. (An index past
        // 2^63 - 3 cannot name a device; it is kept out of the unset code.)
        Device::Cuda(n) => (n as u64).min((DEVICE_UNSET - 6) / 2) * 2 + 4,
        Device::OpenCl(n) => (n as u64).min((DEVICE_UNSET - 6) / 2) * 2 + 5,
    }
}

fn decode_device(v: u64) -> Device {
    match v {
        0 => Device::Auto,
        1 => Device::Cpu,
        2 | 3 => Device::Reference,
        n if n % 2 == 0 => Device::Cuda(((n - 4) / 2) as usize),
        n => Device::OpenCl(((n - 5) / 2) as usize),
    }
}

/// The device: `set_device`'s value, else `METAJIT_DEVICE`, else auto.
pub fn try_device() -> Result<Device> {
    match DEVICE.load(Ordering::Relaxed) {
        DEVICE_UNSET => {
            let d = env_or("METAJIT_DEVICE", parse_device, Device::Auto)?;
            // A setter that ran meanwhile wins over the variable.
            let _ = DEVICE.compare_exchange(
                DEVICE_UNSET,
                encode_device(d),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            Ok(decode_device(DEVICE.load(Ordering::Relaxed)))
        }
        v => Ok(decode_device(v)),
    }
}

/// Sets the device for the whole process (overrides `METAJIT_DEVICE`).
pub fn set_device(d: Device) {
    DEVICE.store(encode_device(d), Ordering::Relaxed);
}

/// Reads every setting — `METAJIT_MODE`, `METAJIT_DEVICE`, `METAJIT_DEBUG`,
/// `METAJIT_THREADS` and the cache variables — and returns the first bad one as an
/// [`Error::Config`]. Every realize checks the same; call this to fail at start-up instead.
///
/// ```
/// metajit::config::validate().expect("bad METAJIT_* setting");
/// ```
pub fn validate() -> Result<()> {
    try_executor_settings()
}

/// What [`validate`] checks, for every realize: each setting is remembered once valid, so this
/// is a few atomic loads and one uncontended lock.
pub(crate) fn try_executor_settings() -> Result<()> {
    try_mode()?;
    try_device()?;
    try_debug()?;
    try_threads()?;
    try_cache_settings()
}

/// The [`cache_generation`] whose cache settings were last found valid (`u64::MAX`: none).
static CACHE_CHECKED: AtomicU64 = AtomicU64::new(u64::MAX);

/// The error of a bad cache setting; once the settings are valid they are not read again
/// until a setter changes them (a new [`cache_generation`]), as the executor opens its kernel
/// cache once per generation.
fn try_cache_settings() -> Result<()> {
    let generation = cache_generation();
    if CACHE_CHECKED.load(Ordering::Relaxed) != generation {
        try_cache_config()?;
        CACHE_CHECKED.store(generation, Ordering::Relaxed);
    }
    Ok(())
}

/// API overrides of the cache variables.
#[derive(Default)]
struct CacheOverrides {
    mode: Option<CacheMode>,
    dir: Option<PathBuf>,
    max_bytes: Option<u64>,
}

static CACHE_OVERRIDES: Mutex<CacheOverrides> = Mutex::new(CacheOverrides {
    mode: None,
    dir: None,
    max_bytes: None,
});
/// Bumped by every cache setter, so the executor knows to reopen its cache.
static CACHE_GENERATION: AtomicU64 = AtomicU64::new(0);

fn cache_overrides() -> std::sync::MutexGuard<'static, CacheOverrides> {
    CACHE_OVERRIDES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The kernel cache's settings: the `METAJIT_CACHE*` variables, overridden by
/// [`set_cache_mode`], [`set_cache_dir`] and [`set_cache_max_mb`]. A bad value of a variable
/// that is not overridden is an [`Error::Config`].
pub fn try_cache_config() -> Result<CacheConfig> {
    let o = cache_overrides();
    let overridden = |var: &str| match var {
        "METAJIT_CACHE" => o.mode.is_some(),
        "METAJIT_CACHE_DIR" => o.dir.is_some(),
        "METAJIT_CACHE_MAX_MB" => o.max_bytes.is_some(),
        _ => false,
    };
    // `var_os`: a directory need not be UTF-8, and a non-UTF-8 mode or bound must be reported,
    // not dropped as if unset.
    let mut c = CacheConfig::from_os_vars(|var| {
        if overridden(var) {
            None
        } else {
            std::env::var_os(var)
        }
    })
    .map_err(|e| Error::Config {
        var: e.variable,
        value: e.value,
        allowed: e.allowed,
    })?;
    if let Some(m) = o.mode {
        c.mode = m;
    }
    if let Some(d) = &o.dir {
        c.dir = d.clone();
    }
    if let Some(b) = o.max_bytes {
        c.max_bytes = b;
    }
    Ok(c)
}

/// How many times the cache settings were changed through the API.
pub(crate) fn cache_generation() -> u64 {
    CACHE_GENERATION.load(Ordering::Relaxed)
}

/// Sets which tiers the kernel cache uses (overrides `METAJIT_CACHE`); takes effect at the
/// next kernel lookup.
pub fn set_cache_mode(mode: CacheMode) {
    cache_overrides().mode = Some(mode);
    CACHE_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Sets the kernel cache's directory (overrides `METAJIT_CACHE_DIR`).
pub fn set_cache_dir(dir: impl Into<PathBuf>) {
    cache_overrides().dir = Some(dir.into());
    CACHE_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Sets the disk tier's size bound in megabytes (overrides `METAJIT_CACHE_MAX_MB`).
pub fn set_cache_max_mb(mb: u64) {
    cache_overrides().max_bytes = Some(mb.saturating_mul(1 << 20));
    CACHE_GENERATION.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_variable_and_the_choices() {
        let e = parse_mode("fast").unwrap_err().to_string();
        assert!(
            e.contains("METAJIT_MODE") && e.contains("compiled, eager"),
            "{e}"
        );
        let e = parse_debug("9").unwrap_err().to_string();
        assert!(e.contains("METAJIT_DEBUG") && e.contains("0 to 5"), "{e}");
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("METAJIT_DEVICE") && e.contains("cuda:N"), "{e}");
        assert_eq!(parse_device("cuda:1").unwrap(), Device::Cuda(1));
        assert_eq!(parse_device("opencl").unwrap(), Device::OpenCl(0));
        assert_eq!(parse_device(" opencl:2 ").unwrap(), Device::OpenCl(2));
        assert!(parse_device("opencl:x").is_err() && parse_device("cuda:").is_err());
        let e = parse_threads("0").unwrap_err().to_string();
        assert!(
            e.contains("METAJIT_THREADS") && e.contains("positive integer"),
            "{e}"
        );
        assert_eq!(parse_threads("3").unwrap(), 3);
        assert_eq!(parse_mode(" eager ").unwrap(), Mode::Eager);
    }

    #[test]
    fn every_device_survives_its_atomic_code() {
        for d in [
            Device::Auto,
            Device::Cpu,
            Device::Reference,
            Device::Cuda(0),
            Device::Cuda(7),
            Device::OpenCl(0),
            Device::OpenCl(3),
        ] {
            assert_eq!(decode_device(encode_device(d)), d);
        }
        assert_ne!(encode_device(Device::Cuda(usize::MAX)), DEVICE_UNSET);
        assert_ne!(encode_device(Device::OpenCl(usize::MAX)), DEVICE_UNSET);
    }
}

thread_local! {
    static ONE_OP_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static ONE_OP_GROUP: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Numbers the high-level ops recorded as one unit (0 means none).
static NEXT_GROUP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Whether ops recorded now run at once: eager mode, outside a high-level op being lowered as
/// one unit (see [`as_one_op`]).
pub(crate) fn eager_now() -> bool {
    mode() == Mode::Eager && ONE_OP_DEPTH.with(|d| d.get()) == 0
}

/// The unit (see [`as_one_op`]) that nodes recorded now belong to, or 0 outside any.
pub(crate) fn current_group() -> u64 {
    if ONE_OP_DEPTH.with(|d| d.get()) == 0 {
        0
    } else {
        ONE_OP_GROUP.with(|g| g.get())
    }
}

/// Records the meta-ops of one high-level op (matmul, ...) as one unit: in eager mode they run
/// together when `f` returns, as PyTorch eager runs the op as one call — instead of each
/// meta-op alone (a matmul's broadcast product alone would materialise n³ elements). The
/// nodes remember their unit, so that eager mode runs the op's backward as one unit too.
pub(crate) fn as_one_op<T>(f: impl FnOnce() -> T) -> T {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            ONE_OP_DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    if ONE_OP_DEPTH.with(|d| d.get()) == 0 {
        let id = NEXT_GROUP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ONE_OP_GROUP.with(|g| g.set(id));
    }
    ONE_OP_DEPTH.with(|d| d.set(d.get() + 1));
    let _g = Guard;
    f()
}
