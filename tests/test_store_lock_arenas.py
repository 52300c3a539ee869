"""The embedded store's writers' lock is held while a backfill batch reads or writes the store,
never across its arena runs (issue 22, finding 6): a slow arena no longer keeps every other
``ti`` command waiting for the lock."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import flows.backfill
from flows.backfill import backfill_batch_task
from ti_core.arenas.demo import DemoArena
from ti_core.contract.keys import decision_hash_key
from ti_core.settings import TiSettings
from ti_core.store.embedded import embedded_store_path
from ti_core.transport.connection import connect

# Another process: "busy" (rc 3) if the writers' lock is taken, else it publishes AAPL.
OTHER_WRITER = """
import asyncio, fcntl, os, sys
from ti_core.arenas.demo import DemoArena
from ti_core.backfill.runner import run_items
from ti_core.backfill.status import Item
from ti_core.settings import TiSettings
from ti_core.store.embedded import embedded_store_path
from ti_core.transport.connection import connect

lock = embedded_store_path(TiSettings()).with_suffix(".lock")
fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("busy")
    sys.exit(3)
fcntl.flock(fd, fcntl.LOCK_UN)
os.close(fd)
(outcome,) = asyncio.run(run_items(lambda: connect(), DemoArena(), [Item("AAPL", "2026-04-01")]))
print(outcome.status)
"""


def _lock_is_free(path: Path) -> bool:
    """Whether another holder could take the writers' lock now (a separate open file
    description conflicts with this process's own lock too)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing the description releases a lock taken through it
    return True


class _CheckingArena(DemoArena):
    """The demo arena, noting whether the store's lock was free while it ran."""

    def __init__(self) -> None:
        self.lock_free_during_run: list[bool] = []

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]:
        lock = embedded_store_path(TiSettings()).with_suffix(".lock")
        self.lock_free_during_run.append(_lock_is_free(lock))
        return await super().run(ticker, trade_date)


def _use_arena(monkeypatch: pytest.MonkeyPatch, arena: DemoArena) -> None:
    """The backfill batch task runs ``arena`` (whatever spec it is given)."""
    monkeypatch.setattr(flows.backfill, "load_arena", lambda spec, settings: arena)


async def test_a_backfill_batch_does_not_hold_the_store_lock_while_its_arena_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arena = _CheckingArena()
    _use_arena(monkeypatch, arena)
    pairs = [("NVDA", "2026-04-01"), ("MSFT", "2026-04-01")]
    report = await backfill_batch_task.fn(pairs, 1, concurrency=1)
    assert [o.status for o in report.outcomes] == ["published", "published"]
    assert arena.lock_free_during_run == [True, True]
    async with connect(readonly=True) as client:
        assert await client.exists(decision_hash_key("NVDA", "2026-04-01")) == 1


class _SlowArena(DemoArena):
    """An arena that takes as long as another process's publish: it waits for it."""

    def __init__(self) -> None:
        self.other: subprocess.CompletedProcess[str] | None = None

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]:
        self.other = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", OTHER_WRITER],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
        )
        return await super().run(ticker, trade_date)


@pytest.mark.slow  # a child process
async def test_another_process_publishes_while_a_backfill_arena_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arena = _SlowArena()
    _use_arena(monkeypatch, arena)
    report = await backfill_batch_task.fn([("NVDA", "2026-04-01")], 1)
    assert arena.other is not None
    assert (arena.other.returncode, arena.other.stdout.split()) == (0, ["published"]), (
        arena.other.stderr[-2000:]
    )
    assert [o.status for o in report.outcomes] == ["published"]
    async with connect(readonly=True) as client:  # both saved: neither save lost the other's
        for ticker in ("NVDA", "AAPL"):
            assert await client.exists(decision_hash_key(ticker, "2026-04-01")) == 1
