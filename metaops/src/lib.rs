//! metajit's meta-operator IR.
//!
//! The middle of the pipeline: the Tensor API records [`Op`]s into a [`Graph`]; passes
//! simplify it; fusion turns it into kernels for the code generators. The reference
//! interpreter ([`interp`]) is the executable definition of every op and the oracle of every
//! test.
//!
//! | module | holds |
//! |---|---|
//! | [`dtype`], [`shape`], [`buffer`] | element types and scalars, shapes, host buffers |
//! | [`op`], [`expr`] | the meta-operators and the index expressions of the reindex ops |
//! | [`graph`], [`mod@verify`], [`mod@print`], [`parse`] | the graph, its invariants, its text form |
//! | [`interp`] | the reference interpreter |
//! | [`kernel`] | the kernel IR (one fused kernel) and its interpreter |
//! | [`schedule`] | fusion: a graph becomes a schedule of kernels |
//! | [`contraction`] | recognising matrix products (`reduce(sum, mul(view, view))`) for GEMM |
//! | [`passes`] | simplification: constant folding, CSE, dead-node removal |
#![deny(missing_docs)]

pub mod buffer;
pub mod contraction;
pub mod dtype;
pub mod expr;
/// Random graphs and inputs for property tests and fuzzing (`gen` is a reserved word since
/// Rust 2024: write `r#gen`).
pub mod r#gen;
pub mod graph;
pub mod interp;
pub mod kernel;
pub mod op;
pub mod parse;
pub mod passes;
pub mod philox;
pub mod print;
pub mod schedule;
pub mod shape;
pub mod verify;

pub use buffer::HostData;
pub use dtype::{DType, Element, Scalar};
pub use expr::{IdxBin, IndexExpr};
pub use graph::{Graph, Node, NodeId};
pub use op::{BinaryOp, Distribution, IndexMap, Op, OpClass, ReduceOp, UnaryOp};
pub use shape::{Shape, broadcast_shapes};
pub use verify::{VerifyError, verify};
