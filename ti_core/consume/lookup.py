"""Reading one lookup hash back: absent, readable, or damaged with one line saying why.

The hash holds the whole envelope in ``json`` plus flat copies of its main fields (see the
contract). Whatever another tool, a bug or a damaged store left there, a reader gets a
verdict, never an exception: ``json`` goes through the decoder that never raises, the flat
fields must be present, numeric where they are numbers, and agree with the envelope. Fields
beyond the contract's are allowed (the contract lets publishers add some).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ti_core.contract.decoder import explain_payload
from ti_core.contract.hash_fields import CONTRACT_FIELDS, NUMBER_FIELDS
from ti_core.contract.keys import decision_hash_key, shorten
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.errors import InvalidStateError, one_line
from ti_core.transport.boundary import is_wrong_type, redis_boundary
from ti_core.transport.client import RedisClient
from ti_core.transport.replies import fields, readable

__all__ = ["REQUIRED_FIELDS", "Lookup", "explain_hash", "read_decision"]

REQUIRED_FIELDS = CONTRACT_FIELDS  # the contract's nine; publishers may add more


@dataclass(frozen=True)
class Lookup:
    """A lookup hash read back: ``envelope`` when readable, else ``problem`` (empty: absent)."""

    key: str
    envelope: TradingIntelligenceEnvelope | None = None
    fields: dict[str, str] = field(default_factory=dict)
    problem: str = ""


def _number_problem(name: str, value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return f"{name} is {shorten(value, 40)}, not a number"
    return "" if math.isfinite(number) else f"{name} is {value}, not a finite number"


def _agreement(key: str, fields: dict[str, str], envelope: TradingIntelligenceEnvelope) -> str:
    target, synthesis = envelope.decision.target, envelope.decision.synthesis
    expected = {
        "ticker": target.ticker,
        "trade_date": target.trade_date,
        "verdict": synthesis.verdict,
    }
    for name, value in expected.items():
        if fields[name] != value:
            return f"its {name} field is {shorten(fields[name], 40)} but its json says {value}"
    try:
        own_key = decision_hash_key(target.ticker, target.trade_date)
    except InvalidStateError as exc:
        return f"its json names an invalid target: {exc}"
    if own_key != key:
        return f"its json holds {target.ticker} {target.trade_date}"
    return ""


def explain_hash(key: str, raw: Any) -> Lookup:
    """Judge the HGETALL result ``raw`` of ``key``; never raises."""
    try:
        held = fields(raw)
        shown = {name: readable(value) for name, value in held.items()}
        if not shown:
            return Lookup(key)
        payload = held.get("json")
        if payload is None:
            return Lookup(key, None, shown, "it has no json field")
        envelope, reason = explain_payload(payload)
        if envelope is None:
            return Lookup(key, None, shown, f"its json field is unreadable: {reason}")
        missing = [name for name in REQUIRED_FIELDS if name not in shown]
        if missing:
            return Lookup(key, None, shown, f"it lacks the field(s) {', '.join(missing)}")
        for name in NUMBER_FIELDS:
            problem = _number_problem(name, shown[name])
            if problem:
                return Lookup(key, None, shown, problem)
        problem = _agreement(key, shown, envelope)
        return Lookup(key, None if problem else envelope, shown, problem)
    except Exception as exc:  # the promise is "never raises"
        return Lookup(key, None, {}, f"unreadable ({one_line(exc, 120, typed=True)})")


@redis_boundary("nothing was written (a read)")
async def read_decision(client: RedisClient, ticker: str, trade_date: str) -> Lookup:
    """The lookup hash of (ticker, date), judged; a key that is not a hash is a problem."""
    key = decision_hash_key(ticker, trade_date)
    try:
        raw = await client.hgetall(key)
    except Exception as exc:
        if not is_wrong_type(exc):
            raise
        return Lookup(key, problem="the key holds another type than a hash (WRONGTYPE)")
    return explain_hash(key, raw)
