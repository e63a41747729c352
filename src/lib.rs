//! # metajit
//!
//! A deep-learning tensor framework in the style of Jittor: every high-level op lowers to about
//! twenty meta-operators, recorded lazily into one graph, simplified, fused and compiled.
//!
//! ```
//! use metajit::Tensor;
//!
//! let x = Tensor::from_vec(vec![-1.0f32, 0.5, 2.0, -3.0], [2, 2]);
//! let y = (&x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh(); // recorded, not run
//! let rows = y.sum(1, false);                                 // still lazy
//! println!("{rows}");                                         // runs the graph
//! assert_eq!(rows.shape().dims(), &[2]);
//! ```
//!
//! The pipeline, one crate or module per stage:
//! Tensor API (this crate: [`Tensor`], [`ops`]) → meta-op graph ([`metaops`]) → simplification
//! and fusion ([`metaops::passes`]) → code generation (`metajit-codegen`) → compiled-kernel
//! cache (`metajit-cache`) → runtime. Settings come from `METAJIT_*` variables or [`config`].
#![deny(missing_docs)]

pub mod autograd;
pub mod config;
pub mod data;
mod device;
mod dispatch;
mod display;
pub mod error;
mod exec;
pub mod io;
pub mod nn;
pub mod ops;
pub mod optim;
mod tensor;

pub use autograd::{is_grad_enabled, no_grad};
pub use config::{
    CacheMode, Device, Mode, set_cache_dir, set_cache_max_mb, set_cache_mode, set_debug,
    set_device, set_mode, set_threads,
};
pub use error::{Error, Result};
pub use exec::{
    DEFAULT_PLAN_CACHE_CAPACITY, GraphMode, Stats, cache_stats, kernel_cache_key, pending_graph,
    print_cache_stats, realize_all, replay_graph, run_graph_with, stats, synchronize,
};
#[doc(hidden)]
pub use exec::{plan_cache_len, set_plan_cache_capacity};
pub use metajit_cache as cache;
pub use metajit_metaops as metaops;
pub use metajit_metaops::{DType, Element, Shape};
pub use ops::creation::manual_seed;
pub use ops::shape::{PadWidth, ShapeArg};
pub use ops::{All, Dims, Operand};
pub use tensor::Tensor;
