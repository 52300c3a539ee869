"""The plan of a backfill dry run: what is published, what failed, what a real run would do.

Shared by the flow (which records it as the ``backfill-plan`` markdown artifact) and ``ti
backfill --dry-run`` (which prints it, without Prefect): to-do sessions are shown per ticker
as runs of consecutive sessions, so a plan over hundreds of sessions stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flows.artifacts import artifact_key
from ti_core.backfill.calendar import SessionPlan
from ti_core.backfill.runner import batched, plan_items, selected
from ti_core.backfill.status import classify
from ti_core.settings import TiSettings
from ti_core.transport.connection import connect

__all__ = ["DryRunPlan", "dry_run_plan", "plan_markdown", "todo_by_ticker"]

_PLAN_CHUNK = 2000


@dataclass
class DryRunPlan:
    """The plan of a dry run: items already published, recorded as failed, and to do."""

    calendar: str
    sessions: list[str]
    skipped_days: list[tuple[str, str]]
    published: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    todo: list[tuple[str, str]] = field(default_factory=list)


async def dry_run_plan(
    names: list[str], plan: SessionPlan, only: str, s: TiSettings, *, record: bool = True
) -> DryRunPlan:
    """Classify every item (in chunks) and, with ``record``, write the ``backfill-plan`` card."""
    result = DryRunPlan(plan.calendar, list(plan.sessions), list(plan.skipped))
    async with connect(settings=s, readonly=True) as client:
        for chunk in batched(plan_items(names, plan.sessions), _PLAN_CHUNK):
            found = await classify(client, chunk, stream_name=s.stream_name)
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
