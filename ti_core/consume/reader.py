"""Reading decisions back: a point lookup, a tail that never dies, a trade-date replay.

The original gave consumers a tail loop that crashed on the first bad entry and a lookup
recipe that parsed the hash's ``json`` field (a whole envelope) as a bare decision. Here every
reader decodes with :func:`ti_core.contract.decoder.explain_payload`, skips what it cannot read
with one
warning, and keeps going. All functions take a client the caller owns (``redis.asyncio`` or the
embedded store). For acknowledged, crash-safe consumption use :mod:`ti_core.consume.groups`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from ti_core import defaults
from ti_core.consume.lookup import read_decision
from ti_core.consume.reconnect import Outage
from ti_core.contract import stream_ids
from ti_core.contract.decoder import explain_payload
from ti_core.contract.keys import (
    DEFAULT_STREAM_NAME,
    normalize_ticker,
    normalize_trade_date,
    validate_stream_name,
)
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.errors import InvalidStateError
from ti_core.transport.boundary import connection_lost, redis_boundary, redis_calls
from ti_core.transport.client import RedisClient
from ti_core.transport.replies import (
    Entries,
    entries,
    fields,
    read_entries,
    stream_info_of,
    value_of,
)
from ti_core.transport.retry import RetryPolicy

__all__ = [
    "Entry",
    "entry_payload",
    "get_decision",
    "read_batch",
    "replay_range",
    "safe_block_ms",
    "stream_last_id",
    "tail",
]

logger = logging.getLogger("ti_core.consume")  # its name before the move

Entry = tuple[str, TradingIntelligenceEnvelope]
_READ = "nothing was written (a read)"


def entry_payload(raw_fields: Any) -> tuple[Any, str]:
    """The ``data`` field of a stream entry, or ``(None, reason)`` when it has none."""
    if not raw_fields:
        return None, "entry has no fields (trimmed or deleted from the stream)"
    payload = value_of(raw_fields, "data")
    if payload is not None:
        return payload, ""
    names = sorted(fields(raw_fields))[:5]
    return None, f"entry has no 'data' field (fields: {', '.join(names)})"


def safe_block_ms(client: RedisClient, block_ms: int | None) -> int | None:
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
        # Leave the reply time to arrive on a loaded machine: half a short timeout, 1 s of a
        # long one (a 100 ms margin lost the race in CI beside two CPU-bound processes).
        margin = timeout * 500 if timeout < 2 else 1000
        limit = min(block_ms, int(timeout * 1000 - margin))
    return max(1, limit)


async def get_decision(
    client: RedisClient, ticker: str, trade_date: str
) -> TradingIntelligenceEnvelope | None:
    """The envelope in the lookup hash for (ticker, date), or ``None`` if absent or unreadable.

    The hash's ``json`` field holds the whole envelope; read the verdict at
    ``envelope.decision.synthesis``. The hash is judged by
    :func:`ti_core.consume.lookup.read_decision`
    (``ti get`` prints its reason).
    """
    found = await read_decision(client, ticker, trade_date)
    if found.problem:
        logger.warning("get_decision: %s is unreadable: %s", found.key, found.problem)
    return found.envelope


@redis_boundary(_READ)
async def stream_last_id(client: RedisClient, stream_name: str) -> str:
    """The stream's last generated id (``0-0`` if it does not exist): what ``$`` means now."""
    info = await stream_info_of(client, stream_name)
    return "0-0" if info is None else info.last_generated_id


def _decoded(stream_name: str, read: Iterable[tuple[str, Any]]) -> Iterator[Entry]:
    """Decode lazily, one entry at a time: a batch of live envelopes would only feed the GC."""
    for entry_id, raw_fields in read:
        payload, reason = entry_payload(raw_fields)
        envelope = None
        if payload is not None:
            envelope, reason = explain_payload(payload)
        if envelope is None:
            logger.warning("skipping entry %s of %s: %s", entry_id, stream_name, reason)
            continue
        yield entry_id, envelope


async def _xread(
    client: RedisClient, stream_name: str, after: str, count: int, block_ms: int | None
) -> Entries:
    block = safe_block_ms(client, block_ms)
    return read_entries(await client.xread({stream_name: after}, count=count, block=block))


@redis_boundary(_READ)
async def read_batch(
    client: RedisClient,
    *,
    stream_name: str = DEFAULT_STREAM_NAME,
    after: str = "0-0",
    count: int = 100,
    block_ms: int | None = None,
) -> tuple[str, list[Entry]]:
    """One XREAD after ``after``: the new cursor and the entries that decode (others skipped)."""
    read = await _xread(client, stream_name, after, count, block_ms)
    if not read:
        return after, []
    return read[-1][0], list(_decoded(stream_name, read))


async def tail(
    client: RedisClient,
    *,
    stream_name: str = DEFAULT_STREAM_NAME,
    start: str = "$",
    count: int = 100,
    block_ms: int = defaults.BLOCK_MS,
    give_up_after: float | None = defaults.RECONNECT_GIVE_UP_SECONDS,
    retry: RetryPolicy | None = None,
) -> AsyncIterator[Entry]:
    """Yield ``(entry_id, envelope)`` forever, skipping undecodable entries with a warning.

    ``start="$"`` yields entries added after the call (resolved once, so nothing published
    between two reads is missed); ``"0"`` replays history first; any entry id resumes after it.
    A lost connection is ridden out: the tail logs one line, retries with backoff and jitter
    from the last entry it yielded (so nothing is missed or repeated), logs one line when Redis
    is back, and raises ``RedisUnavailableError`` after ``give_up_after`` seconds of failure
    (``None``: at the first failure, after the client's own retries), pausing as ``retry``
    says (default: ``ti_core.transport.retry.redis_policy``).
    """
    validate_stream_name(stream_name)
    outage = Outage(f"tail of {stream_name}", give_up_after or 0.0, retry)
    cursor: str | None = None if start == "$" else start
    while True:
        try:
            if cursor is None:
                cursor = await stream_last_id(client, stream_name)
            with redis_calls(client, _READ):
                read = await _xread(client, stream_name, cursor, count, block_ms)
        except Exception as exc:
            if not connection_lost(exc):
                raise
            await outage.wait(exc)
            continue
        outage.recovered()
        if read:
            cursor = read[-1][0]
            for entry in _decoded(stream_name, read):
                yield entry


def _date_range(start_date: Any, end_date: Any) -> tuple[str, str]:
    first = normalize_trade_date(start_date, field="start_date")
    last = normalize_trade_date(end_date, field="end_date")
    if first > last:
        raise InvalidStateError(f"start_date {first} is after end_date {last}")
    return first, last


async def replay_range(
    client: RedisClient,
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
        with redis_calls(client, _READ):
            found = entries(await client.xrange(stream_name, min=cursor, max="+", count=page))
        if not found:
            return
        for entry_id, envelope in _decoded(stream_name, found):
            target = envelope.decision.target
            if first <= target.trade_date <= last and (wanted is None or target.ticker in wanted):
                yield entry_id, envelope
        if len(found) < page:
            return
        cursor = stream_ids.after(found[-1][0])
