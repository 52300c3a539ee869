"""What differs between the clients we run on: redis-py, fakeredis and the embedded store.

Replies may be ``bytes`` or ``str`` (``decode_responses`` is the caller's choice), and the
embedded store's ``pipeline()`` takes no arguments.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pipeline", "text"]


def text(value: Any) -> str:
    """A Redis reply (bytes or str) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def pipeline(client: Any) -> Any:
    """A non-transactional pipeline on ``client``, whichever kind of client it is."""
    try:
        return client.pipeline(transaction=False)
    except TypeError:  # the embedded store's pipeline takes no arguments
        return client.pipeline()
