"""Helpers of the embedded-store fault tests: a real store, ways to damage it, fingerprints.

The store is written by the package itself (``connect()`` with no URL, ``publish_many``), so
the tests damage exactly the file users have. A fingerprint is the file's bytes (hashed),
inode and mtime: "untouched" compares all three.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.publish_workload import many_envelopes
from ti_core import TiSettings, connect, publish_many

__all__ = [
    "DAMAGES",
    "copy_store",
    "damage",
    "fingerprint",
    "publish_store",
    "run_cli",
    "run_cli_each",
    "single_error_line",
]

DAMAGES = ("truncated", "bit_flips", "empty", "random_bytes", "directory")
ROOT = Path(__file__).resolve().parent.parent


def publish_store(data_dir: Path, count: int = 30) -> list[Any]:
    """Publish ``count`` decisions (T0.. from 2026-01-05) into the embedded store in data_dir."""
    envelopes = many_envelopes(count, tickers=10)

    async def write() -> None:
        async with connect(settings=TiSettings(data_dir=data_dir)) as client:
            await publish_many(client, envelopes)

    asyncio.run(write())
    return envelopes


def damage(path: Path, kind: str) -> None:
    """Damage the store file at ``path`` as ``kind`` (one of DAMAGES)."""
    data = bytearray(path.read_bytes())
    rng = random.Random(10)
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bit_flips":
        for offset in rng.sample(range(len(data) // 4, len(data) // 2), 4):
            data[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(data)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random_bytes":
        path.write_bytes(rng.randbytes(len(data)))
    elif kind == "directory":
        path.unlink()
        path.mkdir()
        (path / "something").write_text("not a store")
    else:
        raise ValueError(kind)


def fingerprint(path: Path) -> tuple[Any, ...]:
    """Bytes (SHA-256), inode and mtime of a file; for a directory, its listing too."""
    st = os.lstat(path)
    if path.is_dir():
        content: Any = sorted(p.name for p in path.iterdir())
    else:
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    return content, st.st_ino, st.st_mtime_ns, st.st_size


def single_error_line(stderr: str) -> str:
    """The one ``ti: ...`` line a failing command must print (no traceback), else fail."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("ti: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def run_cli(
    args: list[str], data_dir: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``ti ARGS`` in a new process; prints whether Prefect was imported (last stdout line)."""
    code = (
        "import sys\nfrom flows.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
        "finally:\n    print('PREFECT_IMPORTED=%s' % ('prefect' in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TI_")}
    environment.update(TI_DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_EACH = """
import contextlib, io, json, os, sys
from flows.cli import main
args, runs = json.loads(sys.argv[1]), []
for data_dir in json.loads(sys.argv[2]):
    os.environ["TI_DATA_DIR"] = data_dir
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(args)
    runs.append({"rc": rc, "stderr": err.getvalue(), "prefect": "prefect" in sys.modules})
print(json.dumps(runs))
"""


def run_cli_each(args: list[str], data_dirs: list[Path]) -> list[dict[str, Any]]:
    """``ti ARGS`` once per data directory, all in ONE new process (Prefect not yet imported):
    per run its exit code, stderr, and whether Prefect had been imported by then."""
    import json

    environment = {k: v for k, v in os.environ.items() if not k.startswith("TI_")}
    done = subprocess.run(
        [sys.executable, "-c", _EACH, json.dumps(args), json.dumps([str(d) for d in data_dirs])],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    runs: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return runs


def copy_store(source_dir: Path, target_dir: Path) -> Path:
    """A copy of a data directory (the store file only); the copied store's path."""
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source_dir / "store.dat", target_dir / "store.dat")
    return target_dir / "store.dat"
