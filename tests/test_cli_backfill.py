"""``ti backfill`` and ``ti status`` as a user runs them (real redis-server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from flows.cli import main
from tests.backfill_replay import (
    PREFECT_SOCKETS,
    assert_exactly_once,
    prefect_sockets_collected,  # noqa: F401  (fixture)
    write_replay_dir,
)
from ti_core.backfill.calendar import sessions
from ti_core.backfill.runner import plan_items
from ti_core.contract.keys import DEFAULT_STREAM_NAME

pytestmark = pytest.mark.redis_server

TICKERS = ["NVDA", "BRK.B"]
PLAN = sessions("2026-04-01", "2026-04-14")  # 9 sessions (Good Friday closed)
RANGE = ["--tickers", "nvda,BRK.B", "--start", "2026-04-01", "--end", "2026-04-14"]
HOLE = ("BRK.B", "2026-04-08")
MAIN = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path) -> Path:
    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    monkeypatch.setenv("TI_BATCH_SIZE", "7")
    # What the command sets for itself, set here so the test restores it afterwards.
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    return write_replay_dir(tmp_path / "replay", TICKERS, PLAN.sessions)


@pytest.mark.prefect
@PREFECT_SOCKETS
@pytest.mark.usefixtures("prefect_sockets_collected")
def test_backfill_names_failures_then_only_failed_finishes(
    prefect_harness: None, cli_env: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hole = cli_env / HOLE[0] / f"{HOLE[1]}.json"
    saved = hole.read_text()
    hole.unlink()
    arena = ["--arena", f"replay:{cli_env}"]

    assert main(["backfill", *RANGE, *arena, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "18 to do; nothing published" in out and "skip 2026-04-03: holiday" in out
    assert "todo NVDA: 2026-04-01..2026-04-14 (9)" in out

    assert main(["backfill", *RANGE, *arena, "--concurrency", "2"]) == 1
    captured = capsys.readouterr()
    assert f"FAILED {HOLE[0]} {HOLE[1]}: StateNotFoundError" in captured.err
    assert "--only missing" in captured.err and "Traceback" not in captured.err

    assert main(["status", *RANGE]) == 0
    grid = capsys.readouterr().out
    assert "#########" in grid and "####x####" in grid  # NVDA complete, BRK.B one failure

    hole.write_text(saved)
    assert main(["backfill", *RANGE, *arena, "--only", "failed"]) == 0
    out = capsys.readouterr().out
    assert "1 published" in out and "17 already published" in out and "0 failed" in out
    assert_exactly_once(
        redis_url, [(i.ticker, i.trade_date) for i in plan_items(TICKERS, PLAN.sessions)]
    )


@pytest.mark.prefect
@PREFECT_SOCKETS
@pytest.mark.usefixtures("prefect_sockets_collected")
def test_only_failed_over_unrecorded_failures_says_they_are_not_published(
    prefect_harness: None, cli_env: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state an out-of-memory run leaves (tests/test_truthful_reports.py makes it for
    real): BRK.B never published, and no failure record, Redis having refused it too."""
    import asyncio

    from ti_core.arenas.registry import load_arena
    from ti_core.backfill.runner import run_items
    from ti_core.transport.connection import open_redis

    async def publish_nvda() -> None:
        async with open_redis(redis_url) as client:
            await run_items(
                client,
                load_arena(f"replay:{cli_env}"),
                list(plan_items(["NVDA"], PLAN.sessions)),
            )

    asyncio.run(publish_nvda())
    arena = ["--arena", f"replay:{cli_env}"]
    assert main(["backfill", *RANGE, *arena, "--only", "failed"]) == 1
    captured = capsys.readouterr()
    assert "9 already published, 9 not published and not run" in captured.out
    assert "already done" not in captured.out
    assert "9 items of the range are not published" in captured.err
    assert "re-run with --only missing" in captured.err
    assert main(["backfill", *RANGE, *arena]) == 0
    assert "9 published" in capsys.readouterr().out


def test_status_json_grid(
    cli_env: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from ti_core.arenas.registry import load_arena
    from ti_core.backfill.runner import run_items
    from ti_core.backfill.status import Item
    from ti_core.transport.connection import open_redis

    async def publish_two() -> None:
        async with open_redis(redis_url) as client:
            await run_items(
                client,
                load_arena(f"replay:{cli_env}"),
                [Item("NVDA", "2026-04-01"), Item("NVDA", "2026-04-02")],
            )

    asyncio.run(publish_two())
    assert main(["status", *RANGE, "--json"]) == 0
    grid = json.loads(capsys.readouterr().out)
    assert grid["counts"] == {"published": 2, "orphan_entry": 0, "failed": 0, "missing": 16}
    assert grid["tickers"]["NVDA"]["2026-04-01"] == "published"
    assert grid["tickers"]["BRK.B"]["2026-04-01"] == "missing"
    assert {"date": "2026-04-03", "reason": "holiday"} in grid["skipped"]
    assert len(grid["sessions"]) == 9


PROBE = (
    "import sys; from flows.cli import main; rc = main(sys.argv[1:]); "
    "print('PREFECT' if 'prefect' in sys.modules else 'CLEAN'); sys.exit(rc)"
)


@pytest.mark.slow  # a child process importing the CLI
def test_status_never_imports_prefect(cli_env: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "status", *RANGE],
        cwd=MAIN,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("CLEAN")
    assert "NVDA" in done.stdout and "BRK.B" in done.stdout


@pytest.mark.slow  # a child process importing the CLI
def test_a_refused_backfill_does_not_start_prefect(cli_env: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "backfill", *RANGE, "--calendar", "NOPE"],
        cwd=MAIN,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "unknown calendar" in done.stderr
    assert done.stdout.strip() == "CLEAN"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2026-02-30"], "not a real date"),
        (["--calendar", "NOPE"], "get_calendar_names"),
        (["--end", "2026-03-01"], "before start"),
        (["--arena", "nonsense spec"], "arena spec"),
        (["--concurrency", "0"], "at least 1"),
    ],
)
def test_bad_arguments_fail_in_one_line(
    cli_env: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    base = dict(zip(RANGE[::2], RANGE[1::2], strict=True))
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["backfill", *[x for kv in base.items() for x in kv]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    with redis.Redis.from_url(redis_url) as client:
        assert client.xlen(DEFAULT_STREAM_NAME) == 0


def test_a_dry_run_answers_without_prefect(cli_env: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # nothing listens
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            "backfill",
            *RANGE,
            "--dry-run",
            "--arena",
            f"replay:{cli_env}",
        ],
        cwd=MAIN,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "18 to do; nothing published" in done.stdout
    assert "skip 2026-04-03: holiday" in done.stdout
    assert done.stdout.strip().endswith("CLEAN") and done.stderr == ""
