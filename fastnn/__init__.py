"""fastnn: fused Linear+activation and fused multi-tensor optimizers for PyTorch.

    fastnn.linear_act(x, w, b, activation="gelu")     functional op (torch.ops.fastnn.linear_act)
    fastnn.mlp(x, weights, biases, activations)        a chain of such layers as one op (torch.ops.fastnn.mlp)
    fastnn.nn.MLP([784, 256, 10], activation="relu")   the chain as a module
    fastnn.nn.Linear(784, 256, activation="relu")      drop-in for nn.Linear (+ activation)
    fastnn.nn.fuse(model)                              Linear -> activation runs become one op
    fastnn.optim.Adam / AdamW / RMSprop / SGD / Adagrad drop-ins for torch.optim
"""
from . import _ops  # noqa: F401
from . import _C
from ._C import built_with_cuda, cpu_isa, cpu_isas_supported
from ._C import set_cpu_isa
from .functional import ACTIVATIONS, linear_act, linear_act_path, mlp, mlp_path
from . import functional, nn, optim  # noqa: E402


def set_cpu_path(path="auto"):
    """Force which CPU kernels run, for benchmarking and debugging: "tiled" or "layers" (fastnn.mlp),
    "direct", "gemm" or "gemm_f32" (fastnn.linear_act; gemm_f32: bfloat16 GEMMs computed in float32), several comma-separated, or "auto" (the default: the
    path measured fastest on this machine per shape class). Same as the FASTNN_CPU_PATH variable."""
    _C.set_cpu_path(path)


def get_cpu_path():
    """The forced CPU paths (set_cpu_path / FASTNN_CPU_PATH), or "auto"."""
    return _C.get_cpu_path()


def cpu_path_choices():
    """Every path chosen in this process so far, on the CPU and (fastnn.mlp's fused-or-layers) on CUDA
    devices: [(op and shape class, path, reason)]."""
    return [tuple(c) for c in _C.cpu_path_choices()]

__version__ = "0.1.0"
__all__ = ["linear_act", "mlp", "mlp_path", "linear_act_path", "set_cpu_path", "get_cpu_path", "cpu_path_choices", "ACTIVATIONS", "functional", "nn", "optim", "cpu_isa", "cpu_isas_supported",
           "set_cpu_isa", "built_with_cuda"]
