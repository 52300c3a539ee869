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
reclaimable. So whenever ``claim_idle_ms / 4`` has passed since the batch was read or last
refreshed (before an entry's turn, and while a slow handler runs), the reader acknowledges
what it has handled and resets the idle time of the entries it still holds
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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
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

logger = logging.getLogger("ti_core.groups")  # its name before the move

Handler = Callable[[str, TradingIntelligenceEnvelope], Awaitable[object] | object]


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


class _Worker:
    """One daemon thread that runs a reader's plain-function handler calls, one at a time.

    A call that times out cannot be stopped (Python has no way to kill a thread): the reader
    abandons this worker (:meth:`close`) and starts a new one; the old thread ends when the
    call returns, if ever, and being a daemon it never keeps the process alive.
    """

    _IDLE_SECONDS = 10.0  # an idle worker ends; the next call starts another

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._alive = False

    def submit(self, handler: Handler, *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._calls.put((handler, args, loop, future))
            if not self._alive:
                self._alive = True
                threading.Thread(target=self._work, name="ti-group-handler", daemon=True).start()
        return future

    def close(self) -> None:
        self._calls.put(None)

    def _work(self) -> None:
        while True:
            try:
                call = self._calls.get(timeout=self._IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._calls.empty():
                        self._alive = False
                        return
                continue
            if call is None:
                return
            handler, args, loop, future = call
            try:
                outcome: tuple[bool, Any] = (True, handler(*args))
            except BaseException as exc:  # handed to the reader, which decides
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():  # timed out or stopped meanwhile
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _is_async(handler: Handler) -> bool:
    call = getattr(type(handler), "__call__", None)  # noqa: B004 - ``async def __call__``
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _forget(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


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
        self._holding: list[str] = []  # this batch's entries from the current one on
        self._touched = 0.0  # when they were last read or refreshed
        self._taken: set[str] = set()  # of this batch, found pending with another consumer
        self._stop: asyncio.Event | None = None
        self._worker: _Worker | None = None
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
        self._stop = stop
        try:
            while stop is None or not stop.is_set():
                try:
                    stats = await self.step()
                except _Stopped:
                    break
                except Exception as exc:
                    if not connection_lost(exc):
                        raise
                    self._acks.clear()  # unsent: those entries stay pending and come back
                    self._pending_cursor = "0"
                    await outage.wait(exc)
                    continue
                outage.recovered()
                total.add(stats)
        finally:
            self._stop = None
            if self._worker is not None:
                self._worker.close()
                self._worker = None
        return total

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
        self._hold(entries)
        try:
            for index, (entry_id, entry_fields) in enumerate(entries):
                if not await self._turn(entries, index):
                    continue
                envelope, payload, reason = _decode(entry_fields)
                if envelope is None:
                    await self._dead_letter(entry_id, payload, reason, 0)
                    stats.dead_lettered += 1
                    continue
                failure = await self._call(entry_id, envelope)
                if failure is None:
                    self._acks.append(entry_id)
                    stats.handled += 1
                    continue
                attempts = int(await self.client.hincrby(self.attempts_key, entry_id, 1))
                outcome = await self._failed(entry_id, payload, attempts, failure)
                setattr(stats, outcome, getattr(stats, outcome) + 1)
        finally:
            await self._flush_acks()
        return stats

    async def _process_redelivered(self, entries: Entries) -> GroupStats:
        """Entries delivered before: one at a time, the attempt counted before the call."""
        stats = GroupStats()
        self._hold(entries)
        for index, (entry_id, entry_fields) in enumerate(entries):
            if not await self._turn(entries, index):
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
                failure = await self._call(entry_id, envelope)
            except BaseException:
                await self._uncharge(entry_id)
                raise
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

    def _hold(self, entries: Entries) -> None:
        """A batch was just delivered (its idle times are 0): its entries are this reader's."""
        self._holding = [entry_id for entry_id, _ in entries]
        self._touched = self._now()
        self._taken = set()

    async def _turn(self, entries: Entries, index: int) -> bool:
        """Entry ``index``'s turn: refresh the batch if due; False if another consumer has it."""
        self._holding = [entry_id for entry_id, _ in entries[index:]]
        if self._now() - self._touched >= self._touch_every:
            await self._touch()
        entry_id = entries[index][0]
        if entry_id in self._taken:
            logger.warning(
                "%s: entry %s was reclaimed by another consumer while it waited in this "
                "batch; left to it",
                self.consumer,
                entry_id,
            )
            return False
        return True

    async def _touch(self) -> None:
        """Acknowledge what is handled, and reset the idle time of the entries still held."""
        await self._flush_acks()
        if self._holding:
            mine = await self._lua.call(
                "touch_mine", [self.stream_name], [self.group, self.consumer, *self._holding]
            )
            kept = {text(entry_id) for entry_id in mine}
            self._taken.update(i for i in self._holding if i not in kept)
        self._touched = self._now()

    # -- calling the handler: bounded in time, stoppable --------------------------------------

    async def _call(self, entry_id: str, envelope: TradingIntelligenceEnvelope) -> str | None:
        """Run the handler: None if it returned, the reason if the entry made it fail
        (it raised, or did not return within ``handler_timeout``).

        A failure that is the consumer's (see the module docstring) propagates instead, and so
        does a stop requested meanwhile (:class:`_Stopped`).
        """
        try:
            finished = await self._run_handler(entry_id, envelope)
        except _Stopped:
            raise
        except Exception as exc:
            if _is_consumer_fault(exc):
                raise
            return one_line(exc, 340, typed=True)
        if finished:
            return None
        runs_on = (
            "" if _is_async(self.handler) else "; its thread runs on: threads cannot be killed"
        )
        logger.warning(
            "handler timed out on %s after %g s%s", entry_id, self.handler_timeout, runs_on
        )
        return f"handler did not return within {self.handler_timeout:g} s (timed out{runs_on})"

    async def _run_handler(self, entry_id: str, envelope: TradingIntelligenceEnvelope) -> bool:
        """True once the handler returned; False if it timed out (and was left behind)."""
        call = self._start(entry_id, envelope)
        deadline = self._now() + self.handler_timeout
        stopping = asyncio.ensure_future(self._stop.wait()) if self._stop is not None else None
        stop_by: float | None = None  # set: give the handler until then, then leave it
        try:
            while True:
                now = self._now()
                wait = min(deadline, self._touched + self._touch_every, stop_by or deadline) - now
                waiters = {call} if stopping is None or stopping.done() else {call, stopping}
                await asyncio.wait(waiters, timeout=max(wait, 0), return_when=FIRST_COMPLETED)
                if call.done():
                    result = call.result()  # the handler's own error, if it raised
                    if not inspect.isawaitable(result):
                        return True
                    call = asyncio.ensure_future(_awaited(result))  # a function returning one
                    continue
                now = self._now()
                if stopping is not None and stopping.done() and stop_by is None:
                    stop_by = now + self.block_ms / 1000
                if stop_by is not None and now >= stop_by:
                    self._abandon(call)
                    raise _Stopped
                if now >= deadline:
                    self._abandon(call)
                    return False
                if now - self._touched >= self._touch_every:
                    await self._touch()  # a slow handler: keep its entry (and the batch) ours
        except BaseException:
            if not call.done():  # cancelled from outside, or a Redis failure in a touch
                self._abandon(call)
            raise
        finally:
            if stopping is not None:
                stopping.cancel()

    def _start(self, entry_id: str, envelope: TradingIntelligenceEnvelope) -> asyncio.Future[Any]:
        """The handler's call, running: a task (``async def``), or in the worker thread."""
        if _is_async(self.handler):
            return asyncio.ensure_future(_awaited(self.handler(entry_id, envelope)))
        if self._worker is None:
            self._worker = _Worker()
        return self._worker.submit(self.handler, entry_id, envelope)

    def _abandon(self, call: asyncio.Future[Any]) -> None:
        """Leave a handler call behind: cancel a coroutine; a thread runs on, so retire it."""
        call.add_done_callback(_forget)
        call.cancel()
        if not _is_async(self.handler) and self._worker is not None:
            self._worker.close()
            self._worker = None

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
        except BaseException:  # noqa: S110 - Redis gone or shutting down: an extra attempt
            pass

    async def _flush_acks(self) -> None:
        if self._acks:
            ids, self._acks = self._acks, []
            await replicated(self.client, lambda c: c.xack(self.stream_name, self.group, *ids))

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
