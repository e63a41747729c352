//! Data sets and batching: an IDX reader ([`read_idx`]), MNIST ([`Mnist`]) and a seeded,
//! shuffling batch loader over realized tensors ([`DataLoader`]).
//!
//! Reading a file fails with an [`Error`](crate::Error) naming the file; misusing the loader
//! (a zero batch size, tensors of different lengths) panics at the caller.

mod idx;
mod loader;
mod mnist;

pub use idx::{IDX_U8, Idx, read_idx};
pub use loader::{Batches, DataLoader};
pub use mnist::{MNIST_MEAN, MNIST_SIDE, MNIST_STD, Mnist, MnistSplit};
