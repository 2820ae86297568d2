"""A classification dataset from a file of your own: CSV, TSV or NumPy ``.npz``.

``load_file(path)`` gives the same ``Dataset`` as ``load_dataset`` (float
features, int64 class ids, class names), so ``prepare_dataset``, ``nnx train``
and ``nnx evaluate`` take it as they take MNIST:

* ``.csv`` / ``.tsv`` (optionally ``.gz``): one row per sample; a header row
  is recognised when a feature cell of the first row is not a number, or a
  column's first cell differs in kind (number or not) from its second. The
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
the test set, stratified by class (a class of one row stays in training, with
a warning), and drawn with a fixed seed, so every run on the file (whatever ``--seed``)
tests on the same rows. ``test_fraction=None`` makes every row a test row
(new rows to evaluate a trained model on).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import os
import re
import shlex
import warnings
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from . import _checks
from ._checks import InputValueError, InputWarning
from .backend import host
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
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first cell
    if os.fspath(path).lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _blank(cells):
    return not cells or (len(cells) == 1 and not cells[0].strip())


@dataclass
class _Shape:
    """What one pass over a table finds: its first two rows, its width (a
    trailing empty column, from a delimiter at the end of every row, left
    out) and its number of rows."""

    first: list
    second: list | None
    width: int
    rows: int
    repeats: list  # per column, how many later rows repeat the first row's cell
    head: int  # lines up to the end of the first row (a quoted cell may hold line breaks)


def _scan(path, delimiter):
    """One pass with the csv module: the first two rows, and every row of
    the same width as the first (a row with more or fewer cells is a
    DatasetError naming its line: loadtxt would take its first cells)."""
    shown = os.fspath(path)
    first = second = repeats = None
    rows, trailing = 0, True
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        for cells in _decoded(reader, shown):
            if _blank(cells):
                continue
            cells = [c.strip() for c in cells]
            if first is None:
                first, repeats, head = cells, [0] * len(cells), reader.line_num
            elif len(cells) != len(first):
                hint = ("is it semicolon-separated, as European Excel writes it? save it with "
                        "commas, and points for decimals" if len(first) == 1 and ";" in first[0]
                        else "a comma inside a number or a name? quote such cells")
                raise DatasetError(
                    f"{shown!r}: line {reader.line_num} has {_cells(len(cells))} but the first "
                    f"row has {len(first)}; expected the same number in every row ({hint})")
            else:
                second = cells if second is None else second
                for j, (a, b) in enumerate(zip(first, cells)):
                    repeats[j] += a == b
            trailing = trailing and cells[-1] == ""
            rows += 1
    if first is None:
        raise DatasetError(f"{shown!r} holds no rows")
    width = len(first) - 1 if trailing and len(first) > 1 else len(first)
    return _Shape(first[:width], second[:width] if second else None, width, rows,
                  repeats[:width], head)


def _cells(n):
    return "1 cell" if n == 1 else f"{n} cells"


def _decoded(reader, shown):
    """The reader's rows; a file that is not UTF-8 is named, not a traceback."""
    try:
        yield from reader
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{shown!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at position "
            f"{exc.start}); save it as UTF-8 (Excel: 'CSV UTF-8')") from None


def _has_header(shape, target):
    """Whether the first row names the columns: a target named in it, a
    feature cell that is text (not a number, not empty: a missing value is
    no name), a column whose first cell is a number and second text or the
    other way round, or numbers as names: feature cells of whole numbers
    rising (0,1,2,... as pandas names columns, or years) beside a target
    cell no other row repeats."""
    first, second = shape.first, shape.second
    index_like = isinstance(target, (int, np.integer)) or (
        isinstance(target, str) and re.fullmatch(r"[+-]?\d+", target.strip()) is not None)
    if isinstance(target, str) and not index_like and target in first:
        return True
    guess = shape.width - 1 if target is None else None
    if index_like:
        index = int(target)
        guess = index % shape.width if -shape.width <= index < shape.width else None
    features = [c for i, c in enumerate(first) if i != guess]
    if any(c and not _is_number(c) for c in features):
        return True
    if second is not None and any(a and b and _is_number(a) != _is_number(b)
                                  for a, b in zip(first, second)):
        return True
    whole = [int(c) for c in features if re.fullmatch(r"[+-]?\d+", c)]
    if guess is not None and shape.rows > 2 and len(whole) == len(features) \
            and all(a < b for a, b in zip(whole, whole[1:])) \
            and shape.repeats[guess] == 0:
        return True
    return second is None and all(c and not _is_number(c) for c in first)


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


def _feature_columns(features, header, t, width, shown):
    """The feature columns' indices: every column but the target's, or those
    named by ``features`` (a trained model's), in that order."""
    if features is None or header is None:
        columns = [i for i in range(width) if i != t]
        if features is not None and len(features) != len(columns):
            raise DatasetError(f"{shown!r} has {len(columns)} feature columns; the model "
                               f"takes {len(features)} ({list(features)[:8]}...)")
        return columns
    own = [header[i] for i in range(width) if i != t]
    if list(features) == own:  # as trained: by position (names may repeat)
        return [i for i in range(width) if i != t]
    twice = sorted({name for name in features if header.count(name) > 1})
    if twice:
        raise DatasetError(f"{shown!r} has several columns named {twice[0]!r}, and its "
                           "columns are not in the order trained on: they cannot be told "
                           "apart by name; give the file its columns in the training order")
    missing = [name for name in features if name not in header]
    if missing:
        raise DatasetError(f"{shown!r} has no column {missing[0]!r}"
                           + (f" (nor {missing[1:4]})" if len(missing) > 1 else "")
                           + f"; the model takes the features {list(features)[:8]}"
                           + ("..." if len(features) > 8 else ""))
    return [header.index(name) for name in features]


def _read_table(path, target, dtype, delimiter, features=None):
    shown = os.fspath(path)
    shape = _scan(path, delimiter)
    if shape.width < 2:
        hint = next((f" (is it {what}? {how})" for sep, what, how in (
            ("\t", "tab-separated", "name it .tsv"),
            (";", "semicolon-separated, as European Excel writes it",
             "save it with commas, and points for decimals")) if sep in shape.first[0]), "")
        raise DatasetError(f"{shown!r}: its first row has {shape.width} column; expected at "
                           f"least one feature and the target{hint}")
    header = shape.first if _has_header(shape, target) else None
    if header is not None and features is None:  # training: the model keeps these names
        _refuse_repeated_names(header, shown)
    t = _target_index(target, header, shape.width, shown)
    columns = _feature_columns(features, header, t, shape.width, shown)
    options = dict(delimiter=delimiter, comments=None, quotechar='"')
    options = dict(options, skip=shape.head)
    X = _columns(path, header, shown, usecols=columns, dtype=dtype, ndmin=2, **options)
    labels = _columns(path, header, shown, usecols=[t], dtype=str, ndmin=1, **options)
    if X.shape[0] == 0:
        raise DatasetError(f"{shown!r} has a header but no data rows")
    if not host.all_finite(X):
        row, col = (int(i[0]) for i in np.nonzero(~np.isfinite(X)))
        name = repr(header[columns[col]]) if header is not None else str(columns[col])
        raise DatasetError(f"{shown!r}: data row {row + 1}, column {name} holds "
                           f"{X[row, col]}; expected a finite number in every feature cell "
                           "(fill or drop missing values before training)")
    names = [header[i] for i in columns] if header is not None else None
    labels = np.char.strip(labels)
    if features is None:  # training's read (evaluation reads the columns trained on)
        _refuse_missing_labels(labels, shown, repr(header[t]) if header is not None else str(t))
        if header is None:
            _warn_of_a_header_of_numbers(labels, shown)
        _warn_of_row_numbers(X, names, columns, shown)
        _warn_of_rounding(
            X, lambda idx: _columns(path, header, shown, usecols=[columns[j] for j in idx],
                                    dtype=np.float64, ndmin=2, **options),
            lambda j: repr(header[columns[j]]) if header is not None else f"column {columns[j]}",
            shown)
    return X, labels, (header[t] if header is not None else t), names


# cells that stand for a missing value (pandas reads these as NaN, among others):
# a label of their own among text labels ('None', the class '-' of credit data),
# but missing among numbers; an empty or NaN cell is missing among either
_MISSING = frozenset({"na", "n/a", "null", "none", "?", "-", "#n/a"})


def _warn_of_a_header_of_numbers(labels, shown):
    """A header whose feature names are numbers (wavelengths, say) reads as a
    row of data; its target cell is then a text label no other row has."""
    if labels.size < 3 or _is_number(labels[0]) or np.count_nonzero(labels == labels[0]) > 1:
        return
    _checks.warn_caller(
        f"{shown!r}: the first row's target cell {str(labels[0])!r} is in no other row, so "
        "that row was read as a sample; if it names the columns (feature names that are "
        f"numbers), name the target column (nnx train --target {shlex.quote(str(labels[0]))}),"
        " which makes the row the header", InputWarning)


def _refuse_repeated_names(header, shown):
    """Two columns of one name: a model trained on them is read back by name,
    and a later file's columns cannot be told apart (one was fed twice)."""
    seen = {}
    for i, name in enumerate(header):
        if name in seen:
            raise DatasetError(f"{shown!r}: columns {seen[name]} and {i} are both named "
                               f"{name!r}; give each column its own name")
        seen[name] = i


def _refuse_missing_labels(labels, shown, column):
    """An empty or NA label cell is a missing label, not a class of its own."""
    if labels.size == 0:
        return
    lower = np.char.lower(labels)
    missing = (lower == "") | (lower == "nan")
    marked = np.isin(lower, list(_MISSING))
    if marked.any() and all(_is_number(v) for v in np.unique(labels[~marked | missing]).tolist()
                            if v):
        missing |= marked  # NA among numbers: no class of its own
    if missing.any():
        rows = np.flatnonzero(missing)
        more = f" (and {rows.size - 1} more rows)" if rows.size > 1 else ""
        value = "an empty cell" if labels[rows[0]] == "" else repr(str(labels[rows[0]]))
        raise DatasetError(f"{shown!r}: data row {rows[0] + 1}, column {column} (the target) "
                           f"holds {value}{more}, a missing label; drop such rows (or "
                           "label them) before training")


def _warn_of_rounding(X, exact, name_of, shown):
    """A float32 feature of large values that vary little (timestamps, ids)
    is rounded to float32's steps as it is read: 1.6e9 in steps of 128,
    which can erase the differences a model needs. Such columns are read
    again in float64 (``exact(indices)``: only they, and only when there are
    any) to tell; ``name_of(index)`` names one."""
    if X.dtype != np.float32 or X.shape[0] < 2:
        return
    hi, lo = X.max(axis=0), X.min(axis=0)
    size = np.maximum(np.abs(hi), np.abs(lo))
    step = np.spacing(size)
    suspects = np.flatnonzero((size >= 1024) & (step > 1e-3 * (hi - lo)))
    if suspects.size == 0:
        return
    spread = exact(suspects).std(axis=0)
    lost = [j for j, sd in zip(suspects, spread) if sd > 0 and step[j] > 0.01 * sd]
    if lost:
        j = lost[0]
        name = name_of(j)
        more = f" (and {len(lost) - 1} more columns)" if len(lost) > 1 else ""
        _checks.warn_caller(
            f"{shown!r}: {name}{more} holds values near {size[j]:.4g} that vary by about "
            f"{spread[lost.index(j)]:.3g} (standard deviation); float32 keeps them in steps of "
            f"{step[j]:.3g}, so much of that variation is lost as the file is read: train in "
            "float64 (nnx train --dtype float64), or subtract an offset (such as the column's "
            "first value) in the file first", InputWarning)


def _warn_of_row_numbers(X, names, columns, shown):
    """A feature column holding each of n consecutive whole numbers once (in
    any order) is a row id, or the index pandas' to_csv writes unless told
    not to (an unnamed column; shuffled or sorted with the frame): trained
    on, it is noise, and on rows sorted by label it gives the label away."""
    n = X.shape[0]
    if n < 20:  # not a toy table of a few rows
        return
    lows, highs = X.min(axis=0), X.max(axis=0)
    for c in np.flatnonzero(highs - lows == n - 1):
        name = names[c] if names else None
        unnamed = name is not None and (name == "" or name.startswith("Unnamed:"))
        low = lows[c]
        if not (unnamed or low in (0, 1)) or not np.array_equal(
                np.sort(X[:, c]), np.arange(low, low + n, dtype=X.dtype)):
            continue
        what = repr(name) if name is not None else str(columns[c])
        if unnamed:
            _checks.warn_caller(
                f"{shown!r}: the unnamed feature column {what} holds the row numbers {low:g} "
                f"to {low + n - 1:g}, the index pandas' to_csv writes unless index=False; it "
                "is trained on as a feature: drop it from the file", InputWarning)
        else:
            _checks.warn_caller(
                f"{shown!r}: feature column {what} holds the numbers {low:g} to "
                f"{low + n - 1:g}, one per row: a row id? Trained on, an id is noise, and on "
                "rows sorted by label it gives the label away; if it is not a feature, drop "
                "it from the file", InputWarning)


def _columns(path, header, shown, skip, **options):
    """``numpy.loadtxt`` of the data rows (after the header's ``skip`` lines,
    if there is a header); its notes about blank lines and an empty file
    are ours to tell."""
    with _open_text(path) as f, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "(Input line|loadtxt: input contained no data)",
                                UserWarning)
        try:
            return np.loadtxt(f if header is None else itertools.islice(f, skip, None),
                              **options)
        except ValueError as exc:
            raise DatasetError(_cell_problem(shown, exc, header)) from None


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
            names = ("X_train", "y_train", "X_test", "y_test")
        elif {"X", "y"} <= keys:
            names = ("X", "y")
        else:
            raise DatasetError(f"{shown!r} holds {sorted(keys)}; expected arrays X and y, or "
                               "X_train, y_train, X_test and y_test")
        parts = []
        for name in names:  # each array is read here, lazily: object arrays fail here
            try:
                parts.append(archive[name])
            except ValueError:  # allow_pickle=False: "Object arrays cannot be loaded"
                raise DatasetError(f"{shown!r}: {name} holds Python objects; expected "
                                   "numbers (and strings or numbers for labels): save it "
                                   "with a numeric or string dtype") from None
    Xs = []
    for name, X, y in zip(names[::2], parts[::2], parts[1::2]):
        if X.ndim != 2 or X.dtype.kind not in "biuf":
            raise DatasetError(f"{shown!r}: {name} has dtype {X.dtype} and shape {X.shape}; "
                               "expected a 2-D array of numbers (rows, features)")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise DatasetError(f"{shown!r}: its labels have shape {y.shape} beside {name} "
                               f"{X.shape}; expected one label per row ({X.shape[0]},)")
        source, X = X, X.astype(dtype, copy=False)
        if name in ("X", "X_train") and not np.can_cast(source.dtype, X.dtype, "safe"):
            _warn_of_rounding(X, lambda idx, a=source: a[:, idx].astype(np.float64),
                              lambda j, n=name: f"{n}[:, {j}]", shown)
        if not host.all_finite(X):
            row, col = (int(i[0]) for i in np.nonzero(~np.isfinite(X)))
            raise DatasetError(f"{shown!r}: {name}[{row}, {col}] is {X[row, col]}; expected a "
                               "finite number in every feature (fill or drop missing values "
                               "before training)")
        Xs.append(X)
    labels = [y.astype(str) if y.dtype.kind in "US" else y for y in parts[1::2]]
    return Xs, labels


# ------------------------------------------------------------------ labels
def _class_ids(labels, classes, shown, column="the file"):
    """Class ids of ``labels`` and the class names (those given, or the
    labels' sorted distinct values as text); ``column`` says where the
    labels were read, for the refusals."""
    if labels.dtype.kind in "US":
        distinct = np.unique(labels)
        if distinct.size and all(re.fullmatch(r"[+-]?\d+", v) for v in distinct.tolist()):
            labels = _whole_numbers(labels, distinct)  # exactly: 12345678901234567 stays
        elif distinct.size and all(_is_number(v) for v in distinct.tolist()):
            labels = labels.astype(np.float64)
    if labels.dtype.kind in "fc":
        values = np.asarray(labels, dtype=np.float64)
        if not np.isfinite(values).all() or not (values == np.round(values)).all():
            raise DatasetError(
                f"{shown!r}: the labels in {column} hold {np.unique(values).size} distinct "
                "values, not all whole numbers; nnx train trains classifiers (class labels: "
                "names or whole numbers). If the labels are in another column, name it as the "
                "target; for a numeric target, fit nnx.sklearn.MLPRegressor")
        labels = values.astype(np.int64)
    text = labels.astype(str)  # booleans keep their names, False and True
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


def _warn_of_untrained_classes(train_ids, test_ids, classes, shown):
    """A file's own test split with classes its training rows never show:
    the network gets outputs for them that nothing trains."""
    unseen = np.setdiff1d(np.unique(test_ids), np.unique(train_ids))
    if unseen.size:
        _checks.warn_caller(
            f"{shown!r}: classes {[classes[i] for i in unseen[:5]]} are in y_test only: no "
            "training row shows them, so the network cannot learn them and each of their "
            "test rows counts as an error", InputWarning)


def _whole_numbers(labels, distinct):
    """Labels written as whole numbers, as int64 where they fit (else as
    text, normalised: 01 and 1 are one class)."""
    values = [int(v) for v in distinct.tolist()]
    if all(-2**63 <= v < 2**63 for v in values):
        return labels.astype(np.int64)
    return np.asarray([str(int(v)) for v in labels.tolist()])


def _warn_if_a_quantity(ids, classes, shown, column):
    """Many whole-number classes with few rows each look like a count or an
    age, which a classifier treats as unrelated names; class ids 0..K-1 (or
    1..K) of about as many rows each look like labels already encoded."""
    n, k = len(ids), len(classes)
    if k <= 10 or n >= 10 * k or not all(re.fullmatch(r"[+-]?\d+", c) for c in classes):
        return
    values, counts = [int(c) for c in classes], np.bincount(ids, minlength=k)
    if values[0] in (0, 1) and values == list(range(values[0], values[0] + k)) \
            and counts.min() >= counts.mean() / 2:
        return
    _checks.warn_caller(
        f"{shown!r}: the labels in {column} hold {k} distinct whole numbers over {n} rows, "
        f"which nnx train learns as {k} unrelated classes; if it is a quantity (a count, "
        "an age), fit nnx.sklearn.MLPRegressor instead", InputWarning)


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
    alone = np.flatnonzero(counts[y] == 1)  # a class of one row: trained on, never tested
    rest = np.flatnonzero(counts[y] >= 2)
    if n_test > len(rest) - 1:
        raise DatasetError(f"{shown!r} has {n} rows, too few for a test set of {n_test} "
                           "with training rows of every class")
    kinds = np.count_nonzero(counts >= 2)
    stratify = y[rest] if n_test >= kinds and len(rest) - n_test >= kinds else None
    train, test = train_test_split(rest, test_size=n_test, random_state=TEST_SEED,
                                   stratify=stratify)
    order = np.concatenate([test, alone, train])
    _permute_rows(X, order)
    _permute_rows(y, order)
    return X[n_test:], y[n_test:], X[:n_test], y[:n_test]


def load_file(path, target=None, *, test_fraction=TEST_FRACTION, dtype="float32",
              classes=None, features=None) -> Dataset:
    """A ``Dataset`` from a CSV, TSV or ``.npz`` file (see the module docstring).

    ``target``: the label column of a CSV/TSV file, by header name or index
    (default the last). ``test_fraction``: the share of rows held out as the
    test set when the file has no split of its own (None: all rows are test
    rows). ``dtype``: of the features, read straight into it. ``classes``:
    class names to map the labels onto (a trained model's), instead of the
    file's own; a label outside them is refused. ``features``: the feature
    columns by header name, in a trained model's order (a table with a
    header is read in that order, whatever its own; one without a header
    must have as many feature columns). The dataset's ``feature_names`` and
    ``target_name`` say what was read.
    """
    shown = os.fspath(path)
    kind = _kind(path)
    dtype = _check_dtype(dtype)
    if test_fraction is not None:
        _checks.in_range("test_fraction", test_fraction, 0, 1, low_open=True, high_open=True)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{shown!r}: no such file" if not os.path.exists(path)
                                else f"{shown!r} is not a file")
    try:
        return _load(path, shown, kind, target, test_fraction, dtype, classes, features)
    except (EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{shown!r} could not be read to its end ({type(exc).__name__}: "
                           f"{exc}): a download cut short, or a file that is not what its "
                           "name says") from None


def _load(path, shown, kind, target, test_fraction, dtype, classes, features):
    if kind == "npz":
        Xs, labels = _read_npz(path, target, dtype)
        label_name, names = "y", None
        if features is not None and len(features) != Xs[0].shape[1]:
            raise DatasetError(f"{shown!r}: X has {Xs[0].shape[1]} features; the model takes "
                               f"{len(features)}")
    else:
        X, label, label_name, names = _read_table(path, target, dtype,
                                                  "," if kind == "csv" else "\t", features)
        Xs, labels = [X], [label]
    sizes = [len(y) for y in labels]
    column = ("its arrays y_train and y_test" if len(labels) == 2 else "its array y") \
        if kind == "npz" else (
        f"its target column {label_name!r}" if target is not None
        else f"its last column {label_name!r} (the target when none is named)")
    own_classes = classes is None  # the file's (training), not a model's (evaluation)
    ids, classes = _class_ids(np.concatenate(labels), classes, shown, column)
    if own_classes:
        _warn_if_a_quantity(ids, classes, shown, column)
        if len(labels) == 2:
            _warn_of_untrained_classes(ids[:sizes[0]], ids[sizes[0]:], classes, shown)
    if len(classes) < 2:
        raise DatasetError(f"{shown!r}: the labels in {column} hold one class, "
                           f"{classes[0]!r}; a classifier needs at least two")
    if len(Xs) == 2:  # the file's own split
        parts = Xs[0], ids[:sizes[0]], Xs[1], ids[sizes[0]:]
        if test_fraction is None:  # new rows to evaluate on: all of them
            parts = Xs[0][:0], ids[:0], np.concatenate([Xs[0], Xs[1]]), ids
    else:
        X = Xs[0] if Xs[0].flags.writeable else Xs[0].copy()
        parts = _split(X, ids, test_fraction, shown)
        if test_fraction is not None:
            alone = np.flatnonzero(np.bincount(ids, minlength=len(classes)) == 1)
            if alone.size:
                more = f" and {alone.size - 5} more" if alone.size > 5 else ""
                _checks.warn_caller(
                    f"{shown!r}: classes {[classes[i] for i in alone[:5]]}{more} have one row "
                    "each: it is trained on, never tested (and the test accuracy says nothing "
                    "of them)", InputWarning)
    return Dataset(X_train=parts[0], y_train=parts[1], X_test=parts[2], y_test=parts[3],
                   name=os.path.basename(shown), n_classes=len(classes), class_names=classes,
                   source=os.path.abspath(shown),
                   feature_names=None if names is None else tuple(names),
                   target_name=str(label_name))

