#!/usr/bin/env python3
"""The other peers of issue 10 on the benchmark workloads: NumPy, Jittor and torch.compile.

    python3 benches/peers.py --framework numpy|jittor|torch-compile [--quick] [--only W1,W3sum]
    python3 benches/peers.py --framework jittor --cold-lenet   # W7: first LeNet-5 step, fresh process

Each framework usually needs its own Python (Jittor 1.3.11 needs NumPy < 2 in a venv of its
own; see ../shared/peers.md for the installs and for Jittor's settings, which must forbid
downloads). Same sizes, keys, warm-up and median rule as benches/torch_workloads.py (both time
with benches/timing.py), inputs drawn once outside the timed region, lazy frameworks forced
to finish inside it (Jittor: `.sync()`). Output, tab-separated, one line per workload:

    peer-info    <framework> <version>, <threads>
    peer         <framework>    <key>    <median seconds>
    peer-failed  <framework>    <key>    <why>

A framework that cannot be imported prints `<framework>: not installed` and exits 0.
W7 for Jittor (`--cold-lenet`): the first LeNet-5 training step (forward, backward, SGD) in
this process, timed from the model's creation to the loss being known; run it once with
Jittor's kernel cache emptied and once warm to get cold and warm figures.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import time_each  # noqa: E402


def sizes(quick):
    div = 16 if quick else 1
    side = 4096 // (4 if quick else 1)
    return div, side


def numpy_workloads(quick):
    import numpy as np

    div, side = sizes(quick)
    rng = np.random.default_rng(0)
    w = []

    def w1():
        x = rng.standard_normal(2**24 // div, dtype=np.float32)
        return lambda: np.maximum(x * 1.5 + 0.5, 0) * (1 / (1 + np.exp(-x))) + np.tanh(x)

    def w2():
        x = rng.standard_normal((side, side), dtype=np.float32)

        def f():
            e = np.exp(x - x.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)

        return f

    def w3sum():
        x = rng.standard_normal(2**24 // div, dtype=np.float32)
        return lambda: x.sum()

    def w3colsum():
        x = rng.standard_normal((side, side), dtype=np.float32)
        return lambda: x.sum(0)

    w += [("W1", w1), ("W2", w2), ("W3sum", w3sum), ("W3colsum", w3colsum)]
    for n in (512, 1024, 2048):
        n //= div

        def w4(n=n):
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            return lambda: a @ b

        w.append((f"W4-{n}", w4))

    def w8():
        zero, one = np.zeros(4, np.float32), np.ones(4, np.float32)

        def chain():
            t = zero
            for _ in range(1000):
                t = t + one
            return t

        return chain

    w.append(("W8", w8))
    return w, f"numpy {np.__version__}, BLAS threads as configured"


def jittor_lenet(jt):
    nn = jt.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.Pool(2, op="maximum"),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.Pool(2, op="maximum"),
        nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def jittor_workloads(quick):
    import numpy as np
    import jittor as jt

    div, side = sizes(quick)
    rng = np.random.default_rng(0)
    w = []

    def arr(*shape):
        a = jt.array(rng.standard_normal(shape, dtype=np.float32))
        a.sync()
        return a

    def w1():
        x = arr(2**24 // div)
        return lambda: (jt.nn.relu(x * 1.5 + 0.5) * jt.sigmoid(x) + jt.tanh(x)).sync()

    def w2():
        x = arr(side, side)
        return lambda: jt.nn.softmax(x, dim=1).sync()

    def w3sum():
        x = arr(2**24 // div)
        return lambda: x.sum().sync()

    def w3colsum():
        x = arr(side, side)
        return lambda: x.sum(0).sync()

    w += [("W1", w1), ("W2", w2), ("W3sum", w3sum), ("W3colsum", w3colsum)]
    for n in (512, 1024, 2048):
        n //= div

        def w4(n=n):
            a, b = arr(n, n), arr(n, n)
            return lambda: jt.matmul(a, b).sync()

        w.append((f"W4-{n}", w4))

    def w5():
        cn, cc, s, co = (2, 16, 14, 16) if quick else (16, 64, 56, 64)
        x, wt, b = arr(cn, cc, s, s), arr(co, cc, 3, 3), arr(co)
        return lambda: jt.nn.conv2d(x, wt, b, stride=1, padding=1).sync()

    def w6lenet():
        batch = 8 if quick else 64
        net = jittor_lenet(jt)
        opt = jt.optim.SGD(net.parameters(), lr=1e-7, momentum=0.9)
        x = arr(batch, 1, 28, 28)
        y = jt.array(rng.integers(0, 10, batch).astype(np.int32))

        def step():
            loss = jt.nn.cross_entropy_loss(net(x), y)
            opt.step(loss)
            return loss.item()

        return step

    def w8():
        zero, one = jt.zeros(4), jt.ones(4)
        zero.sync()
        one.sync()

        def chain():
            t = zero
            for _ in range(1000):
                t = t + one
            t.sync()
            return t

        return chain

    w += [("W5", w5), ("W6lenet", w6lenet), ("W8", w8)]
    return w, f"jittor {jt.__version__}, use_mkl={os.environ.get('use_mkl', 'default')}"


def torch_compile_workloads(quick):
    import torch

    div, side = sizes(quick)
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    w = []

    def compiled(f, *args):
        g = torch.compile(f)
        return lambda: g(*args)

    def w1():
        x = torch.randn(2**24 // div)
        return compiled(lambda x: torch.relu(x * 1.5 + 0.5) * torch.sigmoid(x) + torch.tanh(x), x)

    def w2():
        x = torch.randn(side, side)
        return compiled(lambda x: torch.softmax(x, 1), x)

    def w3sum():
        x = torch.randn(2**24 // div)
        return compiled(lambda x: x.sum(), x)

    def w3colsum():
        x = torch.randn(side, side)
        return compiled(lambda x: x.sum(0), x)

    w += [("W1", w1), ("W2", w2), ("W3sum", w3sum), ("W3colsum", w3colsum)]
    return w, f"torch.compile {torch.__version__}, {torch.get_num_threads()} threads"


def cold_lenet_jittor():
    import numpy as np
    import jittor as jt

    t0 = time.perf_counter()
    net = jittor_lenet(jt)
    opt = jt.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    x = jt.array(rng.standard_normal((64, 1, 28, 28), dtype=np.float32))
    y = jt.array(rng.integers(0, 10, 64).astype(np.int32))
    loss = jt.nn.cross_entropy_loss(net(x), y)
    opt.step(loss)
    loss.item()
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    loss = jt.nn.cross_entropy_loss(net(x), y)
    opt.step(loss)
    loss.item()
    second = time.perf_counter() - t1
    print(f"peer\tjittor\tW7-first\t{first!r}")
    print(f"peer\tjittor\tW7-second\t{second!r}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--framework", required=True, choices=["numpy", "jittor", "torch-compile"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--cold-lenet", action="store_true")
    a = p.parse_args()
    module = {"numpy": "numpy", "jittor": "jittor", "torch-compile": "torch"}[a.framework]
    try:
        __import__(module)
    except ImportError:
        print(f"{a.framework}: not installed")
        return
    if a.cold_lenet:
        if a.framework != "jittor":
            sys.exit("--cold-lenet is for --framework jittor")
        cold_lenet_jittor()
        return
    make = {
        "numpy": numpy_workloads,
        "jittor": jittor_workloads,
        "torch-compile": torch_compile_workloads,
    }[a.framework]
    warmup = min_s = 0.1 if a.quick else 1.0
    only = {k.strip().lower() for k in a.only.split(",") if k.strip()}
    workloads, info = make(a.quick)
    print(f"peer-info\t{a.framework}\t{info}", flush=True)
    time_each(
        workloads,
        only,
        a.runs,
        warmup,
        min_s,
        ok=lambda key, s: f"peer\t{a.framework}\t{key}\t{s!r}",
        failed=lambda key, why: f"peer-failed\t{a.framework}\t{key}\t{why}",
    )

if __name__ == "__main__":
    main()
