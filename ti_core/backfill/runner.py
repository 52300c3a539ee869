"""Backfills: (ticker, session) items streamed in batches, classified, run and recorded in Redis.

A backfill never holds the whole range: the plan is a generator of :class:`Item` (session by
session, every ticker), consumed in batches. Each batch is classified with one pipelined
round trip (decision hash present = published; a field in the failure hash = failed), the
selected items run through the arena concurrently (bounded), are built, published with
``publish_many`` (idempotent and content-aware, so a re-run adds nothing), and the outcome of
each is recorded: a failure as a failure record (:mod:`ti_core.failures`), a success by
deleting it. One bad item fails only itself.

Redis is reached through a :data:`ClientSource`: a client held for the whole batch, or a
function opening one (``connect``), which a batch opens twice, to classify and then to
publish and record, and never across the arena runs between: with the embedded store an open
client holds the writers' lock, and an arena run can take minutes (an LLM arena: hours for a
batch), during which every other ``ti`` command would wait for the lock and give up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

from ti_core.arenas.demo import DEMO_META
from ti_core.arenas.runner import ArenaRunner, run_bounded
from ti_core.backfill.status import Found, Item, classify
from ti_core.build.builder import build_envelope_from_state
from ti_core.build.verdict import decision_meta
from ti_core.contract.keys import (
    DEFAULT_STREAM_NAME,
    normalize_ticker,
    normalize_trade_date,
    shorten,
)
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.errors import (
    InvalidStateError,
    PublishError,
    RedisUnavailableError,
    one_line,
)
from ti_core.failures import clear_failures, field_of, record_failures
from ti_core.publish.outcome import DecisionOutcome
from ti_core.publish.publisher import (
    DEFAULT_IDEMPOTENCY_TTL,
    PublishResult,
    TrimPolicy,
    publish_many,
)
from ti_core.transport.boundary import connection_lost
from ti_core.transport.client import RedisClient
from ti_core.transport.retry import RetryPolicy, redis_policy, retrying

__all__ = [
    "ONLY_MODES",
    "ClientSource",
    "BatchReport",
    "backfill_batch",
    "batched",
    "plan_items",
    "run_items",
    "selected",
]

logger = logging.getLogger("ti_core.backfill")  # its name before the move

ONLY_MODES: tuple[str, ...] = ("missing", "failed", "all")
T = TypeVar("T")
DEFAULT_REDIS_WAIT = 15.0  # seconds a batch waits for Redis to come back before the run fails
REDIS_WAIT = redis_policy(DEFAULT_REDIS_WAIT)
TASK_RETRY = RetryPolicy()  # the TI_TASK_RETRY* defaults; flows pass task_policy(settings)

# A client used as is (kept open by its owner), or a function opening one for each step that
# reads or writes (``lambda: connect(settings=s)``), closed before any arena runs.
ClientSource = RedisClient | Callable[[], AbstractAsyncContextManager[RedisClient]]


def _session(source: ClientSource) -> AbstractAsyncContextManager[RedisClient]:
    """A client for one step: the given one (left open), or a fresh one from the opener."""
    if callable(source):
        return source()
    return nullcontext(source)


@dataclass(slots=True)
class BatchReport:
    """A batch's skipped items (already published, or not recorded as failed with
    ``only="failed"``, of which ``skipped_unpublished`` are not published either) and
    the outcome of each item it ran, in plan order (``published``, ``unchanged`` and
    ``failed`` as :mod:`ti_core.publish.outcome` defines them, like ``ti run``'s)."""

    planned: int = 0
    skipped: int = 0
    outcomes: list[DecisionOutcome] = field(default_factory=list)
    # Skipped yet not published: ``only="failed"`` passes over a missing item that has no
    # failure record (one an out-of-memory or lost Redis kept from being recorded).
    skipped_unpublished: int = 0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def plan_items(tickers: Iterable[str], session_days: Iterable[str]) -> Iterator[Item]:
    """Every (ticker, session), session by session so the stream stays roughly time-ordered.

    Tickers are normalised and de-duplicated (order kept); raises ``InvalidStateError``.
    """
    names = list(dict.fromkeys(normalize_ticker(t) for t in tickers))
    if not names:
        raise InvalidStateError("no tickers given")
    for day in session_days:
        text = normalize_trade_date(day)
        for ticker in names:
            yield Item(ticker, text)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to ``size`` items, pulled lazily from ``items``."""
    if size < 1:
        raise InvalidStateError(f"batch size must be at least 1, got {size}")
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def selected(found: Found, only: str) -> bool:
    """Whether ``only`` runs an item: missing = not published, failed = has a failure record."""
    if only == "all":
        return True
    if only == "failed":
        return found.failure is not None
    if only == "missing":
        return not found.published
    raise InvalidStateError(f"only must be one of {', '.join(ONLY_MODES)}, got {shorten(only)}")


async def _state_of(
    runner: ArenaRunner,
    item: Item,
    retry: RetryPolicy,
    publish_degraded: bool = False,
    arena_timeout: float = 0.0,
) -> TradingIntelligenceEnvelope | BaseException:
    """Run the arena (retrying what ``is_retryable`` as ``retry`` says; a run past
    ``arena_timeout`` seconds is ``ArenaTimeoutError``, not retried) and build the envelope,
    or the error (``NoVerdictError`` for a state with no verdict, unless
    ``publish_degraded``)."""
    try:
        state = await retrying(
            lambda: run_bounded(runner, item.ticker, item.trade_date, arena_timeout),
            retry,
            what=f"arena run {item.ticker} {item.trade_date}",
        )
        meta = decision_meta(
            state,
            publish_degraded=publish_degraded,
            extra=DEMO_META if runner.is_demo else None,
        )
        return build_envelope_from_state(
            state, ticker=item.ticker, trade_date=item.trade_date, extra_meta=meta
        )
    except Exception as exc:  # one bad item fails only itself
        return exc


async def _build_all(
    runner: ArenaRunner,
    items: Sequence[Item],
    concurrency: int,
    retry: RetryPolicy,
    publish_degraded: bool = False,
    arena_timeout: float = 0.0,
) -> list[TradingIntelligenceEnvelope | BaseException]:
    """Envelopes (or errors) in item order, with at most ``concurrency`` arena runs at once:
    that many workers share one iterator (not a task per item)."""
    built: list[TradingIntelligenceEnvelope | BaseException] = [InvalidStateError("not run")] * len(
        items
    )
    todo = iter(enumerate(items))

    async def worker() -> None:
        for index, item in todo:
            built[index] = await _state_of(runner, item, retry, publish_degraded, arena_timeout)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))
    return built


async def _patiently(call: Callable[[], Awaitable[T]], redis: RetryPolicy, what: str) -> T:
    """``call()``, again and again while Redis is unreachable, as ``redis`` paces it (until
    its deadline); then ``RedisUnavailableError``. Every call here is idempotent."""
    try:
        return await retrying(call, redis, retry_on=connection_lost, what=what)
    except RedisUnavailableError:
        raise
    except Exception as exc:
        if not connection_lost(exc):
            raise
        raise RedisUnavailableError(f"Redis unavailable while {what}: {one_line(exc)}") from exc


async def _publish(
    client: RedisClient,
    envelopes: list[TradingIntelligenceEnvelope],
    publish: dict[str, Any],
    redis: RetryPolicy,
) -> list[PublishResult | PublishError]:
    """``publish_many``, retried while Redis is unreachable (for up to ``redis_wait`` seconds);
    a refused batch is re-published one by one so only the refused envelope fails."""
    try:
        return list(
            await _patiently(
                lambda: publish_many(client, envelopes, **publish), redis, "publishing"
            )
        )
    except RedisUnavailableError:
        raise
    except PublishError:
        if len(envelopes) == 1:
            raise
    out: list[PublishResult | PublishError] = []
    for envelope in envelopes:
        try:
            out.extend(await _publish(client, [envelope], publish, redis))
        except RedisUnavailableError:
            raise
        except PublishError as exc:
            out.append(exc)
    return out


async def run_items(
    source: ClientSource,
    runner: ArenaRunner,
    items: Sequence[Item],
    *,
    stream_name: str = DEFAULT_STREAM_NAME,
    concurrency: int = 4,
    trim: TrimPolicy | None = None,
    idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
    retry: RetryPolicy = TASK_RETRY,
    redis: RetryPolicy = REDIS_WAIT,
    publish_degraded: bool = False,
    arena_timeout: float = 0.0,
) -> list[DecisionOutcome]:
    """Arena + build concurrently (up to ``concurrency``), one ``publish_many``, outcomes recorded.

    A state with no verdict fails its item unless ``publish_degraded``; then it is published
    as HOLD marked ``meta.degraded`` and its outcome's note says so. A transient arena
    failure is retried as ``retry`` says; an arena run past ``arena_timeout`` seconds (0: no
    limit) fails its item with ``ArenaTimeoutError``, not retried. Raises
    ``RedisUnavailableError`` only when Redis stays unreachable past the deadline of ``redis``
    (``redis_policy``):
    nothing else can be recorded then, and a re-run resumes where this one stopped.
    A client opened from ``source`` only after every arena run (see :data:`ClientSource`).
    """
    built = await _build_all(runner, items, concurrency, retry, publish_degraded, arena_timeout)
    async with _session(source) as client:
        return await _publish_and_record(
            client, items, built, stream_name, trim, idempotency_ttl, redis
        )


async def _publish_and_record(
    client: RedisClient,
    items: Sequence[Item],
    built: list[TradingIntelligenceEnvelope | BaseException],
    stream_name: str,
    trim: TrimPolicy | None,
    idempotency_ttl: int,
    redis: RetryPolicy,
) -> list[DecisionOutcome]:
    envelopes = [b for b in built if isinstance(b, TradingIntelligenceEnvelope)]
    publish = {"stream_name": stream_name, "trim": trim, "idempotency_ttl": idempotency_ttl}
    results = iter(await _publish(client, envelopes, publish, redis) if envelopes else [])
    outcomes: list[DecisionOutcome] = []
    for item, value in zip(items, built, strict=True):
        got = next(results) if isinstance(value, TradingIntelligenceEnvelope) else value
        if isinstance(got, PublishResult):
            assert isinstance(value, TradingIntelligenceEnvelope)  # only envelopes publish
            # This run's own entry (appended now, or by a retried/re-split attempt of the same
            # envelope, found by its correlation id) is published; an identical decision
            # another run appended (content-aware) is unchanged, however recent its entry.
            meta = value.meta
            note = f"degraded: {meta.get('degraded_reason')}" if meta.get("degraded") else None
            outcomes.append(
                DecisionOutcome.of_publish(
                    value,
                    own_entry=got.own_entry,
                    appended=got.created,
                    entry_id=got.entry_id,
                    hash_key=got.hash_key,
                    stream=stream_name,
                    note=note,
                    held=got.held,
                )
            )
        else:
            error = one_line(got, 400, typed=True)
            outcomes.append(DecisionOutcome(item.ticker, item.trade_date, error=error))
    await _record(client, outcomes, stream_name, redis)
    return outcomes


async def _record(
    client: RedisClient, outcomes: list[DecisionOutcome], stream_name: str, redis: RetryPolicy
) -> None:
    failed = [o for o in outcomes if o.failed]
    done = [o for o in outcomes if not o.failed]

    async def write() -> None:
        await record_failures(
            client,
            {field_of(o.ticker, o.trade_date): o.error or "" for o in failed},
            stream_name=stream_name,
        )
        await clear_failures(
            client, [field_of(o.ticker, o.trade_date) for o in done], stream_name=stream_name
        )

    try:
        await _patiently(write, redis, "recording outcomes")
    except Exception as exc:  # bookkeeping: never turns published decisions into a failure
        logger.warning(
            "backfill: failure records of %d items not updated (%s); the decisions "
            "themselves are as reported",
            len(outcomes),
            one_line(exc, 300),
        )


async def backfill_batch(
    source: ClientSource,
    runner: ArenaRunner,
    items: Sequence[Item],
    *,
    only: str = "missing",
    stream_name: str = DEFAULT_STREAM_NAME,
    on_classified: Callable[[int], None] | None = None,
    **run_options: Any,
) -> BatchReport:
    """Classify ``items``, run those ``only`` selects (see :func:`run_items`), report all.

    A client from ``source`` is open while classifying and while publishing, not between.
    """
    redis = run_options.get("redis", REDIS_WAIT)
    async with _session(source) as client:
        found = await _patiently(
            lambda: classify(client, items, stream_name=stream_name), redis, "classifying"
        )
    todo = [item for item, f in zip(items, found, strict=True) if selected(f, only)]
    report = BatchReport(planned=len(items), skipped=len(items) - len(todo))
    report.skipped_unpublished = sum(1 for f in found if not f.published and not selected(f, only))
    if on_classified is not None:
        on_classified(report.skipped)
    if todo:
        report.outcomes = await run_items(
            source, runner, todo, stream_name=stream_name, **run_options
        )
    return report
