"""GPU-only checks (marked ``gpu``; skipped with the reason where CuPy or a
device is missing): fused kernels against the reference, the captured step
against the step-by-step loop, fresh dropout masks on every replay, and no
device-to-host copy inside the training loop."""

import numpy as np
import pytest

import nnx
from nnx.backend import get_backend
from nnx.backend.base import Backend as Reference

_OK, _WHY = nnx.gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _OK, reason=f"no GPU: {_WHY}")]
RTOL = {"float64": 1e-10, "float32": 1e-4}
# every activation (name, setting), with a setting other than the default where it has one
ACTS = [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("leaky_relu", 0.2),
        ("relu6", None), ("gelu", "none"), ("gelu", "tanh"), ("silu", None), ("elu", 1.0),
        ("elu", 0.5)]
ACT_IDS = [f"{n}-{s}" if s is not None else n for n, s in ACTS]


def _close(a, b, rtol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_fused_bias_activation_passes_nan_through_like_numpy(act, dtype):
    """The fused ReLU and ReLU6 kernels turned a NaN into 0 (CUDA's fmax/fmin
    and a ``z > 0`` test drop it), where NumPy keeps it."""
    b = get_backend("gpu", dtype)
    x = np.array([[np.nan, -1.0, 0.5, 7.0]])
    y, _ = b.bias_activation(b.asarray(x), b.zeros((1, 4)), *act)
    y = b.to_numpy(y)
    cpu = nnx.ops.make_activation(*act)
    expected = cpu.forward(x.astype(dtype))
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(y), nan)
    _close(y[~nan], expected[~nan], RTOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_softmax_cross_entropy_keeps_nan_like_numpy(dtype):
    """The kernel clipped with CUDA's fmax/fmin, which return the number when
    one side is NaN: NaN logits gave a finite loss, hiding a divergence."""
    logits = np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0]])
    target = np.eye(3)[[1, 2]]
    losses = []
    for name in ("gpu", "cpu"):
        b = get_backend(name, dtype)
        loss, grad = b.softmax_cross_entropy(b.asarray(logits), b.asarray(target), 1e-9)
        losses.append(float(b.to_numpy(loss)))
        assert np.isnan(b.to_numpy(grad)[0]).all() and np.isfinite(b.to_numpy(grad)[1]).all()
    assert np.isnan(losses).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_fused_bias_activation_matches_reference(act, dtype):
    b = get_backend("gpu", dtype)
    rng = np.random.default_rng(0)
    x = b.asarray(rng.standard_normal((64, 33)) * 4)
    bias = b.asarray(rng.standard_normal((1, 33)))
    g = b.asarray(rng.standard_normal((64, 33)))
    y, saved = b.bias_activation(x, bias, *act)
    y_ref, saved_ref = Reference.bias_activation(b, x, bias, *act)
    _close(b.to_numpy(y), b.to_numpy(y_ref), RTOL[dtype])
    gz = b.bias_activation_grad(*act, saved, g)
    gz_ref = Reference.bias_activation_grad(b, *act, saved_ref, g)
    _close(b.to_numpy(gz), b.to_numpy(gz_ref), RTOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_fused_kernels_at_extreme_inputs_match_the_cpu(act, dtype):
    """Up to the largest float the kernels give what the CPU operations give:
    finite values and gradients (GELU's clipped tanh form keeps 0 * inf out)."""
    b = get_backend("gpu", dtype)
    big = float(np.finfo(dtype).max)
    x = np.array([[-big, -1e30, -1e6, -200.0, -30.0, -1e-30, 0.0, 1e-30, 30.0, 200.0, 1e6,
                   1e30, big]], dtype=dtype)
    g = np.ones_like(x)
    y, saved = b.bias_activation(b.asarray(x), b.zeros((1, x.shape[1])), *act)
    gz = b.to_numpy(b.bias_activation_grad(*act, saved, b.asarray(g)))
    cpu = nnx.ops.make_activation(*act)
    with np.errstate(over="ignore", invalid="ignore"):  # sigmoid etc. are not the point here
        expected, expected_grad = cpu.forward(x), cpu.backward(g)
    for got, want in ((b.to_numpy(y), expected), (gz, expected_grad)):
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        ok = np.isfinite(want)  # element by element: these span 1e-30 to 1e38
        np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL[dtype], atol=1e-30)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_erf_matches_the_reference(dtype):
    b = get_backend("gpu", dtype)
    x = b.asarray(np.concatenate([np.linspace(-8.0, 8.0, 4001), [0.0, 30.0, -30.0, 1e30]]))
    _close(b.to_numpy(b.erf(x)), b.to_numpy(Reference.erf(b, x)), RTOL[dtype] / 100)


@pytest.mark.parametrize("act", ["gelu", "silu", "elu"])
def test_gelu_silu_and_elu_networks_train_on_the_gpu_as_on_the_cpu(act):
    """One batch through a fused GPU network and the CPU network: same loss
    and gradients (float64), the new kernels inside a whole step."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 12)), rng.integers(0, 4, 40)
    nets = [nnx.NeuralNetwork([nnx.Dense(16, act), nnx.Dense(4, "linear")],
                              nnx.SoftmaxCrossEntropy(), seed=5, backend=be, dtype="float64")
            for be in ("gpu", "cpu")]
    losses = [float(net.backend.to_numpy(net.train_batch(X, y))) for net in nets]
    assert type(nets[0].layers[0].operations[1]).__name__ == "BiasActivation"
    _close(losses[0], losses[1], 1e-10)
    for g, h in zip(nets[0].param_grads(), nets[1].param_grads()):
        _close(nets[0].backend.to_numpy(g), h, 1e-9)


def _fit(dtype="float64", dropout=1.0, graph=True, n=600, epochs=4, seed=3, backend="gpu",
         make_opt=None):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((n, 20)), rng.integers(0, 5, n)
    net = nnx.NeuralNetwork([nnx.Dense(32, "tanh", dropout=dropout), nnx.Dense(5, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=seed, backend=backend, dtype=dtype)
    opt = (make_opt() if make_opt is not None
           else nnx.SGDMomentum(0.1, final_lr=0.02, decay_type="exponential"))
    hist = nnx.Trainer(net, opt).fit(X, y, X[:100], y[:100], epochs=epochs, eval_every=2,
                                     batch_size=60, seed=4, patience=5, graph=graph)
    return net, hist


@pytest.mark.parametrize("n, dropout", [(600, 1.0), (610, 0.8)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_captured_step_trains_like_the_loop(dtype, n, dropout):
    """Also with a short last batch (run eagerly between replays) and with
    dropout (replays and eager steps draw from one generator, in order)."""
    net_g, hist_g = _fit(dtype, dropout=dropout, graph=True, n=n)
    net_e, hist_e = _fit(dtype, dropout=dropout, graph=False, n=n)
    assert hist_g.graph, f"capture refused: {hist_g.graph_note}"
    assert not hist_e.graph
    for rg, re_ in zip(hist_g.records, hist_e.records):
        _close(rg["loss"], re_["loss"], RTOL[dtype])
        _close(rg["train_loss"], re_["train_loss"], RTOL[dtype])
    for p, q in zip(net_g.params(), net_e.params()):
        _close(net_g.backend.to_numpy(p), net_e.backend.to_numpy(q), RTOL[dtype] * 10)


class _GraphSizes(nnx.Callback):
    """Notes the sizes of the graphs each fit recorded (at its end, before they go)."""

    def __init__(self):
        self.sizes = []

    def on_fit_end(self, run):
        self.sizes.append(set(run.steps.graphs))


@pytest.mark.parametrize("dropout", [1.0, 0.8])
def test_graphs_of_several_steps_train_like_the_loop(monkeypatch, dropout):
    """Steps recorded four to a graph, each fetching its batch by the device
    counter, train as the step-by-step loop does (10 full batches an epoch:
    graphs of four and of one, and a short batch eagerly); at the end the
    graphs go, and the network holds none of their arrays."""
    from nnx.train import trainer
    monkeypatch.setattr(trainer._Steps, "group", 4)
    seen = _GraphSizes()
    monkeypatch.setattr(trainer.Trainer, "__init__", _with_callback(trainer.Trainer.__init__,
                                                                     seen))
    net_g, hist_g = _fit("float64", dropout=dropout, graph=True, n=610)
    net_e, hist_e = _fit("float64", dropout=dropout, graph=False, n=610)
    assert hist_g.graph, f"capture refused: {hist_g.graph_note}"
    assert seen.sizes == [{1, 4}, set()]  # the recorded fit, then the step-by-step one
    assert net_g.layers[0].operations[0].output is None  # forgotten with the graphs
    for rg, re_ in zip(hist_g.records, hist_e.records):
        _close(rg["loss"], re_["loss"], RTOL["float64"])
        _close(rg["train_loss"], re_["train_loss"], RTOL["float64"])
    for p, q in zip(net_g.params(), net_e.params()):
        _close(net_g.backend.to_numpy(p), net_e.backend.to_numpy(q), RTOL["float64"] * 10)


def _with_callback(init, cb):
    def wrapped(self, net, optim, callbacks=()):
        init(self, net, optim, list(callbacks) + [cb])
    return wrapped


GPU_OPTIMISERS = {
    "adam-onecycle-clipped": lambda: nnx.Adam(nnx.OneCycle(0.01), clip_norm=0.5,
                                              weight_decay=0.01),
    "adamw-cosine-per-step": lambda: nnx.AdamW(nnx.Cosine(0.01, warmup=3, per="step")),
    "rmsprop-centred-momentum": lambda: nnx.RMSprop(0.001, momentum=0.5, centered=True),
    "rmsprop-plain": lambda: nnx.RMSprop(0.001, weight_decay=0.01),
    "adagrad": lambda: nnx.Adagrad(0.05, lr_decay=0.01, clip_norm=1.0),
    "nesterov": lambda: nnx.SGDMomentum(nnx.StepDecay(0.1, 2), nesterov=True,
                                        weight_decay=0.001),
}


@pytest.mark.parametrize("name", list(GPU_OPTIMISERS))
def test_every_optimiser_runs_in_the_captured_step_as_in_the_loop(name):
    """The fused update kernels read the rate, the per-step table and the step
    count from device arrays: one recorded step serves the whole run, and it
    trains as the step-by-step GPU loop and the CPU do (float64)."""
    make = GPU_OPTIMISERS[name]
    net_g, hist_g = _fit(graph=True, make_opt=make)
    net_e, hist_e = _fit(graph=False, make_opt=make)
    net_c, hist_c = _fit(backend="cpu", make_opt=make)
    assert hist_g.graph, f"capture refused: {hist_g.graph_note}"
    for rg, re_, rc in zip(hist_g.records, hist_e.records, hist_c.records):
        _close(rg["loss"], re_["loss"], 1e-10)
        _close(rg["loss"], rc["loss"], 1e-9)
    for p, q, c in zip(net_g.params(), net_e.params(), net_c.params()):
        _close(net_g.backend.to_numpy(p), net_e.backend.to_numpy(q), 1e-9)
        _close(net_g.backend.to_numpy(p), c, 1e-8)


def test_replays_draw_fresh_dropout_masks():
    b = get_backend("gpu")
    net = nnx.NeuralNetwork([nnx.Dense(64, "tanh", dropout=0.5), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0, backend="gpu")
    rng = np.random.default_rng(0)
    xb = net.as_input(rng.standard_normal((32, 8)))
    net.build(8)
    yb = net.as_target(rng.integers(0, 3, 32), 32)
    opt = nnx.SGD(0.01)
    opt.attach(net)
    net.train_step(xb, yb)
    opt.step()
    drop = net.layers[0].operations[-1]

    def step():
        loss = net.train_step(xb, yb)
        opt.step()
        return loss
    replay, _ = b.capture(step)
    masks = []
    for _ in range(3):
        replay()
        masks.append(b.to_numpy(drop.mask).copy())
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    for m in masks:
        assert 0.4 < (m != 0).mean() < 0.6


def test_no_device_to_host_copy_per_batch(monkeypatch):
    """Every epoch's steps (the gathers, the steps, eager and recorded, and
    the recording itself) run under CuPy's allow_synchronize(False), which
    raises on any implicit synchronisation (``float(x)``, ``if x:``,
    ``.get()``); the explicit reads through ``to_numpy`` happen only at
    evaluations, however many batches there are."""
    cupyx = pytest.importorskip("cupyx")
    if not hasattr(cupyx, "allow_synchronize"):
        pytest.skip("this CuPy has no cupyx.allow_synchronize")

    from nnx.backend.cupy_backend import CupyBackend
    from nnx.trainer import _Steps

    def no_sync(fn):
        def wrapper(*a, **k):
            with cupyx.allow_synchronize(False):
                return fn(*a, **k)
        return wrapper

    get_backend("gpu").capture(lambda: None)  # its one-off GEMM check reads back: do it now
    monkeypatch.setattr(_Steps, "epoch", no_sync(_Steps.epoch))
    monkeypatch.setattr(CupyBackend, "take_rows", no_sync(CupyBackend.take_rows))
    reads = {"n": 0}
    real = CupyBackend.to_numpy

    def counting(self, x):
        reads["n"] += 1
        return real(self, x)
    monkeypatch.setattr(CupyBackend, "to_numpy", counting)
    seen = []
    for n in (600, 2400):  # 10 and 40 batches per epoch
        for graph in (False, True):
            reads["n"] = 0
            _, hist = _fit("float32", dropout=0.8, graph=graph, n=n)
            assert hist.graph == graph, hist.graph_note  # the replayed path was the one checked
            seen.append(reads["n"])
    assert len(set(seen)) == 1, f"reads per fit differ with the batch count: {seen}"
    # two evaluations: the epoch losses, the evaluation loss, the parameters' finite check
    assert seen[0] == 2 * 3


def test_dropout_masks_and_optimizer_state_stay_on_the_device():
    import cupy
    net, _ = _fit("float32", dropout=0.8, epochs=2)
    assert all(isinstance(p, cupy.ndarray) for p in net.params())
    assert isinstance(net.grad_buffer, cupy.ndarray)
    X = net.as_input(np.random.default_rng(0).standard_normal((8, 20)))
    net.train_step(X, net.as_target(np.arange(8) % 5, 8))  # fit ended on an evaluation
    drop = net.layers[0].operations[-1]
    assert isinstance(drop.mask, cupy.ndarray) and drop.mask.dtype == cupy.float32



@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_gpu_fit_without_dropout_follows_the_cpu_fit(dtype):
    """The GPU drew each epoch's shuffle on its own generator, so a GPU run and
    a CPU run with one seed trained on differently ordered batches and ended
    with different weights. The order is now drawn on the host for every
    backend; what is left is rounding (cuBLAS and OpenBLAS sum in other orders)."""
    net_g, hist_g = _fit(dtype, backend="gpu", graph=True)
    net_c, hist_c = _fit(dtype, backend="cpu")
    assert hist_g.graph, f"capture refused: {hist_g.graph_note}"
    rtol = {"float64": 1e-8, "float32": 2e-3}[dtype]
    assert len(hist_g.records) == len(hist_c.records)
    for rg, rc in zip(hist_g.records, hist_c.records):
        _close(rg["loss"], rc["loss"], rtol)
    for p, q in zip(net_g.params(), net_c.params()):
        _close(net_g.backend.to_numpy(p), q, rtol)


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_float32_and_float64_drop_the_same_units(keep):
    """The fused kernel drew its uniforms in the compute dtype, so float32 and
    float64 runs with one seed dropped different units (the CPU draws in
    float64 in both dtypes, and so does the GPU now)."""
    masks = {}
    for dtype in ("float32", "float64"):
        b = get_backend("gpu", dtype)
        m = b.dropout_mask(b.generator(11), (64, 300), keep)
        assert m.dtype == np.dtype(dtype)
        masks[dtype] = b.to_numpy(m)
    np.testing.assert_array_equal(masks["float32"] == 0, masks["float64"] == 0)
    assert set(np.unique(masks["float64"])) == {0.0, 1.0 / keep}
    kept = np.count_nonzero(masks["float64"]) / masks["float64"].size
    assert abs(kept - keep) < 0.02  # 19,200 draws: the share kept is keep within 4 sigma


@pytest.mark.parametrize("name", list(GPU_OPTIMISERS))
def test_every_optimiser_in_float32_follows_the_cpu(name):
    """float32 too: the kernels' constants (1 - beta, 1 - alpha) are rounded
    from double once, as on the CPU, so the runs agree to float32 rounding."""
    make = GPU_OPTIMISERS[name]
    net_g, hist_g = _fit(dtype="float32", graph=True, make_opt=make)
    net_c, hist_c = _fit(dtype="float32", backend="cpu", make_opt=make)
    for rg, rc in zip(hist_g.records, hist_c.records):
        _close(rg["loss"], rc["loss"], RTOL["float32"])
    for p, c in zip(net_g.params(), net_c.params()):
        _close(net_g.backend.to_numpy(p), c, RTOL["float32"] * 10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_clip_factor_matches_the_cpu_and_keeps_nan(dtype):
    gpu, cpu = get_backend("gpu", dtype), get_backend("cpu", dtype)
    g = np.random.default_rng(0).standard_normal(1000)
    for grad, max_norm in ((g, 1.0), (g * 1e-3, 1.0), (np.where(np.arange(1000) == 7, np.nan, g),
                                                       1.0)):
        mine = float(gpu.to_numpy(gpu.clip_scale(gpu.asarray(grad), max_norm)))
        want = float(cpu.clip_scale(cpu.asarray(grad), max_norm))
        assert (np.isnan(mine) and np.isnan(want)) or mine == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------ reduced precision
# what each precision's products may differ from float32's, relative to the
# largest entry (TF32 may be off: gpu_check sets NVIDIA_TF32_OVERRIDE=0)
PRECISION_RTOL = {"tf32": 5e-3, "bfloat16": 3e-2, "float16": 5e-3}


@pytest.mark.parametrize("precision", list(PRECISION_RTOL))
def test_reduced_precision_products_eager_and_recorded(precision):
    """Tensor-core products (cuBLAS TF32 math, GemmEx with half operands)
    against the CPU's emulation, for the three layouts a layer uses, eagerly
    and inside a recorded graph; the GPU's operand rounding is the CPU's."""
    b = get_backend("gpu", "float32", precision)
    cpu = get_backend("cpu", "float32", precision)
    rng = np.random.default_rng(0)
    a, w = rng.standard_normal((64, 300)), rng.standard_normal((300, 50))
    g = rng.standard_normal((64, 50))
    ad, wd, gd = b.asarray(a), b.asarray(w), b.asarray(g)
    cases = [(ad, wd, a, w), (ad.T, gd, a.T, g), (gd, wd.T, g, w.T)]
    for x, y, hx, hy in cases:
        want = cpu.matmul(hx.astype(np.float32), hy.astype(np.float32))
        _close(b.to_numpy(b.matmul(x, y)), want, PRECISION_RTOL[precision])
    outs = [b.empty((x.shape[0], y.shape[1])) for x, y, _, _ in cases]
    replay, _ = b.capture(lambda: [b.matmul(x, y, out=o) for (x, y, _, _), o in
                                   zip(cases, outs)])
    replay()
    for (_, _, hx, hy), o in zip(cases, outs):
        want = cpu.matmul(hx.astype(np.float32), hy.astype(np.float32))
        _close(b.to_numpy(o), want, PRECISION_RTOL[precision])
    x = rng.standard_normal(5000).astype(np.float32) * 100
    np.testing.assert_array_equal(b.to_numpy(b.round_operand(b.asarray(x))),
                                  cpu.round_operand(x))


@pytest.mark.parametrize("precision", list(PRECISION_RTOL))
def test_each_precision_trains_in_the_captured_step_close_to_float32(precision):
    runs = {}
    for p in ("float32", precision):
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((600, 20)), rng.integers(0, 5, 600)
        net = nnx.NeuralNetwork([nnx.Dense(64, "tanh"), nnx.Dense(5, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=3, backend="gpu", precision=p)
        hist = nnx.Trainer(net, nnx.Adam(0.01)).fit(X, y, X[:100], y[:100], epochs=4,
                                                    eval_every=2, batch_size=60, seed=4)
        assert hist.graph, f"capture refused: {hist.graph_note}"
        runs[p] = (net, hist)
    h32, (nlow, hlow) = runs["float32"][1], runs[precision]
    for a, c in zip(hlow.records, h32.records):
        assert a["loss"] == pytest.approx(c["loss"], rel=0.03)
    if precision == "float16":
        scale, good = nlow.loss_scaler.state(nlow.backend)
        assert scale == 2.0 ** 16 and good == 4 * 10  # no overflow: every step counted


def test_a_float16_overflow_is_skipped_on_the_device_eagerly_and_recorded():
    """The update kernels skip the step when the unscale factor is negative:
    parameters, Adam's moments and step count stay; the scale halves."""
    from nnx.precision import LossScaler
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 20)), rng.integers(0, 5, 32)
    net = nnx.NeuralNetwork([nnx.Dense(64, "tanh"), nnx.Dense(5, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=3, backend="gpu",
                            precision="float16")
    net.loss_scaler = LossScaler(init_scale=2.0 ** 10)
    opt = nnx.Adam(0.01)
    opt.attach(net)
    b = net.backend
    xb, yb = net.as_input(X), net.as_target(y, 32)
    net.build(20)

    def step():
        net.train_step(xb, yb)
        opt.step()
    step()  # at 2**10 nothing overflows: the state exists now
    replay, _ = b.capture(step)
    for run in (step, replay):
        before = [b.to_numpy(net.param_buffer).copy()] + [
            b.to_numpy(s).copy() for s in opt.state.values()]
        t = int(b.to_numpy(opt._device["t"]))
        b.assign(net.loss_scaler.scale_of(b), 2.0 ** 40)  # overflows float16
        run()
        after = [b.to_numpy(net.param_buffer)] + [b.to_numpy(s) for s in opt.state.values()]
        for u, v in zip(before, after):
            np.testing.assert_array_equal(u, v)
        assert int(b.to_numpy(opt._device["t"])) == t
        assert net.loss_scaler.state(b) == (2.0 ** 39, 0)
        b.assign(net.loss_scaler.scale_of(b), 2.0 ** 10)
        run()  # and a step that fits is taken
        assert not np.array_equal(b.to_numpy(net.param_buffer), before[0])


@pytest.mark.parametrize("classes", [10, 300])  # the row kernel, and the general path
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_both_softmax_cross_entropy_paths_match_the_reference(classes, dtype):
    b = get_backend("gpu", dtype)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((64, classes)) * 10
    y = np.eye(classes)[rng.integers(0, classes, 64)]
    loss, grad = b.softmax_cross_entropy(b.asarray(z), b.asarray(y), 1e-7)
    ref_loss, ref_grad = Reference.softmax_cross_entropy(b, b.asarray(z), b.asarray(y), 1e-7)
    _close(b.to_numpy(loss), b.to_numpy(ref_loss), RTOL[dtype])
    _close(b.to_numpy(grad), b.to_numpy(ref_grad), RTOL[dtype])


def test_a_float16_network_refuses_device_inputs_beyond_its_range():
    """The range check of host inputs, on a CuPy array too (one reduction)."""
    net = nnx.NeuralNetwork([nnx.Dense(8, "relu"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0, backend="gpu", precision="float16")
    net.build(4)
    X = net.backend.asarray(np.random.default_rng(0).uniform(0, 1e5, (6, 4)))
    with pytest.raises(nnx.InputValueError, match=r"^X has magnitudes up to 9\d+"):
        net.predict_proba(X)
    assert np.isfinite(net.backend.to_numpy(net.predict_proba(X / 10))).all()


def test_cupy_tf32_is_said_and_does_not_turn_recording_off(monkeypatch, caplog):
    """With CUPY_TF32=1, CuPy's float32 products run on TF32: the one-off
    check of nnx's own GEMMs, which compared them with cupy.matmul at 1e-5,
    failed, and every capture of the process was refused without a word."""
    import cupy

    from nnx.backend.cupy_backend import CupyBackend
    monkeypatch.setenv("CUPY_TF32", "1")
    # CuPy reads CUPY_TF32 once, at its first float32 product: set what it read
    linalg = getattr(getattr(cupy, "_core", None), "_routines_linalg", None)
    before = None
    if linalg is not None and hasattr(linalg, "set_compute_type"):
        before = linalg.get_compute_type(np.float32)
        linalg.set_compute_type(np.float32, getattr(linalg, "COMPUTE_TYPE_TF32", 7))
    try:
        with caplog.at_level("WARNING", logger="nnx"):
            b = CupyBackend("float32")  # a fresh backend: its checks are its own
        assert "CUPY_TF32 is set" in caplog.text
        assert b._graphs.check(recorded=False) is True
        if before is not None:  # a real CuPy: the check inside a recorded graph too
            assert b._graphs.check(recorded=True) is True
    finally:
        if before is not None:
            linalg.set_compute_type(np.float32, before)


def test_a_loss_takes_targets_of_another_dtype_as_the_cpu_does():
    """CuPy refuses an array of another dtype than a kernel's T: softmax
    cross-entropy of float32 logits against float64 target rows raised a
    TypeError on the GPU where the CPU computes it."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 3)).astype(np.float32)
    target = np.eye(3)[[0, 1, 2, 0, 1]]
    gpu, cpu = get_backend("gpu", "float32"), get_backend("cpu", "float32")
    ce = nnx.SoftmaxCrossEntropy()
    got = float(ce.forward(gpu.asarray(logits), gpu.asarray(target, dtype="float64")))
    want = float(nnx.SoftmaxCrossEntropy().forward(cpu.asarray(logits), target))
    assert got == pytest.approx(want, rel=1e-6)
