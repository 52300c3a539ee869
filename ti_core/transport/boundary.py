"""The one boundary between redis-py's errors and this package's (``ti_core.errors``).

Every Redis call of the core is inside it: :func:`redis_boundary` on the public functions
that take a client, :func:`redis_calls` around calls in generators and loops, ``connect()``'s
block around everything done with a client it opened,
and :func:`raise_mapped` for errors a pipeline returns instead of raising. All use
:func:`redis_failure`, the single table from a redis-py (or OS) failure to a ``TiError``
with one line naming the redacted location; :func:`connection_lost` is the single answer to
"is Redis gone for now (wait and try again)?" for the loops that ride out outages.
"""

from __future__ import annotations

import functools
import re
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, TypeVar

import redis.asyncio as redis_asyncio
from redis import exceptions as redis_errors

from ti_core.errors import ConfigError, PublishError, RedisUnavailableError, TiError, one_line
from ti_core.transport.client import RedisClient

__all__ = [
    "CLIENT_RETRIES",
    "REFUSED",
    "client_user",
    "connection_lost",
    "describe_client",
    "raise_mapped",
    "redis_boundary",
    "redis_calls",
    "redis_failure",
]

P = ParamSpec("P")
T = TypeVar("T")


def describe_client(client: RedisClient) -> str:
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


# What redis-py's own retry (inside the client, ``ti_core.transport.connection``) tries again.
CLIENT_RETRIES = (redis_errors.ConnectionError, redis_errors.TimeoutError)
# Never worth retrying, although redis-py files them under ConnectionError.
REFUSED = (redis_errors.AuthenticationError, redis_errors.AuthorizationError)
# Redis, or the way to it, is gone for now: unreachable, timed out, still loading its data (a
# ConnectionError in redis-py), a replica refusing writes while a failover promotes another
# server; and the OS's own connection errors.
_LOST = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    ConnectionError,
    TimeoutError,
)
_COMMAND_RIGHT = re.compile(r"run the '([a-z|_-]+)' command", re.IGNORECASE)


def client_user(client: RedisClient) -> str:
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
    """The ``ti_core`` error for a redis-py failure at ``where`` (a redacted URL), or None
    (not a Redis failure, or already a ``TiError``).

    The one place redis-py's errors are translated, by cause: refused credentials, a missing
    ACL right or an untrusted TLS certificate are ``ConfigError`` (never retried; the message
    names the user and the right); unreachable, timed out or a read-only replica mid-failover
    are ``RedisUnavailableError`` (retryable); out of memory, a key of the wrong type or any
    other refusal is ``PublishError``. ``written`` says what the failed call did and did not
    write. Messages carry the redacted location, never the password.
    """
    if isinstance(exc, TiError):
        return None  # ours already: it says what it means
    if isinstance(exc, REFUSED):
        return ConfigError(
            f"Redis at {where} refused the credentials of user {user!r} "
            f"({type(exc).__name__}); check the user name and password in the "
            "Redis URL"
        )
    if _refused_by_acl(exc):
        return ConfigError(
            f"Redis user {user!r} at {where} lacks the right "
            f"{_missing_right(str(exc))} ({_said(exc)}); {written}; "
            "grant it (see the ACL rules in the README)"
        )
    if _untrusted_certificate(exc):
        return ConfigError(
            f"the TLS certificate of {where} is not trusted "
            f"({_said(exc)}); give its CA as ?ssl_ca_certs=/path/ca.pem"
        )
    if isinstance(exc, redis_errors.ReadOnlyError) or str(exc).startswith("READONLY"):
        return RedisUnavailableError(
            f"Redis at {where} is a read-only replica "
            f"({_said(exc)}); {written}; retry once a primary "
            "is back"
        )
    if isinstance(exc, OSError) or connection_lost(exc):
        return RedisUnavailableError(f"Redis at {where} unavailable: {_said(exc)}")
    if isinstance(exc, redis_errors.OutOfMemoryError) or str(exc).startswith("OOM"):
        return PublishError(
            f"Redis at {where} is out of memory (maxmemory reached: "
            f"{_said(exc)}); {written}; free memory or raise maxmemory, "
            "then publish again"
        )
    if "WRONGTYPE" in str(exc):
        return PublishError(
            f"Redis at {where}: a key holds the wrong type of value "
            f"({_said(exc)}); {written}; remove or rename that key"
        )
    if isinstance(exc, redis_errors.RedisError):
        return PublishError(f"Redis at {where} refused a command: {_said(exc)}; {written}")
    return None


def raise_mapped(
    exc: BaseException, client: RedisClient, written: str = "nothing was written"
) -> None:
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


def _said(exc: BaseException) -> str:
    """What redis-py (or the OS) said, with its type, on one line."""
    return one_line(exc, 240, typed=True)


def connection_lost(exc: BaseException) -> bool:
    """True if ``exc`` means Redis (or the way to it) is gone for now: worth waiting for.

    Refused credentials are not (they stay refused), nor is a ``BrokenPipeError``: that is a
    closed *output* (a consumer's stdout), not Redis.
    """
    if isinstance(exc, RedisUnavailableError):
        return True
    if isinstance(exc, (*REFUSED, BrokenPipeError)):
        return False
    return isinstance(exc, _LOST) or str(exc).startswith("READONLY") or _too_few_replicas(exc)


def redis_boundary(
    written: str = "nothing was written",
) -> Callable[
    [Callable[Concatenate[RedisClient, P], Awaitable[T]]],
    Callable[Concatenate[RedisClient, P], Awaitable[T]],
]:
    """:func:`redis_calls` around a whole ``async def f(client, ...)``: a public function of
    the core that takes a client leaves only ``TiError`` (or the caller's own errors)."""

    def wrap(
        function: Callable[Concatenate[RedisClient, P], Awaitable[T]],
    ) -> Callable[Concatenate[RedisClient, P], Awaitable[T]]:
        @functools.wraps(function)
        async def bounded(client: RedisClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
            with redis_calls(client, written):
                return await function(client, *args, **kwargs)

        return bounded

    return wrap


@contextmanager
def redis_calls(client: RedisClient, written: str = "nothing was written") -> Iterator[None]:
    """Around Redis calls on ``client``: a redis-py failure leaves as :func:`redis_failure`'s
    ``TiError`` (``written`` says what the calls did and did not write); ours pass as they are."""
    try:
        yield
    except (redis_errors.RedisError, OSError) as exc:
        raise_mapped(exc, client, written)
        raise
