"""The builder's primitive coercions: text, numbers, words, JSON parts and lists.

Each returns a clean value or raises ``InvalidStateError`` naming the field and the value
(cut short); the builder's module docstring states the rules they implement.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ti_core.contract.keys import shorten
from ti_core.errors import InvalidStateError

__all__ = [
    "MAX_JSON_DEPTH",
    "NAME_MAX_CHARS",
    "as_json",
    "as_json_sized",
    "number",
    "sequence",
    "text",
    "word",
]

logger = logging.getLogger("ti_core.builder")  # its warnings are the builder's

# Decoders (pydantic's included) refuse JSON nested about 200 deep: stay far below that.
MAX_JSON_DEPTH = 32
NAME_MAX_CHARS = 200


def text(value: Any, field: str, limit: int = NAME_MAX_CHARS, default: str = "") -> str:
    """None -> default; str/int/float -> trimmed str cut to ``limit``; anything else raises."""
    if type(value) is str:  # the common case first: this runs ~20 times per envelope
        out = value.strip()
    elif value is None:
        return default
    elif isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise InvalidStateError(f"{field} must be text, got {shorten(value)}")
    else:
        try:
            out = str(value).strip()
        except ValueError as exc:  # an int too long to print
            raise InvalidStateError(f"{field} cannot be shown as text: {shorten(value)}") from exc
    if len(out) > limit:
        out = out[:limit]
    if not out.isascii():
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates cannot go on the wire
            out = out.encode("utf-8", "replace").decode("utf-8")
    return out or default


def number(value: Any, field: str, low: float | None, high: float | None) -> float:
    """A finite number within [low, high], from a number or a numeric string; raise otherwise."""
    if type(value) is float:
        result = value
    else:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return 0.0
        if value is None:
            return 0.0
        if isinstance(value, bool):
            raise InvalidStateError(f"{field} must be a number, got {shorten(value)}")
        try:
            result = float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidStateError(f"{field} must be a number, got {shorten(value)}") from exc
    if not math.isfinite(result):
        raise InvalidStateError(f"{field} must be finite, got {shorten(value)}")
    if (low is not None and result < low) or (high is not None and result > high):
        raise InvalidStateError(f"{field} must be in [{low}, {high}], got {shorten(value)}")
    return result


def word(value: Any, field: str, allowed: frozenset[str], fallback: str) -> str:
    """A word from ``allowed`` (trimmed, upper-cased); an unknown one is ``fallback``, warned."""
    if value is None or value == "":
        return fallback
    if not isinstance(value, str):
        raise InvalidStateError(f"{field} must be a word, got {shorten(value)}")
    upper = value.strip().upper()
    if upper not in allowed:
        logger.warning(
            "%s %s is not one of %s: using %s",
            field,
            shorten(value),
            "/".join(sorted(allowed)),
            fallback,
        )
        return fallback
    return upper


# JSON size bounds (bytes), so the builder knows an envelope fits without serialising it: a
# character is at most 6 bytes (``\\u0000``), a number at most 24 characters (ints here are
# below 2**64: 20 digits and a sign), a key or item adds quotes, a colon and a comma.
TEXT_BYTES = 6
ITEM_BYTES = 32


def flat_json(value: Mapping[Any, Any]) -> tuple[dict[str, Any], int] | None:
    """A copy of a flat dict of ASCII text keys and plain JSON scalars and a bound on its JSON
    size, or None to take the slow path."""
    if type(value) is not dict:
        return None
    chars = 0
    for key in value:  # keys and subscripts: cheaper than items() and its tuples
        if type(key) is not str:
            return None
        item = value[key]
        kind = type(item)
        if kind is str:
            if not item.isascii():
                return None
            chars += len(item)
        elif kind is float:
            if item - item != 0.0:  # inf or nan (a finite x - x is 0.0): not JSON
                return None
        elif kind is int:
            if not -(2**63) <= item < 2**64:
                return None
        elif item is not None and kind is not bool:
            return None
    keys = "".join(value)
    if not keys.isascii():
        return None
    return value.copy(), TEXT_BYTES * (chars + len(keys)) + ITEM_BYTES * len(value) + 2


def as_json(value: Any, field: str) -> Any:
    """Round-trip through strict JSON so what we keep is exactly what consumers will read."""
    return as_json_sized(value, field)[0]


def as_json_sized(value: Any, field: str) -> tuple[Any, int]:
    """``as_json`` and a bound on the bytes its value takes in the envelope's JSON."""
    flat = flat_json(value)
    if flat is not None:  # already exactly what JSON would give back
        return flat
    try:
        dumped = json.dumps(value, allow_nan=False, ensure_ascii=False)
        loaded = json.loads(dumped.encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidStateError(f"{field} cannot be encoded as JSON: {shorten(value)}") from exc
    stack = [(loaded, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidStateError(
                f"{field} is nested over {MAX_JSON_DEPTH} deep: {shorten(value)}"
            )
        stack.extend((child, depth + 1) for child in children)
    # Pydantic writes what json.dumps wrote, more compactly, except that a character may take
    # up to 4 UTF-8 bytes and a float up to 24 characters where Python's repr took 3.
    return loaded, 8 * len(dumped) + ITEM_BYTES


def sequence(value: Any, field: str) -> Sequence[Any]:
    if type(value) is list or type(value) is tuple:
        return value
    if value is None:
        return ()
    if isinstance(value, str | bytes | bytearray | Mapping) or not isinstance(value, Sequence):
        raise InvalidStateError(f"{field} must be a list, got {shorten(value)}")
    return value
