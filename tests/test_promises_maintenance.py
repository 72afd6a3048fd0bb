"""The promises housekeeping must keep (issue 10, items 3 to 6), on memory, a local directory and
moto S3, each driven through a deterministic interleaving where timing matters:

3. the janitor judges an orphan's age by the store's clock, and a save never commits a
   manifest whose sidecar a janitor may have deleted;
4. ``update_manifest`` never loses a concurrent sink transition;
5. recovery racing a prune never reports "fresh start" while a checkpoint is valid;
6. a repair quarantines invalid checkpoints, recoverably, so readers stop returning them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from objstore import (
    CheckpointConflict,
    CheckpointManifest,
    CheckpointStore,
    FencedError,
    NotFoundError,
    PreconditionFailedError,
    cli,
    open_backend,
)
from objstore.backends import Backend
from objstore.checkpoint import (
    ABORTED,
    LATEST,
    QUARANTINE,
    SinkStatus,
    list_quarantined,
    manifest_key,
    quarantine_invalid,
    restore_quarantined,
    state_key,
)
from objstore.checkpoint._clock import STORE_CLOCK_KEY
from objstore.checkpoint._quarantine import quarantine_key
from objstore.checkpoint._updates import merge_update
from objstore.testing import SimulatedCrash
from tests.checkpoint_helpers import faulty_store, joined_state, manifest, state_for
from tests.conftest import make_store_url

# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "file", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on memory, a local directory and moto S3 in turn."""
    return make_store_url(request.param, request, tmp_path)


@pytest.fixture
def raw(url: str) -> Iterator[Backend]:
    """A backend to look at and damage objects around objstore."""
    backend = open_backend(url, verify_fencing=False)
    yield backend
    backend.close()


class FakeClock:
    """A local clock (seconds) that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store_clock_ahead(seconds: float) -> Callable[[], object]:
    """A store clock that reads ``seconds`` past real time (the store's mtimes are real)."""

    async def now() -> float:
        return time.time() + seconds

    return now


def in_thread(work: Callable[[], object]) -> Callable[[], object]:
    """A fault-transport action running a blocking store's work off objstore's loop."""
    return lambda: asyncio.to_thread(work)


# -- 3. the janitor and in-flight sidecars -----------------------------------------------------


def test_a_janitor_whose_clock_runs_an_hour_ahead_spares_an_in_flight_sidecar(
    url: str, raw: Backend
) -> None:
    writer = CheckpointStore(url, orphan_grace_seconds=3600)
    writer.save_with_state(manifest(1), state_for(1))
    writer.save_state_data(2, state_for(2), epoch=1)  # in flight: save() is yet to come
    janitor = CheckpointStore(url, orphan_grace_seconds=3600, clock=lambda: time.time() + 3601)
    assert janitor.plan_cleanup_orphans() == []
    assert len(janitor.cleanup_orphans().deleted) == 0
    assert raw.exists(state_key(2))
    writer.save(manifest(2))
    assert writer.validate_checkpoint(2).valid
    assert writer.load_state_data(2) == joined_state(2)


def test_a_long_gap_between_staging_and_save_never_commits_a_manifest_without_state(
    url: str, raw: Backend
) -> None:
    """Real time passes (a short grace): the janitor may delete the sidecar, and the save
    that follows must refuse instead of committing a manifest whose state is gone."""
    writer = CheckpointStore(url, orphan_grace_seconds=1.0)
    writer.save_with_state(manifest(1), state_for(1))
    writer.save_state_data(2, state_for(2), epoch=1)
    time.sleep(1.6)
    CheckpointStore(url, orphan_grace_seconds=1.0).cleanup_orphans()
    with pytest.raises(PreconditionFailedError, match="stage"):
        writer.save(manifest(2))
    reader = CheckpointStore(url)
    assert reader.load_by_id(2) is None  # at most the janitor's tombstone holds the id
    assert reader.load_latest().checkpoint_id == 1  # type: ignore[union-attr]
    assert reader.recover_latest_validated().chosen_id == 1


def test_a_janitor_by_store_clock_deletes_a_stale_sidecar_and_the_save_refuses(
    url: str, raw: Backend
) -> None:
    clock = FakeClock()
    writer = CheckpointStore(url, orphan_grace_seconds=600, clock=clock)
    writer.save_with_state(manifest(1), state_for(1))
    writer.save_state_data(2, state_for(2), epoch=1)
    clock.now += 7200  # the writer stalled for two hours; so did the store's clock
    janitor = CheckpointStore(url, orphan_grace_seconds=600, store_clock=store_clock_ahead(7200))
    assert janitor.plan_cleanup_orphans() == [2]
    assert len(janitor.cleanup_orphans().deleted) == 1
    assert not raw.exists(state_key(2))
    with pytest.raises(CheckpointConflict, match="next_checkpoint_id"):
        writer.save(manifest(2))
    with pytest.raises(CheckpointConflict):  # a retry cannot commit it without state
        writer.save(manifest(2))
    assert writer.load_by_id(2) is None
    assert writer.next_checkpoint_id() == 3  # the aborted id stays taken
    writer.save_state_data(3, state_for(3), epoch=1)  # staged again: now it commits
    writer.save(manifest(3))
    assert writer.load_state_data(3) == joined_state(3)


def test_save_refuses_state_staged_longer_than_half_the_grace(url: str, raw: Backend) -> None:
    """No janitor has run yet, but one may at any moment: the sidecar is not committed and
    is withdrawn so the id can be staged again."""
    clock = FakeClock()
    writer = CheckpointStore(url, orphan_grace_seconds=600, clock=clock)
    writer.save_state_data(1, state_for(1), epoch=1)
    clock.now += 301
    with pytest.raises(PreconditionFailedError, match="stage"):
        writer.save(manifest(1))
    assert not raw.exists(manifest_key(1))
    assert not raw.exists(state_key(1))
    writer.save_state_data(1, state_for(1), epoch=1)
    clock.now += 299
    assert writer.save(manifest(1)).state_checksum is not None
    assert writer.load_state_data(1) == joined_state(1)


def test_a_commit_that_lands_too_late_is_withdrawn(url: str, raw: Backend) -> None:
    """The manifest create itself took most of the grace period (retries, a stall): by then
    a janitor may have deleted the sidecar, so the save withdraws its commit and raises."""
    clock = FakeClock()
    writer, faults = faulty_store(url, orphan_grace_seconds=600, clock=clock)
    writer.save_with_state(manifest(1), state_for(1))

    async def stall() -> None:
        clock.now += 550

    faults.on_call("put_if_absent", stall, when="before", key_contains="00002/manifest.json")
    with pytest.raises(PreconditionFailedError):
        writer.save_with_state(manifest(2), state_for(2))
    assert not raw.exists(manifest_key(2))
    assert not raw.exists(state_key(2))
    assert CheckpointStore(url).load_latest().checkpoint_id == 1  # type: ignore[union-attr]


def test_a_late_commit_a_reader_has_already_updated_is_kept_with_the_update(
    url: str, raw: Backend
) -> None:
    """Simulator checkpoint seed 655: the commit landed late, and before the writer could
    withdraw it a reader saw it and committed a sink (a new revision). Withdrawing it then
    would undo that sink's commit (a retried save re-committed the id with every sink
    pending). The commit stands if its state is still whole, and the update is kept."""
    clock = FakeClock()
    writer, faults = faulty_store(url, orphan_grace_seconds=600, clock=clock)
    writer.save_with_state(manifest(1), state_for(1))

    async def stall() -> None:
        clock.now += 550

    def commit_sink() -> None:
        reader = CheckpointStore(url)
        seen = reader.load_by_id(2)
        assert seen is not None
        reader.update_manifest(seen.with_status("b", "committed"))

    async def reader_commits_a_sink() -> None:
        await asyncio.to_thread(commit_sink)

    late = "00002/manifest.json"
    faults.on_call("put_if_absent", stall, when="before", key_contains=late)
    faults.on_call("put_if_absent", reader_commits_a_sink, when="after", key_contains=late)
    pending = manifest(2, sink_commit_statuses={"a": "pending", "b": "pending"})
    try:
        writer.save_with_state(pending, state_for(2))
    except PreconditionFailedError:
        writer.save_with_state(pending, state_for(2))  # the caller retries, as told
    stored = CheckpointStore(url).load_by_id(2)
    assert stored is not None
    assert stored.sink_commit_statuses == {"a": "pending", "b": "committed"}
    assert CheckpointStore(url).load_state_data(2) == joined_state(2)
    assert CheckpointStore(url).load_latest().checkpoint_id == 2  # type: ignore[union-attr]


def test_the_store_clock_costs_one_marker_write_and_one_head_only_when_orphans_exist(
    url: str, raw: Backend
) -> None:
    """With no orphan, one listing; with one, also the quarantine listing and the marker."""
    janitor, faults = faulty_store(url)
    CheckpointStore(url).save_with_state(manifest(1), state_for(1))
    assert len(janitor.cleanup_orphans().deleted) == 0
    assert [call.operation for call in faults.calls] == ["list"]
    CheckpointStore(url).save_state_data(2, state_for(2), epoch=1)
    faults.clear_calls()
    assert len(janitor.cleanup_orphans().deleted) == 0
    assert [(call.operation, call.key) for call in faults.calls] == [
        ("list", "checkpoints"),
        ("list", QUARANTINE),
        ("put", STORE_CLOCK_KEY),
        ("head", STORE_CLOCK_KEY),
    ]
    marker = raw.head(STORE_CLOCK_KEY)
    assert marker.mtime is not None
    assert abs(marker.mtime - time.time()) < 60
    assert CheckpointStore(url).list_ids() == [1]  # the marker is no checkpoint
    assert CheckpointStore(url).load_latest().checkpoint_id == 1  # type: ignore[union-attr]


def test_a_janitor_never_deletes_a_sidecar_rewritten_since_its_listing(
    url: str, raw: Backend
) -> None:
    """Janitor A lists a stale orphan; meanwhile janitor B collects it and a writer stages
    the id afresh. B's tombstone keeps the id taken (the writer's save conflicts), and A's
    claim fails, so A deletes nothing."""
    CheckpointStore(url).save_with_state(manifest(1), state_for(1))
    CheckpointStore(url).save_state_data(2, [b"abandoned"], epoch=1)
    writer = CheckpointStore(url)
    later = store_clock_ahead(7200)

    def janitor_b_then_writer() -> None:
        assert len(CheckpointStore(url, store_clock=later).cleanup_orphans().deleted) == 1
        writer.save_state_data(2, state_for(2), epoch=1)

    janitor_a, faults = faulty_store(url, store_clock=later)
    faults.on_call("list", in_thread(janitor_b_then_writer), key_contains="checkpoints")
    assert len(janitor_a.cleanup_orphans().deleted) == 0
    with pytest.raises(CheckpointConflict, match="next_checkpoint_id"):
        writer.save(manifest(2))
    assert writer.load_by_id(2) is None
    assert not raw.exists(state_key(2))  # the losing writer removed its own sidecar


def _janitor_collects_during(url: str, writer_faults: object) -> None:
    """Hold the writer's manifest create while a janitor (whose store clock says the
    sidecar is two hours old) collects the sidecar as an orphan."""
    janitor = CheckpointStore(url, orphan_grace_seconds=600, store_clock=store_clock_ahead(7200))

    def collect() -> None:
        assert len(janitor.cleanup_orphans().deleted) == 1

    writer_faults.on_call(  # type: ignore[attr-defined]
        "put_if_absent", in_thread(collect), when="before", key_contains="00002/manifest.json"
    )


def test_a_manifest_create_delayed_past_the_janitor_commits_nothing(url: str, raw: Backend) -> None:
    """The save passed its "staged too long" check, then its manifest create was delayed
    while a janitor collected the sidecar: the create must meet the janitor's tombstone
    (nothing committed, a typed conflict), never commit a manifest without state."""
    clock = FakeClock()
    writer, faults = faulty_store(url, orphan_grace_seconds=600, clock=clock)
    writer.save_with_state(manifest(1), state_for(1))
    writer.save_state_data(2, state_for(2), epoch=1)
    _janitor_collects_during(url, faults)
    with pytest.raises(CheckpointConflict, match="next_checkpoint_id") as raised:
        writer.save(manifest(2))
    assert not isinstance(raised.value, FencedError)
    assert not raw.exists(state_key(2))
    reader = CheckpointStore(url)
    assert reader.load_by_id(2) is None
    assert reader.load_latest().checkpoint_id == 1  # type: ignore[union-attr]
    report = reader.recover_latest_validated()
    assert report.chosen_id == 1
    assert dict(report.skipped)[2] == ABORTED
    assert not reader.validate_checkpoint(2).valid
    assert reader.list_ids() == [1]
    assert reader.next_checkpoint_id() == 3  # the id stays taken
    assert quarantine_invalid(reader) == []  # a tombstone is nothing to repair
    assert raw.exists(manifest_key(2))


def test_a_writer_that_crashes_after_its_delayed_create_leaves_no_stateless_manifest(
    url: str, raw: Backend
) -> None:
    """As above, but the writer dies right after its create: no withdrawal can run, so only
    the create itself may decide."""
    clock = FakeClock()
    writer, faults = faulty_store(url, orphan_grace_seconds=600, clock=clock)
    writer.save_with_state(manifest(1), state_for(1))
    writer.save_state_data(2, state_for(2), epoch=1)
    _janitor_collects_during(url, faults)
    faults.crash_after("put_if_absent", key_contains="00002/manifest.json")
    with pytest.raises((SimulatedCrash, CheckpointConflict)):
        writer.save(manifest(2))
    reader = CheckpointStore(url)
    assert reader.load_by_id(2) is None
    assert reader.load_latest().checkpoint_id == 1  # type: ignore[union-attr]
    assert reader.recover_latest_validated().chosen_id == 1
    assert reader.list_ids() == [1]


def test_a_save_whose_create_wins_keeps_its_sidecar_from_the_janitor(
    url: str, raw: Backend
) -> None:
    """The janitor judged the sidecar an orphan, but the manifest landed before its
    tombstone: the janitor's claim fails and it deletes nothing."""
    writer = CheckpointStore(url, orphan_grace_seconds=600)
    writer.save_with_state(manifest(1), state_for(1))
    writer.save_state_data(2, state_for(2), epoch=1)
    later = store_clock_ahead(7200)
    janitor, faults = faulty_store(url, orphan_grace_seconds=600, store_clock=later)
    faults.on_call(
        "put_if_absent",
        in_thread(lambda: writer.save(manifest(2))),
        when="before",
        key_contains="00002/manifest.json",
    )
    assert len(janitor.cleanup_orphans().deleted) == 0
    assert raw.exists(state_key(2))
    assert writer.validate_checkpoint(2).valid
    assert writer.load_state_data(2) == joined_state(2)


def test_a_janitor_that_crashed_after_its_tombstone_is_finished_by_the_next_run(
    url: str, raw: Backend
) -> None:
    """Tombstone written, sidecar not yet deleted: the next cleanup deletes the sidecar
    (the id is claimed, nobody can commit it) and keeps the tombstone."""
    CheckpointStore(url).save_with_state(manifest(1), state_for(1))
    CheckpointStore(url).save_state_data(2, state_for(2), epoch=1)
    later = store_clock_ahead(7200)
    janitor, faults = faulty_store(url, store_clock=later)
    faults.crash_after("put_if_absent", key_contains="00002/manifest.json")
    with pytest.raises(SimulatedCrash):
        janitor.cleanup_orphans()
    assert raw.exists(state_key(2))
    CheckpointStore(url, store_clock=later).cleanup_orphans()
    assert not raw.exists(state_key(2))
    assert raw.exists(manifest_key(2))
    assert CheckpointStore(url).list_ids() == [1]


def test_a_tombstone_is_collected_once_a_newer_epoch_committed_above_it(
    url: str, raw: Backend
) -> None:
    """Its writer is then fenced: a create it may still send is withdrawn at its pointer
    move and never restored. Below a commit of its own epoch the tombstone stays."""
    CheckpointStore(url).save_with_state(manifest(1), state_for(1))
    CheckpointStore(url).save_state_data(2, state_for(2), epoch=1)
    later = store_clock_ahead(7200)
    assert len(CheckpointStore(url, store_clock=later).cleanup_orphans().deleted) == 1
    CheckpointStore(url).save_with_state(manifest(3), state_for(3))
    CheckpointStore(url, store_clock=later).cleanup_orphans()
    assert raw.exists(manifest_key(2))  # epoch 1 may still be live
    CheckpointStore(url).save_with_state(manifest(4, epoch=2), state_for(4))
    CheckpointStore(url, store_clock=later).cleanup_orphans()
    assert not raw.exists(manifest_key(2))
    assert CheckpointStore(url).list_ids() == [1, 3, 4]


def test_prune_never_deletes_a_tombstone_nor_counts_it(url: str, raw: Backend) -> None:
    store = CheckpointStore(url)
    store.save_with_state(manifest(1), state_for(1))
    store.save_state_data(2, state_for(2), epoch=1)
    janitor = CheckpointStore(url, store_clock=store_clock_ahead(7200))
    assert len(janitor.cleanup_orphans().deleted) == 1
    store.save_with_state(manifest(3), state_for(3))
    assert len(store.prune(1).deleted) == 1
    assert raw.exists(manifest_key(2))
    assert store.list_ids() == [3]


# -- 4. update_manifest never loses a transition -----------------------------------------------


def test_two_sink_committers_that_loaded_earlier_both_keep_their_commit(
    url: str, raw: Backend
) -> None:
    store = CheckpointStore(url)
    saved = store.save_with_state(
        manifest(1, sink_commit_statuses={"kafka": "pending", "s3": "pending"}), state_for(1)
    )
    first, second = CheckpointStore(url), CheckpointStore(url)
    loaded_first, loaded_second = first.load_by_id(1), second.load_by_id(1)
    assert loaded_first is not None
    assert loaded_second is not None
    first.update_manifest(loaded_first.with_status("kafka", "committed"))
    merged = second.update_manifest(loaded_second.with_status("s3", "committed"))
    assert merged.sink_commit_statuses == {"kafka": "committed", "s3": "committed"}
    final = store.load_by_id(1)
    assert final is not None
    assert final.sink_commit_statuses == {"kafka": "committed", "s3": "committed"}
    assert final.state_checksum == saved.state_checksum
    assert final.operator_states == saved.operator_states
    assert store.validate_checkpoint(1).valid
    assert store.load_state_data(1) == joined_state(1)


def test_a_sink_status_never_moves_backward_and_epochs_and_watermark_never_drop(
    url: str,
) -> None:
    store = CheckpointStore(url)
    stale = store.save(
        manifest(1, sink_commit_statuses={"a": "pending", "b": "pending"}, sink_epochs={"a": 3})
    )
    store.update_manifest(_with(stale, {"a": "committed", "b": "failed"}, {"a": 5}, 70))
    after = store.update_manifest(_with(stale, {"a": "pending", "b": "pending"}, {"a": 4}, 60))
    assert after.sink_commit_statuses == {"a": "committed", "b": "failed"}
    assert after.sink_epochs == {"a": 5}
    assert after.watermark == 70
    retried = store.update_manifest(_with(stale, {"b": "committed"}, {}, None))
    assert retried.sink_commit_statuses == {"a": "committed", "b": "committed"}
    assert store.load_by_id(1) == retried


def _with(
    base: CheckpointManifest,
    statuses: dict[str, SinkStatus],
    epochs: dict[str, int],
    watermark: int | None,
) -> CheckpointManifest:
    """``base`` as a committer that loaded it would pass it back, with these sink fields."""
    return dataclasses.replace(
        base, sink_commit_statuses=statuses, sink_epochs=epochs, watermark=watermark
    )


def test_update_manifest_that_loses_its_compare_and_swap_merges_and_retries(url: str) -> None:
    store, faults = faulty_store(url)
    store.save(manifest(1, sink_commit_statuses={"a": "pending", "b": "pending"}))
    base = store.load_by_id(1)
    assert base is not None
    other = CheckpointStore(url)
    # Between our read and our compare-and-swap, another process commits sink "b".
    faults.on_call(
        "get",
        in_thread(lambda: other.update_manifest(base.with_status("b", "committed"))),
        key_contains=manifest_key(1),
    )
    merged = store.update_manifest(base.with_status("a", "committed"))
    assert merged.sink_commit_statuses == {"a": "committed", "b": "committed"}
    assert faults.count("put_if_match") == 2
    final = other.load_by_id(1)
    assert final is not None
    assert final.sink_commit_statuses == merged.sink_commit_statuses


def test_merging_updates_gives_one_result_in_any_order_and_is_idempotent() -> None:
    base = manifest(1, sink_commit_statuses={"a": "pending", "b": "pending", "c": "failed"})
    updates = [
        _with(base, {"a": "committed", "b": "pending"}, {"a": 2}, 10),
        _with(base, {"b": "failed", "c": "pending"}, {"a": 1, "b": 4}, None),
        _with(base, {"b": "committed", "d": "pending"}, {}, 7),
    ]
    results = set()
    for order in itertools.permutations(updates):
        merged = base
        for update in (*order, *order):  # each applied twice: a retried update
            merged = merge_update(merged, update)
        results.add(repr(merged))
    assert len(results) == 1
    assert merged.sink_commit_statuses == {
        "a": "committed",
        "b": "committed",
        "c": "failed",
        "d": "pending",
    }
    assert (merged.sink_epochs, merged.watermark) == ({"a": 2, "b": 4}, 10)


# -- 5. recovery racing a prune ----------------------------------------------------------------


def _prune_by_live_writer(url: str) -> Callable[[], object]:
    def work() -> None:
        CheckpointStore(url, max_retained=1).save_with_state(manifest(5), state_for(5))

    return work


def _prune_by_operator(url: str) -> Callable[[], object]:
    def work() -> None:
        CheckpointStore(url).save_with_state(manifest(5), state_for(5))
        assert len(CheckpointStore(url).prune(1).deleted) == 4

    return work


RACERS = {"live-writer": _prune_by_live_writer, "operator-prune": _prune_by_operator}


@pytest.mark.parametrize("racer", sorted(RACERS))
def test_recovery_racing_a_prune_finds_the_newer_checkpoint(url: str, racer: str) -> None:
    setup = CheckpointStore(url)
    for checkpoint_id in range(1, 5):
        setup.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    reader, faults = faulty_store(url)
    # The reader has listed 1..4; then checkpoint 5 commits and 1..4 are pruned.
    faults.on_call("list", in_thread(RACERS[racer](url)))
    report = reader.recover_latest_validated()
    assert report.chosen_id == 5, report
    assert report.manifest is not None
    assert report.manifest.checkpoint_id == 5
    assert reader.load_state_data(5) == joined_state(5)


@pytest.mark.parametrize("racer", sorted(RACERS))
def test_load_latest_racing_a_prune_finds_the_newer_checkpoint(
    url: str, raw: Backend, racer: str
) -> None:
    setup = CheckpointStore(url)
    for checkpoint_id in range(1, 5):
        setup.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    raw.delete(LATEST)  # the pointer is lost: the reader must list
    reader, faults = faulty_store(url)
    faults.on_call("list", in_thread(RACERS[racer](url)))
    latest = reader.load_latest()
    assert latest is not None
    assert latest.checkpoint_id == 5


def test_recovery_still_reports_nothing_valid_when_nothing_is(url: str, raw: Backend) -> None:
    store, faults = faulty_store(url)
    CheckpointStore(url).save_with_state(manifest(1), state_for(1))
    raw.delete(state_key(1))
    report = store.recover_latest_validated()
    assert report.chosen_id is None
    assert report.skipped == ((1, "state.bin missing"),)
    assert faults.count("list") == 2  # one listing to walk, one to confirm nothing moved


# -- 6. a repair quarantines what it found invalid ---------------------------------------------


def _corrupt_newest(url: str, raw: Backend) -> None:
    """1, 2 valid; 3 with a flipped sidecar byte; latest.txt names 3."""
    store = CheckpointStore(url)
    for checkpoint_id in (1, 2, 3):
        store.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    data = bytearray(raw.get(state_key(3))[0])
    data[-5] ^= 0xFF
    raw.put(state_key(3), bytes(data))


def test_after_a_repair_readers_skip_the_quarantined_checkpoint(url: str, raw: Backend) -> None:
    _corrupt_newest(url, raw)
    original = raw.get(manifest_key(3))[0]
    store = CheckpointStore(url)
    assert store.load_latest().checkpoint_id == 3  # type: ignore[union-attr]
    quarantined = quarantine_invalid(store)
    assert [(item.checkpoint_id, item.reason) for item in quarantined] == [
        (3, "sidecar checksum mismatch")
    ]
    fresh = CheckpointStore(url)
    assert fresh.load_latest().checkpoint_id == 2  # type: ignore[union-attr]
    assert fresh.recover_latest_validated().chosen_id == 2
    # Recoverable: the manifest bytes and the sidecar are kept, and listed with the reason.
    assert raw.get(quarantine_key(3))[0] == original
    assert raw.exists(state_key(3))
    assert [(q.checkpoint_id, q.reason) for q in list_quarantined(fresh)] == [
        (3, "sidecar checksum mismatch")
    ]
    # A janitor, even long after, leaves the quarantined sidecar alone.
    janitor = CheckpointStore(url, store_clock=store_clock_ahead(10 * 86400))
    assert len(janitor.cleanup_orphans().deleted) == 0
    assert raw.exists(state_key(3))
    # An operator can put it back, byte for byte.
    restore_quarantined(fresh, 3)
    assert raw.get(manifest_key(3))[0] == original
    assert not raw.exists(quarantine_key(3))
    assert list_quarantined(fresh) == []
    assert fresh.load_latest().checkpoint_id == 3  # type: ignore[union-attr]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_quarantine_interrupted_at_any_request_is_completed_by_a_rerun(
    url: str, raw: Backend, when: str
) -> None:
    _corrupt_newest(url, raw)
    original = raw.get(manifest_key(3))[0]
    store, faults = faulty_store(url)
    report = store.recover_latest_validated()
    faults.clear_calls()
    quarantine_invalid(store, report)
    total = len(faults.calls)
    restore_quarantined(store, 3)
    for nth in range(1, total + 1):
        faults.clear_faults()
        getattr(faults, f"crash_{when}")("*", nth)
        with pytest.raises(SimulatedCrash):
            quarantine_invalid(store, report)
        faults.clear_faults()
        fresh = CheckpointStore(url)
        assert fresh.recover_latest_validated().chosen_id == 2
        assert [q.checkpoint_id for q in quarantine_invalid(fresh)] in ([3], [])
        assert fresh.load_latest().checkpoint_id == 2  # type: ignore[union-attr]
        assert raw.get(quarantine_key(3))[0] == original
        assert not raw.exists(manifest_key(3))
        restore_quarantined(fresh, 3)
        assert fresh.load_latest().checkpoint_id == 3  # type: ignore[union-attr]


def test_restore_never_overwrites_a_newer_commit_of_the_id(url: str, raw: Backend) -> None:
    _corrupt_newest(url, raw)
    store = CheckpointStore(url)
    assert [q.checkpoint_id for q in quarantine_invalid(store)] == [3]
    raw.delete(state_key(3))  # an operator cleared the damaged sidecar; the id is reused
    store.save(manifest(3, epoch=2))
    with pytest.raises(PreconditionFailedError, match="committed again"):
        restore_quarantined(store, 3)
    assert store.load_by_id(3).epoch == 2  # type: ignore[union-attr]
    assert raw.exists(quarantine_key(3))
    with pytest.raises(NotFoundError):
        restore_quarantined(store, 2)


def test_quarantine_leaves_valid_checkpoints_and_a_store_with_nothing_valid_alone(
    url: str, raw: Backend
) -> None:
    store = CheckpointStore(url)
    store.save_with_state(manifest(1), state_for(1))
    data = bytearray(raw.get(state_key(1))[0])
    data[-5] ^= 0xFF
    raw.put(state_key(1), bytes(data))
    assert quarantine_invalid(store) == []  # nothing valid: an operator must look first
    assert raw.exists(manifest_key(1))
    store.save_with_state(manifest(2), state_for(2))
    assert quarantine_invalid(store) == []  # the newest is valid: readers never see 1
    assert raw.exists(manifest_key(1))


def test_objstore_recover_repair_quarantines_and_show_returns_the_valid_one(
    url: str, raw: Backend
) -> None:
    _corrupt_newest(url, raw)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["recover", url, "--repair", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["quarantined"] == []
    assert raw.exists(manifest_key(3))  # a dry run moves nothing
    result = runner.invoke(cli.app, ["recover", url, "--repair", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["repair"]["applied"] is True
    assert document["quarantined"] == [{"id": 3, "reason": "sidecar checksum mismatch"}]
    result = runner.invoke(cli.app, ["show", url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint_id"] == 2
    assert CheckpointStore(url).load_latest().checkpoint_id == 2  # type: ignore[union-attr]
    assert raw.exists(quarantine_key(3))
    assert raw.exists(state_key(3))
