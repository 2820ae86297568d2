"""Shared set-up of the benchmark suite: networks, batches, backends, the
PyTorch peer, the machine's measured matrix-multiply ceiling, and the parity
checks run before timing, against the tests' independent plain-NumPy float64
reference (tests/reference.py, which imports nothing from nnx)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

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
# parity tolerance per dtype, relative to the largest entry of the reference array
RTOL = {"float32": 2e-4, "float64": 1e-10}

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


def _load_reference():
    """tests/reference.py, loaded by file path (tests/ is not a package)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "reference.py"
    spec = importlib.util.spec_from_file_location("_nnx_bench_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_reference()


def to_host64(backend, x):
    """A backend array as a float64 NumPy array on the host (a copy: never a
    view into the network's buffers, which the next step overwrites)."""
    return np.array(backend.to_numpy(x), dtype=np.float64)


def assert_close(actual, expected, rtol, what):
    """``max|actual - expected| <= rtol * max|expected|`` (the reference's scale)."""
    reference.assert_rel_close(actual, expected, rtol, what)


def reference_mlp(net):
    """A ``RefMLP`` holding ``net``'s current weights in float64 on the host. The
    bench networks: hidden layers and a linear output with softmax cross-entropy,
    no dropout (the reference would need the masks)."""
    if not isinstance(net.loss, nnx.SoftmaxCrossEntropy):
        raise TypeError(f"the parity check knows softmax cross-entropy, not {net.loss!r}")
    if any(getattr(layer, "dropout", 1.0) < 1.0 for layer in net.layers):
        raise ValueError("the parity check needs a network without dropout")
    params = [to_host64(net.backend, p) for p in net.params()]
    acts = [type(layer.activation).name for layer in net.layers]
    return reference.RefMLP(params[0::2], params[1::2], acts, loss="ce")


def check_parity(net, X, y, rtol, lr=0.01, momentum=0.9):
    """Before timing: on one batch ``(X, y)`` (host data, class ids), ``net``
    agrees with the independent float64 reference built from its current weights:

    - the loss and every parameter gradient within ``rtol`` (relative to the
      largest entry of the reference gradient; float32 gradients land within
      about 1e-6 of it, so 2e-4 still catches a 0.1% error);
    - two ``SGDMomentum(lr, momentum)`` steps, each from the gradient at the
      current weights, against two ``RefMLP.momentum_step`` calls from zero
      velocity: every parameter within ``rtol``, and its change over the two
      steps (which, at a small ``lr``, rounding of the parameters themselves
      would hide) within ``rtol * 10``, as a small difference of rounded
      numbers is relatively less exact.

    The network's parameters are put back afterwards, so timing starts from
    the same weights as without the check."""
    b = net.backend
    start = net.get_parameters()
    ref = reference_mlp(net)
    p0 = [p.copy() for p in ref.params()]
    Y = reference.one_hot(y, net.n_out)
    try:
        loss = b.to_float(net.train_batch(X, y))
        ref_loss, _, ref_grads = ref.loss_and_grads(X, Y)
        assert abs(loss - ref_loss) <= rtol * abs(ref_loss), \
            f"loss {loss!r} != reference {ref_loss!r}"
        grads = [to_host64(b, g) for g in net.param_grads()]
        assert len(grads) == len(ref_grads), (len(grads), len(ref_grads))
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            assert_close(g, r, rtol, f"gradient {i}")

        optim = nnx.SGDMomentum(lr, momentum=momentum)
        optim.attach(net)
        velocity = [np.zeros_like(p) for p in p0]
        for step in range(2):
            if step:  # the gradients at the weights after the first step
                net.train_batch(X, y)
                _, _, ref_grads = ref.loss_and_grads(X, Y)
            optim.step()
            ref.momentum_step(ref_grads, velocity, lr, momentum)
        for i, (p, r, r0) in enumerate(zip(net.params(), ref.params(), p0)):
            p = to_host64(b, p)
            assert_close(p, r, rtol, f"parameter {i} after 2 momentum steps")
            assert_close(p - r0, r - r0, rtol * 10,
                         f"change of parameter {i} over 2 momentum steps")
    finally:
        net.set_parameters(start)
