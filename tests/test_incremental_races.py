"""Incremental checkpoints under crashes and races: a crash before or after every request
of an incremental save and of a shared-object GC run, racing writers, janitors (GC) and an
operator's prune in threads and in processes. The promise checked: every save that returned
and whose checkpoint is retained validates and restores byte-identical; a crash leaves a
store that recovers and whose garbage a later GC collects.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from objstore import CheckpointConflict, CheckpointManifest, CheckpointStore
from objstore.backends import open_backend
from objstore.checkpoint import _incremental
from objstore.checkpoint._shared import SHARED, is_shared_key
from objstore.errors import ObjstoreError
from objstore.testing import SimulatedCrash
from objstore.testing.contract import run_processes
from tests.checkpoint_helpers import faulty_store, sub_url
from tests.conftest import make_store_url

CHUNKS = 8


@pytest.fixture(params=["memory", "file", "s3"])
def inc_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request.param, request, tmp_path)


CRASH_CASES = [(kind, when) for kind in ("memory", "file") for when in ("before", "after", "lose")]
CRASH_CASES.append(("s3", "lose"))
"""Every crash mode on memory and a local directory; on moto S3 the lost response (the write
landed, the caller never heard): the full matrix there takes minutes."""


@pytest.fixture(params=["file", "s3"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request.param, request, tmp_path)


def state_of(seed: int) -> dict[str, bytes]:
    """Chunks of which only ``op-{seed % CHUNKS}`` depends on ``seed`` beyond the first."""
    chunks = {f"op-{i}": random.Random(1000 + i).randbytes(512) for i in range(CHUNKS)}
    chunks[f"op-{seed % CHUNKS}"] = random.Random(seed).randbytes(512)
    return chunks


def _points(calls: list[Any]) -> list[tuple[str, int]]:
    seen: Counter[str] = Counter()
    points = []
    for call in calls:
        seen[call.operation] += 1
        points.append((call.operation, seen[call.operation]))
    return points


def _shared_keys(url: str) -> set[str]:
    backend = open_backend(url, verify_fencing=False)
    try:
        return {info.key for info in backend.list(SHARED) if is_shared_key(info.key)}
    finally:
        backend.close()


def _check_retained(url: str, expected: dict[int, dict[str, bytes]]) -> None:
    reader = CheckpointStore(url)
    for checkpoint_id in reader.list_ids():
        if checkpoint_id in expected:
            assert reader.validate_checkpoint(checkpoint_id).valid, checkpoint_id
            assert reader.load_state(checkpoint_id) == expected[checkpoint_id]


def _save_setup(url: str) -> tuple[CheckpointStore, Any]:
    store, faults = faulty_store(url)
    store.save_incremental(CheckpointManifest(1, 1), state_of(1))
    faults.clear_calls()
    return store, faults


@pytest.mark.parametrize(("kind", "when"), CRASH_CASES)
def test_crash_at_any_request_of_an_incremental_save(
    kind: str, when: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    inc_url = make_store_url(kind, request, tmp_path)
    store, faults = _save_setup(sub_url(inc_url, "count"))
    store.save_incremental(CheckpointManifest(2, 1), state_of(2))
    points = _points(faults.calls)
    assert len(points) >= 6
    expected = {1: state_of(1), 2: state_of(2)}
    for index, (operation, nth) in enumerate(points):
        url = sub_url(inc_url, f"{when}-{index}")
        store, faults = _save_setup(url)
        {"before": faults.crash_before, "after": faults.crash_after, "lose": faults.lose_response}[
            when
        ](operation, nth)
        with contextlib.suppress(SimulatedCrash, ObjstoreError, OSError):
            store.save_incremental(CheckpointManifest(2, 1), state_of(2))
        fresh = CheckpointStore(url, orphan_grace_seconds=0)
        chosen = fresh.recover_latest_validated().chosen_id
        assert chosen in (1, 2), (operation, nth)
        assert fresh.load_state(chosen) == expected[chosen]
        fresh.cleanup_orphans(0)
        fresh.collect_shared(0)
        assert fresh.recover_latest_validated().chosen_id == chosen
        fresh.save_incremental(CheckpointManifest(3, 1), state_of(3), base=chosen)
        assert fresh.load_state(3) == state_of(3)
        _check_retained(url, {**expected, 3: state_of(3)})


def _gc_setup(url: str) -> dict[int, dict[str, bytes]]:
    store = CheckpointStore(url)
    for checkpoint_id in range(1, 5):
        store.save_incremental(CheckpointManifest(checkpoint_id, 1), state_of(checkpoint_id))
    store.prune(2)
    return {3: state_of(3), 4: state_of(4)}


@pytest.mark.parametrize(("kind", "when"), CRASH_CASES)
def test_crash_at_any_request_of_a_gc_run(
    kind: str, when: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    inc_url = make_store_url(kind, request, tmp_path)
    _gc_setup(sub_url(inc_url, "count"))
    gc, faults = faulty_store(sub_url(inc_url, "count"), orphan_grace_seconds=0)
    assert len(gc.collect_shared().deleted) > 0
    points = _points(faults.calls)
    if kind == "s3":
        points = points[::2]  # every other request on moto (all of them on memory and file)
    for index, (operation, nth) in enumerate(points):
        url = sub_url(inc_url, f"{when}-{index}")
        retained = _gc_setup(url)
        gc, faults = faulty_store(url, orphan_grace_seconds=0)
        {"before": faults.crash_before, "after": faults.crash_after, "lose": faults.lose_response}[
            when
        ](operation, nth)
        with contextlib.suppress(SimulatedCrash, ObjstoreError, OSError):
            gc.collect_shared()
        _check_retained(url, retained)
        writer = CheckpointStore(url)  # a writer saving on a retained base after the crash
        writer.save_incremental(CheckpointManifest(5, 1), state_of(5), base=4)
        retained[5] = state_of(5)
        again = CheckpointStore(url, orphan_grace_seconds=0)
        again.collect_shared()
        _check_retained(url, retained)
        needed: set[str] = set()
        for checkpoint_id in again.list_ids():
            needed |= _incremental.refs_of(again.load_by_id(checkpoint_id))
        assert _shared_keys(url) == needed, (operation, nth)  # the garbage was collected


# -- races ------------------------------------------------------------------------------------


def _writer(url: str, ids: range, saved: dict[int, dict[str, bytes]]) -> None:
    store = CheckpointStore(url, max_retained=3)
    for checkpoint_id in ids:
        state = state_of(checkpoint_id)
        try:
            store.save_incremental(CheckpointManifest(checkpoint_id, 1), state)
        except (CheckpointConflict, ObjstoreError):
            continue  # lost the id, or withdrawn (a GC storm): not returned, nothing promised
        saved[checkpoint_id] = state


def _janitor(url: str, stop: threading.Event) -> int:
    store = CheckpointStore(url, orphan_grace_seconds=0)
    runs = 0
    while not stop.is_set():
        store.collect_shared(0)
        runs += 1
        stop.wait(0.01)  # a GC storm still, without starving the writers on one moto server
    return runs


def _operator(url: str, stop: threading.Event) -> None:
    store = CheckpointStore(url)
    while not stop.is_set():
        store.prune(2)
        stop.wait(0.01)


def test_racing_writers_janitors_and_prune_in_threads(inc_url: str) -> None:
    saved: dict[int, dict[str, bytes]] = {}
    stop = threading.Event()
    writers = [
        threading.Thread(target=_writer, args=(inc_url, range(start, 24, 2), saved))
        for start in (1, 2)
    ]
    others = [
        threading.Thread(target=_janitor, args=(inc_url, stop)),
        threading.Thread(target=_janitor, args=(inc_url, stop)),
        threading.Thread(target=_operator, args=(inc_url, stop)),
    ]
    for thread in writers + others:
        thread.start()
    for thread in writers:
        thread.join(300)
    stop.set()
    for thread in others:
        thread.join(300)
    assert len(saved) >= 6
    _check_retained(inc_url, saved)
    assert CheckpointStore(inc_url).recover_latest_validated().chosen_id is not None


def _process_role(url: str, role: str, first: int, barrier: Any, results: Any) -> None:
    barrier.wait()
    if role == "writer":
        saved: dict[int, dict[str, bytes]] = {}
        _writer(url, range(first, first + 16, 2), saved)
        results.put(sorted(saved))
        return
    store = CheckpointStore(url, orphan_grace_seconds=0)
    for _ in range(12):
        if role == "janitor":
            store.collect_shared(0)
        else:
            store.prune(2)
    results.put([])


def test_racing_writers_janitors_and_prune_in_processes(shared_url: str) -> None:
    outcomes = run_processes(
        _process_role,
        [
            (shared_url, "writer", 1),
            (shared_url, "writer", 2),
            (shared_url, "janitor", 0),
            (shared_url, "operator", 0),
        ],
    )
    returned = {cid for ids in outcomes for cid in ids}
    assert returned
    _check_retained(shared_url, {cid: state_of(cid) for cid in returned})
    assert CheckpointStore(shared_url).recover_latest_validated().chosen_id is not None
