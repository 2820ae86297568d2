"""Trainer: mini-batch training with evaluation, early stopping and
learning-rate decay, all on the network's device."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from .backend import Backend, CaptureUnavailable
from .optimizers import Optimizer

log = logging.getLogger("nnx")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


@dataclass
class History:
    """What ``fit`` saw: one record per evaluation with ``epoch`` (1-based),
    ``loss`` (on the evaluation set, or None without one), ``train_loss``
    (mean batch loss of that epoch) and ``lr`` (the rate used in that epoch)."""

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
    allocated); the step is captured on the next one and captured again
    whenever the learning rate changes, since the rate is recorded with it.
    """

    def __init__(self, net, optim, use_graph):
        self.net, self.optim = net, optim
        self.use_graph = bool(use_graph) and type(net.backend).capture is not Backend.capture
        self.warm = False
        self.replay = self.result = self.lr = None
        self.note = ""

    def __call__(self, xb, yb, full):
        if self.use_graph and full:
            if self.warm and (self.replay is None or self.lr != self.optim.lr):
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
            self.lr = self.optim.lr
        except CaptureUnavailable as exc:
            self.use_graph, self.replay = False, None
            self.note = str(exc)
            log.warning("nnx: graph capture unavailable, training step by step (%s)", exc)


class Trainer:
    """Trains ``net`` with ``optim``. Creating the trainer attaches the network
    to the optimiser, so ``net.train_batch(X, y); optim.step()`` also works."""

    def __init__(self, net, optim):
        if not isinstance(optim, Optimizer):
            raise TypeError(f"optim must be an Optimizer (SGD, SGDMomentum), got {optim!r}")
        self.net = net
        self.optim = optim
        optim.attach(net)

    def fit(self, X_train, y_train, X_test=None, y_test=None, epochs=100, eval_every=10,
            batch_size=32, seed=1, restart=True, *, validation=None, patience=1,
            min_delta=0.0, callback=None, graph=True):
        """Train for up to ``epochs`` epochs of shuffled mini-batches.

        Every ``eval_every`` epochs (and after the last one) the loss on the
        evaluation set is measured in inference mode. That set is
        ``validation=(X_val, y_val)`` when given, else ``(X_test, y_test)`` as in
        the study; choosing the model on a set you then report on flatters it,
        so pass a validation set when the test figure matters. When the loss has
        not improved by more than ``min_delta`` for ``patience`` evaluations in
        a row, training stops and the parameters of the best evaluation are
        restored (they are also restored at the end if a later one was worse).

        ``restart=True`` draws the initial weights again from the network's
        seed; ``seed`` seeds the shuffling. ``callback(epoch, record_or_None)``,
        if given, is called after every epoch. ``graph=True`` (default) records
        the training step as a CUDA graph and replays it on backends that can
        (the GPU); where capture is refused, a log line says why and training
        goes on step by step. Returns a ``History``.
        """
        net, optim = self.net, self.optim
        epochs = _positive_int("epochs", epochs)
        eval_every = _positive_int("eval_every", eval_every)
        batch_size = _positive_int("batch_size", batch_size)
        if eval_every > epochs:
            raise ValueError(f"eval_every={eval_every} is larger than epochs={epochs}: "
                             "no evaluation would happen before the end")
        patience = _positive_int("patience", patience)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        if (X_test is None) != (y_test is None):
            raise ValueError("pass both X_test and y_test, or neither")

        # one checked copy of each array on the device, before any training
        X = net.as_input(X_train, "X_train")
        n = int(X.shape[0])
        if not net.built:
            net.build(int(X.shape[1]))
        y = net.as_target(y_train, n, "y_train")
        if validation is not None:
            X_val, y_val = validation
        else:
            X_val, y_val = X_test, y_test
        if X_val is not None:
            X_val = net.as_input(X_val, "X_val" if validation is not None else "X_test")
            y_val = net.as_target(y_val, int(X_val.shape[0]),
                                  "y_val" if validation is not None else "y_test")
        if restart:
            net.reset()
            optim.attach(net)
        optim.setup_decay(epochs)

        b = net.backend
        gen = b.generator(seed)
        history = History()
        best_params = None
        bad_evals = 0
        n_batches = math.ceil(n / batch_size)
        # batch buffers, reused every step (at most two sizes: full and last)
        buffers = {}

        def batch(data, idx, key):
            shape = (int(idx.shape[0]), int(data.shape[1]))
            if (key, shape) not in buffers:
                buffers[key, shape] = b.empty(shape)
            return b.take_rows(data, idx, out=buffers[key, shape])

        steps = _Steps(net, optim, graph)
        for epoch in range(epochs):
            lr = optim.lr
            order = b.permutation(gen, n)
            epoch_loss = b.zeros(())  # summed on the device; read at evaluations
            for start in range(0, n, batch_size):
                idx = order[start:min(start + batch_size, n)]
                loss = steps(batch(X, idx, "X"), batch(y, idx, "y"),
                             full=start + batch_size <= n)
                epoch_loss = epoch_loss + loss
            history.epochs_run = epoch + 1

            record = None
            if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
                record = {"epoch": epoch + 1, "lr": lr,
                          "train_loss": b.to_float(epoch_loss) / n_batches, "loss": None}
                if X_val is not None:
                    record["loss"] = b.to_float(net.loss_on(X_val, y_val))
                history.records.append(record)
            if callback is not None:
                callback(epoch + 1, record)
            if record is not None and record["loss"] is not None:
                if record["loss"] < history.best_loss - min_delta:
                    history.best_loss, history.best_epoch = record["loss"], epoch + 1
                    best_params = net.get_parameters()
                    bad_evals = 0
                else:
                    bad_evals += 1
                    if bad_evals >= patience:
                        history.stopped_early = True
                        break
            optim.decay(epoch)

        history.graph, history.graph_note = steps.replay is not None, steps.note
        if best_params is not None and history.records[-1]["epoch"] != history.best_epoch:
            net.set_parameters(best_params)
        return history
