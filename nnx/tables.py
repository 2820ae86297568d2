"""A classification dataset from a file of your own: CSV, TSV or NumPy ``.npz``.

``load_file(path)`` gives the same ``Dataset`` as ``load_dataset`` (float
features, int64 class ids, class names), so ``prepare_dataset``, ``nnx train``
and ``nnx evaluate`` take it as they take MNIST:

* ``.csv`` / ``.tsv`` (optionally ``.gz``): one row per sample; a header row
  is recognised when a feature cell of the first row is not a number. The
  ``target`` column (a header name or a 0-based index, negative from the end;
  default the last column) holds the labels, every other column a numeric
  feature. Parsed by ``numpy.loadtxt``, straight into ``dtype``.
* ``.npz``: arrays ``X`` and ``y``, or ``X_train``, ``y_train``, ``X_test`` and
  ``y_test`` (a split of your own, kept as it is).

Labels may be strings or numbers: the classes are their sorted distinct
values (as scikit-learn's ``classes_``), named by their text, and a label is
its class's index. Numbers that are not whole (a regression target) are
refused: ``nnx.sklearn.MLPRegressor`` fits those.

Without a split of its own, ``test_fraction`` of the rows (20% by default) are
the test set, stratified by class where every class has two rows or more,
and drawn with a fixed seed, so every run on the file (whatever ``--seed``)
tests on the same rows. ``test_fraction=None`` makes every row a test row
(new rows to evaluate a trained model on).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import re
import warnings

import numpy as np

from . import _checks
from ._checks import InputValueError
from .data import Dataset, DatasetError, _check_dtype, _permute_rows

__all__ = ["load_file", "TEST_FRACTION", "FILE_SUFFIXES", "file_digest"]

TEST_FRACTION = 0.2  # share of a file's rows held out as its test set
TEST_SEED = 0  # the test rows do not move with the training seed
FILE_SUFFIXES = (".csv", ".tsv", ".npz", ".csv.gz", ".tsv.gz")


def _kind(path):
    name = os.fspath(path).lower()
    for suffix in FILE_SUFFIXES:
        if name.endswith(suffix):
            return suffix.split(".")[1]
    raise InputValueError(f"{os.fspath(path)!r}: expected a file ending in "
                          f"{', '.join(FILE_SUFFIXES)}")


def file_digest(path):
    """SHA-256 of the file's bytes (hex): which file a model was trained on."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------- CSV/TSV
def _open_text(path):
    if os.fspath(path).lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_row(path, delimiter):
    """The first row that is not blank or a ``#`` comment, split into cells."""
    with _open_text(path) as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                return [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]
    raise DatasetError(f"{os.fspath(path)!r} holds no rows")


def _target_index(target, header, n_columns, path):
    """The target column's index from a name, an index, or None (the last)."""
    if target is None:
        return n_columns - 1
    if header is not None and str(target) in header:
        if header.count(str(target)) > 1:
            raise InputValueError(f"target={target!r}: {path!r} has {header.count(str(target))} "
                                  "columns of that name; give its index instead")
        return header.index(str(target))
    index = None
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        index = int(target)
    elif isinstance(target, str) and re.fullmatch(r"[+-]?\d+", target.strip()):
        index = int(target)
    if index is None or not -n_columns <= index < n_columns:
        names = f"its columns are {header}" if header is not None else \
            "it has no header row, so give an index"
        raise InputValueError(f"target={target!r} is not a column of {path!r} ({n_columns} "
                              f"columns; {names}){_checks.did_you_mean(str(target), header or ())}")
    return index % n_columns


def _read_table(path, target, dtype, delimiter):
    shown = os.fspath(path)
    first = _first_row(path, delimiter)
    n_columns = len(first)
    if n_columns < 2:
        raise DatasetError(f"{shown!r}: its first row has {n_columns} column; expected at "
                           f"least one feature and the target"
                           + (" (is it tab-separated? name it .tsv)" if delimiter == "," and
                              "\t" in first[0] else ""))
    # a header names the columns: the first row is one if a cell other than a
    # possible target is not a number (a target given by name needs one)
    guess = n_columns - 1 if target is None or not isinstance(target, str) \
        or target not in first else first.index(target)
    header = first if (any(not _is_number(c) for i, c in enumerate(first) if i != guess)
                       or all(not _is_number(c) for c in first)) else None
    t = _target_index(target, header, n_columns, shown)
    features = [i for i in range(n_columns) if i != t]
    options = dict(delimiter=delimiter, skiprows=0, comments="#", quotechar='"',
                   encoding="utf-8")
    X = _columns(path, header, shown, usecols=features, dtype=dtype, ndmin=2, **options)
    labels = _columns(path, header, shown, usecols=[t], dtype=str, ndmin=1, **options)
    if X.shape[0] == 0:
        raise DatasetError(f"{shown!r} has a header but no data rows")
    name = header[t] if header is not None else f"column {t}"
    return X, np.char.strip(labels), name


def _columns(path, header, shown, **options):
    """``numpy.loadtxt`` of the data rows (after the header, if any); its
    notes about blank lines and an empty file are ours to tell."""
    with _open_text(path) as f, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "(Input line|loadtxt: input contained no data)",
                                UserWarning)
        try:
            return np.loadtxt(f if header is None else _after_header(f), **options)
        except ValueError as exc:
            raise DatasetError(_cell_problem(shown, exc, header)) from None


def _after_header(lines):
    """The lines after the first that is not blank or a comment (the header)."""
    seen = False
    for line in lines:
        if not seen and line.strip() and not line.lstrip().startswith("#"):
            seen = True
            continue
        yield line


def _cell_problem(path, exc, header):
    """numpy.loadtxt's complaint about a cell, told by data row and column name."""
    text = str(exc)
    m = re.search(r"could not convert string '(.*)' to \w+ at row (\d+), column (\d+)", text)
    if m:
        value, row, col = m.group(1), int(m.group(2)), int(m.group(3)) - 1
        column = repr(header[col]) if header is not None and col < len(header) else str(col)
        what = "an empty cell" if value == "" else f"{value!r}"
        return (f"{path!r}: data row {row + 1}, column {column} holds {what}; expected a "
                "number in every feature cell (fill or drop missing values, and encode "
                "categories as numbers, before training)")
    m = re.search(r"invalid column index (-?\d+) at row (\d+) with (\d+) columns", text)
    if m:
        return (f"{path!r}: data row {int(m.group(2))} has {m.group(3)} columns, fewer than the "
                "header or first row; expected the same number of cells in every row")
    return f"{path!r}: {text}"


# --------------------------------------------------------------------- npz
def _read_npz(path, target, dtype):
    shown = os.fspath(path)
    if target is not None:
        raise InputValueError(f"target={target!r}: a .npz file names its labels y (or y_train "
                              "and y_test); target= applies to CSV and TSV files")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{shown!r} is not a readable .npz file ({exc})") from None
    with archive:
        keys = set(archive.files)
        if {"X_train", "y_train", "X_test", "y_test"} <= keys:
            parts = [archive[k] for k in ("X_train", "y_train", "X_test", "y_test")]
        elif {"X", "y"} <= keys:
            parts = [archive["X"], archive["y"]]
        else:
            raise DatasetError(f"{shown!r} holds {sorted(keys)}; expected arrays X and y, or "
                               "X_train, y_train, X_test and y_test")
    for name, a in zip(("X", "y", "X_test", "y_test"), parts):
        if a.dtype.kind == "O":  # allow_pickle=False refuses these on reading; say so
            raise DatasetError(f"{shown!r}: {name} holds Python objects; expected numbers "
                               "(and strings or numbers for labels)")
    Xs = []
    for name, X, y in zip(("X", "X_test"), parts[::2], parts[1::2]):
        if X.ndim != 2 or X.dtype.kind not in "biuf":
            raise DatasetError(f"{shown!r}: {name} has dtype {X.dtype} and shape {X.shape}; "
                               "expected a 2-D array of numbers (rows, features)")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise DatasetError(f"{shown!r}: its labels have shape {y.shape} beside {name} "
                               f"{X.shape}; expected one label per row ({X.shape[0]},)")
        Xs.append(X.astype(dtype, copy=False))
    labels = [y.astype(str) if y.dtype.kind in "US" else y for y in parts[1::2]]
    return Xs, labels


# ------------------------------------------------------------------ labels
def _class_ids(labels, classes, shown):
    """Class ids of ``labels`` and the class names (those given, or the
    labels' sorted distinct values as text)."""
    if labels.dtype.kind in "US":
        numeric = labels.size > 0 and all(_is_number(v) for v in np.unique(labels))
        if numeric:
            labels = labels.astype(np.float64)
    if labels.dtype.kind in "fc":
        values = np.asarray(labels, dtype=np.float64)
        if not np.isfinite(values).all() or not (values == np.round(values)).all():
            raise DatasetError(
                f"{shown!r}: its labels hold {np.unique(values).size} distinct values, not all "
                "whole numbers; nnx train trains classifiers (class labels: names or whole "
                "numbers). For a numeric target, fit nnx.sklearn.MLPRegressor")
        labels = values.astype(np.int64)
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    text = labels.astype(str)
    if classes is None:
        if labels.dtype.kind in "iu":  # numeric order, not text order (2 before 10)
            uniq = np.unique(labels)
            classes, ids = tuple(str(v) for v in uniq), np.searchsorted(uniq, labels)
        else:
            uniq, ids = np.unique(text, return_inverse=True)
            classes = tuple(str(v) for v in uniq)
        return ids.astype(np.int64).ravel(), classes
    classes = tuple(str(c) for c in classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(np.unique(text).tolist()) - set(index))
    if unknown:
        raise DatasetError(f"{shown!r}: labels {unknown[:5]} are not among the model's classes "
                           f"{list(classes)}")
    return np.fromiter((index[v] for v in text.tolist()), np.int64, len(text)), classes


def _split(X, y, fraction, shown):
    """``(X_train, y_train, X_test, y_test)``: ``fraction`` of the rows held
    out, stratified where each class has two rows or more, reordered in
    place (no copy); ``fraction=None``: every row a test row."""
    if fraction is None:
        return X[:0], y[:0], X, y
    from sklearn.model_selection import train_test_split
    n = len(y)
    n_test = max(1, int(round(fraction * n)))
    if n - n_test < 1:
        raise DatasetError(f"{shown!r} has {n} rows: test_fraction={fraction!r} leaves none to "
                           "train on")
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and n_test >= np.count_nonzero(counts) \
        and n - n_test >= np.count_nonzero(counts) else None
    train, test = train_test_split(np.arange(n), test_size=n_test, random_state=TEST_SEED,
                                   stratify=stratify)
    order = np.concatenate([test, train])
    _permute_rows(X, order)
    _permute_rows(y, order)
    return X[n_test:], y[n_test:], X[:n_test], y[:n_test]


def load_file(path, target=None, *, test_fraction=TEST_FRACTION, dtype="float32",
              classes=None) -> Dataset:
    """A ``Dataset`` from a CSV, TSV or ``.npz`` file (see the module docstring).

    ``target``: the label column of a CSV/TSV file, by header name or index
    (default the last). ``test_fraction``: the share of rows held out as the
    test set when the file has no split of its own (None: all rows are test
    rows). ``dtype``: of the features, read straight into it. ``classes``:
    class names to map the labels onto (a trained model's), instead of the
    file's own; a label outside them is refused.
    """
    shown = os.fspath(path)
    kind = _kind(path)
    dtype = _check_dtype(dtype)
    if test_fraction is not None:
        _checks.in_range("test_fraction", test_fraction, 0, 1, low_open=True, high_open=True)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{shown!r}: no such file" if not os.path.exists(path)
                                else f"{shown!r} is not a file")
    if kind == "npz":
        Xs, labels = _read_npz(path, target, dtype)
        label_name = "y"
    else:
        X, label, label_name = _read_table(path, target, dtype, "," if kind == "csv" else "\t")
        Xs, labels = [X], [label]
    sizes = [len(y) for y in labels]
    ids, classes = _class_ids(np.concatenate(labels), classes, shown)
    if len(classes) < 2:
        raise DatasetError(f"{shown!r}: its labels ({label_name}) hold one class, "
                           f"{classes[0]!r}; a classifier needs at least two")
    if len(Xs) == 2:  # the file's own split
        parts = Xs[0], ids[:sizes[0]], Xs[1], ids[sizes[0]:]
        if test_fraction is None:  # new rows to evaluate on: the test rows
            parts = Xs[0][:0], parts[1][:0], Xs[1], parts[3]
    else:
        X = Xs[0] if Xs[0].flags.writeable else Xs[0].copy()
        parts = _split(X, ids, test_fraction, shown)
    return Dataset(X_train=parts[0], y_train=parts[1], X_test=parts[2], y_test=parts[3],
                   name=os.path.basename(shown), n_classes=len(classes), class_names=classes,
                   source=os.path.abspath(shown))

