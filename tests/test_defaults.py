"""ti_core.defaults: every place that takes one of these defaults takes it from there."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from ti_core import defaults, verify
from ti_core.backfill import calendar
from ti_core.consume import groups
from ti_core.consume import reader as consume
from ti_core.publish.publisher import TrimPolicy
from ti_core.settings import TiSettings


def _default(function: object, name: str) -> object:
    return inspect.signature(function).parameters[name].default  # type: ignore[arg-type]


def test_settings_start_from_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TI_STREAM_MAXLEN", "TI_CALENDAR", "TI_RECONNECT_GIVE_UP_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    s = TiSettings()
    assert s.stream_maxlen == defaults.STREAM_MAXLEN
    assert s.calendar == defaults.CALENDAR
    assert s.reconnect_give_up_seconds == defaults.RECONNECT_GIVE_UP_SECONDS


def test_function_keywords_start_from_the_defaults() -> None:
    assert TrimPolicy().maxlen == defaults.STREAM_MAXLEN
    assert _default(verify.verify_store, "maxlen") == defaults.STREAM_MAXLEN
    assert _default(calendar.sessions, "calendar") == defaults.CALENDAR
    assert _default(calendar.current_session, "calendar") == defaults.CALENDAR
    assert _default(consume.tail, "block_ms") == defaults.BLOCK_MS
    reader = groups.GroupReader.__init__
    assert _default(reader, "claim_idle_ms") == defaults.CLAIM_IDLE_MS
    assert _default(reader, "block_ms") == defaults.BLOCK_MS
    assert _default(reader, "dead_letter_maxlen") == defaults.DEAD_LETTER_MAXLEN
    assert _default(reader, "give_up_after") == defaults.RECONNECT_GIVE_UP_SECONDS


def test_no_literal_copy_of_a_default_is_left_in_the_code() -> None:
    """The literal values stand once, in defaults.py (numbers and the calendar code)."""
    values = {defaults.STREAM_MAXLEN, defaults.CALENDAR, defaults.CLAIM_IDLE_MS}
    root = Path(defaults.__file__).parent.parent
    found = []
    for path in [*root.joinpath("ti_core").rglob("*.py"), *root.joinpath("flows").glob("*.py")]:
        if path.name == "defaults.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and type(node.value) in (int, str):
                if node.value in values:
                    found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert found == []


def test_defaults_is_a_leaf() -> None:
    tree = ast.parse(Path(defaults.__file__).read_text())
    imported = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [getattr(n, "module", None) for n in imported] == ["__future__"]
