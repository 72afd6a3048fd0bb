"""CheckpointStore: layout, the seven invariants of DESIGN §3, bad input, request counts.

Runs on memory, file, s3 (moto server) and gs (emulator) through the sync face; the async
face is covered by ``test_async_face_round_trip`` and the shared core.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from objstore import (
    AsyncCheckpointStore,
    CheckpointConflict,
    CheckpointManifest,
    CheckpointStore,
    CorruptionError,
    FencedError,
    NotFoundError,
    TransientStorageError,
)
from objstore.backends import open_backend
from objstore.checkpoint import LATEST, manifest_key, state_key, validate_checkpoint_streaming
from tests.checkpoint_helpers import faulty_store, joined_state, manifest, pointed_id, state_for

# -- layout and round trips ---------------------------------------------------------------------


def test_layout_is_the_documented_one(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save_with_state(manifest(7), state_for(7))
    keys = [info.key for info in open_backend(store_url).list("")]
    assert keys == [
        "checkpoints/checkpoint_00000000000000000007/manifest.json",
        "checkpoints/checkpoint_00000000000000000007/state.bin",
        "checkpoints/latest.txt",
    ]
    assert pointed_id(store_url) == 7


def test_save_with_state_round_trips(store_url: str) -> None:
    store = CheckpointStore(store_url)
    saved = store.save_with_state(
        manifest(1, metadata={"job": "wordcount", "nested": [1, {"a": None}]}), state_for(1)
    )
    assert saved.state_checksum is not None
    assert [entry.name for entry in saved.operator_states] == ["counts", "window"]
    loaded = CheckpointStore(store_url).load_latest()
    assert loaded == saved
    assert store.load_by_id(1) == saved
    assert store.load_state_data(1) == joined_state(1)
    assert store.load_operator_state(1, "window") == state_for(1)["window"]
    assert store.load_operator_state(1, 0) == state_for(1)["counts"]
    with pytest.raises(KeyError):
        store.load_operator_state(1, "missing")
    with pytest.raises(IndexError):
        store.load_operator_state(1, 2)


def test_manifest_only_checkpoint_has_no_state(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save(manifest(1))
    assert store.load_state_data(1) is None
    assert store.load_state_data(99) is None
    assert store.validate_checkpoint(1).valid
    assert store.load_by_id(99) is None


def test_state_forms_sequence_iterator_and_bytes(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save_with_state(manifest(1), [b"a" * 10, bytearray(b"b" * 5), memoryview(b"cdef")])
    assert store.load_state_data(1) == b"a" * 10 + b"b" * 5 + b"cdef"
    store.save_with_state(manifest(2), (bytes([i]) * 1000 for i in range(20)))
    assert store.load_state_data(2) == b"".join(bytes([i]) * 1000 for i in range(20))
    assert store.load_operator_state(2, 19) == bytes([19]) * 1000
    store.save_with_state(manifest(3), b"single chunk")
    assert store.load_state_data(3) == b"single chunk"
    store.save_with_state(manifest(4), [("x", b"1"), ("y", b"22")])
    assert store.load_operator_state(4, "y") == b"22"


def test_save_state_data_then_save_commits_the_staged_sidecar(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save_state_data(5, state_for(5))
    assert store.load_latest() is None
    store.save(manifest(5))
    assert store.load_state_data(5) == joined_state(5)
    assert store.validate_checkpoint(5).valid


def test_list_list_ids_and_next_id(store_url: str) -> None:
    store = CheckpointStore(store_url)
    assert store.list() == []
    assert store.list_ids() == []
    assert store.next_checkpoint_id() == 1
    for checkpoint_id, epoch in [(1, 1), (2, 1), (3, 2)]:
        store.save(manifest(checkpoint_id, epoch))
    open_backend(store_url).put(manifest_key(3), b"\xff\xfe not json")
    assert store.list() == [(1, 1), (2, 1)]
    assert store.list_ids() == [1, 2, 3]
    store.save_state_data(9, [b"orphan"])
    assert store.next_checkpoint_id() == 10


def test_ids_of_any_width_and_the_largest_id(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save(manifest(2**64 - 1))
    assert store.load_latest() is not None
    assert store.load_latest().checkpoint_id == 2**64 - 1  # type: ignore[union-attr]
    assert pointed_id(store_url) == 2**64 - 1


def test_async_face_round_trip(store_url: str) -> None:
    async def scenario() -> tuple[Any, ...]:
        store = AsyncCheckpointStore(store_url, max_retained=2)
        for checkpoint_id in range(1, 5):
            await store.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
        latest = await store.load_latest()
        report = await store.recover_latest_validated()
        state = await store.load_state_data(4)
        ids = await store.list_ids()
        await store.close()
        return latest, report, state, ids

    latest, report, state, ids = asyncio.run(scenario())
    assert latest.checkpoint_id == 4
    assert report.chosen_id == 4
    assert report.skipped == ()
    assert state == joined_state(4)
    assert ids == [3, 4]


# -- invariant 2: each id is claimed once --------------------------------------------------------


def test_second_writer_of_an_id_gets_conflict_and_changes_nothing(store_url: str) -> None:
    first = CheckpointStore(store_url)
    second = CheckpointStore(store_url)
    first.save_with_state(manifest(1, epoch=3), state_for(1))
    backend = open_backend(store_url)
    before = {info.key: backend.get(info.key)[0] for info in backend.list("")}
    with pytest.raises(CheckpointConflict) as same_epoch:
        second.save_with_state(manifest(1, epoch=3), {"other": b"zzz"})
    assert not isinstance(same_epoch.value, FencedError)
    assert same_epoch.value.winner_epoch == 3
    with pytest.raises(FencedError) as older:
        second.save(manifest(1, epoch=2))
    assert (older.value.epoch, older.value.winner_epoch, older.value.checkpoint_id) == (2, 3, 1)
    after = {info.key: backend.get(info.key)[0] for info in backend.list("")}
    assert after == before


def test_manifest_only_loser_after_sidecar_winner_is_conflict(store_url: str) -> None:
    a, b = CheckpointStore(store_url), CheckpointStore(store_url)
    b.save(manifest(1, epoch=5))
    with pytest.raises(FencedError):
        a.save_with_state(manifest(1, epoch=4), state_for(1))
    assert a.validate_checkpoint(1).valid
    assert a.load_state_data(1) is None  # the winner's manifest has no state


def test_threads_racing_for_one_id_have_one_winner(store_url: str) -> None:
    contenders = 6
    barrier = threading.Barrier(contenders)
    outcomes: list[tuple[int, str]] = []

    def contend(index: int) -> None:
        store = CheckpointStore(store_url)
        payload = {"who": f"writer-{index}".encode() * 100}
        barrier.wait()
        try:
            store.save_with_state(manifest(1, epoch=index), payload)
            outcomes.append((index, "won"))
        except FencedError:
            outcomes.append((index, "fenced"))
        except CheckpointConflict:
            outcomes.append((index, "conflict"))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [index for index, outcome in outcomes if outcome == "won"]
    assert len(outcomes) == contenders
    assert len(winners) == 1
    store = CheckpointStore(store_url)
    stored = store.load_by_id(1)
    assert stored is not None
    assert stored.epoch == winners[0]
    assert store.load_state_data(1) == f"writer-{winners[0]}".encode() * 100
    assert store.validate_checkpoint(1).valid
    assert store.recover_latest_validated().chosen_id == 1


# -- invariant 3: the pointer is a hint ----------------------------------------------------------


@pytest.mark.parametrize(
    "damage", ["missing", "empty", "garbage", "dangling", "lagging", "backwards"]
)
def test_load_latest_survives_a_bad_pointer(store_url: str, damage: str) -> None:
    store = CheckpointStore(store_url)
    for checkpoint_id in (1, 2, 3):
        store.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    backend = open_backend(store_url)
    if damage == "missing":
        backend.delete(LATEST)
    elif damage == "empty":
        backend.put(LATEST, b"")
    elif damage == "garbage":
        backend.put(LATEST, b"\x00\xffnot a checkpoint")
    elif damage == "dangling":
        backend.put(LATEST, b"checkpoint_00000000000000000042")
    elif damage == "lagging":
        backend.put(LATEST, b"checkpoint_2")
    elif damage == "backwards":
        backend.put(LATEST, b"checkpoint_00000000000000000001")
    fresh = CheckpointStore(store_url)
    loaded = fresh.load_latest()
    assert loaded is not None
    assert loaded.checkpoint_id == 3
    assert fresh.recover_latest_validated().chosen_id == 3
    fresh.save_with_state(manifest(4), state_for(4))
    assert CheckpointStore(store_url).load_latest().checkpoint_id == 4  # type: ignore[union-attr]
    # A format-1 pointer naming nothing has no known epoch: it ranks as epoch 0, so the
    # save moves it forward in (epoch, id) order.
    assert pointed_id(store_url) == 4


def test_pointer_never_moves_backward(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save(manifest(5))
    CheckpointStore(store_url).save(manifest(3))
    assert pointed_id(store_url) == 5
    assert store.load_latest().checkpoint_id == 5  # type: ignore[union-attr]


def test_newer_corrupt_manifest_is_skipped_by_load_latest(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save(manifest(1))
    store.save(manifest(2))
    open_backend(store_url).put(manifest_key(2), b"{}")
    assert store.load_latest().checkpoint_id == 1  # type: ignore[union-attr]
    with pytest.raises(CorruptionError):
        store.load_by_id(2)


def test_fresh_start_only_when_nothing_is_committed(store_url: str) -> None:
    store = CheckpointStore(store_url)
    assert store.load_latest() is None
    report = store.recover_latest_validated()
    assert (report.chosen_id, report.manifest, report.skipped) == (None, None, ())


# -- invariant 4: validated backward recovery ----------------------------------------------------


def _three_checkpoints(store_url: str) -> CheckpointStore:
    store = CheckpointStore(store_url)
    for checkpoint_id in (1, 2, 3):
        store.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    return store


def _flip(store_url: str, key: str, offset: int) -> None:
    backend = open_backend(store_url)
    data = bytearray(backend.get(key)[0])
    data[offset % len(data)] ^= 0x01
    backend.put(key, bytes(data))


@pytest.mark.parametrize("offset", [0, 9, 20, 40, 60, -1])
def test_flipped_sidecar_byte_is_detected_and_skipped(store_url: str, offset: int) -> None:
    store = _three_checkpoints(store_url)
    _flip(store_url, state_key(3), offset)
    result = store.validate_checkpoint(3)
    assert not result.valid
    assert result.issues
    report = store.recover_latest_validated()
    assert report.chosen_id == 2
    assert report.examined == (3, 2)
    assert [skipped_id for skipped_id, _ in report.skipped] == [3]
    assert "checksum" in report.skipped[0][1]
    with pytest.raises(CorruptionError):
        store.load_state_data(3)


@pytest.mark.parametrize("offset", [0, 1, 50, 150, -2])
def test_flipped_manifest_byte_is_detected_and_skipped(store_url: str, offset: int) -> None:
    store = _three_checkpoints(store_url)
    _flip(store_url, manifest_key(3), offset)
    result = store.validate_checkpoint(3)
    assert not result.valid
    report = store.recover_latest_validated()
    assert report.chosen_id == 2
    assert report.skipped[0][0] == 3


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated-sidecar", "truncated"),
        ("missing-sidecar", "state.bin missing"),
        ("non-utf8-manifest", "UTF-8"),
        ("id-mismatch", "does not match its path"),
        ("not-json", "JSON"),
        ("empty-manifest", "JSON"),
        ("foreign-sidecar", "checksum"),
    ],
)
def test_damaged_checkpoint_reports_why(store_url: str, damage: str, reason: str) -> None:
    store = _three_checkpoints(store_url)
    backend = open_backend(store_url)
    if damage == "truncated-sidecar":
        backend.put(state_key(3), backend.get(state_key(3))[0][:-7])
    elif damage == "missing-sidecar":
        backend.delete(state_key(3))
    elif damage == "non-utf8-manifest":
        backend.put(manifest_key(3), b'{"checkpoint_id": 3, "x": "\xff\xfe"}')
    elif damage == "id-mismatch":
        backend.put(manifest_key(3), backend.get(manifest_key(2))[0])
    elif damage == "not-json":
        backend.put(manifest_key(3), b"{not json")
    elif damage == "empty-manifest":
        backend.put(manifest_key(3), b"")
    elif damage == "foreign-sidecar":
        backend.put(state_key(3), backend.get(state_key(2))[0])
    result = store.validate_checkpoint(3)
    assert not result.valid
    assert any(reason in issue for issue in result.issues), result.issues
    report = store.recover_latest_validated()
    assert report.chosen_id == 2
    assert report.skipped[0][0] == 3
    assert reason in report.skipped[0][1]


def test_recovery_walks_past_several_bad_and_reports_uncommitted(store_url: str) -> None:
    store = _three_checkpoints(store_url)
    store.save_state_data(4, [b"in flight"])
    _flip(store_url, state_key(3), 50)
    open_backend(store_url).put(manifest_key(2), b"garbage")
    report = CheckpointStore(store_url).recover_latest_validated()
    assert report.chosen_id == 1
    assert report.manifest is not None
    assert report.manifest.checkpoint_id == 1
    assert report.examined == (4, 3, 2, 1)
    assert [skipped_id for skipped_id, _ in report.skipped] == [4, 3, 2]
    assert "no manifest" in report.skipped[0][1]


def test_vnode_mismatch_is_a_warning_not_invalid(store_url: str) -> None:
    CheckpointStore(store_url).save(manifest(1, vnode_count=128))
    result = CheckpointStore(store_url, vnode_count=256).validate_checkpoint(1)
    assert result.valid
    assert result.warnings
    assert "vnode_count" in result.warnings[0]


def test_unknown_manifest_fields_are_preserved(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save(manifest(1, extra={"future_field": {"x": 1}}))
    loaded = store.load_by_id(1)
    assert loaded is not None
    assert loaded.extra == {"future_field": {"x": 1}}
    updated = store.update_manifest(loaded.with_status("sink", "committed"))
    assert updated.extra == {"future_field": {"x": 1}}
    assert store.load_by_id(1).extra == {"future_field": {"x": 1}}  # type: ignore[union-attr]


# -- invariant 5 and 6: prune and orphans --------------------------------------------------------


def test_prune_keeps_newest_and_counts(store_url: str) -> None:
    store = CheckpointStore(store_url)
    for checkpoint_id in range(1, 6):
        store.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    assert store.plan_prune(2) == [1, 2, 3]
    assert len(store.prune(2).deleted) == 3
    assert store.list_ids() == [4, 5]
    assert [
        i.key for i in open_backend(store_url).list("checkpoints/checkpoint_00000000000000000001")
    ] == []
    assert len(store.prune(2).deleted) == 0
    with pytest.raises(ValueError, match="keep_count"):
        store.prune(0)


def test_prune_never_removes_newest_valid_when_newer_are_corrupt(store_url: str) -> None:
    store = CheckpointStore(store_url)
    for checkpoint_id in range(1, 6):
        store.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    _flip(store_url, state_key(5), 45)
    open_backend(store_url).put(manifest_key(4), b"broken")
    assert len(store.prune(1).deleted) == 3
    assert store.list_ids() == [3, 5]
    assert store.recover_latest_validated().chosen_id == 3


def test_prune_deletes_nothing_when_nothing_is_valid(store_url: str) -> None:
    store = CheckpointStore(store_url)
    for checkpoint_id in (1, 2, 3):
        store.save(manifest(checkpoint_id))
    backend = open_backend(store_url)
    for checkpoint_id in (1, 2, 3):
        backend.put(manifest_key(checkpoint_id), b"x")
    assert len(store.prune(1).deleted) == 0
    assert store.list_ids() == [1, 2, 3]


def test_max_retained_prunes_after_each_save(store_url: str) -> None:
    store = CheckpointStore(store_url, max_retained=2)
    for checkpoint_id in range(1, 6):
        store.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    assert store.list_ids() == [4, 5]
    assert store.load_latest().checkpoint_id == 5  # type: ignore[union-attr]


def _store_clock(now: list[float]) -> Callable[[], Awaitable[float]]:
    """A store clock that reads ``now[0]``."""

    async def read() -> float:
        return now[0]

    return read


def test_cleanup_orphans_spares_in_flight_writers(store_url: str) -> None:
    now = [1_000_000.0]
    store = CheckpointStore(store_url, store_clock=_store_clock(now), orphan_grace_seconds=600)
    store.save_state_data(1, [b"lost writer"])  # below a committed id: dead
    store.save(manifest(2))
    store.save_state_data(3, [b"in flight"])  # above the newest commit, young: alive
    backend = open_backend(store_url)
    real_now = max(info.mtime or 0 for info in backend.list("checkpoints"))
    now[0] = real_now + 1
    assert store.plan_cleanup_orphans() == [1]
    assert len(store.cleanup_orphans().deleted) == 1
    assert backend.exists(state_key(3))
    assert not backend.exists(state_key(1))
    now[0] = real_now + 602  # past the grace and the mtime slack, by the store's clock
    assert len(store.cleanup_orphans().deleted) == 1
    assert not backend.exists(state_key(3))
    assert len(store.cleanup_orphans().deleted) == 0
    assert store.load_latest().checkpoint_id == 2  # type: ignore[union-attr]


# -- invariant 7: update_manifest ----------------------------------------------------------------


def test_update_manifest_keeps_checksums_and_refuses_clobbering(store_url: str) -> None:
    store = CheckpointStore(store_url)
    saved = store.save_with_state(
        manifest(1, sink_commit_statuses={"kafka": "pending", "s3": "pending"}), state_for(1)
    )
    a, b = CheckpointStore(store_url), CheckpointStore(store_url)
    updated = a.update_manifest(saved.with_status("kafka", "committed"))
    assert updated.state_checksum == saved.state_checksum
    assert updated.operator_states == saved.operator_states
    assert store.validate_checkpoint(1).valid
    loaded = store.load_by_id(1)
    assert loaded is not None
    assert loaded.sink_commit_statuses == {"kafka": "committed", "s3": "pending"}
    assert loaded.pending_sinks == ["s3"]
    assert store.load_state_data(1) == joined_state(1)
    with pytest.raises(ValueError, match="epoch"):
        b.update_manifest(manifest(1, epoch=9))
    with pytest.raises(NotFoundError):
        b.update_manifest(manifest(2))


def test_concurrent_update_manifest_merges_instead_of_clobbering(store_url: str) -> None:
    faulty, faults = faulty_store(store_url)
    faulty.save(manifest(1, sink_commit_statuses={"a": "pending", "b": "pending"}))
    base = faulty.load_by_id(1)
    assert base is not None
    other = CheckpointStore(store_url)

    # Between our read and our CAS, another process commits sink "b".
    original_get = faults.inner.get

    async def get_then_race(key: str) -> Any:
        result = await original_get(key)
        if key == manifest_key(1) and not raced:
            raced.append(True)
            await asyncio.to_thread(other.update_manifest, base.with_status("b", "committed"))
        return result

    raced: list[bool] = []
    faults.inner.get = get_then_race  # type: ignore[method-assign]
    merged = faulty.update_manifest(base.with_status("a", "failed"))  # re-read and merged
    faults.inner.get = original_get  # type: ignore[method-assign]
    final = other.load_by_id(1)
    assert final is not None
    assert final.sink_commit_statuses == merged.sink_commit_statuses
    assert final.sink_commit_statuses == {"a": "failed", "b": "committed"}


# -- bad input fails before any request ----------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: CheckpointManifest(checkpoint_id=0, epoch=0), ValueError),
        (lambda: CheckpointManifest(checkpoint_id=-3, epoch=0), ValueError),
        (lambda: CheckpointManifest(checkpoint_id=2**64, epoch=0), ValueError),
        (lambda: CheckpointManifest(checkpoint_id="1", epoch=0), TypeError),  # type: ignore[arg-type]
        (lambda: CheckpointManifest(checkpoint_id=True, epoch=0), TypeError),
        (lambda: CheckpointManifest(checkpoint_id=1.0, epoch=0), TypeError),  # type: ignore[arg-type]
        (lambda: CheckpointManifest(checkpoint_id=1, epoch=-1), ValueError),
        (
            lambda: CheckpointManifest(checkpoint_id=1, epoch=0, metadata={"x": object()}),
            ValueError,
        ),
        (
            lambda: CheckpointManifest(checkpoint_id=1, epoch=0, metadata={"x": float("nan")}),
            ValueError,
        ),
        (lambda: CheckpointManifest(checkpoint_id=1, epoch=0, metadata={1: "x"}), TypeError),  # type: ignore[dict-item]
        (
            lambda: CheckpointManifest(
                checkpoint_id=1,
                epoch=0,
                sink_commit_statuses={"s": "done"},  # type: ignore[dict-item]
            ),
            ValueError,
        ),
    ],
)
def test_invalid_manifests_are_rejected_at_construction(build: Any, error: type) -> None:
    with pytest.raises(error):
        build()


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ({"a": b"1", "b": "text"}, TypeError),
        ([b"ok", 42], TypeError),
        ([("op", b"1"), ("op", b"2")], ValueError),
        ("a string", TypeError),
        ([("", b"1")], TypeError),
        (12, TypeError),
    ],
)
def test_bad_state_fails_before_any_request(store_url: str, state: Any, error: type) -> None:
    store, faults = faulty_store(store_url)
    with pytest.raises(error):
        store.save_with_state(manifest(1), state)
    assert faults.calls == []


def test_bad_chunk_in_a_stream_aborts_without_commit(store_url: str) -> None:
    store = CheckpointStore(store_url)

    def chunks() -> Any:
        yield b"fine"
        yield "not bytes"

    with pytest.raises(TypeError):
        store.save_with_state(manifest(1), chunks())
    assert store.load_latest() is None
    assert store.list_ids() == []


@pytest.mark.parametrize("bad_id", [0, -1, 2**64, "3", None, 1.5])
def test_bad_ids_fail_before_any_request(store_url: str, bad_id: Any) -> None:
    store, faults = faulty_store(store_url)
    for call in (store.load_by_id, store.load_state_data, store.validate_checkpoint):
        with pytest.raises((ValueError, TypeError)):
            call(bad_id)
    with pytest.raises((ValueError, TypeError)):
        store.save_state_data(bad_id, [b"x"])
    assert faults.calls == []


def test_non_manifest_argument_is_a_type_error() -> None:
    store = CheckpointStore("memory://")
    with pytest.raises(TypeError):
        store.save({"checkpoint_id": 1})  # type: ignore[arg-type]


# -- transient errors and lost responses ---------------------------------------------------------


def test_transient_errors_are_retried_not_mistaken_for_corruption(store_url: str) -> None:
    store, faults = faulty_store(store_url)
    faults.fail_transiently(0.3)
    for checkpoint_id in (1, 2, 3):
        store.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    report = store.recover_latest_validated()
    assert report.chosen_id == 3
    assert report.skipped == ()
    assert store.load_state_data(3) == joined_state(3)
    assert len(store.prune(1).deleted) == 2
    faults.clear_faults()
    assert CheckpointStore(store_url).list_ids() == [3]


@pytest.mark.parametrize("operation", ["put_if_absent", "put_if_match"])
def test_lost_response_of_a_landed_write_is_not_a_conflict(store_url: str, operation: str) -> None:
    store, faults = faulty_store(store_url)
    store.save_with_state(manifest(1), state_for(1))
    faults.lose_response(operation, nth=1)
    store.save_with_state(manifest(2), state_for(2))
    assert CheckpointStore(store_url).load_latest().checkpoint_id == 2  # type: ignore[union-attr]
    assert store.validate_checkpoint(2).valid


# -- request counts ------------------------------------------------------------------------------


def test_request_counts_of_save_and_load_latest(store_url: str) -> None:
    store, faults = faulty_store(store_url)
    store.save_with_state(manifest(1), state_for(1))
    faults.clear_calls()
    store.save_with_state(manifest(2), state_for(2))
    assert faults.count(writes=True) == 3
    assert faults.count(writes=False) <= 1
    reader, reader_faults = faulty_store(store_url)
    reader_faults.clear_calls()
    assert reader.load_latest().checkpoint_id == 2  # type: ignore[union-attr]
    assert reader_faults.count("get") == 2
    assert reader_faults.count("list") == 1
    assert reader_faults.count(writes=True) == 0
    reader_faults.clear_calls()
    assert reader.recover_latest_validated().chosen_id == 2
    assert reader_faults.count("list") == 1
    # latest.txt (read alongside the listing: its fence epoch ends the walk), the newest
    # manifest and its sidecar, once each
    assert reader_faults.count("get") == 3
    assert reader_faults.count() == 4


def test_zombie_with_older_epoch_cannot_commit_past_a_newer_leader(store_url: str) -> None:
    zombie = CheckpointStore(store_url)
    zombie.save_with_state(manifest(1, epoch=3), state_for(1))
    leader = CheckpointStore(store_url)
    leader.save_with_state(manifest(2, epoch=4), state_for(2))
    with pytest.raises(FencedError) as fenced:
        zombie.save_with_state(manifest(3, epoch=3), state_for(3))
    assert (fenced.value.epoch, fenced.value.winner_epoch) == (3, 4)
    backend = open_backend(store_url)
    assert not backend.exists(manifest_key(3))
    assert not backend.exists(state_key(3))
    assert pointed_id(store_url) == 2
    fresh = CheckpointStore(store_url)
    assert fresh.load_latest().checkpoint_id == 2  # type: ignore[union-attr]
    leader.save_with_state(manifest(3, epoch=4), state_for(3))
    assert fresh.recover_latest_validated().chosen_id == 3


def test_zombie_writing_below_the_pointer_is_fenced_too(store_url: str) -> None:
    leader = CheckpointStore(store_url)
    leader.save(manifest(9, epoch=4))
    zombie = CheckpointStore(store_url)
    with pytest.raises(FencedError):
        zombie.save(manifest(5, epoch=2))
    assert CheckpointStore(store_url).list_ids() == [9]


def test_newer_epoch_takes_over_from_an_older_one(store_url: str) -> None:
    CheckpointStore(store_url).save(manifest(1, epoch=1))
    CheckpointStore(store_url).save(manifest(2, epoch=2))
    assert CheckpointStore(store_url).load_latest().epoch == 2  # type: ignore[union-attr]


def test_large_sidecars_are_validated_in_ranges_not_held_whole(store_url: str) -> None:
    store, faults = faulty_store(store_url, streamed_validation_threshold=10, range_size=16)
    store.save_with_state(manifest(1), state_for(1))
    store.save_with_state(manifest(2), state_for(2))
    faults.clear_calls()
    assert store.validate_checkpoint(2).valid
    assert faults.count("get_range") > 3
    assert all(call.operation != "get" or "manifest" in call.key for call in faults.calls)
    _flip(store_url, state_key(2), 60)
    seen: list[int] = []
    result = store.validate_checkpoint(2, progress=seen.append)
    assert not result.valid
    assert "checksum" in result.issues[0]
    assert sum(seen) > 0
    assert store.recover_latest_validated().chosen_id == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("single_put_limit", -1), ("streamed_validation_threshold", -1), ("range_size", 0)],
)
def test_size_options_out_of_range_are_refused(option: str, value: int) -> None:
    for store_class in (CheckpointStore, AsyncCheckpointStore):
        with pytest.raises(ValueError, match=option):
            store_class("memory://", **{option: value})  # type: ignore[arg-type]


def test_streamed_validation_defaults_to_the_stores_range_size(store_url: str) -> None:
    store, faults = faulty_store(store_url, range_size=16)
    saved = store.save_with_state(manifest(1), state_for(1))
    assert saved.state_size is not None
    assert saved.state_size > 4 * 16
    faults.clear_calls()
    assert validate_checkpoint_streaming(store, 1).valid
    assert faults.count("get_range") >= saved.state_size // 16
    default, default_faults = faulty_store(store_url)
    assert validate_checkpoint_streaming(default, 1).valid
    assert default_faults.count("get_range") == 1  # one 8 MiB range holds it all


def test_load_latest_sees_past_a_run_of_orphans_behind_a_lagging_pointer(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save(manifest(5))
    for orphan in range(6, 6 + 20):
        store.save_state_data(orphan, [b"crashed writer"])
    store.save(manifest(30))
    open_backend(store_url).put(LATEST, b"checkpoint_00000000000000000005")  # lagging
    loaded = CheckpointStore(store_url).load_latest()
    assert loaded is not None
    assert loaded.checkpoint_id == 30


def test_failed_commit_keeps_staged_state_for_the_retry(store_url: str) -> None:
    store, faults = faulty_store(store_url)
    store.save_state_data(1, state_for(1), epoch=1)
    faults.fail_transiently(1.0, ["put_if_absent"])
    with pytest.raises(TransientStorageError):
        store.save(manifest(1))
    faults.clear_faults()
    saved = store.save(manifest(1))
    assert saved.state_checksum is not None
    assert store.load_state_data(1) == joined_state(1)


def test_cleanup_spares_a_same_epoch_sidecar_below_a_newer_commit(store_url: str) -> None:
    """Two overlapping saves of one writer: 11 commits while 10's sidecar is written."""
    now = [0.0]
    store = CheckpointStore(store_url, store_clock=_store_clock(now), orphan_grace_seconds=600)
    store.save_state_data(10, [b"still being committed"], epoch=5)
    store.save(manifest(11, epoch=5))
    store.save_state_data(9, [b"fenced writer"], epoch=4)
    now[0] = max(info.mtime or 0 for info in open_backend(store_url).list("checkpoints")) + 1
    assert store.plan_cleanup_orphans() == [9]
    assert len(store.cleanup_orphans().deleted) == 1
    store.save(manifest(10, epoch=5))  # the in-flight save completes with its state
    assert store.validate_checkpoint(10).valid
    assert store.load_state_data(10) == b"still being committed"


def test_zombie_whose_pointer_move_skipped_a_newer_epochs_commit_is_fenced(
    store_url: str,
) -> None:
    zombie = CheckpointStore(store_url)
    zombie.save(manifest(9, epoch=1))  # the zombie remembers latest.txt at 9
    leader = CheckpointStore(store_url)
    leader_backend = open_backend(store_url)
    # The leader (epoch 2) has committed 10 but not yet moved the pointer.
    leader.save_state_data(10, state_for(10), epoch=2)
    from objstore.checkpoint._manifest import StoredManifest, encode_manifest

    leader_backend.put_if_absent(
        manifest_key(10), encode_manifest(StoredManifest(manifest(10, epoch=2), "ab" * 16, None, 0))
    )
    with pytest.raises(FencedError) as fenced:
        zombie.save(manifest(11, epoch=1))
    assert fenced.value.winner_epoch == 2
    assert not leader_backend.exists(manifest_key(11))
    latest = CheckpointStore(store_url).load_latest()
    assert latest is not None
    assert latest.checkpoint_id == 10
