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
    crate::config::try_device()
        .unwrap_or(Device::Auto)
        .placement()
}
