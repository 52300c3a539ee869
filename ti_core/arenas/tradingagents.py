"""``tradingagents:MODULE:OBJECT``: a TradingAgents graph, its adapter and its mapping to a state.

``OBJECT.propagate(ticker, trade_date)`` returns ``(final_state, rating)``
(TauricResearch/TradingAgents' ``TradingAgentsGraph``); :func:`tradingagents_state` maps it
(the rules all adapters keep are in :mod:`ti_core.arenas.framework`).

======================  =======  ==========================================
rating (any case)       verdict  also
======================  =======  ==========================================
Buy, Overweight         BUY      ``meta.rating`` keeps the word
Hold                    HOLD
Underweight, Sell       SELL
anything else (REVIEW)  none     ``meta.no_verdict`` names it
======================  =======  ==========================================

Markup around the word (an older version's raw reply, ``**SELL**``) is ignored.
confidence: none given (0, ``confidence_source: "none"``); reasoning: ``final_trade_decision``;
target from ``company_of_interest`` and ``trade_date``; no agent signals (its analysts write
reports, not scored signals; the reports stay off the envelope).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ti_core.arenas.framework import REASONING_CHARS, WORD_CHARS, FrameworkArena, clip, word
from ti_core.arenas.runner import resolve
from ti_core.contract.bounds import DEFAULT_MAX_STATE_BYTES
from ti_core.contract.keys import shorten
from ti_core.errors import ArenaError, ConfigError

__all__ = ["TRADINGAGENTS_RATINGS", "TradingAgentsArena", "tradingagents_state"]

TRADINGAGENTS_RATINGS: dict[str, str] = {
    "buy": "BUY",
    "overweight": "BUY",
    "hold": "HOLD",
    "underweight": "SELL",
    "sell": "SELL",
}


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
    # Older versions return the LLM's reply itself ("BUY", "**SELL**."): its markup goes.
    verdict = (
        TRADINGAGENTS_RATINGS.get(rating_word.strip(" *._`'\"").lower()) if rating_word else None
    )
    meta: dict[str, Any] = {
        "framework": "tradingagents",
        "rating": clip(rating, WORD_CHARS) if rating_word else None,
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
            "ticker": word(final_state.get("company_of_interest")) or ticker,
            "trade_date": str(final_state.get("trade_date") or trade_date),
        },
        "synthesis_reasoning": clip(final_state.get("final_trade_decision"), REASONING_CHARS),
        "meta": meta,
    }
    if verdict is not None:
        state["synthesis_verdict"] = verdict
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
