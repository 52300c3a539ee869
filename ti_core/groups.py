"""Consumer-group reading that never loses an entry and never dies on one.

A :class:`GroupReader` reads with XREADGROUP and acknowledges an entry only after the handler
returned (one XACK per batch, so a crash mid-batch redelivers that batch's handled entries:
handlers must be idempotent). After a restart it first re-reads its own pending entries; entries
left pending by a dead consumer are reclaimed with XAUTOCLAIM once idle ``claim_idle_ms``.
An entry that cannot be decoded, whose handler failed ``max_attempts`` times, or that was
delivered more often than that without an acknowledgement (it keeps killing consumers) goes
to the dead-letter stream (:func:`ti_core.keys.dead_letter_key`) with its original id, raw data
and the reason, then is acknowledged. Needs a Redis server 6.2+ (XAUTOCLAIM), not the embedded
store; lag reporting (:func:`ti_core.consume.group_lag`) needs 7.0.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from redis import exceptions as redis_errors

from ti_core.consume import entry_payload, safe_block_ms, text
from ti_core.decoder import explain_payload
from ti_core.errors import InvalidStateError, RedisUnavailableError
from ti_core.keys import DEFAULT_STREAM_NAME, dead_letter_key, validate_stream_name
from ti_core.models import TradingIntelligenceEnvelope
from ti_core.replicas import replicated

__all__ = ["GroupReader", "GroupStats", "Handler", "ensure_group"]

logger = logging.getLogger(__name__)

Handler = Callable[[str, TradingIntelligenceEnvelope], Awaitable[object] | object]
_UNAVAILABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


@dataclass(slots=True)
class GroupStats:
    """What a step (or a run) did: handled and acknowledged, dead-lettered, left for a retry."""

    handled: int = 0
    dead_lettered: int = 0
    failed: int = 0
    reclaimed: int = 0

    def add(self, other: GroupStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def total(self) -> int:
        return self.handled + self.dead_lettered + self.failed


async def ensure_group(client: Any, stream_name: str, group: str, start: str = "$") -> bool:
    """Create ``group`` on ``stream_name`` (and the stream); True if created, False if it existed.

    Only "group already exists" (BUSYGROUP) is tolerated; any other refusal propagates.
    """
    try:
        await client.xgroup_create(stream_name, group, id=start, mkstream=True)
    except redis_errors.ResponseError as exc:
        if str(exc).startswith("BUSYGROUP"):
            return False
        raise
    return True


class GroupReader:
    """One consumer of a group; call :meth:`run` (or :meth:`step` / :meth:`drain` yourself)."""

    def __init__(
        self,
        client: Any,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        stream_name: str = DEFAULT_STREAM_NAME,
        start: str = "$",
        max_attempts: int = 5,
        claim_idle_ms: int = 60_000,
        count: int = 100,
        block_ms: int = 5000,
        dead_letter_maxlen: int = 100_000,
    ) -> None:
        if not group or not consumer:
            raise InvalidStateError("a consumer group and a consumer name are required")
        if max_attempts < 1 or claim_idle_ms < 1 or count < 1:
            raise InvalidStateError("max_attempts, claim_idle_ms and count must be >= 1")
        self.client = client
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.stream_name = validate_stream_name(stream_name)
        self.dead_letter_stream = dead_letter_key(stream_name)
        self.start = start
        self.max_attempts = max_attempts
        self.claim_idle_ms = claim_idle_ms
        self.count = count
        self.block_ms = block_ms
        self.dead_letter_maxlen = dead_letter_maxlen
        self._group_ready = False
        self._pending_cursor: str | None = "0"  # own pending entries first, after a restart
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._acks: list[str] = []

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, *, stop: asyncio.Event | None = None) -> GroupStats:
        """Step until ``stop`` (an ``asyncio.Event``) is set or the task is cancelled."""
        total = GroupStats()
        while stop is None or not stop.is_set():
            total.add(await self.step())
        return total

    async def drain(self) -> GroupStats:
        """Step until nothing is new and the group has nothing pending (tests, batch jobs)."""
        total = GroupStats()
        while True:
            stats = await self.step(block=False)
            total.add(stats)
            if stats.total or stats.reclaimed:
                continue
            if await self._group_pending() == 0:
                return total
            await asyncio.sleep(0.02)  # pending elsewhere: wait for it to become claimable

    async def step(self, *, block: bool = True) -> GroupStats:
        """One round: own pending entries, else reclaim idle ones if due, then new entries."""
        try:
            return await self._step(block)
        except redis_errors.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            # The stream or group was deleted under us: recreate it from the stream's start,
            # since everything now on a recreated stream is new to this group.
            logger.warning("group %s vanished from %s; recreating it", self.group, self.stream_name)
            self._group_ready = False
            self.start = "0"
            return GroupStats()
        except _UNAVAILABLE as exc:
            raise RedisUnavailableError(f"Redis unavailable: {type(exc).__name__}") from exc

    async def _step(self, block: bool) -> GroupStats:
        if not self._group_ready:
            await ensure_group(self.client, self.stream_name, self.group, self.start)
            self._group_ready = True
        if self._pending_cursor is not None:
            stats = await self._own_pending()
            if stats.total:
                return stats
        stats = GroupStats()
        if self._now() >= self._next_claim:
            stats.add(await self._reclaim())
        block_ms = None
        if block:
            until_claim = int((self._next_claim - self._now()) * 1000)
            block_ms = safe_block_ms(self.client, min(self.block_ms, max(1, until_claim)))
        reply = await replicated(self.client, lambda c: c.xreadgroup(  # TI_MIN_REPLICAS
            self.group, self.consumer, {self.stream_name: ">"}, count=self.count, block=block_ms
        ))
        entries = _entries(reply)
        stats.add(await self._process(entries, {}))
        return stats

    # -- sources ----------------------------------------------------------------------------

    async def _own_pending(self) -> GroupStats:
        assert self._pending_cursor is not None
        reply = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream_name: self._pending_cursor}, count=self.count
        )
        entries = _entries(reply)
        if not entries:
            self._pending_cursor = None
            return GroupStats()
        self._pending_cursor = text(entries[-1][0])
        return await self._process(entries, await self._deliveries(entries))

    async def _reclaim(self) -> GroupStats:
        reply = await self.client.xautoclaim(
            self.stream_name, self.group, self.consumer, self.claim_idle_ms,
            start_id=self._claim_cursor, count=self.count,
        )
        cursor = text(reply[0])
        claimed = list(reply[1] or [])
        deleted = [text(i) for i in (reply[2] if len(reply) > 2 else [])]
        self._claim_cursor = cursor
        # Scan on at once while the cursor says there is more; else wait half the idle time.
        interval = 0.0 if cursor != "0-0" else min(max(self.claim_idle_ms / 2000, 0.05), 30.0)
        self._next_claim = self._now() + interval
        stats = GroupStats(reclaimed=len(claimed))
        for entry_id in deleted:  # Redis 7 drops these from the pending list: record the loss
            await self._dead_letter(entry_id, None, "trimmed from the stream before it was "
                                    "acknowledged (lost to this group)", 0, ack=False)
            stats.dead_lettered += 1
        if claimed:
            logger.warning("%s reclaimed %d entries idle over %d ms",
                           self.consumer, len(claimed), self.claim_idle_ms)
            stats.add(await self._process(claimed, await self._deliveries(claimed)))
        return stats

    async def _deliveries(self, entries: Sequence[tuple[Any, Any]]) -> dict[str, int]:
        """Delivery counts of entries this consumer holds (one XPENDING; more only if needed)."""
        ids = [text(e[0]) for e in entries]
        counts = await self._pending_counts(ids[0], ids[-1], len(ids) + 100)
        for entry_id in ids:  # other pending entries of ours in the range can crowd some out
            if entry_id not in counts:
                counts.update(await self._pending_counts(entry_id, entry_id, 1))
        return counts

    async def _pending_counts(self, first: str, last: str, count: int) -> dict[str, int]:
        rows = await self.client.xpending_range(
            self.stream_name, self.group, min=first, max=last, count=count,
            consumername=self.consumer,
        )
        return {text(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _group_pending(self) -> int:
        summary = await self.client.xpending(self.stream_name, self.group)
        return int(summary.get("pending", 0) if isinstance(summary, Mapping) else summary[0])

    # -- one entry --------------------------------------------------------------------------

    async def _process(
        self, entries: Sequence[tuple[Any, Any]], deliveries: Mapping[str, int]
    ) -> GroupStats:
        stats = GroupStats()
        try:
            for raw_id, entry_fields in entries:
                entry_id = text(raw_id)
                outcome = await self._one(entry_id, entry_fields, deliveries.get(entry_id, 1))
                setattr(stats, outcome, getattr(stats, outcome) + 1)
        finally:
            await self._flush_acks()
        return stats

    async def _one(self, entry_id: str, entry_fields: Any, attempt: int) -> str:
        payload, reason = entry_payload(entry_fields)
        envelope = None
        if payload is not None:
            envelope, reason = explain_payload(payload)
        if envelope is None:
            await self._dead_letter(entry_id, payload, reason, attempt)
            return "dead_lettered"
        if attempt > self.max_attempts:
            reason = (f"delivered {attempt} times without an acknowledgement (a consumer "
                      f"crashed or stalled on it; limit {self.max_attempts})")
            await self._dead_letter(entry_id, payload, reason, attempt)
            return "dead_lettered"
        try:
            result = self.handler(entry_id, envelope)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # a handler's failure is the entry's problem, not the loop's
            why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            if attempt >= self.max_attempts:
                await self._dead_letter(entry_id, payload,
                                        f"handler failed {attempt} times; last: {why}", attempt)
                return "dead_lettered"
            logger.warning("handler failed on %s (attempt %d of %d), left pending: %s",
                           entry_id, attempt, self.max_attempts, why)
            return "failed"
        self._acks.append(entry_id)
        return "handled"

    async def _flush_acks(self) -> None:
        if self._acks:
            ids, self._acks = self._acks, []
            await replicated(self.client, lambda c: c.xack(self.stream_name, self.group, *ids))

    async def _dead_letter(
        self, entry_id: str, payload: Any, reason: str, attempts: int, *, ack: bool = True
    ) -> None:
        logger.warning("dead-lettering %s of %s: %s", entry_id, self.stream_name, reason)
        record = {
            "entry_id": entry_id, "stream": self.stream_name, "group": self.group,
            "consumer": self.consumer, "reason": reason, "attempts": str(attempts),
            "at": datetime.now(UTC).isoformat(), "data": _raw(payload),
        }
        pipe = self.client.pipeline(transaction=True)  # the record and the ack, or neither
        pipe.xadd(self.dead_letter_stream, record, maxlen=self.dead_letter_maxlen or None,
                  approximate=True)
        if ack:
            pipe.xack(self.stream_name, self.group, entry_id)
        await pipe.execute()

    @staticmethod
    def _now() -> float:
        return time.monotonic()


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """The entry list of a one-stream XREADGROUP reply (RESP2 list or RESP3 mapping)."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        return list(next(iter(reply.values()))[0])
    return list(reply[0][1])


def _raw(payload: Any) -> bytes | str:
    if isinstance(payload, bytes | str):
        return payload
    return "" if payload is None else repr(payload)[:1000]
