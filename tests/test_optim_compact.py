"""Compact optimizer state (state_dtype) and stochastic rounding of bf16 stores (fastnn.optim).

The references: torch.optim (foreach=False, correctly rounded sqrt) run in float32 on the state
fastnn stored, its results then rounded as fastnn stores them. Everything else is checked against
what it promises: unbiased stochastic rounding, the same bits for any thread count and across a
resume, clear errors."""
import copy

import numpy as np
import pytest
import torch

import fastnn
from fastnn import _C
from fastnn.reference import ieee_sqrt

from conftest import ISAS, isa_selected, num_threads

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
    fo = getattr(fastnn.optim, name)(ours, state_dtype=sdtype, stochastic_rounding=False, **opts)
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


def _adam_run(threads, steps, pdtype, n, small, **opt_kw):
    """Adam (lr 1e-3) on a big and a small parameter for `steps` steps with `threads` threads."""
    with num_threads(threads):
        ps = [torch.nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(1)).to(pdtype)),
              torch.nn.Parameter(torch.randn(*small, generator=torch.Generator().manual_seed(2)).to(pdtype))]
        o = fastnn.optim.Adam(ps, lr=1e-3, **opt_kw)
        for step in range(steps):
            for p, g in zip(ps, grads_for(ps, step)):
                p.grad = g
            o.step()
        return ps, o


def _sr_run(threads, seed=3, steps=4, n=200_000, sdtype=torch.bfloat16, pdtype=torch.float32):
    return _adam_run(threads, steps, pdtype, n, (3, 5), state_dtype=sdtype, stochastic_rounding=True, sr_seed=seed)


def _resume_two_more_steps(ps, o, sd, opt_kw, full_run):
    """Loads sd into a fresh Adam(**opt_kw) over copies of ps, steps both two more times (steps 2, 3)
    and checks both equal full_run's uninterrupted parameters; returns the fresh optimizer."""
    copies = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    o2 = fastnn.optim.Adam(copies, lr=1e-3, **opt_kw)
    o2.load_state_dict(sd)
    for step in range(2, 4):
        for p, q, g in zip(ps, copies, grads_for(ps, step)):
            p.grad, q.grad = g, g.clone()
        o.step()
        o2.step()
    for a, b, c in zip(ps, copies, full_run):
        assert torch.equal(a, b) and torch.equal(a, c)
    return o2


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


M64 = (1 << 64) - 1


def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _hash32(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _parameter_random_bits(seed, step, index, n):
    """The 16 random bits of each element of a parameter's stochastically rounded store, as
    optim_functors.h defines them: key = mix64(mix64(mix64(seed) + step G) + index G); element i
    hashes the 32-bit counter low(key) + i (n < 2^32), xor high(key) for the parameter's draw."""
    g = 0x9E3779B9_7F4A7C15
    key = _mix64((_mix64((_mix64(seed) + step * g) & M64) + index * g) & M64)
    with np.errstate(over="ignore"):
        x = np.uint32(key & 0xFFFFFFFF) + np.arange(n, dtype=np.uint32)
        return _hash32(x ^ np.uint32(key >> 32)) & np.uint32(0xFFFF)


def test_stochastic_rounding_draws_the_documented_bits():
    """bf16 parameters after SGD steps with stochastic rounding: each is the float32 result (the same
    step on float32 copies) plus its element's 16 random bits, truncated, for every parameter index,
    step and element (200K elements: chunks on every thread). Guards the counter's definition, which
    the CPU loops compute incrementally and CUDA per element."""
    shapes = [(7, 5), (200_003,), (33,)]
    ps = [torch.nn.Parameter(p) for p in params(torch.bfloat16, shapes=shapes)]
    o = fastnn.optim.SGD(ps, lr=0.37, stochastic_rounding=True, sr_seed=12345)
    for step in range(2):
        gs = grads_for(ps, step)
        exact = [torch.nn.Parameter(p.detach().float()) for p in ps]
        for p, q, g in zip(ps, exact, gs):
            p.grad, q.grad = g, g.float()
        fastnn.optim.SGD(exact, lr=0.37).step()
        o.step()
        for index, (p, q) in enumerate(zip(ps, exact)):
            u = q.detach().view(-1).view(torch.int32).numpy().view(np.uint32)
            with np.errstate(over="ignore"):
                want = ((u + _parameter_random_bits(12345, step, index, u.size)) >> np.uint32(16)).astype(np.uint16)
            got = p.detach().view(-1).view(torch.int16).numpy().view(np.uint16)
            assert np.array_equal(got, want), (step, index, int((got != want).sum()))


def test_resume_is_bit_identical():
    ps, o = _sr_run(2, steps=2)
    sd = copy.deepcopy(o.state_dict())  # as saved and loaded: torch's load shares "step" tensors
    assert sd["param_groups"][0]["sr_seed"] == 3 and sd["param_groups"][0]["sr_step"] == 2
    assert sd["state"][0]["exp_avg"].dtype == torch.bfloat16
    o2 = _resume_two_more_steps(ps, o, sd, dict(state_dtype=torch.bfloat16, stochastic_rounding=True, sr_seed=99),
                                _sr_run(2, steps=4)[0])
    assert o2.param_groups[0]["sr_seed"] == 3


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


def test_bf16_state_of_float32_parameters_rounds_stochastically_by_default():
    """Rounded to nearest, a bf16 second moment cannot shrink by beta2's 0.1% a step (under half an
    ulp), so bf16 state of float32 parameters rounds stochastically unless told otherwise: with a fixed
    seed (0), without drawing from torch's generator; bf16 parameters keep torch's nearest rounding."""
    n = 1 << 14
    ps = [torch.nn.Parameter(torch.zeros(n)) for _ in range(3)]
    rng = torch.get_rng_state()
    auto = fastnn.optim.Adam(ps[:1], lr=1e-3, state_dtype=torch.bfloat16)
    assert torch.equal(torch.get_rng_state(), rng)
    assert (auto.param_groups[0]["stochastic_rounding"], auto.param_groups[0]["sr_seed"]) == (True, 0)
    explicit = fastnn.optim.Adam(ps[1:2], lr=1e-3, state_dtype=torch.bfloat16, stochastic_rounding=True, sr_seed=0)
    nearest = fastnn.optim.Adam(ps[2:], lr=1e-3, state_dtype=torch.bfloat16, stochastic_rounding=False)
    assert "stochastic_rounding" not in nearest.param_groups[0]
    opts = (auto, explicit, nearest)
    for step in range(60):  # one gradient of 1, then none: v = 1e-3 * 0.999^(t-1)
        for p in ps:
            p.grad = torch.full_like(p, 1.0 if step == 0 else 0.0)
        for o in opts:
            o.step()
    v = [o.state[p]["exp_avg_sq"] for o, p in zip(opts, ps)]
    assert torch.equal(v[0], v[1]) and torch.equal(ps[0], ps[1])
    v0 = torch.tensor(1e-3).bfloat16().float().item()
    assert torch.all(v[2].float() == v0)  # nearest: stalled at its first value
    want = 1e-3 * 0.999 ** 59  # 5.7% below the first value; stochastic: within 5% of that on average
    assert abs(v[0].float().mean().item() - want) < 0.05 * (v0 - want)
    # bf16 parameters (torch's layout) round to nearest; a float32 group added later is stochastic too
    b = fastnn.optim.Adam([torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))], lr=1e-3)
    assert "stochastic_rounding" not in b.param_groups[0]
    auto.add_param_group({"params": [torch.nn.Parameter(torch.zeros(4))]})
    assert auto.param_groups[1]["stochastic_rounding"] is True


def test_adagrad_initial_sums_in_state_dtype():
    ps = params(torch.float32)
    o = fastnn.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.3, state_dtype=torch.bfloat16)
    assert o.state[ps[0]]["sum"].dtype == torch.bfloat16


@pytest.mark.parametrize("bad", [torch.int16, torch.float16, "int4", "bf16"])
def test_bad_state_dtype(bad):
    with pytest.raises(ValueError, match="fastnn.optim.Adam: state_dtype"):
        fastnn.optim.Adam(params(torch.float32), state_dtype=bad)


def test_stochastic_rounding_needs_something_bf16():
    with pytest.raises(ValueError, match="fastnn.optim.SGD: stochastic_rounding=True .* stores none"):
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


# ---- block-wise 8-bit state (state_dtype="int8") ----

Q8_SHAPES = [(7, 5), (300, 7), (33,), (256,), (4, 3, 2), (1,)]  # partial, several and exact blocks
# (signed?) -> (exponent bias, top code value, subnormal quantum): csrc/optim/optim_functors.h
Q8_CODE = {True: (15, 1.875, 2.0 ** -17), False: (31, 1.75, 2.0 ** -33)}


def q8_bound(v, signed):
    """Largest round-trip error the code allows for each value of v (float64, one row per block):
    half a step of 3 mantissa bits relative to the value, at least half the subnormal quantum
    relative to the block's scale, plus float32 rounding of the scale and the products."""
    emax, top, sub = Q8_CODE[signed]
    finite = torch.where(v.isfinite(), v.abs(), torch.zeros_like(v))
    scale = finite.amax(dim=-1, keepdim=True) / top
    return (v.abs() * 2.0 ** -4 + scale * sub / 2) * (1 + 2.0 ** -20) + 1e-44


@pytest.mark.parametrize("signed", [True, False])
def test_q8_round_trip_within_the_code_bound(signed):
    g = torch.Generator().manual_seed(3)
    blocks = [
        torch.randn(256, generator=g) * torch.logspace(-12, 2, 256),  # 14 decades in one block
        torch.zeros(256),
        torch.full((256,), 0.37),                                     # all equal
        torch.randn(256, generator=g) * 1e-40,                        # denormals
        torch.randn(256, generator=g).clamp(-3, 3) * 1e38,            # near float32's largest
        torch.randn(256, generator=g),
    ]
    v = torch.stack(blocks)
    if not signed:
        v = v.abs()
    codes, scales = _C.q8_quantize(v, signed)
    assert codes.dtype == torch.uint8 and codes.shape == v.shape and scales.numel() == v.shape[0]
    back = _C.q8_dequantize(codes, scales, signed)
    err = (back.double() - v.double()).abs()
    assert (err <= q8_bound(v.double(), signed)).all(), err.max()
    assert torch.equal(back[1], torch.zeros(256)) and (back[2] == back[2][0]).all()
    assert (back[2] - 0.37).abs().max() <= 0.37 * 2 ** -20
    # A partial last block, and non-finite values (NaN code; the block's scale ignores them).
    w = torch.randn(300, generator=g).abs() if not signed else torch.randn(300, generator=g)
    w[5], w[290] = float("nan"), float("inf")
    c, sc = _C.q8_quantize(w, signed)
    assert sc.numel() == 2 and sc.isfinite().all()
    b = _C.q8_dequantize(c, sc, signed)
    assert b[5].isnan() and b[290].isnan() and b[[i for i in range(300) if i not in (5, 290)]].isfinite().all()


def test_q8_code_is_monotonic_and_round_to_nearest():
    """Every code decodes to a distinct value in order, and every value between two neighbours goes
    to the nearer one; an exact tie goes up in magnitude, among subnormal codes (below 2^(1-emax))
    as among normal ones."""
    for signed in (True, False):
        emax, top, _ = Q8_CODE[signed]
        n_codes = 128 if signed else 255  # magnitude codes (the rest: sign and NaN)
        ones = torch.ones(1)
        vals = torch.stack([_C.q8_dequantize(torch.tensor([c], dtype=torch.uint8), ones, signed)[0]
                            for c in range(n_codes)])
        assert (vals[1:] > vals[:-1]).all() and vals[0] == 0 and vals[-1] == top
        mids = (vals[1:].double() + vals[:-1].double()) / 2
        x = torch.cat([vals.double(), mids * (1 - 1e-6), mids * (1 + 1e-6)])
        # one block per value, with the top value in it so the scale is exactly 1
        blk = torch.full((x.numel(), 256), top, dtype=torch.float64)
        blk[:, 0] = x
        c, sc = _C.q8_quantize(blk.float(), signed)
        assert (sc == 1.0).all()
        got = c[:, 0].long()
        want = torch.cat([torch.arange(n_codes), torch.arange(n_codes - 1), torch.arange(1, n_codes)])
        assert torch.equal(got, want)
        # exact ties (midpoints of neighbours are float32 numbers)
        blk = torch.full((mids.numel(), 256), top, dtype=torch.float32)
        blk[:, 0] = mids.float()
        assert torch.equal(blk[:, 0].double(), mids)
        c, _ = _C.q8_quantize(blk, signed)
        assert torch.equal(c[:, 0].long(), torch.arange(1, n_codes))


@pytest.mark.parametrize("signed", [True, False])
def test_q8_codes_are_the_rounded_subnormal_product(signed):
    """The codec's definition (csrc/optim/optim_functors.h): x' = |v| / scale * 2^(emax-127) rounded
    once to float32, subnormals included, then (bits + 2^19) >> 20. Computed here in float64 (the
    product of two float32 numbers is exact there) and rounded to float32 by torch, on values
    spread over every code, exact ties and near-ties of the float32 rounding included."""
    emax, top, _ = Q8_CODE[signed]
    g = torch.Generator().manual_seed(11)
    v = torch.randn(64, 256, generator=g, dtype=torch.float64) * torch.logspace(0, -12, 256, dtype=torch.float64)
    v[:, 0] = 3.0
    v = v.float()
    if not signed:
        v = v.abs()
    codes, scales = _C.q8_quantize(v, signed)
    inv = (top / v.abs().amax(dim=1, keepdim=True)).float()       # RN(top / amax), as the kernels round it
    x = (v.abs().double() * inv.double() * 2.0 ** (emax - 127)).float()
    assert (x.view(torch.int32) < 2 ** 23).any(), "some codes must be subnormal for this to test them"
    want = ((x.view(torch.int32).long() + 2 ** 19) >> 20).clamp(max=127 if signed else 254)
    got = codes.long() & (0x7F if signed else 0xFF)
    assert torch.equal(got, want)


def q8_state(opt, p):
    return {k: v for k, v in opt.state[p].items() if k != "step"}


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("pdtype", [torch.float32, torch.bfloat16])
def test_int8_state_is_float32_math_on_the_decoded_state(name, pdtype, cpu_isa):
    """Each step equals torch's float32 step (correctly rounded sqrt) from the decoded 8-bit state:
    the parameter bit for bit (rounded to its dtype), and the new codes and scales bit for bit those
    of the host quantizer applied to torch's new float32 state. 20 steps, every option the kind has,
    partial and exact blocks."""
    opts = KINDS[name]
    ours = params(pdtype, shapes=Q8_SHAPES)
    ref = [torch.nn.Parameter(p.detach().float().clone()) for p in ours]
    fo = getattr(fastnn.optim, name)(ours, state_dtype="int8", min_8bit_size=0, **opts)
    to = getattr(torch.optim, name)(ref, foreach=False, **opts)
    signed = fo._signed_keys
    with ieee_sqrt():
        for step in range(20):
            full = fastnn.optim.full_precision_state_dict(fo)["state"]
            for i, (p, q, g) in enumerate(zip(ours, ref, grads_for(ours, step))):
                p.grad, q.grad = g, g.float()
                with torch.no_grad():
                    q.copy_(p.float())
                for k, v in full.get(i, {}).items():
                    if k != "step" and k in to.state.get(q, {}):
                        to.state[q][k].copy_(v)
            fo.step()
            to.step()
            for p, q in zip(ours, ref):
                assert torch.equal(p.detach(), q.detach().to(pdtype)), (name, step)
                st = q8_state(fo, p)
                for k in fo._state_keys:
                    if k not in st:
                        continue
                    assert st[k].dtype == torch.uint8 and st[k].shape == p.shape
                    codes, scales = _C.q8_quantize(to.state[q][k], k in signed)
                    assert torch.equal(st[k + "_scale"], scales), (name, step, k)
                    assert torch.equal(st[k], codes), (name, step, k)


def test_int8_codes_do_not_depend_on_flush_denormal(cpu_isa):
    """torch.set_flush_denormal(True) sets FTZ and DAZ on the calling thread only, so an 8-bit step
    whose blocks run on several threads would flush float32 subnormals in some blocks and not in
    others. The step and the host quantizer turn both off: the same codes, scales and parameters in
    either mode."""
    g = torch.Generator().manual_seed(11)
    n = 1 << 17  # split across threads
    # Odd blocks: gradients ~1e-21, so their second moments (~1e-43) are float32 subnormals.
    tiny = (torch.arange(n) // 256) % 2 == 1
    grads = [torch.where(tiny, 1e-21, 1.0) * torch.randn(n, generator=g) for _ in range(3)]
    p0 = torch.randn(n, generator=g)
    squares = grads[0] ** 2  # (computed outside flush mode)

    def run():
        p = torch.nn.Parameter(p0.clone())
        o = fastnn.optim.Adam([p], lr=1e-2, state_dtype="int8")
        for gr in grads:
            p.grad = gr.clone()
            o.step()
        codes, scales = _C.q8_quantize(squares, False)
        return {"param": p.detach().clone(), **{k: v.clone() for k, v in q8_state(o, p).items()},
                "squares": codes, "squares_scale": scales}

    plain = run()
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-denormal mode")
    try:
        flushed = run()
    finally:
        torch.set_flush_denormal(False)
    # what flushing would zero: the tiny blocks' second-moment codes, and the squares' codes
    assert (plain["exp_avg_sq"][tiny] != 0).float().mean() > 0.5 and (plain["squares"][tiny] != 0).float().mean() > 0.5
    assert plain.keys() == flushed.keys()
    for k in plain:
        assert torch.equal(plain[k], flushed[k]), k


def test_int8_state_bytes_and_threshold():
    big = torch.nn.Parameter(torch.randn(1 << 20))
    small = torch.nn.Parameter(torch.randn(4095))
    o = fastnn.optim.AdamW([big, small], lr=1e-3, state_dtype="int8")
    big.grad, small.grad = torch.randn_like(big), torch.randn_like(small)
    o.step()
    st = o.state[big]
    per_moment = (st["exp_avg"].nbytes + st["exp_avg_scale"].nbytes) / big.numel()
    assert st["exp_avg"].dtype == torch.uint8 and per_moment <= 1.03, per_moment
    assert {k: v.dtype for k, v in q8_state(o, small).items()} == {"exp_avg": torch.float32,
                                                                   "exp_avg_sq": torch.float32}
    assert o.param_groups[0]["min_8bit_size"] == 4096
    o2 = fastnn.optim.AdamW([torch.nn.Parameter(torch.randn(10))], state_dtype="int8", min_8bit_size=5)
    p = o2.param_groups[0]["params"][0]
    p.grad = torch.randn(10)
    o2.step()
    assert o2.state[p]["exp_avg"].dtype == torch.uint8


def _q8_run(threads, steps=3, pdtype=torch.float32, sr=False, n=200_003):
    return _adam_run(threads, steps, pdtype, n, (70, 90), state_dtype="int8", stochastic_rounding=sr,
                     sr_seed=5 if sr else None)


@pytest.mark.parametrize("pdtype,sr", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, True)])
def test_int8_same_bits_for_any_thread_count(pdtype, sr):
    a, oa = _q8_run(1, pdtype=pdtype, sr=sr)
    b, ob = _q8_run(2, pdtype=pdtype, sr=sr)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        for k, v in q8_state(oa, pa).items():
            assert torch.equal(v, q8_state(ob, pb)[k]), k


def test_int8_resume_and_checkpoints():
    ps, o = _q8_run(2, steps=2)
    sd = copy.deepcopy(o.state_dict())
    assert sd["state"][0]["exp_avg"].dtype == torch.uint8 and sd["state"][0]["exp_avg_scale"].dtype == torch.float32
    _resume_two_more_steps(ps, o, sd, dict(state_dtype="int8"), _q8_run(2, steps=4)[0])
    # To torch: decoded float32 state; from torch: quantized by the same code.
    full = fastnn.optim.full_precision_state_dict(o)
    assert set(full["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and "min_8bit_size" not in full["param_groups"][0]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    t = torch.optim.Adam(qs, lr=1e-3)
    t.load_state_dict(full)
    m = t.state[qs[0]]["exp_avg"]
    assert m.dtype == torch.float32
    assert torch.equal(m, _C.q8_dequantize(o.state[ps[0]]["exp_avg"], o.state[ps[0]]["exp_avg_scale"], True))
    o3 = fastnn.optim.Adam([torch.nn.Parameter(q.detach().clone()) for q in qs], lr=1e-3, state_dtype="int8")
    o3.load_state_dict(t.state_dict())
    p0 = o3.param_groups[0]["params"][0]
    codes, scales = _C.q8_quantize(t.state[qs[0]]["exp_avg_sq"], False)
    assert torch.equal(o3.state[p0]["exp_avg_sq"], codes) and torch.equal(o3.state[p0]["exp_avg_sq_scale"], scales)
    # 8-bit state into a bf16-state optimizer (a state_dict's own state_dtype would win): decoded,
    # then rounded.
    o4 = fastnn.optim.Adam([torch.nn.Parameter(q.detach().clone()) for q in qs], lr=1e-3,
                           state_dtype=torch.bfloat16)
    sd = o.state_dict()
    sd["param_groups"] = [{k: v for k, v in g.items() if k not in ("state_dtype", "min_8bit_size")}
                          for g in sd["param_groups"]]
    o4.load_state_dict(sd)
    p4 = o4.param_groups[0]["params"][0]
    assert torch.equal(o4.state[p4]["exp_avg"], m.bfloat16())


def test_float32_state_of_bf16_parameters_survives_a_checkpoint():
    """torch's load_state_dict casts state to the parameter's dtype; fastnn keeps float32 state of
    bf16 parameters (and 8-bit scales) as saved."""
    ps = params(torch.bfloat16)
    o = fastnn.optim.Adam(ps, lr=1e-2, state_dtype=torch.float32)
    for p, g in zip(ps, grads_for(ps, 0)):
        p.grad = g
    o.step()
    o2 = fastnn.optim.Adam([torch.nn.Parameter(p.detach().clone()) for p in ps], lr=1e-2, state_dtype=torch.float32)
    o2.load_state_dict(copy.deepcopy(o.state_dict()))
    p2 = o2.param_groups[0]["params"][0]
    assert torch.equal(o2.state[p2]["exp_avg_sq"], o.state[ps[0]]["exp_avg_sq"])


def test_wrong_state_dict_is_refused_untouched():
    ps = params(torch.float32, shapes=Q8_SHAPES)
    o = fastnn.optim.Adam(ps, lr=1e-2, state_dtype="int8", min_8bit_size=0)
    for p, g in zip(ps, grads_for(ps, 0)):
        p.grad = g
    o.step()
    before = copy.deepcopy(o.state_dict())
    sgd = fastnn.optim.SGD(params(torch.float32, shapes=Q8_SHAPES), lr=0.1, momentum=0.9)
    for p, g in zip(sgd.param_groups[0]["params"], grads_for(ps, 0)):
        p.grad = g
    sgd.step()
    with pytest.raises(ValueError, match="fastnn.optim.Adam: .*momentum_buffer.*another optimizer"):
        o.load_state_dict(sgd.state_dict())
    other = fastnn.optim.Adam(params(torch.float32, shapes=[(5, 7)] + Q8_SHAPES[1:]), lr=1e-2)
    for p, g in zip(other.param_groups[0]["params"], grads_for(ps, 0)):
        p.grad = g.reshape(p.shape)
    other.step()
    with pytest.raises(ValueError, match="fastnn.optim.Adam: state 'exp_avg' has shape"):
        o.load_state_dict(other.state_dict())
    after = o.state_dict()
    for i, st in before["state"].items():
        for k, v in st.items():
            assert torch.equal(v, after["state"][i][k]), k


@pytest.mark.parametrize("name", list(KINDS))
def test_int8_nan_and_inf_gradients_stay_in_their_element(name):
    opts = KINDS[name]
    a, b = params(torch.float32, shapes=Q8_SHAPES), params(torch.float32, shapes=Q8_SHAPES)
    oa = getattr(fastnn.optim, name)(a, **opts)
    ob = getattr(fastnn.optim, name)(b, state_dtype="int8", min_8bit_size=0, **opts)
    for step in range(3):
        for pa, pb, g in zip(a, b, grads_for(a, step, nan=step == 1)):
            pa.grad, pb.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    for pa, pb in zip(a, b):
        assert torch.equal(pa.isfinite(), pb.isfinite())
        fin = pa.isfinite()
        torch.testing.assert_close(pb[fin], pa[fin], rtol=0.05, atol=0.05)


def _bits(t):
    """Bit patterns, every NaN as one: a NaN's sign and payload follow the compiler's operand order."""
    if not t.is_floating_point():
        return t
    t = torch.where(t.isnan(), torch.full_like(t, float("nan")), t)
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


def _subnormal_code_blocks(codes, signed):
    c = torch.nn.functional.pad(codes.flatten().long(), (0, -codes.numel() % 256)).view(-1, 256)
    exp_mask = 0x78 if signed else 0xF8
    return (((c & exp_mask) == 0) & ((c & 7) != 0)).any(dim=1)


@pytest.mark.parametrize("name,opts", [("Adam", dict(lr=1e-2, amsgrad=True)),
                                       ("RMSprop", dict(lr=1e-2, centered=True, momentum=0.5))])
@pytest.mark.parametrize("pdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sr", [False, True])
def test_int8_every_code_and_special_value_same_bits_in_every_table(name, opts, pdtype, sr):
    """The vector codecs (AVX2, AVX-512) against the base table's scalar codec, through the step:
    every code of both kinds in one block, blocks with tiny, huge and zero scales, gradients with
    NaN, inf, huge and denormal values, a partial last block; parameters, codes and scales compared
    bit for bit (NaN included) after three steps, codes rounded to nearest or stochastically. Blocks
    with subnormal codes take the vector tables' normal-float form, the others (most blocks after
    the first step) the subnormal one."""
    g = torch.Generator().manual_seed(7)
    n = 256 * 6 + 37
    p0 = (torch.randn(n, generator=g) * 3).to(pdtype)
    if sr:
        opts = dict(opts, stochastic_rounding=True, sr_seed=1)
    o0 = getattr(fastnn.optim, name)([torch.nn.Parameter(p0.clone())], state_dtype="int8", min_8bit_size=0, **opts)
    o0.param_groups[0]["params"][0].grad = torch.randn(n, generator=g).to(pdtype)
    o0.step()
    st = o0.state[o0.param_groups[0]["params"][0]]
    for k in o0._state_keys:
        if k not in st:
            continue
        codes, scales = st[k], st[k + "_scale"]
        codes[:256] = torch.arange(256, dtype=torch.uint8)          # every code, NaN included
        codes[256:].copy_(torch.randint(0, 255, (n - 256,), generator=g, dtype=torch.uint8))
        scales.copy_(torch.tensor([1.0, 1e-40, 3e38, 0.0, 1e-3, 7.0, 2.0 ** -126][:scales.numel()]))
    grads = []
    for step in range(3):
        gr = torch.randn(n, generator=g) * 10.0 ** (step - 1)
        gr[300:310] = torch.tensor([float("nan"), float("inf"), -float("inf"), 3e38, -3e38, 1e-42, -1e-42, 0.0, -0.0, 1e-30])
        gr[256 * 3:256 * 4] = 0.0                                  # a block whose new state may be all zero
        grads.append(gr.to(pdtype))
    results = {}
    for isa in ISAS:
        with isa_selected(isa):
            o = copy.deepcopy(o0)
            p = o.param_groups[0]["params"][0]
            for gr in grads:
                p.grad = gr.clone()
                o.step()
            results[isa] = [p.detach().clone()] + [v.clone() for k, v in sorted(o.state[p].items()) if k != "step"]
    ref = results["base"]
    for isa, got in results.items():
        for a, b in zip(ref, got):
            assert torch.equal(_bits(a), _bits(b)), isa
    # both forms ran: blocks with subnormal codes and blocks without
    has_sub = []
    for k in o0._state_keys:
        codes = o.state[p].get(k)
        if codes is None:
            continue
        has_sub += _subnormal_code_blocks(codes, k in ("exp_avg", "grad_avg", "momentum_buffer")).tolist()
    assert any(has_sub) and not all(has_sub)


def test_int8_block_falling_into_subnormal_codes_same_bits_in_every_table():
    """A block's encoding form follows its decoding: stored codes without subnormal codes, so the
    vector tables encode its new values in the subnormal form, also in the step where those values
    fall 2^14 (first moment) and 2^30 (second) below the block's largest and give subnormal codes.
    betas (0, 0) make the moments this step's gradient and its square. Every table against the
    base table, bit for bit, through the fall and back."""
    g = torch.Generator().manual_seed(11)
    n = 256 * 4 + 19
    away_from_zero = lambda: (1 + torch.rand(n, generator=g)) * torch.randn(n, generator=g).sign()
    falling = away_from_zero()
    # |g| in [1, 2): times 2.5e-5, m = g falls into the signed subnormal codes (2^-17 to 2^-14 of the
    # block's largest) and v = g^2 into the unsigned ones (2^-33 to 2^-30)
    falling[128:256] *= 2.5e-5
    falling[256 * 2:256 * 3:2] *= 2.5e-5
    grads = [away_from_zero(), falling, away_from_zero(), away_from_zero()]
    results, sub_blocks = {}, {}
    for isa in ISAS:
        with isa_selected(isa):
            p = torch.nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(3)))
            o = fastnn.optim.Adam([p], lr=1e-2, betas=(0.0, 0.0), state_dtype="int8", min_8bit_size=0)
            steps = []
            for gr in grads:
                p.grad = gr.clone()
                o.step()
                st = o.state[p]
                steps.append([p.detach().clone()] + [st[k].clone() for k in sorted(st) if k != "step"])
                sub_blocks.setdefault(isa, []).append((_subnormal_code_blocks(st["exp_avg"], True),
                                                       _subnormal_code_blocks(st["exp_avg_sq"], False)))
            results[isa] = steps
    for isa, steps in results.items():
        for i, (ref, got) in enumerate(zip(results["base"], steps)):
            for a, b in zip(ref, got):
                assert torch.equal(_bits(a), _bits(b)), (isa, i)
    m_sub, v_sub = zip(*sub_blocks["base"])
    assert not m_sub[0].any() and not v_sub[0].any()  # step 1: no subnormal code anywhere
    assert m_sub[1][0] and m_sub[1][2] and v_sub[1][0] and v_sub[1][2] and not m_sub[1][1]  # step 2: the fall
    assert not m_sub[3].any() and not v_sub[3].any()  # and back


def test_int8_stochastic_rounding_tracks_what_nearest_freezes():
    """A code moves only when its value relative to the block's largest moves by half a code step
    (3-6%), so a second moment that should shrink by 0.1% a step (beta2 = 0.999) while its block's
    largest grows is frozen at its ratio to it when rounded to nearest, and grows with it; rounded
    stochastically it follows float32 on average (the mean over 255 elements a block). Each element's
    v is noisier than float32's (beta2 = 0.999 keeps each step's rounding noise for ~1000 steps), so
    the steps, through 1 / sqrt(v), come out larger on average: measured 1.11x float32's here."""
    from fastnn.validate import second_moment_drift
    v32, moved32 = second_moment_drift({}, steps=1500)
    vn, movedn = second_moment_drift(dict(state_dtype="int8", min_8bit_size=0), steps=1500)
    vs, moveds = second_moment_drift(dict(state_dtype="int8", min_8bit_size=0, stochastic_rounding=True, sr_seed=0),
                                     steps=1500)
    assert vn > 10 * v32 and movedn < 0.5 * moved32  # nearest: frozen relative to the growing maximum
    assert abs(vs / v32 - 1) < 0.1 and abs(moveds / moved32 - 1) < 0.2, (vs / v32, moveds / moved32)


def test_int8_bad_options():
    with pytest.raises(ValueError, match="fastnn.optim.Adam: min_8bit_size"):
        fastnn.optim.Adam(params(torch.float32), state_dtype="int8", min_8bit_size=-1)
    with pytest.raises(ValueError, match="float64"):
        fastnn.optim.Adam(params(torch.float64), state_dtype="int8")
    # The ops take 8-bit state only with its scales (through fastnn.optim).
    p = torch.randn(300)
    with pytest.raises(RuntimeError, match="block scales"):
        torch.ops.fastnn.adam_([p], [torch.randn(300)], [torch.zeros(300, dtype=torch.uint8)],
                               [torch.zeros(300, dtype=torch.uint8)], [], [torch.tensor(0.0)], [1], [1e-3], [0.9],
                               [0.999], [0.0], [1e-8], [False], [False], False, [False])


def test_int8_adam_trains_like_float32():
    """A small regression: 8-bit state gets from ~0.5 to float32 Adam's loss (within 5%, or 1e-4 near
    zero, where both oscillate at the noise level)."""
    torch.manual_seed(0)
    x = torch.randn(2048, 64)
    y = torch.sin(x @ torch.randn(64, 1))
    losses = {}
    for sd in (None, "int8"):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 1))
        o = fastnn.optim.Adam(model.parameters(), lr=1e-3, state_dtype=sd, min_8bit_size=0)
        for _ in range(300):
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            o.step()
        losses[sd] = loss.item()
    assert losses["int8"] < losses[None] * 1.05 + 1e-4, losses


# ---- CUDA (csrc/optim/optim_cuda_kernels.cu: compact_kernel, q8_kernel) ----
# The kernels run the CPU's rule, codec and random bits; nvcc fuses some of the rule's multiply-adds
# that the CPU keeps apart (as in float32 mode, tests/test_cuda.py), so a step from the same state
# agrees to float32 rounding, and an 8-bit code may land on a neighbour where a value sits on a
# rounding boundary.

CUDA_MODES = {
    "bf16 state": (torch.float32, dict(state_dtype=torch.bfloat16)),
    "float32 state of bf16": (torch.bfloat16, dict(state_dtype=torch.float32)),
    "bf16 state, stochastic": (torch.float32, dict(state_dtype=torch.bfloat16, stochastic_rounding=True, sr_seed=3)),
    "bf16 params, stochastic": (torch.bfloat16, dict(stochastic_rounding=True, sr_seed=3)),
    "int8": (torch.float32, dict(state_dtype="int8", min_8bit_size=0)),
    "int8, stochastic": (torch.float32, dict(state_dtype="int8", min_8bit_size=0, stochastic_rounding=True, sr_seed=3)),
    "int8 of bf16, stochastic": (torch.bfloat16, dict(state_dtype="int8", min_8bit_size=0, stochastic_rounding=True,
                                                      sr_seed=3)),
}


@pytest.fixture(params=["1", "2"])
def compact_kernels(request, monkeypatch):
    """Both versions of the CUDA compact kernels: 1 (element-wise) and 2 (vectorized, one warp per
    8-bit block; FASTNN_CUDA_COMPACT_KERNELS=2)."""
    monkeypatch.setenv("FASTNN_CUDA_COMPACT_KERNELS", request.param)
    return request.param


def _misaligned_copy(p):
    """p on CUDA as a view 4 bytes past a 16-byte boundary: version 2 takes its element-wise path."""
    buf = torch.empty(p.numel() + 1, device="cuda", dtype=p.dtype)
    v = buf[1:].view(p.shape)
    v.copy_(p.detach())
    return torch.nn.Parameter(v)


def _decoded(opt, p):
    full = fastnn.optim.full_precision_state_dict(opt)["state"]
    i = next(j for j, q in enumerate(opt.param_groups[0]["params"]) if q is p)
    return {k: v.cpu() for k, v in full.get(i, {}).items() if k != "step"}


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_kernels")
@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("mode", list(CUDA_MODES))
def test_cuda_compact_step_matches_cpu(name, mode, compact_kernels, monkeypatch):
    """Ten steps, each from the CPU optimizer's state and parameters: the CUDA step agrees with the
    CPU's (parameters to float32 rounding, decoded state within a code step). One parameter sits
    off a 16-byte boundary (the element-wise path of version 2)."""
    monkeypatch.setenv("FASTNN_CUDA_COMPACT_STATE", "1")
    pdtype, kw = CUDA_MODES[mode]
    shapes = [(300, 7), (33,), (4096 + 5,), (1,), (2 * 256 + 9,)]
    cpu = params(pdtype, shapes=shapes)
    dev = [torch.nn.Parameter(p.detach().cuda()) for p in cpu[:-1]] + [_misaligned_copy(cpu[-1])]
    oc = getattr(fastnn.optim, name)(cpu, **KINDS[name], **kw)
    od = getattr(fastnn.optim, name)(dev, **KINDS[name], **kw)
    tol = dict(rtol=1e-5, atol=1e-6) if pdtype == torch.float32 else dict(rtol=2 ** -7, atol=1e-6)
    for step in range(10):
        gs = grads_for(cpu, step)
        for p, q, g in zip(cpu, dev, gs):
            p.grad, q.grad = g, g.cuda()
            with torch.no_grad():
                q.copy_(p)
        if step:  # a copy: a live state_dict shares its tensors (the CPU step counts) with oc
            od.load_state_dict(copy.deepcopy(oc.state_dict()))
        oc.step()
        od.step()
        for p, q in zip(cpu, dev):
            torch.testing.assert_close(q.detach().cpu(), p.detach(), **tol)
            for k, v in _decoded(oc, p).items():
                w = _decoded(od, q)[k]
                bound = v.abs() * 2.0 ** -3 + v.abs().max() * 2.0 ** -17 + 1e-30 if "int8" in mode else None
                if bound is None:
                    torch.testing.assert_close(w, v, rtol=2 ** -7, atol=1e-30)
                else:
                    assert ((w - v).abs() <= bound).all(), (name, mode, step, k)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_kernels")
@pytest.mark.parametrize("mode", list(CUDA_MODES))
def test_cuda_compact_same_bits_twice_and_grad_scaler_skip(mode, compact_kernels, monkeypatch):
    monkeypatch.setenv("FASTNN_CUDA_COMPACT_STATE", "1")
    pdtype, kw = CUDA_MODES[mode]
    runs = []
    for _ in range(2):
        ps = [torch.nn.Parameter(p.detach().cuda()) for p in params(pdtype, shapes=[(300, 7), (4101,)])]
        o = fastnn.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, **kw)
        for step in range(5):
            for p, g in zip(ps, grads_for(ps, step)):
                p.grad = g.cuda()
            o.step()
        runs.append(([p.detach().clone() for p in ps], copy.deepcopy(o.state_dict())))
    # The steps did something (a kernel pair without an instance once left every parameter as it was).
    start = [p.detach().cuda() for p in params(pdtype, shapes=[(300, 7), (4101,)])]
    for a, b in zip(runs[0][0], start):
        assert not torch.equal(a, b)
    for a, b in zip(runs[0][0], runs[1][0]):
        assert torch.equal(a, b)
    for i, st in runs[0][1]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, runs[1][1]["state"][i][k]), k
    # A found_inf skip leaves parameters and state untouched.
    before = ([p.detach().clone() for p in ps], copy.deepcopy(o.state_dict()))
    o.grad_scale = torch.ones((), device="cuda")
    o.found_inf = torch.ones((), device="cuda")
    o.step()
    for a, p in zip(before[0], ps):
        assert torch.equal(a, p.detach())
    after = o.state_dict()["state"]
    for i, st in before[1]["state"].items():
        for k, v in st.items():
            if k != "step":
                assert torch.equal(v, after[i][k]), k


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_kernels")
def test_cuda_bf16_sr_of_bf16_state_refused_unless_opted_in(monkeypatch):
    """The one CUDA pair not yet verified on a GPU is refused, before anything changes; verified
    compact state steps without the switch."""
    monkeypatch.delenv("FASTNN_CUDA_COMPACT_STATE", raising=False)
    p = [torch.nn.Parameter(torch.randn(8, device="cuda", dtype=torch.bfloat16))]
    with pytest.raises(ValueError, match="fastnn.optim.Adam: stochastic_rounding of bfloat16 parameters with "
                                         "bfloat16 state is not yet verified on CUDA"):
        fastnn.optim.Adam(p, stochastic_rounding=True, sr_seed=0)
    q = [torch.nn.Parameter(torch.randn(5000, device="cuda"))]
    o = fastnn.optim.Adam(q, state_dtype="int8")
    q[0].grad = torch.randn_like(q[0])
    before = q[0].detach().clone()
    o.step()
    assert o.state[q[0]]["exp_avg"].dtype == torch.uint8 and not torch.equal(before, q[0].detach())
