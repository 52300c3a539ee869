"""Consuming throughput: the group reader against the original docstring's tail loop, one run.

    python bench/consume.py [--count 20000] [--batch 100] [--rounds 3]

Starts its own redis-server on a free port, appends ``--count`` v1 envelopes of about 2.8 KB
(tickers and dates varied; only valid entries, since the original loop dies or spins on bad
ones), then times on the same entries, same server, same client type and batch size:

- reference: the original module's docstring loop: XREAD + its ``decode_envelope`` (loaded by
  path from ``../shared/reference/stream_reference.py``) + the handler, cursor in memory;
- group reader: ``GroupReader`` on a fresh group: XREADGROUP (in one MULTI with the trim-gap
  check script) + our decoder + the handler + XACK (at-least-once, crash-safe, losses to
  trimming recorded: the extra work a trading engine should pay for). New entries take this
  batched path; only redelivered ones are handled one at a time (attempt recorded first);
- tail: our ``tail()`` (XREAD + our decoder + the handler), for comparison.

The handler counts verdicts. Prints entries/s (best of ``--rounds`` alternating rounds) and the
ratios to the reference: above 1 means faster than the original. Wall time is what a consumer
sees; client CPU time leaves out the Redis server and other load on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as redis_asyncio  # noqa: E402

from bench.reference import bench_states, load_reference  # noqa: E402
from tests.redisproc import RedisProcess  # noqa: E402
from ti_core import DEFAULT_STREAM_NAME, build_envelope_from_state  # noqa: E402
from ti_core.consume.groups import GroupReader  # noqa: E402
from ti_core.consume.reader import tail  # noqa: E402

S = DEFAULT_STREAM_NAME


def payloads(count: int) -> list[str]:
    return [build_envelope_from_state(s).model_dump_json() for s in bench_states(count)]


async def fill(client: Any, data: list[str]) -> None:
    for start in range(0, len(data), 1000):
        pipe = client.pipeline(transaction=False)
        for payload in data[start : start + 1000]:
            pipe.xadd(S, {"data": payload})
        await pipe.execute()


async def reference_loop(client: Any, ref: Any, count: int, batch: int) -> Counter[str]:
    """The original docstring's loop, from "0", stopped once ``count`` entries were handled."""
    seen: Counter[str] = Counter()
    last_id: Any = "0"
    handled = 0
    while handled < count:
        resp = await client.xread({S: last_id}, block=5000, count=batch)
        for _stream, entries in resp:
            for entry_id, fields in entries:
                env = ref.decode_envelope(fields[b"data"])
                if env is None:
                    continue
                seen[env.decision.synthesis.verdict] += 1  # the handler
                handled += 1
                last_id = entry_id
    return seen


async def group_loop(client: Any, count: int, batch: int, group: str) -> Counter[str]:
    seen: Counter[str] = Counter()

    def handler(entry_id: str, env: Any) -> None:
        seen[env.decision.synthesis.verdict] += 1

    reader = GroupReader(client, group, "bench", handler, start="0", count=batch)
    handled = 0
    while handled < count:
        handled += (await reader.step(block=False)).handled
    return seen


async def tail_loop(client: Any, count: int, batch: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    async for _entry_id, env in tail(client, start="0", count=batch):
        seen[env.decision.synthesis.verdict] += 1
        if sum(seen.values()) >= count:
            break
    return seen


async def timed(
    work: Callable[[], Awaitable[Counter[str]]],
) -> tuple[float, float, Counter[str]]:
    """Wall seconds, this process's CPU seconds (steadier on a busy machine), the result."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    seen = await work()
    return time.perf_counter() - wall, time.process_time() - cpu, seen


async def main(args: argparse.Namespace) -> None:
    ref = load_reference()
    logging.disable(logging.WARNING)
    data = payloads(args.count)
    size = sum(len(p) for p in data) / len(data)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisProcess(Path(tmp)).start()
        try:
            client = redis_asyncio.from_url(server.url)
            await fill(client, data)
            best: dict[str, tuple[float, float]] = {}
            expected: Counter[str] | None = None
            for rnd in range(args.rounds):
                runs = {
                    "reference": lambda: reference_loop(client, ref, args.count, args.batch),
                    "group reader": lambda g=f"bench-{rnd}": group_loop(
                        client, args.count, args.batch, g
                    ),
                    "tail": lambda: tail_loop(client, args.count, args.batch),
                }
                for name, work in runs.items():
                    wall, cpu, seen = await timed(work)
                    expected = expected or seen
                    assert seen == expected and sum(seen.values()) == args.count, (name, seen)
                    old_wall, old_cpu = best.get(name, (0.0, 0.0))
                    best[name] = (max(old_wall, args.count / wall), max(old_cpu, args.count / cpu))
            await client.aclose()
        finally:
            server.stop()
    print(
        f"{args.count} entries of {size / 1024:.1f} KB, batch {args.batch}, best of "
        f"{args.rounds} rounds; entries per wall second and per client CPU second:"
    )
    ref_wall, ref_cpu = best["reference"]
    for name, (wall, cpu) in best.items():
        print(
            f"  {name:<13} {wall:>8,.0f}/s wall ({wall / ref_wall:.2f}x reference)   "
            f"{cpu:>8,.0f}/s CPU ({cpu / ref_cpu:.2f}x reference)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
