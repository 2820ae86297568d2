"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn's, on nnx."""

from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import column_or_1d
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels

from .._checks import InputTypeError, InputValueError
from . import _data
from ._base import BaseMLP

_SHARED_DOC = """
    Every parameter of scikit-learn's estimator, with the same meaning and
    default (see its documentation), plus three of nnx's:

    backend : "cpu" or "gpu", default "cpu"
        Where the arithmetic runs. With "gpu", X may be a NumPy or a CuPy
        array; CuPy inputs stay on the device and predictions come back as
        CuPy arrays.
    dtype : None, "float32" or "float64", default None
        The compute dtype. None follows scikit-learn: float32 input trains in
        float32, anything else in float64.
    dropout : float in [0, 1), default 0.0
        The fraction of each hidden layer's units dropped at random in
        training (inverted dropout; nothing is dropped at prediction). 0 turns
        it off and keeps the numbers identical to scikit-learn's.

    In float64 on the CPU, with the same data, parameters and random_state,
    the fitted attributes (``coefs_``, ``loss_curve_``, ``n_iter_``, ...) equal
    scikit-learn's to rounding, also for SciPy sparse X, which trains and
    predicts with ``backend="cpu"`` (kept sparse; ``backend="gpu"`` takes
    dense arrays only).
"""


def _store(est, params):
    """Every constructor argument (``locals()`` of the ``__init__``) kept as
    given, under its own name (what scikit-learn's ``get_params``/``clone``
    expect of an ``__init__``). Those of this class's ``__init__``, not of a
    subclass's, which may take more or fewer (and sets its own)."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(est, name, value)


def _stochastic(est):
    if est.solver not in ("sgd", "adam"):
        raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                             f"{est.solver} is not stochastic.")
    return True


class MLPClassifier(ClassifierMixin, BaseMLP):
    __doc__ = ("A multi-layer perceptron classifier, a drop-in for "
               "``sklearn.neural_network.MLPClassifier``.\n" + _SHARED_DOC)
    loss = "log_loss"  # as scikit-learn's MLPClassifier says (not a parameter)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="cpu", dtype=None, dropout=0.0):
        _store(self, locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    # ---------------------------------------------------------- the model
    def _is_classifier(self):
        return True

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _loss_name(self):
        return "binary_log_loss" if self.out_activation_ == "logistic" else "log_loss"

    def _encode(self, y, incremental):
        """Host labels -> the binarised targets (rows, outputs), and the same
        array for stratification (as scikit-learn passes it)."""
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            self._check_classes(unique_labels(y))
        Y = _binarised(self._label_binarizer, y)
        return Y, Y

    def _check_classes(self, classes):
        if self.warm_start:
            if set(classes) != set(self.classes_):
                raise InputValueError("warm_start can only be used where `y` has the same classes "
                                      f"as in the previous call to fit. Previously got "
                                      f"{self.classes_}, `y` has {classes}")
        elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
            raise InputValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                             f"{self.classes_}. 'y' has {classes}.")

    def _encode_device(self, y, incremental):
        """Device labels (1-D class labels, or a 2-D 0/1 indicator for
        multilabel) -> binarised targets on the device; only the classes are
        read back to the host."""
        return encode_labels(_data.cupy(), y, self, incremental)

    def _validation_score(self, net, data, val):
        b = net.backend
        rows, truth, sw = data.validation(b, val, lambda Y: self._decode(b.xp, Y))
        Z = data.predict_rows(net, rows)
        predicted = _data.to_numpy(self._decode(b.xp, net.loss.transform(Z)))
        return float(accuracy_score(truth, predicted, sample_weight=sw))

    def _decode(self, xp, P):
        """Labels from output activations (or from binarised targets), as
        LabelBinarizer.inverse_transform: a threshold of 0.5 for logistic
        outputs, the largest for softmax."""
        if self._label_binarizer.y_type_ == "multilabel-indicator":
            return (P > 0.5).astype(np.int64)
        classes = self.classes_
        if len(classes) == 1:  # scikit-learn predicts its one class, whatever the output
            idx = xp.zeros(P.shape[0], dtype=np.int64)
        else:
            idx = xp.argmax(P, axis=1) if P.shape[1] > 1 else (P[:, 0] > 0.5).astype(np.int64)
        if xp is np or classes.dtype.kind not in "biuf":
            return classes[_data.to_numpy(idx)]
        return xp.asarray(classes)[idx]

    # -------------------------------------------------------------- API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y`` (class labels, or a label
        indicator matrix for multilabel); ``sample_weight`` weighs the rows."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(_stochastic)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``X``, ``y``; ``classes`` (every class) is required on
        the first call."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            multilabel = (y.ndim == 2 and y.shape[1] > 1) if _data.on_device(y) else \
                type_of_target(y).startswith("multilabel")
            if multilabel:
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Class labels for ``X`` (an indicator matrix for multilabel)."""
        P, host, backend = self._forward(X)
        labels = self._decode(backend.xp, P)
        if self.n_outputs_ == 1 and labels.ndim > 1:
            labels = labels.ravel()
        if host and getattr(self._label_binarizer, "sparse_input_", False):
            return _sparse_labels(_data.to_numpy(labels))  # sparse y in, sparse labels out
        return _data.to_numpy(labels) if host else labels

    def predict_proba(self, X):
        """Class probabilities, one column per class in ``classes_`` order (two
        for a binary problem; one per label, each its own probability, for
        multilabel)."""
        P, host, backend = self._forward(X)
        if self.n_outputs_ == 1:
            p = P[:, 0]
            P = backend.xp.stack([1.0 - p, p], axis=1)
        return _data.to_numpy(P) if host else P

    def predict_log_proba(self, X):
        """The logarithm of ``predict_proba``."""
        P = self.predict_proba(X)
        xp = np if isinstance(P, np.ndarray) else _data.cupy()
        return xp.log(P, out=P)


def _binarised(binarizer, y):
    """``binarizer.transform(y)`` as booleans, made as booleans: the
    transform's int64 (rows x classes) array first took 8 times the memory.
    Multilabel and sparse targets, and labels it does not know, go through
    the transform itself (which says what is wrong)."""
    classes = binarizer.classes_
    if binarizer.y_type_ not in ("binary", "multiclass") or not isinstance(y, np.ndarray) \
            or y.ndim != 1 or len(classes) < 2:
        return binarizer.transform(y).astype(bool)
    try:
        idx = np.searchsorted(classes, y)
        known = (idx < len(classes)) & (classes[np.minimum(idx, len(classes) - 1)] == y)
    except TypeError:  # labels of mixed kinds: the transform's own message
        return binarizer.transform(y).astype(bool)
    if not known.all():
        return binarizer.transform(y).astype(bool)
    Y = np.zeros((len(y), len(classes)), dtype=bool)
    Y[np.arange(len(y)), idx] = True
    return Y[:, 1:] if len(classes) == 2 else Y


def _sparse_labels(labels):
    """Labels as LabelBinarizer.inverse_transform gives them after a fit on
    a sparse ``y``: a CSR matrix of the kind scikit-learn's settings ask for."""
    import scipy.sparse as sp
    try:
        from sklearn.utils._sparse import _align_api_if_sparse
    except ImportError:  # a scikit-learn without the sparse-interface setting
        return sp.csr_matrix(labels)
    return _align_api_if_sparse(sp.csr_array(labels))


def encode_labels(xp, y, est, incremental):
    """Binarise labels on ``y``'s device as LabelBinarizer does (sorted
    classes; one 0/1 column for two classes, one per class for more; a 2-D
    0/1 ``y`` is a multilabel indicator kept as it is). Sets ``classes_`` (a
    NumPy array, read from the device) on the first fit."""
    multilabel = y.ndim == 2 and y.shape[1] > 1
    if y.ndim == 2 and not multilabel:
        y = y[:, 0]
    if y.dtype.kind == "f" and bool(xp.any(y != xp.floor(y))):
        raise InputValueError("Unknown label type: continuous. The labels are floats with "
                         "fractions; a classifier needs class labels (for real-valued "
                         "targets use MLPRegressor)")
    classes = np.arange(y.shape[1]) if multilabel else _data.to_numpy(xp.unique(y))
    if not hasattr(est, "classes_") or (not est.warm_start and not incremental):
        # a LabelBinarizer fitted on the classes alone: host labels can go on
        # from here (warm start, partial_fit, a pickle loaded without a GPU)
        est._label_binarizer = LabelBinarizer().fit(
            np.eye(len(classes), dtype=int) if multilabel else classes)
        est.classes_ = est._label_binarizer.classes_
    elif not multilabel:
        est._check_classes(classes)
    if multilabel:
        return y
    known = xp.asarray(est.classes_)
    if known.shape[0] == 1:  # one class: LabelBinarizer's single column of zeros
        return xp.zeros((y.shape[0], 1), dtype=bool)
    Y = (y[:, None] == known[None, :])
    return Y[:, 1:] if known.shape[0] == 2 else Y


class MLPRegressor(RegressorMixin, BaseMLP):
    _parameter_constraints: dict = {
        **BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    __doc__ = ("A multi-layer perceptron regressor, a drop-in for "
               "``sklearn.neural_network.MLPRegressor``.\n" + _SHARED_DOC)

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="cpu", dtype=None, dropout=0.0):
        _store(self, locals())

    def _is_classifier(self):
        return False

    def _out_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _loss_name(self):
        return "poisson" if self.loss == "poisson" else "squared_error"

    def _encode(self, y, incremental):
        if y.dtype.kind in "US":  # scikit-learn's fails later, in its loss
            raise InputTypeError(f"y holds strings (dtype {y.dtype}): MLPRegressor fits "
                                 "numbers; convert them "
                                 "(y.astype(float)), or fit class labels with MLPClassifier")
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self._check_counts(y)
        return (y.reshape(-1, 1) if y.ndim == 1 else y), None

    def _encode_device(self, y, incremental):
        self._check_counts(y)
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _check_counts(self, y):
        """The Poisson deviance is defined for y >= 0 (scikit-learn's gives NaN)."""
        if self.loss == "poisson" and y.size:
            smallest = float(y.min())
            if smallest < 0:
                raise InputValueError(f"y has negative values (the smallest {smallest:g}); "
                                      "loss='poisson' needs y >= 0 (counts or rates)")

    def _validation_score(self, net, data, val):
        b = net.backend
        rows, truth, sw = data.validation(b, val, lambda Y: Y)
        Z = data.predict_rows(net, rows)
        predicted = _data.to_numpy(net.loss.transform(Z))
        if predicted.shape[1] == 1:
            predicted = predicted.ravel()
        if not np.isfinite(predicted).all():
            return np.nan
        return float(r2_score(truth, predicted, sample_weight=sw))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y`` (rows, or rows x outputs);
        ``sample_weight`` weighs the rows."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(_stochastic)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X``, ``y``."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted targets: (rows,) for one output, (rows, outputs) for more."""
        P, host, _ = self._forward(X)
        if P.shape[1] == 1:
            P = P.ravel()
        return _data.to_numpy(P) if host else P
