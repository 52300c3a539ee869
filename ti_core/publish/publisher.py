"""Idempotent, content-aware, time-ordered publishing of envelopes to a stream and lookup hash.

Guarantees (each write is one Lua script, so it happens whole or not at all):

- **Idempotent by correlation id.** The stream script records ``{stream}:cid:{id}`` -> entry
  id in the same atomic step as the XADD; a retry of the same envelope (after a lost reply,
  a killed connection or a server restart with AOF) finds the record and returns the same id.
- **Content-aware.** ``{stream}:latest:{ticker}:{date}`` holds the digest of the decision last
  appended for the pair; an identical decision (same ``decision`` and ``arena_id``, whatever
  its correlation id, ``published_at`` or ``meta``) returns that entry instead of appending.
- **Never back in time, whatever a publisher's clock says.** The lookup hash keeps the
  decision with the later order (ties broken by correlation id), unless ``force``. An
  envelope's order is its ``published_at``, capped at the moment the server wrote its entry
  (the entry id's time): a host whose clock runs ahead cannot hide a later decision, and a
  delayed publish of a decision built earlier cannot overwrite a newer one. The order is
  stored as the hash's ``published_ts``; old hashes without it count as older.
- **Together or not at all.** ``publish_many`` writes an envelope's entry, records and hash
  in one script (up to ``PER_SCRIPT_CALL`` envelopes per call, one after the other; one that
  fails, e.g. a key of the wrong type, stops the call before any of its own writes). The
  pipeline's publish-stream task uses it too; ``publish_decision_hash`` then confirms the
  hash, or writes it for an entry left without one (by ``publish_envelope`` alone, or an
  older version), as does any later publish of the same envelope or decision.
- **Bounded stream.** After each call, ``XTRIM MAXLEN ~ N`` (exact if configured), in the same
  round trip, outside the scripts; a failed trim is logged, never fails a publish.

The scripts and their arguments are in ``publish_scripts``. Redis Cluster is not supported:
the contract's keys share no hash tag, and every script touches several of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ti_core.contract.keys import (
    DEFAULT_STREAM_NAME,
    correlation_key,
    decision_hash_key,
    latest_key,
    validate_stream_name,
)
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.contract.wire import Serialised
from ti_core.defaults import STREAM_MAXLEN
from ti_core.errors import InvalidStateError, NotPublishedError, PublishError
from ti_core.publish.outcome import Status, conflict_message, publish_status
from ti_core.publish.scripts import (
    BATCH_STRIDE,
    SCRIPT_SHAS,
    SCRIPTS,
    HeldDecision,
    argv,
    held_decision,
)
from ti_core.settings import TiSettings
from ti_core.transport.boundary import describe_client, is_noscript, raise_mapped
from ti_core.transport.client import RedisClient
from ti_core.transport.replicas import check_replicas, queue_wait
from ti_core.transport.replies import pipeline, text

__all__ = [
    "DEFAULT_IDEMPOTENCY_TTL",
    "PublishResult",
    "TrimPolicy",
    "append_envelope",
    "publish_decision_hash",
    "publish_envelope",
    "publish_many",
]

logger = logging.getLogger("ti_core.publish")  # its name before the move

DEFAULT_IDEMPOTENCY_TTL = 30 * 24 * 3600
DEFAULT_CHUNK = 200  # envelopes per pipeline (one round trip)
PER_SCRIPT_CALL = 10  # envelopes per script call: each blocks Redis for ~0.3 ms
# Loop turns given to a sent chunk before the next is prepared: on an open connection
# redis-py needs two or three (checkout, write, drain) to put it on the socket; with one,
# building the next chunk ran first and Redis sat idle (bench/publish.py: 3.9x -> 5.2x the
# reference). The first chunk is awaited whole: opening a connection takes real round trips.
_TURNS_TO_WRITE = 8


@dataclass(frozen=True, slots=True)
class TrimPolicy:
    """How the stream is bounded: ``maxlen`` 0 never trims; ``approximate`` uses ``MAXLEN ~``."""

    maxlen: int = STREAM_MAXLEN
    approximate: bool = True

    @classmethod
    def from_settings(cls, settings: TiSettings | None = None) -> TrimPolicy:
        """``TI_STREAM_MAXLEN`` and ``TI_STREAM_TRIM_APPROXIMATE``."""
        s = settings or TiSettings()
        return cls(s.stream_maxlen, s.stream_trim_approximate)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What one envelope became: its entry id, whether this call appended it, and the hash.

    In the words of ``ti_core.publish.outcome`` (one meaning everywhere): ``created`` is an
    outcome's ``appended``, and :attr:`status` (from ``own_entry``) its ``published`` or
    ``unchanged``; :meth:`DecisionOutcome.of_publish` makes the outcome.
    """

    ticker: str
    trade_date: str
    correlation_id: str
    entry_id: str
    created: bool
    """True when this call appended the entry (an outcome's ``appended``)."""
    hash_written: bool
    hash_key: str
    own_entry: bool = False
    """True when the entry is this envelope's own (appended by this call, or by an earlier
    attempt with the same correlation id); False when an identical decision already there
    (another envelope's) was returned instead. What "this run published" counts."""
    held: HeldDecision | None = None
    """Set when the entry of this correlation id holds another decision than this envelope's
    (a retry that decided otherwise): what consumers see. Nothing of this envelope was
    written, not even the hash; ``own_entry`` is True (the entry is this run's)."""

    @property
    def status(self) -> Status:
        """``published`` (the entry is this envelope's own) or ``unchanged`` (another
        envelope's identical decision): :func:`ti_core.publish.outcome.publish_status`."""
        return publish_status(self.own_entry)


async def _execute(
    client: RedisClient, calls: Sequence[tuple[Any, ...]], trim: TrimPolicy | None, stream_name: str
) -> list[Any]:
    pipe = pipeline(client)
    for call in calls:
        pipe.evalsha(*call)
    replicas = queue_wait(pipe, client)  # TI_MIN_REPLICAS: WAIT, on the writes' connection
    if trim is not None and trim.maxlen > 0:
        pipe.xtrim(stream_name, maxlen=trim.maxlen, approximate=trim.approximate)
    results = list(await pipe.execute(raise_on_error=False))
    if trim is not None and trim.maxlen > 0:
        trimmed = results.pop()
        if isinstance(trimmed, Exception):
            logger.warning("stream trim failed (publishing unaffected): %s", trimmed)
    if replicas is not None:
        check_replicas(replicas, results.pop(), results, describe_client(client))
    return results


async def _run(
    client: RedisClient,
    calls: Sequence[tuple[Any, ...]],
    trim: TrimPolicy | None,
    stream_name: str,
    written: str,
) -> list[Any]:
    """Run script calls (plus one trim) in one round trip; load scripts once if Redis lost them.

    Retries of lost replies happen inside the client (our policy, see ``connection``); what
    escapes becomes a ``ti_core`` error (``boundary.redis_failure``) saying ``written``:
    what a failed call did and did not write.
    """
    try:
        results = await _execute(client, calls, trim, stream_name)
        if any(is_noscript(r) for r in results if isinstance(r, Exception)):
            for body in SCRIPTS.values():
                await client.script_load(body)
            # Every script is idempotent: running the whole batch again is safe.
            results = await _execute(client, calls, trim, stream_name)
    except Exception as exc:
        raise_mapped(exc, client, written)
        raise
    for result in results:
        if isinstance(result, Exception):
            raise_mapped(result, client, written)
            raise PublishError(f"publish failed: {result}; {written}") from result
    return results


def _stream_keys(envelope: TradingIntelligenceEnvelope, stream_name: str) -> list[str]:
    t = envelope.decision.target
    return [
        stream_name,
        correlation_key(stream_name, envelope.correlation_id),
        latest_key(stream_name, t.ticker, t.trade_date),
    ]


def _serialised(envelope: TradingIntelligenceEnvelope | Serialised) -> Serialised:
    """``envelope`` with its payload and digest: as given, or serialised now (once)."""
    return envelope if isinstance(envelope, Serialised) else Serialised.of(envelope)


def _check(stream_name: str, ttl: int) -> None:
    validate_stream_name(stream_name)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise InvalidStateError(
            f"idempotency_ttl must be a whole number of seconds >= 1, got {ttl!r}"
        )


def _call(name: str, keys: Sequence[str], args: Sequence[str]) -> tuple[Any, ...]:
    return (SCRIPT_SHAS[name], len(keys), *keys, *args)


async def append_envelope(
    client: RedisClient,
    stream_name: str,
    envelope: TradingIntelligenceEnvelope | Serialised,
    *,
    force: bool = False,
    trim: TrimPolicy | None = None,
    idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
) -> tuple[str, bool]:
    """Like :func:`publish_envelope`, also saying whether this call appended the entry.

    Raises ``NotPublishedError`` when the correlation id's entry holds another decision (a
    retry that decided otherwise): that entry is what consumers see, not this envelope."""
    _check(stream_name, idempotency_ttl)
    wire = _serialised(envelope)
    args = argv(wire.envelope, wire.payload, wire.digest, idempotency_ttl, force)
    call = _call("stream", _stream_keys(wire.envelope, stream_name), args)
    t = wire.envelope.decision.target
    (result,) = await _run(
        client,
        [call],
        trim or TrimPolicy(),
        stream_name,
        f"no entry was written for {t.ticker} {t.trade_date}",
    )
    held = held_decision(text(result[2]))
    if held is not None:
        raise NotPublishedError(
            f"{t.ticker} {t.trade_date}: {conflict_message(held, wire.envelope)}"
        )
    return text(result[0]), int(result[1]) == 1


async def publish_envelope(
    client: RedisClient,
    stream_name: str,
    envelope: TradingIntelligenceEnvelope | Serialised,
    *,
    force: bool = False,
    trim: TrimPolicy | None = None,
    idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
) -> str:
    """Append ``envelope`` as the single ``data`` field; return its entry id (same on every retry).

    An identical decision already last on the stream for its (ticker, date) is not appended
    again unless ``force``; its entry id is returned instead. Pass a :class:`Serialised`
    to reuse its payload and digest (for this call and its ``publish_decision_hash``).
    """
    entry_id, _ = await append_envelope(
        client, stream_name, envelope, force=force, trim=trim, idempotency_ttl=idempotency_ttl
    )
    return entry_id


async def publish_decision_hash(
    client: RedisClient,
    envelope: TradingIntelligenceEnvelope | Serialised,
    *,
    force: bool = False,
    stream_name: str = DEFAULT_STREAM_NAME,
) -> str:
    """Write the lookup hash for an envelope already on ``stream_name``; return the hash key.

    A newer decision for the same (ticker, date) is kept unless ``force``. Raises
    ``NotPublishedError`` if the envelope has no stream entry (publish it first).
    """
    validate_stream_name(stream_name)
    wire = _serialised(envelope)
    envelope = wire.envelope
    t = envelope.decision.target
    key = decision_hash_key(t.ticker, t.trade_date)
    keys = [key, correlation_key(stream_name, envelope.correlation_id)]
    args = argv(envelope, wire.payload, wire.digest, 0, force)
    (result,) = await _run(
        client,
        [_call("hash", keys, args)],
        None,
        stream_name,
        f"the lookup hash of {t.ticker} {t.trade_date} was not written",
    )
    if not text(result[0]):
        raise NotPublishedError(
            f"{t.ticker} {t.trade_date}: correlation id {envelope.correlation_id} has no entry on "
            f"{stream_name}; publish the envelope to the stream first"
        )
    held = held_decision(text(result[3]))
    if held is not None:
        raise NotPublishedError(f"{t.ticker} {t.trade_date}: {conflict_message(held, envelope)}")
    return key


async def publish_many(
    client: RedisClient,
    envelopes: Iterable[TradingIntelligenceEnvelope | Serialised],
    *,
    stream_name: str = DEFAULT_STREAM_NAME,
    force: bool = False,
    trim: TrimPolicy | None = None,
    idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
    chunk_size: int = DEFAULT_CHUNK,
) -> list[PublishResult]:
    """Publish entry + hash for each envelope, pipelined in chunks; results in input order.

    Each envelope's two writes are one script. ``envelopes`` is consumed lazily: while one
    chunk is with Redis, the next is taken (so a generator that builds envelopes overlaps
    with the writes) and prepared; chunks are still sent one after the other, in order.
    The first chunk is awaited before the second is taken (it may open the connection).
    On a failure the whole call can be repeated: envelopes written by the failed attempt
    come back with ``created=False``. An envelope given as :class:`Serialised` is published
    with its payload and digest as they are; any other is serialised once, here.
    """
    _check(stream_name, idempotency_ttl)
    policy = trim or TrimPolicy()
    out: list[PublishResult] = []
    in_flight: asyncio.Task[list[PublishResult]] | None = None
    try:
        for batch in _batches(envelopes, chunk_size):
            prepared = _prepare(batch, stream_name, force, idempotency_ttl)
            if not out:  # the first chunk: the connection may need opening, so wait for it
                out.extend(await _send(client, prepared, stream_name, policy))
                continue
            if in_flight is not None:
                out.extend(await in_flight)
            in_flight = asyncio.ensure_future(_send(client, prepared, stream_name, policy))
            for _ in range(_TURNS_TO_WRITE):
                await asyncio.sleep(0)
        if in_flight is not None:
            out.extend(await in_flight)
    except BaseException as exc:
        if in_flight is not None and not in_flight.done():
            if isinstance(exc, asyncio.CancelledError):
                in_flight.cancel()
            await asyncio.gather(in_flight, return_exceptions=True)  # never left running
        raise
    return out


def _batches(
    envelopes: Iterable[TradingIntelligenceEnvelope | Serialised], size: int
) -> Iterator[list[TradingIntelligenceEnvelope | Serialised]]:
    if size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {size}")
    batch: list[TradingIntelligenceEnvelope | Serialised] = []
    for envelope in envelopes:
        batch.append(envelope)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


_BATCH_WRITTEN = (
    "each envelope's entry and hash are one script: the failing envelope was not "
    "written, those before it in its batch may be; publishing again finishes it"
)


@dataclass(frozen=True, slots=True)
class _Prepared:
    envelopes: list[TradingIntelligenceEnvelope]
    calls: list[tuple[Any, ...]]
    hash_keys: list[str]


def _prepare(
    batch: list[TradingIntelligenceEnvelope | Serialised], stream_name: str, force: bool, ttl: int
) -> _Prepared:
    """Script calls of up to ``PER_SCRIPT_CALL`` envelopes each (fewer commands to pack,
    send, dispatch and parse: one script runs the envelopes one after the other)."""
    wires = [_serialised(item) for item in batch]
    calls = []
    hash_keys = []
    for start in range(0, len(wires), PER_SCRIPT_CALL):
        keys: list[str] = []
        args: list[str] = []
        for wire in wires[start : start + PER_SCRIPT_CALL]:
            t = wire.envelope.decision.target
            hash_key = decision_hash_key(t.ticker, t.trade_date)
            keys += _stream_keys(wire.envelope, stream_name)
            keys.append(hash_key)
            args += argv(wire.envelope, wire.payload, wire.digest, ttl, force)
            hash_keys.append(hash_key)
        calls.append(_call("batch", keys, args))
    return _Prepared([wire.envelope for wire in wires], calls, hash_keys)


async def _send(
    client: RedisClient, prepared: _Prepared, stream_name: str, trim: TrimPolicy
) -> list[PublishResult]:
    replies = await _run(client, prepared.calls, trim, stream_name, _BATCH_WRITTEN)
    flat = [value for result in replies for value in result]
    n = BATCH_STRIDE
    return [
        PublishResult(
            ticker=env.decision.target.ticker,
            trade_date=env.decision.target.trade_date,
            correlation_id=env.correlation_id,
            entry_id=text(flat[n * i]),
            created=int(flat[n * i + 1]) == 1,
            hash_written=bool(int(flat[n * i + 2])),
            hash_key=hash_key,
            own_entry=int(flat[n * i + 1]) != 0,
            held=held_decision(text(flat[n * i + 3])),
        )
        for i, (env, hash_key) in enumerate(
            zip(prepared.envelopes, prepared.hash_keys, strict=True)
        )
    ]
