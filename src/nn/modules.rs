//! Modules: layers that own their parameters (`nn.Module` in PyTorch). A [`Module`] has a
//! forward pass, named parameters and buffers (`0.weight`, `1.running_mean`, ... in
//! PyTorch's naming, so state dicts line up), and a training flag.
//!
//! Parameters are leaves that require grad, realized at creation and initialised as
//! PyTorch's defaults from metajit's seeded generator ([`crate::manual_seed`]). Cloning a
//! parameter shares it: an optimizer holding the tensors updates the module's (through
//! [`Tensor::assign`]).

use std::sync::atomic::{AtomicBool, Ordering};

use super::functional as F;
use crate::tensor::Tensor;

/// A layer: a forward pass over owned parameters and buffers.
pub trait Module: Send + Sync {
    /// The output for input `x`.
    fn forward(&self, x: &Tensor) -> Tensor;

    /// The parameters with their names (`weight`, `bias`; a container prefixes its children's
    /// with their name and a dot).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// State that is not trained but saved (`running_mean`, `running_var`), with names.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Switches training mode (dropout active, batch statistics) on or off.
    fn set_training(&self, _training: bool) {}

    /// The parameters, in `named_parameters` order.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Moves every parameter and buffer to `device`, in place ([`Tensor::move_to`]); create
    /// the optimizer afterwards. On an error, the tensors moved so far stay moved.
    fn to(&self, device: crate::Device) -> crate::Result<()> {
        for (_, t) in self
            .named_parameters()
            .into_iter()
            .chain(self.named_buffers())
        {
            t.move_to(device)?;
        }
        Ok(())
    }

    /// Training mode (PyTorch's `train()`).
    fn train(&self) {
        self.set_training(true);
    }

    /// Evaluation mode (PyTorch's `eval()`).
    fn eval(&self) {
        self.set_training(false);
    }

    /// Every parameter and buffer with its name: what a state dict holds.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut s = self.named_parameters();
        s.extend(self.named_buffers());
        s
    }

    /// Saves [`state_dict`](Module::state_dict) as a safetensors file (PyTorch's names and
    /// layouts).
    ///
    /// # Errors
    /// When the file cannot be written, or computing a value fails.
    fn save(&self, path: &std::path::Path) -> crate::Result<()> {
        let state = self.state_dict();
        let named: Vec<(&str, &Tensor)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
        crate::io::save_safetensors(path, &named)
    }

    /// Loads every parameter and buffer from a safetensors file, strictly (PyTorch's
    /// `load_state_dict(strict=True)`): a missing key, an unexpected key, or a wrong shape or
    /// dtype is an error listing every problem, and then nothing is changed. Values are given
    /// through [`Tensor::assign`], so parameters stay leaves that require grad, and optimizers
    /// holding them see the loaded values.
    ///
    /// # Errors
    /// As [`crate::io::load_into`].
    fn load_state_dict(&self, path: &std::path::Path) -> crate::Result<()> {
        let state = self.state_dict();
        let named: Vec<(&str, &Tensor)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
        crate::io::load_into(&named, path)
    }
}

/// `weight` and the optional `bias`, named as PyTorch names them.
fn weight_and_bias(weight: &Tensor, bias: Option<&Tensor>) -> Vec<(String, Tensor)> {
    let mut p = vec![("weight".to_string(), weight.clone())];
    if let Some(b) = bias {
        p.push(("bias".to_string(), b.clone()));
    }
    p
}

/// A parameter: `value` realized, detached, marked as requiring grad.
fn parameter(value: Tensor) -> Tensor {
    if let Err(e) = value.realize() {
        panic!("initialising a parameter failed: {e}");
    }
    value.detach().requires_grad_(true)
}

/// Uniform in `[-bound, bound)`.
fn uniform(shape: &[usize], bound: f64) -> Tensor {
    Tensor::rand(shape.to_vec()) * (2.0 * bound) - bound
}

/// `y = x·Wᵀ + b` (PyTorch's `nn.Linear`): `weight` `[out, in]` and `bias` `[out]` uniform in
/// `±1/√in` (kaiming-uniform with a = √5, and the fan-in bound for the bias).
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, when the layer has one.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer from `in_features` to `out_features`, with a bias.
    pub fn new(in_features: usize, out_features: usize) -> Linear {
        Linear::with_bias(in_features, out_features, true)
    }

    /// A layer with or without a bias.
    pub fn with_bias(in_features: usize, out_features: usize, bias: bool) -> Linear {
        let bound = 1.0 / (in_features.max(1) as f64).sqrt();
        Linear {
            weight: parameter(uniform(&[out_features, in_features], bound)),
            bias: bias.then(|| parameter(uniform(&[out_features], bound))),
        }
    }
}

impl Module for Linear {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }
}

/// 2-D convolution (PyTorch's `nn.Conv2d`): weight `[O, C / groups, KH, KW]` and bias `[O]`
/// uniform in `±1/√(C / groups · KH · KW)` (kaiming-uniform with a = √5, and the fan-in bound).
pub struct Conv2d {
    /// `[out_channels, in_channels / groups, KH, KW]`.
    pub weight: Tensor,
    /// `[out_channels]`, when the layer has one.
    pub bias: Option<Tensor>,
    /// Stride per spatial axis.
    pub stride: (usize, usize),
    /// Zero padding per spatial axis.
    pub padding: (usize, usize),
    /// Dilation per spatial axis.
    pub dilation: (usize, usize),
    /// Channel groups.
    pub groups: usize,
}

impl Conv2d {
    /// A convolution with a square `kernel`, stride 1, no padding, one group, a bias; set the
    /// public fields (or use [`Conv2d::with`]) for the rest.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Conv2d {
        Conv2d::with(
            in_channels,
            out_channels,
            (kernel, kernel),
            (1, 1),
            (0, 0),
            (1, 1),
            1,
            true,
        )
    }

    /// A convolution with every option.
    ///
    /// # Panics
    /// When the channels are not divisible by `groups`.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    pub fn with(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
        bias: bool,
    ) -> Conv2d {
        if groups == 0
            || !in_channels.is_multiple_of(groups)
            || !out_channels.is_multiple_of(groups)
        {
            panic!(
                "bad arguments to Conv2d: {in_channels} in and {out_channels} out channels are not divisible by {groups} groups"
            );
        }
        let fan_in = in_channels / groups * kernel.0 * kernel.1;
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        Conv2d {
            weight: parameter(uniform(
                &[out_channels, in_channels / groups, kernel.0, kernel.1],
                bound,
            )),
            bias: bias.then(|| parameter(uniform(&[out_channels], bound))),
            stride,
            padding,
            dilation,
            groups,
        }
    }
}

impl Module for Conv2d {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        F::conv2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }
}

/// Transposed 2-D convolution (PyTorch's `nn.ConvTranspose2d`): weight
/// `[C, O / groups, KH, KW]` and bias `[O]` uniform in `±1/√(O / groups · KH · KW)` (PyTorch
/// computes the kaiming-uniform fan-in from the weight's second axis, which here holds output
/// channels).
///
/// ```
/// use metajit::{Tensor, nn::{ConvTranspose2d, Module}};
/// let up = ConvTranspose2d::with(4, 2, (3, 3), (2, 2), (1, 1), (1, 1), 1, true, (1, 1));
/// assert_eq!(up.weight.dims(), &[4, 2, 3, 3]);
/// // (5 - 1)·2 - 2 + 2 + 1 + 1 = 10: stride 2 with output padding 1 doubles the extent.
/// assert_eq!(up.forward(&Tensor::zeros([1, 4, 5, 5])).dims(), &[1, 2, 10, 10]);
/// ```
pub struct ConvTranspose2d {
    /// `[in_channels, out_channels / groups, KH, KW]`.
    pub weight: Tensor,
    /// `[out_channels]`, when the layer has one.
    pub bias: Option<Tensor>,
    /// Stride per spatial axis.
    pub stride: (usize, usize),
    /// Padding per spatial axis (cropped from the output).
    pub padding: (usize, usize),
    /// Extra extent added at the end of each spatial axis.
    pub output_padding: (usize, usize),
    /// Channel groups.
    pub groups: usize,
    /// Dilation per spatial axis.
    pub dilation: (usize, usize),
}

impl ConvTranspose2d {
    /// A transposed convolution with a square `kernel`, stride 1, no padding, one group, a
    /// bias; set the public fields (or use [`ConvTranspose2d::with`]) for the rest.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> ConvTranspose2d {
        ConvTranspose2d::with(
            in_channels,
            out_channels,
            (kernel, kernel),
            (1, 1),
            (0, 0),
            (0, 0),
            1,
            true,
            (1, 1),
        )
    }

    /// A transposed convolution with every option, in PyTorch's argument order.
    ///
    /// # Panics
    /// When the channels are not divisible by `groups`.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    pub fn with(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        output_padding: (usize, usize),
        groups: usize,
        bias: bool,
        dilation: (usize, usize),
    ) -> ConvTranspose2d {
        if groups == 0
            || !in_channels.is_multiple_of(groups)
            || !out_channels.is_multiple_of(groups)
        {
            panic!(
                "bad arguments to ConvTranspose2d: {in_channels} in and {out_channels} out channels are not divisible by {groups} groups"
            );
        }
        let fan_in = out_channels / groups * kernel.0 * kernel.1;
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        ConvTranspose2d {
            weight: parameter(uniform(
                &[in_channels, out_channels / groups, kernel.0, kernel.1],
                bound,
            )),
            bias: bias.then(|| parameter(uniform(&[out_channels], bound))),
            stride,
            padding,
            output_padding,
            groups,
            dilation,
        }
    }
}

impl Module for ConvTranspose2d {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        F::conv_transpose2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }
}

/// Max pooling (PyTorch's `nn.MaxPool2d`): a square `kernel`, stride = kernel by default.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d {
    /// The window.
    pub kernel: (usize, usize),
    /// The stride (the kernel when `None`).
    pub stride: Option<(usize, usize)>,
    /// Padding (read as -inf).
    pub padding: (usize, usize),
    /// Dilation.
    pub dilation: (usize, usize),
    /// Whether partial windows at the end count.
    pub ceil_mode: bool,
}

impl MaxPool2d {
    /// Pooling over `kernel × kernel` windows with stride `kernel`.
    pub fn new(kernel: usize) -> MaxPool2d {
        MaxPool2d {
            kernel: (kernel, kernel),
            stride: None,
            padding: (0, 0),
            dilation: (1, 1),
            ceil_mode: false,
        }
    }
}

impl Module for MaxPool2d {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        F::max_pool2d(
            x,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
        )
    }
}

/// Average pooling (PyTorch's `nn.AvgPool2d`): a square `kernel`, stride = kernel by default,
/// `count_include_pad` on.
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d {
    /// The window.
    pub kernel: (usize, usize),
    /// The stride (the kernel when `None`).
    pub stride: Option<(usize, usize)>,
    /// Zero padding.
    pub padding: (usize, usize),
    /// Whether partial windows at the end count.
    pub ceil_mode: bool,
    /// Whether the divisor counts the padding.
    pub count_include_pad: bool,
}

impl AvgPool2d {
    /// Pooling over `kernel × kernel` windows with stride `kernel`.
    pub fn new(kernel: usize) -> AvgPool2d {
        AvgPool2d {
            kernel: (kernel, kernel),
            stride: None,
            padding: (0, 0),
            ceil_mode: false,
            count_include_pad: true,
        }
    }
}

impl Module for AvgPool2d {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        F::avg_pool2d(
            x,
            self.kernel,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
        )
    }
}

/// An element-wise activation as a module.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    ReLU,
    /// GELU (exact, erf form).
    GELU,
    /// `x·sigmoid(x)`.
    SiLU,
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Activation::ReLU => x.relu(),
            Activation::GELU => x.gelu(),
            Activation::SiLU => x.silu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
        }
    }
}

/// Flattens axes `start_dim..=end_dim` into one (PyTorch's `nn.Flatten`, default 1..=-1).
#[derive(Clone, Copy, Debug)]
pub struct Flatten {
    /// The first axis flattened.
    pub start_dim: isize,
    /// The last axis flattened.
    pub end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten {
            start_dim: 1,
            end_dim: -1,
        }
    }
}

impl Module for Flatten {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.flatten(self.start_dim, self.end_dim)
    }
}

/// Dropout with probability `p`, active in training mode only.
pub struct Dropout {
    p: f64,
    training: AtomicBool,
}

impl Dropout {
    /// Dropout zeroing with probability `p`.
    ///
    /// # Panics
    /// When `p` is outside `[0, 1]`.
    #[track_caller]
    pub fn new(p: f64) -> Dropout {
        if !(0.0..=1.0).contains(&p) {
            panic!("bad argument to Dropout: p = {p} is outside [0, 1]");
        }
        Dropout {
            p,
            training: AtomicBool::new(true),
        }
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Tensor {
        F::dropout(x, self.p, self.training.load(Ordering::Relaxed))
    }
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

/// A lookup table of `num_embeddings` rows of `dim` values, initialised N(0, 1) (the
/// `padding_idx` row zeroed), as PyTorch's `nn.Embedding`.
pub struct Embedding {
    /// `[num_embeddings, dim]`.
    pub weight: Tensor,
    /// The row that reads as given but gets no gradient.
    pub padding_idx: Option<i64>,
}

impl Embedding {
    /// A table of `num_embeddings` rows of `dim` values.
    pub fn new(num_embeddings: usize, dim: usize, padding_idx: Option<i64>) -> Embedding {
        let mut w = Tensor::randn([num_embeddings, dim]);
        if let Some(p) = padding_idx {
            let row = Tensor::arange(0, num_embeddings as i64, 1)
                .eq(p)
                .unsqueeze(1);
            w = Tensor::where_(&row, 0.0, &w);
        }
        Embedding {
            weight: parameter(w),
            padding_idx,
        }
    }
}

impl Module for Embedding {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        F::embedding(x, &self.weight, self.padding_idx)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}

/// Layer normalisation over the trailing `normalized_shape` axes, with a weight (1) and a
/// bias (0) of that shape, as PyTorch's `nn.LayerNorm` (eps 1e-5).
pub struct LayerNorm {
    normalized_shape: Vec<usize>,
    /// The scale.
    pub weight: Tensor,
    /// The shift.
    pub bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Normalisation over trailing axes of `normalized_shape`.
    pub fn new(normalized_shape: &[usize]) -> LayerNorm {
        LayerNorm {
            normalized_shape: normalized_shape.to_vec(),
            weight: parameter(Tensor::ones(normalized_shape.to_vec())),
            bias: parameter(Tensor::zeros(normalized_shape.to_vec())),
            eps: 1e-5,
        }
    }
}

impl Module for LayerNorm {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        F::layer_norm(
            x,
            &self.normalized_shape,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
        )
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".to_string(), self.weight.clone()),
            ("bias".to_string(), self.bias.clone()),
        ]
    }
}

/// Batch normalisation over the channels of `[N, C, H, W]` input (PyTorch's
/// `nn.BatchNorm2d`: momentum 0.1, eps 1e-5, weight 1, bias 0, running mean 0 and variance
/// 1). In training the running statistics take new values lazily: realize the module's
/// buffers with the training step.
pub struct BatchNorm2d {
    /// The scale `[C]`.
    pub weight: Tensor,
    /// The shift `[C]`.
    pub bias: Tensor,
    /// The running mean `[C]` (a buffer).
    pub running_mean: Tensor,
    /// The running (unbiased) variance `[C]` (a buffer).
    pub running_var: Tensor,
    momentum: f64,
    eps: f64,
    training: AtomicBool,
}

impl BatchNorm2d {
    /// Batch normalisation of `num_features` channels.
    pub fn new(num_features: usize) -> BatchNorm2d {
        let realized = |t: Tensor| {
            if let Err(e) = t.realize() {
                panic!("initialising a buffer failed: {e}");
            }
            t
        };
        BatchNorm2d {
            weight: parameter(Tensor::ones([num_features])),
            bias: parameter(Tensor::zeros([num_features])),
            running_mean: realized(Tensor::zeros([num_features])),
            running_var: realized(Tensor::ones([num_features])),
            momentum: 0.1,
            eps: 1e-5,
            training: AtomicBool::new(true),
        }
    }
}

impl Module for BatchNorm2d {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        if x.rank() != 4 {
            panic!(
                "shape mismatch in BatchNorm2d: input {} must be [N, C, H, W]",
                x.shape()
            );
        }
        F::batch_norm(
            x,
            Some(&self.running_mean),
            Some(&self.running_var),
            Some(&self.weight),
            Some(&self.bias),
            self.training.load(Ordering::Relaxed),
            self.momentum,
            self.eps,
        )
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".to_string(), self.weight.clone()),
            ("bias".to_string(), self.bias.clone()),
        ]
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("running_mean".to_string(), self.running_mean.clone()),
            ("running_var".to_string(), self.running_var.clone()),
        ]
    }
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

/// Modules applied in order; children are named `0`, `1`, ... in parameter names.
///
/// ```
/// use metajit::nn::{Activation, Linear, Module, Sequential};
/// let mlp = Sequential::new()
///     .add(Linear::new(4, 8))
///     .add(Activation::ReLU)
///     .add(Linear::new(8, 2));
/// let names: Vec<String> = mlp.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
/// let y = mlp.forward(&metajit::Tensor::randn([3, 4]));
/// assert_eq!(y.dims(), &[3, 2]);
/// ```
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty sequence.
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a module.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, m: impl Module + 'static) -> Sequential {
        self.layers.push(Box::new(m));
        self
    }

    /// The number of modules.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// `prefix.name` for each entry.
fn prefixed(prefix: usize, v: Vec<(String, Tensor)>) -> impl Iterator<Item = (String, Tensor)> {
    v.into_iter()
        .map(move |(n, t)| (format!("{prefix}.{n}"), t))
}

impl Module for Sequential {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h);
        }
        h
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(k, l)| prefixed(k, l.named_parameters()))
            .collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(k, l)| prefixed(k, l.named_buffers()))
            .collect()
    }
    fn set_training(&self, training: bool) {
        for l in &self.layers {
            l.set_training(training);
        }
    }
}
