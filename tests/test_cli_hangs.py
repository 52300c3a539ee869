"""Hangs of ``ti daily`` turned into reports, with real child processes, a real redis-server and
the shared local Prefect server (one per module, in a temporary data directory): an arena that
never returns (``--arena-timeout``), and the Prefect server killed mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flows.server import LocalServer
from tests.backfill_replay import write_replay_dir
from tests.test_cli_run import TI, clean_env
from ti_core.backfill.calendar import sessions
from ti_core.contract.keys import decision_hash_key

pytestmark = [pytest.mark.slow, pytest.mark.redis_server, pytest.mark.timeout(420)]

DAY = "2026-04-01"
ARENA = "tests.hang_arena:hang_some"
TWENTY = [f"Q{chr(65 + i // 5)}{chr(65 + i % 5)}" for i in range(20)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("hangs") / "data"
    yield path
    LocalServer(path).stop()  # whatever a test left running


def _env(
    tmp_path: Path, data: Path, redis_url: str, days: tuple[str, ...] = (DAY,), **extra: str
) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    replay = write_replay_dir(tmp_path / "replay", TWENTY, days)
    return clean_env(
        home,
        TI_DATA_DIR=str(data),
        TI_SERVER_IDLE_TIMEOUT="600",
        TI_REDIS_URL=redis_url,
        TI_TEST_REPLAY_DIR=str(replay),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        **extra,
    )


def _daily(tickers: list[str], env: dict[str, str], *more: str) -> subprocess.Popen[str]:
    argv = [TI, "daily", "--tickers", ",".join(tickers), "--date", DAY, "--arena", ARENA, *more]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen[str], within: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"ti still running after {within} s: {out} {err}") from None
    return proc.returncode, out, err


def test_an_arena_that_never_returns_fails_alone_at_the_timeout(
    tmp_path: Path, data: Path, redis_url: str
) -> None:
    env = _env(tmp_path, data, redis_url, TI_TEST_HANG_TICKERS="QAB")
    code, out, err = _finish(_daily(TWENTY[:3], env, "--arena-timeout", "3"), 300)
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("Q")}
    assert code == 1, (out, err)
    assert "did not return within 3 s for QAB 2026-04-01" in lines["QAB"]
    assert "FAILED" in lines["QAB"] and "entry" in lines["QAA"] and "entry" in lines["QAC"]
    assert "ti: daily run failed: 1 of 3 decisions failed" in err
    with redis.Redis.from_url(redis_url) as client:
        held = [bool(client.exists(decision_hash_key(t, DAY))) for t in TWENTY[:3]]
    assert held == [True, False, True]


def _kill_server(data: Path) -> None:
    record = json.loads((data / "prefect" / "server.json").read_text())
    os.killpg(int(record["pid"]), signal.SIGKILL)  # the supervisor's group: the server too


def test_the_prefect_server_killed_mid_daily_is_reported_from_redis_within_a_minute(
    tmp_path: Path, data: Path, redis_url: str
) -> None:
    env = _env(
        tmp_path,
        data,
        redis_url,
        TI_TEST_ARENA_DELAY="1.5",
        TI_ARENA_CONCURRENCY="2",
        TI_PREFECT_LOST_AFTER="3",
    )
    proc = _daily(TWENTY, env)
    keys = [decision_hash_key(t, DAY) for t in TWENTY]
    with redis.Redis.from_url(redis_url) as client:
        deadline = time.monotonic() + 300
        while sum(map(client.exists, keys)) < 2:  # a couple published: the run is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        _kill_server(data)
        code, out, err = _finish(proc, 60)
        held = {t for t, key in zip(TWENTY, keys, strict=True) if client.exists(key)}
    assert code == 1, (out, err)
    assert err.count("ti: lost the Prefect server at http://127.0.0.1:") == 1, err
    assert "ConnectError" not in out + err
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("Q")}
    assert set(lines) == set(TWENTY)
    for ticker, line in lines.items():  # each line says what Redis holds
        assert ("in Redis (hash" in line) == (ticker in held), line
    assert f"{len(held)} of 20 decisions in redis://" in out
    assert 2 <= len(held) < 20


def test_the_prefect_server_killed_mid_retry_is_reported_from_redis(
    tmp_path: Path, data: Path, redis_url: str
) -> None:
    """``ti retry`` watches the API like ``ti run``: the retried run's decisions are read back."""
    pair = TWENTY[10:12]  # QCA publishes; QCB hangs (2 s arena timeout on the first attempt)
    env = _env(tmp_path, data, redis_url, TI_TEST_HANG_TICKERS=pair[1], TI_ARENA_TIMEOUT="2")
    code, _, err = _finish(_daily(pair, env), 300)
    assert code == 1, err
    run_id = re.search(r"ti retry ([0-9a-f-]{36})", err)
    assert run_id, err
    mark = tmp_path / "hanging"
    env = {k: v for k, v in env.items() if k != "TI_ARENA_TIMEOUT"}  # now it hangs for good
    env.update(TI_TEST_HANG_MARK=str(mark), TI_PREFECT_LOST_AFTER="3")
    proc = subprocess.Popen(
        [TI, "retry", run_id.group(1)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not mark.exists():  # the retry is running QCB's arena again
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    _kill_server(data)
    code, out, err = _finish(proc, 60)
    assert code == 1, (out, err)
    assert err.count("ti: lost the Prefect server at http://127.0.0.1:") == 1, err
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("Q")}
    assert "in Redis (hash" in lines[pair[0]] and "in Redis (hash" not in lines[pair[1]], out
    assert "1 of 2 decisions in redis://" in out


def test_the_prefect_server_killed_mid_backfill_is_reported_from_redis(
    tmp_path: Path, data: Path, redis_url: str
) -> None:
    days = tuple(sessions("2026-04-01", "2026-04-08").sessions)  # 5 sessions
    tickers = TWENTY[:4]
    env = _env(
        tmp_path,
        data,
        redis_url,
        days,
        TI_TEST_ARENA_DELAY="1.5",  # a batch of 4, two at a time: 3 s
        TI_ARENA_CONCURRENCY="2",
        TI_BATCH_SIZE="4",
        TI_PREFECT_LOST_AFTER="3",
    )
    argv = [TI, "backfill", "--tickers", ",".join(tickers), "--start", days[0], "--end", days[-1]]
    proc = subprocess.Popen(
        [*argv, "--arena", ARENA],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    keys = [decision_hash_key(t, d) for d in days for t in tickers]
    with redis.Redis.from_url(redis_url) as client:
        deadline = time.monotonic() + 300
        while sum(map(client.exists, keys)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        _kill_server(data)
        code, out, err = _finish(proc, 60)
        held = sum(map(client.exists, keys))
    assert code == 1, (out, err)
    assert err.count("ti: lost the Prefect server at http://127.0.0.1:") == 1, err
    assert "ConnectError" not in out + err
    assert (
        f"read back from Redis: {held} of 20 items published, 0 failed, {20 - held} missing" in out
    )
    assert err.count("MISSING ") == 20 - held and held < 20
