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

from ti_core.contract import stream_ids
from ti_core.contract.keys import (
    DEFAULT_STREAM_NAME,
    dead_letter_key,
    group_lost_key,
    validate_stream_name,
)
from ti_core.transport.boundary import redis_boundary
from ti_core.transport.client import RedisClient
from ti_core.transport.replies import fields, group_infos, pipeline, stream_info_of, text

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
    found = {name: text(value) for name, value in fields(raw).items()}

    def when(name: str) -> str | None:
        ms = found.get(name)
        return (
            None
            if ms is None
            else datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="seconds")
        )

    return {
        "lost_recorded": int(found.get("entries", 0)),
        "lost_unknown_gaps": int(found.get("unknown", 0)),
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
    info = await stream_info_of(client, stream_name)
    if info is None:
        return out
    length, added = info.length, info.entries_added
    removed = None if added is None else max(0, added - length)
    first_id, last_id = info.first_entry_id, info.last_generated_id
    out.update(exists=True, length=length, removed=removed, last_generated_id=last_id)
    rows = group_infos(await client.xinfo_groups(stream_name))
    pipe = pipeline(client)
    for row in rows:
        pipe.hgetall(group_lost_key(stream_name, row.name))
    recorded = await pipe.execute() if rows else []
    for row, losses in zip(rows, recorded, strict=True):
        excess = int(text(fields(losses).get("lag_excess", 0)))
        group: dict[str, Any] = {
            "name": row.name,
            "consumers": row.consumers,
            "pending": row.pending,
            "last_delivered_id": row.last_delivered_id,
            "entries_read": row.entries_read,
            "lag": None if row.lag is None else max(0, row.lag - excess),
        }
        group.update(_recorded_loss(losses))
        unread = _unread_trimmed(group, removed, first_id, last_id)
        group["lost"] = None if unread is None else unread + group["lost_recorded"]
        out["groups"].append(group)
    return out
