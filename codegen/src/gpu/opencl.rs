//! The OpenCL runtime: a device, an in-order queue, device buffers, programs built from the
//! OpenCL dialect's source (or reloaded from their binaries), launches with the ABI of
//! [`crate::gpu`], and [`Backend`] for it (contractions as a generated GEMM kernel).
//!
//! The OpenCL library is loaded at run time (`opencl3`'s `dynamic` feature): on a machine
//! without one, [`OpenCl::open`] returns an error and nothing panics.
//!
//! Buffers come from a size-class pool ([`super::pool`]): a dropped buffer is handed to a later
//! allocation at once, which is safe because everything is enqueued on one in-order queue.
//! (Most OpenCL drivers allocate device memory lazily, at the first command that uses a
//! buffer, so the pool's trim-and-retry on a failed allocation rarely applies here: a real
//! shortage shows as an error of that command.)

use std::collections::HashMap;
use std::ptr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use metajit_metaops::contraction::GemmLayout;
use metajit_metaops::kernel::Kernel;
use metajit_metaops::{DType, HostData, Scalar};
use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::device::{CL_DEVICE_TYPE_ALL, Device};
use opencl3::error_codes::{ClError, DLOPEN_RUNTIME_LOAD_FAILED};
use opencl3::kernel::{ExecuteKernel, Kernel as ClKernel};
use opencl3::memory::{Buffer, CL_MEM_COPY_HOST_PTR, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE, ClMem};
use opencl3::platform::get_platforms;
use opencl3::program::Program;
use opencl3::types::{CL_BLOCKING, cl_mem};

use super::Dialect;
use super::pool::{self, Lease};
use super::render::{self, Rendered};
use crate::{Backend, BackendError, DeviceBuffer, check};

const NAME: &str = "opencl";

/// `CL_PLATFORM_NOT_FOUND_KHR`: what the ICD loader answers when no driver is installed.
const CL_PLATFORM_NOT_FOUND_KHR: i32 = -1001;

fn device_error(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Device {
        backend: NAME,
        message: format!("{what}: {e}"),
    }
}

fn cl_error(what: &str, e: ClError) -> BackendError {
    if e.0 == DLOPEN_RUNTIME_LOAD_FAILED {
        return device_error(what, "no OpenCL library (libOpenCL.so.1) could be loaded");
    }
    if e.0 == CL_PLATFORM_NOT_FOUND_KHR {
        return device_error(what, "no OpenCL platform (the ICD loader found no driver)");
    }
    device_error(what, e)
}

/// Every device of every platform, in platform order.
fn all_devices() -> Result<Vec<(String, Device)>, BackendError> {
    let platforms = get_platforms().map_err(|e| cl_error("listing platforms", e))?;
    let mut out = Vec::new();
    for p in platforms {
        let pname = p.name().unwrap_or_default();
        // A platform without devices answers with an error; it just adds none.
        for id in p.get_devices(CL_DEVICE_TYPE_ALL).unwrap_or_default() {
            out.push((pname.clone(), Device::new(id)));
        }
    }
    Ok(out)
}

/// An element count's device allocation: bytes rounded up to a multiple of 8 (at least 8), so
/// compare-and-swap on a narrow element's containing 32-bit word stays inside the buffer.
fn padded_bytes(dtype: DType, numel: usize) -> Option<usize> {
    let bytes = numel.max(1).checked_mul(dtype.size_in_bytes())?;
    Some(bytes.div_ceil(8).checked_mul(8)?.max(8))
}

/// The buffer pool of a device.
type ClPool = pool::Pool<Buffer<u8>>;

/// A buffer in an OpenCL device's memory (given back to the device's pool when dropped).
#[derive(Debug)]
pub struct ClBuffer {
    mem: Lease<Buffer<u8>>,
    dtype: DType,
    numel: usize,
}

impl ClBuffer {
    fn raw(&self) -> cl_mem {
        self.mem.get()
    }

    /// The allocation's size in bytes (its pool size class).
    pub fn bytes(&self) -> usize {
        self.mem.class()
    }
}

impl DeviceBuffer for ClBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn numel(&self) -> usize {
        self.numel
    }
}

/// A built program: its kernels (one per entry point, then one per split entry point, behind a
/// lock because a kernel object's arguments are set before each launch) and its binary.
struct Built {
    program: Arc<Program>,
    kernels: Vec<Mutex<ClKernel>>,
}

/// A kernel compiled for an OpenCL device.
pub struct ClCompiled {
    rendered: Rendered,
    /// The entry points' name prefix (`render_named`).
    name: String,
    params: Kernel,
    built: Built,
}

impl ClCompiled {
    /// The rendered source and launch geometry.
    pub fn rendered(&self) -> &Rendered {
        &self.rendered
    }
}

/// An OpenCL device with an in-order queue.
pub struct OpenCl {
    device: Device,
    context: Context,
    queue: CommandQueue,
    description: String,
    /// The GEMM program per dtype, built on first use.
    gemm: Mutex<HashMap<DType, Arc<Built>>>,
    /// The scratch buffer of split full reductions (partials), grown as needed; one buffer
    /// serves every launch because the queue is in order.
    scratch: Mutex<Option<ClBuffer>>,
    /// The GEMM's layout descriptors (`gemm_descriptor`), one read-only buffer per layout.
    descriptors: Mutex<HashMap<Vec<i64>, Arc<Buffer<i64>>>>,
    pool: Arc<ClPool>,
    debug: AtomicU8,
}

/// The default cap on bytes the buffer pool holds is half the device's global memory, at most
/// this (a CPU device such as pocl reports the host's memory, which the held buffers occupy;
/// the CPU backend's pool has the same limit).
const MAX_POOL_CAP: usize = 2 << 30;

/// The most GEMM layout descriptors kept ([`OpenCl::contraction`]); more clear the cache.
const MAX_DESCRIPTORS: usize = 256;

impl std::fmt::Debug for OpenCl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenCl({})", self.description)
    }
}

impl OpenCl {
    /// The number of OpenCL devices (of every platform); an error when no OpenCL library
    /// loads.
    pub fn device_count() -> Result<usize, BackendError> {
        Ok(all_devices()?.len())
    }

    /// Opens device `index` (counting the devices of every platform in order). Errors: no
    /// OpenCL library, no platform, no such device, or a device without f64 (the precision
    /// contract accumulates float sums in f64).
    pub fn open(index: usize) -> Result<OpenCl, BackendError> {
        let devices = all_devices()?;
        if devices.is_empty() {
            return Err(device_error(
                "opening a device",
                "no OpenCL platform has a device",
            ));
        }
        let n = devices.len();
        let Some((platform, device)) = devices.into_iter().nth(index) else {
            return Err(device_error(
                "opening a device",
                format!("no device {index} ({n} found)"),
            ));
        };
        let name = device.name().unwrap_or_default();
        let version = device.version().unwrap_or_default();
        let driver = device.driver_version().unwrap_or_default();
        let ext = device.extensions().unwrap_or_default();
        for needed in ["cl_khr_fp64", "cl_khr_int64_base_atomics"] {
            if !ext.split_whitespace().any(|e| e == needed) {
                return Err(device_error(
                    "opening a device",
                    format!("{name} lacks {needed}, which the generated kernels need"),
                ));
            }
        }
        let context =
            Context::from_device(&device).map_err(|e| cl_error("creating a context", e))?;
        // Properties 0: an in-order queue, which the buffer pool's reuse relies on.
        let queue = CommandQueue::create_default_with_properties(&context, 0, 0)
            .map_err(|e| cl_error("creating a queue", e))?;
        let memory = device.global_mem_size().unwrap_or(0);
        let cap = usize::try_from(memory / 2).map_or(MAX_POOL_CAP, |c| c.min(MAX_POOL_CAP));
        Ok(OpenCl {
            device,
            context,
            queue,
            description: format!("{platform} / {name} / {version} / driver {driver}"),
            gemm: Mutex::new(HashMap::new()),
            scratch: Mutex::new(None),
            descriptors: Mutex::new(HashMap::new()),
            // Dropping a buffer releases it; OpenCL deletes it once the commands queued
            // that use it are done.
            pool: Arc::new(ClPool::new(cap, drop)),
            debug: AtomicU8::new(0),
        })
    }

    /// Sets the debug level: 4 prints each program's OpenCL C source when it is built, 5 also
    /// the compiler's build log.
    /// At 1 or more the buffer pool's counters are printed when the process exits.
    pub fn set_debug(&self, level: u8) {
        self.debug.store(level, Ordering::Relaxed);
        if level >= 1 {
            self.pool.print_stats_at_exit("opencl");
        }
    }

    /// Bytes held by the buffer pool for reuse.
    pub fn pooled_bytes(&self) -> usize {
        self.pool.held()
    }

    /// Releases the buffers the pool holds for reuse.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }

    /// Sets the most bytes the buffer pool holds for reuse (default: half the device's global
    /// memory, at most 2 GiB); see [`super::pool`].
    pub fn set_pool_cap(&self, bytes: usize) {
        self.pool.set_cap(bytes);
    }

    /// The buffer pool's counters.
    pub fn pool_stats(&self) -> pool::PoolStats {
        self.pool.stats()
    }

    /// Platform, device, OpenCL version and driver version.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Builds a program from source; a failure carries the build log.
    pub fn build_program(&self, source: &str, options: &str) -> Result<Program, String> {
        let mut program = Program::create_from_source(&self.context, source)
            .map_err(|e| format!("creating the program: {e}"))?;
        let debug = self.debug.load(Ordering::Relaxed);
        if debug >= 4 {
            eprintln!("metajit: OpenCL C ({options}):\n{source}");
        }
        if let Err(e) = program.build(&[self.device.id()], options) {
            let log = program.get_build_log(self.device.id()).unwrap_or_default();
            return Err(format!("build failed ({e}); log:\n{log}"));
        }
        if debug >= 5 {
            let log = program.get_build_log(self.device.id()).unwrap_or_default();
            eprintln!("metajit: OpenCL build log:\n{log}");
        }
        Ok(program)
    }

    /// The device binary of a built program (for the on-disk kernel cache).
    pub fn program_binary(&self, program: &Program) -> Result<Vec<u8>, BackendError> {
        let bins = program
            .get_binaries()
            .map_err(|e| cl_error("reading a program binary", e))?;
        bins.into_iter()
            .next()
            .ok_or_else(|| device_error("reading a program binary", "no binary"))
    }

    /// A program rebuilt from [`OpenCl::program_binary`]'s bytes.
    pub fn program_from_binary(&self, bytes: &[u8], options: &str) -> Result<Program, String> {
        // SAFETY: the device is a member of the context (both come from `open`).
        let mut program =
            unsafe { Program::create_from_binary(&self.context, &[self.device.id()], &[bytes]) }
                .map_err(|e| format!("loading a program binary: {e}"))?;
        if let Err(e) = program.build(&[self.device.id()], options) {
            let log = program.get_build_log(self.device.id()).unwrap_or_default();
            return Err(format!("building from a binary failed ({e}); log:\n{log}"));
        }
        Ok(program)
    }

    fn kernels(program: Arc<Program>, names: &[&str]) -> Result<Built, String> {
        let kernels = names
            .iter()
            .map(|n| {
                ClKernel::create(&program, n)
                    .map(Mutex::new)
                    .map_err(|e| format!("creating kernel {n}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Built { program, kernels })
    }

    fn compiled(
        &self,
        kernel: &Kernel,
        name: &str,
        binary: Option<&[u8]>,
    ) -> Result<ClCompiled, BackendError> {
        let rendered = render::render_named(kernel, Dialect::OpenCl, name)?;
        let options = render::compile_options(Dialect::OpenCl);
        let program = match binary {
            Some(b) => self.program_from_binary(b, options),
            None => self.build_program(&rendered.source, options),
        };
        let names = rendered.function_names();
        let built = program
            .and_then(|p| Self::kernels(Arc::new(p), &names))
            .map_err(|message| BackendError::Compile {
                backend: NAME,
                message,
                kernel: kernel.text(),
            })?;
        Ok(ClCompiled {
            params: kernel.clone(),
            name: name.to_string(),
            rendered,
            built,
        })
    }

    /// Compiles several kernels as one program (one build, so one compiler start-up: pocl
    /// takes ~0.5 s per build), one [`ClCompiled`] per kernel, in order. Each one's artifact
    /// holds the whole program's binary.
    pub fn compile_many(&self, kernels: &[&Kernel]) -> Result<Vec<ClCompiled>, BackendError> {
        let rendered = kernels
            .iter()
            .enumerate()
            .map(|(i, k)| render::render_named(k, Dialect::OpenCl, &format!("metajit_k{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&Rendered> = rendered.iter().collect();
        let source = render::program_source(Dialect::OpenCl, &refs);
        let fail = |message: String| BackendError::Compile {
            backend: NAME,
            message,
            kernel: kernels
                .iter()
                .map(|k| k.text())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let program = Arc::new(
            self.build_program(&source, render::compile_options(Dialect::OpenCl))
                .map_err(&fail)?,
        );
        rendered
            .into_iter()
            .zip(kernels)
            .enumerate()
            .map(|(i, (r, k))| {
                let names = r.function_names();
                let built = Self::kernels(program.clone(), &names).map_err(&fail)?;
                Ok(ClCompiled {
                    name: format!("metajit_k{i}"),
                    rendered: r,
                    params: (*k).clone(),
                    built,
                })
            })
            .collect()
    }

    /// Launches entry point `entry` of a compiled kernel (normally [`Backend::launch`] picks
    /// the entry from the sizes; tests run every entry this way). Checks as
    /// [`Backend::launch`].
    ///
    /// # Safety
    ///
    /// As [`Backend::launch`].
    pub unsafe fn launch_entry(
        &self,
        compiled: &ClCompiled,
        kernel: &Kernel,
        entry: usize,
        bufs: &[&ClBuffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        check::launch_args(
            NAME,
            &compiled.params.bufs,
            compiled.params.n_sizes,
            kernel,
            bufs,
            sizes,
        )?;
        let launch = compiled.rendered.launch_entry(entry, sizes);
        let Some(k) = compiled.built.kernels.get(launch.entry) else {
            return Err(device_error("launch", format!("no entry point {entry}")));
        };
        if launch.groups == 0 {
            return Ok(());
        }
        let mems: Vec<cl_mem> = bufs.iter().map(|b| b.raw()).collect();
        let sizes = &sizes[..kernel.n_sizes];
        // SAFETY: the arguments match the entry point's parameters one for one (a cl_mem per
        // buffer parameter, an i64 per size, the ABI of `render`), the buffers were checked
        // against the kernel's declared extents above, and the caller guarantees (as
        // `Backend::launch` requires) that the kernel stays within them.
        unsafe { self.run(k, &mems, None, sizes, launch.groups, launch.local) }
    }

    /// Runs the split form of a full reduction ([`Rendered::split_plan`]) with `parts`
    /// partials (clamped to `1..=MAX_SPLIT_PARTS`); `None` picks them from the sizes. Returns
    /// `Ok(false)` (and runs nothing) when the kernel has no split form, or when `parts` is
    /// `None` and the sizes need no split. Checks as [`Backend::launch`].
    ///
    /// # Safety
    ///
    /// As [`Backend::launch`].
    pub unsafe fn launch_split(
        &self,
        compiled: &ClCompiled,
        kernel: &Kernel,
        bufs: &[&ClBuffer],
        sizes: &[i64],
        parts: Option<u64>,
    ) -> Result<bool, BackendError> {
        let Some(plan) = compiled.rendered.split_plan(sizes, parts) else {
            return Ok(false);
        };
        check::launch_args(
            NAME,
            &compiled.params.bufs,
            compiled.params.n_sizes,
            kernel,
            bufs,
            sizes,
        )?;
        let mut scratch = self
            .scratch
            .lock()
            .map_err(|_| device_error("launch", "the scratch lock is poisoned"))?;
        if scratch
            .as_ref()
            .is_none_or(|b| b.numel * 8 < plan.scratch_bytes)
        {
            // The old buffer, if any, is released once the launches still using it are done
            // (OpenCL defers the deletion of a memory object in use).
            *scratch = Some(self.alloc(DType::I64, plan.scratch_bytes.div_ceil(8))?);
        }
        let Some(scratch) = scratch.as_ref() else {
            return Err(device_error("launch", "no scratch buffer"));
        };
        let mems: Vec<cl_mem> = bufs.iter().map(|b| b.raw()).collect();
        let sizes = &sizes[..kernel.n_sizes];
        let first = compiled.rendered.entries.len();
        for l in &plan.launches {
            let Some(k) = compiled.built.kernels.get(first + l.entry) else {
                return Err(device_error(
                    "launch",
                    format!("no split entry {}", l.entry),
                ));
            };
            // SAFETY: the arguments match the split entry point's parameters (a cl_mem per
            // buffer parameter, the scratch buffer of `plan.scratch_bytes` bytes or more, an
            // i64 per size); the buffers were checked against the kernel's extents above and
            // the caller guarantees that the kernel stays within them. The in-order queue runs
            // the launches (which share the scratch buffer) one after another.
            unsafe { self.run(k, &mems, Some(scratch.raw()), sizes, l.groups, l.local) }?;
        }
        Ok(true)
    }

    /// Sets the arguments and enqueues `groups` groups of `local` threads.
    ///
    /// # Safety
    ///
    /// `mems`, `scratch` (for a split entry point) and `sizes` are the kernel's arguments in
    /// order, and the kernel stays within the buffers.
    unsafe fn run(
        &self,
        k: &Mutex<ClKernel>,
        mems: &[cl_mem],
        scratch: Option<cl_mem>,
        sizes: &[i64],
        groups: u64,
        local: u32,
    ) -> Result<(), BackendError> {
        let k = k
            .lock()
            .map_err(|_| device_error("launch", "a kernel lock is poisoned"))?;
        let global = usize::try_from(groups * u64::from(local))
            .map_err(|_| device_error("launch", "too many threads"))?;
        let mut exec = ExecuteKernel::new(&k);
        for m in mems {
            // SAFETY: a cl_mem argument for a `__global T*` parameter.
            unsafe { exec.set_arg(m) };
        }
        if let Some(m) = &scratch {
            // SAFETY: a cl_mem argument for the `__global u64* scratch` parameter.
            unsafe { exec.set_arg(m) };
        }
        for s in sizes {
            // SAFETY: an i64 argument for a `long` parameter.
            unsafe { exec.set_arg(s) };
        }
        exec.set_global_work_size(global)
            .set_local_work_size(local as usize);
        // SAFETY: every argument is set (above); the caller guarantees the indexing.
        unsafe { exec.enqueue_nd_range(&self.queue) }
            .map_err(|e| cl_error("enqueueing a kernel", e))?;
        Ok(())
    }

    /// The read-only device buffer of a GEMM layout descriptor, created on a layout's first
    /// use with its contents copied from the host by `clCreateBuffer` itself
    /// (`CL_MEM_COPY_HOST_PTR`: no command on the queue, so no wait for it), then kept: a
    /// training run has a few layouts, each used every step. Beyond [`MAX_DESCRIPTORS`]
    /// layouts the cache is cleared (a released buffer lives until the commands using it
    /// are done).
    fn descriptor(&self, desc: Vec<i64>) -> Result<Arc<Buffer<i64>>, BackendError> {
        let mut cache = self
            .descriptors
            .lock()
            .map_err(|_| device_error("GEMM", "the descriptor cache lock is poisoned"))?;
        if let Some(b) = cache.get(&desc) {
            return Ok(b.clone());
        }
        if cache.len() >= MAX_DESCRIPTORS {
            cache.clear();
        }
        let mut host = desc.clone();
        // SAFETY: `host` holds `host.len()` i64s, which clCreateBuffer copies before it
        // returns (CL_MEM_COPY_HOST_PTR); the device only reads the buffer.
        let b = unsafe {
            Buffer::<i64>::create(
                &self.context,
                CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                host.len(),
                host.as_mut_ptr().cast(),
            )
        }
        .map_err(|e| cl_error("creating a GEMM descriptor", e))?;
        let b = Arc::new(b);
        cache.insert(desc, b.clone());
        Ok(b)
    }

    fn gemm_program(&self, dtype: DType) -> Result<Arc<Built>, BackendError> {
        let mut cache = self
            .gemm
            .lock()
            .map_err(|_| device_error("GEMM", "the program cache lock is poisoned"))?;
        if let Some(b) = cache.get(&dtype) {
            return Ok(b.clone());
        }
        let src = gemm_source(dtype);
        let built = self
            .build_program(&src, render::compile_options(Dialect::OpenCl))
            .and_then(|p| Self::kernels(Arc::new(p), &["metajit_gemm"]))
            .map_err(|message| BackendError::Compile {
                backend: NAME,
                message,
                kernel: src.clone(),
            })?;
        let built = Arc::new(built);
        cache.insert(dtype, built.clone());
        Ok(built)
    }
}

/// The GEMM kernel, tiled: a group of 16x16 threads per 16x16 tile of the destination (per free
/// batch entry; a group-stride loop over the tiles), walking the summed batch entries and the
/// contracted axis 16 at a time through two tiles in local memory; every product in the
/// element type, accumulated in f64 (as the reference does) and rounded once. The layout comes
/// in a small i64 buffer: `m n k dst.rs dst.cs lhs.rs lhs.cs rhs.rs rhs.cs n_free n_summed`,
/// then `extent dst lhs rhs` per free batch axis and `extent lhs rhs` per summed axis.
/// `tiles` is the number of (free entry, row tile, column tile) triples.
fn gemm_source(dtype: DType) -> String {
    let t = if dtype == DType::F64 {
        "double"
    } else {
        "float"
    };
    format!(
        "{}typedef {t} T;
#define TILE 16
__kernel void metajit_gemm(__global T* dst, __global const T* lhs, __global const T* rhs,
                           __global const i64* d, i64 tiles) {{
    __local T ta[TILE][TILE + 1];
    __local T tb[TILE][TILE + 1];
    const i64 m = d[0], n = d[1], k = d[2];
    const i64 nfree = d[9], nsum = d[10];
    const int tx = (int)(get_local_id(0) % TILE), ty = (int)(get_local_id(0) / TILE);
    const i64 mt = (m + TILE - 1) / TILE, nt = (n + TILE - 1) / TILE;
    i64 nsb = 1;
    for (i64 a = 0; a < nsum; a++) nsb *= d[11 + 4 * nfree + 3 * a];
    for (i64 tile = (i64)get_group_id(0); tile < tiles; tile += (i64)get_num_groups(0)) {{
        i64 t = tile;
        const i64 j0 = (t % nt) * TILE; t /= nt;
        const i64 i0 = (t % mt) * TILE; t /= mt;
        i64 od = 0, ol = 0, orr = 0;
        for (i64 a = nfree - 1; a >= 0; a--) {{
            const i64 e = d[11 + 4 * a];
            const i64 c = t % e; t /= e;
            od += c * d[12 + 4 * a]; ol += c * d[13 + 4 * a]; orr += c * d[14 + 4 * a];
        }}
        const i64 i = i0 + ty, j = j0 + tx;
        double acc = 0.0;
        for (i64 sb = 0; sb < nsb; sb++) {{
            i64 u = sb, sl = 0, sr = 0;
            for (i64 a = nsum - 1; a >= 0; a--) {{
                const i64 base = 11 + 4 * nfree + 3 * a;
                const i64 c = u % d[base]; u /= d[base];
                sl += c * d[base + 1]; sr += c * d[base + 2];
            }}
            for (i64 l0 = 0; l0 < k; l0 += TILE) {{
                /* Thread (ty, tx) loads lhs[i0 + ty, l0 + tx] and rhs[l0 + ty, j0 + tx]. */
                const i64 la = l0 + tx, lb = l0 + ty;
                ta[ty][tx] = (i < m && la < k) ? lhs[ol + sl + i * d[5] + la * d[6]] : (T)0;
                tb[ty][tx] = (lb < k && j < n) ? rhs[orr + sr + lb * d[7] + j * d[8]] : (T)0;
                barrier(CLK_LOCAL_MEM_FENCE);
                const int lim = (int)min((i64)TILE, k - l0);
                for (int l = 0; l < lim; l++) {{
                    const T p = ta[ty][l] * tb[l][tx];
                    acc += (double)p;
                }}
                barrier(CLK_LOCAL_MEM_FENCE);
            }}
        }}
        if (i < m && j < n) dst[od + i * d[3] + j * d[4]] = (T)acc;
    }}
}}
",
        render::prelude(Dialect::OpenCl)
    )
}

/// The layout buffer of [`gemm_source`], and the number of destination elements.
fn gemm_descriptor(l: &GemmLayout) -> (Vec<i64>, usize) {
    let free: Vec<_> = l.batch.iter().filter(|a| a.dst != 0).collect();
    let summed: Vec<_> = l.batch.iter().filter(|a| a.dst == 0).collect();
    let mut d: Vec<i64> = [
        l.m as isize,
        l.n as isize,
        l.k as isize,
        l.dst.rs,
        l.dst.cs,
        l.lhs.rs,
        l.lhs.cs,
        l.rhs.rs,
        l.rhs.cs,
        free.len() as isize,
        summed.len() as isize,
    ]
    .iter()
    .map(|&x| x as i64)
    .collect();
    for a in &free {
        d.extend([a.extent as i64, a.dst as i64, a.lhs as i64, a.rhs as i64]);
    }
    for a in &summed {
        d.extend([a.extent as i64, a.lhs as i64, a.rhs as i64]);
    }
    let total = free.iter().map(|a| a.extent).product::<usize>() * l.m * l.n;
    (d, total)
}

impl Backend for OpenCl {
    type Compiled = ClCompiled;
    type Buffer = ClBuffer;

    fn name(&self) -> &'static str {
        NAME
    }

    fn compile(&self, kernel: &Kernel) -> Result<ClCompiled, BackendError> {
        self.compiled(kernel, "metajit_kernel", None)
    }

    fn cache_identity(&self) -> String {
        format!(
            "opencl render v{}; {}; options {}",
            render::RENDER_VERSION,
            self.description,
            render::compile_options(Dialect::OpenCl)
        )
    }

    fn alloc(&self, dtype: DType, numel: usize) -> Result<ClBuffer, BackendError> {
        let class = padded_bytes(dtype, numel)
            .and_then(pool::class_of)
            .ok_or_else(|| device_error("alloc", format!("{numel} elements of {dtype}")))?;
        let mem = Lease::alloc(&self.pool, class, |class| {
            // SAFETY: no host pointer is passed; the buffer is `class` bytes of device memory.
            unsafe {
                Buffer::<u8>::create(&self.context, CL_MEM_READ_WRITE, class, ptr::null_mut())
            }
        })
        .map_err(|e| cl_error(&format!("allocating {class} bytes"), e))?;
        Ok(ClBuffer { mem, dtype, numel })
    }

    fn upload(&self, data: &HostData) -> Result<ClBuffer, BackendError> {
        let mut buf = self.alloc(data.dtype(), data.len())?;
        let bytes = crate::buffer::le_bytes(data);
        if !bytes.is_empty() {
            // SAFETY: a blocking write of `bytes.len()` bytes, within the buffer's padded size.
            unsafe {
                self.queue
                    .enqueue_write_buffer(&mut buf.mem, CL_BLOCKING, 0, &bytes, &[])
            }
            .map_err(|e| cl_error("uploading", e))?;
        }
        Ok(buf)
    }

    fn download(&self, buf: &ClBuffer) -> Result<HostData, BackendError> {
        let mut bytes = vec![0u8; buf.numel * buf.dtype.size_in_bytes()];
        if !bytes.is_empty() {
            // SAFETY: a blocking read of `bytes.len()` bytes, within the buffer; the in-order
            // queue runs it after every earlier launch.
            unsafe {
                self.queue
                    .enqueue_read_buffer(&buf.mem, CL_BLOCKING, 0, &mut bytes, &[])
            }
            .map_err(|e| cl_error("downloading", e))?;
        }
        Ok(crate::buffer::host_from_le_bytes(buf.dtype, &bytes))
    }

    fn fill(&self, buf: &mut ClBuffer, value: Scalar) -> Result<(), BackendError> {
        // Cast to the buffer's dtype, as the CPU and CUDA backends do.
        let pattern = crate::buffer::le_bytes(&HostData::filled(value.cast(buf.dtype), 1));
        let size = padded_bytes(buf.dtype, buf.numel).unwrap_or(8);
        // The padded size is a multiple of 8 bytes, so of every pattern size.
        // SAFETY: fills `size` bytes, the whole allocation.
        unsafe {
            self.queue
                .enqueue_fill_buffer(&mut buf.mem, &pattern, 0, size, &[])
        }
        .map_err(|e| cl_error("filling", e))?;
        Ok(())
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.queue
            .finish()
            .map_err(|e| cl_error("synchronizing", e))
    }

    /// The entry points' name prefix (its length as one byte, then the bytes) followed by
    /// the program binary; empty when the driver gives no binary (then `load` fails and the
    /// kernel is compiled again).
    fn artifact(&self, compiled: &ClCompiled) -> Vec<u8> {
        let Ok(binary) = self.program_binary(&compiled.built.program) else {
            return Vec::new();
        };
        let name = compiled.name.as_bytes();
        let Ok(len) = u8::try_from(name.len()) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(1 + name.len() + binary.len());
        out.push(len);
        out.extend_from_slice(name);
        out.extend_from_slice(&binary);
        out
    }

    unsafe fn load(&self, kernel: &Kernel, bytes: &[u8]) -> Result<ClCompiled, BackendError> {
        let bad = || device_error("loading a cached kernel", "malformed artifact");
        let (&len, rest) = bytes.split_first().ok_or_else(bad)?;
        if rest.len() <= len as usize {
            return Err(bad());
        }
        let (name, binary) = rest.split_at(len as usize);
        let name = std::str::from_utf8(name).map_err(|_| bad())?;
        self.compiled(kernel, name, Some(binary))
    }

    unsafe fn launch(
        &self,
        compiled: &ClCompiled,
        kernel: &Kernel,
        bufs: &[&ClBuffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        // SAFETY (both calls): the caller's guarantees of `Backend::launch`.
        if unsafe { self.launch_split(compiled, kernel, bufs, sizes, None) }? {
            return Ok(());
        }
        let entry = compiled.rendered.launch(sizes).entry;
        unsafe { self.launch_entry(compiled, kernel, entry, bufs, sizes) }
    }

    fn contraction(
        &self,
        layout: &GemmLayout,
        dtype: DType,
        dst: &mut ClBuffer,
        lhs: &ClBuffer,
        rhs: &ClBuffer,
    ) -> Result<(), BackendError> {
        check::contraction_args(NAME, layout, dtype, dst, lhs, rhs)?;
        let (desc, total) = gemm_descriptor(layout);
        if total == 0 {
            return Ok(());
        }
        let built = self.gemm_program(dtype)?;
        let d = self.descriptor(desc)?;
        let free = total / (layout.m * layout.n);
        let tiles = (free * layout.m.div_ceil(16) * layout.n.div_ceil(16)) as u64;
        let groups = tiles.min(render::MAX_GROUPS);
        let mems = [dst.raw(), lhs.raw(), rhs.raw(), d.get()];
        // SAFETY: `check::contraction_args` verified that every offset the layout reaches lies
        // within its buffer and that dst's elements are written once; the kernel reads and
        // writes only rows < m, columns < n and contracted indices < k; the arguments match
        // `gemm_source`'s parameters. `d` is held until the launch is enqueued (and OpenCL
        // keeps a released buffer until the commands that use it are done), so nothing waits
        // for the queue.
        unsafe { self.run(&built.kernels[0], &mems, None, &[tiles as i64], groups, 256) }
    }
}
