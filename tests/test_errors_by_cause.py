"""Errors by cause, bookkeeping that never fails a published run, honest run summaries,
look-alike tickers and demo marks: against real redis-servers (a replica for READONLY).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.publish_workload import envelope
from tests.redisproc import RedisProcess, free_port
from ti_core import DEFAULT_STREAM_NAME, PublishError, RedisUnavailableError, publish_many
from ti_core.arenas.registry import load_arena
from ti_core.backfill.runner import plan_items, run_items
from ti_core.backfill.status import Item
from ti_core.build.builder import build_envelope_from_state
from ti_core.contract.keys import decision_hash_key, failure_key, normalize_ticker
from ti_core.errors import InvalidStateError
from ti_core.transport.connection import open_redis
from ti_core.transport.retry import redis_policy

pytestmark = pytest.mark.redis_server

S = DEFAULT_STREAM_NAME


async def test_wrongtype_on_a_decision_hash_says_what_was_not_written(real_redis: Any) -> None:
    await real_redis.set(decision_hash_key("NVDA", "2026-05-11"), "not a hash")
    with pytest.raises(PublishError) as caught:
        await publish_many(real_redis, [envelope("AAPL"), envelope("NVDA")])
    text = str(caught.value)
    assert "wrong type" in text and "failing envelope was not written" in text
    assert not isinstance(caught.value, RedisUnavailableError)
    assert await real_redis.xlen(S) == 1  # AAPL whole; NVDA nothing
    assert await real_redis.exists(decision_hash_key("AAPL", "2026-05-11"))


@pytest.fixture
def replica(tmp_path: Any) -> Iterator[RedisProcess]:
    proc = RedisProcess(
        tmp_path / "replica",
        "--replicaof",
        "127.0.0.1",
        str(free_port()),
        "--replica-serve-stale-data",
        "yes",
    ).start()
    yield proc
    proc.stop()


async def test_a_read_only_replica_is_retryable_and_nothing_is_written(
    replica: RedisProcess,
) -> None:
    client = open_redis(replica.url)
    try:
        with pytest.raises(RedisUnavailableError) as caught:
            await publish_many(client, [envelope()])
    finally:
        await client.aclose()
    text = str(caught.value)
    assert "read-only replica" in text and "was not written" in text
    with replica.sync_client() as check:
        assert check.dbsize() == 0


async def test_bookkeeping_failure_never_fails_a_published_backfill(
    real_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await real_redis.set(failure_key(S), "a string where the failure hash should be")
    items = list(plan_items(["NVDA", "AAPL"], ["2026-05-11", "2026-05-12"]))
    outcomes = await run_items(real_redis, load_arena("demo"), items, redis=redis_policy(1.0))
    assert [o.status for o in outcomes] == ["published"] * 4
    assert await real_redis.xlen(S) == 4
    assert "failure records of 4 items not updated" in caplog.text
    assert "WRONGTYPE" in caplog.text


async def test_concurrent_backfills_count_only_what_each_appended(redis_url: str) -> None:
    """Two backfills over the same items at once: every item appended once, and the two
    summaries add up to exactly what is on the stream (an identical decision the other run
    appended is ``unchanged``, however recent its entry)."""
    days = [f"2026-04-{d:02d}" for d in range(1, 31)]
    tickers = [f"T{i}" for i in range(10)]
    items = list(plan_items(tickers, days))
    clients = [open_redis(redis_url), open_redis(redis_url)]
    try:
        runs = await asyncio.gather(
            *(_batches(c, items, size) for c, size in zip(clients, (37, 23), strict=True))
        )
        on_stream = await clients[0].xlen(S)
        entries = await clients[0].xrange(S)
    finally:
        for c in clients:
            await c.aclose()
    assert on_stream == len(items) == 300
    published = [sum(o.status == "published" for o in run) for run in runs]
    assert sum(published) == on_stream, published
    assert all(o.status in ("published", "unchanged") for run in runs for o in run)
    metas = [json.loads(fields[b"data"])["meta"] for _, fields in entries]
    assert all(m.get("demo") is True for m in metas)  # backfill --arena demo marks its decisions


async def _batches(client: Any, items: list[Item], size: int) -> list[Any]:
    runner = load_arena("demo")
    out: list[Any] = []
    for start in range(0, len(items), size):
        out += await run_items(client, runner, items[start : start + size], concurrency=2)
    return out


@pytest.mark.parametrize("look_alike", ["ſpy", "ıbm", "NVDÅ", "ＮＶＤＡ", "SPY\u200b", "K\u212a"])
def test_non_ascii_tickers_are_refused_before_case_mapping(look_alike: str) -> None:
    with pytest.raises(InvalidStateError, match="non-ASCII"):
        normalize_ticker(look_alike)
    state = {"target": {"ticker": look_alike, "trade_date": "2026-05-11"}}
    with pytest.raises(InvalidStateError, match="non-ASCII"):
        build_envelope_from_state(state)


def test_ti_get_with_a_look_alike_ticker_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    assert main(["get", "ſpy", "2026-05-11"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ti: ") and "non-ASCII" in err
