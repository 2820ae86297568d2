"""Operations: finite-difference gradients, closed forms, shape checks,
dropout, and operations used on their own or written by a user."""

import math
import re
import warnings

import numpy as np
import pytest
from gradcheck import assert_grad_close, numeric_grad
from helpers import INF, N_OUT, N_ROWS, NAN, X0, good_data

import nnx
from nnx import (
    ELU,
    GELU,
    BiasAdd,
    Dense,
    Dropout,
    InputTypeError,
    InputValueError,
    LeakyReLU,
    Linear,
    NeuralNetwork,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Tanh,
    WeightMultiply,
    get_backend,
)
from nnx.ops import ACTIVATIONS


def smooth_x(rng):
    return 2.0 * rng.standard_normal((4, 5))


def away_from_zero(rng):
    """Inputs at least 0.1 away from the kink at 0."""
    return rng.choice([-1.0, 1.0], size=(4, 5)) * rng.uniform(0.1, 3.0, (4, 5))


def relu6_x(rng):
    """Inputs in each of ReLU6's three pieces, at least 0.1 away from 0 and 6."""
    pieces = [rng.uniform(-3.0, -0.1, 7), rng.uniform(0.1, 5.9, 7), rng.uniform(6.1, 9.0, 6)]
    return rng.permutation(np.concatenate(pieces)).reshape(4, 5)


def to_host(backend, x):
    return backend.to_numpy(x)


ACTIVATION_CASES = [
    ("linear", Linear, smooth_x),
    ("sigmoid", Sigmoid, smooth_x),
    ("tanh", Tanh, smooth_x),
    ("relu", ReLU, away_from_zero),
    ("leaky_relu_0.2", lambda: LeakyReLU(0.2), away_from_zero),
    ("leaky_relu_default", LeakyReLU, away_from_zero),
    ("relu6", ReLU6, relu6_x),
    ("gelu", GELU, smooth_x),
    ("gelu_tanh", lambda: GELU("tanh"), smooth_x),
    ("silu", SiLU, smooth_x),
    ("elu", ELU, away_from_zero),
    ("elu_0.5", lambda: ELU(0.5), away_from_zero),
]
_erf = np.vectorize(math.erf, otypes=[np.float64])


def reference_activation(name, x):
    """Closed forms written independently of nnx."""
    if name == "linear":
        return x
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.where(x > 0, x, 0.0)
    if name == "leaky_relu_0.2":
        return np.where(x > 0, x, 0.2 * x)
    if name == "leaky_relu_default":
        return np.where(x > 0, x, 0.01 * x)
    if name == "relu6":
        return np.minimum(np.maximum(x, 0.0), 6.0)
    if name == "gelu":
        return x * 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name == "elu":
        return np.where(x > 0, x, np.exp(x) - 1.0)
    if name == "elu_0.5":
        return np.where(x > 0, x, 0.5 * (np.exp(x) - 1.0))
    raise AssertionError(name)


# --------------------------------------------------- finite-difference checks
def check_input_grad(op, x, rng):
    out = op.forward(x)
    R = rng.standard_normal(out.shape)
    analytic = np.array(op.backward(R), copy=True)
    numeric = numeric_grad(lambda: float(np.sum(op.forward(x) * R)), x)
    assert_grad_close(analytic, numeric)


@pytest.mark.parametrize("name, make_op, make_x", ACTIVATION_CASES,
                         ids=[c[0] for c in ACTIVATION_CASES])
def test_activation_input_grad_matches_finite_differences(name, make_op, make_x):
    rng = np.random.default_rng(1)
    op = make_op()
    x = make_x(rng)
    assert x.dtype == np.float64
    check_input_grad(op, x, rng)
    assert op.backend is get_backend("cpu", "float64")


def test_weight_multiply_input_grad_matches_finite_differences():
    rng = np.random.default_rng(2)
    op = WeightMultiply(rng.standard_normal((5, 3)))
    check_input_grad(op, rng.standard_normal((4, 5)), rng)


def test_bias_add_input_grad_matches_finite_differences():
    rng = np.random.default_rng(3)
    op = BiasAdd(rng.standard_normal((1, 5)))
    check_input_grad(op, rng.standard_normal((4, 5)), rng)


@pytest.mark.parametrize("make_op, param_shape", [
    (WeightMultiply, (5, 3)),
    (BiasAdd, (1, 5)),
], ids=["weight_multiply", "bias_add"])
def test_param_grad_matches_finite_differences(make_op, param_shape):
    rng = np.random.default_rng(4)
    param = rng.standard_normal(param_shape)
    op = make_op(param)
    assert op.param is param
    x = rng.standard_normal((4, 5))
    out = op.forward(x)
    R = rng.standard_normal(out.shape)
    op.backward(R)
    analytic = np.array(op.param_grad, copy=True)
    numeric = numeric_grad(lambda: float(np.sum(op.forward(x) * R)), param)
    assert_grad_close(analytic, numeric)


def test_dropout_input_grad_matches_finite_differences_with_fixed_mask():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 7))
    op = Dropout(0.6)
    op.forward(x)  # one training pass draws the mask
    mask = op.mask
    assert mask is not None and np.any(mask == 0) and np.any(mask != 0)
    op._masked = lambda x: (x * mask, mask)
    check_input_grad(op, x, rng)


# --------------------------------------------------------------- closed forms
def test_weight_multiply_formulas():
    rng = np.random.default_rng(6)
    W, x = rng.standard_normal((5, 3)), rng.standard_normal((4, 5))
    g = rng.standard_normal((4, 3))
    op = WeightMultiply(W)
    np.testing.assert_allclose(op.forward(x), x @ W, rtol=1e-12)
    np.testing.assert_allclose(op.backward(g), g @ W.T, rtol=1e-12)
    np.testing.assert_allclose(op.param_grad, x.T @ g, rtol=1e-12)


def test_bias_add_param_grad_is_column_sum():
    rng = np.random.default_rng(7)
    B, x, g = rng.standard_normal((1, 5)), rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    op = BiasAdd(B)
    np.testing.assert_allclose(op.forward(x), x + B, rtol=1e-12)
    np.testing.assert_array_equal(op.backward(g), g)
    assert op.param_grad.shape == (1, 5)
    np.testing.assert_allclose(op.param_grad, g.sum(axis=0, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("shape", [(5,), (2, 5), (5, 1)])
def test_bias_add_needs_a_row(shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        BiasAdd(np.zeros(shape))


@pytest.mark.parametrize("name, make_op, make_x", ACTIVATION_CASES,
                         ids=[c[0] for c in ACTIVATION_CASES])
def test_activation_forward_matches_closed_form(backend_name, name, make_op, make_x):
    b = get_backend(backend_name, "float32")
    x_host = make_x(np.random.default_rng(8)).astype(np.float32)
    ref = reference_activation(name, x_host.astype(np.float64))
    op = make_op()
    out = op.forward(b.asarray(x_host))
    assert b.owns(out)
    assert str(out.dtype).endswith("float32")
    np.testing.assert_allclose(to_host(b, out), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_does_not_overflow(dtype):
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype=dtype)
    op = Sigmoid()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out = op.forward(x)
        grad = op.backward(np.ones_like(x))
    assert out.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-30)
    np.testing.assert_allclose(grad, [[0.0, 0.0, 0.25, 0.0, 0.0]], atol=1e-30)


def test_sigmoid_matches_closed_form_on_moderate_inputs():
    x = np.linspace(-8.0, 8.0, 41).reshape(1, -1)
    out = Sigmoid().forward(x)
    np.testing.assert_allclose(out, 1.0 / (1.0 + np.exp(-x)), rtol=1e-10)


def test_sigmoid_keeps_float32_relative_precision_on_negative_inputs():
    """sigmoid(x) for x in [-16, 16] is a normal float32 number; the default dtype
    must get it to float32 precision, not to an absolute 6e-8 (which is 0 at -18)."""
    x = np.linspace(-16.0, 16.0, 65, dtype=np.float32).reshape(1, -1)
    out = Sigmoid().forward(x)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=0)


def test_tanh_grad_formula():
    rng = np.random.default_rng(9)
    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    op = Tanh()
    op.forward(x)
    np.testing.assert_allclose(op.backward(g), g * (1.0 - np.tanh(x) ** 2), rtol=1e-12)


@pytest.mark.parametrize("make_op", [ReLU, LeakyReLU, ReLU6, Sigmoid, Tanh, Linear, GELU,
                                     lambda: GELU("tanh"), SiLU, ELU],
                         ids=["relu", "leaky_relu", "relu6", "sigmoid", "tanh", "linear", "gelu",
                              "gelu_tanh", "silu", "elu"])
def test_backward_does_not_modify_stored_input(backend_name, make_op):
    """Trap #8: the study's ReLU derivative helper overwrote its input."""
    b = get_backend(backend_name, "float32")
    x_host = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0, 7.0]], dtype=np.float32)
    expected = x_host.copy()  # asarray may hand back x_host itself on the CPU
    op = make_op()
    x = b.asarray(x_host)
    out = op.forward(x)
    out_before = to_host(b, out).copy()
    op.backward(b.asarray(np.full(x_host.shape, 5.0, dtype=np.float32)))
    np.testing.assert_array_equal(to_host(b, x), expected)
    np.testing.assert_array_equal(to_host(b, op.input_), expected)
    np.testing.assert_array_equal(to_host(b, op.output), out_before)


def test_relu_backward_values():
    x = np.array([[-2.0, -0.5, 0.5, 3.0]])
    g = np.array([[1.0, 2.0, 3.0, 4.0]])
    op = ReLU()
    op.forward(x)
    np.testing.assert_array_equal(op.backward(g), [[0.0, 0.0, 3.0, 4.0]])
    np.testing.assert_array_equal(x, [[-2.0, -0.5, 0.5, 3.0]])


@pytest.mark.parametrize("make_op, x, grad", [
    (ReLU, [0.0, 1e-30, -1e-30], [0.0, 1.0, 0.0]),
    (ReLU6, [0.0, 6.0, 1e-30, 5.999], [0.0, 0.0, 1.0, 1.0]),
])
def test_the_gradient_at_a_kink_is_zero(make_op, x, grad):
    """As the docstrings say: ReLU's gradient at 0 and ReLU6's at 0 and at 6
    are taken as 0 (a >= in place of > went unnoticed)."""
    op = make_op()
    op.forward(np.array([x]))
    np.testing.assert_array_equal(op.backward(np.ones((1, len(x)))), [grad])


# --------------------------------------------------------- GELU, SiLU and ELU
def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for any x


# name, operation, closed-form gradient d act / dx, written from the definitions
SMOOTH_GRADS = [
    ("gelu", GELU, lambda x: 0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * _phi(x)),
    ("gelu_tanh", lambda: GELU("tanh"), lambda x: (
        0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        + 0.5 * x * (1.0 - np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)) ** 2)
        * math.sqrt(2.0 / math.pi) * (1.0 + 3 * 0.044715 * x * x))),
    ("silu", SiLU, lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))),
    ("elu", ELU, lambda x: np.where(x > 0, 1.0, np.exp(x))),
    ("elu_0.5", lambda: ELU(0.5), lambda x: np.where(x > 0, 1.0, 0.5 * np.exp(x))),
]


@pytest.mark.parametrize("name, make_op, grad", SMOOTH_GRADS, ids=[c[0] for c in SMOOTH_GRADS])
def test_new_activations_match_closed_forms_in_float64(backend_name, name, make_op, grad):
    """Values and gradients on a fine grid over [-12, 12] (math.erf for Phi),
    to float64 rounding; at the far negative end GELU's value is 1 + erf(x)
    with erf(x) near -1, so it is compared to an absolute 1e-15 there."""
    b = get_backend(backend_name, "float64")
    x_host = np.linspace(-12.0, 12.0, 4801).reshape(1, -1)
    g_host = np.random.default_rng(0).standard_normal(x_host.shape)
    op = make_op()
    out = to_host(b, op.forward(b.asarray(x_host)))
    input_grad = to_host(b, op.backward(b.asarray(g_host)))
    np.testing.assert_allclose(out, reference_activation(name, x_host), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(input_grad, g_host * grad(x_host), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("x, value, slope", [
    (0.0, 0.0, 0.5), (1.0, 0.84134474606854294859, 1.0833154705876862984),
    (-1.0, -0.15865525393145705141, -0.083315470587686298383),
    (3.0, 2.9959503059051097164, 1.011945647204183927),
])
def test_gelu_values_at_known_points(x, value, slope):
    """``x Phi(x)`` and its slope ``Phi(x) + x phi(x)``, computed to 40 digits
    with mpmath."""
    op = GELU()
    out = op.forward(np.array([[x]]))
    np.testing.assert_allclose(out, [[value]], rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(op.backward(np.ones((1, 1))), [[slope]], rtol=1e-14)


def test_gelu_tanh_approximation_stays_close_to_the_exact_form():
    x = np.linspace(-6.0, 6.0, 1201).reshape(1, -1)
    exact, approx = GELU().forward(x), GELU("tanh").forward(x)
    assert 1e-5 < np.max(np.abs(exact - approx)) < 1e-3  # different, and close


def test_silu_and_elu_at_zero():
    x = np.zeros((1, 1))
    silu, elu = SiLU(), ELU(0.7)
    assert silu.forward(x)[0, 0] == 0.0 and silu.backward(np.ones((1, 1)))[0, 0] == 0.5
    assert elu.forward(x)[0, 0] == 0.0 and elu.backward(np.ones((1, 1)))[0, 0] == 0.7


def test_elu_keeps_relative_precision_near_zero():
    """alpha (exp(x) - 1) by expm1: 1e-10 keeps its digits (exp(x) - 1 has 7)."""
    out = ELU().forward(np.array([[-1e-10, -1e-300]]))
    np.testing.assert_allclose(out, [[-1e-10 + 5e-21, -1e-300]], rtol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make_op, low, high", [
    (GELU, (0.0, 0.0), (1.0, 1.0)),
    (lambda: GELU("tanh"), (0.0, 0.0), (1.0, 1.0)),
    (SiLU, (0.0, 0.0), (1.0, 1.0)),
    (lambda: ELU(0.5), (-0.5, 0.0), (1.0, 1.0)),
], ids=["gelu", "gelu_tanh", "silu", "elu"])
def test_new_activations_at_extreme_inputs(backend_name, dtype, make_op, low, high):
    """Up to the largest float: no overflow or invalid-value warning, no NaN;
    far left each tends to (value, slope) ``low``, far right to ``x`` with
    slope 1 (``high``). NaN stays NaN, as in the other activations."""
    b = get_backend(backend_name, dtype)
    big = float(np.finfo(dtype).max)
    x_host = np.array([[-big, -1e30, -1e6, -200.0, 200.0, 1e6, 1e30, big]], dtype=dtype)
    op = make_op()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out = to_host(b, op.forward(b.asarray(x_host)))
        grad = to_host(b, op.backward(b.asarray(np.ones_like(x_host))))
    assert out.dtype == grad.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))
    left, right = x_host < 0, x_host > 0
    np.testing.assert_allclose(out[left], low[0], atol=1e-30)
    np.testing.assert_allclose(grad[left], low[1], atol=1e-30)
    np.testing.assert_array_equal(out[right], x_host[right])
    np.testing.assert_array_equal(grad[right], high[1])
    nan = b.asarray(np.array([[np.nan, 1.0]], dtype=dtype))
    with np.errstate(invalid="ignore"):
        assert np.isnan(to_host(b, make_op().forward(nan))[0, 0])


@pytest.mark.parametrize("make, error, message", [
    (lambda: GELU("exact"), InputValueError, "GELU approximate='exact'"),
    (lambda: GELU(approximate=None), InputValueError, "GELU approximate=None"),
    (lambda: GELU(True), InputValueError, "GELU approximate=True"),
    (lambda: ELU(-1.0), InputValueError, "ELU alpha=-1.0 must be a number >= 0"),
    (lambda: ELU(float("nan")), InputValueError, "ELU alpha=nan"),
    (lambda: ELU(float("inf")), InputValueError, "ELU alpha=inf"),
    (lambda: ELU("1"), InputTypeError, "ELU alpha must be a number"),
])
def test_new_activations_refuse_bad_settings_naming_them(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_new_activations_are_registered_by_name():
    from nnx.ops import ACTIVATIONS, activation_setting, make_activation
    assert ACTIVATIONS["gelu"] is GELU and ACTIVATIONS["silu"] is SiLU
    assert ACTIVATIONS["elu"] is ELU
    for act in (GELU("tanh"), ELU(0.25), SiLU(), LeakyReLU(0.3), Tanh()):
        again = make_activation(act.name, activation_setting(act))
        assert type(again) is type(act) and vars(again) == vars(act)
    assert activation_setting(GELU()) == "none" and activation_setting(SiLU()) is None
    with pytest.raises(InputValueError, match="activation='swish'"):
        make_activation("swish")


# --------------------------------------------------------------- shape checks
@pytest.mark.parametrize("make_op", [
    lambda: WeightMultiply(np.ones((5, 3))),
    lambda: BiasAdd(np.ones((1, 5))),
    Sigmoid, Tanh, ReLU, Linear, LeakyReLU, ReLU6, GELU, SiLU, ELU, Dropout,
], ids=["weight_multiply", "bias_add", "sigmoid", "tanh", "relu", "linear", "leaky_relu",
        "relu6", "gelu", "silu", "elu", "dropout"])
def test_backward_rejects_wrongly_shaped_output_grad(make_op):
    op = make_op()
    out = op.forward(np.ones((4, 5)))
    bad = (out.shape[0], out.shape[1] + 1)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        op.backward(np.ones(bad))


@pytest.mark.parametrize("op, x, expected", [
    (lambda: WeightMultiply(np.ones((4, 3))), np.ones((2, 5)),
     r"WeightMultiply: an input of shape \(2, 5\) does not fit W of shape \(4, 3\); "
     r"expected \(rows, 4\)"),
    (lambda: WeightMultiply(np.ones((4, 3))), np.ones(4),
     r"WeightMultiply: an input of shape \(4,\)"),
    (lambda: BiasAdd(np.ones((1, 3))), np.ones((2, 5)),
     r"BiasAdd: an input of shape \(2, 5\) does not fit B of shape \(1, 3\); "
     r"expected \(rows, 3\)"),
])
def test_an_operation_names_an_input_of_the_wrong_width(op, x, expected):
    """A standalone WeightMultiply or BiasAdd passed NumPy's own matmul or
    broadcasting error through (or, for a 1-D input, an answer of the wrong
    shape)."""
    with pytest.raises(InputValueError, match=expected):
        op().forward(x)


# -------------------------------------------------------------------- dropout
def test_dropout_training_keeps_the_expected_fraction(backend_name):
    b = get_backend(backend_name, "float32")
    op = Dropout(0.8)
    out = to_host(b, op.forward(b.asarray(np.ones((1000, 1000), dtype=np.float32))))
    mask = to_host(b, op.mask)
    kept = out != 0
    frac = kept.mean()
    assert abs(frac - 0.8) < 0.01
    np.testing.assert_allclose(out[kept], 1.0 / 0.8, rtol=1e-6)  # survivors scaled
    np.testing.assert_array_equal(mask != 0, kept)
    assert abs(out.mean() - 1.0) < 0.01  # expected activation preserved


def test_dropout_is_identity_at_inference(backend_name):
    b = get_backend(backend_name, "float32")
    x_host = np.random.default_rng(10).standard_normal((50, 40)).astype(np.float32)
    op = Dropout(0.5)
    out = op.forward(b.asarray(x_host), inference=True)
    np.testing.assert_array_equal(to_host(b, out), x_host)
    g = np.random.default_rng(11).standard_normal((50, 40)).astype(np.float32)
    np.testing.assert_array_equal(to_host(b, op.backward(b.asarray(g))), g)


def test_dropout_keep_prob_one_is_identity_in_training():
    x = np.random.default_rng(12).standard_normal((20, 30)).astype(np.float32)
    np.testing.assert_array_equal(Dropout(1.0).forward(x), x)


def test_dropout_backward_uses_the_forward_mask(backend_name):
    b = get_backend(backend_name, "float32")
    rng = np.random.default_rng(13)
    x_host = rng.standard_normal((60, 50)).astype(np.float32)
    g_host = rng.standard_normal((60, 50)).astype(np.float32)
    op = Dropout(0.7)
    out = to_host(b, op.forward(b.asarray(x_host)))
    mask = to_host(b, op.mask)
    grad = to_host(b, op.backward(b.asarray(g_host)))
    np.testing.assert_array_equal(grad, g_host * mask)
    assert np.all(grad[mask == 0] == 0)
    assert np.all(out[mask == 0] == 0)
    assert np.any(mask == 0)
    np.testing.assert_allclose(out, x_host * mask, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_mask_has_the_compute_dtype(backend_name, dtype):
    b = get_backend(backend_name, dtype)
    op = Dropout(0.8)
    out = op.forward(b.asarray(np.ones((10, 10))))
    assert str(op.mask.dtype).endswith(dtype)
    assert str(out.dtype).endswith(dtype)
    assert b.owns(op.mask)


@pytest.mark.parametrize("keep_prob", [0, 0.0, -0.1, 1.5])
def test_dropout_rejects_keep_prob_outside_unit_interval(keep_prob):
    with pytest.raises(ValueError, match="keep_prob"):
        Dropout(keep_prob)


@pytest.mark.parametrize("keep_prob", ["0.8", None, [0.8]])
def test_dropout_rejects_non_numbers(keep_prob):
    with pytest.raises(TypeError, match="keep_prob"):
        Dropout(keep_prob)


KEEP_BAD_VALUES = [0, 0.0, -0.1, 1.5, NAN, INF]
KEEP_BAD_TYPES = ["0.5", None, [0.5], True]


@pytest.mark.parametrize("keep", KEEP_BAD_VALUES, ids=repr)
def test_dropout_keep_prob_outside_0_1_is_rejected(keep):
    """Dropout(keep_prob) and Dense(dropout=) must lie in (0, 1]."""
    with pytest.raises(ValueError, match=re.escape(f"keep_prob={keep!r}") + r".*\(0, 1\]"):
        Dropout(keep)
    with pytest.raises(ValueError, match=re.escape(f"dropout={keep!r}") + r".*\(0, 1\]"):
        Dense(3, dropout=keep)


@pytest.mark.parametrize("keep", KEEP_BAD_TYPES, ids=repr)
def test_dropout_keep_prob_that_is_not_a_number_is_rejected(keep):
    """Strings, None, lists and bools are not keep probabilities."""
    got = re.escape(f"must be a number, got {keep!r}")
    with pytest.raises(TypeError, match=r"keep_prob " + got):
        Dropout(keep)
    with pytest.raises(TypeError, match=r"dropout.*" + got):
        Dense(3, dropout=keep)


@pytest.mark.parametrize("rng", [0, __import__("random").Random(0), np.random.RandomState(0),
                                 np.random])
def test_dropout_refuses_an_rng_that_is_not_a_generator(rng):
    """Dropout(0.5, rng=0) failed at the first forward with AttributeError,
    and random.Random or a RandomState with a TypeError about keywords."""
    with pytest.raises(nnx.InputTypeError, match="Dropout rng must be a NumPy or CuPy Generator"):
        Dropout(0.5, rng=rng)
    Dropout(0.5, rng=np.random.default_rng(0)).forward(np.ones((2, 2)))


# ----------------------- an operation on its own, and a user's own operations
def test_a_parameter_gradient_kept_from_one_pass_is_not_overwritten_by_the_next():
    """An operation used on its own wrote each backward's parameter gradient
    into the array of the previous one, so a list of gradients collected pass
    by pass held the last one only."""
    rng = np.random.default_rng(0)
    X, G = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    for op in (WeightMultiply(rng.standard_normal((3, 2))), BiasAdd(rng.standard_normal((1, 2)))):
        x = X if isinstance(op, WeightMultiply) else G
        op.forward(x)
        op.backward(G)
        first, kept = op.param_grad, op.param_grad.copy()
        op.forward(2 * x)
        op.backward(3 * G)
        np.testing.assert_array_equal(first, kept)
        assert not np.array_equal(op.param_grad, kept)


def test_an_operation_used_on_its_own_follows_the_dtype_of_its_input():
    """A Dropout first used on float32 drew float32 masks for float64 inputs."""
    drop = Dropout(0.5)
    drop.forward(np.ones((4, 4), np.float32))
    out = drop.forward(np.ones((4, 4)))
    assert out.dtype == np.float64 and drop.mask.dtype == np.float64
    assert drop.backend is get_backend("cpu", "float64")


def test_an_operation_whose_init_skips_the_base_init_still_runs():
    """A user's operation that does not call Operation.__init__ failed on its
    first forward pass with an AttributeError about nnx's own bookkeeping."""
    from nnx import Operation

    class Square(Operation):
        def __init__(self):  # no super().__init__()
            self.scale = 1.0

        def _output(self, inference):
            return self.scale * self.input_ ** 2

        def _input_grad(self, output_grad):
            return 2 * self.scale * self.input_ * output_grad

    op = Square()
    np.testing.assert_array_equal(op.forward(np.full((2, 2), 3.0)), np.full((2, 2), 9.0))
    np.testing.assert_array_equal(op.backward(np.ones((2, 2))), np.full((2, 2), 6.0))


def test_a_custom_activation_keeps_attributes_named_like_pass_state():
    """Copies of an operation dropped every attribute called ``mask``, so a
    user's activation that keeps a fixed mask lost it inside Dense."""
    class Gate(ACTIVATIONS["linear"]):
        def __init__(self, mask):
            super().__init__()
            self.mask = mask

        def _output(self, inference):
            return self.input_ * self.mask

    net = NeuralNetwork([Dense(2, Gate(np.array([[1.0, 0.0]])))], "mse", seed=0)
    out = net.forward(X0[:3, :2])
    assert (out[:, 1] == 0).all()


def test_training_through_a_forward_only_activation_says_what_is_missing():
    """An activation with _output but no _input_grad is fine for inference;
    training through it raised a bare NotImplementedError()."""
    class Doubler(nnx.Operation):
        def _output(self, inference):
            return 2 * self.input_

    net = NeuralNetwork([Dense(3, Doubler()), Dense(N_OUT, "linear")], "mse", seed=0)
    X, _ = good_data()
    net.forward(X)  # inference works
    with pytest.raises(NotImplementedError, match="Doubler defines no _input_grad"):
        net.train_batch(X, np.zeros((N_ROWS, N_OUT)))
