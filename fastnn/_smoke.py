"""Build smoke check: ``python -m fastnn._smoke [cpu|cuda ...]``.

Raises three C++ errors whose messages format integers (a shape mismatch, a 3-D weight, a sparse
optimizer gradient) and checks each arrives as a Python RuntimeError naming the op. A build linked
with a compiler whose libstdc++ pieces end up inside ``_C.so`` crashes (SIGSEGV in
``std::ostream::_M_insert<long>``) right here instead; run it in a subprocess to see that as a
failure rather than a dead interpreter. Exit 0 when every check passes, 1 otherwise.
"""
import sys

import torch

import fastnn


def _checks(device):
    def mismatch():
        fastnn.linear_act(torch.randn(3, 4, device=device), torch.randn(2, 5, device=device), None, "relu")

    def weight_3d():
        fastnn.linear_act(torch.randn(3, 4, device=device), torch.randn(2, 5, 4, device=device), None, "relu")

    def sparse_grad():
        p = torch.nn.Parameter(torch.randn(3, device=device))
        opt = fastnn.optim.Adam([p], lr=0.1)
        p.grad = torch.ones(3, device=device).to_sparse()
        opt.step()

    return [("linear_act in_features mismatch", mismatch, "fastnn.linear_act", "in_features=5"),
            ("linear_act 3-D weight", weight_3d, "fastnn.linear_act", "[2, 5, 4]"),
            ("Adam sparse gradient", sparse_grad, "fastnn.optim.Adam", "parameter 0")]


def main(devices):
    failed = 0
    for device in devices:
        for what, fn, op, detail in _checks(device):
            try:
                fn()
            except RuntimeError as e:
                msg = str(e)
                ok = op in msg and detail in msg
                print(f"{'ok  ' if ok else 'FAIL'} {device}: {what}: {msg.splitlines()[0]}")
                failed += not ok
            else:
                print(f"FAIL {device}: {what}: no exception")
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["cpu"]))
