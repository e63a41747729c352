//! The GPU code generator: one C-style renderer of the kernel IR with two dialects (CUDA C and
//! OpenCL C), and the two runtimes that run them: [`cuda`] (NVRTC, the driver and cuBLAS
//! through cudarc) and [`opencl`] (any OpenCL device; in CI the CPU through pocl, which is how
//! the GPU kernels' logic is tested without a GPU), sharing a buffer [`pool`].
//!
//! [`render::render`] turns a [`Kernel`](metajit_metaops::kernel::Kernel) into source text;
//! everything that differs between the dialects (qualifiers, thread and group ids, barriers,
//! local/shared memory, atomics, warp shuffles, type names, pragmas, math names) lives in one
//! small table (`render::Lang`); the rest of the renderer, and the C helpers of
//! [`mod@prelude`], are shared.
//!
//! # ABI of a rendered entry point
//!
//! One pointer per kernel buffer parameter in `kernel.bufs` order (bool and u8 as
//! `unsigned char`, f16 and bf16 as `unsigned short` bits, i32 `int`, i64 64-bit, f32
//! `float`, f64 `double`), then one 64-bit signed integer per size parameter
//! (`kernel.n_sizes`; a `Param` is the value's bits in that integer, f16/bf16 as f32 bits).
//! Device buffers are padded to a multiple of 8 bytes (the compare-and-swap loops of narrow
//! dtypes work on the containing 32-bit word).
//!
//! The split entry points of a full reduction ([`render::Rendered::split_entries`], see
//! below) take one more pointer after the buffer pointers and before the sizes: `u64*
//! scratch`, the partials, which the runtime allocates (OpenCL: one buffer the runtime keeps
//! and grows, shared by every launch since its queue is in order; CUDA: from its pool, for
//! each split launch sequence) with at least [`render::SplitPlan::scratch_bytes`] bytes. No
//! other entry point's ABI changed.
//!
//! # Thread mapping
//!
//! Chosen per kernel when rendering, and per launch from the sizes
//! ([`render::Rendered::launch`]):
//! - **flat** (a single Store phase that loads none of its outputs): every loop, outer and
//!   inner, is flattened into one index space walked by a grid-stride loop; 256 threads per
//!   group, at most 65535 groups.
//! - **group** (kernels with a Reduce phase or several phases): one work-group (CUDA block) of
//!   256 threads per outer iteration (all outer loops flattened; a group-stride loop when there
//!   are more than 65535). Each phase's inner loops are flattened and strided over the group's
//!   threads; a Reduce phase folds into a private accumulator, then a tree reduction in local
//!   (shared) memory (CUDA: shared memory down to 64 lanes, then warp shuffles) gives every
//!   thread the result (`PhaseResult`); a barrier (local and global fence) follows every phase,
//!   so a later phase reads what an earlier phase of the same outer iteration stored.
//! - **thread** (the same kernels, a second entry point in the same source): one thread per
//!   outer iteration running its phases in order, in the interpreter's order (so reads across
//!   a column are coalesced for column sums). The launch picks it when the inner extent is
//!   small (at most 32), or the outer extent is large (at least 16384 with inner at most 1024),
//!   or the kernel is *outer-contiguous* and has at least 256 outer iterations
//!   ([`render::CONTIGUOUS_THREAD_MIN_OUTER`]); otherwise the group entry. These thresholds
//!   are untuned.
//!
//!   Outer-contiguous ([`render::Rendered::outer_contiguous`]) is decided when rendering, from
//!   the index arithmetic of every load: the stride of the offset along the last outer loop
//!   (the one neighbouring threads of the thread entry differ in) and along the innermost
//!   inner loop of the load's phase whose extent is not the constant 1, each classified as
//!   zero, unit (a loop index plus loop-invariant terms, times the constant 1, under `/` or
//!   `%` by an invariant, through `where`/max/min/casts), or other (scaled by a size, data-
//!   dependent, ...). The kernel is outer-contiguous when at least one load has a unit stride
//!   along the outer loop and a non-unit one along the inner loop, and no load has a unit
//!   stride along its inner loop (whose reads the group entry coalesces). A column sum
//!   (`x[i * n + o]`) is; a row sum (`x[o * n + i]`) is not. The size rule stays the fallback.
//! - **split** (a full reduction: no outer loop, and a group entry, i.e. not single-threaded):
//!   besides the group and thread entries, one entry point per phase, `{name}_split{k}`
//!   ([`render::Rendered::split_plan`]). The runtime launches them in phase order, each with
//!   the same `G` groups of 256 threads: phase `k`'s inner iterations are spread over all
//!   `G * 256` threads (thread `t` of group `g` takes iterations `g * 256 + t`, then every
//!   `G * 256`-th); a Reduce phase folds them into a private accumulator (f64 for float
//!   sums/products), the group's tree combines its 256, and thread 0 writes the group's
//!   partial to scratch slot `k * G + g` (8 bytes a slot, the accumulator's type). Each later
//!   launch first combines each earlier Reduce phase's `G` partials in a fixed order (thread
//!   `t` folds partials `t, t + 256, ..` in order, then the group's tree) and rounds once to the
//!   dtype, so a Store phase after the reductions (a mean's `r / n`, a softmax's quotient)
//!   runs in the last launch, spread over all the threads too.
//!   `G = clamp(ceil(n / 4096), 1, 1024)` for the largest phase's `n` inner iterations
//!   ([`render::split_parts`]: a function of the sizes only, so a result is deterministic for
//!   given sizes: two runs are bitwise equal); with `G = 1` the plain launch (the group
//!   entry) runs instead.
//! - Kernels that are not `parallel` run the thread entry on one thread — the single-thread
//!   fallback — unless every store into an output combines and no output is loaded (the
//!   kernel IR then allows splitting loop 0): those take the flat or group mapping with atomic
//!   combines.
//!
//! Outer loops after loop 0 are flattened with it: the mapping assumes (as the schedules'
//! kernels satisfy) that no outer iteration loads what another one stores.
//!
//! Combine stores (scatter-add/prod/max/min/and/or) are atomic wherever two threads may reach
//! one element (the flat and group entries, and the thread entry of a kernel that is not
//! `parallel` or has more than one outer loop):
//! CUDA uses `atomicAdd` for f32/f64/i32 sums; every other case, and every OpenCL atomic (OpenCL
//! 1.2 has no float atomics), is a compare-and-swap loop on the 32- or 64-bit word (for
//! u8/bool/f16/bf16 on the containing 32-bit word). The combines' order is then unspecified:
//! integer, max/min/and/or results are unchanged, float sums and products are reassociated.
//!
//! # Precision contract
//!
//! Every element-wise op is computed as the reference interpreter does: f32 in f32, f64 in f64,
//! f16/bf16 in f32 and rounded to nearest even after every op (software conversions, exact);
//! integer arithmetic wraps, integer division and modulo are floor division with 0 for a zero
//! divisor; casts saturate with NaN -> 0; max/min propagate NaN. Float contraction into FMA is
//! off (OpenCL `FP_CONTRACT OFF`, NVRTC `--fmad=false`) and f32 division and square root are
//! correctly rounded (`-cl-fp32-correctly-rounded-divide-sqrt`; NVRTC's default `-prec-div`
//! and `-prec-sqrt`), so add/sub/mul/div/sqrt, comparisons, casts, integer ops and Philox's bits
//! are bit-exact. Transcendentals (exp, log, sin, cos, tanh, erf, pow, sigmoid, and the
//! normal samples' log/cos) use the device's math library: within its documented ulp bounds
//! (OpenCL 1.2: up to 4 ulp for f32; CUDA: up to 2-4 ulp), not bit-exact.
//!
//! Float sums and products accumulate in f64 (the kernel IR's contract, the same as the CPU
//! backend), in a fixed order: each thread folds its strided share in order, then a fixed
//! tree combines the 256 partials (for a split full reduction, then the `G` groups' f64
//! partials, combined in the fixed order above); the result is rounded once to the dtype. Results therefore
//! agree with the interpreter's sequential f64 sum to within an ulp of the dtype for f32/f16/
//! bf16 (f64 sums may differ in the last bits from reassociation). This needs a device with
//! f64 (OpenCL `cl_khr_fp64`; every CUDA GPU).
//!
//! Why f64 rather than f32 with a tree order: a reduction does one f64 add per element it
//! reads, so it stays bound by memory, not by f64 arithmetic, on any CUDA GPU. An H100/H200
//! streams 3.3-4.8 TB/s, about 1.2 T f32 elements/s, against 34-67 TFLOP/s of f64; a consumer
//! card with 1/64-rate f64 (about 1.3 TFLOP/s on an RTX 4090) reads about 0.25 T elements/s.
//! And the results then match the CPU backend's and the interpreter's, instead of differing
//! by the f32 rounding of every partial sum.
//!
//! # Contractions
//!
//! CUDA maps contractions to cuBLAS (strided-batched calls; a naive kernel for layouts cuBLAS
//! cannot take, see [`cuda`]). The OpenCL backend computes contractions with a generated GEMM kernel (16x16 tiles in
//! local memory, products in the element type accumulated in f64, rounded once; untuned). Its
//! layout comes in a small read-only buffer cached per layout, so a contraction is enqueued
//! like any launch, without waiting for the queue.
//!
//! # Buffers
//!
//! Both runtimes allocate device buffers from one size-class pool ([`pool`]), which hands a
//! dropped buffer to the next allocation of its class at once: safe because each runtime
//! enqueues everything on one in-order stream (CUDA) or queue (OpenCL).
//!
//! # What is not done or not verified
//!
//! - The split's `G`, the contiguity rule's threshold and the size thresholds are untuned
//!   (measured on pocl only, which is not a GPU). The split launches every phase with `G`
//!   groups, even a one-element Store phase; a kernel with an outer loop of very few
//!   iterations (a sum over rows of a 2 x 10^7 matrix) still runs one group per iteration.
//! - The contiguity rule is a heuristic on the index arithmetic; a column sum with too few
//!   columns for the device (under 256) keeps the group entry's strided reads.
//! - The CUDA runtime ([`cuda`]: NVRTC and cuBLAS through cudarc) has never run on a GPU. Its
//!   source is compiled by the real NVRTC (13.x) without a GPU: every kernel the tests make
//!   assembles to sm_90 machine code, with the entry points and parameters a launch passes
//!   (`codegen/tests/nvrtc.rs`, in CI). The CUDA dialect also runs on the CPU: g++ compiles it
//!   against an emulation of CUDA's builtins (`codegen/tests/cuda_emu.h`: fiber threads,
//!   `__syncthreads`, warp shuffles, atomics), and the shared backend suite checks every entry
//!   point against the interpreter (`cuda_emu` in `codegen/tests/devices.rs`). That executes
//!   the dialect's logic, not CUDA: the driver, module loading, launches on a device, cuBLAS,
//!   the copies and memsets, and CUDA's math library have not run.

pub mod cuda;
pub mod opencl;
pub mod pool;
pub mod prelude;
pub mod render;

/// The C dialect a kernel is rendered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// CUDA C++ for NVRTC (`extern "C" __global__` entry points).
    Cuda,
    /// OpenCL C 1.2 (with `cl_khr_fp64` and `cl_khr_int64_base_atomics`).
    OpenCl,
}
