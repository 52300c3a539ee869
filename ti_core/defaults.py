"""The defaults that more than one place uses, named once.

Settings fields (``TI_*``), function keywords and CLI options all start from these, so a
default cannot drift between ``TiSettings``, :class:`~ti_core.publish.publisher.TrimPolicy`,
:func:`~ti_core.verify.verify`, the readers and the flows. A leaf module: it imports nothing.
"""

from __future__ import annotations

__all__ = [
    "BLOCK_MS",
    "CALENDAR",
    "CLAIM_IDLE_MS",
    "DEAD_LETTER_MAXLEN",
    "HANDLER_TIMEOUT_SECONDS",
    "RECONNECT_GIVE_UP_SECONDS",
    "STREAM_MAXLEN",
]

STREAM_MAXLEN = 100_000
"""Entries the decision stream is trimmed to (about, with ``MAXLEN ~``); 0 never trims."""

DEAD_LETTER_MAXLEN = STREAM_MAXLEN
"""Entries a dead-letter stream keeps: as many as the stream it serves."""

CALENDAR = "XNYS"
"""Exchange calendar of sessions (an ``exchange_calendars`` code, or ``weekdays``)."""

CLAIM_IDLE_MS = 60_000
"""How long an entry stays pending with one consumer before another may reclaim it."""

HANDLER_TIMEOUT_SECONDS = 60.0
"""How long a consumer-group handler may run on one entry before the entry counts as failed."""

BLOCK_MS = 5000
"""How long one blocking stream read waits for new entries."""

RECONNECT_GIVE_UP_SECONDS = 300.0
"""How long a consumer keeps reconnecting to a lost Redis before it gives up."""
