"""``replay:DIR``: the archived state ``DIR/{TICKER}/{YYYY-MM-DD}.json`` of an earlier run.

The ticker and date are validated before they touch the file system, and a file's size is
checked before it is read, so a replayed state is bounded like any other runner's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ti_core.contract.bounds import DEFAULT_MAX_STATE_BYTES, check_file_size, check_state, too_deep
from ti_core.contract.keys import normalize_ticker, normalize_trade_date
from ti_core.errors import ConfigError, StateNotFoundError, one_line

__all__ = ["ReplayArena"]


class ReplayArena:
    """Reads ``{directory}/{TICKER}/{YYYY-MM-DD}.json``; the pair is validated first."""

    is_demo = False

    def __init__(
        self, directory: str | Path, max_state_bytes: int = DEFAULT_MAX_STATE_BYTES
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.spec = f"replay:{directory}"
        self.max_state_bytes = max_state_bytes

    @classmethod
    def from_spec(cls, spec: str, rest: str, max_state_bytes: int) -> ReplayArena:
        """The registry's factory: ``rest`` is the directory; ConfigError when there is none."""
        directory = rest.strip()
        if not directory:
            raise ConfigError("arena spec 'replay:' needs a directory: replay:DIR")
        return cls(directory, max_state_bytes)

    def path_for(self, ticker: str, trade_date: str) -> Path:
        """The state file of a pair; raises ``InvalidStateError`` for a bad ticker or date."""
        day = normalize_trade_date(trade_date)
        return self.directory / normalize_ticker(ticker) / f"{day}.json"

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]:
        path = self.path_for(ticker, trade_date)
        limit = self.max_state_bytes
        try:
            with path.open("rb") as handle:  # measured on the open file, then read no more
                check_file_size(path, limit, os.fstat(handle.fileno()).st_size)
                data = handle.read(limit + 1)
            check_file_size(path, limit, len(data))  # it grew while we looked
            text = data.decode("utf-8")
        except FileNotFoundError:
            raise StateNotFoundError(f"no archived arena state: {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateNotFoundError(
                f"cannot read arena state {path}: {one_line(exc, 200, typed=True)}"
            ) from None
        try:
            state = json.loads(text)
        except RecursionError:
            raise too_deep(f"arena state {path}") from None
        except ValueError as exc:
            raise StateNotFoundError(f"arena state {path} is not valid JSON: {exc}") from None
        if not isinstance(state, dict):
            raise StateNotFoundError(
                f"arena state {path} is a JSON {type(state).__name__}, not an object"
            )
        check_state(state, limit, f"arena state {path}")  # depth, NaN; size is known
        return state
