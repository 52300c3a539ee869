"""Ordering that no publisher's clock can subvert, on fakeredis, a real server and the embedded
store (``clients``), through both write paths: ``publish_many`` (one script, what the flow's
publish-stream task and backfills use) and the two-step ``publish_envelope`` +
``publish_decision_hash``.

The order of an envelope is its ``published_at`` capped at the moment its stream entry was
written (the entry id's time, from the server's clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.publish_workload import envelope
from ti_core import DEFAULT_STREAM_NAME, get_decision, publish_envelope, publish_many
from ti_core.contract.keys import decision_hash_key
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.publish.publisher import publish_decision_hash
from ti_core.verify import verify_store

S = DEFAULT_STREAM_NAME
KEY = decision_hash_key("NVDA", "2026-05-11")
Publish = Callable[[Any, TradingIntelligenceEnvelope], Awaitable[str]]


async def _together(client: Any, env: TradingIntelligenceEnvelope) -> str:
    (result,) = await publish_many(client, [env])
    return result.entry_id


async def _two_steps(client: Any, env: TradingIntelligenceEnvelope) -> str:
    entry_id = await publish_envelope(client, S, env)
    await publish_decision_hash(client, env)
    return entry_id


PATHS = pytest.mark.parametrize("publish", [_together, _two_steps], ids=["together", "two-steps"])


async def _after(entry_id: str) -> datetime:
    """A correct clock's "now" once it has passed the millisecond ``entry_id`` was written in
    (polled, no fixed sleep: the decision is genuinely built after that entry)."""
    entry_ms = int(entry_id.split("-")[0])
    while True:
        now = datetime.now(UTC)
        if int(now.timestamp() * 1000) > entry_ms + 1:
            return now
        await asyncio.sleep(0.001)


async def _verdict(client: Any) -> str:
    got = await get_decision(client, "NVDA", "2026-05-11")
    assert got is not None
    return got.decision.synthesis.verdict


@PATHS
async def test_a_clock_a_day_ahead_cannot_hide_a_later_decision(r: Any, publish: Publish) -> None:
    fast = envelope(verdict="BUY", published_at=datetime.now(UTC) + timedelta(days=1))
    fast_entry = await publish(r, fast)
    assert await _verdict(r) == "BUY"
    correct = envelope(verdict="SELL", confidence=0.61, published_at=await _after(fast_entry))
    await publish(r, correct)
    assert await _verdict(r) == "SELL"
    # a retry of the fast host's publish (same envelope) changes nothing
    await publish(r, fast)
    assert await _verdict(r) == "SELL"
    report = await verify_store(r)
    assert report.ok and report.counts.get("superseded") == 1, report.to_dict()


@PATHS
async def test_a_delayed_publish_of_an_older_build_cannot_overwrite_a_newer_one(
    r: Any, publish: Publish
) -> None:
    built_earlier = envelope(verdict="SELL", published_at=datetime.now(UTC) - timedelta(hours=1))
    newer = envelope(verdict="BUY", confidence=0.9)
    await publish(r, newer)
    await publish(r, built_earlier)  # its publish was delayed until after the newer one
    assert await _verdict(r) == "BUY"
    got = await get_decision(r, "NVDA", "2026-05-11")
    assert got is not None and got.correlation_id == newer.correlation_id
    report = await verify_store(r)
    assert report.ok and report.counts.get("superseded") == 1, report.to_dict()


async def test_verify_names_a_hash_hiding_a_later_decision(r: Any) -> None:
    """What an older version left with a clock a day ahead: the hash holds the earlier BUY,
    stamped tomorrow, although a later SELL is on the stream."""
    fast = envelope(verdict="BUY", published_at=datetime.now(UTC) + timedelta(days=1))
    (first,) = await publish_many(r, [fast])
    held = await r.hgetall(KEY)
    later = envelope(verdict="SELL", confidence=0.61, published_at=await _after(first.entry_id))
    await publish_many(r, [later])
    future_ts = str(int(fast.published_at.timestamp() * 1_000_000))
    await r.hset(KEY, mapping={**held, "published_ts": future_ts})  # the old, uncapped order
    report = await verify_store(r)
    assert not report.ok and report.counts.get("stale_hash") == 1, report.to_dict()
    assert "hides the later-ordered entry" in report.examples["stale_hash"][0]
    # publishing the later decision again repairs it: its order beats the capped old one
    await publish_many(r, [later])
    assert await _verdict(r) == "SELL"
    assert (await verify_store(r)).ok


# Finding 7 of issue 22: a decision built within the millisecond another's entry was written.
# The stamps are set from that entry's millisecond M (read from its id), so every case is
# deterministic whatever the machine's speed; the correlation ids are chosen so that the old
# tie-break (greater correlation id) would pick the wrong decision.
LOW_CID, HIGH_CID = "0" * 32, "f" * 32


def _at_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC) + timedelta(microseconds=us % 1_000_000)


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


# (case, microseconds after the start of M the correct host stamps, or None for "published
# first", the verdict the hash must hold)
CLOCK_CASES = [
    ("built-at-the-start-of-the-fast-entrys-ms", 0, "SELL"),
    ("built-at-the-end-of-the-fast-entrys-ms", 999, "SELL"),
    ("built-just-before-the-fast-entrys-ms", -1, "BUY"),
    ("correct-published-first", None, "BUY"),
]


@pytest.mark.parametrize(
    ("offset_us", "wins"), [c[1:] for c in CLOCK_CASES], ids=[c[0] for c in CLOCK_CASES]
)
async def test_within_one_millisecond_a_decision_built_after_an_entry_was_written_wins(
    r: Any, offset_us: int | None, wins: str
) -> None:
    """A fast host (a day ahead: its order is the end of its entry's millisecond M) and a
    correct one, through ``publish_many``: the correct decision built in M (after the fast
    entry, or at least not provably before it) wins; one built before M does not; a fast
    entry written after a correct decision wins. Retrying either changes nothing."""
    ahead = datetime.now(UTC) + timedelta(days=1)
    fast = envelope(verdict="BUY", published_at=ahead, correlation_id=HIGH_CID)
    if offset_us is None:
        correct = envelope(verdict="SELL", confidence=0.61, correlation_id=LOW_CID)
        first, second = correct, fast
    else:
        first = fast
    (held,) = await publish_many(r, [first])
    if offset_us is not None:
        stamp = _at_us(_entry_ms(held.entry_id) * 1000 + offset_us)
        correct = envelope(
            verdict="SELL", confidence=0.61, published_at=stamp, correlation_id=LOW_CID
        )
        second = correct
    await publish_many(r, [second])
    assert await _verdict(r) == wins
    await publish_many(r, [first])  # a retry of either publish changes nothing
    await publish_many(r, [second])
    assert await _verdict(r) == wins
    report = await verify_store(r)
    assert report.ok and report.counts.get("superseded") == 1, report.to_dict()
