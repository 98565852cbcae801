"""A small fused-MLP forward+backward (odd batch, odd input and output widths, bias, every width
template) for compute-sanitizer: memcheck finds out-of-bounds and misaligned accesses, racecheck
shared-memory races between the block's warps.

  FASTNN_MLP_FUSED=2 compute-sanitizer --tool racecheck python benchmarks/mlp_gpu_sanitize.py
"""
import torch

import fastnn

torch.manual_seed(0)
for width, act in ((16, "tanh"), (32, "gelu"), (64, "relu"), (128, "silu")):
    ws = [torch.randn(width, 5), torch.randn(width, width), torch.randn(17, width)]
    ws = [(w / w.shape[1] ** 0.5).cuda().bfloat16().requires_grad_() for w in ws]
    bs = [torch.randn(w.shape[0], device="cuda", dtype=torch.bfloat16, requires_grad=True) for w in ws]
    x = torch.randn(300, 5, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    assert fastnn.mlp_path(x, ws)[0] == "fused"
    out = fastnn.mlp(x, ws, bs, [act, act, "identity"])
    out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    print(f"width {width} {act}: ok, |out| {out.float().norm():.3f}, |grad x| {x.grad.float().norm():.3f}")
