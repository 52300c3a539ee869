"""The published JSON Schema as a real validator (``jsonschema``, formats asserted) sees it."""

from __future__ import annotations

import json
import math
from typing import Any

from jsonschema import Draft202012Validator

from ti_core.contract.schema import envelope_schema

__all__ = ["VALIDATOR", "schema_accepts", "schema_errors"]

VALIDATOR = Draft202012Validator(
    envelope_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
)
# jsonschema checks a format only when its checker's package is installed (date-time needs
# rfc3339-validator, a test dependency): a format it cannot check would pass silently.
_CHECKED = Draft202012Validator.FORMAT_CHECKER.checkers
assert {"date", "date-time"} <= set(_CHECKED), "install the test extra: rfc3339-validator"


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):  # 1e400: JSON syntax, but no IEEE double holds it
        raise ValueError(f"{token} is out of range")
    return value


def schema_accepts(payload: str | bytes) -> bool:
    """``payload`` is RFC 8259 JSON (no NaN / Infinity) that the schema validates."""
    try:
        document = json.loads(payload, parse_constant=_not_json, parse_float=_finite)
    except ValueError:
        return False
    return VALIDATOR.is_valid(document)


def schema_errors(payload: str | bytes) -> list[str]:
    """What the validator says about ``payload`` (parsed leniently), one message an error."""
    return [e.message for e in VALIDATOR.iter_errors(json.loads(payload))]
