//! metajit's code generators and runtimes, behind one [`Backend`] trait.
//!
//! A backend compiles kernels of the kernel IR (`metajit_metaops::kernel`) and launches them on
//! buffers. Backends so far:
//!
//! | backend | module | status |
//! |---|---|---|
//! | reference interpreter | [`mod@reference`] | whole graphs on the meta-op interpreter: the oracle, `METAJIT_DEVICE=reference` |
//! | Cranelift CPU | [`cpu`] | native code for every kernel; GEMM for contractions |
//! | OpenCL | [`gpu::opencl`] | the OpenCL dialect of the GPU renderer, built by the device's OpenCL compiler (pocl in CI); a generated tiled GEMM for contractions |
//! | CUDA (NVRTC, cuBLAS) | [`gpu::cuda`] | the CUDA dialect compiled by NVRTC, launched on one stream; cuBLAS for contractions; not yet run on a GPU |
#![deny(missing_docs)]

pub mod buffer;
pub mod check;
pub mod cpu;
pub mod gpu;
pub mod reference;

use metajit_metaops::contraction::GemmLayout;
use metajit_metaops::kernel::Kernel;
use metajit_metaops::{DType, HostData, Scalar};

/// A failure of a backend: a compile error (a metajit bug, with the IR attached), a device
/// error, or a graph it refused.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The reference interpreter refused the graph.
    #[error(transparent)]
    Interp(#[from] metajit_metaops::interp::InterpError),
    /// A kernel failed to compile: a bug in metajit; the kernel IR is attached.
    #[error("{backend}: failed to compile a kernel: {message}\n{kernel}")]
    Compile {
        /// The backend's name.
        backend: &'static str,
        /// The compiler's message.
        message: String,
        /// The kernel IR text.
        kernel: String,
    },
    /// A buffer argument has the wrong number of elements for what the kernel or GEMM indexes.
    #[error(
        "{backend}: {op}: buffer {param} holds {actual} elements, but {expected} are indexed ({why})"
    )]
    BufferLength {
        /// The backend's name.
        backend: &'static str,
        /// The launch: the kernel's signature line, or the GEMM's shape.
        op: String,
        /// The parameter (`b1`, `lhs`).
        param: String,
        /// The elements the kernel indexes for the given sizes.
        expected: usize,
        /// The elements the buffer holds.
        actual: usize,
        /// Where `expected` comes from (extents and sizes, or strides).
        why: String,
    },
    /// Arguments of a launch that do not fit the kernel or GEMM: buffer count or dtype, sizes,
    /// aliasing.
    #[error("{backend}: {op}: {message}")]
    Arguments {
        /// The backend's name.
        backend: &'static str,
        /// The launch: the kernel's signature line, or the GEMM's shape.
        op: String,
        /// What does not fit.
        message: String,
    },
    /// The device failed.
    #[error("{backend}: {message}")]
    Device {
        /// The backend's name.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// A buffer in a backend's memory: host memory for the CPU backend, device memory for a GPU.
pub trait DeviceBuffer: Send + Sync + 'static {
    /// The element type.
    fn dtype(&self) -> DType;
    /// The number of elements.
    fn numel(&self) -> usize;
}

impl DeviceBuffer for buffer::Buffer {
    fn dtype(&self) -> DType {
        buffer::Buffer::dtype(self)
    }
    fn numel(&self) -> usize {
        buffer::Buffer::numel(self)
    }
}

/// A place where kernels run: it owns buffers in its memory, compiles kernels of the kernel IR
/// and launches them on its buffers. (The executor in the `metajit` crate schedules graphs into
/// kernels, caches plans and compiled kernels, and allocates buffers through the backend.)
///
/// Work is ordered as a stream: every call acts after the calls made before it (a GPU
/// backend enqueues on one in-order queue; the CPU backend returns when the work is done), so a
/// buffer dropped after a launch that reads it may be reused by any later call, and
/// [`Backend::download`] returns the values every earlier launch wrote.
pub trait Backend: Send + Sync {
    /// A compiled kernel, ready to launch.
    type Compiled: Send + Sync;

    /// A buffer in this backend's memory. Every buffer holds at least one element's bytes
    /// (the kernel IR's masked reads may read element 0 of an empty buffer).
    type Buffer: DeviceBuffer;

    /// A short name (`cpu`, `cuda:0`).
    fn name(&self) -> &'static str;

    /// Compiles one kernel.
    fn compile(&self, kernel: &Kernel) -> Result<Self::Compiled, BackendError>;

    /// Everything besides the kernel IR that decides the compiled code: target, ISA features,
    /// code format version and compile options. The executor hashes it into every cache key,
    /// so code cached by another machine or another version is never loaded.
    fn cache_identity(&self) -> String;

    /// A buffer of `numel` elements of `dtype`, with unspecified contents.
    fn alloc(&self, dtype: DType, numel: usize) -> Result<Self::Buffer, BackendError>;

    /// A buffer holding a copy of `data`.
    fn upload(&self, data: &HostData) -> Result<Self::Buffer, BackendError>;

    /// A host copy of a buffer's elements, after every earlier launch.
    fn download(&self, buf: &Self::Buffer) -> Result<HostData, BackendError>;

    /// Sets every element of `buf` to `value`, converted to the buffer's dtype as a cast does.
    fn fill(&self, buf: &mut Self::Buffer, value: Scalar) -> Result<(), BackendError>;

    /// Waits until every call made so far has finished (and reports a failure of one that ran
    /// asynchronously).
    fn synchronize(&self) -> Result<(), BackendError>;

    /// The bytes to persist for a compiled kernel (CPU: its relocation-free machine code).
    fn artifact(&self, compiled: &Self::Compiled) -> Vec<u8>;

    /// Rebuilds a compiled kernel from [`Backend::artifact`]'s bytes, without compiling.
    ///
    /// # Safety
    ///
    /// `bytes` must be what `artifact` returned for this very kernel, from a backend with the
    /// same [`Backend::cache_identity`]: they may be executed as they are.
    unsafe fn load(&self, kernel: &Kernel, bytes: &[u8]) -> Result<Self::Compiled, BackendError>;

    /// Runs a compiled kernel over buffers (one per kernel parameter) with the given size
    /// parameters, writing its output parameters' buffers.
    ///
    /// Checked first, with an error and nothing run when they fail: that `kernel`'s parameters
    /// are those `compiled` was built for; the number of buffers and their dtypes; that there
    /// are enough sizes, none negative; that every buffer holds exactly the elements its
    /// parameter's declared extents ([`metajit_metaops::kernel::BufParam::dims`]) give for
    /// these sizes ([`BackendError::BufferLength`]); that no output buffer is also passed for
    /// another parameter.
    ///
    /// # Safety
    ///
    /// What cannot be checked cheaply:
    /// - `compiled` is the code of `kernel` (from [`Backend::compile`] or a faithful
    ///   [`Backend::load`]), and `kernel` keeps every load and store within the extents its
    ///   buffer parameters declare — as every kernel of `metajit_metaops::schedule` does by
    ///   construction; a hand-written kernel could index anywhere;
    /// - nobody else reads or writes the output buffers during the call (they are shared
    ///   references, so this is not enforced by the borrow checker).
    unsafe fn launch(
        &self,
        compiled: &Self::Compiled,
        kernel: &Kernel,
        bufs: &[&Self::Buffer],
        sizes: &[i64],
    ) -> Result<(), BackendError>;

    /// Computes a (batched) matrix product into `dst` (see
    /// [`metajit_metaops::contraction::GemmLayout`]), elements of `dtype` (f32 or f64).
    ///
    /// Checked first, with an error and nothing computed when they fail: the dtypes of the
    /// buffers; that every offset the layout reaches lies within its buffer
    /// ([`BackendError::BufferLength`]); that the destination's strides never write one
    /// element twice.
    fn contraction(
        &self,
        layout: &GemmLayout,
        dtype: DType,
        dst: &mut Self::Buffer,
        lhs: &Self::Buffer,
        rhs: &Self::Buffer,
    ) -> Result<(), BackendError>;
}
