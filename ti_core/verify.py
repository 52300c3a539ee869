"""Audit what is in Redis: do the lookup hashes and the stream agree, and is the stream bounded?

Two passes, each paged and pipelined so memory stays bounded whatever the key count:

- **Hashes** (``SCAN`` over ``DECISION_HASH_PREFIX:*``): each hash's ``entry_id`` must name an
  entry on the stream whose ``data`` decodes to the same decision (same content digest) for
  the same (ticker, date) as the key. An entry older than the stream's first one was trimmed
  away by ``MAXLEN``: reported as ``trimmed``, which is expected, not an inconsistency.
- **Stream** (``XRANGE`` in pages): every entry must decode, and its (ticker, date) must have a
  hash. An entry whose hash points at another, later-ordered decision was ``superseded`` (a
  revised decision); one whose order (``published_at`` capped at its entry's time, as the
  publish scripts order) is later than the hash's is a ``stale_hash``: the hash hides a newer
  decision (a clock-skewed publisher under an older version, or a lost hash write); an entry
  with no hash at all is an ``orphan_entry``, what a publish that wrote the entry alone and
  died before the hash leaves (publishing it again heals it).

Finally ``XLEN`` is held against the configured bound (``MAXLEN ~`` may keep one radix-tree
node more, so approximate trimming gets that much slack).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ti_core.consume.group_lag import group_lag
from ti_core.consume.lookup import explain_hash
from ti_core.contract import stream_ids
from ti_core.contract.decoder import explain_payload
from ti_core.contract.keys import (
    DECISION_HASH_PREFIX,
    DEFAULT_STREAM_NAME,
    decision_hash_key,
    shorten,
)
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.contract.wire import content_digest
from ti_core.defaults import STREAM_MAXLEN
from ti_core.errors import InvalidStateError, TiError
from ti_core.publish.scripts import outranks, publish_order
from ti_core.transport.boundary import is_wrong_type, raise_error_replies, redis_boundary
from ti_core.transport.client import RedisClient, RedisPipeline
from ti_core.transport.replies import entries, fields, pipeline, stream_info_of, text, value_of

__all__ = ["INCONSISTENT", "INFORMATIONAL", "VerifyReport", "verify_store"]

# Problems: any of these makes the audit fail.
INCONSISTENT = (
    "missing_entry",  # a hash names an entry that is not on the stream and was not trimmed
    "content_mismatch",  # the entry a hash names says something else (or does not decode)
    "key_mismatch",  # a hash's key is not the (ticker, date) of the decision it holds
    "undecodable_hash",  # a hash's json field is missing or does not decode
    "undecodable_entry",  # a stream entry a consumer would have to skip
    "orphan_entry",  # an entry whose (ticker, date) has no lookup hash (publish again: heals)
    "stale_hash",  # a hash holding an older-ordered decision than an entry of its pair
    "over_bound",  # the stream is longer than TI_STREAM_MAXLEN allows
)
# Facts worth showing that are expected in a healthy store.
INFORMATIONAL = (
    "trimmed",  # a hash's entry is older than the stream's first entry (MAXLEN did it)
    "superseded",  # an entry whose (ticker, date) hash now names a later-ordered decision
    "unlinked",  # a hash without entry_id (written by the original module or another tool)
    "group_lost",  # a consumer group lost entries trimmed before it read them (see `ti lag`)
)
# XTRIM MAXLEN ~ removes whole radix-tree nodes (stream-node-max-entries, 100 by default).
APPROXIMATE_SLACK = 100
_READ_ONLY = "nothing was written (ti verify only reads)"


@dataclass
class VerifyReport:
    """Counts per kind, a few examples of each, and the sizes that were audited."""

    stream_name: str
    stream_length: int = 0
    stream_bound: int = 0
    hashes: int = 0
    entries: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 10

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < self.max_examples:
            shown.append(example)

    @property
    def problems(self) -> int:
        """How many inconsistencies were found (0: the store is consistent)."""
        return sum(self.counts.get(kind, 0) for kind in INCONSISTENT)

    @property
    def ok(self) -> bool:
        return self.problems == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stream": self.stream_name,
            "stream_length": self.stream_length,
            "stream_bound": self.stream_bound,
            "hashes": self.hashes,
            "entries": self.entries,
            "problems": self.problems,
            "counts": {k: self.counts.get(k, 0) for k in INCONSISTENT + INFORMATIONAL},
            "examples": {k: v for k, v in self.examples.items() if v},
        }


async def _execute(client: RedisClient, pipe: RedisPipeline) -> list[Any]:
    """The pipeline's replies; a key of the wrong type is a finding of the audit (left in the
    replies), any other refusal (a missing right, say) the caller's problem (raised)."""
    results = list(await pipe.execute(raise_on_error=False))
    raise_error_replies(results, client, _READ_ONLY, unless=is_wrong_type)
    return results


@dataclass
class _StreamBounds:
    """The oldest entry still on the stream, and the last id it ever generated."""

    exists: bool
    first: tuple[int, int] | None
    last_generated: tuple[int, int] | None

    def trimmed(self, entry_id: str) -> bool:
        wanted = stream_ids.parse(entry_id)
        if wanted is None or not self.exists:
            return False
        if self.first is not None:
            return wanted < self.first
        return self.last_generated is not None and wanted <= self.last_generated


async def _bounds(client: RedisClient, stream: str) -> tuple[_StreamBounds, int]:
    pipe = pipeline(client)
    pipe.exists(stream)
    pipe.xlen(stream)
    pipe.xrange(stream, "-", "+", count=1)
    exists, length, first = await _execute(client, pipe)
    for result in (exists, length, first):
        if isinstance(result, Exception):
            raise TiError(f"cannot read stream {stream}: {result}")
    last_generated = None
    if exists and not first:  # empty but present: everything ever written was trimmed
        info = await stream_info_of(client, stream)  # None: deleted since
        last_generated = None if info is None else stream_ids.parse(info.last_generated_id)
    first = entries(first)
    first_id = stream_ids.parse(first[0][0]) if first else None
    return _StreamBounds(bool(exists), first_id, last_generated), int(length)


def _decoded(raw: Any) -> tuple[TradingIntelligenceEnvelope | None, str | None, str | None]:
    """(the envelope in ``raw``, the hash key it belongs under, why either is missing)."""
    envelope, reason = explain_payload(raw)
    if envelope is None:
        return None, None, reason
    target = envelope.decision.target
    try:
        return envelope, decision_hash_key(target.ticker, target.trade_date), None
    except InvalidStateError as exc:
        return envelope, None, str(exc)


def _check_hash(
    report: VerifyReport, key: str, raw: Any, entry: Any, bounds: _StreamBounds
) -> None:
    """Judge one hash against the entry it names (``entry`` is the XRANGE result or None)."""
    judged = explain_hash(key, raw)
    held = fields(raw)
    envelope, expected_key, reason = _decoded(held.get("json"))
    if envelope is None:
        report.add("undecodable_hash", f"{key}: {reason or 'no json field'}")
        return
    target = envelope.decision.target
    if expected_key != key:
        report.add("key_mismatch", f"{key}: holds {target.ticker} {target.trade_date}")
    elif judged.problem and ("entry_id" in held or not judged.problem.startswith("it lacks")):
        # The flat fields `ti get` shows: not numbers, disagreeing, or missing from a hash this
        # package wrote (an unlinked hash from another writer may hold json alone).
        report.add("undecodable_hash", f"{key}: {judged.problem}")
    if "entry_id" not in held:
        report.add("unlinked", key)
        return
    entry_id = text(held["entry_id"])
    if not entry:
        kind = "trimmed" if bounds.trimmed(entry_id) else "missing_entry"
        report.add(kind, f"{key} -> {entry_id}")
        return
    on_stream, why = explain_payload(value_of(entry[0][1], "data"))
    if on_stream is None:
        report.add("content_mismatch", f"{key} -> {entry_id}: entry does not decode: {why}")
    elif content_digest(on_stream) != content_digest(envelope):
        report.add("content_mismatch", f"{key} -> {entry_id}: the entry holds another decision")


async def _audit_hash_page(
    client: RedisClient, report: VerifyReport, stream: str, keys: list[str], bounds: _StreamBounds
) -> None:
    pipe = pipeline(client)
    for key in keys:
        pipe.hgetall(key)
    rows = await _execute(client, pipe)
    pipe = pipeline(client)
    wanted: list[int] = []
    for index, row in enumerate(rows):
        if isinstance(row, Exception):
            continue
        entry_id = value_of(row, "entry_id")
        if entry_id is not None and stream_ids.parse(text(entry_id)) is not None:
            pipe.xrange(stream, text(entry_id), text(entry_id))
            wanted.append(index)
    found = dict(zip(wanted, await _execute(client, pipe) if wanted else [], strict=True))
    if any(not entry for entry in found.values()):
        bounds, _ = await _bounds(client, stream)  # a trim may have run since the audit began
    for index, (key, row) in enumerate(zip(keys, rows, strict=True)):
        report.hashes += 1
        if isinstance(row, Exception):
            report.add("undecodable_hash", f"{key}: {shorten(str(row), 80)}")
            continue
        entry = found.get(index)
        if isinstance(entry, Exception):
            raise TiError(f"cannot read stream {stream}: {entry}")
        _check_hash(report, key, row, entry, bounds)


async def _audit_hashes(
    client: RedisClient, report: VerifyReport, stream: str, page: int, bounds: _StreamBounds
) -> None:
    batch: list[str] = []
    async for raw in client.scan_iter(match=f"{DECISION_HASH_PREFIX}:*", count=page):
        batch.append(text(raw))
        if len(batch) >= page:
            await _audit_hash_page(client, report, stream, batch, bounds)
            batch = []
    if batch:
        await _audit_hash_page(client, report, stream, batch, bounds)


async def _audit_entry_page(
    client: RedisClient, report: VerifyReport, page: list[tuple[str, Any]]
) -> None:
    pipe = pipeline(client)
    judged: list[tuple[str, str, int, str]] = []  # (entry id, hash key, order, cid)
    for entry_id, raw_fields in page:
        report.entries += 1
        envelope, key, reason = _decoded(value_of(raw_fields, "data"))
        if envelope is None or key is None:
            report.add("undecodable_entry", f"{entry_id}: {reason or 'no data field'}")
            continue
        pipe.exists(key)
        for name in ("entry_id", "published_ts", "correlation_id"):
            pipe.hget(key, name)
        judged.append((entry_id, key, publish_order(envelope, entry_id), envelope.correlation_id))
    if not judged:
        return
    results = await _execute(client, pipe)
    for index, (entry_id, key, order, cid) in enumerate(judged):
        exists, linked, held_ts, held_cid = results[4 * index : 4 * index + 4]
        if any(isinstance(r, Exception) for r in (exists, linked, held_ts, held_cid)):
            continue  # the hash pass reports a key of the wrong type
        if not exists:
            report.add("orphan_entry", f"{entry_id}: no hash {key} (publish again to heal)")
        elif linked is not None and text(linked) != entry_id:
            held = _order_of(held_ts, held_cid, text(linked))
            if held is not None and outranks(order, cid, entry_id, *held, text(linked)):
                report.add(
                    "stale_hash",
                    f"{key} -> {text(linked)} hides the later-ordered entry {entry_id}",
                )
            else:
                report.add("superseded", f"{entry_id}: {key} -> {text(linked)}")


def _order_of(ts: Any, cid: Any, entry_id: str) -> tuple[int, str] | None:
    """A hash's (order, correlation id), or None for a hash without ``published_ts``. The
    order is capped at its entry's time, as the scripts do: a hash an older version wrote
    from a clock running ahead is judged by when its entry really arrived."""
    try:
        order = int(text(ts))
    except (TypeError, ValueError):
        return None
    cap = stream_ids.end_of_ms_us(entry_id)
    if cap is not None:
        order = min(order, cap)
    return order, text(cid) if cid is not None else ""


async def _audit_stream(client: RedisClient, report: VerifyReport, stream: str, page: int) -> None:
    start = "-"
    while True:
        found = entries(await client.xrange(stream, start, "+", count=page))
        if not found:
            return
        await _audit_entry_page(client, report, found)
        if len(found) < page:
            return
        start = stream_ids.after(found[-1][0])


@redis_boundary(_READ_ONLY)
async def verify_store(
    client: RedisClient,
    *,
    stream_name: str = DEFAULT_STREAM_NAME,
    maxlen: int = STREAM_MAXLEN,
    approximate: bool = True,
    page_size: int = 500,
    max_examples: int = 10,
) -> VerifyReport:
    """Audit hashes against the stream and the stream against its bound; never writes.

    ``maxlen`` 0 means the stream is unbounded (no length check). Raises
    ``RedisUnavailableError`` if Redis cannot be reached (at any of its calls), and the
    boundary's other ``TiError`` for a refusal (a missing ACL right, say).
    """
    report = VerifyReport(stream_name=stream_name, stream_bound=maxlen, max_examples=max_examples)
    bounds, report.stream_length = await _bounds(client, stream_name)
    await _audit_hashes(client, report, stream_name, page_size, bounds)
    await _audit_stream(client, report, stream_name, page_size)
    for group in (await group_lag(client, stream_name))["groups"] if bounds.exists else []:
        if group["lost"]:
            report.add(
                "group_lost",
                f"group {group['name']} lost {group['lost']} entries "
                f"(trimmed before it read them; first {group['lost_since'] or '?'})",
            )
    allowed = maxlen + (APPROXIMATE_SLACK if approximate else 0)
    if maxlen > 0 and report.stream_length > allowed:
        report.add(
            "over_bound",
            f"{stream_name}: {report.stream_length} entries, bound {maxlen}"
            + (f" (~, +{APPROXIMATE_SLACK} slack)" if approximate else ""),
        )
    return report
