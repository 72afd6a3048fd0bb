"""KVStore over sorted segments: reads across runs, request counts, freshness, catch-up,
compaction racing writers/pruners/compactors, and crashes at every request of compaction."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from objstore.backends import AsyncBackend, Backend, RetryPolicy, open_transport
from objstore.kv import KVStore
from objstore.kv._format import MANIFEST_KEY, KVManifest, decode_manifest
from objstore.kv._segment import SEGMENT_PREFIX
from objstore.testing import FaultInjectingTransport, SimulatedCrash
from objstore.testing.contract import run_processes
from tests.conftest import make_store_url

Model = dict[bytes, bytes]
SMALL = {"block_bytes": 2048, "segment_bytes": 32 * 1024, "max_runs": 3}
"""Tiny blocks and segments, so a few thousand keys span many blocks, segments and runs."""


async def no_sleep(_: float) -> None:
    """Retry backoff that does not wait."""


def backend_for(url: str) -> Backend:
    return Backend(
        AsyncBackend(open_transport(url), retry=RetryPolicy(sleep=no_sleep), verify_fencing=False)
    )


def open_kv(url: str, **options: Any) -> KVStore:
    return KVStore(backend_for(url), **({"compact_every": 0} | SMALL | options))


def faulty_kv(url: str, **options: Any) -> tuple[KVStore, FaultInjectingTransport]:
    faults = FaultInjectingTransport(open_transport(url))
    backend = Backend(AsyncBackend(faults, retry=RetryPolicy(sleep=no_sleep), verify_fencing=False))
    return KVStore(backend, **({"compact_every": 0} | SMALL | options)), faults


def manifest(url: str) -> KVManifest:
    blob, _ = backend_for(url).get(MANIFEST_KEY)
    return decode_manifest(blob, key=MANIFEST_KEY)


def segment_keys(url: str) -> list[str]:
    return sorted(info.key for info in backend_for(url).list(SEGMENT_PREFIX))


def referenced(url: str) -> list[str]:
    return sorted(segment.key for segment in manifest(url).segments)


def key(n: int) -> bytes:
    return b"key-%08d" % n


def fill(store: KVStore, model: Model, rng: random.Random, batches: int, width: int) -> None:
    """``batches`` random batches over ``width`` keys: puts (some overwrite) and deletes."""
    for _ in range(batches):
        if rng.random() < 0.2 and model:
            doomed = rng.sample(sorted(model), min(len(model), rng.randint(1, 30)))
            store.delete_batch(doomed)
            for k in doomed:
                model.pop(k, None)
        else:
            pairs = [(key(rng.randrange(width)), b"v%d" % rng.randrange(10**9)) for _ in range(100)]
            store.put_batch(pairs)
            model.update(pairs)


def check_reads(store: KVStore, model: Model, rng: random.Random) -> None:
    """Point reads, batched reads and scans (bounds, limits, both directions) match the
    model."""
    ordered = sorted(model)
    assert store.range_scan() == [(k, model[k]) for k in ordered]
    assert store.range_scan(forward=False) == [(k, model[k]) for k in reversed(ordered)]
    probes = rng.sample(range(12_000), 60)
    assert store.get_many([key(n) for n in probes]) == [(key(n), model.get(key(n))) for n in probes]
    for n in probes[:20]:
        assert store.get(key(n)) == model.get(key(n))
    for _ in range(20):
        low, high = sorted(rng.sample(range(12_000), 2))
        limit = rng.choice([None, 1, 7, 100, 5000])
        forward = rng.random() < 0.5
        chosen = [k for k in ordered if key(low) <= k <= key(high)]
        if not forward:
            chosen.reverse()
        if limit is not None:
            chosen = chosen[:limit]
        got = store.range_scan(key(low), key(high), limit=limit, forward=forward)
        assert got == [(k, model[k]) for k in chosen], (low, high, limit, forward)
    assert (
        store.range_scan(key(5), b"", limit=3)
        == [(k, model[k]) for k in ordered if k >= key(5)][:3]
    )


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_reads_over_many_runs_segments_and_blocks_match_a_model(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    rng = random.Random(15)
    store = open_kv(url)
    model: Model = {}
    fill(store, model, rng, 80, 10_000)
    store.compact()
    for _ in range(2):
        fill(store, model, rng, 10, 10_000)
        store.compact(full=False)  # size-tiered: several runs, deletes kept as tombstones
    current = manifest(url)
    assert len(current.runs) >= 2
    assert len(current.segments) > len(current.runs)  # runs span several segments
    fill(store, model, rng, 5, 10_000)  # and an uncompacted tail
    check_reads(store, model, rng)
    reader = open_kv(url)
    check_reads(reader, model, rng)
    assert reader.current_sequence() == store.current_sequence() == 105
    # A full compaction leaves one run without deleted keys; every read still agrees.
    assert store.compact() == 105
    assert len(manifest(url).runs) == 1
    assert segment_keys(url) == referenced(url)
    check_reads(open_kv(url), model, rng)
    check_reads(reader, model, rng)  # its segments were replaced: it reloads cleanly
    # Batches, retention and prune over segments.
    assert reader.get_batch(104) is not None
    assert store.oldest_retained_batch() == 1
    assert store.prune_batch_log(100) == 99
    assert store.oldest_retained_batch() == 100
    assert store.get_batch(99) is None
    check_reads(open_kv(url), model, rng)
    assert open_kv(url).put_batch([(b"after", b"prune")]) == 106


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_request_counts_cold_get_warm_get_and_catch_up(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    writer = open_kv(url, block_bytes=4096, segment_bytes=1 << 20)
    for n in range(100):
        writer.put_batch([(key(n * 100 + i), b"x" * 100) for i in range(100)])
    for n in range(160):  # past 256 batches: the open must not read the manifest twice
        writer.delete_batch([b"absent-%d" % n])
    writer.compact()
    assert len(manifest(url).segments) >= 1
    reader, faults = faulty_kv(url, block_bytes=4096, segment_bytes=1 << 20)
    assert reader.current_sequence() == 260  # open: the manifest and the tail after it
    assert (faults.count("get"), faults.count("list"), faults.count()) == (1, 1, 2)
    faults.clear_calls()
    # Cold cache: the tail LIST (freshness), the segment's index and one block.
    assert reader.get(key(4242)) == b"x" * 100
    assert faults.count() <= 3
    assert faults.count("get_range") == 2
    faults.clear_calls()
    assert reader.get(key(4243)) == b"x" * 100  # warm: the same block
    assert faults.count() == 1
    faults.clear_calls()
    rows = reader.range_scan(key(5000), limit=100)
    assert [k for k, _ in rows] == [key(5000 + i) for i in range(100)]
    assert faults.count() <= 4  # LIST + the blocks the 100 rows span (index known)
    # Far behind: 400 batches (four full catch-up pages) by another writer that compacts in
    # the background.
    other = open_kv(url, compact_every=32)
    for n in range(400):
        other.put_batch([(key(n % 5000), b"new-%d" % n)])
    other.wait_for_background()
    faults.clear_calls()
    assert reader.refresh() == 660
    assert faults.count() <= 50, faults.count()
    assert reader.get(key(399)) == b"new-399"
    expected = {key(n): b"new-%d" % n for n in range(400)}
    expected |= {key(n): b"x" * 100 for n in range(400, 5000)}
    assert dict(reader.range_scan(key(0), key(4999))) == expected


def test_max_staleness_serves_reads_without_requests_and_refresh_catches_up() -> None:
    url = "memory://kv-staleness"
    writer = open_kv(url)
    writer.put_batch([(b"a", b"1")])
    reader, faults = faulty_kv(url, max_staleness=None)
    assert reader.get(b"a") == b"1"
    writer.put_batch([(b"a", b"2")])
    faults.clear_calls()
    assert reader.get(b"a") == b"1"  # stale by choice: no request at all
    assert faults.count() == 0
    reader.put_batch([(b"b", b"own")])  # its own write: read back at once
    assert reader.get(b"b") == b"own"
    assert reader.get(b"a") == b"2"  # the create lost to batch 2 and caught up
    writer.put_batch([(b"a", b"3")])
    assert reader.get(b"a") == b"2"
    assert reader.refresh() == 4
    assert reader.get(b"a") == b"3"
    ticking, faults = faulty_kv(url, max_staleness=60.0)
    now = [0.0]
    ticking.async_store._monotonic = lambda: now[0]
    assert ticking.get(b"a") == b"3"
    writer.put_batch([(b"a", b"4")])
    faults.clear_calls()
    assert ticking.get(b"a") == b"3"
    assert faults.count() == 0
    now[0] = 61.0
    assert ticking.get(b"a") == b"4"
    assert faults.count("list") == 1


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_a_compaction_crashed_at_any_request_loses_nothing_and_leaks_nothing_for_long(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A full compaction over several runs and a tail crashes before or after each of its
    requests: the store reads the same, stays writable and compactable, and the next
    compaction's sweep (past the grace) leaves only referenced segments."""
    for when in ("before", "after"):
        for nth in range(1, 200):
            if kind == "s3" and nth % 2 == 0:
                continue  # every other request on moto (all of them on memory and file)
            url = make_store_url(kind, request, tmp_path / f"{when}-{nth}")
            if kind == "s3":
                url += f"/{when}-{nth}"  # one bucket per test: a fresh prefix per run
            rng = random.Random(nth)
            base = open_kv(url)
            model = {key(n): b"base" for n in range(0, 600, 2)}
            base.put_batch(list(model.items()))
            base.compact()
            base.put_batch([(key(n), b"newer") for n in range(0, 40, 2)])
            base.compact(full=False)
            base.delete_batch([key(n) for n in range(0, 10, 2)])
            base.compact(full=False)
            model |= {key(n): b"newer" for n in range(10, 40, 2)}
            for n in range(0, 10, 2):
                del model[key(n)]
            assert len(manifest(url).runs) == 3
            fill(base, model, rng, 3, 400)
            store, faults = faulty_kv(url)
            store.current_sequence()
            getattr(faults, f"crash_{when}")("*", nth)
            try:
                store.compact()
            except SimulatedCrash:
                pass
            else:
                break
            fresh = open_kv(url)
            assert dict(fresh.range_scan()) == model, (when, nth)
            fresh.put_batch([(b"z", b"z")])
            fresh.compact()
            fresh.sweep_snapshots(grace_seconds=0)
            assert segment_keys(url) == referenced(url)
            assert dict(open_kv(url).range_scan()) == model | {b"z": b"z"}
        else:
            raise AssertionError("compaction made more than 199 requests")


# -- compaction racing writers, pruners and a second compactor, in processes -------------------

ROUNDS = 12


def racing_actor(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Child process: role by ``worker`` — 0, 1 write (and record what they wrote), 2, 3
    compact (one full, one size-tiered), 4 prunes."""
    try:
        store = KVStore(url, compact_every=4 if worker < 2 else 0, **SMALL)
        store.current_sequence()
        barrier.wait()
        written: list[tuple[int, int]] = []
        for n in range(ROUNDS):
            if worker < 2:
                for m in range(3):
                    pairs = [(b"w%d-%d-%d-%d" % (worker, n, m, i), b"v") for i in range(20)]
                    pairs.append((b"shared-%d" % (n % 5), b"%d-%d-%d" % (worker, n, m)))
                    sequence = store.put_batch(pairs)
                    written.append((sequence, n * 3 + m))
                if n % 3 == 2:
                    store.delete_batch([b"w%d-%d-0-0" % (worker, n)])
            elif worker in (2, 3):
                store.compact(full=worker == 2)
            else:
                current = store.current_sequence()
                if current > 2:
                    store.prune_batch_log(current - 1)
        store.wait_for_background()
        store.close()
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", worker, repr(exc)))
    else:
        results.put(("done", worker, written))


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_compaction_racing_writers_pruners_and_a_second_compactor_loses_nothing(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    outcomes = run_processes(racing_actor, [(url, w) for w in range(5)])
    assert sorted(o[:2] for o in outcomes) == [("done", w) for w in range(5)], outcomes
    sequences = [s for o in outcomes for s, _ in o[2]]
    assert len(sequences) == len(set(sequences))  # every batch its own sequence
    expected: Model = {}
    for worker in (0, 1):
        for n in range(ROUNDS):
            for m in range(3):
                expected |= {b"w%d-%d-%d-%d" % (worker, n, m, i): b"v" for i in range(20)}
            if n % 3 == 2:
                expected.pop(b"w%d-%d-0-0" % (worker, n))
    # The newest write of each shared key wins (by sequence).
    newest: dict[bytes, tuple[int, bytes]] = {}
    for worker, o in enumerate(sorted(outcomes, key=lambda o: o[1])[:2]):
        for sequence, index in o[2]:
            n, m = divmod(index, 3)
            shared = b"shared-%d" % (n % 5)
            if shared not in newest or newest[shared][0] < sequence:
                newest[shared] = (sequence, b"%d-%d-%d" % (worker, n, m))
    expected |= {k: v for k, (_, v) in newest.items()}
    store = open_kv(url)
    assert dict(store.range_scan()) == expected
    store.compact()
    assert dict(open_kv(url).range_scan()) == expected
    store.sweep_snapshots(grace_seconds=0)
    assert segment_keys(url) == referenced(url)
    assert dict(open_kv(url).range_scan()) == expected


def test_background_compaction_runs_once_per_compact_every_batches_and_writers_never_wait() -> None:
    url = "memory://kv-background-cadence"
    store, faults = faulty_kv(url, compact_every=8)
    for n in range(40):
        store.put_batch([(key(n), b"v")])
        store.wait_for_background()
    # One compaction per 8 batches (its manifest swap), not one per batch after the first.
    assert faults.count("put_if_absent") + faults.count("put_if_match") - 40 <= 2 * 5
    assert 4 <= manifest(url).generation <= 5
    assert dict(open_kv(url).range_scan()) == {key(n): b"v" for n in range(40)}


def test_a_write_only_store_object_keeps_a_bounded_tail_when_another_process_compacts() -> None:
    url = "memory://kv-bounded-tail"
    writer = open_kv(url)
    compactor = open_kv(url)
    for n in range(1200):
        writer.put_batch([(key(n), b"v")])
        if n % 100 == 99:
            compactor.compact(full=False)
    view = writer.async_store._view
    assert view is not None
    assert len(view.memtable) <= 256 + 100  # re-reads the manifest every 256 batches
    assert writer.get(key(3)) == b"v"
    assert writer.range_scan(limit=2) == [(key(0), b"v"), (key(1), b"v")]


# -- the pure parts: segment bytes, manifest format 4, merge and sweep plans -------------------


def test_a_segment_round_trips_and_a_damaged_block_is_refused() -> None:
    from objstore.errors import CorruptionError
    from objstore.kv._segment import SegmentBuilder, decode_block, decode_index

    builder = SegmentBuilder("00000000000000000007-abc", block_bytes=256)
    entries = [(key(n), None if n % 7 == 0 else b"v%d" % n) for n in range(200)]
    for k, v in entries:
        builder.add(k, v)
    data, ref = builder.finish()
    assert (ref.first, ref.last, ref.count, ref.size) == (key(0), key(199), 200, len(data))
    index = decode_index(
        data[ref.index_offset : ref.index_offset + ref.index_length], key="s", size=ref.index_offset
    )
    assert len(index.first_keys) > 10
    decoded: list[tuple[bytes, bytes | None]] = []
    for offset, length in zip(index.offsets, index.lengths, strict=True):
        block = decode_block(data[offset : offset + length], key="s")
        decoded += list(zip(block.keys, block.values, strict=True))
    assert decoded == entries
    assert index.block_for(key(0)) == 0
    assert index.block_for(b"a") is None
    damaged = bytearray(data[index.offsets[1] : index.offsets[1] + index.lengths[1]])
    damaged[-1] ^= 0xFF
    with pytest.raises(CorruptionError):
        decode_block(bytes(damaged), key="s")


def test_manifest_format_4_round_trips_and_refuses_overlapping_runs() -> None:
    from objstore.errors import CorruptionError
    from objstore.kv._format import encode_manifest
    from objstore.kv._segment import SegmentRef

    a = SegmentRef("00000000000000000002-aa", b"a", b"f", 3, 100, 80, 20)
    b = SegmentRef("00000000000000000002-bb", b"g", b"z", 3, 100, 80, 20)
    c = SegmentRef("00000000000000000001-cc", b"\x00", b"\xff", 9, 300, 250, 50)
    stored = KVManifest(9, 4, 3, runs=((a, b), (c,)), generation=2)
    assert decode_manifest(encode_manifest(stored, "n"), key="m") == stored
    overlapping = KVManifest(9, 4, 3, runs=((b, a),), generation=2)
    with pytest.raises(CorruptionError, match="overlap"):
        decode_manifest(encode_manifest(overlapping, "n"), key="m")


def test_commit_compaction_only_onto_the_generation_it_read() -> None:
    from objstore.kv._format import commit_compaction

    read = KVManifest(5, 1, 1, generation=3)
    assert commit_compaction(KVManifest(5, 2, 2, generation=4), read, 9, ()) is None
    moved = commit_compaction(KVManifest(5, 3, 2, generation=3), read, 9, ())
    assert moved == KVManifest(9, 3, 2, generation=4)  # the prune marks kept


def test_plan_merge_is_size_tiered_and_bounds_the_runs() -> None:
    from objstore.kv._format import plan_merge

    assert plan_merge(100, [], 6) == 0
    assert plan_merge(100, [10_000], 6) == 0  # a big run stays
    assert plan_merge(100, [150, 10_000], 6) == 1  # a similar one joins
    assert plan_merge(100, [150, 400, 10_000], 6) == 2
    growing = [1000, 5000, 30_000, 100_000, 400_000, 2_000_000]
    assert plan_merge(10, growing, 6) == 1  # seven runs would stand: the newest joins
    assert plan_merge(10, growing, 3) == 4
    assert plan_merge(10, [1000] * 6, 6) == 6  # equal sizes cascade into one


def test_plan_sweep_by_generation() -> None:
    from objstore.kv._format import plan_sweep
    from objstore.kv._segment import SegmentRef

    live = SegmentRef("00000000000000000003-aa", b"a", b"b", 1, 10, 5, 5)
    current = KVManifest(7, 1, 1, runs=((live,),), generation=4)
    listing = [
        (f"{SEGMENT_PREFIX}/00000000000000000003-aa", 1.0),  # referenced
        (f"{SEGMENT_PREFIX}/00000000000000000003-bb", 1.0),  # replaced or lost
        (f"{SEGMENT_PREFIX}/00000000000000000004-cc", 2.0),  # maybe in flight
        (f"{SEGMENT_PREFIX}/not-a-segment", 2.0),
    ]
    snapshots = [("kv/snapshots/00000000000000000002-ab12", 1.0)]
    plan = plan_sweep(listing, snapshots, current)
    assert plan.now == (f"{SEGMENT_PREFIX}/00000000000000000003-bb", snapshots[0][0])
    assert plan.if_old == ((f"{SEGMENT_PREFIX}/00000000000000000004-cc", 2.0),)
    legacy = KVManifest(2, 1, 1, "ab12", legacy=True, generation=0)
    assert plan_sweep([], snapshots, legacy).now == ()  # the base of a format-1-3 store stays


def test_writers_never_wait_for_a_background_compaction_and_the_cache_stays_bounded() -> None:
    import asyncio
    import threading

    url = "memory://kv-never-wait"
    store, faults = faulty_kv(url, compact_every=2, cache_bytes=64 * 1024)
    gate = threading.Event()
    faults.on_call(
        "put_if_absent",
        lambda: asyncio.to_thread(gate.wait, 30),
        when="before",
        key_contains="segments",
    )
    started = time.monotonic()
    for n in range(10):  # the first compaction hangs on its segment write meanwhile
        assert store.put_batch([(key(n), b"v%d" % n)]) == n + 1
    assert time.monotonic() - started < 10
    assert not gate.is_set()
    assert store.get(key(9)) == b"v9"
    gate.set()
    store.wait_for_background()
    assert manifest(url).snapshot >= 2
    big = {key(n): b"x" * 200 for n in range(20, 3000)}
    store.put_batch(list(big.items()))
    store.compact()
    assert dict(store.range_scan(key(20))) == big  # reads far more than the cache holds
    assert store.async_store._reader.blocks.used <= 64 * 1024
