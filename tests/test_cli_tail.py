"""``ti tail`` / ``ti lag`` through their real entry points, and the example consumer."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.test_consume import envelope
from ti_core import DEFAULT_STREAM_NAME, publish_many
from ti_core.transport.connection import connect

TI = str(Path(sys.executable).with_name("ti"))
ROOT = Path(__file__).resolve().parents[1]


class Running:
    """A subprocess whose stdout lines arrive on a queue (so reads can time out).

    Used as a context manager: whatever happens, the process is gone and its pipes closed.
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.pump.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 10.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            self.proc.wait(10)
            assert self.proc.stderr is not None
            raise AssertionError(f"no output; stderr: {self.proc.stderr.read()}") from None

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Send ``sig``; return the exit code and stderr (a hang dumps its stacks, then fails)."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER prints the stacks
            self.proc.wait(5)
            assert self.proc.stderr is not None
            raise AssertionError(f"did not stop: {self.proc.stderr.read()[-4000:]}") from None
        assert self.proc.stderr is not None
        self.pump.join(5)
        return self.proc.returncode, self.proc.stderr.read()


@pytest.fixture
def run() -> Iterator[Callable[[list[str], dict[str, str]], Running]]:
    """Start subprocesses that are killed and closed at teardown, even if the test fails."""
    started: list[Running] = []

    def start(argv: list[str], env: dict[str, str]) -> Running:
        started.append(Running(argv, env))
        return started[-1]

    yield start
    for proc in started:
        proc.__exit__()


def env_for(url: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    if url:
        env["TI_REDIS_URL"] = url
    return env


def wait_blocked(url: str, command: str, proc: Running, timeout: float = 20.0) -> None:
    """Until the command's connection sits in a blocking read: it is ready for new entries."""
    deadline = time.monotonic() + timeout
    with redis.Redis.from_url(url) as client:
        while time.monotonic() < deadline:
            assert proc.proc.poll() is None, proc.proc.communicate()[1]
            if any(c.get("cmd") == command for c in client.client_list()):
                return
            time.sleep(0.02)
    raise AssertionError(f"never blocked in {command}")


def publish(url: str | None, envs: list[Any], *extra: dict[str, str]) -> list[str]:
    async def run() -> list[str]:
        async with connect(url) as client:
            ids = [r.entry_id for r in await publish_many(client, envs)]
            for fields in extra:
                await client.xadd(DEFAULT_STREAM_NAME, fields)
            return ids

    return asyncio.run(run())


def test_ti_tail_prints_new_decisions_and_exits_0_on_sigint(
    run: Any, redis_url: str, sample_states: Any
) -> None:
    publish(redis_url, [envelope(sample_states, trade_date="2026-05-08")])  # history: not shown
    tail = run([TI, "tail"], env_for(redis_url))
    wait_blocked(redis_url, "xread", tail)
    # The bad entry goes first: once the good one is printed, the bad one was read and skipped.
    publish(redis_url, [], {"data": "not json"})
    (entry_id,) = publish(redis_url, [envelope(sample_states)])
    line = tail.line()
    assert line.startswith(f"{entry_id}  NVDA   2026-05-11  BUY  confidence 0.78")
    code, err = tail.stop()
    assert code == 0, err
    assert "Traceback" not in err
    assert "malformed JSON" in err  # the bad entry was skipped with a warning
    assert tail.lines.empty()


def test_ti_tail_json_from_start(run: Any, redis_url: str, sample_states: Any) -> None:
    first = publish(redis_url, [envelope(sample_states, ticker="AAPL")], {"data": "[1]"})
    tail = run([TI, "tail", "--from-start", "--json"], env_for(redis_url))
    wait_blocked(redis_url, "xread", tail)
    second = publish(redis_url, [envelope(sample_states, ticker="MSFT")])
    rows = [json.loads(tail.line()) for _ in range(2)]
    code, err = tail.stop()
    assert (code, "Traceback" in err) == (0, False), err
    assert [r["entry_id"] for r in rows] == first + second
    assert [r["envelope"]["decision"]["target"]["ticker"] for r in rows] == ["AAPL", "MSFT"]
    assert rows[0]["envelope"]["schema_version"] == "1"


def test_ti_tail_group_acknowledges_and_ti_lag_reports(
    run: Any,
    redis_url: str,
    sample_states: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = publish(redis_url, [envelope(sample_states, ticker=t) for t in ("AAPL", "MSFT")])
    tail = run(
        [TI, "tail", "--from-start", "--group", "desk", "--consumer", "d1"], env_for(redis_url)
    )
    assert [tail.line().split()[0] for _ in ids] == ids
    wait_blocked(redis_url, "xread", tail)
    code, err = tail.stop(signal.SIGTERM)
    assert (code, "Traceback" in err) == (0, False), err

    from flows.cli import main

    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    assert main(["lag"]) == 0
    out = capsys.readouterr().out
    assert "2 entries" in out and "0 dead letters" in out
    row = next(line for line in out.splitlines() if line.startswith("desk"))
    assert row.split()[:6] == ["desk", "1", "0", "0", "2", "0"]  # consumers pending lag read lost
    assert main(["lag", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["groups"][0]["name"] == "desk" and report["groups"][0]["lag"] == 0


def test_ti_tail_on_the_embedded_store(run: Any, sample_states: Any) -> None:
    assert "TI_REDIS_URL" not in os.environ
    (first,) = publish(None, [envelope(sample_states, ticker="AAPL")])
    tail = run([TI, "tail", "--from-start"], env_for(None))
    assert tail.line().startswith(f"{first}  AAPL")
    (second,) = publish(None, [envelope(sample_states, ticker="MSFT")])  # store not held
    assert tail.line(timeout=15).startswith(f"{second}  MSFT")
    code, err = tail.stop()
    assert (code, "Traceback" in err) == (0, False), err

    async def length() -> int:
        async with connect() as client:
            return int(await client.xlen(DEFAULT_STREAM_NAME))

    assert asyncio.run(length()) == 2  # the tail's exit did not write a stale store back


def test_example_consumer_runs(run: Any, redis_url: str, sample_states: Any) -> None:
    ids = publish(redis_url, [envelope(sample_states)])
    consumer = run(
        [
            sys.executable,
            str(ROOT / "examples" / "consumer.py"),
            "--url",
            redis_url,
            "--consumer",
            "e1",
            "--claim-idle-ms",
            "500",
        ],
        env_for(None),
    )
    started = f"consumer e1 of group engine started on {DEFAULT_STREAM_NAME}"
    assert consumer.line().startswith(started)
    wait_blocked(redis_url, "xread", consumer)
    ids += publish(
        redis_url, [envelope(sample_states, ticker="TSLA", verdict="SELL")], {"data": "not json"}
    )
    line = consumer.line()
    assert line == f"applied TSLA 2026-05-11 SELL confidence 0.78 -> position -1 ({ids[1]})"
    with redis.Redis.from_url(redis_url) as client:
        deadline = time.monotonic() + 10
        while not client.xlen(f"{DEFAULT_STREAM_NAME}:dead") and time.monotonic() < deadline:
            time.sleep(0.02)
    code, err = consumer.stop(signal.SIGTERM)
    assert (code, "Traceback" in err) == (0, False), err
    with redis.Redis.from_url(redis_url) as client:
        assert client.hgetall("example:engine:positions") == {b"TSLA": b"-1"}
        (letter,) = client.xrange(f"{DEFAULT_STREAM_NAME}:dead")
        assert letter[1][b"reason"].startswith(b"malformed JSON")
