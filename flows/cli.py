"""The ``ti`` command: a table from command name to the function that defines it, loaded lazily.

``COMMANDS`` maps each command to ``"module:function"`` and a one-line help. ``ti --help``
lists the table without importing any command module; running a command imports only its
module, whose function (``register(subparsers)``) adds its parsers and sets ``func(args) ->
int`` on each. Adding a command is one line here. ``--debug`` is accepted anywhere on the
command line. Errors print once, here: one ``ti: ...`` line (a traceback only with
``--debug``); Ctrl-C exits 130. Prefect is imported only by commands that run flows, after
:func:`prepare_prefect` has pointed them at an API.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ti_core.settings import TiSettings

__all__ = [
    "COMMANDS",
    "drain_prefect",
    "main",
    "not_prefect",
    "prepare_prefect",
    "quiet_prefect_defaults",
]


class Command(NamedTuple):
    target: str  # "module:function"; the function registers the command's parser(s)
    help: str


COMMANDS: dict[str, Command] = {
    "run": Command("flows.cmd_run:register", "run the arena for one ticker and date and publish"),
    "daily": Command("flows.cmd_run:register", "publish one decision per ticker for a session"),
    "retry": Command("flows.cmd_run:register", "retry a failed run/daily flow run"),
    "get": Command("flows.cmd_run:register", "print the published decision for TICKER DATE"),
    "backfill": Command("flows.cmd_backfill:register", "publish every session of a date range"),
    "status": Command("flows.cmd_backfill:register", "ticker x session grid of a date range"),
    "tail": Command("flows.cmd_consume:register", "print decisions as they are published"),
    "lag": Command("flows.cmd_consume:register", "consumer groups' lag and pending entries"),
    "serve": Command("flows.cmd_ops:register", "serve the three deployments from this process"),
    "emit-arena-completed": Command("flows.cmd_ops:register", "tell Prefect an arena run finished"),
    "verify": Command("flows.cmd_ops:register", "audit Redis: hashes vs stream entries"),
    "store": Command("flows.cmd_store:register", "check, restore or reset the embedded store"),
    "server": Command(
        "flows.cmd_server:register",
        "the shared local Prefect server: start, stop, status (UI address)",
    ),
}

DESCRIPTION = (
    "Publish trading-arena decisions to Redis (stream + lookup hash) with Prefect, and read "
    "them back. Configure with TI_* variables (docs/settings.md); with no TI_REDIS_URL or "
    "TI_REDIS_SENTINELS, decisions go to an embedded store in your data directory. "
    "'ti COMMAND --help' for more."
)


def quiet_prefect_defaults() -> None:
    """Defaults that make a one-shot command exit cleanly; the user's own settings still win.

    These are Prefect's own settings (it reads ``PREFECT_*`` from the environment when it is
    imported), so they go there; ``TI_*`` settings never do (see :mod:`flows.run_settings`).

    Run logs still reach the API at INFO (the UI tells the story); only the terminal is quiet.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def not_prefect(record: logging.LogRecord) -> bool:
    """Log filter: drop Prefect's own records (its services log under bare class names)."""
    where = f"{os.sep}prefect{os.sep}"
    return not (record.name.startswith("prefect") or where in (record.pathname or ""))


def prepare_prefect(debug: bool, settings: TiSettings | None = None) -> Any:
    """Before a command imports Prefect: an API to talk to, and a quiet terminal.

    Without ``PREFECT_API_URL`` this starts (or joins) the shared local server (configured by
    ``settings``, the command's own, else ``TI_*``) and returns ``(LocalServer, Record)``;
    call ``wait_ready`` on the first before the first API call. The ``PREFECT_*`` variables
    set here are Prefect's own configuration (read by Prefect when it is imported), not ours.
    """
    from flows.server import use_local_server
    from ti_core.settings import TiSettings

    if not debug:  # the run's logs reach the API (the UI), not this terminal
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "CRITICAL")
        # Prefect's services (EventsWorker...) log every item they fail to send here: with
        # the API gone, one block per event, until flows.api_watch says it is lost.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL", "CRITICAL")
        logging.getLogger("prefect").propagate = False
        logging.getLogger("prefect").addHandler(logging.NullHandler())  # not logging.lastResort
        logging.raiseExceptions = False  # its API log worker writes its failures to stderr
    return use_local_server(settings or TiSettings(), say=lambda line: print(line, file=sys.stderr))


def wait_for_prefect(local: Any) -> None:
    """Wait for the local server :func:`prepare_prefect` started (no-op if none)."""
    if local is not None:
        server, record = local
        server.wait_ready(record)


def drain_prefect() -> None:
    """Send Prefect's queued events and logs now, while its API is still up."""
    if "prefect" not in sys.modules:
        return
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        EventsWorker.drain_all(timeout=5)
        APILogWorker.drain_all(timeout=5)
    except Exception:  # best effort: the run itself is over and recorded
        pass


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``--debug`` anywhere before ``--``: removed, and reported."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != "--debug"]
    return head + argv[end:], len(head) < end


def _command_name(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ti", description=DESCRIPTION)
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logs (anywhere on the line)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if chosen in COMMANDS:
        module, function = COMMANDS[chosen].target.split(":")
        getattr(importlib.import_module(module), function)(subparsers)
        subparsers.choices[chosen].add_argument(
            "--debug", action="store_true", help="show tracebacks and debug logs"
        )
    for name, command in COMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=command.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ti`` console script; returns the process exit code."""
    args_list, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    quiet_prefect_defaults()
    args = _parser(_command_name(args_list)).parse_args(args_list)
    args.debug = debug or bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:  # Prefect's records go to its API and UI, not to this terminal
        for handler in logging.getLogger().handlers:
            handler.addFilter(not_prefect)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("ti: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"ti: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        drain_prefect()
    return code


def _one_line(exc: BaseException) -> str:
    from ti_core.errors import TiError, one_line

    if isinstance(exc, OSError) and not isinstance(exc, TiError) and exc.strerror:
        # a file or disk failure no layer below mapped: "No space left on device: /path"
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return one_line(exc, None) + _command_hint(exc)


def _command_hint(exc: BaseException) -> str:
    """What the command line offers for an error the core words in its own terms (its
    settings, never our flags): the first hint along ``exc``'s causes, or ''."""
    from ti_core.errors import (
        ArenaTimeoutError,
        DemoRefusedError,
        NoVerdictError,
        StoreDamagedError,
    )

    hints: dict[type[BaseException], str] = {
        ArenaTimeoutError: " (on the command line: --arena-timeout SECONDS)",
        DemoRefusedError: " (on the command line: --arena SPEC, or --allow-demo)",
        NoVerdictError: " (on the command line: --publish-degraded)",
        StoreDamagedError: ". Run `ti store check`, then `ti store restore` (the previous good "
        "copy) or `ti store reset --yes` (move it aside and start empty)",
    }
    seen: BaseException | None = exc
    while seen is not None:
        for kind, hint in hints.items():
            if isinstance(seen, kind):
                return hint
        seen = seen.__cause__
    return ""


if __name__ == "__main__":
    sys.exit(main())
