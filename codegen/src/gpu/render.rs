//! Kernel IR -> CUDA C / OpenCL C source (see the module doc of [`crate::gpu`] for the thread
//! mapping, the ABI and the precision contract).

use std::collections::BTreeMap;
use std::fmt::Write;

use metajit_metaops::kernel::{Extent, Inst, Kernel, Phase, PhaseKind, Store, V};
use metajit_metaops::op::{BinaryOp, Distribution, ReduceOp, UnaryOp};
use metajit_metaops::{DType, Scalar};

use super::Dialect;
use crate::BackendError;

/// Threads per group of the flat and group entries (and the local arrays' length).
pub const GROUP_SIZE: u32 = 256;
/// The version of the rendered code, in both dialects: part of each GPU backend's
/// [`Backend::cache_identity`](crate::Backend::cache_identity), bumped whenever the renderer's
/// output changes.
pub const RENDER_VERSION: u32 = 3;
/// Threads per group of a multi-threaded thread entry.
pub const THREAD_GROUP_SIZE: u32 = 64;
/// The most groups a launch uses (the kernels stride over the rest).
pub const MAX_GROUPS: u64 = 65535;
/// Elements per group a split full reduction aims at (16 per thread): the number of groups
/// (partials) of a split is `ceil(n / SPLIT_CHUNK)`, at most [`MAX_SPLIT_PARTS`].
pub const SPLIT_CHUNK: u64 = 4096;
/// The most groups (partials) a split full reduction uses.
pub const MAX_SPLIT_PARTS: u64 = 1024;
/// The outer extent from which a kernel whose loads are contiguous along the outer loop and
/// strided along the inner loops takes the thread entry (see [`Rendered::outer_contiguous`]).
pub const CONTIGUOUS_THREAD_MIN_OUTER: i64 = 256;

/// Everything that differs between the dialects.
pub(crate) struct Lang {
    /// Pragmas, typedefs and the macros the shared prelude uses.
    head: &'static str,
    /// What precedes an entry point's name.
    kernel: &'static str,
    /// The address-space qualifier of buffer pointers.
    global: &'static str,
    /// The no-alias qualifier of buffer pointers: [`crate::check::launch_args`] rejects an
    /// output that overlaps another buffer, and inputs are only read (declared `const`), so
    /// the compiler may keep values in registers and read inputs through the read-only path.
    restrict: &'static str,
    /// The qualifier of a group-local array.
    local: &'static str,
    /// The pointer qualifier for atomic compare-and-swap.
    atomic_ptr: &'static str,
    /// The thread's index in its group (i64 expression).
    local_id: &'static str,
    /// The group's index.
    group_id: &'static str,
    /// The number of groups.
    num_groups: &'static str,
    /// The global thread index.
    global_id: &'static str,
    /// The number of threads in the launch.
    global_size: &'static str,
    /// A barrier for the group with local and global memory fences.
    barrier: &'static str,
    /// The suffix of f32 math functions (`expf`).
    f32_suffix: &'static str,
    /// 32-bit compare-and-swap (`{p}`, `{c}`, `{v}` replaced), returning the old word.
    cas32: &'static str,
    /// 64-bit compare-and-swap.
    cas64: &'static str,
    /// Whether the tree reduction ends with warp shuffles (CUDA).
    shuffles: bool,
    /// Native atomic add for these dtypes (`{p}`, `{v}` replaced).
    atomic_add: fn(DType) -> Option<&'static str>,
    /// Options to pass to the compiler with the source.
    options: &'static str,
}

const OPENCL_HEAD: &str = r#"#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#pragma OPENCL EXTENSION cl_khr_int64_base_atomics : enable
#pragma OPENCL FP_CONTRACT OFF
typedef uchar u8;
typedef ushort u16;
typedef uint u32;
typedef ulong u64;
typedef int i32;
typedef long i64;
typedef size_t uptr;
#define FN static inline
#define F32_OF(x) as_float((uint)(x))
#define BITS_F32(x) as_uint(x)
#define F64_OF(x) as_double((ulong)(x))
#define BITS_F64(x) as_ulong(x)
#define SQRTF sqrt
#define LOGF log
#define COSF cos
#define FMODF fmod
"#;

const CUDA_HEAD: &str = r#"typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef int i32;
typedef long long i64;
typedef unsigned long long uptr;
#define FN static __device__ __forceinline__
#define F32_OF(x) __uint_as_float((unsigned int)(x))
#define BITS_F32(x) __float_as_uint(x)
#define F64_OF(x) __longlong_as_double((long long)(x))
#define BITS_F64(x) ((u64)__double_as_longlong(x))
#define SQRTF sqrtf
#define LOGF logf
#define COSF cosf
#define FMODF fmodf
"#;

static OPENCL: Lang = Lang {
    head: OPENCL_HEAD,
    kernel: "__kernel void",
    global: "__global ",
    restrict: "restrict",
    local: "__local ",
    atomic_ptr: "volatile __global ",
    local_id: "(i64)get_local_id(0)",
    group_id: "(i64)get_group_id(0)",
    num_groups: "(i64)get_num_groups(0)",
    global_id: "(i64)get_global_id(0)",
    global_size: "(i64)get_global_size(0)",
    barrier: "barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);",
    f32_suffix: "",
    cas32: "atomic_cmpxchg({p}, {c}, {v})",
    cas64: "atom_cmpxchg({p}, {c}, {v})",
    shuffles: false,
    atomic_add: |d| match d {
        DType::I32 => Some("atomic_add({p}, {v})"),
        _ => None,
    },
    options: "-cl-std=CL1.2 -cl-fp32-correctly-rounded-divide-sqrt",
};

static CUDA: Lang = Lang {
    head: CUDA_HEAD,
    kernel: "extern \"C\" __global__ void __launch_bounds__(256)",
    global: "",
    restrict: "__restrict__",
    local: "__shared__ ",
    atomic_ptr: "",
    local_id: "(i64)threadIdx.x",
    group_id: "(i64)blockIdx.x",
    num_groups: "(i64)gridDim.x",
    global_id: "((i64)blockIdx.x * (i64)blockDim.x + (i64)threadIdx.x)",
    global_size: "((i64)gridDim.x * (i64)blockDim.x)",
    barrier: "__syncthreads();",
    f32_suffix: "f",
    cas32: "atomicCAS((unsigned int*)({p}), {c}, {v})",
    cas64: "atomicCAS((unsigned long long*)({p}), (unsigned long long)({c}), (unsigned long long)({v}))",
    shuffles: true,
    atomic_add: |d| match d {
        DType::F32 | DType::F64 | DType::I32 => Some("atomicAdd({p}, {v})"),
        _ => None,
    },
    options: "--fmad=false",
};

fn lang(d: Dialect) -> &'static Lang {
    match d {
        Dialect::Cuda => &CUDA,
        Dialect::OpenCl => &OPENCL,
    }
}

/// The text every program starts with: the dialect's head and the shared helpers.
pub fn prelude(dialect: Dialect) -> String {
    let mut s = String::from(lang(dialect).head);
    s.push_str(super::prelude::SHARED);
    s
}

/// The compile options the rendered source needs (OpenCL build options, NVRTC options).
pub fn compile_options(dialect: Dialect) -> &'static str {
    lang(dialect).options
}

/// One program's source from several rendered kernels of one dialect (each rendered with a
/// distinct name, see [`render_named`]): one prelude, then every kernel's code.
pub fn program_source(dialect: Dialect, kernels: &[&Rendered]) -> String {
    let mut s = prelude(dialect);
    for k in kernels {
        s.push_str(&k.kernel_code);
    }
    s
}

/// What an entry point does (see the module doc of [`crate::gpu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Every loop flattened, a grid-stride loop.
    Flat,
    /// A group per outer iteration, tree reductions in local memory.
    Group,
    /// A thread per outer iteration (one thread in all for a non-parallel kernel).
    Thread,
}

/// One entry point of a rendered kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The function's name in the source.
    pub name: String,
    /// Its mapping.
    pub kind: EntryKind,
}

/// A launch: which entry point, how many groups of how many threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Index into [`Rendered::entries`].
    pub entry: usize,
    /// Number of groups (blocks); 0 when there is nothing to run.
    pub groups: u64,
    /// Threads per group.
    pub local: u32,
}

/// A rendered kernel: its source and what a runtime needs to launch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The dialect.
    pub dialect: Dialect,
    /// The whole program: [`prelude`] followed by [`Rendered::kernel_code`].
    pub source: String,
    /// The kernel's own code (atomic helpers and entry points) without the prelude.
    pub kernel_code: String,
    /// The entry points, in the order [`Rendered::launch`] refers to them.
    pub entries: Vec<Entry>,
    /// The entry points of the split form of a full reduction, one per phase in phase order
    /// (`{name}_split{k}`); empty for every other kernel. See [`Rendered::split_plan`].
    pub split_entries: Vec<String>,
    outer: Vec<Extent>,
    inner: Vec<Vec<Extent>>,
    serial_only: bool,
    outer_contiguous: bool,
}

/// How a split full reduction runs for given sizes: one launch per phase, in order, every one
/// with `parts` groups of [`GROUP_SIZE`] threads and the same scratch buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    /// The number of groups of every launch, which is the number of partials per Reduce phase.
    pub parts: u64,
    /// The scratch buffer's size in bytes: 8 bytes per partial, `parts` per phase.
    pub scratch_bytes: usize,
    /// The launches in order; [`Launch::entry`] indexes [`Rendered::split_entries`].
    pub launches: Vec<Launch>,
}

/// The number of partials of a split full reduction over `n` elements: `ceil(n /
/// SPLIT_CHUNK)` clamped to `1..=MAX_SPLIT_PARTS` (a function of the sizes only, so results are
/// deterministic per size).
pub fn split_parts(n: i64) -> u64 {
    u64::try_from(n)
        .unwrap_or(0)
        .div_ceil(SPLIT_CHUNK)
        .clamp(1, MAX_SPLIT_PARTS)
}

fn extent_value(e: &Extent, sizes: &[i64]) -> i64 {
    match e {
        Extent::Size(s) => sizes.get(*s).copied().unwrap_or(0).max(0),
        Extent::Const(c) => i64::try_from(*c).unwrap_or(i64::MAX),
    }
}

fn product(es: &[Extent], sizes: &[i64]) -> i64 {
    es.iter()
        .fold(1i64, |n, e| n.saturating_mul(extent_value(e, sizes)))
}

impl Rendered {
    /// The launch for these size parameters: the entry point and geometry the mapping picks.
    pub fn launch(&self, sizes: &[i64]) -> Launch {
        let entry = if self.entries.len() == 1 {
            0
        } else {
            let n_outer = product(&self.outer, sizes);
            let n_inner = self
                .inner
                .iter()
                .map(|i| product(i, sizes))
                .max()
                .unwrap_or(1);
            let thread = n_inner <= 32
                || (n_outer >= 16384 && n_inner <= 1024)
                || (self.outer_contiguous && n_outer >= CONTIGUOUS_THREAD_MIN_OUTER);
            self.entries
                .iter()
                .position(|e| {
                    e.kind
                        == if thread {
                            EntryKind::Thread
                        } else {
                            EntryKind::Group
                        }
                })
                .unwrap_or(0)
        };
        self.launch_entry(entry, sizes)
    }

    /// Whether the kernel's loads are contiguous along the last outer loop and strided along
    /// the inner loops (a column sum), decided at render time from the loads' index
    /// arithmetic: then the thread entry, whose neighbouring threads read neighbouring
    /// elements, is preferred from [`CONTIGUOUS_THREAD_MIN_OUTER`] outer iterations on.
    pub fn outer_contiguous(&self) -> bool {
        self.outer_contiguous
    }

    /// The names of every entry point, then of the split entry points: the order in which the
    /// runtimes keep their functions (a split launch's entry `k` is function
    /// `entries.len() + k`).
    pub fn function_names(&self) -> Vec<&str> {
        self.entries
            .iter()
            .map(|e| e.name.as_str())
            .chain(self.split_entries.iter().map(String::as_str))
            .collect()
    }

    /// The split form of a full reduction for these sizes, or `None` when the kernel has no
    /// split form or (with `parts` `None`) the reduction is small enough for one group (fewer
    /// than two partials by [`split_parts`]). `parts` forces the number of partials (clamped to
    /// `1..=MAX_SPLIT_PARTS`; tests use it to run the split at every size).
    pub fn split_plan(&self, sizes: &[i64], parts: Option<u64>) -> Option<SplitPlan> {
        if self.split_entries.is_empty() {
            return None;
        }
        let parts = match parts {
            Some(p) => p.clamp(1, MAX_SPLIT_PARTS),
            None => {
                let n = self
                    .inner
                    .iter()
                    .map(|i| product(i, sizes))
                    .max()
                    .unwrap_or(1);
                let p = split_parts(n);
                if p < 2 {
                    return None;
                }
                p
            }
        };
        let launches = (0..self.split_entries.len())
            .map(|entry| Launch {
                entry,
                groups: parts,
                local: GROUP_SIZE,
            })
            .collect();
        Some(SplitPlan {
            parts,
            scratch_bytes: (parts as usize).saturating_mul(8 * self.split_entries.len()),
            launches,
        })
    }

    /// The geometry of entry point `entry` (an index into [`Rendered::entries`]) for these
    /// sizes: tests launch every entry this way.
    pub fn launch_entry(&self, entry: usize, sizes: &[i64]) -> Launch {
        let n_outer = product(&self.outer, sizes);
        let kind = self.entries.get(entry).map(|e| e.kind);
        let groups_of = |n: i64, per: u32| -> u64 {
            let n = u64::try_from(n).unwrap_or(0);
            n.div_ceil(u64::from(per)).min(MAX_GROUPS)
        };
        match kind {
            Some(EntryKind::Flat) => {
                let n_inner = self.inner.first().map_or(1, |i| product(i, sizes));
                Launch {
                    entry,
                    groups: groups_of(n_outer.saturating_mul(n_inner), GROUP_SIZE),
                    local: GROUP_SIZE,
                }
            }
            Some(EntryKind::Group) => Launch {
                entry,
                groups: u64::try_from(n_outer).unwrap_or(0).min(MAX_GROUPS),
                local: GROUP_SIZE,
            },
            Some(EntryKind::Thread) if self.serial_only => Launch {
                entry,
                groups: u64::from(n_outer > 0),
                local: 1,
            },
            Some(EntryKind::Thread) => Launch {
                entry,
                groups: groups_of(n_outer, THREAD_GROUP_SIZE),
                local: THREAD_GROUP_SIZE,
            },
            None => Launch {
                entry,
                groups: 0,
                local: 1,
            },
        }
    }
}

/// Renders `kernel` in `dialect`, with entry points named `metajit_kernel_*`.
pub fn render(kernel: &Kernel, dialect: Dialect) -> Result<Rendered, BackendError> {
    render_named(kernel, dialect, "metajit_kernel")
}

/// Renders `kernel` with entry points and helpers named `{name}_*` (distinct names let several
/// kernels share one program, see [`program_source`]). `name` must be a C identifier.
pub fn render_named(
    kernel: &Kernel,
    dialect: Dialect,
    name: &str,
) -> Result<Rendered, BackendError> {
    let fail = |message: String| BackendError::Compile {
        backend: match dialect {
            Dialect::Cuda => "cuda",
            Dialect::OpenCl => "opencl",
        },
        message,
        kernel: kernel.text(),
    };
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(fail(format!("{name:?} is not a C identifier")));
    }
    check(kernel).map_err(&fail)?;
    let mut r = Renderer {
        k: kernel,
        l: lang(dialect),
        name: name.to_string(),
        helpers: String::new(),
        atomics: BTreeMap::new(),
    };
    let loads_output = kernel.phases.iter().any(|p| {
        p.body
            .iter()
            .any(|(i, _)| matches!(i, Inst::Load { buf, .. } if kernel.bufs[*buf].output))
    });
    let combine_only = !loads_output
        && kernel
            .phases
            .iter()
            .all(|p| p.kind.stores().iter().all(|s| s.combine.is_some()));
    let single_store =
        kernel.phases.len() == 1 && matches!(kernel.phases[0].kind, PhaseKind::Store(_));
    let serial_only = !kernel.parallel && !combine_only;
    let kinds: &[EntryKind] = if serial_only || (single_store && loads_output) {
        &[EntryKind::Thread]
    } else if single_store {
        &[EntryKind::Flat]
    } else {
        &[EntryKind::Group, EntryKind::Thread]
    };
    let mut code = String::new();
    let mut entries = Vec::new();
    for &kind in kinds {
        let ename = format!(
            "{name}_{}",
            match kind {
                EntryKind::Flat => "flat",
                EntryKind::Group => "group",
                EntryKind::Thread => "thread",
            }
        );
        // Combines are atomic wherever two threads may reach one element: the flat and group
        // entries share an outer iteration among threads; the thread entry gives each thread
        // one iteration of the flattened outer loops, of which only loop 0's iterations are
        // independent (`parallel`), so with a second outer loop, or without `parallel`, two
        // threads may combine into one element too.
        let atomic = kind != EntryKind::Thread || !kernel.parallel || kernel.outer.len() > 1;
        let atomic = atomic && !serial_only;
        let body = match kind {
            EntryKind::Flat => r.flat_entry(&ename),
            EntryKind::Group => r.group_entry(&ename),
            EntryKind::Thread => r.thread_entry(&ename, atomic),
        }
        .map_err(&fail)?;
        code.push_str(&body);
        entries.push(Entry { name: ename, kind });
    }
    // A full reduction (no outer loop) also gets a split form: one entry point per phase,
    // each spread over many groups (see `Renderer::split_entry`).
    let mut split_entries = Vec::new();
    let splittable = kernel.outer.is_empty()
        && kinds.contains(&EntryKind::Group)
        && kernel
            .phases
            .iter()
            .any(|p| matches!(p.kind, PhaseKind::Reduce { .. }));
    if splittable {
        for k in 0..kernel.phases.len() {
            let ename = format!("{name}_split{k}");
            let body = r.split_entry(&ename, k).map_err(&fail)?;
            code.push_str(&body);
            split_entries.push(ename);
        }
    }
    let kernel_code = format!("{}{}", r.helpers, code);
    let source = format!("{}{}", prelude(dialect), kernel_code);
    Ok(Rendered {
        dialect,
        source,
        kernel_code,
        entries,
        split_entries,
        outer: kernel.outer.clone(),
        inner: kernel.phases.iter().map(|p| p.inner.clone()).collect(),
        serial_only,
        outer_contiguous: outer_contiguous(kernel),
    })
}

/// The checks the renderer relies on: the kernel IR's own ([`Kernel::check`]: SSA order,
/// operand dtypes, references in range), and buffer extents naming existing sizes, so that a
/// malformed kernel is an error and not malformed source.
fn check(k: &Kernel) -> Result<(), String> {
    k.check().map_err(|e| e.to_string())?;
    if k.bufs.is_empty() {
        return Err("a kernel without buffers".into());
    }
    let size_ok = |e: &Extent| match e {
        Extent::Size(s) => *s < k.n_sizes,
        Extent::Const(_) => true,
    };
    if !k.bufs.iter().all(|b| b.dims.iter().all(size_ok)) {
        return Err("a buffer extent names a missing size parameter".into());
    }
    Ok(())
}

/// How a value changes along one loop (a heuristic for coalescing, not a proof).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stride {
    /// It does not depend on the loop.
    Zero,
    /// It steps by one (or by less: a broadcast's `i / c`) per iteration.
    Unit,
    /// Anything else: a larger or unknown stride, or data-dependent.
    Other,
}

/// The [`Stride`] of every value of `ph` along loop `lp` (a `LoopIdx` number).
fn strides(ph: &Phase, lp: usize) -> Vec<Stride> {
    use Stride::*;
    let mut s: Vec<Stride> = Vec::with_capacity(ph.body.len());
    let is_one = |v: &V| {
        matches!(
            ph.body.get(v.0 as usize),
            Some((Inst::Const(c), _)) if c.cast(DType::I64) == Scalar::I64(1)
        )
    };
    for (inst, _) in &ph.body {
        let st = |v: &V| s.get(v.0 as usize).copied().unwrap_or(Other);
        // Either operand's stride when the other one is constant (or both agree).
        let either = |a: Stride, b: Stride| match (a, b) {
            (x, y) if x == y => x,
            (x, Zero) | (Zero, x) => x,
            _ => Other,
        };
        let x = match inst {
            Inst::LoopIdx(l) if *l == lp => Unit,
            Inst::LoopIdx(_)
            | Inst::Const(_)
            | Inst::Size(_)
            | Inst::Param(_)
            | Inst::PhaseResult(_) => Zero,
            Inst::Cast(_, a) => st(a),
            Inst::Binary(op, a, b) => {
                let (sa, sb) = (st(a), st(b));
                match op {
                    BinaryOp::Add => match (sa, sb) {
                        (x, Zero) | (Zero, x) => x,
                        _ => Other,
                    },
                    BinaryOp::Sub => match (sa, sb) {
                        (x, Zero) => x,
                        _ => Other,
                    },
                    BinaryOp::Mul => match (sa, sb) {
                        (Zero, Zero) => Zero,
                        (Unit, Zero) if is_one(b) => Unit,
                        (Zero, Unit) if is_one(a) => Unit,
                        _ => Other,
                    },
                    BinaryOp::Div => match (sa, sb) {
                        (x, Zero) => x,
                        _ => Other,
                    },
                    BinaryOp::Mod => match (sa, sb) {
                        (x, Zero) => x,
                        _ => Other,
                    },
                    BinaryOp::Max | BinaryOp::Min => either(sa, sb),
                    _ if sa == Zero && sb == Zero => Zero,
                    _ => Other,
                }
            }
            Inst::Where(_, a, b) => either(st(a), st(b)),
            other => {
                if other.operands().iter().all(|v| st(v) == Zero) {
                    Zero
                } else {
                    Other
                }
            }
        };
        s.push(x);
    }
    s
}

/// Whether the loads of `k` are contiguous along its last outer loop and strided along the
/// innermost (non-constant) inner loop of their phase: at least one load so, and none with a
/// unit stride along its inner loop (see [`Rendered::outer_contiguous`]).
fn outer_contiguous(k: &Kernel) -> bool {
    // The last outer loop that varies: the one neighbouring threads of the thread entry differ in.
    let Some(last_outer) = k.outer.iter().rposition(|e| *e != Extent::Const(1)) else {
        return false;
    };
    let (mut along_outer, mut along_inner) = (0usize, 0usize);
    for ph in &k.phases {
        let so = strides(ph, last_outer);
        let inner_loop = ph
            .inner
            .iter()
            .rposition(|e| *e != Extent::Const(1))
            .map(|i| k.outer.len() + i);
        let si = inner_loop.map(|l| strides(ph, l));
        for (inst, _) in &ph.body {
            if let Inst::Load { offset, .. } = inst {
                let o = offset.0 as usize;
                let i_st = si.as_ref().map_or(Stride::Zero, |s| s[o]);
                if i_st == Stride::Unit {
                    along_inner += 1;
                } else if so[o] == Stride::Unit {
                    along_outer += 1;
                }
            }
        }
    }
    along_outer > 0 && along_inner == 0
}

/// The C type of a value in registers.
fn reg_ty(d: DType) -> &'static str {
    match d {
        DType::Bool | DType::U8 => "u8",
        DType::I32 => "i32",
        DType::I64 => "i64",
        DType::F16 | DType::BF16 | DType::F32 => "float",
        DType::F64 => "double",
    }
}

/// The C type of a buffer element.
fn mem_ty(d: DType) -> &'static str {
    match d {
        DType::F16 | DType::BF16 => "u16",
        d => reg_ty(d),
    }
}

/// The accumulator dtype of a reduction: f64 for float sums and products.
fn acc_dtype(op: ReduceOp, d: DType) -> DType {
    if d.is_float() && matches!(op, ReduceOp::Sum | ReduceOp::Prod) {
        DType::F64
    } else {
        d
    }
}

fn extent(e: &Extent) -> String {
    match e {
        Extent::Size(s) => format!("s{s}"),
        Extent::Const(c) => format!("((i64){c}L)"),
    }
}

fn extents_product(es: &[Extent]) -> String {
    if es.is_empty() {
        return "((i64)1L)".into();
    }
    let parts: Vec<String> = es.iter().map(extent).collect();
    format!("({})", parts.join(" * "))
}

/// Declares `{prefix}0..` from the row-major linear index `linear` over `es`.
fn decompose(out: &mut String, ind: &str, prefix: &str, es: &[Extent], linear: &str) {
    match es.len() {
        0 => {}
        1 => {
            let _ = writeln!(out, "{ind}const i64 {prefix}0 = {linear};");
        }
        n => {
            let _ = writeln!(out, "{ind}i64 {prefix}_t = {linear};");
            for k in (1..n).rev() {
                let e = extent(&es[k]);
                let _ = writeln!(out, "{ind}const i64 {prefix}{k} = {prefix}_t % {e};");
                let _ = writeln!(out, "{ind}{prefix}_t = {prefix}_t / {e};");
            }
            let _ = writeln!(out, "{ind}const i64 {prefix}0 = {prefix}_t;");
        }
    }
}

/// A literal of a scalar, exact (floats as bit patterns).
fn lit(s: Scalar) -> String {
    match s {
        Scalar::Bool(b) => format!("((u8){})", u8::from(b)),
        Scalar::U8(v) => format!("((u8){v})"),
        Scalar::I32(v) if v == i32::MIN => "((i32)(-2147483647 - 1))".into(),
        Scalar::I32(v) => format!("((i32)({v}))"),
        Scalar::I64(v) if v == i64::MIN => "((i64)(-9223372036854775807L - 1L))".into(),
        Scalar::I64(v) => format!("((i64)({v}L))"),
        Scalar::F16(v) => format!("F32_OF(0x{:08x}u)", v.to_f32().to_bits()),
        Scalar::BF16(v) => format!("F32_OF(0x{:08x}u)", v.to_f32().to_bits()),
        Scalar::F32(v) => format!("F32_OF(0x{:08x}u)", v.to_bits()),
        Scalar::F64(v) => format!("F64_OF(0x{:016x}UL)", v.to_bits()),
    }
}

/// Rounds a float-register expression to the dtype (f16/bf16), or leaves it.
fn round_to(d: DType, e: String) -> String {
    match d {
        DType::F16 => format!("rh({e})"),
        DType::BF16 => format!("rb({e})"),
        _ => e,
    }
}

struct Renderer<'a> {
    k: &'a Kernel,
    l: &'static Lang,
    name: String,
    /// Atomic combine helpers, rendered once per (dtype, op).
    helpers: String,
    atomics: BTreeMap<(DType, ReduceOp), String>,
}

impl Renderer<'_> {
    fn math(&self, f: &str, d: DType, args: &[&str]) -> String {
        let suffix = if d == DType::F64 {
            ""
        } else {
            self.l.f32_suffix
        };
        format!("{f}{suffix}({})", args.join(", "))
    }

    /// A binary op on two register values of dtype `d`.
    fn binary(&self, op: BinaryOp, d: DType, a: &str, b: &str) -> Result<String, String> {
        use BinaryOp::*;
        let no = || Err(format!("{} does not accept {d}", op.name()));
        if op.is_comparison() {
            let c = match (op, d) {
                (Lt, DType::Bool) => format!("(!{a} & {b})"),
                (Le, DType::Bool) => format!("(!{a} | {b})"),
                (Lt, _) => format!("({a} < {b})"),
                (Le, _) => format!("({a} <= {b})"),
                (Eq, _) => format!("({a} == {b})"),
                _ => format!("({a} != {b})"),
            };
            return Ok(format!("((u8){c})"));
        }
        Ok(match d {
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 => {
                let r = |e: String| round_to(d, e);
                let m64 = d == DType::F64;
                match op {
                    Add => r(format!("({a} + {b})")),
                    Sub => r(format!("({a} - {b})")),
                    Mul => r(format!("({a} * {b})")),
                    Div => r(format!("({a} / {b})")),
                    Pow => r(self.math("pow", d, &[a, b])),
                    Max => format!("(({a} > {b} || {a} != {a}) ? {a} : {b})"),
                    Min => format!("(({a} < {b} || {a} != {a}) ? {a} : {b})"),
                    Mod if m64 => format!("fmodpy64({a}, {b})"),
                    Mod => r(format!("fmodpy32({a}, {b})")),
                    _ => return no(),
                }
            }
            DType::I32 | DType::I64 => {
                let w = if d == DType::I32 { "32" } else { "64" };
                let narrow = |e: String| {
                    if d == DType::I32 {
                        format!("((i32)(u32)(u64){e})")
                    } else {
                        e
                    }
                };
                match op {
                    Add => format!("wadd{w}({a}, {b})"),
                    Sub => format!("wsub{w}({a}, {b})"),
                    Mul => format!("wmul{w}({a}, {b})"),
                    Div => narrow(format!("fdiv64((i64){a}, (i64){b})")),
                    Mod => narrow(format!("fmod64((i64){a}, (i64){b})")),
                    Pow => narrow(format!("ipow64((i64){a}, (i64){b})")),
                    Max => format!("({a} > {b} ? {a} : {b})"),
                    Min => format!("({a} < {b} ? {a} : {b})"),
                    And => format!("({a} & {b})"),
                    Or => format!("({a} | {b})"),
                    Xor => format!("({a} ^ {b})"),
                    _ => return no(),
                }
            }
            DType::U8 => match op {
                Add => format!("((u8)({a} + {b}))"),
                Sub => format!("((u8)({a} - {b}))"),
                Mul => format!("((u8)({a} * {b}))"),
                Div => format!("({b} == 0 ? (u8)0 : (u8)({a} / {b}))"),
                Mod => format!("({b} == 0 ? (u8)0 : (u8)({a} % {b}))"),
                Pow => format!("((u8)ipow64((i64){a}, (i64){b}))"),
                Max => format!("({a} > {b} ? {a} : {b})"),
                Min => format!("({a} < {b} ? {a} : {b})"),
                And => format!("((u8)({a} & {b}))"),
                Or => format!("((u8)({a} | {b}))"),
                Xor => format!("((u8)({a} ^ {b}))"),
                _ => return no(),
            },
            DType::Bool => match op {
                Add | Max | Or => format!("((u8)({a} | {b}))"),
                Mul | Min | And => format!("((u8)({a} & {b}))"),
                Xor => format!("((u8)({a} ^ {b}))"),
                _ => return no(),
            },
        })
    }

    /// A unary op on a register value of dtype `d`.
    fn unary(&self, op: UnaryOp, d: DType, a: &str) -> Result<String, String> {
        use UnaryOp::*;
        let no = || Err(format!("{} does not accept {d}", op.name()));
        Ok(match d {
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 => {
                let r = |e: String| round_to(d, e);
                let one = if d == DType::F64 { "1.0" } else { "1.0f" };
                match op {
                    Neg => format!("(-{a})"),
                    Abs => self.math("fabs", d, &[a]),
                    Recip => r(format!("({one} / {a})")),
                    Sqrt => r(self.math("sqrt", d, &[a])),
                    Exp => r(self.math("exp", d, &[a])),
                    Log => r(self.math("log", d, &[a])),
                    Sin => r(self.math("sin", d, &[a])),
                    Cos => r(self.math("cos", d, &[a])),
                    Tanh => r(self.math("tanh", d, &[a])),
                    Erf => r(self.math("erf", d, &[a])),
                    Sigmoid => {
                        let e = self.math("exp", d, &[&format!("-{a}")]);
                        r(format!("({one} / ({one} + {e}))"))
                    }
                    Floor => self.math("floor", d, &[a]),
                    Ceil => self.math("ceil", d, &[a]),
                    Round => self.math("rint", d, &[a]),
                    Not => return no(),
                }
            }
            DType::I32 | DType::I64 => {
                let w = if d == DType::I32 { "32" } else { "64" };
                match op {
                    Neg => format!("wsub{w}(0, {a})"),
                    Abs => format!("({a} < 0 ? wsub{w}(0, {a}) : {a})"),
                    Floor | Ceil | Round => a.to_string(),
                    Not => format!("(~{a})"),
                    _ => return no(),
                }
            }
            DType::U8 => match op {
                Neg => format!("((u8)(0u - (u32){a}))"),
                Abs | Floor | Ceil | Round => a.to_string(),
                Not => format!("((u8)~{a})"),
                _ => return no(),
            },
            DType::Bool => match op {
                Not => format!("((u8)!{a})"),
                _ => return no(),
            },
        })
    }

    /// A conversion of a register value from `f` to `t` (`Scalar::cast`'s rules).
    fn cast(&self, f: DType, t: DType, a: &str) -> String {
        use DType::*;
        if f == t {
            return a.to_string();
        }
        if t == Bool {
            return format!("((u8)({a} != 0))");
        }
        if f.is_float() {
            return match t {
                U8 => format!("f64_to_u8((double){a})"),
                I32 => format!("f64_to_i32((double){a})"),
                I64 => format!("f64_to_i64((double){a})"),
                F64 => format!("((double){a})"),
                F32 if f == F64 => format!("((float){a})"),
                F32 => a.to_string(),
                F16 | BF16 => {
                    let single = if f == F64 {
                        format!("f64_to_f32_odd({a})")
                    } else {
                        a.to_string()
                    };
                    round_to(t, single)
                }
                Bool => unreachable!("handled above"),
            };
        }
        // From an integer or bool.
        match t {
            U8 => format!("((u8){a})"),
            I32 if f == I64 => format!("((i32)(u32)(u64){a})"),
            I32 => format!("((i32){a})"),
            I64 => format!("((i64){a})"),
            F32 => format!("((float){a})"),
            F64 => format!("((double){a})"),
            F16 | BF16 if matches!(f, Bool | U8) => round_to(t, format!("((float){a})")),
            F16 | BF16 => round_to(t, format!("i64_to_f32_odd((i64){a})")),
            Bool => unreachable!("handled above"),
        }
    }

    /// The expression of one instruction.
    fn inst(&self, ph: &Phase, inst: &Inst, d: DType) -> Result<String, String> {
        let dt = |v: &V| ph.body[v.0 as usize].1;
        let n_outer = self.k.outer.len();
        Ok(match inst {
            Inst::Const(c) => lit(c.cast(d)),
            Inst::LoopIdx(l) if *l < n_outer => format!("o{l}"),
            Inst::LoopIdx(l) => format!("i{}", l - n_outer),
            Inst::Size(s) => format!("s{s}"),
            Inst::Param(p) => match d {
                DType::F32 => format!("F32_OF((u32)s{p})"),
                DType::F64 => format!("F64_OF((u64)s{p})"),
                DType::F16 | DType::BF16 => round_to(d, format!("F32_OF((u32)s{p})")),
                DType::I64 => format!("s{p}"),
                DType::I32 => format!("((i32)(u32)(u64)s{p})"),
                DType::U8 => format!("((u8)s{p})"),
                DType::Bool => format!("((u8)(s{p} != 0))"),
            },
            Inst::Load { buf, offset } => match d {
                DType::F16 => format!("f16_to_f32(b{buf}[{offset}])"),
                DType::BF16 => format!("bf16_to_f32(b{buf}[{offset}])"),
                _ => format!("b{buf}[{offset}]"),
            },
            Inst::Unary(op, a) => self.unary(*op, dt(a), &a.to_string())?,
            Inst::Binary(op, a, b) => self.binary(*op, dt(a), &a.to_string(), &b.to_string())?,
            Inst::Where(c, a, b) => format!("({c} ? {a} : {b})"),
            Inst::Cast(t, a) => self.cast(dt(a), *t, &a.to_string()),
            Inst::Random {
                seed_param,
                dist,
                counter,
            } => {
                let f = match dist {
                    Distribution::Uniform => "rand_uniform",
                    Distribution::Normal => "rand_normal",
                };
                let args = format!("(u64)s{seed_param}, (u64){counter}");
                match d {
                    DType::F32 => format!("{f}32({args})"),
                    DType::F64 => format!("{f}64({args})"),
                    _ => self.cast(DType::F64, d, &format!("{f}64({args})")),
                }
            }
            Inst::PhaseResult(p) => format!("r{p}"),
        })
    }

    /// The statements of one iteration of a phase: its body and stores.
    fn body(
        &mut self,
        out: &mut String,
        ind: &str,
        ph: &Phase,
        atomic: bool,
    ) -> Result<(), String> {
        for (i, (inst, d)) in ph.body.iter().enumerate() {
            let e = self.inst(ph, inst, *d)?;
            let _ = writeln!(out, "{ind}const {} v{i} = {e};", reg_ty(*d));
        }
        for st in ph.kind.stores() {
            self.store(out, ind, st, atomic)?;
        }
        Ok(())
    }

    fn store(
        &mut self,
        out: &mut String,
        ind: &str,
        st: &Store,
        atomic: bool,
    ) -> Result<(), String> {
        let d = self.k.bufs[st.buf].dtype;
        let (b, off, v) = (st.buf, st.offset, st.value);
        let to_mem = |e: &str| match d {
            DType::F16 => format!("f32_to_f16({e})"),
            DType::BF16 => format!("f32_to_bf16({e})"),
            _ => e.to_string(),
        };
        let stmt = match st.combine {
            None => format!("b{b}[{off}] = {};", to_mem(&v.to_string())),
            Some(op) if atomic => {
                let f = self.atomic_helper(d, op)?;
                format!("{f}(b{b} + {off}, {v});")
            }
            Some(op) => {
                let cur = match d {
                    DType::F16 => format!("f16_to_f32(b{b}[{off}])"),
                    DType::BF16 => format!("bf16_to_f32(b{b}[{off}])"),
                    _ => format!("b{b}[{off}]"),
                };
                let c = self.binary(op.combiner(), d, "cur", &v.to_string())?;
                format!(
                    "{{ const {} cur = {cur}; b{b}[{off}] = {}; }}",
                    reg_ty(d),
                    to_mem(&c)
                )
            }
        };
        match st.mask {
            Some(m) => {
                let _ = writeln!(out, "{ind}if ({m}) {{ {stmt} }}");
            }
            None => {
                let _ = writeln!(out, "{ind}{stmt}");
            }
        }
        Ok(())
    }

    /// The name of the atomic combine helper for `(d, op)`, rendering it the first time.
    fn atomic_helper(&mut self, d: DType, op: ReduceOp) -> Result<String, String> {
        if let Some(n) = self.atomics.get(&(d, op)) {
            return Ok(n.clone());
        }
        let name = format!("{}_atomic_{}_{}", self.name, op.name(), d);
        let l = self.l;
        let g = l.global;
        let ap = l.atomic_ptr;
        let mut s = String::new();
        let _ = writeln!(s, "FN void {name}({g}{}* p, {} v) {{", mem_ty(d), reg_ty(d));
        if let (ReduceOp::Sum, Some(native)) = (op, (l.atomic_add)(d)) {
            let _ = writeln!(s, "    {};", native.replace("{p}", "p").replace("{v}", "v"));
        } else {
            let comb = self.binary(op.combiner(), d, "cur", "v")?;
            let (word, cas, shift) = match d {
                DType::F32 | DType::I32 => ("u32", l.cas32, None),
                DType::F64 | DType::I64 => ("u64", l.cas64, None),
                DType::F16 | DType::BF16 => ("u32", l.cas32, Some(("2", "0xffffu"))),
                DType::U8 | DType::Bool => ("u32", l.cas32, Some(("3", "0xffu"))),
            };
            let (unpack, pack) = match (d, shift) {
                (DType::F32, _) => ("F32_OF(prev)".to_string(), "BITS_F32(nv)".to_string()),
                (DType::F64, _) => ("F64_OF(prev)".into(), "BITS_F64(nv)".into()),
                (DType::I32, _) => ("(i32)prev".into(), "(u32)nv".into()),
                (DType::I64, _) => ("(i64)prev".into(), "(u64)nv".into()),
                (DType::F16, _) => (
                    "f16_to_f32((u16)(prev >> sh))".into(),
                    "(prev & ~(0xffffu << sh)) | ((u32)f32_to_f16(nv) << sh)".into(),
                ),
                (DType::BF16, _) => (
                    "bf16_to_f32((u16)(prev >> sh))".into(),
                    "(prev & ~(0xffffu << sh)) | ((u32)f32_to_bf16(nv) << sh)".into(),
                ),
                (DType::U8 | DType::Bool, _) => (
                    "(u8)(prev >> sh)".into(),
                    "(prev & ~(0xffu << sh)) | ((u32)nv << sh)".into(),
                ),
            };
            match shift {
                Some((mask, _)) => {
                    // The containing 32-bit word (buffers are padded to 8 bytes), little-endian.
                    let _ = writeln!(s, "    {ap}{word}* w = ({ap}{word}*)((uptr)p & ~(uptr)3);");
                    let _ = writeln!(s, "    const u32 sh = (u32)(((uptr)p & {mask}) * 8);");
                }
                None => {
                    let _ = writeln!(s, "    {ap}{word}* w = ({ap}{word}*)p;");
                }
            }
            let cas = cas
                .replace("{p}", "w")
                .replace("{c}", "prev")
                .replace("{v}", "next");
            let _ = writeln!(s, "    {word} old = *w, prev;");
            let _ = writeln!(s, "    do {{");
            let _ = writeln!(s, "        prev = old;");
            let _ = writeln!(s, "        const {} cur = {unpack};", reg_ty(d));
            let _ = writeln!(s, "        const {} nv = {comb};", reg_ty(d));
            let _ = writeln!(s, "        const {word} next = {pack};");
            let _ = writeln!(s, "        old = {cas};");
            let _ = writeln!(s, "    }} while (old != prev);");
        }
        s.push_str("}\n");
        self.helpers.push_str(&s);
        self.atomics.insert((d, op), name.clone());
        Ok(name)
    }

    fn signature(&self, out: &mut String, name: &str) {
        self.signature_with(out, name, false);
    }

    /// The entry point's first line; `scratch` adds the scratch pointer of a split full
    /// reduction after the buffers.
    fn signature_with(&self, out: &mut String, name: &str, scratch: bool) {
        let mut params: Vec<String> = self
            .k
            .bufs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let constant = if b.output { "" } else { "const " };
                let (g, r, t) = (self.l.global, self.l.restrict, mem_ty(b.dtype));
                format!("{g}{constant}{t}* {r} b{i}")
            })
            .collect();
        if scratch {
            params.push(format!("{}u64* {} scratch", self.l.global, self.l.restrict));
        }
        params.extend((0..self.k.n_sizes).map(|s| format!("i64 s{s}")));
        let _ = writeln!(out, "{} {name}({}) {{", self.l.kernel, params.join(", "));
    }

    fn flat_entry(&mut self, name: &str) -> Result<String, String> {
        let mut out = String::new();
        self.signature(&mut out, name);
        let ph = &self.k.phases[0];
        let l = self.l;
        let _ = writeln!(
            out,
            "    const i64 n_outer = {};",
            extents_product(&self.k.outer)
        );
        let _ = writeln!(
            out,
            "    const i64 n_inner = {};",
            extents_product(&ph.inner)
        );
        let _ = writeln!(out, "    const i64 total = n_outer * n_inner;");
        let _ = writeln!(
            out,
            "    for (i64 g = {}; g < total; g += {}) {{",
            l.global_id, l.global_size
        );
        // Without outer (or inner) extents the flat index is the other one: no 64-bit
        // division per element (NVVM cannot see that `g < n_inner` when `n_outer` is 1).
        match (self.k.outer.is_empty(), ph.inner.is_empty()) {
            (true, _) => {
                let _ = writeln!(out, "        const i64 il = g;");
            }
            (false, true) => {
                let _ = writeln!(out, "        const i64 ol = g;");
            }
            (false, false) => {
                let _ = writeln!(out, "        const i64 ol = g / n_inner;");
                let _ = writeln!(out, "        const i64 il = g % n_inner;");
            }
        }
        decompose(&mut out, "        ", "o", &self.k.outer, "ol");
        decompose(&mut out, "        ", "i", &ph.inner, "il");
        self.body(&mut out, "        ", ph, true)?;
        out.push_str("    }\n}\n");
        Ok(out)
    }

    /// The initial accumulator, the fold of `x` into `acc`, and the final value, of a Reduce
    /// phase reducing values of dtype `d` with `op`.
    fn combine(&self, op: ReduceOp, d: DType, a: &str, b: &str) -> Result<String, String> {
        if op_is_f64(op, d) {
            return Ok(match op {
                ReduceOp::Prod => format!("({a} * {b})"),
                _ => format!("({a} + {b})"),
            });
        }
        self.binary(op.combiner(), d, a, b)
    }

    fn identity(op: ReduceOp, d: DType) -> String {
        let a = acc_dtype(op, d);
        lit(if a == DType::F64 {
            op.identity(DType::F64)
        } else {
            op.identity(d)
        })
    }

    /// Opens the loop over every outer iteration (`n_outer` of them, flattened) from `start`
    /// in steps of `step`, with the outer loop indices `o*` decomposed from `ol`.
    fn outer_loop(&self, out: &mut String, start: &str, step: &str) {
        let _ = writeln!(
            out,
            "    const i64 n_outer = {};",
            extents_product(&self.k.outer)
        );
        let _ = writeln!(
            out,
            "    for (i64 ol = {start}; ol < n_outer; ol += {step}) {{"
        );
        decompose(out, "        ", "o", &self.k.outer, "ol");
    }

    /// One thread's loop over a phase's inner iterations in order (the thread entry): the
    /// indices `i*` decomposed from `il`, the body, then `after` (e.g. a fold).
    fn sequential_inner_loop(
        &mut self,
        out: &mut String,
        ph: &Phase,
        atomic: bool,
        after: &str,
    ) -> Result<(), String> {
        let ind = "                ";
        let _ = writeln!(out, "        {{");
        let _ = writeln!(
            out,
            "            const i64 n = {};",
            extents_product(&ph.inner)
        );
        let _ = writeln!(out, "            for (i64 il = 0; il < n; il++) {{");
        decompose(out, ind, "i", &ph.inner, "il");
        self.body(out, ind, ph, atomic)?;
        out.push_str(after);
        let _ = writeln!(out, "            }}");
        let _ = writeln!(out, "        }}");
        Ok(())
    }

    fn thread_entry(&mut self, name: &str, atomic: bool) -> Result<String, String> {
        let mut out = String::new();
        self.signature(&mut out, name);
        self.outer_loop(&mut out, self.l.global_id, self.l.global_size);
        for (p, ph) in self.k.phases.iter().enumerate() {
            let ind = "            ";
            match &ph.kind {
                PhaseKind::Reduce { op, value, .. } => {
                    let d = ph.body[value.0 as usize].1;
                    let a = acc_dtype(*op, d);
                    let _ = writeln!(
                        out,
                        "        {} acc{p} = {};",
                        reg_ty(a),
                        Self::identity(*op, d)
                    );
                    let x = self.cast(d, a, &value.to_string());
                    let c = self.combine(*op, d, &format!("acc{p}"), &x)?;
                    self.sequential_inner_loop(
                        &mut out,
                        ph,
                        atomic,
                        &format!("{ind}    acc{p} = {c};\n"),
                    )?;
                    let fin = self.cast(a, d, &format!("acc{p}"));
                    let _ = writeln!(out, "        const {} r{p} = {fin};", reg_ty(d));
                }
                PhaseKind::Store(_) => self.sequential_inner_loop(&mut out, ph, atomic, "")?,
            }
        }
        out.push_str("    }\n}\n");
        Ok(out)
    }

    fn group_entry(&mut self, name: &str) -> Result<String, String> {
        let mut out = String::new();
        self.signature(&mut out, name);
        let l = self.l;
        let gs = GROUP_SIZE;
        for (p, ph) in self.k.phases.iter().enumerate() {
            if let PhaseKind::Reduce { op, value, .. } = &ph.kind {
                let a = acc_dtype(*op, ph.body[value.0 as usize].1);
                let _ = writeln!(out, "    {}{} red{p}[{gs}];", l.local, reg_ty(a));
            }
        }
        let _ = writeln!(out, "    const i64 lid = {};", l.local_id);
        self.outer_loop(&mut out, l.group_id, l.num_groups);
        let ind = "                ";
        for (p, ph) in self.k.phases.iter().enumerate() {
            let reduce = match &ph.kind {
                PhaseKind::Reduce { op, value, .. } => Some((*op, *value)),
                PhaseKind::Store(_) => None,
            };
            if let Some((op, value)) = reduce {
                let d = ph.body[value.0 as usize].1;
                let a = acc_dtype(op, d);
                let _ = writeln!(
                    out,
                    "        {} acc{p} = {};",
                    reg_ty(a),
                    Self::identity(op, d)
                );
            }
            let _ = writeln!(out, "        {{");
            let _ = writeln!(
                out,
                "            const i64 n = {};",
                extents_product(&ph.inner)
            );
            let _ = writeln!(out, "            for (i64 il = lid; il < n; il += {gs}) {{");
            decompose(&mut out, ind, "i", &ph.inner, "il");
            self.body(&mut out, ind, ph, true)?;
            if let Some((op, value)) = reduce {
                let d = ph.body[value.0 as usize].1;
                let x = self.cast(d, acc_dtype(op, d), &value.to_string());
                let c = self.combine(op, d, &format!("acc{p}"), &x)?;
                let _ = writeln!(out, "{ind}acc{p} = {c};");
            }
            let _ = writeln!(out, "            }}");
            let _ = writeln!(out, "        }}");
            if let Some((op, value)) = reduce {
                let d = ph.body[value.0 as usize].1;
                let a = acc_dtype(op, d);
                self.tree(&mut out, p, op, d)?;
                let fin = self.cast(a, d, &format!("red{p}[0]"));
                let _ = writeln!(out, "        const {} r{p} = {fin};", reg_ty(d));
            }
            // Every thread has read the reduction's result, and every store of the phase is
            // visible to the next phase (and the next outer iteration may reuse red{p}).
            let _ = writeln!(out, "        {}", l.barrier);
        }
        out.push_str("    }\n}\n");
        Ok(out)
    }

    /// Phase `k` of the split form of a full reduction (a kernel without outer loops), run
    /// with the same number of groups (`parts`) as every other phase's launch:
    /// - first the results of the earlier Reduce phases `j`: the group's threads fold the
    ///   `parts` partials of phase `j` from the scratch buffer (slots `j * parts ..`), thread
    ///   `t` the partials `t, t + 256, ..` in order, then the group's tree combines them (the
    ///   same fixed order in every group and every launch);
    /// - then phase `k`'s inner iterations, spread over all the launch's threads (iteration
    ///   `g * 256 + t + m * parts * 256` on thread `t` of group `g`); a Reduce phase folds
    ///   them into a private accumulator, the group's tree combines the 256 of them, and thread
    ///   0 writes the group's partial to slot `k * parts + g`.
    fn split_entry(&mut self, name: &str, k: usize) -> Result<String, String> {
        let mut out = String::new();
        self.signature_with(&mut out, name, true);
        let l = self.l;
        let gs = GROUP_SIZE;
        let g = l.global;
        let reduce = |ph: &Phase| match &ph.kind {
            PhaseKind::Reduce { op, value, .. } => Some((*op, ph.body[value.0 as usize].1)),
            PhaseKind::Store(_) => None,
        };
        for (p, ph) in self.k.phases.iter().enumerate().take(k + 1) {
            if let Some((op, d)) = reduce(ph) {
                let a = acc_dtype(op, d);
                let _ = writeln!(out, "    {}{} red{p}[{gs}];", l.local, reg_ty(a));
            }
        }
        let _ = writeln!(out, "    const i64 lid = {};", l.local_id);
        let _ = writeln!(out, "    const i64 gid = {};", l.group_id);
        let _ = writeln!(out, "    const i64 parts = {};", l.num_groups);
        let part = |p: usize, a: DType| format!("(({g}{}*)(scratch + {p} * parts))", reg_ty(a));
        for (j, ph) in self.k.phases.iter().enumerate().take(k) {
            if let Some((op, d)) = reduce(ph) {
                let a = acc_dtype(op, d);
                let _ = writeln!(out, "    {} acc{j} = {};", reg_ty(a), Self::identity(op, d));
                let c = self.combine(op, d, &format!("acc{j}"), &format!("{}[q]", part(j, a)))?;
                let _ = writeln!(
                    out,
                    "    for (i64 q = lid; q < parts; q += {gs}) acc{j} = {c};"
                );
                let mut t = String::new();
                self.tree(&mut t, j, op, d)?;
                for line in t.lines() {
                    let _ = writeln!(out, "{}", line.strip_prefix("    ").unwrap_or(line));
                }
                let fin = self.cast(a, d, &format!("red{j}[0]"));
                let _ = writeln!(out, "    const {} r{j} = {fin};", reg_ty(d));
            }
        }
        let ph = &self.k.phases[k];
        let red = reduce(ph);
        if let Some((op, d)) = red {
            let _ = writeln!(
                out,
                "    {} acc{k} = {};",
                reg_ty(acc_dtype(op, d)),
                Self::identity(op, d)
            );
        }
        let ind = "        ";
        let _ = writeln!(out, "    const i64 n = {};", extents_product(&ph.inner));
        let _ = writeln!(
            out,
            "    for (i64 il = gid * {gs} + lid; il < n; il += parts * {gs}) {{"
        );
        decompose(&mut out, ind, "i", &ph.inner, "il");
        self.body(&mut out, ind, ph, true)?;
        if let Some((op, d)) = red {
            let x = self.cast(d, acc_dtype(op, d), &ph_value(ph));
            let c = self.combine(op, d, &format!("acc{k}"), &x)?;
            let _ = writeln!(out, "{ind}acc{k} = {c};");
        }
        let _ = writeln!(out, "    }}");
        if let Some((op, d)) = red {
            let mut t = String::new();
            self.tree(&mut t, k, op, d)?;
            for line in t.lines() {
                let _ = writeln!(out, "{}", line.strip_prefix("    ").unwrap_or(line));
            }
            let _ = writeln!(
                out,
                "    if (lid == 0) {}[gid] = red{k}[0];",
                part(k, acc_dtype(op, d))
            );
        }
        out.push_str("}\n");
        Ok(out)
    }

    /// The tree reduction of the partials `acc{p}` of the group into `red{p}[0]` (followed
    /// by a barrier).
    fn tree(&self, out: &mut String, p: usize, op: ReduceOp, d: DType) -> Result<(), String> {
        let l = self.l;
        let b = l.barrier;
        let _ = writeln!(out, "        red{p}[lid] = acc{p};");
        let _ = writeln!(out, "        {b}");
        let c = self.combine(op, d, &format!("red{p}[lid]"), &format!("red{p}[lid + s]"))?;
        let last = if l.shuffles { 64 } else { 1 };
        let _ = writeln!(
            out,
            "        for (int s = {}; s >= {last}; s >>= 1) {{",
            GROUP_SIZE / 2
        );
        let _ = writeln!(out, "            if (lid < s) red{p}[lid] = {c};");
        let _ = writeln!(out, "            {b}");
        let _ = writeln!(out, "        }}");
        if l.shuffles {
            // The last 64 partials: one warp, 32 lanes, then shuffles down to lane 0.
            let a = acc_dtype(op, d);
            let ty = reg_ty(a);
            let c0 = self.combine(op, d, &format!("red{p}[lid]"), &format!("red{p}[lid + 32]"))?;
            let shfl = if ty == "u8" {
                "(u8)__shfl_down_sync(0xffffffffu, (int)w, o)".to_string()
            } else {
                "__shfl_down_sync(0xffffffffu, w, o)".to_string()
            };
            let c1 = self.combine(op, d, "w", "sh")?;
            let _ = writeln!(out, "        if (lid < 32) {{");
            let _ = writeln!(out, "            {ty} w = {c0};");
            let _ = writeln!(out, "            for (int o = 16; o > 0; o >>= 1) {{");
            let _ = writeln!(out, "                const {ty} sh = {shfl};");
            let _ = writeln!(out, "                w = {c1};");
            let _ = writeln!(out, "            }}");
            let _ = writeln!(out, "            if (lid == 0) red{p}[0] = w;");
            let _ = writeln!(out, "        }}");
            let _ = writeln!(out, "        {b}");
        }
        Ok(())
    }
}

/// The name of a Reduce phase's folded value (empty for a Store phase).
fn ph_value(ph: &Phase) -> String {
    match &ph.kind {
        PhaseKind::Reduce { value, .. } => value.to_string(),
        PhaseKind::Store(_) => String::new(),
    }
}

/// True when a reduction of dtype `d` (f64) with `op` accumulates by plain addition or
/// multiplication (a float sum or product).
fn op_is_f64(op: ReduceOp, d: DType) -> bool {
    d.is_float() && matches!(op, ReduceOp::Sum | ReduceOp::Prod)
}
