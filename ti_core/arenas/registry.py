"""Arena specs (setting ``TI_ARENA``, flag ``--arena``) -> runners: each spec form, the factory
of its runner, one module per runner.

=================================  ========================================================
spec                               runner
=================================  ========================================================
``replay:DIR``                     :class:`~ti_core.arenas.replay.ReplayArena`
``package.module:function``        :class:`~ti_core.arenas.runner.CallableArena`
``tradingagents:MODULE:OBJECT``    :class:`~ti_core.arenas.tradingagents.TradingAgentsArena`
``hedgefund:MODULE:FUNCTION``      :class:`~ti_core.arenas.hedgefund.HedgeFundArena` (v1)
``hedgefund2:MODULE:FUNCTION``     :class:`~ti_core.arenas.hedgefund2.HedgeFund2Arena` (2.x)
``demo``                           :class:`~ti_core.arenas.demo.DemoArena`
=================================  ========================================================

``demo`` is the default only when no arena is configured. Adding a framework takes its module
(its adapter and its mapping, on :mod:`ti_core.arenas.framework`), one line in :data:`FORMS`,
and its name in pyproject's import contract that keeps the runner modules independent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from ti_core.arenas.demo import DemoArena
from ti_core.arenas.hedgefund import HedgeFundArena
from ti_core.arenas.hedgefund2 import HedgeFund2Arena
from ti_core.arenas.replay import ReplayArena
from ti_core.arenas.runner import ArenaRunner, CallableArena
from ti_core.arenas.tradingagents import TradingAgentsArena
from ti_core.contract.keys import shorten
from ti_core.errors import ConfigError
from ti_core.settings import TiSettings

__all__ = ["FORMS", "IMPORT_SPEC", "SpecForm", "arena_allowed", "load_arena"]

IMPORT_SPEC = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
    r"(\.[A-Za-z_][A-Za-z0-9_]*)*"
)
"""``package.module:attr.path`` (matched whole)."""


@dataclass(frozen=True)
class SpecForm:
    """A spec is of this form when it starts with ``prefix`` and ``rest`` matches all the rest."""

    shape: str  # how the spec reads, as the error for a spec of no form lists it
    prefix: str
    rest: re.Pattern[str]
    make: Callable[[str, str, int], ArenaRunner]  # (spec, the rest, TI_MAX_STATE_BYTES)


# Tried in this order, the first form that matches wins: ``replay:`` before the import spec,
# which ``replay:name`` matches too. (No other two overlap: a framework's spec has two colons,
# an import spec one, ``demo`` none.)
FORMS: tuple[SpecForm, ...] = (
    SpecForm("replay:DIR", "replay:", re.compile(".*", re.DOTALL), ReplayArena.from_spec),
    SpecForm("package.module:function", "", IMPORT_SPEC, CallableArena.from_spec),
    SpecForm(
        "tradingagents:MODULE:OBJECT",
        "tradingagents:",
        IMPORT_SPEC,
        TradingAgentsArena.from_spec,
    ),
    SpecForm("hedgefund:MODULE:FUNCTION", "hedgefund:", IMPORT_SPEC, HedgeFundArena.from_spec),
    SpecForm("hedgefund2:MODULE:FUNCTION", "hedgefund2:", IMPORT_SPEC, HedgeFund2Arena.from_spec),
    SpecForm("demo", "demo", re.compile(""), DemoArena.from_spec),
)


def load_arena(spec: str | None = None, *, settings: TiSettings | None = None) -> ArenaRunner:
    """The runner for ``spec``, else ``TI_ARENA``, else the demo; raises ``ConfigError``."""
    s = settings or TiSettings()
    text = (s.arena if spec is None else spec or "demo") or "demo"
    text = text.strip()
    for form in FORMS:
        rest = text[len(form.prefix) :]
        if text.startswith(form.prefix) and form.rest.fullmatch(rest):
            return form.make(text, rest, s.max_state_bytes)
    shapes = [f"'{form.shape}'" for form in FORMS]
    raise ConfigError(
        f"arena spec {shorten(text)} is not one of {', '.join(shapes[:-1])} or {shapes[-1]}"
    )


def _replay_dir(spec: str) -> str | None:
    """The resolved directory of a ``replay:DIR`` spec (symlinks followed), else None."""
    if not spec.startswith("replay:"):
        return None
    return os.path.realpath(spec.removeprefix("replay:").strip() or ".")


def arena_allowed(spec: str | None, settings: TiSettings) -> bool:
    """Whether a run whose parameters come from others (a deployment's) may use ``spec``.

    Allowed: none (``TI_ARENA`` then decides), ``TI_ARENA`` itself, an entry of
    ``TI_ARENA_ALLOWED``, or ``replay:`` of a directory at or under an allowed ``replay:DIR``
    (both resolved, so ``..`` and symlinks cannot leave it). Nothing is imported to decide.
    """
    if spec is None:
        return True
    text = spec.strip()
    entries = [e.strip() for e in (settings.arena_allowed or "").split(",") if e.strip()]
    if settings.arena:
        entries.append(settings.arena.strip())
    if text in entries:
        return True
    wanted = _replay_dir(text)
    if wanted is None:
        return False
    for entry in entries:
        root = _replay_dir(entry)
        if root is not None and (wanted == root or wanted.startswith(root.rstrip(os.sep) + os.sep)):
            return True
    return False
