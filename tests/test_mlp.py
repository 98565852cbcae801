"""fastnn.mlp / fastnn.nn.MLP / fuse(): a chain of Linear+activation layers as one op."""
import copy

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import fastnn
from fastnn.bench.timing import allocator_bytes
from fastnn.validate import _Hetero  # the seed regression network
from torch_reference import clear_of_kinks, torch_act

ACTS = fastnn.ACTIVATIONS


def chain_ref(x, weights, biases, acts, slopes):
    for w, b, a, s in zip(weights, biases, acts, slopes):
        x = torch_act(a, nn.functional.linear(x, w, b), s)
    return x


def make_chain(widths, acts, bias=True, dtype=torch.float64, seed=0, slopes=None):
    g = torch.Generator().manual_seed(seed)
    n = len(widths) - 1
    ws = [(torch.randn(widths[i + 1], widths[i], generator=g, dtype=dtype) / widths[i] ** 0.5).requires_grad_()
          for i in range(n)]
    bs = [torch.randn(widths[i + 1], generator=g, dtype=dtype).requires_grad_() if (bias is True or
          (bias == "some" and i % 2 == 0)) else None for i in range(n)]
    acts = [acts] * n if isinstance(acts, str) else list(acts)
    slopes = slopes or [0.1 if i % 2 else -0.2 for i in range(n)]  # both leaky_relu regimes
    return ws, bs, acts, slopes


def _pre_activations(x, weights, biases, acts, slopes):
    zs = []
    for w, b, a, s in zip(weights, biases, acts, slopes):
        zs.append(nn.functional.linear(x, w, b))
        x = torch_act(a, zs[-1], s)
    return zs


def _grad_inputs(x, ws, bs):
    return [x, *ws, *[b for b in bs if b is not None]]


def _fn(n_w, bs, acts, slopes):
    def f(x, *rest):
        ws, it = list(rest[:n_w]), iter(rest[n_w:])
        return fastnn.mlp(x, ws, [next(it) if b is not None else None for b in bs], acts, slopes)
    return f


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False, "some"])
def test_gradcheck_every_activation(act, bias):
    widths = [3, 17, 1, 5]  # odd widths, one of 1
    ws, bs, acts, slopes = make_chain(widths, act, bias)
    x = clear_of_kinks(lambda: torch.randn(6, 3, dtype=torch.float64, requires_grad=True),
                       lambda x: _pre_activations(x, ws, bs, acts, slopes), acts)
    assert gradcheck(_fn(len(ws), bs, acts, slopes), _grad_inputs(x, ws, bs), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 5])
def test_gradcheck_depths_mixed_activations(n_layers):
    widths = [130, 3, 17, 1, 130, 4][:n_layers + 1]
    acts = ["tanh", "gelu", "sigmoid", "softplus", "silu"][:n_layers]
    ws, bs, acts, slopes = make_chain(widths, acts, "some", seed=n_layers)
    x = torch.randn(4, widths[0], dtype=torch.float64, requires_grad=True)
    assert gradcheck(_fn(len(ws), bs, acts, slopes), _grad_inputs(x, ws, bs), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("widths", [[3, 1030, 2], [1030, 4, 3], [3, 260, 2]])
def test_gradcheck_wide_path(widths):
    """Wider than every tiled limit (layer by layer), and wider than 256 (tiled only with AVX-512)."""
    ws, bs, acts, slopes = make_chain(widths, ["silu", "sigmoid"], "some")
    x = torch.randn(3, widths[0], dtype=torch.float64, requires_grad=True)
    assert gradcheck(_fn(len(ws), bs, acts, slopes), _grad_inputs(x, ws, bs), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_nd_and_strided_inputs_and_weights():
    ws, bs, acts, slopes = make_chain([5, 7, 3], ["gelu_tanh", "silu"])
    ws = [w.detach().t().contiguous().t().requires_grad_() for w in ws]  # column-major weights
    assert not ws[0].is_contiguous()
    x = torch.randn(2, 3, 10, dtype=torch.float64)[:, :, ::2].requires_grad_()  # (2, 3, 5), strided
    assert gradcheck(_fn(len(ws), bs, acts, slopes), _grad_inputs(x, ws, bs), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("acts", [["tanh", "softplus"], ["gelu", "sigmoid", "silu"]])
def test_gradgradcheck(acts):
    ws, bs, acts, slopes = make_chain([4, 6, 5, 3][:len(acts) + 1], acts)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(_fn(len(ws), bs, acts, slopes), _grad_inputs(x, ws, bs), eps=1e-6, atol=1e-4, rtol=1e-3)


def test_empty_batch():
    ws, bs, acts, slopes = make_chain([4, 6, 3], ["relu", "tanh"], dtype=torch.float32)
    x = torch.randn(0, 4, requires_grad=True)
    y = fastnn.mlp(x, ws, bs, acts, slopes)
    assert y.shape == (0, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 4)
    for w in ws:
        assert torch.equal(w.grad, torch.zeros_like(w))
    for b in bs:
        assert torch.equal(b.grad, torch.zeros_like(b))


# float32/bfloat16 parity with the equivalent nn.Sequential: the difference is each layer's own
# (linear_act's) rounding, compounded over the chain; bounds relative to each tensor's scale.
PARITY_TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2}


# bfloat16 chains use smooth activations: a kink (relu) flips sides under bf16 rounding of z and
# moves a gradient by a whole unit, which is rounding, not a bug.
@pytest.mark.parametrize("dtype,acts", [
    (torch.float32, ["relu", "relu", "identity"]), (torch.float32, ["tanh", "gelu", "silu", "sigmoid"]),
    (torch.float32, ["leaky_relu", "softplus", "gelu_tanh"]), (torch.bfloat16, ["tanh", "gelu", "silu", "sigmoid"]),
    (torch.bfloat16, ["softplus", "gelu_tanh", "identity"])], ids=str)
def test_parity_with_sequential(dtype, acts, cpu_isa):
    widths = [37, 130, 17, 64, 9][:len(acts) + 1]
    ws, bs, acts, slopes = make_chain(widths, acts, dtype=torch.float32, seed=3)
    ws = [w.detach().to(dtype).requires_grad_() for w in ws]
    bs = [b.detach().to(dtype).requires_grad_() for b in bs]
    x = torch.randn(65, widths[0], dtype=dtype, requires_grad=True)
    y = fastnn.mlp(x, ws, bs, acts, slopes)
    g = torch.randn_like(y)
    y.backward(g)
    ref_in = [t.detach().clone().requires_grad_() for t in [x, *ws, *bs]]
    xr, wr, br = ref_in[0], ref_in[1:1 + len(ws)], ref_in[1 + len(ws):]
    yr = chain_ref(xr, wr, br, acts, slopes)
    yr.backward(g)
    tol = PARITY_TOL[dtype]
    for a, e in [(y, yr), (x.grad, xr.grad)] + list(zip([w.grad for w in ws], [w.grad for w in wr])) + \
            list(zip([b.grad for b in bs], [b.grad for b in br])):
        scale = e.float().abs().max().item() or 1.0
        torch.testing.assert_close(a.float(), e.float(), rtol=tol, atol=tol * scale)


def test_wide_chain_is_layer_by_layer_linear_act():
    """Wider than the cache-blocked path takes on any instruction set (1024), the op runs linear_act's
    kernels layer by layer: outputs and gradients equal a chain of linear_act calls bit for bit."""
    ws, bs, acts, slopes = make_chain([20, 1100, 8, 5], ["gelu", "tanh", "identity"], dtype=torch.float32)
    assert fastnn.mlp_path(torch.empty(0, 20), ws)[0] == "layers"
    x = torch.randn(40, 20, requires_grad=True)
    y = fastnn.mlp(x, ws, bs, acts, slopes)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *ws, *bs], g)
    h = x
    for w, b, a, s in zip(ws, bs, acts, slopes):
        h = fastnn.linear_act(h, w, b, a, s)
    grads_ref = torch.autograd.grad(h, [x, *ws, *bs], g)
    assert torch.equal(y, h)
    for a, b in zip(grads, grads_ref):
        assert torch.equal(a, b)


def _run_grads(ws, bs, acts, slopes, x):
    y = fastnn.mlp(x, ws, bs, acts, slopes)
    return [y.detach(), *torch.autograd.grad(y.sum(), [x, *ws, *bs])]


def test_deterministic_across_runs():
    ws, bs, acts, slopes = make_chain([64, 128, 128, 10], ["relu", "tanh", "identity"], dtype=torch.float32)
    x = torch.randn(1000, 64, requires_grad=True)
    first = _run_grads(ws, bs, acts, slopes, x)
    for _ in range(2):
        for a, b in zip(first, _run_grads(ws, bs, acts, slopes, x)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_narrow_path_same_bits_for_any_thread_count(dtype, cpu_isa):
    """The cache-blocked path sums weight/bias gradients per fixed chunk of rows, in chunk order."""
    ws, bs, acts, slopes = make_chain([20, 64, 128, 3], ["tanh", "gelu", "identity"], dtype=dtype)
    x = torch.randn(1000, 20, dtype=dtype, requires_grad=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run_grads(ws, bs, acts, slopes, x)
        torch.set_num_threads(max(2, threads))
        many = _run_grads(ws, bs, acts, slopes, x)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many):
        assert torch.equal(a, b)


def test_opcheck():
    ws, bs, acts, slopes = make_chain([5, 7, 3], ["gelu", "tanh"], bias="some", dtype=torch.float32)
    x = torch.randn(4, 5, requires_grad=True)
    torch.library.opcheck(torch.ops.fastnn.mlp.default, (x, ws, bs, acts, slopes))
    torch.library.opcheck(torch.ops.fastnn.mlp_forward.default, (x.detach(), [w.detach() for w in ws],
                                                                 [b.detach() if b is not None else None for b in bs],
                                                                 acts, slopes))
    torch.library.opcheck(torch.ops.fastnn.activation.default, (torch.randn(3, 4), "silu", 0.01))


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    model = fastnn.nn.MLP([6, 16, 16, 2], activation="tanh")
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(9, 6)
    y = compiled(x)
    y.sum().backward()
    yr = ref(x)
    yr.sum().backward()
    torch.testing.assert_close(y, yr, rtol=0, atol=0)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)


def test_autocast_bf16():
    model = fastnn.nn.MLP([8, 16, 4], activation="gelu")
    x = torch.randn(5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert model[0].weight.grad.dtype == torch.float32


# ---- modules ----

def test_mlp_module_is_linear_compatible():
    torch.manual_seed(0)
    m = fastnn.nn.MLP([5, 8, 3], activation="relu", output_activation="sigmoid")
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3), nn.Sigmoid())
    assert [k for k in m.state_dict()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    for p, q in zip(m.parameters(), ref.parameters()):  # nn.Linear's initialisation, same RNG draws
        assert torch.equal(p, q)
    assert m[1].activation == "sigmoid" and m[0].activation == "relu"
    with pytest.raises(ValueError, match="fastnn.nn.MLP"):
        fastnn.nn.MLP([5])
    with pytest.raises(ValueError, match="unknown activation"):
        fastnn.nn.MLP([5, 3], output_activation="swish")


SEEDS = {
    "hetero": (_Hetero, 1),
    "notmnist": (lambda: nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                       nn.Linear(128, 10)), 784),
    "notmnist-2": (lambda: nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)), 784),
    "mixed": (lambda: nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 8), nn.Linear(8, 5), nn.Hardswish(),
                                    nn.Linear(5, 4), nn.LeakyReLU(0.2), nn.Linear(4, 3)), 6),
    # wider than any tiled limit: one op where a layer saves its pre-activation, else layer by layer
    "wide-gelu": (lambda: nn.Sequential(nn.Linear(1100, 20), nn.GELU(), nn.Linear(20, 5)), 1100),
    "wide-relu": (lambda: nn.Sequential(nn.Linear(1100, 20), nn.ReLU(), nn.Linear(20, 5)), 1100),
}


@pytest.mark.parametrize("name", list(SEEDS))
def test_fuse_same_outputs_gradients_and_keys(name):
    make, k = SEEDS[name]
    torch.manual_seed(0)
    model = make()
    fused = fastnn.nn.fuse(model)
    assert list(fused.state_dict()) == list(model.state_dict())
    x = torch.randn(33, k)
    y, yf = model(x), fused(x)
    g = torch.randn_like(y)
    y.backward(g)
    yf.backward(g)
    torch.testing.assert_close(yf, y, rtol=1e-5, atol=1e-5)
    for (n, p), (nf, q) in zip(model.named_parameters(), fused.named_parameters()):
        assert n == nf
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5)
    # checkpoints load both ways
    model.load_state_dict(fused.state_dict())
    fused.load_state_dict(model.state_dict())


@pytest.mark.parametrize("name,runs", [("mixed", [3, 2]), ("notmnist", "isa"), ("wide-gelu", [2]),
                                       ("wide-relu", [])])
def test_fuse_runs_are_one_op(name, runs, cpu_isa):
    """mixed: Linear+GELU, Linear, Linear form one run (ended by Hardswish, unsupported), then
    Linear+LeakyReLU, Linear. notmnist: one run where the tiled kernels measured faster on this
    machine (fastnn.mlp_path), else its layers one by one (relu layers keep no extra tensor)."""
    make, k = SEEDS[name]
    fused = fastnn.nn.fuse(make())
    if runs == "isa":
        lin = list(fused)
        path = fastnn.mlp_path(torch.randn(2, k), [m.weight for m in lin], [m.bias for m in lin],
                               [m.activation for m in lin])[0]
        runs = [3] if path == "tiled" else []
    assert isinstance(fused, fastnn.nn.FusedSequential)
    seen = []
    orig = torch.ops.fastnn.mlp.default

    def spy(*args):
        seen.append(len(args[1]))
        return orig(*args)

    import fastnn.nn as fnn
    fnn.mlp_op, saved = spy, fnn.mlp_op
    try:
        fused(torch.randn(2, k))
    finally:
        fnn.mlp_op = saved
    assert seen == runs


# ---- bad input ----

def _bad(match, x, ws, bs, acts, slopes, exc=(RuntimeError, ValueError)):
    with pytest.raises(exc, match=match):
        fastnn.mlp(x, ws, bs, acts, slopes)


def test_bad_input_names_op_layer_and_problem():
    x = torch.randn(4, 5)
    w0, w1 = torch.randn(6, 5), torch.randn(3, 6)
    _bad(r"fastnn.mlp: layer 1: weight expects in_features=7 but layer 0 has out_features=6", x,
         [w0, torch.randn(3, 7)], [None, None], ["relu", "relu"], [0.01, 0.01])
    _bad(r"fastnn.mlp: layer 0: input has 4 features", torch.randn(2, 4), [w0, w1], [None, None], ["relu"] * 2,
         [0.01] * 2)
    _bad(r"fastnn.mlp: weights, biases, activations and negative_slopes must have one entry per layer", x,
         [w0, w1], [None], ["relu", "relu"], [0.01, 0.01])
    _bad(r"fastnn.mlp: layer 1: unknown activation 'swish'", x, [w0, w1], [None, None], ["relu", "swish"],
         [0.01, 0.01])
    _bad(r"fastnn.mlp: layer 1: weight must be 2-D .* got 3-D", x, [w0, torch.randn(3, 6, 1)], [None, None],
         ["relu"] * 2, [0.01] * 2)
    _bad(r"fastnn.mlp: layer 1: dtype mismatch", x, [w0, w1.double()], [None, None], ["relu"] * 2, [0.01] * 2)
    _bad(r"fastnn.mlp: layer 0: bias must be 1-D of size out_features=6", x, [w0, w1], [torch.randn(5), None],
         ["relu"] * 2, [0.01] * 2)
    _bad(r"fastnn.mlp: layer 1: device mismatch", x, [w0, w1.to("meta")], [None, None], ["relu"] * 2, [0.01] * 2)
    _bad(r"fastnn.mlp: layer 0: unknown activation 'swish'", x, [w0], [None], ["swish"], [0.01])
    _bad(r"fastnn.mlp: needs at least one layer", x, [], [], [], [])
    # the backend ops check before they look at any weight
    with pytest.raises(ValueError, match="fastnn.mlp: needs at least one layer"):
        torch.ops.fastnn.mlp_forward(x, [], [], [], [])
    with pytest.raises(RuntimeError, match=r"fastnn.mlp: layer 0: weight must be 2-D"):
        torch.ops.fastnn.mlp_forward(x, [torch.randn(6)], [None], ["relu"], [0.01])


def test_mlp_path_says_which_kernels_run_and_why():
    x = torch.randn(3, 8)
    narrow = [torch.randn(16, 8), torch.randn(4, 16)]
    wide = [torch.randn(1100, 8), torch.randn(4, 1100)]
    path, why = fastnn.mlp_path(x, narrow)
    assert path in ("tiled", "layers") and "measured on this machine" in why and " us" in why
    path, why = fastnn.mlp_path(x, wide)
    assert path == "layers" and "1024" in why  # beyond the candidates: not even measured
    if not torch.cuda.is_available():
        path, why = fastnn.mlp_path(x.to("meta"), narrow)
        assert path == "layers" and "meta" in why
    with pytest.raises(ValueError, match="fastnn.mlp"):
        fastnn.mlp_path(x, [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_parity_wide_tiled_chain(dtype, cpu_isa, cpu_path):
    """A notMNIST-sized chain on both paths and every kernel table, against float64."""
    acts = ["relu", "tanh", "identity"] if dtype == torch.float32 else ["gelu", "tanh", "identity"]
    ws, bs, acts, slopes = make_chain([784, 300, 33, 10], acts, dtype=torch.float32, seed=5)
    ws = [w.detach().to(dtype).requires_grad_() for w in ws]
    bs = [b.detach().to(dtype).requires_grad_() for b in bs]
    x = torch.randn(70, 784, dtype=dtype, requires_grad=True)
    y = fastnn.mlp(x, ws, bs, acts, slopes)
    g = torch.randn_like(y)
    got = [y, *torch.autograd.grad(y, [x, *ws, *bs], g)]
    ref_in = [t.detach().double().requires_grad_() for t in [x, *ws, *bs]]
    yr = chain_ref(ref_in[0], ref_in[1:4], ref_in[4:], acts, slopes)
    want = [yr, *torch.autograd.grad(yr, ref_in, g.double())]
    tol = PARITY_TOL[dtype]
    for a, e in zip(got, want):
        scale = e.abs().max().item() or 1.0
        torch.testing.assert_close(a.double(), e, rtol=tol, atol=tol * scale)


def _held_after(fn):
    """Bytes torch's CPU allocator still holds after fn() (allocated minus freed while it ran)."""
    return allocator_bytes(fn)[0]


def _peak_during(fn):
    """The most bytes torch's CPU allocator had handed out at once while fn() ran."""
    return allocator_bytes(fn)[1]


def _square_stack(act, width, L=4, B=256):
    """L Linear(width, width) + act layers, eager and fuse()d, an input of B rows, and the bytes of
    one float32 activation."""
    act_module = {"gelu": nn.GELU, "relu": nn.ReLU}[act]
    model = nn.Sequential(*[m for _ in range(L) for m in (nn.Linear(width, width), act_module())])
    return L, model, fastnn.nn.fuse(copy.deepcopy(model)), torch.randn(B, width), B * width * 4


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_forward_keeps_one_activation_per_layer(act):
    """What a training forward leaves for backward: the op one activation-sized block per layer
    (the last one may be the output itself), on both CPU paths; eager GELU layers keep two (the
    Linear's input and the GELU's), eager ReLU layers one (the ReLU's output is the next Linear's
    input). The network's input is the caller's and counts for neither."""
    for width in (64, 1100):  # tiled, layer by layer
        L, model, fused, x, one = _square_stack(act, width)
        ours = _held_after(lambda: fused(x))
        assert ours <= (L + 1) * one + 64 * 1024, (width, ours / one)
        if act == "gelu":
            assert _held_after(lambda: model(x)) >= 2 * L * one  # L - 1 more than ours


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_output_only_forward_keeps_nothing(act, cpu_path):
    """With nothing recorded (no_grad, inference) neither path builds the saved arena or keeps a
    pre-activation: at most two activation-sized blocks exist at once (a layer's input and output),
    where the recorded forward holds one per layer."""
    for width in (64, 1100):  # within the tiled limits, and past them (layer by layer)
        if cpu_path == "tiled" and width > 256:
            continue  # out of the tiled candidates' range: layers either way
        L, model, fused, x, one = _square_stack(act, width)
        with torch.no_grad():
            peak = _peak_during(lambda: fused(x))
        assert peak <= 2 * one + 64 * 1024, (width, peak / one)
        assert _peak_during(lambda: fused(x)) >= L * one  # recorded: the arena


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layer_path", ["direct", "gemm"])
def test_output_only_forward_has_the_recorded_forwards_bits(dtype, cpu_isa, cpu_path, layer_path):
    # On the same paths (the layers' linear_act path forced too: each kind of call has its own
    # measured choice), every activation, both last-layer cases (the output saved or its
    # pre-activation), odd batch.
    if cpu_path == "tiled" and layer_path == "gemm":
        pytest.skip("the tiled chain runs no linear_act")
    fastnn.set_cpu_path(f"{cpu_path},{layer_path}")
    for act in ACTS:
        for last in ("identity", act):
            ws, bs, acts, slopes = make_chain([7, 33, 19, 5], [act, act, last], "some", dtype=dtype)
            x = torch.randn(45, 7, dtype=dtype)
            y = fastnn.mlp(x, ws, bs, acts, slopes)
            assert y.grad_fn is not None
            with torch.no_grad():
                assert torch.equal(fastnn.mlp(x, ws, bs, acts, slopes), y), (act, last)
            with torch.inference_mode():
                assert torch.equal(fastnn.mlp(x, ws, bs, acts, slopes), y), (act, last)
