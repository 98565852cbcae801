"""Checks behind the Zen 3 fourth-session notes in RESULTS.md, for when a suite ratio under 1 needs a
second look on a noisy machine:

    python benchmarks/layer_check_extras.py mlp 784-1024-1024-10 1024 [rounds]
    python benchmarks/layer_check_extras.py gemms 784-1024-1024-10 1024
    python benchmarks/layer_check_extras.py grad silu 8192,128,128 [rounds]

Every thread torch has (torch.set_num_threads to change it).

mlp:   fwd+bwd of a relu MLP, eager vs fastnn.nn.fuse(), interleaved rounds (torch.utils.benchmark,
       0.5 s each), the median ratio and every round's.
gemms: the same two, torch.profiler grouped by input shape (4 rounds of 5 steps): ms per call of each
       mm/addmm shape, to tell a real difference in the GEMMs from noise.
grad:  a linear_act layer, fwd + .sum().backward() (a stride-0 gradient) and fwd + .backward(G), fastnn
       and eager interleaved in one round; ratios eager / fastnn. Also fastnn with .sum()'s gradient
       made contiguous before backward: what the backward cost when it copied such a gradient
       (before commit "linear_act backward reads a broadcast gradient in place")."""
import copy
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.profiler import profile

import fastnn
from fastnn.bench.cases import _sequential
from fastnn.bench.timing import blocked


def _interleave(fns, rounds, min_run_time):
    """{name: one median a round}: per-round medians, for per-round ratios (the suite's
    timing.interleaved pools its samples); every thread torch has, as the suite."""
    t = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t[k].append(statistics.median(blocked(f, min_run_time)))
    return t


def _models(sizes):
    eager = _sequential(sizes, "relu", torch.float32, "cpu")
    return eager, fastnn.nn.fuse(copy.deepcopy(eager))


def mlp(spec, batch, rounds=9):
    sizes = [int(s) for s in spec.split("-")]
    eager, fused = _models(sizes)
    x, g = torch.randn(batch, sizes[0]), torch.randn(batch, sizes[-1])
    t = _interleave({"eager": lambda: eager(x).backward(g), "fastnn": lambda: fused(x).backward(g)}, rounds, 0.5)
    rat = [a / b for a, b in zip(t["eager"], t["fastnn"])]
    print(f"MLP {spec} b{batch} fwd+bwd: eager {statistics.median(t['eager']) * 1e3:.2f} ms, fastnn "
          f"{statistics.median(t['fastnn']) * 1e3:.2f} ms, ratio {statistics.median(rat):.3f} "
          f"(rounds {', '.join(f'{r:.2f}' for r in rat)})")


def gemms(spec, batch):
    sizes = [int(s) for s in spec.split("-")]
    eager, fused = _models(sizes)
    x, g = torch.randn(batch, sizes[0]), torch.randn(batch, sizes[-1])
    per = {}
    for _ in range(4):
        for name, m in (("eager", eager), ("fastnn", fused)):
            for _ in range(2):
                m(x).backward(g)
            with profile(record_shapes=True) as p:
                for _ in range(5):
                    m(x).backward(g)
            for e in p.key_averages(group_by_input_shape=True):
                if e.key in ("aten::mm", "aten::addmm"):
                    per.setdefault((name, e.key, str(e.input_shapes), e.count // 5), []).append(
                        e.self_cpu_time_total / e.count / 1e3)
    step = {"eager": 0.0, "fastnn": 0.0}
    for (name, op, shapes, calls), v in sorted(per.items()):
        ms = statistics.median(v)
        step[name] += ms * calls
        print(f"{name:7s} {op:12s} {shapes:48s} x{calls} a step: {ms:.2f} ms a call")
    print(f"GEMM time a step: eager {step['eager']:.1f} ms, fastnn {step['fastnn']:.1f} ms")


def grad(act, shape, rounds=11):
    M, K, N = (int(v) for v in shape.split(","))
    tf = {"silu": F.silu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "gelu": F.gelu,
          "identity": lambda t: t}[act]
    x = torch.randn(M, K)
    w, b = torch.randn(N, K, requires_grad=True), torch.randn(N, requires_grad=True)
    G = torch.randn(M, N)

    def step(f, mode):
        def r():
            y = f()
            if mode == "sum":
                y.sum().backward()
            elif mode == "sum-copied":
                y.backward(torch.ones(()).expand(y.shape).contiguous())
            else:
                y.backward(G)
        return r
    fns = {}
    for mode in ("sum", "g"):
        fns["fastnn-" + mode] = step(lambda: fastnn.linear_act(x, w, b, activation=act), mode)
        fns["eager-" + mode] = step(lambda: tf(F.linear(x, w, b)), mode)
    fns["fastnn-sum-copied"] = step(lambda: fastnn.linear_act(x, w, b, activation=act), "sum-copied")
    t = _interleave(fns, rounds, 0.3)
    rat = [a / b for a, b in zip(t["fastnn-sum-copied"], t["fastnn-sum"])]
    print(f"{act} {(M, K, N)} .sum().backward(), fastnn with the gradient copied / read in place: "
          f"{statistics.median(rat):.3f} (rounds {', '.join(f'{r:.2f}' for r in rat)})")
    for mode in ("sum", "g"):
        rat = [a / b for a, b in zip(t["eager-" + mode], t["fastnn-" + mode])]
        print(f"{act} {(M, K, N)} {'.sum().backward()' if mode == 'sum' else '.backward(G)'}: eager "
              f"{statistics.median(t['eager-' + mode]) * 1e3:.2f} ms, fastnn {statistics.median(t['fastnn-' + mode]) * 1e3:.2f}"
              f" ms, ratio {statistics.median(rat):.3f} (rounds {', '.join(f'{r:.2f}' for r in rat)})")


if __name__ == "__main__":
    torch.manual_seed(0)
    what, args = sys.argv[1], sys.argv[2:]
    if what == "mlp":
        mlp(args[0], int(args[1]), *(int(a) for a in args[2:]))
    elif what == "gemms":
        gemms(args[0], int(args[1]))
    else:
        grad(args[0], args[1], *(int(a) for a in args[2:]))
