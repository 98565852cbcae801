"""bfloat16 layers on the CPU: eager torch against fuse()d fastnn, fwd+bwd, interleaved (the numbers of
"bfloat16 layers through float32 GEMMs" in benchmarks/RESULTS.md, Zen 3 session):

    python benchmarks/bf16_gemm_path_extras.py

Prints per case the medians and the ratio eager / fastnn, then the path fastnn chose for each bf16 shape
class (gemm: torch's bf16 GEMM, gemm_f32: float32 GEMMs on widened operands).
"""
import copy
import statistics
import time

import torch
from torch import nn

import fastnn

CASES = [("linear_act (1024, 784, 256) relu", (784, 256), nn.ReLU, 1024),
         ("linear_act (8192, 128, 128) tanh", (128, 128), nn.Tanh, 8192),
         ("MLP 784-1024-1024-10 relu", (784, 1024, 1024, 10), nn.ReLU, 1024)]


def _ms(f, n):
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1e3


def main():
    torch.manual_seed(0)
    for name, sizes, act, batch in CASES:
        layers = []
        for i, (a, o) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, o))
            if i < len(sizes) - 2 or len(sizes) == 2:
                layers.append(act())
        eager = nn.Sequential(*layers).bfloat16()
        fused = fastnn.nn.fuse(copy.deepcopy(eager))
        x = torch.randn(batch, sizes[0]).bfloat16()
        g = torch.randn(batch, sizes[-1]).bfloat16()
        variants = {"eager": lambda: eager(x).backward(g), "fastnn": lambda: fused(x).backward(g)}
        for f in variants.values():
            f()
        wide = len(sizes) > 2
        times = {k: [] for k in variants}
        for _ in range(5 if wide else 9):
            for k, f in variants.items():
                times[k].append(_ms(f, 1 if wide else 3))
        me, mf = statistics.median(times["eager"]), statistics.median(times["fastnn"])
        print(f"{name}, batch {batch}, bf16 fwd+bwd: eager {me:.2f} ms, fastnn {mf:.2f} ms, {me / mf:.2f}x")
    for key, path, why in fastnn.cpu_path_choices():
        if "linear_act" in key and "gemm_f32" in key:
            print(f"  {key} -> {path}: {why}")


if __name__ == "__main__":
    main()
