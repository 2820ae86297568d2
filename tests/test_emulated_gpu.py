"""The GPU backend's own code (CupyBackend, cuda_graphs.Graphs) run on the
CPU through a stand-in for CuPy (tests/emulated_cupy.py): its CUDA kernels
compiled for the host and called as CuPy calls them (with CuPy's rule on
output shapes), and nnx's cuBLAS calls answered by a NumPy reference that
reads the operands column-major at the addresses given. A whole fit on it,
eager and with recorded (here: re-run) steps fed by the device counter,
must match the CPU backend; the GEMM mapping of every layout and precision
must match NumPy's product. CUDA itself is left to ``pytest -m gpu``."""

import numpy as np
import pytest

import nnx
from nnx.backend import get_backend
from nnx.backend.cuda_graphs import Graphs
from nnx.precision import LossScaler

ec = pytest.importorskip("emulated_cupy")


@pytest.fixture
def gpu(monkeypatch):
    """``gpu(dtype, precision)``: the emulated GPU backend, whose captures
    hand back the step itself: a replay re-runs it, and must pass the same
    host numbers as the first (``emulated_cupy.strict_replay``)."""
    def make(dtype="float64", precision="float32"):
        try:
            b = ec.cupy_backend(monkeypatch, dtype, precision)
        except (RuntimeError, OSError) as exc:  # no C++ compiler here
            pytest.skip(f"cannot build the host kernels: {exc}")
        b._graphs.capture = lambda step: ec.strict_replay(step, b._graphs)
        return b
    return make


def _digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def _data(n=250):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 12)), rng.integers(0, 4, n)


def _fit(backend, make_opt, dropout=1.0, graph=True, precision=None, **kw):
    X, y = _data()
    net = nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=dropout), nnx.Dense(4, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=3, backend=backend,
                            precision=precision)
    if precision == "float16":
        net.loss_scaler = LossScaler(init_scale=2.0 ** 24, growth_interval=5)
    hist = nnx.Trainer(net, make_opt()).fit(X, y, X[:50], y[:50], epochs=4, eval_every=2,
                                            batch_size=32, seed=4, graph=graph, **kw)
    return net, hist


OPTIMISERS = {
    "momentum-decay": lambda: nnx.SGDMomentum(0.1, final_lr=0.02, decay_type="exponential"),
    "nesterov-wd": lambda: nnx.SGDMomentum(0.1, nesterov=True, weight_decay=0.01),
    "adam-onecycle-clipped": lambda: nnx.Adam(nnx.OneCycle(0.01), clip_norm=0.5),
    "adamw-cosine-per-step": lambda: nnx.AdamW(nnx.Cosine(0.01, warmup=3, per="step")),
    "rmsprop-centred": lambda: nnx.RMSprop(0.001, momentum=0.5, centered=True),
    "adagrad": lambda: nnx.Adagrad(0.05, lr_decay=0.01, clip_norm=1.0),
}


@pytest.mark.parametrize("graph", [True, False], ids=["fed-recorded", "eager"])
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_the_gpu_backend_code_trains_as_the_cpu_backend(gpu, name, graph):
    """Every kernel the GPU backend calls in a fit (fused activations,
    dropout, the row-wise softmax cross-entropy, the gather by the device
    counter, the step counter, the updates, tick and clip) through its own
    Python wrappers, float64: the CPU backend's records and parameters."""
    make = OPTIMISERS[name]
    net_g, hist_g = _fit(gpu(), make, dropout=0.8, graph=graph)
    net_c, hist_c = _fit(get_backend("cpu", "float64"), make, dropout=0.8, graph=graph)
    assert hist_g.graph == graph
    for rg, rc in zip(hist_g.records, hist_c.records):
        assert rg["loss"] == pytest.approx(rc["loss"], rel=1e-10)
        assert rg["train_loss"] == pytest.approx(rc["train_loss"], rel=1e-10)
    for p, q in zip(net_g.params(), net_c.params()):
        np.testing.assert_allclose(net_g.backend.to_numpy(p), q, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("precision", ["tf32", "bfloat16", "float16"])
def test_reduced_precision_products_go_through_the_handle_as_numpy_multiplies(gpu, precision):
    """Graphs.gemm for the three layouts a layer uses, a strided operand and
    a strided output: the reference handle, reading the operands
    column-major (in float16 or bfloat16 bits where asked), gives the
    product of the rounded operands; shapes that do not multiply are refused."""
    b = gpu("float32", precision)
    rng = np.random.default_rng(0)
    x, w = b.asarray(rng.standard_normal((33, 70))), b.asarray(rng.standard_normal((70, 9)))
    g = b.asarray(rng.standard_normal((33, 9)))
    wide = b.asarray(rng.standard_normal((70, 18)))
    cases = [(x, w), (x.T, g), (g, w.T), (x, wide[:, ::2])]
    for p, q in cases:
        want = (b.round_operand(b.xp.ascontiguousarray(p)).astype(np.float64)
                @ b.round_operand(b.xp.ascontiguousarray(q)).astype(np.float64))
        got = b.matmul(p, q)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        out = b.empty((want.shape[1], want.shape[0])).T  # an F-ordered output
        assert b.matmul(p, q, out=out) is out
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"shapes \(33, 70\) and \(9, 70\) do not multiply"):
        b.matmul(x, w.T)
    cpu = get_backend("cpu", "float32", precision)
    h = rng.standard_normal(3000).astype(np.float32) * 300
    np.testing.assert_array_equal(b.round_operand(b.asarray(h)), cpu.round_operand(h))


def test_float16_on_the_gpu_code_scales_skips_and_trains_like_the_cpu_emulation(gpu):
    """The float16 path of the GPU code: products through the handle with
    float16 operands, the loss scale, the update kernels skipping the
    overflowing steps (a scale of 2**24 overflows at first): the CPU
    emulation's records, within the products' summation order."""
    make = OPTIMISERS["adam-onecycle-clipped"]
    net_g, hist_g = _fit(gpu("float32", "float16"), make, precision="float16")
    net_c, hist_c = _fit(get_backend("cpu", "float32", "float16"), make, precision="float16")
    assert net_g.loss_scaler.state(net_g.backend) == net_c.loss_scaler.state(net_c.backend)
    assert net_g.loss_scaler.state(net_g.backend)[0] < 2.0 ** 24
    for rg, rc in zip(hist_g.records, hist_c.records):
        assert rg["loss"] == pytest.approx(rc["loss"], rel=1e-4)


def test_the_precision_check_at_creation_names_a_failing_handle(monkeypatch):
    """A handle that cannot be made is reported when the backend is made,
    with the reason; a bug in nnx's own code is not hidden as one."""
    from nnx.backend import BackendUnavailableError, cuda_graphs

    class Broken(ec.ReferenceBlas):
        def __init__(self, cupy, precision):
            raise OSError("libcublas.so.13: cannot open shared object file")
    try:
        ec.cupy_backend(monkeypatch, "float32", "float32")
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot build the host kernels: {exc}")
    monkeypatch.setattr(cuda_graphs, "CublasHandle", Broken)
    from nnx.backend import cupy_backend as cb
    with pytest.raises(BackendUnavailableError, match="precision='bfloat16'.*libcublas"):
        cb.CupyBackend("float32", "bfloat16")
    monkeypatch.setattr(Graphs, "_check", lambda self, recorded: self.nothing_here)
    with pytest.raises(AttributeError):
        cb.CupyBackend("float32", "tf32")


@pytest.fixture
def gpu_by_name(monkeypatch):
    """``backend="gpu"`` everywhere resolves to the emulated GPU backend,
    whose graph captures are refused."""
    import nnx.backend as backends
    from nnx.backend import cuda_graphs
    from nnx.backend import cupy_backend as cb
    try:
        fake = ec.FakeCupy(ec.kh.HostKernels())
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot build the host kernels: {exc}")
    monkeypatch.setattr(cb, "_import_cupy", lambda: fake)
    monkeypatch.setattr(cuda_graphs, "CublasHandle", ec.ReferenceBlas)
    monkeypatch.setattr(backends, "_cache", {})

    def refuse(self, step):  # no CUDA graphs here: the documented fallback
        raise cuda_graphs.CaptureUnavailable("emulated GPU: no CUDA graphs")
    monkeypatch.setattr(cuda_graphs.Graphs, "record", refuse)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_the_estimators_gpu_path_gives_the_cpu_numbers(gpu_by_name, solver, early_stopping):
    """nnx.sklearn's estimators with backend="gpu" (their device data, batch
    buffers, L2 by axpy, fused updates and device-side validation) fit as
    with backend="cpu", float64."""
    from nnx.sklearn import MLPClassifier, MLPRegressor
    X, y = _digits()
    fits = {}
    for backend in ("cpu", "gpu"):
        with _no_warning_check():
            clf = MLPClassifier(hidden_layer_sizes=(32,), solver=solver, max_iter=8,
                                random_state=0, alpha=1e-3, early_stopping=early_stopping,
                                backend=backend).fit(X, y)
            reg = MLPRegressor(hidden_layer_sizes=(16,), solver=solver, max_iter=8,
                               random_state=0, early_stopping=early_stopping,
                               backend=backend).fit(X, y.astype(float))
        fits[backend] = (clf, reg)
    for cpu_est, gpu_est in zip(fits["cpu"], fits["gpu"]):
        assert gpu_est.loss_ == pytest.approx(cpu_est.loss_, rel=1e-10)
        assert gpu_est.n_iter_ == cpu_est.n_iter_
        for a, b in zip(gpu_est.coefs_, cpu_est.coefs_):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        # labels alike; the regressor's values within the fused kernels' rounding
        np.testing.assert_allclose(gpu_est.predict(X), cpu_est.predict(X), rtol=1e-12)


def _no_warning_check():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def quiet():
        with warnings.catch_warnings():  # max_iter=8: scikit-learn's convergence warning
            warnings.simplefilter("ignore")
            yield
    return quiet()


@pytest.mark.parametrize("act", [("relu", None), ("leaky_relu", 0.2), ("relu6", None),
                                 ("sigmoid", None), ("gelu", "none"), ("gelu", "tanh"),
                                 ("silu", None), ("elu", 1.3), ("linear", None)],
                         ids=lambda a: f"{a[0]}-{a[1]}")
def test_every_fused_activation_through_the_gpu_wrappers(gpu, act):
    """The bias-activation kernels as CupyBackend calls them (the ones
    that keep the pre-activation return both): one batch's loss and every
    gradient as on the CPU, float64."""
    name, param = act
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 12)) * 2, rng.integers(0, 4, 40)
    grads = []
    for backend in (gpu(), get_backend("cpu", "float64")):
        activation = nnx.ops.make_activation(name, param)
        net = nnx.NeuralNetwork([nnx.Dense(16, activation), nnx.Dense(4, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=5, backend=backend)
        loss = float(net.backend.to_numpy(net.train_batch(X, y)))
        grads.append((loss, [np.array(net.backend.to_numpy(g)) for g in net.param_grads()]))
    (lg, gg), (lc, gc) = grads
    assert lg == pytest.approx(lc, rel=1e-12)
    for a, c in zip(gg, gc):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_command_line_on_the_gpu_code(gpu_by_name, tmp_path, capsys, precision):
    """nnx train --backend gpu (fed recorded steps need a real GPU: the
    capture is refused here and training goes on step by step, as it would
    on a device that refuses), the checkpoint it saves, and nnx evaluate of it
    on the GPU code and on the CPU: the same accuracy."""
    from nnx import cli
    out = str(tmp_path / "m.npz")
    assert cli.main(["train", "--backend", "gpu", "--precision", precision, "--epochs", "3",
                     "--quiet", "--out", out]) == 0
    trained = capsys.readouterr().out
    assert "graph capture unavailable" not in trained  # said on the log, not the output
    acc = trained.split("test accuracy ")[1].split(",")[0]
    seen = []
    for backend in ("gpu", "cpu"):  # a checkpoint loads with exact float32 products
        assert cli.main(["evaluate", out, "--backend", backend]) == 0
        seen.append(capsys.readouterr().out.split("accuracy ")[1].split()[0])
    assert seen[0] == seen[1]
    if precision == "float32":
        assert seen[0] == acc


def test_the_gpu_code_needs_no_astype_in_the_namespace(monkeypatch):
    """cupy.astype came with CuPy 14, and nnx allows CuPy 13: the accuracy,
    the float16 step count and the data fingerprint used ``xp.astype``."""
    from nnx.backend import cuda_graphs
    from nnx.backend import cupy_backend as cb

    class Cupy13(ec.FakeCupy):
        def __getattr__(self, name):
            if name == "astype":
                raise AttributeError("module 'cupy' has no attribute 'astype'")
            return super().__getattr__(name)
    try:
        fake = Cupy13(ec.kh.HostKernels())
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot build the host kernels: {exc}")
    monkeypatch.setattr(cb, "_import_cupy", lambda: fake)
    monkeypatch.setattr(cuda_graphs, "CublasHandle", ec.ReferenceBlas)
    b = cb.CupyBackend("float32", "float16")
    b._graphs.capture = ec.strict_replay
    net, hist = _fit(b, OPTIMISERS["adam-onecycle-clipped"], precision="float16")
    X, y = _data()
    assert 0 < nnx.accuracy(net, X, y) <= 1 and hist.graph
    assert len(net.backend.to_numpy(b.astype(b.asarray([1.5]), b.xp.int64))) == 1


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_the_estimators_recorded_gpu_steps_give_the_cpu_numbers(gpu_by_name, monkeypatch,
                                                                solver, early_stopping):
    """With graphs (here: the recorded step run again), the estimators' GPU
    fit runs the trainer's recorded steps: each fetches its batch by the
    device counter and takes scikit-learn's step with the rate and the Adam
    step count on the device (eps bias-corrected in the kernel). The same
    numbers as the CPU's host loop, float64; and partial_fit goes on alike."""
    from nnx.backend import cuda_graphs
    from nnx.sklearn import MLPClassifier
    recorded = []

    def replaying(self, step):
        recorded.append(step)
        return ec.strict_replay(step, self)  # as recorded: its products on the capture path
    monkeypatch.setattr(cuda_graphs.Graphs, "record", replaying)
    X, y = _digits()
    fits = {}
    for backend in ("cpu", "gpu"):
        with _no_warning_check():
            clf = MLPClassifier(hidden_layer_sizes=(32,), solver=solver, max_iter=6,
                                batch_size=32, random_state=0, alpha=1e-3,
                                early_stopping=early_stopping, backend=backend).fit(X, y)
            clf.partial_fit(X[:500], y[:500]) if not early_stopping else None
        fits[backend] = clf
    assert len(recorded) > 2  # the GEMM check's, then the fit's graphs of 16 steps and of 1
    cpu, gpu_fit = fits["cpu"], fits["gpu"]
    assert gpu_fit.n_iter_ == cpu.n_iter_ and gpu_fit.t_ == cpu.t_
    np.testing.assert_allclose(gpu_fit.loss_curve_, cpu.loss_curve_, rtol=1e-10)
    for a, b in zip(gpu_fit.coefs_ + gpu_fit.intercepts_, cpu.coefs_ + cpu.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(gpu_fit.predict(X), cpu.predict(X))


def test_an_interrupted_recorded_gpu_fit_goes_on_with_the_right_adam_count(
        gpu_by_name, monkeypatch):
    """An interrupt in the middle of a recorded epoch: the device had taken
    that epoch's steps, but the host's Adam count was updated only at an
    epoch's end, so the next partial_fit reset the device's count to a stale
    one (found by a review). Interrupted at the same batch, the GPU code and
    the CPU go on alike."""
    from nnx.backend import cuda_graphs
    from nnx.sklearn import MLPClassifier, _base
    monkeypatch.setattr(cuda_graphs.Graphs, "record",
                        lambda self, step: ec.strict_replay(step, self))
    X, y = _digits()
    real = _base.BaseMLP._loss_and_gradient
    fits = {}
    for backend in ("cpu", "gpu"):
        calls = [0]

        def interrupting(self, *args, calls=calls):
            calls[0] += 1
            if calls[0] == 90:  # in the second epoch (56 batches of 32 each)
                raise KeyboardInterrupt
            return real(self, *args)
        monkeypatch.setattr(_base.BaseMLP, "_loss_and_gradient", interrupting)
        with _no_warning_check():
            clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=4, batch_size=32,
                                solver="adam", random_state=0, backend=backend).fit(X, y)
        monkeypatch.setattr(_base.BaseMLP, "_loss_and_gradient", real)
        with _no_warning_check():
            clf.partial_fit(X, y)
        fits[backend] = clf
    cpu, gpu_fit = fits["cpu"], fits["gpu"]
    assert gpu_fit._optimizer.t == cpu._optimizer.t == 89 + 57
    for a, b in zip(gpu_fit.coefs_, cpu.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_another_threads_capture_does_not_take_this_threads_products(gpu):
    """The stream being recorded was one attribute of the shared backend: a
    product computed in another thread during a capture went into the graph
    instead of running (found by a review). It is per thread now."""
    import threading
    b = gpu("float32", "tf32")  # every product goes through the handle
    marker = object()
    seen = {}

    def other():
        seen["capturing"] = b._graphs.capturing
    b._graphs.capturing = marker
    try:
        t = threading.Thread(target=other)
        t.start()
        t.join()
    finally:
        b._graphs.capturing = None
    assert seen["capturing"] is None


def test_the_dry_run_set_up_gives_every_process_the_emulated_gpu(tmp_path):
    """The dry run of bench/gpu_check.sh (tests/emulated_gpu_plugin.py): with
    tests/emulated_site on PYTHONPATH, a new Python process finds a GPU,
    trains on it with recorded steps, imports cupy and times with cupyx."""
    import os
    import pathlib
    import subprocess
    import sys
    tests = pathlib.Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tests / "emulated_site"), str(tests), str(tests.parent)]))
    script = (
        "import numpy as np, nnx, cupy\n"
        "from cupyx.profiler import benchmark\n"
        "ok, why = nnx.gpu_available()\n"
        "assert ok, why\n"
        "X = np.random.default_rng(0).standard_normal((64, 5)); y = np.arange(64) % 3\n"
        "net = nnx.NeuralNetwork([nnx.Dense(4, 'tanh'), nnx.Dense(3, 'linear')],\n"
        "                        nnx.SoftmaxCrossEntropy(), backend='gpu', seed=0)\n"
        "h = nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=2, batch_size=8, seed=0)\n"
        "assert h.graph, h.graph_note\n"
        "assert isinstance(net.predict(cupy.asarray(X)), cupy.ndarray)\n"
        "print(len(benchmark(lambda: None, n_repeat=3).gpu_times[0]))\n")
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the dry-run process did not finish in 5 minutes")
    if "no C++ compiler" in done.stderr:
        pytest.skip("no C++ compiler here for the host kernels")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "3"


def test_a_host_read_inside_a_recorded_step_is_caught_here_as_on_a_gpu(gpu):
    """The emulated replay re-ran the step with float(), bool() and
    cupy.asnumpy of device arrays allowed: an update that read the device
    every step passed here, where a real capture is refused."""
    class Reading(nnx.SGD):
        def _update(self, b, param, grad, scale):
            if float(b.xp.sum(grad * grad)) > 0:  # a host read, every step
                param -= self.rate * grad

    with pytest.raises(AssertionError, match=r"float\(\) of a device array inside a "
                                             "recorded step"):
        _fit(gpu(), lambda: Reading(0.1))
    _fit(gpu(), lambda: Reading(0.1), graph=False)  # step by step, reading is allowed


# ------------------------------------- the cuBLAS handle's lifetime (a review)
def test_a_dropped_backend_frees_its_handle_at_once(monkeypatch):
    """The backend and its Graphs referred to each other, so a dropped
    backend's cuBLAS handle waited for the cycle collector, which may run in
    the middle of another backend's capture (cublasDestroy synchronises)."""
    import gc
    import weakref
    try:
        b = ec.cupy_backend(monkeypatch, "float32")
    except (RuntimeError, OSError) as exc:  # no C++ compiler here
        pytest.skip(f"cannot build the host kernels: {exc}")
    b._graphs.handle()
    graphs, handle = weakref.ref(b._graphs), weakref.ref(b._graphs.blas)
    gc.disable()
    try:
        del b
        assert graphs() is None and handle() is None  # freed by its last reference
    finally:
        gc.enable()


def test_a_handle_closed_during_a_capture_is_destroyed_after_it():
    """Destroying a handle (and freeing its workspace) while another stream
    records would invalidate that capture: it waits for the capture's end."""
    import contextlib
    import threading
    import types

    from nnx.backend import cuda_graphs
    destroyed = []
    lib = types.SimpleNamespace(cublasDestroy_v2=destroyed.append)

    def handle(n):
        h = object.__new__(cuda_graphs.CublasHandle)
        h._lib, h.handle, h._workspace = lib, n, f"workspace {n}"
        return h

    class Stream(contextlib.nullcontext):
        def wait_event(self, event):
            pass

        def begin_capture(self, mode=None):
            pass

        def end_capture(self):
            return "graph"
    cuda = types.SimpleNamespace(
        MemoryPool=lambda: types.SimpleNamespace(malloc=None),
        Stream=lambda non_blocking: Stream(),
        get_current_stream=lambda: types.SimpleNamespace(record=lambda: None),
        using_allocator=lambda malloc: contextlib.nullcontext(),
        runtime=types.SimpleNamespace())
    graphs = object.__new__(Graphs)
    graphs.cp, graphs._thread = types.SimpleNamespace(cuda=cuda), threading.local()
    graphs._record_lock, graphs.blas = threading.Lock(), handle(1)
    other = handle(2)

    def step():
        other.close()  # another backend's, dropped while this one records
        assert destroyed == []
        return "done"
    replay, result = graphs.record(step)
    assert result == "done" and destroyed == [2]
    handle(3).close()  # no capture in progress: at once
    assert destroyed == [2, 3]


def test_a_cpu_network_refuses_an_emulated_device_array_as_real_cupy_is_refused():
    """The CPU backend took the emulated CuPy's arrays (NumPy underneath) as
    its own: no NaN check, no dtype conversion, where a real CuPy array is
    refused as another device's."""
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    net.build(2)
    on_gpu = ec._dev(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(nnx.InputValueError, match=r"X is an array of .*not on this network's "
                                                  r"device \(cpu\)"):
        net.predict(on_gpu)


def test_each_device_has_a_gpu_backend_of_its_own(gpu_by_name, monkeypatch):
    """get_backend("gpu") was one object for the whole process: a network on
    a second device used the first device's cuBLAS handle and workspace (in
    a reduced precision every product goes through them: an illegal
    address), found by a review of the GPU path."""
    from nnx.backend import cupy_backend as cb
    fake = cb._import_cupy()
    on_zero = get_backend("gpu")
    monkeypatch.setattr(fake.cuda.runtime, "getDevice", lambda: 1)
    on_one = get_backend("gpu")
    assert on_one is not on_zero and on_one is get_backend("gpu")
    monkeypatch.setattr(fake.cuda.runtime, "getDevice", lambda: 0)
    assert get_backend("gpu") is on_zero
    # its cuBLAS handle is made on its own device, whichever is current then
    entered = []

    class Device:
        def __init__(self, n):
            self.n = n

        def __enter__(self):
            entered.append(self.n)

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(fake.cuda, "Device", Device)
    on_one._graphs.blas = None
    on_one._graphs.handle()
    assert on_one.device == 1 and entered == [1]


def test_a_loss_of_ones_own_in_another_dtype_trains_from_recorded_steps(gpu):
    """The device counter's kernel took the loss in the total's dtype only: a
    float64 loss of a float32 network failed in the first (eager) fed step,
    with graph=True on the GPU alone ("Type is mismatched")."""
    class Wide(nnx.MeanSquaredError):
        def _compute(self):
            value, grad = super()._compute()
            return self.backend.astype(value, self.backend.xp.float64), grad

    X, y = _digits()
    results = []
    for backend in (gpu("float32"), "cpu"):
        net = nnx.NeuralNetwork([nnx.Dense(8, "tanh"), nnx.Dense(10, "linear")], Wide(),
                                seed=0, backend=backend)
        hist = nnx.Trainer(net, nnx.SGD(0.05)).fit(X[:320], y[:320], epochs=2,
                                                   batch_size=32, seed=1)
        results.append(hist.records[-1]["train_loss"])
    assert results[0] == pytest.approx(results[1], rel=1e-5)


def test_a_capture_check_that_fails_otherwise_trains_step_by_step(gpu, monkeypatch):
    """Graphs._check caught RuntimeError and OSError alone: the workspace's
    allocation failing (CuPy's OutOfMemoryError is a MemoryError) ended the
    fit instead of training step by step."""
    b = gpu("float32")

    def short():
        raise MemoryError("out of memory allocating 33,554,432 bytes")
    b._graphs.checked.clear()
    monkeypatch.setattr(b._graphs, "handle", short)
    why = b._graphs.check(recorded=False)
    assert why.startswith("matrix products cannot be run through nnx's cuBLAS handle: "
                          "MemoryError: out of memory")
    monkeypatch.undo()  # the memory is back: a shortage of a moment is not kept
    assert "MemoryError" not in str(b._graphs.check(recorded=False))  # checked again
