"""fastnn.nn.Linear(activation=...) vs eager nn.Linear + activation module, on the CPU.

Forward (parameters require grad, as in training) and forward+backward (y = op(x); y.backward(g)
with a fixed g), interleaved in one run, medians; ratio = eager time / fastnn time. GEMM rate is
torch.mm at the same (M, K) x (K, N), and fastnn's achieved rate (2MNK flops forward, 6MNK
forward+backward).

    python benchmarks/bench_linear_act.py [--quick] [--shapes 256,1,32 ...] [--acts tanh,gelu]
"""
import argparse
import sys

import torch
from torch import nn

import fastnn
from common import fmt_time, interleaved, machine

SHAPES = [(256, 1, 32), (128, 784, 256), (1024, 784, 256), (8192, 128, 128), (4096, 1024, 1024)]
ACTS = ["relu", "sigmoid", "tanh", "gelu"]
MODULES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU,
           "identity": nn.Identity, "softplus": nn.Softplus}


def bench(shape, act, reps, target):
    M, K, N = shape
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(K, N), MODULES[act]())
    fused = fastnn.nn.Linear.from_linear(eager[0], activation=act)
    x = torch.randn(M, K)
    g = torch.randn(M, N)
    b = torch.randn(K, N)

    def fwd(m):
        return lambda: m(x)

    def fwdbwd(m):
        def f():
            m(x).backward(g)
        return f

    t_mm, t_ef, t_ff = interleaved([lambda: torch.mm(x, b), fwd(eager), fwd(fused)], reps, target)
    t_eb, t_fb = interleaved([fwdbwd(eager), fwdbwd(fused)], reps, target)
    flops = 2 * M * N * K
    return dict(shape=shape, act=act, mm=t_mm, eager_f=t_ef, fused_f=t_ff, eager_fb=t_eb, fused_fb=t_fb,
                gflops_mm=flops / t_mm / 1e9, gflops_f=flops / t_ff / 1e9, gflops_fb=3 * flops / t_fb / 1e9)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--shapes", nargs="*", help="M,K,N triples")
    ap.add_argument("--acts", default=",".join(ACTS))
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else SHAPES
    reps, target = (5, 0.01) if args.quick else (15, 0.03)
    print(f"# {machine()}; fastnn CPU kernels: {fastnn.cpu_isa()}")
    print("| (M, K, N) | act | eager fwd | fastnn fwd | ratio | eager fwd+bwd | fastnn fwd+bwd | ratio |"
          " torch.mm GFLOP/s | fastnn fwd / fwd+bwd GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        for act in args.acts.split(","):
            r = bench(shape, act, reps, target)
            print(f"| {shape} | {act} | {fmt_time(r['eager_f'])} | {fmt_time(r['fused_f'])} | "
                  f"{r['eager_f'] / r['fused_f']:.2f}x | {fmt_time(r['eager_fb'])} | {fmt_time(r['fused_fb'])} | "
                  f"{r['eager_fb'] / r['fused_fb']:.2f}x | {r['gflops_mm']:.0f} | "
                  f"{r['gflops_f']:.0f} / {r['gflops_fb']:.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
