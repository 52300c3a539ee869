"""Replica acknowledgement: a publish counts only once ``TI_MIN_REPLICAS`` replicas have it.

Redis replicates asynchronously: an entry the primary acknowledged can vanish if the primary
dies before a replica received it, and the replica is then promoted without it. With
``TI_MIN_REPLICAS`` = n > 0, every publish round trip ends with ``WAIT n timeout`` on the
same connection as its writes (so it waits for exactly those writes), and a reply below n
is a :class:`~ti_core.errors.ReplicaAckError`, which says what Redis holds (written to the
primary, so consumers may see it, but not yet safe from a failover): retryable, and the
retry is idempotent (each entry's correlation-id record is written by the same script as
the entry, so a retry after a failover finds the entry if it was replicated, and writes it
once if it was lost).

A consumer group's reads and acknowledgements change the group (its position, the pending
list); :func:`replicated` sends them with the same ``WAIT``, so that a reader never handles
an entry whose delivery a failover could forget (it would be delivered, and handled, again).
A shortfall there is logged, not raised: the reader keeps going, at least once.

The requirement belongs to a client (like Kafka's ``acks`` to a producer): ``connect()``
registers it from the settings, the publish functions read it. With n = 0 (the default,
and always on fakeredis and the embedded store, which lack WAIT) no WAIT is sent.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ti_core.errors import ConfigError, ReplicaAckError
from ti_core.transport.client import RedisClient, RedisPipeline
from ti_core.transport.replies import pipeline

__all__ = [
    "ReplicaPolicy",
    "check_replicas",
    "queue_wait",
    "replica_policy",
    "replicated",
    "require_replicas",
]

logger = logging.getLogger("ti_core.replicas")  # its name before the move


@dataclass(frozen=True, slots=True)
class ReplicaPolicy:
    """How many replicas must have a write, and how long (ms) to wait for them."""

    replicas: int
    timeout_ms: int


_POLICIES: weakref.WeakKeyDictionary[Any, ReplicaPolicy] = weakref.WeakKeyDictionary()


def require_replicas(
    client: RedisClient, replicas: int, timeout: float, *, socket_timeout: float | None = None
) -> None:
    """Make every publish through ``client`` wait for ``replicas`` replicas (0: none).

    ``timeout`` (seconds) must be below ``socket_timeout``: otherwise the client would give
    up on the reply first and resend the whole round trip instead of reporting the shortfall.
    """
    if replicas < 0 or timeout <= 0:
        raise ConfigError(
            f"TI_MIN_REPLICAS must be >= 0 and TI_REPLICA_TIMEOUT > 0, got {replicas} and {timeout}"
        )
    if socket_timeout is not None and timeout >= socket_timeout:
        raise ConfigError(
            f"TI_REPLICA_TIMEOUT ({timeout}s) must be below TI_SOCKET_TIMEOUT ({socket_timeout}s)"
        )
    if replicas == 0:
        _POLICIES.pop(client, None)
        return
    _POLICIES[client] = ReplicaPolicy(replicas, max(1, round(timeout * 1000)))


def replica_policy(client: RedisClient) -> ReplicaPolicy | None:
    """The requirement registered for ``client``, or None (no WAIT)."""
    try:
        return _POLICIES.get(client)
    except TypeError:  # an unhashable client cannot have one
        return None


def queue_wait(pipe: RedisPipeline, client: RedisClient) -> ReplicaPolicy | None:
    """Append ``WAIT`` to ``pipe`` (after its writes) if ``client`` requires replicas."""
    policy = replica_policy(client)
    if policy is not None:
        pipe.execute_command("WAIT", policy.replicas, policy.timeout_ms)
    return policy


def check_replicas(policy: ReplicaPolicy, reply: Any, results: Sequence[Any], where: str) -> None:
    """Raise ``ReplicaAckError`` if the ``WAIT`` reply counts fewer than ``policy.replicas``.

    Skipped when a write in ``results`` failed: that failure is reported (or the scripts
    reloaded and the round trip repeated, with its own WAIT) instead.
    """
    if any(isinstance(r, Exception) for r in results):
        return
    if isinstance(reply, Exception):
        raise reply
    acked = int(reply)
    if acked < policy.replicas:
        raise ReplicaAckError(
            f"Redis at {where}: written to the primary; consumers may see it; not acknowledged "
            f"by {policy.replicas} replicas (TI_MIN_REPLICAS; {acked} acknowledged within "
            f"{policy.timeout_ms} ms), so a failover now could lose it; retry (it is "
            "idempotent: the same entry, waited for again)"
        )


async def replicated(client: RedisClient, command: Callable[[Any], Any]) -> Any:
    """The reply of ``command(client)``; with a replica requirement, ``command`` is queued on
    a pipeline followed by ``WAIT`` (same connection), and the reply returned once the
    replicas have its effect or the wait timed out (logged). For consumer-group commands."""
    policy = replica_policy(client)
    if policy is None:
        return await command(client)
    pipe = pipeline(client)
    command(pipe)
    pipe.execute_command("WAIT", policy.replicas, policy.timeout_ms)
    reply, acked = await pipe.execute()
    if int(acked) < policy.replicas:
        logger.warning(
            "a consumer-group update reached %s of %d replicas in %d ms: a failover "
            "now could deliver its entries again",
            acked,
            policy.replicas,
            policy.timeout_ms,
        )
    return reply
