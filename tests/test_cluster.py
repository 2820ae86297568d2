"""nnx.cluster on a local Dask cluster of two worker processes: the ladder
(``nnx reproduce --workers/--scheduler``) and scikit-learn searches give the
numbers of the same work done here, the data reaches each worker once, and
the refusals name the problem.

"Here" runs with one BLAS thread, as Dask's workers do: OpenBLAS sums in an
order that depends on its thread count, so a run on all cores can differ from
a one-thread run, first in the last bits and then, as training goes on, more
(see docs/cluster.md)."""

import json
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from nnx import InputValueError, cli, cluster

distributed = pytest.importorskip("distributed")
from distributed.protocol import dask_serialize  # noqa: E402

TINY = ["--epochs", "2", "--eval-every", "1", "--quiet"]


@pytest.fixture(scope="module")
def client():
    """One cluster for the module: two worker processes, one thread each."""
    with cluster.connect(workers=2) as c:
        c.wait_for_workers(2)
        yield c


# ------------------------------------------------------------------ reproduce
def _reproduce(capsys, out, *flags):
    status = cli.main(["reproduce", *TINY, "--out", str(out), *flags])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("wrote"))
    # the table without its last column, the seconds each step took
    table = [lines[0]] + [line.rsplit(None, 1)[0] for line in lines[1:end]]
    result = json.loads((out / "results.json").read_text())
    for step in result["steps"]:
        step.pop("seconds")
    return status, table, result, captured.err


def _serial(capsys, out, *flags):
    with threadpool_limits(1):
        return _reproduce(capsys, out, *flags)


def test_reproduce_on_two_local_workers_prints_the_serial_table(tmp_path, capsys):
    here = _serial(capsys, tmp_path / "serial", "--steps", "1-8")
    there = _reproduce(capsys, tmp_path / "dask", "--steps", "1-8", "--workers", "2")
    assert there[0] == here[0] == 0
    assert len(here[1]) == 10 and there[1] == here[1]  # run line, header, 8 steps
    assert there[2] == here[2]  # every number of results.json, timings aside
    assert (tmp_path / "dask" / "results.png").is_file()


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_reproduce_on_a_running_scheduler_keeps_the_failures(client, tmp_path, capsys):
    """A step that diverges on a worker is reported as it is in a serial run."""
    flags = ["--steps", "2-5", "--lr-scale", "3e37"]
    here = _serial(capsys, tmp_path / "serial", *flags)
    there = _reproduce(capsys, tmp_path / "dask", *flags, "--scheduler",
                       client.scheduler.address)
    assert there[0] == here[0] == 1
    assert there[1:] == here[1:] and "diverged in epoch" in there[3]


def test_a_worker_that_dies_ends_the_run_with_the_finished_steps_written(tmp_path, capsys,
                                                                          monkeypatch):
    """A worker that died mid-run took the shared data with it; the run ended
    in a traceback from inside Dask, and the steps that had finished were not
    written."""
    real = cli._run_step

    def second_step_dies(number, prep, args):  # sent by value: a closure
        if number == 2:
            import os
            import time
            time.sleep(1.0)  # step 1's result has reached the client by then
            os._exit(3)
        return real(number, prep, args)
    monkeypatch.setattr(cli, "_run_step", second_step_dies)
    out = tmp_path / "res"
    status = cli.main(["reproduce", *TINY, "--steps", "1-3", "--workers", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "stopped by an error after 1 finished step(s); writing them" in err
    assert ("error: the Dask cluster lost the task of item 2 (1 of 3 finished before it): "
            "a worker died or left") in err
    saved = json.loads((out / "results.json").read_text())
    assert [row["step"] for row in saved["steps"]] == [1]


def test_a_script_without_the_main_guard_is_told_so(tmp_path):
    """Started at a script's top level, the cluster's worker processes (which
    import the script) failed with some 450 lines of tracebacks from
    multiprocessing and Dask, and no word of the guard."""
    import subprocess
    script = tmp_path / "unguarded.py"
    script.write_text("from nnx.cluster import connect\n"
                      "with connect(workers=1) as client:\n"
                      "    print('connected')\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert run.returncode == 1 and "connected" not in run.stdout
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("nnx.cluster.ClusterError: the local cluster's worker processes "
                           "did not start"), run.stderr[-2000:]
    assert 'under `if __name__ == "__main__":` (see docs/cluster.md)' in last


def _sigint_handler():
    import signal
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_local_workers_leave_ctrl_c_to_the_client(client):
    """Ctrl-C in a terminal reaches every process of the group: each worker
    of a local cluster printed its event loop's KeyboardInterrupt traceback
    (two screens for `nnx reproduce --workers 2`) while the client's process
    said "interrupted" and closed the cluster."""
    import signal
    ignored = client.run(_sigint_handler)
    assert len(ignored) == 2 and all(ignored.values())
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # this process's own stays


def _preloaded(dask_worker):
    return getattr(dask_worker, "nnx_test_preloaded", None)


def test_the_preloads_of_dasks_configuration_still_run(tmp_path):
    """nnx's own preload (above) replaced those Dask's configuration names:
    a preload given as an argument is used instead of the configured ones."""
    import dask
    script = tmp_path / "mark_worker.py"
    script.write_text("def dask_setup(worker):\n    worker.nnx_test_preloaded = 'ran'\n")
    with dask.config.set({"distributed.worker.preload": [str(script)]}):
        with cluster.connect(workers=1) as c:
            c.wait_for_workers(1)
            assert list(c.run(_preloaded).values()) == ["ran"]
            assert all(c.run(_sigint_handler).values())


def test_workers_that_fail_to_start_for_another_reason_say_which():
    """Any failed start was blamed on a missing __main__ guard, and the
    workers' own error (a preload module not there) was dropped."""
    with pytest.raises(cluster.ClusterError, match="the local cluster's worker processes did not "
                                                   "start: ModuleNotFoundError: No module named "
                                                   "'no_such_module_xyz'"):
        with cluster.connect(workers=1, preload=["no_such_module_xyz"]):
            pass


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers 0: must be a positive integer"),
    (["--workers", "2", "--scheduler", "tcp://h:8786"],
     "--workers 2 and --scheduler 'tcp://h:8786': give one of them"),
    (["--scheduler", "h"], "--scheduler 'h': missing port number in address 'h'"),
    (["--scheduler", ""], "--scheduler '': expected a scheduler address"),
    (["--scheduler", "tcp://h:99999"], "--scheduler 'tcp://h:99999': port 99999 is not a TCP "
                                       "port (1 to 65535)"),
])
def test_reproduce_refuses_bad_cluster_flags_before_any_work(flags, message, tmp_path, capsys):
    assert cli.main(["reproduce", *flags, "--out", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"nnx reproduce: error: {message}"), captured.err


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 1, "n_workers": 3}, "workers=1 and n_workers=3: give the number of processes "
                                     "once"),
    # LocalCluster's name alone: named (it got the general 'give workers or scheduler')
    ({"n_workers": 2}, r"connect: n_workers=2: give the number of processes once, as "
                       r"workers="),
    ({"scheduler": "tcp://127.0.0.1:9", "threads_per_worker": 2},
     "threads_per_worker would go to a new LocalCluster, and scheduler= connects to a "
     "running one"),
])
def test_connect_refuses_cluster_options_it_would_not_use(kwargs, message):
    """n_workers silently replaced workers=; options beside scheduler= were dropped."""
    with pytest.raises(InputValueError, match=message):
        with cluster.connect(**kwargs):
            pass


def test_a_missing_dask_names_the_extra_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    assert cli.main(["reproduce", "--workers", "2", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnx reproduce: error: --workers 2 needs dask.distributed, which "
                          "is not installed")
    assert err.rstrip().endswith("pip install 'nnx-dl[dask]'")
    with pytest.raises(ImportError, match=r"fit_search needs dask.distributed.*nnx-dl\[dask\]"):
        cluster.fit_search(None, [[0.0]], client=object())


def test_a_scheduler_that_is_not_there_is_an_os_error(monkeypatch):
    import dask
    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        with pytest.raises(OSError, match="could not connect to the Dask scheduler at "
                                          "'tcp://127.0.0.1:9'"):
            with cluster.connect(scheduler="tcp://127.0.0.1:9"):
                pass


def _listening(answer):
    """A local TCP port that accepts connections and then sends ``answer``
    (nothing, if it is empty); the socket, closed by the caller."""
    import socket
    import threading
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed
                return
            held.append(conn)
            if answer:
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.mark.parametrize("answer, message", [
    (b"", r"no answer within 0.5 s .*is a Dask scheduler listening on that port\?"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" * 3,
     "what answered there is not a Dask scheduler"),
], ids=["silent", "another-protocol"])
def test_a_port_where_no_scheduler_answers_is_an_error_in_time(answer, message):
    """A Client alone waited without limit on a silent port, and died of a
    MemoryError deep in Dask's protocol on a port that speaks another one."""
    import dask
    server = _listening(answer)
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
            with pytest.raises(OSError, match="could not connect to the Dask scheduler at "
                                              f"'{address}': {message}"):
                with cluster.connect(scheduler=address):
                    pass
    finally:
        server.close()


def test_a_tls_scheduler_is_reached_with_dasks_tls_settings(tmp_path):
    """The probe that checks a scheduler answers connected without Dask's TLS
    settings, so a tls:// scheduler that a Client reaches was called 'not a
    Dask scheduler'."""
    import asyncio
    import shutil
    import subprocess
    import threading

    import dask
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate with")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = {"distributed.comm.tls.ca-file": str(cert), "distributed.comm.require-encryption": True}
    for who in ("scheduler", "client", "worker"):
        tls.update({f"distributed.comm.tls.{who}.cert": str(cert),
                    f"distributed.comm.tls.{who}.key": str(key)})
    box = {}

    def serve():
        async def main():
            async with distributed.Scheduler(host="tls://127.0.0.1", port=0,
                                             dashboard_address=":0") as scheduler:
                box["address"] = scheduler.address
                while "stop" not in box:
                    await asyncio.sleep(0.05)
        with dask.config.set(tls):
            asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if "address" in box:
                break
            thread.join(0.05)
        with dask.config.set(tls), cluster.connect(scheduler=box["address"]) as client:
            assert client.scheduler_info()["type"] == "Scheduler"
    finally:
        box["stop"] = True
        thread.join(10)


def test_a_worker_address_is_not_taken_for_the_scheduler(client):
    worker = next(iter(client.scheduler_info()["workers"]))
    with pytest.raises(OSError, match="what answered there is a Dask Worker, not a scheduler"):
        with cluster.connect(scheduler=worker):
            pass


# -------------------------------------------------------------------- search
def _digits(n=300):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16.0, y[:n]


GRID = {"hidden_layer_sizes": [(8,), (16,)], "alpha": [1e-4, 1e-2],
        "learning_rate_init": [1e-3, 1e-2]}  # 8 settings


def _sklearn_mlp():
    return MLPClassifier(max_iter=5, random_state=0)


def _nnx_mlp():
    try:
        from nnx.sklearn import MLPClassifier as NnxMLPClassifier
    except ImportError as exc:
        pytest.skip(f"nnx.sklearn.MLPClassifier does not import: {exc}")
    return NnxMLPClassifier(max_iter=5, random_state=0)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def _warnings_off():
    warnings.simplefilter("ignore", ConvergenceWarning)


@pytest.mark.parametrize("make", [_sklearn_mlp, _nnx_mlp], ids=["sklearn", "nnx"])
def test_a_grid_search_on_the_cluster_scores_as_the_serial_one(client, make):
    X, y = _digits()
    client.run(_warnings_off)
    serial = GridSearchCV(make(), GRID, cv=3)
    with threadpool_limits(1):
        _quiet(serial.fit, X, y)
    search = _quiet(cluster.fit_search, GridSearchCV(make(), GRID, cv=3), X, y, client=client)
    assert len(search.cv_results_["params"]) == 8
    assert search.cv_results_["params"] == serial.cv_results_["params"]
    for key in ["mean_test_score", "std_test_score", "rank_test_score",
                *(f"split{i}_test_score" for i in range(3))]:
        np.testing.assert_array_equal(search.cv_results_[key], serial.cv_results_[key], key)
    assert search.best_params_ == serial.best_params_
    np.testing.assert_array_equal(search.predict(X), serial.predict(X))


class _DiesOnFit(ClassifierMixin, BaseEstimator):
    """Fits as a constant classifier; with ``dies=True`` its process exits."""

    def __init__(self, dies=False):
        self.dies = dies

    def fit(self, X, y):
        if self.dies:
            import os
            os._exit(3)
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_a_worker_that_dies_in_a_search_is_a_cluster_error():
    """A FutureCancelledError came out of joblib's internals, naming a batch."""
    X, y = _digits(60)
    search = GridSearchCV(_DiesOnFit(), {"dies": [False, True]}, cv=2)
    with pytest.raises(cluster.ClusterError, match="the Dask cluster lost a task of the "
                                                   "search: a worker died or left"):
        cluster.fit_search(search, X, y, workers=1)


def test_a_randomized_search_on_a_local_cluster_of_its_own():
    X, y = _digits(150)
    params = {"alpha": [1e-4, 1e-3, 1e-2], "hidden_layer_sizes": [(4,), (8,)]}
    serial = RandomizedSearchCV(_sklearn_mlp(), params, n_iter=3, cv=2, random_state=1)
    with threadpool_limits(1):
        _quiet(serial.fit, X, y)
    search = RandomizedSearchCV(_sklearn_mlp(), params, n_iter=3, cv=2, random_state=1)
    assert _quiet(cluster.fit_search, search, X, y, workers=1) is search
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"],
                                  serial.cv_results_["mean_test_score"])


def test_a_cluster_of_one_worker_runs_the_search_there():
    """joblib counts the cluster's threads and, at one, ran every fit in the
    calling process: a cluster of one (GPU) worker got none of the work."""
    X, y = _digits(150)
    with cluster.connect(workers=1) as client:
        client.run(_warnings_off)
        with distributed.get_task_stream(client) as tasks:
            _quiet(cluster.fit_search, GridSearchCV(_sklearn_mlp(), {"alpha": [1e-4, 1e-2]},
                                                    cv=2), X, y, client=client)
    assert any("_fit_and_score" in t["key"] for t in tasks.data), tasks.data


# ----------------------------------------------- the data goes to each worker once
RECEIVED = [0]  # in each process: how many Counted arrays it has unpickled


class Counted(np.ndarray):
    """An array that counts, in the process that receives it, each time it
    arrives by pickle (a scatter, a task's argument, a transfer between
    workers)."""

    def __reduce__(self):
        return _arrive, (np.asarray(self),)


def _arrive(array):
    RECEIVED[0] += 1
    return array.view(Counted)


@dask_serialize.register(Counted)
def _by_pickle(x):  # not Dask's own array serialiser, which would drop the subclass
    raise NotImplementedError


def _received():
    return RECEIVED[0]


def _reset():
    RECEIVED[0] = 0


def _rows(X, _):
    return len(X)


def _shared_rows(item, shared, extra):
    return item, len(shared["X"]), extra


def _assert_sent_once_per_worker(received, tasks):
    """Every worker got the data, once; sent with each task, the counts would
    add up to the number of tasks. (Dask's broadcast scatter sends to one
    worker, then replicates: once in a full run, one worker got a second
    copy, which this allows, still far from one per task.)"""
    counts = list(received.values())
    assert len(counts) == 2 and min(counts) >= 1, counts
    assert sum(counts) <= 3 and tasks > 3, (counts, tasks)


def test_the_search_data_reaches_each_worker_once(client):
    X, y = _digits(600)
    X, y = X[300:].view(Counted), y[300:]  # rows no earlier test sent
    client.run(_reset)
    client.run(_warnings_off)
    # the counter works: an array passed to each task arrives with each task
    futures = [client.submit(_rows, X, i, pure=False) for i in range(4)]
    assert client.gather(futures) == [len(X)] * 4
    assert sum(client.run(_received).values()) == 4
    client.run(_reset)
    with distributed.get_task_stream(client) as tasks:
        _quiet(cluster.fit_search, GridSearchCV(_sklearn_mlp(), GRID, cv=3), X, y,
               client=client)
    fits = [t for t in tasks.data if "_fit_and_score" in t["key"]]
    # the 24 fits ran in joblib's batches, more tasks than workers, on both workers
    assert len(fits) > 2 and {t["worker"] for t in fits} == set(client.run(_received))
    _assert_sent_once_per_worker(client.run(_received), tasks=len(fits))


def test_the_ladder_data_reaches_each_worker_once(client):
    X = np.arange(12.0).reshape(4, 3).view(Counted)
    client.run(_reset)
    results = list(cluster.map_shared(_shared_rows, range(6), {"X": X}, 10, client=client))
    assert results == [(i, 4, 10) for i in range(6)]
    _assert_sent_once_per_worker(client.run(_received), tasks=6)


def _shared_sum(item, shared):
    return item + float(shared.sum())


def test_the_same_data_shared_again_on_one_client(client):
    """A ladder run after another on one client, with equal data: each run's
    copy has a key of its own (a key named by the content was the earlier
    run's, still being released, and its release cancelled the new run's
    tasks with 'lost dependencies'); then a search on that data."""
    X, y = _digits(200)
    want = [i + float(X.sum()) for i in range(3)]
    for _ in range(3):
        assert list(cluster.map_shared(_shared_sum, range(3), X, client=client)) == want
    client.run(_warnings_off)
    for _ in range(2):
        search = _quiet(cluster.fit_search, GridSearchCV(_sklearn_mlp(), {"alpha": [1e-4]}, cv=2),
                        X, y, client=client)
        assert search.cv_results_["mean_test_score"].shape == (1,)
    assert list(cluster.map_shared(_shared_sum, range(3), X, client=client)) == want


def test_reproduce_on_a_scheduler_leaves_the_gpu_check_to_its_workers(monkeypatch, capsys):
    """--backend gpu --scheduler ADDR was refused on a client without CuPy,
    though the cluster's workers run the steps (the docs' GPU example)."""
    from nnx import cli, cluster
    from nnx.backend import BackendUnavailableError

    def reached(*args, **kwargs):
        raise cluster.ClusterError("the steps went to the cluster")
    monkeypatch.setattr(cluster, "map_shared", reached)

    def no_gpu(name, *args, **kwargs):  # this machine has no GPU, whatever it has
        if name == "gpu":
            raise BackendUnavailableError("backend 'gpu' needs CuPy (here: none)")
        return real(name, *args, **kwargs)
    real = cli.get_backend
    monkeypatch.setattr(cli, "get_backend", no_gpu)
    code = cli.main(["reproduce", "--backend", "gpu", "--scheduler", "tcp://127.0.0.1:8786",
                     "--steps", "1", "--quiet"])
    assert code != 0 and "the steps went to the cluster" in capsys.readouterr().err
