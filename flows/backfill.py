"""The ``backfill`` flow: every (ticker, session) of a date range, in batches, resumable.

One Prefect task per batch of ``TI_BATCH_SIZE`` items (not per item), so orchestration costs a
few milliseconds per hundreds of decisions; each batch task classifies its items in Redis,
runs the arena for those ``only`` selects (concurrently, up to ``concurrency``), publishes
them with ``publish_many``, records failures in Redis and returns each item's outcome. The
flow writes a table artifact per batch, keeps a progress artifact current, writes a summary
table that names every failed item and its reason, and ends Failed if any item failed, after
publishing all the others. A dry run classifies only, records the plan as markdown and
publishes nothing.

Re-running is always safe: published items are skipped (``only="missing"``), and publishing is
idempotent and content-aware, so even ``only="all"`` adds nothing for identical decisions.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

from prefect import flow, task
from prefect.artifacts import (
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, get_run_context
from prefect.exceptions import MissingContextError
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.artifacts import artifact_key
from flows.backfill_plan import DryRunPlan, dry_run_plan
from flows.run_settings import flow_settings, run_settings
from flows.run_story import run_logger
from ti_core.arenas.demo import ensure_demo_allowed
from ti_core.arenas.registry import load_arena
from ti_core.backfill.calendar import SessionPlan, sessions
from ti_core.backfill.runner import (
    DEFAULT_REDIS_WAIT,
    ONLY_MODES,
    BatchReport,
    backfill_batch,
    batched,
    plan_items,
)
from ti_core.backfill.status import Item
from ti_core.contract.keys import parse_tickers, shorten
from ti_core.defaults import CALENDAR
from ti_core.errors import InvalidStateError, TiError
from ti_core.publish.outcome import DecisionOutcome
from ti_core.publish.publisher import TrimPolicy
from ti_core.transport.connection import connect
from ti_core.transport.retry import redis_policy, task_policy

__all__ = [
    "ON_PROGRESS",
    "BackfillSummary",
    "backfill",
    "backfill_batch_task",
]

# Set by ``ti backfill`` to draw its progress bar: called with each finished batch's report.
ON_PROGRESS: ContextVar[Callable[[BatchReport], None] | None] = ContextVar(
    "ti_backfill_progress", default=None
)
_SUMMARY_FAILED_IN_ERROR = 5
_BATCHES_IN_FLIGHT = 2
_WRITES_IN_FLIGHT = 4


@dataclass
class BackfillSummary:
    """What a run did: counts, the calendar's skipped days, and every failed item with why."""

    calendar: str
    sessions: int
    skipped_days: list[tuple[str, str]]
    planned: int = 0
    skipped: int = 0
    published: int = 0
    unchanged: int = 0
    failed: list[DecisionOutcome] = field(default_factory=list)
    # Of ``skipped``: not published either (``only="failed"`` with no failure record).
    skipped_unpublished: int = 0

    def add(self, report: BatchReport) -> None:
        self.planned += report.planned
        self.skipped += report.skipped
        self.skipped_unpublished += report.skipped_unpublished
        self.published += report.count("published")
        self.unchanged += report.count("unchanged")
        self.failed.extend(o for o in report.outcomes if o.failed)


def _in_run() -> bool:
    try:
        get_run_context()
    except MissingContextError:  # ``backfill.fn`` outside a flow run: nowhere to attach it
        return False
    return True


@task(name="backfill-batch", cache_policy=NO_CACHE, task_run_name="batch-{number}")
async def backfill_batch_task(
    pairs: list[tuple[str, str]],
    number: int,
    arena: str | None = None,
    only: str = "missing",
    concurrency: int | None = None,
    publish_degraded: bool = False,
    arena_timeout: float | None = None,
) -> BatchReport:
    """Classify, run, publish and record one batch; the report has each item's outcome."""
    s = run_settings()
    runner = load_arena(arena, settings=s)
    items = [Item(t, d) for t, d in pairs]
    return await backfill_batch(
        lambda: connect(settings=s),  # opened to read, then to write: never across arenas
        runner,
        items,
        only=only,
        stream_name=s.stream_name,
        concurrency=concurrency or s.arena_concurrency,
        trim=TrimPolicy(s.stream_maxlen, s.stream_trim_approximate),
        idempotency_ttl=s.idempotency_ttl_seconds,
        publish_degraded=publish_degraded,
        arena_timeout=s.arena_timeout if arena_timeout is None else arena_timeout,
        retry=task_policy(s),
        redis=redis_policy(DEFAULT_REDIS_WAIT, s),
    )


def _batch_row(outcome: DecisionOutcome) -> dict[str, Any]:
    """A batch table's row, the columns it always had: ``reason`` is the error of a failed
    item, the note (``degraded: ...``) of a degraded one."""
    return {
        "ticker": outcome.ticker,
        "trade_date": outcome.trade_date,
        "status": outcome.status,
        "entry_id": outcome.entry_id or "",
        "reason": outcome.error or outcome.note or "",
    }


class _ApiWrites:
    """Artifact writes kept off the batches' path (each is a round trip of ~0.1 s to a busy
    server): a table per batch and the progress, at most a few in flight, all awaited at the
    end. Progress skips an update while the previous one is still being written."""

    def __init__(self, progress_id: Any, total: int) -> None:
        self.progress_id, self.total = progress_id, max(total, 1)
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.progress_write: asyncio.Future[Any] | None = None

    def _add(self, write: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.ensure_future(write)
        self.pending.append(future)
        return future

    async def batch_done(self, number: int, report: BatchReport, planned: int) -> None:
        if report.outcomes:
            self._add(
                acreate_table_artifact(
                    table=[_batch_row(o) for o in report.outcomes],
                    description=f"backfill batch {number}: {len(report.outcomes)} items run, "
                    f"{report.skipped - report.skipped_unpublished} already published"
                    + (
                        f", {report.skipped_unpublished} not published and not run (no "
                        "failure record)"
                        if report.skipped_unpublished
                        else ""
                    ),
                )
            )
        if self.progress_write is None or self.progress_write.done():
            self.progress_write = self._add(
                aupdate_progress_artifact(self.progress_id, 100.0 * planned / self.total)
            )
        while len(self.pending) > _WRITES_IN_FLIGHT:
            await self.pending.popleft()

    async def close(self, planned: int) -> None:
        """Wait for every write (errors included), then set the final progress."""
        results = await asyncio.gather(*self.pending, return_exceptions=True)
        self.pending.clear()
        await aupdate_progress_artifact(self.progress_id, 100.0 * planned / self.total)
        for result in results:
            if isinstance(result, BaseException):
                raise result


async def _summary_artifacts(summary: BackfillSummary, title: str) -> None:
    rows = [
        {"ticker": o.ticker, "trade_date": o.trade_date, "status": "failed", "reason": o.error}
        for o in summary.failed
    ]
    rows.append(
        {
            "ticker": "(all)",
            "trade_date": "",
            "status": "summary",
            "reason": f"{summary.planned} planned, {summary.skipped} skipped "
            f"({summary.skipped_unpublished} of them not published), "
            f"{summary.published} published, {summary.unchanged} unchanged, "
            f"{len(summary.failed)} failed",
        }
    )
    await acreate_table_artifact(
        key=artifact_key("backfill", "summary"), table=rows, description=title
    )


def _progress_callback() -> Callable[[BatchReport], None] | None:
    # Read through a function: a flow body naming the ContextVar cannot be pickled (Dask).
    return ON_PROGRESS.get()


def _distributed_runner() -> bool:
    """True when the flow runs with a task runner other than Prefect's in-process thread pool."""
    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None)
    return runner is not None and not isinstance(runner, ThreadPoolTaskRunner)


async def _run_batches(
    names: list[str],
    plan: SessionPlan,
    arena: str,
    only: str,
    concurrency: int | None,
    batch_size: int,
    summary: BackfillSummary,
    writes: _ApiWrites,
    degraded: bool = False,
    arena_timeout: float = 0.0,
) -> None:
    """Two batch tasks in flight (one's Redis and API round trips overlap the other's arena and
    build work); reports are taken in plan order."""
    callback = _progress_callback()
    distributed = _distributed_runner()
    in_flight: deque[tuple[int, asyncio.Future[BatchReport]]] = deque()

    async def finish() -> None:
        number, pending = in_flight.popleft()
        report = await pending
        summary.add(report)
        if callback is not None:
            callback(report)
        await writes.batch_done(number, report, summary.planned)

    try:
        for number, chunk in enumerate(
            batched(plan_items(names, plan.sessions), batch_size), start=1
        ):
            pairs = [(i.ticker, i.trade_date) for i in chunk]
            if distributed:  # Dask and the like: the runner places the batch on a worker
                submitted = backfill_batch_task.submit(
                    pairs, number, arena, only, concurrency, degraded, arena_timeout
                )
                result = cast("Callable[[], BatchReport]", submitted.result)  # sync on a worker
                pending: asyncio.Future[BatchReport] = asyncio.ensure_future(
                    asyncio.to_thread(result)
                )
            else:  # in process: run on the flow's own loop, the cheapest path
                quoted = cast("list[tuple[str, str]]", quote(pairs))  # Prefect need not walk
                pending = asyncio.ensure_future(
                    backfill_batch_task(
                        quoted, number, arena, only, concurrency, degraded, arena_timeout
                    )
                )
            in_flight.append((number, pending))
            if len(in_flight) >= _BATCHES_IN_FLIGHT:
                await finish()
        while in_flight:
            await finish()
    finally:
        for _, pending in in_flight:
            pending.cancel()
        await asyncio.gather(*(p for _, p in in_flight), return_exceptions=True)


@flow(name="backfill", flow_run_name="backfill-{start}-{end}")
async def backfill(
    tickers: list[str],
    start: str,
    end: str,
    arena: str | None = None,
    calendar: str = CALENDAR,
    only: str = "missing",
    dry_run: bool = False,
    concurrency: int | None = None,
    publish_degraded: bool | None = None,
    allow_demo: bool | None = None,
    arena_timeout: float | None = None,
) -> BackfillSummary | DryRunPlan:
    """Publish every (ticker, session) from ``start`` to ``end`` (inclusive) that ``only`` selects.

    ``only``: ``missing`` (not yet published, the default), ``failed`` (recorded failures) or
    ``all``. ``dry_run`` returns the plan and publishes nothing. ``publish_degraded`` (default
    ``TI_PUBLISH_DEGRADED``) publishes states with no verdict as HOLD marked degraded;
    ``allow_demo`` (default ``TI_ALLOW_DEMO_PUBLISH``) lets the demo arena publish to a
    configured Redis server; ``arena_timeout`` (default ``TI_ARENA_TIMEOUT``) fails an arena
    run that has not returned after that many seconds. Ends Failed, naming each failed item,
    if any item failed.
    """
    if only not in ONLY_MODES:
        raise InvalidStateError(f"only must be one of {', '.join(ONLY_MODES)}, got {shorten(only)}")
    s = flow_settings(
        allow_demo=allow_demo, publish_degraded=publish_degraded, arena_timeout=arena_timeout
    )
    names = parse_tickers(tickers)
    plan = sessions(start, end, calendar)
    runner = load_arena(arena, settings=s)
    run_logger(__name__).info(
        "%d sessions x %d tickers (%d days skipped: weekends and holidays)",
        len(plan.sessions),
        len(names),
        len(plan.skipped),
    )
    if dry_run:
        return await dry_run_plan(names, plan, only, s, record=_in_run())
    ensure_demo_allowed(runner, s)
    summary = BackfillSummary(plan.calendar, len(plan.sessions), list(plan.skipped))
    total = len(names) * len(plan.sessions)
    progress = await acreate_progress_artifact(
        progress=0.0,
        key=artifact_key("backfill", "progress"),
        description=f"backfill {plan.start}..{plan.end}: {total} items",
    )
    writes = _ApiWrites(progress, total)
    try:
        await _run_batches(
            names,
            plan,
            runner.spec,
            only,
            concurrency,
            s.batch_size,
            summary,
            writes,
            s.publish_degraded,
            s.arena_timeout,
        )
    finally:
        await writes.close(summary.planned)
    await _summary_artifacts(summary, f"backfill {plan.start}..{plan.end} ({only})")
    if summary.failed:
        detail = "; ".join(
            f"{o.ticker} {o.trade_date}: {o.error}"
            for o in summary.failed[:_SUMMARY_FAILED_IN_ERROR]
        )
        more = len(summary.failed) - _SUMMARY_FAILED_IN_ERROR
        raise TiError(
            f"{len(summary.failed)} of {summary.planned - summary.skipped} backfill "
            f"items failed: {detail}" + (f" (and {more} more)" if more > 0 else "")
        )
    return summary
