"""Parallel checkpoints: a coordinator, workers writing parts, one fenced commit (format 2).

Runs on memory, file and moto S3 through both faces (the blocking classes, and the async
ones driven from a loop the test owns). Real engines (a Dask ``LocalCluster`` with worker
processes, a ``ProcessPoolExecutor``) are in ``tests/test_parallel_engines.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from objstore import (
    AsyncCheckpointStore,
    CheckpointConflict,
    CheckpointManifest,
    CheckpointStore,
    ConflictError,
    CorruptionError,
    FencedError,
    PartReceipt,
    PartTicket,
    ReceiptError,
    key_group_parts,
    write_part,
    write_part_async,
)
from objstore.backends import AsyncBackend, Backend, open_backend, open_transport
from objstore.checkpoint import ABORTED, AsyncParallelJob, manifest_key, part_key, state_key
from objstore.testing import FaultInjectingTransport, SimulatedCrash
from objstore.testing.contract import LoopDriven
from tests.checkpoint_helpers import instant_retry, joined_state, manifest, state_for, sub_url
from tests.conftest import make_store_url

COMBOS = [(face, kind) for face in ("sync", "async") for kind in ("memory", "file", "s3")]
LOCAL = [(face, kind) for face in ("sync", "async") for kind in ("memory", "file")]


def part_state(name: str, checkpoint_id: int = 1) -> dict[str, bytes]:
    """The state a worker saves for part ``name``: two named frames, different per part."""
    return {
        "window": f"{name}:{checkpoint_id};".encode() * 40,
        "counts": bytes(range(256)) + name.encode(),
    }


class Face:
    """A coordinator's store and its workers, through the blocking or the async face."""

    def __init__(self, face: str, url: str) -> None:
        self.face = face
        self.url = url
        self.loop = asyncio.new_event_loop() if face == "async" else None
        self.stores: list[Any] = []

    def store(self, location: Any = None, **options: Any) -> Any:
        """A coordinator store (``LoopDriven`` async store on the async face)."""
        location = self.url if location is None else location
        if self.loop is None:
            if isinstance(location, AsyncBackend):
                location = Backend(location)
            opened: Any = CheckpointStore(location, **options)
        else:
            if isinstance(location, Backend):
                location = location.async_backend
            opened = LoopDriven(AsyncCheckpointStore(location, **options), self.loop)
        self.stores.append(opened)
        return opened

    def begin(self, store: Any, checkpoint_id: int, epoch: int, parts: Any) -> Any:
        """``store.begin_parallel``: a ``ParallelJob`` or an ``AsyncParallelJob``."""
        job = store.begin_parallel(checkpoint_id, epoch, parts)
        assert isinstance(job, AsyncParallelJob) == (self.loop is not None)
        return job

    def write(self, ticket: PartTicket, state: Any, backend: Any = None) -> PartReceipt:
        """``write_part`` (or ``write_part_async`` on the test's loop)."""
        if self.loop is None:
            return write_part(ticket, state, backend=backend)
        if isinstance(backend, Backend):
            backend = backend.async_backend
        return self.loop.run_until_complete(write_part_async(ticket, state, backend=backend))

    def commit(self, job: Any, receipts: Any, **fields: Any) -> CheckpointManifest:
        """``job.commit``."""
        if self.loop is None:
            return job.commit(receipts, **fields)  # type: ignore[no-any-return]
        return self.loop.run_until_complete(job.commit(receipts, **fields))  # type: ignore[no-any-return]

    def write_all(self, job: Any, checkpoint_id: int = 1, backend: Any = None) -> list[PartReceipt]:
        """Every part of ``job`` written with :func:`part_state`."""
        return [
            self.write(ticket, part_state(ticket.part, checkpoint_id), backend)
            for ticket in job.tickets
        ]

    def close(self) -> None:
        for store in self.stores:
            store.close()
        if self.loop is not None:
            self.loop.close()


def _combo_id(combo: tuple[str, str]) -> str:
    return "-".join(combo)


@pytest.fixture(params=COMBOS, ids=_combo_id)
def face(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Face]:
    kind_face, kind = request.param
    opened = Face(kind_face, make_store_url(kind, request, tmp_path))
    yield opened
    opened.close()


@pytest.fixture(params=LOCAL, ids=_combo_id)
def local_face(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Face]:
    kind_face, kind = request.param
    opened = Face(kind_face, make_store_url(kind, request, tmp_path))
    yield opened
    opened.close()


def _keys(url: str) -> list[str]:
    return [info.key for info in open_backend(url, verify_fencing=False).list("")]


def faulty(url: str) -> tuple[AsyncBackend, FaultInjectingTransport]:
    """A backend on ``url`` whose requests go through a fault injector (no probe)."""
    faults = FaultInjectingTransport(open_transport(url))
    return AsyncBackend(faults, retry=instant_retry(), verify_fencing=False), faults


# -- the round trip -------------------------------------------------------------------------------


def test_parallel_checkpoint_round_trip(face: Face) -> None:
    store = face.store()
    store.save_with_state(manifest(1), state_for(1))
    job = face.begin(store, 2, 1, key_group_parts(4, 128))
    assert [t.part for t in job.tickets] == [
        "kg-0000-0031",
        "kg-0032-0063",
        "kg-0064-0095",
        "kg-0096-0127",
    ]
    receipts = face.write_all(job, 2)
    committed = face.commit(
        job, reversed(receipts), source_offsets={"events": {"p0": 20}}, metadata={"n": 4}
    )
    assert committed.format_version == 2
    assert [part.name for part in committed.parts] == [t.part for t in job.tickets]
    assert committed.state_checksum is None
    prefix = "checkpoints/checkpoint_00000000000000000002"
    assert [key for key in _keys(face.url) if key.startswith(prefix)] == [
        f"{prefix}/manifest.json",
        *(f"{prefix}/parts/{ticket.part}.bin" for ticket in job.tickets),
    ]
    fresh = face.store()
    latest = fresh.load_latest()
    assert latest == committed
    assert latest.source_offsets == {"events": {"p0": 20}}
    assert latest.part("kg-0032-0063").key_groups == (32, 63)
    for ticket in job.tickets:
        expected = part_state(ticket.part, 2)
        assert fresh.load_part(2, ticket.part) == b"".join(expected.values())
        assert fresh.load_part_frame(2, ticket.part, "counts") == expected["counts"]
        assert fresh.load_part_frame(2, ticket.part, 0) == expected["window"]
    assert fresh.load_state(2) == {
        f"{t.part}/{frame}": data
        for t in job.tickets
        for frame, data in part_state(t.part, 2).items()
    }
    assert fresh.load_state_data(2) == b"".join(fresh.load_state(2).values())
    assert fresh.validate_checkpoint(2).valid
    assert fresh.validate_checkpoint(2, range_size=64).valid  # streamed, in ranges
    report = fresh.recover_latest_validated()
    assert (report.chosen_id, report.skipped) == (2, ())
    with pytest.raises(KeyError):
        fresh.load_part(2, "kg-9999-9999")
    with pytest.raises(KeyError):
        fresh.load_part(1, "kg-0000-0031")  # a single-writer checkpoint has no parts
    with pytest.raises(KeyError):
        fresh.load_part_frame(2, "kg-0000-0031", "missing")
    fresh.save_with_state(manifest(3), state_for(3))  # format 1 again, above a parts checkpoint
    assert fresh.list() == [(1, 1), (2, 1), (3, 1)]
    assert fresh.load_state_data(3) == joined_state(3)


def test_tickets_and_receipts_pickle_and_carry_what_a_worker_needs(
    s3_url: str, moto_server: str
) -> None:
    url = s3_url
    options = {"endpoint_url": moto_server}
    store = CheckpointStore(url, compression_level=5, storage_options=options)
    job = store.begin_parallel(7, 3, [("a", (0, 9)), "b"])
    ticket = pickle.loads(pickle.dumps(job.ticket("a")))
    assert ticket == job.tickets[0]
    assert (ticket.url, ticket.checkpoint_id, ticket.epoch, ticket.part) == (url, 7, 3, "a")
    assert (ticket.key_groups, ticket.compression_level) == ((0, 9), 5)
    assert ticket.storage_options == options
    assert ticket.job_nonce == job.job_nonce
    assert job.ticket("b").key_groups is None
    receipt = write_part(ticket, b"state of a")
    assert pickle.loads(pickle.dumps(receipt)) == receipt
    assert (receipt.part, receipt.key, receipt.checkpoint_id, receipt.epoch) == (
        "a",
        part_key(7, "a"),
        7,
        3,
    )
    assert receipt.size == open_backend(url).head(receipt.key).size
    assert receipt.raw_size == len(b"state of a")
    assert len(receipt.frames) == 1
    with pytest.raises(KeyError):
        job.ticket("c")
    store.close()


@pytest.mark.parametrize(
    "parts",
    [[], ["a", "a"], ["a/b"], [".."], {"a": (5, 1)}, {"a": (-1, 3)}, "ab", [3]],
)
def test_bad_plans_are_refused_before_any_request(parts: Any) -> None:
    store = CheckpointStore("memory://parallel-bad-plans")
    with pytest.raises((ValueError, TypeError)):
        store.begin_parallel(1, 1, parts)
    assert _keys("memory://parallel-bad-plans") == []
    store.close()


# -- receipts that are not this checkpoint's ------------------------------------------------------


def test_commit_refuses_receipts_that_are_not_exactly_its_parts(local_face: Face) -> None:
    face = local_face
    store = face.store()
    job = face.begin(store, 2, 1, ["a", "b", "c"])
    other = face.begin(store, 3, 1, ["a", "b", "c"])
    receipts = face.write_all(job, 2)
    foreign = face.write_all(other, 3)
    same_id = face.begin(store, 2, 1, ["a", "b", "c"])  # another job for the same id

    def refused(candidate: list[Any], parts: tuple[str, ...]) -> None:
        with pytest.raises(ReceiptError) as caught:
            face.commit(job, candidate)
        assert caught.value.parts == parts
        assert caught.value.checkpoint_id == 2
        assert isinstance(caught.value, ValueError)

    refused([receipts[0], receipts[1], foreign[2]], ("c",))  # another checkpoint's receipt
    stale = dataclasses.replace(receipts[1], job_nonce=same_id.job_nonce)
    refused([receipts[0], stale, receipts[2]], ("b",))  # another job of this id
    older = dataclasses.replace(receipts[2], epoch=0)
    refused([receipts[0], receipts[1], older], ("c",))  # another epoch
    refused([*receipts, receipts[0]], ("a",))  # a duplicate
    refused(receipts[:2], ("c",))  # a planned part without its receipt
    unplanned = dataclasses.replace(receipts[0], part="d", key=part_key(2, "d"))
    refused([*receipts, unplanned], ("d",))
    with pytest.raises(TypeError):
        face.commit(job, [*receipts[:2], "not a receipt"])
    assert not open_backend(face.url).exists(manifest_key(2))  # nothing was written
    committed = face.commit(job, receipts)
    assert [part.name for part in committed.parts] == ["a", "b", "c"]
    assert face.store().validate_checkpoint(2).valid


# -- workers that write twice ---------------------------------------------------------------------


def test_a_worker_that_writes_its_part_twice_gets_the_same_receipt(face: Face) -> None:
    store = face.store()
    job = face.begin(store, 1, 1, key_group_parts(2, 16))
    first = face.write_all(job)
    raw = open_backend(face.url, verify_fencing=False)
    before = {r.key: raw.head(r.key).version for r in first}
    again = face.write_all(job)  # an engine ran every task twice
    assert again == first
    assert {r.key: raw.head(r.key).version for r in again} == before  # nothing rewritten
    with pytest.raises(ConflictError) as caught:
        face.write(job.tickets[0], b"another state for the same part")
    assert caught.value.actual["size"] == first[0].size  # type: ignore[index]
    assert raw.head(first[0].key).version == before[first[0].key]
    face.commit(job, again)
    fresh = face.store()
    assert fresh.validate_checkpoint(1).valid
    assert fresh.load_part(1, job.tickets[0].part) == b"".join(
        part_state(job.tickets[0].part).values()
    )


@pytest.mark.parametrize("fault", ["crash_after", "lose_response"])
def test_a_worker_retrying_after_its_answer_was_lost_is_safe(local_face: Face, fault: str) -> None:
    face = local_face
    store = face.store()
    job = face.begin(store, 1, 1, ["a", "b"])
    backend, faults = faulty(face.url)
    getattr(faults, fault)("put_if_absent", key_contains="parts/a")
    try:
        receipt_a = face.write(job.ticket("a"), part_state("a"), backend)
    except SimulatedCrash:
        assert fault == "crash_after"
        receipt_a = face.write(job.ticket("a"), part_state("a"), backend)  # the task, retried
    receipts = [receipt_a, face.write(job.ticket("b"), part_state("b"), backend)]
    assert open_backend(face.url).exists(part_key(1, "a"))
    face.commit(job, receipts)
    assert face.store().load_part(1, "a") == b"".join(part_state("a").values())
    assert face.store().validate_checkpoint(1).valid


def test_large_parts_are_streamed_and_their_retry_is_settled_in_ranges(local_face: Face) -> None:
    face = local_face
    store = face.store(single_put_limit=0, chunks_in_flight=2)
    job = face.begin(store, 1, 1, ["big"])
    state = [bytes([i]) * 100_000 + bytes(range(256)) * 50 for i in range(6)]
    backend, faults = faulty(face.url)
    receipt = face.write(job.ticket("big"), state, backend)
    assert faults.count("put_if_absent_stream") == 1
    assert face.write(job.ticket("big"), iter(state), backend) == receipt
    assert receipt.raw_size == sum(map(len, state))
    face.commit(job, [receipt])
    assert face.store().load_part(1, "big") == b"".join(state)
    assert face.store().load_part_frame(1, "big", 5) == state[5]


# -- fencing -------------------------------------------------------------------------------------


def test_a_zombie_coordinator_is_fenced_like_a_zombie_writer(face: Face) -> None:
    zombie = face.store()
    zombie.save(manifest(1, 1))
    job = face.begin(zombie, 2, 1, ["a", "b"])
    receipts = face.write_all(job, 2)
    successor = face.store()
    successor.claim_epoch(2)
    with pytest.raises(FencedError) as caught:
        face.commit(job, receipts)
    assert (caught.value.epoch, caught.value.winner_epoch) == (1, 2)
    assert not open_backend(face.url).exists(manifest_key(2))  # withdrawn
    with pytest.raises(FencedError):
        face.begin(zombie, 3, 1, ["a"])  # refused before any worker uploads
    assert successor.load_latest().checkpoint_id == 1
    successor.save(manifest(3, 2))
    janitor = face.store(store_clock=_far_future)
    assert 2 in janitor.cleanup_orphans().deleted  # the zombie's parts are orphans
    assert not [key for key in _keys(face.url) if "/parts/" in key]
    assert successor.recover_latest_validated().chosen_id == 3


def test_a_coordinator_of_a_newer_epoch_wins_over_an_older_commit_in_flight(
    local_face: Face,
) -> None:
    face = local_face
    old = face.store()
    new = face.store()
    old_job = face.begin(old, 5, 1, ["a"])
    old_receipts = face.write_all(old_job, 5)
    new.claim_epoch(2)
    new_job = face.begin(new, 4, 2, ["a"])
    face.commit(new_job, face.write_all(new_job, 4))
    with pytest.raises(FencedError):
        face.commit(old_job, old_receipts)
    assert face.store().load_latest().checkpoint_id == 4
    assert face.store().recover_latest_validated().chosen_id == 4


def test_a_retried_commit_completes_the_earlier_attempt(local_face: Face) -> None:
    face = local_face
    backend, faults = faulty(face.url)
    store = face.store(backend)
    job = face.begin(store, 1, 1, ["a", "b"])
    receipts = face.write_all(job)
    faults.lose_response("put_if_absent", key_contains="manifest.json")
    faults.crash_before("put_if_match", key_contains="latest")
    faults.crash_before("put_if_absent", key_contains="latest")
    with pytest.raises(SimulatedCrash):
        face.commit(job, receipts)
    faults.clear_faults()
    committed = face.commit(job, receipts)
    assert face.store().load_latest() == committed


# -- orphans, pruning ----------------------------------------------------------------------------


async def _far_future() -> float:
    return 8e9


def test_parts_that_never_commit_are_orphans_and_shared_objects_are_never_touched(
    face: Face,
) -> None:
    store = face.store()
    store.save(manifest(1))
    job = face.begin(store, 2, 1, ["a", "b"])
    receipts = face.write_all(job, 2)
    raw = open_backend(face.url, verify_fencing=False)
    raw.put("shared/0123-abcd.zst", b"a shared object")
    near = face.store()  # the store's own clock: nothing is old yet
    assert near.cleanup_orphans().deleted == ()
    assert raw.exists(part_key(2, "a"))
    janitor = face.store(store_clock=_far_future)
    result = janitor.cleanup_orphans()
    assert result.deleted == (2,)
    assert [o.size for o in result.orphans if o.checkpoint_id == 2] == [
        sum(r.size for r in receipts)
    ]
    assert not raw.exists(part_key(2, "a"))
    assert not raw.exists(part_key(2, "b"))
    assert raw.get("shared/0123-abcd.zst")[0] == b"a shared object"
    with pytest.raises(CheckpointConflict) as caught:
        face.commit(job, receipts)  # the janitor's tombstone holds the id
    assert "aborted" in str(caught.value)
    assert face.store().validate_checkpoint(2).issues == (ABORTED,)
    late = face.write(job.ticket("a"), part_state("a", 2))  # a straggler after the tombstone
    assert late.part == "a"
    janitor.cleanup_orphans()  # leftovers beside a tombstone are deleted
    assert not raw.exists(part_key(2, "a"))
    assert raw.exists("shared/0123-abcd.zst")


def test_a_janitor_spares_the_parts_of_a_live_epoch_below_the_newest_commit(
    local_face: Face,
) -> None:
    """A parallel checkpoint in flight whose id lies below a newer commit of the same epoch
    is not fenced: the janitor reads its writer's epoch from a part's header (as from
    ``state.bin``) and leaves it for the grace period."""
    face = local_face
    store = face.store()
    job = face.begin(store, 2, 1, ["a", "b"])
    receipts = face.write_all(job, 2)
    store.save(manifest(3, 1))
    janitor = face.store()  # the store's own clock: the parts are young
    assert janitor.cleanup_orphans().deleted == ()
    assert open_backend(face.url).exists(part_key(2, "b"))
    face.commit(job, receipts)
    assert face.store().validate_checkpoint(2).valid


def test_prune_deletes_the_parts_of_pruned_checkpoints(local_face: Face) -> None:
    face = local_face
    store = face.store(max_retained=1)
    for checkpoint_id in (1, 2):
        job = face.begin(store, checkpoint_id, 1, ["a", "b"])
        face.commit(job, face.write_all(job, checkpoint_id))
    keys = _keys(face.url)
    assert not [key for key in keys if "checkpoint_00000000000000000001" in key]
    assert part_key(2, "a") in keys
    assert face.store().recover_latest_validated().chosen_id == 2


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_restore_validates_every_part(face: Face, damage: str) -> None:
    store = face.store()
    store.save_with_state(manifest(1), state_for(1))
    job = face.begin(store, 2, 1, key_group_parts(3, 30))
    face.commit(job, face.write_all(job, 2))
    raw = open_backend(face.url, verify_fencing=False)
    key = part_key(2, job.tickets[1].part)
    data = raw.get(key)[0]
    if damage == "flip":
        raw.put(key, data[:60] + bytes([data[60] ^ 1]) + data[61:])
    elif damage == "truncate":
        raw.put(key, data[:-3])
    else:
        raw.delete(key)
    fresh = face.store()
    result = fresh.validate_checkpoint(2)
    assert not result.valid
    assert job.tickets[1].part in result.issues[0]
    assert not fresh.validate_checkpoint(2, range_size=32).valid
    report = fresh.recover_latest_validated()
    assert report.chosen_id == 1
    assert report.skipped[0][0] == 2
    assert fresh.load_part(2, job.tickets[0].part) == b"".join(
        part_state(job.tickets[0].part, 2).values()
    )
    with pytest.raises(CorruptionError):
        fresh.load_part(2, job.tickets[1].part)
    if damage == "flip":
        with pytest.raises(CorruptionError):
            fresh.load_part_frame(2, job.tickets[1].part, "window")


def test_a_worker_reads_only_its_part() -> None:
    url = "memory://parallel-reads-only-its-part"
    store = CheckpointStore(url)
    job = store.begin_parallel(1, 1, key_group_parts(4, 64))
    job.commit([write_part(t, part_state(t.part)) for t in job.tickets])
    backend, faults = faulty(url)
    reader = CheckpointStore(Backend(backend))
    name = job.tickets[2].part
    assert reader.load_part(1, name) == b"".join(part_state(name).values())
    assert [(c.operation, c.key) for c in faults.calls] == [
        ("get", manifest_key(1)),
        ("get_range", part_key(1, name)),
    ]
    faults.clear_calls()
    frame = reader.load_by_id(1).part(name).frame("counts")  # type: ignore[union-attr]
    faults.clear_calls()
    assert reader.load_part_frame(1, name, "counts") == part_state(name)["counts"]
    assert [(c.operation, c.key) for c in faults.calls] == [
        ("get", manifest_key(1)),
        ("get_range", part_key(1, name)),
    ]
    assert frame.length < reader.load_by_id(1).part(name).size  # type: ignore[operator, union-attr]
    reader.close()
    store.close()


def test_a_parallel_commit_costs_one_manifest_create_and_one_pointer_swap(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    CheckpointStore(url).save(manifest(1))
    backend, faults = faulty(url)
    store = CheckpointStore(Backend(backend))
    store.load_latest()  # the coordinator knows the pointer, as after its first save
    job = store.begin_parallel(2, 1, ["a", "b"])
    receipts = [write_part(t, part_state(t.part)) for t in job.tickets]
    faults.clear_calls()
    job.commit(receipts)
    writes = [(c.operation, c.key) for c in faults.calls if c.is_write]
    assert writes == [
        ("put_if_absent", manifest_key(2)),
        ("put_if_match", "checkpoints/latest.txt"),
    ]
    assert len(faults.calls) == 2
    assert not open_backend(url).exists(state_key(2))
    store.close()


# -- crashes -------------------------------------------------------------------------------------


class _Run:
    """One parallel checkpoint 2 of parts ``a``, ``b``, ``c``, step by step, through one
    (fault-injecting) backend shared by the coordinator and its workers; a step that
    crashed is done again by :meth:`finish` (the job, if it was begun, is kept)."""

    def __init__(self, store: CheckpointStore, backend: AsyncBackend) -> None:
        self.store = store
        self.backend = backend
        self.job: Any = None
        self.receipts: dict[str, PartReceipt] = {}

    def finish(self) -> CheckpointManifest:
        if self.job is None:
            self.job = self.store.begin_parallel(2, 1, ["a", "b", "c"])
        for ticket in self.job.tickets:
            if ticket.part not in self.receipts:
                state = part_state(ticket.part, 2)
                self.receipts[ticket.part] = write_part(ticket, state, backend=self.backend)
        return self.job.commit(list(self.receipts.values()), source_offsets={"p": 2})  # type: ignore[no-any-return]


def _setup(url: str) -> None:
    CheckpointStore(url).save_with_state(manifest(1), state_for(1))


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_crash_before_or_after_any_request_of_a_parallel_checkpoint(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    base = make_store_url(kind, request, tmp_path)
    clean = sub_url(base, "clean")
    _setup(clean)
    backend, faults = faulty(clean)
    _Run(CheckpointStore(Backend(backend)), backend).finish()
    total = len(faults.calls)
    assert total >= 6  # begin's pointer read, three parts, the manifest, the pointer
    for nth in range(1, total + 1):
        for when in ("before", "after"):
            case = f"crash {when} request {nth}"
            url = sub_url(base, f"{when}-{nth}")
            _setup(url)
            backend, faults = faulty(url)
            run = _Run(CheckpointStore(Backend(backend)), backend)
            getattr(faults, f"crash_{when}")("*", nth)
            with pytest.raises(SimulatedCrash):
                run.finish()
            faults.clear_faults()
            fresh = CheckpointStore(url)
            newest = max(fresh.list_ids())
            committed = open_backend(url).exists(manifest_key(2))
            latest = fresh.load_latest()
            assert latest is not None, case
            assert latest.checkpoint_id == (2 if committed else 1), case
            report = fresh.recover_latest_validated()
            assert report.chosen_id == latest.checkpoint_id, (case, report)
            assert all(
                fresh.validate_checkpoint(i).valid for i in fresh.list_ids() if i != 2 or committed
            ), case
            assert newest in (1, 2), case
            janitor = CheckpointStore(url)  # the store's own clock: nothing in flight is old
            janitor.cleanup_orphans()
            done = run.finish()  # the crashed step, done again by the surviving coordinator
            assert done.checkpoint_id == 2, case
            assert CheckpointStore(url).load_latest() == done, case
            assert fresh.validate_checkpoint(2).valid, case
            assert fresh.load_part(2, "b") == b"".join(part_state("b", 2).values()), case
            fresh.save_with_state(manifest(3), state_for(3))
            assert fresh.recover_latest_validated().chosen_id == 3, case


def test_a_prune_never_deletes_parts_its_manifest_does_not_list(local_face: Face) -> None:
    """Simulator seed 2884: a coordinator wrote its parts under an id another writer had
    committed without state; a prune deleted that manifest, the coordinator's commit landed
    in the gap, and the prune went on to delete the parts of a commit that had returned.
    A prune deletes only what the manifest it read lists (as for a foreign ``state.bin``)."""
    face = local_face
    url = face.url
    writer = CheckpointStore(url)
    writer.save(manifest(1))  # no state: id 1's directory holds just this manifest
    coordinator = CheckpointStore(url)
    job = coordinator.begin_parallel(1, 1, ["a", "b"])
    receipts = [write_part(t, part_state(t.part)) for t in job.tickets]
    for checkpoint_id in (2, 3):
        writer.save(manifest(checkpoint_id))
    backend, faults = faulty(url)
    committed: list[CheckpointManifest] = []

    async def commit_in_the_gap() -> None:
        committed.append(await asyncio.to_thread(job.commit, receipts))

    faults.on_call(
        "delete", commit_in_the_gap, when="after", key_contains=manifest_key(1).split("/", 1)[1]
    )
    pruner = face.store(backend)
    pruner.prune(2)
    assert [c.checkpoint_id for c in committed] == [1]  # the commit returned
    assert CheckpointStore(url).validate_checkpoint(1).valid
    assert CheckpointStore(url).load_part(1, "b") == b"".join(part_state("b").values())
    writer.close()
    coordinator.close()


def test_a_copy_of_a_parts_checkpoint_carries_its_parts(local_face: Face, tmp_path: Path) -> None:
    from objstore import copy_checkpoint

    face = local_face
    store = face.store()
    job = face.begin(store, 1, 1, key_group_parts(3, 12))
    face.commit(job, face.write_all(job))
    destination = sub_url(face.url, "copy")
    result = copy_checkpoint(face.url, destination, 1, range_size=64)
    assert result.outcome == "copied"
    copied = CheckpointStore(destination)
    assert copied.validate_checkpoint(1).valid
    for ticket in job.tickets:
        assert copied.load_part(1, ticket.part) == b"".join(part_state(ticket.part).values())
    assert copy_checkpoint(face.url, destination, 1).outcome == "present"
    raw = open_backend(face.url, verify_fencing=False)
    key = part_key(1, job.tickets[2].part)
    data = raw.get(key)[0]
    raw.put(key, data[:-2] + bytes(2))  # a damaged source part: nothing is committed
    damaged_copy = sub_url(face.url, "damaged-copy")
    with pytest.raises(CorruptionError):
        copy_checkpoint(face.url, damaged_copy, 1)
    assert not open_backend(damaged_copy).exists(manifest_key(1))
    copied.close()


def test_a_retry_whose_compressed_bytes_differ_is_accepted_for_the_same_state(
    local_face: Face,
) -> None:
    """zstd's bytes for one chunk depend on whether it ran multi-threaded (chunks of 4 MiB
    and more, when no other chunk is being compressed: a matter of timing), so a retried
    upload of the same state may encode differently. The part already stored is accepted if
    it holds the same frames of the same raw bytes, and the receipt describes it."""
    face = local_face
    store = face.store()
    job = face.begin(store, 1, 1, ["a"])
    ticket = job.ticket("a")
    state = part_state("a")
    other_level = dataclasses.replace(ticket, compression_level=19)  # other bytes, same state
    first = face.write(other_level, state)
    retried = face.write(ticket, state)
    assert retried == first
    raw = open_backend(face.url, verify_fencing=False)
    assert retried.size == raw.head(retried.key).size
    with pytest.raises(ConflictError):
        face.write(ticket, {"window": state["window"], "counts": b"other"})
    with pytest.raises(ConflictError):
        face.write(ticket, {"counts": state["counts"], "window": state["window"]})  # reordered
    face.commit(job, [retried])
    assert face.store().validate_checkpoint(1).valid
    assert face.store().load_part_frame(1, "a", "counts") == state["counts"]


def test_sink_updates_keep_the_parts_and_a_part_key_outside_its_checkpoint_is_invalid(
    local_face: Face,
) -> None:
    face = local_face
    store = face.store()
    job = face.begin(store, 1, 1, ["a", "b"])
    committed = face.commit(job, face.write_all(job), sink_commit_statuses={"kafka": "pending"})
    updated = store.update_manifest(committed.with_status("kafka", "committed"))
    assert updated.parts == committed.parts
    assert updated.format_version == 2
    assert face.store().validate_checkpoint(1).valid
    # A manifest whose part names another checkpoint's object is not this checkpoint's state.
    job2 = face.begin(store, 2, 1, ["a", "b"])
    receipts = face.write_all(job2, 1)  # the same state as checkpoint 1's parts
    stolen = dataclasses.replace(receipts[0], key=part_key(1, "a"))
    with pytest.raises(ReceiptError):
        face.commit(job2, [stolen, receipts[1]])
    from objstore.checkpoint._manifest import StoredManifest, encode_manifest

    forged = dataclasses.replace(
        committed,
        checkpoint_id=3,
        parts=(dataclasses.replace(committed.parts[0], key=part_key(1, "a")), committed.parts[1]),
    )
    raw = open_backend(face.url, verify_fencing=False)
    raw.put(manifest_key(3), encode_manifest(StoredManifest(forged, "0" * 32, None, 0)))
    result = face.store().validate_checkpoint(3)
    assert not result.valid
    assert "not checkpoint 3's" in result.issues[0]


def test_rm_and_quarantine_handle_a_parts_checkpoint(tmp_path: Path) -> None:
    from objstore import quarantine_invalid, remove_checkpoints, restore_quarantined

    url = str(tmp_path / "store")
    store = CheckpointStore(url)
    for checkpoint_id in (1, 2, 3):
        job = store.begin_parallel(checkpoint_id, 1, ["a", "b"])
        job.commit([write_part(t, part_state(t.part, checkpoint_id)) for t in job.tickets])
    removal = remove_checkpoints(store, [1])
    assert removal.removed == (1,)
    assert not [key for key in _keys(url) if "checkpoint_00000000000000000001" in key]
    raw = open_backend(url)
    raw.put(part_key(3, "b"), raw.get(part_key(3, "b"))[0][:-1] + b"\x00")
    report = store.recover_latest_validated()
    assert report.chosen_id == 2
    assert [q.checkpoint_id for q in quarantine_invalid(store, report)] == [3]
    assert store.load_latest().checkpoint_id == 2  # type: ignore[union-attr]
    assert raw.exists(part_key(3, "a"))  # evidence kept in place
    assert store.cleanup_orphans().deleted == ()  # a quarantined id is left alone
    restore_quarantined(store, 3)
    assert not store.validate_checkpoint(3).valid
    store.close()
