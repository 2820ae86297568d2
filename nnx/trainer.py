"""The trainer's old home: everything now lives in ``nnx.train``."""

from .train import *  # noqa: F401,F403
from .train import History, Trainer, TrainingDiverged  # noqa: F401
from .train.trainer import _Run, _Steps  # noqa: F401
