"""The CPU's fused loops (nnx.backend.fused, compiled by Numba where it is
installed): each gives bit for bit what the NumPy backend's passes give, for
every option of the update; arrays the loops do not take go to the passes;
without Numba (or with NNX_NUMBA=0) the passes run and say so."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from nnx.backend import fused, get_backend, numpy_backend

needs_numba = pytest.mark.skipif(fused.kernels() is None,
                                 reason=f"the fused loops are off here: {fused.status()}")


def _spy(loop, name, ran):
    def call(*args):
        ran.append(name)
        return loop(*args)
    return call


def _run(monkeypatch, with_loops, update, arrays):
    """``update(backend, *copies)`` with the fused loops on or off; the copies
    after it, and the names of the loops that ran."""
    ran = []
    loops = fused.kernels()
    monkeypatch.setattr(numpy_backend, "_FUSED_MIN", 0)  # small arrays too, here
    if with_loops:
        spied = {name: _spy(f, name, ran) for name, f in loops.items()}
        monkeypatch.setitem(fused._STATE, "kernels", spied)
    else:
        monkeypatch.setitem(fused._STATE, "kernels", None)
    copies = [a.copy() for a in arrays]
    try:
        result = update(get_backend("cpu", arrays[0].dtype), *copies)
    finally:
        monkeypatch.setitem(fused._STATE, "kernels", loops)
    return copies, result, ran


def _data(dtype, n, count, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(n).astype(dtype) for _ in range(count)]
    arrays[1][::7] = 0.0  # gradients that are exactly zero, as blank pixels give
    return arrays


def _assert_same(monkeypatch, update, arrays, loop):
    mine, got, ran = _run(monkeypatch, True, update, arrays)
    passes, want, _ = _run(monkeypatch, False, update, arrays)
    assert loop in ran, f"the fused {loop} loop did not run"
    for a, b in zip(mine, passes):
        np.testing.assert_array_equal(a, b)
    if want is not None:
        np.testing.assert_array_equal(got, want)


SCALES = [None, 0.37]
DECAYS = [0.0, 0.01]


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("weight_decay", DECAYS)
def test_sgd_loop_is_the_numpy_passes(monkeypatch, dtype, scale, weight_decay):
    def update(b, p, g):
        for lr in (0.1, 0.03):
            b.sgd_step(p, g, b.asarray(lr), weight_decay, scale)
    _assert_same(monkeypatch, update, _data(dtype, 1001, 2), "sgd")


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("weight_decay", DECAYS)
def test_momentum_loop_is_the_numpy_passes(monkeypatch, dtype, nesterov, scale, weight_decay):
    def update(b, p, g, v):
        for lr in (0.1, 0.03, 0.01):
            b.momentum_step(p, g, v, b.asarray(lr), 0.9, nesterov, weight_decay, scale)
    _assert_same(monkeypatch, update, _data(dtype, 1001, 3), "momentum")


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (0.01, False), (0.01, True)])
@pytest.mark.parametrize("eps_bias_corrected", [False, True])
def test_adam_loop_is_the_numpy_passes(monkeypatch, dtype, scale, weight_decay, decoupled,
                                       eps_bias_corrected):
    def update(b, p, g, m, v):
        for t in (1, 2, 3):
            b.adam_step(p, g, m, v, b.asarray(0.001), np.int64(t), 0.9, 0.999, 1e-8,
                        weight_decay, decoupled, scale, eps_bias_corrected)
    p, g, m, v = _data(dtype, 1001, 4)
    v = np.abs(v)  # a second moment is never negative
    _assert_same(monkeypatch, update, [p, g, m, v], "adam")


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu"])
def test_activation_gradient_loops_are_the_numpy_passes(monkeypatch, dtype, name):
    rng = np.random.default_rng(1)
    g = rng.standard_normal((33, 65)).astype(dtype)
    x = rng.standard_normal((33, 65)).astype(dtype)
    x[0, :3] = [0.0, -0.0, np.nan]
    g[1, :4] = [np.inf, -np.inf, np.nan, -0.0]
    y = {"tanh": np.tanh(x), "sigmoid": 1 / (1 + np.exp(-x)), "relu": np.maximum(x, 0)}[name]

    def update(b, g, y):
        with np.errstate(invalid="ignore"):  # inf times 0 in relu's product
            return b.bias_activation_grad(name, None, (None, y), g)
    mine, got, ran = _run(monkeypatch, True, update, [g, y])
    _, want, _ = _run(monkeypatch, False, update, [g, y])
    assert ran == [f"{name}_grad"]
    # bit for bit, NaNs and the sign of zeros included
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{got.itemsize}"))


@needs_numba
def test_arrays_the_loops_do_not_take_go_to_the_numpy_passes(monkeypatch):
    """A strided view, a rate in another dtype than the parameters', a
    gradient of another length: the NumPy passes run (and refuse the last
    with NumPy's error, not a loop reading past the gradient's end)."""
    p, g, v = _data("float32", 20, 3)

    def strided(b, p, g, v):
        b.momentum_step(p[::2], g[::2], v[::2], 0.1, 0.9)
    mine, _, ran = _run(monkeypatch, True, strided, [p, g, v])
    passes, _, _ = _run(monkeypatch, False, strided, [p, g, v])
    assert ran == []
    np.testing.assert_array_equal(mine[0], passes[0])

    def other_dtype(b, p, g):
        b.sgd_step(p, g, np.asarray(0.1, np.float64))
    assert _run(monkeypatch, True, other_dtype, [p, g])[2] == []

    def short(b, p, g):
        b.sgd_step(p, g[:-1], 0.1)
    with pytest.raises(ValueError, match="broadcast"):
        _run(monkeypatch, True, short, [p, g])


@needs_numba
def test_state_below_the_normal_range_is_flushed_by_the_loops_too(monkeypatch):
    """The loops run in the calling thread inside the update's flush-to-zero
    block (nnx.backend.subnormals): a decaying moment becomes 0, not subnormal."""
    from nnx.backend import subnormals
    if not subnormals.SUPPORTED:
        pytest.skip("flush-to-zero is set on x86-64 Linux (glibc) only")
    tiny = np.finfo(np.float32).tiny
    p, g = np.ones(100, np.float32), np.zeros(100, np.float32)
    m, v = np.full(100, 1.05 * tiny, np.float32), np.ones(100, np.float32)

    def update(b, p, g, m, v):
        b.adam_step(p, g, m, v, 0.001, 5, 0.9, 0.999, 1e-8, 0.0)
    (p, g, m, v), _, ran = _run(monkeypatch, True, update, [p, g, m, v])
    assert ran == ["adam"] and not m.any()


def _train_and_print(show, width, env=None, prelude="", rows=40):
    """Train a network of ``width`` hidden units (200 features: 200 * width
    weights) on ``rows`` rows, batches of half, in a new process; what the
    expression ``show`` is after it."""
    code = (prelude + "import sys\nimport numpy as np, nnx\n"
            "from nnx.backend import fused\n"
            f"net = nnx.NeuralNetwork([nnx.Dense({width}, 'relu'), nnx.Dense(2, 'linear')],\n"
            "                        nnx.SoftmaxCrossEntropy(), seed=0)\n"
            f"X = np.random.default_rng(0).standard_normal(({rows}, 200))\n"
            "nnx.Trainer(net, nnx.Adam(0.01)).fit(X, (X[:, 0] > 0).astype(int), epochs=2,"
            f" batch_size={rows // 2}, verbose=False)\n"
            "assert np.isfinite(net.param_buffer).all()\n"
            f"print({show})\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **(env or {})},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_a_small_network_trains_without_loading_numba():
    """Below ``_FUSED_MIN`` elements NumPy's passes are as fast: a small run
    does not wait for Numba to load, not for its batches' activation
    gradients either (here 400 x 150 elements, above the limit; 30k weights,
    below it)."""
    assert _train_and_print("'numba' in sys.modules", width=150, rows=800) == "False"


@needs_numba
def test_a_larger_network_trains_with_the_loops():
    assert _train_and_print("fused.status()", width=300).startswith("fused loops (Numba ")


def test_nnx_numba_0_turns_the_loops_off():
    line = _train_and_print("fused.status(), 'numba' in sys.modules", width=300,
                            env={"NNX_NUMBA": "0"})
    assert line == "NumPy passes (NNX_NUMBA=0) False"


def test_without_numba_the_numpy_passes_train_and_say_why():
    line = _train_and_print("fused.status()", width=300,
                            prelude="import sys; sys.modules['numba'] = None\n")
    assert line.startswith("NumPy passes (Numba not available: ModuleNotFoundError")


@needs_numba
def test_a_loop_numba_cannot_compile_leaves_the_numpy_passes_with_a_warning(monkeypatch):
    def broken(*args):
        raise RuntimeError("LLVM ERROR: no target here")
    loops = dict(fused.kernels(), momentum=broken)
    monkeypatch.setattr(numpy_backend, "_FUSED_MIN", 0)
    monkeypatch.setitem(fused._STATE, "kernels", loops)
    monkeypatch.setitem(fused._STATE, "why", "")
    b = get_backend("cpu", "float64")
    p, g, v = _data("float64", 50, 3)
    want = [a.copy() for a in (p, v)]
    with pytest.warns(RuntimeWarning, match="fused loops are off.*momentum: RuntimeError: "
                                            "LLVM ERROR: no target here"):
        b.momentum_step(p, g, v, 0.1, 0.9)
    assert fused.status() == "NumPy passes (momentum: RuntimeError: LLVM ERROR: no target here)"
    ref_p, ref_v = want  # the update still happened, once, by the NumPy passes
    ref_v *= 0.9
    ref_v += 0.1 * g
    ref_p -= ref_v
    np.testing.assert_array_equal(p, ref_p)
    np.testing.assert_array_equal(v, ref_v)
