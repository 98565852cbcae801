"""The fully fused MLP's targets (issue 19) in one table: eager torch, torch.compile, fastnn's
per-layer path and fastnn's fused kernels, version 1 and 2 (FASTNN_MLP_FUSED=1 / =2 force them, =0
forbids them; ratios are version 2's), for
fwd+bwd and inference, timed two ways in the same run: CUDA-graph replays (kernel time) and plain
eager calls (what a Python training loop sees). Interleaved rounds, medians.

  python benchmarks/mlp_gpu_compare.py [--quick] [--no-compile]
"""
import copy
import sys

import torch

import fastnn
from fastnn.bench.timing import with_env
from gpu_extras import interleaved  # graph replays or eager calls, interleaved rounds, medians
from gpu_train_step import model

COMPILE = "--no-compile" not in sys.argv

# (label, sizes, activation, batch, dtypes, with torch.compile)
SHAPES = [
    ("target", [32, 64, 64, 64, 64, 16], "relu", 1 << 18, (torch.float16, torch.bfloat16), True),
    ("width 16", [32, 16, 16, 16, 16, 16], "relu", 1 << 18, (torch.bfloat16,), False),
    ("width 32", [32, 32, 32, 32, 32, 16], "relu", 1 << 18, (torch.bfloat16,), False),
    ("width 128", [32, 128, 128, 128, 128, 16], "relu", 1 << 18, (torch.bfloat16,), False),
    ("seed trunk", [1, 32, 64, 128], "tanh", 1 << 16, (torch.bfloat16,), False),
    ("gelu 64", [32, 64, 64, 64, 64, 16], "gelu", 1 << 18, (torch.bfloat16,), False),
    ("odd batch", [32, 64, 64, 64, 64, 16], "silu", (1 << 16) + 77, (torch.bfloat16,), False),
]


def main():
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__}")
    print("| case | dtype | mode | timing | eager | compile | fastnn layers | fused v1 | fused v2 | v2/eager | "
          "v2/compile | v2/layers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    choices = []  # what the unforced op measured and chose for each case (fastnn.mlp_path)
    for label, sizes, act, batch, dtypes, with_compile in SHAPES:
        for dt in dtypes:
            torch.manual_seed(0)
            eager = model(sizes, act, dt)
            fused = fastnn.nn.fuse(copy.deepcopy(eager))
            comp = torch.compile(copy.deepcopy(eager)) if (COMPILE and with_compile) else None
            x = torch.randn(batch, sizes[0], device="cuda", dtype=dt)
            g = torch.randn(batch, sizes[-1], device="cuda", dtype=dt)

            def train(m):
                return lambda: m(x).backward(g)

            def infer(m):
                def f():
                    with torch.no_grad():
                        m(x)
                return f
            lin = [m for m in eager if isinstance(m, torch.nn.Linear)]
            choice = fastnn.mlp_path(x, [m.weight for m in lin], [m.bias for m in lin],
                                     [act] * (len(lin) - 1) + ["identity"])
            choices.append(f"{label} {str(dt).replace('torch.', '')}: {choice[0]} ({choice[1]})")
            for mode, wrap in (("fwd+bwd", train), ("inference", infer)):
                fns = [wrap(eager), wrap(comp) if comp is not None else None] + [
                    with_env(wrap(fused), "FASTNN_MLP_FUSED", v) for v in ("0", "1", "2")]
                live = [f for f in fns if f is not None]
                for timing, graph in (("graph", True), ("eager calls", False)):
                    ts = iter(interleaved(live, graph=graph))
                    t = [next(ts) if f is not None else None for f in fns]
                    us = ["%.1f" % (v * 1e6) if v is not None else "-" for v in t]
                    r = [("%.2fx" % (b / t[4])) if b is not None else "-" for b in (t[0], t[1], t[2])]
                    print(f"| {label} {'-'.join(map(str, sizes))} {act} b{batch} | "
                          f"{str(dt).replace('torch.', '')} | {mode} | {timing} | {' | '.join(us)} | "
                          f"{' | '.join(r)} |", flush=True)
    print("\nThe unforced op's measured choice per case (FASTNN_MLP_FUSED unset):")
    for c in choices:
        print("-", c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
