//! A training step is one realize: forward, backward and a hand-written SGD update of a
//! 784-128-10 MLP (cross-entropy written with logsumexp) realize as one schedule, and steady
//! state compiles nothing and schedules nothing new. One test function in its own binary: the
//! counters are process-wide.

mod common;

use common::counters;

use metajit::{Tensor, no_grad};

struct Mlp {
    params: Vec<Tensor>,
}

impl Mlp {
    fn new() -> Mlp {
        metajit::manual_seed(3);
        let init = |shape: [usize; 2], fan_in: usize| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            (Tensor::rand(shape) * (2.0 * bound) - bound).requires_grad_(true)
        };
        let params = vec![
            init([784, 128], 784),
            init([1, 128], 784).reshape([128]),
            init([128, 10], 128),
            init([1, 10], 128).reshape([10]),
        ];
        // Parameters are materialised at creation, as PyTorch's are.
        let refs: Vec<&Tensor> = params.iter().collect();
        metajit::realize_all(&refs).unwrap();
        let params = params
            .into_iter()
            .map(|p| p.detach().requires_grad_(true))
            .collect();
        Mlp { params }
    }

    fn loss(&self, x: &Tensor, labels: &Tensor) -> Tensor {
        let p = &self.params;
        let h = (x.matmul(&p[0]) + &p[1]).relu();
        let logits = h.matmul(&p[2]) + &p[3];
        let logp = &logits - logits.logsumexp(1, true);
        -logp.gather(1, &labels.unsqueeze(1)).mean_all()
    }

    /// One SGD step; returns the loss (realized with the new parameters, as one schedule).
    fn step(&self, x: &Tensor, labels: &Tensor, lr: f64) -> f32 {
        let loss = self.loss(x, labels);
        loss.backward();
        no_grad(|| {
            for p in &self.params {
                let g = p.grad().expect("every parameter gets a gradient");
                p.assign(&(p - &g * lr));
                p.zero_grad();
            }
        });
        let mut all: Vec<&Tensor> = vec![&loss];
        all.extend(self.params.iter());
        metajit::realize_all(&all).unwrap();
        loss.item::<f32>().unwrap()
    }
}

/// A learnable synthetic batch: the label is the argmax of 10 fixed projections of x.
fn batch(n: usize, seed: u64) -> (Tensor, Tensor) {
    metajit::manual_seed(seed);
    let x = Tensor::randn([n, 784]);
    metajit::manual_seed(99);
    let proj = Tensor::randn([784, 10]);
    let labels = x.matmul(&proj).argmax(1, false);
    metajit::realize_all(&[&x, &labels]).unwrap();
    (x, labels)
}

#[test]
fn an_mlp_training_step_is_one_schedule_and_steady_state_compiles_nothing() {
    metajit::set_mode(metajit::Mode::Compiled);
    metajit::set_cache_mode(metajit::CacheMode::Memory);
    let model = Mlp::new();
    let batches: Vec<(Tensor, Tensor)> = (0..10).map(|k| batch(64, 1000 + k)).collect();

    let before = counters();
    let first = model.step(&batches[0].0, &batches[0].1, 0.1);
    let after_first = counters();
    let kernels_per_step = after_first.0 - before.0;
    assert_eq!(
        after_first.2 - before.2,
        1,
        "the first step schedules one plan"
    );
    assert!(
        after_first.1 > before.1,
        "the first step compiles its kernels"
    );
    // 5 GEMMs (x·W1, h·W2, and backward hᵀ·dlogits, W2·dlogitsᵀ, xᵀ·dh) and 14 fused kernels:
    // the scatter of the label gradient; relu(x·W1 + b1) (the bias add and the relu mask are
    // recomputed where the backward pass needs them, not stored); the logsumexp's max, its
    // exp (read by the sum and by the softmax gradient) and its sum; the softmax gradient;
    // two bias gradients (column sums) and the relu gradient; four parameter updates; the
    // loss. (METAJIT_DEBUG=2 prints the schedule.)
    assert!(
        kernels_per_step <= 19,
        "one MLP training step ran {kernels_per_step} kernels"
    );

    let mut last = first;
    for (x, labels) in &batches[1..] {
        let c0 = counters();
        last = model.step(x, labels, 0.1);
        let c1 = counters();
        assert_eq!(c1.1 - c0.1, 0, "a steady-state step compiled kernels");
        assert_eq!(c1.2 - c0.2, 0, "a steady-state step scheduled a new plan");
        assert_eq!(c1.0 - c0.0, kernels_per_step, "the same kernels every step");
    }
    assert!(last.is_finite() && last < first, "loss {first} -> {last}");

    // Minibatches taken with narrow from one dataset: a new offset compiles nothing and
    // schedules nothing new (the offset is a kernel argument).
    let (data, targets) = batch(64 * 6, 77);
    let mut plans = None;
    for i in 0..6 {
        let x = data.narrow(0, (i * 64) as isize, 64);
        let labels = targets.narrow(0, (i * 64) as isize, 64);
        let c0 = counters();
        model.step(&x, &labels, 0.1);
        let c1 = counters();
        if i > 0 {
            assert_eq!(
                c1.1 - c0.1,
                0,
                "a minibatch at a new offset compiled kernels"
            );
            assert_eq!(
                c1.2 - c0.2,
                0,
                "a minibatch at a new offset scheduled a plan"
            );
            assert_eq!(Some(c1.0 - c0.0), plans, "the same kernels at every offset");
        }
        plans = Some(c1.0 - c0.0);
    }

    // A new batch size compiles nothing either.
    let (x, labels) = batch(40, 7);
    let c0 = counters();
    model.step(&x, &labels, 0.1);
    let c1 = counters();
    assert_eq!(c1.1 - c0.1, 0, "a new batch size compiled kernels");
    eprintln!("MLP 784-128-10 training step: {kernels_per_step} kernels; loss {first} -> {last}");
}
