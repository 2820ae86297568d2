"""What a newcomer meets first: a summary of the network, class
probabilities, the arrays saved beside a checkpoint, suggestions for
misspelt names, refusal classes under their public names."""

import re

import numpy as np
import pytest
from reference import softmax

import nnx


def _net(seed=0, **kw):
    return nnx.NeuralNetwork([nnx.Dense(7, "tanh", dropout=0.8), nnx.Dense(3, "linear")],
                             nnx.SoftmaxCrossEntropy(), seed=seed, **kw)


def test_summary_lists_layers_shapes_and_parameter_counts():
    net = _net()
    text = net.summary()
    assert "not built yet" in text and "input: (rows, ?)" in text
    net.build(5)
    text = str(net)  # print(net) shows the summary
    assert text == net.summary()
    assert "input: (rows, 5)" in text
    assert re.search(r"1 Dense\s+7\s+Tanh\s+keep 0.8\s+\(rows, 7\)\s+42\b", text)
    assert re.search(r"2 Dense\s+3\s+Linear\s+-\s+\(rows, 3\)\s+24\b", text)
    total = sum(int(np.prod(p.shape)) for p in net.params())
    assert f"parameters: {total:,}" in text and total == 66
    assert repr(net).startswith("NeuralNetwork([Dense(7")  # repr stays the constructor call


def test_predict_proba_is_the_softmax_of_the_outputs():
    net = _net(dtype="float64")
    X = np.random.default_rng(0).standard_normal((11, 5))
    net.build(5)
    proba = net.predict_proba(X)
    np.testing.assert_allclose(proba, softmax(net.predict(X)), rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (proba.argmax(axis=1) == nnx.predict_classes(net, X)).all()


def test_predict_proba_of_a_one_output_network_and_its_refusal():
    one = nnx.NeuralNetwork([nnx.Dense(1, "sigmoid")], "mse", seed=0, dtype="float64")
    X = np.random.default_rng(1).standard_normal((6, 4))
    one.build(4)
    p = one.predict(X)[:, 0]
    np.testing.assert_allclose(one.predict_proba(X), np.stack([1 - p, p], axis=1), rtol=1e-12)
    two = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    two.build(4)
    with pytest.raises(ValueError, match="predict_proba needs a classification loss"):
        two.predict_proba(X)


def test_load_gives_back_the_extra_arrays_by_name(tmp_path):
    net = _net()
    net.build(5)
    mean, std = np.arange(5.0), np.ones(5)
    net.save(tmp_path / "m.npz", extra={"x_mean": mean, "x_std": std}, meta={"note": "hi"})
    back = nnx.NeuralNetwork.load(tmp_path / "m.npz")
    assert sorted(back.checkpoint_extra) == ["x_mean", "x_std"]  # not the parameters
    np.testing.assert_array_equal(back.checkpoint_extra["x_mean"], mean)
    assert back.checkpoint_meta == {"note": "hi"}


@pytest.mark.parametrize("make, suggestion", [
    (lambda: nnx.Dense(3, "tahn"), "'tanh'"),
    (lambda: nnx.Dense(3, "Relu"), "'relu'"),
    (lambda: nnx.NeuralNetwork([nnx.Dense(2, "linear")], "softmax_crossentropy"),
     "'softmax_cross_entropy'"),
    (lambda: nnx.get_backend("GPU"), "'gpu'"),
    (lambda: nnx.Dense(3, weight_init="glorrot"), "'glorot'"),
])
def test_a_misspelt_name_gets_a_suggestion(make, suggestion):
    with pytest.raises(ValueError, match=re.escape(f"(did you mean {suggestion}?)")):
        make()


def test_a_name_far_from_every_choice_gets_no_guess():
    with pytest.raises(ValueError) as err:
        nnx.Dense(3, "quux")
    assert "did you mean" not in str(err.value) and "expected one of" in str(err.value)


def test_refusals_show_their_public_names():
    assert nnx.InputValueError.__module__ == "nnx"
    assert f"{nnx.InputTypeError.__module__}.{nnx.InputTypeError.__qualname__}" == \
        "nnx.InputTypeError"
    with pytest.raises(nnx.InputValueError) as err:
        nnx.Dense(0)
    assert err.type.__module__ == "nnx"
