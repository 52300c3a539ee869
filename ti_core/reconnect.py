"""Riding out a Redis outage: backoff with jitter, one line when lost, one when back, a deadline.

Readers (``tail``, ``GroupReader.run``) call :meth:`Outage.wait` after each failed attempt and
:meth:`Outage.recovered` after each success. redis-py reconnects by itself on the next command,
so waiting and trying again is all a reconnect takes; what this adds is the pacing (so a
restarting server is not hammered), the two log lines an operator needs, and the point where
waiting stops being useful (``give_up_after`` seconds of continuous failure), which raises
:class:`~ti_core.errors.RedisUnavailableError` with one line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from redis import exceptions as redis_errors

from ti_core.errors import RedisUnavailableError

__all__ = ["CONNECTION_LOST", "Outage"]

logger = logging.getLogger(__name__)

# What "the connection to Redis is gone (for now)" looks like: redis-py's own errors (a server
# still loading its data is a ConnectionError too), ours, and the OS's. BrokenPipeError is a
# ConnectionError subclass but means a closed *output*; callers test for it first.
CONNECTION_LOST = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    RedisUnavailableError,
    ConnectionError,
    TimeoutError,
)

_REDIS_LOST = (redis_errors.ConnectionError, redis_errors.TimeoutError, RedisUnavailableError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RedisUnavailableError):
        return str(exc)
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Outage:
    """The state of one reader's connection: fine, or lost since a given time."""

    def __init__(
        self, what: str, give_up_after: float, *, base: float = 0.1, cap: float = 2.0
    ) -> None:
        self.what = what
        self.give_up_after = give_up_after
        self.base = base
        self.cap = cap
        self.since: float | None = None
        self.tries = 0
        self.lost = "Redis"

    async def wait(self, exc: BaseException) -> None:
        """After a failure: log once, raise past the deadline, else sleep a jittered backoff."""
        now = time.monotonic()
        if self.since is None:
            self.since, self.tries = now, 0
            self.lost = "Redis" if isinstance(exc, _REDIS_LOST) else "a connection"
            logger.warning(
                "%s: lost %s (%s); retrying, giving up after %.0f s",
                self.what,
                self.lost,
                _reason(exc),
                self.give_up_after,
            )
        elapsed = now - self.since
        if elapsed >= self.give_up_after:
            raise RedisUnavailableError(
                f"{self.what}: {self.lost} unreachable for {elapsed:.0f} s, giving up "
                f"(last: {_reason(exc)})"
            ) from exc
        self.tries += 1
        delay = min(self.cap, self.base * 2 ** min(self.tries, 16))
        delay = delay / 2 + random.uniform(0, delay / 2)  # equal jitter: spread the herd
        await asyncio.sleep(min(delay, max(0.0, self.give_up_after - elapsed)))

    def recovered(self) -> None:
        """After a success: if an outage was running, log that it is over."""
        if self.since is not None:
            back = "Redis is back" if self.lost == "Redis" else "working again"
            logger.warning(
                "%s: %s after %.1f s; resuming", self.what, back, time.monotonic() - self.since
            )
            self.since = None
