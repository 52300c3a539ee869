"""The client seam: fakeredis, a real redis-server (RESP2 and RESP3) and the embedded store
(through its adapter, ti_core.store.embedded_client) answer the commands the core uses in the
same way, as ti_core.transport.replies and ti_core.transport.boundary read them."""

from __future__ import annotations

from typing import Any

import pytest

from ti_core.store.embedded_client import EmbeddedClient
from ti_core.transport.boundary import Refusal, is_noscript, is_wrong_type, refusal_of
from ti_core.transport.replies import pipeline, text

H = "ti:test:seam"
UNKNOWN_SHA = "0" * 40


async def test_a_pipelined_hmget_answers_one_list(r: Any) -> None:
    await r.hset(H, mapping={"a": "1", "c": "3"})
    pipe = pipeline(r)
    pipe.hget(H, "a")
    pipe.hmget(H, ["a", "b", "c"])
    pipe.hexists(H, "c")
    first, many, exists = await pipe.execute()
    assert text(first) == "1"
    assert [None if v is None else text(v) for v in many] == ["1", None, "3"]
    assert exists in (True, 1)


async def test_a_pipelined_hmget_of_another_type_is_one_error(r: Any) -> None:
    await r.xadd("ti:test:seam-stream", {"data": "x"})
    pipe = pipeline(r)
    pipe.hmget("ti:test:seam-stream", ["a", "b"])
    pipe.xlen("ti:test:seam-stream")
    failed, length = await pipe.execute(raise_on_error=False)
    assert is_wrong_type(failed)
    assert length == 1


async def test_an_unknown_script_is_noscript_to_the_boundary(r: Any) -> None:
    """redis-py says it with a class (dropping the code), the embedded store with the code:
    the boundary reads both as one refusal."""
    pipe = pipeline(r)
    pipe.evalsha(UNKNOWN_SHA, 0)
    (reply,) = await pipe.execute(raise_on_error=False)
    assert is_noscript(reply) and refusal_of(reply) is Refusal.NO_SCRIPT


async def test_a_transactional_pipeline_is_accepted(r: Any) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.hset(H, "x", "1")
    pipe.hdel(H, "x")
    assert await pipe.execute() in ([1, 1], [True, True])


async def test_the_embedded_store_comes_through_its_adapter() -> None:
    from ti_core import TiSettings, connect

    async with connect(settings=TiSettings()) as client:
        assert isinstance(client, EmbeddedClient)


@pytest.mark.parametrize("keys", [("a",), ("a", "b", "c")])
async def test_hmget_takes_extra_fields_as_redis_py_does(r: Any, keys: tuple[str, ...]) -> None:
    await r.hset(H, mapping={"a": "1", "b": "2", "c": "3"})
    pipe = pipeline(r)
    pipe.hmget(H, keys[0], *keys[1:])
    (values,) = await pipe.execute()
    assert [text(v) for v in values] == [str(i + 1) for i in range(len(keys))]
