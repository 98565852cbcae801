"""Compact optimizer state on the CPU, the numbers in benchmarks/RESULTS.md ("8-bit state after
vectorizing the block maximum"):

    python benchmarks/optim_compact_extras.py          # Adam/AdamW/Adagrad 10M params: torch fused vs fastnn
                                                       # float32 / bf16 (stochastic, its default, and
                                                       # nearest) / int8 state, and the 8-bit
                                                       # optimizers of bitsandbytes and torchao where installed
    python benchmarks/optim_compact_extras.py --floor  # per-parameter cost in cache, one thread
    python benchmarks/optim_compact_extras.py --device cuda --numel 100000000
                                                       # on CUDA also the version-2 compact kernels
                                                       # (FASTNN_CUDA_COMPACT_KERNELS=2) side by side

Interleaved rounds of two steps each, medians; ratio = torch fused / variant.
"""
import argparse
import statistics
import time
from types import SimpleNamespace

import torch

import fastnn.optim as fo
from fastnn.bench.timing import with_env


def _params(n_total=10_000_000, k=20, device="cpu"):
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(n_total // k, generator=g).to(device) for _ in range(k)]
    return ps, [(torch.randn(p.shape, generator=g) * 1e-2).to(device) for p in ps]


def _make(ps0, gs, build):
    ps = [p.clone().requires_grad_() for p in ps0]
    for p, g in zip(ps, gs):
        p.grad = g.clone()
    o = build(ps)
    o.step()
    return o


def _anchor(kind, name):
    if name == "bitsandbytes":
        import bitsandbytes as bnb
        return lambda ps: getattr(bnb.optim, kind + "8bit")(ps, lr=1e-3)
    import torchao.optim as tao
    cls = getattr(tao, kind + "8bit", None) or tao.AdamW8bit
    return lambda ps: cls(ps, lr=1e-3)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(rounds=9, numel=10_000_000, device="cpu"):
    ps0, gs = _params(numel, 20, device)
    for kind in ("Adam", "AdamW", "Adagrad"):
        # torch has no fused CUDA Adagrad: its foreach step is the baseline there.
        base_name, base_kw = (("torch foreach", dict(foreach=True)) if device == "cuda" and kind == "Adagrad"
                              else ("torch fused", dict(fused=True)))
        builds = {
            base_name: lambda ps: getattr(torch.optim, kind)(ps, lr=1e-3, **base_kw),
            "fastnn float32 state": lambda ps: getattr(fo, kind)(ps, lr=1e-3),
            "fastnn bf16 state": lambda ps: getattr(fo, kind)(ps, lr=1e-3, state_dtype=torch.bfloat16),
            "fastnn bf16 state, nearest": lambda ps: getattr(fo, kind)(ps, lr=1e-3, state_dtype=torch.bfloat16,
                                                                       stochastic_rounding=False),
            "fastnn int8 state": lambda ps: getattr(fo, kind)(ps, lr=1e-3, state_dtype="int8"),
        }
        opts = {n: _make(ps0, gs, b) for n, b in builds.items()}
        if device == "cuda":
            for n in ("fastnn bf16 state", "fastnn bf16 state, nearest", "fastnn int8 state"):
                o = _make(ps0, gs, builds[n])
                opts[n + " (v2 kernels)"] = SimpleNamespace(step=with_env(o.step, "FASTNN_CUDA_COMPACT_KERNELS", "2"))
        for a in ("bitsandbytes", "torchao") if kind != "Adagrad" else ():
            try:
                opts[a] = _make(ps0, gs, _anchor(kind, a))
            except Exception as e:  # noqa: BLE001 -- not installed or not stepping on this machine
                print(f"{a}: unavailable ({type(e).__name__})")
        ts = {n: [] for n in opts}
        for _ in range(rounds):
            for n, o in opts.items():
                _sync(device)
                t = time.perf_counter()
                o.step()
                o.step()
                _sync(device)
                ts[n].append((time.perf_counter() - t) / 2 * 1e3)
        base = statistics.median(ts[base_name])
        for n in opts:
            m = statistics.median(ts[n])
            print(f"{kind}, {numel / 1e6:g}M in 20 tensors ({device}), {n}: {m:.2f} ms ({base / m:.2f}x {base_name})")


def floor(n=40_000, k=4, reps=400):
    torch.set_num_threads(1)
    for name, kw in (("float32 state", {}), ("bf16 state", dict(state_dtype=torch.bfloat16)),
                     ("int8 state", dict(state_dtype="int8", min_8bit_size=0))):
        ps0, gs = _params(n * k, k)
        o = _make(ps0, gs, lambda ps: fo.Adam(ps, lr=1e-3, **kw))
        ts = []
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(reps):
                o.step()
            ts.append((time.perf_counter() - t) / reps / (n * k) * 1e9)
        print(f"Adam, {n * k // 1000}K params in cache, 1 thread, {name}: {statistics.median(ts):.3f} ns/param")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--floor", action="store_true", help="per-parameter cost in cache on one thread")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--numel", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds of two steps (medians over them)")
    a = ap.parse_args()
    floor() if a.floor else interleaved(rounds=a.rounds, numel=a.numel, device=a.device)
