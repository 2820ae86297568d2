"""Evaluation helpers."""

from __future__ import annotations

from .backend import host


def predict_classes(net, X, batch_size=4096):
    """Predicted class id of each row of ``X``, as a NumPy array on the host."""
    b = net.backend
    return b.to_numpy(b.argmax_rows(net.predict(X, batch_size)))


def accuracy(net, X, y):
    """Fraction of rows of ``X`` whose predicted class matches ``y`` (class ids
    or one-hot rows, on the host or on the network's device)."""
    net._require_built()
    X = net.as_input(X)
    if not net._on_host(y, "y"):
        y = net.backend.to_numpy(y)  # labels are checked on the host
    targets = host.check_targets(y, int(X.shape[0]), net.n_out, "y", distributions=True)
    pred = predict_classes(net, X)
    return float((pred == host.class_ids(targets)).mean())
