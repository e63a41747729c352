//! Neural-network building blocks: [`functional`] holds PyTorch's `torch.nn.functional` ops,
//! each a graph of meta-ops (so each is differentiable through the meta-op rules and fuses
//! with its neighbours); the modules own parameters (`nn.Linear`, `nn.Sequential`, ...).

mod conv;
pub mod functional;
mod modules;

pub use modules::{
    Activation, BatchNorm2d, Dropout, Embedding, Flatten, LayerNorm, Linear, Module, Sequential,
};
