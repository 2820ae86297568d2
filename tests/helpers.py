"""Helpers shared by several test files: small networks, data and runs.
Fixtures built on them live in conftest.py; hypothesis strategies in
strategies.py."""

import numpy as np
import pytest
from reference import RefMLP, one_hot

import nnx
from nnx import Dense, NeuralNetwork

# ------ a small classifier and its data, for the checks of arguments and data
N_IN, N_OUT, N_ROWS = 4, 3, 12
NAN, INF = float("nan"), float("inf")


def strict_xp():
    """array-api-strict, or a skip of this one test (not the module: `pytest -m gpu`
    must report no skip for a file whose gpu tests all ran)."""
    return pytest.importorskip("array_api_strict")


def make_net(loss="softmax_cross_entropy", backend="cpu"):
    out = "linear" if loss == "softmax_cross_entropy" else "sigmoid"
    return NeuralNetwork([Dense(5, "tanh"), Dense(N_OUT, out)], loss, seed=0, backend=backend)


def good_data(n=N_ROWS):
    X = np.random.default_rng(0).normal(size=(n, N_IN))
    return X, np.arange(n) % N_OUT


def params(net):
    return np.array(net.backend.to_numpy(net.get_parameters()))


def assert_usable(net, trainer, X, y, before):
    """The failed call changed nothing, and a good fit still works."""
    np.testing.assert_array_equal(params(net), before)
    history = trainer.fit(X, y, epochs=2, eval_every=1, restart=True)
    assert history.epochs_run == 2 and np.isfinite(params(net)).all()


def on_device1(a):
    xp_strict = strict_xp()
    return xp_strict.asarray(np.asarray(a), device=xp_strict.Device("device1"))


def with_value(a, index, value):
    a = np.array(a, dtype=np.float64)
    a[index] = value
    return a


X0, Y0 = good_data()
ONE_HOT = np.eye(N_OUT)[Y0]

# id -> (X, y, exception, message pattern); y=None means "the good labels"
BAD_DATA = {
    "rows-differ": (X0, Y0[:-1], ValueError, r"y\w* has 11 rows but X\w* has 12"),
    "too-many-features": (np.ones((N_ROWS, N_IN + 1)), None, ValueError,
                          r"X\w* has 5 features, but the network was built for 4"),
    "too-few-features": (np.ones((N_ROWS, N_IN - 1)), None, ValueError,
                         r"X\w* has 3 features, but the network was built for 4"),
    "label-negative": (X0, with_value(Y0, 3, -1).astype(int), ValueError,
                       r"class ids must be in \[0, 2\].* -1 "),
    "label-too-large": (X0, with_value(Y0, 3, N_OUT).astype(int), ValueError,
                        r"class ids must be in \[0, 2\].* to 3"),
    "label-non-integer": (X0, with_value(Y0, 3, 1.5), ValueError, r"integer"),
    "label-huge-float": (X0, with_value(Y0, 3, 1e20), ValueError,
                         r"class ids must be in \[0, 2\].*1e\+20"),
    "one-hot-sums-to-two": (X0, with_value(ONE_HOT, (2, 0), 1.0), ValueError,
                            r"sum to one; row 2 sums to 2"),
    "one-hot-sums-to-zero": (X0, with_value(ONE_HOT, (5, 2), 0.0), ValueError,
                             r"sum to one; row 5 sums to 0"),
    "one-hot-negative": (X0, with_value(with_value(ONE_HOT, (0, 0), 1.5), (0, 1), -0.5),
                         ValueError, r"non-negative"),
    "X-nan": (with_value(X0, (1, 2), NAN), None, ValueError, r"X\w* contains 1 NaN or infinite"),
    "X-inf": (with_value(X0, (0, 0), INF), None, ValueError, r"X\w* contains 1 NaN or infinite"),
    "X-minus-inf": (with_value(X0, (4, 1), -INF), None, ValueError, r"NaN or infinite"),
    "X-overflows-float32": (with_value(X0, (0, 0), 1e39), None, ValueError,
                            r"X\w*.*(float32|range|infinite)"),
    "X-negative-overflow": (with_value(X0, (2, 3), -1e39), None, ValueError,
                            r"X\w* has magnitudes up to 1e\+39, beyond the range of float32"),
    "X-inf-and-minus-inf": (with_value(with_value(X0, (0, 0), INF), (1, 1), -INF), None,
                            ValueError, r"X\w* contains 2 NaN or infinite"),
    "y-nan-ids": (X0, with_value(Y0, 0, NAN), ValueError, r"y\w*.*(NaN|infinite)"),
    "y-inf-ids": (X0, with_value(Y0, 0, INF), ValueError, r"y\w*.*(NaN|infinite)"),
    "y-nan-one-hot": (X0, with_value(ONE_HOT, (0, 0), NAN), ValueError,
                      r"y\w* contains NaN or infinite"),
    "X-strings": (np.full((N_ROWS, N_IN), "1.0"), None, TypeError, r"X\w* must hold numbers"),
    "X-object": (X0.astype(object), None, TypeError, r"X\w* must hold numbers, got dtype object"),
    "X-complex": (X0.astype(complex), None, TypeError, r"X\w* must hold real numbers"),
    "y-strings": (X0, Y0.astype(str), TypeError, r"y\w* must hold numbers"),
    "y-durations-with-NaT": (X0, np.where(np.arange(N_ROWS) == 0, np.timedelta64("NaT", "ns"),
                                          Y0.astype("m8[ns]")),
                             TypeError, r"y\w* must hold numbers, got dtype timedelta64"),
    "X-dates": (X0.astype("M8[D]"), None, TypeError,
                r"X\w* must hold numbers, got dtype datetime64"),
    "y-object": (X0, Y0.astype(object), TypeError, r"y\w* must hold numbers, got dtype object"),
    "X-zero-rows": (np.ones((0, N_IN)), np.zeros(0, int), ValueError, r"X\w* is empty"),
    "X-zero-features": (np.ones((N_ROWS, 0)), None, ValueError, r"X\w* is empty"),
    "y-empty": (X0, np.zeros(0, int), ValueError, r"y\w* is empty"),
    "y-scalar": (X0, np.array(1), ValueError, r"y\w* is empty or a scalar"),
    "y-wrong-columns": (X0, np.zeros((N_ROWS, N_OUT + 2)), ValueError,
                        r"y\w* must be class ids of shape \(12,\) or targets of shape \(12, 3\)"),
    "X-1d": (X0[:, 0], None, ValueError, r"X\w* must be 2-D.*shape \(12,\)"),
    "X-3d": (X0.reshape(N_ROWS, 2, 2), None, ValueError, r"X\w* must be 2-D.*\(12, 2, 2\)"),
}
X_ONLY = [k for k, (_, y, _, _) in BAD_DATA.items() if y is None]


# ----- Trainer.fit on 8 features and 3 classes (test_trainer, test_callbacks)
N_FEATURES, N_CLASSES = 8, 3


def make_data(seed=0, n=200, n_val=100):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N_FEATURES, N_CLASSES))
    X = rng.standard_normal((n, N_FEATURES))
    Xv = rng.standard_normal((n_val, N_FEATURES))
    return X, (X @ w).argmax(1), Xv, (Xv @ w).argmax(1)


def make_classifier(seed=1, dtype="float32", dropout=1.0):
    return nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=dropout), nnx.Dense(3, "linear")],
                             nnx.SoftmaxCrossEntropy(), seed=seed, dtype=dtype)


def ref_loss(flat, X, ids):
    """Softmax cross-entropy of the 8-16-3 tanh/linear net with flat params ``flat``."""
    sizes = [(N_FEATURES, 16), (1, 16), (16, 3), (1, 3)]
    parts, k = [], 0
    for r, c in sizes:
        parts.append(np.asarray(flat[k:k + r * c], dtype=np.float64).reshape(r, c))
        k += r * c
    ref = RefMLP(parts[0::2], parts[1::2], ["tanh", "linear"], loss="ce")
    return ref.loss_and_grads(X, one_hot(ids, N_CLASSES))[0]


def fit_with_snapshots(net, opt, *args, **kwargs):
    snaps = {}

    def cb(epoch, record):
        if record is not None:
            snaps[epoch] = params(net)

    hist = nnx.Trainer(net, opt).fit(*args, callback=cb, **kwargs)
    return hist, snaps


# -------------------------- a short run that checkpoints, resumes or diverges
# (test_resume, test_trainer, test_callbacks)
EPOCHS = 6


def run_data(n=150):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 10))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    return X, y


def make_run(seed=11):
    net = nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=0.8), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=seed)
    opt = nnx.SGDMomentum(0.2, momentum=0.9, final_lr=0.02, decay_type="exponential")
    return net, opt


def fit_run(net, opt, **kw):
    X, y = run_data()
    if not any(isinstance(c, nnx.EarlyStopping) for c in kw.get("callbacks", ())):
        kw.setdefault("patience", 10)  # (beside a given EarlyStopping, fit refuses it)
    return nnx.Trainer(net, opt).fit(X[:120], y[:120], X[120:], y[120:], epochs=EPOCHS,
                                     eval_every=2, batch_size=16, seed=5, **kw)


# ---------------- optimisers and schedules: a float64 network and its batches
# (test_optim, test_schedules)
def tiny_net(seed=0):
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=seed, dtype="float64")
    net.build(5)
    return net


def small_net(backend="cpu", dtype="float64", seed=3):
    net = nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(4, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=seed, backend=backend, dtype=dtype)
    net.build(5)
    return net


def batches(n_steps, rows=9, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((rows, 5)), rng.integers(0, 4, rows)) for _ in range(n_steps)]


def host_params(net):
    return [net.backend.to_numpy(p).astype(np.float64) for p in net.params()]


def torch_or_skip():
    return pytest.importorskip("torch", reason="PyTorch is not installed")
