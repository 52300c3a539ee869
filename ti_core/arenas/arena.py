"""Arena runners: (ticker, trade date) -> the arena's post-run state dict, chosen by a spec.

Specs (setting ``TI_ARENA``, flag ``--arena``):

- ``replay:DIR``: the archived state ``DIR/{TICKER}/{YYYY-MM-DD}.json`` of an earlier run.
- ``package.module:function`` (or ``package.module:object.method``): a sync or async callable
  ``(ticker, trade_date) -> mapping``; how an in-house arena plugs in.
- ``tradingagents:MODULE:OBJECT`` and ``hedgefund:MODULE:FUNCTION``: a TradingAgents graph or
  an ai-hedge-fund ``run_hedge_fund``, through the adapters in :mod:`ti_core.arenas.adapters`.
- ``demo``: a deterministic, offline stand-in; its arena id starts ``demo-`` and its
  envelopes carry ``meta.demo = true`` (:data:`DEMO_META`). It is the default only when no
  arena is configured, and :func:`ensure_demo_allowed` keeps it off a configured Redis server.

Every state a runner returns has passed :func:`ti_core.contract.bounds.check_state` (size, depth,
JSON
types; a replayed file's size is checked before it is read), so Prefect only ever hashes,
caches and persists bounded, plain states.

A runner raises :class:`ArenaTransientError` for failures worth retrying (built-in
``TimeoutError`` and ``ConnectionError`` from a callable are mapped to it), any other
:class:`ArenaError` (or ``InvalidStateError`` for a refused state) for failures that are not.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ti_core.contract.bounds import DEFAULT_MAX_STATE_BYTES, check_file_size, check_state, too_deep
from ti_core.contract.keys import normalize_ticker, normalize_trade_date, shorten
from ti_core.errors import (
    ArenaError,
    ArenaTransientError,
    ConfigError,
    DemoRefusedError,
    StateNotFoundError,
    one_line,
)
from ti_core.settings import TiSettings

__all__ = [
    "DEMO_META",
    "ArenaRunner",
    "CallableArena",
    "DemoArena",
    "ReplayArena",
    "ensure_demo_allowed",
    "load_arena",
    "resolve",
]

DEMO_META: dict[str, Any] = {"demo": True}
_IMPORT_SPEC_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
    r"(\.[A-Za-z_][A-Za-z0-9_]*)*$"
)


@runtime_checkable
class ArenaRunner(Protocol):
    """Turns (ticker, trade date) into a post-run state mapping."""

    spec: str
    is_demo: bool

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]: ...


class ReplayArena:
    """Reads ``{directory}/{TICKER}/{YYYY-MM-DD}.json``; the pair is validated first."""

    is_demo = False

    def __init__(
        self, directory: str | Path, max_state_bytes: int = DEFAULT_MAX_STATE_BYTES
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.spec = f"replay:{directory}"
        self.max_state_bytes = max_state_bytes

    def path_for(self, ticker: str, trade_date: str) -> Path:
        """The state file of a pair; raises ``InvalidStateError`` for a bad ticker or date."""
        day = normalize_trade_date(trade_date)
        return self.directory / normalize_ticker(ticker) / f"{day}.json"

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]:
        path = self.path_for(ticker, trade_date)
        limit = self.max_state_bytes
        try:
            with path.open("rb") as handle:  # measured on the open file, then read no more
                check_file_size(path, limit, os.fstat(handle.fileno()).st_size)
                data = handle.read(limit + 1)
            check_file_size(path, limit, len(data))  # it grew while we looked
            text = data.decode("utf-8")
        except FileNotFoundError:
            raise StateNotFoundError(f"no archived arena state: {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateNotFoundError(
                f"cannot read arena state {path}: {one_line(exc, 200, typed=True)}"
            ) from None
        try:
            state = json.loads(text)
        except RecursionError:
            raise too_deep(f"arena state {path}") from None
        except ValueError as exc:
            raise StateNotFoundError(f"arena state {path} is not valid JSON: {exc}") from None
        if not isinstance(state, dict):
            raise StateNotFoundError(
                f"arena state {path} is a JSON {type(state).__name__}, not an object"
            )
        check_state(state, limit, f"arena state {path}")  # depth, NaN; size is known
        return state


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
    """Calls an imported ``(ticker, trade_date) -> mapping``; sync ones run in a worker thread."""

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


_DEMO_AGENTS = (
    ("technical_analyst", "technical"),
    ("fundamental_analyst", "fundamental"),
    ("sentiment_analyst", "sentiment"),
    ("macro_analyst", "macro"),
)


class DemoArena:
    """Deterministic offline states: the same (ticker, date) always gives the same decision."""

    spec = "demo"
    is_demo = True

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]:
        ticker, trade_date = normalize_ticker(ticker), normalize_trade_date(trade_date)
        seed = hashlib.sha256(f"ti-demo|{ticker}|{trade_date}".encode()).digest()
        score = round((seed[0] - 127.5) / 127.5, 3)
        verdict = "BUY" if score > 0.2 else "SELL" if score < -0.2 else "HOLD"
        signals = []
        for index, (agent, domain) in enumerate(_DEMO_AGENTS):
            value = seed[1 + index]
            signal = ("bearish", "neutral", "bullish")[value % 3]
            signals.append(
                {
                    "agent": agent,
                    "domain": domain,
                    "signal": signal,
                    "confidence": round(0.4 + (value / 255) * 0.5, 2),
                    "summary": f"Demo {domain} view ({signal}); not a real analysis.",
                    "key_factors": ["demo data"],
                }
            )
        return {
            "arena_id": f"demo-{ticker.lower()}-{trade_date}-{seed[5:7].hex()}",
            "target": {"ticker": ticker, "date": trade_date},
            "synthesis_verdict": verdict,
            "synthesis_confidence": round(0.5 + (seed[6] / 255) * 0.4, 2),
            "synthesis_score": score,
            "synthesis_reasoning": "DEMO decision from the offline demo arena (TI_ARENA=demo): "
            "deterministic per ticker and date, not investment advice.",
            "agent_signals": signals,
            "source_metrics": [],
            "phase_timings": [{"phase": "demo", "seconds": 0.0}],
            "arena_total_seconds": 0.0,
            "llm_model": "demo",
        }


def load_arena(spec: str | None = None, *, settings: TiSettings | None = None) -> ArenaRunner:
    """The runner for ``spec``, else ``TI_ARENA``, else the demo; raises ``ConfigError``."""
    s = settings or TiSettings()
    text = (s.arena if spec is None else spec or "demo") or "demo"
    text = text.strip()
    limit = s.max_state_bytes
    if text == "demo":
        return DemoArena()
    if text.startswith("replay:"):
        directory = text[len("replay:") :].strip()
        if not directory:
            raise ConfigError("arena spec 'replay:' needs a directory: replay:DIR")
        return ReplayArena(directory, limit)
    kind, _, rest = text.partition(":")
    if kind in ("tradingagents", "hedgefund") and _IMPORT_SPEC_RE.fullmatch(rest):
        from ti_core.arenas.adapters import HedgeFundArena, TradingAgentsArena

        adapter = TradingAgentsArena if kind == "tradingagents" else HedgeFundArena
        return adapter(text, max_state_bytes=limit)
    if _IMPORT_SPEC_RE.fullmatch(text):
        return CallableArena(text, max_state_bytes=limit)
    raise ConfigError(
        f"arena spec {shorten(text)} is not one of 'replay:DIR', 'package.module:function', "
        "'tradingagents:MODULE:OBJECT', 'hedgefund:MODULE:FUNCTION' or 'demo'"
    )


def ensure_demo_allowed(runner: ArenaRunner, settings: TiSettings | None = None) -> None:
    """Refuse a demo runner that would publish to a configured Redis server, unless allowed."""
    s = settings or TiSettings()
    if not runner.is_demo or not s.uses_server or s.allow_demo_publish:
        return
    raise DemoRefusedError(
        f"the demo arena makes fake decisions and will not publish to {s.redis_url_redacted()}: "
        "choose a real arena (setting TI_ARENA), or allow the demo with TI_ALLOW_DEMO_PUBLISH=1"
    )
