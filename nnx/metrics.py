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
    if b.owns(y) and not host.is_host_array(y):
        y = b.to_numpy(y)
    n_rows = len(X) if hasattr(X, "__len__") else None
    if n_rows is not None and len(y) != n_rows:
        raise ValueError(f"y has {len(y)} rows but X has {n_rows}")
    if not net.built:
        raise RuntimeError("the network has no parameters yet: train it or load one first")
    truth = host.class_ids(y, net.n_out)
    pred = predict_classes(net, X)
    return float((pred == truth).mean())
