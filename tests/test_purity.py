"""``ti_core`` is the pure core: importing it (or any submodule) never loads Prefect."""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import ti_core

CORE = Path(ti_core.__file__).parent
PREFECT_IMPORT = re.compile(r"^\s*(import\s+prefect\b|from\s+prefect\b)", re.MULTILINE)


def _submodules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(CORE)], prefix="ti_core."))


def test_every_submodule_is_found() -> None:
    names = _submodules()
    for expected in ("build.builder", "contract.decoder", "contract.keys", "settings", "errors"):
        assert f"ti_core.{expected}" in names


def test_importing_ti_core_loads_no_prefect() -> None:
    modules = ["ti_core", *_submodules()]
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'prefect' "
        "or m.startswith('prefect.'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_prefect_import_statement_in_the_source() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 40
    offenders = [p.name for p in files if PREFECT_IMPORT.search(p.read_text())]
    assert offenders == []


def test_the_scan_would_catch_an_import() -> None:
    assert PREFECT_IMPORT.search("x = 1\nfrom prefect import flow\n")
    assert PREFECT_IMPORT.search("    import prefect.events\n")
    assert not PREFECT_IMPORT.search("# prefect lives in flows\nimport prefecture\n")


# A command-line flag inside a string: "--arena", "(--publish-degraded)", "ti run --allow-demo".
FLAG = re.compile(r"(?:^|[\s(`'\"])--[a-z][a-z-]*")


def _flags_in_strings(source: str) -> list[str]:
    """Flags named in the string literals of ``source``, docstrings aside (they may explain
    the command line; messages may not)."""
    import ast

    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        found.group().strip(" (`'\"")
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
        for found in FLAG.finditer(node.value)
    ]


def test_the_cores_messages_name_no_command_line_flags() -> None:
    """The core says what is wrong in its own terms (its ``TI_*`` settings); the ``ti``
    command adds the flag where it prints the error (``flows.cli``)."""
    found = {str(p.relative_to(CORE)): _flags_in_strings(p.read_text()) for p in CORE.rglob("*.py")}
    assert {name: flags for name, flags in found.items() if flags} == {}


def test_the_flag_scan_would_catch_one() -> None:
    source = '''def f():
    """Docstrings may say --publish-degraded."""
    raise E("no verdict; use --publish-degraded (TI_PUBLISH_DEGRADED=1) or `ti x --yes`")
'''
    assert _flags_in_strings(source) == ["--publish-degraded", "--yes"]
    assert _flags_in_strings('x = "a -- b; TI_PUBLISH_DEGRADED=1"') == []
