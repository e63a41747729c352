//! The native CPU backend: kernels compiled to machine code by Cranelift ([`super::jit`]),
//! contractions computed by the `gemm` crate ([`super::gemm`]).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use metajit_metaops::DType;
use metajit_metaops::contraction::GemmLayout;
use metajit_metaops::kernel::Kernel;

use super::jit::{self, CompileOptions, CompiledKernel};
use crate::buffer::Buffer;
use crate::{Backend, BackendError};

/// The Cranelift CPU backend.
#[derive(Debug)]
pub struct Cpu {
    threads: AtomicUsize,
    debug: AtomicU8,
}

impl Cpu {
    /// A backend using up to `threads` threads per kernel.
    pub fn new(threads: usize) -> Cpu {
        Cpu {
            threads: AtomicUsize::new(threads.max(1)),
            debug: AtomicU8::new(0),
        }
    }

    /// Sets the threads per kernel.
    pub fn set_threads(&self, n: usize) {
        self.threads.store(n.max(1), Ordering::Relaxed);
    }

    /// Sets the debug level: 4 prints each kernel's Cranelift IR when compiled, 5 also its
    /// disassembly.
    pub fn set_debug(&self, level: u8) {
        self.debug.store(level, Ordering::Relaxed);
    }
}

impl Backend for Cpu {
    type Compiled = CompiledKernel;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn compile(&self, kernel: &Kernel) -> Result<CompiledKernel, BackendError> {
        let debug = self.debug.load(Ordering::Relaxed);
        let opts = CompileOptions {
            clif: debug >= 4,
            disasm: debug >= 5,
            verify: cfg!(debug_assertions),
        };
        let c = jit::compile_with(kernel, &opts).map_err(|e| BackendError::Compile {
            backend: "cpu",
            message: e.to_string(),
            kernel: kernel.text(),
        })?;
        if let Some(clif) = c.clif() {
            eprintln!("metajit: Cranelift IR:\n{clif}");
        }
        if let Some(d) = c.disasm() {
            eprintln!("metajit: machine code:\n{d}");
        }
        Ok(c)
    }

    fn cache_identity(&self) -> String {
        jit::target_description()
    }

    fn artifact(&self, compiled: &CompiledKernel) -> Vec<u8> {
        compiled.code_bytes().to_vec()
    }

    unsafe fn load(&self, kernel: &Kernel, bytes: &[u8]) -> Result<CompiledKernel, BackendError> {
        // SAFETY: passed on from the caller (the same kernel's code for this target).
        unsafe { CompiledKernel::from_bytes(kernel, bytes) }.map_err(|e| BackendError::Device {
            backend: "cpu",
            message: format!("loading cached code: {e}"),
        })
    }

    fn launch(
        &self,
        compiled: &CompiledKernel,
        kernel: &Kernel,
        bufs: &[&Buffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        if bufs.len() != kernel.bufs.len()
            || bufs
                .iter()
                .zip(&kernel.bufs)
                .any(|(b, p)| b.dtype() != p.dtype)
        {
            return Err(BackendError::Device {
                backend: "cpu",
                message: format!(
                    "launch with buffers {bufs:?} for a kernel of {} parameters",
                    kernel.bufs.len()
                ),
            });
        }
        let ptrs: Vec<*mut u8> = bufs.iter().map(|b| b.as_mut_ptr()).collect();
        // SAFETY: the executor passes, for each parameter, a live buffer of its dtype (checked
        // above) sized from the same graph shapes that give `sizes` (the schedule's contract);
        // output buffers are fresh allocations nobody else holds during the launch, and inputs
        // are never written.
        unsafe { compiled.run(&ptrs, sizes, self.threads.load(Ordering::Relaxed)) };
        Ok(())
    }

    fn contraction(
        &self,
        layout: &GemmLayout,
        dtype: DType,
        dst: &Buffer,
        lhs: &Buffer,
        rhs: &Buffer,
    ) -> Result<(), BackendError> {
        let threads = self.threads.load(Ordering::Relaxed);
        // SAFETY: the layout was computed from the graph whose shapes sized these buffers
        // (dst: the output, written once per element; lhs/rhs: the operands' row-major
        // buffers); dst is a fresh allocation distinct from both operands.
        match dtype {
            DType::F32 => unsafe {
                super::gemm::gemm_f32(
                    dst.as_mut_ptr() as *mut f32,
                    lhs.as_ptr() as *const f32,
                    rhs.as_ptr() as *const f32,
                    layout,
                    threads,
                )
            },
            DType::F64 => unsafe {
                super::gemm::gemm_f64(
                    dst.as_mut_ptr() as *mut f64,
                    lhs.as_ptr() as *const f64,
                    rhs.as_ptr() as *const f64,
                    layout,
                    threads,
                )
            },
            d => {
                return Err(BackendError::Device {
                    backend: "cpu",
                    message: format!("no GEMM for dtype {d}"),
                });
            }
        }
        Ok(())
    }
}
