"""``tradingagents:MODULE:OBJECT``: a TradingAgents graph, its adapter and its mapping to a state.

Supported: TauricResearch/TradingAgents v0.3.0 (tag ``v0.3.0``, commit
85946c2f60768ab2dae23a5a36cd927662feef94), whose ``OBJECT.propagate(ticker, trade_date)``
returns ``(final_state, rating)``: ``rating`` is ``parse_rating(final_trade_decision,
default="Hold")`` (as in v0.2.4 and v0.2.5). Older versions (v0.1.0-v0.2.3) return the same
pair with the rating an LLM extracted (``"BUY"``, ``"**SELL**."``). :func:`tradingagents_state`
maps it (the rules all adapters keep are in :mod:`ti_core.arenas.framework`).

===========================================  =======  ==================================
rating (any case, markup ``*._`'"`` ignored)  verdict  also
===========================================  =======  ==================================
Buy, Overweight                              BUY      ``meta.rating`` keeps the word
Hold                                         HOLD
Underweight, Sell                            SELL
one of those not in ``final_trade_decision``  none     ``meta.no_verdict``: its default
anything else                                none     ``meta.no_verdict`` names it
===========================================  =======  ==================================

A rating is a decision only when the Portfolio Manager's ``final_trade_decision`` states it
(the rating's word is one of the text's words): ``parse_rating`` answers "Hold" for an empty
reply, a refusal or a provider's error text, which is its default, not a decision.
confidence and score: none given (0; ``confidence_source`` and ``score_source`` ``"none"``);
reasoning: ``final_trade_decision`` (cut to 4,000 characters: ``reasoning_truncated`` and
``reasoning_chars``); target from ``company_of_interest`` and ``trade_date``. v0.3's
structured sub-decisions, read from their rendered markdown when present: the Research
Manager's ``**Recommendation**`` (``meta.research_recommendation``), the Trader's
``**Action**`` (``meta.trader_action``), the Portfolio Manager's ``**Price Target**`` and
``**Time Horizon**`` (``meta.price_target``, ``meta.time_horizon``), and the Sentiment
Analyst's ``**Overall Sentiment:** **Band** (Score: s/10)`` and ``**Confidence:** Level`` as
the one agent signal (bullish/neutral/bearish by band, no numeric confidence; band, score and
confidence in ``meta.sentiment_*``). The other reports stay off the envelope.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
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
from ti_core.errors import ArenaError, ConfigError

__all__ = [
    "SENTIMENT_BANDS",
    "TRADINGAGENTS_RATINGS",
    "TradingAgentsArena",
    "stated_words",
    "tradingagents_state",
]

TRADINGAGENTS_RATINGS: dict[str, str] = {
    "buy": "BUY",
    "overweight": "BUY",
    "hold": "HOLD",
    "underweight": "SELL",
    "sell": "SELL",
}
# The Sentiment Analyst's six bands (v0.3 ``SentimentBand``) as an agent signal's direction.
SENTIMENT_BANDS: dict[str, str] = {
    "bullish": "bullish",
    "mildly bullish": "bullish",
    "neutral": "neutral",
    "mixed": "neutral",
    "mildly bearish": "bearish",
    "bearish": "bearish",
}
_MARKUP = " *._`'\""
_RECOMMENDATION = re.compile(r"\*\*Recommendation\*\*:\s*\**\s*([A-Za-z]+)")
_ACTION = re.compile(r"\*\*Action\*\*:\s*\**\s*([A-Za-z]+)")
_PRICE_TARGET = re.compile(r"\*\*Price Target\*\*:\s*([-+0-9.eE]+)")
_TIME_HORIZON = re.compile(r"\*\*Time Horizon\*\*:[ \t]*([^\n]+)")
_SENTIMENT = re.compile(
    r"\*\*Overall Sentiment:\*\*\s*\*\*([A-Za-z ]+?)\*\*\s*\(Score:\s*([0-9.]+)\s*/\s*10\)"
)
_SENTIMENT_CONFIDENCE = re.compile(r"\*\*Confidence:\*\*\s*([A-Za-z]+)")


def stated_words(text: str) -> set[str]:
    """The lower-case words of ``text``, markup stripped (as ``parse_rating`` reads them)."""
    return {token.strip(_MARKUP + ":,") for token in text.lower().split()}


def _no_verdict(rating: Any, rating_word: str | None, decision: Any) -> str | None:
    """Why the rating is no decision, or None when it is one."""
    key = rating_word.strip(_MARKUP).lower() if rating_word else None
    if key not in TRADINGAGENTS_RATINGS:
        return (
            f"tradingagents rating {shorten(rating)} is not one of "
            "Buy, Overweight, Hold, Underweight, Sell"
        )
    if not isinstance(decision, str) or not decision.strip():
        return (
            f"tradingagents rating {shorten(rating)} is its default: the Portfolio Manager's "
            f"final_trade_decision is empty ({shorten(decision)})"
        )
    if key not in stated_words(decision):
        return (
            f"tradingagents rating {shorten(rating)} is its default: the Portfolio Manager's "
            f"final_trade_decision states no rating ({shorten(decision, 120)})"
        )
    return None


def _found(pattern: re.Pattern[str], text: Any) -> str | None:
    match = pattern.search(text) if isinstance(text, str) else None
    return clip(match.group(1), WORD_CHARS) if match else None


def _sub_decisions(final_state: Mapping[str, Any]) -> dict[str, Any]:
    """v0.3's structured answers that ``final_state`` holds, for ``meta``."""
    decision = final_state.get("final_trade_decision")
    found: dict[str, Any] = {
        "research_recommendation": _found(_RECOMMENDATION, final_state.get("investment_plan")),
        "trader_action": _found(_ACTION, final_state.get("trader_investment_plan")),
        "time_horizon": _found(_TIME_HORIZON, decision),
    }
    target = _found(_PRICE_TARGET, decision)
    try:
        price = float(target) if target is not None else None
    except ValueError:
        price = None
    found["price_target"] = price if price is not None and math.isfinite(price) else None
    return {k: v for k, v in found.items() if v is not None}


def _sentiment(report: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The Sentiment Analyst's band as an agent signal, and its band, score, confidence."""
    match = _SENTIMENT.search(report) if isinstance(report, str) else None
    if match is None:
        return [], {}
    band = match.group(1).strip()
    direction = SENTIMENT_BANDS.get(band.lower())
    if direction is None:
        return [], {"sentiment_band": clip(band, WORD_CHARS)}
    meta: dict[str, Any] = {"sentiment_band": band}
    try:
        score = float(match.group(2))
    except ValueError:
        score = None
    if score is not None and 0.0 <= score <= 10.0:
        meta["sentiment_score"] = score
    confidence = _found(_SENTIMENT_CONFIDENCE, report)
    if confidence is not None:
        meta["sentiment_confidence"] = confidence.lower()
    summary = f"{band}" + (f" (score {score:g}/10)" if "sentiment_score" in meta else "")
    if confidence is not None:
        summary += f", confidence {confidence.lower()}"
    signal = {
        "agent": "sentiment_analyst",
        "domain": "sentiment",
        "signal": direction,
        "confidence": None,  # a word (low/medium/high), not a number: kept in meta
        "summary": clip(summary, SUMMARY_CHARS),
    }
    return [signal], meta


def tradingagents_state(
    final_state: Any, rating: Any, ticker: str, trade_date: str, model: str | None = None
) -> dict[str, Any]:
    """The builder's state from ``TradingAgentsGraph.propagate``'s ``(final_state, rating)``."""
    if not isinstance(final_state, Mapping):
        raise ArenaError(
            f"tradingagents final_state for {ticker} {trade_date} is a "
            f"{type(final_state).__name__}, not a mapping"
        )
    rating_word = word(rating)
    decision = final_state.get("final_trade_decision")
    why_not = _no_verdict(rating, rating_word, decision)
    meta: dict[str, Any] = {
        "framework": "tradingagents",
        "rating": clip(rating, WORD_CHARS) if rating_word else None,
        "confidence_source": "none",
        "score_source": "none",
    }
    if why_not is not None:
        meta["no_verdict"] = why_not
    reasoning = clip(decision, REASONING_CHARS)
    full = decision.strip() if isinstance(decision, str) else None
    if reasoning is not None and full is not None and len(full) > len(reasoning):
        meta.update(reasoning_truncated=True, reasoning_chars=len(full))
    meta.update(_sub_decisions(final_state))
    signals, sentiment = _sentiment(final_state.get("sentiment_report"))
    meta.update(sentiment)
    state: dict[str, Any] = {
        "arena_id": "tradingagents",
        "target": {
            "ticker": word(final_state.get("company_of_interest")) or ticker,
            "trade_date": str(final_state.get("trade_date") or trade_date),
        },
        "synthesis_reasoning": reasoning,
        "meta": meta,
    }
    if signals:
        state["agent_signals"] = signals
    if why_not is None:
        key = rating_word.strip(_MARKUP).lower() if rating_word else ""
        state["synthesis_verdict"] = TRADINGAGENTS_RATINGS[key]
    if model:
        state["llm_model"] = model
    return state


class TradingAgentsArena(FrameworkArena):
    """``tradingagents:MODULE:OBJECT``: ``OBJECT.propagate(ticker, date)`` -> state."""

    def __init__(
        self, spec: str, graph: object | None = None, max_state_bytes: int = DEFAULT_MAX_STATE_BYTES
    ) -> None:
        target = (
            graph
            if graph is not None
            else resolve(spec, spec.partition(":")[2], need_callable=False)
        )
        propagate = getattr(target, "propagate", None)
        if not callable(propagate):
            raise ConfigError(
                f"arena {spec!r}: {type(target).__name__} has no "
                "propagate(ticker, trade_date) method"
            )
        super().__init__(spec, propagate, max_state_bytes)
        self.owner = target
        config = getattr(target, "config", None)
        model = config.get("deep_think_llm") if isinstance(config, Mapping) else None
        self.model = model if isinstance(model, str) else None

    def _invoke(self, ticker: str, trade_date: str) -> Any:
        return self.function(ticker, trade_date)

    def to_state(self, result: Any, ticker: str, trade_date: str) -> dict[str, Any]:
        if not isinstance(result, tuple | list) or len(result) != 2:
            raise ArenaError(
                f"arena {self.spec}: propagate returned {shorten(result)} for "
                f"{ticker} {trade_date}, not (final_state, rating)"
            )
        return tradingagents_state(result[0], result[1], ticker, trade_date, self.model)
