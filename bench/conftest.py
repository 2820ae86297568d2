"""Shared set-up of the benchmark suite: networks, batches, backends, the
PyTorch peer, and the machine's measured matrix-multiply ceiling."""

from __future__ import annotations

import time

import numpy as np
import pytest

import nnx

# name -> (layer sizes, hidden activation, batch size)
NETWORKS = {
    "study-784-89-10": ([784, 89, 10], "tanh", 60),
    "wide-784-1024-1024-10": ([784, 1024, 1024, 10], "tanh", 256),
    "large-784-4096-4096-10": ([784, 4096, 4096, 10], "tanh", 1024),
}
BATCHES_PER_ROUND = {"study-784-89-10": 100, "wide-784-1024-1024-10": 8,
                     "large-784-4096-4096-10": 10}
GPU_ONLY = {"large-784-4096-4096-10"}  # ~120 GFLOP a step: minutes per round on a CPU
DTYPES = ["float32", "float64"]

_GPU_OK, _GPU_WHY = nnx.gpu_available()
BACKENDS = [
    "cpu",
    pytest.param("gpu", marks=[pytest.mark.gpu,
                               pytest.mark.skipif(not _GPU_OK, reason=f"no GPU: {_GPU_WHY}")]),
]


def build_net(name, backend, dtype, seed=0):
    sizes, act, _ = NETWORKS[name]
    layers = [nnx.Dense(n, act) for n in sizes[1:-1]] + [nnx.Dense(sizes[-1], "linear")]
    net = nnx.NeuralNetwork(layers, nnx.SoftmaxCrossEntropy(), seed=seed, backend=backend,
                            dtype=dtype)
    net.build(sizes[0])
    return net


def make_data(name, n_batches, seed=0):
    sizes, _, batch = NETWORKS[name]
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch * n_batches, sizes[0]))
    y = rng.integers(0, sizes[-1], batch * n_batches)
    return X, y


def flops_per_sample(name):
    """The matmul work one training sample needs: 2 FLOPs per weight for the
    forward pass and for the weight gradient, and for the input gradient of
    every layer but the first (nobody needs the gradient of the data)."""
    sizes = NETWORKS[name][0]
    per_layer = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 6 * sum(per_layer) - 2 * per_layer[0]


@pytest.fixture(autouse=True)
def _quiet_threads(request):
    """Let the other library's idle worker threads stop spinning before the
    clock starts: OpenBLAS and PyTorch's OpenMP threads busy-wait for up to
    ~0.2 s after their last call and would steal these two cores."""
    if not request.config.getoption("benchmark_disable", False):
        time.sleep(0.4)


_CEILING: dict = {}


def matmul_ceiling(dtype, backend="cpu"):
    """The machine's measured matrix-multiply rate (FLOP/s, median of 7) for
    ``dtype`` on ``backend``: a 1024^3 (CPU) or 8192^3 (GPU) product."""
    key = (dtype, backend)
    if key not in _CEILING:
        b = nnx.get_backend(backend, dtype)
        n = 1024 if backend == "cpu" else 8192
        A = b.asarray(np.random.default_rng(0).standard_normal((n, n)))
        B = b.asarray(np.random.default_rng(1).standard_normal((n, n)))
        C = b.empty((n, n))
        b.matmul(A, B, out=C)
        b.synchronize()
        times = []
        for _ in range(7):
            t = time.perf_counter()
            b.matmul(A, B, out=C)
            b.synchronize()
            times.append(time.perf_counter() - t)
        _CEILING[key] = 2 * n ** 3 / float(np.median(times))
    return _CEILING[key]


def check_parity(net, X, y, rtol):
    """Loss and gradients of ``net`` on one batch agree with a float64 CPU
    network holding the same weights."""
    ref = nnx.NeuralNetwork([nnx.Dense(la.neurons, type(la.activation)()) for la in net.layers],
                            nnx.SoftmaxCrossEntropy(), seed=0, backend="cpu", dtype="float64")
    ref.build(net.n_in)
    ref.set_parameters(net.backend.to_numpy(net.get_parameters()).astype(np.float64))
    b = net.backend
    loss = b.to_float(net.train_batch(X, y))
    ref_loss = float(ref.train_batch(X, y))
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss), (loss, ref_loss)
    for g, r in zip(net.param_grads(), ref.param_grads()):
        g = b.to_numpy(g).astype(np.float64)
        err = np.abs(g - r).max() / max(np.abs(r).max(), 1e-30)
        assert err <= rtol * 10, f"gradient mismatch {err:.2e}"
