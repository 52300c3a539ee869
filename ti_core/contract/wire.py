"""An envelope's serialised forms: the payload sent to Redis and its content digest.

Serialising is most of the CPU a publish costs, so the payload and digest are computed
together (:func:`serialise`, the only place a whole envelope becomes JSON) and handed along
explicitly, as :class:`Serialised` (plain values: no hidden state, no cache): the publisher
takes one, or serialises a bare envelope itself, once, for both the payload and the digest.

Between Prefect tasks the envelope travels as its JSON text, a plain ``str`` that is exactly
its stream payload; a publish task turns it back into a :class:`Serialised` with
:meth:`Serialised.read`: parsed once (:func:`parse`, the only place the publisher turns JSON
into an envelope again), its digest read from the text, the text itself published as is.

Envelopes are frozen; mutating a nested dict of one after building is not supported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ti_core.contract.models import MarketMindDecision, TradingIntelligenceEnvelope

__all__ = ["Serialised", "content_digest", "parse", "serialise"]

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
_ENVELOPE_JSON = TradingIntelligenceEnvelope.__pydantic_serializer__.to_json
_DECISION_JSON = MarketMindDecision.__pydantic_serializer__.to_json


def _digest(decision_json: str, arena_id: str) -> str:
    return hashlib.sha256((decision_json + "\x00" + arena_id).encode()).hexdigest()


def _tail(envelope: TradingIntelligenceEnvelope) -> str | None:
    """What follows the decision in a v1 payload (its small fields); None if not v1-shaped."""
    if (
        type(envelope) is TradingIntelligenceEnvelope
        and _V1_LAYOUT
        and (envelope.schema_version, envelope.arena) == ("1", "trading_intelligence")
    ):
        return "," + _ENVELOPE_JSON(envelope, exclude=_REST).decode()[1:]
    return None


def serialise(envelope: TradingIntelligenceEnvelope) -> tuple[str, str]:
    """``(payload, digest)``, computed now: the one place an envelope is turned into JSON."""
    # The serialisers themselves (what model_dump_json calls), without its per-call overhead.
    decision_json = _DECISION_JSON(envelope.decision).decode()
    tail = _tail(envelope)
    payload = envelope.model_dump_json() if tail is None else _PREFIX + decision_json + tail
    return payload, _digest(decision_json, envelope.arena_id)


def content_digest(envelope: TradingIntelligenceEnvelope) -> str:
    """Digest of what a decision *says* (decision + arena id), not when or by whom it was sent."""
    return _digest(_DECISION_JSON(envelope.decision).decode(), envelope.arena_id)


def parse(text: str | bytes) -> TradingIntelligenceEnvelope:
    """The envelope of a payload this publisher made: the one place it parses one back."""
    return TradingIntelligenceEnvelope.model_validate_json(text)


@dataclass(frozen=True, slots=True)
class Serialised:
    """An envelope with its stream payload and content digest, made once and passed along.

    ``payload`` is what the stream entry's ``data`` field and the hash's ``json`` get, byte
    for byte; ``digest`` is :func:`content_digest` of ``envelope``.
    """

    envelope: TradingIntelligenceEnvelope
    payload: str
    digest: str

    @classmethod
    def of(cls, envelope: TradingIntelligenceEnvelope) -> Serialised:
        """``envelope`` serialised now (once, for both the payload and the digest)."""
        payload, digest = serialise(envelope)
        return cls(envelope, payload, digest)

    @classmethod
    def read(cls, text: str) -> Serialised:
        """The envelope ``text`` is the JSON of (parsed once), with ``text`` as its payload
        and the digest of the decision's JSON as it stands in ``text``.

        ``text`` is what :func:`serialise` made (build-envelope's result, now or in an
        earlier version). Text of any other layout is re-serialised in the canonical form,
        so what is published is always what :func:`serialise` gives.
        """
        envelope = parse(text)
        tail = _tail(envelope)
        if (
            tail is not None
            and len(text) > len(_PREFIX) + len(tail)
            and text.startswith(_PREFIX)
            and text.endswith(tail)
        ):
            decision_json = text[len(_PREFIX) : len(text) - len(tail)]
            return cls(envelope, text, _digest(decision_json, envelope.arena_id))
        return cls.of(envelope)


def _restored(payload: str, digest: str) -> str:
    """build-envelope's result as an earlier version pickled it (text and digest): its text.

    Prefect kept those results as pickles naming ``ti_core.wire._restored`` (resolved here
    by ``ti_core._legacy``) or this function; ``ti retry`` of such a run loads them, and the
    publish tasks read the digest from the text again.
    """
    return payload
