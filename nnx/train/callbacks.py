"""Callbacks: what ``Trainer.fit`` does around its loop, as small objects
with a few hooks. ``fit``'s keywords build the usual ones (``patience`` an
``EarlyStopping``, ``checkpoint`` a ``Checkpoint``, ``callback`` a
``LambdaCallback``, ``verbose`` a ``PrintProgress``); pass your own in
``callbacks=[...]``.

Every hook receives the run: ``run.net``, ``run.optim``, ``run.history``,
``run.epoch`` (epochs finished so far), ``run.settings`` (a ``FitSettings``),
``run.comm`` (the communicator of a distributed fit: ``run.comm.rank`` of
``run.comm.size``; see ``nnx.distributed``) and ``run.request_stop()``.
Epochs are counted from 1 in ``on_epoch_end`` and from 0 in
``on_epoch_start`` (the epoch about to run), as in records.

In a distributed fit every rank runs every callback, except those marked
``main_only`` (the printers and loggers), which run on rank 0 alone; a stop
asked on any rank stops every rank after that epoch.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time

from .. import _checks
from .._checks import InputTypeError, InputValueError
from .._files import atomic_write


class Callback:
    """The hooks, in the order fit calls them. Returning True from
    ``on_epoch_end`` asks training to stop after that epoch, as early stopping
    does. A callback whose state must survive ``resume=`` gives itself a
    ``state_key`` and implements ``checkpoint_state``/``load_checkpoint_state``."""

    state_key = None
    late = False  # runs after the others, once it is known whether the epoch ends the run
    main_only = False  # in a distributed fit, runs on rank 0 alone (prints, writes a file)

    def check(self, net):
        """Refuse, before any data is touched, a network this callback cannot serve."""

    def on_fit_start(self, run):
        """Before the first epoch (also when resuming)."""

    def on_epoch_start(self, run, epoch):
        """Before epoch ``epoch`` (0-based) runs."""

    def on_evaluation(self, run, record):
        """After an evaluation: ``record`` is the new entry of ``run.history.records``."""

    def on_epoch_end(self, run, epoch, record):
        """After epoch ``epoch`` (1-based); ``record`` is its evaluation or None."""

    def on_fit_end(self, run):
        """After the last epoch, when training ended normally."""

    def close(self):
        """Always called last, even when training raised (release files, bars)."""

    def agreed_settings(self):
        """In a distributed fit, the settings (a dict of plain values) every
        rank must give this callback alike: those that decide when the ranks
        save together or what they decide together. None by default (a
        callback may hold a rank's own file name, say)."""
        return {}

    def checkpoint_state(self):
        """``(plain data, {name: array})`` for a training checkpoint."""
        return {}, {}

    def load_checkpoint_state(self, data, arrays):
        """Put back what ``checkpoint_state`` returned."""


# each hook's arguments after self, as fit passes them
HOOK_ARGUMENTS = {"check": ("net",), "on_fit_start": ("run",),
                  "on_epoch_start": ("run", "epoch"), "on_evaluation": ("run", "record"),
                  "on_epoch_end": ("run", "epoch", "record"), "on_fit_end": ("run",),
                  "close": ()}


def check_hooks(cb):
    """Refuse, before any training, a callback whose own hook cannot take what
    fit passes it (Keras's ``on_epoch_end(self, epoch, logs)`` failed in
    Python's binding after the first epoch's work)."""
    for name, args in HOOK_ARGUMENTS.items():
        hook = getattr(type(cb), name, None)
        if hook is None or hook is getattr(Callback, name):
            continue
        _binds(getattr(cb, name), args,
               f"{type(cb).__name__}.{name}", f"{name}(self, {', '.join(args)})".replace(
                   "(self, )", "(self)"), "fit calls it as")


def _binds(fn, args, name, expected, how):
    import inspect
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    try:
        sig.bind(*args)
    except TypeError:
        raise InputTypeError(
            f"{name}{sig} cannot take {len(args)} argument(s) ({', '.join(args)}): {how} "
            f"{expected}" + ("; nnx's hooks take the run first (run.net, run.history, "
                             "run.request_stop(), ...)" if args[:1] == ("run",) else "")
        ) from None


class EarlyStopping(Callback):
    """Stops when the monitored figure of the evaluations has not improved by
    more than ``min_delta`` for ``patience`` evaluations in a row
    (``patience=None``: never stop), and, with ``restore_best`` (default),
    leaves the network with the parameters of the best evaluation at the end.
    ``monitor="loss"`` (default) watches the evaluation loss, lower is better;
    ``"accuracy"`` the evaluation accuracy (classification losses), higher is
    better. It keeps ``history.best_epoch`` and ``history.best_loss`` (the
    loss of that evaluation)."""

    state_key = "early_stopping"
    MONITORS = ("loss", "accuracy")

    def __init__(self, patience=1, min_delta=0.0, restore_best=True, monitor="loss"):
        self.patience = None if patience is None else _checks.integer("patience", patience)
        self.min_delta = _checks.non_negative("min_delta", min_delta)
        if not isinstance(restore_best, bool):
            raise InputTypeError(f"restore_best must be True or False, got {restore_best!r}")
        self.restore_best = restore_best
        self.monitor = _checks.name_in("monitor", monitor, self.MONITORS)
        self.bad_evals = 0
        self.best_params = self.best_value = None

    def __repr__(self):
        return (f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
                f"restore_best={self.restore_best}, monitor={self.monitor!r})")

    def agreed_settings(self):
        return {"patience": self.patience, "min_delta": self.min_delta,
                "restore_best": self.restore_best, "monitor": self.monitor}

    def check(self, net):
        # (a sigmoid per class scores an accuracy against class ids, one-vs-rest:
        # the fit says so, or refuses, once it has the evaluation targets)
        if self.monitor == "accuracy" and not net.reports_accuracy and not net.loss.binary:
            raise InputValueError(f"EarlyStopping monitor='accuracy' needs a classifier: "
                                  f"SoftmaxCrossEntropy with one output per class, or "
                                  f"SigmoidCrossEntropy (one output, or one per class against "
                                  f"class ids); this network has {type(net.loss).__name__} "
                                  f"and {net.n_out} output(s)")

    def on_fit_start(self, run):
        if run.epoch == 0:  # a new run (a resumed one has its state from the checkpoint)
            self.bad_evals, self.best_params, self.best_value = 0, None, None

    def _improves(self, value):
        if self.best_value is None:
            return True
        if self.monitor == "loss":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def on_evaluation(self, run, record):
        h = run.history
        value = record.get(self.monitor)
        if value is None:
            return
        if self._improves(value):
            self.best_value = value
            h.best_loss, h.best_epoch = record["loss"], record["epoch"]
            self.best_params = run.good_params  # a copy taken at this evaluation
            self.bad_evals = 0
        else:
            self.bad_evals += 1
            if self.patience is not None and self.bad_evals >= self.patience:
                run.request_stop()

    def on_fit_end(self, run):
        h = run.history  # unless the network holds the best evaluation's parameters now
        if self.restore_best and self.best_params is not None and h.epochs_run != h.best_epoch:
            run.net.set_parameters(self.best_params)

    def checkpoint_state(self):
        arrays = {} if self.best_params is None else {"best_params": self.best_params}
        # its settings beside its state: resume= compares the first early stopping's
        # among fit's settings, and a second one's here (one tracking the accuracy
        # resumed as one tracking the loss, its best value read as a loss)
        return {"bad_evals": self.bad_evals, "best_value": self.best_value,
                "settings": self.agreed_settings()}, arrays

    def load_checkpoint_state(self, data, arrays):
        saved = data.get("settings")  # checkpoints hold them since they were added
        if saved is not None and saved != self.agreed_settings():
            raise InputValueError(f"it was saved by {saved} and is given to {self!r}; resume "
                                  "with the early stopping the run was saved with")
        self.bad_evals = data["bad_evals"]
        self.best_value = data.get("best_value")
        self.best_params = arrays.get("best_params")


class LRScheduler(Callback):
    """Drives the optimiser's schedule: sets each epoch's rates on the device
    before it runs, and shows the schedule every evaluation loss (for
    ``ReduceOnPlateau``). ``fit`` always adds one. The schedule's own state
    travels with the optimiser's in a checkpoint."""

    def on_epoch_start(self, run, epoch):
        run.optim.start_epoch(epoch)

    def on_evaluation(self, run, record):
        run.optim.evaluated(record["loss"])


class LambdaCallback(Callback):
    """A plain function ``fn(epoch, record)`` called after every epoch (1-based
    epoch, the evaluation record or None); returning True stops training."""

    def __init__(self, fn):
        if not callable(fn):
            raise InputTypeError(f"callback must be callable(epoch, record), got {fn!r}")
        name = getattr(fn, "__qualname__", type(fn).__name__)
        _binds(fn, ("epoch", "record"), f"callback {name}", "callback(epoch, record_or_None)",
               "fit calls it after each epoch as")
        self.fn = fn

    def on_epoch_end(self, run, epoch, record):
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return _checks.asks_to_stop(self.fn(epoch, record), f"callback {name}")


def _writable(path, name, like="model.npz"):
    """Refuse, before any training, a path that could not be written."""
    from ..checkpoint import path_problem
    problem = path_problem(path, like)
    if problem:
        shown = os.fspath(path) if isinstance(path, os.PathLike) else path
        kind = InputTypeError if problem.startswith("must be a file path") else InputValueError
        raise kind(f"{name}={shown!r}: {problem}")
    return path


def _checked_path(path, name, like="model.npz", deferred=False):
    """``_writable`` where it is known which rank writes the file: alone, at
    construction; in a distributed job, when fit checks its callbacks
    (``deferred``), on rank 0 alone (its file system is the one that must
    take the file) and inside the ranks' agreement, so that its refusal ends
    every rank (refused at construction, on one rank or on all, it left the
    others waiting in the first collective)."""
    from ..distributed import world
    here = world()
    if deferred:
        if here.size > 1 and here.rank == 0:
            _writable(path, name, like)
        return path
    return _writable(path, name, like) if here.size == 1 else path


class Checkpoint(Callback):
    """Saves the whole training state to ``path`` every ``every`` epochs
    (default: at every evaluation) and at the end, atomically; ``fit(resume=path)``
    continues such a run exactly. Runs after every other callback, so the
    final file holds the parameters ``fit`` returns. In a distributed fit it
    runs on every rank (saving is collective) and rank 0 writes the file."""

    late = True

    def __init__(self, path, every=None, *, extra=None, meta=None):
        """``extra`` (arrays by name) and ``meta`` (plain data) are written
        into every checkpoint as ``save(path, extra=, meta=)`` writes them
        (``nnx train`` keeps its standardisation and dataset there, so that
        ``nnx evaluate`` and ``nnx export`` take a training checkpoint too)."""
        # now, not at the first save epochs later (in a distributed job: see _checked_path)
        self.path = _checked_path(path, "checkpoint")
        self.every = None if every is None else _checks.integer("checkpoint_every", every)
        from ..checkpoint import check_extra, check_meta
        # what save() would refuse, refused now (the training state's own
        # arrays are 'good_params' and names with a dot)
        check_extra(extra, reserved=("params", "good_params", "__header__"))
        dotted = [n for n in extra or {} if "." in n]
        if dotted:
            raise InputValueError(f"Checkpoint extra name {dotted[0]!r}: names with a dot are "
                                  "the training state's own; choose a plain name such as "
                                  "'x_mean'")
        check_meta(meta)
        self.extra, self.meta = dict(extra or {}), meta
        self._trained = False

    def agreed_settings(self):
        return {"every": self.every}  # when the ranks save together

    def check(self, net):
        _checked_path(self.path, "checkpoint", deferred=True)
        try:
            net.describe()
        except TypeError as exc:
            raise InputTypeError(f"checkpoint={os.fspath(self.path)!r}: {exc}") from None

    def on_fit_start(self, run):
        self._trained = False

    def on_epoch_end(self, run, epoch, record):
        self._trained = True
        every = self.every or run.settings.eval_every
        if not run.finishing and epoch % every == 0:
            run.save(self.path, extra=self.extra, meta=self.meta)

    def on_fit_end(self, run):
        if self._trained:  # resuming a finished run writes nothing
            run.save(self.path, extra=self.extra, meta=self.meta)


class _Bar:
    """A tqdm bar on stderr, or nothing (off a terminal, or without tqdm)."""

    def __init__(self, total, desc, initial=0):
        self.bar = None
        if not sys.stderr.isatty():
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        # a resumed run starts at its epoch (an update() would count those epochs
        # as done in no time, and show thousands of epochs a second)
        self.bar = tqdm(total=total, desc=desc, unit="epoch", leave=False, file=sys.stderr,
                        initial=initial)


class ProgressBar(Callback):
    """A progress bar (tqdm, on a terminal) showing the epoch, the last
    evaluation loss and the learning rate."""

    main_only = True

    def __init__(self, desc="fit"):
        self.desc = desc
        self._bar = None

    def on_fit_start(self, run):
        self._bar = _Bar(run.settings.epochs, self.desc, initial=run.epoch).bar

    def on_epoch_end(self, run, epoch, record):
        if self._bar is None:
            return
        self._bar.update(1)
        if record is not None:
            loss = record["loss"] if record["loss"] is not None else record["train_loss"]
            self._bar.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.4g}")

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _format(value):
    return "-" if value is None else f"{value:.4f}"


class PrintProgress(Callback):
    """One line per evaluation on ``file`` (default stdout): epoch, training
    loss, evaluation loss, learning rate and seconds so far
    (``fit(verbose=True)``)."""

    main_only = True

    def __init__(self, file=None):
        self.file = file
        self._t0 = None

    def on_fit_start(self, run):
        self._t0 = time.perf_counter()

    def on_evaluation(self, run, record):
        out = self.file if self.file is not None else sys.stdout
        acc = record.get("accuracy")
        print(f"epoch {record['epoch']:>4}/{run.settings.epochs}  train loss "
              f"{_format(record['train_loss'])}  eval loss {_format(record['loss'])}"
              + (f"  eval accuracy {acc:.4f}" if acc is not None else "")
              + f"  lr {record['lr']:.4g}  {time.perf_counter() - self._t0:.1f} s", file=out,
              flush=True)


class CSVLogger(Callback):
    """One row per evaluation in the CSV file ``path``: epoch, train_loss,
    eval_loss and eval_accuracy (empty without an evaluation set, and the
    accuracy for classification losses only), lr and seconds since the fit
    started. A resumed run goes on with the file: its rows up to the epoch
    resumed from are kept (the rows of evaluations after that checkpoint, which
    the resumed run makes again, are dropped) and the seconds count on."""

    COLUMNS = ("epoch", "train_loss", "eval_loss", "eval_accuracy", "lr", "seconds")
    main_only = True

    def __init__(self, path):
        self.path = _checked_path(path, "CSVLogger path", like="run.csv")
        self._file = self._writer = self._t0 = None

    def check(self, net):  # main_only: on rank 0 alone
        _checked_path(self.path, "CSVLogger path", like="run.csv", deferred=True)

    def on_fit_start(self, run):
        kept = self._rows_before(run.epoch) if run.epoch > 0 else []
        # a missing folder is made, as for checkpoints (the path was checked)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        text = io.StringIO(newline="")
        csv.writer(text).writerows([self.COLUMNS, *kept])
        with atomic_write(self.path) as f:  # a crash here leaves the old log whole
            f.write(text.getvalue().encode())
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)
        self._t0 = time.perf_counter() - (float(kept[-1][-1]) if kept else 0.0)

    def _rows_before(self, epoch):
        """The file's rows of epochs up to ``epoch``, where it is a log of
        these columns (anything else there is not kept)."""
        try:
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error):
            return []
        if not rows or tuple(rows[0]) != self.COLUMNS:
            return []
        kept = []
        for row in rows[1:]:
            try:
                if len(row) == len(self.COLUMNS) and int(row[0]) <= epoch:
                    float(row[-1])
                    kept.append(row)
            except ValueError:  # a row cut short by a crash mid-write
                continue
        return kept

    def on_evaluation(self, run, record):
        def cell(key):
            return "" if record.get(key) is None else repr(record[key])
        self._writer.writerow([record["epoch"], repr(record["train_loss"]), cell("loss"),
                               cell("accuracy"), repr(record["lr"]),
                               f"{time.perf_counter() - self._t0:.3f}"])
        self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
