"""Failure records: which (ticker, date) publishes failed last, and why; and dead letters.

One hash per stream, :func:`ti_core.contract.keys.failure_key`: field ``TICKER:DATE`` -> JSON
``{"reason", "at"}`` (the reason on one line, at most :data:`REASON_CHARS`; ``at`` an ISO UTC
time). A failed attempt writes its pair's record (the pipeline's tasks, one at a time; a
backfill, a batch at once), a successful one deletes it; ``ti status`` and ``ti backfill
--only failed`` read them. This module is the records' only writer and reader, so the shape
and the truncation cannot drift between those paths.

On the consuming side, a :class:`DeadLetter` is the record a consumer group writes to
:func:`ti_core.contract.keys.dead_letter_key` for an entry it gave up on
(:mod:`ti_core.consume.groups`): the
original id, raw data and reason, bounded the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ti_core.contract.keys import DEFAULT_STREAM_NAME, failure_key
from ti_core.errors import clip
from ti_core.transport.boundary import redis_boundary
from ti_core.transport.client import RedisClient
from ti_core.transport.replies import text

__all__ = [
    "RAW_CHARS",
    "REASON_CHARS",
    "DeadLetter",
    "FailureRecord",
    "clear_failures",
    "field_of",
    "reason_of",
    "record_failures",
]

REASON_CHARS = 500
RAW_CHARS = 1000  # of the repr of a dead entry's data that is neither bytes nor text


def field_of(ticker: str, trade_date: str) -> str:
    """The record's field name in the failure hash: ``TICKER:DATE``."""
    return f"{ticker}:{trade_date}"


def _bounded(reason: str) -> str:
    return clip(" ".join(reason.split()), REASON_CHARS)


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One failed pair's record: why it failed (one bounded line) and when."""

    reason: str
    at: str = ""

    @classmethod
    def now(cls, reason: str) -> FailureRecord:
        """A record of ``reason`` at the current time, its reason cut to one bounded line."""
        return cls(_bounded(reason), datetime.now(UTC).isoformat())

    def to_json(self) -> str:
        """The stored value: ``{"reason": ..., "at": ...}``."""
        return json.dumps({"reason": self.reason, "at": self.at})

    @classmethod
    def from_stored(cls, raw: Any) -> FailureRecord:
        """A stored value read back; one another tool wrote as plain text is its own reason."""
        try:
            value = text(raw)
        except UnicodeDecodeError:
            return cls("<not UTF-8>")
        try:
            record = json.loads(value)
        except ValueError:
            return cls(value)
        if not isinstance(record, dict):
            return cls(value)
        return cls(str(record.get("reason", "")), str(record.get("at", "")))


def reason_of(raw: Any) -> str:
    """The reason of a stored record (see :meth:`FailureRecord.from_stored`)."""
    return FailureRecord.from_stored(raw).reason


@redis_boundary("no failure record was written")
async def record_failures(
    client: RedisClient, reasons: Mapping[str, str], *, stream_name: str = DEFAULT_STREAM_NAME
) -> None:
    """Write a record for each failed pair, ``{field_of(...): reason}``, in one HSET."""
    if not reasons:
        return
    mapping = {name: FailureRecord.now(reason).to_json() for name, reason in reasons.items()}
    await client.hset(failure_key(stream_name), mapping=mapping)


@redis_boundary("no failure record was cleared")
async def clear_failures(
    client: RedisClient, names: Iterable[str], *, stream_name: str = DEFAULT_STREAM_NAME
) -> None:
    """Delete the records of pairs (``field_of(...)``) that are now published."""
    names = list(names)
    if names:
        await client.hdel(failure_key(stream_name), *names)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A consumer group's record of an entry it gave up on: an entry of the dead-letter stream."""

    entry_id: str
    stream: str
    group: str
    consumer: str
    reason: str
    attempts: int
    at: str
    data: bytes | str

    @classmethod
    def now(
        cls,
        entry_id: str,
        stream: str,
        group: str,
        consumer: str,
        reason: str,
        attempts: int,
        payload: Any,
    ) -> DeadLetter:
        """The record of ``payload`` (the entry's raw data, kept as it came) given up now."""
        if isinstance(payload, bytes | str):
            data: bytes | str = payload
        else:
            data = "" if payload is None else clip(repr(payload), RAW_CHARS)
        at = datetime.now(UTC).isoformat()
        return cls(entry_id, stream, group, consumer, _bounded(reason), attempts, at, data)

    def fields(self) -> dict[str, bytes | str]:
        """The dead-letter stream entry's fields."""
        return {
            "entry_id": self.entry_id,
            "stream": self.stream,
            "group": self.group,
            "consumer": self.consumer,
            "reason": self.reason,
            "attempts": str(self.attempts),
            "at": self.at,
            "data": self.data,
        }

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> DeadLetter:
        """A dead-letter entry read back (``data`` as stored; missing fields empty)."""
        got = {text(k): v for k, v in raw.items()}

        def field(name: str) -> str:
            value = got.get(name)
            return "" if value is None else text(value)

        attempts = field("attempts")
        return cls(
            field("entry_id"),
            field("stream"),
            field("group"),
            field("consumer"),
            field("reason"),
            int(attempts) if attempts.isdigit() else 0,
            field("at"),
            got.get("data", ""),
        )
