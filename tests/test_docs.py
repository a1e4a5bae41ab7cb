"""Every code block of the README and docs/ runs as written.

```python blocks run in order in one namespace; ```console blocks run their
``$ command`` lines in a shell, in the same folder, and must exit with 0.
```sh blocks (installing packages) are what `.ci/run` itself does and are
not run here.
"""

import contextlib
import io
import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.network  # the docs' code blocks build Keras networks

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(python|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(path):
    return BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc", [p for p in DOC_FILES if _blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(doc, tmp_path, monkeypatch):
    """Run a page's blocks in order from an empty folder."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    env = {**os.environ, "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for number, (language, code) in enumerate(_blocks(doc), start=1):
        where = f"{doc.name} block {number}"
        if language == "console":
            for command in re.findall(r"^\$ (.+)$", code, re.MULTILINE):
                done = subprocess.run(command, shell=True, env=env, capture_output=True, text=True)
                assert done.returncode == 0, f"{where}: `{command}` failed:\n{done.stderr[-2000:]}"
            continue
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(code, f"{doc.name}[block {number}]", "exec"), namespace)
        _check_printed(code, output.getvalue(), where)


def _check_printed(code, printed, where):
    """A one-line ``print(...)  # value`` in the docs must print that value.

    Compared: comments that start like a value (a digit, bracket, brace,
    parenthesis or quote) or are one word (``True``, ``chelsea``); for all
    but dicts, up to a colon, after which prose may follow. Other comments
    are prose and not compared.
    """
    prints = re.findall(r"^\s*print\(.*?\)\s*(?:#\s*(.*))?$", code, re.MULTILINE)
    lines = printed.splitlines()
    assert len(lines) == len(prints), f"{where}: {len(prints)} print calls, {len(lines)} lines printed"
    for comment, line in zip(prints, lines):
        want = comment.strip()
        if not want.startswith("{"):
            want = want.split(":")[0].strip()
        if re.fullmatch(r"[\[({'\d].*|\S+", want):
            assert line == want, f"{where}: printed {line!r}, the docs say {want!r}"
