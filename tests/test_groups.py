"""The consumer-group reader against a real redis-server: ack, reclaim, dead letters."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from redis import exceptions as redis_errors

from tests.test_consume import envelope, invalid_payload, v2_payload
from ti_core import DEFAULT_STREAM_NAME, publish_many
from ti_core.consume.group_lag import group_lag
from ti_core.consume.groups import GroupReader, ensure_group
from ti_core.contract.keys import attempts_key, dead_letter_key
from ti_core.errors import PublishError

S = DEFAULT_STREAM_NAME
DLQ = dead_letter_key(S)

# Idempotent handler: the effect and the record of the applied entry id, in one atomic step.
APPLY = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

KILLED_CONSUMER = textwrap.dedent("""
    import asyncio, sys
    from ti_core.transport.connection import open_redis
    from ti_core.consume.groups import GroupReader

    APPLY = {apply!r}

    async def main():
        client = open_redis(sys.argv[1])
        async def handler(entry_id, env):
            await client.eval(APPLY, 2, "test:applied", "test:effects", entry_id)
            if env.decision.target.trade_date == "2026-05-12":
                await client.set("test:blocked", entry_id)
                await asyncio.sleep(3600)  # applied, never returns: never acknowledged
        await GroupReader(client, "engine", "c1", handler, start="0").run()

    asyncio.run(main())
""")


async def dead_letters(client: Any) -> list[dict[str, Any]]:
    return [{k.decode(): v for k, v in fields.items()} for _, fields in await client.xrange(DLQ)]


async def test_killed_consumer_entry_is_reclaimed_and_applied_once(
    real_redis: Any, redis_url: str, sample_states: Any, tmp_path: Path
):
    envs = [envelope(sample_states, trade_date=f"2026-05-{d:02d}") for d in range(11, 16)]
    ids = [r.entry_id for r in await publish_many(real_redis, envs)]
    script = tmp_path / "consumer.py"
    script.write_text(KILLED_CONSUMER.format(apply=APPLY))
    proc = subprocess.Popen([sys.executable, str(script), redis_url])
    try:
        deadline = time.monotonic() + 20
        while not await real_redis.get("test:blocked"):
            assert proc.poll() is None and time.monotonic() < deadline, "consumer never blocked"
            await asyncio.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    pending = await real_redis.xpending(S, "engine")
    assert pending["pending"] == 5  # read by c1 in one batch, none acknowledged

    async def handler(entry_id: str, env: Any) -> None:
        await real_redis.eval(APPLY, 2, "test:applied", "test:effects", entry_id)

    reader = GroupReader(real_redis, "engine", "c2", handler, claim_idle_ms=300)
    stats = await asyncio.wait_for(reader.drain(), 15)
    assert stats.reclaimed == 5 and stats.handled == 5
    effects = [e.decode() for e in await real_redis.lrange("test:effects", 0, -1)]
    assert effects == ids  # each applied exactly once, in order, the blocked one included
    assert (await real_redis.xpending(S, "engine"))["pending"] == 0
    assert await real_redis.xlen(DLQ) == 0


async def test_cancelled_before_ack_is_redelivered_to_the_restarted_consumer(
    real_redis: Any, sample_states: Any
):
    envs = [envelope(sample_states, trade_date=f"2026-05-{d:02d}") for d in range(11, 14)]
    ids = [r.entry_id for r in await publish_many(real_redis, envs)]
    seen: list[str] = []
    entered = asyncio.Event()

    async def stuck(entry_id: str, env: Any) -> None:
        seen.append(entry_id)
        if entry_id == ids[1]:
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(
        GroupReader(real_redis, "engine", "c1", stuck, start="0", block_ms=100).run()
    )
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = await real_redis.xpending_range(S, "engine", "-", "+", 10)
    assert [r["message_id"].decode() for r in rows] == ids[1:]  # first acked, rest pending

    handled: list[str] = []
    restarted = GroupReader(
        real_redis, "engine", "c1", lambda i, e: handled.append(i), claim_idle_ms=60_000
    )
    await asyncio.wait_for(restarted.drain(), 5)  # its own pending first, no idle wait
    assert handled == ids[1:]
    assert seen == ids[:2]


async def test_bad_entries_go_to_the_dead_letter_stream_with_reasons(
    real_redis: Any, sample_states: Any
):
    good = [envelope(sample_states, trade_date=d) for d in ("2026-05-11", "2026-05-12")]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"data": v2_payload(good[0])}, "unknown schema_version='2'"),
        ({"data": "not json"}, "malformed JSON"),
        ({"data": invalid_payload(good[0])}, "validation failed: decision.synthesis.confidence"),
        ({"data": b"\xff\xfe"}, "not UTF-8"),
        ({"other": "x"}, "no 'data' field"),
    ]
    ids = [(await publish_many(real_redis, good[:1]))[0].entry_id]
    bad_ids = [await real_redis.xadd(S, fields) for fields, _ in bad]
    ids.append((await publish_many(real_redis, good[1:]))[0].entry_id)
    handled: list[tuple[str, Any]] = []

    async def handler(entry_id: str, env: Any) -> None:
        handled.append((entry_id, env))

    reader = GroupReader(real_redis, "engine", "c1", handler, start="0")
    stats = await asyncio.wait_for(reader.drain(), 5)
    assert handled == list(zip(ids, good, strict=True))
    assert (stats.handled, stats.dead_lettered, stats.failed) == (2, 5, 0)
    letters = await dead_letters(real_redis)
    assert [d["entry_id"] for d in letters] == bad_ids
    for letter, (fields, reason) in zip(letters, bad, strict=True):
        assert reason in letter["reason"].decode()
        raw = fields.get("data", b"")
        assert letter["data"] == (raw if isinstance(raw, bytes) else raw.encode())
        assert letter["group"] == b"engine"
    report = await group_lag(real_redis)
    assert report["dead_letters"] == 5
    assert report["groups"][0] | {"last_delivered_id": None} == {
        "name": "engine",
        "consumers": 1,
        "pending": 0,
        "last_delivered_id": None,
        "entries_read": 7,
        "lag": 0,
        "lost": 0,
        "lost_recorded": 0,
        "lost_unknown_gaps": 0,
        "lost_since": None,
        "lost_last_at": None,
    }


async def test_handler_failing_goes_to_dead_letters_after_max_attempts(
    real_redis: Any, sample_states: Any
):
    envs = [envelope(sample_states, ticker=t) for t in ("AAPL", "BOOM", "MSFT", "NVDA")]
    ids = [r.entry_id for r in await publish_many(real_redis, envs)]
    calls: dict[str, int] = {}
    done: list[str] = []

    async def handler(entry_id: str, env: Any) -> None:
        calls[entry_id] = calls.get(entry_id, 0) + 1
        if env.decision.target.ticker == "BOOM":
            raise RuntimeError("strategy blew up")
        done.append(entry_id)

    reader = GroupReader(
        real_redis,
        "engine",
        "c1",
        handler,
        start="0",
        max_attempts=3,
        claim_idle_ms=50,
        block_ms=50,
    )
    stats = await asyncio.wait_for(reader.drain(), 10)
    assert done == [ids[0], ids[2], ids[3]]
    assert calls == {ids[0]: 1, ids[1]: 3, ids[2]: 1, ids[3]: 1}
    assert (stats.handled, stats.failed, stats.dead_lettered) == (3, 2, 1)
    (letter,) = await dead_letters(real_redis)
    assert letter["entry_id"] == ids[1].encode()
    assert letter["reason"] == b"handler failed 3 times; last: RuntimeError: strategy blew up"
    assert letter["attempts"] == b"3"
    assert (await real_redis.xpending(S, "engine"))["pending"] == 0


async def test_deliveries_do_not_count_against_an_entry_handler_attempts_do(
    real_redis: Any, sample_states: Any
):
    envs = [envelope(sample_states, ticker=t) for t in ("AAPL", "MSFT")]
    ids = [r.entry_id for r in await publish_many(real_redis, envs)]
    await ensure_group(real_redis, S, "engine", "0")
    await real_redis.xreadgroup("engine", "crashy", {S: ">"}, count=2)
    for _ in range(6):  # six "restarts" that died before reaching them: delivered 7 times
        await real_redis.xreadgroup("engine", "crashy", {S: "0"}, count=2)
    await real_redis.hset(attempts_key(S, "engine"), ids[0], 3)  # its handler ran 3 times
    await asyncio.sleep(0.05)
    handled: list[str] = []
    reader = GroupReader(
        real_redis, "engine", "c2", lambda i, e: handled.append(i), max_attempts=3, claim_idle_ms=20
    )
    await asyncio.wait_for(reader.drain(), 5)
    assert handled == ids[1:]  # delivered 7 times, never attempted: handled normally
    (letter,) = await dead_letters(real_redis)
    assert letter["entry_id"] == ids[0].encode()
    assert letter["reason"].startswith(b"handler failed or crashed 3 times")
    assert await real_redis.hgetall(attempts_key(S, "engine")) == {}


async def test_pending_entry_trimmed_away_is_recorded_as_lost(real_redis: Any, sample_states: Any):
    envs = [envelope(sample_states, ticker=t) for t in ("AAPL", "MSFT")]
    ids = [r.entry_id for r in await publish_many(real_redis, envs)]
    await ensure_group(real_redis, S, "engine", "0")
    await real_redis.xreadgroup("engine", "gone", {S: ">"}, count=2)
    await real_redis.xtrim(S, maxlen=0)
    await asyncio.sleep(0.03)
    handled: list[str] = []
    reader = GroupReader(
        real_redis, "engine", "c2", lambda i, e: handled.append(i), claim_idle_ms=10
    )
    await asyncio.wait_for(reader.drain(), 5)
    assert handled == []
    letters = await dead_letters(real_redis)
    assert [d["entry_id"] for d in letters] == [i.encode() for i in ids]
    assert all(b"trimmed" in d["reason"] for d in letters)


async def test_ensure_group_tolerates_only_busygroup(real_redis: Any):
    assert await ensure_group(real_redis, S, "engine") is True
    assert await ensure_group(real_redis, S, "engine") is False
    await real_redis.set("not-a-stream", "x")
    with pytest.raises(PublishError, match="WRONGTYPE") as refused:  # through the boundary
        await ensure_group(real_redis, "not-a-stream", "engine")
    assert "no group was created" in str(refused.value)
    assert isinstance(refused.value.__cause__, redis_errors.ResponseError)


async def test_group_lag_counts_undelivered_and_trimmed_entries(
    real_redis: Any, sample_states: Any
):
    assert (await group_lag(real_redis))["exists"] is False
    await ensure_group(real_redis, S, "engine", "$")
    await ensure_group(real_redis, S, "idle", "$")
    envs = [envelope(sample_states, ticker=t) for t in ("AAPL", "MSFT", "NVDA")]
    await publish_many(real_redis, envs)
    rows = {g["name"]: g for g in (await group_lag(real_redis))["groups"]}
    assert (rows["engine"]["lag"], rows["engine"]["pending"], rows["engine"]["lost"]) == (3, 0, 0)
    await real_redis.xreadgroup("engine", "c1", {S: ">"}, count=2)
    rows = {g["name"]: g for g in (await group_lag(real_redis))["groups"]}
    assert (rows["engine"]["lag"], rows["engine"]["pending"]) == (1, 2)
    assert rows["engine"]["entries_read"] == 2
    await real_redis.xtrim(S, maxlen=1, approximate=False)  # the publisher's trim, too short
    report = await group_lag(real_redis)
    rows = {g["name"]: g for g in report["groups"]}
    assert report["removed"] == 2
    assert rows["engine"]["lost"] == 0  # it had read both trimmed entries (one still pending)
    assert rows["idle"]["lost"] == 2  # Redis's own lag (1) leaves these out


def test_reader_rejects_missing_names() -> None:
    from ti_core.errors import InvalidStateError

    with pytest.raises(InvalidStateError):
        GroupReader(object(), "", "c1", lambda i, e: None)
    assert os.environ.get("TI_REDIS_URL") is None  # the fixtures keep TI_* out of tests
