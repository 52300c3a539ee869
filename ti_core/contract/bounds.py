"""Bounds on an arena state before anything else touches it: size, nesting depth, JSON types.

Every runner applies them to the state it returns (a replayed file is measured before it is
read), so a state that passes is one Prefect can hash, cache and persist for retries, and a
refusal reads the same whichever command ran it:

- size: the state's compact JSON form is at most ``TI_MAX_STATE_BYTES`` (default 4 MiB). An
  in-process state is measured by a walk that stops as soon as the limit is passed, so a
  200 MB state costs no more to refuse than a 4 MiB one;
- depth: dicts and lists nested at most :data:`MAX_STATE_DEPTH` deep (the builder's own parts
  nest far less; Prefect's hashing recursed to death at ~900);
- types: dicts with text keys, lists/tuples, text, integers, finite floats, booleans, null.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ti_core.contract.keys import shorten
from ti_core.errors import InvalidStateError, clip

__all__ = [
    "DEFAULT_MAX_STATE_BYTES",
    "MAX_STATE_DEPTH",
    "check_file_size",
    "check_state",
    "too_deep",
]

DEFAULT_MAX_STATE_BYTES = 4 * 1024 * 1024  # setting TI_MAX_STATE_BYTES
MAX_STATE_DEPTH = 64
_LIMIT_HINT = "(setting TI_MAX_STATE_BYTES)"


def check_file_size(path: Path, limit: int, size: int | None = None) -> int:
    """The size of ``path`` if at most ``limit`` bytes; else ``InvalidStateError``, unread."""
    if size is None:
        size = os.stat(path).st_size
    if size > limit:
        raise InvalidStateError(
            f"arena state {path} is {size} bytes, over the {limit}-byte limit {_LIMIT_HINT}"
        )
    return size


def _where(path: tuple[Any, ...]) -> str:
    text = "state"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return clip(text, 120)


def _scalar_size(value: Any, path: tuple[Any, ...], what: str) -> int:
    kind = type(value)
    if kind is str:
        return len(value) + 2 if value.isascii() else len(value.encode("utf-8", "replace")) + 2
    if value is None or kind is bool:
        return 5
    if kind is int or (isinstance(value, int) and not isinstance(value, bool)):
        if -(2**63) <= value < 2**64:
            return len(str(int(value)))
        return int(value.bit_length()) * 3 // 10 + 1  # its digits, without printing a huge int
    if kind is float or isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidStateError(f"{what}: {_where(path)} is {value!r}, which is not JSON")
        return len(repr(float(value)))
    if isinstance(value, str):
        return len(value) + 2
    raise InvalidStateError(
        f"{what}: {_where(path)} is a {type(value).__name__}, which is not JSON "
        "(states are dicts of text, numbers, booleans, null, lists and dicts)"
    )


def _too_big(what: str, total: int, limit: int) -> InvalidStateError:
    return InvalidStateError(
        f"{what} is at least {total} bytes as JSON, over the {limit}-byte limit {_LIMIT_HINT}"
    )


def too_deep(what: str, where: str = "") -> InvalidStateError:
    """The refusal of a state nested over :data:`MAX_STATE_DEPTH` deep."""
    at = f" (at {where}...)" if where else ""
    return InvalidStateError(f"{what} is nested over {MAX_STATE_DEPTH} deep{at}")


def _quick_members(items: Any, is_dict: bool, depth: int, push: Any) -> int:
    """The size of one container's members (containers pushed), or -1 to look closer."""
    size = 2
    for key, item in items:
        if is_dict:
            if type(key) is not str:
                return -1
            size += len(key) + 4
        else:
            size += 1
        t = type(item)
        if t is str:
            size += len(item) + 2
        elif t is dict or t is list:
            push((item, depth + 1))
        elif t is float:
            if not math.isfinite(item):
                return -1
            size += 3
        elif t is int:
            size += item.bit_length() * 3 // 10 + 1
        elif item is None or t is bool:
            size += 4
        else:
            return -1
    return size


def _quick_size(state: Mapping[str, Any], limit: int) -> int | None:
    """The common case, fast: plain dicts, lists and scalars within the bounds -> about the
    JSON size (never more than it); None when anything needs a closer look."""
    total = 0
    stack: list[tuple[Any, int]] = [(state, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        value, depth = pop()
        kind = type(value)
        if depth > MAX_STATE_DEPTH or (kind is not dict and kind is not list):
            return None  # too deep, or a tuple or other Mapping: the careful walk
        if kind is dict:
            size = _quick_members(value.items(), True, depth, push)
        else:
            size = _quick_members(enumerate(value), False, depth, push)
        total += size
        if size < 0 or total > limit:
            return None
    return total


def check_state(state: Mapping[str, Any], limit: int, what: str = "arena state") -> int:
    """About the compact JSON size of ``state`` in bytes, or ``InvalidStateError`` if it is
    over ``limit`` bytes, nested over :data:`MAX_STATE_DEPTH` deep, or not plain JSON.

    Iterative (a deep state cannot exhaust the stack); stops at the first refusal, so its cost
    is bounded by ``limit``, not by the state's size. A plain state takes one quick pass;
    anything else a careful one that names where the problem is.
    """
    quick = _quick_size(state, limit)
    if quick is not None:
        return quick
    total = 0
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(state, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, Mapping):
            if depth > MAX_STATE_DEPTH:
                raise too_deep(what, _where(path[:6]))
            total += 2
            if total + 5 * len(value) > limit:  # each member is at least '"":0,'
                raise _too_big(what, total + 5 * len(value), limit)
            for key, child in value.items():
                if not isinstance(key, str):
                    raise InvalidStateError(
                        f"{what}: {_where(path)} has the key {shorten(key)}, which is not text "
                        "(JSON object keys are text)"
                    )
                total += len(key) + 4
                stack.append((child, depth + 1, (*path, key)))
        elif type(value) is list or type(value) is tuple:
            if depth > MAX_STATE_DEPTH:
                raise too_deep(what, _where(path[:6]))
            total += 2 + len(value)
            if total + len(value) > limit:  # each item is at least one byte and a comma
                raise _too_big(what, total + len(value), limit)
            stack.extend((child, depth + 1, (*path, i)) for i, child in enumerate(value))
        else:
            total += _scalar_size(value, path, what)
        if total > limit:
            raise _too_big(what, total, limit)
    return total
