"""``ti server start|stop|status``: the local Prefect server that ``ti`` commands share.

Commands that run flows start it themselves when ``PREFECT_API_URL`` is not set; these
subcommands start it ahead of time, stop it now instead of after the idle timeout, or say
where its UI is. No Prefect import here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flows.server import LocalServer, Record, configured_api_url
from ti_core.settings import TiSettings

__all__ = ["EXIT_NOT_RUNNING", "register"]

EXIT_NOT_RUNNING = 3  # as LSB init scripts' "status" says "not running"


def _server() -> LocalServer:
    s = TiSettings()
    return LocalServer(
        s.data_dir, idle_timeout=s.server_idle_timeout, start_timeout=s.server_start_timeout
    )


def _describe(record: Record, server: LocalServer) -> str:
    idle = (
        "until 'ti server stop'"
        if record.idle_timeout <= 0
        else f"stops after {record.idle_timeout:g} s idle"
    )
    return (
        f"UI {record.ui_url}  API {record.url}  (pid {record.pid}, {idle}, "
        f"database {server.database}, log {server.log_file}; UI login: the line in "
        f"{server.auth_file})"
    )


def _note_configured() -> None:
    url = configured_api_url()
    if url:
        print(
            f"ti: note: PREFECT_API_URL is set ({url}): ti commands use that server, not this one",
            file=sys.stderr,
        )


def _start(args: argparse.Namespace) -> int:
    server = _server()
    record, started = server.acquire()  # leased while it starts: not idle yet
    if started:
        print(
            f"ti: starting the local Prefect server (up to {server.start_timeout:g} s)",
            file=sys.stderr,
        )
    try:
        server.wait_ready(record)
    finally:
        server.release()  # from now on, the idle countdown runs
    print(f"running: {_describe(record, server)}")
    _note_configured()
    return 0


def _stop(args: argparse.Namespace) -> int:
    server = _server()
    record = server.stop(force=args.force)
    print("stopped" if record is not None else "not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    server = _server()
    record, healthy = server.status()
    _note_configured()
    if record is None:
        print("not running (ti run, ti daily, ti backfill or 'ti server start' starts it)")
        return EXIT_NOT_RUNNING
    state = "running" if healthy else "starting (not answering yet)"
    print(f"{state}: {_describe(record, server)}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``server`` with its ``start``, ``stop`` and ``status`` actions."""
    parser = subparsers.add_parser(
        "server",
        help="the shared local Prefect server: start, stop, status (UI address)",
        description="With no PREFECT_API_URL, ti commands that run flows share one local "
        "Prefect server (SQLite in TI_DATA_DIR/prefect, 127.0.0.1, a free port), started by "
        "the first that needs it and stopped after TI_SERVER_IDLE_TIMEOUT seconds idle.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("start", help="start it now (or say where it runs)").set_defaults(
        func=_start
    )
    stop = actions.add_parser(
        "stop",
        help="stop it now (refused while a ti command uses it)",
        description="Stop the local Prefect server now. Refused, with the commands named, while "
        "a ti command (run, daily, backfill, serve...) holds a lease on it.",
    )
    stop.add_argument(
        "--force",
        action="store_true",
        help="stop it even under running ti commands (their runs fail; check with ti get)",
    )
    stop.set_defaults(func=_stop)
    actions.add_parser(
        "status", help="say whether it runs and print its UI address (exit 3 if not running)"
    ).set_defaults(func=_status)
