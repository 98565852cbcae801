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

import torch
from torch.optim.optimizer import _get_scalar_dtype

from . import _C
from . import _ops  # noqa: F401  (registers the ops)

__all__ = ["Adam", "AdamW", "RMSprop", "SGD", "Adagrad"]


def _scalar(x):
    return float(x) if isinstance(x, torch.Tensor) else x


def _is_f32(x):
    return isinstance(x, torch.Tensor) and x.dtype == torch.float32


def _zeros(p):
    return torch.zeros_like(p, memory_format=torch.preserve_format)


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


class _FusedStep:
    """Mixin over a torch.optim class: the plan cache and the step. Each optimizer below defines
    ``_hparams(group) -> (floats, bools)`` in the order its kernel expects (csrc/optim/optim.cpp) and
    ``_init_state(param, group, state) -> keys added``, creating state exactly as torch does."""

    _step_supports_amp_scaling = True
    _name = "fastnn.optim"
    _kind = None          # native optimizer kind
    _state_keys = ()      # state tensors in the kernel's order
    _has_step = True      # keeps a "step" count in state

    def __init__(self, *args, **kwargs):
        # torch.optim validates the arguments; its messages gain the name of the optimizer.
        try:
            super().__init__(*args, **kwargs)
        except (ValueError, TypeError) as e:
            msg = str(e)
            raise type(e)(msg if msg.startswith(self._name) else f"{self._name}: {msg}") from None
        for g in self.param_groups:
            self._check_finite(g)

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
                for lst, k in zip(states, self._state_keys):
                    lst.append(_local(st.get(k)))
                steps.append(st.get("step"))
                fresh.append(p in fresh_set)
        self._fastnn_params = params
        local = [_local(p) for p in params]
        # DTensor parameters: the plan holds their local shards, whose .grad is set from the
        # DTensor's gradient for the duration of each step.
        self._fastnn_sharded = [(p, q) for p, q in zip(params, local) if q is not p]
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
        super().load_state_dict(state_dict)
        self._fastnn_key = None

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        self._fastnn_key = None
        if hasattr(self, "_hparams"):
            self._check_finite(self.param_groups[-1])

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
        try:
            self._lend_local_grads()
            missing = plan.step(h, b, grad_scale, found_inf)
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
                    missing = plan.step(h, b, grad_scale, found_inf)
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

    def _hparams(self, g):
        beta1, beta2 = g["betas"]
        return ([_scalar(g["lr"]), _scalar(beta1), _scalar(beta2), _scalar(g["weight_decay"]), _scalar(g["eps"])],
                [bool(g["amsgrad"]), bool(g["maximize"]), _is_f32(g["lr"]),
                 bool(g.get("decoupled_weight_decay", False))])

    def _init_state(self, p, g, st):
        added = []
        for k in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if g["amsgrad"] else ()):
            if k not in st:
                st[k] = _zeros(p)
                added.append(k)
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
        added = [k for k in want if k not in st]
        for k in added:
            st[k] = _zeros(p)
        if "step" not in st:
            st["step"] = self._step_tensor(p, g)
            added.append("step")
        return added


class SGD(_FusedStep, torch.optim.SGD):
    """torch.optim.SGD (momentum, dampening, nesterov) with a fused multi-tensor step."""

    _name = "fastnn.optim.SGD"
    _kind = "sgd"
    _state_keys = ("momentum_buffer",)
    _has_step = False

    def _hparams(self, g):
        return ([_scalar(g["lr"]), _scalar(g["momentum"]), _scalar(g["dampening"]), _scalar(g["weight_decay"])],
                [bool(g["nesterov"]), bool(g["maximize"])])

    def _init_state(self, p, g, st):
        # torch sets the buffer to the (decayed) gradient on the first step: the kernel does that
        # for buffers marked fresh.
        st["momentum_buffer"] = _zeros(p)
        if not hasattr(self, "_fastnn_fresh"):
            self._fastnn_fresh = set()
        self._fastnn_fresh.add(p)
        return ["momentum_buffer"]


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
            st["sum"] = torch.full_like(p, _scalar(g["initial_accumulator_value"]),
                                        memory_format=torch.preserve_format)
            added.append("sum")
        if "step" not in st:
            st["step"] = self._step_tensor(p, g)
            added.append("step")
        return added
