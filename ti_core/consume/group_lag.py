"""Consumer groups' lag and losses: how far behind each group is, and what trimming cost it.

Beside :mod:`ti_core.consume.groups` (the reader) and :mod:`ti_core.consume.group_scripts` (which
records a
loss when a group reads past a trim gap): ``ti lag`` and ``ti verify`` report from here.
Needs a Redis server (XINFO); trim-loss counting needs 7.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from redis import exceptions as redis_errors

from ti_core.contract import stream_ids
from ti_core.contract.keys import (
    DEFAULT_STREAM_NAME,
    dead_letter_key,
    group_lost_key,
    validate_stream_name,
)
from ti_core.transport.boundary import redis_boundary
from ti_core.transport.client import RedisClient
from ti_core.transport.replies import pipeline, text

__all__ = ["group_lag"]

_READ = "nothing was written (a read)"


def _unread_trimmed(
    group: dict[str, Any], removed: int | None, first_id: str | None, last_id: str
) -> int | None:
    """Entries trimmed that ``group`` has not read and has not yet passed: 0, a count or None.

    Trimming removes the oldest entries, so a group positioned before the first remaining
    entry is losing the removed entries it had not read (``removed - entries_read``). Once a
    ``GroupReader`` reads past the gap it records the loss (see ``ti_core.consume.group_scripts``)
    and
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


@redis_boundary(_READ)
async def group_lag(client: RedisClient, stream_name: str = DEFAULT_STREAM_NAME) -> dict[str, Any]:
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
