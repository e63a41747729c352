//! The graph: a flat list of nodes in topological order, each with its op, inputs, dtype and
//! shape, and a list of outputs.
//!
//! Node ids are positions; every input of a node has a smaller id. [`Graph::push`] checks each
//! node against the rules of `verify.rs` as it is added, so a graph built through it is always
//! verified; [`crate::verify::verify`] re-checks a whole graph (after a pass, or one parsed from
//! text) and reports every error at once.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::dtype::{DType, Scalar};
use crate::expr::IndexExpr;
use crate::op::{IndexMap, Op};
use crate::shape::Shape;

/// The id of a node: its position in [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The position as usize.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One node: an op applied to earlier nodes, with the dtype and shape of its result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    /// The meta-operator.
    pub op: Op,
    /// The tensor inputs (for reindex ops: the source, then the extras).
    pub inputs: Vec<NodeId>,
    /// The result's dtype.
    pub dtype: DType,
    /// The result's shape.
    pub shape: Shape,
}

/// A graph of meta-ops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Graph {
    /// The nodes, in topological order.
    pub nodes: Vec<Node>,
    /// The nodes whose values the graph yields, in order.
    pub outputs: Vec<NodeId>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a node after checking it against the verifier's rules; returns its id.
    pub fn push(&mut self, node: Node) -> Result<NodeId, String> {
        crate::verify::check_node(self, &node)?;
        Ok(self.push_unchecked(node))
    }

    /// Adds a node without checking it (passes that rebuild graphs from verified nodes, the
    /// parser; call [`crate::verify::verify`] afterwards).
    pub fn push_unchecked(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(node);
        id
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Number of input slots the graph reads (one more than the largest `Input` slot).
    pub fn num_inputs(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Input { slot } => Some(slot + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// For each node, how many times it is used as an input or output.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for i in &n.inputs {
                uses[i.index()] += 1;
            }
        }
        for o in &self.outputs {
            uses[o.index()] += 1;
        }
        uses
    }

    /// A hash of the graph's structure: ops, wiring, dtypes, and ranks — but not extents,
    /// random seeds, (non-bool) constant values or the values of runtime index parameters
    /// ([`crate::expr::IndexExpr::Param`]), so graphs that differ only in those hash alike.
    /// Consistent with [`Graph::same_structure`]; stable within one build of metajit.
    pub fn structural_hash(&self) -> u64 {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        for n in &self.nodes {
            hash_op_structure(&n.op, &mut h);
            n.inputs.hash(&mut h);
            n.dtype.hash(&mut h);
            n.shape.rank().hash(&mut h);
        }
        self.outputs.hash(&mut h);
        h.0
    }

    /// Whether two graphs have the same structure, the equality that
    /// [`Graph::structural_hash`] hashes: the same ops node by node (up to random seeds,
    /// non-bool constant values and runtime index parameter values), inputs, dtypes, ranks and
    /// outputs. Extents are not compared.
    pub fn same_structure(&self, other: &Graph) -> bool {
        self.nodes.len() == other.nodes.len()
            && self.outputs == other.outputs
            && self.nodes.iter().zip(&other.nodes).all(|(a, b)| {
                a.inputs == b.inputs
                    && a.dtype == b.dtype
                    && a.shape.rank() == b.shape.rank()
                    && same_op_structure(&a.op, &b.op)
            })
    }
}

/// Whether a constant's value is a kernel parameter (all but bools, which steer selects; see
/// schedule.rs) rather than structure.
fn const_is_param(c: &Scalar) -> bool {
    c.dtype() != DType::Bool
}

fn hash_op_structure(op: &Op, h: &mut Fnv) {
    match op {
        Op::Random { dist, .. } => ("random", dist).hash(h),
        Op::Const(c) if const_is_param(c) => ("const", c.dtype()).hash(h),
        Op::Reindex(map) => {
            "reindex".hash(h);
            hash_map_structure(map, h);
        }
        Op::ReindexReduce { op, map } => {
            ("reindex_reduce", op).hash(h);
            hash_map_structure(map, h);
        }
        op => op.hash(h),
    }
}

fn hash_map_structure(map: &IndexMap, h: &mut Fnv) {
    map.overflow.hash(h);
    for list in [&map.exprs, &map.conds] {
        list.len().hash(h);
        list.iter().for_each(|e| e.hash_structure(h));
    }
}

fn same_op_structure(a: &Op, b: &Op) -> bool {
    match (a, b) {
        (Op::Random { dist: d, .. }, Op::Random { dist: e, .. }) => d == e,
        (Op::Const(c), Op::Const(d)) if const_is_param(c) || const_is_param(d) => {
            c.dtype() == d.dtype()
        }
        (Op::Reindex(m), Op::Reindex(n)) => same_map_structure(m, n),
        (Op::ReindexReduce { op: o, map: m }, Op::ReindexReduce { op: p, map: n }) => {
            o == p && same_map_structure(m, n)
        }
        (a, b) => a == b,
    }
}

fn same_map_structure(m: &IndexMap, n: &IndexMap) -> bool {
    let same_list = |a: &[IndexExpr], b: &[IndexExpr]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_structure(y))
    };
    m.overflow == n.overflow && same_list(&m.exprs, &n.exprs) && same_list(&m.conds, &n.conds)
}

/// FNV-1a: a small, deterministic hasher (std's `DefaultHasher` is not stable across releases).
pub(crate) struct Fnv(pub(crate) u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
