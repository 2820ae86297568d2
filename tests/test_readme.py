"""The README's quick example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_quick_example_runs(capsys):
    text = README.read_text()
    block = re.search(r"## Quick example\s+```python\n(.*?)```", text, re.S).group(1)
    exec(compile(block, "README quick example", "exec"), {})
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed > 0.95
