"""The two Lua scripts of the group reader: create a group, read new entries and record trim gaps.

Both run atomically on the server, which is what makes their counts exact with several
consumers in one group: nobody can read between "where was the group" and "what did it get".

Counting positions: Redis 7 numbers every entry ever added to a stream (``entries-added``) and
keeps, per group, ``entries-read``, the number of the last entry delivered to it. When a read
hands a group the stream's first entry while entries were trimmed from the head, the entries
numbered between the group's old position and that first entry were removed before the group
read them: lost to it. :data:`READ_NEW` records them in the group's lost hash
(:func:`ti_core.keys.group_lost_key`: ``entries``, ``events``, ``first_at_ms``, ``last_at_ms``,
``last_gap``; ``unknown`` counts gaps whose size Redis could not tell), then sets the group's
counter to the position it really reached, so Redis's own ``lag`` stays "not yet delivered".
"""

from __future__ import annotations

__all__ = ["CREATE_GROUP", "READ_NEW"]

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
CREATE_GROUP = _FIELD + """
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
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS[1] stream, KEYS[2] lost hash; ARGV[1] group, ARGV[2] consumer, ARGV[3] count.
# XREADGROUP ... > (never blocks), plus the trim-gap check. Returns {last-generated-id,
# lost (-1: unknown), entries as [id, [field, value, ...]]} or a NOGROUP error.
READ_NEW = _FIELD + """
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups.err then
  return redis.error_reply('NOGROUP ' .. KEYS[1] .. ': ' .. groups.err)
end
local last, read
for _, g in ipairs(groups) do
  if field(g, 'name') == ARGV[1] then
    last, read = field(g, 'last-delivered-id'), field(g, 'entries-read')
  end
end
if not last then
  return redis.error_reply('NOGROUP no consumer group ' .. ARGV[1] .. ' on ' .. KEYS[1])
end
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                         'STREAMS', KEYS[1], '>')
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local top = field(info, 'last-generated-id')
if not reply then return {top, 0, {}} end
local entries = reply[1][2]
local added, first = field(info, 'entries-added'), field(info, 'first-entry')
local lost = 0
if added and first and entries[1][1] == first[1] then
  local removed = added - field(info, 'length')
  local deleted = field(info, 'max-deleted-entry-id')
  if removed > 0 and (deleted == '0-0' or id_lt(deleted, first[1])) then
    if read then
      lost = math.max(0, removed - read)
    elseif last == '0-0' then
      lost = removed
    else
      lost = -1
    end
    local reached = entries[#entries][1]
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], reached,
               'ENTRIESREAD', removed + #entries)
  end
end
if lost ~= 0 then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if lost > 0 then
    redis.call('HINCRBY', KEYS[2], 'entries', lost)
  else
    redis.call('HINCRBY', KEYS[2], 'unknown', 1)
  end
  redis.call('HINCRBY', KEYS[2], 'events', 1)
  redis.call('HSETNX', KEYS[2], 'first_at_ms', ms)
  redis.call('HSET', KEYS[2], 'last_at_ms', ms, 'last_gap', last .. ' ' .. entries[1][1])
end
return {top, lost, entries}
"""
