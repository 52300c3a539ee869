"""Replay directories for backfill tests and the benchmark: ``DIR/{TICKER}/{DATE}.json``.

Each state is one of the sample states re-targeted at its (ticker, date), with its own arena
id, so every decision differs and the builder accepts it for that pair.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "PREFECT_SOCKETS",
    "assert_exactly_once",
    "prefect_sockets_collected",
    "replay_state",
    "sample_templates",
    "write_replay_dir",
]

# Prefect's own API clients leave sockets to its test server unclosed when a test's event loop
# ends (a trivial flow does it too). They are Prefect's, not ours: tests that run flows collect
# them before they finish, under this filter, so they cannot fail a later, unrelated test.
PREFECT_SOCKETS = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
def prefect_sockets_collected() -> Iterator[None]:
    """Garbage-collect after the test, so Prefect's leftover sockets are reported here."""
    yield
    gc.collect()


DATA = Path(__file__).parent / "data"


def sample_templates(with_verdict: bool = True) -> list[dict[str, Any]]:
    """The sample arena states: full and degraded (the ones with a verdict), and, unless
    ``with_verdict``, the partial one too (no verdict: not published by default)."""
    states = [json.loads(p.read_text()) for p in sorted(DATA.glob("*-20??-??-??-*.json"))]
    return [s for s in states if not with_verdict or s.get("synthesis_verdict") or s.get("signal")]


def replay_state(template: Mapping[str, Any], ticker: str, day: str, n: int) -> dict[str, Any]:
    """``template`` re-targeted at (ticker, day); ``n`` varies its arena id and score."""
    state = json.loads(json.dumps(template))
    target = dict(state.get("target") or {})
    target["ticker"] = ticker
    if "trade_date" in target:
        target["trade_date"] = day
    else:
        target["date"] = day
    state["target"] = target
    state["arena_id"] = f"ti-{day}-{ticker.lower().replace('.', '')}-{n:05x}"
    if "synthesis_score" in state:
        state["synthesis_score"] = round(((n * 37) % 200 - 100) / 100, 2)
    return state


def write_replay_dir(
    root: Path,
    tickers: Sequence[str],
    sessions: Iterable[str],
    templates: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write one state per (ticker, session) under ``root``; returns ``root``."""
    templates = templates or sample_templates()
    n = 0
    for day in sessions:
        for ticker in tickers:
            folder = root / ticker
            folder.mkdir(parents=True, exist_ok=True)
            state = replay_state(templates[n % len(templates)], ticker, day, n)
            (folder / f"{day}.json").write_text(json.dumps(state))
            n += 1
    return root


def assert_exactly_once(url: str, pairs: Iterable[tuple[str, str]]) -> None:
    """Every (ticker, date) of ``pairs`` is on the stream exactly once (and nothing else is),
    and its lookup hash names that entry and holds the same envelope."""
    import redis

    from ti_core.contract.keys import DEFAULT_STREAM_NAME, decision_hash_key

    expected = set(pairs)
    with redis.Redis.from_url(url, decode_responses=True) as client:
        entries = client.xrange(DEFAULT_STREAM_NAME)
        seen: dict[tuple[str, str], tuple[str, str]] = {}
        for entry_id, fields in entries:
            target = json.loads(fields["data"])["decision"]["target"]
            pair = (target["ticker"], target["trade_date"])
            assert pair not in seen, f"{pair} appended twice: {seen[pair][0]} and {entry_id}"
            seen[pair] = (entry_id, fields["data"])
        assert set(seen) == expected, (
            f"missing {sorted(expected - set(seen))[:5]}, extra {sorted(set(seen) - expected)[:5]}"
        )
        for (ticker, day), (entry_id, data) in seen.items():
            record = client.hgetall(decision_hash_key(ticker, day))
            assert record.get("entry_id") == entry_id, (ticker, day, record.get("entry_id"))
            assert record.get("json") == data
