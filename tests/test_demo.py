"""``objstore demo``: the crash, the recovery and the exactly-once claim, asserted.

Runs with a small stream (60 events, a checkpoint every 10) so every crash kind finishes in
well under a second on a local directory; one run goes through ``--s3`` (moto started by the
demo itself) and one through a real subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from objstore import CheckpointStore, cli, open_backend
from objstore.checkpoint import manifest_key, state_key
from objstore.cli.demo import (
    CRASH_KINDS,
    MARKER,
    DemoError,
    DemoResult,
    DemoStep,
    format_step,
    generate_events,
    plan_crash,
    run_demo,
    run_demo_command,
)

runner = CliRunner()


@pytest.mark.parametrize("kind", CRASH_KINDS)
def test_every_crash_kind_recovers_exactly_once(kind: str, tmp_path: Path) -> None:
    steps: list[DemoStep] = []
    url = str(tmp_path / "demo")
    result = run_demo(url, seed=11, crash=kind, report=steps.append, events=60, interval=10)
    assert result.exactly_once
    assert result.counts == result.reference_counts
    assert result.counts == dict(Counter(generate_events(11, 60)))
    assert (result.final_offset, sum(result.counts.values())) == (60, 60)
    assert result.crash.kind == kind
    assert result.zombie_error == "FencedError"  # the crashed epoch-1 writer is fenced
    # Every id in use was written once, by one run: no id was committed twice.
    assert not set(result.first_run) & set(result.second_run)
    kinds = [step.kind for step in steps]
    assert kinds.index("crash") < kinds.index("recover") < kinds.index("fence")
    assert kinds[-1] == "result"
    crashed_in = result.crash.checkpoint
    if kind == "mid-batch":
        assert result.recovered_id == crashed_in
        assert result.replayed == result.crash.event_offset - crashed_in * 10
    elif kind == "after-state":  # the sidecar landed, the commit did not: an orphan
        assert result.recovered_id == (crashed_in - 1 or None)
        assert (crashed_in, "no manifest (never committed)") in result.skipped
        assert result.replayed == 10
        assert result.orphans_deleted == 1
    elif kind == "after-manifest":  # committed, but latest.txt still names the one before
        assert result.recovered_id == crashed_in
        expected_pointer = f"checkpoint_{crashed_in - 1:020d}" if crashed_in > 1 else None
        assert result.pointer_after_crash == expected_pointer
        assert result.replayed == 0
    else:
        assert result.recovered_id == crashed_in
        assert result.pointer_after_crash == f"checkpoint_{crashed_in:020d}"
        assert result.replayed == 0
    # What the demo leaves behind is a healthy store.
    store = CheckpointStore(url)
    report = store.recover_latest_validated()
    assert (report.chosen_id, report.skipped) == (result.final_id, ())
    store.close()


def test_crash_before_the_first_commit_starts_fresh(tmp_path: Path) -> None:
    for seed in range(200):  # find a seed whose after-state crash hits checkpoint #1
        if plan_crash(seed, 20, 10, "after-state").checkpoint == 1:
            break
    result = run_demo(
        str(tmp_path / "demo"), events=20, interval=10, seed=seed, crash="after-state"
    )
    assert result.recovered_id is None
    assert result.recovered_offset == 0
    assert result.replayed == 10
    assert result.exactly_once


def test_the_cli_prints_every_step_and_its_json_is_the_proof(tmp_path: Path) -> None:
    url = str(tmp_path / "demo")
    args = ["demo", url, "--events", "60", "--every", "10", "--seed", "4", "--crash", "mid-batch"]
    result = runner.invoke(cli.app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("CRASH", "recover_latest_validated", "FencedError", "exactly-once"):
        assert text in result.stdout
    result = runner.invoke(cli.app, [*args, "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["exactly_once"] is True
    assert doc["counts"] == doc["reference_counts"]
    assert doc["crash"]["kind"] == "mid-batch"
    assert doc["seed"] == 4
    assert [step["kind"] for step in doc["steps"]].count("crash") == 1
    assert doc["steps"][-1] == {
        "kind": "result",
        "message": doc["steps"][-1]["message"],
        "exactly_once": True,
    }


def test_same_seed_same_story(tmp_path: Path) -> None:
    first = run_demo(str(tmp_path / "a"), seed=99, events=60, interval=10)
    second = run_demo(str(tmp_path / "b"), seed=99, events=60, interval=10)
    assert first.crash == second.crash
    assert (first.recovered_id, first.first_run, first.second_run) == (
        second.recovered_id,
        second.first_run,
        second.second_run,
    )


def test_plan_crash_always_leaves_work_for_the_restart() -> None:
    seen = set()
    for seed in range(300):
        plan = plan_crash(seed, 95, 10)
        seen.add(plan.kind)
        assert 1 <= plan.checkpoint <= 9
        if plan.kind == "mid-batch":
            assert plan.event_offset is not None
            assert 10 <= plan.event_offset < 95
    assert seen == set(CRASH_KINDS)
    with pytest.raises(DemoError, match="two checkpoints"):
        plan_crash(1, 10, 10)
    with pytest.raises(DemoError, match="unknown crash kind"):
        plan_crash(1, 100, 10, "meteor")


def test_rerun_clears_the_previous_demo_but_never_foreign_checkpoints(tmp_path: Path) -> None:
    url = str(tmp_path / "demo")
    assert run_demo(url, seed=1, events=60, interval=10).exactly_once
    steps: list[DemoStep] = []
    assert run_demo(url, seed=2, report=steps.append, events=60, interval=10).exactly_once
    assert any("cleared the previous demo run" in step.message for step in steps)
    foreign = str(tmp_path / "production")
    backend = open_backend(foreign)
    backend.put(state_key(1), b"someone's state")
    backend.put(manifest_key(1), b"{}")
    backend.close()
    result = runner.invoke(cli.app, ["demo", foreign, "--events", "60", "--every", "10"])
    assert result.exit_code == 2
    assert "did not write" in result.stderr
    assert not (Path(foreign) / MARKER).exists()
    result = runner.invoke(cli.app, ["demo", str(tmp_path / "x"), "--crash", "meteor"])
    assert result.exit_code == 2
    result = runner.invoke(cli.app, ["demo", str(tmp_path / "x"), "--events", "5"])
    assert result.exit_code == 2


def test_demo_on_s3_starts_its_own_moto_server(tmp_path: Path) -> None:
    before = {name: os.environ.get(name) for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID")}
    args = ["demo", "--s3", "--events", "40", "--every", "10", "--seed", "3", "--json"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["exactly_once"] is True
    assert doc["url"].startswith("s3://objstore-demo/")
    assert doc["steps"][0]["message"].startswith("started a moto S3 server at http://127.0.0.1:")
    after = {name: os.environ.get(name) for name in before}
    assert after == before  # the demo restored the environment
    result = runner.invoke(cli.app, ["demo", str(tmp_path), "--s3"])
    assert result.exit_code == 2


def test_demo_on_s3_never_rewrites_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The moto server is reached through ``storage_options``: at no step of the run does the
    process environment (shared with every other thread) name it, and credentials the user
    has set stay set (the explicit throw-away ones win for the run)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-elses-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "someone-elses-secret")
    before = dict(os.environ)
    seen: list[dict[str, str]] = []

    def report(step: DemoStep) -> None:
        seen.append(dict(os.environ))

    result = run_demo_command(None, s3=True, events=40, interval=10, seed=3, report=report)
    assert result.exactly_once
    assert result.url.startswith("s3://objstore-demo/")
    assert len(seen) > 5
    assert all(environment == before for environment in seen)
    assert dict(os.environ) == before


def test_the_core_never_loads_the_demo_the_test_kit_or_the_terminal_libraries() -> None:
    code = (
        "import sys, objstore, objstore.checkpoint, objstore.kv, objstore.observability; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rich', 'typer', 'moto', 'boto3') or m.startswith(('objstore.testing', 'objstore.cli'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_demo_s3_without_moto_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "moto.server", None)
    result = runner.invoke(cli.app, ["demo", "--s3"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "objstore: error: --s3 needs moto's server: pip install 'moto[server]' (or objstore[test])"
    ]


def test_a_mismatch_is_reported_as_such() -> None:
    result = DemoResult("u", 2, 1, 0, plan_crash(0, 2, 1), final_offset=2)
    result.reference_counts = {"apple": 2}
    result.counts = {"apple": 1, "fig": 1}
    assert not result.exactly_once
    assert result.to_json()["exactly_once"] is False
    assert format_step(DemoStep("result", "MISMATCH", {"exactly_once": False})).plain.startswith(
        "✘"
    )


def test_the_default_demo_in_a_real_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "objstore", "demo", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "exactly-once" in done.stdout
    assert (tmp_path / "objstore-demo" / "checkpoints" / "latest.txt").exists()
