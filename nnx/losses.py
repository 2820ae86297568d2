"""Losses: a scalar from predictions and targets, and its gradient."""

from __future__ import annotations

from . import _checks
from ._checks import InputTypeError, InputValueError
from .backend import backend_of
from .ops import _check_shape


class Loss:
    """``forward(prediction, target)`` returns the loss as a 0-d array on the
    prediction's device (read it with ``float()``, which waits for the device);
    ``backward()`` returns the gradient with respect to the prediction.

    A loss of your own subclasses ``Loss`` and implements ``_compute()``,
    which returns ``(value, gradient)`` from ``self.prediction`` and
    ``self.target`` (both ``(rows, outputs)``) with the array functions of
    ``self.backend.xp``: the value a 0-d array, the gradient shaped like the
    prediction. Set ``classification = True`` if targets are class
    distributions (then class ids are accepted too), ``binary = True`` if each
    output is the logit of a target in [0, 1] (``threshold``, where a
    one-output network's class changes, then follows: 0 rather than 0.5). It trains like the
    built-in losses; checkpoints (``save``, ``fit(checkpoint=...)``) hold the
    built-in losses only.
    """

    backend = None  # set by the network that owns the loss
    classification = False  # targets are class distributions (rows sum to one)
    binary = False  # each output is the logit of its own 0/1 target (a sigmoid per output)

    @property
    def threshold(self):
        """A one-output network predicts class 1 where its output is above
        this: 0 for a logit (``binary``), 0.5 for a probability."""
        return 0.0 if self.binary else 0.5
    _grad = None  # the gradient of the last forward pass
    _follows_input = True  # until a network binds the loss to its backend
    _auto_backend = None  # the backend last taken from a prediction (not set by hand)

    def __getstate__(self):
        # copies and pickles keep the settings, not the arrays of the last batch
        last = ("prediction", "target", "value", "_grad", "input_grad")
        return {k: v for k, v in self.__dict__.items() if k not in last}

    def _bind(self, backend):
        """Compute in ``backend`` from now on (the network's backend and dtype)."""
        self._check_backend(backend)
        self.backend, self._follows_input = backend, False

    def _check_backend(self, backend):
        """Raise ValueError if the loss's settings do not work in the backend's dtype."""

    def forward(self, prediction, target):
        if getattr(target, "shape", None) != getattr(prediction, "shape", None) \
                and len(getattr(target, "shape", (0, 0))) == 1:
            # class ids or 1-D values: what train_batch takes, not train_step
            raise InputValueError(
                f"target has shape {tuple(target.shape)}, expected {tuple(prediction.shape)}: "
                "one row of targets per sample (net.as_target(y, rows) makes them from class "
                "ids or values; train_batch and fit take class ids as they are)")
        _check_shape("target", target, prediction)
        self.prediction = prediction
        self.target = target
        if self._follows_input and self.backend is self._auto_backend:
            # a loss used on its own: the prediction's backend and dtype
            backend = backend_of(prediction)
            self._check_backend(backend)
            self.backend = self._auto_backend = backend
        self.value, self._grad = self._compute()
        if tuple(getattr(self.value, "shape", ())) != ():
            raise InputValueError(
                f"{type(self).__name__}._compute() returned a loss of shape "
                f"{tuple(self.value.shape)}; expected one number, the mean over the rows")
        return self.value

    def backward(self):
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() was called before its "
                               "forward(prediction, target)")
        self.input_grad = self._grad
        _check_shape("loss gradient", self.input_grad, self.prediction)
        return self.input_grad

    def _compute(self):
        raise NotImplementedError(
            f"{type(self).__name__} defines no _compute(), which returns (the mean loss of "
            "self.prediction against self.target, its gradient with respect to "
            "self.prediction) (see MeanSquaredError)")

    def describe(self) -> dict:
        if type(self) not in LOSSES.values():
            raise InputTypeError(f"cannot describe {type(self).__name__}: checkpoints hold the "
                                 f"built-in losses only ({sorted(LOSSES)})")
        return {"name": self.name}


class MeanSquaredError(Loss):
    """``sum((p - y)**2) / n_rows``; gradient ``2 (p - y) / n_rows``."""

    name = "mse"

    def _compute(self):
        return self.backend.mean_squared_error(self.prediction, self.target)


class SoftmaxCrossEntropy(Loss):
    """Softmax per row, then the categorical cross-entropy
    ``-sum(y * log(clip(p, eps, 1 - eps))) / n_rows``; gradient
    ``(softmax - y) / n_rows``. Loss and gradient come from one pass."""

    name = "softmax_cross_entropy"
    classification = True

    def __init__(self, eps=1e-9):
        self.eps = _checks.in_range("SoftmaxCrossEntropy eps", eps, 0, 0.5, low_open=True,
                                    high_open=True)

    def _check_backend(self, backend):
        # the clip keeps log() finite only if eps survives the cast to the dtype
        dtype, tiny = backend.dtype_name, float(backend.xp.finfo(backend.dtype).smallest_normal)
        if self.eps < tiny:
            raise InputValueError(f"SoftmaxCrossEntropy eps={self.eps!r} is below the smallest "
                                  f"normal {dtype} ({tiny:.3g}), so clipping cannot keep log() "
                                  f"finite; use eps >= {tiny:.3g} or dtype='float64'")

    def _compute(self):
        return self.backend.softmax_cross_entropy(self.prediction, self.target, self.eps)

    def describe(self) -> dict:
        return {**super().describe(), "eps": self.eps}


class SigmoidCrossEntropy(Loss):
    """A sigmoid per output, then the binary cross-entropy of each against its
    target in [0, 1], summed over the outputs and averaged over the rows:
    ``sum(max(z, 0) - z y + log(1 + exp(-|z|))) / n_rows`` of the raw outputs
    ``z``, which is ``-sum(y log s(z) + (1 - y) log(1 - s(z))) / n_rows``
    computed without overflow or a clip; gradient ``(s(z) - y) / n_rows``.
    One output makes a binary classifier (targets: 0/1 class ids); several
    make independent labels (multilabel 0/1 rows, or class ids as one-vs-rest
    rows). PyTorch's ``BCEWithLogitsLoss(reduction="sum")`` over the rows."""

    name = "sigmoid_cross_entropy"
    binary = True

    def _compute(self):
        return self.backend.sigmoid_cross_entropy(self.prediction, self.target)


LOSSES = {"mse": MeanSquaredError, "softmax_cross_entropy": SoftmaxCrossEntropy,
          "sigmoid_cross_entropy": SigmoidCrossEntropy}


def loss_from_description(d) -> Loss:
    """Rebuild a loss from ``Loss.describe()`` output (checkpoints)."""
    _checks.name_in("loss", d.get("name"), LOSSES)
    kwargs = {"eps": d["eps"]} if "eps" in d else {}
    return LOSSES[d["name"]](**kwargs)
