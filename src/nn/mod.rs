//! Neural-network building blocks. [`functional`] holds PyTorch's `torch.nn.functional` ops,
//! each a graph of meta-ops, so each is differentiable through the meta-op rules and fuses
//! with its neighbours.

pub mod functional;
