"""Interleaved timing with torch.utils.benchmark, and the machine's ceilings (GEMM rate, memory
bandwidth) the cases are judged against."""
import numpy as np
import torch
from torch.utils import benchmark


def blocked(fn, min_run_time):
    """Per-call times of fn: torch.utils.benchmark picks the calls per block and synchronises CUDA."""
    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return list(t.blocked_autorange(min_run_time=min_run_time).times)


def with_env(fn, name, value):
    """fn called with the environment variable name=value, restored after: variants that differ by a
    switch the kernels read at call time (FASTNN_MLP_FUSED, FASTNN_CUDA_COMPACT_KERNELS), also while a
    CUDA graph captures them."""
    import os

    def call(*args, **kwargs):
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn(*args, **kwargs)
        finally:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old
    return call


def cuda_graph(fn, calls=10):
    """fn repeated `calls` times in one CUDA graph, replayed as one call (host launch overhead out of
    the timing); None when fn cannot be captured."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(calls):
                fn()
        torch.cuda.synchronize()
        return g
    except Exception:  # noqa: BLE001 -- the caller times fn without a graph
        torch.cuda.synchronize()
        return None


def interleaved(variants, rounds, min_run_time, graphs=False):
    """{variant: per-call times}: rounds of every variant in turn, so that machine noise (other jobs,
    clocks) falls on all of them alike. Each fn is called a few times first (warm-up, compilation)."""
    fns = dict(variants)
    scale = {k: 1.0 for k in fns}
    for k, fn in list(fns.items()):
        for _ in range(2):
            fn()
        if graphs:
            g = cuda_graph(fn)
            if g is not None:
                fns[k], scale[k] = g.replay, 1.0 / 10
    samples = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k] += [t * scale[k] for t in blocked(fn, min_run_time)]
    return samples


def summary(times):
    q1, med, q3 = np.percentile(np.asarray(times), [25, 50, 75])
    return {"median": float(med), "iqr": float(q3 - q1), "n": len(times), "min": float(min(times)),
            "max": float(max(times))}


# Ceilings are peaks: the fastest block of several (a median would put an ordinary run's noise into
# the ceiling, and cases would then exceed 100% of it).
def gemm_rate(device, dtype, n):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    t = min(blocked(lambda: torch.mm(a, b), 0.5))
    return 2.0 * n ** 3 / t


def bandwidth(device, n):
    """Bytes per second of a STREAM-like triad a = b + s*c (3 arrays of n float32: 2 read, 1 written)
    and of a copy, counting bytes read + written."""
    a, b, c = (torch.randn(n, device=device) for _ in range(3))
    t_triad = min(blocked(lambda: torch.add(b, c, alpha=0.5, out=a), 0.3))
    t_copy = min(blocked(lambda: a.copy_(b), 0.3))
    return 12.0 * n / t_triad, 8.0 * n / t_copy


def ceilings(device, dtype, quick):
    sizes = ((1024, 2048) if not quick else (1024,)) if device == "cpu" else (8192,)
    rates = {n: gemm_rate(device, dtype, n) for n in sizes}
    n_mm = max(rates, key=rates.get)
    n_bw = 10_000_000 if device == "cpu" else 1 << 28
    triad, copy_ = bandwidth(device, n_bw)
    return {"gemm_flops": rates[n_mm], "gemm_n": n_mm, "triad_bytes": triad, "copy_bytes": copy_,
            "bandwidth_bytes": max(triad, copy_), "bandwidth_n": n_bw}


def allocator_bytes(fn):
    """(held, peak): the bytes torch's CPU allocator still holds after fn() and the most it held at
    once while fn() ran, both above what it held before (the profiler's allocation events). fn runs
    once first: allocations that stay after a first call (BLAS buffers) are not fn's."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        out = fn()
    events, stack = [], list(p.profiler.kineto_results.experimental_event_tree())
    while stack:
        n = stack.pop()
        if type(n.extra_fields).__name__ == "_ExtraFields_Allocation":
            events.append((n.start_time_ns, n.extra_fields.alloc_size))  # negative for a free
        stack.extend(n.children)
    held = peak = 0
    for _, size in sorted(events, key=lambda e: (e[0], -e[1])):  # at a tie, count the allocation first
        held += size
        peak = max(peak, held)
    del out
    return held, peak
