"""Every command block of the README and docs/ is run by a test or marked illustrative.

A shell block (```bash, ```sh, ```shell, ```console) must follow one of two markers, alone on
the line before it:

- ``<!-- illustrative -->``: an example with paths or servers of its own (not run);
- ``<!-- run-by: PATH -->``: PATH (a test module, or ``.ci/run``) runs every command of the
  block. For a ``ti ...`` line this checks that PATH calls ``ti`` with exactly those
  arguments (``"run", "NVDA", "--date", "2026-05-11"``); any other line must appear in PATH
  as written. Changing a documented command without changing its test fails here.

``pip install -c constraints.txt -e .`` (with or without extras) is the install the suite itself
runs in: ``.ci/run`` makes it in a fresh virtual environment of a fresh clone before running
pytest. An install that skips the lock (``constraints.txt``) is refused: it would drift.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^[ \t]*```(bash|sh|shell|console)[ \t]*\n(.*?)^[ \t]*```", re.M | re.S)
MARKER = re.compile(r"<!-- (illustrative|run-by: (\S+)) -->")


def command_blocks(doc: Path) -> list[tuple[int, str | None, str]]:
    """(line number, marker or None, body) of each shell block of ``doc``."""
    text = doc.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
        marker = MARKER.fullmatch(before)
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, marker.group(1) if marker else None, match.group(2)))
    return found


def commands(body: str) -> list[str]:
    """The commands of a block: ``$ `` prompts stripped, comments and output lines dropped."""
    lines = body.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    out = []
    for line in lines:
        if prompted and not line.startswith("$ "):
            continue  # a console block's output
        line = line.removeprefix("$ ").split("  #", 1)[0].strip()
        out += [part.strip() for part in line.split("&&") if part.strip()]
    return out


BLOCKS = [(doc, *block) for doc in DOCS for block in command_blocks(doc)]


@pytest.mark.parametrize(
    ("doc", "line", "marker", "body"), BLOCKS, ids=[f"{b[0].name}:{b[1]}" for b in BLOCKS]
)
def test_each_command_block_is_run_or_illustrative(
    doc: Path, line: int, marker: str | None, body: str
) -> None:
    where = f"{doc.relative_to(ROOT)}:{line}"
    assert marker is not None, f"{where}: mark it <!-- illustrative --> or <!-- run-by: ... -->"
    if marker == "illustrative":
        return
    runner = ROOT / marker.removeprefix("run-by: ")
    assert runner.is_file(), f"{where}: {runner} does not exist"
    source = runner.read_text()
    for command in commands(body):
        words = shlex.split(command)
        if words[:2] == ["pip", "install"]:
            assert words[2:5] == ["-c", "constraints.txt", "-e"], f"{where}: install from the lock"
            ci = (ROOT / ".ci" / "run").read_text()
            assert '-c constraints.txt --build-constraint constraints.txt -e ".[test]"' in ci
        elif words[0] == "ti":
            call = ", ".join(f'"{w}"' for w in words[1:])
            assert call in source, f"{where}: {runner.name} never runs `{command}`"
        else:
            assert command in source, f"{where}: {runner.name} never runs `{command}`"


def test_the_checker_sees_the_blocks() -> None:
    assert len(BLOCKS) >= 15
    readme = [b for b in BLOCKS if b[0].name == "README.md"]
    assert readme[0][3].startswith("pip install -c constraints.txt -e . && ti run NVDA --date")
    assert commands("$ ti get A 2026-01-02\nA 2026-01-02: BUY\n") == ["ti get A 2026-01-02"]
    assert commands("pip install -e . && ti run X  # c\n") == ["pip install -e .", "ti run X"]
