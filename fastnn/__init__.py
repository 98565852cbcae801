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
from .functional import ACTIVATIONS, linear_act, mlp, mlp_path
from . import functional, nn, optim  # noqa: E402


def set_cpu_isa(isa):
    """Switch the CPU kernels to another supported instruction set ("avx512", "avx2", "base")."""
    _C.set_cpu_isa(isa)
    nn._refresh_cpu_limits()  # which chains fuse() runs tiled depends on the kernels

__version__ = "0.1.0"
__all__ = ["linear_act", "mlp", "mlp_path", "ACTIVATIONS", "functional", "nn", "optim", "cpu_isa", "cpu_isas_supported",
           "set_cpu_isa", "built_with_cuda"]
