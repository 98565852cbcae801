"""Whole train steps in one CUDA graph (called by gpu_extras.py): torch, fastnn (per-layer path) and
fastnn with the fully fused MLP kernels (FASTNN_MLP_FUSED=1)."""
import copy

import torch
from torch import nn

import fastnn
from fastnn.bench.timing import with_env

ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


def model(sizes, act, dtype):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACT[act]())
    return nn.Sequential(*layers).to("cuda", dtype)


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
        ff = with_env(make(fastnn.nn.fuse(copy.deepcopy(base)), fastnn.optim.Adam), "FASTNN_MLP_FUSED", "1")
        tt, tf, tff = interleaved([ts, fs, ff], graph=True)
        print(f"| {label} | {tt * 1e6:.1f} us | {tf * 1e6:.1f} us | {tt / tf:.2f}x | {tff * 1e6:.1f} us |",
              flush=True)
    print(flush=True)
