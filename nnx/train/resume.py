"""Putting a run back from a training checkpoint (``fit(resume=path)``): the
file is checked to belong to this run, and every field of its training state
and every array is checked against the network and the optimiser, before
anything is changed."""

from __future__ import annotations

import logging
import math
import os

from .._checks import InputTypeError, InputValueError, InputWarning, warn_caller
from ..backend import host
from .settings import History

log = logging.getLogger("nnx")


def _read(path):
    from ..checkpoint import CheckpointError, read
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise InputTypeError(f"resume={path!r}: expected the path of a training checkpoint "
                             f"(str, bytes or os.PathLike), got {type(path).__name__}")
    header, arrays = read(path)
    state = header.get("training")
    if state is None:
        raise CheckpointError(f"checkpoint {str(path)!r} holds a model, not a training run "
                              "(it was written by save(), not by fit(checkpoint=...))")
    if isinstance(state, dict) and "optimizer" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} was written by an older nnx, whose "
                              "training state this version cannot resume; start the run again")
    return header, arrays, state


def _saved_columns(path, header):
    """The DataFrame column names the saved run trained on, or None."""
    from ..checkpoint import CheckpointError, _feature_names
    try:
        return _feature_names(header["network"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} describes no valid network "
                              f"({exc})") from None


def _check_same_run(run, path, header, state):
    saved_columns, given = _saved_columns(path, header), run.data.columns
    if saved_columns is not None and given is not None and given != saved_columns:
        raise InputValueError(
            f"resume={str(path)!r}: X_train is a DataFrame of other columns than the saved "
            f"run trained on: {host.differing_columns(given, saved_columns, 'the saved run')}"
            "; give it the saved run's columns, in their order (the checkpoint's "
            "NeuralNetwork.load(...).feature_names)")
    mine = run.net.describe()
    saved = dict(header["network"])
    saved.setdefault("precision", "float32")  # written before precision was a setting
    differ = [k for k in ("layers", "loss", "dtype", "precision", "n_in")
              if saved.get(k) != mine[k]]
    if differ:
        from .trainer import _network_differences
        words = _network_differences(saved, mine, 1, where=(" in the checkpoint", " here"))
        words += [f"the network's {k} {saved.get(k)!r} in the checkpoint but {mine[k]!r} here"
                  for k in differ if k not in ("layers", "loss", "dtype", "precision")]
        raise InputValueError(f"resume={str(path)!r} was written for another network: "
                              + "; ".join(words))
    saved_scaler = state["optimizer"].get("loss_scaler") \
        if isinstance(state.get("optimizer"), dict) else None
    scaler = getattr(run.net, "loss_scaler", None)
    if saved_scaler is not None and scaler is not None and saved_scaler != repr(scaler):
        raise InputValueError(f"resume={str(path)!r} was written with the loss scaler "
                              f"{saved_scaler}, this network has {scaler!r}: a resumed run "
                              "goes on with the saved scale under the saved rules; give the "
                              "network that scaler")
    changed = run.settings.differences(state["settings"])
    if changed:
        hint = ""
        if "world_size" in changed:  # an exact resumption replays each rank's share
            saved_size = changed["world_size"][0]
            hint = (f"; the run was saved by {saved_size} process"
                    f"{'es' if saved_size != 1 else ''}: resume it with as many "
                    f"({'mpirun -n ' + str(saved_size) + ' ...' if saved_size > 1 else 'alone'})"
                    ", each with the saved batch_size")
        if "net_seed" in changed:  # not an argument of fit's: the network's own
            hint += ("; net_seed is the network's own seed (a network made without one draws "
                     "its own in every process: give it one to resume its run)")
        raise InputValueError(f"resume={str(path)!r}: fit() arguments differ from the saved "
                              "run's (saved, given): " + ", ".join(
                                  f"{k}={a!r} vs {c!r}" for k, (a, c) in changed.items())
                              + hint)
    saved_print = state.get("data")  # checkpoints hold it since it was added
    if saved_print is not None:
        mine_print = run.data_print()
        if not isinstance(saved_print, list) or len(saved_print) != len(mine_print) or not all(
                type(v) in (int, float) for v in saved_print):
            _Fields(path).bad("data", saved_print, f"a list of {len(mine_print)} numbers")
        from .trainer import same_data
        if not same_data(saved_print, mine_print):
            raise InputValueError(
                f"resume={str(path)!r}: the training or evaluation data differ from the saved "
                "run's (the same numbers of rows, but other values, or the rows or features "
                "in another order): an exact resumption needs the run's own data")


# ------------------------------------------------- the training state's checks
class _Fields:
    """Checks of one checkpoint's training state; each refusal is a
    ``CheckpointError`` naming the file, the field and its value."""

    def __init__(self, path):
        self.path = str(path)

    def bad(self, field, value, expected):
        from ..checkpoint import CheckpointError
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        what = "training state" if field == "training" else f"training state's {field}"
        raise CheckpointError(f"checkpoint {self.path!r} cannot be resumed: its {what} is "
                              f"{shown}; expected {expected}")

    def table(self, field, value, keys=()):
        if not isinstance(value, dict):
            self.bad(field, value, "a table (JSON object)")
        missing = [k for k in keys if k not in value]
        if missing:
            self.bad(field, value, f"a table with {', '.join(map(repr, missing))}")
        return value

    def integer(self, field, value, low=0, high=None):
        if type(value) is not int or value < low or (high is not None and value > high):
            self.bad(field, value, f"{low} (this run's)" if low == high else
                     f"an integer from {low}" + (" up" if high is None else f" to {high}"))
        return value

    def number(self, field, value, none=False, low=-math.inf):
        if value is None and none:
            return value
        if type(value) not in (int, float) or not math.isfinite(value) or value < low:
            self.bad(field, value, "a finite number" + (f" >= {low}" if low > -math.inf else "")
                     + (" or null" if none else ""))
        return value

    def boolean(self, field, value):
        if type(value) is not bool:
            self.bad(field, value, "true or false")
        return value

    def flat(self, name, array, n, dtype, finite=False):
        """An array shaped and typed like the network's flat parameter buffer."""
        from ..checkpoint import CheckpointError, count_non_finite
        if array is None or tuple(array.shape) != (n,) or str(array.dtype) != dtype:
            shown = "missing" if array is None else \
                f"of shape {tuple(array.shape)} and dtype {array.dtype}"
            raise CheckpointError(
                f"checkpoint {self.path!r} cannot be resumed: its array {name!r} is {shown}; "
                f"expected shape ({n},) and dtype {dtype}, like the network's flat parameter "
                "buffer")
        if finite and count_non_finite(array):
            raise CheckpointError(f"checkpoint {self.path!r} cannot be resumed: its array "
                                  f"{name!r} holds {count_non_finite(array):,} NaN or "
                                  "infinite values")


def _check_structure(path, header, state):
    """The tables ``resume=`` reads before comparing the run with this one's."""
    f = _Fields(path)
    f.table("training", state, ("epoch", "finished", "good_epoch", "generator", "optimizer",
                                "callbacks", "history", "settings"))
    f.table("network (in the header)", header.get("network"))
    f.table("settings", state["settings"])


def _check_optimizer(f, run, data, arrays, epoch):
    optim = run.optim
    f.table("optimizer", data, ("lr", "max_epochs"))
    f.number("optimizer.lr", data["lr"], low=0)
    f.integer("optimizer.steps", data.get("steps", 0))
    epochs = run.settings.epochs
    f.integer("optimizer.max_epochs", data["max_epochs"], epochs, epochs)
    if data.get("steps_per_epoch") is not None:
        steps = run.steps_per_epoch
        f.integer("optimizer.steps_per_epoch", data["steps_per_epoch"], steps, steps)
    keys = optim.schedule.resumable_state
    schedule = f.table("optimizer.schedule", data.get("schedule", {}), keys)
    for k in keys:
        f.number(f"optimizer.schedule.{k}", schedule[k], none=True)
    if data.get("loss_scale") is not None:
        pair = data["loss_scale"]
        if not isinstance(pair, list) or len(pair) != 2:
            f.bad("optimizer.loss_scale", pair, "a pair [scale, good steps]")
        f.number("optimizer.loss_scale[0]", pair[0], low=1e-45)
        f.integer("optimizer.loss_scale[1]", pair[1])
    names = sorted(optim.state_names)
    for k in arrays:
        if k not in names:
            f.bad("optimiser array name", f"optim.{k}",
                  f"one of {['optim.' + n for n in names]} for {type(optim).__name__}")
    missing = [n for n in names if n not in arrays]
    if epoch > 0 and missing:  # else filled with zeros: another run
        f.bad("optimiser arrays", sorted(f"optim.{k}" for k in arrays),
              f"{['optim.' + n for n in names]} after {epoch} epoch(s) of "
              f"{type(optim).__name__}")


def _check_history(f, state):
    h = f.table("history", state["history"],
                ("records", "best_epoch", "best_loss", "stopped_early", "epochs_run"))
    if not isinstance(h["records"], list):
        f.bad("history.records", h["records"], "a list of evaluation records")
    epoch = state["epoch"]
    for i, r in enumerate(h["records"]):
        where = f"history.records[{i}]"
        f.table(where, r, ("epoch", "lr", "train_loss", "loss"))
        f.integer(f"{where}.epoch", r["epoch"], 1, epoch)
        f.number(f"{where}.lr", r["lr"], low=0)
        f.number(f"{where}.train_loss", r["train_loss"])
        f.number(f"{where}.loss", r["loss"], none=True)
        f.number(f"{where}.accuracy", r.get("accuracy"), none=True, low=0)
    if h["best_epoch"] is not None:
        f.integer("history.best_epoch", h["best_epoch"], 1, epoch)
    f.number("history.best_loss", h["best_loss"], none=True)
    f.boolean("history.stopped_early", h["stopped_early"])
    f.integer("history.epochs_run", h["epochs_run"], 0, epoch)


def _check_state(run, path, state, arrays, parameters=True):
    """Refuse, naming the field, a training state or array this run could
    not continue from (else: raw KeyErrors and TypeErrors, or a buffer of the
    wrong shape silently replaced by zeros)."""
    f = _Fields(path)
    epoch = f.integer("epoch", state["epoch"], 0, run.settings.epochs)
    f.boolean("finished", state["finished"])
    f.integer("good_epoch", state["good_epoch"], 0, epoch)
    if state["generator"] is not None:
        f.table("generator", state["generator"])
    if "rank_generators" in state:
        _check_rank_generators(f, state["rank_generators"], run.comm.size)
    if not isinstance(state.get("run_id", ""), str):
        f.bad("run_id", state["run_id"], "a string")
    n, dtype = int(run.net.param_buffer.shape[0]), run.b.dtype_name
    for name in ("params", "good_params") if parameters else ():
        f.flat(name, arrays.get(name), n, dtype, finite=True)
    optim_arrays = _split(arrays, "optim.")
    _check_optimizer(f, run, state["optimizer"], optim_arrays, epoch)
    for k, v in optim_arrays.items():
        f.flat(f"optim.{k}", v, n, dtype)
    callbacks = f.table("callbacks", state["callbacks"])
    for key, data in callbacks.items():
        f.table(f"callbacks.{key}", data)
    from .callbacks import EarlyStopping
    for cb in run.callbacks:  # each early stopping's own key: early_stopping, early_stopping#2
        key = run.state_keys.get(id(cb))
        if not isinstance(cb, EarlyStopping) or key not in callbacks:
            continue
        f.integer(f"callbacks.{key}.bad_evals", callbacks[key].get("bad_evals"))
        f.number(f"callbacks.{key}.best_value", callbacks[key].get("best_value"), none=True)
        if f"{key}.best_params" in arrays:
            f.flat(f"{key}.best_params", arrays[f"{key}.best_params"], n, dtype, finite=True)
    _check_history(f, state)


def check_before_writing(run, path, state, arrays):
    """Refuse, as a checkpoint is written, a training state that ``resume=``
    would refuse (a callback's state JSON cannot hold, an optimiser's array of
    another dtype, a schedule's state that is not a number), naming the
    field: said at the first save, not when the run is resumed. Returns the
    arrays on the host (each copied from the device once)."""
    import json

    from ..checkpoint import CheckpointError, json_problem
    for key, value in state["callbacks"].items():
        problem = json_problem(value, "it")
        if problem:
            raise InputTypeError(
                f"cannot write checkpoint {str(path)!r}: callback state {key!r} (from "
                f"checkpoint_state()) must be plain data that JSON can write (str, Python "
                f"numbers, booleans, None, lists, dicts with str keys): {problem}")
    plain = json.loads(json.dumps(state, sort_keys=True))
    host = {k: run.b.to_numpy(v) if run.b.owns(v) else v for k, v in arrays.items()}
    try:  # the parameters themselves were checked on the device, and save() checks them
        _check_state(run, path, plain, host, parameters=False)
    except CheckpointError as exc:
        raise InputValueError(f"cannot write checkpoint {str(path)!r}, which could not be "
                              f"resumed: {str(exc).split(': ', 1)[-1]}") from None
    return host


def _check_rank_generators(f, states, size):
    """A distributed run's dropout streams: one state (or None) per rank."""
    if not isinstance(states, list) or len(states) != size:
        f.bad("rank_generators", states, f"a list of {size} generator states, one per rank")
    for i, state in enumerate(states):
        if state is not None:
            f.table(f"rank_generators[{i}]", state)


def _split(arrays, prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _restore_generator(net, path, state, epoch, comm):
    """Put the dropout generator back: this rank's, in a distributed run.
    A backend may be unable to (it says so by returning False, and a fresh
    stream is drawn); a state that makes it fail is the file's fault.
    Returns whether it was put back."""
    from ..checkpoint import CheckpointError
    saved = state["generator"]
    if comm.size > 1:
        saved = state.get("rank_generators", [None] * comm.size)[comm.rank]
    try:
        restored = net.restore_generator(saved, epoch)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be resumed: its training "
                              f"state's generator was refused by the {net.backend.name} "
                              f"backend ({type(exc).__name__}: {exc})") from None
    if not restored:
        kind = saved.get("bit_generator") if isinstance(saved, dict) else None
        mine = net.backend.generator_state(net.rng)
        mine = mine.get("bit_generator") if isinstance(mine, dict) else None
        why = (f"checkpoint {str(path)!r} holds no dropout generator state" if saved is None
               else f"checkpoint {str(path)!r} holds a {kind} generator state, and the "
                    f"{net.backend.name} backend draws with {mine}" if kind and mine
               else f"the {net.backend.name} backend cannot restore its dropout generator")
        log.warning("nnx: %s; the resumed run draws a fresh reproducible stream, so it will "
                    "not match the uninterrupted run bit for bit", why)
    return restored


def load_run(run, path):
    """Put ``run`` (its network, optimiser, callbacks and history) in the state
    saved at ``path``, after checking the checkpoint belongs to this run and
    holds nothing it could not continue from."""
    from ..checkpoint import CheckpointError
    header, arrays, state = _read(path)
    _check_structure(path, header, state)
    _check_same_run(run, path, header, state)
    _check_state(run, path, state, arrays)
    net, optim, b = run.net, run.optim, run.b
    net.set_parameters(b.asarray(arrays["params"]))
    net.feature_names = _saved_columns(path, header)
    optim.attach(net)
    run.epoch, run.finished = state["epoch"], state["finished"]
    optim.load_checkpoint_state(state["optimizer"], _split(arrays, "optim."), run.epoch)
    for cb in run.callbacks:
        key = run.state_keys.get(id(cb))
        if key is not None and key not in state["callbacks"] and run.comm.rank == 0:
            warn_caller(  # a callback added since, or a second one of a key saved
                f"resume: checkpoint {str(path)!r} holds no state for {type(cb).__name__} "
                f"(state_key {key!r}), which starts afresh", InputWarning)
        if key is not None and key in state["callbacks"]:
            try:  # a callback of one's own may check nothing itself
                cb.load_checkpoint_state(
                    state["callbacks"][key],
                    {k: b.asarray(v) for k, v in _split(arrays, key + ".").items()})
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} cannot be resumed: its training state's "
                    f"callbacks.{key} was refused by {type(cb).__name__} "
                    f"({type(exc).__name__}: {exc})") from None
    run.good_params = b.asarray(arrays["good_params"])
    run.good_epoch = state["good_epoch"]
    run.generator_restored = _restore_generator(net, path, state, run.epoch, run.comm)
    run.history = History.from_dict(state["history"])
    if run.finished and run.comm.rank == 0:  # fit returns at once: say so, and why
        how = "stopped early" if run.history.stopped_early else "had run all its epochs"
        warn_caller(f"resume={str(path)!r}: that run had finished ({how}, at epoch "
                    f"{run.epoch}), so fit returns its history without training; to train on "
                    "from its parameters, NeuralNetwork.load the checkpoint and fit it with "
                    "restart=False", InputWarning)
