"""Sentinel settings, the failover retry policy and replica acknowledgement (no failover here:
``tests/test_failover.py`` runs those against real Sentinels)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import exceptions as redis_errors
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import NoBackoff

from tests.redisproc import free_port
from tests.test_consume import envelope
from ti_core.consume.groups import GroupReader, ensure_group
from ti_core.contract.keys import DEFAULT_STREAM_NAME, correlation_key
from ti_core.errors import ConfigError, RedisUnavailableError, ReplicaAckError, is_retryable
from ti_core.publish.publisher import append_envelope, publish_many
from ti_core.settings import TiSettings
from ti_core.transport.boundary import redis_failure
from ti_core.transport.connection import connect
from ti_core.transport.replicas import replica_policy
from ti_core.transport.sentinel import FailoverRetry, sentinel_target

TI = str(Path(sys.executable).with_name("ti"))
SENTINELS = "10.0.0.5:26379,sentinel-b:26380,[::1]:26381"


def test_sentinel_settings_parse_and_describe() -> None:
    s = TiSettings(redis_sentinels=SENTINELS, redis_sentinel_master="prod")
    target = sentinel_target(s)
    assert target is not None
    assert target.sentinels == (("10.0.0.5", 26379), ("sentinel-b", 26380), ("::1", 26381))
    assert target.service == "prod"
    assert target.describe() == "sentinel:prod@10.0.0.5:26379,sentinel-b:26380,[::1]:26381"
    assert s.uses_server and s.redis_url_redacted() == f"sentinel:prod@{SENTINELS}"
    assert sentinel_target(TiSettings()) is None  # the embedded store
    assert sentinel_target(TiSettings(redis_url="redis://h:6379/0")) is None
    assert sentinel_target(TiSettings(redis_sentinels="", redis_sentinel_master="")) is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {
                "redis_url": "redis://h/0",
                "redis_sentinels": "h:26379",
                "redis_sentinel_master": "m",
            },
            "both TI_REDIS_URL and TI_REDIS_SENTINELS are set",
        ),
        ({"redis_sentinels": "h:26379"}, "TI_REDIS_SENTINEL_MASTER (the service name"),
        ({"redis_sentinel_master": "m"}, "TI_REDIS_SENTINEL_MASTER is set but"),
        ({"redis_sentinels": "h", "redis_sentinel_master": "m"}, "entry 'h' is not host:port"),
        ({"redis_sentinels": "h:0", "redis_sentinel_master": "m"}, "entry 'h:0' is not"),
        ({"redis_sentinels": "h:70000", "redis_sentinel_master": "m"}, "'h:70000' is not"),
        ({"redis_sentinels": ":26379", "redis_sentinel_master": "m"}, "':26379' is not"),
        ({"redis_sentinels": " , ", "redis_sentinel_master": "m"}, "lists no Sentinel"),
        ({"redis_url": "redis://h/0", "redis_password": "pw"}, "TI_REDIS_PASSWORD apply to"),
        ({"redis_url": "redis://h/0", "redis_tls": True}, "TI_REDIS_TLS apply to"),
    ],
)
def test_half_or_contradictory_configuration_is_one_config_error(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as caught:
        sentinel_target(TiSettings(**given))
    assert "\n" not in str(caught.value)
    assert "pw" not in str(caught.value)


def test_cli_prints_one_line_for_url_and_sentinels(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        TI_REDIS_URL="redis://127.0.0.1:1/0",
        TI_REDIS_SENTINELS="127.0.0.1:1",
        TI_REDIS_SENTINEL_MASTER="m",
    )
    done = subprocess.run([TI, "tail"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "ti: both TI_REDIS_URL and TI_REDIS_SENTINELS are set: use the URL for one server or "
        "the Sentinels for a failover group, not both"
    ]


async def test_min_replicas_needs_a_server_and_a_timeout_below_the_socket_timeout(
    redis_url: str,
) -> None:
    with pytest.raises(ConfigError, match="embedded store has none"):
        async with connect(settings=TiSettings(min_replicas=1)):
            pass
    with pytest.raises(ConfigError, match="must be below TI_SOCKET_TIMEOUT"):
        async with connect(redis_url, settings=TiSettings(min_replicas=1, replica_timeout=5)):
            pass
    async with connect(redis_url, settings=TiSettings()) as client:
        assert replica_policy(client) is None  # the default: no WAIT is ever sent


@pytest.mark.parametrize(
    "error",
    [
        MasterNotFoundError("No master found for 'prod'"),
        redis_errors.ConnectionError("The previous master is now a slave"),
        redis_errors.ReadOnlyError("You can't write against a read only replica."),
        redis_errors.TimeoutError("Timeout reading from socket"),
    ],
    ids=["master-not-found", "demoted", "readonly", "timeout"],
)
def test_failover_errors_are_retryable(error: Exception) -> None:
    failure = redis_failure(error, "sentinel:prod@h:26379")
    assert isinstance(failure, RedisUnavailableError) and is_retryable(failure)


async def test_failover_retry_keeps_trying_for_its_budget_then_raises() -> None:
    attempts = 0

    async def refused() -> None:
        nonlocal attempts
        attempts += 1
        raise redis_errors.ConnectionError("refused")

    async def fail(_error: Exception) -> None:
        await asyncio.sleep(0.01)

    with pytest.raises(redis_errors.ConnectionError):
        await FailoverRetry(NoBackoff(), 2, budget=0.0).call_with_retry(refused, fail)
    assert attempts == 3  # the retry count alone
    attempts = 0
    with pytest.raises(redis_errors.ConnectionError):
        await FailoverRetry(NoBackoff(), 2, budget=0.3).call_with_retry(refused, fail)
    assert attempts > 3  # more, for as long as the budget lasts (bounded: it raised)

    async def answers() -> str:
        return "ok"

    assert await FailoverRetry(NoBackoff(), 0, budget=1).call_with_retry(answers, fail) == "ok"


@pytest.mark.slow  # waits out the client's backoff
async def test_unreachable_sentinels_are_a_retryable_error_naming_them() -> None:
    port = free_port()
    settings = TiSettings(
        redis_sentinels=f"127.0.0.1:{port}",
        redis_sentinel_master="prod",
        retries=1,
        redis_failover_wait=0,
        connect_timeout=0.5,
    )
    with pytest.raises(RedisUnavailableError, match=f"sentinel:prod@127.0.0.1:{port}") as caught:
        async with connect(settings=settings) as client:
            await client.ping()
    assert isinstance(caught.value.__cause__, MasterNotFoundError)


async def test_a_write_no_replica_acknowledged_fails_retryably_and_its_retry_is_idempotent(
    redis_url: str, sample_states: Any
) -> None:
    """A lone server has no replica: every WAIT comes back 0. The write itself happened on the
    primary; a retry (here once replicas are no longer required) returns the same entry."""
    env = envelope(sample_states)
    wanted = TiSettings(min_replicas=1, replica_timeout=0.1)
    async with connect(redis_url, settings=wanted) as client:
        with pytest.raises(ReplicaAckError, match="not acknowledged by 1 replicas") as caught:
            await append_envelope(client, DEFAULT_STREAM_NAME, env)
        assert is_retryable(caught.value)
        with pytest.raises(ReplicaAckError):
            await publish_many(client, [env])
    with redis.Redis.from_url(redis_url) as sync:
        entry = sync.get(correlation_key(DEFAULT_STREAM_NAME, env.correlation_id))
        assert entry is not None and sync.xlen(DEFAULT_STREAM_NAME) == 1
    async with connect(redis_url, settings=TiSettings()) as client:
        entry_id, created = await append_envelope(client, DEFAULT_STREAM_NAME, env)
        (result,) = await publish_many(client, [env])
    assert (entry_id, created) == (entry.decode().split(" ")[0], False)  # the record: entry first
    assert (result.entry_id, result.created) == (entry_id, False)


async def test_group_reader_keeps_reading_when_replicas_lag(
    redis_url: str, sample_states: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Its reads and acknowledgements wait for the replicas, but a shortfall only warns: a
    consumer must not stop (it stays at-least-once)."""
    async with connect(redis_url, settings=TiSettings()) as plain:
        ids = [
            r.entry_id
            for r in await publish_many(
                plain, [envelope(sample_states, ticker=t) for t in ("NVDA", "AAPL")]
            )
        ]
        await ensure_group(plain, DEFAULT_STREAM_NAME, "engines", "0")
    handled: list[str] = []
    wanted = TiSettings(min_replicas=1, replica_timeout=0.1)
    async with connect(redis_url, settings=wanted) as client:
        reader = GroupReader(client, "engines", "e1", lambda i, _e: handled.append(i))
        with caplog.at_level(logging.WARNING, logger="ti_core.replicas"):
            await reader.drain()
    assert handled == ids
    assert "reached 0 of 1 replicas" in caplog.text
    with redis.Redis.from_url(redis_url) as sync:
        assert sync.xpending(DEFAULT_STREAM_NAME, "engines")["pending"] == 0


async def test_server_min_replicas_to_write_refusal_is_retryable(
    tmp_path: Path, sample_states: Any
) -> None:
    """A primary configured with ``min-replicas-to-write`` refuses writes while its replicas
    are missing (NOREPLICAS): a retryable failure, like an unreachable server."""
    from tests.redisproc import RedisProcess

    server = RedisProcess(tmp_path / "r", "--min-replicas-to-write", "1").start()
    try:
        async with connect(server.url, settings=TiSettings()) as client:
            with pytest.raises(RedisUnavailableError, match="NOREPLICAS") as caught:
                await publish_many(client, [envelope(sample_states)])
        assert is_retryable(caught.value)
    finally:
        server.stop()


async def test_password_setting_reaches_the_data_connections(
    tmp_path: Path, sample_states: Any
) -> None:
    """A primary with ``requirepass`` behind a Sentinel that knows it (``auth-pass``):
    ``TI_REDIS_PASSWORD`` opens it; a wrong one is one configuration error, not retried."""
    from tests.redisproc import RedisProcess
    from tests.sentinel_cluster import SERVICE, SentinelProcess

    server = RedisProcess(tmp_path / "primary").start()
    sentinel = SentinelProcess(
        tmp_path / "sentinel", server.port, 1000, 3000, f"sentinel auth-pass {SERVICE} s3cret-pw"
    )
    try:
        with server.sync_client() as admin:
            admin.config_set("requirepass", "s3cret-pw")
        sentinel.start()
        base = {
            "redis_sentinels": f"127.0.0.1:{sentinel.port}",
            "redis_sentinel_master": SERVICE,
            "redis_failover_wait": 20.0,
        }
        async with connect(settings=TiSettings(**base, redis_password="s3cret-pw")) as client:
            (result,) = await publish_many(client, [envelope(sample_states)])
            assert result.created
        # Retried through the failover wait, this would outlast the test's timeout.
        wrong = TiSettings(**{**base, "redis_failover_wait": 600.0}, redis_password="wrong-pw")
        with pytest.raises(ConfigError, match="refused the credentials") as caught:
            async with connect(settings=wrong) as client:
                await publish_many(client, [envelope(sample_states)])
        assert "wrong-pw" not in str(caught.value)
    finally:
        sentinel.stop()
        server.stop()
