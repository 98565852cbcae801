"""The elementwise passes on their own: fastnn's activation pass (torch.ops.fastnn.activation) and
linear_act's backward pass (g act'(z) and the bias sum; torch.ops.fastnn.linear_act_backward with no
GEMM asked for) against torch's own ops on the same tensors (F.gelu ...; *_backward + .sum(0)).
The "bf16 elementwise passes" notes in RESULTS.md.

    python benchmarks/activation_pass_extras.py [--dtype bfloat16] [--threads N] [--rows 1024 --cols 1024]

Prints a line per activation and direction: medians (us) of ROUNDS rounds in which fastnn and torch
alternate (torch.utils.benchmark), and the ratio torch / fastnn (above 1: fastnn faster)."""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import fastnn

p = argparse.ArgumentParser()
p.add_argument("--dtype", default="bfloat16")
p.add_argument("--threads", type=int, default=0)
p.add_argument("--rows", type=int, default=1024)
p.add_argument("--cols", type=int, default=1024)
p.add_argument("--rounds", type=int, default=7)
p.add_argument("--acts", default="gelu,gelu_tanh,silu,sigmoid,tanh,relu")
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
dt = getattr(torch, a.dtype)
torch.manual_seed(0)
M, N = a.rows, a.cols
z, g = torch.randn(M, N, dtype=dt), torch.randn(M, N, dtype=dt)
x, w = torch.randn(M, 1, dtype=dt), torch.randn(N, 1, dtype=dt)
y = {}

FWD = {"gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu,
       "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}
# torch's backward ops take what torch's autograd saves: the input (gelu, silu) or the output.
BWD = {"gelu": lambda: torch.ops.aten.gelu_backward(g, z),
       "gelu_tanh": lambda: torch.ops.aten.gelu_backward(g, z, approximate="tanh"),
       "silu": lambda: torch.ops.aten.silu_backward(g, z),
       "sigmoid": lambda: torch.ops.aten.sigmoid_backward(g, y["sigmoid"]),
       "tanh": lambda: torch.ops.aten.tanh_backward(g, y["tanh"]),
       "relu": lambda: torch.ops.aten.threshold_backward(g, y["relu"], 0)}
SAVES_OUTPUT = {"sigmoid", "tanh", "relu"}


def median_pair(f_ours, f_theirs):
    t = {0: [], 1: []}
    for _ in range(a.rounds):
        for k, f in ((0, f_ours), (1, f_theirs)):
            t[k].append(Timer("f()", globals={"f": f}).blocked_autorange(min_run_time=0.1).median)
    return statistics.median(t[0]), statistics.median(t[1])


print(f"{M}x{N} {a.dtype}, {torch.get_num_threads()} threads, fastnn table {fastnn.cpu_isa()}")
for act in a.acts.split(","):
    y[act] = FWD[act](z)
    saved = y[act] if act in SAVES_OUTPUT else z
    cases = {
        "forward": (lambda: torch.ops.fastnn.activation(z, act, 0.01), lambda: FWD[act](z)),
        "backward": (lambda: torch.ops.fastnn.linear_act_backward(g, x, w, saved, True, act, 0.01, [False, False]),
                     lambda: BWD[act]().sum(0)),
    }
    fastnn.set_cpu_path("gemm")  # linear_act's backward through its elementwise pass
    try:
        for name, (ours, theirs) in cases.items():
            mo, mt = median_pair(ours, theirs)
            print(f"{act:10s} {name:8s} fastnn {mo * 1e6:9.1f} us  torch {mt * 1e6:9.1f} us  ratio {mt / mo:.2f}")
    finally:
        fastnn.set_cpu_path("auto")
