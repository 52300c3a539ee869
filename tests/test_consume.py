"""get_decision, tail and replay_range against a real redis-server."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from typing import Any

import pytest

from ti_core import DEFAULT_STREAM_NAME, build_envelope_from_state, publish_many
from ti_core.consume.reader import get_decision, read_batch, replay_range, tail
from ti_core.contract.keys import decision_hash_key
from ti_core.errors import InvalidStateError
from ti_core.settings import TiSettings
from ti_core.transport.connection import open_redis

S = DEFAULT_STREAM_NAME


def envelope(
    states: dict[str, Any],
    ticker: str = "NVDA",
    trade_date: str = "2026-05-11",
    verdict: str = "BUY",
) -> Any:
    state = copy.deepcopy(states["nvda-2026-05-11-full"])
    state["target"].update(ticker=ticker, trade_date=trade_date)
    state["synthesis_verdict"] = verdict
    return build_envelope_from_state(state)


def v2_payload(env: Any) -> str:
    body = json.loads(env.model_dump_json())
    body["schema_version"] = "2"
    return json.dumps(body)


def invalid_payload(env: Any) -> str:
    body = json.loads(env.model_dump_json())
    body["decision"]["synthesis"]["confidence"] = 7
    return json.dumps(body)


async def wait_blocked(client: Any, command: str, timeout: float = 5.0) -> None:
    """Wait until some connection is blocked in ``command`` (so '$' has been resolved)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if any(c.get("cmd") == command for c in await client.client_list()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"nobody blocked in {command}")


async def test_get_decision_returns_the_whole_envelope(real_redis: Any, sample_states: Any):
    env = envelope(sample_states)
    await publish_many(real_redis, [env])
    got = await get_decision(real_redis, "nvda", "2026-05-11")
    assert got == env
    assert got is not None and got.decision.synthesis.verdict == "BUY"
    assert await get_decision(real_redis, "NVDA", "2026-05-12") is None


async def test_get_decision_unreadable_hash_is_none_with_warning(
    real_redis: Any, sample_states: Any, caplog: pytest.LogCaptureFixture
):
    env = envelope(sample_states)
    await real_redis.hset(decision_hash_key("NVDA", "2026-05-11"), "json", v2_payload(env))
    with caplog.at_level(logging.WARNING):
        assert await get_decision(real_redis, "NVDA", "2026-05-11") is None
    assert "schema_version" in caplog.text


async def test_tail_skips_bad_entries_and_keeps_going(
    real_redis: Any, sample_states: Any, caplog: pytest.LogCaptureFixture
):
    old = envelope(sample_states, trade_date="2026-05-08")
    await publish_many(real_redis, [old])  # before the tail starts: "$" must not show it
    good = [envelope(sample_states, trade_date=d) for d in ("2026-05-11", "2026-05-12")]
    agen = tail(real_redis, start="$", block_ms=200, count=2)
    first = asyncio.create_task(agen.__anext__())
    await wait_blocked(real_redis, "xread")
    ids = [r.entry_id for r in await publish_many(real_redis, good[:1])]
    for bad in (v2_payload(good[0]), "not json", invalid_payload(good[0]), b"\xff\xfe"):
        await real_redis.xadd(S, {"data": bad})
    await real_redis.xadd(S, {"other": "field"})
    ids += [r.entry_id for r in await publish_many(real_redis, good[1:])]
    with caplog.at_level(logging.WARNING):
        got = [await asyncio.wait_for(first, 5)]
        got.append(await asyncio.wait_for(agen.__anext__(), 5))
    await agen.aclose()
    assert [(i, e) for i, e in got] == list(zip(ids, good, strict=True))
    for reason in (
        "schema_version",
        "malformed JSON",
        "validation failed",
        "not UTF-8",
        "no 'data' field",
    ):
        assert reason in caplog.text


async def test_tail_dollar_misses_nothing_published_between_reads(
    real_redis: Any, sample_states: Any
):
    envs = [envelope(sample_states, trade_date=f"2026-05-{d:02d}") for d in range(11, 16)]
    agen = tail(real_redis, start="$", block_ms=50, count=1)
    first = asyncio.create_task(agen.__anext__())
    await wait_blocked(real_redis, "xread")
    await asyncio.sleep(0.2)  # several empty reads go by; "$" must not be re-resolved
    ids = [r.entry_id for r in await publish_many(real_redis, envs[:1])]
    got = [(await asyncio.wait_for(first, 5))[0]]
    ids += [r.entry_id for r in await publish_many(real_redis, envs[1:])]  # consumer is idle
    for _ in envs[1:]:
        got.append((await asyncio.wait_for(agen.__anext__(), 5))[0])
    await agen.aclose()
    assert got == ids


async def test_tail_from_zero_replays_history(real_redis: Any, sample_states: Any):
    envs = [envelope(sample_states, ticker=t) for t in ("NVDA", "AAPL", "MSFT")]
    results = await publish_many(real_redis, envs[:2])
    await real_redis.xadd(S, {"data": "[]"})
    results += await publish_many(real_redis, envs[2:])
    agen = tail(real_redis, start="0", block_ms=100)
    got = [await asyncio.wait_for(agen.__anext__(), 5) for _ in envs]
    await agen.aclose()
    assert [i for i, _ in got] == [r.entry_id for r in results]
    assert [e.decision.target.ticker for _, e in got] == ["NVDA", "AAPL", "MSFT"]


async def test_replay_range_returns_exactly_the_range(real_redis: Any, sample_states: Any):
    days = [f"2026-05-{d:02d}" for d in range(6, 16)]
    envs = [
        envelope(sample_states, ticker=t, trade_date=d)
        for d in reversed(days)
        for t in ("NVDA", "AAPL")
    ]
    results = await publish_many(real_redis, envs[:7])
    await real_redis.xadd(S, {"data": "not json"})
    results += await publish_many(real_redis, envs[7:])
    wanted = {"2026-05-11", "2026-05-12", "2026-05-13"}
    expected = [
        (r.entry_id, e)
        for r, e in zip(results, envs, strict=True)
        if e.decision.target.trade_date in wanted
    ]
    got = [x async for x in replay_range(real_redis, "2026-05-11", "2026-05-13", page=3)]
    assert got == expected and len(got) == 6
    only = [
        e.decision.target.ticker
        async for _, e in replay_range(real_redis, "2026-05-11", "2026-05-13", tickers=["aapl"])
    ]
    assert only == ["AAPL"] * 3
    with pytest.raises(InvalidStateError):
        _ = [x async for x in replay_range(real_redis, "2026-05-13", "2026-05-11")]


async def test_blocking_read_longer_than_socket_timeout_returns_empty(redis_url: str):
    # redis-py applies the socket timeout to blocking reads: the block must be capped below it.
    client = open_redis(redis_url, TiSettings(socket_timeout=0.5, retries=0))
    try:
        after, entries = await read_batch(client, after="0-0", block_ms=3000)
    finally:
        await client.aclose()
    assert (after, entries) == ("0-0", [])
