"""Arena specs (setting ``TI_ARENA``, flag ``--arena``) -> runners: each spec form, the factory
of its runner, one module per runner.

=================================  ========================================================
spec                               runner
=================================  ========================================================
``replay:DIR``                     :class:`~ti_core.arenas.replay.ReplayArena`
``package.module:function``        :class:`~ti_core.arenas.runner.CallableArena`
``tradingagents:MODULE:OBJECT``    :class:`~ti_core.arenas.tradingagents.TradingAgentsArena`
``hedgefund:MODULE:FUNCTION``      :class:`~ti_core.arenas.hedgefund.HedgeFundArena`
``demo``                           :class:`~ti_core.arenas.demo.DemoArena`
=================================  ========================================================

``demo`` is the default only when no arena is configured. Adding a framework takes its module
(its adapter and its mapping, on :mod:`ti_core.arenas.framework`), one line in :data:`FORMS`,
and its name in pyproject's import contract that keeps the runner modules independent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ti_core.arenas.demo import DemoArena
from ti_core.arenas.hedgefund import HedgeFundArena
from ti_core.arenas.replay import ReplayArena
from ti_core.arenas.runner import ArenaRunner, CallableArena
from ti_core.arenas.tradingagents import TradingAgentsArena
from ti_core.contract.keys import shorten
from ti_core.errors import ConfigError
from ti_core.settings import TiSettings

__all__ = ["FORMS", "IMPORT_SPEC", "SpecForm", "load_arena"]

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
