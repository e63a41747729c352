//! Graph simplification: a flat list of named passes run by one driver.
//!
//! Every pass takes a verified graph and returns an equivalent one: the same outputs in the same
//! order with the same dtypes, shapes and values (bitwise, except NaN payloads), and the same
//! input slots with the same dtypes and shapes. `Input` nodes are never removed, so a graph keeps
//! its calling convention even when it stops reading an input.
//!
//! [`simplify`] runs [`SIMPLIFY`] — [`fold::FoldConstants`], [`cse::Cse`], [`dce::Dce`] — in that
//! order until a whole round changes nothing (at most [`MAX_ROUNDS`] rounds). With
//! [`PassCx::verify`] set, the driver re-verifies the graph after every pass and checks that its
//! interface is unchanged; a violation is a bug in the pass and panics with the annotated graph.
//! [`PassCx::trace`] receives each pass's name, time and resulting graph (the Tensor layer hooks
//! `METAJIT_DEBUG` to it; this crate never reads the environment).
//!
//! [`rebuild`] is the one graph-rewriting utility the passes share: it walks the nodes in order,
//! renames inputs through the substitutions made so far, and lets a callback keep, replace or
//! drop each node.

use std::time::{Duration, Instant};

use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;
use crate::verify::verify;

pub mod cse;
pub mod dce;
pub mod fold;

/// A graph-to-graph transformation with a name.
pub trait Pass: Sync {
    /// The pass's name in traces and panics (`"fold constants"`, ...).
    fn name(&self) -> &'static str;

    /// Runs the pass on a verified graph; returns `None` when it has nothing to change.
    fn run(&self, g: &Graph) -> Option<Graph>;
}

/// The simplification pipeline, in order.
pub const SIMPLIFY: [&dyn Pass; 3] = [&fold::FoldConstants, &cse::Cse, &dce::Dce];

/// The most rounds of [`SIMPLIFY`] that [`simplify`] runs before it stops looking for a fixpoint.
pub const MAX_ROUNDS: usize = 8;

/// What the driver reports after each pass.
#[derive(Clone, Copy, Debug)]
pub struct PassTrace<'a> {
    /// The pass's name.
    pub pass: &'static str,
    /// The round of the pipeline (0-based).
    pub round: usize,
    /// Whether the pass changed the graph.
    pub changed: bool,
    /// The time the pass took (without verification).
    pub elapsed: Duration,
    /// The graph after the pass (its `Display` is the text form).
    pub graph: &'a Graph,
}

/// The context a pipeline runs in.
#[derive(Clone, Copy)]
pub struct PassCx<'a> {
    /// Re-verify the graph after every pass and panic if a pass broke it.
    pub verify: bool,
    /// Called after every pass.
    pub trace: Option<&'a dyn Fn(&PassTrace<'_>)>,
}

impl Default for PassCx<'_> {
    /// Verification in debug builds, no trace.
    fn default() -> Self {
        PassCx {
            verify: cfg!(debug_assertions),
            trace: None,
        }
    }
}

impl std::fmt::Debug for PassCx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassCx")
            .field("verify", &self.verify)
            .field("trace", &self.trace.is_some())
            .finish()
    }
}

/// Runs fold → cse → dce to a fixpoint (at most [`MAX_ROUNDS`] rounds).
pub fn simplify(g: &Graph, cx: &PassCx<'_>) -> Graph {
    run_pipeline(g, &SIMPLIFY, cx)
}

/// Runs `passes` in order, repeating the list until a whole round changes nothing (at most
/// [`MAX_ROUNDS`] rounds).
pub fn run_pipeline(g: &Graph, passes: &[&dyn Pass], cx: &PassCx<'_>) -> Graph {
    let mut g = g.clone();
    for round in 0..MAX_ROUNDS {
        let mut changed = false;
        for &pass in passes {
            if let Some(next) = run_pass(pass, &g, round, cx) {
                g = next;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    g
}

/// Runs one pass under the driver's checks and trace; `None` when it changed nothing.
pub fn run_pass(pass: &dyn Pass, g: &Graph, round: usize, cx: &PassCx<'_>) -> Option<Graph> {
    let start = Instant::now();
    let out = pass.run(g);
    let elapsed = start.elapsed();
    if cx.verify
        && let Some(new) = &out
    {
        if let Err(e) = verify(new) {
            panic!("pass `{}` produced an invalid graph: {e}", pass.name());
        }
        if let Err(msg) = same_interface(g, new) {
            panic!(
                "pass `{}` changed the graph's interface: {msg}\nbefore:\n{g}after:\n{new}",
                pass.name()
            );
        }
    }
    if let Some(trace) = cx.trace {
        trace(&PassTrace {
            pass: pass.name(),
            round,
            changed: out.is_some(),
            elapsed,
            graph: out.as_ref().unwrap_or(g),
        });
    }
    out
}

/// Checks that `after` has the outputs (count, dtypes, shapes) and input slots of `before`.
fn same_interface(before: &Graph, after: &Graph) -> Result<(), String> {
    if before.outputs.len() != after.outputs.len() {
        return Err(format!(
            "{} output(s) became {}",
            before.outputs.len(),
            after.outputs.len()
        ));
    }
    for (k, (a, b)) in before.outputs.iter().zip(&after.outputs).enumerate() {
        let (a, b) = (before.node(*a), after.node(*b));
        if (a.dtype, &a.shape) != (b.dtype, &b.shape) {
            return Err(format!(
                "output {k} was {}{}, is {}{}",
                a.dtype, a.shape, b.dtype, b.shape
            ));
        }
    }
    let slots = |g: &Graph| {
        let mut v: Vec<_> = g
            .nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Input { slot } => Some((slot, n.dtype, n.shape.clone())),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    if slots(before) != slots(after) {
        return Err("the input slots changed".into());
    }
    Ok(())
}

/// What [`rebuild`]'s callback does with one node.
#[derive(Clone, Debug)]
pub enum Rewrite {
    /// Append this node (usually the old one with renamed inputs, or a replacement).
    Keep(Node),
    /// Use this node of the new graph in place of the old node.
    Alias(NodeId),
    /// Leave the node out, and with it every later node that uses it.
    Drop,
}

/// Rebuilds `g` node by node, in order. For each node, `f` gets the graph built so far, the
/// node's old id, and the node with its inputs renamed to ids of that graph, and says what to do
/// with it. A node that uses a dropped node is dropped without calling `f`. Outputs are renamed
/// at the end.
///
/// # Panics
/// If an output was dropped (a bug in the pass).
pub fn rebuild(g: &Graph, mut f: impl FnMut(&Graph, NodeId, Node) -> Rewrite) -> Graph {
    let mut out = Graph::new();
    let mut map: Vec<Option<NodeId>> = Vec::with_capacity(g.nodes.len());
    for (k, n) in g.nodes.iter().enumerate() {
        let inputs: Option<Vec<NodeId>> = n.inputs.iter().map(|i| map[i.index()]).collect();
        let new = inputs.and_then(|inputs| {
            let node = Node {
                op: n.op.clone(),
                inputs,
                dtype: n.dtype,
                shape: n.shape.clone(),
            };
            match f(&out, NodeId(k as u32), node) {
                Rewrite::Keep(n) => Some(out.push_unchecked(n)),
                Rewrite::Alias(id) => Some(id),
                Rewrite::Drop => None,
            }
        });
        map.push(new);
    }
    out.outputs = g
        .outputs
        .iter()
        .map(|&o| map[o.index()].unwrap_or_else(|| panic!("rebuild: output {o} was dropped")))
        .collect();
    out
}

/// `Some(new)` when `new` differs from `old`, for a pass's return value.
pub(crate) fn changed(old: &Graph, new: Graph) -> Option<Graph> {
    (new != *old).then_some(new)
}
