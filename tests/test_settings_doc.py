"""docs/settings.md is what docs/make_settings.py prints from TiSettings now.

So adding, removing or re-describing a setting without regenerating the reference fails here,
naming the command that regenerates it; and the table has one row per setting, no more.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from pydantic import Field

from ti_core.settings import TiSettings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "make_settings.py"
DOC = ROOT / "docs" / "settings.md"


def _maker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_settings", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_reference_is_up_to_date() -> None:
    maker = _maker()
    assert DOC.read_text() == maker.render(), (
        f"docs/settings.md is out of date with TiSettings: run `{maker.COMMAND}`"
    )


def test_one_row_per_setting() -> None:
    rows = re.findall(r"^\| `(TI_[A-Z0-9_]+)` \|", DOC.read_text(), flags=re.MULTILINE)
    assert rows == [f"TI_{name.upper()}" for name in TiSettings.model_fields]


def test_a_new_setting_is_a_row_the_reference_lacks() -> None:
    """What the up-to-date check catches: a setting added without regenerating the file."""

    class Grown(TiSettings):
        brand_new_knob: float | None = Field(
            default=None, gt=0, description="A setting | added just now."
        )

    grown = _maker().render(Grown)
    assert grown != DOC.read_text()
    row = "| `TI_BRAND_NEW_KNOB` | unset | number > 0, or unset | A setting \\| added just now. |"
    assert row in grown.splitlines()
    assert grown.replace(row + "\n", "") == DOC.read_text()
