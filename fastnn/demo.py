"""Small side-by-side run: the same MLP trained with torch and with fastnn from the same start.

    python -m fastnn.demo
"""
import time

import torch
from torch import nn

import fastnn


def _train(model, opt, x, y, epochs, batch):
    losses = []
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        with torch.no_grad():
            losses.append(nn.functional.cross_entropy(model(x), y).item())
    return losses, time.perf_counter() - t0


def main():
    torch.manual_seed(0)
    x = torch.randn(4096, 64)
    y = (x[:, :10].sum(1) > 0).long() + 2 * (x[:, 10:20].sum(1) > 0).long()
    ref = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 4))
    fused = fastnn.nn.fuse(ref)
    r_loss, r_t = _train(ref, torch.optim.Adam(ref.parameters(), 1e-3), x, y, 5, 64)
    f_loss, f_t = _train(fused, fastnn.optim.Adam(fused.parameters(), 1e-3), x, y, 5, 64)
    print(f"{'epoch':>5} {'torch loss':>12} {'fastnn loss':>12}")
    for e, (a, b) in enumerate(zip(r_loss, f_loss)):
        print(f"{e:5d} {a:12.6f} {b:12.6f}")
    print(f"time: torch {r_t:.2f} s, fastnn {f_t:.2f} s ({r_t / f_t:.2f}x)")


if __name__ == "__main__":
    main()
