"""Reduced-precision products (nnx.precision) on the CPU, which emulates
them: operand rounding against independent references (PyTorch's own
bfloat16 and float16 conversions, and a frexp formula for TF32), the
products, the settings' checks, and float16's dynamic loss scaling against
PyTorch's GradScaler and a plain-Python statement of its rule: skipped steps
leave everything unchanged, the scale backs off and grows, clipping sees the
unscaled gradient, checkpoints resume it exactly, and copies keep it."""

import copy
import math
import pickle
import warnings

import numpy as np
import pytest

import nnx
from nnx.backend import BackendUnavailableError, get_backend
from nnx.precision import LossScaler


def _values(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))
    # ties, the largest float32, the edges of float16's range, specials
    edge = [1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -11, 65504.0, 65520.0, 65519.0,
            6.1e-5, 5.9e-8, 3.4028235e38, 0.0, -0.0, np.inf, -np.inf]
    return np.concatenate([x, edge, [-v for v in edge]]).astype(np.float32)


def test_bfloat16_and_float16_rounding_match_pytorchs_conversions():
    torch = pytest.importorskip("torch")
    x = _values()
    for precision, kind in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        b = get_backend("cpu", "float32", precision)
        got = b.round_operand(x)
        want = torch.from_numpy(x).to(kind).to(torch.float32).numpy()
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=precision)
    nan = get_backend("cpu", "float32", "bfloat16").round_operand(np.array([np.nan], "f4"))
    assert np.isnan(nan[0])


def test_tf32_rounding_keeps_ten_mantissa_bits_to_nearest_even():
    x = _values()
    got = get_backend("cpu", "float32", "tf32").round_operand(x)
    finite = np.isfinite(x) & (np.abs(x) >= np.finfo(np.float32).tiny)
    m, e = np.frexp(x[finite].astype(np.float64))  # x = m 2**e, 0.5 <= |m| < 1
    want = np.ldexp(np.round(m * 2.0 ** 11) / 2.0 ** 11, e)  # 1 + 10 bits; round() ties to even
    with warnings.catch_warnings():  # the largest float32 rounds up to infinity, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        want = want.astype(np.float32)
    np.testing.assert_array_equal(got[finite], want)
    np.testing.assert_array_equal(got[~np.isfinite(x)], x[~np.isfinite(x)])


@pytest.mark.parametrize("precision", ["tf32", "bfloat16", "float16"])
def test_products_take_rounded_operands_and_accumulate_in_float32(precision):
    b = get_backend("cpu", "float32", precision)
    rng = np.random.default_rng(1)
    a, w = rng.standard_normal((33, 70)).astype("f4"), rng.standard_normal((70, 9)).astype("f4")
    want = b.round_operand(a).astype(np.float64) @ b.round_operand(w).astype(np.float64)
    for got in (b.matmul(a, w), b.matmul(a, w, out=np.empty((33, 9), "f4")),
                b.matmul(a.T.copy().T, w)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    exact = a.astype(np.float64) @ w.astype(np.float64)
    assert np.abs(b.matmul(a, w) - exact).max() > 1e-4  # the rounding shows
    np.testing.assert_array_equal(get_backend("cpu", "float32").matmul(a, w), a @ w)


def test_precision_settings_are_checked():
    X = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"precision='fp8' is not supported.*'tf32'"):
        nnx.NeuralNetwork([nnx.Dense(2)], "mse", precision="fp8")
    with pytest.raises(ValueError, match=r"precision='tf32' applies to float32 networks.*float64"):
        nnx.NeuralNetwork([nnx.Dense(2)], "mse", dtype="float64", precision="tf32")
    with pytest.raises(ValueError, match="differs from the precision"):
        nnx.NeuralNetwork([nnx.Dense(2)], "mse", backend=get_backend("cpu"), precision="float16")
    with pytest.raises(BackendUnavailableError, match="strict.*precision='bfloat16'"):
        get_backend("strict", "float32", "bfloat16")
    net = nnx.NeuralNetwork([nnx.Dense(2)], "mse", precision="bfloat16")
    assert net.backend.precision == "bfloat16" and net.loss_scaler is None
    assert nnx.NeuralNetwork([nnx.Dense(2)], "mse", precision="float16").loss_scaler is not None
    net.forward(X)
    assert net.describe()["precision"] == "bfloat16"
    for bad in (dict(init_scale=0), dict(growth_factor=1.0), dict(backoff_factor=1.0),
                dict(growth_interval=0)):
        with pytest.raises(ValueError, match=list(bad)[0]):
            LossScaler(**bad)


# ------------------------------------------------------------- loss scaling
def _rule(scale, good, skipped, growth=2.0, backoff=0.5, interval=3):
    """GradScaler's update, as its documentation states it."""
    if skipped:
        return scale * backoff, 0
    if good + 1 == interval:
        grown = scale * growth
        with np.errstate(over="ignore"):
            return (grown if math.isfinite(np.float32(grown)) else scale), 0  # in float32
    return scale, good + 1


def test_the_loss_scale_follows_gradscalers_rule():
    b = get_backend("cpu", "float32")
    scaler = LossScaler(init_scale=2.0 ** 120, growth_interval=3)
    pattern = [True, False, False, False, False, False, False, True, False] + [False] * 30
    scale, good = 2.0 ** 120, 0
    for skipped in pattern:
        factor = b.asarray(-1.0 if skipped else 0.25)
        scaler.after_step(b, factor)
        scale, good = _rule(scale, good, skipped)
        assert scaler.state(b) == (np.float32(scale), good)
    assert scaler.state(b)[0] == np.float32(2.0 ** 127)  # growth stops short of infinity


def test_the_loss_scale_matches_pytorchs_gradscaler():
    """The same gradients, overflowing on the same steps, through
    torch.amp.GradScaler (on the CPU) and nnx: the same scale at every step."""
    torch = pytest.importorskip("torch")
    try:
        scaler_t = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)
    except (AttributeError, TypeError, RuntimeError) as exc:
        pytest.skip(f"this PyTorch has no CPU GradScaler: {exc}")
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.1)
    b = get_backend("cpu", "float32")
    mine = LossScaler(init_scale=1024.0, growth_interval=2)
    for step, bad in enumerate([False, False, True, False, False, False, True, True, False]):
        g = np.array([1.0, -2.0, np.inf if bad else 0.5], "f4")
        opt.zero_grad()
        scaler_t.scale(torch.ones(()))  # what makes its scale; the gradient is set below
        p.grad = torch.from_numpy(g * np.float32(scaler_t.get_scale()))
        scaler_t.step(opt)
        scaler_t.update()
        grad = g * mine.scale_of(b)
        mine.after_step(b, b.unscale_factor(grad, mine.scale_of(b)))
        assert mine.state(b)[0] == scaler_t.get_scale(), step


def test_the_unscale_factor_is_the_inverse_scale_times_the_clip_of_the_true_gradient():
    b = get_backend("cpu", "float32")
    g = np.array([3.0, 4.0], "f4") * 256  # the true gradient (3, 4) scaled by 256
    S = np.asarray(np.float32(256))
    assert float(b.unscale_factor(g, S)) == 1 / 256
    assert float(b.unscale_factor(g, S, max_norm=1.0)) == pytest.approx((1 / 256) / 5, rel=1e-6)
    assert float(b.unscale_factor(g, S, max_norm=10.0)) == 1 / 256
    for bad in (np.inf, -np.inf, np.nan):
        assert float(b.unscale_factor(np.array([1.0, bad], "f4"), S, 1.0)) == -1.0


OPTIMISERS = {
    "sgd": lambda: nnx.SGD(0.1),
    "momentum": lambda: nnx.SGDMomentum(0.1, nesterov=True, weight_decay=0.01),
    "adam": lambda: nnx.Adam(0.01, clip_norm=1.0),
    "adamw": lambda: nnx.AdamW(nnx.Cosine(0.01, per="step"), weight_decay=0.1),
    "rmsprop": lambda: nnx.RMSprop(0.01, momentum=0.5, centered=True),
    "adagrad": lambda: nnx.Adagrad(0.05, lr_decay=0.01),
}


def _data(n=256):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 12)).astype("f4")
    return X, (X[:, :4] @ rng.standard_normal(4) > 0).astype(int) + 2 * (X[:, 5] > 0)


def _net(precision="float16", scaler=None, backend="cpu"):
    net = nnx.NeuralNetwork([nnx.Dense(32, "tanh"), nnx.Dense(4, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=3, backend=backend,
                            precision=precision)
    if scaler is not None:
        net.loss_scaler = scaler
    return net


@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_an_overflowing_step_changes_nothing_but_the_scale(name):
    """Scale 2**40 overflows float16 operands: the step is skipped (the
    parameters, every state buffer and the step count stay), the scale
    halves; at a scale that fits, the step is taken and is within float16's
    rounding of the float32 network's."""
    X, y = _data()
    net = _net(scaler=LossScaler(init_scale=2.0 ** 40))
    ref = _net("float32")
    opt, opt_ref = OPTIMISERS[name](), OPTIMISERS[name]()
    for o, n in ((opt, net), (opt_ref, ref)):
        o.attach(n)
        o.start(3, 1)
    b = net.backend
    net.train_batch(X, y)
    opt.step()  # the first step makes the state buffers: take it at a scale that fits
    before = [net.get_parameters()] + [s.copy() for s in opt.state.values()]
    t = int(opt._device["t"])
    b.assign(net.loss_scaler.scale_of(b), 2.0 ** 40)
    net.train_batch(X, y)
    assert not np.isfinite(net.grad_buffer).all()
    opt.step()
    after = [net.get_parameters()] + list(opt.state.values())
    for u, v in zip(before, after):
        np.testing.assert_array_equal(u, v)
    assert int(opt._device["t"]) == t and net.loss_scaler.state(b) == (2.0 ** 39, 0)


@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_float16_with_loss_scaling_trains_like_float32(name):
    """At a scale that never overflows, every step is taken: the run stays
    within float16's operand rounding of float32's. From one that does, the
    first steps are skipped and the scale backs off to where training goes on."""
    X, y = _data()
    runs = []
    for precision, init in (("float16", 2.0 ** 10), ("float32", None), ("float16", 2.0 ** 24)):
        net = _net(precision, scaler=LossScaler(init_scale=init, growth_interval=1000)
                   if init else None)
        hist = nnx.Trainer(net, OPTIMISERS[name]()).fit(X, y, X[:64], y[:64], epochs=4,
                                                        batch_size=32, seed=1)
        runs.append((net, hist))
    (half, h16), (full, h32), (late, h_late) = runs
    assert half.loss_scaler.state(half.backend) == (2.0 ** 10, 4 * 8)  # no step skipped
    for a, c in zip(h16.records, h32.records):
        assert a["loss"] == pytest.approx(c["loss"], rel=0.01)
    np.testing.assert_allclose(half.get_parameters(), full.get_parameters(), atol=0.01)
    scale, good = late.loss_scaler.state(late.backend)
    assert scale < 2.0 ** 24 and 0 < good < 4 * 8  # backed off, then counted good steps
    assert h_late.records[-1]["loss"] < h32.records[0]["loss"] * 1.5


def test_a_float16_run_resumes_exactly_with_its_loss_scale(tmp_path):
    X, y = _data()
    path = tmp_path / "run.npz"

    def fit(**kw):
        net = _net(scaler=LossScaler(init_scale=2.0 ** 22, growth_interval=3))
        hist = nnx.Trainer(net, nnx.Adam(0.01)).fit(X, y, X[:64], y[:64], epochs=4,
                                                    eval_every=1, batch_size=32, seed=1, **kw)
        return net, hist

    def stop(epoch, record):
        if epoch == 3:  # after the checkpoint of epoch 2
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint=path, checkpoint_every=1, callback=stop)
    resumed, h_r = fit(resume=path)
    whole, h_w = fit()
    assert h_r.records == h_w.records
    np.testing.assert_array_equal(resumed.get_parameters(), whole.get_parameters())
    assert resumed.loss_scaler.state(resumed.backend) == whole.loss_scaler.state(whole.backend)
    other = nnx.NeuralNetwork([nnx.Dense(32, "tanh"), nnx.Dense(4, "linear")],
                              nnx.SoftmaxCrossEntropy(), seed=3, precision="bfloat16")
    with pytest.raises(ValueError, match="precision 'float16' in the checkpoint but 'bfloat16' "
                                         "here"):
        nnx.Trainer(other, nnx.Adam(0.01)).fit(X, y, X[:64], y[:64], epochs=4, eval_every=1,
                                               batch_size=32, seed=1, resume=path)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_keep_the_precision_and_the_loss_scale(how):
    X, y = _data()
    net = _net(scaler=LossScaler(init_scale=2.0 ** 22, growth_interval=3))
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1, batch_size=32)
    twin = copy.deepcopy(net) if how == "deepcopy" else pickle.loads(pickle.dumps(net))
    assert twin.backend.precision == "float16"
    assert twin.loss_scaler.state(twin.backend) == net.loss_scaler.state(net.backend)
    assert twin.loss_scaler.growth_interval == 3
    np.testing.assert_array_equal(twin.predict_proba(X), net.predict_proba(X))


# ------------------------------------------------ found by a review of this work
def test_a_gradient_not_from_train_step_is_not_unscaled():
    """The float16 scale multiplies the gradient only in train_step, but every
    optimiser step divided by it: a loop of forward, backward(loss.backward())
    and step moved the weights 65536 times too little, silently."""
    X, y = _data(64)
    runs = []
    for precision in ("float16", "float32"):
        net = _net(precision)
        opt = nnx.SGD(0.1)
        opt.attach(net)
        start = None
        for _ in range(3):
            pred = net.forward(X)
            if start is None:
                start = net.get_parameters()
            net.loss.forward(pred, net.as_target(y, len(y)))
            net.backward(net.loss.backward())
            opt.step()
        runs.append(net.get_parameters() - start)
    np.testing.assert_allclose(runs[0], runs[1], rtol=0.02, atol=1e-4)
    assert np.abs(runs[0]).max() > 1e-3


def test_an_update_of_ones_own_is_skipped_where_the_kernels_skip_theirs():
    """On the GPU the built-in update kernels skip an overflowing step
    themselves, and the backend's skip did nothing else: an optimiser whose
    update is its own arithmetic stepped with an infinite gradient."""
    from nnx.backend.numpy_backend import NumpyBackend

    class KernelsSkip(NumpyBackend):  # the GPU backend's promise, on the CPU
        update_kernels_skip = True

    class MySGD(nnx.Optimizer):
        def _update(self, b, param, grad, scale):
            param -= self.lr * (grad * scale)

    X, y = _data(64)
    for opt in (MySGD(0.1), nnx.SGD(0.1)):
        net = _net(scaler=LossScaler(init_scale=2.0 ** 40))
        net.backend = KernelsSkip("float32", "float16")
        net.build(12)
        opt.attach(net)
        before = net.get_parameters()
        net.train_batch(X, y)
        with np.errstate(all="ignore"):
            opt.step()
        if isinstance(opt, MySGD):
            np.testing.assert_array_equal(net.get_parameters(), before)
        assert net.loss_scaler.state(net.backend)[0] == 2.0 ** 39


def test_load_takes_the_precision_to_go_on_training(tmp_path):
    X, y = _data()
    net = _net("bfloat16")
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1, batch_size=32)
    net.save(tmp_path / "m.npz")
    assert nnx.NeuralNetwork.load(tmp_path / "m.npz").backend.precision == "float32"
    again = nnx.NeuralNetwork.load(tmp_path / "m.npz", precision="bfloat16")
    assert again.backend.precision == "bfloat16"
    np.testing.assert_array_equal(again.predict_proba(X), net.predict_proba(X))
    with pytest.raises(ValueError, match="precision='tf32' applies to float32 networks"):
        nnx.NeuralNetwork.load(tmp_path / "m.npz", dtype="float64", precision="tf32")


def test_float16_refuses_inputs_beyond_its_range_and_says_why_a_run_diverged():
    """Inputs above 65504 are infinite as float16 operands: a fit said only
    "try a smaller learning rate", and a built network predicted NaN rows
    in silence. bfloat16 (float32's exponent range) takes them."""
    rng = np.random.default_rng(0)
    X, y = rng.uniform(0, 1e5, (60, 4)), rng.integers(0, 3, 60)

    def net(precision):
        n = nnx.NeuralNetwork([nnx.Dense(8, "relu"), nnx.Dense(3, "linear")],
                              nnx.SoftmaxCrossEntropy(), seed=0, precision=precision)
        n.build(4)
        return n
    half = net("float16")
    with pytest.raises(nnx.InputValueError, match=r"^X_train has magnitudes up to 9\d+(\.\d+)?, "
                                                  r"beyond float16's range \(largest 65504\)"):
        nnx.Trainer(half, nnx.Adam()).fit(X, y, epochs=1)
    with pytest.raises(nnx.InputValueError, match=r"^X has magnitudes up to"):
        half.predict_proba(X)
    assert np.isfinite(net("bfloat16").predict_proba(X)).all()
    import scipy.sparse as sp  # the stored values of sparse rows are the operands
    with pytest.raises(nnx.InputValueError, match=r"^X has magnitudes up to 70000"):
        half.predict_proba(sp.csr_matrix(np.array([[0, 7e4, 0, 1.0], [1, 0, 0, 0]])))
    assert np.isfinite(half.predict_proba(np.full((2, 4), 65510.0))).all()  # rounds to 65504

    Xs = rng.standard_normal((200, 4))  # in range, but a rate that overflows the outputs
    with warnings.catch_warnings(), pytest.raises(
            nnx.TrainingDiverged, match=r"precision='float16': a value beyond 65504 in a "
                                        r"matrix product's inputs"):
        warnings.simplefilter("ignore")  # the loss's own warnings on the way
        nnx.Trainer(net("float16"), nnx.SGD(1e4)).fit(Xs, rng.integers(0, 3, 200), epochs=3)


@pytest.mark.parametrize("init", [1e39, 1e-46, 1e-40, 1e38])
def test_a_loss_scale_float32_cannot_hold_is_refused(init):
    """1e39 became an infinite float32 scale (every step skipped, silently);
    1e-46 a zero one (its inverse infinite: NaN weights, blamed on the inputs)."""
    with pytest.raises(nnx.InputValueError, match=r"init_scale=.* must be from 2\*\*-126 to "
                                                  r"2\*\*126"):
        LossScaler(init_scale=init)
    LossScaler(init_scale=2.0 ** 126)


def test_float16_inputs_that_float32_rounds_to_65520_are_refused():
    """65519.999 passed the check (below 65520) and became 65520.0 in the
    float32 network, then infinite in float16: every step skipped, silently."""
    X = np.random.default_rng(0).standard_normal((20, 5))
    X[0, 0] = 65519.999
    net = _net()
    with pytest.raises(nnx.InputValueError, match="beyond float16's range"):
        nnx.Trainer(net, nnx.SGD(0.01)).fit(X, np.arange(20) % 4, epochs=1, batch_size=10)
    X[0, 0] = 65519.0  # float32 holds it: 65504 in float16
    nnx.Trainer(_net(), nnx.SGD(0.01)).fit(X, np.arange(20) % 4, epochs=1, batch_size=10)


def test_resume_refuses_a_loss_scaler_of_other_rules(tmp_path):
    """The scale and count came back, then followed the new scaler's rules."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)), np.arange(40) % 4
    path = tmp_path / "run.npz"
    kw = dict(epochs=4, eval_every=2, batch_size=10)

    def stop(epoch, record):
        if epoch == 3:  # after the checkpoint of epoch 2
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        nnx.Trainer(_net(), nnx.Adam(0.01)).fit(X, y, checkpoint=path, callback=stop, **kw)
    other = _net(scaler=LossScaler(growth_interval=10))
    with pytest.raises(nnx.InputValueError, match=r"written with the loss scaler "
                                                  r"LossScaler\(.*growth_interval=2000\), this "
                                                  r"network has LossScaler\(.*growth_interval=10"):
        nnx.Trainer(other, nnx.Adam(0.01)).fit(X, y, resume=path, **kw)
    nnx.Trainer(_net(), nnx.Adam(0.01)).fit(X, y, resume=path, **kw)
