"""Shared fixtures: a real redis-server per session (started here, on a free port), fakeredis."""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.publish_workload import Opener
from tests.redisproc import RedisProcess

DATA = Path(__file__).parent / "data"

# CI replays the same generated cases every run (a failure there reproduces locally with
# CI=true); elsewhere hypothesis explores new ones each time.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


FAST_TIER_BUDGET_ENV = "TI_FAST_TIER_BUDGET"
E2E_STACK = pytest.StashKey[Any]()  # a tests.prefect_stack.StackInBackground
_SPENT = pytest.StashKey[dict[str, list[float]]]()
_DESELECTED = pytest.StashKey[list[pytest.Item]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SPENT] = {}
    config.stash[_DESELECTED] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Kept so that tests/test_tiers.py sees the whole suite under ``-m "not slow"`` too."""
    if items:
        items[0].config.stash[_DESELECTED].extend(items)


def deselected_items(config: pytest.Config) -> list[pytest.Item]:
    return list(config.stash[_DESELECTED])


def _cpu_seconds() -> float:
    """CPU of this process and of the children it has reaped: on a shared machine the wall
    clock says little, CPU time says what the test itself costs."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(item: pytest.Item, phase: str) -> Any:
    """With ``TI_FAST_TIER_BUDGET`` set: wall and CPU seconds of one phase of a test."""
    if FAST_TIER_BUDGET_ENV not in os.environ:
        return (yield)
    wall, cpu = time.monotonic(), _cpu_seconds()
    try:
        return (yield)
    finally:
        slow = float(item.get_closest_marker("slow") is not None)
        spent = item.config.stash[_SPENT].setdefault(item.nodeid, [0.0, 0.0, 0.0, slow])
        spent[0] += time.monotonic() - wall
        spent[1] += _cpu_seconds() - cpu
        if phase == "setup":  # session and module fixtures are paid by their first test
            spent[2] += time.monotonic() - wall


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    return (yield from _timed(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    return (yield from _timed(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Any:
    return (yield from _timed(item, "teardown"))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Tests not marked slow that took over ``TI_FAST_TIER_BUDGET`` seconds (wall): a report,
    never a failure, because a busy machine makes any test slow. Mark one ``slow`` when its
    CPU time is high too, or when its setup is not a fixture the fast tier shares anyway."""
    budget = os.environ.get(FAST_TIER_BUDGET_ENV)
    if budget is None:
        return
    limit = float(budget)
    spent = config.stash[_SPENT]
    fast = {node: times for node, times in spent.items() if not times[3]}
    over = sorted(((t, node) for node, t in fast.items() if t[0] > limit), reverse=True)
    write = terminalreporter.write_line
    terminalreporter.section(f"fast tier budget: {limit:g} s per test ({FAST_TIER_BUDGET_ENV})")
    write(
        f"{len(fast)} tests not marked slow: {sum(t[0] for t in fast.values()):.1f} s wall, "
        f"{sum(t[1] for t in fast.values()):.1f} s CPU (this process and reaped children)"
    )
    if not over:
        write(f"no test outside the slow tier took over {limit:g} s")
    for (wall, cpu, setup, _), node in over:
        write(f"{wall:6.1f} s wall (setup {setup:.1f}) {cpu:6.1f} s CPU  {node}")


def needs_prefect(item: pytest.Item) -> bool:
    return "prefect_harness" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start Prefect are slow, and run last, keeping their relative order.

    Slow: the harness takes ~10 s to start and its server's CPU grows with every flow run;
    more than half of the suite's CPU outside the end-to-end tests. The fast tier
    (``-m "not slow"``) tests the core and the command line without it.

    Last: Prefect leaves threads behind (its events client pings a websocket, drawing from the
    global ``random``); hypothesis reads any change to that state during generation as a
    strategy using ``random`` and fails, so property tests must not share the process with
    them.
    """
    for item in items:
        if needs_prefect(item):
            item.add_marker(pytest.mark.slow)
    items.sort(key=needs_prefect)


@pytest.fixture(scope="session", autouse=True)
def _e2e_stack_early(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """When test_e2e_server is selected, its Prefect server, deployments and worker are
    prepared in the background from the first test on (tests/prefect_stack.py): that minute
    or two of mostly waiting overlaps the rest of the suite."""
    if not any(item.path.name == "test_e2e_server.py" for item in request.session.items):
        yield
        return
    from tests.prefect_stack import StackInBackground

    early = StackInBackground(tmp_path_factory.mktemp("e2e")).start()
    request.config.stash[E2E_STACK] = early
    try:
        yield
    finally:
        early.close()


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One real redis-server for the session; tests that kill servers start their own."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis-session")).start()
    yield proc
    proc.stop()


@pytest.fixture
def redis_url(redis_proc: RedisProcess) -> str:
    """URL of the session server, flushed for this test."""
    with redis_proc.sync_client() as client:
        client.flushall()
    return redis_proc.url


@pytest.fixture
async def real_redis(redis_url: str) -> AsyncIterator[Any]:
    from ti_core.transport.connection import open_redis

    client = open_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def fake_redis() -> AsyncIterator[Any]:
    import fakeredis

    client = fakeredis.FakeAsyncRedis()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def sample_states() -> dict[str, dict[str, Any]]:
    """The three sample arena states shipped with the contract (copied into tests/data)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(DATA.glob("*-20??-??-??-*.json"))}


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test touches the user's real embedded store or a developer's TI_* settings; no
    test leaves a shared local Prefect server (flows.server) running in its data dir."""
    monkeypatch.setenv("TI_DATA_DIR", str(tmp_path / "ti-data"))
    monkeypatch.setenv("TI_SERVER_IDLE_TIMEOUT", "60")  # a leftover stops itself soon
    monkeypatch.delenv("TI_REDIS_URL", raising=False)
    monkeypatch.delenv("TI_ARENA", raising=False)
    yield
    if (tmp_path / "ti-data" / "prefect" / "server.json").exists():
        from flows.server import LocalServer

        LocalServer(tmp_path / "ti-data").stop()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One Prefect test server (temporary database) for the whole session: it takes ~9 s.

    Prefect is imported here, lazily, so tests that do not run flows do not pay for it; task
    results (the retry cache) go to a temporary directory.
    """
    import os

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        mp.setenv("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
        mp.setenv("PREFECT_LOCAL_STORAGE_PATH", str(tmp_path_factory.mktemp("prefect-results")))
        if "PREFECT_HOME" not in os.environ:
            mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
        import prefect.results
        from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        # Prefect (3.8.8, still 3.9.1) reads the server's default result storage with a sync
        # client it never closes, once per flow run: the leaked socket fails tests under
        # filterwarnings=error.
        mp.setattr(
            prefect.results,
            "_read_server_default_result_storage_block_id",
            _closing_default_storage_read,
        )
        storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
            # A busy 2-core machine needed over 70 s to start a Prefect server.
            with prefect_test_harness(server_startup_timeout=300):
                yield


def _closing_default_storage_read() -> Any:
    """Prefect's own lookup of the server's default result storage block, closing its client."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        with get_client(sync_client=True) as client:
            return client.read_server_default_result_storage().default_result_storage_block_id
    except (PrefectHTTPStatusError, httpx.HTTPError, RuntimeError, ValueError):
        return None


@pytest.fixture(params=["fake", "real", "real-resp3", "embedded"])
async def clients(request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    """The same test on fakeredis, a real redis-server (RESP2, and RESP3: ``?protocol=3``, where
    some replies take another shape) and the embedded store: a factory of clients that all see
    the same data (first call: the main client)."""
    async with AsyncExitStack() as stack:
        if request.param == "fake":
            import fakeredis

            server = fakeredis.FakeServer()

            def open_fake() -> Any:
                client = fakeredis.FakeAsyncRedis(server=server)
                stack.push_async_callback(client.aclose)
                return client

            yield open_fake
        elif request.param.startswith("real"):
            from ti_core.transport.connection import open_redis

            url = request.getfixturevalue("redis_url")
            if request.param == "real-resp3":
                url += "?protocol=3"

            def open_real() -> Any:
                client = open_redis(url)
                stack.push_async_callback(client.aclose)
                return client

            yield open_real
        else:
            from ti_core import TiSettings, connect

            store = await stack.enter_async_context(connect(settings=TiSettings()))
            yield lambda: store


@pytest.fixture
def r(clients: Opener) -> Any:
    """The main client of ``clients``: one store, three implementations."""
    return clients()
