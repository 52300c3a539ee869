"""Regenerate tests/data/reference_expectations.json from the original module (run once).

Loads ``../shared/reference/stream_reference.py`` by path, builds the three sample states with
a fixed correlation id and ``published_at``, and records the envelope, the stream entry's
fields and the lookup hash it writes. The tests compare our builder against that file, so they
never need ``../shared`` at run time.

    python bench/make_reference_expectations.py
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reference import load_reference  # noqa: E402

DATA = ROOT / "tests" / "data"
OUT = DATA / "reference_expectations.json"
CORRELATION_ID = "0123456789abcdef0123456789abcdef"
PUBLISHED_AT = datetime(2026, 5, 11, 21, 30, 0, 123456, tzinfo=UTC)


class _Recorder:
    """Records what the reference writes (a stand-in client for this one-off script only)."""

    def __init__(self) -> None:
        self.xadd_fields: dict[str, str] = {}
        self.hset_key = ""
        self.hset_mapping: dict[str, str] = {}

    async def xadd(self, stream: str, fields: dict[str, str]) -> bytes:
        self.xadd_fields = dict(fields)
        return b"1-0"

    async def hset(self, key: str, mapping: dict[str, str]) -> int:
        self.hset_key, self.hset_mapping = key, dict(mapping)
        return len(mapping)


async def expectations(ref: Any) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    for path in sorted(DATA.glob("*-20??-??-??-*.json")):
        state = json.loads(path.read_text())
        envelope = ref.build_envelope_from_state(state, correlation_id=CORRELATION_ID)
        envelope = envelope.model_copy(update={"published_at": PUBLISHED_AT})
        recorder = _Recorder()
        await ref.publish_envelope(recorder, ref.DEFAULT_STREAM_NAME, envelope)
        await ref.publish_decision_hash(recorder, envelope)
        cases[path.stem] = {
            "envelope": json.loads(envelope.model_dump_json()),
            "stream_fields": sorted(recorder.xadd_fields),
            "hash_key": recorder.hset_key,
            "hash": recorder.hset_mapping,
        }
    return cases


def main() -> None:
    ref = load_reference()
    document = {
        "generated_by": "bench/make_reference_expectations.py",
        "reference": "shared/reference/stream_reference.py",
        "correlation_id": CORRELATION_ID,
        "published_at": PUBLISHED_AT.isoformat(),
        "stream_name": ref.DEFAULT_STREAM_NAME,
        "decision_hash_prefix": ref.DECISION_HASH_PREFIX,
        "cases": asyncio.run(expectations(ref)),
    }
    OUT.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(document['cases'])} cases)")


if __name__ == "__main__":
    main()
