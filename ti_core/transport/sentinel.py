"""Reach the primary through Redis Sentinel, and keep reaching it across a failover.

``TI_REDIS_SENTINELS`` + ``TI_REDIS_SENTINEL_MASTER`` replace ``TI_REDIS_URL``: the client
asks the Sentinels where the primary is before every new connection (redis-py's
``master_for``), so after a failover the next connection goes to the promoted replica. A
demoted primary answering READONLY is dropped the same way. Between the primary's death and
the promotion every attempt fails (connection refused, ``MasterNotFoundError``): the client
keeps retrying with backoff for ``TI_REDIS_FAILOVER_WAIT`` seconds (at least ``TI_RETRIES``
times), which rides out a failover without the caller seeing it. Retrying writes is safe:
every publish script is idempotent.

A misconfiguration is not an outage, and no failover heals it: when no Sentinel answers and
those that were reached refused the Sentinel password (missing or wrong), or TLS is set for
Sentinels that speak plain text, the first attempt raises ``ConfigError`` naming each
Sentinel and what to fix; a CA bundle that cannot be read is refused before any connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as redis_asyncio
from redis import exceptions as redis_errors
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection
from redis.backoff import AbstractBackoff

from ti_core.errors import ConfigError, one_line
from ti_core.settings import TiSettings, redact_sentinels
from ti_core.transport.boundary import CLIENT_RETRIES, REFUSED, untrusted_certificate

__all__ = ["FailoverRetry", "SentinelTarget", "open_sentinel", "sentinel_target"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """The Sentinels to ask and the service (master name) they monitor."""

    sentinels: tuple[tuple[str, int], ...]
    service: str

    def describe(self) -> str:
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        return f"sentinel:{self.service}@{hosts}"


def sentinel_target(settings: TiSettings) -> SentinelTarget | None:
    """The Sentinel configuration of ``settings``, None for a URL or the embedded store.

    Raises ``ConfigError`` (one line) for a half or contradictory configuration: Sentinels
    without a service name or the reverse, Sentinels and a URL, an entry that is not
    ``host:port``, or data-connection credentials/TLS settings given with a URL (which
    carries its own).
    """
    listed, service = settings.redis_sentinels, settings.redis_sentinel_master
    if listed is None:
        if service is not None:
            raise ConfigError(
                "TI_REDIS_SENTINEL_MASTER is set but TI_REDIS_SENTINELS is not: "
                "give the Sentinels as host:port,host:port"
            )
        if settings.redis_url is not None and _sentinel_only_settings(settings):
            raise ConfigError(
                f"{', '.join(_sentinel_only_settings(settings))} apply to "
                "TI_REDIS_SENTINELS; with TI_REDIS_URL put credentials and TLS "
                "in the URL (rediss://user:password@host/0?ssl_ca_certs=...)"
            )
        return None
    if settings.redis_url is not None:
        raise ConfigError(
            "both TI_REDIS_URL and TI_REDIS_SENTINELS are set: use the URL for "
            "one server or the Sentinels for a failover group, not both"
        )
    if service is None or not service.strip():
        raise ConfigError(
            "TI_REDIS_SENTINELS is set but TI_REDIS_SENTINEL_MASTER (the "
            "service name the Sentinels monitor) is not"
        )
    nodes = tuple(_host_port(part) for part in listed.split(",") if part.strip())
    if not nodes:
        raise ConfigError("TI_REDIS_SENTINELS lists no Sentinel: give host:port,host:port")
    _check_ca(settings)
    return SentinelTarget(nodes, service.strip())


def _check_ca(settings: TiSettings) -> None:
    """A CA bundle that cannot be read fails every TLS connection: refuse it now."""
    ca = settings.redis_tls_ca_certs
    if ca is None:
        return
    try:
        ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"TI_REDIS_TLS_CA_CERTS {ca} cannot be used as a CA bundle "
            f"({one_line(exc, 160, typed=True)})"
        ) from None


def _sentinel_only_settings(settings: TiSettings) -> list[str]:
    given = {
        "TI_REDIS_USERNAME": settings.redis_username is not None,
        "TI_REDIS_PASSWORD": settings.redis_password is not None,
        "TI_REDIS_SENTINEL_PASSWORD": settings.redis_sentinel_password is not None,
        "TI_REDIS_TLS": settings.redis_tls,
        "TI_REDIS_TLS_CA_CERTS": settings.redis_tls_ca_certs is not None,
    }
    return [name for name, is_set in given.items() if is_set]


def _host_port(part: str) -> tuple[str, int]:
    text = part.strip()
    redacted = redact_sentinels(text)
    shown = redacted if len(redacted) <= 60 else redacted[:57] + "..."
    if redacted != text:
        raise ConfigError(
            f"TI_REDIS_SENTINELS entry {shown!r} carries credentials: list host:port only, "
            "and give the Sentinels' password as TI_REDIS_SENTINEL_PASSWORD"
        )
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"TI_REDIS_SENTINELS entry {shown!r} is not host:port "
            "(e.g. 10.0.0.5:26379 or [::1]:26379)"
        )
    return host, int(port)


class FailoverRetry(Retry):
    """redis-py's retry, with a time budget: at least ``retries`` attempts, and more while
    less than ``budget`` seconds have passed since the first failure (a failover in progress).

    Bounded in time rather than in attempts alone: an attempt may be an instant refusal or
    a full connect timeout.
    """

    def __init__(
        self,
        backoff: AbstractBackoff,
        retries: int,
        budget: float,
        supported_errors: tuple[type[redis_errors.RedisError], ...] = CLIENT_RETRIES,
    ) -> None:
        super().__init__(backoff, retries, supported_errors)
        self.budget = budget

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        self._backoff.reset()  # type: ignore[no-untyped-call]
        failures = 0
        deadline = 0.0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                if isinstance(error, REFUSED):  # wrong credentials do not heal in a failover
                    raise
                failures += 1
                result = fail(error, failures) if with_failure_count else fail(error)
                if inspect.isawaitable(result):
                    await result
                now = time.monotonic()
                if failures == 1:
                    deadline = now + self.budget
                pause = self._backoff.compute(failures)
                if failures > self._retries and now + pause > deadline:
                    raise error
                if pause > 0:
                    await asyncio.sleep(pause)


def open_sentinel(target: SentinelTarget, settings: TiSettings, **connection: Any) -> Any:
    """A client of ``target``'s current primary (``master_for``); closing it closes the
    Sentinel connections too. ``connection``: keyword arguments of every data connection
    (timeouts, retry, client name); the credentials and TLS come from ``settings``."""
    s = settings
    data: dict[str, Any] = dict(connection)
    if s.redis_username is not None:
        data["username"] = s.redis_username
    if s.redis_password is not None:
        data["password"] = s.redis_password.get_secret_value()
    tls: dict[str, Any] = {}
    if s.redis_tls:
        tls["ssl"] = True
        if s.redis_tls_ca_certs is not None:
            tls["ssl_ca_certs"] = str(s.redis_tls_ca_certs)
    sentinel_side: dict[str, Any] = {
        "socket_timeout": s.socket_timeout,
        "socket_connect_timeout": s.connect_timeout,
        "health_check_interval": 0,
        **tls,
    }
    if s.redis_sentinel_password is not None:
        sentinel_side["password"] = s.redis_sentinel_password.get_secret_value()
    kind = _FollowingSSLConnection if s.redis_tls else _FollowingConnection
    manager = _CheckedSentinel(list(target.sentinels), sentinel_kwargs=sentinel_side, **data, **tls)
    manager.settings = s
    client = manager.master_for(target.service, redis_class=_SentinelRedis, connection_class=kind)
    client.sentinel_manager = manager
    return client


class _CheckedSentinel(Sentinel):
    """redis-py's Sentinel manager, telling a misconfiguration from an outage when no
    Sentinel names the primary. redis-py keeps only the text of each Sentinel's error, so
    each Sentinel client's ``SENTINEL MASTERS`` call records its last error here."""

    settings: TiSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures: dict[int, BaseException] = {}
        for sentinel in self.sentinels:
            self._record(sentinel)

    def _record(self, sentinel: Any) -> None:
        ask = sentinel.sentinel_masters
        failures = self.failures

        async def recorded() -> Any:
            try:
                masters = await ask()
            except BaseException as exc:
                failures[id(sentinel)] = exc
                raise
            failures.pop(id(sentinel), None)
            return masters

        setattr(sentinel, "sentinel_masters", recorded)  # noqa: B010  (an instance's method)

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError:
            problem = await _misconfiguration(self.sentinels, self.failures, self.settings)
            if problem is not None:
                raise ConfigError(problem) from None
            raise


async def _misconfiguration(
    sentinels: list[Any], failures: dict[int, BaseException], settings: TiSettings
) -> str | None:
    """Why the Sentinels cannot be used whatever a failover does, or None: one of them
    answered (the primary is down or unknown), or those that failed are merely unreachable."""
    problems: list[str] = []
    for sentinel in sentinels:
        failure = failures.get(id(sentinel))
        if failure is None:
            return None  # it answered: no primary yet, a failover perhaps
        kwargs = sentinel.connection_pool.connection_kwargs
        host, port = str(kwargs.get("host")), int(kwargs.get("port") or 0)
        where = f"{host}:{port}"
        if isinstance(failure, redis_errors.AuthenticationError):
            if settings.redis_sentinel_password is None:
                problems.append(
                    f"Sentinel {where} requires a password: set TI_REDIS_SENTINEL_PASSWORD"
                )
            else:
                problems.append(f"Sentinel {where} refused TI_REDIS_SENTINEL_PASSWORD: check it")
        elif untrusted_certificate(failure):
            problems.append(
                f"the TLS certificate of Sentinel {where} is not trusted "
                f"({one_line(failure, 160, typed=True)}): set TI_REDIS_TLS_CA_CERTS to its CA"
            )
        elif settings.redis_tls and await _speaks_plain_text(host, port, settings.connect_timeout):
            problems.append(
                f"Sentinel {where} speaks plain text, not TLS: unset TI_REDIS_TLS, or "
                "enable TLS on the Sentinels (tls-port)"
            )
        # else unreachable: an outage (a failover, perhaps) that retrying can ride out
    if not problems:
        return None
    return "cannot use the Sentinels (a configuration error, not retried): " + "; ".join(problems)


async def _speaks_plain_text(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` answers a plain-text PING as Redis does (+PONG or -ERROR); a
    TLS port closes the connection instead. Waits at most 1 s (or ``timeout``) per step."""
    timeout = min(timeout, 1.0)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.read(1), timeout)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return first in (b"+", b"-")


class _SentinelRedis(redis_asyncio.Redis):
    """A ``master_for`` client that also closes the Sentinel connections it was made with."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinel_manager is not None:
                await self.sentinel_manager.aclose()


class _FollowingConnection(SentinelManagedConnection):
    """Asks the Sentinels again on every reconnect, not only on the first connect.

    redis-py 8.1 reconnects a dropped connection (in a retry) through
    ``connect_check_health``, which reuses the old address: after a failover it kept
    dialling the dead primary, then the restarted one, now a replica (READONLY), until the
    retries ran out (redis/redis-py#3874). Connecting through ``connect()`` first re-runs
    the discovery; tests/test_failover.py fails without it.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health)


class _FollowingSSLConnection(_FollowingConnection, SSLConnection):
    pass
