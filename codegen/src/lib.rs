//! metajit's code generators and runtimes, behind one [`Backend`] trait.
//!
//! A backend takes a verified meta-op graph and input buffers and returns output buffers. Each
//! backend owns its buffers (host memory, device memory) and moves data in and out of them.
//! Backends so far:
//!
//! | backend | module | status |
//! |---|---|---|
//! | reference interpreter | [`mod@reference`] | complete: the oracle, `METAJIT_DEVICE=reference` |
//! | Cranelift CPU | `cpu` | next issue |
//! | CUDA (NVRTC) | `cuda` | later issue |
#![deny(missing_docs)]

pub mod reference;

use metajit_metaops::{DType, Graph, HostData};

/// A failure of a backend: a compile error (a metajit bug, with the IR attached), a device
/// error, or a graph it refused.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The reference interpreter refused the graph.
    #[error(transparent)]
    Interp(#[from] metajit_metaops::interp::InterpError),
    /// The device failed.
    #[error("{backend}: {message}")]
    Device {
        /// The backend's name.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// A place where graphs run: it owns buffers and executes graphs over them.
pub trait Backend: Send + Sync {
    /// A buffer of elements living where this backend computes.
    type Buffer: Send + Sync;

    /// A short name (`reference`, `cpu`, `cuda:0`).
    fn name(&self) -> &'static str;

    /// Copies host data into a new buffer.
    fn upload(&self, data: &HostData) -> Result<Self::Buffer, BackendError>;

    /// Copies a buffer's elements back to the host.
    fn download(&self, buf: &Self::Buffer) -> Result<HostData, BackendError>;

    /// The dtype and element count of a buffer.
    fn describe(&self, buf: &Self::Buffer) -> (DType, usize);

    /// Runs a verified graph: one buffer per input slot in, one buffer per output out.
    fn run(&self, g: &Graph, inputs: &[&Self::Buffer]) -> Result<Vec<Self::Buffer>, BackendError>;
}
