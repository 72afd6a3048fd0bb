"""KVStore: batches, sequences, scans, compaction, pruning, crashes and racing writers."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from objstore.backends import AsyncBackend, Backend, RetryPolicy, open_transport
from objstore.errors import (
    CheckpointConflict,
    ConflictError,
    OutcomeUnknownError,
)
from objstore.kv import DEFAULT_SNAPSHOT_GRACE_SECONDS, KVStore
from objstore.kv._format import (
    LOG_PREFIX,
    MANIFEST_KEY,
    SNAPSHOT_PREFIX,
    KVBatch,
    KVManifest,
    decode_batch,
    decode_manifest,
    encode_batch,
    encode_manifest,
    encode_tombstone,
    log_key,
)
from objstore.kv._segment import SEGMENT_PREFIX
from objstore.testing import FaultInjectingTransport, SimulatedCrash
from objstore.testing.contract import run_processes
from tests.conftest import make_store_url

Model = dict[bytes, bytes]


async def no_sleep(_: float) -> None:
    """Retry backoff that does not wait."""


def backend_for(url: str) -> Backend:
    """A backend on ``url`` without backoff waits or the capability probe (the backend
    contract suite proves the probe), so the tests stay fast on S3 and GCS."""
    transport = open_transport(url)
    return Backend(AsyncBackend(transport, retry=RetryPolicy(sleep=no_sleep), verify_fencing=False))


def open_kv(url: str, **options: Any) -> KVStore:
    """A new store object on ``url``."""
    return KVStore(backend_for(url), **options)


def faulty_kv(url: str, **options: Any) -> tuple[KVStore, FaultInjectingTransport]:
    """A store whose every request goes through a fault injector with an empty call log."""
    faults = FaultInjectingTransport(open_transport(url))
    backend = Backend(AsyncBackend(faults, retry=RetryPolicy(sleep=no_sleep), verify_fencing=False))
    return KVStore(backend, **options), faults


def state(store: KVStore) -> Model:
    """Every pair in the store."""
    return dict(store.range_scan())


def manifest(url: str) -> KVManifest:
    blob, _ = backend_for(url).get(MANIFEST_KEY)
    return decode_manifest(blob, key=MANIFEST_KEY)


def log_sequences(url: str) -> list[int]:
    return [int(info.key.rsplit("/", 1)[1]) for info in backend_for(url).list(LOG_PREFIX)]


# -- behaviour -------------------------------------------------------------------------------


def test_round_trip_sequences_and_reopen(store_url: str) -> None:
    store = open_kv(store_url)
    assert store.current_sequence() == 0
    assert store.get(b"a") is None
    assert store.put_batch([(b"a", b"1"), (b"b", b"2")]) == 1
    assert store.put_batch([(b"c", b"3"), (b"a", b"10"), (b"a", b"11")]) == 2
    assert store.delete_batch([b"b", b"missing"]) == 3
    assert store.get(b"a") == b"11"
    assert store.get(b"b") is None
    assert store.get_many([b"c", b"b", b"a"]) == [(b"c", b"3"), (b"b", None), (b"a", b"11")]
    assert store.current_sequence() == 3
    fresh = open_kv(store_url)
    assert fresh.current_sequence() == 3
    assert state(fresh) == {b"a": b"11", b"c": b"3"}
    # A second store object sees the first one's later writes on its next call.
    assert store.put_batch([(b"d", b"4")]) == 4
    assert fresh.get(b"d") == b"4"
    assert fresh.put_batch([(b"e", b"5")]) == 5
    assert store.get_many([b"e"]) == [(b"e", b"5")]


def test_range_scan_bounds_limit_and_direction() -> None:
    store = open_kv("memory://")
    store.put_batch([(bytes([k]), bytes([k, k])) for k in range(10)])
    keys = lambda rows: [row[0][0] for row in rows]  # noqa: E731
    assert keys(store.range_scan(b"\x02", b"\x05")) == [2, 3, 4, 5]  # inclusive both ends
    assert keys(store.range_scan(b"\x07")) == [7, 8, 9]  # empty end = unbounded
    assert keys(store.range_scan(b"", b"\x01")) == [0, 1]
    assert keys(store.range_scan(b"\x02", b"\x05", limit=2)) == [2, 3]
    assert keys(store.range_scan(b"\x02", b"\x05", limit=2, forward=False)) == [5, 4]
    assert keys(store.range_scan(forward=False, limit=3)) == [9, 8, 7]
    assert store.range_scan(b"\x02", b"\x05", limit=0) == []
    assert store.range_scan(b"\x05", b"\x02") == []
    assert store.range_scan(b"\x03", b"\x03") == [(b"\x03", b"\x03\x03")]
    assert store.range_scan(b"\x02\x00", b"\x03") == [(b"\x03", b"\x03\x03")]


def test_get_batch_and_read_batch() -> None:
    store = open_kv("memory://")
    store.put_batch([(b"k", b"v"), (b"j", b"w")])
    store.delete_batch([b"k"])
    assert store.get_batch(1) == [(b"k", b"v"), (b"j", b"w")]
    assert store.get_batch(2) == []  # a delete batch writes no pairs
    deleted = store.read_batch(2)
    assert deleted is not None
    assert (deleted.kind, deleted.keys) == ("delete", (b"k",))
    assert store.get_batch(0) is None
    assert store.get_batch(3) is None
    assert store.oldest_retained_batch() == 1


def test_bad_input_is_refused_before_any_request() -> None:
    store, faults = faulty_kv("memory://")
    with pytest.raises(TypeError):
        store.put_batch([("a", b"1")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.put_batch([(b"a", "1")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.put_batch([(b"a", None)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.delete_batch(["a"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.get("a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        store.put_batch([])
    with pytest.raises(ValueError, match="at least one"):
        store.delete_batch([])
    with pytest.raises(ValueError, match="empty"):
        store.put_batch([(b"", b"1")])
    with pytest.raises(ValueError, match="cutoff"):
        store.prune_batch_log(0)
    assert faults.count() == 0


def test_put_batch_is_one_write_and_no_read_in_the_steady_state(store_url: str) -> None:
    store, faults = faulty_kv(store_url, compact_every=0)
    store.put_batch([(b"first", b"1")])  # the first call learns where the log ends
    faults.clear_calls()
    for n in range(5):
        store.put_batch([(b"k%d" % n, b"v" * 100)] * 3)
        store.delete_batch([b"k%d" % n])
    assert faults.count(writes=True) == 10
    assert faults.count("put_if_absent") == 10
    assert faults.count(writes=False) == 0
    faults.clear_calls()
    assert store.get(b"first") == b"1"  # a read catches up with one LIST
    assert faults.count() == 1


def test_compaction_keeps_every_key_and_reopen_reads_segments_plus_tail(store_url: str) -> None:
    store = open_kv(store_url, compact_every=4)
    model: Model = {}
    for n in range(1, 15):
        pairs = [(b"key-%02d" % (n % 7), b"v%d" % n), (b"only-%02d" % n, b"x" * n)]
        assert store.put_batch(pairs) == 2 * n - 1
        model.update(pairs)
        drop = [b"only-%02d" % (n - 1)]
        assert store.delete_batch(drop) == 2 * n
        model.pop(drop[0], None)
        store.wait_for_background()  # put_batch never waits for the compaction it started
    assert state(store) == model
    current = manifest(store_url)
    assert 24 <= current.snapshot <= 28
    assert 1 <= len(current.runs) <= 6
    assert sorted(segment_keys(store_url)) == sorted(s.key for s in current.segments)
    fresh, faults = faulty_kv(store_url)
    assert state(fresh) == model
    # manifest + one GET per tail batch; one LIST of the tail; per segment its index and
    # its one block (the whole scan reads consecutive blocks in one ranged GET)
    assert faults.count("get") == 1 + (28 - current.snapshot)
    assert faults.count("list") == 1
    assert faults.count("get_range") == 2 * len(current.segments)
    assert fresh.compact() == 28
    after = manifest(store_url)
    assert len(after.runs) == 1
    assert sorted(segment_keys(store_url)) == sorted(s.key for s in after.segments)
    assert state(open_kv(store_url)) == model


def test_prune_compacts_first_and_never_reuses_a_sequence(store_url: str) -> None:
    store = open_kv(store_url, compact_every=0)
    stale = open_kv(store_url, compact_every=0)
    assert stale.put_batch([(b"stale", b"0")]) == 1
    for n in range(2, 13):
        assert store.put_batch([(b"k%d" % n, b"v%d" % n)]) == n
    assert store.oldest_retained_batch() == 1
    assert store.prune_batch_log(10) == 9
    assert store.prune_batch_log(10) == 0
    assert store.oldest_retained_batch() == 10
    assert store.get_batch(9) is None
    assert store.get_batch(10) == [(b"k10", b"v10")]
    assert manifest(store_url).snapshot >= 9
    # A writer that has not seen batches 2..12 must not be told it committed batch 2.
    assert stale.put_batch([(b"late", b"1")]) == 13
    assert stale.get_batch(13) == [(b"late", b"1")]
    expected = {b"stale": b"0", b"late": b"1"} | {b"k%d" % n: b"v%d" % n for n in range(2, 13)}
    assert state(open_kv(store_url)) == expected
    assert store.prune_batch_log(100) == 4  # clamped to the newest batch
    assert store.oldest_retained_batch() is None
    assert state(open_kv(store_url)) == expected
    assert open_kv(store_url).put_batch([(b"next", b"2")]) == 14
    assert log_sequences(store_url) == list(range(1, 15))  # pruned slots stay taken


# -- crashes -----------------------------------------------------------------------------------


def _base(url: str) -> Model:
    """Batches 1..3 on ``url``; the state after them."""
    store = open_kv(url, compact_every=0)
    store.put_batch([(b"a", b"1"), (b"b", b"1")])
    store.put_batch([(b"c", b"1")])
    store.delete_batch([b"b"])
    return state(store)


def _do_put(store: KVStore) -> None:
    store.put_batch([(b"a", b"2"), (b"d", b"2"), (b"e", b"2")])


def _do_compact(store: KVStore) -> None:
    store.compact()


def _do_prune(store: KVStore) -> None:
    store.prune_batch_log(3)


SCENARIOS = {"put_batch": _do_put, "compact": _do_compact, "prune": _do_prune}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("url_kind", ["memory", "file"])
def test_crash_at_every_request_leaves_old_or_new_state(
    scenario: str, url_kind: str, tmp_path: Any
) -> None:
    run = SCENARIOS[scenario]
    outcomes: set[str] = set()
    for when in ("before", "after"):
        for nth in range(1, 20):
            url = "memory://" if url_kind == "memory" else str(tmp_path / f"{when}-{nth}")
            if url == "memory://":
                url = f"memory://crash-{scenario}-{when}-{nth}-{id(tmp_path)}"
            old = _base(url)
            new = old | {b"a": b"2", b"d": b"2", b"e": b"2"} if scenario == "put_batch" else old
            store, faults = faulty_kv(url, compact_every=0)
            store.current_sequence()  # loaded: the crash hits the operation itself
            getattr(faults, f"crash_{when}")("*", nth)
            try:
                run(store)
            except SimulatedCrash:
                pass
            else:
                break  # fewer than nth requests: every crash point was covered
            fresh = open_kv(url)
            seen = state(fresh)
            assert seen in (old, new), (when, nth)
            outcomes.add("old" if seen == old else "new")
            assert fresh.current_sequence() == (3 if seen == old else 4)
            fresh.put_batch([(b"z", b"z")])  # the store stays writable after the crash
            assert state(open_kv(url)) == seen | {b"z": b"z"}
        else:
            raise AssertionError(f"{scenario} made more than 19 requests")
    assert outcomes == ({"old", "new"} if scenario == "put_batch" else {"old"})


def test_lost_response_of_the_commit_is_recognised(store_url: str) -> None:
    store, faults = faulty_kv(store_url)
    store.put_batch([(b"a", b"1")])
    faults.lose_response("put_if_absent")
    assert store.put_batch([(b"b", b"2")]) == 2
    assert store.put_batch([(b"c", b"3")]) == 3
    assert open_kv(store_url).current_sequence() == 3


class _LogThief(FaultInjectingTransport):
    """Before each create of a log object, another writer creates that sequence first."""

    async def put_if_absent(self, key: str, data: Any) -> str:
        if key.startswith(LOG_PREFIX):
            sequence = int(key.rsplit("/", 1)[1])
            await self.inner.put(key, encode_batch(KVBatch(sequence, "put", ((b"x", b"y"),)), "t"))
        return await super().put_if_absent(key, data)


class _ManifestMeddler(FaultInjectingTransport):
    """Before each compare-and-swap of the manifest, another writer rewrites it (same
    fields, a new nonce and so a new version), so the swap always loses."""

    async def put_if_match(self, key: str, data: Any, version: str) -> str:
        if key == MANIFEST_KEY:
            current, _ = await self.inner.get(key)
            rewritten = decode_manifest(current, key=key)
            await self.inner.put(key, encode_manifest(rewritten, uuid.uuid4().hex))
        return await super().put_if_match(key, data, version)


def test_a_writer_that_loses_every_race_gets_a_conflict_with_both_sides(store_url: str) -> None:
    thief = _LogThief(open_transport(store_url))
    backend = Backend(AsyncBackend(thief, retry=RetryPolicy(sleep=no_sleep), verify_fencing=False))
    store = KVStore(backend, max_write_attempts=3, compact_every=0)
    with pytest.raises(ConflictError) as caught:
        store.put_batch([(b"a", b"1")])
    assert not isinstance(caught.value, CheckpointConflict)  # KV has no checkpoint ids/epochs
    assert caught.value.key == log_key(3)
    assert (caught.value.expected, caught.value.actual) == (3, 3)  # tried 3, the store has 3
    assert "3 consecutive races" in str(caught.value)
    assert b"a" not in state(open_kv(store_url))


def test_a_compaction_that_loses_every_manifest_race_gets_a_conflict(store_url: str) -> None:
    store = open_kv(store_url, compact_every=0)
    store.put_batch([(b"a", b"1")])
    store.compact()  # the manifest exists: later compactions compare-and-swap it
    store.put_batch([(b"b", b"2")])
    meddler = _ManifestMeddler(open_transport(store_url))
    backend = Backend(
        AsyncBackend(meddler, retry=RetryPolicy(sleep=no_sleep), verify_fencing=False)
    )
    racing = KVStore(backend, max_write_attempts=2, compact_every=0)
    with pytest.raises(ConflictError) as caught:
        racing.compact()
    error = caught.value
    assert not isinstance(error, CheckpointConflict)
    assert error.key == MANIFEST_KEY
    assert isinstance(error.expected, KVManifest)
    assert isinstance(error.actual, KVManifest)
    assert (error.expected.snapshot, error.actual.snapshot) == (2, 1)
    assert manifest(store_url).snapshot == 1
    assert state(open_kv(store_url)) == {b"a": b"1", b"b": b"2"}


# -- racing writers ------------------------------------------------------------------------------

THREADS = 4
BATCHES = 6


def _check_race(url: str, written: dict[int, tuple[int, int]], writers: int) -> None:
    """Every batch got its own sequence, 1..N, none lost, and the state is the log applied
    in sequence order."""
    total = writers * BATCHES
    assert sorted(written) == list(range(1, total + 1))
    assert sorted(written.values()) == sorted(
        (w, n) for w in range(writers) for n in range(BATCHES)
    )
    store = open_kv(url)
    assert store.current_sequence() == total
    last_writer, last_n = written[total]
    expected = {b"last": b"%d-%d" % (last_writer, last_n)}
    expected |= {b"w%d-%d" % pair: b"x" for pair in written.values()}
    assert state(store) == expected


def test_racing_writers_in_threads(store_url: str) -> None:
    written: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def writer(w: int) -> None:
        try:
            store = open_kv(store_url, compact_every=5)
            barrier.wait()
            for n in range(BATCHES):
                seq = store.put_batch([(b"w%d-%d" % (w, n), b"x"), (b"last", b"%d-%d" % (w, n))])
                with lock:
                    written[seq] = (w, n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    _check_race(store_url, written, THREADS)


def process_writer(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Child process: write BATCHES batches, report which sequence each got."""
    try:
        store = KVStore(url, compact_every=4)
        store.current_sequence()
        barrier.wait()
        for n in range(BATCHES):
            seq = store.put_batch(
                [(b"w%d-%d" % (worker, n), b"x"), (b"last", b"%d-%d" % (worker, n))]
            )
            results.put(("batch", seq, worker, n))
        store.close()
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc), worker, -1))
    else:
        results.put(("done", 0, worker, -1))


def test_racing_writers_in_processes(shared_store_url: str) -> None:
    processes = 3
    context_results = run_processes_collect(shared_store_url, processes)
    written = {seq: (w, n) for kind, seq, w, n in context_results if kind == "batch"}
    assert [r for r in context_results if r[0] == "error"] == []
    _check_race(shared_store_url, written, processes)


def run_processes_collect(url: str, processes: int) -> list[tuple[str, int, int, int]]:
    """Run :func:`process_writer` in ``processes`` spawned processes; every message sent."""
    outcomes = run_processes(_collecting_writer, [(url, w) for w in range(processes)])
    return [message for batch in outcomes for message in batch]


def _collecting_writer(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Child process: :func:`process_writer` with all messages sent back as one list."""

    class Collect:
        def __init__(self) -> None:
            self.items: list[Any] = []

        def put(self, item: Any) -> None:
            self.items.append(item)

    collected = Collect()
    process_writer(url, worker, barrier, collected)
    results.put(collected.items)


# -- a committed batch is never reported as failed (issue 10, item 7) ----------------------------


class _DiskFull(FaultInjectingTransport):
    """Snapshot writes fail with ``OSError(ENOSPC)`` while :attr:`full` — not an objstore
    error, as a local disk reports it."""

    full = True

    async def put_if_absent(self, key: str, data: Any) -> str:
        if self.full and "segments" in key:
            raise OSError(errno.ENOSPC, "No space left on device", key)
        return await super().put_if_absent(key, data)


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_failing_compaction_never_fails_a_committed_batch(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_store_url(kind, request, tmp_path)
    disk = _DiskFull(open_transport(url))
    backend = Backend(AsyncBackend(disk, retry=RetryPolicy(sleep=no_sleep), verify_fencing=False))
    store = KVStore(backend, compact_every=2)
    model: Model = {}
    with caplog.at_level(logging.WARNING, logger="objstore.kv"):
        for n in range(1, 9):
            pairs = [(b"k%d" % n, b"v%d" % n)]
            for _attempt in range(3):  # a caller that retries what it was told failed
                try:
                    assert store.put_batch(pairs) == n
                    break
                except OSError:
                    continue
            model.update(pairs)
    assert log_sequences(url) == list(range(1, 9))  # no batch appended twice
    assert state(open_kv(url)) == model
    assert any(
        record.levelno == logging.WARNING and "No space left" in record.getMessage()
        for record in caplog.records
    )
    assert not backend_for(url).exists(MANIFEST_KEY)  # never compacted
    disk.full = False  # space again: a later batch compacts after all
    for n in range(9, 9 + 2 * 2):
        assert store.put_batch([(b"k%d" % n, b"v")]) == n
        model[b"k%d" % n] = b"v"
        store.wait_for_background()
    assert manifest(url).snapshot >= 9
    assert state(open_kv(url)) == model


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_retry_after_an_unanswered_commit_does_not_append_the_batch_twice(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    store, faults = faulty_kv(url)
    assert store.put_batch([(b"a", b"1")]) == 1
    # The create lands but its answer is lost, and the backend's read-back fails: the
    # caller is told the outcome is unknown although the batch is committed.
    faults.lose_response("put_if_absent")
    faults.fail_transiently(1.0, ["put_if_absent", "get"])
    with pytest.raises(OutcomeUnknownError):
        store.put_batch([(b"counter", b"+1")])
    faults.clear_faults()
    assert store.put_batch([(b"counter", b"+1")]) == 2  # recognised as its own, not appended
    assert log_sequences(url) == [1, 2]
    assert store.put_batch([(b"b", b"2")]) == 3
    # Unanswered and not landed: the retry commits it (once).
    faults.crash_before("put_if_absent")
    with pytest.raises(SimulatedCrash):
        store.delete_batch([b"a"])
    assert store.delete_batch([b"a"]) == 4
    # A different batch in between ends the retry window: the same pairs again are new.
    faults.lose_response("put_if_absent")
    faults.fail_transiently(1.0, ["put_if_absent", "get"])
    with pytest.raises(OutcomeUnknownError):
        store.put_batch([(b"c", b"1")])
    faults.clear_faults()
    assert store.put_batch([(b"d", b"1")]) == 6
    assert store.put_batch([(b"c", b"1")]) == 7
    assert log_sequences(url) == list(range(1, 8))
    assert state(open_kv(url)) == {b"counter": b"+1", b"b": b"2", b"c": b"1", b"d": b"1"}


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_batch_that_landed_before_an_unexpected_error_returns_its_sequence(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The create lands, then fails with an error the store does not expect (a full disk;
    not a transient error, which the backend itself reads back): one read-back shows the
    batch committed, so put_batch returns its sequence instead of reporting a committed
    batch as failed (simulator seed 2088 of the kv store)."""
    url = make_store_url(kind, request, tmp_path)
    store, faults = faulty_kv(url)
    assert store.put_batch([(b"a", b"1")]) == 1

    async def disk_full() -> None:
        raise OSError(errno.ENOSPC, "no space left on device")

    faults.on_call("put_if_absent", disk_full, when="after", key_contains="log/")
    assert store.put_batch([(b"b", b"2")]) == 2
    assert log_sequences(url) == [1, 2]
    assert store.put_batch([(b"c", b"3")]) == 3
    assert state(open_kv(url)) == {b"a": b"1", b"b": b"2", b"c": b"3"}
    # Not landed: the unexpected error is reported, and nothing was appended.
    faults.on_call("put_if_absent", disk_full, when="before", key_contains="log/")
    with pytest.raises(OSError, match="no space"):
        store.put_batch([(b"d", b"4")])
    assert log_sequences(url) == [1, 2, 3]


def _lose_the_answer_of_a_landed_batch(store: KVStore, faults: FaultInjectingTransport) -> None:
    """``put_batch([(b"k", b"w")])`` lands as batch 2 but raises: its answer is lost and every
    read-back fails, so the caller does not know it committed."""
    faults.lose_response("put_if_absent", key_contains="log/")
    faults.fail_transiently(1.0, ["put_if_absent", "get"])
    with pytest.raises(OutcomeUnknownError):
        store.put_batch([(b"k", b"w")])
    faults.clear_faults()


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_retry_of_a_landed_batch_that_was_pruned_returns_its_sequence(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Review finding F4: another writer commits after the unanswered batch and prunes the
    log past it. The retry must recognise batch 2 as its own in the tombstone (which keeps
    the batch's writer nonce), not append it again over the newer value."""
    url = make_store_url(kind, request, tmp_path)
    store, faults = faulty_kv(url, compact_every=0)
    assert store.put_batch([(b"k", b"1")]) == 1
    _lose_the_answer_of_a_landed_batch(store, faults)
    other = open_kv(url, compact_every=0)
    assert other.put_batch([(b"k", b"o")]) == 3
    assert other.prune_batch_log(4) == 3  # batch 2 (landed, unanswered) is a tombstone now
    assert store.put_batch([(b"k", b"w")]) == 2  # recognised as landed, not appended again
    assert log_sequences(url) == [1, 2, 3]
    assert state(open_kv(url)) == {b"k": b"o"}


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_retry_that_meets_an_unmatchable_tombstone_reports_an_unknown_outcome(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A tombstone written before tombstones kept nonces cannot tell whose batch it was: the
    retry raises OutcomeUnknownError naming the sequence and appends nothing."""
    url = make_store_url(kind, request, tmp_path)
    store, faults = faulty_kv(url, compact_every=0)
    assert store.put_batch([(b"k", b"1")]) == 1
    _lose_the_answer_of_a_landed_batch(store, faults)
    other = open_kv(url, compact_every=0)
    assert other.put_batch([(b"k", b"o")]) == 3
    other.prune_batch_log(4)
    backend_for(url).put(log_key(2), encode_tombstone(2))  # an old-format tombstone
    with pytest.raises(OutcomeUnknownError) as caught:
        store.put_batch([(b"k", b"w")])
    assert caught.value.sequence == 2
    assert log_sequences(url) == [1, 2, 3]
    assert state(open_kv(url)) == {b"k": b"o"}
    # Told, the caller decides; a new call of the same batch is then a new batch.
    assert store.put_batch([(b"k", b"w")]) == 4


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_create_whose_answer_was_lost_and_that_was_pruned_before_its_read_back_returns(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """F4 inside one call (simulator seed 7485 of the kv store): the create lands, its
    answer is lost, and a prune tombstones the batch before the backend's retry reads it
    back, so the read-back sees different bytes and reports a lost race. The batch is still
    recognised by the nonce its tombstone keeps, and not appended again."""
    url = make_store_url(kind, request, tmp_path)
    store, faults = faulty_kv(url, compact_every=0)
    assert store.put_batch([(b"k", b"1")]) == 1
    pruned: list[int] = []
    faults.lose_response("put_if_absent", key_contains="log/")
    faults.on_call(
        "get",
        lambda: asyncio.to_thread(lambda: pruned.append(open_kv(url).prune_batch_log(3))),
        when="before",
        key_contains=log_key(2),
    )
    assert store.put_batch([(b"k", b"2")]) == 2
    assert pruned == [2]
    assert log_sequences(url) == [1, 2]
    assert state(open_kv(url)) == {b"k": b"2"}
    assert store.put_batch([(b"k", b"3")]) == 3


# -- a manifest never references a swept segment (review finding F2) ------------------------------


def segment_keys(url: str) -> list[str]:
    return sorted(info.key for info in backend_for(url).list(SEGMENT_PREFIX))


def referenced_segments(url: str) -> list[str]:
    """The keys of every segment the manifest references, sorted."""
    if not backend_for(url).exists(MANIFEST_KEY):
        return []
    return sorted(segment.key for segment in manifest(url).segments)


def _age_young_segments(
    url: str, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> float:
    """Make every unreferenced segment an hour old by the store's clock; return the grace a
    sweep must use to judge them old (0 on s3: moto keeps its own clock)."""
    if kind == "file":
        for key in sorted(set(segment_keys(url)) - set(referenced_segments(url))):
            old = time.time() - 3600
            os.utime(tmp_path / "store" / key, (old, old))
        return DEFAULT_SNAPSHOT_GRACE_SECONDS
    if kind == "memory":  # a memory store's clock is this process's clock
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
        return DEFAULT_SNAPSHOT_GRACE_SECONDS
    return 0.0


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_manifest_swap_held_in_flight_past_a_sweep_never_references_a_swept_segment(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding F2: a compaction writes its segment, then its manifest swap is held in
    flight (retries, backoff, a process pause) until a sweep finds the segment old by the
    store's clock and unreferenced, and deletes it. The sweep first moves the manifest to the
    next generation, so the swap loses instead of referencing a deleted segment; the
    compaction tries again and commits."""
    url = make_store_url(kind, request, tmp_path)
    writer = open_kv(url, compact_every=0)
    writer.put_batch([(b"a", b"1")])
    writer.compact()
    writer.put_batch([(b"c", b"3")])
    store, faults = faulty_kv(url, compact_every=0)
    store.current_sequence()
    sweeper = open_kv(url, compact_every=0)
    swept: list[str] = []
    real_time = time.time

    def sweep_past_the_grace() -> None:
        if swept:
            return
        grace = _age_young_segments(url, kind, tmp_path, monkeypatch)
        swept.extend(sweeper.sweep_snapshots(grace))
        monkeypatch.setattr(time, "time", real_time)

    faults.on_call(
        "put_if_match",
        lambda: asyncio.to_thread(sweep_past_the_grace),
        when="before",
        key_contains="manifest",
    )
    assert store.compact() == 2
    assert len(swept) == 1  # the sweep did delete the in-flight compaction's segment
    assert swept[0] not in referenced_segments(url)
    assert segment_keys(url) == referenced_segments(url)
    assert state(open_kv(url)) == {b"a": b"1", b"c": b"3"}
    assert store.put_batch([(b"d", b"4")]) == 3
    assert state(open_kv(url)) == {b"a": b"1", b"c": b"3", b"d": b"4"}
    open_kv(url).compact()
    assert segment_keys(url) == referenced_segments(url)
    assert state(open_kv(url)) == {b"a": b"1", b"c": b"3", b"d": b"4"}


# -- segments never leak (issue 10, item 8) ------------------------------------------------------

COMPACTORS = 4


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_racing_compactions_in_threads_leave_only_referenced_segments(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    barrier = threading.Barrier(COMPACTORS)
    errors: list[BaseException] = []

    def compactor(worker: int) -> None:
        try:
            store = open_kv(url, compact_every=1)
            barrier.wait()
            for n in range(BATCHES):
                store.put_batch([(b"w%d-%d" % (worker, n), b"x")])
                store.compact()
            store.wait_for_background()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=compactor, args=(w,)) for w in range(COMPACTORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    expected = {b"w%d-%d" % (w, n): b"x" for w in range(COMPACTORS) for n in range(BATCHES)}
    assert state(open_kv(url)) == expected
    # Losers delete their own segments, winners those they replaced; what a crash or a
    # failed delete leaves, the sweep of the next compaction collects.
    open_kv(url).compact()
    assert segment_keys(url) == referenced_segments(url)
    assert state(open_kv(url)) == expected


def compactor_process(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Child process: write BATCHES batches, compacting after each."""
    try:
        store = KVStore(url, compact_every=1)
        store.current_sequence()
        barrier.wait()
        for n in range(BATCHES):
            store.put_batch([(b"w%d-%d" % (worker, n), b"x")])
            store.compact()
        store.close()
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc)))
    else:
        results.put(("done", worker))


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_racing_compactions_in_processes_leave_only_referenced_segments(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    processes = 3
    outcomes = run_processes(compactor_process, [(url, w) for w in range(processes)])
    assert sorted(outcomes) == [("done", w) for w in range(processes)]
    open_kv(url).compact()
    assert segment_keys(url) == referenced_segments(url)
    expected = {b"w%d-%d" % (w, n): b"x" for w in range(processes) for n in range(BATCHES)}
    assert state(open_kv(url)) == expected


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_crashed_compaction_leaves_a_segment_the_sweep_collects_by_store_age(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_store_url(kind, request, tmp_path)
    model = _base(url)
    store, faults = faulty_kv(url, compact_every=0)
    store.compact()
    kept = referenced_segments(url)
    store.put_batch([(b"x", b"1")])
    faults.crash_after("put_if_absent", key_contains="segments")
    with pytest.raises(SimulatedCrash):
        store.compact()  # the segment of batch 4 is written, the manifest never moves
    leaked = sorted(set(segment_keys(url)) - set(kept))
    assert len(leaked) == 1
    # Young by the store's clock: it could belong to a compaction about to commit it, so a
    # sweep keeps it — even a sweeper whose own clock runs a day ahead.
    real_time = time.time
    if kind != "memory":  # a memory store's clock is this process's clock
        monkeypatch.setattr(time, "time", lambda: real_time() + 86_400)
    assert open_kv(url).sweep_snapshots() == []
    assert segment_keys(url) == sorted(kept + leaked)
    monkeypatch.setattr(time, "time", real_time)
    # Old by the store's clock: collected; the referenced segments stay.
    grace = _age_young_segments(url, kind, tmp_path, monkeypatch)
    before = manifest(url).generation
    assert open_kv(url).sweep_snapshots(grace) == leaked
    monkeypatch.setattr(time, "time", real_time)
    assert manifest(url).generation == before + 1  # compactions in flight were fenced
    assert segment_keys(url) == kept == referenced_segments(url)
    assert state(open_kv(url)) == model | {b"x": b"1"}


class _SwapCatcher(FaultInjectingTransport):
    """The first compare-and-swap of the manifest "crashes" before it is sent, keeping the
    bytes it would have written in :attr:`caught`."""

    caught: bytes | None = None

    async def put_if_match(self, key: str, data: Any, version: str) -> str:
        if key == MANIFEST_KEY and self.caught is None:
            self.caught = bytes(data)
            raise SimulatedCrash(key)
        return await super().put_if_match(key, data, version)


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_sweep_never_deletes_a_segment_a_swap_moved_the_manifest_to_first(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The other order of F2: a sweep judged a segment old and unreferenced, then the
    compaction's swap to it landed before the sweep's fencing swap. The fence fails, the
    retry sees the segment referenced, and the sweep keeps it."""
    url = make_store_url(kind, request, tmp_path)
    model = _base(url)
    open_kv(url, compact_every=0).compact()
    catcher = _SwapCatcher(open_transport(url))
    backend = Backend(
        AsyncBackend(catcher, retry=RetryPolicy(sleep=no_sleep), verify_fencing=False)
    )
    writer = KVStore(backend, compact_every=0)
    writer.put_batch([(b"x", b"1")])
    with pytest.raises(SimulatedCrash):
        writer.compact()  # stands for a compaction whose swap is still in flight
    young = sorted(set(segment_keys(url)) - set(referenced_segments(url)))
    assert len(young) == 1
    assert catcher.caught is not None
    swap = catcher.caught

    def the_swap_lands() -> None:
        backend_for(url).put(MANIFEST_KEY, swap)

    sweeper, faults = faulty_kv(url, compact_every=0)
    faults.on_call(
        "put_if_match",
        lambda: asyncio.to_thread(the_swap_lands),
        when="before",
        key_contains="manifest",
    )
    assert young[0] not in sweeper.sweep_snapshots(grace_seconds=0)
    assert young[0] in referenced_segments(url)
    assert young[0] in segment_keys(url)
    assert state(open_kv(url)) == model | {b"x": b"1"}


# -- prune is resumable (issue 10, item 9) --------------------------------------------------------


def _prune_base(url: str) -> Model:
    """Batches 1..6 on ``url``; the state after them."""
    store = open_kv(url, compact_every=0)
    for n in range(1, 7):
        store.put_batch([(b"k%d" % n, b"v%d" % n), (b"shared", b"%d" % n)])
    return state(store)


def _assert_pruned_below(url: str, cutoff: int, model: Model) -> None:
    """Every batch below ``cutoff`` is a tombstone, the rest readable, no key lost."""
    for sequence in range(1, 7):
        blob, _ = backend_for(url).get(log_key(sequence))
        batch = decode_batch(blob, key=log_key(sequence), sequence=sequence)
        assert (batch is None) == (sequence < cutoff), sequence
    current = manifest(url)
    assert (current.retained_from, current.tombstoned_below) == (cutoff, cutoff)
    assert current.snapshot >= cutoff - 1
    fresh = open_kv(url)
    assert fresh.oldest_retained_batch() == cutoff
    assert state(fresh) == model


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_prune_crashed_at_any_request_is_finished_by_the_next(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    cutoff = 5
    for when in ("before", "after"):
        for nth in range(1, 30):
            if kind == "s3" and nth % 2 == 0:
                continue  # every other request on moto (all of them on memory and file)
            url = make_store_url(kind, request, tmp_path / f"{when}-{nth}")
            if kind == "s3":
                url += f"/{when}-{nth}"  # one bucket per test: a fresh prefix per run
            model = _prune_base(url)
            store, faults = faulty_kv(url, compact_every=0)
            store.current_sequence()
            getattr(faults, f"crash_{when}")("*", nth)
            try:
                store.prune_batch_log(cutoff)
            except SimulatedCrash:
                pass
            else:
                break  # fewer than nth requests: every crash point was covered
            current = manifest(url) if backend_for(url).exists(MANIFEST_KEY) else KVManifest()
            finished = current.tombstoned_below == cutoff
            again = open_kv(url).prune_batch_log(cutoff)
            # A prune that crashed before recording its tombstones is finished now.
            assert (again > 0) == (not finished), (when, nth, again)
            _assert_pruned_below(url, cutoff, model)
            assert open_kv(url).prune_batch_log(cutoff) == 0
        else:
            raise AssertionError("prune made more than 29 requests")


# -- stored formats ------------------------------------------------------------------------------

DATA = Path(__file__).parent / "data"


def test_a_format_1_store_moves_to_segments_and_drops_its_shared_snapshot(
    tmp_path: Path,
) -> None:
    root = tmp_path / "kv"
    shutil.copytree(DATA / "kv-format-1", root)
    url = str(root)
    snapshots = [info.key for info in backend_for(url).list(SNAPSHOT_PREFIX)]
    assert snapshots == [f"{SNAPSHOT_PREFIX}/{2:020d}"] == [manifest(url).snapshot_key]
    kv = KVStore(url, compact_every=0)
    before = state(kv)
    assert kv.compact() == 4
    current = manifest(url)
    assert not current.legacy
    assert current.generation == 1
    assert backend_for(url).list(SNAPSHOT_PREFIX) == []
    assert segment_keys(url) == referenced_segments(url) != []
    assert state(open_kv(url)) == before


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_compaction_whose_manifest_swap_landed_unanswered_keeps_its_segments(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Simulator seed 674 of the kv store: the manifest create of a compaction lands, its
    answer is lost, and a prune moves the manifest before the backend reads it back, which
    then meets another manifest. The compaction must recognise its own commit, not delete
    the segments the manifest now references."""
    url = make_store_url(kind, request, tmp_path)
    model = _base(url)
    store, faults = faulty_kv(url, compact_every=0)
    pruned: list[int] = []
    faults.lose_response("put_if_absent", key_contains="manifest")
    faults.on_call(
        "put_if_absent",
        lambda: asyncio.to_thread(lambda: pruned.append(open_kv(url).prune_batch_log(2))),
        nth=1,
        when="after",
        key_contains="manifest",
    )
    assert store.compact() == 3
    assert pruned == [1]
    assert manifest(url).retained_from == 2
    assert segment_keys(url) == referenced_segments(url) != []
    assert state(open_kv(url)) == model
