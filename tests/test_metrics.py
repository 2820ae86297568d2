"""nnx.metrics: the confusion matrix and its text form (accuracy and
predict_classes are covered with the network in test_network and
test_validation)."""

import numpy as np
import pytest

from nnx.metrics import confusion_matrix, format_confusion_matrix


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
    ([0], [0], True, ValueError, "n_classes=True must be a positive integer"),
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
