"""Checkpoints: round trip, portability across backends, no pickle, atomic
and durable writes, what save refuses, and clear errors for damaged, foreign
and missing files."""

import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import N_IN, N_OUT, N_ROWS, good_data, make_net

import nnx
from nnx import SGD, Dense, NeuralNetwork, Trainer, checkpoint
from nnx.checkpoint import CheckpointError
from nnx.checkpoint import write as write_checkpoint


def _trained(backend="cpu", dtype="float32"):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((120, 6)), rng.integers(0, 3, 120)
    net = nnx.NeuralNetwork([nnx.Dense(9, nnx.LeakyReLU(0.1), dropout=0.9),
                             nnx.Dense(7, "relu6", weight_init="he"),
                             nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(eps=1e-7), seed=5, backend=backend,
                            dtype=dtype)
    nnx.Trainer(net, nnx.SGDMomentum(0.05)).fit(X, y, epochs=3, eval_every=1, batch_size=16)
    return net, X


def _rewrite(path, change):
    """Rewrite one member of the archive, leaving the others as they were."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_identical_predictions(tmp_path, dtype):
    net, X = _trained(dtype=dtype)
    path = net.save(tmp_path / "m.npz")
    back = nnx.NeuralNetwork.load(path)
    assert back.backend.dtype_name == dtype
    for p, q in zip(net.params(), back.params()):
        assert np.array_equal(p, q)
    assert np.array_equal(net.predict(X), back.predict(X))
    assert back.describe() == net.describe()
    assert isinstance(back.layers[0].activation, nnx.LeakyReLU)
    assert back.layers[0].activation.alpha == 0.1 and back.layers[0].dropout == 0.9
    assert back.loss.eps == 1e-7


def test_loads_on_another_backend_and_predicts_the_same(tmp_path, backend_name):
    net, X = _trained()
    path = net.save(tmp_path / "m.npz")
    other = nnx.NeuralNetwork.load(path, backend=backend_name)
    assert other.backend.name == backend_name
    np.testing.assert_array_equal(nnx.predict_classes(other, X), nnx.predict_classes(net, X))


def _same_shape_net(dtype="float32", dropout=1.0, first=9, act=None):
    return nnx.NeuralNetwork([nnx.Dense(first, act or nnx.LeakyReLU(0.1), dropout=dropout),
                              nnx.Dense(7, "relu6"), nnx.Dense(3, "linear")],
                             nnx.SoftmaxCrossEntropy(eps=1e-7), seed=99, dtype=dtype)


@pytest.mark.parametrize("built", [False, True])
def test_load_called_on_a_network_loads_into_it(tmp_path, built):
    """net.load(path) (Keras's load_weights, PyTorch's load_state_dict habit)
    returned a new network and left net as it was, silently."""
    net, X = _trained()
    path = net.save(tmp_path / "m.npz", meta={"data": "x"})
    mine = _same_shape_net(dtype="float64", dropout=0.5)  # dropout may differ
    if built:
        mine.build(6)
    assert mine.load(path) is mine
    assert mine.backend.dtype_name == "float64"  # its own dtype kept
    for p, q in zip(net.params(), mine.params()):
        np.testing.assert_array_equal(p.astype(np.float64), q)
    np.testing.assert_allclose(mine.predict(X), net.predict(X), rtol=1e-5, atol=1e-6)
    assert mine.checkpoint_meta == {"data": "x"} and mine.layers[0].dropout == 0.5


def test_load_called_on_another_network_refuses_naming_the_differences(tmp_path):
    net, _ = _trained()
    path = net.save(tmp_path / "m.npz")
    other = _same_shape_net(first=8, act="tanh")
    before = [p.copy() for p in (other.build(5) or other.params())]
    with pytest.raises(nnx.InputValueError, match=r"net\.load\('.*m\.npz'\): the checkpoint "
                       r"holds another network: layer 1's neurons 9 in the checkpoint but 8 "
                       r"in this network, activation .*'tanh' in this network.*; 6 inputs in "
                       r"the checkpoint but 5 in this network; to get the saved network "
                       r"itself, net = nnx\.NeuralNetwork\.load\(path\)"):
        other.load(path)
    assert all(np.array_equal(p, q) for p, q in zip(before, other.params()))
    assert type(nnx.NeuralNetwork.load(path)) is nnx.NeuralNetwork  # the class call as before


def test_extra_arrays_travel(tmp_path):
    net, _ = _trained()
    path = net.save(tmp_path / "m.npz", extra={"x_mean": np.arange(6.0)})
    assert np.array_equal(nnx.NeuralNetwork.load(path).checkpoint_extra["x_mean"], np.arange(6.0))


def test_no_pickle_inside(tmp_path):
    net, _ = _trained()
    path = net.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:  # would raise on object arrays
        assert all(z[k].dtype != object for k in z.files)


def test_version_1_files_still_load(tmp_path):
    # version 1 checksummed the arrays only
    net, X = _trained()
    path = str(net.save(tmp_path / "m.npz"))
    with np.load(path) as z:
        arrays = dict(z)
    header = json.loads(arrays.pop("__header__").tobytes())
    header["format_version"] = 1
    header["sha256"] = checkpoint._digest(arrays)
    blob = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, __header__=blob, **arrays)
    assert np.array_equal(nnx.NeuralNetwork.load(path).predict(X), net.predict(X))


def test_a_leaky_relu_with_alpha_zero_comes_back_with_alpha_zero(tmp_path):
    """`if d.get("alpha")` would read alpha 0 as missing and load 0.01."""
    net = nnx.NeuralNetwork([nnx.Dense(4, nnx.LeakyReLU(0.0)), nnx.Dense(2, "linear")],
                            "softmax_cross_entropy", seed=1)
    X = np.random.default_rng(0).standard_normal((8, 3))
    net.build(3)
    loaded = nnx.NeuralNetwork.load(net.save(tmp_path / "m.npz"))
    assert loaded.layers[0].activation.alpha == 0.0
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))


@pytest.mark.parametrize("backend", ["cpu", "strict"])
def test_gelu_silu_and_elu_settings_survive_a_round_trip(tmp_path, backend):
    """GELU's approximate and ELU's alpha are saved by name and come back;
    a GELU saved with the tanh form does not reload as the exact one."""
    layers = [nnx.Dense(6, nnx.GELU("tanh")), nnx.Dense(5, nnx.ELU(0.25)), nnx.Dense(5, "silu"),
              nnx.Dense(4, "gelu"), nnx.Dense(3, "elu")]
    net = nnx.NeuralNetwork(layers, "softmax_cross_entropy", seed=2, backend=backend,
                            dtype="float64")
    net.build(3)
    desc = net.describe()["layers"]
    assert [d["activation"] for d in desc] == ["gelu", "elu", "silu", "gelu", "elu"]
    assert desc[0]["approximate"] == "tanh" and desc[3]["approximate"] == "none"
    assert desc[1]["alpha"] == 0.25 and desc[4]["alpha"] == 1.0
    back = nnx.NeuralNetwork.load(net.save(tmp_path / "m.npz"), backend=backend)
    assert back.describe() == net.describe()
    acts = [layer.activation for layer in back.layers]
    assert [type(a) for a in acts] == [nnx.GELU, nnx.ELU, nnx.SiLU, nnx.GELU, nnx.ELU]
    assert acts[0].approximate == "tanh" and acts[1].alpha == 0.25
    X = np.random.default_rng(0).standard_normal((8, 3))
    np.testing.assert_array_equal(back.backend.to_numpy(back.predict(X)),
                                  net.backend.to_numpy(net.predict(X)))


def test_an_empty_training_state_is_still_saved(tmp_path):
    """`if training:` would drop a training state that is an empty dict."""
    net, _ = _trained()
    header, _ = checkpoint.read(net.save(tmp_path / "m.npz", training={}))
    assert header["training"] == {}


def test_fit_warns_before_redrawing_the_weights_of_a_loaded_network(tmp_path, recwarn):
    """fit()'s default restart=True silently threw a loaded network's weights
    away, so fine-tuning a loaded model started from scratch unnoticed."""
    import warnings
    net, X = _trained()
    y = nnx.predict_classes(net, X)
    path = net.save(tmp_path / "m.npz")
    loaded = nnx.NeuralNetwork.load(path)
    nnx.Trainer(loaded, nnx.SGD(1e-9)).fit(X, y, epochs=1, restart=False)
    assert not recwarn.list  # going on from the loaded weights: nothing to say
    np.testing.assert_allclose(loaded.predict(X), net.predict(X), rtol=1e-5, atol=1e-6)
    with pytest.warns(nnx.InputWarning, match=r"replacing the weights it was trained to "
                                              r".*pass restart=False"):
        nnx.Trainer(loaded, nnx.SGD(0.1)).fit(X, y, epochs=1)
    again = nnx.NeuralNetwork.load(path)
    with pytest.warns(nnx.InputWarning, match=r"replacing the weights loaded from .*m\.npz"):
        nnx.Trainer(again, nnx.SGD(0.1)).fit(X, y, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said outright: nothing to warn of
        nnx.Trainer(loaded, nnx.SGD(0.1)).fit(X, y, epochs=1, restart=True)
        nnx.Trainer(nnx.NeuralNetwork.load(path), nnx.SGD(0.1)).fit(X, y, epochs=1,
                                                                    restart=True)


def test_a_second_fit_that_restarts_a_trained_network_says_so():
    """A Keras or PyTorch user's second fit() goes on training; here it drew
    new weights (the study's default, restart=True) and gave the same figures
    again, silently."""
    import warnings
    net, X = _trained()
    y = nnx.predict_classes(net, X)
    with pytest.warns(nnx.InputWarning, match=r"fit\(\) draws new weights, replacing the "
                                              "weights it was trained to"):
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1, restart=False)
        fresh = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(int(y.max()) + 1, "linear")],
                                  nnx.SoftmaxCrossEntropy(), seed=0)
        nnx.Trainer(fresh, nnx.SGD(0.1)).fit(X, y, epochs=1)  # its first fit: nothing to say
        net.reset()  # weights drawn afresh by hand: nothing trained to replace
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1)


# ---------------------------------------------------------- what save refuses
def test_unbuilt_network_cannot_be_saved(tmp_path):
    net = nnx.NeuralNetwork([nnx.Dense(2)], nnx.MeanSquaredError())
    with pytest.raises(RuntimeError, match="no parameters yet"):
        net.save(tmp_path / "m.npz")


def test_meta_must_be_a_dict(tmp_path):
    net = _trained()[0]
    with pytest.raises(TypeError, match="meta must be a dict"):
        net.save(tmp_path / "m.npz", meta="digits")
    # a traceback 12 frames deep in the json module, and no InputError
    with pytest.raises(nnx.InputError, match=r"meta must hold plain data.*meta\[.k.\] is "
                                             r"object, which JSON cannot write"):
        net.save(tmp_path / "m.npz", meta={"k": object()})
    assert not (tmp_path / "m.npz").exists()
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.parametrize("call", ["save", "load", "resume"])
def test_a_checkpoint_path_that_is_not_a_path_is_refused_by_name(trained, call):
    """save(123), load(None) and fit(resume=123) raised os.fspath's bare TypeError
    (and fit's refusal did not name resume=)."""
    net, trainer, X, y = trained
    match = ("resume=123: expected the path of a training checkpoint" if call == "resume"
             else "a checkpoint path must be a str, bytes or os.PathLike, got int 123")
    with pytest.raises(nnx.InputTypeError, match=match):
        if call == "save":
            net.save(123)
        elif call == "load":
            NeuralNetwork.load(123)
        else:
            trainer.fit(X, y, epochs=1, resume=123)


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


# ------------- writing: atomic, durable, with the permissions of any new file
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    net, X = _trained()
    path = str(net.save(tmp_path / "m.npz"))
    before = open(path, "rb").read()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind


def test_a_checkpoint_gets_the_permissions_of_any_new_file(tmp_path):
    """mkstemp made every checkpoint private (0600) whatever the umask."""
    net = _trained()[0]
    old = os.umask(0o022)
    try:
        path = net.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_saving_over_a_file_keeps_its_permissions(tmp_path):
    net = _trained()[0]
    path = net.save(tmp_path / "m.npz")
    os.chmod(path, 0o600)
    net.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_writing_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    """Only the file was fsynced, not its folder: after a power cut the rename,
    and with it the new checkpoint, could be lost."""
    path, synced, real = tmp_path / "m.npz", [], os.fsync

    def fsync(fd):  # which descriptor: the folder? and is the checkpoint in place yet?
        synced.append((os.path.samestat(os.fstat(fd), os.stat(tmp_path)), path.exists()))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    checkpoint.write(path, {"note": "x"}, {"params": np.zeros(3)})
    assert synced == [(False, False), (True, True)]


def test_checking_the_permissions_never_changes_the_process_umask(monkeypatch, tmp_path):
    """The mode was found by os.umask(0) then os.umask(mask): for a moment
    every thread's new files were created world-writable."""
    calls = []
    net = _trained()[0]
    monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or 0o022)
    net.save(tmp_path / "m.npz")
    assert calls == []


def test_bytes_paths_work_and_a_dangling_link_is_written_through(tmp_path):
    """path_problem accepted a bytes path that write() then failed on, after
    training; a dangling link, which write() follows, was refused."""
    net = _trained()[0]
    path = os.fsencode(tmp_path / "b.npz")
    assert checkpoint.path_problem(path) is None
    net.save(path)
    assert nnx.NeuralNetwork.load(path).n_in == net.n_in
    link = tmp_path / "dangle.npz"
    link.symlink_to(tmp_path / "target.npz")
    assert checkpoint.path_problem(link) is None
    net.save(link)
    assert link.is_symlink() and (tmp_path / "target.npz").is_file()


def test_saving_through_a_symbolic_link_updates_its_target(tmp_path):
    """The rename replaced the link itself with a file."""
    net = _trained()[0]
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "m.npz"
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    assert net.save(link) == str(link)
    assert link.is_symlink() and target.is_file()
    np.testing.assert_array_equal(nnx.NeuralNetwork.load(link).get_parameters(),
                                  net.get_parameters())


# ----------------------------------------- damaged, foreign and missing files
def test_truncated_file_is_named(tmp_path):
    net, _ = _trained()
    path = str(net.save(tmp_path / "m.npz"))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"m\.npz.*truncated"):
        nnx.NeuralNetwork.load(path)


def test_altered_parameters_fail_the_checksum(tmp_path):
    net, _ = _trained()
    path = str(net.save(tmp_path / "m.npz"))

    def flip(members):
        b = bytearray(members["params.npy"])
        b[-1] ^= 0x40
        members["params.npy"] = bytes(b)
    _rewrite(path, flip)
    with pytest.raises(CheckpointError, match=r"m\.npz.*checksum"):
        nnx.NeuralNetwork.load(path)


@pytest.mark.parametrize("retype", ["dtype", "shape"])
def test_the_same_bytes_under_another_dtype_or_shape_fail_the_checksum(tmp_path, retype):
    """Each array's dtype and shape are part of the checksum: the parameter
    bytes re-labelled as int32, or as a 2-D array, must not load."""
    net, _ = _trained()
    path = str(net.save(tmp_path / "m.npz"))

    def relabel(members):
        params = np.load(io.BytesIO(members["params.npy"]))
        other = params.view(np.int32) if retype == "dtype" else params.reshape(1, -1)
        buf = io.BytesIO()
        np.save(buf, other)
        members["params.npy"] = buf.getvalue()
    _rewrite(path, relabel)
    with pytest.raises(CheckpointError, match=r"m\.npz.*checksum"):
        nnx.NeuralNetwork.load(path)


def test_every_flipped_bit_loads_the_same_or_raises_checkpoint_error(tmp_path):
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], nnx.MeanSquaredError(), seed=0)
    net.build(3)
    path = str(net.save(tmp_path / "m.npz"))
    header, arrays = checkpoint.read(path)
    src = open(path, "rb").read()
    damaged = str(tmp_path / "d.npz")
    loaded = 0
    # bit 0 and bit 5 of each byte: in the zip directory these mark a member as
    # encrypted, or as compressed in a way zipfile cannot read
    for mask in (0x01, 0x20):
        for i in range(len(src)):
            b = bytearray(src)
            b[i] ^= mask
            open(damaged, "wb").write(b)
            try:
                h, a = checkpoint.read(damaged)
            except CheckpointError as exc:
                assert "d.npz" in str(exc)
                continue
            assert h == header and a.keys() == arrays.keys(), f"byte {i} mask {mask:#x}"
            assert all(np.array_equal(a[k], arrays[k]) for k in a), f"byte {i} mask {mask:#x}"
            loaded += 1
    assert loaded < len(src)  # most damage is caught


def test_altered_header_fails_the_checksum(tmp_path):
    net, X = _trained()
    path = str(net.save(tmp_path / "m.npz"))
    with np.load(path) as z:
        arrays = dict(z)
    header = json.loads(arrays["__header__"].tobytes())
    header["network"]["layers"][1]["activation"] = "tanh"
    arrays["__header__"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=r"m\.npz.*checksum"):
        nnx.NeuralNetwork.load(path)


def test_wrong_format_version_is_named(tmp_path):
    net, _ = _trained()
    path = str(net.save(tmp_path / "m.npz"))
    with np.load(path) as z:
        header = json.loads(z["__header__"].tobytes())
        params = z["params"]
    header["format_version"] = 99
    blob = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, __header__=blob, params=params)
    with pytest.raises(CheckpointError, match="format version 99"):
        nnx.NeuralNetwork.load(path)


@pytest.mark.parametrize("change, message", [
    (lambda h: dict(h, format_version=True), "format version True"),
    (lambda h: [h], "not an nnx checkpoint|checkpoint"),
])
def test_a_header_of_the_wrong_kind_is_refused(tmp_path, change, message):
    """format_version true (a bool is an int in Python) was read as version 1,
    and a JSON header that is not an object failed with AttributeError."""
    net, _ = _trained()
    path = str(net.save(tmp_path / "m.npz"))

    def rewrite(members):
        header = json.loads(np.load(io.BytesIO(members["__header__.npy"])).tobytes())
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(json.dumps(change(header)).encode(), dtype=np.uint8))
        members["__header__.npy"] = buf.getvalue()
    _rewrite(path, rewrite)
    with pytest.raises(CheckpointError, match=message):
        nnx.NeuralNetwork.load(path)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(approximate="erf"), "GELU approximate='erf'"),
    (lambda d: d.update(activation="elu", alpha=-1.0), "ELU alpha=-1.0"),
    (lambda d: d.update(activation="swish"), "activation='swish'"),
])
def test_a_bad_activation_setting_in_a_checkpoint_is_named(tmp_path, change, message):
    """Written with a valid checksum: the description itself is refused."""
    net = nnx.NeuralNetwork([nnx.Dense(4, "gelu"), nnx.Dense(2, "linear")],
                            "softmax_cross_entropy", seed=1)
    net.build(3)
    header, arrays = checkpoint.read(net.save(tmp_path / "m.npz"))
    change(header["network"]["layers"][0])
    path = checkpoint.write(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        nnx.NeuralNetwork.load(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        nnx.NeuralNetwork.load(tmp_path / "nope.npz")
    foreign = tmp_path / "f.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="no nnx header"):
        nnx.NeuralNetwork.load(foreign)


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


# ------------------------------------------------------- load's own arguments
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


def test_load_gives_back_the_extra_arrays_by_name(tmp_path):
    net = nnx.NeuralNetwork([nnx.Dense(7, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    net.build(5)
    mean, std = np.arange(5.0), np.ones(5)
    net.save(tmp_path / "m.npz", extra={"x_mean": mean, "x_std": std}, meta={"note": "hi"})
    back = nnx.NeuralNetwork.load(tmp_path / "m.npz")
    assert sorted(back.checkpoint_extra) == ["x_mean", "x_std"]  # not the parameters
    np.testing.assert_array_equal(back.checkpoint_extra["x_mean"], mean)
    assert back.checkpoint_meta == {"note": "hi"}



# ----------------------------------------------- only finite parameters travel
def test_save_refuses_parameters_that_are_not_finite(tmp_path):
    """A network whose last update overflowed was saved as it was, over the
    last good file, and load() then predicted NaN."""
    net, _ = _trained()
    path = net.save(tmp_path / "m.npz")
    before = Path(path).read_bytes()
    bad = net.get_parameters()
    bad[[0, 3]] = [np.nan, np.inf]
    net.set_parameters(bad)
    with pytest.raises(nnx.InputValueError, match=r"cannot save checkpoint .*m\.npz.*2 of the "
                                                  r"network's \d+ parameters are NaN or inf"):
        net.save(path)
    assert Path(path).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_load_refuses_a_checkpoint_of_parameters_that_are_not_finite(tmp_path):
    """Written with a valid checksum (as an older nnx did): load() gave a
    network that predicts NaN."""
    net, _ = _trained()
    header, arrays = checkpoint.read(net.save(tmp_path / "m.npz"))
    arrays["params"][5] = np.inf
    path = checkpoint.write(tmp_path / "inf.npz", header, arrays)
    with pytest.raises(CheckpointError, match=r"inf\.npz' holds 1 NaN or infinite parameters"):
        nnx.NeuralNetwork.load(path)


# ------------------------ reading: bounded by the file, never by its claims
def _stored(name, array):
    buf = io.BytesIO()
    np.save(buf, array)
    return name, buf.getvalue()


def _zip_by_hand(path, members):
    """A zip archive of ``(name, data, method, declared size)`` members, with
    whatever sizes they declare (zipfile writes only true ones). A stored
    member's CRC is its data's; a deflated one's is left 0."""
    import struct
    import zlib
    out, directory = bytearray(), bytearray()
    for name, data, method, size in members:
        offset, raw = len(out), name.encode()
        crc = zlib.crc32(data) if method == zipfile.ZIP_STORED else 0
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data),
                           size, len(raw), 0) + raw + data
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0,
                                 crc, len(data), size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                      len(directory), len(out), 0)
    Path(path).write_bytes(bytes(out + directory + end))


def _inflating(path, gigabytes=2.8):
    """A 3 MB checkpoint whose params member inflates to ``gigabytes`` of
    zeros: a header of a small network, and a deflated .npy of float32 zeros.
    Deflating 3 GB would take seconds: the stream is one block of 16 MiB of
    zeros repeated (a full flush makes each block stand alone)."""
    import zlib
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    net.build(3)
    header, _ = checkpoint.read(net.save(path))
    chunk = 2**24
    count = int(gigabytes * 2**30) // chunk
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        npy, {"descr": "<f4", "fortran_order": False, "shape": (count * chunk // 4,)})
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(npy.getvalue()) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(bytes(chunk)) + deflate.flush(zlib.Z_FULL_FLUSH)
    stream = first + block * count + deflate.flush()
    name, head = _stored("__header__.npy", np.frombuffer(json.dumps(header).encode(), np.uint8))
    _zip_by_hand(path, [(name, head, zipfile.ZIP_STORED, len(head)),
                        ("params.npy", stream, zipfile.ZIP_DEFLATED,
                         len(npy.getvalue()) + count * chunk)])


def _wide(path):
    """A 2 KB checkpoint, re-hashed, whose header declares a 20,000,000-wide
    input for its 8 parameters."""
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    net.build(3)
    header, arrays = checkpoint.read(net.save(path))
    header["network"]["n_in"] = 20_000_000
    checkpoint.write(path, header, arrays)


def _huge_link(path):
    """A symbolic link to a 6 GB file (sparse: it takes no disk)."""
    target = Path(path).with_name("huge.bin")
    with open(target, "wb") as f:
        f.truncate(6 * 2**30)
    Path(path).symlink_to(target)


# The peak is read from VmHWM, which starts afresh with the new program;
# ru_maxrss would not do: Linux carries it over from the parent across exec.
# The address space is capped at 2 GiB, so that a reader that does allocate
# what the file declares fails fast instead of taking the machine's memory.
LOAD_AND_MEASURE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
import nnx
from nnx.checkpoint import CheckpointError
def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
try:
    nnx.NeuralNetwork.load(sys.argv[1])
except CheckpointError as exc:
    print(exc)
else:
    sys.exit("it loaded")
print(peak())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
@pytest.mark.parametrize("build, ceiling, message", [
    (_inflating, None, "its member 'params.npy' is compressed"),
    (_wide, None, "its header describes a network of 40,000,002 parameters"),
    (_huge_link, None, "is 6,442,450,944 bytes, more than the 4,294,967,296 nnx reads"),
    (_huge_link, 8 * 2**30, "not an nnx checkpoint: it is not a .npz archive"),
], ids=["inflates-to-3-GB", "declares-a-20M-wide-input", "links-to-6-GB",
        "links-to-6-GB-under-a-raised-ceiling"])
def test_a_malformed_checkpoint_is_refused_within_200_mb(tmp_path, build, ceiling, message):
    """Reading trusted what the file declared: a 3 MB file that inflates to
    3 GB took 5.9 GB before its checksum failed; a re-hashed header declaring
    a 2e7-wide input built that network (3.8 GB) before finding the
    parameters too few; a link to a 6 GB file was read whole before its first
    bytes were looked at."""
    path = tmp_path / "model.npz"
    build(path)
    assert path.stat().st_size < 4 * 2**20 or build is _huge_link
    root = str(Path(nnx.__file__).resolve().parent.parent)  # this checkout's nnx
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NNX_CHECKPOINT_MAX_BYTES", None)
    if ceiling:
        env["NNX_CHECKPOINT_MAX_BYTES"] = str(ceiling)
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", LOAD_AND_MEASURE, str(path)], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    refusal, peak = r.stdout.strip().rsplit("\n", 1)
    assert int(peak) < 200 * 2**20, f"the refused read peaked at {int(peak) / 2**20:.0f} MiB"
    assert "model.npz" in refusal and message in refusal, refusal


def test_a_compressed_archive_is_refused_before_inflating(tmp_path):
    """nnx writes its arrays uncompressed: a compressed member is not nnx's,
    and inflating it is where a small file could become a large one."""
    net, _ = _trained()
    header, arrays = checkpoint.read(net.save(tmp_path / "m.npz"))
    blob = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez_compressed(tmp_path / "c.npz", __header__=blob, **arrays)
    with pytest.raises(CheckpointError, match=r"c\.npz.*its member '__header__\.npy' is "
                                              "compressed"):
        nnx.NeuralNetwork.load(tmp_path / "c.npz")


def test_a_member_larger_than_the_file_is_refused(tmp_path):
    """A stored member cannot hold more than the whole file; its declared size
    is refused before anything is allocated for it."""
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    net.build(3)
    header, arrays = checkpoint.read(net.save(tmp_path / "m.npz"))
    blob = np.frombuffer(json.dumps(header).encode(), np.uint8)
    name, params = _stored("params.npy", arrays["params"])
    head_name, head = _stored("__header__.npy", blob)
    _zip_by_hand(tmp_path / "big.npz", [(head_name, head, 0, len(head)),
                                        (name, params, 0, 3 * 2**30)])
    with pytest.raises(CheckpointError, match=r"its member 'params\.npy' declares "
                                              r"3,221,225,472 bytes, more than the whole file's"):
        checkpoint.read(tmp_path / "big.npz")


def test_an_array_larger_than_its_member_is_refused(tmp_path):
    """A .npy header declaring more data than its member holds (a re-hashed
    file's shape) is caught from the header, not by allocating the shape."""
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    net.build(3)
    path = str(net.save(tmp_path / "m.npz"))

    def claim_more(members):
        data = bytearray(members["params.npy"])
        at = data.index(b"(8,)")
        data[at:at + 4] = b"(9,)"
        members["params.npy"] = bytes(data)
    _rewrite(path, claim_more)
    with pytest.raises(CheckpointError, match=r"truncated or damaged: its array 'params' "
                                              r"declares shape \(9,\) of float32 \(36 bytes\) "
                                              "but holds 32 bytes"):
        checkpoint.read(path)


def test_the_size_ceiling_is_checked_first_and_can_be_raised(tmp_path, monkeypatch):
    net, X = _trained()
    path = net.save(tmp_path / "m.npz")
    size = os.path.getsize(path)
    monkeypatch.setenv("NNX_CHECKPOINT_MAX_BYTES", str(size - 1))
    with pytest.raises(CheckpointError, match=rf"m\.npz' is {size:,} bytes, more than the "
                                              rf"{size - 1:,} nnx reads \(set "
                                              r"\$NNX_CHECKPOINT_MAX_BYTES"):
        nnx.NeuralNetwork.load(path)
    monkeypatch.setenv("NNX_CHECKPOINT_MAX_BYTES", str(size))
    np.testing.assert_array_equal(nnx.NeuralNetwork.load(path).predict(X), net.predict(X))
    monkeypatch.setenv("NNX_CHECKPOINT_MAX_BYTES", "lots")
    with pytest.raises(nnx.InputValueError, match=r"\$NNX_CHECKPOINT_MAX_BYTES='lots' must be "
                                                  "a positive whole number"):
        nnx.NeuralNetwork.load(path)
    monkeypatch.delenv("NNX_CHECKPOINT_MAX_BYTES")
    monkeypatch.setattr(checkpoint, "MAX_BYTES", 100)
    with pytest.raises(CheckpointError, match="more than the 100 nnx reads"):
        nnx.NeuralNetwork.load(path)


def test_running_out_of_memory_while_reading_is_a_checkpoint_error(tmp_path, monkeypatch):
    """MemoryError passed through read() untouched, and `nnx evaluate` ended
    in a traceback."""
    net = NeuralNetwork([Dense(10, "linear")], "softmax_cross_entropy", seed=0)
    net.build(64)
    path = str(net.save(tmp_path / "m.npz"))

    def no_memory(self, *args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(zipfile.ZipFile, "open", no_memory)
    with pytest.raises(CheckpointError, match=r"m\.npz' could not be read: not enough free "
                                              "memory"):
        checkpoint.read(path)
    from nnx import cli
    assert cli.main(["evaluate", path]) == 2


def test_read_header_reads_no_array(tmp_path, monkeypatch):
    net, _ = _trained()
    path = net.save(tmp_path / "m.npz", training={"run_id": "abc"})
    read_arrays = []
    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array",
                        lambda f, **kw: read_arrays.append(f.name) or real(f, **kw))
    assert checkpoint.read_header(path)["training"] == {"run_id": "abc"}
    assert read_arrays == ["__header__.npy"]


def test_save_refuses_python_objects_in_extra_before_writing(tmp_path):
    """np.savez pickled them, and load() (which never unpickles) then refused
    the file: the model was saved but could not be read back."""
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    net.build(3)
    path = tmp_path / "m.npz"
    with pytest.raises(TypeError, match=r"extra\['notes'\] holds Python objects"):
        net.save(path, extra={"notes": np.array([{"lr": 0.1}], dtype=object)})
    assert not path.exists()
    net.save(path, extra={"names": np.array(["a", "b"])})  # strings are fine
    assert list(nnx.NeuralNetwork.load(path).checkpoint_extra["names"]) == ["a", "b"]


def test_the_submodules_the_docs_name_are_reachable_after_import_nnx():
    """checkpoints.md calls nnx.checkpoint.read_header after `import nnx`:
    AttributeError, module 'nnx' has no attribute 'checkpoint'."""
    import subprocess
    import sys
    code = ("import nnx, sys; assert 'nnx.onnx' not in sys.modules; "
            "assert {'checkpoint', 'study', 'Trainer'} <= set(dir(nnx)); "
            "print(nnx.checkpoint.MAX_BYTES > 0, callable(nnx.data.load_dataset), "
            "callable(nnx.onnx.export_network), nnx.sklearn.MLPClassifier.__name__, "
            "callable(nnx.cluster.connect), callable(nnx.tables.load_file), "
            "len(nnx.study.LADDER), 'report' not in dir(nnx), 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    # (not nnx.report, which needs matplotlib, an extra: help(nnx) would import it)
    assert out.split() == ["True", "True", "True", "MLPClassifier", "True", "True", "8",
                           "True", "False"]
