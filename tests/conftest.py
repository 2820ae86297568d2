"""Shared fixtures: the backends as a parameter, with GPU cases marked and
skipped (with the reason) where CuPy or a device is missing."""

import pytest

from nnx.backend import get_backend, gpu_available

_GPU_OK, _GPU_WHY = gpu_available()

try:  # the simulated device is part of the test extra
    import array_api_strict  # noqa: F401
    _STRICT_OK = True
except ImportError:  # pragma: no cover
    _STRICT_OK = False


def requires_gpu():
    return pytest.mark.skipif(not _GPU_OK, reason=f"no GPU: {_GPU_WHY}")


@pytest.fixture(params=[
    "cpu",
    pytest.param("strict",
                 marks=pytest.mark.skipif(not _STRICT_OK, reason="array-api-strict missing")),
    pytest.param("gpu", marks=[pytest.mark.gpu, requires_gpu()]),
])
def backend_name(request):
    """Every backend present: the CPU, the simulated device, the GPU."""
    return request.param


@pytest.fixture
def cpu64():
    return get_backend("cpu", "float64")
