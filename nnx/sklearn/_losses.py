"""scikit-learn's MLP losses as nnx losses, on the network's device.

Each takes the last layer's raw outputs ``z`` (a linear layer), applies the
output activation scikit-learn pairs with it, and returns

* the loss as scikit-learn's ``neural_network._base`` defines it, with
  probabilities clipped into ``[eps, 1 - eps]`` (``eps`` the dtype's machine
  epsilon) and each column averaged over the rows with the sample weights;
* the gradient scikit-learn back-propagates: ``delta = out - y`` (the
  canonical link of each pair), times the row's weight, over the weights' sum.

For the squared error and the Poisson deviance with several outputs the
gradient is *not* the derivative of the reported loss (that would divide by
the number of outputs, or not sum them): scikit-learn's choice, kept so the
estimators follow its numbers.
"""

from __future__ import annotations

from ..losses import Loss


class _MLPLoss(Loss):
    """Weighted rows: set ``weights`` (``(rows, 1)`` on the device, or None)
    and ``weight_sum`` (their sum as a host number, or the row count)
    before each forward pass."""

    weights = None
    weight_sum = None
    output = "raw"  # the output activation, for predictions

    def _average(self, per_row):
        """Columns averaged over rows, with the weights: ``(outputs,)``."""
        xp = self.backend.xp
        if self.weights is None:
            return xp.mean(per_row, axis=0)
        return xp.sum(per_row * self.weights, axis=0) / self.weight_sum

    def _delta(self, out):
        delta = out - self.target
        if self.weights is not None:
            delta *= self.weights
        delta /= self.weight_sum
        return delta

    def transform(self, z):
        """The output activation of raw outputs ``z`` (a new array)."""
        return activate(self.backend.xp, self.output, z)

    def _clipped(self, p):
        xp = self.backend.xp
        eps = float(xp.finfo(p.dtype).eps)
        return xp.clip(p, eps, 1.0 - eps)


def activate(xp, name, z):
    """scikit-learn's output activations on raw outputs: softmax, logistic,
    exp or the identity."""
    if name == "softmax":  # in one new array (as many temporaries held 3 copies)
        e = z - xp.max(z, axis=1, keepdims=True)
        xp.exp(e, out=e)
        e /= xp.sum(e, axis=1, keepdims=True)
        return e
    if name == "logistic":
        # expit without overflow: exp of a non-positive number only
        e = xp.exp(-xp.abs(z))
        return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if name == "exp":
        return xp.exp(z)
    return z


class LogLoss(_MLPLoss):
    """Softmax outputs; ``-sum_k mean_i y_ik log p_ik``."""

    output = "softmax"

    def _compute(self):
        xp = self.backend.xp
        p = self.transform(self.prediction)
        logp = xp.log(self._clipped(p))
        logp *= self.target
        value = -xp.sum(self._average(logp))
        return value, self._delta(p)


class BinaryLogLoss(_MLPLoss):
    """Logistic outputs, one per label; ``-sum_k mean_i [y log p + (1-y) log(1-p)]``."""

    output = "logistic"

    def _compute(self):
        xp = self.backend.xp
        p = self.transform(self.prediction)
        q = self._clipped(p)
        y = self.target
        per = y * xp.log(q) + (1.0 - y) * xp.log(1.0 - q)
        value = -xp.sum(self._average(per))
        return value, self._delta(p)


class SquaredError(_MLPLoss):
    """Identity outputs; ``mean_k mean_i (y - p)**2 / 2``."""

    def _compute(self):
        xp = self.backend.xp
        p = self.prediction
        diff = self.target - p
        value = 0.5 * xp.mean(self._average(diff * diff))
        return value, self._delta(p)


class PoissonDeviance(_MLPLoss):
    """Exp outputs; half the Poisson deviance ``sum_k mean_i [y log(y/p) - y + p]``."""

    output = "exp"

    def _compute(self):
        xp = self.backend.xp
        p = xp.exp(self.prediction)
        y = self.target
        safe = xp.where(y > 0, y, 1.0)
        per = xp.where(y > 0, y * xp.log(safe / p), 0.0) - y + p
        value = xp.sum(self._average(per))
        return value, self._delta(p)


LOSSES = {"log_loss": LogLoss, "binary_log_loss": BinaryLogLoss,
          "squared_error": SquaredError, "poisson": PoissonDeviance}
