"""The ACL lines of docs/publishing.md (its least-privilege section, their one home), read
from that file at test time and pasted onto a real server, with the group functions loaded by
the command that page gives.

Each role runs every command it is meant for; outside its role, each command fails in one
line naming the user and the missing right, and a wrong password is refused once (no retry).
A consumer cannot run Lua of its own (no ``EVAL`` loop freezing the producers), a team's user
cannot move another team's group, and a server busy with a script is waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.publish_workload import envelope, many_envelopes
from tests.redisproc import RedisProcess
from tests.test_cli_tail import Running
from ti_core import ConfigError, publish_many
from ti_core.acl import (
    consumer_acl_rule,
    producer_acl_rule,
    setuser_line,
    team_consumer_acl_rule,
)
from ti_core.consume.group_lag import group_lag
from ti_core.consume.group_scripts import LIBRARY_NAME
from ti_core.consume.groups import GroupReader
from ti_core.contract.keys import DEFAULT_STREAM_NAME, dead_letter_key, group_lost_key
from ti_core.errors import RedisUnavailableError, is_retryable
from ti_core.transport.connection import open_redis

pytestmark = pytest.mark.redis_server

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "publishing.md"
PASSWORD = "Acl-pw-9Tq-SECRET"
S = DEFAULT_STREAM_NAME
RANGE = ["--start", "2026-05-11", "--end", "2026-05-12", "--calendar", "weekdays"]
TI = str(Path(sys.executable).with_name("ti"))
USERS = ("ti-producer", "ti-consumer", "ti-team-a")
# docs/publishing.md: an admin loads the group functions once (run here as written, on the
# test server's port).
LOAD_FUNCTIONS = "python -m ti_core.consume.group_scripts | redis-cli -x FUNCTION LOAD"


def load_functions(port: int) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = LOAD_FUNCTIONS.replace("redis-cli", f"redis-cli -p {port}")
    done = subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == LIBRARY_NAME, done


def doc_line(user: str) -> str:
    """The one ``ACL SETUSER user ...`` line of docs/publishing.md (inside a code block)."""
    found = [
        line.strip()
        for line in DOC.read_text().splitlines()
        if line.strip().startswith(f"ACL SETUSER {user} ")
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis-acl-doc")).start()
    with proc.sync_client() as admin:
        for user in USERS:
            # as redis-cli would send it: split like a shell, quotes keep the selector whole
            admin.execute_command(*shlex.split(doc_line(user).replace("PASSWORD", PASSWORD)))
        team_b = setuser_line("ti-team-b", team_consumer_acl_rule("team-b"))  # a second team
        admin.execute_command(*shlex.split(team_b.replace("PASSWORD", PASSWORD)))
    load_functions(proc.port)
    yield proc
    proc.stop()


@pytest.fixture
def admin(server: RedisProcess) -> Iterator[redis.Redis]:
    with server.sync_client() as client:
        client.flushall()
        client.script_flush()
        client.execute_command("ACL", "LOG", "RESET")
        yield client


def url(server: RedisProcess, user: str, password: str = PASSWORD) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def ti(
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
) -> tuple[int, str, str]:
    from flows.cli import main

    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    monkeypatch.setenv("TI_RETRIES", "3")
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    return code, out, err


def one_line(err: str, *parts: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ti: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], lines[0]


def test_the_documented_lines_are_the_code_rules() -> None:
    assert doc_line("ti-producer") == setuser_line("ti-producer", producer_acl_rule())
    assert doc_line("ti-consumer") == setuser_line("ti-consumer", consumer_acl_rule())
    assert doc_line("ti-team-a") == setuser_line("ti-team-a", team_consumer_acl_rule("team-a"))
    assert "+eval" not in doc_line("ti-consumer") and "+script" not in doc_line("ti-consumer")
    assert doc_line("ti-producer").split()[3:5] == ["reset", "on"]  # reset before on


def test_the_lines_live_in_one_place() -> None:
    others = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    copies = [p.name for p in others if p != DOC and "ACL SETUSER ti-" in p.read_text()]
    assert not copies, f"ACL SETUSER lines belong in docs/publishing.md only, also in {copies}"


def _publish(redis_url: str, envelopes: list[Any]) -> list[Any]:
    async def go() -> list[Any]:
        client = open_redis(redis_url)
        try:
            return await publish_many(client, envelopes)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_producer_from_the_docs(
    server: RedisProcess,
    admin: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    producer = url(server, "ti-producer")
    results = _publish(producer, [envelope("NVDA"), *many_envelopes(50)])
    assert all(r.created and r.hash_written for r in results)
    assert admin.xlen(S) == 51

    code, out, err = ti(
        ["status", "--tickers", "NVDA", *RANGE, "--json"], monkeypatch, capsys, producer
    )
    assert code == 0 and '"published": 1' in out and err == ""
    code, out, err = ti(["get", "NVDA", "2026-05-11"], monkeypatch, capsys, producer)
    assert code == 1 and out == ""
    one_line(err, "user 'ti-producer'", "lacks the right +hgetall")
    code, out, err = ti(["verify"], monkeypatch, capsys, producer)
    assert code == 1
    one_line(err, "user 'ti-producer'", "lacks the right +")
    code, out, err = ti(["lag"], monkeypatch, capsys, producer)
    assert code == 1
    one_line(err, "user 'ti-producer'", "lacks the right +")


def test_consumer_from_the_docs(
    server: RedisProcess,
    admin: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _publish(url(server, "ti-producer"), [envelope("NVDA"), *many_envelopes(20)])
    admin.xadd(S, {"data": b"not json"})  # a consumer group dead-letters it
    consumer = url(server, "ti-consumer")

    code, out, err = ti(["get", "NVDA", "2026-05-11"], monkeypatch, capsys, consumer)
    assert code == 0 and out.startswith("NVDA 2026-05-11: ") and err == ""
    code, out, err = ti(
        ["status", "--tickers", "NVDA", *RANGE, "--json"], monkeypatch, capsys, consumer
    )
    assert code == 0 and '"published": 1' in out
    code, out, err = ti(["verify"], monkeypatch, capsys, consumer)
    assert code == 2 and "undecodable_entry: 1" in out  # it ran: the bad entry is found
    admin.xdel(S, admin.xrange(S, "-", "+")[-1][0])
    code, out, err = ti(["verify"], monkeypatch, capsys, consumer)
    assert code == 0 and ": consistent" in out, out
    admin.xadd(S, {"data": b"not json"})

    async def groups() -> Any:
        client = open_redis(consumer)
        seen: list[str] = []

        async def handler(entry_id: str, _envelope: Any) -> None:
            seen.append(entry_id)

        try:
            reader = GroupReader(client, "engines", "c1", handler, start="0", block_ms=100)
            stats = await reader.drain()
        finally:
            await client.aclose()
        return stats, seen

    stats, seen = asyncio.run(groups())
    assert stats.handled == 21 and stats.dead_lettered == 1 and len(seen) == 21
    assert admin.xlen(dead_letter_key(S)) == 1
    code, out, err = ti(["lag"], monkeypatch, capsys, consumer)
    assert code == 0 and "engines" in out, out + err

    env = {**_clean_env(), "TI_REDIS_URL": consumer}
    with Running([TI, "tail", "--from-start"], env) as tail:
        first = tail.line(timeout=60)
        assert "NVDA" in first or "2026-05-11" in first
        tail.proc.send_signal(signal.SIGINT)
        assert tail.proc.wait(30) == 0

    # It calls the group functions (FCALL) but runs no script of its own: not the publish one.
    with pytest.raises(ConfigError, match=r"user 'ti-consumer' .* lacks the right \+evalsha"):
        _publish(consumer, [envelope("AMD")])
    consumer_client = redis.Redis.from_url(consumer)
    with consumer_client, pytest.raises(redis.exceptions.NoPermissionError):
        consumer_client.xadd(S, {"data": "{}"})  # XADD only on the dead-letter stream
    assert admin.xlen(S) == 22


def test_the_consumer_runs_no_lua_of_its_own(server: RedisProcess, admin: redis.Redis) -> None:
    """Issue 22: ``EVAL "while true do end"`` as the consumer froze Redis for every producer.
    Now it, and every other way to run code of its own, is refused at once."""
    consumer = redis.Redis.from_url(url(server, "ti-consumer"), socket_timeout=3)
    try:
        with consumer:
            for attempt in (
                lambda: consumer.eval("while true do end", 0),
                lambda: consumer.script_load("while true do end"),
                lambda: consumer.function_load(
                    "#!lua name=x\nredis.register_function('x', function() while true do end end)"
                ),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    attempt()
    finally:
        with server.sync_client() as killer, contextlib.suppress(redis.exceptions.RedisError):
            killer.script_kill()  # only if the refusal failed: keep the other tests' server
    results = _publish(url(server, "ti-producer"), [envelope("NVDA")])
    assert results[0].created


def test_a_missing_function_library_is_one_line_naming_the_load(
    server: RedisProcess, admin: redis.Redis
) -> None:
    admin.function_delete(LIBRARY_NAME)
    try:
        with pytest.raises(ConfigError) as refused:
            asyncio.run(_drain(url(server, "ti-consumer"), "engines"))
        line = str(refused.value)
        assert "user 'ti-consumer' may not load them" in line
        assert "redis-cli -x FUNCTION LOAD" in line
        assert "\n" not in line and PASSWORD not in line
        asyncio.run(_drain(server.url, "engines"))  # a user allowed to load it does so itself
        (library,) = admin.function_list()
        assert library[library.index(b"library_name") + 1] == LIBRARY_NAME.encode()
    finally:
        if not admin.function_list():
            load_functions(server.port)


async def _drain(redis_url: str, group: str, start: str = "0") -> Any:
    client = open_redis(redis_url)
    try:
        return await GroupReader(client, group, "c1", lambda i, e: None, start=start).drain()
    finally:
        await client.aclose()


def test_a_teams_user_cannot_move_another_teams_group(
    server: RedisProcess, admin: redis.Redis
) -> None:
    """What the team rule confines (and, as docs/publishing.md says, what it cannot)."""
    _publish(url(server, "ti-producer"), many_envelopes(4))
    assert asyncio.run(_drain(url(server, "ti-team-b"), "team-b")).handled == 4
    assert asyncio.run(_drain(url(server, "ti-team-a"), "team-a")).handled == 4
    team_a = redis.Redis.from_url(url(server, "ti-team-a"))
    with team_a:
        for refused in (
            lambda: team_a.execute_command("XGROUP", "SETID", S, "team-b", "0"),
            lambda: team_a.execute_command("XGROUP", "SETID", S, "team-a", "0"),
            lambda: team_a.hset(group_lost_key(S, "team-b"), "entries", 0),
            lambda: team_a.hdel(f"{S}:attempts:team-b", "x"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                refused()
        # Group names are not keys: this it can do (the documented limit).
        first = admin.xrange(S, "-", "+", count=1)[0][0]
        assert team_a.xack(S, "team-b", first) == 0  # allowed; nothing pending to ack
    rows = {row["name"]: row for row in asyncio.run(_lag(url(server, "ti-team-a")))["groups"]}
    assert rows["team-b"]["lag"] == 0 and rows["team-b"]["entries_read"] == 4


async def _lag(redis_url: str) -> Any:
    client = open_redis(redis_url)
    try:
        return await group_lag(client)
    finally:
        await client.aclose()


def test_a_teams_reader_records_a_trim_gap_without_xgroup_setid(
    server: RedisProcess, admin: redis.Redis
) -> None:
    """It cannot fix the group's counter past the gap; the loss is recorded and ``ti lag``
    takes it off Redis's lag."""
    _publish(url(server, "ti-producer"), many_envelopes(2))
    asyncio.run(_drain(url(server, "ti-team-a"), "team-a"))  # the group exists, caught up
    _publish(url(server, "ti-producer"), many_envelopes(6)[2:])
    admin.xtrim(S, maxlen=2, approximate=False)  # 2 of the 4 unread trimmed away
    assert asyncio.run(_drain(url(server, "ti-team-a"), "team-a")).handled == 2
    lost = admin.hgetall(group_lost_key(S, "team-a"))
    assert lost[b"entries"] == b"2" and lost[b"lag_excess"] == b"2"
    (row,) = asyncio.run(_lag(url(server, "ti-team-a")))["groups"]
    assert row["lag"] == 0 and row["lost"] == 2


def test_a_server_busy_with_a_script_is_waited_out(server: RedisProcess, admin: redis.Redis):
    """Anyone's long script (an admin's here: the consumer can no longer run one) makes Redis
    answer BUSY: retryable, and the backfill core rides it out with backoff."""
    from ti_core.arenas.registry import load_arena
    from ti_core.backfill.runner import backfill_batch, plan_items

    admin.config_set("busy-reply-threshold", 50)
    looping = threading.Thread(target=_loop_a_script, args=(server,), daemon=True)
    looping.start()
    try:
        with server.sync_client() as probe:
            for _ in range(200):
                try:
                    probe.ping()
                except redis.exceptions.ResponseError:
                    break  # BUSY: the script is past the threshold
                looping.join(0.05)
            with pytest.raises(RedisUnavailableError, match="busy running a script") as busy:
                _publish(url(server, "ti-producer"), [envelope("NVDA")])
            assert is_retryable(busy.value)

            async def go() -> Any:
                client = open_redis(url(server, "ti-producer"))
                try:
                    items = list(plan_items(["NVDA"], ["2026-05-11", "2026-05-12"]))
                    batch = asyncio.create_task(backfill_batch(client, load_arena("demo"), items))
                    await asyncio.sleep(0.5)  # it is being refused meanwhile
                    probe.script_kill()
                    return await batch
                finally:
                    await client.aclose()

            result = asyncio.run(go())
    finally:
        with server.sync_client() as killer, contextlib.suppress(redis.exceptions.RedisError):
            killer.script_kill()
        looping.join(10)
        admin.config_set("busy-reply-threshold", 5000)
    assert result.count("published") == 2
    assert admin.xlen(S) == 2


def _loop_a_script(server: RedisProcess) -> None:
    with server.sync_client() as admin, contextlib.suppress(redis.exceptions.RedisError):
        admin.eval("while true do end", 0)


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TI_")}


def test_wrong_password_is_one_line_and_tried_once(
    server: RedisProcess,
    admin: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = url(server, "ti-consumer", "not-the-SECRET")
    code, out, err = ti(["get", "NVDA", "2026-05-11"], monkeypatch, capsys, wrong)
    assert code == 1
    one_line(err, "refused the credentials of user 'ti-consumer'")
    assert "not-the-SECRET" not in err
    failures = [e for e in admin.acl_log() if e.get("reason") == "auth"]
    assert len(failures) == 1 and failures[0]["count"] == 1  # TI_RETRIES=3: not retried


def test_producer_backfills_from_the_docs(server: RedisProcess, admin: redis.Redis) -> None:
    """The backfill core with the producer's rights: classify (HEXISTS, HMGET), publish,
    failure records (HSET for a failed item, HDEL for the rest)."""
    from ti_core.arenas.registry import load_arena
    from ti_core.backfill.runner import backfill_batch, plan_items

    async def go() -> Any:
        client = open_redis(url(server, "ti-producer"))
        try:
            items = list(plan_items(["NVDA", "AAPL"], ["2026-05-11", "2026-05-12"]))
            first = await backfill_batch(client, load_arena("demo"), items)
            again = await backfill_batch(client, load_arena("demo"), items)
        finally:
            await client.aclose()
        return first, again

    first, again = asyncio.run(go())
    assert first.count("published") == 4 and again.skipped == 4
    assert admin.xlen(S) == 4


@pytest.mark.prefect
def test_ti_run_with_each_user_from_the_docs(
    prefect_harness: None,
    server: RedisProcess,
    admin: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TI_TASK_RETRIES", "0")
    argv = ["run", "NVDA", "--date", "2026-05-11", "--arena", "tests.arena_fixtures:sync_arena"]
    code, out, err = ti(argv, monkeypatch, capsys, url(server, "ti-consumer"))
    assert code == 1 and out == ""
    one_line(err, "user 'ti-consumer'", "lacks the right +evalsha")
    assert admin.xlen(S) == 0
    code, out, err = ti(argv, monkeypatch, capsys, url(server, "ti-producer"))
    assert code == 0 and out.startswith("NVDA 2026-05-11: BUY"), err
    assert admin.xlen(S) == 1
