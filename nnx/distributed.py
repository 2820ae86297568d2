"""Data-parallel training across processes: who this process is, read from
the launcher's environment (``mpirun``/``mpiexec`` of Open MPI or MPICH,
Slurm's ``srun``, ``torchrun``), which GPU it uses, and a communicator over
an engine that already exists: MPI through mpi4py for the CPU backend, NCCL
through CuPy for the GPU backend. ``Trainer.fit(..., distributed=...)`` uses
it; docs/distributed.md explains the whole.

The rules every collective here follows, so that no process waits for one
that will never come: each rank calls the same collectives in the same
order; a decision (stop, diverged, refused) is taken from numbers every rank
received from the same collective; an error one rank finds before training
is shared (``agree``) and raised on every rank with the same message; an
unexpected exception inside the loop ends the whole job (``guard``).

Neither engine is imported until it is asked for. NCCL is reached through
the GPU backend's own namespace (``backend.xp``), so CuPy is still imported
by the backend shim alone.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import math
import numbers
import os
import pickle
import sys
import time
import traceback
import types
from dataclasses import dataclass

from . import _checks
from ._checks import InputTypeError, InputValueError

INSTALL = "pip install 'nnx-dl[mpi]'"

# (launcher, rank, world size, local rank): the first whose rank and size are set wins.
# Slurm's size is the job step's (srun sets it), not SLURM_NTASKS, which a batch
# script sees too, with SLURM_PROCID=0, before any srun has started its tasks.
LAUNCHERS = (
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("MPICH/Hydra", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("Slurm srun", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"),
)


class DistributedError(RuntimeError):
    """Processes cannot train together, or one of them failed: the message
    says what is missing or which rank failed, and is the same on every rank."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes,
    ``local_rank`` among those on its machine (None where the launcher does
    not say), and the ``launcher`` that said so (None outside one)."""

    rank: int = 0
    size: int = 1
    local_rank: int | None = 0
    launcher: str | None = None


def world(environ=None) -> World:
    """The ``World`` of this process from the launcher's environment
    variables (``LAUNCHERS``, in that order); a world of one outside any
    launcher. A variable that is set but not a valid number is refused by name."""
    env = os.environ if environ is None else environ
    launchers = LAUNCHERS
    if "TORCHELASTIC_RUN_ID" in env:
        # torchrun is always the innermost launcher: its workers also inherit
        # the variables of an mpirun or srun that started torchrun itself
        launchers = sorted(LAUNCHERS, key=lambda entry: entry[0] != "torchrun")
    for launcher, rank_var, size_var, local_var in launchers:
        if rank_var not in env or size_var not in env:
            continue
        rank, size = _env_int(env, rank_var, 0), _env_int(env, size_var, 1)
        if rank >= size:
            raise DistributedError(f"{launcher}: {rank_var}={rank} is not below "
                                   f"{size_var}={size}")
        local = _env_int(env, local_var, 0) if local_var in env else None
        return World(rank, size, local, launcher)
    return World()


def _env_int(env, name, minimum):
    text = env[name]
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise DistributedError(f"the environment variable {name}={text!r} is not an integer "
                               f">= {minimum}")
    return value


# ------------------------------------------------------------ communicators
class Communicator:
    """What ``Trainer.fit`` needs from the processes that train one model:
    this rank, the world size, and five collectives. This base class is the
    world of one process, where each is a no-op; it needs no engine.

    ``allreduce`` sums a device array in place over the ranks (the gradient
    buffer, once a step); ``broadcast`` copies rank ``root``'s array into
    everyone's (the starting weights); ``sum`` adds host numbers over the
    ranks (evaluation sums, decisions); ``gather`` gives every rank the list
    of every rank's plain-data object; ``abort`` ends every process of the
    job after printing why. ``device`` is the GPU this rank uses (None on the CPU);
    ``threads``, the BLAS threads ``init`` gave this rank where several ranks
    share a machine's cores (None: left as they were)."""

    engine = "local"
    rank, size, local_rank, device, threads = 0, 1, 0, None, None

    def __repr__(self):
        device = "" if self.device is None else f", device={self.device}"
        return (f"{type(self).__name__}(rank={self.rank}, size={self.size}, "
                f"local_rank={self.local_rank}{device})")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that prints and writes files."""
        return self.rank == 0

    def check_backend(self, backend, where=None):
        """Refuse a backend (and, for a GPU, a device) this engine cannot serve."""

    def allreduce(self, array):
        """Sum ``array`` (a device array) over the ranks, in place. Every
        rank passes an array of the same shape and dtype (MPI and NCCL cannot
        tell; MPI ends the job)."""
        self._buffer(array, "allreduce")

    def broadcast(self, array, root=0):
        """Copy rank ``root``'s ``array`` into every rank's, in place."""
        self._buffer(array, "broadcast")
        self._root(root)

    def sum(self, values):
        """The element-wise sum over the ranks of a list of numbers (floats)."""
        return self._numbers(values)

    # the arguments, checked before an engine sees them (whose own errors say
    # little, or, as raw NCCL would on a strided array, nothing at all)
    @staticmethod
    def _buffer(array, what):
        flags = getattr(array, "flags", None)
        if flags is None or not hasattr(array, "dtype") or not hasattr(array, "shape"):
            raise InputTypeError(f"{what} takes an array (NumPy on the CPU, CuPy on the GPU), "
                                 f"got {type(array).__name__}")
        if not flags.c_contiguous:
            raise InputValueError(f"{what} works in place on the array's memory, which must be "
                                  "contiguous: pass a contiguous copy (np.ascontiguousarray) "
                                  "and use that copy afterwards")
        if not getattr(flags, "writeable", True):
            raise InputValueError(f"{what} writes the result into the array, which is "
                                  "read-only: pass a writable copy")
        if array.dtype.kind not in "fiu":
            raise InputTypeError(f"{what} takes an array of numbers, got dtype {array.dtype}")

    def _root(self, root):
        if isinstance(root, bool) or not isinstance(root, numbers.Integral) \
                or not 0 <= root < self.size:
            raise InputValueError(f"broadcast root must be a rank from 0 to {self.size - 1}, "
                                  f"got {root!r}")

    @staticmethod
    def _numbers(values):
        try:
            items = list(values)
        except TypeError:
            items = None
        if items is None or isinstance(values, (str, bytes)) or not all(
                isinstance(v, numbers.Real) or getattr(v, "ndim", None) == 0 for v in items):
            raise InputTypeError(f"sum takes a list of numbers (each summed over the ranks), "
                                 f"got {values!r}"[:200])
        return [float(v) for v in items]

    def gather(self, obj):
        """Every rank's ``obj`` (plain, picklable data), in rank order, on every rank."""
        return [obj]

    def abort(self, exc=None):
        """End every process of the job, after printing ``exc`` and its traceback
        (a KeyboardInterrupt: one line, and the status 130)."""
        _report(self, exc)
        os._exit(_exit_code(exc))


LOCAL = Communicator()


class MPICommunicator(Communicator):
    """MPI through mpi4py, over NumPy arrays: the CPU backend's engine.
    ``comm`` is an mpi4py communicator (default ``MPI.COMM_WORLD``)."""

    engine = "mpi"

    def __init__(self, comm=None, local_rank=None):
        MPI = _import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = _local_rank(MPI, self.comm) if local_rank is None else local_rank

    def check_backend(self, backend, where=None):
        if backend.name != "cpu":
            raise DistributedError(
                f"the MPI communicator moves NumPy arrays (backend 'cpu'); this network is on "
                f"backend {backend.name!r}: for the GPU call nnx.distributed.init('gpu') "
                "(NCCL) before creating the network")

    def allreduce(self, array):
        self._buffer(array, "allreduce")
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def broadcast(self, array, root=0):
        self._buffer(array, "broadcast")
        self._root(root)
        self.comm.Bcast(array, root=root)

    def sum(self, values):
        buf = array.array("d", self._numbers(values))
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return list(buf)

    def gather(self, obj):
        return self.comm.allgather(obj)

    def abort(self, exc=None):
        _report(self, exc)
        self.comm.Abort(_exit_code(exc))
        os._exit(_exit_code(exc))  # MPICH's returns before the launcher ends this process


class NCCLCommunicator(Communicator):
    """NCCL through CuPy, over CuPy arrays on this rank's GPU: the GPU
    backend's engine. The collectives run on the current CUDA stream, so a
    recorded training step records its all-reduce too. NCCL's unique id goes
    from rank 0 to the others through MPI (under ``mpirun``/``srun``, with
    mpi4py) or through torchrun's own TCP store (under ``torchrun``); the
    small host-side exchanges (``gather``, ``sum``) use the same channel."""

    engine = "nccl"

    def __init__(self, world, backend):
        xp = backend.xp
        self.xp, self.rank, self.size = xp, world.rank, world.size
        self._host = _host_channel(world)
        local = world.local_rank
        if local is None:
            local = self._host.local_rank if self._host is not None else world.rank
        self.local_rank = local
        error = uid = None
        try:  # this rank's GPU and NCCL: a rank without them fails every rank, not alone
            self._nccl = _nccl_module(xp)  # first: without NCCL, that is what to say
            self.device = _select_device(xp, local)
            uid = self._nccl.get_unique_id() if self.rank == 0 else None
        except Exception as exc:
            error = exc
        if self.size > 1:  # rank 0's id goes to every rank with the outcome
            uid = agree(self._host, error, uid)[0]
        elif error is not None:
            raise error
        self._comm = self._nccl.NcclCommunicator(self.size, uid, self.rank)

    def check_backend(self, backend, where=None):
        if backend.name != "gpu":
            raise DistributedError(
                f"the NCCL communicator moves CuPy arrays (backend 'gpu'); this network is on "
                f"backend {backend.name!r}: for the CPU call nnx.distributed.init('cpu') (MPI)")
        if where is not None and int(where.device.id) != self.device:
            raise DistributedError(
                f"the network's parameters are on GPU {int(where.device.id)}, but rank "
                f"{self.rank} (local rank {self.local_rank}) trains on GPU {self.device}: call "
                "nnx.distributed.init('gpu') before creating the network, so that it is "
                "built on this rank's GPU")

    # NCCL's element types by NumPy's names: the parameters and gradients, and the
    # integer step count and loss-scale count that a fit's start broadcasts
    _KINDS = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16",
              "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8"}

    def _kind(self, array):
        name = self._KINDS.get(array.dtype.name)
        if name is None:
            raise InputTypeError(f"NCCL takes arrays of {sorted(self._KINDS)}, got dtype "
                                 f"{array.dtype.name}")
        return getattr(self._nccl, name)

    def _stream(self):
        return self.xp.cuda.get_current_stream().ptr  # the capturing stream while recording

    def allreduce(self, array):
        self._buffer(array, "allreduce")
        ptr = array.data.ptr
        self._comm.allReduce(ptr, ptr, array.size, self._kind(array), self._nccl.NCCL_SUM,
                             self._stream())

    def broadcast(self, array, root=0):
        self._buffer(array, "broadcast")
        self._root(root)
        self._comm.bcast(array.data.ptr, array.size, self._kind(array), root, self._stream())

    def sum(self, values):
        rows = self.gather(self._numbers(values))
        return [math.fsum(col) for col in zip(*rows)]  # one order, on every rank

    def gather(self, obj):
        return [obj] if self.size == 1 else self._host.gather(obj)

    def abort(self, exc=None):
        _report(self, exc)
        if self._host is not None:
            self._host.abort(_exit_code(exc))  # MPI_Abort, where MPI started the job
        self._comm.abort()
        os._exit(_exit_code(exc))  # torchrun then stops the other workers


# ------------------------------------------------------------ set-up
_ACTIVE: dict = {}


def init(backend="cpu", engine=None):
    """The communicator of this process, made once and then returned again.

    ``backend`` ("cpu", "gpu" or a Backend) chooses the engine: MPI
    (mpi4py) for the CPU, NCCL (CuPy) for the GPU. Outside a launcher the
    world is one process and no engine is needed (``engine="nccl"`` or
    ``"mpi"`` forces one anyway, e.g. to test it). For the GPU, this also
    makes GPU ``local_rank % device count`` this process's current device:
    call it before creating the network, so that the network is built there.
    Raises ``DistributedError`` saying what is missing."""
    from .backend import Backend, get_backend
    if isinstance(backend, Backend):
        b = backend
    elif backend == "gpu":  # CuPy alone: the backend is made on this rank's GPU, once chosen
        from .backend.cupy_backend import _import_cupy
        b = types.SimpleNamespace(name="gpu", xp=_import_cupy())
    else:
        b = get_backend(backend)
    here = world()
    if engine is None:
        engine = "local" if here.size == 1 and here.launcher is None else (
            "nccl" if b.name == "gpu" else "mpi")
    engine = _checks.name_in("engine", engine, ("local", "mpi", "nccl"))
    if engine not in _ACTIVE:
        _ACTIVE[engine] = _make(engine, here, b)
    return _ACTIVE[engine]


def _make(engine, here, b):
    if engine == "local":
        return LOCAL
    if engine == "nccl":
        if b.name != "gpu":
            raise DistributedError(f"engine 'nccl' runs on the GPU backend, not {b.name!r}")
        return NCCLCommunicator(here, b)
    if here.launcher == "torchrun" and here.size > 1:
        raise DistributedError(
            "the CPU backend trains across processes through MPI, and torchrun starts no MPI "
            "job: launch with mpirun/mpiexec or srun instead, or train on the GPU (NCCL)")
    # local rank by MPI (a collective), as a communicator passed to fit() finds it:
    # ranks that reach MPI by either way then make the same collectives
    comm = MPICommunicator()
    _check_mpi_world(comm, here)
    comm.threads = _share_cores(comm)
    return comm


# a thread count the user chose for the BLAS (or OpenMP): left as it is
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def _share_cores(comm):
    """The ranks of ``comm`` on one machine share its cores: each gets its
    cores (those it may run on) over the number of processes that may run on
    them too (at least 1) as BLAS threads and update threads. Without this,
    two ranks of two BLAS threads each on two cores measured 10-20x slower
    than one thread each (torchrun, alike, sets OMP_NUM_THREADS=1 where it
    starts several processes a machine). A launcher that binds each rank to
    cores of its own (srun -c, mpirun --bind-to) leaves nothing to divide.
    Skipped where the user set one of ``_THREAD_VARIABLES`` (0 or empty is
    no choice). Returns the count, or None if unchanged."""
    if "threads" in _SHARED:  # once a process (each fit given an mpi4py communicator asks)
        return _SHARED["threads"]
    _SHARED["threads"] = threads = _share_cores_now(comm)
    return threads


_SHARED: dict = {}


def _share_cores_now(comm):
    mine = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(
        range(os.cpu_count() or 1))
    # the collective first, on every rank alike, whatever each then decides
    node = comm.comm.Split_type(comm.MPI.COMM_TYPE_SHARED)  # its ranks on this machine
    try:
        everyone = node.allgather(sorted(mine))
    finally:
        node.Free()
    if any(os.environ.get(v, "").strip() not in ("", "0") for v in _THREAD_VARIABLES):
        return None
    sharing = sum(1 for cores in everyone if mine & set(cores))  # this rank included
    if sharing < 2:
        return None
    threads = max(1, len(mine) // sharing)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency, so normally there
        threadpool_limits = None
    if threadpool_limits is not None:
        threadpool_limits(threads, user_api="blas")  # for the rest of the process
    from .backend import numpy_backend
    numpy_backend.limit_update_threads(threads)
    return threads


def resolve(distributed, backend):
    """What ``fit(distributed=...)`` means: None or False, this process alone
    (None also warns when a launcher started several processes); True,
    ``init(backend)``; a ``Communicator``, itself; an mpi4py communicator,
    MPI over it."""
    if distributed is None or distributed is False:
        try:
            here = world()
        except DistributedError:  # a launcher's variables this run does not use
            here = World()
        if distributed is None and here.size > 1:
            _checks.warn_caller(
                f"this process is rank {here.rank} of {here.size} ({here.launcher}), but fit() "
                "was not given distributed=...: each process trains a model of its own; pass "
                "distributed=True to train one model together, or False to silence this",
                UserWarning)
        return LOCAL
    if distributed is True:
        return init(backend)
    if isinstance(distributed, Communicator):
        return distributed
    if all(hasattr(distributed, a) for a in ("Allreduce", "Get_size", "allgather")):
        comm = MPICommunicator(distributed)
        if comm.size > 1:  # among its own ranks: a collective over COMM_WORLD could hang
            comm.threads = _share_cores(comm)
        return comm
    raise InputTypeError(f"distributed must be True, False, None, an nnx.distributed."
                         f"Communicator or an mpi4py communicator, got {distributed!r}")


def _import_mpi():
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:  # not installed, or no MPI library it can load
        raise DistributedError(
            f"training across processes needs MPI through mpi4py, which cannot start "
            f"({exc}): {INSTALL} (and the 'mpich' wheel for an MPI library with its mpiexec, "
            "if the machine has none)") from None
    return MPI


def _local_rank(MPI, comm):
    """This rank's number among the ranks that share its machine's memory."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


def _check_mpi_world(comm, here):
    """MPI must see the job the launcher started: a world of 1 under a
    launcher of 2 is mpi4py built for another MPI than that launcher's."""
    if here.launcher in (None, "torchrun") or comm.size == here.size:
        return
    version = comm.MPI.Get_library_version().strip().splitlines()[0].strip()
    raise DistributedError(
        f"{here.launcher} started {here.size} processes, but MPI sees a world of {comm.size}: "
        f"mpi4py uses {version!r}, not the MPI library whose launcher started this job; "
        "start it with the mpiexec of that library (python -m mpi4py --mpi-library shows it)")


class _MPIHost:
    """Host-side exchanges of the NCCL communicator through MPI."""

    def __init__(self, here):
        self.MPI = _import_mpi()
        self.comm = self.MPI.COMM_WORLD
        self.size = self.comm.Get_size()
        _check_mpi_world(self, here)
        self.local_rank = _local_rank(self.MPI, self.comm)

    def gather(self, obj):
        return self.comm.allgather(obj)

    def abort(self, code=1):
        self.comm.Abort(code)


class _StoreHost:
    """Host-side exchanges through torchrun's TCP store (torch is installed
    wherever torchrun is): rank 0, or torchrun's agent, serves it at
    MASTER_ADDR:MASTER_PORT, and every exchange has keys of its own."""

    def __init__(self, here):
        try:
            from datetime import timedelta

            from torch.distributed import TCPStore
        except ImportError as exc:
            raise DistributedError(f"under torchrun, nnx passes NCCL's id through torch's "
                                   f"TCPStore, and torch cannot be imported ({exc})") from None
        env = os.environ
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not env.get(v)]
        if missing:
            raise DistributedError(f"torchrun's rendezvous needs {' and '.join(missing)} in "
                                   "the environment")
        agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        self.store = TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), here.size,
                              is_master=not agent and here.rank == 0,
                              # long enough for rank 0 to download and prepare a
                              # dataset while the others wait for its turn to end
                              timeout=timedelta(hours=1), multi_tenant=not agent)
        self.rank, self.size, self.local_rank = here.rank, here.size, None
        self.prefix = f"nnx/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        self.calls = 0

    def gather(self, obj):
        self.calls += 1
        key = f"{self.prefix}{self.calls}/"
        self.store.set(key + str(self.rank), pickle.dumps(obj))
        return [pickle.loads(self.store.get(key + str(r))) for r in range(self.size)]

    def abort(self, code=1):
        pass  # torchrun stops the other workers when this one exits


def _host_channel(here):
    """How the NCCL communicator's ranks exchange host data, or None alone."""
    if here.size == 1:
        return None
    if here.launcher == "torchrun":
        return _StoreHost(here)
    try:
        return _MPIHost(here)
    except DistributedError as exc:
        raise DistributedError(
            f"NCCL's ranks need a way to pass its id from rank 0: under {here.launcher} that "
            f"is MPI through mpi4py ({exc}); or launch with torchrun") from None


def _select_device(xp, local_rank):
    """Make GPU ``local_rank % device count`` current; returns its number."""
    count = int(xp.cuda.runtime.getDeviceCount())
    device = local_rank % count
    xp.cuda.Device(device).use()
    return device


def _nccl_module(xp):
    """``cupy.cuda.nccl``, named through the backend's namespace."""
    try:
        nccl = importlib.import_module(f"{xp.__name__}.cuda.nccl")
    except ImportError as exc:
        nccl, why = None, exc
    else:
        why = "CuPy found no NCCL library"
    if nccl is None or not getattr(nccl, "available", True):
        raise DistributedError(
            f"the GPU backend trains across processes through NCCL, which CuPy cannot load "
            f"({why}): pip install nvidia-nccl-cu12 (or -cu13), or install NCCL system-wide")
    return nccl


# ------------------------------------------------- agreeing, failing together
def mark_agreed(exc):
    """Mark ``exc`` as raised on every rank alike (``guard`` lets it pass)."""
    exc._nnx_agreed = True
    return exc


def is_agreed(exc):
    return getattr(exc, "_nnx_agreed", False)


def agree(comm, error=None, facts=None):
    """Every rank says whether it failed (``error``, an exception or None)
    and shares ``facts`` (plain data). If any rank failed, every rank raises
    the error of the lowest failing rank, with the same message naming that
    rank (an error already agreed keeps its message); else returns every
    rank's facts, in rank order. One collective, whatever happened: call it
    on every rank. In a world of one, ``error`` is raised as it is."""
    if comm.size == 1:
        if error is not None:
            raise error
        return [facts]
    mine = None if error is None else (type(error).__module__, type(error).__qualname__,
                                       str(error), is_agreed(error))
    shared = comm.gather((mine, facts))
    failed = [(r, e) for r, (e, _) in enumerate(shared) if e is not None]
    if failed:
        raise _rebuilt(failed, comm.size) from error
    return [f for _, f in shared]


def _rebuilt(failed, size):
    """The exception of the lowest failing rank, as every rank raises it."""
    ranks = [r for r, _ in failed]
    rank, (module, name, message, agreed) = failed[0]
    where = ("every rank" if len(ranks) == size else f"rank {rank} of {size}"
             if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))} of {size}")
    text = message if agreed else f"{message} (on {where})"
    exc = None
    try:
        cls = sys.modules.get(module) or importlib.import_module(module)
        for part in name.split("."):
            cls = getattr(cls, part)
        if isinstance(cls, type) and issubclass(cls, Exception):
            exc = cls(text)
    except Exception:  # a class that cannot be rebuilt from its message alone
        exc = None
    # KeyError's str() quotes its message: the rebuilt one must carry the text itself
    if exc is None or (str(exc) != text and exc.args[:1] != (text,)):
        exc = DistributedError(f"{name}: {text}")
    return mark_agreed(exc)


class agreement:
    """``with agreement(comm) as a: ...``: the block runs on every rank
    without collectives of its own; at its end the ranks ``agree``, so an
    error on any rank is raised on all (marked agreed), and ``a.facts``
    (set inside) becomes ``a.shared``, every rank's facts."""

    def __init__(self, comm):
        self.comm, self.facts, self.shared = comm, None, None

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and not issubclass(kind, Exception):
            return False  # KeyboardInterrupt and the like: guard() ends the job
        if self.comm.size == 1:
            return False
        self.shared = agree(self.comm, exc, self.facts)
        return False


@contextlib.contextmanager
def guard(comm):
    """Around the training loop: an exception that only this rank may have
    raised (anything not marked agreed) would leave the others waiting in
    their next collective, so it ends every process (``comm.abort``) after
    printing it. Agreed exceptions pass; a world of one is left alone."""
    try:
        yield
    except BaseException as exc:
        if comm.size > 1 and not is_agreed(exc):
            comm.abort(exc)
        raise


def _exit_code(exc):
    """The job's exit status: 130 for Ctrl-C, as a shell gives, else 1."""
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def _report(comm, exc):
    if exc is None:
        return
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, which the launcher passes to every rank
        hint = ("; where the run wrote a checkpoint (fit(checkpoint=...), nnx train "
                "--checkpoint), it holds the last evaluation's state, and the same run with "
                "resume (--resume) goes on from it" if comm.rank == 0 else "")
        sys.stderr.write(f"nnx: interrupted on rank {comm.rank} of {comm.size}; ending every "
                         f"rank of the job{hint}\n")
    else:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"nnx: rank {comm.rank} of {comm.size} failed; ending every rank of "
                         f"the job ({type(exc).__name__}: {exc})\n{text}")
    sys.stderr.flush()
    # the launcher forwards each rank's output through a pipe, and ending the
    # job closes them at once: give it a moment to pass this message on
    time.sleep(0.5)
