"""Noticing, within seconds, that the Prefect API a ``ti`` command runs its flow on is gone.

Without this, a flow whose Prefect server dies keeps going on Prefect's own patience: every
state change, log batch and event is retried with backoff against a closed port, so a 20-ticker
``ti daily`` took 21 minutes to say ``ConnectError``, and reported 4 of 20 decisions although
all 20 were published. The run's results live in Redis, not in Prefect; so:

- While ``run``, ``daily`` or ``backfill`` runs its flow, a thread asks the API's ``/health``
  once a second. Any HTTP answer (even an error status) means the server is there. No answer
  at all for ``TI_PREFECT_LOST_AFTER`` seconds of refused connections (nothing listens: the
  server is gone), or for six times that when connections are accepted but never answered (a
  server that is merely busy must not be declared dead), means it is lost.
- Then the command prints one line saying so, cancels its flow (waiting a few seconds at most:
  the cancelled flow itself tries to tell the dead API), reads each decision's outcome back
  from Redis (the lookup hashes, the failure records) and prints it, and exits 1 at once,
  skipping the interpreter's exit handlers: Prefect's would retry the dead API again.

Prefect's own client settings (``PREFECT_API_REQUEST_TIMEOUT``, ``PREFECT_CLIENT_MAX_RETRIES``)
are left alone: they also protect runs against a slow but live server. This module never
imports Prefect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ti_core.settings import TiSettings

__all__ = ["PrefectWatch", "probe", "watch_api"]

T = TypeVar("T")
SILENT_FACTOR = 6  # how much longer an accepted-but-unanswered API is given than a closed one
CANCEL_GRACE = 5.0  # seconds the cancelled flow gets to stop before Redis is read back
_INTERVAL = 1.0


def probe(url: str, timeout: float) -> str:
    """'' when the API at ``url`` answers ``/health`` (any HTTP status), else 'refused' (no
    one listens, or the connection broke) or 'silent' (no answer within ``timeout``)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout):
            return ""
    except urllib.error.HTTPError:
        return ""  # it answered: alive, if unhappy
    except urllib.error.URLError as exc:
        return "silent" if isinstance(exc.reason, TimeoutError) else "refused"
    except TimeoutError:
        return "silent"
    except (OSError, ValueError):
        return "refused"


class PrefectWatch:
    """Watches ``url`` while a command's flow runs (``with watch: asyncio.run(watch.guard(c))``).

    ``report()`` prints each decision's outcome as Redis holds it and returns the exit code;
    it runs in the watching thread once the API is lost, then ``exit`` ends the process. With
    no ``url`` (Prefect's in-process ephemeral API: it cannot be lost alone) nothing is watched.
    """

    def __init__(
        self,
        url: str | None,
        lost_after: float,
        report: Callable[[], int],
        *,
        say: Callable[[str], None] | None = None,
        exit: Callable[[int], Any] = os._exit,
        interval: float = _INTERVAL,
        cancel_grace: float = CANCEL_GRACE,
    ) -> None:
        self.url, self.lost_after, self.report = url, lost_after, report
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.exit, self.interval, self.cancel_grace = exit, interval, cancel_grace
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._main_left = threading.Event()
        # Taken to decide "lost" (the thread) or "stopped" (the command ended): never both, so a
        # run that finished while a probe was in flight is not reported lost.
        self._decide = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="ti-prefect-watch", daemon=True)
        self._main: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None

    def __enter__(self) -> PrefectWatch:
        if self.url:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._main_left.set()
        if not self.url:
            return
        with self._decide:
            if not self.lost.is_set():  # else the watching thread reports and ends the process
                self._stop.set()
        self._thread.join()

    async def guard(self, work: Awaitable[T]) -> T:
        """``await work``, cancellable by the watching thread once the API is lost."""
        task = asyncio.current_task()
        if task is not None:
            self._main = (asyncio.get_running_loop(), task)
        return await work

    def _watch(self) -> None:
        assert self.url is not None
        down_since: float | None = None
        refused = True
        while not self._stop.wait(self.interval):
            why = probe(self.url, timeout=min(self.lost_after, 5.0))
            now = time.monotonic()
            if not why:
                down_since, refused = None, True
                continue
            if down_since is None:
                down_since = now
            refused = refused and why == "refused"
            limit = self.lost_after if refused else self.lost_after * SILENT_FACTOR
            if now - down_since >= limit:
                with self._decide:
                    if self._stop.is_set():  # the command ended meanwhile: nothing was lost
                        return
                    self.lost.set()
                self._lost(now - down_since, "connection refused" if refused else "no answer")
                return

    def _lost(self, seconds: float, why: str) -> None:
        assert self.url is not None
        self.lost.set()
        logging.disable(logging.CRITICAL)  # Prefect's complaints about the dead API, from here on
        self.say(
            f"ti: lost the Prefect server at {self.url.removesuffix('/api')} ({why} for "
            f"{seconds:.0f} s); stopping the run and reading each decision back from Redis"
        )
        if self._main is not None:
            loop, task = self._main
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop already closed: the run is over
                pass
        self._main_left.wait(self.cancel_grace)
        try:
            code = self.report()
        except Exception as exc:  # the one line still says what happened
            from ti_core.errors import one_line

            self.say(f"ti: could not read the outcomes back from Redis: {one_line(exc)}")
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        self.exit(code)


def watch_api(settings: TiSettings, report: Callable[[], int]) -> PrefectWatch:
    """A watch on the API this process's flows use (call after Prefect is configured)."""
    from flows.server import configured_api_url

    return PrefectWatch(configured_api_url(), settings.prefect_lost_after, report)
