"""Putting a run back from a training checkpoint (``fit(resume=path)``)."""

from __future__ import annotations

import logging

from .._checks import InputValueError
from .settings import History

log = logging.getLogger("nnx")


def _read(path):
    from ..checkpoint import CheckpointError, read
    header, arrays = read(path)
    state = header.get("training")
    if state is None:
        raise CheckpointError(f"checkpoint {str(path)!r} holds a model, not a training run "
                              "(it was written by save(), not by fit(checkpoint=...))")
    if "optimizer" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} was written by an older nnx, whose "
                              "training state this version cannot resume; start the run again")
    return header, arrays, state


def _check_same_run(run, path, header, state):
    mine = run.net.describe()
    differ = [k for k in ("layers", "loss", "dtype", "n_in")
              if header["network"].get(k) != mine[k]]
    if differ:
        raise InputValueError(f"resume={str(path)!r} was written for another network: its "
                              + ", ".join(f"{k} {header['network'].get(k)!r} (this network: "
                                          f"{mine[k]!r})" for k in differ))
    changed = run.settings.differences(state["settings"])
    if changed:
        raise InputValueError(f"resume={str(path)!r}: fit() arguments differ from the saved "
                              "run's (saved, given): " + ", ".join(
                                  f"{k}={a!r} vs {c!r}" for k, (a, c) in changed.items()))


def _split(arrays, prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_run(run, path):
    """Put ``run`` (its network, optimiser, callbacks and history) in the state
    saved at ``path``, after checking the checkpoint belongs to this run."""
    header, arrays, state = _read(path)
    _check_same_run(run, path, header, state)
    net, optim, b = run.net, run.optim, run.b
    net.set_parameters(b.asarray(arrays["params"]))
    optim.attach(net)
    run.epoch, run.finished = state["epoch"], state["finished"]
    optim.load_checkpoint_state(state["optimizer"], _split(arrays, "optim."), run.epoch)
    for cb in run.callbacks:
        if cb.state_key is not None and cb.state_key in state["callbacks"]:
            cb.load_checkpoint_state(
                state["callbacks"][cb.state_key],
                {k: b.asarray(v) for k, v in _split(arrays, cb.state_key + ".").items()})
    run.good_params = b.asarray(arrays["good_params"])
    run.good_epoch = state["good_epoch"]
    if not net.restore_generator(state["generator"], run.epoch):
        log.warning("nnx: %s backend cannot restore its dropout generator; the resumed run "
                    "draws a fresh reproducible stream, so it will not match the "
                    "uninterrupted run bit for bit", b.name)
    run.history = History.from_dict(state["history"])
