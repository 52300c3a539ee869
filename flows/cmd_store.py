"""``ti store check|restore|reset``: inspect and recover the embedded store's file.

A store file that does not load is never overwritten by other commands; these are the only
ways to replace it, each on explicit request: ``restore`` puts the previous good copy
(``store.dat.prev``, kept by every save) back, ``reset --yes`` starts empty. Both first move
the current file aside as ``store.dat.damaged-<UTC time>`` (never deleted). No Prefect here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ti_core.errors import ConfigError, StoreError
from ti_core.settings import TiSettings
from ti_core.store.embedded import embedded_store_path, store_lock
from ti_core.store.file import PREVIOUS_SUFFIX, move_aside, restore_previous
from ti_core.store.load import StoreSummary, inspect_store

__all__ = ["register"]

_DESCRIPTION = """\
The embedded store (no TI_REDIS_URL or TI_REDIS_SENTINELS) lives in TI_DATA_DIR/store.dat.
Every save writes a new file sealed with a checksum and renames it over the old one, which
is kept as store.dat.prev. A store.dat that does not load is left untouched and every
command refuses to use it; then:

  ti store check          does store.dat load? its size, keys, decisions, stream entries,
                          and the same for store.dat.prev (exit 1 if store.dat is damaged)
  ti store restore        move store.dat aside, put a copy of store.dat.prev in its place
                          (loses only what the last save added); --force if store.dat loads
  ti store reset --yes    move store.dat aside and start with an empty store

Moved-aside files are named store.dat.damaged-<UTC time> (-2, -3, ... within one second)
and never deleted or overwritten by ti. A symlinked store.dat is followed: its target is
replaced and the link kept."""


def register(subparsers: Any) -> None:
    """Add ``store`` with its ``check``, ``restore`` and ``reset`` subcommands."""
    p = subparsers.add_parser(
        "store",
        help="check, restore or reset the embedded store's file",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="does the store load? sizes and counts",
        description="Load store.dat and store.dat.prev privately (never "
        "writing them) and report. Exit 1 if store.dat is damaged.",
    )
    check.set_defaults(func=_check)
    restore = actions.add_parser(
        "restore",
        help="replace store.dat by its previous good copy (store.dat.prev)",
        description="Move store.dat aside (store.dat.damaged-<time>) and copy store.dat.prev "
        "in its place. Refused if store.dat loads, unless --force.",
    )
    restore.add_argument(
        "--force",
        action="store_true",
        help="restore even though store.dat loads (drops its last save)",
    )
    restore.set_defaults(func=_restore)
    reset = actions.add_parser(
        "reset",
        help="move store.dat aside and start empty (needs --yes)",
        description="Move store.dat aside (store.dat.damaged-<time>, kept) so the next "
        "command starts with an empty store. store.dat.prev is kept too.",
    )
    reset.add_argument("--yes", action="store_true", help="really start with an empty store")
    reset.set_defaults(func=_reset)


def _line(label: str, s: StoreSummary) -> str:
    if not s.exists:
        return f"{label} {s.path}: absent"
    form = "checksummed" if s.sealed else "no checksum (written by an older ti)"
    if s.problem:
        return f"{label} {s.path}: DAMAGED, {s.problem} ({s.size} bytes, {form})"
    return (
        f"{label} {s.path}: loads, {s.size} bytes ({form}), {s.keys} keys, "
        f"{s.decisions} decisions, {s.entries} stream entries"
    )


def _summaries(settings: TiSettings) -> tuple[StoreSummary, StoreSummary]:
    path = embedded_store_path(settings)
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)

    async def both() -> tuple[StoreSummary, StoreSummary]:
        return (
            await inspect_store(path, settings.stream_name),
            await inspect_store(previous, settings.stream_name),
        )

    return asyncio.run(both())


def _embedded_only(settings: TiSettings) -> None:
    if settings.uses_server:
        variable = "TI_REDIS_URL" if settings.redis_url is not None else "TI_REDIS_SENTINELS"
        raise ConfigError(
            f"ti store works on the embedded store; {variable} is set "
            f"({settings.redis_url_redacted()}): unset it to use these commands"
        )


def _check(args: argparse.Namespace) -> int:
    settings = TiSettings()
    _embedded_only(settings)
    current, previous = _summaries(settings)
    print(_line("store", current))
    print(_line("previous copy", previous))
    if current.problem:
        hint = (
            "`ti store restore` (previous copy) or "
            if previous.exists and not previous.problem
            else ""
        )
        print(
            f"ti: {current.path} is damaged ({current.problem}); recover with {hint}"
            "`ti store reset --yes` (start empty)",
            file=sys.stderr,
        )
        return 1
    return 0


def _restore(args: argparse.Namespace) -> int:
    settings = TiSettings()
    _embedded_only(settings)
    with store_lock(settings) as path:
        current, previous = _summaries(settings)
        if not previous.exists or previous.problem:
            raise StoreError(
                f"no usable previous copy: {_line('previous copy', previous)}; "
                "`ti store reset --yes` starts empty"
            )
        if current.exists and not current.problem and not args.force:
            raise StoreError(
                f"{path} loads ({current.decisions} decisions); restoring would "
                "drop its last save: add --force to do it anyway"
            )
        aside = restore_previous(path)
    kept = f"; the damaged file is kept as {aside}" if aside else ""
    print(f"restored {path} from {previous.path} ({previous.decisions} decisions){kept}")
    return 0


def _reset(args: argparse.Namespace) -> int:
    settings = TiSettings()
    _embedded_only(settings)
    if not args.yes:
        raise StoreError(
            "ti store reset starts with an EMPTY store: add --yes (the current "
            "file is moved aside, not deleted)"
        )
    with store_lock(settings) as path:
        aside = move_aside(path)
    if aside is None:
        print(f"nothing to reset: {path} does not exist")
    else:
        print(f"moved {path} aside to {aside}; the next command starts with an empty store")
    return 0
