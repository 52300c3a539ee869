"""Print docs/settings.md, the settings reference, from ``ti_core.settings.TiSettings``.

Run from the repository root: ``python docs/make_settings.py > docs/settings.md``. The table
is made from the model itself (each field's variable, default, accepted values and
description), so the reference cannot drift from the code: tests/test_settings_doc.py fails
when docs/settings.md is not what this script prints now.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python docs/make_settings.py > docs/settings.md"

HEADER = f"""\
# Settings

<!-- Generated from ti_core.settings.TiSettings by docs/make_settings.py; do not edit by hand.
     After changing a setting, run: {COMMAND} -->

Every setting is an environment variable with the prefix `TI_`; explicit function arguments
and command-line flags override them. The table is generated from `ti_core.settings.TiSettings`
(`{COMMAND}`); tests/test_settings_doc.py fails when it is out of date.

The Redis URL is a secret: it is only ever printed redacted (`redis://***@host:6379/0`): the
user info, and the value of any query key that decodes to a credential (`?password=`,
`?ssl_password=`, `?passwor%64=`...), in output, logs, errors, artifacts and events. Every
setting that accepts *secret text* is held as a `SecretStr`, which shows as `**********`.
"""

FOOTER = """\
Prefect reads its own `PREFECT_*` settings. With no `PREFECT_API_URL`, the `ti` commands that
run flows share one local Prefect server, which the first of them starts (SQLite in
`TI_DATA_DIR/prefect`, a free port on 127.0.0.1) and which stops after
`TI_SERVER_IDLE_TIMEOUT` seconds unused; `ti server status` prints its UI address (see
[operations.md](operations.md#1-one-machine-with-the-defaults)). `ti` turns Prefect's analytics
off by default.
"""

# What a computed default comes to, where a reader wants the value and not the function.
NOTES = {
    "data_dir": (
        " (`~/.local/share/ti` on Linux, `~/Library/Application Support/ti` on macOS, "
        "`%LOCALAPPDATA%\\ti` on Windows)"
    ),
}

_KINDS = {
    bool: "`true` / `false`",
    int: "integer",
    float: "number",
    str: "text",
    Path: "path",
}


def variable(model: Any, name: str, field: Any) -> str:
    """The environment variable a field of ``model`` is read from."""
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def accepted(field: Any) -> str:
    """What a field accepts: its kind, and its bounds when it has any."""
    from pydantic import SecretStr

    annotation = field.annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        annotation = args[0] if len(args) == 1 else annotation
    if annotation is SecretStr:
        kind = "secret text"
    else:
        kind = _KINDS.get(annotation, f"`{getattr(annotation, '__name__', annotation)}`")
    bounds = []
    for rule in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(rule, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value}")
    text = kind + (" " + ", ".join(bounds) if bounds else "")
    return text + (", or unset" if optional else "")


def default(field: Any) -> str:
    """The default as one writes it in the environment; a computed one says where from."""
    if field.default_factory is not None:
        return "computed (below)"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def cell(text: str) -> str:
    """Text that stays inside one table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def render(model: Any = None) -> str:
    """The whole of docs/settings.md, from ``model`` (default: ``TiSettings``)."""
    if model is None:
        from ti_core.settings import TiSettings

        model = TiSettings
    fields = model.model_fields
    lines = [HEADER, "| variable | default | accepts | meaning |", "|---|---|---|---|"]
    for name, field in fields.items():
        if not field.description:
            raise SystemExit(f"make_settings: TiSettings.{name} has no description")
        lines.append(
            f"| `{variable(model, name, field)}` | {default(field)} | {cell(accepted(field))} "
            f"| {cell(field.description)} |"
        )
    computed = [(n, f) for n, f in fields.items() if f.default_factory is not None]
    if computed:
        lines += ["", "Computed defaults:", ""]
        for name, field in computed:
            doc = (field.default_factory.__doc__ or "").strip().splitlines()
            why = cell(doc[0].replace("``", "`")).rstrip(".") if doc else "computed when read"
            lines.append(f"- `{variable(model, name, field)}`: {why}{NOTES.get(name, '')}.")
    lines += ["", FOOTER]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's ti_core, whatever is installed
    sys.stdout.write(render())
