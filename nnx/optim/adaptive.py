"""Optimisers with per-parameter step sizes, as PyTorch defines them.

Each formula below is one step, with ``g`` the gradient after clipping,
``t`` the step count from 1 and ``lr`` the scheduled rate.
"""

from __future__ import annotations

from .. import _checks
from . import schedules as _schedules
from .base import Optimizer


def _beta(name, value):
    return _checks.in_range(name, value, 0, 1, high_open=True)


def _betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        hint = (": a schedule goes in lr=, the first argument"
                if isinstance(betas, _schedules.Schedule) else "")
        raise _checks.InputTypeError(f"betas must be a pair (beta1, beta2), got {betas!r}"
                                     + hint)
    return _beta("beta1", betas[0]), _beta("beta2", betas[1])


def _eps(value):
    eps = _checks.number("eps", value)
    if eps <= 0:
        raise _checks.InputValueError(f"eps={value!r} must be > 0")
    return eps


class Adam(Optimizer):
    """Adam (PyTorch's ``torch.optim.Adam``)::

        g = g + weight_decay * p                  (L2, when weight_decay > 0)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    state_names = ("m", "v")
    counts_steps = True
    decoupled = False

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 final_lr=None, decay_type=None, clip_norm=None):
        super().__init__(lr, final_lr, decay_type, weight_decay=weight_decay,
                         clip_norm=clip_norm)
        self.betas = _betas(betas)
        self.eps = _eps(eps)

    def _hyper(self):
        return {"betas": self.betas, "eps": self.eps}

    _backend_update = True  # one backend update method: its kernel skips by itself

    def _update(self, b, param, grad, scale):
        d = self._device
        b.adam_step(param, grad, self.state["m"], self.state["v"], d["lr"], d["t"],
                    self.betas[0], self.betas[1], self.eps, self.weight_decay,
                    decoupled=self.decoupled, scale=scale)


class AdamW(Adam):
    """AdamW (PyTorch's ``torch.optim.AdamW``): Adam with the weight decay
    decoupled from the gradient, ``p *= 1 - lr * weight_decay`` before the
    Adam step (default ``weight_decay=0.01``, as in PyTorch)."""

    decoupled = True

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, *,
                 final_lr=None, decay_type=None, clip_norm=None):
        super().__init__(lr, betas, eps, weight_decay, final_lr=final_lr,
                         decay_type=decay_type, clip_norm=clip_norm)


class RMSprop(Optimizer):
    """RMSprop (PyTorch's ``torch.optim.RMSprop``)::

        g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g**2
        c = alpha * c + (1 - alpha) * g;  d = sqrt(s - c**2) + eps   (centered)
                                          d = sqrt(s) + eps          (otherwise)
        b = momentum * b + g / d;  p -= lr * b                       (momentum > 0)
        p -= lr * g / d                                              (otherwise)
    """

    counts_steps = False

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, final_lr=None, decay_type=None, clip_norm=None):
        super().__init__(lr, final_lr, decay_type, weight_decay=weight_decay,
                         clip_norm=clip_norm)
        self.alpha = _beta("alpha", alpha)
        self.eps = _eps(eps)
        self.momentum = _checks.in_range("momentum", momentum, 0, 1, high_open=True)
        if not isinstance(centered, bool):
            raise _checks.InputTypeError(f"centered must be True or False, got {centered!r}")
        self.centered = centered

    @property
    def state_names(self):
        return (("square_avg",) + (("momentum_buffer",) if self.momentum else ())
                + (("grad_avg",) if self.centered else ()))

    def _hyper(self):
        out = {"alpha": self.alpha, "eps": self.eps}
        if self.momentum:
            out["momentum"] = self.momentum
        if self.centered:
            out["centered"] = True
        return out

    _backend_update = True  # one backend update method: its kernel skips by itself

    def _update(self, b, param, grad, scale):
        s = self.state
        b.rmsprop_step(param, grad, s["square_avg"], self._device["lr"], self.alpha, self.eps,
                       self.weight_decay, self.momentum, s.get("momentum_buffer"),
                       s.get("grad_avg"), scale=scale)


class Adagrad(Optimizer):
    """Adagrad (PyTorch's ``torch.optim.Adagrad``)::

        g = g + weight_decay * p
        s = s + g**2
        p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)
    """

    state_names = ("sum",)
    counts_steps = True

    # eps is keyword-only: PyTorch's fourth positional argument is
    # initial_accumulator_value, which code ported from it would pass here
    def __init__(self, lr=0.01, lr_decay=0.0, weight_decay=0.0, *, eps=1e-10,
                 final_lr=None, decay_type=None, clip_norm=None):
        super().__init__(lr, final_lr, decay_type, weight_decay=weight_decay,
                         clip_norm=clip_norm)
        self.lr_decay = _checks.non_negative("lr_decay", lr_decay)
        self.eps = _eps(eps)

    def _hyper(self):
        out = {"eps": self.eps}
        if self.lr_decay:
            out["lr_decay"] = self.lr_decay
        return out

    _backend_update = True  # one backend update method: its kernel skips by itself

    def _update(self, b, param, grad, scale):
        d = self._device
        b.adagrad_step(param, grad, self.state["sum"], d["lr"], d["t"], self.lr_decay,
                       self.eps, self.weight_decay, scale=scale)
