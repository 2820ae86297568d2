"""Training throughput with Adam: nnx.Adam against torch.optim.Adam (its
multi-tensor ``foreach`` form) on the wide network, same weights, batches and
dtype. Before the clock starts, two Adam steps of each library are checked
against the independent float64 Adam of tests/reference.py (``ref_adam``),
and PyTorch's against nnx's."""

from __future__ import annotations

import copy

import pytest

import nnx

from .conftest import (
    ADAM,
    BATCHES_PER_ROUND,
    DTYPES,
    NETWORKS,
    RTOL,
    assert_adam_close,
    build_net,
    check_parity,
    check_torch_parity,
    make_data,
    nnx_adam_steps,
    reference,
    torch_model,
    torch_params64,
)
from .test_train_throughput import _bare_loop, _record

ADAM_NETWORKS = ["wide-784-1024-1024-10"]


def _need_nnx_adam():
    if not hasattr(nnx, "Adam"):
        pytest.skip("this nnx has no Adam optimiser")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ADAM_NETWORKS)
def test_nnx_adam(benchmark, name, dtype):
    """The bare step loop (``train_step`` + ``Adam.step`` per batch), as the
    momentum benchmark runs it."""
    _need_nnx_adam()
    benchmark.group = f"train-adam {name} {dtype}"
    benchmark.name = "nnx-cpu-adam"
    net = build_net(name, "cpu", dtype)
    X, y = make_data(name, BATCHES_PER_ROUND[name])
    batch = NETWORKS[name][2]
    check_parity(net, X[:batch], y[:batch], RTOL[dtype])  # loss and gradients
    got, expected, start, grads = nnx_adam_steps(net, X[:batch], y[:batch])
    assert_adam_close(got, expected, start, grads, RTOL[dtype], ADAM["lr"], "nnx")
    optim = nnx.Adam(**ADAM)
    optim.attach(net)
    Xd, yd = net.as_input(X), net.as_target(y, X.shape[0])
    benchmark.pedantic(_bare_loop(net, optim, Xd, yd, batch), rounds=7, iterations=1,
                       warmup_rounds=1)
    benchmark.extra_info["optimizer"] = "adam"
    _record(benchmark, name, dtype, "cpu", "nnx-adam")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ADAM_NETWORKS)
def test_torch_adam(benchmark, name, dtype):
    """``torch.optim.Adam(foreach=True)``: one fused pass per operation over
    all parameters, PyTorch's fastest CPU form that keeps its eager loop."""
    torch = pytest.importorskip("torch")
    benchmark.group = f"train-adam {name} {dtype}"
    benchmark.name = "torch-cpu-adam"
    sizes, act, batch = NETWORKS[name]
    model = torch_model(torch, name, dtype)
    X, y = make_data(name, BATCHES_PER_ROUND[name])
    Xt = torch.from_numpy(X).to(dtype=getattr(torch, dtype))
    yt = torch.from_numpy(y)
    lossf = torch.nn.CrossEntropyLoss()
    acts = [act] * (len(sizes) - 2) + ["linear"]
    check_torch_parity(torch, model, lossf, X[:batch], y[:batch], Xt[:batch], yt[:batch],
                       acts, RTOL[dtype])
    _check_torch_adam(torch, name, dtype, model, lossf, X[:batch], y[:batch], Xt[:batch],
                      yt[:batch], acts)
    opt = torch.optim.Adam(model.parameters(), foreach=True, **ADAM)
    batches = [(Xt[i:i + batch], yt[i:i + batch]) for i in range(0, X.shape[0], batch)]

    def run():
        for xb, yb in batches:
            opt.zero_grad(set_to_none=False)
            lossf(model(xb), yb).backward()
            opt.step()

    benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    benchmark.extra_info["optimizer"] = "adam"
    _record(benchmark, name, dtype, "cpu", "torch-adam")


def _check_torch_adam(torch, name, dtype, model, lossf, X, y, Xt, yt, acts, steps=2):
    """Two ``Adam(foreach=True)`` steps of a copy of ``model`` against the
    float64 reference from the same weights, and against nnx's Adam on the
    same network and dtype (where this nnx has one)."""
    twin = copy.deepcopy(model)
    opt = torch.optim.Adam(twin.parameters(), foreach=True, **ADAM)
    p0 = torch_params64(torch, twin)
    ref = reference.RefMLP(p0[0::2], p0[1::2], acts, loss="ce")
    Y = reference.one_hot(y, NETWORKS[name][0][-1])
    state = {}
    grads_by_step = []
    for t in range(1, steps + 1):
        opt.zero_grad(set_to_none=False)
        lossf(twin(Xt), yt).backward()
        opt.step()
        _, _, grads = ref.loss_and_grads(X, Y)
        grads_by_step.append(grads)
        reference.ref_adam(ref.params(), grads, state, t=t, **ADAM)
    got = torch_params64(torch, twin)
    rtol = RTOL[dtype]
    assert_adam_close(got, ref.params(), p0, grads_by_step, rtol, ADAM["lr"], "torch")
    if hasattr(nnx, "Adam"):
        mine, _, _, _ = nnx_adam_steps(build_net(name, "cpu", dtype), X, y, steps)
        # the two libraries round differently, so each is held to the
        # reference's clear-sign entries, as against the reference itself
        assert_adam_close(mine, got, p0, grads_by_step, rtol, ADAM["lr"], "nnx against torch")
