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
    torch_captured_step,
    torch_epoch,
    torch_model,
    torch_params64,
    torch_replays,
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
    run = torch_epoch(torch, model, opt, lossf, Xt, yt, batch)
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


# --------------------------------------------------------------------- GPU
# nnx's Adam inside its captured step (one CUDA graph per fit replays forward,
# loss, backward and the fused Adam kernel) against PyTorch's fused Adam, run
# eagerly and captured in a CUDA graph of its own (capturable=True, static
# input buffers refilled per batch), float32, TF32 off (gpu_check.sh).
GPU_ADAM_NETWORKS = ["study-784-89-10", "large-784-4096-4096-10"]
GPU_FIT_EPOCHS = 10


def _gpu_or_skip():
    ok, why = nnx.gpu_available()
    if not ok:
        pytest.skip(f"no GPU: {why}")


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_ADAM_NETWORKS)
def test_nnx_adam_gpu_fit(benchmark, name):
    """``Trainer.fit`` with Adam on the GPU: full batches replay one recorded
    step whose fused Adam kernel reads the rate and the step count from
    device arrays."""
    _gpu_or_skip()
    _need_nnx_adam()
    dtype = "float32"
    benchmark.group = f"train-adam {name} {dtype}"
    benchmark.name = "nnx-gpu-adam-fit"
    net = build_net(name, "gpu", dtype)
    X, y = make_data(name, BATCHES_PER_ROUND[name])
    batch = NETWORKS[name][2]
    check_parity(net, X[:batch], y[:batch], RTOL[dtype])
    got, expected, start, grads = nnx_adam_steps(net, X[:batch], y[:batch])
    assert_adam_close(got, expected, start, grads, RTOL[dtype], ADAM["lr"], "nnx gpu")
    Xd, yd = net.as_input(X), net.as_target(y, X.shape[0])
    trainer = nnx.Trainer(net, nnx.Adam(**ADAM))
    state = {}

    def run():
        state["history"] = trainer.fit(Xd, yd, Xd[:batch], yd[:batch], epochs=GPU_FIT_EPOCHS,
                                       eval_every=GPU_FIT_EPOCHS, batch_size=batch, seed=0,
                                       restart=False, patience=None)
        net.backend.synchronize()

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(optimizer="adam", graph=state["history"].graph,
                                graph_note=state["history"].graph_note)
    _record(benchmark, name, dtype, "gpu", "nnx-adam-fit", epochs=GPU_FIT_EPOCHS)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fused", "fused-graph"])
@pytest.mark.parametrize("name", GPU_ADAM_NETWORKS)
def test_torch_adam_gpu(benchmark, name, mode):
    """``torch.optim.Adam(fused=True)`` on CUDA: eagerly, or with the whole
    step (forward, loss, backward, the fused update) captured once in a
    ``torch.cuda.CUDAGraph`` and replayed per batch."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    dtype = "float32"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    benchmark.group = f"train-adam {name} {dtype}"
    benchmark.name = f"torch-cuda-adam-{mode}"
    sizes, act, batch = NETWORKS[name]
    model = torch_model(torch, name, dtype, device="cuda")
    X, y = make_data(name, BATCHES_PER_ROUND[name])
    Xt = torch.from_numpy(X).to(device="cuda", dtype=torch.float32)
    yt = torch.from_numpy(y).to("cuda")
    lossf = torch.nn.CrossEntropyLoss()
    graph = mode == "fused-graph"
    opt = torch.optim.Adam(model.parameters(), fused=True, capturable=graph, **ADAM)
    batches = [(Xt[i:i + batch], yt[i:i + batch]) for i in range(0, X.shape[0], batch)]
    _check_torch_gpu_adam(torch, name, dtype, X[:batch], y[:batch], batches[0], graph)
    if not graph:
        run = torch_epoch(torch, model, opt, lossf, Xt, yt, batch, sync=True)
    else:
        step, static_x, static_y = torch_captured_step(torch, model, opt, lossf, batches[0])
        run = torch_replays(torch, step, static_x, static_y, batches)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(optimizer="adam", graph=graph)
    _record(benchmark, name, dtype, "cuda", f"torch-adam-{mode}")


def _check_torch_gpu_adam(torch, name, dtype, X, y, first, graph, steps=2):
    """Two fused Adam steps of a fresh model against the float64 reference
    from the same weights; with ``graph``, the captured step's three warm-up
    steps and two replays (gradients that piled up from replay to replay
    would show in the second)."""
    model = torch_model(torch, name, dtype, device="cuda")
    opt = torch.optim.Adam(model.parameters(), fused=True, capturable=graph, **ADAM)
    lossf = torch.nn.CrossEntropyLoss()
    p0 = torch_params64(torch, model)
    sizes, act, _ = NETWORKS[name]
    acts = [act] * (len(sizes) - 2) + ["linear"]
    ref = reference.RefMLP(p0[0::2], p0[1::2], acts, loss="ce")
    Y = reference.one_hot(y, sizes[-1])
    state, grads_by_step = {}, []
    if graph:  # every step on the first batch: the warm-up's and the replays'
        step = torch_captured_step(torch, model, opt, lossf, first)[0]
        for _ in range(steps):
            step.replay()
        steps += 3
    for t in range(1, steps + 1):
        if not graph:
            opt.zero_grad(set_to_none=False)
            lossf(model(first[0]), first[1]).backward()
            opt.step()
        _, _, grads = ref.loss_and_grads(X, Y)
        grads_by_step.append(grads)
        reference.ref_adam(ref.params(), grads, state, t=t, **ADAM)
    assert_adam_close(torch_params64(torch, model), ref.params(), p0, grads_by_step,
                      RTOL[dtype], ADAM["lr"], f"torch cuda {'captured ' if graph else ''}adam")
