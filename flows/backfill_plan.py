"""The plan of a backfill dry run: what is published, what failed, what a real run would do.

Shared by the flow (which records it as the ``backfill-plan`` markdown artifact) and ``ti
backfill --dry-run`` (which prints it, without Prefect): to-do sessions are shown per ticker
as runs of consecutive sessions, so a plan over hundreds of sessions stays readable.

A dry run classifies every item in Redis and keeps every item to do: its time and memory
grow with sessions x tickers, so a plan over ``max_items`` (``DRY_RUN_MAX_ITEMS`` by
default) is refused before anything is read, naming its size (``ti backfill --dry-run``
prints that size first, and takes ``--max-items``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flows.artifacts import artifact_key
from ti_core.backfill.calendar import SessionPlan
from ti_core.backfill.runner import batched, plan_items, selected
from ti_core.backfill.status import classify
from ti_core.errors import InvalidStateError
from ti_core.settings import TiSettings
from ti_core.transport.connection import connect

__all__ = [
    "DRY_RUN_MAX_ITEMS",
    "ESTIMATE_AFTER",
    "DryRunPlan",
    "check_plan_size",
    "dry_run_plan",
    "plan_markdown",
    "todo_by_ticker",
]

_PLAN_CHUNK = 2000
# About 4 years of sessions x 1,000 tickers; its plan holds at most that many items to do.
DRY_RUN_MAX_ITEMS = 1_000_000
ESTIMATE_AFTER = 5 * _PLAN_CHUNK  # items read before the time left is estimated


@dataclass
class DryRunPlan:
    """The plan of a dry run: items already published, recorded as failed, and to do."""

    calendar: str
    sessions: list[str]
    skipped_days: list[tuple[str, str]]
    published: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    todo: list[tuple[str, str]] = field(default_factory=list)


def check_plan_size(names: list[str], plan: SessionPlan, max_items: int) -> int:
    """The number of items of the plan; ``InvalidStateError`` if over ``max_items`` (0: no
    limit), before anything is read."""
    total = len(names) * len(plan.sessions)
    if max_items and total > max_items:
        raise InvalidStateError(
            f"a dry run of {total:,} items ({len(plan.sessions):,} sessions x {len(names):,} "
            f"tickers) is over the limit of {max_items:,}: it would read each from Redis and "
            "hold every item to do in memory; narrow --start/--end or --tickers, or raise "
            "--max-items"
        )
    return total


async def dry_run_plan(
    names: list[str],
    plan: SessionPlan,
    only: str,
    s: TiSettings,
    *,
    record: bool = True,
    max_items: int = DRY_RUN_MAX_ITEMS,
    on_estimate: Callable[[float], None] | None = None,
) -> DryRunPlan:
    """Classify every item (in chunks) and, with ``record``, write the ``backfill-plan`` card.

    Refused (``InvalidStateError``) over ``max_items`` items (0: no limit). ``on_estimate``
    is called once, after the first chunks, with the seconds the rest should take at the
    rate measured so far (when there is a rest)."""
    total = check_plan_size(names, plan, max_items)
    result = DryRunPlan(plan.calendar, list(plan.sessions), list(plan.skipped))
    started, done = time.monotonic(), 0
    async with connect(settings=s, readonly=True) as client:
        for chunk in batched(plan_items(names, plan.sessions), _PLAN_CHUNK):
            found = await classify(client, chunk, stream_name=s.stream_name)
            done += len(chunk)
            if on_estimate is not None and done == ESTIMATE_AFTER and done < total:
                on_estimate((time.monotonic() - started) / done * (total - done))
            for item, f in zip(chunk, found, strict=True):
                result.published += f.published
                if f.failure is not None:
                    result.failed[item.field] = f.failure
                if selected(f, only):
                    result.todo.append((item.ticker, item.trade_date))
    if record:
        from prefect.artifacts import acreate_markdown_artifact  # ti backfill --dry-run: no Prefect

        await acreate_markdown_artifact(
            key=artifact_key("backfill", "plan"),
            markdown=plan_markdown(result, names, only),
            description=f"backfill dry run {plan.start}..{plan.end}",
        )
    return result


def _ranges(days: list[str], session_list: list[str]) -> str:
    """``2026-05-01..2026-05-29 (20)`` runs of consecutive sessions, comma-separated."""
    index = {d: i for i, d in enumerate(session_list)}
    runs: list[list[str]] = []
    for day in days:
        if runs and index[day] == index[runs[-1][-1]] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]}..{r[-1]} ({len(r)})" for r in runs)


def todo_by_ticker(plan: DryRunPlan) -> dict[str, str]:
    """Each ticker's to-do sessions as runs of consecutive sessions."""
    by_ticker: dict[str, list[str]] = {}
    for ticker, day in plan.todo:
        by_ticker.setdefault(ticker, []).append(day)
    return {t: _ranges(days, plan.sessions) for t, days in by_ticker.items()}


def plan_markdown(plan: DryRunPlan, names: list[str], only: str) -> str:
    """The dry run's plan: sessions, skipped days, already published, failed, and to do."""
    total = len(names) * len(plan.sessions)
    lines = [
        f"# Backfill plan (dry run, only={only}, calendar {plan.calendar})",
        "",
        f"- {len(plan.sessions)} sessions x {len(names)} tickers = {total} items",
        f"- already published: {plan.published}; recorded as failed: {len(plan.failed)}",
        f"- **to do: {len(plan.todo)}**",
        "",
    ]
    if plan.skipped_days:
        lines += ["## Skipped days", ""]
        lines += [f"- {d}: {r}" for d, r in plan.skipped_days if r != "weekend"]
        weekends = sum(1 for _, r in plan.skipped_days if r == "weekend")
        lines += [f"- {weekends} weekend days", ""]
    lines += ["## To do", "", "| ticker | sessions |", "|---|---|"]
    lines += [f"| {t} | {ranges} |" for t, ranges in todo_by_ticker(plan).items()]
    if plan.failed:
        lines += ["", "## Recorded failures", "", "| item | reason |", "|---|---|"]
        lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in plan.failed.items()]
    return "\n".join(lines)
