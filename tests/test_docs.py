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


def _call(text, start):
    """(name, arguments text, end) of the call written at ``text[start:]``."""
    m = re.compile(r"((?:\w+\.)*[A-Za-z_]\w*)\(").match(text, start)
    if not m:
        return None
    depth, i = 1, m.end()
    while depth and i < len(text):
        depth += (text[i] in "([{") - (text[i] in ")]}")
        i += 1
    return m.group(1), text[m.end():i - 1], i


def _documented_signatures():
    """(page, text, callable, [argument as written]) for each table row that
    opens with a call signature of something nnx exports; on
    ``Trainer(net, optim).fit(...)`` the method's."""
    import nnx
    import nnx.data
    import nnx.metrics
    for page in PAGES:
        for line in page.read_text().splitlines():
            call = _call(line, 3) if line.startswith("| `") else None
            if call is None:
                continue
            name, args, end = call
            method = _call(line, end + 1) if line[end:end + 1] == "." else None
            parts = name.split(".")
            parts = parts[1:] if parts[0] == "nnx" else parts
            for root in (nnx, nnx.data, nnx.metrics):
                obj = root
                for part in parts + ([method[0]] if method else []):
                    obj = getattr(obj, part, None)
                if callable(obj):
                    yield page.name, line[2:(method or call)[2]], obj, _arguments(
                        (method or call)[1])
                    break


def _arguments(text):
    """The comma-separated arguments of a signature, brackets kept whole."""
    out, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    return [a for a in [*out, current.strip()] if a]


def test_the_signatures_in_the_docs_tables_are_the_codes():
    """Positional arguments in the order the code takes them, keywords it has:
    training.md listed RMSprop(lr, alpha, eps, momentum, ...), whose fourth
    positional argument is weight_decay, as in PyTorch."""
    import inspect
    checked, wrong = 0, []
    for page, text, obj, args in _documented_signatures():
        params = inspect.signature(obj).parameters
        positional = [n for n, p in params.items()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                      and n != "self"]  # Trainer.fit, read off the class
        position, keywords_only = 0, False
        for arg in args:
            if arg in ("*", "..."):  # what follows is named, not placed
                keywords_only = True
                continue
            name = re.match(r"(\w+)\s*=", arg)
            if name and name.group(1) not in params:
                wrong.append(f"{page}: {text}: {name.group(1)} is not a parameter")
            elif name and not keywords_only and positional[position:position + 1] != [
                    name.group(1)]:
                wrong.append(f"{page}: {text}: {name.group(1)} is argument {position + 1} in "
                             f"the docs, {positional[position:position + 1]} in the code")
            position += 1
        checked += 1
    assert checked >= 20, checked  # the tables were found
    assert not wrong, "\n".join(wrong)


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
