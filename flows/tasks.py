"""The pipeline's Prefect tasks: run-arena, build-envelope, publish-stream, publish-hash.

Tasks take and return plain values (a state dict, an envelope as JSON text, an entry id) and
open their own Redis client, so a retry or a retried flow run starts from clean inputs. The
envelope is serialised once, by build-envelope, which returns its JSON text (a plain ``str``,
exactly the stream payload); each publish task parses that text once and publishes it as it
is, with the digest read from it (``Serialised.read``): never serialised again.

- Retries (``TI_TASK_RETRIES``, first delay ``TI_TASK_RETRY_DELAY`` doubling, with jitter)
  happen only when :func:`ti_core.errors.is_retryable` says so: Redis unreachable or a
  runner's :class:`ArenaTransientError`. An invalid state fails at once with the builder's
  message.
- run-arena and build-envelope persist their results under a cache key of their inputs plus
  the flow run id: retrying a flow run reuses what already succeeded (no second arena run,
  the same envelope and correlation id), while a new flow run computes afresh. The publish
  tasks are not cached; they are idempotent by correlation id instead.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

from prefect import Task, task
from prefect.cache_policies import INPUTS, NO_CACHE, RUN_ID
from prefect.client.schemas.objects import State, TaskRun
from prefect.runtime import task_run as prefect_task_run

from flows.run_settings import run_settings
from flows.run_story import one_line_task_failures, run_logger
from ti_core.arenas.demo import DEMO_META
from ti_core.arenas.registry import load_arena
from ti_core.arenas.runner import run_bounded
from ti_core.build.builder import build_envelope_from_state
from ti_core.build.verdict import decision_meta
from ti_core.contract.wire import Serialised, serialise
from ti_core.errors import ArenaTransientError, InvalidStateError, is_retryable, one_line
from ti_core.failures import clear_failures, field_of, record_failures
from ti_core.publish.outcome import conflict_message
from ti_core.publish.publisher import TrimPolicy, publish_decision_hash, publish_many
from ti_core.settings import TiSettings
from ti_core.transport.connection import connect
from ti_core.transport.retry import task_policy

__all__ = [
    "build_envelope",
    "configured",
    "publish_hash",
    "publish_stream",
    "record_failure",
    "retry_worthy",
    "run_arena",
]

logger = logging.getLogger(__name__)
one_line_task_failures()  # the UI's Logs open on the cause, not on its traceback
_CACHED = INPUTS + RUN_ID


def retry_worthy(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry only what a later attempt may cure."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:
            return False
    return isinstance(exc, BaseException) and is_retryable(exc)


@task(
    name="run-arena",
    task_run_name="run-arena-{ticker}-{trade_date}",
    cache_policy=_CACHED,
    persist_result=True,
    retry_condition_fn=retry_worthy,
)
async def run_arena(
    ticker: str, trade_date: str, arena: str | None = None, timeout: float = 0.0
) -> dict[str, Any]:
    """The arena's post-run state for (ticker, date), from the runner ``arena`` names;
    ``ArenaTimeoutError`` (not retried) after ``timeout`` seconds (0: no limit)."""
    settings = run_settings()
    runner = load_arena(arena, settings=settings)
    try:
        state = await run_bounded(runner, ticker, trade_date, timeout)
    except ArenaTransientError as exc:
        await _rest_of_retry_after(exc, settings, ticker, trade_date)
        raise
    run_logger(__name__).info(
        "%s %s: arena %s returned its state (%d keys)", ticker, trade_date, runner.spec, len(state)
    )
    return state


async def _rest_of_retry_after(
    exc: ArenaTransientError, settings: TiSettings, ticker: str, trade_date: str
) -> None:
    """Prefect waits its own delay before a retry; when the provider asked for longer
    (``Retry-After``), the rest of it (up to ``TI_TASK_RETRY_MAX_DELAY``) is waited here, unless
    this was the last attempt."""
    if exc.retry_after is None:
        return
    policy = task_policy(settings)
    attempt = max(1, int(prefect_task_run.run_count))  # 1 on the first attempt
    if attempt > policy.retries:
        return
    rest = min(exc.retry_after, policy.max_delay) - policy.base_delay(attempt - 1)
    if rest > 0:
        run_logger(__name__).info(
            "%s %s: waiting %.2f s more before the retry, as the provider asked (Retry-After)",
            ticker,
            trade_date,
            rest,
        )
        await asyncio.sleep(rest)


@task(
    name="build-envelope",
    task_run_name="build-envelope-{ticker}-{trade_date}",
    cache_policy=_CACHED,
    persist_result=True,
)
async def build_envelope(
    state: dict[str, Any],
    ticker: str,
    trade_date: str,
    correlation_id: str,
    demo: bool = False,
    publish_degraded: bool = False,
) -> str:
    """The v1 envelope as JSON (its stream payload); the same inputs in the same flow run
    give the same envelope.

    A state with no verdict raises ``NoVerdictError`` unless ``publish_degraded``.
    """
    envelope = build_envelope_from_state(
        state,
        correlation_id=correlation_id,
        extra_meta=decision_meta(
            state, publish_degraded=publish_degraded, extra=DEMO_META if demo else None
        ),
        ticker=ticker,
        trade_date=trade_date,
    )
    envelope_json, _ = serialise(envelope)  # the one serialisation of this decision
    synthesis = envelope.decision.synthesis
    run_logger(__name__).info(
        "%s %s: envelope built: %s, confidence %.2f, correlation id %s, %d bytes",
        ticker,
        trade_date,
        synthesis.verdict,
        synthesis.confidence,
        correlation_id,
        len(envelope_json),
    )
    return envelope_json


def _read(envelope_json: str, ticker: str, trade_date: str) -> Serialised:
    """build-envelope's text, parsed once; ``ticker`` and ``trade_date`` name the task run
    (as they do run-arena's and build-envelope's), so they must be the envelope's."""
    wire = Serialised.read(envelope_json)
    target = wire.envelope.decision.target
    if (target.ticker, target.trade_date) != (ticker, trade_date):
        raise InvalidStateError(
            f"the envelope is for {target.ticker} {target.trade_date}, "
            f"not {ticker} {trade_date} as the task run is named"
        )
    return wire


@task(
    name="publish-stream",
    task_run_name="publish-stream-{ticker}-{trade_date}",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_worthy,
)
async def publish_stream(
    envelope_json: str, ticker: str, trade_date: str, force: bool = False
) -> dict[str, Any]:
    """Write the entry AND its lookup hash in one script (``publish_many``): no failure after
    this task can leave the entry without its hash. A retry gets the same entry id.

    Returns ``{"entry_id", "created", "own", "hash_written", "held"}``: ``created`` is True
    when this call appended; ``own`` when the entry is this envelope's (this call or an
    earlier attempt of it), False when an identical decision already on the stream was
    returned instead; ``held`` (a ``HeldDecision`` as a dict) when the correlation id's entry
    holds another decision (a retry that decided otherwise: nothing of it was written).
    """
    s = run_settings()
    wire = _read(envelope_json, ticker, trade_date)
    envelope = wire.envelope
    async with connect(settings=s) as client:
        (result,) = await publish_many(
            client,
            [wire],
            stream_name=s.stream_name,
            force=force,
            trim=TrimPolicy.from_settings(s),
            idempotency_ttl=s.idempotency_ttl_seconds,
        )
    target = envelope.decision.target
    if result.held is not None:
        done = conflict_message(result.held, envelope)
    elif result.created:
        done = f"appended entry {result.entry_id} to {s.stream_name}" + (
            ", with its lookup hash" if result.hash_written else ""
        )
    elif result.own_entry:
        done = f"entry {result.entry_id} was appended by an earlier attempt (not appended again)"
    else:
        done = f"the same decision is already on the stream as entry {result.entry_id}"
    run_logger(__name__).info("%s %s: %s", target.ticker, target.trade_date, done)
    return {
        "entry_id": result.entry_id,
        "created": result.created,
        "own": result.own_entry,
        "hash_written": result.hash_written,
        "held": None if result.held is None else asdict(result.held),
    }


@task(
    name="publish-hash",
    task_run_name="publish-hash-{ticker}-{trade_date}",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_worthy,
)
async def publish_hash(
    envelope_json: str, ticker: str, trade_date: str, force: bool = False
) -> str:
    """Confirm the lookup hash publish-stream wrote (or write it for an entry found without
    one), then clear the pair's failure record: best effort, a failed clear never fails the
    decision, which is published."""
    s = run_settings()
    wire = _read(envelope_json, ticker, trade_date)
    target = wire.envelope.decision.target
    async with connect(settings=s) as client:
        key = await publish_decision_hash(client, wire, force=force, stream_name=s.stream_name)
        try:
            await clear_failures(
                client, [field_of(target.ticker, target.trade_date)], stream_name=s.stream_name
            )
        except Exception as exc:  # bookkeeping only: the decision itself is published
            logger.warning(
                "%s %s: failure record not cleared (%s)",
                target.ticker,
                target.trade_date,
                one_line(exc, 200),
            )
    run_logger(__name__).info(
        "%s %s: lookup hash %s confirmed", target.ticker, target.trade_date, key
    )
    return key


async def record_failure(ticker: str, trade_date: str, reason: str) -> bool:
    """Best effort: note a failed pair in the failure hash (for ``ti status``); False if not."""
    s = run_settings()
    try:
        async with connect(settings=s) as client:
            await record_failures(
                client, {field_of(ticker, trade_date): reason}, stream_name=s.stream_name
            )
    except Exception:  # Redis is often the reason we are here; the flow still reports it
        return False
    return True


def configured(t: Task[Any, Any], settings: TiSettings) -> Task[Any, Any]:
    """``t`` with the retry policy from settings (retrying tasks only)."""
    if t.retry_condition_fn is None:
        return t
    policy = task_policy(settings)
    return t.with_options(
        retries=policy.retries,
        retry_delay_seconds=policy.base_delays() or [policy.delay],
        retry_jitter_factor=policy.jitter,
    )
