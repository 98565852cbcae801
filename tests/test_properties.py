"""Property tests: linear_act and mlp against a float64 reference, and the optimizers against
torch's for-loop path, over random shapes (0 and 1 included), strides, dtypes, activations, slopes,
biases and hyper-parameters (hypothesis; the profile is fixed in conftest.py: 1000 derandomized
examples per test in CI)."""
import pytest
import torch

import fastnn
from conftest import BF16_ISAS
from fastnn.reference import ieee_sqrt

hyp = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

ACTS = fastnn.ACTIVATIONS
REF = {"identity": lambda z, s: z, "relu": lambda z, s: torch.relu(z),
       "leaky_relu": lambda z, s: torch.nn.functional.leaky_relu(z, s), "sigmoid": lambda z, s: torch.sigmoid(z),
       "tanh": lambda z, s: torch.tanh(z), "gelu": lambda z, s: torch.nn.functional.gelu(z),
       "gelu_tanh": lambda z, s: torch.nn.functional.gelu(z, approximate="tanh"),
       "silu": lambda z, s: torch.nn.functional.silu(z), "softplus": lambda z, s: torch.nn.functional.softplus(z)}
# float32 kernels vs the float64 reference: GEMM rounding grows with K (sum of K products, each
# |x w| <~ 9 for these inputs), the activations are within ~8 ulp; measured worst on these sizes
# ~2e-6 absolute. bfloat16 rounds inputs and outputs: 3 significant digits.
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 5e-6), torch.bfloat16: (3e-2, 3e-2)}


def tensor(draw, shape, dtype, strided):
    """A tensor of `shape`, contiguous or a strided view (every other column of a wider tensor)."""
    seed = draw(st.integers(0, 2 ** 31 - 1))
    g = torch.Generator().manual_seed(seed)
    if strided and len(shape) >= 1:
        full = torch.randn(*shape[:-1], 2 * shape[-1] + 1, generator=g, dtype=torch.float64)
        return full[..., 1::2].to(dtype)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


@st.composite
def linear_cases(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    lead = draw(st.lists(st.integers(0, 5), min_size=0, max_size=2))
    m = draw(st.integers(0, 9))
    k = draw(st.integers(0, 17))
    n = draw(st.integers(1, 17))
    act = draw(st.sampled_from(ACTS))
    slope = draw(st.sampled_from([0.01, 0.2, 0.0, -0.3]))
    x = tensor(draw, [*lead, m, k], dtype, draw(st.booleans()))
    w = tensor(draw, [n, k], dtype, draw(st.booleans()))
    b = tensor(draw, [n], dtype, False) if draw(st.booleans()) else None
    return x, w, b, act, slope


def reference_linear(x, w, b, act, slope):
    z = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    return REF[act](z, slope)


@given(linear_cases())
def test_linear_act_matches_float64(case):
    x, w, b, act, slope = case
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    br = None if b is None else b.clone().requires_grad_()
    y = fastnn.linear_act(xr, wr, br, act, slope)
    ref_in = [t.detach().double().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    ref = reference_linear(ref_in[0], ref_in[1], ref_in[2] if b is not None else None, act, slope)
    rtol, atol = TOL[x.dtype]
    assert y.dtype == x.dtype and y.shape == ref.shape
    torch.testing.assert_close(y.double(), ref, rtol=rtol, atol=atol * (1 + x.shape[-1]))
    if y.numel() == 0:
        return
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    got = torch.autograd.grad(y, [xr, wr] + ([br] if br is not None else []), g.to(y.dtype))
    want = torch.autograd.grad(ref, ref_in, g)
    for a, e in zip(got, want):
        torch.testing.assert_close(a.double(), e, rtol=rtol, atol=atol * (1 + y.shape[-1] + x.numel() // max(1, x.shape[-1])))


@st.composite
def mlp_cases(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    widths = draw(st.lists(st.integers(1, 20), min_size=2, max_size=5))
    m = draw(st.integers(0, 40))
    x = tensor(draw, [m, widths[0]], dtype, draw(st.booleans()))
    ws, bs, acts, slopes = [], [], [], []
    for i, o in zip(widths[:-1], widths[1:]):
        ws.append(tensor(draw, [o, i], dtype, False) / i ** 0.5)
        bs.append(tensor(draw, [o], dtype, False) if draw(st.booleans()) else None)
        acts.append(draw(st.sampled_from(ACTS)))
        slopes.append(draw(st.sampled_from([0.01, 0.2, 0.0])))
    # every kernel table this CPU runs (with the AMX kernels' emulation), and each CPU path forced
    # or measured
    isa = draw(st.sampled_from(BF16_ISAS))
    path = draw(st.sampled_from(["auto", "tiled", "layers"]))
    return x, ws, bs, acts, slopes, isa, path


@given(mlp_cases())
def test_mlp_matches_float64(case):
    x, ws, bs, acts, slopes, isa, path = case
    before = fastnn.cpu_isa()
    fastnn.set_cpu_isa(isa)
    fastnn.set_cpu_path(path)
    try:
        _mlp_matches_float64(x, ws, bs, acts, slopes)
    finally:
        fastnn.set_cpu_isa(before)
        fastnn.set_cpu_path("auto")


def _mlp_matches_float64(x, ws, bs, acts, slopes):
    params = [w.clone().requires_grad_() for w in ws]
    biases = [None if b is None else b.clone().requires_grad_() for b in bs]
    xr = x.clone().requires_grad_()
    y = fastnn.mlp(xr, params, biases, acts, slopes)
    h = x.double().requires_grad_()
    rp = [w.double().requires_grad_() for w in ws]
    rb = [None if b is None else b.double().requires_grad_() for b in bs]
    r = h
    for w, b, a, s in zip(rp, rb, acts, slopes):
        r = REF[a](torch.nn.functional.linear(r, w, b), s)
    rtol, atol = TOL[x.dtype]
    scale = 1 + max(w.shape[1] for w in ws)
    torch.testing.assert_close(y.double(), r, rtol=rtol, atol=atol * scale * len(ws))
    if y.numel() == 0:
        return
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mine = [xr] + params + [b for b in biases if b is not None]
    theirs = [h] + rp + [b for b in rb if b is not None]
    got = torch.autograd.grad(y, mine, g.to(y.dtype))
    want = torch.autograd.grad(r, theirs, g)
    for a, e in zip(got, want):
        torch.testing.assert_close(a.double(), e, rtol=rtol, atol=atol * scale * len(ws) * (1 + x.shape[0]))


@st.composite
def optimizer_cases(draw):
    name = draw(st.sampled_from(["Adam", "AdamW", "RMSprop", "SGD", "Adagrad"]))
    lr = draw(st.sampled_from([1e-3, 0.01, 0.1]))
    o = {"lr": torch.tensor(lr) if draw(st.booleans()) and name != "RMSprop" else lr,
         "weight_decay": draw(st.sampled_from([0.0, 0.0, 0.01, 0.3])),
         "maximize": draw(st.booleans())}
    if name in ("Adam", "AdamW"):
        o.update(amsgrad=draw(st.booleans()), betas=(draw(st.sampled_from([0.0, 0.5, 0.9])),
                                                     draw(st.sampled_from([0.9, 0.99, 0.999]))),
                 eps=draw(st.sampled_from([1e-8, 1e-3])))
    elif name == "RMSprop":
        o.update(centered=draw(st.booleans()), momentum=draw(st.sampled_from([0.0, 0.5, 0.9])),
                 alpha=draw(st.sampled_from([0.9, 0.99])))
    elif name == "SGD":
        mom = draw(st.sampled_from([0.0, 0.5, 0.9]))
        nesterov = mom > 0 and draw(st.booleans())
        o.update(momentum=mom, nesterov=nesterov, dampening=0.0 if nesterov else draw(st.sampled_from([0.0, 0.3])))
    else:
        o.update(lr_decay=draw(st.sampled_from([0.0, 0.01])),
                 initial_accumulator_value=draw(st.sampled_from([0.0, 0.5])))
    shapes = draw(st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=3), min_size=1, max_size=4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return name, o, shapes, dtype, seed


@settings(max_examples=300)
@given(optimizer_cases())
def test_optimizer_matches_torch_for_loop(case):
    """Bit for bit, with torch's square root made IEEE (the one rounding difference: reference.py)."""
    name, opts, shapes, dtype, seed = case
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(tuple(s), generator=g, dtype=dtype) for s in shapes]
    pa = [torch.nn.Parameter(t.clone()) for t in init]
    pb = [torch.nn.Parameter(t.clone()) for t in init]
    clone = lambda: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}  # noqa: E731
    oa = getattr(torch.optim, name)(pa, foreach=False, **clone())
    ob = getattr(fastnn.optim, name)(pb, **clone())
    with ieee_sqrt():
        for _ in range(3):
            for a, b in zip(pa, pb):
                grad = torch.randn(a.shape, generator=g, dtype=dtype)
                a.grad, b.grad = grad.clone(), grad.clone()
            oa.step()
            ob.step()
    for a, b in zip(pa, pb):
        assert torch.equal(a, b), f"{name} {opts}: max diff {(a - b).abs().max().item() if a.numel() else 0}"
