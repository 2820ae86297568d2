"""Runs that are likely wrong say so: raw (unstandardised) inputs and a
squashing output activation in front of softmax cross-entropy."""

import warnings

import numpy as np
import pytest

import nnx


def _data(scale=1.0, shift=0.0, n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 8))
    return X * scale + shift, (X[:, 0] > 0).astype(int)


def _net(output="linear"):
    return nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(2, output)],
                             nnx.SoftmaxCrossEntropy(), seed=0)


@pytest.mark.parametrize("scale, shift", [(80.0, 0.0), (1.0, 130.0)])
def test_raw_inputs_warn_with_the_measured_spread_and_the_fix(scale, shift):
    X, y = _data(scale, shift)
    with pytest.warns(nnx.InputWarning, match="X_train is far from standardised") as caught:
        nnx.Trainer(_net(), nnx.SGD(0.01)).fit(X, y, epochs=1)
    message = str(caught[0].message)
    assert "standardize_with" in message and "StandardScaler" in message
    assert caught[0].filename == __file__  # points at the caller's fit(), not into nnx


def test_standardised_and_unit_range_inputs_do_not_warn():
    for X, y in (_data(), _data(0.3, 0.5)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            nnx.Trainer(_net(), nnx.SGD(0.01)).fit(X, y, epochs=1)


@pytest.mark.parametrize("output", ["sigmoid", "tanh", "relu"])
def test_a_squashing_output_before_softmax_cross_entropy_warns(output):
    with pytest.warns(nnx.InputWarning, match="give the last layer a linear activation"):
        _net(output)


def test_a_linear_output_or_a_sigmoid_with_mse_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _net("linear")
        nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(2, "sigmoid")], "mse", seed=0)
