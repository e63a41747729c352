//! The reference interpreter: the executable definition of every meta-op.
//!
//! Plain loops over [`HostData`], one node at a time, in graph order. Every backend is tested
//! against it; where a backend and this file disagree, this file is right (or the spec changes
//! here first). The scalar functions [`eval_unary`], [`eval_binary`] and
//! [`eval_reduce_combine`] are public so constant folding computes exactly what `run` does.
//!
//! # Semantics it fixes
//!
//! Element-wise arithmetic:
//! - f32 ops are computed in f32, f64 ops in f64; f16 and bf16 ops are computed in f32 and
//!   rounded back (to nearest, ties to even) once per op.
//! - `recip(x) = 1 / x`; `sigmoid(x) = 1 / (1 + exp(-x))` in the dtype's precision; `erf` is
//!   `libm::erff` / `libm::erf`; `log` and `sqrt` of negatives are NaN (IEEE).
//! - `round` is half to even (`round_ties_even`: 0.5 → 0, 1.5 → 2, 2.5 → 2, -0.5 → -0).
//!   `floor`, `ceil`, `round` are the identity on integers.
//! - Float `max(a, b) = if a > b || a.is_nan() { a } else { b }` and
//!   `min(a, b) = if a < b || a.is_nan() { a } else { b }`: NaN in either input gives NaN (as
//!   PyTorch), exact ties (`-0.0` vs `+0.0`) return `b`. It is a compare and a select, what the
//!   code generators emit.
//! - Float `div` is true division. Float `mod` is `torch.remainder`: `r = fmod(a, b)`; if
//!   `r != 0` and `r` and `b` differ in sign, `r += b`; `b == 0` gives NaN. The sign of a zero
//!   result is fmod's (`-4 mod 2 = -0.0`).
//! - Float comparisons involving NaN are false, except `ne`, which is true.
//! - Integers (u8, i32, i64): `add`, `sub`, `mul`, `neg`, `abs` wrap (`abs(MIN) == MIN`,
//!   `neg` of a u8 is `256 - x`, `abs` of a u8 is the identity). `div` and `mod` are floor
//!   division and floor modulo (the remainder takes the divisor's sign; u8 is unsigned), wrap at
//!   `MIN / -1` (`MIN / -1 == MIN`, `MIN mod -1 == 0`) and give 0 when dividing by zero.
//!   `pow` with exponent ≥ 0 is wrapping repeated squaring (`x^0 == 1`, also for `0^0`); with a
//!   negative exponent: base 1 → 1, base -1 → ±1 by the exponent's parity, any other base → 0.
//!   `and`, `or`, `xor`, `not` are bitwise.
//! - Bool: `add` = or, `mul` = and, `max` = or, `min` = and; comparisons order false < true;
//!   `and`, `or`, `xor`, `not` are logical.
//! - `where(c, a, b)` picks `a` where `c` is true. `cast` is [`Scalar::cast`]: float → int
//!   truncates toward zero, saturates, NaN → 0; int → narrower int wraps; `x != 0` for bool
//!   (NaN → true); float → narrower float rounds to nearest even.
//!
//! Sources:
//! - `Const(v)` fills the node's shape. `Index{axis}` is the coordinate along `axis`, cast to
//!   the node's dtype with [`Scalar::cast`] (so a u8 index wraps past 255).
//! - `Random{seed, dist}`: element `k` (row-major) is [`crate::philox::random_scalar`]`(seed,
//!   k, dist, dtype)` (Philox4x32-10; see [`crate::philox`] for the exact bit recipes).
//!
//! Reindexing:
//! - `BroadcastTo{axes}`: output index `i` without the `axes` reads the input.
//! - `Reindex(map)`: for each output multi-index `i`, the expressions are evaluated with
//!   `IdxEnv { idx: i, iter_dims: output shape, target_dims: input shape, extra }`, where extra
//!   `e` at multi-index `ix` reads input `1 + e` (an integer tensor) and gives 0 when `ix` is
//!   out of range. If any coordinate falls outside `[0, extent)` or any condition is nonzero,
//!   the element is `map.overflow`; otherwise it is the input element at the coordinates.
//!
//! Reductions:
//! - `Reduce{op, axes, keepdims}` starts every output from `op.identity(dtype)` and combines
//!   the input elements in row-major order. `sum` and `prod` of floats accumulate in f64 and
//!   round to the dtype once at the end (f64 simply accumulates in f64); integer `sum`/`prod`
//!   wrap; `max`/`min` propagate NaN (once NaN, it stays NaN); `all`/`any` are logical.
//!   Empty reductions give the identity: `sum` 0, `prod` 1, `all` true, `any` false (the
//!   verifier rejects `max`/`min` over an empty axis). Because the accumulator starts at the
//!   identity, a float `sum` of only `-0.0` is `+0.0`, as in PyTorch and XLA.
//! - `Reduce` with `axes = []` is the identity copy (bit-exact, `-0.0` stays `-0.0`).
//! - `ReindexReduce{op, map}`: the output starts filled with `op.identity(dtype)` (so outputs
//!   no input reaches hold 0, 1, true, false, or the lowest/highest value for `max`/`min`).
//!   For each input multi-index `i`, in row-major order, the expressions are evaluated with
//!   `iter_dims` = input shape and `target_dims` = output shape; the element is skipped when a
//!   coordinate is out of range or a condition is nonzero, otherwise combined into the output
//!   at the coordinates. Float `sum` and `prod` accumulate in f64 per output and round once
//!   at the end, as in `Reduce`.
//!
//! Layout: `Reshape` and `Contiguous` return the same row-major elements.
//!
//! # Running a graph
//!
//! [`run`] verifies the graph, checks every `Input` node against its buffer, evaluates the
//! nodes that an output depends on in graph order (others are skipped), drops each value after
//! its last use, and returns the outputs in order (a node listed twice is returned twice).

use std::borrow::Cow;

use half::{bf16, f16};

use crate::buffer::HostData;
use crate::dtype::{DType, Scalar};
use crate::expr::{IdxEnv, floor_div, floor_mod};
use crate::graph::{Graph, Node};
use crate::op::{BinaryOp, IndexMap, Op, ReduceOp, UnaryOp};
use crate::shape::Shape;

/// Why the interpreter refused a graph.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    /// The graph does not verify.
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    /// An input buffer does not match its `Input` node.
    #[error("input #{slot}: expected {expected}, got {got}")]
    Input {
        /// The slot.
        slot: usize,
        /// What the graph declares.
        expected: String,
        /// What was passed.
        got: String,
    },
    /// Fewer buffers were passed than the graph has input slots.
    #[error("graph reads {needed} input slot(s), but {got} buffer(s) were passed")]
    MissingInputs {
        /// [`Graph::num_inputs`].
        needed: usize,
        /// The number of buffers passed.
        got: usize,
    },
}

/// Runs `g` on `inputs` (one buffer per input slot) and returns one buffer per output.
///
/// Buffers beyond [`Graph::num_inputs`] are ignored (a pass may have removed the last `Input`
/// node).
pub fn run(g: &Graph, inputs: &[&HostData]) -> Result<Vec<HostData>, InterpError> {
    crate::verify::verify(g)?;
    let needed = g.num_inputs();
    if inputs.len() < needed {
        return Err(InterpError::MissingInputs {
            needed,
            got: inputs.len(),
        });
    }
    for node in &g.nodes {
        if let Op::Input { slot } = node.op {
            check_input(slot, node, inputs[slot])?;
        }
    }

    // Liveness: a node is evaluated only if an output depends on it.
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for o in &g.outputs {
        live[o.index()] = true;
    }
    for k in (0..n).rev() {
        if live[k] {
            for i in &g.nodes[k].inputs {
                live[i.index()] = true;
            }
        }
    }
    // Remaining uses of each value by live nodes and by the output list.
    let mut uses = vec![0usize; n];
    for (k, node) in g.nodes.iter().enumerate() {
        if live[k] {
            for i in &node.inputs {
                uses[i.index()] += 1;
            }
        }
    }
    for o in &g.outputs {
        uses[o.index()] += 1;
    }

    let mut vals: Vec<Option<Cow<'_, HostData>>> = (0..n).map(|_| None).collect();
    for (k, node) in g.nodes.iter().enumerate() {
        if !live[k] {
            continue;
        }
        let value: Cow<'_, HostData> = match &node.op {
            Op::Input { slot } => Cow::Borrowed(inputs[*slot]),
            // Layout ops pass the elements on; move them when this is their last use.
            Op::Reshape | Op::Contiguous => {
                let i = node.inputs[0].index();
                if uses[i] == 1 {
                    vals[i].take().expect(KEPT)
                } else {
                    vals[i].clone().expect(KEPT)
                }
            }
            _ => {
                let ins: Vec<&HostData> = node
                    .inputs
                    .iter()
                    .map(|i| vals[i.index()].as_deref().expect(KEPT))
                    .collect();
                Cow::Owned(eval_node(g, node, &ins))
            }
        };
        for i in &node.inputs {
            let i = i.index();
            uses[i] -= 1;
            if uses[i] == 0 {
                vals[i] = None;
            }
        }
        vals[k] = Some(value);
    }

    let mut out = Vec::with_capacity(g.outputs.len());
    for o in &g.outputs {
        let o = o.index();
        uses[o] -= 1;
        let v = if uses[o] == 0 {
            vals[o].take().expect(KEPT).into_owned()
        } else {
            vals[o].as_deref().expect(KEPT).clone()
        };
        out.push(v);
    }
    Ok(out)
}

/// The invariant behind every `expect` in [`run`].
const KEPT: &str = "interp: a live node's value is kept until its last use";

fn check_input(slot: usize, node: &Node, buf: &HostData) -> Result<(), InterpError> {
    let numel = node.shape.numel();
    if buf.dtype() != node.dtype || buf.len() != numel {
        return Err(InterpError::Input {
            slot,
            expected: format!("{}{} ({numel} elements)", node.dtype, node.shape),
            got: format!("{} buffer of {} elements", buf.dtype(), buf.len()),
        });
    }
    Ok(())
}

/// Evaluates one non-`Input` node on its input values.
fn eval_node(g: &Graph, node: &Node, ins: &[&HostData]) -> HostData {
    let dtype = node.dtype;
    let numel = node.shape.numel();
    let in_shape = |k: usize| &g.node(node.inputs[k]).shape;
    match &node.op {
        Op::Input { .. } => unreachable!("run binds Input nodes to their buffers"),
        Op::Const(v) => HostData::filled(*v, numel),
        Op::Index { axis } => {
            let dims = node.shape.dims();
            let stride: usize = dims[axis + 1..].iter().product();
            let extent = dims[*axis];
            HostData::from_scalars(
                dtype,
                (0..numel).map(|lin| Scalar::I64(((lin / stride) % extent) as i64).cast(dtype)),
            )
        }
        Op::Random { seed, dist } => HostData::from_scalars(
            dtype,
            (0..numel).map(|k| crate::philox::random_scalar(*seed, k as u64, *dist, dtype)),
        ),
        Op::Unary(op) => {
            let x = ins[0];
            HostData::from_scalars(dtype, (0..numel).map(|i| eval_unary(*op, x.get(i))))
        }
        Op::Binary(op) => {
            let (a, b) = (ins[0], ins[1]);
            HostData::from_scalars(
                dtype,
                (0..numel).map(|i| eval_binary(*op, a.get(i), b.get(i))),
            )
        }
        Op::Where => {
            let (c, a, b) = (ins[0], ins[1], ins[2]);
            HostData::from_scalars(
                dtype,
                (0..numel).map(|i| {
                    if c.get(i).is_truthy() {
                        a.get(i)
                    } else {
                        b.get(i)
                    }
                }),
            )
        }
        Op::Cast(d) => {
            let x = ins[0];
            HostData::from_scalars(*d, (0..numel).map(|i| x.get(i).cast(*d)))
        }
        Op::BroadcastTo { axes } => broadcast(ins[0], in_shape(0), &node.shape, axes),
        Op::Reindex(map) => {
            let extras = extras(g, node, ins);
            reindex(ins[0], in_shape(0), &node.shape, map, &extras)
        }
        Op::Reduce { op, axes, .. } => reduce(*op, ins[0], in_shape(0), axes, numel),
        Op::ReindexReduce { op, map } => {
            let extras = extras(g, node, ins);
            reindex_reduce(*op, ins[0], in_shape(0), &node.shape, map, &extras)
        }
        Op::Reshape | Op::Contiguous => ins[0].clone(),
    }
}

/// Calls `f(lin, idx)` for every multi-index `idx` of `dims`, in row-major order (`lin` is the
/// row-major position).
fn for_each_index(dims: &[usize], mut f: impl FnMut(usize, &[usize])) {
    let n: usize = dims.iter().product();
    let mut idx = vec![0usize; dims.len()];
    for lin in 0..n {
        f(lin, &idx);
        for a in (0..dims.len()).rev() {
            idx[a] += 1;
            if idx[a] < dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

fn broadcast(x: &HostData, in_shape: &Shape, out_shape: &Shape, axes: &[usize]) -> HostData {
    // The input stride of each output axis (0 for the new axes).
    let in_strides = in_shape.strides();
    let mut strides = vec![0usize; out_shape.rank()];
    let mut next = 0;
    for (a, s) in strides.iter_mut().enumerate() {
        if !axes.contains(&a) {
            *s = in_strides[next];
            next += 1;
        }
    }
    let mut out = HostData::zeros(x.dtype(), out_shape.numel());
    for_each_index(out_shape.dims(), |lin, idx| {
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.set(lin, x.get(off));
    });
    out
}

/// The extra tensors of a reindex op (inputs 1..), with their shapes.
fn extras<'a>(g: &'a Graph, node: &Node, ins: &[&'a HostData]) -> Vec<(&'a HostData, &'a Shape)> {
    node.inputs[1..]
        .iter()
        .zip(&ins[1..])
        .map(|(id, data)| (*data, &g.node(*id).shape))
        .collect()
}

/// Reads extra `e` at `ix` as an integer; 0 when `ix` is out of range (or names no extra).
fn read_extra(extras: &[(&HostData, &Shape)], e: usize, ix: &[i64]) -> i64 {
    let Some((data, shape)) = extras.get(e) else {
        return 0;
    };
    if ix.len() != shape.rank() {
        return 0;
    }
    let mut off = 0usize;
    for (&i, &d) in ix.iter().zip(shape.dims()) {
        if i < 0 || i as u64 >= d as u64 {
            return 0;
        }
        off = off * d + i as usize;
    }
    data.get(off).to_i64()
}

/// The row-major offset in the target that `map` sends the current point to, or `None` when a
/// coordinate is out of range or a condition holds.
fn target_offset(map: &IndexMap, env: &IdxEnv<'_>) -> Option<usize> {
    if map.conds.iter().any(|c| c.eval(env) != 0) {
        return None;
    }
    let mut off = 0usize;
    for (e, &d) in map.exprs.iter().zip(env.target_dims) {
        let c = e.eval(env);
        if c < 0 || c as u64 >= d as u64 {
            return None;
        }
        off = off * d + c as usize;
    }
    Some(off)
}

fn reindex(
    x: &HostData,
    in_shape: &Shape,
    out_shape: &Shape,
    map: &IndexMap,
    extras: &[(&HostData, &Shape)],
) -> HostData {
    let extra = |e: usize, ix: &[i64]| read_extra(extras, e, ix);
    let mut out = HostData::zeros(x.dtype(), out_shape.numel());
    for_each_index(out_shape.dims(), |lin, idx| {
        let env = IdxEnv {
            idx,
            iter_dims: out_shape.dims(),
            target_dims: in_shape.dims(),
            extra: &extra,
        };
        let v = match target_offset(map, &env) {
            Some(off) => x.get(off),
            None => map.overflow,
        };
        out.set(lin, v);
    });
    out
}

/// True for the reductions that accumulate in f64: float sum and prod.
fn accumulates_in_f64(op: ReduceOp, dtype: DType) -> bool {
    dtype.is_float() && matches!(op, ReduceOp::Sum | ReduceOp::Prod)
}

/// Accumulates `x` into `acc` per [`accumulates_in_f64`] or with [`eval_reduce_combine`].
enum Acc {
    /// Float sum/prod: f64 accumulators, rounded to the dtype at the end.
    F64(ReduceOp, Vec<f64>, DType),
    /// Everything else: accumulators of the dtype itself.
    Exact(ReduceOp, HostData),
}

impl Acc {
    fn new(op: ReduceOp, dtype: DType, n: usize) -> Acc {
        if accumulates_in_f64(op, dtype) {
            Acc::F64(op, vec![op.identity(DType::F64).to_f64(); n], dtype)
        } else {
            Acc::Exact(op, HostData::filled(op.identity(dtype), n))
        }
    }

    fn combine(&mut self, o: usize, x: Scalar) {
        match self {
            Acc::F64(ReduceOp::Prod, acc, _) => acc[o] *= x.to_f64(),
            Acc::F64(_, acc, _) => acc[o] += x.to_f64(),
            Acc::Exact(op, acc) => acc.set(o, eval_reduce_combine(*op, acc.get(o), x)),
        }
    }

    fn finish(self) -> HostData {
        match self {
            Acc::F64(_, acc, dtype) => {
                HostData::from_scalars(dtype, acc.into_iter().map(|v| Scalar::F64(v).cast(dtype)))
            }
            Acc::Exact(_, acc) => acc,
        }
    }
}

fn reduce(
    op: ReduceOp,
    x: &HostData,
    in_shape: &Shape,
    axes: &[usize],
    out_numel: usize,
) -> HostData {
    if axes.is_empty() {
        return x.clone();
    }
    // The output stride of each input axis (0 for the reduced axes); with or without keepdims
    // the output's row-major layout is the same.
    let dims = in_shape.dims();
    let mut strides = vec![0usize; dims.len()];
    let mut s = 1;
    for a in (0..dims.len()).rev() {
        if !axes.contains(&a) {
            strides[a] = s;
            s *= dims[a];
        }
    }
    let mut acc = Acc::new(op, x.dtype(), out_numel);
    for_each_index(dims, |lin, idx| {
        let o: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        acc.combine(o, x.get(lin));
    });
    acc.finish()
}

fn reindex_reduce(
    op: ReduceOp,
    x: &HostData,
    in_shape: &Shape,
    out_shape: &Shape,
    map: &IndexMap,
    extras: &[(&HostData, &Shape)],
) -> HostData {
    let extra = |e: usize, ix: &[i64]| read_extra(extras, e, ix);
    let mut acc = Acc::new(op, x.dtype(), out_shape.numel());
    for_each_index(in_shape.dims(), |lin, idx| {
        let env = IdxEnv {
            idx,
            iter_dims: in_shape.dims(),
            target_dims: out_shape.dims(),
            extra: &extra,
        };
        if let Some(o) = target_offset(map, &env) {
            acc.combine(o, x.get(lin));
        }
    });
    acc.finish()
}

// ---------------------------------------------------------------------------------------------
// Scalar semantics.

#[track_caller]
fn unsupported(what: &str, op: &str, dtype: DType) -> ! {
    panic!("{what}: {op} does not accept {dtype} (the verifier rejects this)")
}

/// Applies a unary op to one value (the module doc lists the semantics).
///
/// # Panics
///
/// When `op` does not accept `x`'s dtype ([`UnaryOp::accepts`]), which the verifier rejects.
pub fn eval_unary(op: UnaryOp, x: Scalar) -> Scalar {
    match x {
        Scalar::F32(v) => Scalar::F32(unary_f32(op, v)),
        Scalar::F64(v) => Scalar::F64(unary_f64(op, v)),
        Scalar::F16(v) => Scalar::F16(f16::from_f32(unary_f32(op, v.to_f32()))),
        Scalar::BF16(v) => Scalar::BF16(bf16::from_f32(unary_f32(op, v.to_f32()))),
        Scalar::I64(v) => Scalar::I64(unary_int(op, v, DType::I64)),
        // i32: wrapping in i64 and truncating is wrapping in i32 (neg, abs, not commute with
        // the truncation mod 2^32).
        Scalar::I32(v) => Scalar::I32(unary_int(op, v as i64, DType::I32) as i32),
        Scalar::U8(v) => Scalar::U8(match op {
            UnaryOp::Neg => v.wrapping_neg(),
            UnaryOp::Abs | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => v,
            UnaryOp::Not => !v,
            _ => unsupported("eval_unary", op.name(), DType::U8),
        }),
        Scalar::Bool(v) => match op {
            UnaryOp::Not => Scalar::Bool(!v),
            _ => unsupported("eval_unary", op.name(), DType::Bool),
        },
    }
}

/// Signed integer unary ops on an i64 holding a value of `dtype` (i32 or i64).
fn unary_int(op: UnaryOp, v: i64, dtype: DType) -> i64 {
    match op {
        UnaryOp::Neg => v.wrapping_neg(),
        UnaryOp::Abs => v.wrapping_abs(),
        UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => v,
        UnaryOp::Not => !v,
        _ => unsupported("eval_unary", op.name(), dtype),
    }
}

macro_rules! float_unary {
    ($name:ident, $t:ty, $erf:path, $dtype:expr) => {
        fn $name(op: UnaryOp, x: $t) -> $t {
            match op {
                UnaryOp::Neg => -x,
                UnaryOp::Abs => x.abs(),
                UnaryOp::Recip => 1.0 / x,
                UnaryOp::Sqrt => x.sqrt(),
                UnaryOp::Exp => x.exp(),
                UnaryOp::Log => x.ln(),
                UnaryOp::Sin => x.sin(),
                UnaryOp::Cos => x.cos(),
                UnaryOp::Tanh => x.tanh(),
                UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                UnaryOp::Erf => $erf(x),
                UnaryOp::Floor => x.floor(),
                UnaryOp::Ceil => x.ceil(),
                UnaryOp::Round => x.round_ties_even(),
                UnaryOp::Not => unsupported("eval_unary", op.name(), $dtype),
            }
        }
    };
}
float_unary!(unary_f32, f32, libm::erff, DType::F32);
float_unary!(unary_f64, f64, libm::erf, DType::F64);

/// The result of a binary op before it is wrapped: a value of the operand type or a bool.
enum Out<T> {
    Val(T),
    Bool(bool),
}

impl<T> Out<T> {
    fn wrap(self, f: impl FnOnce(T) -> Scalar) -> Scalar {
        match self {
            Out::Val(v) => f(v),
            Out::Bool(b) => Scalar::Bool(b),
        }
    }
}

/// Applies a binary op to two values of one dtype (the module doc lists the semantics).
/// Comparisons return bool; every other op returns the operands' dtype.
///
/// # Panics
///
/// When the dtypes differ or `op` does not accept them ([`BinaryOp::accepts`]), which the
/// verifier rejects.
pub fn eval_binary(op: BinaryOp, a: Scalar, b: Scalar) -> Scalar {
    match (a, b) {
        (Scalar::F32(x), Scalar::F32(y)) => binary_f32(op, x, y).wrap(Scalar::F32),
        (Scalar::F64(x), Scalar::F64(y)) => binary_f64(op, x, y).wrap(Scalar::F64),
        (Scalar::F16(x), Scalar::F16(y)) => {
            binary_f32(op, x.to_f32(), y.to_f32()).wrap(|v| Scalar::F16(f16::from_f32(v)))
        }
        (Scalar::BF16(x), Scalar::BF16(y)) => {
            binary_f32(op, x.to_f32(), y.to_f32()).wrap(|v| Scalar::BF16(bf16::from_f32(v)))
        }
        (Scalar::I64(x), Scalar::I64(y)) => binary_i64(op, x, y).wrap(Scalar::I64),
        (Scalar::I32(x), Scalar::I32(y)) => binary_i32(op, x, y).wrap(Scalar::I32),
        (Scalar::U8(x), Scalar::U8(y)) => binary_u8(op, x, y).wrap(Scalar::U8),
        (Scalar::Bool(x), Scalar::Bool(y)) => binary_bool(op, x, y),
        _ => panic!(
            "eval_binary: {} of {} and {} (operands must share a dtype)",
            op.name(),
            a.dtype(),
            b.dtype()
        ),
    }
}

/// Folds one element `x` into an accumulator `acc` of the same dtype: `op.combiner()` applied
/// with [`eval_binary`] (so `max`/`min` propagate NaN). `Reduce` and `ReindexReduce` use it
/// for everything except float sum/prod, which they accumulate in f64.
///
/// # Panics
///
/// As [`eval_binary`].
pub fn eval_reduce_combine(op: ReduceOp, acc: Scalar, x: Scalar) -> Scalar {
    eval_binary(op.combiner(), acc, x)
}

macro_rules! float_binary {
    ($name:ident, $t:ty, $dtype:expr) => {
        fn $name(op: BinaryOp, a: $t, b: $t) -> Out<$t> {
            match op {
                BinaryOp::Add => Out::Val(a + b),
                BinaryOp::Sub => Out::Val(a - b),
                BinaryOp::Mul => Out::Val(a * b),
                BinaryOp::Div => Out::Val(a / b),
                BinaryOp::Pow => Out::Val(a.powf(b)),
                BinaryOp::Max => Out::Val(if a > b || a.is_nan() { a } else { b }),
                BinaryOp::Min => Out::Val(if a < b || a.is_nan() { a } else { b }),
                BinaryOp::Mod => Out::Val(if b == 0.0 {
                    <$t>::NAN
                } else {
                    let r = a % b;
                    if r != 0.0 && (r < 0.0) != (b < 0.0) {
                        r + b
                    } else {
                        r
                    }
                }),
                BinaryOp::Lt => Out::Bool(a < b),
                BinaryOp::Le => Out::Bool(a <= b),
                BinaryOp::Eq => Out::Bool(a == b),
                BinaryOp::Ne => Out::Bool(a != b),
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => {
                    unsupported("eval_binary", op.name(), $dtype)
                }
            }
        }
    };
}
float_binary!(binary_f32, f32, DType::F32);
float_binary!(binary_f64, f64, DType::F64);

/// Integer power with the module's rules, wrapping in i64. Because only multiplications are
/// involved, truncating the result to a narrower width equals wrapping in that width.
fn int_pow(base: i64, exp: i64) -> i64 {
    if exp < 0 {
        return match base {
            1 => 1,
            -1 => {
                if exp % 2 == 0 {
                    1
                } else {
                    -1
                }
            }
            _ => 0,
        };
    }
    let (mut result, mut b, mut e) = (1i64, base, exp as u64);
    while e > 0 {
        if e & 1 == 1 {
            result = result.wrapping_mul(b);
        }
        b = b.wrapping_mul(b);
        e >>= 1;
    }
    result
}

/// Integer ops shared by every width: `$div`/`$mod`/`$pow` give the width-specific rules.
macro_rules! int_binary {
    ($name:ident, $t:ty, $div:expr, $mod:expr, $pow:expr) => {
        fn $name(op: BinaryOp, a: $t, b: $t) -> Out<$t> {
            let div: fn($t, $t) -> $t = $div;
            let modulo: fn($t, $t) -> $t = $mod;
            let pow: fn($t, $t) -> $t = $pow;
            match op {
                BinaryOp::Add => Out::Val(a.wrapping_add(b)),
                BinaryOp::Sub => Out::Val(a.wrapping_sub(b)),
                BinaryOp::Mul => Out::Val(a.wrapping_mul(b)),
                BinaryOp::Div => Out::Val(div(a, b)),
                BinaryOp::Mod => Out::Val(modulo(a, b)),
                BinaryOp::Pow => Out::Val(pow(a, b)),
                BinaryOp::Max => Out::Val(a.max(b)),
                BinaryOp::Min => Out::Val(a.min(b)),
                BinaryOp::Lt => Out::Bool(a < b),
                BinaryOp::Le => Out::Bool(a <= b),
                BinaryOp::Eq => Out::Bool(a == b),
                BinaryOp::Ne => Out::Bool(a != b),
                BinaryOp::And => Out::Val(a & b),
                BinaryOp::Or => Out::Val(a | b),
                BinaryOp::Xor => Out::Val(a ^ b),
            }
        }
    };
}
int_binary!(binary_i64, i64, floor_div, floor_mod, int_pow);
// i32 through i64: the exact floor quotient/modulo of two i32s fits i64, and truncating it
// wraps `MIN / -1 = 2^31` to MIN, as wrapping i32 division does.
int_binary!(
    binary_i32,
    i32,
    |a, b| floor_div(a as i64, b as i64) as i32,
    |a, b| floor_mod(a as i64, b as i64) as i32,
    |a, b| int_pow(a as i64, b as i64) as i32
);
// u8 is unsigned: floor division is plain division.
int_binary!(
    binary_u8,
    u8,
    |a, b| a.checked_div(b).unwrap_or(0),
    |a, b| a.checked_rem(b).unwrap_or(0),
    |a, b| int_pow(a as i64, b as i64) as u8
);

fn binary_bool(op: BinaryOp, a: bool, b: bool) -> Scalar {
    Scalar::Bool(match op {
        BinaryOp::Add | BinaryOp::Max | BinaryOp::Or => a || b,
        BinaryOp::Mul | BinaryOp::Min | BinaryOp::And => a && b,
        BinaryOp::Xor => a ^ b,
        BinaryOp::Lt => !a & b,
        BinaryOp::Le => !a | b,
        BinaryOp::Eq => a == b,
        BinaryOp::Ne => a != b,
        BinaryOp::Sub | BinaryOp::Div | BinaryOp::Pow | BinaryOp::Mod => {
            unsupported("eval_binary", op.name(), DType::Bool)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::IndexExpr;

    #[test]
    fn helpers_walk_row_major() {
        let mut seen = Vec::new();
        for_each_index(&[2, 0, 3], |lin, _| seen.push(lin));
        assert!(seen.is_empty());
        for_each_index(&[], |lin, idx| seen.push(lin + idx.len()));
        assert_eq!(seen, [0]);
        let mut all = Vec::new();
        for_each_index(&[2, 3], |lin, idx| all.push((lin, idx.to_vec())));
        assert_eq!(all[4], (4, vec![1, 1]));
        assert_eq!(all.len(), 6);
        let map = IndexMap {
            exprs: vec![IndexExpr::idx(1), IndexExpr::idx(0)],
            overflow: Scalar::F32(0.0),
            conds: vec![],
        };
        let env = IdxEnv {
            idx: &[2, 1],
            iter_dims: &[3, 2],
            target_dims: &[2, 3],
            extra: &|_, _| 0,
        };
        assert_eq!(target_offset(&map, &env), Some(5));
    }

    #[test]
    fn integer_pow_rules() {
        assert_eq!(int_pow(3, 4), 81);
        assert_eq!(int_pow(0, 0), 1);
        assert_eq!(int_pow(-1, -3), -1);
        assert_eq!(int_pow(-1, -4), 1);
        assert_eq!(int_pow(1, -7), 1);
        assert_eq!(int_pow(2, -1), 0);
        assert_eq!(int_pow(2, 64), 0);
        assert_eq!(int_pow(2, 63), i64::MIN);
    }
}
