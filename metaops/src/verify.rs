//! The verifier: the invariants every graph must satisfy. It collects every error at once and
//! shows the graph with the errors inline.
//!
//! Graph invariants:
//! - every input of node `%k` has an id smaller than `k` (topological order); every output id
//!   names a node;
//! - every op has its arity (`Reindex`/`ReindexReduce`: 1 + number of extras used);
//! - `Input` nodes with the same slot agree on dtype and shape.
//!
//! Node invariants, by op (the node's dtype/shape is "out"):
//! - `Const(v)`: `v`'s dtype is out's dtype. `Index{axis}`: `axis < rank(out)`, out dtype not
//!   bool. `Random`: out dtype is f32 or f64.
//! - `Unary(op)`: input dtype accepted by `op` (see `UnaryOp::accepts`), out = input dtype and
//!   shape.
//! - `Binary(op)`: both inputs of one dtype (accepted by `op`) and one shape; out shape equal,
//!   out dtype = input dtype, or bool for comparisons.
//! - `Where`: cond is bool; a and b share a dtype (= out's); all three shapes equal out's.
//! - `Cast(d)`: out dtype is `d`; out shape = input shape.
//! - `BroadcastTo{axes}`: axes ascending, unique, `< rank(out)`; input rank = rank(out) -
//!   |axes|; the input's extents equal out's non-broadcast extents in order; dtypes equal.
//! - `Reindex(map)`: one expression per input (target) axis; expressions use `i<k>`/`n<k>` with
//!   `k < rank(out)` (the iteration space), `m<k>` with `k < rank(input)`; extra `e<j>` is
//!   input `1 + j`, has an integer dtype and is read with one index per axis; `overflow`'s
//!   dtype = out dtype = input dtype. Conditions obey the same rules. Constants and runtime
//!   parameters (`param(v)`) may take any i64 value.
//! - `Reduce{op, axes, keepdims}`: axes ascending, unique, `< rank(input)`; out shape is the
//!   input's without the axes (with 1s when keepdims); dtype accepted by `op`, out = input;
//!   `max`/`min` over an axis of extent 0 is an error (they have no identity).
//! - `ReindexReduce{op, map}`: as `Reindex`, with the iteration space = the input's shape and
//!   the target = out; dtype accepted by `op`, out = input; `map.overflow` (unused) is the
//!   zero of the dtype, so equal ops compare equal.
//! - `Reshape`: same element count and dtype. `Contiguous`: same dtype and shape.

use std::fmt;

use crate::dtype::{DType, Scalar};
use crate::expr::IndexExpr;
use crate::graph::{Graph, Node, NodeId};
use crate::op::{IndexMap, Op, ReduceOp};
use crate::shape::Shape;

/// Every error found in a graph, shown inline in its text form.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError {
    /// `(node, message)` for each error; `None` for graph-level errors.
    pub errors: Vec<(Option<NodeId>, String)>,
    /// The graph's text with each error under its node.
    pub annotated: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "graph failed verification with {} error(s):",
            self.errors.len()
        )?;
        f.write_str(&self.annotated)
    }
}

impl std::error::Error for VerifyError {}

/// Checks a whole graph; returns every error found.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    let mut errors = Vec::new();
    let mut slots: Vec<Option<(DType, Shape)>> = Vec::new();
    let mut prefix = Graph::new();
    for (k, node) in g.nodes.iter().enumerate() {
        let id = NodeId(k as u32);
        if let Err(msg) = check_node(&prefix, node) {
            errors.push((Some(id), msg));
        }
        if let Op::Input { slot } = node.op {
            if slots.len() <= slot {
                slots.resize(slot + 1, None);
            }
            match &slots[slot] {
                Some((d, s)) if (*d, s) != (node.dtype, &node.shape) => errors.push((
                    Some(id),
                    format!("input #{slot} is also declared as {d}{s}"),
                )),
                Some(_) => {}
                None => slots[slot] = Some((node.dtype, node.shape.clone())),
            }
        }
        prefix.push_unchecked(node.clone());
    }
    for o in &g.outputs {
        if o.index() >= g.nodes.len() {
            errors.push((None, format!("output {o} names no node")));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let annotated = crate::print::print_annotated(g, &errors);
    Err(VerifyError { errors, annotated })
}

/// Checks one node against the nodes already in `g` (its inputs must be there).
pub fn check_node(g: &Graph, node: &Node) -> Result<(), String> {
    for i in &node.inputs {
        if i.index() >= g.nodes.len() {
            return Err(format!(
                "{}: input {i} is not defined before this node",
                node.op.name()
            ));
        }
    }
    let ins: Vec<&Node> = node.inputs.iter().map(|i| g.node(*i)).collect();
    check_op(node, &ins).map_err(|m| format!("{}: {m}", node.op.name()))
}

fn arity(node: &Node, n: usize) -> Result<(), String> {
    if node.inputs.len() != n {
        return Err(format!("expects {n} input(s), has {}", node.inputs.len()));
    }
    Ok(())
}

fn same<T: PartialEq + fmt::Display>(what: &str, a: T, b: T) -> Result<(), String> {
    if a != b {
        return Err(format!("{what} mismatch: {a} vs {b}"));
    }
    Ok(())
}

fn axes_ok(axes: &[usize], rank: usize) -> Result<(), String> {
    for w in axes.windows(2) {
        if w[0] >= w[1] {
            return Err(format!("axes {axes:?} must be ascending and unique"));
        }
    }
    if let Some(a) = axes.iter().find(|&&a| a >= rank) {
        return Err(format!("axis {a} out of range for rank {rank}"));
    }
    Ok(())
}

fn check_op(node: &Node, ins: &[&Node]) -> Result<(), String> {
    let (dt, sh) = (node.dtype, &node.shape);
    match &node.op {
        Op::Input { .. } => arity(node, 0),
        Op::Const(v) => {
            arity(node, 0)?;
            same("const dtype", v.dtype(), dt)
        }
        Op::Index { axis } => {
            arity(node, 0)?;
            if *axis >= sh.rank() {
                return Err(format!("axis {axis} out of range for shape {sh}"));
            }
            if dt.is_bool() {
                return Err("dtype bool cannot hold an index".into());
            }
            Ok(())
        }
        Op::Random { .. } => {
            arity(node, 0)?;
            if !matches!(dt, DType::F32 | DType::F64) {
                return Err(format!("dtype {dt} is not f32 or f64"));
            }
            Ok(())
        }
        Op::Unary(op) => {
            arity(node, 1)?;
            let x = ins[0];
            if !op.accepts(x.dtype) {
                return Err(format!("dtype {} not supported", x.dtype));
            }
            same("dtype", x.dtype, dt)?;
            same("shape", &x.shape, sh)
        }
        Op::Binary(op) => {
            arity(node, 2)?;
            let (a, b) = (ins[0], ins[1]);
            same("input shape", &a.shape, &b.shape)?;
            same("input dtype", a.dtype, b.dtype)?;
            if !op.accepts(a.dtype) {
                return Err(format!("dtype {} not supported", a.dtype));
            }
            same("output dtype", op.output_dtype(a.dtype), dt)?;
            same("shape", &a.shape, sh)
        }
        Op::Where => {
            arity(node, 3)?;
            let (c, a, b) = (ins[0], ins[1], ins[2]);
            same("condition dtype", c.dtype, DType::Bool)?;
            same("input dtype", a.dtype, b.dtype)?;
            same("output dtype", a.dtype, dt)?;
            same("condition shape", &c.shape, sh)?;
            same("input shape", &a.shape, sh)?;
            same("input shape", &b.shape, sh)
        }
        Op::Cast(d) => {
            arity(node, 1)?;
            same("output dtype", *d, dt)?;
            same("shape", &ins[0].shape, sh)
        }
        Op::BroadcastTo { axes } => {
            arity(node, 1)?;
            axes_ok(axes, sh.rank())?;
            let x = ins[0];
            same("dtype", x.dtype, dt)?;
            let kept: Vec<usize> = (0..sh.rank())
                .filter(|a| !axes.contains(a))
                .map(|a| sh.0[a])
                .collect();
            if kept != x.shape.0 {
                return Err(format!(
                    "input {} does not match output {} without axes {axes:?}",
                    x.shape, sh
                ));
            }
            Ok(())
        }
        Op::Reindex(map) => {
            if node.inputs.is_empty() {
                return Err("expects a source input".into());
            }
            let x = ins[0];
            same("dtype", x.dtype, dt)?;
            same("overflow dtype", map.overflow.dtype(), dt)?;
            check_map(map, sh, &x.shape, &ins[1..])
        }
        Op::Reduce { op, axes, keepdims } => {
            arity(node, 1)?;
            let x = ins[0];
            axes_ok(axes, x.shape.rank())?;
            if !op.accepts(x.dtype) {
                return Err(format!(
                    "{} over dtype {} not supported",
                    op.name(),
                    x.dtype
                ));
            }
            same("dtype", x.dtype, dt)?;
            if matches!(op, ReduceOp::Max | ReduceOp::Min)
                && axes.iter().any(|&a| x.shape.0[a] == 0)
            {
                return Err(format!(
                    "{} over an empty axis of {} has no identity",
                    op.name(),
                    x.shape
                ));
            }
            let expect: Vec<usize> = (0..x.shape.rank())
                .filter_map(|a| match (axes.contains(&a), keepdims) {
                    (true, true) => Some(1),
                    (true, false) => None,
                    (false, _) => Some(x.shape.0[a]),
                })
                .collect();
            same("output shape", Shape(expect), sh.clone())
        }
        Op::ReindexReduce { op, map } => {
            if node.inputs.is_empty() {
                return Err("expects a source input".into());
            }
            let x = ins[0];
            if !op.accepts(x.dtype) {
                return Err(format!(
                    "{} over dtype {} not supported",
                    op.name(),
                    x.dtype
                ));
            }
            same("dtype", x.dtype, dt)?;
            // The overflow value is unused by the scatter form; it is fixed to zero so that
            // equal ops compare and hash equal and the text form (which omits it) round-trips.
            same(
                "overflow (unused, must be zero)",
                map.overflow,
                Scalar::zero(dt),
            )?;
            check_map(map, &x.shape, sh, &ins[1..])
        }
        Op::Reshape => {
            arity(node, 1)?;
            same("dtype", ins[0].dtype, dt)?;
            if ins[0].shape.numel() != sh.numel() {
                return Err(format!(
                    "cannot view {} ({} elements) as {} ({} elements)",
                    ins[0].shape,
                    ins[0].shape.numel(),
                    sh,
                    sh.numel()
                ));
            }
            Ok(())
        }
        Op::Contiguous => {
            arity(node, 1)?;
            same("dtype", ins[0].dtype, dt)?;
            same("shape", &ins[0].shape, sh)
        }
    }
}

/// Checks an index map whose expressions run over `iter` and address `target`.
fn check_map(map: &IndexMap, iter: &Shape, target: &Shape, extras: &[&Node]) -> Result<(), String> {
    if map.exprs.len() != target.rank() {
        return Err(format!(
            "{} index expression(s) for a target of rank {} ({target})",
            map.exprs.len(),
            target.rank()
        ));
    }
    let mut err = None;
    let mut used = vec![false; extras.len()];
    let mut check = |e: &IndexExpr| {
        let bad = match e {
            IndexExpr::Idx(k) | IndexExpr::IterDim(k) if *k >= iter.rank() => Some(format!(
                "{e} names an axis beyond the iteration space {iter}"
            )),
            IndexExpr::TargetDim(k) if *k >= target.rank() => {
                Some(format!("{e} names an axis beyond the target {target}"))
            }
            IndexExpr::Extra(j, ix) => match extras.get(*j) {
                None => Some(format!("extra e{j} is not an input")),
                Some(x) if !x.dtype.is_int() => {
                    Some(format!("extra e{j} has dtype {}, not an integer", x.dtype))
                }
                Some(x) if x.shape.rank() != ix.len() => Some(format!(
                    "extra e{j} of shape {} read with {} index(es)",
                    x.shape,
                    ix.len()
                )),
                Some(_) => {
                    used[*j] = true;
                    None
                }
            },
            _ => None,
        };
        if err.is_none() {
            err = bad;
        }
    };
    for e in map.exprs.iter().chain(&map.conds) {
        e.visit(&mut check);
    }
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(j) = used.iter().position(|u| !u) {
        return Err(format!("extra e{j} is an input but no expression reads it"));
    }
    Ok(())
}
