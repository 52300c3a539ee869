"""What the README and docs/ point at exists: module paths, repository files and links.

Modules move (ti_core was regrouped into subpackages, and will move again): a page naming
``ti_core.models`` or ``ti_core/builder.py`` after the move misleads its reader. So every
``ti_core.…`` / ``flows.…`` name must import (a module, or an attribute of one; a name written
as "the `NAME` logger" must be a logger the package creates: some kept their names from before
the move, so that logging configuration keeps working), every path
under a folder of this repository must exist, and every link to a page of docs/ (and its
``#heading``) must resolve, GitHub's way.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from pathlib import Path

import ti_core

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOTTED = re.compile(r"(?<![\w./-])((?:ti_core|flows)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(`? logger)?")
PATH = re.compile(r"(?<![\w./-])((?:ti_core|flows|tests|bench|examples|docs|\.ci)/[\w./-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without its fenced blocks (a ``# comment`` in one is not a heading)."""
    return re.sub(r"^[ \t]*```.*?^[ \t]*```", "", text, flags=re.M | re.S)


def resolves(dotted: str) -> bool:
    """``dotted`` is a module, or an attribute chain under the longest importable prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(value, name):
                return False
            value = getattr(value, name)
        return True
    return False


def package_loggers() -> set[str]:
    """The loggers ti_core creates, once every module of it is imported."""
    for module in pkgutil.walk_packages(ti_core.__path__, "ti_core."):
        importlib.import_module(module.name)
    return set(logging.Logger.manager.loggerDict)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(page.read_text()), flags=re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def test_every_module_name_imports() -> None:
    named = {(page, *found) for page in PAGES for found in DOTTED.findall(page.read_text())}
    stale = sorted(
        f"{page.relative_to(ROOT)}: {name}"
        for page, name, logger in named
        if not logger and not resolves(name)
    )
    assert not stale, f"names that no longer import: {stale}"
    loggers = package_loggers()
    unknown = sorted(
        f"{page.relative_to(ROOT)}: {name}"
        for page, name, logger in named
        if logger and name not in loggers
    )
    assert not unknown, f"loggers the package does not create: {unknown}"


def test_every_repository_path_exists() -> None:
    missing = sorted(
        f"{page.relative_to(ROOT)}: {path}"
        for page in PAGES
        for path in {p.rstrip(".,:;") for p in PATH.findall(page.read_text())}
        if "*" not in path and "{" not in path and not (ROOT / path).exists()
    )
    assert not missing, f"paths that do not exist: {missing}"


def test_every_local_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(_prose(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, f"broken links: {broken}"


def test_the_checks_can_fail() -> None:
    assert resolves("ti_core.contract.keys.decision_hash_key")
    assert resolves("ti_core.transport")
    assert not resolves("ti_core.models")  # the flat module before the regrouping
    assert not resolves("ti_core.contract.keys.no_such_name")
    assert slug("Coverage: `ti status`") == "coverage-ti-status"
    assert slug("2. One machine, always on: `ti serve`") == "2-one-machine-always-on-ti-serve"
    assert DOTTED.findall("see `ti_core.consume.groups.` and flows.cli") == [
        ("ti_core.consume.groups", ""),
        ("flows.cli", ""),
    ]
    assert DOTTED.findall("on the `ti_core.decoder` logger") == [("ti_core.decoder", "` logger")]
    assert "ti_core.decoder" in package_loggers()
    assert "ti_core.contract.decoder" not in package_loggers()
