"""The shared local Prefect server: found, shared, stopped; never orphaned; nothing-to-do is free.

The lifecycle tests start real servers (``prefect server start`` under ti's supervisor) in a
temporary data directory, with a short idle timeout, and stop them before they end.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flows.server import LocalServer
from tests.test_cli_run import TI, clean_env, ti

MAIN = Path(__file__).resolve().parents[1]
PROBE = (
    "import sys; from flows.cli import main; rc = main(sys.argv[1:]); "
    "print('PREFECT' if 'prefect' in sys.modules else 'CLEAN'); sys.exit(rc)"
)


def _gone(pid: int, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def _server_pids(data: Path) -> list[int]:
    """The supervisor and its children (the Prefect server)."""
    record = json.loads((data / "prefect" / "server.json").read_text())
    pid = int(record["pid"])
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *map(int, children.read_text().split())] if children.exists() else [pid]


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    LocalServer(path).stop()  # whatever a failed test left running


def _env(tmp_path: Path, data: Path, idle: str = "600") -> dict[str, str]:
    return clean_env(tmp_path, TI_DATA_DIR=str(data), TI_SERVER_IDLE_TIMEOUT=idle)


@dataclass
class IdleServer:
    data: Path
    env: dict[str, str]
    start: subprocess.Popen[str]
    pids: list[int]


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdleServer]:
    """``ti server start`` with a 3 s idle timeout, for test_the_server_stops_itself_when_idle.

    Started by the first of the module's two server tests, so that its Prefect server boots
    beside that test's own (each boot takes a minute on a busy machine, mostly waiting); the
    supervisor and its server are noted as soon as they exist, before they can go idle.
    """
    tmp = tmp_path_factory.mktemp("idle-server")
    data = tmp / "data"
    env = _env(tmp, data, idle="3")
    start = subprocess.Popen(
        [TI, "server", "start"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        pids: list[int] = []
        while len(pids) < 2:  # the supervisor and the Prefect server it runs
            assert start.poll() is None and time.monotonic() < deadline, start.communicate()
            time.sleep(0.1)
            with contextlib.suppress(OSError, ValueError):  # not written yet, or half
                pids = _server_pids(data)
        yield IdleServer(data, env, start, pids)
    finally:
        if start.poll() is None:
            start.kill()
        start.communicate()
        LocalServer(data).stop()  # whatever a failed test left running


def test_status_of_no_server_and_of_a_stale_record(tmp_path: Path, data: Path) -> None:
    env = _env(tmp_path, data)
    out = ti("server", "status", env=env)
    assert out.returncode == 3 and out.stdout.startswith("not running")
    (data / "prefect").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (data / "prefect" / "server.json").write_text(
        json.dumps(
            {"pid": dead.pid, "url": "http://127.0.0.1:9/api", "started": 0, "idle_timeout": 5}
        )
    )
    assert ti("server", "status", env=env).returncode == 3  # a dead supervisor is no server
    assert ti("server", "stop", env=env).stdout == "not running\n"
    garbage = data / "prefect" / "server.json"
    garbage.write_text("{not json")
    assert ti("server", "status", env=env).returncode == 3


@pytest.mark.slow  # a child ti per case
def test_nothing_to_do_never_starts_prefect(tmp_path: Path, data: Path) -> None:
    env = _env(tmp_path, data)
    probe = [sys.executable, "-c", PROBE]
    cases = [
        (["daily", "--tickers", "NVDA", "--arena", "nonsense spec"], 1),  # refused argument
        (["run", "NVDA", "--date", "2026-02-30"], 1),
        (["server", "status"], 3),
    ]
    for args, code in cases:
        done = subprocess.run(
            [*probe, *args], cwd=MAIN, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == code, (args, done.stderr)
        assert done.stdout.strip().endswith("CLEAN"), (args, done.stdout)
    assert not (data / "prefect" / "server.json").exists()


@pytest.mark.slow  # a child process importing the CLI
def test_a_sunday_daily_says_so_without_prefect(tmp_path: Path, data: Path) -> None:
    """``ti daily`` with no date, on a Sunday: the clock is faked in the child process only."""
    code = (
        "import datetime as d, sys, ti_core.backfill.calendar as c\n"
        "real = c.current_session\n"
        "c.current_session = lambda cal='XNYS', now=None: real(cal, now or "
        "d.datetime(2026, 5, 10, 15, tzinfo=d.UTC))\n" + PROBE.replace("; ", "\n")
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "daily", "--tickers", "NVDA"],
        cwd=MAIN,
        env=_env(tmp_path, data),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ti: nothing to publish: 2026-05-10 is a weekend (XNYS)",
        "CLEAN",
    ]


def test_help_lists_every_command_without_importing_them() -> None:
    code = (
        "import sys\nfrom flows.cli import main\ntry:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('flows.cmd', 'prefect', "
        "'ti_core.settings'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=MAIN, capture_output=True, text=True, timeout=60
    )
    from flows.cli import COMMANDS

    assert done.stdout.splitlines()[-1] == "[]"
    for name, command in COMMANDS.items():
        assert name in done.stdout and command.help.split()[0] in done.stdout


@pytest.mark.slow  # a child ti per case
def test_debug_is_accepted_anywhere(tmp_path: Path, data: Path) -> None:
    env = _env(tmp_path, data)
    for args in (
        ["--debug", "server", "status"],
        ["server", "status", "--debug"],
        ["server", "--debug", "status"],
    ):
        assert ti(*args, env=env).returncode == 3, args
    out = ti("run", "NV:DA", "--date", "2026-05-11", "--debug", env=env)
    assert out.returncode == 1 and "Traceback" in out.stderr  # --debug after the arguments


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.usefixtures("idle_server")  # its server boots beside this test's
def test_one_server_shared_found_after_a_kill_and_stopped(tmp_path: Path, data: Path) -> None:
    env = _env(tmp_path, data)
    # A ti killed while the server starts: the server is recorded and keeps starting. It
    # carries Redis secrets, which the server must not inherit.
    killed = subprocess.Popen(
        [TI, "run", "NVDA", "--date", "2026-05-11"],
        env=env | SECRETS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert killed.stderr is not None
    assert killed.stderr.readline().startswith(b"ti: starting the local Prefect server")
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    killed.stderr.close()
    pids = _server_pids(data)

    # Two commands at once share that one server.
    with ThreadPoolExecutor(2) as pool:
        starts = list(pool.map(lambda _: ti("server", "start", env=env, timeout=400), range(2)))
    assert [s.returncode for s in starts] == [0, 0], [s.stderr for s in starts]
    assert starts[0].stdout == starts[1].stdout and f"pid {pids[0]}" in starts[0].stdout
    run = ti("run", "AAPL", "--date", "2026-05-11", env=env, timeout=300)
    assert run.returncode == 0 and run.stderr == "", run.stderr  # warm: nothing to say
    status = ti("server", "status", env=env)
    assert status.returncode == 0 and status.stdout.startswith("running: UI http://127.0.0.1:")
    record = LocalServer(data).read()
    assert record is not None
    with urllib.request.urlopen(f"{record.ui_url}/ui-settings", timeout=60) as reply:
        assert json.loads(reply.read())["api_url"] == record.url  # the UI's pages call this API

    _only_the_users_ti_commands_may_use_it(record, data, pids)
    _stop_waits_for_a_running_command(tmp_path, data, env)

    assert ti("server", "stop", env=env).stdout == "stopped\n"
    assert all(_gone(pid) for pid in pids), pids
    assert not (data / "prefect" / "server.json").exists()


SECRETS = {"TI_REDIS_PASSWORD": "hunter2-redis", "TI_REDIS_SENTINEL_PASSWORD": "hunter2-sentinel"}


def _post(url: str, auth: str | None = None) -> int:
    """The HTTP status of an empty JSON POST to ``url``, with basic auth ``user:password``."""
    request = urllib.request.Request(url, data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _only_the_users_ti_commands_may_use_it(record: Any, data: Path, pids: list[int]) -> None:
    """Another local user reaches 127.0.0.1 but has no credentials, and cannot read them."""
    deployment = uuid.uuid4()
    create_run = f"{record.url}/deployments/{deployment}/create_flow_run"
    assert _post(create_run) == 401  # unauthenticated: refused before anything runs
    assert _post(create_run, "ti:guessed") == 401
    secret = (data / "prefect" / "api-auth").read_text().strip()
    assert _post(create_run, secret) == 404  # authenticated: only the deployment is unknown
    assert _post(f"{record.url}/deployments/filter", secret) == 200
    for path in (data, data / "prefect"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for name in ("store.dat", "prefect/server.json", "prefect/api-auth", "prefect/prefect.db"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    for pid in pids:  # the supervisor and the server: no Redis secret, no client credentials
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert not any(value.encode() in environ for value in SECRETS.values()), pid
        names = {item.split(b"=", 1)[0] for item in environ.split(b"\0")}
        assert not {n for n in names if n.startswith(b"TI_")}, (pid, names)
        assert b"PREFECT_API_AUTH_STRING" not in names, pid


def _stop_waits_for_a_running_command(tmp_path: Path, data: Path, env: dict[str, str]) -> None:
    """``ti server stop`` under a running ``ti run`` is refused, naming it; the run publishes."""
    gate = tmp_path / "gate"
    running = subprocess.Popen(
        [TI, "run", "MSFT", "--date", "2026-05-11", "--arena", "tests.arena_fixtures:gated_arena"],
        env=env | {"TI_TEST_ARENA_GATE": str(gate)},
        cwd=MAIN,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lease = data / "prefect" / "leases" / str(running.pid)
        deadline = time.monotonic() + 120
        while not lease.exists():
            assert running.poll() is None and time.monotonic() < deadline, running.communicate()
            time.sleep(0.05)
        refused = ti("server", "stop", env=env)
        assert refused.returncode == 1 and refused.stdout == "", refused
        assert refused.stderr.startswith("ti: the local Prefect server is in use by 1 command")
        assert f"pid {running.pid}: ti run MSFT" in refused.stderr
        assert "'ti server stop --force'" in refused.stderr
    finally:
        gate.touch()
        out, err = running.communicate(timeout=300)
    assert running.returncode == 0 and out.startswith("MSFT 2026-05-11: BUY"), err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_server_stops_itself_when_idle(idle_server: IdleServer) -> None:
    out, err = idle_server.start.communicate(timeout=400)
    assert idle_server.start.returncode == 0, err
    assert all(_gone(pid, within=120) for pid in idle_server.pids), idle_server.pids
    assert not (idle_server.data / "prefect" / "server.json").exists()
    assert ti("server", "status", env=idle_server.env).returncode == 3
