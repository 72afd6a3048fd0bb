"""The CLI on incremental checkpoints (issue 12): ``ls``/``verify``/``show`` report exclusive
vs shared bytes, ``gc`` collects unreferenced shared objects, ``cp`` copies a checkpoint with
everything it references (nothing twice) and verifies it, ``rm`` and ``recover --repair``
never delete shared objects. On a local directory and moto S3.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from objstore import CheckpointManifest, CheckpointStore, open_backend
from objstore.checkpoint import _incremental
from objstore.checkpoint._shared import SHARED, is_shared_key
from tests.test_cli import invoke, invoke_json

CHUNK = 2048


@pytest.fixture(params=["file", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("s3_url"))


def _state(checkpoint_id: int) -> dict[str, bytes]:
    chunks = {f"op-{i}": random.Random(i).randbytes(CHUNK) for i in range(4)}
    chunks["op-0"] = random.Random(100 + checkpoint_id).randbytes(CHUNK)
    return chunks


def _save(url: str, *ids: int) -> None:
    store = CheckpointStore(url)
    for checkpoint_id in ids:
        store.save_incremental(CheckpointManifest(checkpoint_id, 1), _state(checkpoint_id))
    store.close()


def _shared(url: str) -> set[str]:
    backend = open_backend(url, verify_fencing=False)
    try:
        return {info.key for info in backend.list(SHARED) if is_shared_key(info.key)}
    finally:
        backend.close()


def test_ls_verify_show_report_shared_and_exclusive_bytes(url: str) -> None:
    _save(url, 1, 2, 3)
    code, listing = invoke_json("ls", url)
    assert code == 0
    rows = {row["id"]: row for row in listing["checkpoints"]}
    for checkpoint_id in (1, 2, 3):
        row = rows[checkpoint_id]
        assert row["valid"]
        assert row["exclusive_bytes"] == 0  # no state.bin: everything is shared
        assert row["shared_bytes"] >= 4 * CHUNK
        # three of its four chunks are the same objects as its neighbours'
        assert 3 * CHUNK <= row["shared_with_others_bytes"] < row["shared_bytes"]
    code, verified = invoke_json("verify", url, "--all")
    assert code == 0
    assert [row["shared_bytes"] for row in verified["checkpoints"]] == [
        rows[i]["shared_bytes"] for i in (1, 2, 3)
    ]
    code, shown = invoke_json("show", url, "2")
    assert code == 0
    assert shown["sizes"]["shared_bytes"] == rows[2]["shared_bytes"]
    assert shown["manifest"]["format_version"] == 2
    human = invoke("ls", url)
    assert human.exit_code == 0
    assert "shared" in human.stdout


def test_verify_reports_a_missing_shared_object(url: str) -> None:
    _save(url, 1)
    key = sorted(_shared(url))[0]
    backend = open_backend(url, verify_fencing=False)
    backend.delete(key)
    backend.close()
    code, verified = invoke_json("verify", url, "1")
    assert code == 1
    assert "missing" in verified["checkpoints"][0]["issues"][0]


def test_gc_collects_what_no_retained_checkpoint_references(url: str) -> None:
    _save(url, 1, 2, 3)
    CheckpointStore(url).prune(1)
    before = _shared(url)
    code, dry = invoke_json("gc", url, "--grace", "0s", "--dry-run")
    assert code == 0
    assert len(dry["shared"]["planned"]) == 2  # op-0 of checkpoints 1 and 2
    assert _shared(url) == before
    code, done = invoke_json("gc", url, "--grace", "0s")
    assert code == 0
    assert sorted(done["shared"]["deleted"]) == sorted(dry["shared"]["planned"])
    assert done["shared"]["reclaimed_bytes"] >= 2 * CHUNK
    store = CheckpointStore(url)
    assert _shared(url) == _incremental.refs_of(store.load_by_id(3))
    assert store.load_state(3) == _state(3)


def test_rm_and_repair_never_delete_shared_objects(url: str) -> None:
    _save(url, 1, 2, 3)
    before = _shared(url)
    result = invoke("rm", url, "1", "--yes")
    assert result.exit_code == 0, result.output
    assert CheckpointStore(url).load_by_id(1) is None
    assert _shared(url) == before
    result = invoke("recover", url, "--repair")
    assert result.exit_code == 0, result.output
    assert _shared(url) == before
    assert CheckpointStore(url).load_state(3) == _state(3)


def test_cp_copies_everything_referenced_once_and_verifies(url: str, tmp_path: Path) -> None:
    _save(url, 1, 2, 3)
    destination = str(tmp_path / "copy")
    code, doc = invoke_json("cp", url, destination, "--all")
    assert code == 0, doc
    assert doc["copied"] == [1, 2, 3]
    copy = CheckpointStore(destination)
    needed: set[str] = set()
    for checkpoint_id in (1, 2, 3):
        assert copy.validate_checkpoint(checkpoint_id).valid
        assert copy.load_state(checkpoint_id) == _state(checkpoint_id)
        needed |= _incremental.refs_of(copy.load_by_id(checkpoint_id))
    # 3 checkpoints of 4 chunks sharing 3: 6 distinct chunks, each stored once
    assert len(_shared(destination)) == len(needed) == 6
    code, again = invoke_json("cp", url, destination, "--all")
    assert (code, again["copied"], again["already_present"]) == (0, [], [1, 2, 3])
    assert len(_shared(destination)) == 6
    CheckpointStore(url).prune(1)  # the copy is self-contained: the source's gc changes nothing
    invoke_json("gc", url, "--grace", "0s")
    assert copy.load_state(1) == _state(1)
