"""``hedgefund2:MODULE:FUNCTION``: an ai-hedge-fund 2.x assessment or cycle for one ticker,
its adapter and its mapping to a state.

ai-hedge-fund 2.x (the ``aihf`` package, earlier ``hedge-fund``; module ``hedge_fund``;
checked against aihf 2.6.1) has no ``run_hedge_fund``: a fund (a mandate: strategies of alpha
models, a blend, risk limits) is assessed as of a completed session by
``hedge_fund.pipeline.assess_fund(fund, as_of, data_client, universe)``, which returns a
``DecisionRecord``, and executed at a later session by ``execute_decision`` (or
``advance``), which returns a ``CycleRecord``. Both need the caller's fund and data client (and
broker), so ``FUNCTION(ticker, trade_date)`` is yours: it builds them and returns either record
(the pydantic object or its ``model_dump()``) for the universe ``[ticker]`` as of
``trade_date``, e.g. ``assess_fund(FUND, trade_date, DATA, [ticker])``.

:func:`hedge_fund2_state` maps the record's decision for the ticker:

=======================================  =======
final weight - weight held before         verdict
=======================================  =======
> 0 (the fund buys toward its target)     BUY
= 0 (within 1e-9, upstream's tolerance)   HOLD
< 0 (the fund sells toward its target)    SELL
=======================================  =======

The weight held before is 0 for a ``DecisionRecord`` (an assessment owns no book) and, for a
``CycleRecord``, the ticker's shares before its orders at the execution mark over
``equity_before``. The final weight is ``final_weights[ticker]`` (after risk limits). There is
no confidence (``meta.confidence_source`` ``"none"``): a weight is a size, not a probability.
Reasoning is the theses, one ``model: reasoning`` line per alpha model's signal for the ticker;
each signal is an agent signal (bullish above 0, bearish below, neutral at 0, its ``|value|``
as confidence). ``meta`` keeps the target and final weights, the weight before, the change,
each strategy's flat reason and the ticker's orders. No verdict: the ticker skipped (its
reason), not in the universe, no final weight for it, or a record as of another date.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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
from ti_core.errors import ArenaError

__all__ = ["HedgeFund2Arena", "hedge_fund2_state"]

WEIGHT_TOLERANCE = 1e-9  # hedge_fund.portfolio.construction.WEIGHT_TOLERANCE
MAX_SIGNALS = 50


def _get(record: Any, field: str) -> Any:
    """A field of a pydantic record or of its ``model_dump()``."""
    if isinstance(record, Mapping):
        return record.get(field)
    return getattr(record, field, None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _weights(record: Any, field: str) -> Mapping[str, Any]:
    value = _get(record, field)
    return value if isinstance(value, Mapping) else {}


def _signals(record: Any, ticker: str) -> list[Any]:
    out: list[Any] = []
    for strategy in _get(record, "strategies") or []:
        for signal in _get(strategy, "signals") or []:
            if _get(signal, "ticker") == ticker:
                out.append(signal)
    return out


def _agent_signal(signal: Any) -> dict[str, Any]:
    value = _number(_get(signal, "value"))
    name = str(_get(signal, "model_name") or "model")[:WORD_CHARS]
    word_ = "neutral" if not value else ("bullish" if value > 0 else "bearish")
    return {
        "agent": name,
        "domain": name,
        "signal": word_,
        "confidence": None if value is None else round(min(abs(value), 1.0), 6),
        "summary": clip(_get(signal, "reasoning"), SUMMARY_CHARS),
    }


def _held_before(record: Any, ticker: str) -> float:
    """The ticker's weight before this cycle's orders (0 for an assessment)."""
    orders = _get(record, "orders")
    positions = _get(record, "positions")
    if orders is None or not isinstance(positions, Mapping):
        return 0.0
    shares = _number(positions.get(ticker)) or 0.0
    for order in orders:
        if _get(order, "ticker") == ticker:
            quantity = _number(_get(order, "quantity")) or 0.0
            shares -= quantity if _get(order, "side") == "buy" else -quantity
    mark = _number(_weights(record, "marks").get(ticker))
    equity = _number(_get(record, "equity_before"))
    if not shares or mark is None or not equity:
        return 0.0
    return shares * mark / equity


def _why_none(record: Any, ticker: str, trade_date: str) -> str | None:
    as_of = _get(record, "as_of")
    if as_of != trade_date:
        return f"ai-hedge-fund 2.x record is as of {shorten(as_of)}, not {trade_date}"
    for skip in _get(record, "skipped") or []:
        if _get(skip, "ticker") == ticker:
            return f"ai-hedge-fund 2.x skipped {ticker}: {clip(_get(skip, 'reason'), 200)}"
    universe = _get(record, "universe") or []
    if ticker not in universe:
        names = ", ".join(str(t)[:20] for t in list(universe)[:10]) or "none"
        return f"ai-hedge-fund 2.x universe has no {ticker} (universe: {names})"
    if _number(_weights(record, "final_weights").get(ticker)) is None:
        return f"ai-hedge-fund 2.x gave no final weight for {ticker}"
    return None


def hedge_fund2_state(record: Any, ticker: str, trade_date: str) -> dict[str, Any]:
    """The builder's state from a 2.x ``DecisionRecord`` or ``CycleRecord`` for ``ticker``."""
    if _get(record, "final_weights") is None or _get(record, "target_weights") is None:
        raise ArenaError(
            f"hedgefund2 returned {shorten(record)} for {ticker} {trade_date}, not an "
            "ai-hedge-fund 2.x DecisionRecord or CycleRecord"
        )
    signals = _signals(record, ticker)
    theses = [
        f"{_get(s, 'model_name')}: {_get(s, 'reasoning')}"
        for s in signals
        if word(_get(s, "reasoning"))
    ]
    meta: dict[str, Any] = {"framework": "ai-hedge-fund 2.x", "confidence_source": "none"}
    state: dict[str, Any] = {
        "arena_id": "ai-hedge-fund-2",
        "target": {"ticker": ticker, "trade_date": trade_date},
        "synthesis_reasoning": clip("\n".join(theses), REASONING_CHARS),
        "agent_signals": [_agent_signal(s) for s in signals[:MAX_SIGNALS]],
        "meta": meta,
    }
    why = _why_none(record, ticker, trade_date)
    target = _number(_weights(record, "target_weights").get(ticker))
    final = _number(_weights(record, "final_weights").get(ticker))
    if target is not None:
        meta["target_weight"] = target
    flat = {
        str(_get(s, "name")): _get(s, "flat_reason")
        for s in _get(record, "strategies") or []
        if _get(s, "flat_reason")
    }
    if flat:
        meta["flat_reasons"] = flat
    orders = [
        {"side": _get(o, "side"), "quantity": _get(o, "quantity"), "price": _get(o, "price")}
        for o in _get(record, "orders") or []
        if _get(o, "ticker") == ticker
    ]
    if _get(record, "orders") is not None:
        meta["orders"] = orders
    if why is None and final is not None:
        before = _held_before(record, ticker)
        change = final - before
        meta.update(final_weight=final, weight_before=before, weight_change=change)
        if change > WEIGHT_TOLERANCE:
            state["synthesis_verdict"] = "BUY"
        elif change < -WEIGHT_TOLERANCE:
            state["synthesis_verdict"] = "SELL"
        else:
            state["synthesis_verdict"] = "HOLD"
    else:
        meta["no_verdict"] = why
    return state


class HedgeFund2Arena(FrameworkArena):
    """``hedgefund2:MODULE:FUNCTION``: ``FUNCTION(ticker, trade_date)`` -> a 2.x record ->
    state."""

    def __init__(
        self,
        spec: str,
        function: Callable[..., Any] | None = None,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
    ) -> None:
        target = function if function is not None else resolve(spec, spec.partition(":")[2])
        super().__init__(spec, target, max_state_bytes)
        self.owner = target

    def _invoke(self, ticker: str, trade_date: str) -> Any:
        return self.function(ticker, trade_date)

    def to_state(self, result: Any, ticker: str, trade_date: str) -> dict[str, Any]:
        return hedge_fund2_state(result, ticker, trade_date)
