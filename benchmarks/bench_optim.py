"""fastnn.optim step time vs torch.optim (foreach=False, foreach=True, fused=True), on the CPU.

Workloads: (a) 10M fp32 params in 20 tensors, (b) the notMNIST MLP (784x256, 256, 256x10, 10),
(c) 200 tensors of 1000 elements. Interleaved repetitions in one run, medians; ratio = torch time /
fastnn time. Effective bandwidth counts the bytes a step must move (Adam/AdamW: p, g, m, v read +
p, m, v written = 7 floats per param; RMSprop 5; SGD with momentum 5; Adagrad 5), next to a
STREAM-like triad (a = b + s*c) measured in the same run.

    python benchmarks/bench_optim.py [--quick] [--opts Adam,RMSprop]
"""
import argparse
import sys

import torch

import fastnn
from common import fmt_time, interleaved, machine

WORKLOADS = {
    "a: 10M in 20": [(500_000,)] * 20,
    "b: MLP 784-256-10": [(256, 784), (256,), (10, 256), (10,)],
    "c: 200 x 1000": [(1000,)] * 200,
}
FLOATS_PER_PARAM = {"Adam": 7, "AdamW": 7, "RMSprop": 5, "SGD": 5, "Adagrad": 5}
KWARGS = {"Adam": dict(lr=1e-3), "AdamW": dict(lr=1e-3), "RMSprop": dict(lr=1e-3), "SGD": dict(lr=1e-3, momentum=0.9),
          "Adagrad": dict(lr=1e-3)}
TORCH_FUSED = {"Adam", "AdamW", "SGD", "Adagrad"}


def make(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return ps


def triad_gbps(n=10_000_000):
    a, b, c = torch.empty(n), torch.randn(n), torch.randn(n)
    (t,) = interleaved([lambda: torch.add(b, c, alpha=0.5, out=a)], reps=9)
    return 3 * 4 * n / t / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--opts", default="Adam,AdamW,RMSprop,SGD,Adagrad")
    args = ap.parse_args(argv)
    reps = 5 if args.quick else 11
    print(f"# {machine()}; fastnn CPU kernels: {fastnn.cpu_isa()}")
    triad = triad_gbps()
    print(f"# STREAM-like triad (torch.add(b, c, alpha) out=a, 10M fp32): {triad:.1f} GB/s")
    print("| optimizer | workload | torch for-loop | torch foreach | torch fused | fastnn | vs for-loop | vs foreach |"
          " vs fused | fastnn GB/s | % of triad |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.opts.split(","):
        for wname, shapes in WORKLOADS.items():
            variants = {}
            variants["for-loop"] = getattr(torch.optim, name)(make(shapes), foreach=False, **KWARGS[name])
            variants["foreach"] = getattr(torch.optim, name)(make(shapes), foreach=True, **KWARGS[name])
            if name in TORCH_FUSED:
                variants["fused"] = getattr(torch.optim, name)(make(shapes), fused=True, **KWARGS[name])
            variants["fastnn"] = getattr(fastnn.optim, name)(make(shapes), **KWARGS[name])
            times = dict(zip(variants, interleaved([o.step for o in variants.values()], reps=reps)))
            n = sum(p.numel() for g in variants["fastnn"].param_groups for p in g["params"])
            f = times["fastnn"]
            gbps = FLOATS_PER_PARAM[name] * 4 * n / f / 1e9
            fused = times.get("fused")
            print(f"| {name} | {wname} | {fmt_time(times['for-loop'])} | {fmt_time(times['foreach'])} | "
                  f"{fmt_time(fused) if fused else '-'} | {fmt_time(f)} | {times['for-loop'] / f:.2f}x | "
                  f"{times['foreach'] / f:.2f}x | {f'{fused / f:.2f}x' if fused else '-'} | {gbps:.1f} | "
                  f"{100 * gbps / triad:.0f}% |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
