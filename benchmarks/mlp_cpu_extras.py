"""Measurements behind the whole-MLP fusion notes in RESULTS.md that the suite (python -m fastnn.bench)
does not make:

    python benchmarks/mlp_cpu_extras.py [wide] [floor] [memory]

wide:   chains wider than 256 (notMNIST-like), eager vs fastnn.nn.fuse() with each CPU kernel table
        this machine has: where the tiled kernels take a chain (fastnn.mlp_path) and what that gives.
floor:  the seed trunk fwd+bwd and the seed regression train step at batch 128 and at batch 0 (no
        arithmetic: what dispatch, autograd and Python cost), eager vs fastnn.
memory: peak bytes of torch's CPU allocator during fwd+bwd of an 8-layer 512-wide MLP at batch 4096
        (torch.profiler's allocation events), in activations of [4096, 512] float32.

Timing: torch.utils.benchmark with every thread torch has; the variants alternate, 5 rounds, medians."""
import copy
import sys

import torch
from torch import nn
from torch.utils.benchmark import Timer

import fastnn
from fastnn.bench.cases import _sequential, mlp_case, train_step_case
from fastnn.bench.timing import allocator_bytes


def _time(fns, rounds=5, min_run_time=0.3):
    res = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t = Timer("f()", globals={"f": f}, num_threads=torch.get_num_threads())
            res[k].append(t.blocked_autorange(min_run_time=min_run_time).median)
    return {k: sorted(v)[len(v) // 2] for k, v in res.items()}


def wide():
    nets = [[784, 256, 128, 10], [784, 256, 10], [784, 512, 10], [784, 512, 512, 10], [784, 1024, 10],
            [1024, 1024, 10]]
    print("| kernels | network | batch | weights (MiB) | path | eager | fastnn | vs eager |")
    print("|---|---|---|---|---|---|---|---|")
    before = fastnn.cpu_isa()
    try:
        for isa in fastnn.cpu_isas_supported():
            if isa == "base":
                continue
            fastnn.set_cpu_isa(isa)
            for sizes in nets:
                for batch in (128, 1024):
                    torch.manual_seed(0)
                    e = _sequential(sizes, "relu", torch.float32, "cpu")
                    f = fastnn.nn.fuse(copy.deepcopy(e))
                    x, g = torch.randn(batch, sizes[0]), torch.randn(batch, sizes[-1])
                    t = _time({"eager": lambda: e(x).backward(g), "fastnn": lambda: f(x).backward(g)})
                    path = fastnn.mlp_path(x, [m.weight for m in f if isinstance(m, nn.Linear)])[0]
                    mib = sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) * 4 / 2 ** 20
                    print(f"| {isa} | {'-'.join(map(str, sizes))} | {batch} | {mib:.2f} | {path} | "
                          f"{t['eager'] * 1e3:.3f} ms | {t['fastnn'] * 1e3:.3f} ms | {t['eager'] / t['fastnn']:.2f}x |",
                          flush=True)
    finally:
        fastnn.set_cpu_isa(before)


def floor():
    print("| case | batch | eager | eager + torch fused Adam | fastnn | vs eager | vs fused Adam |")
    print("|---|---|---|---|---|---|---|")
    for batch in (128, 0):
        trunk = mlp_case("seed trunk", [1, 32, 64, 128], "tanh", batch, "float32").build("cpu", [])
        t = _time({k: trunk[k] for k in ("eager", "fastnn")})
        print(f"| seed trunk fwd+bwd | {batch} | {t['eager'] * 1e6:.1f} us | - | {t['fastnn'] * 1e6:.1f} us | "
              f"{t['eager'] / t['fastnn']:.2f}x | - |", flush=True)
        step = train_step_case(batch, "float32").build("cpu", [])
        t = _time(step)
        fa = t["eager + torch fused Adam"]
        print(f"| seed regression train step | {batch} | {t['eager'] * 1e6:.1f} us | {fa * 1e6:.1f} us | "
              f"{t['fastnn'] * 1e6:.1f} us | {t['eager'] / t['fastnn']:.2f}x | {fa / t['fastnn']:.2f}x |", flush=True)


def peak_bytes(fn):
    """Peak of the bytes torch's CPU allocator holds during fn, above what it held before."""
    return allocator_bytes(fn)[1]


def memory():
    batch, width, layers = 4096, 512, 8
    one = batch * width * 4
    print(f"| activation | eager | fastnn fuse() | fastnn.mlp op | (activations of {one / 2 ** 20:.0f} MiB) |")
    print("|---|---|---|---|---|")
    for act in ("relu", "gelu"):
        torch.manual_seed(0)
        e = _sequential([width] * (layers + 1), act, torch.float32, "cpu", last_act=True)
        f = fastnn.nn.fuse(copy.deepcopy(e))
        ws, bs = [m.weight for m in f], [m.bias for m in f]
        x, g = torch.randn(batch, width), torch.randn(batch, width)
        for p in [*e.parameters(), *f.parameters()]:
            p.grad = torch.zeros_like(p)
        peaks = [peak_bytes(fn) / one for fn in (lambda: e(x).backward(g), lambda: f(x).backward(g),
                                                 lambda: fastnn.mlp(x, ws, bs, [act] * layers).backward(g))]
        print(f"| {act} | " + " | ".join(f"{p:.2f}" for p in peaks) + " | |", flush=True)


if __name__ == "__main__":
    todo = sys.argv[1:] or ["wide", "floor", "memory"]
    print(f"# {fastnn._C.cpu_isa()} kernels, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in todo:
        {"wide": wide, "floor": floor, "memory": memory}[name]()
