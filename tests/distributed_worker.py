"""One distributed fit per mode, run by tests/test_distributed.py under
``mpiexec -n 2`` (or torchrun): each rank writes what the test compares into
the folder OUT (parameters as .npy, histories and errors as JSON), so the
test reads files, not interleaved output.

    python distributed_worker.py MODE OUT [options]

The data, network and optimiser are built here and imported by the test
for its single-process reference run, so both sides train the same thing.
"""

import argparse
import json
import os
import sys

import numpy as np

import nnx
from nnx import distributed


def data(n=203, n_val=41, features=6, classes=3, seed=0):
    """A small classification set: ``n`` training rows, ``n_val`` validation rows."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_val, features))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    return X[:n], y[:n] % classes, X[n:], y[n:] % classes


def network(keep=1.0, seed=3, activation="tanh", width=16):
    return nnx.NeuralNetwork([nnx.Dense(width, activation, dropout=keep),
                              nnx.Dense(3, "linear")],
                             nnx.SoftmaxCrossEntropy(), seed=seed, dtype="float64")


def optimizer(lr=0.1, clip_norm=0.5):
    # clip_norm small enough to clip: it must act on the all-reduced gradient
    return nnx.SGDMomentum(lr, momentum=0.9, final_lr=lr / 4, decay_type="exponential",
                           clip_norm=clip_norm)


def fit(net, batch, n=203, epochs=2, distributed=None, lr=0.1, X=None, clip_norm=0.5,
        evaluate=True, **kw):
    """Train ``net`` on ``data(n)`` (``X`` replacing its training features),
    evaluating on the validation rows unless ``evaluate`` is False."""
    X_train, y_train, X_val, y_val = data(n)
    if X is not None:
        X_train = X
    trainer = nnx.Trainer(net, optimizer(lr, clip_norm))
    validation = (X_val, y_val) if evaluate else None
    return trainer.fit(X_train, y_train, validation=validation, epochs=epochs,
                       eval_every=1, batch_size=batch, seed=7, patience=None,
                       distributed=distributed, **kw)


def params(net):
    return np.array(net.backend.to_numpy(net.get_parameters()))


def _save(out, name, net, history, comm):
    np.save(os.path.join(out, f"{name}-{comm.rank}.npy"), params(net))
    with open(os.path.join(out, f"{name}-{comm.rank}.json"), "w") as f:
        json.dump({"records": history.records, "epochs_run": history.epochs_run,
                   "generator": net.generator_state()}, f)


def _error(out, comm, exc):
    with open(os.path.join(out, f"error-{comm.rank}.json"), "w") as f:
        json.dump({"type": type(exc).__name__, "message": str(exc)}, f)


# ------------------------------------------------------------------ modes
def parity(args, comm):
    net = network(args.keep)
    history = fit(net, args.batch, n=args.rows, distributed=comm, evaluate=not args.no_val)
    _save(args.out, "run", net, history, comm)


def one_rank_stops(args, comm):
    """A callback asks to stop on rank 1 alone: every rank stops after that epoch."""
    net = network()
    history = fit(net, 16, epochs=5, distributed=comm,
                  callback=lambda epoch, record: comm.rank == 1 and epoch == 2)
    _save(args.out, "run", net, history, comm)


def bad_input(args, comm):
    X = data()[0].copy()
    if comm.rank == 1:
        X[5, 2] = np.nan
    try:
        fit(network(), 16, X=X, distributed=comm)
    except nnx.InputError as exc:
        _error(args.out, comm, exc)
        sys.exit(3)


def different_arguments(args, comm):
    try:
        fit(network(), 16 + comm.rank, distributed=comm)
    except nnx.InputError as exc:
        _error(args.out, comm, exc)
        sys.exit(3)


def different_network(args, comm):
    try:  # rank 1 builds a wider ReLU layer: its parameters would not even fit rank 0's
        fit(network(width=16 + comm.rank, activation=("tanh", "relu")[comm.rank]), 16,
            distributed=comm)
    except nnx.InputError as exc:
        _error(args.out, comm, exc)
        sys.exit(3)


def mismatch(args, comm):
    """Rank 1 differs from rank 0 in one way (``--what``), each of which was
    accepted (and trained on inconsistent data, or on two loss scales) or
    ended in a raw MPI error."""
    X = data()[0].copy()
    net, kw = network(), {}
    other = comm.rank == 1
    if args.what == "width" and other:  # a zero column leaves every sum as it was
        X = np.hstack([X, np.zeros((len(X), 1))])
    elif args.what == "columns" and other:  # the features in another order
        X = X[:, ::-1].copy()
    elif args.what == "checkpoint-every":  # the ranks would save at other epochs
        kw = {"checkpoint": os.path.join(args.out, "run.npz"), "checkpoint_every": 1 + comm.rank}
    elif args.what == "loss-scaler":
        net = nnx.NeuralNetwork([nnx.Dense(16, "tanh"), nnx.Dense(3, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=3, precision="float16")
        if other:
            net.loss_scaler = nnx.precision.LossScaler(init_scale=1024.0)
    elif args.what == "dtype" and other:
        net = nnx.NeuralNetwork([nnx.Dense(16, "tanh"), nnx.Dense(3, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=3, dtype="float32")
    elif args.what == "column-names":  # the same numbers under other names
        import pandas as pd
        X = pd.DataFrame(X, columns=[f"{'pq'[comm.rank]}{i}" for i in range(X.shape[1])])
    elif args.what == "restart":  # a second fit: rank 0 starts again, rank 1 goes on
        fit(net, 16, X=X, distributed=comm)
        kw = {"restart": not other}
    try:  # no evaluation set: rank 1 alone would refuse its 6 features beside 7
        fit(net, 16, X=X, distributed=comm, evaluate=args.what != "width", **kw)
    except nnx.InputError as exc:
        _error(args.out, comm, exc)
        sys.exit(3)


class _RankTagged(nnx.Callback):
    """A callback of one's own holding its rank's settings (a file name, a NaN)."""

    def __init__(self, rank):
        self.tag, self.limit = f"rank-{rank}.txt", float("nan")


def mixed_kinds(args, comm):
    """Rank 0 passes distributed=True, rank 1 its mpi4py communicator: they
    made other collectives on the way (one found its local rank by MPI, the
    other from the launcher) and waited in them for ever."""
    from mpi4py import MPI
    rank = MPI.COMM_WORLD.Get_rank()
    net = network()
    history = fit(net, 16, distributed=True if rank == 0 else MPI.COMM_WORLD)
    _save(args.out, "run", net, history, argparse.Namespace(rank=rank))


def main_only(args, comm):
    """Printers and loggers given on rank 0 alone, as they run there alone;
    a callback with settings of each rank's own; data far from standardised
    (a warning, on rank 0 alone)."""
    log = [nnx.CSVLogger(os.path.join(args.out, "log.csv"))] if comm.is_main else []
    log.append(_RankTagged(comm.rank))
    net = network()
    history = fit(net, 16, X=data()[0] * 100 + 50, distributed=comm, verbose=comm.is_main,
                  callbacks=log)
    _save(args.out, "run", net, history, comm)


def threads(args, comm):
    """What init() left of this rank's BLAS threads, and nnx's update threads."""
    from threadpoolctl import threadpool_info

    from nnx.backend import numpy_backend
    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    _, workers = numpy_backend._pool()
    with open(os.path.join(args.out, f"threads-{comm.rank}.json"), "w") as f:
        json.dump({"given": comm.threads, "blas": blas, "update": workers,
                   "cores": sorted(os.sched_getaffinity(0))}, f)


def half_fit(batch, comm=None):
    """A float16 regression whose loss scale overflows and halves on the way."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 20))
    y = (X @ rng.standard_normal((20, 1)))[:, 0] * 50
    net = nnx.NeuralNetwork([nnx.Dense(64, "relu"), nnx.Dense(1, "linear")],
                            nnx.MeanSquaredError(), seed=0, precision="float16")
    history = nnx.Trainer(net, nnx.Adam(0.01)).fit(
        X[:1800], y[:1800], validation=(X[1800:], y[1800:]), epochs=3, eval_every=1,
        batch_size=batch, seed=1, patience=None, distributed=comm)
    scale = float(net.backend.to_numpy(net.loss_scaler.scale_of(net.backend)))
    return params(net), [r["loss"] for r in history.records], scale


def half(args, comm):
    p, losses, scale = half_fit(args.batch, comm)
    np.save(os.path.join(args.out, f"half-{comm.rank}.npy"), p)
    with open(os.path.join(args.out, f"half-{comm.rank}.json"), "w") as f:
        json.dump({"losses": losses, "scale": scale}, f)


def diverge(args, comm):
    try:
        # a linear network and a rate that overflow the outputs within an epoch or two
        fit(network(activation="linear"), 16, lr=1e200, clip_norm=None, epochs=3,
            distributed=comm)
    except nnx.TrainingDiverged as exc:
        _error(args.out, comm, exc)
        sys.exit(3)


def crash(args, comm):
    """A callback that fails on rank 1 alone, in epoch 2: the job must end."""
    def fail(epoch, record):
        if comm.rank == 1 and epoch == 2:
            raise RuntimeError("a callback failed on rank 1 only")
    fit(network(), 16, epochs=4, distributed=comm, callback=fail)
    open(os.path.join(args.out, f"finished-{comm.rank}"), "w").close()


def interrupt(args, comm):
    """Ctrl-C, as the launcher passes it to every rank, in epoch 2."""
    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt
    fit(network(), 16, epochs=4, distributed=comm, callback=stop)


class Killed(Exception):
    """Every rank stopped at once, as by a job killed between two epochs."""


def resume(args, comm):
    """An uninterrupted run, and one killed in epoch 3 (after the checkpoint
    of epoch 2) then resumed by a new network: both end with the same
    parameters, dropout included (each rank's stream is in the checkpoint)."""
    whole = network(0.8)
    history = fit(whole, 16, epochs=4, distributed=comm)
    _save(args.out, "whole", whole, history, comm)
    part = os.path.join(args.out, "part.npz")

    def kill(epoch, record):
        if epoch == 3:
            raise distributed.mark_agreed(Killed())
    try:
        fit(network(0.8), 16, epochs=4, distributed=comm, checkpoint=part, checkpoint_every=1,
            callback=kill)
    except Killed:
        pass
    resumed = network(0.8)
    history = fit(resumed, 16, epochs=4, distributed=comm, checkpoint=part, resume=part)
    _save(args.out, "resumed", resumed, history, comm)


def rendezvous(args, comm):
    """Under torchrun (MPI under mpirun): the TCP store carries every rank's
    data to every rank, as it carries NCCL's id from rank 0."""
    here = distributed.world()
    channel = (distributed._MPIHost if args.mode == "mpi-host" else distributed._StoreHost)(here)
    got = channel.gather(f"hello from {here.rank}")
    with open(os.path.join(args.out, f"rendezvous-{here.rank}.json"), "w") as f:
        json.dump({"world": [here.rank, here.size, here.local_rank, here.launcher],
                   "gathered": got}, f)


def two_fits(args, comm):
    """Two fits of one network, the second going on (restart=False): each
    rank's dropout masks of the second fit are fresh, not the first's again."""
    net = network(0.7)
    draws = []
    for _ in range(2):
        fit(net, args.batch, epochs=1, distributed=comm, restart=False)
        draws.append(float(net.backend.to_numpy(net.rng.random())))
    with open(os.path.join(args.out, f"draws-{comm.rank}.json"), "w") as f:
        json.dump(draws, f)


def rank_0_went_ahead(args, comm):
    """Rank 0 alone takes a few steps by hand (float16 Adam: moments, a step
    count and a loss scale of its own), then both fit on with restart=False:
    they must train one model, from rank 0's state."""
    X, y = data()[:2]
    net = nnx.NeuralNetwork([nnx.Dense(16, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=3, precision="float16")
    net.loss_scaler = nnx.LossScaler(init_scale=16.0, growth_interval=1)
    optim = nnx.Adam(0.01)
    net.build(X.shape[1])
    optim.attach(net)
    if comm.rank == 0:
        for i in range(0, 80, 16):
            net.train_batch(X[i:i + 16], y[i:i + 16])
            optim.step()
    nnx.Trainer(net, optim).fit(X, y, epochs=2, batch_size=16, seed=7, patience=None,
                                distributed=comm, restart=False)
    np.save(os.path.join(args.out, f"params-{comm.rank}.npy"), net.param_buffer)


def bad_log_path(args, comm):
    """A CSVLogger path under a file, wrong on every rank (a shared file
    system): refused, on every rank, by fit."""
    blocker = os.path.join(args.out, "blocker")
    if comm.rank == 0:
        with open(blocker, "w") as f:
            f.write("a file, not a folder")
    comm.sum([0.0])  # the file is there before either rank looks
    logger = nnx.CSVLogger(os.path.join(blocker, "run.csv"))
    fit(network(), args.batch, epochs=1, distributed=comm, callbacks=[logger])


def warnings_said(args, comm):
    """What each rank warns of: a held-out split of sorted labels is rank 0's
    to say."""
    import warnings
    X, y = data()[:2]
    order = np.argsort(y, kind="stable")
    net = network()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # a callback answering 1 (not True): rank 0's to point out, as the rest
        nnx.Trainer(net, optimizer()).fit(X[order], y[order], epochs=1, batch_size=16,
                                          validation_split=0.2, distributed=comm,
                                          callback=lambda epoch, record: 1)
    with open(os.path.join(args.out, f"warnings-{comm.rank}.json"), "w") as f:
        json.dump([str(w.message) for w in caught], f)


MODES = {"parity": parity, "two-fits": two_fits, "warnings": warnings_said,
         "one-rank-stops": one_rank_stops,
         "bad-input": bad_input,
         "different-arguments": different_arguments, "different-network": different_network,
         "threads": threads, "threads-comm": threads, "half": half, "interrupt": interrupt,
         "diverge": diverge, "crash": crash,
         "resume": resume, "rendezvous": rendezvous, "mpi-host": rendezvous,
         "mismatch": mismatch, "main-only": main_only, "mixed-kinds": mixed_kinds,
         "rank-0-went-ahead": rank_0_went_ahead, "bad-log-path": bad_log_path}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("out")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rows", type=int, default=203)
    p.add_argument("--keep", type=float, default=1.0)
    p.add_argument("--no-val", action="store_true", help="no evaluation set")
    p.add_argument("--what", help="mismatch: what differs on rank 1")
    args = p.parse_args()
    if args.mode == "threads-comm":  # fit(distributed=an mpi4py communicator), no init()
        from mpi4py import MPI
        comm = distributed.resolve(MPI.COMM_WORLD, nnx.get_backend("cpu"))
    else:
        comm = (None if args.mode in ("rendezvous", "mpi-host", "mixed-kinds")
                else distributed.init("cpu"))
    MODES[args.mode](args, comm)


if __name__ == "__main__":
    main()
