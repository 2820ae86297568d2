"""Each backend's array primitives against closed forms written here in
plain NumPy, with settings other than the study's defaults: the parity tests
compare backends with each other, which cannot see a bug they share (the
simulated device runs the reference code itself)."""

import numpy as np
import pytest

from nnx.backend import get_backend

RTOL = {"float32": 1e-6, "float64": 1e-14}


def _host(b, x):
    return np.asarray(b.to_numpy(x), dtype=np.float64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_momentum_step_is_the_closed_form(backend_name, dtype, momentum):
    b = get_backend(backend_name, dtype)
    rng = np.random.default_rng(1)
    p0, g1, g2 = (rng.standard_normal(50) for _ in range(3))
    lr = 0.3
    p, v = b.asarray(p0.copy()), b.zeros((50,))  # asarray may not copy
    for g in (g1, g2):
        b.momentum_step(p, b.asarray(g), v, b.asarray(lr), momentum)
    v1 = lr * g1
    v2 = momentum * v1 + lr * g2
    np.testing.assert_allclose(_host(b, v), v2, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])
    np.testing.assert_allclose(_host(b, p), p0 - v1 - v2, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sgd_step_is_the_closed_form(backend_name, dtype):
    b = get_backend(backend_name, dtype)
    rng = np.random.default_rng(2)
    p0, g = rng.standard_normal(40), rng.standard_normal(40)
    p = b.asarray(p0.copy())  # asarray may not copy
    b.sgd_step(p, b.asarray(g), b.asarray(0.25))
    np.testing.assert_allclose(_host(b, p), p0 - 0.25 * g, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype])


@pytest.mark.parametrize("keep", [0.5, 0.7, 0.8, 0.95])
def test_dropout_mask_keeps_that_share_and_scales_by_its_inverse(backend_name, keep):
    b = get_backend(backend_name, "float64")
    mask = _host(b, b.dropout_mask(b.generator(3), (400, 250), keep))
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1.0 / keep, rtol=1e-15)
    assert abs(kept.mean() - keep) < 4 * np.sqrt(keep * (1 - keep) / kept.size)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_clips_extreme_logits(backend_name, dtype):
    """Loss -sum(y log clip(softmax, eps, 1-eps)) / n and gradient (softmax - y) / n,
    with logits whose softmax underflows to 0 for the target class."""
    b = get_backend(backend_name, dtype)
    logits = np.array([[0.0, -800.0, 3.0], [50.0, -50.0, 0.0], [1.0, 2.0, 3.0]])
    y = np.eye(3)[[1, 1, 2]]
    eps = 1e-6
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected_loss = -np.sum(y * np.log(np.clip(p, eps, 1 - eps))) / 3
    loss, grad = b.softmax_cross_entropy(b.asarray(logits), b.asarray(y), eps)
    assert float(_host(b, loss)) == pytest.approx(expected_loss, rel=RTOL[dtype] * 10)
    np.testing.assert_allclose(_host(b, grad), (p - y) / 3, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype])
