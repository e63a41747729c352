//! Fusion: turns a simplified graph into a schedule of [`Kernel`]s.
//!
//! Requires a verified graph. Guarantees: running the steps in order (each kernel through
//! [`crate::kernel::interpret`] or a backend) yields the graph's outputs.
//!
//! How nodes are grouped:
//! - **Roots** are materialised: graph outputs, reductions, scatters (`reindex_reduce`),
//!   `contiguous`, and element-wise nodes that several kernels use and that cost more than a
//!   load (anything but constants, indices, casts and index rewrites).
//! - Every other node is **inlined** into the kernels that use it: element-wise chains fuse,
//!   and broadcast/reindex/reshape become index arithmetic on the loads of their producers.
//! - A reduction whose every use ends up in one consumer kernel with a compatible loop
//!   structure is **absorbed** as a phase of that kernel: softmax's max and sum become two
//!   Reduce phases before the Store phase of one kernel; `sum(x) / n` stores the divided value.
//!
//! Kernels are generic in sizes: each distinct extent (other than 1) of the graph is one size
//! symbol, passed at run time. The schedule depends only on the graph's structure
//! ([`Graph::same_structure`]) and on [`plan_facts`] (which extents are equal or 1, which index
//! expressions are provably in range), so a new batch size reuses the schedule and kernels.
//! Random seeds, constants (other than bools) and index parameters (slice offsets,
//! [`IndexExpr::Param`]) are runtime parameters too: fresh random numbers, new scalar values and
//! a minibatch at a new offset reuse everything.

use std::collections::HashMap;
use std::hash::Hash;

use crate::dtype::{DType, Scalar};
use crate::expr::{IdxBin, IndexExpr};
use crate::graph::{Fnv, Graph, NodeId};
use crate::kernel::{BufParam, Extent, Inst, Kernel, Phase, PhaseKind, Store, V};
use crate::op::{BinaryOp, Op, OpClass};

/// Where a buffer of the schedule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufRef {
    /// The graph's input slot.
    Input(usize),
    /// The buffer that holds this node's value (computed by a step, or aliased).
    Node(NodeId),
}

/// The source of a kernel's runtime parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    /// The extent of `(node, axis)`.
    Extent(NodeId, usize),
    /// The seed of a `Random` node.
    Seed(NodeId),
    /// The value of a `Const` node ([`crate::kernel::param_bits`]).
    Const(NodeId),
    /// The value of the `j`-th runtime index parameter ([`IndexExpr::Param`]) of a `Reindex`
    /// or `ReindexReduce` node, counting its expressions then its conditions, each in pre-order
    /// ([`map_param`]).
    Index(NodeId, usize),
}

/// One step of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Run a kernel.
    Kernel {
        /// The kernel.
        kernel: Kernel,
        /// The buffer bound to each kernel parameter.
        bufs: Vec<BufRef>,
        /// Where each runtime parameter's value comes from.
        sizes: Vec<Param>,
        /// Parameters to fill with a value before the kernel runs (for combining stores).
        init: Vec<(usize, Scalar)>,
        /// The node the kernel computes (for debug output).
        root: NodeId,
    },
    /// A (batched) matrix product computed by the backend's GEMM.
    Contraction {
        /// What is multiplied (symbolic: evaluate with `Contraction::layout` on the graph).
        contraction: crate::contraction::Contraction,
        /// The destination, lhs and rhs buffers.
        bufs: [BufRef; 3],
    },
    /// The node's buffer is another buffer, relabelled (a reshape of materialised data).
    Alias {
        /// The node.
        node: NodeId,
        /// The buffer it shares.
        of: BufRef,
    },
}

/// A graph's schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The buffer holding each graph output.
    pub outputs: Vec<BufRef>,
}

impl Schedule {
    /// Number of kernels (GEMM calls included).
    pub fn kernel_count(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Kernel { .. } | Step::Contraction { .. }))
            .count()
    }

    /// A summary: one line per step (for `METAJIT_DEBUG=2`).
    pub fn summary(&self, g: &Graph) -> String {
        let mut s = String::new();
        for (k, st) in self.steps.iter().enumerate() {
            match st {
                Step::Kernel { kernel, root, .. } => {
                    let n = g.node(*root);
                    let phases: Vec<String> = kernel
                        .phases
                        .iter()
                        .map(|p| match &p.kind {
                            PhaseKind::Reduce { op, .. } => format!("reduce {}", op.name()),
                            PhaseKind::Store(st) => format!("store×{}", st.len()),
                        })
                        .collect();
                    s.push_str(&format!(
                        "  step {k}: kernel for {root} ({} {}{}) phases [{}], {} instructions\n",
                        n.op.name(),
                        n.dtype,
                        n.shape,
                        phases.join(", "),
                        kernel.phases.iter().map(|p| p.body.len()).sum::<usize>()
                    ));
                }
                Step::Alias { node, of } => {
                    s.push_str(&format!("  step {k}: {node} aliases {of:?}\n"));
                }
                Step::Contraction { contraction, .. } => {
                    let n = g.node(contraction.output);
                    s.push_str(&format!(
                        "  step {k}: GEMM for {} ({}{}) = {} x {}\n",
                        contraction.output, n.dtype, n.shape, contraction.lhs, contraction.rhs
                    ));
                }
            }
        }
        s
    }
}

/// What a schedule depends on besides the graph's structure ([`Graph::same_structure`]), as
/// numbers: for each extent of each node, in order, its class — `u32::MAX` for 1 and
/// `u32::MAX - 1` for 2 (the extents kernels take as constants, see `KernelBuilder::extent`),
/// else the position of the first extent of the graph equal to it — then, for each index
/// expression of each `reindex`, whether [`in_range`] proves it in range (1) or not (0). Extents themselves,
/// seeds, constants and index parameters are left out, so a new batch size or a new slice
/// offset has the same facts unless it changes one of these decisions.
pub fn plan_facts(g: &Graph) -> Vec<u32> {
    let mut first: HashMap<usize, u32, std::hash::BuildHasherDefault<Fnv>> = HashMap::default();
    let mut facts = Vec::new();
    for n in &g.nodes {
        for &d in n.shape.dims() {
            let slot = facts.len() as u32;
            facts.push(if d == 1 {
                u32::MAX
            } else if d == 2 {
                u32::MAX - 1
            } else {
                *first.entry(d).or_insert(slot)
            });
        }
    }
    for n in &g.nodes {
        let (src, out) = (|| g.node(n.inputs[0]).shape.dims(), n.shape.dims());
        // (map, iteration extents, target extents): a gather iterates over its output and
        // reads its input; a scatter iterates over its input and targets its own shape.
        let (map, iter, target) = match &n.op {
            Op::Reindex(map) => (map, out, src()),
            Op::ReindexReduce { map, .. } => (map, src(), out),
            _ => continue,
        };
        for (a, e) in map.exprs.iter().enumerate() {
            facts.push(in_range(e, target[a], iter, target) as u32);
        }
    }
    facts
}

/// A graph's plan-cache key: the structural hash and the [`plan_facts`]. Two graphs whose keys
/// are equal and whose structures are equal ([`PlanKey::same_plan`]) have the same schedule;
/// equal hashes alone prove nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanKey {
    /// A hash of the structure and the facts.
    pub hash: u64,
    /// The graph's [`plan_facts`].
    pub facts: Vec<u32>,
}

impl PlanKey {
    /// The key of `g`.
    pub fn of(g: &Graph) -> PlanKey {
        let facts = plan_facts(g);
        let mut h = Fnv::default();
        g.structural_hash().hash(&mut h);
        facts.hash(&mut h);
        PlanKey { hash: h.0, facts }
    }

    /// Whether the schedule built for `built_for` (whose key is `self`) is the schedule of
    /// `g` (whose key is `key`): equal facts and equal structure, whatever the hashes say.
    pub fn same_plan(&self, built_for: &Graph, key: &PlanKey, g: &Graph) -> bool {
        self.facts == key.facts && built_for.same_structure(g)
    }
}

/// The plan-cache hash of a graph ([`PlanKey::hash`]): its structure, plus which extents are 1 or 2
/// and which are equal to each other, and which index expressions are provably in range
/// (everything the scheduler looks at), but not the extents or offsets themselves.
pub fn plan_key(g: &Graph) -> u64 {
    PlanKey::of(g).hash
}

/// Whether a schedule built for graph `a` is the schedule of graph `b` (the check a plan-cache
/// hit must pass).
pub fn same_plan(a: &Graph, b: &Graph) -> bool {
    let (ka, kb) = (PlanKey::of(a), PlanKey::of(b));
    ka.same_plan(a, &kb, b)
}

/// The longest chain of ops inlined into one kernel before a node is materialised.
pub const MAX_INLINE_DEPTH: usize = 64;

/// Whether an index expression's value is in `0..extent` at every point of the iteration
/// space `iter_dims` (of a graph's concrete extents and index parameter values): a bare
/// iteration index over an axis of the same extent, or an expression whose bounds by interval
/// arithmetic lie inside. The answer depends on values, so it is part of the plan key
/// ([`plan_facts`]); that is what lets a slice at a runtime offset load without range checks.
pub fn in_range(e: &IndexExpr, extent: usize, iter_dims: &[usize], target_dims: &[usize]) -> bool {
    if target_dims.contains(&0) {
        // An empty target has no element in range: every coordinate stays checked (a bare
        // index over an axis of its own extent too), so an invalid point reads offset 0 (see
        // `safe_target`), not a coordinate of another axis. This holds even when the map's
        // own iteration space is empty: fused into a consumer, it is evaluated at that
        // consumer's (zeroed) coordinates all the same.
        return false;
    }
    if matches!(e, IndexExpr::Idx(j) if iter_dims[*j] == extent) {
        return true;
    }
    if iter_dims.contains(&0) {
        return false; // interval bounds need a non-empty space; keep the checks
    }
    matches!(bounds(e, iter_dims, target_dims), Some((lo, hi)) if lo >= 0 && hi < extent as i64)
}

/// The least and greatest values of an index expression over a non-empty iteration space, by
/// interval arithmetic on sums, differences, products, min and max of indices, extents,
/// constants and index parameters; `None` for anything else or on overflow.
fn bounds(e: &IndexExpr, iter_dims: &[usize], target_dims: &[usize]) -> Option<(i64, i64)> {
    let b = |x: &IndexExpr| bounds(x, iter_dims, target_dims);
    let dim = |d: usize| i64::try_from(d).ok();
    Some(match e {
        IndexExpr::Const(c) | IndexExpr::Param(c) => (*c, *c),
        IndexExpr::Idx(j) => (0, dim(iter_dims[*j])? - 1),
        IndexExpr::IterDim(j) => (dim(iter_dims[*j])?, dim(iter_dims[*j])?),
        IndexExpr::TargetDim(j) => (dim(target_dims[*j])?, dim(target_dims[*j])?),
        IndexExpr::Bin(op, x, y) => {
            let ((a, c), (p, q)) = (b(x)?, b(y)?);
            match op {
                IdxBin::Add => (a.checked_add(p)?, c.checked_add(q)?),
                IdxBin::Sub => (a.checked_sub(q)?, c.checked_sub(p)?),
                IdxBin::Mul => {
                    let v = [
                        a.checked_mul(p)?,
                        a.checked_mul(q)?,
                        c.checked_mul(p)?,
                        c.checked_mul(q)?,
                    ];
                    (*v.iter().min()?, *v.iter().max()?)
                }
                IdxBin::Min => (a.min(p), c.min(q)),
                IdxBin::Max => (a.max(p), c.max(q)),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// Where an index expression is lowered: the op's node (whose index parameters it reads), the
/// iteration coordinates and extents, the target's extents, the op's inputs, and the ordinal
/// of the next index parameter.
struct IdxCx<'a> {
    node: usize,
    coords: &'a [V],
    iter_dims: &'a [usize],
    target_dims: &'a [usize],
    inputs: &'a [usize],
    next_param: usize,
}

impl<'a> IdxCx<'a> {
    fn new(
        node: usize,
        coords: &'a [V],
        iter_dims: &'a [usize],
        target_dims: &'a [usize],
        inputs: &'a [usize],
    ) -> Self {
        IdxCx {
            node,
            coords,
            iter_dims,
            target_dims,
            inputs,
            next_param: 0,
        }
    }
}

/// An index map's target coordinates at one point ([`KernelBuilder::map_target`]).
struct Mapped {
    target: Vec<V>,
    /// When the coordinates can be invalid: the bool that says they are valid (every checked
    /// coordinate in range, no condition set).
    valid: Option<V>,
    /// Per coordinate, whether `valid` checks it.
    checked: Vec<bool>,
}

/// The value of the `j`-th index parameter of node `n`'s index map (expressions, then
/// conditions, each in pre-order: the order in which [`schedule`] lowers them).
pub fn map_param(g: &Graph, n: NodeId, j: usize) -> i64 {
    let (Op::Reindex(map) | Op::ReindexReduce { map, .. }) = &g.node(n).op else {
        return 0;
    };
    let mut k = 0;
    let mut found = 0;
    for e in map.exprs.iter().chain(&map.conds) {
        e.visit(&mut |x| {
            if let IndexExpr::Param(v) = x {
                if k == j {
                    found = *v;
                }
                k += 1;
            }
        });
    }
    found
}

/// Loop structure of a kernel root.
#[derive(Clone, Debug, PartialEq)]
struct Rows {
    /// Extents (concrete) of the outer loops.
    outer: Vec<usize>,
    /// Extents of the inner loops of the Store phase.
    inner: Vec<usize>,
}

/// Builds the schedule of a verified graph.
pub fn schedule(g: &Graph) -> Schedule {
    let n = g.nodes.len();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, node) in g.nodes.iter().enumerate() {
        for i in &node.inputs {
            users[i.index()].push(k);
        }
    }
    let is_output: Vec<bool> = {
        let mut v = vec![false; n];
        for o in &g.outputs {
            v[o.index()] = true;
        }
        v
    };
    let mut root = vec![false; n];
    // Nodes that must stay roots whatever the absorbing below decides.
    let mut pinned = vec![false; n];
    let mut light = Light::new(n);
    for (k, node) in g.nodes.iter().enumerate() {
        let recompute = light.visit(g, k, &root);
        // An element-wise value that is not light, read through a reindex that reads each
        // element several times (the im2col windows of a convolution over a pooled or
        // normalised input): computed once into a buffer, not once per read.
        if !cheap(&node.op)
            && !recompute
            && !matches!(
                node.op,
                Op::Reduce { .. } | Op::ReindexReduce { .. } | Op::Contiguous
            )
            && users[k].iter().any(|&u| rereads(g, u))
        {
            root[k] = true;
            pinned[k] = true;
            continue;
        }
        root[k] = match node.op {
            Op::Input { .. } => false,
            Op::Reduce { .. } | Op::ReindexReduce { .. } | Op::Contiguous => true,
            _ => is_output[k] || (users[k].len() > 1 && !cheap(&node.op) && !recompute),
        };
        if is_output[k] && !matches!(node.op, Op::Input { .. }) {
            root[k] = true;
        }
    }
    // Contractions (matmul, and conv lowered to one) become GEMM calls; their operands must be
    // buffers, so an operand that is not a view of one is materialised (a prologue kernel).
    let mut contractions: Vec<Option<crate::contraction::Contraction>> = vec![None; n];
    for (k, node) in g.nodes.iter().enumerate() {
        if !matches!(node.op, Op::Reduce { .. }) {
            continue;
        }
        // Views the matcher reads through. Other reindexes (a minibatch slice at an offset,
        // padding, gathers) are materialised first, so the product still runs as a GEMM.
        let view = |p: NodeId| match g.node(p).op {
            Op::BroadcastTo { .. } | Op::Reshape => true,
            // Permutations, and strided views (a convolution's shifted windows over its
            // padded input), which the GEMM reads with overlapping strides.
            Op::Reindex(_) => is_permutation(g, p) || crate::contraction::is_strided_view(g, p),
            _ => false,
        };
        let found = crate::contraction::match_contraction(g, NodeId(k as u32), &|p| !view(p));
        if let Some(c) = found {
            for src in [c.lhs, c.rhs] {
                if !matches!(g.node(src).op, Op::Input { .. }) {
                    root[src.index()] = true;
                    pinned[src.index()] = true;
                }
            }
            contractions[k] = Some(c);
        }
    }
    // Bound the depth of inlined chains: a kernel stays small, and building it (a recursive
    // walk) stays shallow, however long a chain of ops the user recorded.
    let mut depth = vec![0usize; n];
    for k in 0..n {
        let d = 1 + g.nodes[k]
            .inputs
            .iter()
            .map(|i| if root[i.index()] { 0 } else { depth[i.index()] })
            .max()
            .unwrap_or(0);
        if d > MAX_INLINE_DEPTH && !matches!(g.nodes[k].op, Op::Input { .. }) {
            root[k] = true;
            pinned[k] = true;
            depth[k] = 0;
        } else {
            depth[k] = d;
        }
    }
    // Absorb reductions and shared expensive nodes into their single consumer kernel.
    let mut absorbed: Vec<Option<usize>> = vec![None; n];
    let mut forced = vec![false; n];
    loop {
        absorbed.iter_mut().for_each(|a| *a = None);
        let mut is_root = root.clone();
        for k in 0..n {
            if forced[k] {
                is_root[k] = true;
            }
        }
        let mut reach: Vec<Option<usize>> = vec![None; n]; // the single root this node feeds
        let mut multi = vec![false; n];
        for k in (0..n).rev() {
            if is_output[k] || users[k].is_empty() {
                continue;
            }
            let mut target: Option<usize> = None;
            let mut many = false;
            for &u in &users[k] {
                let t = if is_root[u] { Some(u) } else { reach[u] };
                if multi[u] && !is_root[u] {
                    many = true;
                }
                match (target, t) {
                    (_, None) => many = true,
                    (None, Some(t)) => target = Some(t),
                    (Some(a), Some(b)) if a != b => many = true,
                    _ => {}
                }
            }
            multi[k] = many;
            reach[k] = target;
            if !is_root[k] || forced[k] || pinned[k] || many {
                continue;
            }
            let Some(t) = target else { continue };
            let node = g.node(NodeId(k as u32));
            match node.op {
                Op::Reduce { .. } if contractions[k].is_some() => {}
                Op::Reduce { .. } => {
                    if compatible_absorb(g, t, k, &absorbed) {
                        absorbed[k] = Some(t);
                        is_root[k] = false;
                    }
                }
                Op::ReindexReduce { .. } | Op::Contiguous | Op::Input { .. } => {}
                _ => {
                    // A shared element-wise node used only inside one kernel: recompute it there.
                    is_root[k] = false;
                }
            }
        }
        // Build; an absorbed reduce whose access pattern does not fit its kernel becomes a root.
        match build_all(g, &is_root, &absorbed, &contractions) {
            Ok(s) => return s,
            Err(failed) => {
                // Each retry makes one more reduction a root; a root never fails its own
                // kernel, so this ends.
                assert!(
                    !forced[failed],
                    "metajit bug: fusion could not place reduction %{failed}\n{g}"
                );
                forced[failed] = true;
            }
        }
    }
}

/// Element-wise nodes that are as cheap to recompute in each kernel that uses them as to load
/// them from a buffer: a few arithmetic ops (no transcendental function, division, power or
/// remainder) over at most one buffer of the node's own size, plus broadcasts of smaller
/// buffers and constants. Recomputing such a node reads the same bytes as loading its result
/// would, and saves writing it and a kernel launch — e.g. a bias add after a GEMM, and the
/// relu mask the backward pass reads again.
struct Light {
    /// For each visited node: `None` when it is not light, else the count of arithmetic ops
    /// it inlines and the materialised nodes it reads.
    info: Vec<Option<(usize, Vec<usize>)>>,
}

impl Light {
    /// The most arithmetic ops a recomputed expression may hold.
    const MAX_OPS: usize = 4;

    fn new(n: usize) -> Light {
        Light {
            info: vec![None; n],
        }
    }

    /// Records node `k` (its inputs visited before; `root` fixed for them) and says whether
    /// it is light.
    fn visit(&mut self, g: &Graph, k: usize, root: &[bool]) -> bool {
        let node = &g.nodes[k];
        let own_op = match &node.op {
            Op::Unary(u) => {
                use crate::op::UnaryOp::*;
                matches!(u, Neg | Abs | Floor | Ceil | Round | Not)
            }
            Op::Binary(b) => !matches!(b, BinaryOp::Pow | BinaryOp::Mod | BinaryOp::Div),
            Op::Where | Op::Cast(_) => true,
            _ => false,
        };
        let passes = cheap(&node.op) && !matches!(node.op, Op::Input { .. });
        if !own_op && !passes {
            return false;
        }
        let mut ops = usize::from(own_op);
        let mut reads: Vec<usize> = Vec::new();
        for i in &node.inputs {
            let i = i.index();
            if root[i] || matches!(g.nodes[i].op, Op::Input { .. }) {
                reads.push(i);
                continue;
            }
            match &self.info[i] {
                Some((o, r)) => {
                    ops += o;
                    reads.extend_from_slice(r);
                }
                None => return false,
            }
        }
        reads.sort_unstable();
        reads.dedup();
        let numel = node.shape.numel();
        let full = reads
            .iter()
            .filter(|&&r| g.nodes[r].shape.numel() >= numel)
            .count();
        let ok = ops <= Self::MAX_OPS && full <= 1;
        self.info[k] = ok.then_some((ops, reads));
        ok && own_op
    }
}

/// Whether node `p` is a `Reindex` that only permutes axes (each source axis reads a distinct
/// output index of the same extent, no conditions, no extras): the reindexes a contraction
/// reads through as strided views.
fn is_permutation(g: &Graph, p: NodeId) -> bool {
    let n = g.node(p);
    let Op::Reindex(map) = &n.op else {
        return false;
    };
    let (out, src) = (n.shape.dims(), g.node(n.inputs[0]).shape.dims());
    let mut seen = vec![false; out.len()];
    n.inputs.len() == 1
        && map.conds.is_empty()
        && map.exprs.len() == out.len()
        && map.exprs.iter().enumerate().all(|(a, e)| match *e {
            IndexExpr::Idx(k) if k < out.len() && !seen[k] && out[k] == src[a] => {
                seen[k] = true;
                true
            }
            _ => false,
        })
}

/// Whether node `u` is a `Reindex` that reads source elements several times: a sliding window
/// (an output axis of extent > 1 that no source coordinate is a one-to-one function of, in a
/// map without conditions or divisions). Maps with divisions or conditions (the inverse of a
/// strided slice, which reads each element once and masks the rest) do not count.
fn rereads(g: &Graph, u: usize) -> bool {
    let un = &g.nodes[u];
    let Op::Reindex(map) = &un.op else {
        return false;
    };
    let mut divides = false;
    for e in &map.exprs {
        e.visit(&mut |x| {
            if matches!(
                x,
                IndexExpr::Bin(crate::expr::IdxBin::Div | crate::expr::IdxBin::Mod, ..)
                    | IndexExpr::Extra(..)
            ) {
                divides = true;
            }
        });
    }
    if divides || !map.conds.is_empty() {
        return false;
    }
    un.shape
        .dims()
        .iter()
        .enumerate()
        .any(|(k, &d)| d > 1 && !map.disjoint_along(k))
}

/// Ops that cost no more than a load: recomputing them in several kernels is free.
fn cheap(op: &Op) -> bool {
    matches!(
        op.class(),
        OpClass::Source | OpClass::Reindex | OpClass::Layout
    ) && !matches!(op, Op::Random { .. } | Op::Contiguous)
        || matches!(op, Op::Cast(_))
}

/// The loop structure a root would have on its own.
fn own_rows(g: &Graph, r: usize) -> Rows {
    let node = g.node(NodeId(r as u32));
    match &node.op {
        Op::Reduce { axes, .. } => {
            let x = g.node(node.inputs[0]);
            let d = x.shape.dims();
            Rows {
                outer: (0..d.len())
                    .filter(|a| !axes.contains(a))
                    .map(|a| d[a])
                    .collect(),
                inner: vec![],
            }
        }
        Op::ReindexReduce { .. } => Rows {
            outer: vec![],
            inner: g.node(node.inputs[0]).shape.dims().to_vec(),
        },
        _ => {
            let d = node.shape.dims();
            match d.split_last() {
                Some((last, rest)) => Rows {
                    outer: rest.to_vec(),
                    inner: vec![*last],
                },
                None => Rows {
                    outer: vec![],
                    inner: vec![],
                },
            }
        }
    }
}

fn drop_ones(d: &[usize]) -> Vec<usize> {
    d.iter().copied().filter(|&x| x != 1).collect()
}

/// The rows a kernel root has once the reduction `red` is absorbed, if possible.
fn rows_with(g: &Graph, k: usize, red: usize) -> Option<Rows> {
    let rn = g.node(NodeId(red as u32));
    let Op::Reduce { axes, .. } = &rn.op else {
        return None;
    };
    let x = g.node(rn.inputs[0]);
    let xd = x.shape.dims();
    let first = *axes.first()?;
    // Only trailing reductions become phases.
    if axes.iter().enumerate().any(|(j, &a)| a != first + j) || axes.last() != Some(&(xd.len() - 1))
    {
        return None;
    }
    let kept = xd[..first].to_vec();
    let reduced = xd[first..].to_vec();
    let kn = g.node(NodeId(k as u32));
    match &kn.op {
        Op::Reduce { axes: kaxes, .. } => {
            let kx = g.node(kn.inputs[0]);
            (kx.shape == x.shape && kaxes == axes).then(|| Rows {
                outer: kept,
                inner: vec![],
            })
        }
        Op::ReindexReduce { .. } | Op::Contiguous => None,
        _ => {
            let kd = kn.shape.dims();
            if kd == xd {
                Some(Rows {
                    outer: kept,
                    inner: reduced,
                })
            } else if drop_ones(kd) == drop_ones(&kept) && !kd.is_empty()
                || kd.is_empty() && kept.is_empty()
            {
                Some(Rows {
                    outer: kd.to_vec(),
                    inner: vec![],
                })
            } else {
                None
            }
        }
    }
}

fn compatible_absorb(g: &Graph, k: usize, red: usize, absorbed: &[Option<usize>]) -> bool {
    let Some(rows) = rows_with(g, k, red) else {
        return false;
    };
    // Every reduction already absorbed into k must agree on the loop structure.
    absorbed
        .iter()
        .enumerate()
        .filter(|(_, a)| **a == Some(k))
        .all(|(other, _)| rows_with(g, k, other).as_ref() == Some(&rows))
}

/// Builds every root's kernel; `Err(node)` names an absorbed reduction that did not fit.
fn build_all(
    g: &Graph,
    is_root: &[bool],
    absorbed: &[Option<usize>],
    contractions: &[Option<crate::contraction::Contraction>],
) -> Result<Schedule, usize> {
    let mut sizes = SizeTable::default();
    let mut steps = Vec::new();
    for k in 0..g.nodes.len() {
        if !is_root[k] {
            continue;
        }
        let node = g.node(NodeId(k as u32));
        if let Some(c) = &contractions[k] {
            steps.push(Step::Contraction {
                contraction: c.clone(),
                bufs: [BufRef::Node(c.output), buf_of(g, c.lhs), buf_of(g, c.rhs)],
            });
            continue;
        }
        // A reshape of materialised data is a relabelling: share the buffer.
        if node.op == Op::Reshape {
            let src = node.inputs[0];
            if is_root[src.index()] || matches!(g.node(src).op, Op::Input { .. }) {
                steps.push(Step::Alias {
                    node: NodeId(k as u32),
                    of: buf_of(g, src),
                });
                continue;
            }
        }
        let phases_of: Vec<usize> = (0..g.nodes.len())
            .filter(|&r| absorbed[r] == Some(k))
            .collect();
        let rows = match phases_of.first() {
            Some(&r) => rows_with(g, k, r).ok_or(r)?,
            None => own_rows(g, k),
        };
        let mut kb = KernelBuilder::new(g, is_root, &mut sizes, rows);
        kb.build(k, &phases_of)?;
        steps.push(kb.finish(k));
    }
    let outputs = g.outputs.iter().map(|o| buf_of(g, *o)).collect();
    Ok(Schedule { steps, outputs })
}

fn buf_of(g: &Graph, id: NodeId) -> BufRef {
    match g.node(id).op {
        Op::Input { slot } => BufRef::Input(slot),
        _ => BufRef::Node(id),
    }
}

/// Size symbols: one per distinct extent value (other than 1), with a `(node, axis)` source.
#[derive(Default)]
struct SizeTable {
    by_value: HashMap<usize, (NodeId, usize)>,
}

/// Builds one kernel's SSA.
struct KernelBuilder<'g, 's> {
    g: &'g Graph,
    is_root: Vec<bool>,
    global_sizes: &'s mut SizeTable,
    rows: Rows,
    bufs: Vec<BufParam>,
    buf_refs: Vec<BufRef>,
    buf_index: HashMap<BufRef, usize>,
    size_params: Vec<Param>,
    size_index: HashMap<usize, usize>,
    phases: Vec<Phase>,
    phase_of_node: HashMap<usize, usize>,
    init: Vec<(usize, Scalar)>,
    outer: Vec<Extent>,
    parallel: bool,
    // The phase under construction.
    body: Vec<(Inst, DType)>,
    memo: HashMap<(Inst, DType), V>,
    eval_memo: HashMap<(usize, Vec<V>), V>,
}

impl<'g, 's> KernelBuilder<'g, 's> {
    fn new(g: &'g Graph, is_root: &'g [bool], sizes: &'s mut SizeTable, rows: Rows) -> Self {
        // Register every extent of the graph so that size sources are stable.
        for (k, node) in g.nodes.iter().enumerate() {
            for (a, &d) in node.shape.dims().iter().enumerate() {
                if d != 1 {
                    sizes.by_value.entry(d).or_insert((NodeId(k as u32), a));
                }
            }
        }
        KernelBuilder {
            g,
            is_root: is_root.to_vec(),
            global_sizes: sizes,
            rows,
            bufs: Vec::new(),
            buf_refs: Vec::new(),
            buf_index: HashMap::new(),
            size_params: Vec::new(),
            size_index: HashMap::new(),
            phases: Vec::new(),
            phase_of_node: HashMap::new(),
            init: Vec::new(),
            outer: Vec::new(),
            parallel: true,
            body: Vec::new(),
            memo: HashMap::new(),
            eval_memo: HashMap::new(),
        }
    }

    /// Extent `d` in a kernel: a size parameter, shared by the extents of equal value, except
    /// 1 and 2, which are constants. A 2 is the common window, stride and upsampling factor:
    /// as a constant, the division and modulo that map a reshaped or strided index through it
    /// are a shift and a mask, and its multiples constant lane strides, where a size costs a
    /// multiply-high division per vector lane (the backward pass of a 2x2 max pooling: 30%
    /// faster).
    fn extent(&mut self, d: usize) -> Extent {
        if d == 1 || d == 2 {
            return Extent::Const(d as u64);
        }
        let src = self.global_sizes.by_value[&d];
        let n = self.size_params.len();
        let idx = *self.size_index.entry(d).or_insert_with(|| n);
        if idx == n {
            self.size_params.push(Param::Extent(src.0, src.1));
        }
        Extent::Size(idx)
    }

    /// The runtime parameter holding the seed of `Random` node `k`.
    fn seed_param(&mut self, k: usize) -> usize {
        self.param(Param::Seed(NodeId(k as u32)))
    }

    /// The index of a runtime parameter (added once).
    fn param(&mut self, p: Param) -> usize {
        match self.size_params.iter().position(|q| *q == p) {
            Some(i) => i,
            None => {
                self.size_params.push(p);
                self.size_params.len() - 1
            }
        }
    }

    /// The parameter index of buffer `r`, which holds node `node` (of that dtype and shape).
    fn buffer(&mut self, r: BufRef, node: NodeId, output: bool) -> usize {
        if let Some(&i) = self.buf_index.get(&r) {
            return i;
        }
        let n = self.g.node(node);
        let dtype = n.dtype;
        let dims = n.shape.dims().iter().map(|&d| self.extent(d)).collect();
        let i = self.bufs.len();
        self.bufs.push(BufParam {
            dtype,
            output,
            dims,
        });
        self.buf_refs.push(r);
        self.buf_index.insert(r, i);
        i
    }

    // ---- SSA construction with peephole simplification of index arithmetic ----

    fn push(&mut self, inst: Inst, dt: DType) -> V {
        if let Some(&v) = self.memo.get(&(inst.clone(), dt)) {
            return v;
        }
        let v = V(self.body.len() as u32);
        self.body.push((inst.clone(), dt));
        self.memo.insert((inst, dt), v);
        v
    }

    fn inst(&self, v: V) -> &Inst {
        &self.body[v.0 as usize].0
    }

    fn as_const(&self, v: V) -> Option<i64> {
        match self.inst(v) {
            Inst::Const(c) if c.dtype() == DType::I64 => Some(c.to_i64()),
            _ => None,
        }
    }

    fn ci(&mut self, c: i64) -> V {
        self.push(Inst::Const(Scalar::I64(c)), DType::I64)
    }

    fn size(&mut self, d: usize) -> V {
        match self.extent(d) {
            Extent::Const(c) => self.ci(c as i64),
            Extent::Size(s) => self.push(Inst::Size(s), DType::I64),
        }
    }

    /// i64 arithmetic with constant folding and the identities index math needs.
    fn ibin(&mut self, op: BinaryOp, a: V, b: V) -> V {
        let (ca, cb) = (self.as_const(a), self.as_const(b));
        if let (Some(x), Some(y)) = (ca, cb) {
            let r = crate::interp::eval_binary(op, Scalar::I64(x), Scalar::I64(y));
            return self.push(Inst::Const(r), r.dtype());
        }
        match (op, ca, cb) {
            (BinaryOp::Add, Some(0), _) => return b,
            (BinaryOp::Add | BinaryOp::Sub, _, Some(0)) => return a,
            (BinaryOp::Mul, Some(1), _) => return b,
            (BinaryOp::Mul | BinaryOp::Div, _, Some(1)) => return a,
            (BinaryOp::Mul, Some(0), _) | (BinaryOp::Mul, _, Some(0)) => return self.ci(0),
            (BinaryOp::Mod, _, Some(1)) => return self.ci(0),
            _ => {}
        }
        // (x / d) * d + x % d  ->  x
        if op == BinaryOp::Add
            && let (Inst::Binary(BinaryOp::Mul, q, d1), Inst::Binary(BinaryOp::Mod, x2, d2)) =
                (self.inst(a).clone(), self.inst(b).clone())
            && let Inst::Binary(BinaryOp::Div, x1, d0) = self.inst(q).clone()
            && x1 == x2
            && d0 == d1
            && d1 == d2
        {
            return x1;
        }
        let (a, b) = if op.is_commutative() && b < a {
            (b, a)
        } else {
            (a, b)
        };
        self.push(Inst::Binary(op, a, b), op.output_dtype(DType::I64))
    }

    fn and(&mut self, a: Option<V>, b: V) -> V {
        match a {
            None => b,
            Some(a) => self.push(Inst::Binary(BinaryOp::And, a.min(b), a.max(b)), DType::Bool),
        }
    }

    /// Row-major linear offset of `coords` in `dims`.
    fn ravel(&mut self, coords: &[V], dims: &[usize]) -> V {
        let mut off = self.ci(0);
        for (c, &d) in coords.iter().zip(dims) {
            let dv = self.size(d);
            let m = self.ibin(BinaryOp::Mul, off, dv);
            off = self.ibin(BinaryOp::Add, m, *c);
        }
        off
    }

    /// Coordinates of a linear offset in `dims` (successive div/mod, innermost first).
    fn unravel(&mut self, lin: V, dims: &[usize]) -> Vec<V> {
        let mut out = vec![lin; dims.len()];
        let mut q = lin;
        for k in (0..dims.len()).rev() {
            if k == 0 {
                out[k] = q;
            } else {
                // One division: the remainder is `q - (q / d)·d` (floor semantics agree).
                let dv = self.size(dims[k]);
                let next = self.ibin(BinaryOp::Div, q, dv);
                let back = self.ibin(BinaryOp::Mul, next, dv);
                out[k] = self.ibin(BinaryOp::Sub, q, back);
                q = next;
            }
        }
        out
    }

    /// Coordinates over `from` re-expressed over `to`, two shapes of the same element count:
    /// axis by axis where the extents agree, and per group of axes whose extents multiply to
    /// the same product (`[N, C, 2, 2]` -> `[N, C, 4]`) by a ravel and unravel of that group
    /// only. Divisions by runtime sizes cost tens of cycles each, so this matters: a full
    /// ravel/unravel of a rank-6 view costs ten of them per element, a merge of the last two
    /// axes one.
    fn regroup(&mut self, coords: &[V], from: &[usize], to: &[usize]) -> Vec<V> {
        if from.contains(&0) || to.contains(&0) {
            let lin = self.ravel(coords, from);
            return self.unravel(lin, to);
        }
        // Singleton axes carry no coordinate: group the others, and give each singleton
        // target axis coordinate 0.
        let fk: Vec<usize> = (0..from.len()).filter(|&a| from[a] != 1).collect();
        let tk: Vec<usize> = (0..to.len()).filter(|&a| to[a] != 1).collect();
        let (f, t): (Vec<usize>, Vec<usize>) = (
            fk.iter().map(|&a| from[a]).collect(),
            tk.iter().map(|&a| to[a]).collect(),
        );
        let fc: Vec<V> = fk.iter().map(|&a| coords[a]).collect();
        let zero = self.ci(0);
        let mut out = vec![zero; to.len()];
        let (mut i, mut j) = (0, 0);
        while i < f.len() && j < t.len() {
            let (si, sj) = (i, j);
            let (mut pf, mut pt) = (f[i], t[j]);
            (i, j) = (i + 1, j + 1);
            while pf != pt {
                // The element counts agree, so the smaller side has axes left.
                if pf < pt {
                    pf *= f[i];
                    i += 1;
                } else {
                    pt *= t[j];
                    j += 1;
                }
            }
            let group = if i - si == 1 && j - sj == 1 {
                vec![fc[si]]
            } else {
                let lin = self.ravel(&fc[si..i], &f[si..i]);
                self.unravel(lin, &t[sj..j])
            };
            for (q, v) in group.into_iter().enumerate() {
                out[tk[sj + q]] = v;
            }
        }
        out
    }

    /// Coordinates over `from` re-expressed over `to`, two shapes that differ only in
    /// singleton axes: the non-1 extents correspond in order; 1-extents read 0.
    fn map_singletons(&mut self, coords: &[V], from: &[usize], to: &[usize]) -> Vec<V> {
        let mut kept = coords
            .iter()
            .zip(from)
            .filter(|(_, d)| **d != 1)
            .map(|(c, _)| *c);
        let zero = self.ci(0);
        to.iter()
            .map(|&d| {
                if d == 1 {
                    zero
                } else {
                    kept.next().unwrap_or(zero)
                }
            })
            .collect()
    }

    /// `0 <= t < extent`, and-ed onto `valid`.
    fn in_bounds(&mut self, valid: Option<V>, t: V, extent: usize) -> V {
        let zero = self.ci(0);
        let ge = self.ibin(BinaryOp::Le, zero, t);
        let dv = self.size(extent);
        let lt = self.ibin(BinaryOp::Lt, t, dv);
        let both = self.and(Some(ge), lt);
        self.and(valid, both)
    }

    /// The target coordinates of an index map at the point `cx` describes. With `prove`,
    /// coordinates in range by [`in_range`] are not checked (nor need a guard before a load).
    fn map_target(
        &mut self,
        map: &crate::op::IndexMap,
        mut cx: IdxCx<'_>,
        prove: bool,
    ) -> Result<Mapped, usize> {
        let mut valid: Option<V> = None;
        let mut target = Vec::with_capacity(map.exprs.len());
        let mut checked = Vec::with_capacity(map.exprs.len());
        for (a, e) in map.exprs.iter().enumerate() {
            let t = self.index_expr(e, &mut cx)?;
            let extent = cx.target_dims[a];
            let check = !(prove && in_range(e, extent, cx.iter_dims, cx.target_dims));
            if check {
                valid = Some(self.in_bounds(valid, t, extent));
            }
            target.push(t);
            checked.push(check);
        }
        for c in &map.conds {
            let t = self.index_expr(c, &mut cx)?;
            let zero = self.ci(0);
            let ok = self.ibin(BinaryOp::Eq, t, zero);
            valid = Some(self.and(valid, ok));
        }
        Ok(Mapped {
            target,
            valid,
            checked,
        })
    }

    /// The target coordinates made safe to read: `where(valid, t, 0)` for each checked one (the
    /// others are in range already, so the address is in range whatever `valid` says). When the
    /// target is empty every coordinate is checked ([`in_range`]) and the address is 0, which
    /// every buffer holds (backends allocate at least one element).
    fn safe_target(&mut self, m: &Mapped) -> Vec<V> {
        let Some(valid) = m.valid else {
            return m.target.clone();
        };
        let zero = self.ci(0);
        m.target
            .iter()
            .zip(&m.checked)
            .map(|(&t, &c)| {
                if c {
                    self.push(Inst::Where(valid, t, zero), DType::I64)
                } else {
                    t
                }
            })
            .collect()
    }

    // ---- evaluating graph nodes at coordinates ----

    /// The value of node `k` at `coords` (one i64 value per axis of the node).
    fn eval(&mut self, k: usize, coords: &[V]) -> Result<V, usize> {
        let key = (k, coords.to_vec());
        if let Some(&v) = self.eval_memo.get(&key) {
            return Ok(v);
        }
        let v = self.eval_uncached(k, coords)?;
        self.eval_memo.insert(key, v);
        Ok(v)
    }

    fn eval_uncached(&mut self, k: usize, coords: &[V]) -> Result<V, usize> {
        let g = self.g;
        let node = g.node(NodeId(k as u32));
        let dt = node.dtype;
        if let Some(&p) = self.phase_of_node.get(&k) {
            // An absorbed reduction: its value for this outer iteration, if the access is
            // exactly at the outer loop indices.
            let want: Vec<V> = (0..self.rows.outer.len())
                .map(|j| self.push(Inst::LoopIdx(j), DType::I64))
                .collect();
            let got: Vec<V> = coords
                .iter()
                .zip(node.shape.dims())
                .filter(|(_, d)| **d != 1)
                .map(|(c, _)| *c)
                .collect();
            let want: Vec<V> = want
                .into_iter()
                .zip(&self.rows.outer)
                .filter(|(_, d)| **d != 1)
                .map(|(v, _)| v)
                .collect();
            if got != want {
                return Err(k);
            }
            return Ok(self.push(Inst::PhaseResult(p), dt));
        }
        if matches!(node.op, Op::Input { .. }) || self.is_root[k] {
            let b = self.buffer(buf_of(g, NodeId(k as u32)), NodeId(k as u32), false);
            let off = self.ravel(coords, node.shape.dims());
            return Ok(self.push(
                Inst::Load {
                    buf: b,
                    offset: off,
                },
                dt,
            ));
        }
        let inputs: Vec<usize> = node.inputs.iter().map(|i| i.index()).collect();
        Ok(match &node.op {
            Op::Input { .. } => unreachable!("handled above"),
            // Bools stay compile-time (they steer selects); other constants are runtime
            // parameters, so new values reuse the kernel.
            Op::Const(c) if c.dtype() == DType::Bool => self.push(Inst::Const(*c), dt),
            Op::Const(_) => {
                let p = self.param(Param::Const(NodeId(k as u32)));
                self.push(Inst::Param(p), dt)
            }
            Op::Index { axis } => {
                let c = coords[*axis];
                if dt == DType::I64 {
                    c
                } else {
                    self.push(Inst::Cast(dt, c), dt)
                }
            }
            Op::Random { dist, .. } => {
                let counter = self.ravel(coords, node.shape.dims());
                let seed_param = self.seed_param(k);
                self.push(
                    Inst::Random {
                        seed_param,
                        dist: *dist,
                        counter,
                    },
                    dt,
                )
            }
            Op::Unary(op) => {
                let a = self.eval(inputs[0], coords)?;
                self.push(Inst::Unary(*op, a), dt)
            }
            Op::Binary(op) => {
                let a = self.eval(inputs[0], coords)?;
                let b = self.eval(inputs[1], coords)?;
                self.push(Inst::Binary(*op, a, b), dt)
            }
            Op::Where => {
                let c = self.eval(inputs[0], coords)?;
                let a = self.eval(inputs[1], coords)?;
                let b = self.eval(inputs[2], coords)?;
                self.push(Inst::Where(c, a, b), dt)
            }
            Op::Cast(d) => {
                let a = self.eval(inputs[0], coords)?;
                self.push(Inst::Cast(*d, a), dt)
            }
            Op::BroadcastTo { axes } => {
                let c: Vec<V> = (0..coords.len())
                    .filter(|a| !axes.contains(a))
                    .map(|a| coords[a])
                    .collect();
                self.eval(inputs[0], &c)?
            }
            Op::Reshape | Op::Contiguous => {
                let src = g.node(node.inputs[0]);
                let (od, id) = (node.shape.dims(), src.shape.dims());
                let c = self.regroup(coords, od, id);
                self.eval(inputs[0], &c)?
            }
            Op::Reindex(map) => {
                let src_dims = g.node(node.inputs[0]).shape.dims().to_vec();
                let out_dims = node.shape.dims().to_vec();
                let cx = IdxCx::new(k, coords, &out_dims, &src_dims, &inputs);
                let m = self.map_target(map, cx, true)?;
                let safe = self.safe_target(&m);
                match m.valid {
                    None => self.eval(inputs[0], &safe)?,
                    Some(valid) => {
                        let v = self.eval(inputs[0], &safe)?;
                        let o = self.push(Inst::Const(map.overflow), dt);
                        self.push(Inst::Where(valid, v, o), dt)
                    }
                }
            }
            Op::Reduce { .. } | Op::ReindexReduce { .. } => {
                unreachable!("reductions are roots or absorbed phases")
            }
        })
    }

    /// Lowers an index expression to i64 SSA.
    fn index_expr(&mut self, e: &IndexExpr, cx: &mut IdxCx<'_>) -> Result<V, usize> {
        Ok(match e {
            IndexExpr::Const(c) => self.ci(*c),
            IndexExpr::Param(_) => {
                // Its value is data: a kernel parameter, read per launch by `size_values`.
                let p = self.param(Param::Index(NodeId(cx.node as u32), cx.next_param));
                cx.next_param += 1;
                self.push(Inst::Param(p), DType::I64)
            }
            IndexExpr::Idx(k) => cx.coords[*k],
            IndexExpr::IterDim(k) => self.size(cx.iter_dims[*k]),
            IndexExpr::TargetDim(k) => self.size(cx.target_dims[*k]),
            IndexExpr::Extra(j, ix) => {
                let extra = cx.inputs[1 + j];
                let edims = self.g.node(NodeId(extra as u32)).shape.dims().to_vec();
                let mut valid: Option<V> = None;
                let mut c = Vec::new();
                for (a, x) in ix.iter().enumerate() {
                    let t = self.index_expr(x, cx)?;
                    valid = Some(self.in_bounds(valid, t, edims[a]));
                    c.push(t);
                }
                let checked = vec![true; c.len()];
                let safe = self.safe_target(&Mapped {
                    target: c,
                    valid,
                    checked,
                });
                let raw = self.eval(extra, &safe)?;
                let as_i64 = if self.body[raw.0 as usize].1 == DType::I64 {
                    raw
                } else {
                    self.push(Inst::Cast(DType::I64, raw), DType::I64)
                };
                match valid {
                    Some(v) => {
                        let zero = self.ci(0);
                        self.push(Inst::Where(v, as_i64, zero), DType::I64)
                    }
                    None => as_i64,
                }
            }
            IndexExpr::Bin(op, a, b) => {
                let x = self.index_expr(a, cx)?;
                let y = self.index_expr(b, cx)?;
                let bop = match op {
                    IdxBin::Add => BinaryOp::Add,
                    IdxBin::Sub => BinaryOp::Sub,
                    IdxBin::Mul => BinaryOp::Mul,
                    IdxBin::Div => BinaryOp::Div,
                    IdxBin::Mod => BinaryOp::Mod,
                    IdxBin::Min => BinaryOp::Min,
                    IdxBin::Max => BinaryOp::Max,
                    IdxBin::Lt => BinaryOp::Lt,
                    IdxBin::Le => BinaryOp::Le,
                    IdxBin::Eq => BinaryOp::Eq,
                    IdxBin::Ne => BinaryOp::Ne,
                    IdxBin::And | IdxBin::Or => {
                        let zero = self.ci(0);
                        let xa = self.ibin(BinaryOp::Ne, x, zero);
                        let ya = self.ibin(BinaryOp::Ne, y, zero);
                        let bo = if *op == IdxBin::And {
                            BinaryOp::And
                        } else {
                            BinaryOp::Or
                        };
                        let r = self.push(Inst::Binary(bo, xa.min(ya), xa.max(ya)), DType::Bool);
                        return Ok(self.push(Inst::Cast(DType::I64, r), DType::I64));
                    }
                };
                let r = self.ibin(bop, x, y);
                if bop.is_comparison() {
                    self.push(Inst::Cast(DType::I64, r), DType::I64)
                } else {
                    r
                }
            }
            IndexExpr::Select(c, a, b) => {
                let cv = self.index_expr(c, cx)?;
                let x = self.index_expr(a, cx)?;
                let y = self.index_expr(b, cx)?;
                let zero = self.ci(0);
                let cb = self.ibin(BinaryOp::Ne, cv, zero);
                self.push(Inst::Where(cb, x, y), DType::I64)
            }
        })
    }

    // ---- phases ----

    fn begin_phase(&mut self) {
        self.body.clear();
        self.memo.clear();
        self.eval_memo.clear();
    }

    fn end_phase(&mut self, inner: Vec<Extent>, kind: PhaseKind) {
        let body = std::mem::take(&mut self.body);
        self.phases.push(Phase { inner, body, kind });
    }

    /// The loop indices of the outer loops followed by those of the phase's inner loops.
    fn loop_coords(&mut self, n_inner: usize) -> Vec<V> {
        (0..self.rows.outer.len() + n_inner)
            .map(|j| self.push(Inst::LoopIdx(j), DType::I64))
            .collect()
    }

    /// A Reduce phase computing reduction `r` for the current outer iteration.
    fn reduce_phase(&mut self, r: usize) -> Result<(), usize> {
        let node = self.g.node(NodeId(r as u32));
        let Op::Reduce { op, axes, .. } = &node.op else {
            unreachable!("phases are reductions")
        };
        let x = node.inputs[0].index();
        let xd = self.g.node(node.inputs[0]).shape.dims().to_vec();
        let reduced: Vec<usize> = axes.iter().map(|&a| xd[a]).collect();
        self.begin_phase();
        let lc = self.loop_coords(reduced.len());
        let (outer_idx, inner_idx) = lc.split_at(self.rows.outer.len());
        // Input coordinates: kept axes from the outer loops (matching non-singleton extents in
        // order), reduced axes from the inner ones.
        let outer_non1: Vec<V> = outer_idx
            .iter()
            .zip(&self.rows.outer)
            .filter(|(_, d)| **d != 1)
            .map(|(v, _)| *v)
            .collect();
        let mut o = outer_non1.into_iter();
        let mut i = inner_idx.iter().copied();
        let zero = self.ci(0);
        let mut coords = Vec::with_capacity(xd.len());
        for (a, &d) in xd.iter().enumerate() {
            let c = if axes.contains(&a) {
                i.next()
            } else if d == 1 {
                Some(zero)
            } else {
                o.next()
            };
            coords.push(c.ok_or(r)?);
        }
        if o.next().is_some() {
            return Err(r);
        }
        let value = self.eval(x, &coords)?;
        let inner: Vec<Extent> = reduced.iter().map(|&d| self.extent(d)).collect();
        self.end_phase(
            inner,
            PhaseKind::Reduce {
                op: *op,
                value,
                stores: Vec::new(),
            },
        );
        self.phase_of_node.insert(r, self.phases.len() - 1);
        Ok(())
    }

    fn build(&mut self, k: usize, absorbed: &[usize]) -> Result<(), usize> {
        let outer_dims = self.rows.outer.clone();
        self.outer = outer_dims.iter().map(|&d| self.extent(d)).collect();
        for &r in absorbed {
            self.reduce_phase(r)?;
        }
        let g = self.g;
        let node = g.node(NodeId(k as u32));
        let dt = node.dtype;
        let out = self.buffer(BufRef::Node(NodeId(k as u32)), NodeId(k as u32), true);
        match &node.op {
            Op::Reduce { op, axes, .. } => {
                // The root reduction itself: a Reduce phase, then store its result.
                let (op, axes) = (*op, axes.clone());
                let xd = g.node(node.inputs[0]).shape.dims().to_vec();
                let kept: Vec<usize> = (0..xd.len())
                    .filter(|a| !axes.contains(a))
                    .map(|a| xd[a])
                    .collect();
                let _ = op;
                self.reduce_phase(k)?;
                self.phase_of_node.remove(&k);
                self.begin_phase();
                let lc = self.loop_coords(0);
                let off = self.ravel(&lc, &kept);
                let v = self.push(Inst::PhaseResult(self.phases.len() - 1), dt);
                self.end_phase(
                    vec![],
                    PhaseKind::Store(vec![Store {
                        buf: out,
                        offset: off,
                        value: v,
                        mask: None,
                        combine: None,
                    }]),
                );
            }
            Op::ReindexReduce { op, map } => {
                let src = node.inputs[0].index();
                let in_dims = g.node(node.inputs[0]).shape.dims().to_vec();
                let out_dims = node.shape.dims().to_vec();
                let inputs: Vec<usize> = node.inputs.iter().map(|i| i.index()).collect();
                self.begin_phase();
                let coords = self.loop_coords(in_dims.len());
                let v = self.eval(src, &coords)?;
                let cx = IdxCx::new(k, &coords, &in_dims, &out_dims, &inputs);
                // Targets proven in range need no skip test (a convolution's col2im).
                let m = self.map_target(map, cx, true)?;
                let safe = self.safe_target(&m);
                let off = self.ravel(&safe, &out_dims);
                let valid = m.valid;
                let inner: Vec<Extent> = in_dims.iter().map(|&d| self.extent(d)).collect();
                self.end_phase(
                    inner,
                    PhaseKind::Store(vec![Store {
                        buf: out,
                        offset: off,
                        value: v,
                        mask: valid,
                        combine: Some(*op),
                    }]),
                );
                self.init.push((out, op.identity(dt)));
                // Loop 0 is iteration axis 0: its iterations may run on different threads when
                // distinct values of it write distinct elements (transposes, slices, pads...).
                self.parallel = map.disjoint_along(0);
            }
            _ => {
                // An element-wise root (possibly with absorbed reductions): store every element.
                let inner_dims = self.rows.inner.clone();
                self.begin_phase();
                let lc = self.loop_coords(inner_dims.len());
                // The root's coordinates: the loops cover its shape, modulo singleton axes.
                let nd = node.shape.dims().to_vec();
                let loop_dims: Vec<usize> = outer_dims.iter().chain(&inner_dims).copied().collect();
                let coords: Vec<V> = if loop_dims == nd {
                    lc.clone()
                } else {
                    self.map_singletons(&lc, &loop_dims, &nd)
                };
                let v = self.eval_root_value(k, &coords)?;
                let off = self.ravel(&coords, &nd);
                let inner: Vec<Extent> = inner_dims.iter().map(|&d| self.extent(d)).collect();
                self.end_phase(
                    inner,
                    PhaseKind::Store(vec![Store {
                        buf: out,
                        offset: off,
                        value: v,
                        mask: None,
                        combine: None,
                    }]),
                );
                // The store is at the root's own coordinates, one element per iteration of
                // the loops, and nothing else touches the root's buffer: what
                // `keep_across_phases` needs.
                if !absorbed.is_empty() {
                    keep_across_phases(&mut self.phases, &self.outer, &self.bufs);
                }
            }
        }
        Ok(())
    }

    /// The value a root computes (evaluating through its own op, not loading its buffer).
    fn eval_root_value(&mut self, k: usize, coords: &[V]) -> Result<V, usize> {
        self.is_root[k] = false;
        let r = self.eval(k, coords);
        self.is_root[k] = true;
        r
    }

    fn finish(self, k: usize) -> Step {
        let kernel = Kernel {
            bufs: self.bufs,
            n_sizes: self.size_params.len(),
            outer: self.outer,
            phases: self.phases,
            parallel: self.parallel,
        };
        Step::Kernel {
            kernel,
            bufs: self.buf_refs,
            sizes: self.size_params,
            init: self.init,
            root: NodeId(k as u32),
        }
    }
}

/// The least [`keep_cost`] of a value worth keeping across phases: a transcendental function,
/// a power, a random number or two divisions. Cheaper values (`x - max`) are recomputed: a
/// store and a load cost about as much.
const KEEP_MIN_COST: usize = 8;

/// Rough cost of computing one instruction once per element (for [`keep_across_phases`]).
fn keep_cost(inst: &Inst) -> usize {
    use crate::op::UnaryOp;
    match inst {
        Inst::Unary(u, _) if u.is_transcendental() => 20,
        Inst::Binary(BinaryOp::Pow, _, _) => 20,
        Inst::Random { .. } => 50,
        Inst::Unary(UnaryOp::Recip | UnaryOp::Sqrt, _)
        | Inst::Binary(BinaryOp::Div | BinaryOp::Mod, _, _) => 4,
        _ => 1,
    }
}

/// Structural identities of the instructions of a phase, in a table shared by all phases:
/// equal ids, equal values (at equal loop indices, for phases over the same loops). `outer`
/// are the kernel's outer extents. Up to the forms the builder leaves for the same index: the
/// index of a loop of extent 1 is 0, `a + 0`, `a - 0` and `a * 1` are `a`, `a * 0` is 0, and
/// the operands of commutative integer ops are unordered (a Reduce phase reads a `[1, n]` row
/// at `i`, the Store phase at `0 * n + i`).
fn intern(ph: &Phase, outer: &[Extent], table: &mut HashMap<(Inst, DType), usize>) -> Vec<usize> {
    let one_trip: Vec<bool> = outer
        .iter()
        .chain(&ph.inner)
        .map(|e| *e == Extent::Const(1))
        .collect();
    let mut own: Vec<usize> = Vec::with_capacity(ph.body.len());
    for (inst, d) in &ph.body {
        let zero = Inst::Const(Scalar::I64(0));
        let key = match inst {
            Inst::LoopIdx(l) if one_trip.get(*l) == Some(&true) => zero.clone(),
            _ => inst.map_operands(|v| V(own[v.0 as usize] as u32)),
        };
        let id_of = |c: i64| {
            table
                .get(&(Inst::Const(Scalar::I64(c)), DType::I64))
                .copied()
        };
        let (z, one) = (id_of(0), id_of(1));
        let same = match &key {
            Inst::Binary(op, a, b) if *d == DType::I64 => {
                let (a, b) = (Some(a.0 as usize), Some(b.0 as usize));
                match op {
                    BinaryOp::Add if a == z => b,
                    BinaryOp::Add | BinaryOp::Sub if b == z => a,
                    BinaryOp::Mul if a == one => b,
                    BinaryOp::Mul if b == one => a,
                    BinaryOp::Mul if a == z || b == z => z,
                    _ => None,
                }
            }
            _ => None,
        };
        let key = match key {
            Inst::Binary(op, a, b) if *d == DType::I64 && op.is_commutative() && b < a => {
                Inst::Binary(op, b, a)
            }
            k => k,
        };
        let id = match same {
            Some(id) => id,
            None => {
                let n = table.len();
                *table.entry((key, *d)).or_insert(n)
            }
        };
        own.push(id);
    }
    own
}

/// Per instruction of `ph`: whether it varies with an inner loop, and the [`keep_cost`] of what
/// it computes per element (the varying instructions it depends on, each counted once).
fn varying_costs(ph: &Phase, n_outer: usize) -> (Vec<bool>, Vec<usize>) {
    let n = ph.body.len();
    let mut closure: Vec<Vec<bool>> = Vec::with_capacity(n);
    let mut varies: Vec<bool> = Vec::with_capacity(n);
    for (i, (inst, _)) in ph.body.iter().enumerate() {
        let mut c = vec![false; n];
        c[i] = true;
        let mut v = matches!(inst, Inst::LoopIdx(l) if *l >= n_outer);
        for o in inst.operands() {
            let o = o.0 as usize;
            v |= varies[o];
            for (j, x) in closure[o].iter().enumerate() {
                c[j] |= *x;
            }
        }
        closure.push(c);
        varies.push(v);
    }
    let cost = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| closure[i][j] && varies[j])
                .map(|j| keep_cost(&ph.body[j].0))
                .sum()
        })
        .collect();
    (varies, cost)
}

/// The instructions `v` depends on (itself included), by index.
fn depends(ph: &Phase, v: V) -> Vec<bool> {
    let mut used = vec![false; ph.body.len()];
    let mut stack = vec![v.0 as usize];
    while let Some(j) = stack.pop() {
        if !used[j] {
            used[j] = true;
            stack.extend(ph.body[j].0.operands().iter().map(|o| o.0 as usize));
        }
    }
    used
}

/// Rebuilds `ph` with instruction `keep` replaced by a load of `buf` at `off` (an instruction
/// of `ph` that does not depend on `keep`): `off`'s instructions first, then every other
/// instruction still used, in order; the rest is dropped.
fn load_instead(ph: &mut Phase, keep: usize, off: V, buf: usize) {
    let n = ph.body.len();
    let first = depends(ph, off);
    let mut roots: Vec<V> = Vec::new();
    if let PhaseKind::Reduce { value, .. } = &ph.kind {
        roots.push(*value);
    }
    for st in ph.kind.stores() {
        roots.extend([st.offset, st.value]);
        roots.extend(st.mask);
    }
    let mut used = vec![false; n];
    let mut stack: Vec<usize> = roots.iter().map(|v| v.0 as usize).collect();
    while let Some(j) = stack.pop() {
        if !used[j] {
            used[j] = true;
            if j != keep {
                stack.extend(ph.body[j].0.operands().iter().map(|o| o.0 as usize));
            }
        }
    }
    let order: Vec<usize> = (0..n)
        .filter(|&j| first[j])
        .chain((0..n).filter(|&j| used[j] && !first[j]))
        .collect();
    let mut body: Vec<(Inst, DType)> = Vec::with_capacity(order.len());
    let mut renum: Vec<Option<V>> = vec![None; n];
    for j in order {
        let (inst, d) = &ph.body[j];
        let inst = if j == keep {
            Inst::Load {
                buf,
                offset: renum[off.0 as usize].expect("the offset comes first"),
            }
        } else {
            inst.map_operands(|o| renum[o.0 as usize].expect("operands precede"))
        };
        body.push((inst, *d));
        renum[j] = Some(V(body.len() as u32 - 1));
    }
    let get = |v: V| renum[v.0 as usize].expect("roots are used");
    let stores: Vec<Store> = ph
        .kind
        .stores()
        .iter()
        .map(|st| Store {
            buf: st.buf,
            offset: get(st.offset),
            value: get(st.value),
            mask: st.mask.map(get),
            combine: st.combine,
        })
        .collect();
    ph.kind = match &ph.kind {
        PhaseKind::Reduce { op, value, .. } => PhaseKind::Reduce {
            op: *op,
            value: get(*value),
            stores,
        },
        PhaseKind::Store(_) => PhaseKind::Store(stores),
    };
    ph.body = body;
}

/// Appends to `ph` (whose structural ids are `ids`) the instructions of `src` (ids `src_ids`)
/// that `v` depends on and `ph` lacks; returns `v`'s value in `ph`, or `None` when `v` reads a
/// phase result `ph` cannot (phase `p` or later), and then `ph` is left as it was.
fn copy_into(
    ph: &mut Phase,
    ids: &mut Vec<usize>,
    p: usize,
    src: &Phase,
    src_ids: &[usize],
    v: V,
) -> Option<V> {
    let need = depends(src, v);
    let mut map: Vec<Option<V>> = vec![None; src.body.len()];
    let (body_len, ids_len) = (ph.body.len(), ids.len());
    for j in (0..src.body.len()).filter(|&j| need[j]) {
        let got = match ids.iter().position(|id| *id == src_ids[j]) {
            Some(at) => V(at as u32),
            None => {
                let (inst, d) = &src.body[j];
                if matches!(inst, Inst::PhaseResult(q) if *q >= p) {
                    // Leave the phase as it was: no dead instructions in the kernel's text.
                    ph.body.truncate(body_len);
                    ids.truncate(ids_len);
                    return None;
                }
                let inst = inst.map_operands(|o| map[o.0 as usize].expect("operands precede"));
                ph.body.push((inst, *d));
                ids.push(src_ids[j]);
                V(ph.body.len() as u32 - 1)
            }
        };
        map[j] = Some(got);
    }
    map[v.0 as usize]
}

/// Computes a costly value once per element instead of once per phase.
///
/// A multi-phase kernel recomputes in later phases what an earlier one folded: softmax's
/// `exp(x - max)` is summed in one phase and divided by the sum in the next (and its gradient
/// needs it in three). When phases over the same inner loops compute the same value (the same
/// instructions over the same loop indices, sizes, loads and earlier phase results: equal as
/// expressions, so equal in value), the first of them, a Reduce phase, also stores it into the
/// element of the kernel's output that the last phase writes at that iteration; the later ones
/// load it from there instead of computing it, and the last phase then overwrites the element
/// with its own value. The value must have the output's dtype (so the round trip is exact).
/// One element holds one value: the one that saves the most is kept (its cost times the
/// phases that no longer compute it), if it is costlier than [`KEEP_MIN_COST`].
///
/// The caller guarantees that the last phase is a Store phase with one unmasked, plain store
/// whose offset is distinct for distinct iterations of the loops (the root's own coordinates;
/// so one iteration's kept value is not overwritten by another's before it is read), into a
/// buffer no phase loads or otherwise stores. `outer` are the kernel's outer extents.
fn keep_across_phases(phases: &mut [Phase], outer: &[Extent], bufs: &[BufParam]) {
    let n_outer = outer.len();
    let Some(last) = phases.len().checked_sub(1) else {
        return;
    };
    let st = match &phases[last].kind {
        PhaseKind::Store(stores) => match stores.as_slice() {
            [st] if st.mask.is_none() && st.combine.is_none() => st.clone(),
            _ => return,
        },
        PhaseKind::Reduce { .. } => return,
    };
    let touches = |ph: &Phase| {
        ph.body
            .iter()
            .any(|(i, _)| matches!(i, Inst::Load { buf, .. } if *buf == st.buf))
    };
    if phases.iter().any(touches)
        || phases[..last]
            .iter()
            .any(|ph| ph.kind.stores().iter().any(|s| s.buf == st.buf))
    {
        return;
    }
    let dt = bufs[st.buf].dtype;
    let mut table = HashMap::new();
    let mut ids: Vec<Vec<usize>> = phases
        .iter()
        .map(|ph| intern(ph, outer, &mut table))
        .collect();
    // The phases over the last phase's loops: earlier Reduce phases, and the last one.
    let over: Vec<usize> = (0..last)
        .filter(|&p| {
            phases[p].inner == phases[last].inner
                && matches!(phases[p].kind, PhaseKind::Reduce { .. })
        })
        .chain([last])
        .collect();
    let in_offset = depends(&phases[last], st.offset);
    let off_ids: Vec<usize> = (0..in_offset.len())
        .filter(|&j| in_offset[j])
        .map(|j| ids[last][j])
        .collect();
    // Per candidate value (structural id): the first phase computing it, how many later ones
    // do, and its cost.
    let mut seen: HashMap<usize, (usize, usize, usize)> = HashMap::new();
    for &p in &over {
        let (varies, cost) = varying_costs(&phases[p], n_outer);
        let mut here: Vec<usize> = Vec::new();
        for (i, (_, d)) in phases[p].body.iter().enumerate() {
            let id = ids[p][i];
            // Not the stored value itself (keeping it would only copy it), nor a part of the
            // offset (the load of the kept value needs the offset first).
            if !varies[i]
                || *d != dt
                || p == last && i == st.value.0 as usize
                || off_ids.contains(&id)
                || here.contains(&id)
            {
                continue;
            }
            here.push(id);
            seen.entry(id)
                .and_modify(|e| e.1 += 1)
                .or_insert((p, 0, cost[i]));
        }
    }
    let Some((id, first)) = seen
        .iter()
        .filter(|(_, (p, later, cost))| *p != last && *later > 0 && *cost >= KEEP_MIN_COST)
        .max_by_key(|(id, (_, later, cost))| (cost * later, std::cmp::Reverse(**id)))
        .map(|(id, (p, _, _))| (*id, *p))
    else {
        return;
    };
    // The first phase stores the value at the last phase's offset (computing the offset too:
    // index arithmetic over loop indices and sizes, the same in every phase over these loops).
    let (head, tail) = phases.split_at_mut(last);
    let (last_ph, last_ids) = (&tail[0], ids[last].clone());
    let Some(off) = copy_into(
        &mut head[first],
        &mut ids[first],
        first,
        last_ph,
        &last_ids,
        st.offset,
    ) else {
        return;
    };
    let value = V(ids[first]
        .iter()
        .position(|x| *x == id)
        .expect("the first phase computes the value") as u32);
    let PhaseKind::Reduce { stores, .. } = &mut head[first].kind else {
        unreachable!("the first phase is a Reduce phase")
    };
    stores.push(Store {
        buf: st.buf,
        offset: off,
        value,
        mask: None,
        combine: None,
    });
    // Every later phase computing it loads it instead.
    for &q in over.iter().filter(|&&q| q > first) {
        let Some(keep) = ids[q].iter().position(|x| *x == id) else {
            continue;
        };
        let off = if q == last {
            st.offset
        } else {
            let (head, tail) = phases.split_at_mut(last);
            match copy_into(&mut head[q], &mut ids[q], q, &tail[0], &last_ids, st.offset) {
                Some(off) => off,
                None => unreachable!("the first phase could compute the offset, so can this"),
            }
        };
        load_instead(&mut phases[q], keep, off, st.buf);
    }
}

/// The size parameters of a kernel step for the graph `g` (whose shapes may differ from the
/// graph the schedule was built for, as long as [`plan_key`] is the same).
pub fn size_values(g: &Graph, sizes: &[Param]) -> Vec<i64> {
    sizes
        .iter()
        .map(|p| match *p {
            Param::Extent(n, a) => g.node(n).shape.dims()[a] as i64,
            Param::Seed(n) => match g.node(n).op {
                Op::Random { seed, .. } => seed as i64,
                _ => 0,
            },
            Param::Const(n) => match g.node(n).op {
                Op::Const(c) => crate::kernel::param_bits(c),
                _ => 0,
            },
            Param::Index(n, j) => map_param(g, n, j),
        })
        .collect()
}

/// Runs a schedule with [`crate::kernel::interpret`]: the executable meaning of fusion, for
/// tests. Returns one buffer per graph output.
pub fn run_interpreted(
    g: &Graph,
    s: &Schedule,
    inputs: &[&crate::buffer::HostData],
) -> Vec<crate::buffer::HostData> {
    run_steps(g, s, inputs, &mut |kernel, args, sizes, extent| {
        crate::kernel::interpret(kernel, args, sizes, 0..extent)
    })
}

/// Executes one kernel step: `(kernel, args, sizes, split_extent)`; leaves results in `args`.
pub type KernelRunner<'a> =
    dyn FnMut(&crate::kernel::Kernel, &mut [crate::buffer::HostData], &[i64], i64) + 'a;

/// Runs a schedule on host buffers, executing each kernel step with `run_kernel(kernel, args,
/// sizes, split_extent)` (which must leave the kernel's results in `args`); aliases and
/// contractions are handled here (contractions with
/// [`crate::contraction::gemm_reference`]). Buffers hold at least one element, as the kernel
/// IR requires. Returns one buffer per graph output.
pub fn run_steps(
    g: &Graph,
    s: &Schedule,
    inputs: &[&crate::buffer::HostData],
    run_kernel: &mut KernelRunner<'_>,
) -> Vec<crate::buffer::HostData> {
    use crate::buffer::HostData;
    let mut node_bufs: HashMap<NodeId, HostData> = HashMap::new();
    let fetch = |r: &BufRef, node_bufs: &HashMap<NodeId, HostData>| -> HostData {
        match r {
            BufRef::Input(slot) => inputs[*slot].clone(),
            BufRef::Node(n) => node_bufs[n].clone(),
        }
    };
    for step in &s.steps {
        match step {
            Step::Alias { node, of } => {
                let b = fetch(of, &node_bufs);
                node_bufs.insert(*node, b);
            }
            Step::Contraction { contraction, bufs } => {
                let out = g.node(contraction.output);
                let mut dst = HostData::zeros(out.dtype, out.shape.numel());
                let (lhs, rhs) = (fetch(&bufs[1], &node_bufs), fetch(&bufs[2], &node_bufs));
                let layout = contraction.layout(g);
                crate::contraction::gemm_reference(&layout, &mut dst, &lhs, &rhs);
                node_bufs.insert(contraction.output, dst);
            }
            Step::Kernel {
                kernel,
                bufs,
                sizes,
                init,
                ..
            } => {
                let mut args: Vec<HostData> = bufs
                    .iter()
                    .zip(&kernel.bufs)
                    .map(|(r, p)| match (r, p.output) {
                        (BufRef::Node(n), true) => {
                            HostData::zeros(p.dtype, g.node(*n).shape.numel().max(1))
                        }
                        _ => {
                            let b = fetch(r, &node_bufs);
                            if b.is_empty() {
                                HostData::zeros(p.dtype, 1)
                            } else {
                                b
                            }
                        }
                    })
                    .collect();
                for (p, v) in init {
                    let n = args[*p].len();
                    args[*p] = HostData::filled(*v, n);
                }
                let sv = size_values(g, sizes);
                let extent = match kernel.split_extent() {
                    Some(crate::kernel::Extent::Size(i)) => sv[i],
                    Some(crate::kernel::Extent::Const(c)) => c as i64,
                    None => 1,
                };
                run_kernel(kernel, &mut args, &sv, extent);
                for ((r, p), mut b) in bufs.iter().zip(&kernel.bufs).zip(args) {
                    if let (BufRef::Node(n), true) = (r, p.output) {
                        truncate(&mut b, g.node(*n).shape.numel());
                        node_bufs.insert(*n, b);
                    }
                }
            }
        }
    }
    s.outputs.iter().map(|r| fetch(r, &node_bufs)).collect()
}

fn truncate(b: &mut crate::buffer::HostData, n: usize) {
    use crate::buffer::HostData::*;
    match b {
        Bool(v) => v.truncate(n),
        U8(v) => v.truncate(n),
        I32(v) => v.truncate(n),
        I64(v) => v.truncate(n),
        F16(v) => v.truncate(n),
        BF16(v) => v.truncate(n),
        F32(v) => v.truncate(n),
        F64(v) => v.truncate(n),
    }
}
