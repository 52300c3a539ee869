"""A loopback TCP proxy in front of a real redis-server that can lose replies and connections.

Faults a network really produces, on demand and deterministically:

- ``swallow_reply(pattern, times)``: the next command containing ``pattern`` is forwarded (so
  Redis runs it), but its reply is dropped and the connection cut: the client cannot know
  whether the write happened, which is exactly the ambiguous failure retries must survive.
- ``kill_all()``: cut every open connection now (like ``CLIENT KILL`` or a reset).
- ``blackhole = True``: accept connections but forward nothing either way (a hung server).

Threads, not asyncio, so it serves sync and async clients alike without sharing their loop.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

__all__ = ["LossyProxy"]

_CHUNK = 65536


@dataclass
class _Link:
    client: socket.socket
    server: socket.socket
    swallow_next: bool = False
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class LossyProxy:
    """Forward 127.0.0.1:``port`` to 127.0.0.1:``target_port``; inject faults on request."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._pattern = b""
        self._times = 0
        self.swallowed = 0
        self.connections = 0
        self.blackhole = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> LossyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        self.kill_all()

    def swallow_reply(self, pattern: bytes, times: int = 1) -> None:
        """Lose the reply to the next ``times`` commands whose bytes contain ``pattern``."""
        with self._lock:
            self._pattern, self._times = pattern, times

    def kill_all(self) -> int:
        """Cut every open connection; return how many were cut."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()
        return len(links)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
                self.connections += 1
            for upstream in (True, False):
                threading.Thread(target=self._pump, args=(link, upstream), daemon=True).start()

    def _arm(self, link: _Link, data: bytes) -> None:
        with self._lock:
            if self._times > 0 and self._pattern and self._pattern in data:
                self._times -= 1
                link.swallow_next = True  # set before forwarding: the reply cannot beat it

    def _pump(self, link: _Link, upstream: bool) -> None:
        src, dst = (link.client, link.server) if upstream else (link.server, link.client)
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                if self.blackhole:
                    continue
                if upstream:
                    self._arm(link, data)
                elif link.swallow_next:
                    with self._lock:
                        self.swallowed += 1
                    break  # drop the reply and cut the connection
                dst.sendall(data)
        except OSError:
            pass
        finally:
            link.close()
