"""Weight initialisation: Glorot's variance (trap #1) and one generator per network (trap #5)."""

import numpy as np
import pytest

from nnx import (
    SGD,
    Dense,
    MeanSquaredError,
    NeuralNetwork,
    SoftmaxCrossEntropy,
    Trainer,
    get_backend,
)
from nnx.init import glorot_std, he_std, standard_std


def weight_variance(weight_init, n_in=1000, n_out=1000):
    layer = Dense(n_out, "tanh", weight_init=weight_init)
    layer.setup(n_in, get_backend("cpu", "float64"), np.random.default_rng(0))
    W = next(layer.params())
    assert W.shape == (n_in, n_out)
    return float(np.var(W)), float(np.mean(W))


@pytest.mark.parametrize("weight_init, expected", [
    ("glorot", 2.0 / (1000 + 1000)),
    ("he", 2.0 / 1000),
    ("standard", 1.0),
])
def test_weight_variance(weight_init, expected):
    """Trap #1: the study passed Glorot's variance 2/(n_in+n_out) as the std."""
    var, mean = weight_variance(weight_init)
    assert abs(var / expected - 1.0) < 0.05, f"variance {var:.3g}, expected {expected:.3g}"
    assert abs(mean) < 5 * np.sqrt(expected / 1e6)


def test_glorot_variance_depends_on_both_widths():
    var, _ = weight_variance("glorot", n_in=1000, n_out=250)
    assert abs(var / (2.0 / 1250) - 1.0) < 0.05


def test_glorot_variance_inside_a_network():
    net = NeuralNetwork([Dense(1000, "tanh", weight_init="glorot"), Dense(10, "linear")],
                        SoftmaxCrossEntropy(), seed=0)
    net.build(1000)
    W1, _, W2, _ = (net.backend.to_numpy(p).astype(np.float64) for p in net.params())
    assert W1.shape == (1000, 1000) and W2.shape == (1000, 10)
    assert abs(np.var(W1) / 0.001 - 1.0) < 0.05
    assert abs(np.var(W2) / (2.0 / 1010) - 1.0) < 0.05


@pytest.mark.parametrize("n_in, n_out", [(784, 89), (89, 10), (1, 1)])
def test_std_functions_closed_forms(n_in, n_out):
    assert glorot_std(n_in, n_out) ** 2 == pytest.approx(2.0 / (n_in + n_out), rel=1e-12)
    assert he_std(n_in, n_out) ** 2 == pytest.approx(2.0 / n_in, rel=1e-12)
    assert standard_std(n_in, n_out) == 1.0


def test_unknown_weight_init_lists_the_valid_names():
    with pytest.raises(ValueError, match="xavier") as info:
        Dense(3, weight_init="xavier")
    for name in ("glorot", "he", "standard"):
        assert repr(name) in str(info.value)


# --------------------------------------------- one generator per network (trap #5)

def equal_width_net(seed=0):
    layers = [Dense(20, "tanh"), Dense(20, "tanh"), Dense(3, "linear")]
    return NeuralNetwork(layers, SoftmaxCrossEntropy(), seed=seed)


def weights(net):
    return [net.backend.to_numpy(p).copy() for p in net.params()]


def test_equal_shaped_layers_start_with_different_weights():
    net = equal_width_net()
    net.build(20)
    W1, B1, W2, B2, W3, _ = weights(net)
    assert W1.shape == W2.shape == (20, 20)
    assert not np.allclose(W1, W2)
    assert not np.allclose(B1, B2)
    assert not np.allclose(W1[:, :3], W3)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = equal_width_net(1), equal_width_net(1), equal_width_net(2)
    for net in (a, b, c):
        net.build(20)
    for wa, wb, wc in zip(weights(a), weights(b), weights(c), strict=True):
        np.testing.assert_array_equal(wa, wb)
        assert not np.allclose(wa, wc)


def test_building_and_training_leave_numpys_global_random_state_alone():
    state = np.random.get_state()
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((40, 20)), rng.integers(0, 3, 40)

    net = NeuralNetwork([Dense(20, "tanh", dropout=0.8), Dense(20, "tanh"), Dense(3, "linear")],
                        SoftmaxCrossEntropy(), seed=5)
    net.build(20)
    float(net.train_batch(X, y))
    Trainer(net, SGD(0.1)).fit(X, y, X, y, epochs=2, eval_every=1, batch_size=8, seed=4)
    NeuralNetwork([Dense(4), Dense(1, "linear")], MeanSquaredError()).forward(X)  # seed=None

    after = np.random.get_state()
    assert after[0] == state[0]
    np.testing.assert_array_equal(after[1], state[1])
    assert after[2:] == state[2:]


@pytest.mark.parametrize("weight_init, expected", [("glorot", 2.0 / (10 + 100_000)),
                                                   ("he", 2.0 / 10), ("standard", 1.0)])
def test_biases_are_drawn_with_the_weights_scale(weight_init, expected):
    """As in the study, the bias gets the weights' std (not a unit normal)."""
    net = NeuralNetwork([Dense(100_000, "tanh", weight_init=weight_init)],
                        "mse", seed=0, dtype="float64")
    net.build(10)
    _, B = net.params()
    assert abs(float(np.var(B)) / expected - 1.0) < 0.05
