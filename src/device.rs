//! Where a tensor's elements live.
//!
//! Every tensor has a [`Device`]: the CPU, a CUDA device or an OpenCL device. An op's inputs
//! must be on one device (misuse otherwise, reported at the op's call), and its result is on
//! that device; [`Tensor::to`](crate::Tensor::to) copies a value to another. A node built from
//! no data — a constant, `arange`, random numbers, and whatever is computed from those alone —
//! is *floating*: it runs on the device of the graph that reads it, or on the default device
//! (`METAJIT_DEVICE`, [`Device::placement`]) when it is realized by itself. So `&x + 1.0`
//! stays on `x`'s device whatever the default is.
//!
//! A realized node holds a [`Storage`]. Host data given for a device tensor (`from_vec` with
//! `METAJIT_DEVICE=opencl`) waits in host memory until a graph first reads it on its device,
//! which keeps creation infallible; the executor copies it over once and keeps the copy.
//!
//! `auto` is resolved here, once per process ([`Device::placement`]): CUDA device 0 when the
//! CUDA libraries are present and a self-check on the device agrees with the reference
//! interpreter (`exec::self_check`), else the CPU ([`Device::Auto`]). So a tensor's device is
//! always a concrete one.
//!
//! Work on a device is asynchronous: a realize returns once its launches are enqueued, and the
//! executor waits for the device every 64 realizes or 256 MiB of their allocations, before
//! every read of a device buffer, and at [`crate::synchronize`].

use std::any::Any;
use std::sync::Arc;

use metajit_codegen::buffer::Buffer;
use metajit_metaops::HostData;

pub use crate::config::Device;
use crate::error::Result;

/// The elements of a realized node.
#[derive(Clone)]
pub(crate) enum Storage {
    /// In host memory, belonging to `device`: a CPU tensor's elements, or a device tensor's
    /// that no graph has read on its device yet.
    Host {
        /// The elements.
        buf: Arc<Buffer>,
        /// The tensor's device.
        device: Device,
    },
    /// In a device's memory: a buffer of the device's backend (`Backend::Buffer`), its type
    /// erased so that one executor holds the engines of every device.
    Device {
        /// The backend's buffer.
        buf: Arc<dyn Any + Send + Sync>,
        /// Its device.
        device: Device,
    },
}

impl Storage {
    /// A CPU tensor's elements.
    pub(crate) fn cpu(buf: Arc<Buffer>) -> Storage {
        Storage::Host {
            buf,
            device: Device::Cpu,
        }
    }

    /// The device the elements belong to.
    pub(crate) fn device(&self) -> Device {
        match self {
            Storage::Host { device, .. } | Storage::Device { device, .. } => *device,
        }
    }

    /// The elements' host buffer, when they are in host memory.
    pub(crate) fn host_buffer(&self) -> Option<&Arc<Buffer>> {
        match self {
            Storage::Host { buf, .. } => Some(buf),
            Storage::Device { .. } => None,
        }
    }

    /// A host copy of the elements.
    pub(crate) fn to_host(&self) -> Result<HostData> {
        match self {
            Storage::Host { buf, .. } => Ok(buf.to_host()),
            Storage::Device { buf, device } => {
                crate::exec::device_engine(*device)?.download(buf.as_ref())
            }
        }
    }
}

/// The device new tensors are created on: the `METAJIT_DEVICE` setting's
/// [`placement`](Device::placement) (a bad setting reads as the CPU here; the next realize
/// reports it).
pub(crate) fn default_placement() -> Device {
    match crate::config::try_device() {
        Ok(d) => d.placement(),
        Err(_) => Device::Cpu,
    }
}

impl Device {
    /// Where a tensor created under this setting lives: `Reference` is the CPU, and `Auto` the
    /// device it resolved to in this process (see [`Device::Auto`]: CUDA device 0 when present
    /// and its self-check passes, else the CPU). The first call with `Auto` makes that choice,
    /// which may open CUDA and run the self-check; later calls read it.
    ///
    /// ```
    /// use metajit::Device;
    /// assert_eq!(Device::Reference.placement(), Device::Cpu);
    /// assert!(matches!(Device::Auto.placement(), Device::Cpu | Device::Cuda(0)));
    /// ```
    pub fn placement(self) -> Device {
        match self {
            Device::Auto => resolve_auto(),
            Device::Reference | Device::Cpu => Device::Cpu,
            d => d,
        }
    }
}

/// What `auto` resolved to in this process.
static AUTO: std::sync::OnceLock<Device> = std::sync::OnceLock::new();

/// The device `auto` means in this process, chosen on first use ([`choose_auto`] with the real
/// probe and self-check) and printed as [`Device::Auto`] says.
fn resolve_auto() -> Device {
    *AUTO.get_or_init(|| {
        let t0 = std::time::Instant::now();
        let choice = choose_auto(metajit_codegen::gpu::cuda::libraries_present, || {
            // A panic in a driver binding must not escape into whichever tensor op first
            // placed a tensor: it is a failed self-check.
            std::panic::catch_unwind(|| crate::exec::self_check(Device::Cuda(0)))
                .unwrap_or_else(|_| SelfCheck::Failed("the self-check panicked".into()))
        });
        let debug = crate::config::debug();
        if choice.always_say || debug >= 1 {
            eprintln!(
                "metajit: METAJIT_DEVICE=auto is {} ({}; decided in {:?})",
                choice.device,
                choice.why,
                t0.elapsed()
            );
        }
        choice.device
    })
}

/// The outcome of the `auto` self-check on a device.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SelfCheck {
    /// Every value agreed with the reference interpreter within the precision contract.
    Passed,
    /// The device could not run it (no device, a compile, launch or copy error): the reason.
    Failed(String),
    /// The device ran it and computed a wrong value (a metajit or driver bug): what differed.
    Wrong(String),
}

/// [`choose_auto`]'s decision.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AutoChoice {
    /// The device `auto` means.
    pub device: Device,
    /// Why, in a few words.
    pub why: String,
    /// Whether the reason must be printed whatever `METAJIT_DEBUG` says (a wrong value).
    pub always_say: bool,
}

/// Decides what `auto` means, from `probe` (are the CUDA driver, NVRTC and cuBLAS present?)
/// and `self_check` (the self-check on CUDA device 0, which opens it): CUDA device 0 only when
/// both pass. `self_check` is not called when `probe` fails, so a machine without a driver
/// creates no CUDA context.
pub(crate) fn choose_auto(
    probe: impl FnOnce() -> std::result::Result<(), String>,
    self_check: impl FnOnce() -> SelfCheck,
) -> AutoChoice {
    let cpu = |why: String, always_say: bool| AutoChoice {
        device: Device::Cpu,
        why,
        always_say,
    };
    if let Err(why) = probe() {
        return cpu(format!("CUDA not used: {why}"), false);
    }
    match self_check() {
        SelfCheck::Passed => AutoChoice {
            device: Device::Cuda(0),
            why: "CUDA device 0 passed its self-check".into(),
            always_say: false,
        },
        SelfCheck::Failed(why) => cpu(format!("CUDA device 0 not used: {why}"), false),
        SelfCheck::Wrong(what) => cpu(
            format!(
                "CUDA device 0 computed a wrong value in its self-check, so it is not used; \
                 this is a metajit bug, please report it: {what}"
            ),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn auto_is_cuda_only_when_the_libraries_are_present_and_the_self_check_passes() {
        let ok = || Ok(());
        let c = choose_auto(ok, || SelfCheck::Passed);
        assert_eq!(c.device, Device::Cuda(0));
        assert!(!c.always_say);

        // No driver: the self-check (which would create a context) is never run.
        let ran = Cell::new(false);
        let c = choose_auto(
            || Err("no CUDA driver (libcuda not found)".into()),
            || {
                ran.set(true);
                SelfCheck::Passed
            },
        );
        assert_eq!(c.device, Device::Cpu);
        assert!(!ran.get(), "the self-check ran without the CUDA libraries");
        assert!(c.why.contains("libcuda") && !c.always_say, "{}", c.why);

        let c = choose_auto(ok, || SelfCheck::Failed("no CUDA device".into()));
        assert_eq!(c.device, Device::Cpu);
        assert!(
            c.why.contains("no CUDA device") && !c.always_say,
            "{}",
            c.why
        );

        // A wrong value is a bug the user must hear about, whatever the debug level.
        let c = choose_auto(ok, || {
            SelfCheck::Wrong("output 1 [3]: got 0, expected 2".into())
        });
        assert_eq!(c.device, Device::Cpu);
        assert!(
            c.always_say && c.why.contains("got 0, expected 2"),
            "{}",
            c.why
        );
    }
}
