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
