"""Reduced-precision training throughput on the GPU (the ``precision``
benchmarks): nnx's 784-4096-4096-10 network at batch 1024 with float32,
TF32, bfloat16 and float16 products, beside PyTorch with the same setting
(TF32 switched on, or ``torch.autocast`` with bfloat16/float16 and a
GradScaler for float16), in one run.

Before timing, each case's loss and gradients on one batch are checked
against the float64 reference within what its precision allows. These
benchmarks must run without ``NVIDIA_TF32_OVERRIDE=0`` (which turns TF32 off
for every cuBLAS user): ``bench/gpu_check.sh`` runs them in a stage of their
own. Without a GPU every case is skipped."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from .conftest import (
    BATCHES_PER_ROUND,
    NETWORKS,
    assert_close,
    flops_per_sample,
    make_data,
    reference_mlp,
    to_host64,
    torch_model,
)

NAME = "large-784-4096-4096-10"
PRECISIONS = ["float32", "tf32", "bfloat16", "float16"]
# gradients relative to the float64 reference's largest entry: operand rounding
# (2**-11 for TF32 and float16, 2**-8 for bfloat16) over sums of 784-4096 products
PARITY = {"float32": 2e-4, "tf32": 5e-3, "bfloat16": 3e-2, "float16": 5e-3}
_GPU_OK, _GPU_WHY = nnx.gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.precision,
              pytest.mark.skipif(not _GPU_OK, reason=f"no GPU: {_GPU_WHY}")]


def _record(benchmark, precision, peer):
    n = BATCHES_PER_ROUND[NAME] * NETWORKS[NAME][2]
    benchmark.extra_info.update(network=NAME, dtype="float32", precision=precision, peer=peer,
                                samples_per_round=n, flops_per_sample=flops_per_sample(NAME))
    if benchmark.stats is not None:
        rate = n / benchmark.stats.stats.median
        benchmark.extra_info.update(samples_per_s=rate,
                                    achieved_flops=rate * flops_per_sample(NAME))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_nnx_precision(benchmark, precision):
    sizes, act, batch = NETWORKS[NAME]
    layers = [nnx.Dense(n, act) for n in sizes[1:-1]] + [nnx.Dense(sizes[-1], "linear")]
    net = nnx.NeuralNetwork(layers, nnx.SoftmaxCrossEntropy(), seed=0, backend="gpu",
                            precision=precision)
    net.build(sizes[0])
    X, y = make_data(NAME, BATCHES_PER_ROUND[NAME])
    ref = reference_mlp(net)
    loss = net.backend.to_float(net.train_batch(X[:batch], y[:batch]))
    ref_loss, _, ref_grads = ref.loss_and_grads(X[:batch], np.eye(sizes[-1])[y[:batch]])
    assert abs(loss - ref_loss) <= PARITY[precision] * abs(ref_loss)
    scale = 1.0 if net.loss_scaler is None else net.loss_scaler.state(net.backend)[0]
    for i, (g, r) in enumerate(zip(net.param_grads(), ref_grads)):
        assert_close(to_host64(net.backend, g) / scale, r, PARITY[precision], f"gradient {i}")
    optim = nnx.SGDMomentum(0.01)
    optim.attach(net)
    Xd, yd = net.as_input(X), net.as_target(y, X.shape[0])
    batches = [(Xd[i:i + batch], yd[i:i + batch]) for i in range(0, Xd.shape[0], batch)]
    step = [None]

    def one():  # the captured step, fed by copies into its buffers, as fit feeds it
        net.train_step(xb_buf, yb_buf)
        optim.step()
    xb_buf, yb_buf = net.backend.copy(batches[0][0]), net.backend.copy(batches[0][1])
    one()
    step[0], _ = net.backend.capture(one)

    def run():
        for xb, yb in batches:
            net.backend.assign(xb_buf, xb)
            net.backend.assign(yb_buf, yb)
            step[0]()
        net.backend.synchronize()
    benchmark.group = f"precision {NAME}"
    benchmark.name = f"nnx-gpu-{precision}"
    benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    _record(benchmark, precision, "nnx")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_precision(benchmark, precision):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    if precision == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this device has no bfloat16")
    _, _, batch = NETWORKS[NAME]
    model = torch_model(torch, NAME, "float32", "cuda")
    X, y = make_data(NAME, BATCHES_PER_ROUND[NAME])
    Xt = torch.from_numpy(X.astype(np.float32)).cuda()
    yt = torch.from_numpy(y).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    lossf = torch.nn.CrossEntropyLoss()
    half = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "float16" else None
    batches = [(Xt[i:i + batch], yt[i:i + batch]) for i in range(0, Xt.shape[0], batch)]
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        def run():
            for xb, yb in batches:
                opt.zero_grad(set_to_none=False)
                if half is None:
                    lossf(model(xb), yb).backward()
                    opt.step()
                    continue
                with torch.autocast("cuda", dtype=half):
                    loss = lossf(model(xb), yb)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
            torch.cuda.synchronize()
        benchmark.group = f"precision {NAME}"
        benchmark.name = f"torch-cuda-{precision}"
        benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    _record(benchmark, precision, "torch")
