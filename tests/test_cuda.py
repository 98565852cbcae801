"""CUDA: linear_act and the fused optimizers on an NVIDIA GPU (skipped without one)."""
import copy
import inspect

import pytest
import torch
from torch.autograd import gradcheck

import fastnn
from torch_reference import torch_linear_act

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_kernels")]
DEV = "cuda"
ACTS = fastnn.ACTIVATIONS




def rand(*shape, dtype=torch.float32, requires_grad=True):
    return torch.randn(*shape, device=DEV, dtype=dtype).requires_grad_(requires_grad)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64_cuda(act, bias):
    x, w = rand(6, 5, dtype=torch.float64), rand(4, 5, dtype=torch.float64)
    b = rand(4, dtype=torch.float64) if bias else None
    inputs = (x, w, b) if bias else (x, w)
    assert gradcheck(lambda *a: fastnn.linear_act(*a, activation=act) if len(a) == 3 else
                     fastnn.linear_act(a[0], a[1], None, act), inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# fp32: TF32 is off by default for matmul in torch, so GEMMs agree closely; fp16/bf16 round the
# GEMM output and the activation input once more than torch's fused path may: tolerance of a few
# units in the last place of the reduced type, relative to the output scale.
TOL = {torch.float32: 2e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(37, 29, 61), (3, 7, 130, 33)])
def test_parity_with_torch_cuda(act, dtype, shape):
    *lead, k, n = shape
    x, w, b = rand(*lead, k, dtype=dtype), rand(n, k, dtype=dtype), rand(n, dtype=dtype)
    y = fastnn.linear_act(x, w, b, act)
    g = torch.randn_like(y)
    y.backward(g)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y2 = torch_linear_act(x2, w2, b2, act)
    y2.backward(g)
    tol = TOL[dtype]
    for a, e in ((y, y2), (x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        scale = e.float().abs().max().item() or 1.0
        torch.testing.assert_close(a.float(), e.float(), rtol=tol, atol=tol * scale)


def test_non_contiguous_cuda():
    x = rand(19, 12).t()  # (12, 19) strided
    w = rand(19, 8).t()   # (8, 19) strided
    b = rand(16)[::2]
    y = fastnn.linear_act(x, w, b, "silu")
    torch.testing.assert_close(y, torch_linear_act(x, w, b, "silu"), rtol=2e-4, atol=2e-4)


def test_cpu_cuda_mix_is_an_error():
    with pytest.raises(RuntimeError, match="device mismatch"):
        fastnn.linear_act(torch.randn(3, 4), torch.randn(2, 4, device=DEV), None, "relu")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_cuda(dtype):
    lin = fastnn.nn.Linear(32, 16, activation="gelu").to(DEV)
    x = torch.randn(8, 32, device=DEV)
    with torch.autocast("cuda", dtype=dtype):
        y = lin(x)
    assert y.dtype == dtype
    y.float().sum().backward()
    assert lin.weight.grad.dtype == torch.float32


def test_cuda_graph_of_linear_act():
    lin = fastnn.nn.Linear(64, 64, activation="tanh").to(DEV)
    x = torch.randn(128, 64, device=DEV)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            lin(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g):
        out = lin(x)
    x.copy_(torch.randn_like(x))
    g.replay()
    torch.testing.assert_close(out, torch_linear_act(x, lin.weight, lin.bias, "tanh"), rtol=2e-4, atol=2e-4)


OPTS = [("Adam", dict(lr=1e-2)), ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.1)),
        ("AdamW", dict(lr=1e-2, weight_decay=0.1)), ("RMSprop", dict(lr=1e-3)),
        ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.9)), ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
        ("Adagrad", dict(lr=0.05))]


def _trajectory(opt_cls, params, opts, steps=50):
    """The parameters after ``steps`` steps of seeded random gradients."""
    ps = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = opt_cls(ps, **opts)
    g = torch.Generator(device=DEV).manual_seed(1)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, device=DEV, generator=g)
        opt.step()
    return ps


def _max_abs(xs, ys):
    return max((x - y).abs().max().item() for x, y in zip(xs, ys))


@pytest.mark.parametrize("name,opts", OPTS)
@pytest.mark.parametrize("capturable", [False, True])
def test_optimizer_trajectory_cuda(name, opts, capturable):
    torch.manual_seed(0)
    start = [torch.randn(*s, device=DEV) for s in [(70000,), (33, 7), (5,)]]  # 70000: two 64K chunks
    torch_cls = getattr(torch.optim, name)
    if capturable and "capturable" not in inspect.signature(torch_cls).parameters:
        pytest.skip(f"torch.optim.{name} has no capturable argument in torch {torch.__version__}")
    plain = _trajectory(lambda p, **kw: torch_cls(p, foreach=False, **kw), start, opts)
    fast = _trajectory(getattr(fastnn.optim, name), start, dict(opts, capturable=capturable) if capturable else opts)
    # fastnn computes the per-step scalars (bias corrections, step size) in double whether or not the
    # step count lives on the device, as torch's plain path does: same tolerance either way.
    for a, b in zip(plain, fast):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    if capturable:
        # torch's own capturable path computes those scalars on the device in float32 (beta2 rounded
        # to float32 alone moves 1 - beta2 by 1.3e-5 relative); it is as far from its plain path as
        # fastnn may be from it.
        cap = _trajectory(lambda p, **kw: torch_cls(p, foreach=False, capturable=True, **kw), start, opts)
        assert _max_abs(fast, cap) <= 2 * _max_abs(plain, cap) + 1e-6, (_max_abs(fast, cap), _max_abs(plain, cap))


def test_capturable_adam_step_in_cuda_graph():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(1000, device=DEV))
    ref = torch.nn.Parameter(p.detach().clone())
    opt = fastnn.optim.Adam([p], lr=1e-2, capturable=True)
    ropt = torch.optim.Adam([ref], lr=1e-2, capturable=True, foreach=False)
    grads = [torch.randn(1000, device=DEV) for _ in range(6)]
    p.grad = grads[0].clone()
    opt.step()  # creates state outside the capture
    ref.grad = grads[0].clone()
    ropt.step()
    static_grad = p.grad
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        with torch.cuda.graph(g):
            opt.step()
    torch.cuda.current_stream().wait_stream(s)
    for gr in grads[1:]:
        static_grad.copy_(gr)
        g.replay()
        ref.grad = gr.clone()
        ropt.step()
    torch.testing.assert_close(p, ref, rtol=1e-5, atol=1e-6)
    assert opt.state[p]["step"].item() == 6


def test_grad_scaler_cuda_skips_on_inf():
    model = torch.nn.Linear(8, 4).to(DEV)
    opt = fastnn.optim.Adam(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(4, 8, device=DEV)
    scaler.scale(model(x).sum()).backward()
    scaler.step(opt)
    scaler.update()
    before = copy.deepcopy(model.state_dict())
    opt.zero_grad()
    scaler.scale(model(x).sum()).backward()
    model.weight.grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_optimizer_mixed_devices_error():
    p = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3, device=DEV))]
    opt = fastnn.optim.Adam(p, lr=0.1)
    for q in p:
        q.grad = torch.ones_like(q)
    with pytest.raises(RuntimeError, match="one device"):
        opt.step()


# ---- fastnn.mlp on CUDA (layer by layer through linear_act's CUDA kernels, one op) ----

@pytest.mark.parametrize("acts", [["tanh", "gelu"], ["relu", "silu", "identity"]])
def test_mlp_gradcheck_float64_cuda(acts):
    widths = [5, 7, 3, 4][:len(acts) + 1]
    ws = [rand(widths[i + 1], widths[i], dtype=torch.float64) for i in range(len(acts))]
    bs = [rand(widths[i + 1], dtype=torch.float64) for i in range(len(acts))]
    x = rand(6, widths[0], dtype=torch.float64)
    n = len(ws)

    def f(x, *p):
        return fastnn.mlp(x, list(p[:n]), list(p[n:]), acts)

    assert gradcheck(f, (x, *ws, *bs), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mlp_fuse_parity_cuda(dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(33, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.GELU(),
                                torch.nn.Linear(64, 5)).to(DEV, dtype)
    fused = fastnn.nn.fuse(model)
    x = torch.randn(100, 33, device=DEV, dtype=dtype)
    y, yf = model(x), fused(x)
    g = torch.randn_like(y)
    y.backward(g)
    yf.backward(g)
    tol = TOL[dtype]
    pairs = [(yf, y)] + [(q.grad, p.grad) for p, q in zip(model.parameters(), fused.parameters())]
    for a, e in pairs:
        scale = e.float().abs().max().item() or 1.0
        torch.testing.assert_close(a.float(), e.float(), rtol=tol, atol=tol * scale)
