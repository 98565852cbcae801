"""Fused optimizers: drop-in replacements for torch.optim.Adam, AdamW, RMSprop, SGD and Adagrad.

Each class subclasses its torch.optim counterpart, so constructor arguments, defaults, validation,
param_group keys and state_dict layout are torch's own; only ``step`` differs: one native call per
step (torch.ops.fastnn.adam_ etc.) updates every parameter of every group.

GradScaler: like torch's fused optimizers these set ``_step_supports_amp_scaling``; the scaler hands
us ``grad_scale``/``found_inf``, the kernel divides gradients by the scale in the same pass and the
whole step (state and step counts included) is skipped when an inf/NaN was found. Unlike torch's
fused CPU kernels, the unscaled gradients are not written back into ``.grad``.
"""
import torch
from torch.optim.optimizer import _get_scalar_dtype

from . import _ops  # noqa: F401  (registers the ops)

__all__ = ["Adam", "AdamW", "RMSprop", "SGD", "Adagrad"]

_ops_ns = torch.ops.fastnn


def _scalar(x):
    return float(x) if isinstance(x, torch.Tensor) else x


def _is_f32(x):
    return isinstance(x, torch.Tensor) and x.dtype == torch.float32


class _FusedStep:
    """Mixin: collects the tensors of all groups and calls one native op per device."""

    _step_supports_amp_scaling = True
    _name = "fastnn.optim"

    def _check_unsupported(self):
        for g in self.param_groups:
            if g.get("differentiable", False):
                raise ValueError(f"{self._name}: differentiable=True is not supported by the fused kernels")

    def _new_step_tensor(self):
        return torch.tensor(0.0, dtype=_get_scalar_dtype())

    def _fix_step(self, state):
        # A step loaded onto another device (map_location, capturable checkpoints) is moved back to
        # a CPU scalar: the kernels keep counts on the host.
        s = state["step"]
        if not isinstance(s, torch.Tensor):
            state["step"] = torch.tensor(float(s), dtype=_get_scalar_dtype())
        elif s.device.type != "cpu" or s.dtype not in (torch.float32, torch.float64) or s.dim() != 0:
            state["step"] = torch.tensor(float(s), dtype=_get_scalar_dtype())

    def _collect(self):
        """[(group, [params with grads])], checking devices; grads None are skipped."""
        out = []
        device = None
        for g in self.param_groups:
            ps = [p for p in g["params"] if p.grad is not None]
            for p in ps:
                if device is None:
                    device = p.device
                elif p.device != device:
                    raise RuntimeError(f"{self._name}: all parameters must be on one device, found {device} "
                                       f"and {p.device}")
                if p.grad.is_sparse:
                    raise RuntimeError(f"{self._name}: sparse gradients are not supported")
                if torch.is_complex(p):
                    raise RuntimeError(f"{self._name}: complex parameters are not supported")
            out.append((g, ps))
        return out, device

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_unsupported()
        groups, device = self._collect()
        if device is None:
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if device.type == "cpu":
            # GradScaler keeps its scale where the parameters are; the CPU kernel wants host scalars.
            grad_scale = None if grad_scale is None else grad_scale.reshape(()).cpu()
            found_inf = None if found_inf is None else found_inf.reshape(()).cpu()
        created = []
        try:
            self._fused_step(groups, grad_scale, found_inf, created)
        except BaseException:
            for p in created:  # leave no half-initialised state behind
                self.state.pop(p, None)
            raise
        return loss


class Adam(_FusedStep, torch.optim.Adam):
    """torch.optim.Adam with a fused multi-tensor step (decoupled_weight_decay=True is AdamW)."""

    _name = "fastnn.optim.Adam"

    def _fused_step(self, groups, grad_scale, found_inf, created):
        params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, sizes = [], [], [], [], [], [], []
        lr, b1, b2, wd, eps, ams, maxi, lr32 = [], [], [], [], [], [], [], []
        decoupled = None
        for g, ps in groups:
            d = bool(g.get("decoupled_weight_decay", False))
            if decoupled is None:
                decoupled = d
            elif decoupled != d and ps:
                raise ValueError(f"{self._name}: param groups mix decoupled_weight_decay True and False")
            amsgrad = g["amsgrad"]
            for p in ps:
                st = self.state[p]
                if len(st) == 0:
                    created.append(p)
                    st["step"] = self._new_step_tensor()
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if amsgrad:
                        st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif amsgrad and "max_exp_avg_sq" not in st:
                    st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self._fix_step(st)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(st["exp_avg"])
                exp_avg_sqs.append(st["exp_avg_sq"])
                max_sqs.append(st["max_exp_avg_sq"] if amsgrad else p.new_empty(0))
                steps.append(st["step"])
            sizes.append(len(ps))
            beta1, beta2 = g["betas"]
            lr.append(_scalar(g["lr"]))
            b1.append(_scalar(beta1))
            b2.append(_scalar(beta2))
            wd.append(_scalar(g["weight_decay"]))
            eps.append(_scalar(g["eps"]))
            ams.append(bool(amsgrad))
            maxi.append(bool(g["maximize"]))
            lr32.append(_is_f32(g["lr"]))
        _ops_ns.adam_(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, sizes, lr, b1, b2, wd, eps, ams, maxi,
                      bool(decoupled), lr32, grad_scale, found_inf)


class AdamW(Adam, torch.optim.AdamW):
    """torch.optim.AdamW with a fused multi-tensor step."""

    _name = "fastnn.optim.AdamW"


class RMSprop(_FusedStep, torch.optim.RMSprop):
    """torch.optim.RMSprop (centered, momentum) with a fused multi-tensor step."""

    _name = "fastnn.optim.RMSprop"

    def _fused_step(self, groups, grad_scale, found_inf, created):
        params, grads, sq, gavg, bufs, steps, sizes = [], [], [], [], [], [], []
        lr, alpha, eps, wd, mom, cen, maxi = [], [], [], [], [], [], []
        for g, ps in groups:
            centered, momentum = g["centered"], _scalar(g["momentum"])
            for p in ps:
                st = self.state[p]
                if len(st) == 0:
                    created.append(p)
                    st["step"] = self._new_step_tensor()
                    st["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if momentum > 0:
                        st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if centered:
                        st["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self._fix_step(st)
                params.append(p)
                grads.append(p.grad)
                sq.append(st["square_avg"])
                gavg.append(st["grad_avg"] if centered else p.new_empty(0))
                bufs.append(st["momentum_buffer"] if momentum > 0 else p.new_empty(0))
                steps.append(st["step"])
            sizes.append(len(ps))
            lr.append(_scalar(g["lr"]))
            alpha.append(_scalar(g["alpha"]))
            eps.append(_scalar(g["eps"]))
            wd.append(_scalar(g["weight_decay"]))
            mom.append(momentum)
            cen.append(bool(centered))
            maxi.append(bool(g["maximize"]))
        _ops_ns.rmsprop_(params, grads, sq, gavg, bufs, steps, sizes, lr, alpha, eps, wd, mom, cen, maxi,
                         grad_scale, found_inf)


class SGD(_FusedStep, torch.optim.SGD):
    """torch.optim.SGD (momentum, dampening, nesterov) with a fused multi-tensor step."""

    _name = "fastnn.optim.SGD"

    def _fused_step(self, groups, grad_scale, found_inf, created):
        params, grads, bufs, first, sizes = [], [], [], [], []
        lr, mom, damp, wd, nest, maxi = [], [], [], [], [], []
        for g, ps in groups:
            momentum = _scalar(g["momentum"])
            for p in ps:
                params.append(p)
                grads.append(p.grad)
                if momentum != 0:
                    st = self.state[p]
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        created.append(p)
                        buf = st["momentum_buffer"] = torch.empty_like(p, memory_format=torch.preserve_format)
                        first.append(True)
                    else:
                        first.append(False)
                    bufs.append(buf)
                else:
                    bufs.append(p.new_empty(0))
                    first.append(False)
            sizes.append(len(ps))
            lr.append(_scalar(g["lr"]))
            mom.append(momentum)
            damp.append(_scalar(g["dampening"]))
            wd.append(_scalar(g["weight_decay"]))
            nest.append(bool(g["nesterov"]))
            maxi.append(bool(g["maximize"]))
        _ops_ns.sgd_(params, grads, bufs, first, sizes, lr, mom, damp, wd, nest, maxi, grad_scale, found_inf)


class Adagrad(_FusedStep, torch.optim.Adagrad):
    """torch.optim.Adagrad with a fused multi-tensor step."""

    _name = "fastnn.optim.Adagrad"

    def _fused_step(self, groups, grad_scale, found_inf, created):
        params, grads, sums, steps, sizes = [], [], [], [], []
        lr, lr_decay, wd, eps, maxi, lr32 = [], [], [], [], [], []
        for g, ps in groups:
            for p in ps:
                st = self.state[p]
                if len(st) == 0:  # a param added after construction (torch fills state in __init__)
                    created.append(p)
                    st["step"] = self._new_step_tensor()
                    st["sum"] = torch.full_like(p, _scalar(g["initial_accumulator_value"]),
                                                memory_format=torch.preserve_format)
                self._fix_step(st)
                params.append(p)
                grads.append(p.grad)
                sums.append(st["sum"])
                steps.append(st["step"])
            sizes.append(len(ps))
            lr.append(_scalar(g["lr"]))
            lr_decay.append(_scalar(g["lr_decay"]))
            wd.append(_scalar(g["weight_decay"]))
            eps.append(_scalar(g["eps"]))
            maxi.append(bool(g["maximize"]))
            lr32.append(_is_f32(g["lr"]))
        _ops_ns.adagrad_(params, grads, sums, steps, sizes, lr, lr_decay, wd, eps, maxi, lr32, grad_scale, found_inf)
