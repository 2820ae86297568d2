"""Input validation at nnx's public entry points (issue 6): every bad input
raises ValueError/TypeError (or an nnx subclass) before any work starts, with a
message naming the argument, the value and what was expected, and the network
stays usable afterwards."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnx
from nnx import SGD, Dense, Dropout, NeuralNetwork, SGDMomentum, Trainer, accuracy
from nnx import data as nnx_data
from nnx.backend import BACKENDS, host
from nnx.checkpoint import CheckpointError
from nnx.checkpoint import write as write_checkpoint
from nnx.init import INITIALIZERS
from nnx.losses import LOSSES
from nnx.ops import ACTIVATIONS
from nnx.optimizers import DECAY_TYPES


def strict_xp():
    """array-api-strict, or a skip of this one test (not the module: `pytest -m gpu`
    must report no skip for a file whose gpu tests all ran)."""
    return pytest.importorskip("array_api_strict")


REPO = Path(__file__).resolve().parents[1]
N_IN, N_OUT, N_ROWS = 4, 3, 12
NAN, INF = float("nan"), float("inf")
SMALL = settings(max_examples=50, deadline=None)


# ------------------------------------------------------------------ helpers
def make_net(loss="softmax_cross_entropy", backend="cpu"):
    out = "linear" if loss == "softmax_cross_entropy" else "sigmoid"
    return NeuralNetwork([Dense(5, "tanh"), Dense(N_OUT, out)], loss, seed=0, backend=backend)


def good_data(n=N_ROWS):
    X = np.random.default_rng(0).normal(size=(n, N_IN))
    return X, np.arange(n) % N_OUT


def params(net):
    return np.array(net.backend.to_numpy(net.get_parameters()))


@pytest.fixture
def trained():
    """A small CPU network fitted once: (net, trainer, X, y)."""
    net = make_net()
    X, y = good_data()
    trainer = Trainer(net, SGD(0.1))
    trainer.fit(X, y, epochs=2, eval_every=1)
    return net, trainer, X, y


def assert_usable(net, trainer, X, y, before):
    """The failed call changed nothing, and a good fit still works."""
    np.testing.assert_array_equal(params(net), before)
    history = trainer.fit(X, y, epochs=2, eval_every=1)
    assert history.epochs_run == 2 and np.isfinite(params(net)).all()


def on_device1(a):
    xp_strict = strict_xp()
    return xp_strict.asarray(np.asarray(a), device=xp_strict.Device("device1"))


def with_value(a, index, value):
    a = np.array(a, dtype=np.float64)
    a[index] = value
    return a


# -------------------------------------------------------------- bad data
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


@pytest.mark.parametrize("entry", ["fit", "train_batch"])
@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_rejected_before_training(trained, case, entry):
    """Bad X/y in fit and train_batch: a clear error, weights untouched."""
    net, trainer, X, y = trained
    bad_X, bad_y, exc, pattern = BAD_DATA[case]
    bad_y = Y0[: len(bad_X)] if bad_y is None else bad_y
    before = params(net)
    with pytest.raises(exc, match=pattern) as info:
        if entry == "fit":
            trainer.fit(bad_X, bad_y, epochs=2, eval_every=1)
        else:
            net.train_batch(bad_X, bad_y)
    assert isinstance(info.value, nnx.InputError)  # a refusal, not an accident
    assert_usable(net, trainer, X, y, before)


@pytest.mark.parametrize("case", X_ONLY)
def test_bad_features_are_rejected_by_forward_and_predict(trained, case):
    """forward/predict check X exactly like fit does."""
    net, _, _, _ = trained
    bad_X, _, exc, pattern = BAD_DATA[case]
    with pytest.raises(exc, match=pattern):
        net.forward(bad_X)
    with pytest.raises(exc, match=pattern):
        net.predict(bad_X)


@pytest.mark.parametrize("case", ["X-nan", "label-too-large", "rows-differ", "X-strings"])
def test_bad_validation_set_is_named_and_rejected(trained, case):
    """A bad validation=(X_val, y_val) or X_test/y_test is caught before training."""
    net, trainer, X, y = trained
    bad_X, bad_y, exc, pattern = BAD_DATA[case]
    bad_y = Y0[: len(bad_X)] if bad_y is None else bad_y
    before = params(net)
    val_pattern = pattern.replace(r"X\w*", "X_val").replace(r"y\w*", "y_val")
    with pytest.raises(exc, match=val_pattern):
        trainer.fit(X, y, epochs=2, eval_every=1, validation=(bad_X, bad_y))
    test_pattern = pattern.replace(r"X\w*", "X_test").replace(r"y\w*", "y_test")
    with pytest.raises(exc, match=test_pattern):
        trainer.fit(X, y, bad_X, bad_y, epochs=2, eval_every=1)
    assert_usable(net, trainer, X, y, before)


def test_huge_finite_data_whose_sum_overflows_is_accepted():
    """The finite check sums the data first; a sum that overflows although
    every value is finite must not be taken for an infinity."""
    net = make_net()
    X, y = good_data()
    X = np.full_like(X, 3e38, dtype=np.float32)
    X[::2] = -3e38
    X[0, 0] = 3e38  # the columns no longer cancel: the float32 sum overflows
    with np.errstate(all="ignore"):
        assert not np.isfinite(X.sum())
    with np.errstate(all="ignore"):  # the products overflow: the data is valid all the same
        net.train_batch(X, y)


def test_mse_targets_with_nan_or_float32_overflow_are_rejected():
    """Regression targets (MSE): NaN rows and values beyond the compute dtype."""
    net = make_net("mse")
    X, _ = good_data()
    with pytest.raises(ValueError, match=r"y contains NaN or infinite"):
        net.train_batch(X, with_value(np.full((N_ROWS, N_OUT), 0.5), (3, 1), NAN))
    with pytest.raises(ValueError, match=r"y.*(float32|range|infinite)"):
        net.train_batch(X, with_value(np.full((N_ROWS, N_OUT), 0.5), (3, 1), 1e39))


def test_python_lists_are_host_data_not_a_foreign_device(trained):
    """Nested lists are host data: accepted or rejected as data, never 'not on this device'."""
    net, _, X, y = trained
    out = net.forward(X.tolist())
    assert out.shape == (N_ROWS, N_OUT)
    loss = net.train_batch(X.tolist(), y.tolist())
    assert math.isfinite(float(loss))


# ------------------------------------------------------- training settings
FIT_SETTINGS = [(name, bad) for name in ("epochs", "batch_size", "eval_every", "patience")
                for bad in (0, -1, 2.5, True, "10", None)
                if (name, bad) not in (("eval_every", None),  # the default: 10 or epochs
                                       ("patience", None))]  # no early stopping


@pytest.mark.parametrize("name, bad", FIT_SETTINGS, ids=[f"{n}={v!r}" for n, v in FIT_SETTINGS])
def test_fit_counts_must_be_positive_integers(trained, name, bad):
    """epochs, batch_size, eval_every and patience: positive integers only."""
    net, trainer, X, y = trained
    before = params(net)
    kwargs = {"epochs": 3, "eval_every": 1, name: bad}
    with pytest.raises((ValueError, TypeError),
                       match=re.escape(f"{name}={bad!r}") + ".*positive integer"):
        trainer.fit(X, y, **kwargs)
    assert_usable(net, trainer, X, y, before)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"epochs": 3, "eval_every": 5}, r"eval_every=5 is larger than epochs=3"),
    ({"seed": -1}, r"seed=-1 must be a non-negative integer"),
    ({"min_delta": -0.1}, r"min_delta=-0.1 must be a number >= 0"),
    ({"min_delta": NAN}, r"min_delta=nan must be a number >= 0"),
    ({"checkpoint_every": 2}, r"checkpoint_every was given without a checkpoint"),
], ids=["eval_every>epochs", "seed", "min_delta<0", "min_delta-nan", "checkpoint_every"])
def test_fit_rejects_inconsistent_settings(trained, kwargs, pattern):
    """Settings that make no sense together are rejected before training."""
    net, trainer, X, y = trained
    before = params(net)
    kwargs = {"epochs": 3, "eval_every": 1, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        trainer.fit(X, y, **kwargs)
    assert_usable(net, trainer, X, y, before)


def test_fit_rejects_half_a_test_set_and_a_malformed_validation(trained):
    """X_test without y_test, and validation= that is not an (X, y) pair."""
    net, trainer, X, y = trained
    before = params(net)
    with pytest.raises(ValueError, match=r"pass both X_test and y_test"):
        trainer.fit(X, y, X, epochs=2, eval_every=1)
    with pytest.raises((ValueError, TypeError), match=r"validation"):
        trainer.fit(X, y, epochs=2, eval_every=1, validation=X)
    assert_usable(net, trainer, X, y, before)


def test_fit_rejects_a_non_callable_callback_before_training(trained):
    """callback= is checked up front, not after the first epoch has changed the weights."""
    net, trainer, X, y = trained
    before = params(net)
    with pytest.raises(TypeError, match=r"callback"):
        trainer.fit(X, y, epochs=2, eval_every=1, callback=123)
    assert_usable(net, trainer, X, y, before)


def test_trainer_rejects_something_that_is_not_a_network():
    """Trainer(net, optim) with a non-network net."""
    X, y = good_data()
    with pytest.raises(TypeError, match=r"net"):
        Trainer("net", SGD(0.1)).fit(X, y, epochs=1, eval_every=1)


@pytest.mark.parametrize("method", ["predict", "loss_on"])
@pytest.mark.parametrize("bad", [0, -1, 2.5, "10"])
def test_inference_batch_size_must_be_a_positive_integer(trained, method, bad):
    """predict / loss_on chunk sizes are checked like fit's batch_size."""
    net, _, X, y = trained
    args = (X,) if method == "predict" else (X, y)
    with pytest.raises((ValueError, TypeError),
                       match=re.escape(f"batch_size={bad!r}") + ".*positive integer"):
        getattr(net, method)(*args, batch_size=bad)


def test_numpy_scalars_are_accepted_as_settings(trained):
    """Valid numbers of NumPy type (np.int64 from np.arange, np.float32) are not rejected."""
    net, trainer, X, y = trained
    Dense(3, dropout=np.float32(0.5))
    Dropout(np.float32(0.5))
    SGDMomentum(np.float32(0.1), momentum=np.float32(0.9))
    history = trainer.fit(X, y, epochs=np.int64(2), eval_every=np.int64(1),
                          batch_size=np.int64(4), patience=np.int64(2))
    assert history.epochs_run == 2


# ---------------------------------------------------------- hyper-parameters
KEEP_BAD_VALUES = [0, 0.0, -0.1, 1.5, NAN, INF]
KEEP_BAD_TYPES = ["0.5", None, [0.5], True]


@pytest.mark.parametrize("keep", KEEP_BAD_VALUES, ids=repr)
def test_dropout_keep_prob_outside_0_1_is_rejected(keep):
    """Dropout(keep_prob) and Dense(dropout=) must lie in (0, 1]."""
    with pytest.raises(ValueError, match=re.escape(f"keep_prob={keep!r}") + r".*\(0, 1\]"):
        Dropout(keep)
    with pytest.raises(ValueError, match=re.escape(f"dropout={keep!r}") + r".*\(0, 1\]"):
        Dense(3, dropout=keep)


@pytest.mark.parametrize("keep", KEEP_BAD_TYPES, ids=repr)
def test_dropout_keep_prob_that_is_not_a_number_is_rejected(keep):
    """Strings, None, lists and bools are not keep probabilities."""
    got = re.escape(f"must be a number, got {keep!r}")
    with pytest.raises(TypeError, match=r"keep_prob " + got):
        Dropout(keep)
    with pytest.raises(TypeError, match=r"dropout.*" + got):
        Dense(3, dropout=keep)


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, NAN, INF, -INF, "0.1", None], ids=repr)
def test_learning_rate_must_be_positive_and_finite(lr):
    """lr (and final_lr) must be finite numbers > 0."""
    pattern = re.escape(f"lr={lr!r}") + "|" + re.escape(f"lr must be a finite number, got {lr!r}")
    for make in (lambda: SGD(lr), lambda: SGDMomentum(lr)):
        with pytest.raises((ValueError, TypeError), match=pattern):
            make()
    if lr is not None:  # final_lr=None with a decay type is its own error (below)
        final = "final_" + pattern.replace("|", "|final_")
        with pytest.raises((ValueError, TypeError), match=final):
            SGD(0.1, final_lr=lr, decay_type="exponential")


def test_linear_decay_may_end_at_zero_and_final_lr_zero_means_none():
    """The study's Optimizer(lr, final_lr=0, decay_type=None) call shape works;
    linear decay to 0 is valid (exponential decay to 0 is not, above)."""
    assert SGD(0.1, final_lr=0, decay_type=None).final_lr is None
    opt = SGD(0.1, final_lr=0, decay_type="linear")
    opt.setup_decay(5)
    assert opt.lr_at(4) == 0.0
    with pytest.raises(ValueError, match="final_lr=-0.1 must be a number >= 0"):
        SGD(0.1, final_lr=-0.1, decay_type="linear")


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1, 1.5, NAN, INF], ids=repr)
def test_momentum_outside_0_1_is_rejected(momentum):
    """momentum must lie in [0, 1)."""
    with pytest.raises(ValueError, match=re.escape(f"momentum={momentum!r}") + r".*\[0, 1\)"):
        SGDMomentum(0.1, momentum=momentum)


@pytest.mark.parametrize("momentum", ["0.9", None, True], ids=repr)
def test_momentum_that_is_not_a_number_is_rejected(momentum):
    got = re.escape(f"momentum must be a number, got {momentum!r}")
    with pytest.raises(TypeError, match=got):
        SGDMomentum(0.1, momentum=momentum)


@pytest.mark.parametrize("decay", DECAY_TYPES)
def test_decay_type_and_final_lr_come_together(decay):
    """final_lr without a decay type, and a decay type without final_lr."""
    with pytest.raises(ValueError, match=r"final_lr=0\.01 was given without a decay_type.*linear"):
        SGD(0.1, final_lr=0.01)
    with pytest.raises(ValueError, match=rf"decay_type='{decay}' needs a final_lr"):
        SGDMomentum(0.1, decay_type=decay)


UNKNOWN_NAMES = {
    "backend": (lambda v: NeuralNetwork([Dense(3)], "mse", backend=v), "tpu", BACKENDS),
    "activation": (lambda v: Dense(3, activation=v), "relu7", sorted(ACTIVATIONS)),
    "weight_init": (lambda v: Dense(3, weight_init=v), "xavier", sorted(INITIALIZERS)),
    "loss": (lambda v: NeuralNetwork([Dense(3)], v), "cross_entropy", sorted(LOSSES)),
    "decay_type": (lambda v: SGD(0.1, final_lr=0.01, decay_type=v), "cosine", DECAY_TYPES),
}


@pytest.mark.parametrize("name", list(UNKNOWN_NAMES))
def test_unknown_names_are_rejected_with_the_valid_ones(name):
    """An unknown backend/activation/init/loss/decay name lists every valid name."""
    make, bad, valid = UNKNOWN_NAMES[name]
    with pytest.raises(ValueError, match=re.escape(f"{name}={bad!r} is not known")) as info:
        make(bad)
    for ok in valid:
        assert repr(ok) in str(info.value), f"{ok!r} missing from: {info.value}"


@pytest.mark.parametrize("name", list(UNKNOWN_NAMES))
def test_unhashable_names_are_rejected_clearly(name):
    """A list where a name is expected gets the same clear error, not 'unhashable type'."""
    make, bad, _ = UNKNOWN_NAMES[name]
    with pytest.raises((ValueError, TypeError), match=re.escape(name)):
        make([bad])


def test_unknown_dtype_lists_the_supported_ones():
    with pytest.raises(ValueError, match=r"dtype='int8' is not supported.*float32.*float64"):
        NeuralNetwork([Dense(3)], "mse", dtype="int8")


# ------------------------------------------------------------ other devices
def test_array_on_another_device_is_rejected_by_forward_train_batch_fit(trained):
    """An array-api-strict array on device1 given to a CPU network, at every entry point."""
    net, trainer, X, y = trained
    before = params(net)
    Xd, yd = on_device1(X), on_device1(y)
    device = r"not on this network's device \(cpu\)"
    with pytest.raises(ValueError, match=r"X is .*array_api_strict.* " + device):
        net.forward(Xd)
    with pytest.raises(ValueError, match=r"X is .*array_api_strict.* " + device):
        net.predict(Xd)
    with pytest.raises(ValueError, match=r"X is .*array_api_strict.* " + device):
        net.train_batch(Xd, y)
    with pytest.raises(ValueError, match=r"y is .*array_api_strict.* " + device):
        net.train_batch(X, yd)
    with pytest.raises(ValueError, match=r"X_train is .*array_api_strict.* " + device):
        trainer.fit(Xd, y, epochs=2, eval_every=1)
    with pytest.raises(ValueError, match=r"y_train is .*array_api_strict.* " + device):
        trainer.fit(X, yd, epochs=2, eval_every=1)
    with pytest.raises(ValueError, match=r"X_val is .*array_api_strict.* " + device):
        trainer.fit(X, y, epochs=2, eval_every=1, validation=(Xd, y))
    assert_usable(net, trainer, X, y, before)


def test_array_on_another_device_is_rejected_by_accuracy(trained):
    """accuracy(net, X, y) with X or y on another device names the device."""
    net, _, X, y = trained
    with pytest.raises(ValueError, match=r"X is .*array_api_strict.* not on this network's device"):
        accuracy(net, on_device1(X), y)
    with pytest.raises(ValueError, match=r"y .*array_api_strict.*device"):
        accuracy(net, X, on_device1(y))


def test_simulated_device_network_rejects_an_array_on_the_host_device():
    """On the simulated device, an array-api-strict array on CPU_DEVICE is foreign too."""
    xp_strict = strict_xp()
    net = make_net(backend="strict")
    host_side = xp_strict.asarray(np.ones((3, N_IN)), device=xp_strict.Device("CPU_DEVICE"))
    with pytest.raises(ValueError, match=r"not on this network's device \(strict\)"):
        net.forward(host_side)
    assert net.forward(np.ones((3, N_IN))).shape == (3, N_OUT)  # host NumPy is uploaded


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("y, exc, pattern", [
    (Y0[:5], ValueError, r"y has 5 rows but X has 12"),
    (np.r_[Y0[:-1], 3], ValueError, r"class ids must be in \[0, 2\].*to 3"),
    (np.r_[Y0[:-1], -1], ValueError, r"class ids must be in \[0, 2\].*-1"),
    (with_value(Y0, 0, 0.5), ValueError, r"integer"),
    (with_value(ONE_HOT, (0, 1), 1.0), ValueError, r"sum to one"),
    (Y0.astype(str), TypeError, r"y must hold numbers"),
    (np.array(1), (ValueError, TypeError), r"\by\b.*(scalar|shape|rows)"),
], ids=["rows", "label-3", "label-negative", "non-integer", "one-hot", "strings", "scalar"])
def test_accuracy_rejects_bad_labels(trained, y, exc, pattern):
    """accuracy checks its labels like fit does."""
    net, _, X, _ = trained
    with pytest.raises(exc, match=pattern):
        accuracy(net, X, y)
    assert 0.0 <= accuracy(net, X, Y0) <= 1.0


def test_accuracy_rejects_bad_features(trained):
    net, _, X, y = trained
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite"):
        accuracy(net, with_value(X, (0, 0), NAN), y)
    with pytest.raises(ValueError, match=r"X has 5 features, but the network was built for 4"):
        accuracy(net, np.ones((N_ROWS, 5)), y)


# --------------------------------------------------------------- checkpoints
_unpickled = []


def _record_unpickle():
    _unpickled.append(True)
    return "executed"


class _Payload:
    def __reduce__(self):
        return (_record_unpickle, ())


@pytest.fixture
def saved(trained, tmp_path):
    net = trained[0]
    return net.save(tmp_path / "model.npz")


def test_load_missing_file(tmp_path):
    """NeuralNetwork.load on a missing file, a truncated file, a foreign file."""
    path = tmp_path / "nope.npz"
    with pytest.raises(CheckpointError, match=re.escape(repr(str(path))) + " does not exist"):
        NeuralNetwork.load(path)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1], ids=["empty", "10-bytes", "half", "last-byte"])
def test_load_truncated_file(saved, keep):
    data = Path(saved).read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) - 1)
    Path(saved).write_bytes(data[:n])
    what = "not an nnx checkpoint: it is empty" if n == 0 else "truncated"
    with pytest.raises(CheckpointError, match=re.escape(repr(str(saved))) + ".*" + what):
        NeuralNetwork.load(saved)


@pytest.mark.parametrize("content, what", [
    (b"hello, this is not a checkpoint\n", "it is not a .npz archive"),
    (b"\x80\x04\x95 pickled bytes", "it is not a .npz archive"),
    (None, "it holds a single .npy array"),
])
def test_load_a_file_that_is_not_an_archive(tmp_path, content, what):
    """A text file used to be reported with NumPy's advice to load it with
    allow_pickle=True, which no checkpoint needs and nobody should follow."""
    path = tmp_path / "notes.npz"
    if content is None:
        np.save(tmp_path / "w.npy", np.zeros(3))
        content = (tmp_path / "w.npy").read_bytes()
    path.write_bytes(content)
    name = re.escape(repr(str(path)))
    with pytest.raises(CheckpointError, match=name + " is not an nnx checkpoint: " + what) as info:
        NeuralNetwork.load(path)
    assert "pickle" not in str(info.value)


def test_load_plain_npz_has_no_header(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, params=np.zeros(3))
    with pytest.raises(CheckpointError, match=re.escape(repr(str(path))) + " has no nnx header"):
        NeuralNetwork.load(path)


def test_load_never_unpickles(tmp_path):
    """An .npz with a pickled object array is refused without running its code."""
    path = tmp_path / "evil.npz"
    np.savez(path, params=np.array([_Payload()], dtype=object))
    _unpickled.clear()
    with pytest.raises(CheckpointError, match=re.escape(repr(str(path)))):
        NeuralNetwork.load(path)
    assert _unpickled == []


def test_load_altered_array_fails_its_checksum(saved):
    """A re-packed file whose parameters changed after writing: checksum error."""
    with np.load(saved) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["params"] = arrays["params"] + 1
    np.savez(saved, **arrays)
    with pytest.raises(CheckpointError, match=re.escape(repr(str(saved))) + ".*checksum"):
        NeuralNetwork.load(saved)


@pytest.mark.parametrize("layers", [["x"], [{"type": "Dense"}], "abc", None, [{"type": "Conv"}]],
                         ids=["str-entries", "missing-keys", "str", "none", "unknown-type"])
def test_load_header_describing_no_valid_network(tmp_path, layers):
    """A well-formed file whose header does not describe a network: CheckpointError."""
    path = tmp_path / "odd.npz"
    header = {"network": {"layers": layers, "loss": {"name": "mse"}, "dtype": "float32",
                          "seed": 0, "n_in": N_IN}}
    write_checkpoint(path, header, {"params": np.zeros(15, np.float32)})
    with pytest.raises(CheckpointError, match=re.escape(repr(str(path))) + ".*no valid network"):
        NeuralNetwork.load(path)


# ------------------------------------------------------ property-based tests
dims = st.integers(1, 6)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
not_finite = st.sampled_from([NAN, INF, -INF])


@st.composite
def features(draw, dtype=np.float64):
    shape = draw(st.tuples(dims, dims))
    if np.issubdtype(dtype, np.integer):
        return draw(hnp.arrays(dtype, shape, elements=st.integers(-100, 100)))
    return draw(hnp.arrays(dtype, shape, elements=finite))


@st.composite
def class_ids(draw):
    k = draw(st.integers(1, 6))
    ids = draw(hnp.arrays(np.int64, st.integers(1, 8), elements=st.integers(0, k - 1)))
    return ids, k


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


def _prop_net():
    net = make_net()
    net.build(N_IN)
    return net


@SMALL
@given(rows=dims, data=st.data())
def test_as_input_uploads_valid_features_in_the_network_dtype(rows, data):
    net = _prop_net()
    X = data.draw(hnp.arrays(np.float64, (rows, N_IN), elements=finite))
    out = net.as_input(X)
    assert net.backend.owns(out) and out.shape == (rows, N_IN) and out.dtype == np.float32
    np.testing.assert_array_equal(out, X.astype(np.float32))


@SMALL
@given(X=hnp.arrays(np.float64, st.tuples(dims, st.just(N_IN)),
                    elements=st.floats(allow_nan=False, allow_infinity=False)))
@example(X=np.full((1, N_IN), 1e39))
def test_as_input_never_returns_non_finite_values(X):
    """Finite float64 input either fits the network's float32 or is rejected."""
    net = _prop_net()
    try:
        out = net.as_input(X)
    except ValueError:
        return
    assert np.isfinite(out).all(), f"as_input turned finite {X} into {out}"


@SMALL
@given(X=features(), data=st.data())
def test_as_input_rejects_nan_inf_and_other_widths(X, data):
    net = _prop_net()
    if X.shape[1] != N_IN:
        with pytest.raises(ValueError, match=rf"X has {X.shape[1]} features"):
            net.as_input(X)
        return
    X[data.draw(st.integers(0, X.shape[0] - 1)), data.draw(st.integers(0, N_IN - 1))] = \
        data.draw(not_finite)
    with pytest.raises(ValueError, match=r"NaN or infinite"):
        net.as_input(X)


@SMALL
@given(ids=hnp.arrays(np.int64, st.integers(1, 8), elements=st.integers(0, N_OUT - 1)),
       data=st.data())
def test_as_target_valid_ids_and_rejections(ids, data):
    net = _prop_net()
    n = len(ids)
    out = net.as_target(ids, n)
    assert net.backend.owns(out) and out.shape == (n, N_OUT) and out.dtype == np.float32
    np.testing.assert_array_equal(out.argmax(axis=1), ids)
    with pytest.raises(ValueError, match=rf"y has {n} rows but X has {n + 1}"):
        net.as_target(ids, n + 1)
    bad = ids.copy()
    bad[data.draw(st.integers(0, n - 1))] = data.draw(
        st.one_of(st.integers(-50, -1), st.integers(N_OUT, 50)))
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 2\]"):
        net.as_target(bad, n)
    floats = ids.astype(float)
    floats[data.draw(st.integers(0, n - 1))] = data.draw(not_finite)
    with pytest.raises(ValueError, match=r"y"):
        net.as_target(floats, n)


# ------------------------------------------------------------- command line
def nnx_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-m", "nnx", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def assert_one_line_error(r, pattern):
    assert r.returncode != 0, f"exit code 0; stdout: {r.stdout!r}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert re.search(pattern, lines[0]), lines[0]


CLI_TRAIN = [
    (["--batch-size", "0", "--epochs", "2"], r"batch.size.*0.*positive integer"),
    (["--epochs", "-1"], r"epochs.*-1.*positive integer"),
    (["--eval-every", "999", "--epochs", "5"], r"eval.every.*999.*epochs.*5"),
    (["--momentum", "1.0", "--epochs", "2"], r"momentum.*1\.0.*\[0, 1\)"),
    (["--lr", "0", "--epochs", "2"], r"lr.*0.*> 0"),
    (["--lr", "nan", "--epochs", "2"], r"lr.*nan"),
    (["--dropout", "0", "--epochs", "2"], r"dropout.*0.*\(0, 1\]"),
    (["--decay", "linear", "--epochs", "2"], r"linear.*final.lr"),
    (["--final-lr", "0.01", "--epochs", "2"], r"final.lr.*0\.01.*decay"),
]


@pytest.mark.parametrize("args, pattern", CLI_TRAIN, ids=[" ".join(a) for a, _ in CLI_TRAIN])
def test_cli_train_bad_value_is_one_line_on_stderr(tmp_path, args, pattern):
    """nnx train with a bad value: non-zero exit, one stderr line, no traceback, no file."""
    out = tmp_path / "model.npz"
    r = nnx_cli("train", *args, "--quiet", "--out", str(out), cwd=tmp_path)
    assert_one_line_error(r, pattern)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_cli_evaluate_damaged_checkpoint_is_one_line_on_stderr(tmp_path, damage):
    """nnx evaluate on a corrupted, truncated or missing checkpoint."""
    path = tmp_path / "model.npz"
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    elif damage == "truncated":
        net = NeuralNetwork([Dense(8, "tanh"), Dense(10, "linear")], "softmax_cross_entropy")
        net.build(64)  # the bundled digits: 64 features, 10 classes
        data = Path(net.save(path)).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    r = nnx_cli("evaluate", str(path), cwd=tmp_path)
    assert_one_line_error(r, r"nnx evaluate: error: checkpoint .*model\.npz.*"
                             r"(truncated|not an nnx checkpoint|does not exist)")


# ------------------------------------------- found by the third review
def test_a_bad_checkpoint_path_is_refused_before_training(tmp_path):
    """checkpoint= was first used at the first save, after eval_every epochs
    of training were already spent."""
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "afolder").mkdir()
    X, y = good_data()
    for path, message in [(tmp_path / "afolder", "names a folder"),
                          (123, "must be a file path"),
                          (tmp_path / "afile" / "run.npz", "is not a folder"),
                          (str(tmp_path / "new") + os.sep, "names a folder")]:
        net = make_net()
        with pytest.raises(ValueError) as err:
            Trainer(net, SGD(0.1)).fit(X, y, epochs=4, eval_every=2, checkpoint=path)
        shown = os.fspath(path) if isinstance(path, os.PathLike) else path
        assert str(err.value).startswith(f"checkpoint={shown!r}: ") and message in str(err.value)
        assert not net.built  # refused before the network was even built
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "afolder"]


def test_a_network_that_cannot_be_checkpointed_is_refused_before_training(tmp_path):
    class Swish(ACTIVATIONS["tanh"]):  # a user's activation: checkpoints cannot describe it
        pass
    net = NeuralNetwork([Dense(5, Swish()), Dense(N_OUT, "linear")], "softmax_cross_entropy")
    X, y = good_data()
    with pytest.raises(TypeError, match=r"checkpoint=.*cannot describe Swish"):
        Trainer(net, SGD(0.1)).fit(X, y, epochs=2, checkpoint=tmp_path / "run.npz")
    assert not net.built


def test_a_validation_pair_holding_none_is_refused():
    """validation=(None, y_val) silently turned evaluation and early stopping off."""
    X, y = good_data()
    for pair in [(None, y), (None, None), (X, None)]:
        with pytest.raises(ValueError, match=r"validation=\(X_val, y_val\) holds None"):
            Trainer(make_net(), SGD(0.1)).fit(X, y, epochs=2, validation=pair)


def test_a_refused_fit_leaves_the_network_unbuilt():
    """fit built the network from X_train before checking y_train, so after a
    refusal the network kept the rejected input's width."""
    X, y = good_data()
    net = make_net()
    trainer = Trainer(net, SGD(0.1))
    with pytest.raises(ValueError, match="y_train: class ids"):
        trainer.fit(X[:, :3], y + 10, epochs=1)
    with pytest.raises(ValueError, match="X_test has 3 features, but X_train has 4"):
        trainer.fit(X, y, X[:, :3], y, epochs=1)
    assert not net.built
    assert trainer.fit(X, y, epochs=1).epochs_run == 1


def test_predict_on_an_unbuilt_network_is_refused():
    """predict() built the network with random weights and answered from them."""
    net = make_net()
    with pytest.raises(RuntimeError, match="predict: the network has no parameters yet"):
        net.predict(X0)
    assert not net.built


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself
def test_matrix_input_is_element_wise_and_masked_input_refused():
    """np.matrix passed through: dropout's ``input_ * mask`` became a matrix
    product, and a later evaluation failed deep inside NumPy. A masked array's
    mask was dropped, so a NaN under it reached training."""
    X, y = good_data()
    nets = [NeuralNetwork([Dense(5, "tanh", dropout=0.5), Dense(N_OUT, "linear")],
                          "softmax_cross_entropy", seed=3) for _ in range(2)]
    a, b = nets[0].forward(np.asmatrix(X), inference=False), nets[1].forward(X, inference=False)
    assert type(a) is np.ndarray
    np.testing.assert_array_equal(a, b)
    history = Trainer(nets[0], SGD(0.1)).fit(np.asmatrix(X), y, np.asmatrix(X), y, epochs=2,
                                             eval_every=1)
    assert history.records[-1]["loss"] is not None
    masked = np.ma.masked_array(np.where(X > 1.5, np.nan, X), mask=X > 1.5)
    with pytest.raises(TypeError, match="X_train is a masked array"):
        Trainer(make_net(), SGD(0.1)).fit(masked, y, epochs=1)


def test_a_numpy_scalar_is_refused_as_not_2d():
    """A NumPy scalar was reported as an array of another device."""
    with pytest.raises(ValueError, match=r"X must be 2-D \(rows, features\), got shape \(\)"):
        make_net().forward(np.float64(1.0))


def test_empty_device_arrays_are_refused_before_training():
    """Arrays already on the device skipped the empty check: a 0-row set
    trained a whole epoch of nothing and failed with ZeroDivisionError."""
    strict_xp()
    net = make_net(backend="strict")
    b = net.backend
    X, y = good_data()
    Y = b.asarray(np.eye(N_OUT)[y])
    for Xd, Yd in [(b.asarray(X[:0]), Y[:0, :]), (b.asarray(X[:, :0]), Y)]:
        with pytest.raises(ValueError, match=r"X_train has shape .*neither of them 0"):
            Trainer(net, SGD(0.1)).fit(Xd, Yd, epochs=2)


def test_load_blames_bad_arguments_not_the_file(tmp_path):
    net = make_net()
    net.build(N_IN)
    path = net.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="backend='tpu' is not known") as err:
        NeuralNetwork.load(path, backend="tpu")
    assert not isinstance(err.value, CheckpointError)
    with pytest.raises(ValueError, match="dtype='float16' is not supported") as err:
        NeuralNetwork.load(path, dtype="float16")
    assert not isinstance(err.value, CheckpointError)
    assert NeuralNetwork.load(path, dtype=np.float64).backend.dtype_name == "float64"


def test_dtype_and_a_backend_object_must_agree():
    """dtype was ignored without a word when backend was a Backend object."""
    from nnx import get_backend
    b64 = get_backend("cpu", "float64")
    layers = lambda: [Dense(N_OUT, "linear")]  # noqa: E731
    with pytest.raises(ValueError, match="dtype='float32' differs from the dtype of backend"):
        NeuralNetwork(layers(), "mse", backend=b64, dtype="float32")
    assert NeuralNetwork(layers(), "mse", backend=b64).backend is b64
    assert NeuralNetwork(layers(), "mse", backend=b64, dtype=np.float64).backend is b64
    assert NeuralNetwork(layers(), "mse", dtype=np.float64).backend is b64
    assert NeuralNetwork(layers(), "mse").backend.dtype_name == "float32"
    assert get_backend(b64) is b64  # no dtype given: the object as it is
    from nnx.study import LADDER
    assert LADDER[4].build(N_IN, N_OUT, backend=b64)[0].backend is b64


@pytest.mark.parametrize("eps", [None, "a", True, [1e-9]])
def test_softmax_eps_must_be_a_number(eps):
    from nnx import SoftmaxCrossEntropy
    with pytest.raises(TypeError, match="SoftmaxCrossEntropy eps must be a number"):
        SoftmaxCrossEntropy(eps)


@pytest.mark.parametrize("layers", [Dense(3), None, "Dense"])
def test_layers_that_are_not_a_list_are_named(layers):
    with pytest.raises(TypeError, match="layers must be a list of Layer objects"):
        NeuralNetwork(layers, "mse")


def test_a_one_output_softmax_network_is_refused():
    """Its loss is 0 with no gradient whatever the data: it 'trained' silently."""
    with pytest.raises(ValueError, match="needs one output per class, but the last layer has 1"):
        NeuralNetwork([Dense(1, "linear")], "softmax_cross_entropy")
    NeuralNetwork([Dense(1, "linear")], "mse")  # one output is fine for regression


@pytest.mark.parametrize("activation, message", [
    (Dropout(0.5), "activation cannot be Dropout"),
    (Dropout, "activation cannot be Dropout"),
    (ACTIVATIONS["tanh"].__mro__[1], "activation must be a name or an activation operation"),
    (Dense, "activation must be a name or an activation operation"),
])
def test_operations_that_are_not_activations_are_refused(activation, message):
    from nnx import BiasAdd, WeightMultiply
    with pytest.raises(TypeError, match=message):
        Dense(3, activation)
    for cls in (WeightMultiply, BiasAdd):
        with pytest.raises(TypeError, match="activation must be a name"):
            Dense(3, cls)


def test_set_parameters_takes_a_list_and_checks_its_length():
    net = make_net()
    net.build(N_IN)
    n = params(net).size
    net.set_parameters([0.5] * n)
    assert (params(net) == 0.5).all()
    with pytest.raises(ValueError, match=rf"parameters have shape \(2,\), expected \({n},\)"):
        net.set_parameters([1.0, 2.0])


@pytest.mark.parametrize("X_train, X_test, error, message", [
    (with_value(X0, (0, 0), NAN), X0, ValueError, "X_train contains 1 NaN"),
    (X0, with_value(X0, (1, 1), INF), ValueError, "X_test contains 1 NaN or infinite"),
    (X0.astype(complex), X0, TypeError, "X_train must hold real numbers"),
    (X0.astype(str), X0, TypeError, "X_train must hold numbers"),
    (X0 * 1e300, X0, ValueError, "X_train feature 0: its mean or std overflows"),
    (X0, X0 * 1e40, ValueError, "X_test row 0 lies beyond the float32 range"),
])
def test_standardize_refuses_what_it_cannot_scale(X_train, X_test, error, message):
    """standardize had no checks: NaN gave all-NaN output, complex lost its
    imaginary part, a huge spread gave all zeros, values beyond float32 inf."""
    from nnx.data import standardize
    with pytest.raises(error, match=re.escape(message)):
        standardize(X_train, X_test)


def test_standardize_still_takes_an_empty_test_set():
    from nnx.data import standardize
    _, Z = standardize(X0, np.zeros((0, N_IN)))
    assert Z.shape == (0, N_IN) and Z.dtype == np.float32


def test_a_custom_activation_keeps_attributes_named_like_pass_state():
    """Copies of an operation dropped every attribute called ``mask``, so a
    user's activation that keeps a fixed mask lost it inside Dense."""
    class Gate(ACTIVATIONS["linear"]):
        def __init__(self, mask):
            super().__init__()
            self.mask = mask

        def _output(self, inference):
            return self.input_ * self.mask

    net = NeuralNetwork([Dense(2, Gate(np.array([[1.0, 0.0]])))], "mse", seed=0)
    out = net.forward(X0[:3, :2])
    assert (out[:, 1] == 0).all()


def test_an_activation_that_overrides_forward_is_still_accepted():
    class Doubler(ACTIVATIONS["linear"].__mro__[1]):
        def forward(self, input_, inference=False):
            self.input_, self.output = input_, 2 * input_
            return self.output

    net = NeuralNetwork([Dense(3, Doubler())], "mse", seed=0)
    net.build(N_IN)
    W, B = list(net.params())
    np.testing.assert_allclose(net.forward(X0), 2 * (X0 @ W + B), rtol=1e-5, atol=1e-6)


def test_a_backend_set_by_hand_on_a_standalone_loss_is_kept():
    """With the loss following each prediction's dtype, a backend assigned by
    hand was silently replaced at the next forward."""
    from nnx import SoftmaxCrossEntropy, get_backend
    loss = SoftmaxCrossEntropy()
    loss.backend = get_backend("cpu", "float64")
    value = loss.forward(np.zeros((2, 3), np.float32), np.eye(3, dtype=np.float32)[:2])
    assert value.dtype == np.float64


@pytest.mark.parametrize("value", [NAN, -0.1, INF, "fast"])
def test_the_learning_rate_setter_checks_its_value(value):
    """optim.lr = nan was taken, and every later step wrote NaN parameters."""
    optim = SGDMomentum(0.1)
    with pytest.raises((ValueError, TypeError), match="lr"):
        optim.lr = value
    assert optim.lr == 0.1


def test_a_linear_decay_may_end_at_zero():
    """The setter's first check refused 0, which a linear decay to
    final_lr=0 reaches at its last epoch."""
    X, y = good_data()
    history = Trainer(make_net(), SGD(0.1, final_lr=0, decay_type="linear")).fit(
        X, y, X, y, epochs=5, eval_every=1)
    assert [r["lr"] for r in history.records] == pytest.approx([0.1, 0.075, 0.05, 0.025, 0.0])


def test_fit_checks_the_evaluation_set_once_not_at_every_evaluation(monkeypatch):
    """On the CPU a NumPy evaluation set counted as host data at every
    evaluation, so it was scanned for NaN and re-converted each time."""
    calls = []
    real = host.check_features
    monkeypatch.setattr(host, "check_features",
                        lambda X, name="X", *a, **k: calls.append(name) or real(X, name, *a, **k))
    X, y = good_data()
    Trainer(make_net(), SGD(0.1)).fit(X, y, X, y, epochs=5, eval_every=1)
    assert sorted(calls) == ["X_test", "X_train"]


REFUSALS = {  # one refused argument per public entry point, across the modules
    "Dense neurons": lambda: Dense(0),
    "Dense activation": lambda: Dense(3, "softplus"),
    "Dropout keep": lambda: Dropout(1.5),
    "SGD lr": lambda: SGD(-1),
    "momentum": lambda: SGDMomentum(0.1, momentum=1.0),
    "decay without final_lr": lambda: SGD(0.1, decay_type="linear"),
    "network layers": lambda: NeuralNetwork([], "softmax_cross_entropy"),
    "network loss": lambda: NeuralNetwork([Dense(2)], "hinge"),
    "network dtype": lambda: NeuralNetwork([Dense(2)], "mse", dtype="float16"),
    "network backend": lambda: NeuralNetwork([Dense(2)], "mse", backend="tpu"),
    "fit epochs": lambda: Trainer(make_net(), SGD(0.1)).fit(*good_data(), epochs=0),
    "fit callback": lambda: Trainer(make_net(), SGD(0.1)).fit(*good_data(), callback=3),
    "Trainer net": lambda: Trainer("net", SGD(0.1)),
    "predict width": lambda: _fitted().predict(np.ones((2, N_IN + 1))),
    "save meta": lambda: _fitted().save(os.devnull, meta=[1]),
    "standardize widths": lambda: nnx_data.standardize(np.ones((3, 2)), np.ones((3, 4))),
    "dataset name": lambda: nnx_data.load_dataset("cifar"),
    "one_hot ids": lambda: nnx_data.one_hot(np.array([0, 5]), 3),
}


def _fitted():
    net = make_net()
    Trainer(net, SGD(0.1)).fit(*good_data(), epochs=1)
    return net


@pytest.mark.parametrize("case", list(REFUSALS))
def test_every_refusal_is_an_input_error_and_still_a_value_or_type_error(case):
    """The command line prints nnx's refusals as one line and lets anything
    else show its traceback, so every refusal must be an nnx.InputError; code
    that catches ValueError or TypeError keeps working."""
    with pytest.raises(nnx.InputError) as info:
        REFUSALS[case]()
    assert isinstance(info.value, (ValueError, TypeError))


def test_nnx_raises_no_bare_value_or_type_error():
    """A new check written as ``raise ValueError(...)`` would reach the command
    line's users as a traceback; checks raise InputValueError/InputTypeError."""
    root = Path(nnx.__file__).parent
    bare = [f"{path.relative_to(root)}:{i}" for path in sorted(root.rglob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"raise (ValueError|TypeError)\b", line)]
    assert bare == []


def test_a_zip_whose_members_are_not_arrays_is_not_a_checkpoint(tmp_path):
    """NumPy hands over a member that is not a .npy file as bytes, and loading
    ended in AttributeError: 'bytes' object has no attribute 'tobytes'."""
    import zipfile
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__header__.npy", b"{}")
        z.writestr("params.npy", b"not an array")
    with pytest.raises(CheckpointError, match=r"its members \['__header__', 'params'\] are "
                                               "not arrays"):
        NeuralNetwork.load(path)


def test_a_checkpoint_that_is_not_a_regular_file_is_named_so():
    """/dev/null was reported as a checkpoint that does not exist."""
    with pytest.raises(CheckpointError, match="'/dev/null' is not a regular file"):
        NeuralNetwork.load("/dev/null")


@pytest.mark.parametrize("call", ["save", "load", "resume"])
def test_a_checkpoint_path_that_is_not_a_path_is_refused_by_name(trained, call):
    """save(123), load(None) and fit(resume=123) raised os.fspath's bare TypeError."""
    net, trainer, X, y = trained
    with pytest.raises(nnx.InputTypeError, match="a checkpoint path must be a str, bytes or "
                                                 "os.PathLike, got int 123"):
        if call == "save":
            net.save(123)
        elif call == "load":
            NeuralNetwork.load(123)
        else:
            trainer.fit(X, y, epochs=1, resume=123)


def test_a_network_too_large_to_allocate_is_refused_and_left_as_it_was(monkeypatch):
    """Dense(10**19) failed in NumPy with 'Maximum allowed dimension exceeded';
    and a MemoryError part-way through a build (NumPy's calloc succeeds for
    buffers that do not fit, the float64 weight draw then fails) left the
    network half-built: 'built', but with no input width, saving a checkpoint
    that would not load."""
    net = make_net()
    net.build(N_IN)
    before, ops = net.get_parameters(), [list(la.operations) for la in net.layers]
    with pytest.raises(nnx.InputValueError, match=r"widths \[4, 10000000000000000000, 3\] has "
                                                  r".* parameters, more than any array"):
        NeuralNetwork([Dense(10**19), Dense(N_OUT)], "mse").build(N_IN)
    calls = []
    real = net.backend.host_normal

    def fails_on_the_second_layer(*args):
        calls.append(args)
        if len(calls) == 3:  # W1, B1, then W2
            raise MemoryError("Unable to allocate 26.8 GiB")
        return real(*args)

    monkeypatch.setattr(net.backend, "host_normal", fails_on_the_second_layer)
    with pytest.raises(nnx.InputValueError, match=r"widths \[6, 5, 3\] has 53 parameters: "
                                                  r"too many to allocate in float32 \(MemoryError"):
        net.build(N_IN + 2)
    monkeypatch.undo()
    # as it was: input width, parameters, operations, and the weight generator
    assert net.n_in == N_IN
    np.testing.assert_array_equal(net.get_parameters(), before)
    assert [list(la.operations) for la in net.layers] == ops
    Trainer(net, SGD(0.1)).fit(*good_data(), epochs=1, restart=False)
    fresh = make_net()
    fresh.build(N_IN)
    net.build(N_IN + 2)
    fresh.build(N_IN + 2)  # the same draws: the failed build consumed none of them
    np.testing.assert_array_equal(net.get_parameters(), fresh.get_parameters())


# ---- gaps found by the third mutation audit: each test kills a surviving mutant
def test_a_non_integer_class_id_is_shown_as_it_is():
    """The message showed the first label rather than the offending one."""
    X, _ = good_data(3)
    with pytest.raises(nnx.InputValueError, match=r"got 1\.5 \(row 1; 1 non-integer"):
        Trainer(make_net(), SGD(0.1)).fit(X, np.array([0.0, 1.5, 1.0]), epochs=1)


def test_one_hot_rows_must_sum_to_one_within_a_millionth():
    X, _ = good_data(2)
    near = np.array([[0.5, 0.5000004, 0.0], [0.0, 1.0, 0.0]])  # within 1e-6: taken
    Trainer(make_net(), SGD(0.1)).fit(X, near, epochs=1)
    off = np.array([[0.5, 0.500002, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(nnx.InputValueError, match="row 0 sums to 1"):
        Trainer(make_net(), SGD(0.1)).fit(X, off, epochs=1)


@pytest.mark.parametrize("dtype", ["foo", "float16", 3])
def test_a_dtype_numpy_does_not_know_is_refused_by_name(dtype):
    """NumPy's own 'data type not understood' TypeError could escape."""
    with pytest.raises(nnx.InputValueError, match=re.escape(f"dtype={dtype!r} is not supported")):
        NeuralNetwork([Dense(2)], "mse", dtype=dtype)


def test_the_same_layer_twice_is_refused():
    """One Dense object twice gave a buffer with slots for two layers and the
    operations of one: silently wrong weights."""
    d = Dense(3, "tanh")
    with pytest.raises(nnx.InputValueError, match="the same Layer object appears twice"):
        NeuralNetwork([d, d, Dense(2)], "mse")


def test_device_targets_of_the_wrong_shape_are_named():
    """Without the check the loss failed later with 'target has shape ...'."""
    pytest.importorskip("array_api_strict")
    net = make_net(backend="strict")
    X, _ = good_data(4)
    Xd, yd = net.backend.asarray(X), net.backend.asarray(np.zeros((4, 2)))
    with pytest.raises(nnx.InputValueError, match=r"y_train on the device must have shape "
                                                  r"\(4, 3\), got \(4, 2\)"):
        Trainer(net, SGD(0.1)).fit(Xd, yd, epochs=1)


def test_save_refuses_extra_names_that_would_replace_its_own(trained, tmp_path):
    """save(extra={"params": ...}) silently replaced the saved weights;
    "__header__" and a non-string name failed inside numpy.savez."""
    net = trained[0]
    for bad in ("params", "__header__"):
        with pytest.raises(nnx.InputValueError, match=f"extra name {bad!r} is reserved"):
            net.save(tmp_path / "m.npz", extra={bad: np.zeros(3)})
    with pytest.raises(nnx.InputTypeError, match="extra names must be strings, got int 1"):
        net.save(tmp_path / "m.npz", extra={1: np.zeros(3)})
    assert not (tmp_path / "m.npz").exists()
    path = net.save(tmp_path / "m.npz", extra={"note": np.arange(3)})
    np.testing.assert_array_equal(NeuralNetwork.load(path).get_parameters(),
                                  net.get_parameters())


class _L1(nnx.Loss):
    """A loss of one's own, as the Loss docstring describes."""

    def _compute(self):
        xp, d = self.backend.xp, self.prediction - self.target
        return xp.asarray(xp.sum(xp.abs(d)) / d.shape[0]), xp.sign(d) / d.shape[0]


class _NamedL1(_L1):
    name = "l1"


class _DoubledCE(nnx.SoftmaxCrossEntropy):
    """A subclass of a built-in loss: a loss of one's own too."""

    def _compute(self):
        value, grad = super()._compute()
        return 2 * value, 2 * grad


@pytest.mark.parametrize("loss", [_L1, _NamedL1, _DoubledCE])
def test_a_custom_loss_trains_and_is_refused_by_checkpoints_up_front(loss, tmp_path):
    """save() and fit(checkpoint=...) failed with AttributeError (no name), or
    wrote a file that load() then called 'no valid network'."""
    X, y = good_data()
    if not loss().classification:  # a regression loss: real-valued targets
        y = np.random.default_rng(1).normal(size=(N_ROWS, N_OUT))
    net = NeuralNetwork([Dense(5, "tanh"), Dense(N_OUT, "linear")], loss(), seed=0)
    Trainer(net, SGD(0.1)).fit(X, y, epochs=2)  # it trains
    message = r"cannot describe _\w+: checkpoints hold the built-in losses only"
    with pytest.raises(nnx.InputTypeError, match=message):
        net.save(tmp_path / "m.npz")
    with pytest.raises(nnx.InputTypeError, match="checkpoint=.*" + message):
        Trainer(net, SGD(0.1)).fit(X, y, epochs=2, checkpoint=tmp_path / "run.npz")
    assert not list(tmp_path.iterdir())


def test_training_through_a_forward_only_activation_says_what_is_missing():
    """An activation with _output but no _input_grad is fine for inference;
    training through it raised a bare NotImplementedError()."""
    class Doubler(nnx.Operation):
        def _output(self, inference):
            return 2 * self.input_

    net = NeuralNetwork([Dense(3, Doubler()), Dense(N_OUT, "linear")], "mse", seed=0)
    X, _ = good_data()
    net.forward(X)  # inference works
    with pytest.raises(NotImplementedError, match="Doubler defines no _input_grad"):
        net.train_batch(X, np.zeros((N_ROWS, N_OUT)))


@pytest.mark.parametrize("rng", [0, __import__("random").Random(0), np.random.RandomState(0),
                                 np.random])
def test_dropout_refuses_an_rng_that_is_not_a_generator(rng):
    """Dropout(0.5, rng=0) failed at the first forward with AttributeError,
    and random.Random or a RandomState with a TypeError about keywords."""
    with pytest.raises(nnx.InputTypeError, match="Dropout rng must be a NumPy or CuPy Generator"):
        Dropout(0.5, rng=rng)
    Dropout(0.5, rng=np.random.default_rng(0)).forward(np.ones((2, 2)))
