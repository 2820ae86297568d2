"""Losses: a scalar from predictions and targets, and its gradient."""

from __future__ import annotations

from . import _checks
from .backend import backend_of
from .ops import _check_shape


class Loss:
    """``forward(prediction, target)`` returns the loss as a 0-d array on the
    prediction's device (read it with ``float()``, which waits for the device);
    ``backward()`` returns the gradient with respect to the prediction."""

    backend = None  # set by the network that owns the loss
    classification = False  # targets are class distributions (rows sum to one)
    _grad = None  # the gradient of the last forward pass

    def __getstate__(self):
        # copies and pickles keep the settings, not the arrays of the last batch
        last = ("prediction", "target", "value", "_grad", "input_grad")
        return {k: v for k, v in self.__dict__.items() if k not in last}

    def forward(self, prediction, target):
        _check_shape("target", target, prediction)
        self.prediction = prediction
        self.target = target
        if self.backend is None:  # a loss used outside a network
            self.backend = backend_of(prediction)
        self.value, self._grad = self._compute()
        return self.value

    def backward(self):
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() was called before its "
                               "forward(prediction, target)")
        self.input_grad = self._grad
        _check_shape("loss gradient", self.input_grad, self.prediction)
        return self.input_grad

    def _compute(self):
        raise NotImplementedError

    def describe(self) -> dict:
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
        eps = float(eps)
        if not 0.0 < eps < 0.5:
            raise ValueError(f"SoftmaxCrossEntropy eps={eps!r} must be in (0, 0.5)")
        self.eps = eps

    def _compute(self):
        return self.backend.softmax_cross_entropy(self.prediction, self.target, self.eps)

    def describe(self) -> dict:
        return {"name": self.name, "eps": self.eps}


LOSSES = {"mse": MeanSquaredError, "softmax_cross_entropy": SoftmaxCrossEntropy}


def loss_from_description(d) -> Loss:
    """Rebuild a loss from ``Loss.describe()`` output (checkpoints)."""
    _checks.name_in("loss", d.get("name"), LOSSES)
    kwargs = {"eps": d["eps"]} if "eps" in d else {}
    return LOSSES[d["name"]](**kwargs)
