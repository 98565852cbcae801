"""GPU measurements that the suite (python -m fastnn.bench --device cuda --cuda-graphs) does not make:
the forward alone against its limits (GEMM alone, cuBLASLt's fused epilogue), the standalone
memory-bound passes as a fraction of the copy rate, and whole train steps captured in one CUDA
graph. CUDA-graph replays (kernel time without host launch overhead), interleaved, medians.

  python benchmarks/gpu_extras.py [--quick]
"""
import statistics
import sys

import torch
from torch import nn

import fastnn
from fastnn.bench.timing import cuda_graph

QUICK = "--quick" in sys.argv


def cuda_time(fn, iters=20, reps=5):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b) / iters / 1e3)
    return out


def interleaved(fns, rounds=3, iters=20, graph=False):
    """Median seconds per call of each fn, rounds of each in turn. graph=True times replays of a
    CUDA graph of `iters` calls: the GPU time of the kernels, without the host's launch overhead
    (which dominates small ops on the shared GPU machines' CPUs)."""
    samples = [[] for _ in fns]
    if graph:
        graphs = [cuda_graph(f, iters) for f in fns]
        fns = [(lambda g=g: g.replay()) if g is not None else f for f, g in zip(fns, graphs)]
        per = [1 if g is not None else iters for g in graphs]
    else:
        per = [iters] * len(fns)
    for _ in range(1 if QUICK else rounds):
        for i, f in enumerate(fns):
            samples[i] += [t * per[i] / iters for t in cuda_time(f, iters=per[i])]
    return [statistics.median(s) for s in samples]


def us(t):
    return f"{t * 1e6:.1f} us"


COPY_BPS = None


def copy_rate():
    global COPY_BPS
    n = 1 << 28  # 1 GiB of fp32
    src, dst = torch.empty(n, device="cuda").normal_(), torch.empty(n, device="cuda")
    (t,) = interleaved([lambda: dst.copy_(src)], iters=10)
    COPY_BPS = 2 * 4 * n / t
    print(f"device-to-device copy: {COPY_BPS / 1e9:.0f} GB/s (read + write)\n", flush=True)


LINEAR_SHAPES = [
    ((65536, 128, 128), torch.bfloat16, "gelu"),
    ((16384, 1024, 1024), torch.bfloat16, "relu"),
    ((8192, 4096, 4096), torch.bfloat16, "gelu"),
    ((65536, 128, 128), torch.float32, "gelu"),
    ((4096, 1024, 1024), torch.float32, "gelu"),
    ((65536, 128, 128), torch.bfloat16, "tanh"),
    ((65536, 128, 128), torch.float16, "silu"),
]

EAGER_ACT = {"gelu": nn.GELU(), "relu": nn.ReLU(), "tanh": nn.Tanh(), "silu": nn.SiLU()}


def linear():
    print("GPU time per call (CUDA-graph replays of 20 calls: no host launch overhead).\n")
    print("| (M, K, N) | dtype | act | GEMM alone | cuBLASLt epilogue | eager fwd | fastnn fwd | fwd ratio |")
    print("|---|---|---|---|---|---|---|---|")
    passes = []
    for (m, k, n), dt, act in LINEAR_SHAPES[:3] if QUICK else LINEAR_SHAPES:
        torch.manual_seed(0)
        eager = nn.Sequential(nn.Linear(k, n), EAGER_ACT[act]).to("cuda", dt)
        fused = fastnn.nn.Linear.from_linear(eager[0], activation=act)
        x = torch.randn(m, k, device="cuda", dtype=dt)
        g = torch.randn(m, n, device="cuda", dtype=dt)
        w, b = eager[0].weight.detach(), eager[0].bias.detach()
        use_gelu = act == "gelu"
        fns = [lambda: torch.mm(x, w.t()),
               lambda: torch._addmm_activation(b, x, w.t(), use_gelu=use_gelu),
               lambda: eager(x), lambda: fused(x)]
        t = interleaved(fns, graph=True)
        print(f"| {(m, k, n)} | {str(dt).replace('torch.', '')} | {act} | {us(t[0])} | {us(t[1])} | {us(t[2])} | "
              f"{us(t[3])} | {t[2] / t[3]:.2f}x |", flush=True)
        # The standalone passes: activation (reads z, writes y) and backward's act-grad + bias-grad
        # (reads g and saved, writes gz; GEMMs masked off).
        z = torch.randn(m, n, device="cuda", dtype=dt)
        saved = torch.randn(m, n, device="cuda", dtype=dt)
        ta, tb = interleaved([lambda: torch.ops.fastnn.activation(z, act, 0.01),
                              lambda: torch.ops.fastnn.linear_act_backward(g, x, w, saved, True, act, 0.01,
                                                                           [False, False])],
                              graph=True)
        es = z.element_size()
        passes.append((f"{(m, n)} {str(dt).replace('torch.', '')} {act}", 2 * es * m * n / ta,
                       3 * es * m * n / tb))
    print("\n| pass | activation GB/s | % of copy | act-grad + bias-grad GB/s | % of copy |")
    print("|---|---|---|---|---|")
    for name, a, b in passes:
        print(f"| {name} | {a / 1e9:.0f} | {100 * a / COPY_BPS:.0f}% | {b / 1e9:.0f} | {100 * b / COPY_BPS:.0f}% |")
    print(flush=True)


def main():
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | fastnn CUDA: {fastnn.built_with_cuda()}")
    copy_rate()
    linear()
    import gpu_train_step
    gpu_train_step.train_steps(interleaved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
