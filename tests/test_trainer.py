"""Trainer.fit: its records and history, the evaluation sets, seeds,
shuffles and restart, the data uploaded once and never copied, divergence,
and the settings it refuses before any training."""

import re
import warnings

import numpy as np
import pytest
from helpers import (
    BAD_DATA,
    N_CLASSES,
    N_FEATURES,
    NAN,
    Y0,
    assert_usable,
    fit_run,
    fit_with_snapshots,
    good_data,
    make_classifier,
    make_data,
    make_net,
    make_run,
    params,
    ref_loss,
    run_data,
)

import nnx
from nnx import SGD, Trainer
from nnx.backend import host
from nnx.backend.numpy_backend import NumpyBackend


# -------------------------------------------------------- history and records
def test_history_records_match_reference_losses():
    """Full-batch epochs: train_loss of epoch e is the loss at the parameters after
    epoch e-1, loss is the evaluation loss at the parameters after epoch e."""
    X, y, Xv, yv = make_data(n=50, n_val=30)
    net = make_classifier(dtype="float64")
    per_epoch = {}
    opt = nnx.SGD(0.3, final_lr=0.1, decay_type="linear")
    trainer = nnx.Trainer(net, opt)
    start = {}

    def cb(epoch, record):
        per_epoch[epoch] = (params(net), record)

    # parameters before the first epoch: restart draws them again, so reset a twin
    twin = make_classifier(dtype="float64")
    twin.build(N_FEATURES)
    twin.reset()
    start[0] = params(twin)
    hist = trainer.fit(X, y, Xv, yv, epochs=6, eval_every=3, batch_size=64, callback=cb)
    assert hist.epochs == [3, 6]
    for rec in hist.records:
        assert set(rec) == {"epoch", "loss", "accuracy", "lr", "train_loss"}
        e = rec["epoch"]
        assert per_epoch[e][1] is rec
        before = per_epoch[e - 1][0] if e > 1 else start[0]
        assert rec["train_loss"] == pytest.approx(ref_loss(before, X, y), rel=1e-10)
        assert rec["loss"] == pytest.approx(ref_loss(per_epoch[e][0], Xv, yv), rel=1e-10)
        assert rec["lr"] == pytest.approx(0.3 - 0.2 * (e - 1) / 5, rel=1e-12)
        assert isinstance(rec["loss"], float) and isinstance(rec["train_loss"], float)
    assert all(per_epoch[e][1] is None for e in (1, 2, 4, 5))
    assert hist.lrs == [r["lr"] for r in hist.records]


@pytest.mark.parametrize("epochs, evaluated", [(3, [3]), (10, [10]), (25, [10, 20, 25])])
def test_default_eval_every_is_ten_or_the_whole_run(epochs, evaluated):
    """Left out, eval_every is the study's 10, or the run's length when that is
    shorter: fit(X, y, epochs=3) trains and evaluates at its end."""
    X, y, Xv, yv = make_data()
    net = make_classifier()
    history = nnx.Trainer(net, nnx.SGD(0.01)).fit(X, y, Xv, yv, epochs=epochs, batch_size=50,
                                                  patience=10)
    assert [r["epoch"] for r in history.records] == evaluated


def test_history_without_evaluation_set():
    X, y, _, _ = make_data()
    hist = nnx.Trainer(make_classifier(), nnx.SGD(0.1)).fit(X, y, epochs=4, eval_every=2)
    assert hist.epochs == [2, 4] and hist.losses == [None, None]
    assert all(r["train_loss"] > 0 for r in hist.records)
    assert not hist.stopped_early and hist.epochs_run == 4


def test_train_loss_is_the_mean_batch_loss():
    """With a learning rate too small to move the weights, every batch sees
    the same network, and the mean of equal-sized batches' losses is the
    loss on the whole set (a sum over batches was not caught)."""
    net = make_classifier(dtype="float64")
    X, y, _, _ = make_data()
    history = nnx.Trainer(net, nnx.SGD(1e-12)).fit(X, y, epochs=1, batch_size=20)
    whole = float(net.loss_on(X, y))
    assert history.records[-1]["train_loss"] == pytest.approx(whole, rel=1e-9)


# -------------- evaluation sets: validation=(X_val, y_val) and X_test, y_test
def test_validation_set_is_used_for_early_stopping_not_the_test_set():
    X, y, Xt, yt = make_data()
    Xv, yv = Xt[:60], (yt[:60] + 1) % N_CLASSES  # a validation set that training makes worse
    # with the test set alone, training runs to the end
    h_test = nnx.Trainer(make_classifier(), nnx.SGD(0.1)).fit(X, y, Xt, yt, epochs=10, eval_every=2,
                                                      batch_size=20)
    assert not h_test.stopped_early and h_test.best_epoch == 10
    net = make_classifier()
    hist, snaps = fit_with_snapshots(net, nnx.SGD(0.1), X, y, Xt, yt, epochs=10, eval_every=2,
                                     batch_size=20, validation=(Xv, yv))
    assert hist.stopped_early and hist.best_epoch == 2 and hist.epochs == [2, 4]
    for rec in hist.records:
        p = snaps[rec["epoch"]]
        assert rec["loss"] == pytest.approx(ref_loss(p, Xv, yv), rel=1e-5)
        assert rec["loss"] != pytest.approx(ref_loss(p, Xt, yt), rel=1e-3)
    assert np.array_equal(params(net), snaps[2])


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


def test_test_set_needs_both_halves():
    X, y, Xv, _ = make_data()
    with pytest.raises(ValueError):
        nnx.Trainer(make_classifier(), nnx.SGD(0.1)).fit(X, y, Xv, None, epochs=2, eval_every=1)


def test_fit_rejects_half_a_test_set_and_a_malformed_validation(trained):
    """X_test without y_test, and validation= that is not an (X, y) pair."""
    net, trainer, X, y = trained
    before = params(net)
    with pytest.raises(ValueError, match=r"pass both X_test and y_test"):
        trainer.fit(X, y, X, epochs=2, eval_every=1)
    with pytest.raises((ValueError, TypeError), match=r"validation"):
        trainer.fit(X, y, epochs=2, eval_every=1, validation=X)
    assert_usable(net, trainer, X, y, before)


def test_a_validation_pair_holding_none_is_refused():
    """validation=(None, y_val) silently turned evaluation and early stopping off."""
    X, y = good_data()
    for pair in [(None, y), (None, None), (X, None)]:
        with pytest.raises(ValueError, match=r"validation=\(X_val, y_val\) holds None"):
            Trainer(make_net(), SGD(0.1)).fit(X, y, epochs=2, validation=pair)


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


# ------------------------------------------------ seeds, shuffles and restart
def fit_once(net_seed=1, fit_seed=5, dropout=0.8, **kw):
    X, y, Xv, yv = make_data()
    net = make_classifier(seed=net_seed, dropout=dropout)
    opt = nnx.SGDMomentum(0.1, momentum=0.9, final_lr=0.02, decay_type="exponential")
    hist = nnx.Trainer(net, opt).fit(X, y, Xv, yv, epochs=6, eval_every=2, batch_size=32,
                                     seed=fit_seed, **kw)
    return params(net), [(r["loss"], r["train_loss"]) for r in hist.records]


def test_same_seeds_give_bit_identical_results():
    p1, l1 = fit_once()
    p2, l2 = fit_once()
    assert np.array_equal(p1, p2)
    assert l1 == l2


def test_different_seeds_give_different_results():
    p1, l1 = fit_once()
    p2, l2 = fit_once(net_seed=2)
    p3, l3 = fit_once(fit_seed=6)
    assert not np.array_equal(p1, p2) and l1 != l2
    assert not np.array_equal(p1, p3) and l1 != l3


def test_every_epoch_visits_the_rows_in_a_new_order(monkeypatch):
    """Each epoch's permutation comes from the seed and the epoch number: the
    same order every epoch was not caught by any test."""
    net = make_classifier()
    orders = []
    real = type(net.backend).permutation

    def recording(self, gen, n):
        order = real(self, gen, n)
        orders.append(np.array(order))
        return order
    monkeypatch.setattr(type(net.backend), "permutation", recording)
    X, y, _, _ = make_data()
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=4, batch_size=20, seed=3)
    assert len(orders) == 4
    assert all(sorted(o) == list(range(200)) for o in orders)
    assert len({o.tobytes() for o in orders}) == 4


def test_the_shuffle_is_drawn_on_the_host_not_by_the_device_generator(monkeypatch):
    """The GPU drew each epoch's order on its own generator, so a GPU run and a
    CPU run with one seed trained on differently ordered batches. The order now
    comes from NumPy's generator for every backend: a backend whose device
    generator draws other numbers trains to the same weights, bit for bit,
    when nothing else draws from it (no dropout)."""
    X, y, _, _ = make_data()

    def trained():
        net = make_classifier()
        nnx.Trainer(net, nnx.SGDMomentum(0.1)).fit(X, y, epochs=3, batch_size=20, seed=3)
        return params(net)
    plain = trained()
    monkeypatch.setattr(NumpyBackend, "generator",
                        lambda self, seed: np.random.default_rng(seed + 12345))
    np.testing.assert_array_equal(trained(), plain)


def test_restart_true_reinitialises():
    X, y, Xv, yv = make_data()
    net = make_classifier(dropout=0.8)
    trainer = nnx.Trainer(net, nnx.SGDMomentum(0.1))
    h1 = trainer.fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3)
    p1 = params(net)
    h2 = trainer.fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3, restart=True)
    assert np.array_equal(p1, params(net))
    assert h1.losses == h2.losses and h1.records == h2.records


def test_restart_false_continues_from_current_weights():
    X, y, Xv, yv = make_data()
    a = make_classifier(seed=1)
    ta = nnx.Trainer(a, nnx.SGD(0.1))
    h1 = ta.fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3)
    p1 = params(a)
    h2 = ta.fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3, restart=False)
    # a network with another seed, given the same weights, continues identically
    b = make_classifier(seed=99)
    b.build(N_FEATURES)
    b.set_parameters(b.backend.asarray(p1))
    hb = nnx.Trainer(b, nnx.SGD(0.1)).fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3,
                                          restart=False)
    assert np.array_equal(params(a), params(b))
    assert h2.losses == hb.losses
    assert h2.losses[0] < h1.losses[0]  # it started from trained weights
    assert not np.array_equal(params(a), p1)


# ------------- the data: uploaded once, taken a batch at a time, never copied
@pytest.mark.parametrize("epochs", [2, 8])
def test_fit_does_not_copy_the_dataset_per_epoch(monkeypatch, epochs):
    X, y, Xv, yv = make_data()
    net = make_classifier(dropout=0.8)
    cls = type(net.backend)  # patched on the class, so undo restores it exactly
    real_asarray, real_take, real_copy = cls.asarray, cls.take_rows, cls.copy
    created, batch_rows, copied = [], [], []

    def counting_asarray(self, x, dtype=None):
        out = real_asarray(self, x, dtype)
        if out is not x:  # a conversion or upload happened
            created.append(tuple(out.shape))
        return out

    def counting_take(self, x, idx, out=None):
        rows = real_take(self, x, idx, out=out)
        batch_rows.append(int(rows.shape[0]))
        return rows

    def counting_copy(self, x):
        copied.append(tuple(x.shape))
        return real_copy(self, x)

    monkeypatch.setattr(cls, "asarray", counting_asarray)
    monkeypatch.setattr(cls, "copy", counting_copy)
    monkeypatch.setattr(cls, "take_rows", counting_take)
    opt = nnx.SGDMomentum(0.1, final_lr=0.05, decay_type="linear")
    hist = nnx.Trainer(net, opt).fit(X, y, Xv, yv, epochs=epochs, eval_every=2, batch_size=32,
                                     patience=10)
    assert hist.epochs_run == epochs
    # the training and evaluation sets are converted once each, their labels
    # uploaded as class ids (one-hot rows a batch, or an evaluation's chunk, at
    # a time; they were made whole in float64 and converted, two full-size
    # arrays each); the remaining conversions are the initial weights (2 per
    # layer, drawn by build and restart)
    data = [s for s in created if s and s[0] in (200, 100)]
    assert sorted(data) == [(100,), (100, N_FEATURES), (200,), (200, N_FEATURES)]
    assert len(created) <= 6 + 2 * 4 + 1  # + the learning rate's one device copy
    # the only copies are parameter snapshots (1-D flat buffers): one per evaluation,
    # plus the starting weights kept in case the very first epochs diverge
    assert all(len(shape) == 1 for shape in copied) and len(copied) <= epochs // 2 + 1
    # every training batch is a batch, never the whole set: 7 batches (6x32 + 8) per epoch
    assert len(batch_rows) == 7 * epochs
    assert max(batch_rows) == 32 and sum(batch_rows) == 200 * epochs


# ------------------------------------ the network and the optimiser it trains
def test_trainer_needs_an_optimizer():
    with pytest.raises(TypeError):
        nnx.Trainer(make_classifier(), "sgd")


def test_trainer_rejects_something_that_is_not_a_network():
    """Trainer(net, optim) with a non-network net."""
    X, y = good_data()
    with pytest.raises(TypeError, match=r"net"):
        Trainer("net", SGD(0.1)).fit(X, y, epochs=1, eval_every=1)


def test_fit_updates_its_own_network_when_the_optimizer_was_given_to_another():
    """One optimiser handed to a second trainer: the first trainer's
    fit(restart=False) still trains the first network (and only it)."""
    X, y, Xv, yv = make_data()
    net1, net2 = make_classifier(seed=1), make_classifier(seed=2)
    net1.build(N_FEATURES)
    net2.build(N_FEATURES)
    opt = nnx.SGD(0.1)
    t1 = nnx.Trainer(net1, opt)
    nnx.Trainer(net2, opt)
    p1, p2 = params(net1), params(net2)
    t1.fit(X, y, Xv, yv, epochs=2, eval_every=1, restart=False, patience=5)
    assert not np.array_equal(params(net1), p1)
    np.testing.assert_array_equal(params(net2), p2)


# ------------------------------------ fit's settings, refused before training
@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"epochs": -1}, {"epochs": 0},
                                    {"eval_every": 11}, {"eval_every": 0}, {"patience": 0},
                                    {"seed": -1}, {"batch_size": 2.5}])
def test_bad_arguments_raise(kwargs):
    X, y, Xv, yv = make_data()
    args = {"epochs": 10, "eval_every": 5, "batch_size": 32} | kwargs
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        nnx.Trainer(make_classifier(), nnx.SGD(0.1)).fit(X, y, Xv, yv, **args)


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


# ----------------------------- divergence: the last good parameters come back
def test_divergence_without_an_evaluation_set_restores_usable_parameters():
    """Without an evaluation set nothing measured the parameters of the last
    update; the restored ones must still give a finite loss."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    Y = rng.standard_normal((64, 2)).astype(np.float32)
    net = nnx.NeuralNetwork([nnx.Dense(8, "linear"), nnx.Dense(2, "linear")], "mse", seed=0)
    with np.errstate(all="ignore"), pytest.raises(nnx.TrainingDiverged) as info, \
            pytest.warns(nnx.InputWarning, match="far too large"):
        nnx.Trainer(net, nnx.SGD(40.0)).fit(X, Y, epochs=50, eval_every=1, batch_size=64)
    assert np.isfinite(net.get_parameters()).all()
    with np.errstate(all="ignore"):
        assert np.isfinite(float(net.loss_on(X, Y))), info.value


def test_divergence_restores_the_last_good_evaluation():
    net, opt = make_run()
    snapshots = {}

    def corrupt(epoch, record):
        if record is not None:
            snapshots[epoch] = net.get_parameters()
        if epoch == 3:  # the next epoch's loss is NaN
            net.param_buffer[0] = np.nan
    with pytest.raises(nnx.TrainingDiverged, match="NaN or infinite in epoch 4") as info:
        fit_run(net, opt, callback=corrupt)
    assert info.value.epoch == 4 and info.value.restored_epoch == 2
    np.testing.assert_array_equal(net.get_parameters(), snapshots[2])
    assert opt.velocity is None
    X, y = run_data()
    assert 0.0 <= nnx.accuracy(net, X, y) <= 1.0  # still usable
    hist = fit_run(net, opt, restart=True)  # and trainable again
    assert np.isfinite(hist.records[-1]["loss"])


def test_after_a_divergence_adam_goes_on_as_a_fresh_adam():
    """The divergence cleared Adam's moments but kept its step count, so the
    next steps ran on fresh moments without their bias correction: a first
    update of 2.8 times the rate instead of one rate."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5))
    y = X @ rng.standard_normal((5, 1))

    def make():
        return nnx.NeuralNetwork([nnx.Dense(16, "tanh"), nnx.Dense(1, "linear")],
                                 nnx.MeanSquaredError(), seed=0, dtype="float64")
    net, opt = make(), nnx.Adam(1e-3)
    trainer = nnx.Trainer(net, opt)
    trainer.fit(X, y, epochs=50, batch_size=8, patience=None)  # 400 steps
    opt.lr = 1e300
    with np.errstate(all="ignore"), pytest.raises(nnx.TrainingDiverged):
        trainer.fit(X, y, epochs=5, batch_size=8, restart=False, patience=None)
    assert int(opt.step_count) == 0 and not any(np.any(v) for v in opt.state.values())
    opt.lr = 1e-3  # as the error suggests: a smaller rate, and on
    twin, fresh = make(), nnx.Adam(1e-3)
    twin.build(5)
    twin.set_parameters(net.get_parameters())
    fresh.attach(twin)
    for n, o in ((net, opt), (twin, fresh)):
        for _ in range(3):
            n.train_batch(X, y)
            o.step()
    np.testing.assert_allclose(net.get_parameters(), twin.get_parameters(), rtol=1e-12)


def test_a_real_divergence_before_any_evaluation_restores_the_start():
    X, y = run_data()
    net = nnx.NeuralNetwork([nnx.Dense(8, "linear"), nnx.Dense(3, "linear")],
                            nnx.MeanSquaredError(), seed=2)
    net.build(10)
    start = net.get_parameters()
    with pytest.raises(nnx.TrainingDiverged) as info, warnings.catch_warnings():
        # the divergence is reported once, as TrainingDiverged, not as a stream
        # of NumPy overflow warnings from inside the training step
        warnings.simplefilter("error", RuntimeWarning)
        nnx.Trainer(net, nnx.SGD(1e4)).fit(X, y, X, y, epochs=10, eval_every=5, batch_size=10)
    assert info.value.restored_epoch == 0 and 1 <= info.value.epoch <= 5
    np.testing.assert_array_equal(net.get_parameters(), start)


# ------------------------------------------------- inputs far from standardised
def _spread_data(scale=1.0, shift=0.0, n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 8))
    return X * scale + shift, (X[:, 0] > 0).astype(int)


def _two_class_net():
    return nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(2, "linear")],
                             nnx.SoftmaxCrossEntropy(), seed=0)


@pytest.mark.parametrize("scale, shift", [(80.0, 0.0), (1.0, 130.0)])
def test_raw_inputs_warn_with_the_measured_spread_and_the_fix(scale, shift):
    X, y = _spread_data(scale, shift)
    with pytest.warns(nnx.InputWarning, match="X_train is far from standardised") as caught:
        nnx.Trainer(_two_class_net(), nnx.SGD(0.01)).fit(X, y, epochs=1)
    message = str(caught[0].message)
    assert "standardize_with" in message and "StandardScaler" in message
    assert caught[0].filename == __file__  # points at the caller's fit(), not into nnx


@pytest.mark.parametrize("how", ["validation", "test set"])
def test_an_evaluation_set_left_raw_beside_standardised_training_rows_warns(how):
    """The training rows standardised and the evaluation rows forgotten: early
    stopping chose on a loss of other inputs (digits stopped at 0.75), silently."""
    X, y = _spread_data()
    raw, _ = _spread_data(80.0, 40.0, seed=1)
    where = {"validation": (raw, y)} if how == "validation" else {"X_test": raw, "y_test": y}
    name = "X_val" if how == "validation" else "X_test"
    with pytest.warns(nnx.InputWarning, match=f"{name} is far from standardised, though "
                                              "X_train is: standardise it with the training "
                                              "rows' statistics too") as caught:
        nnx.Trainer(_two_class_net(), nnx.SGD(0.01)).fit(X, y, epochs=1, **where)
    assert caught[0].filename == __file__
    with pytest.warns(nnx.InputWarning) as both:  # raw alike: one warning, the first
        nnx.Trainer(_two_class_net(), nnx.SGD(0.01)).fit(raw, y, epochs=1, validation=(raw, y))
    assert len(both) == 1 and "X_train is far from" in str(both[0].message)
    # standardised with the training rows' statistics, one feature nearly constant in
    # them: that column alone is far off in the evaluation rows, and nothing is wrong
    odd = _spread_data(seed=2)[0]
    odd[:, 3] *= 12.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnx.Trainer(_two_class_net(), nnx.SGD(0.01)).fit(X, y, epochs=1, **{
            k: (odd, y) if k == "validation" else (odd if k == "X_test" else y)
            for k in where})


def test_standardised_and_unit_range_inputs_do_not_warn():
    for X, y in (_spread_data(), _spread_data(0.3, 0.5)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            nnx.Trainer(_two_class_net(), nnx.SGD(0.01)).fit(X, y, epochs=1)



def test_each_evaluation_records_the_accuracy_on_the_evaluation_set():
    X, y, Xt, yt = make_data()
    net = make_classifier(dtype="float64")
    hist = nnx.Trainer(net, nnx.SGDMomentum(0.5)).fit(X, y, validation=(Xt, yt), epochs=6,
                                                       eval_every=3, batch_size=20, seed=3,
                                                       patience=None)
    best = next(r for r in hist.records if r["epoch"] == hist.best_epoch)  # what net holds
    assert best["accuracy"] == pytest.approx(nnx.accuracy(net, Xt, yt), abs=1e-12)
    assert all(0 <= r["accuracy"] <= 1 for r in hist.records)
    mse = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(1, "linear")], "mse", seed=0)
    hist = nnx.Trainer(mse, nnx.SGD(0.01)).fit(X, X[:, 0], validation=(Xt, Xt[:, 0]), epochs=2)
    assert hist.records[-1]["accuracy"] is None  # a regression has no classes


def test_the_recorded_accuracy_is_the_exact_share_in_float32_too():
    """42 of 60 rows right was recorded as float32's 0.699999988, so a
    min_delta of 2/60 on the accuracy counted 44/60 as more than 2/60 better."""
    X, y, Xt, yt = make_data()
    net = make_classifier()  # float32
    hist = nnx.Trainer(net, nnx.SGDMomentum(0.5)).fit(X, y, validation=(Xt[:60], yt[:60]),
                                                       epochs=4, eval_every=1, batch_size=20,
                                                       seed=3, patience=None)
    for r in hist.records:
        right = round(r["accuracy"] * 60)
        assert r["accuracy"] == right / 60, r["accuracy"]


@pytest.mark.parametrize("lr, warned", [(1000.0, True), (0.1, False)])
def test_a_loss_worse_than_guessing_says_the_learning_rate_is_likely_too_large(lr, warned):
    """SGD(1000) ended at a loss of 5, more than twice guessing's ln 10, with
    no word (only scikit-learn's wrapper warned of a growing loss)."""
    import warnings

    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    net = nnx.NeuralNetwork([nnx.Dense(32, "tanh"), nnx.Dense(10, "linear")],
                            "softmax_cross_entropy", seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nnx.Trainer(net, nnx.SGD(lr)).fit(X, y, X[:200], y[:200], epochs=3, eval_every=1)
    said = [str(w.message) for w in caught if "likely far too large" in str(w.message)]
    assert len(said) == (1 if warned else 0)  # once per fit
    if warned:
        assert "more than twice the 2.3 of guessing each of the 10 classes" in said[0]
        assert caught[0].filename == __file__  # pointed at the caller's line


@pytest.mark.parametrize("lr, warned", [(10.0, True), (0.2, False), (0.001, False)])
def test_a_loss_that_stays_above_guessing_says_so(lr, warned):
    """From a newcomer's first hour: SGDMomentum(10) on digits trained for
    epochs at a loss above ln 10 (worse than guessing, under the twice ln 10
    that warned) with no word."""
    import warnings

    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    net = nnx.NeuralNetwork([nnx.Dense(89, "tanh", dropout=0.8), nnx.Dense(10, "linear")],
                            "softmax_cross_entropy", seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = nnx.Trainer(net, nnx.SGDMomentum(lr, momentum=0.9)).fit(
            X[:1500], y[:1500], X[1500:], y[1500:], epochs=10, eval_every=5, batch_size=60,
            patience=None)
    said = [str(w.message) for w in caught if "likely far too large" in str(w.message)]
    assert len(said) == (1 if warned else 0), said
    if warned:
        assert 2.3 < hist.records[1]["train_loss"] < 4.6  # above ln 10, under twice it
        assert re.search(r"in epoch 10, still worse than the 2.3 of guessing each of the 10 "
                         r"classes .*far too large \(or far too small", said[0]), said[0]


def test_restart_takes_true_false_or_none_only():
    """restart="False" (a string) was true: the trained weights were redrawn."""
    X, y, _, _ = make_data()
    with pytest.raises(nnx.InputTypeError, match=r"restart must be True, False or None "
                                                 r"\(the default\), got 'False'"):
        nnx.Trainer(make_classifier(), nnx.SGD(0.1)).fit(X, y, epochs=1, restart="False")
    with pytest.raises(nnx.InputTypeError, match=r"restart must be True, False or None"):
        nnx.Trainer(make_classifier(), nnx.SGD(0.1)).fit(X, y, epochs=1, restart=1)


def test_a_network_trained_by_a_hand_loop_is_not_redrawn_in_silence():
    """api.md promises a warning when fit redraws trained weights; weights
    trained by train_batch and optim.step() were redrawn without one."""
    X, y, _, _ = make_data()
    net = make_classifier()
    optim = nnx.SGD(0.1)
    trainer = nnx.Trainer(net, optim)  # attaches the optimiser, as the study's loop needs
    for _ in range(3):
        net.train_batch(X[:20], y[:20])
        optim.step()
    with pytest.warns(nnx.InputWarning, match=r"replacing the weights it was trained to"):
        trainer.fit(X, y, epochs=1)
    # a step that failed trained nothing: nothing to warn of
    fresh, per_step = make_classifier(), nnx.SGD(nnx.Cosine(0.1, per="step"))
    nnx.Trainer(fresh, per_step)
    fresh.train_batch(X[:20], y[:20])
    with pytest.raises(RuntimeError, match="call optim.start"):
        per_step.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnx.Trainer(fresh, nnx.SGD(0.1)).fit(X, y, epochs=1)


def test_graph_takes_true_or_false_only():
    X, y, _, _ = make_data()
    with pytest.raises(nnx.InputError, match="graph must be True or False, got 'yes'"):
        nnx.Trainer(make_classifier(), nnx.SGD(0.1)).fit(X, y, epochs=1, graph="yes")


@pytest.mark.parametrize("layout", ["strided", "fortran"])
def test_training_data_of_another_layout_is_made_contiguous_once(monkeypatch, layout):
    """A strided view or a Fortran-ordered X was used as given: np.take copies
    a source that is not C-contiguous whole, so every batch copied all of X
    (60k x 784: 53 ms a batch instead of 0.1 ms, and X's size again in memory)."""
    from nnx.backend.numpy_backend import NumpyBackend
    rng = np.random.default_rng(0)
    wide = rng.standard_normal((120, 12))
    X = wide[:, :8] if layout == "strided" else np.asfortranarray(wide[:, :8])
    y = np.arange(120) % 3
    sources = []
    real = NumpyBackend.take_rows

    def spy(self, x, idx, out=None):
        sources.append(x.flags.c_contiguous)
        return real(self, x, idx, out)
    monkeypatch.setattr(NumpyBackend, "take_rows", spy)
    net = nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0, dtype="float64")
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=2, batch_size=20)
    assert sources and all(sources)


# ------------------------------------------------------------ validation_split
def _digits_net():
    return nnx.NeuralNetwork([nnx.Dense(16, "tanh"), nnx.Dense(10, "linear")],
                             "softmax_cross_entropy", seed=0, dtype="float64")


def test_validation_split_holds_out_the_last_rows_as_keras_does():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = X[:500] / 16.0
    y = y[:500]
    a = Trainer(_digits_net(), SGD(0.1)).fit(X, y, epochs=4, eval_every=2, validation_split=0.2)
    b = Trainer(_digits_net(), SGD(0.1)).fit(X[:400], y[:400], epochs=4, eval_every=2,
                                             validation=(X[400:], y[400:]))
    assert a.records == b.records


def test_validation_split_of_sorted_labels_warns_and_bad_ones_are_refused():
    X = np.random.default_rng(0).standard_normal((40, 3))
    y = np.repeat([0, 1, 2, 3], [12, 12, 12, 4])  # sorted: class 3 only in the last tenth
    net = nnx.NeuralNetwork([nnx.Dense(4, "linear")], "softmax_cross_entropy", seed=0)
    with pytest.warns(nnx.InputWarning, match=r"hold classes \[3\] that the training rows "
                                              r"lack; is the data sorted"):
        Trainer(net, SGD(0.1)).fit(X, y, epochs=1, validation_split=0.1)
    for kwargs, pattern in [({"validation_split": 1.0}, r"validation_split=1.0 must be in"),
                            ({"validation_split": 0.1, "validation": (X, y)}, "not both"),
                            ({"validation_split": 0.1, "X_test": X, "y_test": y}, "not both"),
                            ({"validation_split": 0.99}, "leaving none to train on")]:
        with pytest.raises(ValueError, match=pattern):
            Trainer(net, SGD(0.1)).fit(X, y, epochs=1, restart=True, **kwargs)


# ------------------------------------------------ memory, from an audit
def test_a_fortran_ordered_x_of_another_dtype_is_converted_once(monkeypatch):
    """A float64 Fortran-ordered X (a transposed array, a DataFrame's values)
    was cast keeping its layout, then copied again for its rows: two full
    copies where one does."""
    X, y, Xv, yv = make_data()
    net = make_classifier()
    cls = type(net.backend)
    given, real = [], cls.rows_contiguous
    monkeypatch.setattr(cls, "rows_contiguous",
                        lambda self, x: given.append(x.flags.c_contiguous) or real(self, x))
    nnx.Trainer(net, SGD(0.1)).fit(np.asfortranarray(X), y, np.asfortranarray(Xv), yv,
                                   epochs=1)
    assert given == [True, True]  # nothing left for rows_contiguous to copy


def test_predict_and_evaluations_let_go_of_the_data():
    """The first layer kept the last chunk of an inference pass, a view of the
    whole converted X (of the caller's own array in float32), for as long as
    the network lived: 80 MB held after predict on 200k x 100."""
    import gc
    import weakref
    X, y, Xv, yv = make_data()
    net = make_classifier()
    nnx.Trainer(net, SGD(0.1)).fit(X, y, epochs=1)
    Xf = np.ascontiguousarray(Xv, dtype=np.float32)  # used as it is: no conversion
    ref = weakref.ref(Xf)
    net.predict(Xf)
    nnx.accuracy(net, Xf, yv)
    del Xf
    gc.collect()
    assert ref() is None


def test_the_fingerprint_sums_the_targets_a_block_of_rows_at_a_time(monkeypatch, tmp_path):
    """The checkpoint's data fingerprint cast all the one-hot targets to
    float64 at once: n x classes x 8 bytes (1.6 GB at 200k rows x 1000)."""
    from nnx.train import trainer as trainer_module
    X, y, Xv, yv = make_data()
    net = make_classifier()
    monkeypatch.setattr(trainer_module, "_fingerprint_rows", lambda width: 16)
    cls = type(net.backend)
    cast, real = [], cls.astype
    monkeypatch.setattr(cls, "astype", lambda self, x, dtype: cast.append(
        (tuple(x.shape), str(dtype))) or real(self, x, dtype))
    nnx.Trainer(net, SGD(0.1)).fit(X, y, Xv, yv, epochs=1, checkpoint=tmp_path / "run.npz")
    assert all(rows <= 16 for (rows, *_), dtype in cast if "64" in dtype and len(_) == 1)


def test_inference_converts_a_chunk_of_rows_at_a_time(monkeypatch):
    """predict, predict_classes and accuracy converted the whole X to the
    compute dtype first: a full copy (80 MB for 200k x 100 float64 rows into
    a float32 network) where a chunk's does."""
    X, y, Xv, yv = make_data(n=300)
    net = make_classifier()
    nnx.Trainer(net, SGD(0.1)).fit(X, y, epochs=1)
    cls = type(net.backend)
    sizes, real = [], cls.asarray
    monkeypatch.setattr(cls, "asarray", lambda self, x, dtype=None: sizes.append(
        getattr(x, "shape", (0,))[0]) or real(self, x, dtype))
    out = net.predict(X, batch_size=64)
    ids = nnx.predict_classes(net, X, batch_size=64)
    acc = nnx.accuracy(net, X, y)
    assert max(s for s in sizes) <= 1024 and max(sizes[:5]) <= 64  # no 300-row copy
    assert (ids == out.argmax(axis=1)).all() and acc == (ids == y).mean()


def test_validation_classes_the_training_rows_lack_warn_as_validation_split_does():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 4)), np.arange(40) % 2
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], nnx.SoftmaxCrossEntropy(), seed=0)
    with pytest.warns(nnx.InputWarning, match=r"y_val holds classes \[2\] that y_train lacks"):
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, validation=(X[:10], np.full(10, 2)),
                                           epochs=1, batch_size=10)


def test_a_regressions_whole_number_targets_are_not_taken_for_classes():
    """Integer targets of a mean-squared-error network beside validation
    rows of other values warned that y_val 'holds classes y_train lacks'."""
    import warnings
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4))
    y = rng.integers(-20, 40, 40)
    net = nnx.NeuralNetwork([nnx.Dense(1, "linear")], nnx.MeanSquaredError(), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", nnx.InputWarning)
        for kw in (dict(validation=(X[:10], y[:10] + 100)), dict(validation_split=0.25)):
            nnx.Trainer(net, nnx.SGD(0.001)).fit(X, np.sort(y), epochs=1, batch_size=10,
                                                 restart=True, **kw)


def test_a_callbacks_own_once_only_warning_shows_once():
    """Each epoch's callbacks ran inside a catch_warnings, which forgets the
    warnings already shown: a callback's once-only warning came every epoch."""
    import warnings

    class Noisy(nnx.Callback):
        def on_epoch_end(self, run, epoch, record):
            warnings.warn("a callback's note", UserWarning, stacklevel=1)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 4)), np.arange(40) % 2
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], nnx.SoftmaxCrossEntropy(), seed=0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=5, batch_size=10, callbacks=[Noisy()])
    assert sum("a callback's note" in str(w.message) for w in seen) == 1


def test_class_ids_are_held_as_ids_not_one_hot_rows():
    """fit made one-hot rows of the whole training set's class ids, in the
    compute dtype: with many classes, many times the size of X (here 8x);
    so did the evaluation set's, and loss_on's.
    Now the ids stay ids on the device and each batch gets its one-hot
    rows; the training is the same as from one-hot rows given by hand."""
    import tracemalloc
    rng = np.random.default_rng(0)
    n, k = 40_000, 400
    X = rng.standard_normal((n, 50)).astype(np.float32)
    ids = rng.integers(0, k, n)

    def net():
        return nnx.NeuralNetwork([nnx.Dense(k, "linear")], nnx.SoftmaxCrossEntropy(), seed=0)

    by_ids, by_rows = net(), net()
    tracemalloc.start()
    try:  # the evaluation set's ids too
        h_ids = nnx.Trainer(by_ids, nnx.SGD(0.1)).fit(X, ids, X, ids, epochs=1, batch_size=500)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        loss = float(by_ids.loss_on(X, ids))
        _, peak_loss = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_hot_bytes = n * k * 4
    # batches, an evaluation's chunk of 1024 rows (~12 MB with its softmax's
    # temporaries): far below a one-hot set's 64 MB
    assert peak < one_hot_bytes / 3, peak
    assert peak_loss < one_hot_bytes / 3, peak_loss
    rows = np.eye(k, dtype=np.float32)[ids]
    h_rows = nnx.Trainer(by_rows, nnx.SGD(0.1)).fit(X, rows, X, rows, epochs=1, batch_size=500)
    np.testing.assert_array_equal(by_ids.get_parameters(), by_rows.get_parameters())
    assert h_ids.records == h_rows.records and h_ids.records[-1]["accuracy"] > 0
    assert loss == float(by_rows.loss_on(X, rows))


def test_a_new_trainer_of_the_same_pair_goes_on_with_the_optimisers_state():
    """Trainer(net, optim) attached the optimiser again, clearing Adam's
    moments and step count: a new Trainer (a new notebook cell) continuing
    with restart=False trained differently from the same Trainer."""
    import copy
    X, y, Xv, yv = make_data()
    net = make_classifier()
    opt = nnx.Adam(0.01)
    nnx.Trainer(net, opt).fit(X, y, epochs=2, batch_size=32, patience=None)
    net2, opt2 = copy.deepcopy((net, opt))
    nnx.Trainer(net, opt).fit(X, y, epochs=2, batch_size=32, patience=None, restart=False)
    trainer = nnx.Trainer(net2, opt2)
    trainer.fit(X, y, epochs=2, batch_size=32, patience=None, restart=False)
    np.testing.assert_array_equal(net.get_parameters(), net2.get_parameters())
    assert opt.step_count == opt2.step_count == 4 * 7
    trainer.fit(X, y, epochs=1, batch_size=32, patience=None)  # restart: state anew
    assert opt2.step_count == 7


def test_fit_leaves_the_warning_settings_of_other_threads_alone():
    """fit entered warnings.catch_warnings() on every rank; with another
    thread using catch_warnings too, the process's filters stayed changed
    for good (catch_warnings is not thread-safe)."""
    import threading
    X, y, Xv, yv = make_data()
    calls = []
    real = warnings.catch_warnings

    def counting(*a, **k):
        calls.append(threading.current_thread().name)
        return real(*a, **k)
    warnings.catch_warnings = counting
    try:
        nnx.Trainer(make_classifier(), nnx.SGD(0.1)).fit(X, y, Xv, yv, epochs=2, eval_every=1)
    finally:
        warnings.catch_warnings = real
    assert calls == []


def test_one_sigmoid_per_class_scores_the_largest_outputs_accuracy_against_class_ids():
    """A SigmoidCrossEntropy network of one output per class trained on class
    ids (one-vs-rest) recorded no evaluation accuracy, and monitor='accuracy'
    was refused; nnx.accuracy scored its largest output all along. Against
    multilabel rows no single accuracy applies: still refused, now saying so."""
    X, y, Xv, yv = make_data()
    net = nnx.NeuralNetwork([nnx.Dense(8, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SigmoidCrossEntropy(), seed=0)
    hist = nnx.Trainer(net, nnx.SGD(0.5)).fit(X, y, Xv, yv, epochs=4, eval_every=2,
                                              monitor="accuracy", patience=None)
    # the best evaluation's parameters are kept: its accuracy is nnx.accuracy's
    best = next(r for r in hist.records if r["epoch"] == hist.best_epoch)
    assert best["accuracy"] == max(r["accuracy"] for r in hist.records)
    assert best["accuracy"] == nnx.accuracy(net, Xv, yv) > 0
    rows = np.eye(3)[yv]
    rows[0] = 1  # a row of three labels: multilabel
    # one-hot rows are one class per row, as class ids are: the same records
    by_rows = nnx.Trainer(net, nnx.SGD(0.5)).fit(X, np.eye(3)[y], Xv, np.eye(3)[yv],
                                                 epochs=2, monitor="accuracy", restart=True)
    by_ids = nnx.Trainer(net, nnx.SGD(0.5)).fit(X, y, Xv, yv, epochs=2, monitor="accuracy",
                                                restart=True)
    assert by_rows.records == by_ids.records and by_ids.records[-1]["accuracy"] > 0
    with pytest.raises(nnx.InputValueError, match=r"monitor='accuracy': a SigmoidCrossEntropy "
                                                  r"network of 3 outputs scores an accuracy .* "
                                                  r"against one class per row alone"):
        nnx.Trainer(net, nnx.SGD(0.5)).fit(X, np.eye(3)[y], Xv, rows, epochs=2,
                                          monitor="accuracy")
    assert nnx.Trainer(net, nnx.SGD(0.5)).fit(X, y, Xv, rows, epochs=2).records[-1][
        "accuracy"] is None


@pytest.mark.parametrize("as_given", ["series", "float ids", "nullable Int64"])
def test_validation_split_of_sorted_labels_warns_whatever_holds_the_ids(as_given):
    """The warning looked at 1-D integer NumPy labels alone: a pandas Series
    (what DataFrame users pass) or whole float ids of sorted data said nothing."""
    pd = pytest.importorskip("pandas")
    X = np.random.default_rng(0).standard_normal((40, 3))
    ids = np.repeat([0, 1, 2, 3], [12, 12, 12, 4])
    y = {"series": pd.Series(ids), "float ids": ids.astype(float),
         "nullable Int64": pd.Series(ids, dtype="Int64")}[as_given]
    net = nnx.NeuralNetwork([nnx.Dense(4, "linear")], "softmax_cross_entropy", seed=0)
    with pytest.warns(nnx.InputWarning, match=r"hold classes \[3\] that the training rows "
                                              r"lack; is the data sorted"):
        Trainer(net, SGD(0.1)).fit(X, y, epochs=1, validation_split=0.1)
