"""What moved when ``ti_core`` got its subpackages keeps working: logger names, old pickles."""

from __future__ import annotations

import ast
import importlib
import logging
import pickle
import pkgutil
import subprocess
import sys
from pathlib import Path

import ti_core

ROOT = Path(__file__).resolve().parents[1]

# Bytes that ``pickle.dumps`` made of build-envelope's result before the move (the text of an
# envelope and its digest, restored by ``ti_core.wire._restored``), as Prefect kept them.
# build-envelope now returns the plain text, so that is what they load as.
OLD_PICKLE = (
    b"\x80\x04\x95o\x00\x00\x00\x00\x00\x00\x00\x8c\x0cti_core.wire\x94\x8c\t_restored\x94\x93"
    b'\x94\x8c\x07{"a":1}\x94\x8c@' + b"d" * 64 + b"\x94\x86\x94R\x94."
)
# The same result as the version after the move pickled it (``ti_core.contract.wire``).
MOVED_PICKLE = (
    b"\x80\x04\x95x\x00\x00\x00\x00\x00\x00\x00\x8c\x15ti_core.contract.wire\x94\x8c\t_restored"
    b'\x94\x93\x94\x8c\x07{"a":1}\x94\x8c@' + b"d" * 64 + b"\x94\x86\x94R\x94."
)

# The loggers of the core, by the names they had before the move (logging configs name them).
LOGGERS = {
    "ti_core.backfill",
    "ti_core.builder",
    "ti_core.consume",
    "ti_core.decoder",
    "ti_core.embedded",
    "ti_core.groups",
    "ti_core.hedgefund",  # new: what ai-hedge-fund prints during a call
    "ti_core.publish",
    "ti_core.reconnect",
    "ti_core.replicas",
    "ti_core.retry",
}


def test_a_result_pickled_before_the_move_loads() -> None:
    for old in (OLD_PICKLE, MOVED_PICKLE):
        text = pickle.loads(old)
        assert type(text) is str, type(text)
        assert text == '{"a":1}'


def test_the_cores_loggers_keep_their_names() -> None:
    for module in pkgutil.walk_packages(ti_core.__path__, prefix="ti_core."):
        __import__(module.name)
    names = {name for name in logging.root.manager.loggerDict if name.startswith("ti_core.")}
    assert names == LOGGERS


def test_the_public_names_load_lazily_from_their_one_home() -> None:
    script = (
        "import sys, ti_core\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('ti_core.'))\n"
        "assert loaded == ['ti_core._legacy'], loaded\n"
        "for name in ti_core.__all__:\n"
        "    value = getattr(ti_core, name)\n"
        "    home = sys.modules[ti_core._HOMES[name]]\n"
        "    assert getattr(home, name) is value, name\n"
        "print(len(ti_core.__all__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(out.stdout) == len(ti_core.__all__) >= 30
    assert sorted(ti_core.__all__) == sorted(ti_core._HOMES)


def test_every_public_name_is_defined_where_it_is_imported_from() -> None:
    """No re-exports: ``from ti_core.X import name`` only where X defines ``name``."""
    for name, home in ti_core._HOMES.items():
        source = Path(importlib.import_module(home).__file__ or "").read_text()
        tree = ast.parse(source)
        defined = {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        } | {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        assert name in defined, f"{name} is imported into {home}, not defined there"


def test_the_layering_contract_holds() -> None:
    """``lint-imports`` checks pyproject's [tool.importlinter] contracts (also run by .ci/run)."""
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "Contracts: 4 kept, 0 broken." in out.stdout
