"""The Prefect flows: ``publish_decision`` (one ticker and date) and ``daily`` (a fan-out).

Each decision is run-arena -> build-envelope -> publish-stream (entry and hash, one script) ->
publish-hash (confirms the hash, or heals an entry found without one), then a
markdown card (``decision-{ticker}-{date}``) and a ``ti.decision.published`` event; a failure
becomes an outcome with its reason, a failure record in Redis (best effort) and a
``ti.decision.failed`` event. A flow run with any failure ends Failed after the others have
published, and its table artifact says which and why.

The correlation id of a decision is derived from (flow run id, ticker, date): a retried flow
run rebuilds the same id, so publishing again finds the entry already written instead of
appending a copy; run-arena and build-envelope results are reused from the first attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from prefect import flow, get_run_logger

from flows.artifacts import artifact_key, write_decision_card, write_run_table
from flows.events import emit_decision_event
from flows.run_settings import flow_run_id, flow_settings
from flows.run_story import daily_run_name, failed_run, scheduled_moment
from flows.tasks import (
    build_envelope,
    configured,
    publish_hash,
    publish_stream,
    record_failure,
    run_arena,
)
from ti_core.arenas.demo import ensure_demo_allowed
from ti_core.arenas.registry import load_arena
from ti_core.arenas.runner import ArenaRunner
from ti_core.backfill.calendar import current_session, sessions
from ti_core.contract.keys import (
    decision_hash_key,
    normalize_ticker,
    normalize_trade_date,
    split_tickers,
)
from ti_core.contract.wire import parse
from ti_core.defaults import CALENDAR
from ti_core.errors import NotPublishedError, ReplicaAckError, TiError, one_line
from ti_core.publish.outcome import DecisionOutcome
from ti_core.publish.scripts import HeldDecision
from ti_core.settings import TiSettings
from ti_core.store.embedded import embedded_store_path

__all__ = ["ON_DECISION", "daily", "decision_correlation_id", "publish_decision", "where_written"]

# Set by the ``ti`` command to follow a run's progress: called with each finished outcome.
ON_DECISION: ContextVar[Callable[[DecisionOutcome], None] | None] = ContextVar(
    "ti_on_decision", default=None
)


def decision_correlation_id(flow_run_id: str, ticker: str, trade_date: str) -> str:
    """Stable across retries of one flow run, different for every new flow run."""
    return hashlib.sha256(f"{flow_run_id}|{ticker}|{trade_date}".encode()).hexdigest()[:32]


def where_written(settings: TiSettings) -> str:
    """Where decisions go, safe to print: the redacted URL or the embedded store's path."""
    if settings.uses_server:
        return settings.redis_url_redacted()
    return f"embedded store {embedded_store_path(settings)}"


def _reason(stage: str, exc: BaseException) -> str:
    """``stage: message`` on one line, at most ~300 characters, for rows, events and records."""
    return f"{stage}: {one_line(exc, 300)}"


def _this_run() -> str:
    """This flow run's id: correlation ids derive from it, so there must be one."""
    run = flow_run_id()
    if run is None:
        raise RuntimeError("a decision is published inside a flow run")
    return run


class _Decision:
    """One (ticker, date) through the four tasks; ``run`` returns its outcome."""

    def __init__(
        self,
        ticker: str,
        trade_date: str,
        runner: ArenaRunner,
        force: bool,
        settings: TiSettings,
        limit: asyncio.Semaphore,
        publish_degraded: bool = False,
    ) -> None:
        self.ticker, self.trade_date, self.runner = ticker, trade_date, runner
        self.force, self.settings, self.limit = force, settings, limit
        self.publish_degraded = publish_degraded
        self.outcome = DecisionOutcome(
            ticker, trade_date, where=where_written(settings), demo=runner.is_demo
        )
        self.error: BaseException | None = None

    async def run(self) -> DecisionOutcome:
        stage = "run-arena"
        s = self.settings
        try:
            async with self.limit:
                state = await configured(run_arena, s)(
                    self.ticker, self.trade_date, self.runner.spec, s.arena_timeout
                )
            stage = "build-envelope"
            cid = decision_correlation_id(_this_run(), self.ticker, self.trade_date)
            envelope_json = await build_envelope(
                state, self.ticker, self.trade_date, cid, self.runner.is_demo, self.publish_degraded
            )
            stage = "publish-stream"  # the entry and its hash, in one script
            stream = await configured(publish_stream, s)(
                envelope_json, self.ticker, self.trade_date, self.force
            )
        except Exception as exc:
            return await self._failed(stage, exc)
        if stream.get("held"):
            return await self._held(envelope_json, HeldDecision(**stream["held"]))
        note = None
        try:  # confirms (or heals) the hash publish-stream already wrote with the entry
            hash_key = await configured(publish_hash, s)(
                envelope_json, self.ticker, self.trade_date, self.force
            )
        except Exception as exc:
            hash_key = decision_hash_key(self.ticker, self.trade_date)
            note = _reason("publish-hash (entry and hash already written together)", exc)
            get_run_logger().warning("%s %s: %s", self.ticker, self.trade_date, note)
        envelope = parse(envelope_json)  # for the row and the card
        self.outcome = DecisionOutcome.of_publish(
            envelope,
            own_entry=stream["own"],
            appended=stream["created"],
            entry_id=stream["entry_id"],
            hash_key=hash_key,
            stream=s.stream_name,
            where=self.outcome.where,
            note=note,
        )
        await write_decision_card(envelope, self.outcome)
        emit_decision_event(self.outcome)
        return self.outcome

    async def _held(self, envelope_json: str, held: HeldDecision) -> DecisionOutcome:
        """A retry that decided otherwise: its correlation id's entry holds another decision
        (the cached arena result was lost and the arena answered anew). The outcome, card and
        event report that entry, which consumers see; the new decision was not published, so
        the item fails (and is recorded as failed: this run's latest decision is not out)."""
        envelope = parse(envelope_json)
        self.outcome = DecisionOutcome.of_publish(
            envelope,
            own_entry=True,
            appended=False,
            entry_id=held.entry_id,
            hash_key=decision_hash_key(self.ticker, self.trade_date),
            stream=self.settings.stream_name,
            where=self.outcome.where,
            held=held,
        )
        error = self.outcome.error or "publish-stream: another decision is on the stream"
        self.error = NotPublishedError(error)
        get_run_logger().warning("%s %s: %s", self.ticker, self.trade_date, error)
        await record_failure(self.ticker, self.trade_date, f"publish-stream: {error}")
        await write_decision_card(envelope, self.outcome)
        emit_decision_event(self.outcome)
        return self.outcome

    async def _failed(self, stage: str, exc: BaseException) -> DecisionOutcome:
        self.error = exc
        error = _reason(stage, exc)
        unacked = isinstance(exc, ReplicaAckError)
        self.outcome = replace(self.outcome, error=error, unacked=unacked)
        get_run_logger().warning("%s %s failed at %s", self.ticker, self.trade_date, error)
        if not unacked:  # consumers may see an unacked decision: not a failure to re-run
            await record_failure(self.ticker, self.trade_date, error)
        emit_decision_event(self.outcome)
        return self.outcome


def _notify(outcome: DecisionOutcome) -> None:
    callback = ON_DECISION.get()
    if callback is not None:
        callback(outcome)


async def _one(decision: _Decision) -> DecisionOutcome:
    outcome = await decision.run()
    _notify(outcome)
    return outcome


@flow(name="publish-decision", flow_run_name="{ticker}-{trade_date}")
async def publish_decision(
    ticker: str,
    trade_date: str,
    arena: str | None = None,
    force: bool = False,
    publish_degraded: bool | None = None,
    allow_demo: bool | None = None,
    arena_timeout: float | None = None,
) -> dict[str, Any]:
    """Run the arena for one (ticker, date) and publish its decision; the flow fails if it does.

    ``arena`` is a runner spec (default ``TI_ARENA``, else the demo); ``force`` appends even an
    identical decision and overwrites a newer lookup hash; ``publish_degraded`` (default
    ``TI_PUBLISH_DEGRADED``) publishes a state with no verdict as HOLD marked degraded
    instead of failing; ``allow_demo`` (default ``TI_ALLOW_DEMO_PUBLISH``) lets the demo
    arena publish to a configured Redis server; ``arena_timeout`` (default
    ``TI_ARENA_TIMEOUT``) fails an arena run that has not returned after that many seconds.
    """
    s = flow_settings(
        allow_demo=allow_demo, publish_degraded=publish_degraded, arena_timeout=arena_timeout
    )
    ticker, trade_date = normalize_ticker(ticker), normalize_trade_date(trade_date)
    runner = load_arena(arena, settings=s)
    ensure_demo_allowed(runner, s)
    decision = _Decision(
        ticker, trade_date, runner, force, s, asyncio.Semaphore(1), s.publish_degraded
    )
    outcome = await _one(decision)
    await write_run_table(
        artifact_key("publish", ticker, trade_date), [outcome], f"publish {ticker} {trade_date}"
    )
    if decision.error is not None:
        return failed_run(decision.error, outcome.error)  # type: ignore[no-any-return]
    get_run_logger().info(
        "%s %s: %s %s, stream entry %s, hash %s",
        ticker,
        trade_date,
        outcome.status,
        outcome.verdict,
        outcome.entry_id,
        outcome.hash_key,
    )
    return outcome.as_row()


def _targets(tickers: list[str] | str, trade_date: str) -> tuple[list[str], list[DecisionOutcome]]:
    """Valid, de-duplicated tickers, and failed outcomes for the invalid ones."""
    good: list[str] = []
    bad: list[DecisionOutcome] = []
    for item in split_tickers(tickers):
        try:
            ticker = normalize_ticker(item)
        except TiError as exc:
            bad.append(DecisionOutcome(str(item)[:20], trade_date, error=_reason("input", exc)))
            continue
        if ticker not in good:
            good.append(ticker)
    return good, bad


@flow(name="daily", flow_run_name=daily_run_name)
async def daily(
    tickers: list[str],
    trade_date: str | None = None,
    arena: str | None = None,
    calendar: str = CALENDAR,
    publish_degraded: bool | None = None,
    allow_demo: bool | None = None,
    arena_timeout: float | None = None,
) -> dict[str, Any]:
    """Publish one decision per ticker for ``trade_date`` (default: today's session).

    With no date on a weekend or holiday it does nothing and says why. Arena runs are limited
    to ``TI_ARENA_CONCURRENCY`` at once. Returns ``{"trade_date", "skipped", "rows"}``; if any
    ticker fails (a hung arena too, after ``arena_timeout``), the flow run fails after the
    others have published. ``publish_degraded``, ``allow_demo`` and ``arena_timeout`` as in
    :func:`publish_decision`.
    """
    s = flow_settings(
        allow_demo=allow_demo, publish_degraded=publish_degraded, arena_timeout=arena_timeout
    )
    logger = get_run_logger()
    if trade_date is None:  # the session this run was scheduled for, even if it starts late
        session, reason = current_session(calendar, now=scheduled_moment())
        if session is None:
            logger.warning("nothing to publish: %s", reason)
            return {"trade_date": None, "skipped": reason, "rows": []}
        trade_date = session
    else:
        plan = sessions(trade_date, trade_date, calendar)
        if not plan.sessions:
            logger.warning(
                "%s is not a session of %s (%s); publishing it as asked",
                plan.start,
                plan.calendar,
                plan.skipped[0][1],
            )
    trade_date = normalize_trade_date(trade_date)
    logger.info("publishing %d ticker(s) for session %s (%s)", len(tickers), trade_date, calendar)
    runner = load_arena(arena, settings=s)
    ensure_demo_allowed(runner, s)
    good, outcomes = _targets(tickers, trade_date)
    for outcome in outcomes:
        _notify(outcome)
    limit = asyncio.Semaphore(s.arena_concurrency)
    outcomes += await asyncio.gather(
        *(_one(_Decision(t, trade_date, runner, False, s, limit, s.publish_degraded)) for t in good)
    )
    await write_run_table(artifact_key("daily", trade_date), outcomes, f"daily {trade_date}")
    failed = [o for o in outcomes if o.failed]
    if failed:
        detail = "; ".join(f"{o.ticker}: {o.error}" for o in failed[:5])
        return failed_run(  # type: ignore[no-any-return]
            TiError(f"{len(failed)} of {len(outcomes)} decisions failed for {trade_date}: {detail}")
        )
    return {"trade_date": trade_date, "skipped": None, "rows": [o.as_row() for o in outcomes]}
