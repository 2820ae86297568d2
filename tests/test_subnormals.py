"""The CPU's optimiser updates flush subnormal numbers to zero (nnx.backend.
subnormals): optimiser state that decays where the gradient is zero becomes
exact zeros instead of subnormals, on which x86 cores run many times slower;
the thread's floating-point environment is as before after each update."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.backend import get_backend, subnormals

pytestmark = pytest.mark.skipif(not subnormals.SUPPORTED,
                                reason="flush-to-zero is set on x86-64 Linux (glibc) only")

TINY = {"float32": np.finfo(np.float32).tiny, "float64": np.finfo(np.float64).tiny}


def _subnormal_count(a):
    a = np.asarray(a)
    return int(np.count_nonzero((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)))


def _still_subnormal_outside():
    """A product with a subnormal result, computed outside any update."""
    return np.float32(1e-38) * np.float32(0.01) != 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1_000, 300_001])  # one block, and blocks on several threads
def test_state_that_decays_below_the_normal_range_becomes_zero(dtype, n):
    b = get_backend("cpu", dtype)
    tiny = TINY[dtype]
    zero = np.zeros(n, dtype)
    state = np.full(n, 1.05 * tiny, dtype)  # normal now; 0.9 of it is not
    param = np.ones(n, dtype)
    b.momentum_step(param, zero, state, 0.01, 0.9)
    assert _subnormal_count(state) == 0 and not state.any()

    m, v = np.full(n, 1.05 * tiny, dtype), np.full(n, 1.0, dtype)
    b.adam_step(param, zero, m, v, 0.001, 5, 0.9, 0.999, 1e-8, 0.0)
    assert _subnormal_count(m) == 0 and not m.any()
    np.testing.assert_array_equal(v, np.full(n, 0.999, dtype))  # normal values as ever

    square_avg = np.full(n, 1.5 * tiny, dtype)
    b.rmsprop_step(param, zero, square_avg, 0.01, 0.5, 1e-8, 0.0, 0.0)
    assert not square_avg.any()
    assert _still_subnormal_outside()


def test_the_floating_point_environment_is_restored_after_an_update():
    b = get_backend("cpu", "float32")
    p, g = np.ones(10, np.float32), np.full(10, 1e-39, np.float32)  # a subnormal gradient
    b.sgd_step(p, g, 0.5)
    np.testing.assert_array_equal(p, 1.0)
    assert _still_subnormal_outside()
    with subnormals.flushing():
        assert not _still_subnormal_outside()
    assert _still_subnormal_outside()
    with pytest.raises(RuntimeError), subnormals.flushing():  # restored after an error too
        raise RuntimeError
    assert _still_subnormal_outside()


def test_adam_on_an_always_blank_input_never_holds_subnormal_moments():
    """A network whose first input is 0 in every row after the first batch,
    trained with Adam: the first moments of that input's weights then decay
    by beta1 every step. With beta1 = 0.5 they cross the normal float32
    range's floor within about 130 steps and, halving, could not skip the 23
    binades of subnormals below it: at no step is any of them subnormal, and
    after 300 steps they are zeros."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = (X[:, 1] > 0).astype(int)
    net = nnx.NeuralNetwork([nnx.Dense(8, "tanh"), nnx.Dense(2, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0, dtype="float32")
    optim = nnx.Adam(0.01, betas=(0.5, 0.999))
    optim.attach(net)
    net.train_batch(X, y)
    optim.step()
    X[:, 0] = 0.0
    counts = []
    for _ in range(300):
        net.train_batch(X, y)
        optim.step()
        counts.append(_subnormal_count(optim.state["m"]))
    assert max(counts) == 0
    assert not np.asarray(optim.state["m"])[:8].any()  # W1 (5 x 8) first: input 0's row
