//! Trains LeNet-5 (DESIGN §9 W6: conv 1→6 5×5, relu, max-pool 2, conv 6→16 5×5, relu, max-pool 2,
//! flatten, 256→120→84→10) on the bundled MNIST, reports the test accuracy after each epoch and
//! saves the model as safetensors. Its last line is `test accuracy: NN.NN%`.
//!
//! ```sh
//! cargo run --release --example train_mnist -- --help
//! ```

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use metajit::data::Mnist;
use metajit::nn::{Module, Sequential, functional as F, lenet5};
use metajit::optim::{Adam, AdamConfig, CosineAnnealingLr, LrScheduler, Optimizer, Sgd, SgdConfig};
use metajit::{DType, Tensor};

const HELP: &str = "train_mnist: LeNet-5 on the bundled MNIST

usage: cargo run --release --example train_mnist -- [options]

options:
  --epochs N        training epochs (default 6)
  --batch-size N    minibatch size (default 64)
  --lr X            learning rate (default 0.05 for sgd, 0.001 for adam)
  --optimizer NAME  sgd (momentum 0.9) or adam (default sgd)
  --seed N          seed of the initialisation and the shuffling (default 0)
  --data DIR        the MNIST folder (default data/mnist)
  --limit N         train on the first N images only (default: all)
  --out PATH        where to save the model (default lenet5.safetensors)
  --help            this text";

struct Args {
    epochs: usize,
    batch: usize,
    lr: Option<f64>,
    adam: bool,
    seed: u64,
    data: PathBuf,
    limit: Option<usize>,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        epochs: 6,
        batch: 64,
        lr: None,
        adam: false,
        seed: 0,
        data: PathBuf::from("data/mnist"),
        limit: None,
        out: PathBuf::from("lenet5.safetensors"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{HELP}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
        let num = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: expected a non-negative integer, got {v:?}"))
        };
        match flag.as_str() {
            "--epochs" => a.epochs = num(&value)?,
            "--batch-size" => a.batch = num(&value)?.max(1),
            "--lr" => {
                a.lr = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--lr: expected a number, got {value:?}"))?,
                )
            }
            "--optimizer" => {
                a.adam = match value.as_str() {
                    "sgd" => false,
                    "adam" => true,
                    v => return Err(format!("--optimizer: expected sgd or adam, got {v:?}")),
                }
            }
            "--seed" => a.seed = num(&value)? as u64,
            "--data" => a.data = PathBuf::from(value),
            "--limit" => a.limit = Some(num(&value)?),
            "--out" => a.out = PathBuf::from(value),
            other => return Err(format!("unknown option {other} (see --help)")),
        }
    }
    Ok(a)
}

/// The share of `images` the model classifies right, in batches of 1000.
fn accuracy(net: &Sequential, images: &Tensor, labels: &Tensor) -> metajit::Result<f64> {
    net.eval();
    let n = images.dims()[0];
    let mut correct = 0.0;
    let mut start = 0;
    while start < n {
        let len = 1000.min(n - start);
        let x = images.narrow(0, start as isize, len);
        let y = labels.narrow(0, start as isize, len);
        let pred = metajit::no_grad(|| net.forward(&x)).argmax(1, false);
        correct += pred.eq(&y).cast(DType::F64).sum_all().item::<f64>()?;
        start += len;
    }
    net.train();
    Ok(correct / n as f64)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("train_mnist: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    metajit::manual_seed(args.seed);
    let mnist = Mnist::load(&args.data)?;
    let (mut train_x, mut train_y) = (mnist.train.images(), mnist.train.labels());
    if let Some(limit) = args.limit {
        let limit = limit.min(train_x.dims()[0]).max(1);
        train_x = train_x.narrow(0, 0, limit);
        train_y = train_y.narrow(0, 0, limit);
    }
    let (test_x, test_y) = (mnist.test.images(), mnist.test.labels());
    let loader = metajit::data::DataLoader::new(&train_x, &train_y, args.batch)?
        .shuffle(args.seed)
        .drop_last(true);
    let net = lenet5();
    let mut opt: Box<dyn Optimizer> = if args.adam {
        Box::new(Adam::new(
            net.parameters(),
            AdamConfig {
                lr: args.lr.unwrap_or(1e-3),
                ..Default::default()
            },
        ))
    } else {
        Box::new(Sgd::new(
            net.parameters(),
            SgdConfig {
                lr: args.lr.unwrap_or(0.05),
                momentum: 0.9,
                ..Default::default()
            },
        ))
    };
    let mut schedule = CosineAnnealingLr::new(opt.as_ref(), args.epochs.max(1), 0.0);
    let steps = loader.num_batches();
    println!(
        "LeNet-5 on {} training images, batch {}, {} epoch(s), {}",
        train_x.dims()[0],
        args.batch,
        args.epochs,
        if args.adam { "adam" } else { "sgd" }
    );
    let mut acc = accuracy(&net, &test_x, &test_y)?;
    let start = Instant::now();
    for epoch in 0..args.epochs {
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
            )?
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, args.epochs));
        let t0 = Instant::now();
        for (k, (x, y)) in loader.epoch(epoch as u64).enumerate() {
            opt.zero_grad();
            let loss = F::cross_entropy(&net.forward(&x), &y, &Default::default());
            loss.backward();
            opt.step();
            opt.realize_with(&[&loss])?;
            if k % 20 == 0 {
                let rate = ((k + 1) * args.batch) as f64 / t0.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "loss {:.4}, {rate:.0} samples/s",
                    loss.item::<f32>()?
                ));
            }
            bar.inc(1);
        }
        bar.finish();
        schedule.step(opt.as_mut());
        acc = accuracy(&net, &test_x, &test_y)?;
        println!("epoch {}: test accuracy {:.2}%", epoch + 1, 100.0 * acc);
    }
    let trained = start.elapsed();
    net.save(&args.out)?;
    println!(
        "trained in {:.1} s; saved {}",
        trained.as_secs_f64(),
        args.out.display()
    );
    println!("test accuracy: {:.2}%", 100.0 * acc);
    Ok(())
}
