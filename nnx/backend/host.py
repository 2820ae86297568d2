"""Host-side checks and conversions of user data, done in NumPy before
anything is uploaded: CuPy wraps out-of-range indices silently, so labels must
be validated here, and errors must name the argument before work starts."""

from __future__ import annotations

import math

import numpy as np

from .._checks import InputTypeError, InputValueError


def _numeric(dtype) -> bool:
    """Booleans, integers, real or complex floats (complex is refused next,
    with its own message); not objects, strings, dates or durations (NumPy
    counts timedelta64, NaT included, among the integers)."""
    return dtype.kind in "biufc"


def is_host_array(x) -> bool:
    """NumPy arrays and NumPy scalars (checked, and refused, like any host data);
    not an array that says it lives on a GPU (``__cuda_array_interface__``),
    as a NumPy subclass standing in for CuPy's does."""
    return isinstance(x, (np.ndarray, np.generic)) and not hasattr(x, "__cuda_array_interface__")


def is_sparse(x) -> bool:
    """A SciPy sparse matrix or array (known by its module and its ``tocsr``:
    SciPy is not imported for the question; a LinearOperator is not one)."""
    return type(x).__module__.startswith("scipy.sparse") and hasattr(x, "tocsr")


def check_sparse_features(X, name="X", n_features=None, dtype=None):
    """A SciPy sparse ``X`` as CSR rows in ``dtype`` (one copy at most),
    checked as ``check_features`` checks a dense one (the stored values only:
    the others are zeros)."""
    if len(X.shape) != 2:
        raise InputValueError(f"{name} must be 2-D (rows, features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputValueError(f"{name} is empty (shape {X.shape})")
    if n_features is not None and X.shape[1] != n_features:
        raise InputValueError(
            f"{name} has {X.shape[1]} features, but the network was built for {n_features}")
    X = X.tocsr()
    check_features(X.data.reshape(1, -1) if X.nnz else np.zeros((1, 1)), name + "'s values",
                   dtype=dtype)
    if dtype is None or X.dtype == np.dtype(dtype):
        return X
    # the stored values converted, the index arrays shared (astype copies all three:
    # int32 indices are as large as float32 values); nnx never reorders them in place
    return type(X)((X.data.astype(dtype), X.indices, X.indptr), shape=X.shape)


def sparse_row_sums(X):
    """The float64 sum of each row of a SciPy sparse ``X``, as a 1-D array."""
    return np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()


def position_weights(m):
    """``1 + i/m`` for ``i`` in ``0..m-1`` (float64): no two positions weigh alike."""
    return np.arange(m, dtype=np.float64) / max(m, 1) + 1


def plain(x, name, what, dtype=None):
    """``x`` as a plain ndarray. A masked array is refused: its mask would be
    dropped and the values under it (NaN, say) used. Other subclasses
    (np.matrix) are viewed as ndarray, so ``*`` stays element-wise. A pandas
    frame of numbers of several dtypes comes as float64, or in ``dtype`` (the
    compute dtype) when given: converted a column at a time into one array
    of it (a whole float64 copy first took twice a float32 network's data)."""
    if isinstance(x, np.ma.MaskedArray):
        raise InputTypeError(f"{name} is a masked array; fill or drop the masked entries first "
                             f"(e.g. {name}.filled(value)) and pass a plain array")
    if type(x) is np.ndarray:
        return x
    if _is_pandas(x):
        dtypes = _dtypes(x)
        if all(_kind(d) in "biuf" for d in dtypes) and (
                len({str(d) for d in dtypes}) > 1
                or not all(isinstance(d, np.dtype) for d in dtypes)):
            # numbers of several dtypes (a bool column beside floats) or nullable
            # ones (Int64, Float64, boolean): NumPy would make them objects
            if dtype is None or x.ndim != 2 or np.dtype(dtype) == np.float64:
                return x.to_numpy(dtype=np.float64, na_value=np.nan)
            return _columns_as(x, np.dtype(dtype), name)
    try:
        return np.asarray(x)
    except Exception as exc:
        raise InputTypeError(f"{name} must be {what}, got {type(x).__name__}") from exc


def _columns_as(frame, dtype, name):
    """A frame's columns converted one at a time into a C-ordered array of
    ``dtype``, each checked to fit it first (NaN and infinities pass through,
    for the finiteness check to name)."""
    out = np.empty(frame.shape, dtype=dtype)
    for j in range(frame.shape[1]):
        column = frame.iloc[:, j].to_numpy(dtype=np.float64, na_value=np.nan)
        _fits(column[np.isfinite(column)], name, dtype)
        out[:, j] = column
    return out


def _is_pandas(x):
    return type(x).__module__.startswith("pandas") and hasattr(x, "to_numpy")


def column_names(X):
    """A pandas DataFrame's column names as a tuple of strings; None for any
    other input, or a frame with a name that is not a string (pandas' default
    0, 1, 2 ... says nothing about what a column holds)."""
    if not (_is_pandas(X) and hasattr(X, "columns")):
        return None
    names = tuple(X.columns)
    return names if names and all(isinstance(c, str) for c in names) else None


def differing_columns(given, expected, source="the network"):
    """Words for how the column names ``given`` differ from ``expected``
    (those of ``source``)."""
    missing = [c for c in expected if c not in given]
    extra = [c for c in given if c not in expected]

    def shown(names):
        return ", ".join(repr(c) for c in names[:5]) + (" ..." if len(names) > 5 else "")

    words = []
    if missing:
        words.append(f"it lacks {shown(missing)}")
    if extra:
        words.append(f"it has {shown(extra)}, unknown to {source}")
    if not words:
        at = next((i for i, (a, b) in enumerate(zip(given, expected)) if a != b), None)
        if at is None:  # the same names, and more: some of them twice
            twice = [c for i, c in enumerate(given) if c in given[:i]]
            words.append(f"it has {len(given)} columns where {source} has {len(expected)} "
                         f"({shown(twice)} more than once)")
        else:
            words.append(f"its columns are in another order (column {at} is {given[at]!r}, "
                         f"where {source} has {expected[at]!r})")
    return "; ".join(words)


def check_same_columns(X, name, expected, source, how):
    """Refuse a DataFrame ``X`` whose column names are not ``expected``, those
    of ``source`` ("the network": those it was trained on; or "X_train");
    None: nothing to check. ``how`` selects them (``list(X_train.columns)``)."""
    names = column_names(X)
    if names is None or expected is None or names == expected:
        return
    raise InputValueError(
        f"{name} is a DataFrame of other columns than {source} "
        f"{'was trained on' if source == 'the network' else 'has'}: "
        f"{differing_columns(names, expected, source)}; select and order them as in "
        f"training ({name}[{how}])")


def _dtypes(x):
    return list(x.dtypes) if hasattr(x, "columns") else [x.dtype]


def _kind(dtype):
    return getattr(dtype, "kind", "O")  # pandas' own dtypes have one too ("O": category...)


def _refuse_columns_of_other_kinds(X, name):
    """A DataFrame's columns that hold no numbers, by name and dtype."""
    if not (_is_pandas(X) and hasattr(X, "columns")):
        return
    bad = [(c, d) for c, d in zip(X.columns, X.dtypes) if _kind(d) not in "biuf"]
    if bad:
        shown = ", ".join(f"{c!r} ({d})" for c, d in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise InputTypeError(f"{name} has columns of a non-numeric dtype: {shown}; convert "
                             "numbers held as text or objects with pandas.to_numeric, encode "
                             "categories as numbers (pandas.get_dummies, or scikit-learn's "
                             "OneHotEncoder or OrdinalEncoder), or drop the columns")


def all_finite(values) -> bool:
    """Whether a float array holds no NaN or infinity, without a temporary the
    size of the data: NaN and infinities survive a sum, so a finite sum settles
    it in one pass; only a sum that overflowed needs the element-wise check."""
    with np.errstate(over="ignore", invalid="ignore"):  # float16 sums overflow at 65504
        total = values.sum(dtype=np.float32 if values.itemsize < 4 else None)
    return bool(np.isfinite(total)) or bool(np.isfinite(values).all())


def largest_magnitude(values):
    """``|values|.max()`` as a Python float, without the copy ``abs`` makes
    (unsigned integers too: their minimum is read as a float first)."""
    return max(-float(values.min()), float(values.max()))


def _fits(values, name, dtype):
    """Finite float values must stay finite in the compute dtype."""
    if dtype is None or not np.issubdtype(values.dtype, np.floating):
        return
    limit = float(np.finfo(dtype).max)  # a Python float: no cast of 1e300 to float32
    if values.dtype.itemsize > np.dtype(dtype).itemsize:
        largest = largest_magnitude(values)
        if largest > limit:
            raise InputValueError(f"{name} has magnitudes up to {largest:g}, beyond the range "
                                  f"of {dtype} (largest {limit:g}); rescale the data")


def _refuse_overflowing_errors(y, name, dtype):
    """Regression targets so large that a batch's squared errors (predictions
    start near 0) overflow the compute dtype: the loss would be infinite, and
    fit would blame the learning rate."""
    if not y.size or not np.issubdtype(y.dtype, np.number):
        return
    kind = np.dtype(np.float64 if dtype is None else dtype)
    terms = min(y.shape[0], 1024) * y.shape[1]  # a batch's squared errors, at most
    limit = math.sqrt(float(np.finfo(kind).max) / terms)
    largest = largest_magnitude(y)
    if largest >= limit:
        raise InputValueError(
            f"{name} holds values up to {largest:g}: the squared errors of {terms // y.shape[1]}"
            f" rows of such targets overflow {kind.name} (largest {float(np.finfo(kind).max):g})"
            ", so the loss would be infinite; scale the targets (divide them by their "
            "standard deviation, and multiply the predictions back)")


HALF_MAX = 65504.0  # float16's largest finite value (from 65520 up, rounding gives inf)


def check_half_range(largest, name):
    """Inputs of a float16-precision network are float16 operands of the
    first product: a magnitude of 65520 or more would become infinite there."""
    with np.errstate(over="ignore"):  # as float32 holds it: 65519.999 is 65520, 1e39 inf
        held = float(np.float32(largest))
    if held >= 65520.0:
        raise InputValueError(
            f"{name} has magnitudes up to {largest:g}, beyond float16's range (largest "
            f"{HALF_MAX:g}), in which precision='float16' multiplies matrices: standardise "
            "the inputs (nnx.data.feature_stats, standardize_with) or use "
            "precision='bfloat16'")


def check_features(X, name="X", n_features=None, dtype=None, finite=True):
    """A 2-D, non-empty, real-valued, finite host array, returned as NumPy
    (values are checked to fit ``dtype``, the compute dtype, when given).
    ``finite=False``: NaN and infinities are let through (the caller checked
    them, or was told not to, as scikit-learn's ``assume_finite``)."""
    _refuse_columns_of_other_kinds(X, name)
    X = plain(X, name, "a 2-D numeric array", dtype)
    if not _numeric(X.dtype):
        raise InputTypeError(f"{name} must hold numbers, got dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise InputTypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise InputValueError(f"{name} must be 2-D (rows, features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputValueError(f"{name} is empty (shape {X.shape})")
    if n_features is not None and X.shape[1] != n_features:
        raise InputValueError(
            f"{name} has {X.shape[1]} features, but the network was built for {n_features}"
        )
    if finite and np.issubdtype(X.dtype, np.floating) and not all_finite(X):
        wrong = ~np.isfinite(X)
        # (rows of one: no column is "NaN in every row" worth a hint)
        columns = np.flatnonzero(wrong.all(axis=0)) if X.shape[0] > 1 else np.array([], int)
        hint = "" if not columns.size else (
            f"; column(s) {columns[:5].tolist()}{'...' if columns.size > 5 else ''} are NaN "
            "in every row: a constant feature divided by its standard deviation of 0? "
            "(nnx.data.feature_stats gives such a feature a scale of 1)")
        raise InputValueError(f"{name} contains {int(np.count_nonzero(wrong))} NaN or infinite "
                              f"value(s){hint}")
    _fits(X, name, dtype)
    return X


def typical_spread(X, rows=1000):
    """The median over the columns of ``max(|mean|, std)`` of ``X``'s first
    ``rows`` rows: about 1 for standardised data, whatever a few columns do."""
    sample = np.asarray(X[:rows], dtype=np.float64)
    return float(np.median(np.maximum(np.abs(sample.mean(axis=0)), sample.std(axis=0))))


def spread_problem(X, name, rows=1000, limit=10.0):
    """A warning's text when the columns of ``X`` (its first ``rows`` rows) are
    far from standardised (a mean or standard deviation beyond ``limit`` in
    size), else None. Raw pixels (0-255) train to near chance with rates chosen
    for standardised data, and nothing else says why."""
    sparse = is_sparse(X)
    if sparse:  # the columns' statistics over stored values and zeros, no dense copy
        rows_of = X if getattr(X, "format", None) in ("csr", "csc") else X.tocsr()  # COO...
        sample = rows_of[:rows].astype(np.float64)
        means = np.asarray(sample.mean(axis=0)).ravel()
        squares = np.asarray(sample.multiply(sample).mean(axis=0)).ravel()
        mean, std = np.abs(means).max(), np.sqrt(np.maximum(squares - means * means, 0)).max()
    else:
        sample = np.asarray(X[:rows], dtype=np.float64)
        mean, std = np.abs(sample.mean(axis=0)).max(), sample.std(axis=0).max()
    if mean <= limit and std <= limit:
        return None
    how = ("scale each feature without centring it, which keeps it sparse (scikit-learn's "
           "MaxAbsScaler, or StandardScaler(with_mean=False))" if sparse else
           "scale each feature to mean 0 and standard deviation 1 with the training rows' "
           "statistics (nnx.data.feature_stats and standardize_with, or scikit-learn's "
           "StandardScaler)")
    return (f"{name} is far from standardised: its columns have means up to {mean:.4g} and "
            f"standard deviations up to {std:.4g}. Networks train poorly on such inputs; "
            + how)


def check_targets(y, n_rows, n_classes, name="y", distributions=False, x_name="X",
                  dtype=None, ids_only=False, unit=False):
    """Integer class ids (1-D) or target rows (2-D) -> a float array
    ``(n_rows, n_classes)`` on the host (of ``dtype``, float64 if None),
    after checking every label. With ``distributions=True`` (classification
    losses) rows must be one-hot or, more generally, non-negative and sum to
    one. For a one-output network and a regression loss, 1-D targets are the
    values themselves. ``ids_only``: class ids come back as they are (int64),
    not as one-hot rows. ``unit``: every target must lie in [0, 1] (the
    probabilities a sigmoid cross-entropy learns)."""
    if is_sparse(y):  # one-hot rows from OneHotEncoder(), sparse by default: (rows, classes)
        y = y.toarray()
    y = plain(y, name, "an array of labels")
    if not _numeric(y.dtype):
        hint = "" if y.dtype.kind not in "USO" else (
            ": class labels such as these are encoded as ids 0..K-1 first "
            "(sklearn.preprocessing.LabelEncoder), or nnx.sklearn.MLPClassifier takes them "
            "as they are")
        raise InputTypeError(f"{name} must hold numbers, got dtype {y.dtype}{hint}")
    if np.issubdtype(y.dtype, np.complexfloating):
        raise InputTypeError(f"{name} must hold real numbers, got dtype {y.dtype}")
    if y.ndim == 0 or y.size == 0:
        raise InputValueError(f"{name} is empty or a scalar (shape {y.shape}); expected one label "
                              "per row")
    if y.shape[0] != n_rows:
        raise InputValueError(f"{name} has {y.shape[0]} rows but {x_name} has {n_rows}")
    if y.ndim == 2 and y.shape[1] == 1 and n_classes != 1:
        y = y[:, 0]
    if y.ndim == 1 and n_classes == 1 and not distributions:
        y = y[:, None]  # one output and no classes: each row's target value
    if unit and y.ndim == 2 and np.issubdtype(y.dtype, np.number) and y.size \
            and (y.min() < 0 or y.max() > 1):
        raise InputValueError(
            f"{name} holds values from {y.min():g} to {y.max():g}; a sigmoid cross-entropy "
            "learns a probability per output, so its targets are 0/1 labels (or values in "
            "[0, 1])" + (": a network with one output takes 0/1 class ids; for more classes "
                         "give it one output per class (class ids work then)"
                         if n_classes == 1 else ""))
    if np.issubdtype(y.dtype, np.floating) and not all_finite(y):
        bad = int(np.count_nonzero(~np.isfinite(y)))
        raise InputValueError(f"{name} contains NaN or infinite values ({bad} of them)")
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer):
            off = np.flatnonzero(y != np.round(y))
            if off.size:
                first = float(y[off[0]])
                # a regression loss reads 1-D targets as class ids only for several outputs
                hint = "" if distributions else (
                    f"; regression targets for a network with {n_classes} outputs have "
                    f"shape ({n_rows}, {n_classes})")
                raise InputValueError(f"{name}: class ids must be integers, got {first!r} "
                                      f"(row {int(off[0])}; {off.size} non-integer value(s))"
                                      + hint)
        low, high = y.min(), y.max()  # before any cast, so huge values are reported as they are
        if low < 0 or high >= n_classes:
            raise InputValueError(
                f"{name}: class ids must be in [0, {n_classes - 1}] for a network with "
                f"{n_classes} outputs, got values from {low:g} to {high:g}"
            )
        if ids_only:
            return y.astype(np.int64, copy=False)
        # straight in the compute dtype: one full-size array, not a float64 one and a copy
        out = np.zeros((n_rows, n_classes), dtype=np.float64 if dtype is None else dtype)
        out[np.arange(n_rows), y.astype(np.int64)] = 1.0
        return out
    if y.ndim != 2 or y.shape[1] != n_classes:
        raise InputValueError(
            f"{name} must be class ids of shape ({n_rows},) or targets of shape "
            f"({n_rows}, {n_classes}), got shape {y.shape}"
        )
    _fits(y, name, dtype)
    if not distributions and not unit:
        _refuse_overflowing_errors(y, name, dtype)
    if distributions:
        sums = y.sum(axis=1)
        bad = np.flatnonzero((np.abs(sums - 1) > 1e-6) | (y.min(axis=1) < 0))  # no (n, k) mask
        if bad.size:
            i = int(bad[0])
            raise InputValueError(
                f"{name}: one-hot rows must be non-negative and sum to one; row {i} sums to "
                f"{sums[i]:g} ({bad.size} bad row(s)); pass class ids or one-hot rows")
    return y


def c_order(X, dtype):
    """``X`` (a checked host array) C-contiguous in ``dtype``: itself when it
    is already, else one converted copy."""
    return np.ascontiguousarray(X, dtype=dtype)


def unseen_classes(y_fit, y_val):
    """The class ids of ``y_val`` absent from ``y_fit`` (sorted, as ints), when
    both are 1-D class ids on the host (NumPy, a pandas Series, whole
    floats); else an empty list (nothing to judge)."""
    ids = []
    for a in (y_fit, y_val):
        if not (isinstance(a, np.ndarray) or _is_pandas(a)) or getattr(a, "ndim", 0) != 1:
            return []
        try:
            a = np.asarray(a.to_numpy(dtype=np.float64, na_value=np.nan) if _is_pandas(a)
                           else a)
        except (TypeError, ValueError):  # labels of text: checked as targets later
            return []
        if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
            return []
        if a.dtype.kind not in "iuf":
            return []
        ids.append(a.astype(np.int64))
    return np.setdiff1d(np.unique(ids[1]), np.unique(ids[0])).tolist()


def class_ids(targets):
    """Class id of each row of checked target rows (``check_targets`` output)."""
    return np.asarray(targets).argmax(axis=1)


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
