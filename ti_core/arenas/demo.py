"""``demo``: a deterministic, offline stand-in arena, and the guard that keeps it off a server.

Its arena id starts ``demo-`` and its envelopes carry ``meta.demo = true`` (:data:`DEMO_META`).
It is the default only when no arena is configured, and :func:`ensure_demo_allowed` keeps it
off a configured Redis server.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ti_core.arenas.runner import ArenaRunner
from ti_core.contract.keys import normalize_ticker, normalize_trade_date
from ti_core.errors import DemoRefusedError
from ti_core.settings import TiSettings

__all__ = ["DEMO_META", "DemoArena", "ensure_demo_allowed"]

DEMO_META: dict[str, Any] = {"demo": True}

_DEMO_AGENTS = (
    ("technical_analyst", "technical"),
    ("fundamental_analyst", "fundamental"),
    ("sentiment_analyst", "sentiment"),
    ("macro_analyst", "macro"),
)


class DemoArena:
    """Deterministic offline states: the same (ticker, date) always gives the same decision."""

    spec = "demo"
    is_demo = True

    @classmethod
    def from_spec(cls, spec: str, rest: str, max_state_bytes: int) -> DemoArena:
        """The registry's factory (the demo's states are small and fixed: no limit to keep)."""
        return cls()

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]:
        ticker, trade_date = normalize_ticker(ticker), normalize_trade_date(trade_date)
        seed = hashlib.sha256(f"ti-demo|{ticker}|{trade_date}".encode()).digest()
        score = round((seed[0] - 127.5) / 127.5, 3)
        verdict = "BUY" if score > 0.2 else "SELL" if score < -0.2 else "HOLD"
        signals = []
        for index, (agent, domain) in enumerate(_DEMO_AGENTS):
            value = seed[1 + index]
            signal = ("bearish", "neutral", "bullish")[value % 3]
            signals.append(
                {
                    "agent": agent,
                    "domain": domain,
                    "signal": signal,
                    "confidence": round(0.4 + (value / 255) * 0.5, 2),
                    "summary": f"Demo {domain} view ({signal}); not a real analysis.",
                    "key_factors": ["demo data"],
                }
            )
        return {
            "arena_id": f"demo-{ticker.lower()}-{trade_date}-{seed[5:7].hex()}",
            "target": {"ticker": ticker, "date": trade_date},
            "synthesis_verdict": verdict,
            "synthesis_confidence": round(0.5 + (seed[6] / 255) * 0.4, 2),
            "synthesis_score": score,
            "synthesis_reasoning": "DEMO decision from the offline demo arena (TI_ARENA=demo): "
            "deterministic per ticker and date, not investment advice.",
            "agent_signals": signals,
            "source_metrics": [],
            "phase_timings": [{"phase": "demo", "seconds": 0.0}],
            "arena_total_seconds": 0.0,
            "llm_model": "demo",
        }


def ensure_demo_allowed(runner: ArenaRunner, settings: TiSettings | None = None) -> None:
    """Refuse a demo runner that would publish to a configured Redis server, unless allowed."""
    s = settings or TiSettings()
    if not runner.is_demo or not s.uses_server or s.allow_demo_publish:
        return
    raise DemoRefusedError(
        f"the demo arena makes fake decisions and will not publish to {s.redis_url_redacted()}: "
        "choose a real arena (setting TI_ARENA), or allow the demo with TI_ALLOW_DEMO_PUBLISH=1"
    )
