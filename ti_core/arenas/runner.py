"""What an arena runner is, and the runner for an imported callable, which the framework
adapters build on.

A runner turns (ticker, trade date) into the arena's post-run state dict. It raises
:class:`ArenaTransientError` for failures worth retrying (built-in ``TimeoutError`` and
``ConnectionError`` from a callable are mapped to it), any other :class:`ArenaError` (or
``InvalidStateError`` for a refused state) for failures that are not.

Every state a runner returns is bounded and plain: it has passed
:func:`ti_core.contract.bounds.check_state` (size, depth, JSON types), or is the demo's (small
by construction), so Prefect only ever hashes, caches and persists bounded, plain states.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Self, runtime_checkable

from ti_core.contract.bounds import DEFAULT_MAX_STATE_BYTES, check_state
from ti_core.contract.keys import normalize_ticker, normalize_trade_date
from ti_core.errors import ArenaError, ArenaTransientError, ConfigError, one_line

__all__ = ["ArenaRunner", "CallableArena", "resolve"]


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
        result = await asyncio.to_thread(self.function, ticker, trade_date)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]:
        ticker, trade_date = normalize_ticker(ticker), normalize_trade_date(trade_date)
        try:
            result = await self._call(ticker, trade_date)
        except ArenaError:
            raise
        except (TimeoutError, ConnectionError) as exc:
            raise ArenaTransientError(
                f"arena {self.spec} {ticker} {trade_date}: {one_line(exc, 200, typed=True)}"
            ) from exc
        except Exception as exc:
            raise ArenaError(
                f"arena {self.spec} failed for {ticker} {trade_date}: "
                f"{one_line(exc, 200, typed=True)}"
            ) from exc
        state = self.to_state(result, ticker, trade_date)
        check_state(
            state, self.max_state_bytes, f"arena {self.spec} state for {ticker} {trade_date}"
        )
        return state

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
