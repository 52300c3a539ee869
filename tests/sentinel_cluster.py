"""A Redis failover group on loopback for tests: a primary, its replica and three Sentinels.

All real processes (``redis-server``, and ``redis-server --sentinel`` with a generated config
file), on free ports, in a temporary directory. Short ``down-after-milliseconds`` and
``failover-timeout`` make a failover take a few seconds. Helpers kill the primary, wait for
the Sentinels to promote another server, and bring the killed one back as a replica (what a
supervisor restarting it, with Sentinel reconfiguring it, ends up doing).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.redisproc import RedisProcess, free_port, redis_server_binary

__all__ = ["SERVICE", "SentinelCluster", "wait_until"]

SERVICE = "ti-primary"
# Start a full sync at once (Redis 7 otherwise waits 5 s for more replicas to join it).
_SERVER_ARGS = ("--repl-diskless-sync-delay", "0")


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    """``check()`` until it returns something truthy (returned); AssertionError after
    ``timeout`` seconds. Errors from ``check`` count as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class SentinelProcess:
    """One ``redis-server --sentinel`` monitoring ``SERVICE``; it rewrites its own config."""

    def __init__(
        self,
        workdir: Path,
        primary_port: int,
        down_after_ms: int,
        failover_timeout_ms: int,
        *extra_config: str,
    ) -> None:
        self.binary = redis_server_binary()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "sentinel.conf"
        self.config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {workdir}",
                    f"logfile {workdir / 'sentinel.log'}",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
                    f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
                    f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    *extra_config,
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.proc = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(f"sentinel on {self.port}", self.ping, 15)
        return self

    def ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.workdir / "sentinel.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sentinel exited: {log}")
        with self.client() as client:
            return bool(client.ping())

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True
        )

    def primary_port(self) -> int | None:
        with self.client() as client:
            addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(addr[1]) if addr else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class SentinelCluster:
    """Primary + replica + three Sentinels (quorum 2); ``start()`` returns once the Sentinels
    know the replica and each other, so a failover can happen."""

    def __init__(
        self, workdir: Path, *, down_after_ms: int = 1000, failover_timeout_ms: int = 3000
    ) -> None:
        self.workdir = workdir
        self.stopped = False
        self._lock = threading.Lock()  # no restart (from a test's thread) after stop()
        self.servers: dict[int, RedisProcess] = {}
        primary = RedisProcess(workdir / "server-a", *_SERVER_ARGS)
        self.servers[primary.port] = primary
        replica = RedisProcess(
            workdir / "server-b", *_SERVER_ARGS, "--replicaof", "127.0.0.1", str(primary.port)
        )
        self.servers[replica.port] = replica
        self.sentinels = [
            SentinelProcess(
                workdir / f"sentinel-{n}", primary.port, down_after_ms, failover_timeout_ms
            )
            for n in range(3)
        ]

    @property
    def setting(self) -> str:
        """The value of ``TI_REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        for server in self.servers.values():
            server.start()
        self.wait_replicas_synced(timeout)
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(
            "the Sentinels to discover the replica and each other", self._ready, timeout, every=0.1
        )
        return self

    def _ready(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                replicas = client.execute_command("SENTINEL", "REPLICAS", SERVICE)
                peers = client.execute_command("SENTINEL", "SENTINELS", SERVICE)
            if len(replicas) < len(self.servers) - 1 or len(peers) < len(self.sentinels) - 1:
                return False
        return True

    def primary_port(self) -> int:
        """The primary as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                port = sentinel.primary_port()
            except redis.RedisError:
                continue
            if port is not None:
                return port
        raise AssertionError("no Sentinel names a primary")

    def primary(self) -> RedisProcess:
        return self.servers[self.primary_port()]

    def primary_client(self) -> redis.Redis:
        return redis.Redis(port=self.primary_port(), socket_timeout=5, decode_responses=True)

    def kill_primary(self) -> RedisProcess:
        """SIGKILL the primary; returns its process (down)."""
        victim = self.primary()
        victim.kill9()
        return victim

    def isolate_then_kill_primary(self, gap: float) -> RedisProcess:
        """Freeze the replica (SIGSTOP) and cut its link, let the primary take writes alone
        for ``gap`` seconds, SIGKILL it, then resume the replica (a partition, then a crash):
        whatever the primary acknowledged in the gap exists nowhere else."""
        victim = self.primary()
        replicas = [p for p in self.servers.values() if p is not victim]
        for replica in replicas:
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGSTOP)
        try:
            with victim.sync_client() as client:
                client.client_kill_filter(_type="replica")
            time.sleep(gap)
            victim.kill9()
        finally:
            for replica in replicas:
                assert replica.proc is not None
                replica.proc.send_signal(signal.SIGCONT)
        return victim

    def wait_promoted(self, old_port: int, timeout: float = 45.0) -> int:
        """Port of the new primary once every Sentinel names one other than ``old_port``
        and it answers as a primary."""

        def promoted() -> int | None:
            ports = {s.primary_port() for s in self.sentinels}
            if len(ports) != 1 or old_port in ports or None in ports:
                return None
            port = ports.pop()
            assert port is not None
            with redis.Redis(port=port, socket_timeout=1) as client:
                role = client.execute_command("ROLE")
            return port if role[0] in (b"master", "master") else None

        port: int = wait_until("the Sentinels to promote a replica", promoted, timeout, every=0.05)
        return port

    def restart_as_replica(self, server: RedisProcess, primary_port: int) -> None:
        """Start a killed server again (empty: no persistence) as a replica of the new
        primary, as its rewritten configuration would after Sentinel reconfigured it."""
        with self._lock:
            if self.stopped:
                return
            server.extra = [*_SERVER_ARGS, "--replicaof", "127.0.0.1", str(primary_port)]
            server.start()

    def wait_replicas_synced(self, timeout: float = 30.0) -> None:
        """Until every replica reports its link to the primary up."""

        def synced() -> bool:
            for server in self.servers.values():
                with server.sync_client() as client:
                    info = client.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
            return True

        wait_until("the replicas to sync", synced, timeout, every=0.05)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers.values():
            server.stop()
