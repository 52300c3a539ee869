"""In-process arenas whose states must be refused before Prefect stores them."""

from __future__ import annotations

from typing import Any

__all__ = ["deep_arena", "huge_arena"]


def huge_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    """A verdict and 64 MiB of narrative: over any sensible TI_MAX_STATE_BYTES."""
    return {
        "target": {"ticker": ticker, "date": trade_date},
        "synthesis_verdict": "BUY",
        "reports": {"market": "x" * (64 << 20)},
    }


def deep_arena(ticker: str, trade_date: str) -> dict[str, Any]:
    """A verdict and phase timings nested 900 deep (Prefect's hashing recursed to death)."""
    deep: Any = {}
    for _ in range(900):
        deep = {"d": deep}
    return {
        "target": {"ticker": ticker, "date": trade_date},
        "synthesis_verdict": "BUY",
        "phase_timings": [deep],
    }
