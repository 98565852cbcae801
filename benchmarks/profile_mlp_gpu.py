"""One fused-MLP forward+backward (32-64x4-16 relu, bf16, batch 2^18) for Nsight Compute:
  ncu -k regex:mlp_ --section SpeedOfLight --section Occupancy --section WarpStateStats python profile_mlp_gpu.py"""
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
