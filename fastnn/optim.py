"""Fused optimizers: drop-in replacements for torch.optim.Adam, AdamW, RMSprop, SGD and Adagrad.

Each class subclasses its torch.optim counterpart, so constructor arguments, defaults, validation,
param_group keys and state_dict layout are torch's own; only ``step`` differs: one native call per
step updates every parameter of every group. The tensors are gathered once into a native plan
(rebuilt when parameters or state change), so a step passes a few scalars, not lists of tensors.
The same kernels are also exposed as ops: torch.ops.fastnn.adam_, rmsprop_, sgd_, adagrad_.

GradScaler: like torch's fused optimizers these set ``_step_supports_amp_scaling``; the scaler hands
us ``grad_scale``/``found_inf``, the kernel divides gradients by the scale in the same pass and the
whole step (state and step counts included) is skipped when an inf/NaN was found. Unlike torch's
fused CPU kernels, the unscaled gradients are not written back into ``.grad``.

Numerics: each update repeats torch's single-tensor (foreach=False) arithmetic operation by
operation, so trajectories are torch's bit for bit, except that our square roots are IEEE-exact
where torch's CPU sqrt (MKL vector math) is 1 ulp off on ~1% of elements.
"""
import math
import os

import torch
from torch.optim.optimizer import _get_scalar_dtype

from . import _C
from . import _ops  # noqa: F401  (registers the ops)

__all__ = ["Adam", "AdamW", "RMSprop", "SGD", "Adagrad", "full_precision_state_dict"]

# Keys fastnn adds to each param group (saved in state_dict; dropped by full_precision_state_dict).
_GROUP_KEYS = ("state_dtype", "min_8bit_size", "stochastic_rounding", "sr_seed", "sr_step")
_STATE_DTYPES = (None, torch.float32, torch.bfloat16, "int8")
_Q8_BLOCK = 256  # values per scale of 8-bit state (csrc/optim/optim_functors.h)
# Compact state on CUDA passed its tests on an H200 (2026-12-04), except stochastic rounding of bf16
# parameters that keep bf16 state, whose kernel instance was missing then: refused until a GPU run
# verifies it, unless FASTNN_CUDA_COMPACT_STATE=1.
_CUDA_COMPACT_NOTE = "FASTNN_CUDA_COMPACT_STATE=1 runs the kernel, unverified"


def _cuda_compact_enabled():
    return os.environ.get("FASTNN_CUDA_COMPACT_STATE", "") == "1"


_SCALE = "_scale"  # 8-bit state: state[key] holds uint8 codes, state[key + _SCALE] the block scales


def _scalar(x):
    return float(x) if isinstance(x, torch.Tensor) else x


def _is_f32(x):
    return isinstance(x, torch.Tensor) and x.dtype == torch.float32


def _state_dtype(p, g):
    """The dtype of p's state tensors: the group's state_dtype, else p's own (torch's layout); for
    state_dtype="int8", uint8 codes where p has at least min_8bit_size elements, else float32."""
    sd = g.get("state_dtype")
    if isinstance(sd, str):
        return torch.uint8 if p.numel() >= g.get("min_8bit_size", 4096) else torch.float32
    return sd or p.dtype


def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


_DTensor = _dtensor_type()


def _local(t):
    """What the kernels update: a DTensor's local shard (FSDP2 parameters, their gradients and state;
    its storage is the DTensor's, so updating it updates the parameter in place), else t itself."""
    if _DTensor is not None and isinstance(t, _DTensor):
        return t._local_tensor
    return t


# ---- 8-bit state of DTensor (FSDP2) parameters ----
# The blocks of 256 run over each rank's local shard, so a step needs no communication. The codes
# are a DTensor sharded like the parameter; the block scales a DTensor sharded on dim 0 of the same
# 1-D mesh, every rank holding as many as the largest shard needs (the unused tail stays zero), so
# state_dict and load_state_dict move them like any other sharded state.

def _is_dtensor(t):
    return _DTensor is not None and isinstance(t, _DTensor)


def _q8_blocks(n):
    return (n + _Q8_BLOCK - 1) // _Q8_BLOCK


def _q8_shard_blocks(p, name="fastnn.optim"):
    """Scales each rank holds for DTensor p (the largest local shard's block count)."""
    from torch.distributed.tensor import Replicate, Shard
    mesh, pl = p.device_mesh, tuple(p.placements)
    if mesh.ndim != 1 or not (pl == (Shard(0),) or pl == (Replicate(),)):
        raise ValueError(f"{name}: state_dtype='int8' supports DTensor parameters sharded on dim 0 of a 1-D "
                         f"mesh (FSDP2's layout) or replicated, got placements {pl} on a {mesh.ndim}-D mesh")
    if pl == (Replicate(),) or p.dim() == 0 or p.shape[0] == 0:
        return _q8_blocks(p.numel())
    rows = -(-p.shape[0] // mesh.size())  # torch.chunk's largest piece
    return _q8_blocks(rows * (p.numel() // p.shape[0]))


def _q8_scale_count(p):
    """Elements of p's block-scale tensor (global, for a DTensor)."""
    return p.device_mesh.size() * _q8_shard_blocks(p) if _is_dtensor(p) else _q8_blocks(p.numel())


def _q8_quantize(v, signed):
    """Codes and block scales of float values v (a tensor or a DTensor)."""
    if not _is_dtensor(v):
        return _C.q8_quantize(v, signed)
    from torch.distributed.tensor import Shard
    codes, scales = _C.q8_quantize(v._local_tensor, signed)
    nb = _q8_shard_blocks(v)
    padded = torch.zeros(nb, dtype=torch.float32, device=scales.device)
    padded[:scales.numel()] = scales
    mesh = v.device_mesh
    return (_DTensor.from_local(codes, mesh, v.placements, run_check=False, shape=v.shape, stride=v.stride()),
            _DTensor.from_local(padded, mesh, [Shard(0)], run_check=False, shape=(mesh.size() * nb,), stride=(1,)))


def _q8_local_scales(scales, codes):
    """The block scales the kernel updates for these codes: a DTensor's used part of its local shard."""
    if not _is_dtensor(scales):
        return scales
    return scales._local_tensor[:_q8_blocks(_local(codes).numel())]


def _q8_dequantize(codes, scales, signed):
    if not _is_dtensor(codes):
        return _C.q8_dequantize(codes, scales, signed)
    vals = _C.q8_dequantize(codes._local_tensor, _q8_local_scales(scales, codes), signed)
    return _DTensor.from_local(vals, codes.device_mesh, codes.placements, run_check=False, shape=codes.shape,
                               stride=codes.stride())


class _FusedStep:
    """Mixin over a torch.optim class: the plan cache and the step. Each optimizer below defines
    ``_hparams(group) -> (floats, bools)`` in the order its kernel expects (csrc/optim/optim.cpp) and
    ``_init_state(param, group, state) -> keys added``, creating state exactly as torch does."""

    _step_supports_amp_scaling = True
    _name = "fastnn.optim"
    _kind = None          # native optimizer kind
    _state_keys = ()      # state tensors in the kernel's order
    _has_step = True      # keeps a "step" count in state

    _signed_keys = ()     # state keys holding signed values (8-bit codes: signed code)

    def __init__(self, *args, state_dtype=None, stochastic_rounding=None, sr_seed=None, min_8bit_size=4096,
                 **kwargs):
        # torch.optim validates the arguments; its messages gain the name of the optimizer.
        try:
            super().__init__(*args, **kwargs)
        except (ValueError, TypeError) as e:
            msg = str(e)
            raise type(e)(msg if msg.startswith(self._name) else f"{self._name}: {msg}") from None
        if sr_seed is None and stochastic_rounding:
            sr_seed = int(torch.randint(0, 2 ** 62, (1,)).item())  # from torch's generator: manual_seed repeats it
        # Group keys only where an option is used: a default optimizer's state_dict is torch's.
        extra = {}
        if state_dtype is not None:
            extra["state_dtype"] = state_dtype
        if isinstance(state_dtype, str):
            extra["min_8bit_size"] = min_8bit_size
        if stochastic_rounding:
            extra.update(stochastic_rounding=True, sr_seed=int(sr_seed), sr_step=0)
        self.defaults.update(extra)
        self._sr_auto_seed = (0 if sr_seed is None else int(sr_seed)) if stochastic_rounding is None else None
        for g in self.param_groups:
            for k, v in extra.items():
                g.setdefault(k, v)
            self._auto_stochastic_rounding(g)
            self._check_finite(g)
            self._check_compact(g)
            for p in g["params"]:  # state torch created in __init__ (Adagrad's sums)
                if self.state.get(p):
                    self._convert_state(p, g, self.state[p])

    def _auto_stochastic_rounding(self, g):
        """stochastic_rounding=None (the default): on for a group whose float32 parameters keep bf16 state
        (state_dtype=torch.bfloat16), off elsewhere (bf16 parameters round to nearest, as in torch).
        Rounded to nearest, bf16 state stalls: Adam's second moment changes by 0.1% a step (beta2 = 0.999),
        under half a bf16 ulp, so it cannot shrink (benchmarks/RESULTS.md). The seed is fixed (0 unless
        sr_seed is given), so data-parallel replicas round alike and torch's random stream is untouched."""
        if (self._sr_auto_seed is not None and "stochastic_rounding" not in g
                and g.get("state_dtype") == torch.bfloat16 and any(p.dtype == torch.float32 for p in g["params"])):
            g.update(stochastic_rounding=True, sr_seed=g.get("sr_seed", self._sr_auto_seed), sr_step=0)

    def _convert_state(self, p, g, st):
        """Puts p's state tensors into the group's storage: p's dtype, bf16/float32, or 8-bit codes
        (+ block scales); converting from any of these forms (8-bit from float rounds to nearest)."""
        want = _state_dtype(p, g)
        for k in self._state_keys:
            v = st.get(k)
            if not isinstance(v, torch.Tensor):
                continue
            signed = k in self._signed_keys
            if v.dtype == torch.uint8:  # 8-bit codes
                if want == torch.uint8:
                    continue
                v = _q8_dequantize(v, st.pop(k + _SCALE), signed)
            if want == torch.uint8:
                st[k], st[k + _SCALE] = _q8_quantize(v, signed)
            elif v.dtype != want:
                st[k] = v.to(want)

    def _new_state(self, p, g, st, k, fill=0.0):
        """Creates state k of p (filled with `fill`) in the group's storage; returns the keys added."""
        want = _state_dtype(p, g)
        if want == torch.uint8:
            # full_like keeps a DTensor's sharding: the blocks then run over each rank's shard
            v = torch.full_like(p, float(fill), dtype=torch.float32, memory_format=torch.contiguous_format)
            st[k], st[k + _SCALE] = _q8_quantize(v, k in self._signed_keys)
            return [k, k + _SCALE]
        if fill == 0:
            st[k] = torch.zeros_like(p, dtype=want, memory_format=torch.preserve_format)
        else:
            st[k] = torch.full_like(p, fill, dtype=want, memory_format=torch.preserve_format)
        return [k]

    def _check_compact(self, g):
        sd = g.get("state_dtype")
        if sd not in _STATE_DTYPES:
            raise ValueError(f"{self._name}: state_dtype must be None (the parameter's dtype), torch.float32, "
                             f"torch.bfloat16 or 'int8', got {sd!r}")
        for p in g["params"]:
            if sd is not None and p.dtype == torch.float64 and sd != torch.float64:
                raise ValueError(f"{self._name}: state_dtype={sd} is for float32 and bfloat16 parameters, "
                                 "got a float64 parameter")
        if isinstance(sd, str):
            m = g.get("min_8bit_size")
            if isinstance(m, bool) or not isinstance(m, int) or m < 0:
                raise ValueError(f"{self._name}: min_8bit_size must be a non-negative int, got {m!r}")
            for p in g["params"]:
                if _is_dtensor(p):
                    _q8_shard_blocks(p, self._name)  # raises for layouts other than FSDP2's
        if g.get("stochastic_rounding"):
            if g.get("sr_seed") is None:
                raise ValueError(f"{self._name}: stochastic_rounding needs an integer sr_seed")
            if not (isinstance(sd, str) or any(p.dtype == torch.bfloat16 or _state_dtype(p, g) == torch.bfloat16
                                               for p in g["params"])):
                raise ValueError(f"{self._name}: stochastic_rounding=True rounds bfloat16 parameters and state and "
                                 "8-bit state codes, but this group stores none (float32 parameters with float32 "
                                 "state); pass state_dtype=torch.bfloat16 or 'int8', or bfloat16 parameters")
            if not _cuda_compact_enabled() and any(p.device.type != "cpu" and p.dtype == torch.bfloat16
                                                   and _state_dtype(p, g) == torch.bfloat16 for p in g["params"]):
                raise ValueError(f"{self._name}: stochastic_rounding of bfloat16 parameters with bfloat16 state is "
                                 f"not yet verified on CUDA in this version ({_CUDA_COMPACT_NOTE})")

    def _check_finite(self, g):
        # torch lets NaN through most of its range checks (NaN < 0 is false); a NaN hyper-parameter
        # would silently turn every parameter into NaN.
        for v in self._hparams(g)[0]:
            if not math.isfinite(v):
                bad = {k: x for k, x in g.items() if k != "params" and not isinstance(x, (bool, str, type(None)))}
                raise ValueError(f"{self._name}: hyper-parameters must be finite, got {bad}")

    # -- plan --
    def _plan_key(self):
        return id(self.state), tuple((id(g["params"]), len(g["params"])) for g in self.param_groups)

    def _build_plan(self):
        params, group, steps, fresh = [], [], [], []
        states = [[] for _ in self._state_keys]
        scales = [[] for _ in self._state_keys]
        device = None
        fresh_set = getattr(self, "_fastnn_fresh", set())
        seen = {}
        for gi, g in enumerate(self.param_groups):
            for p in g["params"]:
                if id(p) in seen:  # torch only warns; the kernel would update it twice
                    raise ValueError(f"{self._name}: parameter {len(params)} is parameter {seen[id(p)]} again "
                                     "(each parameter may appear once)")
                seen[id(p)] = len(params)
                if device is None:
                    device = p.device
                elif p.device != device:
                    raise RuntimeError(f"{self._name}: all parameters must be on one device, found {device} "
                                       f"and {p.device}")
                st = self.state[p] if p in self.state else {}
                if self._has_step and "step" in st:
                    self._fix_step(st, p, g)
                params.append(p)
                group.append(gi)
                for lst, sc, k in zip(states, scales, self._state_keys):
                    lst.append(_local(st.get(k)))
                    sc.append(_q8_local_scales(st.get(k + _SCALE), st.get(k)))
                steps.append(st.get("step"))
                fresh.append(p in fresh_set)
        self._fastnn_params = params
        local = [_local(p) for p in params]
        # DTensor parameters: the plan holds their local shards, whose .grad is set from the
        # DTensor's gradient for the duration of each step.
        self._fastnn_sharded = [(p, q) for p, q in zip(params, local) if q is not p]
        if any(v is not None for sc in scales for v in sc):
            states = states + [[] for _ in range(3 - len(states))] + scales
        self._fastnn_plan = _C.OptimizerPlan(self._kind, local, group, states,
                                             steps if self._has_step else [], fresh)
        self._fastnn_key = self._plan_key()
        return self._fastnn_plan

    def _plan(self):
        if getattr(self, "_fastnn_key", None) != self._plan_key():
            return self._build_plan()
        return self._fastnn_plan

    def _step_tensor(self, p, g, value=0.0):
        # capturable=True on CUDA keeps the count on the device (no host sync, CUDA-graph safe);
        # otherwise it is a host scalar, as in torch's for-loop and foreach paths.
        if p.is_cuda and g.get("capturable", False):
            return torch.tensor(float(value), dtype=torch.float32, device=p.device)
        return torch.tensor(float(value), dtype=_get_scalar_dtype())

    def _fix_step(self, state, p, g):
        # A step loaded from another device (map_location, capturable or fused checkpoints) is put
        # where this optimizer keeps it.
        s = state["step"]
        if isinstance(s, torch.Tensor) and s.numel() != 1:
            raise ValueError(f"{self._name}: a parameter's step count must be a scalar, got shape "
                             f"{tuple(s.shape)} (corrupt state_dict?)")
        want = self._step_tensor(p, g)
        if (not isinstance(s, torch.Tensor) or s.device != want.device or s.dim() != 0
                or (s.dtype != want.dtype and not (s.device.type == "cpu" and s.dtype == torch.float64))):
            state["step"] = self._step_tensor(p, g, float(s))

    def load_state_dict(self, state_dict):
        """Loads this optimizer's state_dict (compact state included) or torch.optim's of the same
        kind: state is converted to this optimizer's state_dtype (bf16 or 8-bit state from float32
        is rounded to nearest); fastnn's group options absent from it keep their current values.
        A state_dict of another optimizer kind, or with state that does not fit its parameter, is
        refused before anything changes."""
        keep = [{k: g[k] for k in _GROUP_KEYS if k in g} for g in self.param_groups]
        saved = state_dict.get("state", {}) if isinstance(state_dict, dict) else {}
        saved_ids = [i for g in state_dict.get("param_groups", []) for i in g.get("params", [])] \
            if isinstance(state_dict, dict) else []
        params = [p for g in self.param_groups for p in g["params"]]
        id_map = dict(zip(saved_ids, params))
        allowed = {"step"} | set(self._state_keys) | {k + _SCALE for k in self._state_keys}
        # torch casts every state tensor to its parameter's dtype, which would round float32 state of
        # bf16 parameters and 8-bit scales; those tensors bypass it and are converted below.
        side = {}
        for i, st in saved.items():
            p = id_map.get(i)
            if p is None or not isinstance(st, dict):
                continue
            extra = set(st) - allowed
            if extra:
                raise ValueError(f"{self._name}: the state_dict holds state {sorted(extra)} that this optimizer "
                                 "does not keep (a state_dict of another optimizer?)")
            for k in self._state_keys:
                v = st.get(k)
                if not isinstance(v, torch.Tensor):
                    continue
                if v.dtype == torch.uint8:
                    sc = st.get(k + _SCALE)
                    nb = _q8_scale_count(p)
                    if v.numel() != p.numel() or not isinstance(sc, torch.Tensor) or sc.numel() != nb:
                        raise ValueError(f"{self._name}: 8-bit state '{k}' does not fit parameter of shape "
                                         f"{tuple(p.shape)} (codes {tuple(v.shape)}, scales "
                                         f"{None if not isinstance(sc, torch.Tensor) else tuple(sc.shape)})")
                elif v.shape != p.shape:
                    raise ValueError(f"{self._name}: state '{k}' has shape {tuple(v.shape)} but its parameter "
                                     f"has shape {tuple(p.shape)} (a state_dict of another model?)")
            side[i] = {k: v for k, v in st.items() if k != "step" and isinstance(v, torch.Tensor)}
        if side:
            state_dict = dict(state_dict)
            state_dict["state"] = {i: ({k: v for k, v in st.items() if k not in side[i]} if i in side else st)
                                   for i, st in saved.items()}
        super().load_state_dict(state_dict)
        for i, tensors in side.items():
            p = id_map[i]
            self.state[p].update({k: v.to(device=p.device, copy=True) for k, v in tensors.items()})
        for g, old in zip(self.param_groups, keep):
            for k, v in old.items():
                g.setdefault(k, v)
            for p in g["params"]:
                if self.state.get(p):
                    self._convert_state(p, g, self.state[p])
        self._fastnn_key = None

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        self._fastnn_key = None
        if hasattr(self, "_sr_auto_seed"):
            self._auto_stochastic_rounding(self.param_groups[-1])
        if hasattr(self, "_hparams"):
            self._check_finite(self.param_groups[-1])
            self._check_compact(self.param_groups[-1])

    def _check_unsupported(self):
        for g in self.param_groups:
            if g.get("differentiable", False):
                raise ValueError(f"{self._name}: differentiable=True is not supported by the fused kernels")

    def _lend_local_grads(self):
        for p, q in self._fastnn_sharded:
            g = p.grad
            q.grad = None if g is None else _local(g)

    def _return_local_grads(self):
        for _, q in self._fastnn_sharded:
            q.grad = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_unsupported()
        plan = self._plan()
        if not self._fastnn_params:
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        for v in (grad_scale, found_inf):
            if v is not None and (not isinstance(v, torch.Tensor) or v.numel() != 1):
                raise ValueError(f"{self._name}: grad_scale and found_inf must be one-element tensors")
        if self._fastnn_params[0].device.type == "cpu":  # CUDA kernels read them on the device
            if grad_scale is not None:
                grad_scale = grad_scale.reshape(()).float().cpu()
            if found_inf is not None:
                found_inf = found_inf.reshape(()).float().cpu()
        h, b = zip(*(self._hparams(g) for g in self.param_groups))
        for g, f in zip(self.param_groups, h):
            if not all(math.isfinite(v) for v in f):
                self._check_finite(g)
        sr = [[g["sr_seed"], g["sr_step"]] if g.get("stochastic_rounding") else [] for g in self.param_groups]
        for g in self.param_groups:
            if g.get("stochastic_rounding"):
                g["sr_step"] += 1  # a fresh draw every step, saved with the state_dict
        try:
            self._lend_local_grads()
            missing = plan.step(h, b, grad_scale, found_inf, sr)
        finally:
            self._return_local_grads()
        if missing:
            added = []
            try:
                group_of = {id(p): g for g in self.param_groups for p in g["params"]}
                for i in missing:
                    p = self._fastnn_params[i]
                    added.append((p, self._init_state(p, group_of[id(p)], self.state[p])))
                plan = self._build_plan()
                try:
                    self._lend_local_grads()
                    missing = plan.step(h, b, grad_scale, found_inf, sr)
                finally:
                    self._return_local_grads()
                assert not missing, "fastnn.optim: state initialisation did not complete"
            except BaseException:
                for p, keys in added:  # leave no half-initialised state behind
                    for k in keys:
                        self.state[p].pop(k, None)
                    if not self.state[p]:
                        del self.state[p]
                self._fastnn_key = None
                raise
        if getattr(self, "_fastnn_fresh", None):
            still = set(self._fastnn_plan.fresh())
            self._fastnn_fresh = {p for i, p in enumerate(self._fastnn_params) if i in still}
        return loss


class Adam(_FusedStep, torch.optim.Adam):
    """torch.optim.Adam with a fused multi-tensor step (decoupled_weight_decay=True is AdamW)."""

    _name = "fastnn.optim.Adam"
    _kind = "adam"
    _state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _signed_keys = ("exp_avg",)

    def _hparams(self, g):
        beta1, beta2 = g["betas"]
        return ([_scalar(g["lr"]), _scalar(beta1), _scalar(beta2), _scalar(g["weight_decay"]), _scalar(g["eps"])],
                [bool(g["amsgrad"]), bool(g["maximize"]), _is_f32(g["lr"]),
                 bool(g.get("decoupled_weight_decay", False))])

    def _init_state(self, p, g, st):
        added = []
        for k in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if g["amsgrad"] else ()):
            if k not in st:
                added += self._new_state(p, g, st, k)
        if "step" not in st:
            st["step"] = self._step_tensor(p, g)
            added.append("step")
        return added


class AdamW(Adam, torch.optim.AdamW):
    """torch.optim.AdamW with a fused multi-tensor step."""

    _name = "fastnn.optim.AdamW"


class RMSprop(_FusedStep, torch.optim.RMSprop):
    """torch.optim.RMSprop (centered, momentum) with a fused multi-tensor step."""

    _name = "fastnn.optim.RMSprop"
    _kind = "rmsprop"
    _state_keys = ("square_avg", "grad_avg", "momentum_buffer")
    _signed_keys = ("grad_avg", "momentum_buffer")

    def _hparams(self, g):
        return ([_scalar(g["lr"]), _scalar(g["alpha"]), _scalar(g["eps"]), _scalar(g["weight_decay"]),
                 _scalar(g["momentum"])],
                [bool(g["centered"]), bool(g["maximize"])])

    def _init_state(self, p, g, st):
        want = ["square_avg"]
        if _scalar(g["momentum"]) > 0:
            want.append("momentum_buffer")
        if g["centered"]:
            want.append("grad_avg")
        added = []
        for k in want:
            if k not in st:
                added += self._new_state(p, g, st, k)
        if "step" not in st:
            st["step"] = self._step_tensor(p, g)
            added.append("step")
        return added


class SGD(_FusedStep, torch.optim.SGD):
    """torch.optim.SGD (momentum, dampening, nesterov) with a fused multi-tensor step."""

    _name = "fastnn.optim.SGD"
    _kind = "sgd"
    _state_keys = ("momentum_buffer",)
    _signed_keys = ("momentum_buffer",)
    _has_step = False

    def _hparams(self, g):
        return ([_scalar(g["lr"]), _scalar(g["momentum"]), _scalar(g["dampening"]), _scalar(g["weight_decay"])],
                [bool(g["nesterov"]), bool(g["maximize"])])

    def _init_state(self, p, g, st):
        # torch sets the buffer to the (decayed) gradient on the first step: the kernel does that
        # for buffers marked fresh.
        added = self._new_state(p, g, st, "momentum_buffer")
        if not hasattr(self, "_fastnn_fresh"):
            self._fastnn_fresh = set()
        self._fastnn_fresh.add(p)
        return added


class Adagrad(_FusedStep, torch.optim.Adagrad):
    """torch.optim.Adagrad with a fused multi-tensor step."""

    _name = "fastnn.optim.Adagrad"
    _kind = "adagrad"
    _state_keys = ("sum",)

    def _hparams(self, g):
        return ([_scalar(g["lr"]), _scalar(g["lr_decay"]), _scalar(g["weight_decay"]), _scalar(g["eps"])],
                [bool(g["maximize"]), _is_f32(g["lr"])])

    def _init_state(self, p, g, st):  # a param added after construction (torch fills state in __init__)
        added = []
        if "sum" not in st:
            added += self._new_state(p, g, st, "sum", _scalar(g["initial_accumulator_value"]))
        if "step" not in st:
            st["step"] = self._step_tensor(p, g)
            added.append("step")
        return added


def full_precision_state_dict(optimizer):
    """``optimizer.state_dict()`` in torch.optim's layout: compact (bfloat16 or 8-bit) state as
    float32 (state of float64 parameters stays float64) and without fastnn's group keys, loadable
    into the torch.optim optimizer of the same name."""
    sd = optimizer.state_dict()
    signed = getattr(optimizer, "_signed_keys", ())
    state = {}
    for i, st in sd["state"].items():
        out = {}
        for k, v in st.items():
            if k.endswith(_SCALE) and k[:-len(_SCALE)] in st:
                continue
            if k != "step" and isinstance(v, torch.Tensor):
                if v.dtype == torch.uint8:
                    v = _q8_dequantize(v, st[k + _SCALE], k in signed)
                elif v.dtype == torch.bfloat16:
                    v = v.float()
            out[k] = v
        state[i] = out
    groups = [{k: v for k, v in g.items() if k not in _GROUP_KEYS} for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}
