"""Faults during training: divergence keeps the last good parameters,
checkpoints survive a killed writer, and a resumed run ends bit-identical to
an uninterrupted one."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import nnx
from nnx.checkpoint import CheckpointError

EPOCHS = 6


def data(n=150):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 10))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    return X, y


def make(seed=11):
    net = nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=0.8), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=seed)
    opt = nnx.SGDMomentum(0.2, momentum=0.9, final_lr=0.02, decay_type="exponential")
    return net, opt


def fit(net, opt, **kw):
    X, y = data()
    return nnx.Trainer(net, opt).fit(X[:120], y[:120], X[120:], y[120:], epochs=EPOCHS,
                                     eval_every=2, batch_size=16, seed=5, patience=10, **kw)


class Stop(Exception):
    pass


def _stop_at(epoch):
    def callback(e, record):
        if e == epoch:
            raise Stop
    return callback


@pytest.mark.parametrize("stop_after", range(1, EPOCHS))
def test_resumed_run_is_bit_identical(tmp_path, stop_after):
    net, opt = make()
    hist = fit(net, opt)
    path = tmp_path / "run.npz"
    net2, opt2 = make()
    with pytest.raises(Stop):  # the callback of the next epoch stops the run
        fit(net2, opt2, checkpoint=path, checkpoint_every=1, callback=_stop_at(stop_after + 1))
    net3, opt3 = make()  # a fresh process would start from nothing, like this
    hist3 = fit(net3, opt3, checkpoint=path, checkpoint_every=1, resume=path)
    for p, q in zip(net.params(), net3.params()):
        np.testing.assert_array_equal(p, q)
    assert hist3.records == hist.records
    assert hist3.best_epoch == hist.best_epoch and hist3.epochs_run == hist.epochs_run


RESUMABLE = {
    "adam-plateau": lambda: nnx.Adam(nnx.ReduceOnPlateau(0.01, factor=0.5, patience=0),
                                     clip_norm=1.0),
    "rmsprop-onecycle": lambda: nnx.RMSprop(nnx.OneCycle(0.01), momentum=0.5, centered=True),
    "adagrad-cosine-warm-up": lambda: nnx.Adagrad(nnx.Cosine(0.1, warmup=2), lr_decay=0.1),
}


@pytest.mark.parametrize("stop_after", [1, 2, 3])
@pytest.mark.parametrize("name", list(RESUMABLE))
def test_every_optimiser_and_schedule_resumes_bit_identically(tmp_path, name, stop_after):
    """The optimiser's state, its step count and the schedule's own state
    (the plateau's best loss and count) travel in the checkpoint."""
    net, _ = make()
    hist = fit(net, RESUMABLE[name]())
    path = tmp_path / "run.npz"
    with pytest.raises(Stop):
        fit(make()[0], RESUMABLE[name](), checkpoint=path, checkpoint_every=1,
            callback=_stop_at(stop_after + 1))
    net3 = make()[0]
    hist3 = fit(net3, RESUMABLE[name](), checkpoint=path, resume=path)
    for p, q in zip(net.params(), net3.params()):
        np.testing.assert_array_equal(p, q)
    assert hist3.records == hist.records


def test_resume_refuses_the_checkpoint_of_a_network_with_another_seed(tmp_path):
    """Same layers and settings, another network seed: other initial weights
    and dropout stream, so not the saved run."""
    path = tmp_path / "run.npz"
    fit(*make(seed=11), checkpoint=path)
    with pytest.raises(ValueError, match="net_seed=11 vs 12"):
        fit(*make(seed=12), resume=path)


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    path = tmp_path / "run.npz"
    net, opt = make()
    hist = fit(net, opt, checkpoint=path)
    net2, opt2 = make()
    hist2 = fit(net2, opt2, resume=path)
    assert hist2.records == hist.records
    for p, q in zip(net.params(), net2.params()):
        np.testing.assert_array_equal(p, q)


def test_resume_refuses_other_settings_networks_and_plain_models(tmp_path):
    path = tmp_path / "run.npz"
    net, opt = make()
    fit(net, opt, checkpoint=path)
    X, y = data()
    with pytest.raises(ValueError, match=r"differ.*batch_size=16 vs 8"):
        nnx.Trainer(*make()).fit(X, y, epochs=EPOCHS, eval_every=2, batch_size=8, seed=5,
                                 patience=10, resume=path)
    other = nnx.NeuralNetwork([nnx.Dense(7, "relu"), nnx.Dense(3, "linear")],
                              nnx.SoftmaxCrossEntropy(), seed=1)
    with pytest.raises(ValueError, match="another network"):
        nnx.Trainer(other, make()[1]).fit(X, y, epochs=EPOCHS, eval_every=2, batch_size=16,
                                          seed=5, patience=10, resume=path)
    model = tmp_path / "model.npz"
    net.save(model)
    with pytest.raises(CheckpointError, match="holds a model, not a training run"):
        fit(*make(), resume=model)
    with pytest.raises(ValueError, match="checkpoint_every was given without"):
        fit(*make(), checkpoint_every=2)


def test_resume_refuses_a_checkpoint_of_another_loss_or_dtype(tmp_path):
    """Same layers, another loss or dtype: the saved run is not this one."""
    path = tmp_path / "run.npz"
    fit(*make(), checkpoint=path)
    for loss, dtype, what in (("mse", "float32", "loss"), ("softmax_cross_entropy", "float64",
                                                            "dtype")):
        net = nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=0.8), nnx.Dense(3, "linear")],
                                loss, seed=11, dtype=dtype)
        with pytest.raises(ValueError, match=f"another network: its {what}"):
            fit(net, make()[1], resume=path)


def test_the_final_checkpoint_holds_the_parameters_fit_returns(tmp_path):
    """After early stopping restores the best evaluation, the last checkpoint
    holds those parameters too, not the later, worse ones."""
    path = tmp_path / "run.npz"
    net, opt = make()
    X, y = data()
    hist = nnx.Trainer(net, opt).fit(X[:120], y[:120], X[120:], y[120:], epochs=EPOCHS,
                                     eval_every=1, batch_size=16, seed=5, checkpoint=path)
    assert hist.stopped_early and hist.records[-1]["epoch"] != hist.best_epoch
    saved = nnx.NeuralNetwork.load(path)
    np.testing.assert_array_equal(saved.get_parameters(), net.get_parameters())
    assert float(saved.loss_on(X[120:], y[120:])) == pytest.approx(hist.best_loss)


def test_divergence_without_an_evaluation_set_restores_usable_parameters():
    """Without an evaluation set nothing measured the parameters of the last
    update; the restored ones must still give a finite loss."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    Y = rng.standard_normal((64, 2)).astype(np.float32)
    net = nnx.NeuralNetwork([nnx.Dense(8, "linear"), nnx.Dense(2, "linear")], "mse", seed=0)
    with np.errstate(all="ignore"), pytest.raises(nnx.TrainingDiverged) as info:
        nnx.Trainer(net, nnx.SGD(40.0)).fit(X, Y, epochs=50, eval_every=1, batch_size=64)
    assert np.isfinite(net.get_parameters()).all()
    with np.errstate(all="ignore"):
        assert np.isfinite(float(net.loss_on(X, Y))), info.value


def test_divergence_restores_the_last_good_evaluation():
    net, opt = make()
    snapshots = {}

    def corrupt(epoch, record):
        if record is not None:
            snapshots[epoch] = net.get_parameters()
        if epoch == 3:  # the next epoch's loss is NaN
            net.param_buffer[0] = np.nan
    with pytest.raises(nnx.TrainingDiverged, match="NaN or infinite in epoch 4") as info:
        fit(net, opt, callback=corrupt)
    assert info.value.epoch == 4 and info.value.restored_epoch == 2
    np.testing.assert_array_equal(net.get_parameters(), snapshots[2])
    assert opt.velocity is None
    X, y = data()
    assert 0.0 <= nnx.accuracy(net, X, y) <= 1.0  # still usable
    hist = fit(net, opt)  # and trainable again
    assert np.isfinite(hist.records[-1]["loss"])


def test_a_real_divergence_before_any_evaluation_restores_the_start():
    X, y = data()
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


CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    import test_resume as t

    real_savez, calls = np.savez, [0]

    def slow_savez(f, **arrays):
        calls[0] += 1
        if calls[0] < 3:
            return real_savez(f, **arrays)
        f.write(b"PK\\x03\\x04 half a checkpoint")  # the third write stops half-way
        f.flush()
        open({marker!r}, "w").close()
        time.sleep(120)

    np.savez = slow_savez
    net, opt = t.make()
    t.fit(net, opt, checkpoint={path!r}, checkpoint_every=1)
""")


def test_killed_mid_write_keeps_the_previous_checkpoint(tmp_path):
    path, marker = str(tmp_path / "run.npz"), str(tmp_path / "writing")
    code = CHILD.format(tests=os.path.dirname(__file__), marker=marker, path=path)
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 120
        while not os.path.exists(marker):
            assert child.poll() is None, "the training subprocess ended early"
            assert time.time() < deadline, "the third checkpoint write never started"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    # the checkpoint under the real name is the complete one of epoch 2
    back = nnx.NeuralNetwork.load(path)
    assert back.n_in == 10
    net, opt = make()
    hist = fit(net, opt, resume=path)
    ref, ref_opt = make()
    ref_hist = fit(ref, ref_opt)
    assert hist.records == ref_hist.records
    for p, q in zip(net.params(), ref.params()):
        np.testing.assert_array_equal(p, q)


def test_resume_refuses_other_training_data_or_a_new_evaluation_set(tmp_path):
    """resume= compared the fit() arguments only: a run resumed on 60 of its
    120 rows, or with an evaluation set it did not have, went on silently."""
    path = tmp_path / "run.npz"
    fit(*make(), checkpoint=path)
    X, y = data()
    common = dict(epochs=EPOCHS, eval_every=2, batch_size=16, seed=5, patience=10, resume=path)
    with pytest.raises(ValueError, match=r"differ.*train_rows=120 vs 60"):
        nnx.Trainer(*make()).fit(X[:60], y[:60], X[120:], y[120:], **common)
    with pytest.raises(ValueError, match=r"differ.*eval_rows=30 vs None"):
        nnx.Trainer(*make()).fit(X[:120], y[:120], **common)
