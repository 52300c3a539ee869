"""The one boundary between redis-py's errors and this package's (``ti_core.errors``).

Every Redis call of the core is inside it: :func:`redis_boundary` on the public functions
that take a client, :func:`redis_calls` around calls in generators and loops, ``connect()``'s
block around everything done with a client it opened,
and :func:`raise_mapped` / :func:`raise_error_replies` for errors a pipeline returns instead of
raising. All use :func:`redis_failure`, the single table from a redis-py (or OS) failure to a
``TiError`` with one line naming the redacted location; :func:`connection_lost` is the single
answer to "is Redis gone for now (wait and try again)?" for the loops that ride out outages.

What a server's error reply *says* is read here and nowhere else: :func:`refusal_of` names it
(a :class:`Refusal`) from redis-py's class or the reply's error code, whichever client answered
(redis-py, fakeredis or the embedded store, which spell some replies differently), and the
predicates (:func:`is_missing_key`, :func:`is_wrong_type`, :func:`is_no_group`,
:func:`is_noscript`) are what the rest of the core asks. No other module looks into an error's
text (``tests/test_boundary.py`` scans for it).
"""

from __future__ import annotations

import functools
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as redis_asyncio
from redis import exceptions as redis_errors

from ti_core.errors import ConfigError, PublishError, RedisUnavailableError, TiError, one_line
from ti_core.transport.client import RedisClient

__all__ = [
    "CLIENT_RETRIES",
    "REFUSED",
    "Refusal",
    "client_user",
    "connection_lost",
    "describe_client",
    "is_missing_key",
    "is_function_missing",
    "is_library_loaded",
    "is_no_group",
    "is_noscript",
    "is_unknown_command",
    "is_wrong_type",
    "raise_error_replies",
    "raise_mapped",
    "redis_boundary",
    "redis_calls",
    "redis_failure",
    "refusal_of",
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


class Refusal(Enum):
    """What a Redis error reply says, by its error code: the refusals the core tells apart."""

    NO_PERMISSION = "NOPERM"  # an ACL refusal: a command, a key, or a command a script called
    READ_ONLY = "READONLY"  # a replica refusing writes (mid-failover)
    OUT_OF_MEMORY = "OOM"  # maxmemory reached
    NO_REPLICAS = "NOREPLICAS"  # min-replicas-to-write refused a write
    NO_SCRIPT = "NOSCRIPT"  # EVALSHA of a script the server does not hold (yet, or any more)
    BUSY_GROUP = "BUSYGROUP"  # XGROUP CREATE of a group that exists
    NO_GROUP = "NOGROUP"  # the consumer group (or its stream) does not exist
    WRONG_TYPE = "WRONGTYPE"  # a key holding another type of value
    MISSING_KEY = "no such key"  # XINFO (and the like) of a key that does not exist
    BUSY = "BUSY"  # a script or function has run past busy-reply-threshold: busy for now
    NO_FUNCTION = "Function not found"  # FCALL of a function the server does not hold (yet)
    LIBRARY_EXISTS = "already exists"  # FUNCTION LOAD of a library the server holds
    UNKNOWN_COMMAND = "unknown command"  # a server too old for the command (FCALL before 7.0)


# redis-py's classes for some codes (its parser picks them; fakeredis and the embedded store
# may answer with a plain ResponseError carrying the code instead).
_BY_CLASS: tuple[tuple[type[Exception], Refusal], ...] = (
    (redis_errors.NoPermissionError, Refusal.NO_PERMISSION),
    (redis_errors.ReadOnlyError, Refusal.READ_ONLY),
    (redis_errors.OutOfMemoryError, Refusal.OUT_OF_MEMORY),
    (redis_errors.NoScriptError, Refusal.NO_SCRIPT),
)
# By the reply's text, tried in this order: a code the server puts first (``^``), or one a
# script's error or a failed MULTI may quote after words of its own (anywhere).
_BY_TEXT: tuple[tuple[Refusal, re.Pattern[str]], ...] = (
    (Refusal.NO_PERMISSION, re.compile(r"NOPERM|can't run this command")),  # a script's too
    (Refusal.READ_ONLY, re.compile(r"^READONLY")),
    (Refusal.OUT_OF_MEMORY, re.compile(r"^OOM")),
    (Refusal.NO_REPLICAS, re.compile(r"^NOREPLICAS")),
    (Refusal.NO_SCRIPT, re.compile(r"^NOSCRIPT")),
    (Refusal.BUSY_GROUP, re.compile(r"^BUSYGROUP")),
    (Refusal.BUSY, re.compile(r"^BUSY\b")),
    (Refusal.NO_FUNCTION, re.compile(r"function not found", re.IGNORECASE)),
    (Refusal.LIBRARY_EXISTS, re.compile(r"library '[^']*' already exists", re.IGNORECASE)),
    (Refusal.UNKNOWN_COMMAND, re.compile(r"unknown command", re.IGNORECASE)),
    (Refusal.NO_GROUP, re.compile(r"NOGROUP ")),  # before MISSING_KEY: it says "No such key"
    (Refusal.WRONG_TYPE, re.compile(r"WRONGTYPE")),
    (Refusal.MISSING_KEY, re.compile(r"no such key", re.IGNORECASE)),
)
# redis-py's words before the server's in an error a pipeline raised.
_PIPELINE_NOTE = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)


def refusal_of(exc: BaseException) -> Refusal | None:
    """What the Redis error reply ``exc`` says, or None (another error, or not a reply)."""
    if not isinstance(exc, redis_errors.RedisError):
        return None
    for kind, refusal in _BY_CLASS:
        if isinstance(exc, kind):
            return refusal
    said = _PIPELINE_NOTE.sub("", str(exc), count=1)
    return next((refusal for refusal, code in _BY_TEXT if code.search(said)), None)


def is_missing_key(exc: BaseException) -> bool:
    """The key a command needs (XINFO STREAM's stream, say) does not exist."""
    return refusal_of(exc) is Refusal.MISSING_KEY


def is_wrong_type(exc: BaseException) -> bool:
    """A key holds another type of value than the command works on."""
    return refusal_of(exc) is Refusal.WRONG_TYPE


def is_no_group(exc: BaseException) -> bool:
    """The consumer group, or its stream, does not exist (alone, or inside a failed MULTI)."""
    return refusal_of(exc) is Refusal.NO_GROUP


def is_noscript(exc: BaseException) -> bool:
    """An EVALSHA named a script the server does not hold: load it and run again."""
    return refusal_of(exc) is Refusal.NO_SCRIPT


def is_function_missing(exc: BaseException) -> bool:
    """An FCALL named a function the server does not hold: load its library and call again."""
    return refusal_of(exc) is Refusal.NO_FUNCTION


def is_library_loaded(exc: BaseException) -> bool:
    """A FUNCTION LOAD found the library already there (another client loaded it first)."""
    return refusal_of(exc) is Refusal.LIBRARY_EXISTS


def is_unknown_command(exc: BaseException) -> bool:
    """The server does not know the command (FCALL on Redis before 7.0)."""
    return refusal_of(exc) is Refusal.UNKNOWN_COMMAND


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
    are ``RedisUnavailableError`` (retryable), and so is a server busy running a script
    (``BUSY``: a long or looping script, until it ends or an admin's ``SCRIPT KILL``); out of
    memory, a key of the wrong type or any other refusal is ``PublishError``. ``written`` says
    what the failed call did and did not write. Messages carry the redacted location, never
    the password.
    """
    if isinstance(exc, TiError):
        return None  # ours already: it says what it means
    if isinstance(exc, REFUSED):
        return ConfigError(
            f"Redis at {where} refused the credentials of user {user!r} "
            f"({type(exc).__name__}); check the user name and password in the "
            "Redis URL"
        )
    refusal = refusal_of(exc)
    if refusal is Refusal.NO_PERMISSION:
        return ConfigError(
            f"Redis user {user!r} at {where} lacks the right "
            f"{_missing_right(str(exc))} ({_said(exc)}); {written}; "
            "grant it (see the ACL rules in docs/publishing.md)"
        )
    if untrusted_certificate(exc):
        return ConfigError(
            f"the TLS certificate of {where} is not trusted "
            f"({_said(exc)}); give its CA as ?ssl_ca_certs=/path/ca.pem"
        )
    if refusal is Refusal.READ_ONLY:
        return RedisUnavailableError(
            f"Redis at {where} is a read-only replica "
            f"({_said(exc)}); {written}; retry once a primary "
            "is back"
        )
    if refusal is Refusal.BUSY:
        return RedisUnavailableError(
            f"Redis at {where} is busy running a script ({_said(exc)}); {written}; "
            "retrying: it answers again when the script ends or an admin runs SCRIPT KILL "
            "(FUNCTION KILL)"
        )
    if isinstance(exc, OSError) or connection_lost(exc):
        return RedisUnavailableError(f"Redis at {where} unavailable: {_said(exc)}")
    if refusal is Refusal.OUT_OF_MEMORY:
        return PublishError(
            f"Redis at {where} is out of memory (maxmemory reached: "
            f"{_said(exc)}); {written}; free memory or raise maxmemory, "
            "then publish again"
        )
    if refusal is Refusal.WRONG_TYPE:
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


def _never(exc: BaseException) -> bool:
    return False


def raise_error_replies(
    replies: Iterable[Any],
    client: RedisClient,
    written: str = "nothing was written",
    *,
    unless: Callable[[BaseException], bool] = _never,
) -> None:
    """Raise :func:`raise_mapped`'s error for the first error among ``replies`` (a pipeline run
    with ``raise_on_error=False``) that ``unless`` does not accept.

    What ``unless`` accepts (a key of the wrong type, say) is a state of the data, which the
    caller reports; a refused right or a lost server is an error of the whole call.
    """
    for reply in replies:
        if isinstance(reply, Exception) and not unless(reply):
            raise_mapped(reply, client, written)


def untrusted_certificate(exc: BaseException) -> bool:
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
    # A replica refusing writes, too few replicas (min-replicas-to-write), or a server busy
    # running a script: back soon.
    return isinstance(exc, _LOST) or refusal_of(exc) in (
        Refusal.READ_ONLY,
        Refusal.NO_REPLICAS,
        Refusal.BUSY,
    )


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
