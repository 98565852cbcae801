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


KINKED = ("relu", "leaky_relu")


def clear_of_kinks(draw, pre_activations, acts, margin=1e-3, tries=200):
    """draw() -> fresh random inputs; pre_activations(inputs) -> each layer's z. A finite difference
    (gradcheck's eps = 1e-6) across relu's or leaky_relu's kink at 0 is not the derivative on either
    side, so draws are repeated until every z of a kinked layer is at least margin from 0."""
    for _ in range(tries):
        inputs = draw()
        with torch.no_grad():
            zs = pre_activations(inputs)
        if all(a not in KINKED or z.numel() == 0 or z.abs().min() >= margin for z, a in zip(zs, acts)):
            return inputs
    raise AssertionError(f"no draw in {tries} keeps every pre-activation {margin} from a kink")
