"""Every Python code block of the README and docs/ runs as written."""

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(path):
    return BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "doc", [p for p in DOC_FILES if _blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_code_blocks_run(doc, tmp_path, monkeypatch):
    """Run a page's blocks in order, in one namespace, from an empty folder."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for number, code in enumerate(_blocks(doc), start=1):
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(code, f"{doc.name}[block {number}]", "exec"), namespace)
        _check_printed(code, output.getvalue(), f"{doc.name} block {number}")


def _check_printed(code, printed, where):
    """A one-line ``print(...)  # value`` in the docs must print that value.

    Only comments that start like a value (a digit, bracket or parenthesis,
    up to a colon) are compared; prose comments are not.
    """
    prints = re.findall(r"^\s*print\(.*?\)\s*(?:#\s*(.*))?$", code, re.MULTILINE)
    lines = printed.splitlines()
    assert len(lines) == len(prints), f"{where}: {len(prints)} print calls, {len(lines)} lines printed"
    for comment, line in zip(prints, lines):
        want = comment.split(":")[0].strip()
        if re.fullmatch(r"[\[(\d].*", want):
            assert line == want, f"{where}: printed {line!r}, the docs say {want!r}"
