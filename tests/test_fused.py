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
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("scale,weight_decay", [(None, 0.0), (0.37, 0.01)])
def test_rmsprop_loop_is_the_numpy_passes(monkeypatch, dtype, momentum, centred, scale,
                                          weight_decay):
    def update(b, p, g, sq, buf, avg):
        for lr in (0.01, 0.003):
            b.rmsprop_step(p, g, sq, b.asarray(lr), 0.99, 1e-8, weight_decay, momentum,
                           buf if momentum else None, avg if centred else None, scale)
    p, g, sq, buf, avg = _data(dtype, 1001, 5)
    _assert_same(monkeypatch, update, [p, g, np.abs(sq), buf, avg * 0.01], "rmsprop")


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_centred_rmsprop_clamps_a_negative_variance_alike(monkeypatch, dtype):
    """The variance estimate s - a*a below 0 (rounding, or a state whose a*a
    overflows to give -inf) is 0 in NumPy's passes and the CUDA kernel; the
    loop's v - v made -inf into NaN."""
    big = np.finfo(dtype).max / 4
    p, g, sq, avg = _data(dtype, 1001, 4)
    sq, avg = np.abs(sq), avg * 0.01
    avg[::3], sq[::3] = big, 1.0          # a*a overflows: -inf
    avg[1::3], sq[1::3] = 1.0, 1.0 - 1e-3  # below 0 by more than rounding

    def update(b, p, g, sq, avg):
        b.rmsprop_step(p, g, sq, b.asarray(0.01), 0.99, 1e-8, 0.0, 0.0, None, avg, None)
    _assert_same(monkeypatch, update, [p, g, sq, avg], "rmsprop")
    mine, _, _ = _run(monkeypatch, True, update, [p, g, sq, avg])
    assert np.isfinite(mine[0][1::3]).all()


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lr_decay", [0.0, 0.01])
@pytest.mark.parametrize("scale,weight_decay", [(None, 0.0), (0.37, 0.01)])
def test_adagrad_loop_is_the_numpy_passes(monkeypatch, dtype, lr_decay, scale, weight_decay):
    def update(b, p, g, s):
        for t in (1, 2, 3):
            b.adagrad_step(p, g, s, b.asarray(0.01), np.int64(t), lr_decay, 1e-10,
                           weight_decay, scale)
    p, g, s = _data(dtype, 1001, 3)
    _assert_same(monkeypatch, update, [p, g, np.abs(s)], "adagrad")


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
    # bit for bit, signed zeros and lone NaNs included
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
    base = {k: v for k, v in os.environ.items() if k not in ("NNX_NUMBA", "NUMBA_DISABLE_JIT")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **(env or {})},
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


@pytest.mark.parametrize("value", ["0", "off"])
def test_nnx_numba_0_turns_the_loops_off(value):
    line = _train_and_print("fused.status(), 'numba' in sys.modules", width=300,
                            env={"NNX_NUMBA": value})
    assert line == f"NumPy passes (NNX_NUMBA={value}) False"


@needs_numba
def test_numba_disable_jit_leaves_the_numpy_passes():
    """Numba's switch that runs jitted functions as Python would make the
    loops about 500x slower than the passes."""
    line = _train_and_print("fused.status()", width=300, env={"NUMBA_DISABLE_JIT": "1"})
    assert line == "NumPy passes (NUMBA_DISABLE_JIT is set: the loops would run as Python)"


@needs_numba
def test_status_does_not_load_numba():
    """The reports ask; a run too small for the loops must stay without them."""
    line = _train_and_print("fused.status(), 'numba' in sys.modules", width=8,
                            prelude="from nnx.backend import fused; fused.status()\n")
    assert line == ("fused loops from 32,768 elements (Numba "
                    f"{fused._STATE['version']}, loaded at the first such update) False")


def test_without_numba_the_numpy_passes_train_and_say_why():
    line = _train_and_print("fused.status()", width=300,
                            prelude="import sys; sys.modules['numba'] = None\n")
    assert line == "NumPy passes (Numba not installed)"


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


@needs_numba
def test_scalars_of_another_dtype_go_to_the_numpy_passes(monkeypatch):
    """NumPy computes a float32 update in float64 when a rate, momentum or
    decay is a NumPy float64 (a scalar or a 0-d array): the loop, which
    would round it to float32 first, must leave such updates to the passes."""
    p, g, v, m = _data("float32", 1001, 4)
    v = np.abs(v)
    f64 = np.float64
    cases = {
        "sgd rate": lambda b, p, g, v, m: b.sgd_step(p, g, f64(0.1)),
        "momentum": lambda b, p, g, v, m: b.momentum_step(p, g, v, 0.1, f64(0.9), True),
        "adam beta1": lambda b, p, g, v, m: b.adam_step(p, g, m, v, 0.001, 3, f64(0.9), 0.999,
                                                         1e-8, 0.0),
        "adamw decay": lambda b, p, g, v, m: b.adam_step(p, g, m, v, 0.001, 3, 0.9, 0.999,
                                                          1e-8, np.asarray(0.01), True),
    }
    for what, update in cases.items():
        mine, _, ran = _run(monkeypatch, True, update, [p, g, v, m])
        passes, _, _ = _run(monkeypatch, False, update, [p, g, v, m])
        assert ran == [], what
        for a, b in zip(mine, passes):
            np.testing.assert_array_equal(a, b, err_msg=what)
    # the same scalars as float32 do run the loops
    mine, _, ran = _run(monkeypatch, True, lambda b, p, g: b.sgd_step(p, g, np.float32(0.1)),
                        [p, g])
    assert ran == ["sgd"]


@needs_numba
def test_matrices_overlapping_arrays_and_rate_arrays_go_to_the_numpy_passes(monkeypatch):
    """An np.matrix stays 2-D when flattened (the loop would index past its
    end); arrays that overlap are copied by NumPy first, not by the loop; a
    rate per element is NumPy's broadcasting. None of them may turn the loops
    off for the rest of the process either."""
    p, g, v = _data("float64", 64, 3)
    buf = np.arange(128.0)

    def matrix(b, buf):  # the passes refuse it too (a matrix's slices are rows)
        mat = np.asmatrix(buf[:8])
        b.momentum_step(mat, np.asmatrix(np.ones(8)), np.asmatrix(np.ones(8)), 0.1, 0.9)
    with pytest.raises(ValueError, match="non-broadcastable output"):
        _run(monkeypatch, True, matrix, [buf])
    assert fused.kernels() is not None

    def overlapping(b, buf):
        b.sgd_step(buf[1:], buf[:-1], 0.1)

    def per_element_rate(b, p, g):
        b.sgd_step(p, g, np.full(64, 0.1))
    for update, arrays in [(overlapping, [buf]), (per_element_rate, [p, g])]:
        mine, _, ran = _run(monkeypatch, True, update, arrays)
        passes, _, _ = _run(monkeypatch, False, update, arrays)
        assert ran == [], update.__name__
        np.testing.assert_array_equal(mine[0], passes[0])
    assert fused.kernels() is not None


@needs_numba
def test_a_float32_estimator_given_numpy_float64_settings_gets_the_same_fit(monkeypatch):
    """A search hands the estimator NumPy floats (np.linspace, scipy.stats):
    the solver takes them as numbers, so a float32 fit is the same with the
    fused loops and with the passes."""
    from nnx.sklearn import MLPClassifier
    monkeypatch.setattr(numpy_backend, "_FUSED_MIN", 0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 50))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    fits = []
    for solver, setting in [("sgd", {"momentum": np.float64(0.9)}),
                            ("adam", {"beta_1": np.float64(0.9), "beta_2": np.float64(0.99)})]:
        for loops in (fused.kernels(), None):
            monkeypatch.setitem(fused._STATE, "kernels", loops)
            clf = MLPClassifier((64,), solver=solver, max_iter=5, batch_size=50,
                                random_state=0, dtype="float32", **setting)
            with pytest.warns(Warning):  # five iterations do not converge
                clf.fit(X, y)
            fits.append(clf.coefs_)
        for a, b in zip(fits[-2], fits[-1]):
            np.testing.assert_array_equal(a, b, err_msg=solver)
