"""SnapshotStore: replace, load with accepted schema versions, damage as absence, names.

Backends and faces are paired as in ``tests/store_helpers.py``.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from objstore.backends import Backend, open_backend
from objstore.codec import seal, unseal
from objstore.errors import ConflictError, PreconditionFailedError
from objstore.snapshots import (
    AsyncNoopSnapshotStore,
    AsyncSnapshotStore,
    NoopSnapshotStore,
    Snapshot,
    SnapshotStore,
    encode_snapshot,
)
from objstore.testing import SimulatedCrash
from tests import store_helpers as shared
from tests.conftest import make_store_url
from tests.store_helpers import NASTY_NAMES, Faces, crash_points, local_backends, run_processes

# The backend/face fixtures of the source tests, so every file pairs them the same way.
combo = shared.combo
faces = shared.faces
url = shared.url
raw = shared.raw

RawBackends = Callable[[str], Backend]


@pytest.fixture
def open_store(faces: Faces) -> Callable[..., Any]:
    """``open_store(location, **options)`` through the current face."""

    def open_(location: Any, **options: Any) -> Any:
        return faces.store(SnapshotStore, AsyncSnapshotStore, location, **options)

    return open_


# -- values --------------------------------------------------------------------------------------


def test_snapshot_validates_its_fields() -> None:
    assert Snapshot("s", 0, 0, bytearray(b"ab")).state == b"ab"
    assert type(Snapshot("s", 0, 0, memoryview(b"ab")).state) is bytes
    assert Snapshot("s", 2**64 - 1, 2**64 - 1, {"k": [1, None]}).state == {"k": [1, None]}
    for stream_id, error in [("", ValueError), ("a\x00", ValueError), (1, TypeError)]:
        with pytest.raises(error):
            Snapshot(stream_id, 1, 1, b"")  # type: ignore[arg-type]
    for number, error in [
        (-1, ValueError),
        (2**64, ValueError),
        (True, TypeError),
        (1.0, TypeError),
    ]:
        with pytest.raises(error):
            Snapshot("s", number, 1, b"")  # type: ignore[arg-type]
        with pytest.raises(error):
            Snapshot("s", 1, number, b"")  # type: ignore[arg-type]


# -- save and load -------------------------------------------------------------------------------


def test_missing_snapshot_is_none(open_store: Any, url: str) -> None:
    assert open_store(url).load("order/1") is None


def test_bytes_and_json_states_round_trip(open_store: Any, url: str) -> None:
    store = open_store(url)
    binary = Snapshot("order/1", 41, 2, b"\x00\xffraw state")
    document = Snapshot("order/2", 7, 1, {"lines": [{"sku": "ü", "qty": 2}], "paid": False})
    text = Snapshot("order/3", 1, 1, "a JSON string, not bytes")
    nothing = Snapshot("order/4", 1, 1, None)
    for snapshot in (binary, document, text, nothing):
        store.save(snapshot)
    fresh = open_store(url)
    for snapshot in (binary, document, text, nothing):
        assert fresh.load(snapshot.stream_id) == snapshot


def test_an_older_snapshot_never_replaces_a_newer_one(
    open_store: Any, url: str, raw: RawBackends
) -> None:
    store = open_store(url)
    store.save(Snapshot("s", 10, 1, b"ten"))
    store.save(Snapshot("s", 20, 2, {"twenty": 20}))
    assert open_store(url).load("s") == Snapshot("s", 20, 2, {"twenty": 20})
    for saver in (store, open_store(url)):  # this object, and one that has read nothing
        with pytest.raises(ConflictError) as caught:
            saver.save(Snapshot("s", 15, 2, b"fifteen"))
        assert (caught.value.expected, caught.value.actual) == (15, 20)
        assert isinstance(caught.value, PreconditionFailedError)
        clone = pickle.loads(pickle.dumps(caught.value))  # e.g. out of a process pool
        assert (type(clone), clone.key, clone.expected, clone.actual, str(clone)) == (
            ConflictError,
            store.key_for("s"),
            15,
            20,
            str(caught.value),
        )
        assert open_store(url).load("s") == Snapshot("s", 20, 2, {"twenty": 20})
    # An equal sequence replaces (a retried save, or a re-snapshot in a new schema version).
    open_store(url).save(Snapshot("s", 20, 3, b"twenty in v3"))
    assert open_store(url).load("s") == Snapshot("s", 20, 3, b"twenty in v3")
    store.save(Snapshot("s", 21, 3, b"newer"))  # a stale remembered version is re-read
    assert open_store(url).load("s") == Snapshot("s", 21, 3, b"newer")
    raw(url).delete(store.key_for("s"))  # removed behind its back: what it remembers is stale
    store.save(Snapshot("s", 5, 1, b"five"))
    assert open_store(url).load("s") == Snapshot("s", 5, 1, b"five")


def test_a_damaged_snapshot_is_replaced_by_any_save(
    open_store: Any, url: str, raw: RawBackends
) -> None:
    store = open_store(url)
    store.save(Snapshot("s", 50, 1, b"fifty"))
    raw(url).put(store.key_for("s"), b"garbage")
    open_store(url).save(Snapshot("s", 3, 1, b"three"))  # a damaged one counts as absent
    assert open_store(url).load("s") == Snapshot("s", 3, 1, b"three")


@local_backends
def test_accepted_schema_versions(open_store: Any, url: str) -> None:
    store = open_store(url)
    store.save(Snapshot("s", 3, 2, b"v2"))
    assert store.load("s") is not None
    assert store.load("s", None) is not None
    assert store.load("s", [1, 2]) == Snapshot("s", 3, 2, b"v2")
    assert store.load("s", {2}) is not None
    assert store.load("s", (v for v in [2])) is not None
    assert store.load("s", [1, 3]) is None
    assert store.load("s", []) is None
    with pytest.raises(TypeError):
        store.load("s", "2")
    with pytest.raises(ValueError, match="schema version"):
        store.load("s", [-1])


def test_snapshots_are_compressed_and_checksummed(
    open_store: Any, url: str, raw: RawBackends
) -> None:
    store = open_store(url)
    state = {"events": [{"type": "ItemAdded", "sku": f"sku-{n % 7}"} for n in range(2000)]}
    store.save(Snapshot("big", 2000, 1, state))
    stored, _ = raw(url).get(store.key_for("big"))
    assert len(stored) * 10 < len(str(state))  # zstd did its job
    unseal(stored, key="big")  # a valid sealed blob: checksum verified
    assert open_store(url).load("big") == Snapshot("big", 2000, 1, state)


@local_backends
def test_state_that_is_not_json_is_refused_before_any_request(
    faces: Faces, open_store: Any, url: str
) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    with pytest.raises(TypeError):
        store.save(Snapshot("s", 1, 1, {"set": {1, 2}}))  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="JSON"):
        store.save(Snapshot("s", 1, 1, float("nan")))
    with pytest.raises(TypeError):
        store.save(("s", 1, 1, b""))
    assert faults.calls == []


def test_request_counts(faces: Faces, open_store: Any, url: str) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    store.save(Snapshot("s", 1, 1, b"x" * 10_000))  # a new stream: one create
    assert [call.operation for call in faults.calls] == ["put_if_absent"]
    faults.clear_calls()
    store.save(Snapshot("s", 2, 1, b"y"))  # the version it wrote: one compare-and-swap
    assert [call.operation for call in faults.calls] == ["put_if_match"]
    faults.clear_calls()
    assert store.load("s", [1]) is not None
    assert store.load("missing") is None
    assert [call.operation for call in faults.calls] == ["get", "get"]
    faults, backend = faces.faulty(url)
    loader = open_store(backend)
    assert loader.load("s") is not None  # a load remembers the version for the next save
    loader.save(Snapshot("s", 3, 1, b"z"))
    assert [call.operation for call in faults.calls] == ["get", "put_if_match"]
    faults, backend = faces.faulty(url)
    open_store(backend).save(Snapshot("s", 4, 1, b"w"))  # knows nothing: create, read, swap
    assert [call.operation for call in faults.calls] == ["put_if_absent", "get", "put_if_match"]


# -- damage --------------------------------------------------------------------------------------


@local_backends
def test_damaged_snapshots_are_absent_and_logged(
    open_store: Any, url: str, raw: RawBackends, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(url)
    key = store.key_for("s")
    good = encode_snapshot(Snapshot("s", 5, 1, {"total": 5}))
    header_of_another = encode_snapshot(Snapshot("another", 5, 1, b""))
    damaged = {
        "garbage": b"definitely not a snapshot",
        "truncated": good[:-3],
        "flipped byte": good[:-1] + bytes([good[-1] ^ 0xFF]),
        "empty": b"",
        "no header": seal(b"\x01"),
        "header past the end": seal(b"\xff\x00\x00\x00{}"),
        "header not JSON": seal(b"\x02\x00\x00\x00{{"),
        "header not an object": seal(b"\x02\x00\x00\x00[]"),
        "unknown format": seal(b'\x0c\x00\x00\x00{"format":9}'),
        "another stream": header_of_another,
    }
    for reason, blob in damaged.items():
        raw(url).put(key, blob)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="objstore.snapshots"):
            assert store.load("s") is None, reason
        assert [r.levelno for r in caplog.records] == [logging.WARNING], reason
    raw(url).put(key, good)
    assert store.load("s") == Snapshot("s", 5, 1, {"total": 5})


def test_bytes_flipped_in_transit_are_absent(faces: Faces, open_store: Any, url: str) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    store.save(Snapshot("s", 1, 1, b"payload " * 100))
    faults.flip_bytes_on_read("snapshots/")
    assert store.load("s") is None
    faults.clear_faults()
    assert store.load("s") == Snapshot("s", 1, 1, b"payload " * 100)


# -- names ---------------------------------------------------------------------------------------


def test_stream_ids_with_special_characters(open_store: Any, url: str, raw: RawBackends) -> None:
    store = open_store(url)
    for index, stream_id in enumerate(NASTY_NAMES):
        store.save(Snapshot(stream_id, index, 1, {"stream": stream_id}))
    fresh = open_store(url)
    for index, stream_id in enumerate(NASTY_NAMES):
        assert fresh.load(stream_id) == Snapshot(stream_id, index, 1, {"stream": stream_id})
    assert fresh.load("a") is None  # "a/b" is not under "a"
    keys = [info.key for info in raw(url).list("")]
    assert len(keys) == len(NASTY_NAMES)
    assert all(key.startswith("snapshots/") and key.count("/") == 1 for key in keys), keys
    assert all(len(key) < 300 for key in keys)


@local_backends
@pytest.mark.parametrize(
    ("bad", "error"),
    [("", ValueError), ("nul\x00", ValueError), ("bad\udcff", ValueError), (None, TypeError)],
)
def test_bad_stream_ids_are_rejected_before_any_request(
    faces: Faces, open_store: Any, url: str, bad: Any, error: type
) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    with pytest.raises(error):
        store.load(bad)
    with pytest.raises(error):
        Snapshot(bad, 1, 1, b"")
    assert faults.calls == []


# -- crash safety --------------------------------------------------------------------------------


@pytest.mark.parametrize("first_save", [True, False], ids=["create", "replace"])
def test_crash_at_every_write_of_a_save_leaves_old_or_new(
    faces: Faces, open_store: Any, url: str, raw: RawBackends, first_save: bool
) -> None:
    old = Snapshot("s", 1, 1, {"version": "old"})
    new = Snapshot("s", 2, 1, {"version": "new"})
    key = open_store(url).key_for("s")

    def fresh_store() -> tuple[Any, Any]:
        """A store object that has loaded the old state (none, or ``old``)."""
        if first_save:
            raw(url).delete(key)
        else:
            raw(url).put(key, encode_snapshot(old))
        faults, backend = faces.faulty(url)
        store = open_store(backend)
        store.load("s")
        faults.clear_calls()
        return faults, store

    faults, store = fresh_store()
    store.save(new)
    points = crash_points(faults)
    assert points == [("put_if_absent" if first_save else "put_if_match", 1)]
    operation = points[0][0]
    for when in ("before", "after", "lose-response"):
        faults, store = fresh_store()
        if when == "lose-response":
            faults.lose_response(operation)
            store.save(new)  # the retry recognises its own landed write
        else:
            getattr(faults, f"crash_{when}")(operation)
            with pytest.raises(SimulatedCrash):
                store.save(new)
        expected = new if when != "before" else (None if first_save else old)
        assert open_store(url).load("s") == expected, when
        open_store(url).save(new)  # a save after the crash completes (equal: replaces)
        assert open_store(url).load("s") == new


# -- racing savers --------------------------------------------------------------------------------

SAVERS = 3
SAVES_PER_SAVER = 8


def _race_saves(url: str, saver: int) -> list[tuple[int, str]]:
    """Save sequences ``n * SAVERS + saver`` (interleaved with the other savers), loading
    after each; return ``(sequence, outcome)`` per save, outcome ``ok``, ``refused`` or an
    error description (a load that went backward is one)."""
    store = SnapshotStore(open_backend(url, verify_fencing=False))
    outcomes: list[tuple[int, str]] = []
    seen = -1
    try:
        for n in range(SAVES_PER_SAVER):
            sequence = n * SAVERS + saver
            try:
                store.save(Snapshot("raced", sequence, 1, {"by": saver, "n": n}))
                outcomes.append((sequence, "ok"))
            except ConflictError as exc:
                verdict = (
                    "refused" if exc.expected == sequence and exc.actual > sequence else repr(exc)
                )
                outcomes.append((sequence, verdict))
            loaded = store.load("raced")
            if loaded is None or loaded.sequence_number < max(
                seen, sequence if outcomes[-1][1] == "ok" else -1
            ):
                outcomes.append((sequence, f"load went backward: {loaded!r} after {seen}"))
            seen = loaded.sequence_number if loaded is not None else seen
    finally:
        store.close()
    return outcomes


def _check_saver_race(url: str, outcomes: list[tuple[int, str]]) -> None:
    assert {verdict for _, verdict in outcomes} <= {"ok", "refused"}, outcomes
    assert sorted(seq for seq, _ in outcomes) == list(range(SAVERS * SAVES_PER_SAVER))
    newest = SAVERS * SAVES_PER_SAVER - 1
    assert (newest, "ok") in outcomes  # the newest save is never refused
    stored = SnapshotStore(open_backend(url, verify_fencing=False)).load("raced")
    assert stored is not None
    assert stored.sequence_number == newest
    assert stored.state == {"by": newest % SAVERS, "n": newest // SAVERS}


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_racing_savers_in_threads_never_move_a_snapshot_backward(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    barrier = threading.Barrier(SAVERS)
    outcomes: list[tuple[int, str]] = []

    def saver(number: int) -> None:
        barrier.wait()
        try:
            outcomes.extend(_race_saves(url, number))
        except BaseException as exc:  # reported below, failing the test
            outcomes.append((-1, repr(exc)))

    threads = [threading.Thread(target=saver, args=(n,)) for n in range(SAVERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check_saver_race(url, outcomes)


def saver_process(url: str, saver: int, barrier: Any, results: Any) -> None:
    """Child process: :func:`_race_saves` after the barrier; sends its outcomes."""
    try:
        barrier.wait()
        results.put(_race_saves(url, saver))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put([(-1, repr(exc))])


def test_racing_savers_in_processes_never_move_a_snapshot_backward(shared_store_url: str) -> None:
    outcomes = run_processes(saver_process, [(shared_store_url, n) for n in range(SAVERS)])
    _check_saver_race(shared_store_url, [item for batch in outcomes for item in batch])


# -- no-op stores and the async face on every backend --------------------------------------------


def test_noop_snapshot_stores_keep_nothing() -> None:
    store = NoopSnapshotStore()
    store.save(Snapshot("s", 1, 1, b"x"))
    assert store.load("s") is None
    assert store.load("s", [1]) is None
    with pytest.raises(TypeError):
        store.save("not a snapshot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NUL"):
        store.load("a\x00")
    store.close()

    async def main() -> None:
        async_store = AsyncNoopSnapshotStore()
        await async_store.save(Snapshot("s", 1, 1, b"x"))
        assert await async_store.load("s") is None
        with pytest.raises(TypeError):
            await async_store.save(None)  # type: ignore[arg-type]
        await async_store.close()

    asyncio.run(main())


def test_async_store_round_trip(store_url: str) -> None:
    async def main() -> None:
        store = AsyncSnapshotStore(store_url)
        await store.save(Snapshot("cart/42", 9, 3, {"items": 2}))
        other = AsyncSnapshotStore(store_url)
        assert await other.load("cart/42", [3]) == Snapshot("cart/42", 9, 3, {"items": 2})
        assert await other.load("cart/42", [4]) is None
        await store.close()
        await other.close()

    asyncio.run(main())


# -- stored format -------------------------------------------------------------------------------

# Format-1 objects, written by tests/data/generate.py (tests/test_format_compat.py reads them too).
FORMAT_1 = Path(__file__).parent / "data" / "snapshots-format-1"
_KEY = "snapshots/order%2F%C3%BC.snapshot"
SNAPSHOT_BYTES_V1 = (FORMAT_1 / "bytes-state" / _KEY).read_bytes()
SNAPSHOT_JSON_V1 = (FORMAT_1 / "json-state" / _KEY).read_bytes()


@local_backends
def test_format_1_objects_still_read(open_store: Any, url: str, raw: RawBackends) -> None:
    store = open_store(url)
    assert store.key_for("order/ü") == "snapshots/order%2F%C3%BC.snapshot"
    raw(url).put("snapshots/order%2F%C3%BC.snapshot", SNAPSHOT_BYTES_V1)
    assert store.load("order/ü") == Snapshot("order/ü", 12, 3, b"\x00\x01state")
    raw(url).put("snapshots/order%2F%C3%BC.snapshot", SNAPSHOT_JSON_V1)
    assert store.load("order/ü") == Snapshot("order/ü", 13, 4, {"total": 5, "items": ["a"]})
