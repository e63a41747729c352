//! The text form of a graph: one node a line, `%id = op operands attributes : dtype[shape]`,
//! then `return` with the outputs. `parse.rs` reads it back (`parse(print(g)) == g`).
//!
//! ```text
//! %0 = input #0 : f32[4, 3]
//! %1 = const 2.0 : f32[]
//! %2 = broadcast %1 axes=[0, 1] : f32[4, 3]
//! %3 = mul %0, %2 : f32[4, 3]
//! %4 = reindex %3 [i1, i0] overflow=0.0 : f32[3, 4]
//! %5 = reduce sum %4 axes=[1] keepdims : f32[3, 1]
//! return %5
//! ```

use std::fmt::{self, Write};

use crate::graph::{Graph, Node, NodeId};
use crate::op::{IndexMap, Op};

/// Writes one node's text (without a trailing newline).
pub fn write_node(f: &mut impl Write, id: NodeId, n: &Node) -> fmt::Result {
    write!(f, "{id} = {}", n.op.name())?;
    let operands = |f: &mut dyn Write| -> fmt::Result {
        for (k, i) in n.inputs.iter().enumerate() {
            f.write_str(if k == 0 { " " } else { ", " })?;
            write!(f, "{i}")?;
        }
        Ok(())
    };
    match &n.op {
        Op::Input { slot } => write!(f, " #{slot}")?,
        Op::Const(v) => write!(f, " {v}")?,
        Op::Index { axis } => write!(f, " axis={axis}")?,
        Op::Random { seed, dist } => write!(f, " {} seed={seed}", dist.name())?,
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_) | Op::Reshape | Op::Contiguous => {
            operands(f)?
        }
        Op::BroadcastTo { axes } => {
            operands(f)?;
            write!(f, " axes={axes:?}")?;
        }
        Op::Reindex(map) => {
            operands(f)?;
            write_map(f, map, true)?;
        }
        Op::Reduce { op, axes, keepdims } => {
            write!(f, " {}", op.name())?;
            operands(f)?;
            write!(f, " axes={axes:?}")?;
            if *keepdims {
                f.write_str(" keepdims")?;
            }
        }
        Op::ReindexReduce { op, map } => {
            write!(f, " {}", op.name())?;
            operands(f)?;
            write_map(f, map, false)?;
        }
    }
    write!(f, " : {}{}", n.dtype, n.shape)
}

fn write_map(f: &mut impl Write, map: &IndexMap, overflow: bool) -> fmt::Result {
    f.write_str(" [")?;
    for (k, e) in map.exprs.iter().enumerate() {
        if k > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{e}")?;
    }
    f.write_str("]")?;
    if !map.conds.is_empty() {
        f.write_str(" if [")?;
        for (k, e) in map.conds.iter().enumerate() {
            if k > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{e}")?;
        }
        f.write_str("]")?;
    }
    if overflow {
        write!(f, " overflow={}", map.overflow)?;
    }
    Ok(())
}

/// The whole graph as text.
pub fn print(g: &Graph) -> String {
    print_annotated(g, &[])
}

/// The graph as text with error messages under the nodes they concern (graph-level errors at
/// the end).
pub fn print_annotated(g: &Graph, errors: &[(Option<NodeId>, String)]) -> String {
    let mut s = String::new();
    for (k, n) in g.nodes.iter().enumerate() {
        let id = NodeId(k as u32);
        // Writing to a String cannot fail.
        let _ = write_node(&mut s, id, n);
        s.push('\n');
        for (_, msg) in errors.iter().filter(|(e, _)| *e == Some(id)) {
            let _ = writeln!(s, "  ; error: {msg}");
        }
    }
    s.push_str("return");
    for (k, o) in g.outputs.iter().enumerate() {
        s.push_str(if k == 0 { " " } else { ", " });
        let _ = write!(s, "{o}");
    }
    s.push('\n');
    for (_, msg) in errors.iter().filter(|(e, _)| e.is_none()) {
        let _ = writeln!(s, "  ; error: {msg}");
    }
    s
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}
