"""The README's Python snippets run as written, one after another, and what
they claim holds."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _block(after):
    text = README.read_text()
    return re.search(re.escape(after) + r".*?```python\n(.*?)```", text, re.S).group(1)


@pytest.fixture
def quick(tmp_path, monkeypatch, capsys):
    """The quick example run in a scratch folder: (its namespace, what it printed)."""
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(_block("## Quick example"), "README quick example", "exec"), ns)
    return ns, float(capsys.readouterr().out.strip().splitlines()[-1])


def test_quick_example_runs(quick):
    assert quick[1] > 0.95


def test_the_saved_quick_example_evaluates_to_the_same_accuracy(quick, tmp_path):
    """The example's split was not the command line's (stratified), so
    `nnx evaluate` scored the model on rows it had trained on (0.987), and
    without the saved statistics on unscaled features (0.79)."""
    root = str(README.parent)  # this checkout's nnx, whatever is installed
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "nnx", "evaluate", "digits.npz"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stderr  # the dataset and the statistics came with the file
    shown = float(re.search(r"accuracy (\d\.\d+)", r.stdout).group(1))
    assert shown == pytest.approx(quick[1], abs=1e-4)


def test_the_hand_written_loop_and_the_long_run_snippets_run(quick):
    """Both used names the README never defined (batches, X_val)."""
    ns = quick[0]
    before = ns["net"].get_parameters()
    exec(compile(_block("a hand-written loop works too"), "README loop", "exec"), ns)
    assert not np.array_equal(ns["net"].get_parameters(), before)  # it trained
    exec(compile(_block("## Long runs"), "README long run", "exec"), ns)
    assert pathlib.Path("run.npz").is_file()
    assert ns["trainer"].net is ns["net"]
