"""What Redis knows about backfill items, and the ticker x session coverage grid.

An item (ticker, session) is *published* when its decision hash exists; *orphan_entry* when
it has no hash but an entry was appended for it (the ``{stream}:latest:{T}:{D}`` record: a
publish that wrote the entry alone, e.g. by ``publish_envelope`` or an older version, and
died before the hash; publishing it again heals it); *failed* when it has a failure record
(:mod:`ti_core.failures`: written by a failed attempt, deleted by a successful one); else
*missing*. :func:`classify` answers
for a batch in one pipelined round trip; the grid is built from it in chunks, so
``ti status`` over hundreds of tickers and sessions needs no Prefect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ti_core.backfill.calendar import SessionPlan
from ti_core.contract.keys import (
    DEFAULT_STREAM_NAME,
    decision_hash_key,
    failure_key,
    latest_key,
    normalize_ticker,
)
from ti_core.failures import field_of, reason_of
from ti_core.transport.boundary import is_wrong_type, raise_error_replies, redis_boundary
from ti_core.transport.client import RedisClient
from ti_core.transport.replies import pipeline

__all__ = [
    "STATES",
    "Found",
    "Item",
    "StatusGrid",
    "classify",
    "status_grid",
]

ItemState = Literal["published", "orphan_entry", "failed", "missing"]
STATES = ("published", "orphan_entry", "failed", "missing")
_CHUNK = 2000
_READ = "nothing was written (a read)"


@dataclass(frozen=True, slots=True)
class Item:
    """One (ticker, session) of a backfill; ``field`` is its name in the failure hash."""

    ticker: str
    trade_date: str

    @property
    def field(self) -> str:
        return field_of(self.ticker, self.trade_date)


@dataclass(frozen=True, slots=True)
class Found:
    """What Redis holds for an item: a decision hash, and the reason of a recorded failure."""

    published: bool
    failure: str | None
    entry_only: bool = False

    @property
    def state(self) -> ItemState:
        """``published`` wins over a failure record: a later attempt failed, the decision stands.
        An entry without its hash is named as such, whatever failure was recorded."""
        if self.published:
            return "published"
        if self.entry_only:
            return "orphan_entry"
        return "failed" if self.failure is not None else "missing"


@redis_boundary(_READ)
async def classify(
    client: RedisClient, items: Sequence[Item], *, stream_name: str = DEFAULT_STREAM_NAME
) -> list[Found]:
    """Per item, what Redis holds: one pipeline of HEXISTS per decision hash and per
    latest-entry record, plus one HMGET of the failure hash."""
    if not items:
        return []
    pipe = pipeline(client)
    for item in items:
        pipe.hexists(decision_hash_key(item.ticker, item.trade_date), "json")
    for item in items:
        pipe.hexists(latest_key(stream_name, item.ticker, item.trade_date), "entry_id")
    names = [item.field for item in items]
    pipe.hmget(failure_key(stream_name), names)
    replies = list(await pipe.execute(raise_on_error=False))
    # A refused right or an unreachable server is an error, not a state of the items.
    raise_error_replies(replies, client, _READ, unless=is_wrong_type)
    failures = replies.pop()
    entries = replies[len(items) : 2 * len(items)]
    del replies[len(items) :]
    # A key of the wrong type answers with an error: not a decision, not a failure record.
    if isinstance(failures, Exception):
        failures = [None] * len(items)
    failures = [None if isinstance(f, Exception) else f for f in failures]
    return [
        Found(
            published is True or published == 1,
            None if failure is None else reason_of(failure),
            entry is True or entry == 1,
        )
        for published, failure, entry in zip(replies, failures, entries, strict=True)
    ]


@dataclass(slots=True)
class StatusGrid:
    """``cells[ticker][i]`` is the state of ``sessions[i]``; ``failures`` maps ``TICKER:DATE``
    to the recorded reason (also for published pairs whose later attempt failed)."""

    calendar: str
    sessions: list[str]
    skipped: list[tuple[str, str]]
    cells: dict[str, list[str]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many cells are in each state."""
        totals = dict.fromkeys(STATES, 0)
        for row in self.cells.values():
            for state in row:
                totals[state] += 1
        return totals

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: calendar, sessions, skipped days, the grid, counts and failures."""
        return {
            "calendar": self.calendar,
            "sessions": self.sessions,
            "skipped": [{"date": d, "reason": r} for d, r in self.skipped],
            "tickers": {
                t: dict(zip(self.sessions, row, strict=True)) for t, row in self.cells.items()
            },
            "counts": self.counts(),
            "failures": self.failures,
        }


@redis_boundary(_READ)
async def status_grid(
    client: RedisClient,
    tickers: Iterable[str],
    plan: SessionPlan,
    *,
    stream_name: str = DEFAULT_STREAM_NAME,
) -> StatusGrid:
    """The grid for ``tickers`` over ``plan``'s sessions, in chunks of pipelined reads."""
    grid = StatusGrid(plan.calendar, list(plan.sessions), list(plan.skipped))
    names = list(dict.fromkeys(normalize_ticker(t) for t in tickers))
    grid.cells = {name: ["missing"] * len(grid.sessions) for name in names}
    for name in names:
        for start in range(0, len(grid.sessions), _CHUNK):
            days = grid.sessions[start : start + _CHUNK]
            found = await classify(client, [Item(name, d) for d in days], stream_name=stream_name)
            for offset, (day, f) in enumerate(zip(days, found, strict=True)):
                grid.cells[name][start + offset] = f.state
                if f.failure is not None:
                    grid.failures[field_of(name, day)] = f.failure
    return grid
