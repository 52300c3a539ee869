"""The fast tier (``pytest -m "not slow"``) keeps a part of every test module.

Slow tests carry ``@pytest.mark.slow`` (or a module ``pytestmark``; tests/conftest.py adds it
to every test that needs the Prefect harness); the fast tier leaves them out. These checks
read the markers of the tests this session collected, so they cost nothing: every module
keeps at least one test in the fast tier (unless all of it runs flows under Prefect), the
Prefect tests are slow, and the modules that only start servers, clusters or kill processes
are slow throughout. How long each test takes is reported, never asserted
(``TI_FAST_TIER_BUDGET``, tests/conftest.py): a busy machine makes any test slow.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import deselected_items, needs_prefect

HERE = Path(__file__).resolve().parent

# Every test of these starts a Prefect server (on PostgreSQL, or the local one with a
# browser), a Sentinel cluster, or kills processes mid-run: none belongs in the fast tier.
SLOW_THROUGHOUT = {
    "test_backfill_crash.py",
    "test_cli_hangs.py",
    "test_e2e_server.py",
    "test_failover.py",
    "test_publish_faults.py",
    "test_ui_story.py",
}


def _whole_suite(request: pytest.FixtureRequest) -> dict[str, list[pytest.Item]]:
    """Items of every test module by file name, selected or deselected by ``-m``; skips
    when this session collected only some modules (``pytest tests/test_x.py``)."""
    items = [*request.session.items, *deselected_items(request.config)]
    by_module: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        by_module[item.path.name].append(item)
    missing = {p.name for p in HERE.glob("test_*.py")} - set(by_module)
    if missing:
        pytest.skip(f"this session did not collect {len(missing)} test modules")
    return by_module


def _slow(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None


def test_every_module_keeps_a_test_in_the_fast_tier(request: pytest.FixtureRequest) -> None:
    by_module = _whole_suite(request)
    slow_only = sorted(
        name
        for name, items in by_module.items()
        if name not in SLOW_THROUGHOUT
        and not all(needs_prefect(item) for item in items)
        and all(_slow(item) for item in items)
    )
    assert not slow_only, f"no test of these modules runs in the fast tier: {slow_only}"


def test_server_and_fault_modules_are_slow_throughout(request: pytest.FixtureRequest) -> None:
    by_module = _whole_suite(request)
    unmarked = [i.nodeid for n in SLOW_THROUGHOUT for i in by_module[n] if not _slow(i)]
    assert not unmarked, f"not marked slow: {unmarked}"


def test_tests_that_start_prefect_are_slow(request: pytest.FixtureRequest) -> None:
    by_module = _whole_suite(request)
    items = [item for module in by_module.values() for item in module]
    assert any(needs_prefect(item) for item in items)
    assert not [i.nodeid for i in items if needs_prefect(i) and not _slow(i)]
