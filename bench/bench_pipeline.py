"""What Prefect costs per decision: the core (arena -> build -> publish) against the flows.

Run: ``python bench/bench_pipeline.py [N]``. Starts its own redis-server on a free port and
Prefect in ephemeral mode (nothing else needed), then prints, per decision:

- core: demo arena + build + stream + hash, one ``connect()`` per decision, no Prefect;
- ``publish_decision`` flow runs in one process (after the server has started);
- ``daily`` over N tickers (fan-out, concurrency TI_ARENA_CONCURRENCY);
- ``ti run`` end to end in a new process (ephemeral Prefect server start included);

each with its ratio to the core measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


async def core(tickers: list[str], day: str) -> float:
    from ti_core.arenas.demo import DEMO_META, DemoArena
    from ti_core.build.builder import build_envelope_from_state
    from ti_core.contract.wire import Serialised
    from ti_core.publish.publisher import publish_decision_hash, publish_envelope
    from ti_core.settings import TiSettings
    from ti_core.transport.connection import connect

    s = TiSettings()
    start = time.perf_counter()
    for ticker in tickers:
        state = await DemoArena().run(ticker, day)
        envelope = Serialised.of(  # serialised once, for both calls
            build_envelope_from_state(state, extra_meta=DEMO_META, ticker=ticker, trade_date=day)
        )
        async with connect(settings=s) as client:
            await publish_envelope(client, s.stream_name, envelope)
            await publish_decision_hash(client, envelope, stream_name=s.stream_name)
    return (time.perf_counter() - start) / len(tickers)


async def flows(tickers: list[str], day: str) -> tuple[float, float, float]:
    from flows.pipeline import daily, publish_decision

    start = time.perf_counter()
    await publish_decision("WARM", day)  # starts the ephemeral server
    startup = time.perf_counter() - start
    start = time.perf_counter()
    for ticker in tickers:
        await publish_decision(ticker, day)
    single = (time.perf_counter() - start) / len(tickers)
    start = time.perf_counter()
    await daily([f"{t}X" for t in tickers], "2026-05-12")
    fan_out = (time.perf_counter() - start) / len(tickers)
    return startup, single, fan_out


def ti_run(day: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    with tempfile.TemporaryDirectory() as home:
        env.update(HOME=home, TI_DATA_DIR=str(Path(home) / "data"))
        env.pop("TI_REDIS_URL", None)
        ti = str(Path(sys.executable).parent / "ti")
        start = time.perf_counter()
        try:
            subprocess.run(
                [ti, "run", "NVDA", "--date", day], env=env, check=True, capture_output=True
            )
            return time.perf_counter() - start
        finally:  # the local Prefect server it started lives in this temporary HOME
            subprocess.run([ti, "server", "stop"], env=env, capture_output=True, check=False)


def main() -> None:
    from tests.redisproc import RedisProcess

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    tickers = [f"T{i:03d}" for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        proc = RedisProcess(Path(tmp)).start()
        os.environ["TI_REDIS_URL"] = proc.url
        os.environ["TI_ALLOW_DEMO_PUBLISH"] = "1"
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
        os.environ["TI_DATA_DIR"] = str(Path(tmp) / "data")
        try:
            base = asyncio.run(core(tickers, "2026-05-11"))
            with proc.sync_client() as client:
                client.flushall()
            startup, single, fan_out = asyncio.run(flows(tickers, "2026-05-11"))
        finally:
            proc.stop()
    cli = ti_run("2026-05-11")
    print(f"decisions per measurement: {n}")
    print(f"core build+publish (no Prefect)   {base * 1000:8.1f} ms/decision   1.0x")
    print(
        f"publish_decision flow run          {single * 1000:8.1f} ms/decision "
        f"{single / base:6.1f}x  (+{(single - base) * 1000:.0f} ms Prefect overhead)"
    )
    print(
        f"daily fan-out over {n} tickers      {fan_out * 1000:8.1f} ms/decision "
        f"{fan_out / base:6.1f}x"
    )
    print(f"ephemeral Prefect server start     {startup:8.1f} s (once per process)")
    print(f"`ti run` end to end, new process   {cli:8.1f} s  {cli / base:8.0f}x")


if __name__ == "__main__":
    main()
