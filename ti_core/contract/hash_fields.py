"""The lookup hash's fields, named once, and how each is read from an envelope.

The v1 contract's nine fields (``json`` and eight flat copies of the envelope's main values)
plus the two this publisher adds (``entry_id``, ``published_ts``). The publish scripts' Lua
and the order of their arguments are generated from this list (:mod:`ti_core.publish.scripts`),
the reader checks against it (:mod:`ti_core.consume.lookup`), and so does the audit; the field names
and values written are the wire contract's and must not change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ti_core.contract.models import TradingIntelligenceEnvelope

__all__ = [
    "ADDED_FIELDS",
    "CONTRACT_FIELDS",
    "FIELDS",
    "FLAT_FIELDS",
    "NUMBER_FIELDS",
    "flat_values",
    "hash_fields",
    "published_ts",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def published_ts(envelope: TradingIntelligenceEnvelope) -> str:
    """``published_at`` as integer microseconds since the epoch (exact; naive means UTC)."""
    moment = envelope.published_at
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return str((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


_Read = Callable[[TradingIntelligenceEnvelope], str]

# The flat copies, in the contract's order, each with how it is read from an envelope.
_FLAT: tuple[tuple[str, _Read], ...] = (
    ("ticker", lambda e: e.decision.target.ticker),
    ("trade_date", lambda e: e.decision.target.trade_date),
    ("verdict", lambda e: e.decision.synthesis.verdict),
    ("confidence", lambda e: str(e.decision.synthesis.confidence)),
    ("ensemble_score", lambda e: str(e.decision.synthesis.ensemble_score)),
    ("published_at", lambda e: e.published_at.isoformat()),
    ("correlation_id", lambda e: e.correlation_id),
    ("arena_id", lambda e: e.arena_id),
)

FLAT_FIELDS: tuple[str, ...] = tuple(name for name, _ in _FLAT)
"""The envelope's values copied flat into the hash, so a reader needs no JSON parser."""

CONTRACT_FIELDS: tuple[str, ...] = ("json", *FLAT_FIELDS)
"""The v1 contract's nine: a lookup hash without one of them is damaged."""

ADDED_FIELDS: tuple[str, ...] = ("entry_id", "published_ts")
"""Added by this publisher: the stream entry the hash points at, and its order (microseconds)."""

FIELDS: tuple[str, ...] = (*CONTRACT_FIELDS, *ADDED_FIELDS)
"""Every field the publish scripts write."""

NUMBER_FIELDS: tuple[str, ...] = ("confidence", "ensemble_score")
"""Flat fields that must read as finite numbers."""


def flat_values(envelope: TradingIntelligenceEnvelope) -> dict[str, str]:
    """The flat fields' values for ``envelope``, in :data:`FLAT_FIELDS` order."""
    return {name: read(envelope) for name, read in _FLAT}


def hash_fields(envelope: TradingIntelligenceEnvelope, payload: str) -> dict[str, str]:
    """The hash the scripts write for ``envelope`` (its JSON ``payload`` once), but for
    ``entry_id``, which only the server knows, and the cap the server's clock may put on
    ``published_ts`` (:func:`ti_core.publish.scripts.publish_order`)."""
    return {"json": payload, **flat_values(envelope), "published_ts": published_ts(envelope)}
