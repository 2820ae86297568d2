"""Stochastic gradient descent, plain and with momentum (the study's form)."""

from __future__ import annotations

from .. import _checks
from .base import Optimizer


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``p -= lr * g``."""

    def __init__(self, lr=0.01, final_lr=None, decay_type=None, *, weight_decay=0.0,
                 clip_norm=None):
        try:
            super().__init__(lr, final_lr, decay_type, weight_decay=weight_decay,
                             clip_norm=clip_norm)
        except _checks.InputValueError as exc:
            if decay_type is None and isinstance(final_lr, float) and 0 < final_lr < 1:
                # SGD(0.1, 0.9): PyTorch's SGD(params, lr, momentum), read in nnx's places
                raise _checks.InputValueError(
                    f"{exc} (SGD's second argument is final_lr; for momentum use "
                    f"SGDMomentum(lr, momentum={final_lr!r}))") from None
            raise
        self.momentum = 0.0

    _backend_update = True  # one backend update method: its kernel skips by itself

    def _update(self, b, param, grad, scale):
        b.sgd_step(param, grad, self._device["lr"], weight_decay=self.weight_decay,
                   scale=scale)


class SGDMomentum(Optimizer):
    """SGD with momentum, in the study's form: the velocity carries the rate,
    ``v = momentum * v + lr * g``; ``p -= v``. With ``nesterov=True`` the
    parameters move by ``momentum * v + lr * g`` instead (Sutskever's form).

    At a constant rate these are exactly PyTorch's ``SGD(momentum=...,
    nesterov=...)``, whose velocity ``b`` leaves the rate out (``v = lr * b``);
    when the rate changes, the study's velocity keeps the old rate's steps
    in it, PyTorch's applies the new rate to all of them. ``momentum=0`` is
    plain SGD.
    """

    def __init__(self, lr=0.01, momentum=0.9, final_lr=None, decay_type=None, *,
                 nesterov=False, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, final_lr, decay_type, weight_decay=weight_decay,
                         clip_norm=clip_norm)
        self.momentum = _checks.in_range("momentum", momentum, 0, 1, high_open=True)
        if not isinstance(nesterov, bool):
            raise _checks.InputTypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0.0:
            raise _checks.InputValueError("nesterov=True needs a momentum > 0")
        self.nesterov = nesterov

    @property
    def state_names(self):
        return ("velocity",) if self.momentum else ()

    def _hyper(self):
        out = {"momentum": self.momentum}
        if self.nesterov:
            out["nesterov"] = True
        return out

    _backend_update = True  # one backend update method: its kernel skips by itself

    def _update(self, b, param, grad, scale):
        lr = self._device["lr"]
        if not self.momentum:
            b.sgd_step(param, grad, lr, weight_decay=self.weight_decay, scale=scale)
            return
        b.momentum_step(param, grad, self.state["velocity"], lr, self.momentum,
                        nesterov=self.nesterov, weight_decay=self.weight_decay, scale=scale)
