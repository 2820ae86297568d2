"""Evaluation helpers: predicted classes, accuracy and the confusion matrix.
Counting happens on the host, in NumPy, like the label checks."""

from __future__ import annotations

import numpy as np

from ._checks import InputTypeError, InputValueError, integer, network
from .backend import host

__all__ = ["predict_classes", "accuracy", "confusion_matrix", "format_confusion_matrix"]


def predict_classes(net, X, batch_size=1024):
    """Predicted class id of each row of ``X``, as a NumPy array on the host:
    the output with the largest value or, for a network with one output, 1
    where the output is above the loss's ``threshold`` (0 for a sigmoid
    cross-entropy's logit; 0.5 for a sigmoid output trained on 0/1 targets)
    and 0 elsewhere."""
    b = network(net).backend
    batch_size = integer("batch_size", batch_size, minimum=1)
    net.require_built("predict_classes")
    X = net.as_input(X, convert=False)  # checked; converted a chunk at a time
    worst, seen = [], []

    def classes(out):  # a chunk's outputs at a time: only the ids are kept
        worst.append(b.max_abs(out))
        if net.n_out > 1:
            return b.argmax_rows(out)
        if not net.loss.binary:  # outputs read as probabilities: a regression's warn
            net.note_range(out, seen)
        return out[:, 0] > net.loss.threshold

    ids = net._predict(X, batch_size, classes)
    # NaN or inf stays so in the sum: no cancelling (one number from the device)
    if not np.isfinite(b.to_float(b.xp.sum(b.stack(worst)))):
        # an argmax of NaN rows would still count as classes (0.099 on digits)
        raise InputValueError("the network's outputs are NaN or infinite, so they name no "
                              "class: its parameters have diverged; train again with a "
                              "smaller learning rate (Trainer.fit stops such a run itself, "
                              "with TrainingDiverged)")
    net.warn_unless_probabilities(seen, "predict_classes")
    return b.to_numpy(ids).astype("int64", copy=False)  # one transfer


def accuracy(net, X, y):
    """Fraction of rows of ``X`` whose predicted class (``predict_classes``)
    matches ``y``: class ids or one-hot rows, on the host or on the network's
    device; 0/1 labels for a network with one output."""
    network(net).require_built()
    if net.loss.binary and net.n_out > 1 and _multilabel_rows(y):
        raise InputValueError(
            f"accuracy: y's rows are 0/1 labels, not one per row (multilabel: several labels "
            f"in a row, or none), for this network's "
            f"{net.n_out} sigmoid outputs, and no single accuracy describes them; compare "
            "net.predict_proba(X) > 0.5 with y label by label (or use sklearn.metrics on "
            "those). Class ids, or one-hot rows, are scored by the largest output")
    X = net.as_input(X, convert=False)  # checked; predict_classes converts by chunks
    if not net.on_host(y, "y"):
        y = net.backend.to_numpy(y)  # labels are checked on the host
    n = int(X.shape[0])
    if net.n_out == 1:
        labels = host.check_targets(y, n, 1, "y")[:, 0]
        if not ((labels == 0) | (labels == 1)).all():
            raise InputValueError(
                f"y holds values from {labels.min():g} to {labels.max():g}, but a network with "
                "one output predicts class 1 or 0 (by its output's side of the loss's "
                "threshold): y must hold 0/1 labels")
    else:
        labels = host.check_targets(y, n, net.n_out, "y", distributions=True, ids_only=True)
        if labels.ndim == 2:  # one-hot or probability rows
            labels = host.class_ids(labels)
    return float((predict_classes(net, X) == labels).mean())


def _multilabel_rows(y):
    """Whether host ``y`` is rows of 0/1 labels that are not all one-hot."""
    if host.is_sparse(y):
        y = y.toarray()
    if not host.is_host_array(y) and not isinstance(y, (list, tuple)) \
            and not type(y).__module__.startswith("pandas"):
        return False  # a device array: checked as targets, as before
    try:
        y = np.asarray(y)
        return y.ndim == 2 and y.shape[1] > 1 and bool(np.isin(y, (0, 1)).all()) \
            and not (y.sum(axis=1) == 1).all()
    except (TypeError, ValueError):  # pd.NA, ragged rows...: the target check names it
        return False


def _class_ids(y, name, n_classes):
    y = host.plain(y, name, "a 1-D array of class ids")
    if y.ndim != 1:
        raise InputValueError(f"{name} must be 1-D class ids, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise InputTypeError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise InputValueError(f"{name} holds class ids {int(y.min())}..{int(y.max())}; "
                              f"expected ids in [0, {n_classes})")
    return y


def confusion_matrix(y_true, y_pred, n_classes):
    """``(n_classes, n_classes)`` int64 NumPy array whose row i, column j
    counts the rows of true class i predicted as class j (class ids, as
    ``predict_classes`` gives)."""
    n_classes = integer("n_classes", n_classes)
    y_true = _class_ids(y_true, "y_true", n_classes)
    y_pred = _class_ids(y_pred, "y_pred", n_classes)
    if y_true.shape != y_pred.shape:
        raise InputValueError(f"y_true has {y_true.shape[0]} rows but y_pred {y_pred.shape[0]}; "
                              "expected one prediction per row")
    pairs = y_true.astype(np.int64) * n_classes + y_pred.astype(np.int64)
    counts = np.bincount(pairs, minlength=n_classes * n_classes)
    return counts.astype(np.int64, copy=False).reshape(n_classes, n_classes)


def format_confusion_matrix(cm):
    """A confusion matrix as text, as ``nnx evaluate`` prints it: a title
    line, the predicted classes across, then one row per true class."""
    cm = host.plain(cm, "cm", "a square array of counts")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise InputValueError(f"cm must be a square, non-empty matrix, got shape {cm.shape}")
    if cm.dtype.kind not in "iu":
        raise InputTypeError(f"cm must hold integer counts, got dtype {cm.dtype}")
    k = cm.shape[0]
    w = max(5, len(str(cm.max())) + 1)
    lines = ["confusion matrix (rows: true class, columns: predicted)",
             " " * 6 + "".join(str(j).rjust(w) for j in range(k))]
    lines += [str(i).rjust(5) + " " + "".join(str(v).rjust(w) for v in cm[i]) for i in range(k)]
    return "\n".join(lines)
