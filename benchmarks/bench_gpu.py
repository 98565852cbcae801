"""GPU benchmarks (run by gpu_check.sh on a machine with an NVIDIA GPU).

Optimizers: Adam and RMSprop step on 100M fp32 params in 100 tensors, fastnn vs torch fused=True
(Adam) and foreach (RMSprop, which has no fused path), with effective bandwidth next to a
device-to-device copy measured in the same run. linear_act fwd+bwd vs eager nn.Linear+GELU at
(8192, 4096, 4096) bf16 and fp32, (65536, 64, 64) and (65536, 128, 128) fp32. CUDA-event timing,
interleaved repetitions, medians; ratio = torch time / fastnn time.
"""
import statistics
import sys

import torch
from torch import nn

import fastnn


def cuda_time(fn, iters=10, reps=7):
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


def interleaved(fns, rounds=3):
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for i, f in enumerate(fns):
            samples[i] += cuda_time(f)
    return [statistics.median(s) for s in samples]


def optimizers():
    n_t, per = 100, 1_000_000
    src, dst = torch.empty(per * n_t, device="cuda"), torch.empty(per * n_t, device="cuda")
    (t_copy,) = interleaved([lambda: dst.copy_(src)])
    copy_gbps = 2 * 4 * per * n_t / t_copy / 1e9
    print(f"device-to-device copy: {copy_gbps:.0f} GB/s")
    print("| optimizer | torch variant | torch | fastnn | ratio | fastnn GB/s | % of copy |")
    print("|---|---|---|---|---|---|---|")
    for name, variant, floats in (("Adam", dict(fused=True), 7), ("RMSprop", dict(foreach=True), 5)):
        def make():
            ps = [torch.nn.Parameter(torch.randn(per, device="cuda")) for _ in range(n_t)]
            for p in ps:
                p.grad = torch.randn_like(p) * 1e-3
            return ps
        ot = getattr(torch.optim, name)(make(), lr=1e-3, **variant)
        of = getattr(fastnn.optim, name)(make(), lr=1e-3)
        tt, tf = interleaved([ot.step, of.step])
        gbps = floats * 4 * per * n_t / tf / 1e9
        print(f"| {name} | {variant} | {tt * 1e3:.2f} ms | {tf * 1e3:.2f} ms | {tt / tf:.2f}x | {gbps:.0f} | "
              f"{100 * gbps / copy_gbps:.0f}% |", flush=True)


def linear():
    print("| (M, K, N) | dtype | eager fwd+bwd | fastnn fwd+bwd | ratio |")
    print("|---|---|---|---|---|")
    for (m, k, n), dt in (((8192, 4096, 4096), torch.bfloat16), ((8192, 4096, 4096), torch.float32),
                          ((65536, 64, 64), torch.float32), ((65536, 128, 128), torch.float32)):
        torch.manual_seed(0)
        eager = nn.Sequential(nn.Linear(k, n), nn.GELU()).to("cuda", dt)
        fused = fastnn.nn.Linear.from_linear(eager[0], activation="gelu")
        x = torch.randn(m, k, device="cuda", dtype=dt)
        g = torch.randn(m, n, device="cuda", dtype=dt)
        te, tf = interleaved([lambda: eager(x).backward(g), lambda: fused(x).backward(g)])
        print(f"| {(m, k, n)} | {str(dt).replace('torch.', '')} | {te * 1e3:.3f} ms | {tf * 1e3:.3f} ms | "
              f"{te / tf:.2f}x |", flush=True)


def main():
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | fastnn CUDA: {fastnn.built_with_cuda()}")
    optimizers()
    linear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
