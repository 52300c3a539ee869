"""Riding out a Redis outage: backoff with jitter, one line when lost, one when back, a deadline.

Readers (``tail``, ``GroupReader.run``) call :meth:`Outage.wait` after each failed attempt and
:meth:`Outage.recovered` after each success. redis-py reconnects by itself on the next command,
so waiting and trying again is all a reconnect takes; what this adds is the pacing (so a
restarting server is not hammered), the two log lines an operator needs, and the point where
waiting stops being useful (``give_up_after`` seconds of continuous failure), which raises
:class:`~ti_core.errors.RedisUnavailableError` with one line. The pauses are a
:class:`~ti_core.transport.retry.RetryPolicy`'s (``TI_REDIS_RETRY_*``, ``TI_RETRY_JITTER``); what
counts as a lost connection is :func:`ti_core.transport.boundary.connection_lost`'s to say.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis import exceptions as redis_errors

from ti_core.errors import RedisUnavailableError, one_line
from ti_core.transport.retry import RetryPolicy, redis_policy

__all__ = ["Outage"]

logger = logging.getLogger("ti_core.reconnect")  # its name before the move


class Outage:
    """The state of one reader's connection: fine, or lost since a given time."""

    def __init__(self, what: str, give_up_after: float, policy: RetryPolicy | None = None) -> None:
        self.what = what
        self.give_up_after = give_up_after
        self.policy = policy or redis_policy(give_up_after)
        self.since: float | None = None
        self.tries = 0
        self.lost = "Redis"

    async def wait(self, exc: BaseException) -> None:
        """After a failure: log once, raise past the deadline, else sleep a jittered backoff."""
        now = time.monotonic()
        if self.since is None:
            self.since, self.tries = now, 0
            redis_side = isinstance(exc, redis_errors.RedisError | RedisUnavailableError)
            self.lost = "Redis" if redis_side else "a connection"
            logger.warning(
                "%s: lost %s (%s); retrying, giving up after %.0f s",
                self.what,
                self.lost,
                one_line(exc, 400),
                self.give_up_after,
            )
        elapsed = now - self.since
        if elapsed >= self.give_up_after:
            raise RedisUnavailableError(
                f"{self.what}: {self.lost} unreachable for {elapsed:.0f} s, giving up "
                f"(last: {one_line(exc, 400)})"
            ) from exc
        delay = self.policy.pause(self.tries)  # jittered: spread the herd
        self.tries += 1
        await asyncio.sleep(min(delay, max(0.0, self.give_up_after - elapsed)))

    def recovered(self) -> None:
        """After a success: if an outage was running, log that it is over."""
        if self.since is not None:
            back = "Redis is back" if self.lost == "Redis" else "working again"
            logger.warning(
                "%s: %s after %.1f s; resuming", self.what, back, time.monotonic() - self.since
            )
            self.since = None
