"""The one Redis error boundary (ti_core.transport.boundary): each foreign error -> its TiError,
one line.

The table is checked on error objects as redis-py raises them (the exact classes and server
replies), then the boundary is checked around real calls: fakeredis for a refused command,
a port where nothing listens for a lost server, and ``GroupReader.step``.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from redis import exceptions as redis_errors

from ti_core.consume.groups import GroupReader
from ti_core.errors import (
    ConfigError,
    PublishError,
    RedisUnavailableError,
    StoreError,
    TiError,
    is_retryable,
)
from ti_core.settings import TiSettings
from ti_core.transport.boundary import connection_lost, raise_mapped, redis_calls, redis_failure
from ti_core.transport.connection import open_redis

WHERE = "redis://cache.internal:6379/0"


def _untrusted() -> redis_errors.ConnectionError:
    error = redis_errors.ConnectionError("Error 1 connecting to cache.internal:6380.")
    error.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    return error


# (foreign error, TiError class it becomes, words the one line must hold)
CASES: list[tuple[BaseException, type[TiError], str]] = [
    (
        redis_errors.AuthenticationError("invalid username-password pair"),
        ConfigError,
        "refused the credentials of user 'default'",
    ),
    (
        redis_errors.AuthorizationError("NOAUTH Authentication required."),
        ConfigError,
        "refused the credentials",
    ),
    (
        redis_errors.NoPermissionError("this user has no permissions to run the 'xadd' command"),
        ConfigError,
        "lacks the right +xadd",
    ),
    (
        redis_errors.ResponseError("NOPERM this user has no permissions to access one of the keys"),
        ConfigError,
        "lacks the right access to a key",
    ),
    (_untrusted(), ConfigError, "TLS certificate of redis://cache.internal:6379/0 is not trusted"),
    (
        redis_errors.ReadOnlyError("You can't write against a read only replica."),
        RedisUnavailableError,
        "read-only replica",
    ),
    (
        redis_errors.ResponseError("READONLY You can't write against a read only replica."),
        RedisUnavailableError,
        "read-only replica",
    ),
    (
        redis_errors.ConnectionError(
            "Error 111 connecting to cache.internal:6379.\nConnection refused."
        ),
        RedisUnavailableError,
        "unavailable: ConnectionError: Error 111",
    ),
    (
        redis_errors.TimeoutError("Timeout reading from socket"),
        RedisUnavailableError,
        "unavailable: TimeoutError",
    ),
    (
        redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
        RedisUnavailableError,
        "unavailable: BusyLoadingError",
    ),
    (
        redis_errors.ResponseError("NOREPLICAS Not enough good replicas to write."),
        RedisUnavailableError,
        "NOREPLICAS",
    ),
    (
        ConnectionResetError(104, "Connection reset by peer"),
        RedisUnavailableError,
        "unavailable: ConnectionResetError",
    ),
    (OSError(113, "No route to host"), RedisUnavailableError, "unavailable: OSError"),
    (
        redis_errors.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        PublishError,
        "out of memory",
    ),
    (
        redis_errors.ResponseError(
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        ),
        PublishError,
        "wrong type of value",
    ),
    (
        redis_errors.ResponseError("ERR unknown command 'XAUTOCLAIM'"),
        PublishError,
        "refused a command: ResponseError: ERR unknown command",
    ),
    (
        redis_errors.DataError("Invalid input of type: 'NoneType'"),
        PublishError,
        "refused a command: DataError",
    ),
]


@pytest.mark.parametrize(("foreign", "kind", "words"), CASES, ids=lambda v: type(v).__name__)
def test_each_foreign_error_becomes_one_tierror_on_one_line(
    foreign: BaseException, kind: type[TiError], words: str
) -> None:
    failure = redis_failure(foreign, WHERE, written="no entry was written")
    assert type(failure) is kind
    line = str(failure)
    assert words in line
    assert "\n" not in line and len(line) < 500
    assert line.startswith("Redis") or line.startswith("the TLS")
    assert is_retryable(failure) is (kind is RedisUnavailableError)


@pytest.mark.parametrize(
    "failure_written",
    [redis_errors.ReadOnlyError("READONLY"), redis_errors.OutOfMemoryError("OOM")],
)
def test_a_refused_write_says_what_was_not_written(failure_written: BaseException) -> None:
    assert "no entry was written for NVDA" in str(
        redis_failure(failure_written, WHERE, written="no entry was written for NVDA")
    )


@pytest.mark.parametrize(
    "ours_or_foreign",
    [ValueError("not redis"), RedisUnavailableError("already ours"), StoreError("ours too")],
)
def test_what_is_not_a_redis_failure_passes_unmapped(ours_or_foreign: BaseException) -> None:
    assert redis_failure(ours_or_foreign, WHERE) is None


@pytest.mark.parametrize(
    ("exc", "lost"),
    [
        (redis_errors.ConnectionError("gone"), True),
        (redis_errors.TimeoutError("slow"), True),
        (redis_errors.BusyLoadingError("loading"), True),
        (redis_errors.ReadOnlyError("replica"), True),
        (ConnectionResetError(104, "reset"), True),
        (TimeoutError("slow"), True),
        (RedisUnavailableError("ours"), True),
        (redis_errors.AuthenticationError("wrong password"), False),  # a ConnectionError
        (BrokenPipeError(32, "closed output"), False),  # the consumer's stdout, not Redis
        (PermissionError(13, "a handler's file"), False),
        (redis_errors.ResponseError("WRONGTYPE"), False),
        (ValueError("bad"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_connection_lost_is_the_one_answer_to_wait_or_not(exc: BaseException, lost: bool) -> None:
    assert connection_lost(exc) is lost


async def test_redis_calls_maps_a_refused_command_on_fakeredis(fake_redis: Any) -> None:
    await fake_redis.set("not-a-hash", "x")
    with pytest.raises(PublishError, match="wrong type of value") as caught:
        with redis_calls(fake_redis, "nothing was written (a read)"):
            await fake_redis.hgetall("not-a-hash")
    assert "nothing was written (a read)" in str(caught.value)
    assert isinstance(caught.value.__cause__, redis_errors.ResponseError)


async def test_redis_calls_lets_other_errors_through(fake_redis: Any) -> None:
    with pytest.raises(KeyError), redis_calls(fake_redis):
        raise KeyError("not Redis")


async def test_an_unreachable_server_is_one_redacted_line() -> None:
    client = open_redis("redis://ti:s3cr3t-pw@127.0.0.1:1/0", TiSettings(retries=0))
    try:
        with pytest.raises(RedisUnavailableError) as caught, redis_calls(client):
            await client.ping()
    finally:
        await client.aclose()
    line = str(caught.value)
    assert line.startswith("Redis at redis://127.0.0.1:1/0 unavailable: ConnectionError")
    assert "s3cr3t" not in line and "\n" not in line


async def test_raise_mapped_names_the_clients_user() -> None:
    client = open_redis("redis://ti-producer:pw@127.0.0.1:1/0", TiSettings(retries=0))
    try:
        with pytest.raises(ConfigError, match="user 'ti-producer'"):
            raise_mapped(redis_errors.AuthenticationError("WRONGPASS"), client)
    finally:
        await client.aclose()


async def test_group_reader_step_leaves_only_tierrors() -> None:
    """The reader's boundary: a lost server is RedisUnavailableError (retryable), one line."""
    client = open_redis("redis://127.0.0.1:1/0", TiSettings(retries=0))
    reader = GroupReader(client, "engine", "c1", lambda *_: None)
    try:
        with pytest.raises(
            RedisUnavailableError, match="^Redis at redis://127.0.0.1:1/0 unavailable"
        ):
            await reader.step(block=False)
    finally:
        await client.aclose()


async def test_public_reads_leave_only_tierrors() -> None:
    """``@redis_boundary`` on the core's functions that take a client: no redis-py error out."""
    from ti_core.backfill.status import Item, classify
    from ti_core.consume.group_lag import group_lag
    from ti_core.consume.lookup import read_decision
    from ti_core.consume.reader import read_batch, stream_last_id

    client = open_redis("redis://127.0.0.1:1/0", TiSettings(retries=0))
    calls = [
        stream_last_id(client, "s"),
        read_batch(client, stream_name="s"),
        group_lag(client),
        read_decision(client, "NVDA", "2026-04-01"),
        classify(client, [Item("NVDA", "2026-04-01")]),
    ]
    try:
        for call in calls:
            with pytest.raises(RedisUnavailableError, match="^Redis at redis://127.0.0.1:1/0 unav"):
                await call
    finally:
        await client.aclose()
