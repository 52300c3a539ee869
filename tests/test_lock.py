"""Pinned builds: constraints.txt pins what CI tests, and pyproject's ranges start there.

A fresh clone installs with ``pip install -c constraints.txt`` (``.ci/run``, the README), so
today's and next month's package index give the same builds. The project's own ranges stay
ranges, but each starts at the minor version the lock pins: the low end is what is tested.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        found[canonicalize_name(name)] = Version(version)
    return found


def declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [Requirement(line) for line in lines]


PINS = pins()


def minor(version: Version) -> tuple[int, int]:
    return (version.major, version.minor)


def test_the_lock_pins_every_distribution_exactly_once() -> None:
    names = [
        canonicalize_name(line.partition("==")[0])
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(names) == len(set(names)), "a distribution is pinned twice"
    assert len(PINS) > 50, "the lock pins the whole resolve, not only the direct requirements"


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_each_range_admits_its_pin_and_starts_at_its_minor(requirement: Requirement) -> None:
    name = canonicalize_name(requirement.name)
    assert name in PINS, f"{requirement.name} is declared but not pinned: run bash .ci/lock"
    pinned = PINS[name]
    assert requirement.specifier.contains(pinned), f"{requirement} refuses its pin {pinned}"
    lows = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    assert lows, f"{requirement} has no lower bound"
    assert minor(lows[0]) == minor(pinned), (
        f"{requirement} claims {lows[0]} but CI tests {pinned}: narrow the range to what is tested"
    )


def test_the_build_backend_is_pinned_and_locked_with_its_dependencies() -> None:
    for line in PYPROJECT["build-system"]["requires"]:
        backend = Requirement(line)
        specifiers = list(backend.specifier)
        assert [s.operator for s in specifiers] == ["=="], f"{line}: pin the build backend"
        pinned = PINS.get(canonicalize_name(backend.name))
        assert pinned == Version(specifiers[0].version), f"{line}: lock it too (bash .ci/lock)"
    # hatchling's own requirements, so that CI's --build-constraint pins the whole build.
    for name in ("packaging", "pathspec", "pluggy", "trove-classifiers"):
        assert name in PINS, f"the build backend's {name} is not pinned: run bash .ci/lock"


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_the_suite_runs_on_the_locked_versions(requirement: Requirement) -> None:
    try:
        installed = Version(metadata.version(requirement.name))
    except metadata.PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed (an extra this environment lacks)")
    pinned = PINS[canonicalize_name(requirement.name)]
    assert installed == pinned, (
        f"{requirement.name} {installed} is installed, the lock pins {pinned}: "
        'pip install -c constraints.txt -e ".[test]"'
    )


def test_ci_installs_pip_and_the_project_from_the_lock() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^python -m pip install -q -c constraints\.txt pip$", ci, re.M)
    install = (
        r'^pip install -c constraints\.txt --build-constraint constraints\.txt -e "\.\[test\]"$'
    )
    assert re.search(install, ci, re.M)
    assert "pip" in PINS
