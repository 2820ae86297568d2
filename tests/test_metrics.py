"""nnx.metrics: predict_classes and accuracy (whose labels and features are
checked as fit's are), the confusion matrix and its text form."""

import numpy as np
import pytest
from helpers import N_ROWS, NAN, ONE_HOT, Y0, on_device1, with_value

import nnx
from nnx import accuracy
from nnx.checkpoint import save_network
from nnx.metrics import confusion_matrix, format_confusion_matrix


# ----------------------------------------------- predict_classes and accuracy
def _binary_net(backend="cpu"):
    """A one-output sigmoid network with known weights: output = sigmoid(x0 - x1)."""
    net = nnx.NeuralNetwork([nnx.Dense(1, "sigmoid")], "mse", seed=0, backend=backend)
    net.build(2)
    net.set_parameters([1.0, -1.0, 0.0])  # W = (1, -1), B = 0
    return net


@pytest.mark.parametrize("backend", ["cpu", "strict"])
def test_a_one_output_network_predicts_class_one_above_one_half(backend):
    """predict_classes took the argmax of a single column, so a one-output
    network predicted class 0 for every row, and accuracy refused 0/1 labels."""
    net = _binary_net(backend)
    X = np.array([[2.0, 0.0], [0.0, 2.0], [0.5, 0.4], [0.4, 0.5], [0.3, 0.3]])
    # outputs sigmoid(2), sigmoid(-2), sigmoid(0.1), sigmoid(-0.1), sigmoid(0) = 0.5
    np.testing.assert_array_equal(nnx.predict_classes(net, X), [1, 0, 1, 0, 0])
    assert nnx.accuracy(net, X, np.array([1, 0, 1, 1, 0])) == pytest.approx(0.8)
    assert nnx.accuracy(net, X, np.array([[1], [0], [0], [0], [0]])) == pytest.approx(0.8)
    with pytest.raises(nnx.InputValueError, match=r"y holds values from 0 to 2.*0/1 labels"):
        nnx.accuracy(net, X, np.array([0, 1, 2, 0, 1]))


@pytest.mark.parametrize("y, exc, pattern", [
    (Y0[:5], ValueError, r"y has 5 rows but X has 12"),
    (np.r_[Y0[:-1], 3], ValueError, r"class ids must be in \[0, 2\].*to 3"),
    (np.r_[Y0[:-1], -1], ValueError, r"class ids must be in \[0, 2\].*-1"),
    (with_value(Y0, 0, 0.5), ValueError, r"integer"),
    (with_value(ONE_HOT, (0, 1), 1.0), ValueError, r"sum to one"),
    (Y0.astype(str), TypeError, r"y must hold numbers"),
    (np.array(1), (ValueError, TypeError), r"\by\b.*(scalar|shape|rows)"),
], ids=["rows", "label-3", "label-negative", "non-integer", "one-hot", "strings", "scalar"])
def test_accuracy_rejects_bad_labels(trained, y, exc, pattern):
    """accuracy checks its labels like fit does."""
    net, _, X, _ = trained
    with pytest.raises(exc, match=pattern):
        accuracy(net, X, y)
    assert 0.0 <= accuracy(net, X, Y0) <= 1.0


def test_accuracy_rejects_bad_features(trained):
    net, _, X, y = trained
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite"):
        accuracy(net, with_value(X, (0, 0), NAN), y)
    with pytest.raises(ValueError, match=r"X has 5 features, but the network was built for 4"):
        accuracy(net, np.ones((N_ROWS, 5)), y)


def test_arguments_in_the_wrong_order_are_named():
    """accuracy(X, net, y) failed deep inside with an AttributeError
    ('numpy.ndarray' object has no attribute 'require_built')."""
    X = np.zeros((3, 2))
    net = _binary_net()
    for call in (lambda: accuracy(X, net, [0, 1, 0]), lambda: nnx.predict_classes(X, net),
                 lambda: save_network(X, "never.npz")):
        with pytest.raises(nnx.InputTypeError, match="net must be a NeuralNetwork, got ndarray"):
            call()


def test_a_multilabel_network_has_no_single_accuracy():
    """accuracy of several sigmoid outputs complained that the 0/1 label rows
    were not one-hot, as if they were mistaken."""
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], nnx.SigmoidCrossEntropy(), seed=0)
    net.build(2)
    import pandas as pd
    for y in (np.array([[1, 0, 1]] * 4), pd.DataFrame([[1, 0, 1], [0, 0, 0]] * 2)):
        # a DataFrame was told its rows must be one-hot: the check skipped pandas
        with pytest.raises(nnx.InputValueError, match=r"y's rows are 0/1 labels, not one per row "
                                                      r"\(multilabel: several labels in a row, "
                                                      r"or none\), for this network's 3 sigmoid"):
            accuracy(net, np.zeros((4, 2)), y)
    # one-vs-rest (nnx train --loss sigmoid_cross_entropy on K classes): class ids and
    # one-hot rows are scored by the largest output, as they were
    X = np.array([[2.0, 0.0], [0.0, 2.0]])
    net.set_parameters([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # W (2x3), B (3)
    assert accuracy(net, X, [0, 1]) == 1.0 and accuracy(net, X, np.eye(3)[[0, 2]]) == 0.5


def test_array_on_another_device_is_rejected_by_accuracy(trained):
    """accuracy(net, X, y) with X or y on another device names the device."""
    net, _, X, y = trained
    with pytest.raises(ValueError, match=r"X is .*array_api_strict.* not on this network's device"):
        accuracy(net, on_device1(X), y)
    with pytest.raises(ValueError, match=r"y .*array_api_strict.*device"):
        accuracy(net, X, on_device1(y))


# ------------------------------------------------------- the confusion matrix
def test_confusion_matrix_closed_form():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.dtype == np.int64 and isinstance(cm, np.ndarray)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    # classes that never occur keep their rows and columns
    np.testing.assert_array_equal(confusion_matrix([3], [3], 5)[3], [0, 0, 0, 1, 0])
    assert confusion_matrix(np.zeros(0, np.int64), np.zeros(0, np.int64), 2).sum() == 0


def test_confusion_matrix_counts_like_a_loop():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 5000), rng.integers(0, 10, 5000).astype(np.uint8)
    expected = np.zeros((10, 10), np.int64)
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 10), expected)


@pytest.mark.parametrize("y_true, y_pred, n, error, message", [
    ([0, 1], [0], 2, ValueError, "y_true has 2 rows but y_pred 1"),
    ([0, 2], [0, 1], 2, ValueError, r"y_true holds class ids 0..2; expected ids in \[0, 2\)"),
    ([0, 1], [-1, 1], 2, ValueError, r"y_pred holds class ids -1..1"),
    ([0.0, 1.0], [0, 1], 2, TypeError, "y_true must hold integer class ids, got dtype float64"),
    ([[0, 1]], [[0, 1]], 2, ValueError, r"y_true must be 1-D class ids, got shape \(1, 2\)"),
    ([0], [0], 0, ValueError, "n_classes=0 must be a positive integer"),
    ([0], [0], True, TypeError, "n_classes=True must be a positive integer"),
])
def test_confusion_matrix_refuses_bad_input(y_true, y_pred, n, error, message):
    with pytest.raises(error, match=message):
        confusion_matrix(np.array(y_true), np.array(y_pred), n)


def test_the_text_form_is_what_nnx_evaluate_prints():
    cm = np.array([[5, 0], [12345, 1]])
    assert format_confusion_matrix(cm).splitlines() == [
        "confusion matrix (rows: true class, columns: predicted)",
        "           0     1",
        "    0      5     0",
        "    1  12345     1",
    ]
    wide = format_confusion_matrix(np.array([[1234567]]))  # columns widen for large counts
    assert wide.splitlines()[-1] == "    0  1234567"


@pytest.mark.parametrize("cm, error", [(np.zeros((2, 3), np.int64), ValueError),
                                       (np.zeros((0, 0), np.int64), ValueError),
                                       (np.zeros((2, 2)), TypeError)])
def test_the_text_form_refuses_what_is_not_a_confusion_matrix(cm, error):
    with pytest.raises(error, match="cm must"):
        format_confusion_matrix(cm)


def test_classes_of_a_diverged_network_are_refused_not_counted():
    """A hand-written loop with SGD(1e4) left NaN parameters; accuracy still
    came out as 0.099 (the argmax of NaN rows), with only NumPy's warnings."""
    import nnx
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                            "softmax_cross_entropy", seed=0)
    net.build(2)
    X, y = np.zeros((5, 2)), np.array([0, 1, 2, 0, 1])
    net.set_parameters(np.full(net.param_buffer.shape, np.nan, dtype=np.float32))
    for call in (lambda: nnx.metrics.accuracy(net, X, y),
                 lambda: nnx.metrics.predict_classes(net, X)):
        with pytest.raises(ValueError, match="outputs are NaN or infinite.*diverged"):
            call()


def test_accuracy_holds_a_chunk_of_outputs_at_a_time():
    """predict_classes kept every row's outputs, (rows, classes) in float32,
    and accuracy made class ids into float64 one-hot rows: 76 MiB at the peak
    for 20,000 rows of 500 classes, for 20,000 ids."""
    import tracemalloc
    net = nnx.NeuralNetwork([nnx.Dense(500, "linear")], nnx.SoftmaxCrossEntropy(), seed=0)
    net.build(2)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 2)).astype(np.float32)
    y = rng.integers(0, 500, 20000)
    W, B = (np.asarray(p) for p in net.params())
    want = float((np.argmax(X @ W + B, axis=1) == y).mean())
    tracemalloc.start()
    try:
        got = nnx.accuracy(net, X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == want
    assert peak < 12 * 2**20, peak  # a 1024-row chunk of outputs is 2 MiB


def test_accuracy_of_nullable_pandas_labels_with_a_gap_is_refused_in_words():
    import pandas as pd
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], nnx.SigmoidCrossEntropy(), seed=0)
    net.build(2)
    y = pd.DataFrame([[1, 0, 1], [0, None, 1]], dtype="Int64")
    with pytest.raises(nnx.InputError, match="y"):  # was pandas' 'boolean value of NA'
        accuracy(net, np.zeros((2, 2)), y)
