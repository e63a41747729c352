//! The graph: a flat list of nodes in topological order, each with its op, inputs, dtype and
//! shape, and a list of outputs.
//!
//! Node ids are positions; every input of a node has a smaller id. [`Graph::push`] checks each
//! node against the rules of `verify.rs` as it is added, so a graph built through it is always
//! verified; [`crate::verify::verify`] re-checks a whole graph (after a pass, or one parsed from
//! text) and reports every error at once.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::dtype::DType;
use crate::op::Op;
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
    /// random seeds or (non-bool) constant values, so graphs that differ only in those hash
    /// alike. Stable within one
    /// build of metajit.
    pub fn structural_hash(&self) -> u64 {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        for n in &self.nodes {
            match &n.op {
                Op::Random { dist, .. } => ("random", dist).hash(&mut h),
                // Constant values are kernel parameters, except bools (see schedule.rs).
                Op::Const(c) if c.dtype() != DType::Bool => ("const", c.dtype()).hash(&mut h),
                op => op.hash(&mut h),
            }
            n.inputs.hash(&mut h);
            n.dtype.hash(&mut h);
            n.shape.rank().hash(&mut h);
        }
        self.outputs.hash(&mut h);
        h.0
    }
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
