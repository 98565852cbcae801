import contextlib
import os
import tempfile

import pytest
import torch

# The CPU path choices this run measures go to a cache of its own, not the user's (csrc/common/path_choice.h).
os.environ.setdefault("FASTNN_CACHE_DIR", tempfile.mkdtemp(prefix="fastnn-test-cache-"))

import fastnn  # noqa: E402

ISAS = fastnn.cpu_isas_supported()
# For the bf16 tiled kernels also the AMX kernels over their tile emulation (amx_bf16_emulated),
# wherever avx512_bf16 runs, so their packing and padding are checked on CPUs without AMX.
BF16_ISAS = ISAS + (["amx_bf16_emulated"] if "avx512_bf16" in ISAS else [])


@contextlib.contextmanager
def isa_selected(isa):
    """fastnn's CPU kernel table set to isa inside the block, the previous one restored after."""
    before = fastnn.cpu_isa()
    fastnn.set_cpu_isa(isa)
    try:
        assert fastnn.cpu_isa() == isa
        yield isa
    finally:
        fastnn.set_cpu_isa(before)


@contextlib.contextmanager
def num_threads(n):
    """torch's (and so fastnn's OpenMP) thread count set to n inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _with_isa(isa):
    with isa_selected(isa):
        yield isa


@pytest.fixture(params=ISAS)
def cpu_isa(request):
    """Runs a test once per instruction set this CPU supports, restoring the default after."""
    yield from _with_isa(request.param)


@pytest.fixture(params=BF16_ISAS)
def bf16_isa(request):
    """cpu_isa plus the emulated AMX table."""
    yield from _with_isa(request.param)


@pytest.fixture(params=["tiled", "layers"])
def cpu_path(request):
    """Runs a test once per CPU path of fastnn.mlp, forced, restoring the measured choice after."""
    fastnn.set_cpu_path(request.param)
    yield request.param
    fastnn.set_cpu_path("auto")


@pytest.fixture
def cuda_kernels():
    """For CUDA test files (pytest.mark.usefixtures("cuda_kernels")): skip without a GPU, fail when a GPU
    is there but fastnn was built without its CUDA kernels."""
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    if not fastnn.built_with_cuda():
        pytest.fail("a GPU is present but fastnn was built without its CUDA kernels")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# Property tests (hypothesis): a fixed, derandomized profile so a CI failure reproduces; the
# example count is the ">= 1000 per op and run". HYPOTHESIS_PROFILE=dev for a quick local run.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=1000, derandomize=True, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("dev", max_examples=100, deadline=None)
    settings.register_profile("sanitize", max_examples=200, derandomize=True, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile(__import__("os").environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test dependency; test_properties.py skips without it
    pass
