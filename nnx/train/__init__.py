"""Training: the ``Trainer`` loop, its ``History``, and the callbacks around it."""

from .callbacks import (
    Callback,
    Checkpoint,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LRScheduler,
    PrintProgress,
    ProgressBar,
)
from .settings import FitSettings, History
from .trainer import Trainer, TrainingDiverged

__all__ = ["Trainer", "History", "TrainingDiverged", "FitSettings", "Callback",
           "EarlyStopping", "Checkpoint", "CSVLogger", "LambdaCallback", "LRScheduler",
           "PrintProgress", "ProgressBar"]
