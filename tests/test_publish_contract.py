"""The publishing contract, on fakeredis, a real redis-server and the embedded store alike.

Everything here is single-server logic (scripts, keys, ordering, trimming) where fakeredis
with Lua is faithful; faults and concurrency across connections are in test_publish_faults.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.publish_workload import (
    Opener,
    envelope,
    many_envelopes,
    read_hash,
    stream_entries,
)
from ti_core import (
    DEFAULT_STREAM_NAME,
    NotPublishedError,
    decision_hash_key,
    decode_envelope,
)
from ti_core.contract.hash_fields import hash_fields
from ti_core.contract.keys import correlation_key, latest_key
from ti_core.contract.wire import Serialised
from ti_core.publish.publisher import (
    DEFAULT_IDEMPOTENCY_TTL,
    TrimPolicy,
    append_envelope,
    publish_decision_hash,
    publish_envelope,
    publish_many,
)
from ti_core.publish.scripts import HeldDecision

S = DEFAULT_STREAM_NAME
CONTRACT_FIELDS = {
    "json",
    "ticker",
    "trade_date",
    "verdict",
    "confidence",
    "ensemble_score",
    "published_at",
    "correlation_id",
    "arena_id",
}
T0 = datetime(2026, 5, 11, 21, 0, tzinfo=UTC)


async def test_publish_twice_one_entry_same_id(r: Any) -> None:
    env = envelope()
    first, created = await append_envelope(r, S, env)
    again, created_again = await append_envelope(r, S, env)
    assert (again, created, created_again) == (first, True, False)
    assert await publish_envelope(r, S, env) == first
    assert await r.xlen(S) == 1


async def test_same_correlation_id_from_two_clients_at_once(clients: Opener) -> None:
    a, b = clients(), clients()
    env = envelope()
    twin = env.model_copy()  # the same envelope as another process would hold it
    ids = await asyncio.gather(*(publish_envelope(c, S, e) for c, e in [(a, env), (b, twin)] * 8))
    assert len(set(ids)) == 1
    results = await asyncio.gather(publish_many(a, [env]), publish_many(b, [twin]))
    assert {res[0].entry_id for res in results} == set(ids)
    assert await a.xlen(S) == 1


async def test_stream_entry_is_exactly_one_data_field(r: Any) -> None:
    env = envelope()
    entry_id = await publish_envelope(r, S, env)
    entries = await stream_entries(r, S)  # asserts the single `data` field
    assert entries == {entry_id: env}


async def test_decision_hash_fields_and_repeat(r: Any) -> None:
    env = envelope()
    entry_id = await publish_envelope(r, S, env)
    key = await publish_decision_hash(r, env)
    t = env.decision.target
    assert key == decision_hash_key(t.ticker, t.trade_date)
    fields = await read_hash(r, env)
    assert CONTRACT_FIELDS | {"entry_id"} <= set(fields)
    assert fields == {**hash_fields(env, env.model_dump_json()), "entry_id": entry_id}
    assert fields["entry_id"] == entry_id
    assert decode_envelope(fields["json"]) == env
    assert (fields["ticker"], fields["trade_date"], fields["verdict"]) == (
        "NVDA",
        "2026-05-11",
        "BUY",
    )
    assert fields["correlation_id"] == env.correlation_id
    assert fields["confidence"] == str(env.decision.synthesis.confidence)
    assert await publish_decision_hash(r, env) == key
    assert await read_hash(r, env) == fields
    assert await r.xlen(S) == 1


async def test_hash_before_stream_raises_and_writes_nothing(r: Any) -> None:
    env = envelope()
    with pytest.raises(NotPublishedError, match=env.correlation_id):
        await publish_decision_hash(r, env)
    assert await read_hash(r, env) == {}
    assert await r.xlen(S) == 0


@pytest.mark.parametrize("path", ["many", "separate"])
async def test_older_decision_never_replaces_newer_unless_forced(r: Any, path: str) -> None:
    newer = envelope(verdict="SELL", published_at=T0 + timedelta(minutes=5))
    older = envelope(verdict="BUY", published_at=T0)

    async def publish(env: Any, force: bool = False) -> str:
        if path == "many":
            (res,) = await publish_many(r, [env], force=force)
            return res.entry_id
        entry_id = await publish_envelope(r, S, env, force=force)
        await publish_decision_hash(r, env, force=force)
        return entry_id

    newer_id = await publish(newer)
    older_id = await publish(older)
    assert older_id != newer_id  # different content: it is on the stream (a log) ...
    fields = await read_hash(r, newer)
    assert (fields["verdict"], fields["entry_id"]) == ("SELL", newer_id)  # ... not the hash
    await publish(older, force=True)
    fields = await read_hash(r, newer)
    assert (fields["verdict"], fields["correlation_id"]) == ("BUY", older.correlation_id)
    assert fields["entry_id"] == older_id
    await publish(newer)  # newer again (a retry): wins back, no new entry
    assert (await read_hash(r, newer))["entry_id"] == newer_id
    assert await r.xlen(S) == 2


async def test_publish_many_reports_older_hash_not_written(r: Any) -> None:
    newer = envelope(verdict="SELL", published_at=T0 + timedelta(seconds=1))
    older = envelope(verdict="HOLD", published_at=T0)
    res_new, res_old = await publish_many(r, [newer, older])
    assert (res_new.created, res_new.hash_written) == (True, True)
    assert (res_old.created, res_old.hash_written) == (True, False)
    assert (await read_hash(r, newer))["entry_id"] == res_new.entry_id


async def test_equal_times_are_ordered_by_correlation_id(r: Any) -> None:
    a = envelope(verdict="SELL", published_at=T0, correlation_id="a" * 32)
    b = envelope(verdict="BUY", published_at=T0, correlation_id="b" * 32)
    await publish_many(r, [b, a])
    assert (await read_hash(r, a))["correlation_id"] == "b" * 32
    await publish_many(r, [a])
    assert (await read_hash(r, a))["correlation_id"] == "b" * 32


async def test_legacy_hash_without_published_ts_counts_as_older(r: Any) -> None:
    env = envelope()
    t = env.decision.target
    await r.hset(
        decision_hash_key(t.ticker, t.trade_date),
        mapping={"json": "{}", "verdict": "HOLD", "published_at": "2099-01-01"},
    )
    (res,) = await publish_many(r, [env])
    assert res.hash_written
    assert (await read_hash(r, env))["verdict"] == "BUY"


async def test_identical_content_new_correlation_id_returns_existing_entry(r: Any) -> None:
    first = envelope(published_at=T0)
    rerun = envelope(published_at=T0 + timedelta(hours=1))  # same decision, new id and time
    assert rerun.correlation_id != first.correlation_id
    first_id = await publish_envelope(r, S, first)
    assert await append_envelope(r, S, rerun) == (first_id, False)
    (res,) = await publish_many(r, [envelope(published_at=T0 + timedelta(hours=2))])
    assert (res.entry_id, res.created) == (first_id, False)
    assert await r.xlen(S) == 1
    forced, created = await append_envelope(r, S, envelope(), force=True)
    assert created and forced != first_id
    assert await r.xlen(S) == 2
    changed = envelope(confidence=0.5)  # different content: appended
    assert await publish_envelope(r, S, changed) not in {first_id, forced}
    assert await r.xlen(S) == 3


async def test_a_forced_publish_is_itself_idempotent(r: Any) -> None:
    env = envelope()
    first = await publish_envelope(r, S, env, force=True)
    assert await publish_envelope(r, S, env, force=True) == first
    (res,) = await publish_many(r, [env], force=True)
    assert (res.entry_id, res.created) == (first, False)
    assert await r.xlen(S) == 1


async def test_records_written_with_the_entry(r: Any) -> None:
    env = envelope()
    entry_id = await publish_envelope(r, S, env, idempotency_ttl=3600)
    cid_key = correlation_key(S, env.correlation_id)
    record = (await r.get(cid_key)).decode().split(" ")
    synthesis = env.decision.synthesis
    assert record == [
        entry_id,
        Serialised.of(env).digest,
        synthesis.verdict,
        str(synthesis.confidence),
    ]
    assert 3500 < await r.ttl(cid_key) <= 3600
    t = env.decision.target
    latest = await r.hgetall(latest_key(S, t.ticker, t.trade_date))
    assert latest[b"entry_id"].decode() == entry_id
    assert len(latest[b"digest"]) == 64
    assert DEFAULT_IDEMPOTENCY_TTL == 30 * 24 * 3600


async def test_publish_many_per_envelope_results_and_together(r: Any) -> None:
    envs = many_envelopes(450, tickers=30)
    results = await publish_many(r, envs, chunk_size=200)
    assert [res.correlation_id for res in results] == [e.correlation_id for e in envs]
    assert all(res.created and res.hash_written for res in results)
    entries = await stream_entries(r, S)
    assert len(entries) == 450
    for env, res in zip(envs, results, strict=True):
        assert entries[res.entry_id] == env
        assert res.hash_key == decision_hash_key(res.ticker, res.trade_date)
        assert (await r.hget(res.hash_key, "entry_id")).decode() == res.entry_id
    again = await publish_many(r, envs)
    assert [(a.entry_id, a.created) for a in again] == [(res.entry_id, False) for res in results]
    assert await r.xlen(S) == 450


async def test_duplicate_in_one_batch_is_one_entry(r: Any) -> None:
    env = envelope()
    first, second = await publish_many(r, [env, env])
    assert (first.created, second.created, second.entry_id) == (True, False, first.entry_id)
    assert await r.xlen(S) == 1


async def test_lost_scripts_are_loaded_again(r: Any) -> None:
    if not hasattr(r, "script_flush"):
        pytest.skip("the embedded store cannot forget its scripts")
    env = envelope()
    first = await publish_envelope(r, S, env)
    await r.script_flush()
    assert await publish_envelope(r, S, env) == first
    await r.script_flush()
    (res,) = await publish_many(r, [envelope(confidence=0.1)])
    assert res.created


@pytest.mark.parametrize(
    ("policy", "low", "high"),
    [
        (TrimPolicy(50, approximate=False), 50, 50),
        (TrimPolicy(50), 50, 150),
        (TrimPolicy(0), 401, 401),
    ],
    ids=["exact", "approximate", "never"],
)
async def test_trimming_keeps_the_stream_about_maxlen(
    r: Any, policy: TrimPolicy, low: int, high: int
) -> None:
    envs = many_envelopes(400, tickers=40)
    for start in range(0, 400, 40):
        results = await publish_many(r, envs[start : start + 40], trim=policy)
    last_id = await publish_envelope(r, S, envelope("ZZZ"), trim=policy)
    assert low <= await r.xlen(S) <= high
    kept = list(await stream_entries(r, S))
    assert kept[-1] == last_id and results[-1].entry_id in kept  # the newest are kept


def test_default_trim_policy_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TrimPolicy() == TrimPolicy(100_000, approximate=True)
    monkeypatch.setenv("TI_STREAM_MAXLEN", "500")
    monkeypatch.setenv("TI_STREAM_TRIM_APPROXIMATE", "false")
    assert TrimPolicy.from_settings() == TrimPolicy(500, approximate=False)


def _decided_otherwise(env: Any) -> Any:
    """The same run (correlation id) deciding otherwise: a retry whose arena answered anew."""
    synthesis = env.decision.synthesis.model_copy(update={"verdict": "SELL", "confidence": 0.4})
    decision = env.decision.model_copy(update={"synthesis": synthesis})
    return env.model_copy(update={"decision": decision})


async def test_a_retry_that_decided_otherwise_reports_the_entry_consumers_see(r: Any) -> None:
    env = envelope()
    (first,) = await publish_many(r, [env])
    retry = _decided_otherwise(env)
    (again,) = await publish_many(r, [retry])
    assert again.entry_id == first.entry_id and not again.created
    assert again.held == HeldDecision(first.entry_id, "BUY", env.decision.synthesis.confidence)
    assert await r.xlen(S) == 1
    t = env.decision.target
    held_hash = await r.hgetall(decision_hash_key(t.ticker, t.trade_date))
    assert held_hash[b"verdict"] == b"BUY"  # the hash never names the new decision
    with pytest.raises(NotPublishedError, match="already holds BUY .* the new SELL 0.40 was not"):
        await publish_envelope(r, S, retry)
    with pytest.raises(NotPublishedError, match="the new SELL 0.40 was not published"):
        await publish_decision_hash(r, retry, stream_name=S)
    (same,) = await publish_many(r, [env])  # the original decision again: no clash
    assert same.held is None and same.entry_id == first.entry_id
