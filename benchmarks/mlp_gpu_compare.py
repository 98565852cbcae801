"""The fully fused MLP's targets (issue 19) in one table: eager torch, torch.compile, fastnn's
per-layer path on its GEMMs and fastnn's fused kernels, version 1 and 2 (FASTNN_MLP_FUSED=1 / =2 force
them, =0 forbids them; ratios are version 2's), for
fwd+bwd and inference, timed two ways in the same run: CUDA-graph replays (kernel time) and plain
eager calls (what a Python training loop sees). Interleaved rounds, medians. Then single layers:
linear_act on its GEMMs and on the fused kernels' one-layer case (FASTNN_LINEAR_ACT_FUSED).

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
                # "fastnn layers" is the per-layer path with every layer on its GEMMs (issue 19's "today").
                layers = with_env(with_env(wrap(fused), "FASTNN_LINEAR_ACT_FUSED", "0"), "FASTNN_MLP_FUSED", "0")
                fns = [wrap(eager), wrap(comp) if comp is not None else None, layers] + [
                    with_env(wrap(fused), "FASTNN_MLP_FUSED", v) for v in ("1", "2")]
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
    single_layers()
    return 0


# Issue 19 item 4, linear_act's one-layer case: (label, batch, in, out, activation), bf16.
LAYERS = [
    ("issue's layer", 1 << 16, 128, 128, "gelu"),
    ("64 tanh", 1 << 16, 64, 64, "tanh"),
    ("32 relu", 1 << 18, 32, 32, "relu"),
    ("16 -> 128 silu", 1 << 18, 16, 128, "silu"),
    ("128 -> 8 identity", 1 << 16, 128, 8, "identity"),
]


def single_layers():
    """One Linear + activation: eager torch against fastnn.linear_act on its GEMMs and on each version of the
    fused kernels (FASTNN_LINEAR_ACT_FUSED=0 / 1 / 2), and the unforced op's measured choice."""
    print("\n| layer | mode | timing | eager | fastnn gemm | fused v1 | fused v2 | gemm/eager | v2/eager | v2/gemm |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    choices = []
    for label, batch, k, n, act in LAYERS:
        dt = torch.bfloat16
        torch.manual_seed(0)
        eager = model([k, n], "relu", dt)[0]  # one nn.Linear
        lin = fastnn.nn.Linear(k, n, activation=act).to("cuda", dt)
        with torch.no_grad():
            lin.weight.copy_(eager.weight)
            lin.bias.copy_(eager.bias)
        fn = {"gelu": torch.nn.functional.gelu, "tanh": torch.tanh, "relu": torch.relu,
              "silu": torch.nn.functional.silu, "identity": lambda z: z}[act]
        x = torch.randn(batch, k, device="cuda", dtype=dt)
        g = torch.randn(batch, n, device="cuda", dtype=dt)
        choice = fastnn.linear_act_path(x, lin.weight, lin.bias, act)
        choices.append(f"{label}: {choice[0]} ({choice[1]})")
        for mode in ("fwd+bwd", "inference"):
            def call(f):
                if mode == "fwd+bwd":
                    return lambda: f(x).backward(g)

                def infer():
                    with torch.no_grad():
                        f(x)
                return infer
            fns = [call(lambda t: fn(eager(t)))] + [with_env(call(lin), "FASTNN_LINEAR_ACT_FUSED", v)
                                                   for v in ("0", "1", "2")]
            for timing, graph in (("graph", True), ("eager calls", False)):
                t = interleaved(fns, graph=graph)
                us = " | ".join("%.1f" % (v * 1e6) for v in t)
                print(f"| {label} b{batch} {k}->{n} {act} | {mode} | {timing} | {us} | {t[0] / t[1]:.2f}x | "
                      f"{t[0] / t[3]:.2f}x | {t[1] / t[3]:.2f}x |", flush=True)
    print("\nThe unforced linear_act's measured choice per layer (FASTNN_LINEAR_ACT_FUSED unset):")
    for c in choices:
        print("-", c)


if __name__ == "__main__":
    sys.exit(main())
