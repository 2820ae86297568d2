"""The command line end to end, in a subprocess, on the bundled digits."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnx
from nnx import Dense, NeuralNetwork


def nnx_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "nnx", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


# nnx_cli runs whichever nnx `python -m` finds; repo_nnx_cli this checkout's
REPO = Path(__file__).resolve().parents[1]


def repo_nnx_cli(*args, cwd):
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


# MNIST that is not there and may not be downloaded: a run that got as far as
# loading its data would fail on that, so these errors come before any work.
NO_DATA = ("--dataset", "mnist", "--no-download", "--epochs", "1")


def no_data_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NNX_DATA"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # not made, so empty
    return env


def _save(path, n_in, n_out, **stats):
    net = nnx.NeuralNetwork([nnx.Dense(n_out, "linear")], nnx.SoftmaxCrossEntropy(), seed=0)
    net.build(n_in)
    net.save(path, extra=stats)
    return str(path)


def _args(**kw):
    import argparse
    base = dict(dataset="digits", data_dir=None, no_download=False, seed=20200720,
                early_stopping="validation", epochs=2, eval_every=1, batch_size=60,
                quiet=True)
    return argparse.Namespace(**{**base, **kw})


# ------------------------------------------------------------------ reproduce
def test_reproduce_prints_the_table_and_writes_json_and_png(tmp_path):
    out = tmp_path / "res"
    r = nnx_cli("reproduce", "--epochs", "4", "--eval-every", "2", "--steps", "1-8",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("step"))
    for col in ("change", "test acc", "best eval loss", "epochs", "seconds"):
        assert col in lines[header]
    rows = [line.split()[0] for line in lines[header + 1:header + 9]]
    assert rows == [str(i) for i in range(1, 9)]
    result = json.loads((out / "results.json").read_text())
    assert [s["step"] for s in result["steps"]] == list(range(1, 9))
    for s in result["steps"]:
        assert 0.0 <= s["test_accuracy"] <= 1.0 and s["epochs_run"] <= 4
        assert s["evaluations"] and s["evaluations"][0]["epoch"] == 2
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # the study's figures are MNIST's: on digits there is none to stand beside ours
    assert result["study_accuracy_dataset"] is None
    assert all(s["study_accuracy"] is None for s in result["steps"])


def test_reproduce_subset_of_steps(tmp_path):
    r = nnx_cli("reproduce", "--epochs", "2", "--eval-every", "1", "--steps", "5,7",
                "--early-stopping", "test", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    steps = json.loads((tmp_path / "results.json").read_text())["steps"]
    assert [s["step"] for s in steps] == [5, 7]


def test_reproduce_refuses_an_output_file_it_could_not_write_before_training(tmp_path):
    """A folder named results.json, or a dangling link as --out, was found only
    when the results were written, after the whole ladder had run."""
    (tmp_path / "res" / "results.json").mkdir(parents=True)
    (tmp_path / "dangle").symlink_to(tmp_path / "nowhere")
    for out, message in [("res", "results.json' exists and is not a regular file"),
                         ("dangle", "--out 'dangle': exists and is not a folder")]:
        r = nnx_cli("reproduce", "--out", out, cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == "" and message in r.stderr, r.stderr


def test_a_diverging_step_keeps_the_other_steps_results(tmp_path):
    """A step that diverged ended the run with no results.json, and the error
    did not say which step it was."""
    r = nnx_cli("reproduce", "--steps", "2-5", "--epochs", "2", "--lr-scale", "3e37",
                "--out", "res", "--quiet", cwd=tmp_path)
    assert r.returncode == 1
    result = json.loads((tmp_path / "res" / "results.json").read_text())
    rows = {s["step"]: s for s in result["steps"]}
    assert sorted(rows) == [2, 3, 4, 5]
    diverged = [n for n, s in rows.items() if s["diverged_in_epoch"] is not None]
    assert diverged and all(f"step {n} diverged in epoch" in r.stderr for n in diverged)
    assert "try a smaller --lr-scale" in r.stderr
    assert all(rows[n]["best_eval_loss"] is None or math.isfinite(rows[n]["best_eval_loss"])
               for n in rows)


def test_the_change_column_shows_the_scaled_rates(tmp_path):
    """With --lr-scale (the default on Fashion-MNIST) the table and
    results.json still named the study's unscaled rates."""
    r = nnx_cli("reproduce", "--steps", "4-5", "--epochs", "2", "--lr-scale", "0.5",
                "--out", "res", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "lr 0.1->0.025 exponential" in r.stdout and "decay 0.075->0.025" in r.stdout
    steps = json.loads((tmp_path / "res" / "results.json").read_text())["steps"]
    assert steps[1]["change"] == "Glorot init, lr 0.1->0.025 exponential"


def test_a_broken_matplotlib_costs_only_the_figure(tmp_path):
    """MPLBACKEND=nosuch made matplotlib's import raise ValueError after
    results.json was written, and reproduce ended in a traceback."""
    env = dict(os.environ, MPLBACKEND="nosuch")
    r = nnx_cli("reproduce", "--steps", "2", "--epochs", "1", "--out", str(tmp_path), env=env)
    assert r.returncode == 0, r.stderr
    assert "no figure: matplotlib cannot start (Key backend: 'nosuch'" in r.stderr
    assert (tmp_path / "results.json").is_file() and not (tmp_path / "results.png").exists()


# --------------------------------------------------------- train and evaluate
def test_train_then_evaluate(tmp_path):
    ckpt = tmp_path / "m.npz"
    r = nnx_cli("train", "--hidden", "32,16", "--dropout", "0.9", "--epochs", "6",
                "--eval-every", "3", "--lr", "0.1", "--final-lr", "0.02", "--decay", "linear",
                "--out", str(ckpt))
    assert r.returncode == 0, r.stderr
    trained_acc = float(r.stdout.split("test accuracy ")[1].split(",")[0])
    assert trained_acc > 0.8 and ckpt.exists()
    r = nnx_cli("evaluate", str(ckpt), "--dataset", "digits")
    assert r.returncode == 0, r.stderr
    assert f"accuracy {trained_acc:.4f}" in r.stdout  # same model, same test set
    matrix = r.stdout.split("predicted)\n")[1].splitlines()[1:]
    assert len(matrix) == 10
    assert sum(int(v) for row in matrix for v in row.split()[1:]) == 450


@pytest.mark.parametrize("dataset, lr", [("digits", 0.2), ("mnist", 0.2), ("fashion-mnist", 0.02)])
def test_train_starts_fashion_mnist_at_a_tenth_of_the_study_rate(monkeypatch, dataset, lr):
    """train used the study's MNIST rate 0.2 on Fashion-MNIST too, where the
    study's rates overshoot (which is why reproduce scales them there)."""
    from nnx import cli

    class Stop(Exception):
        pass

    made = []

    def record(name, rate, **kwargs):
        made.append(rate)
        raise Stop

    monkeypatch.setattr(cli, "make_optimizer", record)
    with pytest.raises(Stop):
        cli.main(["train", "--dataset", dataset, "--no-download", "--quiet"])
    assert made == [pytest.approx(lr)]
    with pytest.raises(Stop):
        cli.main(["train", "--dataset", dataset, "--lr", "0.3"])  # a given rate is kept
    assert made[-1] == 0.3
    if lr < 0.2:  # a --final-lr above the scaled default would make the "decay" a ramp
        assert cli.main(["train", "--dataset", dataset, "--final-lr", "0.05", "--decay",
                         "exponential"]) == 2


def test_evaluate_checks_the_feature_count_before_standardising(tmp_path):
    ckpt = _save(tmp_path / "eight.npz", 8, 10, x_mean=np.zeros(8), x_std=np.ones(8))
    r = nnx_cli("evaluate", ckpt)
    assert r.returncode == 2
    assert r.stderr == f"nnx evaluate: error: {ckpt}: the network takes 8 features but " \
                       "digits has 64\n"


def test_evaluate_refuses_statistics_of_the_wrong_shape(tmp_path):
    ckpt = _save(tmp_path / "m.npz", 64, 10, x_mean=np.zeros(8), x_std=np.ones(8))
    r = nnx_cli("evaluate", ckpt)
    assert r.returncode == 2
    assert f"error: {ckpt}: its x_mean has shape (8,) but the network takes 64 features; " \
           "expected (64,)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_evaluate_refuses_statistics_that_are_not_numbers(tmp_path):
    """A checkpoint whose x_mean held strings ended in a NumPy ufunc traceback."""
    net = nnx.NeuralNetwork([nnx.Dense(10, "linear")], "softmax_cross_entropy", seed=0)
    net.build(64)
    path = net.save(tmp_path / "m.npz", extra={"x_mean": np.array(["a"] * 64),
                                                "x_std": np.ones(64)})
    r = nnx_cli("evaluate", str(path))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"nnx evaluate: error: {path}: its x_mean holds <U1 values; expected real numbers"]


def test_evaluate_notes_a_checkpoint_without_statistics(tmp_path):
    ckpt = _save(tmp_path / "m.npz", 64, 10)
    r = nnx_cli("evaluate", ckpt)
    assert r.returncode == 0 and "accuracy" in r.stdout
    assert r.stderr == f"nnx evaluate: note: {ckpt} holds no standardisation statistics " \
                       "(x_mean, x_std), so the features are used as they are\n"


def test_evaluate_defaults_to_the_dataset_the_checkpoint_was_trained_on(tmp_path):
    """evaluate always defaulted to digits: a Fashion-MNIST model needed
    --dataset, and the wrong one gave only a feature-count error."""
    net = nnx.NeuralNetwork([nnx.Dense(10, "linear")], nnx.SoftmaxCrossEntropy(), seed=0)
    net.build(784)
    path = net.save(tmp_path / "m.npz", meta={"dataset": "mnist"})
    assert nnx.NeuralNetwork.load(path).checkpoint_meta == {"dataset": "mnist"}
    r = nnx_cli("evaluate", str(path), "--no-download", cwd=tmp_path, env=no_data_env(tmp_path))
    assert r.returncode == 2 and "MNIST files not found" in r.stderr, r.stderr
    r = nnx_cli("evaluate", str(path), "--dataset", "digits", cwd=tmp_path)
    assert f"note: {path} was trained on mnist, not digits" in r.stderr
    assert "the network takes 784 features but digits has 64" in r.stderr


# ------------------------------------------------- a dataset of the user's own
def _iris_csv(path):
    from sklearn.datasets import load_iris
    d = load_iris()
    lines = ["sepal_l,sepal_w,petal_l,petal_w,species"]
    lines += [",".join(map(str, x)) + "," + d.target_names[y] for x, y in zip(d.data, d.target)]
    path.write_text("\n".join(lines) + "\n")
    return str(path), d


def _accuracy(stdout, before):
    """The accuracy on the first line that starts with ``before``."""
    line = next(line for line in stdout.splitlines() if line.startswith(before))
    return float(line.split("accuracy ")[1].split()[0].rstrip(","))


def _train_on_iris(tmp_path):
    """nnx train on iris as a CSV of one's own: the file, the data, the model, the run."""
    csv_path, d = _iris_csv(tmp_path / "iris.csv")
    ckpt = tmp_path / "m.npz"
    r = nnx_cli("train", "--data", csv_path, "--target", "species", "--hidden", "16",
                "--optimizer", "adam", "--lr", "0.01", "--epochs", "40", "--quiet",
                "--out", str(ckpt))
    assert r.returncode == 0, r.stderr
    return csv_path, d, ckpt, r


def test_train_and_evaluate_a_csv_file_of_ones_own(tmp_path):
    csv_path, d, ckpt, r = _train_on_iris(tmp_path)
    assert f"dataset=iris.csv ({csv_path})" in r.stdout
    trained_acc = _accuracy(r.stdout, "test accuracy")
    assert trained_acc >= 0.9
    meta = NeuralNetwork.load(ckpt).checkpoint_meta
    assert meta["dataset"] == "iris.csv"
    assert meta["data_file"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert meta["data_file"]["test_fraction"] == 0.2
    # evaluate goes back to the file and scores the same 30 held-out rows
    r = nnx_cli("evaluate", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert "iris.csv test rows (held out by nnx train): 30 rows" in r.stdout
    assert f"accuracy {trained_acc:.4f}" in r.stdout
    assert "classes (index = name): 0 = setosa, 1 = versicolor, 2 = virginica" in r.stdout
    # a file of new rows, its classes in another order of first appearance: all scored,
    # each label mapped onto the model's classes by name
    new = tmp_path / "new.csv"
    rows = Path(csv_path).read_text().splitlines()
    new.write_text("\n".join(rows[:1] + rows[:0:-3]) + "\n")
    r = nnx_cli("evaluate", str(ckpt), "--data", str(new))
    assert r.returncode == 0, r.stderr
    assert "new.csv rows (all of the file): 50 rows" in r.stdout
    assert "is not the file" in r.stderr
    matrix = r.stdout.split("predicted)\n")[1].splitlines()[1:4]
    true_counts = [sum(int(v) for v in row.split()[1:]) for row in matrix]
    assert true_counts == np.bincount(d.target[::-1][::3], minlength=3).tolist()


def test_a_sigmoid_cross_entropy_of_several_classes_trains_one_versus_rest(tmp_path):
    """nnx train --loss sigmoid_cross_entropy on digits (10 outputs, one per
    class) ended, after training, in accuracy()'s multilabel refusal: no model."""
    r = nnx_cli("train", "--loss", "sigmoid_cross_entropy", "--epochs", "2", "--quiet",
                "--out", str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    assert _accuracy(r.stdout, "test accuracy") > 0.5 and (tmp_path / "m.npz").exists()


def test_two_classes_with_a_sigmoid_cross_entropy_train_one_output(tmp_path):
    csv_path, _ = _iris_csv(tmp_path / "iris.csv")
    rows = Path(csv_path).read_text().splitlines()
    two = tmp_path / "two.csv"
    two.write_text("\n".join(rows[:1] + [r for r in rows[1:] if "setosa" not in r]) + "\n")
    ckpt = tmp_path / "m.npz"
    r = nnx_cli("train", "--data", str(two), "--loss", "sigmoid_cross_entropy", "--optimizer",
                "adam", "--lr", "0.01", "--epochs", "30", "--monitor", "accuracy", "--quiet",
                "--out", str(ckpt))
    assert r.returncode == 0, r.stderr
    net = NeuralNetwork.load(ckpt)
    assert net.n_out == 1 and isinstance(net.loss, nnx.SigmoidCrossEntropy)
    trained_acc = _accuracy(r.stdout, "test accuracy")
    r = nnx_cli("evaluate", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert f"20 rows, accuracy {trained_acc:.4f}" in r.stdout
    assert "classes (index = name): 0 = versicolor, 1 = virginica" in r.stdout


def test_evaluate_reads_a_new_file_by_the_columns_trained_on(tmp_path):
    """From a probe: a new file with its columns in another order scored 0.33
    in silence; one with the target in the middle lost it unless --target was
    repeated; an edited training file was scored whole, training rows and all."""
    csv_path, d, ckpt, r = _train_on_iris(tmp_path)
    assert ("data: 150 rows x 4 features, target 'species' with 3 classes (setosa, "
            "versicolor, virginica); 108 training, 12 validation, 30 test rows") in r.stdout
    rows = [line.split(",") for line in Path(csv_path).read_text().splitlines()]
    moved = tmp_path / "moved.csv"  # species in the middle, the features reversed
    moved.write_text("\n".join(",".join([r[3], r[2], r[4], r[1], r[0]]) for r in rows) + "\n")
    a = nnx_cli("evaluate", str(ckpt), "--data", csv_path)
    b = nnx_cli("evaluate", str(ckpt), "--data", str(moved))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert _accuracy(b.stdout, "moved.csv") == _accuracy(a.stdout, "iris.csv")
    dropped = tmp_path / "dropped.csv"
    dropped.write_text("\n".join(",".join(r[1:]) for r in rows) + "\n")
    r = nnx_cli("evaluate", str(ckpt), "--data", str(dropped))
    assert_one_line_error(r, r"has no column 'sepal_l'")
    assert "--target" not in r.stderr  # the model's target is there: not the problem
    renamed = tmp_path / "renamed.csv"  # the label column under another name: not a flag's
    renamed.write_text(Path(csv_path).read_text().replace("species", "label", 1))
    assert_one_line_error(nnx_cli("evaluate", str(ckpt), "--data", str(renamed)),
                          r"the model's target column 'species' is not a column of .*; name "
                          r"this file's label column with --target")
    r = nnx_cli("evaluate", str(ckpt), "--data", str(renamed), "--target", "label")
    assert r.returncode == 0 and _accuracy(r.stdout, "renamed.csv") == _accuracy(
        a.stdout, "iris.csv"), r.stderr
    Path(csv_path).write_text(Path(csv_path).read_text().replace("5.1,3.5", "5.2,3.5", 1))
    assert_one_line_error(nnx_cli("evaluate", str(ckpt)), r"has changed since .* was trained "
                                                          r"on it")
    r = nnx_cli("export", str(ckpt), str(tmp_path / "m.onnx"))
    assert r.returncode == 0, r.stderr
    import onnx
    meta = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert json.loads(meta["classes"]) == ["setosa", "versicolor", "virginica"]  # not a repr
    # a flag of train given to export is not taken for export's --output
    r = nnx_cli("export", str(ckpt), "--out", str(tmp_path / "x.onnx"))
    assert r.returncode == 2 and "unrecognized arguments: --out" in r.stderr


def test_a_file_of_ones_own_refused_before_training(tmp_path):
    csv_path, _ = _iris_csv(tmp_path / "iris.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,x\n3,,y\n")
    for args, pattern in [
        (("--data", str(bad)), r"data row 2, column 'b' holds an empty cell"),
        (("--data", csv_path, "--target", "specis"), r"--target 'specis' is not a column.*"
                                                     r"did you mean 'species'"),
        (("--data", csv_path, "--dataset", "digits"), r"give one of them"),
        (("--data", csv_path, "--test-fraction", "1.5"), r"--test-fraction 1.5: must be"),
        (("--target", "species",), r"--target: applies to --data FILE"),
        (("--data", str(tmp_path / "x.xlsx")), r"--data '.*x.xlsx': expected a file ending"),
        (("--data", str(tmp_path / "missing.csv")), r"no such file"),
    ]:
        r = nnx_cli("train", *args, "--epochs", "1", "--out", str(tmp_path / "m.npz"))
        assert_one_line_error(r, pattern)
    assert not (tmp_path / "m.npz").exists()


def test_evaluate_a_known_datasets_model_on_a_file_of_class_ids(tmp_path):
    r = nnx_cli("train", "--epochs", "3", "--quiet", "--out", str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "d.npz", X=X[:100], y=y[:100])
    r = nnx_cli("evaluate", str(tmp_path / "m.npz"), "--data", str(tmp_path / "d.npz"))
    assert r.returncode == 0, r.stderr
    assert "d.npz rows (all of the file): 100 rows" in r.stdout
    np.savez(tmp_path / "e.npz", X=X[:3], y=np.array([1, 2, 12]))
    r = nnx_cli("evaluate", str(tmp_path / "m.npz"), "--data", str(tmp_path / "e.npz"))
    assert_one_line_error(r, r"labels \['12'\] are not among the model's classes")


# -------------------------------------- the data preparation is the library's
def test_the_validation_split_is_held_out_and_statistics_come_from_training_rows():
    """The main job's data preparation (the study's trap of choosing the model
    on the test set): nothing checked that validation rows leave the training
    set or that the mean and std come from the training rows alone."""
    from nnx.cli import _prepare
    from nnx.data import load_dataset
    ds = load_dataset("digits")
    prep = _prepare(_args())
    n_train, n_val = len(prep["y_train"]), len(prep["y_val"])
    assert n_train + n_val == len(ds.y_train) and n_val == round(0.1 * len(ds.y_train))
    raw_train = prep["X_train"] * prep["std"] + prep["mean"]
    raw_val = prep["X_val"] * prep["std"] + prep["mean"]
    train_rows = {r.tobytes() for r in np.round(raw_train).astype(np.int64)}
    val_rows = [r.tobytes() for r in np.round(raw_val).astype(np.int64)]
    all_rows = {r.tobytes() for r in ds.X_train.astype(np.int64)}
    assert train_rows <= all_rows and set(val_rows) <= all_rows
    assert not any(r in train_rows for r in val_rows)  # (digits' split has no duplicates)
    np.testing.assert_allclose(prep["mean"], raw_train.mean(axis=0), atol=1e-4)
    spread = raw_train.std(axis=0)  # a constant training column keeps scale 1
    np.testing.assert_allclose(prep["std"], np.where(spread > 0, spread, 1), rtol=1e-4)
    np.testing.assert_allclose(prep["X_train"].mean(axis=0), 0, atol=1e-5)
    assert np.abs(prep["X_test"].mean(axis=0)).max() > 1e-3  # not the test set's own stats


@pytest.mark.parametrize("validation", [True, False])
def test_the_command_line_prepares_data_with_the_library(validation):
    """The split and the standardisation were written out in cli.py, out of
    Python users' reach; the command line now calls nnx.data for both."""
    from nnx.cli import _prepare
    from nnx.data import load_dataset, prepare_dataset
    prep = _prepare(_args(), validation=validation)
    p = prepare_dataset(load_dataset("digits"), 0.1 if validation else None, seed=20200720)
    fields = ["X_train", "y_train", "X_test", "y_test", "mean"] + ["X_val", "y_val"] * validation
    for field in fields:
        assert np.array_equal(prep[field], getattr(p, field)), field
    assert np.array_equal(prep["std"], p.scale) and ("X_val" in prep) == validation


@pytest.mark.parametrize("where", ["validation", "test"])
def test_early_stopping_looks_at_the_set_the_flag_names(monkeypatch, where):
    from nnx import cli
    seen = {}

    def fake_fit(self, X_train, y_train, X_test=None, y_test=None, **kw):
        seen.update(kw, X_test=X_test)
        from nnx.trainer import History
        return History()
    monkeypatch.setattr(cli.Trainer, "fit", fake_fit)
    args = _args(early_stopping=where)
    prep = cli._prepare(args, validation=where == "validation")
    from nnx.study import LADDER
    net, optim = LADDER[4].build(64, 10)
    cli._fit(net, optim, prep, args, "step 5")
    if where == "validation":  # the test rows not even passed: never looked at
        assert seen["X_test"] is None
        assert seen["validation"][0] is prep["X_val"] and seen["validation"][1] is prep["y_val"]
    else:  # the study's call
        assert seen["validation"] is None and seen["X_test"] is prep["X_test"]


# ------------------ bad flags and values: one line on stderr, before any work
@pytest.mark.parametrize("args, message", [
    (["reproduce", "--bogus"], "unrecognized arguments: --bogus"),
    (["reproduce", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["reproduce", "--backend", "tpu"], "invalid choice: 'tpu'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["train", "--patience", "0"], "argument --patience: 0 must be at least 1 (or 'none')"),
    (["train", "--optimizer", "lion"], "invalid choice: 'lion'"),
    # a subcommand's unknown flag was refused with the top-level usage, and no suggestion
    (["train", "--epoch", "3"], "usage: nnx train [-h]"),
    (["train", "--epoch", "3"], "nnx train: error: unrecognized arguments: --epoch 3 (did you "
                                "mean '--epochs'?)"),
    (["reproduce", "--step=2"], "(did you mean '--steps'?)"),
    (["export", "m.npz", "--out", "m.onnx"], "unrecognized arguments: --out (out is "
                                             "given by its place: nnx export CHECKPOINT OUT)"),
    # a subcommand's flag before it: not "did you mean '--quiet'?"
    (["--quiet", "train"], "unrecognized arguments: --quiet (--quiet belongs after the "
                           "subcommand: nnx train --quiet ...)"),
])
def test_bad_flags_exit_non_zero_with_usage(args, message):
    r = nnx_cli(*args)
    assert r.returncode == 2
    assert "usage: nnx" in r.stderr and message in r.stderr


@pytest.mark.parametrize("args, message", [
    (["reproduce", "--steps", "0-9"], "--steps '0-9': steps run from 1 to 8"),
    (["reproduce", "--steps", "x"], "--steps 'x'"),
    # said "steps run from 1 to 8", which they do
    (["reproduce", "--steps", "5,3-1"], "--steps '5,3-1': the range '3-1' runs backwards; "
                                        "write '1-3'"),
    (["reproduce", "--epochs", "0"], "--epochs 0: must be a positive integer"),
    (["reproduce", "--epochs", "5", "--eval-every", "6"], "--eval-every 6: must be between 1"),
    (["train", "--hidden", "8,a"], "--hidden '8,a'"),
    (["train", "--dropout", "1.5", "--epochs", "1"], "error: --dropout=1.5 must be in (0, 1]"),
    (["train", "--lr", "-1", "--epochs", "1"], "error: --lr=-1.0 must be > 0"),
    (["train", "--momentum", "1", "--epochs", "1"], "error: --momentum=1.0 must be in [0, 1)"),
    (["train", "--final-lr", "0.01", "--epochs", "1"],
     "error: --final-lr=0.01 was given without a --decay; pass --decay as one of"),
    (["train", "--final-lr", "0", "--decay", "exponential", "--epochs", "1"],
     "error: --final-lr=0.0 must be > 0"),
    (["evaluate", "missing.npz"], "'missing.npz' does not exist"),
    (["train", "--optimizer", "sgd", "--momentum", "0.5", "--epochs", "1"],
     "error: --momentum 0.5: applies to --optimizer momentum, nesterov or rmsprop only, "
     "not --optimizer sgd"),
    (["train", "--optimizer", "adam", "--weight-decay", "-1", "--epochs", "1"],
     "error: --weight-decay=-1.0 must be a number >= 0"),
    (["train", "--clip-norm", "0", "--epochs", "1"], "error: --clip-norm=0.0 must be > 0"),
    (["train", "--schedule", "onecycle", "--warmup", "1", "--epochs", "3"],
     "error: --schedule 'onecycle' has its own warm-up"),
    (["train", "--decay", "linear", "--schedule", "cosine", "--epochs", "3"],
     "error: --decay linear and --schedule cosine disagree"),
    (["train", "--schedule", "cosine", "--warmup", "3", "--epochs", "3"],
     "error: --warmup 3: must be fewer epochs than --epochs 3"),
    (["train", "--schedule", "step", "--step-size", "0", "--epochs", "3"],
     "error: --step-size=0 must be a positive integer"),
    # these were ignored: the run trained with the schedule they do not belong to
    (["train", "--step-size", "2", "--epochs", "3"],
     "error: --step-size=2 applies only when --schedule is 'step', not 'constant'"),
    (["train", "--schedule", "cosine", "--gamma", "0.5", "--epochs", "3"],
     "error: --gamma=0.5 applies only when --schedule is 'step' or 'plateau', not 'cosine'"),
    # named ReduceOnPlateau's factor= instead of the flag
    (["train", "--schedule", "plateau", "--gamma", "5", "--epochs", "3"],
     "error: --gamma=5.0 must be in (0, 1)"),
    # each of these used to start work, or to succeed
    (["reproduce", "--lr-scale", "inf"], "error: --lr-scale inf: must be a finite number > 0"),
    (["reproduce", "--lr-scale", "1e-323", "--steps", "5"],
     "error: --lr-scale 1e-323: step 5: lr=0.0 must be > 0"),
    (["reproduce", "--out", ""], "error: --out '': expected a folder for results.json"),
    (["train", "--hidden", ""], "error: --hidden '': expected sizes like"),
    (["train", "--hidden", "89,,46"], "error: --hidden '89,,46': expected sizes like"),
    (["train", "--data-dir", "x"], "error: --data-dir 'x': applies to --dataset mnist or"),
    (["train", "--precision", "tf32", "--dtype", "float64", "--epochs", "1"],
     "error: --precision tf32: applies to --dtype float32, not --dtype float64"),
])
def test_bad_values_are_one_line_errors(args, message, tmp_path):
    r = nnx_cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == "" and list(tmp_path.iterdir()) == []  # refused before any work


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
    r = repo_nnx_cli("train", *args, "--quiet", "--out", str(out), cwd=tmp_path)
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
    r = repo_nnx_cli("evaluate", str(path), cwd=tmp_path)
    assert_one_line_error(r, r"nnx evaluate: error: checkpoint .*model\.npz.*"
                             r"(truncated|not an nnx checkpoint|does not exist)")


@pytest.mark.parametrize("args, message", [
    (["reproduce", "--out", "afile"], "--out 'afile': exists and is not a folder"),
    (["reproduce", "--out", "afile/res"], "--out 'afile/res': "),
    (["train", "--out", "folder"], "--out 'folder': names a folder"),
    (["train", "--out", "new/"], "--out 'new/': names a folder"),
    (["train", "--out", "afile/m.npz"], "--out 'afile/m.npz': "),
])
def test_bad_out_is_refused_before_loading_data(args, message, tmp_path):
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "folder").mkdir()
    r = nnx_cli(*args, *NO_DATA, cwd=tmp_path, env=no_data_env(tmp_path))
    assert r.returncode == 2 and r.stdout == ""
    assert f"error: {message}" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "afile").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]


def test_good_out_gets_as_far_as_loading_data(tmp_path):
    # a new folder and a new file in a new folder are fine (they are made later)
    for args in (["reproduce", "--out", "a/b"], ["train", "--out", "c/m.npz"]):
        r = nnx_cli(*args, *NO_DATA, cwd=tmp_path, env=no_data_env(tmp_path))
        assert r.returncode == 2 and "--out" not in r.stderr, r.stderr
        assert "MNIST files not found" in r.stderr
        # the message names the command line's flags, not Python arguments
        assert "(--no-download)" in r.stderr and "--data-dir DIR" in r.stderr
        assert "download=False" not in r.stderr and "data_dir=" not in r.stderr


def test_a_missing_gpu_is_reported_before_the_data_is_loaded(tmp_path):
    if nnx.backend.gpu_available()[0]:
        pytest.skip("this machine has a GPU")
    r = nnx_cli("train", "--backend", "gpu", *NO_DATA, cwd=tmp_path, env=no_data_env(tmp_path))
    assert r.returncode == 2 and "CuPy" in r.stderr and "MNIST files" not in r.stderr


def test_a_network_too_large_to_allocate_is_a_one_line_error():
    """--hidden 10000000000000000000 ended in NumPy's 'Maximum allowed
    dimension exceeded' with a traceback."""
    r = nnx_cli("train", "--epochs", "1", "--quiet", "--hidden", "10000000000000000000")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "nnx train: error: a network of widths [64, 10000000000000000000, 10] has "
        "750,000,000,000,000,000,010 parameters, more than any array can hold"]


def test_a_bug_keeps_its_traceback_while_refusals_stay_one_line(monkeypatch, capsys, tmp_path):
    """main() printed every ValueError as a user error, so a bug inside nnx
    (here a NumPy shape error from training) looked like the user's mistake
    and lost its traceback. Only nnx's own refusals are one line now."""
    from nnx import cli

    def broken_fit(self, *args, **kwargs):
        return np.ones((2, 3)) + np.ones((4, 5))  # ValueError from inside NumPy

    out = str(tmp_path / "model.npz")
    monkeypatch.setattr(nnx.Trainer, "fit", broken_fit)
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["train", "--epochs", "1", "--quiet", "--out", out])
    monkeypatch.undo()
    assert cli.main(["train", "--epochs", "1", "--quiet", "--dropout", "0",
                     "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["nnx train: error: --dropout=0.0 must be in (0, 1] "
                                        "(it is the keep probability)"]


# --------------------------------- help, version, and a reader that goes away
def test_version():
    r = nnx_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("nnx ")


@pytest.mark.parametrize("command, shown", [
    ("train", ["--epochs EPOCHS       most epochs to train (default: 50)",
               "default 0.2 for sgd, momentum and nesterov (the study's rate for MNIST; 0.02 "
               "on fashion-mnist, where that rate overshoots)", "(default: momentum)",
               "(default: 60)", "(default: tanh)", "(default: 20200720)"]),
    ("reproduce", ["(default: 50)", "(default: 60)", "(default: float32)"]),
])
def test_help_shows_the_defaults(command, shown):
    """--help listed --epochs, --lr, --batch-size and others without their defaults."""
    r = nnx_cli(command, "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())  # argparse wraps to the terminal width
    for part in shown:
        assert " ".join(part.split()) in text


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path):
    """`nnx evaluate model.npz | head -1` ended with 'error: [Errno 32] Broken
    pipe' and exit status 2, as if evaluating had failed."""
    model = tmp_path / "m.npz"
    assert nnx_cli("train", "--epochs", "1", "--quiet", "--out", str(model)).returncode == 0
    # a pipe is block-buffered, so the write fails only at the flush
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-m", "nnx", "evaluate", str(model)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader goes before anything is printed
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert err == ""


def test_a_closed_stdout_is_not_a_crash(tmp_path):
    """With stdout closed (`>&-`) sys.stdout is None, and the flush added for
    broken pipes raised AttributeError."""
    model = tmp_path / "m.npz"
    assert nnx_cli("train", "--epochs", "1", "--quiet", "--out", str(model)).returncode == 0
    r = subprocess.run(["bash", "-c", f'"{sys.executable}" -m nnx evaluate "{model}" >&-'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------ where the model and the data go
def test_train_refuses_an_out_folder_without_room_before_training(tmp_path, monkeypatch, capsys):
    """A full disk was found only by the final write, after the training,
    which was lost with it."""
    import collections
    import shutil

    from nnx import cli
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(2**30, 2**30 - 1000, 1000))

    def no_training(*args, **kwargs):
        raise AssertionError("it trained")
    monkeypatch.setattr(nnx.Trainer, "fit", no_training)
    out = tmp_path / "new" / "m.npz"  # its folder is made later: the space is the parent's
    assert cli.main(["train", "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(rf"nnx train: error: --out {re.escape(repr(str(out)))}: the model needs "
                        rf"about 0\.\d MiB but {re.escape(repr(str(tmp_path)))} has 0\.0 MiB "
                        "free; free some space or choose another folder", line), line
    assert list(tmp_path.iterdir()) == []


def test_a_failed_final_write_leaves_the_model_in_the_temporary_folder(tmp_path, monkeypatch,
                                                                        capsys):
    """The model was lost to '[Errno 28] No space left on device', which did
    not even say which path had failed."""
    import errno
    import tempfile

    from nnx import checkpoint, cli
    spare_dir = tmp_path / "spare"
    spare_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare_dir))
    out = tmp_path / "m.npz"
    real = checkpoint.write

    def full_disk(path, header, arrays):
        if os.fspath(path) == str(out):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, header, arrays)
    monkeypatch.setattr(checkpoint, "write", full_disk)
    assert cli.main(["train", "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    (spare,) = spare_dir.iterdir()
    assert captured.err.strip().splitlines() == [
        f"nnx train: error: --out {str(out)!r} could not be written (No space left on device); "
        f"the trained model was saved to {spare} instead"]
    assert "test accuracy" in captured.out and not out.exists()
    back = nnx.NeuralNetwork.load(spare)
    assert back.n_in == 64 and sorted(back.checkpoint_extra) == ["x_mean", "x_std"]
    assert os.stat(spare).st_mode & 0o777 == 0o600  # the temporary folder is shared

    def no_room_anywhere(path, header, arrays):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(checkpoint, "write", no_room_anywhere)
    assert cli.main(["train", "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"nnx train: error: --out {str(out)!r} could not be written (No space left on device), "
        f"nor a copy in {str(spare_dir)!r} (No space left on device): the trained model is lost"]


def test_every_command_says_where_its_data_came_from(tmp_path, capsys):
    """nnx train and nnx evaluate did not say which copy of the data they used."""
    from nnx import cli
    shown = "dataset=digits (sklearn.datasets.load_digits"
    out = tmp_path / "m.npz"
    assert cli.main(["train", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    assert shown in capsys.readouterr().out.splitlines()[0]
    assert cli.main(["evaluate", str(out)]) == 0
    assert shown in capsys.readouterr().out.splitlines()[0]
    assert cli.main(["reproduce", "--steps", "1", "--epochs", "1", "--quiet", "--out",
                     str(tmp_path / "results")]) == 0
    assert shown in capsys.readouterr().out.splitlines()[0]


def test_an_incomplete_data_dir_is_a_one_line_error_naming_what_is_missing(tmp_path):
    """With three of the four files in --data-dir, the data came from another
    copy (the cache, $NNX_DATA) without a word."""
    ckpt = _save(tmp_path / "m.npz", 784, 10)
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz"):
        (mine / name).write_bytes(b"")
    r = repo_nnx_cli("evaluate", ckpt, "--dataset", "mnist", "--data-dir", str(mine),
                     "--no-download", cwd=tmp_path)
    assert_one_line_error(r, rf"nnx evaluate: error: MNIST: the folder {re.escape(repr(str(mine)))}"
                             r" \(--data-dir DIR\) holds only some of the dataset's files; "
                             r"missing: t10k-labels-idx1-ubyte\.gz\.")


def test_train_with_half_precision_products_says_so_and_saves_the_setting(tmp_path):
    """--precision float16 (emulated on the CPU, with loss scaling) trains the
    digits network about as well as float32, and the checkpoint records it."""
    r = nnx_cli("train", "--precision", "float16", "--epochs", "5", "--quiet", "--out",
                "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "precision=float16" in r.stdout.splitlines()[0]
    acc = float(re.search(r"test accuracy ([0-9.]+)", r.stdout).group(1))
    assert acc > 0.9
    from nnx.checkpoint import read_header
    assert read_header(tmp_path / "m.npz")["network"]["precision"] == "float16"


def test_evaluate_scores_with_the_precision_the_checkpoint_was_trained_with(tmp_path):
    """nnx evaluate loaded every checkpoint with exact float32 products, so a
    float16 model's accuracy could differ from the one nnx train printed;
    --precision chooses otherwise."""
    r = nnx_cli("train", "--precision", "bfloat16", "--epochs", "3", "--quiet", "--out",
                "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trained = re.search(r"test accuracy ([0-9.]+)", r.stdout).group(1)
    r = nnx_cli("evaluate", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(", precision=bfloat16")
    assert f"accuracy {trained}" in r.stdout
    r = nnx_cli("evaluate", "m.npz", "--precision", "float32", cwd=tmp_path)
    assert "precision=" not in r.stdout.splitlines()[0]


# ------------------------------------------------ an interrupted nnx train
def test_an_interrupted_train_goes_on_from_its_checkpoint_with_resume(tmp_path, monkeypatch,
                                                                      capsys):
    """Ctrl-C threw the whole run away without a word (no --out, and no way
    to keep a long run's state from the command line). With --checkpoint
    the state of each evaluation is kept, and --resume ends on exactly the
    parameters of the run that was never interrupted."""
    from nnx.cli import main
    from nnx.train.callbacks import CSVLogger

    flags = ["train", "--epochs", "6", "--eval-every", "2", "--patience", "none", "--quiet",
             "--log", str(tmp_path / "log.csv")]
    assert main([*flags, "--out", str(tmp_path / "whole.npz")]) == 0
    seen, real = [], CSVLogger.on_evaluation

    def interrupt_at_the_second_evaluation(self, run, record):
        seen.append(record["epoch"])
        if len(seen) == 2:
            raise KeyboardInterrupt
        real(self, run, record)
    monkeypatch.setattr(CSVLogger, "on_evaluation", interrupt_at_the_second_evaluation)
    run_file, out = tmp_path / "run.npz", tmp_path / "resumed.npz"
    cut = [*flags, "--checkpoint", str(run_file), "--out", str(out)]
    capsys.readouterr()
    assert main(cut) == 130
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} was not written" in err
    assert f"--checkpoint {str(run_file)!r} holds the state of the last evaluation" in err
    assert run_file.exists() and not out.exists()
    monkeypatch.setattr(CSVLogger, "on_evaluation", real)
    assert main([*cut, "--resume"]) == 0
    whole, resumed = NeuralNetwork.load(tmp_path / "whole.npz"), NeuralNetwork.load(out)
    for p, q in zip(whole.params(), resumed.params()):
        np.testing.assert_array_equal(p, q)


def test_resume_without_a_checkpoint_yet_says_the_run_starts_afresh(tmp_path, capsys):
    """A job that always passes --resume starts afresh the first time, as
    documented; a mistyped path did so without a word."""
    from nnx.cli import main
    run_file = tmp_path / "run.npz"
    assert main(["train", "--epochs", "1", "--quiet", "--checkpoint", str(run_file),
                 "--resume", "--out", str(tmp_path / "m.npz")]) == 0
    assert (f"nnx train: note: --resume: no checkpoint at {run_file} yet: the run starts "
            "afresh and saves its state there") in capsys.readouterr().err
    assert run_file.exists()
    # the same command without --resume replaced that state without a word
    assert main(["train", "--epochs", "1", "--quiet", "--checkpoint", str(run_file),
                 "--out", str(tmp_path / "m.npz")]) == 0
    assert (f"nnx train: note: --checkpoint {run_file}: an earlier run's state is there; "
            "this run starts afresh and replaces it (add --resume") in capsys.readouterr().err


def test_an_interrupted_train_without_a_checkpoint_says_what_was_lost(tmp_path, monkeypatch,
                                                                      capsys):
    from nnx.cli import main
    from nnx.train.callbacks import CSVLogger

    def interrupt(self, run, record):
        raise KeyboardInterrupt
    monkeypatch.setattr(CSVLogger, "on_evaluation", interrupt)
    earlier = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse", seed=0)
    earlier.build(2)
    earlier.save(tmp_path / "m.npz")
    assert main(["train", "--epochs", "2", "--quiet", "--log", str(tmp_path / "l.csv"),
                 "--out", str(tmp_path / "m.npz")]) == 130
    err = capsys.readouterr().err
    assert "was not written (the file there is an earlier run's)" in err
    assert "Give --checkpoint RUN.npz" in err and "--resume" in err


@pytest.mark.parametrize("args, message", [
    (["--resume"], "--resume goes on from --checkpoint RUN.npz"),
    (["--checkpoint", "m.npz", "--out", "m.npz"], "is --out too"),
])
def test_checkpoint_flags_are_checked_before_training(args, message, tmp_path, capsys):
    from nnx.cli import main

    assert main(["train", "--epochs", "1", *args]) == 2
    assert message in capsys.readouterr().err


def test_an_interrupted_reproduce_writes_the_steps_it_finished(tmp_path, monkeypatch, capsys):
    """Ctrl-C during step 2 wrote no results.json, though step 1's row had
    been printed."""
    from nnx import cli

    real = cli._run_step

    def second_step_interrupted(number, prep, args):
        if number == 2:
            raise KeyboardInterrupt
        return real(number, prep, args)
    monkeypatch.setattr(cli, "_run_step", second_step_interrupted)
    out = tmp_path / "res"
    assert cli.main(["reproduce", "--steps", "1-3", "--epochs", "2", "--quiet",
                     "--out", str(out)]) == 130
    assert "interrupted after 1 finished step(s); writing them" in capsys.readouterr().err
    saved = json.loads((out / "results.json").read_text())
    assert [row["step"] for row in saved["steps"]] == [1]


def test_resuming_a_finished_run_warns_in_one_line(tmp_path, capsys):
    """nnx's warnings print as its errors do; Python's form added a second
    line, the console script's own source line."""
    from nnx.cli import main

    flags = ["train", "--epochs", "2", "--quiet", "--checkpoint", str(tmp_path / "r.npz"),
             "--out", str(tmp_path / "m.npz")]
    assert main(flags) == 0
    capsys.readouterr()
    assert main([*flags, "--resume"]) == 0
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x]
    assert line.startswith("nnx train: warning: --checkpoint ") and "had finished" in line
    # in the command line's words: it had pointed to NeuralNetwork.load and restart=False
    assert line.endswith("so nothing is trained; nnx evaluate or nnx export it, or train a "
                         "new run under another --checkpoint path")


def test_a_resume_with_other_flags_names_the_flags(tmp_path, capsys):
    """The refusal spoke fit()'s keywords (epochs=2 vs 3, batch_size=...)."""
    from nnx.cli import main

    flags = ["train", "--epochs", "2", "--eval-every", "1", "--quiet", "--checkpoint",
             str(tmp_path / "r.npz"), "--out", str(tmp_path / "m.npz")]
    assert main(flags) == 0
    capsys.readouterr()
    assert main([*flags[:2], "3", *flags[3:], "--batch-size", "30", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnx train: error: --checkpoint ") and err.count("\n") == 1
    assert err.rstrip().endswith("the flags differ from the saved run's (saved, given): "
                                 "--epochs 2 vs 3, --batch-size 60 vs 30"), err


def test_evaluate_refuses_a_checkpoint_of_a_dataset_it_cannot_load(tmp_path, capsys):
    """It was scored on digits with no word, when the checkpoint said 'iris'."""
    from nnx.cli import main

    net = NeuralNetwork([Dense(5, "tanh"), Dense(10, "linear")], "softmax_cross_entropy")
    net.build(64)
    net.save(tmp_path / "m.npz", meta={"dataset": "iris"})
    assert main(["evaluate", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "was trained on 'iris', which nnx evaluate cannot load; pass --dataset" in err
    assert main(["evaluate", str(tmp_path / "m.npz"), "--dataset", "digits"]) == 0  # named


def test_train_weight_decay_zero_for_adamw_is_zero():
    """--optimizer adamw --weight-decay 0 trained with AdamW's default 0.01:
    the flag's default 0.0 and an explicit 0 could not be told apart."""
    from nnx import cli
    for flags, decay in (([], 0.01), (["--weight-decay", "0"], 0.0),
                         (["--weight-decay", "0.2"], 0.2)):
        args = cli.build_parser().parse_args(["train", "--optimizer", "adamw", *flags])
        schedule = cli._schedule_flags(args)
        assert cli._optimizer(args, schedule, 10).weight_decay == decay


def test_a_training_checkpoint_evaluates_and_exports_as_the_model_does(tmp_path):
    """--checkpoint files held no standardisation or dataset: nnx evaluate
    scored raw features (0.80 where the model file gave 0.98), with a note."""
    r = nnx_cli("train", "--epochs", "3", "--eval-every", "1", "--checkpoint", "run.npz",
                "--out", "model.npz", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = {}
    for name in ("run.npz", "model.npz"):
        r = nnx_cli("evaluate", name, cwd=tmp_path)
        assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
        got[name] = re.search(r"accuracy (\d\.\d+)", r.stdout).group(1)
    assert got["run.npz"] == got["model.npz"]
    assert nnx.NeuralNetwork.load(tmp_path / "run.npz").checkpoint_meta == {
        "dataset": "digits", "classes": [str(d) for d in range(10)]}
    r = nnx_cli("export", "run.npz", "run.onnx", cwd=tmp_path)
    assert r.returncode == 0 and "takes raw features" in r.stdout, r.stdout + r.stderr


def test_files_a_command_would_write_over_each_other_are_refused(tmp_path):
    """nnx export m.npz m.npz replaced the checkpoint with the ONNX model;
    --log equal to --out or --checkpoint lost the log."""
    r = nnx_cli("train", "--epochs", "1", "--out", "m.npz", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = (tmp_path / "m.npz").read_bytes()
    assert_one_line_error(nnx_cli("export", "m.npz", "m.npz", cwd=tmp_path),
                          "'m.npz' is the checkpoint itself")
    assert (tmp_path / "m.npz").read_bytes() == before
    assert_one_line_error(nnx_cli("train", "--log", "m2.npz", "--out", "m2.npz", *NO_DATA,
                                  cwd=tmp_path), "--log 'm2.npz' is --out too")
    assert_one_line_error(nnx_cli("train", "--log", "c.npz", "--checkpoint", "c.npz",
                                  *NO_DATA, cwd=tmp_path), "--log 'c.npz' is --checkpoint too")


def test_an_output_flag_never_replaces_the_data_or_a_file_nnx_did_not_write(tmp_path):
    """--log, --out and --checkpoint naming the --data file replaced it (the
    checkpoint even with a note calling it 'an earlier run's state'); any
    other file there was replaced as well; nnx export wrote ONNX over a CSV."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3))
    lines = ["a,b,c,label"] + [",".join(f"{v:.3f}" for v in row) + ("," + "ab"[int(row[0] > 0)])
                               for row in X]
    data = tmp_path / "v.csv"
    data.write_text("\n".join(lines) + "\n")
    other = tmp_path / "notes.csv"
    other.write_text("mine,not,nnx's\n1,2,3\n")
    kept = {p: p.read_bytes() for p in (data, other)}
    quick = ("--data", "v.csv", "--epochs", "1", "--quiet")
    for flag in ("--log", "--out", "--checkpoint"):
        assert_one_line_error(nnx_cli("train", *quick, flag, "v.csv", cwd=tmp_path),
                              rf"{flag} 'v.csv' is the --data file: the run would replace the "
                              "data it trains on")
        assert_one_line_error(nnx_cli("train", *quick, flag, "notes.csv", cwd=tmp_path),
                              rf"{flag} 'notes.csv': a file is there that is not a .*nnx train "
                              "replaces only files it wrote")
    r = nnx_cli("train", *quick, "--out", "m.npz", "--log", "run.csv", "--checkpoint", "run.npz",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    again = nnx_cli("train", *quick, "--out", "m.npz", "--log", "run.csv",
                    "--checkpoint", "run.npz", cwd=tmp_path)  # its own files: replaced
    assert again.returncode == 0, again.stderr
    assert_one_line_error(nnx_cli("export", "m.npz", "v.csv", cwd=tmp_path),
                          "'v.csv' exists and is not a .onnx file")
    assert {p: p.read_bytes() for p in (data, other)} == kept
    (tmp_path / "placeholder.npz").write_bytes(b"")  # as mktemp leaves one: replaced
    r = nnx_cli("train", *quick, "--out", "placeholder.npz", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "placeholder.npz").stat().st_size > 0, r.stderr


def test_evaluate_refuses_another_target_for_the_file_it_goes_back_to(tmp_path):
    """Without --data, evaluate scores the training file's held-out rows:
    --target a rescored them with a feature as the labels, silently."""
    rows = [f"{i % 7},{-i % 5},{i % 3},{'ab'[i % 2]}" for i in range(120)]
    (tmp_path / "v.csv").write_text("a,b,c,label\n" + "\n".join(rows) + "\n")
    r = nnx_cli("train", "--data", "v.csv", "--epochs", "1", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_one_line_error(nnx_cli("evaluate", "model.npz", "--target", "a", cwd=tmp_path),
                          "--target a applies to a file given with --data; model.npz goes "
                          "back to the file it was trained on, whose target is 'label'")
    r = nnx_cli("evaluate", "model.npz", "--target", "label", cwd=tmp_path)
    assert r.returncode == 0 and "test rows (held out by nnx train)" in r.stdout, r.stderr


def test_train_monitoring_accuracy_reports_the_accuracy_it_chose_by():
    from nnx import cli
    from nnx.train import History
    h = History(records=[{"epoch": 1, "loss": 0.3, "accuracy": 0.9},
                         {"epoch": 2, "loss": 0.2, "accuracy": 0.8}], best_epoch=1,
                best_loss=0.3)
    args = _args(monitor="accuracy")
    assert cli._chosen(h, args) == "best evaluation accuracy 0.9000 (epoch 1, loss 0.3000)"
    assert cli._chosen(h, _args(monitor="loss")) == "best evaluation loss 0.3000 (epoch 1)"


def test_monitoring_accuracy_with_mse_is_refused_before_the_data_loads(tmp_path):
    """It failed after the data had loaded, naming EarlyStopping, not a flag."""
    assert_one_line_error(
        nnx_cli("train", "--loss", "mse", "--monitor", "accuracy", *NO_DATA,
                cwd=tmp_path, env=no_data_env(tmp_path)),
        r"--monitor accuracy: .*not --loss mse")


def test_one_vs_rest_classes_record_and_monitor_their_accuracy(tmp_path):
    """nnx train --loss sigmoid_cross_entropy over 10 classes printed a test
    accuracy, but its evaluations recorded none (an empty eval_accuracy
    column) and --monitor accuracy failed after the data had loaded, in
    EarlyStopping's words."""
    r = nnx_cli("train", "--loss", "sigmoid_cross_entropy", "--monitor", "accuracy",
                "--epochs", "2", "--eval-every", "1", "--log", str(tmp_path / "run.csv"),
                "--out", str(tmp_path / "m.npz"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert rows[0].split(",")[3] == "eval_accuracy"
    assert all(0 < float(row.split(",")[3]) <= 1 for row in rows[1:])
    assert "best evaluation accuracy" in r.stdout


def test_reproduce_shows_a_scaled_rates_change_whole(tmp_path):
    """--lr-scale 0.1 lengthened step 4's change past the column's 40
    characters: "learning-rate decay 0.015->0.005 (linear" lost its bracket."""
    r = nnx_cli("reproduce", "--lr-scale", "0.1", "--steps", "4", "--epochs", "1", "--quiet",
                "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "learning-rate decay 0.015->0.005 (linear)  " in r.stdout


def test_evaluate_takes_a_python_trained_models_columns_by_name(tmp_path):
    """A model trained in Python on a DataFrame, scored by nnx evaluate on a
    CSV with its columns in another order: read as they came (accuracy 0.40
    for 0.99), in silence; predict refused the same frame."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((90, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int) + (X["b"] > 0)
    net = nnx.NeuralNetwork([nnx.Dense(8, "tanh"), nnx.Dense(3, "linear")],
                            "softmax_cross_entropy", seed=0)
    nnx.Trainer(net, nnx.Adam(0.05)).fit(X, y, epochs=60)
    net.save(tmp_path / "m.npz")
    X.assign(target=y).to_csv(tmp_path / "same.csv", index=False)
    X[["c", "b", "a"]].assign(target=y).to_csv(tmp_path / "reordered.csv", index=False)
    scores = []
    for name in ("same.csv", "reordered.csv"):
        r = nnx_cli("evaluate", str(tmp_path / "m.npz"), "--data", str(tmp_path / name),
                    "--target", "target", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        scores.append(re.search(r"accuracy (\d\.\d+)", r.stdout).group(1))
    assert scores[0] == scores[1] == f"{nnx.accuracy(net, X, y):.4f}"


def test_a_model_trained_on_a_csv_knows_its_columns_in_python(tmp_path):
    """nnx train --data file.csv recorded the columns in its metadata only:
    loaded in Python, the model took a DataFrame of them in any order."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 3))
    rows = ["a,b,c,label"] + [f"{p:.6f},{q:.6f},{r:.6f},{int(p > 0)}" for p, q, r in X]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    r = nnx_cli("train", "--data", str(tmp_path / "d.csv"), "--epochs", "1", "--out",
                str(tmp_path / "m.npz"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert nnx.NeuralNetwork.load(tmp_path / "m.npz").feature_names == ("a", "b", "c")
