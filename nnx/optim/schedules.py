"""Learning-rate schedules: small objects that say the rate at each epoch
(``per="epoch"``) or each optimiser step (``per="step"``) of a run.

An optimiser takes one as ``lr=`` (a plain number is a ``Constant``). Time
``t`` counts the schedule's units from 0; ``total`` is the run's length in
them. Every schedule but OneCycle (its own rise) and ReduceOnPlateau can
start with a linear warm-up of ``warmup`` units, rising to ``lr`` in equal
steps: ``lr * (t + 1) / (warmup + 1)``; the
schedule's own shape then runs over the remaining ``total - warmup`` units
(its formula below uses ``t`` and ``T`` counted from the end of the warm-up).

The trainer asks for the rates one epoch at a time and keeps them on the
device; ``ReduceOnPlateau`` is driven by the evaluation losses it is shown.
"""

from __future__ import annotations

import math

from .. import _checks
from .._checks import InputTypeError, InputValueError

UNITS = ("epoch", "step")


def positive(name, value):
    value = _checks.number(name, value)
    if value <= 0:
        raise InputValueError(f"{name}={value!r} must be > 0")
    return value


class Schedule:
    """The base: a rate for each unit of a run. Subclasses implement
    ``_rate(t, T)`` for the part after the warm-up."""

    resumable_state = ()  # attribute names that change during a run (saved by checkpoints)

    def __init__(self, lr, *, per="epoch", warmup=0):
        self.lr = positive("lr", lr)
        self.per = _checks.name_in("per", per, UNITS)
        self.warmup = _checks.integer("warmup", warmup, minimum=0)

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({fields})"

    def _settings(self):
        out = {"lr": self.lr}
        out.update(self._own_settings())
        if self.per != "epoch":
            out["per"] = self.per
        if self.warmup:
            out["warmup"] = self.warmup
        return out

    def _own_settings(self):
        return {}

    def rate(self, t, total):
        """The rate of unit ``t`` (0-based) in a run of ``total`` units."""
        if t < self.warmup:
            return self.lr * (t + 1) / (self.warmup + 1)
        return self._rate(t - self.warmup, max(total - self.warmup, 1))

    def _rate(self, t, total):
        raise NotImplementedError(
            f"{type(self).__name__} defines no _rate(t, total), which returns the rate of unit "
            "t (0-based, after any warm-up) of a run of total units")

    def check_run(self, total):
        """Refuse a run too short for the schedule (named, before training)."""
        if self.warmup and self.warmup >= total:
            raise InputValueError(f"{type(self).__name__} warmup={self.warmup} {self.per}s is "
                                  f"not shorter than the run ({total} {self.per}s)")

    @property
    def follows_the_run(self):
        """Whether the rate depends on where the run is (``start`` must plan it)."""
        return True

    def evaluated(self, loss):
        """Told the evaluation loss after each evaluation (``ReduceOnPlateau`` uses it)."""

    def state(self):
        """What changes during a run, as plain data (for checkpoints)."""
        return {k: getattr(self, k) for k in self.resumable_state}

    def load_state(self, state):
        for k in self.resumable_state:
            setattr(self, k, state[k])


def _fraction(t, total):
    """``t / (total - 1)``, clipped to 1: 0 at the first unit, exactly 1 at the last
    (0 throughout a one-unit run: nothing to decay towards)."""
    return 0.0 if total < 2 else min(t, total - 1) / (total - 1)


class Constant(Schedule):
    """The same rate throughout (after the warm-up, if any)."""

    @property
    def follows_the_run(self):
        return bool(self.warmup)

    def _rate(self, t, total):
        return self.lr


class LinearDecay(Schedule):
    """The study's linear decay: ``lr - (lr - final_lr) * t / (T - 1)``, so the
    first unit runs at ``lr`` and the last at exactly ``final_lr``."""

    def __init__(self, lr, final_lr, *, per="epoch", warmup=0):
        super().__init__(lr, per=per, warmup=warmup)
        self.final_lr = _checks.non_negative("final_lr", final_lr)

    def _own_settings(self):
        return {"final_lr": self.final_lr}

    def _rate(self, t, total):
        f = _fraction(t, total)
        return self.lr * (1.0 - f) + self.final_lr * f  # exact at both ends


class ExponentialDecay(Schedule):
    """The study's exponential decay: ``lr * (final_lr / lr) ** (t / (T - 1))``,
    geometric from ``lr`` at the first unit to exactly ``final_lr`` at the last."""

    def __init__(self, lr, final_lr, *, per="epoch", warmup=0):
        super().__init__(lr, per=per, warmup=warmup)
        self.final_lr = positive("final_lr", final_lr)  # lr * (0 / lr) ** f is no decay

    def _own_settings(self):
        return {"final_lr": self.final_lr}

    def _rate(self, t, total):
        f = _fraction(t, total)
        return self.lr ** (1.0 - f) * self.final_lr ** f  # exact at both ends


class StepDecay(Schedule):
    """``lr * gamma ** (t // step_size)``: the rate falls by ``gamma`` every
    ``step_size`` units (PyTorch's ``StepLR``)."""

    def __init__(self, lr, step_size, gamma=0.1, *, per="epoch", warmup=0):
        super().__init__(lr, per=per, warmup=warmup)
        self.step_size = _checks.integer("step_size", step_size)
        self.gamma = _checks.in_range("gamma", gamma, 0, 1, low_open=True)

    def _own_settings(self):
        return {"step_size": self.step_size, "gamma": self.gamma}

    def _rate(self, t, total):
        return self.lr * self.gamma ** (t // self.step_size)


def _cosine(start, end, f):
    """From ``start`` at ``f = 0`` to ``end`` at ``f = 1`` along half a cosine."""
    return end + (start - end) * (1.0 + math.cos(math.pi * f)) / 2.0


class Cosine(Schedule):
    """Cosine annealing: ``final_lr + (lr - final_lr) * (1 + cos(pi t / (T - 1))) / 2``,
    from ``lr`` at the first unit after the warm-up to exactly ``final_lr`` at
    the last (PyTorch's ``CosineAnnealingLR`` with ``T_max = T - 1``)."""

    def __init__(self, lr, final_lr=0.0, *, per="epoch", warmup=0):
        super().__init__(lr, per=per, warmup=warmup)
        self.final_lr = _checks.non_negative("final_lr", final_lr)

    def _own_settings(self):
        return {"final_lr": self.final_lr}

    def _rate(self, t, total):
        return _cosine(self.lr, self.final_lr, _fraction(t, total))


class OneCycle(Schedule):
    """The one-cycle policy (PyTorch's ``OneCycleLR``, cosine annealing, two
    phases): from ``lr / div_factor`` up to ``lr`` over the first
    ``pct_start`` of the run, then down to ``lr / (div_factor *
    final_div_factor)``, each along half a cosine. Phase one ends at unit
    ``pct_start * T - 1``, phase two at ``T - 1``. Per step by default; it
    does not cycle the momentum."""

    def __init__(self, lr, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, *,
                 per="step"):
        super().__init__(lr, per=per, warmup=0)
        self.pct_start = _checks.in_range("pct_start", pct_start, 0, 1, low_open=True,
                                          high_open=True)
        self.div_factor = positive("div_factor", div_factor)
        self.final_div_factor = positive("final_div_factor", final_div_factor)

    def _own_settings(self):
        return {"pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor}

    def check_run(self, total):
        if self.pct_start * total - 1 <= 0 or total - 1 <= self.pct_start * total - 1:
            raise InputValueError(f"OneCycle pct_start={self.pct_start} leaves a phase with no "
                                  f"{self.per}s in a run of {total}; use more {self.per}s or "
                                  "another pct_start")

    def _rate(self, t, total):
        start = self.lr / self.div_factor
        end = start / self.final_div_factor
        peak = self.pct_start * total - 1  # a float, as in PyTorch
        if t <= peak:
            return _cosine(start, self.lr, t / peak)
        return _cosine(self.lr, end, min((t - peak) / (total - 1 - peak), 1.0))


class ReduceOnPlateau(Schedule):
    """Starts at ``lr`` and multiplies the rate by ``factor`` (never below
    ``min_lr``) when the evaluation loss has not improved for more than
    ``patience`` evaluations in a row; after a cut it waits ``cooldown``
    evaluations before counting again. An improvement is a loss below
    ``best * (1 - threshold)`` (``threshold_mode="rel"``) or below ``best -
    threshold`` ("abs"). These are PyTorch's ``ReduceLROnPlateau`` rules in
    "min" mode (a NaN or infinite loss counts as no improvement), with one
    difference: nnx counts evaluations, which happen every ``eval_every``
    epochs, so ``patience`` counts evaluations. A ``fit(restart=False)``
    goes on from the rate, best loss and counts of the fit before."""

    resumable_state = ("current", "best", "bad", "cooldown_left")

    def __init__(self, lr, factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0):
        super().__init__(lr)
        self.factor = _checks.in_range("factor", factor, 0, 1, low_open=True, high_open=True)
        self.patience = _checks.integer("patience", patience, minimum=0)
        self.threshold = _checks.non_negative("threshold", threshold)
        self.threshold_mode = _checks.name_in("threshold_mode", threshold_mode, ("rel", "abs"))
        if self.threshold_mode == "rel" and self.threshold >= 1:
            # loss < best * (1 - threshold) <= 0: no positive loss could ever improve
            raise InputValueError(f"threshold={threshold!r} must be below 1 with "
                                  "threshold_mode='rel' (a relative improvement of "
                                  f"{threshold:g} or more of a positive loss is impossible); "
                                  "threshold_mode='abs' takes an absolute one")
        self.cooldown = _checks.integer("cooldown", cooldown, minimum=0)
        self.min_lr = _checks.non_negative("min_lr", min_lr)
        self.restart()

    def _own_settings(self):
        return {"factor": self.factor, "patience": self.patience, "threshold": self.threshold,
                "threshold_mode": self.threshold_mode, "cooldown": self.cooldown,
                "min_lr": self.min_lr}

    def restart(self):
        """Back to ``lr``, with no evaluation seen (a new run)."""
        self.current, self.best, self.bad, self.cooldown_left = self.lr, None, 0, 0

    @property
    def follows_the_run(self):  # it follows the evaluations it is shown
        return False

    def _rate(self, t, total):
        return self.current

    def _improves(self, loss):
        # a NaN or infinite loss is no improvement (as PyTorch's comparisons have it)
        if self.best is None:
            return loss < math.inf
        if self.threshold_mode == "rel":
            return loss < self.best * (1.0 - self.threshold)
        return loss < self.best - self.threshold

    def evaluated(self, loss):
        if loss is None:
            return
        if self._improves(loss):
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad = 0
        if self.bad > self.patience:
            new = max(self.current * self.factor, self.min_lr)
            if self.current - new > 1e-8:  # PyTorch's eps: no cut smaller than that
                self.current = new
            self.cooldown_left, self.bad = self.cooldown, 0


SCHEDULES = {"constant": Constant, "linear": LinearDecay, "exponential": ExponentialDecay,
             "step": StepDecay, "cosine": Cosine, "onecycle": OneCycle,
             "plateau": ReduceOnPlateau}
DECAY_TYPES = ("linear", "exponential")


def from_arguments(lr, final_lr=None, decay_type=None):
    """The schedule an optimiser's ``lr``/``final_lr``/``decay_type`` arguments
    describe: ``lr`` may itself be a ``Schedule``."""
    if isinstance(lr, Schedule):
        if final_lr is not None or decay_type is not None:
            raise InputValueError(f"lr={lr!r} is a schedule already; final_lr and decay_type "
                                  "apply only to a numeric lr")
        return lr
    if isinstance(lr, type) and issubclass(lr, Schedule):
        raise InputTypeError(f"lr={lr.__name__} is a class; pass a schedule object, e.g. "
                             f"{lr.__name__}(0.1, ...)")
    if isinstance(final_lr, Schedule) or (isinstance(final_lr, type)
                                          and issubclass(final_lr, Schedule)):
        raise InputTypeError(f"final_lr={final_lr!r} is a schedule: a schedule goes in lr= "
                             "(the first argument), e.g. SGD(Cosine(0.1))")
    lr = positive("lr", lr)
    if decay_type is not None:
        _checks.name_in("decay_type", decay_type, DECAY_TYPES)
    if decay_type is None and final_lr not in (None, 0):  # 0: the study's "no final rate"
        raise InputValueError(f"final_lr={final_lr!r} was given without a decay_type; "
                              f"pass decay_type as one of {list(DECAY_TYPES)}")
    if decay_type is not None and final_lr is None:
        raise InputValueError(f"decay_type={decay_type!r} needs a final_lr")
    if decay_type == "linear":
        return LinearDecay(lr, final_lr)
    if decay_type == "exponential":
        return ExponentialDecay(lr, final_lr)
    return Constant(lr)
