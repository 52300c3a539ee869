"""``ti run``, ``ti daily`` and ``ti get`` through the installed console script (subprocesses).

One test runs the README's main job on a "fresh machine" (new HOME, nothing configured: the
shared local Prefect server starts, decisions go to the embedded store; the test stops the
server); the others point Prefect at the session's test server to stay fast.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis

from ti_core.contract.keys import DEFAULT_STREAM_NAME

TI = shutil.which("ti", path=str(Path(sys.executable).parent)) or "ti"
NOISE = ("Traceback", "CancelledError", "database is locked", "Error", "Warning", "telemetry")


def ti(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A new user's environment: no TI_*, PREFECT_* or XDG_* settings, a new empty HOME."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TI_", "PREFECT_", "XDG_")) and k != "HOME"
    }
    return {**keep, "HOME": str(home), **extra}


@pytest.fixture
def prefect_api(prefect_harness: None) -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url
    return str(url)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_fresh_machine_run_then_get_from_the_embedded_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, TI_SERVER_IDLE_TIMEOUT="30")
    try:
        run = ti("run", "NVDA", "--date", "2026-05-11", env=env, timeout=360)
    finally:
        ti("server", "stop", env=env)
    assert run.returncode == 0, run.stderr
    (starting,) = run.stderr.splitlines()  # the one line that says the server is starting
    assert starting.startswith("ti: starting the local Prefect server at http://127.0.0.1:")
    store = home / ".local" / "share" / "ti" / "store.dat"
    (line,) = run.stdout.splitlines()
    assert line.startswith("NVDA 2026-05-11: ") and "confidence" in line and "[DEMO" in line
    assert f"embedded store {store}" in line and "TI_REDIS_URL=" in line
    assert "entry " in line and "decisions:NVDA:2026-05-11" in line

    got = ti("get", "nvda", "2026-05-11", env=env)
    assert got.returncode == 0 and got.stderr == ""
    assert got.stdout.startswith("NVDA 2026-05-11: ") and "DEMO" in got.stdout
    envelope = json.loads(ti("get", "NVDA", "2026-05-11", "--json", env=env).stdout)
    assert envelope["meta"]["demo"] is True and envelope["arena_id"].startswith("demo-")
    assert line.split(": ")[1].split()[0] == envelope["decision"]["synthesis"]["verdict"]

    missing = ti("get", "NVDA", "2026-05-12", env=env)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no decision for NVDA 2026-05-12" in missing.stderr
    assert len(missing.stderr.splitlines()) == 1


def test_demo_is_refused_for_a_configured_server_without_starting_prefect(tmp_path: Path) -> None:
    env = clean_env(tmp_path, TI_REDIS_URL="redis://ops:hunter2@127.0.0.1:1/0")
    out = ti("run", "NVDA", "--date", "2026-05-11", env=env)
    assert out.returncode == 1 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert "demo arena" in line and "TI_ALLOW_DEMO_PUBLISH=1" in line and "--allow-demo" in line
    assert "hunter2" not in line and not (tmp_path / ".prefect").exists()


def test_bad_arguments_fail_in_one_line(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    for args in (
        ["run", "NV:DA", "--date", "2026-05-11"],
        ["run", "NVDA", "--date", "2026-02-30"],
        ["run", "NVDA", "--date", "2026-05-11", "--arena", "nonsense spec"],
    ):
        out = ti(*args, env=env)
        assert out.returncode == 1, args
        assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("ti: "), out.stderr


@pytest.mark.prefect
@pytest.mark.redis_server
def test_allow_demo_publishes_to_the_server_and_says_where(
    tmp_path: Path, prefect_api: str, redis_url: str
) -> None:
    url = redis_url.replace("redis://", "redis://default:pw-s3cret@")
    env = clean_env(tmp_path, TI_REDIS_URL=url, PREFECT_API_URL=prefect_api)
    out = ti("run", "AAPL", "--date", "2026-05-11", "--allow-demo", env=env)
    assert out.returncode == 0, out.stderr
    assert "pw-s3cret" not in out.stdout and "***@127.0.0.1" in out.stdout
    with redis.Redis.from_url(redis_url) as client:
        ((_, fields),) = client.xrange(DEFAULT_STREAM_NAME)
    assert json.loads(fields[b"data"])["meta"]["demo"] is True


@pytest.mark.slow  # starts the local Prefect server in a child ti
@pytest.mark.prefect
def test_daily_reports_each_ticker_fails_in_one_line_and_retries(
    tmp_path: Path, prefect_api: str, sample_states: dict[str, Any]
) -> None:
    (tmp_path / "replay" / "NVDA").mkdir(parents=True)
    (tmp_path / "replay" / "NVDA" / "2026-05-11.json").write_text(
        json.dumps(sample_states["nvda-2026-05-11-full"])
    )
    env = clean_env(tmp_path, PREFECT_API_URL=prefect_api, TI_DATA_DIR=str(tmp_path / "data"))
    out = ti(
        "daily",
        "--tickers",
        "NVDA,TSLA",
        "--date",
        "2026-05-11",
        "--arena",
        f"replay:{tmp_path / 'replay'}",
        env=env,
    )
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any(x.startswith("NVDA 2026-05-11: ") and " entry " in x for x in lines), out.stdout
    assert any(
        x.startswith("TSLA 2026-05-11: FAILED run-arena: no archived arena state") for x in lines
    ), out.stdout
    (error,) = out.stderr.splitlines()
    assert error.startswith("ti: daily run failed: 1 of 2 decisions failed")
    missing = tmp_path / "replay" / "TSLA" / "2026-05-11.json"
    assert str(missing) in error
    assert ti("get", "NVDA", "2026-05-11", env=env).returncode == 0
    assert ti("get", "TSLA", "2026-05-11", env=env).returncode == 1

    # The state turns up; retrying the same flow run publishes TSLA only.
    flow_run_id = error.rsplit("ti retry ", 1)[1].rstrip("]")
    missing.parent.mkdir()
    missing.write_text(
        json.dumps(
            {
                **sample_states["nvda-2026-05-11-full"],
                "target": {"ticker": "TSLA", "date": "2026-05-11"},
            }
        )
    )
    retried = ti("retry", flow_run_id, env=env)
    assert retried.returncode == 0, retried.stderr
    assert retried.stderr == ""
    lines = retried.stdout.splitlines()
    assert any(
        x.startswith("NVDA 2026-05-11: ") and "(appended by an earlier attempt of this run)" in x
        for x in lines
    ), retried.stdout
    assert lines[-1] == "2026-05-11: 2 published (1 by an earlier attempt), 0 already on the stream"
    assert ti("get", "TSLA", "2026-05-11", env=env).returncode == 0


def test_embedded_store_keeps_every_write_across_connections_and_processes(
    tmp_path: Path,
) -> None:
    """Sequential and concurrent connect() calls in one process; a later process sees all."""
    writer = textwrap.dedent("""
        import asyncio
        from ti_core.transport.connection import connect

        async def put(i):
            async with connect() as client:
                await asyncio.sleep(0.001 * (i % 3))
                await client.hset("h", f"k{i}", str(i))

        async def main():
            async with connect() as client:
                await client.set("first", "1")
            await asyncio.gather(*(put(i) for i in range(30)))
            async with connect() as client:
                await client.set("last", "1")

        asyncio.run(main())
    """)
    env = {**os.environ, "TI_DATA_DIR": str(tmp_path / "data")}
    env.pop("TI_REDIS_URL", None)
    subprocess.run([sys.executable, "-c", writer], env=env, check=True, timeout=60)
    reader = textwrap.dedent("""
        import asyncio
        from ti_core.transport.connection import connect

        async def main():
            async with connect() as client:
                print(await client.get("first"), await client.get("last"),
                      len(await client.hgetall("h")))

        asyncio.run(main())
    """)
    out = subprocess.run(
        [sys.executable, "-c", reader],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert out.stdout.split() == ["b'1'", "b'1'", "30"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "store.dat",
        "store.dat.prev",
        "store.lock",
    ]
