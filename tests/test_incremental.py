"""Incremental checkpoints (issue 12): unchanged chunks are referenced, not uploaded again;
shared objects are collected only by the shared-object GC, never while a retained checkpoint
(or a save about to return) needs them.

Every store behaviour runs on memory, a local directory and moto S3, through the blocking
and the async face. Protocol steps are proven necessary by *mutation*: the same interleaving
run with the step switched off must break a checkpoint (``without_*`` cases), and with it on
must not.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from objstore import CheckpointConflict, CheckpointManifest, CheckpointStore
from objstore.backends import AsyncBackend, Backend, RetryPolicy, open_backend, open_transport
from objstore.checkpoint import AsyncCheckpointStore, _incremental, _shared, manifest_key, state_key
from objstore.checkpoint._shared import GC_RECORD, SHARED, is_shared_key
from objstore.errors import CorruptionError, NotFoundError, PreconditionFailedError
from objstore.testing import FaultInjectingTransport
from tests.checkpoint_helpers import no_sleep
from tests.conftest import make_store_url

CHUNKS = 32
CHUNK_SIZE = 4096


@pytest.fixture(params=["memory", "file", "s3"])
def inc_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on memory, a local directory and moto S3."""
    return make_store_url(request.param, request, tmp_path)


class Face:
    """A checkpoint store through the blocking or the async face, with its call log."""

    def __init__(self, kind: str, url: str, **options: Any) -> None:
        self.faults = FaultInjectingTransport(open_transport(url))
        backend = AsyncBackend(self.faults, retry=RetryPolicy(sleep=no_sleep), verify_fencing=False)
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        self.store: Any = (
            AsyncCheckpointStore(backend, **options)
            if self.loop is not None
            else CheckpointStore(Backend(backend), **options)
        )

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)
        if self.loop is None:
            return method  # type: ignore[no-any-return]
        loop = self.loop
        return lambda *args, **kwargs: loop.run_until_complete(method(*args, **kwargs))

    def close(self) -> None:
        self.__getattr__("close")()
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def face_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _chunks(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"op-{i:02d}": rng.randbytes(CHUNK_SIZE) for i in range(CHUNKS)}


def _shared_puts(faults: FaultInjectingTransport) -> int:
    return sum(
        call.size or 0
        for call in faults.calls
        if call.operation == "put_if_absent" and is_shared_key(call.key)
    )


def _shared_objects(url: str) -> set[str]:
    backend = open_backend(url, verify_fencing=False)
    try:
        return {info.key for info in backend.list(SHARED) if is_shared_key(info.key)}
    finally:
        backend.close()


def test_twenty_saves_each_upload_only_the_changed_chunk(inc_url: str, face_kind: str) -> None:
    face = Face(face_kind, inc_url)
    state = _chunks(0)
    rng = random.Random(1)
    face.save_incremental(CheckpointManifest(1, 1), state)
    full = _shared_puts(face.faults)
    assert full >= CHUNKS * CHUNK_SIZE  # random bytes do not compress: all of it went up
    saved = {1: dict(state)}
    for checkpoint_id in range(2, 22):
        face.faults.clear_calls()
        changed = f"op-{rng.randrange(CHUNKS):02d}"
        state[changed] = rng.randbytes(CHUNK_SIZE)
        face.save_incremental(CheckpointManifest(checkpoint_id, 1), state)
        uploaded = _shared_puts(face.faults)
        assert CHUNK_SIZE <= uploaded <= 1.1 * full / CHUNKS, (checkpoint_id, uploaded)
        saved[checkpoint_id] = dict(state)
        assert face.load_state(checkpoint_id) == state
    for checkpoint_id, expected in saved.items():
        assert face.load_state(checkpoint_id) == expected
    assert face.recover_latest_validated().chosen_id == 21
    face.close()


def test_prune_then_gc_keeps_exactly_what_retained_checkpoints_need(
    inc_url: str, face_kind: str
) -> None:
    face = Face(face_kind, inc_url)
    state = _chunks(2)
    saved = {}
    for checkpoint_id in range(1, 8):
        state[f"op-{checkpoint_id:02d}"] = os.urandom(CHUNK_SIZE)
        face.save_incremental(CheckpointManifest(checkpoint_id, 1), state)
        saved[checkpoint_id] = dict(state)
    before = _shared_objects(inc_url)
    assert face.prune(3).deleted == (1, 2, 3, 4)
    assert face.cleanup_orphans(0).deleted == ()
    assert _shared_objects(inc_url) == before  # prune and cleanup never touch shared/
    dry = face.collect_shared(0, dry_run=True)
    assert dry.deleted == ()
    assert _shared_objects(inc_url) == before
    result = face.collect_shared(0)
    assert set(result.deleted) == set(dry.planned)
    assert len(result.deleted) == 4
    needed = set()
    for checkpoint_id in (5, 6, 7):
        needed |= _incremental.refs_of(face.load_by_id(checkpoint_id))
        assert face.validate_checkpoint(checkpoint_id).valid
        assert face.load_state(checkpoint_id) == saved[checkpoint_id]
    assert _shared_objects(inc_url) == needed
    assert face.collect_shared(0).deleted == ()  # nothing more to collect
    face.close()


def test_gc_respects_the_grace_period(inc_url: str) -> None:
    face = Face("sync", inc_url)
    face.save_incremental(CheckpointManifest(1, 1), _chunks(3))
    face.save_incremental(CheckpointManifest(2, 1), _chunks(4))
    face.prune(1)
    assert face.collect_shared(3600).deleted == ()  # young garbage is left for later
    assert len(face.collect_shared(0).deleted) == CHUNKS
    face.close()


def test_first_save_unknown_or_pruned_base_uploads_everything(inc_url: str) -> None:
    face = Face("sync", inc_url)
    state = _chunks(5)
    face.save_incremental(CheckpointManifest(1, 1), state)
    other = Face("sync", inc_url)  # a restarted writer: no base unless told
    other.faults.clear_calls()
    other.save_incremental(CheckpointManifest(2, 1), state)
    assert _shared_puts(other.faults) >= CHUNKS * CHUNK_SIZE
    other.faults.clear_calls()
    other.save_incremental(CheckpointManifest(3, 1), state, base=1)  # told: nothing new
    assert _shared_puts(other.faults) == 0
    face.prune(1)
    other.faults.clear_calls()
    other.save_incremental(CheckpointManifest(4, 1), state, base=2)  # base 2 is gone
    assert _shared_puts(other.faults) >= CHUNKS * CHUNK_SIZE
    assert other.load_state(4) == state
    face.close()
    other.close()


def test_full_saves_stay_format_1_and_mix_with_incremental(inc_url: str) -> None:
    face = Face("sync", inc_url)
    face.save_with_state(CheckpointManifest(1, 1), {"a": b"x" * 100})
    raw = open_backend(inc_url, verify_fencing=False)
    assert b'"format_version":1' in raw.get(manifest_key(1))[0]
    face.save_incremental(CheckpointManifest(2, 1), {"a": b"y" * 100})
    assert b'"format_version":2' in raw.get(manifest_key(2))[0]
    assert not raw.exists(state_key(2))
    assert face.load_state(1) == {"a": b"x" * 100}
    assert face.load_state(2) == {"a": b"y" * 100}
    assert face.load_operator_state(2, "a") == b"y" * 100
    assert face.load_state_data(2) == b"y" * 100
    raw.close()
    face.close()


def test_a_missing_or_damaged_shared_object_invalidates_only_its_checkpoints(
    inc_url: str,
) -> None:
    face = Face("sync", inc_url)
    face.save_with_state(CheckpointManifest(1, 1), {"a": b"full"})
    face.save_incremental(CheckpointManifest(2, 1), {"a": b"one", "b": b"two"})
    raw = open_backend(inc_url, verify_fencing=False)
    key = sorted(_incremental.refs_of(face.load_by_id(2)))[0]
    data = raw.get(key)[0]
    raw.put(key, data[:-1] + bytes([data[-1] ^ 1]))
    result = face.validate_checkpoint(2)
    assert not result.valid
    assert "does not hold its frame" in result.issues[0]
    raw.delete(key)
    assert "missing" in face.validate_checkpoint(2).issues[0]
    assert face.recover_latest_validated().chosen_id == 1
    raw.close()
    face.close()


# -- the protocol under chosen interleavings ------------------------------------------------------


def _run_in_thread(coroutine_factory: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(coroutine_factory()))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _async_store(url: str, **options: Any) -> tuple[AsyncCheckpointStore, FaultInjectingTransport]:
    faults = FaultInjectingTransport(open_transport(url))
    backend = AsyncBackend(faults, retry=RetryPolicy(sleep=no_sleep), verify_fencing=False)
    return AsyncCheckpointStore(backend, **options), faults


@pytest.mark.parametrize("protocol", ["whole", "without_writer_check"])
def test_a_gc_between_plan_and_commit_is_caught_by_the_writer_check(
    inc_url: str, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer plans on base 1; an operator prunes 1 and a GC collects its objects (no
    manifest references them) before the writer commits. Without step (e) the save returns a
    checkpoint whose objects are gone; with it the save repairs (uploads them again)."""
    if protocol == "without_writer_check":
        monkeypatch.setattr(_incremental, "refs_safe", lambda start, end, refs: True)
    url = inc_url
    setup = CheckpointStore(url)
    base_state = _chunks(6)
    setup.save_incremental(CheckpointManifest(1, 1), base_state)
    setup.save_with_state(CheckpointManifest(2, 1), {"other": b"writer"})
    writer, faults = _async_store(url)
    janitor = CheckpointStore(url)

    async def prune_and_collect() -> None:
        await asyncio.to_thread(janitor.prune, 1)
        result = await asyncio.to_thread(janitor.collect_shared, 0)
        assert len(result.deleted) == CHUNKS

    faults.on_call("put_if_absent", prune_and_collect, when="before", key_contains="refs-")
    state = dict(base_state)
    asyncio.run(writer.save_incremental(CheckpointManifest(3, 1), state, base=1))
    reader = CheckpointStore(url)
    if protocol == "without_writer_check":
        assert not reader.validate_checkpoint(3).valid  # the mutation breaks a returned save
        return
    assert reader.validate_checkpoint(3).valid
    assert reader.load_state(3) == state
    janitor.collect_shared(0)
    assert reader.load_state(3) == state


def test_a_streamed_save_that_cannot_repair_commits_nothing(
    inc_url: str,
) -> None:
    setup = CheckpointStore(inc_url)
    base_state = _chunks(7)
    setup.save_incremental(CheckpointManifest(1, 1), base_state)
    setup.save_with_state(CheckpointManifest(2, 1), {"other": b"writer"})
    writer, faults = _async_store(inc_url)
    janitor = CheckpointStore(inc_url)

    async def prune_and_collect() -> None:
        await asyncio.to_thread(janitor.prune, 1)
        await asyncio.to_thread(janitor.collect_shared, 0)

    faults.on_call("put_if_absent", prune_and_collect, when="before", key_contains="refs-")

    def stream() -> Iterator[tuple[str, bytes]]:
        yield from base_state.items()

    with pytest.raises(PreconditionFailedError, match="nothing was committed"):
        asyncio.run(writer.save_incremental(CheckpointManifest(3, 1), stream(), base=1))
    reader = CheckpointStore(inc_url)
    assert reader.load_by_id(3) is None
    assert reader.recover_latest_validated().chosen_id == 2


@pytest.mark.parametrize("protocol", ["whole", "without_relist"])
def test_a_commit_between_gc_listing_and_doom_is_seen_by_the_relist(
    inc_url: str, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GC lists while nothing references base 1's objects (pruned); the writer, which
    planned on base 1 before the prune, commits and checks (generation unchanged: safe) before
    the GC writes its doom record. Only the GC's relist (step 4) then saves the objects."""
    url = inc_url
    setup = CheckpointStore(url)
    base_state = _chunks(8)
    setup.save_incremental(CheckpointManifest(1, 1), base_state)
    setup.save_with_state(CheckpointManifest(2, 1), {"other": b"writer"})
    writer, writer_faults = _async_store(url)
    gc_store, gc_faults = _async_store(url, orphan_grace_seconds=0)
    if protocol == "without_relist":
        original = _incremental._manifest_refs
        calls = []

        async def first_listing_only(backend: Any, listing: Any) -> set[str]:
            calls.append(1)
            return await original(backend, listing) if len(calls) == 1 else set()

        monkeypatch.setattr(_incremental, "_manifest_refs", first_listing_only)
    at_doom, writer_done = threading.Event(), threading.Event()

    async def pause_gc() -> None:
        at_doom.set()
        await asyncio.to_thread(writer_done.wait, 30)

    gc_faults.on_call("put_if_absent", pause_gc, when="before", key_contains=".gc.json")
    gc_thread: list[Any] = []

    async def prune_then_start_gc() -> None:
        await asyncio.to_thread(CheckpointStore(url).prune, 1)
        thread, outcome = _run_in_thread(lambda: gc_store.collect_shared(0))
        gc_thread.extend([thread, outcome])
        assert await asyncio.to_thread(at_doom.wait, 30)

    writer_faults.on_call("put_if_absent", prune_then_start_gc, when="before", key_contains="refs-")
    state = dict(base_state)
    asyncio.run(writer.save_incremental(CheckpointManifest(3, 1), state, base=1))
    writer_done.set()
    gc_thread[0].join(30)
    assert not isinstance(gc_thread[1][0], BaseException), gc_thread[1]
    reader = CheckpointStore(url)
    if protocol == "without_relist":
        assert not reader.validate_checkpoint(3).valid
        return
    assert reader.validate_checkpoint(3).valid
    assert reader.load_state(3) == state


def test_a_gc_overtaken_by_another_gc_deletes_nothing(inc_url: str) -> None:
    """GC A dooms (generation 1) and relists; GC B runs whole before A's step (5): A sees
    generation 2 and aborts; B (which carried A's doom list) collected the garbage."""
    url = inc_url
    setup = CheckpointStore(url)
    setup.save_incremental(CheckpointManifest(1, 1), _chunks(9))
    setup.save_with_state(CheckpointManifest(2, 1), {"other": b"writer"})
    setup.prune(1)
    gc_a, faults_a = _async_store(url, orphan_grace_seconds=0)
    gc_b = CheckpointStore(url, orphan_grace_seconds=0)
    results: list[Any] = []

    async def other_gc_runs() -> None:
        results.append(await asyncio.to_thread(gc_b.collect_shared, 0))

    faults_a.on_call("list", other_gc_runs, nth=2, when="after", key_contains="checkpoints")
    result = asyncio.run(gc_a.collect_shared(0))
    assert result.aborted is not None
    assert result.deleted == ()
    assert len(results[0].deleted) == CHUNKS
    assert len(_shared_objects(url)) == 0


def test_doom_lists_carry_forward_and_the_writer_check_rule() -> None:
    """The pure rules: a doomed key still listed stays doomed in the next generation,
    whatever its age or references (the carry lemma); an unreferenced key is doomed only
    once known old enough; the writer's refs are safe only against the generation it read
    or the next one without them."""
    doomed = _shared.GcRecord(3, frozenset({"k-old", "k-gone"}), "v")
    listed = {"k-old": 100.0, "k-young": 195.0, "k-used": 0.0, "k-free": 50.0}
    plan = _shared.plan_doomed(
        doomed, listed, {"k-old", "k-used"}, store_now=200.0, grace_seconds=60.0
    )
    assert plan == ["k-free", "k-old"]  # k-old carried though referenced; k-young too young
    assert _shared.plan_doomed(doomed, listed, set(), store_now=None, grace_seconds=60.0) == [
        "k-old"
    ]
    start = _shared.GcRecord(3, frozenset({"a"}))
    assert _shared.refs_safe(start, start, {"a"})
    assert _shared.refs_safe(start, _shared.GcRecord(4, frozenset({"b"})), {"a", "c"})
    assert not _shared.refs_safe(start, _shared.GcRecord(4, frozenset({"c"})), {"a", "c"})
    assert not _shared.refs_safe(start, _shared.GcRecord(5), {"a"})
    record = _shared.encode_gc_record(4, ["b", "a", "b"], "r0")
    assert _shared.decode_gc_record(record, "v") == _shared.GcRecord(
        4, frozenset({"a", "b"}), "v", "r0"
    )
    with pytest.raises(CorruptionError):
        _shared.decode_gc_record(record.replace(b'"a"', b'"z"'), "v")


def test_two_concurrent_gcs_one_writes_the_generation(inc_url: str) -> None:
    setup = CheckpointStore(url := inc_url)
    setup.save_incremental(CheckpointManifest(1, 1), _chunks(10))
    setup.save_with_state(CheckpointManifest(2, 1), {"other": b"writer"})
    setup.prune(1)
    gc_a, faults_a = _async_store(url, orphan_grace_seconds=0)
    gc_b = CheckpointStore(url, orphan_grace_seconds=0)
    results: list[Any] = []

    async def other_gc_runs() -> None:
        results.append(await asyncio.to_thread(gc_b.collect_shared, 0))

    faults_a.on_call("put_if_absent", other_gc_runs, when="before", key_contains=".gc.json")
    result = asyncio.run(gc_a.collect_shared(0))
    assert result.aborted is not None
    assert result.deleted == ()
    assert len(results[0].deleted) == CHUNKS
    raw = open_backend(url, verify_fencing=False)
    assert _shared.decode_gc_record(*raw.get(GC_RECORD)).generation == 1
    raw.close()


@pytest.mark.parametrize("order", ["prune_then_gc", "gc_then_prune"])
def test_a_second_writer_of_an_id_keeps_its_pin_through_prune_and_gc(
    inc_url: str, order: str
) -> None:
    """Two writers save id 1 (a zombie and its successor). Writer W commits 1 (and 2, 3);
    Z pins and checks, then, before Z's manifest create, an operator prunes 1 and a GC runs
    (either order). Z's create then succeeds (the id is free again) and Z returns: the
    objects its manifest names must exist. Checker: specs/gc-model2, scenario zombie_p."""
    url = inc_url
    w = CheckpointStore(url)
    for checkpoint_id in (1, 2, 3):
        w.save_incremental(CheckpointManifest(checkpoint_id, 1), _chunks(20 + checkpoint_id))
    z, faults = _async_store(url)
    janitor = CheckpointStore(url, orphan_grace_seconds=0)

    async def prune_and_collect() -> None:
        steps = [lambda: janitor.prune(2), lambda: janitor.collect_shared(0)]
        for step in steps if order == "prune_then_gc" else steps[::-1]:
            await asyncio.to_thread(step)

    faults.on_call("put_if_absent", prune_and_collect, when="before", key_contains="manifest.json")
    state = _chunks(30)
    asyncio.run(z.save_incremental(CheckpointManifest(1, 1), state))
    reader = CheckpointStore(url)
    assert reader.validate_checkpoint(1).valid
    assert reader.load_state(1) == state
    janitor.collect_shared(0)
    assert reader.load_state(1) == state


@pytest.mark.parametrize("damaged", ["manifest", "pin"])
def test_gc_aborts_on_a_damaged_manifest_or_pin(inc_url: str, damaged: str) -> None:
    """A manifest or pin the GC cannot parse (damaged at rest or in transit) is not "no
    references": the run raises and deletes nothing, and the record is not advanced."""
    url = inc_url
    store = CheckpointStore(url, orphan_grace_seconds=0)
    store.save_incremental(CheckpointManifest(1, 1), _chunks(40))
    store.save_incremental(CheckpointManifest(2, 1), _chunks(41))
    raw = open_backend(url, verify_fencing=False)
    try:
        if damaged == "manifest":
            key = manifest_key(1)
        else:
            key = next(info.key for info in raw.list("checkpoints") if "/refs-" in info.key)
        data, _ = raw.get(key)
        raw.delete(key)
        raw.put(key, data[: len(data) // 2])
        before = _shared_objects(url)
        if damaged == "pin":
            raw.delete(manifest_key(int(key.split("checkpoint_")[1][:20])))
        with pytest.raises(CorruptionError):
            store.collect_shared(0)
        assert _shared_objects(url) == before
        with pytest.raises(NotFoundError):
            raw.get(GC_RECORD)
    finally:
        raw.close()


def test_a_recreated_gc_record_is_never_taken_for_the_one_a_writer_read() -> None:
    """ABA: should ``.gc.json`` ever be deleted and written again, its generations restart;
    a writer that read generation 1 of the old record must not accept generation 1 (or 2)
    of the new one. Every record carries the random id drawn when it was created, kept by
    every later generation and compared by the writer's check."""
    old = _shared.decode_gc_record(_shared.encode_gc_record(1, [], "aaaa0000"), "v1")
    assert old.record_id == "aaaa0000"
    same = _shared.decode_gc_record(_shared.encode_gc_record(2, ["x"], "aaaa0000"), "v2")
    new = _shared.decode_gc_record(_shared.encode_gc_record(1, ["a"], "bbbb1111"), "v3")
    newer = _shared.decode_gc_record(_shared.encode_gc_record(2, ["b"], "bbbb1111"), "v4")
    assert _shared.refs_safe(old, same, {"a"})
    assert not _shared.refs_safe(old, new, {"c"})
    assert not _shared.refs_safe(old, newer, {"c"})
    assert _shared.refs_safe(_shared.GcRecord(), new, {"c"})  # none read: the first record


def test_every_gc_generation_keeps_the_record_id(inc_url: str) -> None:
    store = CheckpointStore(inc_url, orphan_grace_seconds=0)
    raw = open_backend(inc_url, verify_fencing=False)
    try:
        ids = []
        store.save_incremental(CheckpointManifest(1, 1), _chunks(50))
        for checkpoint_id in (2, 3, 4):
            state = _chunks(50 + checkpoint_id)
            store.save_incremental(CheckpointManifest(checkpoint_id, 1), state)
            store.prune(1)
            assert store.collect_shared(0).deleted
            ids.append(_shared.decode_gc_record(*raw.get(GC_RECORD)).record_id)
        assert ids[0] is not None
        assert len(ids[0]) == 32
        assert ids == [ids[0]] * 3
    finally:
        raw.close()


def test_checkpoint_listings_never_page_through_shared_objects(inc_url: str) -> None:
    """Shared objects live under the top-level ``shared/``: recovery, prune and the orphan
    janitor list ``checkpoints/`` only, and that listing holds no shared object; the GC
    lists both."""
    face = Face("sync", inc_url, orphan_grace_seconds=0)
    for checkpoint_id in (1, 2, 3):
        face.save_incremental(CheckpointManifest(checkpoint_id, 1), _chunks(60 + checkpoint_id))
    raw = open_backend(inc_url, verify_fencing=False)
    try:
        listing = [info.key for info in raw.list("checkpoints")]
        assert listing
        assert not [key for key in listing if is_shared_key(key) or key.endswith(".gc.json")]
        assert len(_shared_objects(inc_url)) >= CHUNKS
    finally:
        raw.close()
    face.faults.clear_calls()
    assert face.recover_latest_validated().chosen_id == 3
    face.prune(2)
    face.cleanup_orphans(0)
    lists = {call.key for call in face.faults.calls if call.operation.startswith("list")}
    assert lists
    assert all(not key.startswith(SHARED) for key in lists), lists
    face.faults.clear_calls()
    assert face.collect_shared(0).deleted
    lists = {call.key for call in face.faults.calls if call.operation.startswith("list")}
    assert {SHARED, "checkpoints"} <= lists
    face.close()


def test_no_checkpoint_tool_touches_the_gc_record_or_shared_objects(inc_url: str) -> None:
    """``rm`` (even forced, of every checkpoint), quarantine, prune and the orphan janitor
    work under ``checkpoints/`` and ``quarantine/`` only: the GC record and every shared
    object stay, byte for byte; only the GC deletes shared objects."""
    from objstore.checkpoint._maintenance import quarantine_invalid, remove_checkpoints

    store = CheckpointStore(inc_url, orphan_grace_seconds=0)
    for checkpoint_id in (1, 2, 3, 4):
        store.save_incremental(CheckpointManifest(checkpoint_id, 1), _chunks(70 + checkpoint_id))
    store.prune(3)
    assert store.collect_shared(0).deleted
    raw = open_backend(inc_url, verify_fencing=False)
    try:
        record = raw.get(GC_RECORD)[0]
        raw.delete(sorted(_incremental.refs_of(store.load_by_id(4)))[0])
        objects = _shared_objects(inc_url)
        assert [q.checkpoint_id for q in quarantine_invalid(store)] == [4]
        store.prune(1)
        store.cleanup_orphans(0)
        remove_checkpoints(store, store.list_ids(), force=True)
        assert store.list_ids() == []
        assert raw.get(GC_RECORD)[0] == record
        assert _shared_objects(inc_url) == objects
    finally:
        raw.close()


def test_a_repaired_save_keeps_one_pin_and_the_gc_collects_what_it_replaced(
    inc_url: str,
) -> None:
    """A repair pins again under the same call nonce and drops the earlier pin: the GC
    (which reads every pin, also beside a manifest) must not keep the replaced objects
    alive for as long as the checkpoint is retained."""
    url = inc_url
    setup = CheckpointStore(url)
    base_state = _chunks(80)
    setup.save_incremental(CheckpointManifest(1, 1), base_state)
    setup.save_with_state(CheckpointManifest(2, 1), {"other": b"writer"})
    writer, faults = _async_store(url)
    janitor = CheckpointStore(url)
    done: list[int] = []

    async def prune_and_doom() -> None:
        if done:
            return
        done.append(1)
        await asyncio.to_thread(janitor.prune, 1)
        # Doom (and delete) checkpoint 1's objects the writer reuses, with a GC run.
        await asyncio.to_thread(janitor.collect_shared, 0)

    faults.on_call("put_if_absent", prune_and_doom, when="before", key_contains="refs-")
    asyncio.run(writer.save_incremental(CheckpointManifest(3, 1), dict(base_state), base=1))
    raw = open_backend(url, verify_fencing=False)
    try:
        pins = [info.key for info in raw.list("checkpoints") if "/refs-" in info.key]
    finally:
        raw.close()
    assert [int(key.split("checkpoint_")[1][:20]) for key in pins] == [3]
    reader = CheckpointStore(url)
    assert reader.load_state(3) == base_state
    janitor.collect_shared(0)
    assert _shared_objects(url) == _incremental.refs_of(reader.load_by_id(3))


def test_a_save_that_loses_its_id_drops_its_pin(inc_url: str) -> None:
    """A save call that raised a conflict can never commit: its pin, beside the winner's
    manifest, would keep its objects from the GC until that checkpoint is pruned."""
    winner = CheckpointStore(inc_url)
    winner.save_incremental(CheckpointManifest(1, 1), _chunks(90))
    loser = CheckpointStore(inc_url)
    with pytest.raises(CheckpointConflict):
        loser.save_incremental(CheckpointManifest(1, 1), _chunks(91))
    raw = open_backend(inc_url, verify_fencing=False)
    try:
        pins = [info.key for info in raw.list("checkpoints") if "/refs-" in info.key]
    finally:
        raw.close()
    assert len(pins) == 1
    janitor = CheckpointStore(inc_url)
    assert len(janitor.collect_shared(0).deleted) == CHUNKS  # the loser's uploads
    assert janitor.load_state(1) == _chunks(90)
