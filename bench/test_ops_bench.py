"""Per-operation timings: a Dense layer's forward and backward, softmax
cross-entropy loss+gradient, and one optimiser step over all parameters."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from .conftest import BACKENDS, DTYPES, build_net, make_data

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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward(benchmark, backend, dtype):
    benchmark.group = f"op dense-forward 256x784->1024 {dtype}"
    benchmark.name = f"nnx-{backend}"
    net, X, _ = _setup(backend, dtype)
    layer = net.layers[0]
    _time(benchmark, lambda: layer.forward(X), net.backend.synchronize)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward(benchmark, backend, dtype):
    benchmark.group = f"op dense-backward 256x784->1024 {dtype}"
    benchmark.name = f"nnx-{backend}"
    net, X, _ = _setup(backend, dtype)
    layer = net.layers[0]
    g = net.backend.asarray(np.ones((X.shape[0], layer.neurons)))
    layer.forward(X)
    _time(benchmark, lambda: layer.backward(g), net.backend.synchronize)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(benchmark, backend, dtype):
    benchmark.group = f"op softmax-ce 256x10 {dtype}"
    benchmark.name = f"nnx-{backend}"
    net, X, y = _setup(backend, dtype)
    logits = net.forward(X)
    loss = nnx.SoftmaxCrossEntropy()
    loss.backend = net.backend

    def run():
        loss.forward(logits, y)
        loss.backward()
    _time(benchmark, run, net.backend.synchronize)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_step(benchmark, backend, dtype):
    benchmark.group = f"op momentum-step 1.86M params {dtype}"
    benchmark.name = f"nnx-{backend}"
    net, X, y = _setup(backend, dtype)
    net._train_step(X, y)
    optim = nnx.SGDMomentum(1e-6, momentum=0.9)
    optim.attach(net)
    _time(benchmark, optim.step, net.backend.synchronize)
