"""nnx.distributed and fit(distributed=...): the launchers' environments, the
refusals that say what is missing, the split of every batch among the ranks,
the agreement on errors; then real jobs of two MPI processes (mpiexec, each
run with a 60 s limit: a hang fails the test) against the single process
with the doubled batch, dropout run to run, failures that end every rank with
the same message, exact resumption, and ``mpiexec -n 2 nnx train``.

The MPI tests skip, saying why, where mpi4py or mpiexec is missing; CI
installs both (.ci/run). Every run here uses one BLAS thread, as each of the
two processes does on this 2-core machine: OpenBLAS sums in an order that
depends on its thread count."""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import distributed_worker as worker
import numpy as np
import pytest
from conftest import requires_gpu
from threadpoolctl import threadpool_limits

import nnx
from nnx import cli, distributed
from nnx.distributed import DistributedError, World
from nnx.train.trainer import _Data

HERE = Path(__file__).resolve().parent
WORKER = HERE / "distributed_worker.py"
LAUNCH_VARS = {v for launcher in distributed.LAUNCHERS for v in launcher[1:]}
TIMEOUT = 60  # seconds: a job still running then has hung


@pytest.fixture
def no_launcher(monkeypatch):
    """This process outside any launcher, with no communicator made yet."""
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(distributed, "_ACTIVE", {})


def _launched(monkeypatch, **env):
    for var, value in env.items():
        monkeypatch.setenv(var, value)


# ------------------------------------------------------ the launchers' worlds
@pytest.mark.parametrize("launcher", distributed.LAUNCHERS, ids=lambda t: t[0])
def test_world_reads_each_launcher(launcher):
    name, rank, size, local = launcher
    assert distributed.world({rank: "3", size: "4", local: "1"}) == World(3, 4, 1, name)
    assert distributed.world({rank: "0", size: "2"}).local_rank is None


def test_outside_a_launcher_the_world_is_one_process():
    assert distributed.world({}) == World(0, 1, 0, None)
    # a Slurm batch script has SLURM_PROCID and SLURM_NTASKS before srun starts a step
    assert distributed.world({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}).size == 1


@pytest.mark.parametrize("outer", [
    {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
     "OMPI_COMM_WORLD_LOCAL_RANK": "0"},
    {"PMI_RANK": "1", "PMI_SIZE": "2"},
])
def test_torchrun_started_by_mpirun_is_torchrun(outer):
    """One torchrun per node started by mpirun: the workers inherit mpirun's
    variables, but their rank and world are torchrun's."""
    env = {**outer, "RANK": "13", "WORLD_SIZE": "16", "LOCAL_RANK": "5",
           "TORCHELASTIC_RUN_ID": "job"}
    assert distributed.world(env) == World(13, 16, 5, "torchrun")


def test_mpirun_inside_a_slurm_allocation_is_mpirun():
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
           "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}
    assert distributed.world(env).launcher == "Open MPI"


@pytest.mark.parametrize("env, message", [
    ({"RANK": "one", "WORLD_SIZE": "2"}, r"RANK='one' is not an integer"),
    ({"PMI_RANK": "2", "PMI_SIZE": "2"}, r"PMI_RANK=2 is not below PMI_SIZE=2"),
    ({"PMI_RANK": "0", "PMI_SIZE": "0"}, r"PMI_SIZE='0' is not an integer >= 1"),
])
def test_malformed_launcher_variables_are_named(env, message):
    with pytest.raises(DistributedError, match=message):
        distributed.world(env)


# ----------------------------------------------------- what is missing, said
def test_one_process_needs_no_engine(no_launcher, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` fails
    assert distributed.init("cpu") is distributed.LOCAL
    X, y, Xv, yv = worker.data()
    runs = []
    for switch in (None, True):
        net = worker.network()
        history = worker.fit(net, 32, distributed=switch)
        runs.append((worker.params(net), history.records))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_a_launched_job_without_mpi4py_says_how_to_install_it(no_launcher, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    _launched(monkeypatch, PMI_RANK="0", PMI_SIZE="2")
    with pytest.raises(DistributedError, match=r"mpi4py.*pip install 'nnx-dl\[mpi\]'"):
        distributed.init("cpu")
    with pytest.raises(DistributedError, match=r"pip install 'nnx-dl\[mpi\]'"):
        worker.fit(worker.network(), 16, distributed=True)


def test_torchrun_cannot_start_the_cpu_backend(no_launcher, monkeypatch):
    _launched(monkeypatch, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0")
    with pytest.raises(DistributedError, match=r"torchrun starts no MPI job.*mpirun"):
        distributed.init("cpu")


def test_fit_warns_when_launched_without_the_switch(no_launcher, monkeypatch):
    _launched(monkeypatch, PMI_RANK="1", PMI_SIZE="2")
    with pytest.warns(UserWarning, match=r"rank 1 of 2 .*distributed=True"):
        worker.fit(worker.network(), 16)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        worker.fit(worker.network(), 16, distributed=False)


def test_distributed_takes_a_communicator_or_a_switch():
    with pytest.raises(TypeError, match=r"distributed must be True, False, None"):
        worker.fit(worker.network(), 16, distributed="mpi")


# -------------------------------------------------- every batch, split once
class FakeComm(distributed.Communicator):
    """A rank of a world that exists only in this test: ``gather`` returns
    what the test says every rank contributed, ``abort`` records its call."""

    def __init__(self, rank=0, size=2, others=None):
        self.rank, self.size, self.others, self.aborted = rank, size, others, None

    def gather(self, obj):
        return [obj if r == self.rank else self.others.get(r, (None, None))
                for r in range(self.size)]

    def abort(self, exc=None):
        self.aborted = exc


@pytest.mark.parametrize("n", [203, 193, 64, 5])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_each_rank_takes_its_share_of_every_batch(n, size):
    """The ranks' shares of each global batch (size x 16 rows of the epoch's
    order) are contiguous, disjoint and cover it; every share of a full batch
    has 16 rows; a short last batch is split evenly; the weights of a
    batch's shares add up to 1."""
    X, y = np.zeros((n, 3)), np.arange(n) % 2
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "softmax_cross_entropy", seed=0)
    data = _Data(net, X, y, (None, None), ("X_val", "y_val"))
    b = net.backend
    plans = [data.batches(b, 16, FakeComm(r, size)) for r in range(size)]
    assert len({len(p) for p in plans}) == 1
    covered = []
    for shares in zip(*plans):
        rows = [hi - lo for lo, hi, *_ in shares]
        assert sum(w for *_, w in shares) == pytest.approx(1.0)
        assert len({full for *_, full, _ in shares}) == 1  # the ranks capture alike
        if shares[0][4]:
            assert rows == [16] * size
        assert max(rows) - min(rows) <= 1
        for lo, hi, xb, _, _, _ in shares:
            assert (xb is None) == (hi == lo)
            covered.extend(range(lo, hi))
    assert covered == list(range(n))


# ------------------------------------------------------ agreeing on errors
def test_agreement_raises_the_lowest_failing_ranks_error_on_every_rank():
    failure = ("nnx", "InputValueError", "X_train contains 1 NaN", False)
    for rank in (0, 1):
        comm = FakeComm(rank, 3, others={1: (failure, None), 2: (failure, None)})
        error = nnx.InputValueError("X_train contains 1 NaN") if rank == 1 else None
        with pytest.raises(nnx.InputValueError) as info:
            distributed.agree(comm, error)
        assert str(info.value) == "X_train contains 1 NaN (on ranks 1, 2 of 3)"
        assert distributed.is_agreed(info.value)


def test_an_error_that_cannot_be_rebuilt_is_named():
    odd = ("nnx.train.trainer", "TrainingDiverged", "training diverged", False)
    with pytest.raises(DistributedError, match=r"^TrainingDiverged: training diverged "
                                               r"\(on rank 1 of 2\)$"):
        distributed.agree(FakeComm(0, 2, others={1: (odd, None)}), None)
    with pytest.raises(RuntimeError, match=r"^x \(on every rank\)$"):
        distributed.agree(FakeComm(0, 2, others={1: (odd, None)}), RuntimeError("x"))
    agreed = distributed.mark_agreed(RuntimeError("x (on rank 1 of 2)"))  # shared already
    with pytest.raises(RuntimeError, match=r"^x \(on rank 1 of 2\)$"):
        distributed.agree(FakeComm(0, 2, others={1: (odd, None)}), agreed)


def test_a_key_error_keeps_its_class_on_every_rank():
    """KeyError quotes its message in str(): it was rebuilt as a
    DistributedError, where the docs promise the same class."""
    failure = ("builtins", "KeyError", str(KeyError("k")), False)
    with pytest.raises(KeyError) as info:
        distributed.agree(FakeComm(0, 2, others={1: (failure, None)}), None)
    assert info.value.args == ("'k' (on rank 1 of 2)",)


def test_agreement_shares_the_facts_when_all_went_well():
    assert distributed.agree(FakeComm(1, 2, others={0: (None, "a")}), None, "b") == ["a", "b"]
    with distributed.agreement(distributed.LOCAL):  # alone: the error itself, untouched
        pass
    with pytest.raises(KeyError), distributed.agreement(distributed.LOCAL):
        raise KeyError("k")


def test_guard_ends_the_job_for_an_error_of_one_rank_only():
    comm = FakeComm(1, 2)
    with pytest.raises(RuntimeError), distributed.guard(comm):
        raise RuntimeError("a bug on rank 1")
    assert str(comm.aborted) == "a bug on rank 1"
    comm.aborted = None
    with pytest.raises(ValueError), distributed.guard(comm):
        raise distributed.mark_agreed(ValueError("every rank"))
    assert comm.aborted is None


# ------------------------------------ the NCCL communicator, on a stand-in CuPy
class FakeNccl:
    """Stands for ``cupy.cuda.nccl``: records what nnx asks of it."""

    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM, available = 7, 8, 0, True
    NCCL_INT32, NCCL_INT64, NCCL_FLOAT16, NCCL_UINT8 = 2, 4, 6, 1  # as NCCL numbers them

    def __init__(self):
        self.calls = []
        fake = self

        class NcclCommunicator:
            def __init__(self, n, uid, rank):
                fake.calls.append(("init", n, uid[:2], rank))

            def allReduce(self, send, recv, count, kind, op, stream):
                fake.calls.append(("allReduce", send, recv, count, kind, op, stream))

            def bcast(self, ptr, count, kind, root, stream):
                fake.calls.append(("bcast", ptr, count, kind, root, stream))

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self):
        return tuple(range(128))


def _fake_gpu(devices=4):
    """A backend object with a stand-in CuPy namespace: 4 GPUs, stream 1234."""
    from types import SimpleNamespace as NS
    used = []
    cuda = NS(runtime=NS(getDeviceCount=lambda: devices),
              Device=lambda n: NS(use=lambda: used.append(n)),
              get_current_stream=lambda: NS(ptr=1234))
    return NS(name="gpu", xp=NS(__name__="fakecupy", cuda=cuda)), used


def _array(dtype="float32", device=1, contiguous=True):
    from types import SimpleNamespace as NS
    return NS(data=NS(ptr=99), size=10, shape=(10,), dtype=NS(name=dtype, kind=dtype[0]),
              device=NS(id=device), flags=NS(c_contiguous=contiguous))


def test_nccl_broadcasts_the_integer_counts_a_fit_starts_with(monkeypatch):
    """A distributed fit's start broadcasts the optimiser's int64 step count
    (and a float16 loss scale's count of good steps): NCCL knew float32 and
    float64 alone, so every GPU data-parallel fit ended in KeyError 'int64'."""
    nccl = FakeNccl()
    monkeypatch.setattr(distributed, "_nccl_module", lambda xp: nccl)
    backend, _ = _fake_gpu()
    comm = distributed.NCCLCommunicator(World(0, 1, 1, "torchrun"), backend)
    comm.broadcast(_array("int64"))
    comm.broadcast(_array("int32"))
    assert [c[3] for c in nccl.calls if c[0] == "bcast"] == [4, 2]
    with pytest.raises(nnx.InputTypeError, match="NCCL takes arrays of .*got dtype uint16"):
        comm.broadcast(_array("uint16"))


def test_the_nccl_communicator_picks_its_gpu_and_reduces_on_the_current_stream(monkeypatch):
    nccl = FakeNccl()
    monkeypatch.setattr(distributed, "_nccl_module", lambda xp: nccl)
    backend, used = _fake_gpu()
    comm = distributed.NCCLCommunicator(World(0, 1, 5, "torchrun"), backend)
    assert used == [1] and comm.device == 1  # local rank 5 of 4 GPUs
    comm.allreduce(_array("float64"))
    comm.broadcast(_array("float32"))
    assert nccl.calls == [("init", 1, (0, 1), 0), ("allReduce", 99, 99, 10, 8, 0, 1234),
                          ("bcast", 99, 10, 7, 0, 1234)]
    assert comm.sum([1.5, 2]) == [1.5, 2.0] and comm.gather("x") == ["x"]
    with pytest.raises(nnx.InputValueError, match="must be contiguous"):  # NCCL would not see
        comm.allreduce(_array(contiguous=False))
    assert len(nccl.calls) == 3
    comm.check_backend(backend, _array(device=1))
    with pytest.raises(DistributedError, match=r"on GPU 0, but rank 0 .* trains on GPU 1: call "
                                               r"nnx.distributed.init\('gpu'\) before"):
        comm.check_backend(backend, _array(device=0))
    with pytest.raises(DistributedError, match=r"moves CuPy arrays"):
        comm.check_backend(nnx.get_backend("cpu"))


def test_nccl_gets_rank_0s_id_and_a_rank_without_nccl_fails_them_all(monkeypatch):
    """Rank 1 receives rank 0's unique id with the ranks' agreement; when
    NCCL cannot load on one rank, every rank raises its error."""
    nccl = FakeNccl()
    backend, _ = _fake_gpu()
    monkeypatch.setattr(distributed, "_nccl_module", lambda xp: nccl)
    uid = tuple(range(128))
    host = FakeComm(1, 2, others={0: (None, uid)})
    monkeypatch.setattr(distributed, "_host_channel", lambda here: host)
    distributed.NCCLCommunicator(World(1, 2, 1, "Open MPI"), backend)
    assert nccl.calls == [("init", 2, (0, 1), 1)]
    missing = ("nnx.distributed", "DistributedError", "CuPy cannot load NCCL", False)
    host = FakeComm(0, 2, others={1: (missing, None)})
    with pytest.raises(DistributedError, match=r"^CuPy cannot load NCCL \(on rank 1 of 2\)$"):
        distributed.NCCLCommunicator(World(0, 2, 0, "Open MPI"), backend)


def test_nccl_missing_and_a_launcher_mpi_cannot_see_are_explained():
    from types import SimpleNamespace as NS
    with pytest.raises(DistributedError, match=r"through NCCL, which CuPy cannot load"):
        distributed._nccl_module(NS(__name__="no_such_cupy"))
    lonely = NS(size=1, MPI=NS(Get_library_version=lambda: "Open MPI v5.0.3\nmore"))
    with pytest.raises(DistributedError, match=r"MPICH/Hydra started 2 processes, but MPI sees "
                                               r"a world of 1: mpi4py uses 'Open MPI v5.0.3'"):
        distributed._check_mpi_world(lonely, World(0, 2, 0, "MPICH/Hydra"))


# ------------------------------------------------------------ real MPI jobs
@functools.cache
def _mpi_problem():
    """Why the MPI jobs cannot run here, or None. mpi4py is loaded in a
    process of its own: loading it here would start MPI in the test process."""
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"],
                           capture_output=True, text=True)
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return (f"mpi4py cannot start MPI ({last}): pip install 'nnx-dl[mpi]' mpich (the "
                "mpich wheel brings an MPI library and its mpiexec)")
    beside = Path(sys.executable).parent / "mpiexec"
    if not beside.exists() and shutil.which("mpiexec") is None:
        return "no mpiexec on PATH or beside this Python: pip install mpich"
    return None


def _mpiexec():
    """The mpiexec of the MPI library mpi4py loads: the one beside this
    Python (the `mpich` wheel puts it there), else the first on PATH."""
    if _mpi_problem():
        pytest.skip(_mpi_problem())
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]))
    return env


def _run(cmd, env, cwd=None):
    """Run ``cmd`` in a process group of its own; a job that outlives
    TIMEOUT has hung: the whole group (launcher and ranks) is killed, and
    the test fails."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the job hung: still running after {TIMEOUT} s\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _job(args, n=2, cwd=None):
    """``mpiexec -n N ...``."""
    return _run([_mpiexec(), "-n", str(n), *args], _env(), cwd)


def _work(mode, out, *options, n=2):
    return _job([sys.executable, str(WORKER), mode, str(out), *options], n=n)


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.mark.parametrize("mode, user_set", [("threads", False), ("threads", True),
                                             ("threads-comm", False)])
def test_ranks_on_one_machine_share_its_cores(tmp_path, mode, user_set):
    """Two ranks of as many BLAS threads as cores ran 10-20x slower than with
    one each: init() (or a fit given an mpi4py communicator) gives each rank
    cores // ranks threads, unless the user chose a thread count (as the
    other tests here do)."""
    env = {k: v for k, v in _env().items() if k not in THREAD_VARIABLES}
    if user_set:
        env["OPENBLAS_NUM_THREADS"] = "1"
    job = _run([_mpiexec(), "-n", "2", sys.executable, str(WORKER), mode, str(tmp_path)],
               env)
    assert job.returncode == 0, job.stderr
    ranks = [json.loads((tmp_path / f"threads-{rank}.json").read_text()) for rank in (0, 1)]
    # MPICH leaves both ranks free on every core; Open MPI binds each to a core of its own
    overlap = bool(set(ranks[0]["cores"]) & set(ranks[1]["cores"]))
    for got in ranks:
        share = max(1, len(got["cores"]) // 2)
        if user_set:
            assert got["given"] is None and got["blas"] and set(got["blas"]) == {1}
        elif not overlap:  # cores of its own: nothing to divide
            assert got["given"] is None, got
        else:
            assert got["given"] == share
            assert got["blas"] and set(got["blas"]) == {share}, got
            assert got["update"] == share


def _single(batch, rows=203, keep=1.0, evaluate=True):
    """The reference: this process alone, with the doubled batch."""
    with threadpool_limits(1):
        net = worker.network(keep)
        history = worker.fit(net, batch, n=rows, evaluate=evaluate)
    return worker.params(net), history


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("rows, evaluate", [(203, True), (193, True), (193, False)],
                         ids=["short-last-batch", "one-row-last-batch", "no-evaluation-set"])
def test_two_processes_train_as_one_with_the_doubled_batch(tmp_path, rows, evaluate):
    """W=2, 16 rows per rank, float64, 2 epochs, dropout off: every parameter
    within 1e-10 (relative) of one process with batches of 32. The last
    batch of 11 rows is split 5/6; of 1 row, 0/1 (rank 0 then adds a zero
    gradient). Clipping acts on the all-reduced gradient, the evaluations
    on both ranks' shares of the validation rows (without them, the finite
    check on each rank's last batch is summed)."""
    job = _work("parity", tmp_path, "--batch", "16", "--rows", str(rows),
                *([] if evaluate else ["--no-val"]))
    assert job.returncode == 0, job.stderr
    expected, history = _single(32, rows, evaluate=evaluate)
    got = [np.load(tmp_path / f"run-{r}.npy") for r in (0, 1)]
    np.testing.assert_array_equal(got[0], got[1])  # one model, on both ranks
    assert _rel(got[0], expected) < 1e-10
    for rank in (0, 1):
        records = json.loads((tmp_path / f"run-{rank}.json").read_text())["records"]
        assert len(records) == len(history.records) == 2
        for mine, ref in zip(records, history.records):
            for key in ("train_loss", "loss", "accuracy", "lr"):
                if ref[key] is None:  # no evaluation set: newer pytest refuses approx(None)
                    assert mine[key] is None, key
                else:
                    assert mine[key] == pytest.approx(ref[key], rel=1e-12), key


def test_a_stop_asked_on_one_rank_stops_every_rank(tmp_path):
    job = _work("one-rank-stops", tmp_path)
    assert job.returncode == 0, job.stderr
    runs = [json.loads((tmp_path / f"run-{r}.json").read_text()) for r in (0, 1)]
    assert [r["epochs_run"] for r in runs] == [2, 2]
    np.testing.assert_array_equal(np.load(tmp_path / "run-0.npy"),
                                  np.load(tmp_path / "run-1.npy"))


def test_float16_ranks_train_as_one_process_with_the_doubled_batch(tmp_path):
    """Each rank's share of the batch weights the loss's gradient before the
    backward pass, so the float16 operands, their overflows and the loss
    scale are the single process's: the scale was 1024 against 2048, the
    last evaluation loss 2879 against 2697, when the weight came after."""
    job = _work("half", tmp_path, "--batch", "25")
    assert job.returncode == 0, job.stderr
    with threadpool_limits(1):
        want, losses, scale = worker.half_fit(50)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"half-{rank}.json").read_text())
        assert got["scale"] == scale
        np.testing.assert_allclose(got["losses"], losses, rtol=1e-5)
        np.testing.assert_allclose(np.load(tmp_path / f"half-{rank}.npy"), want, rtol=1e-4,
                                   atol=1e-5)


def test_one_mpi_process_trains_exactly_as_alone(tmp_path):
    job = _work("parity", tmp_path, "--batch", "32", n=1)
    assert job.returncode == 0, job.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "run-0.npy"), _single(32)[0])


def test_with_dropout_each_rank_draws_its_own_masks_reproducibly(tmp_path):
    runs = []
    for i in (1, 2):
        out = tmp_path / str(i)
        out.mkdir()
        job = _work("parity", out, "--batch", "16", "--keep", "0.8")
        assert job.returncode == 0, job.stderr
        runs.append([np.load(out / f"run-{r}.npy") for r in (0, 1)])
        streams = [json.loads((out / f"run-{r}.json").read_text())["generator"]
                   for r in (0, 1)]
        assert streams[0] != streams[1]  # each rank its own dropout stream
    np.testing.assert_array_equal(runs[0][0], runs[0][1])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])  # run to run
    # masks the single process would not draw: not the doubled-batch run's
    assert _rel(runs[0][0], _single(32, keep=0.8)[0]) > 1e-6


def _errors(out):
    return [json.loads((out / f"error-{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("mode, kind, message", [
    ("bad-input", "InputValueError",
     r"^X_train contains 1 NaN or infinite value\(s\) \(on rank 1 of 2\)$"),
    ("different-arguments", "InputValueError",
     r"^the ranks of a distributed fit must be given the same arguments, data and network: "
     r"batch_size=16 on rank 0 but 17 on rank 1$"),
    ("different-network", "InputValueError",  # was accepted, or a raw MPI error at the start
     r"network: layer 1's neurons 16 on rank 0 but 17 on rank 1, activation 'tanh' on rank 0 "
     r"but 'relu' on rank 1$"),
    ("diverge", "TrainingDiverged", r"^training diverged: the loss became NaN or infinite "
                                    r"in epoch 1; the parameters of the start were restored"),
])
def test_a_refusal_or_divergence_ends_every_rank_with_the_same_error(tmp_path, mode, kind,
                                                                     message):
    """Bad input on rank 1 alone, ranks given other arguments, a divergence:
    both ranks end, neither hangs, and both raise the same error."""
    job = _work(mode, tmp_path)
    assert job.returncode != 0
    first, second = _errors(tmp_path)
    assert first == second, (first, second)
    assert first["type"] == kind
    assert __import__("re").search(message, first["message"]), first["message"]


@pytest.mark.parametrize("what, message", [
    # a raw "MPI_Bcast: message sizes do not match" error: the sums saw no zero column
    ("width", r"X_train has shape \(203, 6\) on rank 0 but \(203, 7\) on rank 1"),
    # trained on, silently: the sums were of rows
    ("columns", r"^rank 1 was given other training or evaluation data than rank 0 \(other rows, "
                r"the same rows in another order, or the features in another order\)"),
    # a raw "MPI_Allreduce: message truncated": the ranks saved at other epochs
    ("checkpoint-every", r"network: callback \d \(Checkpoint\)'s every 1 on rank 0 but 2 on "
                         r"rank 1$"),
    # trained on, silently, with two loss scales in one sum
    ("loss-scaler", r"the network's loss scaler 'LossScaler\(init_scale=65536"),
    # reported as other data
    ("dtype", r"the network's dtype 'float64' on rank 0 but 'float32' on rank 1"),
    # trained on, silently: rank 0's fresh weights and optimiser beside rank 1's old state
    ("restart", r"restart True on rank 0 but False on rank 1"),
    # trained on, each rank keeping its own names: the same command could not resume
    ("column-names", r"columns \[\('p0', 'p1'.* on rank 0 but \[\('q0', 'q1'"),
])
def test_ranks_that_differ_are_refused_before_any_step(tmp_path, what, message):
    if what == "column-names":  # (the Open MPI environment of .ci/run has no pandas)
        pytest.importorskip("pandas")
    job = _work("mismatch", tmp_path, "--what", what)
    assert job.returncode != 0
    first, second = _errors(tmp_path)
    assert first == second, (first, second)
    assert first["type"] == "InputValueError"
    assert __import__("re").search(message, first["message"]), first["message"]


def test_ranks_may_reach_mpi_by_true_or_by_their_communicator(tmp_path):
    job = _work("mixed-kinds", tmp_path)
    assert job.returncode == 0, job.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "run-0.npy"), np.load(tmp_path / "run-1.npy"))


def test_printers_and_loggers_may_be_given_on_rank_0_alone(tmp_path):
    """verbose=comm.is_main was refused as other callbacks on the two ranks,
    though such callbacks run on rank 0 alone either way; a callback may hold
    settings of each rank's own; a warning about the data came once per rank."""
    job = _work("main-only", tmp_path)
    assert job.returncode == 0, job.stderr
    assert job.stderr.count("is far from standardised") == 1, job.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "run-0.npy"), np.load(tmp_path / "run-1.npy"))
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3  # a header, 2 epochs


def test_an_unexpected_error_on_one_rank_ends_the_whole_job(tmp_path):
    """A callback that raises on rank 1 alone: rank 1 prints it and aborts
    the job, so rank 0 does not wait for ever in its next all-reduce."""
    job = _work("crash", tmp_path)
    assert job.returncode != 0
    assert "rank 1 of 2 failed; ending every rank" in job.stderr
    assert "a callback failed on rank 1 only" in job.stderr
    assert not list(tmp_path.glob("finished-*"))


def test_ctrl_c_ends_the_job_with_one_line_and_status_130(tmp_path):
    """Each rank printed a KeyboardInterrupt traceback, and the job ended
    with status 1, where the single process says what it keeps and ends
    with 130."""
    job = _work("interrupt", tmp_path)
    assert job.returncode == 130, (job.returncode, job.stderr)
    assert "Traceback" not in job.stderr
    assert "nnx: interrupted on rank" in job.stderr
    assert "ending every rank of the job" in job.stderr


def test_a_resumed_distributed_run_ends_where_the_whole_one_does(tmp_path):
    job = _work("resume", tmp_path)
    assert job.returncode == 0, job.stderr
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"whole-{rank}.npy"),
                                      np.load(tmp_path / f"resumed-{rank}.npy"))
        whole, resumed = (json.loads((tmp_path / f"{name}-{rank}.json").read_text())
                          for name in ("whole", "resumed"))
        assert whole["records"] == resumed["records"]
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["part.npz"]  # rank 0 wrote it
    # alone, even with the same global batch, it cannot go on exactly: say how it can
    with pytest.raises(nnx.InputValueError, match=r"world_size=2 vs 1.*; the run was saved by "
                                                  r"2 processes: resume it with as many "
                                                  r"\(mpirun -n 2 \.\.\.\), each with the "
                                                  r"saved batch_size$"):
        worker.fit(worker.network(0.8), 32, epochs=4, resume=str(tmp_path / "part.npz"))


# ------------------------------------------------------ the command line
def test_mpiexec_nnx_train_prints_and_saves_one_model_of_the_doubled_batch(tmp_path):
    flags = ["--epochs", "3", "--eval-every", "1", "--dtype", "float64", "--quiet",
             "--hidden", "32", "--patience", "none"]
    job = _job([sys.executable, "-m", "nnx", "train", *flags, "--batch-size", "30",
                "--out", "two.npz", "--log", "two.csv"], cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert job.stdout.count("test accuracy") == 1 and job.stdout.count("saved") == 1
    assert "2 processes (batch 30 each)" in job.stdout
    assert len((tmp_path / "two.csv").read_text().splitlines()) == 4  # header, 3 epochs
    with threadpool_limits(1):
        assert cli.main(["train", *flags, "--batch-size", "60",
                         "--out", str(tmp_path / "one.npz")]) == 0
    two, one = (nnx.NeuralNetwork.load(tmp_path / f"{name}.npz") for name in ("two", "one"))
    assert _rel(two.backend.to_numpy(two.get_parameters()),
                one.backend.to_numpy(one.get_parameters())) < 1e-10


def test_warnings_about_the_data_come_from_rank_0_alone(tmp_path):
    """validation_split's warning of sorted labels came from every rank (it
    was given before the filter that quiets the others); under mpiexec, nnx
    train's warnings about the data file and its flags came once per rank."""
    job = _work("warnings", tmp_path)
    assert job.returncode == 0, job.stderr
    said = [json.loads((tmp_path / f"warnings-{r}.json").read_text()) for r in (0, 1)]
    assert any("held-out rows" in w for w in said[0]), said[0]
    assert any("only True stops" in w for w in said[0]), said[0]
    assert said[1] == []
    rows = "\n".join(f"{i},{i % 7 * 0.5},{i % 3}" for i in range(40))
    (tmp_path / "d.csv").write_text(",a,label\n" + rows + "\n")  # a pandas index column
    job = _job([sys.executable, "-m", "nnx", "train", "--data", "d.csv", "--epochs", "1",
                "--dropout", "0.2", "--quiet", "--out", "m.npz"], cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert job.stderr.count("holds the row numbers") == 1, job.stderr
    assert job.stderr.count("--dropout 0.2") == 1, job.stderr


def test_the_commands_of_one_process_refuse_a_launcher_once(tmp_path):
    """mpiexec -n 2 nnx evaluate printed its report twice, and nnx export had
    both ranks write the one file; nnx reproduce refused, once per rank."""
    assert cli.main(["train", "--epochs", "1", "--quiet", "--out", str(tmp_path / "m.npz")]) == 0
    for command in (["evaluate", "m.npz"], ["export", "m.npz", "m.onnx"],
                    ["reproduce", "--epochs", "1"]):
        job = _job([sys.executable, "-m", "nnx", *command], cwd=tmp_path)
        assert job.returncode == 2, job.stdout + job.stderr
        assert job.stderr.count(f"nnx {command[0]}: error: nnx {command[0]} runs in one "
                                "process, not in each of the 2") == 1, job.stderr
        assert "accuracy" not in job.stdout
    assert not (tmp_path / "m.onnx").exists()


def test_mpiexec_nnx_train_refuses_on_every_rank(tmp_path):
    job = _job([sys.executable, "-m", "nnx", "train", "--epochs", "1", "--hidden", "0"],
               cwd=tmp_path)
    assert job.returncode == 2  # every rank ends with status 2; rank 0 says why, once
    assert job.stderr.count("nnx train: error: --hidden '0': sizes must be positive "
                            "(on every rank)") == 1


# --------------------------------------------------------------- torchrun
def test_nccls_mpi_channel_carries_rank_0s_data_to_every_rank(tmp_path):
    """Under mpirun, NCCL's id and the host-side exchanges go through MPI."""
    job = _work("mpi-host", tmp_path)
    assert job.returncode == 0, job.stderr
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rendezvous-{rank}.json").read_text())
        assert got["world"] == [rank, 2, rank, "MPICH/Hydra"] or got["world"][:2] == [rank, 2]
        assert got["gathered"] == ["hello from 0", "hello from 1"]


def test_torchrun_carries_rank_0s_data_to_every_rank(tmp_path):
    """Under torchrun without MPI, NCCL's id travels through torch's TCP
    store; the exchange itself needs no GPU."""
    pytest.importorskip("torch.distributed")
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("no torchrun beside this Python")
    job = _run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(WORKER),
                "rendezvous", str(tmp_path)], _env())
    assert job.returncode == 0, job.stderr
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rendezvous-{rank}.json").read_text())
        assert got["world"] == [rank, 2, rank, "torchrun"]
        assert got["gathered"] == ["hello from 0", "hello from 1"]


# --------------------------------------------------------------------- GPU
@pytest.mark.gpu
@requires_gpu()
def test_nccl_with_one_process_trains_as_the_gpu_alone_inside_the_captured_step(no_launcher):
    """The NCCL communicator of a world of one: the same parameters as the
    GPU run without it, and its all-reduce recorded in the CUDA graph (the
    Python call happens twice, for the eager first step and the capture,
    however many steps replay it)."""
    if os.environ.get("NNX_EMULATED_GPU"):  # the dry run's CuPy stand-in has no NCCL
        pytest.skip("the emulated CuPy (tests/emulated_cupy.py) has no NCCL")
    import cupy
    try:  # CuPy imports its NCCL module without libnccl, marked unavailable
        distributed._nccl_module(cupy)
    except distributed.DistributedError as exc:
        pytest.skip(f"this machine's CuPy has no NCCL: {exc}")
    comm = distributed.init("gpu", engine="nccl")
    calls = []
    real = comm.allreduce
    comm.allreduce = lambda array: (calls.append(1), real(array))[1]
    X, y, Xv, yv = worker.data(n=320)
    runs = []
    for switch in (None, comm):
        net = nnx.NeuralNetwork([nnx.Dense(16, "tanh"), nnx.Dense(3, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=3, backend="gpu",
                                dtype="float64")
        history = nnx.Trainer(net, worker.optimizer()).fit(
            X, y, validation=(Xv, yv), epochs=3, eval_every=1, batch_size=32, seed=7,
            patience=None, distributed=switch)
        assert history.graph, history.graph_note
        runs.append(net.backend.to_numpy(net.get_parameters()))
    assert len(calls) == 2  # 30 steps: 2 in Python, 28 replayed from the graph
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-12, atol=0)


def test_the_data_fingerprint_tells_other_orders_from_other_layouts():
    """Ranks compare these sums before training: the same data in another
    memory layout must agree (float32 summed in another order), rows or
    labels in another order must not."""
    import math

    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")], "softmax_cross_entropy",
                            seed=0, dtype="float32")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 6)).astype(np.float32), rng.integers(0, 3, 300)
    X = (X - X.mean(axis=0)) / X.std(axis=0)  # every column sums to about 0
    b = net.backend

    def prints(X, y):
        return _Data(net, X, y, (None, None), ("X_val", "y_val")).fingerprint(b)

    same = prints(X, y)
    assert all(math.isclose(a, c, rel_tol=1e-9, abs_tol=1e-12)
               for a, c in zip(same, prints(np.asfortranarray(X), y)))
    try:  # on a device (its weights made there: made on the host, the strict one refused)
        import array_api_strict  # noqa: F401
    except ImportError:
        pass
    else:
        strict = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                                   "softmax_cross_entropy", seed=0, dtype="float32",
                                   backend="strict")
        there = _Data(strict, X, y, (None, None), ("X_val", "y_val")).fingerprint(strict.backend)
        assert all(math.isclose(a, c, rel_tol=1e-9, abs_tol=1e-12) for a, c in zip(same, there))
    rows = X.copy()
    rows[[10, 11]] = rows[[11, 10]]
    labels = y.copy()
    labels[[20, 30]] = labels[[30, 20]]
    assert labels[20] != labels[30]
    far = X.copy()  # rows 251 apart weighed alike
    far[[0, 251]] = far[[251, 0]]
    columns = X[:, [1, 0, 2, 3, 4, 5]]  # the features in another order
    counts = rng.integers(0, 4, size=(300, 6)).astype(np.float32)  # rows of equal sums
    counts[1] = counts[0][::-1]
    swapped = counts.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    pairs = [(prints(rows, y), same), (prints(X, labels), same), (prints(far, y), same),
             (prints(columns, y), same), (prints(swapped, y), prints(counts, y))]
    for other, want in pairs:
        assert not all(math.isclose(a, c, rel_tol=1e-9, abs_tol=1e-12)
                       for a, c in zip(want, other))



def test_a_second_fit_goes_on_with_fresh_dropout_masks(tmp_path):
    """restart=False continues a network: its second distributed fit must not
    draw the first fit's masks again (each rank reseeded them at every fit)."""
    job = _work("two-fits", tmp_path)
    assert job.returncode == 0, job.stderr
    for rank in (0, 1):
        first, second = json.loads((tmp_path / f"draws-{rank}.json").read_text())
        assert first != second


def test_a_log_path_refused_on_every_rank_ends_every_rank(tmp_path):
    """Refused at construction on rank 0 (or every rank but the others'
    own copy), the path left rank 1 waiting in fit's first collective."""
    job = _work("bad-log-path", tmp_path)
    assert job.returncode != 0
    assert job.stderr.count("CSVLogger path=") >= 1, job.stderr
    assert "Timeout" not in job.stderr


def test_ranks_go_on_from_rank_0s_optimiser_state_and_loss_scale(tmp_path):
    """Steps taken on rank 0 alone before a fit with restart=False: the
    parameters were broadcast, but not Adam's moments, its step count or the
    float16 loss scale (512 on one rank, 16 on the other, summed in one
    all-reduce): the ranks ended up to 2 apart, silently."""
    job = _work("rank-0-went-ahead", tmp_path)
    assert job.returncode == 0, job.stderr
    first, second = (np.load(tmp_path / f"params-{rank}.npy") for rank in (0, 1))
    np.testing.assert_array_equal(first, second)


def test_only_rank_0_checks_the_log_path(tmp_path, monkeypatch):
    """CSVLogger checked its folder on every rank: a rank whose file system
    refused it raised there, while rank 0 waited in the first collective."""
    (tmp_path / "logs").write_text("a file, not a folder")
    path = str(tmp_path / "logs" / "run.csv")
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "1")
    nnx.CSVLogger(path).check(net)
    monkeypatch.setenv("PMI_RANK", "0")  # refused inside fit's agreement: every rank hears it
    logger = nnx.CSVLogger(path)
    assert logger.path == path
    with pytest.raises(ValueError, match="CSVLogger path"):
        logger.check(net)
    monkeypatch.setenv("PMI_SIZE", "1")
    with pytest.raises(ValueError, match="CSVLogger path"):  # alone: at once
        nnx.CSVLogger(path)


def test_rank_0s_own_callbacks_neither_number_nor_run_on_the_other_ranks():
    """A main_only callback given on rank 0 alone numbered rank 0's every-rank
    callback of the same state_key 'counter#2', rank 1's 'counter': on resume
    rank 1's loaded rank 0's own state. And its check and close ran on every
    rank (a close that raised ended the job from both)."""
    from types import SimpleNamespace

    from nnx.train.trainer import _of_rank, _state_keys

    class Counter(nnx.Callback):
        state_key = "counter"

    class Own(Counter):
        main_only = True
    own, shared = Own(), Counter()
    assert _state_keys([own, shared])[id(shared)] == _state_keys([shared])[id(shared)] \
        == "counter"
    assert _state_keys([own, shared])[id(own)] == "counter#2"
    assert _of_rank([own, shared], SimpleNamespace(is_main=False)) == [shared]
    assert _of_rank([own, shared], SimpleNamespace(is_main=True)) == [own, shared]


def test_only_rank_0_checks_the_checkpoint_path(tmp_path, monkeypatch):
    """Rank 0 writes the checkpoints, so a rank whose file system cannot take
    the path (another node, no shared folder) must not refuse the run."""
    folder = str(tmp_path)  # a folder: no checkpoint can be written there
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setenv("PMI_SIZE", "2")
    nnx.Checkpoint(folder).check(net)
    # rank 0 refuses it when fit checks its callbacks, inside the ranks' agreement (refused
    # at construction, it left the other ranks waiting in the first collective)
    monkeypatch.setenv("PMI_RANK", "0")
    assert nnx.Checkpoint(folder).path == folder
    with pytest.raises(ValueError, match="checkpoint="):
        nnx.Checkpoint(folder).check(net)


def test_the_network_rank_0_and_another_rank_built_are_compared_in_words():
    """Every part of the network the ranks must share: a float16 rank beside
    a float32 one, another loss, another keep probability, a layer fewer (a
    float32 and a float16 rank trained two different models, silently)."""
    from nnx.train.trainer import _network_differences, _network_facts

    def net(precision="float32", loss=nnx.SoftmaxCrossEntropy, keep=1.0, layers=2):
        hidden = [nnx.Dense(8, "tanh", dropout=keep)] * (layers - 1)
        return nnx.NeuralNetwork([*hidden, nnx.Dense(3, "linear")], loss(), seed=0,
                                 precision=precision)
    base = _network_facts(net())
    assert _network_differences(base, _network_facts(net()), 1) == []
    assert _network_differences(base, _network_facts(net(precision="float16")), 1) == [
        "the network's precision 'float32' on rank 0 but 'float16' on rank 1"]
    loss = _network_differences(base, _network_facts(net(loss=nnx.MeanSquaredError)), 1)
    assert len(loss) == 1 and loss[0].startswith("the network's loss {'name': 'softmax_")
    assert _network_differences(base, _network_facts(net(keep=0.5)), 1) == [
        "layer 1's dropout 1.0 on rank 0 but 0.5 on rank 1"]
    assert _network_differences(base, _network_facts(net(layers=1)), 1) == [
        "2 layers on rank 0 but 1 on rank 1"]


@pytest.mark.parametrize("engine", ["local", "mpi"])
def test_the_collectives_refuse_what_they_cannot_reduce_in_place(engine):
    """A list, a strided view, a read-only array, a root beyond the ranks, a
    number for sum: clear errors (mpi4py said 'a bytes-like object is
    required' or 'dlpack: buffer is not contiguous'; raw NCCL would reduce
    the wrong memory of a strided CuPy array)."""
    if engine == "mpi":
        pytest.importorskip("mpi4py")
        comm = distributed.MPICommunicator()
    else:
        comm = distributed.LOCAL
    a = np.arange(6.0)
    frozen = a.copy()
    frozen.flags.writeable = False
    for call, error, message in [
            (lambda: comm.allreduce([1.0, 2.0]), nnx.InputTypeError,
             r"^allreduce takes an array \(NumPy on the CPU, CuPy on the GPU\), got list$"),
            (lambda: comm.allreduce(a[::2]), nnx.InputValueError, r"must be contiguous"),
            (lambda: comm.allreduce(frozen), nnx.InputValueError, r"which is read-only"),
            (lambda: comm.allreduce(np.array(["a"])), nnx.InputTypeError, r"dtype <U1"),
            (lambda: comm.broadcast(a, root=5), nnx.InputValueError,
             r"^broadcast root must be a rank from 0 to 0, got 5$"),
            (lambda: comm.sum(3), nnx.InputTypeError,
             r"^sum takes a list of numbers \(each summed over the ranks\), got 3$"),
            (lambda: comm.sum(["x"]), nnx.InputTypeError, r"got \['x'\]$")]:
        with pytest.raises(error, match=message):
            call()
    comm.allreduce(a)
    comm.broadcast(a, root=np.int64(0))  # a rank number from NumPy is a rank number
    np.testing.assert_array_equal(a, np.arange(6.0))
    assert comm.sum([1, 2.5]) == [1.0, 2.5]


def test_ranks_bound_to_cores_of_their_own_keep_them(monkeypatch):
    """The division is by the ranks that share this rank's cores: two ranks
    each bound to 4 cores of its own (srun -c 4, mpirun --bind-to) keep 4
    threads; two ranks free on all 8 get 4 each; the same with
    OMP_NUM_THREADS=0 or empty (no choice); a count the user set, nothing."""
    from nnx.backend import numpy_backend
    limits = []
    monkeypatch.setattr(numpy_backend, "limit_update_threads", limits.append)
    import threadpoolctl
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", lambda n, user_api: None)

    class Node:
        def __init__(self, sets):
            self.sets = sets

        def allgather(self, mine):
            return self.sets

        def Free(self):
            pass

    def shared(mine, everyone, env=None):
        for v in distributed._THREAD_VARIABLES:
            monkeypatch.delenv(v, raising=False)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(mine))
        comm = SimpleNamespace(MPI=SimpleNamespace(COMM_TYPE_SHARED=0),
                               comm=SimpleNamespace(Split_type=lambda kind: Node(everyone)))
        return distributed._share_cores_now(comm)
    bound = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert shared(range(4), bound) is None  # nothing to divide
    free = [list(range(8))] * 2
    assert shared(range(8), free) == 4 and limits == [4]
    assert shared(range(8), free, {"OMP_NUM_THREADS": "0"}) == 4
    assert shared(range(8), free, {"OMP_NUM_THREADS": ""}) == 4
    assert shared(range(8), free, {"OMP_NUM_THREADS": "2"}) is None


def test_a_network_of_ones_own_parts_is_compared_by_class_and_settings():
    """A layer of one's own without __repr__ was compared by its address,
    different on every rank: every distributed fit with one was refused.
    Now two equal such networks agree, and the built-in layers beside it
    keep their settings (an ELU's alpha) in the comparison."""
    from nnx.layers import Layer
    from nnx.train.trainer import _network_differences, _network_facts

    class Mine(Layer):  # no describe(), no __repr__
        def param_shapes(self, n_in):
            return [(n_in, self.neurons)]

    def net(alpha):
        return nnx.NeuralNetwork([nnx.Dense(8, nnx.ELU(alpha)), Mine(5),
                                  nnx.Dense(3, "linear")], nnx.SoftmaxCrossEntropy(), seed=0)
    assert _network_differences(_network_facts(net(1.0)), _network_facts(net(1.0)), 1) == []
    differ = _network_differences(_network_facts(net(1.0)), _network_facts(net(0.5)), 1)
    assert differ == ["layer 1's alpha 1.0 on rank 0 but 0.5 on rank 1"]


def test_a_subclass_with_the_documented_train_step_still_fits():
    """Trainer.fit called train_step(X, y, weight) in every fit, alone too: a
    NeuralNetwork subclass overriding the documented train_step(X, y) failed."""
    seen = []

    class Counting(nnx.NeuralNetwork):
        def train_step(self, X, y):
            seen.append(1)
            return super().train_step(X, y)
    net = Counting([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")], nnx.SoftmaxCrossEntropy(),
                   seed=0)
    X, y, _, _ = worker.data(n=60)
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1, batch_size=20)
    assert len(seen) == 3


def test_only_the_rank_that_writes_checks_where_the_files_go(tmp_path, monkeypatch):
    """nnx train under a launcher refused a run because rank 1 could not
    write --out, --checkpoint or --log, which rank 0 alone writes (nodes of
    their own file systems); fit's Checkpoint already checked on rank 0 only."""
    (tmp_path / "sub").write_text("a file where a folder is wanted")
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(
        ["train", "--epochs", "2", "--out", "sub/m.npz", "--checkpoint", "sub/run.npz",
         "--log", "sub/log.csv"])
    with pytest.raises(cli.UsageError, match=r"--out 'sub/m.npz'"):
        cli._train_flags(args)
    cli._train_flags(args, writes=False)  # another rank: nothing of its own to write
    args.out = "m.npz"
    with pytest.raises(cli.UsageError, match=r"--checkpoint 'sub/run.npz'"):
        cli._train_flags(args)
    args.checkpoint = None
    with pytest.raises(cli.UsageError, match=r"--log"):
        cli._train_flags(args)


def test_init_gpu_chooses_the_ranks_gpu_before_any_backend_is_made(monkeypatch):
    """init("gpu") made the GPU backend first, on GPU 0 (its cuBLAS handle
    and, in a reduced precision, its check's arrays), and only then chose
    the rank's GPU: every rank's handle lived on GPU 0."""
    import nnx.backend as backends
    from nnx.backend import cupy_backend
    nccl = FakeNccl()
    backend, used = _fake_gpu()
    made = []
    monkeypatch.setattr(distributed, "_nccl_module", lambda xp: nccl)
    monkeypatch.setattr(cupy_backend, "_import_cupy", lambda: backend.xp)
    monkeypatch.setattr(backends, "get_backend", lambda *a, **k: made.append(a))
    monkeypatch.setattr(distributed, "world", lambda: World(0, 1, 2, "torchrun"))
    monkeypatch.setattr(distributed, "_ACTIVE", {})
    comm = distributed.init("gpu", engine="nccl")
    assert comm.device == 2 and used == [2] and made == []
