"""The Prefect API watch (flows.api_watch) against small real HTTP servers: what counts as an
answer, and what happens once the API is lost (the run cancelled, the report, the exit code)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from flows.api_watch import PrefectWatch, probe
from tests.redisproc import free_port


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass


class _Busy(_Health):
    status = 503


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/api"


@pytest.fixture
def api() -> Iterator[tuple[ThreadingHTTPServer, str]]:
    server, url = _serve(_Health)
    yield server, url
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api"


def test_any_http_answer_is_alive_and_no_answer_is_named(
    api: tuple[ThreadingHTTPServer, str], silent_url: str
) -> None:
    assert probe(api[1], 2.0) == ""
    busy, busy_url = _serve(_Busy)
    try:
        assert probe(busy_url, 2.0) == ""  # a 503 is a server that is there
    finally:
        busy.shutdown()
        busy.server_close()
    assert probe(f"http://127.0.0.1:{free_port()}/api", 2.0) == "refused"
    assert probe(silent_url, 0.2) == "silent"


def _command(watch: PrefectWatch, ended: list[BaseException | str]) -> threading.Thread:
    """What `ti daily` does: asyncio.run of the guarded flow inside the watch."""

    def run() -> None:
        try:
            with watch:
                asyncio.run(watch.guard(asyncio.sleep(120)))
            ended.append("returned")
        except BaseException as exc:
            ended.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_lost_api_cancels_the_run_reports_from_redis_and_exits_1(
    api: tuple[ThreadingHTTPServer, str],
) -> None:
    server, url = api
    said: list[str] = []
    reported = threading.Event()
    exits: list[int] = []
    ended: list[BaseException | str] = []

    def report() -> int:
        reported.set()
        return 1

    watch = PrefectWatch(
        url, 0.3, report, say=said.append, exit=exits.append, interval=0.05, cancel_grace=10
    )
    command = _command(watch, ended)
    assert not reported.wait(0.5)  # alive: nothing happens
    server.shutdown()
    server.server_close()
    command.join(60)
    assert not command.is_alive() and reported.is_set() and exits == [1]
    assert isinstance(ended[0], asyncio.CancelledError)  # the run was stopped first
    assert len(said) == 1 and said[0].startswith(
        f"ti: lost the Prefect server at {url.removesuffix('/api')} (connection refused for"
    )


def test_an_api_that_accepts_but_never_answers_is_lost_later(silent_url: str) -> None:
    said: list[str] = []
    exits: list[int] = []
    ended: list[BaseException | str] = []
    watch = PrefectWatch(
        silent_url, 0.1, lambda: 1, say=said.append, exit=exits.append, interval=0.05
    )
    _command(watch, ended).join(60)
    assert exits == [1] and "(no answer for" in said[0]


def test_without_a_url_nothing_is_watched() -> None:
    watch = PrefectWatch(None, 0.1, lambda: 1, exit=lambda code: None)
    with watch:
        assert asyncio.run(watch.guard(asyncio.sleep(0, "done"))) == "done"
    assert not watch.lost.is_set()
