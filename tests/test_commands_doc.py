"""docs/commands.md against the real ``ti`` parser.

Every command the parser takes (``ti store check`` and ``ti server start`` count as commands of
their own) has one row in the table, and no row names a command the parser does not take; each
row names exactly the options its command accepts (``--help`` and ``--debug``, which every
command has, aside). Adding a command or an option without documenting it fails here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from flows.cli import COMMANDS, _parser

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "commands.md"
EVERY_COMMAND_HAS = {"-h", "--help", "--debug"}
ROW = re.compile(r"^\| `ti ([^`]+)` \|", re.MULTILINE)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def real_commands() -> dict[str, set[str]]:
    """Each command of the real parser (nested ones as ``"store check"``) -> its options."""
    found: dict[str, set[str]] = {}
    for name in COMMANDS:
        # The parser registers a command's real arguments only when it is the one chosen.
        command = _subcommands(_parser(name))[name]
        nested = {f"{name} {action}": p for action, p in _subcommands(command).items()}
        for path, parser in (nested or {name: command}).items():
            found[path] = {
                option
                for action in parser._actions
                if not isinstance(action, argparse._SubParsersAction)
                for option in action.option_strings
            } - EVERY_COMMAND_HAS
    return found


def documented_commands(text: str) -> dict[str, set[str]]:
    """Each row of the table: the command (its leading lower-case words) -> the options named."""
    found: dict[str, set[str]] = {}
    for synopsis in ROW.findall(text):
        words = synopsis.split()
        path = []
        for word in words:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            path.append(word)
        command = " ".join(path)
        assert command not in found, f"docs/commands.md: two rows for `ti {command}`"
        found[command] = set(re.findall(r"--[a-z][a-z-]*", synopsis))
    return found


def test_every_command_and_nothing_else() -> None:
    real = real_commands()
    documented = documented_commands(DOC.read_text())
    missing = sorted(set(real) - set(documented))
    extra = sorted(set(documented) - set(real))
    assert not missing, f"docs/commands.md lacks a row for: {missing}"
    assert not extra, f"docs/commands.md has rows for commands ti does not take: {extra}"


def test_each_row_names_its_commands_options() -> None:
    documented = documented_commands(DOC.read_text())
    wrong = [
        f"`ti {command}`: documented but not taken {sorted(documented[command] - real)}, "
        f"taken but not documented {sorted(real - documented[command])}"
        for command, real in real_commands().items()
        if command in documented and documented[command] != real
    ]
    assert not wrong, "docs/commands.md: " + "; ".join(wrong)


def test_the_reader_sees_rows_and_options() -> None:
    text = "| `ti store reset --yes` | x |\n| `ti get TICKER DATE [--json]` | y |\n"
    assert documented_commands(text) == {"store reset": {"--yes"}, "get": {"--json"}}
    assert "store check" in real_commands() and "run" in real_commands()
