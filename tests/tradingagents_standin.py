"""A stand-in for TauricResearch/TradingAgents' ``TradingAgentsGraph`` (no LLM, no network).

``propagate(company_name, trade_date)`` returns what the real one returns: ``(final_state,
rating)``. ``final_state`` is its LangGraph ``AgentState`` (``messages`` holding message
objects, which are not JSON; the analysts' reports; the two debate states; the plans; the
Portfolio Manager's ``final_trade_decision`` markdown) and ``rating`` is what its signal
processor extracts from that markdown: one of Buy, Overweight, Hold, Underweight, Sell (newer
versions return REVIEW when no rating can be read). The ticker picks the rating (:data:`RATINGS`).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

__all__ = ["GRAPH", "RATINGS", "TradingAgentsGraph"]

RATINGS = {
    "BUY": "Buy",
    "OW": "Overweight",
    "HOLD": "Hold",
    "UW": "Underweight",
    "SELL": "Sell",
    "REVW": "REVIEW",
}
_RATING_LABEL = re.compile(r"rating\b[^:\-]*[:\-][\s*]*(\w+)", re.IGNORECASE)


class AIMessage:
    """Like langchain_core's message objects: not JSON-serialisable."""

    def __init__(self, content: str) -> None:
        self.content = content


class TradingAgentsGraph:
    """Same constructor and ``propagate`` contract as the real graph."""

    def __init__(
        self,
        selected_analysts: list[str] | None = None,
        debug: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.selected_analysts = selected_analysts or ["market", "social", "news", "fundamentals"]
        self.debug = debug
        self.config = config or {}
        self.ticker: str | None = None
        self.curr_state: dict[str, Any] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[tuple[str, str]] = []
        self._count = threading.Lock()

    def propagate(self, company_name: str, trade_date: str) -> tuple[dict[str, Any], str]:
        with self._count:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.calls.append((company_name, trade_date))
        try:
            time.sleep(0.02)  # the real one takes minutes; overlapping calls would show here
            self.ticker = company_name  # per-run state on the instance, as the real one keeps
            rating = RATINGS.get(company_name, "Hold")
            final_state = _final_state(company_name, trade_date, rating)
            self.curr_state = final_state
            return final_state, self.process_signal(final_state["final_trade_decision"])
        finally:
            with self._count:
                self.in_flight -= 1

    def process_signal(self, full_signal: str) -> str:
        """The rating written after the last ``Rating:`` label, else REVIEW (as rating.py)."""
        found = [m.group(1) for m in map(_RATING_LABEL.search, full_signal.splitlines()) if m]
        return found[-1].capitalize() if found and found[-1] != "REVIEW" else "REVIEW"


def _final_state(ticker: str, day: str, rating: str) -> dict[str, Any]:
    decision = (
        f"**Rating**: {rating}\n\n**Executive Summary**: {ticker} on {day}: the "
        f"committee settles on {rating}.\n\n**Investment Thesis**: " + "long text " * 900
    )
    return {
        "messages": [AIMessage("Continue"), AIMessage(decision)],
        "company_of_interest": ticker,
        "trade_date": day,
        "sender": "Portfolio Manager",
        "market_report": f"{ticker} market report " * 50,
        "sentiment_report": "sentiment report",
        "news_report": "news report",
        "fundamentals_report": "fundamentals report",
        "investment_debate_state": {
            "bull_history": "bull",
            "bear_history": "bear",
            "history": "bull\nbear",
            "current_response": "bear",
            "judge_decision": f"**Recommendation**: {rating}",
            "count": 2,
        },
        "investment_plan": f"**Recommendation**: {rating}",
        "trader_investment_plan": "FINAL TRANSACTION PROPOSAL: **HOLD**",
        "risk_debate_state": {
            "aggressive_history": "a",
            "conservative_history": "c",
            "neutral_history": "n",
            "history": "a\nc\nn",
            "latest_speaker": "Neutral",
            "current_aggressive_response": "a",
            "current_conservative_response": "c",
            "current_neutral_response": "n",
            "judge_decision": decision,
            "count": 3,
        },
        "final_trade_decision": decision,
    }


GRAPH = TradingAgentsGraph(
    config={"llm_provider": "openai", "deep_think_llm": "gpt-5.2", "quick_think_llm": "gpt-5-mini"}
)
