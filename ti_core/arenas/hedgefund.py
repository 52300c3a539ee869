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
(it gives limits, not a signal); ``meta`` keeps ``action`` and ``quantity``.

No verdict (:data:`PM_FALLBACKS`, recognised by the exact hold upstream writes): the portfolio
manager's fallback when its LLM call failed three times (``"Default decision: hold"``,
confidence 0; ``"Error in portfolio management, defaulting to hold"`` from January to
August 2025), its pre-filled hold when no trade was possible, which with the adapter's flat,
all-cash portfolio means the ticker had no price (market-data API down or refusing the key:
``"No valid trade available"``, confidence 100, the LLM never asked), no decision for the
ticker, no decisions at all, or an unknown action.

Supported: ai-hedge-fund v1, ``src/main.py: run_hedge_fund`` as of commit
:data:`HEDGEFUND_V1_COMMIT` (the last before "Make 2.0.0 the default"). ai-hedge-fund 2.x (the
``aihf``/``hedge-fund`` package, module ``hedge_fund``) has no ``run_hedge_fund``: a spec
naming a ``hedge_fund`` function is refused, saying which commit to check out, and so is a
result shaped like its ``CycleRecord``/``DecisionRecord`` (``hedgefund2:`` maps those).

The framework's stdout (its progress table, its ``print`` of LLM errors) written by the calling
thread during the call goes to the logger ``ti_core.hedgefund`` at INFO, line by line,
not to the command's output.
"""

from __future__ import annotations

import calendar
import inspect
import io
import logging
import math
import sys
import threading
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
from ti_core.errors import ArenaError, ConfigError, InvalidStateError

logger = logging.getLogger("ti_core.hedgefund")

__all__ = [
    "HEDGEFUND_ACTIONS",
    "HEDGEFUND_V1_COMMIT",
    "PM_FALLBACKS",
    "StdoutToLog",
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
HEDGEFUND_V1_COMMIT = "6c41ae8cf5fb4e30eb8cdb6a816eb56ff234989d"
MAX_SIGNALS = 50
PM_FALLBACKS: dict[str, str] = {
    "default decision: hold": (
        "ai-hedge-fund's portfolio manager decided nothing: its LLM call failed, it fell back "
        "to hold"
    ),
    "no valid trade available": (
        "ai-hedge-fund's portfolio manager decided nothing: no trade possible (no price), "
        "it pre-filled hold"
    ),
    "error in portfolio management, defaulting to hold": (
        "ai-hedge-fund's portfolio manager decided nothing: it failed, it fell back to hold"
    ),
}
"""A hold whose reasoning is one of these (lower case) is upstream's fallback, not a decision."""
_RISK_AGENT = "risk_management_agent"
_V2_FIELDS = ("final_weights", "target_weights")


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


def _risk_error(result: Mapping[str, Any], ticker: str) -> str:
    """``; risk manager: <its error>`` when it gave one for ``ticker``, else empty."""
    signals = result.get("analyst_signals")
    risk = signals.get(_RISK_AGENT) if isinstance(signals, Mapping) else None
    entry = risk.get(ticker) if isinstance(risk, Mapping) else None
    reasoning = entry.get("reasoning") if isinstance(entry, Mapping) else None
    error = reasoning.get("error") if isinstance(reasoning, Mapping) else None
    return f"; risk manager: {clip(error, WORD_CHARS)}" if word(error) else ""


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
    if any(hasattr(result, f) or (isinstance(result, Mapping) and f in result) for f in _V2_FIELDS):
        raise ArenaError(
            f"hedgefund returned an ai-hedge-fund 2.x cycle for {ticker} {trade_date}; the "
            f"hedgefund: adapter runs v1's run_hedge_fund (commit {HEDGEFUND_V1_COMMIT[:12]}), "
            "use hedgefund2:MODULE:FUNCTION for a cycle"
        )
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
    fallback = PM_FALLBACKS.get((reasoning or "").strip().lower())
    if verdict == "HOLD" and fallback is not None:
        verdict, why = None, f"{fallback} ({reasoning!r}{_risk_error(result, ticker)})"
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


class StdoutToLog(io.TextIOBase):
    """``sys.stdout`` while a framework call runs: what a thread inside a call writes goes to
    :data:`logger` line by line, every other thread's writes go to the stdout it replaced.

    Installed while at least one call runs (nested and overlapping calls share it), so the
    command's own lines printed meanwhile stay on its output. It says it is no terminal, so
    a rich live display (ai-hedge-fund's progress) draws nothing until its final table, which
    it writes from the calling thread.
    """

    _guard = threading.Lock()
    _installed: StdoutToLog | None = None
    _users = 0

    def __init__(self, original: Any) -> None:
        super().__init__()
        self.original = original
        self.pending: dict[int, str] = {}  # thread id -> its unfinished line
        self.callers: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        """The rest (``buffer``, ``errors``, ...) is the replaced stdout's."""
        return getattr(self.original, name)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.original, "encoding", None) or "utf-8")

    def fileno(self) -> int:
        if threading.get_ident() in self.callers:
            raise io.UnsupportedOperation("a framework call's stdout is the log, not a file")
        return int(self.original.fileno())

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        me = threading.get_ident()
        if me not in self.callers:
            return int(self.original.write(text) or 0)
        lines = (self.pending.pop(me, "") + text).split("\n")
        if lines[-1]:
            self.pending[me] = lines[-1]
        for line in lines[:-1]:
            if line.strip():
                logger.info("%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        if threading.get_ident() not in self.callers:
            self.original.flush()

    @classmethod
    def enter(cls) -> StdoutToLog:
        """Route the calling thread's stdout to the log (installing the router if needed)."""
        with cls._guard:
            if cls._installed is None:
                cls._installed = cls(sys.stdout)
                sys.stdout = cls._installed
            cls._users += 1
            cls._installed.callers.add(threading.get_ident())
            return cls._installed

    @classmethod
    def leave(cls) -> None:
        """Stop routing the calling thread (restoring stdout once no call routes)."""
        with cls._guard:
            router = cls._installed
            if router is None:
                return
            me = threading.get_ident()
            rest = router.pending.pop(me, "")
            if rest.strip():
                logger.info("%s", rest.rstrip())
            router.callers.discard(me)
            cls._users -= 1
            if cls._users == 0:
                if sys.stdout is router:
                    sys.stdout = router.original
                cls._installed = None


class HedgeFundArena(FrameworkArena):
    """``hedgefund:MODULE:FUNCTION``: ``run_hedge_fund`` for one ticker and date -> state."""

    def __init__(
        self,
        spec: str,
        function: Callable[..., Any] | None = None,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
    ) -> None:
        target = function if function is not None else resolve(spec, spec.partition(":")[2])
        module = str(getattr(target, "__module__", "") or "")
        if module == "hedge_fund" or module.startswith("hedge_fund."):
            raise ConfigError(
                f"arena {spec}: {module} is ai-hedge-fund 2.x, which has no run_hedge_fund; "
                f"the hedgefund: adapter needs ai-hedge-fund v1 (commit "
                f"{HEDGEFUND_V1_COMMIT[:12]}, src/main.py: run_hedge_fund), or use "
                "hedgefund2:MODULE:FUNCTION for a 2.x cycle"
            )
        super().__init__(spec, target, max_state_bytes)
        self.owner = target
        self.model = _default(target, "model_name")

    def _invoke(self, ticker: str, trade_date: str) -> Any:
        StdoutToLog.enter()
        try:
            return self.function(
                tickers=[ticker],
                start_date=months_before(trade_date, HEDGEFUND_LOOKBACK_MONTHS),
                end_date=trade_date,
                portfolio=flat_portfolio(ticker),
                show_reasoning=False,
            )
        finally:
            StdoutToLog.leave()

    def to_state(self, result: Any, ticker: str, trade_date: str) -> dict[str, Any]:
        return hedge_fund_state(result, ticker, trade_date, self.model)
