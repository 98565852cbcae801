"""fastnn.linear_act on the CPU: gradients against float64 references, parity with torch, ops."""
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import fastnn
from torch_reference import clear_of_kinks, torch_act, torch_linear_act

ACTS = fastnn.ACTIVATIONS
# in_features 5 runs the one-pass kernels, 19 the BLAS path (kDirectMaxK = 16 in linear_act.cpp).
KS = [5, 19]


def make(shape_x, n_out, dtype=torch.float64, bias=True, noncontig=False, seed=None, requires_grad=True):
    g = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**31)
    k = shape_x[-1]
    if noncontig:  # every tensor strided: x and w transposed views, b a strided slice
        x = torch.randn(k, *shape_x[:-1], generator=g, dtype=dtype).movedim(0, -1)
        w = torch.randn(k, n_out, generator=g, dtype=dtype).t()
        b = torch.randn(2 * n_out, generator=g, dtype=dtype)[::2] if bias else None
        assert not x.is_contiguous() or x.dim() == 1
        assert not w.is_contiguous()
    else:
        x = torch.randn(*shape_x, generator=g, dtype=dtype)
        w = torch.randn(n_out, k, generator=g, dtype=dtype)
        b = torch.randn(n_out, generator=g, dtype=dtype) if bias else None
    x = x.detach().requires_grad_(requires_grad)
    w = w.detach().requires_grad_(requires_grad)
    if b is not None:
        b = b.detach().requires_grad_(requires_grad)
    return x, w, b


def make_clear(act, *args, **kwargs):
    """make(...) with every pre-activation clear of relu's kink (gradcheck's finite differences)."""
    def z(t):
        x, w, b = t
        return [torch.nn.functional.linear(x, w, b)]
    return clear_of_kinks(lambda: make(*args, **kwargs), z, [act])


def call(act, slope=0.01):
    def f(x, w, b=None):
        return fastnn.linear_act(x, w, b, act, slope)
    return f


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["2d", "3d", "noncontig"])
@pytest.mark.parametrize("k", KS)
def test_gradcheck_float64(act, bias, layout, k):
    shape = {"2d": (6, k), "3d": (2, 3, k), "noncontig": (7, k)}[layout]
    x, w, b = make_clear(act, shape, 4, bias=bias, noncontig=layout == "noncontig")
    inputs = (x, w, b) if bias else (x, w)
    assert gradcheck(call(act), inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("k", KS)
def test_gradgradcheck_float64(act, k):
    x, w, b = make_clear(act, (4, k), 3)
    assert gradgradcheck(call(act), (x, w, b), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("slope", [0.2, 0.0, -0.3])
def test_leaky_relu_slopes_float64(slope):
    # slope > 0 saves the output for backward, slope <= 0 the pre-activation: both must be right.
    x, w, b = make_clear("leaky_relu", (9, 6), 5)
    assert gradcheck(call("leaky_relu", slope), (x, w, b), eps=1e-6, atol=1e-5, rtol=1e-4)
    y = fastnn.linear_act(x, w, b, "leaky_relu", slope)
    torch.testing.assert_close(y, torch_linear_act(x, w, b, "leaky_relu", slope))


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", [(1, 1, 32), (37, 13, 29), (3, 5, 17, 19), (300, 19, 130), (2, 128, 67)])
def test_float32_parity_with_torch(act, shape, cpu_isa):
    *lead, k, n = shape
    x, w, b = make((*lead, k), n, dtype=torch.float32)
    y = fastnn.linear_act(x, w, b, act)
    g = torch.randn_like(y)
    y.backward(g)
    got = (y.detach(), x.grad, w.grad, b.grad)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y2 = torch_linear_act(x2, w2, b2, act)
    y2.backward(g)
    want = (y2.detach(), x2.grad, w2.grad, b2.grad)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, want):
        # float32 sums over up to 300 terms in a different order: a few ulps of the magnitudes summed.
        torch.testing.assert_close(a, e, rtol=2e-5, atol=2e-5 * max(1.0, e.abs().max().item()), msg=name)


@pytest.mark.parametrize("act", ACTS)
def test_activation_math_extremes(act, cpu_isa):
    # Large, tiny, zero and non-finite pre-activations through the vectorized float math.
    z = torch.tensor([-1e4, -100., -88.8, -30., -20.5, -9., -3., -1.3, -0.6, -1e-3, -1e-30, 0., 1e-30, 1e-3, 0.6,
                      1.3, 3., 9., 19.9, 20.5, 30., 88.8, 100., 1e4, float("inf"), float("-inf"), float("nan")])
    z = torch.cat([z, torch.linspace(-12, 12, 2001)])
    eye = torch.ones(1, 1)
    y = fastnn.linear_act(z[:, None], eye, None, act)[:, 0]
    want = torch_act(act, z.double()).float()
    torch.testing.assert_close(y, want, rtol=2e-6, atol=1e-7, equal_nan=True)
    zz = z[torch.isfinite(z)].double()[:, None].requires_grad_()
    ref = torch.autograd.grad(torch_act(act, zz).sum(), zz)[0].float()
    zf = zz.detach().float().requires_grad_()
    got = torch.autograd.grad(fastnn.linear_act(zf, eye, None, act).sum(), zf)[0]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


# Smooth activations only: bfloat16 rounding of a pre-activation near 0 legitimately flips relu's
# derivative, so a relu comparison against float32 would fail on a few random elements.
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "gelu", "silu"])
@pytest.mark.parametrize("k", KS)
def test_bfloat16_close_to_float32(act, k):
    x, w, b = make((33, k), 24, dtype=torch.float32, requires_grad=False)
    xb, wb, bb = (t.bfloat16().requires_grad_() for t in (x, w, b))
    y = fastnn.linear_act(xb, wb, bb, act)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    x32, w32, b32 = (t.bfloat16().float().requires_grad_() for t in (x, w, b))
    ref = torch_linear_act(x32, w32, b32, act)
    ref.sum().backward()
    scale = ref.abs().max().item()
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2 * scale)
    for a, e in ((xb.grad, x32.grad), (wb.grad, w32.grad), (bb.grad, b32.grad)):
        torch.testing.assert_close(a.float(), e, rtol=3e-2, atol=3e-2 * e.abs().max().item())


@pytest.mark.parametrize("k", KS)
def test_bfloat16_relu_forward(k):
    x, w, b = make((33, k), 24, dtype=torch.float32, requires_grad=False)
    y = fastnn.linear_act(x.bfloat16(), w.bfloat16(), b.bfloat16(), "relu")
    ref = torch_linear_act(x.bfloat16().float(), w.bfloat16().float(), b.bfloat16().float(), "relu")
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


@pytest.mark.parametrize("k", KS)
def test_empty_batch(k):
    x, w, b = make((0, k), 6, dtype=torch.float32)
    y = fastnn.linear_act(x, w, b, "gelu")
    assert y.shape == (0, 6)
    y.sum().backward()
    assert x.grad.shape == (0, k)
    assert torch.equal(w.grad, torch.zeros_like(w))
    assert torch.equal(b.grad, torch.zeros_like(b))


def test_zero_in_features():
    x = torch.randn(4, 0, requires_grad=True)
    w = torch.randn(3, 0, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    y = fastnn.linear_act(x, w, b, "tanh")
    torch.testing.assert_close(y, torch.tanh(b).expand(4, 3))
    y.sum().backward()
    torch.testing.assert_close(b.grad, (4 * (1 - torch.tanh(b) ** 2)).detach())


def test_one_dimensional_input():
    x, w, b = make((11,), 3)
    torch.testing.assert_close(fastnn.linear_act(x, w, b, "silu"), torch_linear_act(x, w, b, "silu"))
    assert gradcheck(call("silu"), (x, w, b))


def test_expanded_grad_output():
    # sum().backward() hands backward a stride-0 grad_output.
    x, w, b = make((8, 20), 5)
    fastnn.linear_act(x, w, b, "sigmoid").sum().backward()
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    torch_linear_act(x2, w2, b2, "sigmoid").sum().backward()
    for a, e in ((x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        torch.testing.assert_close(a, e)


def grad_layouts(shape, dtype, seed):
    """grad_outputs of the given shape in the layouts backward meets (the CPU kernels read rows where they
    lie, 0 apart included, and copy the rest)."""
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return {
        "scalar broadcast (.sum())": rnd(()).expand(shape),
        "row broadcast": rnd(n).expand(shape),
        "rows apart": rnd(*shape[:-1], n + 3)[..., 1:n + 1],
        "columns apart": rnd(*shape[:-1], 2 * n)[..., ::2],
        "column broadcast": rnd(*shape[:-1], 1).expand(shape),
        "transposed": rnd(*reversed(shape)).permute(*reversed(range(len(shape)))),
    }


@pytest.mark.parametrize("path,k", [("direct", 5), ("gemm", 19), ("gemm_f32", 19)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("act", ["identity", "relu", "silu"])
@pytest.mark.parametrize("lead", [(37,), (3, 13)])
def test_grad_output_layouts_give_the_contiguous_gradients_bits(act, dtype, path, k, lead):
    if path == "gemm_f32" and dtype != torch.bfloat16:
        pytest.skip("gemm_f32 is a bfloat16 path")
    fastnn.set_cpu_path(path)
    try:
        for bias in (True, False):
            x, w, b = make((*lead, k), 23, dtype=dtype, bias=bias)
            inputs = (x, w, b) if bias else (x, w)
            y = fastnn.linear_act(x, w, b, act)
            for name, gout in grad_layouts(y.shape, dtype, seed=len(lead) + k).items():
                got = torch.autograd.grad(y, inputs, gout, retain_graph=True)
                want = torch.autograd.grad(y, inputs, gout.contiguous(), retain_graph=True)
                for a, e in zip(got, want):
                    assert torch.equal(a, e), (name, bias)
    finally:
        fastnn.set_cpu_path("auto")


def test_only_requested_gradients():
    x, w, b = make((8, 20), 5)
    x.requires_grad_(False)
    fastnn.linear_act(x, w, b, "relu").sum().backward()
    assert x.grad is None and w.grad is not None and b.grad is not None


def test_no_grad_and_inference_mode():
    x, w, b = make((8, 20), 5, dtype=torch.float32)
    want = torch_linear_act(x, w, b, "gelu")
    with torch.no_grad():
        torch.testing.assert_close(fastnn.linear_act(x, w, b, "gelu"), want)
    with torch.inference_mode():
        torch.testing.assert_close(fastnn.linear_act(x, w, b, "gelu"), want.detach())


@pytest.mark.parametrize("act", ["identity", "tanh", "gelu"])
@pytest.mark.parametrize("k", KS)
def test_deterministic(act, k):
    torch.manual_seed(123)
    x, w, b = make((517, k), 33, dtype=torch.float32, seed=7)
    outs = []
    for _ in range(2):
        for t in (x, w, b):
            t.grad = None
        y = fastnn.linear_act(x, w, b, act)
        y.backward(torch.ones_like(y))
        outs.append([y.detach().clone(), x.grad.clone(), w.grad.clone(), b.grad.clone()])
    for a, e in zip(*outs):
        assert torch.equal(a, e)


def test_same_result_with_one_or_two_threads():
    x, w, b = make((4096, 40), 64, dtype=torch.float32, seed=3)
    res = []
    before = torch.get_num_threads()
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            for t in (x, w, b):
                t.grad = None
            y = fastnn.linear_act(x, w, b, "tanh")
            y.backward(torch.ones_like(y))
            res.append(b.grad.clone())
    finally:
        torch.set_num_threads(before)
    assert torch.equal(res[0], res[1])


def test_opcheck():
    for k in KS:
        for act in ("relu", "gelu"):
            x, w, b = make((5, k), 4, dtype=torch.float32)
            torch.library.opcheck(torch.ops.fastnn.linear_act.default, (x, w, b, act, 0.01))
            torch.library.opcheck(torch.ops.fastnn.linear_act.default, (x, w, None, act, 0.01))
            xd = x.detach()
            torch.library.opcheck(torch.ops.fastnn.linear_act_forward.default, (xd, w.detach(), b.detach(), act, 0.01))
            y, z = torch.ops.fastnn.linear_act_forward(xd, w.detach(), b.detach(), act, 0.01)
            saved = y if act == "relu" else z
            torch.library.opcheck(torch.ops.fastnn.linear_act_backward.default,
                                  (torch.randn_like(y), xd, w.detach(), saved, True, act, 0.01, [True, True]))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    model = torch.nn.Sequential(fastnn.nn.Linear(13, 32, activation="gelu"), fastnn.nn.Linear(32, 5))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(9, 13)
    y = compiled(x)
    torch.testing.assert_close(y, model(x))
    y.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for a, e in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, e)


def test_torch_function_overrides_see_the_ops():
    # Eager calls take a typed entry (_C.linear_act, _C.mlp); __torch_function__ modes and subclasses
    # must still see torch.ops.fastnn.* as they would any torch op.
    from torch.overrides import TorchFunctionMode

    class Record(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.seen.append(func)
            return func(*args, **(kwargs or {}))

    class Tagged(torch.Tensor):
        calls = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.calls.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    x, w, b = torch.randn(6, 5), torch.randn(3, 5), torch.randn(3)
    want = fastnn.linear_act(x, w, b, "tanh")
    with Record() as mode:
        got = fastnn.linear_act(x, w, b, "tanh")
        fastnn.mlp(x, [w], [b], "tanh")
    assert torch.ops.fastnn.linear_act.default in mode.seen and torch.ops.fastnn.mlp.default in mode.seen
    assert torch.equal(got, want)
    got = fastnn.nn.Linear(5, 3, activation="tanh")(x.as_subclass(Tagged))
    assert torch.ops.fastnn.linear_act.default in Tagged.calls and isinstance(got, Tagged)


def test_typed_entry_works_under_dispatch_level_tracing():
    # Fake tensors, make_fx and vmap act at the dispatcher, below both entries: the typed one must give
    # what torch.ops gives (the same op in the graph, the same shapes and values).
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    x, w, b = torch.randn(6, 5), torch.randn(3, 5), torch.randn(3)
    for entry in (fastnn._C.linear_act, fastnn._C.mlp):
        if entry is fastnn._C.linear_act:
            f = lambda x, w, b: entry(x, w, b, "tanh", 0.01)  # noqa: E731
            op = torch.ops.fastnn.linear_act.default
        else:
            f = lambda x, w, b: entry(x, [w], [b], ["tanh"], [0.01])  # noqa: E731
            op = torch.ops.fastnn.mlp.default
        with FakeTensorMode() as mode:
            y = f(mode.from_tensor(x), mode.from_tensor(w), mode.from_tensor(b))
            assert tuple(y.shape) == (6, 3)
        graph = make_fx(f)(x, w, b).graph
        assert [n.target for n in graph.nodes if n.op == "call_function"] == [op]
        if op is torch.ops.fastnn.linear_act.default:  # mlp (tensor lists) has no vmap fallback either way
            batched = torch.func.vmap(lambda xi: f(xi, w, b))(x.unsqueeze(1))
            torch.testing.assert_close(batched.squeeze(1), f(x, w, b))


class TestBadInput:
    def test_unknown_activation(self):
        x, w, b = make((3, 4), 2, dtype=torch.float32)
        with pytest.raises(ValueError, match="unknown activation 'swish'"):
            fastnn.linear_act(x, w, b, "swish")

    def test_dtype_mismatch(self):
        x, w, b = make((3, 4), 2, dtype=torch.float32)
        with pytest.raises(RuntimeError, match="fastnn.linear_act: dtype mismatch"):
            fastnn.linear_act(x.double(), w, b, "relu")
        with pytest.raises(RuntimeError, match="bias is"):
            fastnn.linear_act(x, w, b.double(), "relu")

    def test_wrong_feature_size(self):
        x, w, b = make((3, 4), 2, dtype=torch.float32)
        with pytest.raises(RuntimeError, match="in_features=4"):
            fastnn.linear_act(torch.randn(3, 5), w, b, "relu")

    def test_wrong_bias_size(self):
        x, w, _ = make((3, 4), 2, dtype=torch.float32)
        with pytest.raises(RuntimeError, match="bias must be 1-D"):
            fastnn.linear_act(x, w, torch.randn(3), "relu")

    def test_integer_tensors(self):
        with pytest.raises(RuntimeError, match="floating-point"):
            fastnn.linear_act(torch.ones(3, 4, dtype=torch.int64), torch.ones(2, 4, dtype=torch.int64), None, "relu")

    def test_weight_rank(self):
        with pytest.raises(RuntimeError, match="weight must be 2-D"):
            fastnn.linear_act(torch.randn(3, 4), torch.randn(4), None, "relu")
        with pytest.raises(RuntimeError, match="weight must be 2-D"):
            fastnn.linear_act(torch.randn(3, 4), torch.randn(1, 2, 4), None, "relu")

    def test_scalar_input(self):
        with pytest.raises(RuntimeError, match="at least 1 dimension"):
            fastnn.linear_act(torch.tensor(1.0), torch.randn(2, 1), None, "relu")

    def test_half_on_cpu(self):
        with pytest.raises(RuntimeError, match="unsupported dtype"):
            fastnn.linear_act(torch.randn(3, 4).half(), torch.randn(2, 4).half(), None, "relu")

    def test_device_mismatch(self):
        x = torch.randn(3, 4)
        w = torch.randn(2, 4, device="meta")
        with pytest.raises(RuntimeError, match="device mismatch"):
            torch.ops.fastnn.linear_act_forward(x, w, None, "relu", 0.01)


def test_autocast_cpu_runs_in_bfloat16_like_nn_linear():
    lin = fastnn.nn.Linear(19, 7, activation="gelu")
    ref = torch.nn.Linear(19, 7)
    ref.load_state_dict(lin.state_dict())
    x = torch.randn(5, 19, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
        r = torch.nn.functional.gelu(ref(x))
    assert y.dtype == r.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), r.float(), rtol=2e-2, atol=2e-2)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and lin.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("path,k", [("direct", 5), ("gemm", 19), ("gemm_f32", 19)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("act", ACTS)
def test_output_only_call_has_the_recorded_forwards_bits(act, dtype, path, k):
    # With nothing recorded the op keeps no pre-activation (the activation goes over the GEMM's
    # output in place); the output must still be the recorded forward's, bit for bit.
    if path == "gemm_f32" and dtype != torch.bfloat16:
        pytest.skip("gemm_f32 is a bfloat16 path")
    fastnn.set_cpu_path(path)
    try:
        for bias in (True, False):
            x, w, b = make((37, k), 23, dtype=dtype, bias=bias, seed=None)
            y = fastnn.linear_act(x, w, b, act, -0.3)
            assert y.grad_fn is not None
            with torch.no_grad():
                assert torch.equal(fastnn.linear_act(x, w, b, act, -0.3), y), (act, bias)
            with torch.inference_mode():
                assert torch.equal(fastnn.linear_act(x, w, b, act, -0.3), y), (act, bias)
    finally:
        fastnn.set_cpu_path("auto")


def test_gelu_float32_accuracy_over_the_whole_range(cpu_isa):
    """The GELU of the activation table (fastmath.h: z Phi(z), Phi from a tail form) against float64's
    z erfc(-z/sqrt2)/2, on a dense grid: relative error below 1e-5 (measured 4e-6) even in the lower
    tail, where 1 + erf(z/sqrt2) cancels (torch's float32 GELU returns 0 there, relative error 1; its
    float64 GELU is off by 2x at z = -8.4); the derivative within 1e-6 absolute."""
    z = torch.linspace(-30, 30, 300001)
    zd = z.double().requires_grad_()
    ref = zd * 0.5 * torch.erfc(-zd * 0.5 ** 0.5)
    gref, = torch.autograd.grad(ref.sum(), zd)
    x = z[:, None].clone().requires_grad_()
    y = fastnn.linear_act(x, torch.ones(1, 1), None, "gelu")  # one input: the direct kernels
    g, = torch.autograd.grad(y.sum(), x)
    y, g, ref = y[:, 0].double(), g[:, 0].double(), ref.detach()
    seen = ref.abs() > 1e-30  # to z ~ -11.7; below, float32 keeps 0 or tiny values either way
    assert ((y - ref).abs()[seen] / ref.abs()[seen]).max() < 1e-5
    assert (y[~seen].abs() < 1e-29).all()
    assert (g - gref).abs().max() < 1e-6


def _libm_reference(act, z):
    """act(z) and act'(z) in float64 from Python's math module (the C library: within 1 ulp)."""
    import math
    sig = lambda t: 1.0 / (1.0 + math.exp(-t)) if t > -700 else math.exp(t)  # noqa: E731
    k2, a = 2.0 * math.sqrt(2.0 / math.pi), 0.044715
    f = {"sigmoid": (sig, lambda t: sig(t) * (1 - sig(t))),
         "tanh": (math.tanh, lambda t: 1 - math.tanh(t) ** 2),
         "silu": (lambda t: t * sig(t), lambda t: sig(t) * (1 + t * (1 - sig(t)))),
         "softplus": (lambda t: t if t > 20 else math.log1p(math.exp(t)), lambda t: 1.0 if t > 20 else sig(t)),
         "gelu_tanh": (lambda t: t * sig(k2 * (t + a * t ** 3)),
                       lambda t: sig(k2 * (t + a * t ** 3)) + t * sig(k2 * (t + a * t ** 3)) *
                       (1 - sig(k2 * (t + a * t ** 3))) * k2 * (1 + 3 * a * t * t))}[act]
    return (torch.tensor([f[0](t) for t in z.tolist()], dtype=torch.float64),
            torch.tensor([f[1](t) for t in z.tolist()], dtype=torch.float64))


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "silu", "softplus", "gelu_tanh"])
def test_float64_activations_within_a_few_ulp(act, cpu_isa):
    """The activation table's float64 exp, tanh, sigmoid and log1p (fastmath.h: vectorizable forms,
    3-6x faster than the C library's) against the C library on a dense grid: values within 8 ulp times
    the exponent's size (measured at most 5 ulp where that is 1), derivatives within 1e-14."""
    z = torch.linspace(-40, 40, 40001, dtype=torch.float64)
    z = torch.cat([z, torch.tensor([0.0, 1e-300, -1e-300, 1e-8, -1e-8, 0.3499999, 0.35, 0.3500001])])
    want, dwant = _libm_reference(act, z)
    x = z[:, None].clone().requires_grad_()
    y = fastnn.linear_act(x, torch.ones(1, 1, dtype=torch.float64), None, act)  # the direct kernels
    g, = torch.autograd.grad(y.sum(), x)
    y, g = y[:, 0].detach(), g[:, 0]
    # e^t's relative error grows with |t| (an ulp of t), whoever computes it: the bound scales with the
    # exponent's size; below t = -708 (a subnormal result) it is flushed to 0, as the float32 forms do.
    t = (2.0 * (2.0 / torch.pi) ** 0.5 * (z + 0.044715 * z ** 3) if act == "gelu_tanh" else 2 * z).abs()
    bound = 8 * 2.0 ** -52 * (1 + t) * want.abs() + 1e-300
    assert ((y - want).abs() <= bound).all(), ((y - want).abs() / bound).max()
    torch.testing.assert_close(g, dwant, rtol=1e-14, atol=1e-14)


def test_gelu_float64_accuracy_into_the_lower_tail(cpu_isa):
    """float64 GELU (fastmath.h: erfc from a Chebyshev series of log(erfc(u) e^(u^2) / t), the
    exponent -x^2/2 taken exactly where the table has FMA) against 30-digit arithmetic: relative error
    below 2e-14 from the center into the lower tail (GELU ~ 1e-300 at z = -37; the C library's
    erfc(-z/sqrt2) is off by ~1e-13 there, from rounding z/sqrt2); the derivative within 1e-14."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 30
    z = torch.cat([torch.linspace(-37.4, 9, 6001, dtype=torch.float64),
                   torch.tensor([0.0, 1e-300, -1e-8, 1e-8, -0.5, 0.5], dtype=torch.float64)])
    phi = [mp.erfc(-mp.mpf(t) / mp.sqrt(2)) / 2 for t in z.tolist()]
    pdf = [mp.exp(-mp.mpf(t) ** 2 / 2) / mp.sqrt(2 * mp.pi) for t in z.tolist()]
    want = torch.tensor([float(mp.mpf(t) * p) for t, p in zip(z.tolist(), phi)], dtype=torch.float64)
    dwant = torch.tensor([float(p + mp.mpf(t) * d) for t, p, d in zip(z.tolist(), phi, pdf)], dtype=torch.float64)
    x = z[:, None].clone().requires_grad_()
    y = fastnn.linear_act(x, torch.ones(1, 1, dtype=torch.float64), None, "gelu")
    g, = torch.autograd.grad(y.sum(), x)
    y, g = y[:, 0].detach(), g[:, 0]
    seen = want.abs() > 1e-300
    rel = (y - want).abs()[seen] / want.abs()[seen]
    # the baseline table has no fused multiply-add to split x^2 exactly: the C library's accuracy there
    bound = 1e-13 if cpu_isa == "base" else 2e-14
    assert rel.max() < bound, (rel.max(), z[seen][rel.argmax()])
    assert (y[~seen].abs() <= 1e-299).all()
    torch.testing.assert_close(g, dwant, rtol=1e-14, atol=1e-14)
