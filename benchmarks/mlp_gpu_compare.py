"""The fully fused MLP's targets (issue 19) in one table: eager torch, torch.compile, fastnn's
per-layer path and fastnn's fused kernels, version 1 and 2 (FASTNN_MLP_FUSED=1 / =2 force them, =0
forbids them; ratios are version 2's), for
fwd+bwd and inference, timed two ways in the same run: CUDA-graph replays (kernel time) and plain
eager calls (what a Python training loop sees). Interleaved rounds, medians.

  python benchmarks/mlp_gpu_compare.py [--quick] [--no-compile]
"""
import copy
import os
import statistics
import sys

import torch
from torch import nn

import fastnn
from fastnn.bench.timing import cuda_graph

QUICK = "--quick" in sys.argv
COMPILE = "--no-compile" not in sys.argv
ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}

# (label, sizes, activation, batch, dtypes, with torch.compile)
SHAPES = [
    ("target", [32, 64, 64, 64, 64, 16], "relu", 1 << 18, (torch.float16, torch.bfloat16), True),
    ("width 16", [32, 16, 16, 16, 16, 16], "relu", 1 << 18, (torch.bfloat16,), False),
    ("width 32", [32, 32, 32, 32, 32, 16], "relu", 1 << 18, (torch.bfloat16,), False),
    ("width 128", [32, 128, 128, 128, 128, 16], "relu", 1 << 18, (torch.bfloat16,), False),
    ("seed trunk", [1, 32, 64, 128], "tanh", 1 << 16, (torch.bfloat16,), False),
    ("gelu 64", [32, 64, 64, 64, 64, 16], "gelu", 1 << 18, (torch.bfloat16,), False),
    ("odd batch", [32, 64, 64, 64, 64, 16], "silu", (1 << 16) + 77, (torch.bfloat16,), False),
]


def model(sizes, act, dtype):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACT[act]())
    return nn.Sequential(*layers).to("cuda", dtype)


class Forced:
    """FASTNN_MLP_FUSED set to `value` around each call (and its capture)."""

    def __init__(self, value, fn):
        self.value, self.fn = value, fn

    def __call__(self):
        old = os.environ.get("FASTNN_MLP_FUSED")
        os.environ["FASTNN_MLP_FUSED"] = self.value
        try:
            self.fn()
        finally:
            if old is None:
                del os.environ["FASTNN_MLP_FUSED"]
            else:
                os.environ["FASTNN_MLP_FUSED"] = old


def event_time(fn, iters):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / 1e3 / iters


def timings(fns, graph, rounds, iters=10):
    """Median seconds per call of each fn; graph=True replays a graph of `iters` calls."""
    calls = []
    for f in fns:
        for _ in range(3):
            f()
        g = cuda_graph(f, iters) if graph else None
        calls.append((g.replay, 1.0 / iters) if g is not None else (f, 1.0))
    torch.cuda.synchronize()
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for i, (f, scale) in enumerate(calls):
            n = 2 if scale < 1 else iters
            samples[i].append(event_time(f, n) * scale)
    return [statistics.median(s) for s in samples]


def main():
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__}")
    rounds = 5 if QUICK else 9
    print("| case | dtype | mode | timing | eager | compile | fastnn layers | fused v1 | fused v2 | v2/eager | "
          "v2/compile | v2/layers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, sizes, act, batch, dtypes, with_compile in SHAPES:
        for dt in dtypes:
            torch.manual_seed(0)
            eager = model(sizes, act, dt)
            fused = fastnn.nn.fuse(copy.deepcopy(eager))
            comp = torch.compile(copy.deepcopy(eager)) if (COMPILE and with_compile) else None
            x = torch.randn(batch, sizes[0], device="cuda", dtype=dt)
            g = torch.randn(batch, sizes[-1], device="cuda", dtype=dt)

            def train(m):
                return lambda: m(x).backward(g)

            def infer(m):
                def f():
                    with torch.no_grad():
                        m(x)
                return f
            for mode, wrap in (("fwd+bwd", train), ("inference", infer)):
                fns = [wrap(eager), wrap(comp) if comp is not None else None,
                       Forced("0", wrap(fused)), Forced("1", wrap(fused)), Forced("2", wrap(fused))]
                live = [f for f in fns if f is not None]
                for timing, graph in (("graph", True), ("eager calls", False)):
                    ts = iter(timings(live, graph, rounds))
                    t = [next(ts) if f is not None else None for f in fns]
                    us = ["%.1f" % (v * 1e6) if v is not None else "-" for v in t]
                    r = [("%.2fx" % (b / t[4])) if b is not None else "-" for b in (t[0], t[1], t[2])]
                    print(f"| {label} {'-'.join(map(str, sizes))} {act} b{batch} | "
                          f"{str(dt).replace('torch.', '')} | {mode} | {timing} | {' | '.join(us)} | "
                          f"{' | '.join(r)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
