"""Shared fixtures: the backends as a parameter, with GPU cases marked and
skipped (with the reason) where CuPy or a device is missing; a small network
already trained, for the checks of what a trained network refuses."""

import pytest
from helpers import good_data, make_net

from nnx import SGD, Trainer
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


@pytest.fixture(params=["fused", "numpy passes"])
def cpu_updates(request, monkeypatch):
    """The CPU's optimiser updates both ways: the fused loops (where Numba is
    installed) and the NumPy passes they replace (nnx.backend.fused)."""
    from nnx.backend import fused, numpy_backend
    monkeypatch.setattr(numpy_backend, "_FUSED_MIN", 0)  # small arrays too, here
    if request.param == "fused":
        if fused.kernels() is None:
            pytest.skip(f"the fused loops are off here: {fused.status()}")
    else:
        fused.kernels()
        monkeypatch.setitem(fused._STATE, "kernels", None)
    return request.param


@pytest.fixture
def cpu64():
    return get_backend("cpu", "float64")


@pytest.fixture
def trained():
    """A small CPU network fitted once: (net, trainer, X, y)."""
    net = make_net()
    X, y = good_data()
    trainer = Trainer(net, SGD(0.1))
    trainer.fit(X, y, epochs=2, eval_every=1)
    return net, trainer, X, y
