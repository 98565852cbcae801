"""What a small layer pays around its arithmetic: fastnn's entry points against torch's on a 4x16x16
relu layer and a 1-32-64-128 tanh chain at batch 128 (the "Per-call overhead" notes in RESULTS.md).

    python benchmarks/call_overhead_extras.py [ROUNDS]

Prints one JSON object of medians in microseconds. To compare two builds, run it alternately under
each (e.g. PYTHONPATH=<other checkout> for the other), several times, and compare the same keys.
Timing: torch.utils.benchmark, the statements alternating, ROUNDS rounds (default 7)."""
import json
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import fastnn

torch.manual_seed(0)
x = torch.randn(4, 16)
w = torch.randn(16, 16, requires_grad=True)
b = torch.randn(16, requires_grad=True)
lin = fastnn.nn.Linear(16, 16, activation="relu")
tl = torch.nn.Linear(16, 16)
xb = torch.randn(128, 1)
ws = [torch.randn(32, 1), torch.randn(64, 32), torch.randn(128, 64)]
bs = [torch.randn(32), torch.randn(64), torch.randn(128)]
wg = [t.clone().requires_grad_() for t in ws]
bg = [t.clone().requires_grad_() for t in bs]
env = dict(wg=wg, bg=bg, F=F, fastnn=fastnn, x=x, w=w, b=b, lin=lin, tl=tl, torch=torch, xb=xb, ws=ws, bs=bs)
TRUNK = "torch.tanh(F.linear(torch.tanh(F.linear(torch.tanh(F.linear(xb, ws[0], bs[0])), ws[1], bs[1])), ws[2], bs[2]))"
CASES = {  # name: (statement, grad mode)
    "torch F.linear+relu fwd": ("F.relu(F.linear(x, w, b))", True),
    "fastnn.linear_act fwd": ("fastnn.linear_act(x, w, b, 'relu')", True),
    "torch F.linear+relu fwd, no_grad": ("F.relu(F.linear(x, w, b))", False),
    "fastnn.linear_act fwd, no_grad": ("fastnn.linear_act(x, w, b, 'relu')", False),
    "torch fwd+bwd": ("F.relu(F.linear(x, w, b)).sum().backward()", True),
    "fastnn fwd+bwd": ("fastnn.linear_act(x, w, b, 'relu').sum().backward()", True),
    "torch nn.Linear+relu module, no_grad": ("torch.relu(tl(x))", False),
    "fastnn.nn.Linear module, no_grad": ("lin(x)", False),
    "torch 1-32-64-128 tanh b128, no_grad": (TRUNK, False),
    "fastnn.mlp 1-32-64-128 tanh b128, no_grad": ("fastnn.mlp(xb, ws, bs, 'tanh')", False),
    "torch 1-32-64-128 tanh b128 fwd+bwd": (TRUNK.replace("ws[", "wg[").replace("bs[", "bg[") + ".sum().backward()", True),
    "fastnn.mlp 1-32-64-128 tanh b128 fwd+bwd": ("fastnn.mlp(xb, wg, bg, 'tanh').sum().backward()", True),
}


def main(rounds):
    res = {k: [] for k in CASES}
    for _ in range(rounds):
        for k, (stmt, grad) in CASES.items():
            with torch.set_grad_enabled(grad):
                res[k].append(Timer(stmt, globals=env).blocked_autorange(min_run_time=0.2).median * 1e6)
    out = {k: round(statistics.median(v), 2) for k, v in res.items()}
    out["fastnn"] = fastnn.__file__
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
