"""The group reader's Lua, as a Redis 7 function library: create a group; record a trim gap it is
about to pass; keep a batch's entries from looking abandoned while their turn comes.

Why functions, not scripts: running a script (``EVAL``) lets a user run *any* Lua, and one
``EVAL "while true do end"`` freezes Redis for every producer (each publish is refused with
``BUSY`` until an admin's ``SCRIPT KILL``). Functions are loaded once (``FUNCTION LOAD``, by an
admin, a producer, or the first consumer allowed to: :data:`LIBRARY`) and called by name
(``FCALL``), so the consumer role needs ``+fcall`` and no right to run code of its own. The
library's name and its functions' names end in a digest of their source, so a changed
library is loaded beside the old one and each release calls exactly its own code (as
``EVALSHA`` would). Servers without functions (before 7.0) run the same bodies with ``EVAL``
(:data:`SOURCES`).

Both run atomically on the server, which is what makes their counts exact with several
consumers in one group: nobody can read between "where was the group" and "what did it get".

Counting positions: Redis 7 numbers every entry ever added to a stream (``entries-added``) and
keeps, per group, ``entries-read``, the number of the last entry delivered to it. When a read
is about to hand a group the stream's first entry while entries were trimmed from the head,
the entries numbered between the group's position and that first entry were removed before the
group read them: lost to it. :data:`GAP_CHECK`, run in one ``MULTI`` with that read, records
them in the group's lost hash
(:func:`ti_core.contract.keys.group_lost_key`: ``entries``, ``events``, ``first_at_ms``,
``last_at_ms``,
``last_gap``; ``unknown`` counts gaps whose size Redis could not tell), then sets the group's
counter past the gap, so Redis's own ``lag`` stays "not yet delivered" (a per-team user
without ``XGROUP SETID`` cannot: the hash's ``lag_excess`` says by how much that lag is too
high, and :func:`~ti_core.consume.group_lag.group_lag` takes it off). The read itself stays a
plain XREADGROUP: returning 100 entries through Lua would triple its cost on the server.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "CREATE_GROUP",
    "FUNCTION_NAMES",
    "GAP_CHECK",
    "LIBRARY",
    "LIBRARY_NAME",
    "SOURCES",
    "TOUCH_MINE",
]

_FIELD = """
local function field(t, name)
  for i = 1, #t, 2 do
    if t[i] == name then return t[i + 1] end
  end
  return nil
end
local function id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
"""

# KEYS[1] stream, KEYS[2] attempts hash; ARGV[1] group, ARGV[2] start id ("$", "0" or an id).
# Returns 1 if created, 0 if it existed (BUSYGROUP). A new group's counter is set (Redis 7) so
# that its position is known from the start: "$" -> entries added so far; "0" -> the entries
# already trimmed (a new group does not "lose" what was gone before it existed).
_CREATE_GROUP_BODY = """
local args = {'XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM'}
if redis.REDIS_VERSION_NUM and redis.REDIS_VERSION_NUM >= 0x070000 then
  local added, length = 0, 0
  local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
  if not info.err then
    added, length = field(info, 'entries-added'), field(info, 'length')
  end
  if ARGV[2] == '$' then
    table.insert(args, 'ENTRIESREAD'); table.insert(args, added)
  elseif ARGV[2] == '0' or ARGV[2] == '0-0' then
    table.insert(args, 'ENTRIESREAD'); table.insert(args, added - length)
  end
end
local reply = redis.pcall(unpack(args))
if type(reply) == 'table' and reply.err then
  if string.sub(reply.err, 1, 9) == 'BUSYGROUP' then return 0 end
  return reply
end
-- Forget the attempts of an earlier group of this name, by HDEL (a consumer has no DEL:
-- that would let it delete the stream itself).
local stale = redis.call('HKEYS', KEYS[2])
for i = 1, #stale, 1000 do
  redis.call('HDEL', KEYS[2], unpack(stale, i, math.min(i + 999, #stale)))
end
return 1
"""

# KEYS[1] stream, KEYS[2] lost hash; ARGV[1] group. Runs in one MULTI with the XREADGROUP ... >
# that follows it. A group positioned before the stream's first entry while entries were
# trimmed is about to read past a gap (that read returns at least the first entry): record the
# entries it never read, and set its counter past them. Returns {the count (-1: unknown), the
# stream's last id} (after an empty read, the reader blocks for entries after that id).
_GAP_CHECK_BODY = """
local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
if info.err then return {0, '0-0'} end
local top = field(info, 'last-generated-id')
local added, first = field(info, 'entries-added'), field(info, 'first-entry')
if not added or not first then return {0, top} end
local removed = added - field(info, 'length')
local deleted = field(info, 'max-deleted-entry-id')
if removed <= 0 or (deleted ~= '0-0' and not id_lt(deleted, first[1])) then
  return {0, top}
end
local last, read
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  if field(g, 'name') == ARGV[1] then
    last, read = field(g, 'last-delivered-id'), field(g, 'entries-read')
  end
end
if not last or not id_lt(last, first[1]) then return {0, top} end
local lost = -1
if read then
  lost = math.max(0, removed - read)
elseif last == '0-0' then
  lost = removed
end
if lost == 0 then return {0, top} end
if lost > 0 then
  -- A per-team user has no XGROUP SETID (it could rewind other teams' groups): then Redis's
  -- lag for this group stays too high by the loss, recorded as lag_excess.
  local set = redis.pcall('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', removed)
  if type(set) == 'table' and set.err then
    redis.call('HINCRBY', KEYS[2], 'lag_excess', lost)
  end
  redis.call('HINCRBY', KEYS[2], 'entries', lost)
else
  redis.call('HINCRBY', KEYS[2], 'unknown', 1)
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HINCRBY', KEYS[2], 'events', 1)
redis.call('HSETNX', KEYS[2], 'first_at_ms', ms)
redis.call('HSET', KEYS[2], 'last_at_ms', ms, 'last_gap', last .. ' ' .. first[1])
return {lost, top}
"""

# KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids. For each id still
# pending with this consumer, resets its idle time (XCLAIM ... JUSTID: no delivery counted), so
# no other consumer reclaims an entry that waits in this consumer's batch; ids pending with
# another consumer (reclaimed meanwhile) or no longer pending are left alone. Returns the ids
# that are still this consumer's, in order.
_TOUCH_MINE_BODY = """
local mine = {}
for i = 3, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if row[1] and row[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    table.insert(mine, ARGV[i])
  end
end
return mine
"""

_BODIES = {
    "create_group": _CREATE_GROUP_BODY,
    "gap_check": _GAP_CHECK_BODY,
    "touch_mine": _TOUCH_MINE_BODY,
}
_DIGEST = hashlib.sha1(  # noqa: S324 - a name for a version, not a security measure
    (_FIELD + "".join(_BODIES.values())).encode()
).hexdigest()[:12]

LIBRARY_NAME = f"ti_groups_{_DIGEST}"
"""The library's name: ``FUNCTION LOAD`` of :data:`LIBRARY` creates it."""

FUNCTION_NAMES = {name: f"ti_{name}_{_DIGEST}" for name in _BODIES}
"""Each function's ``FCALL`` name, by role: ``create_group``, ``gap_check``, ``touch_mine``."""

SOURCES = {name: _FIELD + body for name, body in _BODIES.items()}
"""Each body as an ``EVAL`` script, for servers without functions (Redis before 7.0)."""

CREATE_GROUP = SOURCES["create_group"]
GAP_CHECK = SOURCES["gap_check"]
TOUCH_MINE = SOURCES["touch_mine"]

LIBRARY = (
    f"#!lua name={LIBRARY_NAME}\n"
    + _FIELD
    + "".join(
        f"redis.register_function('{FUNCTION_NAMES[name]}', function(KEYS, ARGV)\n{body}end)\n"
        for name, body in _BODIES.items()
    )
)
"""The library, as ``FUNCTION LOAD`` takes it (``python -m ti_core.consume.group_scripts``
prints it)."""


if __name__ == "__main__":
    print(LIBRARY, end="")
