"""The embedded store (burner-redis) behind the client seam, behaving as redis-py does.

Where burner-redis differs from a Redis server reached through redis-py, the difference is
made up for here and nowhere else:

- ``pipeline()`` takes no ``transaction`` argument (an in-process store runs a pipeline in
  one go either way);
- its pipeline has no ``HMGET``: queued as one ``HGET`` per field, the replies regrouped into
  the one list ``HMGET`` returns (or its error).

Error replies come as the store gives them (a pipelined ``EVALSHA`` of an unknown script is a
plain ``ResponseError`` saying ``NOSCRIPT``, not redis-py's ``NoScriptError``): what a reply
says is read by ``ti_core.transport.boundary.refusal_of``, which knows both forms.

Every other command goes straight to the store: it takes redis-py's names and arguments.
``XADD`` with ``MAXLEN`` inside Lua is the one thing it cannot do, which is why the publish
scripts never trim (``ti_core.publish.scripts``); that is a design rule, not a branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["EmbeddedClient", "EmbeddedPipeline"]


class EmbeddedPipeline:
    """A burner-redis pipeline with redis-py's ``hmget``."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._widths: list[int] = []  # replies each queued command gets back (hmget: many)

    def __getattr__(self, name: str) -> Any:
        queue = getattr(self._pipe, name)

        def queued(*args: Any, **kwargs: Any) -> EmbeddedPipeline:
            queue(*args, **kwargs)
            self._widths.append(1)
            return self

        return queued

    def hmget(self, name: str, keys: Sequence[str], *args: str) -> EmbeddedPipeline:
        fields = [keys] if isinstance(keys, str | bytes) else [*keys]
        fields.extend(args)
        for field in fields:
            self._pipe.hget(name, field)
        self._widths.append(-len(fields))  # negative: regroup into one list
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        flat = list(await self._pipe.execute(raise_on_error=raise_on_error))
        widths, self._widths = self._widths, []
        replies: list[Any] = []
        at = 0
        for width in widths:
            if width >= 0:
                replies.append(flat[at])
                at += 1
                continue
            group = flat[at : at - width]
            at -= width
            failed = next((r for r in group if isinstance(r, Exception)), None)
            replies.append(failed if failed is not None else group)
        return replies


class EmbeddedClient:
    """A burner-redis store as a :class:`~ti_core.transport.client.RedisClient`."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def pipeline(self, transaction: bool = True) -> EmbeddedPipeline:
        return EmbeddedPipeline(self.store.pipeline())
