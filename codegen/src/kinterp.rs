//! A backend that runs kernels on the kernel-IR interpreter ([`metajit_metaops::kernel::interpret`]).
//! Slow; it checks the executor and fusion independently of native code generation.

use metajit_metaops::contraction::GemmLayout;
use metajit_metaops::kernel::{Extent, Kernel};
use metajit_metaops::{DType, HostData};

use crate::buffer::Buffer;
use crate::{Backend, BackendError};

/// The kernel-IR interpreter as a backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelInterp;

impl Backend for KernelInterp {
    type Compiled = ();

    fn name(&self) -> &'static str {
        "kernel-interp"
    }

    fn compile(&self, _kernel: &Kernel) -> Result<(), BackendError> {
        Ok(())
    }

    fn launch(
        &self,
        _compiled: &(),
        kernel: &Kernel,
        bufs: &[&Buffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        // Work on host copies padded to at least one element, then write outputs back.
        let mut host: Vec<HostData> = bufs
            .iter()
            .map(|b| {
                let h = b.to_host();
                if h.is_empty() {
                    HostData::filled(b.get(0), 1)
                } else {
                    h
                }
            })
            .collect();
        let extent = match kernel.split_extent() {
            Some(Extent::Size(s)) => sizes[s],
            Some(Extent::Const(c)) => c as i64,
            None => 1,
        };
        metajit_metaops::kernel::interpret(kernel, &mut host, sizes, 0..extent);
        for ((b, h), p) in bufs.iter().zip(&host).zip(&kernel.bufs) {
            if p.output {
                let src = Buffer::from_host(h);
                let n = b.bytes().min(src.bytes());
                // SAFETY: `b` is an output buffer of this launch: the executor gives it to no
                // one else while the kernel runs, and both regions hold at least `n` bytes.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), b.as_mut_ptr(), n) };
            }
        }
        Ok(())
    }

    fn contraction(
        &self,
        layout: &GemmLayout,
        _dtype: DType,
        dst: &Buffer,
        lhs: &Buffer,
        rhs: &Buffer,
    ) -> Result<(), BackendError> {
        let mut out = dst.to_host();
        metajit_metaops::contraction::gemm_reference(
            layout,
            &mut out,
            &lhs.to_host(),
            &rhs.to_host(),
        );
        let src = Buffer::from_host(&out);
        // SAFETY: `dst` is the output of this step: nobody else reads or writes it meanwhile;
        // both hold `dst.bytes()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), dst.bytes()) };
        Ok(())
    }
}
