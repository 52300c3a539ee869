"""Start Prefect's temporary API server at once, so it boots while ``ti backfill`` loads.

With no ``PREFECT_API_URL``, Prefect starts a temporary server on the first API call, after
the caller has imported Prefect and the flow: several seconds in series. A one-shot command
can instead start the same server (uvicorn on Prefect's ``create_app`` factory, UI off, the
ephemeral profile, exactly as Prefect's own ``SubprocessASGIServer`` does) before importing
Prefect, point ``PREFECT_API_URL`` at it, and wait for its health check only when the flow
is about to run (if it never answers, the command stops it and says so). With
``PREFECT_API_URL`` set (a running server or Prefect Cloud) nothing is started.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from flows.cli import drain_prefect
from ti_core.errors import TiError

__all__ = ["EarlyPrefectServer"]

_API_ENV = "PREFECT_API_URL"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when ``ti`` dies, even by SIGKILL (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EarlyPrefectServer:
    """Context manager: the temporary server while the block runs (or nothing, if not needed)."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self._saved: str | None = None

    def __enter__(self) -> EarlyPrefectServer:
        spec = importlib.util.find_spec("prefect")
        if os.environ.get(_API_ENV) or "prefect" in sys.modules or spec is None:
            return self  # a configured server, or Prefect already set up: leave it alone
        locations = spec.submodule_search_locations or []
        port = _free_port()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(list(locations)[0]).parent),
             "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.url = f"http://127.0.0.1:{port}/api"
        self._saved = os.environ.get(_API_ENV)
        os.environ[_API_ENV] = self.url
        return self

    def wait_ready(self) -> None:
        """Block until the server (if started) answers its health check; raise if it never does."""
        if self.proc is None or self.url is None:
            return
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        code = self.proc.poll()
        self._stop()
        raise TiError(
            f"Prefect's temporary server did not start in {self.timeout:.0f}s"
            + (f" (exit code {code})" if code is not None else "")
            + "; run one with 'prefect server start' and set PREFECT_API_URL"
        )

    def _stop(self) -> None:
        if self.proc is not None:
            drain_prefect()
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
        if self.url is not None:
            if self._saved is None:
                os.environ.pop(_API_ENV, None)
            else:
                os.environ[_API_ENV] = self._saved
            self.url = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
