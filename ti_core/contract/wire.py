"""An envelope's serialised forms: the payload sent to Redis and its content digest.

Serialising is most of the CPU a publish costs, so a decision is serialised once on every
path (:func:`serialise` is the only place an envelope becomes JSON) and never parsed back
on its way to Redis (:func:`parse` is the only place the publisher turns JSON into an
envelope again, and only where the envelope itself was lost: a retried flow run, a task
run in another process).

- The builder proves the size cap from a bound and serialises only when the bound cannot
  (a large envelope); then it remembers ``(payload, digest)`` (keyed by identity, dropped
  when the envelope is) and publishing reuses them. Otherwise publishing serialises, once,
  for both the payload and the digest.
- Between Prefect tasks the envelope travels as :class:`EnvelopeJson`: its JSON text (a
  plain ``str`` to Prefect, to run names and to Redis) that still carries the envelope and
  digest it was made from, so the next task publishes them as they are. Pickled (Prefect's
  persisted results, a distributed task runner) it keeps the text and the digest.

Envelopes are frozen; mutating a nested dict of one after building is not supported.
"""

from __future__ import annotations

import hashlib
import weakref

from ti_core.contract.models import MarketMindDecision, TradingIntelligenceEnvelope

__all__ = [
    "EnvelopeJson",
    "carrying",
    "content_digest",
    "envelope_of",
    "parse",
    "payload_and_digest",
    "remember",
    "serialise",
    "wire_form",
]

# The envelope's JSON is its fields in declaration order; when they are the v1 ones, the
# payload is this prefix + the decision's JSON + the rest, so the decision (most of the
# bytes) is serialised once for both the payload and the digest.
_FIELDS = (
    "schema_version",
    "arena",
    "decision",
    "published_at",
    "correlation_id",
    "arena_id",
    "meta",
)
_PREFIX = '{"schema_version":"1","arena":"trading_intelligence","decision":'
_REST = {"schema_version", "arena", "decision"}
_V1_LAYOUT = tuple(TradingIntelligenceEnvelope.model_fields) == _FIELDS
_KNOWN: dict[int, tuple[str, str]] = {}
_ENVELOPE_JSON = TradingIntelligenceEnvelope.__pydantic_serializer__.to_json
_DECISION_JSON = MarketMindDecision.__pydantic_serializer__.to_json


def _digest(decision_json: str, arena_id: str) -> str:
    return hashlib.sha256((decision_json + "\x00" + arena_id).encode()).hexdigest()


def serialise(envelope: TradingIntelligenceEnvelope) -> tuple[str, str]:
    """``(payload, digest)``, computed now: the one place an envelope is turned into JSON."""
    # The serialisers themselves (what model_dump_json calls), without its per-call overhead.
    decision_json = _DECISION_JSON(envelope.decision).decode()
    if (
        type(envelope) is TradingIntelligenceEnvelope
        and _V1_LAYOUT
        and (envelope.schema_version, envelope.arena) == ("1", "trading_intelligence")
    ):
        rest = _ENVELOPE_JSON(envelope, exclude=_REST).decode()
        payload = _PREFIX + decision_json + "," + rest[1:]
    else:
        payload = envelope.model_dump_json()
    return payload, _digest(decision_json, envelope.arena_id)


def remember(envelope: TradingIntelligenceEnvelope) -> tuple[str, str]:
    """Serialise once and keep the result for as long as ``envelope`` lives."""
    key = id(envelope)
    forms = _KNOWN.get(key)
    if forms is None:
        forms = _KNOWN[key] = serialise(envelope)
        weakref.finalize(envelope, _KNOWN.pop, key, None)
    return forms


def payload_and_digest(envelope: TradingIntelligenceEnvelope) -> tuple[str, str]:
    """``(envelope.model_dump_json(), content_digest(envelope))``, from memory when built here.

    Byte-identical to ``model_dump_json()`` (a test checks it); any envelope whose shape is
    not exactly v1's (a subclass, a new field) takes the plain, two-serialisation path.
    """
    return _KNOWN.get(id(envelope)) or serialise(envelope)


def content_digest(envelope: TradingIntelligenceEnvelope) -> str:
    """Digest of what a decision *says* (decision + arena id), not when or by whom it was sent."""
    return payload_and_digest(envelope)[1]


def parse(text: str | bytes) -> TradingIntelligenceEnvelope:
    """The envelope of a payload this publisher made: the one place it parses one back."""
    return TradingIntelligenceEnvelope.model_validate_json(text)


def _adopt(envelope: TradingIntelligenceEnvelope, payload: str, digest: str) -> None:
    """Let publishing reuse ``(payload, digest)`` for ``envelope`` (kept while it lives)."""
    key = id(envelope)
    if key not in _KNOWN:
        _KNOWN[key] = (payload, digest)
        weakref.finalize(envelope, _KNOWN.pop, key, None)


class EnvelopeJson(str):
    """An envelope's JSON text (exactly its stream payload) that knows where it came from.

    To everything else it is the ``str`` it equals; :func:`envelope_of` returns the envelope
    it was made from without parsing, and publishing reuses its payload and digest. Made by
    :func:`wire_form`; pickles as its text and digest (the envelope is rebuilt, by one
    parse, only where it is needed).
    """

    envelope: TradingIntelligenceEnvelope | None
    digest: str

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return _restored, (str(self), self.digest)


def _restored(payload: str, digest: str) -> EnvelopeJson:
    text = EnvelopeJson(payload)
    text.envelope, text.digest = None, digest
    return text


def wire_form(envelope: TradingIntelligenceEnvelope) -> EnvelopeJson:
    """``envelope`` as its JSON text, serialised once (or not at all if already done)."""
    payload, digest = remember(envelope)
    text = EnvelopeJson(payload)
    text.envelope, text.digest = envelope, digest
    return text


def carrying(text: str) -> EnvelopeJson:
    """``text`` as :class:`EnvelopeJson` holding its envelope: itself when it does, else the
    envelope parsed once (kept on it). Made here and restored from a pickle, its payload and
    digest are reused as they are; foreign text is re-serialised in the canonical form."""
    if not isinstance(text, EnvelopeJson):
        return wire_form(parse(text))
    if text.envelope is None:
        envelope = text.envelope = parse(text)
        _adopt(envelope, str(text), text.digest)
    return text


def envelope_of(text: str) -> TradingIntelligenceEnvelope:
    """The envelope ``text`` is the JSON of, parsed only if ``text`` does not carry it."""
    envelope = carrying(text).envelope
    assert envelope is not None  # carrying() always sets it
    return envelope
