"""``publish_many``'s batching and the wire forms it sends, on the same three stores as the
contract tests (fixtures ``clients``/``r`` in conftest), plus the real-server overlap check.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.publish_workload import (
    assert_exactly_once,
    envelope,
    many_envelopes,
    read_hash,
    stream_entries,
)
from ti_core import (
    DEFAULT_STREAM_NAME,
    InvalidStateError,
    PublishError,
    build_envelope_from_state,
    decision_hash_key,
)
from ti_core.contract.keys import correlation_key
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.contract.wire import Serialised, content_digest, serialise
from ti_core.publish.publisher import publish_envelope, publish_many

S = DEFAULT_STREAM_NAME
T0 = datetime(2026, 5, 11, 21, 0, tzinfo=UTC)


async def test_wrong_type_key_fails_before_any_write(r: Any) -> None:
    env = envelope()
    t = env.decision.target
    await r.set(decision_hash_key(t.ticker, t.trade_date), "not a hash")
    with pytest.raises(PublishError, match="WRONGTYPE"):
        await publish_many(r, [env])
    assert await r.xlen(S) == 0
    assert await r.get(correlation_key(S, env.correlation_id)) is None


def _tricky() -> TradingIntelligenceEnvelope:
    """Text that looks like the envelope's own fields inside the decision and the meta."""
    tricky = envelope(correlation_id="c" * 32)
    decision = tricky.decision.model_copy(
        update={
            "phase_timings": [
                {"published_at": "x", "correlation_id": "c" * 32, "arena_id": '"},\n\u2028é'}
            ]
        }
    )
    tricky = tricky.model_copy(
        update={
            "decision": decision,
            "arena_id": 'a"rena\\',
            "meta": {"published_at": 1, "é": [None]},
        }
    )
    return tricky


def test_serialise_matches_the_plain_serialisation(sample_states: dict[str, Any]) -> None:
    tricky = _tricky()
    envs = [build_envelope_from_state(s) for s in sample_states.values()] + [envelope(), tricky]
    for env in envs:
        payload, digest = serialise(env)
        assert payload == env.model_dump_json()
        assert digest == content_digest(env)
    later = tricky.model_copy(update={"published_at": T0, "correlation_id": "d" * 32, "meta": {}})
    assert serialise(later)[1] == serialise(tricky)[1]
    other = tricky.model_copy(update={"arena_id": "other"})
    assert serialise(other)[1] != serialise(tricky)[1]


def test_read_keeps_the_text_and_reads_the_digest_from_it(sample_states: dict[str, Any]) -> None:
    """What a publish task does with build-envelope's text: the same envelope, the text
    itself as the payload (not a re-serialised copy), the digest ``serialise`` gave."""
    envs = [build_envelope_from_state(s) for s in sample_states.values()] + [envelope(), _tricky()]
    for env in envs:
        payload, digest = serialise(env)
        wire = Serialised.read(payload)
        assert wire.payload is payload
        assert (wire.envelope, wire.digest) == (env, digest)
        assert Serialised.of(env) == wire


def test_read_serialises_text_of_another_layout_in_the_canonical_form() -> None:
    env = _tricky()
    payload, digest = serialise(env)
    indented = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    wire = Serialised.read(indented)
    assert (wire.envelope, wire.payload, wire.digest) == (env, payload, digest)


def test_hiredis_packing_sends_the_same_bytes_as_redis_py() -> None:
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    from ti_core.transport.connection import open_redis

    ours = open_redis("redis://127.0.0.1:1/0").connection_pool.make_connection()
    plain = Connection()
    env = envelope()
    commands = [
        ("EVALSHA", "0" * 40, 2, "k:1", "k:2", env.model_dump_json(), "é", 1.5, -3, b"\x00\xff"),
        ("CLIENT SETNAME", "ti"),
        (b"CLIENT SETINFO", b"LIB-NAME", "x"),
        ("XADD", "s", "*", "data", "x" * 70_000),
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
    # entry + hash, whole
    assert (await read_hash(r, good))["correlation_id"] == good.correlation_id
    assert await read_hash(r, later) == {}
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


def test_argv_follows_the_layout_the_scripts_name(sample_states: dict[str, Any]) -> None:
    """``argv`` gives its values in ``ARGV_FIELDS`` order; the scripts are generated from it."""
    from ti_core.contract.hash_fields import hash_fields
    from ti_core.publish.scripts import ARGV_FIELDS, argv

    for state in sample_states.values():
        env = build_envelope_from_state(state)
        values = argv(env, "payload", "digest", 60, False)
        fields = hash_fields(env, "payload")
        named = dict(zip(ARGV_FIELDS, values, strict=True))
        assert named["payload"] == fields["json"]
        assert [named["digest"], named["ttl"], named["force"]] == ["digest", "60", "0"]
        assert {k: v for k, v in named.items() if k in fields} == {
            k: v for k, v in fields.items() if k in named
        }
