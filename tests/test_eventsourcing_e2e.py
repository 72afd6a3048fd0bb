"""End to end: the counters example is SIGKILLed mid-stream, restarts, and its view equals
that of an uninterrupted run; a runner with an older epoch is then fenced.

The example (``examples/eventsourcing_counters.py``) keeps its events in SQLite and its
snapshots and view on the store under test (a local directory, moto S3). Each step is a
separate process, as in production.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from objstore.checkpoint import CheckpointStore
from objstore.eventsourcing._layout import view_root
from tests.conftest import make_store_url

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "eventsourcing_counters.py"
SENSORS, READINGS = 12, 9
TOTAL = SENSORS * (READINGS + 1)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request.param, request, tmp_path)


def example(*args: str, db: Path, store: str) -> list[str]:
    return [sys.executable, str(EXAMPLE), *args, "--store", store, "--db", str(db)]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    return env


def run(*args: str, db: Path, store: str, status: int = 0) -> dict[str, Any]:
    done = subprocess.run(
        example(*args, db=db, store=store),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == status, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_here(*args: str, db: Path, store: str) -> dict[str, Any]:
    """Run the example in this process (for the steps that need no process of their own)."""
    if str(EXAMPLE.parent) not in sys.path:
        sys.path.insert(0, str(EXAMPLE.parent))
    module = importlib.import_module(EXAMPLE.stem)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert module.main([*args, "--store", store, "--db", str(db)]) == 0
    result: dict[str, Any] = json.loads(out.getvalue().strip().splitlines()[-1])
    return result


def committed_position(store: str, view: str) -> int:
    latest = CheckpointStore(view_root(store, view)).load_latest()
    return 0 if latest is None else int(latest.source_offsets.get("Sensors", 0))


def test_a_killed_projection_resumes_exactly_once_and_an_older_epoch_is_fenced(
    store: str, tmp_path: Path
) -> None:
    db = tmp_path / "events.db"
    counts = ("--sensors", str(SENSORS), "--readings", str(READINGS))
    assert run_here("write", *counts, db=db, store=store) == {"notifications": TOTAL}
    whole = run_here("project", "--view", "whole", db=db, store=store)
    assert whole["position"] == TOTAL
    assert whole["view"]["created"] == SENSORS
    assert whole["view"]["readings"] == SENSORS * READINGS

    runner = subprocess.Popen(
        example(
            "project",
            "--view",
            "crashy",
            "--delay",
            "0.01",
            "--commit-every",
            "25",
            db=db,
            store=store,
        ),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while committed_position(store, "crashy") < TOTAL // 3:
            assert runner.poll() is None, runner.stderr.read() if runner.stderr else ""
            assert time.monotonic() < deadline, "the projection made no progress"
            time.sleep(0.05)
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        runner.wait(timeout=30)
        if runner.stderr:
            runner.stderr.close()
    assert runner.returncode == -signal.SIGKILL
    killed_at = committed_position(store, "crashy")
    assert 0 < killed_at < TOTAL  # killed mid-stream, with work left to replay

    resumed = run("project", "--view", "crashy", db=db, store=store)
    assert resumed["started_from"] == killed_at
    assert resumed["view"] == whole["view"]
    assert resumed["position"] == TOTAL
    assert resumed["epoch"] == 2  # the killed runner was epoch 1

    # New events arrive; a runner that still believes it is epoch 1 may not write.
    run_here("write", "--sensors", "1", "--readings", "2", db=db, store=store)
    fenced = run("project", "--view", "crashy", "--epoch", "1", db=db, store=store, status=3)
    assert fenced["winner_epoch"] == 2
    assert committed_position(store, "crashy") == TOTAL
    caught_up = run("project", "--view", "crashy", db=db, store=store)
    assert caught_up["position"] == TOTAL + 3
    assert caught_up["view"]["created"] == SENSORS + 1
