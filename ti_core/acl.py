"""The least-privilege ACL rules of the two roles: a producer (publishes) and a consumer (reads).

Each rule is what goes after ``ACL SETUSER NAME reset on >PASSWORD`` (``reset`` first: it
would undo an ``on`` or a password given before it). docs/publishing.md shows both lines in full and
the tests paste them from there onto a real server. Add ``+select`` if the URL names a
database other than 0, and on Redis 7.2+ ``+client|setinfo`` (redis-py announces itself on
connect and ignores a refusal, which only shows in ``ACL LOG``).
"""

from __future__ import annotations

import re

from ti_core.contract.keys import (
    DECISION_HASH_PREFIX,
    DEFAULT_STREAM_NAME,
    attempts_key,
    group_lost_key,
    validate_stream_name,
)
from ti_core.errors import ConfigError

__all__ = ["consumer_acl_rule", "producer_acl_rule", "setuser_line", "team_consumer_acl_rule"]

# What a producer sends: the publish scripts (and the commands they call), their reload, the
# trim; the pipeline's and backfill's bookkeeping (failure records: HSET/HDEL/HMGET; "only
# missing" and ``ti status``: HEXISTS); WAIT for TI_MIN_REPLICAS (docs/availability.md);
# CLIENT SETNAME, sent on connect for our name.
_PRODUCER_COMMANDS = (
    "+evalsha",
    "+script|load",
    "+xadd",
    "+get",
    "+set",
    "+hget",
    "+hset",
    "+xtrim",
    "+hdel",
    "+hmget",
    "+hexists",
    "+wait",
    "+client|setname",
)
# What a consumer sends: ``ti get`` / get_decision (HGETALL, HGET), tail (XREAD, XRANGE,
# XINFO STREAM), consumer groups (XGROUP CREATE, XREADGROUP, XACK, XAUTOCLAIM, XPENDING, and
# MULTI/EXEC around a dead letter and its ack; the group functions of
# ``ti_core.consume.group_scripts`` through FCALL, never EVAL: no Lua of its own, so no
# ``EVAL "while true do end"`` freezing Redis for the producers; the commands they call are
# checked against the user too: XGROUP CREATE/SETID, XINFO, XPENDING, XCLAIM, TIME,
# HKEYS/HDEL, HSET/HSETNX/HINCRBY; the handler attempts: HINCRBY, HDEL; WAIT after group reads
# and acks with TI_MIN_REPLICAS; no DEL, which would reach the stream itself), lag (XINFO
# GROUPS, XLEN, the lost hash), ``ti status`` (HEXISTS, HMGET) and ``ti verify`` (SCAN,
# EXISTS, XLEN, XRANGE, XINFO STREAM, HGETALL, HGET).
_CONSUMER_COMMANDS = (
    "+hget",
    "+hgetall",
    "+hexists",
    "+hmget",
    "+exists",
    "+scan",
    "+xlen",
    "+xrange",
    "+xread",
    "+xinfo|stream",
    "+xinfo|groups",
    "+xgroup|create",
    "+xgroup|setid",
    "+xreadgroup",
    "+xack",
    "+xautoclaim",
    "+xclaim",
    "+xpending",
    "+multi",
    "+exec",
    "+fcall",
    "+time",
    "+wait",
    "+hkeys",
    "+hset",
    "+hsetnx",
    "+hincrby",
    "+hdel",
    "+client|setname",
)
# A team's consumer: the same, less XGROUP SETID, which moves any group of the stream (a group
# name is an argument, not a key, so no key pattern can confine it); without it the group
# functions still record a trim loss, and ``ti lag`` corrects Redis's lag for it.
_TEAM_CONSUMER_COMMANDS = tuple(c for c in _CONSUMER_COMMANDS if c != "+xgroup|setid")
_GROUP_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def producer_acl_rule(stream_name: str = DEFAULT_STREAM_NAME) -> str:
    """The rules a producer needs, no more: the stream, its records (``{stream}:*``) and the
    lookup hashes; no stream reads, no other key, no pub/sub."""
    validate_stream_name(stream_name)
    keys = f"~{stream_name} ~{stream_name}:* ~{DECISION_HASH_PREFIX}:*"
    return f"resetkeys {keys} resetchannels -@all {' '.join(_PRODUCER_COMMANDS)}"


def consumer_acl_rule(stream_name: str = DEFAULT_STREAM_NAME) -> str:
    """The rules a consumer needs: read the hashes, the records ``ti status`` shows and the
    stream; keep its consumer groups on the stream and their records (handler attempts, entries
    lost to a trim); call the group functions (``FCALL``), never run Lua of its own; append
    only to the dead-letter stream (a Redis 7 selector: ``XADD`` is allowed on that key alone).
    The selector is quoted, as ``redis-cli`` needs it; split the rule like a shell
    (``shlex.split``) to send it."""
    validate_stream_name(stream_name)
    groups = f"~{stream_name}:attempts:* ~{stream_name}:lost:*"  # the group reader's own records
    return _consumer_rule(stream_name, groups, _CONSUMER_COMMANDS)


def team_consumer_acl_rule(group: str, stream_name: str = DEFAULT_STREAM_NAME) -> str:
    """A team's consumer, confined as far as ACLs can confine it: the records of its own
    ``group`` only (another team's attempts and lost hashes are refused) and no ``XGROUP
    SETID`` (it cannot move another team's group, nor its own). Group names are not keys, so it
    can still read (``XREADGROUP``), acknowledge (``XACK``) and claim (``XAUTOCLAIM``,
    ``XCLAIM``) in another team's group of the same stream: docs/publishing.md says what that
    means."""
    validate_stream_name(stream_name)
    if not _GROUP_NAME.fullmatch(group):
        raise ConfigError(
            f"group name {group!r} for a team's ACL rule: use letters, digits, '_', '.', '-' "
            "(a key pattern would read anything else as a wildcard)"
        )
    groups = (  # its own records; every group's loss record read, for ``ti lag``
        f"~{attempts_key(stream_name, group)} ~{group_lost_key(stream_name, group)} "
        f"%R~{stream_name}:lost:*"
    )
    return _consumer_rule(stream_name, groups, _TEAM_CONSUMER_COMMANDS)


def _consumer_rule(stream_name: str, groups: str, commands: tuple[str, ...]) -> str:
    reads = (
        f"%R~{DECISION_HASH_PREFIX}:* %R~{stream_name}:latest:* %R~{stream_name}:failures "
        f"%R~{stream_name}:dead"
    )
    return (
        f"resetkeys ~{stream_name} {groups} {reads} resetchannels -@all "
        f'{" ".join(commands)} "(~{stream_name}:dead +xadd)"'
    )


def setuser_line(user: str, rule: str) -> str:
    """The whole command, as pasted into ``redis-cli``: ``reset`` first, then on, password."""
    return f"ACL SETUSER {user} reset on >PASSWORD {rule}"
