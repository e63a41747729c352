//! The reference path: whole graphs run by the meta-op interpreter
//! ([`metajit_metaops::interp`]), one plain loop per op. Slow and obviously correct: the oracle
//! every backend is tested against, and `METAJIT_DEVICE=reference` for debugging.

use metajit_metaops::{Graph, HostData, interp};

use crate::BackendError;
use crate::buffer::Buffer;

/// Runs a verified graph on the interpreter: one buffer per input slot in, one per output out.
pub fn run(g: &Graph, inputs: &[&Buffer]) -> Result<Vec<Buffer>, BackendError> {
    let host: Vec<HostData> = inputs.iter().map(|b| b.to_host()).collect();
    let refs: Vec<&HostData> = host.iter().collect();
    Ok(interp::run(g, &refs)?
        .iter()
        .map(Buffer::from_host)
        .collect())
}
