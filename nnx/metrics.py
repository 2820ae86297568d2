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
    b = net.backend
    if b.owns(y):
        y = b.to_numpy(b.argmax_rows(y) if len(y.shape) == 2 else y)
    truth = host.class_ids(y)
    pred = predict_classes(net, X)
    if truth.shape[0] != pred.shape[0]:
        raise ValueError(f"y has {truth.shape[0]} rows but X has {pred.shape[0]}")
    return float((pred == truth).mean())
