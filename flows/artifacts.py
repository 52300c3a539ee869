"""Prefect artifacts: one markdown card per decision, one table per flow run.

Artifact keys must be lowercase letters, digits and dashes, so every key is made by
:func:`artifact_key` (``decision``, ``BRK.B``, ``2026-05-12`` -> ``decision-brk-b-2026-05-12``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ti_core.contract.models import TradingIntelligenceEnvelope

from ti_core.publish.outcome import DecisionOutcome

__all__ = ["artifact_key", "decision_card", "run_table", "write_decision_card", "write_run_table"]

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def artifact_key(*parts: Any) -> str:
    """A Prefect artifact key from ``parts``: lowercase, runs of other characters become '-'."""
    text = "-".join(str(p) for p in parts if p is not None and str(p) != "")
    slug = _NOT_SLUG.sub("-", text.lower()).strip("-")
    if not slug:
        raise ValueError(f"no artifact key can be made from {parts!r}")
    return slug


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def decision_card(envelope: TradingIntelligenceEnvelope, outcome: DecisionOutcome) -> str:
    """Markdown for one decision: verdict, confidence, score, the agents' signals, where.

    For a retry whose new decision was not published because its correlation id's entry
    holds another (a failed outcome with that entry's verdict), the card shows that entry,
    what consumers see, and says the new decision was not published."""
    decision = envelope.decision
    synthesis, target, meta = decision.synthesis, decision.target, envelope.meta
    demo = " (DEMO: not a real analysis)" if meta.get("demo") else ""
    degraded = " (DEGRADED: no verdict in the arena state)" if meta.get("degraded") else ""
    if outcome.failed and outcome.verdict is not None:  # a retry that decided otherwise
        return "\n".join(
            [
                f"# {target.ticker} {target.trade_date}: {outcome.verdict} (on the stream)",
                "",
                f"- consumers see **{outcome.verdict}** confidence "
                f"**{outcome.confidence or 0:.2f}**: stream entry `{outcome.entry_id or ''}` in "
                f"{outcome.where or ''}, correlation id `{envelope.correlation_id}`",
                f"- **not published**: {_cell(outcome.error)}",
            ]
        )
    lines = [
        f"# {target.ticker} {target.trade_date}: {synthesis.verdict}{demo}{degraded}",
        "",
        *([f"- **degraded**: {_cell(meta.get('degraded_reason'))}"] if degraded else []),
        f"- confidence **{synthesis.confidence:.2f}**, ensemble score "
        f"**{synthesis.ensemble_score:+.3f}**",
        f"- arena id `{envelope.arena_id}`, correlation id `{envelope.correlation_id}`",
        f"- written to {outcome.where or ''}: stream entry `{outcome.entry_id or ''}`, "
        f"hash `{outcome.hash_key or ''}`",
        "",
        "| agent | domain | signal | confidence | summary |",
        "|---|---|---|---|---|",
    ]
    for s in decision.agent_signals:
        lines.append(
            f"| {_cell(s.agent)} | {_cell(s.domain)} | {s.signal} | "
            f"{s.confidence:.2f} | {_cell(s.summary)} |"
        )
    if synthesis.reasoning:
        lines += ["", "> " + _cell(synthesis.reasoning)[:1000]]
    return "\n".join(lines)


def run_table(outcomes: Iterable[DecisionOutcome]) -> list[dict[str, Any]]:
    """The flow run's table: one row per (ticker, date) with status, verdict, entry id, error."""
    return [o.table_row() for o in outcomes]


async def write_decision_card(
    envelope: TradingIntelligenceEnvelope, outcome: DecisionOutcome
) -> None:
    """Create the card under ``decision-{ticker}-{date}`` (a new version per publish)."""
    from prefect.artifacts import acreate_markdown_artifact

    target = envelope.decision.target
    await acreate_markdown_artifact(
        key=artifact_key("decision", target.ticker, target.trade_date),
        markdown=decision_card(envelope, outcome),
        description=f"{target.ticker} {target.trade_date} decision",
    )


async def write_run_table(key: str, outcomes: Iterable[DecisionOutcome], title: str) -> None:
    """Create this flow run's table artifact."""
    from prefect.artifacts import acreate_table_artifact

    await acreate_table_artifact(key=key, table=run_table(outcomes), description=title)
