"""Points ``backend="gpu"`` at the emulated GPU (tests/emulated_cupy.py) for
a whole process, so the GPU tests, benchmarks and scripts can be dry-run on
a machine without one. As a pytest plugin:

    PYTHONPATH=tests python3 -m pytest -p emulated_gpu_plugin -m gpu tests bench

and for every Python process of a script (tests/emulated_site holds a
``sitecustomize`` that imports this module), the whole device check:

    PYTHONPATH=tests/emulated_site:tests bash bench/gpu_check.sh /tmp/dry-run

Importing this module sets everything up (``-p`` imports it before any
conftest, so the conftest's ``gpu_available()`` finds the emulated device).
Recorded graphs are the step run again, which must pass the same host
numbers every time (``emulated_cupy.strict_replay``); ``erf`` is SciPy's;
``import cupy`` gives the emulated module and ``cupyx.profiler.benchmark``
times on the host. What needs more of CuPy (device counts, NCCL) fails,
saying so: read the failures, not the count, and none of the timings. It
finds mistakes in the GPU tests' and scripts' own code before a device
session spends its minutes on them.
"""

import os
import sys
import time
import types

import emulated_cupy as ec
import numpy as np
import scipy.special

import nnx.backend as backends
from nnx.backend import cuda_graphs
from nnx.backend import cupy_backend as cb


class _ReplayGraphs(cuda_graphs.Graphs):
    def capture(self, step):
        return ec.strict_replay(step, self)


def _benchmark(fn, args=(), n_repeat=10, n_warmup=1, **_):
    """cupyx.profiler.benchmark's call and result, timed on the host."""
    for _ in range(n_warmup):
        fn(*args)
    times = []
    for _ in range(n_repeat):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return types.SimpleNamespace(gpu_times=np.array([times]), cpu_times=np.array(times))


def _emulate():
    fake = ec.FakeCupy(ec.kh.HostKernels())
    cb._import_cupy = lambda: fake
    cuda_graphs.CublasHandle = ec.ReferenceBlas
    cb.Graphs = _ReplayGraphs
    cb.CupyBackend.erf = lambda self, x: ec._dev(scipy.special.erf(x))
    backends._cache.clear()
    # backend_of() knows CuPy's arrays by their module: the emulated ones pass
    # for CuPy's here (tests/test_emulated_gpu.py, in CI, leaves them alone)
    ec.DeviceArray.__module__ = "cupy._core.core"
    # for the tests and scripts that import cupy or cupyx themselves
    profiler = types.ModuleType("cupyx.profiler")
    profiler.benchmark = _benchmark
    cupyx = types.ModuleType("cupyx")
    cupyx.profiler = profiler
    # the benchmarks and scripts run their GPU-sized cases at a CPU's size
    # (they read it, and so does every process a script starts)
    os.environ["NNX_EMULATED_GPU"] = "1"
    for name, module in (("cupy", fake), ("cupyx", cupyx), ("cupyx.profiler", profiler)):
        sys.modules.setdefault(name, module)


_emulate()
