"""Functional API: fastnn.linear_act (also fastnn.functional.linear_act)."""
from ._ops import ACTIVATIONS, linear_act_op

__all__ = ["linear_act", "ACTIVATIONS"]


def linear_act(input, weight, bias=None, activation="identity", negative_slope=0.01):
    """``act(input @ weight.T + bias)`` in one fused op, differentiable (twice).

    activation: one of ``fastnn.ACTIVATIONS``; negative_slope is used by ``leaky_relu`` only.
    input: ``(..., in_features)``; weight: ``(out_features, in_features)``; bias: ``(out_features,)`` or None.
    """
    return linear_act_op(input, weight, bias, activation, float(negative_slope))
