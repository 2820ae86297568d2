"""The CPU's optimiser updates flush subnormal numbers to zero (nnx.backend.
subnormals): optimiser state that decays where the gradient is zero becomes
exact zeros instead of subnormals, on which x86 cores run many times slower;
the thread's floating-point environment is as before after each update."""

from __future__ import annotations

import subprocess
import sys

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
def test_state_that_decays_below_the_normal_range_becomes_zero(cpu_updates, dtype, n):
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


def test_subnormal_inputs_read_as_zero_inside_an_update_only():
    """Denormals-are-zero: a subnormal parameter, minus a zero step, becomes
    0 in an update; outside updates, subnormals are computed as ever."""
    b = get_backend("cpu", "float32")
    p, g = np.full(10, 2e-39, np.float32), np.zeros(10, np.float32)
    b.sgd_step(p, g, 0.5)
    assert not p.any()
    assert _still_subnormal_outside()


def test_an_update_that_fails_leaves_the_environment_as_it_was():
    b = get_backend("cpu", "float64")
    p, m, v = np.ones(4), np.zeros(4), np.zeros(4)
    with pytest.raises(ValueError):  # a gradient of the wrong length
        b.adam_step(p, np.ones(3), m, v, 0.001, 1, 0.9, 0.999, 1e-8, 0.0)
    assert _still_subnormal_outside()
    with pytest.raises(RuntimeError), subnormals.flushing():
        raise RuntimeError
    assert _still_subnormal_outside()


def test_one_flushing_block_is_entered_once_at_a_time():
    """Its saved state is one thread's: entered twice, the outer exit would
    have put back the inner state, leaving the bits set."""
    f = subnormals.flushing()
    with f:
        with pytest.raises(RuntimeError, match="entered once"):
            f.__enter__()
    assert _still_subnormal_outside()
    with f:  # and again, after it has exited
        assert not _still_subnormal_outside()
    assert _still_subnormal_outside()


def test_a_caller_that_flushes_already_keeps_flushing_after_an_update():
    b = get_backend("cpu", "float32")
    with subnormals.flushing():
        assert not _still_subnormal_outside()
        b.sgd_step(np.ones(3, np.float32), np.ones(3, np.float32), 0.1)
        assert not _still_subnormal_outside()
    assert _still_subnormal_outside()


def test_nnx_update_threads_flush_even_when_started_outside_an_update():
    """Threads started inside an update inherit its bits; the pool's own
    initializer must set them when it is started anywhere else (here: in a
    fresh process, by asking for the pool before any update)."""
    code = (
        "import numpy as np\n"
        "from nnx.backend import numpy_backend as nb\n"
        "pool, _ = nb._pool()\n"
        "print(pool.submit(lambda: float(np.float32(1e-38) * np.float32(0.01))).result(),"
        " float(np.float32(1e-38) * np.float32(0.01)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert [float(x) for x in out] == [0.0, pytest.approx(1e-40, rel=1e-2)]


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
