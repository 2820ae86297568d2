"""Many models at once on a Dask cluster (the optional ``dask`` extra): the
ladder's steps as Dask tasks, and scikit-learn searches through joblib's Dask
backend. Either way the data goes to each worker once, not once per task.

``connect`` gives a client: on a new local cluster of worker processes, or on
a running scheduler. ``map_shared`` runs one function per item with a large
shared argument; ``fit_search`` fits a ``GridSearchCV``/``RandomizedSearchCV``
(or any scikit-learn estimator whose ``fit`` uses joblib) on the workers."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import numbers

from ._checks import InputTypeError, InputValueError

INSTALL = "pip install 'nnx-dl[dask]'"
_ARG_NAMES = ("workers=", "scheduler=")


class ClusterError(RuntimeError):
    """The cluster, not the work, failed: a worker died or left (out of memory,
    killed, its machine gone) and took tasks or shared data with it."""


_NO_GUARD = ("Worker processes start fresh and import the script that started them: in a "
             "script, start the cluster under `if __name__ == \"__main__\":` "
             "(see docs/cluster.md)")


def _distributed(what):
    """The ``distributed`` package, or an ImportError that says how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"{what} needs dask.distributed, which is not installed "
                          f"({exc}): {INSTALL}") from None
    return distributed


def check_options(workers=None, scheduler=None, names=_ARG_NAMES):
    """Refuse a bad cluster choice before any work starts: exactly one of
    ``workers`` (a positive number of local worker processes) and
    ``scheduler`` (the address of a running scheduler), and dask.distributed
    installed. ``names`` are how the messages spell the two options
    (``("--workers ", "--scheduler ")`` on the command line)."""
    wname, sname = names
    if workers is not None and scheduler is not None:
        raise InputValueError(f"{wname}{workers!r} and {sname}{scheduler!r}: give one of them "
                              f"({wname.strip(' =')} starts a local cluster, "
                              f"{sname.strip(' =')} connects to a running one)")
    if workers is None and scheduler is None:
        raise InputValueError(f"give {wname.strip(' =')} (a local cluster) or "
                              f"{sname.strip(' =')} (the address of a running one)")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral):
            raise InputTypeError(f"{wname}{workers!r}: expected a whole number of processes")
        if workers < 1:
            raise InputValueError(f"{wname}{workers!r}: must be a positive integer "
                                  "(the number of worker processes)")
        _distributed(f"{wname}{workers!r}")
    else:
        expected = "expected a scheduler address such as 'tcp://host:8786'"
        if not isinstance(scheduler, str):
            raise InputTypeError(f"{sname}{scheduler!r}: {expected}")
        if not scheduler.strip():  # Client("") would start a local cluster of its own
            raise InputValueError(f"{sname}{scheduler!r}: {expected}")
        _distributed(f"{sname}{scheduler!r}")
        from distributed.comm.addressing import get_address_host_port
        try:  # refused here: a Client given a malformed address hangs for a minute on exit
            _, port = get_address_host_port(scheduler)
        except ValueError as exc:
            raise InputValueError(f"{sname}{scheduler!r}: {exc}; {expected}") from None
        if not 0 < port < 65536:
            raise InputValueError(f"{sname}{scheduler!r}: port {port} is not a TCP port "
                                  f"(1 to 65535); {expected}")


def _ask_scheduler(address):
    """Check that a Dask scheduler answers at ``address`` within Dask's connect
    timeout (``distributed.comm.timeouts.connect``, 30 s by default), or raise
    an OSError that says what is there instead. A Client alone waits without
    limit on a port that accepts the connection and says nothing, and fails
    deep inside its protocol on a port where something else answers."""
    import asyncio

    import dask
    from dask.utils import parse_timedelta
    from distributed.core import rpc
    from distributed.security import Security
    seconds = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    # as a Client connects: with the TLS settings of Dask's configuration, if any
    options = Security().get_connection_args("client")

    async def identity():
        async with rpc(address, timeout=seconds, connection_args=options) as scheduler:
            return await scheduler.identity()

    prefix = f"could not connect to the Dask scheduler at {address!r}"
    try:
        # a loop of its own, in a thread of its own: the caller's thread may
        # already run one (a notebook's), where asyncio.run is refused
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(asyncio.run, asyncio.wait_for(identity(), seconds)).result()
    except (asyncio.TimeoutError, TimeoutError):
        raise OSError(f"{prefix}: no answer within {seconds:g} s (Dask's connect timeout, "
                      "distributed.comm.timeouts.connect); is a Dask scheduler "
                      "listening on that port?") from None
    except (OSError, TypeError) as exc:  # a wrong address, no scheduler there (yet), or
        # tls:// without Dask's TLS settings ("TLS expects a ssl_context")
        raise OSError(f"{prefix} ({exc})") from None
    except Exception as exc:  # something else answered, in another protocol
        raise OSError(f"{prefix}: what answered there is not a Dask scheduler "
                      f"({type(exc).__name__}: {str(exc)[:200]})") from None
    kind = answer.get("type") if isinstance(answer, dict) else None
    if kind != "Scheduler":
        raise OSError(f"{prefix}: what answered there is a Dask {kind or 'peer'}, not a "
                      "scheduler (give the scheduler's address, as its log prints it)")


@contextlib.contextmanager
def connect(workers=None, scheduler=None, **cluster_options):
    """A ``distributed.Client``: on a new ``LocalCluster`` of ``workers``
    processes with one thread each (closed on exit), or on the running
    scheduler at ``scheduler`` such as ``'tcp://host:8786'`` (only the client
    is closed on exit). ``cluster_options`` go to ``LocalCluster``."""
    if "n_workers" in cluster_options:  # LocalCluster's name for it: named before the rest
        given = f"workers={workers!r} and " if workers is not None else ""
        raise InputValueError(f"connect: {given}n_workers={cluster_options['n_workers']!r}: "
                              "give the number of processes once, as workers=")
    check_options(workers, scheduler)
    if scheduler is not None and cluster_options:
        raise InputValueError(f"connect: {', '.join(sorted(cluster_options))} would go to a "
                              "new LocalCluster, and scheduler= connects to a running one")
    from distributed import Client, LocalCluster
    if scheduler is not None:
        _ask_scheduler(scheduler)
        try:
            client = Client(scheduler, set_as_default=False)
        except OSError as exc:  # it went away since it answered
            raise OSError(f"could not connect to the Dask scheduler at {scheduler!r} "
                          f"({exc})") from None
        with client:
            yield client
        return
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # a worker process importing the script that started it, as spawn does:
        # one line here, and the script's own process says the rest
        raise ClusterError(_NO_GUARD)
    options = {"n_workers": workers, "threads_per_worker": 1, "processes": True,
               "dashboard_address": ":0", "silence_logs": logging.ERROR,
               **_with_own_preload(cluster_options)}
    try:
        cluster = LocalCluster(**options)
    except RuntimeError as exc:
        if "failed to start" not in str(exc):
            raise
        causes, cause = [], exc
        while cause is not None and len(causes) < 20:
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__
        other = [c for c in causes
                 if not (type(c) is RuntimeError and "failed to start" in str(c))]
        if other:  # the workers' own error (a preload module missing, say)
            raise ClusterError(f"the local cluster's worker processes did not start: "
                               f"{type(other[0]).__name__}: {other[0]}") from exc
        # nothing but "Nanny failed to start": a worker that could not import the
        # script, as one without the guard makes them
        raise ClusterError(f"the local cluster's worker processes did not start ({exc}). "
                           f"{_NO_GUARD}") from None
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _with_own_preload(options):
    """``options`` with nnx's worker preload (Ctrl-C is for the process that
    started the cluster alone to take: see ``nnx._dask_worker``) before the
    user's: those given, else those of Dask's configuration
    (``distributed.worker.preload``), which a given list would replace."""
    import dask
    options = dict(options)
    preload = options.pop("preload", None)
    if preload is None:
        preload = dask.config.get("distributed.worker.preload", None) or []
    preload = [preload] if isinstance(preload, str) else list(preload)
    argv = options.pop("preload_argv", None)
    if argv is None:
        argv = dask.config.get("distributed.worker.preload-argv", None) or []
    argv = list(argv)
    if argv and not isinstance(argv[0], str):  # one list per preload: ours takes none
        argv = [[], *argv]
    return {**options, "preload": ["nnx._dask_worker", *preload], "preload_argv": argv}


def map_shared(func, items, shared, *args, client=None, workers=None, scheduler=None):
    """``func(item, shared, *args)`` for each of ``items``, each call a Dask
    task. ``shared`` (the prepared dataset, say) is sent to every worker once,
    before the first task, and each task gets that copy. The results are
    yielded in the order of ``items``, each as soon as it and those before it
    are done. Runs on ``client``, or on a cluster of ``connect(workers,
    scheduler)`` that lasts as long as the iteration."""
    if client is None:
        with connect(workers, scheduler) as client:
            yield from map_shared(func, items, shared, *args, client=client)
        return
    # hash=False: a key of its own. A key named by the data's content is shared
    # with an earlier call on equal data whose copy is still being released,
    # and the release then takes this call's copy away (dask/distributed#8576)
    [data] = client.scatter([shared], broadcast=True, hash=False)
    items = list(items)
    # pure=False: the results hold timings, and an equal call is still a new run
    futures = [client.submit(func, item, data, *args, pure=False) for item in items]
    try:
        for done, (item, future) in enumerate(zip(items, futures)):
            yield _result(future, item, done, len(items))
    finally:  # a failed or abandoned run leaves nothing behind on a shared cluster
        client.cancel([*futures, data])


def _result(future, item, done, total):
    """A task's result; its own error as it raised it; a ClusterError when
    the cluster lost it (``done`` tasks before it had finished)."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker
    try:
        return future.result()
    except KilledWorker as exc:
        reason = (f"the workers that ran it died {exc.allowed_failures + 1} times "
                  "(out of memory? see the workers' logs)")
    except CancelledError as exc:
        reason = (f"a worker died or left and took it or its shared data with it, which "
                  f"Dask cannot recover (out of memory? see the workers' logs): {exc}")
    raise ClusterError(f"the Dask cluster lost the task of item {item!r} ({done} of {total} "
                       f"finished before it): {reason}") from None


def _joblib_backend():
    """The name of joblib's Dask backend as ``fit_search`` uses it: joblib's
    own, except that it counts at least two jobs. joblib's counts the
    cluster's worker threads, and at one it runs the whole search in the
    calling process, away from the cluster (its rule for ``n_jobs=1``): a
    cluster of one GPU worker would see none of the work."""
    from joblib import parallel
    if "nnx-dask" not in parallel.BACKENDS:
        from joblib._dask import DaskDistributedBackend

        class OnTheCluster(DaskDistributedBackend):
            def effective_n_jobs(self, n_jobs):
                return max(2, super().effective_n_jobs(n_jobs))

        parallel.register_parallel_backend("nnx-dask", OnTheCluster)
    return "nnx-dask"


def fit_search(search, X, y=None, *, client=None, workers=None, scheduler=None, **fit_params):
    """``search.fit(X, y, **fit_params)`` with its fits as tasks on a Dask
    cluster, through joblib's Dask backend; returns ``search``.

    ``search`` is a ``GridSearchCV``, ``RandomizedSearchCV`` or any
    scikit-learn object whose ``fit`` runs its work through joblib. ``X`` and
    ``y`` are sent to every worker once, before the first task (joblib's
    ``scatter``); each task then refers to those copies and slices its folds
    there. (Arrays inside ``fit_params``, such as ``sample_weight``, travel
    with each task.) Runs on ``client``, or on a cluster of
    ``connect(workers, scheduler)`` for the length of the search. The
    search's refit on the best parameters runs here, as in a serial search.
    """
    if client is None:
        with connect(workers, scheduler) as client:
            return fit_search(search, X, y, client=client, **fit_params)
    if workers is not None or scheduler is not None:
        raise InputValueError("fit_search: give client= or workers=/scheduler=, not both")
    _distributed("fit_search")
    from joblib import parallel_config
    from sklearn.utils.validation import indexable
    # as the search's fit does; its tasks then hold these very objects, which
    # joblib recognises (by identity) as the copies already on the workers
    X, y = indexable(X, y)
    scatter = [a for a in (X, y) if a is not None]
    from concurrent.futures import CancelledError

    from distributed import KilledWorker
    try:
        with parallel_config(backend=_joblib_backend(), client=client, scatter=scatter):
            search.fit(X, y, **fit_params)
    except (CancelledError, KilledWorker) as exc:
        raise ClusterError(f"the Dask cluster lost a task of the search: a worker died or "
                           f"left and took it or the scattered X and y with it, which Dask "
                           f"cannot recover (out of memory? see the workers' logs): "
                           f"{type(exc).__name__}: {exc}") from None
    return search
