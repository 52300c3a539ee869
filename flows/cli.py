"""The ``ti`` command: one argparse front door; each group of subcommands lives in its own module.

A command module exposes ``register(subparsers)`` and gives each parser a ``func(args) -> int``.
Errors of this package print one line (no traceback unless ``--debug``); Ctrl-C exits quietly.
Prefect is imported only by the commands that run flows, after its noisy defaults are quieted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["drain_prefect", "main", "not_prefect", "quiet_prefect_defaults"]

COMMAND_MODULES = (
    "flows.cmd_run",  # run, daily, get
    "flows.cmd_backfill",  # backfill, status
    "flows.cmd_consume",  # tail, lag
    "flows.cmd_ops",  # serve, emit, verify
    "flows.cmd_store",  # store check, restore, reset
)


def quiet_prefect_defaults() -> None:
    """Defaults that make a one-shot command exit cleanly; the user's own settings still win."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def not_prefect(record: logging.LogRecord) -> bool:
    """Log filter: drop Prefect's own records (its services log under bare class names)."""
    where = f"{os.sep}prefect{os.sep}"
    return not (record.name.startswith("prefect") or where in (record.pathname or ""))


def drain_prefect() -> None:
    """Send Prefect's queued events and logs now, while its API is still up.

    Left to Prefect's exit hooks, they race the ephemeral server's shutdown and print
    "Still processing items" or CancelledError noise after the command's own output.
    """
    if "prefect" not in sys.modules:
        return
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        EventsWorker.drain_all(timeout=5)
        APILogWorker.drain_all(timeout=5)
    except Exception:  # best effort: the run itself is over and recorded
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ti",
        description="Publish trading-arena decisions to Redis (stream + lookup hash) with Prefect, "
        "and read them back. Configure with TI_* variables (see the README); with no "
        "TI_REDIS_URL, decisions go to an embedded store in your data directory.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ti`` console script; returns the process exit code."""
    quiet_prefect_defaults()
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:  # Prefect's records go to its API and UI, not to this terminal
        for handler in logging.getLogger().handlers:
            handler.addFilter(not_prefect)
    from ti_core.errors import TiError

    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("ti: interrupted", file=sys.stderr)
        return 130
    except TiError as exc:
        if args.debug:
            raise
        print(f"ti: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # last resort: a file or disk failure no layer below mapped
        if args.debug:
            raise
        print(f"ti: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    finally:
        drain_prefect()
    return code


if __name__ == "__main__":
    sys.exit(main())
