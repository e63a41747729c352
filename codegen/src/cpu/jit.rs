//! Compiling kernels to relocation-free machine code, loading it into executable memory, and
//! running it (on one thread or split across rayon's pool).
//!
//! [`compile`] lowers a [`Kernel`] ([`super::lower`]), compiles it with Cranelift for the host
//! (`opt_level = speed`, the host's ISA flags), refuses code with relocations, and maps the bytes
//! executable. The bytes ([`CompiledKernel::code_bytes`]) depend only on the kernel, the host's
//! ISA flags ([`target_description`]) and [`CODEGEN_VERSION`]; the cache stores them and reloads
//! them with [`CompiledKernel::from_bytes`] without compiling.
//!
//! # The calling convention
//!
//! A kernel is `extern "C" fn(bufs, sizes, start, end, helpers)` ([`KernelFn`]): `bufs[k]` is
//! the base address of buffer parameter `k` (row-major elements of its dtype; bool as bytes 0/1),
//! `sizes[s]` runtime parameter `s` (extents, and the bits of `Param` scalars and `Random`
//! seeds), `start..end` the range of loop 0 ([`Kernel::split_extent`]; ignored by kernels
//! without one), `helpers` the table of [`Helper`] functions (followed by the address of
//! [`math::const_table`], at [`MATH_CONSTS_SLOT`]).
//!
//! # The helper table
//!
//! Machine code may not contain addresses (the bytes are cached across processes), so calls to
//! Rust go through a table passed at every call, in the order of [`Helper`]'s variants (the
//! order is part of [`CODEGEN_VERSION`]). Each entry is an `extern "C"` wrapper around the
//! interpreter's own scalar functions ([`metajit_metaops::interp::eval_unary`],
//! [`eval_binary`], [`Scalar::cast`], `half`), so what the
//! helpers compute equals the interpreter bit for bit.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cranelift_codegen::ir::types::{F32, F64, I32, I64};
use cranelift_codegen::ir::{Function, Type};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, control::ControlPlane};
use half::f16;
use memmap2::{Mmap, MmapMut};
use metajit_metaops::interp::eval_reduce_combine;
use metajit_metaops::interp::{eval_binary, eval_unary};
use metajit_metaops::kernel::{BufParam, Extent, Inst, Kernel};
use metajit_metaops::{BinaryOp, DType, HostData, ReduceOp, Scalar, UnaryOp};

use super::lower;
use super::math::{self, MathFn};
use crate::buffer::Buffer;

/// The version of the code format: bump it whenever generated code may change for the same
/// kernel (lowering, helper table order, Cranelift version), so cached bytes are not reused.
/// 2: the sizes array carries each entry's division constants after the entries.
/// 3: split full reductions read two more words after those.
/// 4: plain f32 sums unroll four times and accumulate with fused multiply-adds by 1.
/// 5: f32 transcendentals: new exp scaling, sigmoid and tanh; vector loops load their constants
/// from `math::const_table` (its address after the helpers).
/// 6: scalar float selects (`where`, max/min) select the bits with integer moves, no branch.
/// 7: masked reads (padding, windows) vectorise, with guarded vector copies.
/// 8: f32 `sin`/`cos`: lanes beyond `math::sin_cos_inline_limit` take an exact reduction.
pub const CODEGEN_VERSION: u32 = 8;

/// The native signature of every compiled kernel.
pub type KernelFn = unsafe extern "C" fn(
    bufs: *const *mut u8,
    sizes: *const i64,
    start: i64,
    end: i64,
    helpers: *const usize,
);

/// Least work per thread before [`CompiledKernel::run`] splits loop 0 across threads: in
/// iterations of a simple body (the product of the loop extents, each phase weighted by its
/// instruction count over [`SIMPLE_BODY`]).
pub const PARALLEL_GRAIN: i64 = 1 << 15;

/// The instruction count of a simple element-wise body (indices, a load or two, an op, the
/// offset of the store): the unit of [`PARALLEL_GRAIN`].
pub const SIMPLE_BODY: usize = 12;

/// The most memory that the private copies of one privatised launch may take (see
/// [`CompiledKernel::run`]).
pub const PRIVATE_LIMIT_BYTES: usize = 256 << 20;

/// Why a kernel did not compile or load.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The kernel breaks the kernel IR's rules.
    #[error("{error}\n--- kernel ---\n{kernel}")]
    Invalid {
        /// What is wrong.
        error: lower::InvalidKernel,
        /// The kernel's text.
        kernel: String,
    },
    /// Cranelift failed (a metajit bug: the IR is attached).
    #[error("cranelift failed: {message}\n--- kernel ---\n{kernel}\n--- clif ---\n{clif}")]
    Cranelift {
        /// Cranelift's error.
        message: String,
        /// The kernel's text.
        kernel: String,
        /// The Cranelift IR.
        clif: String,
    },
    /// The code refers to addresses outside itself (a libcall the host ISA lacks an
    /// instruction for), so it could not be cached as bytes.
    #[error(
        "generated code has {count} relocation(s) ({first}); host ISA: {isa}\n--- kernel ---\n{kernel}"
    )]
    Relocations {
        /// How many.
        count: usize,
        /// The first, as text.
        first: String,
        /// [`target_description`].
        isa: String,
        /// The kernel's text.
        kernel: String,
    },
    /// The host is not supported by Cranelift.
    #[error("host ISA: {0}")]
    Host(String),
    /// Mapping executable memory failed.
    #[error("executable memory: {0}")]
    Memory(#[from] std::io::Error),
    /// Code bytes to load were empty.
    #[error("no code bytes to load")]
    Empty,
}

/// What to produce besides the code.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompileOptions {
    /// Keep the Cranelift IR text ([`CompiledKernel::clif`]; `METAJIT_DEBUG=4`).
    pub clif: bool,
    /// Keep the disassembly ([`CompiledKernel::disasm`]; `METAJIT_DEBUG=5`).
    pub disasm: bool,
    /// Run Cranelift's IR verifier (always on in debug builds).
    pub verify: bool,
}

/// A compiled kernel: its machine code in executable memory, and what [`CompiledKernel::run`]
/// needs to know of the kernel to split it across threads.
#[derive(Debug)]
pub struct CompiledKernel {
    code: Mmap,
    len: usize,
    entry: KernelFn,
    launch: Launch,
    clif: Option<String>,
    disasm: Option<String>,
    compile_time: Duration,
}

/// The parts of a kernel that launching needs.
#[derive(Clone, Debug)]
struct Launch {
    n_bufs: usize,
    n_sizes: usize,
    split: Option<Extent>,
    parallel: bool,
    /// Every loop's extent (outer loops, then each phase's inner loops).
    outer: Vec<Extent>,
    inner: Vec<Vec<Extent>>,
    /// Per phase, how many simple element-wise bodies one iteration costs: its instruction
    /// count over [`SIMPLE_BODY`] (at least 1), so that the split considers a max-pool
    /// window's or a gradient's heavy body as the work it is.
    weight: Vec<i64>,
    /// The buffer parameters (dtypes and declared extents).
    bufs: Vec<BufParam>,
    /// For a kernel that is not `parallel` but whose every store into an output buffer combines
    /// with one op per buffer, and which never loads its output buffers: those buffers and
    /// their ops. Loop 0 may then be split with a private copy of each per chunk.
    private: Option<Vec<(usize, ReduceOp)>>,
    /// For a reduction to one value ([`lower::split_reduce`]): its op and whether its
    /// partials are f64. Its reduced loop may then be split in two levels.
    split_reduce: Option<(ReduceOp, bool)>,
}

impl Launch {
    fn of(k: &Kernel) -> Launch {
        Launch {
            n_bufs: k.bufs.len(),
            n_sizes: k.n_sizes,
            split: k.split_extent(),
            parallel: k.parallel,
            outer: k.outer.clone(),
            inner: k.phases.iter().map(|p| p.inner.clone()).collect(),
            weight: k
                .phases
                .iter()
                .map(|p| (p.body.len() / SIMPLE_BODY).max(1) as i64)
                .collect(),
            bufs: k.bufs.clone(),
            private: privatisable(k),
            split_reduce: lower::split_reduce(k),
        }
    }
}

/// The output buffers of a non-parallel kernel and the op every store into each combines with,
/// when privatising them is sound: every store into an output combines, with one op per buffer,
/// and no phase loads an output buffer (a chunk would see only its own partial values).
fn privatisable(k: &Kernel) -> Option<Vec<(usize, ReduceOp)>> {
    if k.parallel || k.split_extent().is_none() {
        return None;
    }
    let mut ops: Vec<(usize, ReduceOp)> = Vec::new();
    for ph in &k.phases {
        let loads_output = ph.body.iter().any(
            |(inst, _)| matches!(inst, Inst::Load { buf, .. } if k.bufs.get(*buf).is_none_or(|b| b.output)),
        );
        if loads_output {
            return None;
        }
        for st in ph.kind.stores() {
            let op = st.combine?;
            match ops.iter().find(|(b, _)| *b == st.buf) {
                Some((_, o)) if *o != op => return None,
                Some(_) => {}
                None => ops.push((st.buf, op)),
            }
        }
    }
    (!ops.is_empty()).then_some(ops)
}

fn extent_value(e: Extent, sizes: &[i64]) -> i64 {
    match e {
        Extent::Size(s) => sizes[s],
        Extent::Const(c) => c as i64,
    }
}

/// The host ISA (with or without Cranelift's verifier), built once.
fn host_isa(verify: bool) -> Result<Arc<dyn TargetIsa>, CompileError> {
    static ISA: [OnceLock<Result<OwnedTargetIsa, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    ISA[verify as usize]
        .get_or_init(|| {
            let mut flags = settings::builder();
            let set = |f: &mut settings::Builder, k: &str, v: &str| {
                f.set(k, v).map_err(|e| format!("setting {k}={v}: {e}"))
            };
            set(&mut flags, "opt_level", "speed")?;
            set(
                &mut flags,
                "enable_verifier",
                if verify { "true" } else { "false" },
            )?;
            set(&mut flags, "enable_probestack", "false")?;
            set(&mut flags, "unwind_info", "false")?;
            let builder = cranelift_native::builder().map_err(str::to_string)?;
            builder
                .finish(settings::Flags::new(flags))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(CompileError::Host)
}

/// The target as it matters for cached code: Cranelift version, [`CODEGEN_VERSION`], a
/// fingerprint of the code generator's sources and exact Cranelift versions (`build.rs`), triple,
/// the compile options (Cranelift's shared flags but the verifier, which does not change code)
/// and the host's ISA flags — the cache key's non-IR part.
pub fn target_description() -> String {
    match host_isa(false) {
        Ok(isa) => {
            let mut s = format!(
                "cranelift-0.135 v{CODEGEN_VERSION} source={} {}",
                env!("METAJIT_CODEGEN_FINGERPRINT"),
                isa.triple()
            );
            for f in isa.flags().iter() {
                if f.name != "enable_verifier" {
                    s.push_str(&format!(" {f}"));
                }
            }
            for f in isa.isa_flags() {
                s.push_str(&format!(" {f}"));
            }
            s
        }
        Err(e) => format!("unsupported host: {e}"),
    }
}

/// The Cranelift IR of a kernel, before optimisation (`METAJIT_DEBUG=4`).
pub fn clif_text(kernel: &Kernel) -> Result<String, CompileError> {
    let isa = host_isa(false)?;
    Ok(lower_kernel(kernel, &*isa)?.display().to_string())
}

fn lower_kernel(kernel: &Kernel, isa: &dyn TargetIsa) -> Result<Function, CompileError> {
    lower::lower(kernel, isa).map_err(|error| CompileError::Invalid {
        error,
        kernel: kernel.text(),
    })
}

/// Compiles a kernel with default options.
pub fn compile(kernel: &Kernel) -> Result<CompiledKernel, CompileError> {
    compile_with(kernel, &CompileOptions::default())
}

/// Compiles a kernel.
pub fn compile_with(
    kernel: &Kernel,
    opts: &CompileOptions,
) -> Result<CompiledKernel, CompileError> {
    let t0 = Instant::now();
    let isa = host_isa(opts.verify || cfg!(debug_assertions))?;
    let func = lower_kernel(kernel, &*isa)?;
    let clif = opts.clif.then(|| func.display().to_string());
    let mut ctx = Context::for_function(func);
    ctx.set_disasm(opts.disasm);
    let compiled = match ctx.compile(&*isa, &mut ControlPlane::default()) {
        Ok(c) => c,
        Err(e) => {
            let message = format!("{:?}", e.inner);
            let clif = e.func.display().to_string();
            return Err(CompileError::Cranelift {
                message,
                kernel: kernel.text(),
                clif,
            });
        }
    };
    let relocs = compiled.buffer.relocs();
    if !relocs.is_empty() {
        return Err(CompileError::Relocations {
            count: relocs.len(),
            first: format!("{:?}", relocs[0]),
            isa: target_description(),
            kernel: kernel.text(),
        });
    }
    let disasm = compiled.vcode.clone();
    let mut ck = map_code(kernel, compiled.code_buffer())?;
    ck.clif = clif;
    ck.disasm = disasm;
    ck.compile_time = t0.elapsed();
    Ok(ck)
}

/// Copies code into fresh executable memory.
fn map_code(kernel: &Kernel, bytes: &[u8]) -> Result<CompiledKernel, CompileError> {
    if bytes.is_empty() {
        return Err(CompileError::Empty);
    }
    let mut map = MmapMut::map_anon(bytes.len())?;
    map.copy_from_slice(bytes);
    // x86-64 keeps instruction fetch coherent with these stores; other hosts would need an
    // instruction-cache flush here.
    let code = map.make_exec()?;
    // SAFETY: `code` holds a function with the `KernelFn` signature at offset 0 (Cranelift
    // compiled it for that signature, or the caller of `from_bytes` vouched for it), and it
    // stays mapped as long as `entry` can be called: both live in the same `CompiledKernel`.
    let entry = unsafe { std::mem::transmute::<*const u8, KernelFn>(code.as_ptr()) };
    Ok(CompiledKernel {
        code,
        len: bytes.len(),
        entry,
        launch: Launch::of(kernel),
        clif: None,
        disasm: None,
        compile_time: Duration::ZERO,
    })
}

/// Raw pointers made sendable for the chunks of one parallel launch.
#[derive(Clone, Copy)]
struct LaunchPtrs {
    bufs: *const *mut u8,
    sizes: *const i64,
    helpers: *const usize,
}

/// Runs `task(0)` on the calling thread and `task(1)`..`task(n - 1)` on rayon's pool, and
/// returns when all are done. The caller takes part rather than blocking while the pool runs
/// every task (as `rayon::scope` from outside the pool does): measured on a 2-core machine,
/// the worker woken for the second task was then often scheduled on the core already busy with
/// the first, and a launch split in two took as long as one call. (Workers that spin between
/// launches instead of sleeping, as OpenMP's do, were tried for the LeNet-5 step: no
/// measurable gain, 6.0 vs 6.1 ms.)
fn on_threads(n: usize, task: impl Fn(usize) + Sync) {
    let task = &task;
    rayon::in_place_scope(|s| {
        for c in 1..n {
            s.spawn(move |_| task(c));
        }
        task(0);
    });
}

/// A buffer address made sendable for the chunks of a privatised launch.
#[derive(Clone, Copy)]
struct SendPtr(*mut u8);

impl SendPtr {
    /// The address (a method, so that closures capture the whole sendable wrapper).
    fn get(self) -> *mut u8 {
        self.0
    }
}
// SAFETY: used only inside `CompiledKernel::run_privatised`, which joins every task before it
// returns; what each task writes through it is disjoint (see there).
unsafe impl Send for SendPtr {}
// SAFETY: as for Send.
unsafe impl Sync for SendPtr {}

/// A read-only address made sendable for the tasks of a privatised launch.
#[derive(Clone, Copy)]
struct SendConstPtr<T = i64>(*const T);
// SAFETY: only read, by tasks joined before `run_privatised` returns; nothing writes what it
// points to meanwhile.
unsafe impl<T> Send for SendConstPtr<T> {}
// SAFETY: as for Send.
unsafe impl<T> Sync for SendConstPtr<T> {}

/// `dst[i] = op(dst[i], src[i])` for `n` elements of `dt`: the interpreter's combine
/// ([`eval_reduce_combine`]), with a direct path for f32.
///
/// # Safety
///
/// `dst` and `src` are valid for `n` elements of `dt` (reads; `dst` also writes), aligned for
/// it, and do not overlap.
unsafe fn combine_into(op: ReduceOp, dt: DType, dst: *mut u8, src: *const u8, n: usize) {
    if n == 0 {
        return;
    }
    if dt == DType::F32 {
        // SAFETY: the caller's contract, for f32.
        let (d, s) = unsafe {
            (
                std::slice::from_raw_parts_mut(dst.cast::<f32>(), n),
                std::slice::from_raw_parts(src.cast::<f32>(), n),
            )
        };
        // One loop per op, each inlined (and vectorised by LLVM). The interpreter's float rules
        // (interp.rs `float_binary`): max/min keep the first NaN.
        fn fold(d: &mut [f32], s: &[f32], f: impl Fn(f32, f32) -> f32) {
            for (a, b) in d.iter_mut().zip(s) {
                *a = f(*a, *b);
            }
        }
        match op {
            ReduceOp::Sum => fold(d, s, |a, b| a + b),
            ReduceOp::Prod => fold(d, s, |a, b| a * b),
            ReduceOp::Max => fold(d, s, |a, b| if a > b || a.is_nan() { a } else { b }),
            ReduceOp::Min => fold(d, s, |a, b| if a < b || a.is_nan() { a } else { b }),
            ReduceOp::And | ReduceOp::Or => unreachable!("and/or take bools"),
        }
        return;
    }
    let size = dt.size_in_bytes();
    // SAFETY: the caller's contract, as bytes.
    let (d, s) = unsafe {
        (
            std::slice::from_raw_parts_mut(dst, n * size),
            std::slice::from_raw_parts(src, n * size),
        )
    };
    let read = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..size].copy_from_slice(b);
        Scalar::from_bits(u64::from_le_bytes(w), dt)
    };
    for (a, b) in d.chunks_exact_mut(size).zip(s.chunks_exact(size)) {
        let r = eval_reduce_combine(op, read(a), read(b));
        a.copy_from_slice(&r.to_bits().to_le_bytes()[..size]);
    }
}

// SAFETY: the pointers are only read during `CompiledKernel::run`, which outlives every chunk
// (`on_threads` joins them). The buffers they lead to are written by several threads at once,
// which is sound because the kernel is `parallel`: distinct iterations of loop 0 write
// distinct elements, and each chunk runs distinct iterations.
unsafe impl Send for LaunchPtrs {}
// SAFETY: as for Send; the chunks only read the pointer arrays.
unsafe impl Sync for LaunchPtrs {}

impl CompiledKernel {
    /// Loads code produced by [`CompiledKernel::code_bytes`] for the same kernel, without
    /// compiling.
    ///
    /// # Safety
    ///
    /// `code` must be the bytes of `code_bytes()` of this very kernel, compiled on a host with
    /// the same [`target_description`]: they are executed as they are.
    pub unsafe fn from_bytes(kernel: &Kernel, code: &[u8]) -> Result<CompiledKernel, CompileError> {
        map_code(kernel, code)
    }

    /// The machine code (relocation-free; see the module documentation).
    pub fn code_bytes(&self) -> &[u8] {
        &self.code[..self.len]
    }

    /// The Cranelift IR, when compiled with [`CompileOptions::clif`].
    pub fn clif(&self) -> Option<&str> {
        self.clif.as_deref()
    }

    /// The disassembly, when compiled with [`CompileOptions::disasm`].
    pub fn disasm(&self) -> Option<&str> {
        self.disasm.as_deref()
    }

    /// How long lowering, compiling and mapping took (zero for [`CompiledKernel::from_bytes`]).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// The buffer parameters of the kernel this code was compiled (or loaded) for.
    pub fn params(&self) -> &[BufParam] {
        &self.launch.bufs
    }

    /// The number of runtime parameters the code reads.
    pub fn n_sizes(&self) -> usize {
        self.launch.n_sizes
    }

    /// Whether a launch with these sizes and threads would split loop 0 with private copies of
    /// the outputs (see [`CompiledKernel::run`]).
    pub fn privatises(&self, sizes: &[i64], threads: usize) -> bool {
        !self.launch.parallel
            && self
                .split_len(sizes)
                .is_some_and(|split| self.chunks(sizes, split, threads) > 1)
    }

    /// The extent of loop 0 for these sizes (`None`: the kernel has no loop to split).
    pub fn split_len(&self, sizes: &[i64]) -> Option<i64> {
        self.launch.split.map(|e| extent_value(e, sizes))
    }

    /// Runs the kernel over the whole of loop 0, split into up to `threads` chunks on rayon's
    /// global pool when there is at least [`PARALLEL_GRAIN`] work per chunk and either
    /// - the kernel is `parallel`: each chunk runs its iterations of loop 0 in place; or
    /// - the kernel is not, but all its stores into each output combine with one op and it
    ///   never loads its outputs (a scatter whose writes may collide): chunk 0 combines into the
    ///   output, every other chunk into a private copy filled with the op's identity, and the
    ///   copies are then folded into the output in chunk order. This reassociates float sums
    ///   and products (as vectorised Reduce phases do); max, min, and, or and integer results
    ///   are the same as on one thread. It is done only where the copies are worth it: at most
    ///   as many elements in all copies as iterations, and [`PRIVATE_LIMIT_BYTES`] of memory.
    ///
    /// A reduction to one value ([`lower::split_reduce`]: one f32 sum, prod, max or min phase,
    /// then a store without loops) has no loop 0 to split; its reduced loop 0 is split in two
    /// levels instead, under the same [`PARALLEL_GRAIN`]: each chunk folds its part into a
    /// partial (f64 for sums and products, not rounded; f32 for max/min), the partials are
    /// combined in chunk order, and one more call rounds the result and runs the store. Sums and
    /// products are so reassociated in f64 (the rounded f32 is in practice the interpreter's);
    /// max and min are unchanged.
    ///
    /// # Panics
    ///
    /// If `bufs` or `sizes` do not have the kernel's number of buffers and sizes.
    ///
    /// # Safety
    ///
    /// `bufs[k]` must point to a live buffer of buffer parameter `k`'s dtype holding the number
    /// of elements its declared extents give for these `sizes` (at least one), not accessed by
    /// anyone else during the call; buffers the kernel writes must be writable and must not
    /// overlap buffers it reads, except where it is the same parameter.
    pub unsafe fn run(&self, bufs: &[*mut u8], sizes: &[i64], threads: usize) {
        let l = &self.launch;
        assert_eq!(bufs.len(), l.n_bufs, "kernel takes {} buffers", l.n_bufs);
        assert!(sizes.len() >= l.n_sizes, "kernel takes {} sizes", l.n_sizes);
        let ext = with_divisors(&sizes[..l.n_sizes]);
        let sizes = ext.as_slice();
        if let Some((op, wide)) = l.split_reduce {
            let n0 = extent_value(l.inner[0][0], sizes);
            let chunks = (self.work(sizes) / PARALLEL_GRAIN)
                .clamp(1, (threads.max(1) as i64).min(n0.max(1)));
            if chunks > 1 {
                // SAFETY: the caller's contract.
                unsafe { self.run_split_reduce(bufs, sizes, n0, chunks, op, wide) };
                return;
            }
        }
        let Some(split) = self.split_len(sizes) else {
            // SAFETY: the caller's contract; start/end are ignored by such kernels.
            unsafe { self.enter(bufs, sizes, 0, 0) };
            return;
        };
        let chunks = self.chunks(sizes, split, threads);
        if chunks <= 1 {
            // SAFETY: the caller's contract, over the whole of loop 0.
            unsafe { self.enter(bufs, sizes, 0, split) };
            return;
        }
        if !l.parallel {
            // SAFETY: the caller's contract; `chunks` > 1 only for privatisable kernels.
            unsafe { self.run_privatised(bufs, sizes, split, chunks, threads) };
            return;
        }
        let ptrs = LaunchPtrs {
            bufs: bufs.as_ptr(),
            sizes: sizes.as_ptr(),
            helpers: helper_table().as_ptr(),
        };
        let bound = |c: i64| chunk_bound(split, c, chunks);
        let entry = self.entry;
        on_threads(chunks as usize, |c| {
            let (p, c) = (ptrs, c as i64);
            // SAFETY: the caller's contract, for chunk `c`: its iterations of loop 0 write
            // elements no other chunk writes (the kernel is `parallel`), and `run` outlives
            // every chunk (`on_threads` joins them).
            unsafe { entry(p.bufs, p.sizes, bound(c), bound(c + 1), p.helpers) };
        });
    }

    /// The two-level launch of a [`lower::split_reduce`] kernel: chunk `c` folds its part of
    /// the reduced loop 0 into a partial (f64 for sums and products, unrounded), the partials
    /// are combined in chunk order, and one last call rounds the result and stores it.
    ///
    /// # Safety
    ///
    /// As [`CompiledKernel::run`]; `ext` is [`with_divisors`] of the sizes.
    unsafe fn run_split_reduce(
        &self,
        bufs: &[*mut u8],
        ext: &[i64],
        n0: i64,
        chunks: i64,
        op: ReduceOp,
        wide: bool,
    ) {
        let n = self.launch.n_sizes;
        let ptrs = LaunchPtrs {
            bufs: bufs.as_ptr(),
            sizes: ext.as_ptr(),
            helpers: helper_table().as_ptr(),
        };
        let bound = |c: i64| chunk_bound(n0, c, chunks);
        let entry = self.entry;
        let partials: Vec<std::sync::atomic::AtomicI64> = (0..chunks)
            .map(|_| std::sync::atomic::AtomicI64::new(0))
            .collect();
        on_threads(chunks as usize, |c| {
            let p = ptrs;
            // SAFETY: `ext` has 3n + 2 words (the caller's contract), read while `run` lasts.
            let mut mine = unsafe { std::slice::from_raw_parts(p.sizes, 3 * n + 2) }.to_vec();
            mine[3 * n] = 1;
            let c = c as i64;
            // SAFETY: the caller's contract; a part only reads buffers (the Reduce phase) and
            // writes its own copy of the sizes array.
            unsafe { entry(p.bufs, mine.as_ptr(), bound(c), bound(c + 1), p.helpers) };
            partials[c as usize].store(mine[3 * n + 1], std::sync::atomic::Ordering::Relaxed);
        });
        let value = |bits: i64| {
            if wide {
                Scalar::F64(f64::from_bits(bits as u64))
            } else {
                Scalar::F32(f32::from_bits(bits as u32))
            }
        };
        let mut acc = value(partials[0].load(std::sync::atomic::Ordering::Relaxed));
        for p in &partials[1..] {
            acc = eval_reduce_combine(op, acc, value(p.load(std::sync::atomic::Ordering::Relaxed)));
        }
        let mut fin = ext.to_vec();
        fin[3 * n] = 2;
        fin[3 * n + 1] = match acc {
            Scalar::F64(v) => v.to_bits() as i64,
            Scalar::F32(v) => v.to_bits() as i64,
            _ => unreachable!("f32 or f64 partials"),
        };
        // SAFETY: the caller's contract; the finish reads the partial from `fin`.
        unsafe { self.enter(bufs, &fin, 0, 0) };
    }

    /// The privatised parallel launch of a kernel that [`privatisable`] accepted (see
    /// [`CompiledKernel::run`]).
    ///
    /// # Safety
    ///
    /// As [`CompiledKernel::run`]; the kernel's `private` list is set.
    unsafe fn run_privatised(
        &self,
        bufs: &[*mut u8],
        sizes: &[i64],
        split: i64,
        chunks: i64,
        threads: usize,
    ) {
        let l = &self.launch;
        let Some(private) = &l.private else {
            unreachable!("chunks() splits a kernel that is not parallel only when privatisable")
        };
        // (buffer, op, dtype, elements) of each privatised output.
        let outs: Vec<(usize, ReduceOp, DType, usize)> = private
            .iter()
            .map(|&(b, op)| {
                let p = &l.bufs[b];
                (b, op, p.dtype, p.numel(sizes).unwrap_or(0))
            })
            .collect();
        let bound = |c: i64| chunk_bound(split, c, chunks);
        let base: Vec<SendPtr> = bufs.iter().map(|&p| SendPtr(p)).collect();
        let (base, outs) = (&base, &outs);
        let sizes_ptr = SendConstPtr(sizes.as_ptr());
        let entry = self.entry;
        // Chunk 0 combines into the outputs; chunk c > 0 into its own copies.
        let copies: Vec<Mutex<Vec<Buffer>>> = (0..chunks).map(|_| Mutex::default()).collect();
        on_threads(chunks as usize, |c| {
            let mut mine: Vec<Buffer> = Vec::new();
            let mut ptrs: Vec<*mut u8> = base.iter().map(|p| p.get()).collect();
            if c > 0 {
                for &(b, op, dt, n) in outs {
                    let mut copy = Buffer::new(dt, n);
                    copy.fill(op.identity(dt));
                    ptrs[b] = copy.as_mut_ptr();
                    mine.push(copy);
                }
            }
            let (sizes, c) = (sizes_ptr, c as i64);
            // SAFETY: the caller's contract for the inputs; the outputs of chunk c > 0 are its
            // own copies, of the outputs' dtypes and lengths; chunk 0 alone writes the outputs
            // themselves. Nothing else writes what any chunk reads (the kernel loads no
            // output).
            unsafe {
                entry(
                    ptrs.as_ptr(),
                    sizes.0,
                    bound(c),
                    bound(c + 1),
                    helper_table().as_ptr(),
                )
            };
            *copies[c as usize].lock().unwrap_or_else(|e| e.into_inner()) = mine;
        });
        let copies: Vec<Vec<Buffer>> = copies
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        // Fold the copies into the outputs in chunk order, element ranges in parallel.
        for (o, &(b, op, dt, n)) in outs.iter().enumerate() {
            let size = dt.size_in_bytes();
            let srcs: Vec<SendConstPtr<u8>> = copies[1..]
                .iter()
                .map(|c| SendConstPtr(c[o].as_ptr()))
                .collect();
            let pieces = threads.max(1).min(n.max(1));
            let dst = base[b];
            on_threads(pieces, |piece| {
                let (lo, hi) = (n * piece / pieces, n * (piece + 1) / pieces);
                for src in &srcs {
                    // SAFETY: `dst` holds `n` elements of `dt` (the caller's contract) and each
                    // copy too; pieces are disjoint element ranges, and the chunks are done.
                    unsafe {
                        combine_into(
                            op,
                            dt,
                            dst.get().add(lo * size),
                            src.0.add(lo * size),
                            hi - lo,
                        )
                    };
                }
            });
        }
    }

    /// How many chunks `run` splits loop 0 (of extent `split`) into.
    /// The launch's work in iterations of a simple body ([`PARALLEL_GRAIN`]'s unit): the
    /// outer iterations times each phase's inner iterations weighted by its body size.
    fn work(&self, sizes: &[i64]) -> i64 {
        let l = &self.launch;
        let outer: i64 = l
            .outer
            .iter()
            .map(|e| extent_value(*e, sizes).max(1))
            .product();
        let inner: i64 = l
            .inner
            .iter()
            .zip(&l.weight)
            .map(|(p, &w)| {
                p.iter()
                    .map(|e| extent_value(*e, sizes).max(1))
                    .fold(w, |a, b| a.saturating_mul(b))
            })
            .fold(0i64, |a, b| a.saturating_add(b))
            .max(1);
        outer.saturating_mul(inner)
    }

    fn chunks(&self, sizes: &[i64], split: i64, threads: usize) -> i64 {
        let l = &self.launch;
        if threads <= 1 || split < 2 || !(l.parallel || l.private.is_some()) {
            return 1;
        }
        let work = self.work(sizes);
        let chunks = (work / PARALLEL_GRAIN).clamp(1, (threads as i64).min(split));
        let Some(private) = l.private.as_ref().filter(|_| !l.parallel) else {
            return chunks;
        };
        // Each further chunk fills and folds a copy of every privatised output: worth it while
        // the copies hold no more elements than there are iterations.
        let (mut elems, mut bytes) = (0usize, 0usize);
        for &(b, _) in private {
            let p = &l.bufs[b];
            let Some(n) = p.numel(sizes) else { return 1 };
            elems = elems.saturating_add(n);
            bytes = bytes.saturating_add(n.saturating_mul(p.dtype.size_in_bytes()));
        }
        let mut c = chunks;
        while c > 1
            && ((elems as i64).saturating_mul(c - 1) > work
                || bytes.saturating_mul(c as usize - 1) > PRIVATE_LIMIT_BYTES)
        {
            c -= 1;
        }
        c
    }

    /// One call over `start..end` of loop 0, on this thread.
    ///
    /// # Safety
    ///
    /// As [`CompiledKernel::run`], for the iterations `start..end`; `bufs` and `sizes` must have
    /// the kernel's lengths.
    pub unsafe fn call_range(&self, bufs: &[*mut u8], sizes: &[i64], start: i64, end: i64) {
        let n = self.launch.n_sizes;
        assert!(bufs.len() == self.launch.n_bufs && sizes.len() >= n);
        let ext = with_divisors(&sizes[..n]);
        // SAFETY: the caller's contract, with the sizes array the code expects.
        unsafe { self.enter(bufs, &ext, start, end) }
    }

    /// One call over `start..end` with a sizes array from [`with_divisors`].
    ///
    /// # Safety
    ///
    /// As [`CompiledKernel::call_range`], and `ext` is `with_divisors` of the sizes.
    unsafe fn enter(&self, bufs: &[*mut u8], ext: &[i64], start: i64, end: i64) {
        debug_assert!(ext.len() == 3 * self.launch.n_sizes + 2);
        // SAFETY: `entry` points into `self.code`, which is mapped executable while `self`
        // lives; the code reads `bufs[..n_bufs]`, `ext` (sizes and their division constants)
        // and the helper table, and touches buffer memory only as the caller's contract allows.
        unsafe {
            (self.entry)(
                bufs.as_ptr(),
                ext.as_ptr(),
                start,
                end,
                helper_table().as_ptr(),
            )
        }
    }
}

/// Where chunk `c` of `chunks` equal parts of `0..len` begins.
fn chunk_bound(len: i64, c: i64, chunks: i64) -> i64 {
    (len as i128 * c as i128 / chunks as i128) as i64
}

/// The sizes array a kernel's code reads: the `n` sizes and parameters, then for each a
/// pair `(m, l - 1)` that turns floor division by it into a multiplication
/// ([`division_constants`]), then two words for a split reduction ([`lower::split_reduce`]):
/// the mode (0: run the whole kernel) and the partial.
pub fn with_divisors(sizes: &[i64]) -> Vec<i64> {
    let mut ext = Vec::with_capacity(3 * sizes.len() + 2);
    ext.extend_from_slice(sizes);
    for &d in sizes {
        let (m, sh) = division_constants(d);
        ext.push(m as i64);
        ext.push(sh);
    }
    // A split reduction's mode (0: the whole kernel) and partial (see `lower::split_reduce`).
    ext.extend_from_slice(&[0, 0]);
    ext
}

/// For a divisor `d >= 2`: `l = ceil(log2 d)` and `m = ceil(2^(63 + l) / d)` (below 2^64),
/// so that `floor(n / d) = (m · n) >> (63 + l)` for every `0 <= n < 2^63` (Granlund and
/// Montgomery, "Division by invariant integers using multiplication", theorem 4.2, with
/// N = 63: `2^(63+l) <= m·d <= 2^(63+l) + d - 1 < 2^(63+l) + 2^l`). Returns `(m, l - 1)`;
/// `(0, 0)` for `d < 2` (the code handles 0 and 1 apart).
pub fn division_constants(d: i64) -> (u64, i64) {
    if d < 2 {
        return (0, 0);
    }
    let d = d as u64;
    let l = 64 - (d - 1).leading_zeros() as u64;
    let m = (1u128 << (63 + l)).div_ceil(d as u128);
    (m as u64, l as i64 - 1)
}

/// The address of a host buffer's first element, for [`CompiledKernel::run`].
pub fn host_ptr(d: &mut HostData) -> *mut u8 {
    match d {
        HostData::Bool(v) => v.as_mut_ptr().cast(),
        HostData::U8(v) => v.as_mut_ptr(),
        HostData::I32(v) => v.as_mut_ptr().cast(),
        HostData::I64(v) => v.as_mut_ptr().cast(),
        HostData::F16(v) => v.as_mut_ptr().cast(),
        HostData::BF16(v) => v.as_mut_ptr().cast(),
        HostData::F32(v) => v.as_mut_ptr().cast(),
        HostData::F64(v) => v.as_mut_ptr().cast(),
    }
}

// ---------------------------------------------------------------------------------------------
// The helper table.

/// The entries of the helper table, in table order: the discriminant is the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Helper {
    /// `f64 exp(f64)`.
    ExpF64,
    /// `f64 ln(f64)`.
    LnF64,
    /// `f64 sin(f64)`.
    SinF64,
    /// `f64 cos(f64)`.
    CosF64,
    /// `f64 tanh(f64)`.
    TanhF64,
    /// `f64 sigmoid(f64)`: `1 / (1 + exp(-x))`.
    SigmoidF64,
    /// `f64 erf(f64)` (`libm::erf`).
    ErfF64,
    /// `f64 pow(f64, f64)`.
    PowF64,
    /// `f64 mod(f64, f64)`: `torch.remainder`.
    ModF64,
    /// `f32 exp(f32)` (std; for f16/bf16, which must match the interpreter exactly).
    ExpF32,
    /// `f32 ln(f32)`.
    LnF32,
    /// `f32 sin(f32)`.
    SinF32,
    /// `f32 cos(f32)`.
    CosF32,
    /// `f32 tanh(f32)`.
    TanhF32,
    /// `f32 sigmoid(f32)`.
    SigmoidF32,
    /// `f32 erf(f32)` (`libm::erff`).
    ErfF32,
    /// `f32 pow(f32, f32)`.
    PowF32,
    /// `f32 mod(f32, f32)`: `torch.remainder`.
    ModF32,
    /// `f32 (u32 f16 bits)`: f16 to f32.
    F16BitsToF32,
    /// `u32 (f32)`: f32 to f16 bits, rounded to nearest even.
    F32ToF16Bits,
    /// `f32 (f32)`: f32 rounded to the nearest f16, as f32.
    RoundF16,
    /// `f32 (f64)`: `Scalar::cast` f64 → f16, as f32.
    F64ToF16,
    /// `f32 (f64)`: `Scalar::cast` f64 → bf16, as f32.
    F64ToBF16,
    /// `f32 (i64)`: `Scalar::cast` i64 → f16, as f32.
    I64ToF16,
    /// `f32 (i64)`: `Scalar::cast` i64 → bf16, as f32.
    I64ToBF16,
    /// `i64 pow(i64, i64)`: the interpreter's wrapping integer power.
    PowI64,
}

/// Number of entries in the helper table.
pub const N_HELPERS: usize = Helper::PowI64 as usize + 1;
/// The word of the helper table after the helpers: the address of [`math::const_table`]'s
/// entries, from which vector loops load the constants of the transcendentals.
pub const MATH_CONSTS_SLOT: usize = N_HELPERS;

impl Helper {
    /// Parameter and return types.
    pub fn signature(self) -> (&'static [Type], Type) {
        use Helper::*;
        match self {
            ExpF64 | LnF64 | SinF64 | CosF64 | TanhF64 | SigmoidF64 | ErfF64 => (&[F64], F64),
            PowF64 | ModF64 => (&[F64, F64], F64),
            ExpF32 | LnF32 | SinF32 | CosF32 | TanhF32 | SigmoidF32 | ErfF32 | RoundF16 => {
                (&[F32], F32)
            }
            PowF32 | ModF32 => (&[F32, F32], F32),
            F16BitsToF32 => (&[I32], F32),
            F32ToF16Bits => (&[F32], I32),
            F64ToF16 | F64ToBF16 => (&[F64], F32),
            I64ToF16 | I64ToBF16 => (&[I64], F32),
            PowI64 => (&[I64, I64], I64),
        }
    }

    /// The f64 helper for a transcendental.
    pub fn f64_math(f: MathFn) -> Helper {
        match f {
            MathFn::Exp => Helper::ExpF64,
            MathFn::Log => Helper::LnF64,
            MathFn::Sin => Helper::SinF64,
            MathFn::Cos => Helper::CosF64,
            MathFn::Tanh => Helper::TanhF64,
            MathFn::Sigmoid => Helper::SigmoidF64,
            MathFn::Erf => Helper::ErfF64,
        }
    }

    /// The (exact, std/libm) f32 helper for a transcendental.
    pub fn f32_math(f: MathFn) -> Helper {
        match f {
            MathFn::Exp => Helper::ExpF32,
            MathFn::Log => Helper::LnF32,
            MathFn::Sin => Helper::SinF32,
            MathFn::Cos => Helper::CosF32,
            MathFn::Tanh => Helper::TanhF32,
            MathFn::Sigmoid => Helper::SigmoidF32,
            MathFn::Erf => Helper::ErfF32,
        }
    }
}

fn un64(op: UnaryOp, x: f64) -> f64 {
    eval_unary(op, Scalar::F64(x)).to_f64()
}
fn un32(op: UnaryOp, x: f32) -> f32 {
    match eval_unary(op, Scalar::F32(x)) {
        Scalar::F32(v) => v,
        _ => unreachable!("f32 in, f32 out"),
    }
}
fn bin64(op: BinaryOp, a: f64, b: f64) -> f64 {
    eval_binary(op, Scalar::F64(a), Scalar::F64(b)).to_f64()
}
fn bin32(op: BinaryOp, a: f32, b: f32) -> f32 {
    match eval_binary(op, Scalar::F32(a), Scalar::F32(b)) {
        Scalar::F32(v) => v,
        _ => unreachable!("f32 in, f32 out"),
    }
}
/// A cast result of an f16/bf16 dtype as the f32 it equals.
fn half_as_f32(s: Scalar) -> f32 {
    match s {
        Scalar::F16(v) => v.to_f32(),
        Scalar::BF16(v) => v.to_f32(),
        _ => unreachable!("cast to f16/bf16"),
    }
}

/// Defines `extern "C"` helpers that forward their arguments, after the op, to one of the
/// scalar evaluators (`un64`, `un32`, `bin64`, `bin32`).
macro_rules! op_helpers {
    ($($name:ident: $via:ident($op:path; $($arg:ident: $t:ty),+) -> $ret:ty;)*) => {
        $(
            extern "C" fn $name($($arg: $t),+) -> $ret {
                $via($op, $($arg),+)
            }
        )*
    };
}
op_helpers! {
    h_exp_f64: un64(UnaryOp::Exp; x: f64) -> f64;
    h_ln_f64: un64(UnaryOp::Log; x: f64) -> f64;
    h_sin_f64: un64(UnaryOp::Sin; x: f64) -> f64;
    h_cos_f64: un64(UnaryOp::Cos; x: f64) -> f64;
    h_tanh_f64: un64(UnaryOp::Tanh; x: f64) -> f64;
    h_sigmoid_f64: un64(UnaryOp::Sigmoid; x: f64) -> f64;
    h_erf_f64: un64(UnaryOp::Erf; x: f64) -> f64;
    h_pow_f64: bin64(BinaryOp::Pow; a: f64, b: f64) -> f64;
    h_mod_f64: bin64(BinaryOp::Mod; a: f64, b: f64) -> f64;
    h_exp_f32: un32(UnaryOp::Exp; x: f32) -> f32;
    h_ln_f32: un32(UnaryOp::Log; x: f32) -> f32;
    h_sin_f32: un32(UnaryOp::Sin; x: f32) -> f32;
    h_cos_f32: un32(UnaryOp::Cos; x: f32) -> f32;
    h_tanh_f32: un32(UnaryOp::Tanh; x: f32) -> f32;
    h_sigmoid_f32: un32(UnaryOp::Sigmoid; x: f32) -> f32;
    h_erf_f32: un32(UnaryOp::Erf; x: f32) -> f32;
    h_pow_f32: bin32(BinaryOp::Pow; a: f32, b: f32) -> f32;
    h_mod_f32: bin32(BinaryOp::Mod; a: f32, b: f32) -> f32;
}
extern "C" fn h_f16_bits_to_f32(bits: u32) -> f32 {
    f16::from_bits(bits as u16).to_f32()
}
extern "C" fn h_f32_to_f16_bits(x: f32) -> u32 {
    f16::from_f32(x).to_bits() as u32
}
extern "C" fn h_round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}
extern "C" fn h_f64_to_f16(x: f64) -> f32 {
    half_as_f32(Scalar::F64(x).cast(DType::F16))
}
extern "C" fn h_f64_to_bf16(x: f64) -> f32 {
    half_as_f32(Scalar::F64(x).cast(DType::BF16))
}
extern "C" fn h_i64_to_f16(x: i64) -> f32 {
    half_as_f32(Scalar::I64(x).cast(DType::F16))
}
extern "C" fn h_i64_to_bf16(x: i64) -> f32 {
    half_as_f32(Scalar::I64(x).cast(DType::BF16))
}
extern "C" fn h_pow_i64(a: i64, b: i64) -> i64 {
    eval_binary(BinaryOp::Pow, Scalar::I64(a), Scalar::I64(b)).to_i64()
}

/// The helper table, in [`Helper`] order, then the constant table's address
/// ([`MATH_CONSTS_SLOT`]).
pub fn helper_table() -> &'static [usize; N_HELPERS + 1] {
    static TABLE: OnceLock<[usize; N_HELPERS + 1]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0usize; N_HELPERS + 1];
        t[MATH_CONSTS_SLOT] = math::const_table().entries().as_ptr() as usize;
        let mut set = |h: Helper, f: usize| t[h as usize] = f;
        set(Helper::ExpF64, h_exp_f64 as *const () as usize);
        set(Helper::LnF64, h_ln_f64 as *const () as usize);
        set(Helper::SinF64, h_sin_f64 as *const () as usize);
        set(Helper::CosF64, h_cos_f64 as *const () as usize);
        set(Helper::TanhF64, h_tanh_f64 as *const () as usize);
        set(Helper::SigmoidF64, h_sigmoid_f64 as *const () as usize);
        set(Helper::ErfF64, h_erf_f64 as *const () as usize);
        set(Helper::PowF64, h_pow_f64 as *const () as usize);
        set(Helper::ModF64, h_mod_f64 as *const () as usize);
        set(Helper::ExpF32, h_exp_f32 as *const () as usize);
        set(Helper::LnF32, h_ln_f32 as *const () as usize);
        set(Helper::SinF32, h_sin_f32 as *const () as usize);
        set(Helper::CosF32, h_cos_f32 as *const () as usize);
        set(Helper::TanhF32, h_tanh_f32 as *const () as usize);
        set(Helper::SigmoidF32, h_sigmoid_f32 as *const () as usize);
        set(Helper::ErfF32, h_erf_f32 as *const () as usize);
        set(Helper::PowF32, h_pow_f32 as *const () as usize);
        set(Helper::ModF32, h_mod_f32 as *const () as usize);
        set(
            Helper::F16BitsToF32,
            h_f16_bits_to_f32 as *const () as usize,
        );
        set(
            Helper::F32ToF16Bits,
            h_f32_to_f16_bits as *const () as usize,
        );
        set(Helper::RoundF16, h_round_f16 as *const () as usize);
        set(Helper::F64ToF16, h_f64_to_f16 as *const () as usize);
        set(Helper::F64ToBF16, h_f64_to_bf16 as *const () as usize);
        set(Helper::I64ToF16, h_i64_to_f16 as *const () as usize);
        set(Helper::I64ToBF16, h_i64_to_bf16 as *const () as usize);
        set(Helper::PowI64, h_pow_i64 as *const () as usize);
        debug_assert!(t.iter().all(|&f| f != 0), "every helper is set");
        t
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_match_the_interpreter() {
        assert_eq!(h_mod_f32(-4.0, 3.0), 2.0);
        assert_eq!(h_pow_i64(3, 4), 81);
        assert_eq!(h_round_f16(1.0 + 1.0 / 4096.0), 1.0);
        assert_eq!(h_f64_to_bf16(1.0), 1.0);
        assert_eq!(h_i64_to_f16(2049), 2048.0);
        assert!(helper_table().iter().all(|&f| f != 0));
    }
}
