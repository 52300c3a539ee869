"""A stand-in for TauricResearch/TradingAgents v0.3.0's ``TradingAgentsGraph`` (no LLM, no
network), written from the code at the commit tagged ``v0.3.0`` ("chore: release v0.3.0",
85946c2f60768ab2dae23a5a36cd927662feef94), not copied from it:

- ``tradingagents/graph/trading_graph.py``: ``propagate(company_name, trade_date,
  asset_type="stock")`` returns ``(final_state, self.process_signal(final_state[
  "final_trade_decision"]))``; ``final_state`` is the LangGraph ``AgentState``
  (``tradingagents/agents/utils/agent_states.py``, initial values from
  ``tradingagents/graph/propagation.py``), whose ``messages`` are message objects (not JSON).
- ``tradingagents/graph/signal_processing.py`` and ``tradingagents/agents/utils/rating.py``:
  ``process_signal`` is ``parse_rating(text, default="Hold")``: the first line's ``rating ...:
  X`` label naming one of Buy, Overweight, Hold, Underweight, Sell, else the first of those
  words anywhere (markup ``*:.,`` stripped), else **"Hold"**: an empty reply, a refusal or a
  provider's error text comes back rated Hold. There is no other answer (no ``REVIEW``).
- ``tradingagents/agents/schemas.py`` and ``tradingagents/agents/utils/structured.py``: the
  Research Manager, Trader, Sentiment Analyst and Portfolio Manager answer through structured
  output rendered to markdown (``**Recommendation**: X``; ``**Action**: X`` ... ``FINAL
  TRANSACTION PROPOSAL: **X**``; ``**Overall Sentiment:** **Band** (Score: s/10)`` and
  ``**Confidence:** Level``; ``**Rating**: X``, ``**Executive Summary**``, ``**Investment
  Thesis**``, optional ``**Price Target**`` and ``**Time Horizon**``). When the structured call
  fails they fall back to the plain LLM reply as it is (which is how an empty reply or a
  refusal reaches ``final_trade_decision``); an exception from that plain call (a provider's
  ``RateLimitError``) propagates out of ``propagate``.

The ticker picks the Portfolio Manager's answer (:data:`PM_REPLIES`, :data:`RATINGS`). Left
out: the memory log (past decisions and their realised returns fed to the next run), report
files, checkpoints.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

__all__ = ["GRAPH", "PM_REPLIES", "RATINGS", "TradingAgentsGraph", "parse_rating"]

ANALYSTS = ("market", "social", "news", "fundamentals")
FIVE_TIERS = ("Buy", "Overweight", "Hold", "Underweight", "Sell")
# ticker -> the Portfolio Manager's structured rating
RATINGS = {"BUY": "Buy", "OW": "Overweight", "HOLD": "Hold", "UW": "Underweight", "SELL": "Sell"}
# ticker -> the Portfolio Manager's free-text fallback reply (its structured call failed)
PM_REPLIES = {
    "EMPTY": "",
    "REFUSE": "I can't provide investment advice.",
    "CTXERR": '{"error": "context length exceeded"}',
}
_TIER_OF = {tier.lower(): tier for tier in FIVE_TIERS}
_WORD_AFTER = re.compile(r"[\s*]*(\w+)")


def parse_rating(text: str, default: str = "Hold") -> str:
    """Upstream's two passes (labelled rating, then the first rating word), else ``default``."""
    for line in text.splitlines():
        labelled = _labelled_word(line)
        if labelled is not None and labelled.lower() in _TIER_OF:
            return labelled.capitalize()
    for line in text.splitlines():
        for token in line.lower().split():
            if token.strip("*:.,") in _TIER_OF:
                return token.strip("*:.,").capitalize()
    return default


def _labelled_word(line: str) -> str | None:
    """The word after the first ``rating ... :`` (or ``-``) label of ``line`` that has one:
    leftmost ``rating``, nearest separator, ``*`` and blanks skipped."""
    lowered = line.lower()
    start = lowered.find("rating")
    while start >= 0:
        for sep in range(start + len("rating"), len(line)):
            if line[sep] in ":-":
                found = _WORD_AFTER.match(line, sep + 1)
                if found:
                    return found.group(1)
        start = lowered.find("rating", start + 1)
    return None


class AIMessage:
    """Like langchain_core's message objects: not JSON-serialisable."""

    def __init__(self, content: str) -> None:
        self.content = content


class TradingAgentsGraph:
    """Same constructor and ``propagate`` contract as upstream's graph.

    ``failures``: exceptions to raise, one per call, before any answer (a provider failing on
    the first LLM call), for the retry tests.
    """

    def __init__(
        self,
        selected_analysts: tuple[str, ...] | list[str] = ANALYSTS,
        debug: bool = False,
        config: dict[str, Any] | None = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        self.selected_analysts = list(selected_analysts)
        self.debug = debug
        self.config = config or {}
        self.callbacks = callbacks or []
        self.ticker: str | None = None
        self.curr_state: dict[str, Any] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[tuple[str, str]] = []
        self.failures: list[BaseException] = []
        self._count = threading.Lock()

    def propagate(
        self, company_name: str, trade_date: str, asset_type: str = "stock"
    ) -> tuple[dict[str, Any], str]:
        with self._count:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.calls.append((company_name, trade_date))
        try:
            time.sleep(0.02)  # the real one takes minutes; overlapping calls would show here
            self.ticker = company_name  # per-run state on the instance, as upstream keeps
            if self.failures:
                raise self.failures.pop(0)
            final_state = _final_state(company_name, str(trade_date), asset_type)
            self.curr_state = final_state
            return final_state, self.process_signal(final_state["final_trade_decision"])
        finally:
            with self._count:
                self.in_flight -= 1

    def process_signal(self, full_signal: str) -> str:
        return parse_rating(full_signal)


def pm_decision(ticker: str, day: str) -> str:
    """The Portfolio Manager's ``final_trade_decision`` for ``ticker``."""
    if ticker in PM_REPLIES:
        return PM_REPLIES[ticker]
    rating = RATINGS.get(ticker, "Hold")
    parts = [
        f"**Rating**: {rating}",
        f"**Executive Summary**: {ticker} on {day}: the committee settles on {rating}.",
        "**Investment Thesis**: " + "long text " * 900,
    ]
    if ticker != "HOLD":  # both are optional in PortfolioDecision
        parts += ["**Price Target**: 212.5", "**Time Horizon**: 3-6 months"]
    return "\n\n".join(parts)


def _final_state(ticker: str, day: str, asset_type: str) -> dict[str, Any]:
    decision = pm_decision(ticker, day)
    plan_rating = RATINGS.get(ticker, "Hold")
    action = {"Overweight": "Buy", "Underweight": "Sell"}.get(plan_rating, plan_rating)
    investment_plan = (
        f"**Recommendation**: {plan_rating}\n\n**Rationale**: the bull case carried.\n\n"
        "**Strategic Actions**: scale in over two weeks."
    )
    trader_plan = (
        f"**Action**: {action}\n\n**Reasoning**: follows the plan.\n\n**Entry Price**: 201.0"
        f"\n\nFINAL TRANSACTION PROPOSAL: **{action.upper()}**"
    )
    sentiment = (
        "**Overall Sentiment:** **Mildly Bullish** (Score: 6.2/10)\n**Confidence:** Medium\n\n"
        "StockTwits leans positive; Reddit is quiet."
    )
    return {
        "messages": [AIMessage(ticker), AIMessage(sentiment), AIMessage(trader_plan)],
        "company_of_interest": ticker,
        "asset_type": asset_type,
        "instrument_context": f"{ticker}: an equity",
        "trade_date": day,
        "past_context": "",
        "sender": "Trader",
        "market_report": f"{ticker} market report " * 50,
        "sentiment_report": sentiment,
        "news_report": "news report",
        "fundamentals_report": "fundamentals report",
        "investment_debate_state": {
            "bull_history": "bull",
            "bear_history": "bear",
            "history": "bull\nbear",
            "current_response": "bear",
            "judge_decision": investment_plan,
            "count": 2,
        },
        "investment_plan": investment_plan,
        "trader_investment_plan": trader_plan,
        "risk_debate_state": {
            "aggressive_history": "a",
            "conservative_history": "c",
            "neutral_history": "n",
            "history": "a\nc\nn",
            "latest_speaker": "Judge",
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
