"""Publishing under real faults, against real redis-server processes: lost replies, killed
connections, a killed server, a paused server, a server that is down or hangs.

Each test ends by counting the stream by correlation id (exactly once) and checking every
lookup hash against the entry it names. A control run shows the same fault duplicates a
plain XADD, so the faults are real and the protection is what makes the difference.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.faults import LossyProxy
from tests.publish_workload import assert_exactly_once, envelope, many_envelopes
from tests.redisproc import RedisProcess, free_port
from ti_core import (
    DEFAULT_STREAM_NAME,
    RedisUnavailableError,
    TiSettings,
    connect,
    publish_decision_hash,
    publish_envelope,
    publish_many,
)
from ti_core.publish.publisher import PublishResult, append_envelope
from ti_core.transport.connection import CLIENT_NAME, open_redis

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

S = DEFAULT_STREAM_NAME
T = TypeVar("T")


def settings(**overrides: Any) -> TiSettings:
    values: dict[str, Any] = {"socket_timeout": 2.0, "connect_timeout": 2.0, "retries": 3}
    return TiSettings(**(values | overrides))


async def as_caller_would(call: Callable[[], Awaitable[T]], attempts: int = 20) -> T:
    """Retry a publish on RedisUnavailableError, as a pipeline task would (it is idempotent)."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except RedisUnavailableError:
            await asyncio.sleep(0.05)
    return await call()


async def warm_up(url: str) -> None:
    """Publish once directly so the scripts are loaded: a swallowed reply is then a write's."""
    client = open_redis(url)
    try:
        await publish_envelope(client, "warmup", envelope("WARM"))
    finally:
        await client.aclose()


async def test_control_plain_xadd_with_retries_duplicates(real_redis: Any, redis_proc: Any) -> None:
    """Without the protection, a lost reply + a client retry = the entry written again."""
    with LossyProxy(redis_proc.port) as proxy:
        plain = Redis.from_url(
            proxy.url,
            retry=Retry(NoBackoff(), 3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        try:
            proxy.swallow_reply(b"XADD", times=2)
            await plain.xadd(S, {"data": envelope().model_dump_json()})
        finally:
            await plain.aclose()
    assert proxy.swallowed == 2
    assert await real_redis.xlen(S) == 3  # one publish, three entries


async def test_lost_reply_then_retry_one_entry_same_id(real_redis: Any, redis_proc: Any) -> None:
    await warm_up(redis_proc.url)
    env = envelope()
    with LossyProxy(redis_proc.port) as proxy:
        client = open_redis(proxy.url, settings(retries=3))
        try:
            proxy.swallow_reply(b"EVALSHA", times=2)  # the same fault as the control run
            entry_id = await publish_envelope(client, S, env)  # retried inside the client
            assert proxy.swallowed == 2
            assert await publish_envelope(client, S, env) == entry_id
        finally:
            await client.aclose()
    await assert_exactly_once(real_redis, S, [env], hashes=False)
    assert await real_redis.xlen(S) == 1


async def test_lost_reply_surfaces_as_retryable_and_a_retry_returns_the_entry(
    real_redis: Any, redis_proc: Any
) -> None:
    await warm_up(redis_proc.url)
    env = envelope()
    with LossyProxy(redis_proc.port) as proxy:
        client = open_redis(proxy.url, settings(retries=0))
        try:
            proxy.swallow_reply(b"EVALSHA")
            with pytest.raises(RedisUnavailableError):
                await publish_envelope(client, S, env)
            assert await real_redis.xlen(S) == 1  # it was written: the failure was ambiguous
            entry_id, created = await append_envelope(client, S, env)
        finally:
            await client.aclose()
    assert not created
    assert [e[0].decode() for e in await real_redis.xrange(S)] == [entry_id]


async def test_lost_pipeline_reply_is_retried_by_the_client(
    real_redis: Any, redis_proc: Any
) -> None:
    """Our retry policy covers pipelines: publish_many returns although a reply was lost."""
    await warm_up(redis_proc.url)
    envs = many_envelopes(300)
    with LossyProxy(redis_proc.port) as proxy:
        client = open_redis(proxy.url, settings(retries=2))
        try:
            proxy.swallow_reply(b"EVALSHA")
            results = await publish_many(client, envs, chunk_size=300)
        finally:
            await client.aclose()
    assert proxy.swallowed == 1 and proxy.connections >= 2
    # The first ones were written by the attempt whose reply was lost (the cut may come before
    # Redis has read the whole pipeline: the rest are written by the retry).
    assert not results[0].created
    await assert_exactly_once(real_redis, S, envs)


async def _kill_ours_every(admin: Any, interval: float, stop: asyncio.Event) -> int:
    """CLIENT KILL every connection named like ours, every ``interval`` s; count the kills."""
    killed = 0
    while not stop.is_set():
        await asyncio.sleep(interval)
        for info in await admin.client_list():
            if info.get("name") == CLIENT_NAME:
                try:
                    killed += int(await admin.client_kill_filter(_id=info["id"]))
                except redis.ResponseError:  # it went away by itself
                    pass
    return killed


async def test_client_kill_during_10000_publishes(real_redis: Any, redis_url: str) -> None:
    envs = many_envelopes(10_000)
    batched, single = envs[:8_000], envs[8_000:]
    client = open_redis(redis_url, settings(retries=2))
    admin = Redis.from_url(redis_url)  # unnamed: never killed
    stop = asyncio.Event()
    killer = asyncio.create_task(_kill_ours_every(admin, 0.15, stop))

    async def batches(part: list[Any]) -> list[PublishResult]:
        out = []
        for start in range(0, len(part), 100):
            chunk = part[start : start + 100]
            out.extend(await as_caller_would(lambda c=chunk: publish_many(client, c)))
        return out

    async def one(env: Any, gate: asyncio.Semaphore) -> str:
        async with gate:
            entry_id = await as_caller_would(lambda: publish_envelope(client, S, env))
            await as_caller_would(lambda: publish_decision_hash(client, env))
            return entry_id

    try:
        gate = asyncio.Semaphore(16)
        started = time.monotonic()
        results = await asyncio.gather(
            *(batches(batched[i::4]) for i in range(4)),
            *(one(env, gate) for env in single),
        )
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        killed = await killer
        await client.aclose()
        await admin.aclose()
    assert killed >= 3, f"only {killed} connections killed in {elapsed:.1f}s"
    assert sum(len(r) for r in results[:4]) == 8_000
    await assert_exactly_once(real_redis, S, envs)
    assert await real_redis.xlen(S) == 10_000


async def test_kill9_mid_publish_many_then_restart_and_publish_again(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    envs = many_envelopes(3_000)
    acknowledged: list[PublishResult] = []

    def kill_when_busy() -> None:
        with server.sync_client() as probe:
            deadline = time.monotonic() + 20
            while probe.xlen(S) < 500 and time.monotonic() < deadline:
                time.sleep(0.005)
        server.kill9()

    client = open_redis(server.url, settings(retries=1, socket_timeout=1.0))
    killer = threading.Thread(target=kill_when_busy)
    try:
        killer.start()
        with pytest.raises(RedisUnavailableError):
            for start in range(0, len(envs), 250):
                acknowledged += await publish_many(client, envs[start : start + 250], chunk_size=50)
        killer.join()
        assert 0 < len(acknowledged) < len(envs)
        server.start()
        again = await as_caller_would(lambda: publish_many(client, envs, chunk_size=50))
        survived = {r.correlation_id: r.entry_id for r in again}
        # Nothing Redis acknowledged is lost, and it keeps its id.
        assert all(survived[r.correlation_id] == r.entry_id for r in acknowledged)
        assert not any(r.created for r in again[: len(acknowledged)])
        await assert_exactly_once(client, S, envs)
        assert await client.xlen(S) == len(envs)
    finally:
        await client.aclose()
        server.stop()


async def test_client_pause_longer_than_the_timeout_completes_once(
    real_redis: Any, redis_url: str
) -> None:
    client = open_redis(redis_url, settings(socket_timeout=0.25, retries=12))
    envs = many_envelopes(50)
    single = envelope("PAUSE")
    try:
        await publish_envelope(client, "warmup", envelope("WARM"))
        await real_redis.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        started = time.monotonic()
        (first,) = await publish_many(client, [single])
        waited = time.monotonic() - started
        await real_redis.execute_command("CLIENT", "PAUSE", "800", "WRITE")
        results = await publish_many(client, envs)
    finally:
        await client.aclose()
    assert waited > 1.0  # it really outlived several socket timeouts, and still succeeded
    # Each is this run's own entry. ``created`` may be False: on a loaded machine a reply that
    # arrives after the 0.25 s timeout is lost, and the resent script finds the entry an
    # earlier attempt of the same call appended (own_entry), which is exactly-once working.
    assert first.own_entry and all(r.own_entry for r in results)
    await assert_exactly_once(real_redis, S, [*envs, single])
    assert await real_redis.xlen(S) == 51


async def test_redis_down_raises_redis_unavailable_quickly() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = open_redis(url, settings(retries=2))
    started = time.monotonic()
    try:
        with pytest.raises(RedisUnavailableError, match="127.0.0.1"):
            await asyncio.wait_for(publish_many(client, [envelope()]), 30)
    finally:
        await client.aclose()
    assert time.monotonic() - started < 10
    with pytest.raises(RedisUnavailableError):  # the same from any command inside connect()
        async with connect(url, settings=settings(retries=0)) as other:
            await other.xlen(S)


async def test_a_hung_server_times_out_instead_of_hanging(redis_proc: Any) -> None:
    with LossyProxy(redis_proc.port) as proxy:
        proxy.blackhole = True  # accepts, then never answers
        client = open_redis(proxy.url, settings(socket_timeout=0.2, connect_timeout=0.2, retries=3))
        started = time.monotonic()
        try:
            with pytest.raises(RedisUnavailableError, match="Timeout"):
                await asyncio.wait_for(publish_envelope(client, S, envelope()), 30)
        finally:
            await client.aclose()
    # (retries + 1) attempts of about one timeout each, plus backoff: bounded, not squared.
    assert time.monotonic() - started < 3.0


async def test_a_read_only_replica_is_retryable_and_the_retry_publishes_once(
    tmp_path: Path,
) -> None:
    """During a failover the old primary refuses writes (READONLY): try again later."""
    server = RedisProcess(tmp_path / "replica").start()
    client = open_redis(server.url, settings(retries=0))
    env = envelope()
    try:
        with server.sync_client() as admin:
            admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
            with pytest.raises(RedisUnavailableError, match="ReadOnlyError"):
                await publish_many(client, [env])
            admin.execute_command("REPLICAOF", "NO", "ONE")
        results = await publish_many(client, [env])
        assert results[0].created
        await assert_exactly_once(client, S, [env])
    finally:
        await client.aclose()
        server.stop()
