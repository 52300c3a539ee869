"""The original module, loaded by path for the benchmarks that compare against it.

It lives beside this repository (``../shared/reference/stream_reference.py``); the tests never
need it, only these scripts do.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "nvda-2026-05-11-full.json"
# Beside the repository; a worktree one level deeper (``/work/wt/x``) finds it one level up.
_CANDIDATES = [
    base / "shared" / "reference" / "stream_reference.py"
    for base in (ROOT.parent, ROOT.parent.parent)
]
REFERENCE = next((p for p in _CANDIDATES if p.exists()), _CANDIDATES[0])
# A longer synthesis text for the benchmark states, so envelopes are about 2.8 KB.
REASONING = (
    "Fundamentals and technicals agree on continued data-center demand; sentiment is stretched "
    "but not extreme. Guidance was raised for the third quarter in a row, gross margin held, "
    "and the backlog covers two quarters of supply. Momentum is positive above both averages. "
)


def load_reference() -> Any:
    """Import ``stream_reference.py`` as the module ``stream_reference``."""
    spec = importlib.util.spec_from_file_location("stream_reference", REFERENCE)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the reference module at {REFERENCE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["stream_reference"] = module
    spec.loader.exec_module(module)
    return module


def bench_states(count: int) -> list[dict[str, Any]]:
    """``count`` states, one per (ticker, date): the NVDA sample with a longer reasoning and
    varied verdicts and confidences (envelopes of about 2.7 KB)."""
    base = json.loads(SAMPLE.read_text())
    base["synthesis_reasoning"] = REASONING * 4
    states = []
    for i in range(count):
        state = copy.deepcopy(base)
        state["target"]["ticker"] = f"T{i % 200:03d}"
        state["target"]["trade_date"] = (date(2020, 1, 1) + timedelta(days=i // 200)).isoformat()
        state["synthesis_verdict"] = ("BUY", "HOLD", "SELL")[i % 3]
        state["synthesis_confidence"] = (i % 100) / 100
        states.append(state)
    return states


_SOURCES = ("prices", "filings", "news", "social", "options", "macro", "estimates")
_FACTORS = (
    "guidance raise",
    "margin stability",
    "data-center backlog",
    "export controls",
    "put/call 0.9",
    "rates steady",
    "RSI 61",
    "insider selling",
    "buyback",
)
_SIGNALS = (
    ("fundamentals_analyst", "fundamentals", "bullish"),
    ("technical_analyst", "technical", "BULLISH"),
    ("sentiment_analyst", "sentiment", "neutral"),
    ("news_analyst", "news", "bearish"),
    ("macro_analyst", "macro", "NEUTRAL"),
)
_SUMMARY = (
    "Revenue guidance raised for the third quarter in a row; gross margin stable at 75% "
    "and the backlog covers two quarters of supply. Export-control headlines weigh on "
    "China exposure, options skew is neutral, RSI 61."
)


def rich_state(i: int) -> dict[str, Any]:
    """The issue's rich shape: 20 source-metric records, five signals with key factors and
    200-character summaries, a 400-character reasoning, three phase timings (about 2.8 KB)."""
    return {
        "arena_id": f"ti-rich-{i:06d}",
        "llm_model": "claude-sonnet-4",
        "target": {
            "ticker": f"R{i % 200:03d}",
            "trade_date": (date(2020, 1, 1) + timedelta(days=i // 200)).isoformat(),
            "exchange": "NASDAQ",
            "asset_class": "equity",
        },
        "synthesis_verdict": ("buy", "HOLD", "Sell")[i % 3],
        "synthesis_confidence": (i % 100) / 100,
        "synthesis_score": ((i % 200) - 100) / 100,
        "synthesis_reasoning": (REASONING * 2)[:400],
        "agent_signals": [
            {
                "agent": agent,
                "domain": domain,
                "signal": word,
                "confidence": round(0.3 + 0.1 * k + (i % 7) / 100, 2),
                "summary": _SUMMARY[:200],
                "key_factors": [_FACTORS[(i + k + f) % len(_FACTORS)] for f in range(1 + k % 3)],
                "narrative": "Long narrative text that must stay off the envelope. " * 4,
            }
            for k, (agent, domain, word) in enumerate(_SIGNALS)
        ],
        "source_metrics": [
            {
                "source": _SOURCES[(i + m) % len(_SOURCES)],
                "success": (i + m) % 9 != 0,
                "result_bytes": 1000 + 137 * m + i % 500,
                "latency_ms": 40 + m,
            }
            for m in range(20)
        ],
        "phase_timings": [
            {"phase": "gather", "seconds": 12.4 + i % 10},
            {"phase": "analyze", "seconds": 61.9},
            {"phase": "synthesize", "seconds": 8.2},
        ],
        "arena_total_seconds": 82.5 + i % 10,
        "reports": {"fundamentals_analyst": "Very long report ..."},
    }


def rich_states(count: int) -> list[dict[str, Any]]:
    """``count`` rich states, one per (ticker, date)."""
    return [rich_state(i) for i in range(count)]
