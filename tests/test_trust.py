"""The trust boundary around what publishes (issue 22, finding 1; ``ti server stop``, finding 3).

- a deployment's run cannot name the code or state it publishes (``arena``) beyond what the
  settings where it runs allow, nor ``force`` over newer decisions;
- the data directory and its files are the user's only, whatever the umask;
- the local server's environment holds none of the caller's secrets;
- ``ti server stop`` refuses while a ``ti`` command holds a lease, unless ``--force``.

The local server's authentication itself is tested on a real server in test_cli_server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from flows.server import LocalServer, _server_env
from ti_core.arenas.registry import arena_allowed
from ti_core.errors import ConfigError
from ti_core.settings import TiSettings
from ti_core.store.file import keep_private, private_dir

DATA = Path(__file__).parent / "data"
DAY = "2026-05-11"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _states(root: Path, verdict: str = "BUY") -> Path:
    """A replay directory holding NVDA's state for DAY (``root/NVDA/DAY.json``)."""
    state = json.loads((DATA / "nvda-2026-05-11-full.json").read_text())
    state["synthesis_verdict"] = verdict
    (root / "NVDA").mkdir(parents=True)
    (root / "NVDA" / f"{DAY}.json").write_text(json.dumps(state))
    return root


# -- which arena a deployment's run may name --------------------------------------------------


def test_a_deployments_arena_comes_from_the_settings(tmp_path: Path) -> None:
    states = _states(tmp_path / "states")
    (tmp_path / "elsewhere").mkdir()
    (states / "link-out").symlink_to(tmp_path / "elsewhere")
    s = TiSettings(arena="tests.arena_fixtures:sync_arena", arena_allowed=f"demo, replay:{states}")
    assert arena_allowed(None, s)  # TI_ARENA decides
    assert arena_allowed("tests.arena_fixtures:sync_arena", s)
    assert arena_allowed("demo", s)
    assert arena_allowed(f"replay:{states}", s)
    assert arena_allowed(f"replay:{states}/NVDA", s)  # a directory under an allowed one
    for refused in (
        "shutil:rmtree",
        "tests.arena_fixtures:async_arena",
        f"replay:{tmp_path}",
        f"replay:{states}/../elsewhere",  # resolved: it leaves the allowed directory
        f"replay:{states}/link-out",  # so does a symlink
        f"replay:{states}-attacker",  # a name that only starts like it
        "replay:",
    ):
        assert not arena_allowed(refused, s), refused
    assert not arena_allowed("demo", TiSettings())  # nothing configured: only None


def _deployed_run(flow: Any, parameters: dict[str, Any]) -> Any:
    """Create a run of a deployment of ``flow`` with ``parameters`` (as anyone with the API
    can) and execute it here, as a worker or ``ti serve`` would: its final state."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow_async

    deployment_id = flow.to_deployment(name="trust-test").apply()

    async def go() -> Any:
        async with get_client() as client:
            run = await client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
        assert run.deployment_id is not None
        return await run_flow_async(
            flow, flow_run=run, parameters=run.parameters, return_type="state"
        )

    return asyncio.run(go())


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TI_ARENA_ALLOWED", raising=False)
    yield tmp_path


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_parameter_naming_code_is_refused(in_tmp: Path) -> None:
    """``shutil:rmtree`` as the arena would call ``rmtree("NVDA", DAY)``: ./NVDA, gone."""
    from flows.backfill import backfill
    from flows.pipeline import publish_decision

    victim = in_tmp / "NVDA"
    victim.mkdir()
    runs = [
        (publish_decision, {"ticker": "NVDA", "trade_date": DAY, "arena": "shutil:rmtree"}),
        (
            backfill,
            {"tickers": ["NVDA"], "start": DAY, "end": DAY, "arena": "shutil:rmtree"},
        ),
    ]
    for flow, parameters in runs:
        state = _deployed_run(flow, parameters)
        assert state.is_failed(), state
        assert "arena 'shutil:rmtree' is not allowed for a deployment's run" in state.message
        assert victim.is_dir()


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_parameter_cannot_replay_or_force_an_attackers_state(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import publish_decision

    attacker = _states(in_tmp / "attacker", verdict="SELL")
    ours = _states(in_tmp / "ours")
    monkeypatch.setenv("TI_ARENA_ALLOWED", f"replay:{ours}")
    base = {"ticker": "NVDA", "trade_date": DAY}
    refused = _deployed_run(publish_decision, base | {"arena": f"replay:{attacker}"})
    assert refused.is_failed() and "is not allowed for a deployment's run" in refused.message
    forced = _deployed_run(publish_decision, base | {"arena": f"replay:{ours}", "force": True})
    assert forced.is_failed() and "may not force over newer decisions" in forced.message
    assert _verdict() is None  # nothing published by either
    for flag, variable in (
        ("allow_demo", "TI_ALLOW_DEMO_PUBLISH"),
        ("publish_degraded", "TI_PUBLISH_DEGRADED"),
    ):
        run = _deployed_run(publish_decision, base | {"arena": f"replay:{ours}", flag: True})
        assert run.is_failed(), run
        assert f"may not set {flag}" in run.message and variable in run.message
    assert _verdict() is None  # nothing published by any of them
    allowed = _deployed_run(publish_decision, base | {"arena": f"replay:{ours}"})
    assert allowed.is_completed(), allowed.message
    assert _verdict() == "BUY"


def _verdict() -> str | None:
    """The published NVDA decision's verdict (embedded store of TI_DATA_DIR), or None."""
    from ti_core.consume.reader import get_decision
    from ti_core.transport.connection import connect

    async def read() -> str | None:
        async with connect(readonly=True) as client:
            envelope = await get_decision(client, "NVDA", DAY)
        return None if envelope is None else str(envelope.decision.synthesis.verdict)

    return asyncio.run(read())


# -- the data directory -----------------------------------------------------------------------


@pytest.fixture
def wide_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("wide_umask")
def test_the_store_and_its_directory_are_private(tmp_path: Path) -> None:
    from ti_core.transport.connection import connect

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    settings = TiSettings(data_dir=data)

    async def write(value: str) -> None:
        async with connect(settings=settings) as client:
            await client.set("k", value)

    for value in ("a", "b"):  # the second save makes store.dat.prev
        asyncio.run(write(value))
    assert _mode(data) == 0o700
    assert _mode(data / "store.dat") == 0o600
    assert _mode(data / "store.dat.prev") == 0o600


@pytest.mark.usefixtures("wide_umask")
def test_wider_files_are_tightened_and_anothers_refused(tmp_path: Path) -> None:
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o777)
    os.chmod(wide, 0o777)
    (wide / "store.dat").write_text("x")
    os.chmod(wide / "store.dat", 0o644)
    private_dir(wide)
    keep_private(wide / "store.dat", wide / "missing")
    assert (_mode(wide), _mode(wide / "store.dat")) == (0o700, 0o600)
    assert not (wide / "missing").exists()
    if os.geteuid() != 0:
        return  # only root can give a directory to another user
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    with pytest.raises(ConfigError, match=r"belongs to uid 65534, not to you .* TI_DATA_DIR"):
        private_dir(foreign)


def test_the_servers_environment_has_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "TI_REDIS_PASSWORD": "hunter2",
        "TI_REDIS_SENTINEL_PASSWORD": "sentinel-pw",
        "TI_REDIS_URL": "redis://u:pw@host:6379/0",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "PREFECT_API_KEY": "pnu_x",
        "PREFECT_API_AUTH_STRING": "someone:else",
        "PREFECT_API_URL": "http://elsewhere/api",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PREFECT_SERVER_LOGGING_LEVEL", "INFO")  # the server's own settings stay
    env = _server_env(tmp_path)
    assert not set(secrets) & set(env)
    assert not any(v in value for value in env.values() for v in secrets.values())
    assert env["PREFECT_SERVER_LOGGING_LEVEL"] == "INFO" and env["PATH"] == os.environ["PATH"]


# -- ti server stop and the leases ------------------------------------------------------------


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])]
    procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_server_stop_refuses_under_a_live_lease(
    sleepers: list[subprocess.Popen[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A recorded server (any live process stands in: it is not the supervisor, so it is not
    killed) and a lease of another live process, as a running ``ti run`` holds."""
    server = LocalServer(TiSettings().data_dir)
    recorded, command = sleepers
    with server.locked():
        server._write(_record(recorded.pid))  # what a start writes
    (server.leases / str(command.pid)).touch()
    assert main(["server", "stop"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("ti: the local Prefect server is in use by 1 command (pid ")
    assert f"pid {command.pid}: python" in err and "'ti server stop --force'" in err
    assert err.count("\n") == 1 and server.state_file.exists()
    assert main(["server", "stop", "--force"]) == 0
    assert capsys.readouterr().out == "stopped\n" and not server.state_file.exists()


def _record(pid: int) -> Any:
    from flows.server import Record

    return Record(pid, "http://127.0.0.1:9/api", 0.0, 60.0)


def test_server_files_are_private(wide_umask: None, sleepers: Any) -> None:
    server = LocalServer(TiSettings().data_dir)
    with server.locked():
        server._write(_record(sleepers[0].pid))
    secret = server.auth_string()
    assert secret.startswith("ti:") and len(secret) > 40 and server.auth_string() == secret
    for path in (server.state_file, server.auth_file, server.dir / "server.lock"):
        assert _mode(path) == 0o600, path
    assert _mode(server.dir) == _mode(server.dir.parent) == _mode(server.leases) == 0o700
    assert LocalServer(TiSettings().data_dir / "other").auth_string() != secret  # per data dir
    shutil.rmtree(server.dir)
