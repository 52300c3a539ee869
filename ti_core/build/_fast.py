"""The builder's model construction: the wire models made from values the builder has
already checked against every rule they state, without pydantic validating them again.

Private to ``ti_core.build`` (the builder and ``source_metrics``); the contract
(``ti_core.contract.models``) holds only the models. It is here for speed alone: with
``model_construct`` instead a build executes 2.6x the instructions, with validation 1.8x,
and without the shells 1.33x (callgrind; docs/core.md, "Throughput", has each measure).
``tests/test_builder_differential.py`` builds every generated state with this switched off
(``_PLAIN = False``: every model validated by pydantic) and compares bytes, fields set,
refusals and warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from ti_core.contract.models import (
    AgentSignalView,
    MarketMindDecision,
    SourceMetricsSummary,
    SynthesisView,
    TargetView,
    TradingIntelligenceEnvelope,
)

__all__ = ["maker", "shell_of"]

_Model = TypeVar("_Model", bound=BaseModel)
_new = object.__new__
_MODELS = (
    AgentSignalView,
    TargetView,
    SynthesisView,
    SourceMetricsSummary,
    MarketMindDecision,
    TradingIntelligenceEnvelope,
)
# What ``maker`` skips is only safe while the models do nothing but check types and bounds:
# no validators that change values, no post-init, no private attributes, no kept extras.
_PLAIN = all(
    not model.__pydantic_post_init__
    and not model.__private_attributes__
    and not model.__pydantic_decorators__.field_validators
    and not model.__pydantic_decorators__.model_validators
    and model.model_config.get("extra") != "allow"
    for model in _MODELS
)


def _shell(model: type[_Model]) -> type[_Model]:
    """A subclass of ``model`` with object's own attribute stores and no slots of its own.

    Made by ``type.__new__`` (pydantic's class machinery never sees it, so it has no schema
    of its own). A frozen model's ``__setattr__`` refuses every store, so its four slots
    could only be set by calling their descriptors (a method-wrapper call each); a shell's
    instance takes plain attribute stores, which the interpreter specialises, and then
    becomes a ``model`` by ``__class__`` assignment (the same layout). With one store per
    field (a dict sharing its keys, not a dict literal), an envelope's ten models cost about
    52,000 fewer instructions than with a dict literal and four descriptor calls each: a
    build without shells executes a third more (callgrind). No shell instance outlives a
    ``maker`` function or the builder's signal loop.
    """
    namespace = {
        "__slots__": (),
        "__setattr__": object.__setattr__,  # both: otherwise the type keeps Python's slot
        "__delattr__": object.__delattr__,
        "__module__": __name__,
        "__qualname__": f"_{model.__name__}Shell",
    }
    return type.__new__(type(model), f"_{model.__name__}Shell", (model,), namespace)


_SHELLS: dict[type[BaseModel], type[BaseModel]] = {model: _shell(model) for model in _MODELS}


def maker(model: type[_Model], fields_set: set[str] | None = None) -> Callable[..., _Model]:
    """A function making a ``model`` from checked values, without validating them again.

    It takes the fields in ``fields_set`` (all of them by default) positionally, in field
    order; the others get their defaults. It is what ``model_construct`` does minus its
    per-field loop, for values the builder has already checked against every rule these
    models state. Generated per model (as ``dataclasses`` generates ``__init__``; the same
    straight-line code as one written out by hand, which would have to follow every field
    the contract gains): the instance starts as the model's shell (``_shell``) and takes
    one plain attribute store per field (into a dict sharing its keys) and slot, then
    becomes a ``model``. Its
    ``model_fields_set`` is ``fields_set``, shared by every instance (they are frozen:
    treat it as read-only); a test proves that validating an envelope built this way
    (``model_validate(envelope.model_dump())``) gives an equal one. While ``_PLAIN`` is
    false (should a model ever gain a validator) it validates instead.
    """
    fields_set = set(model.model_fields) if fields_set is None else fields_set
    names = list(model.model_fields)
    taken = [name for name in names if name in fields_set]
    stores = [
        f"    instance.{name} = {name if name in fields_set else f'defaults[{name!r}]'}"
        for name in names
    ]
    source = "\n".join(
        [
            f"def make_{model.__name__}({', '.join(taken)}, *, model=model, shell=shell,"
            " fields_set=fields_set, defaults=defaults):",
            "    if not _PLAIN:",
            f"        return model.model_validate({{{', '.join(f'{n!r}: {n}' for n in taken)}}})",
            "    instance = _new(shell)",
            *stores,
            "    instance.__pydantic_fields_set__ = fields_set",
            "    instance.__pydantic_extra__ = None",
            "    instance.__pydantic_private__ = None",
            "    instance.__class__ = model",
            "    return instance",
        ]
    )
    defaults = {name: model.model_fields[name] for name in names if name not in fields_set}
    if any(field.default_factory is not None for field in defaults.values()):
        raise TypeError(f"{model.__name__}: a field left to its default needs a plain default")
    namespace: dict[str, Any] = {
        "model": model,
        "shell": _SHELLS[model],
        "fields_set": fields_set,
        "defaults": {name: field.default for name, field in defaults.items()},
    }
    exec(source, globals(), namespace)  # noqa: S102 - source made above from field names
    return namespace[f"make_{model.__name__}"]  # type: ignore[no-any-return]


def shell_of(model: type[_Model]) -> type[_Model]:
    """``model``'s shell (see ``_shell``), for a loop that makes many instances inline."""
    return _SHELLS[model]  # type: ignore[return-value]
