"""The publishing contract, on fakeredis, a real redis-server and the embedded store alike.

Everything here is single-server logic (scripts, keys, ordering, trimming) where fakeredis
with Lua is faithful; faults and concurrency across connections are in test_publish_faults.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.publish_workload import assert_exactly_once, envelope, many_envelopes, stream_entries
from ti_core import (
    DEFAULT_STREAM_NAME,
    InvalidStateError,
    NotPublishedError,
    PublishError,
    TiSettings,
    build_envelope_from_state,
    connect,
    decision_hash_key,
    decode_envelope,
)
from ti_core.keys import correlation_key, latest_key
from ti_core.publish import (
    DEFAULT_IDEMPOTENCY_TTL,
    TrimPolicy,
    append_envelope,
    content_digest,
    hash_fields,
    payload_and_digest,
    publish_decision_hash,
    publish_envelope,
    publish_many,
)

S = DEFAULT_STREAM_NAME
CONTRACT_FIELDS = {"json", "ticker", "trade_date", "verdict", "confidence", "ensemble_score",
                   "published_at", "correlation_id", "arena_id"}
T0 = datetime(2026, 5, 11, 21, 0, tzinfo=UTC)

Opener = Callable[[], Any]


@pytest.fixture(params=["fake", "real", "embedded"])
async def clients(request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    """A factory of clients that all see the same data (first call: the main client)."""
    async with AsyncExitStack() as stack:
        if request.param == "fake":
            import fakeredis

            server = fakeredis.FakeServer()

            def open_fake() -> Any:
                client = fakeredis.FakeAsyncRedis(server=server)
                stack.push_async_callback(client.aclose)
                return client

            yield open_fake
        elif request.param == "real":
            from ti_core.connection import open_redis

            url = request.getfixturevalue("redis_url")

            def open_real() -> Any:
                client = open_redis(url)
                stack.push_async_callback(client.aclose)
                return client

            yield open_real
        else:
            store = await stack.enter_async_context(connect(settings=TiSettings()))
            yield lambda: store


@pytest.fixture
def r(clients: Opener) -> Any:
    return clients()


async def h(client: Any, env: Any) -> dict[str, str]:
    t = env.decision.target
    raw = await client.hgetall(decision_hash_key(t.ticker, t.trade_date))
    return {k.decode(): v.decode() for k, v in raw.items()}


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
    fields = await h(r, env)
    assert CONTRACT_FIELDS | {"entry_id"} <= set(fields)
    assert fields == {**hash_fields(env, env.model_dump_json()), "entry_id": entry_id}
    assert fields["entry_id"] == entry_id
    assert decode_envelope(fields["json"]) == env
    assert (fields["ticker"], fields["trade_date"], fields["verdict"]) == (
        "NVDA", "2026-05-11", "BUY")
    assert fields["correlation_id"] == env.correlation_id
    assert fields["confidence"] == str(env.decision.synthesis.confidence)
    assert await publish_decision_hash(r, env) == key
    assert await h(r, env) == fields
    assert await r.xlen(S) == 1


async def test_hash_before_stream_raises_and_writes_nothing(r: Any) -> None:
    env = envelope()
    with pytest.raises(NotPublishedError, match=env.correlation_id):
        await publish_decision_hash(r, env)
    assert await h(r, env) == {}
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
    fields = await h(r, newer)
    assert (fields["verdict"], fields["entry_id"]) == ("SELL", newer_id)  # ... not the hash
    await publish(older, force=True)
    fields = await h(r, newer)
    assert (fields["verdict"], fields["correlation_id"]) == ("BUY", older.correlation_id)
    assert fields["entry_id"] == older_id
    await publish(newer)  # newer again (a retry): wins back, no new entry
    assert (await h(r, newer))["entry_id"] == newer_id
    assert await r.xlen(S) == 2


async def test_publish_many_reports_older_hash_not_written(r: Any) -> None:
    newer = envelope(verdict="SELL", published_at=T0 + timedelta(seconds=1))
    older = envelope(verdict="HOLD", published_at=T0)
    res_new, res_old = await publish_many(r, [newer, older])
    assert (res_new.created, res_new.hash_written) == (True, True)
    assert (res_old.created, res_old.hash_written) == (True, False)
    assert (await h(r, newer))["entry_id"] == res_new.entry_id


async def test_equal_times_are_ordered_by_correlation_id(r: Any) -> None:
    a = envelope(verdict="SELL", published_at=T0, correlation_id="a" * 32)
    b = envelope(verdict="BUY", published_at=T0, correlation_id="b" * 32)
    await publish_many(r, [b, a])
    assert (await h(r, a))["correlation_id"] == "b" * 32
    await publish_many(r, [a])
    assert (await h(r, a))["correlation_id"] == "b" * 32


async def test_legacy_hash_without_published_ts_counts_as_older(r: Any) -> None:
    env = envelope()
    t = env.decision.target
    await r.hset(decision_hash_key(t.ticker, t.trade_date),
                 mapping={"json": "{}", "verdict": "HOLD", "published_at": "2099-01-01"})
    (res,) = await publish_many(r, [env])
    assert res.hash_written
    assert (await h(r, env))["verdict"] == "BUY"


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
    assert (await r.get(cid_key)).decode() == entry_id
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
    [(TrimPolicy(50, approximate=False), 50, 50), (TrimPolicy(50), 50, 150),
     (TrimPolicy(0), 401, 401)],
    ids=["exact", "approximate", "never"],
)
async def test_trimming_keeps_the_stream_about_maxlen(
    r: Any, policy: TrimPolicy, low: int, high: int
) -> None:
    envs = many_envelopes(400, tickers=40)
    for start in range(0, 400, 40):
        results = await publish_many(r, envs[start:start + 40], trim=policy)
    last_id = await publish_envelope(r, S, envelope("ZZZ"), trim=policy)
    assert low <= await r.xlen(S) <= high
    kept = list(await stream_entries(r, S))
    assert kept[-1] == last_id and results[-1].entry_id in kept  # the newest are kept


def test_default_trim_policy_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TrimPolicy() == TrimPolicy(100_000, approximate=True)
    monkeypatch.setenv("TI_STREAM_MAXLEN", "500")
    monkeypatch.setenv("TI_STREAM_TRIM_APPROXIMATE", "false")
    assert TrimPolicy.from_settings() == TrimPolicy(500, approximate=False)


async def test_wrong_type_key_fails_before_any_write(r: Any) -> None:
    env = envelope()
    t = env.decision.target
    await r.set(decision_hash_key(t.ticker, t.trade_date), "not a hash")
    with pytest.raises(PublishError, match="WRONGTYPE"):
        await publish_many(r, [env])
    assert await r.xlen(S) == 0
    assert await r.get(correlation_key(S, env.correlation_id)) is None


def test_payload_and_digest_match_the_plain_serialisation(sample_states: dict[str, Any]) -> None:
    tricky = envelope(correlation_id="c" * 32)
    decision = tricky.decision.model_copy(update={"phase_timings": [
        {"published_at": "x", "correlation_id": "c" * 32, "arena_id": "\"},\n\u2028é"}]})
    tricky = tricky.model_copy(update={
        "decision": decision, "arena_id": 'a"rena\\', "meta": {"published_at": 1, "é": [None]}})
    envs = [build_envelope_from_state(s) for s in sample_states.values()] + [envelope(), tricky]
    for env in envs:
        payload, digest = payload_and_digest(env)
        assert payload == env.model_dump_json()
        assert digest == content_digest(env)
    later = tricky.model_copy(update={"published_at": T0, "correlation_id": "d" * 32,
                                      "meta": {}})
    assert payload_and_digest(later)[1] == payload_and_digest(tricky)[1]
    other = tricky.model_copy(update={"arena_id": "other"})
    assert payload_and_digest(other)[1] != payload_and_digest(tricky)[1]


def test_hiredis_packing_sends_the_same_bytes_as_redis_py() -> None:
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    from ti_core.connection import open_redis

    ours = open_redis("redis://127.0.0.1:1/0").connection_pool.make_connection()
    plain = Connection()
    env = envelope()
    commands = [
        ("EVALSHA", "0" * 40, 2, "k:1", "k:2", env.model_dump_json(), "é", 1.5, -3, b"\x00\xff"),
        ("CLIENT SETNAME", "ti"), (b"CLIENT SETINFO", b"LIB-NAME", "x"), ("XADD", "s", "*",
                                                                          "data", "x" * 70_000),
    ]
    for command in commands:
        assert b"".join(ours.pack_command(*command)) == b"".join(plain.pack_command(*command))
    assert len(ours.pack_command(*commands[0])) == 1  # it went through hiredis
    for bad in (True, None, [1]):
        with pytest.raises(DataError):
            ours.pack_command("SET", "k", bad)


async def test_publish_many_is_lazy_and_a_failing_source_leaves_whole_chunks(r: Any) -> None:
    envs = many_envelopes(250)
    pulled = []

    def source() -> Any:
        for env in envs:
            pulled.append(env)
            yield env
        raise InvalidStateError("the arena state for the next one is broken")

    with pytest.raises(InvalidStateError, match="broken"):
        await publish_many(r, source(), chunk_size=100)
    assert len(pulled) == 250
    assert await r.xlen(S) == 200  # the two full chunks sent before the failure, whole
    results = await publish_many(r, envs, chunk_size=100)  # the caller's retry
    assert [res.created for res in results] == [False] * 200 + [True] * 50
    with pytest.raises(ValueError, match="chunk_size"):
        await publish_many(r, envs, chunk_size=0)


async def test_a_sent_chunk_reaches_redis_while_the_next_is_being_built(
    real_redis: Any, redis_url: str
) -> None:
    """The overlap ``publish_many`` promises: a generator that builds envelopes runs while the
    chunk before is with Redis (if the chunk were still in our buffers, Redis would sit idle).
    The first chunk is awaited whole (its connection may need opening); later ones overlap."""
    import redis

    envs = many_envelopes(300)
    lengths = []

    def source() -> Any:
        with redis.Redis.from_url(redis_url) as watcher:
            for i, env in enumerate(envs):
                if i in (100, 200):  # the first envelope of the next chunk is being built
                    deadline = time.monotonic() + 5
                    while watcher.xlen(S) < i and time.monotonic() < deadline:
                        time.sleep(0.005)  # the event loop is blocked, as in a real build
                    lengths.append(watcher.xlen(S))
                yield env

    results = await publish_many(real_redis, source(), chunk_size=100)
    assert lengths == [100, 200]
    assert len(results) == 300 and all(r.created for r in results)


async def test_a_failing_envelope_stops_its_script_call_whole_envelopes_only(r: Any) -> None:
    good, bad, later = envelope("GOOD"), envelope("BAD"), envelope("LATER")
    bad_key = decision_hash_key("BAD", "2026-05-11")
    await r.set(bad_key, "not a hash")
    with pytest.raises(PublishError, match="WRONGTYPE"):
        await publish_many(r, [good, bad, later])
    entries = await stream_entries(r, S)
    assert [e.correlation_id for e in entries.values()] == [good.correlation_id]
    assert (await h(r, good))["correlation_id"] == good.correlation_id  # entry + hash, whole
    assert await h(r, later) == {}
    assert await r.get(correlation_key(S, bad.correlation_id)) is None
    await r.delete(bad_key)
    results = await publish_many(r, [good, bad, later])  # the caller's retry, once fixed
    assert [res.created for res in results] == [False, True, True]
    await assert_exactly_once(r, S, [good, bad, later])


async def test_bad_arguments_are_refused_before_redis(r: Any) -> None:
    for ttl in (0, -5, 1.5, True):
        with pytest.raises(InvalidStateError, match="idempotency_ttl"):
            await publish_envelope(r, S, envelope(), idempotency_ttl=ttl)
        with pytest.raises(InvalidStateError, match="idempotency_ttl"):
            await publish_many(r, [envelope()], idempotency_ttl=ttl)
    with pytest.raises(InvalidStateError, match="stream name"):
        await publish_envelope(r, "bad key*", envelope())
    assert await r.xlen(S) == 0


def test_argv_follows_the_hash_order_the_scripts_name(sample_states: dict[str, Any]) -> None:
    """``argv`` builds its values directly; they must stay in ``_HASH_ORDER``'s order."""
    from ti_core.publish_scripts import _HASH_ORDER, _scalar_fields, argv

    for state in sample_states.values():
        env = build_envelope_from_state(state)
        values = argv(env, "payload", "digest", 60, False)
        fields = _scalar_fields(env)
        assert values[4:6] == [fields["published_ts"], env.correlation_id]
        assert values[6:] == [fields[name] for name in _HASH_ORDER]
