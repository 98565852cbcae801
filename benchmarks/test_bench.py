"""pytest-benchmark view of fastnn.bench's cases (the same definitions as the CLI):

    pytest benchmarks --benchmark-only [--benchmark-autosave | --benchmark-compare]

A representative subset: the --quick cases on the CPU, every variant of each."""
import pytest
import torch

from fastnn.bench.cases import cases

CASES = cases(["linear_act", "mlp", "optim"], quick=True, device="cpu", dtype="float32")
VARIANTS = {"linear_act": ("eager", "fastnn"), "mlp": ("eager", "fastnn"),
            "optim": ("torch-foreach", "torch-fused", "fastnn")}
PAIRS = [(case, v) for case in CASES for v in VARIANTS[case.group]]


@pytest.mark.parametrize("case,variant", PAIRS, ids=[f"{c.key}-{v}" for c, v in PAIRS])
def test_case(benchmark, case, variant):
    torch.manual_seed(0)
    variants = case.build("cpu", [])
    if variant not in variants:
        pytest.skip(f"{case.key}: no {variant} variant")
    fn = variants[variant]
    fn()
    benchmark.group = case.key
    benchmark.extra_info.update(case.params)
    benchmark(fn)
