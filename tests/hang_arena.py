"""A sync replay arena that never returns for some tickers (importable by ``ti``).

``TI_TEST_REPLAY_DIR`` holds ``{TICKER}/{DATE}.json``; ``TI_TEST_ARENA_DELAY`` seconds per call;
the tickers in ``TI_TEST_HANG_TICKERS`` (comma-separated) block forever, first appending a line
to ``TI_TEST_HANG_MARK`` if it is set.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from tests.backfill_arena import slow_replay

__all__ = ["hang_some"]


def hang_some(ticker: str, trade_date: str) -> dict[str, Any]:
    """The archived state of (ticker, date) after a pause; never, for a hanging ticker."""
    if ticker in os.environ.get("TI_TEST_HANG_TICKERS", "").split(","):
        mark = os.environ.get("TI_TEST_HANG_MARK")
        if mark:  # tells a test the hang has begun
            with open(mark, "a", encoding="utf-8") as handle:
                handle.write(f"{ticker} {trade_date}\n")
        threading.Event().wait()  # like an LLM call with no timeout of its own
    return slow_replay(ticker, trade_date)
