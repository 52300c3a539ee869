"""Import-spec arenas used by the tests (``tests.arena_fixtures:NAME``).

``counting_arena`` appends one line per call to ``$TI_TEST_ARENA_LOG`` so a test in another
process or flow run can count arena runs; ``$TI_TEST_ARENA_FAIL`` lists tickers to fail;
``$TI_TEST_ARENA_VERDICT`` is its verdict (default BUY: an LLM arena that answers anew).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

__all__ = ["GRAPH", "async_arena", "counting_arena", "gated_arena", "sync_arena"]

VALUE = 42


def _state(
    ticker: str, trade_date: str, verdict: str = "BUY", arena_id: str = "test"
) -> dict[str, Any]:
    return {
        "arena_id": arena_id,
        "target": {"ticker": ticker, "date": trade_date},
        "synthesis_verdict": verdict,
        "synthesis_confidence": 0.7,
        "synthesis_score": 0.4 if verdict == "BUY" else -0.4,
        "agent_signals": [
            {
                "agent": "technical_analyst",
                "domain": "technical",
                "signal": "bullish",
                "confidence": 0.8,
                "summary": "up",
            }
        ],
    }


def sync_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    return _state(ticker, trade_date)


async def async_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    await asyncio.sleep(0)
    return _state(ticker, trade_date, "SELL")


class _Graph:
    """Shaped like a framework object whose method returns the final state."""

    def propagate(self, ticker: str, trade_date: str) -> dict[str, Any]:
        return _state(ticker, trade_date, arena_id="graph")


GRAPH = _Graph()


def transient_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    from ti_core.errors import ArenaTransientError

    raise ArenaTransientError("rate limited by the model provider")


def timeout_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    raise TimeoutError("model call timed out")


def broken_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    raise RuntimeError("boom")


def list_arena(ticker: str, trade_date: str) -> list[int]:
    return [1, 2]


def counting_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    """Records each call; fails for tickers in ``TI_TEST_ARENA_FAIL`` ('BAD' gives a bad state)."""
    log = os.environ.get("TI_TEST_ARENA_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{ticker} {trade_date}\n")
    if ticker in os.environ.get("TI_TEST_ARENA_FAIL", "").split(","):
        raise RuntimeError(f"arena crashed on {ticker}")
    state = _state(ticker, trade_date, os.environ.get("TI_TEST_ARENA_VERDICT") or "BUY")
    if ticker == "BAD":
        state["synthesis_confidence"] = 7.5
    return state


def gated_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    """Returns once the file ``$TI_TEST_ARENA_GATE`` exists (at most 300 s): a run that a test
    holds in flight while it does something else."""
    import time

    gate = os.environ["TI_TEST_ARENA_GATE"]
    deadline = time.monotonic() + 300
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _state(ticker, trade_date)


IN_FLIGHT = {"now": 0, "max": 0}


async def tracking_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    """An async arena that takes a moment and records how many runs overlap (IN_FLIGHT)."""
    IN_FLIGHT["now"] += 1
    IN_FLIGHT["max"] = max(IN_FLIGHT["max"], IN_FLIGHT["now"])
    try:
        await asyncio.sleep(0.05)
        return counting_arena(ticker, trade_date)
    finally:
        IN_FLIGHT["now"] -= 1
