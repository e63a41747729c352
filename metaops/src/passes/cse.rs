//! Common-subexpression elimination by hash-consing.
//!
//! Requires: a verified graph. Guarantees: no two nodes are equal (same op with all its
//! parameters, same inputs, dtype and shape), and every commutative binary node
//! ([`crate::op::BinaryOp::is_commutative`]) lists its inputs in ascending id order. Every op is
//! a pure function of its inputs — `Random` of its seed and element index, `Input` of its slot —
//! so equal nodes hold equal values and the later one is replaced by the earlier one.

use std::collections::HashMap;

use super::{Pass, Rewrite, changed, rebuild};
use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;

/// The common-subexpression elimination pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, g: &Graph) -> Option<Graph> {
        let mut seen: HashMap<Node, NodeId> = HashMap::new();
        let new = rebuild(g, |ng, _, mut n| {
            if let Op::Binary(op) = n.op
                && op.is_commutative()
            {
                n.inputs.sort();
            }
            if let Some(&id) = seen.get(&n) {
                return Rewrite::Alias(id);
            }
            // `Keep` appends the node, so it gets the next id.
            seen.insert(n.clone(), NodeId(ng.nodes.len() as u32));
            Rewrite::Keep(n)
        });
        changed(g, new)
    }
}
