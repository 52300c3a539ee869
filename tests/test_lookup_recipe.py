"""The point-lookup recipes of the documentation, executed exactly as written.

Every python block under the "Point lookup" heading of docs/consuming.md (their one home; the
README links there) runs against a real server with ``REDIS_URL`` set: first with nothing
published, then with a published NVDA decision.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from tests.test_consume import envelope
from ti_core import publish_many
from ti_core.transport.connection import connect

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "consuming.md"]
HEADING = re.compile(r"^(#+) Point lookup[^\n]*\n", re.MULTILINE)


def recipes(doc: Path) -> list[str]:
    """The python code blocks of the "Point lookup" section of ``doc`` (none if it has none)."""
    text = doc.read_text()
    found = HEADING.search(text)
    if found is None:
        return []
    level = len(found.group(1))
    rest = text[found.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    section = rest[: end.start()] if end else rest
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


CASES = [(doc, i) for doc in DOCS for i in range(len(recipes(doc)))]


def test_the_consuming_guide_has_both_recipes() -> None:
    blocks = recipes(DOCS[0])
    assert len(blocks) == 2
    assert "get_decision" in blocks[0] and "schema_version" in blocks[1]


@pytest.mark.parametrize(("doc", "index"), CASES, ids=[f"{d.name}-{i}" for d, i in CASES])
def test_point_lookup_recipe_runs_as_written(
    doc: Path,
    index: int,
    redis_url: str,
    sample_states: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    code = compile(recipes(doc)[index], f"{doc.name}[point lookup {index}]", "exec")
    exec(code, {"__name__": "__main__"})
    assert "for NVDA on 2026-05-11" in capsys.readouterr().out  # the "nothing there" branch

    env = envelope(sample_states)

    async def publish() -> None:
        async with connect(redis_url) as client:
            await publish_many(client, [env])

    asyncio.run(publish())
    exec(code, {"__name__": "__main__"})
    assert capsys.readouterr().out == f"NVDA 2026-05-11 BUY 0.78 0.41 {env.correlation_id}\n"
