"""Publishing and consuming through a Sentinel failover (real processes on loopback).

A primary, its replica and three Sentinels (``tests/sentinel_cluster.py``); the primary is
SIGKILLed mid-run, the Sentinels promote the replica, and the killed server comes back as the
new primary's replica. With ``TI_MIN_REPLICAS=1`` a backfill of 10k decisions ends with every
(ticker, date) on the new primary's stream exactly once and every decision it reported as
published still there; with 0 (the control) what was lost is printed, not asserted. A group
reader running through the failover handles every acknowledged entry once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.backfill_replay import assert_exactly_once, replay_state, sample_templates
from tests.sentinel_cluster import SERVICE, SentinelCluster, wait_until
from ti_core.arenas.runner import CallableArena
from ti_core.backfill.calendar import sessions
from ti_core.backfill.runner import BatchReport, backfill_batch, batched, plan_items
from ti_core.build.builder import build_envelope_from_state
from ti_core.consume.groups import GroupReader, ensure_group
from ti_core.contract.keys import DEFAULT_STREAM_NAME, decision_hash_key, failure_key
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.errors import RedisUnavailableError
from ti_core.publish.publisher import PublishResult, publish_many
from ti_core.settings import TiSettings
from ti_core.transport.connection import connect
from ti_core.transport.retry import RetryPolicy, redis_policy

pytestmark = [pytest.mark.redis_server, pytest.mark.slow, pytest.mark.timeout(240)]

TICKERS = [f"T{n:02d}" for n in range(40)]
PLAN = sessions("2025-01-02", "2025-12-31")  # 250 sessions x 40 tickers = 10,000 decisions
PAIRS = [(i.ticker, i.trade_date) for i in plan_items(TICKERS, PLAN.sessions)]
TEMPLATES = sample_templates()
_INDEX = {pair: n for n, pair in enumerate(PAIRS)}


async def _arena(ticker: str, trade_date: str) -> dict[str, Any]:
    n = _INDEX[(ticker, trade_date)]
    return replay_state(TEMPLATES[n % len(TEMPLATES)], ticker, trade_date, n)


@pytest.fixture(autouse=True)
def _quiet_builder() -> Iterator[None]:
    """The sample states are deliberately imperfect: 10k warnings would drown the figures."""
    builder = logging.getLogger("ti_core.builder")
    level = builder.level
    builder.setLevel(logging.ERROR)
    yield
    builder.setLevel(level)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    group = SentinelCluster(tmp_path / "cluster").start()
    try:
        yield group
    finally:
        group.stop()


def _settings(cluster: SentinelCluster, min_replicas: int) -> TiSettings:
    return TiSettings(
        redis_sentinels=cluster.setting,
        redis_sentinel_master=SERVICE,
        min_replicas=min_replicas,
        replica_timeout=1.0,
        socket_timeout=3.0,
        connect_timeout=1.0,
        redis_failover_wait=20.0,
    )


@dataclass
class Failover:
    """Kills the primary once its stream holds ``at`` entries; promotion and restart follow."""

    cluster: SentinelCluster
    at: int
    isolated_for: float = 0.0  # seconds the primary takes writes alone before it dies
    killed_at: float = 0.0
    promoted_at: float = 0.0
    old_port: int = 0
    new_port: int = 0
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> Failover:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _xlen(self) -> int:
        with redis.Redis(port=self.old_port, socket_timeout=1) as client:
            return int(client.xlen(DEFAULT_STREAM_NAME))

    def _run(self) -> None:
        try:
            self.old_port = self.cluster.primary_port()
            wait_until(f"{self.at} entries", lambda: self._xlen() >= self.at, 120, every=0.005)
            victim = (
                self.cluster.isolate_then_kill_primary(self.isolated_for)
                if self.isolated_for
                else self.cluster.kill_primary()
            )
            self.killed_at = time.monotonic()
            self.new_port = self.cluster.wait_promoted(self.old_port)
            self.promoted_at = time.monotonic()
            self.cluster.restart_as_replica(victim, self.new_port)
        except BaseException as exc:  # reported by join()
            self.errors.append(exc)

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(90)
        assert not self.thread.is_alive(), "the failover did not finish"
        if self.errors:
            raise self.errors[0]


@dataclass
class Run:
    report: BatchReport = field(default_factory=BatchReport)
    batch_done: list[float] = field(default_factory=list)
    error: BaseException | None = None


async def _backfill(settings: TiSettings, run: Run) -> None:
    """The core backfill loop (what each flow task does), one client, batches of 500."""
    runner = CallableArena("tests.test_failover:_arena", _arena)
    async with connect(settings=settings) as client:
        for chunk in batched(plan_items(TICKERS, PLAN.sessions), 500):
            report = await backfill_batch(
                client,
                runner,
                chunk,
                concurrency=8,
                redis=redis_policy(20.0),
                retry=RetryPolicy(retries=2, delay=0.01),
            )
            run.report.planned += report.planned
            run.report.skipped += report.skipped
            run.report.outcomes += report.outcomes
            run.batch_done.append(time.monotonic())


async def _first_run(settings: TiSettings) -> Run:
    run = Run()
    try:
        await _backfill(settings, run)
    except RedisUnavailableError as exc:  # allowed: a re-run must then complete
        run.error = exc
    return run


def _client_gap(run: Run, failover: Failover) -> float:
    """Seconds from the kill to the first batch the client finished after it."""
    after = [t for t in run.batch_done if t > failover.killed_at]
    return (after[0] - failover.killed_at) if after else float("nan")


def _not_on_new_primary(client: redis.Redis, run: Run) -> list[tuple[str, str, str]]:
    """Decisions the run reported as published whose hash does not name that entry."""
    published = [o for o in run.report.outcomes if o.status == "published"]
    pipe = client.pipeline(transaction=False)
    for o in published:
        pipe.hget(decision_hash_key(o.ticker, o.trade_date), "entry_id")
    return [
        (o.ticker, o.trade_date, o.entry_id)
        for o, now in zip(published, pipe.execute(), strict=True)
        if now != o.entry_id
    ]


async def _failover_backfill(
    cluster: SentinelCluster, min_replicas: int, isolated_for: float
) -> dict[str, Any]:
    settings = _settings(cluster, min_replicas)
    failover = Failover(cluster, at=len(PAIRS) // 3, isolated_for=isolated_for).start()
    started = time.monotonic()
    first = await _first_run(settings)
    ended = time.monotonic()
    failover.join()
    figures: dict[str, Any] = {
        "min_replicas": min_replicas,
        "decisions": len(PAIRS),
        "isolated_for": isolated_for,
        "first_run_published": first.report.count("published"),
        "first_run_failed_with": type(first.error).__name__ if first.error else None,
        "first_run_seconds": round(time.monotonic() - started, 1),
        "promotion_seconds": round(failover.promoted_at - failover.killed_at, 2),
        "client_gap_seconds": round(_client_gap(first, failover), 2),
    }
    assert 0 < failover.killed_at < ended, "the primary was not killed mid-run"
    with redis.Redis(port=failover.new_port, decode_responses=True) as client:
        lost = _not_on_new_primary(client, first)
    figures["reported_then_lost"] = len(lost)
    rerun = Run()
    await _backfill(settings, rerun)  # only the missing ones: a completed run adds nothing
    figures["rerun_published"] = rerun.report.count("published")
    assert cluster.primary_port() == failover.new_port
    assert not [o for o in rerun.report.outcomes if o.status == "failed"]
    assert_exactly_once(f"redis://127.0.0.1:{failover.new_port}/0", PAIRS)
    with redis.Redis(port=failover.new_port) as client:
        assert client.hlen(failure_key(DEFAULT_STREAM_NAME)) == 0
    figures["lost_examples"] = lost[:3]
    print(f"\nfailover figures: {figures}")
    return figures


# "kill": SIGKILL the primary; "isolated": first cut it off its replica for 0.5 s (the
# replica frozen), so that what it acknowledged in that time exists nowhere else.
FAULTS = pytest.mark.parametrize("isolated_for", [0.0, 0.5], ids=["kill", "isolated"])


@FAULTS
async def test_backfill_through_failover_with_one_replica_acknowledging(
    cluster: SentinelCluster, isolated_for: float
) -> None:
    figures = await _failover_backfill(cluster, min_replicas=1, isolated_for=isolated_for)
    assert figures["reported_then_lost"] == 0, figures  # acknowledged = on the new primary
    if figures["first_run_failed_with"] is None:
        assert figures["rerun_published"] == 0, figures


@FAULTS
async def test_backfill_through_failover_control_without_replica_acknowledgement(
    cluster: SentinelCluster, isolated_for: float
) -> None:
    """The control: what a failover can lose with asynchronous replication (reported only:
    on loopback the replica is usually fast enough). The re-run restores it, once."""
    figures = await _failover_backfill(cluster, min_replicas=0, isolated_for=isolated_for)
    print(
        f"control: {figures['reported_then_lost']} decisions reported as published by the "
        f"first run were not on the new primary; the re-run published "
        f"{figures['rerun_published']}"
    )


def _envelopes(count: int) -> list[TradingIntelligenceEnvelope]:
    out = []
    for n, (ticker, day) in enumerate(PAIRS[:count]):
        state = replay_state(TEMPLATES[n % len(TEMPLATES)], ticker, day, n)
        out.append(build_envelope_from_state(state, ticker=ticker, trade_date=day))
    return out


async def _publish_patiently(
    client: Any, chunk: list[TradingIntelligenceEnvelope]
) -> list[PublishResult]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await publish_many(client, chunk)
        except RedisUnavailableError:  # includes ReplicaAckError; the retry is idempotent
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.fixture
async def sentinel_clients(cluster: SentinelCluster) -> AsyncIterator[tuple[Any, Any]]:
    settings = _settings(cluster, min_replicas=1)
    async with connect(settings=settings) as producer, connect(settings=settings) as consumer:
        yield producer, consumer


async def test_group_reader_through_failover_handles_every_acknowledged_entry_once(
    cluster: SentinelCluster, sentinel_clients: tuple[Any, Any]
) -> None:
    producer, consumer = sentinel_clients
    envelopes = _envelopes(3000)
    await ensure_group(consumer, DEFAULT_STREAM_NAME, "engines", "0")
    handled: list[str] = []
    reader = GroupReader(
        consumer,
        "engines",
        "engine-1",
        lambda i, _e: handled.append(i),
        start="0",
        block_ms=200,
        claim_idle_ms=2000,
    )
    stop = asyncio.Event()
    reader_errors: list[BaseException] = []

    async def read() -> None:
        while not stop.is_set():
            try:
                await reader.run(stop=stop)
            except RedisUnavailableError as exc:  # beyond the client's failover wait
                reader_errors.append(exc)
                await asyncio.sleep(0.2)

    reading = asyncio.ensure_future(read())
    failover = Failover(cluster, at=1000).start()
    acked: list[PublishResult] = []
    try:
        for start in range(0, len(envelopes), 100):
            acked += await _publish_patiently(producer, envelopes[start : start + 100])
        failover.join()

        def caught_up() -> bool:
            return set(handled) >= {r.entry_id for r in acked}

        await asyncio.to_thread(wait_until, "the reader to catch up", caught_up, 60)
    finally:
        stop.set()
        await asyncio.wait_for(reading, 30)
    with redis.Redis(port=failover.new_port, decode_responses=True) as client:
        on_stream = [entry_id for entry_id, _ in client.xrange(DEFAULT_STREAM_NAME)]
        pending = client.xpending(DEFAULT_STREAM_NAME, "engines")["pending"]
    twice = [i for i, n in Counter(handled).items() if n > 1]
    print(
        f"\ngroup reader through failover: {len(acked)} published, {len(on_stream)} on the "
        f"new primary, {len(handled)} handled, {len(twice)} twice, reader errors "
        f"{len(reader_errors)}, promotion {failover.promoted_at - failover.killed_at:.2f}s"
    )
    assert len(on_stream) == len(envelopes) == len(set(on_stream))
    assert {r.entry_id for r in acked} == set(on_stream)
    assert set(handled) == set(on_stream)
    assert not twice, twice[:5]
    assert pending == 0


def test_ti_tail_follows_the_failover(cluster: SentinelCluster) -> None:
    """``ti tail`` configured with the Sentinels prints every acknowledged decision once,
    across the failover, without restarting."""
    from tests.test_cli_tail import TI, Running

    env = dict(
        os.environ,
        PYTHONFAULTHANDLER="1",
        TI_REDIS_SENTINELS=cluster.setting,
        TI_REDIS_SENTINEL_MASTER=SERVICE,
        TI_SOCKET_TIMEOUT="3",
    )
    envelopes = _envelopes(1500)

    async def publish(part: list[TradingIntelligenceEnvelope]) -> list[PublishResult]:
        acked: list[PublishResult] = []
        async with connect(settings=_settings(cluster, min_replicas=1)) as client:
            for start in range(0, len(part), 100):
                acked += await _publish_patiently(client, part[start : start + 100])
        return acked

    printed: list[str] = []
    with Running([TI, "tail", "--from-start", "--json"], env) as tail:
        acked = asyncio.run(publish(envelopes[:300]))
        while len(printed) < 300:  # tail is connected to the first primary
            printed.append(json.loads(tail.line(timeout=60))["entry_id"])
        failover = Failover(cluster, at=600).start()
        acked += asyncio.run(publish(envelopes[300:]))
        failover.join()
        wanted = {r.entry_id for r in acked}
        while not wanted <= set(printed):
            printed.append(json.loads(tail.line(timeout=60))["entry_id"])
        code, err = tail.stop()
    with redis.Redis(port=failover.new_port, decode_responses=True) as client:
        on_stream = {entry_id for entry_id, _ in client.xrange(DEFAULT_STREAM_NAME)}
    print(
        f"\nti tail through failover: {len(printed)} printed, {len(wanted)} acknowledged, "
        f"{len(set(printed) - on_stream)} printed but lost in the failover"
    )
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert len(printed) == len(set(printed)), "an entry printed twice"
    assert on_stream == wanted
