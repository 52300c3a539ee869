"""Issue 22 against a real redis-server: a group reader's time is bounded, and two live
readers never handle one entry twice.

A handler that never returns used to stall the whole group (the next consumer reclaimed the
entry and hung too; the stop event was ignored); two healthy readers following the
``claim_idle_ms`` advice handled half the entries twice, because an entry waits idle in a
consumer's batch for ``count`` x handler time and was reclaimed meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from tests.publish_workload import many_envelopes
from ti_core import DEFAULT_STREAM_NAME, publish_many
from ti_core.consume.groups import GroupReader
from ti_core.contract.keys import attempts_key, dead_letter_key

S = DEFAULT_STREAM_NAME
GUARD = 30  # seconds: a hang guard, never a timing assertion


async def publish(client: Any, count: int) -> list[str]:
    return [r.entry_id for r in await publish_many(client, many_envelopes(count))]


def hanging(on: str, kind: str, entered: asyncio.Event, release: threading.Event) -> Any:
    """A handler that never returns on entry ``on`` (a thread's: not for 10 s, so that the
    old code, which blocked the event loop, ends at all), and returns at once on others."""
    loop = asyncio.get_running_loop()

    async def coroutine(entry_id: str, _env: Any) -> None:
        if entry_id == on:
            entered.set()
            await asyncio.sleep(3600)

    def function(entry_id: str, _env: Any) -> None:
        if entry_id == on:
            loop.call_soon_threadsafe(entered.set)
            release.wait(10)

    return coroutine if kind == "async" else function


@pytest.mark.slow  # waits out two handler timeouts
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_handler_that_never_returns_times_out_counts_and_is_dead_lettered(
    real_redis: Any, kind: str
) -> None:
    ids = await publish(real_redis, 3)
    release = threading.Event()
    handler = hanging(ids[1], kind, asyncio.Event(), release)
    reader = GroupReader(
        real_redis,
        "engine",
        "c1",
        handler,
        start="0",
        max_attempts=2,
        claim_idle_ms=100,
        handler_timeout=0.5,
    )
    try:
        stats = await asyncio.wait_for(reader.drain(), GUARD)
    finally:
        release.set()
    assert (stats.handled, stats.dead_lettered) == (2, 1)
    ((_, letter),) = await real_redis.xrange(dead_letter_key(S))
    assert letter[b"entry_id"].decode() == ids[1]
    assert b"handler failed 2 times; last: handler did not return within 0.5 s" in letter[b"reason"]
    if kind == "sync":
        assert b"threads cannot be killed" in letter[b"reason"]
    assert (await real_redis.xpending(S, "engine"))["pending"] == 0


@pytest.mark.slow  # waits out the stop's grace (block_ms)
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_stop_is_honoured_while_a_handler_hangs(real_redis: Any, kind: str) -> None:
    ids = await publish(real_redis, 2)
    entered, release, stop = asyncio.Event(), threading.Event(), asyncio.Event()
    handler = hanging(ids[0], kind, entered, release)
    reader = GroupReader(real_redis, "engine", "c1", handler, start="0", block_ms=200)
    running = asyncio.create_task(reader.run(stop=stop))
    try:
        await asyncio.wait_for(entered.wait(), GUARD)
        stop.set()
        stats = await asyncio.wait_for(running, GUARD)
        pending = await real_redis.xpending_range(S, "engine", "-", "+", 10)
    finally:
        release.set()
        running.cancel()
    assert stats.total == 0
    assert [(p["message_id"].decode(), p["consumer"].decode()) for p in pending] == [
        (ids[0], "c1"),
        (ids[1], "c1"),
    ]  # left pending for a restart, the hung one uncharged
    assert await real_redis.hgetall(attempts_key(S, "engine")) == {}


@pytest.mark.parametrize(
    ("entries", "count", "handler_seconds", "claim_idle_ms", "kind"),
    [
        # the case, scaled down: the batch takes 2.5x claim_idle_ms to handle
        (40, 100, 0.05, 800, "async"),
        pytest.param(40, 100, 0.05, 800, "sync", marks=pytest.mark.slow),
        # each handler call alone outlasts claim_idle_ms
        pytest.param(3, 3, 1.0, 400, "async", marks=pytest.mark.slow),
    ],
)
async def test_two_live_readers_with_slow_handlers_never_handle_an_entry_twice(
    real_redis: Any,
    entries: int,
    count: int,
    handler_seconds: float,
    claim_idle_ms: int,
    kind: str,
) -> None:
    ids = await publish(real_redis, entries)
    handled: list[str] = []

    async def slow_coroutine(entry_id: str, _env: Any) -> None:
        handled.append(entry_id)
        await asyncio.sleep(handler_seconds)

    def slow_function(entry_id: str, _env: Any) -> None:
        handled.append(entry_id)
        time.sleep(handler_seconds)

    stop = asyncio.Event()
    readers = [
        GroupReader(
            real_redis,
            "engine",
            name,
            slow_coroutine if kind == "async" else slow_function,
            start="0",
            count=count,
            claim_idle_ms=claim_idle_ms,
            block_ms=50,
        )
        for name in ("c1", "c2")
    ]
    running = [asyncio.create_task(r.run(stop=stop)) for r in readers]
    try:
        async with asyncio.timeout(GUARD):
            while set(handled) != set(ids) or (await real_redis.xpending(S, "engine"))["pending"]:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*running)
    twice = sorted({i for i in handled if handled.count(i) > 1})
    assert not twice, f"{len(twice)} of {entries} entries handled twice"
    assert len(handled) == entries
