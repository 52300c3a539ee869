"""Prefect events for decisions, so automations and downstream deployments can react.

``ti.decision.published`` and ``ti.decision.failed``, on the resource
``ti.decision.{TICKER}.{YYYY-MM-DD}`` labelled ``ti.ticker`` and ``ti.trade-date``.
"""

from __future__ import annotations

from prefect.events import emit_event

from ti_core.publish.outcome import DecisionOutcome

__all__ = ["DECISION_FAILED", "DECISION_PUBLISHED", "decision_resource", "emit_decision_event"]

DECISION_PUBLISHED = "ti.decision.published"
DECISION_FAILED = "ti.decision.failed"


def decision_resource(ticker: str, trade_date: str) -> dict[str, str]:
    """The event resource of one (ticker, date) decision."""
    return {
        "prefect.resource.id": f"ti.decision.{ticker}.{trade_date}",
        "prefect.resource.name": f"{ticker} {trade_date}",
        "ti.ticker": ticker,
        "ti.trade-date": trade_date,
    }


def emit_decision_event(outcome: DecisionOutcome) -> bool:
    """Emit published/failed for a decision's outcome; False if Prefect did not take it."""
    event = emit_event(
        event=DECISION_FAILED if outcome.failed else DECISION_PUBLISHED,
        resource=decision_resource(outcome.ticker, outcome.trade_date),
        payload=outcome.event_payload(),
    )
    return event is not None
