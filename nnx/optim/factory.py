"""Optimisers and schedules by name, as the command line (or a config file)
names them."""

from __future__ import annotations

from .. import _checks
from .._checks import InputValueError
from .adaptive import Adagrad, Adam, AdamW, RMSprop
from .schedules import (
    Constant,
    Cosine,
    ExponentialDecay,
    LinearDecay,
    OneCycle,
    ReduceOnPlateau,
    StepDecay,
)
from .sgd import SGD, SGDMomentum

OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULE_NAMES = ("constant", "linear", "exponential", "step", "cosine", "onecycle", "plateau")
# the rate each family starts from when none is given (PyTorch's defaults,
# except the study's 0.2 for SGD with momentum, where PyTorch has none)
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.2, "nesterov": 0.2, "adam": 0.001, "adamw": 0.001,
              "rmsprop": 0.01, "adagrad": 0.01}


def make_schedule(name, lr, *, final_lr=None, warmup=0, epochs=None, steps_per_epoch=None,
                  step_size=None, gamma=None):
    """The schedule ``name`` starting from ``lr``. ``warmup`` counts epochs;
    cosine and one-cycle change the rate every step when ``steps_per_epoch``
    is given (else every epoch), the others every epoch. ``step`` falls by
    ``gamma`` (default 0.1) every ``step_size`` epochs (default a third of
    ``epochs``); ``plateau`` cuts the rate by ``gamma`` (default 0.1) after
    an evaluation that did not improve (patience 0). A setting that the
    schedule named does not use is refused, not ignored."""
    _checks.name_in("schedule", name, SCHEDULE_NAMES)
    warmup = _checks.integer("warmup", warmup, minimum=0)
    if name in ("linear", "exponential") and final_lr is None:
        raise InputValueError(f"schedule {name!r} needs a final_lr")
    for setting, value, users in (("final_lr", final_lr, ("linear", "exponential", "cosine")),
                                  ("step_size", step_size, ("step",)),
                                  ("gamma", gamma, ("step", "plateau"))):
        if value is not None and name not in users:
            quoted = [repr(u) for u in users]
            listed = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(users) > 1
                                 else quoted)
            raise InputValueError(f"{setting}={value!r} applies only when schedule is "
                                  f"{listed}, not {name!r}")
    if gamma is None:
        gamma = 0.1
    elif name == "plateau":  # named here as the caller named it (ReduceOnPlateau's factor)
        gamma = _checks.in_range("gamma", gamma, 0, 1, low_open=True, high_open=True)
    if name == "onecycle" and warmup:
        raise InputValueError("schedule 'onecycle' has its own warm-up; leave warmup at 0")
    per_step = steps_per_epoch is not None and name in ("cosine", "onecycle")
    units = {"per": "step", "warmup": warmup * steps_per_epoch} if per_step else {
        "warmup": warmup}
    if name == "constant":
        return Constant(lr, **units)
    if name == "linear":
        return LinearDecay(lr, final_lr, **units)
    if name == "exponential":
        return ExponentialDecay(lr, final_lr, **units)
    if name == "step":
        if step_size is None:
            step_size = max(1, (epochs or 3) // 3)
        return StepDecay(lr, step_size, gamma, **units)
    if name == "cosine":
        return Cosine(lr, final_lr or 0.0, **units)
    if name == "onecycle":
        return OneCycle(lr, per=units.get("per", "epoch"))
    if warmup:
        raise InputValueError("schedule 'plateau' takes no warm-up")
    return ReduceOnPlateau(lr, factor=gamma, patience=0)


def make_optimizer(name, lr=None, *, momentum=None, weight_decay=None, clip_norm=None,
                   schedule="constant", **schedule_args):
    """The optimiser ``name`` (one of ``OPTIMIZER_NAMES``) with the schedule
    ``schedule`` (see ``make_schedule``, which takes the remaining keywords).
    ``momentum`` applies to momentum, nesterov (default 0.9) and rmsprop
    (default 0)."""
    _checks.name_in("optimizer", name, OPTIMIZER_NAMES)
    if momentum is not None and name not in ("momentum", "nesterov", "rmsprop"):
        raise InputValueError(f"momentum={momentum!r} applies to the momentum, nesterov and "
                              f"rmsprop optimizers, not {name!r}")
    rate = make_schedule(schedule, DEFAULT_LR[name] if lr is None else lr, **schedule_args)
    # weight_decay None: the optimiser's own default (0, or 0.01 for AdamW); an
    # explicit 0 is 0 for every one of them
    common = {"clip_norm": clip_norm}
    if weight_decay is not None:
        common["weight_decay"] = weight_decay
    if name == "sgd":
        return SGD(rate, **common)
    if name in ("momentum", "nesterov"):
        return SGDMomentum(rate, 0.9 if momentum is None else momentum,
                           nesterov=name == "nesterov", **common)
    if name == "rmsprop":
        return RMSprop(rate, momentum=momentum or 0.0, **common)
    cls = {"adam": Adam, "adamw": AdamW, "adagrad": Adagrad}[name]
    return cls(rate, **common)
