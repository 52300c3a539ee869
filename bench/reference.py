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
REFERENCE = ROOT.parent / "shared" / "reference" / "stream_reference.py"
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
