"""A stand-in for virattt/ai-hedge-fund's ``run_hedge_fund`` (no LLM, no network).

Same keyword interface and return shape as ``src/main.py``: ``{"decisions": ..., "analyst_signals":
...}``, where ``decisions`` is the portfolio manager's JSON reply parsed (``{ticker: {"action":
buy|sell|short|cover|hold, "quantity": int, "confidence": 0-100, "reasoning": str}}``, or None
when the reply was not JSON) and ``analyst_signals`` maps each agent (``technical_analyst_agent``
with an int confidence and a dict of reasoning, ``warren_buffett_agent`` with a float and text,
``risk_management_agent`` with limits and no signal) to ``{ticker: {...}}``. The ticker picks
the decision (:data:`DECISIONS`); every call's keywords are kept in :data:`CALLS`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CALLS", "DECISIONS", "run_hedge_fund"]

# ticker -> (action, quantity, confidence, reasoning); PMERR is the portfolio manager's own
# fallback when its LLM call fails; NODEC makes the reply unparseable (decisions None).
DECISIONS: dict[str, tuple[str, int, float, str]] = {
    "BUY": ("buy", 40, 85.0, "Strong bullish consensus"),
    "COVER": ("cover", 10, 70.0, "Close the short"),
    "HOLD": ("hold", 0, 55.0, "Mixed signals"),
    "SELL": ("sell", 20, 90.0, "Bearish; reduce the long"),
    "SHORT": ("short", 25, 65.5, "Overvalued"),
    "PMERR": ("hold", 0, 0.0, "Error in portfolio management, defaulting to hold"),
    "JUMP": ("jump", 1, 50.0, "Not an action"),
}
CALLS: list[dict[str, Any]] = []


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
    decisions: dict[str, Any] | None = {}
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
                "trend_following": {"signal": "bullish", "confidence": 64, "metrics": {"adx": 31.2}}
            },
        }
        signals["warren_buffett_agent"][ticker] = {
            "signal": "bearish",
            "confidence": 62.5,
            "reasoning": "Moat intact, price too high",
        }
        signals["risk_management_agent"][ticker] = {
            "remaining_position_limit": 20000.0,
            "current_price": 101.5,
            "reasoning": {"portfolio_value": 100000.0, "current_position": 0.0},
        }
        if ticker == "NODEC":
            decisions = None
        elif decisions is not None and ticker in DECISIONS:
            action, quantity, confidence, reasoning = DECISIONS[ticker]
            decisions[ticker] = {
                "action": action,
                "quantity": quantity,
                "confidence": confidence,
                "reasoning": reasoning,
            }
    return {"decisions": decisions, "analyst_signals": signals}
