"""Crash matrix and real multi-process races for the CheckpointStore.

For every request an operation makes, the process "dies" just before it and just after it
(the fault injector raises SimulatedCrash). A fresh store on the same storage must then
find the newest committed checkpoint with both load_latest and recover_latest_validated, and
a fresh writer must be able to continue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from objstore import CheckpointConflict, CheckpointStore
from objstore.backends import open_backend
from objstore.checkpoint import ABORTED, manifest_key
from objstore.testing import SimulatedCrash
from objstore.testing.contract import run_processes
from tests.checkpoint_helpers import faulty_store, joined_state, manifest, state_for, sub_url

Setup = Callable[[CheckpointStore], None]
Operation = Callable[[CheckpointStore], object]


def _committed(count: int) -> Setup:
    def setup(store: CheckpointStore) -> None:
        for checkpoint_id in range(1, count + 1):
            store.save_with_state(
                manifest(checkpoint_id, sink_commit_statuses={"sink": "pending"}),
                state_for(checkpoint_id),
            )

    return setup


def _with_orphans(store: CheckpointStore) -> None:
    store.save_state_data(1, [b"orphan below a commit"])
    store.save_with_state(manifest(2), state_for(2))
    store.save_state_data(3, [b"stale orphan"])


OPERATIONS: dict[str, tuple[Setup, Operation, set[int]]] = {
    # name: (setup, operation, acceptable newest committed ids after a crash)
    "save_with_state": (
        _committed(2),
        lambda store: store.save_with_state(manifest(3), state_for(3)),
        {2, 3},
    ),
    "update_manifest": (
        _committed(2),
        lambda store: store.update_manifest(manifest(2).with_status("sink", "committed")),
        {2},
    ),
    "prune": (_committed(4), lambda store: store.prune(1), {4}),
    "cleanup_orphans": (_with_orphans, lambda store: store.cleanup_orphans(), {2}),
}


def _count_requests(url: str, setup: Setup, operation: Operation) -> int:
    setup(CheckpointStore(url))
    store, faults = faulty_store(url, store_clock=_far_future)
    operation(store)
    return len(faults.calls)


async def _far_future() -> float:
    """A store clock two centuries ahead, so every orphan is past its grace period."""
    return 8e9


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_crash_before_or_after_any_request_leaves_a_recoverable_store(
    store_url: str, name: str
) -> None:
    setup, operation, acceptable = OPERATIONS[name]
    total = _count_requests(sub_url(store_url, "clean"), setup, operation)
    assert total >= 2
    for nth in range(1, total + 1):
        for when in ("before", "after"):
            url = sub_url(store_url, f"{when}-{nth}")
            setup(CheckpointStore(url))
            store, faults = faulty_store(url, store_clock=_far_future)
            getattr(faults, f"crash_{when}")("*", nth)
            with pytest.raises(SimulatedCrash):
                operation(store)
            _assert_recoverable(url, acceptable, case=f"{name} crash {when} request {nth}")


def _assert_recoverable(url: str, acceptable: set[int], *, case: str) -> None:
    backend = open_backend(url)
    fresh = CheckpointStore(url)
    committed = [cid for cid in fresh.list_ids() if backend.exists(manifest_key(cid))]
    newest = max(committed)
    assert newest in acceptable, case
    latest = fresh.load_latest()
    assert latest is not None, case
    assert latest.checkpoint_id == newest, case
    report = fresh.recover_latest_validated()
    assert report.chosen_id == newest, (case, report)
    # Above the newest: orphans, or ids a janitor aborted (a tombstone) before it crashed.
    assert all("no manifest" in reason or reason == ABORTED for _, reason in report.skipped), (
        case,
        report.skipped,
    )
    assert fresh.load_state_data(newest) == joined_state(newest), case
    for checkpoint_id in committed:
        assert fresh.validate_checkpoint(checkpoint_id).valid, (case, checkpoint_id)
    next_id = fresh.next_checkpoint_id()
    fresh.save_with_state(manifest(next_id), state_for(next_id))
    assert CheckpointStore(url).load_latest().checkpoint_id == next_id, case  # type: ignore[union-attr]


# -- real processes ------------------------------------------------------------------------------


def _race_worker(url: str, epoch: int, barrier: Any, results: Any) -> None:
    store = CheckpointStore(url)
    store.async_store.backend.verify_fencing = True
    barrier.wait()
    try:
        store.save_with_state(manifest(1, epoch=epoch), {"writer": f"epoch-{epoch}".encode() * 64})
    except CheckpointConflict as exc:
        results.put((epoch, type(exc).__name__))
    except Exception as exc:
        results.put((epoch, f"error: {exc!r}"))
    else:
        results.put((epoch, "won"))


def test_processes_racing_for_one_id_have_one_winner(shared_store_url: str) -> None:
    outcomes = dict(run_processes(_race_worker, [(shared_store_url, e) for e in (1, 2, 3, 4)]))
    assert not [o for o in outcomes.values() if o.startswith("error")], outcomes
    winners = [epoch for epoch, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    winner = winners[0]
    for epoch, outcome in outcomes.items():
        if epoch != winner:
            assert outcome == ("FencedError" if winner > epoch else "CheckpointConflict")
    store = CheckpointStore(shared_store_url)
    assert store.load_latest().epoch == winner  # type: ignore[union-attr]
    assert store.load_state_data(1) == f"epoch-{winner}".encode() * 64
    assert store.recover_latest_validated().chosen_id == 1
