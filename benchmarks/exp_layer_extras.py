"""linear_act silu/sigmoid layers, fwd+bwd of .sum(), fastnn vs eager alternating (5 rounds), float32 and autocast-bf16: the layer-level check of the float exp change (RESULTS.md, third session). Every thread torch has (before 2026-12-07's fourth session: one thread, Timer's default)."""
import torch, fastnn, statistics
import torch.nn.functional as F
from fastnn.bench.timing import blocked
torch.manual_seed(0)
for act, tf in (("silu", F.silu), ("sigmoid", torch.sigmoid)):
  for (M, K, N) in ((8192, 128, 128), (4096, 512, 512)):
    for ac in (False, True):
        x = torch.randn(M, K); w = torch.randn(N, K, requires_grad=True); b = torch.randn(N, requires_grad=True)
        def ours():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ac):
                y = fastnn.linear_act(x, w, b, activation=act)
            y.float().sum().backward()
        def eager():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ac):
                y = tf(F.linear(x, w, b))
            y.float().sum().backward()
        t = {0: [], 1: []}
        for _ in range(5):
            for k, f in ((0, ours), (1, eager)):
                t[k].append(statistics.median(blocked(f, 0.2)))
        print(f"{act} ({M},{K},{N}) {'autocast-bf16' if ac else 'float32'} fwd+bwd: fastnn {statistics.median(t[0])*1e3:.2f} ms eager {statistics.median(t[1])*1e3:.2f} ms ratio {statistics.median(t[1])/statistics.median(t[0]):.2f}", flush=True)
