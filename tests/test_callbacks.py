"""The callbacks around Trainer.fit (nnx.train.callbacks): early stopping
(patience, min_delta, the best evaluation restored), a callback= function
that stops training, and the checkpoint= callback's checks before training."""

import os

import numpy as np
import pytest
from helpers import (
    EPOCHS,
    N_OUT,
    assert_usable,
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
from nnx import SGD, Dense, NeuralNetwork, Trainer
from nnx.ops import ACTIVATIONS


# ------------------------------------------------------------- early stopping
# an lr that grows from 0.05 to 50 over the run: the evaluation loss falls, then blows up
def growing_lr():
    return nnx.SGD(0.05, final_lr=50.0, decay_type="exponential")


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping_restores_best_evaluation(patience):
    X, y, Xv, yv = make_data()
    net = make_classifier()
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
    final = params(net)
    assert np.array_equal(final, snaps[hist.best_epoch])
    assert not np.array_equal(final, snaps[hist.epochs[-1]])
    # and the restored parameters really give the best loss (independent reference)
    assert ref_loss(final, Xv, yv) == pytest.approx(losses[best], rel=1e-5)


def test_best_parameters_restored_at_the_end_without_stopping():
    X, y, Xv, yv = make_data()
    net = make_classifier()
    opt = nnx.SGD(0.05, final_lr=5.0, decay_type="exponential")
    hist, snaps = fit_with_snapshots(net, opt, X, y, Xv, yv, epochs=20, eval_every=2,
                                     batch_size=20, patience=10)
    assert not hist.stopped_early and hist.epochs_run == 20
    assert hist.best_epoch < 20 and hist.losses[-1] > hist.best_loss
    assert np.array_equal(params(net), snaps[hist.best_epoch])


def test_no_restore_when_last_evaluation_is_best():
    X, y, Xv, yv = make_data()
    net = make_classifier()
    hist, snaps = fit_with_snapshots(net, nnx.SGD(0.05), X, y, Xv, yv, epochs=6, eval_every=2,
                                     batch_size=20)
    assert hist.losses == sorted(hist.losses, reverse=True)
    assert hist.best_epoch == 6 and not hist.stopped_early
    assert np.array_equal(params(net), snaps[6])


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


def test_patience_running_out_at_the_last_evaluation_is_not_an_early_stop():
    """stopped_early was True for a run that trained every epoch, when the
    last evaluation used up the patience."""
    X, y, Xv, yv = make_data()
    # min_delta so large that only the first evaluation counts as an improvement
    for epochs, stopped, run in ((2, False, 2), (3, True, 2)):
        h = nnx.Trainer(make_classifier(), nnx.SGD(0.1)).fit(
            X, y, Xv, yv, epochs=epochs, eval_every=1, patience=1, min_delta=1e9)
        assert (h.stopped_early, h.epochs_run, h.best_epoch) == (stopped, run, 1)


def test_patience_none_never_stops_early_but_restores_the_best_evaluation():
    X, y, Xt, yt = make_data()
    net = make_classifier()
    hist = nnx.Trainer(net, nnx.SGDMomentum(0.5)).fit(X, y, Xt, yt, epochs=12, eval_every=1,
                                                       batch_size=20, seed=3, patience=None)
    assert hist.epochs_run == 12 and not hist.stopped_early
    # some evaluation was no better than the one before: patience=1 would have stopped
    assert any(b >= a for a, b in zip(hist.losses, hist.losses[1:]))
    assert hist.best_loss == min(hist.losses)
    assert float(net.loss_on(Xt, yt)) == pytest.approx(hist.best_loss, rel=1e-6)


# ----------------------------- callback=: a function called after every epoch
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

    net = make_classifier()
    h = nnx.Trainer(net, nnx.SGD(0.5)).fit(X, y, Xv, yv, epochs=10, eval_every=3,
                                         callback=stop_after_four)
    assert seen == [1, 2, 3, 4] and h.stopped_early and h.epochs_run == 4
    assert [r["epoch"] for r in h.records] == [3, 4] and h.best_epoch in (3, 4)
    # the network holds the best evaluation's parameters
    again = make_classifier()
    nnx.Trainer(again, nnx.SGD(0.5)).fit(X, y, Xv, yv, epochs=10, eval_every=3,
                                         callback=lambda e, r: e == h.best_epoch)
    np.testing.assert_array_equal(net.get_parameters(), again.get_parameters())
    # NumPy's True stops too; anything else goes on (None and False silently,
    # 1 or a record with a warning: see below)
    h = nnx.Trainer(make_classifier(), nnx.SGD(0.5)).fit(X, y, Xv, yv, epochs=5, eval_every=5,
                                                  callback=lambda e, r: np.bool_(e == 2))
    assert h.epochs_run == 2 and h.stopped_early
    with pytest.warns(nnx.InputWarning, match="returned 1 .*only True stops"):
        h = nnx.Trainer(make_classifier(), nnx.SGD(0.5)).fit(
            X, y, Xv, yv, epochs=3, eval_every=3, callback=lambda e, r: 1)
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


def test_fit_rejects_a_non_callable_callback_before_training(trained):
    """callback= is checked up front, not after the first epoch has changed the weights."""
    net, trainer, X, y = trained
    before = params(net)
    with pytest.raises(TypeError, match=r"callback"):
        trainer.fit(X, y, epochs=2, eval_every=1, callback=123)
    assert_usable(net, trainer, X, y, before)


# --------------------------------------- checkpoint=: the Checkpoint callback
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
        # a path of the wrong type is a TypeError (found by a probe: it was a ValueError)
        with pytest.raises(TypeError if path == 123 else ValueError) as err:
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


def test_the_final_checkpoint_holds_the_parameters_fit_returns(tmp_path):
    """After early stopping restores the best evaluation, the last checkpoint
    holds those parameters too, not the later, worse ones."""
    path = tmp_path / "run.npz"
    net, opt = make_run()
    X, y = run_data()
    hist = nnx.Trainer(net, opt).fit(X[:120], y[:120], X[120:], y[120:], epochs=EPOCHS,
                                     eval_every=1, batch_size=16, seed=5, checkpoint=path)
    assert hist.stopped_early and hist.records[-1]["epoch"] != hist.best_epoch
    saved = nnx.NeuralNetwork.load(path)
    np.testing.assert_array_equal(saved.get_parameters(), net.get_parameters())
    assert float(saved.loss_on(X[120:], y[120:])) == pytest.approx(hist.best_loss)


def test_an_early_stopping_object_given_to_the_trainer_starts_afresh_every_fit():
    """Its best parameters belong to one run: carried into a next fit without
    an evaluation set (which never measures a best), they were restored at
    its end, replacing what that fit had trained."""
    X, y, Xt, yt = make_data()
    rule = nnx.EarlyStopping(patience=2)
    net = make_classifier()
    trainer = nnx.Trainer(net, nnx.SGDMomentum(0.5), callbacks=[rule])
    trainer.fit(X, y, Xt, yt, epochs=30, eval_every=1, batch_size=20, seed=3)
    first = net.get_parameters().copy()
    trainer.fit(X, y, epochs=3, batch_size=20, seed=4, restart=True)  # no evaluation set
    alone = make_classifier()
    nnx.Trainer(alone, nnx.SGDMomentum(0.5)).fit(X, y, epochs=3, batch_size=20, seed=4)
    assert not np.array_equal(net.get_parameters(), first)
    np.testing.assert_array_equal(net.get_parameters(), alone.get_parameters())


class _Overflow(nnx.train.Callback):
    """Makes the last update of epoch ``epoch`` overflow, as too large a step
    does: the epoch's losses (measured before each update) stay finite."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, run, epoch, record):
        if epoch == self.epoch:
            flat = run.net.get_parameters()
            flat[0] = np.inf
            run.net.set_parameters(flat)


def test_a_checkpoint_between_evaluations_is_never_written_from_diverged_parameters(tmp_path):
    """The checkpoint of an epoch whose last update overflowed replaced the
    last good one, and load() took it; the divergence was only reported at
    the next evaluation."""
    path = tmp_path / "run.npz"
    net, opt = make_run()
    X, y = run_data()
    with pytest.raises(nnx.TrainingDiverged) as err:
        nnx.Trainer(net, opt).fit(X[:120], y[:120], X[120:], y[120:], epochs=EPOCHS,
                                  eval_every=3, batch_size=16, seed=5, checkpoint=path,
                                  checkpoint_every=1, callbacks=[_Overflow(2)])
    assert (err.value.epoch, err.value.restored_epoch) == (2, 0)
    start = make_run()[0]
    start.build(10)
    np.testing.assert_array_equal(net.get_parameters(), start.get_parameters())
    header, _ = nnx.checkpoint.read(path)  # the last good checkpoint, untouched
    assert header["training"]["epoch"] == 1
    assert np.isfinite(nnx.NeuralNetwork.load(path).get_parameters()).all()


def test_monitoring_the_accuracy_keeps_the_most_accurate_evaluation():
    """With monitor="accuracy" the model is chosen on the evaluation accuracy
    (higher is better), not on the loss."""
    X, y, Xt, yt = make_data()
    net = make_classifier(dtype="float64")
    hist = nnx.Trainer(net, nnx.SGDMomentum(0.5)).fit(X, y, validation=(Xt, yt), epochs=12,
                                                       eval_every=1, batch_size=20, seed=3,
                                                       patience=None, monitor="accuracy")
    accs = [r["accuracy"] for r in hist.records]
    best = hist.records[accs.index(max(accs))]  # the first evaluation with the top accuracy
    assert hist.best_epoch == best["epoch"] and hist.best_loss == best["loss"]
    assert nnx.accuracy(net, Xt, yt) == pytest.approx(max(accs), abs=1e-12)
    by_loss = nnx.Trainer(make_classifier(dtype="float64"), nnx.SGDMomentum(0.5)).fit(
        X, y, validation=(Xt, yt), epochs=12, eval_every=1, batch_size=20, seed=3,
        patience=None)
    assert by_loss.best_epoch != hist.best_epoch  # the two choices differ on this run


def test_monitoring_the_accuracy_of_a_regression_is_refused_before_training():
    X, y, Xt, yt = make_data()
    mse = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(1, "linear")], "mse", seed=0)
    with pytest.raises(ValueError, match="monitor='accuracy' needs a classifier"):
        nnx.Trainer(mse, nnx.SGD(0.1)).fit(X, X[:, 0], validation=(Xt, Xt[:, 0]),
                                           monitor="accuracy")
    assert not mse.built


# --------------------------------------------------------------- CSVLogger
def test_the_csv_logger_writes_one_row_per_evaluation_into_a_folder_it_makes(tmp_path):
    """Its folder is made when missing, as a checkpoint's is (open() failed
    with a bare 'No such file or directory' after the data had loaded)."""
    X, y, Xv, yv = make_data()
    path = tmp_path / "logs" / "today" / "run.csv"
    log = nnx.CSVLogger(path)
    hist = Trainer(make_classifier(), SGD(0.1)).fit(X, y, Xv, yv, epochs=4, eval_every=2,
                                                     batch_size=20, callbacks=[log])
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(nnx.CSVLogger.COLUMNS)
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == [2, 4]
    np.testing.assert_allclose([float(r[2]) for r in rows], [r["loss"] for r in hist.records],
                               rtol=1e-12)


def test_a_resumed_run_logs_each_evaluation_once(tmp_path):
    """The log was appended to: evaluations after the checkpoint resumed from,
    logged before the interruption and made again, came twice (1,2,3,3,4)."""
    X, y, Xv, yv = make_data()

    def run(log, ckpt, stop=None, resume=None):
        def interrupt(epoch, record):
            if epoch == stop:
                raise KeyboardInterrupt
        return Trainer(make_classifier(), SGD(0.1)).fit(
            X, y, Xv, yv, epochs=5, eval_every=1, batch_size=20, callbacks=[nnx.CSVLogger(log)],
            checkpoint=ckpt, checkpoint_every=2, callback=interrupt, resume=resume)

    def rows(path):
        return [line.split(",") for line in path.read_text().splitlines()[1:]]
    whole = run(tmp_path / "whole.csv", tmp_path / "whole.npz")
    with pytest.raises(KeyboardInterrupt):  # after epoch 3's row; the checkpoint is epoch 2's
        run(tmp_path / "cut.csv", tmp_path / "cut.npz", stop=3)
    assert [int(r[0]) for r in rows(tmp_path / "cut.csv")] == [1, 2, 3]
    resumed = run(tmp_path / "cut.csv", tmp_path / "cut.npz", resume=tmp_path / "cut.npz")
    got, want = rows(tmp_path / "cut.csv"), rows(tmp_path / "whole.csv")
    assert [r[0] for r in got] == [r[0] for r in want] == ["1", "2", "3", "4", "5"]
    assert [r[1:5] for r in got] == [r[1:5] for r in want]  # the seconds aside
    assert resumed.records == whole.records
    seconds = [float(r[5]) for r in got]
    assert seconds == sorted(seconds)  # counted on from the rows kept


def test_the_csv_logger_refuses_a_path_it_could_not_write_at_once(tmp_path):
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path, tmp_path / "afile" / "run.csv"):
        with pytest.raises(nnx.InputError, match="CSVLogger path="):
            nnx.CSVLogger(bad)


def test_a_rate_set_by_hand_under_a_per_step_schedule_is_refused_not_ignored():
    """A callback that set optim.lr under Cosine(per="step") changed nothing
    (every step reads the epoch's table of rates), while the records and the
    CSV log reported the rate it set."""
    X, y, Xv, yv = make_data()

    class ZeroRate(nnx.Callback):
        def on_epoch_start(self, run, epoch):
            run.optim.lr = 0.0

    optim = nnx.SGD(nnx.Cosine(0.1, per="step"))
    with pytest.raises(nnx.InputError, match=r"optim.lr = 0.0: .* sets the rate of every step"):
        Trainer(make_classifier(), optim).fit(X, y, Xv, yv, epochs=2, batch_size=20,
                                              callbacks=[ZeroRate()])
    # per epoch, the rate set by hand is the one used: no step moves the parameters
    net = make_classifier()
    net.build(X.shape[1])
    before = params(net)
    Trainer(net, nnx.SGD(nnx.Cosine(0.1))).fit(X, y, Xv, yv, epochs=2, batch_size=20,
                                              restart=False, callbacks=[ZeroRate()])
    np.testing.assert_array_equal(params(net), before)


@pytest.mark.parametrize("case", ["monitor-accuracy", "plateau", "early-stopping-given"])
def test_settings_only_an_evaluation_set_drives_are_refused_without_one(case):
    """Without X_test/validation they did nothing: ReduceOnPlateau never cut
    the rate, and monitor='accuracy' had no accuracy to compare (an
    EarlyStopping(monitor="accuracy") given in callbacks= went unchecked)."""
    X, y, _, _ = make_data()
    optim = nnx.SGD(nnx.ReduceOnPlateau(0.1)) if case == "plateau" else nnx.SGD(0.1)
    kw = {"monitor-accuracy": {"monitor": "accuracy"}, "plateau": {},
          "early-stopping-given": {"callbacks": [nnx.EarlyStopping(monitor="accuracy")]}}[case]
    with pytest.raises(nnx.InputError, match="but fit has no evaluation set: pass X_test"):
        Trainer(make_classifier(), optim).fit(X, y, epochs=2, batch_size=20, **kw)


def test_every_callback_closes_even_when_one_close_raises(tmp_path, caplog):
    """One callback's close() raising skipped every later close() (a CSV log
    left open), and replaced the error that ended training."""
    X, y, Xv, yv = make_data()
    closed = []

    class BadClose(nnx.Callback):
        def close(self):
            raise OSError("disk gone")

    class Records(nnx.Callback):
        def close(self):
            closed.append(True)
    with pytest.raises(OSError, match="disk gone"):
        Trainer(make_classifier(), SGD(0.1)).fit(X, y, Xv, yv, epochs=1, batch_size=20,
                                                 callbacks=[BadClose(), Records()])
    assert closed == [True]

    class Boom(nnx.Callback):
        def on_epoch_end(self, run, epoch, record):
            raise KeyError("training's own error")
    with pytest.raises(KeyError, match="training's own error"):
        Trainer(make_classifier(), SGD(0.1)).fit(X, y, Xv, yv, epochs=1, batch_size=20,
                                                 callbacks=[Boom(), BadClose(), Records()])
    assert closed == [True, True]
    assert "BadClose.close() raised OSError: disk gone" in caplog.text


def test_a_callback_returning_something_other_than_true_is_told_it_does_not_stop():
    """on_epoch_end or callback= returning 1 (or a loss) trained on without a
    word, where the user meant to stop."""
    X, y, Xv, yv = make_data()

    def returns_one_for_the_test(epoch, record):
        return 1
    with pytest.warns(nnx.InputWarning, match=r"callback .*returns_one_for_the_test returned 1 "
                                              r"\(int\); only True stops training"):
        h = Trainer(make_classifier(), SGD(0.1)).fit(X, y, Xv, yv, epochs=3, batch_size=20,
                                                     callback=returns_one_for_the_test)
    assert h.epochs_run == 3 and not h.stopped_early


def test_checkpoint_extra_and_meta_a_save_would_refuse_are_refused_at_once(tmp_path):
    """Checkpoint(extra=, meta=) refused dotted names alone: a reserved name,
    an array of Python objects or meta JSON cannot write were refused at the
    first save, after an epoch of training."""
    path = tmp_path / "run.npz"
    for kwargs, match in (({"extra": {"__header__": np.zeros(2)}}, "reserved"),
                          ({"extra": {"good_params": np.zeros(2)}}, "reserved"),
                          ({"extra": {"a.b": np.zeros(2)}}, "names with a dot"),
                          ({"extra": {"o": np.array([object()])}}, "Python objects"),
                          ({"meta": {"a": object()}}, "JSON can write"),
                          ({"meta": ["digits"]}, "meta must be a dict")):
        with pytest.raises(nnx.InputError, match=match):
            nnx.Checkpoint(path, extra=kwargs.get("extra"), meta=kwargs.get("meta"))


def test_a_resumed_runs_progress_bar_starts_at_its_epoch(monkeypatch):
    """The bar counted the epochs before the checkpoint as done at the start:
    '1302 epoch/s' on resuming."""
    import io
    import types
    pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr("sys.stderr", Terminal())
    bar = nnx.ProgressBar("fit")
    bar.on_fit_start(types.SimpleNamespace(epoch=3, settings=types.SimpleNamespace(epochs=10)))
    try:
        shown = bar._bar.format_meter(**bar._bar.format_dict)
        assert "3/10" in shown and "?epoch/s" in shown, shown  # no rate until an epoch ran
    finally:
        bar.close()


# ------------------------------------------- what fit refuses before training
def _watched(net):
    """The network's parameters before fit, to show a refusal trained nothing."""
    net.build(good_data()[0].shape[1])
    return params(net)


class _KerasHook(nnx.Callback):
    def on_epoch_end(self, epoch, logs=None):  # Keras's signature
        raise AssertionError("never called")


class _TooFew(nnx.Callback):
    def on_epoch_start(self, run):
        raise AssertionError("never called")


@pytest.mark.parametrize("kwargs, message", [
    ({"callbacks": [_KerasHook()]},
     r"_KerasHook\.on_epoch_end\(epoch, logs=None\) cannot take 3 argument\(s\) \(run, epoch, "
     r"record\): fit calls it as on_epoch_end\(self, run, epoch, record\); nnx's hooks take "
     r"the run first"),
    ({"callbacks": [_TooFew()]}, r"_TooFew\.on_epoch_start\(run\) cannot take 2 argument"),
    ({"callback": lambda epoch: None},
     r"callback .*<lambda>\(epoch\) cannot take 2 argument\(s\) \(epoch, record\): fit calls "
     r"it after each epoch as callback\(epoch, record_or_None\)$"),
])
def test_a_hook_that_cannot_take_fits_arguments_is_refused_before_training(kwargs, message):
    """A Keras-style on_epoch_end(self, epoch, logs) or callback=lambda epoch: ...
    raised Python's TypeError from deep in the trainer after the first epoch."""
    net, X_y = make_net(), good_data()
    before = _watched(net)
    with pytest.raises(nnx.InputTypeError, match=message):
        Trainer(net, SGD(0.1)).fit(*X_y, epochs=2, restart=False, **kwargs)
    np.testing.assert_array_equal(params(net), before)


def test_hooks_that_take_more_or_any_arguments_are_accepted():
    calls = []

    class Loose(nnx.Callback):
        def on_epoch_end(self, run, *args, **kwargs):
            calls.append(args[0])

        def close(self, *args):
            calls.append("closed")

    Trainer(make_net(), SGD(0.1)).fit(*good_data(), epochs=2, callbacks=[Loose()],
                                      callback=lambda *a: calls.append(a[0]))
    assert calls == [1, 1, 2, 2, "closed"]


def test_stopping_keywords_beside_a_given_early_stopping_are_refused_not_dropped():
    """fit(patience=3, monitor="accuracy", callbacks=[EarlyStopping(...)]) ran
    with the given one's settings and ignored the keywords, silently."""
    net, (X, y) = make_net(), good_data()
    with pytest.raises(nnx.InputValueError,
                       match=r"fit\(patience=3, monitor='accuracy'\) with EarlyStopping\("
                             r"patience=20, .*\) in callbacks: .* would not be used; give them "
                             r"to it instead \(EarlyStopping\(patience=3, monitor='accuracy'\)\)"):
        Trainer(net, SGD(0.1)).fit(X, y, X, y, epochs=2, patience=3, monitor="accuracy",
                                   callbacks=[nnx.EarlyStopping(patience=20)])
    with pytest.raises(nnx.InputValueError, match=r"fit\(min_delta=0\.1\) with"):
        Trainer(net, SGD(0.1), callbacks=[nnx.EarlyStopping()]).fit(
            X, y, X, y, epochs=2, min_delta=0.1)
    # the keywords at their defaults (as a call that spells them out) go with it
    history = Trainer(net, SGD(0.1)).fit(X, y, X, y, epochs=2, eval_every=1, patience=1,
                                         callbacks=[nnx.EarlyStopping(patience=None)])
    assert history.epochs_run == 2


def test_kerass_positional_batch_size_and_epochs_are_refused_naming_the_call_shape():
    """fit(X, y, 32, 10) said "X_test must be 2-D (rows, features), got shape ()"."""
    net, (X, y) = make_net(), good_data()
    for args in ((32, 10), (np.int64(32), np.float64(10.0))):
        with pytest.raises(nnx.InputTypeError,
                           match=r"X_test=32 is a number: fit's third and fourth positional "
                                 r"arguments are X_test and y_test .* pass epochs=, batch_size="):
            Trainer(net, SGD(0.1)).fit(X, y, *args)
    with pytest.raises(nnx.InputTypeError, match=r"y_test=10 is a number"):
        Trainer(net, SGD(0.1)).fit(X, y, X, 10)


@pytest.mark.parametrize("verbose, prints", [(0, False), (1, True), (2, True), (True, True),
                                             (False, False)])
def test_verbose_takes_kerass_integers(verbose, prints, capsys):
    """verbose=1 was refused: "verbose must be True or False, got 1"."""
    X, y = good_data()
    Trainer(make_net(), SGD(0.1)).fit(X, y, X, y, epochs=2, eval_every=1, verbose=verbose)
    assert ("epoch    2/2" in capsys.readouterr().out) == prints


def test_verbose_refuses_other_values():
    for bad in (3, -1, "yes", 1.0):
        with pytest.raises(nnx.InputTypeError, match=r"verbose must be True or False \(or "
                                                     r"Keras's 0, 1 or 2\), got"):
            Trainer(make_net(), SGD(0.1)).fit(*good_data(), epochs=1, verbose=bad)
