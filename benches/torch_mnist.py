#!/usr/bin/env python3
"""PyTorch eager baseline for `cargo run --release --example train_mnist`.

Trains the same LeNet-5 (conv 1->6 5x5, relu, max-pool 2, conv 6->16 5x5, relu, max-pool 2,
flatten, 256->120->84->10) with the example's default settings (SGD momentum 0.9, lr 0.05,
cosine annealing per epoch, batch 64, drop_last, shuffled) on the bundled MNIST, timing the
training loop (with the per-epoch test evaluation, as the example's "trained in" figure).

    python3 benches/torch_mnist.py [--epochs N] [--limit N] [--data DIR]
    python3 benches/torch_mnist.py --step-bench [--batch-size N] [--steps N] [--warmup N]
                                   [--warmup-seconds S]

Exits 0 with "torch: not installed" when torch cannot be imported, so scripts can call it
unconditionally. `--step-bench` instead times single training steps (median of `--steps`,
default 200, after untimed warm-up steps: at least `--warmup`, default 30, and at least
`--warmup-seconds`, default 2) of LeNet-5 at batch `--batch-size` on random data (SGD,
momentum 0.9), printing one line:
"torch LeNet-5 step b64: median X ms (N threads, torch V)". (The bench harness now times its
W6 rows, and every other workload, with benches/torch_workloads.py.) The warm-up has a time floor
because torch's first steps can take hundreds of ms each while its large libraries page in
(seen on a loaded machine with a cold page cache); a step count alone may end too early.
"""
import argparse
import gzip
import os
import struct
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch: not installed")
    sys.exit(0)


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data, split):
    images = idx(os.path.join(data, f"{split}-images-idx3-ubyte.gz"))
    labels = idx(os.path.join(data, f"{split}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    x = ((x - 0.1307) / 0.3081).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def accuracy(net, x, y):
    net.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(x), 1000):
            correct += (net(x[s : s + 1000]).argmax(1) == y[s : s + 1000]).sum().item()
    net.train()
    return correct / len(x)


def step_bench(batch, steps, warmup, warmup_seconds):
    net = lenet5()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        loss.item()

    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < warmup_seconds:
        step()
        done += 1
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"torch LeNet-5 step b{batch}: median {1e3 * times[len(times) // 2]:.3f} ms "
          f"({torch.get_num_threads()} threads, torch {torch.__version__})")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--data", default="data/mnist")
    p.add_argument("--step-bench", action="store_true")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--warmup-seconds", type=float, default=2.0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    if a.step_bench:
        step_bench(a.batch_size, max(a.steps, 1), max(a.warmup, 0), max(a.warmup_seconds, 0.0))
        return
    train_x, train_y = load(a.data, "train")
    test_x, test_y = load(a.data, "t10k")
    if a.limit:
        train_x, train_y = train_x[: a.limit], train_y[: a.limit]
    net = lenet5()
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(a.epochs, 1))
    gen = torch.Generator().manual_seed(a.seed)
    steps = len(train_x) // a.batch_size
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads): LeNet-5 on "
          f"{len(train_x)} training images, batch {a.batch_size}, {a.epochs} epoch(s), sgd")
    acc = accuracy(net, test_x, test_y)
    start = time.perf_counter()
    for epoch in range(a.epochs):
        perm = torch.randperm(len(train_x), generator=gen)
        for k in range(steps):
            b = perm[k * a.batch_size : (k + 1) * a.batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(net(train_x[b]), train_y[b])
            loss.backward()
            opt.step()
            if k % 20 == 0:
                loss.item()
        sched.step()
        acc = accuracy(net, test_x, test_y)
        print(f"epoch {epoch + 1}: test accuracy {100 * acc:.2f}%")
    print(f"trained in {time.perf_counter() - start:.1f} s")
    print(f"test accuracy: {100 * acc:.2f}%")


if __name__ == "__main__":
    main()
