"""Evaluation helpers."""

from __future__ import annotations

from ._checks import InputValueError
from .backend import host


def predict_classes(net, X, batch_size=4096):
    """Predicted class id of each row of ``X``, as a NumPy array on the host:
    the output with the largest value or, for a network with one output (a
    sigmoid trained on 0/1 targets, say), 1 where the output is above 0.5 and
    0 elsewhere."""
    b = net.backend
    out = net.predict(X, batch_size)
    if net.n_out == 1:
        return b.to_numpy(out[:, 0] > 0.5).astype("int64")
    return b.to_numpy(b.argmax_rows(out))


def accuracy(net, X, y):
    """Fraction of rows of ``X`` whose predicted class (``predict_classes``)
    matches ``y``: class ids or one-hot rows, on the host or on the network's
    device; 0/1 labels for a network with one output."""
    net._require_built()
    X = net.as_input(X)
    if not net._on_host(y, "y"):
        y = net.backend.to_numpy(y)  # labels are checked on the host
    n = int(X.shape[0])
    if net.n_out == 1:
        labels = host.check_targets(y, n, 1, "y")[:, 0]
        if not ((labels == 0) | (labels == 1)).all():
            raise InputValueError(
                f"y holds values from {labels.min():g} to {labels.max():g}, but a network with "
                "one output predicts class 1 where its output is above 0.5, else 0: y must hold "
                "0/1 labels")
    else:
        labels = host.class_ids(host.check_targets(y, n, net.n_out, "y", distributions=True))
    return float((predict_classes(net, X) == labels).mean())
