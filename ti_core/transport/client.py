"""The client seam: the Redis commands this package uses, as a ``Protocol`` mypy checks.

Three kinds of client stand behind it and behave alike: redis-py's ``redis.asyncio.Redis``
(``ti_core.transport.connection``), fakeredis (tests), and the embedded store through its adapter
(``ti_core.store.embedded_client``, the one place its differences in commands are made up for).
Only the commands and the arguments the core passes are declared, with redis-py's parameter
names, so a misspelt command or keyword fails ``mypy --strict``. Replies are ``Any``: ``bytes``
or ``str`` as the caller chose, RESP2 or RESP3 shapes, read by ``ti_core.transport.replies``
(one function per kind of reply); error replies are read by ``ti_core.transport.boundary``. And
redis-py types its commands as "a value or an awaitable of it".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

__all__ = ["RedisClient", "RedisPipeline"]


class _Commands(Protocol):
    """Commands sent both on a client (a reply to await) and on a pipeline (queued)."""

    def hgetall(self, name: str) -> Any: ...
    def hdel(self, name: str, *keys: str) -> Any: ...
    def xlen(self, name: str) -> Any: ...
    def xrange(
        self, name: str, min: str = "-", max: str = "+", count: int | None = None
    ) -> Any: ...
    def xreadgroup(
        self,
        groupname: str,
        consumername: str,
        streams: dict[Any, Any],
        count: int | None = None,
        block: int | None = None,
    ) -> Any: ...
    def xack(self, name: str, groupname: str, *ids: str) -> Any: ...


class RedisPipeline(_Commands, Protocol):
    """Commands queued for one round trip; :meth:`execute` sends them and returns the replies
    in order (errors as exception objects with ``raise_on_error=False``)."""

    def exists(self, *names: str) -> object: ...
    def hexists(self, name: str, key: str) -> object: ...
    def hget(self, name: str, key: str) -> object: ...
    def hmget(self, name: str, keys: Sequence[str], *args: str) -> object: ...
    def xadd(
        self,
        name: str,
        fields: dict[Any, Any],
        id: str = "*",
        maxlen: int | None = None,
        approximate: bool = True,
    ) -> object: ...
    def xtrim(self, name: str, maxlen: int | None = None, approximate: bool = True) -> object: ...
    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> object: ...
    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> object: ...
    def execute_command(self, *args: Any) -> object: ...
    async def execute(self, raise_on_error: bool = True) -> list[Any]: ...


class RedisClient(_Commands, Protocol):
    """An async Redis client: the commands ``ti_core`` and ``flows`` send, nothing more."""

    def pipeline(self, transaction: bool = True) -> RedisPipeline: ...
    def hset(
        self,
        name: str,
        key: str | None = None,
        value: Any = None,
        mapping: Mapping[Any, Any] | None = None,
    ) -> Any: ...
    def hincrby(self, name: str, key: str, amount: int = 1) -> Any: ...
    def xread(
        self, streams: dict[Any, Any], count: int | None = None, block: int | None = None
    ) -> Any: ...
    def xautoclaim(
        self,
        name: str,
        groupname: str,
        consumername: str,
        min_idle_time: int,
        start_id: str = "0-0",
        count: int | None = None,
    ) -> Any: ...
    def xpending(self, name: str, groupname: str) -> Any: ...
    def xinfo_stream(self, name: str) -> Any: ...
    def xinfo_groups(self, name: str) -> Any: ...
    def script_load(self, script: str) -> Any: ...
    def register_script(self, script: str) -> Any: ...
    def scan_iter(
        self, match: str | None = None, count: int | None = None
    ) -> AsyncIterator[Any]: ...
    async def aclose(self) -> None: ...
