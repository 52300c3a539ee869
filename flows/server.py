"""One local Prefect server shared by every ``ti`` command, started once, stopped when idle.

Prefect's ephemeral mode starts an API server inside each process and gives it 20 s: every
command pays the start again, and a busy machine misses the limit. Instead, with no
``PREFECT_API_URL`` (environment or active Prefect profile), the first command that runs a
flow starts ``prefect server start`` (SQLite in ``TI_DATA_DIR/prefect``, 127.0.0.1, a free
port) under a small detached supervisor, and later commands reuse it:

- ``server.json`` records the supervisor's PID, the URL and the start time; ``server.lock``
  (an exclusive ``flock``) serialises reading and writing it, so concurrent commands share
  one server. A record whose supervisor is gone, or that never answered within the start
  timeout, is stale: it is stopped and replaced.
- Each command holds a lease (``leases/PID``) while it uses the server. The supervisor stops
  the server once no lease's process is alive and nothing happened for
  ``TI_SERVER_IDLE_TIMEOUT`` seconds (0: never), like a build tool's daemon.
- The server requires HTTP basic auth (Prefect's own ``PREFECT_SERVER_API_AUTH_STRING``): a
  random secret made once per data directory, kept in ``api-auth`` (0600), and sent by the
  ``ti`` commands (``PREFECT_API_AUTH_STRING``, which the flow runs they start inherit). Other
  local users can reach 127.0.0.1 but not read the secret: the data directory is 0700, its
  files 0600, whatever the umask. The server's environment holds none of the caller's
  secrets (:func:`_server_env` passes an allow-list).
- The supervisor runs in its own session (a killed or interrupted ``ti`` does not take it
  along), and the server dies with the supervisor (``PR_SET_PDEATHSIG`` on Linux), so
  ``ti server stop`` (or the idle timeout) always finds and stops both.

This module never imports Prefect: it runs before the command imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ti_core.errors import TiError
from ti_core.store.file import keep_private, private_dir

__all__ = ["AUTH_USER", "LocalServer", "ServerInUseError", "configured_api_url", "use_local_server"]

_API_ENV = "PREFECT_API_URL"
_AUTH_ENV = "PREFECT_API_AUTH_STRING"  # Prefect's client setting: basic auth "user:password"
_SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"  # the server's: what it requires
AUTH_USER = "ti"
# What the server may inherit: its own settings and the system's. Nothing else (TI_*
# passwords and URLs, cloud keys...) reaches it: it runs for 15 min after the command.
_SERVER_ENV_NAMES = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV"}
_SERVER_ENV_PREFIXES = ("PREFECT_", "LC_", "PYTHON")
# Prefect client settings: the caller's API, key and auth are not the server's.
_CLIENT_ONLY = {_API_ENV, _AUTH_ENV, "PREFECT_API_KEY"}
_POLL = 0.5


class ServerInUseError(TiError):
    """``ti server stop`` refused: a ``ti`` command holds a lease on the server."""


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment or the active Prefect profile, if any.

    Read without importing Prefect (profiles.toml under ``PREFECT_HOME``, ``~/.prefect`` by
    default); a profile that cannot be read counts as none. If the caller has already
    imported Prefect (``ti`` called in-process, as tests do), Prefect's own setting decides:
    without one, Prefect's ephemeral mode is left to run as before.
    """
    url = os.environ.get(_API_ENV)
    if url:
        return url
    if "prefect.settings" in sys.modules:  # already imported (in-process use): ask Prefect
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    try:
        import tomllib

        profiles = tomllib.loads((home / "profiles.toml").read_text())
    except (OSError, ValueError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    value = profiles.get("profiles", {}).get(active, {}).get(_API_ENV)
    return str(value) if value else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform == "linux":  # a zombie child of ours is not alive
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Record:
    """What ``server.json`` holds about the running server."""

    pid: int  # the supervisor; the server is its child, in its process group
    url: str  # the API, http://127.0.0.1:PORT/api
    started: float  # time.time() when the command that started it launched it
    idle_timeout: float

    @property
    def ui_url(self) -> str:
        return self.url.removesuffix("/api")


class LocalServer:
    """The shared server of one data directory: start, find, lease, stop."""

    def __init__(
        self, data_dir: Path, *, idle_timeout: float = 900.0, start_timeout: float = 180.0
    ) -> None:
        self.dir = Path(data_dir) / "prefect"
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.state_file = self.dir / "server.json"
        self.leases = self.dir / "leases"
        self.log_file = self.dir / "server.log"
        self.auth_file = self.dir / "api-auth"
        self.database = self.dir / "prefect.db"

    def make_private(self) -> None:
        """The data directory and this server's files: this user's only (0700, 0600)."""
        private_dir(self.dir.parent)
        private_dir(self.dir)
        private_dir(self.leases)
        keep_private(
            self.state_file,
            self.log_file,
            self.auth_file,
            self.dir / "server.lock",
            *(self.dir / f"prefect.db{suffix}" for suffix in ("", "-wal", "-shm", "-journal")),
        )

    def auth_string(self) -> str:
        """``ti:SECRET``, the server's basic-auth credentials, made once per data directory."""
        try:
            text = self.auth_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        if not text:  # made under the lock by acquire(), before any server reads it
            self.make_private()
            text = f"{AUTH_USER}:{secrets.token_urlsafe(32)}"
            tmp = self.auth_file.with_name(f".api-auth.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.auth_file)
        return text

    @contextlib.contextmanager
    def locked(self, *, wait: bool = True) -> Iterator[None]:
        """The exclusive lock that guards ``server.json`` and the leases.

        With ``wait=False``, raises BlockingIOError at once if another process holds it.
        """
        self.make_private()
        fd = os.open(self.dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
        with open(fd, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> Record | None:
        """The recorded server, or None if there is none or the record is damaged."""
        try:
            data = json.loads(self.state_file.read_text())
            return Record(
                int(data["pid"]),
                str(data["url"]),
                float(data["started"]),
                float(data["idle_timeout"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, record: Record) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record.__dict__))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_file)

    def _usable(self, record: Record | None) -> bool:
        """Its supervisor lives, and it answers or may still be starting."""
        if record is None or not _alive(record.pid):
            return False
        if time.time() - record.started < self.start_timeout:
            return True
        # A busy server may answer slowly: only one that stays silent is replaced.
        return any(_healthy(record.url, timeout=10) for _ in range(3))

    def status(self) -> tuple[Record | None, bool]:
        """(the live record or None, whether it answers its health check now)."""
        record = self.read()
        if record is None or not _alive(record.pid):
            return None, False
        return record, _healthy(record.url)

    def acquire(self, *, lease: bool = True) -> tuple[Record, bool]:
        """The running server's record (starting it if needed) and whether this call started it.

        With ``lease``, this process holds a lease until it exits (see :meth:`release`).
        """
        with self.locked():
            record = self.read()
            started = False
            if not self._usable(record):
                if record is not None:
                    self._kill(record)
                record = self._spawn()
                started = True
            assert record is not None
            self.auth_string()  # a data dir from before the server required it: made now
            if lease:
                (self.leases / str(os.getpid())).touch(mode=0o600)
            self._touch_activity()
        return record, started

    def release(self) -> None:
        """Drop this process's lease; the idle countdown starts from now."""
        with contextlib.suppress(OSError):
            (self.leases / str(os.getpid())).unlink()
        self._touch_activity()

    def wait_ready(self, record: Record, *, say: Any = None) -> None:
        """Block until the server answers, up to the start timeout from its launch."""
        deadline = record.started + self.start_timeout
        while not _healthy(record.url):
            if not _alive(record.pid):
                raise TiError(
                    f"the local Prefect server exited while starting; see {self.log_file}"
                )
            if time.time() > deadline:
                raise TiError(
                    f"the local Prefect server did not answer within {self.start_timeout:.0f}s "
                    f"(TI_SERVER_START_TIMEOUT); see {self.log_file}, stop it with "
                    "'ti server stop', or set PREFECT_API_URL to a running server"
                )
            time.sleep(_POLL)

    def stop(self, timeout: float = 30.0, *, force: bool = False) -> Record | None:
        """Stop the recorded server; returns it, or None if none was running.

        A stale record (its supervisor gone) is removed too. While another process holds a
        lease (a ``ti`` command using the server: stopping would fail its run half way, with
        its decisions' outcomes unknown to it), raises ``ServerInUseError`` unless ``force``.
        """
        with self.locked():
            record = self.read()
            running = record is not None and _alive(record.pid)
            users = [pid for pid in _live_leases(self.leases) if pid != os.getpid()]
            if running and users and not force:
                raise ServerInUseError(
                    f"the local Prefect server is in use by {_commands(users)}; stopping it "
                    "now would fail their runs: wait for them to finish, or "
                    "'ti server stop --force'"
                )
            if record is not None:
                self._kill(record, timeout)
        return record if running else None

    # -- internals (call with the lock held) ---------------------------------------------

    def _touch_activity(self) -> None:
        with contextlib.suppress(OSError):
            (self.dir / "activity").touch(mode=0o600)

    def _kill(self, record: Record, timeout: float = 30.0) -> None:
        """Stop the supervisor's whole process group (the server with it), drop the record."""
        if _alive(record.pid) and _is_supervisor(record.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _group_alive(record.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.state_file.unlink()

    def _spawn(self) -> Record:
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        args = [
            sys.executable,
            "-m",
            "flows.server",
            "supervise",
            str(self.dir),
            str(port),
            str(self.idle_timeout),
        ]
        self.auth_string()  # made before the server needs it
        fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(fd, "ab") as log:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                cwd=str(self.dir),
                env=_server_env(self.dir),
            )
        # Reap it if it ends while this process lives (a long in-process caller).
        threading.Thread(target=proc.wait, daemon=True, name="ti-server-reaper").start()
        record = Record(proc.pid, url, time.time(), self.idle_timeout)
        self._write(record)
        return record


def _is_supervisor(pid: int) -> bool:
    """Guard against a recycled PID: on Linux, check it runs this module's supervisor."""
    if sys.platform != "linux":
        return True
    try:
        return b"flows.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return _alive(pgid)


def _server_env(state_dir: Path) -> dict[str, str]:
    """The server's environment: its own SQLite database, and of the caller's environment only
    what a Prefect server needs (an allow-list): no ``TI_*`` credentials, no client settings.

    The auth secret is not here either: the supervisor reads it from its file and hands it to
    the Prefect server alone.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if (k in _SERVER_ENV_NAMES or k.startswith(_SERVER_ENV_PREFIXES))
        and k not in _CLIENT_ONLY
        and k != _SERVER_AUTH_ENV
    }
    env.update(
        {
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{state_dir}/prefect.db",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": env.get("PREFECT_SERVER_LOGGING_LEVEL", "WARNING"),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
            ),
        }
    )
    return env


def use_local_server(settings: Any, *, say: Any = None) -> tuple[LocalServer, Record] | None:
    """Point this process at the shared local server, starting it if needed (not waiting).

    Returns None, changing nothing, when ``PREFECT_API_URL`` is configured. ``say`` is called
    with a line for stderr when this call starts the server. Call before importing Prefect;
    then :meth:`LocalServer.wait_ready` before the first API call.
    """
    if configured_api_url() or "prefect.settings" in sys.modules:
        return None
    server = LocalServer(
        settings.data_dir,
        idle_timeout=settings.server_idle_timeout,
        start_timeout=settings.server_start_timeout,
    )
    record, started = server.acquire()
    import atexit

    atexit.register(server.release)
    if started and say is not None:
        say(
            f"ti: starting the local Prefect server at {record.ui_url} (once; it stops after "
            f"{_idle_text(server.idle_timeout)} idle; 'ti server stop' stops it now)"
        )
    # PREFECT_API_URL and PREFECT_API_AUTH_STRING are Prefect's own configuration, read from
    # the environment by Prefect (and by the flow runs it starts): the environment writes ti
    # makes on purpose.
    os.environ[_API_ENV] = record.url
    os.environ[_AUTH_ENV] = server.auth_string()
    return server, record


def _idle_text(seconds: float) -> str:
    if seconds <= 0:
        return "never being"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


# -- the supervisor process (python -m flows.server supervise DIR PORT IDLE) ----------------


def _die_with_parent() -> None:
    """In the server, before exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _live_leases(leases: Path) -> list[int]:
    """The PIDs of live processes holding a lease; leases of dead processes are removed."""
    live = []
    for lease in leases.glob("*"):
        try:
            pid = int(lease.name)
        except ValueError:
            continue
        if _alive(pid):
            live.append(pid)
        else:
            with contextlib.suppress(OSError):
                lease.unlink()
    return sorted(live)


def _busy(leases: Path) -> bool:
    """Whether a live process holds a lease; leases of dead processes are removed."""
    return bool(_live_leases(leases))


def _commands(pids: list[int]) -> str:
    """``2 commands (pid 12: ti run NVDA; pid 13: ti serve)``: what holds the leases."""

    def line(pid: int) -> str:
        try:
            argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
            if Path(argv[0]).name.startswith("python") and argv[1:2] != ["-c"]:
                argv = argv[1:]  # the ti script under its interpreter: "ti run NVDA"
            words = [Path(argv[0]).name] + [a for a in argv[1:4] if a]
            return f"pid {pid}: {' '.join(words)}"
        except (OSError, IndexError, UnicodeDecodeError):
            return f"pid {pid}"

    shown = "; ".join(line(pid) for pid in pids[:3]) + ("; ..." if len(pids) > 3 else "")
    return f"{len(pids)} command{'s' if len(pids) > 1 else ''} ({shown})"


def supervise(state_dir: Path, port: int, idle_timeout: float) -> int:
    """Run the server until it is idle for ``idle_timeout`` s, told to stop, or it exits."""
    os.umask(0o077)  # the database, its journal and the log: this user's only
    server = LocalServer(state_dir.parent, idle_timeout=idle_timeout)
    auth = server.auth_string()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--analytics-off",
        ],
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        env={
            **os.environ,
            # Links in notifications and events (the automation's ``ui_url``), else "None".
            "PREFECT_UI_URL": f"http://127.0.0.1:{port}",
            # The API address the UI's pages call: Prefect derives it from its port *setting*
            # (4200), not from ``--port``, so without this the UI says it cannot connect.
            "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api",
            # Every API call but the health check needs these credentials; the UI asks once.
            _SERVER_AUTH_ENV: auth,
        },
    )
    stopping = False
    url = f"http://127.0.0.1:{port}/api"

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        while not stopping and child.poll() is None and not _healthy(url):
            time.sleep(0.5)  # the idle countdown starts once it answers
        server._touch_activity()
        while not stopping and child.poll() is None:
            time.sleep(1.0)
            if idle_timeout <= 0 or _busy(server.leases):
                server._touch_activity()
                continue
            try:
                idle = time.time() - (server.dir / "activity").stat().st_mtime
            except OSError:
                idle = idle_timeout
            if idle >= idle_timeout:
                with server.locked():  # no command may lease it while it stops
                    if _busy(server.leases):
                        continue
                    record = server.read()
                    if record is not None and record.pid == os.getpid():
                        server.state_file.unlink()
                    stopping = True
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        # Whoever holds the lock now is stopping this server (ti server stop) and drops the
        # record itself; waiting for it would only delay that.
        with contextlib.suppress(BlockingIOError), server.locked(wait=False):
            record = server.read()
            if record is not None and record.pid == os.getpid():
                server.state_file.unlink()
    return 0


if __name__ == "__main__":  # the supervisor: python -m flows.server supervise DIR PORT IDLE
    if len(sys.argv) != 5 or sys.argv[1] != "supervise":
        sys.exit("usage: python -m flows.server supervise STATE_DIR PORT IDLE_SECONDS")
    sys.exit(supervise(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
