"""What one ``fit`` was asked to do, validated once, and what a run saw."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .. import _checks
from .._checks import InputValueError


@dataclass(frozen=True)
class FitSettings:
    """The arguments of one ``fit`` that a resumed run must share with the run
    it continues. Built (and checked) by ``FitSettings.of(...)``; ``resume=``
    compares every field with the checkpoint's."""

    epochs: int
    eval_every: int
    batch_size: int
    seed: int
    patience: int | None
    min_delta: float
    optimizer: str
    monitor: str = "loss"
    restore_best: bool = True
    train_rows: int | None = None
    eval_rows: int | None = None
    net_seed: int | None = None
    world_size: int = 1  # processes training together (batch_size rows each per step)

    @classmethod
    def of(cls, epochs, eval_every, batch_size, seed, patience, min_delta, optimizer,
           monitor="loss"):
        """The checked settings; each refusal names the argument and its value."""
        epochs = _checks.integer("epochs", epochs)
        if eval_every is None:  # the study's 10, for runs of 10 epochs or more
            eval_every = min(10, epochs)
        eval_every = _checks.integer("eval_every", eval_every)
        batch_size = _checks.integer("batch_size", batch_size)
        if eval_every > epochs:
            raise InputValueError(f"eval_every={eval_every} is larger than epochs={epochs}, so "
                                  "it would never apply (fit evaluates after the last epoch "
                                  f"anyway): give eval_every={epochs} to evaluate at the end "
                                  "only, or fewer epochs between evaluations")
        if patience is not None:
            patience = _checks.integer("patience", patience)
        return cls(epochs=epochs, eval_every=eval_every, batch_size=batch_size,
                   seed=_checks.integer("seed", seed, minimum=0), patience=patience,
                   min_delta=_checks.non_negative("min_delta", min_delta),
                   optimizer=repr(optimizer),
                   monitor=_checks.name_in("monitor", monitor, ("loss", "accuracy")))

    def stopping_as(self, early_stopping):
        """These settings with the early stopping of the run: that of the
        ``EarlyStopping`` callback in use, which ``fit``'s keywords make
        unless one is passed (then it is the one to compare on resuming)."""
        es = early_stopping
        return type(self)(**{**asdict(self), "patience": es.patience, "min_delta": es.min_delta,
                             "monitor": es.monitor, "restore_best": es.restore_best})

    def with_data(self, train_rows, eval_rows, net_seed, world_size=1):
        return type(self)(**{**asdict(self), "train_rows": train_rows, "eval_rows": eval_rows,
                             "net_seed": net_seed, "world_size": world_size})

    def as_dict(self):
        return asdict(self)

    # fields checkpoints did not always hold, and what a checkpoint without one
    # means (one process; early stopping that restores the best evaluation)
    LATER = {"world_size": 1, "restore_best": True}

    def differences(self, saved):
        """``{name: (saved, given)}`` for every field whose saved value differs,
        or that the saved table lacks (shown as ``"missing"``)."""
        mine = self.as_dict()
        saved = {**self.LATER, **saved}
        saved["optimizer"] = _optimizer_as_now(saved.get("optimizer"))
        return {k: (saved.get(k, "missing"), v) for k, v in mine.items()
                if k not in saved or saved[k] != v}


def _optimizer_as_now(text):
    """A saved optimiser's repr as this version writes it: before AdamW's repr
    named a weight decay of 0 (its default is 0.01), it left it out; SGD's
    named a momentum of 0.0, which SGD does not take."""
    if isinstance(text, str) and text.startswith("SGD("):
        return text.replace(", momentum=0.0", "", 1)
    if not isinstance(text, str) or not text.startswith("AdamW(") or "weight_decay=" in text:
        return text
    at = text.find(", clip_norm=")
    at = at if at >= 0 else len(text) - 1
    return text[:at] + ", weight_decay=0.0" + text[at:]


@dataclass
class History:
    """What ``fit`` saw: ``records``, one per evaluation, with ``epoch``
    (1-based), ``loss`` (on the evaluation set, or None without one),
    ``accuracy`` (the share of evaluation rows classified right, for a
    classification loss; else None), ``train_loss`` (mean batch loss of that
    epoch) and ``lr`` (the rate of that epoch's first step); ``best_epoch``
    and ``best_loss`` (the best evaluation, by the early stopping's
    ``monitor``: the one whose parameters the network holds at the end,
    unless ``restore_best=False`` left it with the last epoch's; None and inf
    when no evaluation measured a loss);
    ``stopped_early`` (training ended before ``epochs``, by early stopping or
    a callback's request, or it diverged); ``epochs_run``; ``graph`` and
    ``graph_note`` (whether full batches ran as a replayed captured step, and
    why not)."""

    records: list = field(default_factory=list)
    best_epoch: int | None = None
    best_loss: float = math.inf
    stopped_early: bool = False
    epochs_run: int = 0
    graph: bool = False  # whether full batches ran as a replayed, captured step
    graph_note: str = ""  # why not, when capture was tried and refused

    @property
    def epochs(self):
        return [r["epoch"] for r in self.records]

    @property
    def losses(self):
        return [r["loss"] for r in self.records]

    @property
    def lrs(self):
        return [r["lr"] for r in self.records]

    def as_dict(self):
        return {"records": self.records, "best_epoch": self.best_epoch,
                "best_loss": self.best_loss if math.isfinite(self.best_loss) else None,
                "stopped_early": self.stopped_early, "epochs_run": self.epochs_run}

    @classmethod
    def from_dict(cls, d):
        return cls(records=d["records"], best_epoch=d["best_epoch"],
                   best_loss=math.inf if d["best_loss"] is None else d["best_loss"],
                   stopped_early=d["stopped_early"], epochs_run=d["epochs_run"])
