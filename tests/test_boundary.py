"""The one Redis error boundary (ti_core.transport.boundary): each foreign error -> its TiError,
one line.

The table is checked on error objects as redis-py raises them (the exact classes and server
replies), then the boundary is checked around real calls: fakeredis for a refused command,
a port where nothing listens for a lost server, and ``GroupReader.step``.
"""

from __future__ import annotations

import ast
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from redis import exceptions as redis_errors

from ti_core.consume.groups import GroupReader
from ti_core.errors import (
    ConfigError,
    PublishError,
    RedisUnavailableError,
    StoreError,
    TiError,
    is_retryable,
)
from ti_core.settings import TiSettings
from ti_core.transport.boundary import (
    Refusal,
    connection_lost,
    is_function_missing,
    is_library_loaded,
    is_missing_key,
    is_no_group,
    is_noscript,
    is_unknown_command,
    is_wrong_type,
    raise_mapped,
    redis_calls,
    redis_failure,
    refusal_of,
)
from ti_core.transport.connection import open_redis
from ti_core.transport.replies import pipeline

WHERE = "redis://cache.internal:6379/0"


def _untrusted() -> redis_errors.ConnectionError:
    error = redis_errors.ConnectionError("Error 1 connecting to cache.internal:6380.")
    error.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    return error


# (foreign error, TiError class it becomes, words the one line must hold)
CASES: list[tuple[BaseException, type[TiError], str]] = [
    (
        redis_errors.AuthenticationError("invalid username-password pair"),
        ConfigError,
        "refused the credentials of user 'default'",
    ),
    (
        redis_errors.AuthorizationError("NOAUTH Authentication required."),
        ConfigError,
        "refused the credentials",
    ),
    (
        redis_errors.NoPermissionError("this user has no permissions to run the 'xadd' command"),
        ConfigError,
        "lacks the right +xadd",
    ),
    (
        redis_errors.ResponseError("NOPERM this user has no permissions to access one of the keys"),
        ConfigError,
        "lacks the right access to a key",
    ),
    (_untrusted(), ConfigError, "TLS certificate of redis://cache.internal:6379/0 is not trusted"),
    (
        redis_errors.ReadOnlyError("You can't write against a read only replica."),
        RedisUnavailableError,
        "read-only replica",
    ),
    (
        redis_errors.ResponseError("READONLY You can't write against a read only replica."),
        RedisUnavailableError,
        "read-only replica",
    ),
    (
        redis_errors.ConnectionError(
            "Error 111 connecting to cache.internal:6379.\nConnection refused."
        ),
        RedisUnavailableError,
        "unavailable: ConnectionError: Error 111",
    ),
    (
        redis_errors.TimeoutError("Timeout reading from socket"),
        RedisUnavailableError,
        "unavailable: TimeoutError",
    ),
    (
        redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
        RedisUnavailableError,
        "unavailable: BusyLoadingError",
    ),
    (
        redis_errors.ResponseError("NOREPLICAS Not enough good replicas to write."),
        RedisUnavailableError,
        "NOREPLICAS",
    ),
    (
        ConnectionResetError(104, "Connection reset by peer"),
        RedisUnavailableError,
        "unavailable: ConnectionResetError",
    ),
    (OSError(113, "No route to host"), RedisUnavailableError, "unavailable: OSError"),
    (
        redis_errors.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        PublishError,
        "out of memory",
    ),
    (
        redis_errors.ResponseError(
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        ),
        PublishError,
        "wrong type of value",
    ),
    (
        redis_errors.ResponseError("ERR unknown command 'XAUTOCLAIM'"),
        PublishError,
        "refused a command: ResponseError: ERR unknown command",
    ),
    (
        redis_errors.DataError("Invalid input of type: 'NoneType'"),
        PublishError,
        "refused a command: DataError",
    ),
    (  # another client's looping script: busy for now, retried (issue 22)
        redis_errors.ResponseError(
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
        ),
        RedisUnavailableError,
        "is busy running a script",
    ),
]


@pytest.mark.parametrize(("foreign", "kind", "words"), CASES, ids=lambda v: type(v).__name__)
def test_each_foreign_error_becomes_one_tierror_on_one_line(
    foreign: BaseException, kind: type[TiError], words: str
) -> None:
    failure = redis_failure(foreign, WHERE, written="no entry was written")
    assert type(failure) is kind
    line = str(failure)
    assert words in line
    assert "\n" not in line and len(line) < 500
    assert line.startswith("Redis") or line.startswith("the TLS")
    assert is_retryable(failure) is (kind is RedisUnavailableError)


@pytest.mark.parametrize(
    "failure_written",
    [redis_errors.ReadOnlyError("READONLY"), redis_errors.OutOfMemoryError("OOM")],
)
def test_a_refused_write_says_what_was_not_written(failure_written: BaseException) -> None:
    assert "no entry was written for NVDA" in str(
        redis_failure(failure_written, WHERE, written="no entry was written for NVDA")
    )


@pytest.mark.parametrize(
    "ours_or_foreign",
    [ValueError("not redis"), RedisUnavailableError("already ours"), StoreError("ours too")],
)
def test_what_is_not_a_redis_failure_passes_unmapped(ours_or_foreign: BaseException) -> None:
    assert redis_failure(ours_or_foreign, WHERE) is None


@pytest.mark.parametrize(
    ("exc", "lost"),
    [
        (redis_errors.ConnectionError("gone"), True),
        (redis_errors.TimeoutError("slow"), True),
        (redis_errors.BusyLoadingError("loading"), True),
        (redis_errors.ReadOnlyError("replica"), True),
        (redis_errors.ResponseError("BUSY Redis is busy running a script."), True),  # for now
        (redis_errors.ResponseError("BUSYGROUP Consumer Group name already exists"), False),
        (ConnectionResetError(104, "reset"), True),
        (TimeoutError("slow"), True),
        (RedisUnavailableError("ours"), True),
        (redis_errors.AuthenticationError("wrong password"), False),  # a ConnectionError
        (BrokenPipeError(32, "closed output"), False),  # the consumer's stdout, not Redis
        (PermissionError(13, "a handler's file"), False),
        (redis_errors.ResponseError("WRONGTYPE"), False),
        (ValueError("bad"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_connection_lost_is_the_one_answer_to_wait_or_not(exc: BaseException, lost: bool) -> None:
    assert connection_lost(exc) is lost


async def test_redis_calls_maps_a_refused_command_on_fakeredis(fake_redis: Any) -> None:
    await fake_redis.set("not-a-hash", "x")
    with pytest.raises(PublishError, match="wrong type of value") as caught:
        with redis_calls(fake_redis, "nothing was written (a read)"):
            await fake_redis.hgetall("not-a-hash")
    assert "nothing was written (a read)" in str(caught.value)
    assert isinstance(caught.value.__cause__, redis_errors.ResponseError)


async def test_redis_calls_lets_other_errors_through(fake_redis: Any) -> None:
    with pytest.raises(KeyError), redis_calls(fake_redis):
        raise KeyError("not Redis")


async def test_an_unreachable_server_is_one_redacted_line() -> None:
    client = open_redis("redis://ti:s3cr3t-pw@127.0.0.1:1/0", TiSettings(retries=0))
    try:
        with pytest.raises(RedisUnavailableError) as caught, redis_calls(client):
            await client.ping()
    finally:
        await client.aclose()
    line = str(caught.value)
    assert line.startswith("Redis at redis://127.0.0.1:1/0 unavailable: ConnectionError")
    assert "s3cr3t" not in line and "\n" not in line


async def test_raise_mapped_names_the_clients_user() -> None:
    client = open_redis("redis://ti-producer:pw@127.0.0.1:1/0", TiSettings(retries=0))
    try:
        with pytest.raises(ConfigError, match="user 'ti-producer'"):
            raise_mapped(redis_errors.AuthenticationError("WRONGPASS"), client)
    finally:
        await client.aclose()


async def test_group_reader_step_leaves_only_tierrors() -> None:
    """The reader's boundary: a lost server is RedisUnavailableError (retryable), one line."""
    client = open_redis("redis://127.0.0.1:1/0", TiSettings(retries=0))
    reader = GroupReader(client, "engine", "c1", lambda *_: None)
    try:
        with pytest.raises(
            RedisUnavailableError, match="^Redis at redis://127.0.0.1:1/0 unavailable"
        ):
            await reader.step(block=False)
    finally:
        await client.aclose()


async def test_public_reads_leave_only_tierrors() -> None:
    """``@redis_boundary`` on the core's functions that take a client: no redis-py error out."""
    from ti_core.backfill.status import Item, classify
    from ti_core.consume.group_lag import group_lag
    from ti_core.consume.lookup import read_decision
    from ti_core.consume.reader import read_batch, stream_last_id

    client = open_redis("redis://127.0.0.1:1/0", TiSettings(retries=0))
    calls = [
        stream_last_id(client, "s"),
        read_batch(client, stream_name="s"),
        group_lag(client),
        read_decision(client, "NVDA", "2026-04-01"),
        classify(client, [Item("NVDA", "2026-04-01")]),
    ]
    try:
        for call in calls:
            with pytest.raises(RedisUnavailableError, match="^Redis at redis://127.0.0.1:1/0 unav"):
                await call
    finally:
        await client.aclose()


# -- what an error reply says: one reading of it (refusal_of) for the whole core -------------

REFUSALS: list[tuple[BaseException, Refusal | None]] = [
    (redis_errors.ResponseError("ERR no such key"), Refusal.MISSING_KEY),
    (redis_errors.ResponseError("ERR no such key 'ti:s'"), Refusal.MISSING_KEY),  # embedded
    (
        redis_errors.ResponseError("NOGROUP No such key 's' or consumer group 'g' in XREADGROUP"),
        Refusal.NO_GROUP,  # not a missing key, though it says so
    ),
    (
        redis_errors.ResponseError(
            "Command # 2 (XREADGROUP GROUP g c STREAMS s >) of pipeline caused error: "
            "NOGROUP No such key 's' or consumer group 'g' in XREADGROUP with GROUP option"
        ),
        Refusal.NO_GROUP,  # quoted by a failed MULTI
    ),
    (
        redis_errors.ResponseError(
            "ERR Error running script (call to f_0a): @user_script:1: WRONGTYPE Operation "
            "against a key holding the wrong kind of value"
        ),
        Refusal.WRONG_TYPE,  # Redis 6 wraps a script's refusal in its own words
    ),
    (
        redis_errors.ResponseError(
            "Command # 1 (SET a b) of pipeline caused error: READONLY You can't write against "
            "a read only replica."
        ),
        Refusal.READ_ONLY,  # raised by a pipeline, as a plain ResponseError
    ),
    (redis_errors.ReadOnlyError("You can't write against a read only replica."), Refusal.READ_ONLY),
    (redis_errors.OutOfMemoryError("command not allowed"), Refusal.OUT_OF_MEMORY),
    (redis_errors.ResponseError("OOM command not allowed"), Refusal.OUT_OF_MEMORY),
    (redis_errors.ResponseError("NOREPLICAS Not enough good replicas"), Refusal.NO_REPLICAS),
    (redis_errors.NoScriptError("No matching script. Please use EVAL."), Refusal.NO_SCRIPT),
    (redis_errors.ResponseError("NOSCRIPT No matching script"), Refusal.NO_SCRIPT),  # embedded
    (
        redis_errors.ResponseError("BUSYGROUP Consumer Group name already exists"),
        Refusal.BUSY_GROUP,
    ),
    (
        redis_errors.NoPermissionError("no permissions to run the 'xadd' command"),
        Refusal.NO_PERMISSION,
    ),
    (
        redis_errors.ResponseError("ERR The user executing the script can't run this command"),
        Refusal.NO_PERMISSION,
    ),
    (redis_errors.ResponseError("ERR unknown command 'XAUTOCLAIM'"), Refusal.UNKNOWN_COMMAND),
    (
        redis_errors.ResponseError(
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
        ),
        Refusal.BUSY,
    ),
    (redis_errors.ResponseError("ERR Function not found"), Refusal.NO_FUNCTION),
    (
        redis_errors.ResponseError("ERR Library 'ti_groups_0a' already exists"),
        Refusal.LIBRARY_EXISTS,
    ),
    (redis_errors.ConnectionError("Connection reset by peer"), None),
    (ValueError("WRONGTYPE"), None),  # a handler's own error, not a reply
]


@pytest.mark.parametrize(("reply", "refusal"), REFUSALS, ids=lambda v: str(v)[:40])
def test_each_error_reply_is_read_as_one_refusal(
    reply: BaseException, refusal: Refusal | None
) -> None:
    assert refusal_of(reply) is refusal
    predicates = {
        Refusal.MISSING_KEY: is_missing_key,
        Refusal.WRONG_TYPE: is_wrong_type,
        Refusal.NO_GROUP: is_no_group,
        Refusal.NO_SCRIPT: is_noscript,
        Refusal.NO_FUNCTION: is_function_missing,
        Refusal.LIBRARY_EXISTS: is_library_loaded,
        Refusal.UNKNOWN_COMMAND: is_unknown_command,
    }
    assert {kind for kind, asks in predicates.items() if asks(reply)} == (
        {refusal} & set(predicates)
    )


async def test_each_client_says_each_refusal_so_the_boundary_reads_it(r: Any) -> None:
    """fakeredis, redis-server over RESP2 and RESP3, the embedded store: each refusal the core
    tolerates or reacts to, alone and as a pipeline or a MULTI raises it."""
    stream, string = "ti:test:refusals", "ti:test:a-string"
    await r.xadd(stream, {"data": "x"})
    await r.set(string, "x")

    async def refused(call: Any) -> BaseException:
        with pytest.raises(redis_errors.RedisError) as caught:
            await call()  # the embedded store may raise as it is called
        return caught.value

    assert is_missing_key(await refused(lambda: r.xinfo_stream("ti:test:absent")))
    assert is_wrong_type(await refused(lambda: r.hgetall(string)))
    pipe = pipeline(r)
    pipe.xlen(stream)
    pipe.hgetall(string)
    assert is_wrong_type(await refused(pipe.execute))
    no_group = await refused(lambda: r.xreadgroup("ti:absent", "c", {stream: ">"}))
    assert is_no_group(no_group) and not is_missing_key(no_group)
    multi = r.pipeline(transaction=True)
    multi.xlen(stream)
    multi.xreadgroup("ti:absent", "c", {stream: ">"})
    assert is_no_group(await refused(multi.execute))
    await r.xgroup_create(stream, "g", "0")
    assert (
        refusal_of(await refused(lambda: r.xgroup_create(stream, "g", "0"))) is Refusal.BUSY_GROUP
    )
    failure = redis_failure(
        await refused(lambda: r.hgetall(string)), WHERE, written="nothing written"
    )
    assert isinstance(failure, PublishError) and "wrong type of value" in str(failure)


# The words of Redis error replies, and the calls that look for text in a string.
_REPLY_WORDS = re.compile(
    r"NOPERM|READONLY|OOM|NOREPLICAS|NOSCRIPT|BUSYGROUP|NOGROUP|WRONGTYPE|LOADING|EXECABORT"
    r"|no such key|can't run this command|pipeline caused error",
    re.IGNORECASE,
)
_TEXT_SEARCHES = {"startswith", "endswith", "removeprefix", "find", "index", "search", "match"}


def reply_sniffing(source: str) -> list[int]:
    """Lines of ``source`` that look into an error's text: a reply word compared (``in``,
    ``==``) or searched for (``.startswith(...)``, ``re.search``), or ``exc.args[0]``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            operands = list(node.args) if node.func.attr in _TEXT_SEARCHES else []
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
            operands = [ast.Constant("pipeline caused error")] if node.value.attr == "args" else []
        else:
            continue
        if any(
            isinstance(o, ast.Constant)
            and isinstance(o.value, str)
            and _REPLY_WORDS.search(o.value)
            for o in operands
        ):
            found.append(node.lineno)
    return sorted(found)


def test_the_scan_finds_sniffing() -> None:
    sniffing = (
        'if "WRONGTYPE" in str(exc): pass\n'
        'if str(exc).startswith("NOSCRIPT"): pass\n'
        'if "no such key" in str(exc).lower(): pass\n'
        "if exc.args[0] == 1: pass\n"
        'if re.search("NOGROUP ", str(exc)): pass\n'
        'if "data" in fields: pass\n'
    )
    assert reply_sniffing(sniffing) == [1, 2, 3, 4, 5]


def test_only_the_transport_reads_error_replies() -> None:
    """Sniffing an error's text outside ti_core/transport/ would be a second, drifting table:
    ask ``refusal_of`` or its predicates instead (Lua scripts may test ``reply.err``)."""
    root = Path(__file__).resolve().parents[1]
    transport = root / "ti_core" / "transport"
    sniffing = {
        f"{path.relative_to(root)}:{line}"
        for tree in ("ti_core", "flows")
        for path in sorted((root / tree).rglob("*.py"))
        if transport not in path.parents
        for line in reply_sniffing(path.read_text())
    }
    assert sniffing == set()
