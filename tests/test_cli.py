"""The ``objstore`` command, end to end, on a local directory and on moto S3.

Most tests drive the Typer app in-process with its runner; a few run ``python -m objstore``
as a real subprocess. Every ``--json`` output is parsed and checked, exit codes are asserted,
and ``--dry-run`` is proven to change no byte of the store. The S3 fixtures (``s3_url``,
``moto_server``) come from the ``tests.servers.s3`` plugin registered in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from objstore import CheckpointManifest, CheckpointStore, cli, open_backend
from objstore.backends import MemoryTransport
from objstore.checkpoint import (
    LATEST,
    AsyncCheckpointStore,
    Pointer,
    RecoveryReport,
    manifest_key,
    plan_pointer_repair,
    read_pointer_async,
    state_key,
    validate_checkpoint_streaming,
)
from objstore.checkpoint._layout import parse_pointer, pointer_text
from objstore.cli import _output, _repair
from objstore.errors import (
    AlreadyExistsError,
    CheckpointConflict,
    CorruptionError,
    FencedError,
    NotFoundError,
    NotSupportedError,
    PreconditionFailedError,
    TransientStorageError,
)

runner = CliRunner()


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(params=["file", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store on a local directory, then on moto S3."""
    if request.param == "file":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("s3_url"))


def invoke(*args: str) -> Result:
    """Run ``objstore ARGS`` in-process; stdout and stderr are kept apart."""
    return runner.invoke(cli.app, list(args), env={"COLUMNS": "200"})


def invoke_json(*args: str) -> tuple[int, Any]:
    """Run ``objstore ARGS --json``: its exit code and its one JSON document."""
    result = invoke(*args, "--json")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def save(url: str, *ids: int, pending: tuple[int, ...] = ()) -> None:
    """Commit checkpoints ``ids`` with some state; ``pending`` ones have a pending sink."""
    store = CheckpointStore(url)
    try:
        for checkpoint_id in ids:
            store.save_with_state(
                CheckpointManifest(
                    checkpoint_id=checkpoint_id,
                    epoch=1,
                    source_offsets={"events": checkpoint_id * 10},
                    sink_commit_statuses={"kafka": "pending"} if checkpoint_id in pending else {},
                ),
                {"counts": f"counts-{checkpoint_id}".encode() * 40, "window": b"w" * 200},
            )
    finally:
        store.close()


def put_raw(url: str, key: str, data: bytes) -> None:
    """Write bytes straight to the store, around objstore: how damage happens."""
    backend = open_backend(url)
    try:
        backend.put(key, data)
    finally:
        backend.close()


def get_raw(url: str, key: str) -> bytes:
    backend = open_backend(url)
    try:
        return backend.get(key)[0]
    finally:
        backend.close()


def flip_state_byte(url: str, checkpoint_id: int) -> None:
    """Corrupt a sidecar without changing its size (only a hash can tell)."""
    data = bytearray(get_raw(url, state_key(checkpoint_id)))
    data[-5] ^= 0xFF
    put_raw(url, state_key(checkpoint_id), bytes(data))


def damaged_store(url: str) -> None:
    """1 valid, 2 valid with a pending sink, 3 valid, 4 garbage manifest, 5 flipped sidecar
    byte (latest.txt names it), 6 an orphaned sidecar."""
    save(url, 1, 2, 3, 4, 5, pending=(2,))
    put_raw(url, manifest_key(4), b"{not json")
    flip_state_byte(url, 5)
    put_raw(url, state_key(6), b"an orphaned sidecar")


def snapshot(url: str) -> dict[str, bytes]:
    """Every object of the store, with its bytes."""
    backend = open_backend(url)
    try:
        return {info.key: backend.get(info.key)[0] for info in backend.list("")}
    finally:
        backend.close()


def pointer(url: str) -> str | None:
    """The pointer as ``checkpoint_{id:020d}`` whatever its format (else its raw text)."""
    try:
        data = get_raw(url, LATEST)
    except NotFoundError:
        return None
    record = parse_pointer(data)
    if record is None or record.checkpoint_id is None:
        return data.decode()
    return name(record.checkpoint_id)


def name(checkpoint_id: int) -> str:
    return f"checkpoint_{checkpoint_id:020d}"


def one_error_line(result: Result) -> str:
    """The single stderr line of an expected failure (never a traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("objstore: error: ")
    return lines[0]


# -- ls --------------------------------------------------------------------------------------


def test_ls_reports_every_status_and_the_pointer(url: str) -> None:
    damaged_store(url)
    code, doc = invoke_json("ls", url)
    assert code == 1  # corrupt checkpoints listed
    rows = {row["id"]: row for row in doc["checkpoints"]}
    assert {cid: row["status"] for cid, row in rows.items()} == {
        1: "valid",
        2: "pending_sinks",
        3: "valid",
        4: "corrupt",
        5: "corrupt",
        6: "orphan",
    }
    assert rows[2]["valid"]
    assert rows[2]["pending_sinks"] == ["kafka"]
    assert "JSON" in rows[4]["reason"]
    assert rows[5]["reason"] == "sidecar checksum mismatch"
    assert rows[6]["reason"].startswith("no manifest")
    assert rows[5]["latest"]
    assert not rows[3]["latest"]
    assert rows[1]["epoch"] == 1
    assert rows[1]["time"].endswith("Z")
    assert rows[1]["manifest_size"] > 0
    assert rows[1]["state_size"] > 0
    assert rows[1]["source_offsets"] == {"events": 10}
    assert doc["latest"] == {
        "text": pointer_text(5, 1, 1).decode(),
        "checkpoint_id": 5,
        "state": "invalid",
        "detail": "names checkpoint 5, which is corrupt",
    }
    assert doc["newest_valid_id"] == 3
    assert doc["counts"] == {
        "valid": 2,
        "pending_sinks": 1,
        "corrupt": 2,
        "orphan": 1,
        "aborted": 0,
    }


def test_ls_and_prune_treat_an_aborted_id_as_no_checkpoint(tmp_path: Path) -> None:
    """A janitor's tombstone (id 2) is neither corrupt (ls exits 0) nor pruned or counted."""
    url = str(tmp_path / "store")
    store = CheckpointStore(url)
    for checkpoint_id in (1, 3):
        if checkpoint_id == 3:
            store.save_state_data(2, [b"abandoned"], epoch=1)

            async def far_ahead() -> float:
                return 8e9

            assert len(CheckpointStore(url, store_clock=far_ahead).cleanup_orphans().deleted) == 1
        store.save_with_state(CheckpointManifest(checkpoint_id, 1), [b"state"])
    code, doc = invoke_json("ls", url)
    assert code == 0
    assert doc["counts"]["aborted"] == 1
    assert doc["counts"]["corrupt"] == 0
    assert [row["status"] for row in doc["checkpoints"]] == ["valid", "aborted", "valid"]
    code, doc = invoke_json("prune", url, "--keep", "1")
    assert code == 0
    assert doc["committed"] == [1, 3]
    assert doc["deleted"] == [1]


def test_ls_quick_checks_sizes_only(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    damaged_store(url)
    put_raw(url, state_key(3), get_raw(url, state_key(3))[:-1])  # truncated: size tells
    code, doc = invoke_json("ls", url, "--quick")
    rows = {row["id"]: row for row in doc["checkpoints"]}
    assert doc["checked"] == "quick"
    assert rows[3]["reason"] == "sidecar truncated"
    assert rows[5]["status"] == "valid"  # a flipped byte needs the hash (the default)
    assert code == 1


def test_ls_human_output(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    damaged_store(url)
    result = invoke("ls", url)
    assert result.exit_code == 1
    for text in ("corrupt", "orphan", "pending sinks: kafka", "→", "latest.txt names checkpoint 5"):
        assert text in result.stdout
    assert result.stderr == ""


def test_ls_healthy_and_empty_stores(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    (tmp_path / "store").mkdir()  # an empty store (a missing one is an error: test_cli_ops)
    code, doc = invoke_json("ls", url)
    assert (code, doc["checkpoints"], doc["latest"]["state"]) == (1, [], "missing")
    assert "No checkpoints." in invoke("ls", url).stdout
    save(url, 1, 2)
    code, doc = invoke_json("ls", url)
    assert code == 0
    assert doc["latest"]["state"] == "ok"
    assert [row["status"] for row in doc["checkpoints"]] == ["valid", "valid"]


# -- show ------------------------------------------------------------------------------------


def test_show_latest_and_by_id(url: str) -> None:
    save(url, 1, 2, pending=(2,))
    code, doc = invoke_json("show", url)
    assert code == 0
    assert doc["checkpoint_id"] == 2
    assert doc["latest"] is True
    manifest = doc["manifest"]
    assert manifest["epoch"] == 1
    assert manifest["source_offsets"] == {"events": 20}
    assert manifest["sink_commit_statuses"] == {"kafka": "pending"}
    assert [op["name"] for op in manifest["operator_states"]] == ["counts", "window"]
    assert manifest == json.loads(get_raw(url, manifest_key(2)))
    code, doc = invoke_json("show", url, "1")
    assert (code, doc["checkpoint_id"], doc["latest"]) == (0, 1, False)
    human = invoke("show", url, name(1))
    assert human.exit_code == 0
    assert "Checkpoint 1" in human.stdout
    assert "operator states" in human.stdout


def test_show_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    (tmp_path / "store").mkdir()
    result = invoke("show", url)
    assert result.exit_code == 1
    assert "no committed checkpoint" in one_error_line(result)
    damaged_store(url)
    result = invoke("show", url, "4")
    assert result.exit_code == 1
    assert "corrupt" in one_error_line(result)
    assert result.stdout == ""
    result = invoke("show", url, "99")
    assert result.exit_code == 1
    assert "does not exist" in one_error_line(result)
    result = invoke("show", url, "seven")
    assert result.exit_code == 2
    assert "invalid checkpoint id" in one_error_line(result)
    result = invoke("show", url, "0")
    assert result.exit_code == 2


# -- verify ----------------------------------------------------------------------------------


def test_verify_all_ids_and_default(url: str) -> None:
    damaged_store(url)
    code, doc = invoke_json("verify", url, "--all")
    assert code == 1
    assert doc["all_valid"] is False
    verdicts = {row["id"]: (row["valid"], row["issues"]) for row in doc["checkpoints"]}
    assert verdicts[1] == (True, [])
    assert verdicts[3] == (True, [])
    assert verdicts[5] == (False, ["sidecar checksum mismatch"])
    assert verdicts[4][0] is False
    assert 6 not in verdicts  # an orphan is not a checkpoint
    code, doc = invoke_json("verify", url, "1", "2", "3")
    assert code == 0
    assert doc["all_valid"]
    assert len(doc["checkpoints"]) == 3
    code, doc = invoke_json("verify", url)  # the newest committed one
    assert code == 1
    assert [row["id"] for row in doc["checkpoints"]] == [5]


def test_verify_usage_and_missing(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    (tmp_path / "store").mkdir()
    code, doc = invoke_json("verify", url)
    assert code == 1
    assert doc["checkpoints"] == []
    save(url, 1)
    code, doc = invoke_json("verify", url, "7")
    assert code == 1
    assert doc["checkpoints"][0]["issues"] == ["does not exist"]
    result = invoke("verify", url, "1", "--all")
    assert result.exit_code == 2
    assert "not both" in one_error_line(result)
    human = invoke("verify", url, "latest")
    assert human.exit_code == 0
    assert "all 1 valid" in human.stdout


def _damage_every_way(url: str) -> None:
    """Checkpoints broken in every way a sidecar can be, for the streamed verifier."""
    save(url, *range(1, 9))
    flip_state_byte(url, 2)
    put_raw(url, state_key(3), get_raw(url, state_key(3))[:-10])
    put_raw(url, state_key(4), get_raw(url, state_key(4)) + b"extra")
    put_raw(url, state_key(5), get_raw(url, state_key(6)))  # another checkpoint's sidecar
    backend = open_backend(url)
    backend.delete(state_key(7))
    backend.close()
    put_raw(url, manifest_key(8), get_raw(url, manifest_key(8)).replace(b'"epoch":1', b'"epoch":2'))


def test_streamed_verification_agrees_with_the_library(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    _damage_every_way(url)
    store = CheckpointStore(url)
    expected = {cid: store.validate_checkpoint(cid) for cid in range(1, 9)}
    store.close()
    assert sum(result.valid for result in expected.values()) == 2  # 1 and 6
    _, doc = invoke_json("verify", url, "--all")
    for row in doc["checkpoints"]:
        library = expected[row["id"]]
        assert (row["valid"], row["issues"]) == (library.valid, list(library.issues)), row
    # The streamed check the command runs, in many small ranged reads per sidecar.
    ranged = CheckpointStore(url, range_size=64)
    for cid, library in expected.items():
        streamed = validate_checkpoint_streaming(ranged, cid)
        assert (streamed.valid, streamed.issues) == (library.valid, library.issues), cid
    ranged.close()


# -- recover ---------------------------------------------------------------------------------


def test_recover_reports_and_repairs_backward_off_a_corrupt_pointer(url: str) -> None:
    damaged_store(url)
    before = snapshot(url)
    code, doc = invoke_json("recover", url)
    assert code == 0
    assert doc["chosen_id"] == 3
    assert doc["fresh_start"] is False
    assert doc["restore"]["source_offsets"] == {"events": 30}
    assert doc["restore"]["operators"] == ["counts", "window"]
    assert [item["id"] for item in doc["skipped"]] == [6, 5, 4]
    assert doc["skipped"][1]["reason"] == "sidecar checksum mismatch"
    assert doc["examined"] == [6, 5, 4, 3]
    assert doc["latest"]["state"] == "invalid"
    repair = doc["repair"]
    assert (repair["needed"], repair["action"], repair["from"], repair["to"]) == (
        True,
        "backward",
        5,
        3,
    )
    assert repair["applied"] is False
    code, doc = invoke_json("recover", url, "--repair", "--dry-run")
    assert code == 0
    assert doc["repair"]["dry_run"]
    assert not doc["repair"]["applied"]
    assert snapshot(url) == before  # --dry-run changed nothing
    code, doc = invoke_json("recover", url, "--repair")
    assert code == 0
    assert doc["repair"]["applied"] is True
    assert pointer(url) == name(3)
    code, doc = invoke_json("recover", url, "--repair")
    assert doc["repair"]["needed"] is False
    assert doc["latest"]["state"] == "ok"
    # The repaired store still loads what the repaired pointer names.
    store = CheckpointStore(url)
    assert store.recover_latest_validated().chosen_id == 3
    store.close()


def test_recover_repair_forward_missing_and_garbage_pointer(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1, 2, 3)
    put_raw(url, LATEST, name(1).encode())  # lagging: a crash between manifest and pointer
    code, doc = invoke_json("recover", url, "--repair")
    assert (code, doc["repair"]["action"], pointer(url)) == (0, "forward", name(3))
    put_raw(url, LATEST, b"\xff garbage")
    code, doc = invoke_json("recover", url, "--repair")
    assert (doc["latest"]["state"], doc["repair"]["action"]) == ("garbage", "replace")
    assert pointer(url) == name(3)
    backend = open_backend(url)
    backend.delete(LATEST)
    backend.close()
    code, doc = invoke_json("recover", url, "--repair")
    assert (doc["latest"]["state"], doc["repair"]["action"]) == ("missing", "create")
    assert pointer(url) == name(3)
    put_raw(url, LATEST, name(9).encode())  # dangling: names nothing
    code, doc = invoke_json("recover", url, "--repair")
    assert (doc["latest"]["state"], doc["repair"]["action"]) == ("dangling", "backward")
    assert pointer(url) == name(3)


def test_recover_human_output(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    damaged_store(url)
    result = invoke("recover", url, "--repair", "--dry-run")
    assert result.exit_code == 0
    assert "Would restore checkpoint 3" in result.stdout
    assert "dry run: would repair latest.txt" in result.stdout
    assert "sidecar checksum mismatch" in result.stdout


def test_recover_nothing_valid_is_exit_1(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    (tmp_path / "store").mkdir()
    code, doc = invoke_json("recover", url, "--repair")
    assert (code, doc["fresh_start"], doc["examined"]) == (1, True, [])
    save(url, 1)
    flip_state_byte(url, 1)
    code, doc = invoke_json("recover", url, "--repair")
    assert (code, doc["chosen_id"], doc["repair"]["applied"]) == (1, None, False)
    assert pointer(url) == name(1)  # nothing valid to point at: left alone
    assert "Nothing valid to restore" in invoke("recover", url).stdout


def _report(chosen: int | None, skipped: dict[int, str], examined: list[int]) -> RecoveryReport:
    return RecoveryReport(chosen, None, tuple(examined), tuple(skipped.items()))


def test_plan_pointer_repair_decisions() -> None:
    ok = Pointer(name(5), 5, "v")
    assert plan_pointer_repair(ok, _report(5, {}, [5])).action == "none"
    assert plan_pointer_repair(ok, _report(None, {}, [5])).needed is False
    assert plan_pointer_repair(ok, _report(7, {}, [7, 6, 5])).action == "forward"
    assert plan_pointer_repair(ok, _report(3, {5: "bad"}, [5, 4, 3])).action == "backward"
    assert plan_pointer_repair(ok, _report(3, {}, [4, 3])).action == "backward"  # 5 is gone
    # A newer checkpoint the walk did not find invalid (it appeared during the walk):
    # never moved backward.
    refused = plan_pointer_repair(ok, _report(3, {4: "bad"}, [5, 4, 3]))
    assert (refused.action, refused.needed) == ("refuse", True)
    missing = Pointer(None, None, None)
    assert plan_pointer_repair(missing, _report(3, {}, [3])).action == "create"
    garbage = Pointer("zz", None, "v")
    assert plan_pointer_repair(garbage, _report(3, {}, [3])).action == "replace"


def test_repair_is_a_compare_and_swap(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1, 2)
    put_raw(url, LATEST, name(1).encode())

    async def scenario() -> None:
        store = AsyncCheckpointStore(url)
        stale = await read_pointer_async(store)
        plan = plan_pointer_repair(stale, _report(2, {}, [2, 1]))
        await store.backend.put(LATEST, name(2).encode())  # a writer moved it meanwhile
        with pytest.raises(cli.CliError) as caught:
            await _repair._apply(store, plan)
        assert caught.value.code == cli.ExitCode.CONFLICT
        refuse = dataclasses.replace(plan, action="refuse", reason="no")
        with pytest.raises(cli.CliError):
            await _repair._apply(store, refuse)
        await store.close()

    asyncio.run(scenario())
    assert pointer(url) == name(2)


# -- prune and gc ----------------------------------------------------------------------------


def test_prune_dry_run_then_prune(url: str) -> None:
    damaged_store(url)
    before = snapshot(url)
    code, doc = invoke_json("prune", url, "--keep", "1", "--dry-run")
    assert code == 0
    assert (doc["planned"], doc["deleted"]) == ([1, 2, 4], [])
    assert doc["kept"] == [3, 5]
    assert doc["newest_valid_id"] == 3
    assert doc["deleted_count"] == 0
    assert snapshot(url) == before
    code, doc = invoke_json("prune", url, "--keep", "1")
    assert (code, doc["planned"], doc["deleted"], doc["deleted_count"]) == (
        0,
        [1, 2, 4],
        [1, 2, 4],
        3,
    )
    _, listing = invoke_json("ls", url)
    assert [row["id"] for row in listing["checkpoints"]] == [3, 5, 6]
    code, doc = invoke_json("prune", url, "--keep", "5")
    assert (code, doc["planned"], doc["deleted"]) == (0, [], [])


def test_prune_refuses_without_a_valid_checkpoint(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1, 2)
    flip_state_byte(url, 1)
    flip_state_byte(url, 2)
    before = snapshot(url)
    code, doc = invoke_json("prune", url, "--keep", "1")
    assert code == 1
    assert doc["refused"]
    assert doc["deleted"] == []
    assert snapshot(url) == before
    result = invoke("prune", url, "--keep", "0")
    assert result.exit_code == 2
    assert "--keep" in one_error_line(result)


def test_gc_respects_the_grace_period(url: str) -> None:
    save(url, 1, 2)
    put_raw(url, state_key(3), b"in flight?")  # newer than every commit: maybe a live writer
    put_raw(url, state_key(1) + "-tmp", b"junk")  # noise in a committed directory: ignored
    before = snapshot(url)
    code, doc = invoke_json("gc", url, "--dry-run")
    assert code == 0
    assert doc["grace_seconds"] == 3600
    assert [(o["id"], o["eligible"]) for o in doc["orphans"]] == [(3, False)]
    assert (doc["planned"], doc["deleted"]) == ([], [])
    code, doc = invoke_json("gc", url, "--grace", "0s", "--dry-run")
    assert (doc["planned"], doc["deleted"]) == ([3], [])
    assert doc["deleted_count"] == 0
    assert snapshot(url) == before
    code, doc = invoke_json("gc", url, "--grace", "0")
    assert (code, doc["deleted"], doc["deleted_count"]) == (0, [3], 1)
    assert state_key(3) not in snapshot(url)


def test_gc_deletes_orphans_below_the_newest_commit(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1)
    put_raw(url, state_key(2), b"lost writer")
    save(url, 3)
    result = invoke("gc", url, "--grace", "1d")
    assert result.exit_code == 0
    assert "deleted 1 orphaned" in result.stdout
    assert state_key(2) not in snapshot(url)
    result = invoke("gc", url, "--grace", "soon")
    assert result.exit_code == 2
    assert "invalid duration" in one_error_line(result)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("90", 90), ("1h30m", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "5x", "-1s", "1h-", "h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        cli.parse_duration(text)


# -- cp --------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["file-to-s3", "s3-to-file"])
def test_cp_between_file_and_s3_preserves_validity(
    direction: str, tmp_path: Path, s3_url: str
) -> None:
    local = str(tmp_path / "store")
    src, dst = (local, s3_url) if direction == "file-to-s3" else (s3_url, local)
    damaged_store(src)
    code, doc = invoke_json("cp", src, dst, "--all")
    assert code == 1  # 4 and 5 are corrupt: skipped, reported
    assert doc["copied"] == [1, 2, 3]
    assert [item["id"] for item in doc["skipped"]] == [4, 5]
    assert doc["latest"] == {"before": None, "after": 3, "moved": True}
    for checkpoint_id in (1, 2, 3):  # bytes as they were: checksums carry over
        assert get_raw(dst, manifest_key(checkpoint_id)) == get_raw(
            src, manifest_key(checkpoint_id)
        )
        assert get_raw(dst, state_key(checkpoint_id)) == get_raw(src, state_key(checkpoint_id))
    code, listing = invoke_json("ls", dst)
    assert code == 0
    assert listing["latest"]["state"] == "ok"
    assert [row["valid"] for row in listing["checkpoints"]] == [True, True, True]
    code, doc = invoke_json("cp", src, dst, "--id", "1", "--id", "3")
    assert (code, doc["copied"], doc["already_present"]) == (0, [], [1, 3])
    assert doc["latest"]["moved"] is False


def test_cp_default_copies_the_newest_valid(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    damaged_store(src)
    result = invoke("cp", src, dst)
    assert result.exit_code == 0
    assert "copied and validated: 3" in result.stdout
    assert pointer(dst) == name(3)
    code, doc = invoke_json("cp", src, dst, "--id", "5")
    assert code == 1
    assert doc["skipped"] == [{"id": 5, "reason": "sidecar checksum mismatch"}]
    save(dst, 7)
    code, doc = invoke_json("cp", src, dst, "--id", "1")
    assert code == 0
    assert doc["latest"] == {"before": 7, "after": 7, "moved": False}
    assert pointer(dst) == name(7)  # never backward


def test_cp_resumes_an_interrupted_copy_and_refuses_a_different_checkpoint(
    tmp_path: Path,
) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    save(src, 1, 2)
    put_raw(dst, state_key(1), get_raw(src, state_key(1)))  # crashed before the manifest
    code, doc = invoke_json("cp", src, dst, "--id", "1")
    assert (code, doc["copied"]) == (0, [1])
    put_raw(dst, state_key(2), b"another writer's sidecar")
    result = invoke("cp", src, dst, "--id", "2")
    assert result.exit_code == 3
    assert "different checkpoint 2" in one_error_line(result)
    assert not open_backend(dst).exists(manifest_key(2))
    other = str(tmp_path / "other")
    save(other, 1)  # same id, another writer's commit
    result = invoke("cp", other, dst, "--id", "1")
    assert result.exit_code == 3


def test_cp_usage(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    (tmp_path / "src").mkdir()
    result = invoke("cp", src, dst)
    assert result.exit_code == 1
    assert "no valid checkpoint" in one_error_line(result)
    result = invoke("cp", src, dst, "--id", "1", "--all")
    assert result.exit_code == 2


# -- probe and unsupported stores ------------------------------------------------------------


@pytest.fixture
def unsupported_store(lax_url: str) -> str:
    """A store that ignores preconditions (``lax://…``, see ``tests.store_helpers``)."""
    return lax_url


def test_probe(url: str) -> None:
    code, doc = invoke_json("probe", url)
    assert code == 0
    assert doc["ok"]
    assert doc["create_if_absent"]
    assert doc["compare_and_swap"]
    assert doc["conditional_delete"]
    assert doc["failures"] == []
    assert snapshot(url) == {}  # the probe key is removed
    assert "the store can fence concurrent writers" in invoke("probe", url).stdout


def test_unsupported_store_is_exit_4(unsupported_store: str) -> None:
    code, doc = invoke_json("probe", unsupported_store)
    assert code == 4
    assert not doc["ok"]
    assert len(doc["failures"]) == 3
    human = invoke("probe", unsupported_store)
    assert human.exit_code == 4
    assert "NO" in human.stdout
    backend = open_backend(unsupported_store, verify_fencing=False)
    backend.put(manifest_key(1), b"{}")  # corrupt
    backend.put(LATEST, name(1).encode())
    result = invoke("recover", unsupported_store, "--repair")
    assert result.exit_code == 1  # nothing valid: repair does not write
    backend.put(manifest_key(2), valid_manifest_bytes(2))
    result = invoke("recover", unsupported_store, "--repair")
    assert result.exit_code == 4
    assert "store unsupported" in one_error_line(result)
    assert backend.get(LATEST)[0] == name(1).encode()  # refused before writing
    backend.close()


def valid_manifest_bytes(checkpoint_id: int) -> bytes:
    """Bytes of a valid state-less manifest, made on a proper in-memory store."""
    url = f"memory://manifest-maker-{os.getpid()}-{checkpoint_id}"
    store = CheckpointStore(url)
    store.save(CheckpointManifest(checkpoint_id=checkpoint_id, epoch=1))
    store.close()
    data = get_raw(url, manifest_key(checkpoint_id))
    MemoryTransport.discard(url.removeprefix("memory://"))
    return data


# -- options, errors, output -----------------------------------------------------------------


def test_parse_storage_options() -> None:
    assert cli.parse_storage_options(
        [
            "anon=true",
            "endpoint_url=http://127.0.0.1:9000",
            "client_kwargs.region_name=eu-west-1",
            "client_kwargs.verify=false",
            'token="123"',
            "retries=5",
        ]
    ) == {
        "anon": True,
        "endpoint_url": "http://127.0.0.1:9000",
        "client_kwargs": {"region_name": "eu-west-1", "verify": False},
        "token": "123",
        "retries": 5,
    }
    for bad in ("novalue", "=x", "a.=1"):
        with pytest.raises(ValueError, match="storage-option"):
            cli.parse_storage_options([bad])


def test_bad_storage_option_and_bad_url_are_usage_errors(tmp_path: Path) -> None:
    result = invoke("ls", str(tmp_path), "-o", "novalue")
    assert result.exit_code == 2
    assert "KEY=VALUE" in one_error_line(result)
    result = invoke("ls", "ftp://example.com/x")
    assert result.exit_code == 2
    assert "unsupported store URL" in one_error_line(result)
    result = invoke("ls", "s3:///no-bucket")
    assert result.exit_code == 2


def test_storage_failure_is_exit_5_and_never_prints_credentials(moto_server: str) -> None:
    secret = "SUPERSECRET-do-not-print-1234"
    result = invoke(
        "ls",
        "s3://no-such-bucket-objstore/x",
        "-o",
        "key=testing",
        "-o",
        f"secret={secret}",
    )
    assert result.exit_code == 5
    line = one_error_line(result)
    assert "NoSuchBucket" in line or "bucket" in line.lower()
    assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FencedError("k", checkpoint_id=1, epoch=1, winner_epoch=2), 3),
        (CheckpointConflict("k", checkpoint_id=1, epoch=1, winner_epoch=1), 3),
        (PreconditionFailedError("k"), 3),
        (AlreadyExistsError("k"), 3),
        (NotSupportedError("no CAS"), 4),
        (CorruptionError("k", "bad"), 1),
        (NotFoundError("k"), 1),
        (TransientStorageError("503"), 5),
        (ValueError("bad"), 2),
        (PermissionError("denied"), 5),
        (cli.CliError(cli.ExitCode.CONFLICT, "x"), 3),
    ],
)
def test_error_classification(error: Exception, code: int) -> None:
    classified = cli.classify_error(error)
    assert classified is not None
    assert classified[0] == code


def test_bugs_are_not_swallowed() -> None:
    assert cli.classify_error(RuntimeError("a bug")) is None


def test_progress_bar_only_on_a_terminal() -> None:
    assert _output.want_progress(json_output=True) is False
    quiet = _output.ByteProgress(False)
    with quiet:
        quiet.start("x", 10)
        quiet.advance(5)
    assert not quiet.enabled
    console = Console(force_terminal=True, width=80, record=True)
    bar = _output.ByteProgress(True, console=console)
    with bar:
        bar.start("verifying", 100)
        bar.advance(100)
    assert bar.enabled
    assert "verifying" in console.export_text()


# -- a real process --------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "objstore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=False,
    )


def test_python_dash_m_objstore_in_a_subprocess(url: str) -> None:
    damaged_store(url)
    done = _run("recover", url, "--repair", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["chosen_id"] == 3
    assert doc["repair"]["applied"]
    assert pointer(url) == name(3)
    done = _run("ls", url, "--json")
    assert done.returncode == 0  # the repair quarantined the corrupt 4 and 5
    assert json.loads(done.stdout)["latest"]["state"] == "ok"


def test_usage_errors_are_one_line_in_a_real_process(tmp_path: Path) -> None:
    done = _run("prune", str(tmp_path), "--keep", "0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "objstore: error: Invalid value for '--keep': Input should be greater than or "
        "equal to 1 (see 'objstore prune --help')"
    ]
    done = _run("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("objstore ")
