"""Loads the native ops (torch.ops.fastnn.*) and registers their fake (meta) kernels."""
import torch

from . import _C  # loading the library registers the ops

# Both come from the C++ activation table (csrc/common/activations.h), not a copy of it.
ACTIVATIONS = tuple(_C.activation_names())
saves_output = _C.saves_output  # (activation, negative_slope) -> backward reads the output?


def _check(input, weight, bias, activation):
    op = "fastnn.linear_act"
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: unknown activation '{activation}' (expected one of: {', '.join(ACTIVATIONS)})")
    torch._check(input.dtype.is_floating_point, lambda: f"{op}: input must be a floating-point tensor")
    torch._check(weight.dim() == 2, lambda: f"{op}: weight must be 2-D (out_features, in_features)")
    torch._check(input.dim() >= 1, lambda: f"{op}: input must have at least 1 dimension")
    torch._check(input.shape[-1] == weight.shape[1],
                 lambda: f"{op}: input has {input.shape[-1]} features but weight expects in_features={weight.shape[1]}")
    torch._check(weight.device == input.device,
                 lambda: f"{op}: device mismatch: input is on {input.device} but weight is on {weight.device}")
    torch._check(weight.dtype == input.dtype, lambda: f"{op}: dtype mismatch: input {input.dtype}, weight {weight.dtype}")
    if bias is not None:
        torch._check(bias.dim() == 1 and bias.shape[0] == weight.shape[0],
                     lambda: f"{op}: bias must be 1-D of size out_features={weight.shape[0]}")
        torch._check(bias.dtype == input.dtype, lambda: f"{op}: dtype mismatch: input {input.dtype}, bias {bias.dtype}")
        torch._check(bias.device == input.device,
                     lambda: f"{op}: device mismatch: input is on {input.device} but bias is on {bias.device}")


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


def _no_outputs(*args, **kwargs):
    return None


for _name in ("adam_", "rmsprop_", "sgd_", "adagrad_"):
    torch.library.register_fake(f"fastnn::{_name}")(_no_outputs)

linear_act_op = torch.ops.fastnn.linear_act.default
