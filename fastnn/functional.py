"""Functional API: fastnn.linear_act and fastnn.mlp (also under fastnn.functional)."""
from . import _C
from ._ops import ACTIVATIONS, linear_act_op, mlp_op

__all__ = ["linear_act", "mlp", "mlp_path", "linear_act_path", "ACTIVATIONS"]


def linear_act(input, weight, bias=None, activation="identity", negative_slope=0.01):
    """``act(input @ weight.T + bias)`` in one fused op, differentiable (twice).

    activation: one of ``fastnn.ACTIVATIONS``; negative_slope is used by ``leaky_relu`` only.
    input: ``(..., in_features)``; weight: ``(out_features, in_features)``; bias: ``(out_features,)`` or None.
    """
    return linear_act_op(input, weight, bias, activation, float(negative_slope))


def mlp(input, weights, biases=None, activations="identity", negative_slopes=0.01):
    """A chain of Linear+activation layers in one op: for each layer ``l``,
    ``x = act_l(x @ weights[l].T + biases[l])``. Differentiable (twice), one autograd node.

    biases: a list with a tensor or None per layer, or None for no biases at all. activations and
    negative_slopes: one per layer, or a single value for every layer.
    """
    n = len(weights)
    if biases is None:
        biases = [None] * n
    if isinstance(activations, str):
        activations = [activations] * n
    if isinstance(negative_slopes, (int, float)):
        negative_slopes = [negative_slopes] * n
    return mlp_op(input, list(weights), list(biases), list(activations), [float(s) for s in negative_slopes])


def mlp_path(input, weights, biases=None, activations="identity", negative_slopes=0.01, training=True):
    """Which kernels ``fastnn.mlp(input, weights, biases, activations, ...)`` runs, and why:
    ``(path, reason)`` with path ``"tiled"`` (CPU, cache-blocked through all layers), ``"fused"``
    (CUDA, the whole chain in one kernel on tensor cores) or ``"layers"`` (layer by layer through
    linear_act's kernels). The first call for a shape class (widths, dtype, activations, batch
    rounded up to a power of two; on CUDA the GPU model) times both paths on this machine or GPU and
    keeps the faster (the reason gives the times); fastnn.set_cpu_path forces one on the CPU,
    FASTNN_MLP_FUSED (0, 1, 2) on CUDA. Under autocast, pass the input in the autocast dtype.
    ``training=False``: the path of a call with nothing recorded (no_grad, inference_mode), which the
    CPU measures separately, on the forward alone."""
    n = len(weights)
    biases = [None] * n if biases is None else list(biases)
    activations = [activations] * n if isinstance(activations, str) else list(activations)
    negative_slopes = ([float(negative_slopes)] * n if isinstance(negative_slopes, (int, float))
                       else [float(s) for s in negative_slopes])
    return tuple(_C.mlp_path(input, list(weights), biases, activations, negative_slopes, training))


def linear_act_path(input, weight, bias=None, activation="identity", negative_slope=0.01, training=True):
    """Which kernels ``fastnn.linear_act`` runs for this input and layer, and why: ``(path, reason)``
    with path ``"direct"`` (CPU, small in_features: the layer in one pass, no BLAS call), ``"fused"``
    (CUDA, fp16/bf16 layers with in and out features <= 128: the fused MLP kernels' one-layer case) or
    ``"gemm"`` (a BLAS/cuBLAS GEMM and fused bias/activation passes) or, for bfloat16 on the CPU,
    ``"gemm_f32"`` (the GEMMs in float32 on widened operands, rounded once). Measured per shape class like
    mlp_path (``training=False``: the path of a call with nothing recorded); FASTNN_LINEAR_ACT_FUSED
    (0, 1, 2) forces the CUDA path."""
    return tuple(_C.linear_act_path(input, weight, bias, activation, float(negative_slope), training))
