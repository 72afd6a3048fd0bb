"""The CheckpointStore's promises under retries and zombies (issue 10, items 1 and 2).

"A save that returned stays valid": a retried save meets its own earlier commit and completes
it (pointer, prune), never undoes it. "A newer epoch always wins": readers order checkpoints
by (epoch, id), ``claim_epoch`` fences older epochs before the new writer's first save, and
every later save by an older epoch raises ``FencedError``.

Runs on memory, file, s3 (moto server) and gs (emulator), like the other checkpoint tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from objstore import (
    AsyncCheckpointStore,
    CheckpointConflict,
    CheckpointStore,
    FencedError,
    PreconditionFailedError,
    TransientStorageError,
)
from objstore.backends import open_backend
from objstore.checkpoint import LATEST, manifest_key, state_key
from objstore.checkpoint._layout import PointerRecord, parse_pointer, pointer_text
from objstore.checkpoint._plan import LatestChoice, spare_newer_epochs
from objstore.testing import SimulatedCrash
from objstore.testing.contract import run_processes
from tests.checkpoint_helpers import faulty_store, joined_state, manifest, state_for

# -- item 1: a retried save completes its own commit -------------------------------------------


def _assert_committed_with_state(url: str, checkpoint_id: int, *, pointed: bool = True) -> None:
    fresh = CheckpointStore(url)
    latest = fresh.load_latest()
    assert latest is not None
    assert latest.checkpoint_id == checkpoint_id
    assert fresh.validate_checkpoint(checkpoint_id).valid
    assert fresh.load_state_data(checkpoint_id) == joined_state(checkpoint_id)
    report = fresh.recover_latest_validated()
    assert report.chosen_id == checkpoint_id, report
    if pointed:
        pointer = json.loads(open_backend(url).get(LATEST)[0])
        assert pointer["checkpoint_id"] == checkpoint_id


@pytest.mark.parametrize("failing", ["get", "put_if_match"])
def test_retried_save_after_the_pointer_failed_keeps_its_committed_state(
    store_url: str, failing: str
) -> None:
    store, faults = faulty_store(store_url)
    if failing == "put_if_match":  # the pointer exists and its version is remembered
        store.save_with_state(manifest(1), state_for(1))
    store.save_state_data(2, state_for(2), epoch=1)
    m = manifest(2)
    faults.fail_transiently(1.0, [failing])
    with pytest.raises(TransientStorageError):
        store.save(m)
    assert open_backend(store_url).exists(manifest_key(2))  # the commit had landed
    faults.clear_faults()
    saved = store.save(m)  # the caller retries the very same save
    assert saved.state_checksum is not None
    assert open_backend(store_url).exists(state_key(2))
    _assert_committed_with_state(store_url, 2)


def test_prune_failure_after_the_commit_neither_fails_nor_undoes_the_save(store_url: str) -> None:
    store, faults = faulty_store(store_url, max_retained=1)
    store.save_with_state(manifest(1), state_for(1))
    store.save_state_data(2, state_for(2), epoch=1)
    m = manifest(2)
    faults.fail_transiently(1.0, ["delete"])
    saved = store.save(m)  # housekeeping never fails a write that committed
    assert saved.checkpoint_id == 2
    faults.clear_faults()
    assert store.save(m).state_checksum == saved.state_checksum  # a retry anyway: harmless
    _assert_committed_with_state(store_url, 2)
    store.save_with_state(manifest(3), state_for(3))  # the next save prunes what was left
    assert CheckpointStore(store_url).list_ids() == [3]


def test_retried_save_with_state_completes_instead_of_conflicting(store_url: str) -> None:
    store, faults = faulty_store(store_url)
    store.save_with_state(manifest(1), state_for(1))
    m = manifest(2)
    faults.fail_transiently(1.0, ["put_if_match"])
    with pytest.raises(TransientStorageError):
        store.save_with_state(m, state_for(2))
    faults.clear_faults()
    saved = store.save_with_state(m, state_for(2))  # not CheckpointConflict against itself
    assert (saved.checkpoint_id, saved.epoch) == (2, 1)
    _assert_committed_with_state(store_url, 2)


def test_retried_save_with_state_after_its_sidecar_reply_was_lost(store_url: str) -> None:
    store, faults = faulty_store(store_url)
    store.save_with_state(manifest(1), state_for(1))
    faults.lose_response("put_if_absent", 1, key_contains="state.bin")
    faults.fail_transiently(1.0, ["get", "put_if_absent"])
    with pytest.raises(TransientStorageError):
        store.save_with_state(manifest(2), state_for(2))
    assert open_backend(store_url).exists(state_key(2))  # our sidecar landed, unconfirmed
    faults.clear_faults()
    store.save_with_state(manifest(2), state_for(2))
    _assert_committed_with_state(store_url, 2)


def test_retry_after_a_sink_update_completes_its_commit(store_url: str) -> None:
    store, faults = faulty_store(store_url)
    store.save_with_state(manifest(1), state_for(1))
    m = manifest(2, sink_commit_statuses={"kafka": "pending"})
    faults.fail_transiently(1.0, ["put_if_match"])
    with pytest.raises(TransientStorageError):
        store.save_with_state(m, state_for(2))
    faults.clear_faults()
    CheckpointStore(store_url).update_manifest(m.with_status("kafka", "committed"))
    saved = store.save_with_state(m, state_for(2))  # its own commit, updated since
    assert saved.sink_commit_statuses == {"kafka": "committed"}  # as stored
    _assert_committed_with_state(store_url, 2)


def test_retry_with_a_different_manifest_is_a_conflict_that_deletes_nothing(
    store_url: str,
) -> None:
    store, faults = faulty_store(store_url)
    store.save_with_state(manifest(1), state_for(1))
    store.save_state_data(2, state_for(2), epoch=1)
    faults.fail_transiently(1.0, ["put_if_match"])
    with pytest.raises(TransientStorageError):
        store.save(manifest(2))
    faults.clear_faults()
    with pytest.raises(CheckpointConflict) as conflict:
        store.save(dataclasses.replace(manifest(2), source_offsets={"events": {"p": 999}}))
    assert not isinstance(conflict.value, FencedError)
    _assert_committed_with_state(store_url, 2, pointed=False)  # the landed commit is untouched


def test_another_store_object_is_not_taken_for_the_committer(store_url: str) -> None:
    first, faults = faulty_store(store_url)
    first.save_state_data(1, state_for(1), epoch=1)
    faults.fail_transiently(1.0, ["get"])
    with pytest.raises(TransientStorageError):
        first.save(manifest(1))
    with pytest.raises(CheckpointConflict):
        CheckpointStore(store_url).save(manifest(1))
    _assert_committed_with_state(store_url, 1, pointed=False)


# -- item 2: a newer epoch always wins ---------------------------------------------------------


def test_sequential_zombie_with_a_higher_id_does_not_win(store_url: str) -> None:
    zombie, leader = CheckpointStore(store_url), CheckpointStore(store_url)
    zombie.save_with_state(manifest(5, epoch=1), state_for(5))
    zombie.save_with_state(manifest(7, epoch=1), state_for(7))
    leader.save_with_state(manifest(6, epoch=2), state_for(6))  # not told it lost
    fresh = CheckpointStore(store_url)
    latest = fresh.load_latest()
    assert latest is not None
    assert (latest.checkpoint_id, latest.epoch) == (6, 2)
    report = fresh.recover_latest_validated()
    assert report.chosen_id == 6, report
    assert 7 in dict(report.skipped)  # passed over, and said why
    with pytest.raises(FencedError) as fenced:
        zombie.save_with_state(manifest(8, epoch=1), state_for(8))
    assert (fenced.value.epoch, fenced.value.winner_epoch) == (1, 2)
    with pytest.raises(FencedError):
        CheckpointStore(store_url).save(manifest(9, epoch=1))  # a restarted zombie, too
    assert fresh.load_latest().checkpoint_id == 6  # type: ignore[union-attr]
    next_id = leader.next_checkpoint_id()
    leader.save_with_state(manifest(next_id, epoch=2), state_for(next_id))
    assert fresh.load_latest().checkpoint_id == next_id  # type: ignore[union-attr]
    assert fresh.recover_latest_validated().chosen_id == next_id


def test_zombie_moving_the_pointer_before_the_leaders_commit_is_visible(store_url: str) -> None:
    zombie, leader = CheckpointStore(store_url), CheckpointStore(store_url)
    for checkpoint_id in range(1, 6):
        zombie.save(manifest(checkpoint_id, epoch=1))
    leader.save_state_data(6, state_for(6), epoch=2)  # the leader is saving 6 ...
    zombie.save(manifest(7, epoch=1))  # ... while the zombie moves the pointer 5 → 7
    leader.save(manifest(6, epoch=2))  # both saves return
    fresh = CheckpointStore(store_url)
    assert (fresh.load_latest().checkpoint_id, fresh.load_latest().epoch) == (6, 2)  # type: ignore[union-attr]
    assert fresh.recover_latest_validated().chosen_id == 6
    for checkpoint_id in (8, 9):
        with pytest.raises(FencedError):
            zombie.save(manifest(checkpoint_id, epoch=1))
    leader.save_with_state(manifest(8, epoch=2), state_for(8))
    assert fresh.load_latest().checkpoint_id == 8  # type: ignore[union-attr]
    assert fresh.load_state_data(8) == joined_state(8)


def test_claim_epoch_fences_older_writers_before_the_first_save(store_url: str) -> None:
    zombie, leader = CheckpointStore(store_url), CheckpointStore(store_url)
    zombie.save_with_state(manifest(5, epoch=1), state_for(5))
    leader.claim_epoch(2)
    with pytest.raises(FencedError) as fenced:
        zombie.save_with_state(manifest(6, epoch=1), state_for(6))
    assert (fenced.value.epoch, fenced.value.winner_epoch) == (1, 2)
    with pytest.raises(FencedError):
        CheckpointStore(store_url).save(manifest(7, epoch=1))
    backend = open_backend(store_url)
    assert not backend.exists(manifest_key(6))  # the fenced commits were withdrawn
    assert not backend.exists(manifest_key(7))
    fresh = CheckpointStore(store_url)
    assert fresh.load_latest().checkpoint_id == 5  # type: ignore[union-attr]
    assert fresh.recover_latest_validated().chosen_id == 5
    leader.save_with_state(manifest(6, epoch=2), state_for(6))
    assert fresh.load_latest().checkpoint_id == 6  # type: ignore[union-attr]
    assert fresh.load_state_data(6) == joined_state(6)


def test_claim_epoch_on_an_empty_store_and_its_ordering(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.claim_epoch(3)
    store.claim_epoch(3)  # claiming the current epoch again is harmless
    assert store.load_latest() is None
    with pytest.raises(FencedError) as older:
        CheckpointStore(store_url).claim_epoch(2)
    assert (older.value.epoch, older.value.winner_epoch) == (2, 3)
    with pytest.raises(FencedError):
        CheckpointStore(store_url).save(manifest(1, epoch=2))
    assert CheckpointStore(store_url).load_latest() is None
    store.save(manifest(1, epoch=3))
    CheckpointStore(store_url).claim_epoch(4)
    with pytest.raises(FencedError):
        store.save(manifest(2, epoch=3))
    assert CheckpointStore(store_url).load_latest().checkpoint_id == 1  # type: ignore[union-attr]


def test_claim_epoch_on_the_async_face(store_url: str) -> None:
    async def scenario() -> None:
        zombie = AsyncCheckpointStore(store_url)
        leader = AsyncCheckpointStore(store_url)
        await zombie.save(manifest(1, epoch=1))
        await leader.claim_epoch(2)
        with pytest.raises(FencedError):
            await zombie.save(manifest(2, epoch=1))
        await leader.save(manifest(2, epoch=2))
        latest = await AsyncCheckpointStore(store_url).load_latest()
        assert latest is not None
        assert (latest.checkpoint_id, latest.epoch) == (2, 2)

    asyncio.run(scenario())


def test_zombie_commit_that_crashed_above_the_leader_is_never_restored(store_url: str) -> None:
    zombie, faults = faulty_store(store_url)
    zombie.save(manifest(1, epoch=1))
    leader = CheckpointStore(store_url)
    leader.claim_epoch(2)
    leader.save_with_state(manifest(2, epoch=2), state_for(2))
    faults.crash_after("put_if_absent", 1, key_contains="manifest.json")
    with pytest.raises(SimulatedCrash):  # the zombie dies between its commit and the pointer
        zombie.save_with_state(manifest(9, epoch=1), state_for(9))
    assert open_backend(store_url).exists(manifest_key(9))
    fresh = CheckpointStore(store_url)
    latest = fresh.load_latest()
    assert latest is not None
    assert (latest.checkpoint_id, latest.epoch) == (2, 2)
    report = fresh.recover_latest_validated()
    assert report.chosen_id == 2
    assert "epoch" in dict(report.skipped)[9]
    leader.save(manifest(3, epoch=2))
    assert fresh.load_latest().checkpoint_id == 3  # type: ignore[union-attr]


def test_claim_keeps_a_commit_that_landed_past_a_lagging_pointer(store_url: str) -> None:
    writer, faults = faulty_store(store_url)
    writer.save(manifest(1, epoch=1))
    faults.crash_before("put_if_match", 1)
    with pytest.raises(SimulatedCrash):  # committed, but the pointer lags at 1
        writer.save_with_state(manifest(2, epoch=1), state_for(2))
    CheckpointStore(store_url).claim_epoch(2)
    fresh = CheckpointStore(store_url)
    assert fresh.load_latest().checkpoint_id == 2  # type: ignore[union-attr]
    assert fresh.recover_latest_validated().chosen_id == 2


# -- the pure parts: pointer format, reader order, prune filter ----------------------------------


def test_pointer_formats_parse_and_garbage_is_none() -> None:
    assert parse_pointer(b"checkpoint_00000000000000000042") == PointerRecord(42)
    assert parse_pointer(b"checkpoint_7\n") == PointerRecord(7)
    text = pointer_text(6, 2, 3)
    assert text == b'{"checkpoint_id":6,"epoch":2,"fence_epoch":3,"format_version":2}'
    assert parse_pointer(text) == PointerRecord(6, 2, 3)
    assert parse_pointer(pointer_text(None, None, 4)) == PointerRecord(None, None, 4)
    for garbage in (
        b"",
        b"\xff\x00",
        b"[]",
        b'{"checkpoint_id":6,"epoch":3,"fence_epoch":2,"format_version":2}',  # epoch > fence
        b'{"checkpoint_id":0,"epoch":1,"fence_epoch":1,"format_version":2}',
        b'{"checkpoint_id":6,"epoch":true,"fence_epoch":1,"format_version":2}',
        b'{"checkpoint_id":6,"epoch":1,"fence_epoch":1,"format_version":3}',
        b'{"checkpoint_id":6,"epoch":null,"fence_epoch":1,"format_version":2}',
    ):
        assert parse_pointer(garbage) is None, garbage


def test_latest_choice_ranks_by_epoch_then_id_and_knows_when_to_stop() -> None:
    choice = LatestChoice(PointerRecord(6, 2, 2))
    assert choice.excluded(7, 1) is None  # first seen: best so far
    assert choice.take(7, 1) is None
    assert not choice.done_before(6)  # epoch 1 < fence 2: a lower id may still outrank it
    assert choice.excluded(6, 2) is None
    assert choice.take(6, 2) == (7, "epoch 1 is older than checkpoint 6's epoch 2")
    assert choice.done_before(5)
    assert choice.excluded(5, 1) == "epoch 1 is older than checkpoint 6's epoch 2"
    claimed = LatestChoice(PointerRecord(5, 1, 2))  # epoch 2 claimed, nothing saved by it
    claimed.take(9, 1)
    assert not claimed.done_before(6)
    assert claimed.done_before(5)  # below the pointer nothing returned outranks epoch 1
    legacy = LatestChoice(PointerRecord(5))  # format 1: the epoch is learned on the way
    legacy.take(6, 1)
    assert not legacy.done_before(5)
    assert legacy.excluded(5, 1) == "older than checkpoint 6 of the same epoch"
    assert legacy.done_before(4)
    nothing = LatestChoice(None)
    nothing.take(3, 9)
    assert not nothing.done_before(2)  # no pointer: every manifest must be read


def test_spare_newer_epochs_keeps_what_outranks_the_pruner() -> None:
    assert spare_newer_epochs([1, 2, 3, 4], [1, 2, None, 1], 1) == [1, 3, 4]
    assert spare_newer_epochs([1, 2], [1, 2], 2) == [1, 2]


# -- request counts (DESIGN §6) ----------------------------------------------------------------


def test_steady_state_costs(store_url: str) -> None:
    store, faults = faulty_store(store_url)
    store.claim_epoch(1)
    store.save_with_state(manifest(1), state_for(1))
    faults.clear_calls()
    store.save_with_state(manifest(2), state_for(2))
    assert faults.count(writes=True) == 3
    assert faults.count(writes=False) == 0
    reader, reader_faults = faulty_store(store_url)
    assert reader.load_latest().checkpoint_id == 2  # type: ignore[union-attr]
    assert reader_faults.count("get") == 2
    assert reader_faults.count("list") == 1
    assert reader_faults.count() == 3


def test_a_zombies_prune_spares_the_leaders_commit_in_flight(store_url: str) -> None:
    zombie = CheckpointStore(store_url, max_retained=1)
    zombie.save(manifest(5, epoch=1))
    zombie.save(manifest(7, epoch=1))
    leader, faults = faulty_store(store_url)
    leader.save_state_data(6, state_for(6), epoch=2)
    faults.fail_transiently(1.0, ["get"])  # the leader stalls between its commit and the pointer
    with pytest.raises(TransientStorageError):
        leader.save(manifest(6, epoch=2))
    zombie.save(manifest(8, epoch=1))  # its pointer move skips nothing; then it prunes to 1
    backend = open_backend(store_url)
    assert backend.exists(manifest_key(6))
    assert backend.exists(state_key(6))
    faults.clear_faults()
    leader.save(manifest(6, epoch=2))
    fresh = CheckpointStore(store_url)
    assert fresh.load_latest().checkpoint_id == 6  # type: ignore[union-attr]
    assert fresh.validate_checkpoint(6).valid
    assert fresh.load_state_data(6) == joined_state(6)
    with pytest.raises(FencedError):
        zombie.save(manifest(9, epoch=1))


def test_a_leaders_prune_removes_only_what_its_commit_outranks(store_url: str) -> None:
    """Simulator seed 1698: epoch 1 saved 2 (returned) and, as a zombie, landed 3; the
    leader (epoch 2, ``max_retained=1``) saves 1 and prunes. It deleted epoch 1's 2, which
    is retention, not a lost save: the leader's 1 outranks it in the (epoch, id) order
    readers choose by, and stays valid and restored; no checkpoint that outranks the
    leader's is touched."""
    old = CheckpointStore(store_url)
    old.save_with_state(manifest(2, epoch=1), state_for(2))
    old.save_with_state(manifest(3, epoch=1), state_for(3))
    leader = CheckpointStore(store_url, max_retained=1)
    leader.save_with_state(manifest(1, epoch=2), state_for(1))
    fresh = CheckpointStore(store_url)
    assert fresh.load_by_id(2) is None  # pruned: outranked by (2, 1)
    assert fresh.list() == [(1, 2), (3, 1)]
    assert fresh.load_latest().checkpoint_id == 1  # type: ignore[union-attr]
    assert fresh.recover_latest_validated().chosen_id == 1
    assert fresh.load_state_data(1) == joined_state(1)
    with pytest.raises(FencedError):
        old.save(manifest(4, epoch=1))


def test_a_janitors_prune_never_trusts_a_commit_that_may_still_be_withdrawn(
    store_url: str,
) -> None:
    """Simulator seed 4445: epoch 1 saved 1 and 2 (returned); epoch 2 claimed the store; a
    save of 3 by epoch 1 landed its manifest and is about to learn it is fenced and withdraw
    it. A janitor's ``prune(1)`` running then must not keep only 3 (above the pointer, not
    final) and delete 2: after the withdrawal nothing valid would be left."""
    writer, faults = faulty_store(store_url)
    writer.save_with_state(manifest(1, epoch=1), state_for(1))
    writer.save_with_state(manifest(2, epoch=1), state_for(2))
    CheckpointStore(store_url).claim_epoch(2)
    janitor = CheckpointStore(store_url)
    pruned: list[tuple[int, ...]] = []

    async def janitor_prunes() -> None:
        pruned.append((await asyncio.to_thread(janitor.prune, 1)).deleted)

    faults.on_call("put_if_match", janitor_prunes, when="before", key_contains="latest.txt")
    with pytest.raises(FencedError):
        writer.save_with_state(manifest(3, epoch=1), state_for(3))
    assert pruned == [(1,)]  # checkpoint 1 only: 2, named by latest.txt, is the anchor
    fresh = CheckpointStore(store_url)
    assert fresh.load_by_id(3) is None  # withdrawn
    assert fresh.load_latest().checkpoint_id == 2  # type: ignore[union-attr]
    assert fresh.recover_latest_validated().chosen_id == 2
    assert fresh.load_state_data(2) == joined_state(2)


def test_prune_never_deletes_a_sidecar_that_is_not_the_pruned_checkpoints_state(
    store_url: str,
) -> None:
    """Simulator seed 5635: a prune lists checkpoint 1 (saved without state) together with
    a sidecar another writer staged under the same id, deletes manifest 1, and that writer's
    save commits 1 with its state before the prune's next delete: the prune must not take
    the sidecar, which was never the pruned checkpoint's."""
    pruner, faults = faulty_store(store_url, max_retained=1)
    pruner.save(manifest(1))  # no state
    other = CheckpointStore(store_url)
    other.save_state_data(1, state_for(1), epoch=1)
    committed = []

    async def other_commits() -> None:
        committed.append(await asyncio.to_thread(other.save, manifest(1)))

    faults.on_call("delete", other_commits, when="after", key_contains="00001/manifest.json")
    pruner.save(manifest(2))
    assert len(committed) == 1
    assert committed[0].state_checksum is not None
    fresh = CheckpointStore(store_url)
    assert fresh.validate_checkpoint(1).valid
    assert fresh.load_state_data(1) == joined_state(1)


def test_prune_never_deletes_what_was_staged_after_the_manifest_it_listed_vanished(
    store_url: str,
) -> None:
    """Simulator seed 9620: a prune listed checkpoint 1, whose writer then withdrew it (its
    commit landed too late) and staged its state again; the prune read no manifest, deleted
    every object of the directory, the newly staged sidecar included, and the writer's save
    committed a manifest without state. A prune deletes a checkpoint only through the
    manifest it read (a conditional delete); a vanished or changed one is left alone."""
    CheckpointStore(store_url).save_with_state(manifest(1), state_for(1))
    writer = CheckpointStore(store_url)
    for checkpoint_id in (2, 3):
        writer.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    pruner, faults = faulty_store(store_url)
    raw = open_backend(store_url)

    def withdraw_and_stage_again() -> None:
        raw.delete(manifest_key(1))
        raw.delete(state_key(1))
        writer.save_state_data(1, state_for(1), epoch=1)

    async def withdrawn_and_staged_again() -> None:
        await asyncio.to_thread(withdraw_and_stage_again)

    faults.on_call(
        "get", withdrawn_and_staged_again, when="before", key_contains="00001/manifest.json"
    )
    pruner.prune(1)
    committed = writer.save(manifest(1))
    assert committed.state_checksum is not None
    fresh = CheckpointStore(store_url)
    assert fresh.validate_checkpoint(1).valid
    assert fresh.load_state_data(1) == joined_state(1)


def test_id_taken_after_a_claim_is_fenced_not_a_plain_conflict(store_url: str) -> None:
    first, second = CheckpointStore(store_url), CheckpointStore(store_url)
    first.save(manifest(1, epoch=1))
    CheckpointStore(store_url).claim_epoch(2)
    with pytest.raises(FencedError) as fenced:
        second.save(manifest(1, epoch=1))  # the id is taken by epoch 1, but 2 was claimed
    assert (fenced.value.epoch, fenced.value.winner_epoch) == (1, 2)


def test_a_claim_never_makes_readers_start_fresh(store_url: str) -> None:
    zombie, faults = faulty_store(store_url)
    CheckpointStore(store_url).claim_epoch(2)
    faults.crash_after("put_if_absent", 1, key_contains="manifest.json")
    with pytest.raises(SimulatedCrash):  # committed (the commit point), never withdrawn
        zombie.save_with_state(manifest(1, epoch=1), state_for(1))
    fresh = CheckpointStore(store_url)
    assert fresh.load_latest().checkpoint_id == 1  # type: ignore[union-attr]
    assert fresh.recover_latest_validated().chosen_id == 1
    CheckpointStore(store_url).save(manifest(2, epoch=2))
    assert fresh.load_latest().epoch == 2  # type: ignore[union-attr]
    assert fresh.recover_latest_validated().chosen_id == 2


# -- real processes ------------------------------------------------------------------------------


def _epoch_worker(url: str, epoch: int, barrier: Any, results: Any) -> None:
    """Claim ``epoch``, then save three checkpoints; report what returned and how it ended."""
    store = CheckpointStore(url)
    barrier.wait()
    saved: list[int] = []
    try:
        store.claim_epoch(epoch)
        while len(saved) < 3:
            checkpoint_id = store.next_checkpoint_id()
            try:
                store.save_with_state(manifest(checkpoint_id, epoch=epoch), state_for(epoch))
            except FencedError:
                raise
            except CheckpointConflict as exc:
                if exc.winner_epoch is not None and exc.winner_epoch > epoch:
                    results.put((epoch, saved, f"error: not fenced by a newer epoch: {exc!r}"))
                    return
                continue
            saved.append(checkpoint_id)
    except FencedError as exc:
        results.put((epoch, saved, f"fenced by {exc.winner_epoch}"))
    except Exception as exc:
        results.put((epoch, saved, f"error: {exc!r}"))
    else:
        results.put((epoch, saved, "done"))


def test_processes_claiming_epochs_leave_the_newest_epoch_in_charge(shared_store_url: str) -> None:
    outcomes = run_processes(_epoch_worker, [(shared_store_url, e) for e in (1, 2, 3, 4)])
    assert not [o for o in outcomes if o[2].startswith("error")], outcomes
    by_epoch = {epoch: (saved, end) for epoch, saved, end in outcomes}
    assert by_epoch[4] == (by_epoch[4][0], "done")  # nobody fences the newest epoch
    assert len(by_epoch[4][0]) == 3
    for epoch, (_, end) in by_epoch.items():
        if end != "done":
            assert int(end.split()[-1]) > epoch, outcomes
    store = CheckpointStore(shared_store_url)
    latest = store.load_latest()
    assert latest is not None
    assert (latest.epoch, latest.checkpoint_id) == (4, max(by_epoch[4][0])), outcomes
    assert store.recover_latest_validated().chosen_id == latest.checkpoint_id
    for checkpoint_id in by_epoch[4][0]:  # every save that returned is still there, whole
        assert store.validate_checkpoint(checkpoint_id).valid
        assert store.load_state_data(checkpoint_id) == joined_state(4)
    with pytest.raises(FencedError):
        store.save(manifest(store.next_checkpoint_id(), epoch=3))


def test_a_newer_epoch_is_never_told_it_lost_an_id_to_an_older_one(store_url: str) -> None:
    zombie, faults = faulty_store(store_url)
    leader = CheckpointStore(store_url)
    leader.claim_epoch(2)
    faults.crash_before("get", 1, key_contains="latest.txt")
    with pytest.raises(SimulatedCrash):  # the zombie's manifest 1 landed after the claim
        zombie.save_with_state(manifest(1, epoch=1), state_for(1))
    for save in (
        lambda: leader.save(manifest(1, epoch=2)),
        lambda: leader.save_with_state(manifest(1, epoch=2), state_for(1)),
    ):
        with pytest.raises(CheckpointConflict) as occupied:
            save()
        assert not isinstance(occupied.value, FencedError)
        assert occupied.value.winner_epoch is None  # it did not lose to epoch 1
        assert "older epoch 1" in str(occupied.value)
    leader.save_with_state(manifest(leader.next_checkpoint_id(), epoch=2), state_for(2))
    assert CheckpointStore(store_url).load_latest().epoch == 2  # type: ignore[union-attr]


def test_retried_streamed_save_with_state_after_its_sidecar_reply_was_lost(store_url: str) -> None:
    store, faults = faulty_store(store_url, single_put_limit=64)
    faults.lose_response("put_if_absent_stream", 1)
    with pytest.raises(TransientStorageError):
        store.save_with_state(manifest(1), state_for(1))
    assert open_backend(store_url).exists(state_key(1))  # landed, unconfirmed
    # A stream cannot be sent twice: the retry first removes its own stale sidecar.
    store.save_with_state(manifest(1), state_for(1))
    _assert_committed_with_state(store_url, 1)
    faults.lose_response("put_if_absent", 1, key_contains="manifest.json")
    faults.fail_transiently(1.0, ["put_if_absent", "get"])
    with pytest.raises(TransientStorageError):  # sidecar and manifest landed, unconfirmed
        store.save_with_state(manifest(2), state_for(2))
    assert open_backend(store_url).exists(manifest_key(2))
    faults.clear_faults()
    store.save_with_state(manifest(2), state_for(2))  # completes the landed commit
    _assert_committed_with_state(store_url, 2)


# -- review findings: fences that must hold whatever a writer remembers or finds --------------


def test_a_zombie_saving_below_its_remembered_pointer_is_fenced(store_url: str) -> None:
    zombie = CheckpointStore(store_url)
    zombie.save(manifest(1, epoch=1))
    zombie.save(manifest(5, epoch=1))  # the zombie remembers the pointer at (1, 5)
    leader = CheckpointStore(store_url)
    leader.claim_epoch(2)
    leader.save(manifest(6, epoch=2))
    with pytest.raises(FencedError) as fenced:
        zombie.save(manifest(3, epoch=1))  # an id below what it remembers
    assert (fenced.value.epoch, fenced.value.winner_epoch) == (1, 2)
    assert not open_backend(store_url).exists(manifest_key(3))  # withdrawn
    assert CheckpointStore(store_url).load_latest().checkpoint_id == 6  # type: ignore[union-attr]


def test_an_out_of_order_save_of_the_same_epoch_still_returns(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save(manifest(5, epoch=1))
    assert store.save(manifest(3, epoch=1)).checkpoint_id == 3  # nothing to move, not fenced
    assert CheckpointStore(store_url).load_latest().checkpoint_id == 5  # type: ignore[union-attr]


@pytest.mark.parametrize("pointer", ["missing", "garbage"])
def test_a_zombie_recreating_a_lost_pointer_never_outranks_a_newer_epoch(
    store_url: str, pointer: str
) -> None:
    CheckpointStore(store_url).save(manifest(5, epoch=1))
    leader = CheckpointStore(store_url)
    leader.claim_epoch(2)
    leader.save_with_state(manifest(6, epoch=2), state_for(6))
    backend = open_backend(store_url)
    if pointer == "missing":
        backend.delete(LATEST)
    else:
        backend.put(LATEST, b"\x00not a pointer")
    assert CheckpointStore(store_url).load_latest().epoch == 2  # type: ignore[union-attr]
    with pytest.raises(FencedError) as fenced:
        CheckpointStore(store_url).save(manifest(9, epoch=1))
    assert (fenced.value.epoch, fenced.value.winner_epoch) == (1, 2)
    assert not backend.exists(manifest_key(9))
    fresh = CheckpointStore(store_url)
    latest = fresh.load_latest()
    assert latest is not None
    assert (latest.checkpoint_id, latest.epoch) == (6, 2)
    assert fresh.recover_latest_validated().chosen_id == 6
    record = parse_pointer(backend.get(LATEST)[0])
    assert record is not None
    assert record.fence_epoch == 2  # the re-created pointer fences epoch 1 again
    leader.save_with_state(manifest(10, epoch=2), state_for(10))  # the leader carries on
    assert fresh.load_latest().checkpoint_id == 10  # type: ignore[union-attr]


def test_a_lost_pointer_is_recreated_by_the_next_save(store_url: str) -> None:
    store = CheckpointStore(store_url)
    store.save(manifest(1, epoch=1))
    open_backend(store_url).delete(LATEST)
    store.save(manifest(2, epoch=1))
    record = parse_pointer(open_backend(store_url).get(LATEST)[0])
    assert record == PointerRecord(2, 1, 1)


def test_cleanup_keeps_an_unfenced_writers_sidecar_below_a_newer_epochs_crashed_commit(
    store_url: str,
) -> None:
    writer = CheckpointStore(store_url)
    writer.save(manifest(1, epoch=1))
    writer.save_state_data(2, state_for(2), epoch=1)  # saving 2 ...
    crashed, faults = faulty_store(store_url)
    faults.crash_before("get", 1, key_contains="latest.txt")
    with pytest.raises(SimulatedCrash):  # ... while epoch 2 commits 3 and dies before its
        crashed.save(manifest(3, epoch=2))  # pointer move: it fences nobody
    result = CheckpointStore(store_url).cleanup_orphans()
    assert 2 not in result.planned
    assert result.deleted == ()
    saved = writer.save(manifest(2, epoch=1))  # the live writer's save is not harmed
    assert saved.state_checksum is not None
    fresh = CheckpointStore(store_url)
    assert fresh.validate_checkpoint(2).valid
    assert fresh.load_state_data(2) == joined_state(2)


def test_cleanup_frees_a_fenced_writers_sidecar_at_once(store_url: str) -> None:
    zombie = CheckpointStore(store_url)
    zombie.save(manifest(1, epoch=1))
    zombie.save_state_data(2, state_for(2), epoch=1)
    leader = CheckpointStore(store_url)
    leader.claim_epoch(2)
    leader.save(manifest(3, epoch=2))
    assert CheckpointStore(store_url).cleanup_orphans().deleted == (2,)
    with pytest.raises(FencedError):
        zombie.save(manifest(2, epoch=1))
    assert CheckpointStore(store_url).load_latest().checkpoint_id == 3  # type: ignore[union-attr]


def test_claiming_an_older_epoch_than_a_committed_one_is_fenced_without_a_pointer(
    store_url: str,
) -> None:
    CheckpointStore(store_url).save(manifest(4, epoch=3))
    open_backend(store_url).delete(LATEST)
    with pytest.raises(FencedError) as fenced:
        CheckpointStore(store_url).claim_epoch(2)
    assert (fenced.value.epoch, fenced.value.winner_epoch) == (2, 3)
    assert not open_backend(store_url).exists(LATEST)  # nothing claimed


def _newer_epoch_saves_and_the_pointer_is_lost(url: str, checkpoint_id: int, epoch: int) -> Any:
    """A hook: a newer epoch's save returns, then ``latest.txt`` is deleted again."""

    def run() -> None:
        CheckpointStore(url).save_with_state(
            manifest(checkpoint_id, epoch=epoch), state_for(checkpoint_id)
        )
        open_backend(url).delete(LATEST)

    async def hook() -> None:
        await asyncio.to_thread(run)

    return hook


def test_a_save_recreating_the_pointer_sees_a_newer_epoch_that_returned_meanwhile(
    store_url: str,
) -> None:
    CheckpointStore(store_url).save(manifest(1, epoch=1))
    open_backend(store_url).delete(LATEST)
    zombie, faults = faulty_store(store_url)
    hook = _newer_epoch_saves_and_the_pointer_is_lost(store_url, 2, 2)
    faults.on_call("put_if_absent", hook, when="before", key_contains="latest.txt")
    with pytest.raises(FencedError) as fenced:  # its listing predates epoch 2's save
        zombie.save(manifest(5, epoch=1))
    assert (fenced.value.epoch, fenced.value.winner_epoch) == (1, 2)
    fresh = CheckpointStore(store_url)
    assert (fresh.load_latest().checkpoint_id, fresh.load_latest().epoch) == (2, 2)  # type: ignore[union-attr]
    assert parse_pointer(open_backend(store_url).get(LATEST)[0]) == PointerRecord(2, 2, 2)


def test_a_claim_recreating_the_pointer_sees_a_newer_epoch_that_returned_meanwhile(
    store_url: str,
) -> None:
    claimer, faults = faulty_store(store_url)
    hook = _newer_epoch_saves_and_the_pointer_is_lost(store_url, 1, 3)
    faults.on_call("put_if_absent", hook, when="before", key_contains="latest.txt")
    with pytest.raises(FencedError) as fenced:
        claimer.claim_epoch(2)
    assert (fenced.value.epoch, fenced.value.winner_epoch) == (2, 3)
    record = parse_pointer(open_backend(store_url).get(LATEST)[0])
    assert record is not None
    assert record.fence_epoch == 3


def test_a_fenced_commit_is_withdrawn_even_after_a_sink_updated_it(store_url: str) -> None:
    zombie, faults = faulty_store(store_url)
    zombie.save_with_state(manifest(1, epoch=1), state_for(1))
    CheckpointStore(store_url).claim_epoch(2)

    def sink_commits() -> None:
        sink = CheckpointStore(store_url)
        stored = sink.load_by_id(2)
        assert stored is not None
        sink.update_manifest(stored.with_status("a", "committed"))

    async def hook() -> None:
        await asyncio.to_thread(sink_commits)

    faults.on_call("delete", hook, when="before", key_contains=manifest_key(2))
    with pytest.raises(FencedError):
        zombie.save_with_state(
            manifest(2, epoch=1, sink_commit_statuses={"a": "pending"}), state_for(2)
        )
    backend = open_backend(store_url)
    assert not backend.exists(manifest_key(2))  # withdrawn all the same
    assert not backend.exists(state_key(2))


def test_a_retry_never_commits_a_sidecar_it_began_deleting_after_losing_the_id(
    store_url: str,
) -> None:
    """Simulator seed 2041: the save's manifest create met another writer's commit (which
    was then withdrawn), the delete of its own sidecar failed, the caller retried."""
    store, faults = faulty_store(store_url)
    store.save_state_data(1, state_for(1), epoch=2)
    CheckpointStore(store_url).save(manifest(1, epoch=2))  # another writer takes the id

    async def the_other_commit_is_withdrawn() -> None:
        await asyncio.to_thread(open_backend(store_url).delete, manifest_key(1))

    faults.on_call("get", the_other_commit_is_withdrawn, key_contains=manifest_key(1))
    faults.fail_transiently(1.0, ["delete"])
    with pytest.raises(TransientStorageError):
        store.save(manifest(1, epoch=2))
    faults.clear_faults()
    with pytest.raises(PreconditionFailedError):  # not a commit without its state
        store.save(manifest(1, epoch=2))
    assert not open_backend(store_url).exists(manifest_key(1))
