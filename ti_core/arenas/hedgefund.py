"""``hedgefund:MODULE:FUNCTION``: ai-hedge-fund's ``run_hedge_fund``, its adapter and its
mapping to a state.

``FUNCTION(tickers=[ticker], start_date=3 months earlier, end_date=trade_date,
portfolio=<flat, 100,000 cash>, show_reasoning=False)`` returns ``{"decisions": {ticker:
{action, quantity, confidence, reasoning}}, "analyst_signals": {agent: {ticker: {signal,
confidence, reasoning}}}}`` (virattt/ai-hedge-fund's ``run_hedge_fund``);
:func:`hedge_fund_state` maps it (the rules all adapters keep are in
:mod:`ti_core.arenas.framework`).

============  =======
action        verdict
============  =======
buy, cover    BUY
hold          HOLD
sell, short   SELL
============  =======

confidence: ``decisions[ticker].confidence`` (0-100) / 100; each analyst's signal
(bullish/bearish/neutral, confidence / 100, reasoning as summary) except the risk manager's
(it gives limits, not a signal); ``meta`` keeps ``action`` and ``quantity``. No decision for
the ticker, an unknown action, or the portfolio manager's own fallback ("Error in portfolio
management, defaulting to hold", confidence 0) is no verdict.
"""

from __future__ import annotations

import calendar
import inspect
import math
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from ti_core.arenas.framework import (
    REASONING_CHARS,
    SUMMARY_CHARS,
    WORD_CHARS,
    FrameworkArena,
    clip,
    word,
)
from ti_core.arenas.runner import resolve
from ti_core.contract.bounds import DEFAULT_MAX_STATE_BYTES
from ti_core.contract.keys import shorten
from ti_core.errors import ArenaError, InvalidStateError

__all__ = [
    "HEDGEFUND_ACTIONS",
    "HedgeFundArena",
    "flat_portfolio",
    "hedge_fund_state",
    "months_before",
]

HEDGEFUND_ACTIONS: dict[str, str] = {
    "buy": "BUY",
    "cover": "BUY",
    "hold": "HOLD",
    "sell": "SELL",
    "short": "SELL",
}
HEDGEFUND_CASH = 100_000.0
HEDGEFUND_LOOKBACK_MONTHS = 3  # ai-hedge-fund's own default window
MAX_SIGNALS = 50
_PM_FALLBACK = "error in portfolio management"  # its portfolio manager's default-to-hold
_RISK_AGENT = "risk_management_agent"


def _percent(value: Any, field: str) -> float:
    """A 0-100 confidence as 0-1; anything else is refused, naming it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and 0 <= value <= 100)
    ):
        raise InvalidStateError(f"{field} must be a number in [0, 100], got {shorten(value)}")
    return round(float(value) / 100, 6)


def _hedge_fund_signals(signals: Any, ticker: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not isinstance(signals, Mapping):
        return out
    for agent, by_ticker in signals.items():
        if len(out) == MAX_SIGNALS:
            break
        if agent == _RISK_AGENT or not isinstance(by_ticker, Mapping):
            continue
        signal = by_ticker.get(ticker)
        if not isinstance(signal, Mapping) or word(signal.get("signal")) is None:
            continue
        confidence = signal.get("confidence")
        if isinstance(confidence, int | float) and not isinstance(confidence, bool):
            confidence = confidence / 100 if math.isfinite(confidence) else None
        else:
            confidence = None  # the builder counts a signal without one as 0
        name = str(agent)[:WORD_CHARS]
        out.append(
            {
                "agent": name,
                "domain": name.removesuffix("_agent"),
                "signal": clip(signal.get("signal"), WORD_CHARS),
                "confidence": confidence,
                "summary": clip(signal.get("reasoning"), SUMMARY_CHARS),
            }
        )
    return out


def _decision_for(decisions: Any, ticker: str) -> tuple[Any, str | None]:
    """(the ticker's decision, None) or (None, why there is none)."""
    if decisions is None:
        return (
            None,
            "ai-hedge-fund returned no decisions (its portfolio manager's reply was not JSON)",
        )
    if not isinstance(decisions, Mapping):
        return None, f"ai-hedge-fund decisions is a {type(decisions).__name__}, not a mapping"
    if ticker in decisions:
        return decisions[ticker], None
    for key, value in decisions.items():
        if isinstance(key, str) and key.strip().upper() == ticker:
            return value, None
    names = ", ".join(sorted(str(k)[:20] for k in decisions)[:10]) or "none"
    return None, f"ai-hedge-fund decided nothing for {ticker} (decisions for: {names})"


def hedge_fund_state(
    result: Any, ticker: str, trade_date: str, model: str | None = None
) -> dict[str, Any]:
    """The builder's state from ``run_hedge_fund``'s ``{"decisions", "analyst_signals"}``."""
    if not isinstance(result, Mapping) or "decisions" not in result:
        raise ArenaError(
            f"hedgefund returned {shorten(result)} for {ticker} {trade_date}, "
            "not {'decisions': ..., 'analyst_signals': ...}"
        )
    decision, why = _decision_for(result.get("decisions"), ticker)
    if why is None and not isinstance(decision, Mapping):
        decision, why = None, f"ai-hedge-fund's decision for {ticker} is {shorten(decision)}"
    decision = decision or {}
    action = word(decision.get("action"))
    verdict = HEDGEFUND_ACTIONS.get(action.lower()) if action else None
    reasoning = clip(decision.get("reasoning"), REASONING_CHARS)
    if why is None and verdict is None:
        why = (
            f"ai-hedge-fund action {shorten(decision.get('action'))} is not one of "
            "buy, cover, hold, sell, short"
        )
    if verdict == "HOLD" and (reasoning or "").lower().startswith(_PM_FALLBACK):
        verdict, why = None, f"ai-hedge-fund's portfolio manager failed: {reasoning}"
    meta: dict[str, Any] = {"framework": "ai-hedge-fund", "action": clip(action, WORD_CHARS)}
    quantity = decision.get("quantity")
    if (
        isinstance(quantity, int | float)
        and not isinstance(quantity, bool)
        and math.isfinite(quantity)
    ):
        meta["quantity"] = quantity
    state: dict[str, Any] = {
        "arena_id": "ai-hedge-fund",
        "target": {"ticker": ticker, "trade_date": trade_date},
        "synthesis_reasoning": reasoning,
        "agent_signals": _hedge_fund_signals(result.get("analyst_signals"), ticker),
        "meta": meta,
    }
    confidence = decision.get("confidence")
    if verdict is not None and confidence is not None:
        state["synthesis_confidence"] = _percent(
            confidence, f"ai-hedge-fund decisions.{ticker}.confidence"
        )
        meta["confidence_source"] = "ai-hedge-fund decisions confidence (0-100) / 100"
        meta["confidence_raw"] = confidence
    else:
        meta["confidence_source"] = "none"
    if verdict is not None:
        state["synthesis_verdict"] = verdict
    else:
        meta["no_verdict"] = why
    if model:
        state["llm_model"] = model
    return state


def months_before(day: str, months: int) -> str:
    """``day`` (YYYY-MM-DD) moved back ``months`` months, the day clamped to the month's end."""
    d = date.fromisoformat(day)
    month_index = d.year * 12 + d.month - 1 - months
    year, month = divmod(month_index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(d.day, last)).isoformat()


def flat_portfolio(ticker: str, cash: float = HEDGEFUND_CASH) -> dict[str, Any]:
    """ai-hedge-fund's portfolio with cash only and no position in ``ticker``."""
    return {
        "cash": cash,
        "margin_requirement": 0.0,
        "margin_used": 0.0,
        "positions": {
            ticker: {
                "long": 0,
                "short": 0,
                "long_cost_basis": 0.0,
                "short_cost_basis": 0.0,
                "short_margin_used": 0.0,
            }
        },
        "realized_gains": {ticker: {"long": 0.0, "short": 0.0}},
    }


def _default(function: Callable[..., Any], name: str) -> str | None:
    """A text keyword default of ``function`` (a ``functools.partial`` shows its bound ones)."""
    try:
        value = inspect.signature(function).parameters[name].default
    except (KeyError, TypeError, ValueError):
        return None
    return value if isinstance(value, str) and value else None


class HedgeFundArena(FrameworkArena):
    """``hedgefund:MODULE:FUNCTION``: ``run_hedge_fund`` for one ticker and date -> state."""

    def __init__(
        self,
        spec: str,
        function: Callable[..., Any] | None = None,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
    ) -> None:
        target = function if function is not None else resolve(spec, spec.partition(":")[2])
        super().__init__(spec, target, max_state_bytes)
        self.owner = target
        self.model = _default(target, "model_name")

    def _invoke(self, ticker: str, trade_date: str) -> Any:
        return self.function(
            tickers=[ticker],
            start_date=months_before(trade_date, HEDGEFUND_LOOKBACK_MONTHS),
            end_date=trade_date,
            portfolio=flat_portfolio(ticker),
            show_reasoning=False,
        )

    def to_state(self, result: Any, ticker: str, trade_date: str) -> dict[str, Any]:
        return hedge_fund_state(result, ticker, trade_date, self.model)
