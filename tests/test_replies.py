"""ti_core.transport.replies: each kind of reply the core reads gives one result, whatever the
client: a real redis-server over RESP2 and RESP3 (bytes, and str with ``decode_responses``),
fakeredis over both, and the embedded store. Then the shapes no client here sends any more
(RESP2's flat lists, older redis-py's bytes field names, Redis 6.2's XAUTOCLAIM), and the
consumers run end to end on a RESP3 client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from tests.test_consume import envelope
from ti_core.consume.group_lag import group_lag
from ti_core.consume.groups import GroupReader
from ti_core.consume.lookup import read_decision
from ti_core.consume.reader import read_batch, stream_last_id
from ti_core.contract.keys import DEFAULT_STREAM_NAME
from ti_core.publish.publisher import publish_many
from ti_core.transport.replies import (
    autoclaim,
    entries,
    fields,
    group_infos,
    pending_count,
    read_entries,
    stream_info,
    stream_info_of,
    text,
    value_of,
)
from ti_core.verify import verify_store

STREAM = "ti:test:replies"
HASH = "ti:test:replies-hash"
CLIENTS = ["real", "real-resp3", "real-resp3-text", "fake", "fake-resp3", "embedded"]


@pytest.fixture(params=CLIENTS)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """One client of each kind and protocol (the embedded store speaks no protocol)."""
    async with AsyncExitStack() as stack:
        kind = request.param
        if kind.startswith("real"):
            import redis.asyncio as redis_asyncio

            url = request.getfixturevalue("redis_url")
            opened = redis_asyncio.Redis.from_url(
                url, protocol=3 if "resp3" in kind else 2, decode_responses=kind.endswith("text")
            )
        elif kind.startswith("fake"):
            import fakeredis

            opened = fakeredis.FakeAsyncRedis(protocol=3 if "resp3" in kind else 2)
        else:
            from ti_core import TiSettings, connect

            yield await stack.enter_async_context(connect(settings=TiSettings()))
            return
        stack.push_async_callback(opened.aclose)
        yield opened


async def _two_entries(client: Any) -> tuple[str, str]:
    first = text(await client.xadd(STREAM, {"data": "one"}))
    second = text(await client.xadd(STREAM, {"data": "two", "extra": "x"}))
    return first, second


def _data(read: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(entry_id, text(value_of(raw, "data"))) for entry_id, raw in read]


async def test_xrange_and_xread_give_ids_as_text_and_readable_fields(client: Any) -> None:
    first, second = await _two_entries(client)
    expected = [(first, "one"), (second, "two")]
    assert _data(entries(await client.xrange(STREAM, "-", "+"))) == expected
    assert _data(read_entries(await client.xread({STREAM: "0"}, count=10))) == expected
    assert read_entries(await client.xread({STREAM: second}, count=10)) == []
    assert read_entries(await client.xread({STREAM: "$"}, count=1, block=1)) == []
    (_, raw), *_ = entries(await client.xrange(STREAM, second, second))
    assert sorted(fields(raw)) == ["data", "extra"] and value_of(raw, "absent") is None


async def test_xreadgroup_alone_and_in_a_multi(client: Any) -> None:
    first, second = await _two_entries(client)
    await client.xgroup_create(STREAM, "g", "0")
    delivered = read_entries(await client.xreadgroup("g", "c", {STREAM: ">"}, count=1))
    assert _data(delivered) == [(first, "one")]
    pipe = client.pipeline(transaction=True)
    pipe.xreadgroup("g", "c", {STREAM: ">"}, count=5)
    pipe.xreadgroup("g", "c", {STREAM: ">"}, count=5)
    pipe.xreadgroup("g", "c", {STREAM: "0"}, count=5)
    new, nothing, own = await pipe.execute()
    assert _data(read_entries(new)) == [(second, "two")]
    assert read_entries(nothing) == []
    assert [entry_id for entry_id, _ in read_entries(own)] == [first, second]


async def test_xinfo_stream(client: Any) -> None:
    assert await stream_info_of(client, STREAM) is None  # no such key
    first, second = await _two_entries(client)
    info = await stream_info_of(client, STREAM)
    assert info is not None
    assert (info.length, info.first_entry_id, info.last_generated_id) == (2, first, second)
    assert info.entries_added in (2, None)  # the embedded store does not count them
    await client.xtrim(STREAM, maxlen=0, approximate=False)
    emptied = stream_info(await client.xinfo_stream(STREAM))
    assert (emptied.length, emptied.first_entry_id, emptied.last_generated_id) == (0, None, second)


async def test_groups_pending_and_autoclaim(client: Any) -> None:
    first, second = await _two_entries(client)
    await client.xgroup_create(STREAM, "g", "0")
    assert pending_count(await client.xpending(STREAM, "g")) == 0
    await client.xreadgroup("g", "c1", {STREAM: ">"}, count=2)
    assert pending_count(await client.xpending(STREAM, "g")) == 2
    (group,) = group_infos(await client.xinfo_groups(STREAM))
    assert (group.name, group.pending, group.last_delivered_id) == ("g", 2, second)
    assert group.consumers == 1
    assert group.entries_read in (2, None) and group.lag in (0, None)
    claimed = autoclaim(await client.xautoclaim(STREAM, "g", "c2", 0, start_id="0-0"))
    assert (claimed.cursor, _data(claimed.claimed)) == ("0-0", [(first, "one"), (second, "two")])
    assert claimed.deleted == []


async def test_hgetall(client: Any) -> None:
    assert fields(await client.hgetall(HASH)) == {}
    await client.hset(HASH, mapping={"json": "{}", "entry_id": "1-0"})
    raw = await client.hgetall(HASH)
    assert {name: text(value) for name, value in fields(raw).items()} == {
        "json": "{}",
        "entry_id": "1-0",
    }
    assert text(value_of(raw, "entry_id")) == "1-0" and value_of(raw, "absent") is None


async def test_the_resp3_clients_do_answer_in_another_shape(redis_url: str) -> None:
    """What makes the tests above worth running twice: XREAD's reply is a list of pairs over
    RESP2 and a mapping over RESP3 (``?protocol=3`` on the URL, as ``open_redis`` takes it)."""
    from ti_core.transport.connection import open_redis

    shapes = []
    for url in (redis_url, f"{redis_url}?protocol=3"):
        client = open_redis(url)
        try:
            await client.xadd(STREAM, {"data": "x"})
            shapes.append(type(await client.xread({STREAM: "0"})))
        finally:
            await client.aclose()
    assert shapes == [list, dict]


# -- shapes the clients above no longer send -----------------------------------------------


def test_a_flat_field_list_reads_as_a_mapping() -> None:
    """RESP2 sends HGETALL and an entry's fields as ``[name, value, ...]`` (redis-py pairs them)."""
    flat = [b"json", b"{}", b"entry_id", b"1-0"]
    assert fields(flat) == {"json": b"{}", "entry_id": b"1-0"}
    assert value_of(flat, "entry_id") == b"1-0"
    assert entries([[b"1-0", [b"data", b"x"]]]) == [("1-0", [b"data", b"x"])]
    assert fields({b"\xff": b"1"}) == {"<not UTF-8>": b"1"}


def test_xinfo_with_bytes_field_names_and_flat_lists() -> None:
    """Older redis-py gave XINFO's field names as bytes over RESP3; RESP2 sends flat lists."""
    info = stream_info(
        {b"length": 1, b"last-generated-id": b"5-0", b"first-entry": [b"5-0", [b"data", b"x"]]}
    )
    assert (info.length, info.last_generated_id, info.first_entry_id) == (1, "5-0", "5-0")
    assert info.entries_added is None  # before Redis 7
    flat_row = [b"name", b"g", b"consumers", 1, b"pending", 0, b"last-delivered-id", b"5-0"]
    (group,) = group_infos([flat_row])
    assert (group.name, group.consumers, group.entries_read, group.lag) == ("g", 1, None, None)


def test_xpending_summary_as_a_list_and_xautoclaim_before_redis_7() -> None:
    assert pending_count([3, b"1-0", b"3-0", [[b"c", b"3"]]]) == 3
    assert pending_count([0, None, None, None]) == 0
    claimed = autoclaim([b"7-0", [(b"5-0", {b"data": b"x"})]])  # no deleted ids before 7.0
    assert (claimed.cursor, claimed.claimed, claimed.deleted) == (
        "7-0",
        [("5-0", {b"data": b"x"})],
        [],
    )


# -- the consumers on a RESP3 client --------------------------------------------------------


async def test_every_reader_works_on_a_resp3_client(redis_url: str, sample_states: Any) -> None:
    """Publish, tail, look up, consume in a group, report lag and audit, all over RESP3."""
    from ti_core.transport.connection import open_redis

    client = open_redis(f"{redis_url}?protocol=3")
    try:
        envs = [envelope(sample_states, trade_date=f"2026-05-{d:02d}") for d in (11, 12, 13)]
        published = await publish_many(client, envs)
        assert await stream_last_id(client, DEFAULT_STREAM_NAME) == published[-1].entry_id
        cursor, read = await read_batch(client)
        assert cursor == published[-1].entry_id and len(read) == 3
        target = envs[0].decision.target
        assert (await read_decision(client, target.ticker, target.trade_date)).envelope == envs[0]
        handled: list[str] = []
        reader = GroupReader(
            client, "g", "c", lambda entry_id, _: handled.append(entry_id), start="0"
        )
        stats = await reader.drain()
        assert stats.handled == 3 and handled == [r.entry_id for r in published]
        (group,) = (await group_lag(client))["groups"]
        assert (group["name"], group["pending"], group["lag"]) == ("g", 0, 0)
        assert (await verify_store(client)).ok
    finally:
        await client.aclose()
