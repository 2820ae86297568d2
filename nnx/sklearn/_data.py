"""Inputs of the estimators: checked once, sent to the device once.

Host data (NumPy arrays, lists, DataFrames) are checked by scikit-learn's own
``validate_data``, so the estimators refuse what scikit-learn's refuse, with
its messages, and record ``n_features_in_``/``feature_names_in_`` as it does.
CuPy arrays (``backend="gpu"``) are checked on the device and never copied to
the host; only the classes found in ``y`` and the sample weights (one number
a row, for the per-batch L2 coefficient) are read back.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import _check_sample_weight, validate_data

from .._checks import InputTypeError, InputValueError
from ..backend.host import is_sparse


def on_device(x) -> bool:
    """True for a GPU array (CuPy or anything with the CUDA array interface)."""
    return hasattr(x, "__cuda_array_interface__")


def cupy():
    """CuPy, through the backend shim (the one place that imports it)."""
    from ..backend import get_backend

    return get_backend("gpu").xp


def to_numpy(x):
    if isinstance(x, np.ndarray) and not on_device(x):
        return x
    return x.get() if hasattr(x, "get") else np.asarray(x)


def dtype_of(x):
    return getattr(x, "dtype", None)


def _refuse_sparse_on_gpu(est, X, name="X"):
    """Sparse X (any SciPy format) trains on the CPU backend, as CSR rows; the
    GPU backend takes dense arrays only."""
    if est.backend == "gpu" and is_sparse(X):
        raise InputTypeError(f"{name} is a sparse matrix ({type(X).__name__}): with "
                             "backend='gpu' nnx's estimators take dense arrays (pass "
                             f"{name}.toarray() if it fits in memory); backend='cpu' takes "
                             "sparse X as scikit-learn's do")


def _device_matrix(est, X, name, reset):
    """Checks of a device ``X`` without leaving the device (one sync for the
    finiteness check)."""
    if est.backend != "gpu":
        raise InputValueError(f"{name} is a GPU array ({type(X).__module__.split('.')[0]}); use "
                         "backend='gpu', or pass a NumPy array")
    if X.ndim != 2 or 0 in X.shape:
        raise InputValueError(f"{name} must be a non-empty 2-D array (rows, features), got shape "
                         f"{tuple(X.shape)}")
    if X.dtype.kind not in "fiub":
        raise InputValueError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.dtype.kind == "f" and not bool(cupy().isfinite(X).all()):
        raise InputValueError(f"Input {name} contains NaN or infinity.")
    if reset:
        est.n_features_in_ = int(X.shape[1])
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    elif X.shape[1] != est.n_features_in_:
        raise InputValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is "
                         f"expecting {est.n_features_in_} features as input.")
    return X


class FitData:
    """The data of one ``fit``: ``X`` (rows, features), the encoded targets
    ``Y`` (rows, outputs) and the sample weights ``sw`` (rows,) or None, on the
    host until ``to_device`` moves them (one copy each, in the compute dtype)."""

    def __init__(self, X, Y, sw, dtype, stratify):
        self.X, self.Y, self.sw = X, Y, sw
        self.n_samples, self.n_features = int(X.shape[0]), int(X.shape[1])
        self.n_outputs = int(Y.shape[1])
        self.dtype = dtype
        self.stratify = stratify  # host labels scikit-learn stratifies on, or None

    def validation(self, backend, val, decode):
        """The validation rows on the device, and their targets (through
        ``decode``) and weights on the host: taken once per fit, then reused
        by every epoch's score."""
        cached = getattr(self, "_val", None)
        if cached is None:
            b = backend
            rows = b.asarray(val, dtype="int64")
            truth = to_numpy(decode(b.take_rows(self.Y, rows)))
            sw = None if self.sw is None else to_numpy(b.take_rows(self.sw, rows))
            cached = self._val = (rows, truth, sw)
        return cached

    def predict_rows(self, net, rows, chunk=4096):
        """The network's outputs for the rows ``rows`` of ``X`` (the validation
        rows at each epoch), gathered a chunk at a time: one chunk's rows in
        memory, not a copy of them all every epoch."""
        b, n = net.backend, int(rows.shape[0])
        parts = [net.predict(b.take_rows(self.X, rows[i:i + chunk]), batch_size=chunk)
                 for i in range(0, n, chunk)]
        return parts[0] if len(parts) == 1 else b.concat_rows(parts)

    def to_device(self, backend):
        b = backend
        # the weights' sums per batch are taken on the host, so no batch waits
        # on the device for its L2 coefficient (n numbers, read once)
        self.sw_host = None if self.sw is None else to_numpy(self.sw).astype(np.float64)
        # sparse X stays sparse: CSR rows in the compute dtype, on the CPU
        # (rows are gathered from X at every batch: C-contiguous ones, one copy at most)
        self.X = self.X.astype(self.dtype, copy=False) if is_sparse(self.X) else \
            b.rows_contiguous(b.asarray(self.X))
        self.Y = b.asarray(self.Y)
        self.sw = None if self.sw is None else b.asarray(self.sw)


def prepare_fit(est, X, y, sample_weight, incremental, reset):
    """Check and encode ``X``, ``y``, ``sample_weight`` for ``fit``/``partial_fit``."""
    if on_device(X):
        X = _device_matrix(est, X, "X", reset)
        y = cupy().asarray(y) if on_device(y) else np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise InputValueError(f"Found input variables with inconsistent numbers of "
                                  f"samples: [{X.shape[0]}, {y.shape[0]}]")
        if on_device(y):
            Y = est._encode_device(y, incremental)
            stratify = None  # scikit-learn stratifies binary targets only; see _split
            if Y.shape[1] == 1 and est._is_classifier() and est.early_stopping:
                stratify = to_numpy(Y)
        else:  # host labels (strings, say) with device features: encoded on the host
            Y, stratify = est._encode(y, incremental)
        sw = _device_weights(sample_weight, X)
    else:
        _refuse_sparse_on_gpu(est, X)
        X = _refuse_strings(X, "training takes")  # as predict refuses them, before any work
        _refuse_times(X, "X")
        if not est._is_classifier():  # a regressor would learn nanoseconds since 1970
            _refuse_times(y, "y")
        # C order in the same conversion: batches gather rows (a Fortran-ordered
        # X of another dtype was converted, then copied again by to_device)
        X, y = validate_data(est, X, y, multi_output=True, dtype=_host_dtype(est, reset),
                             accept_sparse="csr", reset=reset, order="C",
                             y_numeric=not est._is_classifier())
        Y, stratify = est._encode(y, incremental)
        sw = None if sample_weight is None else _check_sample_weight(sample_weight, X)
    # a warm start or partial_fit goes on in the dtype of the first fit
    dtype = est._fit_dtype if not reset and hasattr(est, "_fit_dtype") else est._compute_dtype(X)
    if sw is not None:
        _check_weight_sum(sw, dtype)
    if not (est.early_stopping and est._is_classifier() and Y.shape[1] == 1):
        stratify = None  # only that split reads it (a copy of Y held for the whole fit)
    return FitData(X, _as_dtype(Y, dtype), _as_dtype(sw, dtype), dtype, stratify)


def _refuse_times(a, name):
    """Dates and durations (NumPy's datetime64/timedelta64, or such pandas
    columns) are not numbers to train on: as numbers they are counts of
    nanoseconds (or seconds) since 1970."""
    dtypes = getattr(a, "dtypes", None)  # a DataFrame's, column by column
    kinds = list(dtypes.items()) if hasattr(dtypes, "items") else \
        [(None, getattr(a, "dtype", None))]
    for column, dtype in kinds:
        if getattr(dtype, "kind", None) in ("M", "m"):
            where = f"{name}'s column {column!r}" if column is not None else name
            raise InputTypeError(f"{where} holds {dtype} values: dates and durations are not "
                                 "features or targets as they are; convert them to numbers "
                                 "that mean something (days since a start, say) first")


def _check_weight_sum(sw, dtype):
    """The weights' sum divides the loss: it must be a positive finite number
    in the compute dtype (1e308 each summed to inf, and the fit to NaN; a sum of
    zero raised ZeroDivisionError from inside NumPy)."""
    xp = cupy() if on_device(sw) else np
    total = float(xp.sum(sw, dtype=xp.float64))
    limit = float(np.finfo(dtype).max)
    if not (0 < total <= limit):
        raise InputValueError(
            f"sample_weight sums to {total:g}; the weights divide the loss by their sum, which "
            f"must be above 0 and within {np.dtype(dtype).name}'s range (largest {limit:g}): "
            "rescale them (only their ratios matter)")


def _host_dtype(est, reset):
    """The dtype scikit-learn's checks convert host ``X`` to: the compute
    dtype where it is known already (given, or a warm start's), so that
    integer data becomes it in one copy, not float64 first; otherwise
    scikit-learn's rule (float32 stays, anything else becomes float64)."""
    if not reset and hasattr(est, "_fit_dtype"):
        return np.dtype(est._fit_dtype)
    return (np.float64, np.float32) if est.dtype is None else np.dtype(est.dtype)


def _as_dtype(a, dtype):
    return None if a is None else a.astype(dtype, copy=False)


def _device_weights(sample_weight, X):
    if sample_weight is None:
        return None
    cp = cupy()
    sw = cp.asarray(sample_weight)
    if sw.ndim == 0:
        sw = cp.full(X.shape[0], sw, dtype=X.dtype if X.dtype.kind == "f" else "float64")
    if sw.shape != (X.shape[0],):
        raise InputValueError(f"sample_weight.shape == {tuple(sw.shape)}, expected "
                         f"({X.shape[0]},)!")
    if not bool(cp.isfinite(sw).all()) or bool((sw < 0).any()):
        raise InputValueError("sample_weight must be finite and non-negative")
    return sw


def prepare_predict(est, X):
    """``X`` on the fitted network's device in its dtype, and whether it came
    from the host (predictions then go back there)."""
    if on_device(X):
        X = _device_matrix(est, X, "X", reset=False)
        host = False
    else:
        _refuse_sparse_on_gpu(est, X)
        X = _refuse_strings(X)
        # checked in its own numeric dtype: the network converts it a chunk of rows at a
        # time (a whole converted copy cost as much memory as X in the fit's dtype)
        X = validate_data(est, X, dtype="numeric", accept_sparse="csr", reset=False)
        return X, True
    return X.astype(est._fit_dtype, copy=False), host


def _refuse_strings(X, what="predictions take"):
    """``X`` (a list made an array once), refused if it holds strings:
    scikit-learn predicts from numbers only (its check asks for a numeric
    dtype), where converting to the fit's dtype would read "1.5" as 1.5."""
    if isinstance(X, (list, tuple)):
        try:
            X = np.asarray(X)
        except ValueError:  # ragged rows: scikit-learn's check says so
            return X
    if isinstance(X, np.ndarray) and X.dtype.kind in "US":
        raise InputValueError(f"X holds strings (dtype {X.dtype}): {what} numbers; "
                              "convert them (X.astype(float)) first")
    return X


def packed_order(layer_units):
    """Where each entry of nnx's flat parameter buffer (W1, B1, W2, B2, ...)
    sits in scikit-learn's packed vector (W1, W2, ..., B1, B2, ...)."""
    shapes = list(zip(layer_units[:-1], layer_units[1:]))
    w_sizes = [a * c for a, c in shapes]
    w_start = np.cumsum([0] + w_sizes[:-1])
    b_start = sum(w_sizes) + np.cumsum([0] + [c for _, c in shapes[:-1]])
    parts = []
    for (_, c), ws, wn, bs in zip(shapes, w_start, w_sizes, b_start):
        parts += [np.arange(ws, ws + wn), np.arange(bs, bs + c)]
    return np.concatenate(parts)
