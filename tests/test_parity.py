"""Device backends against the CPU: from the same weights and batch, forward
pass, loss, gradients and 20 optimiser steps agree (1e-10 relative in float64,
1e-4 in float32). Runs on the simulated device in CPU CI and on CuPy where a
GPU is present."""

import numpy as np
import pytest

import nnx
from nnx.backend import get_backend
from nnx.backend.base import Backend as Reference

_GPU_OK, _GPU_WHY = nnx.gpu_available()
DEVICES = [
    "strict",
    pytest.param("gpu", marks=[pytest.mark.gpu,
                               pytest.mark.skipif(not _GPU_OK, reason=f"no GPU: {_GPU_WHY}")]),
]
RTOL = {"float64": 1e-10, "float32": 1e-4}


def _net(backend, dtype, loss=None):
    layers = [nnx.Dense(16, "tanh"), nnx.Dense(8, "relu"), nnx.Dense(4, "linear")]
    return nnx.NeuralNetwork(layers, loss or nnx.SoftmaxCrossEntropy(), seed=7,
                             backend=backend, dtype=dtype)


def _batch():
    rng = np.random.default_rng(1)
    return rng.standard_normal((32, 10)), rng.integers(0, 4, 32)


def _close(a, b, rtol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(), 1e-30)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", [nnx.SoftmaxCrossEntropy, nnx.MeanSquaredError])
def test_forward_loss_gradients_and_steps_match_cpu(device, dtype, loss):
    X, y = _batch()
    cpu, dev = _net("cpu", dtype, loss()), _net(device, dtype, loss())
    db = dev.backend
    rtol = RTOL[dtype]
    # the same starting weights: drawn on the host, uploaded
    cpu.build(10)
    dev.build(10)
    for p, q in zip(cpu.params(), dev.params()):
        assert np.array_equal(p, db.to_numpy(q))
    _close(db.to_numpy(dev.forward(X)), cpu.forward(X), rtol)
    _close(db.to_float(dev.train_batch(X, y)), float(cpu.train_batch(X, y)), rtol)
    for g, h in zip(cpu.param_grads(), dev.param_grads()):
        assert dev.backend.owns(h)
        _close(db.to_numpy(h), g, rtol)

    opt_c = nnx.SGDMomentum(0.05, momentum=0.9, final_lr=0.01, decay_type="linear")
    opt_d = nnx.SGDMomentum(0.05, momentum=0.9, final_lr=0.01, decay_type="linear")
    for opt, net in ((opt_c, cpu), (opt_d, dev)):
        opt.attach(net)
        opt.setup_decay(20)
    Xd, yd = dev.as_input(X), dev.as_target(y, 32)  # uploaded once, as fit does
    for step in range(20):
        cpu.train_batch(X, y)
        opt_c.step()
        dev.train_batch(Xd, yd)
        opt_d.step()
        opt_c.decay(step)
        opt_d.decay(step)
    for p, q in zip(cpu.params(), dev.params()):
        _close(db.to_numpy(q), p, rtol * 10)  # 20 steps compound rounding a little
    assert db.owns(opt_d.velocity)


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_masks_live_on_the_device(device):
    net = nnx.NeuralNetwork([nnx.Dense(50, "tanh", dropout=0.5), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0, backend=device)
    X, y = _batch()
    net.train_batch(X[:, :10], y % 3)
    drop = net.layers[0].operations[-1]
    assert isinstance(drop, nnx.Dropout)
    assert net.backend.owns(drop.mask) and drop.mask.dtype == net.backend.dtype
    frac = float(net.backend.to_numpy(drop.mask != 0).mean())
    assert 0.3 < frac < 0.7


@pytest.mark.parametrize("device", ["cpu", *DEVICES])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_device_overrides_match_the_reference(device, dtype):
    """Each fast path of a backend (the CPU's in-place versions, the GPU's
    fused kernels) computes what the reference method does. The simulated
    device has no fast path: there this compares the reference with itself,
    and test_backend.py checks the reference against closed forms."""
    b = get_backend(device, dtype)
    rng = np.random.default_rng(2)
    logits = b.asarray(rng.standard_normal((64, 10)) * 5)
    target = b.asarray(np.eye(10)[rng.integers(0, 10, 64)])
    rtol = RTOL[dtype]
    for eps in (1e-9, 1e-3):
        loss, grad = b.softmax_cross_entropy(logits, target, eps)
        ref_loss, ref_grad = Reference.softmax_cross_entropy(b, logits, target, eps)
        _close(b.to_float(loss), b.to_float(ref_loss), rtol)
        _close(b.to_numpy(grad), b.to_numpy(ref_grad), rtol)
    p0, g = rng.standard_normal(1000), rng.standard_normal(1000)
    v0 = rng.standard_normal(1000)
    # copies: on the CPU in float64, asarray hands back the very array
    p, v = b.asarray(p0.copy()), b.asarray(v0.copy())
    b.momentum_step(p, b.asarray(g), v, 0.1, 0.9)
    pr, vr = b.asarray(p0.copy()), b.asarray(v0.copy())
    Reference.momentum_step(b, pr, b.asarray(g), vr, 0.1, 0.9)
    _close(b.to_numpy(p), b.to_numpy(pr), rtol)
    _close(b.to_numpy(v), b.to_numpy(vr), rtol)
    p = b.asarray(p0.copy())
    b.sgd_step(p, b.asarray(g), 0.1)
    _close(b.to_numpy(p), p0 - 0.1 * g, rtol)
    mask = b.to_numpy(b.dropout_mask(b.generator(0), (1000, 100), 0.8))
    assert set(np.unique(mask)) <= {0.0, np.asarray(1 / 0.8, dtype=dtype).item()}
    assert abs((mask != 0).mean() - 0.8) < 0.01
