"""A stand-in for virattt/ai-hedge-fund's last v1 ``run_hedge_fund`` (no LLM, no network),
written from its code at commit 6c41ae8cf5fb4e30eb8cdb6a816eb56ff234989d (the parent of
"Make 2.0.0 the default"), so that the adapter is tested against upstream's outputs, defaults
and fallbacks rather than against what we remember of them:

- ``src/main.py``: ``run_hedge_fund``'s keywords and defaults, its return ``{"decisions":
  json.loads(the portfolio manager's message), "analyst_signals": ...}``, and the progress
  display started before and stopped after the graph (a rich ``Live`` that, off a terminal,
  prints its final table to stdout when stopped).
- ``src/agents/risk_manager.py``: without prices for a ticker, ``{"remaining_position_limit":
  0.0, "current_price": 0.0, "reasoning": {"error": "Missing price data for risk
  calculation"}}``.
- ``src/tools/api.py``: ``get_prices`` returns ``[]`` when the market-data API answers anything
  but 200 (an outage, a bad key).
- ``src/agents/portfolio_manager.py``: ``compute_allowed_actions`` (hold always; buy up to cash
  and the risk limit; short up to the limit when the margin requirement is 0); a ticker whose
  only allowed action is hold is pre-filled ``{"action": "hold", "quantity": 0, "confidence":
  100, "reasoning": "No valid trade available"}`` without asking the LLM; the others go to
  ``call_llm`` whose default factory, when the LLM fails, fills them ``{"action": "hold",
  "quantity": 0, "confidence": 0, "reasoning": "Default decision: hold"}``; the LLM's
  decisions are merged over the pre-filled ones (a ticker the LLM leaves out has none).
- ``src/utils/llm.py``: ``call_llm`` tries ``max_retries=3`` times; a reply that does not
  validate as ``PortfolioManagerOutput`` (action one of buy/sell/short/cover/hold, integer
  quantity and confidence) counts as a failure; after the last it prints ``Error in LLM call
  after 3 attempts: ...`` to stdout and returns the default factory's output.
- Analyst signals: ``technical_analyst_agent`` (an int confidence, a dict of strategy
  reasoning), ``warren_buffett_agent`` (``WarrenBuffettSignal``: an int confidence, text).

The fake chat model answers per ticker from :data:`DECISIONS`; ``LLMFAIL`` makes every LLM call
raise, ``OMIT`` makes the LLM leave the ticker out, ``HTTP500`` makes the price API answer 500.
Every call's keywords are kept in :data:`CALLS`, the LLM attempts in :data:`LLM_ATTEMPTS`.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["CALLS", "DECISIONS", "LLM_ATTEMPTS", "PROGRESS_DONE", "run_hedge_fund"]

# ticker -> (action, quantity, confidence, reasoning): the fake LLM's reply for it. JUMP is a
# reply that fails validation (not an allowed action), so upstream retries and falls back.
DECISIONS: dict[str, tuple[str, int, int, str]] = {
    "BUY": ("buy", 40, 85, "Strong bullish consensus"),
    "COVER": ("cover", 10, 70, "Close the short"),
    "HOLD": ("hold", 0, 55, "Mixed signals"),
    "SELL": ("sell", 20, 90, "Bearish; reduce the long"),
    "SHORT": ("short", 25, 85, "Overvalued"),
    "JUMP": ("jump", 1, 50, "Not an action"),
}
ACTIONS = ("buy", "sell", "short", "cover", "hold")
MAX_RETRIES = 3
PRICE = 101.5
POSITION_LIMIT = 20000.0
PROGRESS_DONE = "✓ Portfolio Manager  Done"  # the last row of the progress table
CALLS: list[dict[str, Any]] = []
LLM_ATTEMPTS: dict[str, int] = {}


class LLMError(Exception):
    """What the fake provider raises for ``LLMFAIL`` (a provider outage)."""


def _price_api(ticker: str) -> tuple[int, list[dict[str, float]]]:
    """(status, prices) of the market-data API for the window."""
    if ticker == "HTTP500":
        return 500, []
    return 200, [{"close": PRICE - 1.0}, {"close": PRICE}]


def _get_prices(ticker: str) -> list[dict[str, float]]:
    status, prices = _price_api(ticker)
    return prices if status == 200 else []


def _risk(ticker: str) -> dict[str, Any]:
    prices = _get_prices(ticker)
    if len(prices) < 2:
        return {
            "remaining_position_limit": 0.0,
            "current_price": 0.0,
            "reasoning": {"error": "Missing price data for risk calculation"},
        }
    return {
        "remaining_position_limit": POSITION_LIMIT,
        "current_price": prices[-1]["close"],
        "reasoning": {"portfolio_value": 100000.0, "current_position": 0.0},
    }


def _allowed(ticker: str, price: float, max_qty: int, portfolio: dict[str, Any]) -> dict[str, int]:
    cash = float(portfolio.get("cash", 0.0))
    margin_requirement = float(portfolio.get("margin_requirement", 0.5))
    margin_used = float(portfolio.get("margin_used", 0.0))
    equity = float(portfolio.get("equity", cash))
    position = (portfolio.get("positions") or {}).get(ticker, {})
    allowed = {"hold": 0}
    if int(position.get("long", 0) or 0) > 0:
        allowed["sell"] = int(position["long"])
    if cash > 0 and price > 0 and min(max_qty, int(cash // price)) > 0:
        allowed["buy"] = min(max_qty, int(cash // price))
    if int(position.get("short", 0) or 0) > 0:
        allowed["cover"] = int(position["short"])
    if price > 0 and max_qty > 0:
        if margin_requirement <= 0.0:
            short = max_qty
        else:
            available = max(0.0, equity / margin_requirement - margin_used)
            short = max(0, min(max_qty, int(available // price)))
        if short > 0:
            allowed["short"] = short
    return allowed


def _llm_reply(tickers: list[str]) -> dict[str, Any]:
    """The fake LLM's JSON reply for the tickers it is asked about."""
    if "LLMFAIL" in tickers:
        raise LLMError("Error code: 503 - upstream connect error")
    decisions: dict[str, Any] = {}
    for ticker in tickers:
        if ticker == "OMIT" or ticker not in DECISIONS:
            continue
        action, quantity, confidence, reasoning = DECISIONS[ticker]
        decisions[ticker] = {
            "action": action,
            "quantity": quantity,
            "confidence": confidence,
            "reasoning": reasoning,
        }
    return {"decisions": decisions}


def _validated(reply: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``PortfolioManagerOutput(**reply)``: raises on what pydantic would refuse."""
    out: dict[str, dict[str, Any]] = {}
    for ticker, d in reply["decisions"].items():
        if d["action"] not in ACTIONS:
            raise ValueError(f"decisions.{ticker}.action: input should be one of {ACTIONS}")
        if not all(isinstance(d[k], int) for k in ("quantity", "confidence")):
            raise ValueError(f"decisions.{ticker}: quantity and confidence must be integers")
        out[ticker] = {k: d[k] for k in ("action", "quantity", "confidence", "reasoning")}
    return out


def _call_llm(tickers: list[str], default: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for attempt in range(MAX_RETRIES):
        for ticker in tickers:
            LLM_ATTEMPTS[ticker] = LLM_ATTEMPTS.get(ticker, 0) + 1
        try:
            return _validated(_llm_reply(tickers))
        except Exception as e:
            if attempt == MAX_RETRIES - 1:
                print(f"Error in LLM call after {MAX_RETRIES} attempts: {e}")
                return default
    return default


def _portfolio_manager(
    tickers: list[str], signals: dict[str, dict[str, Any]], portfolio: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    prefilled: dict[str, dict[str, Any]] = {}
    for_llm: list[str] = []
    for ticker in tickers:
        risk = signals["risk_management_agent"].get(ticker, {})
        price = float(risk.get("current_price", 0.0))
        max_qty = int(risk.get("remaining_position_limit", 0.0) // price) if price > 0 else 0
        if set(_allowed(ticker, price, max_qty, portfolio)) == {"hold"}:
            prefilled[ticker] = {
                "action": "hold",
                "quantity": 0,
                "confidence": 100,
                "reasoning": "No valid trade available",
            }
        else:
            for_llm.append(ticker)
    if not for_llm:
        return prefilled
    default = dict(prefilled)
    for ticker in for_llm:
        default[ticker] = {
            "action": "hold",
            "quantity": 0,
            "confidence": 0,
            "reasoning": "Default decision: hold",
        }
    merged = dict(prefilled)
    merged.update(_call_llm(for_llm, default))
    return merged


def run_hedge_fund(
    tickers: list[str],
    start_date: str,
    end_date: str,
    portfolio: dict[str, Any],
    show_reasoning: bool = False,
    selected_analysts: list[str] = [],  # noqa: B006 (the real signature)
    model_name: str = "gpt-4.1",
    model_provider: str = "OpenAI",
) -> dict[str, Any]:
    CALLS.append(
        {
            "tickers": tickers,
            "start_date": start_date,
            "end_date": end_date,
            "portfolio": portfolio,
            "show_reasoning": show_reasoning,
        }
    )
    try:
        signals: dict[str, dict[str, Any]] = {
            "technical_analyst_agent": {},
            "warren_buffett_agent": {},
            "risk_management_agent": {},
        }
        for ticker in tickers:
            signals["technical_analyst_agent"][ticker] = {
                "signal": "bullish",
                "confidence": 71,
                "reasoning": {
                    "trend_following": {
                        "signal": "bullish",
                        "confidence": 64,
                        "metrics": {"adx": 31.2},
                    }
                },
            }
            signals["warren_buffett_agent"][ticker] = {
                "signal": "bearish",
                "confidence": 62,
                "reasoning": "Moat intact, price too high",
            }
            signals["risk_management_agent"][ticker] = _risk(ticker)
        decisions = _portfolio_manager(tickers, signals, portfolio)
        message = json.dumps(decisions)  # the portfolio manager's HumanMessage content
        return {"decisions": json.loads(message), "analyst_signals": signals}
    finally:
        print(PROGRESS_DONE)  # progress.stop(): the Live's last render, off a terminal
