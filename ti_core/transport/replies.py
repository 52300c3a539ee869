"""Replies may be ``bytes`` or ``str`` (``decode_responses`` is the caller's choice).

What else differs between the clients (the embedded store's quirks) is made up for by its
adapter, ``ti_core.store.embedded_client``.
"""

from __future__ import annotations

from typing import Any

from ti_core.transport.client import RedisClient, RedisPipeline

__all__ = ["pipeline", "text"]


def text(value: Any) -> str:
    """A Redis reply (bytes or str) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def pipeline(client: RedisClient) -> RedisPipeline:
    """A non-transactional pipeline on ``client``."""
    return client.pipeline(transaction=False)
