"""``ti verify`` / ``verify_store``: each inconsistency is found, healthy states are not flagged."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flows.cli import main
from ti_core.build.builder import build_envelope_from_state
from ti_core.contract.keys import DEFAULT_STREAM_NAME, decision_hash_key
from ti_core.publish.publisher import TrimPolicy, publish_envelope, publish_many
from ti_core.transport.connection import connect
from ti_core.verify import INCONSISTENT, verify_store

pytestmark = pytest.mark.redis_server
STREAM = DEFAULT_STREAM_NAME
NO_TRIM = TrimPolicy(maxlen=0)


def _envelopes(states: dict[str, dict[str, Any]]) -> list[Any]:
    return [build_envelope_from_state(s) for s in states.values()]


def _state(ticker: str, day: str, verdict: str = "BUY") -> dict[str, Any]:
    return {
        "target": {"ticker": ticker, "trade_date": day},
        "synthesis_verdict": verdict,
        "synthesis_confidence": 0.7,
        "synthesis_score": 0.4,
        "arena_id": f"a-{ticker}",
    }


async def test_consistent_store_over_several_pages(real_redis, sample_states) -> None:
    envelopes = _envelopes(sample_states)
    envelopes += [build_envelope_from_state(_state(f"T{i}", "2026-05-11")) for i in range(4)]
    await publish_many(real_redis, envelopes, trim=NO_TRIM)
    report = await verify_store(real_redis, page_size=2)
    assert report.ok, report.to_dict()
    assert (report.hashes, report.entries, report.stream_length) == (7, 7, 7)
    assert report.to_dict()["counts"] == {k: 0 for k in report.to_dict()["counts"]}


async def test_revised_decision_is_superseded_not_a_problem(real_redis, sample_states) -> None:
    await publish_many(real_redis, [build_envelope_from_state(_state("NVDA", "2026-05-11"))])
    await publish_many(
        real_redis, [build_envelope_from_state(_state("NVDA", "2026-05-11", "SELL"))]
    )
    report = await verify_store(real_redis)
    assert report.ok and report.counts == {"superseded": 1}


async def test_entry_without_hash_is_an_orphan(real_redis) -> None:
    env = build_envelope_from_state(_state("AAPL", "2026-05-11"))
    entry = await publish_envelope(real_redis, STREAM, env)  # the hash write never happened
    report = await verify_store(real_redis)
    assert not report.ok
    assert report.counts == {"orphan_entry": 1}
    assert entry in report.examples["orphan_entry"][0]


async def test_deleted_entry_is_missing_and_trimmed_entry_is_not(real_redis) -> None:
    envs = [build_envelope_from_state(_state(t, "2026-05-11")) for t in ("A", "B", "C")]
    results = await publish_many(real_redis, envs, trim=NO_TRIM)
    # Exact trim to 2 drops A's entry from the head: expected, "trimmed".
    await real_redis.xtrim(STREAM, maxlen=2, approximate=False)
    report = await verify_store(real_redis, maxlen=2, approximate=False)
    assert report.ok and report.counts == {"trimmed": 1}
    # Deleting C's entry from the middle of the stream is not trimming.
    await real_redis.xdel(STREAM, results[2].entry_id)
    report = await verify_store(real_redis, maxlen=2, approximate=False)
    assert not report.ok
    assert report.counts == {"trimmed": 1, "missing_entry": 1}
    assert decision_hash_key("C", "2026-05-11") in report.examples["missing_entry"][0]


async def test_everything_trimmed_still_reads_as_trimmed(real_redis) -> None:
    await publish_many(real_redis, [build_envelope_from_state(_state("A", "2026-05-11"))])
    await real_redis.xtrim(STREAM, maxlen=0, approximate=False)
    report = await verify_store(real_redis)
    assert report.ok and report.counts == {"trimmed": 1}
    await real_redis.delete(STREAM)  # the stream itself is gone: that is not trimming
    report = await verify_store(real_redis)
    assert report.counts == {"missing_entry": 1}


async def test_hash_pointing_at_another_decision(real_redis) -> None:
    a, b = (build_envelope_from_state(_state(t, "2026-05-11")) for t in ("A", "B"))
    ra, rb = await publish_many(real_redis, [a, b])
    await real_redis.hset(ra.hash_key, "entry_id", rb.entry_id)
    report = await verify_store(real_redis)
    assert report.counts.get("content_mismatch") == 1
    # A's entry is now pointed at by nothing while A's hash exists: superseded, not orphan.
    assert set(report.counts) == {"content_mismatch", "superseded"}


async def test_bad_hash_and_bad_entry_and_wrong_key(real_redis) -> None:
    a = build_envelope_from_state(_state("A", "2026-05-11"))
    (ra,) = await publish_many(real_redis, [a])
    await real_redis.xadd(STREAM, {"data": b"\xff not json"})
    await real_redis.hset(decision_hash_key("B", "2026-05-11"), mapping={"json": "[1]"})
    # A copy of A's hash under C's key: it names A's entry, but the key says C.
    await real_redis.hset(
        decision_hash_key("C", "2026-05-11"), mapping=await real_redis.hgetall(ra.hash_key)
    )
    await real_redis.set(decision_hash_key("D", "2026-05-11"), "a string, not a hash")
    report = await verify_store(real_redis)
    assert report.counts == {"undecodable_entry": 1, "undecodable_hash": 2, "key_mismatch": 1}
    assert set(report.counts) <= set(INCONSISTENT)


async def test_hash_without_entry_id_is_unlinked(real_redis) -> None:
    env = build_envelope_from_state(_state("A", "2026-05-11"))
    payload = env.model_dump_json()
    await real_redis.xadd(STREAM, {"data": payload})  # what the original module wrote
    await real_redis.hset(decision_hash_key("A", "2026-05-11"), mapping={"json": payload})
    report = await verify_store(real_redis)
    assert report.ok and report.counts == {"unlinked": 1}


async def test_stream_over_its_bound(real_redis) -> None:
    envs = [build_envelope_from_state(_state(f"T{i}", "2026-05-11")) for i in range(5)]
    await publish_many(real_redis, envs, trim=NO_TRIM)
    assert (await verify_store(real_redis, maxlen=4, approximate=True)).ok  # within ~ slack
    report = await verify_store(real_redis, maxlen=4, approximate=False)
    assert report.counts == {"over_bound": 1}
    assert (await verify_store(real_redis, maxlen=0, approximate=False)).ok  # 0: unbounded


async def test_embedded_store_is_audited_too(sample_states) -> None:
    async with connect() as store:
        await publish_many(store, _envelopes(sample_states))
        await publish_envelope(store, STREAM, build_envelope_from_state(_state("Z", "2026-05-11")))
        report = await verify_store(store, page_size=2)
    assert (report.hashes, report.entries) == (3, 4)
    assert report.counts == {"orphan_entry": 1}


async def test_cli_exit_codes_and_json(real_redis, redis_url, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    await publish_many(real_redis, [build_envelope_from_state(_state("A", "2026-05-11"))])
    assert await _cli(["verify", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["hashes"] == 1 and out["stream_length"] == 1
    await publish_envelope(real_redis, STREAM, build_envelope_from_state(_state("B", "2026-05-11")))
    assert await _cli(["verify"]) == 2
    text = capsys.readouterr().out
    assert "INCONSISTENT (1 problems)" in text and "orphan_entry: 1" in text


async def test_cli_unreachable_redis_is_one_line_exit_1(monkeypatch, capsys) -> None:
    from tests.redisproc import free_port

    monkeypatch.setenv("TI_REDIS_URL", f"redis://:secret@127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("TI_RETRIES", "0")
    assert await _cli(["verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ti: Redis at redis://127.0.0.1:") and "secret" not in err
    assert " unavailable: " in err and err.count("\n") == 1


async def _cli(argv: list[str]) -> int:
    import asyncio

    # ``ti verify`` runs its own event loop: call it from a worker thread.
    return await asyncio.to_thread(main, argv)


async def test_a_lost_reply_at_any_call_is_the_one_line_unavailable_error(
    redis_proc: Any, redis_url: str
) -> None:
    """Every call of the audit is behind the boundary, XINFO STREAM too (it was the one call
    left unmapped: a raw redis-py ConnectionError escaped). It runs when the stream is present
    but empty, to tell trimmed entries from missing ones."""
    from tests.faults import LossyProxy
    from ti_core.errors import RedisUnavailableError
    from ti_core.settings import TiSettings
    from ti_core.transport.connection import open_redis

    with LossyProxy(redis_proc.port) as proxy:
        client = open_redis(proxy.url, TiSettings(retries=0))
        try:
            await publish_many(client, [build_envelope_from_state(_state("A", "2026-05-11"))])
            await client.xtrim(STREAM, maxlen=0, approximate=False)
            assert (await verify_store(client)).counts == {"trimmed": 1}  # XINFO answered
            for command in (b"XINFO", b"XRANGE", b"SCAN"):
                proxy.swallow_reply(command)
                with pytest.raises(RedisUnavailableError) as lost:
                    await verify_store(client)
                line = str(lost.value)
                assert line.startswith(f"Redis at {proxy.url} unavailable: ConnectionError")
                assert "\n" not in line, command
        finally:
            await client.aclose()
