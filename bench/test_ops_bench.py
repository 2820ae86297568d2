"""Per-operation timings: a Dense layer's forward and backward, softmax
cross-entropy loss+gradient, and one optimiser step (momentum, Adam) over all
parameters.
Before the clock starts, each case checks its operation against the
independent plain-NumPy float64 reference (tests/reference.py) or a closed form."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.backend import subnormals

from .conftest import (
    ADAM,
    BACKENDS,
    DTYPES,
    RTOL,
    assert_adam_close,
    assert_close,
    build_net,
    make_data,
    reference,
    to_host64,
)

NAME = "wide-784-1024-1024-10"


def _setup(backend, dtype):
    net = build_net(NAME, backend, dtype)
    X, y = make_data(NAME, 1)
    return net, net.as_input(X), net.as_target(y, X.shape[0])


def _time(benchmark, fn, sync):
    def run():
        fn()
        sync()
    benchmark.pedantic(run, rounds=20, iterations=5, warmup_rounds=2)


def _dense_reference(net, layer, X):
    """The layer's input, weights and pre-activation in float64 on the host,
    and its output ``act(X @ W + B)`` computed by the reference."""
    b = net.backend
    x, W, B = (to_host64(b, a) for a in (X, *layer.params()))
    z = x @ W + B
    return x, W, z, reference.act_forward(type(layer.activation).name, z)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward(benchmark, backend, dtype):
    benchmark.group = f"op dense-forward 256x784->1024 {dtype}"
    benchmark.name = f"nnx-{backend}"
    net, X, _ = _setup(backend, dtype)
    layer = net.layers[0]
    assert type(layer.activation).name == "tanh"
    _, _, _, out = _dense_reference(net, layer, X)  # tanh(X @ W + B) in float64
    assert_close(to_host64(net.backend, layer.forward(X)), out, RTOL[dtype], "dense forward")
    _time(benchmark, lambda: layer.forward(X), net.backend.synchronize)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward(benchmark, backend, dtype):
    benchmark.group = f"op dense-backward 256x784->1024 {dtype}"
    benchmark.name = f"nnx-{backend}"
    net, X, _ = _setup(backend, dtype)
    b = net.backend
    layer = net.layers[0]
    g_host = np.random.default_rng(2).standard_normal((X.shape[0], layer.neurons))
    g = b.asarray(g_host)
    layer.forward(X)
    # parity: the input gradient and the W and B gradients for the output gradient g
    x, W, z, a = _dense_reference(net, layer, X)
    gz = to_host64(b, g) * reference.act_derivative(type(layer.activation).name, z, a)
    dX = layer.backward(g)
    dW, dB = layer.param_grads()
    rtol = RTOL[dtype]
    assert_close(to_host64(b, dX), gz @ W.T, rtol, "dense input gradient")
    assert_close(to_host64(b, dW), x.T @ gz, rtol, "dense weight gradient")
    assert_close(to_host64(b, dB), gz.sum(axis=0, keepdims=True), rtol, "dense bias gradient")
    _time(benchmark, lambda: layer.backward(g), b.synchronize)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(benchmark, backend, dtype):
    benchmark.group = f"op softmax-ce 256x10 {dtype}"
    benchmark.name = f"nnx-{backend}"
    net, X, y = _setup(backend, dtype)
    b = net.backend
    logits = net.forward(X)
    loss = nnx.SoftmaxCrossEntropy()
    loss.backend = b

    def run():
        loss.forward(logits, y)
        loss.backward()

    # parity: moderate logits, so nnx's eps clip does not change the loss
    ref_loss, ref_grad = reference.softmax_ce(to_host64(b, logits), to_host64(b, y))
    got = b.to_float(loss.forward(logits, y))
    assert abs(got - ref_loss) <= RTOL[dtype] * abs(ref_loss), f"loss {got!r} != {ref_loss!r}"
    assert_close(to_host64(b, loss.backward()), ref_grad, RTOL[dtype], "softmax-CE gradient")
    _time(benchmark, run, b.synchronize)


def _check_momentum_step(net, lr=0.01, momentum=0.9, rtol=1e-10):
    """Two ``SGDMomentum`` steps from zero velocity on one fixed gradient (no
    train step between them) against the closed form
    ``p2 = p0 - lr g - (momentum lr g + lr g)``: the parameters, and their
    change (which rounding of the parameters would hide at a small rate).
    The parameters are put back afterwards."""
    b = net.backend
    start = net.get_parameters()
    p0 = to_host64(b, start)
    g = np.concatenate([to_host64(b, gr).ravel() for gr in net.param_grads()])
    expected = p0 - lr * g - (momentum * lr * g + lr * g)
    optim = nnx.SGDMomentum(lr, momentum=momentum)
    optim.attach(net)
    try:
        optim.step()
        optim.step()
        p2 = to_host64(b, net.get_parameters())
        assert_close(p2, expected, rtol, "parameters after 2 momentum steps")
        assert_close(p2 - p0, expected - p0, rtol, "change over 2 momentum steps")
    finally:
        net.set_parameters(start)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_step(benchmark, backend, dtype):
    benchmark.group = f"op momentum-step 1.86M params {dtype}"
    benchmark.name = f"nnx-{backend}"
    net, X, y = _setup(backend, dtype)
    net.train_step(X, y)
    _check_momentum_step(net, rtol=RTOL[dtype] * 10)
    optim = nnx.SGDMomentum(1e-6, momentum=0.9)
    optim.attach(net)
    _time(benchmark, optim.step, net.backend.synchronize)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_step(benchmark, backend, dtype):
    """One ``nnx.Adam`` step over every parameter: the optimiser's own share
    of an Adam training step. Checked first: two steps on one fixed gradient
    against the float64 reference Adam."""
    if not hasattr(nnx, "Adam"):
        pytest.skip("this nnx has no Adam optimiser")
    benchmark.group = f"op adam-step 1.86M params {dtype}"
    benchmark.name = f"nnx-{backend}"
    net, X, y = _setup(backend, dtype)
    b = net.backend
    net.train_step(X, y)
    start = net.get_parameters()
    p0 = [to_host64(b, p) for p in net.params()]
    g = [to_host64(b, gr) for gr in net.param_grads()]
    expected = [p.copy() for p in p0]
    state = {}
    optim = nnx.Adam(**ADAM)
    optim.attach(net)
    for t in (1, 2):
        optim.step()
        reference.ref_adam(expected, g, state, t=t, **ADAM)
    assert_adam_close([to_host64(b, p) for p in net.params()], expected, p0, [g, g],
                      RTOL[dtype], ADAM["lr"], "nnx")
    net.set_parameters(start)
    _time(benchmark, optim.step, b.synchronize)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decayed", [False, True], ids=["normal-m", "subnormal-m"])
def test_adam_step_on_decayed_moments(benchmark, backend, dtype, decayed):
    """One ``nnx.Adam`` step from a given state, restored before every timed
    step: as it is, or with a quarter of the first moments decayed into the
    subnormal range and their gradients zero (what a zero gradient, batch
    after batch, leaves: blank pixels, dead ReLU units). The CPU flushes
    them to zero (nnx.backend.subnormals): checked first. The two cases
    differ only in those values, so their times compare directly."""
    if not hasattr(nnx, "Adam"):
        pytest.skip("this nnx has no Adam optimiser")
    what = "1/4 of m subnormal" if decayed else "m as trained"
    benchmark.group = f"op adam-step 1.86M params {dtype}, state restored each step, {what}"
    benchmark.name = f"nnx-{backend}"
    net, X, y = _setup(backend, dtype)
    b = net.backend
    net.train_step(X, y)
    optim = nnx.Adam(**ADAM)
    optim.attach(net)
    optim.step()
    m = to_host64(b, optim.state["m"]).astype(dtype)
    g = to_host64(b, net.grad_buffer).astype(dtype)
    g[::4] = 0.0  # in both cases, so the two differ only in m
    if decayed:
        m[::4] = np.finfo(dtype).tiny / 4  # subnormal
    m_dev = b.asarray(m)
    b.assign(net.grad_buffer, b.asarray(g))
    start = net.get_parameters()

    def restore():
        b.assign(optim.state["m"], m_dev)
        b.assign(net.param_buffer, start)
    restore()
    optim.step()
    after = to_host64(b, optim.state["m"])[::4]  # beta1 m, their gradients being zero
    if not decayed:
        np.testing.assert_allclose(after, ADAM["betas"][0] * m[::4], rtol=RTOL[dtype])
    elif backend == "cpu" and subnormals.SUPPORTED:
        assert not after.any(), "subnormal moments times beta1 must flush to zero"
    else:  # the GPU keeps subnormals, and handles them at full speed
        assert np.all(np.abs(after) < np.finfo(dtype).tiny)

    def step():
        optim.step()
        b.synchronize()
    benchmark.pedantic(step, setup=restore, rounds=20, iterations=1, warmup_rounds=2)
