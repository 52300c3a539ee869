"""End to end on a real Prefect server: PostgreSQL, `prefect deploy --all`, a process worker.

One server, worker and redis-server for the module (about a minute in all). The tests then:
publish two tickers through ``daily-publish``; fail the same run with Redis stopped (the flow
run is Failed, its table names both tickers, the notify automation calls its webhook) and
retry it with ``prefect flow-run retry`` once Redis is back (published once, twice retried
still once); and emit ``ti.arena.completed`` so the triggered deployment publishes.

Needs PostgreSQL on 127.0.0.1:5432 (``TI_TEST_POSTGRES_URL`` to change it): skipped without
it, failed instead when ``TI_REQUIRE_REDIS_SERVER=1`` (CI).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redisproc import REQUIRE_ENV, RedisProcess, free_port
from ti_core.keys import DEFAULT_STREAM_NAME, decision_hash_key
from ti_core.settings import redact_url

pytestmark = [pytest.mark.slow, pytest.mark.redis_server, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
BIN = Path(sys.executable).parent
PG_URL = os.environ.get("TI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DAY = "2026-05-11"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 makes the end-to-end tests required")
    pytest.skip(reason)


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _fresh_database() -> str:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _unavailable("asyncpg is not installed")
    name = f"ti_e2e_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # refused, timed out, auth rejected: no database for the server
        _unavailable(f"PostgreSQL is not usable at {redact_url(PG_URL)}: "
                     f"{type(exc).__name__}: {exc}")
    return name


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a process group this module started (its own session): TERM, then KILL."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Stack:
    """A Prefect server on PostgreSQL, the deployments, a worker, Redis and replay states."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.states = tmp / "states"
        self.redis = RedisProcess(tmp / "redis")
        self.database = ""
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.hook: ThreadingHTTPServer | None = None
        self.timings: dict[str, float] = {}
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.port = port
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TI_"))}
        self.env = base | {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # no 17:30 run mid-test
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "TI_DATA_DIR": str(tmp / "ti-data"),
        }

    def timed(self, label: str, start: float) -> None:
        self.timings[label] = round(time.monotonic() - start, 1)

    def cli(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env,
                              stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def _popen(self, args: list[str], log: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "wb") as out:
            return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start_server(self) -> None:
        self.database = _fresh_database()
        db_url = PG_URL.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
        env = self.env | {"PREFECT_API_DATABASE_CONNECTION_URL": f"{db_url}/{self.database}"}
        self.server = self._popen([str(BIN / "prefect"), "server", "start", "--host",
                                   "127.0.0.1", "--port", str(self.port)], "server.log", env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                pytest.fail(f"prefect server exited:\n{self.log('server.log')}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        pytest.fail(f"prefect server did not answer in 90 s:\n{self.log('server.log')}")

    def start_worker(self) -> None:
        env = self.env | {
            "TI_REDIS_URL": self.redis.url,
            "TI_TASK_RETRIES": "1",
            "TI_TASK_RETRY_DELAY": "0.1",
            "TI_RETRIES": "0",
            "TI_CONNECT_TIMEOUT": "1",
            "TI_SOCKET_TIMEOUT": "2",
        }
        self.worker = self._popen([str(BIN / "prefect"), "worker", "start", "--pool",
                                   "ti-process"], "worker.log", env)

    def start_webhook(self) -> str:
        _Webhook.received = []
        self.hook = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
        threading.Thread(target=self.hook.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.hook.server_address[1]}/hook"

    def log(self, name: str) -> str:
        path = self.tmp / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def api(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.api_url}{path}", json=body, timeout=30)
        assert response.status_code < 300, f"{method} {path}: {response.text[:500]}"
        return response.json()

    def deployment_id(self, flow: str, name: str) -> str:
        return str(self.api("GET", f"/deployments/name/{flow}/{name}")["id"])

    def run(self, flow: str, name: str, parameters: dict[str, Any]) -> str:
        deployment = self.deployment_id(flow, name)
        run = self.api("POST", f"/deployments/{deployment}/create_flow_run",
                       {"parameters": parameters})
        return str(run["id"])

    def wait(self, run_id: str, timeout: float = 60, attempt: int = 1,
             log: str = "worker.log") -> dict[str, Any]:
        """The flow run once its ``attempt``-th run has reached a terminal state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/flow_runs/{run_id}")
            if run["run_count"] >= attempt and (run["state"] or {}).get("type") in TERMINAL:
                return dict(run)
            time.sleep(0.5)
        pytest.fail(f"flow run {run_id} not finished in {timeout} s:\n{self.log(log)}")

    def close(self) -> None:
        _stop(self.worker)
        _stop(self.server)
        self.redis.stop()
        if self.hook is not None:
            self.hook.shutdown()
            self.hook.server_close()
        if self.database:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed")
    s = Stack(tmp_path_factory.mktemp("e2e"))
    try:
        start = time.monotonic()
        s.redis.start()
        s.start_server()
        s.timed("server up (PostgreSQL, migrations)", start)
        mark = time.monotonic()
        s.cli("work-pool", "create", "ti-process", "--type", "process")
        s.cli("--no-prompt", "deploy", "--all")
        s.timed("work pool + prefect deploy --all", mark)
        mark = time.monotonic()
        url = s.start_webhook()
        block = (
            "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B;"
            f"B(name='ti-e2e', url='{url}', json_data={{'subject': '{{{{subject}}}}', "
            "'body': '{{body}}'}).save('ti-e2e-alerts')"
        )
        subprocess.run([sys.executable, "-c", block], env=s.env, check=True, timeout=60,
                       capture_output=True)
        subprocess.run(["bash", "automations/apply.sh", "custom-webhook/ti-e2e-alerts"],
                       cwd=ROOT, env=s.env, check=True, timeout=60, capture_output=True)
        s.timed("notification block + automations/apply.sh", mark)
        samples = (("NVDA", "nvda-2026-05-11-full"), ("AAPL", "aapl-2026-05-11-partial"),
                   ("BRK.B", "brkb-2026-05-12-degraded"))
        for ticker, sample in samples:
            (s.states / ticker).mkdir(parents=True)
            day = sample.split("-", 1)[1][:10]
            shutil.copy(DATA / f"{sample}.json", s.states / ticker / f"{day}.json")
        s.start_worker()
        yield s
    finally:
        s.close()
        print(f"\ne2e timings (s): {s.timings}")


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
    verify = subprocess.run([sys.executable, "-m", "flows.cli", "verify", "--json"], cwd=ROOT,
                            env=stack.env | {"TI_REDIS_URL": stack.redis.url},
                            capture_output=True, text=True, timeout=60)
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
    artifacts = stack.api("POST", "/artifacts/filter", {"artifacts": {
        "flow_run_id": {"any_": [run_id]}, "type": {"any_": ["table"]}}})
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
    while time.monotonic() < deadline and not _Webhook.received:
        time.sleep(0.5)
    assert _Webhook.received, "automation ti-publish-failed did not notify"
    message = _Webhook.received[0]
    assert "is Failed" in message["subject"] and "2 of 2 decisions failed" in message["body"]


def test_arena_completed_event_triggers_the_deployment(stack: Stack) -> None:
    with stack.redis.sync_client() as client:
        client.flushall()
    start = time.monotonic()
    emit = subprocess.run([sys.executable, "-m", "flows.cli", "emit-arena-completed", "brk.b",
                           "2026-05-12", "--state-dir", str(stack.states)], cwd=ROOT,
                          env=stack.env, capture_output=True, text=True, timeout=60)
    assert emit.returncode == 0, emit.stderr
    deployment = stack.deployment_id("publish-decision", "publish-on-arena-complete")
    deadline = time.monotonic() + 60
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not runs:
        runs = stack.api("POST", "/flow_runs/filter",
                         {"deployments": {"id": {"any_": [deployment]}}})
        time.sleep(0.5)
    assert len(runs) == 1, f"the trigger made {len(runs)} runs"
    run = stack.wait(runs[0]["id"])
    stack.timed("event -> triggered run", start)
    assert run["state"]["type"] == "COMPLETED", stack.log("worker.log")
    assert run["parameters"] == {"ticker": "BRK.B", "trade_date": "2026-05-12",
                                 "arena": f"replay:{stack.states.resolve()}"}
    assert set(_published(stack)) == {"BRK.B"}


def test_ti_serve_runs_the_same_deployments_without_a_worker(stack: Stack) -> None:
    """Last: ``ti serve`` refuses to take over `prefect deploy`'s deployments; once they are
    deleted it serves its own, and with the worker stopped only it can run them."""
    _stop(stack.worker)
    with stack.redis.sync_client() as client:
        client.flushall()
    start = time.monotonic()
    env = stack.env | {"TI_REDIS_URL": stack.redis.url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    command = [sys.executable, "-m", "flows.cli", "serve", "--tickers", "NVDA,aapl",
               "--arena", f"replay:{stack.states}"]
    refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 1, refused.stderr
    assert "prefect deployment delete daily/daily-publish" in refused.stderr
    for name in ("daily/daily-publish", "backfill/backfill",
                 "publish-decision/publish-on-arena-complete"):
        stack.cli("deployment", "delete", name)
    serve = stack._popen(command, "serve.log", env)
    try:
        deadline = time.monotonic() + 60
        while "being served" not in stack.log("serve.log"):
            assert serve.poll() is None and time.monotonic() < deadline, stack.log("serve.log")
            time.sleep(0.3)
        daily = stack.api("GET", "/deployments/name/daily/daily-publish")
        (schedule,) = daily["schedules"]
        assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == (
            "30 17 * * 1-5", "America/New_York")
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
                _stop(serve)
