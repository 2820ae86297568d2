"""A pytest plugin that points ``backend="gpu"`` at the emulated GPU
(tests/emulated_cupy.py) for a whole session, so the ``gpu``-marked tests
and benchmarks can be dry-run on a machine without one:

    PYTHONPATH=tests python3 -m pytest -p emulated_gpu_plugin -m gpu tests/test_gpu.py

Recorded graphs are the step run again, which must pass the same host
numbers every time (``emulated_cupy.strict_replay``); ``erf`` is SciPy's. What needs CuPy
itself (``import cupy``, device counts, NCCL, CuPy's own arrays in
``backend_of``) fails there, saying so: read the failures, not the count.
It finds mistakes in the GPU tests' own code before a device session does.
"""

import emulated_cupy as ec
import scipy.special

import nnx.backend as backends
from nnx.backend import cuda_graphs
from nnx.backend import cupy_backend as cb


class _ReplayGraphs(cuda_graphs.Graphs):
    def capture(self, step):
        return ec.strict_replay(step)


def pytest_configure(config):
    fake = ec.FakeCupy(ec.kh.HostKernels())
    cb._import_cupy = lambda: fake
    cuda_graphs.CublasHandle = ec.ReferenceBlas
    cb.Graphs = _ReplayGraphs
    cb.CupyBackend.erf = lambda self, x: ec._dev(scipy.special.erf(x))
    backends._cache.clear()
