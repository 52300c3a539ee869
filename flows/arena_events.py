"""The one line an arena calls when a run finishes: emit ``ti.arena.completed`` to Prefect.

The ``publish-on-arena-complete`` deployment (prefect.yaml) is triggered by this event and
publishes the decision from the state file the arena wrote, ``{state_dir}/{TICKER}/{DATE}.json``
(the ``replay:`` arena layout). The event's resource carries everything the trigger needs::

    prefect.resource.id  ti.arena.{TICKER}.{YYYY-MM-DD}
    ti.ticker            NVDA
    ti.trade-date        2026-05-11
    ti.state-dir         /data/arena-states      (absolute; visible to the workers)

From Python: ``emit_arena_completed("NVDA", "2026-05-11", "/data/arena-states")``;
from a shell: ``ti emit-arena-completed NVDA 2026-05-11 --state-dir /data/arena-states``.
The event goes to the Prefect server in ``PREFECT_API_URL``: a temporary local server would
have no deployment listening, so an unset URL is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

from ti_core.contract.keys import normalize_ticker, normalize_trade_date
from ti_core.errors import ConfigError, StateNotFoundError

__all__ = [
    "ARENA_COMPLETED",
    "aemit_arena_completed",
    "arena_completed_event",
    "emit_arena_completed",
]

ARENA_COMPLETED = "ti.arena.completed"
RESOURCE_PREFIX = "ti.arena"


def arena_completed_event(
    ticker: str, trade_date: str, state_dir: str | Path, *, check_state: bool = True
) -> dict[str, Any]:
    """The event as keyword arguments for Prefect's ``Event``; validates ticker, date and file.

    With ``check_state`` the state file must exist now: a trigger for a missing file would
    only fail later, on a worker.
    """
    symbol = normalize_ticker(ticker)
    day = normalize_trade_date(trade_date)
    directory = Path(state_dir).expanduser().resolve()
    state_file = directory / symbol / f"{day}.json"
    if check_state and not state_file.is_file():
        raise StateNotFoundError(f"no arena state at {state_file}: write it before the event")
    return {
        "event": ARENA_COMPLETED,
        "resource": {
            "prefect.resource.id": f"{RESOURCE_PREFIX}.{symbol}.{day}",
            "prefect.resource.name": f"{symbol} {day}",
            "ti.ticker": symbol,
            "ti.trade-date": day,
            "ti.state-dir": str(directory),
        },
        "payload": {"state_file": str(state_file)},
    }


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "PREFECT_API_URL is not set: point it at the Prefect server whose "
            "publish-on-arena-complete deployment should react (e.g. http://127.0.0.1:4200/api)"
        )
    return str(url)


async def aemit_arena_completed(
    ticker: str, trade_date: str, state_dir: str | Path, *, check_state: bool = True
) -> str:
    """Send ``ti.arena.completed`` and wait until it is sent; return the event id."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    fields = arena_completed_event(ticker, trade_date, state_dir, check_state=check_state)
    event = Event(**fields)
    url = _api_url()
    try:
        async with PrefectEventsClient(api_url=url, reconnection_attempts=2) as client:
            await client.emit(event)
    except Exception as exc:  # websockets, OS and timeout errors: all mean "not sent"
        raise ConfigError(f"cannot send {ARENA_COMPLETED} to {url}: {exc}") from exc
    return str(event.id)


def emit_arena_completed(
    ticker: str, trade_date: str, state_dir: str | Path, *, check_state: bool = True
) -> str:
    """Blocking form of :func:`aemit_arena_completed`; safe to call inside a running loop."""
    coro = aemit_arena_completed(ticker, trade_date, state_dir, check_state=check_state)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the caller's loop stays free
        return pool.submit(asyncio.run, coro).result()
