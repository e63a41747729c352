//! The CUDA runtime: kernels rendered in the CUDA dialect ([`super::render`]), compiled by NVRTC
//! for the device's own architecture, loaded as a CUBIN (or PTX) and launched on one stream; contractions
//! through cuBLAS. Everything is reached through `cudarc` with dynamic loading, so the crate
//! builds and runs on machines without CUDA: [`Cuda::open`] looks for the driver, NVRTC and
//! cuBLAS libraries first and returns an error naming what is missing (creating a context
//! without a driver would panic inside `cudarc`).
//!
//! - **Stream order.** Every call enqueues on one stream (uploads, fills, launches, GEMMs), so
//!   work runs in call order. Buffers come from a caching pool: a dropped buffer goes back to
//!   the pool at once and is handed to a later allocation, whose work is enqueued after
//!   everything that may still read the old contents. [`Backend::download`] and
//!   [`Backend::synchronize`] wait for the stream.
//! - **Buffers** hold `max(numel, 1)` elements, rounded up to a multiple of 8 bytes (the
//!   renderer's compare-and-swap loops on narrow dtypes work on the containing word).
//! - **Compiled kernels** keep their code: by default a CUBIN for the device's real
//!   architecture (`sm_XY`), which loads as it is, so a warm start reads it from the cache and
//!   compiles nothing; with [`Cuda::set_cubin`]`(false)` PTX text for its virtual architecture
//!   (`compute_XY`), which the driver JIT-compiles when it is loaded. That is the cached
//!   artifact, and [`Backend::load`] loads either back without NVRTC (the launch geometry is
//!   re-rendered from the kernel, which costs no compile). A CUBIN also loads under a driver
//!   older than NVRTC, where PTX of a newer ISA would not.
//! - **Compiling** goes through [`Nvrtc`], which needs no driver or device: on a machine with
//!   NVRTC and no GPU, `codegen/tests/nvrtc.rs` compiles every kernel the tests make for an
//!   H100/H200.
//! - **Contractions** map the row-major product `C = A·B` to cuBLAS's column-major
//!   `Cᵀ = Bᵀ·Aᵀ` (or `C = A·B` when dst is column-major), one strided-batched call per
//!   batch axis that cuBLAS can stride over, a loop of calls over the others, and summed batch
//!   axes (dst stride 0) as calls with `beta = 1` after the first. Layouts cuBLAS cannot take
//!   (no unit stride on either axis of a matrix, negative strides, sizes beyond `i32`) and
//!   `k = 0` run a naive GEMM kernel of this module (one thread per output element, sums in
//!   f64) instead.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg, result as drv,
};
use cudarc::nvrtc::Ptx;
use metajit_metaops::contraction::{BatchAxis, GemmLayout, batch_offsets};
use metajit_metaops::kernel::{BufParam, Kernel};
use metajit_metaops::{DType, HostData, Scalar};

use super::Dialect;
use super::render::{self, Rendered};
use crate::{Backend, BackendError, DeviceBuffer, check};

/// The backend's name in errors.
const NAME: &str = "cuda";

/// The version of what this runtime adds to the rendered source when compiling (NVRTC
/// options, the artifact's format); part of [`Backend::cache_identity`].
pub const RUNTIME_VERSION: u32 = 2;

fn device_error(message: impl Into<String>) -> BackendError {
    BackendError::Device {
        backend: NAME,
        message: message.into(),
    }
}

/// What was found of the CUDA installation and the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device ordinal.
    pub ordinal: usize,
    /// The device's name (`NVIDIA H200`).
    pub name: String,
    /// The compute capability, `(major, minor)`.
    pub compute_capability: (i32, i32),
    /// The driver's CUDA version (`13000` for 13.0).
    pub driver_version: i32,
    /// NVRTC's version, `(major, minor)`.
    pub nvrtc_version: (i32, i32),
    /// Device memory in bytes.
    pub total_memory: usize,
}

impl DeviceInfo {
    /// The virtual architecture NVRTC compiles for (`compute_90`).
    pub fn arch(&self) -> String {
        let (major, minor) = self.compute_capability;
        format!("compute_{major}{minor}")
    }
}

/// Checks that the driver, NVRTC and cuBLAS libraries can be loaded, without creating a
/// context: `Err` names the first one missing.
pub fn libraries_present() -> Result<(), String> {
    // SAFETY (each call): only tries to load the library by its usual names (running its
    // initialisers, as any use of it would) and unloads it again. The driver is looked for
    // first and alone: without it (most machines) nothing else is loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda not found)".into());
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("no NVRTC (libnvrtc not found): kernels cannot be compiled".into());
    }
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err("no cuBLAS (libcublas not found)".into());
    }
    Ok(())
}

/// NVRTC on its own, for one architecture: compiles CUDA C with the options this runtime
/// uses, with no driver, context or device. [`Cuda`] compiles through it; on a machine with
/// NVRTC but no GPU it checks that the rendered source compiles and assembles for a given GPU
/// (`codegen/tests/nvrtc.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nvrtc {
    version: (i32, i32),
    compute_capability: (i32, i32),
}

/// What NVRTC made of one kernel.
#[derive(Debug)]
pub struct NvrtcOutput {
    /// The kernel's rendering (CUDA C source and entry points).
    pub rendered: Rendered,
    /// A CUBIN (ELF image) when compiled for the real architecture, else PTX text.
    pub code: Vec<u8>,
    /// The PTX text, where NVRTC gives it.
    pub ptx: Option<String>,
}

impl Nvrtc {
    /// Loads NVRTC (an error, not a panic, where it is missing or lacks a function) for the
    /// architecture `compute_capability` (`(9, 0)` for an H100/H200).
    pub fn open(compute_capability: (i32, i32)) -> Result<Nvrtc, BackendError> {
        // SAFETY: only tries to load the library by its usual names and unloads it again.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(device_error(
                "no NVRTC (libnvrtc not found): kernels cannot be compiled",
            ));
        }
        // A symbol missing from an old library panics inside cudarc's loader.
        let version = std::panic::catch_unwind(|| {
            let (mut major, mut minor) = (0, 0);
            // SAFETY: writes two ints.
            unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
                .result()
                .map(|()| (major, minor))
        })
        .map_err(|_| device_error("libnvrtc lacks a function cudarc needs (older than CUDA 13?)"))?
        .map_err(|e| device_error(format!("querying NVRTC's version: {e:?}")))?;
        Ok(Nvrtc {
            version,
            compute_capability,
        })
    }

    /// NVRTC's version, `(major, minor)`.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// The architecture compiled for, `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// The architectures this NVRTC compiles for, as `(major, minor)`.
    pub fn supported_archs(&self) -> Result<Vec<(i32, i32)>, BackendError> {
        let mut n = 0;
        // SAFETY: writes one int.
        unsafe { cudarc::nvrtc::sys::nvrtcGetNumSupportedArchs(&mut n) }
            .result()
            .map_err(|e| device_error(format!("NVRTC's architectures: {e:?}")))?;
        let mut archs = vec![0; usize::try_from(n).unwrap_or(0)];
        // SAFETY: `archs` holds the `n` ints NVRTC said it has.
        unsafe { cudarc::nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
            .result()
            .map_err(|e| device_error(format!("NVRTC's architectures: {e:?}")))?;
        Ok(archs.into_iter().map(|a| (a / 10, a % 10)).collect())
    }

    /// The options: the renderer's (no FMA contraction), `--minimal` where NVRTC has it
    /// (12.4 on: leaves out texture and device-runtime declarations the kernels never use,
    /// which shortens every compile), and the architecture, virtual (`compute_XY`, for PTX) or
    /// real (`sm_XY`, for a CUBIN).
    pub fn options(&self, cubin: bool) -> Vec<String> {
        let mut o: Vec<String> = render::compile_options(Dialect::Cuda)
            .split_whitespace()
            .map(String::from)
            .collect();
        if self.version >= (12, 4) {
            o.push("--minimal".into());
        }
        let (major, minor) = self.compute_capability;
        let arch = if cubin { "sm" } else { "compute" };
        o.push(format!("--gpu-architecture={arch}_{major}{minor}"));
        o
    }

    /// Compiles CUDA C: the artifact (a CUBIN when `cubin`, else the PTX text) and the PTX
    /// text where NVRTC gives it; `Err` holds NVRTC's log and the options.
    pub fn compile_source(
        &self,
        source: &str,
        cubin: bool,
    ) -> Result<(Vec<u8>, Option<String>), String> {
        use cudarc::nvrtc::{result as rtc, sys as rtc_sys};
        let src = std::ffi::CString::new(source).map_err(|_| "the source contains a NUL byte")?;
        /// Destroys the program when dropped.
        struct Program(rtc_sys::nvrtcProgram);
        impl Drop for Program {
            fn drop(&mut self) {
                // SAFETY: created by `create_program` below and destroyed only here.
                let _ = unsafe { rtc::destroy_program(self.0) };
            }
        }
        let prog = Program(
            rtc::create_program(&src, None)
                .map_err(|e| format!("NVRTC: creating a program: {e:?}"))?,
        );
        let options = self.options(cubin);
        // SAFETY: a live program whose source (`src`) outlives it; the options are strings.
        if let Err(e) = unsafe { rtc::compile_program(prog.0, &options) } {
            // SAFETY: as above.
            let log = unsafe { rtc::get_program_log(prog.0) }
                .map(|l| c_chars_to_string(&l))
                .unwrap_or_default();
            return Err(format!("NVRTC failed ({e:?}, options {options:?}):\n{log}"));
        }
        // SAFETY: as above; the program compiled.
        let ptx = unsafe { rtc::get_ptx(prog.0) }
            .ok()
            .map(|p| c_chars_to_string(&p));
        if !cubin {
            let ptx = ptx.ok_or("NVRTC gave no PTX")?;
            return Ok((ptx.clone().into_bytes(), Some(ptx)));
        }
        let mut size = 0usize;
        // SAFETY: as above; writes one usize.
        unsafe { rtc_sys::nvrtcGetCUBINSize(prog.0, &mut size) }
            .result()
            .map_err(|e| format!("NVRTC: no CUBIN: {e:?}"))?;
        let mut image = vec![0u8; size];
        // SAFETY: `image` holds the `size` bytes NVRTC said the CUBIN has.
        unsafe { rtc_sys::nvrtcGetCUBIN(prog.0, image.as_mut_ptr().cast()) }
            .result()
            .map_err(|e| format!("NVRTC: reading the CUBIN: {e:?}"))?;
        Ok((image, ptx))
    }

    /// Renders `kernel` in the CUDA dialect and compiles it; a compile error carries NVRTC's
    /// log, the source and the kernel.
    pub fn compile(&self, kernel: &Kernel, cubin: bool) -> Result<NvrtcOutput, BackendError> {
        let rendered = render::render(kernel, Dialect::Cuda)?;
        let (code, ptx) = self
            .compile_source(&rendered.source, cubin)
            .map_err(|log| BackendError::Compile {
                backend: NAME,
                message: format!("{log}\nCUDA C source:\n{}", rendered.source),
                kernel: kernel.text(),
            })?;
        Ok(NvrtcOutput {
            rendered,
            code,
            ptx,
        })
    }
}

/// A device buffer: a pooled allocation of at least 8 bytes, a multiple of 8.
pub struct CudaBuffer {
    /// The allocation (taken back into the pool on drop).
    slice: Option<CudaSlice<u8>>,
    /// Its device address.
    ptr: u64,
    /// Its size in bytes (the pool's size class).
    bytes: usize,
    dtype: DType,
    numel: usize,
    pool: Arc<Pool>,
}

impl CudaBuffer {
    /// The device address.
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    /// The allocation's size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl DeviceBuffer for CudaBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn numel(&self) -> usize {
        self.numel
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if let Some(s) = self.slice.take() {
            self.pool.give_back(self.bytes, (self.ptr, s));
        }
    }
}

impl std::fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaBuffer({} x {}, {:#x})",
            self.numel, self.dtype, self.ptr
        )
    }
}

/// A pooled allocation: its device address and the slice that owns it.
type Pooled = (u64, CudaSlice<u8>);

/// Freed allocations by size class ([`super::pool`]), reused by later allocations on the same
/// stream (which is what makes reuse safe: the new owner's work is enqueued after every use
/// by the old one); released allocations are freed by [`free_all`].
type Pool = super::pool::Pool<Pooled>;

/// Drops allocations with their context bound to this thread (a slice's drop frees it on its
/// stream without binding the context, and a failure would only be recorded for later).
fn free_all(slices: impl Iterator<Item = CudaSlice<u8>>) {
    let mut slices = slices.peekable();
    if let Some(first) = slices.peek() {
        let ctx = first.context().clone();
        // Binding takes (clears) an error an earlier call left in the context: put it back,
        // for the next synchronize to report.
        let earlier = ctx.check_err();
        ctx.record_err(ctx.bind_to_thread());
        ctx.record_err(earlier);
    }
    slices.for_each(drop);
}

/// A compiled kernel: its loaded module, one function per entry point, and what a launch
/// needs.
pub struct CudaKernel {
    functions: Vec<CudaFunction>,
    rendered: Rendered,
    params: Vec<BufParam>,
    n_sizes: usize,
    artifact: Vec<u8>,
    module: Arc<CudaModule>,
    retired: Retired,
}

/// Modules of dropped kernels, kept loaded until the stream has run everything enqueued before
/// ([`Backend::synchronize`]): cudarc unloads a module as soon as its last handle drops, and a
/// launch of it may still be queued (a plan evicted from the plan cache drops its kernels
/// without waiting for the device).
type Retired = Arc<Mutex<Vec<Arc<CudaModule>>>>;

impl Drop for CudaKernel {
    fn drop(&mut self) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.push(self.module.clone());
    }
}

impl CudaKernel {
    /// The compiled code as cached: PTX text, or a CUBIN (an ELF image) when the backend
    /// compiles CUBINs ([`Cuda::set_cubin`]).
    pub fn code(&self) -> &[u8] {
        &self.artifact
    }

    /// Whether the code is a CUBIN (machine code for the device) rather than PTX.
    pub fn is_cubin(&self) -> bool {
        is_cubin(&self.artifact)
    }

    /// The rendered kernel (its CUDA C source and entry points).
    pub fn rendered(&self) -> &Rendered {
        &self.rendered
    }
}

/// The naive GEMM kernels (see the module doc), compiled on first use.
struct Fallback {
    f32: CudaFunction,
    f64: CudaFunction,
    _module: Arc<CudaModule>,
}

/// Any-strides GEMM for one batch entry: `d[i, j] (+)= Σ_l a[i, l] · b[l, j]`, the sum in f64,
/// one thread per output element (grid-stride).
pub const NAIVE_GEMM_SOURCE: &str = r#"
typedef long long i64;
#define NAIVE_GEMM(NAME, T) \
extern "C" __global__ void NAME(T* d, const T* a, const T* b, i64 m, i64 n, i64 k, \
        i64 drs, i64 dcs, i64 ars, i64 acs, i64 brs, i64 bcs, int accumulate) { \
    i64 total = m * n; \
    for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < total; \
            t += (i64)gridDim.x * blockDim.x) { \
        i64 i = t / n, j = t % n; \
        double acc = 0.0; \
        for (i64 l = 0; l < k; l++) { \
            acc += (double)(a[i * ars + l * acs] * b[l * brs + j * bcs]); \
        } \
        T* out = d + i * drs + j * dcs; \
        *out = accumulate ? (T)((double)*out + acc) : (T)acc; \
    } \
}
NAIVE_GEMM(metajit_naive_gemm_f32, float)
NAIVE_GEMM(metajit_naive_gemm_f64, double)
"#;

/// The CUDA backend: one device, one context, one stream.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    pool: Arc<Pool>,
    info: DeviceInfo,
    nvrtc: Nvrtc,
    fallback: OnceLock<Result<Fallback, String>>,
    debug: AtomicU8,
    cubin: AtomicBool,
    retired: Retired,
}

impl Drop for Cuda {
    /// Waits for the stream before the fields drop (the cuBLAS handle first, then the pool's
    /// buffers and the modules), with the context bound to this thread: cudarc's cuBLAS handle
    /// is destroyed without binding it, and a module must not be unloaded under a queued
    /// launch. Errors are past reporting here.
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuda").field("info", &self.info).finish()
    }
}

impl Cuda {
    /// Opens device `ordinal`: checks for the libraries (an error, not a panic, where one is
    /// missing), then creates a context and a stream.
    pub fn open(ordinal: usize) -> Result<Cuda, BackendError> {
        libraries_present().map_err(device_error)?;
        // A symbol missing from an old driver panics inside cudarc's loader: report it as an
        // error instead.
        std::panic::catch_unwind(|| Cuda::open_present(ordinal)).unwrap_or_else(|_| {
            Err(device_error(
                "the CUDA libraries lack a function cudarc needs (a driver older than CUDA 13?)",
            ))
        })
    }

    fn open_present(ordinal: usize) -> Result<Cuda, BackendError> {
        let drv_err = |what: &str| {
            let what = what.to_string();
            move |e: drv::DriverError| device_error(format!("{what}: {e}"))
        };
        let count = CudaContext::device_count().map_err(drv_err("initialising the driver"))?;
        if ordinal >= usize::try_from(count).unwrap_or(0) {
            return Err(device_error(format!(
                "no CUDA device {ordinal} ({count} found)"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv_err("creating a context"))?;
        // SAFETY: this backend uses one stream for everything, so cudarc's cross-stream
        // event tracking has nothing to order; no slice exists yet.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv_err("creating a stream"))?;
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| device_error(format!("creating a cuBLAS handle: {e}")))?;
        let mut driver_version = 0;
        // SAFETY: writes one int.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_version) }
            .result()
            .map_err(drv_err("querying the driver version"))?;
        let compute_capability = ctx
            .compute_capability()
            .map_err(drv_err("querying the compute capability"))?;
        let nvrtc = Nvrtc::open(compute_capability)?;
        let info = DeviceInfo {
            ordinal,
            name: ctx.name().map_err(drv_err("querying the device name"))?,
            compute_capability,
            driver_version,
            nvrtc_version: nvrtc.version(),
            total_memory: ctx.total_mem().map_err(drv_err("querying the memory"))?,
        };
        Ok(Cuda {
            ctx,
            stream,
            blas,
            pool: Arc::new(Pool::new(info.total_memory / 2, |v: Vec<Pooled>| {
                free_all(v.into_iter().map(|(_, s)| s))
            })),
            info,
            nvrtc,
            fallback: OnceLock::new(),
            retired: Arc::new(Mutex::new(Vec::new())),
            debug: AtomicU8::new(0),
            cubin: AtomicBool::new(true),
        })
    }

    /// The device and library versions found.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Sets the debug level: 1 prints the buffer pool's counters at exit, 4 each kernel's CUDA
    /// C source when compiled, 5 also its PTX.
    pub fn set_debug(&self, level: u8) {
        self.debug.store(level, Ordering::Relaxed);
        if level >= 1 {
            self.pool.print_stats_at_exit("cuda");
        }
    }

    /// Bytes held by the buffer pool for reuse.
    pub fn pooled_bytes(&self) -> usize {
        self.pool.held()
    }

    /// Frees the buffers the pool holds for reuse.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }

    /// Sets the most bytes the buffer pool holds for reuse (default: half the device's
    /// memory); see [`super::pool`].
    pub fn set_pool_cap(&self, bytes: usize) {
        self.pool.set_cap(bytes);
    }

    /// The buffer pool's counters.
    pub fn pool_stats(&self) -> super::pool::PoolStats {
        self.pool.stats()
    }

    /// Chooses what [`Backend::compile`] produces: CUBINs (`true`, the default: machine code
    /// for this device's real architecture, `sm_XY`, loaded without the driver's PTX JIT) or
    /// PTX text (`false`, JIT-compiled by the driver when loaded). [`Backend::load`] takes
    /// either.
    pub fn set_cubin(&self, on: bool) {
        self.cubin.store(on, Ordering::Relaxed);
    }

    /// The NVRTC options for this device: the renderer's (no FMA contraction) and the
    /// architecture, virtual (`compute_XY`, PTX) or real (`sm_XY`, CUBIN).
    pub fn nvrtc_options(&self, cubin: bool) -> Vec<String> {
        self.nvrtc.options(cubin)
    }

    /// Loads PTX text or a CUBIN into the context.
    fn load_module(&self, artifact: &[u8]) -> Result<Arc<CudaModule>, BackendError> {
        let code = if is_cubin(artifact) {
            Ptx::from_binary(artifact.to_vec())
        } else {
            let text =
                std::str::from_utf8(artifact).map_err(|_| device_error("PTX is not UTF-8 text"))?;
            if text.contains('\0') {
                return Err(device_error("PTX text contains a NUL byte"));
            }
            Ptx::from_src(text)
        };
        self.ctx
            .load_module(code)
            .map_err(|e| device_error(format!("loading compiled code: {e}")))
    }

    /// A loaded kernel from its rendering and compiled code.
    fn finish(
        &self,
        kernel: &Kernel,
        rendered: Rendered,
        artifact: Vec<u8>,
    ) -> Result<CudaKernel, BackendError> {
        let module = self.load_module(&artifact)?;
        let functions = rendered
            .function_names()
            .into_iter()
            .map(|name| {
                module
                    .load_function(name)
                    .map_err(|err| device_error(format!("no entry point {name}: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CudaKernel {
            functions,
            rendered,
            params: kernel.bufs.clone(),
            n_sizes: kernel.n_sizes,
            artifact,
            module,
            retired: self.retired.clone(),
        })
    }

    /// A buffer of at least `bytes` bytes, from the pool or newly allocated, and its size
    /// class; on an allocation failure the pool is emptied and the allocation tried once more
    /// ([`super::pool::Pool::alloc`]).
    fn raw_alloc(&self, bytes: usize) -> Result<(Pooled, usize), BackendError> {
        let class = super::pool::class_of(bytes)
            .ok_or_else(|| device_error(format!("{bytes} bytes of device memory overflow")))?;
        // An error an earlier asynchronous call left in the context is reported as itself:
        // cudarc's allocation would otherwise return it (clearing it) as this one's failure.
        self.ctx
            .check_err()
            .map_err(|e| self.sync_error("an earlier CUDA call failed", e))?;
        let mut attempt = 0;
        let got = self
            .pool
            .alloc_retrying_if(
                class,
                |class| -> Result<Pooled, drv::DriverError> {
                    attempt += 1;
                    if attempt > 1 {
                        // The retry after the pool released what it held: those frees are
                        // stream-ordered, and their memory returns once the stream reaches them.
                        self.stream.synchronize()?;
                    }
                    // SAFETY: the contents are unspecified, as `Backend::alloc` promises; u8
                    // has no invalid bit patterns.
                    let s = unsafe { self.stream.alloc::<u8>(class) }?;
                    let ptr = s.device_ptr(&self.stream).0;
                    Ok((ptr, s))
                },
                |e| e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY,
            )
            .map_err(|e| device_error(format!("allocating {class} bytes of device memory: {e}")))?;
        Ok((got, class))
    }

    fn sync_error(&self, what: &str, e: drv::DriverError) -> BackendError {
        device_error(format!("{what}: {e}"))
    }

    /// The naive GEMM kernels, compiled on first use.
    fn fallback(&self) -> Result<&Fallback, BackendError> {
        let f = self.fallback.get_or_init(|| {
            let (code, _) = self
                .nvrtc
                .compile_source(NAIVE_GEMM_SOURCE, self.cubin.load(Ordering::Relaxed))?;
            let module = self.load_module(&code).map_err(|e| e.to_string())?;
            let f = |name: &str| module.load_function(name).map_err(|e| e.to_string());
            Ok(Fallback {
                f32: f("metajit_naive_gemm_f32")?,
                f64: f("metajit_naive_gemm_f64")?,
                _module: module.clone(),
            })
        });
        f.as_ref()
            .map_err(|e| device_error(format!("the naive GEMM kernel: {e}")))
    }

    /// One naive GEMM over a single batch entry (pointers already offset).
    fn naive_gemm(
        &self,
        l: &GemmLayout,
        k: usize,
        dtype: DType,
        (d, a, b): (u64, u64, u64),
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let f = self.fallback()?;
        let func = if dtype == DType::F64 { &f.f64 } else { &f.f32 };
        let total = (l.m as u64).saturating_mul(l.n as u64);
        let blocks = total.div_ceil(256).clamp(1, 65535) as u32;
        let ints: [i64; 9] = [
            l.m as i64,
            l.n as i64,
            k as i64,
            l.dst.rs as i64,
            l.dst.cs as i64,
            l.lhs.rs as i64,
            l.lhs.cs as i64,
            l.rhs.rs as i64,
            l.rhs.cs as i64,
        ];
        let acc = i32::from(accumulate);
        let mut args = self.stream.launch_builder(func);
        args.arg(&d).arg(&a).arg(&b);
        for v in &ints {
            args.arg(v);
        }
        args.arg(&acc);
        // SAFETY: the arguments match the kernel's signature; the caller checked (through
        // `check::contraction_args`) that every offset the layout reaches is inside its
        // buffer, and `d` is a buffer nothing else writes in this stream meanwhile.
        unsafe {
            args.launch(LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map(|_| ())
        .map_err(|e| device_error(format!("launching the naive GEMM: {e}")))
    }
}

/// How a logical matrix `rows × cols` with element `(r, c)` at `r·rs + c·cs` is one cuBLAS
/// operand `op(X)`, `X` column-major with leading dimension `ld`: `(transpose, ld)`, or
/// `None` when it is not (no unit stride along either axis, or a leading dimension cuBLAS
/// rejects). An axis of extent 1 takes any stride.
fn operand(rows: usize, cols: usize, rs: isize, cs: isize) -> Option<(cublasOperation_t, i32)> {
    let fits = |ld: isize, min: usize| -> Option<i32> {
        let ld = i32::try_from(ld).ok()?;
        (ld >= 1 && ld as usize >= min.max(1)).then_some(ld)
    };
    if rs == 1 || rows <= 1 {
        // X = the matrix itself, columns `cs` apart.
        let ld = if cols <= 1 { rows.max(1) as isize } else { cs };
        if let Some(ld) = fits(ld, rows) {
            return Some((cublasOperation_t::CUBLAS_OP_N, ld));
        }
    }
    if cs == 1 || cols <= 1 {
        // X = its transpose (cols × rows, column-major), rows `rs` apart.
        let ld = if rows <= 1 { cols.max(1) as isize } else { rs };
        if let Some(ld) = fits(ld, cols) {
            return Some((cublasOperation_t::CUBLAS_OP_T, ld));
        }
    }
    None
}

/// One cuBLAS call's shape: `C' (m × n, column-major, ldc) = op(A') · op(B')`, with `A'` and
/// `B'` the layout's rhs and lhs (`swapped`: C' is dst transposed) or lhs and rhs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlasShape {
    swapped: bool,
    m: i32,
    n: i32,
    k: i32,
    a: (cublasOperation_t, i32),
    b: (cublasOperation_t, i32),
    ldc: i32,
}

/// The cuBLAS form of one product of `l` (row-major `dst = lhs · rhs` as column-major
/// `dstᵀ = rhsᵀ · lhsᵀ`, or directly when dst is column-major), if there is one.
fn blas_shape(l: &GemmLayout) -> Option<BlasShape> {
    let (m, n, k) = (
        i32::try_from(l.m).ok()?,
        i32::try_from(l.n).ok()?,
        i32::try_from(l.k).ok()?,
    );
    if k == 0 {
        return None; // zeros: the naive kernel writes them without reading the operands
    }
    // dstᵀ (n × m) column-major: dst's column stride is the unit.
    if let Some((cublasOperation_t::CUBLAS_OP_N, ldc)) = operand(l.n, l.m, l.dst.cs, l.dst.rs)
        && let Some(a) = operand(l.n, l.k, l.rhs.cs, l.rhs.rs)
        && let Some(b) = operand(l.k, l.m, l.lhs.cs, l.lhs.rs)
    {
        return Some(BlasShape {
            swapped: true,
            m: n,
            n: m,
            k,
            a,
            b,
            ldc,
        });
    }
    // dst (m × n) column-major.
    if let Some((cublasOperation_t::CUBLAS_OP_N, ldc)) = operand(l.m, l.n, l.dst.rs, l.dst.cs)
        && let Some(a) = operand(l.m, l.k, l.lhs.rs, l.lhs.cs)
        && let Some(b) = operand(l.k, l.n, l.rhs.rs, l.rhs.cs)
    {
        return Some(BlasShape {
            swapped: false,
            m,
            n,
            k,
            a,
            b,
            ldc,
        });
    }
    None
}

/// Element offsets to byte addresses.
fn at(base: u64, offset: isize, size: usize) -> u64 {
    base.wrapping_add((offset as i64).wrapping_mul(size as i64) as u64)
}

/// One call of a contraction's plan ([`plan_gemm`]); offsets are in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GemmCall {
    /// A cuBLAS strided-batched GEMM: `C'[p] = op(A'[p]) · op(B'[p]) (+ C'[p] when
    /// `accumulate`)` for `p < batch`, with `A'`, `B'` the operands of `shape` (rhs and lhs
    /// when swapped) at `a = (offset, batch stride)`, `b` likewise, and `C'` (dst) at `c`.
    Blas {
        shape: BlasShape,
        a: (isize, isize),
        b: (isize, isize),
        c: (isize, isize),
        batch: i32,
        accumulate: bool,
    },
    /// One product of the plan's layout by the naive kernel, at these dst, lhs and rhs
    /// offsets, over `k` (0: zeros).
    Naive {
        dst: isize,
        lhs: isize,
        rhs: isize,
        k: usize,
        accumulate: bool,
    },
}

/// The calls that compute `layout` (see the module doc), and the simplified layout whose
/// shape and matrix strides they use. Nothing to call when nothing is written.
fn plan_gemm(layout: &GemmLayout) -> (GemmLayout, Vec<GemmCall>) {
    let l = layout.simplified();
    let mut calls = Vec::new();
    if l.m == 0 || l.n == 0 || l.batch.iter().any(|b| b.dst != 0 && b.extent == 0) {
        return (l, calls); // nothing is written
    }
    let (free, summed): (Vec<BatchAxis>, Vec<BatchAxis>) = l.batch.iter().partition(|b| b.dst != 0);
    // An empty summed axis: every matrix is an empty sum, as with k = 0.
    let k = if summed.iter().any(|b| b.extent == 0) {
        0
    } else {
        l.k
    };
    let count = |axes: &[BatchAxis]| -> usize { axes.iter().map(|x| x.extent).product() };
    let nonneg = l
        .batch
        .iter()
        .all(|b| b.dst >= 0 && b.lhs >= 0 && b.rhs >= 0);
    // cuBLAS strides over the longest free axis; the other free axes and the summed ones are
    // a loop of calls (summed entries after the first accumulate).
    let longest = (0..free.len()).max_by_key(|&i| free[i].extent);
    let batched = longest.map(|i| free[i]);
    let blas = if k > 0 && nonneg {
        blas_shape(&l).filter(|_| batched.is_none_or(|b| i32::try_from(b.extent).is_ok()))
    } else {
        None
    };
    if let Some(shape) = blas {
        let rest: Vec<BatchAxis> = free
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != longest)
            .map(|(_, b)| *b)
            .collect();
        let x = batched.unwrap_or(BatchAxis {
            extent: 1,
            dst: 0,
            lhs: 0,
            rhs: 0,
        });
        for r in 0..count(&rest) {
            let (od, ol, or) = batch_offsets(&rest, r);
            for t in 0..count(&summed) {
                let (_, tl, tr) = batch_offsets(&summed, t);
                let (lhs, rhs) = ((ol + tl, x.lhs), (or + tr, x.rhs));
                let (a, b) = if shape.swapped {
                    (rhs, lhs)
                } else {
                    (lhs, rhs)
                };
                calls.push(GemmCall::Blas {
                    shape,
                    a,
                    b,
                    c: (od, x.dst),
                    batch: x.extent as i32,
                    accumulate: t > 0,
                });
            }
        }
        return (l, calls);
    }
    let summed = if k == 0 { Vec::new() } else { summed };
    for f in 0..count(&free) {
        let (od, ol, or) = batch_offsets(&free, f);
        for t in 0..count(&summed) {
            let (_, tl, tr) = batch_offsets(&summed, t);
            calls.push(GemmCall::Naive {
                dst: od,
                lhs: ol + tl,
                rhs: or + tr,
                k,
                accumulate: t > 0,
            });
        }
    }
    (l, calls)
}

impl Cuda {
    /// Launches `func` with `groups` blocks of `local` threads on the stream: the renderer's
    /// ABI, a device pointer per buffer, then the scratch pointer of a split entry point, then
    /// an i64 per size. No blocks: nothing is launched. A failure is the driver's message.
    ///
    /// # Safety
    ///
    /// The arguments must be those `func`'s parameters expect, and the kernel must keep
    /// within the buffers (the contract of [`Backend::launch`]).
    unsafe fn run(
        &self,
        func: &CudaFunction,
        ptrs: &[u64],
        scratch: Option<&u64>,
        sizes: &[i64],
        groups: u64,
        local: u32,
    ) -> Result<(), String> {
        if groups == 0 {
            return Ok(());
        }
        let grid = u32::try_from(groups).map_err(|_| format!("{groups} blocks"))?;
        let mut args = self.stream.launch_builder(func);
        for p in ptrs {
            args.arg(p);
        }
        if let Some(p) = scratch {
            args.arg(p);
        }
        for s in sizes {
            args.arg(s);
        }
        // SAFETY: passed on from the caller (the arguments match `func`'s parameters).
        unsafe {
            args.launch(LaunchConfig {
                grid_dim: (grid, 1, 1),
                block_dim: (local, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Runs one cuBLAS call of a plan on buffers at `d`, `lhs`, `rhs`.
    fn blas_call(
        &self,
        call: &GemmCall,
        dtype: DType,
        (d, lhs, rhs): (u64, u64, u64),
    ) -> Result<(), BackendError> {
        let GemmCall::Blas {
            shape: s,
            a,
            b,
            c,
            batch,
            accumulate,
        } = *call
        else {
            return Ok(());
        };
        let size = dtype.size_in_bytes();
        let (abase, bbase) = if s.swapped { (rhs, lhs) } else { (lhs, rhs) };
        let (ap, bp, cp) = (at(abase, a.0, size), at(bbase, b.0, size), at(d, c.0, size));
        let handle = *self.blas.handle();
        // SAFETY: `check::contraction_args` verified that every offset the layout reaches is
        // inside its buffer; `plan_gemm` expresses exactly the layout's strides (leading
        // dimensions, transposes, batch strides; see its tests), so cuBLAS reads and writes
        // those elements only; alpha and beta are host values (the default pointer mode).
        let status = unsafe {
            match dtype {
                DType::F64 => {
                    let (alpha, beta) = (1.0f64, if accumulate { 1.0f64 } else { 0.0 });
                    cudarc::cublas::result::dgemm_strided_batched(
                        handle,
                        s.a.0,
                        s.b.0,
                        s.m,
                        s.n,
                        s.k,
                        &alpha,
                        ap as *const f64,
                        s.a.1,
                        a.1 as i64,
                        bp as *const f64,
                        s.b.1,
                        b.1 as i64,
                        &beta,
                        cp as *mut f64,
                        s.ldc,
                        c.1 as i64,
                        batch,
                    )
                }
                _ => {
                    let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
                    cudarc::cublas::result::sgemm_strided_batched(
                        handle,
                        s.a.0,
                        s.b.0,
                        s.m,
                        s.n,
                        s.k,
                        &alpha,
                        ap as *const f32,
                        s.a.1,
                        a.1 as i64,
                        bp as *const f32,
                        s.b.1,
                        b.1 as i64,
                        &beta,
                        cp as *mut f32,
                        s.ldc,
                        c.1 as i64,
                        batch,
                    )
                }
            }
        };
        status.map_err(|e| device_error(format!("cuBLAS GEMM {s:?}: {e}")))
    }
}

impl Backend for Cuda {
    type Compiled = CudaKernel;
    type Buffer = CudaBuffer;

    fn name(&self) -> &'static str {
        NAME
    }

    fn compile(&self, kernel: &Kernel) -> Result<CudaKernel, BackendError> {
        let debug = self.debug.load(Ordering::Relaxed);
        // A failed compile's error carries the source and NVRTC's log.
        let out = self
            .nvrtc
            .compile(kernel, self.cubin.load(Ordering::Relaxed))?;
        if debug >= 4 {
            eprintln!("metajit: CUDA C:\n{}", out.rendered.source);
        }
        if debug >= 5 {
            match &out.ptx {
                Some(ptx) => eprintln!("metajit: PTX:\n{ptx}"),
                None => eprintln!("metajit: (NVRTC gave no PTX with the CUBIN)"),
            }
        }
        self.finish(kernel, out.rendered, out.code)
    }

    fn cache_identity(&self) -> String {
        let i = &self.info;
        format!(
            "cuda {} sm_{}{} driver {} nvrtc {}.{} runtime v{} render v{} {:016x} options {:?}",
            i.name,
            i.compute_capability.0,
            i.compute_capability.1,
            i.driver_version,
            i.nvrtc_version.0,
            i.nvrtc_version.1,
            RUNTIME_VERSION,
            render::RENDER_VERSION,
            renderer_fingerprint(),
            self.nvrtc_options(self.cubin.load(Ordering::Relaxed)),
        )
    }

    fn alloc(&self, dtype: DType, numel: usize) -> Result<CudaBuffer, BackendError> {
        let bytes = numel
            .max(1)
            .checked_mul(dtype.size_in_bytes())
            .and_then(|b| b.checked_next_multiple_of(8))
            .ok_or_else(|| device_error(format!("{numel} elements of {dtype} overflow")))?;
        let ((ptr, slice), class) = self.raw_alloc(bytes)?;
        Ok(CudaBuffer {
            slice: Some(slice),
            ptr,
            bytes: class,
            dtype,
            numel,
            pool: self.pool.clone(),
        })
    }

    fn upload(&self, data: &HostData) -> Result<CudaBuffer, BackendError> {
        let buf = self.alloc(data.dtype(), data.len())?;
        let bytes = crate::buffer::le_bytes(data);
        if !bytes.is_empty() {
            self.ctx
                .bind_to_thread()
                .map_err(|e| self.sync_error("binding the context", e))?;
            // SAFETY: the buffer holds at least `bytes.len()` bytes; a copy from pageable
            // memory is staged before the call returns, so `bytes` may be freed after it.
            unsafe { drv::memcpy_htod_async(buf.ptr, &bytes[..], self.stream.cu_stream()) }
                .map_err(|e| self.sync_error("copying to the device", e))?;
        }
        Ok(buf)
    }

    fn download(&self, buf: &CudaBuffer) -> Result<HostData, BackendError> {
        let mut bytes = vec![0u8; buf.numel * buf.dtype.size_in_bytes()];
        if !bytes.is_empty() {
            self.ctx
                .bind_to_thread()
                .map_err(|e| self.sync_error("binding the context", e))?;
            // SAFETY: the buffer holds at least `bytes.len()` bytes; the stream is
            // synchronised below, before `bytes` is read.
            unsafe { drv::memcpy_dtoh_async(&mut bytes[..], buf.ptr, self.stream.cu_stream()) }
                .map_err(|e| self.sync_error("copying from the device", e))?;
        }
        self.synchronize()?;
        Ok(crate::buffer::host_from_le_bytes(buf.dtype, &bytes))
    }

    fn fill(&self, buf: &mut CudaBuffer, value: Scalar) -> Result<(), BackendError> {
        let size = buf.dtype.size_in_bytes();
        let bits = value.cast(buf.dtype).to_bits();
        let n = buf.numel.max(1);
        let stream = self.stream.cu_stream();
        self.ctx
            .bind_to_thread()
            .map_err(|e| self.sync_error("binding the context", e))?;
        let e = |e| self.sync_error("filling a buffer", e);
        // SAFETY: the buffer holds at least `n` elements of `size` bytes and is aligned to
        // 256 bytes; everything is stream-ordered.
        unsafe {
            match size {
                1 => drv::memset_d8_async(buf.ptr, bits as u8, n, stream).map_err(e),
                2 => cudarc::driver::sys::cuMemsetD16Async(buf.ptr, bits as u16, n, stream)
                    .result()
                    .map_err(e),
                4 => cudarc::driver::sys::cuMemsetD32Async(buf.ptr, bits as u32, n, stream)
                    .result()
                    .map_err(e),
                _ if bits as u32 as u64 == bits >> 32 => {
                    cudarc::driver::sys::cuMemsetD32Async(buf.ptr, bits as u32, 2 * n, stream)
                        .result()
                        .map_err(e)
                }
                _ => {
                    // An 8-byte pattern that is not two equal words: the first element from
                    // the host, then doubling copies within the buffer.
                    let first = bits.to_le_bytes();
                    drv::memcpy_htod_async(buf.ptr, &first[..], stream).map_err(e)?;
                    let mut have = 1usize;
                    while have < n {
                        let take = have.min(n - have);
                        drv::memcpy_dtod_async(
                            at(buf.ptr, have as isize, 8),
                            buf.ptr,
                            take * 8,
                            stream,
                        )
                        .map_err(e)?;
                        have += take;
                    }
                    Ok(())
                }
            }
        }
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        let done = self.stream.synchronize();
        // The stream has run (or abandoned) everything: retired modules may be unloaded.
        std::mem::take(&mut *self.retired.lock().unwrap_or_else(|e| e.into_inner()));
        done.map_err(|e| self.sync_error("a queued CUDA call failed", e))?;
        self.ctx
            .check_err()
            .map_err(|e| self.sync_error("a CUDA call failed", e))
    }

    fn artifact(&self, compiled: &CudaKernel) -> Vec<u8> {
        compiled.artifact.clone()
    }

    unsafe fn load(&self, kernel: &Kernel, bytes: &[u8]) -> Result<CudaKernel, BackendError> {
        let rendered = render::render(kernel, Dialect::Cuda)?;
        if self.debug.load(Ordering::Relaxed) >= 5 && !is_cubin(bytes) {
            eprintln!("metajit: PTX (cached):\n{}", String::from_utf8_lossy(bytes));
        }
        self.finish(kernel, rendered, bytes.to_vec())
    }

    unsafe fn launch(
        &self,
        compiled: &CudaKernel,
        kernel: &Kernel,
        bufs: &[&CudaBuffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        check::launch_args(
            NAME,
            &compiled.params,
            compiled.n_sizes,
            kernel,
            bufs,
            sizes,
        )?;
        let ptrs: Vec<u64> = bufs.iter().map(|b| b.ptr).collect();
        let sizes = &sizes[..compiled.n_sizes];
        if let Some(plan) = compiled.rendered.split_plan(sizes, None) {
            // A split full reduction: one launch per phase sharing a scratch buffer from the
            // pool (dropped after the launches are enqueued; stream order keeps a later user
            // of the allocation after them). Unverified on a GPU, like the OpenCL twin it
            // mirrors (`OpenCl::launch_split`).
            let scratch = self.alloc(DType::I64, plan.scratch_bytes.div_ceil(8))?;
            let first = compiled.rendered.entries.len();
            for l in &plan.launches {
                let func = compiled
                    .functions
                    .get(first + l.entry)
                    .ok_or_else(|| device_error(format!("no split entry point {}", l.entry)))?;
                // SAFETY: as below, with the scratch pointer after the buffers (the split
                // entry points' ABI), to a buffer of `plan.scratch_bytes` bytes or more.
                unsafe { self.run(func, &ptrs, Some(&scratch.ptr), sizes, l.groups, l.local) }
                    .map_err(|e| device_error(format!("launching a split entry point: {e}")))?;
            }
            return Ok(());
        }
        let l = compiled.rendered.launch(sizes);
        let func = compiled
            .functions
            .get(l.entry)
            .ok_or_else(|| device_error(format!("no entry point {}", l.entry)))?;
        // SAFETY: the arguments follow the renderer's ABI (one device pointer per buffer
        // parameter, then one i64 per size); `check::launch_args` verified each buffer's
        // dtype and element count against the kernel's declared extents and that outputs
        // alias nothing; the caller guarantees the kernel keeps within those extents and
        // that nobody else writes the outputs meanwhile (`launch`'s contract).
        unsafe { self.run(func, &ptrs, None, sizes, l.groups, l.local) }
            .map_err(|e| device_error(format!("launching {}: {e}", func_name(compiled, l.entry))))
    }

    fn contraction(
        &self,
        layout: &GemmLayout,
        dtype: DType,
        dst: &mut CudaBuffer,
        lhs: &CudaBuffer,
        rhs: &CudaBuffer,
    ) -> Result<(), BackendError> {
        check::contraction_args(NAME, layout, dtype, dst, lhs, rhs)?;
        let (l, calls) = plan_gemm(layout);
        if calls.is_empty() {
            return Ok(());
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| self.sync_error("binding the context", e))?;
        let size = dtype.size_in_bytes();
        for call in &calls {
            match *call {
                GemmCall::Blas { .. } => {
                    self.blas_call(call, dtype, (dst.ptr, lhs.ptr, rhs.ptr))?
                }
                GemmCall::Naive {
                    dst: od,
                    lhs: ol,
                    rhs: or,
                    k,
                    accumulate,
                } => {
                    let p = (
                        at(dst.ptr, od, size),
                        at(lhs.ptr, ol, size),
                        at(rhs.ptr, or, size),
                    );
                    self.naive_gemm(&l, k, dtype, p, accumulate)?;
                }
            }
        }
        Ok(())
    }
}

fn func_name(c: &CudaKernel, entry: usize) -> &str {
    c.rendered
        .entries
        .get(entry)
        .map_or("a kernel", |e| e.name.as_str())
}

/// Whether compiled code is a CUBIN (an ELF image) rather than PTX text.
fn is_cubin(code: &[u8]) -> bool {
    code.starts_with(b"\x7fELF")
}

/// NVRTC's NUL-terminated text as a string.
fn c_chars_to_string(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A fingerprint of the renderer's CUDA prelude and options (FNV-1a), so that code cached by
/// another renderer is not loaded.
fn renderer_fingerprint() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = render::prelude(Dialect::Cuda) + render::compile_options(Dialect::Cuda);
    for b in text.bytes().chain(NAIVE_GEMM_SOURCE.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use metajit_metaops::contraction::{MatStrides, gemm_reference};

    fn layout(
        m: usize,
        n: usize,
        k: usize,
        d: (isize, isize),
        a: (isize, isize),
        b: (isize, isize),
    ) -> GemmLayout {
        GemmLayout {
            m,
            n,
            k,
            dst: MatStrides { rs: d.0, cs: d.1 },
            lhs: MatStrides { rs: a.0, cs: a.1 },
            rhs: MatStrides { rs: b.0, cs: b.1 },
            batch: vec![],
        }
    }

    use cublasOperation_t::{CUBLAS_OP_N as N, CUBLAS_OP_T as T};

    #[test]
    fn row_major_product_is_the_swapped_column_major_one() {
        // C[4x5] = A[4x3] · B[3x5], all row-major: Cᵀ = Bᵀ · Aᵀ, no transposes.
        let s = blas_shape(&layout(4, 5, 3, (5, 1), (3, 1), (5, 1))).unwrap();
        assert_eq!(
            s,
            BlasShape {
                swapped: true,
                m: 5,
                n: 4,
                k: 3,
                a: (N, 5),
                b: (N, 3),
                ldc: 5
            }
        );
        // x @ w.T with w stored [5, 3]: rhs(l, j) at j·3 + l, a transposed operand.
        let s = blas_shape(&layout(4, 5, 3, (5, 1), (3, 1), (1, 3))).unwrap();
        assert_eq!((s.a, s.b), ((T, 3), (N, 3)));
        // Padded leading dimensions are kept.
        let s = blas_shape(&layout(4, 5, 3, (8, 1), (7, 1), (6, 1))).unwrap();
        assert_eq!((s.ldc, s.a.1, s.b.1), (8, 6, 7));
    }

    #[test]
    fn column_major_dst_is_the_direct_product() {
        let s = blas_shape(&layout(4, 5, 3, (1, 4), (1, 4), (1, 3))).unwrap();
        assert!(!s.swapped);
        assert_eq!(
            (s.m, s.n, s.k, s.ldc, s.a, s.b),
            (4, 5, 3, 4, (N, 4), (N, 3))
        );
    }

    #[test]
    fn vectors_take_any_stride_on_unit_axes() {
        // m = 1 described with zero row strides.
        let s = blas_shape(&layout(1, 6, 5, (0, 1), (0, 1), (6, 1))).unwrap();
        assert_eq!((s.m, s.n, s.ldc), (6, 1, 6));
        // n = 1 with zero column strides.
        assert!(blas_shape(&layout(6, 1, 5, (1, 0), (5, 1), (1, 0))).is_some());
    }

    #[test]
    fn layouts_cublas_cannot_take() {
        // Both strides of lhs non-unit (a strided view).
        assert_eq!(blas_shape(&layout(4, 5, 3, (5, 1), (6, 2), (5, 1))), None);
        // Both strides of dst non-unit.
        assert_eq!(blas_shape(&layout(4, 5, 3, (10, 2), (3, 1), (5, 1))), None);
        // k = 0 (zeros, written by the naive kernel).
        assert_eq!(blas_shape(&layout(4, 5, 0, (5, 1), (0, 1), (5, 1))), None);
        // A leading dimension smaller than the rows (overlapping columns).
        assert_eq!(operand(4, 5, 1, 2), None);
    }

    /// cuBLAS's strided-batched GEMM as documented (column-major, `op` N or T, `beta = 0`
    /// ignores C), and the naive kernel, on host arrays: every index must be in bounds and
    /// every leading dimension valid.
    fn emulate(l: &GemmLayout, calls: &[GemmCall], d: &mut [f64], x: &[f64], y: &[f64]) {
        let idx = |base: isize, off: usize| -> usize {
            usize::try_from(base + off as isize).expect("an index before the buffer")
        };
        for call in calls {
            match *call {
                GemmCall::Blas {
                    shape: s,
                    a,
                    b,
                    c,
                    batch,
                    accumulate,
                } => {
                    let (am, bm) = if s.swapped { (y, x) } else { (x, y) };
                    let (m, n, k) = (s.m as usize, s.n as usize, s.k as usize);
                    let (lda, ldb, ldc) = (s.a.1 as usize, s.b.1 as usize, s.ldc as usize);
                    assert!(m > 0 && n > 0 && k > 0 && batch > 0, "{s:?}");
                    assert!(lda >= if s.a.0 == N { m } else { k }, "lda {s:?}");
                    assert!(ldb >= if s.b.0 == N { k } else { n }, "ldb {s:?}");
                    assert!(ldc >= m, "ldc {s:?}");
                    for p in 0..batch as isize {
                        for i in 0..m {
                            for j in 0..n {
                                let mut acc = 0.0;
                                for q in 0..k {
                                    let ai = if s.a.0 == N { i + q * lda } else { q + i * lda };
                                    let bi = if s.b.0 == N { q + j * ldb } else { j + q * ldb };
                                    acc += am[idx(a.0 + p * a.1, ai)] * bm[idx(b.0 + p * b.1, bi)];
                                }
                                let ci = idx(c.0 + p * c.1, i + j * ldc);
                                d[ci] = if accumulate { d[ci] + acc } else { acc };
                            }
                        }
                    }
                }
                GemmCall::Naive {
                    dst,
                    lhs,
                    rhs,
                    k,
                    accumulate,
                } => {
                    for i in 0..l.m as isize {
                        for j in 0..l.n as isize {
                            let mut acc = 0.0;
                            for q in 0..k as isize {
                                acc += x[idx(lhs + i * l.lhs.rs + q * l.lhs.cs, 0)]
                                    * y[idx(rhs + q * l.rhs.rs + j * l.rhs.cs, 0)];
                            }
                            let ci = idx(dst + i * l.dst.rs + j * l.dst.cs, 0);
                            d[ci] = if accumulate { d[ci] + acc } else { acc };
                        }
                    }
                }
            }
        }
    }

    /// A random layout: dense matrices in a random axis order (some padded, some read with
    /// step 2), batch axes of every kind (shared, broadcast in either operand, summed), extents
    /// 0 to 4; and the buffer lengths it needs.
    fn random_layout(r: &mut impl FnMut(usize) -> usize) -> (GemmLayout, [usize; 3]) {
        let (m, n, k) = (r(5), r(5), r(5));
        // Batch axes: kind 0 shared, 1 lhs only, 2 rhs only, 3 summed.
        let batch: Vec<(usize, usize)> = (0..r(3)).map(|_| (r(4), r(4))).collect();
        // Strides for `axes` (extents) laid out densely in a random order, padded or stepped.
        let mut dense = |axes: &[usize]| -> (Vec<isize>, usize) {
            let mut order: Vec<usize> = (0..axes.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, r(i + 1));
            }
            let step = if r(4) == 0 { 2 } else { 1 };
            let mut strides = vec![0isize; axes.len()];
            let mut next = step;
            for &a in order.iter().rev() {
                strides[a] = next as isize;
                next *= axes[a].max(1) + usize::from(r(5) == 0);
            }
            (strides, next)
        };
        let pick = |kinds: &[usize]| -> Vec<usize> {
            batch
                .iter()
                .enumerate()
                .filter(|(_, (_, kind))| kinds.contains(kind))
                .map(|(i, _)| i)
                .collect()
        };
        let (dst_b, lhs_b, rhs_b) = (pick(&[0, 1, 2]), pick(&[0, 1, 3]), pick(&[0, 2, 3]));
        let axes_of = |b: &[usize], rows: usize, cols: usize| -> Vec<usize> {
            let mut axes: Vec<usize> = b.iter().map(|&i| batch[i].0).collect();
            axes.extend([rows, cols]);
            axes
        };
        let (ds, dl) = dense(&axes_of(&dst_b, m, n));
        let (ls, ll) = dense(&axes_of(&lhs_b, m, k));
        let (rs, rl) = dense(&axes_of(&rhs_b, k, n));
        let along = |which: &[usize], strides: &[isize], i: usize| {
            which.iter().position(|&j| j == i).map_or(0, |p| strides[p])
        };
        let l = GemmLayout {
            m,
            n,
            k,
            dst: MatStrides {
                rs: ds[ds.len() - 2],
                cs: ds[ds.len() - 1],
            },
            lhs: MatStrides {
                rs: ls[ls.len() - 2],
                cs: ls[ls.len() - 1],
            },
            rhs: MatStrides {
                rs: rs[rs.len() - 2],
                cs: rs[rs.len() - 1],
            },
            batch: (0..batch.len())
                .map(|i| BatchAxis {
                    extent: batch[i].0,
                    dst: along(&dst_b, &ds, i),
                    lhs: along(&lhs_b, &ls, i),
                    rhs: along(&rhs_b, &rs, i),
                })
                .collect(),
        };
        (l, [dl, ll, rl])
    }

    #[test]
    fn plans_compute_every_layout() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut r = move |n: usize| -> usize {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % n.max(1) as u64) as usize
        };
        let (mut blas, mut naive) = (0, 0);
        for case in 0..3000 {
            let (l, [dl, ll, rl]) = random_layout(&mut r);
            let vals = |n: usize, seed: usize| -> Vec<f64> {
                (0..n)
                    .map(|i| ((i * 7 + seed * 3) % 11) as f64 - 5.0)
                    .collect()
            };
            let (x, y) = (vals(ll, 1), vals(rl, 2));
            let mut want = HostData::from_vec(vec![99.0f64; dl]);
            gemm_reference(
                &l,
                &mut want,
                &HostData::from_vec(x.clone()),
                &HostData::from_vec(y.clone()),
            );
            let (sl, calls) = plan_gemm(&l);
            let mut got = vec![99.0f64; dl];
            emulate(&sl, &calls, &mut got, &x, &y);
            assert_eq!(got, want.to_vec::<f64>(), "case {case}: {l:?}\n{calls:?}");
            for c in &calls {
                match c {
                    GemmCall::Blas { .. } => blas += 1,
                    GemmCall::Naive { .. } => naive += 1,
                }
            }
        }
        // Both paths are exercised.
        assert!(
            blas > 300 && naive > 300,
            "{blas} cuBLAS calls, {naive} naive"
        );
    }

    /// Every entry point of a rendered kernel takes what `launch` passes: one pointer per
    /// buffer parameter, then one 64-bit integer per size, and has C linkage (the PTX symbol
    /// `load_function` looks up).
    #[test]
    fn rendered_entry_points_take_what_launch_passes() {
        use metajit_metaops::schedule::{Step, schedule};
        let g = metajit_metaops::parse::parse(
            "%0 = input #0 : f32[3, 500]
%1 = input #1 : i64[3, 500]
%2 = reduce max %0 axes=[1] keepdims : f32[3, 1]
%3 = reshape %2 : f32[3]
%4 = broadcast %3 axes=[1] : f32[3, 500]
%5 = sub %0, %4 : f32[3, 500]
%6 = cast %1 : f32[3, 500]
%7 = add %5, %6 : f32[3, 500]
return %7
",
        )
        .unwrap();
        let mut seen = 0;
        for step in schedule(&g).steps {
            let Step::Kernel { kernel, .. } = step else {
                continue;
            };
            let r = render::render(&kernel, Dialect::Cuda).unwrap();
            assert!(!r.entries.is_empty());
            for e in &r.entries {
                let head = format!(" {}(", e.name);
                let line = r
                    .source
                    .lines()
                    .find(|l| l.contains(&head) && l.contains("__global__"))
                    .unwrap_or_else(|| panic!("no entry {}:\n{}", e.name, r.source));
                assert!(line.starts_with("extern \"C\" __global__"), "{line}");
                let params =
                    &line[line.find(&head).unwrap() + head.len()..line.rfind(')').unwrap()];
                let params: Vec<&str> = params.split(", ").collect();
                assert_eq!(params.len(), kernel.bufs.len() + kernel.n_sizes, "{line}");
                for (i, p) in params.iter().enumerate() {
                    if i < kernel.bufs.len() {
                        let qual = if kernel.bufs[i].output { "" } else { "const " };
                        assert!(p.starts_with(qual), "{line}");
                        assert!(p.ends_with(&format!("* __restrict__ b{i}")), "{line}");
                    } else {
                        assert_eq!(*p, format!("i64 s{}", i - kernel.bufs.len()), "{line}");
                    }
                }
                seen += 1;
            }
        }
        assert!(seen > 0);
    }

    #[test]
    fn opening_without_cuda_is_an_error_not_a_panic() {
        match Cuda::open(0) {
            Ok(c) => assert!(libraries_present().is_ok(), "{c:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("cuda: "), "{msg}");
                if let Err(why) = libraries_present() {
                    assert!(msg.contains(&why), "{msg} vs {why}");
                }
            }
        }
        // An ordinal past the devices is an error too (where a driver is present).
        assert!(Cuda::open(1 << 20).is_err());
    }
}
