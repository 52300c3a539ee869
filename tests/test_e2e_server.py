"""End to end on a real Prefect server: PostgreSQL, `prefect deploy --all`, a process worker.

One server, worker and redis-server for the module (a minute or two), prepared in the
background from the start of the session (tests/conftest.py, tests/prefect_stack.py). The
tests then: publish two tickers through ``daily-publish``; fail the same run with Redis
stopped (the flow run is Failed, its table names both tickers, the notify automation calls
its webhook) and retry it with ``prefect flow-run retry`` once Redis is back (published once,
twice retried still once); emit ``ti.arena.completed`` so the triggered deployment
publishes; and create runs naming other code, an attacker's replay directory or ``force``,
which the worker refuses.

Needs PostgreSQL on 127.0.0.1:5432 (``TI_TEST_POSTGRES_URL`` to change it): skipped without
it, failed instead when ``TI_REQUIRE_REDIS_SERVER=1`` (CI).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import E2E_STACK
from tests.prefect_stack import DAY, ROOT, Stack, StackInBackground, Webhook, stop_group
from ti_core.contract.keys import DEFAULT_STREAM_NAME, decision_hash_key

pytestmark = [pytest.mark.slow, pytest.mark.redis_server, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The stack tests/conftest.py began preparing at the start of the session (or, when this
    module was not selected then, one prepared now)."""
    early = request.config.stash.get(E2E_STACK, None)
    if early is None:
        early = StackInBackground(tmp_path_factory.mktemp("e2e")).start()
    try:
        yield early.result()
    finally:
        early.close()


def _daily_params(stack: Stack) -> dict[str, Any]:
    return {"tickers": ["NVDA", "AAPL"], "trade_date": DAY, "arena": f"replay:{stack.states}"}


def _published(stack: Stack) -> dict[str, str]:
    """Ticker -> entry id of every entry on the stream (fails on a duplicate ticker)."""
    with stack.redis.sync_client() as client:
        entries = client.xrange(DEFAULT_STREAM_NAME)
        out: dict[str, str] = {}
        for entry_id, fields in entries:
            ticker = json.loads(fields[b"data"])["decision"]["target"]["ticker"]
            assert ticker not in out, f"{ticker} published twice: {entries}"
            out[ticker] = entry_id.decode()
        for ticker, entry_id in out.items():
            day = DAY if ticker != "BRK.B" else "2026-05-12"
            assert client.hget(decision_hash_key(ticker, day), "entry_id").decode() == entry_id
        return out


def test_daily_publish_through_a_worker_lands_in_redis(stack: Stack) -> None:
    with stack.redis.sync_client() as client:
        client.flushall()
    start = time.monotonic()
    run = stack.wait(stack.run("daily", "daily-publish", _daily_params(stack)))
    stack.timed("daily-publish run", start)
    assert run["state"]["type"] == "COMPLETED", stack.log("worker.log")
    assert set(_published(stack)) == {"NVDA", "AAPL"}
    verify = subprocess.run(
        [sys.executable, "-m", "flows.cli", "verify", "--json"],
        cwd=ROOT,
        env=stack.env | {"TI_REDIS_URL": stack.redis.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0 and json.loads(verify.stdout)["hashes"] == 2, verify.stderr


def test_redis_down_fails_the_run_then_retry_publishes_once(stack: Stack) -> None:
    with stack.redis.sync_client() as client:
        client.flushall()
    stack.redis.stop()
    start = time.monotonic()
    run_id = stack.run("daily", "daily-publish", _daily_params(stack))
    run = stack.wait(run_id)
    stack.timed("failing run (Redis down)", start)
    assert run["state"]["type"] == "FAILED"
    assert "2 of 2 decisions failed" in run["state"]["message"]
    artifacts = stack.api(
        "POST",
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["table"]}}},
    )
    (table,) = artifacts
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    failed = {row["ticker"]: row for row in rows}
    assert set(failed) == {"NVDA", "AAPL"}
    for row in rows:
        assert row["status"] == "failed" and "unavailable" in row["error"], json.dumps(rows)

    stack.redis.start()
    start = time.monotonic()
    for attempt in (2, 3):  # a retry publishes; a second retry finds everything already there
        stack.cli("flow-run", "retry", run_id)
        run = stack.wait(run_id, attempt=attempt)
        assert run["state"]["type"] == "COMPLETED", stack.log("worker.log")
        assert set(_published(stack)) == {"NVDA", "AAPL"}
    stack.timed("two retries", start)
    with stack.redis.sync_client() as client:
        assert client.xlen(DEFAULT_STREAM_NAME) == 2

    deadline = time.monotonic() + 30  # the automation's webhook, for the failed run
    while time.monotonic() < deadline and not Webhook.received:
        time.sleep(0.5)
    assert Webhook.received, "automation ti-publish-failed did not notify"
    message = Webhook.received[0]
    assert "is Failed" in message["subject"] and "2 of 2 decisions failed" in message["body"]
    assert f"http://127.0.0.1:{stack.port}/runs/flow-run/{run_id}" in message["body"]


def test_arena_completed_event_triggers_the_deployment(stack: Stack) -> None:
    with stack.redis.sync_client() as client:
        client.flushall()
    start = time.monotonic()
    emit = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "emit-arena-completed",
            "brk.b",
            "2026-05-12",
            "--state-dir",
            str(stack.states),
        ],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert emit.returncode == 0, emit.stderr
    deployment = stack.deployment_id("publish-decision", "publish-on-arena-complete")
    deadline = time.monotonic() + 60
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not runs:
        runs = stack.api(
            "POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment]}}}
        )
        time.sleep(0.5)
    assert len(runs) == 1, f"the trigger made {len(runs)} runs"
    run = stack.wait(runs[0]["id"])
    stack.timed("event -> triggered run", start)
    assert run["state"]["type"] == "COMPLETED", stack.log("worker.log")
    assert run["parameters"] == {
        "ticker": "BRK.B",
        "trade_date": "2026-05-12",
        "arena": f"replay:{stack.states.resolve()}",
    }
    assert set(_published(stack)) == {"BRK.B"}


def test_a_run_naming_other_code_or_forcing_is_refused_by_the_worker(
    stack: Stack, tmp_path: Path
) -> None:
    """Anyone who may create runs on the shared server chooses their parameters: the worker's
    settings decide which arenas run, and force is not theirs to give. (After the notification
    and trigger tests: these runs fail, and one is a run of the triggered deployment.)"""
    with stack.redis.sync_client() as client:
        client.flushall()
    attacker = tmp_path / "NVDA"  # a replay directory of the attacker's own states
    attacker.mkdir()
    (attacker / f"{DAY}.json").write_text((stack.states / "NVDA" / f"{DAY}.json").read_text())
    for arena in ("shutil:rmtree", f"replay:{tmp_path}"):
        parameters = _daily_params(stack) | {"arena": arena}
        run = stack.wait(stack.run("daily", "daily-publish", parameters))
        assert run["state"]["type"] == "FAILED", stack.log("worker.log")
        assert f"arena {arena!r} is not allowed for a deployment's run" in run["state"]["message"]
    forced = {"ticker": "NVDA", "trade_date": DAY, "arena": f"replay:{stack.states}", "force": True}
    run = stack.wait(stack.run("publish-decision", "publish-on-arena-complete", forced))
    assert run["state"]["type"] == "FAILED", stack.log("worker.log")
    assert "may not force over newer decisions" in run["state"]["message"]
    assert not _published(stack)


def test_ti_serve_runs_the_same_deployments_without_a_worker(stack: Stack) -> None:
    """Last: ``ti serve`` refuses to take over `prefect deploy`'s deployments; once they are
    deleted it serves its own, and with the worker stopped only it can run them."""
    stop_group(stack.worker)
    with stack.redis.sync_client() as client:
        client.flushall()
    start = time.monotonic()
    env = stack.env | {"TI_REDIS_URL": stack.redis.url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    command = [
        sys.executable,
        "-m",
        "flows.cli",
        "serve",
        "--tickers",
        "NVDA,aapl",
        "--arena",
        f"replay:{stack.states}",
    ]
    refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1, refused.stderr
    assert "prefect deployment delete daily/daily-publish" in refused.stderr
    for flow, name in (
        ("daily", "daily-publish"),
        ("backfill", "backfill"),
        ("publish-decision", "publish-on-arena-complete"),
    ):  # through the API: three `prefect deployment delete` would each start Prefect
        stack.api("DELETE", f"/deployments/{stack.deployment_id(flow, name)}")
    serve = stack._popen(command, "serve.log", env)
    try:
        deadline = time.monotonic() + 60
        while "being served" not in stack.log("serve.log"):
            assert serve.poll() is None and time.monotonic() < deadline, stack.log("serve.log")
            time.sleep(0.3)
        daily = stack.api("GET", "/deployments/name/daily/daily-publish")
        (schedule,) = daily["schedules"]
        assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == (
            "30 17 * * 1-5",
            "America/New_York",
        )
        assert daily["parameters"]["tickers"] == ["NVDA", "AAPL"]
        run = stack.wait(stack.run("daily", "daily-publish", {"trade_date": DAY}), log="serve.log")
        stack.timed("ti serve up + served run", start)
        assert run["state"]["type"] == "COMPLETED", stack.log("serve.log")
        assert set(_published(stack)) == {"NVDA", "AAPL"}
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C: serve pauses its schedules and exits
            try:
                serve.wait(20)
            except subprocess.TimeoutExpired:
                stop_group(serve)
