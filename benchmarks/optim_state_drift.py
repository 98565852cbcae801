"""Compact optimizer state that must drift slowly: the numbers in benchmarks/RESULTS.md ("Rounding of
compact state: second moments that cannot shrink").

    python benchmarks/optim_state_drift.py

Adam, lr 1e-3, 4096 float32 parameters in 16 blocks of 256: every gradient is 1 at the first step;
afterwards one element a block keeps gradient 1 (its block's largest second moment, which grows),
the others get 0.01 (their second moments should shrink by ~0.1% a step, beta2 = 0.999). Printed:
the mean second moment of the small-gradient elements after 2000 steps, and how far they moved,
for float32 state and each compact option, against float32's.
"""
import torch

from fastnn.validate import second_moment_drift

VARIANTS = {
    "float32 state": {},
    "int8, nearest (default)": dict(state_dtype="int8", min_8bit_size=0),
    "int8, stochastic_rounding=True": dict(state_dtype="int8", min_8bit_size=0, stochastic_rounding=True, sr_seed=0),
    "bf16, stochastic (default)": dict(state_dtype=torch.bfloat16),
    "bf16, stochastic_rounding=False": dict(state_dtype=torch.bfloat16, stochastic_rounding=False),
}


def main():
    ref_v, ref_moved = second_moment_drift({})
    for name, kw in VARIANTS.items():
        v, moved = second_moment_drift(kw)
        print(f"{name:34s} second moment {v:.3e} ({v / ref_v:.2f}x float32), moved {moved:.4f} "
              f"({moved / ref_moved:.2f}x)")


if __name__ == "__main__":
    main()
