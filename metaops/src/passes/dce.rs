//! Dead-code elimination.
//!
//! Requires: a verified graph. Guarantees: every node is an `Input` or is reached from an output;
//! ids are dense and the nodes keep their relative (topological) order. `Input` nodes stay even
//! when unused, so the graph reads the same input slots as before.

use super::{Pass, Rewrite, rebuild};
use crate::graph::Graph;
use crate::op::Op;

/// The dead-code elimination pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: &Graph) -> Option<Graph> {
        let mut live = vec![false; g.nodes.len()];
        for o in &g.outputs {
            live[o.index()] = true;
        }
        // Inputs come before their users, so one backward sweep marks every reachable node.
        for (k, n) in g.nodes.iter().enumerate().rev() {
            if live[k] || matches!(n.op, Op::Input { .. }) {
                live[k] = true;
                for i in &n.inputs {
                    live[i.index()] = true;
                }
            }
        }
        if live.iter().all(|&l| l) {
            return None;
        }
        Some(rebuild(g, |_, id, n| {
            if live[id.index()] {
                Rewrite::Keep(n)
            } else {
                Rewrite::Drop
            }
        }))
    }
}
