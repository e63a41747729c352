//! Helpers shared by the root integration tests (each test binary includes this module with
//! `mod common;`; not every binary uses every helper).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use proptest::test_runner::Config as ProptestConfig;

/// `got` is within `abs + rel * |want|` of `want`; NaN matches only NaN, infinities only
/// themselves.
#[allow(dead_code)]
pub fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() || got.is_nan() {
        return got == want;
    }
    (got - want).abs() <= abs + rel * want.abs()
}

/// The property-test configuration: 48 cases, no failure persistence.
#[allow(dead_code)]
pub fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(48)
    }
}

/// The NumPy/PyTorch rule, written out: align the shapes at the right (missing leading axes
/// count as extent 1); at each axis the extents must be equal or one of them 1, and the output
/// takes the other one. `None` when incompatible.
#[allow(dead_code)]
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let extent = |s: &[usize], k: usize| {
        if k + s.len() >= r {
            s[k + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|k| {
            let (ea, eb) = (extent(a, k), extent(b, k));
            if ea == eb || eb == 1 {
                Some(ea)
            } else if ea == 1 {
                Some(eb)
            } else {
                None
            }
        })
        .collect()
}

/// The row-major multi-index of the offset `lin` in `shape`.
#[allow(dead_code)]
pub fn unravel(mut lin: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        idx[k] = lin % shape[k];
        lin /= shape[k];
    }
    idx
}

thread_local! {
    /// Whether this thread's panics are being caught quietly, and the last one's location.
    static LISTENING: Cell<bool> = const { Cell::new(false) };
    static LOCATION: RefCell<Option<(String, u32)>> = const { RefCell::new(None) };
}

/// A panic caught by [`catch_quietly`].
#[allow(dead_code)]
pub struct Caught {
    /// The file and line the panic reports.
    pub location: Option<(String, u32)>,
    pub payload: Box<dyn Any + Send>,
}

impl Caught {
    /// The payload as a string, when it is one.
    #[allow(dead_code)]
    pub fn message(&self) -> Option<String> {
        if let Some(s) = self.payload.downcast_ref::<String>() {
            Some(s.clone())
        } else {
            self.payload.downcast_ref::<&str>().map(|s| s.to_string())
        }
    }
}

/// Runs `f` and returns its panic (`None` when it did not panic). The caught panic is not
/// printed; panics of other threads (other tests) go to the hook that was installed before.
#[allow(dead_code)]
pub fn catch_quietly(f: impl FnOnce()) -> Option<Caught> {
    // One hook for the whole binary, installed once; it records only on listening threads.
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if LISTENING.with(Cell::get) {
                let loc = info.location().map(|l| (l.file().to_string(), l.line()));
                LOCATION.with(|s| *s.borrow_mut() = loc);
            } else {
                previous(info);
            }
        }));
    });
    LISTENING.with(|l| l.set(true));
    LOCATION.with(|s| *s.borrow_mut() = None);
    let r = catch_unwind(AssertUnwindSafe(f));
    LISTENING.with(|l| l.set(false));
    let payload = r.err()?;
    Some(Caught {
        location: LOCATION.with(|s| s.borrow_mut().take()),
        payload,
    })
}

/// Runs `f`, which is expected to panic, and returns the panic message (`None` when it did not
/// panic). The expected panic is not printed; panics of other tests still are.
#[allow(dead_code)]
pub fn panic_message(f: impl FnOnce()) -> Option<String> {
    let caught = catch_quietly(f)?;
    Some(
        caught
            .message()
            .unwrap_or_else(|| "<non-string panic payload>".to_string()),
    )
}

/// The executor's counters now: kernels run, kernels compiled, plans scheduled.
#[allow(dead_code)]
pub fn counters() -> (u64, u64, u64) {
    let s = metajit::stats();
    (s.kernel_runs, s.kernels_compiled, s.plan_misses)
}

/// The devices besides the CPU that open on this machine (OpenCL device 0, CUDA device 0), each
/// checked by a round trip of one value. A device that does not open is reported once per test
/// binary as `skipped: no <device> (<why>)`, and its tests pass without running.
#[allow(dead_code)]
pub fn gpu_devices() -> Vec<metajit::Device> {
    use metajit::{Device, Tensor};
    static FOUND: std::sync::OnceLock<Vec<Device>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            [Device::OpenCl(0), Device::Cuda(0)]
                .into_iter()
                .filter(|&d| {
                    let probe = Tensor::from_vec(vec![1.5f32], [1])
                        .to(d)
                        .and_then(|t| (&t * 2.0).to_vec::<f32>());
                    match probe {
                        Ok(v) if v == [3.0] => true,
                        Ok(v) => panic!("{d}: 1.5 * 2 came back as {v:?}"),
                        Err(e) => {
                            // CI sets METAJIT_REQUIRE_DEVICES=opencl where pocl is installed,
                            // so these tests cannot pass there without running.
                            let required =
                                std::env::var("METAJIT_REQUIRE_DEVICES").unwrap_or_default();
                            let name = d.to_string();
                            let kind = name.split(':').next().unwrap_or_default();
                            if required.split(',').any(|r| r.trim() == kind) {
                                panic!("{d} is required (METAJIT_REQUIRE_DEVICES) but did not open: {e}");
                            }
                            eprintln!("skipped: no {d} ({e})");
                            false
                        }
                    }
                })
                .collect()
        })
        .clone()
}
