"""Drop-in modules: fastnn.nn.Linear, fastnn.nn.MLP, fastnn.nn.FusedSequential and fastnn.nn.fuse."""
import copy

import torch
from torch import nn

from . import _C
from ._ops import ACTIVATIONS, linear_act_op, mlp_op

__all__ = ["Linear", "MLP", "FusedSequential", "fuse"]


class Linear(nn.Linear):
    """``nn.Linear`` followed by an activation, computed by one fused op.

    Same parameters (``weight``, ``bias``), shapes, initialisation and state_dict keys as
    ``torch.nn.Linear``, so checkpoints load either way. ``activation=None`` means identity.
    """

    def __init__(self, in_features, out_features, bias=True, activation=None, device=None, dtype=None,
                 negative_slope=0.01):
        activation = "identity" if activation is None else activation
        if activation not in ACTIVATIONS:
            raise ValueError(f"fastnn.nn.Linear: unknown activation '{activation}' "
                             f"(expected one of: {', '.join(ACTIVATIONS)})")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.activation = activation
        self.negative_slope = float(negative_slope)

    def forward(self, input):
        return linear_act_op(input, self.weight, self.bias, self.activation, self.negative_slope)

    def extra_repr(self):
        s = super().extra_repr() + f", activation={self.activation}"
        if self.activation == "leaky_relu":
            s += f", negative_slope={self.negative_slope}"
        return s

    @classmethod
    def from_linear(cls, linear, activation=None, negative_slope=0.01):
        """A fastnn Linear sharing nothing with ``linear`` but holding copies of its parameters."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"fastnn.nn.Linear.from_linear: expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, activation=activation,
                  device=w.device, dtype=w.dtype, negative_slope=negative_slope)
        with torch.no_grad():
            out.weight.copy_(w)
            if linear.bias is not None:
                out.bias.copy_(linear.bias)
        out.weight.requires_grad_(w.requires_grad)
        if linear.bias is not None:
            out.bias.requires_grad_(linear.bias.requires_grad)
        out.train(linear.training)
        return out


class FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` in which every run of two or more consecutive ``fastnn.nn.Linear``
    layers executes as one ``fastnn.mlp`` op (one dispatch forward, one autograd node backward)
    where fused kernels apply (``fastnn.mlp_path``).

    The layers stay ordinary children under their own names, so parameters, state_dict keys and
    indexing are the Sequential's; only the execution is fused. Forward hooks of the individual
    layers inside a run are therefore not called. On the CPU a run takes the op where the
    cache-blocked kernels measured faster than layer by layer on this machine (``fastnn.mlp_path``),
    or where a layer's backward reads its pre-activation (the op then keeps one activation-sized
    tensor per layer instead of two). On CUDA, where the fully fused kernels apply and are enabled.
    Elsewhere the layers run one by one (as fast, and less memory than the op's per-layer path).
    """

    def forward(self, input):
        # On the CPU the answer per run (one op or layer by layer, _fused) is kept per input shape and
        # dtype: asking the path cache every forward (argument checks, key, lists) cost 10-40 us on a
        # 2-core Zen 3, 4-9% of a 784-256-10 step at batch 128. _C.cpu_path_context() changes
        # with anything else that can change an answer (set_cpu_path, set_cpu_isa, autocast,
        # deterministic mode). Grad mode is part of the key: a call with nothing recorded has its own
        # measured path. Not tracked: a child's activation changed in place after a forward, or a
        # parameter's requires_grad.
        plan = None
        if input.is_cpu and not torch.compiler.is_compiling():
            plans = self.__dict__.get("_fastnn_plans")
            if plans is None:
                plans = self.__dict__["_fastnn_plans"] = {}
            key = (input.shape, input.dtype, _C.cpu_path_context(), torch.is_grad_enabled(), input.requires_grad)
            plan = plans.get(key)
            if plan is None:
                if len(plans) >= 64:  # many input shapes (e.g. inference): keep it bounded
                    plans.clear()
                plan = plans[key] = {}
        x, run, k = input, [], 0
        for m in self:
            if type(m) is Linear:
                run.append(m)
                continue
            x = m(_run_layers(x, run, k, plan))
            run, k = [], k + 1
        return _run_layers(x, run, k, plan)


# _C.saves_output per (activation, negative_slope > 0), read once so torch.compile traces a lookup
# (only leaky_relu's answer depends on its slope, and only on its sign).
_SAVES_OUTPUT = {(a, pos): _C.saves_output(a, 1.0 if pos else 0.0) for a in ACTIVATIONS for pos in (True, False)}


def _saves_z(m):
    return not _SAVES_OUTPUT[(m.activation, m.negative_slope > 0)]


def _fused(x, run):
    """Whether this run goes through fastnn.mlp. CPU: the op itself runs the chain tiled or layer by
    layer, whichever measured faster on this machine for the run's shape class (fastnn.mlp_path).
    A run that every layer would keep one tensor for anyway (relu, tanh, ... all save their outputs)
    goes through the op only where it runs tiled; a run with a layer whose backward reads its
    pre-activation (gelu, silu, ...) always does: the op keeps one activation-sized tensor per layer
    where separate layers keep two. Under torch.compile or autocast the op decides at run time.
    CUDA: through the op where its fused kernels run (measured on the device, or forced by
    FASTNN_MLP_FUSED), and always under autocast (fp16/bf16, where they can)."""
    if x.device.type == "cpu":
        if torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu") or any(_saves_z(m) for m in run):
            return True
        # The op's own choice: for a call with nothing recorded, the one measured on the forward.
        recorded = torch.is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for m in run for p in (m.weight, m.bias) if p is not None))
        return _path(x, run, recorded) == "tiled"
    if x.device.type != "cuda" or torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cuda"):
        return True
    return x.dtype in (torch.float16, torch.bfloat16) and _path(x, run) == "fused"


def _path(x, run, training=True):
    return _C.mlp_path(x, [m.weight for m in run], [m.bias for m in run], [m.activation for m in run],
                       [m.negative_slope for m in run], training)[0]


def _run_layers(x, run, k, plan):
    """The k-th run of Linear layers of a FusedSequential; plan: its memoized answers (None: ask)."""
    if not run:
        return x
    fused = False
    if len(run) > 1:
        if plan is None:
            fused = _fused(x, run)
        else:
            fused = plan.get(k)
            if fused is None:
                fused = plan[k] = _fused(x, run)
    if not fused:
        for m in run:
            x = m(x)
        return x
    return mlp_op(x, [m.weight for m in run], [m.bias for m in run], [m.activation for m in run],
                  [m.negative_slope for m in run])


class MLP(FusedSequential):
    """A multi-layer perceptron, run as one ``fastnn.mlp`` op where that pays (see FusedSequential).

    ``sizes = [in, hidden..., out]``: ``len(sizes) - 1`` layers, each a ``fastnn.nn.Linear``
    (children ``"0"``, ``"1"``, ...; nn.Linear's parameters and initialisation), ``activation`` after
    every layer but the last, ``output_activation`` (None: identity) after the last.
    """

    def __init__(self, sizes, activation="relu", output_activation=None, bias=True, negative_slope=0.01,
                 device=None, dtype=None):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"fastnn.nn.MLP: sizes needs at least an input and an output width, got {sizes}")
        n = len(sizes) - 1
        super().__init__(*[Linear(sizes[i], sizes[i + 1], bias=bias,
                                  activation=activation if i < n - 1 else output_activation,
                                  negative_slope=negative_slope, device=device, dtype=dtype) for i in range(n)])


def _activation_of(module):
    """(name, negative_slope) for an activation module fastnn can fuse, else None."""
    if isinstance(module, nn.ReLU):
        return "relu", 0.01
    if isinstance(module, nn.LeakyReLU):
        return "leaky_relu", float(module.negative_slope)
    if isinstance(module, nn.Sigmoid):
        return "sigmoid", 0.01
    if isinstance(module, nn.Tanh):
        return "tanh", 0.01
    if isinstance(module, nn.GELU):
        return ("gelu_tanh" if module.approximate == "tanh" else "gelu"), 0.01
    if isinstance(module, nn.SiLU):
        return "silu", 0.01
    if isinstance(module, nn.Softplus) and module.beta == 1 and module.threshold == 20:
        return "softplus", 0.01
    return None


def _fuse_into(module):
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Sequential):
            setattr(module, name, _fuse_sequential(child))
        elif type(child) is nn.Linear:
            setattr(module, name, Linear.from_linear(child))
        else:
            _fuse_into(child)


def _fuse_sequential(seq):
    items = list(seq._modules.items())
    out = []
    i = 0
    while i < len(items):
        name, m = items[i]
        if type(m) is nn.Linear:
            act = _activation_of(items[i + 1][1]) if i + 1 < len(items) else None
            if act is not None:
                out.append((name, Linear.from_linear(m, activation=act[0], negative_slope=act[1])))
                i += 2
                continue
            out.append((name, Linear.from_linear(m)))
        else:
            if isinstance(m, nn.Sequential):
                m = _fuse_sequential(m)
            else:
                _fuse_into(m)
            out.append((name, m))
        i += 1
    fused = FusedSequential()
    for name, m in out:
        fused.add_module(name, m)
    fused.train(seq.training)
    return fused


def fuse(model):
    """Return a copy of ``model`` in which each ``nn.Linear`` directly followed by a supported
    activation module inside an ``nn.Sequential`` is one ``fastnn.nn.Linear``, and every other
    ``nn.Linear`` a ``fastnn.nn.Linear`` with identity. Each ``nn.Sequential`` becomes a
    ``FusedSequential``, so a run of two or more such layers (up to an unsupported module) executes
    as one ``fastnn.mlp`` op. The input model is not modified.

    Fusing drops the activation module from the Sequential (the Linear keeps its name), so
    state_dict keys of a fused model equal the original's: activations have no parameters.
    """
    model = copy.deepcopy(model)
    if isinstance(model, nn.Sequential):
        return _fuse_sequential(model)
    if type(model) is nn.Linear:
        return Linear.from_linear(model)
    _fuse_into(model)
    return model
