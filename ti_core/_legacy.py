"""Module paths that older versions persisted, resolved to where their code lives now.

Prefect keeps task results as pickles, and a pickle names each function it needs by module
path: an envelope's text made by build-envelope before ``ti_core`` had subpackages names
``ti_core.wire._restored``. So that ``ti retry`` of such a run (and any cached result) still
loads, importing an old path here gives the module at its new home. Only persisted paths are
listed: code imports every name from its one home.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

PERSISTED = {"ti_core.wire": "ti_core.contract.wire"}


class _Alias:
    """Loads an old path as the module at its home (no ``importlib.abc``: it costs 14 ms)."""

    def __init__(self, home: str) -> None:
        self.home = home

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return importlib.import_module(self.home)

    def exec_module(self, module: ModuleType) -> None:
        """The module at its home is already executed."""


class _OldPaths:
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        home = PERSISTED.get(fullname)
        if home is None:
            return None
        return ModuleSpec(fullname, cast("Loader", _Alias(home)))


def install() -> None:
    """Resolve the persisted old paths (once per process)."""
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(_OldPaths())
