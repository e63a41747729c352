//! The reference interpreter (being written: see the contract below).

use crate::buffer::HostData;
use crate::graph::Graph;

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
}

/// Runs `g` on `inputs` (one buffer per input slot) and returns one buffer per output.
pub fn run(g: &Graph, inputs: &[&HostData]) -> Result<Vec<HostData>, InterpError> {
    let _ = (g, inputs);
    Ok(Vec::new())
}
