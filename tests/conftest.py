import pytest
import torch

import fastnn

ISAS = fastnn.cpu_isas_supported()


@pytest.fixture(params=ISAS)
def cpu_isa(request):
    """Runs a test once per instruction set this CPU supports, restoring the default after."""
    before = fastnn.cpu_isa()
    fastnn.set_cpu_isa(request.param)
    yield request.param
    fastnn.set_cpu_isa(before)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
