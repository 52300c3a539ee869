"""Open a Redis client with this package's own retry and timeout policy, or the embedded store.

redis-py's defaults differ by constructor (``Redis(host=...)`` retries, ``from_url`` does not);
we decide instead: socket and connect timeouts, and a bounded number of retries with
exponential backoff and jitter on connection errors and timeouts. Retrying a write is safe
because every publish script is idempotent. With no URL, the embedded, file-backed store in
the data directory is used (``ti_core.store.embedded``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis_asyncio
from pydantic import SecretStr
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff

from ti_core.errors import ConfigError, one_line
from ti_core.settings import TiSettings, redact_url
from ti_core.store.embedded import embedded_store
from ti_core.transport.boundary import (
    CLIENT_RETRIES,
    REFUSED,
    client_user,
    redis_failure,
)
from ti_core.transport.client import RedisClient
from ti_core.transport.replicas import require_replicas
from ti_core.transport.sentinel import FailoverRetry, SentinelTarget, open_sentinel, sentinel_target

__all__ = [
    "CLIENT_NAME",
    "connect",
    "open_redis",
]

CLIENT_NAME = "ti"  # CLIENT SETNAME on every connection: find (or kill) ours in CLIENT LIST
_UTF8 = frozenset({"utf-8", "utf8", "UTF-8"})

_hiredis_pack: Any = None
try:  # redis[hiredis] is a dependency; without it redis-py's own packer is used
    import hiredis

    _hiredis_pack = hiredis.pack_command
except ImportError:  # pragma: no cover
    pass


def open_redis(url: str | SecretStr, settings: TiSettings | None = None) -> RedisClient:
    """A ``redis.asyncio.Redis`` for ``url`` with our retry policy; the caller closes it.

    No periodic health-check PING: redis-py retries it inside every connect attempt, which
    squares the number of attempts (and of timeouts) when a server hangs. A dead pooled
    connection is found by the next command instead, and that command is retried.
    """
    s = settings or TiSettings()
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    try:
        client = redis_asyncio.Redis.from_url(
            raw,
            socket_timeout=s.socket_timeout,
            socket_connect_timeout=s.connect_timeout,
            retry=_Retry(_backoff(s), s.retries),
            retry_on_error=list(CLIENT_RETRIES),
            health_check_interval=0,
            client_name=CLIENT_NAME,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot use Redis URL {redact_url(raw)}: {type(exc).__name__}") from None
    pool = client.connection_pool
    pool.connection_class = _hiredis_packing(pool.connection_class)  # before any connection
    try:  # an option the connection class does not take (?ssl_password= on redis://) fails
        pool.connection_class(**pool.connection_kwargs)  # here, not at the first command
    except TypeError as exc:
        raise ConfigError(
            f"cannot use Redis URL {redact_url(raw)}: {one_line(exc, 240, typed=True)} (TLS "
            "options need rediss://)"
        ) from None
    return client


def _backoff(settings: TiSettings) -> EqualJitterBackoff:
    """redis-py's in-client pauses, from the same settings as every other wait for Redis
    (``TI_REDIS_RETRY_DELAY`` doubling up to ``TI_REDIS_RETRY_MAX_DELAY``; equal jitter)."""
    return EqualJitterBackoff(cap=settings.redis_retry_max_delay, base=settings.redis_retry_delay)


class _Retry(Retry):
    """redis-py's retry, minus refused credentials (a ``ConnectionError`` there): a wrong
    password stays wrong, and retrying it only delays the one-line error."""

    async def call_with_retry(
        self, do: Any, fail: Any, is_retryable: Any = None, with_failure_count: bool = False
    ) -> Any:
        def worth(error: Exception) -> bool:
            if isinstance(error, REFUSED):
                return False
            return bool(is_retryable(error)) if is_retryable is not None else True

        return await super().call_with_retry(do, fail, worth, with_failure_count)


class _HiredisPacking:
    """Pack commands in C (hiredis) instead of redis-py's asyncio packer, which is Python.

    Same bytes (a test compares them); a publish-script call packs in ~5 us instead of ~35.
    Anything hiredis does not take (bool, None, memoryview, a non-UTF-8 encoder) goes to
    redis-py's packer, which also raises redis-py's own errors.
    """

    encoder: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        enc = self.encoder
        if _hiredis_pack is not None and enc.encoding in _UTF8 and enc.encoding_errors == "strict":
            first = args[0]
            if isinstance(first, str | bytes):
                args = (*first.split(), *args[1:])  # "CLIENT SETNAME" is two arguments
            try:
                return [_hiredis_pack(args)]
            except TypeError:
                pass
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
        return packed


_PACKING_CLASSES: dict[type, type] = {}


def _hiredis_packing(kind: type) -> type:
    """``kind`` (a redis-py connection class) packing with hiredis; one subclass per kind."""
    if kind not in _PACKING_CLASSES:
        _PACKING_CLASSES[kind] = type(kind.__name__, (_HiredisPacking, kind), {})
    return _PACKING_CLASSES[kind]


@asynccontextmanager
async def connect(
    url: str | SecretStr | None = None,
    *,
    settings: TiSettings | None = None,
    readonly: bool = False,
) -> AsyncIterator[RedisClient]:
    """Yield a client for ``url`` (or ``TI_REDIS_URL``, or the primary named by
    ``TI_REDIS_SENTINELS``, followed across failovers: ``ti_core.transport.sentinel``); with no
    ``url`` and no server configured (``TiSettings.uses_server``), the embedded store, which is
    never opened otherwise. ``TI_MIN_REPLICAS`` is registered on the client
    (``ti_core.transport.replicas``).

    ``readonly`` promises the block only reads: the embedded store then takes no lock and
    never writes its file (a Redis server is unaffected).

    A redis-py failure escaping the block leaves it as a ``ti_core`` error (see
    :func:`redis_failure`) naming the redacted URL, so callers need not know redis-py.
    """
    s = settings or TiSettings()
    given = url.get_secret_value() if isinstance(url, SecretStr) else url
    given = given or None  # a blank URL is none, as a blank TI_REDIS_URL is
    sentinels = sentinel_target(s) if given is None else None  # refuses a half configuration
    if given is None and not s.uses_server:
        if s.min_replicas:
            raise ConfigError(
                "TI_MIN_REPLICAS needs a Redis server with replicas; the embedded store has none"
            )
        async with embedded_store(s, readonly=readonly) as store:
            yield store
        return
    if sentinels is not None:
        client, where = _open_sentinel(sentinels, s), sentinels.describe()
    else:
        raw = given or (s.redis_url.get_secret_value() if s.redis_url is not None else "")
        client, where = open_redis(raw, s), redact_url(raw)
    try:
        _require_replicas(client, s)
        yield client
    except (redis_errors.RedisError, OSError) as exc:
        failure = redis_failure(exc, where, user=client_user(client))
        if failure is None:  # pragma: no cover - every RedisError is mapped
            raise
        raise failure from exc
    finally:
        await client.aclose()


def _open_sentinel(target: SentinelTarget, settings: TiSettings) -> RedisClient:
    """A client of the Sentinels' current primary with this module's policy, retrying for
    ``TI_REDIS_FAILOVER_WAIT`` seconds so that a failover is ridden out."""
    backoff = _backoff(settings)
    client: redis_asyncio.Redis = open_sentinel(
        target,
        settings,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        retry=FailoverRetry(backoff, settings.retries, settings.redis_failover_wait),
        retry_on_error=list(CLIENT_RETRIES),
        health_check_interval=0,
        client_name=CLIENT_NAME,
    )
    pool = client.connection_pool
    pool.connection_class = _hiredis_packing(pool.connection_class)  # before any connection
    return client


def _require_replicas(client: RedisClient, settings: TiSettings) -> None:
    if settings.min_replicas:
        require_replicas(
            client,
            settings.min_replicas,
            settings.replica_timeout,
            socket_timeout=settings.socket_timeout,
        )
