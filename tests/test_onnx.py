"""ONNX export: every activation, output transform and dtype run in
onnxruntime and match nnx's own predictions; dropout leaves the graph; the
models are valid; the refusals name the problem."""

import os
import sys
import warnings

import numpy as np
import pytest

import nnx
from nnx import onnx as nnx_onnx
from nnx.ops import ACTIVATIONS, Operation, make_activation

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = {"float32": 1e-5, "float64": 1e-12}
# every built-in activation with its default setting, and the other settings
ACTS = [(name, None) for name in ACTIVATIONS] + [("leaky_relu", 0.2), ("gelu", "tanh"),
                                                 ("elu", 0.5)]


def _run(path, X, input_name="X"):
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: X})[0]


def _net(act, dtype, classification=False, dropout=1.0):
    """A built 6 -> 7 -> 5 -> 3 network with ``act`` in every layer (the last
    is linear under a softmax cross-entropy loss)."""
    last = "linear" if classification else make_activation(*act)
    net = nnx.NeuralNetwork([nnx.Dense(7, make_activation(*act), dropout=dropout),
                             nnx.Dense(5, make_activation(*act)), nnx.Dense(3, last)],
                            "softmax_cross_entropy" if classification else "mse",
                            seed=3, dtype=dtype)
    net.build(6)
    return net


def _inputs(dtype, rows=40, width=6, scale=2.0):
    return np.random.default_rng(1).normal(0.0, scale, (rows, width)).astype(dtype)


def _expected(net, X, output):
    if output == "softmax":
        return net.predict_proba(X)
    raw = net.predict(X)
    return {"raw": raw, "sigmoid": nnx.Sigmoid().forward(raw, inference=True),
            "exp": np.exp(raw)}[output]


def _close(got, want, dtype):
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


# -------------------------------------------------- onnxruntime matches nnx
def test_every_activation_of_nnx_can_be_exported():
    assert set(nnx_onnx._EMITTERS) == set(ACTIVATIONS)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output", [o for o in nnx_onnx.OUTPUTS if o != "binary"])
@pytest.mark.parametrize("act", ACTS, ids=[f"{n}-{s}" if s is not None else n for n, s in ACTS])
def test_onnxruntime_matches_the_network(act, output, dtype, tmp_path):
    if act[0] == output == "sigmoid":
        pytest.skip("a sigmoid output over a sigmoid layer is refused (a test below)")
    net = _net(act, dtype, classification=output == "softmax")
    X = _inputs(dtype)
    path = nnx_onnx.export_network(net, tmp_path / "m.onnx", output=output)
    _close(_run(path, X), _expected(net, X, output), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layers_with_different_activations(dtype, tmp_path):
    net = nnx.NeuralNetwork([nnx.Dense(8, nnx.LeakyReLU(0.3)), nnx.Dense(6, nnx.GELU("tanh")),
                             nnx.Dense(5, nnx.ELU(0.4)), nnx.Dense(4, "silu"),
                             nnx.Dense(3, "relu6")], "mse", seed=0, dtype=dtype)
    net.build(5)
    X = _inputs(dtype, width=5, scale=3.0)
    _close(_run(net.to_onnx(tmp_path / "m.onnx"), X), net.predict(X), dtype)


@pytest.mark.parametrize("act", [nnx.GELU(), nnx.GELU("tanh"), nnx.ELU(0.7), nnx.SiLU(),
                                 nnx.LeakyReLU(0.3), nnx.Sigmoid()],
                         ids=lambda a: f"{a.name}-{nnx.ops.activation_setting(a)}")
def test_float64_activations_hold_their_precision_over_the_whole_line(act, tmp_path):
    """float64 Erf and ELU are written out in elementary operators (onnxruntime
    has no float64 kernel for them): every interval of Cody's erf, the tails,
    and ELU near 0, where exp(x) - 1 would lose its relative precision."""
    x = np.concatenate([np.linspace(-60, 60, 4801), [0.0, 1e-12, -1e-12, -1e-300, 0.46875,
                                                     -0.46875, 4.0, -4.0, 6.0, -1e10, 1e10,
                                                     -800.0]])[:, None]
    path = nnx_onnx.export_layers([np.eye(1)], [np.zeros(1)], [act], "raw",
                                  tmp_path / "a.onnx", "float64")
    want = type(act)(**({act.setting: getattr(act, act.setting)}
                        if getattr(act, "setting", None) else {})).forward(x, inference=True)
    got = _run(path, x)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    if isinstance(act, nnx.ELU):  # near 0 too, relative to the value
        tiny = np.abs(x[:, 0]) < 1e-6
        np.testing.assert_allclose(got[tiny], want[tiny], rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("last", ["sigmoid", "linear"])
def test_binary_output_is_predict_proba_of_a_one_output_network(last, dtype, tmp_path):
    """A one-output network (a sigmoid, or a linear output whose values leave
    [0, 1]) exported with output="binary" gives predict_proba's two columns
    [1 - p, p], p its output clipped into [0, 1]. (It applied a sigmoid of
    its own to the output: every row came out above 0.5, class 1.)"""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4)).astype(dtype)
    y = (X[:, 0] > 0).astype(dtype)
    net = nnx.NeuralNetwork([nnx.Dense(8, "tanh"), nnx.Dense(1, last)], "mse", seed=0,
                            dtype=dtype)
    nnx.Trainer(net, nnx.SGD(0.5)).fit(X, y, epochs=30, batch_size=50, seed=0)
    want = net.predict_proba(X)
    assert (want[:, 1] < 0.5).any() and (want[:, 1] > 0.5).any()
    if last == "linear":
        assert ((want == 0) | (want == 1)).any()  # some outputs were clipped
    path = net.to_onnx(tmp_path / "b.onnx", output="binary")
    _close(_run(path, X), want, dtype)


def test_a_sigmoid_output_over_a_sigmoid_layer_is_refused(tmp_path):
    net = nnx.NeuralNetwork([nnx.Dense(3, "tanh"), nnx.Dense(1, "sigmoid")], "mse", seed=0)
    net.build(2)
    with pytest.raises(nnx.InputError, match='the last layer is a sigmoid already.*"raw"'):
        net.to_onnx(tmp_path / "s.onnx", output="sigmoid")
    assert not (tmp_path / "s.onnx").exists()


def test_a_float64_binary_output_after_a_relu_loads_in_onnxruntime(tmp_path):
    """Its Clip into [0, 1] after the Relu made onnxruntime's optimiser fail to
    load the model ("Unexpected data type for Clip 'min' input of 11")."""
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(1, "relu")], "mse", seed=0,
                            dtype="float64")
    net.build(3)
    X = _inputs("float64", width=3, scale=3.0)
    want = net.predict_proba(X)
    assert ((want[:, 1] == 0) | (want[:, 1] == 1)).any()  # some clipped
    _close(_run(net.to_onnx(tmp_path / "b.onnx", output="binary"), X), want, "float64")


def test_a_sigmoid_cross_entropy_over_a_sigmoid_layer_exports_its_probabilities(tmp_path):
    """Its predict_proba is the sigmoid of its (sigmoid) outputs, but the
    default export refused "the last layer is a sigmoid already"."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nnx.InputWarning)  # the squashed output's warning
        net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "sigmoid")],
                                nnx.SigmoidCrossEntropy(), seed=0)
    net.build(6)
    X = _inputs("float32")
    _close(_run(net.to_onnx(tmp_path / "s.onnx"), X), net.predict_proba(X), "float32")


def test_the_reduced_precision_warning_points_at_the_callers_line(tmp_path):
    net = _net(("tanh", None), "float32")
    reduced = nnx.NeuralNetwork.load(net.save(tmp_path / "n.npz"), precision="bfloat16")
    with pytest.warns(nnx.InputWarning, match="in bfloat16") as caught:
        reduced.to_onnx(tmp_path / "m.onnx")
    assert [w.filename for w in caught] == [__file__]


def test_nnx_export_refuses_a_link_to_a_file_of_other_data(tmp_path, capsys):
    """model.onnx linked to the training CSV: the check read the link's name,
    the export wrote through it and replaced the CSV with a protobuf."""
    from nnx.cli import main
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=0)
    net.build(2)
    net.save(tmp_path / "m.npz")
    (tmp_path / "data.csv").write_text("a,b,label\n1,2,0\n")
    (tmp_path / "model.onnx").symlink_to(tmp_path / "data.csv")
    assert main(["export", str(tmp_path / "m.npz"), str(tmp_path / "model.onnx")]) == 2
    assert "(a link to " in capsys.readouterr().err
    assert (tmp_path / "data.csv").read_text() == "a,b,label\n1,2,0\n"
    # the library's words are the command's: OUT and --opset, not path= and opset=
    assert main(["export", str(tmp_path / "m.npz"), str(tmp_path), "--opset", "13"]) == 2
    assert capsys.readouterr().err.startswith(f"nnx export: error: OUT {str(tmp_path)!r} "
                                              "names a folder")


def test_nnx_export_names_its_flag_in_a_refusal(tmp_path, capsys):
    from nnx.cli import main

    net = nnx.NeuralNetwork([nnx.Dense(3, "tanh"), nnx.Dense(1, "sigmoid")], "mse", seed=0)
    net.build(2)
    net.save(tmp_path / "m.npz")
    assert main(["export", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx"),
                 "--output", "sigmoid"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnx export: error: --output sigmoid: the last layer is a sigmoid")
    assert err.count("\n") == 1 and 'output="' not in err
    # a warning too is said in the flag's words, not export_network's output='sigmoid'
    classifier = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=0)
    classifier.build(2)
    classifier.save(tmp_path / "c.npz")
    assert main(["export", str(tmp_path / "c.npz"), str(tmp_path / "c.onnx"),
                 "--output", "sigmoid"]) == 0
    err = capsys.readouterr().err
    assert "nnx export: warning: --output sigmoid: this network's probabilities" in err
    assert "(--output softmax does, --output raw the plain outputs)" in err
    assert "output='" not in err


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_sigmoid_output_keeps_small_probabilities(dtype, tmp_path):
    x = np.linspace(-80, 80, 161, dtype=dtype)[:, None]
    path = nnx_onnx.export_layers([np.eye(1)], [np.zeros(1)], ["linear"], "sigmoid",
                                  tmp_path / "s.onnx", dtype)
    want = nnx.Sigmoid().forward(x, inference=True)
    np.testing.assert_allclose(_run(path, x), want, rtol=TOL[dtype] / 10, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_sigmoid_output_layer_keeps_small_outputs_and_their_ranking(dtype, tmp_path):
    """A sigmoid output layer (MSE training's) went out as onnxruntime's
    Sigmoid, which returns 0 for small values: rows whose outputs were all
    small came back all 0, and argmax picked class 0 (65 of 450 digits rows
    of a 2-epoch model differed from nnx's classes)."""
    x = np.linspace(-80, 80, 161, dtype=dtype)[:, None]
    path = nnx_onnx.export_layers([np.eye(1), np.eye(1)], [np.zeros(1), np.zeros(1)],
                                  ["linear", "sigmoid"], "raw", tmp_path / "s.onnx", dtype)
    want = nnx.Sigmoid().forward(x, inference=True)
    np.testing.assert_allclose(_run(path, x), want, rtol=TOL[dtype] / 10, atol=0)


def test_dropout_exports_as_the_inference_pass(tmp_path):
    net = _net(("relu", None), "float32", classification=True, dropout=0.5)
    X, y = _inputs("float32"), np.arange(40) % 3
    net.train_batch(X, y)  # a training pass has drawn a mask
    path = net.to_onnx(tmp_path / "m.onnx")
    _close(_run(path, X), net.predict_proba(X), "float32")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ops == {"Gemm", "Relu", "Softmax"}


def test_the_batch_dimension_is_dynamic(tmp_path):
    net = _net(("tanh", None), "float32")
    path = net.to_onnx(tmp_path / "m.onnx")
    for rows in (1, 33):
        X = _inputs("float32", rows=rows)
        _close(_run(path, X), net.predict(X), "float32")


# ---------------------------------------------------------- the model file
@pytest.mark.parametrize("dtype, elem", [("float32", 1), ("float64", 11)])
def test_the_file_is_a_valid_model(dtype, elem, tmp_path):
    net = _net(("gelu", None), dtype)
    path = tmp_path / "m.onnx"
    assert net.to_onnx(path) == path
    onnx.checker.check_model(os.fspath(path), full_check=True)
    model = onnx.load(path)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, dims, inp.type.tensor_type.elem_type) == ("X", ["N", 6], elem)
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 3]
    assert {p.key: p.value for p in model.metadata_props}["nnx.output"] == "raw"
    assert model.producer_name == "nnx"
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left


def test_to_onnx_returns_probabilities_for_a_classifier(tmp_path):
    net = _net(("relu", None), "float64", classification=True)
    model = onnx.load(net.to_onnx(tmp_path / "m.onnx", opset=13))
    assert model.opset_import[0].version == 13
    assert model.graph.output[0].name == "probabilities"
    X = _inputs("float64")
    _close(_run(tmp_path / "m.onnx", X), net.predict_proba(X), "float64")
    raw = net.to_onnx(tmp_path / "r.onnx", output="raw")
    _close(_run(raw, X), net.predict(X), "float64")


def test_export_layers_for_a_scikit_learn_style_stack(tmp_path):
    """One hidden activation for every layer but the last, which is linear;
    names and metadata as asked."""
    rng = np.random.default_rng(2)
    ws = [rng.normal(size=(4, 6)), rng.normal(size=(6, 2))]
    bs = [rng.normal(size=6), rng.normal(size=(1, 2))]
    path = nnx_onnx.export_layers(ws, bs, "tanh", "softmax", tmp_path / "s.onnx", np.float64,
                                  input_name="features", extra={"classes": "[0, 1]"},
                                  output_name="proba")
    X = rng.normal(size=(9, 4))
    z = np.tanh(X @ ws[0] + bs[0]) @ ws[1] + bs[1]
    want = np.exp(z - z.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    _close(_run(path, X, "features"), want, "float64")
    model = onnx.load(path)
    assert model.graph.output[0].name == "proba"
    assert {p.key: p.value for p in model.metadata_props}["classes"] == "[0, 1]"
    # float64 parameters exported as a float32 model
    path = nnx_onnx.export_layers(ws, bs, "tanh", "raw", tmp_path / "f.onnx", "float32")
    _close(_run(path, X.astype(np.float32)), z.astype(np.float32), "float32")


# ------------------------------------------------------------- refusals
def test_an_unbuilt_network_is_refused(tmp_path):
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse")
    with pytest.raises(RuntimeError, match="no parameters yet"):
        net.to_onnx(tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_an_unknown_output_is_refused(tmp_path):
    net = _net(("relu", None), "float32")
    with pytest.raises(nnx.InputValueError, match=r"output='proba' is not known.*softmax"):
        net.to_onnx(tmp_path / "m.onnx", output="proba")


def test_a_missing_onnx_package_says_how_to_install_it(tmp_path, monkeypatch):
    net = _net(("relu", None), "float32")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"onnx package.*pip install 'nnx-dl\[onnx\]'"):
        net.to_onnx(tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_a_custom_activation_is_refused(tmp_path):
    class Square(Operation):
        def _output(self, inference):
            return self.input_ * self.input_

    net = nnx.NeuralNetwork([nnx.Dense(4, "relu"), nnx.Dense(3, Square())], "mse")
    net.build(2)
    # it was "hidden_activation[1] is <...Square object at 0x7f...>", a name the user never gave
    with pytest.raises(nnx.InputTypeError, match=r"^layers\[1\]'s activation is Square, one "
                                                 r"of your own: .*built-in activations only"):
        net.to_onnx(tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"opset": 12}, "opset=12 must be an integer >= 13"),
    ({"opset": 10_000}, "opset=10000 is newer"),
    ({"weights": [np.ones((2, 3)), np.ones((4, 1))]}, r"weights\[1\] has shape \(4, 1\)"),
    ({"biases": [np.ones(3), np.ones(2)]}, r"biases\[1\] has shape \(2,\)"),
    ({"biases": [np.ones(3)]}, "biases must be a list of 2 arrays"),
    ({"weights": [np.full((2, 3), np.nan), np.ones((3, 1))]}, "weights.0. holds NaN"),
    ({"hidden_activation": ["relu"]}, "lists 1 activations for 2 layers"),
    ({"hidden_activation": "relu7"}, "hidden_activation='relu7' is not known"),
    ({"dtype": "float16"}, "dtype='float16' is not supported"),
    ({"output_name": "X"}, "both 'X'"),
    ({"extra": {"classes": [0, 1]}}, "extra must be a dict of str to str"),
])
def test_export_layers_refuses_bad_arguments(kwargs, match, tmp_path):
    args = {"weights": [np.ones((2, 3)), np.ones((3, 1))], "biases": [np.ones(3), np.ones(1)],
            "hidden_activation": "relu", "output": "raw", "path": tmp_path / "m.onnx",
            "dtype": "float32", **kwargs}
    (tmp_path / "m.onnx").write_bytes(b"old")
    with pytest.raises(nnx.InputError, match=match):
        nnx_onnx.export_layers(**args)
    assert (tmp_path / "m.onnx").read_bytes() == b"old"  # the file there is left alone
    assert os.listdir(tmp_path) == ["m.onnx"]


# ------------------------------------------------------------- nnx export
def test_nnx_export_of_a_trained_checkpoint_takes_raw_features(tmp_path):
    """``nnx train`` saves the standardisation beside the network; ``nnx
    export`` folds it into the first layer, so the ONNX model scores the raw
    test set as ``nnx evaluate`` does (same predictions)."""
    from nnx.cli import main
    from nnx.data import load_dataset, standardize_with

    ckpt, model = tmp_path / "m.npz", tmp_path / "m.onnx"
    assert main(["train", "--hidden", "24", "--epochs", "2", "--eval-every", "1", "--quiet",
                 "--out", str(ckpt)]) == 0
    assert main(["export", str(ckpt), str(model)]) == 0
    net = nnx.NeuralNetwork.load(ckpt)
    X = load_dataset("digits").X_test
    want = net.predict_proba(standardize_with(X, net.checkpoint_extra["x_mean"],
                                              net.checkpoint_extra["x_std"]))
    got = _run(model, X.astype("float32"))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))
    # without the statistics the model takes standardised features, as the network
    assert main(["export", str(ckpt), str(model), "--standardized-inputs", "--output",
                 "raw"]) == 0
    Xs = standardize_with(X, net.checkpoint_extra["x_mean"], net.checkpoint_extra["x_std"])
    _close(_run(model, Xs.astype("float32")), net.predict(Xs), "float32")


def test_a_float64_training_exports_a_float64_model_of_raw_features(tmp_path):
    """``--dtype float64`` loaded the images as float32 and standardised them
    there, with float32 statistics: the saved x_mean/x_std were float32 and
    the network trained on data that had passed through float32."""
    from nnx.cli import main
    from nnx.data import load_dataset, standardize_with

    ckpt, model = tmp_path / "m.npz", tmp_path / "m.onnx"
    assert main(["train", "--hidden", "24", "--epochs", "2", "--eval-every", "1", "--quiet",
                 "--dtype", "float64", "--out", str(ckpt)]) == 0
    net = nnx.NeuralNetwork.load(ckpt)
    mean, std = net.checkpoint_extra["x_mean"], net.checkpoint_extra["x_std"]
    assert mean.dtype == std.dtype == np.float64
    assert main(["export", str(ckpt), str(model)]) == 0
    X = load_dataset("digits", dtype="float64").X_test
    want = net.predict_proba(standardize_with(X, mean, std))
    _close(_run(model, X), want, "float64")


def test_nnx_export_refuses_in_one_line(tmp_path, capsys):
    from nnx.cli import main

    assert main(["export", str(tmp_path / "none.npz"), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnx export: error:") and err.count("\n") == 1


def test_nnx_export_refuses_half_the_standardisation(tmp_path, capsys):
    from nnx.cli import main

    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse", seed=0)
    net.build(4)
    ckpt = tmp_path / "half.npz"
    net.save(ckpt, extra={"x_mean": np.zeros(4)})
    assert main(["export", str(ckpt), str(tmp_path / "m.onnx")]) == 2
    assert "holds x_mean without its partner" in capsys.readouterr().err


def test_the_model_goes_into_a_folder_made_for_it_and_a_bad_path_is_refused_first(tmp_path):
    """A missing folder is made, as for checkpoints (the error named the
    temporary file, '.x.onnx.<hex>.tmp'); a path that names a folder, or sits
    under a file, is refused before the model is built."""
    net = _net(("tanh", None), "float32")
    path = net.to_onnx(tmp_path / "new" / "dir" / "m.onnx")
    assert os.path.isfile(path)
    (tmp_path / "afile").write_text("x")
    for bad, message in ((tmp_path, "names a folder"),
                         (tmp_path / "afile" / "m.onnx", "afile' is not a folder")):
        with pytest.raises(nnx.InputError, match=message):
            net.to_onnx(bad)
    assert (tmp_path / "afile").read_text() == "x"


def test_a_pipe_at_the_path_is_refused_before_the_model_is_built(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(nnx.InputError, match="exists and is not a regular file"):
        _net(("tanh", None), "float32").to_onnx(tmp_path / "pipe")
    assert stat_is_fifo(tmp_path / "pipe")


def stat_is_fifo(path):
    import stat
    return stat.S_ISFIFO(os.lstat(path).st_mode)


def test_a_symbolic_link_is_written_through_as_checkpoints_are(tmp_path):
    """The export replaced a link (current.onnx -> deployed.onnx) with a file,
    leaving the deployed model as it was; a checkpoint writes its target."""
    net = _net(("tanh", None), "float32")
    (tmp_path / "deployed.onnx").write_bytes(b"old")
    (tmp_path / "current.onnx").symlink_to(tmp_path / "deployed.onnx")
    assert net.to_onnx(tmp_path / "current.onnx") == tmp_path / "current.onnx"
    assert (tmp_path / "current.onnx").is_symlink()
    X = _inputs("float32")
    _close(_run(tmp_path / "deployed.onnx", X), net.predict(X), "float32")


def test_the_standardisation_keeps_its_precision_for_features_far_from_zero(tmp_path):
    """Folded into the first layer (W / std, B - mean/std @ W), float32 lost
    the difference of two large products: features near 1e5 with a spread of
    1 came out up to 200% off. Computed as (x - mean) / std first, the model
    gives what standardize_with and predict give."""
    from nnx.data import feature_stats, standardize_with
    rng = np.random.default_rng(0)
    X = (np.array([2e3, 1e4, 5e4, 1e5, 0, -3e4]) + rng.normal(size=(200, 6))).astype("float32")
    mean, std = feature_stats(X)
    net = _net(("tanh", None), "float32")
    path = nnx_onnx.export_network(net, tmp_path / "m.onnx", standardize=(mean, std))
    _close(_run(path, X), net.predict(standardize_with(X, mean, std)), "float32")


@pytest.mark.parametrize("precision", ["tf32", "bfloat16"])
def test_a_reduced_precision_network_exports_float32_products_with_a_warning(precision,
                                                                            tmp_path):
    """Its ONNX model matched its own predictions to 7e-3 only, in silence."""
    net = _net(("tanh", None), "float32")
    reduced = nnx.NeuralNetwork.load(net.save(tmp_path / "n.npz"), precision=precision)
    with pytest.warns(nnx.InputWarning, match=f"in {precision}; the ONNX model computes them "
                                              "in float32"):
        path = reduced.to_onnx(tmp_path / "m.onnx")
    X = _inputs("float32")
    _close(_run(path, X), net.predict(X), "float32")
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["nnx.trained_precision"] == precision


def test_a_thin_dense_subclass_exports_as_it_saves(tmp_path):
    class Wide(nnx.Dense):
        def __init__(self, neurons, activation="relu", **kw):
            super().__init__(neurons, activation, **kw)

    net = nnx.NeuralNetwork([Wide(7), nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=0)
    net.build(6)
    X = _inputs("float32")
    _close(_run(net.to_onnx(tmp_path / "m.onnx"), X), net.predict_proba(X), "float32")

    class Doubled(nnx.Dense):
        def forward(self, x, inference=False):
            return 2 * super().forward(x, inference)

    odd = nnx.NeuralNetwork([Doubled(3, "linear")], "softmax_cross_entropy", seed=0)
    odd.build(6)
    with pytest.raises(nnx.InputError, match="ONNX export knows Dense layers only"):
        odd.to_onnx(tmp_path / "odd.onnx")


# ------------------------------- the estimators inside skl2onnx's conversions
def _skl2onnx():
    skl2onnx = pytest.importorskip("skl2onnx")
    from nnx.sklearn import register_skl2onnx
    register_skl2onnx()
    return skl2onnx


def _fit_quietly(est, X, y):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning after a few epochs
        return est.fit(X, y)


def _run_all(model, X):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("labels", ["binary-names", "multiclass-ids", "multiclass-names"])
def test_a_pipeline_ending_in_the_classifier_converts_with_skl2onnx(dtype, labels):
    """skl2onnx.to_onnx of Pipeline(StandardScaler, nnx MLPClassifier): the
    label and probabilities onnxruntime gives are predict's and
    predict_proba's (skl2onnx refused the estimator: no converter)."""
    skl2onnx = _skl2onnx()
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from nnx.sklearn import MLPClassifier
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, (150, 5)).astype(dtype)
    k = (X[:, 0] > 3).astype(int) + (0 if labels.startswith("binary") else (X[:, 1] > 3))
    y = np.array(["no", "yes", "maybe"])[k] if labels.endswith("names") else 7 * k
    pipe = _fit_quietly(make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(8,), activation="tanh", max_iter=40, random_state=0)), X, y)
    model = skl2onnx.to_onnx(pipe, X[:1], options={id(pipe[-1]): {"zipmap": False}})
    label, proba = _run_all(model, X)
    np.testing.assert_array_equal(label, pipe.predict(X))
    np.testing.assert_allclose(proba, pipe.predict_proba(X), rtol=TOL[dtype], atol=TOL[dtype])


def test_a_multilabel_classifier_converts_with_its_indicator_labels():
    skl2onnx = _skl2onnx()
    from sklearn.datasets import make_multilabel_classification

    from nnx.sklearn import MLPClassifier
    X, Y = make_multilabel_classification(n_samples=100, n_features=5, n_classes=3,
                                          random_state=0)
    X = X.astype("float32")
    est = _fit_quietly(MLPClassifier(hidden_layer_sizes=(8,), max_iter=40, random_state=0),
                       X, Y)
    label, proba = _run_all(skl2onnx.to_onnx(est, X[:1], options={"zipmap": False}), X)
    np.testing.assert_array_equal(label, est.predict(X))
    _close(proba, est.predict_proba(X), "float32")
    zipped = _run_all(skl2onnx.to_onnx(est, X[:1]), X)[1]  # skl2onnx's default: a map per row
    assert zipped[0] == pytest.approx(dict(enumerate(est.predict_proba(X[:1])[0])), abs=1e-6)


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
@pytest.mark.parametrize("outputs", [1, 2])
def test_a_pipeline_ending_in_the_regressor_converts_with_skl2onnx(loss, outputs):
    """Rows x outputs, with the Poisson loss's exp output (skl2onnx's own
    converter for scikit-learn's MLPRegressor fails on it)."""
    skl2onnx = _skl2onnx()
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from nnx.sklearn import MLPRegressor
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 4)).astype("float32")
    y = np.abs(X[:, :outputs]) * 3 if outputs > 1 else np.abs(X[:, 0]) * 3
    pipe = _fit_quietly(make_pipeline(StandardScaler(), MLPRegressor(
        hidden_layer_sizes=(8,), loss=loss, max_iter=40, random_state=0)), X, y)
    (got,) = _run_all(skl2onnx.to_onnx(pipe, X[:1]), X)
    assert got.shape == (120, outputs)
    _close(got, pipe.predict(X).reshape(120, outputs), "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_labels_and_integer_features_convert_with_skl2onnx(dtype):
    """Labels held as floats (0.0/1.0, as a pandas float column gives them)
    made a model onnxruntime refused (the class table held strings, the label
    int64); integer features fed a float Gemm an int64 tensor: refused too.
    scikit-learn's own MLPClassifier converts both."""
    skl2onnx = _skl2onnx()
    from nnx.sklearn import MLPClassifier, MLPRegressor
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 3)).astype(dtype)
    y = (X[:, 0] > 0).astype(np.float64) + (X[:, 1] > 0)
    clf = _fit_quietly(MLPClassifier((5,), max_iter=20, random_state=0), X, y)
    label, proba = _run_all(skl2onnx.to_onnx(clf, X[:1], options={"zipmap": False}), X)
    np.testing.assert_array_equal(label, clf.predict(X))
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=TOL[dtype], atol=TOL[dtype])
    counts = rng.integers(0, 16, (80, 3))
    for est in (MLPClassifier((5,), max_iter=20, random_state=0),
                MLPRegressor(hidden_layer_sizes=(5,), max_iter=20, random_state=0)):
        est = _fit_quietly(est, counts, counts.argmax(axis=1))
        got = _run_all(skl2onnx.to_onnx(est, counts[:1]), counts)
        if hasattr(est, "classes_"):
            np.testing.assert_array_equal(got[0], est.predict(counts))
        else:
            _close(got[0].ravel(), est.predict(counts), "float32")


def test_a_classifier_of_one_class_converts_as_scikit_learns_does():
    """Fitted on one class, the model's label indexed a one-entry table by
    the larger of [1 - p, p]: an error for every row with p > 0.5. Now the
    label is the class and the probabilities [p], as skl2onnx's converter
    of scikit-learn's MLPClassifier gives them (ZipMap maps them)."""
    skl2onnx = _skl2onnx()
    from nnx.sklearn import MLPClassifier
    X = np.random.default_rng(0).standard_normal((60, 3)).astype("float32")
    clf = _fit_quietly(MLPClassifier((5,), max_iter=5, random_state=0), X,
                       np.array(["only"] * 60))
    assert (clf.predict_proba(X)[:, 1] > 0.5).any()
    label, proba = _run_all(skl2onnx.to_onnx(clf, X[:1], options={"zipmap": False}), X)
    np.testing.assert_array_equal(label, clf.predict(X))
    _close(proba, clf.predict_proba(X)[:, 1:], "float32")
    zipped = _run_all(skl2onnx.to_onnx(clf, X[:1]), X)[1]
    assert zipped[0] == pytest.approx({"only": clf.predict_proba(X[:1])[0, 1]}, abs=1e-6)


@pytest.mark.parametrize("name", ["MLPRegressor", "MLPClassifier"])
def test_an_unfitted_estimator_is_refused_as_predict_refuses_it(name):
    skl2onnx = _skl2onnx()
    from sklearn.exceptions import NotFittedError

    import nnx.sklearn
    with pytest.raises(NotFittedError):
        skl2onnx.to_onnx(getattr(nnx.sklearn, name)(), np.zeros((1, 3), np.float32))


def test_register_skl2onnx_says_how_to_install_it(monkeypatch):
    from nnx.sklearn import register_skl2onnx
    monkeypatch.setitem(sys.modules, "skl2onnx", None)
    with pytest.raises(ImportError, match=r"pip install skl2onnx"):
        register_skl2onnx()


@pytest.mark.parametrize("n_out, output", [(1, "binary"), (3, "sigmoid")])
def test_a_sigmoid_cross_entropy_network_exports_its_probabilities(n_out, output, tmp_path):
    net = nnx.NeuralNetwork([nnx.Dense(5, "tanh"), nnx.Dense(n_out, "linear")],
                            nnx.SigmoidCrossEntropy(), seed=0)
    net.build(6)
    assert net.probability_output == output
    X = _inputs("float32", scale=4.0)
    path = net.to_onnx(tmp_path / "m.onnx")
    _close(_run(path, X), net.predict_proba(X), "float32")


@pytest.mark.parametrize("output", ["sigmoid", "exp", "softmax"])
def test_an_output_other_than_a_classifiers_probabilities_warns(output, tmp_path):
    """output="sigmoid" on a softmax cross-entropy network wrote a model whose
    outputs read like probabilities but are not the network's; a warning now."""
    loss = "sigmoid_cross_entropy" if output == "softmax" else "softmax_cross_entropy"
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], loss, seed=0)
    net.build(2)
    with pytest.warns(nnx.InputWarning, match=f"output='{output}': this network's "
                                              "probabilities .* are its '(softmax|sigmoid)'"):
        net.to_onnx(tmp_path / "m.onnx", output=output)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.to_onnx(tmp_path / "raw.onnx", output="raw")
        net.to_onnx(tmp_path / "own.onnx")
        regression = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse", seed=0)
        regression.build(2)
        regression.to_onnx(tmp_path / "exp.onnx", output=output)  # a regression's choice


def test_binary_output_of_several_outputs_is_refused_before_any_warning(tmp_path):
    """nnx export --output binary on a softmax model printed a long warning
    (not predict_proba's output) and then the refusal."""
    net = _net(("relu", None), "float32", classification=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(nnx.InputValueError, match=r'output="binary" turns one output.*'
                                                      r"this model has 3 outputs"):
            net.to_onnx(tmp_path / "m.onnx", output="binary")
    assert not os.listdir(tmp_path)


def test_metadata_is_named_and_cannot_replace_nnxs_own_keys(tmp_path):
    """A bad metadata= was blamed on 'extra'; a key nnx.output replaced the
    output nnx records for the model."""
    net = _net(("tanh", None), "float32")
    with pytest.raises(nnx.InputTypeError, match=r"^metadata must be a dict of str to str"):
        nnx_onnx.export_network(net, tmp_path / "m.onnx", metadata={"a": 1})
    with pytest.raises(nnx.InputValueError, match=r"metadata keys \['nnx.output'\] are what "
                                                  r"nnx itself records"):
        nnx_onnx.export_network(net, tmp_path / "m.onnx", metadata={"nnx.output": "softmax"})
    with pytest.raises(nnx.InputValueError, match=r"extra keys \['nnx.output'\]"):
        params = [net.backend.to_numpy(p) for p in net.params()]
        nnx_onnx.export_layers(params[0::2], params[1::2], "tanh", "raw", tmp_path / "m.onnx",
                               "float32", extra={"nnx.output": "softmax"})
    assert not (tmp_path / "m.onnx").exists()
    path = nnx_onnx.export_network(net, tmp_path / "m.onnx", metadata={"nnx.dataset": "d"})
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["nnx.dataset"] == "d" and meta["nnx.output"] == "raw"
