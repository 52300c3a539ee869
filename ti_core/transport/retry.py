"""One retry policy (attempts, first delay, largest delay, jitter) and the one loop that uses it.

Every path that tries again takes its numbers from settings through a :class:`RetryPolicy`:
arena runs in backfills and the pipeline's Prefect tasks (:func:`task_policy`:
``TI_TASK_RETRIES``, ``TI_TASK_RETRY_DELAY``, ``TI_TASK_RETRY_MAX_DELAY``,
``TI_RETRY_JITTER``), and waiting for an unreachable Redis (:func:`redis_policy`:
``TI_REDIS_RETRY_DELAY``, ``TI_REDIS_RETRY_MAX_DELAY``, bounded by a deadline rather than a
count). Delays double from the first to the largest; jitter spreads each one over
``delay * (1 - jitter)`` .. ``delay * (1 + jitter)`` so that many clients do not retry in step.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from ti_core.errors import ConfigError, is_retryable, one_line
from ti_core.settings import TiSettings

__all__ = ["RetryPolicy", "redis_policy", "retrying", "task_policy"]

logger = logging.getLogger("ti_core.retry")  # its name before the move
T = TypeVar("T")


def _default(name: str) -> float:
    """A setting's default: the numbers are defined once, in ``TiSettings``."""
    value = TiSettings.model_fields[name].default
    assert isinstance(value, int | float), name
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to try again.

    ``retries`` counts the attempts after the first; ``deadline`` (seconds, None: none) stops
    earlier, whatever the count: waiting for Redis is bounded by time, not tries.
    """

    retries: int = int(_default("task_retries"))
    delay: float = _default("task_retry_delay")
    max_delay: float = _default("task_retry_max_delay")
    jitter: float = _default("retry_jitter")
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.retries < 0 or self.delay < 0 or self.max_delay < 0:
            raise ConfigError(f"a retry policy needs non-negative numbers: {self}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"retry jitter must be in [0, 1], got {self.jitter}")

    def base_delay(self, retry: int) -> float:
        """The un-jittered pause before retry number ``retry`` (0 for the first)."""
        return min(self.max_delay, math.ldexp(self.delay, min(retry, 64)))

    def pause(self, retry: int) -> float:
        """The pause before retry ``retry``: :meth:`base_delay` spread by the jitter."""
        spread = self.jitter * (2 * random.random() - 1)
        return self.base_delay(retry) * (1 + spread)

    def base_delays(self) -> list[float]:
        """Every un-jittered pause, in order (Prefect's ``retry_delay_seconds``)."""
        return [self.base_delay(n) for n in range(self.retries)]

    def until(self, deadline: float) -> RetryPolicy:
        """This policy bounded by ``deadline`` seconds instead of a count."""
        return replace(self, retries=1 << 30, deadline=deadline)


def task_policy(settings: TiSettings) -> RetryPolicy:
    """Retrying a task or an arena run: ``TI_TASK_RETRIES`` tries, ``TI_TASK_RETRY_*`` pauses."""
    return RetryPolicy(
        retries=settings.task_retries,
        delay=settings.task_retry_delay,
        max_delay=settings.task_retry_max_delay,
        jitter=settings.retry_jitter,
    )


def redis_policy(deadline: float, settings: TiSettings | None = None) -> RetryPolicy:
    """Waiting for an unreachable Redis for up to ``deadline`` seconds (``settings``' pauses,
    else their defaults)."""
    if settings is None:
        return RetryPolicy(
            delay=_default("redis_retry_delay"), max_delay=_default("redis_retry_max_delay")
        ).until(deadline)
    return RetryPolicy(
        delay=settings.redis_retry_delay,
        max_delay=settings.redis_retry_max_delay,
        jitter=settings.retry_jitter,
    ).until(deadline)


async def retrying(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retry_on: Callable[[BaseException], bool] = is_retryable,
    what: str = "",
) -> T:
    """``await call()``, again after a pause while it fails with an error ``retry_on``
    accepts, as ``policy`` allows; the last error (or any other) propagates as it is. An
    error's ``retry_after`` (seconds a provider asked for) lengthens the pause to it, up to
    the policy's largest delay."""
    loop = asyncio.get_running_loop()
    end = None if policy.deadline is None else loop.time() + policy.deadline
    retry = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if retry >= policy.retries or not retry_on(exc):
                raise
            pause = policy.pause(retry)
            asked = getattr(exc, "retry_after", None)  # a provider's Retry-After
            if isinstance(asked, int | float) and asked > pause:
                pause = min(float(asked), policy.max_delay)
            if end is not None:
                left = end - loop.time()
                if left <= 0:
                    raise
                pause = min(pause, left)
            if what:
                logger.warning("%s failed (%s); retrying in %.2fs", what, one_line(exc), pause)
            retry += 1
            await asyncio.sleep(pause)
