"""docs/core.md's table of packages against the code: the layers it shows are the layering
contract of pyproject.toml ([tool.importlinter], which lint-imports enforces), and it has one
row for each package and module of ti_core (private ones aside), no more."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "core.md"
ROW = re.compile(r"^\| (\d+) \| `(ti_core\.[a-z_]+)` \|", re.MULTILINE)


def documented_layers() -> list[set[str]]:
    """The table's packages, grouped by layer number, in layer order."""
    layers: dict[int, set[str]] = {}
    for number, package in ROW.findall(DOC.read_text()):
        layers.setdefault(int(number), set()).add(package)
    return [layers[n] for n in sorted(layers)]


def contract_layers() -> list[set[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    # The core's layers; the other layers contract is inside one package (``containers``).
    [layered] = [c for c in config["contracts"] if c["type"] == "layers" and "containers" not in c]
    return [{name.strip() for name in re.split(r"[|:]", layer)} for layer in layered["layers"]]


def test_the_table_shows_the_layering_contract() -> None:
    assert documented_layers() == contract_layers(), (
        "docs/core.md's package table differs from [tool.importlinter] in pyproject.toml"
    )


def test_one_row_per_package_and_module() -> None:
    here = ROOT / "ti_core"
    real = {
        f"ti_core.{p.stem}"
        for p in here.iterdir()
        if not p.name.startswith("_")
        and ((p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py")
    }
    rows = [package for _, package in ROW.findall(DOC.read_text())]
    assert len(rows) == len(set(rows)), rows
    assert set(rows) == real, (
        f"docs/core.md: no row for {sorted(real - set(rows))}, "
        f"rows for what is not there {sorted(set(rows) - real)}"
    )


def test_the_reader_sees_every_row() -> None:
    assert sum(len(layer) for layer in documented_layers()) == len(ROW.findall(DOC.read_text()))
    assert ROW.findall("| 3 | `ti_core.failures` | records |\n") == [("3", "ti_core.failures")]
