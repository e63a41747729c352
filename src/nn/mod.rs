//! Neural-network building blocks: [`functional`] holds PyTorch's `torch.nn.functional` ops,
//! each a graph of meta-ops (so each is differentiable through the meta-op rules and fuses
//! with its neighbours); the modules own parameters (`nn.Linear`, `nn.Sequential`, ...).
//!
//! A training loop (the README's):
//!
//! ```
//! use metajit::nn::{Activation, Linear, Module, Sequential, functional as F};
//! use metajit::optim::{Adam, AdamConfig, Optimizer};
//! # fn main() -> metajit::Result<()> {
//! let net = Sequential::new()
//!     .add(Linear::new(784, 128))
//!     .add(Activation::ReLU)
//!     .add(Linear::new(128, 10));
//! let mut opt = Adam::new(net.parameters(), AdamConfig { lr: 1e-3, ..Default::default() });
//! let (x, y) = (metajit::Tensor::randn([64, 784]), metajit::Tensor::from_vec(vec![3i64; 64], [64]));
//! let mut losses = Vec::new();
//! for _ in 0..10 {
//!     opt.zero_grad();
//!     let loss = F::cross_entropy(&net.forward(&x), &y, &Default::default());
//!     loss.backward();
//!     opt.step();
//!     opt.realize_with(&[&loss])?;
//!     losses.push(loss.item::<f32>()?);
//! }
//! assert!(losses[9] < losses[0]);
//! # Ok(())
//! # }
//! ```

mod conv;
pub mod functional;
mod modules;

pub use modules::{
    Activation, AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Embedding, Flatten,
    LayerNorm, Linear, MaxPool2d, Module, Sequential,
};

/// LeNet-5 as DESIGN §9 W6 has it, for `[N, 1, 28, 28]` images: conv 1→6 5×5, relu, max-pool 2,
/// conv 6→16 5×5, relu, max-pool 2, flatten, 256→120, relu, 120→84, relu, 84→10 — freshly
/// initialised (PyTorch's defaults, seeded by [`crate::manual_seed`]).
pub fn lenet5() -> Sequential {
    Sequential::new()
        .add(Conv2d::new(1, 6, 5))
        .add(Activation::ReLU)
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(6, 16, 5))
        .add(Activation::ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten::default())
        .add(Linear::new(256, 120))
        .add(Activation::ReLU)
        .add(Linear::new(120, 84))
        .add(Activation::ReLU)
        .add(Linear::new(84, 10))
}
