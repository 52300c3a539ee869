"""What moved when ``ti_core`` got its subpackages keeps working: logger names, old pickles."""

from __future__ import annotations

import logging
import pickle
import pkgutil

import ti_core
from ti_core.contract import wire

# Bytes that ``pickle.dumps`` made of build-envelope's result before the move (the text of an
# envelope and its digest, restored by ``ti_core.wire._restored``), as Prefect kept them.
OLD_PICKLE = (
    b"\x80\x04\x95o\x00\x00\x00\x00\x00\x00\x00\x8c\x0cti_core.wire\x94\x8c\t_restored\x94\x93"
    b'\x94\x8c\x07{"a":1}\x94\x8c@' + b"d" * 64 + b"\x94\x86\x94R\x94."
)

# The loggers of the core, by the names they had before the move (logging configs name them).
LOGGERS = {
    "ti_core.backfill",
    "ti_core.builder",
    "ti_core.consume",
    "ti_core.decoder",
    "ti_core.embedded",
    "ti_core.groups",
    "ti_core.publish",
    "ti_core.reconnect",
    "ti_core.replicas",
    "ti_core.retry",
}


def test_a_result_pickled_before_the_move_loads() -> None:
    text = pickle.loads(OLD_PICKLE)
    assert isinstance(text, wire.EnvelopeJson)
    assert text == '{"a":1}'
    assert text.digest == "d" * 64


def test_the_cores_loggers_keep_their_names() -> None:
    for module in pkgutil.walk_packages(ti_core.__path__, prefix="ti_core."):
        __import__(module.name)
    names = {name for name in logging.root.manager.loggerDict if name.startswith("ti_core.")}
    assert names == LOGGERS
