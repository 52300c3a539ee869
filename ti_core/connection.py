"""Open a Redis client with this package's own retry and timeout policy, or the embedded store.

redis-py's defaults differ by constructor (``Redis(host=...)`` retries, ``from_url`` does not);
we decide instead: socket and connect timeouts, and a bounded number of retries with
exponential backoff and jitter on connection errors and timeouts. Retrying a write is safe
because every publish script is idempotent. With no URL, the embedded, file-backed store in
the data directory is used (``ti_core.embedded``).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis_asyncio
from pydantic import SecretStr
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff

from ti_core.embedded import EMBEDDED_FILE, embedded_store, embedded_store_path
from ti_core.errors import ConfigError, PublishError, RedisUnavailableError
from ti_core.replicas import require_replicas
from ti_core.sentinel import FailoverRetry, SentinelTarget, open_sentinel, sentinel_target
from ti_core.settings import TiSettings, redact_url

__all__ = [
    "CLIENT_NAME",
    "EMBEDDED_FILE",
    "connect",
    "describe_client",
    "embedded_store_path",
    "client_user",
    "open_redis",
    "raise_mapped",
    "redis_failure",
]

CLIENT_NAME = "ti"  # CLIENT SETNAME on every connection: find (or kill) ours in CLIENT LIST
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 1.0
_UTF8 = frozenset({"utf-8", "utf8", "UTF-8"})

_hiredis_pack: Any = None
try:  # redis[hiredis] is a dependency; without it redis-py's own packer is used
    import hiredis

    _hiredis_pack = hiredis.pack_command
except ImportError:  # pragma: no cover
    pass


def open_redis(url: str | SecretStr, settings: TiSettings | None = None) -> Any:
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
            retry=_Retry(EqualJitterBackoff(cap=_BACKOFF_CAP, base=_BACKOFF_BASE), s.retries),
            retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
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
            f"cannot use Redis URL {redact_url(raw)}: {_first_line(exc)} (TLS "
            "options need rediss://)"
        ) from None
    return client


class _Retry(Retry):
    """redis-py's retry, minus refused credentials (a ``ConnectionError`` there): a wrong
    password stays wrong, and retrying it only delays the one-line error."""

    async def call_with_retry(
        self, do: Any, fail: Any, is_retryable: Any = None, with_failure_count: bool = False
    ) -> Any:
        def worth(error: Exception) -> bool:
            if isinstance(error, _REFUSED):
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


def describe_client(client: Any) -> str:
    """Where ``client`` points, for messages: scheme, host, port and db, never credentials."""
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service is not None:  # Sentinel-managed: the primary last discovered
        host, port = getattr(pool, "master_address", None) or ("?", "?")
        return f"sentinel:{service} (primary {host}:{port})"
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return "(embedded store)"
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    kind = getattr(pool, "connection_class", None)
    tls = isinstance(kind, type) and issubclass(kind, redis_asyncio.SSLConnection)
    scheme = "rediss" if tls else "redis"
    host = kwargs.get("host", "localhost")
    return f"{scheme}://{host}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


# Worth retrying: unreachable, timed out, still loading its data (a ConnectionError in
# redis-py), or a replica refusing writes while a failover promotes another server.
_TRANSIENT = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    OSError,
)
# Never worth retrying, although redis-py files them under ConnectionError.
_REFUSED = (redis_errors.AuthenticationError, redis_errors.AuthorizationError)
_COMMAND_RIGHT = re.compile(r"run the '([a-z|_-]+)' command", re.IGNORECASE)


def client_user(client: Any) -> str:
    """The ACL user ``client`` authenticates as (``default`` when the URL names none)."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    user = kwargs.get("username") if isinstance(kwargs, dict) else None
    return str(user) if user else "default"


def _missing_right(message: str) -> str:
    """What an ACL refusal was about: ``+xrange``, a key, or the command a script called."""
    found = _COMMAND_RIGHT.search(message)
    if found:
        return f"+{found.group(1).lower()}"
    lowered = message.lower()
    if "access a key" in lowered or "access one of the keys" in lowered:
        return "access to a key (~pattern)"
    if "script" in lowered:
        return "to run a command the publish script calls (+get +set +hget +hset +xadd)"
    return "a command or key"


def _refused_by_acl(exc: BaseException) -> bool:
    text = str(exc)
    return (
        isinstance(exc, redis_errors.NoPermissionError)
        or "NOPERM" in text
        or "can't run this command" in text
    )  # a script calling a command the user lacks


def redis_failure(
    exc: BaseException,
    where: str,
    *,
    user: str = "default",
    written: str = "nothing was written",
) -> PublishError | ConfigError | None:
    """The ``ti_core`` error for a redis-py failure at ``where`` (a redacted URL), or None.

    The one place redis-py's errors are translated, by cause: refused credentials, a missing
    ACL right or an untrusted TLS certificate are ``ConfigError`` (never retried; the message
    names the user and the right); unreachable, timed out or a read-only replica mid-failover
    are ``RedisUnavailableError`` (retryable); out of memory, a key of the wrong type or any
    other refusal is ``PublishError``. ``written`` says what the failed call did and did not
    write. Messages carry the redacted location, never the password.
    """
    if isinstance(exc, _REFUSED):
        return ConfigError(
            f"Redis at {where} refused the credentials of user {user!r} "
            f"({type(exc).__name__}); check the user name and password in the "
            "Redis URL"
        )
    if _refused_by_acl(exc):
        return ConfigError(
            f"Redis user {user!r} at {where} lacks the right "
            f"{_missing_right(str(exc))} ({_first_line(exc)}); {written}; "
            "grant it (see the ACL rules in the README)"
        )
    if _untrusted_certificate(exc):
        return ConfigError(
            f"the TLS certificate of {where} is not trusted "
            f"({_first_line(exc)}); give its CA as ?ssl_ca_certs=/path/ca.pem"
        )
    if isinstance(exc, redis_errors.ReadOnlyError) or str(exc).startswith("READONLY"):
        return RedisUnavailableError(
            f"Redis at {where} is a read-only replica "
            f"({_first_line(exc)}); {written}; retry once a primary "
            "is back"
        )
    if isinstance(exc, _TRANSIENT) or _too_few_replicas(exc):
        return RedisUnavailableError(f"Redis at {where} unavailable: {_first_line(exc)}")
    if isinstance(exc, redis_errors.OutOfMemoryError) or str(exc).startswith("OOM"):
        return PublishError(
            f"Redis at {where} is out of memory (maxmemory reached: "
            f"{_first_line(exc)}); {written}; free memory or raise maxmemory, "
            "then publish again"
        )
    if "WRONGTYPE" in str(exc):
        return PublishError(
            f"Redis at {where}: a key holds the wrong type of value "
            f"({_first_line(exc)}); {written}; remove or rename that key"
        )
    if isinstance(exc, redis_errors.RedisError):
        return PublishError(f"Redis at {where} refused a command: {_first_line(exc)}; {written}")
    return None


def raise_mapped(exc: BaseException, client: Any, written: str = "nothing was written") -> None:
    """Raise :func:`redis_failure`'s error for ``exc`` (from ``exc``), if it is a Redis one."""
    failure = redis_failure(exc, describe_client(client), user=client_user(client), written=written)
    if failure is not None:
        raise failure from exc


def _too_few_replicas(exc: BaseException) -> bool:
    """The server's ``min-replicas-to-write`` refused a write: retryable once they are back."""
    return isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("NOREPLICAS")


def _untrusted_certificate(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):  # redis-py wraps the ssl error once or twice
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@asynccontextmanager
async def connect(
    url: str | SecretStr | None = None,
    *,
    settings: TiSettings | None = None,
    readonly: bool = False,
) -> AsyncIterator[Any]:
    """Yield a client for ``url`` (or ``TI_REDIS_URL``, or the primary named by
    ``TI_REDIS_SENTINELS``, followed across failovers: ``ti_core.sentinel``); with none, the
    embedded store. ``TI_MIN_REPLICAS`` is registered on the client (``ti_core.replicas``).

    ``readonly`` promises the block only reads: the embedded store then takes no lock and
    never writes its file (a Redis server is unaffected).

    A redis-py failure escaping the block leaves it as a ``ti_core`` error (see
    :func:`redis_failure`) naming the redacted URL, so callers need not know redis-py.
    """
    s = settings or TiSettings()
    target = url if url is not None else s.redis_url
    raw = target.get_secret_value() if isinstance(target, SecretStr) else target
    sentinels = sentinel_target(s) if url is None else None  # with Sentinels, no URL
    if not raw and sentinels is None:
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
        client, where = open_redis(raw or "", s), redact_url(raw)
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


def _open_sentinel(target: SentinelTarget, settings: TiSettings) -> Any:
    """A client of the Sentinels' current primary with this module's policy, retrying for
    ``TI_REDIS_FAILOVER_WAIT`` seconds so that a failover is ridden out."""
    backoff = EqualJitterBackoff(cap=_BACKOFF_CAP, base=_BACKOFF_BASE)
    client = open_sentinel(
        target,
        settings,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        retry=FailoverRetry(backoff, settings.retries, settings.redis_failover_wait),
        retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
        health_check_interval=0,
        client_name=CLIENT_NAME,
    )
    pool = client.connection_pool
    pool.connection_class = _hiredis_packing(pool.connection_class)  # before any connection
    return client


def _require_replicas(client: Any, settings: TiSettings) -> None:
    if settings.min_replicas:
        require_replicas(
            client,
            settings.min_replicas,
            settings.replica_timeout,
            socket_timeout=settings.socket_timeout,
        )
