"""Consumers under faults, on real redis-server processes: poison entries that kill the process,
handlers whose consumer is broken, groups that vanish, and entries trimmed before a group read
them. (``ti tail`` under a closed pipe and a Redis restart: tests/test_cli_faults.py.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_consume import envelope
from ti_core import DEFAULT_STREAM_NAME, publish_many
from ti_core.consume.group_lag import group_lag
from ti_core.consume.groups import ConsumerBrokenError, GroupReader
from ti_core.contract.keys import attempts_key, dead_letter_key, group_lost_key

S = DEFAULT_STREAM_NAME
DLQ = dead_letter_key(S)

# A consumer process whose handler kills the process (os._exit: no exception, no cleanup) on
# one ticker. Every call is counted in test:calls; effects are applied idempotently.
POISONED_CONSUMER = textwrap.dedent('''
    import asyncio, os, sys
    from ti_core.transport.connection import open_redis
    from ti_core.consume.groups import GroupReader

    APPLY = """
    if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[2], ARGV[1]) end
    """

    async def main():
        client = open_redis(sys.argv[1])
        async def handler(entry_id, env):
            await client.hincrby("test:calls", entry_id, 1)
            if env.decision.target.ticker == "POISON":
                os._exit(17)
            await client.eval(APPLY, 2, "test:applied", "test:effects", entry_id)
        await GroupReader(client, "engine", sys.argv[2], handler, start="0",
                          claim_idle_ms=200).drain()
        await client.aclose()

    asyncio.run(main())
''')


@pytest.mark.slow
async def test_poison_entry_that_kills_the_process_is_the_only_dead_letter(
    real_redis: Any, redis_url: str, sample_states: Any, tmp_path: Path
) -> None:
    tickers = [f"T{i:03d}" for i in range(100)]
    tickers[9] = "POISON"
    ids = [
        r.entry_id
        for r in await publish_many(
            real_redis, [envelope(sample_states, ticker=t) for t in tickers]
        )
    ]
    script = tmp_path / "consumer.py"
    script.write_text(POISONED_CONSUMER)
    codes = []
    for restart in range(12):  # a new consumer name each time: the dead one's entries are
        proc = subprocess.run(  # reclaimed with XAUTOCLAIM, a whole batch at once
            [sys.executable, str(script), redis_url, f"c{restart}"],
            timeout=60,
            capture_output=True,
            text=True,
        )
        codes.append(proc.returncode)
        assert proc.returncode in (0, 17), proc.stderr[-2000:]
        if proc.returncode == 0:
            break
    assert codes == [17] * 6 + [0]  # the first crash (in a new batch) is charged to no entry
    letters = await real_redis.xrange(DLQ)
    assert [f[b"entry_id"].decode() for _, f in letters] == [ids[9]]
    assert letters[0][1][b"attempts"] == b"5"
    assert b"crashed 5 times" in letters[0][1][b"reason"]
    good = ids[:9] + ids[10:]
    assert [e.decode() for e in await real_redis.lrange("test:effects", 0, -1)] == good
    calls = {k.decode(): int(v) for k, v in (await real_redis.hgetall("test:calls")).items()}
    assert calls[ids[9]] == 6  # max_attempts + the uncounted first crash
    assert {calls[i] for i in ids[10:]} == {1}  # after the poison: handled exactly once
    # its batch, unacknowledged at the crash, unless a refresh of the held batch (every
    # claim_idle_ms / 4: a slow machine) acknowledged some first
    assert {calls[i] for i in ids[:9]} <= {1, 2}
    assert (await real_redis.xpending(S, "engine"))["pending"] == 0
    assert await real_redis.hgetall(attempts_key(S, "engine")) == {}


@pytest.mark.parametrize(
    "broken",
    [ConsumerBrokenError("gateway refused us"), BrokenPipeError(32, "Broken pipe"), MemoryError()],
)
async def test_a_broken_consumer_stops_and_leaves_the_entry_pending_uncharged(
    real_redis: Any, sample_states: Any, broken: BaseException
) -> None:
    ids = [
        r.entry_id
        for r in await publish_many(
            real_redis, [envelope(sample_states, ticker=t) for t in ("AAPL", "MSFT", "NVDA")]
        )
    ]
    seen: list[str] = []

    def handler(entry_id: str, env: Any) -> None:
        seen.append(entry_id)
        if entry_id == ids[1]:
            raise broken

    reader = GroupReader(real_redis, "engine", "c1", handler, start="0", max_attempts=1)
    for _ in range(3):  # new, then (restarted) redelivered: never charged, never dead-lettered
        with pytest.raises(type(broken)):
            await asyncio.wait_for(reader.step(block=False), 5)
        reader = GroupReader(real_redis, "engine", "c1", handler, max_attempts=1)
    assert seen == [ids[0], ids[1], ids[1], ids[1]]
    rows = await real_redis.xpending_range(S, "engine", "-", "+", 10)
    assert [r["message_id"].decode() for r in rows] == ids[1:]
    assert await real_redis.xlen(DLQ) == 0
    attempts = await real_redis.hget(attempts_key(S, "engine"), ids[1])
    assert attempts in (None, b"0")

    handled: list[str] = []
    reader = GroupReader(real_redis, "engine", "c1", lambda i, e: handled.append(i), max_attempts=1)
    await asyncio.wait_for(reader.drain(), 5)
    assert handled == ids[1:]


async def test_lost_connection_in_the_handler_pauses_run_and_retries_the_entry(
    real_redis: Any, sample_states: Any
) -> None:
    ids = [
        r.entry_id
        for r in await publish_many(
            real_redis, [envelope(sample_states, ticker=t) for t in ("AAPL", "MSFT")]
        )
    ]
    calls: list[str] = []
    stop = asyncio.Event()

    def handler(entry_id: str, env: Any) -> None:
        calls.append(entry_id)
        if entry_id == ids[0] and calls.count(entry_id) < 3:
            raise ConnectionResetError("order gateway reset the connection")
        if entry_id == ids[1]:
            stop.set()

    reader = GroupReader(
        real_redis, "engine", "c1", handler, start="0", max_attempts=1, block_ms=50
    )
    await asyncio.wait_for(reader.run(stop=stop), 20)
    assert calls == [ids[0], ids[0], ids[0], ids[1]]  # paused twice, never dead-lettered
    assert await real_redis.xlen(DLQ) == 0
    assert (await real_redis.xpending(S, "engine"))["pending"] == 0


@pytest.mark.parametrize("how", ["destroy", "restore"])
async def test_a_recreated_group_gets_no_old_entry(
    real_redis: Any, sample_states: Any, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = [
        r.entry_id
        for r in await publish_many(
            real_redis,
            [envelope(sample_states, trade_date=f"2026-04-{d:02d}") for d in range(1, 29)]
            + [envelope(sample_states, ticker=f"OLD{i}") for i in range(22)],
        )
    ]
    dump = await real_redis.dump(S)  # a backup taken before the group existed
    handled: list[str] = []
    reader = GroupReader(
        real_redis, "engine", "c1", lambda i, e: handled.append(i), start="$", block_ms=50
    )
    await reader.step(block=False)  # creates the group at the end
    (first,) = [r.entry_id for r in await publish_many(real_redis, [envelope(sample_states)])]
    await asyncio.wait_for(reader.drain(), 5)
    if how == "destroy":
        await real_redis.xgroup_destroy(S, "engine")
    else:
        await real_redis.delete(S)
        await real_redis.restore(S, 0, dump)
    await asyncio.wait_for(reader.step(block=False), 5)  # NOGROUP: recreated at "$"
    (second,) = [
        r.entry_id for r in await publish_many(real_redis, [envelope(sample_states, ticker="TSLA")])
    ]
    await asyncio.wait_for(reader.drain(), 5)
    assert handled == [first, second]
    assert not set(handled) & set(old)
    assert "recreating it at $ (only entries added from now on)" in caplog.text


async def test_loss_to_a_trim_is_still_reported_after_the_group_caught_up(
    real_redis: Any,
    sample_states: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
) -> None:
    envs = [envelope(sample_states, ticker=f"T{i:02d}") for i in range(20)]
    ids = [r.entry_id for r in await publish_many(real_redis, envs)]
    handled: list[str] = []
    reader = GroupReader(
        real_redis, "engine", "c1", lambda i, e: handled.append(i), start="0", count=5
    )
    await reader.step(block=False)  # reads 5, then lags 15 behind
    await GroupReader(real_redis, "idle", "i1", lambda i, e: None, start="$").step(block=False)
    await real_redis.xtrim(S, maxlen=10, approximate=False)  # 5 it had not read are gone
    row = {g["name"]: g for g in (await group_lag(real_redis))["groups"]}["engine"]
    assert (row["lost"], row["lost_recorded"]) == (5, 0)  # seen, not yet passed
    await asyncio.wait_for(reader.drain(), 5)
    assert handled == ids[:5] + ids[10:]
    await publish_many(real_redis, [envelope(sample_states, ticker="LATE")])
    await asyncio.wait_for(reader.drain(), 5)  # caught up, and on past the gap
    report = await group_lag(real_redis)
    rows = {g["name"]: g for g in report["groups"]}
    assert (rows["engine"]["lost"], rows["engine"]["lost_recorded"]) == (5, 5)
    assert (rows["engine"]["lag"], rows["engine"]["pending"]) == (0, 0)
    assert rows["engine"]["lost_since"] is not None
    assert rows["idle"]["lost"] == 0  # created after the head was read: lost nothing
    late = GroupReader(real_redis, "late", "l1", lambda i, e: None, start="0")
    await asyncio.wait_for(late.drain(), 5)  # from the start, created after the trim
    row = {g["name"]: g for g in (await group_lag(real_redis))["groups"]}["late"]
    assert (row["lost"], row["lag"], row["entries_read"]) == (0, 0, 21)
    recorded = await real_redis.hgetall(group_lost_key(S, "engine"))
    assert (recorded[b"entries"], recorded[b"events"]) == (b"5", b"1")

    from flows.cli import main
    from ti_core.verify import verify_store

    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    assert await asyncio.to_thread(main, ["lag"]) == 0  # the command runs its own loop
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith("engine")).split()[5] == "5"
    assert "warning: engine lost 5 entries (first on " in out
    audit = await verify_store(real_redis, maxlen=0)
    assert audit.counts.get("group_lost") == 1
    assert "engine lost 5" in audit.examples["group_lost"][0]


async def test_several_consumers_count_one_gap_once(real_redis: Any, sample_states: Any) -> None:
    await GroupReader(real_redis, "engine", "a", lambda i, e: None, start="$").step(block=False)
    await publish_many(real_redis, [envelope(sample_states, ticker=f"T{i:02d}") for i in range(30)])
    await real_redis.xtrim(S, maxlen=12, approximate=False)
    readers = [
        GroupReader(real_redis, "engine", name, lambda i, e: None, count=4)
        for name in ("a", "b", "c")
    ]
    deadline = time.monotonic() + 10
    while (await group_lag(real_redis))["groups"][0]["lag"]:
        assert time.monotonic() < deadline
        await asyncio.gather(*(r.step(block=False) for r in readers))
    (row,) = (await group_lag(real_redis))["groups"]
    assert (row["lost"], row["lost_recorded"], row["lag"]) == (18, 18, 0)
