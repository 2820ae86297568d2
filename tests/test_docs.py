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
    ns = {"__name__": f"docs_{page.stem}"}
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
    shown = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown > 0.95
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "nnx", "evaluate", "digits.npz"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stderr  # the dataset and the statistics came with the file
    assert float(re.search(r"accuracy (\d\.\d+)", r.stdout).group(1)) == pytest.approx(
        shown, abs=1e-4)
