"""Copies of a network: ``copy.deepcopy`` and ``pickle`` give a network with
layers and flat buffers of its own that predicts and goes on training exactly
as the original does."""

import copy
import pickle

import numpy as np
import pytest

import nnx
from nnx.backend import get_backend


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 7)), rng.integers(0, 3, 40)


def _trained(backend_name, dtype="float64"):
    X, y = _data()
    net = nnx.NeuralNetwork([nnx.Dense(9, nnx.LeakyReLU(0.2), dropout=0.7),
                             nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=5,
                            backend=backend_name, dtype=dtype)
    nnx.Trainer(net, nnx.SGDMomentum(0.1, momentum=0.9)).fit(X, y, epochs=2, batch_size=8,
                                                            seed=1)
    return net


COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda net: pickle.loads(pickle.dumps(net))}


@pytest.mark.parametrize("how", list(COPIES))
def test_a_copy_predicts_and_trains_on_exactly_like_the_original(backend_name, how):
    X, y = _data()
    net = _trained(backend_name)
    twin = COPIES[how](net)
    b = net.backend
    assert twin.backend is b and twin.seed == net.seed and twin.n_in == net.n_in
    assert all(t is not o for t, o in zip(twin.layers, net.layers))
    np.testing.assert_array_equal(b.to_numpy(twin.predict(X)), b.to_numpy(net.predict(X)))
    # one more step with dropout on each: the same mask (generator state copied)
    # and the same update; on the GPU the copy's dropout stream is a fresh one
    steps = []
    for model in (net, twin):
        optim = nnx.SGD(0.3)
        optim.attach(model)
        loss = float(model.train_batch(X, y))
        optim.step()
        steps.append((loss, b.to_numpy(model.get_parameters())))
    if backend_name != "gpu":
        assert steps[0][0] == steps[1][0]
        np.testing.assert_array_equal(steps[0][1], steps[1][1])


def test_a_copy_trains_its_own_parameters_only():
    X, y = _data()
    net = _trained("cpu")
    twin = copy.deepcopy(net)
    before = net.get_parameters()
    nnx.Trainer(twin, nnx.SGD(0.5)).fit(X, y, epochs=1, batch_size=8, restart=False)
    np.testing.assert_array_equal(net.get_parameters(), before)
    assert not np.array_equal(twin.get_parameters(), before)
    # the copy's layers are views into the copy's own flat buffers
    for op in (op for layer in twin.layers for op in layer.operations if hasattr(op, "param")):
        assert np.shares_memory(op.param, twin.param_buffer)
        assert np.shares_memory(op.param_grad, twin.grad_buffer)
        assert not np.shares_memory(op.param, net.param_buffer)


def test_a_copy_of_an_unbuilt_network_draws_the_same_initial_weights():
    net = nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(2, "linear")], "mse", seed=9)
    twin = copy.deepcopy(net)
    net.build(4)
    twin.build(4)
    np.testing.assert_array_equal(twin.get_parameters(), net.get_parameters())


def test_a_float32_copy_stays_float32():
    net = _trained("cpu", "float32")
    twin = pickle.loads(pickle.dumps(net))
    assert twin.backend.dtype_name == "float32" and twin.get_parameters().dtype == np.float32
    np.testing.assert_array_equal(twin.get_parameters(), net.get_parameters())


def test_a_pickle_holds_settings_and_parameters_not_the_last_batch():
    net = _trained("cpu")
    big = np.zeros((20_000, 7))
    net.predict(big, batch_size=50_000)  # leaves a 20000-row batch in every operation
    net.loss.forward(net.forward(big[:10_000]), net.as_target(np.zeros(10_000, int), 10_000))
    assert len(pickle.dumps(net)) < 20_000  # 20000 x 9 float64 alone would be 1.4 MB


def test_a_copied_layer_belongs_to_no_network_and_keeps_its_weights():
    net = _trained("cpu")
    layer = copy.deepcopy(net.layers[0])
    np.testing.assert_array_equal(layer.operations[0].param, net.layers[0].operations[0].param)
    assert not np.shares_memory(layer.operations[0].param, net.param_buffer)
    nnx.NeuralNetwork([layer, nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=1)


class Tagged(nnx.NeuralNetwork):  # at module level, where pickle can find it
    def __init__(self, tag):
        super().__init__([nnx.Dense(3, "linear")], "mse", seed=1)
        self.tag = tag


def test_a_copy_keeps_the_class_and_what_load_or_a_subclass_added(tmp_path):
    """A copy was always a plain NeuralNetwork: a loaded network lost
    checkpoint_meta/checkpoint_extra, and a subclass its type and attributes."""
    net = _trained("cpu")
    path = net.save(tmp_path / "m.npz", meta={"dataset": "digits"},
                    extra={"x_mean": np.zeros(4)})
    loaded = copy.deepcopy(nnx.NeuralNetwork.load(path))
    assert loaded.checkpoint_meta == {"dataset": "digits"} and "x_mean" in loaded.checkpoint_extra
    twin = pickle.loads(pickle.dumps(Tagged("run-7")))
    assert type(twin) is Tagged and twin.tag == "run-7"


def test_a_backend_pickles_by_name_and_dtype():
    b = get_backend("cpu", "float64")
    assert pickle.loads(pickle.dumps(b)) is b and copy.deepcopy(b) is b
