"""Timing helpers: interleaved repetitions, medians, machine description."""
import os
import platform
import statistics
import time

import torch


def machine():
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")


def time_block(fn, iters):
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def calibrate(fn, target_s=0.02):
    fn()
    iters = 1
    while True:
        t = time_block(fn, iters)
        if t * iters >= target_s or iters >= 1 << 16:
            return iters
        iters *= 2


def interleaved(fns, reps=15, target_s=0.02):
    """Median seconds per call of each fn, measured in alternating blocks within one run."""
    for fn in fns:  # warm up
        fn()
    iters = [calibrate(fn, target_s) for fn in fns]
    samples = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            samples[i].append(time_block(fn, iters[i]))
    return [statistics.median(s) for s in samples]


def fmt_time(s):
    return f"{s * 1e6:9.1f} us" if s < 1e-3 else f"{s * 1e3:9.3f} ms"
