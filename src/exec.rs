//! The executor: turns the pending part of the unified graph into a meta-op [`Graph`], runs it
//! on the selected backend, and stores the results back into the tensors.
//!
//! Which nodes are computed: the requested tensors, plus every pending node that something
//! outside this graph still refers to (a tensor the user holds), so that a value the user kept
//! is computed once rather than again at its next use (Jittor does the same).

use std::collections::HashMap;
use std::sync::Arc;

use metajit_codegen::Backend;
use metajit_codegen::reference::Reference;
use metajit_metaops::passes::{self, PassCx, PassTrace};
use metajit_metaops::{Graph, HostData, Node, NodeId, Op};

use crate::config::{self, Device};
use crate::error::{Error, Result};
use crate::tensor::{State, Tensor};

/// Realizes `targets` together, as one graph.
pub(crate) fn realize(targets: &[&Tensor]) -> Result<()> {
    // 1. Collect the pending nodes reachable from the targets, inputs before users.
    let mut order: Vec<Tensor> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut stack: Vec<(Tensor, bool)> = targets.iter().map(|t| ((*t).clone(), false)).collect();
    while let Some((t, expanded)) = stack.pop() {
        if index.contains_key(&t.id()) {
            continue;
        }
        if expanded {
            index.insert(t.id(), order.len());
            order.push(t);
            continue;
        }
        let inputs: Vec<Tensor> = match &*t.0.lock() {
            State::Lazy { inputs, .. } => inputs.clone(),
            State::Realized(_) => Vec::new(),
        };
        stack.push((t, true));
        for i in inputs.into_iter().rev() {
            if !index.contains_key(&i.id()) {
                stack.push((i, false));
            }
        }
    }
    drop(stack);

    // 2. Build the meta-op graph: realized tensors become inputs.
    let mut g = Graph::new();
    let mut buffers: Vec<Arc<HostData>> = Vec::new();
    let mut in_graph_refs = vec![0usize; order.len()];
    let mut pending: Vec<usize> = Vec::new();
    for (k, t) in order.iter().enumerate() {
        let node = match &*t.0.lock() {
            State::Realized(d) => {
                buffers.push(d.clone());
                Node {
                    op: Op::Input {
                        slot: buffers.len() - 1,
                    },
                    inputs: vec![],
                    dtype: t.dtype(),
                    shape: t.shape().clone(),
                }
            }
            State::Lazy { op, inputs } => {
                pending.push(k);
                let ids = inputs
                    .iter()
                    .map(|i| {
                        let j = index[&i.id()];
                        in_graph_refs[j] += 1;
                        NodeId(j as u32)
                    })
                    .collect();
                Node {
                    op: op.clone(),
                    inputs: ids,
                    dtype: t.dtype(),
                    shape: t.shape().clone(),
                }
            }
        };
        g.push_unchecked(node);
    }
    if pending.is_empty() {
        return Ok(());
    }

    // 3. Outputs: the targets, and pending nodes referenced from outside this graph. Each
    //    tensor here is held once by `order`; the rest of its count is its consumers in this
    //    graph plus outside holders.
    let target_ids: Vec<u64> = targets.iter().map(|t| t.id()).collect();
    let outputs: Vec<usize> = pending
        .iter()
        .copied()
        .filter(|&k| {
            let t = &order[k];
            let external = Arc::strong_count(&t.0).saturating_sub(1 + in_graph_refs[k]);
            target_ids.contains(&t.id()) || external > 0
        })
        .collect();
    g.outputs = outputs.iter().map(|&k| NodeId(k as u32)).collect();

    // 4. Run.
    let results = run_graph(&g, &buffers)?;

    // 5. Store: each output becomes a buffer, dropping its references to its inputs.
    for (&k, data) in outputs.iter().zip(results) {
        *order[k].0.lock() = State::Realized(data);
    }
    Ok(())
}

/// Simplifies and runs a graph on the selected device.
fn run_graph(g: &Graph, buffers: &[Arc<HostData>]) -> Result<Vec<Arc<HostData>>> {
    let debug = config::debug();
    if debug >= 3 {
        eprintln!(
            "metajit: realizing graph of {} node(s):\n{g}",
            g.nodes.len()
        );
    }
    let trace = |t: &PassTrace<'_>| {
        eprintln!(
            "metajit: pass {} (round {}): {} in {:?}{}",
            t.pass,
            t.round,
            if t.changed { "changed" } else { "no change" },
            t.elapsed,
            if t.changed && debug >= 5 {
                format!("\n{}", t.graph)
            } else {
                String::new()
            }
        )
    };
    let cx = PassCx {
        verify: cfg!(debug_assertions),
        trace: if debug >= 4 { Some(&trace) } else { None },
    };
    let simplified = passes::simplify(g, &cx);
    let g = &simplified;
    if debug >= 3 {
        eprintln!(
            "metajit: after simplification, {} node(s):\n{g}",
            g.nodes.len()
        );
    }
    match config::try_device()? {
        // The reference interpreter is the only backend so far; `cpu` and `auto` use it until
        // the native backend lands.
        Device::Reference | Device::Cpu | Device::Auto => {
            let inputs: Vec<&Arc<HostData>> = buffers.iter().collect();
            Ok(Reference.run(g, &inputs)?)
        }
        Device::Cuda(n) => Err(Error::Device {
            device: format!("cuda:{n}"),
            reason: "the CUDA backend is not built yet".into(),
        }),
    }
}

/// Realizes several tensors as one graph (shared work is computed once).
pub fn realize_all(tensors: &[&Tensor]) -> Result<()> {
    realize(tensors)
}
