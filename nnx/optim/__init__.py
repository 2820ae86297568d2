"""Optimisers and learning-rate schedules.

Every optimiser updates a network's flat parameter buffer from its flat
gradient buffer with one ``step()``; ``lr=`` takes a number or a schedule.
"""

from .adaptive import Adagrad, Adam, AdamW, RMSprop
from .base import Optimizer
from .factory import (
    DEFAULT_LR,
    OPTIMIZER_NAMES,
    SCHEDULE_NAMES,
    make_optimizer,
    make_schedule,
)
from .schedules import (
    DECAY_TYPES,
    SCHEDULES,
    Constant,
    Cosine,
    ExponentialDecay,
    LinearDecay,
    OneCycle,
    ReduceOnPlateau,
    Schedule,
    StepDecay,
)
from .sgd import SGD, SGDMomentum

OPTIMIZERS = {"sgd": SGD, "momentum": SGDMomentum, "adam": Adam, "adamw": AdamW,
              "rmsprop": RMSprop, "adagrad": Adagrad}

__all__ = ["Optimizer", "SGD", "SGDMomentum", "Adam", "AdamW", "RMSprop", "Adagrad",
           "Schedule", "Constant", "LinearDecay", "ExponentialDecay", "StepDecay", "Cosine",
           "OneCycle", "ReduceOnPlateau", "SCHEDULES", "DECAY_TYPES", "OPTIMIZERS",
           "make_optimizer", "make_schedule", "OPTIMIZER_NAMES", "SCHEDULE_NAMES",
           "DEFAULT_LR"]
