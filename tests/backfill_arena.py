"""A replay arena that takes its time, for killing backfills mid-run (importable by ``ti``).

``TI_TEST_REPLAY_DIR`` holds ``{TICKER}/{DATE}.json``; ``TI_TEST_ARENA_DELAY`` seconds per call.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["slow_replay"]


def slow_replay(ticker: str, trade_date: str) -> dict[str, Any]:
    """The archived state of (ticker, date), after a pause."""
    time.sleep(float(os.environ.get("TI_TEST_ARENA_DELAY", "0.01")))
    path = Path(os.environ["TI_TEST_REPLAY_DIR"]) / ticker / f"{trade_date}.json"
    state: dict[str, Any] = json.loads(path.read_text())
    return state
