//! The reference backend: host buffers, graphs run by the meta-op interpreter
//! ([`metajit_metaops::interp`]), one plain loop per op. Slow and obviously correct: the oracle
//! every other backend is tested against, and `METAJIT_DEVICE=reference` for debugging.

use std::sync::Arc;

use metajit_metaops::{DType, Graph, HostData, interp};

use crate::{Backend, BackendError};

/// The reference interpreter as a backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference;

impl Backend for Reference {
    type Buffer = Arc<HostData>;

    fn name(&self) -> &'static str {
        "reference"
    }

    fn upload(&self, data: &HostData) -> Result<Self::Buffer, BackendError> {
        Ok(Arc::new(data.clone()))
    }

    fn download(&self, buf: &Self::Buffer) -> Result<HostData, BackendError> {
        Ok(buf.as_ref().clone())
    }

    fn describe(&self, buf: &Self::Buffer) -> (DType, usize) {
        (buf.dtype(), buf.len())
    }

    fn run(&self, g: &Graph, inputs: &[&Self::Buffer]) -> Result<Vec<Self::Buffer>, BackendError> {
        let host: Vec<&HostData> = inputs.iter().map(|b| b.as_ref()).collect();
        Ok(interp::run(g, &host)?.into_iter().map(Arc::new).collect())
    }
}
