"""What an arena runner is, and the runner for an imported callable, which the framework
adapters build on.

A runner turns (ticker, trade date) into the arena's post-run state dict. It raises
:class:`ArenaTransientError` for failures worth retrying (built-in ``TimeoutError`` and
``ConnectionError`` from a callable are mapped to it), any other :class:`ArenaError` (or
``InvalidStateError`` for a refused state) for failures that are not.

Every run has a time limit (``TI_ARENA_TIMEOUT``, ``--arena-timeout``): :func:`run_bounded`
is how the pipeline and the backfill call a runner. An async arena is cancelled at the limit.
A sync one runs in a daemon thread of its own (:func:`in_daemon_thread`), which Python cannot
stop: at the limit the item fails, the thread is abandoned (it runs on until the callable
returns, and its result is dropped), and a command exits without waiting for it. (A thread of
``asyncio.to_thread``'s pool would instead be joined when the event loop closes: one hung
arena would hang the command at exit.)

Every state a runner returns is bounded and plain: it has passed
:func:`ti_core.contract.bounds.check_state` (size, depth, JSON types), or is the demo's (small
by construction), so Prefect only ever hashes, caches and persists bounded, plain states.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Self, runtime_checkable

from ti_core.contract.bounds import DEFAULT_MAX_STATE_BYTES, check_state
from ti_core.contract.keys import normalize_ticker, normalize_trade_date
from ti_core.errors import ArenaError, ArenaTimeoutError, ArenaTransientError, ConfigError, one_line

__all__ = ["ArenaRunner", "CallableArena", "in_daemon_thread", "resolve", "run_bounded"]


@runtime_checkable
class ArenaRunner(Protocol):
    """Turns (ticker, trade date) into a post-run state mapping."""

    spec: str
    is_demo: bool

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]: ...


def resolve(spec: str, path: str | None = None, *, need_callable: bool = True) -> Any:
    """The object ``package.module:attr.path`` names (``path``, else ``spec``); ConfigError."""
    module_name, _, attr_path = (spec if path is None else path).partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"arena {spec!r}: cannot import {module_name}: {exc}") from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"arena {spec!r}: {module_name} has no {attr_path}") from None
    if need_callable and not callable(target):
        raise ConfigError(f"arena {spec!r}: {attr_path} is not callable")
    return target


async def run_bounded(
    runner: ArenaRunner, ticker: str, trade_date: str, timeout: float
) -> dict[str, Any]:
    """``runner.run(ticker, trade_date)``, or ``ArenaTimeoutError`` once ``timeout`` seconds
    have passed (0: no limit). The run is cancelled; a sync arena's thread is left behind."""
    if timeout <= 0:
        return await runner.run(ticker, trade_date)
    try:
        async with asyncio.timeout(timeout) as limit:
            return await runner.run(ticker, trade_date)
    except TimeoutError:
        if not limit.expired():
            raise  # the arena's own TimeoutError, not ours
        raise ArenaTimeoutError(
            f"arena {runner.spec} did not return within {timeout:g} s for {ticker} {trade_date}"
            " (TI_ARENA_TIMEOUT)"
        ) from None


async def in_daemon_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a new daemon thread (with this context's variables), awaited.

    Cancelling the await abandons the thread (see the module docstring): nothing joins it, so
    neither the event loop's shutdown nor the interpreter's exit waits for a hung arena.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if done.done():  # cancelled (timed out): the result is dropped
            return
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)

    def work() -> None:
        try:
            result: tuple[bool, Any] = (True, context.run(function, *args))
        except BaseException as exc:  # handed to the awaiting task, which decides
            result = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *result)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    name = getattr(function, "__qualname__", "arena")
    threading.Thread(target=work, name=f"arena-{name}", daemon=True).start()
    return await done


class CallableArena:
    """``package.module:function`` (or ``package.module:object.method``): calls an imported
    ``(ticker, trade_date) -> mapping``; sync ones run in a worker thread. How an in-house
    arena plugs in."""

    is_demo = False

    def __init__(
        self,
        spec: str,
        function: Callable[..., Any] | None = None,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
    ) -> None:
        self.spec = spec
        self.function = function if function is not None else resolve(spec)
        self.max_state_bytes = max_state_bytes

    @classmethod
    def from_spec(cls, spec: str, rest: str, max_state_bytes: int) -> Self:
        """The registry's factory: ``cls(spec)`` imports what ``spec`` names (the framework
        adapters inherit this and read the name after their prefix)."""
        return cls(spec, max_state_bytes=max_state_bytes)

    async def _call(self, ticker: str, trade_date: str) -> Any:
        if inspect.iscoroutinefunction(self.function):
            return await self.function(ticker, trade_date)
        result = await in_daemon_thread(self.function, ticker, trade_date)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]:
        ticker, trade_date = normalize_ticker(ticker), normalize_trade_date(trade_date)
        try:
            result = await self._call(ticker, trade_date)
        except ArenaError:
            raise
        except Exception as exc:
            raise self.failure(exc, ticker, trade_date) from exc
        state = self.to_state(result, ticker, trade_date)
        check_state(
            state, self.max_state_bytes, f"arena {self.spec} state for {ticker} {trade_date}"
        )
        return state

    def failure(self, exc: Exception, ticker: str, trade_date: str) -> ArenaError:
        """What the callable's exception becomes: built-in ``TimeoutError`` and
        ``ConnectionError`` are transient (the framework adapters also recognise their LLM
        and data clients' errors, :func:`ti_core.arenas.framework.provider_failure`)."""
        if isinstance(exc, TimeoutError | ConnectionError):
            return ArenaTransientError(
                f"arena {self.spec} {ticker} {trade_date}: {one_line(exc, 200, typed=True)}"
            )
        return ArenaError(
            f"arena {self.spec} failed for {ticker} {trade_date}: {one_line(exc, 200, typed=True)}"
        )

    def to_state(self, result: Any, ticker: str, trade_date: str) -> dict[str, Any]:
        """The state from what the callable returned (adapters map their framework's shape)."""
        if not isinstance(result, Mapping):
            hint = ""
            if isinstance(result, tuple) and len(result) == 2:
                hint = " (a TradingAgents graph? use the spec tradingagents:MODULE:OBJECT)"
            raise ArenaError(
                f"arena {self.spec} returned {type(result).__name__} for {ticker} {trade_date}, "
                f"not a state mapping{hint}"
            )
        return dict(result)
