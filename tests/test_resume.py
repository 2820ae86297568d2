"""fit(resume=...): a resumed run ends bit-identical to an uninterrupted
one, a checkpoint survives a writer killed mid-write, and the checkpoint of
another run is refused."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import EPOCHS, fit_run, make_run, run_data

import nnx
from nnx import checkpoint
from nnx.checkpoint import CheckpointError


class Stop(Exception):
    pass


def _stop_at(epoch):
    def callback(e, record):
        if e == epoch:
            raise Stop
    return callback


# ------------------------ a resumed run ends where the uninterrupted one does
@pytest.mark.parametrize("stop_after", range(1, EPOCHS))
def test_resumed_run_is_bit_identical(tmp_path, stop_after):
    net, opt = make_run()
    hist = fit_run(net, opt)
    path = tmp_path / "run.npz"
    net2, opt2 = make_run()
    with pytest.raises(Stop):  # the callback of the next epoch stops the run
        fit_run(net2, opt2, checkpoint=path, checkpoint_every=1, callback=_stop_at(stop_after + 1))
    net3, opt3 = make_run()  # a fresh process would start from nothing, like this
    hist3 = fit_run(net3, opt3, checkpoint=path, checkpoint_every=1, resume=path)
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
    net, _ = make_run()
    hist = fit_run(net, RESUMABLE[name]())
    path = tmp_path / "run.npz"
    with pytest.raises(Stop):
        fit_run(make_run()[0], RESUMABLE[name](), checkpoint=path, checkpoint_every=1,
            callback=_stop_at(stop_after + 1))
    net3 = make_run()[0]
    hist3 = fit_run(net3, RESUMABLE[name](), checkpoint=path, resume=path)
    for p, q in zip(net.params(), net3.params()):
        np.testing.assert_array_equal(p, q)
    assert hist3.records == hist.records


class _Halve(nnx.Callback):
    """A plateau rule by hand: halves the rate at every evaluation."""

    def on_evaluation(self, run, record):
        run.optim.lr = run.optim.lr / 2


@pytest.mark.parametrize("stop_after", [2, 3])
def test_a_constant_rate_set_by_hand_resumes_as_it_ran(tmp_path, stop_after):
    net, _ = make_run()
    hist = fit_run(net, nnx.SGD(0.1), callbacks=[_Halve()])
    assert [r["lr"] for r in hist.records] == [0.1, 0.05, 0.025]
    path = tmp_path / "run.npz"
    with pytest.raises(Stop):
        fit_run(make_run()[0], nnx.SGD(0.1), checkpoint=path, checkpoint_every=1,
                callbacks=[_Halve()], callback=_stop_at(stop_after + 1))
    net3 = make_run()[0]
    hist3 = fit_run(net3, nnx.SGD(0.1), checkpoint=path, resume=path, callbacks=[_Halve()])
    for p, q in zip(net.params(), net3.params()):
        np.testing.assert_array_equal(p, q)
    assert hist3.records == hist.records


def test_a_run_whose_rate_was_set_by_hand_resumes_with_the_same_optimiser_object(tmp_path):
    """The rate set by hand rewrote the optimiser's settings (its repr), so
    the natural next step after a Ctrl-C in a notebook, fit(resume=) with the
    same optimiser object, was refused as a run with other settings."""
    net, _ = make_run()
    hist = fit_run(net, nnx.SGD(0.1), callbacks=[_Halve()])
    path = tmp_path / "run.npz"
    optim = nnx.SGD(0.1)
    with pytest.raises(Stop):
        fit_run(make_run()[0], optim, checkpoint=path, checkpoint_every=1,
                callbacks=[_Halve()], callback=_stop_at(4))
    assert optim.lr == 0.025
    net3 = make_run()[0]
    hist3 = fit_run(net3, optim, checkpoint=path, resume=path, callbacks=[_Halve()])
    for p, q in zip(net.params(), net3.params()):
        np.testing.assert_array_equal(p, q)
    assert hist3.records == hist.records


def test_resuming_a_finished_run_changes_nothing_and_says_so(tmp_path):
    """fit returns at once (the run had ended); it did so without a word,
    which looked like a resume that trained nothing by mistake."""
    path = tmp_path / "run.npz"
    net, opt = make_run()
    hist = fit_run(net, opt, checkpoint=path)
    net2, opt2 = make_run()
    with pytest.warns(nnx.InputWarning, match=r"that run had finished \(had run all its "
                                              r"epochs.*restart=False"):
        hist2 = fit_run(net2, opt2, resume=path)
    assert hist2.records == hist.records
    for p, q in zip(net.params(), net2.params()):
        np.testing.assert_array_equal(p, q)


# -------------------------------------------------- a writer killed mid-write
CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    import helpers as t

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
    net, opt = t.make_run()
    t.fit_run(net, opt, checkpoint={path!r}, checkpoint_every=1)
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
    net, opt = make_run()
    hist = fit_run(net, opt, resume=path)
    ref, ref_opt = make_run()
    ref_hist = fit_run(ref, ref_opt)
    assert hist.records == ref_hist.records
    for p, q in zip(net.params(), ref.params()):
        np.testing.assert_array_equal(p, q)


# ----------------------------------- the checkpoint of another run is refused
def test_resume_refuses_the_checkpoint_of_a_network_with_another_seed(tmp_path):
    """Same layers and settings, another network seed: other initial weights
    and dropout stream, so not the saved run."""
    path = tmp_path / "run.npz"
    fit_run(*make_run(seed=11), checkpoint=path)
    with pytest.raises(ValueError, match="net_seed=11 vs 12"):
        fit_run(*make_run(seed=12), resume=path)


def test_resume_refuses_other_settings_networks_and_plain_models(tmp_path):
    path = tmp_path / "run.npz"
    net, opt = make_run()
    fit_run(net, opt, checkpoint=path)
    X, y = run_data()
    with pytest.raises(ValueError, match=r"differ.*batch_size=16 vs 8"):
        nnx.Trainer(*make_run()).fit(X, y, epochs=EPOCHS, eval_every=2, batch_size=8, seed=5,
                                 patience=10, resume=path)
    other = nnx.NeuralNetwork([nnx.Dense(7, "relu"), nnx.Dense(3, "linear")],
                              nnx.SoftmaxCrossEntropy(), seed=1)
    with pytest.raises(ValueError, match="another network"):
        nnx.Trainer(other, make_run()[1]).fit(X, y, epochs=EPOCHS, eval_every=2, batch_size=16,
                                          seed=5, patience=10, resume=path)
    model = tmp_path / "model.npz"
    net.save(model)
    with pytest.raises(CheckpointError, match="holds a model, not a training run"):
        fit_run(*make_run(), resume=model)
    with pytest.raises(ValueError, match="checkpoint_every was given without"):
        fit_run(*make_run(), checkpoint_every=2)


def test_resume_refuses_a_checkpoint_of_another_loss_or_dtype(tmp_path):
    """Same layers, another loss or dtype: the saved run is not this one."""
    path = tmp_path / "run.npz"
    fit_run(*make_run(), checkpoint=path)
    for loss, dtype, what in (("mse", "float32", "loss"), ("softmax_cross_entropy", "float64",
                                                            "dtype")):
        net = nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=0.8), nnx.Dense(3, "linear")],
                                loss, seed=11, dtype=dtype)
        with pytest.raises(ValueError, match=f"another network: the network.s {what} "):
            fit_run(net, make_run()[1], resume=path)


def test_resume_refuses_a_settings_table_without_a_field(tmp_path):
    """A field the saved table lacked was not compared: seed=7 resumed a seed=5 run."""
    path = tmp_path / "run.npz"
    fit_run(*make_run(), checkpoint=path)
    header, arrays = checkpoint.read(path)
    del header["training"]["settings"]["seed"]
    crafted = checkpoint.write(tmp_path / "crafted.npz", header, arrays)
    with pytest.raises(ValueError, match=r"differ.*seed='missing' vs 5"):
        fit_run(*make_run(), resume=crafted)


def test_resume_compares_the_early_stopping_in_use(tmp_path):
    """An EarlyStopping passed in callbacks= was not compared (fit's own
    patience, unused, was): a run saved with patience 1 on the accuracy went
    on with patience 8 on the loss, comparing losses with a saved accuracy."""
    path = tmp_path / "run.npz"
    X, y = run_data()

    def run(es, **kw):
        return nnx.Trainer(*make_run()).fit(X[:120], y[:120], X[120:], y[120:], epochs=EPOCHS,
                                            eval_every=2, batch_size=16, seed=5,
                                            callbacks=[es], **kw)
    run(nnx.EarlyStopping(patience=1, monitor="accuracy"), checkpoint=path)
    with pytest.raises(ValueError, match=r"differ.*patience=1 vs 8, .*monitor='accuracy' vs "
                                         r"'loss'"):
        run(nnx.EarlyStopping(patience=8), resume=path)
    with pytest.raises(ValueError, match=r"differ.*restore_best=True vs False"):
        run(nnx.EarlyStopping(patience=1, monitor="accuracy", restore_best=False), resume=path)
    run(nnx.EarlyStopping(patience=1, monitor="accuracy"), resume=path)  # its own resumes


def test_resume_refuses_other_data_of_the_same_size(tmp_path):
    """Only the numbers of rows were compared: the same rows shuffled, or other
    rows, resumed a run that then matched neither."""
    path = tmp_path / "run.npz"
    fit_run(*make_run(), checkpoint=path)
    X, y = run_data()
    common = dict(epochs=EPOCHS, eval_every=2, batch_size=16, seed=5, patience=10, resume=path)
    order = np.random.default_rng(1).permutation(120)
    for X_train, y_train in ((X[order], y[order]), (X[:120] + 1e-3, y[:120]),
                             (X[:120, ::-1], y[:120])):
        with pytest.raises(ValueError, match="the training or evaluation data differ from the "
                                             "saved run's"):
            nnx.Trainer(*make_run()).fit(X_train, y_train, X[120:], y[120:], **common)
    # the same data in another memory layout is the same data
    nnx.Trainer(*make_run()).fit(np.asfortranarray(X[:120]), y[:120], X[120:], y[120:],
                                 **common)


def test_resume_refuses_other_training_data_or_a_new_evaluation_set(tmp_path):
    """resume= compared the fit() arguments only: a run resumed on 60 of its
    120 rows, or with an evaluation set it did not have, went on silently."""
    path = tmp_path / "run.npz"
    fit_run(*make_run(), checkpoint=path)
    X, y = run_data()
    common = dict(epochs=EPOCHS, eval_every=2, batch_size=16, seed=5, patience=10, resume=path)
    with pytest.raises(ValueError, match=r"differ.*train_rows=120 vs 60"):
        nnx.Trainer(*make_run()).fit(X[:60], y[:60], X[120:], y[120:], **common)
    with pytest.raises(ValueError, match=r"differ.*eval_rows=30 vs None"):
        nnx.Trainer(*make_run()).fit(X[:120], y[:120], **common)


# --------------------------------------------- two runs writing one path
class _Intruder(nnx.train.Callback):
    """Runs another fit, checkpointing to ``path``, in epoch ``epoch`` of this one."""

    def __init__(self, path, epoch):
        self.path, self.epoch = path, epoch

    def on_epoch_end(self, run, epoch, record):
        if epoch == self.epoch:
            fit_run(*make_run(seed=12), checkpoint=self.path)


def test_two_runs_writing_one_checkpoint_path_are_caught(tmp_path):
    """Each run's saves replaced the other's checkpoint without a word, so
    neither file could be resumed as the run it claimed to be."""
    path = tmp_path / "run.npz"
    with pytest.raises(CheckpointError, match=re.escape(repr(str(path))) + " was replaced since "
                       r"this run saved it at epoch 1 \(it now holds run [0-9a-f]{16}'s "
                       r"checkpoint; this is run [0-9a-f]{16}\).*give each run its own "
                       "checkpoint path"):
        fit_run(*make_run(), checkpoint=path, checkpoint_every=1,
                callbacks=[_Intruder(path, 2)])
    saved = checkpoint.read_header(path)["training"]  # the other run's file is left alone
    assert saved["settings"]["net_seed"] == 12 and saved["finished"]


def test_a_run_goes_on_over_its_own_file_a_resumed_one_and_a_deleted_one(tmp_path):
    path = tmp_path / "run.npz"
    with pytest.raises(Stop):
        fit_run(*make_run(), checkpoint=path, checkpoint_every=1, callback=_stop_at(3))
    first = checkpoint.read_header(path)["training"]["run_id"]

    def delete(epoch, record):
        if epoch == 5:
            path.unlink()
    fit_run(*make_run(), checkpoint=path, checkpoint_every=1, resume=path, callback=delete)
    saved = checkpoint.read_header(path)["training"]
    assert saved["finished"] and saved["run_id"] != first


# ------------------------------- a crafted training state is refused by name
def _velocity(header, arrays):
    arrays["optim.velocity"] = arrays["optim.velocity"][:-1]


def _field(*keys, value=None, delete=False):
    def change(header, arrays):
        table = header["training"]
        for k in keys[:-1]:
            table = table[k]
        if delete:
            del table[keys[-1]]
        else:
            table[keys[-1]] = value
    return change


def _array(name, change):
    def apply(header, arrays):
        arrays[name] = change(arrays[name].copy())
    return apply


def _nan(a):
    a[3] = np.nan
    return a


CRAFTED = {
    "velocity-too-short": (_velocity, r"array 'optim\.velocity' is of shape \(226,\) and "
                                      r"dtype float32; expected shape \(227,\) and dtype float32"),
    "velocity-float64": (_array("optim.velocity", lambda a: a.astype(np.float64)),
                         r"'optim\.velocity' is of shape \(227,\) and dtype float64"),
    "good-params-2-d": (_array("good_params", lambda a: a.reshape(1, -1)),
                        r"'good_params' is of shape \(1, 227\)"),
    "good-params-nan": (_array("good_params", _nan), "'good_params' holds 1 NaN or infinite"),
    "params-missing": (lambda h, a: a.pop("params"), "'params' is missing"),
    "an-adam-array": (lambda h, a: a.update({"optim.m": a["good_params"]}),
                      r"optimiser array name is 'optim\.m'; expected one of "
                      r"\['optim\.velocity'\] for SGDMomentum"),
    "steps-negative": (_field("optimizer", "steps", value=-1),
                       r"optimizer\.steps is -1; expected an integer from 0 up"),
    "steps-fractional": (_field("optimizer", "steps", value=2.5), r"optimizer\.steps is 2\.5"),
    "lr-a-string": (_field("optimizer", "lr", value="0.1"), r"optimizer\.lr is '0\.1'"),
    "max-epochs-other": (_field("optimizer", "max_epochs", value=7),
                         r"optimizer\.max_epochs is 7; expected 6 \(this run's\)"),
    "optimizer-a-list": (_field("optimizer", value=[]), r"optimizer is \[\]; expected a table"),
    "epoch-a-string": (_field("epoch", value="2"), "epoch is '2'"),
    "epoch-past-the-run": (_field("epoch", value=99), "epoch is 99; expected an integer from "
                                                      "0 to 6"),
    "good-epoch-ahead": (_field("good_epoch", value=3), "good_epoch is 3; expected an integer "
                                                       "from 0 to 2"),
    "finished-a-string": (_field("finished", value="no"), "finished is 'no'; expected true or "
                                                          "false"),
    "no-history": (_field("history", delete=True), "training state is .*; expected a table "
                                                   "with 'history'"),
    "records-a-table": (_field("history", "records", value={}), r"history\.records is \{\}"),
    "record-without-lr": (lambda h, a: h["training"]["history"]["records"][0].pop("lr"),
                          r"history\.records\[0\] is .*; expected a table with 'lr'"),
    "bad-evals-a-string": (_field("callbacks", "early_stopping", "bad_evals", value="x"),
                           r"callbacks\.early_stopping\.bad_evals is 'x'"),
    "generator-a-string": (_field("generator", value="PCG64"),
                           "generator is 'PCG64'; expected a table"),
    "generator-empty": (_field("generator", value={}), "generator was refused by the cpu "
                                                       "backend \\(InputValueError: a generator "
                                                       "state names its bit generator"),
    "generator-without-its-state": (_field("generator", value={"bit_generator": "PCG64"}),
                                   "generator was refused by the cpu backend"),
    "settings-a-list": (_field("settings", value=[1]), r"settings is \[1\]; expected a table"),
    # was accepted, with a warning that the backend could not restore generators
    "generator-damaged": (_field("generator", "state", value={"state": "x", "inc": 1}),
                          "generator was refused by the cpu backend \\(TypeError"),
    # accepted, the buffer then filled with zeros: another run
    "velocity-missing": (lambda h, a: a.pop("optim.velocity"),
                         r"optimiser arrays is \[\]; expected \['optim\.velocity'\] after 2 "
                         r"epoch\(s\) of SGDMomentum"),
    "accuracy-a-string": (lambda h, a: h["training"]["history"]["records"][0].update(
        accuracy="high"), r"history\.records\[0\]\.accuracy is 'high'"),
    "data-a-string": (_field("data", value="x"), "data is 'x'; expected a list of 8 numbers"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_resume_refuses_a_crafted_training_state_naming_the_field(tmp_path, name):
    """A re-hashed checkpoint (its checksum valid) with a field of the wrong
    type or an array of the wrong shape raised a raw KeyError, TypeError or
    ValueError on resume, or (a velocity of the wrong shape, replaced by
    zeros) was accepted."""
    path = tmp_path / "run.npz"
    with pytest.raises(Stop):
        fit_run(*make_run(), checkpoint=path, checkpoint_every=1, callback=_stop_at(3))
    header, arrays = checkpoint.read(path)
    change, message = CRAFTED[name]
    change(header, arrays)
    crafted = checkpoint.write(tmp_path / "crafted.npz", header, arrays)
    with pytest.raises(CheckpointError, match=re.escape(repr(str(crafted))) + " cannot be "
                       "resumed: its .*" + message):
        fit_run(*make_run(), resume=crafted)
    fit_run(*make_run(), resume=path)  # the file it came from resumes


class _NumpyState(nnx.Callback):
    """A callback whose checkpoint state holds a NumPy scalar."""
    state_key = "mine"

    def checkpoint_state(self):
        return {"best": np.float32(0.5)}, {}


class _Float64Momentum(nnx.SGD):
    """An optimiser of one's own whose state buffer is float64 in a float32 network."""
    state_names = ("velocity",)

    def _update(self, b, param, grad, scale):
        v = self.state["velocity"]
        if v.dtype != np.float64:
            v = self.state["velocity"] = v.astype(np.float64)
        v *= 0.9
        v += grad
        param -= (self.lr * v).astype(param.dtype)


@pytest.mark.parametrize("case", ["callback state", "optimiser array"])
def test_a_training_state_resume_would_refuse_is_refused_when_written(tmp_path, case):
    """Written unchecked, a callback's np.float32 state failed in the json
    module's encoder (18 frames deep) at the first save, and an optimiser's
    float64 state in a float32 network was written and then refused by resume."""
    path = tmp_path / "run.npz"
    kwargs = ({"callbacks": [_NumpyState()]} if case == "callback state" else {})
    optim = nnx.SGD(0.1) if case == "callback state" else _Float64Momentum(0.1)
    expected = (r"callback state 'mine' .* plain data that JSON can write"
                if case == "callback state" else
                r"could not be resumed: .*'optim.velocity' is of shape \(\d+,\) and dtype "
                r"float64; expected shape \(\d+,\) and dtype float32")
    shown = re.escape(repr(str(path)))
    with pytest.raises(nnx.InputError, match=rf"cannot write checkpoint {shown}[:,] .*{expected}"):
        fit_run(make_run()[0], optim, checkpoint=path, checkpoint_every=1, **kwargs)
    assert not path.exists()


class _ChangedByJson(nnx.Callback):
    state_key = "mine"

    def __init__(self, state):
        self.state = state

    def checkpoint_state(self):
        return self.state, {}


@pytest.mark.parametrize("state,expected", [
    ({"seen": {1: "a"}}, r"it\['seen'\] has the key 1 \(int\).*come back as \"1\""),
    ({"best": (0.5, 3)}, r"it\['best'\] is a tuple.*pass a list"),
    ({"ok": [1, 2.5, None, True, np.float64(2)], "bad": [np.float32(1)]},
     r"it\['bad'\]\[0\] is float32, which JSON cannot write")])
def test_a_callback_state_json_would_change_is_refused_when_written(tmp_path, state, expected):
    """{1: "a"} was written and came back from resume= as {"1": "a"} (so
    .get(1) gave None); a tuple came back a list."""
    path = tmp_path / "run.npz"
    with pytest.raises(nnx.InputError, match=expected):
        fit_run(make_run()[0], nnx.SGD(0.1), checkpoint=path, checkpoint_every=1,
                callbacks=[_ChangedByJson(state)])
    assert not path.exists()


class _Counter(nnx.Callback):
    """The documented pattern: state_key as a class attribute, so every
    instance has the same key."""
    state_key = "counter"

    def __init__(self, every):
        self.every, self.n = every, 0

    def on_epoch_end(self, run, epoch, record):
        self.n += epoch % self.every == 0

    def checkpoint_state(self):
        return {"n": self.n}, {}

    def load_checkpoint_state(self, data, arrays):
        self.n = data["n"]


class _StopAt(nnx.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, run, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_callbacks_that_share_a_state_key_each_resume_their_own_state(tmp_path):
    """The checkpoint kept one state per state_key: the last callback's. Two
    counters resumed as [6, 4], not [8, 4]; a loss EarlyStopping beside an
    accuracy one resumed with the other's best value and trained on."""
    path = tmp_path / "run.npz"

    def callbacks():
        return [_Counter(1), _Counter(2),
                nnx.EarlyStopping(2, monitor="loss"),
                nnx.EarlyStopping(None, monitor="accuracy", restore_best=False)]
    whole = callbacks()
    want = fit_run(make_run()[0], make_run()[1], callbacks=whole)
    assert [c.n for c in whole[:2]] == [want.epochs_run, want.epochs_run // 2]
    with pytest.raises(KeyboardInterrupt):
        fit_run(make_run()[0], make_run()[1], callbacks=callbacks() + [_StopAt(3)],
                checkpoint=path)
    resumed, (net, optim) = callbacks(), make_run()
    got = fit_run(net, optim, callbacks=resumed, resume=path, checkpoint=path)
    assert [c.n for c in resumed[:2]] == [c.n for c in whole[:2]]
    assert got.records == want.records
    assert [cb.best_value for cb in resumed[2:]] == [cb.best_value for cb in whole[2:]]


@pytest.mark.parametrize("key", [5, "", "a.b", "optim"])
def test_a_state_key_a_checkpoint_cannot_hold_is_refused_before_training(key):
    class Keyed(_Counter):
        state_key = key
    net, optim = make_run()
    with pytest.raises(nnx.InputTypeError, match=rf"Keyed.state_key is {re.escape(repr(key))}"):
        fit_run(net, optim, callbacks=[Keyed(1)])
    assert not net.built


class _PickyState(nnx.Callback):
    """Saves a state, and refuses it when a resumed run gives it back."""
    state_key = "picky"

    def checkpoint_state(self):
        return {"n": 1}, {}

    def load_checkpoint_state(self, data, arrays):
        raise ValueError("not this one")


def test_a_resume_refused_after_the_optimiser_was_planned_ends_its_run(tmp_path):
    """The optimiser's state is loaded (its run planned) before a callback
    refuses its own; the run stayed open, so optim.lr set afterwards was
    taken, and replaced in silence by the next fit."""
    path = tmp_path / "run.npz"
    net, _ = make_run()
    optim = nnx.SGD(nnx.Cosine(0.1))
    fit_run(net, optim, checkpoint=path, checkpoint_every=1, callbacks=[_PickyState()])
    with pytest.raises(nnx.InputError, match=r"callbacks.picky was refused by _PickyState"):
        fit_run(make_run()[0], optim, resume=path, callbacks=[_PickyState()])
    with pytest.raises(nnx.InputValueError, match=r"outside a run would be replaced"):
        optim.lr = 0.5


def test_a_training_checkpoint_loads_with_the_extra_it_was_given_alone(tmp_path):
    """checkpoint_extra of a training checkpoint held the optimiser's moments,
    the best parameters and EarlyStopping's copy of them too (each the size
    of the network), where the docs promise what save was given."""
    path = tmp_path / "run.npz"
    mean = np.arange(4.0)
    fit_run(make_run()[0], nnx.Adam(0.01), callbacks=[
        nnx.Checkpoint(path, extra={"x_mean": mean}), nnx.EarlyStopping(3)])
    back = nnx.NeuralNetwork.load(path)
    assert sorted(back.checkpoint_extra) == ["x_mean"]
    np.testing.assert_array_equal(back.checkpoint_extra["x_mean"], mean)
    resumed = fit_run(make_run()[0], nnx.Adam(0.01), resume=path, callbacks=[
        nnx.Checkpoint(path, extra={"x_mean": mean}), nnx.EarlyStopping(3)])
    assert resumed.epochs_run >= 1  # resume still finds every array it needs


def test_a_second_early_stopping_state_is_checked_as_the_first_is(tmp_path):
    """The resume checks named only 'early_stopping': a bad state of the
    second one ('early_stopping#2') failed mid-training with a raw TypeError."""
    from nnx import checkpoint as ck
    path = tmp_path / "run.npz"

    def callbacks():
        return [nnx.EarlyStopping(3), nnx.EarlyStopping(None, monitor="accuracy")]
    with pytest.raises(KeyboardInterrupt):
        fit_run(*make_run(), callbacks=callbacks() + [_StopAt(3)], checkpoint=path)
    header, arrays = ck.read(path)
    header["training"]["callbacks"]["early_stopping#2"]["bad_evals"] = "x"
    ck.write(path, header, arrays)
    with pytest.raises(CheckpointError, match=r"callbacks\.early_stopping#2\.bad_evals"):
        fit_run(*make_run(), callbacks=callbacks(), resume=path)


def test_a_callback_without_state_in_the_checkpoint_warns_that_it_starts_afresh(tmp_path):
    """A checkpoint written before same-key callbacks were told apart holds
    one state for the key: the second callback started afresh, silently."""
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit_run(*make_run(), callbacks=[_Counter(1), _StopAt(3)], checkpoint=path)
    counters = [_Counter(1), _Counter(2)]
    with pytest.warns(Warning, match=r"holds no state for _Counter \(state_key 'counter#2'\), "
                                     "which starts afresh"):
        fit_run(*make_run(), callbacks=counters, resume=path)
    assert counters[0].n > counters[1].n


def test_a_second_early_stopping_given_other_settings_is_refused_on_resume(tmp_path):
    """Only the first early stopping's settings were compared: a second one
    tracking the accuracy resumed as one tracking the loss, its best value
    (an accuracy) read as a loss, and the run stopped at another epoch."""
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit_run(*make_run(), callbacks=[nnx.EarlyStopping(3),
                                        nnx.EarlyStopping(3, monitor="accuracy"), _StopAt(3)],
                checkpoint=path)
    with pytest.raises(CheckpointError, match=r"callbacks\.early_stopping#2 was refused by "
                                              r"EarlyStopping .*'monitor': 'accuracy'.*resume "
                                              "with the early stopping the run was saved with"):
        fit_run(*make_run(), callbacks=[nnx.EarlyStopping(3),
                                        nnx.EarlyStopping(3, min_delta=0.5)], resume=path)
