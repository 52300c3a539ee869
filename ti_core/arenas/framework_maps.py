"""Framework outputs -> the builder's state: TradingAgents' ``(final_state, rating)`` and
ai-hedge-fund's ``{"decisions", "analyst_signals"}`` (pure functions; the mapping tables are in
:mod:`ti_core.arenas.adapters`, which calls the frameworks).

The framework's own words go to ``meta``; no number is invented (``meta.confidence_source``
says where a confidence came from, ``"none"`` when the framework gave none); a rating or action
that cannot be mapped leaves the state without a verdict and ``meta.no_verdict`` saying why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ti_core.contract.keys import shorten
from ti_core.errors import ArenaError, InvalidStateError

__all__ = ["HEDGEFUND_ACTIONS", "TRADINGAGENTS_RATINGS", "hedge_fund_state", "tradingagents_state"]

TRADINGAGENTS_RATINGS: dict[str, str] = {
    "buy": "BUY",
    "overweight": "BUY",
    "hold": "HOLD",
    "underweight": "SELL",
    "sell": "SELL",
}
HEDGEFUND_ACTIONS: dict[str, str] = {
    "buy": "BUY",
    "cover": "BUY",
    "hold": "HOLD",
    "sell": "SELL",
    "short": "SELL",
}
REASONING_CHARS = 4000  # the builder keeps as much
SUMMARY_CHARS = 300
WORD_CHARS = 80
MAX_SIGNALS = 50
_PM_FALLBACK = "error in portfolio management"  # its portfolio manager's default-to-hold
_RISK_AGENT = "risk_management_agent"


def _clip(value: Any, limit: int) -> str | None:
    """Text (a mapping or list as compact JSON) cut to ``limit`` characters; None if empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            value = type(value).__name__
    value = value.strip()
    return (value[: limit - 3] + "...") if len(value) > limit else (value or None)


def _word(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def tradingagents_state(
    final_state: Any, rating: Any, ticker: str, trade_date: str, model: str | None = None
) -> dict[str, Any]:
    """The builder's state from ``TradingAgentsGraph.propagate``'s ``(final_state, rating)``."""
    if not isinstance(final_state, Mapping):
        raise ArenaError(
            f"tradingagents final_state for {ticker} {trade_date} is a "
            f"{type(final_state).__name__}, not a mapping"
        )
    word = _word(rating)
    # Older versions return the LLM's reply itself ("BUY", "**SELL**."): its markup goes.
    verdict = TRADINGAGENTS_RATINGS.get(word.strip(" *._`'\"").lower()) if word else None
    meta: dict[str, Any] = {
        "framework": "tradingagents",
        "rating": _clip(rating, WORD_CHARS) if word else None,
        "confidence_source": "none",
    }
    if verdict is None:
        meta["no_verdict"] = (
            f"tradingagents rating {shorten(rating)} is not one of "
            "Buy, Overweight, Hold, Underweight, Sell"
        )
    state: dict[str, Any] = {
        "arena_id": "tradingagents",
        "target": {
            "ticker": _word(final_state.get("company_of_interest")) or ticker,
            "trade_date": str(final_state.get("trade_date") or trade_date),
        },
        "synthesis_reasoning": _clip(final_state.get("final_trade_decision"), REASONING_CHARS),
        "meta": meta,
    }
    if verdict is not None:
        state["synthesis_verdict"] = verdict
    if model:
        state["llm_model"] = model
    return state


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
        if not isinstance(signal, Mapping) or _word(signal.get("signal")) is None:
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
                "signal": _clip(signal.get("signal"), WORD_CHARS),
                "confidence": confidence,
                "summary": _clip(signal.get("reasoning"), SUMMARY_CHARS),
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
    action = _word(decision.get("action"))
    verdict = HEDGEFUND_ACTIONS.get(action.lower()) if action else None
    reasoning = _clip(decision.get("reasoning"), REASONING_CHARS)
    if why is None and verdict is None:
        why = (
            f"ai-hedge-fund action {shorten(decision.get('action'))} is not one of "
            "buy, cover, hold, sell, short"
        )
    if verdict == "HOLD" and (reasoning or "").lower().startswith(_PM_FALLBACK):
        verdict, why = None, f"ai-hedge-fund's portfolio manager failed: {reasoning}"
    meta: dict[str, Any] = {"framework": "ai-hedge-fund", "action": _clip(action, WORD_CHARS)}
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
