//! Kernel IR → Cranelift IR: one native function per [`Kernel`].
//!
//! [`lower`] builds a function with the signature of [`crate::cpu::jit::KernelFn`]:
//!
//! ```text
//! extern "C" fn(bufs: *const *mut u8, sizes: *const i64, start: i64, end: i64,
//!               helpers: *const usize)
//! ```
//!
//! # Loop structure
//!
//! Loop 0 ([`Kernel::split_extent`]: outer loop 0, or inner loop 0 of a lone Store phase) runs
//! over `start..end`; every other loop over its full extent. A kernel without a loop to split
//! ignores `start`/`end`. Every loop nest is guarded once (all extents positive) and then runs
//! as do-while loops. Each instruction of a phase is emitted at the shallowest loop level it
//! depends on (level 0: once per phase and outer iteration; level `j + 1`: inside inner loop
//! `j`), so broadcast loads and index arithmetic are hoisted out of the loops that do not
//! change them. The guard makes the hoisting safe: nothing is loaded for an empty loop nest.
//!
//! # Vectorisation
//!
//! A phase whose innermost loop computes f32 values (or a Reduce phase over f32 with sum, prod,
//! max or min) gets an `f32x4` main loop, unrolled [`UNROLL`] times when it is small
//! ([`SUM_UNROLL`] times for a plain f32 sum), plus a
//! scalar tail loop emitted from the same instructions. In the vector loop each value is one
//! of:
//!
//! - *uniform*: computed outside the innermost loop (a scalar, splatted where a vector is
//!   needed);
//! - *affine* (i64 only): `base + lane·stride`, tracked through `add`, `sub`, `mul` by a uniform
//!   value and `neg`; a load or store at an affine offset of stride 1 is one vector access;
//! - *vector*: an `f32x4`, or for bool an `i32x4` mask of all-ones/zero lanes;
//! - *lanes*: four scalars. Every operation without a vector form (integer and f64 arithmetic,
//!   casts other than f32↔bool, `pow`, `mod`, Philox, gathers at non-contiguous offsets) is
//!   emitted once per lane with the scalar lowering, so the vector loop accepts every kernel.
//!
//! An i64 comparison of two affine values of constant strides is an `i32x4` mask (computed as
//! two `i64x2` halves, so the lanes wrap as the scalars do). A masked read (padding, windows)
//! reads at safe coordinates `where(valid, coordinate, 0)`, which are lanes; so a vector body
//! with such reads (the conditions of those `where`s are its *guards*, see `guard_masks`) is
//! emitted twice per copy: when every guard holds in every lane (checked once per copy), with
//! the guards known true, so the coordinates are the unmasked ones (a contiguous read is one
//! vector load) and each `where` on a guard is its first operand; otherwise as usual. Both
//! compute the same values (a padding copy of 16×64×56×56: 2.1 → 0.74 ms).
//!
//! Stores that are masked, combining, of a non-f32 buffer or at a non-contiguous offset are
//! done lane by lane, in lane order (so the scatter order equals the interpreter's); but for
//! an unmasked sum or product into f32 at a contiguous offset (distinct elements: a row of a
//! scatter-add), which is one vector read-modify-write. Reduce phases keep vector
//! accumulators per unrolled copy (max/min: one `f32x4`; sum/prod: two
//! `f64x2`, the interpreter accumulating float sums and products in f64; with FMA, a sum adds
//! as `acc * 1 + x`, the same bits on the multiply-add ports), fold them lane-wise
//! and then horizontally at the end of the row, and continue in the scalar tail. So vectorised
//! sums are reassociated in f64 (in practice the rounded result equals the interpreter's), and
//! a max/min over both `-0.0` and `+0.0` may pick the other zero; everything else is exact. A
//! phase falls back to the plain scalar loop when vectorising could reorder memory effects: a
//! buffer stored twice in the phase, or loaded in the phase at an offset other than the
//! contiguous offset it is stored at. A Reduce phase may store too (the scheduler keeps a
//! costly value for a later phase that way); its stores are emitted as a Store phase's, under
//! the same rules, beside the fold; when the phase is costly and stores the very value it
//! folds, contiguously, the stores run as one loop and the fold as a second one over the stored
//! values (`split_fold`). Split reductions and column blocks take only Reduce phases that do
//! not store. A vector loop using f32 transcendentals loads their constants from
//! [`math::const_table`] (its address is the word after the helper table), through an address
//! carried around the loop so that the loads stay in it (see [`math::emit_unary_with`]).
//!
//! # Column blocks
//!
//! A reduction over a non-contiguous axis whose kept trailing axis is contiguous (a column
//! sum, a bias gradient: outer loops ending in the columns, one f32 sum/prod/max/min phase over
//! the rows whose loads are contiguous along the last outer loop, then one store of the result
//! contiguous along it; see `column_block`) would read one column at a time with a strided
//! inner loop. Instead the last outer loop runs in blocks of up to 512 columns: each block
//! keeps per-column accumulators on the stack (sum/prod: f64, max/min: f32), runs the reduced
//! loops outside and the block's columns inside, 8 at a time as two `f32x4` (the loads are
//! plain vector loads of a row; the innermost reduced loop visits each group's accumulators
//! once per 8 rows, folding them in order in registers), and then stores the block's results
//! as vectors; the last
//! columns (fewer than 8) take the scalar path. Every column still folds its rows in order into
//! its own accumulator, so the results equal the interpreter's bit for bit (sums and products
//! in f64 rounded once; max/min with the NaN rule). Loop 0 splits across threads as before
//! (the columns, when the columns are loop 0).
//!
//! # Split reductions
//!
//! A kernel that reduces to one value ([`split_reduce`]: no outer loops, one f32 sum, prod, max
//! or min phase, then a Store phase without loops) reads a mode word after the sizes array
//! (`jit::with_divisors`): 0 runs it whole; 1 folds `start..end` of its reduced loop 0 and
//! writes the accumulator, unrounded (f64 for sums and products), to the word after the mode;
//! 2 takes that word as the folded value, rounds it and runs the Store phase. The launch
//! (`jit::CompiledKernel::run`) uses 1 per thread and 2 once, combining the partials in order.
//!
//! # Scalar semantics
//!
//! Those of `metajit_metaops::interp` (and `kernel::interpret` for phases: float sum/prod of
//! f32/f16/bf16 accumulate in f64 and round once; `Param` and `Random` seeds read the sizes
//! array). Bool and u8 are `i8` (bool 0/1), f16 and bf16 values are held as the `f32` they
//! equal and rounded back after every operation (bf16 inline, round-to-nearest-even by integer
//! arithmetic; f16 through a helper). f32 transcendentals are the inline polynomials of
//! [`super::math`]; f64 (and the f32 ones used by f16/bf16, which must match the interpreter
//! bit for bit) call the helper table (see [`super::jit::Helper`]), as do `pow` and float
//! `mod`. Max/min are a compare and a select with the NaN rule (a float select is an integer
//! select of the bits: no data-dependent branch, see `select`); integer division and modulo are
//! floor division with 0 for a zero divisor and wrapping at `MIN / -1` (Cranelift's `sdiv`
//! would trap; the divisor is replaced first).

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, F64, F64X2, I8, I8X16, I32, I32X4, I64, I64X2};
use cranelift_codegen::ir::{
    self, AbiParam, BlockArg, ConstantData, Endianness, InstBuilder, MemFlagsData, SigRef,
    Signature, Type, Value,
};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use metajit_metaops::kernel::{Extent, Inst, Kernel, Phase, PhaseKind, Store, V};
use metajit_metaops::{BinaryOp, DType, Distribution, ReduceOp, Scalar, UnaryOp};

use super::jit::{Helper, MATH_CONSTS_SLOT};
use super::math::{self, MathFn};

/// Lanes of the vector type (`f32x4`: Cranelift has 128-bit vectors only on x86-64).
pub const LANES: usize = 4;
/// Copies of the vector body per main-loop iteration, for small bodies and reductions (more
/// independent accumulators); bodies costlier than [`UNROLL_MAX_COST`] are not unrolled (they
/// have enough instruction-level parallelism, and unrolling doubles their compile time).
pub const UNROLL: usize = 2;
/// The largest innermost body (in rough instruction counts, a transcendental counting 40) that
/// is unrolled.
pub const UNROLL_MAX_COST: usize = 40;
/// Copies of the vector body of an f32 sum whose body costs at most [`SUM_UNROLL_MAX_COST`]
/// (a load and an index or two: a plain sum): eight `f64x2` accumulators, enough independent
/// chains to keep the conversions and the adds (fused multiply-adds by 1, on other ports) busy.
pub const SUM_UNROLL: usize = 4;
/// The largest innermost body of a sum unrolled [`SUM_UNROLL`] times.
pub const SUM_UNROLL_MAX_COST: usize = 8;

pub use metajit_metaops::kernel::InvalidKernel;

/// The Cranelift type that holds a value of `dt` in registers.
pub fn cl_type(dt: DType) -> Type {
    match dt {
        DType::Bool | DType::U8 => I8,
        DType::I32 => I32,
        DType::I64 => I64,
        DType::F16 | DType::BF16 | DType::F32 => F32,
        DType::F64 => F64,
    }
}

/// Lowers `k` to a Cranelift function for `isa` (checked first: see [`Kernel::check`]).
pub fn lower(k: &Kernel, isa: &dyn TargetIsa) -> Result<ir::Function, InvalidKernel> {
    k.check()?;
    let call_conv = isa.default_call_conv();
    let mut sig = Signature::new(call_conv);
    for _ in 0..5 {
        sig.params.push(AbiParam::new(I64));
    }
    let mut func = ir::Function::with_name_signature(ir::UserFuncName::user(0, 0), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let arg_flags = MemFlagsData::trusted().with_readonly().with_can_move();
    let bufs = (0..k.bufs.len())
        .map(|i| b.ins().load(I64, arg_flags, p[0], (8 * i) as i32))
        .collect();
    let sizes: Vec<Value> = (0..k.n_sizes)
        .map(|i| b.ins().load(I64, arg_flags, p[1], (8 * i) as i32))
        .collect();
    // Entries that are only ever sizes (extents, never negative): floor division by them uses
    // the constants after the sizes array (`jit::with_divisors`) instead of a hardware divide.
    let mut is_param = vec![false; k.n_sizes];
    let mut is_size = vec![false; k.n_sizes];
    for ph in &k.phases {
        for (inst, _) in &ph.body {
            match inst {
                Inst::Size(s) if *s < k.n_sizes => is_size[*s] = true,
                Inst::Param(s) if *s < k.n_sizes => is_param[*s] = true,
                _ => {}
            }
        }
    }
    let divisors = (0..k.n_sizes)
        .map(|i| {
            (is_size[i] && !is_param[i]).then(|| {
                let at = 8 * (k.n_sizes + 2 * i);
                let m = b.ins().load(I64, arg_flags, p[1], at as i32);
                let sh = b.ins().load(I64, arg_flags, p[1], (at + 8) as i32);
                (m, sh)
            })
        })
        .collect();
    // A split reduction's mode and partial-result word, after the division constants.
    let split = split_reduce(k).map(|_| {
        let at = 8 * (3 * k.n_sizes) as i64;
        let mode = b.ins().load(I64, arg_flags, p[1], at as i32);
        let slot = b.ins().iadd_imm_s(p[1], at + 8);
        (mode, slot)
    });
    let mut cx = Cx {
        k,
        b,
        call_conv,
        has_fma: math::isa_has_fma(isa),
        bufs,
        sizes,
        divisors,
        start: p[2],
        end: p[3],
        helpers: p[4],
        sigs: HashMap::new(),
        outer_idx: vec![p[2]; k.outer.len()],
        inner_idx: Vec::new(),
        results: Vec::new(),
        splats: HashMap::new(),
        column: column_block(k),
        split,
        reduce_range: false,
        keep_raw: false,
        math_table: None,
    };
    cx.kernel_body();
    cx.b.ins().return_(&[]);
    cx.b.seal_all_blocks();
    cx.b.finalize(isa.frontend_config());
    Ok(func)
}

// ---------------------------------------------------------------------------------------------
// Planning.

/// How a phase is emitted.
struct Plan {
    /// Per instruction: 0 = once per phase, `j + 1` = inside inner loop `j`.
    levels: Vec<usize>,
    /// Whether the innermost loop gets the f32x4 main loop.
    vectorize: bool,
    /// Copies of the vector body per main-loop iteration.
    unroll: usize,
    /// A plain f32 sum (see [`SUM_UNROLL`]).
    plain_sum: bool,
    /// Whether inner loop 0 runs over `start..end`.
    split_inner: bool,
    /// The value of each i64 constant.
    consts: Vec<Option<i64>>,
}

/// Static classification of an i64 value by its dependence on the innermost index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dep {
    Invariant,
    Unit,
    Other,
}

/// The dependence of a value that varies with the loop index in question: `Unit` for the
/// index itself, the index plus or minus an invariant, and an i64 cast of such; `Other` else.
fn varying_dep(inst: &Inst, d: impl Fn(&V) -> Dep, dt_of: impl Fn(&V) -> DType) -> Dep {
    match inst {
        Inst::LoopIdx(_) => Dep::Unit,
        Inst::Binary(BinaryOp::Add, a, b) => match (d(a), d(b)) {
            (Dep::Unit, Dep::Invariant) | (Dep::Invariant, Dep::Unit) => Dep::Unit,
            _ => Dep::Other,
        },
        Inst::Binary(BinaryOp::Sub, a, b) if (d(a), d(b)) == (Dep::Unit, Dep::Invariant) => {
            Dep::Unit
        }
        Inst::Cast(DType::I64, a) if dt_of(a) == DType::I64 => d(a),
        _ => Dep::Other,
    }
}

fn plan(k: &Kernel, p: usize) -> Plan {
    plan_of(k, &k.phases[p])
}

fn plan_of(k: &Kernel, ph: &Phase) -> Plan {
    let no = k.outer.len();
    let ni = ph.inner.len();
    let mut levels = Vec::with_capacity(ph.body.len());
    for (inst, _) in &ph.body {
        let lv = |v: &V| levels[v.0 as usize];
        let l = match inst {
            Inst::Const(_) | Inst::Size(_) | Inst::Param(_) | Inst::PhaseResult(_) => 0,
            Inst::LoopIdx(l) => {
                if *l < no {
                    0
                } else {
                    l - no + 1
                }
            }
            _ => inst.operands().iter().map(lv).max().unwrap_or(0),
        };
        levels.push(l);
    }
    let consts = ph
        .body
        .iter()
        .map(|(inst, _)| match inst {
            Inst::Const(Scalar::I64(c)) => Some(*c),
            _ => None,
        })
        .collect();
    let split_inner = k.outer.is_empty() && k.split_extent().is_some() && ni > 0;
    let vectorize = ni > 0 && vectorizable(ph, &levels);
    let cost: usize = ph
        .body
        .iter()
        .zip(&levels)
        .filter(|(_, l)| **l == ni)
        .map(|((inst, _), _)| match inst {
            Inst::Unary(op, _) if math_fn(*op).is_some() => 40,
            Inst::Random { .. } => 200,
            _ => 1,
        })
        .sum();
    let wide_sum = matches!(&ph.kind, PhaseKind::Reduce { op: ReduceOp::Sum, value, .. }
        if ph.body[value.0 as usize].1 == DType::F32);
    let plain_sum = wide_sum && cost <= SUM_UNROLL_MAX_COST;
    let unroll = if plain_sum {
        SUM_UNROLL
    } else if cost <= UNROLL_MAX_COST {
        UNROLL
    } else {
        1
    };
    Plan {
        levels,
        vectorize,
        unroll,
        plain_sum,
        split_inner,
        consts,
    }
}

fn vectorizable(ph: &Phase, levels: &[usize]) -> bool {
    let ni = ph.inner.len();
    let dt_of = |v: &V| ph.body[v.0 as usize].1;
    let work = match &ph.kind {
        PhaseKind::Reduce { op, value, .. } => {
            dt_of(value) == DType::F32
                && matches!(
                    op,
                    ReduceOp::Sum | ReduceOp::Prod | ReduceOp::Max | ReduceOp::Min
                )
        }
        PhaseKind::Store(_) => ph
            .body
            .iter()
            .zip(levels)
            .any(|((_, dt), &l)| l == ni && *dt == DType::F32),
    };
    if !work {
        return false;
    }
    // Dependence of each i64 value on the innermost index.
    let mut dep = Vec::with_capacity(ph.body.len());
    for (i, (inst, _)) in ph.body.iter().enumerate() {
        let d = |v: &V| dep[v.0 as usize];
        let x = if levels[i] < ni {
            Dep::Invariant
        } else {
            varying_dep(inst, d, dt_of)
        };
        dep.push(x);
    }
    let mut seen = Vec::new();
    for st in ph.kind.stores() {
        if seen.contains(&st.buf) {
            return false;
        }
        seen.push(st.buf);
        let simple =
            st.mask.is_none() && st.combine.is_none() && dep[st.offset.0 as usize] == Dep::Unit;
        for (inst, _) in &ph.body {
            if let Inst::Load { buf, offset } = inst
                && *buf == st.buf
                && !(simple && *offset == st.offset)
            {
                return false;
            }
        }
    }
    true
}

/// A costly Reduce phase over one inner loop that also stores the f32 value it folds, at a
/// contiguous offset into a buffer it stores nothing else into (softmax's exp-and-sum, see
/// `schedule::keep_across_phases`), is emitted as two loops: the phase's stores (a Store phase),
/// then a plain fold of the stored values, read back. The row is in L1; the f32 -> f64
/// conversions and f64 adds of the fold then no longer compete with the exp for the
/// floating-point ports (W2: 6% faster on one core). Same values, same fold: the offset is
/// distinct for each iteration, so each stored value is read back as stored.
fn split_fold(k: &Kernel, ph: &Phase) -> Option<(Phase, Phase)> {
    let PhaseKind::Reduce { op, value, stores } = &ph.kind else {
        return None;
    };
    if ph.inner.len() != 1 || ph.body[value.0 as usize].1 != DType::F32 {
        return None;
    }
    let levels = plan_of(k, ph).levels;
    let cost: usize = ph
        .body
        .iter()
        .zip(&levels)
        .filter(|(_, l)| **l == 1)
        .map(|((inst, _), _)| match inst {
            Inst::Unary(op, _) if math_fn(*op).is_some() => 40,
            Inst::Random { .. } => 200,
            _ => 1,
        })
        .sum();
    if cost <= UNROLL_MAX_COST {
        return None;
    }
    let dt_of = |v: &V| ph.body[v.0 as usize].1;
    let mut dep = Vec::with_capacity(ph.body.len());
    for (i, (inst, _)) in ph.body.iter().enumerate() {
        let d = |v: &V| dep[v.0 as usize];
        let x = if levels[i] < 1 {
            Dep::Invariant
        } else {
            varying_dep(inst, d, dt_of)
        };
        dep.push(x);
    }
    let st = stores.iter().find(|st| {
        st.value == *value
            && st.mask.is_none()
            && st.combine.is_none()
            && k.bufs[st.buf].dtype == DType::F32
            && dep[st.offset.0 as usize] == Dep::Unit
    })?;
    if stores.iter().filter(|s| s.buf == st.buf).count() > 1 {
        return None;
    }
    // The offset's instructions, then the load.
    let mut need = vec![false; ph.body.len()];
    let mut stack = vec![st.offset.0 as usize];
    while let Some(j) = stack.pop() {
        if !need[j] {
            need[j] = true;
            stack.extend(ph.body[j].0.operands().iter().map(|o| o.0 as usize));
        }
    }
    let mut body = Vec::new();
    let mut map = vec![None; ph.body.len()];
    for j in (0..ph.body.len()).filter(|&j| need[j]) {
        let inst = ph.body[j]
            .0
            .map_operands(|o| map[o.0 as usize].expect("operands precede"));
        body.push((inst, ph.body[j].1));
        map[j] = Some(V(body.len() as u32 - 1));
    }
    body.push((
        Inst::Load {
            buf: st.buf,
            offset: map[st.offset.0 as usize].expect("mapped"),
        },
        DType::F32,
    ));
    let load = V(body.len() as u32 - 1);
    Some((
        Phase {
            inner: ph.inner.clone(),
            body: ph.body.clone(),
            kind: PhaseKind::Store(stores.clone()),
        },
        Phase {
            inner: ph.inner.clone(),
            body,
            kind: PhaseKind::Reduce {
                op: *op,
                value: load,
                stores: Vec::new(),
            },
        },
    ))
}

fn math_fn(op: UnaryOp) -> Option<MathFn> {
    Some(match op {
        UnaryOp::Exp => MathFn::Exp,
        UnaryOp::Log => MathFn::Log,
        UnaryOp::Sin => MathFn::Sin,
        UnaryOp::Cos => MathFn::Cos,
        UnaryOp::Tanh => MathFn::Tanh,
        UnaryOp::Sigmoid => MathFn::Sigmoid,
        UnaryOp::Erf => MathFn::Erf,
        _ => return None,
    })
}

/// The reduction op, and whether it accumulates in f64, of a kernel whose reduction may be
/// split across threads in two levels: no outer loops, one f32 sum, prod, max or min phase over
/// inner loops, then a Store phase without loops. Its code takes a mode word and a partial's
/// word after the sizes array ([`super::jit::with_divisors`]; see `Cx::split_body`).
pub fn split_reduce(k: &Kernel) -> Option<(ReduceOp, bool)> {
    if !k.outer.is_empty() {
        return None;
    }
    let [red, st] = k.phases.as_slice() else {
        return None;
    };
    let (PhaseKind::Reduce { op, value, stores }, PhaseKind::Store(_)) = (&red.kind, &st.kind)
    else {
        return None;
    };
    (!red.inner.is_empty()
        && stores.is_empty()
        && st.inner.is_empty()
        && red.body[value.0 as usize].1 == DType::F32
        && matches!(
            op,
            ReduceOp::Sum | ReduceOp::Prod | ReduceOp::Max | ReduceOp::Min
        ))
    .then_some((*op, matches!(op, ReduceOp::Sum | ReduceOp::Prod)))
}

/// Columns per group of a column block: two `f32x4` vectors.
const GROUP: i64 = 2 * LANES as i64;
/// Groups per column block: 512 columns, whose f64 accumulators (64 bytes a group) take 4 KiB
/// of stack.
const GROUPS: i64 = 64;
/// Rows folded per visit of a group's accumulators.
const ROWS: i64 = 8;

/// What the rows of a column block need (see `Cx::column_rows`).
struct ColumnCx<'p> {
    pl: &'p Plan,
    varies: &'p [bool],
    cb: Value,
    ng: Value,
    acc_base: Value,
    op: ReduceOp,
    value: V,
    wide: bool,
}

/// Bytes of accumulator per group (an f64 per column).
const GROUP_BYTES: i64 = GROUP * 8;

/// Dependence of each i64 value of `ph` on loop index `target`, and whether each instruction
/// depends on it at all (or on a phase result, when `results_vary`).
fn dep_on(ph: &Phase, target: usize, results_vary: bool) -> (Vec<Dep>, Vec<bool>) {
    let dt_of = |v: &V| ph.body[v.0 as usize].1;
    let mut dep: Vec<Dep> = Vec::with_capacity(ph.body.len());
    let mut varies: Vec<bool> = Vec::with_capacity(ph.body.len());
    for (inst, _) in &ph.body {
        let d = |v: &V| dep[v.0 as usize];
        let vary = match inst {
            Inst::LoopIdx(l) => *l == target,
            Inst::PhaseResult(_) => results_vary,
            _ => inst.operands().iter().any(|o| varies[o.0 as usize]),
        };
        let x = if !vary {
            Dep::Invariant
        } else {
            varying_dep(inst, d, dt_of)
        };
        dep.push(x);
        varies.push(vary);
    }
    (dep, varies)
}

/// Whether the last outer loop of `k` is emitted in column blocks: `k` is a reduction over
/// a non-contiguous axis (a column sum: one f32 sum, prod, max or min phase whose loads are
/// contiguous along the last outer loop, then one store of the result, contiguous along it
/// too). See "Column blocks" in the module documentation.
pub fn column_block(k: &Kernel) -> bool {
    let Some(col) = k.outer.len().checked_sub(1) else {
        return false;
    };
    let [red, st] = k.phases.as_slice() else {
        return false;
    };
    let (
        PhaseKind::Reduce {
            op,
            value,
            stores: red_stores,
        },
        PhaseKind::Store(stores),
    ) = (&red.kind, &st.kind)
    else {
        return false;
    };
    if red.inner.is_empty()
        || !red_stores.is_empty()
        || !st.inner.is_empty()
        || red.body[value.0 as usize].1 != DType::F32
        || !matches!(
            op,
            ReduceOp::Sum | ReduceOp::Prod | ReduceOp::Max | ReduceOp::Min
        )
    {
        return false;
    }
    let (rdep, _) = dep_on(red, col, false);
    let (sdep, _) = dep_on(st, col, true);
    let loads = |ph: &Phase| -> Vec<(usize, V)> {
        ph.body
            .iter()
            .filter_map(|(inst, _)| match inst {
                Inst::Load { buf, offset } => Some((*buf, *offset)),
                _ => None,
            })
            .collect()
    };
    let (rl, sl) = (loads(red), loads(st));
    let contiguous = rl.iter().any(|(_, o)| rdep[o.0 as usize] == Dep::Unit);
    // A load that is contiguous along the innermost reduced loop is better served by the
    // ordinary vector loop.
    let ni = red.inner.len();
    let (idep, _) = dep_on(red, k.outer.len() + ni - 1, false);
    let along_rows = rl.iter().any(|(_, o)| idep[o.0 as usize] == Dep::Unit);
    let stores_ok = stores.iter().all(|s| {
        s.mask.is_none()
            && s.combine.is_none()
            && k.bufs[s.buf].dtype == DType::F32
            && sdep[s.offset.0 as usize] == Dep::Unit
            && !rl.iter().chain(&sl).any(|(b, _)| *b == s.buf)
    });
    let distinct = stores
        .iter()
        .enumerate()
        .all(|(i, s)| stores[..i].iter().all(|t| t.buf != s.buf));
    contiguous && !along_rows && stores_ok && distinct
}

/// The guard masks of a vector body: the conditions of the i64 `where`s at the innermost
/// level in the offset of a load at that level (the scheduler's `where(valid, coordinate, 0)`
/// that keeps a masked read in bounds: padding, windows), where the offset, each such
/// `where` taken as its first operand, and the conditions read no loaded value. With every
/// guard true in every lane, the offset is then the unmasked one (often affine: one vector
/// load) and each `where` on a guard its first operand (see `vector_innermost`).
fn guard_masks(ph: &Phase, levels: &[usize]) -> Vec<usize> {
    let ni = ph.inner.len();
    let n = ph.body.len();
    // Whether the innermost-level instructions that `from` reads, following only the first
    // operand of the i64 `where`s when `take` is set (collecting their conditions), include a
    // load.
    let walk = |from: usize, take: bool, conds: &mut Vec<usize>| {
        let mut seen = vec![false; n];
        let mut stack = vec![from];
        while let Some(j) = stack.pop() {
            if seen[j] || levels[j] != ni {
                continue;
            }
            seen[j] = true;
            match &ph.body[j] {
                (Inst::Load { .. }, _) => return true,
                (Inst::Where(m, t, _), DType::I64) if take => {
                    conds.push(m.0 as usize);
                    stack.push(t.0 as usize);
                }
                (inst, _) => stack.extend(inst.operands().iter().map(|o| o.0 as usize)),
            }
        }
        false
    };
    let mut guards = Vec::new();
    for (inst, _) in &ph.body {
        let Inst::Load { offset, .. } = inst else {
            continue;
        };
        let mut conds = Vec::new();
        if walk(offset.0 as usize, true, &mut conds) {
            continue;
        }
        if conds.iter().all(|&m| !walk(m, false, &mut Vec::new())) {
            guards.extend(conds);
        }
    }
    guards.sort_unstable();
    guards.dedup();
    guards
}

// ---------------------------------------------------------------------------------------------
// Vector-loop values.

/// The stride of an affine i64 value.
#[derive(Clone, Copy)]
enum Stride {
    K(i64),
    V(Value),
}

/// A value in one copy of the vector body.
#[derive(Clone, Copy)]
enum VV {
    /// The same scalar in every lane.
    Uni(Value),
    /// `f32x4`, or an `i32x4` mask for bool.
    Vec(Value),
    /// One scalar per lane.
    Lanes([Value; LANES]),
    /// i64 `base + lane * stride`.
    Aff(Value, Stride),
}

/// The values of one copy of the vector body, with their conversions cached.
#[derive(Clone)]
struct VCopy {
    vv: Vec<Option<VV>>,
    lanes: HashMap<usize, [Value; LANES]>,
    vecs: HashMap<usize, Value>,
    /// Bool values known to be true in every lane (the guards of a guarded copy, see
    /// [`guard_masks`]): a `where` on one of them is its first operand.
    known_true: Vec<usize>,
}

const NO_ARGS: &[BlockArg] = &[];

fn vec_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// The accumulator of a Reduce phase.
#[derive(Clone, Copy)]
struct Acc {
    op: ReduceOp,
    /// The dtype of the folded value (and of the result).
    dt: DType,
    /// Float sum/prod of f32/f16/bf16: accumulated in f64 and rounded once at the end, as the
    /// interpreter does.
    wide: bool,
    /// The vector loop adds with fused multiply-adds by 1 (a plain sum, see [`SUM_UNROLL`]).
    by_fma: bool,
    var: Variable,
}

/// A loop under construction (see [`Cx::loop_begin`]).
struct Loop {
    var: Variable,
    head: ir::Block,
}

// ---------------------------------------------------------------------------------------------
// The lowering.

struct Cx<'k, 'f> {
    k: &'k Kernel,
    b: FunctionBuilder<'f>,
    call_conv: CallConv,
    has_fma: bool,
    bufs: Vec<Value>,
    sizes: Vec<Value>,
    /// Per entry of the sizes array that is only a size: its division constants `(m, l - 1)`.
    divisors: Vec<Option<(Value, Value)>>,
    start: Value,
    end: Value,
    helpers: Value,
    sigs: HashMap<Helper, SigRef>,
    outer_idx: Vec<Value>,
    inner_idx: Vec<Value>,
    results: Vec<Option<Value>>,
    /// Splats of uniform values in the current vector loop.
    splats: HashMap<(Value, bool), Value>,
    /// Whether the last outer loop is emitted in column blocks ([`column_block`]).
    column: bool,
    /// For a [`split_reduce`] kernel: the mode word and the address of the partial's word.
    split: Option<(Value, Value)>,
    /// Whether inner loop 0 of a Reduce phase runs over `start..end` (a split reduction's part).
    reduce_range: bool,
    /// Whether a Reduce phase returns its accumulator unrounded (f64 for wide sums).
    keep_raw: bool,
    /// In a vector loop using f32 transcendentals: the (loop-carried) address of their
    /// constant table (see `math::emit_unary_with`).
    math_table: Option<Value>,
}

impl Cx<'_, '_> {
    // ---- control flow ----------------------------------------------------------------------

    fn kernel_body(&mut self) {
        let k = self.k;
        if k.outer.is_empty() {
            match self.split {
                Some((mode, slot)) => self.split_body(mode, slot),
                None => self.phases(),
            }
            return;
        }
        let mut ok = self
            .b
            .ins()
            .icmp(IntCC::SignedGreaterThan, self.end, self.start);
        for e in &k.outer[1..] {
            let n = self.extent(*e);
            let c = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, n, 0);
            ok = self.b.ins().band(ok, c);
        }
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().brif(ok, body, NO_ARGS, exit, NO_ARGS);
        self.b.switch_to_block(body);
        self.outer_loop(0);
        self.b.ins().jump(exit, NO_ARGS);
        self.b.switch_to_block(exit);
    }

    fn outer_loop(&mut self, d: usize) {
        let k = self.k;
        if d == k.outer.len() {
            self.phases();
            return;
        }
        if self.column && d + 1 == k.outer.len() {
            self.column_blocks(d);
            return;
        }
        let (lo, hi) = if d == 0 {
            (self.start, self.end)
        } else {
            (self.b.ins().iconst(I64, 0), self.extent(k.outer[d]))
        };
        let (lp, i) = self.loop_begin(lo);
        self.outer_idx[d] = i;
        self.outer_loop(d + 1);
        self.loop_end(lp, i, 1, hi);
    }

    /// Starts a do-while loop whose index starts at `lo`; returns the index in the body.
    fn loop_begin(&mut self, lo: Value) -> (Loop, Value) {
        let var = self.b.declare_var(I64);
        self.b.def_var(var, lo);
        let head = self.b.create_block();
        self.b.ins().jump(head, NO_ARGS);
        self.b.switch_to_block(head);
        let i = self.b.use_var(var);
        (Loop { var, head }, i)
    }

    /// Closes a loop: `i += step; if i < hi { continue }`.
    fn loop_end(&mut self, lp: Loop, i: Value, step: i64, hi: Value) {
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(lp.var, next);
        let c = self.b.ins().icmp(IntCC::SignedLessThan, next, hi);
        let exit = self.b.create_block();
        self.b.ins().brif(c, lp.head, NO_ARGS, exit, NO_ARGS);
        self.b.switch_to_block(exit);
    }

    fn extent(&mut self, e: Extent) -> Value {
        match e {
            Extent::Size(s) => self.sizes[s],
            Extent::Const(c) => self.b.ins().iconst(I64, c as i64),
        }
    }

    /// The body of a [`split_reduce`] kernel, by its mode word: 0 runs the whole kernel; 1
    /// (a part) folds `start..end` of the reduced loop 0 and writes the unrounded accumulator
    /// to the partial's word; 2 (the finish) takes the partial's word as the folded value,
    /// rounds it, and runs the Store phase.
    fn split_body(&mut self, mode: Value, slot: Value) {
        let Some((_, wide)) = split_reduce(self.k) else {
            unreachable!("split is set for split reductions")
        };
        let part = self.b.create_block();
        let other = self.b.create_block();
        let finish = self.b.create_block();
        let whole = self.b.create_block();
        let exit = self.b.create_block();
        let is_part = self.b.ins().icmp_imm_s(IntCC::Equal, mode, 1);
        self.b.ins().brif(is_part, part, NO_ARGS, other, NO_ARGS);
        self.b.switch_to_block(other);
        let is_finish = self.b.ins().icmp_imm_s(IntCC::Equal, mode, 2);
        self.b
            .ins()
            .brif(is_finish, finish, NO_ARGS, whole, NO_ARGS);
        let flags = MemFlagsData::trusted();
        // A part.
        self.b.switch_to_block(part);
        self.results.clear();
        self.reduce_range = true;
        self.keep_raw = true;
        let r = self.phase(0).expect("a Reduce phase");
        self.reduce_range = false;
        self.keep_raw = false;
        self.b.ins().store(flags, r, slot, 0);
        self.b.ins().jump(exit, NO_ARGS);
        // The finish.
        self.b.switch_to_block(finish);
        let r = if wide {
            let r = self.b.ins().load(F64, flags, slot, 0);
            self.cast(DType::F64, DType::F32, r)
        } else {
            self.b.ins().load(F32, flags, slot, 0)
        };
        self.results = vec![Some(r)];
        self.phase(1);
        self.b.ins().jump(exit, NO_ARGS);
        // The whole kernel.
        self.b.switch_to_block(whole);
        self.phases();
        self.b.ins().jump(exit, NO_ARGS);
        self.b.switch_to_block(exit);
    }

    fn phases(&mut self) {
        self.results.clear();
        for p in 0..self.k.phases.len() {
            let r = self.phase(p);
            self.results.push(r);
        }
    }

    /// Emits phase `p`; returns its Reduce result.
    fn phase(&mut self, p: usize) -> Option<Value> {
        let k = self.k;
        if let Some((a, b)) = split_fold(k, &k.phases[p]) {
            self.emit_phase(&a);
            return self.emit_phase(&b);
        }
        self.emit_phase(&k.phases[p])
    }

    fn emit_phase(&mut self, ph: &Phase) -> Option<Value> {
        let k = self.k;
        let plan = plan_of(k, ph);
        let ni = ph.inner.len();
        let mut bounds = Vec::with_capacity(ni);
        for (j, e) in ph.inner.iter().enumerate() {
            if j == 0 && (plan.split_inner || self.reduce_range) {
                bounds.push((self.start, self.end));
            } else {
                let zero = self.b.ins().iconst(I64, 0);
                let n = self.extent(*e);
                bounds.push((zero, n));
            }
        }
        let acc = match &ph.kind {
            PhaseKind::Reduce { op, value, .. } => {
                let dt = ph.body[value.0 as usize].1;
                let wide = dt.is_float()
                    && dt != DType::F64
                    && matches!(op, ReduceOp::Sum | ReduceOp::Prod);
                let adt = if wide { DType::F64 } else { dt };
                let var = self.b.declare_var(cl_type(adt));
                let id = self.konst(op.identity(adt));
                self.b.def_var(var, id);
                Some(Acc {
                    op: *op,
                    dt,
                    wide,
                    by_fma: plan.plain_sum && self.has_fma,
                    var,
                })
            }
            PhaseKind::Store(_) => None,
        };
        let done = self.b.create_block();
        if ni > 0 {
            let mut ok = None;
            for &(lo, hi) in &bounds {
                let c = self.b.ins().icmp(IntCC::SignedGreaterThan, hi, lo);
                ok = Some(match ok {
                    None => c,
                    Some(o) => self.b.ins().band(o, c),
                });
            }
            let body = self.b.create_block();
            let ok = ok.expect("ni > 0");
            self.b.ins().brif(ok, body, NO_ARGS, done, NO_ARGS);
            self.b.switch_to_block(body);
        }
        self.inner_idx = vec![self.start; ni];
        let mut vals = vec![None; ph.body.len()];
        self.emit_level(ph, &plan, 0, &mut vals);
        if ni == 0 {
            self.scalar_action(ph, &vals, acc);
        } else {
            self.inner_loop(ph, &plan, 0, &bounds, &mut vals, acc);
        }
        self.b.ins().jump(done, NO_ARGS);
        self.b.switch_to_block(done);
        acc.map(|a| {
            let r = self.b.use_var(a.var);
            if a.wide && !self.keep_raw {
                self.cast(DType::F64, a.dt, r)
            } else {
                r
            }
        })
    }

    fn inner_loop(
        &mut self,
        ph: &Phase,
        plan: &Plan,
        j: usize,
        bounds: &[(Value, Value)],
        vals: &mut Vec<Option<Value>>,
        acc: Option<Acc>,
    ) {
        let ni = ph.inner.len();
        let (lo, hi) = bounds[j];
        if j + 1 == ni && plan.vectorize {
            self.vector_innermost(ph, plan, lo, hi, vals, acc);
            return;
        }
        let (lp, i) = self.loop_begin(lo);
        self.inner_idx[j] = i;
        self.emit_level(ph, plan, j + 1, vals);
        if j + 1 == ni {
            self.scalar_action(ph, vals, acc);
        } else {
            self.inner_loop(ph, plan, j + 1, bounds, vals, acc);
        }
        self.loop_end(lp, i, 1, hi);
    }

    /// Emits, as scalars, the instructions of `level`.
    fn emit_level(&mut self, ph: &Phase, plan: &Plan, level: usize, vals: &mut [Option<Value>]) {
        for (i, (inst, dt)) in ph.body.iter().enumerate() {
            if plan.levels[i] != level {
                continue;
            }
            let v = match inst {
                Inst::Const(c) => self.konst(*c),
                Inst::LoopIdx(l) => {
                    let no = self.k.outer.len();
                    if *l < no {
                        self.outer_idx[*l]
                    } else {
                        self.inner_idx[*l - no]
                    }
                }
                Inst::Size(s) => self.sizes[*s],
                Inst::Param(s) => self.param(self.sizes[*s], *dt),
                Inst::PhaseResult(q) => self.results[*q].expect("checked: a Reduce phase"),
                _ => {
                    let args: Vec<Value> = inst
                        .operands()
                        .iter()
                        .map(|o| vals[o.0 as usize].expect("operands precede"))
                        .collect();
                    self.scalar_op(ph, inst, *dt, &args)
                }
            };
            vals[i] = Some(v);
        }
    }

    /// The innermost action of a scalar iteration: the stores or the fold.
    fn scalar_action(&mut self, ph: &Phase, vals: &[Option<Value>], acc: Option<Acc>) {
        let get = |v: &V| vals[v.0 as usize].expect("computed");
        if let PhaseKind::Reduce { value, .. } = &ph.kind {
            let acc = acc.expect("a Reduce phase has an accumulator");
            let a = self.b.use_var(acc.var);
            let x = get(value);
            let r = if acc.wide {
                let x = self.b.ins().fpromote(F64, x);
                self.binary(acc.op.combiner(), DType::F64, a, x)
            } else {
                self.binary(acc.op.combiner(), acc.dt, a, x)
            };
            self.b.def_var(acc.var, r);
        }
        for st in ph.kind.stores() {
            self.store_one(
                st,
                get(&st.offset),
                get(&st.value),
                st.mask.map(|m| get(&m)),
            );
        }
    }

    /// One (possibly masked, possibly combining) scalar store.
    fn store_one(&mut self, st: &Store, off: Value, val: Value, mask: Option<Value>) {
        let cont = mask.map(|m| {
            let yes = self.b.create_block();
            let cont = self.b.create_block();
            self.b.ins().brif(m, yes, NO_ARGS, cont, NO_ARGS);
            self.b.switch_to_block(yes);
            cont
        });
        let v = match st.combine {
            Some(op) => {
                let old = self.load(st.buf, off);
                let dt = self.k.bufs[st.buf].dtype;
                self.binary(op.combiner(), dt, old, val)
            }
            None => val,
        };
        self.store(st.buf, off, v);
        if let Some(cont) = cont {
            self.b.ins().jump(cont, NO_ARGS);
            self.b.switch_to_block(cont);
        }
    }

    // ---- the vector loop -------------------------------------------------------------------

    fn vector_innermost(
        &mut self,
        ph: &Phase,
        plan: &Plan,
        lo: Value,
        hi: Value,
        vals: &[Option<Value>],
        acc: Option<Acc>,
    ) {
        let ni = ph.inner.len();
        let step = (LANES * plan.unroll) as i64;
        self.splats.clear();
        let n = self.b.ins().isub(hi, lo);
        let n_main = self.b.ins().band_imm_s(n, -step);
        let main_end = self.b.ins().iadd(lo, n_main);
        let ivar = self.b.declare_var(I64);
        self.b.def_var(ivar, lo);
        // Vector accumulators per unrolled copy: one f32x4 (max/min), or two f64x2 holding the
        // low and high lanes (wide sum/prod).
        let vaccs: Vec<Vec<Variable>> = match acc {
            Some(a) => (0..plan.unroll)
                .map(|_| {
                    let (ty, n, id) = if a.wide {
                        (F64X2, 2, self.konst(a.op.identity(DType::F64)))
                    } else {
                        (F32X4, 1, self.konst(a.op.identity(a.dt)))
                    };
                    let s = self.b.ins().splat(ty, id);
                    (0..n)
                        .map(|_| {
                            let v = self.b.declare_var(ty);
                            self.b.def_var(v, s);
                            v
                        })
                        .collect()
                })
                .collect(),
            None => Vec::new(),
        };
        // The transcendentals' constant table, its address carried around the loop so that
        // Cranelift keeps the constant loads inside it (see `math::emit_unary_with`).
        let uses_math = ph.body.iter().zip(&plan.levels).any(|((inst, dt), &l)| {
            l == ni
                && *dt == DType::F32
                && matches!(inst, Inst::Unary(op, _) if math_fn(*op).is_some())
        });
        let table_var = uses_math.then(|| {
            let flags = MemFlagsData::trusted().with_readonly().with_can_move();
            let at = (8 * MATH_CONSTS_SLOT) as i32;
            let t = self.b.ins().load(I64, flags, self.helpers, at);
            let v = self.b.declare_var(I64);
            self.b.def_var(v, t);
            v
        });
        let vec_head = self.b.create_block();
        let after = self.b.create_block();
        let any = self.b.ins().icmp(IntCC::SignedGreaterThan, main_end, lo);
        self.b.ins().brif(any, vec_head, NO_ARGS, after, NO_ARGS);
        self.b.switch_to_block(vec_head);
        let i = self.b.use_var(ivar);
        if let Some(v) = table_var {
            let t = self.b.use_var(v);
            self.math_table = Some(t);
            // Redefined as t + 0 each iteration: a distinct value when Cranelift removes
            // constant block parameters (it folds it to t only afterwards), so t stays a
            // parameter of the loop header and the loads from it are not hoisted.
            let t_next = self.b.ins().iadd_imm_s(t, 0);
            self.b.def_var(v, t_next);
        }
        let guards = guard_masks(ph, &plan.levels);
        // The guards' instructions, emitted before the branch.
        let mut pre = vec![false; ph.body.len()];
        let mut stack = guards.clone();
        while let Some(j) = stack.pop() {
            if plan.levels[j] == ni && !pre[j] {
                pre[j] = true;
                stack.extend(ph.body[j].0.operands().iter().map(|o| o.0 as usize));
            }
        }
        for u in 0..plan.unroll {
            let base = self.b.ins().iadd_imm_s(i, (u * LANES) as i64);
            let va = acc.zip(vaccs.get(u)).map(|(a, v)| (a, v.as_slice()));
            let mut c = VCopy {
                vv: vals.iter().map(|v| v.map(VV::Uni)).collect(),
                lanes: HashMap::new(),
                vecs: HashMap::new(),
                known_true: Vec::new(),
            };
            let rest = |idx: usize| plan.levels[idx] == ni && !pre[idx];
            if guards.is_empty() {
                for idx in (0..ph.body.len()).filter(|&idx| rest(idx)) {
                    let v = self.vector_inst(ph, plan, &mut c, idx, base);
                    c.vv[idx] = Some(v);
                }
                self.vector_action(ph, &mut c, va);
                continue;
            }
            // A guarded copy: when every guard holds in every lane, the body runs with the
            // guards known true (the reads they guard at their unmasked, affine offsets:
            // vector loads); otherwise as usual. Both store the same values.
            for idx in (0..ph.body.len()).filter(|&idx| pre[idx]) {
                let v = self.vector_inst(ph, plan, &mut c, idx, base);
                c.vv[idx] = Some(v);
            }
            let mut all = None;
            for &g in &guards {
                let t = match c.vv[g].expect("computed") {
                    VV::Uni(s) => s,
                    _ => {
                        let m = self.vv_vec(&mut c, g, DType::Bool);
                        self.b.ins().vall_true(m)
                    }
                };
                all = Some(match all {
                    None => t,
                    Some(a) => self.b.ins().band(a, t),
                });
            }
            let all = all.expect("guards is not empty");
            let (fast, slow, merge) = (
                self.b.create_block(),
                self.b.create_block(),
                self.b.create_block(),
            );
            self.b.ins().brif(all, fast, NO_ARGS, slow, NO_ARGS);
            // Splats made in one branch do not dominate the other or the rest.
            let splats = self.splats.clone();
            for (block, known) in [(fast, true), (slow, false)] {
                self.b.switch_to_block(block);
                let mut cc = c.clone();
                if known {
                    cc.known_true = guards.clone();
                }
                for idx in (0..ph.body.len()).filter(|&idx| rest(idx)) {
                    let v = self.vector_inst(ph, plan, &mut cc, idx, base);
                    cc.vv[idx] = Some(v);
                }
                self.vector_action(ph, &mut cc, va);
                self.b.ins().jump(merge, NO_ARGS);
                self.splats = splats.clone();
            }
            self.b.switch_to_block(merge);
        }
        self.math_table = None;
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(ivar, next);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, main_end);
        self.b.ins().brif(more, vec_head, NO_ARGS, after, NO_ARGS);
        self.b.switch_to_block(after);
        if let Some(a) = acc {
            // Fold the copies lane-wise, then the lanes, then into the scalar accumulator.
            let all: Vec<Variable> = vaccs.iter().flatten().copied().collect();
            let mut v = self.b.use_var(all[0]);
            for va in &all[1..] {
                let w = self.b.use_var(*va);
                v = self.vcombine(a.op, v, w);
            }
            let n = if a.wide { 2 } else { LANES };
            let cdt = if a.wide { DType::F64 } else { a.dt };
            let mut l: Vec<Value> = (0..n)
                .map(|l| self.b.ins().extractlane(v, l as u8))
                .collect();
            let c = a.op.combiner();
            while l.len() > 1 {
                let pairs: Vec<(Value, Value)> = l.chunks(2).map(|p| (p[0], p[1])).collect();
                l = pairs
                    .into_iter()
                    .map(|(x, y)| self.binary(c, cdt, x, y))
                    .collect();
            }
            let old = self.b.use_var(a.var);
            let r = self.binary(c, cdt, old, l[0]);
            self.b.def_var(a.var, r);
        }
        // The scalar tail.
        let i = self.b.use_var(ivar);
        let tail = self.b.create_block();
        let done = self.b.create_block();
        let any = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(any, tail, NO_ARGS, done, NO_ARGS);
        self.b.switch_to_block(tail);
        let i = self.b.use_var(ivar);
        self.inner_idx[ni - 1] = i;
        let mut tail_vals = vals.to_vec();
        self.emit_level(ph, plan, ni, &mut tail_vals);
        self.scalar_action(ph, &tail_vals, acc);
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(ivar, next);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, hi);
        self.b.ins().brif(more, tail, NO_ARGS, done, NO_ARGS);
        self.b.switch_to_block(done);
    }

    // ---- column blocks ---------------------------------------------------------------------

    /// Emits the last outer loop `d` of a [`column_block`] kernel: blocks of up to
    /// `GROUPS * GROUP` columns, each reducing every row into per-lane accumulators on the
    /// stack (the reduced loops outside, the columns of the block inside), then storing the
    /// block's results; the columns left over (fewer than `GROUP`) take the ordinary path.
    fn column_blocks(&mut self, d: usize) {
        let k = self.k;
        let (lo, hi) = if d == 0 {
            (self.start, self.end)
        } else {
            (self.b.ins().iconst(I64, 0), self.extent(k.outer[d]))
        };
        let slot = self.b.create_sized_stack_slot(ir::StackSlotData::new(
            ir::StackSlotKind::ExplicitSlot,
            (GROUPS * GROUP_BYTES) as u32,
            4,
        ));
        let cb_var = self.b.declare_var(I64);
        self.b.def_var(cb_var, lo);
        let head = self.b.create_block();
        let body = self.b.create_block();
        let rest = self.b.create_block();
        self.b.ins().jump(head, NO_ARGS);
        self.b.switch_to_block(head);
        let cb = self.b.use_var(cb_var);
        let left = self.b.ins().isub(hi, cb);
        let any = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, left, GROUP);
        self.b.ins().brif(any, body, NO_ARGS, rest, NO_ARGS);
        self.b.switch_to_block(body);
        let groups = self.b.ins().sshr_imm_u(left, GROUP.trailing_zeros() as i64);
        let most = self.b.ins().iconst(I64, GROUPS);
        let ng = self.b.ins().smin(groups, most);
        let acc_base = self.b.ins().stack_addr(I64, slot, 0);
        let PhaseKind::Reduce { op, value, .. } = k.phases[0].kind.clone() else {
            unreachable!("column_block checked the phases")
        };
        let wide = matches!(op, ReduceOp::Sum | ReduceOp::Prod);
        // Fill the accumulators with the identity.
        let (g, lp) = self.group_loop_begin();
        {
            let at = self.group_addr(acc_base, g);
            let id = if wide {
                let c = self.konst(op.identity(DType::F64));
                self.b.ins().splat(F64X2, c)
            } else {
                let c = self.konst(op.identity(DType::F32));
                self.b.ins().splat(F32X4, c)
            };
            for j in 0..(if wide { 4 } else { 2 }) {
                self.b
                    .ins()
                    .store(vec_flags().with_notrap(), id, at, 16 * j);
            }
        }
        self.group_loop_end(g, lp, ng);
        self.outer_idx[d] = cb;
        self.column_reduce(d, cb, ng, acc_base, op, value, wide);
        self.column_store(d, cb, ng, acc_base, wide);
        let step = self.b.ins().imul_imm_s(ng, GROUP);
        let next = self.b.ins().iadd(cb, step);
        self.b.def_var(cb_var, next);
        self.b.ins().jump(head, NO_ARGS);
        // The columns left over.
        self.b.switch_to_block(rest);
        let cb = self.b.use_var(cb_var);
        let tail = self.b.create_block();
        let done = self.b.create_block();
        let any = self.b.ins().icmp(IntCC::SignedLessThan, cb, hi);
        self.b.ins().brif(any, tail, NO_ARGS, done, NO_ARGS);
        self.b.switch_to_block(tail);
        let (lp, i) = self.loop_begin(cb);
        self.outer_idx[d] = i;
        self.phases();
        self.loop_end(lp, i, 1, hi);
        self.b.ins().jump(done, NO_ARGS);
        self.b.switch_to_block(done);
    }

    /// Starts a do-while loop over groups `0..ng` (`ng >= 1`); returns the group index.
    fn group_loop_begin(&mut self) -> (Value, Loop) {
        let zero = self.b.ins().iconst(I64, 0);
        let (lp, g) = self.loop_begin(zero);
        (g, lp)
    }

    fn group_loop_end(&mut self, g: Value, lp: Loop, ng: Value) {
        self.loop_end(lp, g, 1, ng);
    }

    /// The address of group `g`'s accumulators.
    fn group_addr(&mut self, acc_base: Value, g: Value) -> Value {
        let off = self.b.ins().imul_imm_s(g, GROUP_BYTES);
        self.b.ins().iadd(acc_base, off)
    }

    /// A plan for phase `p` of a column block: the instructions that depend on the column
    /// (`varies`) are left out of the scalar levels (they are emitted per group).
    fn column_plan(&self, p: usize, col: usize) -> (Plan, Vec<bool>) {
        let mut pl = plan(self.k, p);
        let (_, varies) = dep_on(&self.k.phases[p], col, true);
        for (l, v) in pl.levels.iter_mut().zip(&varies) {
            if *v {
                *l = usize::MAX;
            }
        }
        pl.vectorize = false;
        (pl, varies)
    }

    /// The values of one group half (lane 0 at column `base`): the scalar values as uniform,
    /// the column-dependent ones as vectors, with `result` standing for phase result 0.
    fn column_copy(
        &mut self,
        ph: &Phase,
        pl: &Plan,
        varies: &[bool],
        vals: &[Option<Value>],
        base: Value,
        result: Option<Value>,
    ) -> VCopy {
        let mut c = VCopy {
            vv: vals.iter().map(|v| v.map(VV::Uni)).collect(),
            lanes: HashMap::new(),
            vecs: HashMap::new(),
            known_true: Vec::new(),
        };
        for (idx, _) in varies.iter().enumerate().filter(|(_, v)| **v) {
            let v = match (&ph.body[idx].0, result) {
                (Inst::PhaseResult(_), Some(r)) => VV::Vec(r),
                _ => self.vector_inst(ph, pl, &mut c, idx, base),
            };
            c.vv[idx] = Some(v);
        }
        c
    }

    /// The Reduce phase of a column block: the reduced loops, and inside them every group.
    #[allow(clippy::too_many_arguments)]
    fn column_reduce(
        &mut self,
        col: usize,
        cb: Value,
        ng: Value,
        acc_base: Value,
        op: ReduceOp,
        value: V,
        wide: bool,
    ) {
        let k = self.k;
        let ph = &k.phases[0];
        let (pl, varies) = self.column_plan(0, col);
        let ni = ph.inner.len();
        let mut bounds = Vec::with_capacity(ni);
        let mut ok = None;
        for e in &ph.inner {
            let n = self.extent(*e);
            let c = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, n, 0);
            ok = Some(match ok {
                None => c,
                Some(o) => self.b.ins().band(o, c),
            });
            bounds.push(n);
        }
        let body = self.b.create_block();
        let done = self.b.create_block();
        self.b
            .ins()
            .brif(ok.expect("inner loops"), body, NO_ARGS, done, NO_ARGS);
        self.b.switch_to_block(body);
        self.inner_idx = vec![self.start; ni];
        let mut vals = vec![None; ph.body.len()];
        self.emit_level(ph, &pl, 0, &mut vals);
        let mut loops = Vec::with_capacity(ni);
        for (j, &n) in bounds[..ni - 1].iter().enumerate() {
            let zero = self.b.ins().iconst(I64, 0);
            let (lp, i) = self.loop_begin(zero);
            self.inner_idx[j] = i;
            self.emit_level(ph, &pl, j + 1, &mut vals);
            loops.push((lp, i, n));
        }
        // The innermost reduced loop: ROWS rows per visit of the accumulators, then the rest
        // one at a time.
        let n = bounds[ni - 1];
        let n_main = self.b.ins().band_imm_s(n, -ROWS);
        let cx = ColumnCx {
            pl: &pl,
            varies: &varies,
            cb,
            ng,
            acc_base,
            op,
            value,
            wide,
        };
        for (lo, hi, step) in [(None, n_main, ROWS), (Some(n_main), n, 1)] {
            let lo = lo.unwrap_or_else(|| self.b.ins().iconst(I64, 0));
            let run = self.b.create_block();
            let skip = self.b.create_block();
            let any = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
            self.b.ins().brif(any, run, NO_ARGS, skip, NO_ARGS);
            self.b.switch_to_block(run);
            let (lp, r) = self.loop_begin(lo);
            self.column_rows(ph, &cx, &vals, r, step);
            self.loop_end(lp, r, step, hi);
            self.b.ins().jump(skip, NO_ARGS);
            self.b.switch_to_block(skip);
        }
        while let Some((lp, i, n)) = loops.pop() {
            self.loop_end(lp, i, 1, n);
        }
        self.b.ins().jump(done, NO_ARGS);
        self.b.switch_to_block(done);
    }

    /// Rows `r..r + rows` of the innermost reduced loop into every group's accumulators (each
    /// group's accumulators are loaded once, folded row by row in order, and stored).
    fn column_rows(
        &mut self,
        ph: &Phase,
        cx: &ColumnCx<'_>,
        vals: &[Option<Value>],
        r: Value,
        rows: i64,
    ) {
        let ni = ph.inner.len();
        let per_row: Vec<Vec<Option<Value>>> = (0..rows)
            .map(|q| {
                let i = self.b.ins().iadd_imm_s(r, q);
                self.inner_idx[ni - 1] = i;
                let mut v = vals.to_vec();
                self.emit_level(ph, cx.pl, ni, &mut v);
                v
            })
            .collect();
        let (g, glp) = self.group_loop_begin();
        self.splats.clear();
        let at = self.group_addr(cx.acc_base, g);
        let gcol = self.b.ins().imul_imm_s(g, GROUP);
        let gcol = self.b.ins().iadd(cx.cb, gcol);
        let flags = vec_flags().with_notrap();
        let (ty, n) = if cx.wide { (F64X2, 4) } else { (F32X4, 2) };
        let mut accs: Vec<Value> = (0..n)
            .map(|j| self.b.ins().load(ty, flags, at, 16 * j))
            .collect();
        for rv in &per_row {
            for u in 0..2 {
                let base = self.b.ins().iadd_imm_s(gcol, (u * LANES) as i64);
                let mut c = self.column_copy(ph, cx.pl, cx.varies, rv, base, None);
                let x = self.vv_vec(&mut c, cx.value.0 as usize, DType::F32);
                if cx.wide {
                    let (lo, hi) = self.promote_halves(x);
                    accs[2 * u] = self.vcombine(cx.op, accs[2 * u], lo);
                    accs[2 * u + 1] = self.vcombine(cx.op, accs[2 * u + 1], hi);
                } else {
                    accs[u] = self.vcombine(cx.op, accs[u], x);
                }
            }
        }
        for (j, a) in accs.into_iter().enumerate() {
            self.b.ins().store(flags, a, at, 16 * j as i32);
        }
        self.splats.clear();
        self.group_loop_end(g, glp, cx.ng);
    }

    /// The Store phase of a column block, once per group with the accumulators as results.
    fn column_store(&mut self, col: usize, cb: Value, ng: Value, acc_base: Value, wide: bool) {
        let k = self.k;
        let ph = &k.phases[1];
        let (pl, varies) = self.column_plan(1, col);
        self.inner_idx = Vec::new();
        let mut vals = vec![None; ph.body.len()];
        self.emit_level(ph, &pl, 0, &mut vals);
        let (g, glp) = self.group_loop_begin();
        self.splats.clear();
        let at = self.group_addr(acc_base, g);
        let gcol = self.b.ins().imul_imm_s(g, GROUP);
        let gcol = self.b.ins().iadd(cb, gcol);
        let flags = vec_flags().with_notrap();
        for u in 0..2 {
            let base = self.b.ins().iadd_imm_s(gcol, (u * LANES) as i64);
            let r = if wide {
                let lo = self.b.ins().load(F64X2, flags, at, (u * 32) as i32);
                let hi = self.b.ins().load(F64X2, flags, at, (u * 32 + 16) as i32);
                let lo = self.b.ins().fvdemote(lo);
                let hi = self.b.ins().fvdemote(hi);
                // Lanes 0, 1 of each: [lo0, lo1, hi0, hi1].
                let lo = self.b.ins().bitcast(I8X16, vec_flags(), lo);
                let hi = self.b.ins().bitcast(I8X16, vec_flags(), hi);
                let mask: Vec<u8> = (0..8).chain(16..24).collect();
                let mask = self.b.func.dfg.immediates.push(ConstantData::from(mask));
                let v = self.b.ins().shuffle(lo, hi, mask);
                self.b.ins().bitcast(F32X4, vec_flags(), v)
            } else {
                self.b.ins().load(F32X4, flags, at, (u * 16) as i32)
            };
            let mut c = self.column_copy(ph, &pl, &varies, &vals, base, Some(r));
            self.vector_action(ph, &mut c, None);
        }
        self.splats.clear();
        self.group_loop_end(g, glp, ng);
    }

    /// An `f32x4` as two `f64x2`: lanes 0, 1 and lanes 2, 3.
    fn promote_halves(&mut self, x: Value) -> (Value, Value) {
        let lo = self.b.ins().fvpromote_low(x);
        let bytes = self.b.ins().bitcast(I8X16, vec_flags(), x);
        let mask: Vec<u8> = (8..16).chain(0..8).collect();
        let mask = self.b.func.dfg.immediates.push(ConstantData::from(mask));
        let sw = self.b.ins().shuffle(bytes, bytes, mask);
        let sw = self.b.ins().bitcast(F32X4, vec_flags(), sw);
        let hi = self.b.ins().fvpromote_low(sw);
        (lo, hi)
    }

    /// The innermost action of a vector iteration.
    fn vector_action(&mut self, ph: &Phase, c: &mut VCopy, acc: Option<(Acc, &[Variable])>) {
        if let PhaseKind::Reduce { value, .. } = &ph.kind {
            let (a, vars) = acc.expect("a Reduce phase has accumulators");
            let x = self.vv_vec(c, value.0 as usize, DType::F32);
            let parts = if a.wide {
                // Lanes 0, 1 and lanes 2, 3 as f64x2.
                let (lo, hi) = self.promote_halves(x);
                vec![lo, hi]
            } else {
                vec![x]
            };
            for (var, x) in vars.iter().zip(parts) {
                let old = self.b.use_var(*var);
                let r = if a.by_fma {
                    // `old * 1 + x` is `old + x` bit for bit (the product is exact, the sum
                    // rounds once), but runs on the multiply-add ports, beside the f32 -> f64
                    // conversions on the add ports (AMD Zen). The accumulator is the operand
                    // the instruction overwrites, so it stays in its register (no moves on the
                    // loop's back edge). Not where the body has work of its own for those ports
                    // (an exp).
                    let one = self.b.ins().f64const(1.0);
                    let one = self.b.ins().splat(F64X2, one);
                    self.b.ins().fma(old, one, x)
                } else {
                    self.vcombine(a.op, old, x)
                };
                self.b.def_var(*var, r);
            }
        }
        for st in ph.kind.stores() {
            let bdt = self.k.bufs[st.buf].dtype;
            if st.mask.is_none()
                && st.combine.is_none()
                && bdt == DType::F32
                && let Some(VV::Aff(base, Stride::K(1))) = c.vv[st.offset.0 as usize]
            {
                let v = self.vv_vec(c, st.value.0 as usize, DType::F32);
                let a = self.addr(st.buf, base);
                self.b.ins().store(vec_flags().with_notrap(), v, a, 0);
                continue;
            }
            // A sum or product into distinct contiguous elements (a scatter-add along a
            // row, col2im): one vector read-modify-write, the same operations as lane by lane.
            if st.mask.is_none()
                && bdt == DType::F32
                && matches!(st.combine, Some(ReduceOp::Sum | ReduceOp::Prod))
                && let Some(VV::Aff(base, Stride::K(1))) = c.vv[st.offset.0 as usize]
            {
                let v = self.vv_vec(c, st.value.0 as usize, DType::F32);
                let a = self.addr(st.buf, base);
                let f = vec_flags().with_notrap();
                let old = self.b.ins().load(F32X4, f, a, 0);
                let r = if st.combine == Some(ReduceOp::Sum) {
                    self.b.ins().fadd(old, v)
                } else {
                    self.b.ins().fmul(old, v)
                };
                self.b.ins().store(f, r, a, 0);
                continue;
            }
            let offs = self.vv_lanes(c, st.offset.0 as usize, DType::I64);
            let vals = self.vv_lanes(c, st.value.0 as usize, bdt);
            let masks = st.mask.map(|m| self.vv_lanes(c, m.0 as usize, DType::Bool));
            for l in 0..LANES {
                self.store_one(st, offs[l], vals[l], masks.map(|m| m[l]));
            }
        }
    }

    /// Lane-wise reduce combine of two `f32x4` (or, for sum/prod, `f64x2`) accumulators.
    fn vcombine(&mut self, op: ReduceOp, a: Value, x: Value) -> Value {
        match op {
            ReduceOp::Sum => self.b.ins().fadd(a, x),
            ReduceOp::Prod => self.b.ins().fmul(a, x),
            ReduceOp::Max => self.vmaxmin(a, x, true),
            ReduceOp::Min => self.vmaxmin(a, x, false),
            ReduceOp::And | ReduceOp::Or => unreachable!("planned: f32 reductions only"),
        }
    }

    /// NaN-propagating `f32x4` max/min: `a > b || isnan(a) ? a : b`. `maxps`/`minps` give
    /// `a > b ? a : b` (exact ties and a NaN `b` give `b`), then a NaN `a` is selected back.
    fn vmaxmin(&mut self, a: Value, b: Value, max: bool) -> Value {
        let lt = if max {
            self.b.ins().fcmp(FloatCC::LessThan, b, a)
        } else {
            self.b.ins().fcmp(FloatCC::LessThan, a, b)
        };
        let m = self.b.ins().bitcast(F32X4, vec_flags(), lt);
        let r = self.b.ins().bitselect(m, a, b);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, a, a);
        let n = self.b.ins().bitcast(F32X4, vec_flags(), nan);
        self.b.ins().bitselect(n, a, r)
    }

    fn splat(&mut self, v: Value, mask: bool) -> Value {
        if let Some(s) = self.splats.get(&(v, mask)) {
            return *s;
        }
        let s = if mask {
            let w = self.b.ins().uextend(I32, v);
            let m = self.b.ins().ineg(w);
            self.b.ins().splat(I32X4, m)
        } else {
            self.b.ins().splat(F32X4, v)
        };
        self.splats.insert((v, mask), s);
        s
    }

    /// Value `idx` as an `f32x4` (dt f32) or `i32x4` mask (dt bool).
    fn vv_vec(&mut self, c: &mut VCopy, idx: usize, dt: DType) -> Value {
        let mask = dt == DType::Bool;
        debug_assert!(mask || dt == DType::F32);
        match c.vv[idx].expect("computed") {
            VV::Vec(v) => v,
            VV::Uni(s) => self.splat(s, mask),
            VV::Lanes(ls) => {
                if let Some(v) = c.vecs.get(&idx) {
                    return *v;
                }
                let ls = if mask {
                    ls.map(|l| {
                        let w = self.b.ins().uextend(I32, l);
                        self.b.ins().ineg(w)
                    })
                } else {
                    ls
                };
                let ty = if mask { I32X4 } else { F32X4 };
                let mut v = self.b.ins().splat(ty, ls[0]);
                for (l, x) in ls.iter().enumerate().skip(1) {
                    v = self.b.ins().insertlane(v, *x, l as u8);
                }
                c.vecs.insert(idx, v);
                v
            }
            VV::Aff(..) => unreachable!("affine values are i64"),
        }
    }

    /// Value `idx` as one scalar per lane.
    fn vv_lanes(&mut self, c: &mut VCopy, idx: usize, dt: DType) -> [Value; LANES] {
        let vv = c.vv[idx].expect("computed");
        if let VV::Lanes(ls) = vv {
            return ls;
        }
        if let VV::Uni(s) = vv {
            return [s; LANES];
        }
        if let Some(ls) = c.lanes.get(&idx) {
            return *ls;
        }
        let ls = match vv {
            VV::Vec(v) => std::array::from_fn(|l| {
                let x = self.b.ins().extractlane(v, l as u8);
                if dt == DType::Bool {
                    let x = self.b.ins().ireduce(I8, x);
                    self.b.ins().band_imm_s(x, 1)
                } else {
                    x
                }
            }),
            VV::Aff(base, Stride::K(s)) => {
                std::array::from_fn(|l| self.b.ins().iadd_imm_s(base, s.wrapping_mul(l as i64)))
            }
            VV::Aff(base, Stride::V(s)) => {
                let mut ls = [base; LANES];
                for l in 1..LANES {
                    ls[l] = self.b.ins().iadd(ls[l - 1], s);
                }
                ls
            }
            VV::Lanes(_) | VV::Uni(_) => unreachable!("handled above"),
        };
        c.lanes.insert(idx, ls);
        ls
    }

    /// A value the same in every lane: uniform, or affine of stride 0.
    fn uniform(c: &VCopy, v: &V) -> Option<Value> {
        match c.vv[v.0 as usize]? {
            VV::Uni(x) | VV::Aff(x, Stride::K(0)) => Some(x),
            _ => None,
        }
    }

    /// The `i32x4` mask of an i64 comparison of two affine values `(base, stride)`: the lanes
    /// as two `i64x2` each (the same wrapping values as the lanes' scalars), compared, and the
    /// low halves of the two `i64x2` masks packed.
    fn affine_compare(&mut self, op: BinaryOp, a: (Value, i64), b: (Value, i64)) -> Value {
        let cc = match op {
            BinaryOp::Lt => IntCC::SignedLessThan,
            BinaryOp::Le => IntCC::SignedLessThanOrEqual,
            BinaryOp::Eq => IntCC::Equal,
            BinaryOp::Ne => IntCC::NotEqual,
            _ => unreachable!("matched: comparisons"),
        };
        let mut halves = |(base, s): (Value, i64)| {
            let v = self.b.ins().splat(I64X2, base);
            [0i64, 2].map(|l| {
                if s == 0 {
                    return v;
                }
                let steps: Vec<u8> = [l, l + 1]
                    .iter()
                    .flat_map(|&k| s.wrapping_mul(k).to_le_bytes())
                    .collect();
                let k = self.b.func.dfg.constants.insert(ConstantData::from(steps));
                let k = self.b.ins().vconst(I64X2, k);
                self.b.ins().iadd(v, k)
            })
        };
        let (x, y) = (halves(a), halves(b));
        let m = [0, 1].map(|h| {
            let m = self.b.ins().icmp(cc, x[h], y[h]);
            self.b.ins().bitcast(I8X16, vec_flags(), m)
        });
        // Bytes 0..4 and 8..12 of each mask (its lanes' low halves).
        let pick: Vec<u8> = [0u8, 8, 16, 24].iter().flat_map(|&o| o..o + 4).collect();
        let pick = self.b.func.dfg.immediates.push(ConstantData::from(pick));
        let v = self.b.ins().shuffle(m[0], m[1], pick);
        self.b.ins().bitcast(I32X4, vec_flags(), v)
    }

    /// An i64 value as `(base, stride)` when uniform or affine.
    fn affine(c: &VCopy, v: &V) -> Option<(Value, Stride)> {
        match c.vv[v.0 as usize]? {
            VV::Uni(x) => Some((x, Stride::K(0))),
            VV::Aff(b, s) => Some((b, s)),
            _ => None,
        }
    }

    fn stride_value(&mut self, s: Stride) -> Value {
        match s {
            Stride::K(k) => self.b.ins().iconst(I64, k),
            Stride::V(v) => v,
        }
    }

    fn stride_add(&mut self, a: Stride, b: Stride, sub: bool) -> Stride {
        match (a, b) {
            (Stride::K(x), Stride::K(y)) => Stride::K(if sub {
                x.wrapping_sub(y)
            } else {
                x.wrapping_add(y)
            }),
            (s, Stride::K(0)) => s,
            (Stride::V(v), Stride::K(y)) => Stride::V(
                self.b
                    .ins()
                    .iadd_imm_s(v, if sub { y.wrapping_neg() } else { y }),
            ),
            (a, Stride::V(w)) => {
                let v = self.stride_value(a);
                Stride::V(if sub {
                    self.b.ins().isub(v, w)
                } else {
                    self.b.ins().iadd(v, w)
                })
            }
        }
    }

    fn stride_mul(&mut self, s: Stride, by: Value, known: Option<i64>) -> Stride {
        match (s, known) {
            (Stride::K(x), Some(k)) => Stride::K(x.wrapping_mul(k)),
            (Stride::V(v), Some(k)) => Stride::V(self.b.ins().imul_imm_s(v, k)),
            (Stride::K(0), None) => Stride::K(0),
            (Stride::K(1), None) => Stride::V(by),
            (Stride::K(x), None) => Stride::V(self.b.ins().imul_imm_s(by, x)),
            (Stride::V(v), None) => Stride::V(self.b.ins().imul(v, by)),
        }
    }

    /// Emits instruction `idx` (of the innermost level) in a vector copy whose lane 0 has
    /// innermost index `base`.
    fn vector_inst(
        &mut self,
        ph: &Phase,
        plan: &Plan,
        c: &mut VCopy,
        idx: usize,
        base: Value,
    ) -> VV {
        let (inst, dt) = &ph.body[idx];
        let dt = *dt;
        let dt_of = |v: &V| ph.body[v.0 as usize].1;
        let is_vec = |c: &VCopy, v: &V| matches!(c.vv[v.0 as usize], Some(VV::Vec(_)));
        if let Inst::Where(cond, a, _) = inst
            && c.known_true.contains(&(cond.0 as usize))
        {
            return c.vv[a.0 as usize].expect("computed");
        }
        // Index arithmetic on uniform values (a guarded copy's coordinates, see
        // `vector_innermost`): once, as a scalar.
        if dt != DType::F32
            && matches!(
                inst,
                Inst::Unary(..) | Inst::Binary(..) | Inst::Where(..) | Inst::Cast(..)
            )
            && inst.operands().iter().all(|o| dt_of(o) != DType::F32)
        {
            let args: Option<Vec<Value>> = inst
                .operands()
                .iter()
                .map(|o| Self::uniform(c, o))
                .collect();
            if let Some(args) = args {
                return VV::Uni(self.scalar_op(ph, inst, dt, &args));
            }
        }
        match inst {
            Inst::LoopIdx(_) => return VV::Aff(base, Stride::K(1)),
            Inst::Binary(
                op @ (BinaryOp::Lt | BinaryOp::Le | BinaryOp::Eq | BinaryOp::Ne),
                a,
                b,
            ) if dt_of(a) == DType::I64 => {
                if let (Some((ba, Stride::K(sa))), Some((bb, Stride::K(sb)))) =
                    (Self::affine(c, a), Self::affine(c, b))
                {
                    return VV::Vec(self.affine_compare(*op, (ba, sa), (bb, sb)));
                }
            }
            Inst::Load { buf, offset } => {
                if let Some(VV::Aff(ob, Stride::K(1))) = c.vv[offset.0 as usize]
                    && dt == DType::F32
                {
                    let a = self.addr(*buf, ob);
                    let mut f = vec_flags().with_notrap();
                    if !self.k.bufs[*buf].output {
                        f = f.with_readonly();
                    }
                    return VV::Vec(self.b.ins().load(F32X4, f, a, 0));
                }
            }
            Inst::Unary(op, a) if dt == DType::F32 => {
                let x = self.vv_vec(c, a.0 as usize, DType::F32);
                return VV::Vec(self.float_unary(*op, DType::F32, x));
            }
            Inst::Unary(UnaryOp::Neg, a) if dt == DType::I64 => {
                if let Some((b, s)) = Self::affine(c, a) {
                    let nb = self.b.ins().ineg(b);
                    let ns = match s {
                        Stride::K(k) => Stride::K(k.wrapping_neg()),
                        Stride::V(v) => Stride::V(self.b.ins().ineg(v)),
                    };
                    return VV::Aff(nb, ns);
                }
            }
            Inst::Binary(op, a, b) => {
                let od = dt_of(a);
                if od == DType::F32 && !matches!(op, BinaryOp::Pow | BinaryOp::Mod) {
                    let x = self.vv_vec(c, a.0 as usize, od);
                    let y = self.vv_vec(c, b.0 as usize, od);
                    let r = match op {
                        BinaryOp::Add => self.b.ins().fadd(x, y),
                        BinaryOp::Sub => self.b.ins().fsub(x, y),
                        BinaryOp::Mul => self.b.ins().fmul(x, y),
                        BinaryOp::Div => self.b.ins().fdiv(x, y),
                        BinaryOp::Max => self.vmaxmin(x, y, true),
                        BinaryOp::Min => self.vmaxmin(x, y, false),
                        BinaryOp::Lt => self.b.ins().fcmp(FloatCC::LessThan, x, y),
                        BinaryOp::Le => self.b.ins().fcmp(FloatCC::LessThanOrEqual, x, y),
                        BinaryOp::Eq => self.b.ins().fcmp(FloatCC::Equal, x, y),
                        BinaryOp::Ne => self.b.ins().fcmp(FloatCC::NotEqual, x, y),
                        _ => unreachable!("checked: float ops"),
                    };
                    return VV::Vec(r);
                }
                if od == DType::Bool && (is_vec(c, a) || is_vec(c, b)) {
                    let x = self.vv_vec(c, a.0 as usize, od);
                    let y = self.vv_vec(c, b.0 as usize, od);
                    let r = match op {
                        BinaryOp::Add | BinaryOp::Max | BinaryOp::Or => self.b.ins().bor(x, y),
                        BinaryOp::Mul | BinaryOp::Min | BinaryOp::And => self.b.ins().band(x, y),
                        BinaryOp::Xor | BinaryOp::Ne => self.b.ins().bxor(x, y),
                        BinaryOp::Eq => {
                            let e = self.b.ins().bxor(x, y);
                            self.b.ins().bnot(e)
                        }
                        BinaryOp::Lt => {
                            let nx = self.b.ins().bnot(x);
                            self.b.ins().band(nx, y)
                        }
                        BinaryOp::Le => {
                            let nx = self.b.ins().bnot(x);
                            self.b.ins().bor(nx, y)
                        }
                        _ => unreachable!("checked: bool ops"),
                    };
                    return VV::Vec(r);
                }
                if od == DType::I64
                    && let (Some((ba, sa)), Some((bb, sb))) =
                        (Self::affine(c, a), Self::affine(c, b))
                {
                    match op {
                        BinaryOp::Add => {
                            let nb = self.b.ins().iadd(ba, bb);
                            return VV::Aff(nb, self.stride_add(sa, sb, false));
                        }
                        BinaryOp::Sub => {
                            let nb = self.b.ins().isub(ba, bb);
                            return VV::Aff(nb, self.stride_add(sa, sb, true));
                        }
                        BinaryOp::Mul => {
                            let ua = matches!(c.vv[a.0 as usize], Some(VV::Uni(_)));
                            let ub = matches!(c.vv[b.0 as usize], Some(VV::Uni(_)));
                            if ua != ub {
                                let (s, by, known) = if ub {
                                    (sa, bb, plan.consts[b.0 as usize])
                                } else {
                                    (sb, ba, plan.consts[a.0 as usize])
                                };
                                let nb = self.b.ins().imul(ba, bb);
                                return VV::Aff(nb, self.stride_mul(s, by, known));
                            }
                        }
                        _ => {}
                    }
                }
            }
            Inst::Where(cond, a, b)
                if dt == DType::F32
                    || (dt == DType::Bool && (is_vec(c, cond) || is_vec(c, a) || is_vec(c, b))) =>
            {
                let m = self.vv_vec(c, cond.0 as usize, DType::Bool);
                let x = self.vv_vec(c, a.0 as usize, dt);
                let y = self.vv_vec(c, b.0 as usize, dt);
                let m = if dt == DType::F32 {
                    self.b.ins().bitcast(F32X4, vec_flags(), m)
                } else {
                    m
                };
                return VV::Vec(self.b.ins().bitselect(m, x, y));
            }
            Inst::Cast(to, a) => {
                let from = dt_of(a);
                if from == *to {
                    return c.vv[a.0 as usize].expect("computed");
                }
                if from == DType::F32 && *to == DType::Bool {
                    let x = self.vv_vec(c, a.0 as usize, from);
                    let z = self.b.ins().f32const(0.0);
                    let z = self.splat(z, false);
                    return VV::Vec(self.b.ins().fcmp(FloatCC::NotEqual, x, z));
                }
                if from == DType::Bool && *to == DType::F32 && is_vec(c, a) {
                    let m = self.vv_vec(c, a.0 as usize, from);
                    let one = self.b.ins().iconst(I32, 1.0f32.to_bits() as i64);
                    let one = self.b.ins().splat(I32X4, one);
                    let bits = self.b.ins().band(m, one);
                    return VV::Vec(self.b.ins().bitcast(F32X4, vec_flags(), bits));
                }
            }
            _ => {}
        }
        // Lane by lane, with the scalar lowering.
        let ops = inst.operands();
        let lanes: Vec<[Value; LANES]> = ops
            .iter()
            .map(|o| self.vv_lanes(c, o.0 as usize, dt_of(o)))
            .collect();
        let mut out = [base; LANES];
        for (l, o) in out.iter_mut().enumerate() {
            let args: Vec<Value> = lanes.iter().map(|x| x[l]).collect();
            *o = self.scalar_op(ph, inst, dt, &args);
        }
        VV::Lanes(out)
    }

    // ---- scalar operations -----------------------------------------------------------------

    /// Floor division (or modulo) of an i64 `a` by a size `d >= 0` with the constants
    /// `(m, sh)` of `jit::division_constants`: for `a < 0`, `floor(a / d) = !floor(!a / d)`,
    /// and `!a` is then in `0..2^63`, where `floor(n / d) = umulhi(n, m) >> sh` (exact, see
    /// there). `d == 1` gives `a`, `d == 0` gives 0 (as the generic path).
    fn size_divmod(&mut self, a: Value, d: Value, m: Value, sh: Value, want_mod: bool) -> Value {
        let sign = self.b.ins().sshr_imm_u(a, 63);
        let n = self.b.ins().bxor(a, sign);
        let t = self.b.ins().umulhi(n, m);
        let q = self.b.ins().ushr(t, sh);
        let is_one = self.b.ins().icmp_imm_u(IntCC::Equal, d, 1);
        let q = self.b.ins().select(is_one, n, q);
        let q = self.b.ins().bxor(q, sign);
        let v = if want_mod {
            let qd = self.b.ins().imul(q, d);
            self.b.ins().isub(a, qd)
        } else {
            q
        };
        let is_zero = self.b.ins().icmp_imm_u(IntCC::Equal, d, 0);
        let zero = self.ic(I64, 0);
        self.b.ins().select(is_zero, zero, v)
    }

    /// The value of `v` when an `iconst` defines it.
    fn const_int(&self, v: Value) -> Option<i64> {
        let dfg = &self.b.func.dfg;
        let inst = dfg.value_def(v).inst()?;
        match dfg.insts[inst] {
            ir::InstructionData::UnaryImm {
                opcode: ir::Opcode::Iconst,
                imm,
            } => {
                let bits = dfg.value_type(v).bits();
                let raw: i64 = imm.into();
                // Sign-extend narrow constants (stored masked to their width).
                Some(if bits >= 64 {
                    raw
                } else {
                    (raw << (64 - bits)) >> (64 - bits)
                })
            }
            _ => None,
        }
    }

    /// An integer constant of type `ty` (the immediate zero-extended, as the verifier wants).
    fn ic(&mut self, ty: Type, v: i64) -> Value {
        let bits = ty.bits();
        let v = if bits >= 64 {
            v
        } else {
            v & ((1i64 << bits) - 1)
        };
        self.b.ins().iconst(ty, v)
    }

    fn konst(&mut self, c: Scalar) -> Value {
        match c {
            Scalar::Bool(v) => self.ic(I8, v as i64),
            Scalar::U8(v) => self.ic(I8, v as i64),
            Scalar::I32(v) => self.ic(I32, v as i64),
            Scalar::I64(v) => self.ic(I64, v),
            Scalar::F16(v) => self.b.ins().f32const(v.to_f32()),
            Scalar::BF16(v) => self.b.ins().f32const(v.to_f32()),
            Scalar::F32(v) => self.b.ins().f32const(v),
            Scalar::F64(v) => self.b.ins().f64const(v),
        }
    }

    /// A runtime scalar parameter: `kernel::param_value(bits, dt)`.
    fn param(&mut self, bits: Value, dt: DType) -> Value {
        match dt {
            DType::Bool => self.b.ins().icmp_imm_s(IntCC::NotEqual, bits, 0),
            DType::U8 => self.b.ins().ireduce(I8, bits),
            DType::I32 => self.b.ins().ireduce(I32, bits),
            DType::I64 => bits,
            DType::F64 => self.b.ins().bitcast(F64, MemFlagsData::new(), bits),
            DType::F32 | DType::F16 | DType::BF16 => {
                let w = self.b.ins().ireduce(I32, bits);
                let f = self.b.ins().bitcast(F32, MemFlagsData::new(), w);
                self.round_to(dt, f)
            }
        }
    }

    /// A float constant of the (scalar or vector) float type `ty`.
    fn fconst(&mut self, ty: Type, v: f64) -> Value {
        if ty == F64 {
            return self.b.ins().f64const(v);
        }
        let s = self.b.ins().f32const(v as f32);
        if ty.is_vector() {
            self.splat(s, false)
        } else {
            s
        }
    }

    /// f32 (or f32x4) `sin`/`cos` of `x` whose inline result is `inline`: lanes with |x| beyond
    /// [`math::sin_cos_inline_limit`] (or infinite) are recomputed with the exact reduction
    /// ([`math::emit_sin_cos_exact`]). One compare and a mask test per value; the exact code
    /// sits in cold blocks entered only when some lane is that large, and calls nothing (a call
    /// clobbers every vector register and most integer ones, which made the register allocator
    /// spill on the common path: 1.16x the time of a sin loop, against 1.06x now). Each lane's
    /// result depends only on its own input, so vector and scalar code agree bit for bit.
    fn sin_cos_huge_lanes(&mut self, f: MathFn, x: Value, inline: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        let (any, big) = if ty.is_vector() {
            let table = self.math_table;
            let big = math::emit_sin_cos_beyond(&mut self.b, x, self.has_fma, table);
            (self.b.ins().vany_true(big), Some(big))
        } else {
            let limit = math::sin_cos_inline_limit(self.has_fma);
            let a = self.b.ins().fabs(x);
            let lim = self.b.ins().f32const(limit);
            // False for NaN, which the inline code already maps to NaN.
            (self.b.ins().fcmp(FloatCC::GreaterThan, a, lim), None)
        };
        let slow = self.b.create_block();
        let merge = self.b.create_block();
        let res = self.b.append_block_param(merge, ty);
        self.b
            .ins()
            .brif(any, slow, NO_ARGS, merge, &[BlockArg::Value(inline)]);
        self.b.set_cold_block(slow);
        self.b.switch_to_block(slow);
        let cos = f == MathFn::Cos;
        let exact = match big {
            Some(big) => {
                // A loop over the lanes (lane 0, then rotate both vectors by one lane), not
                // four copies: fewer values live at once, so the register allocator keeps the
                // main loop's values in registers on the common path.
                let lanes = self.b.create_block();
                let done = self.b.create_block();
                let n = self.b.append_block_param(lanes, I32);
                let xv = self.b.append_block_param(lanes, F32X4);
                let acc = self.b.append_block_param(lanes, F32X4);
                let v = self.b.append_block_param(done, F32X4);
                let zero = self.b.ins().iconst(I32, 0);
                self.b.ins().jump(
                    lanes,
                    &[
                        BlockArg::Value(zero),
                        BlockArg::Value(x),
                        BlockArg::Value(inline),
                    ],
                );
                self.b.set_cold_block(lanes);
                self.b.set_cold_block(done);
                self.b.switch_to_block(lanes);
                let xl = self.b.ins().extractlane(xv, 0);
                let yl = math::emit_sin_cos_exact(&mut self.b, xl, cos);
                let acc = self.b.ins().insertlane(acc, yl, 0);
                let rotate: Vec<u8> = (4..16).chain(0..4).collect();
                let rotate = self.b.func.dfg.immediates.push(ConstantData::from(rotate));
                let mut rot = |v: Value| {
                    let bytes = self.b.ins().bitcast(I8X16, vec_flags(), v);
                    let r = self.b.ins().shuffle(bytes, bytes, rotate);
                    self.b.ins().bitcast(F32X4, vec_flags(), r)
                };
                let (xv, acc) = (rot(xv), rot(acc));
                let n = self.b.ins().iadd_imm_s(n, 1);
                let more = self
                    .b
                    .ins()
                    .icmp_imm_u(IntCC::UnsignedLessThan, n, LANES as i64);
                self.b.ins().brif(
                    more,
                    lanes,
                    &[
                        BlockArg::Value(n),
                        BlockArg::Value(xv),
                        BlockArg::Value(acc),
                    ],
                    done,
                    &[BlockArg::Value(acc)],
                );
                self.b.switch_to_block(done);
                let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), big);
                self.b.ins().bitselect(m, v, inline)
            }
            None => math::emit_sin_cos_exact(&mut self.b, x, cos),
        };
        self.b.ins().jump(merge, &[BlockArg::Value(exact)]);
        self.b.switch_to_block(merge);
        res
    }

    /// Calls helper `h` through the table.
    fn call(&mut self, h: Helper, args: &[Value]) -> Value {
        let sig = match self.sigs.get(&h) {
            Some(s) => *s,
            None => {
                let (params, ret) = h.signature();
                let mut sig = Signature::new(self.call_conv);
                sig.params.extend(params.iter().map(|t| AbiParam::new(*t)));
                sig.returns.push(AbiParam::new(ret));
                let s = self.b.import_signature(sig);
                self.sigs.insert(h, s);
                s
            }
        };
        let flags = MemFlagsData::trusted().with_readonly().with_can_move();
        let f = self
            .b
            .ins()
            .load(I64, flags, self.helpers, (8 * h as usize) as i32);
        let call = self.b.ins().call_indirect(sig, f, args);
        self.b.inst_results(call)[0]
    }

    fn addr(&mut self, buf: usize, off: Value) -> Value {
        let size = self.k.bufs[buf].dtype.size_in_bytes();
        let scaled = if size == 1 {
            off
        } else {
            self.b.ins().ishl_imm_u(off, size.trailing_zeros() as i64)
        };
        self.b.ins().iadd(self.bufs[buf], scaled)
    }

    fn load(&mut self, buf: usize, off: Value) -> Value {
        let dt = self.k.bufs[buf].dtype;
        let a = self.addr(buf, off);
        let mut f = MemFlagsData::trusted();
        if !self.k.bufs[buf].output {
            f = f.with_readonly();
        }
        match dt {
            DType::F16 => {
                let bits = self.b.ins().uload16(I32, f, a, 0);
                self.call(Helper::F16BitsToF32, &[bits])
            }
            DType::BF16 => {
                let bits = self.b.ins().uload16(I32, f, a, 0);
                let s = self.b.ins().ishl_imm_u(bits, 16);
                self.b.ins().bitcast(F32, MemFlagsData::new(), s)
            }
            _ => self.b.ins().load(cl_type(dt), f, a, 0),
        }
    }

    fn store(&mut self, buf: usize, off: Value, v: Value) {
        let dt = self.k.bufs[buf].dtype;
        let a = self.addr(buf, off);
        let f = MemFlagsData::trusted();
        match dt {
            DType::F16 => {
                let bits = self.call(Helper::F32ToF16Bits, &[v]);
                self.b.ins().istore16(f, bits, a, 0);
            }
            DType::BF16 => {
                let bits = self.b.ins().bitcast(I32, MemFlagsData::new(), v);
                let s = self.b.ins().ushr_imm_u(bits, 16);
                self.b.ins().istore16(f, s, a, 0);
            }
            _ => {
                self.b.ins().store(f, v, a, 0);
            }
        }
    }

    /// A scalar operation (`Load`, `Unary`, `Binary`, `Where`, `Cast`, `Random`) on operand
    /// values `args`.
    fn scalar_op(&mut self, ph: &Phase, inst: &Inst, dt: DType, args: &[Value]) -> Value {
        let dt_of = |v: &V| ph.body[v.0 as usize].1;
        match inst {
            Inst::Load { buf, .. } => self.load(*buf, args[0]),
            Inst::Unary(op, _) => self.unary(*op, dt, args[0]),
            Inst::Binary(op, a, _) => self.binary(*op, dt_of(a), args[0], args[1]),
            Inst::Where(..) => self.select(args[0], args[1], args[2]),
            Inst::Cast(to, a) => self.cast(dt_of(a), *to, args[0]),
            Inst::Random {
                seed_param, dist, ..
            } => {
                let seed = self.sizes[*seed_param];
                self.random(seed, *dist, dt, args[0])
            }
            Inst::Const(_)
            | Inst::LoopIdx(_)
            | Inst::Size(_)
            | Inst::Param(_)
            | Inst::PhaseResult(_) => {
                unreachable!("sources are emitted by the loop code")
            }
        }
    }

    /// Rounds an f32 holding an f16/bf16 result to that dtype (identity for other dtypes).
    fn round_to(&mut self, dt: DType, v: Value) -> Value {
        match dt {
            DType::F16 => self.call(Helper::RoundF16, &[v]),
            DType::BF16 => {
                // half's `bf16::from_f32`: NaN keeps its top bits and gets the quiet bit; other
                // values round to nearest, ties to even.
                let x = self.b.ins().bitcast(I32, MemFlagsData::new(), v);
                let lsb = self.b.ins().ushr_imm_u(x, 16);
                let lsb = self.b.ins().band_imm_s(lsb, 1);
                let r = self.b.ins().iadd_imm_s(x, 0x7fff);
                let r = self.b.ins().iadd(r, lsb);
                let hi_mask = self.ic(I32, 0xffff_0000);
                let r = self.b.ins().band(r, hi_mask);
                let n = self.b.ins().band(x, hi_mask);
                let quiet = self.ic(I32, 0x0040_0000);
                let n = self.b.ins().bor(n, quiet);
                let is_nan = self.b.ins().fcmp(FloatCC::Unordered, v, v);
                let bits = self.b.ins().select(is_nan, n, r);
                self.b.ins().bitcast(F32, MemFlagsData::new(), bits)
            }
            _ => v,
        }
    }

    fn unary(&mut self, op: UnaryOp, dt: DType, x: Value) -> Value {
        if dt.is_float() {
            let r = self.float_unary(op, dt, x);
            return match op {
                // Exact on f16/bf16 values.
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => r,
                _ => self.round_to(dt, r),
            };
        }
        match (dt, op) {
            (DType::Bool, UnaryOp::Not) => {
                let one = self.ic(I8, 1);
                self.b.ins().bxor(x, one)
            }
            (_, UnaryOp::Not) => self.b.ins().bnot(x),
            (_, UnaryOp::Neg) => self.b.ins().ineg(x),
            (DType::I32 | DType::I64, UnaryOp::Abs) => self.b.ins().iabs(x),
            // abs of u8, floor/ceil/round of integers: the identity.
            _ => x,
        }
    }

    /// A float unary op on `x` of type f32, f64 or f32x4 (`dt` is the element dtype).
    fn float_unary(&mut self, op: UnaryOp, dt: DType, x: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        if let Some(f) = math_fn(op) {
            return match dt {
                DType::F32 => {
                    let table = self.math_table.filter(|_| ty.is_vector());
                    let r = math::emit_unary_with(&mut self.b, f, ty, x, self.has_fma, table);
                    match f {
                        MathFn::Sin | MathFn::Cos => self.sin_cos_huge_lanes(f, x, r),
                        _ => r,
                    }
                }
                DType::F64 => self.call(Helper::f64_math(f), &[x]),
                _ => self.call(Helper::f32_math(f), &[x]),
            };
        }
        match op {
            UnaryOp::Neg => self.b.ins().fneg(x),
            UnaryOp::Abs => self.b.ins().fabs(x),
            UnaryOp::Recip => {
                let one = self.fconst(ty, 1.0);
                self.b.ins().fdiv(one, x)
            }
            UnaryOp::Sqrt => self.b.ins().sqrt(x),
            UnaryOp::Floor => self.b.ins().floor(x),
            UnaryOp::Ceil => self.b.ins().ceil(x),
            UnaryOp::Round => self.b.ins().nearest(x),
            _ => unreachable!("checked: {} on a float", op.name()),
        }
    }

    /// Scalar max/min with the NaN rule: `a > b || isnan(a) ? a : b`.
    fn smaxmin(&mut self, a: Value, b: Value, max: bool) -> Value {
        let cc = if max {
            FloatCC::GreaterThan
        } else {
            FloatCC::LessThan
        };
        let c1 = self.b.ins().fcmp(cc, a, b);
        let c2 = self.b.ins().fcmp(FloatCC::Unordered, a, a);
        let c = self.b.ins().bor(c1, c2);
        self.select(c, a, b)
    }

    /// `c ? a : b` on scalars without a branch. Cranelift lowers a float `select` on x86-64 as
    /// a conditional jump over a register move, which data-dependent conditions (relu, the
    /// first-max chain of max pooling) mispredict about half the time — in the scalar tails
    /// of vector loops that cost more than the vector body. A float select is therefore an
    /// integer select (`cmov`) of the bits.
    fn select(&mut self, c: Value, a: Value, b: Value) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        let int = match ty {
            F32 => I32,
            F64 => I64,
            _ => return self.b.ins().select(c, a, b),
        };
        let flags = MemFlagsData::new();
        let ai = self.b.ins().bitcast(int, flags, a);
        let bi = self.b.ins().bitcast(int, flags, b);
        let r = self.b.ins().select(c, ai, bi);
        self.b.ins().bitcast(ty, flags, r)
    }

    /// A binary op on scalar operands of dtype `dt`.
    fn binary(&mut self, op: BinaryOp, dt: DType, a: Value, b: Value) -> Value {
        if dt.is_float() {
            let f32_helper = |h64: Helper, h32: Helper| if dt == DType::F64 { h64 } else { h32 };
            let r = match op {
                BinaryOp::Add => self.b.ins().fadd(a, b),
                BinaryOp::Sub => self.b.ins().fsub(a, b),
                BinaryOp::Mul => self.b.ins().fmul(a, b),
                BinaryOp::Div => self.b.ins().fdiv(a, b),
                BinaryOp::Max => self.smaxmin(a, b, true),
                BinaryOp::Min => self.smaxmin(a, b, false),
                BinaryOp::Pow => self.call(f32_helper(Helper::PowF64, Helper::PowF32), &[a, b]),
                BinaryOp::Mod => self.call(f32_helper(Helper::ModF64, Helper::ModF32), &[a, b]),
                BinaryOp::Lt => return self.b.ins().fcmp(FloatCC::LessThan, a, b),
                BinaryOp::Le => return self.b.ins().fcmp(FloatCC::LessThanOrEqual, a, b),
                BinaryOp::Eq => return self.b.ins().fcmp(FloatCC::Equal, a, b),
                BinaryOp::Ne => return self.b.ins().fcmp(FloatCC::NotEqual, a, b),
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => {
                    unreachable!("checked: {} on a float", op.name())
                }
            };
            return self.round_to(dt, r);
        }
        if dt == DType::Bool {
            return match op {
                BinaryOp::Add | BinaryOp::Max | BinaryOp::Or => self.b.ins().bor(a, b),
                BinaryOp::Mul | BinaryOp::Min | BinaryOp::And => self.b.ins().band(a, b),
                BinaryOp::Xor => self.b.ins().bxor(a, b),
                BinaryOp::Lt => {
                    let one = self.ic(I8, 1);
                    let na = self.b.ins().bxor(a, one);
                    self.b.ins().band(na, b)
                }
                BinaryOp::Le => {
                    let one = self.ic(I8, 1);
                    let na = self.b.ins().bxor(a, one);
                    self.b.ins().bor(na, b)
                }
                BinaryOp::Eq => self.b.ins().icmp(IntCC::Equal, a, b),
                BinaryOp::Ne => self.b.ins().icmp(IntCC::NotEqual, a, b),
                _ => unreachable!("checked: {} on bool", op.name()),
            };
        }
        let signed = dt != DType::U8;
        let (lt, le) = if signed {
            (IntCC::SignedLessThan, IntCC::SignedLessThanOrEqual)
        } else {
            (IntCC::UnsignedLessThan, IntCC::UnsignedLessThanOrEqual)
        };
        match op {
            BinaryOp::Add => self.b.ins().iadd(a, b),
            BinaryOp::Sub => self.b.ins().isub(a, b),
            BinaryOp::Mul => self.b.ins().imul(a, b),
            BinaryOp::Div => self.int_divmod(signed, a, b, false),
            BinaryOp::Mod => self.int_divmod(signed, a, b, true),
            BinaryOp::Pow => {
                let wa = self.widen(dt, a);
                let wb = self.widen(dt, b);
                let r = self.call(Helper::PowI64, &[wa, wb]);
                if dt == DType::I64 {
                    r
                } else {
                    self.b.ins().ireduce(cl_type(dt), r)
                }
            }
            BinaryOp::Max if signed => self.b.ins().smax(a, b),
            BinaryOp::Max => self.b.ins().umax(a, b),
            BinaryOp::Min if signed => self.b.ins().smin(a, b),
            BinaryOp::Min => self.b.ins().umin(a, b),
            BinaryOp::Lt => self.b.ins().icmp(lt, a, b),
            BinaryOp::Le => self.b.ins().icmp(le, a, b),
            BinaryOp::Eq => self.b.ins().icmp(IntCC::Equal, a, b),
            BinaryOp::Ne => self.b.ins().icmp(IntCC::NotEqual, a, b),
            BinaryOp::And => self.b.ins().band(a, b),
            BinaryOp::Or => self.b.ins().bor(a, b),
            BinaryOp::Xor => self.b.ins().bxor(a, b),
        }
    }

    /// Floor division or modulo with 0 for a zero divisor and wrapping `MIN / -1` (the divisor
    /// is replaced before `sdiv`/`udiv`, which would trap).
    fn int_divmod(&mut self, signed: bool, a: Value, b: Value, want_mod: bool) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        // A positive power-of-two constant divisor (index arithmetic: strides, window
        // offsets): an arithmetic shift is floor division and a mask is floor modulo, in two's
        // complement, for either signedness of a positive divisor.
        if let Some(d) = self.const_int(b)
            && d > 0
            && (d as u64).is_power_of_two()
        {
            let k = d.trailing_zeros() as i64;
            return if want_mod {
                let mask = self.ic(ty, d - 1);
                self.b.ins().band(a, mask)
            } else if signed {
                self.b.ins().sshr_imm_u(a, k)
            } else {
                self.b.ins().ushr_imm_u(a, k)
            };
        }
        if signed
            && ty == I64
            && let Some(&Some((m, sh))) = self
                .sizes
                .iter()
                .position(|&v| v == b)
                .map(|s| &self.divisors[s])
        {
            return self.size_divmod(a, b, m, sh, want_mod);
        }
        let zero = self.ic(ty, 0);
        let one = self.ic(ty, 1);
        let is_zero = self.b.ins().icmp(IntCC::Equal, b, zero);
        if !signed {
            let bs = self.b.ins().select(is_zero, one, b);
            let r = if want_mod {
                self.b.ins().urem(a, bs)
            } else {
                self.b.ins().udiv(a, bs)
            };
            return self.b.ins().select(is_zero, zero, r);
        }
        let m1 = self.ic(ty, -1);
        let is_m1 = self.b.ins().icmp(IntCC::Equal, b, m1);
        let bad = self.b.ins().bor(is_zero, is_m1);
        let bs = self.b.ins().select(bad, one, b);
        let q = self.b.ins().sdiv(a, bs);
        // The remainder from the quotient: one division instead of two.
        let qb = self.b.ins().imul(q, bs);
        let r = self.b.ins().isub(a, qb);
        // Floor: when the remainder is nonzero and its sign differs from the divisor's.
        let r_nz = self.b.ins().icmp(IntCC::NotEqual, r, zero);
        let x = self.b.ins().bxor(r, bs);
        let sign_differs = self.b.ins().icmp(IntCC::SignedLessThan, x, zero);
        let adjust = self.b.ins().band(r_nz, sign_differs);
        let v = if want_mod {
            let rb = self.b.ins().iadd(r, bs);
            // b == -1 gives r == 0 already.
            self.b.ins().select(adjust, rb, r)
        } else {
            let adj = self.b.ins().uextend(ty, adjust);
            let q1 = self.b.ins().isub(q, adj);
            let neg = self.b.ins().ineg(a);
            self.b.ins().select(is_m1, neg, q1)
        };
        self.b.ins().select(is_zero, zero, v)
    }

    /// An integer or bool value as i64 (sign-extended for i32, zero-extended for u8/bool).
    fn widen(&mut self, dt: DType, v: Value) -> Value {
        match dt {
            DType::I64 => v,
            DType::I32 => self.b.ins().sextend(I64, v),
            _ => self.b.ins().uextend(I64, v),
        }
    }

    /// `Scalar::cast` from `from` to `to`.
    fn cast(&mut self, from: DType, to: DType, v: Value) -> Value {
        use DType::*;
        if from == to {
            return v;
        }
        if to == Bool {
            return if from.is_float() {
                let z = if from == F64 {
                    self.b.ins().f64const(0.0)
                } else {
                    self.b.ins().f32const(0.0)
                };
                // `ne` is unordered-or-not-equal: NaN → true.
                self.b.ins().fcmp(FloatCC::NotEqual, v, z)
            } else {
                self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
            };
        }
        if from.is_float() {
            return match to {
                U8 => {
                    let i = self.b.ins().fcvt_to_sint_sat(cl_types::I32, v);
                    let lo = self.ic(cl_types::I32, 0);
                    let hi = self.ic(cl_types::I32, 255);
                    let i = self.b.ins().smax(i, lo);
                    let i = self.b.ins().smin(i, hi);
                    self.b.ins().ireduce(I8, i)
                }
                I32 => self.b.ins().fcvt_to_sint_sat(cl_types::I32, v),
                I64 => self.b.ins().fcvt_to_sint_sat(cl_types::I64, v),
                F32 => {
                    if from == F64 {
                        self.b.ins().fdemote(cl_types::F32, v)
                    } else {
                        v
                    }
                }
                F64 => self.b.ins().fpromote(cl_types::F64, v),
                F16 => {
                    if from == F64 {
                        self.call(Helper::F64ToF16, &[v])
                    } else {
                        self.call(Helper::RoundF16, &[v])
                    }
                }
                BF16 => {
                    if from == F64 {
                        self.call(Helper::F64ToBF16, &[v])
                    } else {
                        self.round_to(BF16, v)
                    }
                }
                Bool => unreachable!("handled above"),
            };
        }
        // From an integer or bool.
        let wide = self.widen(from, v);
        match to {
            U8 => {
                if from == Bool {
                    v
                } else {
                    self.b.ins().ireduce(I8, wide)
                }
            }
            I32 => {
                if from == I64 {
                    self.b.ins().ireduce(cl_types::I32, v)
                } else {
                    self.b.ins().ireduce(cl_types::I32, wide)
                }
            }
            I64 => wide,
            F32 => self.b.ins().fcvt_from_sint(cl_types::F32, wide),
            F64 => self.b.ins().fcvt_from_sint(cl_types::F64, wide),
            F16 | BF16 => {
                if matches!(from, Bool | U8) {
                    // Exact in both.
                    self.b.ins().fcvt_from_sint(cl_types::F32, wide)
                } else if to == F16 {
                    self.call(Helper::I64ToF16, &[wide])
                } else {
                    self.call(Helper::I64ToBF16, &[wide])
                }
            }
            Bool => unreachable!("handled above"),
        }
    }

    // ---- Philox ----------------------------------------------------------------------------

    /// The four Philox4x32-10 words of `counter` under the i64 `seed` (see `metaops::philox`).
    fn philox(&mut self, seed: Value, counter: Value) -> [Value; 4] {
        const M0: u32 = 0xD251_1F53;
        const M1: u32 = 0xCD9E_8D57;
        const W0: u32 = 0x9E37_79B9;
        const W1: u32 = 0xBB67_AE85;
        let c0 = self.b.ins().ireduce(I32, counter);
        let hi = self.b.ins().ushr_imm_u(counter, 32);
        let c1 = self.b.ins().ireduce(I32, hi);
        let zero = self.ic(I32, 0);
        let mut c = [c0, c1, zero, zero];
        let key0 = self.b.ins().ireduce(I32, seed);
        let hi = self.b.ins().ushr_imm_u(seed, 32);
        let key1 = self.b.ins().ireduce(I32, hi);
        let m0 = self.ic(I32, M0 as i64);
        let m1 = self.ic(I32, M1 as i64);
        for round in 0..10u32 {
            // The key is bumped by (W0, W1) between rounds.
            let (kk0, kk1) = if round == 0 {
                (key0, key1)
            } else {
                let b0 = self.ic(I32, W0.wrapping_mul(round) as i64);
                let b1 = self.ic(I32, W1.wrapping_mul(round) as i64);
                (self.b.ins().iadd(key0, b0), self.b.ins().iadd(key1, b1))
            };
            let hi0 = self.b.ins().umulhi(m0, c[0]);
            let lo0 = self.b.ins().imul(m0, c[0]);
            let (hi1, lo1) = if round == 0 {
                (zero, zero)
            } else {
                (self.b.ins().umulhi(m1, c[2]), self.b.ins().imul(m1, c[2]))
            };
            let x0 = self.b.ins().bxor(hi1, c[1]);
            let x0 = self.b.ins().bxor(x0, kk0);
            let x2 = self.b.ins().bxor(hi0, c[3]);
            let x2 = self.b.ins().bxor(x2, kk1);
            c = [x0, lo1, x2, lo0];
        }
        c
    }

    /// `(w >> 8) + add` as an exact f32.
    fn u24(&mut self, w: Value, add: i64) -> Value {
        let s = self.b.ins().ushr_imm_u(w, 8);
        let s = self.b.ins().uextend(I64, s);
        let s = self.b.ins().iadd_imm_s(s, add);
        self.b.ins().fcvt_from_sint(F32, s)
    }

    /// `((a << 21) | (b >> 11)) + add` as an exact f64.
    fn bits53(&mut self, a: Value, b: Value, add: i64) -> Value {
        let a = self.b.ins().uextend(I64, a);
        let a = self.b.ins().ishl_imm_u(a, 21);
        let b = self.b.ins().ushr_imm_u(b, 11);
        let b = self.b.ins().uextend(I64, b);
        let s = self.b.ins().bor(a, b);
        let s = self.b.ins().iadd_imm_s(s, add);
        self.b.ins().fcvt_from_sint(F64, s)
    }

    /// `philox::random_scalar(seed, counter, dist, dt)`.
    fn random(&mut self, seed: Value, dist: Distribution, dt: DType, counter: Value) -> Value {
        let w = self.philox(seed, counter);
        let v = match (dt, dist) {
            (DType::F32, Distribution::Uniform) => {
                let u = self.u24(w[0], 0);
                let s = self.b.ins().f32const(1.0 / 16_777_216.0);
                return self.b.ins().fmul(u, s);
            }
            (DType::F32, Distribution::Normal) => {
                let s = self.b.ins().f32const(1.0 / 16_777_216.0);
                let u1 = self.u24(w[0], 1);
                let u1 = self.b.ins().fmul(u1, s);
                let u2 = self.u24(w[1], 0);
                let u2 = self.b.ins().fmul(u2, s);
                let ln = math::emit_unary(&mut self.b, MathFn::Log, F32, u1, self.has_fma);
                let m2 = self.b.ins().f32const(-2.0);
                let r = self.b.ins().fmul(m2, ln);
                let r = self.b.ins().sqrt(r);
                let tau = self.b.ins().f32const(std::f32::consts::TAU);
                let t = self.b.ins().fmul(tau, u2);
                let cos = math::emit_unary(&mut self.b, MathFn::Cos, F32, t, self.has_fma);
                return self.b.ins().fmul(r, cos);
            }
            (_, Distribution::Uniform) => {
                let u = self.bits53(w[0], w[1], 0);
                let s = self.b.ins().f64const(1.0 / 9_007_199_254_740_992.0);
                self.b.ins().fmul(u, s)
            }
            (_, Distribution::Normal) => {
                let s = self.b.ins().f64const(1.0 / 9_007_199_254_740_992.0);
                let u1 = self.bits53(w[0], w[1], 1);
                let u1 = self.b.ins().fmul(u1, s);
                let u2 = self.bits53(w[2], w[3], 0);
                let u2 = self.b.ins().fmul(u2, s);
                let ln = self.call(Helper::LnF64, &[u1]);
                let m2 = self.b.ins().f64const(-2.0);
                let r = self.b.ins().fmul(m2, ln);
                let r = self.b.ins().sqrt(r);
                let tau = self.b.ins().f64const(std::f64::consts::TAU);
                let t = self.b.ins().fmul(tau, u2);
                let cos = self.call(Helper::CosF64, &[t]);
                self.b.ins().fmul(r, cos)
            }
        };
        // Other dtypes: the f64 sample, cast.
        self.cast(DType::F64, dt, v)
    }
}

/// Cranelift's types under names that do not clash with [`DType`]'s variants.
mod cl_types {
    pub use cranelift_codegen::ir::types::{F32, F64, I32, I64};
}
