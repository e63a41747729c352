"""Timing shared by the peer scripts (torch_workloads.py, peers.py): warm-up, then the median."""
import time


def median_time(f, runs, warmup_seconds, min_seconds):
    start = time.perf_counter()
    done = 0
    while done < 3 or time.perf_counter() - start < warmup_seconds:
        f()
        done += 1
    times = []
    total = 0.0
    while len(times) < runs or (total < min_seconds and len(times) < 1000):
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    times.sort()
    k = len(times)
    return times[k // 2] if k % 2 else 0.5 * (times[k // 2 - 1] + times[k // 2])


def time_each(workloads, only, runs, warmup_seconds, min_seconds, ok, failed, context=None):
    """Times each `(key, make)` of `workloads` whose key is in `only` (all when empty) with
    `median_time`, printing `ok(key, seconds)` or `failed(key, why)`: a failing workload must
    not hide the others. `context(key)`, if given, is entered around each one."""
    import contextlib

    for key, make in workloads:
        if only and key.lower() not in only:
            continue
        try:
            with context(key) if context else contextlib.nullcontext():
                s = median_time(make(), max(runs, 1), warmup_seconds, min_seconds)
            print(ok(key, s), flush=True)
        except Exception as e:
            msg = f"{type(e).__name__}: {e}".replace("\t", " ").replace("\n", " ")
            print(failed(key, msg[:300]), flush=True)
