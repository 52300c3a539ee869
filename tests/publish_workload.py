"""Envelopes for publishing tests and benches: many distinct (ticker, date) pairs from a sample.

Also the checks every publishing test ends with: each correlation id exactly once on the
stream, and each lookup hash pointing at an entry that carries the same decision.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ti_core import build_envelope_from_state, decision_hash_key, decode_envelope
from ti_core.contract.models import TradingIntelligenceEnvelope

__all__ = [
    "SAMPLE",
    "Opener",
    "assert_exactly_once",
    "envelope",
    "many_envelopes",
    "read_hash",
    "stream_entries",
]

# A factory of clients on one store (the ``clients`` fixture in conftest yields one).
Opener = Callable[[], Any]

SAMPLE = Path(__file__).parent / "data" / "nvda-2026-05-11-full.json"
_BASE_DATE = date(2026, 1, 5)


def _state() -> dict[str, Any]:
    return dict(json.loads(SAMPLE.read_text()))


_STATE = _state()


def envelope(
    ticker: str = "NVDA",
    trade_date: str = "2026-05-11",
    *,
    verdict: str = "BUY",
    confidence: float = 0.78,
    published_at: datetime | None = None,
    correlation_id: str | None = None,
    arena_id: str | None = None,
) -> TradingIntelligenceEnvelope:
    """One envelope from the NVDA sample, retargeted; vary verdict/confidence for new content."""
    state = copy.deepcopy(_STATE)
    state["target"]["ticker"] = ticker
    state["target"]["trade_date"] = trade_date
    state["synthesis_verdict"] = verdict
    state["synthesis_confidence"] = confidence
    if arena_id is not None:
        state["arena_id"] = arena_id
    return build_envelope_from_state(
        state, correlation_id=correlation_id, published_at=published_at or datetime.now(UTC)
    )


def many_envelopes(count: int, *, tickers: int = 100) -> list[TradingIntelligenceEnvelope]:
    """``count`` envelopes, each for a different (ticker, date) pair: T0..T{tickers-1} x days.

    Built once, then copied with a new target, confidence and correlation id (fast: 10,000
    take well under a second); a check at the end proves the copies still decode.
    """
    base = envelope()
    d = base.decision
    out = []
    for i in range(count):
        day = (_BASE_DATE + timedelta(days=i // tickers)).isoformat()
        target = d.target.model_copy(update={"ticker": f"T{i % tickers}", "trade_date": day})
        synthesis = d.synthesis.model_copy(update={"confidence": (i % 97) / 100})
        decision = d.model_copy(update={"target": target, "synthesis": synthesis})
        out.append(
            base.model_copy(update={"decision": decision, "correlation_id": uuid.uuid4().hex})
        )
    if out:
        assert decode_envelope(out[-1].model_dump_json()) == out[-1]
    return out


async def stream_entries(client: Any, stream: str) -> dict[str, TradingIntelligenceEnvelope]:
    """Every entry of ``stream`` (id -> envelope); each must have exactly the field ``data``."""
    out = {}
    for raw_id, fields in await client.xrange(stream):
        assert set(fields) == {b"data"}, fields.keys()
        decoded = decode_envelope(fields[b"data"])
        assert decoded is not None
        out[raw_id.decode() if isinstance(raw_id, bytes) else raw_id] = decoded
    return out


async def assert_exactly_once(
    client: Any, stream: str, envelopes: list[TradingIntelligenceEnvelope], *, hashes: bool = True
) -> dict[str, TradingIntelligenceEnvelope]:
    """Each envelope once on the stream (by correlation id) and its pair's hash at that entry.

    For workloads where every envelope has its own (ticker, date), like ``many_envelopes``;
    ``hashes=False`` checks the stream only (for envelopes published with the stream alone).
    """
    entries = await stream_entries(client, stream)
    counts = Counter(env.correlation_id for env in entries.values())
    wanted = {env.correlation_id for env in envelopes}
    duplicated = {cid: n for cid, n in counts.items() if n > 1}
    missing = wanted - set(counts)
    assert not duplicated, f"{len(duplicated)} correlation ids more than once"
    assert not missing, f"{len(missing)} envelopes missing from the stream"
    for start in range(0, len(envelopes) if hashes else 0, 500):
        chunk = envelopes[start : start + 500]
        try:
            pipe = client.pipeline(transaction=False)
        except TypeError:  # the embedded store's pipeline takes no arguments
            pipe = client.pipeline()
        for env in chunk:
            pipe.hgetall(
                decision_hash_key(env.decision.target.ticker, env.decision.target.trade_date)
            )
        for env, fields in zip(chunk, await pipe.execute(), strict=True):
            _check_hash(env, fields, entries)
    return entries


def _check_hash(
    env: TradingIntelligenceEnvelope,
    fields: dict[bytes, bytes],
    entries: dict[str, TradingIntelligenceEnvelope],
) -> None:
    t = env.decision.target
    entry_id = fields[b"entry_id"].decode()
    assert entry_id in entries, f"{t.ticker} {t.trade_date}: hash points at a missing entry"
    assert entries[entry_id] == env
    assert decode_envelope(fields[b"json"]) == env  # each pair's only envelope
    assert fields[b"correlation_id"].decode() == env.correlation_id


async def read_hash(client: Any, env: TradingIntelligenceEnvelope) -> dict[str, str]:
    """The lookup hash of ``env``'s (ticker, date), decoded (empty when there is none)."""
    t = env.decision.target
    raw = await client.hgetall(decision_hash_key(t.ticker, t.trade_date))
    return {k.decode(): v.decode() for k, v in raw.items()}
