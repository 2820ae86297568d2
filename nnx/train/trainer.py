"""Trainer: the mini-batch loop, on the network's device, with callbacks
around it (see ``callbacks.py``)."""

from __future__ import annotations

import logging
import math
import os

from .. import _checks
from .._checks import InputTypeError, InputValueError, InputWarning
from ..backend import Backend, CaptureUnavailable, host
from ..optim import Optimizer
from .callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    LambdaCallback,
    LRScheduler,
    PrintProgress,
)
from .settings import FitSettings, History

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


class _Steps:
    """Runs the training step of each batch: eagerly, or, for full-size
    batches on a backend that can record graphs, by replaying one captured
    step (forward, loss, backward, update) whose inputs are fixed buffers.

    The first full batch runs eagerly (kernels compile, optimiser state is
    allocated); the step is captured on the next one, and again only if the
    network's dropout generator is replaced (the rates and the step count
    live in device arrays that the optimiser updates in place).
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
        loss = self.net.train_step(xb, yb)
        self.optim.step()
        return loss

    def _capture(self, xb, yb):
        def step():
            loss = self.net.train_step(xb, yb)
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


class _Data:
    """The training and evaluation arrays on the device, checked once, and
    the batch buffers every step refills."""

    def __init__(self, net, X_train, y_train, evaluation, names):
        # one checked copy of each array on the device, before any training
        self.X = net.as_input(X_train, "X_train")
        if host.is_host_array(X_train) or isinstance(X_train, (list, tuple)):
            problem = host.spread_problem(X_train, "X_train")  # host data, already checked
            if problem:
                _checks.warn_caller(problem, InputWarning)
        self.n, width = int(self.X.shape[0]), int(self.X.shape[1])
        self.y = net.as_target(y_train, self.n, "y_train", "X_train")
        X_val, y_val = evaluation
        self.val = None
        if X_val is not None:
            X_val = net.as_input(X_val, names[0])
            if int(X_val.shape[1]) != width:
                raise InputValueError(f"{names[0]} has {int(X_val.shape[1])} features, but "
                                      f"X_train has {width}")
            self.val = (X_val, net.as_target(y_val, int(X_val.shape[0]), names[1], names[0]))
        self.eval_rows = None if self.val is None else int(self.val[0].shape[0])

    def batches(self, b, batch_size):
        """``(start, stop, X buffer, y buffer, full size?)`` per batch; the
        buffers are allocated once (two sizes at most) and refilled by every step."""
        n, width, classes = self.n, int(self.X.shape[1]), int(self.y.shape[1])
        sizes = {min(batch_size, n - start) for start in range(0, n, batch_size)}
        bufs = {s: (b.empty((s, width)), b.empty((s, classes))) for s in sizes}
        return [(start, min(start + batch_size, n), *bufs[min(batch_size, n - start)],
                 start + batch_size <= n) for start in range(0, n, batch_size)]


def _evaluation_set(X_test, y_test, validation):
    if (X_test is None) != (y_test is None):
        raise InputValueError("pass both X_test and y_test, or neither")
    if validation is None:
        return (X_test, y_test), ("X_test", "y_test")
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise InputTypeError("validation must be a pair (X_val, y_val), got "
                             f"{type(validation).__name__}")
    if any(v is None for v in validation):
        raise InputValueError("validation=(X_val, y_val) holds None; pass both arrays, or "
                              "leave validation out to evaluate on X_test, y_test")
    return tuple(validation), ("X_val", "y_val")


class Trainer:
    """Trains ``net`` with ``optim``. Creating the trainer attaches the network
    to the optimiser, so ``net.train_batch(X, y); optim.step()`` also works.
    ``callbacks`` are used by every ``fit`` of this trainer."""

    def __init__(self, net, optim, callbacks=()):
        from ..network import NeuralNetwork
        if not isinstance(net, NeuralNetwork):
            raise InputTypeError(f"net must be a NeuralNetwork, got {type(net).__name__}")
        if not isinstance(optim, Optimizer):
            raise InputTypeError(f"optim must be an Optimizer (SGD, SGDMomentum, Adam, ...), "
                                 f"got {optim!r}")
        self.net = net
        self.optim = optim
        self.callbacks = _callback_list(callbacks)
        optim.attach(net)

    def fit(self, X_train, y_train, X_test=None, y_test=None, epochs=100, eval_every=None,
            batch_size=32, seed=1, restart=True, *, validation=None, patience=1,
            min_delta=0.0, callback=None, callbacks=(), graph=True, checkpoint=None,
            checkpoint_every=None, resume=None, verbose=False, monitor="loss"):
        """Train for up to ``epochs`` epochs of shuffled mini-batches.

        Every ``eval_every`` epochs (default 10, or ``epochs`` when that is
        fewer) and after the last one, the loss on the evaluation set is
        measured in inference mode. That set is ``validation=(X_val, y_val)``
        when given, else ``(X_test, y_test)`` as in the study; choosing the
        model on a set you then report on flatters it, so pass a validation
        set when the test figure matters.

        The keywords are shorthands for callbacks (``nnx.train.callbacks``):
        ``patience``/``min_delta``/``monitor`` an ``EarlyStopping`` (stop when
        the evaluation loss, or with ``monitor="accuracy"`` the evaluation
        accuracy, has not improved by more than ``min_delta`` for ``patience``
        evaluations in a row, ``None`` never; the best evaluation's parameters
        are restored at the end); ``callback(epoch, record_or_None)`` a
        ``LambdaCallback`` called after every epoch, which stops training by
        returning True; ``checkpoint=path`` a ``Checkpoint`` saving the whole
        training state atomically every ``checkpoint_every`` epochs (default
        ``eval_every``) and at the end, which ``resume=path`` continues, with
        the same arguments, exactly where it stopped; ``verbose=True`` a
        ``PrintProgress`` printing one line per evaluation. ``callbacks``
        adds your own (an ``EarlyStopping`` there replaces the default one).

        ``restart=True`` draws the initial weights again from the network's
        seed; ``seed`` seeds the shuffling. ``graph=True`` (default) records
        the training step as a CUDA graph and replays it on backends that can
        (the GPU); where capture is refused, a log line says why and training
        goes on step by step. Each epoch's loss stays on the device; at
        evaluations the losses since the last one are read, and a NaN or
        infinite value raises ``TrainingDiverged`` after restoring the last
        good evaluation's parameters. Returns a ``History``.
        """
        net, optim = self.net, self.optim
        settings = FitSettings.of(epochs, eval_every, batch_size, seed, patience, min_delta,
                                  optim, monitor)
        evaluation, names = _evaluation_set(X_test, y_test, validation)
        cbs = self._fit_callbacks(settings, callback, callbacks, checkpoint, checkpoint_every,
                                  verbose)
        for cb in cbs:
            cb.check(net)
        data = _Data(net, X_train, y_train, evaluation, names)
        if not net.built:  # only once every array passed its checks
            net.build(int(data.X.shape[1]))
        settings = settings.with_data(data.n, data.eval_rows, net.seed)
        if optim.net is not net:  # the optimiser was attached to another network since
            optim.attach(net)
        run = _Run(net, optim, settings, cbs, data)
        if resume is not None:
            run.load(resume)
        else:
            run.begin(restart)
        try:
            return run.train(graph)
        finally:
            for cb in cbs:
                cb.close()

    def _fit_callbacks(self, settings, callback, callbacks, checkpoint, checkpoint_every,
                       verbose):
        """The callbacks of one fit, in calling order: the schedule, early
        stopping, the user's, the printer, and the checkpoint last."""
        own = self.callbacks + _callback_list(callbacks)
        if callback is not None:
            own.append(LambdaCallback(callback))
        if checkpoint_every is not None and checkpoint is None:
            _checks.integer("checkpoint_every", checkpoint_every)
            raise InputValueError("checkpoint_every was given without a checkpoint path")
        if checkpoint is not None:
            own.append(Checkpoint(checkpoint, checkpoint_every))
        if not any(isinstance(c, EarlyStopping) for c in own):
            own.insert(0, EarlyStopping(settings.patience, settings.min_delta,
                                        monitor=settings.monitor))
        if _checks.is_true(verbose):
            own.append(PrintProgress())
        elif verbose is not False and verbose is not None and not _checks._is_bool(verbose):
            raise InputTypeError(f"verbose must be True or False, got {verbose!r}")
        return [LRScheduler()] + [c for c in own if not c.late] + [c for c in own if c.late]


def _callback_list(callbacks):
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise InputTypeError(f"callbacks must be a list of Callback objects, got "
                             f"{callbacks!r}") from None
    for c in callbacks:
        if not isinstance(c, Callback):
            raise InputTypeError(f"callbacks must hold Callback objects (nnx.train.callbacks), "
                                 f"got {c!r}; a plain function goes in callback=")
    return callbacks


class _Run:
    """The state of one ``fit``: where it is, what it saw, what it keeps; the
    unit saved to and loaded from a training checkpoint."""

    def __init__(self, net, optim, settings, callbacks, data):
        self.net, self.optim, self.b = net, optim, net.backend
        self.settings, self.callbacks, self.data = settings, callbacks, data
        self.history = History()
        self.epoch = 0
        self.finished = False
        self.finishing = False  # this epoch is the last: set before on_epoch_end's checkpoint
        self._stop = False
        self.good_params, self.good_epoch = None, 0
        self.pending = []  # device losses of the epochs since the last read
        # written into every checkpoint of this run: a file that no longer
        # carries it was written by someone else since this run's last save
        self.run_id = os.urandom(8).hex()
        self.saved_to = {}  # real path -> the epoch this run last saved there

    def request_stop(self):
        """End training after the current epoch (callbacks call this)."""
        self._stop = True

    def begin(self, restart):
        net, optim = self.net, self.optim
        if restart:
            loaded = net.__dict__.pop("_loaded_from", None)
            if loaded is not None:
                _checks.warn_caller(
                    f"fit(restart=True) draws new weights for the network loaded from "
                    f"{loaded!r}; pass restart=False to go on training the loaded weights",
                    UserWarning)
            net.reset()
            optim.attach(net)
        optim.start(self.settings.epochs, self.steps_per_epoch)
        self.snapshot_good(0)

    @property
    def steps_per_epoch(self):
        return math.ceil(self.data.n / self.settings.batch_size)

    # ---------------------------------------------------------------- the loop
    def train(self, graph):
        s, b = self.settings, self.b
        batches = self.data.batches(b, s.batch_size)
        steps = _Steps(self.net, self.optim, graph)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        for epoch in range(self.epoch, s.epochs):
            if self.finished:
                break
            for cb in self.callbacks:
                cb.on_epoch_start(self, epoch)
            lr = self.optim.lr
            self.pending.append(self._epoch(epoch, batches, steps))
            self.epoch = self.history.epochs_run = epoch + 1
            self._end_epoch(lr)
        self.history.graph, self.history.graph_note = steps.replay is not None, steps.note
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self.history

    def _epoch(self, epoch, batches, steps):
        """One pass over the rows in this epoch's order; the summed loss stays
        on the device."""
        b, X, y = self.b, self.data.X, self.data.y
        order = b.epoch_order(host.derive_seed(self.settings.seed, 0, epoch), self.data.n)
        epoch_loss = b.zeros(())
        with b.quiet_float_errors():  # a divergence is reported as TrainingDiverged
            for start, stop, xb, yb, full in batches:
                idx = order[start:stop]
                b.take_rows(X, idx, out=xb)
                b.take_rows(y, idx, out=yb)
                epoch_loss += steps(xb, yb, full)
        self._last_batch = (xb, yb)
        return epoch_loss

    def _end_epoch(self, lr):
        epoch, s = self.epoch, self.settings
        record = None
        if epoch % s.eval_every == 0 or epoch == s.epochs:
            record = self.evaluate(lr)
        last = epoch == s.epochs
        for cb in self.callbacks:
            if not cb.late and _checks.is_true(cb.on_epoch_end(self, epoch, record)):
                self._stop = True
        if self._stop and record is None:
            # stopping here: evaluate the parameters it stops with, as at any
            # last epoch (a divergence since the last evaluation shows now)
            record = self.evaluate(lr)
        self.finishing = last or self._stop
        for cb in self.callbacks:  # the checkpoint: it must know whether this epoch ends the run
            if cb.late:
                cb.on_epoch_end(self, epoch, record)
        if self._stop or last:
            self.finished = True
            self.history.stopped_early = self.history.stopped_early or not last

    # ----------------------------------------------------------- evaluations
    def evaluate(self, lr):
        """The evaluation after epoch ``self.epoch``: read and check the epoch
        losses, measure the evaluation set (or, without it, check the
        parameters on the last batch), keep the record and tell the
        callbacks. Returns the record."""
        b, epoch, val = self.b, self.epoch, self.data.val
        record = {"epoch": epoch, "lr": lr,
                  "train_loss": self.check_pending() / self.steps_per_epoch, "loss": None,
                  "accuracy": None}
        if val is not None:
            classes = self.net.loss.classification and self.net.n_out > 1
            with b.quiet_float_errors():
                measured = self.net.mean_loss(*val, accuracy=classes)
                if classes:  # both numbers in one transfer
                    loss, acc = (float(v) for v in b.to_numpy(b.stack(list(measured))))
                    record["accuracy"] = acc
                else:
                    loss = b.to_float(measured)
            record["loss"] = loss
            self.check_finite(record["loss"], epoch)
        with b.quiet_float_errors():
            self.check_parameters(epoch, None if val is not None else self._last_batch)
        self.history.records.append(record)
        self.snapshot_good(epoch)
        for cb in self.callbacks:
            cb.on_evaluation(self, record)
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
            self.optim.state = {}  # it holds the NaNs too
            self.history.stopped_early = True
            raise TrainingDiverged(epoch, self.good_epoch, self.history)

    def check_parameters(self, epoch, last_batch=None):
        """Raise ``TrainingDiverged`` unless the parameters are finite and, given
        ``last_batch`` (without an evaluation set), give a finite loss on it:
        the epoch losses are measured before each update, so a last update
        that diverged shows only here."""
        self.check_finite(self.b.to_float(self.b.max_abs(self.net.param_buffer)), epoch)
        if last_batch is not None:
            self.check_finite(self.b.to_float(self.net.mean_loss(*last_batch)), epoch)

    def snapshot_good(self, epoch):
        self.good_params, self.good_epoch = self.net.get_parameters(), epoch

    # ------------------------------------------------------------ checkpoints
    def save(self, path):
        """The whole training state to ``path`` (the parameters, the
        optimiser's, every callback's, the history), atomically. Raises
        ``TrainingDiverged`` for parameters that are not finite (the file
        keeps the last good state), and ``CheckpointError`` if something
        else replaced the file this run last saved at ``path``."""
        if self.pending:  # never save parameters that may already be NaN
            self.check_pending()
        with self.b.quiet_float_errors():  # the last update of an epoch may have overflowed
            self.check_parameters(self.epoch)
        key = os.path.realpath(os.fsdecode(os.fspath(path)))
        if key in self.saved_to:
            self.check_owner(path, self.saved_to[key])
        optim_data, optim_arrays = self.optim.state_for_checkpoint()
        extra = {"good_params": self.good_params}
        extra.update({f"optim.{k}": v for k, v in optim_arrays.items()})
        callbacks = {}
        for cb in self.callbacks:
            if cb.state_key is not None:
                data, arrays = cb.checkpoint_state()
                callbacks[cb.state_key] = data
                extra.update({f"{cb.state_key}.{k}": v for k, v in arrays.items()})
        state = {"epoch": self.epoch, "finished": self.finished, "good_epoch": self.good_epoch,
                 "generator": self.net.generator_state(), "optimizer": optim_data,
                 "callbacks": callbacks, "history": self.history.as_dict(),
                 "settings": self.settings.as_dict(), "run_id": self.run_id}
        self.net.save(path, extra=extra, training=state)
        self.saved_to[key] = self.epoch

    def check_owner(self, path, epoch):
        """Raise ``CheckpointError`` unless the file at ``path`` is this run's
        last checkpoint (or is gone)."""
        from ..checkpoint import CheckpointError, read_header
        try:
            training = read_header(path).get("training")
        except CheckpointError as exc:
            if not os.path.exists(path):
                return  # removed: nobody's checkpoint is lost by writing it again
            training, unreadable = None, exc
        else:
            unreadable = None
        found = training.get("run_id") if isinstance(training, dict) else None
        if found == self.run_id:
            return
        if isinstance(found, str):
            now = f"run {found}'s checkpoint"
        elif unreadable is not None:
            now = f"a file nnx cannot read as this run's: {unreadable}"
        else:
            now = "a checkpoint without a run id, as net.save writes"
        raise CheckpointError(
            f"checkpoint {os.fspath(path)!r} was replaced since this run saved it at epoch "
            f"{epoch} (it now holds {now}; this is run {self.run_id}): two runs, or a run "
            "and something else, write this path; give each run its own checkpoint path")

    def load(self, path):
        from .resume import load_run
        load_run(self, path)
