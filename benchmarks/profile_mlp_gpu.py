"""One fused-MLP forward+backward (32-64x4-16 relu, bf16, batch 2^18) for Nsight Compute; the kernel
version is FASTNN_MLP_FUSED's (1 or 2). gpu_check.sh's `profile` stage runs it with the sections that
benchmarks/GPU_NOTES.md reads:
  FASTNN_MLP_FUSED=2 ncu --clock-control none -k regex:mlp_ -c 2 --section SpeedOfLight ... python profile_mlp_gpu.py"""
import sys

import torch
from torch import nn

import fastnn

width = int(sys.argv[1]) if len(sys.argv) > 1 else 64
torch.manual_seed(0)
layers = []
sizes = [32] + [width] * 4 + [16]
for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
m = fastnn.nn.fuse(nn.Sequential(*layers).to("cuda", torch.bfloat16))
x = torch.randn(1 << 18, 32, device="cuda", dtype=torch.bfloat16)
g = torch.randn(1 << 18, 16, device="cuda", dtype=torch.bfloat16)
for _ in range(2):
    m(x).backward(g)
torch.cuda.synchronize()
