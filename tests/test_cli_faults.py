"""``ti tail`` (plain and ``--group``) under faults: a closed output pipe, a Redis restart, a Redis
that does not come back. Real processes, a real redis-server; every wait has a deadline."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests import test_cli_tail
from tests.redisproc import RedisProcess
from tests.test_cli_tail import ROOT, TI, env_for, publish
from tests.test_consume import envelope
from ti_core import DEFAULT_STREAM_NAME
from ti_core.consume.groups import GroupReader
from ti_core.transport.connection import open_redis

S = DEFAULT_STREAM_NAME
run = test_cli_tail.run  # the fixture: processes killed and closed at teardown


def wait_readers(url: str, count: int, procs: list[Any], timeout: float = 30.0) -> None:
    """Until ``count`` connections sit in a blocking XREAD (tail and group both wait in one)."""
    deadline = time.monotonic() + timeout
    with redis.Redis.from_url(url) as client:
        while time.monotonic() < deadline:
            for proc in procs:
                assert proc.poll() is None, proc.communicate()[1]
            if sum(c.get("cmd") == "xread" for c in client.client_list()) >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"fewer than {count} readers blocked in xread")


@pytest.mark.parametrize("group", [False, True])
def test_ti_tail_into_a_closed_pipe_exits_0_and_leaves_the_rest_pending(
    redis_url: str, sample_states: Any, group: bool
) -> None:
    argv = [TI, "tail", *(["--group", "desk", "--consumer", "d1"] if group else [])]
    tail = subprocess.Popen(
        argv, env=env_for(redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert tail.stdout is not None and tail.stderr is not None
    head = subprocess.Popen(
        ["head", "-n", "1"], stdin=tail.stdout, stdout=subprocess.PIPE, text=True
    )
    tail.stdout.close()  # only `head` reads the pipe now
    try:
        wait_readers(redis_url, 1, [tail])
        first = publish(redis_url, [envelope(sample_states, ticker="AAPL")])
        out, _ = head.communicate(timeout=30)
        assert out.split()[0] == first[0]  # head printed one line and exited
        later = publish(
            redis_url, [envelope(sample_states, ticker=t) for t in ("MSFT", "NVDA", "TSLA")]
        )
        code = tail.wait(timeout=30)
        err = tail.stderr.read()
    finally:
        for proc in (tail, head):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        tail.stderr.close()
    assert (code, "Traceback" in err) == (0, False), err
    if not group:
        return
    with redis.Redis.from_url(redis_url) as client:
        assert client.xlen(f"{S}:dead") == 0
        pending = [r["message_id"].decode() for r in client.xpending_range(S, "desk", "-", "+", 10)]
    assert pending and set(pending) <= set(later)  # the one it could not print, maybe more

    async def take_over() -> list[str]:
        client = open_redis(redis_url)
        handled: list[str] = []
        try:
            await asyncio.wait_for(
                GroupReader(
                    client, "desk", "d2", lambda i, e: handled.append(i), claim_idle_ms=100
                ).drain(),
                20,
            )
        finally:
            await client.aclose()
        return handled

    assert sorted(asyncio.run(take_over())) == later  # nothing lost: delivered to another


@pytest.mark.slow
def test_ti_tail_and_a_group_reader_ride_out_a_redis_restart(
    run: Any,
    tmp_path: Path,
    sample_states: Any,
) -> None:
    server = RedisProcess(tmp_path / "redis").start()
    try:
        env = env_for(server.url)
        plain = run([TI, "tail", "--json"], env)
        group = run([TI, "tail", "--group", "desk", "--consumer", "d1", "--json"], env)
        wait_readers(server.url, 2, [plain.proc, group.proc])
        before = publish(server.url, [envelope(sample_states, ticker=t) for t in ("AAPL", "MSFT")])
        seen = {
            name: [json.loads(p.line(30))["entry_id"] for _ in before]
            for name, p in (("plain", plain), ("group", group))
        }
        with server.sync_client() as client:
            deadline = time.monotonic() + 20
            while client.xpending(S, "desk")["pending"]:  # acknowledged before the snapshot
                assert time.monotonic() < deadline
                time.sleep(0.05)
            client.save()  # "same data": the restarted server loads this snapshot
        server.kill9()
        time.sleep(3)
        server.start()
        after = publish(server.url, [envelope(sample_states, ticker=t) for t in ("NVDA", "TSLA")])
        for name, p in (("plain", plain), ("group", group)):
            seen[name] += [json.loads(p.line(60))["entry_id"] for _ in after]
        results = {name: p.stop() for name, p in (("plain", plain), ("group", group))}
    finally:
        server.stop()
    assert seen == {"plain": before + after, "group": before + after}  # nothing missed, once
    for code, err in results.values():
        assert (code, "Traceback" in err) == (0, False), err
        assert "lost Redis" in err and "Redis is back after" in err, err
        assert err.count("lost Redis") == 1, err


@pytest.mark.slow  # waits out the configured time
@pytest.mark.parametrize("group", [False, True])
def test_ti_tail_gives_up_after_the_configured_time(
    run: Any,
    tmp_path: Path,
    group: bool,
) -> None:
    server = RedisProcess(tmp_path / "redis").start()
    try:
        argv = [TI, "tail", "--give-up-after", "2", *(["--group", "g"] if group else [])]
        tail = run(argv, env_for(server.url))
        wait_readers(server.url, 1, [tail.proc])
    finally:
        server.kill9()
    code = tail.proc.wait(timeout=60)
    assert tail.proc.stderr is not None
    err = tail.proc.stderr.read()
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err, err
    assert len(lines) == 2 and "lost Redis" in lines[0], err
    assert lines[1].startswith("ti: ") and "giving up" in lines[1], err


def test_example_consumer_halted_stops_and_leaves_the_entry_pending(
    run: Any,
    redis_url: str,
    sample_states: Any,
) -> None:
    consumer = run(
        [
            sys.executable,
            str(ROOT / "examples" / "consumer.py"),
            "--url",
            redis_url,
            "--consumer",
            "e1",
            "--max-attempts",
            "1",
        ],
        env_for(None),
    )
    assert "started" in consumer.line()
    wait_readers(redis_url, 1, [consumer.proc])
    with redis.Redis.from_url(redis_url) as client:
        client.set("example:engine:halt", "1")
    (entry_id,) = publish(redis_url, [envelope(sample_states)])
    assert consumer.proc.wait(timeout=30) == 3
    assert consumer.proc.stderr is not None
    assert "trading halted" in consumer.proc.stderr.read()
    with redis.Redis.from_url(redis_url) as client:
        assert client.xlen(f"{S}:dead") == 0
        (row,) = client.xpending_range(S, "engine", "-", "+", 10)
        assert row["message_id"].decode() == entry_id
        assert client.hget(f"{S}:attempts:engine", entry_id) in (None, b"0")
