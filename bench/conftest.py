"""Shared set-up of the benchmark suite: networks, batches, backends, the
PyTorch peer's model, the machine's measured matrix-multiply ceiling, and the
parity checks run before timing, against the tests' independent plain-NumPy
float64 reference (tests/reference.py, which imports nothing from nnx)."""

from __future__ import annotations

import importlib.util
import os
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
if os.environ.get("NNX_EMULATED_GPU"):  # a dry run (tests/emulated_gpu_plugin.py): the
    NETWORKS["large-784-4096-4096-10"] = ([784, 256, 256, 10], "tanh", 64)  # code, not
    BATCHES_PER_ROUND["large-784-4096-4096-10"] = 2  # the figures, at a size a CPU runs
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


def pytest_collection_modifyitems(items):
    """pytest-benchmark before 5.3.1 reads ``item._nodeid``, which pytest 9.2
    no longer has: the GPU machine's own packages may be such a pair."""
    for item in items:
        if not hasattr(item, "_nodeid"):
            try:
                item._nodeid = item.nodeid
            except AttributeError:  # a read-only node: nothing to do here
                pass


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
        # (a dry run's emulated GPU is the CPU: 8192^3 there took the stage's whole time)
        n = 1024 if backend == "cpu" or os.environ.get("NNX_EMULATED_GPU") else 8192
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


# ------------------------------------------------------------- the PyTorch peer
def torch_model(torch, name, dtype, device="cpu"):
    """``torch.nn.Sequential`` of Linear and Tanh layers holding the weights
    that ``build_net(name, ..., seed=0)`` draws, in ``dtype`` on ``device``.
    A torch ``Linear`` keeps ``weight`` as (out, in), the transpose of nnx's
    ``W``, and a 1-D ``bias``."""
    sizes, act, _ = NETWORKS[name]
    if act != "tanh":
        raise ValueError(f"the PyTorch peer builds tanh networks, not {act!r}")
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*mods).to(device=device, dtype=getattr(torch, dtype))
    params = list(build_net(name, "cpu", "float64").params())
    with torch.no_grad():
        for lin, W, B in zip(torch_linears(torch, model), params[0::2], params[1::2]):
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(B[0].copy()))
    return model


def torch_epoch(torch, model, opt, lossf, Xt, yt, batch, sync=False):
    """A function that runs PyTorch's eager training loop once over the rows
    of ``Xt`` in batches of ``batch`` (waiting for the GPU with ``sync``)."""
    batches = [(Xt[i:i + batch], yt[i:i + batch]) for i in range(0, Xt.shape[0], batch)]

    def run():
        for xb, yb in batches:
            opt.zero_grad(set_to_none=False)
            lossf(model(xb), yb).backward()
            opt.step()
        if sync:
            torch.cuda.synchronize()
    return run


def torch_captured_step(torch, model, opt, lossf, first):
    """The whole training step recorded as a CUDA graph, as PyTorch's docs
    show it: a few warm-up steps on a side stream, then capture with static
    inputs. The gradients are set to None just before the capture, so the
    recorded backward writes them afresh (from the graph's pool) at every
    replay; left allocated, it recorded ``grad += new``, and every replay
    added all the earlier replays' gradients."""
    static_x, static_y = first[0].clone(), first[1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            lossf(model(static_x), static_y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        lossf(model(static_x), static_y).backward()
        opt.step()
    return graph, static_x, static_y


def torch_replays(torch, step, static_x, static_y, batches):
    """A function that replays the captured ``step`` once per batch (copied
    into its static inputs), then waits for the GPU."""
    def run():
        for xb, yb in batches:
            static_x.copy_(xb)
            static_y.copy_(yb)
            step.replay()
        torch.cuda.synchronize()
    return run


def torch_linears(torch, model):
    return [m for m in model if isinstance(m, torch.nn.Linear)]


def torch_params64(torch, model):
    """The model's parameters as float64 host arrays in nnx's layout and
    order: W (in, out), B (1, out), layer after layer."""
    out = []
    for lin in torch_linears(torch, model):
        # copies: in float64 .numpy() shares memory with the live parameter
        out += [np.array(lin.weight.detach().cpu().double().numpy().T),
                np.array(lin.bias.detach().cpu().double().numpy().reshape(1, -1))]
    return out


def check_torch_parity(torch, model, lossf, X, y, Xt, yt, acts, rtol):
    """PyTorch's loss and parameter gradients on one batch (after ``backward``,
    before any optimiser step) against the independent float64 reference built
    from the model's own weights; its gradients are zeroed afterwards so that
    the timed run starts as before."""
    lins = torch_linears(torch, model)
    p = torch_params64(torch, model)
    ref = reference.RefMLP(p[0::2], p[1::2], acts, loss="ce")
    ref_loss, _, ref_grads = ref.loss_and_grads(X, reference.one_hot(y, lins[-1].out_features))
    model.zero_grad(set_to_none=True)
    loss = lossf(model(Xt), yt)
    loss.backward()
    got = float(loss.detach())
    assert abs(got - ref_loss) <= rtol * abs(ref_loss), f"torch loss {got!r} != {ref_loss!r}"
    for i, lin in enumerate(lins):
        assert_close(lin.weight.grad.detach().cpu().double().numpy().T, ref_grads[2 * i], rtol,
                     f"torch weight gradient {i}")
        assert_close(lin.bias.grad.detach().cpu().double().numpy().reshape(1, -1),
                     ref_grads[2 * i + 1], rtol, f"torch bias gradient {i}")
    model.zero_grad(set_to_none=False)


# ----------------------------------------------------------------------- Adam
ADAM = {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}


def assert_adam_close(got, expected, start, grads_by_step, rtol, lr, what):
    """Parameters after ``len(grads_by_step)`` Adam steps against the
    reference's (``reference.ref_adam``, float64, from the formulas).

    Where ``|g|`` is far above ``eps``, an Adam step moves a weight by about
    ``lr * g / |g|``: its error is the gradient's error over ``|g|``, not over
    the array's largest gradient as in SGD. Float32 gradients sit about 1e-6
    of the largest from the reference, so entries whose gradient is within
    ``10 * rtol`` of the largest (in any step) may move quite differently, or
    the other way: those (about 1% in float32, none in float64) are only held
    to Adam's bound of ``lr`` per step. Every other entry must match within
    ``rtol``, and its change from ``start`` within ``rtol * 10``, as in the
    momentum checks."""
    steps = len(grads_by_step)
    for i, (p, r, r0) in enumerate(zip(got, expected, start, strict=True)):
        steady = np.ones(p.shape, dtype=bool)
        for grads in grads_by_step:
            g = np.abs(grads[i])
            steady &= g > 10 * rtol * g.max()
        assert steady.mean() > 0.95, f"{what} parameter {i}: too few clear gradient signs"
        assert_close(p[steady], r[steady], rtol, f"{what} parameter {i} after {steps} Adam steps")
        assert_close((p - r0)[steady], (r - r0)[steady], rtol * 10,
                     f"change of {what} parameter {i} over {steps} Adam steps")
        moved = float(np.max(np.abs(p - r0)))
        assert moved <= steps * lr * 1.01, \
            f"{what} parameter {i} moved {moved:.3e}, over {steps} steps of lr={lr}"


def nnx_adam_steps(net, X, y, steps=2):
    """``steps`` rounds of ``train_batch(X, y)`` and ``nnx.Adam(**ADAM).step()``
    on ``net``, which is put back as it was afterwards. Returns the
    parameters after the steps (float64, host) and each step's reference
    gradient (for ``assert_adam_close``), with the reference's parameters
    after the same steps from the same start, and that start."""
    b = net.backend
    start = net.get_parameters()
    ref = reference_mlp(net)
    p0 = [p.copy() for p in ref.params()]
    Y = reference.one_hot(y, net.n_out)
    state = {}
    optim = nnx.Adam(**ADAM)
    optim.attach(net)
    grads_by_step = []
    try:
        for t in range(1, steps + 1):
            net.train_batch(X, y)
            _, _, grads = ref.loss_and_grads(X, Y)
            grads_by_step.append(grads)
            optim.step()
            reference.ref_adam(ref.params(), grads, state, t=t, **ADAM)
        got = [to_host64(b, p) for p in net.params()]
    finally:
        net.set_parameters(start)
    return got, ref.params(), p0, grads_by_step
