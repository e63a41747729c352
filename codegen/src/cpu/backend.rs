//! The native CPU backend: kernels compiled to machine code by Cranelift ([`super::jit`]),
//! contractions computed by the `gemm` crate ([`super::gemm`]).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use metajit_metaops::contraction::GemmLayout;
use metajit_metaops::kernel::Kernel;
use metajit_metaops::{DType, HostData, Scalar};

use super::jit::{self, CompileOptions, CompiledKernel};
use crate::buffer::Buffer;
use crate::{Backend, BackendError, check};

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
    type Buffer = Buffer;

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

    fn alloc(&self, dtype: DType, numel: usize) -> Result<Buffer, BackendError> {
        Ok(Buffer::new(dtype, numel))
    }

    fn upload(&self, data: &HostData) -> Result<Buffer, BackendError> {
        Ok(Buffer::from_host(data))
    }

    fn download(&self, buf: &Buffer) -> Result<HostData, BackendError> {
        Ok(buf.to_host())
    }

    fn fill(&self, buf: &mut Buffer, value: Scalar) -> Result<(), BackendError> {
        buf.fill(value);
        Ok(())
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(()) // every launch returns when its work is done
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

    unsafe fn launch(
        &self,
        compiled: &CompiledKernel,
        kernel: &Kernel,
        bufs: &[&Buffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        check::launch_args(
            "cpu",
            compiled.params(),
            compiled.n_sizes(),
            kernel,
            bufs,
            sizes,
        )?;
        let ptrs: Vec<*mut u8> = bufs.iter().map(|b| b.as_mut_ptr()).collect();
        // SAFETY: `check::launch_args` verified that each buffer has its parameter's dtype and holds
        // exactly the elements its declared extents give for `sizes`, and that output buffers
        // are passed for no other parameter; the caller guarantees that the code keeps within
        // those extents and that nobody else touches the outputs meanwhile (`launch`'s
        // contract). Inputs are never written.
        unsafe { compiled.run(&ptrs, sizes, self.threads.load(Ordering::Relaxed)) };
        Ok(())
    }

    fn contraction(
        &self,
        layout: &GemmLayout,
        dtype: DType,
        dst: &mut Buffer,
        lhs: &Buffer,
        rhs: &Buffer,
    ) -> Result<(), BackendError> {
        check::contraction_args("cpu", layout, dtype, dst, lhs, rhs)?;
        let threads = self.threads.load(Ordering::Relaxed);
        // SAFETY: `check::contraction_args` verified that every offset the layout reaches is within
        // its buffer, of the buffer's dtype `dtype`, and that no element of dst is written
        // twice; dst is borrowed exclusively, so it is distinct from both operands and nobody
        // else touches it during the call.
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
            _ => unreachable!("check::contraction_args accepts f32 and f64 only"),
        }
        Ok(())
    }
}
