"""fastnn.mlp (one op for the whole chain) vs eager nn.Sequential and vs per-layer fastnn.nn.Linear.

Forward+backward of the trunk alone (y = model(x); y.backward(g)), and whole train steps of the seed
regression network (trunk, two 128->1 heads, Gaussian NLL, Adam), interleaved in one run, medians;
ratio = eager time / fastnn time.

    python benchmarks/bench_mlp.py [--quick]
"""
import argparse
import copy
import sys

import torch
from torch import nn

import fastnn
from common import fmt_time, interleaved, machine

ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def sequential(sizes, act):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or act == "tanh-all":
            layers.append(ACT["tanh" if act == "tanh-all" else act]())
    return nn.Sequential(*layers)


def per_layer(model):
    """fastnn.nn.Linear layers run one by one (the pre-mlp fusion) for comparison."""
    fused = fastnn.nn.fuse(model)
    return nn.Sequential(*fused)


NETS = [  # (name, sizes, activation, batch)
    ("seed trunk 1-32-64-128 tanh", [1, 32, 64, 128], "tanh-all", 128),
    ("notMNIST 784-256-128-10 relu", [784, 256, 128, 10], "relu", 128),
    ("notMNIST 784-256-10 relu", [784, 256, 10], "relu", 128),
    ("wide 784-1024-1024-10 relu", [784, 1024, 1024, 10], "relu", 4096),
]


def bench_fwd_bwd(reps, target):
    print("\n## Forward+backward\n")
    print("| network | batch | eager | fastnn per-layer | fastnn mlp | mlp vs eager | mlp vs per-layer |")
    print("|---|---|---|---|---|---|---|")
    for name, sizes, act, batch in NETS:
        torch.manual_seed(0)
        eager = sequential(sizes, act)
        layers = per_layer(eager)
        fused = fastnn.nn.fuse(eager)
        x = torch.randn(batch, sizes[0])
        g = torch.randn(batch, sizes[-1])

        def step(m):
            def f():
                m(x).backward(g)
            return f

        te, tl, tf = interleaved([step(eager), step(layers), step(fused)], reps, target)
        print(f"| {name} | {batch} | {fmt_time(te)} | {fmt_time(tl)} | {fmt_time(tf)} | {te / tf:.2f}x | "
              f"{tl / tf:.2f}x |", flush=True)


class Hetero(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = sequential([1, 32, 64, 128], "tanh-all")
        self.mean = nn.Linear(128, 1)
        self.log_var = nn.Linear(128, 1)

    def forward(self, x):
        h = self.trunk(x)
        return torch.cat([self.mean(h), self.log_var(h)], 1)


def nll(out, y):
    mu, s = out[:, :1], out[:, 1:]
    return (0.5 * torch.exp(-s) * (y - mu) ** 2 + 0.5 * s).mean()


def bench_train_step(reps, target):
    print("\n## Seed regression train step (batch 128: trunk, two heads, Gaussian NLL, Adam lr 1e-3)\n")
    torch.manual_seed(0)
    base = Hetero()
    x, y = torch.randn(128, 1), torch.randn(128, 1)
    configs = {
        "eager + torch Adam (default)": (copy.deepcopy(base), lambda p: torch.optim.Adam(p, lr=1e-3)),
        "eager + torch Adam fused=True": (copy.deepcopy(base), lambda p: torch.optim.Adam(p, lr=1e-3, fused=True)),
        "fastnn fuse() + fastnn Adam": (fastnn.nn.fuse(base), lambda p: fastnn.optim.Adam(p, lr=1e-3)),
    }
    fns = []
    for model, make_opt in configs.values():
        opt = make_opt(model.parameters())

        def f(model=model, opt=opt):
            opt.zero_grad()
            nll(model(x), y).backward()
            opt.step()
        fns.append(f)
    times = interleaved(fns, reps, target)
    print("| configuration | time/step | fastnn speed-up |")
    print("|---|---|---|")
    for (name, _), t in zip(configs.items(), times):
        print(f"| {name} | {fmt_time(t)} | {t / times[-1]:.2f}x |")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    reps, target = (5, 0.01) if args.quick else (15, 0.03)
    print(f"# {machine()}; fastnn CPU kernels: {fastnn.cpu_isa()}")
    bench_fwd_bwd(reps, target)
    bench_train_step(reps, target)


if __name__ == "__main__":
    sys.exit(main())
