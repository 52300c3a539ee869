"""How a client runs the group reader's Lua: ``FCALL`` of the loaded library, or ``EVAL``.

The consumer role has ``+fcall`` and no ``+eval`` (docs/publishing.md): it can call the
functions of :mod:`ti_core.consume.group_scripts` but run no Lua of its own. The library is
loaded once per server (it is kept in the RDB/AOF and replicated); when a call finds it
missing, this loads it if the user may (``FUNCTION LOAD``: an admin, or a producer given the
right) and otherwise says in one line who must. A server without functions (Redis before
7.0) gets the same bodies with ``EVAL``.
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as redis_errors

from ti_core.consume.group_scripts import FUNCTION_NAMES, LIBRARY, LIBRARY_NAME, SOURCES
from ti_core.errors import ConfigError
from ti_core.transport.boundary import (
    Refusal,
    client_user,
    describe_client,
    is_function_missing,
    is_library_loaded,
    is_unknown_command,
    refusal_of,
)
from ti_core.transport.client import RedisClient, RedisPipeline

__all__ = ["GroupFunctions", "load_group_library"]


async def load_group_library(client: RedisClient) -> bool:
    """``FUNCTION LOAD`` the group library; True if loaded now, False if it was there.

    A user without the right gets a ``ConfigError`` naming the command an admin runs once.
    """
    try:
        await client.function_load(LIBRARY)
    except redis_errors.ResponseError as exc:
        if is_library_loaded(exc):
            return False
        if refusal_of(exc) is Refusal.NO_PERMISSION:
            raise ConfigError(
                f"the consumer-group functions ({LIBRARY_NAME}) are not loaded on Redis at "
                f"{describe_client(client)} and user {client_user(client)!r} may not load "
                "them; an admin loads them once: python -m ti_core.consume.group_scripts | "
                "redis-cli -x FUNCTION LOAD (docs/publishing.md)"
            ) from exc
        raise
    return True


class GroupFunctions:
    """One client's way to the group Lua: ``FCALL`` (loading the library when missing), or
    ``EVAL`` once the server said it has no ``FCALL``."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.functions = True

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run the body ``name`` (a key of ``FUNCTION_NAMES``) on ``keys`` and ``args``."""
        if not self.functions:
            return await self.client.eval(SOURCES[name], len(keys), *keys, *args)
        try:
            return await self.client.fcall(FUNCTION_NAMES[name], len(keys), *keys, *args)
        except redis_errors.ResponseError as exc:
            if is_unknown_command(exc):
                self.functions = False
                return await self.call(name, keys, args)
            if not is_function_missing(exc):
                raise
        await load_group_library(self.client)
        return await self.client.fcall(FUNCTION_NAMES[name], len(keys), *keys, *args)

    def queue(self, pipe: RedisPipeline, name: str, keys: list[str], args: list[Any]) -> None:
        """Queue the body ``name`` on ``pipe`` (after :meth:`call` has found the way)."""
        if self.functions:
            pipe.fcall(FUNCTION_NAMES[name], len(keys), *keys, *args)
        else:
            pipe.eval(SOURCES[name], len(keys), *keys, *args)
