"""The Lua scripts that publish, and the arguments they take from an envelope.

Three scripts: the stream entry alone, the lookup hash alone, and any number of envelopes'
entry + hash together. They call only GET/SET/HGET/HSET/XADD (and Lua's ``string.match``),
so they also run on the embedded store (burner-redis) and fakeredis. The envelope's payload
travels once: the scripts use it both as the entry's ``data`` and as the hash's ``json``.
``producer_acl_rule`` (``ti_core.acl``) is the least privilege that running them (and the rest
of a producer) needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ti_core.contract.hash_fields import FIELDS, FLAT_FIELDS, flat_values, published_ts
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.contract.stream_ids import end_of_ms_us, parse

__all__ = [
    "BATCH_SCRIPT",
    "BATCH_STRIDE",
    "HASH_SCRIPT",
    "SCRIPTS",
    "ARGV_FIELDS",
    "SCRIPT_SHAS",
    "STREAM_SCRIPT",
    "HeldDecision",
    "argv",
    "held_decision",
    "outranks",
    "publish_order",
]

# Per envelope, ARGV holds these values (from offset ``a``): the payload, its digest, the
# correlation record's ttl, force ('0'/'1'), published_ts, then the hash's flat fields
# (``ti_core.contract.hash_fields``). The scripts name them through ``_ARG``, generated from this
# list.
ARGV_FIELDS: tuple[str, ...] = ("payload", "digest", "ttl", "force", "published_ts", *FLAT_FIELDS)
_ARG = {name: f"ARGV[a + {i}]" for i, name in enumerate(ARGV_FIELDS, start=1)}
# Keys are bound to ks (stream), kc (cid record), kl (latest record), kh (hash).
# Every envelope's part reads each key it will write before its first write: a key of the
# wrong type fails it before anything of that envelope is written, so no entry is ever left
# without its records. Reads that only some paths need come later, on keys already checked.
# The correlation record is "<entry id> <digest> <verdict> <confidence>" of the decision the
# entry holds (a record an older version wrote is the entry id alone): a retry whose new
# decision differs (a lost arena cache, an LLM answering otherwise) learns what the entry
# holds without reading the stream, which a producer may not.
_HELD = """
local entry, held_digest = nil, nil
local held = redis.call('GET', kc)
if held then
  entry, held_digest = string.match(held, '^([^ ]+) ([^ ]+) [^ ]+ [^ ]+$')
  if not entry then entry = held end
end
"""
_STREAM_READ = (
    _HELD
    + """
local last_digest = redis.call('HGET', kl, 'digest')
"""
)
# ``created``: 1 appended now; 2 this envelope's own entry, appended by an earlier attempt
# (its correlation id was recorded); 0 another envelope's identical decision (not appended).
# ``clash``: the correlation record when the entry it names holds another decision than this
# envelope's (a retry that decided otherwise: nothing of it is written, not even the hash),
# else ''.
_STREAM_WRITE = """
local created = 0
local clash = ''
local record = ' ' .. {digest} .. ' ' .. {verdict} .. ' ' .. {confidence}
if entry then
  created = 2
  if held_digest and held_digest ~= {digest} then clash = held end
end
if not entry and {force} == '0' and last_digest == {digest} then
  entry = redis.call('HGET', kl, 'entry_id')
  if entry then redis.call('SET', kc, entry .. record, 'EX', {ttl}) end
end
if not entry then
  entry = redis.call('XADD', ks, '*', 'data', {payload})
  redis.call('SET', kc, entry .. record, 'EX', {ttl})
  redis.call('HSET', kl, 'digest', {digest}, 'entry_id', entry)
  created = 1
end
""".format(**_ARG)
# Ordering by the server's clock, not the publisher's: an envelope's order is its
# ``published_ts`` capped at the end of the millisecond its entry was written, read from the
# entry id that XADD '*' took from the server's clock (so no TIME call, and a retry finds the
# same order). A host whose clock runs ahead gets the moment its entry arrived; one whose
# decision was built earlier keeps its earlier stamp. The cap is built as a string (Lua's
# tostring would round a 16-digit number) and stored as the hash's ``published_ts``.
_ORDER = """
local ts_text = {published_ts}
local cap = string.match(entry, '^(%d+)')
if cap then
  cap = cap .. '999'
  if tonumber(cap) < tonumber(ts_text) then ts_text = cap end
end
local ts = tonumber(ts_text)
""".format(**_ARG)
# The hash is kept (not written), unless forced, when it already holds this entry, or a
# later order, or the same one from a greater correlation id (a total order). The held order
# is capped at its own entry's time too: a hash an older version wrote from a clock running
# ahead does not outrank a later decision.
_HASH_READ = """
local cur_ts = tonumber(redis.call('HGET', kh, 'published_ts') or '')
local cur_entry = redis.call('HGET', kh, 'entry_id')
if cur_ts and cur_entry then
  local held_cap = string.match(cur_entry, '^(%d+)')
  if held_cap and tonumber(held_cap .. '999') < cur_ts then cur_ts = tonumber(held_cap .. '999') end
end
"""
# The HSET of every field in ``ti_core.contract.hash_fields.FIELDS``: the entry id the server gave,
# the payload as ``json``, the capped order as ``published_ts``, the flat fields from ARGV.
_HASH_VALUES = {"entry_id": "entry", "json": _ARG["payload"], "published_ts": "ts_text"}
_HSET = "redis.call('HSET', kh, {})".format(
    ", ".join(f"'{name}', {_HASH_VALUES.get(name) or _ARG[name]}" for name in FIELDS)
)
# Within one millisecond the orders cannot tell which came first: a capped order (a clock
# running ahead) is the end of its entry's millisecond, and a decision a correct clock built
# in that millisecond is stamped earlier, yet may have been built after that entry was
# written. So when both orders fall inside the millisecond of the earlier of the two entries,
# the later entry wins (the server's order); otherwise the later order, then the greater
# correlation id. :func:`outranks` is the same rule in Python (``ti verify``).
_SAME_MS = """
local later = nil
local nm, ns = string.match(entry, '^(%d+)-(%d+)$')
local hm, hs = string.match(cur_entry or '', '^(%d+)-(%d+)$')
if nm and hm and entry ~= cur_entry then
  nm, ns, hm, hs = tonumber(nm), tonumber(ns), tonumber(hm), tonumber(hs)
  later = nm > hm or (nm == hm and ns > hs)
  local first = hm
  if not later then first = nm end
  local lo, hi = first * 1000, first * 1000 + 999
  if not (ts >= lo and ts <= hi and cur_ts >= lo and cur_ts <= hi) then later = nil end
end
"""
_HASH_WRITE = (
    _ORDER
    + """
local keep = false
if clash ~= '' then
  keep = true
elseif {force} == '0' then
  if created ~= 1 and cur_entry == entry then
    keep = true
  elseif cur_ts then
{same_ms}
    if later ~= nil then
      keep = not later
    elseif cur_ts > ts then
      keep = true
    elseif cur_ts == ts and (redis.call('HGET', kh, 'correlation_id') or '') > {correlation_id} then
      keep = true
    end
  end
end
local written = 0
if not keep then
  {hset}
  written = 1
end
""".format(hset=_HSET, same_ms=_SAME_MS.strip("\n"), **_ARG)
)
# KEYS: stream, cid, latest; ARGV_FIELDS. Returns {entry id, created, clash}.
STREAM_SCRIPT = (
    "local ks, kc, kl, a = KEYS[1], KEYS[2], KEYS[3], 0\n"
    + _STREAM_READ
    + _STREAM_WRITE
    + "return {entry, created, clash}\n"
)
# KEYS: hash, cid. Returns {entry id or '' if not on the stream, 2, written, clash}: confirms
# the hash of an envelope whose entry is written, or writes it (heals an entry left without
# it); never for an envelope whose entry holds another decision (``clash``).
HASH_SCRIPT = (
    "local kh, kc, a = KEYS[1], KEYS[2], 0\n"
    + _HELD
    + _HASH_READ
    + "if not entry then return {'', 0, 0, ''} end\nlocal created = 2\nlocal clash = ''\n"
    + f"if held_digest and held_digest ~= {_ARG['digest']} then clash = held end\n"
    + _HASH_WRITE
    + "return {entry, 2, written, clash}\n"
)
# Any number of envelopes, each: KEYS stream, cid, latest, hash; ARGV_FIELDS. Each envelope's
# entry, records and hash are written together, in order. Returns {entry, created, written,
# clash} per envelope, flat (:data:`BATCH_STRIDE` values each).
BATCH_SCRIPT = (
    "local out = {}\n"
    "for i = 0, #KEYS / 4 - 1 do\n"
    "local ks, kc, kl, kh = KEYS[i * 4 + 1], KEYS[i * 4 + 2], KEYS[i * 4 + 3], KEYS[i * 4 + 4]\n"
    f"local a = i * {len(ARGV_FIELDS)}\n"
    + _STREAM_READ
    + _HASH_READ
    + _STREAM_WRITE
    + _HASH_WRITE
    + "out[i * 4 + 1], out[i * 4 + 2], out[i * 4 + 3], out[i * 4 + 4] = entry, created, "
    "written, clash\n"
    "end\n"
    "return out\n"
)
BATCH_STRIDE = 4
SCRIPTS = {"stream": STREAM_SCRIPT, "hash": HASH_SCRIPT, "batch": BATCH_SCRIPT}
SCRIPT_SHAS = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in SCRIPTS.items()}


def publish_order(envelope: TradingIntelligenceEnvelope, entry_id: str) -> int:
    """The order the scripts give ``envelope`` on entry ``entry_id``: its ``published_at`` in
    microseconds, capped at the end of the millisecond the server wrote the entry."""
    stamp = int(published_ts(envelope))
    cap = end_of_ms_us(entry_id)
    return stamp if cap is None else min(stamp, cap)


def outranks(
    order: int, cid: str, entry_id: str, held_order: int, held_cid: str, held_entry: str
) -> bool:
    """Whether a decision (its :func:`publish_order`, correlation id and entry) replaces the
    held one in the lookup hash, as the scripts decide: inside the millisecond of the earlier
    entry the later entry wins, otherwise the later order, then the greater correlation id."""
    new, held = parse(entry_id), parse(held_entry)
    if new is not None and held is not None and new != held:
        first_ms = min(new, held)[0]
        lo, hi = first_ms * 1000, first_ms * 1000 + 999
        if lo <= order <= hi and lo <= held_order <= hi:
            return new > held
    return (order, cid) > (held_order, held_cid)


def argv(
    envelope: TradingIntelligenceEnvelope, payload: str, digest: str, ttl: int, force: bool
) -> list[str]:
    """One envelope's ARGV values, in :data:`ARGV_FIELDS` order (the layout every script reads)."""
    head = [payload, digest, str(ttl), "1" if force else "0", published_ts(envelope)]
    return [*head, *flat_values(envelope).values()]


@dataclass(frozen=True, slots=True)
class HeldDecision:
    """What an entry holds, from its correlation record (a script's ``clash``): the decision
    consumers see for a correlation id whose retry decided otherwise."""

    entry_id: str
    verdict: str
    confidence: float


def held_decision(clash: str) -> HeldDecision | None:
    """The ``clash`` a script returned, parsed; None for '' (no clash)."""
    parts = clash.split(" ")
    if len(parts) != 4:
        return None
    entry_id, _, verdict, confidence = parts
    return HeldDecision(entry_id, verdict, float(confidence))
