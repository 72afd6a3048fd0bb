"""What the ``objstore`` command tells operators and scripts (issue 9): missing stores, exit
codes, output that stays truthful on narrow terminals and in pipes, ``objstore rm``, shell
completion and the version.

Helpers and the S3/GCS fixtures are shared with ``tests/test_cli.py``.
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest

from objstore import open_backend
from objstore.checkpoint import AsyncCheckpointStore
from objstore.errors import NotFoundError, ObjstoreError, StoreNotFoundError
from tests.test_cli import (
    invoke,
    invoke_json,
    one_error_line,
    save,
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
