"""Maintenance operations on every backend: reading and repairing ``latest.txt``, validating a
checkpoint with ranged reads, and copying one checkpoint between stores.

Each test runs on memory, a local directory, moto S3 and the GCS emulator (``store_url``).
Damage is done around objstore, with raw backend writes, as it happens in the field.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from objstore import (
    AsyncCheckpointStore,
    CheckpointConflict,
    CheckpointManifest,
    CheckpointStore,
    CorruptionError,
    NotFoundError,
    Pointer,
    PreconditionFailedError,
    RecoveryReport,
    copy_checkpoint,
    copy_checkpoint_async,
    open_backend,
    plan_pointer_repair,
    read_pointer,
    read_pointer_async,
    repair_pointer,
    repair_pointer_async,
    validate_checkpoint_streaming,
)
from objstore.backends import AsyncBackend, Backend, MemoryTransport, open_transport
from objstore.backends._s3 import MIN_PART_SIZE
from objstore.checkpoint import LATEST, manifest_key, state_key
from objstore.checkpoint._layout import parse_pointer
from objstore.checkpoint._manifest import decode_manifest, encode_manifest
from objstore.testing import FaultInjectingTransport
from tests.checkpoint_helpers import faulty_store, joined_state, manifest, state_for

# -- helpers ---------------------------------------------------------------------------------

RANGE = 16
"""A range size far below a test sidecar's (~100 bytes), so every read path takes many."""


@pytest.fixture
def source() -> Iterator[str]:
    """A fresh in-memory store to copy from."""
    name = f"maintenance-src-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    MemoryTransport.discard(name)


def name(checkpoint_id: int) -> str:
    return f"checkpoint_{checkpoint_id:020d}"


_raw_backends: dict[str, Backend] = {}


@pytest.fixture(autouse=True)
def _close_raw_backends() -> Iterator[None]:
    """Close the backends :func:`raw` opened during the test."""
    yield
    while _raw_backends:
        _raw_backends.popitem()[1].close()


def raw(url: str) -> Backend:
    """One backend per store and test, to read and write around objstore."""
    if url not in _raw_backends:
        _raw_backends[url] = open_backend(url)
    return _raw_backends[url]


def save(url: str, *ids: int, state: bool = True, epoch: int = 1) -> None:
    """Commit checkpoints ``ids`` (with :func:`state_for` state unless ``state`` is off), as
    a writer of its own would (its store object is fresh; its connection is shared)."""
    store = CheckpointStore(raw(url))
    for checkpoint_id in ids:
        if state:
            store.save_with_state(manifest(checkpoint_id, epoch), state_for(checkpoint_id))
        else:
            store.save(manifest(checkpoint_id, epoch))


def get_raw(url: str, key: str) -> bytes:
    return raw(url).get(key)[0]


def put_raw(url: str, key: str, data: bytes) -> None:
    """Write around objstore: how damage happens."""
    raw(url).put(key, data)


def delete_raw(url: str, key: str) -> None:
    raw(url).delete(key)


def snapshot(url: str) -> dict[str, bytes]:
    """Every object of the store, with its bytes."""
    return {info.key: get_raw(url, info.key) for info in raw(url).list("")}


def pointer_text(url: str) -> str | None:
    """The pointer as ``checkpoint_{id:020d}`` whatever its format (else its raw text)."""
    try:
        data = get_raw(url, LATEST)
    except NotFoundError:
        return None
    record = parse_pointer(data)
    if record is None or record.checkpoint_id is None:
        return data.decode()
    return name(record.checkpoint_id)


def flip_byte(url: str, key: str, position: int = -5) -> None:
    """Corrupt an object without changing its size (only a hash can tell)."""
    data = bytearray(get_raw(url, key))
    data[position] ^= 0xFF
    put_raw(url, key, bytes(data))


def restamp_manifest(url: str, checkpoint_id: int, **changes: Any) -> None:
    """Rewrite a manifest's fields with a valid checksum: damage only deeper checks see."""
    key = manifest_key(checkpoint_id)
    stored = decode_manifest(get_raw(url, key), key=key)
    stored = dataclasses.replace(
        stored,
        manifest=dataclasses.replace(stored.manifest, **changes.pop("manifest", {})),
        **changes,
    )
    put_raw(url, key, encode_manifest(stored))


def report(chosen: int | None, skipped: dict[int, str], examined: list[int]) -> RecoveryReport:
    return RecoveryReport(chosen, None, tuple(examined), tuple(skipped.items()))


@pytest.fixture
def store(store_url: str) -> Iterator[CheckpointStore]:
    opened = CheckpointStore(store_url)
    yield opened
    opened.close()


# -- reading the pointer ---------------------------------------------------------------------


def test_read_pointer_missing_set_and_garbage(store_url: str, store: CheckpointStore) -> None:
    missing = read_pointer(store)
    assert missing == Pointer(None, None, None)
    assert (missing.state, missing.exists) == ("missing", False)
    save(store_url, 1)
    pointer = read_pointer(store)
    assert (pointer.state, pointer.checkpoint_id, pointer.epoch, pointer.fence_epoch) == (
        "set",
        1,
        1,
        1,
    )
    assert '"checkpoint_id":1' in str(pointer.text)
    assert pointer.version
    put_raw(store_url, LATEST, b"\xff not a checkpoint")
    garbage = read_pointer(store)
    assert (garbage.state, garbage.checkpoint_id) == ("garbage", None)
    assert "not a checkpoint" in str(garbage.text)
    put_raw(store_url, LATEST, b"checkpoint_7\n")  # readers accept any width
    assert asyncio.run(_read_async(store_url)).checkpoint_id == 7


async def _read_async(url: str) -> Pointer:
    store = AsyncCheckpointStore(url)
    try:
        return await read_pointer_async(store)
    finally:
        await store.close()


# -- repairing the pointer -------------------------------------------------------------------


def test_plan_pointer_repair_rules() -> None:
    at_5 = Pointer(name(5), 5, "v")
    cases = [
        (at_5, report(5, {}, [5]), "none"),
        (at_5, report(None, {5: "bad"}, [5]), "none"),  # nothing valid: left alone
        (at_5, report(7, {}, [7, 6, 5]), "forward"),  # forward freely
        (at_5, report(3, {5: "bad", 4: "bad"}, [5, 4, 3]), "backward"),  # off an invalid one
        (at_5, report(3, {}, [4, 3]), "backward"),  # off one that does not exist
        (at_5, report(3, {4: "bad"}, [5, 4, 3]), "refuse"),  # 5 was not found invalid
        (Pointer(None, None, None), report(3, {}, [3]), "create"),
        (Pointer("zz", None, "v"), report(3, {}, [3]), "replace"),
    ]
    for pointer, walk, action in cases:
        plan = plan_pointer_repair(pointer, walk)
        assert plan.action == action, (pointer, walk)
        assert plan.needed is (action != "none")
        assert (plan.from_id, plan.target_id, plan.pointer) == (
            pointer.checkpoint_id,
            walk.chosen_id,
            pointer,
        )
        assert plan.reason
    backward = plan_pointer_repair(at_5, report(3, {5: "sidecar checksum mismatch"}, [5, 3]))
    assert "sidecar checksum mismatch" in backward.reason


def test_repair_moves_a_lagging_missing_garbage_or_dangling_pointer(
    store_url: str, store: CheckpointStore
) -> None:
    save(store_url, 1, 2, 3)
    objects = {k: v for k, v in snapshot(store_url).items() if k != LATEST}
    for damage, action in [
        (lambda: put_raw(store_url, LATEST, name(1).encode()), "forward"),
        (lambda: put_raw(store_url, LATEST, b"\xff garbage"), "replace"),
        (lambda: delete_raw(store_url, LATEST), "create"),
        (lambda: put_raw(store_url, LATEST, name(9).encode()), "backward"),
    ]:
        damage()
        plan = repair_pointer(store)
        assert (plan.action, plan.target_id) == (action, 3)
        assert pointer_text(store_url) == name(3)
        assert {k: v for k, v in snapshot(store_url).items() if k != LATEST} == objects
    assert repair_pointer(store).action == "none"


def test_repair_moves_backward_only_off_an_invalid_checkpoint(
    store_url: str, store: CheckpointStore
) -> None:
    save(store_url, 1, 2, 3)
    flip_byte(store_url, state_key(3))  # latest.txt names it
    plan = asyncio.run(_repair_async(store_url))
    assert (plan.action, plan.from_id, plan.target_id) == ("backward", 3, 2)
    assert "sidecar checksum mismatch" in plan.reason
    assert pointer_text(store_url) == name(2)
    assert repair_pointer(store).action == "none"
    assert store.load_latest() is not None


async def _repair_async(url: str) -> Any:
    store = AsyncCheckpointStore(url)
    try:
        return await repair_pointer_async(store)
    finally:
        await store.close()


def test_repair_with_nothing_valid_writes_nothing(store_url: str, store: CheckpointStore) -> None:
    save(store_url, 1)
    flip_byte(store_url, state_key(1))
    before = snapshot(store_url)
    plan = repair_pointer(store)
    assert (plan.action, plan.needed, plan.target_id) == ("none", False, None)
    assert snapshot(store_url) == before


def test_repair_refuses_and_loses_races_without_writing(
    store_url: str, store: CheckpointStore
) -> None:
    save(store_url, 1, 2)
    # A pointer naming a checkpoint the walk did not find invalid is never moved backward.
    inconsistent = plan_pointer_repair(read_pointer(store), report(1, {}, [2, 1]))
    assert inconsistent.action == "refuse"
    with pytest.raises(PreconditionFailedError, match="not moved backward"):
        repair_pointer(store, inconsistent)
    assert pointer_text(store_url) == name(2)
    # A plan made before a writer moved the pointer fails its compare-and-swap.
    put_raw(store_url, LATEST, name(1).encode())
    stale = plan_pointer_repair(read_pointer(store), store.recover_latest_validated())
    assert stale.action == "forward"
    save(store_url, 3)  # a writer commits and moves the pointer meanwhile
    with pytest.raises(PreconditionFailedError, match="changed while repairing"):
        repair_pointer(store, stale)
    assert pointer_text(store_url) == name(3)
    # The same for a pointer created after it was found missing.
    delete_raw(store_url, LATEST)
    stale = plan_pointer_repair(read_pointer(store), store.recover_latest_validated())
    assert stale.action == "create"
    put_raw(store_url, LATEST, name(2).encode())
    with pytest.raises(PreconditionFailedError):
        repair_pointer(store, stale)
    assert pointer_text(store_url) == name(2)


# -- streamed validation ---------------------------------------------------------------------


def _damage_every_way(url: str) -> dict[int, str]:
    """Checkpoints 1..10, broken in every way validation knows; the expected issues."""
    save(url, *range(1, 10))
    save(url, 10, state=False)
    flip_byte(url, state_key(2))
    put_raw(url, state_key(3), get_raw(url, state_key(3))[:-10])
    put_raw(url, state_key(4), get_raw(url, state_key(4)) + b"extra")
    delete_raw(url, state_key(5))
    put_raw(url, manifest_key(6), b"{not json")
    restamp_manifest(url, 7, state_nonce="00" * 16)  # checksum holds, header's writer differs
    stored = decode_manifest(get_raw(url, manifest_key(8)), key=manifest_key(8))
    entries = stored.manifest.operator_states
    moved = dataclasses.replace(entries[-1], offset=entries[-1].offset + 10_000)
    restamp_manifest(url, 8, manifest={"operator_states": (*entries[:-1], moved)})
    flip_byte(url, state_key(9), position=10)  # inside the header: the checksum tells first
    return {
        2: "sidecar checksum mismatch",
        3: "sidecar truncated",
        4: "sidecar longer than recorded",
        5: "state.bin missing",
        7: "sidecar was written by another writer",
        8: "lies outside the file",
        9: "sidecar checksum mismatch",
    }


def test_streamed_validation_agrees_with_validate_checkpoint(
    store_url: str, store: CheckpointStore
) -> None:
    expected_issues = _damage_every_way(store_url)
    for checkpoint_id in range(1, 12):
        library = store.validate_checkpoint(checkpoint_id)
        progress: list[int] = []
        streamed = validate_checkpoint_streaming(
            store, checkpoint_id, progress=progress.append, range_size=RANGE
        )
        assert streamed == library, checkpoint_id
        if checkpoint_id in expected_issues:
            assert expected_issues[checkpoint_id] in streamed.issues[0]
        if checkpoint_id == 1:
            assert streamed.valid
            size = store.load_by_id(1).state_size  # type: ignore[union-attr]
            assert sum(progress) == size
            assert len(progress) == math.ceil(size / RANGE)
    assert validate_checkpoint_streaming(store, 10).valid  # no state at all
    assert validate_checkpoint_streaming(store, 11).issues == ("manifest missing",)
    assert not validate_checkpoint_streaming(store, 6).valid


def test_streamed_validation_reads_ranges_never_the_whole_sidecar(store_url: str) -> None:
    save(store_url, 1)
    store, faults = faulty_store(store_url)
    try:
        size = store.load_by_id(1).state_size  # type: ignore[union-attr]
        assert size > 5 * RANGE  # type: ignore[operator]
        faults.clear_calls()
        progress: list[int] = []
        result = validate_checkpoint_streaming(store, 1, progress=progress.append, range_size=RANGE)
        assert result.valid
        sidecar = [call.operation for call in faults.calls if call.key.endswith("state.bin")]
        assert sidecar == ["head"] + ["get_range"] * math.ceil(size / RANGE)
        assert progress == [RANGE] * (size // RANGE) + ([size % RANGE] if size % RANGE else [])
        # A byte flipped in transit is caught, after every byte was reported.
        faults.flip_bytes_on_read("state.bin", offset=3)
        progress.clear()
        result = validate_checkpoint_streaming(store, 1, progress=progress.append, range_size=RANGE)
        assert result.issues == ("sidecar checksum mismatch",)
        assert sum(progress) == size
        faults.clear_calls()
        with pytest.raises(ValueError, match="range_size"):
            validate_checkpoint_streaming(store, 1, range_size=0)
        assert faults.calls == []
    finally:
        store.close()


class ShrinkingReads(FaultInjectingTransport):
    """Serves every ranged read of a sidecar after the first one byte short: the object was
    truncated after its size was checked."""

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        data = await super().get_range(key, start, end)
        return data[:-1] if key.endswith("state.bin") and start > 0 else data


def test_streamed_validation_detects_truncation_while_reading(store_url: str) -> None:
    save(store_url, 1)
    at_rest = CheckpointStore(store_url)
    put_raw(store_url, state_key(1), get_raw(store_url, state_key(1))[:-1])
    progress: list[int] = []
    result = validate_checkpoint_streaming(at_rest, 1, progress=progress.append)
    assert result.issues == ("sidecar truncated",)  # the size tells before any read
    assert progress == []
    at_rest.close()
    save(store_url, 2)
    shrinking = CheckpointStore(Backend(AsyncBackend(ShrinkingReads(open_transport(store_url)))))
    try:
        result = validate_checkpoint_streaming(
            shrinking, 2, progress=progress.append, range_size=RANGE
        )
        assert result.issues == ("sidecar truncated",)
        assert progress == [RANGE]  # the first range was read and reported
    finally:
        shrinking.close()


# -- copies ----------------------------------------------------------------------------------


def test_copy_preserves_bytes_and_validity(store_url: str, source: str) -> None:
    save(source, 1, 2)
    save(source, 3, state=False)
    src, dst = CheckpointStore(source), CheckpointStore(store_url)
    try:
        progress: list[int] = []
        first = copy_checkpoint(src, dst, 1, progress=progress.append, range_size=RANGE)
        assert (first.outcome, first.pointer_before.state, first.pointer_moved) == (
            "copied",
            "missing",
            True,
        )
        assert sum(progress) == 2 * src.load_by_id(1).state_size  # type: ignore[operator,union-attr]
        assert copy_checkpoint(src, dst, 2).outcome == "copied"
        assert copy_checkpoint(src, dst, 3).outcome == "copied"
        for checkpoint_id in (1, 2, 3):
            assert dst.validate_checkpoint(checkpoint_id).valid
            assert get_raw(store_url, manifest_key(checkpoint_id)) == get_raw(
                source, manifest_key(checkpoint_id)
            )
        for checkpoint_id in (1, 2):
            assert get_raw(store_url, state_key(checkpoint_id)) == get_raw(
                source, state_key(checkpoint_id)
            )
            assert dst.load_state_data(checkpoint_id) == joined_state(checkpoint_id)
        assert pointer_text(store_url) == name(3)
        assert dst.recover_latest_validated().chosen_id == 3
    finally:
        src.close()
        dst.close()


def test_copy_again_is_present_and_never_moves_the_pointer_backward(
    store_url: str, source: str
) -> None:
    save(source, 1, 2)
    src, dst = CheckpointStore(source), CheckpointStore(store_url)
    try:
        assert copy_checkpoint(src, dst, 2).pointer_moved
        older = copy_checkpoint(src, dst, 1)
        assert (older.outcome, older.pointer_before.checkpoint_id, older.pointer_moved) == (
            "copied",
            2,
            False,
        )
        again = copy_checkpoint(src, dst, 2)
        assert (again.outcome, again.pointer_moved) == ("present", False)
        assert pointer_text(store_url) == name(2)
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize(("named", "copied"), [((5, 2), (7, 1)), ((5, 1), (3, 2))])
def test_copy_ranks_against_a_format_1_pointer_by_epoch_too(
    store_url: str, source: str, named: tuple[int, int], copied: tuple[int, int]
) -> None:
    """A format-1 ``latest.txt`` names no epoch: the copy learns it from the checkpoint it
    names, so readers still restore the newest epoch's checkpoint afterwards."""
    save(store_url, named[0], epoch=named[1])
    raw(store_url).put(LATEST, name(named[0]).encode())  # as objstore 0.1 wrote it
    save(source, copied[0], epoch=copied[1])
    src, dst = CheckpointStore(source), CheckpointStore(store_url)
    try:
        copy_checkpoint(src, dst, copied[0])
        newest = max(named, copied, key=lambda c: (c[1], c[0]))
        latest = CheckpointStore(store_url).load_latest()
        assert latest is not None
        assert (latest.checkpoint_id, latest.epoch) == newest
        record = parse_pointer(get_raw(store_url, LATEST))
        assert record is not None
        assert record.fence_epoch is None or record.fence_epoch >= max(named[1], copied[1])
    finally:
        src.close()
        dst.close()


def test_copy_of_an_invalid_source_commits_nothing(store_url: str, source: str) -> None:
    save(source, 1, 2, 3, 4)
    flip_byte(source, state_key(1))  # found only by the hash, after the last byte
    put_raw(source, state_key(2), get_raw(source, state_key(2))[:-3])
    delete_raw(source, state_key(3))
    put_raw(source, manifest_key(4), b"{not json")
    expected = {
        1: "sidecar checksum mismatch",
        2: "sidecar truncated",
        3: "state.bin missing",
        4: "JSON",
    }

    async def scenario() -> None:
        src, dst = AsyncCheckpointStore(source), AsyncCheckpointStore(store_url)
        try:
            for checkpoint_id, reason in expected.items():
                # Small ranges: a sidecar larger than one goes through a streamed create,
                # which must be abandoned, not completed.
                with pytest.raises(CorruptionError, match=reason):
                    await copy_checkpoint_async(src, dst, checkpoint_id, range_size=RANGE)
            with pytest.raises(NotFoundError):
                await copy_checkpoint_async(src, dst, 9)
            with pytest.raises(ValueError, match="range_size"):
                await copy_checkpoint_async(src, dst, 1, range_size=-1)
        finally:
            await src.close()
            await dst.close()

    asyncio.run(scenario())
    assert snapshot(store_url) == {}


def test_copy_conflicts_leave_the_destination_untouched(store_url: str, source: str) -> None:
    save(source, 1, 2, 3)
    save(store_url, 1)  # another writer's commit of the same id
    put_raw(store_url, manifest_key(2), b"{unreadable")
    put_raw(store_url, state_key(3), b"another writer's sidecar")
    before = snapshot(store_url)
    src, dst = CheckpointStore(source), CheckpointStore(store_url)
    try:
        for checkpoint_id in (1, 2, 3):
            with pytest.raises(CheckpointConflict, match=f"different checkpoint {checkpoint_id}"):
                copy_checkpoint(src, dst, checkpoint_id)
    finally:
        src.close()
        dst.close()
    assert snapshot(store_url) == before


def test_copy_resumes_an_interrupted_copy(store_url: str, source: str) -> None:
    save(source, 1, 2)
    # Crashed after the sidecar (1) and after the manifest, before the pointer (2).
    put_raw(store_url, state_key(1), get_raw(source, state_key(1)))
    put_raw(store_url, state_key(2), get_raw(source, state_key(2)))
    put_raw(store_url, manifest_key(2), get_raw(source, manifest_key(2)))
    src, dst = CheckpointStore(source), CheckpointStore(store_url)
    try:
        assert copy_checkpoint(src, dst, 1).outcome == "copied"
        resumed = copy_checkpoint(src, dst, 2)
        assert (resumed.outcome, resumed.pointer_moved) == ("present", True)
        assert dst.recover_latest_validated().skipped == ()
        assert pointer_text(store_url) == name(2)
    finally:
        src.close()
        dst.close()


def test_copy_out_of_each_backend(store_url: str, tmp_path: Path) -> None:
    save(store_url, 1)
    target = str(tmp_path / "copy")
    src, dst = CheckpointStore(store_url), CheckpointStore(target)
    try:
        assert copy_checkpoint(src, dst, 1, range_size=RANGE).outcome == "copied"
        assert dst.load_state_data(1) == joined_state(1)
    finally:
        src.close()
        dst.close()


def test_copy_to_s3_abandons_a_multipart_upload_of_a_corrupt_source(
    s3_url: str, source: str, moto_server: str
) -> None:
    big = os.urandom(MIN_PART_SIZE + 512 * 1024)  # incompressible: more than one S3 part
    src = CheckpointStore(source)
    src.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), [big])
    src.save_with_state(CheckpointManifest(checkpoint_id=2, epoch=1), [big])
    flip_byte(source, state_key(1), position=-100)
    dst = CheckpointStore(s3_url, storage_options={"part_size": MIN_PART_SIZE})
    try:
        with pytest.raises(CorruptionError, match="checksum"):
            copy_checkpoint(src, dst, 1, range_size=1024 * 1024)
        bucket = s3_url.removeprefix("s3://").split("/")[0]
        client = boto3.client("s3", endpoint_url=moto_server)
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert snapshot(s3_url) == {}
        assert copy_checkpoint(src, dst, 2, range_size=1024 * 1024).outcome == "copied"
        assert dst.load_operator_state(2, 0) == big
    finally:
        src.close()
        dst.close()
