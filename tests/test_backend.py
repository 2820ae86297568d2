"""The backend shim: selection, errors, the import boundary, the rule that
device backends only override the reference backend, never extend it; the
array primitives against closed forms; random numbers; and the host-side
checks of features and targets (nnx.backend.host)."""

import ast
import inspect
import math
import pathlib
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import SMALL, class_ids, dims, features, not_finite

import nnx
from nnx import Dense, NeuralNetwork
from nnx import backend as backend_mod
from nnx.backend import Backend, BackendUnavailableError, get_backend, host
from nnx.backend.base import Backend as BaseBackend
from nnx.backend.numpy_backend import NumpyBackend
from nnx.backend.strict_backend import StrictBackend

PKG = pathlib.Path(nnx.__file__).parent

# host-side input/output may use NumPy (datasets, checkpoint files, the command
# line, counting predicted labels); the compute path may not
HOST_IO = {"data.py", "checkpoint.py", "cli.py", "__main__.py", "report.py", "metrics.py",
           "tables.py"}


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


RTOL = {"float32": 1e-6, "float64": 1e-14}


def _host(b, x):
    return np.asarray(b.to_numpy(x), dtype=np.float64)


# ----------------------- the import boundary, and backends that only override
def test_only_the_shim_imports_numpy_or_cupy():
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        mods = set(_imports(path))
        if "cupy" in mods and rel != pathlib.Path("backend/cupy_backend.py"):
            offenders.append(f"{rel} imports cupy")
        # the scikit-learn adapter speaks scikit-learn's language, NumPy, on the host
        if "numpy" in mods and rel.parts[0] not in ("backend", "sklearn") \
                and rel.name not in HOST_IO:
            offenders.append(f"{rel} imports numpy")
    assert not offenders, offenders


def test_boundary_check_catches_a_violation(tmp_path):
    bad = tmp_path / "ops.py"
    bad.write_text("import numpy as np\nfrom cupy import ndarray\n")
    assert {"numpy", "cupy"} <= set(_imports(bad))


def test_import_is_lazy():
    """``import nnx`` loads none of the heavy optional modules: CuPy only when
    the GPU backend is asked for, scikit-learn, matplotlib and tqdm only when
    a dataset, a plot or a progress bar is. (Checked by what gets imported,
    not by a clock: a timed unit test fails on a busy machine.)"""
    code = ("import sys; import nnx; "
            "print(sorted(m for m in ('cupy', 'sklearn', 'matplotlib', 'tqdm', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("cls", [NumpyBackend, StrictBackend])
def test_backends_add_no_public_methods_and_keep_signatures(cls):
    base = {n: m for n, m in inspect.getmembers(BaseBackend) if not n.startswith("_")}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        assert name in base, f"{cls.__name__} adds public member {name!r}"
        if callable(member) and name != "__init__":
            assert inspect.signature(member) == inspect.signature(base[name]), name


def test_cupy_backend_adds_no_public_methods():
    # read the class without importing cupy: the module imports it lazily
    from nnx.backend import cupy_backend
    base = {n for n, _ in inspect.getmembers(BaseBackend) if not n.startswith("_")}
    for name, member in vars(cupy_backend.CupyBackend).items():
        if name.startswith("_"):
            continue
        assert name in base, f"CupyBackend adds public member {name!r}"
        if callable(member):
            assert inspect.signature(member) == inspect.signature(getattr(BaseBackend, name))


# ------------------------- choosing a backend, and the dtype of what it makes
def test_cpu_backend_basics():
    b = get_backend("cpu")
    assert b.name == "cpu" and b.xp is np and b.dtype == np.float32
    assert get_backend("cpu", "float64").dtype == np.float64
    x = b.asarray([[1, 2], [3, 4]])
    assert x.dtype == np.float32
    assert b.asarray(x) is x  # no copy when nothing changes
    assert isinstance(b.to_numpy(x), np.ndarray)
    b.synchronize()
    assert get_backend(b) is b


def test_unknown_backend_and_dtype_are_named():
    with pytest.raises(ValueError, match=r"backend='tpu'.*'cpu', 'gpu', 'strict'"):
        get_backend("tpu")
    with pytest.raises(ValueError, match=r"dtype='float16'.*float32"):
        get_backend("cpu", "float16")
    with pytest.raises(ValueError, match="backend='tpu'"):
        nnx.NeuralNetwork([nnx.Dense(2)], nnx.MeanSquaredError(), backend="tpu")


@pytest.fixture
def fresh_gpu_cache(monkeypatch):
    monkeypatch.setattr(backend_mod, "_cache", {})


def test_gpu_without_cupy_says_how_to_install(monkeypatch, fresh_gpu_cache):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(BackendUnavailableError, match=r"CuPy.*pip install 'nnx-dl\[cuda12\]'"):
        get_backend("gpu")
    ok, why = nnx.gpu_available()
    assert not ok and "CuPy" in why


def test_gpu_without_device_says_so(monkeypatch, fresh_gpu_cache):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    runtime = types.SimpleNamespace(getDeviceCount=no_device)
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(BackendUnavailableError,
                       match="cannot reach a CUDA device.*no CUDA-capable"):
        get_backend("gpu")


def test_backend_of_rejects_foreign_objects():
    with pytest.raises(TypeError, match="expected a NumPy"):
        backend_mod.backend_of([1.0, 2.0])


@pytest.mark.parametrize("dtype, expected", [(np.int64, "float32"), (bool, "float32"),
                                             (np.float64, "float64"), (np.float32, "float32")])
def test_an_operation_on_non_float_input_computes_in_float32(dtype, expected):
    assert backend_mod.backend_of(np.zeros(3, dtype=dtype)).dtype_name == expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_array_has_the_compute_dtype(backend_name, dtype):
    b = get_backend(backend_name, dtype)
    gen = b.generator(0)
    arrays = [b.zeros((3, 2)), b.empty((2,)), b.asarray(np.ones((2, 2))),
              b.uniform(gen, (4,)), b.dropout_mask(gen, (5, 5), 0.5),
              b.host_normal(np.random.default_rng(0), (3, 3))]
    assert all(a.dtype == b.dtype for a in arrays)
    assert isinstance(b, Backend)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sum_squares_is_the_squared_norm_on_every_backend(backend_name, dtype):
    """It took reshape and vdot, which the Array API (the strict backend) lacks."""
    b = get_backend(backend_name, dtype)
    x = np.random.default_rng(0).standard_normal((7, 5))
    got = float(b.to_numpy(b.sum_squares(b.asarray(x))))
    assert got == pytest.approx(float(np.sum(x.astype(dtype).astype(np.float64) ** 2)),
                                rel=1e-6 if dtype == "float32" else 1e-13)


# ------------------------ random numbers: row orders, dropout masks and seeds
def test_permutation_is_a_permutation(backend_name):
    b = get_backend(backend_name)
    p = b.to_numpy(b.permutation(b.generator(3), 1000))
    assert sorted(p.tolist()) == list(range(1000))
    assert not np.array_equal(p, np.arange(1000))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 2, 17, 1000, 70_000])
def test_cpu_permutation_is_the_reference_stable_argsort(dtype, n):
    """The CPU backend's radix-sort permutation is the reference's stable
    argsort of the same keys, element for element."""
    b = get_backend("cpu", dtype)
    for seed in range(3):
        fast = b.permutation(b.generator(seed), n)
        ref = Backend.permutation(b, b.generator(seed), n)
        assert np.array_equal(fast, ref)


def test_cpu_permutation_keeps_index_order_among_ties(monkeypatch):
    """Many equal keys, some differing only in their low bits: ties must come
    out in index order, as the reference's stable argsort puts them."""
    b = NumpyBackend("float32")
    rng = np.random.default_rng(0)
    keys = rng.choice(np.array([0.0, 0.25, 0.25 + 2.0 ** -52, 0.5, 0.75]), 5000)
    monkeypatch.setattr(b, "uniform", lambda gen, shape, dtype=None: keys.copy())
    assert np.array_equal(b.permutation(None, keys.size), np.argsort(keys, kind="stable"))


@pytest.mark.parametrize("backend_name", ["cpu", "strict"])
def test_shuffle_order_does_not_depend_on_the_dtype(backend_name):
    """One seed, one order: float32 and float64 runs visit the rows alike, so
    comparing the two compares precision, not shuffles."""
    b32, b64 = get_backend(backend_name, "float32"), get_backend(backend_name, "float64")
    for n in (10, 1000, 60_000):
        p32 = b32.to_numpy(b32.permutation(b32.generator(7), n))
        p64 = b64.to_numpy(b64.permutation(b64.generator(7), n))
        assert np.array_equal(p32, p64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_backend_visits_the_rows_in_one_order(backend_name, dtype):
    """An epoch's order is the CPU's permutation of the seed's host draw on
    every backend (the GPU drew it on its own generator, and went its own way)."""
    b, host = get_backend(backend_name, dtype), get_backend("cpu", "float64")
    for n in (1, 17, 60_000):
        order = b.epoch_order(5, n)
        assert b.owns(order)  # uploaded once, gathered on the device
        expected = host.permutation(np.random.default_rng(5), n)
        assert np.array_equal(b.to_numpy(order), expected)


@pytest.mark.parametrize("backend_name", ["cpu", "strict"])
def test_dropout_units_do_not_depend_on_the_dtype(backend_name):
    """One seed, the same units dropped in float32 and float64 (the draws are
    float64 in both); each mask in its network's dtype."""
    masks = []
    for dtype in ("float32", "float64"):
        b = get_backend(backend_name, dtype)
        m = b.to_numpy(b.dropout_mask(b.generator(5), (300, 70), 0.8))
        assert m.dtype == np.dtype(dtype)
        masks.append(m != 0)
    assert np.array_equal(*masks)


@pytest.mark.parametrize("keep", [0.5, 0.7, 0.8, 0.95])
def test_dropout_mask_keeps_that_share_and_scales_by_its_inverse(backend_name, keep):
    b = get_backend(backend_name, "float64")
    mask = _host(b, b.dropout_mask(b.generator(3), (400, 250), keep))
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1.0 / keep, rtol=1e-15)
    assert abs(kept.mean() - keep) < 4 * np.sqrt(keep * (1 - keep) / kept.size)


def test_derived_seeds_depend_on_each_key_and_its_place():
    """(seed, stream, epoch) keys: the shuffle of epoch 1 (stream 0) must not
    reuse the dropout stream of epoch 0 (stream 1), nor another run's seed."""
    from nnx.backend import host
    keys = [(s, k, e) for s in range(3) for k in range(2) for e in range(4)]
    seeds = {host.derive_seed(*key) for key in keys}
    assert len(seeds) == len(keys)
    assert host.derive_seed(0, 0, 1) != host.derive_seed(0, 1, 0) != host.derive_seed(1, 0, 0)


# ----- the array primitives against closed forms written here in plain NumPy,
# with settings other than the study's defaults: test_parity compares the
# backends with each other, which cannot see a bug they share (the simulated
# device runs the reference code itself)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_momentum_step_is_the_closed_form(backend_name, dtype, momentum):
    b = get_backend(backend_name, dtype)
    rng = np.random.default_rng(1)
    p0, g1, g2 = (rng.standard_normal(50) for _ in range(3))
    lr = 0.3
    p, v = b.asarray(p0.copy()), b.zeros((50,))  # asarray may not copy
    for g in (g1, g2):
        b.momentum_step(p, b.asarray(g), v, b.asarray(lr), momentum)
    v1 = lr * g1
    v2 = momentum * v1 + lr * g2
    np.testing.assert_allclose(_host(b, v), v2, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])
    np.testing.assert_allclose(_host(b, p), p0 - v1 - v2, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sgd_step_is_the_closed_form(backend_name, dtype):
    b = get_backend(backend_name, dtype)
    rng = np.random.default_rng(2)
    p0, g = rng.standard_normal(40), rng.standard_normal(40)
    p = b.asarray(p0.copy())  # asarray may not copy
    b.sgd_step(p, b.asarray(g), b.asarray(0.25))
    np.testing.assert_allclose(_host(b, p), p0 - 0.25 * g, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_clips_extreme_logits(backend_name, dtype):
    """Loss -sum(y log clip(softmax, eps, 1-eps)) / n and gradient (softmax - y) / n,
    with logits whose softmax underflows to 0 for the target class."""
    b = get_backend(backend_name, dtype)
    logits = np.array([[0.0, -800.0, 3.0], [50.0, -50.0, 0.0], [1.0, 2.0, 3.0]])
    y = np.eye(3)[[1, 1, 2]]
    eps = 1e-6
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected_loss = -np.sum(y * np.log(np.clip(p, eps, 1 - eps))) / 3
    loss, grad = b.softmax_cross_entropy(b.asarray(logits), b.asarray(y), eps)
    assert float(_host(b, loss)) == pytest.approx(expected_loss, rel=RTOL[dtype] * 10)
    np.testing.assert_allclose(_host(b, grad), (p - y) / 3, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype])


@pytest.mark.parametrize("x, expected", [([-3.0, 1.0], 3.0), ([-np.inf, 1.0], np.inf),
                                         ([2.0, -1.0], 2.0), ([np.nan, 1.0], np.nan)])
def test_max_abs_sees_negative_values(x, expected):
    """The trainer's divergence check reads max_abs of the parameters: with
    only max(x) it missed weights that ran off to -inf."""
    got = float(get_backend("cpu").max_abs(np.array(x, dtype=np.float32)))
    np.testing.assert_equal(got, expected)


# ---------------------------------------------------- temporaries and threads
def _in_two_threads(work):
    """Run ``work(0)`` and ``work(1)`` at the same time; their results."""
    import threading
    barrier, out = threading.Barrier(2), [None, None]

    def run(i):
        barrier.wait()
        out[i] = work(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_cpu_temporaries_are_not_shared_between_threads():
    """Networks of one dtype share the backend; two trained in two threads
    (NumPy releases the GIL in its loops) must not write into each other's
    temporaries: each thread's updates and losses equal the ones computed alone."""
    b = get_backend("cpu", "float32")
    n, steps = 1 << 20, 20
    lrs = [b.asarray(0.1), b.asarray(0.01)]

    def states():
        rngs = [np.random.default_rng(i) for i in range(2)]
        return [[r.standard_normal(n).astype(np.float32) for _ in range(3)] for r in rngs]

    def updates(st, i):
        p, g, v = st[i]
        for _ in range(steps):
            b.momentum_step(p, g, v, lrs[i], 0.9)
            b.sgd_step(g, v, lrs[i])
        return p.copy(), g.copy()

    alone = states()
    alone = [updates(alone, i) for i in range(2)]
    together = states()
    together = _in_two_threads(lambda i: updates(together, i))
    for a, t in zip(alone, together):
        np.testing.assert_array_equal(a[0], t[0])
        np.testing.assert_array_equal(a[1], t[1])

    logits = [np.random.default_rng(i).standard_normal((2000, 500)).astype(np.float32)
              for i in range(2)]
    target = np.eye(500, dtype=np.float32)[np.arange(2000) % 500]

    def losses(i):
        return [float(b.softmax_cross_entropy(logits[i], target, 1e-9)[0]) for _ in range(steps)]

    alone = [losses(i) for i in range(2)]
    assert _in_two_threads(losses) == alone


# ---------------------------------------- erf and the fused bias + activation
def _erf_grid():
    """Points across every interval of Cody's approximation and their seams,
    tiny and huge magnitudes, both signs."""
    inner = np.linspace(-7.0, 7.0, 28001)
    seams = np.array([0.46875, 4.0, 6.0])
    seams = np.concatenate([seams, np.nextafter(seams, 0), np.nextafter(seams, 10)])
    wide = np.logspace(-300, 300, 6001)
    x = np.concatenate([inner, seams, -seams, wide, -wide, [0.0, 5e-324, 1e-20, 26.5, 1e308]])
    return x


@pytest.mark.parametrize("backend_name", ["cpu", "strict"])
def test_reference_erf_is_accurate_to_float64_rounding(backend_name):
    """The reference (Cody's rational functions, array-API calls only) against
    math.erf: within 1e-15 relative everywhere (about 4.5 units in the last
    place; it is within 2.1), with no overflow or invalid-value warning."""
    b = get_backend(backend_name, "float64")
    x = _erf_grid()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = b.to_numpy(Backend.erf(b, b.asarray(x)))
    expected = np.array([math.erf(v) for v in x])
    rel = np.abs(got - expected) / np.abs(expected).clip(min=1e-300)
    assert rel.max() <= 1e-15, f"{rel.max():.2e} at x={x[rel.argmax()]!r}"
    assert got[x == 0.0].size and np.all(got[np.abs(x) >= 6.0] == np.sign(x[np.abs(x) >= 6.0]))


def test_reference_erf_in_float32_and_at_special_values():
    b = get_backend("cpu", "float32")
    x = np.linspace(-8.0, 8.0, 4001, dtype=np.float32)
    got = Backend.erf(b, x)
    assert got.dtype == np.float32
    expected = np.array([math.erf(float(v)) for v in x])
    np.testing.assert_allclose(got, expected, rtol=4e-7, atol=1e-30)
    b64 = get_backend("cpu", "float64")
    special = Backend.erf(b64, np.array([np.nan, np.inf, -np.inf, -0.0]))
    assert np.isnan(special[0]) and list(special[1:3]) == [1.0, -1.0]
    assert special[3] == 0.0 and np.signbit(special[3])  # erf(-0) = -0, as math.erf


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_backend_erf_agrees_with_the_reference(backend_name, dtype):
    """The CPU's SciPy and the GPU's CuPy overrides compute what the reference does."""
    b = get_backend(backend_name, dtype)
    x = b.asarray(np.linspace(-10.0, 10.0, 2001))
    got, ref = b.to_numpy(b.erf(x)), b.to_numpy(Backend.erf(b, x))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, ref, rtol={"float32": 1e-6, "float64": 1e-15}[dtype],
                               atol=1e-30)


def test_every_activation_has_a_fused_gpu_kernel_and_no_other():
    """The CUDA snippets (read without CuPy or compiling) are one entry per
    name in ops.ACTIVATIONS, each saving the output or the pre-activation."""
    from nnx.backend import cupy_backend
    from nnx.ops import ACTIVATIONS
    table = cupy_backend.FUSED_ACTIVATIONS
    assert sorted(table) == sorted(ACTIVATIONS)
    for name, k in table.items():
        assert k.saves in ("y", "z"), name
        assert re.search(r"\by =", k.forward) and re.search(r"\bgz =", k.backward), name
        # the backward kernel has what the forward one saved, and nothing else
        other = "z" if k.saves == "y" else "y"
        assert not re.search(rf"\b{other}\b", k.backward), name
    assert cupy_backend._kernel_number("tanh") == 1.0
    assert cupy_backend._kernel_number("none") == cupy_backend._kernel_number(None) == 0.0
    assert cupy_backend._kernel_number(0.25) == 0.25


# every activation, with a setting other than the default where it has one
FUSED_CASES = [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
               ("leaky_relu", 0.2), ("relu6", None), ("gelu", "none"), ("gelu", "tanh"),
               ("silu", None), ("elu", 1.0), ("elu", 0.5)]


@pytest.mark.parametrize("name, setting", FUSED_CASES)
def test_bias_activation_is_the_activation_of_the_sum(backend_name, name, setting):
    """The backend takes arrays, a name and a setting and gives arrays back:
    its result and gradient are those of BiasAdd followed by the activation
    (exactly on the CPU and the simulated device; on the GPU, its fused kernels)."""
    from nnx.ops import ACTIVATIONS, make_activation
    assert {n for n, _ in FUSED_CASES} == set(ACTIVATIONS)
    b = get_backend(backend_name, "float64")
    rng = np.random.default_rng(0)
    x = b.asarray(4.0 * rng.standard_normal((16, 9)))
    bias = b.asarray(rng.standard_normal((1, 9)))
    g = b.asarray(rng.standard_normal((16, 9)))
    x0 = b.copy(x)  # the backend may write its result over x (the CPU does)
    out, saved = b.bias_activation(x, bias, name, setting)
    grad = b.bias_activation_grad(name, setting, saved, g)
    act = make_activation(name, setting)
    expected = b.to_numpy(act.forward(x0 + bias))
    expected_grad = b.to_numpy(act.backward(g))
    if backend_name == "gpu":
        np.testing.assert_allclose(b.to_numpy(out), expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b.to_numpy(grad), expected_grad, rtol=1e-12, atol=1e-14)
    else:
        np.testing.assert_array_equal(b.to_numpy(out), expected)
        np.testing.assert_array_equal(b.to_numpy(grad), expected_grad)


def test_bias_activation_names_an_unknown_activation():
    b = get_backend("cpu", "float64")
    with pytest.raises(nnx.InputValueError, match="activation='swish'"):
        b.bias_activation(np.ones((2, 2)), np.ones((1, 2)), "swish")


# ---------------- host-side checks of features and targets (nnx.backend.host)
@SMALL
@given(X=st.one_of(features(np.float64), features(np.float32), features(np.int32)))
def test_check_features_accepts_valid_arrays(X):
    out = host.check_features(X, "X", X.shape[1])
    assert out.shape == X.shape
    np.testing.assert_array_equal(out, X)


@SMALL
@given(X=features(), data=st.data())
def test_check_features_rejects_any_nan_or_inf(X, data):
    i = data.draw(st.integers(0, X.shape[0] - 1))
    j = data.draw(st.integers(0, X.shape[1] - 1))
    X[i, j] = data.draw(not_finite)
    with pytest.raises(ValueError, match=r"X contains \d+ NaN or infinite"):
        host.check_features(X)


@SMALL
@given(X=features(), delta=st.integers(1, 3), sign=st.sampled_from([-1, 1]))
def test_check_features_rejects_another_feature_count(X, delta, sign):
    n_features = X.shape[1] + sign * delta
    if n_features < 1:
        n_features = X.shape[1] + delta
    with pytest.raises(ValueError, match=rf"has {X.shape[1]} features.*built for {n_features}"):
        host.check_features(X, "X", n_features)


@SMALL
@given(shape=st.one_of(st.tuples(dims), st.tuples(dims, dims, dims), st.tuples(st.just(0), dims),
                       st.tuples(dims, st.just(0))))
def test_check_features_rejects_wrong_rank_or_empty(shape):
    with pytest.raises(ValueError, match=r"X (must be 2-D|is empty)"):
        host.check_features(np.zeros(shape))


@SMALL
@given(case=class_ids())
def test_check_targets_one_hot_encodes_valid_ids(case):
    ids, k = case
    out = host.check_targets(ids, len(ids), k, distributions=True)
    assert out.shape == (len(ids), k) and out.dtype == np.float64
    np.testing.assert_array_equal(out.sum(axis=1), 1.0)
    np.testing.assert_array_equal(out.argmax(axis=1), ids)
    # the same ids as floats, as a column, or as one-hot rows give the same targets
    # (with one output, only a classification loss reads 1-D targets as ids)
    np.testing.assert_array_equal(
        host.check_targets(ids.astype(float), len(ids), k, distributions=k == 1), out)
    if k > 1:
        np.testing.assert_array_equal(host.check_targets(ids[:, None], len(ids), k), out)
    np.testing.assert_array_equal(host.check_targets(out, len(ids), k, distributions=True), out)


@SMALL
@given(case=class_ids(), data=st.data())
def test_check_targets_rejects_any_out_of_range_id(case, data):
    ids, k = case
    i = data.draw(st.integers(0, len(ids) - 1))
    ids[i] = data.draw(st.one_of(st.integers(-1000, -1), st.integers(k, k + 1000)))
    with pytest.raises(ValueError, match=rf"class ids must be in \[0, {k - 1}\]"):
        host.check_targets(ids, len(ids), k, distributions=k == 1)


@SMALL
@given(case=class_ids(), extra=st.integers(-3, 3).filter(bool))
def test_check_targets_rejects_mismatched_rows(case, extra):
    ids, k = case
    n_rows = len(ids) + extra
    if n_rows < 1:
        n_rows = len(ids) + 1
    with pytest.raises(ValueError, match=rf"y has {len(ids)} rows but X has {n_rows}"):
        host.check_targets(ids, n_rows, k)


@SMALL
@given(case=class_ids(), data=st.data(), distributions=st.booleans())
def test_check_targets_rejects_any_nan_or_inf(case, data, distributions):
    ids, k = case
    rows = np.eye(k)[ids]
    i = data.draw(st.integers(0, rows.shape[0] - 1))
    j = data.draw(st.integers(0, k - 1))
    rows[i, j] = data.draw(not_finite)
    with pytest.raises(ValueError, match=r"y.*(NaN|infinite)"):
        host.check_targets(rows, len(ids), k, distributions=distributions)
    floats = ids.astype(float)
    floats[i] = rows[i, j]
    with pytest.raises(ValueError, match=r"y"):
        host.check_targets(floats, len(ids), k)


@pytest.mark.parametrize("y", [np.array([0.5, -1.25, 3.0]), np.array([1, 0, 1])],
                         ids=["values", "binary"])
def test_one_output_regression_takes_1d_targets_as_values(y):
    """A one-output network with a regression loss: 1-D targets are the values
    (as a column), not class ids; a classification loss still reads ids."""
    np.testing.assert_array_equal(host.check_targets(y, 3, 1), y[:, None].astype(float))
    net = NeuralNetwork([Dense(4, "tanh"), Dense(1, "linear")], "mse", seed=0)
    X = np.random.default_rng(0).standard_normal((3, 2))
    assert float(net.train_batch(X, y)) == float(net.train_batch(X, y[:, None]))
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 0\]"):
        host.check_targets(np.array([0, 1, 0]), 3, 1, distributions=True)



def test_float_targets_of_a_several_output_regression_say_the_shape_they_need():
    """1-D float targets for a network with 2 outputs and a regression loss
    were refused as "class ids must be integers", with no word of the
    (rows, outputs) shape a regression wants."""
    y = np.linspace(0.1, 0.9, 5)
    with pytest.raises(ValueError, match=r"class ids must be integers.*regression targets for "
                                         r"a network with 2 outputs have shape \(5, 2\)"):
        host.check_targets(y, 5, 2)
    with pytest.raises(ValueError, match=r"non-integer value\(s\)\)$"):  # classification
        host.check_targets(y, 5, 2, distributions=True)


@pytest.mark.parametrize("n", [1_000, 300_001, 700_000])
def test_the_cpu_updates_in_blocks_and_threads_equal_the_reference(cpu_updates, n):
    """The NumPy backend runs large updates in blocks shared among threads;
    every element must get exactly the reference's passes (momentum, SGD) or
    its formula (Adam), whatever the block it falls in."""
    from nnx.backend.base import Backend as Reference
    b = get_backend("cpu", "float64")
    rng = np.random.default_rng(n)
    p, g = rng.standard_normal(n), rng.standard_normal(n)
    state = {k: rng.random(n) for k in ("v", "m", "s")}
    lr, t = b.asarray(0.01), b.asarray(np.int64(7))
    mine = [a.copy() for a in (p, state["v"], state["m"], state["s"])]
    ref = [a.copy() for a in mine]
    b.momentum_step(mine[0], g, mine[1], lr, 0.9)
    Reference.momentum_step(b, ref[0], g, ref[1], lr, 0.9)
    np.testing.assert_array_equal(mine[0], ref[0])
    np.testing.assert_array_equal(mine[1], ref[1])
    b.sgd_step(mine[0], g, lr)
    Reference.sgd_step(b, ref[0], g, lr)
    np.testing.assert_array_equal(mine[0], ref[0])
    b.adam_step(mine[0], g, mine[2], mine[3], lr, t, 0.9, 0.999, 1e-8, 0.01)
    Reference.adam_step(b, ref[0], g, ref[2], ref[3], lr, t, 0.9, 0.999, 1e-8, 0.01)
    for a, r in zip(mine, ref):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-14 * np.abs(r).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_axpy_adds_in_place_on_every_backend(backend_name, dtype):
    """``y += a * x`` into y's own storage: contiguous arrays (BLAS on the CPU)
    and strided views (the generic path) alike."""
    b = get_backend(backend_name, dtype)
    rng = np.random.default_rng(0)
    x0, y0 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    views = [lambda a: a]
    if backend_name != "strict":  # the array API has no writable views
        views += [lambda a: a.T, lambda a: a[::2]]
    for view in views:
        x, y = b.asarray(x0.copy()), b.asarray(y0.copy())  # asarray may not copy
        yv, xv = view(y), view(x)
        b.axpy(0.25, xv, yv)
        want = y0.copy()
        view(want)[...] += 0.25 * view(x0)
        tol = 1e-6 if dtype == "float32" else 1e-15
        np.testing.assert_allclose(_host(b, y), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gather_batch_fetches_the_batch_at_the_device_counter(backend_name, dtype):
    """Rows ``order[p * stride + offset:][:n]`` for a counter ``p`` on the
    device, as one slice of the order and a take would give them; the
    counter is read on the device (the simulated one refuses host reads)."""
    b = get_backend(backend_name, dtype)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((50, 7)), rng.standard_normal((50, 3))
    order = rng.permutation(50)
    Xd, Yd = b.asarray(X), b.asarray(Y)
    order_d = b.asarray(order, dtype=b.xp.int64)
    position = b.zeros_int((1,))
    xb, yb = b.empty((4, 7)), b.empty((4, 3))
    for p in range(5):  # batches of 4 rows, two ranks: this is rank 1 (offset 4)
        b.assign(position, p)
        assert b.gather_batch(Xd, order_d, position, 8, 4, xb) is xb
        b.gather_batch(Yd, order_d, position, 8, 4, yb)
        rows = order[p * 8 + 4:p * 8 + 8]
        np.testing.assert_array_equal(b.to_numpy(xb), X[rows].astype(dtype))
        np.testing.assert_array_equal(b.to_numpy(yb), Y[rows].astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_class_ids_become_the_batchs_one_hot_rows(backend_name, dtype):
    """Targets kept as class ids: a batch's one-hot rows, taken by indices
    (``one_hot_rows``) or at the device counter (``gather_one_hot``), are
    those of the ids' rows, 1 in the class's column and 0 elsewhere."""
    b = get_backend(backend_name, dtype)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 5, 40)
    ids[:5] = [0, 4, 4, 0, 2]  # the first and last columns too
    eye = np.eye(5, dtype=dtype)
    ids_d = b.asarray(ids, dtype=b.xp.int32)
    order = rng.permutation(40)
    order_d = b.asarray(order, dtype=b.xp.int64)
    out = b.empty((6, 5))
    b.assign(out, 7.0)  # what is not a class's 1 is written 0
    idx = b.asarray(np.array([0, 1, 2, 3, 4, 39]), dtype=b.xp.int64)
    assert b.one_hot_rows(ids_d, idx, out) is out
    np.testing.assert_array_equal(b.to_numpy(out), eye[ids[[0, 1, 2, 3, 4, 39]]])
    assert b.one_hot_rows(ids_d, order_d[6:12], out) is out  # a slice of the order, as fit
    np.testing.assert_array_equal(b.to_numpy(out), eye[ids[order[6:12]]])
    position = b.zeros_int((1,))
    for p in range(5):  # batches of 6 rows, two ranks: this is rank 1 (offset 6)
        b.assign(position, p)
        assert b.gather_one_hot(ids_d, order_d, position, 12, 6, out) is out
        rows = order[np.arange(p * 12 + 6, p * 12 + 12) % 40]  # the last wraps around
        np.testing.assert_array_equal(b.to_numpy(out), eye[ids[rows]])
    many = rng.integers(0, 1500, 40)  # classes past the CPU's table of identity rows
    wide = b.empty((6, 1500))
    b.one_hot_rows(b.asarray(many, dtype=b.xp.int32), order_d[:6], wide)
    np.testing.assert_array_equal(b.to_numpy(wide), np.eye(1500, dtype=dtype)[many[order[:6]]])


def test_gather_batch_wraps_positions_past_the_end(backend_name):
    """A counter past the epoch's last batch reads from the order's start
    again (rows of the data, never memory beyond the order)."""
    b = get_backend(backend_name, "float64")
    X = np.arange(30.0).reshape(10, 3)
    order = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    position, out = b.zeros_int((1,)), b.empty((4, 3))
    b.assign(position, 2)  # rows 8, 9, 10, 11 of the order: 8, 9, then 0, 1
    b.gather_batch(b.asarray(X), b.asarray(order, dtype=b.xp.int64), position, 4, 0, out)
    np.testing.assert_array_equal(b.to_numpy(out), X[[1, 0, 9, 8]])


@pytest.mark.parametrize("backend_name_", ["cpu", "strict"])
def test_adam_with_a_bias_corrected_eps_is_scikit_learns_step(backend_name_):
    """``eps_bias_corrected=True`` is scikit-learn's Adam: p -= lr sqrt(1-b2^t)
    / (1-b1^t) m / (sqrt(v) + eps), in closed form; the CPU's blocked
    override and the reference agree with it."""
    b = get_backend(backend_name_, "float64")
    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal(300), rng.standard_normal(300)
    m0, v0 = rng.standard_normal(300) * 0.1, rng.random(300) * 0.01
    lr, t, b1, b2, eps = 0.01, 3, 0.9, 0.999, 1e-3
    m = b1 * m0 + (1 - b1) * g
    v = b2 * v0 + (1 - b2) * g * g
    want = p0 - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    for method in {type(b).adam_step, Backend.adam_step}:
        p, mm, vv = (b.asarray(a.copy()) for a in (p0, m0, v0))  # the CPU would not copy
        method(b, p, b.asarray(g), mm, vv, lr, b.asarray(np.int64(t), dtype=b.xp.int64),
               b1, b2, eps, 0.0, eps_bias_corrected=True)
        np.testing.assert_allclose(b.to_numpy(p), want, rtol=1e-13, atol=1e-15)


def test_sparse_rows_of_another_dtype_share_their_index_arrays():
    """astype copied the int32 indices and the row pointers beside the values."""
    import scipy.sparse as sp

    from nnx.backend import host
    X = sp.random(200, 50, density=0.1, format="csr", random_state=0)
    for cls in (sp.csr_matrix, sp.csr_array):
        got = host.check_sparse_features(cls(X), dtype="float32")
        assert type(got) is cls and got.dtype == np.float32
        assert np.shares_memory(got.indices, X.indices) and np.shares_memory(got.indptr, X.indptr)
        np.testing.assert_array_equal(got.toarray(), X.astype(np.float32).toarray())
    assert host.check_sparse_features(X, dtype="float64") is X


def _update_in_a_child(n):
    """A large momentum step (the update threads' blocks), in a forked child."""
    b = get_backend("cpu", "float32")
    p, g, v = (np.full(n, 1.0, np.float32) for _ in range(3))
    b.momentum_step(p, g, v, b.asarray(0.1), 0.9)
    return float(p[0])


def test_a_forked_child_updates_large_parameters_without_hanging(monkeypatch):
    """The update threads' pool survived a fork without its threads: a child
    forked after the parent's first large update waited for them forever
    (multiprocessing's default start method on Linux, without Numba)."""
    import multiprocessing

    from nnx.backend import fused, numpy_backend
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    fused.kernels()
    monkeypatch.setitem(fused._STATE, "kernels", None)  # the NumPy passes, threaded
    n = 4 * numpy_backend._PARALLEL
    assert _update_in_a_child(n) == 0.0  # 1 - (0.9 * 1 + 0.1 * 1): the pool started here
    assert "pool" in numpy_backend._POOL
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_update_in_a_child, (n,)).get(timeout=60) == 0.0


def test_the_fused_loops_compile_once_whichever_threads_ask():
    """Two threads compiling at once: the second wrapped an already jitted
    function again (TypeError from fit, rarely)."""
    import threading
    import time

    from nnx.backend import fused
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)
        return "loops", ""
    saved = dict(fused._STATE)
    fused._STATE.clear()
    real, fused._compile = fused._compile, slow
    try:
        threads = [threading.Thread(target=fused.kernels) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert calls == [1] and fused.kernels() == "loops"
    finally:
        fused._compile = real
        fused._STATE.clear()
        fused._STATE.update(saved)


def test_a_threads_temporaries_are_bounded_over_many_shapes(monkeypatch):
    """One buffer per shape, for the thread's life: a sweep over twenty
    widths kept 254 MiB of them in the main thread."""
    from nnx.backend import numpy_backend
    monkeypatch.setattr(numpy_backend, "_SCRATCH_BYTES", 1 << 20)
    b = numpy_backend.NumpyBackend("float64")
    kept = b._tmp((100,))
    for width in range(1000, 1100):
        b._tmp((width, 10))
        b._tmp((100,))  # in use all along: kept as the most recent
    scratch = b._local.scratch
    assert sum(a.nbytes for a in scratch.values()) <= 1 << 20
    assert scratch[(100,)] is kept and len(scratch) < 20
    # one temporary past the bound stays among the most recent, not freed and
    # made again at every other call (a large layer's L2 step beside small ones)
    big = b._tmp((400, 400))  # 1.2 MiB
    for _ in range(3):
        b._tmp((100,))
        assert b._tmp((400, 400)) is big


def test_the_checks_of_one_hot_rows_take_no_copy_of_them():
    """Whether target rows are one class each (the trainer's _class_rows) took
    two int64 copies of them (18 MB for 8 MB of float32 rows); the check that
    rows are distributions an (n, k) boolean mask."""
    import tracemalloc

    from nnx.train.trainer import _class_rows
    y = np.zeros((4000, 500), np.float32)
    y[np.arange(4000), np.arange(4000) % 500] = 1
    for check, limit in ((lambda: _class_rows(get_backend("cpu"), y), y.nbytes),
                         (lambda: host.check_targets(y, 4000, 500, distributions=True,
                                                     dtype="float32"), y.nbytes / 4)):
        tracemalloc.start()
        try:
            check()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < limit, (peak, limit)
    assert _class_rows(get_backend("cpu"), y)
    y[7, 3] = 0.5
    assert not _class_rows(get_backend("cpu"), y)
    y[7, 3], y[7, 7] = -1.0, 1.0
    with pytest.raises(nnx.InputValueError):
        host.check_targets(y, 4000, 500, distributions=True, dtype="float32")
