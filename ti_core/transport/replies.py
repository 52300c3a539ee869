"""Reply shapes: one function per kind of reply the core reads, taking any shape it comes in.

The same command answers in different shapes depending on the client: ``bytes`` or ``str``
(``decode_responses`` is the caller's choice), RESP2 or RESP3 (``?protocol=3``: XREAD and
XREADGROUP answer a mapping of stream to entries instead of a list of pairs), redis-py's
version (XINFO's field names as ``str`` or ``bytes``), fakeredis, or the embedded store (a
tuple where redis-py gives a list). Each function here takes every one of those shapes and
returns one, so the modules that read replies (``ti_core.consume``, ``ti_core.verify``) never
look at a shape themselves. What the embedded store does differently beyond reply shapes is
made up for by its adapter, ``ti_core.store.embedded_client``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ti_core.transport.boundary import is_missing_key
from ti_core.transport.client import RedisClient, RedisPipeline

__all__ = [
    "Autoclaim",
    "Entries",
    "GroupInfo",
    "StreamInfo",
    "autoclaim",
    "entries",
    "fields",
    "group_infos",
    "pending_count",
    "pipeline",
    "read_entries",
    "readable",
    "stream_info",
    "stream_info_of",
    "text",
    "value_of",
]

Entries = list[tuple[str, Any]]  # stream entries: (id, the fields as the reply holds them)


def text(value: Any) -> str:
    """A Redis reply (bytes or str) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def readable(value: Any) -> str:
    """:func:`text`, or ``<not UTF-8>`` for bytes that are not: for reports, never raises."""
    try:
        return text(value)
    except UnicodeDecodeError:
        return "<not UTF-8>"


def pipeline(client: RedisClient) -> RedisPipeline:
    """A non-transactional pipeline on ``client``."""
    return client.pipeline(transaction=False)


def _pairs(raw: Any) -> list[tuple[Any, Any]]:
    """A field/value reply as pairs: a mapping (RESP3, or redis-py's parsed RESP2) or the flat
    ``[name, value, name, value, ...]`` list RESP2 sends."""
    if not raw:
        return []
    if isinstance(raw, Mapping):
        return list(raw.items())
    flat = list(raw)
    return list(zip(flat[::2], flat[1::2], strict=True))


def fields(raw: Any) -> dict[str, Any]:
    """An HGETALL reply, or a stream entry's fields: names as ``str``, values as they came.

    A name that is not UTF-8 reads ``<not UTF-8>`` (no field of the contract is named so).
    """
    return {readable(name): value for name, value in _pairs(raw)}


def value_of(raw: Any, name: str) -> Any:
    """The value of field ``name`` in an HGETALL reply or an entry's fields, or None."""
    if isinstance(raw, Mapping):  # the common shape, looked up without copying
        found = raw.get(name.encode())
        return raw.get(name) if found is None else found
    return fields(raw).get(name)


def entries(reply: Any) -> Entries:
    """An XRANGE reply (or a list of entries inside another reply): ``(id, fields)`` pairs with
    the id as ``str`` and the fields as they came (read them with :func:`value_of`)."""
    return [(text(entry_id), entry_fields) for entry_id, entry_fields in reply or ()]


def read_entries(reply: Any) -> Entries:
    """The entries of a one-stream XREAD or XREADGROUP reply, as :func:`entries`.

    RESP2 answers ``[[stream, entries]]``, RESP3 ``{stream: [entries]}``; nothing to read
    (a blocking read that timed out) is ``None`` or empty in either.
    """
    if not reply:
        return []
    if isinstance(reply, Mapping):
        return entries(next(iter(reply.values()))[0])
    return entries(reply[0][1])


def _named(raw: Any) -> dict[str, Any]:
    """An XINFO-style reply (a mapping or a flat list) with its field names as ``str``."""
    return {text(name): value for name, value in _pairs(raw)}


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the core reads of XINFO STREAM."""

    length: int
    last_generated_id: str  # "0-0" before the first entry
    entries_added: int | None  # None before Redis 7.0
    first_entry_id: str | None  # None when the stream is empty


def stream_info(reply: Any) -> StreamInfo:
    """An XINFO STREAM reply."""
    info = _named(reply)
    first = info.get("first-entry")
    return StreamInfo(
        length=int(info.get("length") or 0),
        last_generated_id=text(info.get("last-generated-id") or "0-0"),
        entries_added=_count(info.get("entries-added")),
        first_entry_id=text(first[0]) if first else None,
    )


async def stream_info_of(client: RedisClient, stream_name: str) -> StreamInfo | None:
    """XINFO STREAM of ``stream_name``, or None when it does not exist (any other refusal is
    raised: callers are behind the boundary)."""
    try:
        reply = await client.xinfo_stream(stream_name)
    except Exception as exc:
        if is_missing_key(exc):
            return None
        raise
    return stream_info(reply)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """What the core reads of one consumer group in XINFO GROUPS."""

    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    entries_read: int | None  # None when Redis cannot tell, or before 7.0
    lag: int | None  # likewise


def group_infos(reply: Any) -> list[GroupInfo]:
    """An XINFO GROUPS reply: one :class:`GroupInfo` per group."""
    groups = []
    for row in reply or ():
        info = _named(row)
        groups.append(
            GroupInfo(
                name=text(info.get("name") or ""),
                consumers=int(info.get("consumers") or 0),
                pending=int(info.get("pending") or 0),
                last_delivered_id=text(info.get("last-delivered-id") or "0-0"),
                entries_read=_count(info.get("entries-read")),
                lag=_count(info.get("lag")),
            )
        )
    return groups


def pending_count(reply: Any) -> int:
    """How many entries a group has pending, from the summary form of XPENDING (a mapping as
    redis-py parses it, or the ``[count, min, max, consumers]`` list)."""
    if isinstance(reply, Mapping):
        return int(_named(reply).get("pending") or 0)
    return int(reply[0] or 0)


@dataclass(frozen=True, slots=True)
class Autoclaim:
    """An XAUTOCLAIM reply: where to scan on from, what was claimed, what was deleted."""

    cursor: str  # "0-0": the scan went round the whole pending list
    claimed: Entries
    deleted: list[str]  # ids pending but no longer on the stream (Redis 7; none before)


def autoclaim(reply: Any) -> Autoclaim:
    """An XAUTOCLAIM reply (two elements before Redis 7, three since; a list or a tuple)."""
    cursor, claimed, *rest = reply
    deleted = rest[0] if rest else ()
    return Autoclaim(text(cursor), entries(claimed), [text(i) for i in deleted or ()])
