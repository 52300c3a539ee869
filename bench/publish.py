"""Publishing throughput: ``publish_many`` against the original one-at-a-time path, one run.

    python bench/publish.py [--count 10000] [--slices 4] [--chunk 200]

Starts its own redis-server on a free port (temp dir, no persistence) and, for two state
shapes, ``--count`` states each: "bench" (the NVDA sample with a longer reasoning, tickers and
dates varied, about 2.7 KB envelopes) and "rich" (``bench.reference.rich_states``: 20
source-metric records, five signals with key factors and 200-character summaries, a
400-character reasoning, three phase timings, about 2.9 KB), times on the same server:

- reference: the original module's ``build_envelope_from_state`` + ``publish_envelope`` (XADD)
  + ``publish_decision_hash`` (HSET) per state, one after the other (loaded by path from
  ``../shared/reference/stream_reference.py``), on a plain ``redis.asyncio.from_url`` client;
- ours: build every envelope first, then ``publish_many`` (idempotent scripts, entry + hash
  together, pipelined in chunks, trimming included), on the same plain client (target >= 4x
  the reference), and on ``open_redis`` (our client: hiredis packing, retries);
- ours streamed: ``publish_many`` over a generator of ``build_envelope_from_state``;
- each builder alone, and ``publish_many`` alone on prebuilt envelopes, on both clients.

The states are cut into ``--slices`` and the paths are interleaved slice by slice, so a
machine busy with something else slows all of them alike. Prints envelopes/s over all the
states, the ratios, and CPU microseconds per envelope (this process + redis-server), which a
busy machine distorts less than wall time.
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

from bench.reference import bench_states, load_reference, rich_states  # noqa: E402
from tests.redisproc import RedisProcess  # noqa: E402
from ti_core import DEFAULT_STREAM_NAME, build_envelope_from_state, publish_many  # noqa: E402
from ti_core.transport.connection import open_redis  # noqa: E402


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
        return (
            f"{self.label:<42} {self.count:>7,} in {self.wall:6.2f}s {self.rate:>8,.0f}/s "
            f"(best slice {self.best:>7,.0f}/s)  cpu {self.cpu / self.count * 1e6:4.0f} us "
            f"(server {self.server / self.count * 1e6:3.0f})"
        )


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _cpu_server(admin: Any) -> float:
    info = await admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


Work = Callable[[Any], Awaitable[None]]


async def measure(
    meter: Meter, admin: Any, count: int, work: Work, prepare: Callable[[], Any] | None = None
) -> None:
    """Time ``work(prepare())``: what ``prepare`` makes (prebuilt envelopes) is not timed."""
    await admin.flushall()
    given = prepare() if prepare is not None else None
    gc.collect()
    cpu0, server0, start = _cpu_self(), await _cpu_server(admin), time.perf_counter()
    await work(given)
    wall = time.perf_counter() - start
    server = await _cpu_server(admin) - server0
    meter.cpu += _cpu_self() - cpu0 + server
    meter.server += server
    meter.count += count
    meter.wall += wall
    meter.best = max(meter.best, count / wall)


def paths(
    part: list[Any], plain: Any, ours: Any, ref: Any, chunk: int
) -> dict[str, tuple[Work, Callable[[], Any] | None]]:
    """Each timed path over one slice of states (and what to prepare untimed), in order."""

    async def reference(_: Any) -> None:
        for state in part:
            env = ref.build_envelope_from_state(state)
            await ref.publish_envelope(plain, DEFAULT_STREAM_NAME, env)
            await ref.publish_decision_hash(plain, env)

    def build_then_publish(client: Any) -> Work:
        async def work(_: Any) -> None:
            built = [build_envelope_from_state(s) for s in part]
            results = await publish_many(client, built, chunk_size=chunk)
            assert all(r.created for r in results)

        return work

    async def streamed(_: Any) -> None:
        await publish_many(plain, (build_envelope_from_state(s) for s in part), chunk_size=chunk)

    async def build_alone(_: Any) -> None:
        for state in part:
            build_envelope_from_state(state)

    async def ref_build_alone(_: Any) -> None:
        for state in part:
            ref.build_envelope_from_state(state)

    def publish_only(client: Any) -> Work:
        async def work(prebuilt: list[Any]) -> None:
            await publish_many(client, prebuilt, chunk_size=chunk)

        return work

    def prebuild() -> list[Any]:
        return [build_envelope_from_state(s) for s in part]

    return {
        "ref": (reference, None),
        "ours": (build_then_publish(plain), None),
        "ours_ti": (build_then_publish(ours), None),
        "stream": (streamed, None),
        "build": (build_alone, None),
        "refbuild": (ref_build_alone, None),
        "only": (publish_only(plain), prebuild),
        "only_ti": (publish_only(ours), prebuild),
    }


async def run_shape(
    shape: str, states: list[Any], slices: int, chunk: int, ref: Any, url: str
) -> None:
    gc.collect()
    gc.freeze()  # the inputs are long-lived: keep the collector from rescanning them
    count = len(states)
    size = len(build_envelope_from_state(states[0]).model_dump_json().encode())
    print(
        f"\n== {shape}: {count:,} states, envelope {size:,} bytes, {slices} interleaved "
        f"slices, publish_many chunk {chunk}"
    )
    meters = {
        name: Meter(label)
        for name, label in [
            ("ref", "reference: build + XADD + HSET, one by one"),
            ("ours", "ours: build all, then publish_many (plain)"),
            ("ours_ti", "ours: build all, then publish_many (open_redis)"),
            ("stream", "ours: publish_many(build for each state)"),
            ("build", "ours: build alone"),
            ("refbuild", "reference: build alone"),
            ("only", "ours: publish_many alone, prebuilt (plain)"),
            ("only_ti", "ours: publish_many alone, prebuilt (open_redis)"),
        ]
    }
    # A plain client, as a library user would make one, and ours (hiredis packing, retries).
    plain = redis_asyncio.from_url(url)
    ours = open_redis(url)
    try:
        for client in (plain, ours):  # load the scripts, open a connection
            await publish_many(client, [build_envelope_from_state(states[0])])
        step = -(-count // slices)
        for start in range(0, count, step):
            part = states[start : start + step]
            for name, (work, prepare) in paths(part, plain, ours, ref, chunk).items():
                await measure(meters[name], plain, len(part), work, prepare)
                if name == "ours":
                    assert await plain.xlen(DEFAULT_STREAM_NAME) == len(part)
    finally:
        await plain.aclose()
        await ours.aclose()
        gc.unfreeze()
    for meter in meters.values():
        print(meter.line())
    r, o = meters["ref"], meters["ours"]
    print(
        f"{shape}: build all + publish_many (plain) / reference: {o.rate / r.rate:5.2f}x wall "
        f"(target >= 4x), {r.cpu / o.cpu:5.2f}x by CPU per envelope"
    )
    print(
        f"{shape}: same on open_redis / reference: {meters['ours_ti'].rate / r.rate:5.2f}x; "
        f"streamed (plain): {meters['stream'].rate / r.rate:5.2f}x"
    )
    print(
        f"{shape}: our build / the reference's: "
        f"{meters['build'].rate / meters['refbuild'].rate:5.2f}x; publish_many alone, "
        f"plain / open_redis: {meters['only'].rate / meters['only_ti'].rate:5.2f}"
    )


async def run(count: int, slices: int, chunk: int) -> None:
    ref = load_reference()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisProcess(Path(tmp)).start()
        try:
            await run_shape("bench", bench_states(count), slices, chunk, ref, server.url)
            await run_shape("rich", rich_states(count), slices, chunk, ref, server.url)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="states per shape")
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=200, help="publish_many chunk size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args.count, args.slices, args.chunk))


if __name__ == "__main__":
    main()
