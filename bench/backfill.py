"""Backfill throughput: ``ti backfill`` end to end against the core loop alone, in one run.

    python bench/backfill.py [--tickers 80] [--start 2025-01-01] [--end 2025-12-31]

Writes a replay directory (80 tickers x the 250 XNYS sessions of 2025 = 20,000 states, the
three sample states re-targeted and varied), starts its own redis-server on a free port, then:

- core: ``ti_core.backfill.runner.backfill_batch`` over the same plan in batches of
  ``TI_BATCH_SIZE``
  (classify, replay arena, build, ``publish_many``, record), in this process, no Prefect;
- end to end: ``ti backfill --arena replay:DIR`` as a child process (process start, imports,
  Prefect's temporary API server, the flow run with one task per batch, artifacts, exit), on
  the flushed server; after a warm-up run that creates Prefect's database in a fresh
  ``PREFECT_HOME`` (a one-time cost, printed separately).

Prints decisions/s of both, their ratio, the target (1,300/s end to end, 100x the 13/s of
one Prefect task per publish) and the child's peak RSS (``RUSAGE_CHILDREN``: the largest of
the ``ti`` process and its Prefect server). Both runs must publish every decision once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from tests.backfill_replay import write_replay_dir  # noqa: E402
from tests.redisproc import RedisProcess  # noqa: E402
from ti_core.arenas.registry import load_arena  # noqa: E402
from ti_core.backfill.calendar import sessions  # noqa: E402
from ti_core.backfill.runner import backfill_batch, batched, plan_items  # noqa: E402
from ti_core.contract.keys import DEFAULT_STREAM_NAME  # noqa: E402
from ti_core.settings import TiSettings  # noqa: E402
from ti_core.transport.connection import open_redis  # noqa: E402

TARGET = 1300.0
MEMORY_CAP_MB = 1024.0


async def core_run(url: str, replay: Path, tickers: list[str], days: list[str]) -> float:
    """Seconds for the core loop over every (ticker, session); asserts all were published."""
    settings = TiSettings(redis_url=url)
    client = open_redis(url, settings)
    runner = load_arena(f"replay:{replay}")
    published = 0
    started = time.perf_counter()
    for chunk in batched(plan_items(tickers, days), settings.batch_size):
        report = await backfill_batch(client, runner, chunk, stream_name=settings.stream_name)
        published += report.count("published")
    elapsed = time.perf_counter() - started
    await client.aclose()
    assert published == len(tickers) * len(days), f"core published {published}"
    return elapsed


def ti_backfill(
    env: dict[str, str], tickers: list[str], start: str, end: str, replay: Path
) -> float:
    args = [
        sys.executable,
        "-m",
        "flows.cli",
        "backfill",
        "--tickers",
        ",".join(tickers),
        "--start",
        start,
        "--end",
        end,
        "--arena",
        f"replay:{replay}",
    ]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ti backfill failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(f"  ti: {done.stdout.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=80)
    parser.add_argument("--start", default="2025-01-01")
    parser.add_argument("--end", default="2025-12-31")
    opts = parser.parse_args()
    logging.getLogger("ti_core.builder").setLevel(logging.ERROR)
    tickers = [f"T{i:03d}" for i in range(opts.tickers)]
    days = sessions(opts.start, opts.end).sessions
    count = len(tickers) * len(days)
    with tempfile.TemporaryDirectory(prefix="ti-bench-backfill-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        replay = write_replay_dir(work / "replay", tickers, days)
        print(
            f"{count} states ({len(tickers)} tickers x {len(days)} sessions) written in "
            f"{time.perf_counter() - t:.1f}s"
        )
        server = RedisProcess(work / "redis").start()
        try:
            url = server.url
            core = asyncio.run(core_run(url, replay, tickers, days))
            with redis.Redis.from_url(url) as client:
                assert client.xlen(DEFAULT_STREAM_NAME) == count
                client.flushall()
            env = {
                **os.environ,
                "TI_REDIS_URL": url,
                "PREFECT_HOME": str(work / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "TI_DATA_DIR": str(work / "ti"),
            }
            env.pop("PREFECT_API_URL", None)  # the local Prefect server, started by ti
            warm = ti_backfill(env, tickers[:1], days[0], days[4], replay)
            with redis.Redis.from_url(url) as client:
                client.flushall()
            e2e = ti_backfill(env, tickers, opts.start, opts.end, replay)
            # Read before redis-server (also our child) is reaped: only ti and its descendants.
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            with redis.Redis.from_url(url) as client:
                assert client.xlen(DEFAULT_STREAM_NAME) == count, "end to end lost decisions"
        finally:
            server.stop()
            subprocess.run(
                [str(Path(sys.executable).parent / "ti"), "server", "stop"],
                env={**os.environ, "TI_DATA_DIR": str(work / "ti")},
                capture_output=True,
                check=False,
            )
    e2e_rate, core_rate = count / e2e, count / core
    print(f"warm-up (first run in a fresh PREFECT_HOME, 5 decisions): {warm:.1f}s")
    print(f"core only (no Prefect):  {count} decisions in {core:6.2f}s = {core_rate:7.0f}/s")
    print(
        f"ti backfill end to end:  {count} decisions in {e2e:6.2f}s = {e2e_rate:7.0f}/s "
        f"({e2e_rate / core_rate:.2f} of core; target {TARGET:.0f}/s: "
        f"{'met' if e2e_rate >= TARGET else 'NOT met'})"
    )
    print(
        f"peak RSS of a child process: {peak_mb:.0f} MB (cap {MEMORY_CAP_MB:.0f} MB: "
        f"{'met' if peak_mb < MEMORY_CAP_MB else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
