"""Every error this package raises on purpose derives from :class:`TiError`.

Hierarchy::

    TiError
    ├── InvalidStateError (also ValueError)   the state or arguments cannot make a valid envelope
    │   └── NoVerdictError                    no verdict can be read from the state
    ├── ConfigError                           a setting, URL or arena spec is unusable
    │   └── DemoRefusedError                  the demo arena would publish to a configured server
    ├── PublishError                          a write to Redis did not complete
    │   ├── RedisUnavailableError             connection refused, reset or timed out (retryable)
    │   │   └── ReplicaAckError               fewer replicas than TI_MIN_REPLICAS had a write
    │   │   └── StoreBusyError                the embedded store stayed locked by another process
    │   └── NotPublishedError                 a hash write for an envelope with no stream entry
    ├── ArenaError                            an arena runner failed
    │   ├── ArenaTransientError               a runner's failure that is worth retrying
    │   ├── ArenaTimeoutError                 a run past TI_ARENA_TIMEOUT (not retried)
    │   └── StateNotFoundError                a replayed state file is missing or unreadable
    └── StoreError                            the embedded store's file or directory is unusable
        └── StoreDamagedError                 the store file does not load (left untouched)

Callers catch ``TiError`` for "this package refused", and ``RedisUnavailableError`` or
``ArenaTransientError`` (see :func:`is_retryable`) for "try again later".

:func:`one_line` is the one way an exception becomes a line for a user, a log or a record.
"""

from __future__ import annotations

__all__ = [
    "ArenaError",
    "ArenaTimeoutError",
    "ArenaTransientError",
    "ConfigError",
    "DemoRefusedError",
    "InvalidStateError",
    "NoVerdictError",
    "NotPublishedError",
    "PublishError",
    "RedisUnavailableError",
    "ReplicaAckError",
    "StateNotFoundError",
    "StoreBusyError",
    "StoreDamagedError",
    "StoreError",
    "TiError",
    "clip",
    "is_retryable",
    "one_line",
]


class TiError(Exception):
    """Root of every error raised on purpose by ``ti_core`` and ``flows``."""


class InvalidStateError(TiError, ValueError):
    """The arena state (or a caller argument) cannot become a valid v1 envelope.

    The message names the field and the offending value, truncated. Retrying cannot help.
    """


class NoVerdictError(InvalidStateError):
    """The state carries no verdict (or one that is not BUY, HOLD or SELL).

    Not published by default: a HOLD nobody decided would read as a decision. The message
    names what was missing and the keys the state had; ``--publish-degraded`` (setting
    ``TI_PUBLISH_DEGRADED``) publishes it as HOLD, confidence 0, marked ``meta.degraded``.
    """


class ConfigError(TiError):
    """A setting, Redis URL or arena spec is malformed or cannot be used."""


class DemoRefusedError(ConfigError):
    """The offline demo arena was asked to publish to a configured Redis server."""


class PublishError(TiError):
    """A write to Redis did not complete; nothing is known to be half-written."""


class RedisUnavailableError(PublishError):
    """Redis was unreachable or too slow to answer; safe to retry (writes are idempotent)."""


class ReplicaAckError(RedisUnavailableError):
    """A write reached the primary but not ``TI_MIN_REPLICAS`` replicas in time.

    Consumers may already see it, yet it may vanish if the primary dies now: the message says
    both, never "not published". Retrying is safe (the scripts find their own correlation-id
    record and never append twice).
    """


class NotPublishedError(PublishError):
    """A lookup hash was requested for an envelope that has no stream entry yet."""


class StoreBusyError(RedisUnavailableError):
    """The embedded store stayed locked by another process past the wait (30 s)."""


class ArenaError(TiError):
    """An arena runner failed to produce a state."""


class ArenaTransientError(ArenaError):
    """An arena failure the runner declares temporary (rate limit, timeout): worth retrying.

    ``retry_after``: the seconds the provider asked to wait (its ``Retry-After``), if it said;
    :func:`ti_core.transport.retry.retrying` waits at least that long (up to its policy's
    largest delay).
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ArenaTimeoutError(ArenaError):
    """An arena run did not return within its time limit (``TI_ARENA_TIMEOUT``).

    Not retried: an arena that hung once usually hangs again, and each attempt at a sync
    arena leaves a thread behind that nothing can stop; the item fails with this message and
    ``ti retry`` / ``ti backfill --only failed`` runs it again when asked.
    """


class StateNotFoundError(ArenaError):
    """A replayed arena state file is missing, unreadable or not a JSON object."""


class StoreError(TiError):
    """The embedded store cannot be used: full disk, read-only or missing directory, no rights.

    Raised before anything was written, or after a save that failed and left the file as it
    was. The message names the path and the cause.
    """


class StoreDamagedError(StoreError):
    """The embedded store's file does not load (truncated, altered, empty, not a file).

    The file is left byte for byte as it is; the ``ti`` command adds how to recover (``ti store``).
    """


def is_retryable(exc: BaseException) -> bool:
    """True for failures that a later attempt may cure: Redis unreachable or a transient arena."""
    return isinstance(exc, RedisUnavailableError | ArenaTransientError)


def clip(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut (``None``: no limit)."""
    if limit is None or len(text) <= limit:
        return text
    return text[: max(limit - 3, 0)] + "..."


def one_line(exc: BaseException, limit: int | None = 300, *, typed: bool | None = None) -> str:
    """``exc`` as one line of at most ``limit`` characters, whitespace collapsed.

    A ``TiError``'s message is written for users and stands alone; any other exception reads
    ``Type: message`` (its type is often the only clue). ``typed`` forces the type on (True)
    or off (False). A ``__str__`` that fails gives the type alone, never a second error.
    """
    try:
        text = " ".join(str(exc).split())
    except Exception:
        text = ""
    name = type(exc).__name__
    if typed if typed is not None else not isinstance(exc, TiError):
        text = f"{name}: {text}" if text else name
    return clip(text or name, limit)
