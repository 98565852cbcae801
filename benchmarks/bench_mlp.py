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
from fastnn.validate import _Hetero as Hetero, _gaussian_nll as nll
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


def bench_train_step(reps, target):
    print("\n## Seed regression train step (batch 128: trunk, two heads, Gaussian NLL, Adam lr 1e-3)\n")
    torch.manual_seed(0)
    base = Hetero()  # the validation's seed regression network
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


def bench_floor(reps, target):
    """What the op costs with no arithmetic: the seed trunk on an empty batch (dispatch, checks,
    allocation, the autograd node), against eager on the same empty batch."""
    print("\n## Floor: seed trunk fwd+bwd on an empty batch (no arithmetic)\n")
    torch.manual_seed(0)
    eager = sequential([1, 32, 64, 128], "tanh-all")
    fused = fastnn.nn.fuse(eager)
    x = torch.randn(0, 1, requires_grad=True)
    g = torch.randn(0, 128)

    def step(m):
        def f():
            m(x).backward(g)
        return f

    te, tf = interleaved([step(eager), step(fused)], reps, target)
    print(f"eager {fmt_time(te)}, fastnn mlp {fmt_time(tf)}")


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_child(kind, act):
    """In a fresh process: peak RSS during one forward+backward minus RSS before it (MiB). The peak
    (VmHWM) is reset first through /proc/self/clear_refs."""
    torch.manual_seed(0)
    eager = sequential([512] * 9, act)
    model = eager if kind == "eager" else fastnn.nn.fuse(eager)
    x = torch.randn(4096, 512)
    g = torch.randn(4096, 512)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    model(x).backward(g)
    print((_rss_kib("VmHWM") - before) / 1024)


def bench_memory():
    """Peak memory of fwd+bwd, 8 layers 512 wide, batch 4096 (one activation: 8 MiB)."""
    import subprocess
    print("\n## Peak memory, 8-layer 512-wide MLP, batch 4096, fwd+bwd (growth of peak RSS, MiB)\n")
    print("| activation | eager | fastnn fuse() | saved: eager - fastnn, in activations |")
    print("|---|---|---|---|")
    for act in ("relu", "gelu"):
        mib = {}
        for kind in ("eager", "fastnn"):
            out = subprocess.run([sys.executable, __file__, "--peak-child", kind, act], capture_output=True, text=True,
                                 check=True)
            mib[kind] = float(out.stdout.split()[-1])
        print(f"| {act} | {mib['eager']:.0f} | {mib['fastnn']:.0f} | {(mib['eager'] - mib['fastnn']) / 8:.1f} |")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory", action="store_true", help="also the peak-memory comparison")
    ap.add_argument("--peak-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peak_child:
        return _peak_child(*args.peak_child)
    reps, target = (5, 0.01) if args.quick else (15, 0.03)
    print(f"# {machine()}; fastnn CPU kernels: {fastnn.cpu_isa()}")
    bench_fwd_bwd(reps, target)
    bench_floor(reps, target)
    bench_train_step(reps, target)
    if args.memory:
        bench_memory()


if __name__ == "__main__":
    sys.exit(main())
