"""Losses: finite-difference gradients, closed forms, the softmax overflow
traps, a loss used on its own, and the arguments they refuse."""

import warnings

import numpy as np
import pytest
from gradcheck import assert_grad_close, numeric_grad

import nnx
from nnx import MeanSquaredError, SigmoidCrossEntropy, SoftmaxCrossEntropy, get_backend


def one_hot(ids, n_classes):
    out = np.zeros((len(ids), n_classes))
    out[np.arange(len(ids)), ids] = 1.0
    return out


def ref_log_softmax(z):
    """log softmax in float64 by log-sum-exp, independent of nnx."""
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# --------------------------------------------------- finite-difference checks
@pytest.mark.parametrize("n_rows, n_cols", [(4, 3), (7, 1)])
def test_mse_gradient_matches_finite_differences(n_rows, n_cols):
    rng = np.random.default_rng(0)
    pred = rng.standard_normal((n_rows, n_cols))
    target = rng.standard_normal((n_rows, n_cols))
    loss = MeanSquaredError()
    value = loss.forward(pred, target)
    assert np.ndim(value) == 0
    analytic = np.array(loss.backward(), copy=True)
    numeric = numeric_grad(lambda: float(loss.forward(pred, target)), pred)
    assert_grad_close(analytic, numeric)


def test_softmax_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    logits = 2.0 * rng.standard_normal((6, 4))
    target = one_hot(rng.integers(0, 4, 6), 4)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, target)
    assert np.ndim(value) == 0
    p = np.exp(ref_log_softmax(logits))
    assert p.min() > 1e-6 and p.max() < 1 - 1e-6  # clipping inactive
    analytic = np.array(loss.backward(), copy=True)
    numeric = numeric_grad(lambda: float(loss.forward(logits, target)), logits)
    assert_grad_close(analytic, numeric)


# --------------------------------------------------------------- closed forms
def test_mse_closed_form():
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss = MeanSquaredError()
    value = float(loss.forward(pred, target))
    assert value == pytest.approx(np.sum((pred - target) ** 2) / 4, rel=1e-12)  # rows, not cells
    np.testing.assert_allclose(loss.backward(), 2.0 * (pred - target) / 4, rtol=1e-12)


def test_softmax_cross_entropy_is_the_categorical_form():
    """Trap #3: no -(1 - y) log(1 - p) terms; loss and gradient must agree."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 4))
    y = one_hot([0, 3, 1, 1, 2], 4)
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(logits, y))
    logp = ref_log_softmax(logits)
    p = np.exp(logp)
    categorical = -np.sum(y * logp) / 5
    binary = categorical - np.sum((1 - y) * np.log(1 - p)) / 5
    assert value == pytest.approx(categorical, rel=1e-10)
    assert value != pytest.approx(binary, rel=1e-3)
    np.testing.assert_allclose(loss.backward(), (p - y) / 5, rtol=1e-10, atol=1e-15)


def test_softmax_rows_sum_to_one_and_match_closed_form():
    rng = np.random.default_rng(4)
    logits = 3.0 * rng.standard_normal((8, 5))
    p = get_backend("cpu", "float64").softmax(logits)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    e = np.exp(logits)
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("low, high", [(-5.0, 5.0), (88.0, 100.0), (-1e4, 1e4)])
def test_softmax_rows_sum_to_one_without_overflow(dtype, low, high):
    """Trap #2: softmax without the row maximum overflows near logit 88 in float32."""
    logits = np.random.default_rng(5).uniform(low, high, (16, 10)).astype(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        p = get_backend("cpu", dtype).softmax(logits)
    assert p.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p, np.exp(ref_log_softmax(logits)), rtol=1e-4, atol=1e-7)


def test_softmax_cross_entropy_large_float32_logits_match_float64_reference():
    """Logits of 88-100 overflow exp in float32 unless the row maximum is subtracted."""
    rng = np.random.default_rng(6)
    logits = rng.uniform(88.0, 100.0, (8, 10)).astype(np.float32)
    y = one_hot(rng.integers(0, 10, 8), 10).astype(np.float32)
    loss = SoftmaxCrossEntropy()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        value = loss.forward(logits, y)
        grad = loss.backward()
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    logp = ref_log_softmax(logits)
    assert float(value) == pytest.approx(-np.sum(y * logp) / 8, rel=1e-4)
    np.testing.assert_allclose(grad, (np.exp(logp) - y) / 8, atol=1e-6)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["right", "wrong"])
def test_softmax_cross_entropy_extreme_float32_logits_stay_finite(sign):
    """Logits of +-1e4: the loss is clipped (finite), the gradient is (softmax - y)/n."""
    logits = np.full((4, 3), -1e4, dtype=np.float32)
    logits[:, 0] = 1e4
    y = one_hot([0, 0, 0, 0] if sign > 0 else [1, 2, 1, 2], 3).astype(np.float32)
    loss = SoftmaxCrossEntropy()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        value = float(loss.forward(logits, y))
        grad = loss.backward()
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    if sign > 0:
        assert value == pytest.approx(0.0, abs=1e-6)
    else:  # the target's probability is clipped at eps: loss is -log(eps)
        assert value == pytest.approx(-np.log(1e-9), rel=1e-4)
    softmax = one_hot([0, 0, 0, 0], 3)
    np.testing.assert_allclose(grad, (softmax - y) / 4, atol=1e-7)


@pytest.mark.parametrize("make_loss", [MeanSquaredError, SoftmaxCrossEntropy],
                         ids=["mse", "softmax_cross_entropy"])
def test_loss_on_every_backend_matches_host_reference(backend_name, make_loss):
    b = get_backend(backend_name, "float32")
    rng = np.random.default_rng(7)
    pred_host = rng.standard_normal((6, 4)).astype(np.float32)
    y_host = one_hot(rng.integers(0, 4, 6), 4).astype(np.float32)
    loss = make_loss()
    value = loss.forward(b.asarray(pred_host), b.asarray(y_host))
    grad = loss.backward()
    assert b.owns(grad)
    assert tuple(value.shape) == ()
    pred = pred_host.astype(np.float64)
    if make_loss is MeanSquaredError:
        ref, ref_grad = np.sum((pred - y_host) ** 2) / 6, 2 * (pred - y_host) / 6
    else:
        logp = ref_log_softmax(pred)
        ref, ref_grad = -np.sum(y_host * logp) / 6, (np.exp(logp) - y_host) / 6
    assert b.to_float(value) == pytest.approx(ref, rel=1e-5)
    np.testing.assert_allclose(b.to_numpy(grad), ref_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make_loss", [MeanSquaredError, SoftmaxCrossEntropy],
                         ids=["mse", "softmax_cross_entropy"])
def test_loss_value_is_a_0d_array_on_the_device(backend_name, make_loss):
    """The documented contract: a 0-d array of the prediction's backend, not a scalar."""
    b = get_backend(backend_name, "float32")
    pred = b.asarray(np.eye(3, dtype=np.float32))
    value = make_loss().forward(pred, b.asarray(np.eye(3, dtype=np.float32)[::-1].copy()))
    assert b.owns(value), f"loss value is a {type(value).__name__}, not a {b.name} array"
    assert tuple(value.shape) == ()
    assert str(value.dtype).endswith("float32")


# ------------------------------------------------------------ argument checks
@pytest.mark.parametrize("make_loss", [MeanSquaredError, SoftmaxCrossEntropy],
                         ids=["mse", "softmax_cross_entropy"])
def test_loss_rejects_target_of_another_shape(make_loss):
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        make_loss().forward(np.zeros((4, 3)), np.zeros((4, 2)))


@pytest.mark.parametrize("eps", [0.0, -1e-9, 0.5, 2.0])
def test_softmax_cross_entropy_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        SoftmaxCrossEntropy(eps=eps)


@pytest.mark.parametrize("eps", [None, "a", True, [1e-9]])
def test_softmax_eps_must_be_a_number(eps):
    from nnx import SoftmaxCrossEntropy
    with pytest.raises(TypeError, match="SoftmaxCrossEntropy eps must be a number"):
        SoftmaxCrossEntropy(eps)


def test_an_eps_that_float32_cannot_hold_is_refused():
    """eps=1e-50 is 0 in float32: the clip did nothing and log(0) gave an
    infinite loss (a spurious divergence inside fit)."""
    import nnx
    with pytest.raises(ValueError, match=r"eps=1e-50 is below the smallest normal float32"):
        nnx.NeuralNetwork([nnx.Dense(3, "linear")], SoftmaxCrossEntropy(1e-50))
    loss = SoftmaxCrossEntropy(1e-50)
    with pytest.raises(ValueError, match="eps=1e-50"):
        loss.forward(np.zeros((1, 3), np.float32), np.eye(3, dtype=np.float32)[:1])
    # float64 holds it, and the clip keeps the loss finite
    value = loss.forward(np.array([[0.0, -800.0, 0.0]]), one_hot([1], 3))
    assert np.isfinite(float(value)) and float(value) == pytest.approx(-np.log(1e-50))


# ------------------------------ a loss used on its own: its backend and dtype
def test_a_loss_used_on_its_own_computes_in_each_prediction_dtype():
    """A loss object first used on float32 kept the float32 backend, so a later
    float64 prediction came back as a float32 loss and gradient."""
    rng = np.random.default_rng(0)
    logits, y = rng.standard_normal((4, 3)), one_hot([0, 1, 2, 0], 3)
    fresh = SoftmaxCrossEntropy()
    expected = float(fresh.forward(logits, y))
    loss = SoftmaxCrossEntropy()
    loss.forward(logits.astype(np.float32), y.astype(np.float32))
    value = loss.forward(logits, y)
    assert value.dtype == np.float64 and loss.backward().dtype == np.float64
    assert float(value) == expected


def test_a_backend_set_by_hand_on_a_standalone_loss_is_kept():
    """With the loss following each prediction's dtype, a backend assigned by
    hand was silently replaced at the next forward."""
    from nnx import SoftmaxCrossEntropy, get_backend
    loss = SoftmaxCrossEntropy()
    loss.backend = get_backend("cpu", "float64")
    value = loss.forward(np.zeros((2, 3), np.float32), np.eye(3, dtype=np.float32)[:2])
    assert value.dtype == np.float64


# ------------------------------------ every backend's fused loss and gradient
@pytest.mark.parametrize("name", ["mean_squared_error", "softmax_cross_entropy",
                                  "sigmoid_cross_entropy"])
def test_every_backends_fused_loss_gradient_matches_finite_differences(backend_name, name):
    """Each backend computes loss and gradient together; the finite-difference
    checks above exercised only the CPU's, so halving the reference
    implementation's MSE gradient was caught only by a step of the ladder
    failing to train."""
    b = get_backend(backend_name, "float64")
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((5, 3))
    target = np.eye(3)[[0, 2, 1, 1, 0]] if name == "softmax_cross_entropy" else (
        rng.uniform(0, 1, (5, 3)) if name == "sigmoid_cross_entropy" else
        rng.standard_normal((5, 3)))
    args = (1e-12,) if name == "softmax_cross_entropy" else ()

    def value():
        return float(b.to_numpy(getattr(b, name)(b.asarray(pred), b.asarray(target), *args)[0]))

    _, grad = getattr(b, name)(b.asarray(pred), b.asarray(target), *args)
    assert_grad_close(b.to_numpy(grad), numeric_grad(value, pred))


def test_a_loss_of_ones_own_returning_a_value_per_row_is_named():
    """A _compute returning one loss per row failed deep in the trainer
    (non-broadcastable output operand) without naming the loss."""
    class PerRow(nnx.MeanSquaredError):
        def _compute(self):
            d = self.prediction - self.target
            return (d * d).mean(axis=1), 2 * d / d.size

    class Missing(nnx.losses.Loss):
        pass
    p, t = np.zeros((4, 2)), np.ones((4, 2))
    with pytest.raises(nnx.InputError, match=r"PerRow._compute\(\) returned a loss of shape "
                                             r"\(4,\); expected one number"):
        PerRow().forward(p, t)
    with pytest.raises(NotImplementedError, match=r"Missing defines no _compute\(\)"):
        Missing().forward(p, t)


# ----------------------------------------------------- sigmoid cross-entropy
def _ref_bce(z, y):
    """-sum(y log s + (1 - y) log(1 - s)) / rows in float64 by log-sigmoid
    (logaddexp), independent of nnx."""
    z = np.asarray(z, np.float64)
    return float(np.sum(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)) / z.shape[0])


@pytest.mark.parametrize("shape", [(6, 1), (5, 4)])
def test_sigmoid_cross_entropy_value_and_gradient(backend_name, shape):
    b = get_backend(backend_name, "float64")
    rng = np.random.default_rng(4)
    z = 3.0 * rng.standard_normal(shape)
    y = (rng.uniform(size=shape) > 0.5).astype(float)
    loss = SigmoidCrossEntropy()
    value = loss.forward(b.asarray(z), b.asarray(y))
    assert b.owns(value) and tuple(value.shape) == ()
    assert b.to_float(value) == pytest.approx(_ref_bce(z, y), rel=1e-12)
    numeric = numeric_grad(lambda: _ref_bce(z, y), z)
    assert_grad_close(b.to_numpy(loss.backward()), numeric)


def test_sigmoid_cross_entropy_is_torchs_bce_with_logits():
    from helpers import torch_or_skip
    torch = torch_or_skip()
    rng = np.random.default_rng(5)
    z = rng.normal(0, 4, (8, 3))
    y = rng.uniform(0, 1, (8, 3))  # soft targets too
    zt = torch.tensor(z, requires_grad=True)
    want = torch.nn.BCEWithLogitsLoss(reduction="sum")(zt, torch.tensor(y)) / 8
    want.backward()
    loss = SigmoidCrossEntropy()
    assert float(loss.forward(z, y)) == pytest.approx(float(want), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), zt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_cross_entropy_stays_finite_for_extreme_logits(dtype):
    """No clip: log(1 + exp(-|z|)) neither overflows nor loses a confident
    wrong answer (a loss of |z| where the clipped form would stop at -log eps)."""
    z = np.array([[1e4], [-1e4], [80.0], [-80.0]], dtype)
    y = np.array([[0.0], [1.0], [1.0], [0.0]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even an overflow warning
        loss = SigmoidCrossEntropy()
        value = float(loss.forward(z, y))
        grad = loss.backward()
    assert value == pytest.approx((1e4 + 1e4 + 2 * np.log1p(np.exp(-80.0))) / 4, rel=1e-6)
    np.testing.assert_allclose(grad[:, 0], [0.25, -0.25, 0.0, 0.0], atol=1e-7)


def test_a_binary_loss_of_ones_own_cuts_one_output_at_the_logits_zero():
    """threshold stayed 0.5 for a loss of one's own with binary = True:
    predict_classes cut its logits at 0.5 while predict_proba cut at 0."""
    class MyBCE(nnx.Loss):
        binary = True

        def _compute(self):
            return self.backend.sigmoid_cross_entropy(self.prediction, self.target)

    assert MyBCE().threshold == 0.0 and MeanSquaredError().threshold == 0.5
    net = nnx.NeuralNetwork([nnx.Dense(1, "linear")], MyBCE(), seed=0, dtype="float64")
    X = np.random.default_rng(0).standard_normal((200, 3))
    net.build(3)
    np.testing.assert_array_equal(nnx.predict_classes(net, X),
                                  net.predict_proba(X).argmax(axis=1))


@pytest.mark.parametrize("given, meant", [
    ("BinaryCrossentropy", "sigmoid_cross_entropy"), ("BCEWithLogitsLoss", "sigmoid_cross_entropy"),
    ("BCELoss", "sigmoid_cross_entropy"), ("bce", "sigmoid_cross_entropy"),
    ("mean_squared_error", "mse"), ("MSELoss", "mse"), ("MeanSquaredError", "mse"),
    ("CrossEntropyLoss", "softmax_cross_entropy"), ("SoftmaxCrossEntropy", "softmax_cross_entropy"),
    ("sparse_categorical_crossentropy", "softmax_cross_entropy")])
def test_other_libraries_loss_names_point_to_nnxs(given, meant):
    """Keras's BinaryCrossentropy was pointed to softmax_cross_entropy (the
    closest spelling); PyTorch's BCEWithLogitsLoss and mean_squared_error
    to nothing, though the docs say other libraries' names are pointed to."""
    with pytest.raises(nnx.InputValueError, match=rf"loss='{given}' is not known \(did you "
                                                  rf"mean '{meant}'\?\)"):
        nnx.NeuralNetwork([nnx.Dense(2, "linear")], given)


@pytest.mark.parametrize("given", ["mae", "RMSE", "HuberLoss", "huber"])
def test_a_loss_nnx_lacks_is_not_offered_as_a_misspelt_mse(given):
    """'mae', 'rmse' and the like got "did you mean 'mse'?": another loss."""
    with pytest.raises(nnx.InputValueError, match=rf"loss='{given}' is not known \(a loss nnx "
                                                  r"does not have\)"):
        nnx.NeuralNetwork([nnx.Dense(2, "linear")], given)
