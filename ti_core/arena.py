"""Arena runners: (ticker, trade date) -> the arena's post-run state dict, chosen by a spec.

Specs (setting ``TI_ARENA``, flag ``--arena``):

- ``replay:DIR``: the archived state ``DIR/{TICKER}/{YYYY-MM-DD}.json`` of an earlier run.
- ``package.module:function`` (or ``package.module:object.method``): a sync or async callable
  ``(ticker, trade_date) -> mapping``; how a real arena plugs in.
- ``demo``: a deterministic, offline stand-in; its arena id starts ``demo-`` and its
  envelopes carry ``meta.demo = true`` (:data:`DEMO_META`). It is the default only when no
  arena is configured, and :func:`ensure_demo_allowed` keeps it off a configured Redis server.

A runner raises :class:`ArenaTransientError` for failures worth retrying (built-in
``TimeoutError`` and ``ConnectionError`` from a callable are mapped to it), any other
:class:`ArenaError` for failures that are not.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ti_core.errors import (
    ArenaError,
    ArenaTransientError,
    ConfigError,
    DemoRefusedError,
    StateNotFoundError,
)
from ti_core.keys import normalize_ticker, normalize_trade_date, shorten
from ti_core.settings import TiSettings

__all__ = [
    "DEMO_META",
    "ArenaRunner",
    "CallableArena",
    "DemoArena",
    "ReplayArena",
    "ensure_demo_allowed",
    "load_arena",
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

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        self.spec = f"replay:{directory}"

    def path_for(self, ticker: str, trade_date: str) -> Path:
        """The state file of a pair; raises ``InvalidStateError`` for a bad ticker or date."""
        day = normalize_trade_date(trade_date)
        return self.directory / normalize_ticker(ticker) / f"{day}.json"

    async def run(self, ticker: str, trade_date: str) -> dict[str, Any]:
        path = self.path_for(ticker, trade_date)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StateNotFoundError(f"no archived arena state: {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateNotFoundError(
                f"cannot read arena state {path}: {type(exc).__name__}: {_brief(exc)}"
            ) from None
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise StateNotFoundError(f"arena state {path} is not valid JSON: {exc}") from None
        if not isinstance(state, dict):
            raise StateNotFoundError(
                f"arena state {path} is a JSON {type(state).__name__}, not an object"
            )
        return state


def _brief(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve(spec: str) -> Callable[..., Any]:
    module_name, _, attr_path = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"arena {spec!r}: cannot import {module_name}: {exc}") from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"arena {spec!r}: {module_name} has no {attr_path}") from None
    if not callable(target):
        raise ConfigError(f"arena {spec!r}: {attr_path} is not callable")
    return target  # type: ignore[no-any-return]


class CallableArena:
    """Calls an imported ``(ticker, trade_date) -> mapping``; sync ones run in a worker thread."""

    is_demo = False

    def __init__(self, spec: str, function: Callable[..., Any] | None = None) -> None:
        self.spec = spec
        self.function = function if function is not None else _resolve(spec)

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
            state = await self._call(ticker, trade_date)
        except ArenaError:
            raise
        except (TimeoutError, ConnectionError) as exc:
            raise ArenaTransientError(
                f"arena {self.spec} {ticker} {trade_date}: {type(exc).__name__}: "
                f"{_brief(exc)}"
            ) from exc
        except Exception as exc:
            raise ArenaError(
                f"arena {self.spec} failed for {ticker} {trade_date}: {type(exc).__name__}: "
                f"{_brief(exc)}"
            ) from exc
        if not isinstance(state, Mapping):
            raise ArenaError(
                f"arena {self.spec} returned {type(state).__name__} for {ticker} {trade_date}, "
                "not a state mapping"
            )
        return dict(state)


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
            signals.append({
                "agent": agent,
                "domain": domain,
                "signal": signal,
                "confidence": round(0.4 + (value / 255) * 0.5, 2),
                "summary": f"Demo {domain} view ({signal}); not a real analysis.",
                "key_factors": ["demo data"],
            })
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
    if spec is None:
        spec = (settings or TiSettings()).arena
    text = (spec or "demo").strip()
    if text == "demo":
        return DemoArena()
    if text.startswith("replay:"):
        directory = text[len("replay:"):].strip()
        if not directory:
            raise ConfigError("arena spec 'replay:' needs a directory: replay:DIR")
        return ReplayArena(directory)
    if _IMPORT_SPEC_RE.fullmatch(text):
        return CallableArena(text)
    raise ConfigError(
        f"arena spec {shorten(text)} is not one of 'replay:DIR', 'package.module:function' "
        "or 'demo'"
    )


def ensure_demo_allowed(runner: ArenaRunner, settings: TiSettings | None = None) -> None:
    """Refuse a demo runner that would publish to a configured Redis server, unless allowed."""
    s = settings or TiSettings()
    if not runner.is_demo or not s.uses_server or s.allow_demo_publish:
        return
    raise DemoRefusedError(
        f"the demo arena makes fake decisions and will not publish to {s.redis_url_redacted()}: "
        "choose a real arena (--arena SPEC or TI_ARENA), or allow the demo with "
        "TI_ALLOW_DEMO_PUBLISH=1 (ti run --allow-demo)"
    )
