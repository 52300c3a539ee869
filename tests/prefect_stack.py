"""A Prefect server on PostgreSQL, a process worker, redis-server and a webhook, for the
end-to-end tests: started and stopped as one ``Stack`` (its fixture is in test_e2e_server).
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
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redisproc import REQUIRE_ENV, RedisProcess, free_port
from ti_core.settings import redact_url

__all__ = [
    "DATA",
    "DAY",
    "ROOT",
    "Stack",
    "StackInBackground",
    "Webhook",
    "stop_group",
    "unavailable",
]

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
BIN = Path(sys.executable).parent
PG_URL = os.environ.get("TI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DAY = "2026-05-11"


def unavailable(reason: str) -> None:
    """Skip, or fail when CI requires the end-to-end tests."""
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
        unavailable("asyncpg is not installed")
    name = f"ti_e2e_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # refused, timed out, auth rejected: no database for the server
        unavailable(
            f"PostgreSQL is not usable at {redact_url(PG_URL)}: {type(exc).__name__}: {exc}"
        )
    return name


def stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a process group this module started (its own session): TERM, then KILL."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class Webhook(BaseHTTPRequestHandler):
    """Records the JSON bodies the notification automation POSTs."""

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
        self.webhook_url = ""
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
            "PREFECT_UI_URL": f"http://127.0.0.1:{port}",  # notification links (else "None")
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # no 17:30 run mid-test
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "TI_DATA_DIR": str(tmp / "ti-data"),
            # The partial sample state has no verdict: published as HOLD marked degraded.
            "TI_PUBLISH_DEGRADED": "1",
        }

    def timed(self, label: str, start: float) -> None:
        self.timings[label] = round(time.monotonic() - start, 1)

    def cli(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(BIN / "prefect"), *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def _popen(self, args: list[str], log: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "wb") as out:
            return subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_server(self) -> None:
        self.database = _fresh_database()
        db_url = PG_URL.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
        env = self.env | {"PREFECT_API_DATABASE_CONNECTION_URL": f"{db_url}/{self.database}"}
        self.server = self._popen(
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            "server.log",
            env,
        )
        deadline = time.monotonic() + 300  # a busy 2-core machine needs minutes
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                pytest.fail(f"prefect server exited:\n{self.log('server.log')}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        pytest.fail(f"prefect server did not answer in 300 s:\n{self.log('server.log')}")

    def start_worker(self) -> None:
        env = self.env | {
            "TI_REDIS_URL": self.redis.url,
            # The replay states a run may name (the daily runs' and the event's): the worker's
            # settings decide, never a run's parameters.
            "TI_ARENA_ALLOWED": f"replay:{self.states}",
            "TI_TASK_RETRIES": "1",
            "TI_TASK_RETRY_DELAY": "0.1",
            "TI_RETRIES": "0",
            "TI_CONNECT_TIMEOUT": "1",
            "TI_SOCKET_TIMEOUT": "2",
        }
        self.worker = self._popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "ti-process"], "worker.log", env
        )

    def start_webhook(self) -> str:
        Webhook.received = []
        self.hook = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
        threading.Thread(target=self.hook.serve_forever, daemon=True).start()
        self.webhook_url = f"http://127.0.0.1:{self.hook.server_address[1]}/hook"
        return self.webhook_url

    def log(self, name: str) -> str:
        path = self.tmp / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def api(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.api_url}{path}", json=body, timeout=30)
        assert response.status_code < 300, f"{method} {path}: {response.text[:500]}"
        return response.json() if response.content else None

    def deployment_id(self, flow: str, name: str) -> str:
        return str(self.api("GET", f"/deployments/name/{flow}/{name}")["id"])

    def run(self, flow: str, name: str, parameters: dict[str, Any]) -> str:
        deployment = self.deployment_id(flow, name)
        run = self.api(
            "POST", f"/deployments/{deployment}/create_flow_run", {"parameters": parameters}
        )
        return str(run["id"])

    def wait(
        self, run_id: str, timeout: float = 60, attempt: int = 1, log: str = "worker.log"
    ) -> dict[str, Any]:
        """The flow run once its ``attempt``-th run has reached a terminal state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/flow_runs/{run_id}")
            if run["run_count"] >= attempt and (run["state"] or {}).get("type") in TERMINAL:
                return dict(run)
            time.sleep(0.5)
        pytest.fail(f"flow run {run_id} not finished in {timeout} s:\n{self.log(log)}")

    def prepare(self) -> None:
        """Everything the tests share: redis-server, the server, `prefect deploy --all`, the
        notification block and automations, the replay states, a worker. After the server is
        up two branches run side by side (each mostly waits for Prefect commands to start):
        work pool, worker, deploy; and block, automations."""
        start = time.monotonic()
        self.start_server()
        self.timed("server up (PostgreSQL, migrations)", start)
        url = self.webhook_url  # started by the caller's thread (see StackInBackground)
        with ThreadPoolExecutor(2) as pool:
            branches = [pool.submit(self._deploy_and_work), pool.submit(self._alerts, url)]
            for branch in branches:
                branch.result()
        samples = (
            ("NVDA", "nvda-2026-05-11-full"),
            ("AAPL", "aapl-2026-05-11-partial"),
            ("BRK.B", "brkb-2026-05-12-degraded"),
        )
        for ticker, sample in samples:
            (self.states / ticker).mkdir(parents=True)
            day = sample.split("-", 1)[1][:10]
            shutil.copy(DATA / f"{sample}.json", self.states / ticker / f"{day}.json")

    def _deploy_and_work(self) -> None:
        mark = time.monotonic()
        self.cli("work-pool", "create", "ti-process", "--type", "process")
        self.start_worker()  # it polls the pool: runs wait for the deployments, not for it
        self.cli("--no-prompt", "deploy", "--all")
        self.timed("work pool + worker + prefect deploy --all", mark)

    def _alerts(self, url: str) -> None:
        mark = time.monotonic()
        block = (
            "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B;"
            f"B(name='ti-e2e', url='{url}', json_data={{'subject': '{{{{subject}}}}', "
            "'body': '{{body}}'}).save('ti-e2e-alerts')"
        )
        subprocess.run(
            [sys.executable, "-c", block],
            env=self.env,
            check=True,
            timeout=120,
            capture_output=True,
        )
        subprocess.run(
            ["bash", "automations/apply.sh", "custom-webhook/ti-e2e-alerts"],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=120,
            capture_output=True,
        )
        self.timed("notification block + automations/apply.sh", mark)

    def close(self) -> None:
        stop_group(self.worker)
        stop_group(self.server)
        self.redis.stop()
        if self.hook is not None:
            self.hook.shutdown()
            self.hook.server_close()
        if self.database:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))


class StackInBackground:
    """A ``Stack`` prepared in a thread from the start of the session, so that the minute or
    two Prefect needs (PostgreSQL migrations, ``prefect deploy``) overlaps the tests before
    test_e2e_server instead of adding to them (tests/conftest.py starts it when that module
    is selected). redis-server and the webhook start here, in the caller's thread: the
    background thread only waits on subprocesses and HTTP, and never touches the global
    ``random`` (hypothesis, in the main thread, fails on any change to it)."""

    def __init__(self, tmp: Path) -> None:
        self.stack = Stack(tmp)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="e2e-stack")
        self._ready: Future[None] | None = None
        self._closed = False

    def start(self) -> StackInBackground:
        if shutil.which("redis-server") is None:
            return self  # result() reports it, in the test
        self.stack.redis.start()
        self.stack.start_webhook()
        self._ready = self._pool.submit(self.stack.prepare)
        return self

    def result(self) -> Stack:
        """The prepared stack (waits for it); a skip or failure of the setup is raised here."""
        if self._ready is None:
            unavailable("redis-server is not installed")
        assert self._ready is not None
        self._ready.result()
        return self.stack

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ready is not None:
            if not self._ready.done():  # the session ended first: make the setup fail fast
                stop_group(self.stack.server)
            try:
                self._ready.result()  # stopping halfway through would leave processes behind
            except BaseException:  # noqa: BLE001, S110 (reported by result() in the test)
                pass
        self._pool.shutdown()
        try:
            self.stack.close()
        finally:
            print(f"\ne2e timings (s): {self.stack.timings}")
