//! The kernel IR: a backend-neutral description of one compiled kernel.
//!
//! A kernel is a loop nest over runtime sizes:
//!
//! ```text
//! for o0 in 0..S[outer[0]]            // loop 0: split across threads (`start..end`)
//!   for o1 in 0..S[outer[1]] ...       // the other outer loops
//!     phase 0: for i.. in inner loops: // a Reduce phase folds a value into a register
//!                                      // (and may write values too),
//!     phase 1: for i.. in inner loops: // a Store phase writes values to buffers;
//!     ...                              // later phases read earlier Reduce results
//! ```
//!
//! Each phase has its own SSA body of [`Inst`]s. Index arithmetic is ordinary i64 arithmetic in
//! the same SSA (`Binary(Add/Mul/Div/Mod...)` on i64 values, where `Div`/`Mod` are floor
//! division/modulo); loads and stores take a linear element offset. Sizes are parameters
//! (`Inst::Size`), never constants, so one kernel serves every batch size. Extents equal to 1 are
//! constants (a structural property: keepdims and broadcast axes).
//!
//! Semantics (what every backend must reproduce; [`interpret`] is the executable form):
//! - `LoopIdx(k)`: `k < outer.len()` is outer loop `k`, else inner loop `k - outer.len()` of the
//!   phase the instruction is in.
//! - Scalar ops have the reference interpreter's semantics (`crate::interp::eval_unary`, ...).
//! - A Reduce phase starts from `op.identity(dtype)` and folds `value` over its inner loops in
//!   row-major order (its stores, if any, are done at every iteration as a Store phase's are);
//!   float sums and products accumulate in f64 and round once at the end.
//!   Backends may reassociate float sums/products (results then agree within an ulp, not
//!   bitwise) but keep the f64 accumulation of f32/f16/bf16 sums and products: partial sums
//!   are f64, combined in f64 and rounded once at the end (the CPU backend splits a reduction
//!   to one value across threads so, with the partials combined in order; its column blocks
//!   fold many outer iterations at once without reassociating anything), and a vectorised
//!   max/min may return either zero when the extreme is both -0.0 and +0.0; which NaN payload a NaN result carries is unspecified.
//! - A store with `mask` writes only where the mask is true; a store with `combine` folds the
//!   value into the buffer element instead of overwriting it (buffers that are combined into
//!   are filled with the combine op's identity by the runtime before the kernel runs).
//! - Loads are always in bounds: offsets are clamped to valid elements by construction (masked
//!   reads select offset 0 and discard the value), and every buffer has at least one element.
//!   "Valid" is with respect to the buffer's declared extents ([`BufParam::dims`]), which a
//!   launch checks the buffers against.
//! - When `parallel` is true, iterations of loop 0 are independent and may run on different
//!   threads. Otherwise the kernel runs as one call, except that a backend may split loop 0 of
//!   a kernel whose every store into an output combines (with one op per buffer) and which
//!   never loads its outputs: each part combines into its own copy of the outputs, filled with
//!   the op's identity, and the copies are folded in the order of loop 0. Max/min/and/or and
//!   integer results are unchanged by this; float sums and products are reassociated.

use std::fmt::{self, Write};

use crate::dtype::{DType, Scalar};
use crate::op::{BinaryOp, Distribution, ReduceOp, UnaryOp};

/// A kernel that breaks the rules of the kernel IR (a bug in whatever produced it).
#[derive(Debug, thiserror::Error)]
#[error("invalid kernel: {0}")]
pub struct InvalidKernel(pub String);

/// A value in a phase body: the index of its instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct V(pub u32);

impl fmt::Display for V {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// One SSA instruction; its dtype is stored beside it in [`Phase::body`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Inst {
    /// A constant.
    Const(Scalar),
    /// A loop index (i64).
    LoopIdx(usize),
    /// Runtime size parameter `s` (i64).
    Size(usize),
    /// A runtime scalar of the instruction's dtype, from parameter `p` of the sizes array: the
    /// value's bits (f16/bf16: the bits of the value as f32). Graph constants are parameters,
    /// so a new learning rate or a size-derived constant (a mean's `1/n`) needs no new kernel.
    Param(usize),
    /// Element of buffer `buf` at the linear element offset `offset` (an i64 value).
    Load {
        /// The buffer parameter.
        buf: usize,
        /// The element offset.
        offset: V,
    },
    /// A unary op.
    Unary(UnaryOp, V),
    /// A binary op (both operands of one dtype).
    Binary(BinaryOp, V, V),
    /// `if c { a } else { b }`.
    Where(V, V, V),
    /// A conversion.
    Cast(DType, V),
    /// Counter-based random number: `philox::random_scalar(seed, counter, dist, dtype)`, where
    /// the seed is runtime parameter `seed_param` (its i64 bits), so that fresh random numbers
    /// need no new kernel.
    Random {
        /// The index of the runtime parameter (in the sizes array) holding the seed.
        seed_param: usize,
        /// The distribution.
        dist: Distribution,
        /// The counter (an i64 value: the element's row-major index).
        counter: V,
    },
    /// The result of an earlier Reduce phase (for the current outer iteration).
    PhaseResult(usize),
}

impl Inst {
    /// The values the instruction reads, in operand order.
    pub fn operands(&self) -> Vec<V> {
        match self {
            Inst::Load { offset, .. } => vec![*offset],
            Inst::Unary(_, a) | Inst::Cast(_, a) => vec![*a],
            Inst::Binary(_, a, b) => vec![*a, *b],
            Inst::Where(c, a, b) => vec![*c, *a, *b],
            Inst::Random { counter, .. } => vec![*counter],
            Inst::Const(_)
            | Inst::LoopIdx(_)
            | Inst::Size(_)
            | Inst::Param(_)
            | Inst::PhaseResult(_) => vec![],
        }
    }

    /// The instruction with every operand `v` replaced by `f(v)`.
    pub fn map_operands(&self, mut f: impl FnMut(V) -> V) -> Inst {
        match self {
            Inst::Load { buf, offset } => Inst::Load {
                buf: *buf,
                offset: f(*offset),
            },
            Inst::Unary(op, a) => Inst::Unary(*op, f(*a)),
            Inst::Cast(d, a) => Inst::Cast(*d, f(*a)),
            Inst::Binary(op, a, b) => Inst::Binary(*op, f(*a), f(*b)),
            Inst::Where(c, a, b) => Inst::Where(f(*c), f(*a), f(*b)),
            Inst::Random {
                seed_param,
                dist,
                counter,
            } => Inst::Random {
                seed_param: *seed_param,
                dist: *dist,
                counter: f(*counter),
            },
            Inst::Const(_)
            | Inst::LoopIdx(_)
            | Inst::Size(_)
            | Inst::Param(_)
            | Inst::PhaseResult(_) => self.clone(),
        }
    }
}

/// A write of a value to a buffer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Store {
    /// The buffer parameter.
    pub buf: usize,
    /// The element offset (i64).
    pub offset: V,
    /// The value (of the buffer's dtype).
    pub value: V,
    /// When set, only where this bool value is true.
    pub mask: Option<V>,
    /// When set, `buf[offset] = op(buf[offset], value)`.
    pub combine: Option<ReduceOp>,
}

/// What a phase does with its body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PhaseKind {
    /// Folds `value` over the inner loops, and does `stores` at every inner iteration (the
    /// scheduler keeps a value computed for the fold for a later phase this way: see
    /// `schedule::keep_across_phases`).
    Reduce {
        /// The combining op.
        op: ReduceOp,
        /// The value folded.
        value: V,
        /// Writes done at every inner iteration besides the fold (usually none).
        stores: Vec<Store>,
    },
    /// Writes values at every inner iteration.
    Store(Vec<Store>),
}

impl PhaseKind {
    /// The writes done at every inner iteration: a Store phase's, or a Reduce phase's besides
    /// its fold.
    pub fn stores(&self) -> &[Store] {
        match self {
            PhaseKind::Reduce { stores, .. } | PhaseKind::Store(stores) => stores,
        }
    }
}

/// One pass over the phase's inner loops.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Phase {
    /// Inner loop extents, as size parameters (or the constant 1, see [`Extent`]).
    pub inner: Vec<Extent>,
    /// The SSA body with each instruction's dtype.
    pub body: Vec<(Inst, DType)>,
    /// What is done with the body.
    pub kind: PhaseKind,
}

/// A loop extent: a runtime size parameter, or a constant (1 for keepdims axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Extent {
    /// Size parameter `s`.
    Size(usize),
    /// A constant extent.
    Const(u64),
}

impl fmt::Display for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extent::Size(s) => write!(f, "s{s}"),
            Extent::Const(c) => write!(f, "{c}"),
        }
    }
}

/// A buffer parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BufParam {
    /// Element type.
    pub dtype: DType,
    /// True when the kernel writes it.
    pub output: bool,
    /// The buffer's extents: it holds their product of elements (row-major), and every load
    /// and store of the kernel stays within them. Launches check buffers against them.
    pub dims: Vec<Extent>,
}

impl BufParam {
    /// The number of elements for these sizes; `None` when a size is negative, missing or the
    /// product overflows.
    pub fn numel(&self, sizes: &[i64]) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |n, e| {
            let d = match *e {
                Extent::Size(s) => usize::try_from(*sizes.get(s)?).ok()?,
                Extent::Const(c) => usize::try_from(c).ok()?,
            };
            n.checked_mul(d)
        })
    }
}

/// One kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// Buffer parameters, inputs and outputs.
    pub bufs: Vec<BufParam>,
    /// Number of runtime size parameters.
    pub n_sizes: usize,
    /// Outer loop extents; loop 0 is the parallel one.
    pub outer: Vec<Extent>,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// Whether iterations of loop 0 may run concurrently.
    pub parallel: bool,
}

impl Kernel {
    /// Checks what every backend relies on: SSA order, operand dtypes, loop, size, buffer and
    /// phase references in range, stores into output buffers of their dtype.
    pub fn check(&self) -> Result<(), InvalidKernel> {
        let k = self;
        let size_ok = |e: &Extent| !matches!(e, Extent::Size(s) if *s >= k.n_sizes);
        if !k.outer.iter().all(size_ok) {
            return Err(InvalidKernel("outer extent names a missing size".into()));
        }
        for (p, ph) in k.phases.iter().enumerate() {
            let fail = |what: String| Err(InvalidKernel(format!("phase {p}: {what}")));
            if !ph.inner.iter().all(size_ok) {
                return fail("inner extent names a missing size".into());
            }
            let n_loops = k.outer.len() + ph.inner.len();
            for (i, (inst, dt)) in ph.body.iter().enumerate() {
                let dt = *dt;
                let opnd = |v: &V| {
                    let j = v.0 as usize;
                    if j < i {
                        Ok(ph.body[j].1)
                    } else {
                        Err(InvalidKernel(format!(
                            "phase {p}: v{i} uses {v}, not defined before it"
                        )))
                    }
                };
                let ok = match inst {
                    Inst::Const(c) => c.dtype() == dt,
                    Inst::LoopIdx(l) => *l < n_loops && dt == DType::I64,
                    Inst::Size(s) => *s < k.n_sizes && dt == DType::I64,
                    Inst::Param(s) => *s < k.n_sizes,
                    Inst::Load { buf, offset } => {
                        opnd(offset)? == DType::I64
                            && k.bufs.get(*buf).is_some_and(|b| b.dtype == dt)
                    }
                    Inst::Unary(op, a) => opnd(a)? == dt && op.accepts(dt),
                    Inst::Binary(op, a, b) => {
                        let da = opnd(a)?;
                        da == opnd(b)? && op.accepts(da) && op.output_dtype(da) == dt
                    }
                    Inst::Where(c, a, b) => {
                        opnd(c)? == DType::Bool && opnd(a)? == dt && opnd(b)? == dt
                    }
                    Inst::Cast(to, a) => {
                        opnd(a)?;
                        *to == dt
                    }
                    Inst::Random {
                        counter,
                        seed_param,
                        ..
                    } => opnd(counter)? == DType::I64 && *seed_param < k.n_sizes,
                    Inst::PhaseResult(q) => {
                        *q < p
                            && matches!(&k.phases[*q].kind,
                                PhaseKind::Reduce { value, .. }
                                    if k.phases[*q].body[value.0 as usize].1 == dt)
                    }
                };
                if !ok {
                    return fail(format!(
                        "v{i}: {dt} = {inst:?} breaks the kernel IR's rules"
                    ));
                }
            }
            let defined = |v: &V| (v.0 as usize) < ph.body.len();
            let dt_of = |v: &V| ph.body[v.0 as usize].1;
            if let PhaseKind::Reduce { op, value, .. } = &ph.kind
                && (!defined(value) || !op.accepts(dt_of(value)))
            {
                return fail(format!("reduce {} {value} is invalid", op.name()));
            }
            for st in ph.kind.stores() {
                let ok = defined(&st.offset)
                    && defined(&st.value)
                    && st
                        .mask
                        .is_none_or(|m| defined(&m) && dt_of(&m) == DType::Bool)
                    && dt_of(&st.offset) == DType::I64
                    && k.bufs
                        .get(st.buf)
                        .is_some_and(|b| b.output && b.dtype == dt_of(&st.value))
                    && st.combine.is_none_or(|op| op.accepts(dt_of(&st.value)));
                if !ok {
                    return fail(format!("store {st:?} is invalid"));
                }
            }
        }
        Ok(())
    }

    /// The extent of the loop that `start..end` splits: outer loop 0, or (without outer loops)
    /// inner loop 0 of the single phase; `None` when the kernel has no loop to split.
    pub fn split_extent(&self) -> Option<Extent> {
        if let Some(e) = self.outer.first() {
            return Some(*e);
        }
        match self.phases.as_slice() {
            [p] if matches!(p.kind, PhaseKind::Store(_)) => p.inner.first().copied(),
            _ => None,
        }
    }

    /// A canonical text form: stable across processes and Rust versions, used as the kernel's
    /// identity (cache key material) and for `METAJIT_DEBUG`.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = self.write_text(&mut s);
        s
    }

    fn write_text(&self, f: &mut String) -> fmt::Result {
        write!(f, "kernel(")?;
        for (k, b) in self.bufs.iter().enumerate() {
            if k > 0 {
                f.push_str(", ");
            }
            write!(
                f,
                "{}b{k}: {}[",
                if b.output { "out " } else { "" },
                b.dtype
            )?;
            for (j, e) in b.dims.iter().enumerate() {
                if j > 0 {
                    f.push_str(", ");
                }
                write!(f, "{e}")?;
            }
            f.push(']');
        }
        writeln!(f, ") sizes={} parallel={}", self.n_sizes, self.parallel)?;
        f.push_str("  outer [");
        for (k, e) in self.outer.iter().enumerate() {
            if k > 0 {
                f.push_str(", ");
            }
            write!(f, "{e}")?;
        }
        f.push_str("]\n");
        for (p, ph) in self.phases.iter().enumerate() {
            write!(f, "  phase {p} inner [")?;
            for (k, e) in ph.inner.iter().enumerate() {
                if k > 0 {
                    f.push_str(", ");
                }
                write!(f, "{e}")?;
            }
            f.push_str("]\n");
            for (i, (inst, dt)) in ph.body.iter().enumerate() {
                write!(f, "    v{i}: {dt} = ")?;
                match inst {
                    Inst::Const(c) => write!(f, "const {c}")?,
                    Inst::LoopIdx(k) => write!(f, "loop {k}")?,
                    Inst::Size(s) => write!(f, "size s{s}")?,
                    Inst::Param(p) => write!(f, "param s{p}")?,
                    Inst::Load { buf, offset } => write!(f, "load b{buf}[{offset}]")?,
                    Inst::Unary(op, a) => write!(f, "{} {a}", op.name())?,
                    Inst::Binary(op, a, b) => write!(f, "{} {a}, {b}", op.name())?,
                    Inst::Where(c, a, b) => write!(f, "where {c}, {a}, {b}")?,
                    Inst::Cast(d, a) => write!(f, "cast {a} to {d}")?,
                    Inst::Random {
                        seed_param,
                        dist,
                        counter,
                    } => write!(f, "random {} seed=s{seed_param} at {counter}", dist.name())?,
                    Inst::PhaseResult(p) => write!(f, "phase_result {p}")?,
                }
                f.push('\n');
            }
            if let PhaseKind::Reduce { op, value, .. } = &ph.kind {
                writeln!(f, "    reduce {} {value}", op.name())?;
            }
            for st in ph.kind.stores() {
                write!(f, "    store b{}[{}] = {}", st.buf, st.offset, st.value)?;
                if let Some(m) = st.mask {
                    write!(f, " if {m}")?;
                }
                if let Some(op) = st.combine {
                    write!(f, " combine {}", op.name())?;
                }
                f.push('\n');
            }
        }
        Ok(())
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Runs a kernel on host buffers: the executable definition of the kernel IR, used to test
/// fusion independently of code generation. `sizes` are the runtime size parameters; loop 0 runs
/// over `range` (the full extent for a whole call).
pub fn interpret(
    k: &Kernel,
    bufs: &mut [crate::buffer::HostData],
    sizes: &[i64],
    range: std::ops::Range<i64>,
) {
    use crate::interp::{eval_binary, eval_reduce_combine, eval_unary};
    let extent = |e: &Extent| match e {
        Extent::Size(s) => sizes[*s],
        Extent::Const(c) => *c as i64,
    };
    let outer: Vec<i64> = k.outer.iter().map(extent).collect();
    let split_outer = !k.outer.is_empty();
    // Without outer loops, `range` splits inner loop 0 of a single Store phase, or nothing.
    let split_inner = !split_outer && k.split_extent().is_some();
    let n_outer: i64 = if split_outer {
        outer[1..].iter().product::<i64>() * (range.end - range.start).max(0)
    } else {
        1
    };
    for lin in 0..n_outer {
        // Outer coordinates: loop 0 offset by range.start.
        let mut oidx = vec![0i64; outer.len()];
        let mut rem = lin;
        for d in (0..outer.len()).rev() {
            let ext = if d == 0 {
                range.end - range.start
            } else {
                outer[d]
            };
            oidx[d] = rem % ext;
            rem /= ext;
        }
        if split_outer {
            oidx[0] += range.start;
        }
        let mut results: Vec<Scalar> = Vec::new();
        for ph in &k.phases {
            let inner: Vec<i64> = ph.inner.iter().map(extent).collect();
            let (lo, hi) = if split_inner && !inner.is_empty() {
                (range.start, range.end)
            } else {
                (0, inner.first().copied().unwrap_or(1))
            };
            let rest: i64 = inner.iter().skip(1).product();
            let count = if inner.is_empty() {
                1
            } else {
                (hi - lo).max(0) * rest
            };
            let reduce_dtype = match &ph.kind {
                PhaseKind::Reduce { value, .. } => Some(ph.body[value.0 as usize].1),
                PhaseKind::Store(_) => None,
            };
            let mut acc = match (&ph.kind, reduce_dtype) {
                (PhaseKind::Reduce { op, .. }, Some(dt)) => Some(match op {
                    ReduceOp::Sum | ReduceOp::Prod if dt.is_float() => op.identity(DType::F64),
                    _ => op.identity(dt),
                }),
                _ => None,
            };
            for j in 0..count {
                let mut iidx = vec![0i64; inner.len()];
                let mut rem = j;
                for d in (0..inner.len()).rev() {
                    let ext = if d == 0 { hi - lo } else { inner[d] };
                    iidx[d] = rem % ext;
                    rem /= ext;
                }
                if let Some(first) = iidx.first_mut() {
                    *first += lo;
                }
                let mut vals: Vec<Scalar> = Vec::with_capacity(ph.body.len());
                for (inst, dt) in &ph.body {
                    let v = |x: &V| vals[x.0 as usize];
                    let r = match inst {
                        Inst::Const(c) => *c,
                        Inst::LoopIdx(l) => {
                            if *l < oidx.len() {
                                Scalar::I64(oidx[*l])
                            } else {
                                Scalar::I64(iidx[*l - oidx.len()])
                            }
                        }
                        Inst::Size(s) => Scalar::I64(sizes[*s]),
                        Inst::Param(p) => param_value(sizes[*p], *dt),
                        Inst::Load { buf, offset } => bufs[*buf].get(v(offset).to_i64() as usize),
                        Inst::Unary(op, a) => eval_unary(*op, v(a)),
                        Inst::Binary(op, a, b) => eval_binary(*op, v(a), v(b)),
                        Inst::Where(c, a, b) => {
                            if v(c).is_truthy() {
                                v(a)
                            } else {
                                v(b)
                            }
                        }
                        Inst::Cast(d, a) => v(a).cast(*d),
                        Inst::Random {
                            seed_param,
                            dist,
                            counter,
                        } => crate::philox::random_scalar(
                            sizes[*seed_param] as u64,
                            v(counter).to_i64() as u64,
                            *dist,
                            *dt,
                        ),
                        Inst::PhaseResult(p) => results[*p],
                    };
                    vals.push(r);
                }
                if let PhaseKind::Reduce { op, value, .. } = &ph.kind {
                    let x = vals[value.0 as usize];
                    acc = acc.map(|a| match (op, a) {
                        // Float sums and products accumulate in f64 and round once at the end,
                        // as the reference interpreter does.
                        (ReduceOp::Sum | ReduceOp::Prod, Scalar::F64(_))
                            if x.dtype() != DType::F64 =>
                        {
                            eval_reduce_combine(*op, a, x.cast(DType::F64))
                        }
                        _ => eval_reduce_combine(*op, a, x),
                    });
                }
                for st in ph.kind.stores() {
                    if let Some(m) = st.mask
                        && !vals[m.0 as usize].is_truthy()
                    {
                        continue;
                    }
                    let off = vals[st.offset.0 as usize].to_i64() as usize;
                    let mut val = vals[st.value.0 as usize];
                    if let Some(op) = st.combine {
                        val = eval_reduce_combine(op, bufs[st.buf].get(off), val);
                    }
                    bufs[st.buf].set(off, val);
                }
            }
            results.push(match (acc, reduce_dtype) {
                (Some(a), Some(dt)) => a.cast(dt),
                _ => Scalar::Bool(false),
            });
        }
    }
}

/// The bits a runtime parameter of `dtype` carries for `value` (f16/bf16: as f32).
pub fn param_bits(value: Scalar) -> i64 {
    match value {
        Scalar::F16(v) => v.to_f32().to_bits() as i64,
        Scalar::BF16(v) => v.to_f32().to_bits() as i64,
        v => v.to_bits() as i64,
    }
}

/// The value of a runtime parameter of `dtype` from its bits (inverse of [`param_bits`]).
pub fn param_value(bits: i64, dtype: DType) -> Scalar {
    match dtype {
        DType::F16 | DType::BF16 => Scalar::F32(f32::from_bits(bits as u32)).cast(dtype),
        d => Scalar::from_bits(bits as u64, d),
    }
}
