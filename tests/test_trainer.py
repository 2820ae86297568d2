"""Trainer.fit: early stopping, history, validation set, determinism, restart, copies, arguments."""

import numpy as np
import pytest
from reference import RefMLP, one_hot

import nnx
from nnx.backend.numpy_backend import NumpyBackend

N_IN, N_CLASSES = 8, 3


def make_data(seed=0, n=200, n_val=100):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N_IN, N_CLASSES))
    X = rng.standard_normal((n, N_IN))
    Xv = rng.standard_normal((n_val, N_IN))
    return X, (X @ w).argmax(1), Xv, (Xv @ w).argmax(1)


def make_net(seed=1, dtype="float32", dropout=1.0):
    return nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=dropout), nnx.Dense(3, "linear")],
                             nnx.SoftmaxCrossEntropy(), seed=seed, dtype=dtype)


def params_np(net):
    return np.array(net.backend.to_numpy(net.get_parameters()))


def ref_loss(flat, X, ids):
    """Softmax cross-entropy of the 8-16-3 tanh/linear net with flat params ``flat``."""
    sizes = [(N_IN, 16), (1, 16), (16, 3), (1, 3)]
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
            snaps[epoch] = params_np(net)

    hist = nnx.Trainer(net, opt).fit(*args, callback=cb, **kwargs)
    return hist, snaps


# an lr that grows from 0.05 to 50 over the run: the evaluation loss falls, then blows up
def growing_lr():
    return nnx.SGD(0.05, final_lr=50.0, decay_type="exponential")


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping_restores_best_evaluation(patience):
    X, y, Xv, yv = make_data()
    net = make_net()
    hist, snaps = fit_with_snapshots(net, growing_lr(), X, y, Xv, yv, epochs=20, eval_every=2,
                                     batch_size=20, patience=patience)
    losses = hist.losses
    best = int(np.argmin(losses))
    assert 0 < best < len(losses) - 1, f"the scenario needs a best in the middle: {losses}"
    assert hist.stopped_early
    assert hist.best_epoch == hist.epochs[best]
    assert hist.best_loss == losses[best]
    # it stopped after `patience` evaluations without improvement
    assert len(losses) == best + 1 + patience
    assert all(v >= losses[best] for v in losses[best + 1:])
    assert hist.epochs_run == hist.epochs[-1] < 20
    final = params_np(net)
    assert np.array_equal(final, snaps[hist.best_epoch])
    assert not np.array_equal(final, snaps[hist.epochs[-1]])
    # and the restored parameters really give the best loss (independent reference)
    assert ref_loss(final, Xv, yv) == pytest.approx(losses[best], rel=1e-5)


def test_best_parameters_restored_at_the_end_without_stopping():
    X, y, Xv, yv = make_data()
    net = make_net()
    opt = nnx.SGD(0.05, final_lr=5.0, decay_type="exponential")
    hist, snaps = fit_with_snapshots(net, opt, X, y, Xv, yv, epochs=20, eval_every=2,
                                     batch_size=20, patience=10)
    assert not hist.stopped_early and hist.epochs_run == 20
    assert hist.best_epoch < 20 and hist.losses[-1] > hist.best_loss
    assert np.array_equal(params_np(net), snaps[hist.best_epoch])


def test_no_restore_when_last_evaluation_is_best():
    X, y, Xv, yv = make_data()
    net = make_net()
    hist, snaps = fit_with_snapshots(net, nnx.SGD(0.05), X, y, Xv, yv, epochs=6, eval_every=2,
                                     batch_size=20)
    assert hist.losses == sorted(hist.losses, reverse=True)
    assert hist.best_epoch == 6 and not hist.stopped_early
    assert np.array_equal(params_np(net), snaps[6])


def test_history_records_match_reference_losses():
    """Full-batch epochs: train_loss of epoch e is the loss at the parameters after
    epoch e-1, loss is the evaluation loss at the parameters after epoch e."""
    X, y, Xv, yv = make_data(n=50, n_val=30)
    net = make_net(dtype="float64")
    per_epoch = {}
    opt = nnx.SGD(0.3, final_lr=0.1, decay_type="linear")
    trainer = nnx.Trainer(net, opt)
    start = {}

    def cb(epoch, record):
        per_epoch[epoch] = (params_np(net), record)

    # parameters before the first epoch: restart draws them again, so reset a twin
    twin = make_net(dtype="float64")
    twin.build(N_IN)
    twin.reset()
    start[0] = params_np(twin)
    hist = trainer.fit(X, y, Xv, yv, epochs=6, eval_every=3, batch_size=64, callback=cb)
    assert hist.epochs == [3, 6]
    for rec in hist.records:
        assert set(rec) == {"epoch", "loss", "lr", "train_loss"}
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
    net = make_net()
    history = nnx.Trainer(net, nnx.SGD(0.01)).fit(X, y, Xv, yv, epochs=epochs, batch_size=50,
                                                  patience=10)
    assert [r["epoch"] for r in history.records] == evaluated


def test_history_without_evaluation_set():
    X, y, _, _ = make_data()
    hist = nnx.Trainer(make_net(), nnx.SGD(0.1)).fit(X, y, epochs=4, eval_every=2)
    assert hist.epochs == [2, 4] and hist.losses == [None, None]
    assert all(r["train_loss"] > 0 for r in hist.records)
    assert not hist.stopped_early and hist.epochs_run == 4


def test_validation_set_is_used_for_early_stopping_not_the_test_set():
    X, y, Xt, yt = make_data()
    Xv, yv = Xt[:60], (yt[:60] + 1) % N_CLASSES  # a validation set that training makes worse
    # with the test set alone, training runs to the end
    h_test = nnx.Trainer(make_net(), nnx.SGD(0.1)).fit(X, y, Xt, yt, epochs=10, eval_every=2,
                                                      batch_size=20)
    assert not h_test.stopped_early and h_test.best_epoch == 10
    net = make_net()
    hist, snaps = fit_with_snapshots(net, nnx.SGD(0.1), X, y, Xt, yt, epochs=10, eval_every=2,
                                     batch_size=20, validation=(Xv, yv))
    assert hist.stopped_early and hist.best_epoch == 2 and hist.epochs == [2, 4]
    for rec in hist.records:
        p = snaps[rec["epoch"]]
        assert rec["loss"] == pytest.approx(ref_loss(p, Xv, yv), rel=1e-5)
        assert rec["loss"] != pytest.approx(ref_loss(p, Xt, yt), rel=1e-3)
    assert np.array_equal(params_np(net), snaps[2])


def fit_once(net_seed=1, fit_seed=5, dropout=0.8, **kw):
    X, y, Xv, yv = make_data()
    net = make_net(seed=net_seed, dropout=dropout)
    opt = nnx.SGDMomentum(0.1, momentum=0.9, final_lr=0.02, decay_type="exponential")
    hist = nnx.Trainer(net, opt).fit(X, y, Xv, yv, epochs=6, eval_every=2, batch_size=32,
                                     seed=fit_seed, **kw)
    return params_np(net), [(r["loss"], r["train_loss"]) for r in hist.records]


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


def test_restart_true_reinitialises():
    X, y, Xv, yv = make_data()
    net = make_net(dropout=0.8)
    trainer = nnx.Trainer(net, nnx.SGDMomentum(0.1))
    h1 = trainer.fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3)
    p1 = params_np(net)
    h2 = trainer.fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3)
    assert np.array_equal(p1, params_np(net))
    assert h1.losses == h2.losses and h1.records == h2.records


def test_restart_false_continues_from_current_weights():
    X, y, Xv, yv = make_data()
    a = make_net(seed=1)
    ta = nnx.Trainer(a, nnx.SGD(0.1))
    h1 = ta.fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3)
    p1 = params_np(a)
    h2 = ta.fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3, restart=False)
    # a network with another seed, given the same weights, continues identically
    b = make_net(seed=99)
    b.build(N_IN)
    b.set_parameters(b.backend.asarray(p1))
    hb = nnx.Trainer(b, nnx.SGD(0.1)).fit(X, y, Xv, yv, epochs=4, eval_every=2, seed=3,
                                          restart=False)
    assert np.array_equal(params_np(a), params_np(b))
    assert h2.losses == hb.losses
    assert h2.losses[0] < h1.losses[0]  # it started from trained weights
    assert not np.array_equal(params_np(a), p1)


@pytest.mark.parametrize("epochs", [2, 8])
def test_fit_does_not_copy_the_dataset_per_epoch(monkeypatch, epochs):
    X, y, Xv, yv = make_data()
    net = make_net(dropout=0.8)
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
    # the training and evaluation sets are uploaded once each; the remaining
    # conversions are the initial weights (2 per layer, drawn by build and restart)
    data = [s for s in created if s and s[0] in (200, 100)]
    assert sorted(data) == [(100, 3), (100, N_IN), (200, 3), (200, N_IN)]
    assert len(created) <= 4 + 2 * 4 + 1  # + the learning rate's one device copy
    # the only copies are parameter snapshots (1-D flat buffers): one per evaluation,
    # plus the starting weights kept in case the very first epochs diverge
    assert all(len(shape) == 1 for shape in copied) and len(copied) <= epochs // 2 + 1
    # every training batch is a batch, never the whole set: 7 batches (6x32 + 8) per epoch
    assert len(batch_rows) == 2 * 7 * epochs
    assert max(batch_rows) == 32 and sum(batch_rows) == 2 * 200 * epochs


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"epochs": -1}, {"epochs": 0},
                                    {"eval_every": 11}, {"eval_every": 0}, {"patience": 0},
                                    {"seed": -1}, {"batch_size": 2.5}])
def test_bad_arguments_raise(kwargs):
    X, y, Xv, yv = make_data()
    args = {"epochs": 10, "eval_every": 5, "batch_size": 32} | kwargs
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        nnx.Trainer(make_net(), nnx.SGD(0.1)).fit(X, y, Xv, yv, **args)


def test_test_set_needs_both_halves():
    X, y, Xv, _ = make_data()
    with pytest.raises(ValueError):
        nnx.Trainer(make_net(), nnx.SGD(0.1)).fit(X, y, Xv, None, epochs=2, eval_every=1)


def test_trainer_needs_an_optimizer():
    with pytest.raises(TypeError):
        nnx.Trainer(make_net(), "sgd")


def test_fit_updates_its_own_network_when_the_optimizer_was_given_to_another():
    """One optimiser handed to a second trainer: the first trainer's
    fit(restart=False) still trains the first network (and only it)."""
    X, y, Xv, yv = make_data()
    net1, net2 = make_net(seed=1), make_net(seed=2)
    net1.build(N_IN)
    net2.build(N_IN)
    opt = nnx.SGD(0.1)
    t1 = nnx.Trainer(net1, opt)
    nnx.Trainer(net2, opt)
    p1, p2 = params_np(net1), params_np(net2)
    t1.fit(X, y, Xv, yv, epochs=2, eval_every=1, restart=False, patience=5)
    assert not np.array_equal(params_np(net1), p1)
    np.testing.assert_array_equal(params_np(net2), p2)


# ------------------------------------------------ found by mutation testing
def test_every_epoch_visits_the_rows_in_a_new_order(monkeypatch):
    """Each epoch's permutation comes from the seed and the epoch number: the
    same order every epoch was not caught by any test."""
    net = make_net()
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
        net = make_net()
        nnx.Trainer(net, nnx.SGDMomentum(0.1)).fit(X, y, epochs=3, batch_size=20, seed=3)
        return params_np(net)
    plain = trained()
    monkeypatch.setattr(NumpyBackend, "generator",
                        lambda self, seed: np.random.default_rng(seed + 12345))
    np.testing.assert_array_equal(trained(), plain)


def _early_stopping_run(losses, patience, min_delta):
    """The epoch at which early stopping ends a run whose evaluations give ``losses``."""
    from nnx.train import EarlyStopping, History

    class Run:  # what the callback reads of a run
        history, good_params, stop = History(), None, False

        def request_stop(self):
            self.stop = True

    run, rule = Run(), EarlyStopping(patience, min_delta)
    for epoch, loss in enumerate(losses, 1):
        run.good_params = epoch
        rule.on_evaluation(run, {"epoch": epoch, "loss": loss})
        if run.stop:
            return epoch, run.history.best_epoch
    return None, run.history.best_epoch


def test_an_improvement_resets_the_count_of_bad_evaluations():
    # patience 2: one bad evaluation, an improvement, then two bad ones
    assert _early_stopping_run([1.0, 1.1, 0.9, 1.0, 1.0, 0.5], 2, 0.0) == (5, 3)


def test_min_delta_is_the_improvement_needed():
    # 0.95 improves on 1.0 by less than min_delta=0.1: a bad evaluation
    assert _early_stopping_run([1.0, 0.95, 0.97], 2, 0.1) == (3, 1)
    assert _early_stopping_run([1.0, 0.95, 0.97], 2, 0.0) == (None, 2)


def test_train_loss_is_the_mean_batch_loss():
    """With a learning rate too small to move the weights, every batch sees
    the same network, and the mean of equal-sized batches' losses is the
    loss on the whole set (a sum over batches was not caught)."""
    net = make_net(dtype="float64")
    X, y, _, _ = make_data()
    history = nnx.Trainer(net, nnx.SGD(1e-12)).fit(X, y, epochs=1, batch_size=20)
    whole = float(net.loss_on(X, y))
    assert history.records[-1]["train_loss"] == pytest.approx(whole, rel=1e-9)


# ---- from a researcher's walkthrough
def test_patience_running_out_at_the_last_evaluation_is_not_an_early_stop():
    """stopped_early was True for a run that trained every epoch, when the
    last evaluation used up the patience."""
    X, y, Xv, yv = make_data()
    # min_delta so large that only the first evaluation counts as an improvement
    for epochs, stopped, run in ((2, False, 2), (3, True, 2)):
        h = nnx.Trainer(make_net(), nnx.SGD(0.1)).fit(
            X, y, Xv, yv, epochs=epochs, eval_every=1, patience=1, min_delta=1e9)
        assert (h.stopped_early, h.epochs_run, h.best_epoch) == (stopped, run, 1)


def test_a_callback_that_returns_true_stops_training_like_early_stopping():
    """Raising was the only way out of fit, and it left the last epoch's
    parameters and lost the History. The epoch it stops at is evaluated, as
    any last epoch is (else a divergence since the last evaluation would pass
    unseen)."""
    X, y, Xv, yv = make_data()
    seen = []

    def stop_after_four(epoch, record):
        seen.append(epoch)
        return epoch == 4

    net = make_net()
    h = nnx.Trainer(net, nnx.SGD(0.5)).fit(X, y, Xv, yv, epochs=10, eval_every=3,
                                         callback=stop_after_four)
    assert seen == [1, 2, 3, 4] and h.stopped_early and h.epochs_run == 4
    assert [r["epoch"] for r in h.records] == [3, 4] and h.best_epoch in (3, 4)
    # the network holds the best evaluation's parameters
    again = make_net()
    nnx.Trainer(again, nnx.SGD(0.5)).fit(X, y, Xv, yv, epochs=10, eval_every=3,
                                         callback=lambda e, r: e == h.best_epoch)
    np.testing.assert_array_equal(net.get_parameters(), again.get_parameters())
    # NumPy's True stops too; anything else (None, a record, 1) goes on
    h = nnx.Trainer(make_net(), nnx.SGD(0.5)).fit(X, y, Xv, yv, epochs=5, eval_every=5,
                                                  callback=lambda e, r: np.bool_(e == 2))
    assert h.epochs_run == 2 and h.stopped_early
    h = nnx.Trainer(make_net(), nnx.SGD(0.5)).fit(X, y, Xv, yv, epochs=3, eval_every=3,
                                                  callback=lambda e, r: 1)
    assert h.epochs_run == 3 and not h.stopped_early


@pytest.mark.parametrize("with_validation", [True, False])
def test_a_callback_stop_between_evaluations_still_catches_a_divergence(with_validation):
    """Stopping between evaluations returned NaN parameters without a word."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 4)), rng.standard_normal((64, 1)) * 1e3
    net = nnx.NeuralNetwork([nnx.Dense(8, "linear"), nnx.Dense(1, "linear")], "mse", seed=0)
    val = (X, y) if with_validation else None
    with pytest.raises(nnx.TrainingDiverged):
        nnx.Trainer(net, nnx.SGD(10.0)).fit(X, y, epochs=10, eval_every=5, validation=val,
                                            callback=lambda e, r: e == 2)
    assert np.isfinite(net.get_parameters()).all()


def test_patience_none_never_stops_early_but_restores_the_best_evaluation():
    X, y, Xt, yt = make_data()
    net = make_net()
    hist = nnx.Trainer(net, nnx.SGDMomentum(0.5)).fit(X, y, Xt, yt, epochs=12, eval_every=1,
                                                       batch_size=20, seed=3, patience=None)
    assert hist.epochs_run == 12 and not hist.stopped_early
    # some evaluation was no better than the one before: patience=1 would have stopped
    assert any(b >= a for a, b in zip(hist.losses, hist.losses[1:]))
    assert hist.best_loss == min(hist.losses)
    assert float(net.loss_on(Xt, yt)) == pytest.approx(hist.best_loss, rel=1e-6)
