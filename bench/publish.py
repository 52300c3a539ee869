"""Publishing throughput: ``publish_many`` against the original one-at-a-time path, one run.

    python bench/publish.py [--count 20000] [--slices 4] [--chunk 200]

Starts its own redis-server on a free port (temp dir, no persistence), makes ``--count``
arena states whose envelopes are about 2.8 KB (the NVDA sample, tickers and dates varied),
then times, on the same states and the same server:

- reference: the original module's ``build_envelope_from_state`` + ``publish_envelope`` (XADD)
  + ``publish_decision_hash`` (HSET) per state, one after the other (loaded by path from
  ``../shared/reference/stream_reference.py``), on a plain redis-py client;
- ours: ``publish_many`` over a generator of ``build_envelope_from_state`` (idempotent
  scripts, entry + hash together, pipelined in chunks, trimming included), on ``open_redis``;
- bound: our build + serialise alone, no Redis;
- and, to separate publishing from building, ``publish_many`` on prebuilt envelopes and
  the reference's own build + serialise.

The states are cut into ``--slices`` and the three are interleaved slice by slice, so a
machine busy with something else slows all of them alike. Prints envelopes/s over all the
states, ours/reference (target >= 4x), ours/bound, and CPU microseconds per envelope (this
process + redis-server), which a busy machine distorts less than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as redis_asyncio  # noqa: E402

from bench.reference import bench_states, load_reference  # noqa: E402
from tests.redisproc import RedisProcess  # noqa: E402
from ti_core import DEFAULT_STREAM_NAME, build_envelope_from_state, publish_many  # noqa: E402
from ti_core.connection import open_redis  # noqa: E402


@dataclass
class Meter:
    """Wall seconds and CPU seconds (ours + the server's) spent on one path, over its slices."""

    label: str
    count: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    server: float = 0.0
    best: float = 0.0

    @property
    def rate(self) -> float:
        return self.count / self.wall

    def line(self) -> str:
        return (f"{self.label:<42} {self.count:>7,} in {self.wall:6.2f}s {self.rate:>8,.0f}/s "
                f"(best slice {self.best:>7,.0f}/s)  cpu {self.cpu / self.count * 1e6:4.0f} us "
                f"(server {self.server / self.count * 1e6:3.0f})")


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _cpu_server(admin: Any) -> float:
    info = await admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(meter: Meter, admin: Any, count: int,
                  work: Callable[[], Awaitable[None]]) -> None:
    await admin.flushall()
    gc.collect()
    cpu0, server0, start = _cpu_self(), await _cpu_server(admin), time.perf_counter()
    await work()
    wall = time.perf_counter() - start
    server = await _cpu_server(admin) - server0
    meter.cpu += _cpu_self() - cpu0 + server
    meter.server += server
    meter.count += count
    meter.wall += wall
    meter.best = max(meter.best, count / wall)


async def run(count: int, slices: int, chunk: int) -> None:
    ref = load_reference()
    states = bench_states(count)
    gc.collect()
    gc.freeze()  # the inputs are long-lived: keep the collector from rescanning them
    size = len(build_envelope_from_state(states[0]).model_dump_json().encode())
    print(f"{count:,} states, envelope {size:,} bytes, {slices} interleaved slices, "
          f"publish_many chunk {chunk}")
    meters = {name: Meter(label) for name, label in [
        ("ref", "reference: build + XADD + HSET, one by one"),
        ("ours", "ours: publish_many(build for each state)"),
        ("bound", "bound: our build + serialise, no Redis"),
        ("only", "ours: publish_many alone (prebuilt envelopes)"),
        ("refbound", "reference's build + serialise, no Redis"),
    ]}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisProcess(Path(tmp)).start()
        plain = redis_asyncio.Redis.from_url(server.url)
        ours = open_redis(server.url)
        try:
            await publish_many(ours, [build_envelope_from_state(states[0])])  # load scripts
            step = -(-count // slices)
            for start in range(0, count, step):
                part = states[start:start + step]

                async def reference(part: list[Any] = part) -> None:
                    for state in part:
                        env = ref.build_envelope_from_state(state)
                        await ref.publish_envelope(plain, DEFAULT_STREAM_NAME, env)
                        await ref.publish_decision_hash(plain, env)

                async def mine(part: list[Any] = part) -> None:
                    results = await publish_many(
                        ours, (build_envelope_from_state(s) for s in part), chunk_size=chunk)
                    assert all(r.created for r in results)

                async def bound(part: list[Any] = part) -> None:
                    for state in part:
                        build_envelope_from_state(state).model_dump_json()

                await measure(meters["ref"], plain, len(part), reference)
                await measure(meters["ours"], plain, len(part), mine)
                assert await plain.xlen(DEFAULT_STREAM_NAME) == len(part)
                await measure(meters["bound"], plain, len(part), bound)

                async def ref_bound(part: list[Any] = part) -> None:
                    for state in part:
                        ref.build_envelope_from_state(state).model_dump_json()

                await measure(meters["refbound"], plain, len(part), ref_bound)
                prebuilt = [build_envelope_from_state(s) for s in part]

                async def publish_only(prebuilt: list[Any] = prebuilt) -> None:
                    await publish_many(ours, prebuilt, chunk_size=chunk)

                await measure(meters["only"], plain, len(part), publish_only)
                # Drop them now: live envelopes would make every later full GC scan them.
                del prebuilt, publish_only
        finally:
            await plain.aclose()
            await ours.aclose()
            server.stop()
    for meter in meters.values():
        print(meter.line())
    r, o, b = meters["ref"], meters["ours"], meters["bound"]
    print(f"ours / reference: {o.rate / r.rate:5.2f}x wall (target >= 4x), "
          f"{r.cpu / o.cpu:5.2f}x by CPU per envelope")
    print(f"ours / bound:     {o.rate / b.rate:5.2f} (share of the build-and-serialise-only rate)")
    print(f"publish_many alone / reference: {meters['only'].rate / r.rate:5.2f}x wall; "
          f"our build / the reference's: {b.rate / meters['refbound'].rate:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=200, help="publish_many chunk size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args.count, args.slices, args.chunk))


if __name__ == "__main__":
    main()
