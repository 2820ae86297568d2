"""Data-parallel scaling on this machine's CPUs: samples/s of ``Trainer.fit``
with 1 and 2 MPI processes on the benchmark networks, and the efficiency.

    python bench/distributed_scaling.py [--repeats 3] [--epochs 4]

starts each configuration as its own job (``mpiexec -n W python THIS
--worker ...``), alternating them ``--repeats`` times, and prints a table of
medians with the lowest and highest run in brackets. Each configuration
trains the same per-process batch (the network's batch in bench/conftest.py)
on synthetic data, so W processes train W x that batch per step (weak
scaling); the efficiency ("per process, vs 1 x 1") is samples/s of W
processes over W x those of one process with as many threads each, and the
last column compares with one process using every core. The all-reduce
column is the median time of one in-place all-reduce of the flat gradient
buffer, timed alone in the same job; the step column is the epoch's time
per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from conftest import GPU_ONLY, NETWORKS  # noqa: E402  (the benchmark suite's networks)

STEPS = {"study-784-89-10": 200, "wide-784-1024-1024-10": 24}  # steps per epoch and process


def worker(name, dtype, epochs):
    """One job's measurement (run under mpiexec): a JSON line on rank 0."""
    import numpy as np

    import nnx
    from nnx import distributed

    comm = distributed.init("cpu")
    sizes, activation, batch = NETWORKS[name]
    rows = batch * STEPS[name] * comm.size
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((rows, sizes[0])), rng.integers(0, sizes[-1], rows)
    layers = [nnx.Dense(n, activation) for n in sizes[1:-1]] + [nnx.Dense(sizes[-1], "linear")]
    net = nnx.NeuralNetwork(layers, "softmax_cross_entropy", seed=0, dtype=dtype)
    times = []

    class Clock(nnx.Callback):
        def on_epoch_start(self, run, epoch):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, run, epoch, record):
            times.append(time.perf_counter() - self.t0)

    nnx.Trainer(net, nnx.SGDMomentum(0.01)).fit(
        X, y, X[:batch], y[:batch], epochs=epochs, eval_every=epochs, batch_size=batch,
        patience=None, callbacks=[Clock()], distributed=comm)
    grad = net.grad_buffer
    reduce_times = []
    for _ in range(30):
        comm.sum([0.0])  # line the ranks up
        t0 = time.perf_counter()
        comm.allreduce(grad)
        reduce_times.append(time.perf_counter() - t0)
    epoch = statistics.median(times[1:])  # the first epoch warms up
    if comm.is_main:
        print(json.dumps({"samples_per_s": rows / epoch, "step_s": epoch / STEPS[name],
                          "allreduce_s": statistics.median(reduce_times),
                          "params": int(grad.shape[0])}))


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


def run_job(name, dtype, processes, threads, epochs):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    cmd = [_mpiexec(), "-n", str(processes), sys.executable, __file__, "--worker", name, dtype,
           "--epochs", str(epochs)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spread(values, fmt):
    """The median, and the lowest and highest value in brackets."""
    return (f"{fmt.format(statistics.median(values))} "
            f"({fmt.format(min(values))}-{fmt.format(max(values))})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--worker", nargs=2, metavar=("NETWORK", "DTYPE"))
    args = p.parse_args()
    if args.worker:
        return worker(*args.worker, args.epochs)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    configs = [(1, 1), (1, cores), (2, max(cores // 2, 1))]  # (processes, threads each)
    print(f"{cores} cores; per-process batch as bench/conftest.py; medians of {args.repeats} "
          "runs (lowest-highest)\n")
    print("| network (batch per process) | dtype | processes x threads | samples/s | "
          "step | all-reduce | per process, vs 1 x 1 | vs 1 process x all cores |")
    print("|---|---|---|---|---|---|---|---|")
    for name in (n for n in NETWORKS if n not in GPU_ONLY):
        batch = NETWORKS[name][2]
        for dtype in args.dtypes.split(","):
            runs = {c: [] for c in configs}
            for _ in range(args.repeats):  # alternate, so a busy moment hits every config
                for c in configs:
                    runs[c].append(run_job(name, dtype, *c, args.epochs))
            base = [r["samples_per_s"] for r in runs[(1, 1)]]
            whole = [r["samples_per_s"] for r in runs[(1, cores)]]
            for (procs, threads), results in runs.items():
                rate = [r["samples_per_s"] for r in results]
                cells = [_spread(rate, "{:,.0f}"),
                         _spread([r["step_s"] * 1e3 for r in results], "{:.2f}") + " ms",
                         _spread([r["allreduce_s"] * 1e6 for r in results], "{:.0f}") + " µs",
                         _spread([r / (procs * b) for r, b in zip(rate, base)], "{:.2f}"),
                         _spread([r / w for r, w in zip(rate, whole)], "{:.2f}")]
                print(f"| {name} ({batch}) | {dtype} | {procs} x {threads} | "
                      + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
