"""Interleaved fwd+bwd under torch.autocast("cpu", torch.bfloat16): fastnn (fuse()d model or
fastnn.nn.Linear) against the same float32 model in eager autocast, the table in
benchmarks/RESULTS.md (2026-12-01):

    python benchmarks/autocast_extras.py mlp 784-256-10 relu 128
    python benchmarks/autocast_extras.py mlp 784-512-10 gelu 256 --paths   # also each forced path
    python benchmarks/autocast_extras.py layer 8192,128,128 tanh
    python benchmarks/autocast_extras.py breakdown                         # notMNIST step: kernels, casts

Medians of interleaved rounds; ratio = eager / fastnn.
"""
import argparse
import statistics
import time

import torch
from torch import nn

import fastnn
import fastnn.nn as fnn

ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _step(m, x):
    for p in m.parameters():
        p.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    y.float().sum().backward()


def _interleave(cands, rounds, reps=3):
    for f in cands.values():
        for _ in range(reps):
            f()
    ts = {k: [] for k in cands}
    for _ in range(rounds):
        for k, f in cands.items():
            t = time.perf_counter()
            for _ in range(reps):
                f()
            ts[k].append((time.perf_counter() - t) / reps * 1e6)
    return {k: statistics.median(v) for k, v in ts.items()}


def _report(what, med):
    base = next(iter(med.values()))
    for k, v in med.items():
        print(f"{what} {k}: {v:.0f} us ({base / v:.2f}x)")


def mlp(widths, act, batch, paths, rounds):
    torch.manual_seed(0)
    sizes = [int(s) for s in widths.split("-")]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(ACT[act]())
    eager = nn.Sequential(*layers)
    fused = fnn.fuse(eager)
    x = torch.randn(batch, sizes[0])
    cands = {"eager-autocast": lambda: _step(eager, x), "fastnn": lambda: _step(fused, x)}
    if paths:
        separate = nn.Sequential(*[fnn.Linear.from_linear(m, act if i < len(fused) - 1 else None)
                                   for i, m in enumerate(l for l in eager if isinstance(l, nn.Linear))])
        cands["fastnn separate layers"] = lambda: _step(separate, x)
        for p in ("layers", "tiled"):
            def forced(p=p):
                fastnn.set_cpu_path(p)
                _step(fused, x)
                fastnn.set_cpu_path("auto")
            cands[f"fastnn op, {p} forced"] = forced
    _report(f"{widths} {act} b{batch}", _interleave(cands, rounds))


def layer(shape, act, rounds):
    torch.manual_seed(0)
    M, K, N = (int(v) for v in shape.split(","))
    lin = nn.Linear(K, N)
    eager = nn.Sequential(lin, ACT[act]()) if act != "identity" else nn.Sequential(lin)
    ours = fnn.Linear.from_linear(lin, None if act == "identity" else act)
    x = torch.randn(M, K)
    _report(f"({M}, {K}, {N}) {act}", _interleave({"eager-autocast": lambda: _step(eager, x),
                                                   "fastnn": lambda: _step(ours, x)}, rounds))


def breakdown(rounds):
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    fused = fnn.fuse(eager)
    x = torch.randn(128, 784)
    params = list(eager.parameters())
    bw = [p.detach().to(torch.bfloat16) for p in params]
    xb, gb = x.to(torch.bfloat16), [torch.randn_like(t) for t in bw]
    go = torch.randn(128, 10, dtype=torch.bfloat16)

    def casts():  # what autocast and its backward copy per step, for either model
        x.to(torch.bfloat16)
        for p in params:
            p.to(torch.bfloat16)
        for g in gb:
            g.float()

    def kernels():
        y, arena = torch.ops.fastnn.mlp_forward(xb, bw[0::2], bw[1::2], ["relu", "identity"], [0.01, 0.01])
        torch.ops.fastnn.mlp_backward(go, xb, bw[0::2], bw[1::2], arena, y, ["relu", "identity"], [0.01, 0.01],
                                      False)
    _report("notMNIST 784-256-10 b128", _interleave({"eager-autocast step": lambda: _step(eager, x),
                                                     "fastnn step": lambda: _step(fused, x),
                                                     "casts alone": casts, "fastnn kernels alone": kernels},
                                                    rounds, reps=5))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["mlp", "layer", "breakdown"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--paths", action="store_true")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    if a.what == "mlp":
        mlp(a.args[0], a.args[1], int(a.args[2]), a.paths, a.rounds)
    elif a.what == "layer":
        layer(a.args[0], a.args[1], a.rounds)
    else:
        breakdown(a.rounds)
