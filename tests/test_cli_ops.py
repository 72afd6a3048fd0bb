"""What the ``objstore`` command tells operators and scripts (issue 9): missing stores, exit
codes, output that stays truthful on narrow terminals and in pipes, ``objstore rm``, shell
completion and the version.

Helpers and the S3/GCS fixtures are shared with ``tests/test_cli.py``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import pickle
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from objstore import CheckpointManifest, CheckpointStore, cli, open_backend
from objstore.backends import MemoryTransport
from objstore.checkpoint import (
    LATEST,
    AsyncCheckpointStore,
    Removal,
    RemovalRefused,
    manifest_key,
    remove_checkpoints,
    remove_checkpoints_async,
    state_key,
)
from objstore.cli import _list, _output
from objstore.codec import parse_json
from objstore.errors import (
    CorruptionError,
    NotFoundError,
    ObjstoreError,
    StoreNotFoundError,
    TransientStorageError,
)
from objstore.testing import SimulatedCrash
from tests.checkpoint_helpers import faulty_store
from tests.conftest import make_store_url
from tests.test_cli import (
    damaged_store,
    flip_state_byte,
    invoke,
    invoke_json,
    name,
    one_error_line,
    pointer,
    put_raw,
    runner,
    save,
    snapshot,
)

# -- 1. a missing bucket is a storage error (5), never "nothing valid" (1) ----------------------

READ_ONLY = [
    ["ls"],
    ["show"],
    ["verify"],
    ["recover"],
    ["prune", "--keep", "1"],
    ["gc"],
]


def test_missing_gcs_bucket_exits_5_like_s3(gcs_emulator: object, moto_server: str) -> None:
    for url in ("gs://no-such-bucket-objstore/root", "s3://no-such-bucket-objstore/root"):
        for command in READ_ONLY:
            result = invoke(command[0], url, *command[1:])
            assert result.exit_code == 5, (url, command, result.stderr)
            assert "bucket" in one_error_line(result).lower()
        result = invoke("cp", url, "memory://cp-target")
        assert result.exit_code == 5, result.stderr


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_a_missing_bucket_is_a_typed_error_in_the_library(
    scheme: str, gcs_emulator: object, moto_server: str, gs_url: str, s3_url: str
) -> None:
    url = f"{scheme}://no-such-bucket-objstore/root"

    async def scenario() -> None:
        store = AsyncCheckpointStore(url)
        try:
            with pytest.raises(StoreNotFoundError) as caught:
                await store.load_latest()  # a fresh start here would lose everything
            assert not isinstance(caught.value, FileNotFoundError)
            assert "no-such-bucket-objstore" in str(caught.value)
            with pytest.raises(StoreNotFoundError):
                await store.backend.get("checkpoints/latest.txt")
            with pytest.raises(StoreNotFoundError):
                await store.backend.put_if_absent("x", b"1")
            with pytest.raises(StoreNotFoundError):
                await store.backend.check_root()
        finally:
            await store.close()
        existing = AsyncCheckpointStore(gs_url if scheme == "gs" else s3_url)
        try:
            await existing.backend.check_root()  # an empty prefix of a bucket is a store
            with pytest.raises(NotFoundError):  # a missing object in a bucket: still absent
                await existing.backend.get("nothing-here")
            assert await existing.load_latest() is None
        finally:
            await existing.close()

    asyncio.run(scenario())


def test_gcs_tells_a_missing_object_from_a_missing_bucket_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One bucket GET after an object's 404 decides; a 503 there is retried, never read as
    either answer; once the bucket was seen, a 404 costs nothing more."""
    from objstore.backends import _gcs

    transport = _gcs.GCSTransport("some-bucket", "root")
    bucket_answers = [503, 200]
    sent: list[str] = []

    async def fake_request(what: str, method: str, path: str, **_: object) -> _gcs._Response:
        sent.append(what)
        status = bucket_answers.pop(0) if what == "bucket GET" else 404
        return _gcs._Response(status, {}, b"{}", path)

    monkeypatch.setattr(transport, "_request", fake_request)

    async def scenario() -> None:
        with pytest.raises(TransientStorageError):
            await transport.get("k")
        with pytest.raises(NotFoundError):
            await transport.get("k")
        with pytest.raises(NotFoundError):
            await transport.get("k")

    asyncio.run(scenario())
    assert sent == ["GET", "bucket GET", "GET", "bucket GET", "GET"]


def test_store_not_found_survives_pickling() -> None:
    error = StoreNotFoundError("file:///x", "the store file:///x does not exist")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.url, str(copy)) == (StoreNotFoundError, "file:///x", str(error))
    assert isinstance(copy, ObjstoreError)


# -- 2. a local store that does not exist is not an empty store -------------------------------


def test_read_only_commands_on_a_missing_directory_exit_5(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for command in READ_ONLY:
        result = invoke(command[0], str(missing), *command[1:])
        assert result.exit_code == 5, (command, result.stdout, result.stderr)
        line = one_error_line(result)
        assert "does not exist" in line
        assert str(missing) in line
    result = invoke("cp", str(missing), str(tmp_path / "dst"))
    assert result.exit_code == 5
    assert "does not exist" in one_error_line(result)
    assert not missing.exists()  # nothing was created by looking
    assert not (tmp_path / "dst").exists()
    result = invoke("recover", f"file://{missing}", "--json")
    assert (result.exit_code, result.stdout) == (5, "")  # never "a restart starts fresh"


def test_paths_that_can_never_be_a_store_exit_2(tmp_path: Path) -> None:
    regular = tmp_path / "a-file"
    regular.write_text("not a directory")
    for path in (str(regular), str(regular / "store"), "/dev/null", "/dev/null/store"):
        for command in READ_ONLY:
            result = invoke(command[0], path, *command[1:])
            assert result.exit_code == 2, (path, command, result.stderr)
            assert "can never hold a store" in one_error_line(result)
    src = str(tmp_path / "src")
    save(src, 1)
    result = invoke("cp", src, str(regular / "dst"))  # a writer cannot create a store there
    assert result.exit_code == 2, result.stderr
    assert "can never hold a store" in one_error_line(result)
    assert regular.read_text() == "not a directory"


def test_writers_still_create_a_new_store(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    save(src, 1)  # the library's writer creates the directory
    assert invoke("ls", src).exit_code == 0
    result = invoke("cp", src, str(tmp_path / "new" / "dst"))  # the copy's destination too
    assert result.exit_code == 0, result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    code, doc = invoke_json("ls", str(empty))  # an existing, empty directory is an empty store
    assert (code, doc["checkpoints"]) == (1, [])


def test_check_root_in_the_library(tmp_path: Path) -> None:
    missing = open_backend(tmp_path / "missing")
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        missing.check_root()
    regular = tmp_path / "file"
    regular.write_bytes(b"x")
    for path in (regular, regular / "below"):
        with pytest.raises(ValueError, match="can never hold a store"):
            open_backend(path).check_root()
    open_backend(tmp_path).check_root()
    open_backend("memory://check-root").check_root()
    assert not (tmp_path / "missing").exists()


# -- 7. exit codes and messages ---------------------------------------------------------------


@pytest.mark.parametrize(
    "bucket", ["Bad!Bucket", "ab", "-leading-dash", "trailing-dash-", "a..b", "a" * 256, "x y"]
)
def test_an_invalid_s3_bucket_name_is_a_usage_error(bucket: str, moto_server: str) -> None:
    result = invoke("ls", f"s3://{bucket}/root")
    assert result.exit_code == 2, result.stderr
    assert "bucket name" in one_error_line(result)


def test_an_invalid_gcs_bucket_name_is_a_usage_error(gcs_emulator: object) -> None:
    result = invoke("ls", "gs://Bad!Bucket/root")
    assert result.exit_code == 2, result.stderr
    assert "bucket name" in one_error_line(result)


def test_a_valid_unusual_s3_bucket_name_is_accepted(moto_server: str) -> None:
    result = invoke("ls", "s3://my.bucket-1/root")  # valid, just not there
    assert result.exit_code == 5


# -- 5. prune and gc: ranges for people, full lists for scripts, planned apart from deleted ---


def test_ranges_text() -> None:
    assert _output.ranges_text([]) == "-"
    assert _output.ranges_text([7]) == "7"
    assert _output.ranges_text([1, 2]) == "1, 2"
    assert _output.ranges_text([*range(1, 9999), 10_000]) == "1\u20139,998, 10,000"
    assert _output.ranges_text([5, 1, 3, 2, 9, 10, 11]) == "1\u20133, 5, 9\u201311"


def test_prune_summarises_ranges_and_names_planned_apart_from_deleted() -> None:
    url = f"memory://prune-ranges-{os.getpid()}"
    store = CheckpointStore(url)
    for checkpoint_id in [*range(1, 1200), 1201, 1202]:
        store.save(CheckpointManifest(checkpoint_id=checkpoint_id, epoch=1))
    store.close()
    try:
        code, doc = invoke_json("prune", url, "--keep", "1", "--dry-run")
        doomed = [*range(1, 1200), 1201]
        assert code == 0
        assert (doc["planned"], doc["deleted"], doc["deleted_count"]) == (doomed, [], 0)
        human = invoke("prune", url, "--keep", "1", "--dry-run")
        assert "would delete 1,200 checkpoints: 1\u20131,199, 1,201" in human.stdout
        assert max(len(line) for line in human.stdout.splitlines()) < 120
        human = invoke("prune", url, "--keep", "1")
        assert human.exit_code == 0
        assert "deleted 1,200 checkpoints: 1\u20131,199, 1,201" in human.stdout
        assert "kept 1: 1,202" in human.stdout
        code, doc = invoke_json("ls", url)
        assert [row["id"] for row in doc["checkpoints"]] == [1202]
    finally:
        MemoryTransport.discard(url.removeprefix("memory://"))


def test_prune_json_lists_what_was_deleted(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1, 2, 3)
    code, doc = invoke_json("prune", url, "--keep", "1")
    assert (code, doc["planned"], doc["deleted"], doc["deleted_count"]) == (0, [1, 2], [1, 2], 2)
    assert doc["kept"] == [3]


def test_gc_json_names_planned_apart_from_deleted(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1)
    put_raw(url, state_key(2), b"lost writer")
    save(url, 3)
    code, doc = invoke_json("gc", url, "--dry-run")
    assert (code, doc["planned"], doc["deleted"], doc["deleted_count"]) == (0, [2], [], 0)
    assert "would delete 1 orphaned" in invoke("gc", url, "--dry-run").stdout
    code, doc = invoke_json("gc", url)
    assert (code, doc["planned"], doc["deleted"], doc["deleted_count"]) == (0, [2], [2], 1)


# -- 6. a narrow terminal never loses the status ---------------------------------------------


@pytest.mark.parametrize("width", [60, 40, 80, 200])
def test_ls_keeps_the_status_on_a_narrow_terminal(width: int, tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    damaged_store(url)
    code, doc = invoke_json("ls", url)
    result = runner.invoke(cli.app, ["ls", url], env={"COLUMNS": str(width)})
    assert result.exit_code == code == 1
    lines = result.stdout.splitlines()
    table = [line for line in lines if "│" in line or "┃" in line]  # text lines soft-wrap
    assert table
    assert max(len(line) for line in table) <= width
    statuses = {"pending_sinks": "valid", "corrupt": "corrupt", "orphan": "orphan"}
    for row in doc["checkpoints"]:
        first = [line for line in lines if _first_number(line) == str(row["id"])]
        assert first, (row["id"], result.stdout)
        assert statuses.get(row["status"], row["status"]) in first[0], (row["id"], result.stdout)
    console = Console(width=60, record=True)
    _list.render_ls(console, doc)
    assert "corrupt" in console.export_text()


def _first_number(line: str) -> str | None:
    """The first cell of a table line that is a number (the id column)."""
    for token in line.replace("│", " ").split():
        if token.isdigit():
            return token
        if token != "→":
            return None
    return None


# -- 7. what operators and scripts were told wrong --------------------------------------------


def test_ls_into_a_closed_pipe_exits_with_the_stores_code(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1, 2)
    for extra in ([], ["--json"]):
        process = subprocess.Popen(
            [sys.executable, "-m", "objstore", "ls", url, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()  # like `| head` that has already read what it wanted
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == 0, stderr
        assert stderr == ""


def test_ls_into_head_in_a_shell(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, *range(1, 30))
    done = subprocess.run(
        ["bash", "-c", f'set -o pipefail; "{sys.executable}" -m objstore ls "{url}" | head -n 1'],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Store ")


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--events", "99999999999999999999"],
        ["demo", "--events", "100", "--every", "99999999999999999999"],
        ["demo", "--events", "10000000", "--every", "1"],  # ten million checkpoints
        ["demo", "--seed", "-1"],
        ["demo", "--seed", str(2**64)],
        ["prune", "MISSING", "--keep", str(2**64)],
    ],
)
def test_numeric_options_are_range_checked(args: list[str], tmp_path: Path) -> None:
    args = [str(tmp_path / "store") if arg == "MISSING" else arg for arg in args]
    done = subprocess.run(
        [sys.executable, "-m", "objstore", *args, str(tmp_path / "demo")][: len(args) + 3],
        capture_output=True,
        text=True,
        timeout=60,  # unchecked, the demo would run "forever"
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "demo").exists()


def test_durations_out_of_range_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    result = invoke("gc", str(tmp_path / "store"), "--grace", "9" * 400 + "s", "--json")
    assert result.exit_code == 2, result.stdout  # never "grace_seconds": Infinity
    assert "out of range" in one_error_line(result)


def test_json_errors_never_say_at_at(tmp_path: Path) -> None:
    with pytest.raises(CorruptionError) as caught:
        parse_json(b'{"a": "unterminated', key="k")
    assert " at at " not in str(caught.value)
    assert "at character" in str(caught.value)
    url = str(tmp_path / "store")
    save(url, 1, 2)
    put_raw(url, manifest_key(2), b'"unterminated')
    _, doc = invoke_json("ls", url)
    assert "at at" not in doc["checkpoints"][1]["reason"]


def test_show_never_prints_none(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1)  # no watermark
    result = invoke("show", url)
    assert result.exit_code == 0
    assert "None" not in result.stdout
    assert re.search(r"watermark\s+-", result.stdout)


def test_the_arrow_legend_only_with_an_arrow(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1, 2)
    assert "(→ in the table)" in invoke("ls", url).stdout
    put_raw(url, LATEST, name(9).encode())  # dangling: no row has the arrow
    result = invoke("ls", url)
    assert "→" not in result.stdout
    backend = open_backend(url)
    backend.delete(LATEST)
    backend.close()
    result = invoke("ls", url)
    assert "latest.txt does not exist" in result.stdout
    assert "→" not in result.stdout


# -- 8. objstore rm and remove_checkpoints -----------------------------------------------------


@pytest.fixture(params=["memory", "file", "s3"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store on memory, a local directory and moto S3."""
    url = make_store_url(request.param, request, tmp_path)
    yield url
    if url.startswith("memory://"):
        MemoryTransport.discard(url.removeprefix("memory://"))


def _keys(url: str, checkpoint_id: int) -> set[str]:
    return {key for key in snapshot(url) if f"{checkpoint_id:020d}" in key}


def test_remove_a_corrupt_newest_checkpoint(any_url: str) -> None:
    save(any_url, 1, 2, 3)
    flip_state_byte(any_url, 3)  # the newest is corrupt; latest.txt names it
    store = CheckpointStore(any_url)
    try:
        before = snapshot(any_url)
        plan = remove_checkpoints(store, [3], dry_run=True)
        assert (plan.planned, plan.removed, plan.refused) == ((3,), (), None)
        assert (plan.newest_valid_id, plan.pointer_before.checkpoint_id) == (2, 3)
        assert plan.pointer_repair is None
        assert snapshot(any_url) == before  # a dry run changes nothing
        done = remove_checkpoints(store, [3])
        assert (done.planned, done.removed, done.absent) == ((3,), (3,), ())
        assert done.pointer_repair is not None
        assert (done.pointer_repair.action, done.pointer_repair.target_id) == ("backward", 2)
        assert _keys(any_url, 3) == set()
        assert pointer(any_url) == name(2)
        loaded = store.load_latest()
        assert loaded is not None
        assert loaded.checkpoint_id == 2
    finally:
        store.close()
    code, doc = invoke_json("ls", any_url)
    assert (code, doc["latest"]["state"]) == (0, "ok")  # ls is healthy again


def test_remove_refuses_the_newest_valid_checkpoint_unless_forced(any_url: str) -> None:
    save(any_url, 1, 2, 3)
    store = CheckpointStore(any_url)
    try:
        before = snapshot(any_url)
        plan = remove_checkpoints(store, [2, 3], dry_run=True)
        assert plan.refused is not None
        assert "newest valid checkpoint 3" in plan.refused
        with pytest.raises(RemovalRefused, match="newest valid checkpoint 3") as caught:
            remove_checkpoints(store, [2, 3])
        assert isinstance(caught.value, ValueError)
        assert caught.value.removal.planned == (2, 3)
        assert pickle.loads(pickle.dumps(caught.value)).removal == caught.value.removal
        assert snapshot(any_url) == before  # refused: nothing deleted
        done = remove_checkpoints(store, [2, 3], force=True)
        assert done.removed == (2, 3)
        assert pointer(any_url) == name(1)  # moved backward off the removed checkpoint
        assert [cid for cid, _ in store.list()] == [1]
        everything = remove_checkpoints(store, [1], force=True)
        assert everything.removed == (1,)
        assert everything.pointer_repair is not None
        assert everything.pointer_repair.action == "none"  # nothing valid to point at
        assert store.load_latest() is None
    finally:
        store.close()


def test_remove_refuses_an_uncommitted_checkpoint_unless_forced(any_url: str) -> None:
    save(any_url, 1)
    put_raw(any_url, state_key(2), b"a live writer's sidecar?")
    store = CheckpointStore(any_url)
    try:
        with pytest.raises(RemovalRefused, match="not committed"):
            remove_checkpoints(store, [2])
        assert _keys(any_url, 2) == {state_key(2)}
        assert remove_checkpoints(store, [2], force=True).removed == (2,)
        assert _keys(any_url, 2) == set()
        absent = remove_checkpoints(store, [7, 8])
        assert (absent.planned, absent.absent, absent.removed) == ((), (7, 8), ())
        with pytest.raises(ValueError, match="checkpoint_id"):
            remove_checkpoints(store, [0])
    finally:
        store.close()


def test_remove_deletes_the_manifest_before_the_sidecar(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1, 2, 3)
    store, faults = faulty_store(url)
    try:
        faults.crash_after("delete", 1)  # dies right after the first delete
        with pytest.raises(SimulatedCrash):
            remove_checkpoints(store, [2])
    finally:
        store.close()
    assert _keys(url, 2) == {state_key(2)}  # an orphan for gc, never a sidecar-less commit
    assert _remove_on(url, [2], force=True).removed == (2,)


def _remove_on(url: str, ids: list[int], **options: bool) -> Removal:
    store = CheckpointStore(url)
    try:
        return remove_checkpoints(store, ids, **options)
    finally:
        store.close()


def test_remove_checkpoints_async(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1, 2)

    async def scenario() -> Removal:
        store = AsyncCheckpointStore(url)
        try:
            return await remove_checkpoints_async(store, [1])
        finally:
            await store.close()

    assert asyncio.run(scenario()).removed == (1,)
    assert _keys(url, 1) == set()


def test_rm_command_is_a_dry_run_unless_yes(any_url: str) -> None:
    save(any_url, 1, 2, 3)
    flip_state_byte(any_url, 3)
    before = snapshot(any_url)
    result = invoke("rm", any_url, "3")
    assert result.exit_code == 0, result.stderr
    assert "dry run: would remove 1 checkpoint: 3" in result.stdout
    assert "--yes" in result.stdout
    assert "latest.txt would move" in result.stdout
    assert snapshot(any_url) == before
    code, doc = invoke_json("rm", any_url, "3", "checkpoint_00000000000000000009", "--yes")
    assert code == 0
    assert doc["dry_run"] is False
    assert (doc["requested"], doc["planned"], doc["removed"], doc["absent"]) == (
        [3, 9],
        [3],
        [3],
        [9],
    )
    assert doc["latest"] == {"before": 3, "after": 2, "moved": True}
    assert pointer(any_url) == name(2)
    assert invoke("ls", any_url).exit_code == 0


def test_rm_command_refusals_and_usage(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    save(url, 1, 2)
    before = snapshot(url)
    for extra in ([], ["--yes"]):
        result = invoke("rm", url, "2", *extra)
        assert result.exit_code == 2, result.stdout
        line = one_error_line(result)
        assert "newest valid checkpoint 2" in line
        assert "--force" in line
    code, doc = invoke_json("rm", url, "2")
    assert code == 2
    assert doc["refused"]
    assert snapshot(url) == before
    result = invoke("rm", url, "2", "--yes", "--force")
    assert result.exit_code == 0
    assert "removed 1 checkpoint: 2" in result.stdout
    assert pointer(url) == name(1)
    for bad in (["rm", url], ["rm", url, "zero"], ["rm", url, "0"]):
        assert invoke(*bad).exit_code == 2
    assert invoke("rm", str(tmp_path / "missing"), "1").exit_code == 5


# -- 9. shell completion, --version ------------------------------------------------------------


def _objstore(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "objstore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env},
        check=False,
    )


def test_version_comes_from_the_package_metadata() -> None:
    done = _objstore("--version")
    assert done.returncode == 0
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert done.stdout == f"objstore {pyproject['project']['version']}\n"
    assert done.stdout == f"objstore {importlib.metadata.version('objstore')}\n"


def test_shell_completion_options_are_offered() -> None:
    help_text = invoke("--help").stdout
    assert "--install-completion" in help_text
    assert "--show-completion" in help_text
    script = _objstore(
        "--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"
    )
    assert script.returncode == 0, script.stderr
    assert "_OBJSTORE_COMPLETE" in script.stdout
    assert "complete " in script.stdout


def test_completion_completes_commands_and_options() -> None:
    done = _objstore(_OBJSTORE_COMPLETE="complete_bash", COMP_WORDS="objstore r", COMP_CWORD="1")
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {"recover", "rm"}
    done = _objstore(
        _OBJSTORE_COMPLETE="complete_bash", COMP_WORDS="objstore rm x --f", COMP_CWORD="3"
    )
    assert done.stdout.split() == ["--force"]
