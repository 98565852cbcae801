"""bfloat16 on the CPU: every kernel table (the native avx512_bf16 one where the CPU has it) and both
CPU paths, against a float64 reference, held to at most 1.5x the error torch's own autocast makes on
the same inputs (outputs and every gradient); autocast routing of fastnn layers and fuse()d models."""
import copy

import pytest
import torch
from torch import nn

import fastnn
from torch_reference import torch_act

from conftest import BF16_ISAS, ISAS

SKIPPED = sorted({"avx512_bf16", "amx_bf16", "amx_bf16_emulated"} - set(BF16_ISAS))
if SKIPPED:  # say which tables this CPU cannot run (they compile everywhere, run where supported)
    print(f"test_bf16: kernel tables not run on this CPU: {', '.join(SKIPPED)}")

ACTS = fastnn.ACTIVATIONS
# An error measured as ||got - ref|| / ||ref|| per tensor; ours may be 1.5x torch autocast's, plus a
# floor far below bf16's rounding (2^-8) for tensors torch gets (nearly) exact.
RATIO, FLOOR = 1.5, 2e-4


def _rel(a, ref):
    return ((a.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def _chain(widths, act, bias, seed, slope=0.1):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(b, a, generator=g, dtype=torch.float64) / a ** 0.5 for a, b in zip(widths[:-1], widths[1:])]
    bs = [torch.randn(b, generator=g, dtype=torch.float64) * 0.5 if bias else None for b in widths[1:]]
    acts = [act] * (len(ws) - 1) + [act if len(ws) == 1 else "identity"]
    return ws, bs, acts, [slope] * len(ws)


def _forward(x, ws, bs, acts, slopes):
    for w, b, a, s in zip(ws, bs, acts, slopes):
        x = torch_act(a, nn.functional.linear(x, w, b), s)
    return x


def _grads(fn, x, ws, bs, g, dtype):
    leaves = [t.detach().to(dtype).clone().requires_grad_() if t is not None else None for t in [x, *ws, *bs]]
    L = len(ws)
    y = fn(leaves[0], leaves[1:1 + L], leaves[1 + L:])
    used = [t for t in leaves if t is not None]
    return [y, *torch.autograd.grad(y, used, g.to(y.dtype))]


def _errors(widths, act, bias, M, seed, strided=False):
    ws, bs, acts, slopes = _chain(widths, act, bias, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(M, 2 * widths[0] if strided else widths[0], generator=gen, dtype=torch.float64)
    if strided:
        x = x[:, ::2]
    g = torch.randn(M, widths[-1], generator=gen, dtype=torch.float64)
    # torch's autocast rounds the inputs to bf16; the reference and fastnn start from those values
    xb = x.to(torch.bfloat16).double()
    wb = [w.to(torch.bfloat16).double() for w in ws]
    bb = [b.to(torch.bfloat16).double() if b is not None else None for b in bs]
    gb = g.to(torch.bfloat16).double()
    ref = _grads(lambda x_, w_, b_: _forward(x_, w_, b_, acts, slopes), xb, wb, bb, gb, torch.float64)

    def autocast(x_, w_, b_):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return _forward(x_, w_, b_, acts, slopes)
    theirs = _grads(autocast, xb, wb, bb, gb, torch.float32)
    xs = xb.to(torch.bfloat16)
    if strided:  # a strided bf16 view, as the caller would hand it over
        xs = torch.zeros(M, 2 * widths[0], dtype=torch.bfloat16)[:, ::2].copy_(xs)
    leaves = [xs.requires_grad_()] + [t.to(torch.bfloat16).requires_grad_() for t in wb] + \
             [t.to(torch.bfloat16).requires_grad_() for t in bb if t is not None]
    bl = iter(leaves[1 + len(ws):])
    y = fastnn.mlp(leaves[0], leaves[1:1 + len(ws)], [next(bl) if b is not None else None for b in bb], acts, slopes)
    ours = [y, *torch.autograd.grad(y, leaves, gb.to(torch.bfloat16))]
    return [(i, _rel(o, r), _rel(t, r)) for i, (o, t, r) in enumerate(zip(ours, theirs, ref))]


def _assert_within(errs, what):
    for i, ours, theirs in errs:
        assert ours <= RATIO * theirs + FLOOR, f"{what}: tensor {i} (0 = output): {ours:.3e} vs torch {theirs:.3e}"


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
def test_every_activation_within_torch_autocast_error(act, bias, bf16_isa, cpu_path):
    _assert_within(_errors([17, 130, 3], act, bias, 77, seed=ACTS.index(act)), (act, bias, bf16_isa, cpu_path))


@pytest.mark.parametrize("widths,M", [([1, 32, 64, 128], 128), ([784, 300, 17, 1], 33), ([3, 17, 130, 300], 5),
                                      ([784, 256, 10], 4096), ([130, 1], 1)])
def test_odd_widths_and_batches_within_torch_autocast_error(widths, M, bf16_isa, cpu_path):
    _assert_within(_errors(widths, "tanh", True, M, seed=len(widths) + M), (widths, M, bf16_isa, cpu_path))


def test_strided_input_and_empty_batch(bf16_isa, cpu_path):
    _assert_within(_errors([40, 33, 6], "gelu", True, 50, seed=9, strided=True), ("strided", bf16_isa, cpu_path))
    ws = [torch.randn(8, 5, dtype=torch.bfloat16, requires_grad=True), torch.randn(3, 8, dtype=torch.bfloat16)]
    y = fastnn.mlp(torch.randn(0, 5, dtype=torch.bfloat16), ws, None, ["silu", "identity"])
    assert y.shape == (0, 3)
    y.sum().backward()
    assert torch.equal(ws[0].grad, torch.zeros_like(ws[0]))


@pytest.mark.skipif("avx512_bf16" not in ISAS, reason="needs a CPU with AVX512_BF16")
def test_native_table_runs_its_own_kernels():
    """The avx512_bf16 table's tiled bf16 results differ from the float32-compute kernels (it rounds
    each layer's output to bf16 and multiplies bf16 pairs) while both stay within torch's error."""
    ws, bs, acts, slopes = _chain([64, 96, 96, 8], "tanh", True, 4)
    ws = [w.to(torch.bfloat16) for w in ws]
    bs = [b.to(torch.bfloat16) for b in bs]
    x = torch.randn(64, 64, dtype=torch.bfloat16)
    fastnn.set_cpu_path("tiled")
    before = fastnn.cpu_isa()
    try:
        fastnn.set_cpu_isa("avx512_bf16")
        native = fastnn.mlp(x, ws, bs, acts, slopes)
        fastnn.set_cpu_isa("avx512")
        f32 = fastnn.mlp(x, ws, bs, acts, slopes)
    finally:
        fastnn.set_cpu_isa(before)
        fastnn.set_cpu_path("auto")
    assert not torch.equal(native, f32)
    torch.testing.assert_close(native.float(), f32.float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("threads", [1, 2])
def test_native_bf16_same_bits_for_any_thread_count(threads, bf16_isa):
    ws, bs, acts, slopes = _chain([50, 64, 7], "gelu", True, 11)
    ws = [w.to(torch.bfloat16).requires_grad_() for w in ws]
    bs = [b.to(torch.bfloat16).requires_grad_() for b in bs]
    x = torch.randn(1000, 50, dtype=torch.bfloat16)
    fastnn.set_cpu_path("tiled")
    before = torch.get_num_threads()
    try:
        out = []
        for n in (threads, 4):
            torch.set_num_threads(n)
            y = fastnn.mlp(x, ws, bs, acts, slopes)
            out.append([y, *torch.autograd.grad(y.float().square().sum(), ws + bs)])
    finally:
        torch.set_num_threads(before)
        fastnn.set_cpu_path("auto")
    for a, b in zip(*out):
        assert torch.equal(a, b)


@pytest.mark.parametrize("act", ACTS)
def test_bf16_activation_passes_are_the_float32_passes_rounded_once(act, bf16_isa):
    """The elementwise passes compute bf16 in float32: the activation equals the float32 pass on the
    same values rounded once, and the backward pass's bias gradient (float32 sums over g act'(z),
    chunked by the shape alone) the float32 one rounded once; widths past a vector's and a chunk's."""
    gen = torch.Generator().manual_seed(ACTS.index(act))
    fastnn.set_cpu_path("gemm")  # linear_act's backward through its elementwise pass
    try:
        for n in (1, 511, 512, 513, 1100):
            z = (torch.randn(5, n, generator=gen) * 4).to(torch.bfloat16)
            y = torch.ops.fastnn.activation(z, act, 0.1)
            assert torch.equal(y, torch.ops.fastnn.activation(z.float(), act, 0.1).to(torch.bfloat16)), (act, n)
            g = torch.randn(5, n, generator=gen).to(torch.bfloat16)
            x = torch.randn(5, 3, generator=gen).to(torch.bfloat16)
            w = torch.randn(n, 3, generator=gen).to(torch.bfloat16)
            gb = [torch.ops.fastnn.linear_act_backward(g.to(dt), x.to(dt), w.to(dt), y.to(dt), True, act, 0.1,
                                                       [False, False])[2] for dt in (torch.bfloat16, torch.float32)]
            assert torch.equal(gb[0], gb[1].to(torch.bfloat16)), (act, n)
    finally:
        fastnn.set_cpu_path("auto")


@pytest.mark.skipif("avx512_bf16" not in ISAS, reason="needs a CPU with AVX512_BF16 (the AMX emulation runs on it)")
def test_amx_table_is_opt_in_and_its_products_match_the_vector_kernels():
    """amx_bf16 is never the default (unmeasured on AMX hardware so far), the emulated table is not
    listed as supported, and the AMX kernels' tiles (emulated) give the vector kernels' results up
    to float32 summation order on a chain whose widths straddle every tile padding (1, 16, 17, 33)."""
    assert fastnn.cpu_isa() != "amx_bf16" or "FASTNN_CPU_ISA" in __import__("os").environ
    assert "amx_bf16_emulated" not in ISAS
    ws, bs, acts, slopes = _chain([33, 17, 16, 1], "silu", True, 21)
    ws = [w.to(torch.bfloat16).requires_grad_() for w in ws]
    bs = [b.to(torch.bfloat16).requires_grad_() for b in bs]
    x = torch.randn(70, 33, dtype=torch.bfloat16, requires_grad=True)
    before = fastnn.cpu_isa()
    fastnn.set_cpu_path("tiled")
    out = {}
    try:
        for isa in ("avx512_bf16", "amx_bf16_emulated"):
            fastnn.set_cpu_isa(isa)
            y = fastnn.mlp(x, ws, bs, acts, slopes)
            out[isa] = [y, *torch.autograd.grad(y.float().square().sum(), [x] + ws + bs)]
    finally:
        fastnn.set_cpu_isa(before)
        fastnn.set_cpu_path("auto")
    for a, b in zip(out["avx512_bf16"], out["amx_bf16_emulated"]):
        torch.testing.assert_close(b.float(), a.float(), rtol=2 ** -7, atol=1e-3 * a.float().abs().max().item())


def test_autocast_routes_layers_and_fused_models_to_bf16():
    """Under torch.autocast("cpu", bfloat16) fastnn layers and fuse()d models compute in bf16 (as
    nn.Linear does), and training gradients reach the float32 parameters."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))
    fused = fastnn.nn.fuse(copy.deepcopy(model))
    x = torch.randn(40, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, yf = model(x), fused(x)
        single = fastnn.linear_act(x, model[0].weight, model[0].bias, "tanh")
    assert yf.dtype == y.dtype == single.dtype == torch.bfloat16
    torch.testing.assert_close(yf.float(), y.float(), rtol=0.05, atol=0.05)
    yf.float().sum().backward()
    y.float().sum().backward()
    for p, q in zip(model.parameters(), fused.parameters()):
        assert q.grad.dtype == torch.float32
        torch.testing.assert_close(q.grad, p.grad, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("path", ["gemm", "gemm_f32"])
@pytest.mark.parametrize("act", ["relu", "gelu", "identity"])
def test_bf16_gemm_paths_within_torch_autocast_error(path, act):
    """Both bf16 GEMM paths of linear_act, forced (torch's bf16 GEMM; float32 GEMMs on widened operands,
    rounded once), on layers too wide for the direct kernels, through the mlp's layers path."""
    fastnn.set_cpu_path(f"layers,{path}")
    try:
        _assert_within(_errors([100, 90, 7], act, True, 65, seed=3), (path, act))
    finally:
        fastnn.set_cpu_path("auto")


def test_bf16_gemm_f32_is_the_float32_gemm_rounded_once():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(37, 100, generator=g).bfloat16()
    w = torch.randn(30, 100, generator=g).bfloat16()
    b = torch.randn(30, generator=g).bfloat16()
    fastnn.set_cpu_path("gemm_f32")
    try:
        assert fastnn.linear_act_path(x, w, b, "relu")[0] == "gemm_f32"
        y = fastnn.linear_act(x, w, b, "relu")
    finally:
        fastnn.set_cpu_path("auto")
    want = torch.addmm(b.float(), x.float(), w.float().t()).bfloat16().relu()
    assert torch.equal(y, want)
    path, why = fastnn.linear_act_path(x, w, b, "relu")
    assert path in ("gemm", "gemm_f32") and "gemm_f32" in why  # measured against torch's bf16 GEMM
    assert fastnn.linear_act_path(x.float(), w.float(), b.float(), "relu")[0] == "gemm"
