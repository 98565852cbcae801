"""Loads the native ops (torch.ops.fastnn.*) and registers their fake (meta) kernels."""
import torch

from . import _C  # loading the library registers the ops

# Both come from the C++ activation table (csrc/common/activations.h), not a copy of it.
ACTIVATIONS = tuple(_C.activation_names())
saves_output = _C.saves_output  # (activation, negative_slope) -> backward reads the output?


def _check_layer(where, input, weight, bias, activation, in_features):
    """One layer's arguments, as the C++ checks them (csrc/linear_act/linear_act_common.h)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation '{activation}' (expected one of: {', '.join(ACTIVATIONS)})")
    torch._check(weight.dim() == 2, lambda: f"{where}: weight must be 2-D (out_features, in_features)")
    torch._check(in_features == weight.shape[1],
                 lambda: f"{where}: input has {in_features} features but weight expects in_features={weight.shape[1]}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        torch._check(t.dtype == input.dtype, lambda: f"{where}: dtype mismatch: input {input.dtype}, {name} {t.dtype}")
        torch._check(t.device == input.device,
                     lambda: f"{where}: device mismatch: input is on {input.device} but {name} is on {t.device}")
    if bias is not None:
        torch._check(bias.dim() == 1 and bias.shape[0] == weight.shape[0],
                     lambda: f"{where}: bias must be 1-D of size out_features={weight.shape[0]}")


def _check_input(op, input):
    torch._check(input.dtype.is_floating_point, lambda: f"{op}: input must be a floating-point tensor")
    torch._check(input.dim() >= 1, lambda: f"{op}: input must have at least 1 dimension")


def _check(input, weight, bias, activation):
    _check_input("fastnn.linear_act", input)
    _check_layer("fastnn.linear_act", input, weight, bias, activation, input.shape[-1])


@torch.library.register_fake("fastnn::linear_act")
def _linear_act_fake(input, weight, bias, activation, negative_slope):
    _check(input, weight, bias, activation)
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("fastnn::linear_act_forward")
def _linear_act_forward_fake(input, weight, bias, activation, negative_slope):
    _check(input, weight, bias, activation)
    out = input.new_empty((*input.shape[:-1], weight.shape[0]))
    saved = input.new_empty((0,)) if saves_output(activation, negative_slope) else torch.empty_like(out)
    return out, saved


@torch.library.register_fake("fastnn::linear_act_backward")
def _linear_act_backward_fake(grad_output, input, weight, saved, has_bias, activation, negative_slope, output_mask):
    gi = torch.empty_like(input, memory_format=torch.contiguous_format) if output_mask[0] else input.new_empty((0,))
    gw = torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[1] else weight.new_empty((0,))
    gb = weight.new_empty((weight.shape[0],)) if has_bias else weight.new_empty((0,))
    return gi, gw, gb


@torch.library.register_fake("fastnn::activation")
def _activation_fake(z, activation, negative_slope):
    if activation not in ACTIVATIONS:
        raise ValueError(f"fastnn.activation: unknown activation '{activation}'")
    return torch.empty_like(z, memory_format=torch.contiguous_format)


def _check_mlp(input, weights, biases, activations, negative_slopes):
    op = "fastnn.mlp"
    n = len(weights)
    torch._check(n >= 1, lambda: f"{op}: needs at least one layer (weights is empty)")
    torch._check(len(biases) == n and len(activations) == n and len(negative_slopes) == n,
                 lambda: f"{op}: weights, biases, activations and negative_slopes must have one entry per layer")
    _check_input(op, input)
    for i, (w, b, a) in enumerate(zip(weights, biases, activations)):
        where = f"{op}: layer {i}"
        if i > 0:
            torch._check(w.dim() != 2 or w.shape[1] == weights[i - 1].shape[0],
                         lambda: f"{where}: weight expects in_features={w.shape[1]} but layer {i - 1} has "
                                 f"out_features={weights[i - 1].shape[0]}")
        _check_layer(where, input, w, b, a, input.shape[-1] if i == 0 else w.shape[1] if w.dim() == 2 else -1)


@torch.library.register_fake("fastnn::mlp")
def _mlp_fake(input, weights, biases, activations, negative_slopes):
    _check_mlp(input, weights, biases, activations, negative_slopes)
    return input.new_empty((*input.shape[:-1], weights[-1].shape[0]))


@torch.library.register_fake("fastnn::mlp_forward")
def _mlp_forward_fake(input, weights, biases, activations, negative_slopes):
    _check_mlp(input, weights, biases, activations, negative_slopes)
    rows = 1
    for d in input.shape[:-1]:
        rows = rows * d
    n = len(weights)
    total = sum(rows * w.shape[0] for i, (w, a, s) in enumerate(zip(weights, activations, negative_slopes))
                if not (i == n - 1 and saves_output(a, s)))
    return input.new_empty((*input.shape[:-1], weights[-1].shape[0])), input.new_empty((total,))


@torch.library.register_fake("fastnn::mlp_backward")
def _mlp_backward_fake(grad_output, input, weights, biases, saved, output, activations, negative_slopes, input_grad):
    gi = torch.empty_like(input, memory_format=torch.contiguous_format) if input_grad else input.new_empty((0,))
    gw = [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]
    gb = [w.new_empty((w.shape[0],)) if b is not None else w.new_empty((0,)) for w, b in zip(weights, biases)]
    return gi, gw, gb


def _no_outputs(*args, **kwargs):
    return None


for _name in ("adam_", "rmsprop_", "sgd_", "adagrad_"):
    torch.library.register_fake(f"fastnn::{_name}")(_no_outputs)

_linear_act_op = torch.ops.fastnn.linear_act.default
_mlp_op = torch.ops.fastnn.mlp.default
_has_torch_function = torch._C._has_torch_function


# The same ops called typed (_C.linear_act, _C.mlp) in eager mode: torch.ops' boxed call converts every
# argument and cost ~1.5 us more a call on Zen 4, a third of a small layer. torch.compile's tracing
# and __torch_function__ overrides (subclasses, modes, FX proxies) need the torch.ops call.
def linear_act_op(input, weight, bias, activation, negative_slope):
    if torch.compiler.is_compiling() or _has_torch_function((input, weight, bias)):
        return _linear_act_op(input, weight, bias, activation, negative_slope)
    return _C.linear_act(input, weight, bias, activation, negative_slope)


def mlp_op(input, weights, biases, activations, negative_slopes):
    if torch.compiler.is_compiling() or _has_torch_function((input, *weights, *biases)):
        return _mlp_op(input, weights, biases, activations, negative_slopes)
    return _C.mlp(input, weights, biases, activations, negative_slopes)
