"""Reading decisions back: a point lookup, a tail that never dies, a trade-date replay.

The original gave consumers a tail loop that crashed on the first bad entry and a lookup
recipe that parsed the hash's ``json`` field (a whole envelope) as a bare decision. Here every
reader decodes with :func:`ti_core.decoder.explain_payload`, skips what it cannot read with one
warning, and keeps going. All functions take a client the caller owns (``redis.asyncio`` or the
embedded store). For acknowledged, crash-safe consumption use :mod:`ti_core.groups`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from redis import exceptions as redis_errors

from ti_core import defaults, stream_ids
from ti_core.decoder import explain_payload
from ti_core.errors import InvalidStateError
from ti_core.keys import (
    DEFAULT_STREAM_NAME,
    dead_letter_key,
    group_lost_key,
    normalize_ticker,
    normalize_trade_date,
    validate_stream_name,
)
from ti_core.lookup import read_decision
from ti_core.models import TradingIntelligenceEnvelope
from ti_core.reconnect import CONNECTION_LOST, Outage
from ti_core.replies import pipeline, text

__all__ = [
    "Entry",
    "entry_payload",
    "get_decision",
    "group_lag",
    "read_batch",
    "replay_range",
    "safe_block_ms",
    "stream_last_id",
    "tail",
    "text",
]

logger = logging.getLogger(__name__)

Entry = tuple[str, TradingIntelligenceEnvelope]


def entry_payload(fields: Mapping[Any, Any] | None) -> tuple[Any, str]:
    """The ``data`` field of a stream entry, or ``(None, reason)`` when it has none."""
    if not fields:
        return None, "entry has no fields (trimmed or deleted from the stream)"
    for key in (b"data", "data"):
        if key in fields:
            return fields[key], ""
    names = sorted(text(k) for k in fields)[:5]
    return None, f"entry has no 'data' field (fields: {', '.join(names)})"


def safe_block_ms(client: Any, block_ms: int | None) -> int | None:
    """``block_ms`` capped below the client's socket timeout.

    redis-py applies its socket timeout to blocking reads too: an XREAD blocking longer than
    it fails with a TimeoutError instead of returning empty. Never 0 (that blocks forever).
    """
    if block_ms is None:
        return None
    pool = getattr(client, "connection_pool", None)
    timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
    limit = block_ms
    if isinstance(timeout, int | float) and timeout > 0:
        limit = min(block_ms, int(timeout * 1000 * 0.8))
    return max(1, limit)


async def get_decision(
    client: Any, ticker: str, trade_date: str
) -> TradingIntelligenceEnvelope | None:
    """The envelope in the lookup hash for (ticker, date), or ``None`` if absent or unreadable.

    The hash's ``json`` field holds the whole envelope; read the verdict at
    ``envelope.decision.synthesis``. The hash is judged by :func:`ti_core.lookup.read_decision`
    (``ti get`` prints its reason).
    """
    found = await read_decision(client, ticker, trade_date)
    if found.problem:
        logger.warning("get_decision: %s is unreadable: %s", found.key, found.problem)
    return found.envelope


async def stream_last_id(client: Any, stream_name: str) -> str:
    """The stream's last generated id (``0-0`` if it does not exist): what ``$`` means now."""
    try:
        info = await client.xinfo_stream(stream_name)
    except redis_errors.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return "0-0"
        raise
    return text(info.get("last-generated-id") or info.get(b"last-generated-id") or "0-0")


def _decoded(stream_name: str, entries: Iterable[tuple[Any, Any]]) -> Iterator[Entry]:
    """Decode lazily, one entry at a time: a batch of live envelopes would only feed the GC."""
    for raw_id, fields in entries:
        entry_id = text(raw_id)
        payload, reason = entry_payload(fields)
        envelope = None
        if payload is not None:
            envelope, reason = explain_payload(payload)
        if envelope is None:
            logger.warning("skipping entry %s of %s: %s", entry_id, stream_name, reason)
            continue
        yield entry_id, envelope


async def _xread(
    client: Any, stream_name: str, after: str, count: int, block_ms: int | None
) -> list[tuple[Any, Any]]:
    block = safe_block_ms(client, block_ms)
    reply = await client.xread({stream_name: after}, count=count, block=block)
    if not reply:
        return []
    return list(reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0])


async def read_batch(
    client: Any,
    *,
    stream_name: str = DEFAULT_STREAM_NAME,
    after: str = "0-0",
    count: int = 100,
    block_ms: int | None = None,
) -> tuple[str, list[Entry]]:
    """One XREAD after ``after``: the new cursor and the entries that decode (others skipped)."""
    entries = await _xread(client, stream_name, after, count, block_ms)
    if not entries:
        return after, []
    return text(entries[-1][0]), list(_decoded(stream_name, entries))


async def tail(
    client: Any,
    *,
    stream_name: str = DEFAULT_STREAM_NAME,
    start: str = "$",
    count: int = 100,
    block_ms: int = defaults.BLOCK_MS,
    give_up_after: float | None = defaults.RECONNECT_GIVE_UP_SECONDS,
) -> AsyncIterator[Entry]:
    """Yield ``(entry_id, envelope)`` forever, skipping undecodable entries with a warning.

    ``start="$"`` yields entries added after the call (resolved once, so nothing published
    between two reads is missed); ``"0"`` replays history first; any entry id resumes after it.
    A lost connection is ridden out: the tail logs one line, retries with backoff and jitter
    from the last entry it yielded (so nothing is missed or repeated), logs one line when Redis
    is back, and raises ``RedisUnavailableError`` after ``give_up_after`` seconds of failure
    (``None``: at the first failure, after the client's own retries).
    """
    validate_stream_name(stream_name)
    outage = Outage(f"tail of {stream_name}", give_up_after or 0.0)
    cursor: str | None = None if start == "$" else start
    while True:
        try:
            if cursor is None:
                cursor = await stream_last_id(client, stream_name)
            entries = await _xread(client, stream_name, cursor, count, block_ms)
        except CONNECTION_LOST as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            await outage.wait(exc)
            continue
        outage.recovered()
        if entries:
            cursor = text(entries[-1][0])
            for entry in _decoded(stream_name, entries):
                yield entry


def _date_range(start_date: Any, end_date: Any) -> tuple[str, str]:
    first = normalize_trade_date(start_date, field="start_date")
    last = normalize_trade_date(end_date, field="end_date")
    if first > last:
        raise InvalidStateError(f"start_date {first} is after end_date {last}")
    return first, last


async def replay_range(
    client: Any,
    start_date: Any,
    end_date: Any,
    *,
    tickers: Iterable[str] | None = None,
    stream_name: str = DEFAULT_STREAM_NAME,
    page: int = 500,
) -> AsyncIterator[Entry]:
    """Yield, in stream order, every readable entry whose trade date is in [start, end].

    Entry ids are publish times, not trade dates, so the whole stream is scanned (in pages of
    ``page``); entries already trimmed are gone. ``tickers`` narrows the replay.
    """
    validate_stream_name(stream_name)
    first, last = _date_range(start_date, end_date)
    wanted = {normalize_ticker(t) for t in tickers} if tickers is not None else None
    cursor = "-"
    while True:
        entries = await client.xrange(stream_name, min=cursor, max="+", count=page)
        if not entries:
            return
        for entry_id, envelope in _decoded(stream_name, entries):
            target = envelope.decision.target
            if first <= target.trade_date <= last and (wanted is None or target.ticker in wanted):
                yield entry_id, envelope
        if len(entries) < page:
            return
        cursor = stream_ids.after(text(entries[-1][0]))


def _unread_trimmed(
    group: dict[str, Any], removed: int | None, first_id: str | None, last_id: str
) -> int | None:
    """Entries trimmed that ``group`` has not read and has not yet passed: 0, a count or None.

    Trimming removes the oldest entries, so a group positioned before the first remaining
    entry is losing the removed entries it had not read (``removed - entries_read``). Once a
    ``GroupReader`` reads past the gap it records the loss (see ``ti_core.group_scripts``) and
    this is 0. A group read some other way and now caught up shows its loss in Redis's ``lag``
    (entries counted as added, never delivered, none left), which is reported instead.
    """
    if removed is None:
        return None
    position = stream_ids.sort_key(group["last_delivered_id"])
    if removed == 0 or (first_id is not None and position >= stream_ids.sort_key(first_id)):
        caught_up = position >= stream_ids.sort_key(last_id)
        return int(group["lag"] or 0) if caught_up and removed else 0
    if group["entries_read"] is not None:
        return max(0, removed - int(group["entries_read"]))
    return removed if group["last_delivered_id"] == "0-0" else None


def _recorded_loss(raw: Mapping[Any, Any] | None) -> dict[str, Any]:
    """A group's lost hash (written by ``READ_NEW``) as report fields."""
    fields = {text(k): text(v) for k, v in (raw or {}).items()}

    def when(name: str) -> str | None:
        ms = fields.get(name)
        return (
            None
            if ms is None
            else datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="seconds")
        )

    return {
        "lost_recorded": int(fields.get("entries", 0)),
        "lost_unknown_gaps": int(fields.get("unknown", 0)),
        "lost_since": when("first_at_ms"),
        "lost_last_at": when("last_at_ms"),
    }


async def group_lag(client: Any, stream_name: str = DEFAULT_STREAM_NAME) -> dict[str, Any]:
    """Stream length and, per consumer group: consumers, pending, entries read, lag, lost.

    ``lag`` is Redis 7's count of entries not yet delivered to the group (``None`` when Redis
    cannot tell or before 7.0). ``lost`` counts entries trimmed before the group read them:
    those a ``GroupReader`` recorded when it read past the gap (``lost_recorded``, kept after
    the group caught up, with ``lost_since`` and ``lost_last_at``) plus those it has yet to pass
    (``None``: unknown). ``lost_unknown_gaps`` counts gaps whose size Redis could not tell.
    ``exists`` is False (and ``groups`` empty) when nothing was published yet.
    """
    validate_stream_name(stream_name)
    out: dict[str, Any] = {
        "stream": stream_name,
        "exists": False,
        "length": 0,
        "groups": [],
        "dead_letters": int(await client.xlen(dead_letter_key(stream_name))),
    }
    try:
        info = await client.xinfo_stream(stream_name)
    except redis_errors.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return out
        raise
    length = int(info.get("length", 0))
    added = info.get("entries-added")
    removed = None if added is None else max(0, int(added) - length)
    first = info.get("first-entry")
    first_id = text(first[0]) if first else None
    last_id = text(info.get("last-generated-id") or "0-0")
    out.update(exists=True, length=length, removed=removed, last_generated_id=last_id)
    rows = await client.xinfo_groups(stream_name)
    pipe = pipeline(client)
    for row in rows:
        pipe.hgetall(group_lost_key(stream_name, text(row.get("name", ""))))
    recorded = await pipe.execute() if rows else []
    for row, losses in zip(rows, recorded, strict=True):
        lag, read = row.get("lag"), row.get("entries-read")
        group: dict[str, Any] = {
            "name": text(row.get("name", "")),
            "consumers": int(row.get("consumers", 0)),
            "pending": int(row.get("pending", 0)),
            "last_delivered_id": text(row.get("last-delivered-id") or "0-0"),
            "entries_read": None if read is None else int(read),
            "lag": None if lag is None else int(lag),
        }
        group.update(_recorded_loss(losses))
        unread = _unread_trimmed(group, removed, first_id, last_id)
        group["lost"] = None if unread is None else unread + group["lost_recorded"]
        out["groups"].append(group)
    return out
