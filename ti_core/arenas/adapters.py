"""Adapters for the arenas people run: TradingAgents and ai-hedge-fund, to the builder's state.

An adapter is a runner (see :mod:`ti_core.arenas.arena`) that calls a framework for one ticker and
one
date and maps its output to the state the builder reads. It keeps the framework's own words in
``meta`` and never invents a number: where the framework gives no confidence, the envelope's
confidence is 0 and ``meta.confidence_source`` is ``"none"``. A rating or action it cannot map
leaves the state without a verdict (``meta.no_verdict`` says why), which the pipeline refuses
unless told to publish it degraded.

``tradingagents:MODULE:OBJECT``: ``OBJECT.propagate(ticker, trade_date)`` returns
``(final_state, rating)`` (TauricResearch/TradingAgents' ``TradingAgentsGraph``).

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

``hedgefund:MODULE:FUNCTION``: ``FUNCTION(tickers=[ticker], start_date=3 months earlier,
end_date=trade_date, portfolio=<flat, 100,000 cash>, show_reasoning=False)`` returns
``{"decisions": {ticker: {action, quantity, confidence, reasoning}}, "analyst_signals":
{agent: {ticker: {signal, confidence, reasoning}}}}`` (virattt/ai-hedge-fund's
``run_hedge_fund``).

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

Calls to one framework object run one at a time: a TradingAgents graph keeps the run's ticker
and state on itself, and ai-hedge-fund drives one progress display per process.
"""

from __future__ import annotations

import asyncio
import calendar
import inspect
import threading
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from ti_core.arenas.arena import CallableArena, resolve
from ti_core.arenas.framework_maps import (
    hedge_fund_state,
    tradingagents_state,
)
from ti_core.contract.bounds import DEFAULT_MAX_STATE_BYTES
from ti_core.contract.keys import shorten
from ti_core.errors import ArenaError, ConfigError

__all__ = [
    "HedgeFundArena",
    "TradingAgentsArena",
]

HEDGEFUND_CASH = 100_000.0
HEDGEFUND_LOOKBACK_MONTHS = 3  # ai-hedge-fund's own default window

_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def _one_at_a_time(owner: object) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(id(owner), threading.Lock())


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


class _Adapter(CallableArena):
    """A framework call in a worker thread, one at a time per framework object."""

    owner: object

    def _invoke(self, ticker: str, trade_date: str) -> Any:
        raise NotImplementedError

    def _locked(self, ticker: str, trade_date: str) -> Any:
        with _one_at_a_time(self.owner):
            return self._invoke(ticker, trade_date)

    async def _call(self, ticker: str, trade_date: str) -> Any:
        result = await asyncio.to_thread(self._locked, ticker, trade_date)
        if inspect.isawaitable(result):
            result = await result
        return result


class TradingAgentsArena(_Adapter):
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


class HedgeFundArena(_Adapter):
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
