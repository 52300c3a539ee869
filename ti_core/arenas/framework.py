"""What every framework adapter shares: the runner base that calls a framework one call at a
time, and the text helpers of their mappings to a state.

An adapter (one module per framework: :mod:`ti_core.arenas.tradingagents`,
:mod:`ti_core.arenas.hedgefund`) is a runner that calls a framework for one ticker and one date
and maps its output to the state the builder reads, by a pure function of the framework's
output that a fork with a different call can use on its own. It keeps the framework's own words
in ``meta`` and never invents a number: where the framework gives no confidence, the envelope's
confidence is 0 and ``meta.confidence_source`` is ``"none"``. A rating or action it cannot map
leaves the state without a verdict (``meta.no_verdict`` says why), which the pipeline refuses
unless told to publish it degraded.

Calls to one framework object run one at a time: a TradingAgents graph keeps the run's ticker
and state on itself, and ai-hedge-fund drives one progress display per process. A call past
``TI_ARENA_TIMEOUT`` keeps its object's lock until the framework returns (its thread cannot be
stopped), so the next calls on that object wait and time out too.
"""

from __future__ import annotations

import inspect
import json
import threading
from typing import Any

from ti_core.arenas.runner import CallableArena, in_daemon_thread

__all__ = ["REASONING_CHARS", "SUMMARY_CHARS", "WORD_CHARS", "FrameworkArena", "clip", "word"]

REASONING_CHARS = 4000  # the builder keeps as much
SUMMARY_CHARS = 300
WORD_CHARS = 80

_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def _one_at_a_time(owner: object) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(id(owner), threading.Lock())


class FrameworkArena(CallableArena):
    """A framework call in a worker thread, one at a time per framework object."""

    owner: object

    def _invoke(self, ticker: str, trade_date: str) -> Any:
        raise NotImplementedError

    def _locked(self, ticker: str, trade_date: str) -> Any:
        with _one_at_a_time(self.owner):
            return self._invoke(ticker, trade_date)

    async def _call(self, ticker: str, trade_date: str) -> Any:
        result = await in_daemon_thread(self._locked, ticker, trade_date)
        if inspect.isawaitable(result):
            result = await result
        return result


def clip(value: Any, limit: int) -> str | None:
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


def word(value: Any) -> str | None:
    """``value`` stripped, if it is text that is not blank; else None."""
    return value.strip() if isinstance(value, str) and value.strip() else None
