"""Trainer: the mini-batch loop, on the network's device, with callbacks
around it (see ``callbacks.py``)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import numbers
import os
import warnings

from .. import _checks
from .. import distributed as _distributed
from .._checks import InputTypeError, InputValueError, InputWarning
from ..backend import Backend, CaptureUnavailable, host
from ..losses import SoftmaxCrossEntropy
from ..network import ClassIds
from ..optim import Optimizer
from .callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    LambdaCallback,
    LRScheduler,
    PrintProgress,
    check_hooks,
)
from .settings import FitSettings, History

log = logging.getLogger("nnx")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. ``epoch`` is the first epoch
    whose loss was not finite; the network holds the parameters of the last
    good evaluation (``restored_epoch``, 0 for the initial weights)."""

    def __init__(self, epoch, restored_epoch, history, precision=None):
        self.epoch, self.restored_epoch, self.history = epoch, restored_epoch, history
        hint = ("try a smaller learning rate" if precision != "float16" else
                "precision='float16': a value beyond 65504 in a matrix product's inputs "
                "becomes infinite; standardise the inputs, or try precision='bfloat16' or a "
                "smaller learning rate")
        super().__init__(
            f"training diverged: the loss became NaN or infinite in epoch {epoch}; the "
            f"parameters of {'epoch ' + str(restored_epoch) if restored_epoch else 'the start'}"
            f" were restored ({hint})")


class _Steps:
    """Runs an epoch's training steps: eagerly, or, for the full-size batches
    on a backend that can record graphs, by replaying recorded steps.

    A recorded step does the whole of one batch on the device: it fetches
    the batch's rows of the epoch's order by a batch counter kept on the
    device (``gather_batch``), runs forward, loss, backward, the gradient
    all-reduce and the update, adds the loss to the epoch's device total and
    advances the counter. Nothing comes from the host per batch, so one graph
    can hold ``group`` consecutive steps and be launched once for all of
    them; a graph of one step serves the rest of the epoch.

    The first full batch runs eagerly (kernels compile, optimiser state is
    allocated); the steps are recorded on the next, and again only if the
    network's dropout generator is replaced or a setting a recorded step
    holds as it was recorded changes between epochs (the optimiser's
    weight decay, momentum or clipping, a Dropout's keep_prob, an
    activation's setting, the loss scaler's rules: a callback may change
    them; the rates
    and the step count live in device arrays that the optimiser updates in
    place). In a distributed fit every rank makes the same choices, so the
    ranks' graphs and eager steps call the all-reduce in the same order.
    """

    last_rows = None  # (X, y) of the last batch stepped eagerly

    group = 16  # full-size steps per graph launch

    def __init__(self, net, optim, use_graph, comm=_distributed.LOCAL, batch_size=None,
                 step=None):
        self.net, self.optim, self.comm = net, optim, comm
        # step(xb, yb) -> the batch's loss contribution: a whole step of one's
        # own (nnx.sklearn's), in place of train_step, all-reduce and update
        self.custom_step = step
        self.use_graph = bool(use_graph) and type(net.backend).capture is not Backend.capture
        self.warm = False
        self.graphs = {}  # steps per launch -> (replay, result)
        self.replayed = False  # whether any step of this fit ran from a graph
        self.recording = False  # whether a capture was tried (its arrays may be left over)
        self.rng = None  # the generator the graphs were recorded with
        self.settings = None  # and the host settings they hold (_host_settings)
        self.retired = []  # graphs recorded again since, kept as close() keeps graphs
        self.note = ""
        # full batch s of an epoch is rows s * stride + offset onwards of its order
        self.stride = None if batch_size is None else batch_size * comm.size
        self.offset = None if batch_size is None else batch_size * comm.rank
        self.feed = None  # the device arrays a recorded step reads (see _fed_step)

    def close(self):
        """The end of the fit: the graphs go, and with them the memory the
        layers' last arrays live in, so the network lets go of those first.
        A network with a layer, operation or loss of the user's own, which
        may keep arrays under other names, keeps the graphs (and their
        memory) instead, until its next fit."""
        if self.graphs or self.replayed or self.recording:
            if _all_builtin(self.net):
                self.net.forget_pass()
                self.net._graph_memory = None
            else:
                self.net._graph_memory = [*self.retired, dict(self.graphs)]
        self.graphs, self.retired = {}, []

    def _host_settings(self):
        """What a recorded step holds as the host values it was recorded
        with: the plain settings (numbers, strings) of every operation of the
        network (a Dropout's keep_prob, an activation's alpha) and of its
        loss, the loss scaler's rules, and the optimiser's settings."""
        ops = [op for layer in self.net.layers for op in layer.operations]
        parts = ops + [op.activation for op in ops if hasattr(op, "activation")]
        optim = () if self.optim is None else self.optim.host_settings()
        # (the loss's eps alone: the rest of it is a batch's, nnx.sklearn's
        # weight sum of the last, shorter, batch included)
        return ([_checks.plain_settings(p) for p in parts]
                + [{"eps": getattr(self.net.loss, "eps", None)}],
                repr(self.net.loss_scaler), dict(optim))

    def _drop_graphs(self):
        """Let go of the recorded steps, to record them again: the layers'
        arrays of the last pass live in the graphs' memory, so a network of
        nnx's own parts forgets them first; one with parts of the user's own
        keeps the old graphs until the fit ends."""
        if self.graphs:
            if _all_builtin(self.net):
                self.net.forget_pass()
            else:  # the last ones alone: the pass since has its arrays elsewhere
                self.retired = [self.graphs]
        self.graphs = {}

    def epoch(self, X, y, order, batches):
        """One pass over ``batches`` (from ``_Data.batches``) in ``order``;
        returns the summed loss as a 0-d device array (in a distributed fit,
        this rank's weighted share of it)."""
        b = self.net.backend
        full = sum(1 for batch in batches if batch[4])
        fed = self.use_graph and full > 0 and self.stride is not None
        total = self._recorded_epoch(X, y, order, batches, full) if fed else b.zeros(())
        for start, stop, xb, yb, is_full, weight in batches:
            if is_full and fed:
                continue  # done above
            if xb is None:  # none of this short batch's rows are this rank's
                self.idle()
                continue
            idx = order[start:stop]
            xb = b.take_rows(X, idx, out=xb)  # the buffer, or sparse rows' own CSR
            if isinstance(y, ClassIds):
                b.one_hot_rows(y.ids, idx, out=yb)
            else:
                b.take_rows(y, idx, out=yb)
            total += self._step(xb, yb, weight)
            self.last_rows = (xb, yb)
        return total

    def _recorded_epoch(self, X, y, order, batches, full):
        """The ``full`` full-size batches, fed from the device: warm-up and
        recording where needed, then graphs of ``group`` steps and of one."""
        b = self.net.backend
        xb, yb, weight = next((bt[2], bt[3], bt[5]) for bt in batches if bt[4])
        if self.feed is None:
            self.feed = (b.copy(order), b.zeros_int((1,)), b.zeros(()), X, y, xb, yb, weight)
        else:
            b.assign(self.feed[0], order)
        order_buf, position, total = self.feed[:3]
        b.assign(position, 0)
        b.assign(total, 0.0)
        if self.use_graph and self.warm:  # settings changed since the graphs were recorded
            settings = self._host_settings()
            if self.graphs and settings != self.settings:
                log.info("nnx: recording the training step again: a setting it holds changed "
                         "(%s)", _changed(self.settings, settings))
                self._drop_graphs()
            self.settings = settings
        done = 0
        while done < full:
            left = full - done
            if not self.warm or not self.use_graph:  # eager, from the same device feed
                self._fed_step()
                self.warm = True
                done += 1
                continue
            if self.rng is not self.net.rng:  # a graph holds the generator it recorded
                self._drop_graphs()
                self.rng = self.net.rng
            if self.settings is None:
                self.settings = self._host_settings()
            size = self.group if left >= self.group else 1
            if size not in self.graphs and not self._record(size):
                continue  # refused: the rest eagerly
            self.graphs[size][0]()
            self.replayed = True
            done += size
        return b.copy(total)

    def _fed_step(self):
        """One full-size step fed by the device counter (what a graph records)."""
        b = self.net.backend
        order, position, total, X, y, xb, yb, weight = self.feed
        b.gather_batch(X, order, position, self.stride, self.offset, xb)
        if isinstance(y, ClassIds):
            b.gather_one_hot(y.ids, order, position, self.stride, self.offset, yb)
        else:
            b.gather_batch(y, order, position, self.stride, self.offset, yb)
        b.advance(position, total, self._step(xb, yb, weight))
        return total

    def _step(self, xb, yb, weight):
        if self.custom_step is not None:
            return self.custom_step(xb, yb)
        # the weighting of the loss is part of the step, so a captured step
        # records it too (a full batch's share is the same for every replay)
        # each rank's mean gradient weighted by its share of the batch's rows,
        # on the loss's gradient: every row's gradient, and so every float16
        # operand of the backward pass, is then the single process's
        # (alone, the documented two-argument call: a subclass may override it)
        loss = (self.net.train_step(xb, yb) if weight == 1.0
                else self.net.train_step(xb, yb, weight))
        self._reduce()
        self.optim.step()
        return loss if weight == 1.0 else loss * weight

    def _reduce(self):
        """The batch's gradient from every rank's weighted one, summed by one
        in-place all-reduce of the flat gradient buffer (before the
        optimiser, so clipping sees the whole batch's gradient). Alone,
        nothing."""
        if self.comm.engine == "local":
            return
        self.comm.allreduce(self.net.grad_buffer)

    def idle(self):
        """This rank's part in a step whose rows all went to other ranks (a
        last batch smaller than the world): a zero gradient into the sum, and
        the same update as everyone's."""
        self.net.backend.assign(self.net.grad_buffer, 0.0)
        # as after the other ranks' train_step: the optimiser unscales (zeros) and
        # counts the step, so every rank keeps the same loss scale
        self.net._scaled_grads = self.net.loss_scaler is not None
        self._reduce()
        self.optim.step()

    def _record(self, size):
        """Record ``size`` fed steps as one graph; False (with a log line,
        and eager steps from then on) where the backend refuses."""
        def steps():
            for _ in range(size - 1):
                self._fed_step()
            return self._fed_step()
        self.recording = True
        try:
            self.graphs[size] = self.net.backend.capture(steps)
        except CaptureUnavailable as exc:
            self.use_graph = False  # the graphs already made stay until close()
            self.note = str(exc)
            log.warning("nnx: graph capture unavailable, training step by step (%s)", exc)
            return False
        return True


def _changed(before, after):
    """Words for which host settings (``_Steps._host_settings``) changed."""
    ops, scaler, optim = before
    new_ops, new_scaler, new_optim = after
    words = [f"optimiser {k} {optim.get(k)!r} -> {new_optim.get(k)!r}"
             for k in sorted(set(optim) | set(new_optim)) if optim.get(k) != new_optim.get(k)]
    words += [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for a, b in zip(ops, new_ops)
              for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if scaler != new_scaler:
        words.append(f"loss scaler {new_scaler}")
    return "; ".join(words) or "the network's parts"


def _all_builtin(net):
    """True if every layer, operation and the loss of ``net`` is nnx's own
    (whose arrays of a pass ``forget_pass`` knows by name)."""
    parts = [net.loss] + list(net.layers) + [op for la in net.layers for op in la.operations]
    return all(type(p).__module__.split(".")[0] == "nnx" for p in parts)


def _class_rows(b, y):
    """Whether targets ``y`` are one class per row: class ids, or rows each
    one-hot (a 1 and 0s), however they were given (one read of a count)."""
    if isinstance(y, ClassIds):
        return True
    xp, (n, k), good = b.xp, y.shape, 0
    for i in range(0, n, 8192):  # a block of rows at a time (whole, two int64
        part = y[i:i + 8192]    # copies of the targets: twice their size again)
        ones = xp.sum(b.astype(part == 1, xp.int8), axis=1)
        zeros = xp.sum(b.astype(part == 0, xp.int8), axis=1)
        good = good + xp.sum(b.astype((ones == 1) & (ones + zeros == k), xp.int64))
    return int(b.to_numpy(good)) == int(n)


class _Data:
    """The training and evaluation arrays on the device, checked once, and
    the batch buffers every step refills."""

    def __init__(self, net, X_train, y_train, evaluation, names):
        # one checked copy of each array on the device, before any training
        # (SciPy sparse X stays sparse: CSR rows on the CPU, see as_input)
        # rows are gathered from it at every batch: C-contiguous ones (one copy at most)
        self.X = net.backend.rows_contiguous(net.as_input(X_train, "X_train", rows=True,
                                                          columns=False))
        self.columns = host.column_names(X_train)  # the network's after begin (note_columns)
        self.val_columns = None  # the evaluation frame's, if one
        problem = _spread_problem(self.X, X_train, "X_train")
        checked = _on_host(self.X, X_train)  # device data is not read back to be checked
        if problem:
            _checks.warn_caller(problem, InputWarning)
        self.n, width = int(self.X.shape[0]), int(self.X.shape[1])
        self.y = net._targets(y_train, self.n, "y_train", "X_train")
        X_val, y_val = evaluation
        self.val = None
        if X_val is not None:
            given, X_val = X_val, net.backend.rows_contiguous(
                net.as_input(X_val, names[0], rows=True, columns=False))
            host.check_same_columns(given, names[0], self.columns, "X_train",
                                    "list(X_train.columns)")
            self.val_columns = host.column_names(given)
            if int(X_val.shape[1]) != width:
                raise InputValueError(f"{names[0]} has {int(X_val.shape[1])} features, but "
                                      f"X_train has {width}")
            if checked and not problem and _typically_raw(X_val, given):
                # the usual slip: the training rows standardised, these not (early
                # stopping then stops on a loss of other inputs, at once)
                _checks.warn_caller(
                    f"{names[0]} is far from standardised, though X_train is: standardise "
                    "it with the training rows' statistics too (the same mean and scale: "
                    "nnx.data.standardize_with, or the StandardScaler fitted on X_train)",
                    InputWarning)
            self.val = (X_val, net._targets(y_val, int(X_val.shape[0]), names[1], names[0]))
        self.eval_rows = None if self.val is None else int(self.val[0].shape[0])
        self.val_share = self.val  # this rank's rows of it (see shard)
        # whether evaluations score an accuracy: a classifier's, or one sigmoid
        # per class (one-vs-rest) against class ids, by the largest output
        self.scores_accuracy = net.reports_accuracy or (
            net.loss.binary and net.n_out > 1 and self.val is not None
            and _class_rows(net.backend, self.val[1]))

    def shapes(self):
        """The arrays' shapes (rows, columns), training set then evaluation set."""
        pairs = [(self.X, self.y)] + ([self.val] if self.val is not None else [])
        return [[int(d) for d in a.shape] for pair in pairs for a in pair]

    def fingerprint(self, b):
        """Sums of the data in float64 (host floats, one transfer): each
        array's total, its rows' sums weighted by their position, and every
        value weighted by its row's and its column's position together (the
        targets' columns by the class's number), so that ranks given other
        rows, the same rows in another order or the features in another order
        differ here (standardised columns, which all sum to 0, too), while the
        same data summed in another order (another memory layout, another
        device) agree. A position's weight is 1 + position/count, so no two
        positions weigh alike."""
        pairs = [(self.X, self.y)] + ([self.val] if self.val is not None else [])
        sums, f64 = [], b.xp.float64
        for X, y in pairs:
            n, d, k = (int(v) for v in (*X.shape, y.shape[1]))
            w, wc, ids = (host.position_weights(m) for m in (n, d, k))
            if host.is_sparse(X):  # on the host
                rows_x, joint = host.sparse_row_sums(X), X @ wc
            else:
                rows_x = b.xp.sum(X, axis=1, dtype=f64)
                wc_d = b.asarray(wc, f64)
                step = _fingerprint_rows(d)  # a block of rows at a time in float64
                joint = b.concat_rows([b.astype(X[i:min(i + step, n), :], f64) @ wc_d
                                       for i in range(0, n, step)])
            w_d = b.asarray(w, f64)
            ids_d, step_y = b.asarray(ids, f64), _fingerprint_rows(k)  # in blocks, as X
            if isinstance(y, ClassIds):  # what its one-hot rows would give
                rows_y = b.xp.take(ids_d, y.ids, axis=0)
            else:
                rows_y = b.concat_rows([b.astype(y[i:min(i + step_y, n), :], f64) @ ids_d
                                        for i in range(0, n, step_y)])
            sums += [b.xp.sum(b.asarray(rows_x, f64)),
                     b.xp.sum(b.asarray(rows_x, f64) * w_d),
                     b.xp.sum(b.asarray(joint, f64) * w_d), b.xp.sum(rows_y * w_d)]
        return [float(v) for v in b.to_numpy(b.stack(sums))]

    def shard(self, comm):
        """This rank's contiguous share of the evaluation rows (None when a
        world larger than the evaluation set leaves it none)."""
        self.val_share = self.val
        if self.val is not None and comm.size > 1:
            n = self.eval_rows
            lo, hi = comm.rank * n // comm.size, (comm.rank + 1) * n // comm.size
            self.val_share = (self.val[0][lo:hi], self.val[1][lo:hi]) if hi > lo else None

    def batches(self, b, batch_size, comm=_distributed.LOCAL):
        """This fit's ``batch_plan`` (sparse rows need no X buffers: each batch
        is a CSR matrix of its own)."""
        return batch_plan(b, self.n, 0 if host.is_sparse(self.X) else int(self.X.shape[1]),
                          int(self.y.shape[1]), batch_size, comm)


def same_data(one, other):
    """Whether two data fingerprints (``_Data.fingerprint``) are of the same
    data: equal to rounding (the same sums taken in another order, on
    another device, agree to far better than 1e-9)."""
    return len(one) == len(other) and all(
        math.isclose(a, c, rel_tol=1e-9, abs_tol=1e-12) for a, c in zip(one, other))


def _on_host(X, given):
    return host.is_sparse(X) or host.is_host_array(given) or isinstance(given, (list, tuple))


def _spread_problem(X, given, name):
    """``host.spread_problem`` of data given on the host (sparse: its CSR
    copy ``X``, which rows can be taken from), else None (device data is not
    read back to be checked)."""
    if _on_host(X, given):
        return host.spread_problem(X if host.is_sparse(X) else given, name)
    return None


def _typically_raw(X, given):
    """Whether host data is far from standardised in its typical column (the
    median over columns of max(|mean|, std) above 3), not in its worst one:
    a test set standardised with the training rows' statistics can have a
    column or two far off (a feature nearly constant in the training rows)."""
    if not _on_host(X, given) or host.is_sparse(X):
        return False
    return host.typical_spread(given) > 3.0


def _fingerprint_rows(width):
    """Rows per block of the fingerprint's float64 copy: about 8 MiB of it."""
    return max(1, 2**20 // max(1, width))


def _of_rank(cbs, comm):
    """The callbacks this rank runs: printers and loggers (``main_only``) on rank
    0 alone (one line, one file; their check and close too)."""
    return [cb for cb in cbs if comm.is_main or not cb.main_only]


def _close_all(cbs, raise_first=True):
    """Every callback's ``close()``, even after one of them raised: the first
    such error is raised at the end (or, while training's own error is on its
    way, logged)."""
    failed = None
    for cb in cbs:
        try:
            cb.close()
        except Exception as exc:  # noqa: BLE001 - the others still close their files
            if failed is None:
                failed = exc
            if not raise_first:
                log.error("nnx: %s.close() raised %s: %s", type(cb).__name__,
                          type(exc).__name__, exc)
    if failed is not None and raise_first:
        raise failed


def _network_facts(net):
    """The network as every rank of a distributed fit must build it (plain
    data): its layers, loss, dtype and matrix-product precision. A layer,
    activation or loss of one's own, which cannot describe itself, is
    described by its class and the usual settings (never by its address)."""
    scaler = net.loss_scaler
    return {"layers": [_described(layer, _layer_outline) for layer in net.layers],
            "loss": _described(net.loss, lambda loss: type(loss).__qualname__),
            "dtype": net.backend.dtype_name, "precision": net.backend.precision,
            "parameters": int(net.param_buffer.shape[0]) if net.built else None,
            # a float16 network's gradients are summed scaled: one scale on every rank
            "loss scaler": None if scaler is None else repr(scaler)}


def _callback_facts(cb):
    """A callback as every rank must have it: its class and the settings it
    declares (``agreed_settings``: a checkpoint's interval, a patience), as
    text (a NaN setting is then equal to itself)."""
    declared = getattr(cb, "agreed_settings", dict)()
    return [type(cb).__qualname__, {str(k): repr(v) for k, v in declared.items()}]


def _callback_differences(first, other, rank):
    """What differs between rank 0's callbacks and ``rank``'s, in words."""
    if [c[0] for c in first] != [c[0] for c in other]:
        return [f"callbacks {[c[0] for c in first]} on rank 0 but {[c[0] for c in other]} on "
                f"rank {rank}"]
    out = []
    for i, ((name, a), (_, b)) in enumerate(zip(first, other), 1):
        keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
        if keys:
            out.append(f"callback {i} ({name})'s " + ", ".join(
                f"{k} {a.get(k)} on rank 0 but {b.get(k)} on rank {rank}" for k in keys))
    return out


def _described(part, outline):
    try:
        return part.describe()
    except Exception:  # noqa: BLE001 - one's own class: what can be read of it
        return outline(part)


def _layer_outline(layer):
    act = getattr(layer, "activation", None)
    return {"type": type(layer).__qualname__, "neurons": getattr(layer, "neurons", None),
            "activation": None if act is None else type(act).__qualname__,
            "dropout": getattr(layer, "dropout", None),
            "weight_init": getattr(layer, "weight_init", None)}


def _network_differences(first, other, rank, where=None):
    """What differs between rank 0's network and ``rank``'s, in words;
    ``where``: other words for the two (" in the checkpoint", " here")."""
    one, two = where or (" on rank 0", f" on rank {rank}")
    out = [f"the network's {k} {first.get(k)!r}{one} but {other.get(k)!r}{two}"
           for k in ("loss", "dtype", "precision", "loss scaler")
           if first.get(k) != other.get(k)
           # a float16 network has a loss scaler, another none: its precision says it
           and not (k == "loss scaler" and first.get("precision") != other.get("precision"))]
    mine, theirs = first["layers"], other["layers"]
    if len(mine) != len(theirs):
        return out + [f"{len(mine)} layers{one} but {len(theirs)}{two}"]
    for i, (a, b) in enumerate(zip(mine, theirs), 1):
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
            out.append(f"layer {i}'s " + ", ".join(
                f"{k} {a.get(k)!r}{one} but {b.get(k)!r}{two}" for k in keys))
        else:
            out.append(f"layer {i} {a}{one} but {b}{two}")
    if not out and first.get("parameters") != other.get("parameters"):
        # layers that describe themselves alike, but of other sizes (one's own)
        out.append(f"{first.get('parameters')} parameters{one} but "
                   f"{other.get('parameters')}{two}")
    return out


def batch_plan(b, n, width, classes, batch_size, comm=_distributed.LOCAL):
    """``(start, stop, X buffer, y buffer, full size?, weight)`` per batch of
    an epoch over ``n`` rows, as rows of the epoch's order. With W ranks a
    batch is W x batch_size rows of that order, each rank taking its
    contiguous share: all of them ``batch_size`` rows but in a short last
    batch, which is split evenly (a rank may get none: its buffers are None).
    ``weight`` is the share's rows over the batch's. The buffers
    (``width`` features, ``classes`` target columns) are allocated once (two
    sizes at most) and refilled by every step."""
    size, rank, step = comm.size, comm.rank, batch_size * comm.size
    plan = []
    for start in range(0, n, step):
        rows = min(step, n - start)
        plan.append((start + rank * rows // size, start + (rank + 1) * rows // size, rows))
    bufs = {hi - lo: (b.empty((hi - lo, width)), b.empty((hi - lo, classes)))
            for lo, hi, _ in plan if hi > lo}
    return [(lo, hi, *bufs.get(hi - lo, (None, None)), rows == step, (hi - lo) / rows)
            for lo, hi, rows in plan]


def _nothing_to_watch(monitor, optim):
    """Refuse settings that only an evaluation set can drive, when fit has none
    (they would do nothing, in silence)."""
    from ..optim.schedules import ReduceOnPlateau

    give = "pass X_test, y_test or validation=(X_val, y_val)"
    if monitor == "accuracy":
        raise InputValueError(f"monitor='accuracy' chooses among evaluations by the evaluation "
                              f"set's accuracy, but fit has no evaluation set: {give}")
    if isinstance(getattr(optim, "schedule", None), ReduceOnPlateau):
        raise InputValueError(f"ReduceOnPlateau cuts the rate when the evaluation loss stops "
                              f"improving, but fit has no evaluation set: {give}")


def _split_off(X, y, fraction, X_test, validation, classes=True):
    """``validation_split``: the training rows and the last ``fraction`` of
    them as the validation pair (slices of the arrays given)."""
    fraction = _checks.in_range("validation_split", fraction, 0, 1, low_open=True,
                                high_open=True)
    if validation is not None or X_test is not None:
        raise InputValueError("validation_split holds out rows of X_train as the evaluation "
                              "set; give it or validation=/X_test, not both")
    n = getattr(X, "shape", (None,))[0]
    if n is None:  # a list of rows
        n = len(X)
    rows = y.shape[0] if hasattr(y, "shape") else len(y)  # len() of sparse rows raises
    if rows != n:
        raise InputValueError(f"y_train has {rows} rows but X_train has {n}")
    k = max(1, int(round(fraction * n)))
    if k >= n:
        raise InputValueError(f"validation_split={fraction!r} of {n} rows holds out {k}, "
                              "leaving none to train on")
    y_fit, y_val = y[:n - k], y[n - k:]
    if classes:
        _warn_of_unseen(y_fit, y_val, "validation_split")
    return X[:n - k], y_fit, (X[n - k:], y_val)


def _warn_of_unseen(y_fit, y_val, how):
    """Warn when host class ids held out hold classes the training rows lack:
    nothing trains them, and the evaluations count each of their rows as an
    error (``how``: "validation_split", whose cause is likely data sorted by
    label, or "validation")."""
    unseen = host.unseen_classes(y_fit, y_val)
    if not unseen:
        return
    if how == "validation_split":
        words = (f"validation_split: the held-out rows (the last ones, as in Keras) hold "
                 f"classes {unseen[:5]} that the training rows lack; is the data sorted by "
                 "label? Shuffle it first (or pass validation=(X_val, y_val), e.g. from "
                 "nnx.data.train_validation_split)")
    else:
        words = (f"validation: y_val holds classes {unseen[:5]} that y_train lacks, so nothing "
                 "trains them and the evaluations count each of their rows as an error; "
                 "split the rows stratified by class (scikit-learn's "
                 "train_test_split(..., stratify=y))")
    _checks.warn_caller(words, InputWarning)


def _evaluation_set(X_test, y_test, validation):
    for name, value in (("X_test", X_test), ("y_test", y_test)):
        if isinstance(value, numbers.Number) or (hasattr(value, "ndim") and value.ndim == 0):
            # Keras's fit(X, y, batch_size, epochs) said "X_test must be 2-D ..., got shape ()"
            shown = value.item() if hasattr(value, "item") else value
            raise InputTypeError(
                f"{name}={shown!r} is a number: fit's third and fourth positional arguments "
                "are X_test and y_test (the study's fit(X_train, y_train, X_test, y_test)); "
                "pass epochs=, batch_size= and the others by name")
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


@contextlib.contextmanager
def _ends_run(optim):
    """Tell ``optim`` its run is over when ``fit`` returns or fails (after its
    plan began, a refused resume or disagreeing ranks end it too): a rate set
    by hand afterwards would be replaced by the next run's."""
    try:
        yield
    finally:
        end_run = getattr(optim, "end_run", None)  # (an optimiser of one's own may lack it)
        if end_run is not None:
            end_run()


class Trainer:
    """Trains ``net`` with ``optim``. Creating the trainer attaches the network
    to the optimiser, so ``net.train_batch(X, y); optim.step()`` also works.
    ``callbacks`` are used by every ``fit`` of this trainer."""

    def __init__(self, net, optim, callbacks=()):
        _checks.network(net)
        if not isinstance(optim, Optimizer):
            raise InputTypeError(f"optim must be an Optimizer (SGD, SGDMomentum, Adam, ...), "
                                 f"got {optim!r}")
        self.net = net
        self.optim = optim
        self.callbacks = _callback_list(callbacks)
        if optim.net is not net:  # attached to this network, it keeps its state (restart=False)
            optim.attach(net)

    def fit(self, X_train, y_train, X_test=None, y_test=None, epochs=100, eval_every=None,
            batch_size=32, seed=1, restart=None, *, validation=None, validation_split=None,
            patience=1,
            min_delta=0.0, callback=None, callbacks=(), graph=True, checkpoint=None,
            checkpoint_every=None, resume=None, verbose=False, monitor="loss",
            distributed=None):
        """Train for up to ``epochs`` epochs of shuffled mini-batches.

        Every ``eval_every`` epochs (default 10, or ``epochs`` when that is
        fewer) and after the last one, the loss on the evaluation set is
        measured in inference mode. That set is ``validation=(X_val, y_val)``
        when given, else ``(X_test, y_test)`` as in the study; choosing the
        model on a set you then report on flatters it, so pass a validation
        set when the test figure matters. ``validation_split=0.1`` holds out
        the last tenth of the training rows as that set, as Keras does (views,
        no copy; shuffle sorted data first: a warning says when the held-out
        rows hold classes the others lack).

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

        ``restart=True`` (what the default, None, does) draws the initial weights
        again from the network's seed, ``restart=False`` goes on from the weights
        the network holds; left unsaid on a network trained before (or one
        loaded from a file), it restarts with a warning, since Keras and PyTorch
        users expect training to go on. ``seed`` seeds the shuffling.
        ``graph=True`` (default) records the training step as a CUDA graph and
        replays it on backends that can (the GPU); where capture is refused, a log
        line says why and training goes on step by step. Each epoch's loss stays
        on the device; at evaluations the losses since the last one are read, and
        a NaN or infinite value raises ``TrainingDiverged`` after restoring the
        last good evaluation's parameters. Returns a ``History``.

        ``distributed=True`` (or an ``nnx.distributed`` communicator) trains
        one model data-parallel with the other processes of the job, each
        passing the same arguments and data: every rank takes its share of
        each batch of ``batch_size`` rows *per rank*, and the gradients are
        averaged by one all-reduce per step, so W ranks train as one process
        with batches of W x ``batch_size`` rows. Only rank 0 prints and writes
        files; see docs/distributed.md.
        """
        comm = _distributed.resolve(distributed, self.net.backend)
        # a rank failing alone ends every rank; a run begun (and refused, say) ends its plan
        with _distributed.guard(comm), _ends_run(self.optim):
            # (catch_warnings on the other ranks alone: it changes the process's
            # warning settings for every thread, and a thread's own use of it may
            # leave them changed for good)
            quiet = warnings.catch_warnings() if not comm.is_main else contextlib.nullcontext()
            with _distributed.agreement(comm) as setup, quiet:
                if not comm.is_main:  # every rank checks the same data: rank 0 says it
                    warnings.simplefilter("ignore", InputWarning)
                settings = FitSettings.of(epochs, eval_every, batch_size, seed, patience,
                                          min_delta, self.optim, monitor)
                if graph not in (True, False):  # "yes" was taken as True
                    raise InputTypeError(f"graph must be True or False, got {graph!r}")
                if not (restart is None or _checks._is_bool(restart)):  # "False" redrew them
                    raise InputTypeError(f"restart must be True, False or None (the default), "
                                         f"got {restart!r}")
                # class ids held out that training lacks warn (a regression's are values)
                classifies = self.net.loss.classification or self.net.loss.binary
                if validation_split is not None:
                    X_train, y_train, validation = _split_off(
                        X_train, y_train, validation_split, X_test, validation, classifies)
                evaluation, names = _evaluation_set(X_test, y_test, validation)
                if names[0] == "X_val" and validation_split is None and classifies:
                    _warn_of_unseen(y_train, evaluation[1], "validation")
                cbs = self._fit_callbacks(settings, callback, callbacks, checkpoint,
                                          checkpoint_every, verbose)
                if evaluation[0] is None:  # the early stopping in use (keyword's, or given)
                    stopping = next(c for c in cbs if isinstance(c, EarlyStopping))
                    _nothing_to_watch(stopping.monitor, self.optim)
                run = self._run(comm, settings, cbs, (X_train, y_train),
                                (evaluation, names), restart, resume)
                if comm.size > 1:
                    setup.facts = run.facts(cbs, graph)
            try:
                run.agree_on(setup.shared)
                run.share_start()
                try:
                    history = run.train(graph)
                finally:  # its weights are trained now: a later fit that restarts says so
                    if run.epoch > 0:
                        self.net._trained = True
            except BaseException:
                # training's own error is the one to see
                _close_all(_of_rank(cbs, comm), raise_first=False)
                raise
            _close_all(_of_rank(cbs, comm))
            return history

    def _run(self, comm, settings, cbs, train, evaluation, restart, resume):
        """The run of one fit, checked as far as this rank can check it alone
        (no collective here: the ranks agree on the outcome afterwards)."""
        net, optim = self.net, self.optim
        for cb in _of_rank(cbs, comm):
            cb.check(net)
        data = _Data(net, *train, *evaluation)
        for cb in cbs:  # what EarlyStopping.check left to the data to say
            if isinstance(cb, EarlyStopping) and cb.monitor == "accuracy" and \
                    data.val is not None and not data.scores_accuracy:
                raise InputValueError(
                    f"EarlyStopping monitor='accuracy': a SigmoidCrossEntropy network of "
                    f"{net.n_out} outputs scores an accuracy (the largest output's) against "
                    "one class per row alone (one-vs-rest: class ids or one-hot rows); these "
                    "evaluation targets are multilabel rows, which no single accuracy "
                    "describes: monitor='loss'")
        net._check_layers()
        if not net.built:  # only once every array passed its checks
            net.build(int(data.X.shape[1]))
        if int(net.param_buffer.shape[0]) == 0:
            raise InputValueError("the network has no parameters to train: none of its layers "
                                  "lists any (param_shapes)")
        comm.check_backend(net.backend, net.param_buffer)
        if data.n < comm.size:
            raise InputValueError(f"X_train has {data.n} rows, fewer than the {comm.size} "
                                  "processes training together: each needs at least one")
        data.shard(comm)
        stopping = next(cb for cb in cbs if isinstance(cb, EarlyStopping))  # one is always there
        settings = settings.stopping_as(stopping).with_data(data.n, data.eval_rows, net.seed,
                                                            comm.size)
        if optim.net is not net:  # the optimiser was attached to another network since
            optim.attach(net)
        mine = _of_rank(cbs, comm)
        # the checkpoint keys from the whole list, the same on every rank
        run = _Run(net, optim, settings, mine, data, comm, state_keys=_state_keys(cbs))
        if resume is not None:
            run.load(resume)  # the saved run's column names come with it
            net.note_columns(data.columns, fresh=False, evaluation=data.val_columns)
            return run
        if restart is False:  # trained weights: refused before the schedule restarts
            net.note_columns(data.columns, fresh=False, evaluation=data.val_columns)
        run.begin(restart)
        net.note_columns(data.columns, fresh=run.restarted)
        return run

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
        given = [c for c in own if isinstance(c, EarlyStopping)]
        if not given:
            own.insert(0, EarlyStopping(settings.patience, settings.min_delta,
                                        monitor=settings.monitor))
        else:  # the keywords make the default one, which a given one replaces
            unused = {k: v for k, v in (("patience", settings.patience),
                                        ("min_delta", settings.min_delta),
                                        ("monitor", settings.monitor))
                      if v != inspect.signature(Trainer.fit).parameters[k].default}
            if unused:
                words = ", ".join(f"{k}={v!r}" for k, v in unused.items())
                raise InputValueError(
                    f"fit({words}) with {given[0]!r} in callbacks: the keywords describe "
                    "the early stopping that a given EarlyStopping replaces, so they would "
                    f"not be used; give them to it instead (EarlyStopping({words}))")
        if isinstance(verbose, numbers.Integral) and not _checks._is_bool(verbose) \
                and verbose in (0, 1, 2):  # Keras's verbose=0/1/2: quiet, or a line per evaluation
            verbose = bool(verbose)
        if _checks.is_true(verbose):
            own.append(PrintProgress())
        elif verbose is not False and verbose is not None and not _checks._is_bool(verbose):
            raise InputTypeError(f"verbose must be True or False (or Keras's 0, 1 or 2), got "
                                 f"{verbose!r}")
        cbs = [LRScheduler()] + [c for c in own if not c.late] + [c for c in own if c.late]
        _state_keys(cbs)  # a key a checkpoint cannot hold: refused before any data is read
        return cbs


def _state_keys(callbacks):
    """Where each callback with a ``state_key`` keeps its state in a checkpoint:
    under that key, and a second (third...) callback of the same key, such as
    two EarlyStopping, under ``key#2`` (``key#3``...), by their order in the
    fit, those of every rank before rank 0's own (each loaded the last one's
    state on resume, silently)."""
    keys, count = {}, {}
    # every rank's callbacks numbered first: a rank without the rank-0-only ones
    # (main_only, given on rank 0 alone) numbers its own as rank 0 does
    for cb in [c for c in callbacks if not c.main_only] + [c for c in callbacks if c.main_only]:
        key = cb.state_key
        if key is None:
            continue
        if not isinstance(key, str) or not key or "." in key or "#" in key or key == "optim":
            raise InputTypeError(f"{type(cb).__name__}.state_key is {key!r}: a callback's "
                                 "state_key must be a non-empty str without '.' or '#', and "
                                 "not 'optim' (or None: a callback without checkpoint state)")
        count[key] = count.get(key, 0) + 1
        keys[id(cb)] = key if count[key] == 1 else f"{key}#{count[key]}"
    return keys


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
        check_hooks(c)
    return callbacks


class _Run:
    """The state of one ``fit``: where it is, what it saw, what it keeps; the
    unit saved to and loaded from a training checkpoint. ``comm`` is the
    communicator of a distributed fit (``nnx.distributed``; alone, one that
    does nothing): every method that calls it is called on every rank."""

    def __init__(self, net, optim, settings, callbacks, data, comm, state_keys):
        self.net, self.optim, self.b = net, optim, net.backend
        self.settings, self.callbacks, self.data = settings, callbacks, data
        self.comm = comm
        self.generator_restored = False  # a resumed run put back this rank's dropout stream
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
        self.state_keys = state_keys  # id of a callback -> where a checkpoint keeps its state

    def request_stop(self):
        """End training after the current epoch (callbacks call this)."""
        self._stop = True

    def begin(self, restart):
        """A new run: ``restart`` True, False or None (True, saying so where
        the network holds weights of its own: loaded, or trained before)."""
        net, optim = self.net, self.optim
        loaded = net.__dict__.get("_loaded_from")
        trained = net.__dict__.get("_trained", False)
        if restart is None:
            restart = True
            if loaded is not None or trained:
                held = "the weights it was trained to (by fit or optim.step)" if trained else \
                    f"the weights loaded from {loaded!r}"
                _checks.warn_caller(
                    f"fit() draws new weights, replacing {held} (restart=True is the "
                    "default): pass restart=False to go on training them, or restart=True "
                    "to start again without this warning", InputWarning)
        self.restarted = restart  # the ranks of a distributed fit must agree on it
        if restart:
            net.reset()
            optim.attach(net)
        optim.start(self.settings.epochs, self.steps_per_epoch, continuing=not restart)
        self.snapshot_good(0)

    @property
    def steps_per_epoch(self):
        """Steps per epoch: batches of ``batch_size`` rows on each rank."""
        return math.ceil(self.data.n / (self.settings.batch_size * self.comm.size))

    # ------------------------------------------------------- ranks together
    def facts(self, callbacks, graph):
        """What every rank of a distributed fit must have alike (plain data)."""
        return {"settings": self.settings.as_dict(), "epoch": self.epoch,
                "restart": self.__dict__.get("restarted", "resumed"),
                # the printers and loggers run on rank 0 alone: verbose=comm.is_main is fine
                "callbacks": [_callback_facts(c) for c in callbacks if not c.main_only],
                "graph": bool(graph), "shapes": self.data.shapes(),
                "data": self.data_print(), "network": _network_facts(self.net),
                # frames of other column names would train one model under two names
                "columns": [self.data.columns, self.data.val_columns]}

    def agree_on(self, shared):
        """Refuse, on every rank alike, a fit whose ranks were given other
        arguments or data (``shared``: every rank's ``facts``, or None alone)."""
        if shared is None:
            return
        first = shared[0]
        names = ("X_train", "y_train (as targets)", "the evaluation X",
                 "the evaluation y (as targets)")
        for rank, facts in enumerate(shared[1:], 1):
            # the arguments and the network first: data cast to another dtype, or
            # of another width, would otherwise be reported as other data
            differ = [f"{k}={first['settings'].get(k)!r} on rank 0 but {v!r} on rank {rank}"
                      for k, v in facts["settings"].items() if first["settings"].get(k) != v]
            differ += [f"{k} {first[k]!r} on rank 0 but {facts[k]!r} on rank {rank}"
                       for k in ("epoch", "graph", "restart", "columns")
                       if facts[k] != first[k]]
            differ += _callback_differences(first["callbacks"], facts["callbacks"], rank)
            differ += _network_differences(first["network"], facts["network"], rank)
            if facts["shapes"] != first["shapes"]:
                differ += [f"{name} has shape {tuple(a)} on rank 0 but {tuple(c)} on rank {rank}"
                           for name, a, c in zip(names, first["shapes"], facts["shapes"])
                           if a != c] or [f"an evaluation set on one of rank 0 and rank {rank} "
                                          "only"]
            if differ:
                hint = (" (seed=None draws a seed in each process: give NeuralNetwork a seed)"
                        if any(d.startswith("net_seed") for d in differ) else "")
                raise _distributed.mark_agreed(InputValueError(
                    "the ranks of a distributed fit must be given the same arguments, data "
                    "and network: " + "; ".join(differ) + hint))
            if not same_data(facts["data"], first["data"]):
                raise _distributed.mark_agreed(InputValueError(
                    f"rank {rank} was given other training or evaluation data than rank 0 "
                    "(other rows, the same rows in another order, or the features in "
                    "another order): every rank passes fit() the whole data set, and takes "
                    "its share of every batch itself"))

    def share_start(self):
        """Once the ranks agreed: rank 0's parameters and optimiser state on
        every rank (the
        starting weights are then identical whatever each rank drew), and
        each rank's own dropout stream, drawn from the network's seed, the
        rank and the epoch it starts at (reproducible run to run)."""
        comm = self.comm
        if comm.size == 1:
            return
        comm.broadcast(self.net.param_buffer)
        # and rank 0's optimiser state, step count and (float16) loss scale: a later
        # fit (restart=False) goes on from what each rank's earlier steps left, which
        # steps taken on one rank alone made differ (each rank then trained its own model)
        scaler = self.net.loss_scaler
        for array in self.optim.state_arrays() + ([] if scaler is None else
                                                  list(scaler.arrays(self.b))):
            comm.broadcast(array)
        if self.epoch == 0:  # a new run: its "last good" parameters are the shared ones
            self.snapshot_good(0)
        if not self.generator_restored:
            # a later fit of the same network (restart=False) goes on with
            # fresh masks, as its single-process stream would, not the first's
            fits = self.net.__dict__.get("_distributed_fits", 0)
            self.net._distributed_fits = fits + 1
            keys = (self.net.seed, 2, comm.rank, self.epoch) + ((fits,) if fits else ())
            self.net._use_generator(self.b.generator(host.derive_seed(*keys)))

    # ---------------------------------------------------------------- the loop
    def train(self, graph):
        s, b = self.settings, self.b
        # the optimiser's plan is this run's (resumed or not); its steps are
        # not counted against it: recorded steps replay without Python
        plan = self.optim.__dict__.get("_plan")  # (an optimiser of one's own may lack one)
        if plan is not None:
            plan["counted"] = False
        batches = self.data.batches(b, s.batch_size, self.comm)
        self.steps = steps = _Steps(self.net, self.optim, graph, self.comm, s.batch_size)
        try:
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
            self.history.graph, self.history.graph_note = steps.replayed, steps.note
            for cb in self.callbacks:
                cb.on_fit_end(self)
        finally:  # also when training stops with an error
            steps.close()
        return self.history

    def _epoch(self, epoch, batches, steps):
        """One pass over the rows in this epoch's order (the same on every
        rank: drawn from the seed); the summed loss stays on the device. In a
        distributed fit each batch's loss is this rank's share of it."""
        b = self.b
        order = b.epoch_order(host.derive_seed(self.settings.seed, 0, epoch), self.data.n)
        with b.quiet_float_errors():  # a divergence is reported as TrainingDiverged
            total = steps.epoch(self.data.X, self.data.y, order, batches)
        # the last batch this rank trained on (its buffers hold its rows; a
        # sparse batch is its own matrix)
        self._last_batch = steps.last_rows if host.is_sparse(self.data.X) else next(
            (bt[2], bt[3]) for bt in reversed(batches) if bt[2] is not None)
        return total

    def _end_epoch(self, lr):
        epoch, s = self.epoch, self.settings
        record = None
        if epoch % s.eval_every == 0 or epoch == s.epochs:
            record = self.evaluate(lr)
        last = epoch == s.epochs
        # a callback's odd answer is rank 0's to point out (a catch_warnings on rank 0, or
        # alone, would show a callback's own once-only warnings again every epoch)
        with warnings.catch_warnings() if not self.comm.is_main else contextlib.nullcontext():
            if not self.comm.is_main:
                warnings.simplefilter("ignore", InputWarning)
            for cb in self.callbacks:
                if not cb.late and _checks.asks_to_stop(cb.on_epoch_end(self, epoch, record),
                                                         f"{type(cb).__name__}.on_epoch_end"):
                    self._stop = True
        if self.comm.size > 1:  # a callback may ask on one rank alone: all stop if any asks
            self._stop = self.comm.sum([1.0 if self._stop else 0.0])[0] > 0
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
            record["loss"], record["accuracy"] = self.measure()
            self.check_finite(record["loss"], epoch)
        with b.quiet_float_errors():
            self.check_parameters(epoch, None if val is not None else self._last_batch)
        self.history.records.append(record)
        self.warn_if_likely_wrong(record)
        self.snapshot_good(epoch)
        for cb in self.callbacks:
            cb.on_evaluation(self, record)
        return record

    def warn_if_likely_wrong(self, record):
        """Say once per fit (rank 0) that the training loss looks wrong while
        it is still finite: a hundred times its first evaluation's, or, for
        softmax cross-entropy, more than twice that of guessing every class at
        equal odds (ln K), or 10% above ln K after the first evaluation
        (training starts near ln K and falls below it): a learning rate far
        too large (or, for the last, possibly far too small)."""
        if getattr(self, "_warned_loss", False) or self.comm.rank != 0:
            return
        loss, first = record["train_loss"], self.history.records[0]["train_loss"]
        net = self.net
        # the built-in loss only: a loss of one's own may have another scale
        chance = math.log(net.n_out) if type(net.loss) is SoftmaxCrossEntropy \
            and net.n_out > 1 else None
        slow = ""
        if chance is not None and loss > 2 * chance:
            why = (f"more than twice the {chance:.3g} of guessing each of the {net.n_out} "
                   "classes at equal odds")
        elif loss > 100 * max(first, 1e-12):
            why = f"up from {first:.4g} at the first evaluation"
        elif chance is not None and loss > 1.1 * chance and len(self.history.records) > 1:
            why = (f"still worse than the {chance:.3g} of guessing each of the {net.n_out} "
                   f"classes at equal odds (the first evaluation's: {first:.4g})")
            slow = " (or far too small, if the loss has barely moved)"
        else:
            return
        self._warned_loss = True
        _checks.warn_caller(f"the training loss is {loss:.4g} in epoch {record['epoch']}, {why}: "
                            f"the learning rate ({record['lr']:g}) is likely far too large{slow}",
                            InputWarning)

    def measure(self):
        """``(loss, accuracy)`` on the evaluation set (accuracy None unless
        the loss classifies). In a distributed fit each rank measures its
        share of the rows and the sums are added over the ranks."""
        b, net, share = self.b, self.net, self.data.val_share
        classes = self.data.scores_accuracy
        values = [0.0, 0.0]
        if share is not None:
            with b.quiet_float_errors():
                measured = net.mean_loss(*share, accuracy=classes)
                if classes:  # both numbers in one transfer
                    values = [float(v) for v in b.to_numpy(b.stack(list(measured)))]
                else:
                    values[0] = b.to_float(measured)
        rows = 0 if share is None else int(share[0].shape[0])
        if classes and rows:  # the count of rows right, exactly: 42/60, not float32's 0.69999999
            values[1] = round(values[1] * rows) / rows
        if self.comm.size > 1:
            values = [v / self.data.eval_rows for v in self.comm.sum([v * rows for v in values])]
        return values[0], values[1] if classes else None

    def check_pending(self):
        """Read the epoch losses not read yet (one transfer; in a distributed
        fit, summed over the ranks); raise ``TrainingDiverged`` if any is not
        finite. Returns the last one."""
        values = self.comm.sum(self.b.to_numpy(self.b.stack(self.pending)))
        first = self.epoch - len(values) + 1
        self.pending = []
        for i, v in enumerate(values):
            self.check_finite(v, first + i)
        return values[-1]

    def check_finite(self, value, epoch):
        if not math.isfinite(value):
            self.net.set_parameters(self.good_params)
            self.optim.forget_state()  # its buffers hold the NaNs too
            self.history.stopped_early = True
            # every number checked here is the same on every rank: so is this
            raise _distributed.mark_agreed(
                TrainingDiverged(epoch, self.good_epoch, self.history,
                                 self.net.backend.precision))

    def check_parameters(self, epoch, last_batch=None):
        """Raise ``TrainingDiverged`` unless the parameters are finite and, given
        ``last_batch`` (without an evaluation set), give a finite loss on it:
        the epoch losses are measured before each update, so a last update
        that diverged shows only here. In a distributed fit the numbers are
        summed over the ranks first (each rank's last batch is its own)."""
        b = self.b
        values = [b.to_float(b.max_abs(self.net.param_buffer))]
        if last_batch is not None:
            values.append(b.to_float(self.net.mean_loss(*last_batch)))
        for value in self.comm.sum(values):
            self.check_finite(value, epoch)

    def snapshot_good(self, epoch):
        self.good_params, self.good_epoch = self.net.get_parameters(), epoch

    # ------------------------------------------------------------ checkpoints
    def save(self, path, extra=None, meta=None):
        """The whole training state to ``path`` (the parameters, the
        optimiser's, every callback's, the history), atomically. Raises
        ``TrainingDiverged`` for parameters that are not finite (the file
        keeps the last good state), and ``CheckpointError`` if something
        else replaced the file this run last saved at ``path``. In a
        distributed fit, call it on every rank: the checks and each rank's
        dropout state are shared, rank 0 writes, and its error is raised on all.
        ``extra`` and ``meta`` are written beside the state, as by ``net.save``."""
        if self.pending:  # never save parameters that may already be NaN
            self.check_pending()
        with self.b.quiet_float_errors():  # the last update of an epoch may have overflowed
            self.check_parameters(self.epoch)
        comm = self.comm
        generators = comm.gather(self.net.generator_state()) if comm.size > 1 else None
        error = None
        if comm.is_main:
            try:
                self._write(path, generators, extra, meta)
            except Exception as exc:
                if comm.size == 1:
                    raise
                error = exc
        _distributed.agree(comm, error)

    def _write(self, path, generators=None, own=None, meta=None):
        """Rank 0's part of ``save``: the file itself."""
        key = os.path.realpath(os.fsdecode(os.fspath(path)))
        if key in self.saved_to:
            self.check_owner(path, self.saved_to[key])
        optim_data, optim_arrays = self.optim.state_for_checkpoint()
        extra = {**(own or {}), "good_params": self.good_params}
        extra.update({f"optim.{k}": v for k, v in optim_arrays.items()})
        callbacks = {}
        for cb in self.callbacks:
            name = self.state_keys.get(id(cb))
            if name is not None:
                data, arrays = cb.checkpoint_state()
                callbacks[name] = data
                extra.update({f"{name}.{k}": v for k, v in arrays.items()})
        state = {"epoch": self.epoch, "finished": self.finished, "good_epoch": self.good_epoch,
                 "generator": self.net.generator_state(), "optimizer": optim_data,
                 "callbacks": callbacks, "history": self.history.as_dict(),
                 "settings": self.settings.as_dict(), "run_id": self.run_id,
                 "data": self.data_print()}
        if generators is not None:  # each rank's dropout stream, for an exact resumption
            state["rank_generators"] = generators
        from .resume import check_before_writing
        extra = check_before_writing(self, path, state, extra)
        self.net.save(path, extra=extra, training=state, meta=meta)
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

    def data_print(self):
        """The data's fingerprint (``_Data.fingerprint``), taken once a run:
        a checkpoint holds it, and a resumed run must be given the same data."""
        if self.__dict__.get("_data_print") is None:
            self._data_print = self.data.fingerprint(self.b)
        return self._data_print

    def load(self, path):
        from .resume import load_run
        load_run(self, path)
