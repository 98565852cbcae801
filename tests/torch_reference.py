"""Native torch versions of each activation, the reference the fused ops are compared with."""
import torch
import torch.nn.functional as F


def torch_act(name, z, negative_slope=0.01):
    return {
        "identity": lambda t: t,
        "relu": F.relu,
        "leaky_relu": lambda t: F.leaky_relu(t, negative_slope),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "silu": F.silu,
        "softplus": F.softplus,
    }[name](z)


def torch_linear_act(x, w, b, name, negative_slope=0.01):
    return torch_act(name, F.linear(x, w, b), negative_slope)
