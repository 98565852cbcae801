"""CUDA: the fully fused MLP kernels (fp16/bf16 on tensor cores; each version forced with
FASTNN_MLP_FUSED=1 or 2) against a float64 reference and the per-layer path, and the measured choice
between the two paths; then the same kernels' one-layer case under linear_act (FASTNN_LINEAR_ACT_FUSED)
against its GEMM path (skipped without a GPU)."""
import itertools
import math

import pytest
import torch

import fastnn

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_kernels")]
DEV = "cuda"
ACTS = fastnn.ACTIVATIONS


@pytest.fixture(autouse=True)
def _needs_capability_8(cuda_kernels):
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("the fused kernels need compute capability 8.0")


# Both versions of the fused kernels (csrc/mlp/mlp_cuda_kernels.cu): 1 (WMMA, fp32 staging) and 2
# (weight-stationary mma.sync, epilogue on the accumulators).
VERSION = "1"


@pytest.fixture(autouse=True, params=["1", "2"])
def _fused_kernels_on(request, monkeypatch):
    global VERSION
    VERSION = request.param
    monkeypatch.setenv("FASTNN_MLP_FUSED", VERSION)


def chain(k0, width, depth, nout, dtype, bias, act, last_act, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    sizes = [k0] + [width] * (depth - 1) + [nout]
    ws, bs = [], []
    for i, o in zip(sizes[:-1], sizes[1:]):
        ws.append((torch.randn(o, i, generator=g) / math.sqrt(i)).to(DEV, dtype).requires_grad_())
        bs.append((0.1 * torch.randn(o, generator=g)).to(DEV, dtype).requires_grad_() if bias else None)
    acts = [act] * (depth - 1) + [last_act]
    return ws, bs, acts


def reference(x, ws, bs, acts, slope=0.01):
    """float64 on the same (rounded) inputs: the exact function the kernels approximate."""
    fn = {"identity": lambda z: z, "relu": torch.relu, "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, slope),
          "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": torch.nn.functional.gelu,
          "gelu_tanh": lambda z: torch.nn.functional.gelu(z, approximate="tanh"),
          "silu": torch.nn.functional.silu, "softplus": torch.nn.functional.softplus}
    h = x.double()
    for w, b, a in zip(ws, bs, acts):
        h = fn[a](torch.nn.functional.linear(h, w.double(), None if b is None else b.double()))
    return h


def poison_allocator(nbytes=256 << 20):
    """Fill the caching allocator's free memory with NaN: an output element nothing writes stays NaN."""
    t = torch.empty(nbytes // 4, device=DEV).fill_(float("nan"))
    del t


def run(x, ws, bs, acts, gout):
    poison_allocator()
    xx = x.detach().clone().requires_grad_()
    out = fastnn.mlp(xx, ws, bs, acts, 0.01)
    params = [xx] + ws + [b for b in bs if b is not None]
    grads = torch.autograd.grad(out, params, gout)
    return [out.detach()] + list(grads)


def rel(a, ref):
    return ((a.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def compare(k0, width, depth, nout, dtype, bias, act, last_act, batch, monkeypatch, seed=0):
    ws, bs, acts = chain(k0, width, depth, nout, dtype, bias, act, last_act, seed)
    x = torch.randn(batch, k0, device=DEV, dtype=dtype)
    gout = torch.randn(batch, nout, device=DEV, dtype=dtype)
    assert fastnn.mlp_path(x, ws)[0] == "fused", fastnn.mlp_path(x, ws)
    fused = run(x, ws, bs, acts, gout)
    monkeypatch.setenv("FASTNN_MLP_FUSED", "0")
    monkeypatch.setenv("FASTNN_LINEAR_ACT_FUSED", "0")  # every layer on its GEMMs
    assert fastnn.mlp_path(x, ws)[0] == "layers"
    layers = run(x, ws, bs, acts, gout)
    monkeypatch.delenv("FASTNN_LINEAR_ACT_FUSED")
    monkeypatch.setenv("FASTNN_MLP_FUSED", VERSION)
    # float64 reference of every output (autograd through the reference chain).
    xr = x.detach().double().requires_grad_()
    wr = [w.detach().double().requires_grad_() for w in ws]
    br = [b.detach().double().requires_grad_() for b in bs if b is not None]
    it = iter(br)
    out = reference(xr, wr, [next(it) if b is not None else None for b in bs], acts)
    ref = [out.detach()] + list(torch.autograd.grad(out, [xr] + wr + br, gout.double()))
    names = ["out", "grad_x"] + [f"grad_w{i}" for i in range(len(ws))] + [f"grad_b{i}" for i in range(len(br))]
    check_fused(names, fused, layers, ref, dtype, "per-layer")


def check_fused(names, fused, other, ref, dtype, other_name):
    """Every fused result written, and not much further from float64 than the other path's: both round to
    the same dtype at the same places (GEMM inputs, each layer's output)."""
    eps = torch.finfo(dtype).eps
    for name, f, o, r in zip(names, fused, other, ref):
        assert f.shape == r.shape, name
        assert torch.isfinite(f).all(), f"{name}: non-finite values (an element not written?)"
        if r.norm() == 0:
            assert f.double().norm() == 0, name
            continue
        ef, eo = rel(f, r), rel(o, r)
        assert ef <= 2 * eo + 4 * eps, f"{name}: fused {ef:.2e} vs {other_name} {eo:.2e} from float64"


SWEEP = [(w, d) for w, d in itertools.product([16, 32, 64, 128], [1, 2, 3, 4, 5, 6])]


@pytest.mark.parametrize("width,depth", SWEEP)
def test_fused_mlp_widths_and_depths(width, depth, monkeypatch):
    i = SWEEP.index((width, depth))
    dtype = (torch.float16, torch.bfloat16)[i % 2]
    batch = (1, 7, 1000, 333)[i % 4]
    k0, nout = (5, width, 3, 17)[i % 4], (3, width, 1, 100)[(i // 2) % 4]
    compare(k0, width, depth, nout, dtype, bias=i % 3 != 0, act=ACTS[i % len(ACTS)], last_act=ACTS[(i * 5) % len(ACTS)],
            batch=batch, monkeypatch=monkeypatch, seed=i)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_mlp_every_activation(act, dtype, monkeypatch):
    compare(32, 64, 4, 16, dtype, bias=True, act=act, last_act=act, batch=1000, monkeypatch=monkeypatch)


def test_fused_mlp_large_odd_batch(monkeypatch):
    compare(32, 64, 5, 16, torch.bfloat16, bias=True, act="relu", last_act="identity", batch=(1 << 18) + 3,
            monkeypatch=monkeypatch)


def test_fused_mlp_deterministic_and_inference_matches_training():
    ws, bs, acts = chain(20, 64, 4, 10, torch.bfloat16, True, "tanh", "identity", 3)
    x = torch.randn(5000, 20, device=DEV, dtype=torch.bfloat16)
    g = torch.randn(5000, 10, device=DEV, dtype=torch.bfloat16)
    a = run(x, ws, bs, acts, g)
    b = run(x, ws, bs, acts, g)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    with torch.no_grad():
        poison_allocator()
        y = fastnn.mlp(x, ws, bs, acts)
    assert torch.equal(y, a[0])


def test_fused_mlp_empty_batch():
    ws, bs, acts = chain(8, 32, 3, 4, torch.float16, True, "silu", "identity", 0)
    x = torch.randn(0, 8, device=DEV, dtype=torch.float16, requires_grad=True)
    out = fastnn.mlp(x, ws, bs, acts)
    assert out.shape == (0, 4)
    out.sum().backward()
    assert all(torch.equal(w.grad, torch.zeros_like(w)) for w in ws)


def test_mlp_path_reasons(monkeypatch):
    x = torch.randn(4, 32, device=DEV, dtype=torch.bfloat16)
    w = lambda o, i, dt=torch.bfloat16: torch.randn(o, i, device=DEV, dtype=dt)  # noqa: E731
    path, why = fastnn.mlp_path(x, [w(64, 32), w(10, 64)])
    assert path == "fused" and f"FASTNN_MLP_FUSED={VERSION}" in why
    path, why = fastnn.mlp_path(x.float(), [w(64, 32, torch.float32), w(10, 64, torch.float32)])
    assert path == "layers" and "dtype" in why
    path, why = fastnn.mlp_path(x, [w(256, 32), w(10, 256)])
    assert path == "layers" and "256" in why
    path, why = fastnn.mlp_path(x, [w(40, 32), w(10, 40)])
    assert path == "layers" and "multiple of 16" in why
    monkeypatch.setenv("FASTNN_MLP_FUSED", "0")
    assert fastnn.mlp_path(x, [w(64, 32), w(10, 64)]) == ("layers", "forced by FASTNN_MLP_FUSED=0 (the per-layer path)")
    monkeypatch.setenv("FASTNN_MLP_FUSED", "3")
    with pytest.raises(ValueError, match="fastnn.mlp: FASTNN_MLP_FUSED must be"):
        fastnn.mlp(x, [w(64, 32), w(10, 64)])


def _unforced_chain(monkeypatch, width, seed):
    """A chain of its own shape class with the path left to the measurement (no force switch)."""
    monkeypatch.delenv("FASTNN_MLP_FUSED")
    fastnn._C.clear_cpu_path_choices()
    ws, bs, acts = chain(24, width, 3, 5, torch.bfloat16, True, "tanh", "identity", seed)
    return ws, bs, acts


def test_measured_path_is_kept_and_runs_as_forced(monkeypatch):
    ws, bs, acts = _unforced_chain(monkeypatch, 48, 1)
    x = torch.randn(3000, 24, device=DEV, dtype=torch.bfloat16)
    g = torch.randn(3000, 5, device=DEV, dtype=torch.bfloat16)
    path, why = fastnn.mlp_path(x, ws, bs, acts)
    assert path in ("fused", "layers") and "measured on this device" in why and "cuda: " in why, why
    assert fastnn.mlp_path(x, ws, bs, acts)[0] == path
    auto = run(x, ws, bs, acts, g)
    monkeypatch.setenv("FASTNN_MLP_FUSED", "1" if path == "fused" else "0")
    forced = run(x, ws, bs, acts, g)
    for a, f in zip(auto, forced):
        assert torch.equal(a, f)


def test_fixed_rule_in_deterministic_mode_and_under_graph_capture(monkeypatch):
    ws, bs, acts = _unforced_chain(monkeypatch, 80, 2)
    x = torch.randn(256, 24, device=DEV, dtype=torch.bfloat16)
    torch.use_deterministic_algorithms(True)
    try:
        path, why = fastnn.mlp_path(x, ws, bs, acts)
    finally:
        torch.use_deterministic_algorithms(False)
    assert path == "layers" and "use_deterministic_algorithms" in why
    # First seen while a graph is captured: nothing can be timed, the fixed rule is kept for later calls.
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        monkeypatch.setenv("FASTNN_MLP_FUSED", "0")
        with torch.no_grad():
            fastnn.mlp(x, ws, bs, acts)  # warm-up of the per-layer kernels (cuBLAS handles) off the graph
        monkeypatch.delenv("FASTNN_MLP_FUSED")
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        y = fastnn.mlp(x, ws, bs, acts)
    graph.replay()
    path, why = fastnn.mlp_path(x, ws, bs, acts)
    assert path == "layers" and "could not be timed" in why, why
    with torch.no_grad():  # the same path eagerly (cuBLAS may pick other kernels on the capture stream)
        torch.testing.assert_close(fastnn.mlp(x, ws, bs, acts), y, rtol=2e-2, atol=2e-2)


def test_fuse_uses_fused_kernels_under_autocast():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 8)).to(DEV)
    fused = fastnn.nn.fuse(model)
    x = torch.randn(4096, 32, device=DEV)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = model(x)
        out = fused(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=0.05, atol=0.05)


# ---- linear_act's one-layer case of the fused kernels (csrc/linear_act/linear_act_cuda.cpp) ----

def layer_grads(x, w, b, act, gout):
    poison_allocator()
    xx = x.detach().clone().requires_grad_()
    out = fastnn.linear_act(xx, w, b, act, 0.01)
    params = [xx, w] + ([b] if b is not None else [])
    return [out.detach()] + list(torch.autograd.grad(out, params, gout))


def compare_layer(x, w, b, act, monkeypatch):
    """linear_act forced onto the fused kernels against the GEMM path and float64, as compare() does."""
    gout = torch.randn(*x.shape[:-1], w.shape[0], device=DEV, dtype=x.dtype)
    monkeypatch.setenv("FASTNN_LINEAR_ACT_FUSED", VERSION)
    assert fastnn.linear_act_path(x, w, b, act)[0] == "fused", fastnn.linear_act_path(x, w, b, act)
    fused = layer_grads(x, w, b, act, gout)
    monkeypatch.setenv("FASTNN_LINEAR_ACT_FUSED", "0")
    assert fastnn.linear_act_path(x, w, b, act)[0] == "gemm"
    gemm = layer_grads(x, w, b, act, gout)
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    br = [b.detach().double().requires_grad_()] if b is not None else []
    out = reference(xr, [wr], [br[0] if br else None], [act])
    ref = [out.detach()] + list(torch.autograd.grad(out, [xr, wr] + br, gout.double()))
    check_fused(["out", "grad_x", "grad_w", "grad_b"], fused, gemm, ref, x.dtype, "GEMM path")


LAYER_SHAPES = [((1,), 5, 3), ((7,), 128, 128), ((1000,), 33, 100), ((333,), 16, 17), ((3, 111), 64, 1),
                ((65536 + 5,), 128, 128), ((2, 9), 1, 64), ((130,), 96, 80), ((50,), 127, 7)]


@pytest.mark.parametrize("act", ACTS)
def test_linear_act_one_layer_fused(act, monkeypatch):
    i = ACTS.index(act)
    for j, (lead, k, n) in enumerate(LAYER_SHAPES):
        dtype = (torch.float16, torch.bfloat16)[(i + j) % 2]
        g = torch.Generator(device="cpu").manual_seed(10 * i + j)
        x = torch.randn(*lead, k, generator=g).to(DEV, dtype)
        w = (torch.randn(n, k, generator=g) / math.sqrt(k)).to(DEV, dtype).requires_grad_()
        b = (0.1 * torch.randn(n, generator=g)).to(DEV, dtype).requires_grad_() if (i + j) % 3 else None
        compare_layer(x, w, b, act, monkeypatch)


def test_linear_act_one_layer_fused_strided_input(monkeypatch):
    x = torch.randn(48, 300, device=DEV, dtype=torch.bfloat16).t()  # (300, 48), strided
    w = torch.randn(40, 48, device=DEV, dtype=torch.bfloat16).requires_grad_()
    b = torch.randn(40, device=DEV, dtype=torch.bfloat16).requires_grad_()
    compare_layer(x, w, b, "gelu", monkeypatch)


def test_linear_act_path_reasons_on_cuda(monkeypatch):
    x = torch.randn(4, 32, device=DEV, dtype=torch.bfloat16)
    w = lambda o, i, dt=torch.bfloat16: torch.randn(o, i, device=DEV, dtype=dt)  # noqa: E731
    monkeypatch.setenv("FASTNN_LINEAR_ACT_FUSED", VERSION)
    path, why = fastnn.linear_act_path(x, w(64, 32), None, "tanh")
    assert path == "fused" and f"FASTNN_LINEAR_ACT_FUSED={VERSION}" in why
    path, why = fastnn.linear_act_path(x.float(), w(64, 32, torch.float32), None, "tanh")
    assert path == "gemm" and "dtype" in why
    path, why = fastnn.linear_act_path(x, w(129, 32), None, "tanh")
    assert path == "gemm" and "129" in why
    monkeypatch.setenv("FASTNN_LINEAR_ACT_FUSED", "0")
    assert fastnn.linear_act_path(x, w(64, 32))[0] == "gemm"
    monkeypatch.setenv("FASTNN_LINEAR_ACT_FUSED", "7")
    with pytest.raises(ValueError, match="fastnn.linear_act: FASTNN_LINEAR_ACT_FUSED must be"):
        fastnn.linear_act(x, w(64, 32), None, "tanh")


def test_linear_act_measured_path_is_kept_and_runs_as_forced(monkeypatch):
    monkeypatch.delenv("FASTNN_LINEAR_ACT_FUSED", raising=False)
    fastnn._C.clear_cpu_path_choices()
    x = torch.randn(4000, 112, device=DEV, dtype=torch.bfloat16)
    w = torch.randn(48, 112, device=DEV, dtype=torch.bfloat16).requires_grad_()
    b = torch.randn(48, device=DEV, dtype=torch.bfloat16).requires_grad_()
    g = torch.randn(4000, 48, device=DEV, dtype=torch.bfloat16)
    path, why = fastnn.linear_act_path(x, w, b, "silu")
    assert path in ("fused", "gemm") and "measured on this device" in why and "cuda: " in why, why
    assert fastnn.linear_act_path(x, w, b, "silu")[0] == path
    auto = layer_grads(x, w, b, "silu", g)
    monkeypatch.setenv("FASTNN_LINEAR_ACT_FUSED", "1" if path == "fused" else "0")
    forced = layer_grads(x, w, b, "silu", g)
    for a, f in zip(auto, forced):
        assert torch.equal(a, f)
    torch.use_deterministic_algorithms(True)
    try:
        monkeypatch.delenv("FASTNN_LINEAR_ACT_FUSED")
        path, why = fastnn.linear_act_path(x[:, :100], w[:, :100], b, "silu")
    finally:
        torch.use_deterministic_algorithms(False)
    assert path == "gemm" and "use_deterministic_algorithms" in why
