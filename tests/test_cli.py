"""The command line end to end, in a subprocess, on the bundled digits."""

import json
import subprocess
import sys

import pytest


def nnx_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nnx", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


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


def test_reproduce_subset_of_steps(tmp_path):
    r = nnx_cli("reproduce", "--epochs", "2", "--eval-every", "1", "--steps", "5,7",
                "--early-stopping", "test", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    steps = json.loads((tmp_path / "results.json").read_text())["steps"]
    assert [s["step"] for s in steps] == [5, 7]


@pytest.mark.parametrize("args, message", [
    (["reproduce", "--bogus"], "unrecognized arguments: --bogus"),
    (["reproduce", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["reproduce", "--backend", "tpu"], "invalid choice: 'tpu'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_flags_exit_non_zero_with_usage(args, message):
    r = nnx_cli(*args)
    assert r.returncode == 2
    assert "usage: nnx" in r.stderr and message in r.stderr


@pytest.mark.parametrize("args, message", [
    (["reproduce", "--steps", "0-9"], "--steps '0-9': steps run from 1 to 8"),
    (["reproduce", "--steps", "x"], "--steps 'x'"),
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
])
def test_bad_values_are_one_line_errors(args, message, tmp_path):
    r = nnx_cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


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


def test_version():
    r = nnx_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("nnx ")
