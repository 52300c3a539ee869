"""Arena runners: replay, import spec, demo, the demo-publish guard and the registry of spec
forms (no Prefect)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from ti_core.arenas.demo import DEMO_META, DemoArena, ensure_demo_allowed
from ti_core.arenas.registry import FORMS, load_arena
from ti_core.arenas.replay import ReplayArena
from ti_core.arenas.runner import ArenaRunner, CallableArena
from ti_core.build.builder import build_envelope_from_state
from ti_core.errors import (
    ArenaError,
    ArenaTransientError,
    ConfigError,
    DemoRefusedError,
    InvalidStateError,
    StateNotFoundError,
    is_retryable,
)
from ti_core.settings import TiSettings

MODULE = "tests.arena_fixtures"
PIPELINE_DOC = Path(__file__).resolve().parents[1] / "docs" / "pipeline.md"


@pytest.fixture
def replay_dir(tmp_path: Path, sample_states: dict[str, dict[str, Any]]) -> Path:
    state = sample_states["nvda-2026-05-11-full"]
    (tmp_path / "NVDA").mkdir()
    (tmp_path / "NVDA" / "2026-05-11.json").write_text(json.dumps(state))
    return tmp_path


async def test_replay_reads_the_archived_state(replay_dir: Path) -> None:
    runner = load_arena(f"replay:{replay_dir}")
    assert isinstance(runner, ReplayArena) and isinstance(runner, ArenaRunner)
    assert not runner.is_demo and runner.spec == f"replay:{replay_dir}"
    state = await runner.run(" nvda ", "2026-05-11")
    envelope = build_envelope_from_state(state, ticker="NVDA", trade_date="2026-05-11")
    assert envelope.decision.target.ticker == "NVDA"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        (b"\xff\xfe", "cannot read"),
    ],
)
async def test_replay_missing_or_bad_file_names_the_path(
    replay_dir: Path, content: str | bytes | None, needle: str
) -> None:
    path = replay_dir / "AAPL" / "2026-05-11.json"
    if content is not None:
        path.parent.mkdir()
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(StateNotFoundError) as info:
        await ReplayArena(replay_dir).run("AAPL", "2026-05-11")
    assert str(path) in str(info.value) and needle in str(info.value)
    assert not is_retryable(info.value)


@pytest.mark.parametrize(
    ("ticker", "day"),
    [
        ("../NVDA", "2026-05-11"),
        ("..", "2026-05-11"),
        ("NVDA", "../../etc/passwd"),
        ("NV/DA", "2026-05-11"),
        ("NVDA", "2026-02-30"),
    ],
)
async def test_replay_validates_before_touching_the_file_system(
    replay_dir: Path, ticker: str, day: str
) -> None:
    with pytest.raises(InvalidStateError):
        await ReplayArena(replay_dir).run(ticker, day)


async def test_import_spec_sync_and_async(tmp_path: Path) -> None:
    sync = load_arena(f"{MODULE}:sync_arena")
    assert isinstance(sync, CallableArena) and not sync.is_demo
    state = await sync.run("aapl", "2026-05-11")
    assert state["target"] == {"ticker": "AAPL", "date": "2026-05-11"}
    state = await load_arena(f"{MODULE}:async_arena").run("MSFT", "2026-05-12")
    assert state["target"]["ticker"] == "MSFT" and state["synthesis_verdict"] == "SELL"
    bound = await load_arena(f"{MODULE}:GRAPH.propagate").run("NVDA", "2026-05-11")
    assert bound["arena_id"] == "graph"


async def test_import_spec_failures_are_classified() -> None:
    with pytest.raises(ArenaTransientError, match="rate limited"):
        await load_arena(f"{MODULE}:transient_arena").run("NVDA", "2026-05-11")
    with pytest.raises(ArenaTransientError, match="TimeoutError"):
        await load_arena(f"{MODULE}:timeout_arena").run("NVDA", "2026-05-11")
    with pytest.raises(ArenaError, match="RuntimeError: boom") as info:
        await load_arena(f"{MODULE}:broken_arena").run("NVDA", "2026-05-11")
    assert not is_retryable(info.value)
    with pytest.raises(ArenaError, match="not a state mapping"):
        await load_arena(f"{MODULE}:list_arena").run("NVDA", "2026-05-11")


@pytest.mark.parametrize(
    "spec",
    [
        "no_such_module_xyz:run",
        f"{MODULE}:missing",
        f"{MODULE}:VALUE",
        "replay:",
        "http://x",
        "rm -rf /",
        "mod:",
    ],
)
def test_bad_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        load_arena(spec)


def test_a_spec_of_no_form_is_refused_naming_every_form_the_docs_list() -> None:
    with pytest.raises(ConfigError) as info:
        load_arena(" http://x ")
    assert str(info.value) == (
        "arena spec 'http://x' is not one of 'replay:DIR', 'package.module:function', "
        "'tradingagents:MODULE:OBJECT', 'hedgefund:MODULE:FUNCTION', "
        "'hedgefund2:MODULE:FUNCTION' or 'demo'"
    )
    runners = PIPELINE_DOC.read_text().split("## Arena runners", 1)[1].split("\n#", 1)[0]
    documented = re.findall(r"^\| `([^`]+)` \|", runners, re.MULTILINE)
    assert sorted(documented) == sorted(form.shape for form in FORMS)


async def test_demo_is_deterministic_and_unmistakable() -> None:
    a = await DemoArena().run("NVDA", "2026-05-11")
    assert a == await load_arena("demo").run("nvda", "2026-05-11")
    assert a != await DemoArena().run("NVDA", "2026-05-12")
    envelope = build_envelope_from_state(
        a, extra_meta=DEMO_META, ticker="NVDA", trade_date="2026-05-11"
    )
    assert envelope.arena_id.startswith("demo-") and envelope.meta["demo"] is True
    assert "DEMO" in envelope.decision.synthesis.reasoning


def test_demo_is_the_default_only_when_nothing_is_configured(
    monkeypatch: pytest.MonkeyPatch, replay_dir: Path
) -> None:
    assert load_arena().is_demo
    monkeypatch.setenv("TI_ARENA", f"replay:{replay_dir}")
    assert isinstance(load_arena(), ReplayArena)
    assert load_arena("demo").is_demo  # an explicit spec wins over the setting


def test_demo_refused_for_a_configured_server_unless_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    demo = DemoArena()
    ensure_demo_allowed(demo, TiSettings())  # embedded store: fine
    monkeypatch.setenv("TI_REDIS_URL", "redis://user:s3cret@prod.example:6379/0")
    with pytest.raises(DemoRefusedError) as info:
        ensure_demo_allowed(demo, TiSettings())
    message = str(info.value)
    assert "TI_ALLOW_DEMO_PUBLISH=1" in message and "TI_ARENA" in message
    assert "--" not in message  # the flags are the command's to add (flows.cli)
    assert "s3cret" not in message and "prod.example" in message
    ensure_demo_allowed(ReplayArena("/tmp"), TiSettings())  # only the demo is refused
    monkeypatch.setenv("TI_ALLOW_DEMO_PUBLISH", "1")
    ensure_demo_allowed(demo, TiSettings())


def test_ti_core_never_imports_prefect() -> None:
    code = (
        "import sys, ti_core.arenas.registry, ti_core.transport.connection; "
        "sys.exit('prefect' in sys.modules)"
    )
    assert os.spawnv(os.P_WAIT, sys.executable, [sys.executable, "-c", code]) == 0
