"""Consumer-group reading that never loses a good decision and never dies on one.

A :class:`GroupReader` reads new entries with XREADGROUP (in one MULTI with
:data:`~ti_core.consume.group_scripts.GAP_CHECK`, which records entries trimmed before the group
read
them) and acknowledges an entry only after the handler returned. Delivery is at least once:
handlers must be idempotent.

**Attempts, not deliveries.** What decides that an entry is bad is how many times the *handler
ran* on it and did not finish, recorded in Redis beside the group
(:func:`ti_core.contract.keys.attempts_key`, field = entry id), not how many times Redis delivered
it: a
consumer that died before reaching an entry must not count against it. New entries are handled
in batches (one XACK per batch: the fast path); an entry delivered before (the reader's own
pending entries after a restart, or entries reclaimed from a dead consumer with XAUTOCLAIM once
idle ``claim_idle_ms``) is handled alone: its attempt is counted *before* the handler is called
and it is acknowledged at once, so a crash on one entry charges that entry only. A crash in a
new batch is charged to no entry (the reader does not know which one it was on); from the first
redelivery on every call counts. So a handler that kills its process on an entry is called at
most ``max_attempts + 1`` times on it before it is dead-lettered, and the others are handled.

**The entry, or the consumer?** What the handler raises says whose fault a failure is:

- any ``Exception`` not listed below (``ValueError``, ``KeyError``, a validation error, ...):
  *this entry* is the problem. The attempt counts; the entry stays pending and is retried after
  ``claim_idle_ms``; after ``max_attempts`` it goes to the dead-letter stream.
- :class:`ConsumerBrokenError` (raise it yourself), ``BrokenPipeError`` (closed output),
  ``MemoryError``, an ``OSError`` that is not a lost connection (disk full, permissions), a
  Redis error other than a lost connection: *this consumer* is broken. The attempt is not
  counted, the entry stays pending (for a restart, or another consumer after
  ``claim_idle_ms``), and the error propagates out of :meth:`GroupReader.step` and
  :meth:`GroupReader.run`: the consumer stops.
- a lost connection (redis-py ``ConnectionError``/``TimeoutError``, an ``OSError`` such as
  ``ConnectionResetError``, :class:`~ti_core.errors.RedisUnavailableError`): *this consumer*
  cannot work for now. Not counted, entry left pending; :meth:`GroupReader.run` pauses with
  backoff and jitter, retries it, and gives up after ``give_up_after`` seconds.
- ``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit``: shutdown. Not counted,
  left pending, propagated.

**Bounded handlers.** A handler that has not returned after ``handler_timeout`` seconds is
left behind: the entry counts as an attempt (``handler did not return within N s``; it is
retried after ``claim_idle_ms`` and dead-lettered after ``max_attempts``) and the reader goes
on with the next entry. An ``async def`` handler is cancelled; a plain function runs in the
reader's worker thread (one call at a time, in order: the event loop stays free to keep time),
and a thread cannot be stopped, so a timed-out call runs on in the background while a fresh
worker thread takes the next entries (a daemon: it does not keep the process alive). The
``stop`` event of :meth:`GroupReader.run` is honoured within ``block_ms``, also while a handler
hangs: the entry is left pending, uncharged.

**Nobody steals an entry a live consumer is about to handle.** Entries wait in a batch (up to
``count`` of them) while the ones before them are handled, and idle time is what makes an entry
reclaimable. So while a batch is in hand, a keeper task, every ``claim_idle_ms / 4``,
acknowledges what has been handled and resets the idle time of the batch's entries
(``touch_mine``: ``XCLAIM ... JUSTID`` of each id still pending with this consumer, no delivery
counted); an entry found pending with another consumer meanwhile is left to it. A live
consumer's entries therefore never reach ``claim_idle_ms`` of idle time, however long its
batch or its handler takes; a dead consumer's do, and are reclaimed.

Only undecodable entries and entries whose handler failed ``max_attempts`` times are
dead-lettered (:func:`ti_core.contract.keys.dead_letter_key`, with the original id, raw data and
reason),
then acknowledged. A missing group (``NOGROUP``: destroyed, or the stream deleted) is recreated
at the configured ``start`` with a warning: ``"$"`` means only entries added from then on.
Needs a Redis server 6.2+ (XAUTOCLAIM), not the embedded store; trim-loss counting needs 7.0.
Its Lua runs as Redis 7 functions (``FCALL``; :mod:`ti_core.consume.group_calls`), so the
consumer's ACL user needs no ``EVAL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import threading
import time
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

from redis import exceptions as redis_errors

from ti_core import defaults
from ti_core.consume.group_calls import GroupFunctions, load_group_library
from ti_core.consume.reader import entry_payload, safe_block_ms
from ti_core.consume.reconnect import Outage
from ti_core.contract.decoder import explain_payload
from ti_core.contract.keys import (
    DEFAULT_STREAM_NAME,
    attempts_key,
    dead_letter_key,
    group_lost_key,
    validate_stream_name,
)
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.errors import InvalidStateError, RedisUnavailableError, TiError, one_line
from ti_core.failures import DeadLetter
from ti_core.transport.boundary import (
    connection_lost,
    is_function_missing,
    is_no_group,
    raise_mapped,
    redis_boundary,
    redis_calls,
)
from ti_core.transport.client import RedisClient
from ti_core.transport.replicas import queue_wait, replica_policy, replicated
from ti_core.transport.replies import (
    Entries,
    autoclaim,
    pending_count,
    read_entries,
    text,
)
from ti_core.transport.retry import RetryPolicy

__all__ = ["ConsumerBrokenError", "GroupReader", "GroupStats", "Handler", "ensure_group"]

THREAD_RUNS_ON = "; its thread runs on: threads cannot be killed"

logger = logging.getLogger("ti_core.groups")  # its name before the move

Handler = Callable[[str, TradingIntelligenceEnvelope], Awaitable[object] | object]
_Decoded = tuple[TradingIntelligenceEnvelope | None, Any, str]  # envelope, raw payload, reason
# An entry to handle: its id, its fields, and its decoding if done already (else done when its
# turn comes: a batch's envelopes are not all kept alive at once, which costs the GC dearly).
_Call = tuple[str, Any, _Decoded | None]
# What became of it: id, raw payload, None (handled) or why not, and whether it was undecodable.
_Outcome = tuple[str, Any, str | None, bool]


class ConsumerBrokenError(TiError):
    """Raised by a handler: "I, this consumer, cannot work; the entry is fine".

    The entry stays pending and uncharged and the reader stops (the error propagates), so
    another consumer or a restart handles it. Raise it when what failed is yours: the order
    gateway refused your credentials, a dependency is down for good, your output is gone.
    """


def _is_consumer_fault(exc: BaseException) -> bool:
    """True if ``exc`` from a handler is the consumer's failure, not the entry's (see above)."""
    return not isinstance(exc, Exception) or isinstance(
        exc,
        ConsumerBrokenError
        | OSError
        | MemoryError
        | redis_errors.RedisError
        | RedisUnavailableError,
    )


@dataclass(slots=True)
class GroupStats:
    """What a step (or a run) did: handled and acknowledged, dead-lettered, left for a retry."""

    handled: int = 0
    dead_lettered: int = 0
    failed: int = 0
    reclaimed: int = 0

    def add(self, other: GroupStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def total(self) -> int:
        return self.handled + self.dead_lettered + self.failed


class _Stopped(Exception):
    """The reader's stop event was set while a handler ran: the entry stays pending, uncharged."""


class _ThreadRun:
    """A plain-function handler's calls on a run of entries, in order, in one daemon thread.

    One thread per run (a batch, or the rest of it after a timeout), not a hop per entry: the
    loop wakes once for the whole run, unless a call times out or the reader is stopped. A
    thread cannot be stopped: an abandoned run's current call runs on, and the thread ends
    when it returns (if ever) without starting another; as a daemon it never keeps the
    process alive.
    """

    def __init__(self, handler: Handler, calls: list[_Call], taken: set[str]) -> None:
        self.handler, self.calls, self.taken = handler, calls, taken
        self.lock = threading.Lock()
        self.outcomes: list[_Outcome] = []
        self.current: tuple[int, float] | None = None  # (index, started) of a running call
        self.error: BaseException | None = None
        self.abandoned = False  # the reader moved on: record nothing more
        self.stopping = False  # the reader is stopping: start no new call
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()

    def work(self) -> None:
        """Run the calls (in the worker thread)."""
        try:
            for index, (entry_id, entry_fields, decoded) in enumerate(self.calls):
                with self.lock:
                    if self.abandoned or self.stopping:
                        return
                    if entry_id in self.taken:
                        continue
                envelope, payload, reason = decoded or _decode(entry_fields)
                if envelope is None:
                    with self.lock:
                        self.outcomes.append((entry_id, payload, reason, True))
                    continue
                with self.lock:
                    self.current = (index, time.monotonic())
                failure = None
                try:
                    result = self.handler(entry_id, envelope)
                    if inspect.isawaitable(result):  # a plain function returning a coroutine
                        asyncio.run_coroutine_threadsafe(_awaited(result), self.loop).result()
                except BaseException as exc:
                    if _is_consumer_fault(exc):
                        with self.lock:
                            if not self.abandoned:
                                self.error = exc
                        return
                    failure = one_line(exc, 340, typed=True)
                with self.lock:
                    if self.abandoned:
                        return
                    self.outcomes.append((entry_id, payload, failure, False))
                    self.current = None
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self.loop.call_soon_threadsafe(_settle, self.done)


class _Worker:
    """The daemon thread that runs a reader's :class:`_ThreadRun` s, one after the other.

    Starting a thread costs milliseconds on a busy machine, so one is kept while runs come; it
    ends after idling ``_IDLE_SECONDS``. A worker whose call timed out is retired (its thread
    ends when that call returns, if ever) and the next run gets a new one.
    """

    _IDLE_SECONDS = 10.0

    def __init__(self) -> None:
        self._runs: queue.SimpleQueue[_ThreadRun | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._alive = False

    def submit(self, run: _ThreadRun) -> None:
        with self._lock:
            self._runs.put(run)
            if not self._alive:
                self._alive = True
                threading.Thread(target=self._serve, name="ti-group-handler", daemon=True).start()

    def retire(self) -> None:
        self._runs.put(None)

    def _serve(self) -> None:
        while True:
            try:
                run = self._runs.get(timeout=self._IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._runs.empty():
                        self._alive = False
                        return
                continue
            if run is None:
                return
            run.work()


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _is_async(handler: Handler) -> bool:
    call = getattr(type(handler), "__call__", None)  # noqa: B004 - ``async def __call__``
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


@redis_boundary("no group was created")
async def ensure_group(client: RedisClient, stream_name: str, group: str, start: str = "$") -> bool:
    """Create ``group`` on ``stream_name`` (and the stream); True if created, False if it existed.

    Only "group already exists" (BUSYGROUP) is tolerated; any other refusal propagates. A new
    group starts with no attempt records, and (Redis 7) a known position, so entries trimmed
    before it reads them can be counted.
    """
    return await _create_group(GroupFunctions(client), stream_name, group, start)


async def _create_group(lua: GroupFunctions, stream_name: str, group: str, start: str) -> bool:
    created = await lua.call(
        "create_group", [stream_name, attempts_key(stream_name, group)], [group, start]
    )
    return bool(created)


class GroupReader:
    """One consumer of a group; call :meth:`run` (or :meth:`step` / :meth:`drain` yourself)."""

    def __init__(
        self,
        client: RedisClient,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        stream_name: str = DEFAULT_STREAM_NAME,
        start: str = "$",
        max_attempts: int = 5,
        claim_idle_ms: int = defaults.CLAIM_IDLE_MS,
        count: int = 100,
        block_ms: int = defaults.BLOCK_MS,
        dead_letter_maxlen: int = defaults.DEAD_LETTER_MAXLEN,
        give_up_after: float = defaults.RECONNECT_GIVE_UP_SECONDS,
        retry: RetryPolicy | None = None,
        handler_timeout: float = defaults.HANDLER_TIMEOUT_SECONDS,
    ) -> None:
        if not group or not consumer:
            raise InvalidStateError("a consumer group and a consumer name are required")
        if max_attempts < 1 or claim_idle_ms < 1 or count < 1:
            raise InvalidStateError("max_attempts, claim_idle_ms and count must be >= 1")
        if not handler_timeout > 0:
            raise InvalidStateError("handler_timeout must be > 0 seconds")
        self.client = client
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.stream_name = validate_stream_name(stream_name)
        self.dead_letter_stream = dead_letter_key(stream_name)
        self.attempts_key = attempts_key(stream_name, group)
        self.lost_key = group_lost_key(stream_name, group)
        self.start = start
        self.max_attempts = max_attempts
        self.claim_idle_ms = claim_idle_ms
        self.count = count
        self.block_ms = block_ms
        self.dead_letter_maxlen = dead_letter_maxlen
        self.give_up_after = give_up_after
        self.retry = retry  # pauses while Redis is lost (default: ``redis_policy``)
        self.handler_timeout = handler_timeout
        self._lua = GroupFunctions(client)
        self._touch_every = claim_idle_ms / 4000  # seconds between idle-time resets
        self._touched = 0.0  # when the batch in hand was read or last refreshed
        self._taken: set[str] = set()  # of that batch, found pending with another consumer
        self._stopping = False  # run()'s stop event is set: give a handler block_ms, no more
        self._scope: asyncio.Timeout | None = None  # the running async handler's time limit
        self._stop_event: asyncio.Event | None = None
        self._worker: _Worker | None = None  # runs a plain-function handler's calls
        self._group_ready = False
        self._pending_cursor: str | None = "0"  # own pending entries first, after a restart
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._top: str | None = None  # the stream's last id at the last empty read
        self._acks: list[str] = []

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, *, stop: asyncio.Event | None = None) -> GroupStats:
        """Step until ``stop`` is set or the task is cancelled, riding out Redis outages.

        A lost connection (of the reader or of the handler) pauses the loop with backoff and
        jitter and logs one line; the first step that works logs another and resumes from
        this consumer's pending entries, then new ones. After ``give_up_after`` seconds of
        failure it raises :class:`~ti_core.errors.RedisUnavailableError`. Anything the
        handler raises that means "this consumer is broken" propagates.
        """
        total = GroupStats()
        outage = Outage(
            f"group {self.group} consumer {self.consumer}", self.give_up_after, self.retry
        )
        self._stopping = False
        self._stop_event = stop
        watcher = asyncio.create_task(self._watch(stop)) if stop is not None else None
        try:
            while stop is None or not stop.is_set():
                try:
                    stats = await self.step()
                except _Stopped:
                    break
                except Exception as exc:
                    if not connection_lost(exc):
                        raise
                    # Unsent acknowledgements are kept: the next step sends them before it
                    # re-reads this consumer's pending entries, so none is handled twice.
                    self._pending_cursor = "0"
                    await outage.wait(exc)
                    continue
                outage.recovered()
                total.add(stats)
        finally:
            if watcher is not None:
                watcher.cancel()
            self._stopping = False
            self._stop_event = None
            if self._worker is not None:
                self._worker.retire()
                self._worker = None
        return total

    async def _watch(self, stop: asyncio.Event) -> None:
        """Once ``stop`` is set, cut a running async handler's time to ``block_ms``."""
        await stop.wait()
        self._stopping = True
        scope = self._scope
        if scope is not None:
            by = asyncio.get_running_loop().time() + self.block_ms / 1000
            when = scope.when()
            scope.reschedule(by if when is None else min(when, by))

    async def drain(self) -> GroupStats:
        """Step until nothing is new and the group has nothing pending (tests, batch jobs)."""
        total = GroupStats()
        while True:
            stats = await self.step(block=False)
            total.add(stats)
            if stats.total or stats.reclaimed:
                continue
            if await self._group_pending() == 0:
                return total
            await asyncio.sleep(0.02)  # pending elsewhere: wait for it to become claimable

    async def step(self, *, block: bool = True) -> GroupStats:
        """One round: own pending entries, else reclaim idle ones if due, then new entries."""
        try:
            return await self._step(block)
        except BrokenPipeError:
            raise  # the handler's output is gone: not a Redis problem
        except redis_errors.RedisError as exc:  # the reader's or the handler's Redis
            if is_no_group(exc):  # alone, or quoted by a failed MULTI
                await self._recreate_group()
                return GroupStats()
            raise_mapped(exc, self.client, "entries not acknowledged stay pending")
            raise

    async def _recreate_group(self) -> None:
        """The group (or the stream) was deleted under us: make it again where configured."""
        self._group_ready = False
        self._pending_cursor = None  # the pending list went with the group
        self._claim_cursor = "0-0"
        self._acks.clear()
        where = "only entries added from now on" if self.start == "$" else f"from {self.start}"
        logger.warning(
            "group %s vanished from %s; recreating it at %s (%s)",
            self.group,
            self.stream_name,
            self.start,
            where,
        )
        await self._ensure_group()

    async def _ensure_group(self) -> None:
        """Create the group if needed; this also finds (or loads) the group functions."""
        with redis_calls(self.client, "no group was created"):
            await _create_group(self._lua, self.stream_name, self.group, self.start)
        self._group_ready = True

    async def _step(self, block: bool) -> GroupStats:
        if not self._group_ready:
            await self._ensure_group()
        await self._flush_acks()  # any left by a lost connection, before pending is re-read
        if self._pending_cursor is not None:
            stats = await self._own_pending()
            if stats.total:
                return stats
        stats = GroupStats()
        if self._now() >= self._next_claim:
            stats.add(await self._reclaim())
        entries = await self._new_entries()
        if not entries and block:
            if await self._wait_for_new():
                entries = await self._new_entries()
        stats.add(await self._process_new(entries))
        return stats

    # -- sources ----------------------------------------------------------------------------

    async def _new_entries(self) -> Entries:
        """Entries never delivered to the group (XREADGROUP >); a trim gap passed is recorded.

        One MULTI: the gap check, the read, and the stream's last id (what to wait after).
        """
        # With TI_MIN_REPLICAS the read (a delivery: it changes the group) is followed by WAIT
        # on the same connection, so a failover cannot forget it and deliver it again. WAIT
        # does not block inside MULTI, so then the three go as a plain pipeline: back to back,
        # though another client's trim could fall between the check and the read.
        pipe = self.client.pipeline(transaction=replica_policy(self.client) is None)
        self._lua.queue(pipe, "gap_check", [self.stream_name, self.lost_key], [self.group])
        pipe.xreadgroup(self.group, self.consumer, {self.stream_name: ">"}, count=self.count)
        policy = queue_wait(pipe, self.client)
        results = await pipe.execute(raise_on_error=False)
        gap = results[0]
        if isinstance(gap, Exception) and is_function_missing(gap):
            # Flushed since the group was made (FUNCTION FLUSH, a fresh failover primary):
            # this one read went unchecked. Load them again for the next.
            logger.warning(
                "the group functions were missing on the server; a trim gap passed by this "
                "read of group %s was not recorded",
                self.group,
            )
            await load_group_library(self.client)
            gap = [0, None]
        for result in (gap, *results[1:]):
            if isinstance(result, Exception):
                raise result
        (lost, top), reply = gap, results[1]
        if policy is not None and int(results[2]) < policy.replicas:
            logger.warning(
                "a group read reached %s of %d replicas in %d ms: a failover now "
                "could deliver its entries again",
                results[2],
                policy.replicas,
                policy.timeout_ms,
            )
        self._top = text(top) if top is not None else None
        if lost:
            how_many = "an unknown number of" if int(lost) < 0 else str(lost)
            logger.warning(
                "group %s lost %s entries of %s: trimmed before it read them (recorded in %s)",
                self.group,
                how_many,
                self.stream_name,
                self.lost_key,
            )
        return read_entries(reply)

    async def _wait_for_new(self) -> bool:
        """Block until the stream has an entry after the last id seen by the empty read.

        A blocking XREADGROUP cannot run in the MULTI that checks for trim gaps (and one issued
        after it could pass a gap opened in between), so the reader waits with XREAD, which
        delivers nothing, then reads through :meth:`_new_entries` again.
        """
        until_claim = int((self._next_claim - self._now()) * 1000)
        block_ms = safe_block_ms(self.client, min(self.block_ms, max(1, until_claim)))
        reply = await self.client.xread(
            {self.stream_name: self._top or "$"}, count=1, block=block_ms
        )
        return bool(read_entries(reply))

    async def _own_pending(self) -> GroupStats:
        assert self._pending_cursor is not None
        reply = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream_name: self._pending_cursor}, count=self.count
        )
        entries = read_entries(reply)
        if not entries:
            self._pending_cursor = None
            return GroupStats()
        self._pending_cursor = entries[-1][0]
        return await self._process_redelivered(entries)

    async def _reclaim(self) -> GroupStats:
        reply = autoclaim(
            await self.client.xautoclaim(
                self.stream_name,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                start_id=self._claim_cursor,
                count=self.count,
            )
        )
        cursor, claimed, deleted = reply.cursor, reply.claimed, reply.deleted
        self._claim_cursor = cursor
        # Scan on at once while the cursor says there is more; else wait half the idle time.
        interval = 0.0 if cursor != "0-0" else min(max(self.claim_idle_ms / 2000, 0.05), 30.0)
        self._next_claim = self._now() + interval
        stats = GroupStats(reclaimed=len(claimed))
        for entry_id in deleted:  # Redis 7 drops these from the pending list: record the loss
            await self._dead_letter(
                entry_id,
                None,
                "trimmed from the stream before it was acknowledged (lost to this group)",
                0,
                ack=False,
            )
            stats.dead_lettered += 1
        if claimed:
            logger.warning(
                "%s reclaimed %d entries idle over %d ms",
                self.consumer,
                len(claimed),
                self.claim_idle_ms,
            )
            stats.add(await self._process_redelivered(claimed))
        return stats

    async def _group_pending(self) -> int:
        return pending_count(await self.client.xpending(self.stream_name, self.group))

    # -- handling ---------------------------------------------------------------------------

    async def _process_new(self, entries: Entries) -> GroupStats:
        """First deliveries: no write before each call; one XACK for the batch (fast path)."""
        stats = GroupStats()
        async with self._holding(entries):  # which acknowledges the batch when it ends
            calls: list[_Call] = [(entry_id, fields, None) for entry_id, fields in entries]
            async for entry_id, payload, failure, undecodable in self._handle(calls):
                if undecodable:
                    await self._dead_letter(entry_id, payload, failure or "undecodable", 0)
                    stats.dead_lettered += 1
                    continue
                if failure is None:
                    self._acks.append(entry_id)
                    stats.handled += 1
                    continue
                attempts = int(await self.client.hincrby(self.attempts_key, entry_id, 1))
                outcome = await self._failed(entry_id, payload, attempts, failure)
                setattr(stats, outcome, getattr(stats, outcome) + 1)
        return stats

    async def _process_redelivered(self, entries: Entries) -> GroupStats:
        """Entries delivered before: one at a time, the attempt counted before the call."""
        stats = GroupStats()
        async with self._holding(entries):
            for entry_id, entry_fields in entries:
                if self._was_taken(entry_id):
                    continue
                envelope, payload, reason = _decode(entry_fields)
                if envelope is None:
                    await self._dead_letter(entry_id, payload, reason, 0)
                    stats.dead_lettered += 1
                    continue
                attempts = int(await self.client.hincrby(self.attempts_key, entry_id, 1))
                if attempts > self.max_attempts:
                    await self._dead_letter(
                        entry_id,
                        payload,
                        f"handler failed or crashed {attempts - 1} times without "
                        f"an acknowledgement (limit {self.max_attempts})",
                        attempts - 1,
                    )
                    stats.dead_lettered += 1
                    continue
                try:
                    decoded = (envelope, payload, reason)
                    outcomes = [o async for o in self._handle([(entry_id, entry_fields, decoded)])]
                except BaseException:
                    await self._uncharge(entry_id)
                    raise
                if not outcomes:  # taken by another consumer meanwhile
                    await self._uncharge(entry_id)
                    continue
                failure = outcomes[0][2]
                if failure is None:
                    pipe = self.client.pipeline(transaction=True)
                    pipe.xack(self.stream_name, self.group, entry_id)
                    pipe.hdel(self.attempts_key, entry_id)
                    await pipe.execute()
                    stats.handled += 1
                    continue
                outcome = await self._failed(entry_id, payload, attempts, failure)
                setattr(stats, outcome, getattr(stats, outcome) + 1)
        return stats

    # -- holding a batch: nobody reclaims what a live consumer is about to handle -------------

    @contextlib.asynccontextmanager
    async def _holding(self, entries: Entries) -> AsyncIterator[None]:
        """While a batch is in hand, a keeper resets its entries' idle time every
        ``claim_idle_ms / 4`` (nothing for a batch handled faster than that)."""
        ids = [entry_id for entry_id, _ in entries]
        self._touched = self._now()
        self._taken = set()
        keeper = asyncio.create_task(self._keep(ids)) if ids else None
        try:
            yield
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
                # The keeper may have been stopped while acknowledging: what it took is back
                # in the list, and goes now, before anything can reclaim it.
                await self._flush_acks()

    async def _keep(self, ids: list[str]) -> None:
        while True:
            await asyncio.sleep(max(0.0, self._touched + self._touch_every - self._now()))
            if self._now() - self._touched < self._touch_every:
                continue
            try:
                await self._touch(ids)
            except Exception as exc:  # the reader's own calls will meet the same failure
                logger.warning(
                    "%s could not refresh its batch (%s); another consumer may reclaim it",
                    self.consumer,
                    one_line(exc, 200),
                )
                self._touched = self._now()

    async def _touch(self, ids: list[str]) -> None:
        """Acknowledge what is handled, reset the idle time of the batch's entries still
        pending with this consumer, and note those another consumer has taken meanwhile."""
        await self._flush_acks()
        mine = await self._lua.call(
            "touch_mine", [self.stream_name], [self.group, self.consumer, *ids]
        )
        kept = {text(entry_id) for entry_id in mine}
        self._taken.update(i for i in ids if i not in kept)
        self._touched = self._now()

    def _was_taken(self, entry_id: str) -> bool:
        if entry_id not in self._taken:
            return False
        logger.warning(
            "%s: entry %s was reclaimed by another consumer while it waited in this batch; "
            "left to it",
            self.consumer,
            entry_id,
        )
        return True

    # -- calling the handler: bounded in time, stoppable --------------------------------------

    async def _handle(self, calls: list[_Call]) -> AsyncIterator[_Outcome]:
        """Run the handler on each entry still this consumer's, in order; yield (entry id,
        payload, None if it returned or the reason the entry failed: it raised, or did not
        return within ``handler_timeout``; or, for an undecodable entry, why, and True).

        A failure that is the consumer's (see the module docstring) is raised after the
        outcomes before it, and so is a stop requested meanwhile (:class:`_Stopped`).
        """
        if not calls:
            return
        if _is_async(self.handler):
            for entry_id, entry_fields, decoded in calls:
                if self._stopping:
                    raise _Stopped
                if self._was_taken(entry_id):
                    continue
                envelope, payload, reason = decoded or _decode(entry_fields)
                if envelope is None:
                    yield entry_id, payload, reason, True
                else:
                    yield entry_id, payload, await self._call_async(entry_id, envelope), False
            return
        async for outcome in self._call_in_thread(calls):
            yield outcome

    async def _call_async(self, entry_id: str, envelope: TradingIntelligenceEnvelope) -> str | None:
        limit = self.block_ms / 1000 if self._stopping else self.handler_timeout
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                self._scope = scope
                result = self.handler(entry_id, envelope)
                if inspect.isawaitable(result):
                    await result
        except TimeoutError:
            if not scope.expired():  # the handler's own
                raise
            if self._stopping:
                raise _Stopped from None
            return self._timed_out(entry_id, "")
        except Exception as exc:
            if _is_consumer_fault(exc):
                raise
            return one_line(exc, 340, typed=True)
        finally:
            self._scope = None
        return None

    async def _call_in_thread(self, calls: list[_Call]) -> AsyncIterator[_Outcome]:
        start = 0
        while start < len(calls):
            run = _ThreadRun(self.handler, calls[start:], self._taken)
            timed_out, stopped = await self._wait_for(run)
            with run.lock:
                outcomes, error = list(run.outcomes), run.error
            for outcome in outcomes:
                yield outcome
            if error is not None:
                raise error
            if stopped:
                raise _Stopped
            if timed_out is None:
                return
            entry_id, entry_fields, decoded = calls[start + timed_out]
            payload = decoded[1] if decoded else entry_payload(entry_fields)[0]
            yield entry_id, payload, self._timed_out(entry_id, THREAD_RUNS_ON), False
            start += timed_out + 1

    async def _wait_for(self, run: _ThreadRun) -> tuple[int | None, bool]:
        """Until ``run`` is done: (None, False); or the index of the call that timed out; or
        (None, True) when stopped. A run left behind records nothing more."""
        if self._worker is None:
            self._worker = _Worker()
        self._worker.submit(run)
        stop_by: float | None = None
        stop = self._stop_event
        stopping = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            while not run.done.done():
                now = self._now()
                with run.lock:
                    current = run.current
                deadline = current[1] + self.handler_timeout if current else now + 1.0
                if self._stopping and stop_by is None:
                    stop_by = now + self.block_ms / 1000
                    with run.lock:
                        run.stopping = True  # no new call; the current one gets block_ms
                wait = min(deadline, stop_by or deadline) - now
                waiters: set[asyncio.Future[Any]] = {run.done}
                if stopping is not None and not stopping.done():
                    waiters.add(stopping)
                await asyncio.wait(waiters, timeout=max(wait, 0.0), return_when=FIRST_COMPLETED)
                if stopping is not None and stopping.done():
                    self._stopping = True
                if run.done.done():
                    break
                now = self._now()
                with run.lock:  # decided under the lock: the call cannot finish meanwhile
                    current = run.current
                    stopped = stop_by is not None and now >= stop_by
                    late = current is not None and now >= current[1] + self.handler_timeout
                    run.abandoned = stopped or late
                if stopped or late:
                    self._retire_if_busy(current)
                    return (None, True) if stopped or current is None else (current[0], False)
        except BaseException:
            with run.lock:
                run.abandoned, current = True, run.current
            self._retire_if_busy(current)
            raise
        finally:
            if stopping is not None:
                stopping.cancel()
        return None, stop_by is not None

    def _retire_if_busy(self, current: tuple[int, float] | None) -> None:
        """A run left behind mid-call: its worker thread is stuck in it; retire the worker."""
        if current is not None and self._worker is not None:
            self._worker.retire()
            self._worker = None

    def _timed_out(self, entry_id: str, runs_on: str) -> str:
        logger.warning(
            "handler timed out on %s after %g s%s", entry_id, self.handler_timeout, runs_on
        )
        return f"handler did not return within {self.handler_timeout:g} s (timed out{runs_on})"

    async def _failed(self, entry_id: str, payload: Any, attempts: int, why: str) -> str:
        if attempts >= self.max_attempts:
            await self._dead_letter(
                entry_id, payload, f"handler failed {attempts} times; last: {why}", attempts
            )
            return "dead_lettered"
        logger.warning(
            "handler failed on %s (attempt %d of %d), left pending: %s",
            entry_id,
            attempts,
            self.max_attempts,
            why,
        )
        return "failed"

    async def _uncharge(self, entry_id: str) -> None:
        """Take back an attempt that failed for the consumer's reasons (best effort)."""
        try:
            await asyncio.shield(self.client.hincrby(self.attempts_key, entry_id, -1))
        except Exception:  # noqa: S110 - Redis gone: an extra attempt (a cancellation goes on)
            pass

    async def _flush_acks(self) -> None:
        if self._acks:
            ids, self._acks = self._acks, []
            try:
                await replicated(self.client, lambda c: c.xack(self.stream_name, self.group, *ids))
            except BaseException:
                # Not known to be acknowledged (a failure, or the keeper cancelled mid-call):
                # the next flush sends them again (XACK is idempotent). Dropping them here
                # left entries pending, reclaimed and handled twice.
                self._acks[:0] = ids
                raise

    async def _dead_letter(
        self, entry_id: str, payload: Any, reason: str, attempts: int, *, ack: bool = True
    ) -> None:
        logger.warning("dead-lettering %s of %s: %s", entry_id, self.stream_name, reason)
        letter = DeadLetter.now(
            entry_id, self.stream_name, self.group, self.consumer, reason, attempts, payload
        )
        pipe = self.client.pipeline(transaction=True)  # the record and the ack, or neither
        pipe.xadd(
            self.dead_letter_stream,
            letter.fields(),
            maxlen=self.dead_letter_maxlen or None,
            approximate=True,
        )
        if ack:
            pipe.xack(self.stream_name, self.group, entry_id)
        pipe.hdel(self.attempts_key, entry_id)
        await pipe.execute()

    @staticmethod
    def _now() -> float:
        return time.monotonic()


async def _awaited(result: Any) -> Any:
    return await result


def _decode(entry_fields: Any) -> tuple[TradingIntelligenceEnvelope | None, Any, str]:
    payload, reason = entry_payload(entry_fields)
    if payload is None:
        return None, None, reason
    envelope, reason = explain_payload(payload)
    return envelope, payload, reason
