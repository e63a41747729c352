#!/usr/bin/env python3
"""PyTorch eager on the benchmark workloads of DESIGN §9, for `cargo bench --bench workloads`.

    python3 benches/torch_workloads.py [--runs N] [--quick] [--only W1,W4-512,...]

Runs each workload with the sizes the Rust harness uses (`--quick`: its smoke-run sizes), on
inputs drawn once outside the timed region, with torch.set_num_threads(number of cores); per
workload: untimed warm-up runs (at least 3 and at least `--warmup-seconds`, default 1, or 0.1
when quick), then timed runs (at least `--runs`, default 7, and more while they add up to less
than `--min-seconds`, default 1, at most 1000); the median is reported. Output, one line each,
tab-separated, for the harness to read:

    torch-info    torch 2.5.1, 2 threads
    torch         <key>    <median seconds>
    torch-failed  <key>    <why>

Keys: W1, W2, W3sum, W3colsum, W4-<n>, W5, W6mlp, W6lenet, W8. Exits 0 with
"torch: not installed" when torch cannot be imported. A failing workload prints its
torch-failed line and the others still run.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import time_each  # noqa: E402

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch: not installed")
    sys.exit(0)


def lenet5():
    # As benches/torch_mnist.py and metajit's nn::lenet5().
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def workloads(quick):
    """(key, make) pairs; make() draws the inputs and returns the function one run calls."""
    div = 16 if quick else 1
    side_div = 4 if quick else 1
    w = []

    def w1():
        x = torch.randn(2**24 // div)
        return lambda: torch.relu(x * 1.5 + 0.5) * torch.sigmoid(x) + torch.tanh(x)

    def w2():
        s = 4096 // side_div
        x = torch.randn(s, s)
        # torch.softmax: its own one-pass kernel, the peer of what metajit fuses from four ops.
        return lambda: torch.softmax(x, 1)

    def w3sum():
        x = torch.randn(2**24 // div)
        return lambda: x.sum()

    def w3colsum():
        s = 4096 // side_div
        x = torch.randn(s, s)
        return lambda: x.sum(0)

    w += [("W1", w1), ("W2", w2), ("W3sum", w3sum), ("W3colsum", w3colsum)]

    for n in (512, 1024, 2048):
        n //= div

        def w4(n=n):
            a, b = torch.randn(n, n), torch.randn(n, n)
            return lambda: a @ b

        w.append((f"W4-{n}", w4))

    def w5():
        cn, cc, side, co = (2, 16, 14, 16) if quick else (16, 64, 56, 64)
        bound = 1.0 / (cc * 9) ** 0.5
        x = torch.randn(cn, cc, side, side)
        wt = torch.rand(co, cc, 3, 3) * 2 * bound - bound
        b = torch.rand(co) * 2 * bound - bound
        return lambda: F.conv2d(x, wt, b, stride=1, padding=1)

    def w6mlp():
        batch, hidden = (32, 128) if quick else (128, 512)
        dims = [784, hidden, hidden, 10]
        x = torch.randn(batch, dims[0])
        y = torch.randint(0, 10, (batch,))
        params = []
        for i, o in zip(dims, dims[1:]):
            bound = 1.0 / i**0.5
            params.append((torch.rand(i, o) * 2 * bound - bound).requires_grad_())
            params.append((torch.rand(o) * 2 * bound - bound).requires_grad_())
        lr = 1e-7

        def step():
            # As the harness's mlp_step: x @ W + b, relu, log-softmax via logsumexp, mean NLL,
            # backward, p -= lr * grad.
            h = x
            for k in range(0, len(params), 2):
                h = h @ params[k] + params[k + 1]
                if k + 2 < len(params):
                    h = torch.relu(h)
            logp = h - torch.logsumexp(h, 1, keepdim=True)
            loss = -logp.gather(1, y.unsqueeze(1)).mean()
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= lr * p.grad
                    p.grad = None
            return loss.item()

        return step

    def w6lenet():
        batch = 8 if quick else 64
        net = lenet5()
        opt = torch.optim.SGD(net.parameters(), lr=1e-7, momentum=0.9)
        x = torch.randn(batch, 1, 28, 28)
        y = torch.randint(0, 10, (batch,))

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss.item()

        return step

    def w8():
        zero, one = torch.zeros(4), torch.ones(4)

        def chain():
            t = zero
            for _ in range(1000):
                t = t + one
            return t

        return chain

    w += [("W5", w5), ("W6mlp", w6mlp), ("W6lenet", w6lenet), ("W8", w8)]
    return w


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="")
    p.add_argument("--warmup-seconds", type=float, default=None)
    p.add_argument("--min-seconds", type=float, default=None)
    a = p.parse_args()
    warmup = a.warmup_seconds if a.warmup_seconds is not None else (0.1 if a.quick else 1.0)
    min_s = a.min_seconds if a.min_seconds is not None else (0.1 if a.quick else 1.0)
    only = {k.strip().lower() for k in a.only.split(",") if k.strip()}
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    print(f"torch-info\ttorch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    time_each(
        workloads(a.quick),
        only,
        a.runs,
        warmup,
        min_s,
        ok=lambda key, s: f"torch\t{key}\t{s!r}",
        failed=lambda key, why: f"torch-failed\t{key}\t{why}",
        context=lambda key: torch.enable_grad()
        if key in ("W6mlp", "W6lenet")
        else torch.no_grad(),
    )

if __name__ == "__main__":
    main()
