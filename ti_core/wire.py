"""An envelope's serialised forms: the payload sent to Redis and its content digest.

Serialising is most of the CPU a publish costs. The builder proves the size cap from a bound
and serialises only when the bound cannot (a large envelope); then it remembers
``(payload, digest)`` (keyed by identity, dropped when the envelope is) and publishing
reuses them. Otherwise publishing serialises, once, for both the payload and the digest.
Envelopes are frozen; mutating a nested dict of one after building is not supported.
"""

from __future__ import annotations

import hashlib
import weakref

from ti_core.models import MarketMindDecision, TradingIntelligenceEnvelope

__all__ = ["content_digest", "payload_and_digest", "remember"]

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


def _serialise(envelope: TradingIntelligenceEnvelope) -> tuple[str, str]:
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
        forms = _KNOWN[key] = _serialise(envelope)
        weakref.finalize(envelope, _KNOWN.pop, key, None)
    return forms


def payload_and_digest(envelope: TradingIntelligenceEnvelope) -> tuple[str, str]:
    """``(envelope.model_dump_json(), content_digest(envelope))``, from memory when built here.

    Byte-identical to ``model_dump_json()`` (a test checks it); any envelope whose shape is
    not exactly v1's (a subclass, a new field) takes the plain, two-serialisation path.
    """
    return _KNOWN.get(id(envelope)) or _serialise(envelope)


def content_digest(envelope: TradingIntelligenceEnvelope) -> str:
    """Digest of what a decision *says* (decision + arena id), not when or by whom it was sent."""
    return payload_and_digest(envelope)[1]
