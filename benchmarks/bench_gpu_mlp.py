"""Narrow MLPs on the GPU (called by bench_gpu.py): eager torch, torch.compile, fastnn layer by layer
(the default) and fastnn's fully fused kernels (FASTNN_MLP_FUSED=1), interleaved in the same run."""
import copy
import os

import torch
from torch import nn

import fastnn

ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


def model(sizes, act, dtype):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACT[act]())
    return nn.Sequential(*layers).to("cuda", dtype)


class Path:
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        os.environ["FASTNN_MLP_FUSED"] = self.value

    def __exit__(self, *a):
        del os.environ["FASTNN_MLP_FUSED"]


def with_path(value, fn):
    def run():
        with Path(value):
            fn()
    return run


def main(interleaved, quick):
    cases = [
        ("32-64x4-16", [32, 64, 64, 64, 64, 16], "relu", torch.float16, 1 << 18, True),
        ("32-64x4-16", [32, 64, 64, 64, 64, 16], "relu", torch.bfloat16, 1 << 18, False),
        ("32-128x4-16", [32, 128, 128, 128, 128, 16], "relu", torch.bfloat16, 1 << 18, False),
        ("32-32x4-16", [32, 32, 32, 32, 32, 16], "relu", torch.bfloat16, 1 << 18, False),
        ("16-16x4-16", [16, 16, 16, 16, 16, 16], "relu", torch.bfloat16, 1 << 18, False),
        ("1-32-64-128 tanh trunk", [1, 32, 64, 128], "tanh", torch.bfloat16, 1 << 16, False),
        ("32-64x4-16", [32, 64, 64, 64, 64, 16], "relu", torch.bfloat16, 1024, False),
        ("32-64x4-16", [32, 64, 64, 64, 64, 16], "relu", torch.bfloat16, 1 << 14, False),
    ]
    if quick:
        cases = cases[:2]
    print("| MLP | dtype | batch | eager fwd+bwd | compile fwd+bwd | fastnn per-layer | fastnn fused | "
          "vs eager | vs compile | vs per-layer | eager infer | fused infer | infer ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, sizes, act, dtype, batch, with_compile in cases:
        torch.manual_seed(0)
        eager = model(sizes, act, dtype)
        fused = fastnn.nn.fuse(copy.deepcopy(eager))
        x = torch.randn(batch, sizes[0], device="cuda", dtype=dtype)
        g = torch.randn(batch, sizes[-1], device="cuda", dtype=dtype)
        with Path("1"):
            path = fastnn.mlp_path(x, [m.weight for m in fused if isinstance(m, nn.Linear)])
        fns = [lambda: eager(x).backward(g), None, with_path("0", lambda: fused(x).backward(g)),
               with_path("1", lambda: fused(x).backward(g))]
        if with_compile:
            compiled = torch.compile(copy.deepcopy(eager))
            fns[1] = lambda: compiled(x).backward(g)
        live = [f for f in fns if f is not None]
        t = interleaved(live, graph=True)
        it = iter(t)
        te, tc, tl, tf = [next(it) if f is not None else float("nan") for f in fns]

        def infer(m):
            def run():
                with torch.no_grad():
                    m(x)
            return run
        ti_e, ti_f = interleaved([infer(eager), with_path("1", infer(fused))], graph=True)
        fmt = lambda v: "n/a" if v != v else f"{v * 1e6:.1f} us"  # noqa: E731
        ratio = lambda a, b: "n/a" if a != a else f"{a / b:.2f}x"  # noqa: E731
        print(f"| {name} ({act}) | {str(dtype).replace('torch.', '')} | {batch} | {fmt(te)} | {fmt(tc)} | {fmt(tl)} | "
              f"{fmt(tf)} | {ratio(te, tf)} | {ratio(tc, tf)} | {ratio(tl, tf)} | {fmt(ti_e)} | {fmt(ti_f)} | "
              f"{ti_e / ti_f:.2f}x |", flush=True)
        if path[0] != "fused":
            print(f"  (path: {path})")
    print(flush=True)
    train_steps(interleaved)


def train_steps(interleaved):
    """A whole train step (forward, MSE loss, backward, capturable Adam) of the 1-32-64-128-2 tanh MLP
    at batch 128, captured in one CUDA graph: torch vs fastnn (fuse + fastnn Adam)."""
    import torch.nn.functional as F
    print("| train step in one CUDA graph, 1-32-64-128-2 tanh, batch 128 | torch | fastnn | ratio | "
          "fastnn, fused kernels |")
    print("|---|---|---|---|---|")
    for label, autocast in (("float32", False), ("autocast bf16", True)):
        torch.manual_seed(0)
        base = model([1, 32, 64, 128, 2], "tanh", torch.float32)
        x = torch.randn(128, 1, device="cuda")
        y = torch.randn(128, 2, device="cuda")

        def make(m, opt_cls):
            opt = opt_cls(m.parameters(), lr=1e-3, capturable=True)

            def step():
                opt.zero_grad(set_to_none=False)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    out = m(x)
                loss = F.mse_loss(out.float(), y)
                loss.backward()
                opt.step()
            return step
        ts = make(copy.deepcopy(base), torch.optim.Adam)
        fs = make(fastnn.nn.fuse(copy.deepcopy(base)), fastnn.optim.Adam)
        ff = with_path("1", make(fastnn.nn.fuse(copy.deepcopy(base)), fastnn.optim.Adam))
        tt, tf, tff = interleaved([ts, fs, ff], graph=True)
        print(f"| {label} | {tt * 1e6:.1f} us | {tf * 1e6:.1f} us | {tt / tf:.2f}x | {tff * 1e6:.1f} us |",
              flush=True)
    print(flush=True)
