//! The Cranelift CPU backend: lowering of kernels to native code, and its runtime.

pub mod backend;
pub mod gemm;
pub mod jit;
pub mod lower;
pub mod math;
