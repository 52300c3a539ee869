"""Crash safety: SIGKILL redis-server (AOF, fsync always) or the ``ti backfill`` process mid-run.

Afterwards a re-run completes, and every (ticker, session) is on the stream exactly once with
its lookup hash pointing at that entry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.backfill_replay import (
    PREFECT_SOCKETS,
    assert_exactly_once,
    prefect_sockets_collected,  # noqa: F401  (fixture)
    write_replay_dir,
)
from tests.redisproc import RedisProcess
from ti_core.arenas.runner import CallableArena
from ti_core.backfill.calendar import sessions
from ti_core.backfill.runner import BatchReport, backfill_batch, batched, plan_items
from ti_core.contract.keys import DEFAULT_STREAM_NAME, failure_key
from ti_core.errors import RedisUnavailableError
from ti_core.settings import TiSettings
from ti_core.transport.connection import open_redis
from ti_core.transport.retry import RetryPolicy, redis_policy

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

TICKERS = ["NVDA", "AAPL", "MSFT", "BRK.B"]
PLAN = sessions("2026-03-02", "2026-04-30")  # 42 sessions x 4 tickers = 168 items
PAIRS = [(i.ticker, i.trade_date) for i in plan_items(TICKERS, PLAN.sessions)]
MAIN = Path(__file__).resolve().parents[1]


@pytest.fixture
def replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_replay_dir(tmp_path / "replay", TICKERS, PLAN.sessions)
    monkeypatch.setenv("TI_TEST_REPLAY_DIR", str(root))
    return root


@pytest.fixture
def aof_redis(tmp_path: Path) -> Any:
    proc = RedisProcess(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    proc.start()
    yield proc
    proc.stop()


def _xlen(url: str) -> int:
    try:
        with redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5) as c:
            return int(c.xlen(DEFAULT_STREAM_NAME))
    except redis.RedisError:
        return -1


def _when(url: str, at_least: int, action: Callable[[], None], timeout: float = 60) -> Any:
    """Run ``action`` in a thread as soon as the stream has ``at_least`` entries."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while _xlen(url) < at_least and time.monotonic() < deadline:
            time.sleep(0.005)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


async def _run_all(url: str, redis_wait: float) -> BatchReport:
    """The core backfill loop (what each flow task does), batches of 12, one client."""
    from tests.backfill_arena import slow_replay

    settings = TiSettings(redis_url=url, retries=0, connect_timeout=0.5, socket_timeout=1.0)
    client = open_redis(url, settings)
    runner = CallableArena("tests.backfill_arena:slow_replay", slow_replay)
    total = BatchReport()
    try:
        for chunk in batched(plan_items(TICKERS, PLAN.sessions), 12):
            report = await backfill_batch(
                client,
                runner,
                chunk,
                concurrency=4,
                redis=redis_policy(redis_wait),
                retry=RetryPolicy(retries=2, delay=0.01),
            )
            total.planned += report.planned
            total.skipped += report.skipped
            total.outcomes += report.outcomes
    finally:
        await client.aclose()
    return total


@pytest.mark.parametrize("down_for", [0.5, 4.0], ids=["recovers", "fails-then-rerun"])
async def test_redis_killed_mid_backfill(
    aof_redis: RedisProcess, replay: Path, monkeypatch: pytest.MonkeyPatch, down_for: float
) -> None:
    monkeypatch.setenv("TI_TEST_ARENA_DELAY", "0.003")
    url = aof_redis.url

    def crash() -> None:
        aof_redis.kill9()
        time.sleep(down_for)
        aof_redis.start()

    watcher = _when(url, 40, crash)
    started = time.monotonic()
    try:
        first: BatchReport | None = await _run_all(url, redis_wait=2.0)
    except RedisUnavailableError:
        first = None
    finally:
        watcher.join(30)  # the server is back (and owned by the fixture) before anything else
    assert time.monotonic() - started < 30  # ended, one way or the other, in bounded time
    assert _xlen(url) >= 40, "the server was not killed mid-run"
    if down_for < 2.0:
        assert first is not None, "a short outage within redis_wait must be ridden out"
    else:
        assert first is None, "an outage longer than redis_wait must end the run"
    monkeypatch.setenv("TI_TEST_ARENA_DELAY", "0")
    rerun = await _run_all(url, redis_wait=2.0)
    assert not [o for o in rerun.outcomes if o.status == "failed"]
    assert_exactly_once(url, PAIRS)
    with redis.Redis.from_url(url) as client:
        assert client.hlen(failure_key(DEFAULT_STREAM_NAME)) == 0


def _ti(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=MAIN,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@pytest.mark.prefect
@PREFECT_SOCKETS
@pytest.mark.usefixtures("prefect_sockets_collected")
def test_backfill_process_killed_mid_run_then_rerun(
    prefect_harness: None, redis_url: str, replay: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "TI_REDIS_URL": redis_url,
        "TI_BATCH_SIZE": "8",
        "TI_TEST_ARENA_DELAY": "0.02",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": str(MAIN),
    }
    args = [
        "backfill",
        "--tickers",
        ",".join(TICKERS),
        "--start",
        PLAN.start,
        "--end",
        PLAN.end,
        "--arena",
        "tests.backfill_arena:slow_replay",
        "--concurrency",
        "2",
    ]
    proc = _ti(args, env)
    watcher = _when(redis_url, 30, lambda: os.killpg(proc.pid, signal.SIGKILL))
    proc.communicate(timeout=90)
    watcher.join(10)
    assert proc.returncode == -signal.SIGKILL, "the backfill finished before it was killed"
    done = _xlen(redis_url)
    assert 30 <= done < len(PAIRS)

    env["TI_TEST_ARENA_DELAY"] = "0"
    again = _ti(args, env)
    out, err = again.communicate(timeout=90)
    assert again.returncode == 0, err.decode()[-2000:]
    # Every entry the killed run wrote has its hash (one script each): all of them are skipped.
    assert f"{done} already published" in out.decode()
    assert_exactly_once(redis_url, PAIRS)
