"""Every Python block of the README and of the pages under docs/ runs as
written (each page's blocks one after another, in a scratch folder), and what
the README claims of its example holds."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(page):
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


def _run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__main__"}  # as a saved script runs (cluster.md's guard)
    for i, block in enumerate(_blocks(page)):
        exec(compile(block, f"{page.name} block {i + 1}", "exec"), ns)
    return ns


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_python_block_runs(page, tmp_path, monkeypatch, capsys):
    _run(page, tmp_path, monkeypatch)


def test_every_page_is_linked_from_the_readme_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"{page.name} is not linked from the README"
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_bytes()) < 8 * 1024


def test_the_first_example_scores_and_evaluates_to_the_same_accuracy(tmp_path, monkeypatch,
                                                                      capsys):
    """The example chooses its model on a validation split and saves its
    standardisation, so `nnx evaluate` prints the accuracy the example did."""
    _run(ROOT / "README.md", tmp_path, monkeypatch)
    shown = float(capsys.readouterr().out.strip().splitlines()[0])  # the first example's
    assert shown > 0.95
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "nnx", "evaluate", "digits.npz"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stderr  # the dataset and the statistics came with the file
    assert float(re.search(r"accuracy (\d\.\d+)", r.stdout).group(1)) == pytest.approx(
        shown, abs=1e-4)


def _shell_commands():
    """Every concrete ``nnx ...`` command in the shell and text blocks of the
    README and docs/ (synopses with [options] or PLACEHOLDERS aside), joined
    across backslash continuations, with trailing prose (after two spaces) cut."""
    found = []
    for page in PAGES:
        for _lang, block in re.findall(r"```(bash|sh|text)\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split("&&"):
                    cmd, *prose = re.split(r"\s{2,}", part.strip())
                    synopsis = "[" in part or re.search(r"\b[A-Z]{3,}", part)
                    a_table_row = prose and len(cmd.split()) == 2  # "nnx train   what it does"
                    if not cmd.startswith("nnx ") or synopsis or a_table_row:
                        continue
                    found.append(pytest.param(cmd, id=f"{page.name}: {cmd[:60]}"))
    return found


@pytest.mark.parametrize("command", _shell_commands())
def test_every_nnx_command_in_the_docs_parses(command):
    """The shell commands the pages show use flags and values the command line
    has (they are parsed by nnx's own parser, not run: some train for minutes)."""
    import shlex

    from nnx.cli import build_parser

    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.func)


def _quick(command):
    """Commands that finish in seconds here: digits on the CPU, no cluster."""
    return not re.search(r"mnist|--scheduler|--workers|--backend gpu", command)


def test_the_quick_nnx_commands_of_the_docs_run(tmp_path):
    """The shell commands that take seconds (the README's `nnx reproduce`,
    `nnx train --out model.npz && nnx export model.npz model.onnx`, ...) run
    as written, each page's in order in a scratch folder; the others (other
    datasets, a cluster, the GPU) are parsed above."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    _files_the_docs_name(tmp_path)
    ran = 0
    for param in _shell_commands():
        command = param.values[0]
        if not _quick(command) or ("export" in command and not _has_onnx()):
            continue
        import shlex
        r = subprocess.run([sys.executable, "-m", "nnx", *shlex.split(command)[1:]],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, f"{command}\n{r.stderr}"
        ran += 1
    assert ran >= 3


def _files_the_docs_name(folder):
    """The user's own data of docs/cli.md's example: iris as a CSV with its
    species named, and a file of 'new' rows (every fifth)."""
    from sklearn.datasets import load_iris
    d = load_iris()
    lines = ["sepal_length,sepal_width,petal_length,petal_width,species"]
    lines += [",".join(map(str, x)) + "," + d.target_names[y] for x, y in zip(d.data, d.target)]
    (folder / "iris.csv").write_text("\n".join(lines) + "\n")
    (folder / "new.csv").write_text("\n".join(lines[:1] + lines[1::5]) + "\n")


def _has_onnx():
    import importlib.util
    return importlib.util.find_spec("onnx") is not None


def test_the_docs_show_nnx_commands():
    assert len(_shell_commands()) >= 8
