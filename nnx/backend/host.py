"""Host-side checks and conversions of user data, done in NumPy before
anything is uploaded: CuPy wraps out-of-range indices silently, so labels must
be validated here, and errors must name the argument before work starts."""

from __future__ import annotations

import numpy as np


def is_host_array(x) -> bool:
    return isinstance(x, np.ndarray)


def check_features(X, name="X", n_features=None):
    """A 2-D, non-empty, real-valued, finite host array, returned as NumPy."""
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:
            raise TypeError(f"{name} must be a 2-D numeric array, got {type(X).__name__}") from exc
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape})")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features, but the network was built for {n_features}"
        )
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        bad = int(np.count_nonzero(~np.isfinite(X)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return X


def check_targets(y, n_rows, n_classes, name="y", distributions=False):
    """Integer class ids (1-D) or target rows (2-D) -> a float array
    ``(n_rows, n_classes)`` on the host, after checking every label. With
    ``distributions=True`` (classification losses) rows must be one-hot or,
    more generally, non-negative and sum to one."""
    y = np.asarray(y)
    if y.ndim == 0 or y.size == 0:
        raise ValueError(f"{name} is empty or a scalar (shape {y.shape}); expected one label "
                         "per row")
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {y.dtype}")
    if y.shape[0] != n_rows:
        raise ValueError(f"{name} has {y.shape[0]} rows but X has {n_rows}")
    if y.ndim == 2 and y.shape[1] == 1 and n_classes != 1:
        y = y[:, 0]
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError(f"{name}: class ids must be integers, got dtype {y.dtype} "
                                 "with non-integer values")
        ids = y.astype(np.int64)
        if ids.min() < 0 or ids.max() >= n_classes:
            raise ValueError(
                f"{name}: class ids must be in [0, {n_classes - 1}] for a network with "
                f"{n_classes} outputs, got values from {ids.min()} to {ids.max()}"
            )
        out = np.zeros((n_rows, n_classes), dtype=np.float64)
        out[np.arange(n_rows), ids] = 1.0
        return out
    if y.ndim != 2 or y.shape[1] != n_classes:
        raise ValueError(
            f"{name} must be class ids of shape ({n_rows},) or targets of shape "
            f"({n_rows}, {n_classes}), got shape {y.shape}"
        )
    if not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if distributions:
        sums = y.sum(axis=1)
        bad = np.flatnonzero((np.abs(sums - 1) > 1e-6) | (y < 0).any(axis=1))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name}: one-hot rows must be non-negative and sum to one; row {i} sums to "
                f"{sums[i]:g} ({bad.size} bad row(s)); pass class ids or one-hot rows")
    return y


def check_one_hot(y, name="y"):
    """Rows of a classification target must be one-hot (sum to one, 0/1 entries)."""
    if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
        raise ValueError(f"{name}: one-hot rows must hold a single 1 and zeros elsewhere")


def class_ids(y, n_classes=None, name="y"):
    """Class ids of host targets: the ids themselves, or argmax of one-hot rows
    (checked like ``check_targets`` when ``n_classes`` is given)."""
    y = np.asarray(y)
    if n_classes is not None:
        y = check_targets(y, y.shape[0] if y.ndim else 0, n_classes, name, distributions=True)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    return y.reshape(-1).astype(np.int64)


def spawn_seeds(seed, n):
    """``n`` independent integer seeds derived from ``seed``."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n, dtype=np.uint64)]


def derive_seed(*keys) -> int:
    """One integer seed from a tuple of non-negative integers (seed, stream, epoch):
    each epoch's generators follow from the run's seed alone, so a resumed run
    draws exactly what the uninterrupted one would have."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])


def fresh_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1)
