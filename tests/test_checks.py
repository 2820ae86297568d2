"""The refusals' common ground (nnx._checks): every refusal is an
nnx.InputError that is still a ValueError or TypeError, so the command line
prints it as one line; an unknown name lists the valid ones; NumPy scalars
pass as numbers."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import N_IN, good_data, make_net

import nnx
from nnx import SGD, Dense, Dropout, NeuralNetwork, SGDMomentum, Trainer
from nnx import data as nnx_data
from nnx.backend import BACKENDS
from nnx.init import INITIALIZERS
from nnx.losses import LOSSES
from nnx.ops import ACTIVATIONS
from nnx.optimizers import DECAY_TYPES

# --------------------------------- names: an unknown one lists the valid ones
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


# -------------------------------------------------------------------- numbers
def test_numpy_scalars_are_accepted_as_settings(trained):
    """Valid numbers of NumPy type (np.int64 from np.arange, np.float32) are not rejected."""
    net, trainer, X, y = trained
    Dense(3, dropout=np.float32(0.5))
    Dropout(np.float32(0.5))
    SGDMomentum(np.float32(0.1), momentum=np.float32(0.9))
    history = trainer.fit(X, y, epochs=np.int64(2), eval_every=np.int64(1),
                          batch_size=np.int64(4), patience=np.int64(2), restart=True)
    assert history.epochs_run == 2


# ---------------------------------------------------------- the error classes
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


# ------------------------------------------- suggestions and public names
@pytest.mark.parametrize("make, suggestion", [
    (lambda: nnx.Dense(3, "tahn"), "'tanh'"),
    (lambda: nnx.Dense(3, "Relu"), "'relu'"),
    (lambda: nnx.NeuralNetwork([nnx.Dense(2, "linear")], "softmax_crossentropy"),
     "'softmax_cross_entropy'"),
    (lambda: nnx.get_backend("GPU"), "'gpu'"),
    (lambda: nnx.Dense(3, weight_init="glorrot"), "'glorot'"),
])
def test_a_misspelt_name_gets_a_suggestion(make, suggestion):
    with pytest.raises(ValueError, match=re.escape(f"(did you mean {suggestion}?)")):
        make()


def test_a_name_far_from_every_choice_gets_no_guess():
    with pytest.raises(ValueError) as err:
        nnx.Dense(3, "quux")
    assert "did you mean" not in str(err.value) and "expected one of" in str(err.value)


def test_refusals_show_their_public_names():
    assert nnx.InputValueError.__module__ == "nnx"
    assert f"{nnx.InputTypeError.__module__}.{nnx.InputTypeError.__qualname__}" == \
        "nnx.InputTypeError"
    with pytest.raises(nnx.InputValueError) as err:
        nnx.Dense(0)
    assert err.type.__module__ == "nnx"



@pytest.mark.parametrize("call", [
    "nnx.Dense(0)",
    "nnx.SGDMomentum(0.1, momentum=2)",
    "nnx.Trainer(net, nnx.SGD(0.1)).fit(np.zeros((5, 4)), np.array([0, 1, 2, 3, 1]))",
    "nnx.NeuralNetwork.load('missing.npz')",
    "nnx.accuracy(net, np.zeros((2, 4)), np.array([0, 7]))",
])
def test_a_refusal_shows_the_callers_line_and_the_message_not_nnx_internals(call, tmp_path):
    """A refusal came 13-26 lines deep through nnx's internals: now the
    traceback holds the caller's line, one line of nnx and the message."""
    script = tmp_path / "user.py"
    script.write_text("import numpy as np\nimport nnx\n"
                      "net = nnx.NeuralNetwork([nnx.Dense(4, 'tanh'), nnx.Dense(3, 'linear')],"
                      " 'softmax_cross_entropy', seed=0)\nnet.build(4)\n" + call + "\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines[0] == "Traceback (most recent call last):"
    frames = [line for line in lines if line.startswith("  File ")]
    assert len(frames) == 2, r.stderr
    assert str(script) in frames[0] and "nnx" in frames[1]
    assert re.match(r"nnx\.(InputValueError|InputTypeError|checkpoint\.CheckpointError): ",
                    lines[-1]), lines[-1]


def test_a_bug_inside_nnx_keeps_its_whole_traceback():
    """Only refusals are shortened: anything else is a bug worth its frames."""
    from nnx._checks import short_refusals

    def deep():
        raise KeyError("a bug")

    with pytest.raises(KeyError) as info:
        short_refusals(lambda: deep())()
    assert len(info.traceback) >= 3


@pytest.mark.parametrize("make, message", [
    (lambda: nnx.Dense(10, "softmax"), "softmax belongs to the loss: give the output layer "
                                       "'linear' and the network nnx.SoftmaxCrossEntropy()"),
    (lambda: nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse", backend="cuda"),
     "backend='cuda' is not known \\(did you mean 'gpu'\\?\\)"),
    (lambda: nnx.Dense(3, "swish"), "did you mean 'silu'"),
    (lambda: nnx.Trainer(nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy"),
                         nnx.SGD(0.1)).fit(np.eye(3), np.array(["a", "b", "c"]), epochs=1),
     "y_train must hold numbers, got dtype <U1: class labels such as these are encoded as ids "
     "0..K-1 first \\(sklearn.preprocessing.LabelEncoder\\)"),
    (lambda: nnx.Trainer(nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy"),
                         nnx.SGD(0.1)).fit(np.c_[np.ones(3), np.full(3, np.nan)], [0, 1, 2],
                                           epochs=1),
     "X_train contains 3 NaN or infinite value\\(s\\); column\\(s\\) \\[1\\] are NaN in every "
     "row: a constant feature divided by its standard deviation of 0\\?"),
])
def test_a_newcomers_slip_gets_the_likely_cause_in_its_message(make, message):
    """From a newcomer's first hour: the messages named the problem but not
    its usual cause (another library's name, labels as strings, x / x.std(0))."""
    with pytest.raises(nnx.InputError, match=message):
        make()


def _tiny_trainer():
    net = nnx.NeuralNetwork([nnx.Dense(3, "tanh"), nnx.Dense(2, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    return nnx.Trainer(net, nnx.SGD(0.1))


_X, _Y = np.zeros((4, 2)), np.array([0, 1, 0, 1])


@pytest.mark.parametrize("call, message", [
    (lambda: _tiny_trainer().fit(_X, _Y, validation_data=(_X, _Y)),
     r"^Trainer\.fit\(\) got an unexpected keyword argument 'validation_data': nnx's is "
     r"validation=\(X_val, y_val\)$"),
    (lambda: nnx.Adam(learning_rate=0.01), r"^Adam\(\) got .* 'learning_rate': nnx's is lr="),
    (lambda: nnx.SGD(0.1, momentum=0.9), r"^SGD\(\) got .*'momentum': .*nnx\.SGDMomentum"),
    (lambda: nnx.EarlyStopping(restore_best_weights=True), r"nnx's is restore_best=$"),
    (lambda: nnx.Cosine(0.1, T_max=10), r"'T_max': the schedule's length is fit's epochs"),
    (lambda: nnx.RMSprop(rho=0.9), r"'rho': nnx's RMSprop calls it alpha=$"),
    (lambda: nnx.Dense(16, input_dim=5), r"^Dense\(\) got .*'input_dim': a Dense takes its "),
    (lambda: nnx.LambdaCallback(on_epoch_end=print), r"calls fn\(epoch, record\)"),
    (lambda: _tiny_trainer().fit(_X, _Y, epoch=3),
     r"^Trainer\.fit\(\) got an unexpected keyword argument 'epoch' \(did you mean epochs=\?\)$"),
    (lambda: _tiny_trainer().net.predict(_X, 10, 3),
     r"^NeuralNetwork\.predict\(\) takes from 2 to 3 positional arguments but 4 were given; it "
     r"takes \(X, batch_size\)$"),
])
def test_other_libraries_keywords_are_refused_with_nnxs_name_for_them(call, message):
    """Keras's and PyTorch's keywords got Python's bare "unexpected keyword
    argument", with no word of what nnx calls them."""
    with pytest.raises(nnx.InputTypeError, match=message):
        call()


def test_a_type_error_from_inside_an_entry_point_keeps_its_traceback():
    """Only the call's own arguments are reworded: a TypeError raised inside
    (a bug, or a user's callback) comes out as it was, whole."""
    class Broken(nnx.Callback):
        def on_epoch_end(self, run, epoch, record):
            raise TypeError("inside the callback")
    with pytest.raises(TypeError, match="^inside the callback$") as caught:
        _tiny_trainer().fit(_X, _Y, epochs=1, callbacks=[Broken()])
    assert not isinstance(caught.value, nnx.InputError)
