"""Compact optimizer state (state_dtype) and stochastic rounding of bf16 stores (fastnn.optim).

The references: torch.optim (foreach=False, correctly rounded sqrt) run in float32 on the state
fastnn stored, its results then rounded as fastnn stores them. Everything else is checked against
what it promises: unbiased stochastic rounding, the same bits for any thread count and across a
resume, clear errors."""
import copy

import pytest
import torch

import fastnn
from fastnn.reference import ieee_sqrt

SHAPES = [(7, 5), (5,), (3, 7), (33,), (4, 3, 2), (1,)]
KINDS = {
    "Adam": dict(lr=1e-2),
    "AdamW": dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
    "RMSprop": dict(lr=1e-2, centered=True, momentum=0.5, weight_decay=0.01),
    "SGD": dict(lr=0.05, momentum=0.9, nesterov=True),
    "Adagrad": dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1),
}


def params(dtype, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g).to(dtype)) for s in shapes]


def grads_for(ps, step, nan=False):
    g = torch.Generator().manual_seed(1000 + step)
    out = [torch.randn(p.shape, generator=g).to(p.dtype) for p in ps]
    if nan:
        out[0].view(-1)[0] = float("nan")
        out[0].view(-1)[1] = float("inf")
    return out


def float_state(opt, p):
    return {k: v for k, v in opt.state[p].items() if k != "step"}


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("pdtype,sdtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)])
def test_compact_state_is_float32_math_rounded_to_nearest(name, pdtype, sdtype, cpu_isa):
    """Each step equals torch's float32 step from the state fastnn stored, parameters and state then
    rounded to nearest in their storage dtype: bit for bit, 30 steps, every option the kind has."""
    opts = KINDS[name]
    ours = params(pdtype)
    ref = [torch.nn.Parameter(p.detach().float().clone()) for p in ours]
    fo = getattr(fastnn.optim, name)(ours, state_dtype=sdtype, **opts)
    to = getattr(torch.optim, name)(ref, foreach=False, **opts)
    with ieee_sqrt():
        for step in range(30):
            gs = grads_for(ours, step)
            for p, q, g in zip(ours, ref, gs):
                p.grad, q.grad = g, g.float()
                with torch.no_grad():
                    q.copy_(p.float())
                for k, v in (float_state(fo, p) if p in fo.state else {}).items():
                    if k in to.state.get(q, {}):  # torch makes it at its first step, except Adagrad's sum
                        to.state[q][k].copy_(v.float())
            fo.step()
            to.step()
            for p, q in zip(ours, ref):
                assert torch.equal(p.detach(), q.detach().to(pdtype)), (name, step)
                for k, v in float_state(fo, p).items():
                    assert v.dtype == sdtype, k
                    assert torch.equal(v, to.state[q][k].to(sdtype)), (name, step, k)


@pytest.mark.parametrize("name", list(KINDS))
def test_nan_and_inf_gradients_as_in_float32_mode(name):
    opts = KINDS[name]
    a, b = params(torch.float32), params(torch.float32)
    oa = getattr(fastnn.optim, name)(a, **opts)
    ob = getattr(fastnn.optim, name)(b, state_dtype=torch.bfloat16, **opts)
    for step in range(3):
        for pa, pb, g in zip(a, b, grads_for(a, step, nan=step == 1)):
            pa.grad, pb.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    for pa, pb in zip(a, b):
        assert torch.equal(pa.isnan(), pb.isnan()) and torch.equal(pa.isinf(), pb.isinf())
        fin = pa.isfinite()
        torch.testing.assert_close(pb[fin], pa[fin], rtol=0.05, atol=0.05)


def test_stochastic_rounding_is_unbiased():
    """Many elements of one value, one SGD step: the mean of the stochastically rounded results is the
    exact float32 result within 5 standard errors; rounding to nearest is off by a whole bias."""
    n = 1 << 16
    start = torch.full((n,), 1.0, dtype=torch.bfloat16)
    exact = 1.0 - 0.3 * 2 ** -8  # 0.3 of a bf16 ulp below 1 (the ulp below 1 is 2^-8)
    lo, hi = 1.0 - 2 ** -8, 1.0
    for sr, want_mean in ((True, exact), (False, hi)):
        p = torch.nn.Parameter(start.clone())
        p.grad = torch.full((n,), 0.3 * 2 ** -8 / 0.5, dtype=torch.bfloat16).float().bfloat16()
        lr = 0.3 * 2 ** -8 / p.grad[0].item()
        fastnn.optim.SGD([p], lr=lr, stochastic_rounding=sr, sr_seed=7 if sr else None).step()
        v = p.detach().double()
        assert set(v.unique().tolist()) <= {lo, hi}
        f = 0.7  # probability of the upper neighbour
        se = (hi - lo) * (f * (1 - f) / n) ** 0.5
        if sr:
            assert abs(v.mean().item() - exact) < 5 * se, (v.mean().item(), exact)
        else:
            assert v.mean().item() == want_mean


def _sr_run(threads, seed=3, steps=4, n=200_000, sdtype=torch.bfloat16, pdtype=torch.float32):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ps = [torch.nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(1)).to(pdtype)),
              torch.nn.Parameter(torch.randn(3, 5, generator=torch.Generator().manual_seed(2)).to(pdtype))]
        o = fastnn.optim.Adam(ps, lr=1e-3, state_dtype=sdtype, stochastic_rounding=True, sr_seed=seed)
        for step in range(steps):
            for p, g in zip(ps, grads_for(ps, step)):
                p.grad = g
            o.step()
        return ps, o
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("pdtype,sdtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16),
                                           (torch.bfloat16, torch.float32)])
def test_stochastic_rounding_same_bits_for_any_thread_count(pdtype, sdtype):
    a, oa = _sr_run(1, pdtype=pdtype, sdtype=sdtype)
    b, ob = _sr_run(2, pdtype=pdtype, sdtype=sdtype)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        for k, v in float_state(oa, pa).items():
            assert torch.equal(v, float_state(ob, pb)[k]), k
    c, _ = _sr_run(2, seed=4, pdtype=pdtype, sdtype=sdtype)
    assert not torch.equal(a[0], c[0]), "another seed must draw other bits"


def test_stochastic_rounding_differs_from_nearest_and_tracks_float32():
    """bf16 parameters: with stochastic rounding small updates accumulate; rounded to nearest, updates
    below half an ulp are lost. 300 SGD steps of a constant gradient."""
    n, steps, lr = 4096, 300, 1e-4
    base = torch.randn(n, generator=torch.Generator().manual_seed(5))
    exact = base - steps * lr * 0.5  # float64-ish target: lr * g = 5e-5 per step, far below bf16's ulp at |p|~1
    out = {}
    for sr in (False, True):
        p = torch.nn.Parameter(base.bfloat16())
        o = fastnn.optim.SGD([p], lr=lr, stochastic_rounding=sr, sr_seed=11 if sr else None)
        for _ in range(steps):
            p.grad = torch.full((n,), 0.5, dtype=torch.bfloat16)
            o.step()
        out[sr] = (p.detach().float() - exact).abs().mean().item()
    assert out[True] < 0.5 * out[False], out


def test_resume_is_bit_identical():
    ps, o = _sr_run(2, steps=2)
    sd = copy.deepcopy(o.state_dict())  # as saved and loaded: torch's load shares "step" tensors
    assert sd["param_groups"][0]["sr_seed"] == 3 and sd["param_groups"][0]["sr_step"] == 2
    assert sd["state"][0]["exp_avg"].dtype == torch.bfloat16
    copies = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    o2 = fastnn.optim.Adam(copies, lr=1e-3, state_dtype=torch.bfloat16, stochastic_rounding=True, sr_seed=99)
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["sr_seed"] == 3
    for step in range(2, 4):
        for p, q, g in zip(ps, copies, grads_for(ps, step)):
            p.grad, q.grad = g, g.clone()
        o.step()
        o2.step()
    full, _ = _sr_run(2, steps=4)
    for a, b, c in zip(ps, copies, full):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_checkpoints_to_and_from_torch():
    ps = params(torch.float32)
    o = fastnn.optim.AdamW(ps, lr=1e-2, state_dtype=torch.bfloat16)
    for step in range(3):
        for p, g in zip(ps, grads_for(ps, step)):
            p.grad = g
        o.step()
    full = fastnn.optim.full_precision_state_dict(o)
    assert "state_dtype" not in full["param_groups"][0]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    t = torch.optim.AdamW(qs, lr=1e-2)
    t.load_state_dict(full)
    for k, v in t.state[qs[0]].items():
        if k != "step":
            assert v.dtype == torch.float32 and torch.equal(v, o.state[ps[0]][k].float())
    # A torch float32 state_dict loads into a compact optimizer, rounded to nearest.
    o3 = fastnn.optim.AdamW([torch.nn.Parameter(q.detach().clone()) for q in qs], lr=1e-2,
                            state_dtype=torch.bfloat16)
    o3.load_state_dict(t.state_dict())
    p0 = o3.param_groups[0]["params"][0]
    assert o3.state[p0]["exp_avg"].dtype == torch.bfloat16
    assert torch.equal(o3.state[p0]["exp_avg"], t.state[qs[0]]["exp_avg"].bfloat16())
    assert o3.param_groups[0]["state_dtype"] == torch.bfloat16


def test_default_layout_unchanged():
    o = fastnn.optim.Adam(params(torch.float32), lr=1e-3)
    assert not set(o.param_groups[0]) & {"state_dtype", "stochastic_rounding", "sr_seed", "sr_step"}


def test_adagrad_initial_sums_in_state_dtype():
    ps = params(torch.float32)
    o = fastnn.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.3, state_dtype=torch.bfloat16)
    assert o.state[ps[0]]["sum"].dtype == torch.bfloat16


@pytest.mark.parametrize("bad", [torch.int16, torch.float16, "int4", "bf16"])
def test_bad_state_dtype(bad):
    with pytest.raises(ValueError, match="fastnn.optim.Adam: state_dtype"):
        fastnn.optim.Adam(params(torch.float32), state_dtype=bad)


def test_int8_not_yet():
    with pytest.raises(NotImplementedError, match="fastnn.optim.RMSprop: state_dtype='int8'"):
        fastnn.optim.RMSprop(params(torch.float32), state_dtype="int8")


def test_stochastic_rounding_needs_something_bf16():
    with pytest.raises(ValueError, match="fastnn.optim.SGD: stochastic_rounding=True .* nothing in bfloat16"):
        fastnn.optim.SGD(params(torch.float32), lr=0.1, stochastic_rounding=True)
    with pytest.raises(ValueError, match="float64"):
        fastnn.optim.Adam(params(torch.float64), state_dtype=torch.bfloat16)


def test_wrong_state_dtype_in_state_is_refused_untouched():
    ps = params(torch.float32)
    o = fastnn.optim.Adam(ps, lr=1e-2, state_dtype=torch.bfloat16)
    for p, g in zip(ps, grads_for(ps, 0)):
        p.grad = g
    o.step()
    o.state[ps[1]]["exp_avg_sq"] = o.state[ps[1]]["exp_avg_sq"].double()
    o._fastnn_key = None
    before = [p.detach().clone() for p in ps]
    with pytest.raises(RuntimeError, match="fastnn.optim.Adam: the state tensors of parameter 1 must share one dtype"):
        o.step()
    for p, b in zip(ps, before):
        assert torch.equal(p, b)
