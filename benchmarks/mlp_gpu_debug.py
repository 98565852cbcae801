"""Where the fused CUDA MLP kernels go wrong, if they do: small chains on integer data (inputs in
-2..2, weights in -1..1, identity or relu), where every sum is exact in fp32 and every output exact in
bf16, so any difference from the float64 reference is a fragment-layout or indexing fault, not
rounding. Per version, width and depth: the mismatching outputs' (row % 16, column % 16) pattern and
the first few values, for the forward output and the input gradient (the reference rounds to bf16
where the kernels do). gpu_check.sh's stage mlpdebug.

  python benchmarks/mlp_gpu_debug.py [versions, default "1 2"]
"""
import os
import sys

import torch

import fastnn


def integer_chain(k0, width, depth, nout, bias, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    sizes = [k0] + [width] * (depth - 1) + [nout]
    ws = [torch.randint(-1, 2, (o, i), generator=g).to("cuda", dtype) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [torch.randint(-2, 3, (o,), generator=g).to("cuda", dtype) if bias else None for o in sizes[1:]]
    return ws, bs


def pattern(got, ref, limit=4):
    """'' when equal, else a line: how many differ, their (row%16, col%16) classes, the first few."""
    bad = (got.double() != ref).nonzero()
    if bad.numel() == 0:
        return ""
    classes = sorted({(int(r) % 16, int(c) % 16) for r, c in bad.tolist()})
    first = ", ".join(f"[{r},{c}] {got[r, c].item():g} vs {ref[r, c].item():g}" for r, c in bad[:limit].tolist())
    return (f"{bad.shape[0]}/{got.numel()} differ; rows {sorted({int(r) for r in bad[:, 0]})[:8]}; "
            f"(row%16, col%16) classes {classes[:12]}{'...' if len(classes) > 12 else ''}; first: {first}")


def check(version, k0, width, depth, nout, act, bias, batch, seed, dtype=torch.bfloat16):
    os.environ["FASTNN_MLP_FUSED"] = version
    ws, bs = integer_chain(k0, width, depth, nout, bias, seed, dtype)
    acts = [act] * (depth - 1) + ["identity"]
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randint(-2, 3, (batch, k0), generator=g).to("cuda", dtype).requires_grad_()
    gout = torch.randint(-1, 2, (batch, nout), generator=g).to("cuda", dtype)
    out = fastnn.mlp(x, ws, bs, acts)
    (gx,) = torch.autograd.grad(out, [x], gout)
    # float64 reference rounded to the dtype where the kernels round (each layer's output, each dz, the
    # input gradient); every sum is an integer below 2^24, exact in fp32 and float64 (and below fp16's
    # largest value in the fp16 cases).
    rnd = lambda t: t.to(dtype).double()  # noqa: E731
    h, hs = x.detach().double(), []
    for w, b, a in zip(ws, bs, acts):
        z = h @ w.double().T + (0 if b is None else b.double())
        hs.append(z)
        h = rnd(torch.relu(z) if a == "relu" else z)
    d = gout.double()
    for w, z, a in reversed(list(zip(ws, hs, acts))):
        d = rnd(d * (z > 0) if a == "relu" else d)  # relu's derivative at 0 is 0, as in the kernels' table
        d = d @ w.double()
    d = rnd(d)
    sizes = "-".join(map(str, [k0] + [width] * (depth - 1) + [nout]))
    name = f"v{version} {str(dtype)[6:]} {sizes} {act} bias={bias} b{batch}"
    fails = [(what, p) for what, p in (("out", pattern(out.detach(), h)), ("grad_x", pattern(gx, d))) if p]
    print(("FAIL " if fails else "ok   ") + name + "".join(f"\n       {w}: {p}" for w, p in fails), flush=True)
    return not fails


def main():
    versions = sys.argv[1:] or ["1", "2"]
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        print("needs a GPU of compute capability >= 8.0")
        return 1
    ok = True
    for v in versions:
        for width in (16, 32, 64, 128):
            for depth in (1, 2, 3):
                ok &= check(v, width, width, depth, width, "identity", False, 128, width + depth)
            ok &= check(v, 5, width, 3, 3, "relu", True, 131, width)  # padded input/output, partial tile
            ok &= check(v, width, width, 2, width, "relu", True, 1000, 2 * width)
            ok &= check(v, width, width, 2, width, "relu", True, 333, 3 * width, torch.float16)
    print("mlp_gpu_debug:", "every case exact" if ok else "FAULTS above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
