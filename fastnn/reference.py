"""Reference runs of stock torch with one known rounding difference removed.

torch computes the square root of a contiguous CPU tensor with MKL's vector math, which is not
correctly rounded: about 1 element in 120 comes out 1 ulp off, and which ones depends on the CPU
(MKL picks another code path on AVX-512, AVX2 and older machines). fastnn's optimizers use IEEE
square roots. Inside ``ieee_sqrt()`` ``Tensor.sqrt``/``sqrt_`` of float32/float64 CPU tensors are
computed by numpy (SIMD sqrt instructions, correctly rounded), so a torch optimizer run there
differs from stock torch in exactly that one place. The tests use it to compare fastnn with torch
bit for bit, and ``fastnn.validate`` uses it for one of its noise-floor runs.
"""
import contextlib

import numpy as np
import torch

__all__ = ["ieee_sqrt"]

_EXACT = (torch.float32, torch.float64)


@contextlib.contextmanager
def ieee_sqrt():
    """``Tensor.sqrt``/``sqrt_`` correctly rounded for float32/float64 CPU tensors (others: torch's own;
    CUDA's sqrt is already correctly rounded)."""
    orig, orig_ = torch.Tensor.sqrt, torch.Tensor.sqrt_

    def sqrt(self):
        if self.device.type != "cpu" or self.dtype not in _EXACT or self.requires_grad and torch.is_grad_enabled():
            return orig(self)
        # asarray: numpy returns a scalar, not an array, for a 0-d input
        return torch.from_numpy(np.asarray(np.sqrt(self.detach().numpy()))).reshape(self.shape)

    def sqrt_(self):
        if self.device.type != "cpu" or self.dtype not in _EXACT:
            return orig_(self)
        self.copy_(sqrt(self))
        return self

    torch.Tensor.sqrt, torch.Tensor.sqrt_ = sqrt, sqrt_
    try:
        yield
    finally:
        torch.Tensor.sqrt, torch.Tensor.sqrt_ = orig, orig_
