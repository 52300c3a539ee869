"""The v1 envelope as a JSON Schema (draft 2020-12): the contract in a form other languages take.

Generated from the wire models (:mod:`ti_core.contract.models`), then made as strict as the
publisher is: the models give every field a default (so a Python caller may leave it out),
but the publisher always writes every field, so the schema requires them all; and it adds the
formats that only the builder and the decoder check (the models take what a Python caller
gives): the ticker allow-list, ``YYYY-MM-DD`` trade dates, UTC timestamps, 32-hex correlation
ids. The decoder accepts exactly what this schema accepts (a property test holds both to it).

The published copy is ``schema/envelope-v1.schema.json``; regenerate it with::

    python -m ti_core.contract.schema > schema/envelope-v1.schema.json

and a test fails while the file differs from what this module makes.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ti_core.contract.keys import CORRELATION_ID_PATTERN, TICKER_PATTERN
from ti_core.contract.models import (
    SCHEMA_VERSION,
    TRADE_DATE_PATTERN,
    UTC_TIMESTAMP_PATTERN,
    TradingIntelligenceEnvelope,
)

__all__ = ["ENVELOPE_MAX_BYTES", "SCHEMA_ID", "envelope_schema", "envelope_schema_json"]

SCHEMA_ID: Final = "urn:trading-intelligence:schema:envelope-v1"
ENVELOPE_MAX_BYTES: Final = 64 * 1024
"""The publisher's cap on an envelope's JSON (``ti_core.build.builder.MAX_ENVELOPE_BYTES``,
which a test holds equal; this layer cannot import the builder)."""

_TRAILING_NEWLINE = (
    "Patterns end in $(?!\\n) so that Python's re.search, which lets $ match before a final "
    "newline, agrees with ECMA-262 regular expressions."
)

_DESCRIPTION = (
    "One trading decision of the trading-intelligence arena, schema_version 1: the JSON of a "
    "stream entry's `data` field and of a lookup hash's `json` field. The publisher writes "
    "every field, and an envelope's JSON is at most 65536 bytes (64 KiB, UTF-8); readers "
    "should also accept documents up to 1 MiB from other publishers. Numbers are JSON numbers, "
    "never strings; no NaN or Infinity. Unknown fields may be added in v1 and must be ignored. "
    "Validate with format assertion on (`date`, `date-time`): the patterns alone let an "
    "impossible date such as 2026-02-30 through. Integers in `meta` and `phase_timings` may "
    "exceed 2^53."
)

# Per (definition, property): what the models do not carry. Checked against the models
# when generating, so a renamed field fails here instead of silently losing its constraint.
_FORMATS: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("TradingIntelligenceEnvelope", "schema_version"): {
        "type": "string",
        "const": SCHEMA_VERSION,
    },
    ("TradingIntelligenceEnvelope", "published_at"): {
        "type": "string",
        "format": "date-time",
        "pattern": UTC_TIMESTAMP_PATTERN,
        "description": (
            "When the decision was published: ISO-8601 in UTC, written with `Z` (this publisher) "
            "or `+00:00`, with a fraction of 1-6 digits when it has one."
        ),
    },
    ("TradingIntelligenceEnvelope", "correlation_id"): {
        "type": "string",
        "pattern": CORRELATION_ID_PATTERN,
        "description": "32 lowercase hex characters; one per publish, the idempotency key.",
    },
    ("TargetView", "ticker"): {
        "type": "string",
        "pattern": TICKER_PATTERN,
        "description": (
            "Upper-case, 1-20 of A-Z, 0-9 and . - = ^ _ with at least one letter or digit "
            "(BRK.B, ^GSPC, ES=F); part of the lookup hash's key."
        ),
    },
    ("TargetView", "trade_date"): {
        "type": "string",
        "format": "date",
        "pattern": TRADE_DATE_PATTERN,
        "description": "The trade date, YYYY-MM-DD; part of the lookup hash's key.",
    },
    ("SynthesisView", "ensemble_score"): {
        "type": "number",
        "minimum": -1.0,
        "maximum": 1.0,
        "description": "In [-1, 1]; may be written as -0.0.",
    },
}


def _strict(definition: dict[str, Any], name: str) -> None:
    """Every property required (in field order), no defaults: the publisher writes them all."""
    properties: dict[str, Any] = definition["properties"]
    for field, spec in properties.items():
        spec.pop("default", None)
        extra = _FORMATS.get((name, field))
        if extra is not None:
            title = spec.get("title")
            spec.clear()
            if title is not None:
                spec["title"] = title
            spec.update(extra)
    definition["required"] = list(properties)


def envelope_schema() -> dict[str, Any]:
    """The JSON Schema of the v1 envelope, as a dict."""
    generated = TradingIntelligenceEnvelope.model_json_schema()
    definitions: dict[str, Any] = generated.pop("$defs")
    root_name = TradingIntelligenceEnvelope.__name__
    for name, field in _FORMATS:
        owner = generated if name == root_name else definitions[name]
        if field not in owner["properties"]:
            raise LookupError(f"{name}.{field} is no longer a field of the wire models")
    for name, definition in definitions.items():
        _strict(definition, name)
    _strict(generated, root_name)
    generated["description"] = _DESCRIPTION
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "$comment": _TRAILING_NEWLINE,
        **generated,
        "$defs": definitions,
    }


def envelope_schema_json() -> str:
    """The schema as the published file holds it: indented, keys in generation order."""
    return json.dumps(envelope_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # pragma: no cover - the command the docstring gives
    import sys

    sys.stdout.write(envelope_schema_json())
