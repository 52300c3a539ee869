"""An arena that never returns is bounded by ``TI_ARENA_TIMEOUT``: on the core path
(``run_bounded``, the backfill runner) an async arena is cancelled, a sync one's thread is
abandoned without holding up the event loop's shutdown, and the item fails alone, once."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.backfill_replay import write_replay_dir
from ti_core.arenas.runner import CallableArena, run_bounded
from ti_core.backfill.runner import run_items
from ti_core.backfill.status import Item, classify
from ti_core.errors import ArenaTimeoutError, ArenaTransientError, is_retryable
from ti_core.settings import TiSettings
from ti_core.transport.retry import RetryPolicy

DAY = "2026-04-01"
FAST_RETRY = RetryPolicy(retries=3, delay=0.01)


def test_the_setting_defaults_to_900_seconds_and_0_means_no_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert TiSettings().arena_timeout == 900.0
    monkeypatch.setenv("TI_ARENA_TIMEOUT", "0")
    assert TiSettings().arena_timeout == 0.0


async def test_an_async_arena_that_never_returns_is_cancelled_at_the_limit() -> None:
    cancelled = asyncio.Event()

    async def hang(ticker: str, day: str) -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    runner = CallableArena("tests:hang", hang)
    with pytest.raises(ArenaTimeoutError) as caught:
        await run_bounded(runner, "NVDA", DAY, 0.2)
    assert str(caught.value).startswith("arena tests:hang did not return within 0.2 s for NVDA")
    assert cancelled.is_set()
    assert not is_retryable(caught.value)


async def test_an_arenas_own_timeout_is_still_its_transient_failure() -> None:
    async def slow_upstream(ticker: str, day: str) -> dict[str, Any]:
        raise TimeoutError("upstream LLM timed out")

    with pytest.raises(ArenaTransientError) as caught:
        await run_bounded(CallableArena("tests:slow", slow_upstream), "NVDA", DAY, 30)
    assert not isinstance(caught.value, ArenaTimeoutError)


def test_a_sync_arena_thread_is_abandoned_and_does_not_hold_up_the_loops_shutdown() -> None:
    release = threading.Event()
    started = threading.Event()

    def hang(ticker: str, day: str) -> dict[str, Any]:
        started.set()
        release.wait()
        return {}

    runner = CallableArena("tests:hang_sync", hang)
    finished: list[BaseException] = []

    def command() -> None:  # what a `ti` command does: asyncio.run, then exit
        try:
            asyncio.run(run_bounded(runner, "NVDA", DAY, 0.2))
        except BaseException as exc:
            finished.append(exc)

    main = threading.Thread(target=command, daemon=True)
    main.start()
    main.join(60)  # a pool thread (asyncio.to_thread) would be joined by asyncio.run: forever
    try:
        assert not main.is_alive(), "asyncio.run waited for the hung arena's thread"
        assert started.is_set() and isinstance(finished[0], ArenaTimeoutError)
        hung = [t for t in threading.enumerate() if t.name.startswith("arena-")]
        assert hung and all(t.daemon for t in hung)  # the interpreter's exit won't wait either
    finally:
        release.set()


async def test_backfill_fails_only_the_hung_item_once_and_publishes_the_others(
    fake_redis: Any, tmp_path: Path
) -> None:
    replay = write_replay_dir(tmp_path / "replay", ["NVDA", "AAPL", "MSFT"], [DAY])
    calls: dict[str, int] = {}

    async def arena(ticker: str, day: str) -> dict[str, Any]:
        calls[ticker] = calls.get(ticker, 0) + 1
        if ticker == "AAPL":
            await asyncio.Event().wait()
        return dict(json.loads((replay / ticker / f"{day}.json").read_text()))

    runner = CallableArena("tests:arena", arena)
    items = [Item(t, DAY) for t in ("NVDA", "AAPL", "MSFT")]
    outcomes = await run_items(
        fake_redis, runner, items, retry=FAST_RETRY, arena_timeout=0.3, concurrency=3
    )
    assert [o.status for o in outcomes] == ["published", "failed", "published"]
    assert "did not return within 0.3 s for AAPL 2026-04-01" in (outcomes[1].error or "")
    assert calls == {"NVDA": 1, "AAPL": 1, "MSFT": 1}  # a timeout is not retried
    found = await classify(fake_redis, items)
    assert [f.state for f in found] == ["published", "failed", "published"]
