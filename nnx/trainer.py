"""Trainer: mini-batch training with evaluation, early stopping and
learning-rate decay, all on the network's device."""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field

from . import _checks
from ._checks import InputTypeError, InputValueError
from .backend import Backend, CaptureUnavailable, host
from .checkpoint import path_problem
from .optimizers import Optimizer

log = logging.getLogger("nnx")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. ``epoch`` is the first epoch
    whose loss was not finite; the network holds the parameters of the last
    good evaluation (``restored_epoch``, 0 for the initial weights)."""

    def __init__(self, epoch, restored_epoch, history):
        self.epoch, self.restored_epoch, self.history = epoch, restored_epoch, history
        super().__init__(
            f"training diverged: the loss became NaN or infinite in epoch {epoch}; the "
            f"parameters of {'epoch ' + str(restored_epoch) if restored_epoch else 'the start'}"
            " were restored (try a smaller learning rate)")


@dataclass
class History:
    """What ``fit`` saw: ``records``, one per evaluation, with ``epoch``
    (1-based), ``loss`` (on the evaluation set, or None without one),
    ``train_loss`` (mean batch loss of that epoch) and ``lr`` (the rate used
    in that epoch); ``best_epoch`` and ``best_loss`` (the evaluation whose
    parameters the network holds at the end; None and inf when no
    evaluation measured a loss); ``stopped_early`` (training ended before
    ``epochs``, by early stopping or a callback's request, or it diverged); ``epochs_run``;
    ``graph`` and ``graph_note`` (whether full batches ran as a replayed
    captured step, and why not)."""

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


class _Steps:
    """Runs the training step of each batch: eagerly, or, for full-size
    batches on a backend that can record graphs, by replaying one captured
    step (forward, loss, backward, update) whose inputs are fixed buffers.

    The first full batch runs eagerly (kernels compile, optimiser state is
    allocated); the step is captured on the next one, and again only if the
    network's dropout generator is replaced (the learning rate lives in a
    device array that the optimiser updates in place).
    """

    def __init__(self, net, optim, use_graph):
        self.net, self.optim = net, optim
        self.use_graph = bool(use_graph) and type(net.backend).capture is not Backend.capture
        self.warm = False
        self.replay = self.result = self.rng = None
        self.note = ""

    def __call__(self, xb, yb, full):
        if self.use_graph and full:
            # the graph reads the rate from the optimiser's device copy, but it
            # holds on to the generator it was recorded with
            if self.warm and (self.replay is None or self.rng is not self.net.rng):
                self._capture(xb, yb)
            if self.replay is not None:
                self.replay()
                return self.result
            self.warm = True
        loss = self.net._train_step(xb, yb)
        self.optim.step()
        return loss

    def _capture(self, xb, yb):
        def step():
            loss = self.net._train_step(xb, yb)
            self.optim.step()
            return loss
        try:
            self.replay, self.result = self.net.backend.capture(step)
            self.rng = self.net.rng
            # the layers keep arrays from the graph's private memory after the
            # last replay: the network holds the graph (and that memory) until
            # it records another
            self.net._captured_step = self.replay
        except CaptureUnavailable as exc:
            self.use_graph, self.replay = False, None
            self.note = str(exc)
            log.warning("nnx: graph capture unavailable, training step by step (%s)", exc)


class Trainer:
    """Trains ``net`` with ``optim``. Creating the trainer attaches the network
    to the optimiser, so ``net.train_batch(X, y); optim.step()`` also works."""

    def __init__(self, net, optim):
        from .network import NeuralNetwork
        if not isinstance(net, NeuralNetwork):
            raise InputTypeError(f"net must be a NeuralNetwork, got {type(net).__name__}")
        if not isinstance(optim, Optimizer):
            raise InputTypeError(f"optim must be an Optimizer (SGD, SGDMomentum), got {optim!r}")
        self.net = net
        self.optim = optim
        optim.attach(net)

    def fit(self, X_train, y_train, X_test=None, y_test=None, epochs=100, eval_every=None,
            batch_size=32, seed=1, restart=True, *, validation=None, patience=1,
            min_delta=0.0, callback=None, graph=True, checkpoint=None, checkpoint_every=None,
            resume=None):
        """Train for up to ``epochs`` epochs of shuffled mini-batches.

        Every ``eval_every`` epochs (default 10, or ``epochs`` when that is
        fewer) and after the last one, the loss on the evaluation set is
        measured in inference mode. That set is
        ``validation=(X_val, y_val)`` when given, else ``(X_test, y_test)`` as in
        the study; choosing the model on a set you then report on flatters it,
        so pass a validation set when the test figure matters. When the loss has
        not improved by more than ``min_delta`` for ``patience`` evaluations in
        a row, training stops and the parameters of the best evaluation are
        restored (they are also restored at the end if a later one was worse).

        ``restart=True`` draws the initial weights again from the network's
        seed; ``seed`` seeds the shuffling. ``callback(epoch, record_or_None)``,
        if given, is called after every epoch; if it returns True, training
        stops there as early stopping does (``stopped_early``, and the best
        evaluation's parameters restored). ``graph=True`` (default) records
        the training step as a CUDA graph and replays it on backends that can
        (the GPU); where capture is refused, a log line says why and training
        goes on step by step.

        Each epoch's loss stays on the device; at evaluations the losses since
        the last one are read, and a NaN or infinite value raises
        ``TrainingDiverged`` after restoring the last good evaluation's
        parameters. With ``checkpoint=path`` the whole training state
        (parameters, optimiser velocity and rate, epoch, best and last good
        parameters, history) is saved atomically every ``checkpoint_every``
        epochs (default ``eval_every``) and at the end; ``resume=path``
        continues such a run, with the same arguments, exactly where it
        stopped. Returns a ``History``.
        """
        net, optim = self.net, self.optim
        epochs = _checks.integer("epochs", epochs)
        if eval_every is None:  # the study's 10, for runs of 10 epochs or more
            eval_every = min(10, epochs)
        eval_every = _checks.integer("eval_every", eval_every)
        batch_size = _checks.integer("batch_size", batch_size)
        if eval_every > epochs:
            raise InputValueError(f"eval_every={eval_every} is larger than epochs={epochs}: "
                                  "no evaluation would happen before the end")
        patience = _checks.integer("patience", patience)
        seed = _checks.integer("seed", seed, minimum=0)
        min_delta = _checks.non_negative("min_delta", min_delta)
        if callback is not None and not callable(callback):
            raise InputTypeError(f"callback must be callable(epoch, record), got {callback!r}")
        if (X_test is None) != (y_test is None):
            raise InputValueError("pass both X_test and y_test, or neither")
        if validation is not None and (not isinstance(validation, (tuple, list))
                                       or len(validation) != 2):
            raise InputTypeError("validation must be a pair (X_val, y_val), got "
                                 f"{type(validation).__name__}")
        if validation is not None and any(v is None for v in validation):
            raise InputValueError("validation=(X_val, y_val) holds None; pass both arrays, or "
                                  "leave validation out to evaluate on X_test, y_test")
        if checkpoint_every is not None:
            checkpoint_every = _checks.integer("checkpoint_every", checkpoint_every)
            if checkpoint is None:
                raise InputValueError("checkpoint_every was given without a checkpoint path")
        if checkpoint is not None:  # found now, not at the first save epochs later
            shown = os.fspath(checkpoint) if isinstance(checkpoint, os.PathLike) else checkpoint
            problem = path_problem(checkpoint)
            if problem:
                raise InputValueError(f"checkpoint={shown!r}: {problem}")
            try:
                net.describe()
            except TypeError as exc:
                raise InputTypeError(f"checkpoint={shown!r}: {exc}") from None
        settings = {"epochs": epochs, "eval_every": eval_every, "batch_size": batch_size,
                    "seed": seed, "patience": patience, "min_delta": min_delta,
                    "optimizer": repr(optim)}

        # one checked copy of each array on the device, before any training; the
        # network is built only once all of them passed
        X = net.as_input(X_train, "X_train")
        n, width = int(X.shape[0]), int(X.shape[1])
        y = net.as_target(y_train, n, "y_train", "X_train")
        val_names = ("X_val", "y_val") if validation is not None else ("X_test", "y_test")
        X_val, y_val = validation if validation is not None else (X_test, y_test)
        if X_val is not None:
            X_val = net.as_input(X_val, val_names[0])
            if int(X_val.shape[1]) != width:
                raise InputValueError(f"{val_names[0]} has {int(X_val.shape[1])} features, but "
                                      f"X_train has {width}")
            y_val = net.as_target(y_val, int(X_val.shape[0]), val_names[1], val_names[0])
        if not net.built:
            net.build(width)
        settings.update(train_rows=n, eval_rows=None if X_val is None else int(X_val.shape[0]))

        b = net.backend
        if optim.net is not net:  # the optimiser was attached to another network since
            optim.attach(net)
        run = _Run(net, optim)
        if resume is not None:
            run.load(resume, settings)
        else:
            if restart:
                loaded = net.__dict__.pop("_loaded_from", None)
                if loaded is not None:
                    warnings.warn(
                        f"fit(restart=True) draws new weights for the network loaded from "
                        f"{loaded!r}; pass restart=False to go on training the loaded weights",
                        stacklevel=2)
                net.reset()
                optim.attach(net)
            optim.setup_decay(epochs)
            run.snapshot_good(0)
        history = run.history
        n_batches = math.ceil(n / batch_size)
        # the batches: (start, stop, X buffer, y buffer, full size?), the buffers
        # allocated once and refilled by every step (two sizes at most)
        width, classes = int(X.shape[1]), int(y.shape[1])
        sizes = {min(batch_size, n - start) for start in range(0, n, batch_size)}
        bufs = {s: (b.empty((s, width)), b.empty((s, classes))) for s in sizes}
        batches = [(start, min(start + batch_size, n), *bufs[min(batch_size, n - start)],
                    start + batch_size <= n) for start in range(0, n, batch_size)]

        steps = _Steps(net, optim, graph)
        for epoch in range(run.epoch, epochs):
            if run.finished:
                break
            lr = optim.lr
            order = b.epoch_order(host.derive_seed(seed, 0, epoch), n)
            epoch_loss = b.zeros(())  # summed on the device; read at evaluations
            with b.quiet_float_errors():  # a divergence is reported as TrainingDiverged
                for start, stop, xb, yb, full in batches:
                    idx = order[start:stop]
                    b.take_rows(X, idx, out=xb)
                    b.take_rows(y, idx, out=yb)
                    epoch_loss += steps(xb, yb, full)
            run.epoch = history.epochs_run = epoch + 1
            run.pending.append(epoch_loss)

            # what an evaluation needs: the data to measure, the early-stopping rule
            evaluation = (lr, n_batches, None if X_val is None else (X_val, y_val), (xb, yb),
                          patience, min_delta, epoch + 1 == epochs)
            record = None
            if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
                record = run.evaluate(*evaluation)
            if callback is not None and _checks.is_true(callback(epoch + 1, record)):
                # the callback asks to stop: after this epoch, as early stopping does,
                # and with the stopping parameters evaluated, as at any last epoch
                run.finished = True
                history.stopped_early = history.stopped_early or epoch + 1 < epochs
                if record is None:
                    run.evaluate(*evaluation)
            if not run.finished:
                optim.decay(epoch)
            run.finished = run.finished or epoch + 1 == epochs
            if run.finished:  # before the last save, so the file holds what fit returns
                run.restore_best()
            if checkpoint is not None and (run.finished or (epoch + 1) % (
                    checkpoint_every or eval_every) == 0):
                run.save(checkpoint, settings)

        history.graph, history.graph_note = steps.replay is not None, steps.note
        run.restore_best()
        return history


class _Run:
    """The state of one ``fit``: where it is, what it saw, what it keeps; the
    unit saved to and loaded from a training checkpoint."""

    def __init__(self, net, optim):
        self.net, self.optim, self.b = net, optim, net.backend
        self.history = History()
        self.epoch = 0
        self.finished = False
        self.bad_evals = 0
        self.best_params = None
        self.good_params, self.good_epoch = None, 0
        self.pending = []  # device losses of the epochs since the last read

    def evaluate(self, lr, n_batches, val, last_batch, patience, min_delta, last):
        """The evaluation after epoch ``self.epoch``: read and check the epoch
        losses, measure ``val`` (or, without it, check the parameters on
        ``last_batch``), keep the record and apply early stopping. Returns the record."""
        b, epoch = self.b, self.epoch
        record = {"epoch": epoch, "lr": lr, "train_loss": self.check_pending() / n_batches,
                  "loss": None}
        if val is not None:
            with b.quiet_float_errors():
                record["loss"] = b.to_float(self.net._mean_loss(*val))
            self.check_finite(record["loss"], epoch)
        with b.quiet_float_errors():
            self.check_parameters(epoch, None if val is not None else last_batch)
        self.history.records.append(record)
        self.snapshot_good(epoch)
        self.early_stopping(record, patience, min_delta, last=last)
        return record

    def check_pending(self):
        """Read the epoch losses not read yet (one transfer); raise
        ``TrainingDiverged`` if any is not finite. Returns the last one."""
        values = [float(v) for v in self.b.to_numpy(self.b.stack(self.pending))]
        first = self.epoch - len(values) + 1
        self.pending = []
        for i, v in enumerate(values):
            self.check_finite(v, first + i)
        return values[-1]

    def check_finite(self, value, epoch):
        if not math.isfinite(value):
            self.net.set_parameters(self.good_params)
            self.optim.velocity = None  # it holds the NaNs too
            self.history.stopped_early = True
            raise TrainingDiverged(epoch, self.good_epoch, self.history)

    def check_parameters(self, epoch, last_batch=None):
        """Raise ``TrainingDiverged`` unless the parameters are finite and, given
        ``last_batch`` (without an evaluation set), give a finite loss on it:
        the epoch losses are measured before each update, so a last update
        that diverged shows only here."""
        self.check_finite(self.b.to_float(self.b.max_abs(self.net._param_buf)), epoch)
        if last_batch is not None:
            self.check_finite(self.b.to_float(self.net._mean_loss(*last_batch)), epoch)

    def snapshot_good(self, epoch):
        self.good_params, self.good_epoch = self.net.get_parameters(), epoch

    def early_stopping(self, record, patience, min_delta, last=False):
        h = self.history
        if record["loss"] is None:
            return
        if record["loss"] < h.best_loss - min_delta:
            h.best_loss, h.best_epoch = record["loss"], record["epoch"]
            self.best_params = self.good_params
            self.bad_evals = 0
        else:
            self.bad_evals += 1
            if self.bad_evals >= patience:
                self.finished = True
                h.stopped_early = not last  # at the last epoch, no epoch was skipped

    def restore_best(self):
        h = self.history  # unless the network holds the best evaluation's parameters now
        if self.best_params is not None and h.epochs_run != h.best_epoch:
            self.net.set_parameters(self.best_params)

    # ------------------------------------------------------------ checkpoints
    _ARRAYS = ("best_params", "good_params")

    def save(self, path, settings):
        if self.pending:  # never save parameters that may already be NaN
            self.check_pending()
        h = self.history
        state = {"epoch": self.epoch, "finished": self.finished, "bad_evals": self.bad_evals,
                 "good_epoch": self.good_epoch, "lr": self.optim.lr,
                 "generator": self.net.generator_state(),
                 "decay_epochs": self.optim.max_epochs,
                 "history": {"records": h.records, "best_epoch": h.best_epoch,
                             "best_loss": h.best_loss if math.isfinite(h.best_loss) else None,
                             "stopped_early": h.stopped_early,
                             "epochs_run": h.epochs_run},
                 "settings": settings}
        extra = {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}
        if self.optim.velocity is not None:
            extra["velocity"] = self.optim.velocity
        self.net.save(path, extra=extra, training=state)

    def load(self, path, settings):
        from .checkpoint import CheckpointError, read
        header, arrays = read(path)
        state = header.get("training")
        if state is None:
            raise CheckpointError(f"checkpoint {str(path)!r} holds a model, not a training run "
                                  "(it was written by save(), not by fit(checkpoint=...))")
        mine = self.net.describe()
        differ = [k for k in ("layers", "loss", "dtype", "n_in")
                  if header["network"].get(k) != mine[k]]
        if differ:
            raise InputValueError(f"resume={str(path)!r} was written for another network: its "
                                  + ", ".join(f"{k} {header['network'].get(k)!r} (this network: "
                                              f"{mine[k]!r})" for k in differ))
        changed = {k: (v, settings[k]) for k, v in state["settings"].items()
                   if settings.get(k) != v}
        if changed:
            raise InputValueError(f"resume={str(path)!r}: fit() arguments differ from the saved "
                                  "run's (saved, given): " + ", ".join(
                                      f"{k}={a!r} vs {c!r}" for k, (a, c) in changed.items()))
        b, optim = self.b, self.optim
        self.net.set_parameters(b.asarray(arrays["params"]))
        optim.attach(self.net)
        optim.setup_decay(state["decay_epochs"])
        optim.lr = state["lr"]
        if "velocity" in arrays:
            optim.velocity = b.asarray(arrays["velocity"])
        for k in self._ARRAYS:
            setattr(self, k, b.asarray(arrays[k]) if k in arrays else None)
        self.epoch, self.finished = state["epoch"], state["finished"]
        if not self.net.restore_generator(state["generator"], self.epoch):
            log.warning("nnx: %s backend cannot restore its dropout generator; the resumed run "
                        "draws a fresh reproducible stream, so it will not match the "
                        "uninterrupted run bit for bit", b.name)
        self.bad_evals, self.good_epoch = state["bad_evals"], state["good_epoch"]
        h = state["history"]
        self.history = History(records=h["records"], best_epoch=h["best_epoch"],
                               best_loss=math.inf if h["best_loss"] is None else h["best_loss"],
                               stopped_early=h["stopped_early"],
                               epochs_run=h["epochs_run"])
